/**
 * `deno task device-pack [--out FILE|DIR] [--level=0-9] [--no-cache]`: writes the GPU kit's
 * archive (see `kit.ts`): the Deno binary, the part of the pinned llama.cpp source a from-source
 * CUDA build needs, and the npm packages loupe fetches at run time, each xz-compressed, with a
 * manifest of SHA-256 hashes. It states the archive's size and fails above 60 MiB.
 *
 * Compressed parts are cached in loupe's cache by the hash of what they compress, so packing
 * again after a change of the working tree takes seconds (the Deno binary alone takes a minute
 * or two at the default level on two cores).
 *
 * @module
 */
import { basename, join } from "node:path";
import { cacheDir, ensureSource, fetchPackage } from "../../native/build/engine.ts";
import { LLAMA_CPP_COMMIT, PLOTLY_PACKAGE, SOURCE_SUBSET } from "../../native/build/pins.ts";
import {
  DEFAULT_ARCHIVE,
  hashFile,
  type KitManifest,
  type KitPart,
  MANIFEST_FORMAT,
  MAX_ARCHIVE_BYTES,
  mib,
  ROOT,
  run,
  xzCompress,
} from "./kit.ts";

/** Options of {@linkcode pack}. */
export interface PackOptions {
  /** The archive's path (default `.device/loupe-device-kit.tar`); a folder gets `loupe-device-kit.tar` in it. */
  out?: string;
  /** xz level (default 6, xz's own default). */
  level?: number;
  /** Compress every part afresh instead of reusing cached ones. */
  noCache?: boolean;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

/** What {@linkcode pack} wrote. */
export interface PackResult {
  archive: string;
  bytes: number;
  manifest: KitManifest;
  wallS: number;
}

/** ggml backends whose sources the kit carries: the CPU backend and CUDA. */
const KEEP_BACKENDS = new Set(["ggml-cpu", "ggml-cuda"]);

/** The npm packages loupe fetches at run time besides the engine (the engine is built from source). */
const RUNTIME_PACKAGES = [PLOTLY_PACKAGE];

/** The vocabulary files the fixture makers read (`models/ggml-vocab-*.gguf` named in src/fixtures/). */
export async function fixtureVocabs(): Promise<string[]> {
  const names = new Set<string>();
  for await (const e of Deno.readDir(join(ROOT, "src", "fixtures"))) {
    if (!e.name.endsWith(".ts")) continue;
    const text = await Deno.readTextFile(join(ROOT, "src", "fixtures", e.name));
    for (const m of text.matchAll(/ggml-vocab-[A-Za-z0-9_-]+\.gguf/g)) names.add(m[0]);
  }
  return [...names].sort();
}

/**
 * The modules the kit runs on the GPU machine (with what they import, dynamic imports of fixed
 * names included): check.ts and its children, the CUDA test set, the CPU tests of the rehearsal,
 * the benchmarks, the engine build.
 */
export const KIT_ENTRIES = [
  "tests/device/check.ts",
  "tests/device/cuda_test.ts",
  "tests/device/bench_parts.ts",
  "tests/engine/model_test.ts",
  "tests/children/session_child.ts",
  "tests/bench/bench.ts",
  "native/build/cli.ts",
  "src/children/vision_probe.ts",
  "mod.ts",
];

/**
 * Module specifiers in the kit's module graph that would need Deno's own cache on the GPU machine
 * (npm:, jsr:, http(s):), as `deno info` resolves them. The kit carries no Deno module cache, so
 * packing refuses while there is one. (A test outside the kit may import npm: packages: Deno
 * fetches a package only when a module that imports it is loaded, also with a lockfile naming it.)
 */
export async function remoteImports(): Promise<string[]> {
  const found = new Set<string>();
  for (const entry of KIT_ENTRIES) {
    if (!(await Deno.stat(join(ROOT, entry)).then(() => true, () => false))) continue;
    const info = JSON.parse(await run(Deno.execPath(), ["info", "--json", entry], { cwd: ROOT }));
    for (const m of info.modules as Array<{ specifier: string }>) {
      if (/^(npm|jsr|https?):/.test(m.specifier)) found.add(`${entry}: ${m.specifier}`);
    }
  }
  return [...found];
}

const TAR_FIXED = ["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--mtime=@946684800", "--format=gnu"];

/** Writes the source part's tar (uncompressed) to `out`: the subset under `src/llama.cpp-<commit>/`. */
async function sourceTar(srcDir: string, sourceDirName: string, vocab: string[], out: string): Promise<void> {
  const paths: string[] = [];
  for (const p of [...SOURCE_SUBSET.filter((p) => p !== "models"), "LICENSE", "licenses", ".loupe-ok"]) {
    if (await Deno.stat(join(srcDir, p)).then(() => true, () => false)) paths.push(p);
    else if (p !== "licenses") throw new Error(`The source at ${srcDir} has no ${p}`);
  }
  for (const v of vocab) {
    const p = join("models", v);
    await Deno.stat(join(srcDir, p)).catch(() => {
      throw new Error(`The fixtures read ${p}, which the source at ${srcDir} lacks`);
    });
    paths.push(p);
  }
  const excludes: string[] = [];
  for await (const e of Deno.readDir(join(srcDir, "ggml", "src"))) {
    if (e.isDirectory && e.name.startsWith("ggml-") && !KEEP_BACKENDS.has(e.name)) {
      excludes.push(`--exclude=ggml/src/${e.name}`);
    }
  }
  excludes.push("--exclude=.git", "--exclude=*.o");
  await run("tar", [
    "-C",
    srcDir,
    "-cf",
    out,
    ...TAR_FIXED,
    ...excludes,
    `--transform=s|^|src/${sourceDirName}/|S`,
    ...paths,
  ]);
}

/** Packs the archive. */
export async function pack(options: PackOptions = {}): Promise<PackResult> {
  const t0 = performance.now();
  const log = options.log ?? ((l: string) => console.error(`device-pack: ${l}`));
  const level = options.level ?? 6;
  let archive = options.out ?? DEFAULT_ARCHIVE;
  if (await Deno.stat(archive).then((s) => s.isDirectory, () => false)) {
    archive = join(archive, basename(DEFAULT_ARCHIVE));
  }
  const remote = await remoteImports();
  if (remote.length) {
    throw new Error(
      `The kit's modules import remote modules, which the GPU machine cannot fetch and the kit does not carry:\n  ${
        remote.join("\n  ")
      }`,
    );
  }
  const srcDir = await ensureSource(false);
  const sourceDirName = basename(srcDir);
  if (sourceDirName !== `llama.cpp-${LLAMA_CPP_COMMIT.slice(0, 12)}`) {
    throw new Error(`LOUPE_SRC_DIR (${srcDir}) is not the pinned source's cache folder; unset it to pack`);
  }
  const vocab = await fixtureVocabs();
  const staging = await Deno.makeTempDir({ prefix: "loupe-device-pack-" });
  const partCache = join(cacheDir(), "device-kit");
  await Deno.mkdir(partCache, { recursive: true });
  try {
    // Raw inputs: the Deno binary as it is, the two tar streams.
    const denoBin = Deno.execPath();
    const denoVersion = (await run(denoBin, ["--version"])).split("\n")[0].trim();
    const rawSource = join(staging, "source.tar");
    log(`source: ${srcDir} (vocabulary files: ${vocab.join(", ")})`);
    await sourceTar(srcDir, sourceDirName, vocab, rawSource);
    const packages: KitManifest["packages"] = [];
    for (const pkg of RUNTIME_PACKAGES) {
      const dir = await fetchPackage(pkg, false);
      packages.push({ ...pkg, dir: join("packages", basename(join(dir, ".."))) });
    }
    const rawPackages = join(staging, "packages.tar");
    await run("tar", ["-C", cacheDir(), "-cf", rawPackages, ...TAR_FIXED, ...packages.map((p) => p.dir)]);

    const inputs = [
      { file: "deno.xz", raw: denoBin, what: `the Deno binary (${denoVersion})` },
      {
        file: "source.tar.xz",
        raw: rawSource,
        what: `llama.cpp ${LLAMA_CPP_COMMIT.slice(0, 12)}: what a CUDA build needs`,
      },
      { file: "packages.tar.xz", raw: rawPackages, what: `npm packages: ${packages.map((p) => p.name).join(", ")}` },
    ];
    const parts: KitPart[] = [];
    for (const input of inputs) {
      const raw = await hashFile(input.raw);
      const cached = join(partCache, `${raw.sha256}-xz${level}.xz`);
      const out = join(staging, input.file);
      if (!options.noCache && await Deno.stat(cached).then(() => true, () => false)) {
        await Deno.copyFile(cached, out);
        log(`${input.file}: ${mib(raw.bytes)} → cached`);
      } else {
        const t = performance.now();
        await xzCompress(input.raw, out, level);
        log(`${input.file}: ${mib(raw.bytes)} compressed in ${((performance.now() - t) / 1000).toFixed(0)} s`);
        if (!options.noCache) {
          // atomically: another pack (a test beside this one) may be reading the cache
          const tmp = `${cached}.tmp-${Deno.pid}`;
          await Deno.copyFile(out, tmp);
          await Deno.rename(tmp, cached);
        }
      }
      const packed = await hashFile(out);
      parts.push({
        file: input.file,
        what: input.what,
        sha256: packed.sha256,
        bytes: packed.bytes,
        rawSha256: raw.sha256,
        rawBytes: raw.bytes,
      });
    }
    const manifest: KitManifest = {
      format: MANIFEST_FORMAT,
      created: new Date().toISOString(),
      deno: denoVersion,
      llamaCommit: LLAMA_CPP_COMMIT,
      sourceDir: join("src", sourceDirName),
      vocab,
      packages,
      xzLevel: level,
      parts,
    };
    await Deno.writeTextFile(join(staging, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
    await Deno.mkdir(join(archive, ".."), { recursive: true });
    const tmp = `${archive}.tmp-${Deno.pid}`;
    await run("tar", ["-C", staging, "-cf", tmp, "manifest.json", ...parts.map((p) => p.file)]);
    const { bytes } = await hashFile(tmp);
    if (bytes > MAX_ARCHIVE_BYTES) {
      await Deno.remove(tmp);
      throw new Error(`The archive would be ${mib(bytes)}, above the ${mib(MAX_ARCHIVE_BYTES)} it may take`);
    }
    await Deno.rename(tmp, archive);
    return { archive, bytes, manifest, wallS: (performance.now() - t0) / 1000 };
  } finally {
    await Deno.remove(staging, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const arg = (name: string) => Deno.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const outIndex = Deno.args.indexOf("--out");
  const out = arg("out") ?? (outIndex >= 0 ? Deno.args[outIndex + 1] : undefined);
  const level = arg("level") === undefined ? undefined : Number(arg("level"));
  if (level !== undefined && !(Number.isInteger(level) && level >= 0 && level <= 9)) {
    console.error("device-pack: --level must be 0 to 9");
    Deno.exit(2);
  }
  const r = await pack({ out, level, noCache: Deno.args.includes("--no-cache") });
  for (const p of r.manifest.parts) {
    console.log(`  ${p.file.padEnd(16)} ${mib(p.bytes).padStart(10)}  (${mib(p.rawBytes)} unpacked)  ${p.what}`);
  }
  console.log(
    `device-pack: ${r.archive}: ${mib(r.bytes)} (${r.bytes} bytes, limit ${mib(MAX_ARCHIVE_BYTES)}) in ${
      r.wallS.toFixed(0)
    } s`,
  );
}
