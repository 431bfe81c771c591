// Rich display: tables, plotly figures (waterfall, comparison, memory, heat map) and MIME
// bundles, on synthetic timelines with known numbers and on real results of the fixture model.
import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { fixture, THREADS } from "../support/helpers.ts";
import {
  backends,
  compare,
  devices,
  displayOptions,
  embedFixture,
  fixtureProjector,
  htmlPage,
  loadEmbedder,
  loadModel,
  LoupeError,
  setDisplayOptions,
  similarityMap,
  Timeline,
} from "../../mod.ts";
import {
  bundleOf,
  deviceColor,
  DISPLAY,
  type MimeBundle,
  type PlotlyFigure,
  similarityMatrix,
  timelineFigure,
} from "../../display.ts";
import {
  display,
  displayBundle,
  type PlotlyHost,
  resolvePlotly,
  toBundle,
  viewOf,
} from "../../src/notebook/display.ts";
import { stageSegments } from "../../src/notebook/timeline_view.ts";
import { PLOTLY_CDN_URL, PLOTLY_VERSION, plotlyScript } from "../../src/notebook/plotly.ts";
import { isColab, type KernelApi } from "../../src/notebook/kernel.ts";

const PLOTLY = "application/vnd.plotly.v1+json";

/** A load-like timeline: a mixed prompt (GPU 30 heavy ops, CPU 10), a GPU generation, host stages. */
function mixedTimeline(): Timeline {
  const t = new Timeline("generate");
  t.add({ name: "tokenize", wallMs: 0.5, tokens: 0, graphs: 0, devices: {} });
  t.add({
    name: "prompt",
    wallMs: 40,
    tokens: 20,
    graphs: 1,
    devices: {
      CUDA0: { nodes: 90, heavy: 30, ops: { MUL_MAT: 30 }, firstHeavy: "MUL_MAT Qcur-0" },
      CPU: { nodes: 30, heavy: 10, ops: { MUL_MAT: 10 }, firstHeavy: "MUL_MAT result_output" },
    },
  });
  t.add({
    name: "generation",
    wallMs: 200,
    tokens: 50,
    graphs: 50,
    devices: { CUDA0: { nodes: 1000, heavy: 400, ops: { MUL_MAT: 400 }, firstHeavy: "MUL_MAT Qcur-0" } },
  });
  t.add({
    name: "sampling",
    wallMs: 3,
    tokens: 51,
    graphs: 0,
    devices: {},
    startMs: 40.5,
    interleavedWith: "generation",
  });
  t.memory = [
    { device: "CUDA0", buffer: "CUDA0", model: 3 * 2 ** 20, context: 2 ** 20, compute: 2 ** 19 },
    { device: "CPU", buffer: "CPU", model: 2 ** 20, context: 0, compute: 2 ** 18 },
  ];
  return t;
}

type Trace = {
  name: string;
  x: number[];
  base: number[];
  y: string[];
  hovertext: string[];
  marker: { color: string };
  xaxis?: string;
};

Deno.test("device colours are stable: CPU grey, CUDA green, Vulkan red-orange, a second device a shade", () => {
  assertEquals(deviceColor("CPU"), "#7f7f7f");
  assertEquals(deviceColor("CUDA0"), "#76b900");
  assertEquals(deviceColor("Vulkan0"), "#e4572e");
  assert(deviceColor("CUDA1") !== deviceColor("CUDA0") && deviceColor("CUDA1").length === 7);
  assert(deviceColor("host") !== deviceColor("CPU"), "host work is told apart from graph work on the CPU");
  assertEquals(deviceColor("SomeNPU0"), deviceColor("SomeNPU0"), "unknown devices get a stable colour");
});

Deno.test("a mixed stage splits in proportion to heavy ops; a stage without graphs is host", () => {
  const t = mixedTimeline();
  assertEquals(stageSegments(t.stage("prompt")!), [{ device: "CUDA0", share: 0.75 }, { device: "CPU", share: 0.25 }]);
  assertEquals(stageSegments(t.stage("tokenize")!), [{ device: "host", share: 1 }]);
  const nodesOnly = { ...t.stage("prompt")!, devices: { CPU: { nodes: 5, heavy: 0, ops: {}, firstHeavy: null } } };
  assertEquals(stageSegments(nodesOnly), [{ device: "CPU", share: 1 }], "nodes count when no heavy op ran");
});

