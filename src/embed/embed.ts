/**
 * Embeddings and reranking: encoder models (BERT, XLM-RoBERTa relatives such as bge-m3,
 * nomic-bert) and decoder embedding models, on the GPU by default. Many texts are packed into
 * one batch across sequences; every call returns a measured timeline (tokenize, encode) and
 * honours `requireDevice`.
 *
 * @example
 * ```ts
 * await using emb = await loadEmbedder("bge-m3.gguf", { gpuLayers: "auto" });
 * const vectors = await emb.embed(["first text", "second text"], { normalize: "l2" });
 * cosine(vectors[0], vectors[1]);
 * console.log(vectors.timeline.toString());
 * ```
 *
 * @module
 */
import { checkLoadOptions } from "../engine/load_options.ts";
import { checkOptions, checkString, type FieldRule, shown } from "../util/check.ts";
import { Resource } from "../util/resource.ts";
import { NativeEmbedder } from "../../ffi/embed.ts";
import { DISPLAY, displayable, displayOf, type MimeBundle } from "../util/presenter.ts";
import { watchLoad } from "../util/load_watch.ts";
import { engineFor } from "../engine/library.ts";
import { NativeModel } from "../../ffi/model.ts";
import { wrap } from "../util/native_error.ts";
import { describeKind, modelKind, type Pooling } from "../gguf/kind.ts";
import { assertDeviceAvailable, type Device, devices } from "../engine/engine.ts";
import { LoupeError } from "../util/errors.ts";
import { checkContextMemory } from "../util/memory.ts";
import { validateModelFile } from "../gguf/preflight.ts";
import { addDownloadStage, fetchForLoad } from "../hub/resolve.ts";
import {
  addNativeStage,
  checkPlacement,
  checkRequirement,
  type DeviceMemory,
  type NativeStage,
  Timeline,
} from "../timeline/timeline.ts";

export type { Pooling } from "../gguf/kind.ts";

/** Options of {@linkcode loadEmbedder}. */
export interface LoadEmbedderOptions {
  /** Layers to put on the GPU: a number, "all", or "auto" (all when a GPU is present; default). 0 keeps the model on the CPU. */
  gpuLayers?: number | "auto" | "all";
  /** Restrict offloading to this device, e.g. "Vulkan0" or "CUDA0". */
  device?: string;
  /**
   * How token vectors become one result per text; default: the model's own (`<arch>.pooling_type`).
   * "mean", "cls" (first token), "last" (last token), "none" (per-token vectors: use
   * {@linkcode Embedder.embedTokens}) or "rank" (a reranker's score: use {@linkcode Embedder.rerank}).
   * Giving one also lets a text generation model without pooling metadata make embeddings.
   */
  pooling?: Pooling;
  /**
   * Longest text in tokens, and the most tokens in one batch; default min(training context, 4096), at
   * most the training context. One batch is one graph, whose attention grows with the square of it: a
   * context that would not fit in free memory is a `NOT_ENOUGH_MEMORY` error, found before anything is
   * allocated.
   */
  contextSize?: number;
  /**
   * Most tokens packed into one batch (one graph); default min(contextSize, 512). Texts are
   * packed across sequences until the next one would not fit; a longer text goes alone. Bigger
   * batches are not free: attention runs over the whole batch with other texts masked out.
   */
  batchSize?: number;
  /** Most texts in one batch; default 256 (llama.cpp's limit). */
  maxSequences?: number;
  /** CPU threads; default `navigator.hardwareConcurrency`. */
  threads?: number;
  /** CPU threads for batches; default: same as `threads`. */
  threadsBatch?: number;
  /** Flash attention: "auto" (default), "on" or "off". */
  flashAttn?: "auto" | "on" | "off";
  /** Require every call's heavy ops to run on this device ("gpu", "cpu" or a name like "CUDA0"). */
  requireDevice?: string;
  /** Count graph nodes per device (default true). Turning it off leaves stages without placement. */
  measure?: boolean;
  /** Called with the load fraction in [0, 1] while loading. */
  onProgress?: (fraction: number) => void;
  /** Show a progress bar while loading: default only in a notebook; true also shows one line on a terminal. */
  progress?: boolean;
  /** Cancels the load. */
  signal?: AbortSignal;
  /** Run it in a worker process of its own, as `loadModel`'s `isolate` (README, "When the engine crashes"). */
  isolate?: boolean;
}

