// Models by name without the engine: what names mean, which file a repository name picks (the
// quant, split parts, the projector), the Hugging Face cache layout byte for byte as huggingface_hub
// writes and reads it, the environment, plain URLs, tokens, and progress — against the fake hub on
// loopback (tests/support/fake_hub.ts); nothing leaves the machine.
import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { FakeHub, filesUnder, randomBytes } from "../support/fake_hub.ts";
import { LoupeError } from "../../src/util/errors.ts";
import {
  isSafeRelativePath,
  parseModelName,
  projectorCandidates,
  quantsOf,
  selectModelFile,
  splitInfo,
  splitParts,
} from "../../src/hub/names.ts";
import { hubConfig, repoFolderName } from "../../src/hub/cache.ts";
import { describeProgress, type DownloadProgress, pull, resolveHooks, resolveModel } from "../../src/hub/resolve.ts";
import { type MimeBundle, presenter, setPresenter } from "../../src/util/presenter.ts";

resolveHooks.backoffMs = 5;

async function rejectsCode(fn: () => Promise<unknown>, code: string, ...includes: string[]): Promise<LoupeError> {
  const e = await assertRejects(fn, LoupeError);
  assertEquals(e.code, code, e.message);
  for (const s of includes) assert(e.message.includes(s), `"${e.message}" should include "${s}"`);
  return e;
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as LoupeError).code;
  }
  return "none";
}

Deno.test("names: hf: forms, @revision, URLs and local paths; unsafe names are INVALID_ARGUMENT", () => {
  const p = (n: string) => parseModelName(n, "http://127.0.0.1:9");
  assertEquals(p("hf:owner/repo"), { kind: "hf", name: "hf:owner/repo", repo: "owner/repo", revision: "main" });
  assertEquals(p("hf:owner/repo:q4_k_m"), {
    kind: "hf",
    name: "hf:owner/repo:q4_k_m",
    repo: "owner/repo",
    revision: "main",
    quant: "q4_k_m",
  });
  assertEquals(p("hf:owner/Repo-1.5B_x@v1.0/sub/dir/f.gguf"), {
    kind: "hf",
    name: "hf:owner/Repo-1.5B_x@v1.0/sub/dir/f.gguf",
    repo: "owner/Repo-1.5B_x",
    revision: "v1.0",
    file: "sub/dir/f.gguf",
  });
  assertEquals((p("hf:o/r@refs%2Fpr%2F1:Q8_0") as { revision: string }).revision, "refs/pr/1");
  assertEquals(p("hf://o/r").kind, "hf");
  // a hub URL is the hf: name it stands for (cached in the hub layout, verified)
  const hubUrl = parseModelName("https://huggingface.co/o/r/resolve/main/x/m-Q8_0.gguf?download=true");
  assertEquals([hubUrl.kind, (hubUrl as { file: string }).file], ["hf", "x/m-Q8_0.gguf"]);
  const mirror = p("http://127.0.0.1:9/o/r/blob/abc/m.gguf");
  assertEquals([mirror.kind, (mirror as { revision: string }).revision], ["hf", "abc"]);
  const url = parseModelName(`https://example.com/m.gguf#sha256=${"A".repeat(64)}`);
  assertEquals([url.kind, (url as { sha256: string }).sha256, (url as { url: URL }).url.href], [
    "url",
    "a".repeat(64),
    "https://example.com/m.gguf",
  ]);
  assertEquals(p("models/m.gguf"), { kind: "local", name: "models/m.gguf", path: "models/m.gguf" });
  assertEquals(p("/abs/m.gguf").kind, "local");
  for (
    const bad of [
      "hf:o/r/../../etc/passwd",
      "hf:o/r/./m.gguf",
      "hf:o/r//abs.gguf",
      "hf:o/r/%2E%2E/x.gguf",
      "hf:o/r/a\\b.gguf",
      "hf:../r",
      "hf:o/..",
      "hf:o--x/r",
      "hf:o",
      "hf:o/r@..:Q4_K_M",
      "hf:o/r:Q4 K",
      "file:///etc/passwd",
      "ftp://host/m.gguf",
      "http://example.com/m.gguf",
      "https://user:pw@example.com/m.gguf",
      "https://example.com/m.gguf#md5=x",
      "",
    ]
  ) {
    assertEquals(code(() => p(bad)), "INVALID_ARGUMENT", bad);
  }
  assert(!isSafeRelativePath("a/\x00b") && isSafeRelativePath("a/b.c"));
});

