// Rich display: tables, plotly figures (waterfall, comparison, memory, heat map) and MIME
// bundles, on synthetic timelines with known numbers and on real results of the fixture model.
import { assert, assertEquals, assertThrows } from "./assert.ts";
import { fixture, THREADS } from "./helpers.ts";
import {
  backends,
  bundleOf,
  compare,
  cosineSimilarity,
  deviceColor,
  devices,
  DISPLAY,
  displayOptions,
  embedFixture,
  fixtureProjector,
  htmlPage,
  loadEmbedder,
  loadModel,
  type MimeBundle,
  type PlotlyFigure,
  setDisplayOptions,
  similarityMap,
  Timeline,
  timelineFigure,
} from "../mod.ts";
import { stageSegments, viewOf } from "../src/display.ts";
import { PLOTLY_VERSION, plotlyScript } from "../src/plotly.ts";

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
  assertThrows(() => compare({ bad: {} as never }), TypeError, "neither a timeline nor a result");
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
    assertThrows(() => setDisplayOptions({ plotly: "sometimes" }), TypeError, "must be");
  } finally {
    setDisplayOptions(before);
  }
  assertEquals(displayOptions(), before);
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

Deno.test("similarity: cosine matrix, heat map, table; mismatched input is a TypeError", async () => {
  const m = cosineSimilarity([[1, 0], [0, 2], [1, 1]]);
  assertEquals(m[0][0], 1);
  assertEquals(m[0][1], 0);
  assert(Math.abs(m[0][2] - Math.SQRT1_2) < 1e-12 && m[2][0] === m[0][2]);
  const s = similarityMap(["a", "b", "c"], [[1, 0], [0, 2], [1, 1]]);
  const bundle = await (s as unknown as { [DISPLAY](): Promise<MimeBundle> })[DISPLAY]();
  const fig = bundle[PLOTLY] as PlotlyFigure;
  assertEquals((fig.data[0] as { type: string }).type, "heatmap");
  assertEquals((fig.data[0] as { z: number[][] }).z, m);
  assert(s.toString().includes("0.707"));
  assertThrows(() => similarityMap(["a"], [[1], [2]]), TypeError, "1 labels for 2 vectors");
  assertThrows(() => cosineSimilarity([[1, 2], [1]]), TypeError, "lengths 2 and 1 differ");
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
