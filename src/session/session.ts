/**
 * Sessions: a conversation with its own context whose KV cache is kept between calls. A
 * follow-up evaluates only what is new (the timeline's prompt stage shows the reused tokens);
 * when the context fills, the first `nKeep` tokens stay, the oldest half of the rest is dropped
 * (at a turn start where one is near) and the positions are moved back — a context shift, shown
 * as an event in the timeline. A session's state can be saved to a file and loaded back.
 *
 * @example
 * ```ts
 * await using model = await loadModel("model.gguf");
 * await using chat = await model.session({ systemPrompt: "Be brief.", contextSize: 2048 });
 * const a = await chat.chat("Hi!", { maxTokens: 64 });
 * const b = await chat.chat("And then?", { maxTokens: 64 });
 * b.reusedTokens; // the first turn was not evaluated again
 * await chat.save("chat.session");
 * await using again = await model.loadSession("chat.session");
 * ```
 *
 * @module
 */
import { checkLoadOptions } from "../engine/load_options.ts";
import { Resource } from "../util/resource.ts";
import { NativeSession } from "../../ffi/session.ts";
import { DISPLAY, displayable, displayOf, type MimeBundle, VIEW_KIND } from "../util/presenter.ts";
import { LoupeError } from "../util/errors.ts";
import { checkContextMemory } from "../util/memory.ts";
import { checkString, shown } from "../util/check.ts";
import { checkTarget, statFile } from "../util/files.ts";
import { NativeError } from "../../ffi/util.ts";
import { Status } from "../../ffi/model.ts";
import { prepareChat } from "../chat/chat.ts";
import { type GenerateOptions, generateOptions, samplingParams } from "../generate/options.ts";
import { readGGUFFile } from "../gguf/gguf.ts";
import type { Model } from "../model/model.ts";
import { internalsOf, type ModelInternals } from "../generate/internals.ts";
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
import { wrap } from "../util/native_error.ts";
import { addNativeStage, checkPlacement, checkRequirement, Timeline } from "../timeline/timeline.ts";
import {
  flattenMedia,
  hasParts,
  type MediaInput,
  mediaResult,
  projectorOf,
  runMedia,
  type VisionMessage,
  type VisionResult,
} from "../vision/vision.ts";

/** Magic bytes at the start of a session file (see native/loupe_session.h). */
export const SESSION_MAGIC = "LOUPESES";

/** Options of `model.session()`. */
export interface SessionOptions {
  /**
   * Context size in tokens; default the model's (`model.info.nCtx`). A context that would not fit in
   * free memory is a `NOT_ENOUGH_MEMORY` error, found before anything is allocated (as is a saved
   * session's, whose file names its context size).
   */
  contextSize?: number;
  /** When the context is full, drop old tokens and go on (default true); false stops with `stopReason: "contextFull"`. */
  contextShift?: boolean;
  /** Tokens at the start a shift never drops; default the system prompt's tokens, else the BOS token. */
  nKeep?: number;
  /** A system prompt: the first chat message (through the chat template), or the first text for `generate`. */
  systemPrompt?: string;
  /** Logical batch size for prompt evaluation (default: the model's). */
  batchSize?: number;
  /** CPU threads (default: the model's). */
  threads?: number;
  /** CPU threads for prompt evaluation (default: the model's). */
  threadsBatch?: number;
  /** Flash attention (default: the model's). */
  flashAttn?: "auto" | "on" | "off";
  /** Count graph nodes per device (default: the model's). */
  measure?: boolean;
}

/** Options of `model.loadSession()`: the context's threads and measuring (its size comes from the file). */
export type LoadSessionOptions = Pick<
  SessionOptions,
  "batchSize" | "threads" | "threadsBatch" | "flashAttn" | "measure"
>;

/** One context shift. */
export interface ContextShift {
  /** Where the dropped tokens began (= the tokens kept at the start, nKeep). */
  position: number;
  /** Tokens dropped. */
  dropped: number;
  /** Tokens in the context (with the one about to be evaluated) before and after. */
  nPastBefore: number;
  /** See nPastBefore. */
  nPastAfter: number;
  /** "turn": the cut ended at a turn start; "tokens": inside the last turn (text); "atomic": moved around an image. */
  cut: "turn" | "tokens" | "atomic";
  /** When, in milliseconds from the start of the call. */
  atMs: number;
}

