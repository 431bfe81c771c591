// The SmolVLM (idefics3), InternVL and Ultravox fixture families and the WAV writer: deterministic
// files with the keys, tensors and vocabularies mtmd needs (no engine: the files are only read).
import { join } from "node:path";
import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { type GGUFFile, readGGUFFile } from "../../src/gguf/gguf.ts";
import { ensureSource } from "../../native/build/engine.ts";
import {
  ensureFamily,
  type FamilyFiles,
  type FamilyRecipe,
  writeFamily,
} from "../../src/fixtures/projectors/family.ts";
import type { ProjectorTensor } from "../../src/fixtures/vision.ts";
import {
  IDEFICS3_FAMILY,
  idefics3Grid,
  idefics3Tensors,
  idefics3TileTokens,
  makeIdefics3Projector,
  resolveIdefics3Options,
  SMOLVLM_ADDED_TOKENS,
  SMOLVLM_TEMPLATE,
  smolvlmProjectorOptions,
} from "../../src/fixtures/projectors/idefics3.ts";
import {
  INTERNVL_ADDED_TOKENS,
  INTERNVL_FAMILY,
  internvlProjectorOptions,
  internvlTensors,
  internvlTileTokens,
  resolveInternVLOptions,
} from "../../src/fixtures/projectors/internvl.ts";
import {
  LLAMA3_ADDED_TOKENS,
  resolveUltravoxOptions,
  ULTRAVOX_FAMILY,
  ultravoxProjectorOptions,
  ultravoxTensors,
  ultravoxWindowTokens,
} from "../../src/fixtures/projectors/ultravox.ts";
import { encodeWav, makeToneWav, readWavHeader, resolveToneOptions, toneSamples } from "../../src/fixtures/audio.ts";
import { CHATML_TEMPLATE } from "../../src/fixtures/text.ts";

const VOCAB_DIR = join(await ensureSource(false), "models");

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "loupe-families-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Writes a family twice (two directories) and checks the bytes are the same; returns the first. */
async function writeTwice(
  recipe: FamilyRecipe,
  dir: string,
): Promise<{ files: FamilyFiles; model: GGUFFile; projector: GGUFFile }> {
  const a = await writeFamily(recipe, join(dir, "a"), VOCAB_DIR);
  const b = await writeFamily(recipe, join(dir, "b"), VOCAB_DIR);
  assertEquals([b.modelSha256, b.projectorSha256], [a.modelSha256, a.projectorSha256], `${recipe.family} twice`);
  assert(a.modelSha256 !== a.projectorSha256);
  return { files: a, model: await readGGUFFile(a.model), projector: await readGGUFFile(a.projector) };
}

function kv(file: GGUFFile, key: string): unknown {
  const v = file.kv.get(key);
  return v === undefined ? undefined : v.type === 9 ? Array.from(v.value as ArrayLike<unknown>) : v.value;
}

/** The projector's tensors are `expected`, in order and shape, and its output is the text model's width. */
function checkTensors(projector: GGUFFile, expected: ProjectorTensor[], model: GGUFFile, out: string, axis: number) {
  assertEquals(projector.tensors.map((t) => t.name), expected.map((t) => t.name));
  for (const [i, t] of projector.tensors.entries()) assertEquals(t.dims.map(Number), expected[i].dims, t.name);
  const width = Number(projector.tensors.find((t) => t.name === out)!.dims[axis]);
  assertEquals(width, kv(model, "llama.embedding_length"), "the projection's output is the text model's width");
}

/** The appended tokens sit at the end of the vocabulary as control tokens. */
function checkAddedTokens(model: GGUFFile, added: readonly { text: string }[], nBase: number) {
  const tokens = kv(model, "tokenizer.ggml.tokens") as string[];
  const types = kv(model, "tokenizer.ggml.token_type") as number[];
  assertEquals(tokens.length, nBase + added.length);
  assertEquals(types.length, tokens.length);
  assertEquals(tokens.slice(nBase), added.map((t) => t.text));
  assert(types.slice(nBase).every((t) => t === 3), "control tokens");
  assertEquals(kv(model, "general.architecture"), "llama");
  assertEquals(kv(model, "llama.vocab_size"), tokens.length);
}

