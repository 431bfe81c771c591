/**
 * Runs a Deno module in a child process with a kill timeout: used where a driver may crash
 * or hang (device probes, Vulkan checks), so the crash is reported instead of taking the
 * caller's process with it.
 *
 * @module
 */

/** What a child run gave. */
export interface ChildRun {
  /** Exit code, signal and raw output. */
  out: Deno.CommandOutput;
  /** Standard output as text. */
  stdout: string;
  /** Standard error as text. */
  stderr: string;
  /** Whether it was killed (SIGKILL) for running past its time. */
  timedOut: boolean;
  /** Wall time in milliseconds. */
  wallMs: number;
}

/** Runs `deno run -A <args>` with `env`, killing it after `timeoutMs`. */
export async function runDenoChild(
  args: string[],
  options: { env: Record<string, string>; clearEnv?: boolean; timeoutMs: number },
): Promise<ChildRun> {
  const t0 = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...args],
    env: options.env,
    clearEnv: options.clearEnv ?? false,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, options.timeoutMs);
  let out: Deno.CommandOutput;
  try {
    out = await child.output();
  } finally {
    clearTimeout(timer);
  }
  const decoder = new TextDecoder();
  return {
    out,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
    timedOut,
    wallMs: performance.now() - t0,
  };
}