Deno.test("the waterfall: bars on the time axis coloured per device, split bars, hover text, weights beside", () => {
  const t = mixedTimeline();
  const fig = timelineFigure(t);
  const traces = fig.data as unknown as Trace[];
  const byName = Object.fromEntries(traces.map((tr) => [tr.name, tr]));
  assertEquals(Object.keys(byName).sort(), ["CPU", "CUDA0", "host", "weights"]);
  for (const dev of ["CPU", "CUDA0", "host"]) assertEquals(byName[dev].marker.color, deviceColor(dev));
  // The prompt (start 0.5 ms, 40 ms) is split 30:10 between CUDA0 and CPU, end to end.
  const gpuPrompt = byName.CUDA0.y.indexOf("prompt");
  const cpuPrompt = byName.CPU.y.indexOf("prompt");
  assertEquals(byName.CUDA0.base[gpuPrompt], 0.5);
  assertEquals(byName.CUDA0.x[gpuPrompt], 30);
  assertEquals(byName.CPU.base[cpuPrompt], 30.5);
  assertEquals(byName.CPU.x[cpuPrompt], 10);
  const gen = byName.CUDA0.y.indexOf("generation");
  assertEquals([byName.CUDA0.base[gen], byName.CUDA0.x[gen]], [40.5, 200]);
  // Hover: milliseconds, tokens, tokens/s and heavy ops per device.
  const hover = byName.CUDA0.hovertext[gpuPrompt];
  for (const part of ["40.0 ms", "20 tokens", "500.0 tok/s", "CUDA0: 30 heavy ops / 90 nodes", "CPU: 10 heavy ops"]) {
    assert(hover.includes(part), `hover has "${part}": ${hover}`);
  }
  assert(byName.CPU.hovertext[cpuPrompt].includes("(25%)"), "the CPU segment says its share");
  // Sampling is drawn inside generation's span, on its own row.
  assert(byName.host.y.includes("sampling (in generation)"));
  // Weights per device beside the stages, in MiB.
  assertEquals(byName.weights.x, [3, 1]);
  assertEquals(byName.weights.xaxis, "x2");
  assert(
    (fig.layout.title as { text: string }).text.includes("240.5 ms"),
    "the title has the total (interleaved sampling not added)",
  );
});

Deno.test("the comparison plot puts runs on rows of one time axis, stages labelled", () => {
  const a = mixedTimeline();
  const b = new Timeline("generate");
  b.add({ name: "tokenize", wallMs: 0.5, tokens: 0, graphs: 0, devices: {} });
  b.add({
    name: "prompt",
    wallMs: 900,
    tokens: 20,
    graphs: 1,
    devices: { CPU: { nodes: 120, heavy: 40, ops: {}, firstHeavy: "MUL_MAT Qcur-0" } },
  });
  const c = compare({ "on GPU": a, "on CPU": b, "on CPU ": { timeline: b } });
  assertEquals(c.runs.map((r) => r.label), ["on GPU", "on CPU", "on CPU "]);
  const fig = c.figure();
  const cpu = (fig.data as unknown as Array<Trace & { text: string[] }>).find((t) => t.name === "CPU")!;
  assert(cpu.y.includes("on CPU") && cpu.text.includes("prompt"), "the CPU run's prompt bar is labelled");
  assertEquals(cpu.x[cpu.y.indexOf("on CPU")], 900);
  assert(!JSON.stringify(fig).includes("sampling"), "interleaved stages are inside other bars, not rows");
  const text = c.toString();
  assert(text.includes("on GPU: 240.5 ms") && text.includes("on CPU: 900.5 ms (3.74× on GPU)"), text);
  assertEquals(
    assertThrows(() => compare({ bad: {} as never }), LoupeError, "neither a timeline nor a result").code,
    "INVALID_ARGUMENT",
  );
});

