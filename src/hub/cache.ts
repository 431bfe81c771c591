/**
 * The Hugging Face cache layout, exactly as `huggingface_hub` writes it, so files are shared with
 * Python tools and llama.cpp:
 *
 * ```
 * <HF_HUB_CACHE>/models--owner--repo/blobs/<sha256>            the bytes (LFS files; git sha1 for others)
 * <HF_HUB_CACHE>/models--owner--repo/blobs/<sha256>.incomplete  a download in progress
 * <HF_HUB_CACHE>/models--owner--repo/snapshots/<commit>/<file>  a relative symlink to ../../blobs/<sha256>
 * <HF_HUB_CACHE>/models--owner--repo/refs/<revision>            the commit a branch or tag pointed to
 * <HF_HUB_CACHE>/.locks/models--owner--repo/<sha256>.lock       the lock of one blob's download
 * ```
 *
 * and the environment that configures it (`HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`,
 * `HF_HUB_OFFLINE`). Plain URLs go to loupe's own cache (`<cache>/models/`).
 *
 * @module
 */
import { dirname, join, relative } from "node:path";
import { cacheDir as loupeCacheDir } from "../../native/build/engine.ts";
import { DEFAULT_ENDPOINT, isSafeRelativePath, isSha256 } from "./names.ts";

/** Where and how the hub is reached; each field falls back to the environment. */
export interface HubSettings {
  /** The hub's address: `HF_ENDPOINT`, else https://huggingface.co. */
  endpoint?: string;
  /** The Hugging Face cache: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. */
  cacheDir?: string;
  /** A token for gated and private repositories: `HF_TOKEN`, else the file `huggingface-cli login` wrote; false: none. */
  token?: string | false;
  /** Use only the cache, with no request at all: `HF_HUB_OFFLINE=1`. */
  offline?: boolean;
}

/** Settings with every field decided. */
export interface HubConfig {
  /** The endpoint without a trailing slash. */
  endpoint: string;
  /** The Hugging Face cache directory. */
  cacheDir: string;
  /** The token, if any (never printed). */
  token: string | undefined;
  /** Offline mode. */
  offline: boolean;
}

function env(name: string): string | undefined {
  const v = Deno.env.get(name);
  return v === undefined || v === "" ? undefined : v;
}

/** `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (as huggingface_hub). */
export function hfHome(): string {
  return env("HF_HOME") ?? join(env("XDG_CACHE_HOME") ?? join(env("HOME") ?? "/tmp", ".cache"), "huggingface");
}

/** The hub cache directory from the environment (`HF_HUB_CACHE`, legacy `HUGGINGFACE_HUB_CACHE`, `$HF_HOME/hub`). */
export function hubCacheDir(): string {
  return env("HF_HUB_CACHE") ?? env("HUGGINGFACE_HUB_CACHE") ?? join(hfHome(), "hub");
}

/** Whether an environment flag is on the way huggingface_hub reads it ("1", "ON", "YES", "TRUE"). */
export function envFlag(name: string): boolean {
  return ["1", "ON", "YES", "TRUE"].includes((env(name) ?? "").toUpperCase());
}

function storedToken(): string | undefined {
  try {
    const t = Deno.readTextFileSync(env("HF_TOKEN_PATH") ?? join(hfHome(), "token")).trim();
    return t || undefined;
  } catch {
    return undefined;
  }
}

/** Decides every setting: the options first, then the environment, then huggingface_hub's defaults. */
export function hubConfig(settings: HubSettings = {}): HubConfig {
  const endpoint = (settings.endpoint ?? env("HF_ENDPOINT") ?? DEFAULT_ENDPOINT).replace(/\/+$/, "");
  const token = settings.token === false
    ? undefined
    : settings.token ?? env("HF_TOKEN") ?? env("HUGGING_FACE_HUB_TOKEN") ?? storedToken();
  return {
    endpoint,
    cacheDir: settings.cacheDir ?? hubCacheDir(),
    token,
    offline: settings.offline ?? envFlag("HF_HUB_OFFLINE"),
  };
}

/** `models--owner--repo`, the folder of a repository in the cache. */
export function repoFolderName(repo: string): string {
  return `models--${repo.replaceAll("/", "--")}`;
}

/** Paths of one repository in the cache. */
export class RepoCache {
  /** The repository's folder. */
  readonly root: string;

