/**
 * Fetches the pinned engine and builds libloupe (our C ABI plus mtmd's sources) and the
 * llama.cpp reference tools against it. Everything goes to a cache directory outside the
 * repository; nothing here is committed.
 *
 * A library: `native/build/cli.ts` is its command line (`deno task build`).
 *
 * @module
 */
import { dirname, join } from "node:path";
import { type EngineVariant, LLAMA_CPP_COMMIT, type PinnedPackage, PREBUILT_PACKAGES, SOURCE_PACKAGE } from "./pins.ts";

/** What a build produced: where the engine lives and where our library and tools are. */
export interface BuildResult {
  /** The variant that was built. */
  variant: EngineVariant;
  /** Directory holding libllama, libggml* and the dynamically loaded backends. */
  engineDir: string;
  /** The pinned llama.cpp source tree. */
  sourceDir: string;
  /** Path of libloupe.so. */
  library: string;
  /**
   * Reference tools built from the same source against the same engine. `server` (llama.cpp's
   * `llama-server`) and `rpcServer` (ggml's `ggml-rpc-server`, see {@linkcode RpcBuild.server})
   * are where they are or would be: they are built only when asked for
   * ({@linkcode BuildOptions.server}, {@linkcode BuildOptions.rpc}).
   */
  tools: { completion: string; bench: string; embedding: string; mtmd: string; server: string; rpcServer: string };
  /**
   * ggml's RPC backend module, `libggml-rpc.so`, where it is or would be (built only with
   * {@linkcode BuildOptions.rpc}; see {@linkcode RpcBuild.backend}). It lives outside the engine
   * directory, so `loupe_init` does not load it: load it by path (`ggml_backend_load`), or for
   * llama.cpp's tools name it in `GGML_BACKEND_PATH`.
   */
  rpcBackend: string;
}

/**
 * ggml's RPC backend and server, compiled from the pinned source against an engine's ggml
 * libraries (the prebuilt ones, which are built without RPC, or the from-source ones) by
 * {@linkcode ensureRpc}, in a cache directory of their own.
 */
export interface RpcBuild {
  /** The engine variant they are built against. */
  variant: EngineVariant;
  /** The engine directory whose libggml and libggml-base they link. */
  engineDir: string;
  /**
   * `libggml-rpc.so`: the RPC backend as a dynamically loaded module (`ggml_backend_init`; no
   * `ggml_backend_score`, so it is always usable), as ggml's CMake builds it with `GGML_RPC=ON` and
   * `GGML_BACKEND_DL=ON`. Load it with `ggml_backend_load(path)`; llama.cpp's tools load it from
   * `GGML_BACKEND_PATH`. Its registry ("RPC") offers `ggml_backend_rpc_add_server` and
   * `ggml_backend_rpc_start_server` through `ggml_backend_reg_get_proc_address`.
   */
  backend: string;
  /**
   * `ggml-rpc-server` (tools/rpc/rpc-server.cpp; called `rpc-server` in older releases):
   * `-H/--host` (default 127.0.0.1), `-p/--port` (50052), `-d/--device`, `-t/--threads`,
   * `-c/--cache`. It loads its backends from its own directory, which links to the engine's
   * backend modules besides holding `libggml-rpc.so`, so it runs from any working directory.
   */
  server: string;
  /** The directory of both. */
  dir: string;
}

/** Options of {@linkcode ensureBuild}. */
export interface BuildOptions {
  /** Engine variant; default from `LOUPE_ENGINE` or detected from the machine. */
  variant?: EngineVariant;
  /** For the from-source variant: also build the CUDA backend. */
  cuda?: boolean;
  /** For the from-source variant: also build the Vulkan backend. */
  vulkan?: boolean;
  /**
   * Also build llama.cpp's `llama-server` (default false): a reference for benchmarks, too big to
   * build on every first use (15 C++ files, about 70 s on two cores; its objects are shared by the
   * variants, so another variant only links). It has cache directories of its own, so that changes
   * to libloupe's sources do not rebuild it.
   */
  server?: boolean;
  /**
   * Also build ggml's RPC backend module and `ggml-rpc-server` (default false; see
   * {@linkcode ensureRpc}): three C++ files, about 15 s on two cores, in cache directories of their
   * own, keyed apart from libloupe.
   */
  rpc?: boolean;
  /** Prints progress lines to stderr (default true). */
  verbose?: boolean;
  /** Receives each step (download, unpack, compile, link, done) instead of the stderr lines. */
  onProgress?: (step: BuildProgress) => void;
}

/** One step of fetching and building, for progress displays. */
export interface BuildProgress {
  /** What kind of step. */
  phase: "download" | "unpack" | "compile" | "link" | "done";
  /** What is happening, e.g. "compiling (3/20) tools/mtmd/clip.cpp". */
  message: string;
  /** Fraction done in [0, 1] (of the compile phase), or null when unknown. */
  fraction: number | null;
}

const NATIVE_DIR = dirname(dirname(new URL(import.meta.url).pathname));

/** Root of loupe's cache: `LOUPE_CACHE_DIR`, else `$XDG_CACHE_HOME/loupe`, else `~/.cache/loupe`. */
export function cacheDir(): string {
  const explicit = Deno.env.get("LOUPE_CACHE_DIR");
  if (explicit) return explicit;
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "loupe");
  const home = Deno.env.get("HOME") ?? "/tmp";
  return join(home, ".cache", "loupe");
}

function log(verbose: boolean, msg: string) {
  if (verbose) console.error(`loupe: ${msg}`);
}

