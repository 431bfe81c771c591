// The semantic mutator's corpus (tests/corpus/mutants.ts, mutants_projector.ts): well-formed
// model files with bad values in every key the engine reads, and tensor type swaps. Each must
// end with a typed error (LoupeError) or load and run, in the process that loads it — no death,
// and no memory or time runaway (the runner kills a child above 3 GiB or 60 s on one case and
// records it). The cases run in children (tests/children/run_mutants.ts) so that a death is a
// failure with the case's name rather than the end of the test run.
//
// `deno task test` runs a deterministic sample (every 8th mutant); `deno task fuzz` runs them
// all (LOUPE_MUTANTS=all).
import { assert, assertEquals } from "../support/assert.ts";
import { allMutants } from "../corpus/all_mutants.ts";
import { type Outcome, runCases } from "../support/case_runner.ts";

const CHILD = new URL("../children/run_mutants.ts", import.meta.url).pathname;
const { mutants } = await allMutants();
const FULL = Deno.env.get("LOUPE_MUTANTS") === "all";
const STRIDE = 8;
const sample = mutants.map((_, i) => i).filter((i) => FULL || i % STRIDE === 0);

function describe(o: Outcome): string {
  return o.died ?? (o.runaway ? `runaway (${o.runaway})` : `${o.result?.outcome}: ${o.result?.message}`);
}

Deno.test("the mutator makes over 1,000 distinct files of every kind, the same on every run", async () => {
  assert(mutants.length >= 1000, `${mutants.length} mutants`);
  assertEquals(new Set(mutants.map((m) => m.name)).size, mutants.length, "names are unique");
  const kinds = new Set(mutants.map((m) => m.kind));
  for (const k of ["text", "embedding", "rerank"]) assert(kinds.has(k as "text"), `no ${k} mutants`);
  const groups = new Set(mutants.map((m) => m.group));
  for (const g of ["value", "type", "array", "string", "removed", "added", "replaced", "vocab", "tensor"]) {
    assert(groups.has(g), `no ${g} mutants`);
  }
  const again = (await allMutants()).mutants;
  for (let i = 0; i < mutants.length; i += 97) {
    assertEquals(again[i].name, mutants[i].name);
    assertEquals(again[i].make(), mutants[i].make(), `${mutants[i].name} is not deterministic`);
  }
});

Deno.test(`${FULL ? "every" : `every ${STRIDE}th`} mutant ends typed or runs, in-process: no death, no runaway`, async () => {
  const outcomes = await runCases(CHILD, sample);
  const byOutcome: Record<string, number> = {};
  for (const o of outcomes) {
    const k = o.result
      ? `${o.result.outcome}${o.result.code ? ` ${o.result.code}` : ""}`
      : o.runaway
      ? "runaway"
      : "died";
    byOutcome[k] = (byOutcome[k] ?? 0) + 1;
  }
  const peak = Math.max(...outcomes.map((o) => o.peakRss ?? 0));
  console.log(
    `  ${outcomes.length} mutants: ${JSON.stringify(byOutcome)}; peak RSS of a case ${(peak / 2 ** 20).toFixed(0)} MiB`,
  );
  const failed = outcomes.filter((o) => !o.result?.ok);
  for (const o of failed) console.log(`  FAILED ${mutants[o.index].name}: ${describe(o)}`);
  assertEquals(failed.map((o) => mutants[o.index].name), []);
  assert((byOutcome["error BAD_FORMAT"] ?? 0) > 0 && (byOutcome["loaded"] ?? 0) > 0, "both ends are reached");
});

Deno.test("the mutants that kill the engine on its own are the ones loupe refuses before loading", async () => {
  // the text, embedding and reranker mutants through the native loader alone (no reader, no rules)
  // (every 8th mutant, in the full run too: each death costs a new child)
  const every8th = mutants.map((_, i) => i).filter((i) => i % STRIDE === 0 && mutants[i].kind !== "projector");
  const raw = await runCases(CHILD, every8th, {
    extraArgs: ["engine-only"],
  });
  const killers = raw.filter((o) => o.died || o.runaway);
  const checked = await runCases(CHILD, killers.map((o) => o.index));
  console.log(`  ${killers.length} of ${raw.length} mutants kill the engine alone; loupe refuses them first:`);
  for (const [i, o] of killers.entries()) {
    const r = checked[i]?.result;
    console.log(
      `  ${mutants[o.index].name}: ${describe(o).slice(0, 120)}\n    → ${r?.code}: ${r?.message?.slice(0, 200)}`,
    );
  }
  assert(killers.length > 0, "the sample holds files the engine cannot survive (else it tests less than it claims)");
  for (const [i, o] of killers.entries()) {
    assertEquals(checked[i].index, o.index);
    const code = checked[i].result?.code ?? "";
    assert(
      ["BAD_FORMAT", "WRONG_KIND"].includes(code) && checked[i].result?.message?.includes("Cannot load model"),
      `${mutants[o.index].name} is not refused before loading: ${describe(checked[i])}`,
    );
  }
});
