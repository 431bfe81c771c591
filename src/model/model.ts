/**
 * Language models: load, generate, stream, chat, tokenize; every call returns a measured
 * timeline.
 *
 * @module
 */
import { type NativeContext, NativeModel } from "../../ffi/model.ts";
import {
  type ChatOptions,
  ChatTemplates,
  generationConstraint,
  parseReply,
  parseRequiredCall,
  prepareChat,
  type PreparedChat,
  type TemplateInfo,
  usesOwnCallGrammar,
} from "../chat/chat.ts";
import { assertDeviceAvailable, type Device, devicesOf } from "../engine/engine.ts";
import { connectRpcServers, parseEndpoint } from "../engine/rpc.ts";
import { engineFor } from "../engine/library.ts";
import { checkLoadOptions, type LoadModelOptions } from "../engine/load_options.ts";
import { lendInternals, type ModelInternals } from "../generate/internals.ts";
import { type GenerateOptions, generateOptions, type GrammarParams, samplingParams } from "../generate/options.ts";
import type { ChatMessage, GenerateResult } from "../generate/result.ts";
import {
  addGenerationStages,
  COLLECT_STEP,
  runSteps,
  type Step,
  type StepOutput,
  STREAM_STEP,
} from "../generate/step.ts";
import { stoppable, TextStream } from "../generate/stream.ts";
import { describeKind, modelKind } from "../gguf/kind.ts";
import { validateModelFile } from "../gguf/preflight.ts";
import { addDownloadStage, fetchForLoad, localProjector } from "../hub/resolve.ts";
import {
  loadSession,
  type LoadSessionOptions,
  openSession,
  type Session,
  type SessionOptions,
} from "../session/session.ts";
import { addNativeStage, checkPlacement, checkRequirement, type DeviceMemory, Timeline } from "../timeline/timeline.ts";
import { LoupeError } from "../util/errors.ts";
import { checkContextMemory } from "../util/memory.ts";
import { checkOptions, checkString, type FieldRule, isObject, shown } from "../util/check.ts";
import { watchLoad } from "../util/load_watch.ts";
import { wrap } from "../util/native_error.ts";
import { Resource } from "../util/resource.ts";
import { DISPLAY, displayable, displayOf, type MimeBundle } from "../util/presenter.ts";
import {
  hasParts,
  loadProjector,
  type Projector,
  type ProjectorOptions,
  visionChat,
  type VisionMessage,
  type VisionResult,
} from "../vision/vision.ts";

/** Options of tokenize. */
export interface TokenizeOptions {
  /** Add BOS/EOS as the model wants (default true). */
  addSpecial?: boolean;
  /** Parse special tokens written in the text (default false). */
  parseSpecial?: boolean;
}

/** Options of detokenize. */
export interface DetokenizeOptions {
  /** Leave out BOS/EOS and other control tokens (default false). */
  removeSpecial?: boolean;
  /** Write special tokens as their text (default false). */
  unparseSpecial?: boolean;
}

/** Options of applyChatTemplate: those of a chat's template (template, tools, kwargs, now). */
export interface ChatTemplateOptions extends ChatOptions {
  /** End with the assistant's turn opening, as for a reply (default true). */
  addAssistant?: boolean;
}

/** Options of chat calls: sampling, templates, tools, reasoning and structured output. */
export type ChatCallOptions = GenerateOptions & ChatOptions;

/** A chat call's own part of a run: how to read the reply. */
interface ChatRun {
  prepared: PreparedChat;
  options: ChatCallOptions;
}