/** The result of a session call. */
export interface SessionResult extends GenerateResult {
  /** The tokens this call added (its prompt, or a chat turn), not the whole session. */
  promptTokens: number[];
  /** Tokens of this call found in the KV cache and not evaluated again. */
  reusedTokens: number;
  /** Context shifts during this call (also events of the timeline). */
  shifts: ContextShift[];
  /** Image tokens this turn added (a turn with images). */
  imageTokens?: VisionResult["imageTokens"];
  /** Audio tokens this turn added (a turn with audio). */
  audioTokens?: VisionResult["audioTokens"];
  /** Positions this turn's prompt takes (a turn with media; fewer than its tokens under M-RoPE). */
  positions?: VisionResult["positions"];
  /** This turn's media as decoded. */
  images?: VisionResult["images"];
}

/** A session step also reports the sampled token not yet evaluated, reused tokens and shift events. */
interface SessionStepOutput extends StepOutput {
  pending: number | null;
  reused: number;
  events: Array<Record<string, unknown> & { kind: string; atUs: number }>;
}

/** What a session file's header carries besides the native state (the "meta" part). */
interface SessionMeta {
  kind: "loupe-session";
  version: 1;
  model: { path: string; sha256: string; nVocab: number; nEmbd: number; nLayer: number };
  contextSize: number;
  contextShift: boolean;
  nKeep: number | null;
  systemPrompt: string | null;
  messages: ChatMessage[];
  rendered: string | null;
  pending: number | null;
}

const identities = new WeakMap<Model, Promise<string>>();

/** Safety net for a session dropped without close(): frees its context (idempotent after the model's free). */
const sessionFinalizer = new FinalizationRegistry<{ native: NativeSession; unadopt: () => void }>((held) => {
  held.native.free();
  held.unadopt();
});

/** Samples of the tensor data in a model's identity, and the bytes of each. */
const IDENTITY_SAMPLES = 16;
const IDENTITY_SAMPLE_BYTES = 64 * 1024;

/**
 * The identity of a model file: SHA-256 of its GGUF header (metadata and tensor table, which
 * name the architecture, dimensions, tokenizer and every tensor's shape and offset), its size,
 * and 16 samples of 64 KiB spread evenly over the tensor data, so a model of the same shapes with
 * other weights (another seed, a fine-tune) is another model. Reads at most 1 MiB past the header.
 */
export function modelIdentity(model: Model): Promise<string> {
  let id = identities.get(model);
  if (!id) {
    id = (async () => {
      const header = await readGGUFFile(model.path);
      using file = await Deno.open(model.path, { read: true });
      const size = (await file.stat()).size;
      const readAt = async (offset: number, length: number) => {
        const bytes = new Uint8Array(Math.max(0, Math.min(length, size - offset)));
        await file.seek(offset, Deno.SeekMode.Start);
        let got = 0;
        while (got < bytes.length) {
          const n = await file.read(bytes.subarray(got));
          if (n === null) break;
          got += n;
        }
        return bytes.subarray(0, got);
      };
      const parts = [await readAt(0, header.headerSize), new TextEncoder().encode(`size ${size}`)];
      const data = size - header.headerSize;
      for (let i = 0; i < IDENTITY_SAMPLES && data > 0; i++) {
        const offset = header.headerSize + Math.floor((data * i) / IDENTITY_SAMPLES);
        parts.push(await readAt(offset, IDENTITY_SAMPLE_BYTES));
      }
      const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      parts.reduce((at, p) => (all.set(p, at), at + p.length), 0);
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
      return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
    })().catch((e) => {
      identities.delete(model); // the file may be back next time
      throw e instanceof LoupeError ? e : new LoupeError(
        "NOT_FOUND",
        `Cannot identify model "${model.path}": its file cannot be read (${(e as Error)?.message ?? e})`,
        { cause: e },
      );
    });
    identities.set(model, id);
  }
  return id;
}

