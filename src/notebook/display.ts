/**
 * Rich display for notebooks: HTML tables, plotly figures and the MIME bundles that Jupyter
 * front ends render. Every bundle has `text/plain`; plots come as
 * `application/vnd.plotly.v1+json` (JupyterLab, VS Code) **and** a `text/html` fallback (nbviewer,
 * HTML exports, classic front ends, Colab) that draws with plotly.js, guarded against
 * RequireJS/AMD pages.
 *
 * **plotly.js once per notebook.** Inside the `deno jupyter` kernel, the first plot output of the
 * kernel session carries the pinned plotly.js inlined (~4.8 MB); later plot outputs of the same
 * kernel process carry only their figure and a draw script that uses the page's `window.Plotly`
 * (one page per notebook: nbviewer, `jupyter nbconvert --to html`, JupyterLab, Notebook 7, VS
 * Code's notebook webview). Where it is not there yet (an output rendered before the one with the
 * library, e.g. after cells were moved), the plot queues itself and the library's script draws
 * it; if the page has finished loading (or, on a live page, 2 s have passed) without plotly.js,
 * the plot loads the pinned version from cdn.plot.ly, and offline says so in one line
 * ("plotly.js is not on this page …") instead of staying blank. So a saved notebook redraws
 * after reopening, in nbviewer and in HTML exports as long as the output with the library is
 * kept. Re-running or clearing *that* cell in the same kernel session removes the notebook's
 * copy: the live page keeps drawing (it still has `window.Plotly`), but once saved and reopened
 * the other plots need cdn.plot.ly. Each new kernel session (restart, "Run all" after a restart)
 * puts the library in its first plot again, and `setDisplayOptions({ plotly: "inline" })` makes
 * the next plot carry it again. Scripts (`htmlPage`, bundles built outside the kernel,
 * {@linkcode richBundle}) keep one self-contained copy per page or per bundle. In Google Colab
 * every output is its own iframe: there the default is `"cdn"` when cdn.plot.ly answers, else
 * plotly.js inlined in every plot output (see {@linkcode DisplayOptions.plotly}).
 *
 * Objects display themselves through `[Symbol.for("Jupyter.display")]`, which the `deno jupyter`
 * kernel calls for the last expression of a cell; plain scripts never touch `Deno.jupyter`.
 * New result types reuse {@linkcode richBundle} (a table, a figure, a text form) or
 * {@linkcode attachDisplay}.
 *
 * @example
 * ```ts
 * import { compare, display, fixtureModel, loadModel } from "./mod.ts";
 * await using model = await loadModel(await fixtureModel());
 * const r = await model.generate("Once upon a time", { maxTokens: 16 });
 * r.timeline; // as the last expression of a notebook cell: a table and a waterfall plot
 * await display(compare({ first: r, second: await model.generate("Hello", { maxTokens: 16 }) }));
 * ```
 *
 * @module
 */
import type { BackendReport, Device } from "../engine/engine.ts";
import { LoupeError } from "../util/errors.ts";
import type { GenerateResult } from "../generate/result.ts";
import { isColab, type KernelApi, kernelApi, publish } from "./kernel.ts";
import { DISPLAY, LIVE, type LiveValue, type MimeBundle, VIEW_KIND } from "../util/presenter.ts";
import { Comparison } from "./comparison.ts";
import { type TimelineLike, timelineView } from "./timeline_view.ts";
import { escapeHtml, OWN_VIEW, type PlotlyFigure, type View } from "./view.ts";
import {
  backendsView,
  devicesView,
  type MeasuredArray,
  measuredArrayView,
  type ModelLike,
  modelView,
  projectorView,
  resultView,
  sessionView,
} from "./views.ts";
import { serverView } from "./server_view.ts";

export { DISPLAY, type MimeBundle };

