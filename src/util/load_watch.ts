/**
 * Load progress of a model, embedder or projector file, polled from the engine.
 *
 * @module
 */
import { progressFor } from "./presenter.ts";

/** What {@linkcode watchLoad} returns: end it with done() or fail(). */
export interface LoadWatch {
  /** Stops polling, reports 1 and marks the bar done. */
  done(): Promise<void>;
  /** Stops polling and marks the bar failed with the reason. */
  fail(reason: string): Promise<void>;
}

/**
 * Load progress of a model, embedder or projector file: polls `read` (the engine's fraction)
 * every 50 ms into `onProgress` and, when one is shown (see `progressFor`), a bar
 * labelled "loading <file name>".
 */
export function watchLoad(
  path: string,
  read: () => number,
  options: { progress?: boolean; onProgress?: (fraction: number) => void },
): LoadWatch {
  const bar = progressFor(`loading ${path.split("/").pop()}`, options.progress);
  const onProgress = bar
    ? (fraction: number) => {
      bar.update(fraction);
      options.onProgress?.(fraction);
    }
    : options.onProgress;
  let timer: ReturnType<typeof setInterval> | undefined;
  if (onProgress) {
    let last = -1;
    timer = setInterval(() => {
      const p = read();
      if (p !== last) onProgress(last = p);
    }, 50);
  }
  const stop = () => {
    if (timer !== undefined) clearInterval(timer);
    timer = undefined;
  };
  return {
    async done() {
      stop();
      onProgress?.(1);
      await bar?.done();
    },
    async fail(reason) {
      stop();
      await bar?.fail(reason);
    },
  };
}
