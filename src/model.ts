/**
 * Language models: load, generate, stream, chat, tokenize; every call returns a measured
 * timeline.
 *
 * @module
 */
import { checkLoadOptions } from "./load_options.ts";
import { NativeOwner } from "./owner.ts";
import { openLibrary } from "../ffi/library.ts";
import { type NativeContext, NativeModel, Status } from "../ffi/model.ts";
import { NativeError } from "../ffi/util.ts";
import { type GGUFFile, GGUFFormatError } from "./gguf.ts";
import { describeKind, modelKind } from "./embed_kind.ts";
import { LoupeError, type LoupeErrorCode } from "./errors.ts";
import type { LoadSessionOptions, Session, SessionOptions } from "./session.ts";
import { readCheckedHeader } from "./preflight.ts";
import { checkGenerateOptions } from "./generate_options.ts";
import type { Projector, ProjectorOptions, VisionMessage, VisionResult } from "./vision.ts";
import { assertDeviceAvailable, type Device, devices } from "./engine.ts";
import { checkPlacement, type DeviceMemory, type NativeStage, Timeline } from "./timeline.ts";
import { attachDisplay, DISPLAY, displayBundle, type MimeBundle } from "./display.ts";
import { streamBundle, watchLoad } from "./progress.ts";

/** A streaming step returns after 20 ms or 8 tokens: pieces arrive promptly, one FFI round trip per 8 tokens. */
const STREAM_STEP = { ms: 20, tokens: 8 };
/** generate and chat return to JavaScript every 250 ms (for abort and placement checks), not per token. */
const COLLECT_STEP = { ms: 250, tokens: 0 };

/** Default cap on generated tokens when `maxTokens` is not given: generation never runs to a full context by accident. */
export const DEFAULT_MAX_TOKENS = 256;

/** Options of {@linkcode loadModel}. */
export interface LoadModelOptions {
  /** Layers to put on the GPU: a number, "all", or "auto" (all when a GPU is present; default). 0 keeps the model on the CPU. */
  gpuLayers?: number | "auto" | "all";
  /** Restrict offloading to this device, e.g. "Vulkan0" or "CUDA0". */
  device?: string;
  /** Context size in tokens; default min(training context, 4096). */
  contextSize?: number;
  /** Logical batch size for prompt evaluation (default 512). */
  batchSize?: number;
  /** CPU threads for generation; default `navigator.hardwareConcurrency`. */
  threads?: number;
  /** CPU threads for prompt evaluation; default: same as `threads`. */
  threadsBatch?: number;
  /** Flash attention: "auto" (default), "on" or "off". */
  flashAttn?: "auto" | "on" | "off";
  /** Require every stage's heavy ops to run on this device ("gpu", "cpu" or a name like "Vulkan0"). */
  requireDevice?: string;
  /** Load only the tokenizer (no weights, no context). */
  vocabOnly?: boolean;
  /** Count graph nodes per device (default true). Turning it off leaves stages without placement. */
  measure?: boolean;
  /** Called with the load fraction in [0, 1] while loading. */
  onProgress?: (fraction: number) => void;
  /** Show a progress bar while loading: default only in a notebook; true also shows one line on a terminal. */
  progress?: boolean;
  /** Cancels the load. */
  signal?: AbortSignal;
}

/** Sampling and stopping options of generate, stream and chat. */
export interface GenerateOptions {
  /** Most tokens to generate; default {@linkcode DEFAULT_MAX_TOKENS}. */
  maxTokens?: number;
  /** 0 = greedy (default 0.8). */
  temperature?: number;
  /** Top-k (default 40; 0 disables). */
  topK?: number;
  /** Top-p (default 0.95; 1 disables). */
  topP?: number;
  /** Min-p (default 0.05; 0 disables). */
  minP?: number;
  /** Repeat penalty (default 1 = off). */
  repeatPenalty?: number;
  /** Tokens the repeat penalty looks back over (default 64). */
  repeatLastN?: number;
  /** Sampling seed. */
  seed?: number;
  /** Strings that end generation; they are not part of the text. */
  stop?: string[];
  /** Keep going past end-of-generation tokens. */
  ignoreEos?: boolean;
  /** Aborts the call; the result then has stopReason "aborted". */
  signal?: AbortSignal;
  /** Overrides the model's requireDevice for this call. */
  requireDevice?: string;
  /** Add BOS/EOS as the model wants (default true). */
  addSpecial?: boolean;
  /** Parse special tokens written in the prompt, as llama.cpp's tools do (default true). */
  parseSpecial?: boolean;
}

