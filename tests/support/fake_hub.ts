// A small fake Hugging Face hub on loopback, written from the hub's public HTTP behaviour as
// huggingface_hub and llama.cpp use it:
//
//   GET  /api/models/{owner}/{repo}/revision/{rev}[?blobs=true]  {id, sha, siblings: [{rfilename, blobId, size, lfs: {sha256, size, pointerSize}}]}
//   GET  /api/models/{owner}/{repo}/tree/{rev}[/{path}]?recursive=true  [{type, oid, size, path, lfs: {oid, size, pointerSize}}]
//   HEAD/GET /{owner}/{repo}/resolve/{rev}/{file}  an LFS file: 302 to the CDN with X-Repo-Commit, X-Linked-Etag,
//        X-Linked-Size and ETag; a non-LFS file: 200 with its bytes and ETag = its git blob sha1
//   errors as the hub sends them: 401 + X-Error-Code: RepoNotFound (unknown or private repo, no token),
//        401/403 + GatedRepo, 404 + RevisionNotFound / EntryNotFound, with X-Error-Message
//
// The CDN is a second server (another origin, so a token must not follow the redirect) that serves
// blobs by sha256 with Range (206, Content-Range, 416) and plain-URL files under /files/ with an
// ETag. A third, raw TCP server writes answers no HTTP library would (a Content-Length that lies).
// Faults are injected per file and counted; every request is recorded.
import { createHash } from "node:crypto";
import { GGUFWriter } from "../../src/gguf/writer.ts";
import { readGGUF } from "../../src/gguf/reader.ts";
import { GGUFValueType } from "../../src/gguf/types.ts";

/** A file of a fake repository. */
export interface FakeFile {
  /** Path in the repository. */
  path: string;
  /** Its bytes. */
  data: Uint8Array;
  /** Stored with LFS (default: true for .gguf files). */
  lfs?: boolean;
}

/** A fake repository at one revision. */
export interface FakeRepo {
  /** owner/repo. */
  id: string;
  /** Files. */
  files: FakeFile[];
  /** Revision name (default "main"). */
  revision?: string;
  /** Gated: 401 without a token, 403 with a token other than `token`. */
  gated?: boolean;
  /** Private: 401 RepoNotFound without the right token. */
  private?: boolean;
  /** The token that opens it. */
  token?: string;
  /** Leave the sizes and hashes out of the revision listing (only the tree endpoint has them). */
  noBlobs?: boolean;
  /** Extra names listed in siblings without a file (hostile listings). */
  extraSiblings?: string[];
}

/** One injected misbehaviour of the CDN (or the resolve route) for one file. */
export interface Fault {
  /** Answer with this status instead (429, 500, …). */
  status?: number;
  /** Retry-After with the status. */
  retryAfter?: string;
  /** End the body after the file's byte `cutAt` (the Content-Length still announces the whole range). */
  cutAt?: number;
  /** Flip the byte at this file offset in what is sent. */
  flipAt?: number;
  /** Send bytes forever (200, no Content-Length). */
  endless?: boolean;
  /** Redirect the resolve to itself (a loop). */
  redirectLoop?: boolean;
  /** Redirect the resolve to this URL instead of the CDN. */
  redirectTo?: string;
  /** Send through the raw server with a Content-Length that lies: "short" sends half, "long" announces double. */
  lie?: "short" | "long";
  /** Pause this long between chunks of `chunk` bytes (default 64 KiB). */
  delayMs?: number;
  /** Chunk size of a slow answer. */
  chunk?: number;
  /** How many requests it applies to (default 1; Infinity: all). */
  times?: number;
}

/** A request the fake servers saw. */
export interface SeenRequest {
  server: "hub" | "cdn" | "raw";
  method: string;
  path: string;
  range: string | null;
  authorization: string | null;
}