  /** The layout of `repo` under the hub cache `cacheDir`. */
  constructor(readonly cacheDir: string, readonly repo: string) {
    this.root = join(cacheDir, repoFolderName(repo));
  }

  /** `blobs/<etag>`. */
  blob(etag: string): string {
    return join(this.root, "blobs", etag);
  }

  /** `snapshots/<commit>/<file>`. */
  snapshot(commit: string, file: string): string {
    return join(this.root, "snapshots", commit, file);
  }

  /** `refs/<revision>`. */
  ref(revision: string): string {
    return join(this.root, "refs", revision);
  }

  /** `<cache>/.locks/models--owner--repo/<etag>.lock`. */
  lock(etag: string): string {
    return join(this.cacheDir, ".locks", repoFolderName(this.repo), `${etag}.lock`);
  }

  /** The commit `revision` stands for in the cache: a commit itself, or the content of its ref; null if unknown. */
  async commitOf(revision: string): Promise<string | null> {
    if (/^[0-9a-f]{40}$/.test(revision) && await isDirectory(join(this.root, "snapshots", revision))) {
      return revision;
    }
    try {
      const commit = (await Deno.readTextFile(this.ref(revision))).trim();
      return /^[0-9a-f]{40}$/.test(commit) ? commit : null;
    } catch {
      return null;
    }
  }

  /** Writes `refs/<revision>` (no trailing newline, as huggingface_hub), unless the revision is the commit. */
  async writeRef(revision: string, commit: string): Promise<void> {
    if (revision === commit) return;
    const path = this.ref(revision);
    try {
      if ((await Deno.readTextFile(path)).trim() === commit) return;
    } catch { /* not there yet */ }
    await Deno.mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.${crypto.randomUUID()}.tmp`;
    await Deno.writeTextFile(tmp, commit);
    await Deno.rename(tmp, path);
  }

  /**
   * Links `snapshots/<commit>/<file>` to `blobs/<etag>` with a relative symlink (what
   * huggingface_hub's `_create_symlink` makes), replacing what was there; returns the link's path.
   */
  async link(commit: string, file: string, etag: string): Promise<string> {
    const pointer = this.snapshot(commit, file);
    await Deno.mkdir(dirname(pointer), { recursive: true });
    const target = relative(dirname(pointer), this.blob(etag));
    try {
      if (await Deno.readLink(pointer) === target) return pointer;
    } catch { /* not a link or not there */ }
    const tmp = `${pointer}.${crypto.randomUUID()}.tmp`;
    await Deno.symlink(target, tmp);
    await Deno.rename(tmp, pointer);
    return pointer;
  }

  /**
   * The files of a cached snapshot, relative to it, with sizes and the sha256 their blob is named
   * after (when it is one); unsafe names are left out.
   */
  async snapshotFiles(commit: string): Promise<CachedFile[]> {
    const base = join(this.root, "snapshots", commit);
    const out: CachedFile[] = [];
    const walk = async (dir: string, rel: string): Promise<void> => {
      let entries: Deno.DirEntry[];
      try {
        entries = await Array.fromAsync(Deno.readDir(dir));
      } catch {
        return;
      }
      entries.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
      for (const e of entries) {
        const path = rel ? `${rel}/${e.name}` : e.name;
        const full = join(dir, e.name);
        if (e.isDirectory) {
          await walk(full, path);
          continue;
        }
        if (!isSafeRelativePath(path) || /\.tmp$/.test(e.name)) continue;
        try {
          const info = await Deno.stat(full); // follows the link: a dangling one is left out
          if (!info.isFile) continue;
          let sha256: string | undefined;
          if (e.isSymlink) {
            const target = await Deno.readLink(full);
            const blob = target.slice(target.lastIndexOf("/") + 1);
            if (isSha256(blob)) sha256 = blob;
          }
          out.push({ path, size: info.size, sha256, local: full });
        } catch { /* dangling */ }
      }
    };
    await walk(base, "");
    return out;
  }
}

/** A file found in a cached snapshot. */
export interface CachedFile {
  /** Path in the repository. */
  path: string;
  /** Bytes. */
  size: number;
  /** The sha256 its blob is named after, when the blob is an LFS file. */
  sha256?: string;
  /** The snapshot path. */
  local: string;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/** Where plain URLs are cached: `<loupe cache>/models/`. */
export function urlCacheDir(): string {
  return join(loupeCacheDir(), "models");
}