/** MIME type of plotly figures. */
export const PLOTLY_MIME = "application/vnd.plotly.v1+json";
/** How plots are emitted; see {@linkcode setDisplayOptions}. */
export interface DisplayOptions {
  /**
   * Where the `text/html` fallback gets plotly.js:
   * - `"auto"` (default): `"cdn"` in Google Colab when cdn.plot.ly answers (checked once, at
   *   most 2 s; Colab shows each output in its own iframe, so each plot loads its own copy),
   *   else `"inline"`.
   * - `"inline"`: the pinned library inlined (~4.8 MB), works offline. In a notebook kernel
   *   session only the session's first plot output carries it and later ones use the page's
   *   copy (see the module documentation); in Colab, and outside the kernel, every plot output
   *   (or `htmlPage`'s page) carries its own.
   * - `"cdn"`: a script tag for the pinned version on cdn.plot.ly; any other `https://` URL: that.
   * - `"none"`: the page already has `window.Plotly`.
   *
   * Default from `LOUPE_PLOTLY`, else `"auto"`. Setting it (even to the same value) makes the
   * next plot of a kernel session carry the library again in `"inline"` mode.
   */
  plotly: string;
  /** Also emit `application/vnd.plotly.v1+json` (default true). */
  plotlyMime: boolean;
}

export const options: DisplayOptions = { plotly: envPlotly(), plotlyMime: true };

function envPlotly(): string {
  try {
    return Deno.env.get("LOUPE_PLOTLY") || "auto";
  } catch {
    return "auto";
  }
}

/** What the default plotly.js source depends on: whether this is Colab, and whether cdn.plot.ly answers. */
export interface PlotlyHost {
  /** Each output in its own iframe (Google Colab). */
  colab: boolean;
  /** Whether cdn.plot.ly can be reached; asked only when `colab` is true. */
  online(): Promise<boolean>;
}

/** This process's {@linkcode PlotlyHost}: {@linkcode isColab} and a cached, bounded check of cdn.plot.ly. */
export function plotlyHost(): PlotlyHost {
  return {
    colab: isColab(),
    online: async () => (await import("./plotly.ts")).cdnReachable(),
  };
}

/**
 * The plotly.js source a `plotly` option stands for: `"auto"` is `"cdn"` in Colab with the network
 * up, else `"inline"`; any other value is itself (`LOUPE_PLOTLY` and {@linkcode setDisplayOptions}
 * override the default).
 */
export async function resolvePlotly(mode: string, host: PlotlyHost = plotlyHost()): Promise<string> {
  if (mode !== "auto") return mode;
  return host.colab && await host.online() ? "cdn" : "inline";
}

/** Changes how plots are emitted (for this process); returns the options now in force. */
export function setDisplayOptions(change: Partial<DisplayOptions>): DisplayOptions {
  if (change.plotly !== undefined) {
    const p = change.plotly;
    if (!["auto", "inline", "cdn", "none"].includes(p) && !/^(https?:|file:|\/|\.)/.test(p)) {
      throw new LoupeError(
        "INVALID_ARGUMENT",
        `Cannot set display options: plotly must be "auto", "inline", "cdn", "none" or a URL, not ${JSON.stringify(p)}`,
      );
    }
    options.plotly = p;
    sessions = new WeakMap(); // the next plot of a kernel session carries the library again
  }
  if (change.plotlyMime !== undefined) options.plotlyMime = change.plotlyMime;
  return { ...options };
}

/** The display options in force. */
export function displayOptions(): DisplayOptions {
  return { ...options };
}

// ---------------------------------------------------------------------------------------------
// Bundles

const STYLE = `<style>
.loupe-output{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:13px;line-height:1.4;max-width:1100px}
.loupe-output table.loupe-table{border-collapse:collapse;margin:2px 0 8px;font-size:12px}
.loupe-output table.loupe-table caption{caption-side:top;text-align:left;font-weight:600;padding:2px 0 4px}
.loupe-output table.loupe-table th,.loupe-output table.loupe-table td{padding:2px 10px;text-align:left;border-bottom:1px solid rgba(128,128,128,.25)}
.loupe-output table.loupe-table .num{text-align:right;font-variant-numeric:tabular-nums}
.loupe-output .loupe-note{font-size:12px;margin:2px 0 8px;opacity:.85}
.loupe-output pre.loupe-text{white-space:pre-wrap;max-height:24em;overflow:auto;padding:6px 8px;border-radius:4px;background:rgba(128,128,128,.1);margin:2px 0 6px}
</style>`;

let plotCounter = 0;

function plotId(): string {
  return `loupe-plot-${Date.now().toString(36)}-${(plotCounter++).toString(36)}-${
    Math.floor(Math.random() * 1e9).toString(36)
  }`;
}

