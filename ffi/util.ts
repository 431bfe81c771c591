/**
 * Pointer and string helpers between TypeScript and libloupe. Only ffi/ handles pointers.
 *
 * @module
 */
import type { symbols } from "./symbols.ts";

/** The raw functions of libloupe. */
export type NativeApi = Deno.DynamicLibrary<typeof symbols>["symbols"];

/** A native failure: the library's code and message, before the typed API words it. */
export class NativeError extends Error {
  /** The LOUPE_ERR_* value (negative), or 0 when the call returned NULL. */
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "NativeError";
    this.status = status;
  }
}

/** UTF-8 bytes of `s` with a terminating NUL, for `const char *` parameters. */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** Readers of C strings for libraries whose pointers are another process's (isolated.ts). */
const cstringReaders = new WeakMap<NativeApi, (ptr: Deno.PointerObject) => string>();

/** Makes the string helpers read `api`'s C strings with `read` (an isolated engine's). */
export function setCStringReader(api: NativeApi, read: (ptr: Deno.PointerObject) => string): void {
  cstringReaders.set(api, read);
}

function getCString(api: NativeApi, ptr: Deno.PointerObject): string {
  const read = cstringReaders.get(api);
  return read ? read(ptr) : Deno.UnsafePointerView.getCString(ptr);
}

/** Reads a NUL-terminated UTF-8 string owned by the library ("" for NULL). */
export function readCString(api: NativeApi, ptr: Deno.PointerValue): string {
  return ptr === null ? "" : getCString(api, ptr);
}

/** The calling thread's last error message. */
/** INT32_MIN, the error result of the native calls whose other negative results are counts. */
export const INT32_MIN = -2147483648;

export function lastError(api: NativeApi): string {
  return readCString(api, api.loupe_last_error());
}

/** Reads and frees a `char *` result; throws the last error when it is NULL. */
export function takeString(api: NativeApi, ptr: Deno.PointerValue): string {
  if (ptr === null) throw new NativeError(0, lastError(api));
  try {
    return getCString(api, ptr);
  } finally {
    api.loupe_string_free(ptr);
  }
}

/** Reads, frees and parses a JSON `char *` result. */
export function takeJson<T>(api: NativeApi, ptr: Deno.PointerValue): T {
  return JSON.parse(takeString(api, ptr)) as T;
}

/** Parses a JSON `const char *` owned by a handle; throws the last error when it is NULL. */
export function readJson<T>(api: NativeApi, ptr: Deno.PointerValue): T {
  if (ptr === null) throw new NativeError(0, lastError(api));
  return JSON.parse(getCString(api, ptr)) as T;
}
