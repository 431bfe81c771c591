// Models by name through the loaders, with the engine: loadModel, loadEmbedder and loadProjector
// take hf: names and URLs served by the fake hub (HF_ENDPOINT, HF_HUB_CACHE), the "download"
// stage is on their load timelines, `projector: "auto"` loads the repository's mmproj with the
// model, a split GGUF written by the GGUF writer loads from its first part and generates what the
// whole file does, a cached file loads offline with zero requests, and an aborted download resumes.
import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { THREADS } from "../support/helpers.ts";
import { FakeHub, splitGGUF } from "../support/fake_hub.ts";
import { embedFixture, fixtureProjector, loadEmbedder, loadModel, LoupeError, type Stage } from "../../mod.ts";
import { resolveHooks } from "../../src/hub/resolve.ts";

resolveHooks.backoffMs = 5;

const { model: tinyPath, projector: projectorPath } = await fixtureProjector("tiny");
const tiny = await Deno.readFile(tinyPath);
const mmproj = await Deno.readFile(projectorPath);
const bertPath = await embedFixture("bert");
const parts = splitGGUF(tiny, 3);
const root = await Deno.makeTempDir({ prefix: "loupe-hub-engine-" });
const hub = await FakeHub.start([{
  id: "loupe/tiny-GGUF",
  files: [
    { path: "README.md", data: new TextEncoder().encode("# tiny\n") },
    { path: "tiny-Q4_K_M.gguf", data: tiny },
    { path: "mmproj-tiny-f16.gguf", data: mmproj },
    ...parts.map((data, i) => ({ path: `split/tiny-F32-0000${i + 1}-of-00003.gguf`, data })),
  ],
}, { id: "loupe/bert-GGUF", files: [{ path: "bert-F32.gguf", data: await Deno.readFile(bertPath) }] }]);

const ENV = ["HF_ENDPOINT", "HF_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE"];
const saved = Object.fromEntries(ENV.map((n) => [n, Deno.env.get(n)]));
Deno.env.set("HF_ENDPOINT", hub.endpoint);
Deno.env.set("HF_HUB_CACHE", join(root, "hub"));
Deno.env.delete("HF_TOKEN");
Deno.env.delete("HF_HUB_OFFLINE");

const LOAD = { threads: THREADS, gpuLayers: 0, progress: false } as const;
const GEN = { maxTokens: 12, temperature: 0 } as const;

function downloadEvent(stages: Stage[], events: { kind?: string; what: string; data?: Record<string, unknown> }[]) {
  assertEquals(stages[0].name, "download", stages.map((s) => s.name).join(", "));
  const e = events.find((x) => x.kind === "download");
  assert(e, "a download event");
  return e;
}

const reference = await (async () => {
  await using m = await loadModel(tinyPath, LOAD);
  return (await m.generate("Once upon a time", GEN)).tokens;
})();

Deno.test("loadModel by name: the download stage, the projector offer, then a cache hit with one request", async () => {
  const before = hub.count();
  await using model = await loadModel("hf:loupe/tiny-GGUF", { ...LOAD, projector: "auto" });
  assert(
    model.path.endsWith("/models--loupe--tiny-GGUF/snapshots/" + hub.commit("loupe/tiny-GGUF") + "/tiny-Q4_K_M.gguf"),
  );
  const e = downloadEvent(model.loadTimeline.stages, model.loadTimeline.events);
  assertEquals([e.data?.cacheHit, e.data?.downloadedBytes, e.data?.files], [false, tiny.length + mmproj.length, 2]);
  assert(/^download: [\d.]+ MB at [\d.]+ MB\/s, 2 files$/.test(e.what), e.what);
  assertEquals(model.loadTimeline.stages.map((s) => s.name), ["download", "load"]);
  assert(model.loadTimeline.toString().includes("download"), "the text table shows the stage");
  assertEquals(hub.count() - before, 5, "one listing, and per file a resolve and its CDN transfer");
  assertEquals((await model.generate("Once upon a time", GEN)).tokens, reference);
  // the projector came with it: an image chat works
  const image = { data: new Uint8Array(56 * 56 * 3).fill(128), width: 56, height: 56 };
  const r = await model.chat([{ role: "user", content: [{ image }, "What is this?"] }], {
    maxTokens: 2,
    temperature: 0,
  });
  assert(r.timeline.stage("image encode"), r.timeline.toString());

  const n = hub.count();
  await using again = await loadModel("hf:loupe/tiny-GGUF:q4_k_m", LOAD);
  const hit = downloadEvent(again.loadTimeline.stages, again.loadTimeline.events);
  assertEquals([hit.data?.cacheHit, hit.data?.requests, hub.count() - n], [true, 1, 1]);
  assert(hit.what.startsWith("download: cache hit, 17.5 MB in the cache (1 request)"), hit.what);
});