/** Hands a step to `onProgress`, or prints it when there is none. */
function report(verbose: boolean, onProgress: BuildOptions["onProgress"], step: BuildProgress) {
  if (onProgress) onProgress(step);
  else log(verbose, step.message);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function run(cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  const out = await new Deno.Command(cmd, { args, cwd: opts.cwd, env: opts.env, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    throw new Error(`Command failed: ${cmd} ${args.join(" ")}: ${text.trim().slice(-4000)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** What {@linkcode chooseVariant} decides from (gathered by {@linkcode detectVariant}). */
export interface MachineFacts {
  /** `/proc/driver/nvidia/version`, or null without an NVIDIA driver. */
  nvidiaDriver: string | null;
  /** CUDA runtime majors whose `libcudart.so.N` the loader can find (ldconfig, CUDA_HOME, /usr/local/cuda). */
  cudaRuntimes: number[];
  /** Whether a Vulkan loader (`libvulkan.so.1`) is installed. */
  vulkanLoader: boolean;
  /** Whether a GPU render node (/dev/dri/renderD*) exists. */
  renderNode: boolean;
  /** Whether `GGML_VK_VISIBLE_DEVICES` is set (a CPU Vulkan device made visible on purpose). */
  vulkanVisible: boolean;
}

/**
 * The engine variant for a machine: with an NVIDIA driver, the CUDA build whose runtime is
 * installed (Colab's CUDA 12 runtime gets the CUDA 12 package even on a new driver), else by the
 * driver (CUDA 13 needs driver 580 or newer); then Vulkan with a GPU render node (or a Vulkan
 * device made visible on purpose: Mesa's CPU drivers install a Vulkan loader too, and ggml hides
 * such devices anyway); else CPU.
 */
export function chooseVariant(f: MachineFacts): EngineVariant {
  if (f.nvidiaDriver !== null) {
    const m = f.nvidiaDriver.match(/Kernel Module\s+(?:for\s+\S+\s+)?(\d+)\./);
    const newDriver = !m || Number(m[1]) >= 580;
    if (newDriver && f.cudaRuntimes.includes(13)) return "cuda";
    if (f.cudaRuntimes.includes(12)) return "cuda12";
    return newDriver ? "cuda" : "cuda12";
  }
  if (f.vulkanLoader && (f.renderNode || f.vulkanVisible)) return "vulkan";
  return "cpu";
}

/** CUDA runtime majors the loader can find: ldconfig's cache, then the usual toolkit folders. */
async function cudaRuntimes(ldconfig: string): Promise<number[]> {
  const found = new Set<number>();
  for (const m of ldconfig.matchAll(/libcudart\.so\.(\d+)\s/g)) found.add(Number(m[1]));
  const home = Deno.env.get("CUDA_HOME") ?? Deno.env.get("CUDA_PATH");
  const dirs = [home && `${home}/lib64`, "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"];
  for (const dir of dirs) {
    if (!dir) continue;
    try {
      for await (const e of Deno.readDir(dir)) {
        const m = e.name.match(/^libcudart\.so\.(\d+)$/);
        if (m) found.add(Number(m[1]));
      }
    } catch { /* no such folder */ }
  }
  return [...found].sort();
}

/** Picks the engine variant: `LOUPE_ENGINE`, else {@linkcode chooseVariant} on this machine's facts. */
export async function detectVariant(): Promise<EngineVariant> {
  const env = Deno.env.get("LOUPE_ENGINE");
  if (env) {
    const known = ["cpu", "vulkan", "cuda", "cuda12", "source"];
    if (!known.includes(env)) throw new Error(`Unknown LOUPE_ENGINE "${env}": expected one of ${known.join(", ")}`);
    return env as EngineVariant;
  }
  const ldconfig = await run("/sbin/ldconfig", ["-p"]).catch(() => "");
  return chooseVariant({
    nvidiaDriver: await Deno.readTextFile("/proc/driver/nvidia/version").catch(() => null),
    cudaRuntimes: await cudaRuntimes(ldconfig),
    vulkanLoader: ldconfig.includes("libvulkan.so.1"),
    renderNode: await Array.fromAsync(Deno.readDir("/dev/dri")).then(
      (es) => es.some((e) => e.name.startsWith("renderD")),
      () => false,
    ),
    vulkanVisible: Boolean(Deno.env.get("GGML_VK_VISIBLE_DEVICES")),
  });
}

async function sha512Base64(path: string): Promise<string> {
  const data = await Deno.readFile(path);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-512", data));
  let bin = "";
  for (const b of digest) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** Holds a directory lock while `fn` runs, so concurrent processes do not build the same thing twice. */
export async function withLock<T>(lockPath: string, fn: () => Promise<T>): Promise<T> {
  await Deno.mkdir(dirname(lockPath), { recursive: true });
  const started = Date.now();
  while (true) {
    try {
      await Deno.mkdir(lockPath);
      await Deno.writeTextFile(join(lockPath, "pid"), String(Deno.pid));
      break;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      const st = await Deno.stat(lockPath).catch(() => null);
      // A lock whose process is gone (a build interrupted with Ctrl-C or killed), or older than
      // 60 minutes, belongs to a process that died. A lock just made may not have its pid yet.
      const pid = Number(await Deno.readTextFile(join(lockPath, "pid")).catch(() => ""));
      const dead = pid > 0 && !(await exists(`/proc/${pid}`));
      if (dead || (st?.mtime && Date.now() - st.mtime.getTime() > 3_600_000)) {
        await Deno.remove(lockPath, { recursive: true }).catch(() => {});
        continue;
      }
      if (Date.now() - started > 3_600_000) throw new Error(`Cannot take the build lock ${lockPath}: timed out`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  try {
    return await fn();
  } finally {
    await Deno.remove(lockPath, { recursive: true }).catch(() => {});
  }
}

/** Downloads a pinned npm tarball with `npm pack`, checks its integrity and unpacks it. Returns the unpacked `package/` dir. */
export async function fetchPackage(
  pkg: PinnedPackage,
  verbose = true,
  onProgress?: BuildOptions["onProgress"],
): Promise<string> {
  const root = join(cacheDir(), "packages", `${pkg.name.replace("/", "+")}@${pkg.version}`);
  const marker = join(root, ".integrity");
  if (await exists(marker) && (await Deno.readTextFile(marker)) === pkg.integrity) {
    return join(root, "package");
  }
  return await withLock(root + ".lock", async () => {
    if (await exists(marker) && (await Deno.readTextFile(marker)) === pkg.integrity) {
      return join(root, "package");
    }
    await Deno.remove(root, { recursive: true }).catch(() => {});
    await Deno.mkdir(root, { recursive: true });
    report(verbose, onProgress, {
      phase: "download",
      message: `downloading ${pkg.name}@${pkg.version}`,
      fraction: null,
    });
    const out = await run("npm", ["pack", `${pkg.name}@${pkg.version}`, "--pack-destination", root, "--silent"]);
    const tgz = join(root, out.trim().split("\n").pop()!.trim());
    const actual = "sha512-" + await sha512Base64(tgz);
    if (actual !== pkg.integrity) {
      throw new Error(`Integrity mismatch for ${pkg.name}@${pkg.version}: expected ${pkg.integrity}, got ${actual}`);
    }
    await run("tar", ["xzf", tgz, "-C", root]);
    await Deno.remove(tgz);
    await Deno.writeTextFile(marker, pkg.integrity);
    return join(root, "package");
  });
}

/** The pinned llama.cpp source tree (cloned from the bundle inside node-llama-cpp). `LOUPE_SRC_DIR` overrides it. */
export async function ensureSource(verbose = true, onProgress?: BuildOptions["onProgress"]): Promise<string> {
  const explicit = Deno.env.get("LOUPE_SRC_DIR");
  if (explicit) return explicit;
  const dir = join(cacheDir(), "src", `llama.cpp-${LLAMA_CPP_COMMIT.slice(0, 12)}`);
  const marker = join(dir, ".loupe-ok");
  if (await exists(marker)) return dir;
  const pkgDir = await fetchPackage(SOURCE_PACKAGE, verbose, onProgress);
  return await withLock(dir + ".lock", async () => {
    if (await exists(marker)) return dir;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    report(verbose, onProgress, { phase: "unpack", message: "unpacking the llama.cpp source", fraction: null });
    await run("git", ["clone", "--quiet", join(pkgDir, "llama", "gitRelease.bundle"), dir]);
    const head = (await run("git", ["-C", dir, "rev-parse", "HEAD"])).trim();
    if (head !== LLAMA_CPP_COMMIT) throw new Error(`The source bundle is at ${head}, expected ${LLAMA_CPP_COMMIT}`);
    // node-llama-cpp builds with its patches applied; so do we.
    for await (const e of Deno.readDir(join(pkgDir, "llama", "patches"))) {
      if (e.name.endsWith(".diff")) await run("git", ["-C", dir, "apply", join(pkgDir, "llama", "patches", e.name)]);
    }
    await Deno.writeTextFile(marker, head);
    return dir;
  });
}

async function findEngineDir(root: string, preferFallback: boolean): Promise<string> {
  const found: string[] = [];
  async function walk(dir: string) {
    for await (const e of Deno.readDir(dir)) {
      const p = join(dir, e.name);
      if (e.isDirectory) await walk(p);
      else if (/^libllama(\.[a-z0-9]+)*\.so$/.test(e.name) && !e.name.includes("common")) found.push(dirname(p));
    }
  }
  await walk(root);
  const pick = found.find((d) => d.includes("fallback") === preferFallback) ?? found[0];
  if (!pick) throw new Error(`No libllama in ${root}`);
  return pick;
}

async function buildFromSource(sourceDir: string, opts: BuildOptions, verbose: boolean): Promise<string> {
  const flags = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_BACKEND_DL=ON",
    // GGML_NATIVE cannot be combined with GGML_BACKEND_DL: name this CPU's features instead.
    "-DGGML_NATIVE=OFF",
    ...await cpuFeatureFlags(),
    // ggml's own threadpool, as in the prebuilt engine (no libgomp): loupe puts its workers to
    // sleep when a call returns (ggml_threadpool_pause), which OpenMP's spinning threads ignore.
    "-DGGML_OPENMP=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_OPENSSL=OFF",
    `-DGGML_CUDA=${opts.cuda ? "ON" : "OFF"}`,
    `-DGGML_VULKAN=${opts.vulkan ? "ON" : "OFF"}`,
  ];
  const cudaArch = Deno.env.get("CMAKE_CUDA_ARCHITECTURES");
  if (opts.cuda && cudaArch) flags.push(`-DCMAKE_CUDA_ARCHITECTURES=${cudaArch}`);
  const key = (await hashText(flags.join(" "))).slice(0, 12);
  const buildDir = join(cacheDir(), "engine", `source-${key}`);
  const marker = join(buildDir, ".loupe-ok");
  if (await exists(marker)) return join(buildDir, "bin");
  return await withLock(buildDir + ".lock", async () => {
    if (await exists(marker)) return join(buildDir, "bin");
    report(verbose, opts.onProgress, {
      phase: "compile",
      message: `building llama.cpp from source (${opts.cuda ? "CUDA " : ""}${
        opts.vulkan ? "Vulkan " : ""
      }CPU); this takes a while`,
      fraction: null,
    });
    await run("cmake", ["-S", sourceDir, "-B", buildDir, ...flags]);
    const targets = ["llama", "llama-common", "ggml-cpu"];
    if (opts.cuda) targets.push("ggml-cuda");
    if (opts.vulkan) targets.push("ggml-vulkan");
    await run("cmake", ["--build", buildDir, "-j", String(navigator.hardwareConcurrency), "--target", ...targets]);
    await Deno.writeTextFile(marker, flags.join(" "));
    return join(buildDir, "bin");
  });
}

/** CMake switches for the instruction sets this CPU has (x86-64), up to AVX2 (AVX-512 is left off). */
async function cpuFeatureFlags(): Promise<string[]> {
  const info = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const flags = new Set((info.match(/^flags\s*:(.*)$/m)?.[1] ?? "").trim().split(/\s+/));
  const map: Array<[string, string[]]> = [
    ["GGML_SSE42", ["sse4_2"]],
    ["GGML_AVX", ["avx"]],
    ["GGML_F16C", ["f16c"]],
    ["GGML_FMA", ["fma"]],
    ["GGML_AVX2", ["avx2"]],
    ["GGML_BMI2", ["bmi2"]],
  ];
  // AVX-VNNI and AVX-512 stay off: the one CPU backend of this build must also run where they are
  // not available to it, such as under valgrind (which does not emulate them) in CI's leak check.
  map.push(["GGML_AVX_VNNI", ["never"]], ["GGML_AVX512", ["never"]], ["GGML_AVX512_VNNI", ["never"]]);
  return map.map(([opt, need]) => `-D${opt}=${need.every((f) => flags.has(f)) ? "ON" : "OFF"}`);
}

async function hashText(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Runs commands with at most `limit` at a time. */
async function runAll(jobs: Array<() => Promise<unknown>>, limit: number) {
  let next = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(limit, jobs.length)) }, async () => {
    while (next < jobs.length) await jobs[next++]();
  });
  await Promise.all(workers);
}

async function engineLibraries(engineDir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(engineDir)) names.push(e.name);
  const pick = (re: RegExp, what: string) => {
    const n = names.filter((x) => re.test(x)).sort((a, b) => a.length - b.length)[0];
    if (!n) throw new Error(`The engine directory ${engineDir} has no ${what}`);
    return join(engineDir, n);
  };
  return [
    pick(/^libllama-common(\.[a-z0-9]+)*\.so(\.\d+)*$/, "libllama-common"),
    pick(/^libllama(\.(?!common)[a-z0-9]+)*\.so(\.\d+)*$/, "libllama"),
    pick(/^libggml(\.[a-z0-9]+)*\.so(\.\d+)*$/, "libggml"),
    pick(/^libggml-base(\.[a-z0-9]+)*\.so(\.\d+)*$/, "libggml-base"),
  ];
}

/** llama.cpp tools built as test oracles, with their sources (relative to the source root). */
const REFERENCE_TOOLS: Record<string, string[]> = {
  "llama-completion": ["tools/completion/main.cpp", "tools/completion/completion.cpp"],
  "llama-bench": ["tools/llama-bench/main.cpp", "tools/llama-bench/llama-bench.cpp"],
  "llama-embedding": ["examples/embedding/embedding.cpp"],
};

/** The C++ sources of mtmd compiled into libloupe (the library part of tools/mtmd). */
async function mtmdSources(sourceDir: string): Promise<string[]> {
  const cmake = await Deno.readTextFile(join(sourceDir, "tools", "mtmd", "CMakeLists.txt"));
  const block = cmake.match(/add_library\(mtmd\s+([\s\S]*?)\)/);
  if (!block) throw new Error("Cannot find the mtmd library sources in tools/mtmd/CMakeLists.txt");
  const own = block[1].split(/\s+/).filter((f) => f.endsWith(".cpp")).map((f) => join(sourceDir, "tools", "mtmd", f));
  // mtmd links vendor::hash (a static library in llama.cpp's build).
  const hash = ["hash.cpp", "xxhash/xxhash.c", "sha1/sha1.c", "sha256/sha256.c"].map((f) =>
    join(sourceDir, "vendor", "hash", f)
  );
  return [...own, ...hash];
}

/**
 * Where mtmd's objects are kept: they depend only on the source, so libloupe and llama-server of
 * every variant share them.
 */
function mtmdObjectDir(): string {
  return join(cacheDir(), "build", `mtmd-${LLAMA_CPP_COMMIT.slice(0, 12)}-3`);
}

/** The object file of one of mtmd's sources (see {@linkcode mtmdSources}) in {@linkcode mtmdObjectDir}. */
function mtmdObject(sourceDir: string, src: string): string {
  return join(mtmdObjectDir(), src.slice(sourceDir.length + 1).replaceAll("/", "_") + ".o");
}

/** Compiles one of mtmd's sources into its object (written under a temporary name, then renamed). */
async function compileMtmdObject(sourceDir: string, src: string, cflags: string[], includes: string[]) {
  const obj = mtmdObject(sourceDir, src);
  const tmp = `${obj}.${Deno.pid}.tmp`;
  // vendor/hash: its C files are C, except sha1.c, which llama.cpp compiles as C++.
  const asC = src.endsWith(".c") && !src.endsWith("sha1.c");
  const cc = asC ? ["gcc", "-O2", "-fPIC", "-DNDEBUG"] : ["g++", ...cflags, "-Wno-cast-qual", "-x", "c++"];
  await run(cc[0], [...cc.slice(1), ...includes, "-c", src, "-o", tmp]);
  await Deno.rename(tmp, obj);
}

/**
 * What llama.cpp's CMake compiles into `llama-server` besides llama-common and mtmd (relative to
 * the source root): tools/server/CMakeLists.txt's server-context and llama-server-impl libraries
 * and its executable, and vendor/cpp-httplib (a static library there; libllama-common exports a
 * copy of it too, and the executable's copy wins, as in llama.cpp's own build). The list is
 * checked against the CMakeLists when the server is built.
 */
const SERVER_SOURCES = [
  "tools/server/server-chat.cpp",
  "tools/server/server-task.cpp",
  "tools/server/server-queue.cpp",
  "tools/server/server-common.cpp",
  "tools/server/server-context.cpp",
  "tools/server/server-stream.cpp",
  "tools/server/server-tools.cpp",
  "tools/server/server-mcp.cpp",
  "tools/server/server-schema.cpp",
  "tools/server/server.cpp",
  "tools/server/server-http.cpp",
  "tools/server/server-models.cpp",
  "tools/server/main.cpp",
  "vendor/cpp-httplib/httplib.cpp",
];

/**
 * Flags of the server's compiles beyond libloupe's: `LLAMA_SUBPROCESS`, a public definition of
 * llama-common that changes the layout of `common_subproc` (both engines' libllama-common are built
 * with it, llama.cpp's default on Linux), and cpp-httplib's private definitions from
 * vendor/cpp-httplib/CMakeLists.txt (for httplib.cpp only, which is also compiled with `-w`).
 */
const SERVER_FLAGS = {
  all: ["-DLLAMA_SUBPROCESS"],
  httplib: [
    "-w",
    "-DCPPHTTPLIB_FORM_URL_ENCODED_PAYLOAD_MAX_LENGTH=1048576",
    "-DCPPHTTPLIB_LISTEN_BACKLOG=512",
    "-DCPPHTTPLIB_REQUEST_URI_MAX_LENGTH=32768",
    "-DCPPHTTPLIB_TCP_NODELAY=1",
  ],
};

/** Where llama-server's objects and executable go; see {@linkcode serverPlan}. */
interface ServerPlan {
  /** Objects and the generated UI sources: they depend on the source and flags, not on the engine. */
  objDir: string;
  /** The executable's directory: keyed also by the variant and the engine it links. */
  outDir: string;
  /** The executable. */
  exe: string;
  /** What the directories' keys were made of (written into the markers). */
  fingerprint: string;
}

/**
 * The cache directories of llama-server, keyed only by what it depends on: the objects by the
 * llama.cpp commit, the compiler flags and its source list; the executable also by the variant,
 * the engine directory and the libraries it links. Not by libloupe's sources, so that editing
 * native/ does not rebuild it.
 */
async function serverPlan(
  variant: EngineVariant,
  engineDir: string,
  cflags: string[],
  includes: string[],
  libs: string[],
): Promise<ServerPlan> {
  const objPrint = [LLAMA_CPP_COMMIT, cflags.join(" "), includes.join(" "), JSON.stringify(SERVER_FLAGS)]
    .concat(SERVER_SOURCES, mtmdObjectDir(), "ui: none")
    .join("\n");
  const objKey = (await hashText(objPrint)).slice(0, 12);
  const fingerprint = [objPrint, variant, engineDir, libs.join(" ")].join("\n");
  const key = (await hashText(fingerprint)).slice(0, 16);
  const outDir = join(cacheDir(), "server", `${variant}-${key}`);
  return {
    objDir: join(cacheDir(), "server", `objects-${LLAMA_CPP_COMMIT.slice(0, 12)}-${objKey}`),
    outDir,
    exe: join(outDir, "llama-server"),
    fingerprint,
  };
}

/**
 * Writes the `ui.h` and `ui.cpp` that llama.cpp's scripts/ui-assets.cmake generates when no web UI
 * assets are available (the source carries only the UI's Svelte sources, which CMake would build
 * with npm or download): tools/ui's templates with an empty asset table. The server then serves
 * its API without the web UI, as llama.cpp's own build does offline.
 */
async function writeEmptyUi(sourceDir: string, dir: string) {
  const fill = (text: string) =>
    text.replace("#cmakedefine LLAMA_UI_HAS_ASSETS 1", "/* #undef LLAMA_UI_HAS_ASSETS */")
      .replaceAll("@N_ASSETS@", "0")
      .replaceAll("@ASSET_ARRAYS@", "")
      .replaceAll("@ASSET_TABLE@", "")
      .replaceAll("@USE_GZIP@", "false");
  for (const name of ["ui.h", "ui.cpp"]) {
    const text = fill(await Deno.readTextFile(join(sourceDir, "tools", "ui", `${name}.in`)));
    if (/@[A-Z_]+@|#cmakedefine/.test(text)) {
      throw new Error(`tools/ui/${name}.in has placeholders loupe does not fill`);
    }
    // Rewritten only when it differs: another process may be compiling against it.
    const old = await Deno.readTextFile(join(dir, name)).catch(() => null);
    if (old !== text) await Deno.writeTextFile(join(dir, name), text);
  }
}

/** The `.cpp` files that tools/server/CMakeLists.txt compiles (for checking SERVER_SOURCES). */
async function serverCmakeSources(sourceDir: string): Promise<string[]> {
  const cmake = await Deno.readTextFile(join(sourceDir, "tools", "server", "CMakeLists.txt"));
  const files: string[] = [];
  for (const m of cmake.matchAll(/add_(?:library|executable)\(([^)]*)\)/g)) {
    for (const f of m[1].split(/\s+/)) if (f.endsWith(".cpp")) files.push(`tools/server/${f}`);
  }
  return files;
}

/**
 * Builds llama-server as {@linkcode serverPlan} places it, unless it is built: its objects (those
 * already compiled are kept, also from an interrupted build), the objects of mtmd it links (shared
 * with libloupe; compiled here when missing), then the executable, linked against the engine's
 * libraries and libllama-common like the other reference tools.
 */
async function ensureServer(
  plan: ServerPlan,
  b: {
    sourceDir: string;
    cflags: string[];
    includes: string[];
    link: string[];
    verbose: boolean;
    onProgress: BuildOptions["onProgress"];
  },
): Promise<void> {
  const marker = join(plan.outDir, ".loupe-ok");
  if (await exists(marker)) return;
  await withLock(plan.outDir + ".lock", async () => {
    if (await exists(marker)) return;
    const listed = await serverCmakeSources(b.sourceDir);
    const unknown = listed.filter((f) => !SERVER_SOURCES.includes(f));
    if (unknown.length || listed.length !== SERVER_SOURCES.length - 1) {
      throw new Error(`tools/server/CMakeLists.txt compiles ${listed.join(", ")}; loupe builds ${SERVER_SOURCES}`);
    }
    await Deno.mkdir(plan.objDir, { recursive: true });
    await Deno.mkdir(plan.outDir, { recursive: true });
    await Deno.mkdir(mtmdObjectDir(), { recursive: true });
    await writeEmptyUi(b.sourceDir, plan.objDir);
    const includes = [
      ...b.includes,
      ...["tools/server", "."].map((d) => `-I${join(b.sourceDir, d)}`),
      `-I${plan.objDir}`,
    ];
    const units = [...SERVER_SOURCES.map((f) => join(b.sourceDir, f)), join(plan.objDir, "ui.cpp")];
    const objects = units.map((src) => join(plan.objDir, src.split("/").pop()!.replace(/\.cpp$/, ".o")));
    const mtmd = await mtmdSources(b.sourceDir);
    const jobs: Array<() => Promise<unknown>> = [];
    let done = 0;
    let total = 0;
    const step = (what: string) =>
      report(b.verbose, b.onProgress, {
        phase: "compile",
        message: `compiling (${++done}/${total}) ${what} (llama-server)`,
        fraction: done / total,
      });
    for (const src of mtmd) {
      if (await exists(mtmdObject(b.sourceDir, src))) continue;
      total++;
      jobs.push(async () => {
        await compileMtmdObject(b.sourceDir, src, b.cflags, b.includes);
        step(src.slice(b.sourceDir.length + 1));
      });
    }
    for (const [i, src] of units.entries()) {
      if (await exists(objects[i])) continue;
      total++;
      jobs.push(async () => {
        const tmp = `${objects[i]}.${Deno.pid}.tmp`;
        const extra = src.endsWith("httplib.cpp") ? SERVER_FLAGS.httplib : [];
        await run("g++", [...b.cflags, ...SERVER_FLAGS.all, ...extra, ...includes, "-c", src, "-o", tmp]);
        await Deno.rename(tmp, objects[i]);
        step(src.startsWith(b.sourceDir) ? src.slice(b.sourceDir.length + 1) : "ui.cpp (generated, no web UI)");
      });
    }
    if (jobs.length) {
      report(b.verbose, b.onProgress, {
        phase: "compile",
        message: `building llama-server (${jobs.length} files to compile)`,
        fraction: 0,
      });
    }
    await runAll(jobs, navigator.hardwareConcurrency || 2);
    report(b.verbose, b.onProgress, { phase: "link", message: "linking llama-server", fraction: null });
    const tmp = `${plan.exe}.${Deno.pid}.tmp`;
    await run("g++", [...objects, ...mtmd.map((src) => mtmdObject(b.sourceDir, src)), "-o", tmp, ...b.link]);
    await Deno.rename(tmp, plan.exe);
    await Deno.writeTextFile(marker, plan.fingerprint);
    report(b.verbose, b.onProgress, { phase: "done", message: `built ${plan.exe}`, fraction: 1 });
  });
}

// ---- ggml's RPC backend and server ----------------------------------------------------------

/**
 * The sources of ggml's RPC backend module (relative to the source root), as
 * ggml/src/ggml-rpc/CMakeLists.txt lists them for `ggml_add_backend_library(ggml-rpc …)`; checked
 * against it when the module is built. RDMA (`GGML_RPC_RDMA`, with libibverbs) stays off: the
 * module speaks TCP, which is what the RPC protocol falls back to anyway.
 */
const RPC_SOURCES = ["ggml/src/ggml-rpc/ggml-rpc.cpp", "ggml/src/ggml-rpc/transport.cpp"];

/** The source of `ggml-rpc-server` (tools/rpc/CMakeLists.txt's only executable). */
const RPC_SERVER_SOURCE = "tools/rpc/rpc-server.cpp";

/**
 * Compiler flags of the RPC backend and server: those ggml's CMake gives them in a Release build
 * with `BUILD_SHARED_LIBS=ON`, `GGML_BACKEND_DL=ON` and `GGML_RPC=ON` (read from its
 * compile_commands.json). `ggml_add_backend_library` makes the module a MODULE library with
 * `GGML_BACKEND_DL` (so `GGML_BACKEND_DL_IMPL` exports `ggml_backend_init`), `GGML_BACKEND_BUILD`
 * and `GGML_BACKEND_SHARED` (so `GGML_BACKEND_API` exports its functions), and ggml-base's public
 * definitions; the server gets libggml's public definitions.
 */
const RPC_FLAGS = {
  module: [
    "-O3",
    "-DNDEBUG",
    "-fPIC",
    "-std=gnu++17",
    "-DGGML_BACKEND_BUILD",
    "-DGGML_BACKEND_DL",
    "-DGGML_BACKEND_SHARED",
    "-DGGML_SCHED_MAX_COPIES=4",
    "-DGGML_SHARED",
    "-D_GNU_SOURCE",
    "-D_XOPEN_SOURCE=600",
  ],
  server: ["-O3", "-DNDEBUG", "-std=gnu++17", "-DGGML_BACKEND_DL", "-DGGML_SHARED"],
};

/** Where the RPC backend and server go; see {@linkcode rpcPlan}. */
interface RpcPlan {
  /** Objects: they depend on the source and flags, not on the engine, so every variant shares them. */
  objDir: string;
  /** The module's and the executable's directory: keyed also by the variant and the engine it links. */
  outDir: string;
  /** What the output directory's key was made of (written into its marker). */
  fingerprint: string;
}

/**
 * The cache directories of the RPC backend and server, keyed only by what they depend on: the
 * objects by the llama.cpp commit, the flags and the sources; the module and executable also by
 * the variant, the engine directory and its libggml and libggml-base. Not by libloupe's sources,
 * and libloupe's own key does not change with them.
 */
async function rpcPlan(variant: EngineVariant, engineDir: string, ggmlLibs: string[]): Promise<RpcPlan> {
  const objPrint = [LLAMA_CPP_COMMIT, JSON.stringify(RPC_FLAGS), ...RPC_SOURCES, RPC_SERVER_SOURCE].join("\n");
  const objKey = (await hashText(objPrint)).slice(0, 12);
  const fingerprint = [objPrint, variant, engineDir, ggmlLibs.join(" ")].join("\n");
  const key = (await hashText(fingerprint)).slice(0, 16);
  return {
    objDir: join(cacheDir(), "rpc", `objects-${LLAMA_CPP_COMMIT.slice(0, 12)}-${objKey}`),
    outDir: join(cacheDir(), "rpc", `${variant}-${key}`),
    fingerprint,
  };
}

/** The `.cpp` files of the `ggml-rpc` backend in ggml/src/ggml-rpc/CMakeLists.txt (for checking RPC_SOURCES). */
async function rpcCmakeSources(sourceDir: string): Promise<string[]> {
  const cmake = await Deno.readTextFile(join(sourceDir, "ggml", "src", "ggml-rpc", "CMakeLists.txt"));
  const block = cmake.match(/ggml_add_backend_library\(ggml-rpc\s+([^)]*)\)/);
  if (!block) throw new Error("Cannot find the ggml-rpc sources in ggml/src/ggml-rpc/CMakeLists.txt");
  return block[1].split(/\s+/).filter((f) => f.endsWith(".cpp")).map((f) => `ggml/src/ggml-rpc/${f}`);
}

/**
 * The engine's backend modules (`libggml-<name>[-<variant>].so`, as `loupe_init` picks them): the
 * RPC server links to them from its own directory, where ggml_backend_load_all looks for them.
 */
async function engineBackendModules(engineDir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(engineDir)) {
    const m = e.name.match(/^libggml-([a-z0-9]+)(-[a-z0-9_]+)*\.so$/);
    if (m && m[1] !== "base" && m[1] !== "rpc") names.push(e.name);
  }
  return names.sort();
}

/**
 * Builds the RPC backend module and server as {@linkcode rpcPlan} places them, unless they are
 * built: the three objects (those already compiled are kept), then `libggml-rpc.so` linked against
 * the engine's libggml-base, `ggml-rpc-server` against its libggml and libggml-base, and links to
 * the engine's backend modules beside them.
 */
async function ensureRpcBuild(
  plan: RpcPlan,
  b: {
    sourceDir: string;
    engineDir: string;
    ggmlLibs: string[];
    verbose: boolean;
    onProgress: BuildOptions["onProgress"];
  },
): Promise<void> {
  const marker = join(plan.outDir, ".loupe-ok");
  if (await exists(marker)) return;
  await withLock(plan.outDir + ".lock", async () => {
    if (await exists(marker)) return;
    const listed = await rpcCmakeSources(b.sourceDir);
    if (listed.join(" ") !== RPC_SOURCES.join(" ")) {
      throw new Error(`ggml/src/ggml-rpc/CMakeLists.txt compiles ${listed.join(", ")}; loupe builds ${RPC_SOURCES}`);
    }
    if (!await exists(join(b.sourceDir, RPC_SERVER_SOURCE))) {
      throw new Error(`The source tree ${b.sourceDir} has no ${RPC_SERVER_SOURCE}`);
    }
    await Deno.mkdir(plan.objDir, { recursive: true });
    await Deno.mkdir(plan.outDir, { recursive: true });
    const includes = ["ggml/src", "ggml/include"].map((d) => `-I${join(b.sourceDir, d)}`);
    const units = [...RPC_SOURCES, RPC_SERVER_SOURCE];
    const objects = units.map((f) => join(plan.objDir, f.split("/").pop()!.replace(/\.cpp$/, ".o")));
    const jobs: Array<() => Promise<unknown>> = [];
    let done = 0;
    let total = 0;
    for (const [i, src] of units.entries()) {
      if (await exists(objects[i])) continue;
      total++;
      jobs.push(async () => {
        const tmp = `${objects[i]}.${Deno.pid}.tmp`;
        const flags = src === RPC_SERVER_SOURCE ? RPC_FLAGS.server : RPC_FLAGS.module;
        await run("g++", [...flags, ...includes, "-c", join(b.sourceDir, src), "-o", tmp]);
        await Deno.rename(tmp, objects[i]);
        report(b.verbose, b.onProgress, {
          phase: "compile",
          message: `compiling (${++done}/${total}) ${src} (RPC)`,
          fraction: done / total,
        });
      });
    }
    if (jobs.length) {
      report(b.verbose, b.onProgress, {
        phase: "compile",
        message: `building ggml's RPC backend and server (${jobs.length} files to compile)`,
        fraction: 0,
      });
    }
    await runAll(jobs, navigator.hardwareConcurrency || 2);
    report(b.verbose, b.onProgress, { phase: "link", message: "linking the RPC backend and server", fraction: null });
    const [ggml, ggmlBase] = b.ggmlLibs;
    const rpath = `-Wl,-rpath,${b.engineDir}`;
    const module = join(plan.outDir, "libggml-rpc.so");
    const exe = join(plan.outDir, "ggml-rpc-server");
    const moduleObjects = objects.slice(0, RPC_SOURCES.length);
    await run("g++", [
      "-shared",
      "-fPIC",
      "-Wl,--no-undefined",
      "-o",
      `${module}.tmp`,
      ...moduleObjects,
      ggmlBase,
      rpath,
    ]);
    await Deno.rename(`${module}.tmp`, module);
    await run("g++", ["-o", `${exe}.tmp`, objects[RPC_SOURCES.length], ggml, ggmlBase, rpath]);
    await Deno.rename(`${exe}.tmp`, exe);
    for (const name of await engineBackendModules(b.engineDir)) {
      const link = join(plan.outDir, name);
      await Deno.remove(link).catch(() => {});
      await Deno.symlink(join(b.engineDir, name), link);
    }
    await Deno.writeTextFile(marker, plan.fingerprint);
    report(b.verbose, b.onProgress, { phase: "done", message: `built ${module} and ${exe}`, fraction: 1 });
  });
}