Deno.test("the SmolVLM family (idefics3) is deterministic, with Idefics3's keys, tensors and image tokens", async () => {
  await withTempDir(async (dir) => {
    const { files, model, projector } = await writeTwice(IDEFICS3_FAMILY, dir);
    assertEquals(
      [files.family, files.projectorType, files.modalities, files.tiles],
      ["smolvlm", "idefics3", ["image"], true],
    );
    const o = smolvlmProjectorOptions();
    assertEquals([kv(projector, "general.architecture"), kv(projector, "clip.projector_type")], ["clip", "idefics3"]);
    assertEquals([kv(projector, "clip.has_vision_encoder"), kv(projector, "clip.has_audio_encoder")], [
      true,
      undefined,
    ]);
    assertEquals(
      [
        "clip.vision.image_size",
        "clip.vision.patch_size",
        "clip.vision.projector.scale_factor",
        "clip.vision.preproc_image_size",
        "clip.use_gelu",
      ].map((k) => kv(projector, k)),
      [o.imageSize, o.patchSize, o.scaleFactor, o.longestEdge, true],
    );
    checkTensors(projector, idefics3Tensors(o), model, "mm.model.fc.weight", 1);
    // the vocabulary: StarCoder's, which has "\n\n" (mtmd looks it up before the global image), and SmolVLM's tokens
    const tokens = kv(model, "tokenizer.ggml.tokens") as string[];
    assert(tokens.includes("ĊĊ") && tokens.includes("Ċ"), "newline tokens");
    checkAddedTokens(model, SMOLVLM_ADDED_TOKENS, 49152);
    for (const t of ["<fake_token_around_image>", "<global-img>", "<row_1_col_1>", "<row_6_col_6>"]) {
      assert(tokens.includes(t), t);
    }
    assertEquals(kv(model, "tokenizer.chat_template"), SMOLVLM_TEMPLATE);
    assertEquals(tokens[kv(model, "tokenizer.ggml.eos_token_id") as number], "<end_of_utterance>");
    assertEquals(tokens[kv(model, "tokenizer.ggml.bos_token_id") as number], "<|im_start|>");
  });
});

Deno.test("idefics3 tiles: 9 tokens a tile, a grid by the longest edge (as llama-mtmd-cli counted them)", () => {
  const o = smolvlmProjectorOptions();
  assertEquals(idefics3TileTokens(o), 9);
  // llama-mtmd-cli: 640×488 and 40×40 → 4 tiles + the global image (45 tokens), 300×60 → 2 + 1 (27)
  assertEquals(idefics3Grid(640, 488, o), { cols: 2, rows: 2 });
  assertEquals(idefics3Grid(40, 40, o), { cols: 2, rows: 2 });
  assertEquals(idefics3Grid(300, 60, o), { cols: 2, rows: 1 });
  assertEquals(idefics3Grid(60, 300, o), { cols: 1, rows: 2 });
  // without a longest edge (older conversions) the grid follows the size: 40×40 → 1 × 1, 400×300 → 4 × 3 (mtmd-cli)
  const legacy = resolveIdefics3Options({ nEmbdText: 64, longestEdge: 0 });
  assertEquals(idefics3Grid(40, 40, legacy), { cols: 1, rows: 1 });
  assertEquals(idefics3Grid(400, 300, legacy), { cols: 4, rows: 3 });
  assertEquals(idefics3Grid(140, 196, legacy), { cols: 1, rows: 2 });
  assertThrows(() => resolveIdefics3Options({ nEmbdText: 8, longestEdge: -1 }), RangeError, "longestEdge");
  assertThrows(() => resolveIdefics3Options({ nEmbdText: 8, imageSize: 40 }), RangeError, "multiple of");
  assertThrows(() => resolveIdefics3Options({ nEmbdText: 8, nFf: 64 }), RangeError, "nFf");
  assertThrows(() => resolveIdefics3Options({ nEmbdText: 8, seed: -1 }), RangeError, "seed");
});

