/**
 * The one error class of loupe, and its placement subclass.
 *
 * @module
 */

/**
 * What went wrong, as a stable string a caller can switch on (the README's "Errors" table says
 * the same; keep the two in step):
 *
 * - `NOT_FOUND`: a file, repository, revision, file in a repository or projector is not there,
 *   or cannot be read.
 * - `NOT_A_FILE`: a path is a directory, a FIFO, a device or a socket, not a regular file.
 * - `BAD_FORMAT`: a file is not what it should be: not GGUF, truncated, corrupt; a damaged or
 *   foreign session file; an image or audio clip that does not decode.
 * - `LOAD_FAILED`: the engine could not load a well-formed file, or the engine itself could not
 *   be opened (its reason in `nativeMessage`).
 * - `BACKEND_UNAVAILABLE`: no device matches a load's `requireDevice` or `device`, or no device can
 *   run the image encoder.
 * - `INVALID_ARGUMENT`: an argument or option is wrong: its type or its value (the message names
 *   it and what it must be), a callback given as an option threw (the thrown value is the
 *   `cause`), or the call cannot be made on this object as it is (a tokenizer-only model asked to
 *   generate, logits before anything was evaluated, `embed` on a reranker).
 * - `CONTEXT_OVERFLOW`: a prompt or text does not fit the context (or the embedder's `maxTokens`)
 *   and cannot be shifted or cut.
 * - `DECODE_FAILED`: the engine failed to evaluate a batch.
 * - `ABORTED`: a `signal` cancelled a load or a call (a generating call ends with
 *   `stopReason: "aborted"` instead).
 * - `CLOSED`: the model, session, embedder or projector was closed before the call ran.
 * - `PLACEMENT`: a stage's heavy ops ran on another device than `requireDevice` (a
 *   {@linkcode PlacementError}).
 * - `WRONG_MODEL`: a session file or a projector belongs to another model.
 * - `WRONG_KIND`: the file is another kind of model (an embedder given to `loadModel`, a
 *   projector given as a model, a language model given as a projector).
 * - `GATED`: a gated hub repository whose conditions the token's account has not accepted.
 * - `UNAUTHORIZED`: the hub refused the token, or a private repository needs one.
 * - `OFFLINE`: offline (or the hub unreachable), and the cache lacks what is needed.
 * - `NETWORK`: the server could not be reached, or kept failing after the retries.
 * - `BAD_RESPONSE`: the server answered something unusable (no JSON, wrong sizes or ranges).
 * - `CHECKSUM`: a download's hash does not match what the hub lists; the file was deleted.
 * - `DISK_FULL`: the disk has no room for a download.
 * - `NOT_ENOUGH_MEMORY`: the call would need more memory than is free (what is needed and what
 *   is free are named).
 * - `BUSY`: a server's queue is full (every slot busy and the queue at its limit): try again later.
 * - `ENGINE_CRASHED`: the worker process of an isolated model (`isolate: true`) died: the engine
 *   aborted (a GGML_ASSERT), crashed, or the process was killed. `crash` has the signal and the
 *   process's last stderr lines; the model is unusable (close it and load again).
 * - `RPC_UNREACHABLE`: an RPC server (`rpc` option) could not be reached, closed the connection,
 *   did not answer the handshake in time, speaks another protocol version, or made the engine's
 *   RPC client give up while adding it.
 * - `INTERNAL`: a bug of loupe's own (a state it should never reach); please report it.
 */
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
  | "NOT_ENOUGH_MEMORY"
  | "BUSY"
  | "ENGINE_CRASHED"
  | "RPC_UNREACHABLE"
  | "INTERNAL";

/** Options of {@linkcode LoupeError}. */
export interface LoupeErrorOptions {
  /** The native library's own message, when the error came from it. */
  nativeMessage?: string;
  /** The underlying error. */
  cause?: unknown;
  /** How an isolated engine's worker process died (`ENGINE_CRASHED`). */
  crash?: EngineCrashInfo;
}

/** How an isolated engine's worker process died. */
export interface EngineCrashInfo {
  /** The signal that ended it, e.g. "SIGABRT" or "SIGKILL"; null when it exited. */
  signal: string | null;
  /** Its exit code when it exited without a signal. */
  exitCode: number | null;
  /** The last of what it wrote to stderr (up to 16 KiB): the engine's assertion text, for one. */
  stderr: string;
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
  /** How the worker process died (`ENGINE_CRASHED` only). */
  readonly crash?: EngineCrashInfo;

  /** Creates the error. */
  constructor(code: LoupeErrorCode, message: string, options: LoupeErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = "LoupeError";
    this.code = code;
    this.nativeMessage = options.nativeMessage;
    if (options.crash) this.crash = options.crash;
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
