// The bad-input corpus (tests/corpus/make_corpus.ts): over 300 malformed GGUF files and 30 bad
// prompts. Each must give a typed error (LoupeError) or a defined result in the process that
// loads it. The cases run in a child process (tests/corpus/run_corpus.ts) that reports each case
// as it goes: a case that kills that process is a failure with its name, and the next child
// starts after it — so this runner survives whatever the engine does.
import { assert, assertEquals } from "../support/assert.ts";
import { badPrompts, baseModel, corpus } from "../corpus/make_corpus.ts";
import type { CaseResult } from "../children/run_corpus.ts";

const CHILD = new URL("../children/run_corpus.ts", import.meta.url).pathname;

interface Outcome {
  name: string;
  result: CaseResult | null;
  /** How the process died on it (signal or exit code), when it did. */
  died?: string;
}

/** Runs the cases `indexes` of `kind` in child processes, starting a new child after a case that kills one. */
async function runCases(
  kind: "files" | "prompts",
  names: string[],
  indexes: number[],
  engineOnly = false,
): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  let todo = [...indexes];
  while (todo.length > 0) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CHILD, kind, todo.join(","), ...(engineOnly ? ["engine-only"] : [])],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    const out = await child.output();
    const lines = new TextDecoder().decode(out.stdout).split("\n");
    let current = -1;
    const finished = new Set<number>();
    for (const line of lines) {
      const begin = line.match(/^CORPUS_BEGIN (\d+) /);
      if (begin) current = Number(begin[1]);
      const end = line.match(/^CORPUS_END (\d+) (.*)$/);
      if (end) {
        outcomes.push({ name: names[Number(end[1])], result: JSON.parse(end[2]) });
        finished.add(Number(end[1]));
        current = -1;
      }
    }
    if (current >= 0) {
      // the child died inside this case
      const how = out.signal ? `signal ${out.signal}` : `exit code ${out.code}`;
      const stderr = new TextDecoder().decode(out.stderr);
      const why = stderr.match(/GGML_ASSERT\([^\n]*|terminate called[^\n]*|[^\n]*(?:error|Error)[^\n]*/)?.[0] ?? "";
      outcomes.push({ name: names[current], result: null, died: `${how}: ${why.slice(0, 200)}` });
      finished.add(current);
    } else if (finished.size < todo.length) {
      const stderr = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-5).join("\n");
      throw new Error(
        `the corpus child stopped after ${finished.size} of ${todo.length} cases (code ${out.code}):\n${stderr}`,
      );
    }
    todo = todo.filter((i) => !finished.has(i));
  }
  return outcomes;
}

function summary(outcomes: Outcome[]): { passed: number; failed: Outcome[] } {
  const failed = outcomes.filter((o) => !o.result?.ok);
  return { passed: outcomes.length - failed.length, failed };
}

const { bytes: base } = await baseModel();
const files = [...corpus(base)];
const names = files.map((f) => f.name);
const all = (n: number) => Array.from({ length: n }, (_, i) => i);

Deno.test("the corpus has over 200 malformed GGUF files in every group, all distinct", () => {
  assert(files.length >= 200, `${files.length} files`);
  const groups = new Set(files.map((f) => f.group));
  assertEquals([...groups].sort(), ["counts", "flips", "hparams", "kv", "magic", "tensors", "truncated", "version"]);
  assertEquals(new Set(files.map((f) => f.name)).size, files.length, "names are unique");
  const again = [...corpus(base)];
  assert(again.every((f, i) => f.name === files[i].name && f.bytes.length === files[i].bytes.length), "deterministic");
  assert(badPrompts().length >= 20);
});

Deno.test("every malformed GGUF file gives a typed error or loads and generates, in-process", async () => {
  const outcomes = await runCases("files", names, all(files.length));
  const { passed, failed } = summary(outcomes);
  const byOutcome: Record<string, number> = {};
  for (const o of outcomes) {
    const k = o.result ? `${o.result.outcome}${o.result.code ? ` ${o.result.code}` : ""}` : "died";
    byOutcome[k] = (byOutcome[k] ?? 0) + 1;
  }
  console.log(`  outcomes: ${JSON.stringify(byOutcome)}`);
  for (const o of failed) console.log(`  FAILED ${o.name}: ${o.died ?? o.result?.message}`);
  console.log(`${passed} passed, ${failed.length} failed`);
  assertEquals(failed.map((o) => o.name), []);
});

Deno.test("the files that kill the engine on its own are the ones loupe refuses before loading", async () => {
  // The native loader alone (no reader, no preflight), one evaluation after loading.
  const raw = await runCases("files", names, all(files.length), true);
  const killers = raw.filter((o) => o.died);
  const checked = await runCases("files", names, killers.map((o) => names.indexOf(o.name)));
  console.log(
    `  ${killers.length} of ${files.length} files abort the process in the engine alone; loupe refuses them first:`,
  );
  for (const [i, o] of killers.entries()) {
    const r = checked[i]?.result;
    console.log(`  ${o.name}: ${o.died}\n    → ${r?.code ?? "?"}: ${r?.message ?? ""}`);
  }
  assert(killers.length > 0, "the corpus holds files the engine cannot survive (else it tests less than it claims)");
  for (const [i, o] of killers.entries()) {
    assertEquals(checked[i].name, o.name);
    assertEquals(checked[i].result?.code, "BAD_FORMAT", `${o.name}: ${checked[i].result?.message}`);
  }
});

Deno.test("every bad prompt gives a typed error or a defined result, in-process", async () => {
  const prompts = badPrompts();
  const outcomes = await runCases("prompts", prompts.map((p) => p.name), all(prompts.length));
  const { passed, failed } = summary(outcomes);
  for (const o of outcomes) {
    console.log(`  ${o.result?.ok ? "ok" : "FAILED"} ${o.name}: ${o.died ?? o.result?.code ?? o.result?.message}`);
  }
  console.log(`${passed} passed, ${failed.length} failed`);
  assertEquals(failed.map((o) => o.name), []);
});