Deno.test("a timeline's bundle: text/plain, an HTML table with the plot, and the plotly figure", async () => {
  const t = mixedTimeline();
  const bundle = await t[DISPLAY]() as MimeBundle; // outside the kernel: the bundle itself
  assertEquals(bundle["text/plain"], t.toString());
  assertEquals(bundle[PLOTLY], timelineFigure(t));
  const html = bundle["text/html"] as string;
  assert(html.includes("<table") && html.includes("<td>generation</td>"), "the stage table");
  assert(html.includes('class="loupe-plot"') && html.includes("Plotly.newPlot"), "the plot");
  assert(html.includes(`plotly.js ${PLOTLY_VERSION}, inlined by loupe`), "plotly.js inlined");
  assert(html.includes("(function (define, module, exports, require) {"), "with the AMD loader held off");
  assertEquals(html.split("inlined by loupe").length - 1, 1, "once per output");
});

Deno.test("display options: plotly from the CDN, from a URL, or none; bad values are refused", async () => {
  const before = displayOptions();
  try {
    setDisplayOptions({ plotly: "cdn" });
    let html = (await bundleOf(mixedTimeline()))["text/html"] as string;
    assert(html.includes(`https://cdn.plot.ly/plotly-${PLOTLY_VERSION}.min.js`) && !html.includes("inlined by loupe"));
    setDisplayOptions({ plotly: "https://example.org/plotly.js", plotlyMime: false });
    const bundle = await bundleOf(mixedTimeline());
    html = bundle["text/html"] as string;
    assert(html.includes('"https://example.org/plotly.js"') && !(PLOTLY in bundle));
    setDisplayOptions({ plotly: "none" });
    html = (await bundleOf(mixedTimeline()))["text/html"] as string;
    assert(!html.includes("inlined by loupe") && html.includes("Plotly.newPlot"));
    assertEquals(
      assertThrows(() => setDisplayOptions({ plotly: "sometimes" }), LoupeError, "must be").code,
      "INVALID_ARGUMENT",
    );
  } finally {
    setDisplayOptions(before);
  }
  assertEquals(displayOptions(), before);
});

/** A stand-in for `Deno.jupyter`: records what is broadcast (no iopub to confirm on: publish returns at once). */
function fakeKernel(): KernelApi & { html(): string[] } {
  const sent: Array<{ type: string; content: Record<string, any> }> = [];
  return {
    broadcast(type, content) {
      sent.push({ type, content });
      return Promise.resolve();
    },
    html: () =>
      sent.filter((m) => m.type === "display_data" || m.type === "update_display_data").map((m) =>
        (m.content.data["text/html"] ?? "") as string
      ),
  };
}

const INLINED = `plotly.js ${PLOTLY_VERSION}, inlined by loupe`;

/** The contents of an HTML fragment's `<script>` elements. */
function scripts(html: string): string[] {
  return [...html.matchAll(/<script type="text\/javascript">([\s\S]*?)<\/script>/g)].map((m) => m[1]);
}

/** Just enough of a browser page to run a plot's scripts: a stand-in Plotly, the load event, script elements. */
function fakePage(readyState = "loading") {
  const drawn: string[] = [];
  const els = new Map<string, { id: string; textContent: string }>();
  const loads: Array<{ src: string; onload(): void; onerror(): void }> = [];
  const onLoad: Array<() => void> = [];
  const timers: Array<() => void> = [];
  const window: Record<string, any> = {
    addEventListener: (type: string, f: () => void) => type === "load" && onLoad.push(f),
  };
  const document = {
    readyState,
    getElementById: (id: string) => els.get(id) ?? els.set(id, { id, textContent: "" }).get(id),
    createElement: () => ({}),
    head: { appendChild: (s: any) => loads.push(s) },
  };
  const plotly = { newPlot: (el: { id: string }) => drawn.push(el.id) };
  return {
    window,
    drawn,
    loads,
    text: (id: string) => els.get(id)?.textContent ?? "",
    run(code: string) {
      new Function("window", "document", "setTimeout", code)(window, document, (f: () => void) => timers.push(f));
    },
    /** The page finished loading (or its timers ran). */
    loaded() {
      onLoad.splice(0).forEach((f) => f());
      timers.splice(0).forEach((f) => f());
    },
    definePlotly: () => (window.Plotly = plotly),
  };
}