/** What the engine says about a loaded model. */
export interface ModelInfo {
  /** The engine's one-line description, e.g. "llama 1B F16". */
  desc: string;
  /** Architecture, e.g. "llama", "qwen2". */
  arch: string;
  /** `general.name`, or "". */
  name: string;
  /** Parameters. */
  nParams: number;
  /** Bytes of weights. */
  size: number;
  /** The training context in tokens. */
  nCtxTrain: number;
  /** Embedding width. */
  nEmbd: number;
  /** Layers. */
  nLayer: number;
  /** Vocabulary size. */
  nVocab: number;
  /** Context size of the model's own context (0 for vocabOnly). */
  nCtx: number;
  /** Logical batch size. */
  nBatch: number;
  /** CPU threads. */
  nThreads: number;
  /** BOS token id (-1: none). */
  bos: number;
  /** EOS token id (-1: none). */
  eos: number;
  /** Whether tokenizing adds BOS. */
  addBos: boolean;
  /** Whether it has an encoder (T5-style). */
  hasEncoder: boolean;
  /** Whether it has a decoder. */
  hasDecoder: boolean;
  /** The chat template from the GGUF metadata, if any. */
  chatTemplate: string | null;
  /** Microseconds the engine took to load it. */
  loadUs: number;
  /** Layers offloaded to a GPU. */
  gpuLayers: number;
  /** Memory per device. */
  memory: DeviceMemory[];
}

const finalizer = new FinalizationRegistry<NativeModel>((native) => native.free());

/**
 * Loads a GGUF language model from a path or a name (`hf:owner/repo[:quant]`,
 * `hf:owner/repo/file.gguf`, an `https://` URL: downloaded first into the Hugging Face cache, see
 * {@linkcode pull}). The file is checked first (a missing, non-GGUF or corrupt file is a typed
 * error, never a crash); weights load on a worker thread.
 *
 * @example
 * ```ts
 * await using model = await loadModel("model.gguf", { gpuLayers: "auto" });
 * const r = await model.generate("Once upon a time", { maxTokens: 32, temperature: 0 });
 * console.log(r.text, r.timeline.toString());
 * await using vl = await loadModel("hf:ggml-org/gemma-3-4b-it-GGUF", { projector: "auto" });
 * ```
 */
