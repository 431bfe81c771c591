/**
 * Models by name: `resolveModel` and `pull` turn `hf:owner/repo[:quant]`, `hf:owner/repo/file.gguf`
 * (with `@revision`) and `https://` URLs into local files in the Hugging Face cache (plain URLs in
 * loupe's), downloading what is missing with a progress bar; the loaders call them first, and
 * their load timeline gains a "download" stage.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { basename, dirname, join } from "node:path";
import type { Timeline } from "../timeline/timeline.ts";
import { LoupeError } from "../util/errors.ts";
import { checkOptions, checkString, type FieldRule } from "../util/check.ts";
import { progressFor, type ProgressSink } from "../util/presenter.ts";
import { type HubConfig, hubConfig, type HubSettings, RepoCache, urlCacheDir } from "./cache.ts";
import { download, type DownloadJob, type DownloadOutcome, mb } from "./download.ts";
import { fetchFollowing, type HttpContext, raiseForStatus, RetryableError, shown, withRetries } from "./http.ts";
import {
  isProjectorFile,
  isSafeRelativePath,
  isSha256,
  type ParsedName,
  parseModelName,
  projectorCandidates,
  quantsOf,
  selectModelFile,
  splitInfo,
  splitPartPath,
  splitParts,
} from "./names.ts";

export type { HubSettings } from "./cache.ts";

/** Progress of a download, as `onProgress` gets it. */
export interface DownloadProgress {
  /** The file being fetched (its path in the repository, or its URL's file name). */
  file: string;
  /** 1-based number of the file among those fetched by this call. */
  part: number;
  /** Files this call fetches. */
  parts: number;
  /** Bytes of this file so far (a resumed part included). */
  fileBytes: number;
  /** This file's size, or null when unknown. */
  fileTotal: number | null;
  /** Bytes of all files so far. */
  bytes: number;
  /** Bytes of all files, or null when unknown. */
  total: number | null;
  /** Transfer rate of this call in bytes per second. */
  bytesPerSecond: number;
  /** Seconds left at that rate, or null when unknown. */
  etaSeconds: number | null;
}

/** Options of {@linkcode resolveModel} and {@linkcode pull}. */
export interface ResolveOptions extends HubSettings {
  /**
   * Also fetch the repository's multimodal projector (`mmproj*.gguf` next to the model; a local
   * model's is looked for in its folder). Several candidates are an error naming them.
   */
  projector?: boolean | "auto";
  /** Where plain URLs are cached (default `<loupe cache>/models`, see `LOUPE_CACHE_DIR`). */
  urlCacheDir?: string;
  /** Attempts per request on 429, 5xx and broken connections (default 5; a transfer that made progress starts counting again). */
  retries?: number;
  /** Cancels; a partial download is kept and resumes next time. */
  signal?: AbortSignal;
  /** A progress bar while bytes move: true (default) in a notebook or a terminal, false none. */
  progress?: boolean;
  /** Called as bytes arrive (at most every 100 ms, and at the end of each file). */
  onProgress?: (progress: DownloadProgress) => void;
}

/** What {@linkcode pull} fetched or found. */
export interface PullResult {
  /** The name as given. */
  name: string;
  /** Where it came from: a hub repository, a URL, or a local path given as it is. */
  source: "hf" | "url" | "local";
  /** The local path to load: the model file (its first part when split). */
  path: string;
  /** Every local file of the model (all parts of a split model). */
  files: string[];
  /** The projector's local path, when asked for with `projector`. */
  projector: string | null;
  /** The projector files (`mmproj*.gguf`) the repository offers, by their paths in it. */
  projectors: string[];
  /** The repository (`owner/repo`) of a hub name. */
  repo?: string;
  /** The revision asked for (hub names). */
  revision?: string;
  /** The commit the revision stands for (hub names). */
  commit?: string;
  /** Bytes of every file. */
  bytes: number;
  /** Bytes transferred by this call. */
  downloadedBytes: number;
  /** Bytes found in partial downloads and kept. */
  resumedBytes: number;
  /** Whether everything was in the cache already (nothing transferred). */
  cacheHit: boolean;
  /** Wall time in milliseconds. */
  wallMs: number;
  /** HTTP requests made (0 when offline or for a local path). */
  requests: number;
}

