/**
 * The type checks of the public entry points' arguments: an options object and its fields, a
 * name or a path, and how a wrong value is named in a message. A wrong type is an
 * `INVALID_ARGUMENT` LoupeError with a sentence (`Cannot generate: maxTokens must be a whole
 * number, not "5"`), never a TypeError from deep inside. The rules of each kind of options live
 * with those options (src/generate/options.ts, src/engine/load_options.ts, …); this is the
 * vocabulary they share.
 *
 * @module
 */
import { LoupeError } from "./errors.ts";

/**
 * A value as a message names it: strings quoted (cut after 40 characters), numbers, booleans
 * and null as written, anything else by its kind ("an array", "a function", "an object").
 */
export function shown(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  switch (typeof value) {
    case "string":
      return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
    case "number":
    case "boolean":
      return String(value);
    case "bigint":
      return `${value}n`;
    case "function":
      return "a function";
    case "symbol":
      return "a symbol";
  }
  if (Array.isArray(value)) return "an array";
  const name = (value as object).constructor?.name;
  return name && name !== "Object" ? `a ${name}` : "an object";
}

/** Whether `value` is an object that options can be read from (not null, not an array). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Whether `value` is an AbortSignal, or an object that behaves as one (`aborted` and
 * `addEventListener`), as the calls use it.
 */
export function isSignal(value: unknown): value is AbortSignal {
  return value instanceof AbortSignal ||
    (isObject(value) && typeof value.aborted === "boolean" && typeof value.addEventListener === "function");
}

/**
 * What a field may hold: a kind, a list of the strings it may be, or a function that returns
 * what the value must be (a phrase such as `a whole number ≥ 1`) when it is wrong, else null.
 */
export type FieldRule =
  | "boolean"
  | "string"
  | "nonEmptyString"
  | "function"
  | "signal"
  | "object"
  | "finite"
  | "integer"
  | "positiveInteger"
  | "nonNegativeInteger"
  | readonly string[]
  | ((value: unknown) => string | null);

const KINDS: Record<Exclude<FieldRule, readonly string[] | ((v: unknown) => string | null)>, {
  ok: (v: unknown) => boolean;
  expected: string;
}> = {
  boolean: { ok: (v) => typeof v === "boolean", expected: "true or false" },
  string: { ok: (v) => typeof v === "string", expected: "a string" },
  nonEmptyString: { ok: (v) => typeof v === "string" && v !== "", expected: "a non-empty string" },
  function: { ok: (v) => typeof v === "function", expected: "a function" },
  signal: { ok: isSignal, expected: "an AbortSignal" },
  object: { ok: isObject, expected: "an object" },
  finite: { ok: (v) => typeof v === "number" && Number.isFinite(v), expected: "a finite number" },
  integer: { ok: (v) => Number.isInteger(v), expected: "a whole number" },
  positiveInteger: { ok: (v) => Number.isInteger(v) && (v as number) >= 1, expected: "a positive whole number" },
  nonNegativeInteger: { ok: (v) => Number.isInteger(v) && (v as number) >= 0, expected: "a whole number ≥ 0" },
};

/** The words of a list of strings: `"auto", "on" or "off"`. */
export function oneOf(values: readonly string[]): string {
  const quoted = values.map((v) => JSON.stringify(v));
  return quoted.length < 2 ? quoted.join("") : `${quoted.slice(0, -1).join(", ")} or ${quoted.at(-1)}`;
}

/** What is wrong with `value` under `rule` (`must be …, not …`), or null when nothing is. */
export function ruleProblem(value: unknown, rule: FieldRule): string | null {
  let expected: string | null;
  if (typeof rule === "function") expected = rule(value);
  else if (Array.isArray(rule)) expected = rule.includes(value as string) ? null : oneOf(rule);
  else {
    const kind = KINDS[rule as keyof typeof KINDS];
    expected = kind.ok(value) ? null : kind.expected;
  }
  return expected === null ? null : `must be ${expected}, not ${shown(value)}`;
}

/**
 * What is wrong with the fields of `options` that `rules` names (`maxTokens must be …, not …`),
 * or null. Fields left out (undefined) are fine; fields `rules` does not name are not looked at.
 */
export function fieldsProblem(options: Record<string, unknown>, rules: Record<string, FieldRule>): string | null {
  for (const [name, rule] of Object.entries(rules)) {
    const value = options[name];
    if (value === undefined) continue;
    const problem = ruleProblem(value, rule);
    if (problem) return `${name} ${problem}`;
  }
  return null;
}

/**
 * Checks an options argument and its fields: undefined gives `{}`, an object is checked against
 * `rules`; anything else, or a wrong field, is an INVALID_ARGUMENT error starting with `what`
 * (`Cannot generate: the options must be an object, not null`).
 */
export function checkOptions<T extends object>(
  options: T | null | undefined,
  rules: Record<string, FieldRule>,
  what: string,
): T {
  if (options === undefined) return {} as T;
  if (!isObject(options)) {
    throw new LoupeError("INVALID_ARGUMENT", `${what}: the options must be an object, not ${shown(options)}`);
  }
  const problem = fieldsProblem(options, rules);
  if (problem) throw new LoupeError("INVALID_ARGUMENT", `${what}: ${problem}`);
  return options;
}

/**
 * Checks that an argument is a non-empty string (a path, a name, a text where empty means
 * nothing), naming it: `Cannot load model: the path must be a non-empty string, not 5`.
 */
export function checkString(value: unknown, name: string, what: string, allowEmpty = false): string {
  if (typeof value !== "string" || (!allowEmpty && value === "")) {
    throw new LoupeError(
      "INVALID_ARGUMENT",
      `${what}: ${name} must be ${allowEmpty ? "a string" : "a non-empty string"}, not ${shown(value)}`,
    );
  }
  return value;
}