/** The chosen variant's engine, present (downloaded or built from source), and the pinned source. */
async function prepareEngine(
  opts: BuildOptions,
  verbose: boolean,
): Promise<{ variant: EngineVariant; sourceDir: string; engineDir: string }> {
  const variant = opts.variant ?? await detectVariant();
  const sourceDir = await ensureSource(verbose, opts.onProgress);
  let engineDir: string;
  if (variant === "source") {
    // The backends of a from-source build are remembered, so a later load finds the same build.
    const choice = join(cacheDir(), "engine", "source.json");
    let backends = { cuda: opts.cuda, vulkan: opts.vulkan };
    if (opts.cuda === undefined && opts.vulkan === undefined) {
      backends = await Deno.readTextFile(choice).then(JSON.parse).catch(() => ({}));
    }
    engineDir = await buildFromSource(sourceDir, { ...opts, ...backends }, verbose);
    await Deno.writeTextFile(choice, JSON.stringify(backends));
  } else {
    const pkgDir = await fetchPackage(PREBUILT_PACKAGES[variant], verbose, opts.onProgress);
    engineDir = await findEngineDir(pkgDir, variant === "cuda12");
  }
  return { variant, sourceDir, engineDir };
}

/**
 * Makes sure ggml's RPC backend module and `ggml-rpc-server` are built for the chosen variant's
 * engine (and the engine is present), without building libloupe: what a machine that only serves
 * its devices over RPC needs. Neither prebuilt engine package carries the RPC backend, so it is
 * compiled from the pinned source against the package's own libggml-base (the same ggml release,
 * `GGML_BACKEND_API_VERSION` 2, which ggml's loader checks); the from-source engine gets the same
 * module, compiled the way its CMake would with `GGML_RPC=ON`, but kept out of its engine
 * directory, so that `loupe_init` loads it only when asked to. Builds only what is missing.
 */