/** Test hooks: the backoff base in milliseconds. */
export const resolveHooks: { backoffMs?: number } = {};

/**
 * The local path of a model name, downloading what is missing (every part of a split model) into
 * the Hugging Face cache (plain URLs into loupe's): `hf:owner/repo` (Q4_K_M, else Q8_0, else the
 * first model file, as llama.cpp's `-hf`), `hf:owner/repo:Q8_0`, `hf:owner/repo/path/file.gguf`,
 * `@revision` after the repo, an `https://` URL; a local path is returned as it is.
 *
 * @example
 * ```ts
 * const path = await resolveModel("hf:ggml-org/SmolLM2-135M-Instruct-GGUF:Q8_0");
 * ```
 */
export async function resolveModel(name: string, options?: ResolveOptions): Promise<string> {
  return (await pull(name, options)).path;
}

/**
 * Downloads a model name's files (or finds them in the cache) and says what it did: the local
 * paths, bytes moved, whether a partial download was resumed, requests made. Offline
 * (`HF_HUB_OFFLINE=1`) it makes no request and uses the cache alone.
 *
 * @example
 * ```ts
 * const r = await pull("hf:ggml-org/gemma-3-4b-it-GGUF", { projector: "auto" });
 * console.log(r.path, r.projector, r.cacheHit ? "cached" : `${r.downloadedBytes} bytes`);
 * ```
 */
export async function pull(name: string, given?: ResolveOptions): Promise<PullResult> {
  checkString(name, "the name", "Cannot resolve the model");
  const options = checkOptions(given, RESOLVE_RULES, `Cannot resolve "${name}"`);
  const cfg = hubConfig(options);
  const parsed = parseModelName(name, cfg.endpoint);
  const t0 = performance.now();
  const ctx: HttpContext = {
    token: cfg.token,
    tokenOrigin: originOf(cfg.endpoint),
    signal: options.signal,
    attempts: Math.max(1, options.retries ?? 5),
    backoffMs: resolveHooks.backoffMs ?? 500,
    maxRetryAfterMs: 60_000,
    requests: 0,
  };
  let result: Omit<PullResult, "wallMs" | "requests">;
  if (parsed.kind === "local") {
    const projector = options.projector ? await localProjector(parsed.path) : null;
    let bytes = 0;
    try {
      bytes = (await Deno.stat(parsed.path)).size;
    } catch { /* the loader reports a missing file */ }
    result = {
      name,
      source: "local",
      path: parsed.path,
      files: [parsed.path],
      projector,
      projectors: projector ? [projector] : [],
      bytes,
      downloadedBytes: 0,
      resumedBytes: 0,
      cacheHit: true,
    };
  } else if (parsed.kind === "hf") {
    result = await pullHub(parsed, cfg, ctx, options);
  } else {
    result = await pullUrl(parsed, cfg, ctx, options);
  }
  return { ...result, wallMs: performance.now() - t0, requests: ctx.requests };
}

/** What the options of {@linkcode pull} and {@linkcode resolveModel} may hold. */
const RESOLVE_RULES: Record<string, FieldRule> = {
  endpoint: "nonEmptyString",
  cacheDir: "nonEmptyString",
  token: (v) => (typeof v === "string" && v !== "") || v === false ? null : "a non-empty string or false",
  offline: "boolean",
  projector: (v) => typeof v === "boolean" || v === "auto" ? null : 'true, false or "auto"',
  urlCacheDir: "nonEmptyString",
  retries: "positiveInteger",
  signal: "signal",
  progress: "boolean",
  onProgress: "function",
};

function originOf(endpoint: string): string {
  try {
    return new URL(endpoint).origin;
  } catch {
    throw new LoupeError("INVALID_ARGUMENT", `Cannot use the hub endpoint "${endpoint}": not a URL (HF_ENDPOINT)`);
  }
}

/** A file of a repository listing. */
interface RemoteFile {
  path: string;
  size?: number;
  sha256?: string;
  gitSha1?: string;
}

