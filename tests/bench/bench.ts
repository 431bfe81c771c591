/**
 * Side-by-side benchmark of loupe against llama.cpp's own `llama-bench`, built from the pinned
 * source against the same engine libraries, on the ≈58M-parameter F16 `bench` fixture.
 *
 * It prints ratios measured in one run (it is a report, not a timed test: it always exits 0
 * once it has measured):
 *
 * 1. generation tokens/s: loupe `generate("", { maxTokens: N, temperature: 0, ignoreEos: true })`
 *    vs `llama-bench -p 0 -n N` (tgN);
 * 2. prompt tokens/s: loupe's "prompt" stage on a 512-token prompt vs `llama-bench -p 512 -n 0`
 *    (pp512), with equal n_batch/n_ubatch and flash attention;
 * 3. the cost of measuring: loupe with `measure: true` vs `measure: false`.
 *
 * What llama-bench times (tools/llama-bench/llama-bench.cpp, `test_gen`/`test_prompt`): per
 * repetition it clears the KV cache, then times n single-token `llama_decode` calls from
 * position 0 (the first token is BOS), each followed by `llama_synchronize`, with no sampling
 * (the next token is `rand() % n_vocab`); pp times the prompt's decodes in n_batch chunks and one
 * `llama_synchronize`. Before the repetitions it runs one untimed warmup (the whole prompt for
 * pp, one token for tg) in the same context. Its context is n_prompt + n_gen tokens and it
 * attaches its own (polling) CPU threadpool.
 *
 * loupe's matching measurement: `generate("")` tokenizes to [BOS], so the timeline's "prompt"
 * stage is the BOS decode at position 0 and its "generation" stage the next N-1 single-token
 * decodes (the N-th sampled token is not decoded), each wall time taken around `llama_decode` +
 * `llama_synchronize`. Their sum is exactly the N decodes llama-bench times, which is what the
 * gated tg ratio uses. The generate call's wall time (end to end: tokenize, sampler set-up, KV
 * clear, N greedy samplings over the vocabulary, FFI round trips, JSON step output) and the
 * generation stage alone are reported beside it. Each round loads every loupe model afresh and
 * warms it up once before its timed run, as each llama-bench process does.
 *
 * Each llama-bench process runs llama-bench's default 5 repetitions of each test and each fresh
 * loupe model the same 5 generate() calls: one sample of a round is their mean, as llama-bench's
 * own avg_ts (one tg128 repetition alone varies by ±10 % on two cores).
 *
 * Samples are interleaved in rounds (llama-bench, loupe tg with and without measuring, loupe
 * pp, in an order rotated each round) and summarized by medians. The two loupe tg models of a
 * round (measuring on and off) are loaded side by side and their calls alternated, so that the
 * measuring cost is read from calls a few hundred ms apart rather than seconds.
 *
 * CLI: `deno task bench [--quick] [--rounds=N] [--reps=N] [--tokens=N] [--fa=auto|on|off]`, and for
 * the GPU kit (tests/device/check.ts): `--model=PATH` (another model than the bench fixture),
 * `--gpu-layers=N|all` (loupe's `gpuLayers` and llama-bench's `-ngl`; default: each side's own
 * default, every layer on a GPU), `--no-pp` (no prompt measurement), `--no-reference` (no
 * llama-bench: measuring on/off alone) and `--json=PATH` (the figures as JSON); also `--threads=N`
 * (default: every core) and `--time-budget=S` (no new round after S seconds, default 240).
 *
 * @module
 */
import { loadModel, type Model } from "../../mod.ts";
import { build, fixture, runTool, THREADS as CORES } from "../support/helpers.ts";

// ---- options -------------------------------------------------------------------------------

type FlashAttn = "auto" | "on" | "off";

function flag(name: string): string | undefined {
  const prefix = `--${name}=`;
  const hit = Deno.args.find((a) => a.startsWith(prefix));
  return hit?.slice(prefix.length);
}