interface Revision {
  repo: FakeRepo;
  commit: string;
  files: Map<string, FakeFile & { sha256: string; gitSha1: string }>;
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

function gitSha1(data: Uint8Array): string {
  return createHash("sha1").update(`blob ${data.length}\0`).update(data).digest("hex");
}

function isLfs(f: FakeFile): boolean {
  return f.lfs ?? f.path.endsWith(".gguf");
}

/** The fake hub; `endpoint` goes into HF_ENDPOINT (or the `endpoint` option). */
export class FakeHub {
  readonly requests: SeenRequest[] = [];
  #revisions = new Map<string, Map<string, Revision>>(); // repo id -> revision name and commit -> revision
  #blobs = new Map<string, Uint8Array>();
  #faults = new Map<string, Fault[]>();
  #plain = new Map<string, { data: Uint8Array; etag: string }>();
  #hub!: Deno.HttpServer<Deno.NetAddr>;
  #cdn!: Deno.HttpServer<Deno.NetAddr>;
  #raw!: Deno.Listener;
  #rawConns = new Set<Deno.Conn>();
  #closed = false;
  endpoint = "";
  cdnOrigin = "";
  rawOrigin = "";

  static start(repos: FakeRepo[] = []): Promise<FakeHub> {
    const hub = new FakeHub();
    hub.#hub = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (r) => hub.#serveHub(r));
    hub.#cdn = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (r) => hub.#serveCdn(r));
    hub.#raw = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    hub.endpoint = `http://127.0.0.1:${hub.#hub.addr.port}`;
    hub.cdnOrigin = `http://127.0.0.1:${hub.#cdn.addr.port}`;
    hub.rawOrigin = `http://127.0.0.1:${(hub.#raw.addr as Deno.NetAddr).port}`;
    hub.#acceptRaw();
    for (const r of repos) hub.add(r);
    return Promise.resolve(hub);
  }

  /** Adds (or replaces) a repository revision; returns its commit. */
  add(repo: FakeRepo): string {
    const revision = repo.revision ?? "main";
    const files = new Map<string, FakeFile & { sha256: string; gitSha1: string }>();
    const h = createHash("sha1").update(`${repo.id}@${revision}`);
    for (const f of repo.files) {
      const full = { ...f, sha256: sha256(f.data), gitSha1: gitSha1(f.data) };
      files.set(f.path, full);
      this.#blobs.set(full.sha256, f.data);
      h.update(`${f.path}:${full.sha256}`);
    }
    const commit = h.digest("hex");
    const revs = this.#revisions.get(repo.id) ?? new Map<string, Revision>();
    const rev: Revision = { repo, commit, files };
    revs.set(revision, rev);
    revs.set(commit, rev);
    this.#revisions.set(repo.id, revs);
    return commit;
  }

  /** Serves `data` at `<cdn>/files/<name>` with `etag`; returns the URL. */
  addPlain(name: string, data: Uint8Array, etag = `"${sha256(data).slice(0, 12)}"`): string {
    this.#plain.set(name, { data, etag });
    return `${this.cdnOrigin}/files/${name}`;
  }

  /** Injects a fault for a file (its path in the repository, or a plain file's name). */
  fault(file: string, fault: Fault): void {
    const list = this.#faults.get(file) ?? [];
    list.push({ times: 1, ...fault });
    this.#faults.set(file, list);
  }

  /** Forgets every fault. */
  clearFaults(): void {
    this.#faults.clear();
  }

  #take(file: string, pred: (f: Fault) => boolean): Fault | undefined {
    const list = this.#faults.get(file);
    const f = list?.find((x) => pred(x) && (x.times ?? 1) > 0);
    if (!f) return undefined;
    f.times = (f.times ?? 1) - 1;
    return f;
  }

  /** Requests seen that match. */
  count(pred: (r: SeenRequest) => boolean = () => true): number {
    return this.requests.filter(pred).length;
  }

  /** Body requests of the CDN (downloads) for a blob sha256 or a plain file name. */
  downloads(key?: string): number {
    return this.count((r) =>
      (r.server === "cdn" || r.server === "raw") && r.method === "GET" && (!key || r.path.includes(key))
    );
  }

  /** The sha256 of a file as served. */
  sha(repo: string, path: string, revision = "main"): string {
    return this.#revisions.get(repo)!.get(revision)!.files.get(path)!.sha256;
  }

