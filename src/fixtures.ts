/**
 * Deterministic fixture models: small llama-architecture GGUF files with
 * pseudo-random weights and a real tokenizer copied from a vocab-only GGUF
 * file (such as llama.cpp's `models/ggml-vocab-llama-spm.gguf`).
 *
 * The same options always give a byte-identical file: weights come from a
 * seeded xoshiro128** generator (one independent stream per tensor) and are
 * shaped into an approximately normal distribution using only integer and
 * basic floating-point arithmetic, so no platform-dependent math functions
 * are involved.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { GGMLType, type GGUFValue, GGUFValueType, GGUFWriter, readGGUFFile } from "./gguf.ts";
import { cacheDir, ensureSource } from "../native/build.ts";

/**
 * The standard ChatML chat template; llama.cpp's
 * `llama_chat_apply_template` recognises it by its `<|im_start|>` marker.
 */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/**
 * Version of the weight generator. It is part of the fixture cache key, so
 * bump it whenever the bytes produced for the same options change.
 */
export const FIXTURE_GENERATOR_VERSION = 1;

/** Options for {@linkcode makeTextModel}. */
export interface TextModelOptions {
  /** Path of a GGUF file whose `tokenizer.*` keys are copied. Required. */
  vocabPath: string;
  /** Embedding width. Default 64. */
  nEmbd?: number;
  /** Number of transformer blocks. Default 2. */
  nLayer?: number;
  /** Number of attention heads; must divide `nEmbd`. Default 4. */
  nHead?: number;
  /** Number of key/value heads; must divide `nHead`. Default `nHead`. */
  nHeadKv?: number;
  /**
   * Feed-forward width. Default `2.75 × nEmbd` rounded up to a multiple
   * of 16.
   */
  nFf?: number;
  /** Training context length recorded in the file. Default 2048. */
  nCtxTrain?: number;
  /**
   * Storage type of the matrices. Norm weights are always F32, as in real
   * conversions. Default `"f32"`.
   */
  type?: "f32" | "f16";
  /** Seed of the weights (an unsigned 32-bit integer). Default 1. */
  seed?: number;
  /**
   * Chat template stored as `tokenizer.chat_template`. Default
   * {@linkcode CHATML_TEMPLATE}; `null` keeps the vocab file's template (if
   * any).
   */
  chatTemplate?: string | null;
  /** Model name (`general.name`). Default `"loupe-fixture"`. */
  name?: string;
  /** RMS norm epsilon. Default 1e-5. */
  rmsEps?: number;
  /** RoPE frequency base. Default 10000. */
  ropeFreqBase?: number;
  /**
   * Extra key-values, written after the architecture's own (e.g. `llama.pooling_type` for a
   * decoder embedding model). Default none.
   */
  extraKv?: Record<string, GGUFValue>;
}

/** {@linkcode TextModelOptions} with every default filled in. */
export type ResolvedTextModelOptions = Required<TextModelOptions>;

/** Result of {@linkcode makeTextModel}. */
export interface TextModel {
  /** Path of the written file. */
  path: string;
  /** Number of weights (elements of all tensors). */
  nParams: number;
  /** Hex SHA-256 of the file. */
  sha256: string;
  /** Size of the file in bytes. */
  fileSize: number;
  /** Vocabulary size (taken from the vocab file). */
  nVocab: number;
  /** The options used, with defaults filled in. */
  options: ResolvedTextModelOptions;
}

/** Shape of one tensor of a generated model. */
export interface TextModelTensor {
  /** Tensor name. */
  name: string;
  /** Shape, `ne0` first. */
  dims: number[];
  /** Whether it is a norm weight (stored as F32, values near 1). */
  norm: boolean;
}

/**
 * Fills in the defaults of {@linkcode TextModelOptions} and validates them.
 *
 * @param options The options.
 * @returns The complete options.
 * @throws {RangeError} For inconsistent dimensions or a bad seed.
 */
