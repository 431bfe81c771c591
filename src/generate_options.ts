/**
 * Checks the sampling and stopping options of a generate call before they reach the engine, so a
 * bad value is an INVALID_ARGUMENT error that names it, not an engine failure.
 *
 * @module
 */

import { LoupeError } from "./errors.ts";

/** The largest maxTokens: the engine counts generated tokens in 32 bits. */
export const MAX_TOKENS_LIMIT = 2 ** 31 - 1;

const NUMBERS = ["temperature", "topK", "topP", "minP", "repeatPenalty", "repeatLastN", "seed"] as const;

/** What is wrong with `options` (a sentence fragment), or null when nothing is. */
export function invalidGenerateOption(options: Record<string, unknown>): string | null {
  const max = options.maxTokens;
  if (max !== undefined && (typeof max !== "number" || !Number.isInteger(max) || max < 0)) {
    return `maxTokens must be a whole number, not ${typeof max === "number" ? max : JSON.stringify(max) ?? typeof max}`;
  }
  if (typeof max === "number" && max > MAX_TOKENS_LIMIT) {
    return `maxTokens must be at most ${MAX_TOKENS_LIMIT}, not ${max}`;
  }
  for (const key of NUMBERS) {
    const v = options[key];
    if (v !== undefined && (typeof v !== "number" || !Number.isFinite(v))) {
      return `${key} must be a finite number, not ${typeof v === "number" ? v : JSON.stringify(v) ?? typeof v}`;
    }
  }
  for (const key of ["topK", "repeatLastN", "seed"] as const) {
    const v = options[key];
    if (v !== undefined && !Number.isInteger(v)) return `${key} must be a whole number, not ${v}`;
  }
  const stop = options.stop;
  if (stop !== undefined && (!Array.isArray(stop) || !stop.every((s) => typeof s === "string"))) {
    return "stop must be an array of strings";
  }
  return null;
}

/**
 * Checks a generate call's options (see {@linkcode invalidGenerateOption}) and returns its
 * maxTokens (`fallback` when not given); throws an INVALID_ARGUMENT LoupeError.
 */
export function checkGenerateOptions(options: object, fallback: number): number {
  const invalid = invalidGenerateOption(options as Record<string, unknown>);
  if (invalid) throw new LoupeError("INVALID_ARGUMENT", `Cannot generate: ${invalid}`);
  return (options as { maxTokens?: number }).maxTokens ?? fallback;
}
