// The family fixtures (Qwen2-VL, Qwen2.5-VL, Gemma 3): deterministic files whose headers and
// tensors are what llama.cpp loads for each architecture and projector type, and a cache that
// keeps them. No engine: the files are read back with the project's GGUF reader.
import { join } from "node:path";
import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { type GGUFFile, readGGUFFile } from "../../src/gguf/gguf.ts";
import { ensureSource } from "../../native/build/engine.ts";
import { ensureFamily, FAMILIES, type FamilyName, makeFamily } from "../../src/fixtures/families.ts";
import {
  FIXTURE_PRESETS,
  GEMMA3_SPECIAL_TOKENS,
  GEMMA3_TEMPLATE,
  mropeSections,
  QWEN2_VL_SPECIAL_TOKENS,
  QWEN2_VL_TEMPLATE,
  resolveTextModelOptions,
  textModelKeyOptions,
  textModelTensors,
} from "../../src/fixtures/text.ts";
import {
  qwen25WindowPattern,
  qwenVlImageTokens,
  qwenVlProjectorTensors,
  resolveQwenVlProjectorOptions,
} from "../../src/fixtures/projectors/qwen2vl.ts";
import { gemma3ProjectorTensors, resolveGemma3ProjectorOptions } from "../../src/fixtures/projectors/gemma3.ts";
import type { ProjectorTensor } from "../../src/fixtures/vision.ts";

const VOCAB_DIR = join(await ensureSource(false), "models");

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "loupe-families-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A key's value (scalars and arrays alike). */
function kv(file: GGUFFile, key: string): unknown {
  const v = file.kv.get(key)?.value;
  return ArrayBuffer.isView(v) ? Array.from(v as unknown as ArrayLike<number>) : v;
}

function checkTensors(file: GGUFFile, expected: { name: string; dims: number[] }[], what: string): void {
  assertEquals(file.tensors.map((t) => t.name), expected.map((t) => t.name), `${what}: tensor names`);
  for (const [i, t] of file.tensors.entries()) assertEquals(t.dims.map(Number), expected[i].dims, `${what}: ${t.name}`);
}

/** Checks the text model: its architecture's keys, the special tokens as CONTROL, the template. */
function checkText(name: FamilyName, file: GGUFFile): void {
  const e = FAMILIES[name];
  const { vocab: _, ...rest } = e.text;
  const o = resolveTextModelOptions({ ...rest, vocabPath: "x" });
  const a = o.architecture;
  assertEquals(kv(file, "general.architecture"), a);
  assertEquals(kv(file, `${a}.embedding_length`), o.nEmbd);
  assertEquals(kv(file, `${a}.block_count`), o.nLayer);
  assertEquals(kv(file, `${a}.attention.head_count`), o.nHead);
  assertEquals(kv(file, `${a}.attention.head_count_kv`), o.nHeadKv);
  const tokens = kv(file, "tokenizer.ggml.tokens") as string[];
  const types = kv(file, "tokenizer.ggml.token_type") as number[];
  assertEquals(tokens.length, types.length);
  const special = a === "qwen2vl" ? QWEN2_VL_SPECIAL_TOKENS : GEMMA3_SPECIAL_TOKENS;
  for (const t of special) {
    const id = tokens.indexOf(t);
    assert(id >= 0, `${name}: ${t} is in the vocabulary`);
    assertEquals(types[id], 3, `${name}: ${t} is a CONTROL token`);
  }
  if (a === "qwen2vl") {
    const sections = kv(file, "qwen2vl.rope.dimension_sections") as number[];
    assertEquals(file.kv.get("qwen2vl.rope.dimension_sections")?.type, 9);
    assertEquals(sections, mropeSections(o.headDim));
    assertEquals(sections.reduce((x, y) => x + y, 0), o.headDim / 2, "M-RoPE sections cover half a head");
    assertEquals(kv(file, "tokenizer.chat_template"), QWEN2_VL_TEMPLATE);
    // the Qwen2 vocabulary has the ChatML tokens; the vision ones are appended
    assertEquals(tokens.length, 151936 + 5);
    assertEquals(tokens.slice(-5), QWEN2_VL_SPECIAL_TOKENS.slice(2));
    assert(file.tensors.some((t) => t.name === "blk.0.attn_q.bias"), "Qwen2 has q/k/v biases");
  } else {
    assertEquals(kv(file, "gemma3.attention.key_length"), o.headDim);
    assertEquals(kv(file, "gemma3.attention.value_length"), o.headDim);
    assertEquals(kv(file, "gemma3.attention.sliding_window"), o.slidingWindow);
    assertEquals(kv(file, "gemma3.attention.sliding_window_pattern"), 2);
    assertEquals(kv(file, "gemma3.rope.freq_base_swa"), 10000);
    assertEquals(kv(file, "tokenizer.ggml.add_space_prefix"), false);
    assertEquals(kv(file, "tokenizer.chat_template"), GEMMA3_TEMPLATE);
    assertEquals(tokens.length, 32000 + 4);
    assert(file.tensors.some((t) => t.name === "blk.1.post_ffw_norm.weight"), "Gemma 3 has post norms");
  }
  checkTensors(file, textModelTensors(o, tokens.length), `${name} text`);
}