Deno.test("quants: llama.cpp's rule (Q4_K_M, then Q8_0, then the first model), tags case-insensitive", () => {
  const files = [
    "README.md",
    "m-F16.gguf",
    "m-Q8_0.gguf",
    "m-IQ4_XS.gguf",
    "m-Q4_K_M.gguf",
    "mmproj-m-f16.gguf",
    "imatrix.gguf",
    "big/m-Q6_K-00001-of-00002.gguf",
    "big/m-Q6_K-00002-of-00002.gguf",
  ];
  assertEquals(selectModelFile(files), "m-Q4_K_M.gguf");
  assertEquals(selectModelFile(files.filter((f) => !f.includes("Q4_K_M"))), "m-Q8_0.gguf");
  assertEquals(selectModelFile(["mmproj-x.gguf", "a-F16.gguf", "b-BF16.gguf"]), "a-F16.gguf");
  assertEquals(selectModelFile(files, "q8_0"), "m-Q8_0.gguf");
  assertEquals(selectModelFile(files, "Q6_K"), "big/m-Q6_K-00001-of-00002.gguf", "a split model by its first part");
  assertEquals(selectModelFile(files, "XS"), null, "a tag is a whole quant, not a tail of one");
  assertEquals(selectModelFile(["m-IQ4_NL.gguf"], "Q4_NL"), null, "Q4_NL is not IQ4_NL");
  assertEquals(selectModelFile(files, "Q5_K_S"), null);
  assertEquals(quantsOf(files), ["F16", "Q8_0", "IQ4_XS", "Q4_K_M", "Q6_K"]);
  assertEquals(splitInfo("d/m-Q6_K-00002-of-00003.gguf"), { prefix: "d/m-Q6_K", tag: "Q6_K", index: 2, count: 3 });
  assertEquals(splitParts(files, "big/m-Q6_K-00002-of-00002.gguf", "x"), [
    "big/m-Q6_K-00001-of-00002.gguf",
    "big/m-Q6_K-00002-of-00002.gguf",
  ]);
  assertEquals(code(() => splitParts(files.slice(0, -1), "big/m-Q6_K-00001-of-00002.gguf", "x")), "NOT_FOUND");
  // projectors: next to the model or above it, the deepest folder's; several are returned, not picked
  assertEquals(projectorCandidates(files, "m-Q8_0.gguf"), ["mmproj-m-f16.gguf"]);
  assertEquals(
    projectorCandidates(["a/m.gguf", "mmproj-root.gguf", "a/mmproj-a.gguf", "b/mmproj-b.gguf"], "a/m.gguf"),
    [
      "a/mmproj-a.gguf",
    ],
  );
  assertEquals(projectorCandidates(["m.gguf", "mmproj-F16.gguf", "mmproj-F32.gguf"], "m.gguf").length, 2);
  assertEquals(projectorCandidates(["m.gguf", "b/mmproj-b.gguf"], "m.gguf"), []);
});