/** Whether an error means the server could not be reached at all (not an HTTP answer). */
function unreachable(e: unknown): boolean {
  return e instanceof LoupeError && e.code === "NETWORK" && e.cause instanceof RetryableError &&
    e.cause.status === undefined;
}

async function getJson(url: URL, ctx: HttpContext, what: string, hub: Parameters<typeof raiseForStatus>[3]) {
  return await withRetries(
    async () => {
      const { response, url: final } = await fetchFollowing(
        url,
        { headers: { accept: "application/json" } },
        ctx,
        what,
      );
      await raiseForStatus(response, final, what, hub);
      try {
        return await response.json();
      } catch (e) {
        if (e instanceof DOMException && e.name === "AbortError") throw e;
        throw new LoupeError("BAD_RESPONSE", `${what}: ${shown(final)} did not answer JSON`, { cause: e });
      }
    },
    ctx,
    what,
  );
}

function encodePath(path: string): string {
  return path.split("/").map(encodeURIComponent).join("/");
}

/** The repository at a revision: its commit and files with sizes and hashes (one request, `?blobs=true`). */
async function listRepo(
  parsed: Extract<ParsedName, { kind: "hf" }>,
  cfg: HubConfig,
  ctx: HttpContext,
  what: string,
): Promise<{ commit: string; files: RemoteFile[] }> {
  const hub = { repo: parsed.repo, endpoint: cfg.endpoint, hasToken: !!cfg.token };
  const url = new URL(
    `${cfg.endpoint}/api/models/${parsed.repo}/revision/${encodeURIComponent(parsed.revision)}?blobs=true`,
  );
  const info = await getJson(url, ctx, what, {
    ...hub,
    notFound: `revision "${parsed.revision}" of ${parsed.repo} was not found`,
  });
  const commit = info?.sha;
  if (typeof commit !== "string" || !/^[0-9a-f]{40}$/.test(commit)) {
    throw new LoupeError("BAD_RESPONSE", `${what}: the hub's answer has no commit (sha)`);
  }
  if (!Array.isArray(info.siblings)) throw new LoupeError("BAD_RESPONSE", `${what}: the hub's answer lists no files`);
  const files: RemoteFile[] = [];
  for (const s of info.siblings) {
    const path = s?.rfilename;
    if (typeof path !== "string" || !isSafeRelativePath(path)) {
      throw new LoupeError(
        "BAD_RESPONSE",
        `${what}: the hub lists an unsafe file name ${JSON.stringify(path)} (it would leave the cache); refusing it`,
      );
    }
    const sha = typeof s.lfs?.sha256 === "string" ? s.lfs.sha256.toLowerCase() : undefined;
    const size = typeof s.lfs?.size === "number" ? s.lfs.size : typeof s.size === "number" ? s.size : undefined;
    const blob = typeof s.blobId === "string" && /^[0-9a-f]{40}$/.test(s.blobId) ? s.blobId : undefined;
    files.push({ path, size, sha256: isSha256(sha) ? sha : undefined, gitSha1: s.lfs ? undefined : blob });
  }
  return { commit, files };
}

/** Hashes and sizes from the tree endpoint (`lfs.oid`, `oid`, `size`), for listings without them. */
async function treeInfo(
  repo: string,
  commit: string,
  cfg: HubConfig,
  ctx: HttpContext,
  what: string,
): Promise<Map<string, RemoteFile>> {
  const url = new URL(`${cfg.endpoint}/api/models/${repo}/tree/${commit}?recursive=true`);
  const items = await getJson(url, ctx, what, { repo, endpoint: cfg.endpoint, hasToken: !!cfg.token });
  const out = new Map<string, RemoteFile>();
  for (const item of Array.isArray(items) ? items : []) {
    if (item?.type !== "file" || typeof item.path !== "string") continue;
    const sha = typeof item.lfs?.oid === "string" ? item.lfs.oid.toLowerCase() : undefined;
    const oid = typeof item.oid === "string" && /^[0-9a-f]{40}$/.test(item.oid) ? item.oid : undefined;
    out.set(item.path, {
      path: item.path,
      size: typeof item.lfs?.size === "number" ? item.lfs.size : typeof item.size === "number" ? item.size : undefined,
      sha256: isSha256(sha) ? sha : undefined,
      gitSha1: item.lfs ? undefined : oid,
    });
  }
  return out;
}

