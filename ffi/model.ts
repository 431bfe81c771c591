/**
 * A thin wrapper over one `loupe_model *`: the only place that holds that pointer.
 * It does no ownership bookkeeping beyond "freed once"; the typed API's Model owns it.
 *
 * @module
 */
import {
  cstr,
  INT32_MIN,
  lastError,
  type NativeApi,
  NativeError,
  readCString,
  readJson,
  takeJson,
  takeString,
} from "./util.ts";
import type { EngineCrash, IsolatedEngine } from "./isolated.ts";

/** Status codes of loupe.h. */
export const Status = {
  OK: 0,
  INVALID: -1,
  LOAD: -2,
  DECODE: -3,
  CONTEXT: -4,
  ABORTED: -5,
  STATE: -6,
  INTERNAL: -7,
  FORMAT: -8,
  MEMORY: -9,
} as const;

/** loupe_model_tokenize/_many/_detokenize's LOUPE_VOCAB_FAILED: the engine's tokenizer failed on the vocabulary. */
const VOCAB_FAILED = INT32_MIN + 1;

/** One `loupe_model *` handle. */
export class NativeModel {
  #api: NativeApi;
  #ptr: Deno.PointerObject | null;
  /** Contexts made by createContext (and batches, see adopt): freed before the model, whoever forgot them. */
  #contexts = new Set<{ free(): void; readonly freed: boolean }>();

  #engine: IsolatedEngine | null;

  /**
   * Creates the handle from load parameters (sent as JSON). With `engine`, `api` is that isolated
   * engine's and the model owns it: free() ends its worker process.
   */
  constructor(api: NativeApi, params: Record<string, unknown>, engine: IsolatedEngine | null = null) {
    this.#api = api;
    this.#engine = engine;
    const ptr = api.loupe_model_create(cstr(JSON.stringify(params)));
    if (ptr === null) throw new NativeError(Status.INVALID, lastError(api));
    this.#ptr = ptr;
  }

  #handle(): Deno.PointerObject {
    if (this.#ptr === null) throw new NativeError(Status.STATE, "the native model was freed");
    return this.#ptr;
  }

  /** The library this model lives in (an isolated engine's, or the process's), for the handles made on it. */
  get api(): NativeApi {
    return this.#api;
  }

  /** Whether the model is isolated: it lives in a worker process of its own. */
  get isolated(): boolean {
    return this.#engine !== null;
  }

  /** The isolated engine's crash, once its worker process died (null in-process, or alive). */
  get crash(): EngineCrash | null {
    return this.#engine?.crash ?? null;
  }

  /** The isolated engine's worker process id (null in-process). */
  get pid(): number | null {
    return this.#engine?.pid ?? null;
  }

  /** Settles once the memory is released: at once in-process, when the worker has exited otherwise. */
  released(): Promise<void> {
    return this.#engine && this.#ptr === null ? this.#engine.exited : Promise.resolve();
  }

  /** The raw handle, for other ffi/ wrappers that take a `loupe_model *` (throws once freed). */
  pointer(): Deno.PointerObject {
    return this.#handle();
  }

  #check(rc: number): number {
    if (rc < 0) {
      throw new NativeError(
        rc,
        readCString(this.#api, this.#api.loupe_model_error(this.#handle())) || lastError(this.#api),
      );
    }
    return rc;
  }

  /** Loads weights and the context on a worker thread. */
  async load(): Promise<void> {
    this.#check(await this.#api.loupe_model_load(this.#handle()));
  }

  /** Load progress in [0, 1]. */
  progress(): number {
    return this.#api.loupe_model_progress(this.#handle());
  }

  /** Stops an ongoing load at its next progress report. */
  cancel(): void {
    this.#api.loupe_model_cancel(this.#handle());
  }

