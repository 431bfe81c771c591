// Embeddings and reranking against llama.cpp's own embedding tool (examples/embedding, built
// from the pinned source against the same libraries), batching, model kinds, bad input and the
// API's contracts.
import { assert, assertEquals, assertRejects, assertThrows } from "../support/assert.ts";
import { build, fixture, runLoggedTool, THREADS } from "../support/helpers.ts";
import { cosine, devices, loadEmbedder, loadModel, LoupeError, PlacementError } from "../../mod.ts";
import { embedFixture } from "../../src/fixtures/embed.ts";

const bertPath = await embedFixture("bert");
const rerankPath = await embedFixture("rerank");
const decoderPath = await embedFixture("decoder");
const tinyPath = await fixture("tiny");

const bert = await loadEmbedder(bertPath, { threads: THREADS });
const decoder = await loadEmbedder(decoderPath, { threads: THREADS });
const hasGpu = (await devices()).some((d) => (d.type === "gpu" || d.type === "igpu") && !d.software);

const TEXTS = [
  "hello world",
  "The quick brown fox jumps over the lazy dog.",
  "Ünïcödé text, with punctuation! And numbers: 3.14159, 42.",
  "a",
  "Embeddings map text to vectors; similar texts get similar vectors.",
];

const SEP = "<#loupe-sep#>";

/** Runs llama.cpp's embedding tool and returns its vectors (JSON output). */
async function reference(
  model: string,
  prompts: string[],
  opts: { normalize: number; pooling?: string },
): Promise<number[][]> {
  const args = [
    "-m",
    model,
    "-p",
    prompts.join(SEP),
    "--embd-separator",
    SEP,
    "--embd-output-format",
    "json",
    "--embd-normalize",
    String(opts.normalize),
    "-c",
    "512",
    "-t",
    String(THREADS),
  ];
  if (opts.pooling) args.push("--pooling", opts.pooling);
  if (!hasGpu) args.push("-ngl", "0");
  // For rank pooling the tool prints the score followed by n_embd - 1 floats it never wrote
  // (uninitialised memory: NaN, inf); they become null, so a NaN in a compared component still
  // fails the test. Its JSON closes with "}" as the last log line (runLoggedTool: a run whose
  // end was lost at exit is run again).
  const text = await runLoggedTool(build.tools.embedding, args, (out) => out.trimEnd().endsWith("}"));
  const body = text.slice(text.indexOf("{"), text.lastIndexOf("}") + 1).replace(/-?\b(nan|inf)\b/gi, "null");
  const data: Array<{ embedding: number[] }> = JSON.parse(body).data;
  const widths = new Set(data.map((d) => d.embedding.length));
  assert(
    (opts.pooling === "none" || data.length === prompts.length) && widths.size === 1,
    `llama-embedding printed ${data.length} vectors of widths ${[...widths]}`,
  );
  return data.map((d) => d.embedding);
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, tol = 1e-4) {
  assertEquals(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= tol)) throw new Error(`${what}: component ${i} is ${actual[i]}, expected ${expected[i]} (±${tol})`);
  }
}

Deno.test("bert: vectors equal llama.cpp's embedding tool (pooling from the model, l2)", async () => {
  assertEquals(bert.info.pooling, "cls");
  assertEquals(bert.info.arch, "bert");
  assert(bert.info.encoder, "a BERT model runs as an encoder");
  const ref = await reference(bertPath, TEXTS, { normalize: 2 });
  const got = await bert.embed(TEXTS);
  assertEquals(got.length, TEXTS.length);
  got.forEach((v, i) => assertClose(v, ref[i], `text ${i}`));
});

