import {
  CHATML_TEMPLATE,
  ensureFixture,
  ensureFixtures,
  FIXTURE_PRESETS,
  fixturePaths,
  makeTextModel,
  resolveTextModelOptions,
  sha256File,
  textModelParamCount,
  textModelTensors,
} from "../../src/fixtures/text.ts";
import { decodeFloatTensor, GGMLType, readGGUF, readGGUFFile, tensorData } from "../../src/gguf/gguf.ts";
import { ensureSource } from "../../native/build/engine.ts";

const SRC_DIR = await ensureSource(false);
const VOCAB_DIR = `${SRC_DIR}/models`;
const VOCAB = `${VOCAB_DIR}/ggml-vocab-llama-spm.gguf`;

function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new Error(msg);
}

function assertEquals<T>(actual: T, expected: T, msg?: string) {
  const a = Deno.inspect(actual, { depth: 5 });
  const e = Deno.inspect(expected, { depth: 5 });
  if (a !== e) {
    throw new Error(
      `${msg ?? "values differ"}\n  actual:   ${a}\n  expected: ${e}`,
    );
  }
}

async function withTempDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "loupe_fixtures_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function vocabTest(name: string, fn: () => Promise<void>) {
  Deno.test({ name, fn });
}

Deno.test("fixtures: parameter counts and defaults", () => {
  const o = resolveTextModelOptions({ vocabPath: "x" });
  assertEquals(
    [o.nEmbd, o.nLayer, o.nHead, o.nHeadKv, o.nFf, o.nCtxTrain, o.type, o.seed],
    [64, 2, 4, 4, 176, 2048, "f32", 1],
  );
  assertEquals(o.chatTemplate, CHATML_TEMPLATE);
  // tiny: 2 × 32000 × 64 embeddings/output + 2 layers.
  const tinyLayer = 4 * 64 * 64 + 3 * 64 * 176 + 2 * 64;
  assertEquals(
    textModelParamCount(o, 32000),
    2 * 32000 * 64 + 2 * tinyLayer + 64,
  );
  // bench: ≈58.5M parameters.
  const bench = resolveTextModelOptions({ vocabPath: "x", ...FIXTURE_PRESETS.bench });
  assertEquals(textModelParamCount(bench, 32000), 58_466_816);
  // GQA shapes.
  const gqa = textModelTensors(
    resolveTextModelOptions({ vocabPath: "x", nHead: 4, nHeadKv: 2 }),
    100,
  );
  const byName = new Map(gqa.map((t) => [t.name, t.dims]));
  assertEquals(byName.get("blk.0.attn_q.weight"), [64, 64]);
  assertEquals(byName.get("blk.0.attn_k.weight"), [64, 32]);
  assertEquals(byName.get("blk.0.attn_v.weight"), [64, 32]);
  assertEquals(byName.get("blk.1.ffn_down.weight"), [176, 64]);
  assertEquals(byName.get("token_embd.weight"), [64, 100]);
  for (
    const bad of [
      { nHead: 5 },
      { nHead: 4, nHeadKv: 3 },
      { nEmbd: 0 },
      { seed: -1 },
      { seed: 2 ** 32 },
      { type: "q4" as "f32" },
    ]
  ) {
    let threw = false;
    try {
      resolveTextModelOptions({ vocabPath: "x", ...bad });
    } catch {
      threw = true;
    }
    assert(threw, `accepted ${JSON.stringify(bad)}`);
  }
});