Deno.test("in a kernel session the first plot output carries plotly.js; later ones draw with the page's copy", async () => {
  const api = fakeKernel();
  const t = mixedTimeline();
  const summary = await displayBundle(t, api);
  assertEquals(summary, { "text/plain": viewOf(t)!.summary! }, "the execute_result is one line");
  await displayBundle(t, api);
  await display(t, { jupyter: api });
  const [first, second, third] = api.html();
  assertEquals(api.html().length, 3);
  assert(first.includes(INLINED), "the first plot carries plotly.js");
  assert(first.includes("(function (define, module, exports, require) {"), "…with the AMD loader held off");
  assert(first.includes("window.__loupePlotly"), "…and its script draws the plots waiting for it");
  assertEquals(first.split("inlined by loupe").length - 1, 1, "once");
  for (const later of [second, third]) {
    assert(!later.includes("inlined by loupe"), "a later plot does not carry plotly.js");
    assert(later.length < 100_000, `a later plot is small (${later.length} characters)`);
    assert(later.includes("if (window.Plotly) { draw(); return; }"), "it draws with the page's window.Plotly");
    assert(later.includes("window.__loupePlotly") && later.includes("L.q.push"), "…or waits in the page's queue");
    assert(later.includes("wait = true") && later.includes(JSON.stringify(PLOTLY_CDN_URL)), "…then the CDN");
    assert(later.includes("plotly.js is not on this page"), "…else one line says so");
    assert(later.includes("Plotly.newPlot") && later.includes('class="loupe-plot"'));
  }
  // Another kernel process (another Deno.jupyter) has its own session.
  const other = fakeKernel();
  await displayBundle(t, other);
  assert(other.html()[0].includes(INLINED), "a new session's first plot carries it again");
  // A script is unchanged: every bundle is self-contained.
  const inScript = await displayBundle(t, null);
  assert((inScript["text/html"] as string).includes(INLINED), "outside the kernel the bundle carries plotly.js");
});

Deno.test("a kernel session: setting the plotly option, or replacing the output that carried it, ships it again", async () => {
  const before = displayOptions();
  const t = mixedTimeline();
  try {
    const api = fakeKernel();
    await display(t, { jupyter: api, id: "first" });
    await display(t, { jupyter: api });
    await display(t, { jupyter: api, id: "first", update: true }); // the carrier redrawn in place keeps the library
    await display(t, { jupyter: api, id: "first", update: true });
    await display("no plot now", { jupyter: api, id: "first", update: true }); // the carrier loses it…
    await display(t, { jupyter: api }); // …so the next plot carries it
    await display(t, { jupyter: api });
    setDisplayOptions({ plotly: "inline" });
    await display(t, { jupyter: api }); // an explicit setting: the next plot carries it again
    await display(t, { jupyter: api });
    const carries = api.html().map((h) => h.includes(INLINED));
    assertEquals(carries, [true, false, true, true, false, true, false, true, false]);
  } finally {
    setDisplayOptions(before);
  }
});

Deno.test("a later plot waits for the library: drawn when the first output's script runs, else the CDN, else a note", async () => {
  const api = fakeKernel();
  const t = mixedTimeline();
  await displayBundle(t, api);
  await displayBundle(t, api);
  await displayBundle(t, api);
  const [first, second, third] = api.html();
  const idOf = (h: string) => h.match(/id="(loupe-plot-[^"]+)"/)![1];
  const library = scripts(first)[0];
  assert(library.includes(INLINED));
  assert(
    scripts(first)[1].includes("wait = true"),
    "the first plot's own draw script waits too (its library may fail)",
  );

  // In document order (nbconvert, nbviewer, one notebook page): the page has Plotly when later plots run.
  let page = fakePage();
  page.definePlotly(); // what the first output's library does
  page.run(library);
  page.run(scripts(second)[0]);
  assertEquals(page.drawn, [idOf(second)]);

  // Out of order: later plots run first, queue themselves, and the library's script draws them.
  page = fakePage();
  page.run(scripts(second)[0]);
  page.run(scripts(third)[0]);
  assertEquals(page.drawn, [], "nothing to draw with yet");
  page.definePlotly();
  page.run(library); // the inlined library (skipped here: the stand-in Plotly is there) then drains the queue
  assertEquals(page.drawn, [idOf(second), idOf(third)]);
  page.loaded();
  assertEquals(page.loads.length, 0, "nothing loaded from the CDN");

  // The first output is gone (cleared, re-run): after the page has loaded, the pinned plotly.js from the CDN.
  page = fakePage();
  page.run(scripts(second)[0]);
  page.run(scripts(third)[0]);
  page.loaded();
  assertEquals(page.loads.map((s) => s.src), [PLOTLY_CDN_URL], "one load for all waiting plots");
  page.definePlotly();
  page.loads[0].onload();
  assertEquals(page.drawn, [idOf(second), idOf(third)]);

  // …and offline a one-line note instead of a blank space.
  page = fakePage("complete"); // a live page (JupyterLab): waits 2 s, then the CDN
  page.run(scripts(second)[0]);
  assertEquals(page.loads.length, 0, "it waits first");
  page.loaded();
  page.loads[0].onerror();
  assertEquals(page.drawn, []);
  assert(page.text(idOf(second)).startsWith("plotly.js is not on this page"), page.text(idOf(second)));
  assert(page.text(idOf(second)).endsWith(`cannot be loaded from ${PLOTLY_CDN_URL}`));
});

