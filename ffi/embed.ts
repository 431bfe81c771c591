/**
 * A thin wrapper over one `loupe_embedder *` (native/loupe_embed.h): the only place that holds
 * that pointer. The typed API's Embedder owns it.
 *
 * @module
 */
import type { NativeModel } from "./model.ts";
import { Status } from "./model.ts";
import { cstr, lastError, type NativeApi, NativeError, readCString, readJson } from "./util.ts";

/** One `loupe_embedder *` handle: an embedding context on a loaded model. */
export class NativeEmbedder {
  #api: NativeApi;
  #ptr: Deno.PointerObject | null;

  private constructor(api: NativeApi, ptr: Deno.PointerObject) {
    this.#api = api;
    this.#ptr = ptr;
  }

  /** Creates the embedding context on a worker thread (parameters as in loupe_embed.h). */
  static async create(model: NativeModel, params: Record<string, unknown>): Promise<NativeEmbedder> {
    const api = model.api;
    const err = new Uint8Array(2048);
    const ptr = await api.loupe_embedder_create(model.pointer(), cstr(JSON.stringify(params)), err, err.length);
    if (ptr === null) throw new NativeError(Status.LOAD, new TextDecoder().decode(err.subarray(0, err.indexOf(0))));
    return new NativeEmbedder(api, ptr);
  }

  #handle(): Deno.PointerObject {
    if (this.#ptr === null) throw new NativeError(Status.STATE, "the native embedder was freed");
    return this.#ptr;
  }

  #check(rc: number): number {
    if (rc < 0) {
      throw new NativeError(
        rc,
        readCString(this.#api, this.#api.loupe_embedder_error(this.#handle())) || lastError(this.#api),
      );
    }
    return rc;
  }

  /** The context's description (see loupe_embed.h). */
  info<T>(): T {
    return readJson<T>(this.#api, this.#api.loupe_embedder_info(this.#handle()));
  }

  /** Prepares a run over sequences stored back to back; returns the number of result floats. */
  begin(tokens: Int32Array, lengths: Int32Array, batchTokens: number): number {
    return this.#check(this.#api.loupe_embedder_begin(this.#handle(), tokens, lengths, lengths.length, batchTokens));
  }

  /** Runs the prepared batches on a worker thread, writing raw results into `out`. */
  async run(out: Float32Array<ArrayBuffer>): Promise<number> {
    return this.#check(await this.#api.loupe_embedder_run(this.#handle(), out, out.length));
  }

  /** Asks the prepared or running run to stop. */
  abort(): void {
    if (this.#ptr !== null) this.#api.loupe_embedder_abort(this.#ptr);
  }

  /** The last run's measurements (see loupe_embed.h). */
  output<T>(): T {
    return readJson<T>(this.#api, this.#api.loupe_embedder_output(this.#handle()));
  }

  /** Frees the handle; later calls throw. Idempotent. */
  free(): void {
    if (this.#ptr !== null) {
      this.#api.loupe_embedder_free(this.#ptr);
      this.#ptr = null;
    }
  }
}