export function resolveTextModelOptions(
  options: TextModelOptions,
): ResolvedTextModelOptions {
  const nEmbd = options.nEmbd ?? 64;
  const nHead = options.nHead ?? 4;
  const r: ResolvedTextModelOptions = {
    vocabPath: options.vocabPath,
    nEmbd,
    nLayer: options.nLayer ?? 2,
    nHead,
    nHeadKv: options.nHeadKv ?? nHead,
    nFf: options.nFf ?? Math.ceil(nEmbd * 2.75 / 16) * 16,
    nCtxTrain: options.nCtxTrain ?? 2048,
    type: options.type ?? "f32",
    seed: options.seed ?? 1,
    chatTemplate: options.chatTemplate === undefined ? CHATML_TEMPLATE : options.chatTemplate,
    name: options.name ?? "loupe-fixture",
    rmsEps: options.rmsEps ?? 1e-5,
    ropeFreqBase: options.ropeFreqBase ?? 10000,
    extraKv: options.extraKv ?? {},
  };
  if (typeof r.vocabPath !== "string" || r.vocabPath === "") {
    throw new TypeError("Invalid options: vocabPath is required");
  }
  for (const k of ["nEmbd", "nLayer", "nHead", "nHeadKv", "nFf", "nCtxTrain"] as const) {
    if (!Number.isSafeInteger(r[k]) || r[k] <= 0) {
      throw new RangeError(`Invalid options: ${k} must be a positive integer`);
    }
  }
  if (r.nEmbd % r.nHead !== 0 || (r.nEmbd / r.nHead) % 2 !== 0) {
    throw new RangeError(
      `Invalid options: nEmbd ${r.nEmbd} must split into ${r.nHead} heads of even size`,
    );
  }
  if (r.nHead % r.nHeadKv !== 0) {
    throw new RangeError(
      `Invalid options: nHeadKv ${r.nHeadKv} must divide nHead ${r.nHead}`,
    );
  }
  if (r.type !== "f32" && r.type !== "f16") {
    throw new RangeError(`Invalid options: type must be "f32" or "f16"`);
  }
  if (!Number.isInteger(r.seed) || r.seed < 0 || r.seed > 0xffffffff) {
    throw new RangeError(
      "Invalid options: seed must be an unsigned 32-bit integer",
    );
  }
  return r;
}

/** The dimensions that determine a generated model's tensor shapes. */
export type TextModelDims = Pick<
  ResolvedTextModelOptions,
  "nEmbd" | "nLayer" | "nHead" | "nHeadKv" | "nFf"
>;

/**
 * Lists the tensors of a generated model, in file order, with llama.cpp's
 * expected shapes (`token_embd` is `[nEmbd, nVocab]`).
 *
 * @param dims Model dimensions.
 * @param nVocab Vocabulary size.
 * @returns The tensors.
 */
export function textModelTensors(dims: TextModelDims, nVocab: number): TextModelTensor[] {
  const { nEmbd, nLayer, nHead, nHeadKv, nFf } = dims;
  const headDim = nEmbd / nHead;
  const kvDim = headDim * nHeadKv;
  const t: TextModelTensor[] = [
    { name: "token_embd.weight", dims: [nEmbd, nVocab], norm: false },
  ];
  for (let i = 0; i < nLayer; i++) {
    const b = `blk.${i}.`;
    t.push(
      { name: `${b}attn_norm.weight`, dims: [nEmbd], norm: true },
      { name: `${b}attn_q.weight`, dims: [nEmbd, headDim * nHead], norm: false },
      { name: `${b}attn_k.weight`, dims: [nEmbd, kvDim], norm: false },
      { name: `${b}attn_v.weight`, dims: [nEmbd, kvDim], norm: false },
      {
        name: `${b}attn_output.weight`,
        dims: [headDim * nHead, nEmbd],
        norm: false,
      },
      { name: `${b}ffn_norm.weight`, dims: [nEmbd], norm: true },
      { name: `${b}ffn_gate.weight`, dims: [nEmbd, nFf], norm: false },
      { name: `${b}ffn_up.weight`, dims: [nEmbd, nFf], norm: false },
      { name: `${b}ffn_down.weight`, dims: [nFf, nEmbd], norm: false },
    );
  }
  t.push(
    { name: "output_norm.weight", dims: [nEmbd], norm: true },
    { name: "output.weight", dims: [nEmbd, nVocab], norm: false },
  );
  return t;
}

