/**
 * A thin wrapper over a session context (a `loupe_ctx *` used through native/loupe_session.h):
 * begin with prefix reuse and context shift, the evaluated tokens, the last logits, and state
 * files. The typed API's Session owns it.
 *
 * @module
 */
import type { NativeContext } from "./model.ts";
import { Status } from "./model.ts";
import { cstr, INT32_MIN, lastError, type NativeApi, NativeError, readCString, takeString } from "./util.ts";

/** Parameters of a session call besides the sampling options (see loupe_session.h). */
export interface SessionBeginParams {
  /** Shift instead of stopping with contextFull. */
  contextShift: boolean;
  /** Tokens a shift never drops. */
  nKeep: number;
  /** Token indexes (into the tokens passed) where a turn begins: a shift cuts there when it can. */
  turns?: number[];
  /** [start, end) token ranges a shift never cuts (an image's tokens). */
  atomic?: Array<[number, number]>;
  /** Sampling and stopping options, as loupe_ctx_gen_begin takes them. */
  [option: string]: unknown;
}

/** One session context: the token loop of {@linkcode NativeContext} plus the session calls. */
export class NativeSession {
  #api: NativeApi;
  /** The context; its step, output, abort and free are used as they are. */
  readonly context: NativeContext;

  /** Wraps a context made by NativeModel.createContext. */
  constructor(context: NativeContext) {
    const api = context.api;
    this.#api = api;
    this.context = context;
  }

  #error(rc: number): NativeError {
    return new NativeError(
      rc,
      readCString(this.#api, this.#api.loupe_ctx_error(this.context.pointer())) || lastError(this.#api),
    );
  }

  /** Starts a call: keeps the cached prefix of `tokens`, evaluates the rest at the next steps. */
  begin(params: SessionBeginParams, tokens: Int32Array): void {
    const rc = this.#api.loupe_ctx_session_begin(
      this.context.pointer(),
      cstr(JSON.stringify(params)),
      tokens,
      tokens.length,
    );
    if (rc < 0) throw this.#error(rc);
  }

  /** The context size in tokens, as the engine made it. */
  size(): number {
    const n = this.#api.loupe_ctx_size(this.context.pointer());
    if (n < 0) throw new NativeError(n, lastError(this.#api));
    return n;
  }

  /** The tokens in the KV cache, by position. */
  tokens(): Int32Array {
    let cap = 256;
    for (let attempt = 0; attempt < 3; attempt++) {
      const out = new Int32Array(cap);
      const n = this.#api.loupe_ctx_tokens(this.context.pointer(), out, cap);
      if (n === INT32_MIN) throw new NativeError(Status.INVALID, lastError(this.#api));
      if (n >= 0) return out.slice(0, n);
      cap = -n;
    }
    throw new NativeError(Status.INTERNAL, "the token list did not fit a buffer of its own size");
  }

  /** The logits of the last evaluated token, one per vocabulary entry. */
  logits(nVocab: number): Float32Array {
    const out = new Float32Array(nVocab);
    const n = this.#api.loupe_ctx_logits(this.context.pointer(), out, out.length);
    if (n === INT32_MIN) throw new NativeError(Status.STATE, lastError(this.#api));
    if (n < 0) throw new NativeError(Status.INTERNAL, `the vocabulary has ${-n} entries, not ${nVocab}`);
    return out;
  }

  /** Writes the state file (on a worker thread). */
  async save(path: string, meta: unknown): Promise<void> {
    const rc = await this.#api.loupe_ctx_save(this.context.pointer(), cstr(path), cstr(JSON.stringify(meta)));
    if (rc < 0) throw this.#error(rc);
  }

  /** Reads a state file into this context (on a worker thread); returns the stored meta. */
  async load<T>(path: string): Promise<T> {
    const ptr = await this.#api.loupe_ctx_load(this.context.pointer(), cstr(path));
    if (ptr === null) throw this.#error(Status.INVALID);
    return JSON.parse(takeString(this.#api, ptr)) as T;
  }

  /** Frees the context. Idempotent. */
  free(): void {
    this.context.free();
  }
}
