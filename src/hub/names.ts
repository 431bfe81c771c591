/**
 * Model names: what `hf:owner/repo[@revision][:quant | /path/file.gguf]`, an `https://` URL and a
 * local path mean, checked before anything touches the network or the disk; and the choice of
 * files in a repository (the quant, split parts, the multimodal projector) by llama.cpp's rules.
 * Pure functions, no I/O.
 *
 * @module
 */
import { LoupeError } from "../util/errors.ts";

/** A model name taken apart. */
export type ParsedName =
  | { kind: "local"; name: string; path: string }
  | {
    kind: "hf";
    name: string;
    /** `owner/repo`. */
    repo: string;
    /** Branch, tag or commit ("main" unless given). */
    revision: string;
    /** The quant tag (`:Q4_K_M`), when given. */
    quant?: string;
    /** A file inside the repository (`/path/file.gguf`), when given. */
    file?: string;
  }
  | {
    kind: "url";
    name: string;
    /** The URL without its fragment. */
    url: URL;
    /** A sha256 pinned with `#sha256=<hex>`. */
    sha256?: string;
  };

/** The Hugging Face endpoint when `HF_ENDPOINT` is not set. */
export const DEFAULT_ENDPOINT = "https://huggingface.co";

const REPO_PART = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;
const QUANT = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
const HEX64 = /^[0-9a-f]{64}$/;

function invalid(name: string, why: string): LoupeError {
  return new LoupeError("INVALID_ARGUMENT", `Cannot use model name "${name}": ${why}`);
}

/** Whether a repository id is `owner/repo` with names as the hub allows them (no `..` or `--`). */
export function isValidRepoId(repo: string): boolean {
  const parts = repo.split("/");
  return parts.length === 2 && repo.length <= 256 &&
    parts.every((p) => REPO_PART.test(p) && !p.includes("..") && !p.includes("--"));
}

/**
 * Whether `path` is a relative path that stays inside the directory it is joined to: no empty,
 * `.` or `..` segment, no leading `/`, no backslash, no control character.
 */
export function isSafeRelativePath(path: string): boolean {
  // deno-lint-ignore no-control-regex
  if (path === "" || path.startsWith("/") || /[\\\x00-\x1f\x7f]/.test(path)) return false;
  return path.split("/").every((s) => s !== "" && s !== "." && s !== "..");
}

/** Checks a revision (branch, tag, commit or `refs/pr/1`): it becomes a path under `refs/`. */
export function checkRevision(name: string, revision: string): string {
  if (!isSafeRelativePath(revision) || !/^[A-Za-z0-9_.\-/]+$/.test(revision)) {
    throw invalid(name, `the revision "${revision}" is not a branch, tag or commit name`);
  }
  return revision;
}

function decode(name: string, s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw invalid(name, `"${s}" is not valid percent-encoding`);
  }
}

function hfName(name: string, repo: string, revision: string | undefined, tail: string): ParsedName {
  if (!isValidRepoId(repo)) {
    throw invalid(name, `"${repo}" is not a repository id (owner/repo, letters, digits, "_", "-" and ".")`);
  }
  const rev = checkRevision(name, revision === undefined ? "main" : decode(name, revision));
  if (tail === "") return { kind: "hf", name, repo, revision: rev };
  if (tail.startsWith(":")) {
    const quant = tail.slice(1);
    if (!QUANT.test(quant)) throw invalid(name, `"${quant}" is not a quant tag such as Q4_K_M`);
    return { kind: "hf", name, repo, revision: rev, quant };
  }
  const file = decode(name, tail.slice(1));
  if (!isSafeRelativePath(file)) {
    throw invalid(name, `the file "${file}" would leave the repository ("..", "." or an absolute path)`);
  }
  return { kind: "hf", name, repo, revision: rev, file };
}

function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127(\.\d{1,3}){3}$/.test(h);
}

/** Whether a URL may be fetched: `https:`, or `http:` to a loopback host (local mirrors, tests). */
export function isAllowedUrl(url: URL): boolean {
  return url.protocol === "https:" || (url.protocol === "http:" && isLoopback(url.hostname));
}