/**
 * How vectors are normalised: "l2" (unit length; default), "none" (raw), "max" (largest
 * absolute component becomes 1), or a number p ≥ 1 for the p-norm ("l2" is p = 2).
 */
export type Normalize = "l2" | "none" | "max" | number;

/** Options of {@linkcode Embedder.embed} and {@linkcode Embedder.embedTokens}. */
export interface EmbedOptions {
  /** Normalisation of each vector (default "l2"; per-token vectors default to "none"). */
  normalize?: Normalize;
  /**
   * Cut texts longer than the embedder takes (keeping the model's closing special tokens)
   * instead of failing with a `CONTEXT_OVERFLOW` error (default false).
   */
  truncate?: boolean;
  /** Add the model's special tokens (BOS/CLS, EOS/SEP) as it wants (default true). */
  addSpecial?: boolean;
  /** Read special tokens written in the text, e.g. "[SEP]" (default false: text is text). */
  parseSpecial?: boolean;
  /** Most tokens per batch for this call (default: the embedder's batchSize). */
  batchSize?: number;
  /** Overrides the embedder's requireDevice for this call. */
  requireDevice?: string;
  /** Cancels the call (it then rejects with code ABORTED). */
  signal?: AbortSignal;
}

/** Options of {@linkcode Embedder.rerank}. */
export type RerankOptions = Pick<EmbedOptions, "truncate" | "batchSize" | "requireDevice" | "signal">;

/** What every result carries besides its values. */
export interface CallInfo {
  /** Stages "tokenize" and "encode" with measured devices. */
  timeline: Timeline;
  /** Tokens of each text (after truncation). */
  tokenCounts: number[];
  /** Which texts were cut (only with `truncate: true`). */
  truncated: boolean[];
}

/** One vector per text, in order, with the call's timeline. */
export interface Embeddings extends Array<Float32Array>, CallInfo {}

/** Per text, one vector per token (pooling "none"), with the call's timeline. */
export interface TokenEmbeddings extends Array<Float32Array[]>, CallInfo {}

/** One score per document, in order (the classifier's first output), with the call's timeline. */
export interface RerankScores extends Array<number>, CallInfo {
  /** Every classifier output per document (models with several labels). */
  outputs: Float32Array[];
}

/** What loupe knows about a loaded embedder. */
export interface EmbedderInfo {
  /** `general.architecture`, e.g. "bert". */
  arch: string;
  /** `general.name`. */
  name: string;
  /** The engine's description, e.g. "bert 33M F16". */
  desc: string;
  /** Parameters. */
  nParams: number;
  /** Training context in tokens. */
  nCtxTrain: number;
  /** Vocabulary size. */
  nVocab: number;
  /** Pooling in use. */
  pooling: Pooling;
  /** Length of a pooled vector (and of a per-token vector). */
  dimensions: number;
  /** Classifier outputs of a rank-pooling model. */
  nClsOut: number;
  /** Classifier labels (null where the file names none). */
  clsLabels: Array<string | null>;
  /** Longest text accepted, in tokens. */
  maxTokens: number;
  /** Most tokens in one batch. */
  batchSize: number;
  /** Most texts in one batch. */
  maxSequences: number;
  /** True for encoder models (no KV cache; llama_encode). */
  encoder: boolean;
  /** Layers on a GPU (0 when none). */
  gpuLayers: number;
  /** Memory per device: weights and compute buffers. */
  memory: DeviceMemory[];
}

/** The native context's description (loupe_embed.h). */
interface NativeEmbedInfo {
  pooling: Pooling;
  nOut: number;
  nEmbdOut: number;
  nClsOut: number;
  clsLabels: Array<string | null>;
  maxTokens: number;
  nCtx: number;
  nBatch: number;
  nSeqMax: number;
  encoder: boolean;
  bos: number;
  eos: number;
  sep: number;
  addBos: boolean;
  addEos: boolean;
  addSep: boolean;
  rerankTemplate: string | null;
  memory: DeviceMemory[];
}

interface NativeModelInfo {
  desc: string;
  arch: string;
  name: string;
  nParams: number;
  nCtxTrain: number;
  nVocab: number;
  hasEncoder: boolean;
  hasDecoder: boolean;
  gpuLayers: number;
}