/** JSON that is safe inside a `<script>` element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, "\\u003c").replace(/\u2028/g, "\\u2028").replace(/\u2029/g, "\\u2029");
}

/**
 * The plotly.js library as a `<script>` element, run with `define`, `module`, `exports` and
 * `require` hidden so that it sets `window.Plotly` even on RequireJS/AMD pages (nbviewer, the
 * classic notebook), and skipped when the page already has Plotly. It then draws the plots that
 * are waiting for it on the page (`window.__loupePlotly.q`, filled by plots without the library).
 */
export async function plotlyLibraryHtml(): Promise<string> {
  const { plotlyScript, PLOTLY_VERSION } = await import("./plotly.ts");
  const src = (await plotlyScript()).replace(/<\/(script)/gi, "<\\/$1");
  return `<script type="text/javascript">/* plotly.js ${PLOTLY_VERSION}, inlined by loupe */\n` +
    `if (!window.Plotly) { (function (define, module, exports, require) {\n${src}\n}).call(window); }\n` +
    `(function (w) { if (!w || !window.Plotly) return; var q = w.q; w.q = [];\n` +
    `  q.forEach(function (p) { try { p.draw(); } catch (e) { p.fail(String(e)); } }); })(window.__loupePlotly);\n` +
    `</script>`;
}

/**
 * Where plotly.js comes from in a kernel session: the process's first plot output carries it
 * (and so does an in-place update of that output); the others use the page's copy.
 */
interface PlotlySession {
  /** Whether a plot output of this session carries the library. */
  shipped: boolean;
  /** The display id of that output, when it has one (an update of it must carry the library again). */
  carrier: string | null;
}

/** Sessions by kernel API object (one per kernel process); a new map when the plotly option is set. */
let sessions = new WeakMap<KernelApi, PlotlySession>();

function plotlySession(api: KernelApi): PlotlySession {
  let s = sessions.get(api);
  if (!s) sessions.set(api, s = { shipped: false, carrier: null });
  return s;
}

/** One output about to be published in a kernel session: which one, and whether it took the library. */
interface SessionOutput {
  session: PlotlySession;
  /** Its display id, if any. */
  id?: string;
  /** Whether it replaces the output with that id (`update_display_data`). */
  update?: boolean;
  /** Set by {@linkcode plotHtml} when this output carries the library for the session. */
  carries?: boolean;
  /** The session's record before this output took the library. */
  before?: PlotlySession;
}

/**
 * Publishes a kernel output built with `out` (see {@linkcode plotHtml}) and keeps the session's
 * record right: if it could not be sent, the next plot carries the library; if it replaced the
 * output that carried it with one that does not, so does the next plot.
 */
async function publishSessionOutput(out: SessionOutput, send: () => Promise<unknown>): Promise<void> {
  const s = out.session;
  try {
    await send();
  } catch (e) {
    if (out.carries && out.before) Object.assign(s, out.before);
    throw e;
  }
  if (!out.carries && out.update && out.id !== undefined && s.carrier === out.id) {
    s.shipped = false;
    s.carrier = null;
  }
}

const MISSING = "plotly.js is not on this page: it came with the first plot of the notebook's kernel session, " +
  "whose output is gone (run the notebook again)";

/**
 * A plot as HTML: a `<div>` and the script that draws it, with plotly.js as the display
 * options say (inlined by default, or loaded from a URL with the AMD loader held off). With
 * `session` (an output of a kernel session), `"inline"` inlines the library only into the
 * session's first plot; later plots use the page's `window.Plotly` (see the module documentation).
 */
