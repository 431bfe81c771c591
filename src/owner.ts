/**
 * What every owner of native handles shares (Model, Session, Embedder, Projector): `close()`
 * frees the handles once a running call has returned, `closeAsync()` also waits for that, and
 * `using` / `await using` call them.
 *
 * @module
 */

/** An owner of native handles: close it, or use `using` / `await using`. */
export abstract class NativeOwner {
  /** Frees the native handles: a running call is aborted and the memory freed once it has returned. Idempotent. */
  abstract close(): void;

  /** Settles when the native memory of a closed owner has been released. */
  protected abstract released(): Promise<unknown>;

  /** Closes and waits until the native memory is released. */
  async closeAsync(): Promise<void> {
    this.close();
    await this.released();
  }

  /** `using x = …` support: {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** `await using x = …` support: {@linkcode closeAsync}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.closeAsync();
  }
}