Deno.test("the default plotly source: the CDN in Colab with the network up, inlined in Colab offline and elsewhere", async () => {
  let asked = 0;
  const host = (colab: boolean, online: boolean): PlotlyHost => ({
    colab,
    online: () => {
      asked++;
      return Promise.resolve(online);
    },
  });
  assertEquals(await resolvePlotly("auto", host(true, true)), "cdn");
  assertEquals(await resolvePlotly("auto", host(true, false)), "inline");
  assertEquals(asked, 2);
  assertEquals(await resolvePlotly("auto", host(false, true)), "inline");
  assertEquals(await resolvePlotly("auto", host(false, false)), "inline");
  assertEquals(asked, 2, "outside Colab the network is not asked");
  // LOUPE_PLOTLY and setDisplayOptions override the default.
  for (const explicit of ["inline", "cdn", "none", "https://example.org/plotly.js"]) {
    assertEquals(await resolvePlotly(explicit, host(true, true)), explicit);
    assertEquals(await resolvePlotly(explicit, host(false, false)), explicit);
  }
  assertEquals(asked, 2);
  // Colab is told by the variables its runtime sets.
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assert(isColab(env({ COLAB_RELEASE_TAG: "release-colab_20250101-060000_RC00" })));
  assert(isColab(env({ COLAB_GPU: "" })));
  assert(isColab(env({ COLAB_BACKEND_VERSION: "next" })));
  assert(!isColab(env({ JUPYTER_DATA_DIR: "/tmp" })));
  assertEquals(displayOptions().plotly, Deno.env.get("LOUPE_PLOTLY") || "auto", "the default is auto");
});

Deno.test("in Colab every plot output carries plotly.js (each output is its own iframe)", async () => {
  const view = viewOf(mixedTimeline())!;
  // The session logic with Colab's host: inline outputs stay self-contained.
  const before = displayOptions();
  try {
    setDisplayOptions({ plotly: "inline" });
    const session = { session: { shipped: true, carrier: null } };
    const shared = (await toBundle(view, {}, session))["text/html"] as string;
    assert(!shared.includes(INLINED), "outside Colab a later output of the session leaves plotly.js out");
    const was = Deno.env.get("COLAB_RELEASE_TAG");
    Deno.env.set("COLAB_RELEASE_TAG", "test");
    try {
      const colab = (await toBundle(view, {}, { session: { shipped: true, carrier: null } }))["text/html"] as string;
      assert(colab.includes(INLINED), "in Colab it carries its own");
    } finally {
      if (was === undefined) Deno.env.delete("COLAB_RELEASE_TAG");
      else Deno.env.set("COLAB_RELEASE_TAG", was);
    }
  } finally {
    setDisplayOptions(before);
  }
});

Deno.test("names are escaped in tables, hover text and the figure's script", async () => {
  const t = new Timeline("x");
  t.add({
    name: "<img src=x onerror=alert(1)>",
    wallMs: 1,
    tokens: 1,
    graphs: 1,
    devices: { CPU: { nodes: 1, heavy: 1, ops: {}, firstHeavy: "</script><b>" } },
  });
  const html = (await bundleOf(t))["text/html"] as string;
  assert(!html.includes("<img src=x"), "the stage name is escaped");
  assert(!html.includes("</script><b>"), "no name can close the script element");
  assert(html.includes("&lt;img src=x onerror=alert(1)&gt;"));
});