/**
 * Counts the weights of a generated model.
 *
 * @param dims Model dimensions.
 * @param nVocab Vocabulary size.
 * @returns The number of parameters.
 */
export function textModelParamCount(dims: TextModelDims, nVocab: number): number {
  return textModelTensors(dims, nVocab).reduce(
    (n, t) => n + t.dims.reduce((a, b) => a * b, 1),
    0,
  );
}

/**
 * Writes a llama-architecture GGUF model with deterministic pseudo-random
 * weights and the tokenizer of `options.vocabPath`.
 *
 * Matrices have weights ≈ N(0, 1/fan_in) (token embeddings ≈ N(0, 1)); norm
 * weights are 1 + N(0, 0.05²). The same options give a byte-identical file.
 *
 * @example
 * ```ts
 * const m = await makeTextModel("/tmp/tiny.gguf", {
 *   vocabPath: "llama.cpp/models/ggml-vocab-llama-spm.gguf",
 * });
 * console.log(m.nParams, m.sha256);
 * ```
 *
 * @param outPath Destination path (written atomically).
 * @param options Model options.
 * @returns The path, parameter count and SHA-256 of the file.
 */
export async function makeTextModel(
  outPath: string,
  options: TextModelOptions,
): Promise<TextModel> {
  const o = resolveTextModelOptions(options);
  const vocab = await readGGUFFile(o.vocabPath);
  const tokens = vocab.kv.get("tokenizer.ggml.tokens");
  if (
    tokens === undefined || tokens.type !== GGUFValueType.ARRAY ||
    tokens.itemType !== GGUFValueType.STRING
  ) {
    throw new TypeError(
      `Invalid vocab file: ${o.vocabPath} has no tokenizer.ggml.tokens string array`,
    );
  }
  const nVocab = tokens.value.length;
  const headDim = o.nEmbd / o.nHead;
  const wtype = o.type === "f16" ? GGMLType.F16 : GGMLType.F32;

  const w = new GGUFWriter();
  w.addString("general.architecture", "llama");
  w.addString("general.name", o.name);
  w.addUint32("llama.context_length", o.nCtxTrain);
  w.addUint32("llama.embedding_length", o.nEmbd);
  w.addUint32("llama.block_count", o.nLayer);
  w.addUint32("llama.feed_forward_length", o.nFf);
  w.addUint32("llama.rope.dimension_count", headDim);
  w.addUint32("llama.attention.head_count", o.nHead);
  w.addUint32("llama.attention.head_count_kv", o.nHeadKv);
  w.addFloat32("llama.attention.layer_norm_rms_epsilon", o.rmsEps);
  w.addFloat32("llama.rope.freq_base", o.ropeFreqBase);
  w.addUint32("llama.vocab_size", nVocab);
  // llama_ftype: 0 = ALL_F32, 1 = MOSTLY_F16.
  w.addUint32("general.file_type", o.type === "f16" ? 1 : 0);
  for (const [key, value] of Object.entries(o.extraKv)) w.addKV(key, value);
  for (const [key, value] of vocab.kv) {
    if (!key.startsWith("tokenizer.")) continue;
    if (key === "tokenizer.chat_template" && o.chatTemplate !== null) continue;
    w.addKV(key, value as GGUFValue);
  }
  if (o.chatTemplate !== null) {
    w.addString("tokenizer.chat_template", o.chatTemplate);
  }

  let nParams = 0;
  for (const t of textModelTensors(o, nVocab)) {
    const n = t.dims.reduce((a, b) => a * b, 1);
    nParams += n;
    const std = t.norm ? 0.05 : t.name === "token_embd.weight" ? 1 : 1 / Math.sqrt(t.dims[0]);
    const mean = t.norm ? 1 : 0;
    const seed = o.seed;
    w.addTensor(t.name, t.dims, t.norm ? GGMLType.F32 : wtype, () => {
      const data = new Float32Array(n);
      fillNormal(data, new Xoshiro128(seed, t.name), mean, std);
      return data;
    });
  }
  const fileSize = await w.write(outPath);
  return {
    path: outPath,
    nParams,
    sha256: await sha256File(outPath),
    fileSize,
    nVocab,
    options: o,
  };
}