Deno.test("the InternVL family is deterministic, with InternVL's keys, tensors and image tokens", async () => {
  await withTempDir(async (dir) => {
    const { files, model, projector } = await writeTwice(INTERNVL_FAMILY, dir);
    assertEquals(
      [files.family, files.projectorType, files.modalities, files.tiles],
      ["internvl", "internvl", ["image"], true],
    );
    const o = internvlProjectorOptions();
    assertEquals([kv(projector, "general.architecture"), kv(projector, "clip.projector_type")], ["clip", "internvl"]);
    assertEquals(kv(projector, "clip.has_vision_encoder"), true);
    assertEquals(
      [
        "clip.vision.image_size",
        "clip.vision.patch_size",
        "clip.vision.projector.scale_factor",
        "clip.vision.preproc_min_tiles",
        "clip.vision.preproc_max_tiles",
      ].map((k) => kv(projector, k)),
      [112, 14, 2, 1, 6],
    );
    checkTensors(projector, internvlTensors(o), model, "mm.model.mlp.3.weight", 1);
    assertEquals(
      projector.tensors.find((t) => t.name === "v.position_embd.weight")!.dims.map(Number),
      [64, 65],
      "8 × 8 patches and the class token",
    );
    assert(projector.tensors.some((t) => t.name === "v.blk.1.ls2.weight"), "layer scales");
    checkAddedTokens(model, INTERNVL_ADDED_TOKENS, 32000);
    assertEquals(kv(model, "tokenizer.chat_template"), CHATML_TEMPLATE);
    const tokens = kv(model, "tokenizer.ggml.tokens") as string[];
    assertEquals(tokens[kv(model, "tokenizer.ggml.eos_token_id") as number], "<|im_end|>");
    assertEquals(internvlTileTokens(o), 16);
  });
  assertThrows(() => resolveInternVLOptions({ nEmbdText: 8, minTiles: 3, maxTiles: 2 }), RangeError, "minTiles");
  assertThrows(() => resolveInternVLOptions({ nEmbdText: 8, imageSize: 100 }), RangeError, "multiple of");
});

Deno.test("the Ultravox family is deterministic, with Whisper's and Ultravox's audio keys and tensors", async () => {
  await withTempDir(async (dir) => {
    const { files, model, projector } = await writeTwice(ULTRAVOX_FAMILY, dir);
    assertEquals(
      [files.family, files.projectorType, files.modalities, files.tiles],
      ["ultravox", "ultravox", ["audio"], false],
    );
    const o = ultravoxProjectorOptions();
    assertEquals([kv(projector, "general.architecture"), kv(projector, "clip.projector_type")], ["clip", "ultravox"]);
    assertEquals([kv(projector, "clip.has_audio_encoder"), kv(projector, "clip.has_vision_encoder")], [
      true,
      undefined,
    ]);
    assertEquals(
      [
        "clip.audio.embedding_length",
        "clip.audio.block_count",
        "clip.audio.num_mel_bins",
        "clip.audio.projector.stack_factor",
        "clip.audio.projection_dim",
      ].map((k) => kv(projector, k)),
      [32, 2, 128, 10, 64],
    );
    assertEquals(kv(projector, "clip.vision.image_size"), undefined, "no vision keys");
    checkTensors(projector, ultravoxTensors(o), model, "mm.a.mlp.2.weight", 1);
    const conv = projector.tensors.find((t) => t.name === "a.conv1d.1.weight")!;
    assertEquals([conv.dims.map(Number), conv.type], [[3, 128, 32], 1], "F16 convolution [kernel, mels, width]");
    assert(!projector.tensors.some((t) => t.name === "a.blk.0.attn_k.bias"), "Whisper's key projection has no bias");
    assertEquals(Number(projector.tensors.find((t) => t.name === "a.position_embd.weight")!.dims[1]), 1500);
    checkAddedTokens(model, LLAMA3_ADDED_TOKENS, 32000);
    const tokens = kv(model, "tokenizer.ggml.tokens") as string[];
    assertEquals(tokens[kv(model, "tokenizer.ggml.eos_token_id") as number], "<|eot_id|>");
    assertEquals(ultravoxWindowTokens(o), 150);
  });
  // Ultravox 0.5's own factor 8: the pinned mtmd counts 187 tokens a window but makes 188, and aborts
  assertThrows(() => resolveUltravoxOptions({ nEmbdText: 8, stackFactor: 8 }), RangeError, "must divide 1500");
  assertThrows(() => resolveUltravoxOptions({ nEmbdText: 8, nPositions: 1000 }), RangeError, "nPositions");
});

