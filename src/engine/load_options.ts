/**
 * The options of loading a language model, and the checks of the size and thread options every
 * loader shares (models, sessions, embedders, projectors), before anything reaches the engine: a typed error with the option's name
 * instead of a JSON parser's complaint, a silently rounded value or a stalled kernel.
 *
 * @module
 */
import { LoupeError } from "../util/errors.ts";

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

/** Options of `loadModel`. */
export interface LoadModelOptions {
  /** Layers to put on the GPU: a number, "all", or "auto" (all when a GPU is present; default). 0 keeps the model on the CPU. */
  gpuLayers?: number | "auto" | "all";
  /** Restrict offloading to this device, e.g. "Vulkan0" or "CUDA0". */
  device?: string;
  /** Context size in tokens; default min(training context, 4096). */
  contextSize?: number;
  /** Logical batch size for prompt evaluation (default 512). */
  batchSize?: number;
  /** CPU threads for generation; default `navigator.hardwareConcurrency`. */
  threads?: number;
  /** CPU threads for prompt evaluation; default: same as `threads`. */
  threadsBatch?: number;
  /** Flash attention: "auto" (default), "on" or "off". */
  flashAttn?: "auto" | "on" | "off";
  /** Require every stage's heavy ops to run on this device ("gpu", "cpu" or a name like "Vulkan0"). */
  requireDevice?: string;
  /** Load only the tokenizer (no weights, no context). */
  vocabOnly?: boolean;
  /** Count graph nodes per device (default true). Turning it off leaves stages without placement. */
  measure?: boolean;
  /**
   * Load a multimodal projector with the model, as `model.loadProjector` would: `"auto"` takes the
   * repository's `mmproj*.gguf` (for a local model, the one in its folder), any other value is the
   * projector's own path or name. Several candidates are an error naming them: none is picked.
   */
  projector?: "auto" | string;
  /** Called with the load fraction in [0, 1] while loading. */
  onProgress?: (fraction: number) => void;
  /**
   * Show a progress bar while loading: default only in a notebook; true also shows one line on a
   * terminal. A download (a model name) shows its bar in a notebook or a terminal unless false.
   */
  progress?: boolean;
  /** Cancels the load. */
  signal?: AbortSignal;
}