/** Reads the header of a session file (the part TypeScript owns), or throws a typed error. */
export async function readSessionHeader(path: string): Promise<{ meta: SessionMeta; native: Record<string, unknown> }> {
  const what = `Cannot load session "${path}"`;
  await statFile(path, what); // a FIFO or a device would never end (or never start) a read
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new LoupeError("NOT_FOUND", `${what}: no such file`, { cause: e });
    throw new LoupeError("NOT_FOUND", `${what}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const head = new Uint8Array(16);
    const n = await readFull(file, head);
    if (n < 16 || new TextDecoder().decode(head.subarray(0, 8)) !== SESSION_MAGIC) {
      throw new LoupeError("BAD_FORMAT", `${what}: not a loupe session file`);
    }
    const view = new DataView(head.buffer);
    const version = view.getUint32(8, true);
    if (version !== 1) throw new LoupeError("BAD_FORMAT", `${what}: session file version ${version} is not supported`);
    const len = view.getUint32(12, true);
    const size = (await file.stat()).size;
    if (16 + len > size) throw new LoupeError("BAD_FORMAT", `${what}: the file is truncated`);
    const json = new Uint8Array(len);
    await readFull(file, json);
    let header: { native?: Record<string, unknown>; meta?: SessionMeta };
    try {
      header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(json));
    } catch (e) {
      throw new LoupeError("BAD_FORMAT", `${what}: its header is damaged`, { cause: e });
    }
    if (header?.meta?.kind !== "loupe-session" || typeof header.native !== "object" || header.native === null) {
      throw new LoupeError("BAD_FORMAT", `${what}: its header is damaged`);
    }
    return { meta: header.meta, native: header.native };
  } finally {
    file.close();
  }
}

async function readFull(file: Deno.FsFile, buf: Uint8Array): Promise<number> {
  let got = 0;
  while (got < buf.length) {
    const n = await file.read(buf.subarray(got));
    if (n === null) break;
    got += n;
  }
  return got;
}

/** Opens a session on `model` (see `Model.session`). */
export async function openSession(model: Model, given?: SessionOptions): Promise<Session> {
  const internals = internalsOf(model);
  const options = checkLoadOptions(given, "Cannot open a session");
  const contextSize = options.contextSize ?? model.info.nCtx;
  if (!Number.isInteger(contextSize) || contextSize < 8) {
    throw new LoupeError(
      "INVALID_ARGUMENT",
      `Cannot open a session: contextSize must be a whole number of at least 8, not ${contextSize}`,
    );
  }
  const native = await createContext(model, internals, contextSize, options);
  const session = createSession(model, internals, native, {
    contextSize: native.contextSize,
    contextShift: options.contextShift ?? true,
    nKeep: options.nKeep ?? null,
    systemPrompt: options.systemPrompt ?? null,
  });
  if (options.nKeep !== undefined && session.contextShift && options.nKeep > native.contextSize - 2) {
    await session.closeAsync();
    throw new LoupeError(
      "INVALID_ARGUMENT",
      `Cannot open a session: nKeep is ${options.nKeep} but a context of ${native.contextSize} tokens keeps at most ${
        native.contextSize - 2
      }`,
    );
  }
  return session;
}

/** Reopens a session saved with `Session.save` (see `Model.loadSession`). */
export async function loadSession(model: Model, path: string, given?: LoadSessionOptions): Promise<Session> {
  const internals = internalsOf(model);
  checkString(path, "the path", "Cannot load session");
  const what = `Cannot load session "${path}"`;
  const options = checkLoadOptions(given, what);
  const { meta } = await readSessionHeader(path);
  const id = await modelIdentity(model);
  if (meta.model?.sha256 !== id) {
    throw new LoupeError(
      "WRONG_MODEL",
      `${what}: it was saved from another model ("${meta.model?.path}", ${meta.model?.nVocab} tokens, ${meta.model?.nEmbd} wide, header sha256 ${
        String(meta.model?.sha256).slice(0, 12)
      }…), not "${model.path}" (${model.info.nVocab} tokens, ${model.info.nEmbd} wide, ${id.slice(0, 12)}…)`,
    );
  }
  const native = await createContext(
    model,
    internals,
    meta.contextSize,
    options,
    (n) => `${what} (saved from a context of ${n} tokens)`,
  );
  try {
    await native.session.load<SessionMeta>(path);
  } catch (e) {
    await native.release();
    const err = wrap(e, what);
    throw new LoupeError(err.code === "INTERNAL" ? "INTERNAL" : "BAD_FORMAT", err.message, {
      nativeMessage: err.nativeMessage,
      cause: e,
    });
  }
  const session = createSession(model, internals, native, {
    contextSize: native.contextSize,
    contextShift: meta.contextShift,
    nKeep: meta.nKeep,
    systemPrompt: meta.systemPrompt,
  }, meta);
  return session;
}

interface CreatedContext {
  session: NativeSession;
  contextSize: number;
  nVocab: number;
  /** Frees the context and unregisters it from the model. */
  release(): Promise<void>;
  /** Swaps the placeholder registration for the session's own. */
  adopt(child: { closeAsync(): Promise<void> }): () => void;
}

/** Creates a context on a worker thread; a model closed meanwhile waits for it, then frees it. */
async function createContext(
  model: Model,
  internals: ModelInternals,
  contextSize: number,
  options: LoadSessionOptions,
  what = (n: number) => `Cannot create a context of ${n} tokens for "${model.path}"`,
): Promise<CreatedContext> {
  const o = internals.options;
  const params = {
    contextSize,
    batchSize: options.batchSize ?? o.batchSize ?? 512,
    threads: options.threads ?? o.threads ?? navigator.hardwareConcurrency,
    threadsBatch: options.threadsBatch ?? o.threadsBatch ?? 0,
    flashAttn: options.flashAttn ?? o.flashAttn ?? "auto",
    measure: options.measure ?? o.measure ?? true,
  };
  // the context's memory, estimated before anything is taken (see src/util/memory.ts)
  internalsOf(model);
  await checkContextMemory(internals.native, params, what, internals.adopt);
  // CLOSED when the model closed during the awaits; from here to adopt() nothing yields, so a
  // close() after this point sees the context being created and waits for it
  internalsOf(model);
  const creating = internals.native.createContext(params);
  let cancelled = false;
  const release = internals.adopt({
    closeAsync: async () => {
      cancelled = true;
      await creating.then((c) => c.free(), () => {});
    },
  });
  let ctx;
  try {
    ctx = await creating;
  } catch (e) {
    release();
    throw wrap(e, "Cannot open a session");
  }
  release();
  if (cancelled || model.closed) {
    ctx.free();
    throw new LoupeError("CLOSED", `Cannot open a session on "${model.path}": the model was closed`);
  }
  const session = new NativeSession(ctx);
  return {
    session,
    contextSize: session.size(), // the size the engine made (it may round up)
    nVocab: model.info.nVocab,
    release: () => {
      session.free();
      return Promise.resolve();
    },
    adopt: internals.adopt,
  };
}

/** What the session constructor takes (module-private: use `model.session()` or `model.loadSession()`). */
type SessionArgs = [
  model: Model,
  internals: ModelInternals,
  created: CreatedContext,
  o: { contextSize: number; contextShift: boolean; nKeep: number | null; systemPrompt: string | null },
  restored?: SessionMeta,
];

let createSession: (...args: SessionArgs) => Session;

/**
 * A conversation with its own KV cache. Calls on one session run one at a time; sessions of one
 * model (and the model's own calls) run side by side, each on its own context.
 */
export class Session extends Resource {
  /** The model it runs on. */
  readonly model: Model;
  /** Context size in tokens. */
  readonly contextSize: number;
  /** Whether a full context shifts (true) or stops the call with contextFull (false). */
  readonly contextShift: boolean;
  /** The system prompt, if any. */
  readonly systemPrompt: string | null;
  #internals: ModelInternals;
  #native: NativeSession;
  #nVocab: number;
  #unadopt: () => void;
  #nKeep: number | null;
  #transcript: number[] = [];
  #messages: ChatMessage[] = [];
  #rendered: string | null = null; // the chat text the transcript holds (chat sessions)
  #running = 0;

  static {
    createSession = (...args) => new Session(...args);
  }

  private constructor(...[model, internals, created, o, restored]: SessionArgs) {
    super();
    this.model = model;
    this.#internals = internals;
    this.#native = created.session;
    this.#nVocab = created.nVocab;
    this.contextSize = o.contextSize;
    this.contextShift = o.contextShift;
    this.systemPrompt = o.systemPrompt;
    this.#nKeep = o.nKeep;
    if (restored) {
      this.#messages = restored.messages ?? [];
      this.#rendered = restored.rendered ?? null;
      this.#transcript = [...this.#native.tokens(), ...(restored.pending === null ? [] : [restored.pending])];
    }
    // The model closes its sessions before it frees itself; it holds them weakly, so a session
    // dropped without close() can be collected, and then the safety net frees its context.
    const ref = new WeakRef(this);
    this.#unadopt = created.adopt({ closeAsync: () => ref.deref()?.closeAsync() ?? Promise.resolve() });
    sessionFinalizer.register(this, { native: created.session, unadopt: this.#unadopt }, this);
  }

  /** The session's tokens: those in the KV cache, then the last sampled one (evaluated by the next call). */
  get tokens(): number[] {
    return [...this.#transcript];
  }

  /** Tokens a shift keeps at the start (known once the first call has run, or when given). */
  get nKeep(): number | null {
    return this.#nKeep;
  }

  /** The chat so far (system prompt, user messages and replies), whole even after shifts. */
  get messages(): ChatMessage[] {
    return this.#messages.map((m) => ({ ...m }));
  }

  /** Its view's name: how full the context is, what a shift keeps, the chat so far (src/notebook/). */
  get [VIEW_KIND](): string {
    return "session";
  }

  /** Rich display in a notebook. */
  [DISPLAY](): Promise<MimeBundle> {
    return displayOf(this);
  }

  /** The sentence of a CLOSED error. */
  protected closedMessage(): string {
    return "Cannot use the session: it is closed";
  }

  /** Throws CLOSED when the session or its model is closed. */
  protected override assertOpen(): void {
    super.assertOpen();
    if (this.model.closed) {
      throw new LoupeError("CLOSED", `Cannot use the session: model "${this.model.path}" is closed`);
    }
  }

  /**
   * Appends `prompt` (text, or token ids) to the session and generates. The cached tokens are
   * not evaluated again; an empty prompt continues where the last call stopped.
   */
  generate(prompt: string | number[], options?: GenerateOptions): Promise<SessionResult> {
    return this.#prompt(prompt, options, undefined, COLLECT_STEP);
  }

  /** Streams the pieces of {@linkcode generate}; the result is on `stream.result`. */
  stream(prompt: string | number[], options?: GenerateOptions): TextStream {
    return new TextStream((onPiece, stop) => this.#prompt(prompt, stoppable(options, stop), onPiece, STREAM_STEP));
  }

  /**
   * Sends user message(s) and generates the reply through the model's chat template. Each turn
   * is tokenized on its own and appended, so the cache is reused exactly; the reply is added to
   * {@linkcode messages}. Messages may hold images and audio clips as parts (with the model's
   * projector loaded): a later turn keeps them in the cache and does not encode them again.
   */
  chat(
    message: string | ChatMessage | VisionMessage | Array<ChatMessage | VisionMessage>,
    options?: GenerateOptions,
  ): Promise<SessionResult> {
    return this.#chat(message, options, undefined, COLLECT_STEP);
  }

  /** Streams the reply of {@linkcode chat}; the result is on `stream.result`. */
  streamChat(
    message: string | ChatMessage | VisionMessage | Array<ChatMessage | VisionMessage>,
    options?: GenerateOptions,
  ): TextStream {
    return new TextStream((onPiece, stop) => this.#chat(message, stoppable(options, stop), onPiece, STREAM_STEP));
  }

  /**
   * The logits of the last evaluated token (one per vocabulary entry). Before the first call
   * there is no evaluated token: that is an INVALID_ARGUMENT error saying so.
   */
  logits(): Promise<Float32Array> {
    return this.serial(() => {
      const what = "Cannot read the logits";
      try {
        return Promise.resolve(this.#native.logits(this.#nVocab));
      } catch (e) {
        const err = wrap(e, what);
        // the engine's "no logits" (nothing evaluated yet, or none kept) is about the session, not a closed handle
        if (e instanceof NativeError && e.status === Status.STATE && !this.#native.context.freed) {
          const none = this.#transcript.length === 0
            ? "no token has been evaluated yet (run generate or chat first)"
            : "the last evaluation kept none";
          throw new LoupeError("INVALID_ARGUMENT", `${what}: ${none}`, { nativeMessage: e.message, cause: e });
        }
        throw err;
      }
    });
  }

  /**
   * Writes the session (its KV cache, tokens and chat) to `path`; load it with
   * `model.loadSession(path)`. A path that exists must be a regular file (it is replaced).
   */
  save(path: string): Promise<void> {
    try {
      checkString(path, "the path", "Cannot save the session");
    } catch (e) {
      return Promise.reject(e);
    }
    const what = `Cannot save the session to "${path}"`;
    return this.serial(async () => {
      await checkTarget(path, what);
      const id = await modelIdentity(this.model);
      let pending: number | null;
      try {
        pending = this.#transcript.length > this.#native.tokens().length ? this.#transcript.at(-1)! : null;
      } catch (e) {
        throw wrap(e, what);
      }
      const meta: SessionMeta = {
        kind: "loupe-session",
        version: 1,
        model: {
          path: this.model.path,
          sha256: id,
          nVocab: this.model.info.nVocab,
          nEmbd: this.model.info.nEmbd,
          nLayer: this.model.info.nLayer,
        },
        contextSize: this.contextSize,
        contextShift: this.contextShift,
        nKeep: this.#nKeep,
        systemPrompt: this.systemPrompt,
        messages: this.#messages,
        rendered: this.#rendered,
        pending,
      };
      try {
        await this.#native.save(path, meta);
      } catch (e) {
        throw wrap(e, what);
      }
    }, true); // the context is freed only after the queue, so a save asked for before close() completes
  }

  #prompt(
    prompt: string | number[],
    given: GenerateOptions | undefined,
    onPiece: ((piece: string) => void) | undefined,
    step: Step,
  ): Promise<SessionResult> {
    let options: GenerateOptions;
    try {
      this.assertOpen();
      if (typeof prompt !== "string" && !Array.isArray(prompt)) {
        throw new LoupeError(
          "INVALID_ARGUMENT",
          `Cannot generate: the prompt must be a string or token ids, not ${shown(prompt)}`,
        );
      }
      const bad = Array.isArray(prompt) ? prompt.findIndex((t) => !Number.isInteger(t)) : -1;
      if (bad >= 0) {
        throw new LoupeError(
          "INVALID_ARGUMENT",
          `Cannot generate: token ids must be whole numbers, not ${shown(prompt[bad])} (at ${bad})`,
        );
      }
      options = this.#options(given);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.serial(() => {
      const t0 = performance.now();
      const first = this.#transcript.length === 0;
      const pieces: number[] = [];
      const turns: number[] = [];
      let nKeep = this.#nKeep;
      if (first && this.systemPrompt !== null) {
        const sys = this.#tokenize(this.systemPrompt, options.addSpecial ?? true, options.parseSpecial ?? true);
        turns.push(0);
        append(pieces, sys);
        nKeep ??= sys.length;
      }
      const own = typeof prompt === "string"
        ? this.#tokenize(
          prompt,
          first && pieces.length === 0 && (options.addSpecial ?? true),
          options.parseSpecial ?? true,
        )
        : prompt;
      if (own.length > 0) turns.push(this.#transcript.length + pieces.length);
      append(pieces, own);
      if (this.#transcript.length + pieces.length === 0) {
        throw new LoupeError("INVALID_ARGUMENT", "Cannot generate: the prompt is empty");
      }
      return this.#run(pieces, turns, nKeep, performance.now() - t0, options, onPiece, step, "session.generate");
    });
  }

  #chat(
    message: string | ChatMessage | VisionMessage | Array<ChatMessage | VisionMessage>,
    callOptions: GenerateOptions | undefined,
    onPiece: ((piece: string) => void) | undefined,
    step: Step,
  ): Promise<SessionResult> {
    const given = typeof message === "string"
      ? [{ role: "user", content: message }]
      : Array.isArray(message)
      ? message
      : [message];
    let incoming: ChatMessage[];
    let media: MediaInput[] = [];
    let options: GenerateOptions;
    try {
      this.assertOpen();
      options = this.#options(callOptions, "Cannot chat");
      if (given.length === 0) throw new LoupeError("INVALID_ARGUMENT", "Cannot chat: no message");
      if (hasParts(given)) {
        // images and audio: the markers go where they were, the media to the projector
        const flat = flattenMedia(given, projectorOf(this.model).info.marker);
        incoming = flat.text;
        media = flat.media;
      } else {
        for (const [i, m] of given.entries()) {
          if (typeof m?.role !== "string" || typeof m?.content !== "string") {
            throw new LoupeError(
              "INVALID_ARGUMENT",
              `Cannot chat: message ${i} needs a string role and string content or an array of parts`,
            );
          }
        }
        incoming = given as ChatMessage[];
      }
    } catch (e) {
      return Promise.reject(e);
    }
    return this.serial(async () => {
      const t0 = performance.now();
      const pieces: number[] = [];
      const turns: number[] = [];
      let nKeep = this.#nKeep;
      let messages = this.#messages;
      let rendered = this.#rendered ?? "";
      let bos = this.#transcript.length === 0;
      let before = rendered; // the chat text so far, as the template writes it
      const add = (text: string, turn: boolean) => {
        if (text === "") return;
        const toks = this.#continuation(before, text, bos);
        if (turn) turns.push(this.#transcript.length + pieces.length);
        append(pieces, toks);
        before += text;
      };
      // the new turn: tokens, or with media the text the projector's tokenizer splits at its markers
      let turnText = "";
      const addTurn = (text: string) => {
        if (media.length === 0) return add(text, true);
        turns.push(this.#transcript.length + pieces.length);
        turnText = text;
      };
      if (this.#transcript.length === 0 && this.systemPrompt !== null && messages.length === 0) {
        messages = [{ role: "system", content: this.systemPrompt }];
        const sys = this.#template(messages, false);
        add(sys, true);
        rendered = sys;
        nKeep ??= pieces.length;
      }
      const next = [...messages, ...incoming.map((m) => ({ role: m.role, content: m.content }))];
      const full = this.#template(next, true);
      // the previous reply's closing (e.g. "<|im_end|>\n") belongs to its turn; the new turn starts after it
      const closed = messages.length > 0 ? this.#template(messages, false) : rendered;
      if (rendered !== "" && closed.startsWith(rendered) && full.startsWith(closed)) {
        add(closed.slice(rendered.length), false);
        addTurn(full.slice(closed.length));
      } else if (full.startsWith(rendered)) {
        addTurn(full.slice(rendered.length));
      } else {
        // the template rewrote earlier text: start over with the whole chat (the cache keeps the common prefix)
        if (this.#transcript.includes(-1)) {
          throw new LoupeError(
            "INVALID_ARGUMENT",
            "Cannot chat: the chat template rewrote an earlier turn, and the session holds media it cannot " +
              "evaluate again; open a new session",
          );
        }
        this.#transcript = [];
        pieces.length = 0;
        turns.length = 0;
        before = "";
        bos = true;
        addTurn(full);
      }
      const result = media.length > 0
        ? await this.#media(turnText, media, pieces, turns, nKeep, performance.now() - t0, options, onPiece, step)
        : await this.#run(
          pieces,
          turns,
          nKeep,
          performance.now() - t0,
          options,
          onPiece,
          step,
          "session.chat",
        );
      this.#messages = [...next, { role: "assistant", content: result.text }];
      this.#rendered = full + result.text;
      return result;
    });
  }

  /** A call's options, checked before it is queued (requireDevice against the model's devices). */
  #options(given: GenerateOptions | undefined, what = "Cannot generate"): GenerateOptions {
    const options = generateOptions(given, what);
    checkRequirement(options.requireDevice, this.#internals.devices, what);
    return options;
  }

  /** A chat turn with media: evaluated through the projector, keeping what the cache holds. */
  async #media(
    turnText: string,
    media: MediaInput[],
    pieces: number[],
    turns: number[],
    nKeep: number | null,
    tokenizeMs: number,
    options: GenerateOptions,
    onPiece: ((piece: string) => void) | undefined,
    step: Step,
  ): Promise<SessionResult> {
    const keep = nKeep ?? (this.model.info.addBos ? 1 : 0);
    const prefix = this.#transcript.concat(pieces);
    const timeline = new Timeline("session.chat");
    timeline.add({ name: "tokenize", wallMs: tokenizeMs, tokens: 0, graphs: 0, devices: {} });
    let last: SessionStepOutput | undefined;
    this.#running++;
    let out;
    try {
      out = await runMedia({
        model: this.model,
        internals: this.#internals,
        projector: projectorOf(this.model),
        ctx: this.#native.context,
        prompt: turnText,
        media,
        options: { ...options, addSpecial: prefix.length === 0 && (options.addSpecial ?? true) },
        step,
        onPiece,
        kind: "session.chat",
        timeline,
        session: { prefix, turns, contextShift: this.contextShift, nKeep: keep },
        closed: () => this.closed,
        each: (o) => (last = o as SessionStepOutput),
      });
    } finally {
      this.#running--;
      const pending = last?.pending ?? null;
      const ctx = this.#native.context;
      if (!ctx.freed) this.#transcript = [...this.#native.tokens(), ...(pending === null ? [] : [pending])];
    }
    this.#nKeep = keep;
    const shifts = last ? shiftsOf(last, tokenizeMs) : [];
    if (last) addShiftEvents(out.timeline, last, tokenizeMs);
    return displayable({
      text: out.text,
      tokens: out.tokens,
      promptTokens: out.pre?.textTokens ?? [],
      stopReason: out.stopReason,
      timeline: out.timeline,
      reusedTokens: out.pre?.reused ?? 0,
      shifts,
      ...mediaResult(out.pre),
    });
  }

  /**
   * The tokens `text` adds after `before`: those of `before + text` past those of `before` when
   * the two agree (so a turn is tokenized as the whole chat would be), else `text` on its own.
   */
  #continuation(before: string, text: string, bos: boolean): number[] {
    if (before === "") return this.#tokenize(text, bos, true);
    const pre = this.#tokenize(before, bos, true);
    const full = this.#tokenize(before + text, bos, true);
    if (full.length > pre.length && pre.every((t, i) => full[i] === t)) return full.slice(pre.length);
    return this.#tokenize(text, false, true);
  }

  #tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): number[] {
    try {
      return Array.from(this.#internals.native.tokenize(text, addSpecial, parseSpecial));
    } catch (e) {
      throw wrap(e, "Cannot tokenize the prompt");
    }
  }

  #template(messages: ChatMessage[], addAssistant: boolean): string {
    try {
      return prepareChat(this.#internals.chats, messages, {}, addAssistant).rendered.prompt;
    } catch (e) {
      throw wrap(e, "Cannot apply the chat template");
    }
  }

  async #run(
    newTokens: number[],
    turns: number[],
    nKeep: number | null,
    tokenizeMs: number,
    options: GenerateOptions,
    onPiece: ((piece: string) => void) | undefined,
    step: Step,
    kind: string,
  ): Promise<SessionResult> {
    const sampling = samplingParams(options);
    const keep = nKeep ?? (this.model.info.addBos ? 1 : 0);
    const all = Int32Array.from(this.#transcript.concat(newTokens));
    const ctx = this.#native.context;
    try {
      this.#native.begin({ ...sampling, contextShift: this.contextShift, nKeep: keep, turns }, all);
    } catch (e) {
      throw wrap(e, "Cannot generate");
    }
    this.#nKeep = keep;
    const required = options.requireDevice ?? this.#internals.options.requireDevice;
    const onAbort = () => ctx.genAbort();
    options.signal?.addEventListener("abort", onAbort);
    if (options.signal?.aborted) ctx.genAbort();
    let last: SessionStepOutput | undefined;
    let run;
    this.#running++;
    try {
      run = await runSteps<SessionStepOutput>(ctx, {
        step,
        onPiece,
        each: (out) => {
          last = out;
          if (required) checkPlacement(buildTimeline(out, tokenizeMs, "check"), required, this.#internals.devices);
        },
      });
    } finally {
      this.#running--;
      options.signal?.removeEventListener("abort", onAbort);
      // whatever happened, the transcript is what the cache holds (and the token sampled last)
      const pending = last?.pending ?? null;
      if (!ctx.freed) this.#transcript = [...this.#native.tokens(), ...(pending === null ? [] : [pending])];
    }
    const tl = buildTimeline(run.last, tokenizeMs, kind);
    tl.memory = this.model.info.memory;
    return displayable({
      text: run.text,
      tokens: run.tokens,
      promptTokens: newTokens,
      stopReason: run.last.stopReason ?? "maxTokens",
      timeline: tl,
      reusedTokens: run.last.reused,
      shifts: shiftsOf(run.last, tokenizeMs),
    });
  }

  /** Aborts a running call and frees the context after it. */
  protected closing(queue: Promise<unknown>): Promise<unknown> {
    sessionFinalizer.unregister(this);
    if (this.#running > 0) this.#native.context.genAbort();
    const native = this.#native;
    // the model keeps waiting for this session until its last call (a save, say) has returned
    return queue.then(() => native.free()).finally(() => this.#unadopt());
  }
}

/** Appends `from` to `into` one by one: a spread into push() overflows the stack for long prompts. */
function append(into: number[], from: ArrayLike<number>): void {
  for (let i = 0; i < from.length; i++) into.push(from[i]);
}

function shiftsOf(out: SessionStepOutput, tokenizeMs: number): ContextShift[] {
  return out.events.filter((e) => e.kind === "contextShift").map((e) => ({
    position: e.position as number,
    dropped: e.dropped as number,
    nPastBefore: e.nPastBefore as number,
    nPastAfter: e.nPastAfter as number,
    cut: e.cut as ContextShift["cut"],
    atMs: tokenizeMs + e.atUs / 1000,
  }));
}

/** Builds a session call's timeline: stages (the prompt with its reused tokens) and shift events. */
function buildTimeline(out: SessionStepOutput, tokenizeMs: number, kind: string): Timeline {
  const timeline = new Timeline(kind);
  timeline.add({ name: "tokenize", wallMs: tokenizeMs, tokens: 0, graphs: 0, devices: {} });
  if (out.stages.prompt) addNativeStage(timeline, "prompt", out.stages.prompt, { reused: out.reused });
  addGenerationStages(timeline, out.stages);
  addShiftEvents(timeline, out, tokenizeMs);
  return timeline;
}

/** Adds a call's context shifts (and failed shifts) to its timeline as events. */
function addShiftEvents(timeline: Timeline, out: SessionStepOutput, tokenizeMs: number): void {
  for (const e of out.events) {
    const atMs = tokenizeMs + e.atUs / 1000;
    const { kind: k, atUs: _, ...data } = e;
    const what = k === "contextShift"
      ? `context shift: dropped ${data.dropped} tokens at position ${data.position} (${data.nPastBefore} → ${data.nPastAfter} tokens, cut at ${
        data.cut === "turn" ? "a turn start" : data.cut === "atomic" ? "an image's edge" : "a token"
      })`
      : `context shift failed: ${data.reason}`;
    timeline.events.push({ atMs, what, kind: k, data });
  }
}
