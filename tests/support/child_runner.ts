// Runs a test's child process (tests/*_child.ts) and returns the JSON of its one result line. A
// child ended by a signal (a driver crash), exiting non-zero, hanging past its time or printing
// no result is a thrown ChildError carrying the end of its stderr: a failed check, never the end
// of the test runner.
import { runDenoChild } from "../../src/util/child.ts";

/** Environment of the Vulkan children: the Vulkan engine, with lavapipe made visible to ggml. */
export const VULKAN_ENV: Record<string, string> = { LOUPE_ENGINE: "vulkan", GGML_VK_VISIBLE_DEVICES: "0" };

/** A child that crashed, failed, hung or printed no result. */
export class ChildError extends Error {
  /** Which child, as the message names it (e.g. `Vulkan child "crash"`). */
  readonly label: string;
  /** Exit code (128 + signal number when a signal ended it). */
  readonly code: number;
  /** The signal that ended it, if any. */
  readonly signal: Deno.Signal | null;
  /** The last lines of its stderr. */
  readonly stderrTail: string;

  /** Creates the error. */
  constructor(label: string, what: string, code: number, signal: Deno.Signal | null, stderrTail: string) {
    super(`${label} ${what}; its stderr ends with:\n${stderrTail || "(nothing)"}`);
    this.name = "ChildError";
    this.label = label;
    this.code = code;
    this.signal = signal;
    this.stderrTail = stderrTail;
  }
}

/** The last `lines` lines (at most `chars` characters) of `text`, colours removed. */
export function tail(text: string, lines = 25, chars = 3000): string {
  // deno-lint-ignore no-control-regex
  const plain = text.replace(/\x1b\[[0-9;]*m/g, "").trimEnd();
  return plain.split("\n").slice(-lines).join("\n").slice(-chars);
}

/** How a child runs: its result line's prefix, a label for errors, extra environment, a time limit. */
export interface TestChildOptions {
  prefix: string;
  label: string;
  /** Added to this process's environment; with LOUPE_ENGINE, LOUPE_LIB and LOUPE_ENGINE_DIR go (they would override it). */
  env?: Record<string, string>;
  timeoutMs: number;
}

/** Runs `deno run -A <module> <args>` and returns the JSON of its result line and its wall time. */
export async function runTestChild<T>(
  module: string,
  args: string[],
  { prefix, label, env = {}, timeoutMs }: TestChildOptions,
): Promise<{ result: T; wallMs: number }> {
  const childEnv = Deno.env.toObject();
  if (env.LOUPE_ENGINE) {
    delete childEnv.LOUPE_LIB;
    delete childEnv.LOUPE_ENGINE_DIR;
  }
  const { out, stdout, stderr: rawStderr, timedOut, wallMs } = await runDenoChild([module, ...args], {
    env: { ...childEnv, ...env, NO_COLOR: "1" },
    clearEnv: true,
    timeoutMs,
  });
  const stderr = tail(rawStderr);
  const fail = (what: string) => new ChildError(label, what, out.code, out.signal, stderr);
  if (timedOut) throw fail(`did not finish within ${timeoutMs / 1000} s and was killed`);
  if (out.signal) throw fail(`crashed: ended by signal ${out.signal} (exit code ${out.code})`);
  if (out.code !== 0) throw fail(`failed: exit code ${out.code}`);
  const line = stdout.split("\n").findLast((l) => l.startsWith(prefix));
  if (line === undefined) {
    throw fail(`exited 0 without a result line (stdout ends with: ${JSON.stringify(tail(stdout, 5, 500))})`);
  }
  try {
    return { result: JSON.parse(line.slice(prefix.length)) as T, wallMs };
  } catch (e) {
    throw fail(`printed a result line that is not JSON (${(e as Error).message})`);
  }
}
