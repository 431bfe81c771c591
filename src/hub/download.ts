/**
 * One file's download into the cache, which cannot go wrong silently: the bytes go to
 * `<dest>.incomplete` and resume with `Range` after a cut, an abort or a restart (the partial
 * bytes are hashed again first); the sha256 (or a git blob's sha1, or the size) is checked before
 * the file is renamed into place, and a mismatch deletes the partial file (`CHECKSUM`); free disk
 * space is checked first (`DISK_FULL`); a lock file (`flock`, as Python's `filelock`) makes a
 * second process wait and reuse the file; in one process concurrent calls share one transfer.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import { statfs } from "node:fs/promises";
import { dirname } from "node:path";
import { LoupeError } from "../util/errors.ts";
import {
  aborted,
  fetchFollowing,
  type HttpContext,
  isAbort,
  raiseForStatus,
  RetryableError,
  retryDelay,
  shown,
  sleep,
} from "./http.ts";

/** What to fetch and how to check it. */
export interface DownloadJob {
  /** Where the bytes come from. */
  url: URL;
  /** The final path (a blob); the partial file is `<dest>.incomplete`. */
  dest: string;
  /** The lock file's path. */
  lock: string;
  /** Bytes expected, when known. */
  size?: number;
  /** The sha256 expected (hex), when known. */
  sha256?: string;
  /** A git blob's sha1 expected (non-LFS files of a hub repository), when known. */
  gitSha1?: string;
  /** `If-Range` for a resumed request of a plain URL (its ETag). */
  ifRange?: string;
  /** The message prefix of errors, e.g. `Cannot download "hf:owner/repo"`. */
  what: string;
  /** The repository, for hub error messages. */
  repo?: string;
  /** The hub's endpoint, for hub error messages. */
  endpoint?: string;
}

/** What one download did. */
export interface DownloadOutcome {
  /** The file's bytes. */
  bytes: number;
  /** Bytes transferred now. */
  downloaded: number;
  /** Bytes found in a partial file and kept. */
  resumedFrom: number;
  /** Whether the file was already complete (in this process, another, or the cache). */
  cached: boolean;
  /** The response's ETag, if any. */
  etag?: string;
}

/** Bytes so far of one file; `total` null when unknown. */
export type OnBytes = (done: number, total: number | null) => void;

/** Test hooks: a replacement for the free-space query, and a write wrapper that may fail. */
export const downloadHooks: {
  freeBytes?: (dir: string) => Promise<number>;
  write?: (file: Deno.FsFile, chunk: Uint8Array) => Promise<void>;
} = {};

const inFlight = new Map<string, Promise<DownloadOutcome>>();

/** Free bytes for an unprivileged writer in `dir` (statfs), or Infinity when unknown. */
export async function freeBytes(dir: string): Promise<number> {
  if (downloadHooks.freeBytes) return await downloadHooks.freeBytes(dir);
  try {
    const s = await statfs(dir);
    return Number(s.bavail) * Number(s.bsize);
  } catch {
    return Infinity;
  }
}

async function size(path: string): Promise<number | null> {
  try {
    const info = await Deno.stat(path);
    return info.isFile ? info.size : null;
  } catch {
    return null;
  }
}

