/**
 * The sampling and stopping options of every generating call (model, session, image chat): their
 * defaults, their checks, and the parameters the engine receives. The engine has no defaults of
 * its own: it takes every value from {@linkcode samplingParams}.
 *
 * @module
 */
import { LoupeError } from "../util/errors.ts";
import { type FieldRule, fieldsProblem, isObject, shown } from "../util/check.ts";

/** Default cap on generated tokens when `maxTokens` is not given: generation never runs to a full context by accident. */
export const DEFAULT_MAX_TOKENS = 256;

/** The largest maxTokens: the engine counts generated tokens in 32 bits. */
export const MAX_TOKENS_LIMIT = 2 ** 31 - 1;

/** The sampling values used when an option is not given (llama.cpp's own defaults, with the repeat penalty off). */
export const SAMPLING_DEFAULTS = {
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1,
  repeatLastN: 64,
  /** A random seed each call. */
  seed: 0xFFFFFFFF,
} as const;

/** Sampling and stopping options of generate, stream and chat (defaults: {@linkcode SAMPLING_DEFAULTS}). */
export interface GenerateOptions {
  /** Most tokens to generate; default {@linkcode DEFAULT_MAX_TOKENS}. */
  maxTokens?: number;
  /** Sampling temperature; 0 = greedy. */
  temperature?: number;
  /** Top-k; 0 disables. */
  topK?: number;
  /** Top-p; 1 disables. */
  topP?: number;
  /** Min-p; 0 disables. */
  minP?: number;
  /** Repeat penalty; 1 = off. */
  repeatPenalty?: number;
  /** Tokens the repeat penalty looks back over. */
  repeatLastN?: number;
  /** Sampling seed. */
  seed?: number;
  /** Strings that end generation; they are not part of the text. */
  stop?: string[];
  /** Keep going past end-of-generation tokens. */
  ignoreEos?: boolean;
  /** Aborts the call; the result then has stopReason "aborted". */
  signal?: AbortSignal;
  /** Overrides the model's requireDevice for this call. */
  requireDevice?: string;
  /** Add BOS/EOS as the model wants (default true). */
  addSpecial?: boolean;
  /** Parse special tokens written in the prompt, as llama.cpp's tools do (default true). */
  parseSpecial?: boolean;
  /** A GBNF grammar the output must follow (e.g. `root ::= "yes" | "no"`). */
  grammar?: string;
  /**
   * A JSON Schema the output must follow (converted to a grammar by the engine); the result's
   * `json` holds the parsed value.
   */
  jsonSchema?: Record<string, unknown>;
}

/** The grammar part of the sampling parameters: what constrains the tokens sampled. */
export interface GrammarParams {
  /** GBNF ("" for none). */
  grammar: string;
  /** Whether the grammar waits for a trigger (a tool call's opening) before it applies. */
  grammarLazy: boolean;
  /** The triggers of a lazy grammar: `{type: "word" | "pattern" | "patternFull", value}`. */
  grammarTriggers: Array<{ type: string; value: string }>;
  /** Special tokens written out as text (a chat format's markers, e.g. `<tool_call>`). */
  preservedTokens: string[];
  /** Text fed through the grammar before sampling (a chat format's generation prompt). */
  grammarPrefill: string;
}

/** No grammar. */
export const NO_GRAMMAR: GrammarParams = {
  grammar: "",
  grammarLazy: false,
  grammarTriggers: [],
  preservedTokens: [],
  grammarPrefill: "",
};

/** What the engine's generation takes: every sampling value, defaults filled in. */
export interface SamplingParams extends GrammarParams {
  /** Most tokens to generate. */
  maxTokens: number;
  /** See {@linkcode GenerateOptions}. */
  temperature: number;
  /** See {@linkcode GenerateOptions}. */
  topK: number;
  /** See {@linkcode GenerateOptions}. */
  topP: number;
  /** See {@linkcode GenerateOptions}. */
  minP: number;
  /** See {@linkcode GenerateOptions}. */
  repeatPenalty: number;
  /** See {@linkcode GenerateOptions}. */
  repeatLastN: number;
  /** See {@linkcode GenerateOptions}. */
  seed: number;
  /** See {@linkcode GenerateOptions}. */
  stop: string[];
  /** See {@linkcode GenerateOptions}. */
  ignoreEos: boolean;
}

