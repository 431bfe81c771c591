// Shared test set-up: the build, fixture models, and llama.cpp's reference tools.
import { type BuildResult, ensureBuild } from "../../native/build/engine.ts";
import { fixtureModel, type FixtureName } from "../../src/fixtures/text.ts";

/**
 * The build the tests run against (the engine variant from LOUPE_ENGINE or detected). A build
 * that fails does not crash the importing test file: it is a failing test of its own, and every
 * use of `build` throws its error.
 */
export const build: BuildResult = await ensureBuild({ verbose: false }).catch((e: Error) => {
  Deno.test("the engine builds (tests/support/helpers.ts)", () => {
    throw e;
  });
  return new Proxy({} as BuildResult, {
    get: () => {
      throw new Error(`the engine did not build: ${e.message}`, { cause: e });
    },
  });
});

/** Path of a fixture model, made on first use. */
export async function fixture(name: FixtureName = "tiny"): Promise<string> {
  return await fixtureModel(name);
}

/** Threads used on both sides of a comparison. */
export const THREADS = navigator.hardwareConcurrency;

/**
 * Compiles a C driver of native/tests/ against libloupe (and the engine, found at run time
 * through rpaths) into `dir`; returns the executable's path.
 */
export async function compileDriver(name: string, dir: string): Promise<string> {
  const driver = `${dir}/${name}`;
  const src = new URL(`../../native/tests/${name}.c`, import.meta.url).pathname;
  const libDir = build.library.slice(0, build.library.lastIndexOf("/"));
  const cc = await new Deno.Command("gcc", {
    args: [
      "-O1",
      "-g",
      "-Wall",
      src,
      "-o",
      driver,
      build.library,
      "-lpthread",
      `-Wl,-rpath,${libDir}`,
      `-Wl,-rpath,${build.engineDir}`,
    ],
    stderr: "piped",
  }).output();
  if (!cc.success) throw new Error(`${name}.c does not compile: ${new TextDecoder().decode(cc.stderr)}`);
  return driver;
}

/** How a reference tool runs: its environment, and the build it belongs to (default: this one). */
export interface ToolOptions {
  env?: Record<string, string>;
  /** The build whose engine directory the tool runs from; ggml looks for its backends there. */
  engine?: BuildResult;
}

/** Runs a reference tool from its engine directory (where ggml looks for its backends). */
export async function runTool(
  tool: string,
  args: string[],
  { env = {}, engine = build }: ToolOptions = {},
): Promise<{ stdout: Uint8Array; stderr: string }> {
  const out = await new Deno.Command(tool, { args, cwd: engine.engineDir, env, stdout: "piped", stderr: "piped" })
    .output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${tool} failed (${out.code}): ${stderr.slice(-3000)}`);
  return { stdout: out.stdout, stderr };
}

/**
 * Runs a reference tool whose stdout goes through llama.cpp's common log. That log is written by
 * a worker thread and its singleton is leaked on purpose, never flushed at exit (common/log.cpp,
 * `common_log_main`: "this design may cause logs to be lost"), so the last lines of a run are
 * sometimes missing. `whole` tells a complete output from a cut one; a cut one is run again, at
 * most five times, and said on stderr.
 */
export async function runLoggedTool(
  tool: string,
  args: string[],
  whole: (stdout: string) => boolean,
  opts: ToolOptions = {},
): Promise<string> {
  for (let attempt = 1;; attempt++) {
    const stdout = new TextDecoder().decode((await runTool(tool, args, opts)).stdout);
    if (whole(stdout)) return stdout;
    const name = tool.split("/").pop();
    if (attempt >= 5) throw new Error(`${name}'s output was cut short ${attempt} times: ${JSON.stringify(stdout)}`);
    console.error(`${name}'s output was cut short at exit (attempt ${attempt}); running it again`);
  }
}

/** llama-completion and llama-mtmd-cli close a run with a blank line, their last log line. */
export const closesWithBlankLine = (stdout: string) => stdout.endsWith("\n\n");

/** Options of {@linkcode referenceCompletion}: where it runs, extra arguments, CPU threads. */
export interface CompletionOptions extends ToolOptions {
  extra?: string[];
  threads?: number;
}

/**
 * Greedy continuation of `prompt` by llama.cpp's completion tool (of `engine`): the generated
 * text only, without the blank line the tool closes with.
 */
export async function referenceCompletion(
  model: string,
  prompt: string,
  nPredict: number,
  { extra = [], threads = THREADS, ...tool }: CompletionOptions = {},
): Promise<string> {
  const args = ["-m", model, "-p", prompt, "-n", String(nPredict), "--temp", "0", "-s", "1", "-t", String(threads)];
  args.push("-no-cnv", "--no-warmup", "--simple-io", "--no-display-prompt", ...extra);
  const engine = tool.engine ?? build;
  return (await runLoggedTool(engine.tools.completion, args, closesWithBlankLine, tool)).slice(0, -2);
}