function intFlag(name: string, fallback: number): number {
  const v = flag(name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, not "${v}"`);
  return n;
}

const QUICK = Deno.args.includes("--quick");
/** Tokens generated per tg repetition (llama-bench's default tg is 128). */
const N_GEN = intFlag("tokens", QUICK ? 16 : 128);
/** Repetitions per llama-bench process and per fresh loupe model (llama-bench's default is 5); a sample is their mean. */
const REPS = intFlag("reps", QUICK ? 1 : 5);
/** Prompt tokens per pp repetition. */
const N_PROMPT = QUICK ? 128 : 512;
/** n_batch = n_ubatch on both sides. */
const BATCH = 512;
/** Interleaved rounds wanted; each gives one sample of every measurement. */
const ROUNDS = intFlag("rounds", QUICK ? 1 : 11);
/** A round during which other processes used more than this many cores is run again (up to MAX_ATTEMPTS). */
const FOREIGN_LIMIT = 0.25;
const MAX_ATTEMPTS = QUICK ? 1 : 2 * ROUNDS;
/** No new round starts (after at least MIN_ROUNDS) once this much time has passed. */
const TIME_BUDGET_MS = intFlag("time-budget", 240) * 1000;
/** CPU threads on both sides (default: every core). */
const THREADS = intFlag("threads", CORES);
const MIN_ROUNDS = Math.min(5, ROUNDS);
const FA = (flag("fa") ?? "auto") as FlashAttn;
if (!["auto", "on", "off"].includes(FA)) throw new Error(`--fa must be auto, on or off, not "${FA}"`);
/** Layers offloaded on both sides: loupe's gpuLayers, llama-bench's -ngl (undefined: each side's default, all). */
const GPU_LAYERS: number | "all" | undefined = (() => {
  const v = flag("gpu-layers");
  if (v === undefined || v === "all") return v;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--gpu-layers must be a whole number or "all", not "${v}"`);
  return n;
})();
/** Measure the prompt (pp) too. */
const WITH_PP = !Deno.args.includes("--no-pp");
/** Run llama-bench beside loupe. */
const WITH_REFERENCE = !Deno.args.includes("--no-reference");
/** Where to write the figures as JSON, if anywhere. */
const JSON_OUT = flag("json");

const TARGET_RATIO = 0.98;
const TARGET_OVERHEAD = 0.01;

// ---- helpers -------------------------------------------------------------------------------

function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Runs `fn` REPS times and averages each numeric field of its results (as llama-bench averages its repetitions). */
async function repeated<T extends { [K in keyof T]: number }>(fn: () => Promise<T>): Promise<T> {
  const runs: T[] = [];
  for (let i = 0; i < REPS; i++) runs.push(await fn());
  return meanOf(runs);
}

/** The mean of each numeric field. */
function meanOf<T extends { [K in keyof T]: number }>(runs: T[]): T {
  const keys = Object.keys(runs[0]) as (keyof T)[];
  return Object.fromEntries(keys.map((k) => [k, mean(runs.map((r) => r[k]))])) as T;
}

function spread(xs: number[], digits = 1): string {
  if (xs.length === 0) return "no samples";
  const m = median(xs);
  const lo = Math.min(...xs);
  const hi = Math.max(...xs);
  return `median ${m.toFixed(digits)}, min ${lo.toFixed(digits)}, max ${hi.toFixed(digits)} (±${
    (50 * (hi - lo) / m).toFixed(1)
  } % half-range, n=${xs.length})`;
}

/** CPU time in clock ticks: the whole machine's busy and total time, and this process's own (with reaped children). */
function cpuTicks(): { busy: number; total: number; own: number } | null {
  try {
    const f = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already in user/nice)
    const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
    const busy = user + nice + system + irq + softirq + (steal ?? 0);
    const self = Deno.readTextFileSync("/proc/self/stat");
    const fields = self.slice(self.lastIndexOf(")") + 2).split(" ").map(Number);
    // fields[0] is the state (field 3); utime, stime, cutime, cstime are fields 14-17
    const own = fields[11] + fields[12] + fields[13] + fields[14];
    return { busy, total: busy + idle + iowait, own };
  } catch {
    return null;
  }
}

/** CPU cores' worth of work done by other processes between two readings (steal included). */
function foreignCores(a: ReturnType<typeof cpuTicks>, b: ReturnType<typeof cpuTicks>): number {
  if (!a || !b || b.total <= a.total) return NaN;
  const cores = navigator.hardwareConcurrency;
  return Math.max(0, (b.busy - a.busy - (b.own - a.own)) / (b.total - a.total)) * cores;
}