export async function ensureRpc(opts: Omit<BuildOptions, "rpc" | "server"> = {}): Promise<RpcBuild> {
  const verbose = opts.verbose ?? true;
  const { variant, sourceDir, engineDir } = await prepareEngine(opts, verbose);
  return await rpcFor(variant, sourceDir, engineDir, await engineLibraries(engineDir), opts, true);
}

/** The RPC build for an engine: where it is, built when `build` is true. */
async function rpcFor(
  variant: EngineVariant,
  sourceDir: string,
  engineDir: string,
  libs: string[],
  opts: BuildOptions,
  build: boolean,
): Promise<RpcBuild> {
  const ggmlLibs = libs.slice(2); // libggml, libggml-base (see engineLibraries)
  const plan = await rpcPlan(variant, engineDir, ggmlLibs);
  if (build) {
    const verbose = opts.verbose ?? true;
    await ensureRpcBuild(plan, { sourceDir, engineDir, ggmlLibs, verbose, onProgress: opts.onProgress });
  }
  return {
    variant,
    engineDir,
    backend: join(plan.outDir, "libggml-rpc.so"),
    server: join(plan.outDir, "ggml-rpc-server"),
    dir: plan.outDir,
  };
}

/**
 * Makes sure the engine for the chosen variant is present and libloupe plus the reference
 * tools are built against it (llama-server only with {@linkcode BuildOptions.server}, the RPC
 * backend and server only with {@linkcode BuildOptions.rpc}); builds only what is missing.
 * Returns where everything is.
 */
