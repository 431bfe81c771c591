/**
 * The one check of a path before loupe reads it: it exists (else NOT_FOUND) and is a regular
 * file (else NOT_A_FILE, naming what it is: a directory, a FIFO, a device, a socket); and of a
 * path loupe writes: nothing there, or a regular file.
 *
 * @module
 */
import { LoupeError } from "./errors.ts";

/**
 * Stats `path` and checks that it is a regular file.
 *
 * @param path The path.
 * @param what The sentence an error starts with, e.g. `Cannot load model "x.gguf"`.
 * @returns Its file info.
 */
export async function statFile(path: string, what: string): Promise<Deno.FileInfo> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "no such file" : (e as Error).message;
    throw new LoupeError("NOT_FOUND", `${what}: ${why}`, { cause: e });
  }
  if (!info.isFile) throw notAFile(info, what);
  return info;
}

/**
 * Checks a path loupe is about to write (a file it replaces): nothing is there, or a regular
 * file; a directory, FIFO, device or socket is NOT_A_FILE (writing would block, fail, or replace
 * a device node).
 *
 * @param path The path.
 * @param what The sentence an error starts with, e.g. `Cannot save the session to "x"`.
 */
export async function checkTarget(path: string, what: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw new LoupeError("NOT_FOUND", `${what}: ${(e as Error).message}`, { cause: e });
  }
  if (!info.isFile) throw notAFile(info, what);
}

function notAFile(info: Deno.FileInfo, what: string): LoupeError {
  const kind = info.isDirectory
    ? "a directory"
    : info.isFifo
    ? "a FIFO"
    : info.isCharDevice || info.isBlockDevice
    ? "a device"
    : info.isSocket
    ? "a socket"
    : "not a regular file";
  return new LoupeError("NOT_A_FILE", `${what}: it is ${kind}, not a file`);
}