function spreadPlain(xs: number[]): string {
  return `median ${median(xs).toFixed(2)}, max ${Math.max(...xs).toFixed(2)}`;
}

function loadavg(): string {
  try {
    return Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
  } catch {
    return "n/a";
  }
}

interface BenchEntry {
  n_prompt: number;
  n_gen: number;
  n_batch: number;
  n_ubatch: number;
  n_threads: number;
  flash_attn: number;
  samples_ts: number[];
  samples_ns: number[];
}

/** One llama-bench process: REPS repetitions of ppN_PROMPT and of tgN_GEN (each test after its own warmup); its mean tok/s. */
async function runLlamaBench(model: string): Promise<{ pp: number; tg: number }> {
  const { stdout } = await runTool(build.tools.bench, [
    ...(GPU_LAYERS === undefined ? [] : ["-ngl", GPU_LAYERS === "all" ? "99" : String(GPU_LAYERS)]),
    "-m",
    model,
    "-p",
    WITH_PP ? String(N_PROMPT) : "0",
    "-n",
    String(N_GEN),
    "-t",
    String(THREADS),
    "-b",
    String(BATCH),
    "-ub",
    String(BATCH),
    "-fa",
    FA,
    "-r",
    String(REPS),
    "-o",
    "json",
  ]);
  const text = new TextDecoder().decode(stdout);
  const entries = JSON.parse(text.slice(text.indexOf("["))) as BenchEntry[];
  const pp = WITH_PP ? entries.find((e) => e.n_prompt === N_PROMPT && e.n_gen === 0) : undefined;
  const tg = entries.find((e) => e.n_prompt === 0 && e.n_gen === N_GEN);
  if ((WITH_PP && !pp) || !tg) {
    throw new Error(`llama-bench gave no pp${N_PROMPT}/tg${N_GEN} results: ${text.slice(0, 2000)}`);
  }
  for (const e of pp ? [pp, tg] : [tg]) {
    if (e.n_batch !== BATCH || e.n_ubatch !== BATCH || e.n_threads !== THREADS) {
      throw new Error(`llama-bench ran with other settings than asked: ${JSON.stringify(e)}`);
    }
  }
  return { pp: pp ? mean(pp.samples_ts) : NaN, tg: mean(tg.samples_ts) };
}

interface TgSample {
  /** N / generate() wall time. */
  e2e: number;
  /** Generation stage alone: N-1 decodes. */
  gen: number;
  /** Prompt (BOS) + generation stages: the N decodes llama-bench times. */
  decode: number;
  /** Sampling time per token, µs. */
  samplingUs: number;
  /** The first decode (the prompt stage: BOS at position 0), ms. */
  firstMs: number;
  /** One generation-stage decode, ms. */
  perTokenMs: number;
  /** generate() wall time outside the tokenize, prompt, generation and sampling stages, ms. */
  hostMs: number;
}

async function loupeTg(model: Model): Promise<TgSample> {
  const t0 = performance.now();
  const r = await model.generate("", { maxTokens: N_GEN, temperature: 0, ignoreEos: true });
  const wallMs = performance.now() - t0;
  if (r.tokens.length !== N_GEN || r.promptTokens.length !== 1) {
    throw new Error(`loupe generated ${r.tokens.length} tokens from ${r.promptTokens.length} prompt tokens`);
  }
  const prompt = r.timeline.stage("prompt")!;
  const gen = r.timeline.stage("generation")!;
  const sampling = r.timeline.stage("sampling")!;
  const tokenize = r.timeline.stage("tokenize")!;
  return {
    e2e: N_GEN / (wallMs / 1000),
    gen: gen.tokens / (gen.wallMs / 1000),
    decode: (prompt.tokens + gen.tokens) / ((prompt.wallMs + gen.wallMs) / 1000),
    samplingUs: sampling.wallMs * 1000 / sampling.tokens,
    firstMs: prompt.wallMs,
    perTokenMs: gen.wallMs / gen.tokens,
    hostMs: wallMs - tokenize.wallMs - prompt.wallMs - gen.wallMs - sampling.wallMs,
  };
}