/** Why generation stopped. */
export type StopReason = "eos" | "stop" | "maxTokens" | "contextFull" | "aborted";

/** The result of generate or chat. */
export interface GenerateResult {
  /** Generated text (stop strings removed). */
  text: string;
  /** Generated token ids. */
  tokens: number[];
  /** Prompt token ids. */
  promptTokens: number[];
  /** Why it stopped. */
  stopReason: StopReason;
  /** Measured stages. */
  timeline: Timeline;
}

/** A chat message. */
export interface ChatMessage {
  /** "system", "user" or "assistant". */
  role: string;
  /** Message text. */
  content: string;
}

/** Options of tokenize. */
export interface TokenizeOptions {
  /** Add BOS/EOS as the model wants (default true). */
  addSpecial?: boolean;
  /** Parse special tokens written in the text (default false). */
  parseSpecial?: boolean;
}

/** What the engine says about a loaded model. */
export interface ModelInfo {
  desc: string;
  arch: string;
  name: string;
  nParams: number;
  size: number;
  nCtxTrain: number;
  nEmbd: number;
  nLayer: number;
  nVocab: number;
  nCtx: number;
  nBatch: number;
  nThreads: number;
  bos: number;
  eos: number;
  addBos: boolean;
  hasEncoder: boolean;
  hasDecoder: boolean;
  chatTemplate: string | null;
  loadUs: number;
  gpuLayers: number;
  memory: DeviceMemory[];
}

interface StepOutput {
  text: string;
  tokens: number[];
  done: boolean;
  stopReason: StopReason | null;
  nPast: number;
  nGenerated: number;
  stages: Record<string, NativeStage>;
}

const CODE_OF_STATUS: Record<number, LoupeErrorCode> = {
  [Status.INVALID]: "INVALID_ARGUMENT",
  [Status.LOAD]: "LOAD_FAILED",
  [Status.DECODE]: "DECODE_FAILED",
  [Status.CONTEXT]: "CONTEXT_OVERFLOW",
  [Status.ABORTED]: "ABORTED",
  [Status.STATE]: "CLOSED",
  [Status.INTERNAL]: "INTERNAL",
};