/** MB with one decimal (decimal megabytes, as download tools show). */
export function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 1)} MB`;
}

function isDiskFull(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  return err?.code === "ENOSPC" || /no space left|os error 28|quota exceeded|os error 122/i.test(err?.message ?? "");
}

/**
 * Downloads `job` unless `dest` is already there; concurrent calls for one `dest` in this
 * process share one transfer, and other processes wait on the lock file.
 */
export function download(job: DownloadJob, ctx: HttpContext, onBytes?: OnBytes): Promise<DownloadOutcome> {
  const running = inFlight.get(job.dest);
  if (running) {
    return running.then((o) => ({ ...o, downloaded: 0, resumedFrom: 0, cached: true }), (e) => {
      // the other caller cancelled its own call: this one goes on by itself
      if (isAbort(e) && !ctx.signal?.aborted) return download(job, ctx, onBytes);
      throw e;
    });
  }
  const p = downloadLocked(job, ctx, onBytes).finally(() => inFlight.delete(job.dest));
  inFlight.set(job.dest, p);
  return p;
}

async function downloadLocked(job: DownloadJob, ctx: HttpContext, onBytes?: OnBytes): Promise<DownloadOutcome> {
  const done = await size(job.dest);
  if (done !== null && (job.size === undefined || done === job.size)) {
    return { bytes: done, downloaded: 0, resumedFrom: 0, cached: true };
  }
  await Deno.mkdir(dirname(job.dest), { recursive: true });
  await Deno.mkdir(dirname(job.lock), { recursive: true });
  const lockFile = await Deno.open(job.lock, { create: true, write: true });
  try {
    await lockWithSignal(lockFile, ctx.signal, job.what);
  } catch (e) {
    lockFile.close();
    throw e;
  }
  try {
    const now = await size(job.dest); // another process may have finished it while we waited
    if (now !== null && (job.size === undefined || now === job.size)) {
      return { bytes: now, downloaded: 0, resumedFrom: 0, cached: true };
    }
    if (now !== null) await Deno.remove(job.dest); // a blob of the wrong size is not the file
    return await transfer(job, ctx, onBytes);
  } finally {
    try {
      await lockFile.unlock();
    } catch { /* closing releases it too */ }
    lockFile.close();
  }
}

/** Takes the exclusive lock; an abort stops the wait (the lock, if granted later, is let go). */
function lockWithSignal(file: Deno.FsFile, signal: AbortSignal | undefined, what: string): Promise<void> {
  if (signal?.aborted) return Promise.reject(aborted(what));
  const locking = file.lock(true);
  if (!signal) return locking;
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      locking.then(() => file.unlock()).catch(() => {});
      reject(aborted(what));
    };
    signal.addEventListener("abort", onAbort, { once: true });
    locking.then(() => {
      signal.removeEventListener("abort", onAbort);
      if (!signal.aborted) resolve();
    }, (e) => {
      signal.removeEventListener("abort", onAbort);
      reject(e);
    });
  });
}

/** A hasher over the file's bytes so far (sha256, or git's `blob <size>\0` sha1). */
function newHasher(job: DownloadJob): Hash {
  if (job.gitSha1 && job.size !== undefined) {
    return createHash("sha1").update(`blob ${job.size}\0`);
  }
  return createHash("sha256");
}

async function hashExisting(path: string, hasher: Hash, length: number): Promise<void> {
  const file = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(1 << 20);
    let left = length;
    while (left > 0) {
      const n = await file.read(buf.subarray(0, Math.min(buf.length, left)));
      if (n === null) throw new Error("the partial file shrank while it was read");
      hasher.update(buf.subarray(0, n));
      left -= n;
    }
  } finally {
    file.close();
  }
}

async function writeAll(file: Deno.FsFile, chunk: Uint8Array): Promise<void> {
  if (downloadHooks.write) return await downloadHooks.write(file, chunk);
  let off = 0;
  while (off < chunk.length) off += await file.write(chunk.subarray(off));
}

/** A transfer's progress: the bytes in the partial file and their running hash. */
interface State {
  offset: number;
  hasher: Hash;
  downloaded: number;
  etag?: string;
}

async function transfer(job: DownloadJob, ctx: HttpContext, onBytes?: OnBytes): Promise<DownloadOutcome> {
  const partial = `${job.dest}.incomplete`;
  let offset = (await size(partial)) ?? 0;
  if (job.size !== undefined && offset > job.size) {
    await Deno.truncate(partial, 0);
    offset = 0;
  }
  const resumedFrom = offset;
  if (job.size !== undefined) {
    const need = job.size - offset;
    const free = await freeBytes(dirname(job.dest));
    if (need > free) {
      throw new LoupeError(
        "DISK_FULL",
        `${job.what}: ${mb(need)} more are needed in ${dirname(job.dest)} but ${mb(free)} are free; ` +
          `free some space (or set HF_HUB_CACHE to another disk) and try again`,
      );
    }
  }
  const state: State = { offset, hasher: newHasher(job), downloaded: 0 };
  if (offset > 0) await hashExisting(partial, state.hasher, offset);
  const file = await Deno.open(partial, { create: true, write: true, append: true });
  try {
    let failures = 0;
    while (!(job.size !== undefined && state.offset === job.size && job.size > 0)) {
      if (ctx.signal?.aborted) throw aborted(job.what);
      const before = state.offset;
      try {
        const outcome = await attempt(job, ctx, file, state, onBytes);
        if (outcome === "complete") break;
        if (outcome === "restart") continue;
        throw new RetryableError(
          `${job.what}: the connection ended at ${mb(state.offset)} of ${mb(job.size ?? 0)}`,
        );
      } catch (e) {
        if (isAbort(e, ctx.signal)) throw aborted(job.what);
        if (isDiskFull(e)) {
          throw new LoupeError(
            "DISK_FULL",
            `${job.what}: the disk of ${dirname(job.dest)} is full after ${mb(state.offset)}; free some space and ` +
              `try again (the partial download is kept and resumes)`,
            { cause: e },
          );
        }
        if (!(e instanceof RetryableError)) throw e;
        if (state.offset > before) failures = 0; // progress was made: a cut, not a dead server
        failures++;
        if (failures >= ctx.attempts) {
          throw new LoupeError("NETWORK", `${e.message} (${failures} attempts; the partial download is kept)`, {
            cause: e,
          });
        }
        await sleep(retryDelay(e, failures, ctx, job.what), ctx.signal, job.what);
      }
    }
  } catch (e) {
    file.close();
    // a server that sent what it should not have is not trusted with the bytes it sent before
    if (e instanceof LoupeError && e.code === "BAD_RESPONSE") await Deno.remove(partial).catch(() => {});
    throw e;
  }
  file.close();
  const actual = state.hasher.digest("hex");
  const expected = job.gitSha1 && job.size !== undefined ? job.gitSha1 : job.sha256;
  if (expected && actual !== expected) {
    await Deno.remove(partial).catch(() => {});
    throw new LoupeError(
      "CHECKSUM",
      `${job.what}: the file's ${job.gitSha1 ? "git sha1" : "sha256"} is ${actual}, expected ${expected}; ` +
        `the download was corrupted and was deleted: try again`,
    );
  }
  await Deno.rename(partial, job.dest);
  return { bytes: state.offset, downloaded: state.downloaded, resumedFrom, cached: false, etag: state.etag };
}