Deno.test("the environment: HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE", () => {
  const names = [
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HOME",
    "XDG_CACHE_HOME",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HF_HUB_OFFLINE",
    "HF_TOKEN_PATH",
    "HOME",
  ];
  const saved = Object.fromEntries(names.map((n) => [n, Deno.env.get(n)]));
  try {
    for (const n of names) Deno.env.delete(n);
    Deno.env.set("HOME", "/home/u");
    Deno.env.set("HF_TOKEN_PATH", "/nonexistent/token");
    let c = hubConfig();
    assertEquals([c.cacheDir, c.endpoint, c.token, c.offline], [
      "/home/u/.cache/huggingface/hub",
      "https://huggingface.co",
      undefined,
      false,
    ]);
    Deno.env.set("XDG_CACHE_HOME", "/xdg");
    assertEquals(hubConfig().cacheDir, "/xdg/huggingface/hub");
    Deno.env.set("HF_HOME", "/hfhome");
    assertEquals(hubConfig().cacheDir, "/hfhome/hub");
    Deno.env.set("HF_HUB_CACHE", "/hubcache");
    Deno.env.set("HF_ENDPOINT", "http://127.0.0.1:1/mirror/");
    Deno.env.set("HF_TOKEN", "hf_secret");
    Deno.env.set("HF_HUB_OFFLINE", "1");
    c = hubConfig();
    assertEquals([c.cacheDir, c.endpoint, c.token, c.offline], [
      "/hubcache",
      "http://127.0.0.1:1/mirror",
      "hf_secret",
      true,
    ]);
    for (const v of ["true", "YES", "on"]) {
      Deno.env.set("HF_HUB_OFFLINE", v);
      assert(hubConfig().offline, v);
    }
    Deno.env.set("HF_HUB_OFFLINE", "0");
    assert(!hubConfig().offline);
    assertEquals(hubConfig({ token: false, cacheDir: "/x" }).token, undefined);
    assertEquals(repoFolderName("owner/repo"), "models--owner--repo");
  } finally {
    for (const n of names) saved[n] === undefined ? Deno.env.delete(n) : Deno.env.set(n, saved[n]!);
  }
});

