/**
 * The GPU kit's run (issue #18): from the archive `deno task device-pack` wrote, with no network,
 * on a machine with an NVIDIA GPU (or, with `--cpu-only`, the CPU equivalents anywhere):
 *
 * 0. unpack: the parts, checked against the manifest's SHA-256, into a cache of loupe's own
 *    (`LOUPE_CACHE_DIR`), placed as `ensureSource` and `fetchPackage` leave them, which is then
 *    checked to satisfy them without a download;
 * 1. build: llama.cpp from source with CUDA for this GPU's architecture (`nvidia-smi`'s
 *    compute_cap → `CMAKE_CUDA_ARCHITECTURES`; `GGML_NATIVE=OFF` as always), libloupe and the
 *    reference tools (llama-completion, llama-bench, llama-embedding, llama-mtmd-cli) against it;
 * 2. tests: the CUDA test set, `tests/device/cuda_test.ts` (with `--cpu-only` it skips, saying so,
 *    and `tests/engine/model_test.ts` runs on the CPU build instead);
 * 3. benchmarks, one sub-step each: the ≈1.1B-parameter F16 fixture (made here by the fixture
 *    writer), tg128/pp512 against llama-bench with measuring on/off and all layers offloaded,
 *    measuring on/off with half of them, the GPU/CPU generation ratio, embeddings batched against
 *    one call per text and against llama-embedding, CLIP encode on CUDA against the CPU and
 *    llama-mtmd-cli.
 *
 * Each step runs in a child process; one progress line a minute says where it is. The state is
 * kept in `<out>/state.json`: a run does what is left, in order, as long as its time budget
 * (`--budget`, default 560 s: the device tool's commands end at 600 s) allows, stops a step it
 * has to cut (the build resumes where it was, others start again) and says what to run next.
 * `report.md` and `report.json` are rewritten after every step.
 *
 * Usage (normally through `sh tests/device/check.sh`, which supplies Deno from the archive):
 * `deno run -A tests/device/check.ts --out DIR [--cpu-only] [--archive FILE] [--work DIR]
 * [--budget S] [--only=a,b] [--redo=a,b] [--arch=NN] [--no-big]`
 *
 * @module
 */
import { basename, join } from "node:path";
import {
  DEFAULT_ARCHIVE,
  DEFAULT_WORK,
  hashFile,
  hasProgram,
  type KitManifest,
  minutes,
  readManifest,
  ROOT,
  run,
  xzDecompress,
} from "./kit.ts";

// ---- options ---------------------------------------------------------------------------------

function option(name: string): string | undefined {
  let value: string | undefined;
  Deno.args.forEach((a, i) => {
    if (a === `--${name}`) value = Deno.args[i + 1];
    else if (a.startsWith(`--${name}=`)) value = a.slice(name.length + 3);
  });
  return value;
}
const list = (name: string) => (option(name) ?? "").split(",").filter(Boolean);

/** What a run was told. */
export interface CheckOptions {
  out: string;
  archive: string;
  work: string;
  cpuOnly: boolean;
  budgetS: number;
  only: string[];
  redo: string[];
  arch?: string;
  noBig: boolean;
}

// ---- state -----------------------------------------------------------------------------------

/** One step's record in `state.json`. */
export interface StepRecord {
  status: "done" | "failed" | "unfinished" | "skipped";
  attempts: number;
  /** Wall time of the last attempt. */
  wallS: number;
  /** Wall time of all attempts. */
  totalS: number;
  finishedAt?: string;
  note?: string;
  result?: Record<string, unknown>;
}

/** `state.json`. */
export interface CheckState {
  version: 1;
  mode: "cuda" | "cpu-only";
  archiveSha256: string;
  steps: Record<string, StepRecord>;
  machine?: Record<string, unknown>;
}

interface Ctx {
  opts: CheckOptions;
  state: CheckState;
  manifest: KitManifest;
  cache: string;
  deadline: number;
  /** Environment of every child process. */
  env: Record<string, string>;
}

/** What a step's function reports. */
interface Outcome {
  status: StepRecord["status"];
  note?: string;
  result?: Record<string, unknown>;
}

interface Step {
  id: string;
  title: string;
  /** Seconds it needs, about, on the GPU machine (16 cores): a step that cannot finish in what is left waits for the next run. */
  estimateS: number;
  /** Whether a cut attempt keeps its progress (then it starts with any time left). */
  resumable?: boolean;
  /** Why it does not apply, or null. */
  skip?: (ctx: Ctx) => string | null;
  run: (ctx: Ctx) => Promise<Outcome>;
}

function log(line: string): void {
  console.log(`device-check: ${line}`);
}

