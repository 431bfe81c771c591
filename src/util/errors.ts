/**
 * The one error class of loupe, and its placement subclass.
 *
 * @module
 */

/** What went wrong, as a stable string a caller can switch on. */
export type LoupeErrorCode =
  | "NOT_FOUND"
  | "NOT_A_FILE"
  | "BAD_FORMAT"
  | "LOAD_FAILED"
  | "BACKEND_UNAVAILABLE"
  | "INVALID_ARGUMENT"
  | "CONTEXT_OVERFLOW"
  | "DECODE_FAILED"
  | "ABORTED"
  | "CLOSED"
  | "PLACEMENT"
  | "WRONG_MODEL"
  | "WRONG_KIND"
  | "GATED"
  | "UNAUTHORIZED"
  | "OFFLINE"
  | "NETWORK"
  | "BAD_RESPONSE"
  | "CHECKSUM"
  | "DISK_FULL"
  | "INTERNAL";

/** Options of {@linkcode LoupeError}. */
export interface LoupeErrorOptions {
  /** The native library's own message, when the error came from it. */
  nativeMessage?: string;
  /** The underlying error. */
  cause?: unknown;
}

/**
 * Every failure loupe reports. `message` is a sentence with a colon before the detail
 * (`Cannot load model "x.gguf": not a GGUF file`); `code` is stable; `nativeMessage` keeps
 * the engine's words.
 */
export class LoupeError extends Error {
  /** Stable code. */
  readonly code: LoupeErrorCode;
  /** The engine's message, if any. */
  readonly nativeMessage?: string;

  /** Creates the error. */
  constructor(code: LoupeErrorCode, message: string, options: LoupeErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = "LoupeError";
    this.code = code;
    this.nativeMessage = options.nativeMessage;
  }
}

/** A stage's heavy work ran on a device other than the one required. */
export class PlacementError extends LoupeError {
  /** The stage that broke the rule, e.g. "prompt". */
  readonly stage: string;
  /** The op that ran elsewhere, e.g. "MUL_MAT blk.0.attn_q.weight". */
  readonly op: string;
  /** The device it ran on, e.g. "CPU". */
  readonly device: string;
  /** What was required, e.g. "gpu" or "Vulkan0". */
  readonly required: string;

  /** Creates the error; `note` says more about the device (e.g. that it is a software renderer). */
  constructor(stage: string, op: string, device: string, required: string, note?: string) {
    super(
      "PLACEMENT",
      `Stage "${stage}" ran on the wrong device: ${op} ran on ${device}${
        note ? ` (${note})` : ""
      }, but requireDevice is "${required}"`,
    );
    this.name = "PlacementError";
    this.stage = stage;
    this.op = op;
    this.device = device;
    this.required = required;
  }
}