export async function plotHtml(
  figure: PlotlyFigure,
  opts: Partial<DisplayOptions> = {},
  session?: SessionOutput,
): Promise<string> {
  const host = plotlyHost();
  const mode = await resolvePlotly(opts.plotly ?? options.plotly, host);
  const id = plotId();
  const height = Number((figure.layout as { height?: number }).height ?? 320);
  let library = "";
  let url = "";
  let wait = false; // wait for the page's copy (a session's later plot) before loading `url`
  if (mode === "inline") {
    const s = session?.session;
    const shared = s && !host.colab; // Colab: every output is its own page
    const reship = session?.update && session.id !== undefined && s?.carrier === session.id;
    const carries = !shared || !s.shipped || reship;
    if (shared && carries) {
      // Taken before any await, so that plots built at the same time do not all carry it.
      session.before = { ...s };
      session.carries = true;
      s.shipped = true;
      s.carrier = session.id ?? null;
    }
    if (shared) {
      // Draw with the page's copy, waiting for it; the pinned version from the CDN when none comes.
      url = (await import("./plotly.ts")).PLOTLY_CDN_URL;
      wait = true;
    }
    if (carries) {
      try {
        library = await plotlyLibraryHtml();
      } catch (e) {
        if (shared) {
          Object.assign(s, session.before);
          session.carries = false;
        }
        return `<div class="loupe-note">The plot is not shown: ${escapeHtml((e as Error).message)}</div>`;
      }
    }
  } else if (mode === "cdn") {
    url = (await import("./plotly.ts")).PLOTLY_CDN_URL;
  } else if (mode !== "none") {
    url = mode;
  }
  const draw = `<script type="text/javascript">(function () {
  var fig = ${scriptJson(figure)};
  var el = document.getElementById(${JSON.stringify(id)});
  function draw() { window.Plotly.newPlot(el, fig.data, fig.layout, fig.config); }
  if (window.Plotly) { draw(); return; }
  var url = ${JSON.stringify(url)}, wait = ${wait};
  if (!url) { el.textContent = "plotly.js is not on this page"; return; }
  var L = window.__loupePlotly = window.__loupePlotly || { q: [] };
  L.q.push({ draw: draw, fail: function (why) { el.textContent = why; } });
  function settle(why) {
    var q = L.q; L.q = [];
    q.forEach(function (p) {
      if (!window.Plotly) { p.fail(why); return; }
      try { p.draw(); } catch (e) { p.fail(String(e)); }
    });
  }
  function load() {
    if (window.Plotly || !L.q.length) { settle(""); return; }
    if (L.loading) return;
    L.loading = true;
    var amd = window.define, mod = window.module;
    window.define = undefined; window.module = undefined;
    var s = document.createElement("script");
    s.src = url;
    s.onload = function () {
      window.define = amd; window.module = mod; L.loading = false;
      settle("Loaded " + url + " but it did not define window.Plotly");
    };
    s.onerror = function () {
      window.define = amd; window.module = mod; L.loading = false;
      settle((wait ? ${
    JSON.stringify(MISSING)
  } + ", and it cannot be loaded from " : "Cannot load plotly.js from ") + url);
    };
    document.head.appendChild(s);
  }
  if (!wait) load();
  else if (document.readyState === "complete") setTimeout(load, 2000);
  else window.addEventListener("load", function () { setTimeout(load, 0); });
})();</script>`;
  return `<div id="${id}" class="loupe-plot" style="width:100%;height:${height}px"></div>\n${library}\n${draw}`;
}

/** Turns a view into a MIME bundle: `text/plain`, `text/html` (tables + plot) and the plotly figure. */
export async function toBundle(
  view: View,
  opts: Partial<DisplayOptions> = {},
  session?: SessionOutput,
): Promise<MimeBundle> {
  const bundle: MimeBundle = { "text/plain": view.text };
  const plot = view.figure ? await plotHtml(view.figure, opts, session) : "";
  bundle["text/html"] = `<div class="loupe-output">${STYLE}\n${view.html ?? ""}\n${plot}</div>`;
  if (view.figure && (opts.plotlyMime ?? options.plotlyMime)) bundle[PLOTLY_MIME] = view.figure;
  return bundle;
}

/** A bundle from parts: for new result types that want a table and a plot like the built-in ones. */
export function richBundle(view: View): Promise<MimeBundle> {
  return toBundle(view);
}

// ---------------------------------------------------------------------------------------------
// Dispatch

/** The views of values that name theirs (`[VIEW_KIND]`, set by the domain through src/util/presenter.ts). */
const VIEWS: Record<string, (value: any) => View> = {
  backends: backendsView,
  devices: devicesView,
  projector: projectorView,
  server: serverView,
  session: sessionView,
};

function isTimeline(v: any): v is TimelineLike {
  return v !== null && typeof v === "object" && typeof v.kind === "string" && Array.isArray(v.stages) &&
    v.stages.every((s: any) => typeof s?.name === "string" && typeof s?.wallMs === "number");
}