async function loupePp(model: Model, prompt: string): Promise<{ stage: number; e2e: number }> {
  const t0 = performance.now();
  const r = await model.generate(prompt, { maxTokens: 0, temperature: 0 });
  const wallMs = performance.now() - t0;
  const s = r.timeline.stage("prompt")!;
  if (s.tokens !== N_PROMPT) throw new Error(`the prompt stage evaluated ${s.tokens} tokens, not ${N_PROMPT}`);
  return { stage: s.tokens / (s.wallMs / 1000), e2e: N_PROMPT / (wallMs / 1000) };
}

/** A plain-text prompt of exactly `n` tokens (BOS included). Token identity does not change the cost. */
function promptOfTokens(model: Model, n: number): string {
  const words = ["the", "cat", "sat", "on", "a", "mat", "and", "looked", "at", "bird", "in", "tree"];
  const parts: string[] = [];
  let count = model.tokenize("").length;
  for (let i = 0; count < n; i++) {
    parts.push(words[i % words.length]);
    count = model.tokenize(parts.join(" ")).length;
  }
  const text = parts.join(" ");
  if (model.tokenize(text).length !== n) throw new Error(`cannot make a prompt of exactly ${n} tokens`);
  return text;
}

// ---- run -----------------------------------------------------------------------------------

const started = performance.now();
const modelPath = flag("model") ?? await fixture("bench");
console.log(`loupe bench${QUICK ? " (quick)" : ""}: ${modelPath}`);
console.log(`engine: ${build.variant} (${build.engineDir})`);
console.log(`reference: ${build.tools.bench}`);

// Context sizes as llama-bench makes them (n_prompt + n_gen), except that loupe needs one more
// slot after a prompt and the engine clamps n_batch to the context. The engine pads contexts to a
// multiple of 256, and attention only spans the used cells (padded to 256), so the KV cache size
// does not change the work of a decode.
const common = {
  threads: THREADS,
  batchSize: BATCH,
  flashAttn: FA,
  ...(GPU_LAYERS === undefined ? {} : { gpuLayers: GPU_LAYERS }),
} as const;
const tgOptions = (measure: boolean) => ({ ...common, contextSize: N_GEN, measure });
const ppOptions = { ...common, contextSize: Math.max(N_PROMPT + 1, BATCH), measure: true };

/**
 * Runs `fn` on a model loaded for it and warmed up once, then closes it: what one llama-bench
 * process does each round (its own load, context and warmup). A model kept across rounds would
 * keep one placement of its buffers for every sample, and two such instances were seen to
 * differ by ±4 % from each other with identical settings.
 */
async function fresh<T>(
  options: typeof ppOptions,
  warmup: (m: Model) => Promise<unknown>,
  fn: (m: Model) => Promise<T>,
): Promise<T> {
  await using m = await loadModel(modelPath, options);
  await warmup(m);
  return await fn(m);
}

/**
 * loupe tg with and without measuring, paired tightly: two fresh models (one each), warmed up,
 * their generate() calls alternated (on, off, off, on, …) so that the machine's drift (±10 %
 * between rounds on two cores) falls on both alike. Which side is loaded and called first flips
 * with every pair, so that neither always gets the first memory or the first call. Returns each
 * side's mean over REPS calls.
 */
let pairs = 0;
async function onOffPair(): Promise<{ on: TgSample; off: TgSample }> {
  const onFirst = pairs++ % 2 === 0;
  await using first = await loadModel(modelPath, tgOptions(onFirst));
  await using second = await loadModel(modelPath, tgOptions(!onFirst));
  const [on, off] = onFirst ? [first, second] : [second, first];
  await tgWarmup(first);
  await tgWarmup(second);
  const runs = { on: [] as TgSample[], off: [] as TgSample[] };
  const a = onFirst ? "on" : "off";
  const b = onFirst ? "off" : "on";
  for (let i = 0; i < REPS; i++) {
    for (const side of i % 2 ? [b, a] as const : [a, b] as const) {
      runs[side].push(await loupeTg(side === "on" ? on : off));
    }
  }
  return { on: meanOf(runs.on), off: meanOf(runs.off) };
}

