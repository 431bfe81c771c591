// Runs numbered cases in child processes that print `CASE_BEGIN <i> …` before and `CASE_END <i>
// <json>` after each case. A case that kills its child is recorded with how it died, and a new
// child starts after it. The parent watches each child: one that holds more than `maxRssBytes`
// of memory, or spends more than `caseTimeoutMs` on one case, is killed and its case recorded as
// a runaway. So the runner survives whatever the engine does, and reports it by case.

/** What a case did, as its child reports it. */
export interface CaseResult {
  /** true: a typed error (LoupeError) or a defined result; false: anything else. */
  ok: boolean;
  /** "error" (typed), "loaded", "result", "untyped", "unexpected". */
  outcome: string;
  /** LoupeError code, when there is one. */
  code?: string;
  /** The message, shortened. */
  message?: string;
}

/** One case's end. */
export interface Outcome {
  /** The case's index. */
  index: number;
  /** The child's report, or null when the child did not finish the case. */
  result: CaseResult | null;
  /** How the child died in this case ("signal SIGABRT: GGML_ASSERT(…)", "exit code 1: …"). */
  died?: string;
  /** Why the parent killed it: "memory: 3.2 GiB" or "time: 60 s". */
  runaway?: string;
  /** The case's peak resident memory as last sampled, in bytes. */
  peakRss?: number;
}

/** Limits of {@linkcode runCases}. */
export interface CaseRunnerOptions {
  /** Arguments before the case list (e.g. the kind of case). */
  leadingArgs?: string[];
  /** Arguments after the case list (e.g. "engine-only"). */
  extraArgs?: string[];
  /** A child above this resident size is killed. Default 3 GiB. */
  maxRssBytes?: number;
  /** A case that takes longer is killed. Default 60 s. */
  caseTimeoutMs?: number;
  /** Cases per child (a new child for each chunk keeps one child's leaks out of the next). Default 200. */
  chunk?: number;
}

/** The result of a typed or untyped error, for a child's report. */
export function typedOutcome(e: unknown, LoupeError: abstract new (...args: never[]) => Error): CaseResult {
  const short = (s: string) => (s.length > 300 ? s.slice(0, 300) + "…" : s);
  if (e instanceof LoupeError) {
    return { ok: true, outcome: "error", code: (e as Error & { code: string }).code, message: short(e.message) };
  }
  return { ok: false, outcome: "untyped", message: short(`${(e as Error)?.name}: ${(e as Error)?.message ?? e}`) };
}

/** "all" or a comma-separated list of case numbers. */
export function caseIndexes(which: string, n: number): number[] {
  return which === "all" ? Array.from({ length: n }, (_, i) => i) : which.split(",").map(Number);
}

function rssOf(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = Number(status.match(/VmRSS:\s+(\d+)/)?.[1] ?? 0);
    return kb * 1024;
  } catch {
    return 0;
  }
}

/** Runs `cases` of the child `module` until each has an outcome. */
export async function runCases(module: string, cases: number[], options: CaseRunnerOptions = {}): Promise<Outcome[]> {
  const maxRss = options.maxRssBytes ?? 3 * 2 ** 30;
  const timeout = options.caseTimeoutMs ?? 60_000;
  const chunk = options.chunk ?? 200;
  const outcomes: Outcome[] = [];
  let todo = [...cases];
  while (todo.length > 0) {
    const batch = todo.slice(0, chunk);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", module, ...(options.leadingArgs ?? []), batch.join(","), ...(options.extraArgs ?? [])],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    const finished = new Set<number>();
    let current = -1;
    let since = performance.now();
    let peak = 0;
    let killedFor: string | undefined;
    const watch = setInterval(() => {
      const rss = rssOf(child.pid);
      peak = Math.max(peak, rss);
      const why = rss > maxRss
        ? `memory: ${(rss / 2 ** 30).toFixed(1)} GiB`
        : current >= 0 && performance.now() - since > timeout
        ? `time: over ${timeout / 1000} s`
        : undefined;
      if (why && !killedFor) {
        killedFor = why;
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
      }
    }, 50);
    const stderrChunks: string[] = [];
    const stderrDone = (async () => {
      for await (const s of child.stderr.pipeThrough(new TextDecoderStream())) {
        stderrChunks.push(s);
        if (stderrChunks.length > 200) stderrChunks.splice(0, 100);
      }
    })();
    let buffered = "";
    for await (const s of child.stdout.pipeThrough(new TextDecoderStream())) {
      buffered += s;
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      for (const line of lines) {
        const begin = line.match(/^CASE_BEGIN (\d+)/);
        if (begin) {
          current = Number(begin[1]);
          since = performance.now();
          peak = 0;
        }
        const end = line.match(/^CASE_END (\d+) (.*)$/);
        if (end) {
          outcomes.push({ index: Number(end[1]), result: JSON.parse(end[2]), peakRss: peak });
          finished.add(Number(end[1]));
          current = -1;
        }
      }
    }
    const status = await child.status;
    clearInterval(watch);
    await stderrDone;
    if (current >= 0) {
      const stderr = stderrChunks.join("");
      const why = stderr.match(/GGML_ASSERT\([^\n]*|terminate called[^\n]*|[^\n]*(?:error|Error)[^\n]*/)?.[0] ?? "";
      const how = status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
      outcomes.push(
        killedFor
          ? { index: current, result: null, runaway: killedFor, peakRss: peak }
          : { index: current, result: null, died: `${how}: ${why.slice(0, 200)}`, peakRss: peak },
      );
      finished.add(current);
    } else if (finished.size < batch.length) {
      const stderr = stderrChunks.join("").trim().split("\n").slice(-8).join("\n");
      throw new Error(
        `the case child stopped after ${finished.size} of ${batch.length} cases (code ${status.code}):\n${stderr}`,
      );
    }
    todo = todo.filter((i) => !finished.has(i));
  }
  return outcomes;
}
