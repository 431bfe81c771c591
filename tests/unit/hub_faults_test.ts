// Downloads that cannot go wrong silently, against the fake hub's injected faults: cuts resume
// with identical bytes, a flipped byte is CHECKSUM and leaves nothing, 429/500 are retried, an
// abort keeps the partial file for a resume, concurrent loads (in one process and in two) make
// one download, a full disk leaves no blob; and a hostile server (traversal, an endless body, a
// lying Content-Length, redirect loops, plain-http redirects) gets typed errors, writes nothing
// outside the cache and leaves the process alive.
import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { FakeHub, filesUnder, randomBytes } from "../support/fake_hub.ts";
import { LoupeError } from "../../src/util/errors.ts";
import { pull, resolveHooks } from "../../src/hub/resolve.ts";
import { downloadHooks } from "../../src/hub/download.ts";

resolveHooks.backoffMs = 5;

const SIZE = 1_000_000;
const FILE = "m-Q4_K_M.gguf";

async function rejectsCode(fn: () => Promise<unknown>, code: string, ...includes: string[]): Promise<LoupeError> {
  const e = await assertRejects(fn, LoupeError);
  assertEquals(e.code, code, e.message);
  for (const s of includes) assert(e.message.includes(s), `"${e.message}" should include "${s}"`);
  return e;
}