const NUMBERS = ["temperature", "topK", "topP", "minP", "repeatPenalty", "repeatLastN", "seed"] as const;

/** The fields of generate options besides the numbers, and what each may hold. */
const GENERATE_RULES: Record<string, FieldRule> = {
  stop: (v) => Array.isArray(v) && v.every((s) => typeof s === "string") ? null : "an array of strings",
  ignoreEos: "boolean",
  signal: "signal",
  requireDevice: "nonEmptyString",
  addSpecial: "boolean",
  parseSpecial: "boolean",
  grammar: (v) => typeof v === "string" ? null : "a GBNF string",
  jsonSchema: (v) => isObject(v) ? null : "a JSON Schema object",
};

/** What is wrong with `options` (a sentence fragment), or null when nothing is. */
export function invalidGenerateOption(options: unknown): string | null {
  if (options === undefined) return null;
  if (!isObject(options)) return `the options must be an object, not ${shown(options)}`;
  const max = options.maxTokens;
  if (max !== undefined && (typeof max !== "number" || !Number.isInteger(max) || max < 0)) {
    return `maxTokens must be a whole number, not ${shown(max)}`;
  }
  if (typeof max === "number" && max > MAX_TOKENS_LIMIT) {
    return `maxTokens must be at most ${MAX_TOKENS_LIMIT}, not ${max}`;
  }
  for (const key of NUMBERS) {
    const v = options[key];
    if (v !== undefined && (typeof v !== "number" || !Number.isFinite(v))) {
      return `${key} must be a finite number, not ${shown(v)}`;
    }
  }
  for (const key of ["topK", "repeatLastN", "seed"] as const) {
    const v = options[key];
    if (v !== undefined && !Number.isInteger(v)) return `${key} must be a whole number, not ${v}`;
  }
  const seed = options.seed as number | undefined;
  if (seed !== undefined && (seed < 0 || seed > 0xFFFFFFFF)) {
    return `seed must be a whole number from 0 to ${0xFFFFFFFF}, not ${seed}`;
  }
  return fieldsProblem(options, GENERATE_RULES);
}

/**
 * Checks the options of a generating call (see {@linkcode invalidGenerateOption}) and returns
 * them (`{}` for undefined); throws an INVALID_ARGUMENT LoupeError starting with `what`. Every
 * generating entry point calls it first, so `options.signal` and the rest can be read safely.
 */
export function generateOptions<T extends GenerateOptions>(options: T | null | undefined, what = "Cannot generate"): T {
  const invalid = invalidGenerateOption(options);
  if (invalid) throw new LoupeError("INVALID_ARGUMENT", `${what}: ${invalid}`);
  return options ?? {} as T;
}

/**
 * Checks a generate call's options (see {@linkcode invalidGenerateOption}) and returns what the
 * engine takes, defaults filled in; throws an INVALID_ARGUMENT LoupeError. `grammar` is the
 * constraint the caller worked out (src/chat: from `grammar`, `jsonSchema` or tools); without it,
 * `options.grammar` applies as it is and `jsonSchema` is refused (the call cannot convert it).
 */
export function samplingParams(given: GenerateOptions, grammar?: GrammarParams): SamplingParams {
  const options = generateOptions(given);
  if (!grammar && options.jsonSchema !== undefined) {
    throw new LoupeError("INVALID_ARGUMENT", "Cannot generate: jsonSchema is not supported by this call");
  }
  const d = SAMPLING_DEFAULTS;
  return {
    ...(grammar ?? { ...NO_GRAMMAR, grammar: options.grammar ?? "" }),
    maxTokens: options.maxTokens ?? DEFAULT_MAX_TOKENS,
    temperature: options.temperature ?? d.temperature,
    topK: options.topK ?? d.topK,
    topP: options.topP ?? d.topP,
    minP: options.minP ?? d.minP,
    repeatPenalty: options.repeatPenalty ?? d.repeatPenalty,
    repeatLastN: options.repeatLastN ?? d.repeatLastN,
    seed: options.seed ?? d.seed,
    stop: options.stop ?? [],
    ignoreEos: options.ignoreEos ?? false,
  };
}