/** The model's files (split parts) and projector among a repository's files; typed errors otherwise. */
function choose(
  parsed: Extract<ParsedName, { kind: "hf" }>,
  paths: string[],
  wantProjector: boolean,
  what: string,
  where: string,
): { parts: string[]; projector: string | null } {
  const ggufs = paths.filter((p) => /\.gguf$/i.test(p));
  const listing = (list: string[]) => list.length ? list.join(", ") : "none";
  let primary: string | null;
  if (parsed.file) {
    primary = paths.find((p) => p === parsed.file) ?? null;
    if (!primary) {
      throw new LoupeError(
        "NOT_FOUND",
        `${what}: ${where} has no file "${parsed.file}"; its GGUF files: ${listing(ggufs)}`,
      );
    }
    const s = splitInfo(primary);
    if (s && s.count > 1) primary = splitPartPath(primary, 1, s.count);
  } else {
    primary = selectModelFile(paths, parsed.quant);
    if (!primary) {
      const quants = quantsOf(paths);
      throw new LoupeError(
        "NOT_FOUND",
        parsed.quant
          ? `${what}: ${where} has no ${parsed.quant} file; its quants: ${listing(quants)}` +
            (quants.length ? ` (e.g. hf:${parsed.repo}:${quants[0]})` : "")
          : `${what}: ${where} has no GGUF model file; its files: ${listing(paths.slice(0, 20))}`,
      );
    }
  }
  const parts = splitParts(paths, primary, `${what}: ${where}`);
  let projector: string | null = null;
  if (wantProjector) {
    const candidates = projectorCandidates(paths, primary);
    if (candidates.length === 0) {
      throw new LoupeError(
        "NOT_FOUND",
        `${what}: ${where} has no multimodal projector (mmproj*.gguf) for ${primary}; load it without projector`,
      );
    }
    if (candidates.length > 1) {
      throw new LoupeError(
        "INVALID_ARGUMENT",
        `${what}: ${where} offers several projectors: ${candidates.join(", ")}; name one, e.g. ` +
          `projector: "hf:${parsed.repo}/${candidates[0]}"`,
      );
    }
    projector = candidates[0];
  }
  return { parts, projector };
}

