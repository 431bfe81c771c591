/**
 * A stream of generated text pieces, with the final result once it ends.
 *
 * @module
 */
import { DISPLAY, displayStream, type MimeBundle } from "../util/presenter.ts";
import type { GenerateResult } from "./result.ts";
import type { GenerateOptions } from "./options.ts";
import { isObject, isSignal } from "../util/check.ts";

/** A piece of a stream, marked as thinking text or not. */
export interface StreamPart {
  /** The text. */
  text: string;
  /** Whether it is thinking text (between a model's thinking tags), not the answer. */
  reasoning: boolean;
}

/**
 * A call's options with `stop` added to its signal (a stream's own: leaving the loop stops the
 * generation). Options that are not an object, or whose signal is not an AbortSignal, are given
 * back as they are, for the call's checks to refuse.
 */
export function stoppable<T extends GenerateOptions>(options: T | undefined, stop: AbortSignal): T | undefined {
  if (options !== undefined && !isObject(options)) return options;
  const signal: unknown = options?.signal;
  if (signal === undefined) return { ...options, signal: stop } as T;
  if (signal instanceof AbortSignal) return { ...options, signal: AbortSignal.any([signal, stop]) } as T;
  if (!isSignal(signal)) return options;
  // an object that behaves as a signal: followed by a signal of our own
  const both = new AbortController();
  if (signal.aborted) both.abort();
  signal.addEventListener("abort", () => both.abort(), { once: true });
  stop.addEventListener("abort", () => both.abort(), { once: true });
  return { ...options, signal: both.signal } as T;
}

/**
 * An async iterable of text pieces, with the final result once it ends. `parts()` gives the same
 * pieces marked as thinking text or answer; use one or the other. Leaving the loop early (`break`,
 * `return`, a throw) stops the generation at its next step: the call then ends with stopReason
 * "aborted" (on `result`) and the model or session is free for the next call.
 */
export class TextStream implements AsyncIterable<string> {
  /** Resolves with the full result when generation ends. */
  readonly result: Promise<GenerateResult>;
  #pieces: StreamPart[] = [];
  #wake: (() => void) | null = null;
  #ended = false;
  #stop = new AbortController();

  /** Use Model.stream. `start` runs the call with `onPiece` and `stop`, a signal that aborts it when the loop is left. */
  constructor(
    start: (onPiece: (piece: string, reasoning?: boolean) => void, stop: AbortSignal) => Promise<GenerateResult>,
  ) {
    let started: Promise<GenerateResult>;
    try {
      started = start((piece, reasoning = false) => {
        this.#pieces.push({ text: piece, reasoning });
        this.#wake?.();
      }, this.#stop.signal);
    } catch (e) {
      started = Promise.reject(e);
    }
    this.result = started.finally(() => {
      this.#ended = true;
      this.#wake?.();
    });
    this.result.catch(() => {}); // surfaced through iteration
  }

  /** As the last expression of a notebook cell: streams the text into the cell, then shows the result. */
  [DISPLAY](): Promise<MimeBundle> {
    return displayStream(this);
  }

  /** The text pieces in order; throws the generation's error, if any, at the end. */
  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    for await (const part of this.parts()) yield part.text;
  }

  /**
   * The pieces in order, each marked as thinking text or answer; throws the generation's error at
   * the end. Leaving the loop early stops the generation.
   */
  async *parts(): AsyncGenerator<StreamPart> {
    try {
      while (true) {
        if (this.#pieces.length) {
          yield this.#pieces.shift()!;
          continue;
        }
        if (this.#ended) {
          await this.result; // throws the generation's error, if any
          return;
        }
        await new Promise<void>((r) => (this.#wake = r));
        this.#wake = null;
      }
    } finally {
      if (!this.#ended) this.#stop.abort(); // the loop was left early: generation stops at its next step
    }
  }
}