let modelInfo: Record<string, unknown> = {};
const ppPrompt = await (async () => {
  await using pp = await loadModel(modelPath, ppOptions);
  const info = pp.info;
  console.log(
    `model: ${info.desc}, ${info.nParams.toLocaleString("en-US")} parameters (${(info.nParams / 1e6).toFixed(1)}M), ${
      (info.size / 2 ** 20).toFixed(1)
    } MiB`,
  );
  console.log(
    `threads: ${THREADS} (loupe reports ${info.nThreads}); n_batch = n_ubatch = ${BATCH} (loupe ${info.nBatch}); ` +
      `flash attention: ${FA}; loupe contexts: tg ${N_GEN} (+ padding), pp ${info.nCtx}; ` +
      `layers offloaded: ${info.gpuLayers} of ${info.nLayer} + output (asked: ${GPU_LAYERS ?? "default"})`,
  );
  modelInfo = {
    desc: info.desc,
    nParams: info.nParams,
    size: info.size,
    nLayer: info.nLayer,
    gpuLayers: info.gpuLayers,
  };
  return promptOfTokens(pp, N_PROMPT);
})();
console.log(
  `tg: ${N_GEN} tokens; pp: ${N_PROMPT} tokens; ${ROUNDS} interleaved rounds, each on freshly loaded models ` +
    `with ${REPS} repetitions per sample; ` +
    `load average ${loadavg()}`,
);

// Warmups, as llama-bench does before each test: one token for tg, the whole prompt for pp.
const tgWarmup = (m: Model) => m.generate("", { maxTokens: 1, temperature: 0 });
const ppWarmup = (m: Model) => m.generate(ppPrompt, { maxTokens: 0 });
const warm = await fresh(tgOptions(true), tgWarmup, (m) => m.generate("", { maxTokens: 8, temperature: 0 }));
console.log(`loupe devices: generation ${warm.timeline.devicesUsed("generation").join(", ") || "?"}`);

// JIT warm-up of loupe's own TypeScript, untimed: every loupe step of a round, three times. On a
// cold V8, compiling and collecting on Deno's background threads took a core from ggml's two
// spin-synchronized compute threads: the first decode of a call took 10-17 ms instead of 2-3 ms
// for the first few calls (a notebook kernel is warm after its first cells; llama-bench is C++).
for (let i = 0; i < 3; i++) {
  await onOffPair();
  if (WITH_PP) await fresh(ppOptions, ppWarmup, (m) => loupePp(m, ppPrompt));
}

/** One round: one sample of every measurement. */
interface Round {
  refTg: number;
  refPp: number;
  on: TgSample;
  off: TgSample;
  ppStage: number;
  ppE2e: number;
  /** Cores' worth of CPU used by other processes during the round. */
  foreign: number;
}

const all: Round[] = [];
const isClean = (r: Round) => !(r.foreign > FOREIGN_LIMIT);
let attempts = 0;
while (all.filter(isClean).length < ROUNDS && attempts < MAX_ATTEMPTS) {
  if (attempts >= MIN_ROUNDS && performance.now() - started > TIME_BUDGET_MS) break;
  const r: Partial<Round> = {};
  r.refTg =
    r.refPp =
    r.ppStage =
    r.ppE2e =
      NaN;
  const steps: Array<() => Promise<void>> = [
    async () => void ({ on: r.on, off: r.off } = await onOffPair()),
  ];
  if (WITH_REFERENCE) {
    steps.unshift(async () => {
      const b = await runLlamaBench(modelPath);
      r.refTg = b.tg;
      r.refPp = b.pp;
    });
  }
  if (WITH_PP) {
    steps.push(async () => {
      const p = await fresh(ppOptions, ppWarmup, (m) => repeated(() => loupePp(m, ppPrompt)));
      r.ppStage = p.stage;
      r.ppE2e = p.e2e;
    });
  }
  // Rotate the order each round (and reverse it every other one) so no side always runs first.
  const order = steps.map((_, i) => (i + attempts) % steps.length);
  if (attempts % 2) order.reverse();
  const c0 = cpuTicks();
  for (const i of order) await steps[i]();
  r.foreign = foreignCores(c0, cpuTicks());
  all.push(r as Round);
  attempts++;
  Deno.stderr.writeSync(
    new TextEncoder().encode(
      `\rround ${attempts}: ${all.filter(isClean).length}/${ROUNDS} clean (other processes used ${
        r.foreign.toFixed(2)
      } cores) `,
    ),
  );
}
Deno.stderr.writeSync(new TextEncoder().encode("\n"));

