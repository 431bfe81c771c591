/**
 * Checks of the size and thread options every loader shares (models, sessions, embedders,
 * projectors), before anything reaches the engine: a typed error with the option's name
 * instead of a JSON parser's complaint, a silently rounded value or a stalled kernel.
 *
 * @module
 */
import { LoupeError } from "./errors.ts";

/** Throws INVALID_ARGUMENT unless `value` is undefined or a whole number ≥ 1. */
export function positiveInteger(value: number | undefined, name: string, what: string): void {
  if (value !== undefined && (!Number.isInteger(value) || value < 1)) {
    throw new LoupeError("INVALID_ARGUMENT", `${what}: ${name} must be a positive whole number, not ${value}`);
  }
}

/**
 * Checks `contextSize`, `batchSize`, `threads` and `threadsBatch` where given. Threads are at
 * most the CPUs this process may use (`navigator.hardwareConcurrency`): ggml's threads wait for
 * each other by spinning at every graph node, so more threads than CPUs slow every graph down
 * out of all proportion (here, on 2 CPUs, 4 tokens of a tiny model took 3 s with 8 threads and
 * 34 s with 64; 128 did not finish in a minute).
 */
export function checkLoadOptions(
  options: { contextSize?: number; batchSize?: number; threads?: number; threadsBatch?: number },
  what: string,
): void {
  positiveInteger(options.contextSize, "contextSize", what);
  positiveInteger(options.batchSize, "batchSize", what);
  const cpus = navigator.hardwareConcurrency;
  for (const name of ["threads", "threadsBatch"] as const) {
    const n = options[name];
    positiveInteger(n, name, what);
    if (n !== undefined && n > cpus) {
      throw new LoupeError(
        "INVALID_ARGUMENT",
        `${what}: ${name} is ${n} but this process may use ${cpus} CPUs; ggml's threads wait for each other ` +
          `by spinning, so more threads than CPUs slow every step down many times over`,
      );
    }
  }
}
