/**
 * Deterministic embedding fixture models, made by code (nothing is downloaded):
 *
 * - `bert`: a small BERT encoder (bge layout) with CLS pooling and the real WordPiece
 *   tokenizer of llama.cpp's `models/ggml-vocab-bert-bge.gguf`;
 * - `rerank`: the same encoder with rank pooling and a classification head (`cls`,
 *   `cls.output`), like bge-reranker;
 * - `decoder`: a llama-architecture decoder with `llama.pooling_type` = last (like
 *   Qwen3-Embedding), with the llama SPM tokenizer.
 *
 * Weights come from the seeded generator of src/fixtures.ts, so the same options always give a
 * byte-identical file.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { cacheDir, ensureSource } from "../native/build.ts";
import { fillNormal, makeTextModel, sha256File, Xoshiro128 } from "./fixtures.ts";
import { GGMLType, type GGUFValue, GGUFValueType, GGUFWriter, readGGUFFile } from "./gguf.ts";
import type { Pooling } from "./embed_kind.ts";

/** Bump when the bytes produced for the same options change (part of the cache key). */
export const EMBED_FIXTURE_VERSION = 1;

/** llama.cpp's `enum llama_pooling_type` numbers. */
export const POOLING_TYPE: Record<Pooling, number> = { none: 0, mean: 1, cls: 2, last: 3, rank: 4 };

/** Options of {@linkcode makeBertModel}. */
export interface BertModelOptions {
  /** A GGUF file whose `tokenizer.*` keys are copied (a WordPiece vocabulary). Required. */
  vocabPath: string;
  /** Embedding width. Default 64. */
  nEmbd?: number;
  /** Encoder blocks. Default 2. */
  nLayer?: number;
  /** Attention heads; must divide nEmbd. Default 4. */
  nHead?: number;
  /** Feed-forward width. Default 4 × nEmbd. */
  nFf?: number;
  /** Training context (rows of the position embeddings). Default 512. */
  nCtxTrain?: number;
  /** Pooling recorded as `bert.pooling_type`. Default "cls". */
  pooling?: Pooling;
  /** Classifier outputs of a rank-pooling model (with `cls` and `cls.output` tensors). Default 1. */
  nClsOut?: number;
  /** Weight seed (unsigned 32-bit). Default 1. */
  seed?: number;
  /** `general.name`. Default "loupe-bert". */
  name?: string;
  /** Storage of the matrices and embedding tables (1-D tensors and token types stay F32). Default "f32". */
  type?: "f32" | "f16";
}

/** A BERT tensor: name, shape (`ne0` first) and how its values are drawn. */
export interface TensorSpec {
  /** Tensor name, e.g. "blk.0.attn_q.weight". */
  name: string;
  /** Shape, `ne0` first. */
  dims: number[];
  /** Mean of the values. */
  mean: number;
  /** Standard deviation of the values. */
  std: number;
}

/** The tensors of a BERT model as llama.cpp's `llama_model_bert` loads them, in file order. */
export function bertTensors(
  o: Required<Omit<BertModelOptions, "vocabPath" | "name" | "seed" | "type">>,
  nVocab: number,
): TensorSpec[] {
  const { nEmbd, nLayer, nFf, nCtxTrain } = o;
  const matrix = (name: string, dims: number[]): TensorSpec => ({ name, dims, mean: 0, std: 1 / Math.sqrt(dims[0]) });
  const normW = (name: string): TensorSpec => ({ name, dims: [nEmbd], mean: 1, std: 0.05 });
  const bias = (name: string, n: number): TensorSpec => ({ name, dims: [n], mean: 0, std: 0.02 });
  const t: TensorSpec[] = [
    { name: "token_embd.weight", dims: [nEmbd, nVocab], mean: 0, std: 1 },
    { name: "token_types.weight", dims: [nEmbd, 2], mean: 0, std: 1 },
    { name: "position_embd.weight", dims: [nEmbd, nCtxTrain], mean: 0, std: 1 },
    normW("token_embd_norm.weight"),
    bias("token_embd_norm.bias", nEmbd),
  ];
  for (let i = 0; i < nLayer; i++) {
    const b = `blk.${i}.`;
    for (const p of ["attn_q", "attn_k", "attn_v", "attn_output"]) {
      t.push(matrix(`${b}${p}.weight`, [nEmbd, nEmbd]), bias(`${b}${p}.bias`, nEmbd));
    }
    t.push(
      normW(`${b}attn_output_norm.weight`),
      bias(`${b}attn_output_norm.bias`, nEmbd),
      matrix(`${b}ffn_up.weight`, [nEmbd, nFf]),
      bias(`${b}ffn_up.bias`, nFf),
      matrix(`${b}ffn_down.weight`, [nFf, nEmbd]),
      bias(`${b}ffn_down.bias`, nEmbd),
      normW(`${b}layer_output_norm.weight`),
      bias(`${b}layer_output_norm.bias`, nEmbd),
    );
  }
  if (o.pooling === "rank") {
    t.push(
      matrix("cls.weight", [nEmbd, nEmbd]),
      bias("cls.bias", nEmbd),
      { name: "cls.output.weight", dims: [nEmbd, o.nClsOut], mean: 0, std: 1 },
      bias("cls.output.bias", o.nClsOut),
    );
  }
  return t;
}

/**
 * Writes a BERT encoder GGUF with deterministic weights and the tokenizer of
 * `options.vocabPath`.
 *
 * @returns The path and the SHA-256 of the file.
 */