/** A folder's entries, or none when it does not exist. */
async function entries(dir: string): Promise<Deno.DirEntry[]> {
  try {
    return await Array.fromAsync(Deno.readDir(dir));
  } catch {
    return [];
  }
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

// ---- children --------------------------------------------------------------------------------

/** The child process running now, for the signal handlers. */
let current: { pid: number; group: boolean } | null = null;

/** Stops a process group (SIGTERM, then SIGKILL after `graceMs`); waits until it is gone. */
async function stopGroup(pgid: number, graceMs = 20_000): Promise<void> {
  const alive = () => {
    try {
      Deno.kill(-pgid, "SIGCONT");
      return true;
    } catch {
      return false;
    }
  };
  if (!alive()) return;
  try {
    Deno.kill(-pgid, "SIGTERM");
  } catch { /* gone */ }
  const t0 = performance.now();
  while (alive() && performance.now() - t0 < graceMs) await new Promise((r) => setTimeout(r, 200));
  if (alive()) {
    try {
      Deno.kill(-pgid, "SIGKILL");
    } catch { /* gone */ }
  }
}

/** What a child process did. */
interface ChildResult {
  code: number;
  /** Killed at the deadline. */
  cut: boolean;
  wallS: number;
}

/**
 * Runs a command in its own session (so a cut kills all of it: cmake, make, nvcc), its stdout
 * appended to `<out>/<id>.out` and its stderr to `<out>/<id>.log`; prints `progress()` once a
 * minute; at the deadline sends SIGTERM to the group (make then removes a half-written object),
 * and SIGKILL 20 s later.
 */
async function runChild(
  ctx: Ctx,
  id: string,
  cmd: string[],
  progress: () => Promise<string>,
  env: Record<string, string> = {},
): Promise<ChildResult> {
  const outFile = join(ctx.opts.out, `${id}.out`);
  const logFile = join(ctx.opts.out, `${id}.log`);
  const stamp = `==== ${new Date().toISOString()} ${cmd.join(" ")}\n`;
  await Deno.writeTextFile(logFile, stamp, { append: true });
  await Deno.writeTextFile(outFile, stamp, { append: true });
  const t0 = performance.now();
  const useSetsid = await hasProgram("setsid");
  const shell = ['exec "$@" >>"$OUT_FILE" 2>>"$LOG_FILE"'];
  const child = new Deno.Command(useSetsid ? "setsid" : "sh", {
    args: [...(useSetsid ? ["sh"] : []), "-c", ...shell, "sh", ...cmd],
    cwd: ROOT,
    env: { ...ctx.env, ...env, OUT_FILE: outFile, LOG_FILE: logFile },
    clearEnv: true,
    stdin: "null",
  }).spawn();
  // The child's group, written down: if this process is killed without being able to stop it
  // (SIGKILL), the next run stops that group before it starts its own.
  const pidFile = join(ctx.opts.work, "child.pgid");
  if (useSetsid) await Deno.writeTextFile(pidFile, String(child.pid));
  current = { pid: child.pid, group: useSetsid };
  let cut = false;
  const ticker = setInterval(async () => {
    const s = (performance.now() - t0) / 1000;
    let p = "";
    try {
      p = await progress();
    } catch (e) {
      p = `(progress unknown: ${(e as Error).message})`;
    }
    log(`[${id} ${minutes(s)}] ${p}`);
  }, 60_000);
  const kill = (signal: Deno.Signal) => {
    try {
      Deno.kill(useSetsid ? -child.pid : child.pid, signal);
    } catch { /* gone */ }
  };
  const remainingMs = ctx.deadline - performance.now();
  let hard: ReturnType<typeof setTimeout> | undefined;
  const timer = setTimeout(() => {
    cut = true;
    log(`[${id}] the time budget is spent: stopping it (run again to go on)`);
    kill("SIGTERM");
    hard = setTimeout(() => kill("SIGKILL"), 20_000);
  }, Math.max(0, remainingMs));
  const status = await child.status;
  current = null;
  await Deno.remove(pidFile).catch(() => {});
  clearTimeout(timer);
  clearTimeout(hard);
  clearInterval(ticker);
  return { code: status.code, cut, wallS: (performance.now() - t0) / 1000 };
}

/** The last non-empty line of a file (for progress lines), colours and carriage returns removed. */
async function lastLine(path: string): Promise<string> {
  const text = await Deno.readTextFile(path).catch(() => "");
  // deno-lint-ignore no-control-regex
  const lines = text.replace(/\x1b\[[0-9;]*m/g, "").split(/[\r\n]+/).map((l) => l.trim()).filter(Boolean);
  return (lines.at(-1) ?? "").slice(0, 200);
}

async function tailOf(id: string, ctx: Ctx): Promise<string> {
  const a = await lastLine(join(ctx.opts.out, `${id}.log`));
  const b = await lastLine(join(ctx.opts.out, `${id}.out`));
  return [b, a].filter((x) => x && !x.startsWith("====")).join(" | ") || "(no output yet)";
}

const denoRun = (module: string, ...args: string[]) => [Deno.execPath(), "run", "-A", module, ...args];

// ---- the machine -----------------------------------------------------------------------------

async function tryRun(cmd: string, args: string[]): Promise<string | null> {
  try {
    return (await run(cmd, args)).trim();
  } catch {
    return null;
  }
}

/** The GPUs `nvidia-smi` lists, or null without one. */
async function gpus(): Promise<Array<{ name: string; computeCap: string; memoryMiB: number; driver: string }> | null> {
  const out = await tryRun("nvidia-smi", [
    "--query-gpu=name,compute_cap,memory.total,driver_version",
    "--format=csv,noheader,nounits",
  ]);
  if (!out) return null;
  return out.split("\n").filter(Boolean).map((l) => {
    const [name, computeCap, mem, driver] = l.split(",").map((x) => x.trim());
    return { name, computeCap, memoryMiB: Number(mem), driver };
  });
}

/** The CUDA architectures of this machine's GPUs for CMake ("9.0" → "90"). */
export function cudaArchitectures(computeCaps: string[]): string {
  return [...new Set(computeCaps.map((c) => c.replace(".", "")))].sort().join(";");
}

/**
 * What CMake and the loader need to find CUDA here. The toolkit may come from Python wheels (as
 * on this project's machines: nvcc under /usr/local/cuda-13.0, cuBLAS in a wheel's `nvidia/cu13`,
 * no driver stubs): then cuBLAS's headers go to CPATH, links named `libcublas.so` and
 * `libcuda.so` (to the driver's `libcuda.so.1`) to a folder on CMAKE_LIBRARY_PATH, and cuBLAS's
 * folder to LD_LIBRARY_PATH.
 */
export async function cudaEnvironment(shimDir: string): Promise<{ env: Record<string, string>; notes: string[] }> {
  const env: Record<string, string> = {};
  const notes: string[] = [];
  const path = Deno.env.get("PATH") ?? "";
  let nvccDir: string | null = null;
  if (!(await hasProgram("nvcc"))) {
    const homes = [Deno.env.get("CUDA_HOME"), Deno.env.get("CUDA_PATH"), "/usr/local/cuda"].filter(Boolean) as string[];
    for (const e of await entries("/usr/local")) {
      if (e.name.startsWith("cuda-")) homes.push(join("/usr/local", e.name));
    }
    for (const h of homes) {
      if (await exists(join(h, "bin", "nvcc"))) {
        nvccDir = join(h, "bin");
        break;
      }
    }
    if (!nvccDir) throw new Error("No nvcc on PATH, in CUDA_HOME or under /usr/local/cuda*: the CUDA build needs one");
    env.PATH = `${nvccDir}:${path}`;
    notes.push(`nvcc from ${nvccDir}`);
  }
  // Toolkit include folders, where cublas_v2.h would be.
  const roots = new Set<string>();
  for (
    const h of [Deno.env.get("CUDA_HOME"), Deno.env.get("CUDA_PATH"), "/usr/local/cuda", nvccDir && join(nvccDir, "..")]
  ) {
    if (h) roots.add(h);
  }
  for (const e of await entries("/usr/local")) {
    if (e.name.startsWith("cuda")) roots.add(join("/usr/local", e.name));
  }
  const inToolkit: string[] = [];
  for (const r of roots) {
    for (const inc of [join(r, "include"), join(r, "targets", "x86_64-linux", "include")]) {
      if (await exists(join(inc, "cublas_v2.h"))) inToolkit.push(inc);
    }
  }
  await Deno.mkdir(shimDir, { recursive: true });
  const libPaths: string[] = [];
  const ldPaths: string[] = [];
  if (inToolkit.length === 0) {
    // Python wheels: nvidia/cu13 (CUDA 13) or nvidia/cublas (CUDA 12).
    const py = await tryRun("python3", ["-c", "import nvidia; print('\\n'.join(nvidia.__path__))"]);
    let found: { inc: string; lib: string } | null = null;
    for (const base of (py ?? "").split("\n").filter(Boolean)) {
      for (const sub of ["cu13", "cublas", "cu12"]) {
        if (await exists(join(base, sub, "include", "cublas_v2.h"))) {
          found = { inc: join(base, sub, "include"), lib: join(base, sub, "lib") };
          break;
        }
      }
      if (found) break;
    }
    if (!found) throw new Error("cuBLAS's headers (cublas_v2.h) are neither in the CUDA toolkit nor in a Python wheel");
    env.CPATH = [found.inc, Deno.env.get("CPATH")].filter(Boolean).join(":");
    for await (const e of Deno.readDir(found.lib)) {
      const m = e.name.match(/^(libcublas(?:Lt)?)\.so\.\d+$/);
      if (m) {
        await Deno.remove(join(shimDir, `${m[1]}.so`)).catch(() => {});
        await Deno.symlink(join(found.lib, e.name), join(shimDir, `${m[1]}.so`));
      }
    }
    libPaths.push(shimDir);
    ldPaths.push(found.lib);
    notes.push(`cuBLAS from a Python wheel: ${found.inc}`);
  }
  // The driver library to link against (CUDA::cuda_driver): the toolkit's stub, or the driver's own.
  let driverLib = false;
  for (const r of roots) {
    for (const d of ["lib64/stubs", "targets/x86_64-linux/lib/stubs", "lib64", "lib"]) {
      if (await exists(join(r, d, "libcuda.so"))) driverLib = true;
    }
  }
  const ldconfig = await tryRun("/sbin/ldconfig", ["-p"]) ?? "";
  if (!driverLib && !/\blibcuda\.so\s/.test(ldconfig)) {
    let so1 = ldconfig.match(/\blibcuda\.so\.1\s.*=>\s*(\S+)/)?.[1];
    // a driver mounted into a container may sit outside the loader's cache
    for (const d of ["/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/cuda/compat"]) {
      if (!so1 && await exists(join(d, "libcuda.so.1"))) {
        so1 = join(d, "libcuda.so.1");
        ldPaths.push(d);
      }
    }
    if (so1) {
      await Deno.remove(join(shimDir, "libcuda.so")).catch(() => {});
      await Deno.symlink(so1, join(shimDir, "libcuda.so"));
      if (!libPaths.includes(shimDir)) libPaths.push(shimDir);
      notes.push(`libcuda.so → ${so1}`);
    } else {
      notes.push("no libcuda.so found (no driver?): the link of ggml-cuda may fail");
    }
  }
  if (libPaths.length) {
    env.CMAKE_LIBRARY_PATH = [...libPaths, Deno.env.get("CMAKE_LIBRARY_PATH")].filter(Boolean).join(":");
  }
  if (ldPaths.length) {
    env.LD_LIBRARY_PATH = [...ldPaths, Deno.env.get("LD_LIBRARY_PATH")].filter(Boolean).join(":");
  }
  return { env, notes };
}

// ---- steps -----------------------------------------------------------------------------------

/** The part of the archive a step unpacks, checked against the manifest. */
async function verifiedPart(ctx: Ctx, file: string, dir: string): Promise<string> {
  const part = ctx.manifest.parts.find((p) => p.file === file);
  if (!part) throw new Error(`The manifest lists no ${file}`);
  await run("tar", ["xf", ctx.opts.archive, "-C", dir, file]);
  const got = await hashFile(join(dir, file));
  if (got.sha256 !== part.sha256 || got.bytes !== part.bytes) {
    throw new Error(
      `${file}: sha256 ${got.sha256} (${got.bytes} bytes), the manifest says ${part.sha256} (${part.bytes})`,
    );
  }
  const raw = join(dir, file.replace(/\.xz$/, ""));
  await xzDecompress(join(dir, file), raw);
  await Deno.remove(join(dir, file));
  const r = await hashFile(raw);
  if (r.sha256 !== part.rawSha256) {
    throw new Error(`${file} unpacks to sha256 ${r.sha256}, the manifest says ${part.rawSha256}`);
  }
  return raw;
}

/**
 * Unpacks the source and the packages into the cache and checks that `ensureSource` and
 * `fetchPackage` are satisfied by them, without a download (the packages folder must hold only
 * what the kit brought afterwards).
 */
export async function unpackKit(
  archive: string,
  manifest: KitManifest,
  cache: string,
  scratch: string,
): Promise<Record<string, unknown>> {
  const ctx = { opts: { archive }, manifest } as Ctx;
  await Deno.mkdir(scratch, { recursive: true });
  await Deno.mkdir(cache, { recursive: true });
  const src = join(cache, manifest.sourceDir);
  await Deno.remove(src, { recursive: true }).catch(() => {});
  const sourceTar = await verifiedPart(ctx, "source.tar.xz", scratch);
  await run("tar", ["xf", sourceTar, "-C", cache]);
  await Deno.remove(sourceTar);
  const packagesTar = await verifiedPart(ctx, "packages.tar.xz", scratch);
  for (const p of manifest.packages) await Deno.remove(join(cache, p.dir), { recursive: true }).catch(() => {});
  await run("tar", ["xf", packagesTar, "-C", cache]);
  await Deno.remove(packagesTar);
  const marker = (await Deno.readTextFile(join(src, ".loupe-ok")).catch(() => "")).trim();
  if (marker !== manifest.llamaCommit) {
    throw new Error(`${src}/.loupe-ok says "${marker}", not ${manifest.llamaCommit}`);
  }
  // What loupe itself finds there, as a child with this cache and no LOUPE_SRC_DIR.
  const probe = `
    import { ensureSource, fetchPackage } from ${JSON.stringify(join(ROOT, "native/build/engine.ts"))};
    const packages = ${JSON.stringify(manifest.packages)};
    const src = await ensureSource(false);
    const dirs = [];
    for (const p of packages) dirs.push(await fetchPackage(p, false));
    console.log(JSON.stringify({ src, dirs }));`;
  // npm offline with an empty cache of its own: an attempt to fetch anything fails here.
  const env = {
    ...Deno.env.toObject(),
    LOUPE_CACHE_DIR: cache,
    NO_COLOR: "1",
    npm_config_offline: "true",
    npm_config_cache: join(scratch, "npm-cache"),
  };
  delete (env as Record<string, string>).LOUPE_SRC_DIR;
  const out = JSON.parse(await run(Deno.execPath(), ["eval", probe], { env }));
  if (out.src !== src) throw new Error(`ensureSource gave ${out.src}, not the unpacked ${src}`);
  const left: string[] = [];
  for await (const e of Deno.readDir(join(cache, "packages"))) left.push(join("packages", e.name));
  const expected = manifest.packages.map((p) => p.dir).sort();
  if (JSON.stringify(left.sort()) !== JSON.stringify(expected)) {
    throw new Error(
      `After ensureSource/fetchPackage the cache holds packages ${left.join(", ")}, expected ${expected}`,
    );
  }
  for (const [i, p] of manifest.packages.entries()) {
    if (out.dirs[i] !== join(cache, p.dir, "package")) throw new Error(`fetchPackage(${p.name}) gave ${out.dirs[i]}`);
  }
  const files = await run("sh", ["-c", 'find "$1" -type f | wc -l', "sh", src]);
  return { source: src, sourceFiles: Number(files.trim()), packages: expected, vocab: manifest.vocab };
}

/** Folder of this run's from-source build (there is one per set of CMake flags). */
async function buildDirs(ctx: Ctx): Promise<string[]> {
  const dirs: string[] = [];
  for (const e of await entries(join(ctx.cache, "engine"))) {
    if (e.isDirectory && e.name.startsWith("source-") && !e.name.endsWith(".lock")) {
      dirs.push(join(ctx.cache, "engine", e.name));
    }
  }
  return dirs;
}

async function countObjects(dir: string): Promise<{ all: number; cuda: number; cudaTotal: number }> {
  const n = async (d: string) =>
    Number((await tryRun("sh", ["-c", 'find "$1" -name "*.o" 2>/dev/null | wc -l', "sh", d])) ?? 0);
  // the CUDA objects to build: in ggml-cuda's build.make (Make) or the top build.ninja (Ninja)
  const make = join(dir, "ggml", "src", "ggml-cuda", "CMakeFiles", "ggml-cuda.dir", "build.make");
  const text = await Deno.readTextFile(make).catch(() => "") ||
    await Deno.readTextFile(join(dir, "build.ninja")).catch(() => "");
  const cudaTotal = new Set(text.match(/ggml-cuda\.dir\/\S+\.cu\.o(?=: )/g) ?? []).size;
  return { all: await n(dir), cuda: await n(join(dir, "ggml", "src", "ggml-cuda")), cudaTotal };
}

const BIG_FIXTURE = join("fixtures", "gpu-1b.gguf");

const STEPS: Step[] = [
  {
    id: "unpack",
    title: "0. unpack the archive into a cache of its own and check that loupe finds everything in it",
    estimateS: 30,
    async run(ctx) {
      const result = await unpackKit(ctx.opts.archive, ctx.manifest, ctx.cache, join(ctx.opts.work, "kit"));
      return { status: "done", result };
    },
  },
  {
    id: "build",
    title: "1. build llama.cpp from source (CUDA; the CPU alone with --cpu-only), libloupe and the reference tools",
    estimateS: 480,
    resumable: true,
    async run(ctx) {
      const env: Record<string, string> = {};
      const result: Record<string, unknown> = {};
      if (!ctx.opts.cpuOnly) {
        const cuda = await cudaEnvironment(join(ctx.opts.work, "cuda-shim"));
        Object.assign(env, cuda.env);
        const archs = ctx.opts.arch ?? cudaArchitectures(((await gpus()) ?? []).map((g) => g.computeCap));
        if (!archs) throw new Error("nvidia-smi gives no compute capability: pass --arch=NN");
        env.CMAKE_CUDA_ARCHITECTURES = archs;
        result.cudaArchitectures = archs;
        result.cudaNotes = cuda.notes;
        result.nvcc = (await tryRun("nvcc", ["--version"]))?.split("\n").at(-2) ?? null;
        ctx.env = { ...ctx.env, ...(cuda.env.LD_LIBRARY_PATH ? { LD_LIBRARY_PATH: cuda.env.LD_LIBRARY_PATH } : {}) };
        if (cuda.env.PATH) ctx.env.PATH = cuda.env.PATH;
        ctx.state.machine = { ...ctx.state.machine, cudaEnv: env };
      }
      // Ninja where it is installed: a compile cut at the time budget is redone, never taken as built.
      if (await hasProgram("ninja")) env.CMAKE_GENERATOR = "Ninja";
      const args = ["--from-source", ...(ctx.opts.cpuOnly ? [] : ["--cuda"])];
      log(
        `building (${
          ctx.opts.cpuOnly ? "CPU" : `CUDA ${env.CMAKE_CUDA_ARCHITECTURES}`
        }) with ${navigator.hardwareConcurrency} cores`,
      );
      const progress = async () => {
        const parts: string[] = [];
        for (const d of await buildDirs(ctx)) {
          const c = await countObjects(d);
          parts.push(`${basename(d)}: ${c.all} objects${c.cudaTotal ? ` (ggml-cuda ${c.cuda}/${c.cudaTotal})` : ""}`);
        }
        return `${parts.join("; ") || "configuring"} | ${await lastLine(join(ctx.opts.out, "build.log"))}`;
      };
      const r = await runChild(ctx, "build", denoRun(join(ROOT, "native/build/cli.ts"), ...args), progress, env);
      if (r.cut) return { status: "unfinished", note: "cut at the time budget; the next run resumes the compile" };
      if (r.code !== 0) return { status: "failed", note: `the build failed (exit ${r.code}): see build.log` };
      const out = await Deno.readTextFile(join(ctx.opts.out, "build.out"));
      const json = out.slice(out.lastIndexOf("\n{") + 1);
      const built = JSON.parse(json);
      const engineFiles: string[] = [];
      for await (const e of Deno.readDir(built.engineDir)) engineFiles.push(e.name);
      Object.assign(result, { ...built, engineFiles: engineFiles.sort() });
      if (!ctx.opts.cpuOnly && !engineFiles.some((f) => /^libggml-cuda.*\.so/.test(f))) {
        return { status: "failed", note: `no libggml-cuda in ${built.engineDir}`, result };
      }
      return { status: "done", result };
    },
  },
  {
    id: "tests",
    title: "2. the CUDA test set, tests/device/cuda_test.ts (with --cpu-only: skipped, and tests/engine/model_test.ts)",
    estimateS: 300,
    async run(ctx) {
      const facts = join(ctx.opts.out, "facts.jsonl");
      await Deno.remove(facts).catch(() => {});
      const files = ["tests/device/cuda_test.ts", ...(ctx.opts.cpuOnly ? ["tests/engine/model_test.ts"] : [])];
      const cmd = [Deno.execPath(), "test", "-A", "--no-check=remote", ...files];
      const r = await runChild(ctx, "tests", cmd, () => tailOf("tests", ctx), { LOUPE_DEVICE_FACTS: facts });
      if (r.cut) return { status: "unfinished", note: "cut at the time budget" };
      // deno-lint-ignore no-control-regex
      const text = (await Deno.readTextFile(join(ctx.opts.out, "tests.out"))).replace(/\x1b\[[0-9;]*m/g, "");
      const last = text.slice(text.lastIndexOf("\n====") + 1);
      const summary = last.match(/(ok|FAILED) \| (\d+) passed[^\n]*\| (\d+) failed[^\n]*/);
      const results = [...last.matchAll(/^(.+?) \.\.\. (ok|FAILED|ignored)\b/gm)].map((m) => ({
        name: m[1].trim(),
        result: m[2],
      }));
      const factLines = (await Deno.readTextFile(facts).catch(() => "")).split("\n").filter(Boolean);
      const result = {
        exitCode: r.code,
        summary: summary?.[0] ?? null,
        passed: Number(summary?.[2] ?? 0),
        failed: Number(summary?.[3] ?? (r.code === 0 ? 0 : 1)),
        ignored: Number(last.match(/(\d+) ignored/)?.[1] ?? 0),
        tests: results,
        facts: factLines.map((l) => JSON.parse(l)),
        skipMessage: last.match(/cuda_test: (skipped[^\n]*)/)?.[1] ?? null,
      };
      if (!summary) return { status: "failed", note: `no test summary (exit ${r.code}): see tests.out`, result };
      return { status: result.failed ? "failed" : "done", note: result.summary ?? undefined, result };
    },
  },
  {
    id: "bench-fixture",
    title: "3a. the ≈1.1B-parameter F16 fixture (TinyLlama's shapes, random weights), made here",
    estimateS: 240,
    skip: (ctx) => (ctx.opts.noBig ? "--no-big" : null),
    async run(ctx) {
      const json = join(ctx.opts.out, "bench-fixture.json");
      const target = join(ctx.cache, BIG_FIXTURE);
      const progress = async () => {
        let size = 0;
        for (const e of await entries(join(ctx.cache, "fixtures"))) {
          if (e.name.startsWith("gpu-1b")) {
            size = Math.max(size, (await Deno.stat(join(ctx.cache, "fixtures", e.name))).size);
          }
        }
        return `${(size / 2 ** 30).toFixed(2)} GiB written of about 2.05`;
      };
      const r = await runChild(
        ctx,
        "bench-fixture",
        denoRun(join(ROOT, "tests/device/bench_parts.ts"), "fixture", `--path=${target}`, `--json=${json}`),
        progress,
      );
      if (r.cut) return { status: "unfinished", note: "cut at the time budget" };
      if (r.code !== 0) return { status: "failed", note: `exit ${r.code}: see bench-fixture.log` };
      return { status: "done", result: JSON.parse(await Deno.readTextFile(json)) };
    },
  },
  {
    id: "bench-tg",
    title: "3b. tg128/pp512 against llama-bench and measuring on/off, every layer offloaded",
    estimateS: 330,
    run: (ctx) =>
      benchRun(ctx, "bench-tg", [
        ...(bigModel(ctx) ? [`--model=${bigModel(ctx)}`, "--gpu-layers=all"] : ["--rounds=3"]),
      ]),
  },
  {
    id: "bench-half",
    title: "3c. measuring on/off with half of the layers offloaded",
    estimateS: 240,
    run: (ctx) => {
      const model = bigModel(ctx);
      // gpuLayers counts the output layer too (llama.cpp's -ngl): half the blocks plus the output.
      const half = model ? 22 / 2 + 1 : 8 / 2 + 1;
      return benchRun(ctx, "bench-half", [
        ...(model ? [`--model=${model}`] : []),
        `--gpu-layers=${half}`,
        "--no-pp",
        "--no-reference",
        "--tokens=64",
        "--reps=3",
        ctx.opts.cpuOnly ? "--rounds=3" : "--rounds=7",
      ]);
    },
  },
  {
    id: "bench-cpu",
    title: "3d. generation on the CPU alone (gpuLayers 0), for the GPU/CPU ratio",
    estimateS: 200,
    skip: (ctx) => (ctx.opts.cpuOnly ? "no GPU (--cpu-only): the ratio needs one" : null),
    run: (ctx) =>
      benchRun(ctx, "bench-cpu", [
        ...(bigModel(ctx) ? [`--model=${bigModel(ctx)}`] : []),
        "--gpu-layers=0",
        "--no-pp",
        "--tokens=32",
        "--reps=2",
        "--rounds=3",
      ]),
  },
  {
    id: "bench-embed",
    title: "3e. embeddings: one batched call against one call per text, and against llama-embedding",
    estimateS: 200,
    run: (ctx) => partsRun(ctx, "bench-embed", "embed", ctx.opts.cpuOnly ? ["--rounds=3"] : []),
  },
  {
    id: "bench-vision",
    title: "3f. CLIP ViT-L/14-336 encode: CUDA against the CPU and against llama-mtmd-cli",
    estimateS: 240,
    run: (ctx) => partsRun(ctx, "bench-vision", "vision", ctx.opts.cpuOnly ? ["--rounds=2"] : []),
  },
];

/** The 1.1B fixture where the benchmarks use it: on a GPU (the CPU rehearsal makes it, but measures on the bench fixture). */
function bigModel(ctx: Ctx): string | null {
  if (ctx.opts.cpuOnly) return null;
  return ctx.state.steps["bench-fixture"]?.status === "done" ? join(ctx.cache, BIG_FIXTURE) : null;
}

async function benchRun(ctx: Ctx, id: string, args: string[]): Promise<Outcome> {
  const json = join(ctx.opts.out, `${id}.json`);
  const r = await runChild(
    ctx,
    id,
    denoRun(join(ROOT, "tests/bench/bench.ts"), ...args, `--json=${json}`),
    () => tailOf(id, ctx),
  );
  if (r.cut) return { status: "unfinished", note: "cut at the time budget" };
  if (r.code !== 0) return { status: "failed", note: `exit ${r.code}: see ${id}.log` };
  return { status: "done", result: JSON.parse(await Deno.readTextFile(json)) };
}

async function partsRun(ctx: Ctx, id: string, what: string, args: string[]): Promise<Outcome> {
  const json = join(ctx.opts.out, `${id}.json`);
  const r = await runChild(
    ctx,
    id,
    denoRun(join(ROOT, "tests/device/bench_parts.ts"), what, ...args, `--json=${json}`),
    () => tailOf(id, ctx),
  );
  if (r.cut) return { status: "unfinished", note: "cut at the time budget" };
  if (r.code !== 0) return { status: "failed", note: `exit ${r.code}: see ${id}.log` };
  return { status: "done", result: JSON.parse(await Deno.readTextFile(json)) };
}

// ---- the report ------------------------------------------------------------------------------

/** One figure the issue asks for, with its target. */
export interface Figure {
  metric: string;
  value: number | null;
  unit: string;
  target: string;
  met: boolean | null;
  note?: string;
}

/** The issue's figures, from the steps' results. */
export function figures(state: CheckState): Figure[] {
  const res = (id: string) => state.steps[id]?.status === "done" ? state.steps[id].result as any : null;
  const out: Figure[] = [];
  const tg = res("bench-tg");
  const at = (x: number | null | undefined) => (typeof x === "number" && Number.isFinite(x) ? x : null);
  const ratio = (metric: string, v: number | null | undefined, target: number, note?: string) =>
    out.push({
      metric,
      value: at(v),
      unit: "×",
      target: `≥ ${target}`,
      met: at(v) === null ? null : v! >= target,
      note,
    });
  const overhead = (metric: string, onOff: number | null | undefined, note?: string) => {
    const v = at(onOff) === null ? null : 100 * (1 - onOff!);
    out.push({ metric, value: v, unit: "%", target: "≤ 1", met: v === null ? null : v <= 1, note });
  };
  const where = (r: any) =>
    r
      ? `${r.modelInfo?.desc ?? ""} ${
        ((r.modelInfo?.nParams ?? 0) / 1e6).toFixed(0)
      }M params, ${r.modelInfo?.gpuLayers} of ${r.modelInfo?.nLayer} layers offloaded, on ${r.devices?.join("+")}`
      : undefined;
  if (tg) {
    ratio(
      `tg${tg.settings.tokens} loupe/llama-bench (median of paired rounds)`,
      tg.paired.tgDecodesVsReference,
      0.98,
      where(tg),
    );
    ratio(
      `pp${tg.settings.prompt} loupe/llama-bench (median of paired rounds)`,
      tg.paired.ppVsReference,
      0.98,
      where(tg),
    );
    overhead(
      `measuring overhead, ${
        state.mode === "cpu-only" ? "CPU" : "all layers offloaded"
      } (median of paired rounds, end to end)`,
      tg.paired.measureOnOffE2e,
      where(tg),
    );
  }
  const half = res("bench-half");
  if (half) {
    overhead(
      `measuring overhead, ${
        state.mode === "cpu-only" ? "CPU, half the layers asked for a GPU there is not" : "half of the layers offloaded"
      } (median of paired rounds, end to end)`,
      half.paired.measureOnOffE2e,
      where(half),
    );
  }
  const cpu = res("bench-cpu");
  if (tg && cpu) {
    out.push({
      metric: "GPU/CPU generation ratio (loupe tg decodes, all layers vs none)",
      value: at(tg.medians.tgDecodesOn / cpu.medians.tgDecodesOn),
      unit: "×",
      target: "info",
      met: null,
      note: `${tg.medians.tgDecodesOn?.toFixed(1)} vs ${cpu.medians.tgDecodesOn?.toFixed(1)} tok/s`,
    });
  }
  for (const r of res("bench-embed")?.rows ?? []) {
    if (r.target !== undefined) ratio(r.metric, r.ratio, r.target);
  }
  for (const r of res("bench-vision")?.rows ?? []) {
    const t = Number(String(r.target).replace(/[^\d.]/g, ""));
    ratio(r.metric, r.ratio, t, r.note);
  }
  return out;
}

async function writeReport(ctx: Ctx): Promise<void> {
  const figs = figures(ctx.state);
  const json = { ...ctx.state, manifest: ctx.manifest, figures: figs, writtenAt: new Date().toISOString() };
  await Deno.writeTextFile(join(ctx.opts.out, "report.json"), JSON.stringify(json, null, 2) + "\n");
  const md: string[] = [];
  const m = ctx.state.machine ?? {};
  md.push(`# loupe GPU kit report (${ctx.state.mode})`, "");
  md.push(`- written ${json.writtenAt}; archive sha256 ${ctx.state.archiveSha256.slice(0, 16)}…; ${ctx.manifest.deno}`);
  md.push(`- machine: ${m.cores} cores; GPUs: ${JSON.stringify(m.gpus ?? "none")}; ${m.gxx ?? ""}; ${m.cmake ?? ""}`);
  if (ctx.state.mode === "cpu-only") {
    md.push(
      "- a rehearsal (--cpu-only): every step on the CPU build, offline; its figures show that the steps run and " +
        "report, not the targets (those are for the GPU), and on a shared machine they are disturbed",
    );
  }
  md.push(
    "",
    "## Steps",
    "",
    "| step | status | wall (last / all) | attempts | note |",
    "| --- | --- | --- | --- | --- |",
  );
  for (const s of STEPS) {
    const r = ctx.state.steps[s.id];
    md.push(
      `| ${s.title} | ${r?.status ?? "not run"} | ${r ? `${minutes(r.wallS)} / ${minutes(r.totalS)}` : ""} | ${
        r?.attempts ?? 0
      } | ${(r?.note ?? "").replaceAll("|", "/")} |`,
    );
  }
  md.push("", "## Figures", "", "| metric | value | target | met | note |", "| --- | --- | --- | --- | --- |");
  for (const f of figs) {
    const v = f.value === null ? "n/a" : `${f.value.toFixed(f.unit === "%" ? 2 : 3)}${f.unit === "%" ? " %" : ""}`;
    md.push(`| ${f.metric} | ${v} | ${f.target} | ${f.met === null ? "" : f.met ? "yes" : "NO"} | ${f.note ?? ""} |`);
  }
  const tests = ctx.state.steps.tests?.result as any;
  if (tests) {
    md.push(
      "",
      "## Tests",
      "",
      `${tests.summary ?? "no summary"}${tests.skipMessage ? ` — ${tests.skipMessage}` : ""}`,
      "",
    );
    for (const t of tests.tests ?? []) md.push(`- ${t.result}: ${t.name}`);
    if (tests.facts?.length) {
      md.push("", "Measured in the tests:", "");
      for (const f of tests.facts) md.push(`- ${f.what}: ${JSON.stringify(f.value)}`);
    }
  }
  md.push("", "Logs: `<step>.log` (stderr) and `<step>.out` (stdout) beside this file.", "");
  await Deno.writeTextFile(join(ctx.opts.out, "report.md"), md.join("\n"));
}

// ---- main ------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const out = option("out");
  if (!out) {
    console.error("device-check: --out DIR is required (report.md, report.json, state.json and logs go there)");
    return 2;
  }
  const opts: CheckOptions = {
    out,
    archive: option("archive") ?? DEFAULT_ARCHIVE,
    work: option("work") ?? DEFAULT_WORK,
    cpuOnly: Deno.args.includes("--cpu-only"),
    budgetS: Number(option("budget") ?? 560),
    only: list("only"),
    redo: list("redo"),
    arch: option("arch"),
    noBig: Deno.args.includes("--no-big"),
  };
  const t0 = performance.now();
  await Deno.mkdir(opts.out, { recursive: true });
  await Deno.mkdir(opts.work, { recursive: true });
  const manifest = await readManifest(opts.archive);
  const archiveSha256 = (await hashFile(opts.archive)).sha256;
  const mode = opts.cpuOnly ? "cpu-only" : "cuda";
  const statePath = join(opts.out, "state.json");
  let state: CheckState = await Deno.readTextFile(statePath).then(JSON.parse).catch(() => null);
  if (!state || state.mode !== mode || state.archiveSha256 !== archiveSha256) {
    if (state) log(`state.json is of another ${state.mode !== mode ? "mode" : "archive"}: starting afresh`);
    state = { version: 1, mode, archiveSha256, steps: {} };
  }
  for (const id of opts.redo) delete state.steps[id];
  const cache = join(opts.work, "cache");
  const gpuList = await gpus();
  if (!opts.cpuOnly && !gpuList) {
    console.error("device-check: nvidia-smi finds no GPU here; use --cpu-only for the rehearsal");
    return 2;
  }
  state.machine = {
    ...state.machine,
    cores: navigator.hardwareConcurrency,
    gpus: gpuList,
    gxx: (await tryRun("g++", ["--version"]))?.split("\n")[0],
    cmake: (await tryRun("cmake", ["--version"]))?.split("\n")[0],
    nvcc: (await tryRun("nvcc", ["--version"]))?.split("\n").at(-2) ?? null,
  };
  const env: Record<string, string> = {
    ...Deno.env.toObject(),
    LOUPE_CACHE_DIR: cache,
    LOUPE_ENGINE: "source",
    NO_COLOR: "1",
  };
  for (const k of ["LOUPE_SRC_DIR", "LOUPE_LIB", "LOUPE_ENGINE_DIR", "GGML_VK_VISIBLE_DEVICES"]) delete env[k];
  const cudaEnv = (state.machine.cudaEnv ?? {}) as Record<string, string>;
  if (cudaEnv.LD_LIBRARY_PATH) env.LD_LIBRARY_PATH = cudaEnv.LD_LIBRARY_PATH;
  if (cudaEnv.PATH) env.PATH = cudaEnv.PATH;
  const ctx: Ctx = { opts, state, manifest, cache, deadline: t0 + opts.budgetS * 1000, env };
  // A child group left by a run that was killed outright, then locks left by a run that was cut:
  // nothing else uses this work folder.
  const stale = Number(await Deno.readTextFile(join(opts.work, "child.pgid")).catch(() => "0"));
  const staleCmd = stale > 1 ? await Deno.readTextFile(`/proc/${stale}/cmdline`).catch(() => "") : "";
  if (staleCmd.includes(ROOT) || staleCmd.includes(opts.work)) {
    log(`stopping the process group ${stale} a killed run left behind`);
    await stopGroup(stale);
    await Deno.remove(join(opts.work, "child.pgid")).catch(() => {});
  }
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    Deno.addSignalListener(sig, async () => {
      log(`${sig}: stopping the running step; run again to go on`);
      if (current?.group) await stopGroup(current.pid, 5_000);
      else if (current) Deno.kill(current.pid, "SIGKILL");
      Deno.exit(143);
    });
  }
  for (const sub of ["engine", "build", "src", "packages"]) {
    for (const e of await entries(join(cache, sub))) {
      if (e.name.endsWith(".lock")) await Deno.remove(join(cache, sub, e.name), { recursive: true }).catch(() => {});
    }
  }
  log(
    `${mode}: archive ${opts.archive} (${manifest.deno}, llama.cpp ${
      manifest.llamaCommit.slice(0, 12)
    }), work ${opts.work}, ` +
      `out ${opts.out}, budget ${opts.budgetS} s`,
  );
  let stopped: string | null = null;
  for (const step of STEPS) {
    if (opts.only.length && !opts.only.includes(step.id)) continue;
    const rec = state.steps[step.id];
    if (rec && rec.status !== "unfinished") continue;
    if (state.steps.build?.status === "failed" && step.id !== "unpack") {
      stopped = "the build failed: fix it (see build.log), then run again with --redo=build";
      break;
    }
    if (state.steps.unpack?.status !== "done" && step.id !== "unpack") {
      stopped = "the archive could not be unpacked";
      break;
    }
    const why = step.skip?.(ctx);
    if (why) {
      state.steps[step.id] = { status: "skipped", attempts: 0, wallS: 0, totalS: 0, note: why };
      log(`${step.title}: skipped (${why})`);
      continue;
    }
    const leftS = (ctx.deadline - performance.now()) / 1000;
    const need = step.resumable ? Math.min(60, step.estimateS) : step.estimateS;
    if (leftS < need) {
      stopped = `${Math.round(leftS)} s left of the budget, ${step.id} needs about ${step.estimateS} s`;
      break;
    }
    log(`${step.title}: starting (${Math.round(leftS)} s of the budget left)`);
    const s0 = performance.now();
    let outcome: Outcome;
    try {
      outcome = await step.run(ctx);
    } catch (e) {
      outcome = { status: "failed", note: (e as Error).message.slice(0, 2000) };
    }
    const wallS = (performance.now() - s0) / 1000;
    const prev = state.steps[step.id];
    state.steps[step.id] = {
      ...outcome,
      attempts: (prev?.attempts ?? 0) + 1,
      wallS,
      totalS: (prev?.totalS ?? 0) + wallS,
      finishedAt: new Date().toISOString(),
    };
    log(`${step.title}: ${outcome.status} in ${minutes(wallS)}${outcome.note ? ` (${outcome.note})` : ""}`);
    await Deno.writeTextFile(statePath, JSON.stringify(state, null, 2) + "\n");
    await writeReport(ctx);
    if (outcome.status === "unfinished") {
      stopped = `${step.id} was cut at the time budget`;
      break;
    }
  }
  await Deno.writeTextFile(statePath, JSON.stringify(state, null, 2) + "\n");
  await writeReport(ctx);
  const left = STEPS.filter((s) =>
    (!opts.only.length || opts.only.includes(s.id)) &&
    (!state.steps[s.id] || state.steps[s.id].status === "unfinished")
  );
  const wall = minutes((performance.now() - t0) / 1000);
  if (left.length) {
    log(`stopped after ${wall}: ${stopped ?? "budget"}; left: ${left.map((s) => s.id).join(", ")}`);
    log("NEXT: run the same command again (on the same machine, at once) to go on");
    return 10;
  }
  const failed = Object.entries(state.steps).filter(([, r]) => r.status === "failed").map(([id]) => id);
  log(`DONE in ${wall}: ${join(opts.out, "report.md")}${failed.length ? `; failed: ${failed.join(", ")}` : ""}`);
  for (const f of figures(state)) {
    log(
      `  ${f.metric}: ${f.value === null ? "n/a" : f.value.toFixed(3)}${
        f.unit === "%" ? " %" : ""
      } (target ${f.target})`,
    );
  }
  return failed.length ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