// ---- report --------------------------------------------------------------------------------

// Rounds disturbed by other processes are left out, unless too few are clean.
const clean = all.filter(isClean);
const used = clean.length >= Math.min(3, ROUNDS) ? clean : all;
const on = used.map((r) => r.on);
const off = used.map((r) => r.off);
const ref = { tg: used.map((r) => r.refTg), pp: used.map((r) => r.refPp) };
const lp = { stage: used.map((r) => r.ppStage), e2e: used.map((r) => r.ppE2e) };

/** Set when the samples include rounds disturbed by other processes: verdicts are then marked. */
const disturbed = used.some((r) => !isClean(r));
const verdict = (ok: boolean) => (ok ? "PASS" : "FAIL") + (disturbed ? " (disturbed)" : "");

const pick = (xs: TgSample[], k: keyof TgSample) => xs.map((x) => x[k]);
const onDecode = median(pick(on, "decode"));
const onE2e = median(pick(on, "e2e"));
const onGen = median(pick(on, "gen"));
const offDecode = median(pick(off, "decode"));
const offE2e = median(pick(off, "e2e"));
const refTg = median(ref.tg);
const refPp = median(ref.pp);
const ppStage = median(lp.stage);
const ppE2e = median(lp.e2e);

interface Row {
  metric: string;
  loupe: string;
  reference: string;
  ratio: string;
  target: string;
  result: string;
}

function ratioRow(metric: string, loupe: number, reference: number, gated: boolean): Row {
  const ratio = loupe / reference;
  return {
    metric,
    loupe: loupe.toFixed(1),
    reference: reference.toFixed(1),
    ratio: ratio.toFixed(3),
    target: gated ? `≥ ${TARGET_RATIO}` : "info",
    result: gated ? verdict(ratio >= TARGET_RATIO) : "",
  };
}

function overheadRow(metric: string, measured: number, unmeasured: number, gated: boolean): Row {
  const overhead = 1 - measured / unmeasured;
  return {
    metric,
    loupe: measured.toFixed(1),
    reference: unmeasured.toFixed(1),
    ratio: `${(measured / unmeasured).toFixed(3)} (${(100 * overhead).toFixed(2)} %)`,
    target: gated ? `overhead ≤ ${100 * TARGET_OVERHEAD} %` : "info",
    result: gated ? verdict(overhead <= TARGET_OVERHEAD) : "",
  };
}

const rows: Row[] = [
  ...(WITH_REFERENCE
    ? [
      ratioRow(`tg${N_GEN} tok/s: N decodes (prompt+generation stages) vs llama-bench`, onDecode, refTg, true),
      ratioRow(`tg${N_GEN} tok/s: generate() end to end vs llama-bench`, onE2e, refTg, false),
      ratioRow(`tg${N_GEN} tok/s: generation stage (N-1 decodes) vs llama-bench`, onGen, refTg, false),
    ]
    : []),
  ...(WITH_REFERENCE && WITH_PP
    ? [
      ratioRow(`pp${N_PROMPT} tok/s: prompt stage vs llama-bench`, ppStage, refPp, true),
      ratioRow(`pp${N_PROMPT} tok/s: generate() end to end vs llama-bench`, ppE2e, refPp, false),
    ]
    : []),
  overheadRow(`tg${N_GEN} tok/s end to end: measure on vs off`, onE2e, offE2e, true),
  overheadRow(`tg${N_GEN} tok/s decodes: measure on vs off`, onDecode, offDecode, false),
];

const header: Row = {
  metric: "metric",
  loupe: "loupe",
  reference: "reference",
  ratio: "ratio",
  target: "target",
  result: "result",
};
const cols = Object.keys(header) as (keyof Row)[];
const widths = cols.map((c) => Math.max(...[header, ...rows].map((r) => r[c].length)));
const line = (r: Row) =>
  cols.map((c, i) => (i === 0 || i >= 4 ? r[c].padEnd(widths[i]) : r[c].padStart(widths[i]))).join("  ").trimEnd();
console.log();
console.log(line(header));
console.log(widths.map((w) => "-".repeat(w)).join("  "));
for (const r of rows) console.log(line(r));