/**
 * Takes a model name apart. `hf:owner/repo` (the default quant), `hf:owner/repo:Q4_K_M` (a quant
 * tag), `hf:owner/repo/path/file.gguf` (a file), each with an optional `@revision` after the repo
 * (`hf:owner/repo@v1.0:Q8_0`; `refs%2Fpr%2F1` for `refs/pr/1`); an `https://` URL (a hub
 * `…/resolve/<rev>/<file>` or `…/blob/<rev>/<file>` URL of `endpoint` or huggingface.co is read as
 * the `hf:` name it stands for; `#sha256=<hex>` pins a plain URL's content); anything else is a
 * local path. `file:` URLs, other schemes and names that would leave the cache are
 * `INVALID_ARGUMENT` errors.
 */
export function parseModelName(name: string, endpoint: string = DEFAULT_ENDPOINT): ParsedName {
  if (typeof name !== "string" || name === "") {
    throw new LoupeError("INVALID_ARGUMENT", "Cannot use the model name: it must be a non-empty string");
  }
  if (/^hf:/i.test(name)) {
    const rest = name.slice(3).replace(/^\/\//, "");
    const m = rest.match(/^([^/@:]+\/[^/@:]+)(?:@([^/:]+))?((?::[^/]*)|(?:\/.*))?$/);
    if (!m) {
      throw invalid(
        name,
        `expected hf:owner/repo, hf:owner/repo:QUANT or hf:owner/repo/file.gguf (@revision after the repo)`,
      );
    }
    return hfName(name, m[1], m[2], m[3] ?? "");
  }
  const scheme = name.match(/^([A-Za-z][A-Za-z0-9+.-]*):/)?.[1].toLowerCase();
  if (scheme === "file") {
    throw invalid(name, `file: URLs are not fetched; give the path itself`);
  }
  if (scheme === "http" || scheme === "https") {
    let url: URL;
    try {
      url = new URL(name);
    } catch {
      throw invalid(name, "not a valid URL");
    }
    if (!isAllowedUrl(url)) throw invalid(name, "plain http is only allowed to a loopback host; use https");
    if (url.username || url.password) throw invalid(name, "credentials in the URL are not sent; use HF_TOKEN");
    const hubs = new Set([new URL(DEFAULT_ENDPOINT).origin]);
    try {
      hubs.add(new URL(endpoint).origin);
    } catch { /* a bad endpoint is reported where it is used */ }
    if (hubs.has(url.origin)) {
      const prefix = new URL(endpoint).origin === url.origin ? new URL(endpoint).pathname.replace(/\/$/, "") : "";
      const path = url.pathname.slice(prefix.length);
      const hub = path.match(/^\/([^/]+\/[^/]+)\/(?:resolve|blob)\/([^/]+)\/(.+)$/);
      if (hub) return hfName(name, decode(name, hub[1]), hub[2], "/" + hub[3]);
    }
    const pinned = url.hash.match(/^#sha256=([0-9a-fA-F]{64})$/)?.[1].toLowerCase();
    if (url.hash && !pinned) throw invalid(name, `the fragment must be #sha256=<64 hex digits>`);
    url.hash = "";
    return { kind: "url", name, url, sha256: pinned };
  }
  if (scheme && scheme.length > 1) {
    throw invalid(name, `"${scheme}:" URLs are not supported (hf:, https: or a local path)`);
  }
  return { kind: "local", name, path: name };
}

/** A GGUF file's split numbers and quant tag, as llama.cpp reads them from its name. */
export interface SplitInfo {
  /** The name without `.gguf` and without the split suffix (the quant tag included). */
  prefix: string;
  /** The quant tag in upper case (`Q4_K_M`), or "". */
  tag: string;
  /** 1-based part number (1 when not split). */
  index: number;
  /** Parts (1 when not split). */
  count: number;
}

/** Split numbers (`-00001-of-00003.gguf`) and quant tag of a file name; null when not `.gguf`. */
export function splitInfo(path: string): SplitInfo | null {
  if (!/\.gguf$/i.test(path)) return null;
  let prefix = path.slice(0, -5);
  let index = 1;
  let count = 1;
  const m = prefix.match(/^(.+)-(\d{5})-of-(\d{5})$/i);
  if (m) {
    prefix = m[1];
    index = Number(m[2]);
    count = Number(m[3]);
  }
  const tag = prefix.match(/[-.]([A-Za-z0-9_]+)$/)?.[1].toUpperCase() ?? "";
  return { prefix, tag, index, count };
}

/** The name of split part `index` of `count` for a path of any part (llama.cpp's `llama_split_path`). */
export function splitPartPath(path: string, index: number, count: number): string {
  const info = splitInfo(path);
  if (!info || info.count <= 1) return path;
  const pad = (n: number) => String(n).padStart(5, "0");
  return `${info.prefix}-${pad(index)}-of-${pad(count)}.gguf`;
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** Whether a file is a model llama.cpp's `-hf` would pick: `.gguf`, not a projector, imatrix or draft. */
export function isModelFile(path: string): boolean {
  if (!/\.gguf$/i.test(path)) return false;
  const file = baseName(path);
  return !["mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-"].some((k) => file.includes(k));
}

/** Whether a file is a multimodal projector (`mmproj*.gguf` anywhere in its name). */
export function isProjectorFile(path: string): boolean {
  return /\.gguf$/i.test(path) && baseName(path).toLowerCase().includes("mmproj");
}

/** The quant tags of a repository's model files, in order, without repeats. */
export function quantsOf(files: readonly string[]): string[] {
  const out: string[] = [];
  for (const f of files) {
    const tag = isModelFile(f) ? splitInfo(f)?.tag : undefined;
    if (tag && !out.includes(tag)) out.push(tag);
  }
  return out;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** The default quants, in order, as llama.cpp's `-hf` without a tag. */
export const DEFAULT_QUANTS: readonly string[] = ["Q4_K_M", "Q8_0"];

/**
 * The model file a repository name means, as llama.cpp's `-hf`: the first model file whose path
 * holds the tag followed by `.` or `-` (case-insensitive; here also after a character that is not a letter, digit or "_", so
 * `Q4_0` is not `IQ4_0`), a split model by its first part; without a tag Q4_K_M, then Q8_0,
 * then the first model file. Null when nothing matches.
 */
export function selectModelFile(files: readonly string[], quant?: string): string | null {
  const tags = quant ? [quant] : DEFAULT_QUANTS;
  const usable = files.filter((f) => {
    const s = splitInfo(f);
    return isModelFile(f) && s !== null && (s.count <= 1 || s.index === 1);
  });
  for (const t of tags) {
    const re = new RegExp(`(^|[^A-Za-z0-9_])${escapeRegExp(t)}[.-]`, "i");
    const hit = usable.find((f) => re.test(f));
    if (hit) return hit;
  }
  return quant ? null : usable[0] ?? null;
}

/**
 * Every part of a split model, given any part, in order; a file that is not split alone. Throws
 * `NOT_FOUND` naming the first missing part.
 */
export function splitParts(files: readonly string[], file: string, what: string): string[] {
  const info = splitInfo(file);
  if (!info || info.count <= 1) return [file];
  const parts: string[] = [];
  for (let i = 1; i <= info.count; i++) {
    const want = splitPartPath(file, i, info.count);
    const found = files.find((f) => f === want || f.toLowerCase() === want.toLowerCase());
    if (!found) {
      throw new LoupeError("NOT_FOUND", `${what}: part ${i} of ${info.count} ("${want}") is missing`);
    }
    parts.push(found);
  }
  return parts;
}

/**
 * The projector files that may belong to `model`: `mmproj*.gguf` files in the model's folder or a
 * folder above it, those of the deepest such folder (llama.cpp's rule: a projector next to its
 * model is its own). Several are returned as they are: the caller names them, never picks one.
 */
export function projectorCandidates(files: readonly string[], model: string): string[] {
  const dirOf = (p: string) => p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : "";
  const modelDir = dirOf(model);
  const within = files.filter((f) => {
    if (!isProjectorFile(f)) return false;
    const d = dirOf(f);
    return d === "" || modelDir === d || modelDir.startsWith(d + "/");
  });
  const depth = (p: string) => dirOf(p) === "" ? 0 : dirOf(p).split("/").length;
  const deepest = Math.max(-1, ...within.map(depth));
  return within.filter((f) => depth(f) === deepest);
}

/** Whether a string is a sha256 in hex (lower case). */
export function isSha256(s: string | undefined): s is string {
  return s !== undefined && HEX64.test(s);
}
