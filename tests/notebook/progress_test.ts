// Progress that updates in place (notebook: display_data then update_display_data with one
// display_id; terminal: one line rewritten with "\r"), the build's steps on it, and text
// streamed into a cell. The notebook side is checked against a recording stand-in for
// Deno.jupyter; notebooks_test.ts checks the same in the real kernel.
import { assert, assertEquals } from "../support/assert.ts";
import { build, fixture, THREADS } from "../support/helpers.ts";
import { embedFixture, fixtureProjector, loadEmbedder, loadModel, Progress, showStream } from "../../mod.ts";
import { progressFor } from "../../src/notebook/progress.ts";
import { buildStepReporter, ensureBuildWithProgress } from "../../src/engine/library.ts";
import type { KernelApi } from "../../src/notebook/kernel.ts";

interface Sent {
  type: string;
  id: string | undefined;
  html: string;
  text: string;
}

/** A stand-in for Deno.jupyter that records what would go to the notebook. */
function recorder(): KernelApi & { sent: Sent[] } {
  const sent: Sent[] = [];
  return {
    sent,
    broadcast(type, content) {
      const c = content as { data: Record<string, string>; transient?: { display_id?: string } };
      sent.push({ type, id: c.transient?.display_id, html: c.data["text/html"], text: c.data["text/plain"] });
      return Promise.resolve();
    },
  };
}

Deno.test("a notebook progress bar is one output updated in place, ending done", async () => {
  const api = recorder();
  const bar = new Progress("loading x.gguf", { jupyter: api, minIntervalMs: 0 });
  assertEquals(bar.mode, "jupyter");
  bar.update(0.1);
  bar.update(0.1); // unchanged: nothing sent
  bar.update(0.105); // the same percent: nothing sent
  bar.update(0.5, "half");
  await bar.done();
  await bar.done(); // idempotent
  bar.update(0.7); // after the end: ignored
  await bar.flush();
  assertEquals(api.sent.map((s) => s.type), ["display_data", "update_display_data", "update_display_data"]);
  assert(api.sent.every((s) => s.id === bar.id), "one display_id throughout");
  assert(api.sent[0].html.includes('value="0.100"') && api.sent[0].text.includes("10%"));
  assert(api.sent[1].html.includes("half") && api.sent[1].text.includes("50%"));
  assert(api.sent[2].html.includes('data-state="done"') && api.sent[2].text.includes("done in"));
});

Deno.test("a failed progress says why; an unknown amount shows an indeterminate bar", async () => {
  const api = recorder();
  const bar = new Progress("downloading", { jupyter: api, minIntervalMs: 0 });
  bar.update(null, "engine");
  await bar.fail("no network");
  assert(!api.sent[0].html.includes("value="), "indeterminate: a <progress> without a value");
  assert(api.sent[1].html.includes('data-state="failed"') && api.sent[1].text.includes("failed"));
  assert(api.sent[1].text.includes("no network"));
});

Deno.test("a terminal progress is one line rewritten with \\r, cut to the width, ended by a newline", async () => {
  let out = "";
  const bar = new Progress("compiling", { mode: "terminal", write: (t) => (out += t), columns: 60, minIntervalMs: 0 });
  bar.update(0.25, "a rather long detail that does not fit in sixty columns of a terminal");
  bar.update(0.5, "short");
  await bar.done();
  const lines = out.split("\r").filter(Boolean);
  assertEquals(lines.length, 3);
  assert(lines[0].length <= 60 && lines[0].endsWith("…"), JSON.stringify(lines[0]));
  assert(lines[1].startsWith("compiling [##########----------]  50% short"), JSON.stringify(lines[1]));
  assert(lines[1].endsWith(" ".repeat(10)), "padding clears the longer line before it");
  assert(lines[2].startsWith("compiling: done in") && lines[2].endsWith("\n"));
  assertEquals(out.split("\n").length, 2, "one line in all");
});