Deno.test("offline (HF_HUB_OFFLINE=1) a cached model loads with zero requests; an uncached one is OFFLINE", async () => {
  await (await loadModel("hf:loupe/tiny-GGUF", LOAD)).closeAsync(); // cached (by the test above or now)
  Deno.env.set("HF_HUB_OFFLINE", "1");
  try {
    const before = hub.count();
    await using model = await loadModel("hf:loupe/tiny-GGUF", LOAD);
    assertEquals(hub.count(), before, "no request at all");
    const e = downloadEvent(model.loadTimeline.stages, model.loadTimeline.events);
    assertEquals([e.data?.cacheHit, e.data?.requests], [true, 0]);
    const err = await assertRejects(() => loadEmbedder("hf:loupe/bert-GGUF", LOAD), LoupeError);
    assertEquals(err.code, "OFFLINE");
  } finally {
    Deno.env.delete("HF_HUB_OFFLINE");
  }
});

Deno.test("a split GGUF (three parts by the GGUF writer) is fetched whole and loads from its first part", async () => {
  await using model = await loadModel("hf:loupe/tiny-GGUF:F32", LOAD);
  assert(model.path.endsWith("split/tiny-F32-00001-of-00003.gguf"), model.path);
  const e = downloadEvent(model.loadTimeline.stages, model.loadTimeline.events);
  assertEquals([e.data?.files, e.data?.bytes], [3, parts.reduce((a, p) => a + p.length, 0)]);
  assertEquals((await model.generate("Once upon a time", GEN)).tokens, reference, "the same model, split");
});

Deno.test("loadEmbedder and loadProjector take names; their timelines have the download stage", async () => {
  await using emb = await loadEmbedder("hf:loupe/bert-GGUF", LOAD);
  downloadEvent(emb.loadTimeline.stages, emb.loadTimeline.events);
  await using local = await loadEmbedder(bertPath, LOAD);
  assertEquals(local.loadTimeline.stages.map((s) => s.name), ["load"], "a local path has no download stage");
  const [a] = await emb.embed(["a panda"]);
  const [b] = await local.embed(["a panda"]);
  assertEquals(Array.from(a), Array.from(b));

  await using model = await loadModel(tinyPath, LOAD);
  const p = await model.loadProjector("hf:loupe/tiny-GGUF/mmproj-tiny-f16.gguf", { probe: false, progress: false });
  assertEquals(p.loadTimeline.stages.map((s) => s.name).slice(0, 2), ["download", "projector load"]);
});

Deno.test('projector: "auto" beside a local model: the one mmproj in its folder, several are named', async () => {
  const dir = join(root, "local");
  await Deno.mkdir(dir, { recursive: true });
  await Deno.symlink(tinyPath, join(dir, "model.gguf"));
  await Deno.symlink(projectorPath, join(dir, "mmproj-a.gguf"));
  await using model = await loadModel(join(dir, "model.gguf"), { ...LOAD, projector: "auto" });
  const image = { data: new Uint8Array(56 * 56 * 3).fill(9), width: 56, height: 56 };
  await model.chat([{ role: "user", content: [{ image }, "Hi"] }], { maxTokens: 1 });
  await Deno.symlink(projectorPath, join(dir, "mmproj-b.gguf"));
  const e = await assertRejects(() => loadModel(join(dir, "model.gguf"), { ...LOAD, projector: "auto" }), LoupeError);
  assertEquals(e.code, "INVALID_ARGUMENT");
  assert(e.message.includes("mmproj-a.gguf, mmproj-b.gguf"), e.message);
});

Deno.test("a plain URL loads; an aborted download through loadModel resumes on the next load", async () => {
  const url = hub.addPlain("tiny-Q8_0.gguf", tiny);
  hub.fault("tiny-Q8_0.gguf", { delayMs: 40, chunk: 1 << 20, times: Infinity });
  const ac = new AbortController();
  const loading = loadModel(url, { ...LOAD, signal: ac.signal });
  for (let i = 0; i < 500 && hub.downloads("tiny-Q8_0.gguf") === 0; i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 100));
  ac.abort();
  const e = await assertRejects(() => loading, LoupeError);
  assertEquals(e.code, "ABORTED");
  hub.clearFaults();
  await using model = await loadModel(url, LOAD);
  const d = downloadEvent(model.loadTimeline.stages, model.loadTimeline.events);
  assert((d.data?.resumedBytes as number) > 0, d.what);
  assert(d.what.includes("resumed from"), d.what);
  assertEquals((await model.generate("Once upon a time", GEN)).tokens, reference);
  await Deno.remove(join(model.path, ".."), { recursive: true }); // this URL's folder in loupe's cache
  await Deno.remove(join(model.path, "..", "..")).catch(() => {}); // and <cache>/models when it is empty
});

Deno.test("clean-up: the fake hub stops and the environment is restored", async () => {
  await hub.close();
  for (const n of ENV) saved[n] === undefined ? Deno.env.delete(n) : Deno.env.set(n, saved[n]!);
  await Deno.remove(root, { recursive: true });
});