Deno.test("bert: pooling overrides mean and none equal the tool; raw vectors too", async () => {
  await using mean = await loadEmbedder(bertPath, { pooling: "mean", threads: THREADS });
  const refMean = await reference(bertPath, TEXTS, { normalize: -1, pooling: "mean" });
  const gotMean = await mean.embed(TEXTS, { normalize: "none" });
  gotMean.forEach((v, i) => assertClose(v, refMean[i], `mean ${i}`));

  await using none = await loadEmbedder(bertPath, { pooling: "none", threads: THREADS });
  const refTokens = await reference(bertPath, TEXTS, { normalize: 2, pooling: "none" });
  const perText = await none.embedTokens(TEXTS, { normalize: "l2" });
  const flat = perText.flat();
  assertEquals(flat.length, refTokens.length, "one vector per token of every text");
  assertEquals(perText.map((t) => t.length), perText.tokenCounts);
  flat.forEach((v, i) => assertClose(v, refTokens[i], `token ${i}`));
  await assertRejects(() => none.embed(["x"]), LoupeError, "use embedTokens");
  await assertRejects(() => bert.embedTokens(["x"]), LoupeError, 'pooling "none"');
});

Deno.test("decoder: vectors equal the tool (pooling last from llama.pooling_type, and mean)", async () => {
  assertEquals(decoder.info.pooling, "last");
  assertEquals(decoder.info.arch, "llama");
  assert(!decoder.info.encoder, "a decoder keeps a KV cache");
  const ref = await reference(decoderPath, TEXTS, { normalize: 2 });
  const got = await decoder.embed(TEXTS);
  got.forEach((v, i) => assertClose(v, ref[i], `text ${i}`));
  await using mean = await loadEmbedder(decoderPath, { pooling: "mean", threads: THREADS });
  const refMean = await reference(decoderPath, TEXTS, { normalize: 2, pooling: "mean" });
  (await mean.embed(TEXTS)).forEach((v, i) => assertClose(v, refMean[i], `mean ${i}`));
});

Deno.test("rerank: scores equal the tool's rank pooling output", async () => {
  await using reranker = await loadEmbedder(rerankPath, { threads: THREADS });
  assertEquals(reranker.info.pooling, "rank");
  const query = "what is a panda?";
  const docs = ["hi", "The giant panda is a bear native to China.", "pandas eat bamboo", ""];
  const ref = await reference(rerankPath, docs.map((d) => `${query}\t${d}`), { normalize: -1 });
  const scores = await reranker.rerank(query, docs);
  assertEquals(scores.length, docs.length);
  assertClose(scores, ref.map((r) => r[0]), "scores");
  assertEquals(scores.outputs.map((o) => o.length), docs.map(() => 1));
  assertEquals(scores.timeline.kind, "rerank");
  await assertRejects(() => reranker.embed(["x"]), LoupeError, "use rerank");
  await assertRejects(() => bert.rerank("q", ["d"]), LoupeError, 'not "rank"');
  assertEquals(Array.from(await reranker.rerank(query, [])), []);
});

/** 64 texts of mixed lengths (1 to ~60 words), deterministic. */
function mixedTexts(): string[] {
  const words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore"
    .split(" ");
  return Array.from({ length: 64 }, (_, i) => {
    const n = 1 + ((i * 37) % 61);
    return Array.from({ length: n }, (_, k) => words[(i + k * 7) % words.length]).join(" ");
  });
}

for (const [name, path] of [["bert", bertPath], ["decoder", decoderPath]]) {
  Deno.test(`${name}: a batch of 64 mixed texts equals 64 single calls`, async () => {
    // One thread: 64 small graphs stay quick on a busy machine (the threads count does not
    // change the results). Exact attention: packing must not change the arithmetic beyond
    // summation order.
    await using exact = await loadEmbedder(path, { flashAttn: "off", threads: 1 });
    // The default (flash attention where the device has it) rounds K and V to F16 in kernels
    // that differ with the batch's size: the same vectors up to that rounding.
    await using auto = await loadEmbedder(path, { threads: 1 });
    const texts = mixedTexts();
    for (const [emb, tol] of [[exact, 1e-4], [auto, 1e-3]] as const) {
      const batch = await emb.embed(texts);
      const encode = batch.timeline.stage("encode")!;
      const tokens = batch.tokenCounts.reduce((a, b) => a + b, 0);
      assertEquals(encode.tokens, tokens);
      assert(encode.graphs < texts.length / 4, `packed into ${encode.graphs} graphs`);
      assert(encode.graphs >= Math.ceil(tokens / emb.info.batchSize), "no batch exceeds batchSize");
      for (const [i, t] of texts.entries()) {
        const one = await emb.embed([t]);
        assertEquals(one.timeline.stage("encode")!.graphs, 1);
        assertEquals(one.tokenCounts, [batch.tokenCounts[i]]);
        assertClose(one[0], batch[i], `text ${i}`, tol);
        assert(cosine(one[0], batch[i]) > 0.99999, `text ${i}: cosine ${cosine(one[0], batch[i])}`);
      }
      // A smaller batch size per call packs into more graphs with the same vectors.
      const small = await emb.embed(texts, { batchSize: 64 });
      assert(small.timeline.stage("encode")!.graphs > encode.graphs);
      small.forEach((v, i) => assertClose(v, batch[i], `small batch ${i}`, tol));
    }
  });
}