async function setup(size = SIZE) {
  const root = await Deno.makeTempDir({ prefix: "loupe-hubf-" });
  const data = randomBytes(size, 42);
  const hub = await FakeHub.start([{
    id: "o/r",
    files: [{ path: FILE, data }, { path: "README.md", data: new Uint8Array(3) }],
  }]);
  const cacheDir = join(root, "cache", "hub");
  const opts = {
    endpoint: hub.endpoint,
    cacheDir,
    token: false as const,
    progress: false,
    urlCacheDir: join(root, "cache", "urls"),
  };
  const sha = hub.sha("o/r", FILE);
  const blob = join(cacheDir, "models--o--r", "blobs", sha);
  return {
    root,
    hub,
    data,
    opts,
    sha,
    blob,
    async [Symbol.asyncDispose]() {
      await hub.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("a cut at 10 %, 50 % and 99 % resumes with Range, and the bytes are identical", async () => {
  for (const fraction of [0.1, 0.5, 0.99]) {
    await using t = await setup();
    const at = Math.floor(SIZE * fraction);
    t.hub.fault(FILE, { cutAt: at });
    const r = await pull("hf:o/r", t.opts);
    assertEquals(await Deno.readFile(r.path), t.data, `cut at ${fraction}`);
    const gets = t.hub.requests.filter((q) => q.server === "cdn" && q.method === "GET");
    assertEquals(gets.map((q) => q.range), [null, `bytes=${at}-`], `cut at ${fraction}`);
    assertEquals(r.downloadedBytes, SIZE);
    assert(!await exists(`${t.blob}.incomplete`));
  }
});

Deno.test("a restart resumes a partial file from disk, hashing its bytes first; a wrong partial is caught", async () => {
  await using t = await setup();
  t.hub.fault(FILE, { cutAt: 400_000, times: Infinity }); // then every resume is cut at once: no progress
  await rejectsCode(() => pull("hf:o/r", { ...t.opts, retries: 2 }), "NETWORK", "partial download is kept");
  assertEquals((await Deno.stat(`${t.blob}.incomplete`)).size, 400_000);
  t.hub.clearFaults();
  const r = await pull("hf:o/r", t.opts);
  assertEquals([r.resumedBytes, r.downloadedBytes, r.cacheHit], [400_000, SIZE - 400_000, false]);
  assertEquals(t.hub.requests.filter((q) => q.server === "cdn").at(-1)!.range, "bytes=400000-");
  assertEquals(await Deno.readFile(r.path), t.data);
  // a partial file whose bytes are wrong: resumed, then refused by the hash, and deleted
  await using u = await setup();
  await Deno.mkdir(join(u.blob, ".."), { recursive: true });
  await Deno.writeFile(`${u.blob}.incomplete`, randomBytes(300_000, 7));
  const e = await rejectsCode(() => pull("hf:o/r", u.opts), "CHECKSUM", u.sha);
  assert(!await exists(`${u.blob}.incomplete`) && !await exists(u.blob), e.message);
});

Deno.test("a flipped byte is CHECKSUM naming both hashes; the partial file is removed and nothing is linked", async () => {
  await using t = await setup();
  t.hub.fault(FILE, { flipAt: 123_456, times: Infinity });
  const e = await rejectsCode(() => pull("hf:o/r", t.opts), "CHECKSUM", `expected ${t.sha}`, "deleted");
  const actual = e.message.match(/sha256 is ([0-9a-f]{64})/)?.[1];
  assert(actual && actual !== t.sha);
  assert(!await exists(`${t.blob}.incomplete`) && !await exists(t.blob));
  const snapshots = join(t.opts.cacheDir, "models--o--r", "snapshots");
  assertEquals((await filesUnder(snapshots).catch(() => [])).length, 0);
  t.hub.clearFaults();
  assertEquals(await Deno.readFile((await pull("hf:o/r", t.opts)).path), t.data);
});

Deno.test("429 with Retry-After waits as told; 500 once then success; 500 always is NETWORK after the attempts", async () => {
  await using t = await setup();
  t.hub.fault(FILE, { status: 429, retryAfter: "1" });
  const t0 = performance.now();
  const r = await pull("hf:o/r", t.opts);
  const waited = performance.now() - t0;
  assert(waited >= 950, `waited ${waited} ms for Retry-After: 1`);
  assertEquals(await Deno.readFile(r.path), t.data);
  await using u = await setup();
  u.hub.fault(FILE, { status: 500 });
  u.hub.fault("api", { status: 502 });
  assertEquals(await Deno.readFile((await pull("hf:o/r", u.opts)).path), u.data);
  assertEquals(u.hub.count((q) => q.path.startsWith("/api/")), 2, "the listing was asked again after its 502");
  await using v = await setup();
  v.hub.fault(FILE, { status: 500, times: Infinity });
  await rejectsCode(() => pull("hf:o/r", { ...v.opts, retries: 3 }), "NETWORK", "answered 500", "3 attempts");
  assertEquals(v.hub.downloads(), 3);
  v.hub.clearFaults();
  v.hub.fault(FILE, { status: 429, retryAfter: "3600" });
  await rejectsCode(() => pull("hf:o/r", v.opts), "NETWORK", "3600 s", "try again later");
});

Deno.test("an abort mid-download keeps the partial file; the next call resumes it", async () => {
  await using t = await setup();
  t.hub.fault(FILE, { delayMs: 20, chunk: 50_000, times: Infinity });
  const ac = new AbortController();
  const started = pull("hf:o/r", {
    ...t.opts,
    signal: ac.signal,
    onProgress: (p) => p.fileBytes >= 200_000 && ac.abort(),
  });
  await rejectsCode(() => started, "ABORTED", "partial download is kept");
  const kept = (await Deno.stat(`${t.blob}.incomplete`)).size;
  assert(kept >= 200_000 && kept < SIZE, `kept ${kept}`);
  t.hub.clearFaults();
  const r = await pull("hf:o/r", t.opts);
  assertEquals(r.resumedBytes, kept);
  assertEquals(await Deno.readFile(r.path), t.data);
  await rejectsCode(() => pull("hf:o/r:Q8_0", { ...t.opts, signal: AbortSignal.abort() }), "ABORTED");
});

Deno.test("two concurrent loads of one file make one download, in one process and in two", async () => {
  await using t = await setup();
  t.hub.fault(FILE, { delayMs: 10, chunk: 100_000, times: Infinity });
  const [a, b] = await Promise.all([pull("hf:o/r", t.opts), pull("hf:o/r:q4_k_m", t.opts)]);
  assertEquals(a.path, b.path);
  assertEquals(t.hub.downloads(t.sha), 1);
  assertEquals(await Deno.readFile(a.path), t.data);

  // two processes (two notebooks): the lock file makes the second wait and reuse the blob
  await using u = await setup();
  u.hub.fault(FILE, { delayMs: 20, chunk: 100_000, times: Infinity });
  const module = new URL("../../src/hub/resolve.ts", import.meta.url).href;
  const script = `const { pull } = await import(${JSON.stringify(module)});
const r = await pull("hf:o/r", ${JSON.stringify(u.opts)});
console.log(JSON.stringify({ path: r.path, downloaded: r.downloadedBytes }));`;
  const run = () =>
    new Deno.Command(Deno.execPath(), { args: ["eval", "--no-check", script], stdout: "piped", stderr: "piped" })
      .output();
  const outs = await Promise.all([run(), run()]);
  const results = outs.map((o) => {
    assert(o.success, new TextDecoder().decode(o.stderr));
    return JSON.parse(new TextDecoder().decode(o.stdout).trim());
  });
  assertEquals(results[0].path, results[1].path);
  assertEquals(results.map((r) => r.downloaded).sort((x, y) => x - y), [0, SIZE], "one process downloaded, one reused");
  assertEquals(u.hub.downloads(u.sha), 1);
  assertEquals(await Deno.readFile(results[0].path), u.data);
});

/** A 2 MB tmpfs as the cache's disk, when this process may mount one (root); else null. */
async function tinyDisk(dir: string): Promise<{ dir: string; release(): Promise<void> } | null> {
  await Deno.mkdir(dir, { recursive: true });
  const out = await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=2m", "tmpfs", dir], stderr: "null" })
    .output().catch(() => null);
  if (!out?.success) return null;
  return {
    dir,
    async release() {
      await new Deno.Command("umount", { args: [dir] }).output();
    },
  };
}

Deno.test("a full disk is DISK_FULL before any byte (free space checked) and during the transfer; no blob", async () => {
  await using t = await setup(1_500_000);
  const disk = await tinyDisk(join(t.root, "disk"));
  const cacheDir = disk ? join(disk.dir, "hub") : t.opts.cacheDir;
  const opts = { ...t.opts, cacheDir };
  const blob = join(cacheDir, "models--o--r", "blobs", t.sha);
  try {
    // before: free space is checked first (a real 2 MB disk with 1.5 MB taken, or a reported 1 MB)
    if (disk) await Deno.writeFile(join(disk.dir, "filler"), new Uint8Array(1_500_000));
    else downloadHooks.freeBytes = () => Promise.resolve(1_000_000);
    await rejectsCode(() => pull("hf:o/r", opts), "DISK_FULL", "1.50 MB more are needed");
    assertEquals(t.hub.downloads(), 0, "nothing was fetched");
    if (disk) await Deno.remove(join(disk.dir, "filler"));
    delete downloadHooks.freeBytes;
    // during: the disk fills up while the bytes arrive (another writer takes the space; or a failing write)
    t.hub.fault(FILE, { delayMs: 30, chunk: 100_000, times: Infinity });
    let written = 0;
    downloadHooks.write = async (file, chunk) => {
      written += chunk.length;
      if (written > 300_000) {
        if (disk) await Deno.writeFile(join(disk.dir, "filler"), new Uint8Array(1_500_000)).catch(() => {});
        else throw Object.assign(new Error("No space left on device (os error 28)"), { code: "ENOSPC" });
      }
      let off = 0;
      while (off < chunk.length) off += await file.write(chunk.subarray(off));
    };
    await rejectsCode(() => pull("hf:o/r", opts), "DISK_FULL", "is full", "resumes");
    assert(!await exists(blob), "no blob");
    assertEquals(
      await filesUnder(join(cacheDir, "models--o--r")).then((f) => f.filter((x) => !x.endsWith(".incomplete"))),
      [
        "refs/main",
      ],
    );
    delete downloadHooks.write;
    if (disk) await Deno.remove(join(disk.dir, "filler"));
    t.hub.clearFaults();
    const r = await pull("hf:o/r", opts);
    assertEquals(await Deno.readFile(r.path), t.data, "after space was freed the download resumed");
    assert(r.resumedBytes > 0);
  } finally {
    delete downloadHooks.write;
    delete downloadHooks.freeBytes;
    await disk?.release();
  }
});

Deno.test("a hostile server: traversal, endless body, lying Content-Length, redirect loops: typed errors, nothing outside the cache", async () => {
  await using t = await setup(300_000);
  const { hub, opts } = t;
  const data = randomBytes(300_000, 5);
  hub.add({
    id: "evil/names",
    files: [{ path: "ok-Q4_K_M.gguf", data }],
    extraSiblings: ["../../../../escaped-Q8_0.gguf"],
  });
  await rejectsCode(() => pull("hf:evil/names:Q8_0", opts), "BAD_RESPONSE", "unsafe file name", "escaped");
  await rejectsCode(() => pull("hf:o/r/../../../x.gguf", opts), "INVALID_ARGUMENT", "leave the repository");
  await rejectsCode(() => pull("hf:o/r/%2E%2E/%2E%2E/x.gguf", opts), "INVALID_ARGUMENT");
  await rejectsCode(() => pull("file:///etc/passwd", opts), "INVALID_ARGUMENT", "file: URLs");

  hub.fault(FILE, { endless: true });
  await rejectsCode(() => pull("hf:o/r", opts), "BAD_RESPONSE", "more than the file's 300000 bytes", "deleted");
  assert(!await exists(`${t.blob}.incomplete`) && !await exists(t.blob));

  hub.fault(FILE, { lie: "long" });
  await rejectsCode(() => pull("hf:o/r", opts), "BAD_RESPONSE", "announces 600000 bytes", "Content-Length");
  hub.fault(FILE, { lie: "short", times: 3 });
  await rejectsCode(() => pull("hf:o/r", { ...opts, retries: 3 }), "NETWORK", "3 attempts");
  assert(!await exists(t.blob));

  hub.fault(FILE, { redirectLoop: true, times: Infinity });
  await rejectsCode(() => pull("hf:o/r", opts), "BAD_RESPONSE", "redirect loop");
  hub.clearFaults();
  await rejectsCode(() => pull(`${hub.cdnOrigin}/loop/0/m.gguf`, opts), "BAD_RESPONSE", "more than 10 redirects");
  hub.fault(FILE, { redirectTo: "http://example.invalid/steal.gguf" });
  await rejectsCode(() => pull("hf:o/r", opts), "BAD_RESPONSE", "only https", "example.invalid");
  hub.fault(FILE, { redirectTo: "file:///etc/passwd" });
  await rejectsCode(() => pull("hf:o/r", opts), "BAD_RESPONSE", "only https");

  // still alive and well: the same file downloads, and every file written is inside the cache
  hub.clearFaults();
  assertEquals(await Deno.readFile((await pull("hf:o/r", opts)).path), t.data);
  const written = await filesUnder(t.root);
  assert(written.every((f) => f.startsWith("cache/")), written.join("\n"));
  assert(!written.some((f) => f.includes("escaped")));
});