  /** The model description (see loupe.h). */
  info<T>(): T {
    return readJson<T>(this.#api, this.#api.loupe_model_info(this.#handle()));
  }

  /** Tokenizes text (lone surrogates become U+FFFD, as TextEncoder makes them). */
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array {
    return this.tokenizeMany([text], addSpecial, parseSpecial)[0];
  }

  /**
   * Tokenizes many texts in one native call (loupe_model_tokenize_many): each text's tokens, in order,
   * as views into one buffer.
   */
  tokenizeMany(texts: readonly string[], addSpecial: boolean, parseSpecial: boolean): Int32Array[] {
    const encoder = new TextEncoder();
    let room = 0;
    for (const t of texts) room += t.length * 3; // UTF-8 bytes per UTF-16 unit: at most 3
    if (room > 0x7fffffff) throw new NativeError(Status.INVALID, "the texts are larger than 2 GiB together");
    const bytes = new Uint8Array(room);
    const offsets = new Int32Array(texts.length + 1);
    let at = 0;
    texts.forEach((t, i) => {
      at += encoder.encodeInto(t, bytes.subarray(at)).written;
      offsets[i + 1] = at;
    });
    const lengths = new Int32Array(texts.length);
    let cap = at + 4 * texts.length + 8;
    for (let attempt = 0; attempt < 2; attempt++) {
      const out = new Int32Array(cap);
      const n = this.#api.loupe_model_tokenize_many(
        this.#handle(),
        bytes,
        offsets,
        texts.length,
        addSpecial ? 1 : 0,
        parseSpecial ? 1 : 0,
        out,
        cap,
        lengths,
      );
      if (n === INT32_MIN) throw new NativeError(Status.INVALID, lastError(this.#api));
      if (n === VOCAB_FAILED) throw new NativeError(Status.FORMAT, lastError(this.#api));
      if (n >= 0) {
        let from = 0;
        return Array.from(lengths, (k) => out.subarray(from, from += k));
      }
      cap = -n;
    }
    throw new NativeError(Status.INTERNAL, "tokenization did not converge on a buffer size");
  }

  /** Turns tokens into text. */
  detokenize(tokens: Int32Array, removeSpecial: boolean, unparseSpecial: boolean): string {
    let cap = tokens.length * 8 + 16;
    for (let attempt = 0; attempt < 2; attempt++) {
      const out = new Uint8Array(cap);
      const n = this.#api.loupe_model_detokenize(
        this.#handle(),
        tokens,
        tokens.length,
        removeSpecial ? 1 : 0,
        unparseSpecial ? 1 : 0,
        out,
        cap,
      );
      if (n === INT32_MIN) throw new NativeError(Status.INVALID, lastError(this.#api));
      if (n === VOCAB_FAILED) throw new NativeError(Status.FORMAT, lastError(this.#api));
      if (n >= 0) return new TextDecoder().decode(out.subarray(0, n));
      cap = -n;
    }
    throw new NativeError(Status.INTERNAL, "detokenization did not converge on a buffer size");
  }

  /** Applies the model's chat template (or `template`) to messages. */
  applyChatTemplate(
    messages: Array<{ role: string; content: string }>,
    addAssistant: boolean,
    template?: string,
  ): string {
    const ptr = this.#api.loupe_model_chat_apply(
      this.#handle(),
      // lone surrogates become U+FFFD, as TextEncoder does for prompts (the native JSON parser refuses them)
      cstr(JSON.stringify(messages.map((m) => ({ role: m.role.toWellFormed(), content: m.content.toWellFormed() })))),
      template === undefined ? null : cstr(template),
      addAssistant ? 1 : 0,
    );
    return takeString(this.#api, ptr);
  }

  /** The context made at load; owned by the model (its free() does nothing). */
  defaultContext(): NativeContext {
    const ptr = this.#api.loupe_model_context(this.#handle());
    if (ptr === null) throw new NativeError(Status.STATE, lastError(this.#api));
    return new NativeContext(this.#api, ptr, false);
  }

  /**
   * What a context with `params` (those of createContext, or of an embedder with `kind:
   * "embedding"`) would take per device, laid out without allocating it (JSON of
   * loupe_model_memory_estimate), on a worker thread. Callable before load() too.
   */
  async memoryEstimate<T>(params: Record<string, unknown>): Promise<T> {
    const err = new Uint8Array(1024);
    const ptr = await this.#api.loupe_model_memory_estimate(
      this.#handle(),
      cstr(JSON.stringify(params)),
      err,
      err.length,
    );
    if (ptr === null) throw new NativeError(Status.LOAD, new TextDecoder().decode(err.subarray(0, err.indexOf(0))));
    return takeJson<T>(this.#api, ptr);
  }

  /** Creates another context (own KV cache) on a worker thread. */
  async createContext(params: Record<string, unknown>): Promise<NativeContext> {
    const err = new Uint8Array(1024);
    const ptr = await this.#api.loupe_ctx_create(this.#handle(), cstr(JSON.stringify(params)), err, err.length);
    if (ptr === null) throw new NativeError(Status.LOAD, new TextDecoder().decode(err.subarray(0, err.indexOf(0))));
    const ctx = new NativeContext(this.#api, ptr, true);
    for (const c of this.#contexts) if (c.freed) this.#contexts.delete(c);
    this.#contexts.add(ctx);
    return ctx;
  }

  /** Makes the model free `child` (a handle made on it, e.g. a NativeBatch) before itself. */
  adopt(child: { free(): void; readonly freed: boolean }): void {
    for (const c of this.#contexts) if (c.freed) this.#contexts.delete(c);
    this.#contexts.add(child);
  }

  /** Frees the handle (after the contexts it made, which must not outlive it); later calls throw. Idempotent. */
  free(): void {
    if (this.#ptr !== null) {
      for (const c of this.#contexts) c.free();
      this.#contexts.clear();
      this.#api.loupe_model_free(this.#ptr);
      this.#ptr = null;
      void this.#engine?.close();
    }
  }

  /** Whether free() has run. */
  get freed(): boolean {
    return this.#ptr === null;
  }
}

/** One `loupe_ctx *` handle: a KV cache and the token loop on it. */
export class NativeContext {
  #api: NativeApi;
  #ptr: Deno.PointerObject | null;
  #owned: boolean;

  /** Wraps a context pointer; `owned` says whether free() releases it. */
  constructor(api: NativeApi, ptr: Deno.PointerObject, owned: boolean) {
    this.#api = api;
    this.#ptr = ptr;
    this.#owned = owned;
  }

  #handle(): Deno.PointerObject {
    if (this.#ptr === null) throw new NativeError(Status.STATE, "the native context was freed");
    return this.#ptr;
  }

  /** The raw handle, for other ffi/ wrappers that take a `loupe_ctx *` (throws once freed). */
  /** The library this context lives in (its model's). */
  get api(): NativeApi {
    return this.#api;
  }

  pointer(): Deno.PointerObject {
    return this.#handle();
  }

  /** Whether free() has run. */
  get freed(): boolean {
    return this.#ptr === null;
  }

  #check(rc: number): number {
    if (rc < 0) {
      throw new NativeError(
        rc,
        readCString(this.#api, this.#api.loupe_ctx_error(this.#handle())) || lastError(this.#api),
      );
    }
    return rc;
  }

  /** Starts a generation over prompt tokens. */
  genBegin(params: object, tokens: Int32Array): void {
    this.#check(this.#api.loupe_ctx_gen_begin(this.#handle(), cstr(JSON.stringify(params)), tokens, tokens.length));
  }

  /** Runs the token loop for up to `budgetMs` and `maxTokens` new tokens (0 = no cap); true when finished. */
  async genStep(budgetMs: number, maxTokens = 0): Promise<boolean> {
    return this.#check(await this.#api.loupe_ctx_gen_step(this.#handle(), budgetMs, maxTokens)) === 1;
  }

  /** Asks a running step to stop. */
  genAbort(): void {
    if (this.#ptr !== null) this.#api.loupe_ctx_gen_abort(this.#ptr);
  }

  /** What the last step produced (see loupe.h). */
  genOutput<T>(): T {
    return readJson<T>(this.#api, this.#api.loupe_ctx_gen_output(this.#handle()));
  }

  /** Frees an owned context; later calls throw. Idempotent. */
  free(): void {
    if (this.#ptr !== null) {
      if (this.#owned) this.#api.loupe_ctx_free(this.#ptr);
      this.#ptr = null;
    }
  }
}