export async function makeBertModel(
  outPath: string,
  options: BertModelOptions,
): Promise<{ path: string; sha256: string }> {
  const nEmbd = options.nEmbd ?? 64;
  const o = {
    nEmbd,
    nLayer: options.nLayer ?? 2,
    nHead: options.nHead ?? 4,
    nFf: options.nFf ?? 4 * nEmbd,
    nCtxTrain: options.nCtxTrain ?? 512,
    pooling: options.pooling ?? "cls",
    nClsOut: options.nClsOut ?? 1,
  };
  const seed = options.seed ?? 1;
  const type = options.type ?? "f32";
  if (type !== "f32" && type !== "f16") throw new RangeError(`Invalid options: type must be "f32" or "f16"`);
  if (o.nEmbd % o.nHead !== 0) throw new RangeError(`Invalid options: nHead ${o.nHead} must divide nEmbd ${o.nEmbd}`);
  if (!(o.pooling in POOLING_TYPE)) throw new RangeError(`Invalid options: unknown pooling "${o.pooling}"`);
  const vocab = await readGGUFFile(options.vocabPath);
  const tokens = vocab.kv.get("tokenizer.ggml.tokens");
  if (tokens?.type !== GGUFValueType.ARRAY || tokens.itemType !== GGUFValueType.STRING) {
    throw new TypeError(`Invalid vocab file: ${options.vocabPath} has no tokenizer.ggml.tokens string array`);
  }
  const nVocab = tokens.value.length;
  const w = new GGUFWriter();
  w.addString("general.architecture", "bert");
  w.addString("general.name", options.name ?? "loupe-bert");
  w.addUint32("bert.context_length", o.nCtxTrain);
  w.addUint32("bert.embedding_length", o.nEmbd);
  w.addUint32("bert.feed_forward_length", o.nFf);
  w.addUint32("bert.block_count", o.nLayer);
  w.addUint32("bert.attention.head_count", o.nHead);
  w.addFloat32("bert.attention.layer_norm_epsilon", 1e-12);
  w.addBool("bert.attention.causal", false);
  w.addUint32("bert.pooling_type", POOLING_TYPE[o.pooling]);
  w.addUint32("general.file_type", type === "f16" ? 1 : 0);
  for (const [key, value] of vocab.kv) {
    if (key.startsWith("tokenizer.")) w.addKV(key, value as GGUFValue);
  }
  for (const t of bertTensors(o, nVocab)) {
    const n = t.dims.reduce((a, b) => a * b, 1);
    // ggml adds the token-type row to F32 activations directly: it stays F32, as in real conversions.
    const f16 = type === "f16" && t.dims.length > 1 && t.name !== "token_types.weight";
    const ggmlType = f16 ? GGMLType.F16 : GGMLType.F32;
    w.addTensor(t.name, t.dims, ggmlType, () => {
      const data = new Float32Array(n);
      fillNormal(data, new Xoshiro128(seed, t.name), t.mean, t.std);
      return data;
    });
  }
  await w.write(outPath);
  return { path: outPath, sha256: await sha256File(outPath) };
}

/** The embedding fixtures ("bench": a bge-small-shaped F16 encoder, 6 layers of width 384, for benchmarks). */
export type EmbedFixtureName = "bert" | "rerank" | "decoder" | "bench";

const PRESETS: Record<EmbedFixtureName, { vocab: string; options: Record<string, unknown> }> = {
  bert: { vocab: "ggml-vocab-bert-bge.gguf", options: { name: "loupe-bert-embed", pooling: "cls", seed: 1 } },
  rerank: { vocab: "ggml-vocab-bert-bge.gguf", options: { name: "loupe-bert-rerank", pooling: "rank", seed: 2 } },
  bench: {
    vocab: "ggml-vocab-bert-bge.gguf",
    options: { name: "loupe-bert-bench", pooling: "cls", seed: 4, nEmbd: 384, nLayer: 6, nHead: 12, type: "f16" },
  },
  decoder: {
    vocab: "ggml-vocab-llama-spm.gguf",
    options: { name: "loupe-decoder-embed", seed: 3, chatTemplate: null, pooling: "last" },
  },
};

/**
 * Path of an embedding fixture model in loupe's cache, made on first use (and again when its
 * options, its vocabulary or the generator change).
 *
 * @param name "bert" (CLS pooling), "rerank" (rank pooling with a classifier head),
 * "decoder" (llama architecture with last-token pooling) or "bench" (a larger F16 encoder).
 */
export async function embedFixture(name: EmbedFixtureName): Promise<string> {
  const src = await ensureSource(false);
  const preset = PRESETS[name];
  const vocabPath = `${src}/models/${preset.vocab}`;
  const dir = `${cacheDir()}/fixtures`;
  const path = `${dir}/embed-${name}.gguf`;
  const key = createHash("sha256").update(JSON.stringify({
    version: EMBED_FIXTURE_VERSION,
    name,
    options: preset.options,
    vocab: await sha256File(vocabPath),
  })).digest("hex");
  const metaPath = `${path}.json`;
  const meta = await Deno.readTextFile(metaPath).then(JSON.parse).catch(() => null);
  const stat = await Deno.stat(path).catch(() => null);
  if (meta?.key === key && stat?.isFile && stat.size === meta.size) return path;

  await Deno.mkdir(dir, { recursive: true });
  if (name === "decoder") {
    const { pooling, ...rest } = preset.options as { pooling: Pooling; name: string; seed: number; chatTemplate: null };
    await makeTextModel(path, {
      ...rest,
      vocabPath,
      extraKv: { "llama.pooling_type": { type: GGUFValueType.UINT32, value: POOLING_TYPE[pooling] } },
    });
  } else {
    await makeBertModel(path, { ...(preset.options as Omit<BertModelOptions, "vocabPath">), vocabPath });
  }
  const size = (await Deno.stat(path)).size;
  const tmp = `${metaPath}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, JSON.stringify({ key, size }) + "\n");
  await Deno.rename(tmp, metaPath);
  return path;
}
