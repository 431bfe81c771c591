// The bad-input corpus (tests/corpus/make_corpus.ts): over 300 malformed GGUF files and 30 bad
// prompts. Each must give a typed error (LoupeError) or a defined result in the process that
// loads it. The cases run in a child process (tests/children/run_corpus.ts) that reports each case
// as it goes: a case that kills that process (or runs memory or time away) is a failure with its
// name, and the next child starts after it — so this runner survives whatever the engine does.
import { assert, assertEquals } from "../support/assert.ts";
import { badPrompts, baseModel, corpus } from "../corpus/make_corpus.ts";
import { type CaseResult, runCases } from "../support/case_runner.ts";

const CHILD = new URL("../children/run_corpus.ts", import.meta.url).pathname;

/** Runs the cases `indexes` of `kind` in child processes, starting a new child after a case that kills one. */
async function runKind(kind: "files" | "prompts", names: string[], indexes: number[], engineOnly = false) {
  const outcomes = await runCases(CHILD, indexes, {
    leadingArgs: [kind],
    extraArgs: engineOnly ? ["engine-only"] : [],
  });
  return outcomes.map((o) => ({ ...o, name: names[o.index], died: o.died ?? o.runaway }));
}

function summary<T extends { result: CaseResult | null }>(outcomes: T[]): { passed: number; failed: T[] } {
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
  const outcomes = await runKind("files", names, all(files.length));
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
  const raw = await runKind("files", names, all(files.length), true);
  const killers = raw.filter((o) => o.died);
  const checked = await runKind("files", names, killers.map((o) => names.indexOf(o.name)));
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
  const outcomes = await runKind("prompts", prompts.map((p) => p.name), all(prompts.length));
  const { passed, failed } = summary(outcomes);
  for (const o of outcomes) {
    console.log(`  ${o.result?.ok ? "ok" : "FAILED"} ${o.name}: ${o.died ?? o.result?.code ?? o.result?.message}`);
  }
  console.log(`${passed} passed, ${failed.length} failed`);
  assertEquals(failed.map((o) => o.name), []);
});
