/**
 * Checks the sampling and stopping options of a generate call before they reach the engine, so a
 * bad value is an INVALID_ARGUMENT error that names it, not an engine failure.
 *
 * @module
 */

const NUMBERS = ["temperature", "topK", "topP", "minP", "repeatPenalty", "repeatLastN", "seed"] as const;

/** What is wrong with `options` (a sentence fragment), or null when nothing is. */
export function invalidGenerateOption(options: Record<string, unknown>): string | null {
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
