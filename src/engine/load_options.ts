/**
 * The options of loading a language model, and the checks of the options every loader shares
 * (models, sessions, embedders, projectors), before anything reaches the engine: a typed error
 * with the option's name instead of a JSON parser's complaint, a silently rounded value or a
 * stalled kernel.
 *
 * @module
 */
import { LoupeError } from "../util/errors.ts";
import { checkOptions, type FieldRule, isObject, shown } from "../util/check.ts";

/** Throws INVALID_ARGUMENT unless `value` is undefined or a whole number ≥ 1. */
export function positiveInteger(value: unknown, name: string, what: string): void {
  if (value !== undefined && (!Number.isInteger(value) || (value as number) < 1)) {
    throw new LoupeError("INVALID_ARGUMENT", `${what}: ${name} must be a positive whole number, not ${shown(value)}`);
  }
}

/** The flash attention settings. */
export const FLASH_ATTN = ["auto", "on", "off"] as const;

/** The poolings of an embedder (see `LoadEmbedderOptions.pooling`). */
export const POOLINGS = ["none", "mean", "cls", "last", "rank"] as const;

/**
 * Every option of the loaders (`loadModel`, `loadEmbedder`, `model.session`,
 * `model.loadSession`, `model.loadProjector`) and what it may hold: an option has one meaning
 * and one type wherever it appears, so one table checks them all before anything reaches the
 * engine (whose JSON reader would otherwise answer `[json.exception.type_error.302]`, or take
 * an unknown flash attention setting for "auto" without a word).
 */
const LOAD_RULES: Record<string, FieldRule> = {
  gpuLayers: (v) => v === "auto" || v === "all" || Number.isInteger(v) ? null : 'a whole number, "auto" or "all"',
  device: "nonEmptyString",
  contextSize: "positiveInteger",
  batchSize: "positiveInteger",
  threads: "positiveInteger",
  threadsBatch: "positiveInteger",
  maxSequences: "positiveInteger",
  flashAttn: FLASH_ATTN,
  requireDevice: "nonEmptyString",
  vocabOnly: "boolean",
  isolate: "boolean",
  rpc: (v) =>
    Array.isArray(v) && v.length > 0 && v.every((e) => typeof e === "string" && e !== "")
      ? null
      : 'a non-empty list of "host:port" strings',
  devices: (v) =>
    Array.isArray(v) && v.length > 0 && v.every((e) => typeof e === "string" && e !== "")
      ? null
      : "a non-empty list of device names",
  tensorSplit: (v) =>
    Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === "number" && Number.isFinite(x) && x >= 0) &&
      v.some((x) => x > 0)
      ? null
      : "a list of proportions (numbers ≥ 0, not all 0)",
  splitMode: ["layer", "row", "none"],
  mainGpu: "nonNegativeInteger",
  measure: "boolean",
  projector: "nonEmptyString",
  pooling: POOLINGS,
  onProgress: "function",
  progress: "boolean",
  signal: "signal",
  contextShift: "boolean",
  nKeep: "nonNegativeInteger",
  systemPrompt: "string",
  gpu: "boolean",
  warmup: "boolean",
  probe: (v) => typeof v === "boolean" || isObject(v) ? null : "true, false or the probe's options",
};

/**
 * Checks a loader's options before anything reaches the engine and returns them (`{}` for
 * undefined): the options must be an object, and every option given must have its type (see
 * the table above). Sizes and threads are whole numbers ≥ 1; threads are at most the CPUs this
 * process may use (`navigator.hardwareConcurrency`): ggml's threads wait for each other by
 * spinning at every graph node, so more threads than CPUs slow every graph down out of all
 * proportion (here, on 2 CPUs, 4 tokens of a tiny model took 3 s with 8 threads and 34 s with
 * 64; 128 did not finish in a minute). Throws INVALID_ARGUMENT starting with `what`.
 */
export function checkLoadOptions<T extends object>(options: T | null | undefined, what: string): T {
  const checked = checkOptions(options, LOAD_RULES, what) as T & { threads?: number; threadsBatch?: number };
  const cpus = navigator.hardwareConcurrency;
  for (const name of ["threads", "threadsBatch"] as const) {
    const n = checked[name];
    if (n !== undefined && n > cpus) {
      throw new LoupeError(
        "INVALID_ARGUMENT",
        `${what}: ${name} is ${n} but this process may use ${cpus} CPUs; ggml's threads wait for each other ` +
          `by spinning, so more threads than CPUs slow every step down many times over`,
      );
    }
  }
  return checked;
}

/** Options of `loadModel`. */
export interface LoadModelOptions {
  /** Layers to put on the GPU: a number, "all", or "auto" (all when a GPU is present; default). 0 keeps the model on the CPU. */
  gpuLayers?: number | "auto" | "all";
  /** Restrict offloading to this device, e.g. "Vulkan0" or "CUDA0". */
  device?: string;
  /**
   * Context size in tokens; default min(training context, 4096). Its memory (KV cache and compute
   * buffers, per device) is estimated before anything is allocated: a context that would not fit in
   * free memory is a `NOT_ENOUGH_MEMORY` error naming what it needs and what is free (README, "Memory
   * checks").
   */
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
  /**
   * Run the model in a worker process of its own (README, "When the engine crashes"): an engine
   * that aborts, segfaults or is killed ends that process, not this one; the call in flight and
   * every later one reject with `ENGINE_CRASHED`, and `model.crashed` is true. Every API works the
   * same. Each native call crosses a pipe (about 0.5 ms), once per step of the token loop, not
   * per token. Default false, or true when the environment has `LOUPE_ISOLATE=1`.
   */
  isolate?: boolean;
  /**
   * ggml RPC servers to use as devices, `"host:port"` each (`deno task rpc-server` or llama.cpp's
   * `rpc-server`; README, "Several machines"). Their devices come after this machine's GPUs in
   * the device list, as with llama.cpp's `--rpc`. An RPC model always runs isolated
   * (`isolate: false` is refused): the engine's RPC client ends its process when a server dies.
   * A server that cannot be reached or answers no handshake within 5 s is `RPC_UNREACHABLE`.
   */
  rpc?: string[];
  /** The devices to use, in order (llama.cpp's `--device`), e.g. `["RPC0", "RPC1"]`; the CPU holds what they do not. Not with `device`. */
  devices?: string[];
  /** How much of the model each device of `devices` (or of the default list) takes, as proportions (llama.cpp's `--tensor-split`). */
  tensorSplit?: number[];
  /** How the model is split across devices (llama.cpp's `--split-mode`): "layer" (default), "row" or "none" (all on `mainGpu`). */
  splitMode?: "layer" | "row" | "none";
  /** The device (index into the list) for `splitMode` "none" and for row-split results (llama.cpp's `--main-gpu`). */
  mainGpu?: number;
}
