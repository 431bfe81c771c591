/**
 * Embedding benchmark: texts per second for many short texts, measured side by side in one run
 * (a report, not a timed test).
 *
 * 1. batched versus one call per text: loupe `embed(texts)` (all texts, packed across sequences)
 *    against `embed([text])` for each text in turn, both end to end (tokenize, batches, copies,
 *    normalisation, timeline); target ≥ 5×;
 * 2. loupe versus llama.cpp's embedding tool (`examples/embedding`, built from the pinned source
 *    against the same engine libraries) on the same texts, the same context (512), batch size
 *    (512), threads and flash-attention setting: texts per second through tokenization and
 *    batches on both sides; target ≥ 0.95. The tool's batches alone are reported beside it.
 *
 * What the tool's number is: it packs the texts into batches exactly as loupe does (sequences in
 * order until the next would overflow n_batch), decodes each batch and reads the pooled vectors.
 * Its own perf counters are not printed by this build, so its time is taken from the
 * timestamps of its log lines. It gets the texts twice, each pass followed by a sentinel text
 * exactly one context long (so always a batch of its own): the first pass warms it up (buffers
 * grown, pages touched), as loupe is warmed up before it is timed, and the second is measured
 * from its first "batch_decode" line to the second sentinel's: the tool's batches (with their
 * pooling and normalisation), no process start, no model load. The tool tokenizes every prompt
 * before its first batch, between its "system_info" line and its first "batch_decode" line; the
 * two passes are the same texts, so half of that span is one pass's tokenization (the sentinel's
 * included, a few µs). loupe's side is its whole `embed()` call: tokenization, batches, copies,
 * normalisation, timeline. The tool's measured batches are checked to hold the same tokens in
 * the same number of batches as loupe's timeline.
 *
 * Two models: the `bert` test fixture (2 layers, width 64, F32: per-call overhead dominates) and
 * the `bench` fixture (a bge-small-shaped encoder: 6 layers, width 384, F16: compute dominates).
 * Rounds are interleaved (loupe batched, loupe one per text, the tool, in an order rotated each
 * round) and summarised by medians.
 *
 * On a machine busier than its cores, ggml's worker threads wait for each other at every graph
 * node and small graphs slow down out of proportion: the load average is printed with every
 * round; `--threads=1` avoids that wait.
 *
 * CLI: `deno run -A tests/bench_embed.ts [--quick] [--rounds=N] [--texts=N] [--threads=N]`
 *
 * @module
 */
import { type Embedder, loadEmbedder } from "../../mod.ts";
import { embedFixture, type EmbedFixtureName } from "../../src/fixtures/embed.ts";
import { build, runTool, THREADS } from "../support/helpers.ts";

/** One line of the report. */
export interface EmbedBenchRow {
  /** What was measured. */
  metric: string;
  /** loupe's figure (texts per second). */
  loupe: number;
  /** The reference figure (texts per second). */
  reference: number;
  /** loupe / reference. */
  ratio: number;
  /** The ratio aimed for (none: reported for information). */
  target?: number;
}

/** Options of {@linkcode benchEmbeddings}. */
export interface EmbedBenchOptions {
  /** Interleaved rounds per model (default 5). */
  rounds?: number;
  /** Short texts per call (default 256). */
  texts?: number;
  /** CPU threads on both sides (default: the machine's cores). */
  threads?: number;
  /** Fixtures to measure (default bert and bench). */
  models?: EmbedFixtureName[];
  /** Progress lines (default: to stderr). */
  log?: (line: string) => void;
}

const CONTEXT = 512;
const SENTINEL_WORDS = CONTEXT - 2; // [CLS] + words + [SEP] = one full context