  /** The commit of a revision. */
  commit(repo: string, revision = "main"): string {
    return this.#revisions.get(repo)!.get(revision)!.commit;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#raw.close();
    for (const c of this.#rawConns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await Promise.all([this.#hub.shutdown(), this.#cdn.shutdown()]);
  }

  #record(server: SeenRequest["server"], req: Request): URL {
    const url = new URL(req.url);
    this.requests.push({
      server,
      method: req.method,
      path: decodeURIComponent(url.pathname),
      range: req.headers.get("range"),
      authorization: req.headers.get("authorization"),
    });
    return url;
  }

  #error(status: number, code: string, message: string): Response {
    return new Response(JSON.stringify({ error: message }), {
      status,
      headers: { "content-type": "application/json", "x-error-code": code, "x-error-message": message },
    });
  }

  /** The revision, or the error the hub gives (auth first, as the hub does). */
  #lookup(req: Request, id: string, rev: string): Revision | Response {
    const revs = this.#revisions.get(id);
    const auth = req.headers.get("authorization");
    const anyRev = revs ? revs.values().next().value! : undefined;
    if (!revs || (anyRev!.repo.private && auth !== `Bearer ${anyRev!.repo.token}`)) {
      return auth
        ? this.#error(404, "RepoNotFound", "Repository not found")
        : this.#error(401, "RepoNotFound", "Repository not found");
    }
    if (anyRev!.repo.gated && auth !== `Bearer ${anyRev!.repo.token}`) {
      const msg = `Access to model ${id} is restricted. You must have access to it and be authenticated to access it.`;
      return auth ? this.#error(403, "GatedRepo", msg) : this.#error(401, "GatedRepo", msg);
    }
    const r = revs.get(rev);
    if (!r) return this.#error(404, "RevisionNotFound", `Invalid rev id: ${rev}`);
    return r;
  }

  #serveHub(req: Request): Response | Promise<Response> {
    const url = this.#record("hub", req);
    const path = url.pathname;
    let m = path.match(/^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/);
    if (m) {
      const r = this.#lookup(req, decodeURIComponent(m[1]), decodeURIComponent(m[2]));
      if (r instanceof Response) return r;
      const fault = this.#take("api", (f) => f.status !== undefined);
      if (fault) return this.#faultStatus(fault);
      const blobs = url.searchParams.get("blobs") === "true" && !r.repo.noBlobs;
      const siblings = [...r.files.values()].map((f) =>
        blobs
          ? {
            rfilename: f.path,
            blobId: isLfs(f)
              ? gitSha1(new TextEncoder().encode(`version https://git-lfs.github.com/spec/v1\n`))
              : f.gitSha1,
            size: f.data.length,
            ...(isLfs(f) ? { lfs: { sha256: f.sha256, size: f.data.length, pointerSize: 134 } } : {}),
          }
          : { rfilename: f.path }
      );
      for (const extra of r.repo.extraSiblings ?? []) siblings.push({ rfilename: extra });
      return Response.json({
        _id: "x",
        id: r.repo.id,
        modelId: r.repo.id,
        sha: r.commit,
        private: !!r.repo.private,
        gated: r.repo.gated ? "auto" : false,
        siblings,
      });
    }
    m = path.match(/^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)(?:\/(.*))?$/);
    if (m) {
      const r = this.#lookup(req, decodeURIComponent(m[1]), decodeURIComponent(m[2]));
      if (r instanceof Response) return r;
      const under = m[3] ? decodeURIComponent(m[3]) + "/" : "";
      return Response.json(
        [...r.files.values()].filter((f) => f.path.startsWith(under)).map((f) => ({
          type: "file",
          oid: isLfs(f) ? gitSha1(new TextEncoder().encode(`lfs ${f.sha256}`)) : f.gitSha1,
          size: f.data.length,
          path: f.path,
          ...(isLfs(f) ? { lfs: { oid: f.sha256, size: f.data.length, pointerSize: 134 } } : {}),
        })),
      );
    }
    m = path.match(/^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/);
    if (m) {
      const r = this.#lookup(req, decodeURIComponent(m[1]), decodeURIComponent(m[2]));
      if (r instanceof Response) return r;
      const file = decodeURIComponent(m[3]);
      const f = r.files.get(file);
      if (!f) return this.#error(404, "EntryNotFound", `${file} does not exist on "${m[2]}"`);
      const fault = this.#take(file, (x) => !!x.redirectLoop || !!x.redirectTo || !!x.lie);
      if (fault?.redirectLoop) return new Response(null, { status: 302, headers: { location: path } });
      if (fault?.redirectTo) return new Response(null, { status: 302, headers: { location: fault.redirectTo } });
      const headers = {
        "x-repo-commit": r.commit,
        etag: isLfs(f) ? `"${f.sha256}"` : `"${f.gitSha1}"`,
        ...(isLfs(f) ? { "x-linked-etag": `"${f.sha256}"`, "x-linked-size": String(f.data.length) } : {}),
      };
      if (fault?.lie) {
        return new Response(null, {
          status: 302,
          headers: { ...headers, location: `${this.rawOrigin}/lie/${fault.lie}/${f.sha256}` },
        });
      }
      if (isLfs(f)) {
        return new Response(null, {
          status: 302,
          headers: {
            ...headers,
            location: `${this.cdnOrigin}/blobs/${f.sha256}?file=${encodeURIComponent(file)}&sig=secret`,
          },
        });
      }
      return this.#bytes(req, f.data, file, headers);
    }
    return new Response("not found", { status: 404 });
  }

  #serveCdn(req: Request): Response | Promise<Response> {
    const url = this.#record("cdn", req);
    let m = url.pathname.match(/^\/blobs\/([0-9a-f]{64})$/);
    if (m) {
      const data = this.#blobs.get(m[1]);
      if (!data) return new Response("no such blob", { status: 404 });
      const file = url.searchParams.get("file") ?? m[1];
      return this.#bytes(req, data, file, { etag: `"${m[1]}"` });
    }
    m = url.pathname.match(/^\/files\/(.+)$/);
    if (m) {
      const p = this.#plain.get(decodeURIComponent(m[1]));
      if (!p) return new Response("no such file", { status: 404 });
      return this.#bytes(req, p.data, decodeURIComponent(m[1]), { etag: p.etag });
    }
    m = url.pathname.match(/^\/loop\/(\d+)\/(.+)$/);
    if (m) return new Response(null, { status: 302, headers: { location: `/loop/${Number(m[1]) + 1}/${m[2]}` } });
    return new Response("not found", { status: 404 });
  }

  #faultStatus(f: Fault): Response {
    return new Response(JSON.stringify({ error: `injected ${f.status}` }), {
      status: f.status,
      headers: { "content-type": "application/json", ...(f.retryAfter ? { "retry-after": f.retryAfter } : {}) },
    });
  }

  /** Bytes with Range support and the faults of `file`. */
  #bytes(req: Request, data: Uint8Array, file: string, headers: Record<string, string>): Response {
    const statusFault = this.#take(file, (f) => f.status !== undefined);
    if (statusFault) return this.#faultStatus(statusFault);
    const base = { ...headers, "accept-ranges": "bytes", "content-type": "application/octet-stream" };
    if (req.method === "HEAD") {
      return new Response(null, { headers: { ...base, "content-length": String(data.length) } });
    }
    const endless = this.#take(file, (f) => !!f.endless);
    if (endless) {
      const chunk = new Uint8Array(64 * 1024).fill(7);
      return new Response(new ReadableStream({ pull: (c) => c.enqueue(chunk) }), { headers: base });
    }
    let start = 0;
    let end = data.length - 1;
    let status = 200;
    const range = req.headers.get("range")?.match(/^bytes=(\d+)-(\d*)$/);
    const extra: Record<string, string> = {};
    if (range) {
      start = Number(range[1]);
      if (range[2]) end = Math.min(end, Number(range[2]));
      if (start >= data.length) {
        return new Response(null, { status: 416, headers: { "content-range": `bytes */${data.length}` } });
      }
      status = 206;
      extra["content-range"] = `bytes ${start}-${end}/${data.length}`;
    }
    const cut = this.#take(file, (f) => f.cutAt !== undefined && f.cutAt >= start && f.cutAt <= end);
    const flip = this.#faults.get(file)?.find((f) => f.flipAt !== undefined && (f.times ?? 1) > 0);
    const slow = this.#faults.get(file)?.find((f) => f.delayMs !== undefined && (f.times ?? 1) > 0);
    const stop = cut ? cut.cutAt! : end + 1;
    let body = data.subarray(start, stop);
    if (flip && flip.flipAt! >= start && flip.flipAt! < stop) {
      body = body.slice();
      body[flip.flipAt! - start] ^= 0xff;
    }
    const chunk = slow?.chunk ?? 64 * 1024;
    let at = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull: async (c) => {
        if (slow?.delayMs && at > 0) await new Promise((r) => setTimeout(r, slow.delayMs));
        if (at >= body.length) return c.close(); // a cut: fewer bytes than announced
        const piece = body.subarray(at, at + chunk);
        at += piece.length;
        c.enqueue(piece);
      },
    });
    return new Response(stream, {
      status,
      headers: { ...base, ...extra, "content-length": String(end - start + 1) },
    });
  }

  async #acceptRaw(): Promise<void> {
    try {
      for await (const conn of this.#raw) {
        this.#rawConns.add(conn);
        this.#serveRaw(conn).finally(() => this.#rawConns.delete(conn));
      }
    } catch { /* closed */ }
  }

  async #serveRaw(conn: Deno.Conn): Promise<void> {
    try {
      const buf = new Uint8Array(8192);
      const n = await conn.read(buf);
      if (n === null) return;
      const head = new TextDecoder().decode(buf.subarray(0, n));
      const [method, target] = head.split("\r\n")[0].split(" ");
      const range = head.match(/\r\nrange: *([^\r]+)/i)?.[1] ?? null;
      this.requests.push({ server: "raw", method, path: target, range, authorization: null });
      const m = target.match(/^\/lie\/(short|long)\/([0-9a-f]{64})/);
      const data = m ? this.#blobs.get(m[2]) : undefined;
      if (!m || !data) {
        await conn.write(
          new TextEncoder().encode("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
        );
        return;
      }
      const announced = m[1] === "long" ? data.length * 2 : data.length;
      const sent = m[1] === "short" ? data.subarray(0, data.length >> 1) : data;
      await conn.write(
        new TextEncoder().encode(`HTTP/1.1 200 OK\r\ncontent-length: ${announced}\r\nconnection: close\r\n\r\n`),
      );
      let off = 0;
      while (off < sent.length) off += await conn.write(sent.subarray(off));
    } catch {
      /* the client went away */
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  }
}

