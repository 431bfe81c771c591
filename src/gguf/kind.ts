/**
 * What kind of model a GGUF file holds, from its header alone: a text generation model, an
 * embedding model or a reranker. `loadModel` and `loadEmbedder` use it to refuse the wrong
 * kind with a clear error instead of failing deep inside the engine (an embedding model has
 * no output head for generation; a generation model has no pooling).
 *
 * @module
 */
import type { GGUFFile } from "./gguf.ts";

/** How an embedding context pools token vectors into one result per text. */
export type Pooling = "none" | "mean" | "cls" | "last" | "rank";

/** The kinds {@linkcode modelKind} tells apart. */
export type ModelKindName = "generation" | "embedding" | "rerank";

/** What {@linkcode modelKind} found. */
export interface ModelKind {
  /** "embedding" (encoder architecture, or pooling metadata), "rerank" (rank pooling), else "generation". */
  kind: ModelKindName;
  /** `general.architecture`, e.g. "bert", "llama". */
  arch: string;
  /** The pooling the file asks for (`<arch>.pooling_type`), or null when it names none. */
  pooling: Pooling | null;
  /** Whether the architecture is an encoder that only makes embeddings (BERT and its relatives). */
  encoder: boolean;
}

/** Architectures llama.cpp runs only as encoders for embeddings (no KV cache, no generation). */
export const EMBEDDING_ARCHITECTURES: ReadonlySet<string> = new Set([
  "bert",
  "modern-bert",
  "nomic-bert",
  "nomic-bert-moe",
  "neo-bert",
  "jina-bert-v2",
  "jina-bert-v3",
  "eurobert",
  "gemma-embedding",
]);

/** llama.cpp's `enum llama_pooling_type` values, by number. */
const POOLING_BY_NUMBER: Record<number, Pooling> = { 0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank" };

/** Reads the kind of model from a parsed GGUF header. */
export function modelKind(file: GGUFFile): ModelKind {
  const archValue = file.kv.get("general.architecture");
  const arch = archValue?.type === 8 ? archValue.value : "";
  const poolingValue = file.kv.get(`${arch}.pooling_type`);
  let pooling: Pooling | null = null;
  if (poolingValue && poolingValue.type !== 9 && typeof poolingValue.value === "number") {
    pooling = POOLING_BY_NUMBER[poolingValue.value] ?? null;
  }
  const encoder = EMBEDDING_ARCHITECTURES.has(arch);
  const kind: ModelKindName = pooling === "rank" ? "rerank" : encoder || pooling !== null ? "embedding" : "generation";
  return { kind, arch, pooling, encoder };
}

/** "an embedding model (bert)", "a reranking model (bert, pooling rank)", "a text generation model (llama)". */
export function describeKind(k: ModelKind): string {
  const detail = k.pooling
    ? `${k.arch || "unknown architecture"}, pooling ${k.pooling}`
    : k.arch || "unknown architecture";
  if (k.kind === "rerank") return `a reranking model (${detail})`;
  if (k.kind === "embedding") return `an embedding model (${detail})`;
  return `a text generation model (${detail})`;
}
