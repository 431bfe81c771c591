/**
 * Load progress of a model, embedder or projector file, polled from the engine.
 *
 * @module
 */
import { LoupeError } from "./errors.ts";
import { progressFor } from "./presenter.ts";

/** What {@linkcode watchLoad} returns: end it with done() or fail(). */
export interface LoadWatch {
  /**
   * Stops polling, reports 1 and marks the bar done. Throws {@linkcode LoadWatch.error} when the
   * `onProgress` callback threw (now or before).
   */
  done(): Promise<void>;
  /** Stops polling and marks the bar failed with the reason. */
  fail(reason: string): Promise<void>;
  /**
   * The error of an `onProgress` callback that threw: INVALID_ARGUMENT, with the thrown value as
   * its `cause`; the load was cancelled then. Null while the callback behaves.
   */
  readonly error: LoupeError | null;
}

/**
 * Load progress of a model, embedder or projector file: polls `read` (the engine's fraction)
 * every 50 ms into `onProgress` and, when one is shown (see `progressFor`), a bar
 * labelled "loading <file name>". A callback that throws does not escape from the timer (it
 * would end the process): polling stops, `cancel` stops the load, and the loader rejects with
 * {@linkcode LoadWatch.error}, whose message starts with `what` (`Cannot load model "x.gguf"`).
 */
export function watchLoad(
  path: string,
  read: () => number,
  options: { progress?: boolean; onProgress?: (fraction: number) => void },
  what: string,
  cancel: () => void,
): LoadWatch {
  const bar = progressFor(`loading ${path.split("/").pop()}`, options.progress);
  const callback = options.onProgress;
  let error: LoupeError | null = null;
  const report = (fraction: number) => {
    bar?.update(fraction);
    if (!callback || error) return;
    try {
      callback(fraction);
    } catch (e) {
      error = new LoupeError(
        "INVALID_ARGUMENT",
        `${what}: the onProgress callback threw: ${e instanceof Error ? e.message : String(e)}`,
        { cause: e },
      );
      stop();
      cancel();
    }
  };
  let timer: ReturnType<typeof setInterval> | undefined;
  if (bar || callback) {
    let last = -1;
    timer = setInterval(() => {
      const p = read();
      if (p !== last) report(last = p);
    }, 50);
  }
  const stop = () => {
    if (timer !== undefined) clearInterval(timer);
    timer = undefined;
  };
  return {
    async done() {
      stop();
      if (!error) report(1);
      if (error) {
        await bar?.fail(error.message);
        throw error;
      }
      await bar?.done();
    },
    async fail(reason) {
      stop();
      await bar?.fail(reason);
    },
    get error() {
      return error;
    },
  };
}
