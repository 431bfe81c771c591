/**
 * The one mapping from the engine's status codes to loupe's error codes.
 *
 * @module
 */
import { Status } from "../../ffi/model.ts";
import { NativeError } from "../../ffi/util.ts";
import { LoupeError, type LoupeErrorCode } from "./errors.ts";

const CODE_OF_STATUS: Record<number, LoupeErrorCode> = {
  [Status.INVALID]: "INVALID_ARGUMENT",
  [Status.LOAD]: "LOAD_FAILED",
  [Status.DECODE]: "DECODE_FAILED",
  [Status.CONTEXT]: "CONTEXT_OVERFLOW",
  [Status.ABORTED]: "ABORTED",
  [Status.STATE]: "CLOSED",
  [Status.INTERNAL]: "INTERNAL",
};

/**
 * Rewords a failure as a LoupeError: `what` is the sentence (`Cannot generate`), the engine's
 * message the detail (kept as `nativeMessage`). A LoupeError passes through unchanged.
 */
export function wrap(e: unknown, what: string): LoupeError {
  if (e instanceof LoupeError) return e;
  if (e instanceof NativeError) {
    return new LoupeError(CODE_OF_STATUS[e.status] ?? "INTERNAL", `${what}: ${e.message}`, {
      nativeMessage: e.message,
      cause: e,
    });
  }
  return new LoupeError("INTERNAL", `${what}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
}