Deno.test("loading an embedding model as a chat model, or the reverse, names what the file is", async () => {
  for (
    const [path, says] of [
      [bertPath, "it is an embedding model (bert, pooling cls); use loadEmbedder"],
      [rerankPath, "it is a reranking model (bert, pooling rank); use loadEmbedder"],
      [decoderPath, "it is an embedding model (llama, pooling last); use loadEmbedder"],
    ]
  ) {
    const e = await assertRejects(() => loadModel(path), LoupeError, says);
    assertEquals(e.code, "WRONG_KIND");
    assert(e.message.startsWith(`Cannot load model "${path}": `));
  }
  const e = await assertRejects(() => loadEmbedder(tinyPath), LoupeError, "text generation model (llama)");
  assertEquals(e.code, "WRONG_KIND");
  assert(e.message.includes("use loadModel"));
  // A vocabulary-only load of a BERT file is still fine (tokenizer use).
  await using vocab = await loadModel(bertPath, { vocabOnly: true });
  assertEquals(vocab.tokenize("hello world").length, 4);
  // Asking for a pooling embeds with a generation model on purpose.
  await using forced = await loadEmbedder(tinyPath, { pooling: "mean", threads: THREADS });
  const [v] = await forced.embed(["hello"]);
  assertEquals(v.length, forced.info.dimensions);
});

Deno.test("bad input: empty list, empty string, NUL, lone surrogates, non-strings", async () => {
  const empty = await bert.embed([]);
  assertEquals(empty.length, 0);
  assertEquals(empty.timeline.stage("encode")!.graphs, 0);

  const [e] = await bert.embed([""]);
  assertEquals((await bert.embed([""])).tokenCounts, [2], "[CLS] [SEP]");
  assertEquals(e.length, 64);
  assert(Math.abs(Math.hypot(...e) - 1) < 1e-5, "a unit vector");

  const nulls = await bert.embed(["alpha\0beta", "alpha", "alphabeta"]);
  const [nul, a, joined] = nulls;
  assert(nul.every(Number.isFinite));
  assert(cosine(nul, a) < 0.9999, "the text after a NUL is not dropped");
  // WordPiece removes control characters, NUL included, before splitting words.
  assertEquals(nulls.tokenCounts[0], nulls.tokenCounts[2]);
  assertClose(nul, joined, "NUL removed");

  const [lone, replaced] = await bert.embed(["x\uD800y", "x\uFFFDy"]);
  assertClose(lone, replaced, "a lone surrogate becomes U+FFFD");

  await assertRejects(() => bert.embed("text" as never), LoupeError, "must be an array");
  await assertRejects(() => bert.embed(["ok", 5 as never]), LoupeError, "text 1 must be a string, not 5");
  await assertRejects(() => bert.embed(["x"], { normalize: "l3" as never }), LoupeError, "normalize");
  await assertRejects(() => bert.embed(["x"], { batchSize: 0 }), LoupeError, "batchSize");
  const noSpecial = await assertRejects(() => bert.embed([""], { addSpecial: false }), LoupeError, "text 0 is empty");
  assertEquals(noSpecial.code, "INVALID_ARGUMENT");
  assertEquals((await bert.embed(["still fine"])).length, 1, "the embedder stays usable");
});