/** `n` short texts (4 to 15 common words), deterministic. */
export function shortTexts(n: number): string[] {
  const words = ("the of and to in is was for on that with as by at from his her an were are which this be or " +
    "has had not but what all when can said there use each she do how their if will up other about out many")
    .split(" ");
  return Array.from({ length: n }, (_, i) => {
    const len = 4 + (i * 7) % 12;
    return Array.from({ length: len }, (_, k) => words[(i * 3 + k * 5) % words.length]).join(" ");
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** One measured pass of the tool: its batches and its tokenization, in ms, and the batches' sizes. */
interface ToolPass {
  /** From the pass's first batch to the sentinel's. */
  batchesMs: number;
  /** Half of the span in which the tool tokenized both passes. */
  tokenizeMs: number;
  batches: number[];
}

/** Runs the tool on the texts twice (see the module comment) and times its second pass. */
async function toolRun(model: string, texts: string[], threads: number): Promise<ToolPass> {
  const sep = "<#loupe-sep#>";
  const sentinel = "word ".repeat(SENTINEL_WORDS).trim();
  // The texts twice: the first pass warms the tool up (buffers grown, pages touched), as loupe
  // is warmed up before it is timed; only the second pass is measured.
  const prompts = [...texts, sentinel, ...texts, sentinel];
  const { stderr } = await runTool(build.tools.embedding, [
    "-m",
    model,
    "-p",
    prompts.join(sep),
    "--embd-separator",
    sep,
    "--embd-output-format",
    "array",
    "-c",
    String(CONTEXT),
    "-b",
    String(CONTEXT),
    "-t",
    String(threads),
  ]);
  const lines = [...stderr.matchAll(/^(\d+)\.(\d+)\.(\d+)\.(\d+) I batch_decode: n_tokens = (\d+), n_seq = (\d+)/gm)];
  const isSentinel = (m: RegExpMatchArray) => Number(m[5]) === CONTEXT && Number(m[6]) === 1;
  const first = lines.findIndex(isSentinel) + 1; // the measured pass's first batch
  const last = lines.length - 1; // the second sentinel
  if (first <= 0 || first >= last || !isSentinel(lines[last]) || last - first !== first - 1) {
    throw new Error(`llama-embedding's batches are not two equal passes with sentinels: ${stderr.slice(-2000)}`);
  }
  const info = stderr.match(/^(\d+)\.(\d+)\.(\d+)\.(\d+) I system_info: /m);
  if (!info) throw new Error(`llama-embedding printed no system_info line before tokenizing: ${stderr.slice(-2000)}`);
  const us = (m: RegExpMatchArray) => ((Number(m[1]) * 60 + Number(m[2])) * 1000 + Number(m[3])) * 1000 + Number(m[4]);
  return {
    batchesMs: (us(lines[last]) - us(lines[first])) / 1000,
    tokenizeMs: (us(lines[0]) - us(info)) / 2 / 1000,
    batches: lines.slice(first, last).map((m) => Number(m[5])),
  };
}

/** Measures one model; returns its two rows. */
async function benchModel(
  name: EmbedFixtureName,
  n: number,
  rounds: number,
  threads: number,
  log: (s: string) => void,
): Promise<EmbedBenchRow[]> {
  const path = await embedFixture(name);
  const texts = shortTexts(n);
  await using emb: Embedder = await loadEmbedder(path, { threads, contextSize: CONTEXT, batchSize: CONTEXT });
  log(`${name}: ${emb.info.desc}, ${emb.info.nParams} parameters, threads ${threads}`);
  const warm = await emb.embed(texts);
  for (const t of texts.slice(0, 8)) await emb.embed([t]);
  const encode = warm.timeline.stage("encode")!;
  const batched: number[] = [];
  const single: number[] = [];
  const tool: number[] = [];
  const toolBatches: number[] = [];
  const steps: Record<string, () => Promise<void>> = {
    batched: async () => {
      const t0 = performance.now();
      await emb.embed(texts);
      batched.push(performance.now() - t0);
    },
    single: async () => {
      const t0 = performance.now();
      for (const t of texts) await emb.embed([t]);
      single.push(performance.now() - t0);
    },
    tool: async () => {
      const r = await toolRun(path, texts, threads);
      const tokens = r.batches.reduce((a, b) => a + b, 0);
      if (tokens !== encode.tokens || r.batches.length !== encode.graphs) {
        throw new Error(
          `llama-embedding ran ${tokens} tokens in ${r.batches.length} batches, loupe ${encode.tokens} in ${encode.graphs}`,
        );
      }
      tool.push(r.tokenizeMs + r.batchesMs);
      toolBatches.push(r.batchesMs);
    },
  };
  const order = Object.keys(steps);
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < order.length; k++) await steps[order[(round + k) % order.length]]();
    log(
      `${name} round ${round + 1}/${rounds}: batched ${batched.at(-1)!.toFixed(1)} ms, one per text ${
        single.at(-1)!.toFixed(1)
      } ms, llama-embedding ${tool.at(-1)!.toFixed(1)} ms (batches ${toolBatches.at(-1)!.toFixed(1)} ms) (load ${
        Deno.loadavg()[0].toFixed(2)
      })`,
    );
  }
  const best = (xs: number[]) => Math.min(...xs).toFixed(1);
  log(
    `${name} best of ${rounds}: batched ${best(batched)} ms, one per text ${best(single)} ms, llama-embedding ${
      best(tool)
    } ms (batches ${best(toolBatches)} ms)`,
  );
  const rate = (ms: number) => n / (ms / 1000);
  const b = rate(median(batched));
  const s = rate(median(single));
  const t = rate(median(tool));
  const tb = rate(median(toolBatches));
  return [
    {
      metric: `${name}: texts/s, ${n} short texts, one batched call vs one call per text`,
      loupe: b,
      reference: s,
      ratio: b / s,
      target: 5,
    },
    {
      metric: `${name}: texts/s, ${n} short texts, loupe embed() vs llama-embedding (tokenize + batches)`,
      loupe: b,
      reference: t,
      ratio: b / t,
      target: 0.95,
    },
    {
      metric: `${name}: texts/s, ${n} short texts, loupe embed() vs llama-embedding's batches alone`,
      loupe: b,
      reference: tb,
      ratio: b / tb,
    },
  ];
}

/** Runs the embedding benchmark and returns its rows (see the module comment). */
export async function benchEmbeddings(options: EmbedBenchOptions = {}): Promise<EmbedBenchRow[]> {
  const log = options.log ?? ((s: string) => console.error(s));
  const rows: EmbedBenchRow[] = [];
  for (const model of options.models ?? ["bert", "bench"]) {
    rows.push(
      ...await benchModel(model, options.texts ?? 256, options.rounds ?? 5, options.threads ?? THREADS, log),
    );
  }
  return rows;
}

if (import.meta.main) {
  const arg = (name: string) => Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
  const quick = Deno.args.includes("--quick");
  const rows = await benchEmbeddings({
    rounds: Number(arg("rounds") ?? (quick ? 1 : 5)),
    texts: Number(arg("texts") ?? 256),
    threads: Number(arg("threads") ?? THREADS),
  });
  console.table(rows.map((r) => ({
    metric: r.metric,
    loupe: r.loupe.toFixed(1),
    reference: r.reference.toFixed(1),
    ratio: r.ratio.toFixed(3),
    target: r.target === undefined ? "info" : `≥ ${r.target}`,
    result: r.target === undefined ? "" : r.ratio >= r.target ? "met" : "not met",
  })));
  console.log(`engine ${build.variant}, ${navigator.hardwareConcurrency} cores, load ${Deno.loadavg().join(" ")}`);
}