export async function loadModel(name: string, options?: LoadModelOptions): Promise<Model> {
  checkString(name, "the path or name", "Cannot load model");
  options = checkLoadOptions(options, `Cannot load model "${name}"`);
  const fetched = await fetchForLoad(name, { ...options, projector: options.projector === "auto" });
  const path = fetched?.path ?? name;
  const projector = options.projector === "auto" ? fetched?.projector ?? await localProjector(path) : options.projector;
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
  const what = `Cannot load model "${path}"`;
  if (options.rpc && options.isolate === false) {
    throw new LoupeError(
      "INVALID_ARGUMENT",
      `${what}: a model on RPC servers always runs isolated (the engine's RPC client ends its process when a server dies): leave out isolate, or set it true`,
    );
  }
  if (options.device && options.devices) {
    throw new LoupeError("INVALID_ARGUMENT", `${what}: give device or devices, not both`);
  }
  for (const e of options.rpc ?? []) parseEndpoint(e, what);
  const engine = await engineFor(options.isolate ?? (options.rpc ? true : undefined), what);
  let devs: Device[];
  try {
    if (options.rpc) await connectRpcServers(engine.api, options.rpc, what);
    devs = devicesOf(engine.api);
    for (const d of [options.requireDevice, options.device, ...(options.devices ?? [])]) {
      if (d) await assertDeviceAvailable(d, devs);
    }
  } catch (e) {
    await engine.isolated?.close();
    throw e;
  }
  const gpuLayers = options.gpuLayers === undefined || options.gpuLayers === "auto" || options.gpuLayers === "all"
    ? -1
    : options.gpuLayers;
  let native: NativeModel;
  try {
    native = new NativeModel(engine.api, {
      path,
      gpuLayers,
      devices: options.devices ?? (options.device ? [options.device] : null),
      tensorSplit: options.tensorSplit ?? null,
      splitMode: options.splitMode ?? "layer",
      mainGpu: options.mainGpu ?? 0,
      contextSize: options.contextSize ?? 0,
      batchSize: options.batchSize ?? 512,
      threads: options.threads ?? navigator.hardwareConcurrency,
      threadsBatch: options.threadsBatch ?? 0,
      flashAttn: options.flashAttn ?? "auto",
      vocabOnly: options.vocabOnly ?? false,
      measure: options.measure ?? true,
    }, engine.isolated);
  } catch (e) {
    void engine.isolated?.close();
    throw wrap(e, what);
  }
  if (!options.vocabOnly) {
    // the default context's memory, estimated before anything is taken (see src/util/memory.ts)
    const params = {
      contextSize: options.contextSize ?? 0,
      batchSize: options.batchSize ?? 512,
      flashAttn: options.flashAttn ?? "auto",
    };
    await checkContextMemory(native, params, (n) => `Cannot create a context of ${n} tokens for "${path}"`)
      .catch((e) => {
        native.free();
        throw e;
      });
  }
  const timeline = new Timeline("load");
  if (fetched) addDownloadStage(timeline, fetched);
  const t0 = performance.now();
  const signal = options.signal;
  const onAbort = () => native.cancel();
  if (signal?.aborted) native.cancel();
  signal?.addEventListener("abort", onAbort);
  const watch = watchLoad(path, () => native.progress(), options, what, () => native.cancel());
  try {
    await native.load();
    await watch.done();
  } catch (e) {
    native.free();
    if (watch.error) throw watch.error;
    const err = wrap(e, what);
    await watch.fail(err.message);
    throw err.code === "ABORTED" || err.code === "NOT_ENOUGH_MEMORY" || err.code === "ENGINE_CRASHED"
      ? err
      : new LoupeError("LOAD_FAILED", err.message, { nativeMessage: err.nativeMessage, cause: e });
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  const info = native.info<ModelInfo>();
  timeline.add({ name: "load", wallMs: performance.now() - t0, tokens: 0, graphs: 0, devices: {} });
  timeline.memory = info.memory;
  const model = createModel({ path, native, info, timeline, options, devices: devs });
  if (projector) {
    try {
      await model.loadProjector(projector, { signal: options.signal, progress: options.progress });
    } catch (e) {
      await model.closeAsync();
      throw e;
    }
  }
  return model;
}

/** What the model constructor takes (module-private: use {@linkcode loadModel}). */
interface ModelInit {
  path: string;
  native: NativeModel;
  info: ModelInfo;
  timeline: Timeline;
  options: LoadModelOptions;
  devices: Device[];
}

let createModel: (init: ModelInit) => Model;

/** A loaded language model. Owns its native handle: close() it, or use `using`/`await using`. */
export class Model extends Resource {
  /** The file it came from. */
  readonly path: string;
  /** The engine's description of it. */
  readonly info: ModelInfo;
  /** The load's timeline (wall time, weights per device). */
  readonly loadTimeline: Timeline;
  #native: NativeModel;
  #chats: ChatTemplates;
  #ctx: NativeContext | null;
  #options: LoadModelOptions;
  #devices: Device[];
  #running = 0;
  #children = new Set<{ closeAsync(): Promise<void> }>();

  static {
    createModel = (init) => new Model(init);
  }

  private constructor(init: ModelInit) {
    super();
    this.path = init.path;
    this.#native = init.native;
    this.#chats = new ChatTemplates(init.native);
    this.#ctx = init.options.vocabOnly ? null : init.native.defaultContext();
    this.info = init.info;
    this.loadTimeline = init.timeline;
    this.#options = init.options;
    this.#devices = init.devices;
    finalizer.register(this, init.native, this);
    lendInternals(this, () => this.#lend());
  }

  /** The handles and the close order, for sessions and projectors; throws CLOSED once closed. */
  #lend(): ModelInternals {
    this.assertOpen();
    return {
      native: this.#native,
      chats: this.#chats,
      devices: this.#devices,
      options: this.#options,
      adopt: (child) => {
        this.#children.add(child);
        return () => this.#children.delete(child);
      },
      context: () => this.#context(),
      serial: <T>(fn: () => Promise<T>): Promise<T> =>
        this.serial(async () => {
          this.#running++;
          try {
            return await fn();
          } finally {
            this.#running--;
          }
        }),
    };
  }

  /**
   * Loads a multimodal projector (an mmproj GGUF: image encoder and projection; a path or a name
   * such as `hf:owner/repo/mmproj-F16.gguf`) so chat messages can hold images; it replaces the
   * previous one and closes with the model.
   */
  loadProjector(path: string, options: ProjectorOptions = {}): Promise<Projector> {
    return loadProjector(this, path, options);
  }

  /**
   * Opens a session: its own context whose KV cache is kept between calls (a follow-up evaluates
   * only what is new) and shifted when full.
   */
  session(options: SessionOptions = {}): Promise<Session> {
    return openSession(this, options);
  }

  /** Reopens a session written by `Session.save`; a file from another model is a `WRONG_MODEL` error. */
  loadSession(path: string, options: LoadSessionOptions = {}): Promise<Session> {
    return loadSession(this, path, options);
  }

  #context(): NativeContext {
    if (!this.#ctx) {
      throw new LoupeError("INVALID_ARGUMENT", `Cannot generate with "${this.path}": it was loaded with vocabOnly`);
    }
    return this.#ctx;
  }

  /** The sentence of a CLOSED error. */
  protected closedMessage(): string {
    return `Cannot use model "${this.path}": it is closed`;
  }

  /** Whether it runs in a worker process of its own (`isolate: true`). */
  get isolated(): boolean {
    return this.#native.isolated;
  }

  /** Its worker process's id (`isolate: true`), else null. */
  get workerPid(): number | null {
    return this.#native.pid;
  }

  /** Whether its worker process died (`isolate: true`): every call then rejects with `ENGINE_CRASHED`. */
  get crashed(): boolean {
    return this.#native.crash !== null;
  }

  /** Tokenizes text with the model's tokenizer. */
  tokenize(text: string, options?: TokenizeOptions): number[] {
    this.assertOpen();
    checkString(text, "the text", "Cannot tokenize", true);
    options = checkOptions(options, TOKENIZE_RULES, "Cannot tokenize");
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
  tokenizeMany(texts: readonly string[], options?: TokenizeOptions): number[][] {
    this.assertOpen();
    if (!Array.isArray(texts) || texts.some((t) => typeof t !== "string")) {
      throw new LoupeError(
        "INVALID_ARGUMENT",
        `Cannot tokenize: the texts must be an array of strings, not ${
          Array.isArray(texts) ? `an array holding ${shown(texts.find((t) => typeof t !== "string"))}` : shown(texts)
        }`,
      );
    }
    options = checkOptions(options, TOKENIZE_RULES, "Cannot tokenize");
    try {
      return this.#native.tokenizeMany(texts, options.addSpecial ?? true, options.parseSpecial ?? false)
        .map((t) => Array.from(t));
    } catch (e) {
      throw wrap(e, "Cannot tokenize");
    }
  }

  /** Turns token ids back into text. */
  detokenize(tokens: ArrayLike<number>, options?: DetokenizeOptions): string {
    this.assertOpen();
    const ids = tokenIds(tokens, "Cannot detokenize");
    options = checkOptions(options, DETOKENIZE_RULES, "Cannot detokenize");
    try {
      return this.#native.detokenize(ids, options.removeSpecial ?? false, options.unparseSpecial ?? false);
    } catch (e) {
      throw wrap(e, "Cannot detokenize");
    }
  }

  /**
   * The prompt text the model's own chat template (or `options.template`) makes of `messages`,
   * rendered by the engine's Jinja chat engine as llama.cpp's tools render it (tools, kwargs and
   * `now` included). A template that fails to render is an INVALID_ARGUMENT error quoting the
   * engine's message.
   */
  applyChatTemplate(messages: ChatMessage[], options?: ChatTemplateOptions): string {
    this.assertOpen();
    options = checkOptions(options, { addAssistant: "boolean" }, "Cannot apply the chat template");
    return prepareChat(this.#chats, messages, options, options.addAssistant ?? true).rendered.prompt;
  }

  /**
   * What the engine makes of the model's chat template (or `template`): its source, the BOS/EOS
   * text it sees, what it supports, and whether chatml stands in for a missing one.
   */
  chatTemplateInfo(template?: string): TemplateInfo {
    this.assertOpen();
    if (template !== undefined) checkString(template, "the template", "Cannot read the chat template");
    return this.#chats.info(template ?? null);
  }

  /** Generates a completion of `prompt`. */
  generate(prompt: string, options?: GenerateOptions): Promise<GenerateResult> {
    return this.#run(prompt, options, "generate", undefined, COLLECT_STEP);
  }

  /** Renders a chat and works out its constraint, or rejects (a template or option error). */
  #prepare(messages: ChatMessage[], given: ChatCallOptions | undefined): ChatRun {
    this.assertOpen();
    const options = generateOptions(given, "Cannot chat"); // the sampling options, before the template
    return { prepared: prepareChat(this.#chats, messages, options), options };
  }

  /**
   * Chats with the model through its own chat template (rendered by the engine's Jinja engine).
   * `tools` let it call functions (`result.toolCalls`), `jsonSchema` and `grammar` constrain the
   * reply (`result.json`), and thinking text goes to `result.reasoning`. Content may hold images
   * (see loadProjector).
   */
  chat(messages: ChatMessage[], options?: ChatCallOptions): Promise<GenerateResult>;
  /** Chats with text and images: `content: [{ image: "cat.jpg" }, "What is this?"]`. */
  chat(messages: Array<ChatMessage | VisionMessage>, options?: ChatCallOptions): Promise<VisionResult>;
  chat(messages: Array<ChatMessage | VisionMessage>, options?: ChatCallOptions): Promise<GenerateResult> {
    if (hasParts(messages)) return visionChat(this, messages as VisionMessage[], options);
    let chat: ChatRun;
    try {
      chat = this.#prepare(messages as ChatMessage[], options);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#run(chat.prepared.rendered.prompt, chatOptions(options), "chat", undefined, COLLECT_STEP, chat);
  }

  /**
   * Streams text pieces as they are sampled: of a prompt, or of a chat reply when given messages
   * (content may hold images; the same as {@linkcode streamChat}). The final result (with the
   * timeline) is on `stream.result` once iteration ends.
   */
  stream(prompt: string | Array<ChatMessage | VisionMessage>, options?: ChatCallOptions): TextStream {
    if (Array.isArray(prompt)) return this.streamChat(prompt, options);
    return new TextStream((onPiece, stop) =>
      this.#run(prompt, stoppable(options, stop), "generate", onPiece, STREAM_STEP)
    );
  }

  /** Streams a chat reply (content may hold images); see {@linkcode stream}. */
  streamChat(messages: Array<ChatMessage | VisionMessage>, options?: ChatCallOptions): TextStream {
    if (hasParts(messages)) {
      return new TextStream((onPiece, stop) =>
        visionChat(this, messages as VisionMessage[], stoppable(options, stop), onPiece)
      );
    }
    const chat = this.#prepare(messages as ChatMessage[], options);
    return new TextStream((onPiece, stop) =>
      this.#run(
        chat.prepared.rendered.prompt,
        stoppable(chatOptions(options), stop),
        "chat",
        onPiece,
        STREAM_STEP,
        chat,
      )
    );
  }

  #run(
    prompt: string,
    given: GenerateOptions | undefined,
    kind: string,
    onPiece: ((piece: string, reasoning?: boolean) => void) | undefined,
    step: Step,
    chat?: ChatRun,
  ): Promise<GenerateResult> {
    let sampling: ReturnType<typeof samplingParams>;
    let grammarMs = 0;
    let options: GenerateOptions;
    try {
      this.assertOpen();
      checkString(prompt, "the prompt", "Cannot generate", true);
      options = generateOptions(given);
      checkRequirement(options.requireDevice, this.#devices, "Cannot generate");
      let constraint: GrammarParams;
      if (chat) {
        constraint = chat.prepared.constraint;
        grammarMs = chat.prepared.grammarMs;
      } else {
        const t = performance.now();
        constraint = generationConstraint(this.#chats, options);
        grammarMs = options.jsonSchema !== undefined ? performance.now() - t : 0;
      }
      sampling = samplingParams(options, constraint);
      if (chat) sampling.stop = [...sampling.stop, ...chat.prepared.rendered.additionalStops];
    } catch (e) {
      return Promise.reject(e);
    }
    const split = chat ? reasoningSplitter(chat.prepared) : null;
    const pieces = onPiece && split
      ? (piece: string) => {
        for (const [text, reasoning] of split(piece)) onPiece(text, reasoning);
      }
      : onPiece;
    return this.serial(async () => {
      const t0 = performance.now();
      let promptTokens: Int32Array;
      try {
        promptTokens = this.#native.tokenize(prompt, options.addSpecial ?? true, options.parseSpecial ?? true);
      } catch (e) {
        throw wrap(e, "Cannot tokenize the prompt");
      }
      const tTok = performance.now() - t0;
      if (promptTokens.length === 0) throw new LoupeError("INVALID_ARGUMENT", "Cannot generate: the prompt is empty");
      const ctx = this.#context();
      try {
        ctx.genBegin(sampling, promptTokens);
      } catch (e) {
        throw wrap(e, "Cannot generate");
      }
      const required = options.requireDevice ?? this.#options.requireDevice;
      const onAbort = () => ctx.genAbort();
      options.signal?.addEventListener("abort", onAbort);
      if (options.signal?.aborted) ctx.genAbort();
      this.#running++;
      let run;
      try {
        run = await runSteps<StepOutput>(ctx, {
          step,
          onPiece: pieces,
          each: required ? (out) => checkPlacement(stagesOf(out, tTok, "check"), required, this.#devices) : undefined,
        });
      } finally {
        this.#running--;
        options.signal?.removeEventListener("abort", onAbort);
      }
      const tl = stagesOf(run.last, tTok, kind, chat?.prepared.templateMs, grammarMs);
      tl.memory = this.info.memory; // weights per device, shown beside the stages
      const result: GenerateResult = {
        text: run.text,
        tokens: run.tokens,
        promptTokens: Array.from(promptTokens),
        stopReason: run.last.stopReason ?? "maxTokens",
        timeline: tl,
      };
      if (chat) this.#readReply(result, chat);
      else if (options.jsonSchema !== undefined) result.json = parseJson(result.text);
      return displayable(result);
    });
  }

  /** Fills a chat result from its reply: answer, reasoning, tool calls, JSON, warnings. */
  #readReply(result: GenerateResult, chat: ChatRun): void {
    const { prepared, options } = chat;
    if (prepared.warnings.length) result.warnings = [...prepared.warnings];
    if (usesOwnCallGrammar(prepared, options)) {
      result.toolCalls = parseRequiredCall(result.text);
    } else {
      const parsed = parseReply(this.#chats, options.template, prepared, result.text);
      result.text = parsed.text;
      if (prepared.reasoning) result.reasoning = parsed.reasoning;
      if (prepared.tools) result.toolCalls = parsed.toolCalls;
    }
    if (result.toolCalls?.length) result.stopReason = "toolCalls";
    if (prepared.json) result.json = parseJson(result.text);
  }

  /** Aborts a running call and frees the native model after it (sessions and the projector first). */
  protected closing(queue: Promise<unknown>): Promise<unknown> {
    finalizer.unregister(this);
    if (this.#running > 0) this.#ctx?.genAbort();
    const native = this.#native;
    const ctx = this.#ctx;
    // sessions close first (each aborts its call and frees its context once the call returns)
    const children = Array.from(this.#children, (c) => c.closeAsync().catch(() => {}));
    this.#children.clear();
    const chats = this.#chats;
    return Promise.all([queue, ...children]).then(() => {
      chats.free();
      ctx?.free();
      native.free();
      return native.released(); // an isolated model's worker process has exited
    });
  }

  /** Rich display in a notebook: what the model is, memory per device, load time. */
  [DISPLAY](): Promise<MimeBundle> {
    return displayOf(this);
  }
}

/** What tokenize options may hold. */
const TOKENIZE_RULES: Record<string, FieldRule> = { addSpecial: "boolean", parseSpecial: "boolean" };

/** What detokenize options may hold. */
const DETOKENIZE_RULES: Record<string, FieldRule> = { removeSpecial: "boolean", unparseSpecial: "boolean" };

/** Token ids as the engine takes them: an array (or typed array) of whole numbers in 32 bits, else INVALID_ARGUMENT. */
function tokenIds(tokens: unknown, what: string): Int32Array {
  const list = Array.isArray(tokens) || (ArrayBuffer.isView(tokens) && !(tokens instanceof DataView))
    ? tokens as ArrayLike<unknown>
    : null;
  if (!list) {
    throw new LoupeError("INVALID_ARGUMENT", `${what}: the tokens must be an array of token ids, not ${shown(tokens)}`);
  }
  for (let i = 0; i < list.length; i++) {
    const t = list[i];
    if (!Number.isInteger(t) || (t as number) < 0 || (t as number) > 0x7fffffff) {
      throw new LoupeError(
        "INVALID_ARGUMENT",
        `${what}: token ${i} must be a token id (a whole number ≥ 0), not ${shown(t)}`,
      );
    }
  }
  return Int32Array.from(list as ArrayLike<number>);
}

/** A chat call's options: special tokens of the rendered template are read (unless said otherwise). */
function chatOptions(options: ChatCallOptions | undefined): ChatCallOptions | undefined {
  return options === undefined || isObject(options) ? { parseSpecial: true, ...options } : options;
}

/** The value of a JSON reply (a fenced ```json block too), or undefined when it is not JSON. */
function parseJson(text: string): unknown {
  const fenced = text.trim().match(/^```(?:json)?\s*([\s\S]*?)\s*```$/);
  try {
    return JSON.parse(fenced ? fenced[1] : text);
  } catch {
    return undefined;
  }
}

/**
 * Splits streamed text, piece by piece, into thinking text and answer: thinking runs from the
 * thinking start tag (or from the start, when the generation prompt opens it) to the end of the
 * first end tag, both tags included; a piece that holds a tag's end is cut there. While the reply
 * is still a prefix of the start tag, it counts as thinking. Null when nothing is parsed apart.
 */
function reasoningSplitter(prepared: PreparedChat): ((piece: string) => Array<[string, boolean]>) | null {
  const r = prepared.rendered;
  const start = r.thinkingStartTag.trim();
  const ends = r.thinkingEndTags.map((t) => t.trim()).filter((t) => t !== "");
  if (!prepared.reasoning || !start || !ends.length) return null;
  let text = "";
  let state: "before" | "open" | "answer" = r.generationPrompt.trimEnd().endsWith(start) ? "open" : "before";
  return (piece) => {
    const from = text.length;
    text += piece;
    if (state === "before") {
      const rest = text.trimStart();
      if (rest.startsWith(start)) state = "open";
      else if (rest !== "" && start.startsWith(rest)) return [[piece, true]]; // the start tag, still coming
      else if (rest !== "") state = "answer";
    }
    if (state !== "open") return [[piece, false]];
    let end = -1;
    for (const t of ends) {
      const i = text.indexOf(t);
      if (i >= 0 && (end < 0 || i + t.length < end)) end = i + t.length;
    }
    if (end < 0) return [[piece, true]];
    state = "answer";
    const cut = end - from; // where the answer starts in this piece (the tag ends in it)
    return cut < piece.length ? [[piece.slice(0, cut), true], [piece.slice(cut), false]] : [[piece, true]];
  };
}

/** Builds a generation call's timeline from the native stage counters. */
function stagesOf(out: StepOutput, tokenizeMs: number, kind: string, templateMs?: number, grammarMs = 0): Timeline {
  const timeline = new Timeline(kind);
  if (templateMs !== undefined) {
    timeline.add({ name: "template", wallMs: templateMs, tokens: 0, graphs: 0, devices: {} });
  }
  const nativeGrammar = out.stages.grammar?.wallUs ?? 0;
  if (grammarMs > 0 || nativeGrammar > 0) {
    timeline.add({ name: "grammar", wallMs: grammarMs + nativeGrammar / 1000, tokens: 0, graphs: 0, devices: {} });
  }
  timeline.add({ name: "tokenize", wallMs: tokenizeMs, tokens: 0, graphs: 0, devices: {} });
  if (out.stages.prompt) addNativeStage(timeline, "prompt", out.stages.prompt);
  return addGenerationStages(timeline, out.stages);
}