vocabTest("fixtures: a tiny model has llama's keys, tensors and the vocab's tokenizer", async () => {
  await withTempDir(async (dir) => {
    const m = await makeTextModel(`${dir}/tiny.gguf`, {
      vocabPath: VOCAB,
      nHeadKv: 2,
      name: "test-tiny",
    });
    const bytes = await Deno.readFile(m.path);
    const file = readGGUF(bytes);
    const vocab = await readGGUFFile(VOCAB);
    const kv = (k: string) => file.kv.get(k);

    assertEquals(m.nVocab, 32000);
    assertEquals(m.fileSize, bytes.length);
    assertEquals(m.sha256, await sha256File(m.path));
    assertEquals(kv("general.architecture"), { type: 8, value: "llama" });
    assertEquals(kv("general.name"), { type: 8, value: "test-tiny" });
    assertEquals(kv("general.file_type"), { type: 4, value: 0 });
    assertEquals(kv("llama.context_length"), { type: 4, value: 2048 });
    assertEquals(kv("llama.embedding_length"), { type: 4, value: 64 });
    assertEquals(kv("llama.block_count"), { type: 4, value: 2 });
    assertEquals(kv("llama.feed_forward_length"), { type: 4, value: 176 });
    assertEquals(kv("llama.attention.head_count"), { type: 4, value: 4 });
    assertEquals(kv("llama.attention.head_count_kv"), { type: 4, value: 2 });
    assertEquals(kv("llama.rope.dimension_count"), { type: 4, value: 16 });
    assertEquals(kv("llama.vocab_size"), { type: 4, value: 32000 });
    assertEquals(kv("llama.attention.layer_norm_rms_epsilon"), {
      type: 6,
      value: Math.fround(1e-5),
    });
    assertEquals(kv("tokenizer.chat_template"), {
      type: 8,
      value: CHATML_TEMPLATE,
    });
    // Every tokenizer key is copied with its type.
    for (const [k, v] of vocab.kv) {
      if (k.startsWith("tokenizer.")) assertEquals(kv(k), v, k);
    }
    assertEquals(kv("tokenizer.ggml.token_type")?.type, 9);

    // Tensors: names, shapes, types, parameter count.
    const expected = textModelTensors(m.options, 32000);
    assertEquals(
      file.tensors.map((t) => [t.name, t.dims, t.type]),
      expected.map((t) => [t.name, t.dims, GGMLType.F32]),
    );
    assertEquals(file.tensors.length, 3 + 9 * 2);
    assertEquals(
      file.tensors.reduce((n, t) => n + t.nElements, 0),
      m.nParams,
    );

    // Weight statistics: matrices ≈ N(0, 1/fan_in), norms ≈ 1.
    const stats = (name: string) => {
      const t = file.tensors.find((x) => x.name === name)!;
      const v = decodeFloatTensor(tensorData(bytes, file, t), t.type);
      let s = 0, s2 = 0;
      for (const x of v) {
        s += x;
        s2 += x * x;
      }
      const mean = s / v.length;
      return { mean, std: Math.sqrt(s2 / v.length - mean * mean), v };
    };
    const q = stats("blk.0.attn_q.weight");
    assert(Math.abs(q.mean) < 0.01, `attn_q mean ${q.mean}`);
    assert(Math.abs(q.std - 1 / 8) < 0.01, `attn_q std ${q.std}`);
    const down = stats("blk.1.ffn_down.weight");
    assert(Math.abs(down.std - 1 / Math.sqrt(176)) < 0.01, `ffn_down std ${down.std}`);
    const emb = stats("token_embd.weight");
    assert(Math.abs(emb.std - 1) < 0.01, `token_embd std ${emb.std}`);
    const norm = stats("blk.0.attn_norm.weight");
    assert(Math.abs(norm.mean - 1) < 0.03, `norm mean ${norm.mean}`);
    assert(norm.v.every((x) => x > 0.7 && x < 1.3), "norm range");
    // Different tensors get different streams.
    const k = stats("blk.0.attn_k.weight");
    assert(k.v[0] !== q.v[0] || k.v[1] !== q.v[1], "tensors share a stream");
  });
});

vocabTest("fixtures: same seed gives identical bytes, another seed differs", async () => {
  await withTempDir(async (dir) => {
    const a = await makeTextModel(`${dir}/a.gguf`, { vocabPath: VOCAB });
    const b = await makeTextModel(`${dir}/b.gguf`, { vocabPath: VOCAB });
    const c = await makeTextModel(`${dir}/c.gguf`, { vocabPath: VOCAB, seed: 2 });
    assertEquals(a.sha256, b.sha256);
    assertEquals(
      await Deno.readFile(a.path),
      await Deno.readFile(b.path),
    );
    assert(a.sha256 !== c.sha256, "seed 2 gave the same file");
    assertEquals(a.fileSize, c.fileSize);
  });
});