Deno.test("a text longer than the context is a typed error naming it, or cut with truncate", async () => {
  const long = "word ".repeat(600);
  const e = await assertRejects(
    () => bert.embed(["short", long]),
    LoupeError,
    `text 1 ("word word`,
  );
  assertEquals(e.code, "CONTEXT_OVERFLOW");
  assert(e.message.includes("has 602 tokens but the embedder takes at most 512"), e.message);
  const cut = await bert.embed(["short", long], { truncate: true });
  assertEquals(cut.truncated, [false, true]);
  assertEquals(cut.tokenCounts[1], 512);
  // Cutting keeps the closing [SEP]: the same vector as 510 words given whole.
  const [whole] = await bert.embed(["word ".repeat(510)]);
  assertClose(cut[1], whole, "truncated");
  await using reranker = await loadEmbedder(rerankPath, { threads: THREADS });
  const pair = await assertRejects(() => reranker.rerank("q", ["ok", long]), LoupeError, "text 1");
  assertEquals(pair.code, "CONTEXT_OVERFLOW");
  const [, cutPair] = await reranker.rerank("q", ["ok", long], { truncate: true });
  // [CLS] q [SEP] + 508 words + [SEP] = 512 tokens
  const [wholePair] = await reranker.rerank("q", ["word ".repeat(508)]);
  assertClose([cutPair], [wholePair], "a cut pair keeps its closing [SEP]");
});

Deno.test("a context smaller than the sequence limit (256) loads and embeds, one text per token at most", async () => {
  // llama.cpp asserts (aborting the process) when a context reserves more sequences than it has
  // tokens; loupe caps the sequences per batch at the context size.
  const texts = ["one", "two words", "three words here", "four", "five", "six"];
  const reference = await bert.embed(texts);
  for (const contextSize of [1, 4, 64]) {
    await using small = await loadEmbedder(bertPath, { threads: THREADS, contextSize });
    assertEquals(small.info.maxSequences, contextSize);
    const got = await small.embed(texts, { truncate: true });
    assertEquals(got.length, texts.length);
    // Every text fits in 64 tokens: the same vectors as the default context gives.
    if (contextSize === 64) got.forEach((v, i) => assertClose(v, reference[i], `text ${i}, contextSize 64`));
  }
});

Deno.test("normalisation options and cosine", async () => {
  const [raw] = await bert.embed(["normalise me"], { normalize: "none" });
  const [l2] = await bert.embed(["normalise me"]);
  const [max] = await bert.embed(["normalise me"], { normalize: "max" });
  const [p1] = await bert.embed(["normalise me"], { normalize: 1 });
  const norm = Math.hypot(...raw);
  assert(Math.abs(norm - 1) > 1e-3, "raw vectors are not unit length");
  assertClose(l2, raw.map((x) => x / norm), "l2", 1e-6);
  assertClose([Math.max(...max.map(Math.abs))], [1], "max", 1e-6);
  assertClose([p1.reduce((s, x) => s + Math.abs(x), 0)], [1], "p = 1", 1e-5);
  assertClose([cosine(raw, l2)], [1], "cosine ignores length", 1e-6);
  const [other] = await bert.embed(["something else entirely"]);
  const dot = l2.reduce((s, x, i) => s + x * other[i], 0);
  assertClose([cosine(l2, other)], [dot], "cosine of unit vectors is their dot product", 1e-6);
  assertThrows(() => cosine(l2, new Float32Array(3)), LoupeError, "lengths differ");
});