interface RunOutput {
  batches: number;
  sequences: number;
  stages: { encode: NativeStage };
}

/** Default most tokens per batch (see {@linkcode LoadEmbedderOptions.batchSize}). */
const DEFAULT_BATCH_TOKENS = 512;

interface Owned {
  model: NativeModel;
  embedder: NativeEmbedder | null;
}

const finalizer = new FinalizationRegistry<Owned>((o) => {
  o.embedder?.free();
  o.model.free();
});

/**
 * Loads an embedding or reranking model: encoder models (BERT, XLM-RoBERTa, nomic-bert, …)
 * and decoder models with pooling metadata, from a path or a name (`hf:owner/repo[:quant]`, an
 * `https://` URL: downloaded first, see `pull`). The file is checked first (a missing, non-GGUF or
 * corrupt file, or a text generation model, is a typed error); weights load on a worker
 * thread, on the GPU when one is present.
 *
 * @example
 * ```ts
 * await using emb = await loadEmbedder("bge-m3.gguf");
 * const [a, b] = await emb.embed(["first text", "second text"]);
 * ```
 */
export async function loadEmbedder(name: string, given?: LoadEmbedderOptions): Promise<Embedder> {
  checkString(name, "the path or name", "Cannot load model");
  const options = checkLoadOptions(given, `Cannot load model "${name}"`);
  const fetched = await fetchForLoad(name, options);
  const path = fetched?.path ?? name;
  const what = `Cannot load model "${path}"`;
  const header = await validateModelFile(path);
  const kind = modelKind(header);
  if (kind.kind === "generation" && options.pooling === undefined) {
    throw new LoupeError(
      "WRONG_KIND",
      `${what}: it is ${describeKind(kind)} without pooling metadata; use loadModel, ` +
        `or give loadEmbedder a pooling option to embed with it anyway`,
    );
  }
  const gpuLayers = options.gpuLayers === undefined || options.gpuLayers === "auto" || options.gpuLayers === "all"
    ? -1
    : options.gpuLayers;
  if (options.requireDevice) await assertDeviceAvailable(options.requireDevice);
  if (options.device) await assertDeviceAvailable(options.device);

  const t0 = performance.now();
  const threads = options.threads ?? navigator.hardwareConcurrency;
  const engine = await engineFor(options.isolate, what);
  let model: NativeModel;
  try {
    model = new NativeModel(engine.api, {
      path,
      gpuLayers,
      devices: options.device ? [options.device] : null,
      threads,
      defaultContext: false,
    }, engine.isolated);
  } catch (e) {
    void engine.isolated?.close();
    throw wrap(e, what);
  }
  const onAbort = () => model.cancel();
  if (options.signal?.aborted) model.cancel();
  options.signal?.addEventListener("abort", onAbort);
  const watch = watchLoad(path, () => model.progress(), options, what, () => model.cancel());
  let embedder: NativeEmbedder | undefined;
  let modelInfo: NativeModelInfo;
  try {
    await model.load();
    modelInfo = model.info<NativeModelInfo>();
    if (modelInfo.hasEncoder && modelInfo.hasDecoder) {
      throw new LoupeError(
        "WRONG_KIND",
        `${what}: it is an encoder-decoder model (${modelInfo.arch}), which cannot make embeddings`,
      );
    }
    if (options.contextSize !== undefined && options.contextSize > modelInfo.nCtxTrain) {
      // As llama.cpp refuses a generation context past the training context. Here each batch
      // is contextSize tokens: a huge one would not fail, the kernel would kill the process
      // while llama_batch_init and the compute buffers take memory for it.
      throw new LoupeError(
        "INVALID_ARGUMENT",
        `${what}: contextSize ${options.contextSize} is larger than the model's training context ` +
          `(${modelInfo.nCtxTrain} tokens)`,
      );
    }
    const params = {
      contextSize: options.contextSize ?? 0,
      seqMax: options.maxSequences ?? 0,
      pooling: options.pooling ?? "model",
      threads,
      threadsBatch: options.threadsBatch ?? 0,
      flashAttn: options.flashAttn ?? "auto",
      measure: options.measure ?? true,
    };
    // the context's memory, estimated before anything is taken (see src/util/memory.ts)
    await checkContextMemory(
      model,
      { ...params, kind: "embedding" },
      (n) => `Cannot create an embedding context of ${n} tokens for "${path}"`,
    );
    if (options.signal?.aborted) throw new LoupeError("ABORTED", `${what}: loading was cancelled`);
    embedder = await NativeEmbedder.create(model, params);
    await watch.done();
  } catch (e) {
    embedder?.free();
    model.free();
    if (watch.error) throw watch.error;
    const err = wrap(e, what);
    await watch.fail(err.message);
    throw ["ABORTED", "WRONG_KIND", "INVALID_ARGUMENT", "NOT_ENOUGH_MEMORY", "ENGINE_CRASHED"].includes(err.code)
      ? err
      : new LoupeError("LOAD_FAILED", err.message, { nativeMessage: err.nativeMessage, cause: e });
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
  const native = embedder.info<NativeEmbedInfo>();
  const info: EmbedderInfo = {
    arch: modelInfo.arch,
    name: modelInfo.name,
    desc: modelInfo.desc,
    nParams: modelInfo.nParams,
    nCtxTrain: modelInfo.nCtxTrain,
    nVocab: modelInfo.nVocab,
    pooling: native.pooling,
    dimensions: native.nEmbdOut,
    nClsOut: native.nClsOut,
    clsLabels: native.clsLabels,
    maxTokens: native.maxTokens,
    batchSize: Math.min(options.batchSize ?? DEFAULT_BATCH_TOKENS, native.nBatch),
    maxSequences: native.nSeqMax,
    encoder: native.encoder,
    gpuLayers: modelInfo.gpuLayers,
    memory: native.memory,
  };
  const timeline = new Timeline("load");
  if (fetched) addDownloadStage(timeline, fetched);
  timeline.add({ name: "load", wallMs: performance.now() - t0, tokens: 0, graphs: 0, devices: {} });
  timeline.memory = native.memory;
  return createEmbedder({
    path,
    owned: { model, embedder },
    info,
    native,
    timeline,
    options,
    devices: await devices(),
  });
}

/** What the embedder constructor takes (module-private: use {@linkcode loadEmbedder}). */
interface EmbedderInit {
  path: string;
  owned: Owned;
  info: EmbedderInfo;
  native: NativeEmbedInfo;
  timeline: Timeline;
  options: LoadEmbedderOptions;
  devices: Device[];
}

let createEmbedder: (init: EmbedderInit) => Embedder;

/** A loaded embedding or reranking model. Owns its native handles: close() it, or use `using`/`await using`. */
export class Embedder extends Resource {
  /** The file it came from. */
  readonly path: string;
  /** What it is and how it runs. */
  readonly info: EmbedderInfo;
  /** The load's timeline (wall time, memory per device). */
  readonly loadTimeline: Timeline;
  #owned: Owned;
  #native: NativeEmbedInfo;
  #options: LoadEmbedderOptions;
  #devices: Device[];
  #running = 0;

  static {
    createEmbedder = (init) => new Embedder(init);
  }

  private constructor(init: EmbedderInit) {
    super();
    this.path = init.path;
    this.#owned = init.owned;
    this.info = init.info;
    this.#native = init.native;
    this.loadTimeline = init.timeline;
    this.#options = init.options;
    this.#devices = init.devices;
    finalizer.register(this, init.owned, this);
  }

  /** The sentence of a CLOSED error. */
  protected closedMessage(): string {
    return `Cannot use embedder "${this.path}": it is closed`;
  }

  /** Whether it runs in a worker process of its own (`isolate: true`). */
  get isolated(): boolean {
    return this.#owned.model.isolated;
  }

  /** Whether its worker process died (`isolate: true`): every call then rejects with `ENGINE_CRASHED`. */
  get crashed(): boolean {
    return this.#owned.model.crash !== null;
  }

  /**
   * Embeds texts: one vector per text, pooled as the model (or the `pooling` load option)
   * says and normalised ("l2" by default). All texts go through in as few batches as fit.
   * An empty list gives an empty result. Lone UTF-16 surrogates become U+FFFD (as in any
   * UTF-8 encoding); NUL characters are text like any other.
   */
  embed(texts: string[], options?: EmbedOptions): Promise<Embeddings> {
    return this.#call("embed", texts, options, () => {
      if (this.info.pooling === "none" || this.info.pooling === "rank") {
        const use = this.info.pooling === "none" ? "embedTokens" : "rerank";
        throw new LoupeError(
          "INVALID_ARGUMENT",
          `Cannot embed: the embedder uses pooling "${this.info.pooling}"; use ${use}`,
        );
      }
    }, (values, counts, o) => {
      const n = this.#native.nOut;
      return counts.map((_, i) => normalized(values.slice(i * n, (i + 1) * n), o.normalize ?? "l2"));
    });
  }

  /**
   * Per-token vectors (the embedder must be loaded with pooling "none"): for each text, one
   * vector per token, normalised as `normalize` says (default "none").
   */
  embedTokens(texts: string[], options?: EmbedOptions): Promise<TokenEmbeddings> {
    return this.#call("embed", texts, options, () => {
      if (this.info.pooling !== "none") {
        throw new LoupeError(
          "INVALID_ARGUMENT",
          `Cannot embed tokens: the embedder uses pooling "${this.info.pooling}"; load it with pooling "none"`,
        );
      }
    }, (values, counts, o) => {
      const d = this.info.dimensions;
      let at = 0;
      return counts.map((n) =>
        Array.from(
          { length: n },
          () => normalized(values.slice(at * d, ++at * d), o.normalize ?? "none"),
        )
      );
    });
  }

  /**
   * Scores documents against a query with a reranking model (pooling "rank", e.g.
   * bge-reranker): one raw score per document (a logit for bge-reranker; higher is more
   * relevant). Pairs are joined as llama.cpp does: with the model's "rerank" chat template when
   * it has one, else `query [EOS] [SEP] document` with the model's special tokens.
   */
  rerank(query: string, documents: string[], options?: RerankOptions): Promise<RerankScores> {
    return this.#call("rerank", documents, options, () => {
      if (this.info.pooling !== "rank") {
        throw new LoupeError(
          "INVALID_ARGUMENT",
          `Cannot rerank: the embedder uses pooling "${this.info.pooling}", not "rank"; load a reranking model`,
        );
      }
      if (typeof query !== "string") {
        throw new LoupeError("INVALID_ARGUMENT", `Cannot rerank: the query must be a string, not ${shown(query)}`);
      }
    }, (values, counts) => {
      const n = this.#native.nOut;
      const outputs = counts.map((_, i) => values.slice(i * n, (i + 1) * n));
      return Object.assign(outputs.map((o) => o[0]), { outputs });
    }, query);
  }

  /**
   * Checks the call (CLOSED first, then the options, then `check`: what the method itself needs),
   * then tokenizes, checks lengths, runs the batches and builds the result with its timeline.
   */
  #call<R extends object>(
    kind: "embed" | "rerank",
    texts: string[],
    given: EmbedOptions | undefined,
    check: () => void,
    build: (values: Float32Array, counts: number[], options: EmbedOptions) => R,
    query?: string,
  ): Promise<R & CallInfo> {
    const what = kind === "rerank" ? "Cannot rerank" : "Cannot embed";
    let options: EmbedOptions;
    try {
      this.assertOpen();
      options = checkOptions(given, EMBED_RULES, what);
      checkRequirement(options.requireDevice, this.#devices, what);
      check();
      if (!Array.isArray(texts)) {
        throw new LoupeError(
          "INVALID_ARGUMENT",
          `${what}: the ${kind === "rerank" ? "documents" : "texts"} must be an array, not ${shown(texts)}`,
        );
      }
      texts.forEach((t, i) => {
        if (typeof t !== "string") {
          throw new LoupeError("INVALID_ARGUMENT", `${what}: text ${i} must be a string, not ${shown(t)}`);
        }
      });
    } catch (e) {
      return Promise.reject(e);
    }
    return this.serial(async () => {
      const timeline = new Timeline(kind);
      const t0 = performance.now();
      const { tokens, lengths, truncated } = this.#tokenize(texts, options, what, query);
      timeline.add({
        name: "tokenize",
        wallMs: performance.now() - t0,
        tokens: tokens.length,
        graphs: 0,
        devices: {},
      });
      const counts = Array.from(lengths);
      let values = new Float32Array(0);
      let output: RunOutput | null = null;
      if (texts.length > 0) {
        if (options.signal?.aborted) throw new LoupeError("ABORTED", `${what}: aborted`);
        const embedder = this.#owned.embedder!;
        let size: number;
        try {
          size = embedder.begin(tokens, lengths, options.batchSize ?? this.info.batchSize);
        } catch (e) {
          throw wrap(e, what);
        }
        values = new Float32Array(size);
        const onAbort = () => embedder.abort();
        options.signal?.addEventListener("abort", onAbort);
        this.#running++;
        try {
          await embedder.run(values);
          output = embedder.output<RunOutput>();
        } catch (e) {
          const err = wrap(e, what);
          if (err.code === "ABORTED" && this.closed) {
            throw new LoupeError("CLOSED", `${what}: the embedder was closed`, { cause: e });
          }
          throw err;
        } finally {
          this.#running--;
          options.signal?.removeEventListener("abort", onAbort);
        }
      }
      addNativeStage(timeline, "encode", output?.stages.encode ?? { wallUs: 0, tokens: 0, graphs: 0, devices: {} });
      timeline.memory = this.info.memory; // weights per device, shown beside the stages
      checkPlacement(timeline, options.requireDevice ?? this.#options.requireDevice, this.#devices);
      // a table and the timeline plot when it is the last expression of a notebook cell
      return displayable(Object.assign(build(values, counts, options), { timeline, tokenCounts: counts, truncated }));
    });
  }

  /** Tokens of every text (or query-document pair) back to back, with lengths; applies truncation. */
  #tokenize(
    texts: string[],
    options: EmbedOptions,
    what: string,
    query?: string,
  ): { tokens: Int32Array; lengths: Int32Array; truncated: boolean[] } {
    const native = this.#owned.model;
    const max = this.info.maxTokens;
    const addSpecial = options.addSpecial ?? true;
    // Every text (or query-document prompt) in one native call: one FFI crossing, not one per text.
    const many = (list: readonly string[], special: boolean, parse: boolean): Int32Array[] => {
      try {
        return native.tokenizeMany(list, special, parse);
      } catch (e) {
        throw wrap(e, `${what}: cannot tokenize`);
      }
    };
    const tok = (text: string, special: boolean, parse: boolean) => many([text], special, parse)[0];
    // Special tokens the tokenizer closes a text with (kept when a text is cut).
    const closing: number[] = [];
    if (this.#native.addEos && this.#native.eos >= 0) closing.push(this.#native.eos);
    if (this.#native.addSep && this.#native.sep >= 0) closing.push(this.#native.sep);
    const template = this.#native.rerankTemplate;
    let tokenized: Int32Array[];
    // How many tokens at the end of each text's tokens must survive truncation.
    let tailOf: (t: Int32Array) => number;
    if (query === undefined) {
      tokenized = many(texts, addSpecial, options.parseSpecial ?? false);
      tailOf = (t) => addSpecial ? closingLength(t, closing) : 0;
    } else if (template !== null) {
      // llama.cpp's examples/embedding: the template's text, tokenized with special tokens read.
      const fill = (text: string) => template.replaceAll("{query}", query).replaceAll("{document}", text);
      tokenized = many(texts.map(fill), true, true);
      const after = template.slice(template.lastIndexOf("{document}") + "{document}".length);
      const afterLength = tok(after.replaceAll("{query}", query), false, true).length;
      tailOf = (t) => Math.min(t.length, afterLength) + closingLength(t, closing);
    } else {
      // query [EOS] [SEP] document [EOS] [SEP], as llama.cpp joins a pair without a template.
      const queryTokens = tok(query, true, false);
      tokenized = many(texts, false, false).map((doc) => {
        const t = new Int32Array(queryTokens.length + doc.length + closing.length);
        t.set(queryTokens);
        t.set(doc, queryTokens.length);
        t.set(closing, queryTokens.length + doc.length);
        return t;
      });
      tailOf = () => closing.length;
    }
    const seqs: Int32Array[] = [];
    const truncated: boolean[] = [];
    for (const [i, text] of texts.entries()) {
      let t = tokenized[i];
      let tail = tailOf(t);
      if (t.length === 0) {
        throw new LoupeError("INVALID_ARGUMENT", `${what}: text ${i} is empty (it has no tokens)`);
      }
      let cut = false;
      if (t.length > max) {
        if (!options.truncate) {
          throw new LoupeError(
            "CONTEXT_OVERFLOW",
            `${what}: text ${i} (${preview(text)}) has ${t.length} tokens but the embedder takes at most ${max}; ` +
              `pass truncate: true to cut it`,
          );
        }
        tail = Math.min(tail, max - 1);
        const kept = new Int32Array(max);
        kept.set(t.subarray(0, max - tail));
        kept.set(t.subarray(t.length - tail), max - tail);
        t = kept;
        cut = true;
      }
      seqs.push(t);
      truncated.push(cut);
    }
    const lengths = Int32Array.from(seqs, (s) => s.length);
    const tokens = new Int32Array(lengths.reduce((a, b) => a + b, 0));
    let at = 0;
    for (const s of seqs) {
      tokens.set(s, at);
      at += s.length;
    }
    return { tokens, lengths, truncated };
  }

  /** Aborts a running call and frees the native handles after it. */
  protected closing(queue: Promise<unknown>): Promise<unknown> {
    finalizer.unregister(this);
    if (this.#running > 0) this.#owned.embedder?.abort();
    const owned = this.#owned;
    return queue.then(() => {
      owned.embedder?.free();
      owned.model.free();
      return owned.model.released(); // an isolated embedder's worker process has exited
    });
  }

  /** Rich display in a notebook: what it is, memory per device, load time (src/notebook/). */
  [DISPLAY](): Promise<MimeBundle> {
    return displayOf(this);
  }
}

/** How many of the last tokens are the closing special tokens (e.g. [SEP], or EOS then SEP). */
function closingLength(tokens: Int32Array, closing: number[]): number {
  if (closing.length === 0 || tokens.length < closing.length) return 0;
  const start = tokens.length - closing.length;
  return closing.every((c, k) => tokens[start + k] === c) ? closing.length : 0;
}

function preview(text: string): string {
  return JSON.stringify(text.length > 40 ? text.slice(0, 40) + "…" : text);
}

/** What the options of embed, embedTokens and rerank may hold. */
const EMBED_RULES: Record<string, FieldRule> = {
  normalize: (n) =>
    n === "l2" || n === "none" || n === "max" || (typeof n === "number" && Number.isFinite(n) && n >= 1)
      ? null
      : '"l2", "none", "max" or a number p ≥ 1',
  truncate: "boolean",
  addSpecial: "boolean",
  parseSpecial: "boolean",
  batchSize: "positiveInteger",
  requireDevice: "nonEmptyString",
  signal: "signal",
};

/** Normalises `v` in place (as llama.cpp's common_embd_normalize, sums in double precision) and returns it. */
function normalized(v: Float32Array, how: Normalize): Float32Array {
  if (how === "none") return v;
  let sum = 0;
  if (how === "max") {
    for (const x of v) sum = Math.max(sum, Math.abs(x));
  } else if (how === "l2" || how === 2) {
    for (const x of v) sum += Math.fround(x * x);
    sum = Math.sqrt(sum);
  } else {
    for (const x of v) sum += Math.abs(x) ** how;
    sum = sum ** (1 / how);
  }
  const scale = Math.fround(sum > 0 ? 1 / sum : 0);
  for (let i = 0; i < v.length; i++) v[i] = v[i] * scale;
  return v;
}

/**
 * Cosine similarity of two vectors, in [-1, 1], as llama.cpp's common_embd_similarity_cos
 * computes it: two zero vectors give 1, one zero vector gives 0.
 *
 * @example
 * ```ts
 * const [a, b] = await emb.embed(["cat", "kitten"]);
 * cosine(a, b); // close to 1 for similar texts
 * ```
 */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  for (const [name, v] of [["the first", a], ["the second", b]] as const) {
    const list = Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView))
      ? v as ArrayLike<unknown>
      : null;
    const bad = list ? Array.prototype.findIndex.call(list, (x: unknown) => typeof x !== "number") : -1;
    if (!list || bad >= 0) {
      throw new LoupeError(
        "INVALID_ARGUMENT",
        `Cannot compare vectors: ${name} must be an array of numbers, not ${
          list ? `an array holding ${shown(list[bad])}` : shown(v)
        }`,
      );
    }
  }
  if (a.length !== b.length) {
    throw new LoupeError("INVALID_ARGUMENT", `Cannot compare vectors: lengths differ (${a.length} and ${b.length})`);
  }
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  if (na === 0 || nb === 0) return na === 0 && nb === 0 ? 1 : 0;
  return dot / (Math.sqrt(na) * Math.sqrt(nb));
}