/** Checks the projector: clip keys, its type's keys, and tensors whose output is the text width. */
function checkProjector(name: FamilyName, file: GGUFFile, nEmbdText: number): void {
  const e = FAMILIES[name];
  assertEquals(kv(file, "general.architecture"), "clip");
  assertEquals(kv(file, "clip.projector_type"), e.projectorType);
  assertEquals(kv(file, "clip.has_vision_encoder"), true);
  assertEquals(kv(file, "clip.vision.projection_dim"), nEmbdText);
  let expected: ProjectorTensor[];
  if (name === "gemma3") {
    const o = resolveGemma3ProjectorOptions({ ...FAMILIES.gemma3.projector.options, nEmbdText });
    expected = gemma3ProjectorTensors(o);
    assertEquals(kv(file, "clip.use_gelu"), true);
    assertEquals(kv(file, "clip.vision.projector.scale_factor"), 2);
    assertEquals(kv(file, "clip.vision.image_size"), 112);
    const proj = file.tensors.find((t) => t.name === "mm.input_projection.weight")!;
    assertEquals(proj.dims.map(Number), [nEmbdText, o.nEmbd]);
    assertEquals(proj.type, 1, "F16, as the conversion forces");
  } else {
    const options = name === "qwen2vl" ? FAMILIES.qwen2vl.projector.options : FAMILIES.qwen25vl.projector.options;
    const o = resolveQwenVlProjectorOptions({ ...options, nEmbdText });
    expected = qwenVlProjectorTensors(o);
    if (name === "qwen25vl") {
      assertEquals(kv(file, "clip.use_silu"), true);
      assertEquals(kv(file, "clip.vision.n_wa_pattern"), 2);
      assert(file.tensors.some((t) => t.name === "v.blk.0.ffn_gate.weight"), "a gated MLP");
    } else {
      assert(!file.kv.has("clip.use_silu") && !file.kv.has("clip.use_gelu"), "quick GELU");
    }
    assertEquals(file.tensors.find((t) => t.name === "mm.2.bias")!.dims.map(Number), [nEmbdText]);
  }
  checkTensors(file, expected, `${name} projector`);
}

for (const name of Object.keys(FAMILIES) as FamilyName[]) {
  Deno.test(`family ${name}: made twice, the same bytes; headers and tensors as llama.cpp loads them`, async () => {
    await withTempDir(async (dir) => {
      const out = (i: number) => ({ model: join(dir, `m${i}.gguf`), projector: join(dir, `p${i}.gguf`) });
      const a = await makeFamily(name, VOCAB_DIR, out(1));
      const b = await makeFamily(name, VOCAB_DIR, out(2));
      assertEquals(a, b, "the same SHA-256s");
      const text = await readGGUFFile(out(1).model);
      checkText(name, text);
      checkProjector(
        name,
        await readGGUFFile(out(1).projector),
        kv(text, `${kv(text, "general.architecture")}.embedding_length`) as number,
      );
    });
  });
}