Deno.test("where progress goes: notebook by default, terminal only when asked, never in silence", () => {
  const api = recorder();
  assertEquals(progressFor("x", undefined, { jupyter: api })?.mode, "jupyter");
  assertEquals(progressFor("x", false, { jupyter: api }), null);
  assertEquals(progressFor("x", undefined, { mode: "terminal" }), null, "a terminal line only on request");
  assertEquals(progressFor("x", true, { mode: "terminal" })?.mode, "terminal");
  assertEquals(progressFor("x", true, { mode: "silent" }), null);
});

Deno.test("build steps drive the bar: downloads unknown, compiling by fraction, done full", async () => {
  const api = recorder();
  const bar = new Progress("loupe engine", { jupyter: api, minIntervalMs: 0 });
  const report = buildStepReporter(bar);
  report({ phase: "download", message: "downloading @node-llama-cpp/linux-x64@3.22.1", fraction: null });
  report({ phase: "compile", message: "compiling (31/62) native/loupe.cpp", fraction: 0.5 });
  report({ phase: "done", message: "built libloupe.so", fraction: 1 });
  await bar.flush();
  assertEquals(api.sent.map((s) => [s.text.match(/\d+%/)?.[0] ?? "", s.html.includes("value=")]), [
    ["", false],
    ["50%", true],
    ["100%", true],
  ]);
  assert(api.sent[0].text.includes("downloading @node-llama-cpp/linux-x64"));
});

Deno.test("an engine that is already built shows no progress at all", async () => {
  // (Built by helpers.ts; built again here only if native/ changed since.)
  const first = await ensureBuildWithProgress(null);
  const api = recorder();
  const result = await ensureBuildWithProgress(new Progress("loupe engine", { jupyter: api, minIntervalMs: 0 }));
  assertEquals(result.library, first.library);
  assert((await Deno.stat(result.library)).isFile && build.engineDir === result.engineDir);
  assertEquals(api.sent, []);
});

Deno.test("showStream streams into one notebook output and returns the result", async () => {
  await using model = await loadModel(await fixture("tiny"), { threads: THREADS });
  const api = recorder();
  const opts = { maxTokens: 24, temperature: 0 };
  const r = await showStream(model.stream("Once upon a time", opts), { jupyter: api, minIntervalMs: 0 });
  const full = await model.generate("Once upon a time", opts);
  assertEquals(r.text, full.text);
  assertEquals(api.sent[0].type, "display_data");
  assert(api.sent.length >= 3, `updates as pieces arrive (${api.sent.length})`);
  assert(api.sent.slice(1).every((s) => s.type === "update_display_data" && s.id === api.sent[0].id));
  assertEquals(api.sent.at(-1)!.text, full.text, "the output ends with the whole text");
  let printed = "";
  const again = await showStream(model.stream("Once upon a time", opts), {
    mode: "stdout",
    write: (t) => (printed += t),
  });
  assertEquals(printed, full.text + "\n");
  assertEquals(again.tokens, full.tokens);
});

Deno.test("loading a model, an embedder or a projector shows one bar per load in a notebook", async () => {
  const api = recorder();
  const deno = Deno as unknown as { jupyter?: KernelApi };
  deno.jupyter = api; // as inside the kernel: progress goes to the notebook by default
  try {
    const { model: modelPath, projector: projectorPath } = await fixtureProjector("tiny");
    await using model = await loadModel(modelPath, { threads: THREADS, gpuLayers: 0 });
    await model.loadProjector(projectorPath);
    await using _embedder = await loadEmbedder(await embedFixture("bert"), { threads: THREADS });
    await using _quiet = await loadModel(modelPath, { threads: THREADS, progress: false });
  } finally {
    deno.jupyter = undefined;
  }
  const ids = [...new Set(api.sent.map((s) => s.id))];
  assertEquals(ids.length, 3, "one output per load, none for progress: false");
  const files = ["tiny.gguf", "projector-tiny.gguf", "embed-bert.gguf"];
  ids.forEach((id, i) => {
    const own = api.sent.filter((s) => s.id === id);
    assertEquals(own[0].type, "display_data");
    assert(own.slice(1).every((s) => s.type === "update_display_data"), "then updated in place");
    assert(own[0].text.startsWith(`loading ${files[i]}`), own[0].text);
    assert(own.at(-1)!.html.includes('data-state="done"'), "ends done");
  });
});