Deno.test("the pinned plotly.js is the one inlined", async () => {
  const src = await plotlyScript();
  assert(src.slice(0, 200).includes(`plotly.js v${PLOTLY_VERSION}`), src.slice(0, 200));
  assert(src.length > 1_000_000, "the full minified bundle");
});

Deno.test("similarity: cosine matrix, heat map, table; mismatched labels or vectors are a LoupeError", async () => {
  const m = similarityMatrix([[1, 0], [0, 2], [1, 1]]);
  assertEquals(m[0][0], 1);
  assertEquals(m[0][1], 0);
  assert(Math.abs(m[0][2] - Math.SQRT1_2) < 1e-12 && m[2][0] === m[0][2]);
  const s = similarityMap(["a", "b", "c"], [[1, 0], [0, 2], [1, 1]]);
  const bundle = await (s as unknown as { [DISPLAY](): Promise<MimeBundle> })[DISPLAY]();
  const fig = bundle[PLOTLY] as PlotlyFigure;
  assertEquals((fig.data[0] as { type: string }).type, "heatmap");
  assertEquals((fig.data[0] as { z: number[][] }).z, m);
  assert(s.toString().includes("0.707"));
  assertEquals(
    assertThrows(() => similarityMap(["a"], [[1], [2]]), LoupeError, "1 labels for 2 vectors").code,
    "INVALID_ARGUMENT",
  );
  assertThrows(() => similarityMatrix([[1, 2], [1]]), LoupeError, "lengths differ (2 and 1)");
});

Deno.test("results, models, devices and backends display richly; their data is unchanged", async () => {
  await using model = await loadModel(await fixture("tiny"), { threads: THREADS });
  const r = await model.generate("Once upon a time", { maxTokens: 6, temperature: 0 });
  assertEquals(Object.keys(r), ["text", "tokens", "promptTokens", "stopReason", "timeline"]);
  assertEquals(JSON.parse(JSON.stringify(r)).text, r.text, "JSON is unchanged");
  const rb = await (r as unknown as { [DISPLAY](): Promise<MimeBundle> })[DISPLAY]();
  assert((rb["text/plain"] as string).startsWith(r.text), "the result's text comes first");
  assert((rb["text/html"] as string).includes("stop: maxTokens"));
  const rfig = rb[PLOTLY] as PlotlyFigure;
  assert(rfig.data.some((t) => t.name === "CPU" && (t.y as string[]).includes("generation")), "generation on CPU");
  assert(rfig.data.some((t) => t.name === "weights"), "weights beside the stages");

  const mb = await model[DISPLAY]();
  assert((mb["text/plain"] as string).includes(model.info.desc));
  assert((mb["text/html"] as string).includes("memory per device"));
  assert(PLOTLY in mb, "a memory plot");

  const devs = await devices();
  assert(DISPLAY in devs, "devices() displays itself");
  assertEquals(Object.getOwnPropertyDescriptor(devs, DISPLAY)?.enumerable, false, "…without a new enumerable key");
  assertEquals(JSON.parse(JSON.stringify(devs)), JSON.parse(JSON.stringify([...devs])), "JSON is unchanged");
  const db = await (devs as unknown as { [DISPLAY](): Promise<MimeBundle> })[DISPLAY]();
  assert((db["text/html"] as string).includes(devs[0].description), "a device table");
  assert(PLOTLY in db, "a device memory plot");
  const list = await backends();
  const bb = await (list as unknown as { [DISPLAY](): Promise<MimeBundle> })[DISPLAY]();
  assert((bb["text/plain"] as string).includes("cpu"), "a backend table");
  assert((bb["text/html"] as string).includes("<table"), "…in HTML too");
  const bfig = bb[PLOTLY] as PlotlyFigure;
  const bars = bfig.data[0] as { y: string[]; x: number[]; marker: { color: string[] } };
  assertEquals(bars.y, list.map((b) => b.name), "one bar per backend");
  const cpu = list.findIndex((b) => b.name === "cpu");
  assertEquals(bars.x[cpu], list[cpu].devices, "the CPU backend's bar is its device count");
  assertEquals(
    new Set(list.map((b, i) => `${b.loaded}:${bars.marker.color[i]}`)).size,
    new Set(list.map((b) => b.loaded)).size,
    "one colour per loaded state",
  );
  assertEquals(viewOf({ some: "object" }), null, "unknown values have no rich view");
  assertEquals((await bundleOf(42))["text/plain"], "42");
});

