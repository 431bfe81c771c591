/**
 * A stream of generated text pieces, with the final result once it ends.
 *
 * @module
 */
import { DISPLAY, displayStream, type MimeBundle } from "../util/presenter.ts";
import type { GenerateResult } from "./result.ts";

/** A piece of a stream, marked as thinking text or not. */
export interface StreamPart {
  /** The text. */
  text: string;
  /** Whether it is thinking text (between a model's thinking tags), not the answer. */
  reasoning: boolean;
}

/**
 * An async iterable of text pieces, with the final result once it ends. `parts()` gives the same
 * pieces marked as thinking text or answer; use one or the other.
 */
export class TextStream implements AsyncIterable<string> {
  /** Resolves with the full result when generation ends. */
  readonly result: Promise<GenerateResult>;
  #pieces: StreamPart[] = [];
  #wake: (() => void) | null = null;
  #ended = false;

  /** Use Model.stream. */
  constructor(start: (onPiece: (piece: string, reasoning?: boolean) => void) => Promise<GenerateResult>) {
    this.result = start((piece, reasoning = false) => {
      this.#pieces.push({ text: piece, reasoning });
      this.#wake?.();
    }).finally(() => {
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

  /** The pieces in order, each marked as thinking text or answer; throws the generation's error at the end. */
  async *parts(): AsyncGenerator<StreamPart> {
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
  }
}