export async function ensureBuild(opts: BuildOptions = {}): Promise<BuildResult> {
  const verbose = opts.verbose ?? true;
  const { variant, sourceDir, engineDir } = await prepareEngine(opts, verbose);
  const libs = await engineLibraries(engineDir);
  const ownSources: string[] = [];
  for await (const e of Deno.readDir(NATIVE_DIR)) {
    if (/\.(cpp|h)$/.test(e.name)) ownSources.push(join(NATIVE_DIR, e.name));
  }
  ownSources.sort();
  const cflags = ["-O2", "-fPIC", "-std=c++17", "-DLLAMA_SHARED", "-DLLAMA_BUILD", "-DNDEBUG"];
  // loupe's own sources export only what native/loupe*.h marks LOUPE_API; mtmd's sources keep
  // their default visibility (MTMD_API), since llama-mtmd-cli links against mtmd inside libloupe.
  const ownFlags = ["-fvisibility=hidden", "-fvisibility-inlines-hidden"];
  const includes = ["include", "ggml/include", "vendor", "vendor/hash", "tools/mtmd", "common", "tools/completion"]
    .map((d) => `-I${join(sourceDir, d)}`);
  let fingerprint = [variant, engineDir, LLAMA_CPP_COMMIT, cflags.join(" "), ownFlags.join(" "), libs.join(" ")].join(
    "\n",
  );
  for (const f of ownSources) fingerprint += await Deno.readTextFile(f);
  fingerprint += JSON.stringify(REFERENCE_TOOLS);
  const key = (await hashText(fingerprint)).slice(0, 16);
  const outDir = join(cacheDir(), "build", `${variant}-${key}`);
  const server = await serverPlan(variant, engineDir, cflags, includes, libs);
  const rpc = await rpcFor(variant, sourceDir, engineDir, libs, opts, false);
  const result: BuildResult = {
    variant,
    engineDir,
    sourceDir,
    library: join(outDir, "libloupe.so"),
    tools: {
      completion: join(outDir, "llama-completion"),
      bench: join(outDir, "llama-bench"),
      embedding: join(outDir, "llama-embedding"),
      mtmd: join(outDir, "llama-mtmd-cli"),
      server: server.exe,
      rpcServer: rpc.server,
    },
    rpcBackend: rpc.backend,
  };
  const link = ["-L" + engineDir, ...libs, `-Wl,-rpath,${engineDir}`, "-lpthread", "-ldl"];
  /**
   * Builds llama-server when asked for, after libloupe (whose mtmd objects it links), and the RPC
   * backend and server when asked for.
   */
  const withServer = async () => {
    if (opts.server) {
      await ensureServer(server, { sourceDir, cflags, includes, link, verbose, onProgress: opts.onProgress });
    }
    if (opts.rpc) await rpcFor(variant, sourceDir, engineDir, libs, opts, true);
    return result;
  };
  const marker = join(outDir, ".loupe-ok");
  if (await exists(marker)) return await withServer();
  await withLock(outDir + ".lock", async () => {
    if (await exists(marker)) return;
    await Deno.mkdir(outDir, { recursive: true });
    const cores = navigator.hardwareConcurrency || 2;
    // mtmd objects depend only on the source, so they are shared between variants.
    await Deno.mkdir(mtmdObjectDir(), { recursive: true });
    const mtmd = await mtmdSources(sourceDir);
    const objects: string[] = [];
    const jobs: Array<() => Promise<unknown>> = [];
    let done = 0;
    const ownCpp = ownSources.filter((f) => f.endsWith(".cpp"));
    const total = mtmd.length + ownCpp.length + Object.keys(REFERENCE_TOOLS).length + 1;
    const step = (what: string) =>
      report(verbose, opts.onProgress, {
        phase: "compile",
        message: `compiling (${++done}/${total}) ${what}`,
        fraction: done / total,
      });
    for (const src of mtmd) {
      const obj = mtmdObject(sourceDir, src);
      objects.push(obj);
      if (await exists(obj)) {
        done++;
        continue;
      }
      jobs.push(async () => {
        await compileMtmdObject(sourceDir, src, cflags, includes);
        step(src.slice(sourceDir.length + 1));
      });
    }
    const ownObjects = ownCpp.map((src) => join(outDir, src.slice(NATIVE_DIR.length + 1).replace(/\.cpp$/, ".o")));
    ownCpp.forEach((src, i) =>
      jobs.push(async () => {
        await run("g++", [...cflags, ...ownFlags, "-Wall", ...includes, "-c", src, "-o", ownObjects[i]]);
        step(`native/${src.slice(NATIVE_DIR.length + 1)}`);
      })
    );
    // Reference tools that need only the engine (and llama-common).
    for (const [name, srcs] of Object.entries(REFERENCE_TOOLS)) {
      jobs.push(async () => {
        const files = srcs.map((f) => join(sourceDir, f));
        await run("g++", [...cflags, ...includes, ...files, "-o", join(outDir, name), ...link]);
        step(`${name} (reference)`);
      });
    }
    await runAll(jobs, cores);
    report(verbose, opts.onProgress, { phase: "link", message: "linking libloupe", fraction: null });
    await run("g++", ["-shared", "-Wl,--no-undefined", "-o", result.library, ...ownObjects, ...objects, ...link]);
    // llama.cpp's multimodal CLI links mtmd, which lives in libloupe.
    await run("g++", [
      ...cflags,
      ...includes,
      join(sourceDir, "tools", "mtmd", "mtmd-cli.cpp"),
      "-o",
      result.tools.mtmd,
      result.library,
      `-Wl,-rpath,${outDir}`,
      ...link,
    ]);
    step("llama-mtmd-cli (reference)");
    await Deno.writeTextFile(marker, fingerprint);
    report(verbose, opts.onProgress, { phase: "done", message: `built ${result.library}`, fraction: 1 });
  });
  return await withServer();
}