async function restart(job: DownloadJob, file: Deno.FsFile, state: State): Promise<void> {
  await file.truncate(0);
  state.offset = 0;
  state.hasher = newHasher(job);
}

/**
 * One request, appending what arrives to the partial file: "complete" when the file is whole,
 * "cut" when the body ended early, "restart" when the partial file was dropped; throws
 * RetryableError on a broken connection, 429 or 5xx.
 */
async function attempt(
  job: DownloadJob,
  ctx: HttpContext,
  file: Deno.FsFile,
  state: State,
  onBytes?: OnBytes,
): Promise<"complete" | "cut" | "restart"> {
  const headers: Record<string, string> = { "accept-encoding": "identity" };
  if (state.offset > 0) {
    headers.range = `bytes=${state.offset}-`;
    if (job.ifRange) headers["if-range"] = job.ifRange;
  }
  const { response, url, first } = await fetchFollowing(job.url, { headers }, ctx, job.what);
  state.etag = response.headers.get("etag") ?? state.etag;
  if (response.status === 416 && state.offset > 0) {
    // the partial file is as long as the file or longer: start again from nothing
    await response.body?.cancel();
    await restart(job, file, state);
    return "restart";
  }
  await raiseForStatus(response, url, job.what, {
    repo: job.repo,
    endpoint: job.endpoint,
    hasToken: !!ctx.token,
    notFound: `${shown(job.url)} was not found`,
  });
  const refuse = async (message: string): Promise<never> => {
    await response.body?.cancel();
    throw new LoupeError("BAD_RESPONSE", `${job.what}: ${message}`);
  };
  const linked = Number(first.get("x-linked-size") ?? NaN);
  if (job.size !== undefined && Number.isFinite(linked) && linked !== job.size) {
    await refuse(`the hub says the file has ${linked} bytes (X-Linked-Size), its listing says ${job.size}`);
  }
  if (response.status === 206) {
    const m = (response.headers.get("content-range") ?? "").match(/^bytes (\d+)-(\d+)\/(\d+|\*)$/);
    if (!m || Number(m[1]) !== state.offset) {
      await refuse(`asked for bytes from ${state.offset}, the server sent "${response.headers.get("content-range")}"`);
    }
    if (job.size !== undefined && m![3] !== "*" && Number(m![3]) !== job.size) {
      await refuse(`the server's file has ${m![3]} bytes, expected ${job.size}`);
    }
  } else if (state.offset > 0) {
    // a 200 to a Range request: the whole file comes again (or it changed): start over
    await restart(job, file, state);
  }
  const announced = response.headers.get("content-length");
  if (announced !== null && /^\d+$/.test(announced)) {
    if (job.size === undefined) job.size = state.offset + Number(announced);
    else if (state.offset + Number(announced) !== job.size) {
      await refuse(
        `the server announces ${announced} bytes from byte ${state.offset}, but the file has ${job.size} bytes ` +
          `(a wrong Content-Length)`,
      );
    }
  }
  if (!response.body) return job.size === undefined || state.offset === job.size ? "complete" : "cut";
  const reader = response.body.getReader();
  try {
    while (true) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        if (isAbort(e, ctx.signal)) throw e;
        throw new RetryableError(
          `${job.what}: the connection broke at ${mb(state.offset)} (${(e as Error).message})`,
          { cause: e },
        );
      }
      if (chunk.done) break;
      const bytes = chunk.value;
      if (job.size !== undefined && state.offset + bytes.length > job.size) {
        throw new LoupeError(
          "BAD_RESPONSE",
          `${job.what}: the server sent more than the file's ${job.size} bytes; the partial download was deleted`,
        );
      }
      await writeAll(file, bytes);
      state.hasher.update(bytes);
      state.offset += bytes.length;
      state.downloaded += bytes.length;
      onBytes?.(state.offset, job.size ?? null);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  return job.size === undefined || state.offset === job.size ? "complete" : "cut";
}