/**
 * Cuts a GGUF file into `parts` split files as llama.cpp's gguf-split writes them: every part
 * has `split.no` (0-based), `split.count` and `split.tensors.count`; the first part has all the
 * metadata; the tensors are dealt out in order.
 */
export function splitGGUF(bytes: Uint8Array, parts: number): Uint8Array[] {
  const file = readGGUF(bytes);
  const per = Math.ceil(file.tensors.length / parts);
  const out: Uint8Array[] = [];
  for (let i = 0; i < parts; i++) {
    const w = new GGUFWriter({ alignment: file.alignment });
    if (i === 0) {
      for (const [k, v] of file.kv) if (k !== "general.alignment") w.addKV(k, v);
    }
    w.addKV("split.no", { type: GGUFValueType.UINT16, value: i });
    w.addKV("split.count", { type: GGUFValueType.UINT16, value: parts });
    w.addKV("split.tensors.count", { type: GGUFValueType.INT32, value: file.tensors.length });
    for (const t of file.tensors.slice(i * per, (i + 1) * per)) {
      const start = file.dataOffset + t.offset;
      w.addTensor(t.name, t.dims, t.type, bytes.subarray(start, start + t.size));
    }
    out.push(w.toBytes());
  }
  return out;
}

/** Deterministic pseudo-random bytes (a file that is not a model, for transfer tests). */
export function randomBytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Every file under `root` (relative paths, links not followed). */
export async function filesUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, rel: string) => {
    for await (const e of Deno.readDir(dir)) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) await walk(`${dir}/${e.name}`, p);
      else out.push(p);
    }
  };
  await walk(root, "");
  return out.sort();
}
