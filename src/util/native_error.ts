/**
 * The one mapping from the engine's status codes to loupe's error codes.
 *
 * @module
 */
import { Status } from "../../ffi/model.ts";
import { NativeError } from "../../ffi/util.ts";
import { EngineCrash } from "../../ffi/isolated.ts";
import { LoupeError, type LoupeErrorCode } from "./errors.ts";

const CODE_OF_STATUS: Record<number, LoupeErrorCode> = {
  [Status.INVALID]: "INVALID_ARGUMENT",
  [Status.LOAD]: "LOAD_FAILED",
  [Status.DECODE]: "DECODE_FAILED",
  [Status.CONTEXT]: "CONTEXT_OVERFLOW",
  [Status.ABORTED]: "ABORTED",
  [Status.STATE]: "CLOSED",
  [Status.INTERNAL]: "INTERNAL",
  [Status.FORMAT]: "BAD_FORMAT",
  [Status.MEMORY]: "NOT_ENOUGH_MEMORY",
};

/**
 * The engine's message as the detail of a sentence: a JSON reader's error
 * (`invalid parameters: [json.exception.type_error.302] type must be boolean, but is string`)
 * becomes words; the options are checked in TypeScript first, so it means a parameter loupe
 * itself sent wrong.
 */
export function nativeDetail(message: string): string {
  const json = message.match(/\[json\.exception\.[a-z_]+\.\d+\]\s*(.*)$/s);
  if (json) return `the engine could not read a parameter loupe sent it (${json[1] || "no detail"})`;
  return message || "the engine gave no reason";
}

/**
 * Rewords a failure as a LoupeError: `what` is the sentence (`Cannot generate`), the engine's
 * message the detail (kept whole as `nativeMessage`). A LoupeError passes through unchanged;
 * any other error (a bug of loupe's own) is INTERNAL.
 */
export function wrap(e: unknown, what: string): LoupeError {
  if (e instanceof LoupeError) return e;
  if (e instanceof EngineCrash) {
    return new LoupeError("ENGINE_CRASHED", `${what}: ${e.message}`, {
      nativeMessage: e.stderr,
      cause: e,
      crash: { signal: e.signal, exitCode: e.exitCode, stderr: e.stderr },
    });
  }
  if (e instanceof NativeError) {
    return new LoupeError(CODE_OF_STATUS[e.status] ?? "INTERNAL", `${what}: ${nativeDetail(e.message)}`, {
      nativeMessage: e.message,
      cause: e,
    });
  }
  return new LoupeError("INTERNAL", `${what}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
}