function isResult(v: any): v is GenerateResult {
  return v !== null && typeof v === "object" && typeof v.text === "string" && Array.isArray(v.tokens) &&
    isTimeline(v.timeline);
}

function isModel(v: any): v is ModelLike {
  return v !== null && typeof v === "object" && typeof v.path === "string" && typeof v.info?.desc === "string" &&
    isTimeline(v.loadTimeline);
}

function isMeasuredArray(v: any): v is MeasuredArray<unknown> {
  return Array.isArray(v) && isTimeline((v as any).timeline) &&
    v.every((x) => typeof x === "number" || ArrayBuffer.isView(x) || Array.isArray(x));
}

function isDeviceList(v: any): v is Device[] {
  return Array.isArray(v) && v.length > 0 &&
    v.every((d) => typeof d?.name === "string" && typeof d?.backend === "string" && typeof d?.memoryTotal === "number");
}

function isBackendList(v: any): v is BackendReport[] {
  return Array.isArray(v) && v.length > 0 &&
    v.every((b) => typeof b?.name === "string" && typeof b?.loaded === "boolean" && Array.isArray(b?.variants));
}

/**
 * The rich view of a value loupe knows (timeline, generation result, model or embedder, embeddings
 * or scores with a timeline, devices, backends, comparison), or null.
 */
export function viewOf(value: unknown): View | null {
  const v = value as any;
  if (v !== null && typeof v === "object" && typeof v[OWN_VIEW] === "function") return v[OWN_VIEW]();
  const named = v !== null && typeof v === "object" ? VIEWS[v[VIEW_KIND]] : undefined;
  if (named) return named(v);
  if (v instanceof Comparison) return v.view();
  if (isResult(v)) return resultView(v);
  if (isModel(v)) return modelView(v);
  if (isTimeline(v)) return timelineView(v);
  if (isMeasuredArray(v)) return measuredArrayView(v);
  if (isDeviceList(v)) return devicesView(v);
  if (isBackendList(v)) return backendsView(v);
  return null;
}

function inspectText(value: unknown): string {
  return typeof value === "string" ? value : Deno.inspect(value, { colors: false });
}

/** The MIME bundle of any value: loupe's rich views, the value's own display method, else its inspected text. */
export function bundleOf(value: unknown, opts: Partial<DisplayOptions> = {}): Promise<MimeBundle> {
  return sessionBundle(value, opts);
}

/** {@linkcode bundleOf} for an output of a kernel session (only its first plot carries plotly.js). */
async function sessionBundle(
  value: unknown,
  opts: Partial<DisplayOptions> = {},
  session?: SessionOutput,
): Promise<MimeBundle> {
  const view = viewOf(value);
  if (view) return await toBundle(view, opts, session);
  const own = (value as any)?.[DISPLAY];
  if (typeof own === "function") return await own.call(value);
  return { "text/plain": inspectText(value) };
}

/**
 * What a loupe object's `[Symbol.for("Jupyter.display")]` method returns (it never calls that
 * method itself). In a plain script: its rich bundle. Inside the `deno jupyter` kernel the rich
 * bundle goes out as a `display_data` message whose delivery is confirmed before the cell may
 * end (see src/notebook/kernel.ts: Deno's kernel can otherwise publish a large output after the
 * cell's end, where front ends drop it), and the returned `execute_result` is one line of text.
 * Only the kernel session's first plot carries plotly.js (see the module documentation). `api`
 * is the kernel's (default `Deno.jupyter`; null: a script).
 */
export async function displayBundle(value: unknown, api: KernelApi | null = kernelApi()): Promise<MimeBundle> {
  const view = viewOf(value) ?? { text: inspectText(value) };
  if (!api) return await toBundle(view);
  const live = liveOf(value);
  const id = live ? `loupe-live-${Date.now().toString(36)}-${(liveCounter++).toString(36)}` : undefined;
  const out: SessionOutput = { session: plotlySession(api), id };
  if (live) await shipLibraryApart(api, out.session); // its plots may come later, in redraws
  const bundle = await toBundle(view, {}, out);
  const transient = id ? { display_id: id } : {};
  await publishSessionOutput(
    out,
    () => publish(api, "display_data", { data: bundle, metadata: {}, transient }, { confirm: true }),
  );
  if (live && id) redrawWhileLive(value, live, id, api);
  return { "text/plain": view.summary ?? view.text.split("\n")[0] };
}