Deno.test("the timeline measures tokenize and encode with devices; requireDevice", async () => {
  const r = await bert.embed(TEXTS);
  const t = r.timeline;
  assertEquals(t.kind, "embed");
  assertEquals(t.stages.map((s) => s.name), ["tokenize", "encode"]);
  assertEquals(t.stage("tokenize")!.tokens, r.tokenCounts.reduce((a, b) => a + b, 0));
  const encode = t.stage("encode")!;
  assertEquals(encode.graphs, 1, "five short texts make one batch");
  const used = t.devicesUsed("encode");
  assertEquals(used.length, 1);
  const dev = encode.devices[used[0]];
  // 2 layers × 6 matrix multiplications (q, k, v, output, up, down) at least.
  assert(dev.ops.MUL_MAT >= 12, `MUL_MAT ${dev.ops.MUL_MAT}`);
  assert(dev.firstHeavy !== null);
  if (hasGpu) {
    // Embedding models go to the GPU by default.
    assert(used[0] !== "CPU", `encode ran on ${used[0]}`);
    await bert.embed(["x"], { requireDevice: "gpu" });
  } else {
    assertEquals(used, ["CPU"]);
    assertEquals(bert.info.gpuLayers, 0);
    await bert.embed(["x"], { requireDevice: "cpu" });
    const pe = await assertRejects(() => bert.embed(["x"], { requireDevice: "gpu" }), PlacementError);
    assertEquals([pe.stage, pe.device], ["encode", "CPU"]);
    const e = await assertRejects(() => loadEmbedder(bertPath, { requireDevice: "gpu" }), LoupeError);
    assertEquals(e.code, "BACKEND_UNAVAILABLE");
  }
  assert(bert.loadTimeline.weights[hasGpu ? used[0] : "CPU"] > 0, "weights per device");
});

Deno.test("abort; close is idempotent; use after close and a queued call reject with CLOSED", async () => {
  const emb = await loadEmbedder(bertPath, { threads: THREADS });
  const pre = new AbortController();
  pre.abort();
  const ab = await assertRejects(() => emb.embed(["x"], { signal: pre.signal }), LoupeError, "aborted");
  assertEquals(ab.code, "ABORTED");
  // A signal that fires once the run is prepared: the native run stops at its first batch.
  const firesOnListen = {
    aborted: false,
    addEventListener: (_: string, listener: () => void) => listener(),
    removeEventListener: () => {},
  } as unknown as AbortSignal;
  const stopped = await assertRejects(
    () => emb.embed(mixedTexts(), { signal: firesOnListen, batchSize: 16 }),
    LoupeError,
    "aborted",
  );
  assertEquals(stopped.code, "ABORTED");
  assertEquals((await emb.embed(["after an abort"])).length, 1, "the next call runs");
  const queued = emb.embed(mixedTexts());
  emb.close();
  emb.close();
  const e = await assertRejects(() => queued, LoupeError, "closed");
  assertEquals(e.code, "CLOSED");
  await assertRejects(() => emb.embed(["x"]), LoupeError, "closed");
  await emb.closeAsync();
  assert(emb.closed);
});

Deno.test("load options are checked: pooling, sizes, missing file", async () => {
  const p = await assertRejects(() => loadEmbedder(bertPath, { pooling: "max" as never }), LoupeError, "pooling");
  assertEquals(p.code, "INVALID_ARGUMENT");
  await assertRejects(() => loadEmbedder(bertPath, { contextSize: -1 }), LoupeError, "contextSize");
  const t = await assertRejects(
    () => loadEmbedder(bertPath, { threads: navigator.hardwareConcurrency + 1 }),
    LoupeError,
    "threads",
  );
  assertEquals(t.code, "INVALID_ARGUMENT");
  // Past the training context: a typed error (1e9 tokens per batch had the kernel kill the process).
  const big = await assertRejects(() => loadEmbedder(bertPath, { contextSize: 1e9 }), LoupeError, "training context");
  assertEquals(big.code, "INVALID_ARGUMENT");
  const nf = await assertRejects(() => loadEmbedder("/nonexistent/model.gguf"), LoupeError, "no such file");
  assertEquals(nf.code, "NOT_FOUND");
  await using small = await loadEmbedder(bertPath, { contextSize: 64, batchSize: 32, maxSequences: 4 });
  assertEquals([small.info.maxTokens, small.info.batchSize, small.info.maxSequences], [64, 32, 4]);
  const r = await small.embed(TEXTS.concat(TEXTS));
  assert(r.timeline.stage("encode")!.graphs >= 3, "at most 4 texts per batch");
});

globalThis.addEventListener("unload", () => {
  bert.close();
  decoder.close();
});