async function pullHub(
  parsed: Extract<ParsedName, { kind: "hf" }>,
  cfg: HubConfig,
  ctx: HttpContext,
  options: ResolveOptions,
): Promise<Omit<PullResult, "wallMs" | "requests">> {
  const what = `Cannot download "${parsed.name}"`;
  const cache = new RepoCache(cfg.cacheDir, parsed.repo);
  const where = `${parsed.repo}${parsed.revision === "main" ? "" : `@${parsed.revision}`}`;
  let listing: { commit: string; files: RemoteFile[] } | null = null;
  let unreached: LoupeError | null = null;
  if (!cfg.offline) {
    try {
      listing = await listRepo(parsed, cfg, ctx, what);
    } catch (e) {
      if (!unreachable(e)) throw e;
      unreached = e as LoupeError;
    }
  }
  const base = { name: parsed.name, source: "hf" as const, repo: parsed.repo, revision: parsed.revision };
  if (!listing) {
    // offline, or the hub cannot be reached: the cache alone, with no request
    const why = unreached ? `the hub cannot be reached (${unreached.message.replace(/^[^:]*: /, "")})` : "offline";
    const commit = await cache.commitOf(parsed.revision);
    const cached = commit ? await cache.snapshotFiles(commit) : [];
    if (!commit || cached.length === 0) {
      throw new LoupeError(
        "OFFLINE",
        `${what}: ${why} and the cache (${cache.root}) has nothing for ${where}` +
          (unreached ? "" : "; unset HF_HUB_OFFLINE to download it"),
        { cause: unreached ?? undefined },
      );
    }
    let chosen;
    try {
      chosen = choose(parsed, cached.map((f) => f.path), !!options.projector, what, `the cached ${where}`);
    } catch (e) {
      if (!(e instanceof LoupeError) || e.code !== "NOT_FOUND") throw e;
      throw new LoupeError("OFFLINE", `${e.message} (${why}: only the cache was looked at)`);
    }
    const local = (p: string) => cache.snapshot(commit, p);
    const all = [...chosen.parts, ...(chosen.projector ? [chosen.projector] : [])];
    return {
      ...base,
      commit,
      path: local(chosen.parts[0]),
      files: chosen.parts.map(local),
      projector: chosen.projector ? local(chosen.projector) : null,
      projectors: cached.map((f) => f.path).filter(isProjectorFile),
      bytes: cached.filter((f) => all.includes(f.path)).reduce((a, f) => a + f.size, 0),
      downloadedBytes: 0,
      resumedBytes: 0,
      cacheHit: true,
    };
  }
  const { commit } = listing;
  await cache.writeRef(parsed.revision, commit);
  const paths = listing.files.map((f) => f.path);
  const chosen = choose(parsed, paths, !!options.projector, what, where);
  const wanted = [...chosen.parts, ...(chosen.projector ? [chosen.projector] : [])];
  const byPath = new Map(listing.files.map((f) => [f.path, f]));
  // files not in the snapshot yet need their hashes; a listing without them asks the tree
  const missing: string[] = [];
  for (const p of wanted) {
    if (!await isFile(cache.snapshot(commit, p))) missing.push(p);
  }
  if (missing.some((p) => !byPath.get(p)?.sha256 && !byPath.get(p)?.gitSha1)) {
    const tree = await treeInfo(parsed.repo, commit, cfg, ctx, what);
    for (const p of missing) {
      const t = tree.get(p);
      if (t) byPath.set(p, { ...byPath.get(p)!, ...Object.fromEntries(Object.entries(t).filter(([, v]) => v)) });
    }
  }
  const jobs: { path: string; job: DownloadJob | null; size: number | null }[] = [];
  for (const p of wanted) {
    const f = byPath.get(p)!;
    if (!missing.includes(p)) {
      jobs.push({ path: p, job: null, size: (await Deno.stat(cache.snapshot(commit, p))).size });
      continue;
    }
    const etag = f.sha256 ?? f.gitSha1;
    if (!etag) {
      throw new LoupeError("BAD_RESPONSE", `${what}: the hub gives no sha256 for ${p}, so it cannot be verified`);
    }
    jobs.push({
      path: p,
      size: f.size ?? null,
      job: {
        url: new URL(`${cfg.endpoint}/${parsed.repo}/resolve/${commit}/${encodePath(p)}`),
        dest: cache.blob(etag),
        lock: cache.lock(etag),
        size: f.size,
        sha256: f.sha256,
        gitSha1: f.sha256 ? undefined : f.gitSha1,
        what: `${what}: ${p}`,
        repo: parsed.repo,
        endpoint: cfg.endpoint,
      },
    });
  }
  const moved = await runJobs(jobs, `${parsed.repo}`, ctx, options);
  for (const { path, job } of jobs) {
    if (job) await cache.link(commit, path, basename(job.dest));
  }
  const local = (p: string) => cache.snapshot(commit, p);
  return {
    ...base,
    commit,
    path: local(chosen.parts[0]),
    files: chosen.parts.map(local),
    projector: chosen.projector ? local(chosen.projector) : null,
    projectors: paths.filter(isProjectorFile),
    ...moved,
  };
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** Runs the downloads one after another with one progress bar; sums what moved. */
async function runJobs(
  jobs: { path: string; job: DownloadJob | null; size: number | null }[],
  label: string,
  ctx: HttpContext,
  options: ResolveOptions,
): Promise<Pick<PullResult, "bytes" | "downloadedBytes" | "resumedBytes" | "cacheHit">> {
  const todo = jobs.filter((j) => j.job);
  const known = jobs.every((j) => j.size !== null);
  const total = known ? jobs.reduce((a, j) => a + j.size!, 0) : null;
  const progress = new Reporter(label, todo.length, options);
  let before = jobs.filter((j) => !j.job).reduce((a, j) => a + (j.size ?? 0), 0);
  let downloadedBytes = 0;
  let resumedBytes = 0;
  let bytes = before;
  try {
    for (const [i, { path, job }] of todo.entries()) {
      const outcome: DownloadOutcome = await download(job!, ctx, (done, fileTotal) => {
        progress.update({ file: path, part: i + 1, fileBytes: done, fileTotal, bytes: before + done, total });
      });
      downloadedBytes += outcome.downloaded;
      resumedBytes += outcome.resumedFrom;
      bytes += outcome.bytes;
      before += outcome.bytes;
      progress.fileDone({ file: path, part: i + 1, fileBytes: outcome.bytes, fileTotal: outcome.bytes, bytes, total });
    }
  } catch (e) {
    await progress.fail((e as Error).message);
    throw e;
  }
  await progress.done(downloadedBytes, resumedBytes);
  return { bytes, downloadedBytes, resumedBytes, cacheHit: downloadedBytes === 0 && resumedBytes === 0 };
}

/** One progress bar (created when the first byte moves) and `onProgress`, throttled to 100 ms. */
class Reporter {
  #bar: ProgressSink | null | undefined;
  #t0 = performance.now();
  #last = 0;
  #startBytes: number | null = null;

  constructor(readonly label: string, readonly parts: number, readonly options: ResolveOptions) {}

  #progress(p: Omit<DownloadProgress, "parts" | "bytesPerSecond" | "etaSeconds">): DownloadProgress {
    this.#startBytes ??= p.bytes; // the rate counts what moves in this call, not a resumed part
    const seconds = (performance.now() - this.#t0) / 1000;
    const moved = Math.max(0, p.bytes - this.#startBytes);
    const rate = seconds > 0 ? moved / seconds : 0;
    const eta = p.total !== null && rate > 0 ? (p.total - p.bytes) / rate : null;
    return { ...p, parts: this.parts, bytesPerSecond: rate, etaSeconds: eta };
  }

  update(p: Omit<DownloadProgress, "parts" | "bytesPerSecond" | "etaSeconds">, force = false): void {
    const now = performance.now();
    if (!force && now - this.#last < 100) return;
    this.#last = now;
    const full = this.#progress(p);
    try {
      this.options.onProgress?.(full);
    } catch (e) {
      // thrown out of the transfer as it is: no retry, the partial download is kept
      throw new LoupeError(
        "INVALID_ARGUMENT",
        `Cannot download ${this.label}: the onProgress callback threw: ${e instanceof Error ? e.message : String(e)}`,
        { cause: e },
      );
    }
    if (this.#bar === undefined) {
      this.#bar = this.options.progress === false
        ? null
        : progressFor(`downloading ${this.label}`, this.options.progress ?? true);
    }
    this.#bar?.update(full.total ? full.bytes / full.total : null, describeProgress(full));
  }

  fileDone(p: Omit<DownloadProgress, "parts" | "bytesPerSecond" | "etaSeconds">): void {
    this.update(p, true);
  }

  async done(downloaded: number, resumed: number): Promise<void> {
    if (!this.#bar) return;
    const seconds = (performance.now() - this.#t0) / 1000;
    await this.#bar.done(
      `${mb(downloaded)} in ${seconds.toFixed(1)} s (${mb(seconds > 0 ? downloaded / seconds : 0)}/s)` +
        (resumed ? `, resumed from ${mb(resumed)}` : ""),
    );
  }

  async fail(reason: string): Promise<void> {
    await this.#bar?.fail(reason);
  }
}

/** `part 2/3 file.gguf · 12.3 / 17.5 MB · 5.1 MB/s · ETA 1 s` */
export function describeProgress(p: DownloadProgress): string {
  const parts = p.parts > 1 ? `part ${p.part}/${p.parts} ` : "";
  const file = `${parts}${p.file.slice(p.file.lastIndexOf("/") + 1)}`;
  const size = p.total !== null ? `${mb(p.bytes)} / ${mb(p.total)}` : mb(p.bytes);
  const rate = `${mb(p.bytesPerSecond)}/s`;
  const eta = p.etaSeconds === null ? "" : ` · ETA ${formatSeconds(p.etaSeconds)}`;
  return `${file} · ${size} · ${rate}${eta}`;
}

function formatSeconds(s: number): string {
  if (s < 60) return `${Math.ceil(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

interface UrlMeta {
  url: string;
  etag?: string;
  size: number;
  sha256?: string;
}

function strongEtag(etag: string | null): string | undefined {
  return etag && !etag.startsWith("W/") ? etag : undefined;
}

async function pullUrl(
  parsed: Extract<ParsedName, { kind: "url" }>,
  cfg: HubConfig,
  ctx: HttpContext,
  options: ResolveOptions,
): Promise<Omit<PullResult, "wallMs" | "requests">> {
  const what = `Cannot download "${shown(parsed.url)}"`;
  const file = decodeURIComponent(basename(parsed.url.pathname));
  if (!isSafeRelativePath(file) || file.includes("/") || !/\.gguf$/i.test(file)) {
    throw new LoupeError("INVALID_ARGUMENT", `${what}: the URL must end in a file name ending in .gguf`);
  }
  const key = createHash("sha256").update(parsed.url.href).digest("hex").slice(0, 16);
  const dir = join(options.urlCacheDir ?? urlCacheDir(), key);
  const split = splitInfo(file)!;
  const names = split.count > 1
    ? Array.from({ length: split.count }, (_, i) => splitPartPath(file, i + 1, split.count))
    : [file];
  const jobs: { path: string; job: DownloadJob | null; size: number | null; meta: UrlMeta }[] = [];
  for (const name of names) {
    const url = new URL(parsed.url);
    if (name !== file) url.pathname = join(dirname(url.pathname), encodeURIComponent(name));
    const dest = join(dir, name);
    const metaPath = `${dest}.json`;
    let meta: UrlMeta | null = null;
    try {
      meta = JSON.parse(await Deno.readTextFile(metaPath));
    } catch { /* not cached */ }
    const cachedSize = await isFile(dest) ? (await Deno.stat(dest)).size : null;
    const cached = meta && cachedSize === meta.size ? meta : null;
    const pinned = name === file ? parsed.sha256 : undefined;
    if (cfg.offline) {
      if (!cached) {
        throw new LoupeError(
          "OFFLINE",
          `${what}: offline (HF_HUB_OFFLINE) and ${name} is not in the cache (${dir}); unset HF_HUB_OFFLINE`,
        );
      }
      jobs.push({ path: name, job: null, size: cached.size, meta: cached });
      continue;
    }
    let head: Response;
    try {
      head = await withRetries(
        async () => {
          const { response, url: final } = await fetchFollowing(url, { method: "HEAD" }, ctx, what);
          // some CDNs refuse HEAD (405, or 403 on GET-signed URLs): then the GET decides
          if (response.ok || [404, 410, 429].includes(response.status) || response.status >= 500) {
            await raiseForStatus(response, final, what, { hasToken: false });
          } else await response.body?.cancel();
          return response;
        },
        ctx,
        what,
      );
    } catch (e) {
      if (!unreachable(e)) throw e;
      if (!cached) {
        throw new LoupeError(
          "OFFLINE",
          `${what}: the server cannot be reached and ${name} is not in the cache (${dir})`,
          { cause: e },
        );
      }
      jobs.push({ path: name, job: null, size: cached.size, meta: cached });
      continue;
    }
    const etag = strongEtag(head.headers.get("etag"));
    const length = head.ok && /^\d+$/.test(head.headers.get("content-length") ?? "")
      ? Number(head.headers.get("content-length"))
      : undefined;
    if (
      cached && (!head.ok || (etag !== undefined && etag === cached.etag && (length ?? cached.size) === cached.size))
    ) {
      jobs.push({ path: name, job: null, size: cached.size, meta: cached });
      continue;
    }
    if (cachedSize !== null) await Deno.remove(dest); // another version: fetched again
    const etagSha = etag?.replace(/"/g, "").toLowerCase();
    const sha256 = pinned ?? (isSha256(etagSha) ? etagSha : undefined);
    jobs.push({
      path: name,
      size: length ?? null,
      meta: { url: url.href, etag, size: length ?? 0, sha256 },
      job: { url, dest, lock: `${dest}.lock`, size: length, sha256, ifRange: etag, what: `${what}: ${name}` },
    });
  }
  const moved = await runJobs(jobs, file, ctx, options);
  for (const j of jobs) {
    if (!j.job) continue;
    const meta: UrlMeta = { ...j.meta, size: (await Deno.stat(j.job.dest)).size };
    await Deno.writeTextFile(`${j.job.dest}.json`, JSON.stringify(meta));
  }
  const projector: string | null = null;
  if (options.projector) {
    throw new LoupeError(
      "INVALID_ARGUMENT",
      `${what}: a URL has no projector to offer; pass the projector's own URL as projector`,
    );
  }
  const files = names.map((n) => join(dir, n));
  return {
    name: parsed.name,
    source: "url",
    path: files[0],
    files,
    projector,
    projectors: [],
    ...moved,
  };
}

/**
 * The projector beside a local model: the one `mmproj*.gguf` in its folder. None or several are
 * errors naming what is there.
 */
export async function localProjector(path: string): Promise<string> {
  const dir = dirname(path);
  const found: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if ((e.isFile || e.isSymlink) && isProjectorFile(e.name)) found.push(e.name);
    }
  } catch { /* reported below */ }
  found.sort();
  const what = `Cannot find the projector of "${path}"`;
  if (found.length === 0) {
    throw new LoupeError("NOT_FOUND", `${what}: there is no mmproj*.gguf in ${dir}; pass its path as projector`);
  }
  if (found.length > 1) {
    throw new LoupeError(
      "INVALID_ARGUMENT",
      `${what}: ${dir} holds several projectors: ${found.join(", ")}; pass one as projector: "${join(dir, found[0])}"`,
    );
  }
  return join(dir, found[0]);
}