const paired = (a: number[], b: number[]) => median(a.map((x, i) => x / b[i])).toFixed(3);
console.log();
console.log(
  `rounds: ${all.length} run, ${clean.length} clean (other processes below ${FOREIGN_LIMIT} cores), ` +
    `${used.length} used${
      used === all && clean.length < all.length ? " (too few clean: results are disturbed)" : ""
    }; ` +
    `other processes' CPU per round: ${spreadPlain(all.map((r) => r.foreign))} cores`,
);
console.log(`wall time ${((performance.now() - started) / 1000).toFixed(0)} s; load average ${loadavg()}`);
console.log("samples (tok/s):");
if (WITH_REFERENCE) console.log(`  llama-bench tg${N_GEN}:               ${spread(ref.tg)}`);
console.log(`  loupe tg decodes (measure on):  ${spread(pick(on, "decode"))}`);
console.log(`  loupe tg decodes (measure off): ${spread(pick(off, "decode"))}`);
console.log(`  loupe tg end to end (on):       ${spread(pick(on, "e2e"))}`);
console.log(`  loupe tg end to end (off):      ${spread(pick(off, "e2e"))}`);
if (WITH_REFERENCE && WITH_PP) console.log(`  llama-bench pp${N_PROMPT}:              ${spread(ref.pp)}`);
if (WITH_PP) console.log(`  loupe pp prompt stage:          ${spread(lp.stage)}`);
console.log(
  `median of per-round paired ratios: tg decodes ${paired(pick(on, "decode"), ref.tg)}, ` +
    `tg end to end ${paired(pick(on, "e2e"), ref.tg)}, pp ${paired(lp.stage, ref.pp)}, ` +
    `measure on/off end to end ${paired(pick(on, "e2e"), pick(off, "e2e"))}, ` +
    `decodes ${paired(pick(on, "decode"), pick(off, "decode"))}`,
);
console.log(
  `loupe per generate() call outside the decode stages: sampling ${
    median(pick(on, "samplingUs")).toFixed(1)
  } µs/token, other host time ${median(pick(on, "hostMs")).toFixed(2)} ms/call (measure on), ${
    median(pick(off, "hostMs")).toFixed(2)
  } ms/call (off)`,
);
console.log(
  `loupe decode times (measure on): the first (prompt stage) ${spread(pick(on, "firstMs"), 2)} ms; ` +
    `one of the generation stage ${spread(pick(on, "perTokenMs"), 2)} ms`,
);
console.log(
  "The gated tg ratio uses the timeline's prompt + generation stages: the same N single-token decodes " +
    "(+ synchronize) from position 0 that llama-bench times, without sampling. End to end adds what " +
    "llama-bench does not do (greedy sampling over the vocabulary, KV clear, FFI and JSON step output).",
);
if (JSON_OUT) {
  const pairedNum = (a: number[], b: number[]) => median(a.map((x, i) => x / b[i]));
  await Deno.writeTextFile(
    JSON_OUT,
    JSON.stringify(
      {
        model: modelPath,
        modelInfo,
        engine: build.variant,
        devices: warm.timeline.devicesUsed("generation"),
        settings: { tokens: N_GEN, prompt: N_PROMPT, reps: REPS, rounds: ROUNDS, threads: THREADS, fa: FA },
        gpuLayers: GPU_LAYERS ?? null,
        rounds: { run: all.length, clean: clean.length, used: used.length, disturbed },
        medians: {
          referenceTg: refTg,
          referencePp: refPp,
          tgDecodesOn: onDecode,
          tgDecodesOff: offDecode,
          tgE2eOn: onE2e,
          tgE2eOff: offE2e,
          tgGenerationOn: onGen,
          ppStage,
          ppE2e,
        },
        paired: {
          tgDecodesVsReference: pairedNum(pick(on, "decode"), ref.tg),
          tgE2eVsReference: pairedNum(pick(on, "e2e"), ref.tg),
          ppVsReference: pairedNum(lp.stage, ref.pp),
          measureOnOffE2e: pairedNum(pick(on, "e2e"), pick(off, "e2e")),
          measureOnOffDecodes: pairedNum(pick(on, "decode"), pick(off, "decode")),
        },
        rows,
        wallS: (performance.now() - started) / 1000,
      },
      (_, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v),
      2,
    ) + "\n",
  );
}
Deno.exit(0);
