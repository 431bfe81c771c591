// Shared test set-up: the build, fixture models, and llama.cpp's reference tools.
import { ensureBuild } from "../native/build.ts";
import { fixtureModel, type FixtureName } from "../src/fixtures.ts";

/** The build the tests run against (the engine variant from LOUPE_ENGINE or detected). */
export const build = await ensureBuild({ verbose: false });

/** Path of a fixture model, made on first use. */
export async function fixture(name: FixtureName = "tiny"): Promise<string> {
  return await fixtureModel(name);
}

/** Threads used on both sides of a comparison. */
export const THREADS = navigator.hardwareConcurrency;

/** Runs a reference tool from the engine directory (where ggml looks for its backends). */
export async function runTool(
  tool: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ stdout: Uint8Array; stderr: string }> {
  const out = await new Deno.Command(tool, { args, cwd: build.engineDir, env, stdout: "piped", stderr: "piped" })
    .output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${tool} failed (${out.code}): ${stderr.slice(-3000)}`);
  return { stdout: out.stdout, stderr };
}

/** Greedy continuation of `prompt` by llama.cpp's completion tool: the generated text only. */
export async function referenceCompletion(
  model: string,
  prompt: string,
  nPredict: number,
  extra: string[] = [],
  env: Record<string, string> = {},
): Promise<string> {
  const { stdout } = await runTool(build.tools.completion, [
    "-m",
    model,
    "-p",
    prompt,
    "-n",
    String(nPredict),
    "--temp",
    "0",
    "-s",
    "1",
    "-t",
    String(THREADS),
    "-no-cnv",
    "--no-warmup",
    "--simple-io",
    "--no-display-prompt",
    ...extra,
  ], env);
  return new TextDecoder().decode(stdout);
}
