/**
 * What every owner of native handles shares (Model, Session, Embedder, Projector): one call at a
 * time through a queue, `CLOSED` once closed, and a `close()` that frees the handles only after
 * the running call has returned (`closeAsync()` also waits for that; `using` / `await using`
 * call them).
 *
 * @module
 */
import { LoupeError } from "./errors.ts";

/**
 * What a model, session, embedder and projector share: each holds engine memory until it is
 * closed. Close it, or use `using` / `await using`; calls on one run one at a time.
 */
export abstract class Resource {
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

  /** Whether close() was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The sentence of a CLOSED error, e.g. `Cannot use model "x.gguf": it is closed`. */
  protected abstract closedMessage(): string;

  /**
   * What closing does, once: abort a running call, then free the handles after `queue` (the
   * calls queued so far) has settled. Returns what settles when the memory is released.
   */
  protected abstract closing(queue: Promise<unknown>): Promise<unknown>;

  /** Throws a CLOSED LoupeError once closed (an owner may add what else must be open). */
  protected assertOpen(): void {
    if (this.#closed) throw new LoupeError("CLOSED", this.closedMessage());
  }

  /**
   * Runs `fn` after the calls queued before it: calls on one handle never overlap. Rejects with
   * CLOSED when closed before it starts, unless `finishEvenIfClosed` (a save asked for before
   * close() completes).
   */
  protected serial<T>(fn: () => Promise<T>, finishEvenIfClosed = false): Promise<T> {
    try {
      this.assertOpen();
    } catch (e) {
      return Promise.reject(e);
    }
    const run = this.#queue.then(() => {
      if (!finishEvenIfClosed) this.assertOpen();
      return fn();
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Runs `run` (already started) as the current call: close() frees the handles only after it. */
  protected track<T>(run: Promise<T>): Promise<T> {
    this.#queue = Promise.all([this.#queue, run.catch(() => {})]);
    return run;
  }

  /** Frees the native handles: a running call is aborted and the memory freed once it has returned. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = this.closing(this.#queue);
  }

  /** Closes and waits until the native memory is released. */
  async closeAsync(): Promise<void> {
    this.close();
    await this.#queue;
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