Deno.test("an idefics3 projector without a longest edge leaves clip.vision.preproc_image_size out", async () => {
  await withTempDir(async (dir) => {
    const p = await makeIdefics3Projector(join(dir, "p.gguf"), { nEmbdText: 64, longestEdge: 0 });
    const file = await readGGUFFile(p.path);
    assertEquals(kv(file, "clip.vision.preproc_image_size"), undefined);
    assertEquals(kv(file, "clip.vision.projector.scale_factor"), 2);
  });
});

Deno.test("a family in the cache is made once and found again by its key", async () => {
  await withTempDir(async (dir) => {
    const a = await ensureFamily(IDEFICS3_FAMILY, VOCAB_DIR, dir);
    const mtime = (await Deno.stat(a.model)).mtime!.getTime();
    const b = await ensureFamily(IDEFICS3_FAMILY, VOCAB_DIR, dir);
    assertEquals([a.regenerated, b.regenerated], [true, false]);
    assertEquals({ ...b, regenerated: true }, a);
    assertEquals((await Deno.stat(b.model)).mtime!.getTime(), mtime, "not written again");
    assertEquals(a.model, join(dir, "family-smolvlm.gguf"));
    assertEquals(a.projector, join(dir, "family-smolvlm-mmproj.gguf"));
    // a damaged file is made again
    await Deno.truncate(a.projector, 100);
    const c = await ensureFamily(IDEFICS3_FAMILY, VOCAB_DIR, dir);
    assertEquals(c.projectorSha256, a.projectorSha256);
    assertEquals((await Deno.stat(c.projector)).size > 100, true);
  });
});

Deno.test("the WAV writer: a RIFF/WAVE PCM header and data of the right length, the same bytes each time", () => {
  const wav = makeToneWav();
  assertEquals(wav, makeToneWav(), "deterministic");
  const ascii = (a: number, b: number) => String.fromCharCode(...wav.subarray(a, b));
  assertEquals([ascii(0, 4), ascii(8, 12), ascii(12, 16), ascii(36, 40)], ["RIFF", "WAVE", "fmt ", "data"]);
  const h = readWavHeader(wav);
  assertEquals(h, {
    format: 1,
    channels: 1,
    sampleRate: 16000,
    bitsPerSample: 16,
    dataOffset: 44,
    dataBytes: 16000,
    frames: 8000,
  });
  assertEquals(wav.length, 44 + 8000 * 2);
  assertEquals(new DataView(wav.buffer).getUint32(4, true), wav.length - 8, "RIFF size");
  // the first tone is 440 Hz: about 2 × 440 × (500 ms / 3) sign changes in its third of the clip
  const s = toneSamples();
  let crossings = 0;
  for (let i = 1; i < 2666; i++) if ((s[i - 1] < 0) !== (s[i] < 0)) crossings++;
  assert(Math.abs(crossings - 2 * 440 * 2666 / 16000) <= 3, `${crossings} sign changes`);
  const peak = s.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  assert(peak > 16000 && peak <= 16384, `peak ${peak} is half of full scale`);
  assertEquals(s[0], 0, "the fade starts at silence");
  // other lengths, rates and channels
  const short = makeToneWav({ durationMs: 250, sampleRate: 8000, tones: [300] });
  assertEquals(readWavHeader(short).frames, 2000);
  const stereo = encodeWav(new Int16Array([1, -1, 2, -2]), 22050, 2);
  assertEquals(readWavHeader(stereo), {
    format: 1,
    channels: 2,
    sampleRate: 22050,
    bitsPerSample: 16,
    dataOffset: 44,
    dataBytes: 8,
    frames: 2,
  });
  assertThrows(() => encodeWav(new Int16Array(3), 16000, 2), RangeError, "whole frames");
  assertThrows(() => resolveToneOptions({ tones: [9000] }), RangeError, "half the sample rate");
  assertThrows(() => readWavHeader(wav.subarray(0, 40)), TypeError, "RIFF size");
});