let liveCounter = 0;

/**
 * Before a live output: where the session's plots share one inlined plotly.js and none has
 * shipped it yet, ships it in an output of its own, so that the live output, redrawn every
 * second, never is the one that carries the library (each redraw would carry it again).
 */
async function shipLibraryApart(api: KernelApi, session: PlotlySession): Promise<void> {
  const host = plotlyHost();
  if (session.shipped || host.colab || await resolvePlotly(options.plotly, host) !== "inline") return;
  const html = `<div class="loupe-library" style="display:none"></div>${await plotlyLibraryHtml()}`;
  await publish(api, "display_data", { data: { "text/plain": "", "text/html": html }, metadata: {}, transient: {} }, {
    confirm: true,
  });
  session.shipped = true;
  session.carrier = null;
}

function liveOf(value: unknown): LiveValue | null {
  const live = value !== null && typeof value === "object" ? (value as any)[LIVE] : undefined;
  return live && typeof live.active === "function" && typeof live.intervalMs === "number" ? live : null;
}

/**
 * Redraws the output `id` of a live value every `intervalMs` while it is active, then once more;
 * the timer never keeps the process alive, and a redraw that fails (a closed kernel channel)
 * stops it. Plots in redraws use the page's plotly.js (see {@linkcode shipLibraryApart}).
 */
function redrawWhileLive(value: unknown, live: LiveValue, id: string, api: KernelApi): void {
  let busy = false;
  const timer = setInterval(async () => {
    if (busy) return;
    busy = true;
    const last = !live.active();
    try {
      const view = viewOf(value) ?? { text: inspectText(value) };
      const out: SessionOutput = { session: plotlySession(api), id, update: true };
      if (view.figure) await shipLibraryApart(api, out.session);
      const bundle = await toBundle(view, {}, out);
      await publishSessionOutput(
        out,
        () => publish(api, "update_display_data", { data: bundle, metadata: {}, transient: { display_id: id } }),
      );
      if (last) clearInterval(timer);
    } catch {
      clearInterval(timer);
    } finally {
      busy = false;
    }
  }, Math.max(live.intervalMs, 100));
  Deno.unrefTimer(timer);
}

/**
 * Shows a value now (not only as the last expression of a cell): in a notebook as rich output
 * (table and plot; returns once the output has gone out), in a script as its text form on
 * stdout. `id` names the output; `update: true` replaces the earlier output with that id.
 * `jupyter` is the kernel API (default `Deno.jupyter`), for other kernels and tests.
 */
export async function display(
  value: unknown,
  opts: { id?: string; update?: boolean; jupyter?: KernelApi } = {},
): Promise<void> {
  const api = opts.jupyter ?? kernelApi();
  if (!api) {
    console.log((await bundleOf(value))["text/plain"]);
    return;
  }
  const out: SessionOutput = { session: plotlySession(api), id: opts.id || undefined, update: opts.update };
  const bundle = await sessionBundle(value, {}, out);
  const transient = opts.id ? { display_id: opts.id } : {};
  const type = opts.update ? "update_display_data" : "display_data";
  await publishSessionOutput(
    out,
    () => publish(api, type, { data: bundle, metadata: {}, transient }, { confirm: true }),
  );
}

/**
 * A standalone HTML page of rich views (tables and plots, plotly.js inlined once in the page),
 * for scripted experiments: `await Deno.writeTextFile("report.html", await htmlPage([r.timeline]))`.
 */
export async function htmlPage(values: unknown[], title = "loupe report"): Promise<string> {
  const parts: string[] = [];
  for (const v of values) {
    const view = viewOf(v) ?? { text: String(v), html: `<pre>${escapeHtml(String(v))}</pre>` };
    parts.push((await toBundle(view, { plotly: "none", plotlyMime: false }))["text/html"] as string);
  }
  return `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>${
    escapeHtml(title)
  }</title>\n${await plotlyLibraryHtml()}\n</head>\n<body>\n<h1 style="font-family:system-ui,sans-serif;font-size:20px">${
    escapeHtml(title)
  }</h1>\n${parts.join("\n<hr>\n")}\n</body></html>\n`;
}