vocabTest("fixtures: f16 models keep norms in F32", async () => {
  await withTempDir(async (dir) => {
    const m = await makeTextModel(`${dir}/h.gguf`, { vocabPath: VOCAB, type: "f16" });
    const f32 = await makeTextModel(`${dir}/s.gguf`, { vocabPath: VOCAB });
    const bytes = await Deno.readFile(m.path);
    const file = readGGUF(bytes);
    assertEquals(file.kv.get("general.file_type"), { type: 4, value: 1 });
    for (const t of file.tensors) {
      const want = t.name.endsWith("_norm.weight") ? GGMLType.F32 : GGMLType.F16;
      assertEquals(t.type, want, t.name);
    }
    // The f16 weights are the f32 weights rounded.
    const f32Bytes = await Deno.readFile(f32.path);
    const f32File = readGGUF(f32Bytes);
    const h = decodeFloatTensor(tensorData(bytes, file, "blk.0.attn_v.weight"), GGMLType.F16);
    const s = decodeFloatTensor(tensorData(f32Bytes, f32File, "blk.0.attn_v.weight"), GGMLType.F32);
    assertEquals(h.length, s.length);
    for (let i = 0; i < h.length; i++) {
      assert(Math.abs(h[i] - s[i]) <= Math.abs(s[i]) * 2 ** -11 + 2 ** -24, `value ${i}`);
    }
  });
});

vocabTest("fixtures: ensureFixture caches by options and regenerates stale files", async () => {
  await withTempDir(async (dir) => {
    const first = await ensureFixture(dir, VOCAB_DIR, "tiny");
    assert(first.regenerated, "first call did not generate");
    assertEquals(first.path, fixturePaths(dir).tiny);
    assertEquals(first.sha256, await sha256File(first.path));
    const second = await ensureFixture(dir, VOCAB_DIR, "tiny");
    assert(!second.regenerated, "second call regenerated");
    assertEquals(second.sha256, first.sha256);
    assertEquals(second.nParams, first.nParams);

    // A changed key (as after an option change) forces regeneration.
    const metaPath = `${first.path}.json`;
    const meta = JSON.parse(await Deno.readTextFile(metaPath));
    await Deno.writeTextFile(metaPath, JSON.stringify({ ...meta, key: "old" }));
    const third = await ensureFixture(dir, VOCAB_DIR, "tiny");
    assert(third.regenerated, "stale key not regenerated");
    assertEquals(third.sha256, first.sha256);

    // A truncated or missing model file is regenerated.
    await Deno.truncate(first.path, 100);
    assert((await ensureFixture(dir, VOCAB_DIR, "tiny")).regenerated, "truncated");
    await Deno.remove(first.path);
    assert((await ensureFixture(dir, VOCAB_DIR, "tiny")).regenerated, "missing");
    assertEquals(await sha256File(first.path), first.sha256);
  });
});

vocabTest("fixtures: ensureFixtures builds the tiny and bench presets", async () => {
  await withTempDir(async (dir) => {
    const all = await ensureFixtures(`${dir}/cache`, VOCAB_DIR);
    assertEquals(all.tiny.options.type, "f32");
    assertEquals(all.bench.options.type, "f16");
    assertEquals(all.bench.nParams, 58_466_816);
    const bench = await readGGUFFile(all.bench.path);
    assertEquals(bench.kv.get("llama.embedding_length"), { type: 4, value: 512 });
    assertEquals(bench.kv.get("llama.block_count"), { type: 4, value: 8 });
    assertEquals(bench.tensors.length, 3 + 9 * 8);
    assertEquals(bench.fileSize, all.bench.fileSize);
    const again = await ensureFixtures(`${dir}/cache`, VOCAB_DIR);
    assert(!again.tiny.regenerated && !again.bench.regenerated, "regenerated");
    assert(all.tiny.key !== all.bench.key, "keys collide");
  });
});
