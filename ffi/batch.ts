/**
 * A thin wrapper over one `loupe_batch *` (native/loupe_batch.h): the only place that holds that
 * pointer. The typed API's Batcher (src/serve/batcher.ts) owns it.
 *
 * @module
 */
import { type NativeModel, Status } from "./model.ts";
import { cstr, lastError, type NativeApi, NativeError, readCString, readJson } from "./util.ts";

/** One `loupe_batch *` handle: slots on one context, decoded together. */
export class NativeBatch {
  #api: NativeApi;
  #ptr: Deno.PointerObject | null;
  #stepping = false;

  private constructor(api: NativeApi, ptr: Deno.PointerObject) {
    this.#api = api;
    this.#ptr = ptr;
  }

  /** Creates a batching context on a loaded model, on a worker thread; the model frees it before itself. */
  static async create(model: NativeModel, params: Record<string, unknown>): Promise<NativeBatch> {
    const api = model.api;
    const err = new Uint8Array(1024);
    const ptr = await api.loupe_batch_create(model.pointer(), cstr(JSON.stringify(params)), err, err.length);
    if (ptr === null) throw new NativeError(Status.LOAD, new TextDecoder().decode(err.subarray(0, err.indexOf(0))));
    const batch = new NativeBatch(api, ptr);
    model.adopt(batch);
    return batch;
  }

  #handle(): Deno.PointerObject {
    if (this.#ptr === null) throw new NativeError(Status.STATE, "the native batch was freed");
    return this.#ptr;
  }

  /** The handle, for a call that must not overlap a running step (the engine's context is not reentrant). */
  #idle(what: string): Deno.PointerObject {
    if (this.#stepping) throw new NativeError(Status.STATE, `cannot ${what} while a step runs`);
    return this.#handle();
  }

  #check(rc: number): number {
    if (rc < 0) {
      throw new NativeError(
        rc,
        readCString(this.#api, this.#api.loupe_batch_error(this.#handle())) || lastError(this.#api),
      );
    }
    return rc;
  }

  /** {parallel, nCtx, nCtxSlot, nBatch, threads}. */
  info<T>(): T {
    return readJson<T>(this.#api, this.#api.loupe_batch_info(this.#handle()));
  }

  /** Starts a request in a free slot; returns the slot. */
  start(params: object, tokens: Int32Array): number {
    return this.#check(
      this.#api.loupe_batch_start(this.#idle("start a request"), cstr(JSON.stringify(params)), tokens, tokens.length),
    );
  }

  /** Ends the request in `slot` at the next step (thread-safe: also while a step runs). */
  cancel(slot: number): void {
    if (this.#ptr !== null) this.#api.loupe_batch_cancel(this.#ptr, slot);
  }

  /** Makes a running step return after its current decode. */
  interrupt(): void {
    if (this.#ptr !== null) this.#api.loupe_batch_interrupt(this.#ptr);
  }

  /** Runs steps on a worker thread (see loupe_batch_step); returns the slots with a request. */
  async step(budgetMs: number, maxSteps: number): Promise<number> {
    const ptr = this.#idle("step");
    this.#stepping = true;
    try {
      return this.#check(await this.#api.loupe_batch_step(ptr, budgetMs, maxSteps));
    } finally {
      this.#stepping = false;
    }
  }

  /** What happened since the last call (see loupe_batch_output). */
  output<T>(): T {
    return readJson<T>(this.#api, this.#api.loupe_batch_output(this.#idle("read the output")));
  }

  /** Whether free() has run. */
  get freed(): boolean {
    return this.#ptr === null;
  }

  /** Frees the handle; later calls throw. Idempotent. Throws while a step runs. */
  free(): void {
    if (this.#stepping) throw new NativeError(Status.STATE, "cannot free the batch while a step runs");
    if (this.#ptr !== null) {
      this.#api.loupe_batch_free(this.#ptr);
      this.#ptr = null;
    }
  }
}