Deno.test("an HTML page for scripts inlines plotly.js once for all its plots", async () => {
  const page = await htmlPage([mixedTimeline(), compare({ a: mixedTimeline(), b: mixedTimeline() })], "report");
  assert(page.startsWith("<!DOCTYPE html>"));
  assertEquals(page.split("inlined by loupe").length - 1, 1);
  assertEquals(page.split('class="loupe-plot"').length - 1, 2);
});

Deno.test("embedders, projectors and sessions display richly as the last expression of a cell", async () => {
  await using embedder = await loadEmbedder(await embedFixture("bert"), { threads: THREADS });
  const eb = await embedder[DISPLAY]();
  assert((eb["text/plain"] as string).includes(embedder.info.desc), "what it is");
  assert((eb["text/html"] as string).includes(`${embedder.info.dimensions}`), "its dimensions");
  assert(PLOTLY in eb, "a memory plot");
  const vectors = await embedder.embed(["a cat", "a dog"]);
  const vb = await (vectors as unknown as { [DISPLAY](): Promise<MimeBundle> })[DISPLAY]();
  const vfig = vb[PLOTLY] as PlotlyFigure;
  assert(vfig.data.some((t) => t.name === "CPU" && (t.y as string[]).includes("encode")), "encode on the CPU");
  assert(vfig.data.some((t) => t.name === "weights"), "weights beside the stages");

  const { model: modelPath, projector: projectorPath } = await fixtureProjector("tiny");
  await using model = await loadModel(modelPath, { threads: THREADS, gpuLayers: 0 });
  const projector = await model.loadProjector(projectorPath);
  const pb = await projector[DISPLAY]();
  assert((pb["text/plain"] as string).includes("mlp"), "the projector type");
  assert((pb["text/html"] as string).includes("projector warm-up"), "the load timeline");
  const pfig = pb[PLOTLY] as PlotlyFigure;
  assert(
    pfig.data.some((t) => t.name === "CPU" && (t.y as string[]).includes("projector warm-up")),
    "the warm-up's measured device in the waterfall",
  );

  await using session = await model.session({ contextSize: 64, systemPrompt: "Be brief." });
  await session.chat("Hi", { maxTokens: 4, temperature: 0 });
  const sb = await session[DISPLAY]();
  assert(
    (sb["text/plain"] as string).includes(`${session.tokens.length} of ${session.contextSize} tokens`),
    "how full the context is",
  );
  assert((sb["text/html"] as string).includes("Be brief."), "the system prompt");
});

Deno.test("a session's reused tokens and context shifts show in the HTML table and on the waterfall", async () => {
  await using model = await loadModel(await fixture("tiny"), { threads: THREADS });
  await using session = await model.session({ contextSize: 256 });
  await session.generate("Once upon a time", { maxTokens: 4, temperature: 0 });
  const r = await session.generate(" and then", { maxTokens: 300, temperature: 0, ignoreEos: true });
  assert(r.reusedTokens > 0 && r.shifts.length > 0, `reused ${r.reusedTokens}, ${r.shifts.length} shifts`);
  const b = await bundleOf(r.timeline);
  const html = b["text/html"] as string;
  assert(html.includes(`(+${r.reusedTokens} reused)`), "the reused tokens in the table");
  assert(
    html.includes(`dropped ${r.shifts[0].dropped} tokens at position ${r.shifts[0].position}`),
    "each shift listed",
  );
  const fig = b[PLOTLY] as PlotlyFigure;
  const marks = fig.data.find((t) => t.name === "events") as { x: number[]; hovertext: string[] };
  assertEquals(marks.x.length, r.timeline.events.length, "one marker per event");
  assert(marks.hovertext[0].includes("context shift"), marks.hovertext[0]);
  assertEquals((fig.layout.shapes as unknown[]).length, r.timeline.events.length, "one line per event");
});