/**
 * Computes the hex SHA-256 of a file, reading it in chunks.
 *
 * @param path The file.
 * @returns The lowercase hex digest.
 */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path, { read: true });
  const buf = new Uint8Array(1 << 20);
  for (;;) {
    const n = await file.read(buf);
    if (n === null) break;
    hash.update(buf.subarray(0, n));
  }
  return hash.digest("hex");
}

/** xoshiro128** seeded through splitmix32 from a seed and a stream name. */
export class Xoshiro128 {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;

  constructor(seed: number, stream: string) {
    // FNV-1a of the stream name, mixed with the seed.
    let h = 0x811c9dc5;
    for (const b of new TextEncoder().encode(stream)) {
      h = Math.imul(h ^ b, 0x01000193);
    }
    let x = (seed ^ Math.imul(h >>> 0, 0x9e3779b9)) >>> 0;
    const next = () => {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) | 0;
    };
    this.#s0 = next();
    this.#s1 = next();
    this.#s2 = next();
    this.#s3 = next();
    if ((this.#s0 | this.#s1 | this.#s2 | this.#s3) === 0) this.#s0 = 1;
  }

  /** Next unsigned 32-bit output. */
  next(): number {
    const s1 = this.#s1;
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= s1;
    this.#s1 ^= this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = rotl(this.#s3, 11);
    return r;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/**
 * Fills `out` with approximately normal values: the sum of four uniform
 * 16-bit integers (Irwin–Hall), centred and scaled to unit variance. Only
 * exact arithmetic is used, so results are identical on every platform.
 */
export function fillNormal(
  out: Float32Array,
  rng: Xoshiro128,
  mean: number,
  std: number,
): void {
  const centre = 4 * 65535 / 2;
  const scale = std / Math.sqrt((65536 * 65536 - 1) / 3);
  for (let i = 0; i < out.length; i++) {
    const a = rng.next();
    const b = rng.next();
    const s = (a & 0xffff) + (a >>> 16) + (b & 0xffff) + (b >>> 16);
    out[i] = mean + (s - centre) * scale;
  }
}

/** Options of a fixture preset (a vocab file name instead of a path). */
export type FixturePreset = Omit<TextModelOptions, "vocabPath"> & {
  /** File name of the vocab GGUF inside the vocab directory. */
  vocab: string;
};

/**
 * The fixture presets: `tiny` (default dimensions, F32) for functional
 * tests and `bench` (≈58.5M parameters, F16) for benchmarks, both with the
 * llama SPM vocabulary (32000 tokens).
 */
export const FIXTURE_PRESETS = {
  tiny: {
    vocab: "ggml-vocab-llama-spm.gguf",
    name: "loupe-tiny",
    type: "f32",
    seed: 1,
  },
  bench: {
    vocab: "ggml-vocab-llama-spm.gguf",
    name: "loupe-bench",
    nEmbd: 512,
    nLayer: 8,
    nHead: 8,
    nFf: 1408,
    type: "f16",
    seed: 1,
  },
} as const satisfies Record<string, FixturePreset>;

/** Name of a fixture preset. */
export type FixtureName = keyof typeof FIXTURE_PRESETS;

/** A fixture model on disk. */
export interface Fixture extends TextModel {
  /** Preset name. */
  name: FixtureName;
  /** Cache key (hash of generator version, options and vocab contents). */
  key: string;
  /** Whether the file was (re)generated by this call. */
  regenerated: boolean;
}

interface FixtureMeta {
  key: string;
  sha256: string;
  nParams: number;
  fileSize: number;
  nVocab: number;
}

/**
 * Returns where the fixture models live inside a cache directory.
 *
 * @param dir The cache directory.
 * @returns The model path of each preset.
 */
export function fixturePaths(dir: string): Record<FixtureName, string> {
  return {
    tiny: joinPath(dir, "tiny.gguf"),
    bench: joinPath(dir, "bench.gguf"),
  };
}

/**
 * Makes sure one fixture model exists in `dir` and matches its preset,
 * regenerating it when missing or when its options, the vocab file or the
 * generator changed. A JSON sidecar (`<name>.gguf.json`) records the cache
 * key.
 *
 * @param dir The cache directory (created if needed).
 * @param vocabDir Directory holding the vocab files (llama.cpp's `models/`).
 * @param name The preset.
 * @returns The fixture.
 */
export async function ensureFixture(
  dir: string,
  vocabDir: string,
  name: FixtureName,
): Promise<Fixture> {
  const { vocab, ...rest } = FIXTURE_PRESETS[name];
  const options = resolveTextModelOptions({
    ...rest,
    vocabPath: joinPath(vocabDir, vocab),
  });
  const { vocabPath: _, ...keyed } = options;
  const key = createHash("sha256").update(JSON.stringify({
    generator: FIXTURE_GENERATOR_VERSION,
    options: keyed,
    vocab: await sha256File(options.vocabPath),
  })).digest("hex");
  const path = fixturePaths(dir)[name];
  const metaPath = `${path}.json`;

  const meta = await readMeta(metaPath);
  if (meta?.key === key) {
    const stat = await Deno.stat(path).catch(() => null);
    if (stat?.isFile && stat.size === meta.fileSize) {
      return {
        path,
        nParams: meta.nParams,
        sha256: meta.sha256,
        fileSize: meta.fileSize,
        nVocab: meta.nVocab,
        options,
        name,
        key,
        regenerated: false,
      };
    }
  }

  await Deno.mkdir(dir, { recursive: true });
  const model = await makeTextModel(path, options);
  const newMeta: FixtureMeta = {
    key,
    sha256: model.sha256,
    nParams: model.nParams,
    fileSize: model.fileSize,
    nVocab: model.nVocab,
  };
  const tmp = `${metaPath}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, JSON.stringify(newMeta, null, 2) + "\n");
  await Deno.rename(tmp, metaPath);
  return { ...model, name, key, regenerated: true };
}

/**
 * Makes sure every fixture preset exists in `dir` (see
 * {@linkcode ensureFixture}).
 *
 * @param dir The cache directory (created if needed).
 * @param vocabDir Directory holding the vocab files (llama.cpp's `models/`).
 * @returns The fixtures by preset name.
 */
export async function ensureFixtures(
  dir: string,
  vocabDir: string,
): Promise<Record<FixtureName, Fixture>> {
  return {
    tiny: await ensureFixture(dir, vocabDir, "tiny"),
    bench: await ensureFixture(dir, vocabDir, "bench"),
  };
}

async function readMeta(path: string): Promise<FixtureMeta | null> {
  try {
    const m = JSON.parse(await Deno.readTextFile(path));
    return typeof m?.key === "string" ? m as FixtureMeta : null;
  } catch {
    return null;
  }
}

function joinPath(dir: string, file: string): string {
  return dir.endsWith("/") ? dir + file : `${dir}/${file}`;
}

/**
 * Path of a fixture model in loupe's cache, made on first use from the pinned source's
 * vocabulary (no download of weights). Notebooks and examples use it when no model is given.
 *
 * @param name The preset: "tiny" (4M parameters, F32) or "bench" (58M parameters, F16).
 * @returns The model's path.
 */
export async function fixtureModel(name: FixtureName = "tiny"): Promise<string> {
  const src = await ensureSource(false);
  return (await ensureFixture(joinPath(cacheDir(), "fixtures"), joinPath(src, "models"), name)).path;
}