/** Rewords a native failure as a LoupeError with a sentence and the engine's message. */
export function wrap(e: unknown, what: string): LoupeError {
  if (e instanceof LoupeError) return e;
  if (e instanceof NativeError) {
    return new LoupeError(CODE_OF_STATUS[e.status] ?? "INTERNAL", `${what}: ${e.message}`, {
      nativeMessage: e.message,
      cause: e,
    });
  }
  return new LoupeError("INTERNAL", `${what}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
}

/** Checks a model path before the engine sees it: exists, is a file, is a well-formed GGUF. Returns the parsed header. */
export async function validateModelFile(path: string): Promise<GGUFFile> {
  const what = `Cannot load model "${path}"`;
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new LoupeError("NOT_FOUND", `${what}: no such file`, { cause: e });
    throw new LoupeError("NOT_FOUND", `${what}: ${(e as Error).message}`, { cause: e });
  }
  if (!info.isFile) throw new LoupeError("NOT_A_FILE", `${what}: it is a directory, not a file`);
  try {
    // the header, checked for values the engine would abort the process on (remembered per file)
    return await readCheckedHeader(path, info);
  } catch (e) {
    if (e instanceof GGUFFormatError) {
      throw new LoupeError("BAD_FORMAT", `${what}: ${lowerFirst(e.message)}`, { cause: e });
    }
    throw new LoupeError("BAD_FORMAT", `${what}: ${(e as Error).message}`, { cause: e });
  }
}

function lowerFirst(s: string): string {
  return s.length > 1 && s[1] !== s[1].toUpperCase() ? s[0].toLowerCase() + s.slice(1) : s;
}

const finalizer = new FinalizationRegistry<NativeModel>((native) => native.free());

/**
 * Loads a GGUF language model. The file is checked first (a missing, non-GGUF or corrupt
 * file is a typed error, never a crash); weights load on a worker thread.
 *
 * @example
 * ```ts
 * await using model = await loadModel("model.gguf", { gpuLayers: "auto" });
 * const r = await model.generate("Once upon a time", { maxTokens: 32, temperature: 0 });
 * console.log(r.text, r.timeline.toString());
 * ```
 */
export async function loadModel(path: string, options: LoadModelOptions = {}): Promise<Model> {
  const header = await validateModelFile(path);
  const kind = modelKind(header);
  if (kind.arch === "clip") {
    throw new LoupeError(
      "WRONG_KIND",
      `Cannot load model "${path}": it is a multimodal projector (clip), not a language model; load the language model and pass this file to model.loadProjector()`,
    );
  }
  if (kind.kind !== "generation" && !options.vocabOnly) {
    throw new LoupeError("WRONG_KIND", `Cannot load model "${path}": it is ${describeKind(kind)}; use loadEmbedder`);
  }
  checkLoadOptions(options, `Cannot load model "${path}"`);
  const lib = await openLibrary().catch((e) => {
    throw new LoupeError("LOAD_FAILED", `Cannot start the engine: ${(e as Error).message}`, { cause: e });
  });
  if (options.requireDevice) await assertDeviceAvailable(options.requireDevice);
  if (options.device) await assertDeviceAvailable(options.device);
  const gpuLayers = options.gpuLayers === undefined || options.gpuLayers === "auto" || options.gpuLayers === "all"
    ? -1
    : options.gpuLayers;
  if (!Number.isInteger(gpuLayers)) {
    throw new LoupeError(
      "INVALID_ARGUMENT",
      `Cannot load model "${path}": gpuLayers must be an integer, "auto" or "all"`,
    );
  }
  const native = new NativeModel(lib.api, {
    path,
    gpuLayers,
    devices: options.device ? [options.device] : null,
    contextSize: options.contextSize ?? 0,
    batchSize: options.batchSize ?? 512,
    threads: options.threads ?? navigator.hardwareConcurrency,
    threadsBatch: options.threadsBatch ?? 0,
    flashAttn: options.flashAttn ?? "auto",
    vocabOnly: options.vocabOnly ?? false,
    measure: options.measure ?? true,
  });
  const timeline = new Timeline("load");
  const t0 = performance.now();
  const onAbort = () => native.cancel();
  if (options.signal?.aborted) native.cancel();
  options.signal?.addEventListener("abort", onAbort);
  const watch = watchLoad(path, () => native.progress(), options);
  try {
    await native.load();
  } catch (e) {
    native.free();
    const err = wrap(e, `Cannot load model "${path}"`);
    await watch.fail(err.message);
    throw err.code === "ABORTED"
      ? err
      : new LoupeError("LOAD_FAILED", err.message, { nativeMessage: err.nativeMessage, cause: e });
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
  await watch.done();
  const info = native.info<ModelInfo>();
  timeline.add({ name: "load", wallMs: performance.now() - t0, tokens: 0, graphs: 0, devices: {} });
  timeline.memory = info.memory;
  return new Model(path, native, info, timeline, options, await devices());
}

/** Key of a Model's internals, for src/session.ts only (not exported from mod.ts). */
export const MODEL_INTERNALS: unique symbol = Symbol("loupe.modelInternals");

/** What a session borrows from its model (src/session.ts only). */
export interface ModelInternals {
  /** The native model; its contexts are freed before it. */
  native: NativeModel;
  /** Devices, for placement checks. */
  devices: Device[];
  /** The load options (threads, requireDevice, …). */
  options: LoadModelOptions;
  /** Registers something the model closes, and waits for, before it frees itself; returns the unregister. */
  adopt(child: { closeAsync(): Promise<void> }): () => void;
  /** The model's own context (src/vision.ts runs image chats on it); throws for vocabOnly. */
  context(): NativeContext;
  /** Runs `fn` in the model's call queue as a running call (close() aborts it); rejects once closed. */
  serial<T>(fn: () => Promise<T>): Promise<T>;
}

/** A loaded language model. Owns its native handle: close() it, or use `using`/`await using`. */
export class Model extends NativeOwner {
  /** The file it came from. */
  readonly path: string;
  /** The engine's description of it. */
  readonly info: ModelInfo;
  /** The load's timeline (wall time, weights per device). */
  readonly loadTimeline: Timeline;
  #native: NativeModel;
  #ctx: NativeContext | null;
  #options: LoadModelOptions;
  #devices: Device[];
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;
  #running = 0;
  #children = new Set<{ closeAsync(): Promise<void> }>();

  /** Use {@linkcode loadModel}. */
  constructor(
    path: string,
    native: NativeModel,
    info: ModelInfo,
    timeline: Timeline,
    options: LoadModelOptions,
    devs: Device[],
  ) {
    super();
    this.path = path;
    this.#native = native;
    this.#ctx = options.vocabOnly ? null : native.defaultContext();
    this.info = info;
    this.loadTimeline = timeline;
    this.#options = options;
    this.#devices = devs;
    finalizer.register(this, native, this);
  }

  /** Whether close() was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Internal (src/session.ts): the native handle and the close order; throws CLOSED once closed. */
  [MODEL_INTERNALS](): ModelInternals {
    this.#assertOpen();
    return {
      native: this.#native,
      devices: this.#devices,
      options: this.#options,
      adopt: (child) => {
        this.#children.add(child);
        return () => this.#children.delete(child);
      },
      context: () => this.#context(),
      serial: <T>(fn: () => Promise<T>): Promise<T> => {
        try {
          return this.#serial(async () => {
            this.#running++;
            try {
              return await fn();
            } finally {
              this.#running--;
            }
          });
        } catch (e) {
          return Promise.reject(e);
        }
      },
    };
  }

  /**
   * Loads a multimodal projector (an mmproj GGUF: image encoder and projection) so chat messages
   * can hold images; it replaces the previous one and closes with the model. See src/vision.ts.
   */
  async loadProjector(path: string, options: ProjectorOptions = {}): Promise<Projector> {
    const { loadProjector } = await import("./vision.ts");
    return await loadProjector(this, path, options);
  }

  /**
   * Opens a session: its own context whose KV cache is kept between calls (a follow-up evaluates
   * only what is new) and shifted when full. See src/session.ts.
   */
  async session(options: SessionOptions = {}): Promise<Session> {
    const { openSession } = await import("./session.ts");
    return await openSession(this, options);
  }

  /** Reopens a session written by `Session.save`; a file from another model is a `WRONG_MODEL` error. */
  async loadSession(path: string, options: LoadSessionOptions = {}): Promise<Session> {
    const { loadSession } = await import("./session.ts");
    return await loadSession(this, path, options);
  }

  #context(): NativeContext {
    if (!this.#ctx) {
      throw new LoupeError("INVALID_ARGUMENT", `Cannot generate with "${this.path}": it was loaded with vocabOnly`);
    }
    return this.#ctx;
  }

  #assertOpen(): void {
    if (this.#closed) throw new LoupeError("CLOSED", `Cannot use model "${this.path}": it is closed`);
  }

  /** Runs native work one call at a time (calls on one handle must not overlap). */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    this.#assertOpen();
    const run = this.#queue.then(() => {
      this.#assertOpen();
      return fn();
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Tokenizes text with the model's tokenizer. */
  tokenize(text: string, options: TokenizeOptions = {}): number[] {
    this.#assertOpen();
    try {
      return Array.from(this.#native.tokenize(text, options.addSpecial ?? true, options.parseSpecial ?? false));
    } catch (e) {
      throw wrap(e, "Cannot tokenize");
    }
  }

  /**
   * Tokenizes many texts in one native call (cheaper than one `tokenize` per text when they
   * are many and short); the result is what `tokenize` gives for each, in order.
   */
  tokenizeMany(texts: readonly string[], options: TokenizeOptions = {}): number[][] {
    this.#assertOpen();
    if (!Array.isArray(texts) || texts.some((t) => typeof t !== "string")) {
      throw new LoupeError("INVALID_ARGUMENT", "Cannot tokenize: the texts must be an array of strings");
    }
    try {
      return this.#native.tokenizeMany(texts, options.addSpecial ?? true, options.parseSpecial ?? false)
        .map((t) => Array.from(t));
    } catch (e) {
      throw wrap(e, "Cannot tokenize");
    }
  }

  /** Turns token ids back into text. */
  detokenize(tokens: ArrayLike<number>, options: { removeSpecial?: boolean; unparseSpecial?: boolean } = {}): string {
    this.#assertOpen();
    const ids = Int32Array.from(tokens as ArrayLike<number>);
    try {
      return this.#native.detokenize(ids, options.removeSpecial ?? false, options.unparseSpecial ?? false);
    } catch (e) {
      throw wrap(e, "Cannot detokenize");
    }
  }

  /** The prompt text the model's own chat template makes of `messages`. */
  applyChatTemplate(messages: ChatMessage[], options: { addAssistant?: boolean; template?: string } = {}): string {
    this.#assertOpen();
    for (const [i, m] of messages.entries()) {
      if (typeof m?.role !== "string" || typeof m?.content !== "string") {
        throw new LoupeError(
          "INVALID_ARGUMENT",
          `Cannot apply the chat template: message ${i} needs a string role and content`,
        );
      }
    }
    try {
      return this.#native.applyChatTemplate(messages, options.addAssistant ?? true, options.template);
    } catch (e) {
      throw wrap(e, "Cannot apply the chat template");
    }
  }

  /** Generates a completion of `prompt`. */
  generate(prompt: string, options: GenerateOptions = {}): Promise<GenerateResult> {
    return this.#collect(prompt, options, "generate");
  }

  /** Chats with the model through its own chat template. Content may hold images (see loadProjector). */
  chat(messages: ChatMessage[], options?: GenerateOptions): Promise<GenerateResult>;
  /** Chats with text and images: `content: [{ image: "cat.jpg" }, "What is this?"]` (see src/vision.ts). */
  chat(messages: Array<ChatMessage | VisionMessage>, options?: GenerateOptions): Promise<VisionResult>;
  chat(messages: Array<ChatMessage | VisionMessage>, options: GenerateOptions = {}): Promise<GenerateResult> {
    if (Array.isArray(messages) && messages.some((m) => Array.isArray(m?.content))) {
      return import("./vision.ts").then((v) => v.visionChat(this, messages as VisionMessage[], options));
    }
    return this.#collect(this.applyChatTemplate(messages as ChatMessage[]), { parseSpecial: true, ...options }, "chat");
  }

  /**
   * Streams text pieces as they are sampled: of a prompt, or of a chat reply when given messages
   * (content may hold images; the same as {@linkcode streamChat}). The final result (with the
   * timeline) is on `stream.result` once iteration ends.
   */
  stream(prompt: string | Array<ChatMessage | VisionMessage>, options: GenerateOptions = {}): TextStream {
    if (Array.isArray(prompt)) return this.streamChat(prompt, options);
    return new TextStream((onPiece) => this.#run(prompt, options, "generate", onPiece, STREAM_STEP));
  }

  /** Streams a chat reply (content may hold images); see {@linkcode stream}. */
  streamChat(messages: Array<ChatMessage | VisionMessage>, options: GenerateOptions = {}): TextStream {
    if (Array.isArray(messages) && messages.some((m) => Array.isArray(m?.content))) {
      return new TextStream((onPiece) =>
        import("./vision.ts").then((v) => v.visionChat(this, messages as VisionMessage[], options, onPiece))
      );
    }
    const prompt = this.applyChatTemplate(messages as ChatMessage[]);
    return new TextStream((onPiece) =>
      this.#run(prompt, { parseSpecial: true, ...options }, "chat", onPiece, STREAM_STEP)
    );
  }

  #collect(prompt: string, options: GenerateOptions, kind: string): Promise<GenerateResult> {
    return this.#run(prompt, options, kind, undefined, COLLECT_STEP);
  }

  #run(
    prompt: string,
    options: GenerateOptions,
    kind: string,
    onPiece: ((piece: string) => void) | undefined,
    step: { ms: number; tokens: number },
  ): Promise<GenerateResult> {
    if (typeof prompt !== "string") {
      return Promise.reject(new LoupeError("INVALID_ARGUMENT", "Cannot generate: the prompt must be a string"));
    }
    let maxTokens: number;
    try {
      maxTokens = checkGenerateOptions(options, DEFAULT_MAX_TOKENS);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#serial(async () => {
      const timeline = new Timeline(kind);
      const t0 = performance.now();
      let promptTokens: Int32Array;
      try {
        promptTokens = this.#native.tokenize(prompt, options.addSpecial ?? true, options.parseSpecial ?? true);
      } catch (e) {
        throw wrap(e, "Cannot tokenize the prompt");
      }
      const tTok = performance.now() - t0;
      if (promptTokens.length === 0) throw new LoupeError("INVALID_ARGUMENT", "Cannot generate: the prompt is empty");
      try {
        this.#context().genBegin({
          maxTokens,
          temperature: options.temperature ?? 0.8,
          topK: options.topK ?? 40,
          topP: options.topP ?? 0.95,
          minP: options.minP ?? 0.05,
          repeatPenalty: options.repeatPenalty ?? 1,
          repeatLastN: options.repeatLastN ?? 64,
          seed: options.seed ?? 0xFFFFFFFF,
          stop: options.stop ?? [],
          ignoreEos: options.ignoreEos ?? false,
        }, promptTokens);
      } catch (e) {
        throw wrap(e, "Cannot generate");
      }
      const required = options.requireDevice ?? this.#options.requireDevice;
      const onAbort = () => this.#context().genAbort();
      options.signal?.addEventListener("abort", onAbort);
      if (options.signal?.aborted) this.#context().genAbort();
      let text = "";
      const tokens: number[] = [];
      let out: StepOutput;
      this.#running++;
      try {
        while (true) {
          const done = await this.#context().genStep(step.ms, step.tokens);
          out = this.#context().genOutput<StepOutput>();
          text += out.text;
          tokens.push(...out.tokens);
          if (out.text && onPiece) onPiece(out.text);
          if (required) checkPlacement(stagesOf(out, tTok, "check"), required, this.#devices);
          if (done) break;
        }
      } catch (e) {
        this.#context().genAbort();
        throw wrap(e, "Cannot generate");
      } finally {
        this.#running--;
        options.signal?.removeEventListener("abort", onAbort);
      }
      const tl = stagesOf(out!, tTok, kind, timeline);
      tl.memory = this.info.memory; // weights per device, shown beside the stages
      return attachDisplay({
        text,
        tokens,
        promptTokens: Array.from(promptTokens),
        stopReason: out!.stopReason ?? "maxTokens",
        timeline: tl,
      });
    });
  }

  /** Frees the native model. Waits for nothing: an in-flight call is aborted and the free happens after it returns. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    finalizer.unregister(this);
    if (this.#running > 0) this.#ctx?.genAbort();
    const native = this.#native;
    const ctx = this.#ctx;
    // sessions close first (each aborts its call and frees its context once the call returns)
    const children = Array.from(this.#children, (c) => c.closeAsync().catch(() => {}));
    this.#children.clear();
    this.#queue = Promise.all([this.#queue, ...children]).then(() => {
      ctx?.free();
      native.free();
    });
  }

  /** Settles once the native memory of a closed model is released. */
  protected released(): Promise<unknown> {
    return this.#queue;
  }

  /** Rich display in a notebook: what the model is, memory per device, load time (see src/display.ts). */
  [DISPLAY](): Promise<MimeBundle> {
    return displayBundle(this);
  }
}

/** Builds a timeline from the native stage counters. */
function stagesOf(out: StepOutput, tokenizeMs: number, kind: string, timeline = new Timeline(kind)): Timeline {
  timeline.add({ name: "tokenize", wallMs: tokenizeMs, tokens: 0, graphs: 0, devices: {} });
  const s = out.stages;
  if (s.prompt) timeline.addNative("prompt", s.prompt);
  if (s.generation) timeline.addNative("generation", s.generation);
  if (s.sampling) {
    const gen = timeline.stage("generation");
    timeline.addNative("sampling", s.sampling, gen ? { startMs: gen.startMs, interleavedWith: "generation" } : {});
  }
  return timeline;
}

/** An async iterable of text pieces, with the final result once it ends. */
export class TextStream implements AsyncIterable<string> {
  /** Resolves with the full result when generation ends. */
  readonly result: Promise<GenerateResult>;
  #pieces: string[] = [];
  #wake: (() => void) | null = null;
  #ended = false;

  /** Use Model.stream. */
  constructor(start: (onPiece: (piece: string) => void) => Promise<GenerateResult>) {
    this.result = start((piece) => {
      this.#pieces.push(piece);
      this.#wake?.();
    }).finally(() => {
      this.#ended = true;
      this.#wake?.();
    });
    this.result.catch(() => {}); // surfaced through iteration
  }

  /** As the last expression of a notebook cell: streams the text into the cell, then shows the result. */
  [DISPLAY](): Promise<MimeBundle> {
    return streamBundle(this);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    while (true) {
      if (this.#pieces.length) {
        yield this.#pieces.shift()!;
        continue;
      }
      if (this.#ended) {
        await this.result; // throws the generation's error, if any
        return;
      }
      await new Promise<void>((r) => (this.#wake = r));
      this.#wake = null;
    }
  }
}
