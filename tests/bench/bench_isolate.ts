/**
 * What isolation costs: the bench model in this process and in a worker process (`isolate: true`),
 * side by side in interleaved rounds (which goes first flips each round): tg128 (generate 128
 * tokens from BOS, ignoring EOS) and pp512 (a 512-token prompt, nothing generated), end to end
 * (the call's wall time, every crossing to the worker included). Prints the medians and the
 * isolated / in-process ratios (target ≥ 0.98). It is a report: it always exits 0 once it ran.
 *
 * CLI: `deno run -A tests/bench/bench_isolate.ts [--quick] [--rounds=N]`
 *
 * @module
 */
import { loadModel, type Model } from "../../mod.ts";
import { fixture } from "../support/helpers.ts";

const QUICK = Deno.args.includes("--quick");
const ROUNDS = Number(Deno.args.find((a) => a.startsWith("--rounds="))?.split("=")[1] ?? (QUICK ? 2 : 9));
const TG = 128;
const PP = 512;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function promptOfTokens(model: Model, n: number): string {
  const words = ["the", "cat", "sat", "on", "a", "mat", "and", "looked", "at", "bird", "in", "tree"];
  const parts: string[] = [];
  for (let i = 0; model.tokenize(parts.join(" ")).length < n; i++) parts.push(words[i % words.length]);
  return parts.join(" ");
}

async function tg(model: Model): Promise<number> {
  const t0 = performance.now();
  const r = await model.generate("", { maxTokens: TG, temperature: 0, ignoreEos: true });
  if (r.tokens.length !== TG) throw new Error(`generated ${r.tokens.length} tokens, not ${TG}`);
  return TG / ((performance.now() - t0) / 1000);
}

async function pp(model: Model, prompt: string): Promise<number> {
  const t0 = performance.now();
  const r = await model.generate(prompt, { maxTokens: 0, temperature: 0 });
  const n = r.timeline.stage("prompt")!.tokens;
  return n / ((performance.now() - t0) / 1000);
}

const path = await fixture("bench");
const options = { threads: navigator.hardwareConcurrency, contextSize: PP + TG + 8, gpuLayers: 0 };
await using inside = await loadModel(path, options);
await using apart = await loadModel(path, { ...options, isolate: true });
const prompt = promptOfTokens(inside, PP);
await tg(inside); // warm both
await tg(apart);
const samples = { tgIn: [] as number[], tgApart: [] as number[], ppIn: [] as number[], ppApart: [] as number[] };
for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 ? [apart, inside] : [inside, apart];
  for (const m of order) (m === inside ? samples.tgIn : samples.tgApart).push(await tg(m));
  for (const m of order) (m === inside ? samples.ppIn : samples.ppApart).push(await pp(m, prompt));
}
const row = (name: string, a: number[], b: number[]) =>
  `${name.padEnd(8)} ${median(a).toFixed(1).padStart(10)} ${median(b).toFixed(1).padStart(10)} ${
    (median(b) / median(a)).toFixed(3).padStart(8)
  }`;
console.log(`isolation cost, ${path}, ${ROUNDS} interleaved rounds, tokens/s end to end (medians)`);
console.log(`${"".padEnd(8)} ${"in-process".padStart(10)} ${"isolated".padStart(10)} ${"ratio".padStart(8)}`);
console.log(row(`tg${TG}`, samples.tgIn, samples.tgApart));
console.log(row(`pp${PP}`, samples.ppIn, samples.ppApart));
console.log("target: ratio >= 0.98");