/**
 * For the loaders: a name that is not a local path is fetched first (the loader's `signal` and
 * `progress` apply); a local path gives null and is loaded as it is.
 */
export async function fetchForLoad(
  name: string,
  options: { signal?: AbortSignal; progress?: boolean; projector?: boolean },
): Promise<PullResult | null> {
  if (typeof name !== "string" || name === "") return null;
  const parsed = parseModelName(name, hubConfig().endpoint);
  if (parsed.kind === "local") return null;
  return await pull(name, {
    signal: options.signal,
    progress: options.progress,
    projector: options.projector,
  });
}

/** Whether a name is a model file's name (hf:, a URL), not a local path. */
export function isRemoteName(name: string): boolean {
  return typeof name === "string" && (/^hf:/i.test(name) || /^https?:\/\//i.test(name));
}

/**
 * Adds the "download" stage to a load timeline: the resolution's wall time, and an event saying
 * what moved (bytes, MB/s, resumed) or that the cache had it.
 */
export function addDownloadStage(timeline: Timeline, r: PullResult): void {
  timeline.add({ name: "download", wallMs: r.wallMs, tokens: 0, graphs: 0, devices: {} });
  const seconds = r.wallMs / 1000;
  const rate = seconds > 0 ? r.downloadedBytes / seconds / 1e6 : 0;
  const files = r.files.length + (r.projector ? 1 : 0);
  const what = r.cacheHit
    ? `download: cache hit, ${mb(r.bytes)} in the cache (${r.requests} request${r.requests === 1 ? "" : "s"})`
    : `download: ${mb(r.downloadedBytes)} at ${rate.toFixed(1)} MB/s` +
      (r.resumedBytes ? ` (resumed from ${mb(r.resumedBytes)})` : "") +
      (files > 1 ? `, ${files} files` : "");
  timeline.events.push({
    atMs: r.wallMs,
    what,
    kind: "download",
    data: {
      name: r.name,
      bytes: r.bytes,
      downloadedBytes: r.downloadedBytes,
      resumedBytes: r.resumedBytes,
      megabytesPerSecond: rate,
      cacheHit: r.cacheHit,
      requests: r.requests,
      files,
    },
  });
}
