/**
 * The GPU kit's shared parts (issue #18): where the archive lives, what it holds, its manifest,
 * hashing, xz and tar helpers. `pack.ts` writes the archive on a machine with a registry;
 * `check.ts` unpacks it on the GPU machine, where there is none, and runs the steps.
 *
 * The archive is one uncompressed tar holding `manifest.json` and three xz-compressed parts:
 *
 * - `deno.xz`: the Deno binary that packed it;
 * - `source.tar.xz`: the part of the pinned llama.cpp source a from-source CUDA build needs, as
 *   the folder `src/llama.cpp-<commit>/` of loupe's cache (with `ensureSource`'s marker), so that
 *   `ensureSource` finds it and clones nothing;
 * - `packages.tar.xz`: the pinned npm packages loupe fetches at run time besides the engine
 *   (plotly.js), as `packages/<name>@<version>/` with `fetchPackage`'s integrity marker, so that
 *   `fetchPackage` finds them and runs no `npm pack`.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";

/** The repository's root. */
export const ROOT = dirname(dirname(dirname(new URL(import.meta.url).pathname)));

/** Where `deno task device-pack` writes the archive unless told otherwise (ignored by git). */
export const DEFAULT_ARCHIVE = join(ROOT, ".device", "loupe-device-kit.tar");

/** Where `device-check` unpacks and builds unless told otherwise (ignored; kept between runs of a warm machine). */
export const DEFAULT_WORK = join(ROOT, ".device", "work");

/** The archive must leave room for the working tree within the device tool's 64 MiB. */
export const MAX_ARCHIVE_BYTES = 60 * 2 ** 20;

/** Manifest format version. */
export const MANIFEST_FORMAT = 1;

/** One compressed part of the archive. */
export interface KitPart {
  /** File name inside the archive. */
  file: string;
  /** What it holds. */
  what: string;
  /** Hex SHA-256 of the compressed file. */
  sha256: string;
  /** Size of the compressed file. */
  bytes: number;
  /** Hex SHA-256 of the uncompressed content (the binary, or the tar stream). */
  rawSha256: string;
  /** Size uncompressed. */
  rawBytes: number;
}

/** `manifest.json` of the archive. */
export interface KitManifest {
  format: number;
  /** ISO time of packing. */
  created: string;
  /** `deno --version`'s first line of the packed binary. */
  deno: string;
  /** The pinned llama.cpp commit; the source part unpacks to `src/llama.cpp-<first 12>/`. */
  llamaCommit: string;
  /** Folder of the source inside loupe's cache, relative to it. */
  sourceDir: string;
  /** The vocabulary files kept from the source's `models/`. */
  vocab: string[];
  /** The npm packages of the packages part, as `fetchPackage` caches them. */
  packages: Array<{ name: string; version: string; integrity: string; dir: string }>;
  /** xz level the parts were compressed with. */
  xzLevel: number;
  /** The parts, in unpack order. */
  parts: KitPart[];
}

/** Runs a program; throws with its output's end when it fails. Returns stdout. */
export async function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd: opts.cwd, env: opts.env, stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  if (!out.success) {
    const text = (dec.decode(out.stderr) + dec.decode(out.stdout)).trim().slice(-3000);
    throw new Error(`${cmd} ${args.join(" ")} failed (exit ${out.code}): ${text}`);
  }
  return dec.decode(out.stdout);
}

/** Whether a program is on PATH. */
export async function hasProgram(name: string): Promise<boolean> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    try {
      const st = await Deno.stat(join(dir, name));
      if (st.isFile && ((st.mode ?? 0o111) & 0o111)) return true;
    } catch { /* not here */ }
  }
  return false;
}

/** Hex SHA-256 and size of a file, read in chunks. */
export async function hashFile(path: string): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash("sha256");
  using f = await Deno.open(path);
  const buf = new Uint8Array(1 << 20);
  let bytes = 0;
  for (;;) {
    const n = await f.read(buf);
    if (n === null) break;
    hash.update(buf.subarray(0, n));
    bytes += n;
  }
  return { sha256: hash.digest("hex"), bytes };
}

/** Compresses `input` into `output` with xz at `level` (all cores). */
export async function xzCompress(input: string, output: string, level: number): Promise<void> {
  const tmp = `${output}.tmp-${Deno.pid}`;
  // A shell redirection, not a pipe through Deno: the file is complete when xz exits.
  await run("sh", ["-c", `xz -T0 -${level} -c "$1" > "$2"`, "sh", input, tmp]);
  await Deno.rename(tmp, output);
}

/**
 * Decompresses an xz file: with `xz` where it is installed, else with Python's lzma module (the
 * GPU machine's image has Python; whether it has xz-utils is not known in advance).
 */
export async function xzDecompress(input: string, output: string): Promise<void> {
  const tmp = `${output}.tmp-${Deno.pid}`;
  if (await hasProgram("xz")) {
    await run("sh", ["-c", 'xz -dc "$1" > "$2"', "sh", input, tmp]);
  } else {
    const py = "import lzma,shutil,sys\nwith lzma.open(sys.argv[1]) as i, open(sys.argv[2],'wb') as o: " +
      "shutil.copyfileobj(i,o,1<<20)";
    await run("python3", ["-c", py, input, tmp]);
  }
  await Deno.rename(tmp, output);
}

/** Reads `manifest.json` out of an archive without unpacking the rest. */
export async function readManifest(archive: string): Promise<KitManifest> {
  const text = await run("tar", ["xOf", archive, "manifest.json"]);
  const m = JSON.parse(text) as KitManifest;
  if (m.format !== MANIFEST_FORMAT) {
    throw new Error(`${archive}: manifest format ${m.format}, expected ${MANIFEST_FORMAT}`);
  }
  return m;
}

/** Seconds as "4m05s". */
export function minutes(seconds: number): string {
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

/** Bytes as "12.3 MiB". */
export function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