Deno.test("ensureFamily caches the pair and regenerates it when a file is gone", async () => {
  await withTempDir(async (dir) => {
    const first = await ensureFamily("gemma3", VOCAB_DIR, dir);
    assertEquals([first.regenerated, first.projectorType, first.nonCausal, first.mrope], [true, "gemma3", true, false]);
    assertEquals(first.imageTokens?.(640, 480), 16);
    const again = await ensureFamily("gemma3", VOCAB_DIR, dir);
    assertEquals([again.regenerated, again.key, again.modelSha256], [false, first.key, first.modelSha256]);
    await Deno.remove(first.projector);
    const third = await ensureFamily("gemma3", VOCAB_DIR, dir);
    assertEquals([third.regenerated, third.projectorSha256], [true, first.projectorSha256]);
    await assertThrowsAsync(() => ensureFamily("nope", VOCAB_DIR, dir), "Unknown family");
  });
});

async function assertThrowsAsync(fn: () => Promise<unknown>, includes: string): Promise<void> {
  try {
    await fn();
  } catch (e) {
    assert((e as Error).message.includes(includes), (e as Error).message);
    return;
  }
  throw new Error("did not throw");
}

Deno.test("llama fixtures keep their cache keys: the new options stay out of a llama model's key", () => {
  const { vocab: _, ...tiny } = FIXTURE_PRESETS.tiny;
  const keyed = textModelKeyOptions(resolveTextModelOptions({ ...tiny, vocabPath: "x" }));
  assertEquals(Object.keys(keyed), [
    "nEmbd",
    "nLayer",
    "nHead",
    "nHeadKv",
    "nFf",
    "nCtxTrain",
    "type",
    "seed",
    "chatTemplate",
    "name",
    "rmsEps",
    "ropeFreqBase",
    "extraKv",
  ]);
  const gemma = textModelKeyOptions(resolveTextModelOptions({ vocabPath: "x", architecture: "gemma3" }));
  assertEquals([gemma.architecture, gemma.slidingWindow], ["gemma3", 512]);
});

Deno.test("Qwen-VL image tokens follow the image's size as mtmd resizes it", () => {
  // counts seen from llama-mtmd-cli with these fixtures
  assertEquals(qwenVlImageTokens(640, 488), { tokens: 391, width: 644, height: 476 });
  assertEquals(qwenVlImageTokens(200, 150).tokens, 35);
  assertEquals(qwenVlImageTokens(112, 84).tokens, 12);
  assertEquals(qwenVlImageTokens(20, 20).tokens, 9, "a small image is scaled up to at least 8 tokens");
  assert(qwenVlImageTokens(4000, 3000).tokens <= 4096, "a large one down to at most 4096");
});

Deno.test("family fixture options are checked", () => {
  assertThrows(() => resolveTextModelOptions({ vocabPath: "x", architecture: "mamba" as "llama" }), RangeError);
  assertThrows(() => resolveTextModelOptions({ vocabPath: "x", headDim: 32 }), RangeError, "headDim");
  assertThrows(() => resolveTextModelOptions({ vocabPath: "x", slidingWindow: 8 }), RangeError, "gemma3");
  assertThrows(
    () => resolveTextModelOptions({ vocabPath: "x", architecture: "qwen2vl", ropeSections: [1, 2, 3, 0] }),
    RangeError,
    "ropeSections",
  );
  assertThrows(() => resolveTextModelOptions({ vocabPath: "x", attnBias: true }), RangeError, "llama");
  assertThrows(() => qwen25WindowPattern([2, 4], 6), RangeError, "fullAttnBlocks");
  assertEquals(qwen25WindowPattern([3, 7], 8), 4);
  assertThrows(
    () => resolveQwenVlProjectorOptions({ projectorType: "qwen2vl_merger", nEmbdText: 8, nEmbd: 24, nHead: 4 }),
    RangeError,
    "multiple of 4",
  );
  assertThrows(
    () => resolveGemma3ProjectorOptions({ nEmbdText: 8, imageSize: 56, scaleFactor: 3 }),
    RangeError,
    "scaleFactor",
  );
});