/** A fake hub with one repository of small files (not models: nothing is loaded here). */
async function setup() {
  const root = await Deno.makeTempDir({ prefix: "loupe-hub-" });
  const files = {
    q4: randomBytes(300_000, 1),
    q8: randomBytes(200_000, 2),
    f16: randomBytes(100_000, 3),
    mmproj: randomBytes(50_000, 4),
    part1: randomBytes(120_000, 5),
    part2: randomBytes(90_000, 6),
    part3: randomBytes(70_000, 7),
    readme: new TextEncoder().encode("# a model card\n"),
  };
  const hub = await FakeHub.start([{
    id: "owner/repo",
    files: [
      { path: "README.md", data: files.readme },
      { path: "model-F16.gguf", data: files.f16 },
      { path: "model-Q8_0.gguf", data: files.q8 },
      { path: "model-Q4_K_M.gguf", data: files.q4 },
      { path: "mmproj-model-f16.gguf", data: files.mmproj },
      { path: "split/model-Q6_K-00001-of-00003.gguf", data: files.part1 },
      { path: "split/model-Q6_K-00002-of-00003.gguf", data: files.part2 },
      { path: "split/model-Q6_K-00003-of-00003.gguf", data: files.part3 },
    ],
  }, {
    id: "owner/repo",
    revision: "v1",
    files: [{ path: "model-Q4_K_M.gguf", data: files.q8 }],
  }]);
  const opts = {
    endpoint: hub.endpoint,
    cacheDir: join(root, "hub"),
    token: false as const,
    urlCacheDir: join(root, "urls"),
    progress: false,
  };
  return {
    root,
    hub,
    files,
    opts,
    async [Symbol.asyncDispose]() {
      await hub.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

async function bytesOf(path: string): Promise<Uint8Array> {
  return await Deno.readFile(path);
}

Deno.test("layout: blobs/<sha256>, relative snapshot links and refs, exactly as huggingface_hub writes them", async () => {
  await using t = await setup();
  const r = await pull("hf:owner/repo", t.opts);
  const commit = t.hub.commit("owner/repo");
  const sha = t.hub.sha("owner/repo", "model-Q4_K_M.gguf");
  const repoDir = join(t.opts.cacheDir, "models--owner--repo");
  assertEquals(r.path, join(repoDir, "snapshots", commit, "model-Q4_K_M.gguf"));
  assertEquals([r.repo, r.revision, r.commit, r.source, r.cacheHit], ["owner/repo", "main", commit, "hf", false]);
  assertEquals(await Deno.readLink(r.path), `../../blobs/${sha}`, "a relative link, as _create_symlink makes");
  assert((await Deno.lstat(join(repoDir, "blobs", sha))).isFile);
  assertEquals(await bytesOf(r.path), t.files.q4);
  assertEquals(await Deno.readTextFile(join(repoDir, "refs", "main")), commit, "the commit, no newline");
  assertEquals(r.projectors, ["mmproj-model-f16.gguf"], "the repository's projector is offered");
  // nothing else: no temporary file left behind; the lock lives under .locks as filelock's
  assertEquals(await filesUnder(t.opts.cacheDir), [
    `.locks/models--owner--repo/${sha}.lock`,
    `models--owner--repo/blobs/${sha}`,
    "models--owner--repo/refs/main",
    `models--owner--repo/snapshots/${commit}/model-Q4_K_M.gguf`,
  ]);
  // split parts in a folder: every part, links one level deeper
  const s = await pull("hf:owner/repo:q6_k", t.opts);
  assertEquals(s.files.length, 3);
  assertEquals(s.path, join(repoDir, "snapshots", commit, "split/model-Q6_K-00001-of-00003.gguf"));
  assertEquals(
    await Deno.readLink(s.files[1]),
    `../../../blobs/${t.hub.sha("owner/repo", "split/model-Q6_K-00002-of-00003.gguf")}`,
  );
  assertEquals(await bytesOf(s.files[2]), t.files.part3);
  assertEquals(s.bytes, 120_000 + 90_000 + 70_000);
  // @revision: refs/v1 and its own snapshot; a commit as revision writes no ref
  const v1 = await pull("hf:owner/repo@v1", t.opts);
  const c1 = t.hub.commit("owner/repo", "v1");
  assertEquals(await Deno.readTextFile(join(repoDir, "refs", "v1")), c1);
  assertEquals(await bytesOf(v1.path), t.files.q8);
  assertEquals(v1.path, join(repoDir, "snapshots", c1, "model-Q4_K_M.gguf"));
  await pull(`hf:owner/repo@${c1}`, t.opts);
  assertEquals((await Array.fromAsync(Deno.readDir(join(repoDir, "refs")))).map((e) => e.name).sort(), ["main", "v1"]);
  // the same blob under two commits is stored once
  const blobs = await Array.fromAsync(Deno.readDir(join(repoDir, "blobs")));
  assertEquals(blobs.length, 5, blobs.map((b) => b.name).join(" "));
});

Deno.test("names pick files: quant tags, a file path, the projector offer; unknown ones list what there is", async () => {
  await using t = await setup();
  assert((await resolveModel("hf:owner/repo:Q8_0", t.opts)).endsWith("/model-Q8_0.gguf"));
  assert((await resolveModel("hf:owner/repo:f16", t.opts)).endsWith("/model-F16.gguf"));
  assert(
    (await resolveModel("hf:owner/repo/split/model-Q6_K-00002-of-00003.gguf", t.opts)).endsWith("00001-of-00003.gguf"),
  );
  await rejectsCode(
    () => pull("hf:owner/repo:Q5_K_S", t.opts),
    "NOT_FOUND",
    "no Q5_K_S file",
    "F16, Q8_0, Q4_K_M, Q6_K",
  );
  await rejectsCode(
    () => pull("hf:owner/repo/nope.gguf", t.opts),
    "NOT_FOUND",
    'no file "nope.gguf"',
    "model-Q8_0.gguf",
  );
  await rejectsCode(() => pull("hf:owner/nothing", t.opts), "NOT_FOUND", "owner/nothing", "HF_TOKEN");
  await rejectsCode(() => pull("hf:owner/repo@v9", t.opts), "NOT_FOUND", 'revision "v9"');
  const withProjector = await pull("hf:owner/repo:Q8_0", { ...t.opts, projector: "auto" });
  assert(withProjector.projector?.endsWith("/mmproj-model-f16.gguf"));
  assertEquals(await bytesOf(withProjector.projector!), t.files.mmproj);
  assertEquals(withProjector.files.length, 1);
  // several projectors: named, none picked
  t.hub.add({
    id: "owner/vl",
    files: [
      { path: "vl-Q4_K_M.gguf", data: t.files.q4 },
      { path: "mmproj-F16.gguf", data: t.files.mmproj },
      { path: "mmproj-F32.gguf", data: t.files.f16 },
    ],
  });
  await rejectsCode(
    () => pull("hf:owner/vl", { ...t.opts, projector: "auto" }),
    "INVALID_ARGUMENT",
    "mmproj-F16.gguf, mmproj-F32.gguf",
    'projector: "hf:owner/vl/mmproj-F16.gguf"',
  );
  await rejectsCode(
    () => pull("hf:owner/repo@v1", { ...t.opts, projector: "auto" }),
    "NOT_FOUND",
    "no multimodal projector",
  );
});

Deno.test("compatibility: a file placed by huggingface_hub's layout is used offline with zero requests, online with one", async () => {
  await using t = await setup();
  // what huggingface_hub leaves after hf_hub_download("owner/placed", "m-Q4_K_M.gguf"), written by hand
  const data = randomBytes(10_000, 9);
  const commit = t.hub.add({ id: "owner/placed", files: [{ path: "m-Q4_K_M.gguf", data }] });
  const sha = t.hub.sha("owner/placed", "m-Q4_K_M.gguf");
  const repoDir = join(t.opts.cacheDir, "models--owner--placed");
  await Deno.mkdir(join(repoDir, "blobs"), { recursive: true });
  await Deno.mkdir(join(repoDir, "snapshots", commit), { recursive: true });
  await Deno.mkdir(join(repoDir, "refs"), { recursive: true });
  await Deno.writeFile(join(repoDir, "blobs", sha), data);
  await Deno.symlink(`../../blobs/${sha}`, join(repoDir, "snapshots", commit, "m-Q4_K_M.gguf"));
  await Deno.writeTextFile(join(repoDir, "refs", "main"), commit);
  const before = t.hub.count();
  const off = await pull("hf:owner/placed", { ...t.opts, offline: true });
  assertEquals([off.requests, t.hub.count() - before, off.cacheHit], [0, 0, true]);
  assertEquals(off.path, join(repoDir, "snapshots", commit, "m-Q4_K_M.gguf"));
  assertEquals(await bytesOf(off.path), data);
  const on = await pull("hf:owner/placed", t.opts);
  assertEquals([on.requests, t.hub.count() - before, on.cacheHit, on.path], [1, 1, true, off.path]);
  // offline by the environment, as huggingface_hub
  Deno.env.set("HF_HUB_OFFLINE", "1");
  try {
    const env = await pull("hf:owner/placed:q4_k_m", { ...t.opts, offline: undefined });
    assertEquals([env.requests, t.hub.count() - before], [0, 1]);
    await rejectsCode(
      () => pull("hf:owner/repo", { ...t.opts, offline: undefined }),
      "OFFLINE",
      "the cache",
      "HF_HUB_OFFLINE",
    );
  } finally {
    Deno.env.delete("HF_HUB_OFFLINE");
  }
  await rejectsCode(() => pull("hf:owner/placed:Q8_0", { ...t.opts, offline: true }), "OFFLINE", "Q8_0", "Q4_K_M");
  // no network: the cache answers; with nothing cached it says so
  const dead = { ...t.opts, endpoint: "http://127.0.0.1:9", retries: 1 };
  assertEquals((await pull("hf:owner/placed", dead)).path, off.path);
  await rejectsCode(() => pull("hf:owner/repo", dead), "OFFLINE", "cannot be reached", "has nothing");
});

Deno.test("tokens go to the hub only, never to the CDN, never into a message; gated and private repositories", async () => {
  await using t = await setup();
  const token = "hf_SeCrEt0123456789abcdefghijklmnopqrstu";
  t.hub.add({ id: "org/gated", gated: true, token, files: [{ path: "g-Q4_K_M.gguf", data: t.files.q8 }] });
  t.hub.add({ id: "org/private", private: true, token, files: [{ path: "p-Q8_0.gguf", data: t.files.f16 }] });
  const e1 = await rejectsCode(() => pull("hf:org/gated", t.opts), "GATED", `${t.hub.endpoint}/org/gated`, "HF_TOKEN");
  const e2 = await rejectsCode(() => pull("hf:org/gated", { ...t.opts, token: "hf_wrong" }), "GATED", "no access");
  const e3 = await rejectsCode(() => pull("hf:org/private", t.opts), "NOT_FOUND", "if it is private, set HF_TOKEN");
  const r = await pull("hf:org/gated", { ...t.opts, token });
  assertEquals(await bytesOf(r.path), t.files.q8);
  assertEquals(await bytesOf(await resolveModel("hf:org/private", { ...t.opts, token })), t.files.f16);
  const withAuth = t.hub.requests.filter((q) => q.authorization);
  assert(withAuth.length > 0 && withAuth.every((q) => q.server === "hub"), "the token reached only the hub");
  assert(t.hub.count((q) => q.server === "cdn") > 0);
  for (const e of [e1, e2, e3]) assert(!`${e.message}${e.stack}`.includes(token) && !e.message.includes("hf_wrong"));
});

Deno.test("listings without hashes fall back to the tree; non-LFS files are verified by their git blob sha1", async () => {
  await using t = await setup();
  t.hub.add({ id: "o/noblobs", noBlobs: true, files: [{ path: "n-Q8_0.gguf", data: t.files.q8 }] });
  const r = await pull("hf:o/noblobs", t.opts);
  assertEquals(await Deno.readLink(r.path), `../../blobs/${t.hub.sha("o/noblobs", "n-Q8_0.gguf")}`);
  assert(t.hub.count((q) => q.path.startsWith("/api/models/o/noblobs/tree/")) === 1);
  const small = randomBytes(4000, 11);
  t.hub.add({ id: "o/plain", files: [{ path: "s-Q8_0.gguf", data: small, lfs: false }] });
  const p = await pull("hf:o/plain", t.opts);
  assertEquals(await bytesOf(p.path), small);
  const blob = (await Deno.readLink(p.path)).split("/").pop()!;
  assert(/^[0-9a-f]{40}$/.test(blob), `a non-LFS blob is named by its git sha1, as huggingface_hub does: ${blob}`);
  t.hub.add({ id: "o/plain2", files: [{ path: "s-Q8_0.gguf", data: small, lfs: false }] });
  t.hub.fault("s-Q8_0.gguf", { flipAt: 100, times: Infinity });
  await rejectsCode(() => pull("hf:o/plain2", t.opts), "CHECKSUM", "git sha1");
});

Deno.test("plain URLs: cached by URL with their ETag, one request when cached, a new ETag fetches again", async () => {
  await using t = await setup();
  const data = randomBytes(150_000, 21);
  const url = t.hub.addPlain("m-Q4_K_M.gguf", data, '"v1"');
  const a = await pull(url, t.opts);
  assertEquals([a.source, a.cacheHit, a.downloadedBytes], ["url", false, 150_000]);
  assert(a.path.startsWith(t.opts.urlCacheDir) && a.path.endsWith("/m-Q4_K_M.gguf"));
  assertEquals(await bytesOf(a.path), data);
  const meta = JSON.parse(await Deno.readTextFile(`${a.path}.json`));
  assertEquals([meta.url, meta.etag, meta.size], [url, '"v1"', 150_000]);
  const before = t.hub.count();
  const b = await pull(url, t.opts);
  assertEquals([b.cacheHit, b.requests, t.hub.count() - before, b.path], [true, 1, 1, a.path]);
  const off = await pull(url, { ...t.opts, offline: true });
  assertEquals([off.requests, off.path], [0, a.path]);
  const data2 = randomBytes(100_000, 22);
  t.hub.addPlain("m-Q4_K_M.gguf", data2, '"v2"');
  const c = await pull(url, t.opts);
  assertEquals([c.cacheHit, c.path], [false, a.path]);
  assertEquals(await bytesOf(c.path), data2);
  // a pinned sha256 is checked
  const wrong = "0".repeat(64);
  await rejectsCode(() => pull(t.hub.addPlain("pinned.gguf", data) + `#sha256=${wrong}`, t.opts), "CHECKSUM", wrong);
  // split URLs fetch every part
  t.hub.addPlain("s-00001-of-00002.gguf", t.files.part1);
  t.hub.addPlain("s-00002-of-00002.gguf", t.files.part2);
  const s = await pull(`${t.hub.cdnOrigin}/files/s-00001-of-00002.gguf`, t.opts);
  assertEquals(s.files.length, 2);
  assertEquals(await bytesOf(s.files[1]), t.files.part2);
  await rejectsCode(() => pull(`${t.hub.cdnOrigin}/files/absent.gguf`, t.opts), "NOT_FOUND");
  // a hub URL goes to the hub's layout
  const h = await pull(`${t.hub.endpoint}/owner/repo/resolve/main/model-Q8_0.gguf`, t.opts);
  assertEquals([h.source, h.repo], ["hf", "owner/repo"]);
  assert(h.path.includes("/models--owner--repo/snapshots/"));
});

Deno.test("progress: onProgress and the presenter's bar get bytes, rate and ETA; a cache hit shows no bar", async () => {
  await using t = await setup();
  const seen: DownloadProgress[] = [];
  const bars: { label: string; updates: Array<[number | null, string | undefined]>; done?: string }[] = [];
  const before = presenter();
  setPresenter({
    bundle: (v): Promise<MimeBundle> => Promise.resolve({ "text/plain": String(v) }),
    streamBundle: () => Promise.resolve({ "text/plain": "" }),
    progress: (label, show) => {
      if (show === false) return null;
      const bar: (typeof bars)[number] = { label, updates: [] };
      bars.push(bar);
      return {
        update: (f, d) => void bar.updates.push([f, d]),
        done: (d) => {
          bar.done = d;
          return Promise.resolve();
        },
        fail: () => Promise.resolve(),
      };
    },
  });
  try {
    t.hub.fault("split/model-Q6_K-00002-of-00003.gguf", { delayMs: 30, chunk: 16_384, times: Infinity });
    await pull("hf:owner/repo:Q6_K", { ...t.opts, progress: undefined, onProgress: (p) => seen.push(p) });
    assertEquals(bars.length, 1);
    assertEquals(bars[0].label, "downloading owner/repo");
    const last = seen.at(-1)!;
    assertEquals([last.part, last.parts, last.bytes, last.total], [3, 3, 280_000, 280_000]);
    assert(
      seen.some((p) => p.part === 2 && p.fileBytes < p.fileTotal! && p.etaSeconds !== null && p.bytesPerSecond > 0),
    );
    const mid = bars[0].updates.find(([, d]) => d?.startsWith("part 2/3 model-Q6_K-00002-of-00003.gguf"));
    assert(
      mid && mid[0]! > 0 && mid[0]! < 1 && /MB \/ 0\.28 MB · [\d.]+ MB\/s · ETA \d+ s$/.test(mid[1]!),
      String(mid),
    );
    assert(/^0\.28 MB in [\d.]+ s \([\d.]+ MB\/s\)$/.test(bars[0].done!), bars[0].done);
    await pull("hf:owner/repo:Q6_K", { ...t.opts, progress: undefined });
    assertEquals(bars.length, 1, "a cache hit moves no byte and shows no bar");
    await pull("hf:owner/repo:Q8_0", { ...t.opts, progress: false });
    assertEquals(bars.length, 1, "progress: false shows none");
  } finally {
    if (before) setPresenter(before);
    else {
      setPresenter({
        bundle: (v) => Promise.resolve({ "text/plain": Deno.inspect(v) }),
        streamBundle: (s) => Promise.resolve({ "text/plain": Deno.inspect(s) }),
        progress: () => null,
      });
    }
  }
  assertEquals(
    describeProgress({
      file: "d/f.gguf",
      part: 1,
      parts: 1,
      fileBytes: 5e6,
      fileTotal: 2e7,
      bytes: 5e6,
      total: 2e7,
      bytesPerSecond: 2.5e6,
      etaSeconds: 6,
    }),
    "f.gguf · 5.00 MB / 20.0 MB · 2.50 MB/s · ETA 6 s",
  );
});
