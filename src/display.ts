/**
 * Rich display for notebooks: HTML tables, plotly figures and the MIME bundles that Jupyter
 * front ends render. Every bundle has `text/plain`; plots come as
 * `application/vnd.plotly.v1+json` (JupyterLab, VS Code) **and** a self-contained `text/html`
 * fallback that inlines plotly.js (offline, Colab's per-output iframes), guarded against
 * RequireJS/AMD pages.
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
import type { BackendReport, Device } from "./engine.ts";
import type { GenerateResult, Model } from "./model.ts";
import type { DeviceMemory, Stage, Timeline, TimelineEvent } from "./timeline.ts";
import { kernelApi, publish } from "./jupyter.ts";

/** The key the `deno jupyter` kernel looks for: `Symbol.for("Jupyter.display")`. */
export const DISPLAY: unique symbol = Symbol.for("Jupyter.display");

/** MIME type of plotly figures. */
export const PLOTLY_MIME = "application/vnd.plotly.v1+json";

/** A MIME bundle as Jupyter front ends take it; `text/plain` is always present. */
export interface MimeBundle {
  /** The text form (terminals, plain front ends, nbconvert to text). */
  "text/plain": string;
  /** Other representations by MIME type. */
  [mime: string]: unknown;
}

/** A plotly figure: traces, layout and config, as plotly.js and the plotly MIME renderer take them. */
export interface PlotlyFigure {
  /** Traces. */
  data: Array<Record<string, unknown>>;
  /** Layout. */
  layout: Record<string, unknown>;
  /** Config (responsiveness, mode bar). */
  config?: Record<string, unknown>;
}

/** Something that displays itself in Jupyter. */
export interface Displayable {
  /** Returns the MIME bundle. */
  [DISPLAY](): MimeBundle | Promise<MimeBundle>;
}

/** The parts of a rich display: text form, HTML above the plot, and the plot. */
export interface View {
  /** `text/plain`. */
  text: string;
  /** HTML (tables, summaries) shown above the plot. */
  html?: string;
  /** The plot. */
  figure?: PlotlyFigure;
  /** One line for the cell's `execute_result` when the rich output went out as display_data (default: the text's first line). */
  summary?: string;
}

/** How plots are emitted; see {@linkcode setDisplayOptions}. */
export interface DisplayOptions {
  /**
   * Where the `text/html` fallback gets plotly.js: `"inline"` (default; the pinned library inside
   * every plot output: works offline and in Colab's per-output iframes, ~4.8 MB per output),
   * `"cdn"` (a script tag for the pinned version on cdn.plot.ly), any other `https://` URL, or
   * `"none"` (the page already has `window.Plotly`). Default from `LOUPE_PLOTLY`, else inline.
   */
  plotly: string;
  /** Also emit `application/vnd.plotly.v1+json` (default true). */
  plotlyMime: boolean;
}

const options: DisplayOptions = { plotly: envPlotly(), plotlyMime: true };

function envPlotly(): string {
  try {
    return Deno.env.get("LOUPE_PLOTLY") || "inline";
  } catch {
    return "inline";
  }
}

/** Changes how plots are emitted (for this process); returns the options now in force. */
export function setDisplayOptions(change: Partial<DisplayOptions>): DisplayOptions {
  if (change.plotly !== undefined) {
    const p = change.plotly;
    if (!["inline", "cdn", "none"].includes(p) && !/^(https?:|file:|\/|\.)/.test(p)) {
      throw new TypeError(`plotly must be "inline", "cdn", "none" or a URL, not ${JSON.stringify(p)}`);
    }
    options.plotly = p;
  }
  if (change.plotlyMime !== undefined) options.plotlyMime = change.plotlyMime;
  return { ...options };
}

/** The display options in force. */
export function displayOptions(): DisplayOptions {
  return { ...options };
}

// ---------------------------------------------------------------------------------------------
// Formatting helpers

/** Escapes text for HTML. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/** Milliseconds with a precision that suits their size. */
export function formatMs(ms: number): string {
  return ms < 10 ? ms.toFixed(2) : ms < 10_000 ? ms.toFixed(1) : ms.toFixed(0);
}

/** Bytes as KiB, MiB or GiB. */
export function formatBytes(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  if (bytes >= 2 ** 10) return `${(bytes / 2 ** 10).toFixed(1)} KiB`;
  return `${bytes} B`;
}

/** A column of {@linkcode htmlTable} and {@linkcode textTable}. */
export interface Column<T> {
  /** Header text. */
  label: string;
  /** Cell text. */
  text: (row: T) => string;
  /** Cell HTML (default: the escaped text). */
  html?: (row: T) => string;
  /** Right-aligned (numbers). */
  numeric?: boolean;
}

/** A plain-text table with aligned columns and a rule under the header (no header when every label is empty). */
export function textTable<T>(columns: Column<T>[], rows: T[]): string {
  const header = columns.some((c) => c.label !== "");
  const cells = [columns.map((c) => c.label), ...rows.map((r) => columns.map((c) => c.text(r)))];
  const widths = columns.map((_, i) => Math.max(...cells.map((row) => row[i].length)));
  const line = (row: string[]) =>
    row.map((cell, i) => columns[i].numeric ? cell.padStart(widths[i]) : cell.padEnd(widths[i])).join("  ").trimEnd();
  const body = cells.slice(1).map(line);
  return (header ? [line(cells[0]), widths.map((w) => "-".repeat(w)).join("  "), ...body] : body).join("\n");
}

/** An HTML table (cells escaped unless a column gives its own HTML). */
export function htmlTable<T>(columns: Column<T>[], rows: T[], caption?: string): string {
  const cls = (c: Column<T>) => (c.numeric ? ' class="num"' : "");
  const head = columns.some((c) => c.label !== "")
    ? `<thead><tr>${columns.map((c) => `<th${cls(c)}>${escapeHtml(c.label)}</th>`).join("")}</tr></thead>`
    : "";
  const body = rows
    .map((r) =>
      `<tr>${columns.map((c) => `<td${cls(c)}>${c.html ? c.html(r) : escapeHtml(c.text(r))}</td>`).join("")}</tr>`
    )
    .join("\n");
  const cap = caption ? `<caption>${escapeHtml(caption)}</caption>` : "";
  return `<table class="loupe-table">${cap}${head}\n<tbody>\n${body}\n</tbody></table>`;
}

// ---------------------------------------------------------------------------------------------
// Device colours

/** Colour of stages that ran on the host without a compute graph (tokenizing, sampling). */
export const HOST_COLOR = "#9fb3c8";

/** Base colours per backend (first device, second device, …): stable across runs and notebooks. */
const BACKEND_COLORS: Array<[RegExp, string[]]> = [
  [/^cpu/i, ["#7f7f7f", "#5f5f5f"]],
  [/^cuda/i, ["#76b900", "#4f7d00", "#9fd34a", "#2e4a00"]],
  [/^vulkan/i, ["#e4572e", "#b5391a", "#f28a62", "#8a2a12"]],
  [/^(metal|mtl)/i, ["#1f77b4", "#0f4d7a"]],
  [/^(rocm|hip)/i, ["#9467bd", "#6a4691"]],
  [/^(sycl|level)/i, ["#0071c5", "#004f8a"]],
  [/^opencl/i, ["#17becf", "#0f8a96"]],
  [/^(blas|accelerate)/i, ["#bcbd22", "#8c8d19"]],
  [/^rpc/i, ["#8c564b", "#5e3a32"]],
  [/^(cann|musa|kompute|webgpu|zdnn)/i, ["#e377c2", "#b0558f"]],
];
const OTHER_COLORS = ["#2ca02c", "#ff7f0e", "#d62728", "#17becf", "#9467bd", "#8c564b"];

/**
 * The colour of a device in every plot: CPU grey, CUDA green, Vulkan red-orange, Metal blue,
 * ROCm purple, SYCL Intel blue; "host" (work without a compute graph) slate blue; a second device
 * of a backend a darker shade.
 */
export function deviceColor(device: string): string {
  if (device === "host") return HOST_COLOR;
  const index = Number(device.match(/(\d+)$/)?.[1] ?? 0);
  for (const [re, shades] of BACKEND_COLORS) if (re.test(device)) return shades[index % shades.length];
  let h = 0;
  for (const c of device) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return OTHER_COLORS[h % OTHER_COLORS.length];
}

/** A small square of a device's colour, for tables. */
export function swatch(device: string): string {
  return `<span class="loupe-swatch" style="display:inline-block;width:9px;height:9px;border-radius:2px;` +
    `margin-right:4px;vertical-align:baseline;background:${deviceColor(device)}"></span>`;
}

// ---------------------------------------------------------------------------------------------
// Timelines

/** The parts of a timeline the renderers use (a `Timeline` or its JSON form). */
export type TimelineLike = Pick<Timeline, "kind" | "stages"> & {
  memory?: DeviceMemory[];
  totalMs?: number;
  events?: TimelineEvent[];
};

/** One device's part of a stage bar. */
export interface StageSegment {
  /** Device name, or "host" for stages without a compute graph. */
  device: string;
  /** Share of the stage in [0, 1]: its heavy ops (or nodes) over the stage's. */
  share: number;
}

/**
 * How a stage splits between devices: proportional to heavy ops (matrix multiplications,
 * attention, convolutions), or to graph nodes when no heavy op ran; "host" when no graph ran.
 */
export function stageSegments(stage: Stage): StageSegment[] {
  const entries = Object.entries(stage.devices ?? {});
  const heavy = entries.reduce((a, [, p]) => a + p.heavy, 0);
  const weight = (p: { heavy: number; nodes: number }) => (heavy > 0 ? p.heavy : p.nodes);
  const total = entries.reduce((a, [, p]) => a + weight(p), 0);
  if (total === 0) return [{ device: "host", share: 1 }];
  return entries
    .filter(([, p]) => weight(p) > 0)
    .sort(([a], [b]) => Number(/^cpu/i.test(a)) - Number(/^cpu/i.test(b))) // accelerators first
    .map(([device, p]) => ({ device, share: weight(p) / total }));
}

function stageLabel(stage: Stage): string {
  return stage.name + (stage.interleavedWith ? ` (in ${stage.interleavedWith})` : "") +
    (stage.reused ? ` (+${stage.reused} reused)` : "");
}

function uniqueLabels(stages: Stage[]): string[] {
  const seen = new Map<string, number>();
  return stages.map((s) => {
    const base = stageLabel(s);
    const n = (seen.get(base) ?? 0) + 1;
    seen.set(base, n);
    return n === 1 ? base : `${base} #${n}`;
  });
}

function tokensPerSecond(s: Stage): number | null {
  return s.tokensPerSecond ?? (s.tokens > 0 && s.wallMs > 0 ? s.tokens / (s.wallMs / 1000) : null);
}

function devicesText(s: Stage): string {
  return Object.entries(s.devices ?? {}).map(([d, p]) => `${d} ${p.heavy}/${p.nodes}`).join(", ") || "host";
}

/** Hover text of a stage: milliseconds, tokens, tokens/s, heavy ops and nodes per device. */
export function stageHover(stage: Stage, segment?: StageSegment, run?: string): string {
  const tps = tokensPerSecond(stage);
  const lines = [
    `<b>${escapeHtml(stage.name)}</b>${run ? ` · ${escapeHtml(run)}` : ""}${
      segment
        ? ` · ${escapeHtml(segment.device)}${segment.share < 1 ? ` (${(segment.share * 100).toFixed(0)}%)` : ""}`
        : ""
    }`,
    `${formatMs(stage.wallMs)} ms, from ${formatMs(stage.startMs)} ms${
      stage.interleavedWith ? ` (spread over ${escapeHtml(stage.interleavedWith)})` : ""
    }`,
    `${stage.tokens} tokens${tps === null ? "" : ` · ${tps.toFixed(1)} tok/s`}${
      stage.graphs ? ` · ${stage.graphs} graphs` : ""
    }`,
  ];
  const devs = Object.entries(stage.devices ?? {});
  if (devs.length === 0) lines.push("host (no compute graph)");
  for (const [d, p] of devs) {
    lines.push(
      `${escapeHtml(d)}: ${p.heavy} heavy ops / ${p.nodes} nodes${
        p.firstHeavy ? ` (first ${escapeHtml(p.firstHeavy)})` : ""
      }`,
    );
  }
  return lines.join("<br>");
}

function weightsOf(memory: DeviceMemory[] | undefined): Array<[string, number]> {
  const out = new Map<string, number>();
  for (const m of memory ?? []) if (m.model > 0) out.set(m.device, (out.get(m.device) ?? 0) + m.model);
  return [...out];
}

interface BarTrace {
  x: number[];
  base: number[];
  y: string[];
  hovertext: string[];
  text: string[];
  opacity: number[];
}

function barTraces(traces: Map<string, BarTrace>, extra: Record<string, unknown> = {}): Array<Record<string, unknown>> {
  return [...traces].map(([device, t]) => ({
    type: "bar",
    orientation: "h",
    name: device,
    legendgroup: device,
    x: t.x,
    base: t.base,
    y: t.y,
    text: t.text,
    hovertext: t.hovertext,
    hovertemplate: "%{hovertext}<extra></extra>",
    marker: { color: deviceColor(device), opacity: t.opacity, line: { color: "#ffffff", width: 1 } },
    ...extra,
  }));
}

function trace(traces: Map<string, BarTrace>, device: string): BarTrace {
  let t = traces.get(device);
  if (!t) traces.set(device, t = { x: [], base: [], y: [], hovertext: [], text: [], opacity: [] });
  return t;
}

const FONT = { family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size: 12, color: "#333" };
const CONFIG = { responsive: true, displaylogo: false, displayModeBar: "hover" };

/**
 * The waterfall of a timeline: one bar per stage on a time axis, coloured by the device that
 * ran it, mixed placements as split bars (proportional to heavy ops); hover text with
 * milliseconds, tokens, tokens/s and heavy ops per device; weights per device beside it.
 */
export function timelineFigure(t: TimelineLike, options: { title?: string } = {}): PlotlyFigure {
  const labels = uniqueLabels(t.stages);
  const end = Math.max(1e-3, ...t.stages.map((s) => s.startMs + s.wallMs));
  const minWidth = end * 0.006; // a 0.1 ms stage stays visible (its hover text has the real time)
  const traces = new Map<string, BarTrace>();
  const annotations: Array<Record<string, unknown>> = [];
  t.stages.forEach((s, i) => {
    const shown = Math.max(s.wallMs, minWidth);
    let at = s.startMs;
    for (const seg of stageSegments(s)) {
      const tr = trace(traces, seg.device);
      tr.x.push(shown * seg.share);
      tr.base.push(at);
      tr.y.push(labels[i]);
      tr.text.push("");
      tr.hovertext.push(stageHover(s, seg));
      tr.opacity.push(s.interleavedWith ? 0.55 : 1);
      at += shown * seg.share;
    }
    const tps = tokensPerSecond(s);
    annotations.push({
      x: s.startMs + shown,
      y: labels[i],
      xref: "x",
      yref: "y",
      text: `${formatMs(s.wallMs)} ms${tps === null ? "" : ` · ${tps.toFixed(1)} tok/s`}`,
      showarrow: false,
      xanchor: "left",
      xshift: 4,
      font: { size: 11, color: "#555" },
    });
  });
  const weights = weightsOf(t.memory);
  const total = t.totalMs ?? t.stages.filter((s) => !s.interleavedWith).reduce((a, s) => a + s.wallMs, 0);
  const data = barTraces(traces);
  const layout: Record<string, unknown> = {
    title: { text: options.title ?? `${escapeHtml(t.kind)} timeline · ${formatMs(total)} ms`, x: 0, xanchor: "left" },
    barmode: "overlay",
    bargap: 0.3,
    height: Math.max(200, 110 + 34 * t.stages.length),
    margin: { l: 150, r: 20, t: 60, b: 45 },
    font: FONT,
    paper_bgcolor: "#ffffff",
    plot_bgcolor: "#ffffff",
    hovermode: "closest",
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom", title: { text: "device" } },
    xaxis: {
      title: { text: "ms from the start of the call" },
      range: [0, end * 1.22],
      domain: weights.length ? [0, 0.74] : [0, 1],
      zeroline: false,
      gridcolor: "#eeeeee",
    },
    yaxis: { type: "category", categoryorder: "array", categoryarray: labels, autorange: "reversed", automargin: true },
    annotations,
  };
  // events (context shifts, skipped devices, mixed placements): a dashed line at their time
  const events = t.events ?? [];
  if (events.length) {
    layout.shapes = events.map((e) => ({
      type: "line",
      xref: "x",
      yref: "paper",
      x0: e.atMs,
      x1: e.atMs,
      y0: 0,
      y1: 1,
      line: { color: "#8e24aa", width: 1, dash: "dot" },
    }));
    data.push({
      type: "scatter",
      mode: "markers",
      name: "events",
      x: events.map((e) => e.atMs),
      y: events.map(() => labels[0]),
      marker: { symbol: "triangle-down", size: 9, color: "#8e24aa" },
      hovertext: events.map((e) => e.what),
      hoverinfo: "text",
    });
  }
  if (weights.length) {
    data.push({
      type: "bar",
      orientation: "h",
      name: "weights",
      showlegend: false,
      x: weights.map(([, b]) => b / 2 ** 20),
      y: weights.map(([d]) => d),
      xaxis: "x2",
      yaxis: "y2",
      marker: { color: weights.map(([d]) => deviceColor(d)) },
      hovertemplate: "%{y}: %{x:.1f} MiB of weights<extra></extra>",
    });
    layout.xaxis2 = { domain: [0.82, 1], anchor: "y2", title: { text: "weights, MiB" }, gridcolor: "#eeeeee" };
    layout.yaxis2 = { anchor: "x2", type: "category", automargin: true, autorange: "reversed" };
  }
  return { data, layout, config: CONFIG };
}

const STAGE_COLUMNS: Column<Stage>[] = [
  { label: "stage", text: stageLabel },
  { label: "start ms", text: (s) => s.startMs.toFixed(1), numeric: true },
  { label: "wall ms", text: (s) => formatMs(s.wallMs), numeric: true },
  { label: "tokens", text: (s) => String(s.tokens), numeric: true },
  { label: "tok/s", text: (s) => tokensPerSecond(s)?.toFixed(1) ?? "", numeric: true },
  {
    label: "devices (heavy ops / nodes)",
    text: devicesText,
    html: (s) =>
      stageSegments(s).map((seg) => {
        const p = s.devices?.[seg.device];
        return `${swatch(seg.device)}${escapeHtml(seg.device)}${p ? ` ${p.heavy}/${p.nodes}` : ""}`;
      }).join(" &nbsp;"),
  },
];

function timelineText(t: TimelineLike): string {
  const fn = (t as { toString?: () => string }).toString;
  if (fn && fn !== Object.prototype.toString) return fn.call(t);
  return `${t.kind} timeline\n${textTable(STAGE_COLUMNS, t.stages)}`;
}

function timelineHtml(t: TimelineLike): string {
  const total = t.totalMs ?? t.stages.filter((s) => !s.interleavedWith).reduce((a, s) => a + s.wallMs, 0);
  let html = htmlTable(STAGE_COLUMNS, t.stages, `${t.kind} timeline, ${formatMs(total)} ms`);
  if (t.events?.length) {
    html += `<ul class="loupe-events">${
      t.events.map((e) => `<li>${formatMs(e.atMs)} ms: ${escapeHtml(e.what)}</li>`).join("")
    }</ul>`;
  }
  const weights = weightsOf(t.memory);
  if (weights.length) {
    html += `<div class="loupe-note">weights: ${
      weights.map(([d, b]) => `${swatch(d)}${escapeHtml(d)} ${formatBytes(b)}`).join(", ")
    }</div>`;
  }
  return html;
}

function placementSummary(t: TimelineLike): string {
  const devs = [...new Set(t.stages.flatMap((s) => stageSegments(s).map((g) => g.device)))];
  return devs.filter((d) => d !== "host").join(", ") || "host";
}

/** The rich view of a timeline: its table, its text form and its waterfall. */
export function timelineView(t: TimelineLike): View {
  return {
    text: timelineText(t),
    html: timelineHtml(t),
    figure: timelineFigure(t),
    summary: `${t.kind} timeline, ${formatMs(totalOf(t))} ms on ${placementSummary(t)}`,
  };
}

// ---------------------------------------------------------------------------------------------
// Comparisons

/** One run of a comparison. */
export interface Run {
  /** Its label, e.g. "projector on CPU". */
  label: string;
  /** Its timeline. */
  timeline: TimelineLike;
}

/** Runs to compare: `{ label: timeline or result }`, or an array of `[label, …]` pairs or runs. */
export type RunsInput =
  | Record<string, TimelineLike | { timeline: TimelineLike }>
  | Array<Run | [string, TimelineLike | { timeline: TimelineLike }]>;

function toRuns(input: RunsInput): Run[] {
  const timelineOf = (v: TimelineLike | { timeline: TimelineLike }): TimelineLike =>
    "stages" in v ? v : (v as { timeline: TimelineLike }).timeline;
  const pairs: Array<[string, TimelineLike | { timeline: TimelineLike }]> = Array.isArray(input)
    ? input.map((r) => (Array.isArray(r) ? r : [r.label, r.timeline]))
    : Object.entries(input);
  const seen = new Map<string, number>();
  return pairs.map(([label, v]) => {
    const n = (seen.get(label) ?? 0) + 1;
    seen.set(label, n);
    const timeline = timelineOf(v);
    if (!timeline || !Array.isArray(timeline.stages)) {
      throw new TypeError(`Cannot compare run "${label}": it is neither a timeline nor a result with one`);
    }
    return { label: n === 1 ? label : `${label} #${n}`, timeline };
  });
}

function totalOf(t: TimelineLike): number {
  return t.totalMs ?? t.stages.filter((s) => !s.interleavedWith).reduce((a, s) => a + s.wallMs, 0);
}

/**
 * Several runs side by side: one row per run on a shared time axis, each stage a segment
 * coloured by the device that ran it (split when mixed), labelled with the stage name; the
 * total at the end of each row. A stage that moved from GPU to CPU shows as a long grey bar.
 */
export function comparisonFigure(input: RunsInput, options: { title?: string } = {}): PlotlyFigure {
  const runs = toRuns(input);
  const end = Math.max(1e-3, ...runs.flatMap((r) => r.timeline.stages.map((s) => s.startMs + s.wallMs)));
  const minWidth = end * 0.003;
  const traces = new Map<string, BarTrace>();
  const annotations: Array<Record<string, unknown>> = [];
  for (const run of runs) {
    for (const s of run.timeline.stages) {
      if (s.interleavedWith) continue; // its time is inside another stage's bar
      const shown = Math.max(s.wallMs, minWidth);
      let at = s.startMs;
      stageSegments(s).forEach((seg, i) => {
        const tr = trace(traces, seg.device);
        tr.x.push(shown * seg.share);
        tr.base.push(at);
        tr.y.push(run.label);
        tr.text.push(i === 0 ? s.name : "");
        tr.hovertext.push(stageHover(s, seg, run.label));
        tr.opacity.push(1);
        at += shown * seg.share;
      });
    }
    annotations.push({
      x: Math.max(...run.timeline.stages.map((s) => s.startMs + Math.max(s.wallMs, minWidth))),
      y: run.label,
      xref: "x",
      yref: "y",
      text: `${formatMs(totalOf(run.timeline))} ms`,
      showarrow: false,
      xanchor: "left",
      xshift: 4,
      font: { size: 12, color: "#333" },
    });
  }
  const data = barTraces(traces, {
    textposition: "inside",
    insidetextanchor: "middle",
    textfont: { color: "#ffffff", size: 11 },
  });
  for (const d of data) if (d.name === "host") d.textfont = { color: "#333333", size: 11 };
  return {
    data,
    layout: {
      title: { text: options.title ?? `${runs.length} runs compared`, x: 0, xanchor: "left" },
      barmode: "overlay",
      bargap: 0.35,
      height: Math.max(200, 120 + 48 * runs.length),
      margin: { l: 160, r: 20, t: 60, b: 45 },
      font: FONT,
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      hovermode: "closest",
      uniformtext: { mode: "hide", minsize: 9 },
      legend: { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom", title: { text: "device" } },
      xaxis: { title: { text: "ms from the start of the call" }, range: [0, end * 1.15], gridcolor: "#eeeeee" },
      yaxis: {
        type: "category",
        categoryorder: "array",
        categoryarray: runs.map((r) => r.label),
        autorange: "reversed",
        automargin: true,
      },
      annotations,
    },
    config: CONFIG,
  };
}

/** Stage-by-run rows of a comparison table. */
function comparisonRows(runs: Run[]): Array<{ stage: string; cells: Array<Stage | undefined> }> {
  const names: string[] = [];
  for (const r of runs) {
    for (const s of r.timeline.stages) if (!names.includes(stageLabel(s))) names.push(stageLabel(s));
  }
  return names.map((stage) => ({
    stage,
    cells: runs.map((r) => r.timeline.stages.find((s) => stageLabel(s) === stage)),
  }));
}

/** The rich view of a comparison: a stage-by-run table and the comparison plot. */
export function comparisonView(input: RunsInput, options: { title?: string } = {}): View {
  const runs = toRuns(input);
  const rows = comparisonRows(runs);
  const cell = (s: Stage | undefined) => (s ? `${formatMs(s.wallMs)} ms ${devicesText(s)}` : "");
  const columns: Column<(typeof rows)[number]>[] = [
    { label: "stage", text: (r) => r.stage },
    ...runs.map((run, i): Column<(typeof rows)[number]> => ({
      label: run.label,
      text: (r) => cell(r.cells[i]),
      html: (r) => {
        const s = r.cells[i];
        if (!s) return "";
        const segs = stageSegments(s).map((g) => `${swatch(g.device)}${escapeHtml(g.device)}`).join(" ");
        return `${formatMs(s.wallMs)} ms &nbsp;${segs}`;
      },
    })),
  ];
  const first = totalOf(runs[0]?.timeline ?? { kind: "", stages: [] });
  const totalLine = runs
    .map((r) => {
      const t = totalOf(r.timeline);
      return `${r.label}: ${formatMs(t)} ms${
        r === runs[0] || first <= 0 ? "" : ` (${(t / first).toFixed(2)}× ${runs[0].label})`
      }`;
    })
    .join("; ");
  return {
    summary: `${options.title ?? "comparison"}: ${totalLine}`,
    text: `${options.title ?? "comparison"}\n${textTable(columns, rows)}\ntotal: ${totalLine}`,
    html: htmlTable(columns, rows, options.title ?? "comparison") +
      `<div class="loupe-note">total: ${escapeHtml(totalLine)}</div>`,
    figure: comparisonFigure(runs, options),
  };
}

/** A comparison of several runs that displays itself (table and plot) in a notebook. */
export class Comparison implements Displayable {
  /** The runs, in order. */
  readonly runs: Run[];
  /** Plot title. */
  readonly title?: string;

  /** Use {@linkcode compare}. */
  constructor(input: RunsInput, title?: string) {
    this.runs = toRuns(input);
    this.title = title;
  }

  /** The rich view. */
  view(): View {
    return comparisonView(this.runs, { title: this.title });
  }

  /** The plotly figure. */
  figure(): PlotlyFigure {
    return comparisonFigure(this.runs, { title: this.title });
  }

  /** The stage-by-run table as text. */
  toString(): string {
    return this.view().text;
  }

  /** Rich display in Jupyter. */
  [DISPLAY](): Promise<MimeBundle> {
    return displayBundle(this);
  }
}

/**
 * Compares runs (timelines, or results that carry one) in one plot and one table, e.g. the
 * same call with the model on the CPU and on the GPU.
 *
 * @example
 * ```ts
 * compare({ "CPU": cpu.timeline, "GPU": gpu.timeline }); // last expression of a cell
 * ```
 */
export function compare(runs: RunsInput, options: { title?: string } = {}): Comparison {
  return new Comparison(runs, options.title);
}

// ---------------------------------------------------------------------------------------------
// Results, models, devices, backends

/** The rich view of a generation result: its text, why it stopped, and its timeline. */
export function resultView(
  r: Pick<GenerateResult, "text" | "tokens" | "stopReason" | "timeline"> & {
    promptTokens?: number[];
  },
): View {
  const gen = r.timeline.stages.find((s) => s.name === "generation");
  const tps = gen ? tokensPerSecond(gen) : null;
  const facts = [
    `${r.promptTokens?.length ?? "?"} prompt tokens`,
    `${r.tokens.length} generated`,
    `stop: ${r.stopReason}`,
    ...(tps === null ? [] : [`${tps.toFixed(1)} tok/s`]),
  ].join(" · ");
  const tv = timelineView(r.timeline);
  const head = r.text.length > 60 ? `${r.text.slice(0, 59)}…` : r.text;
  return {
    summary: `${JSON.stringify(head)} · ${facts} · ${tv.summary}`,
    text: `${r.text}\n[${facts}]\n\n${tv.text}`,
    html: `<pre class="loupe-text">${escapeHtml(r.text)}</pre><div class="loupe-note">${escapeHtml(facts)}</div>${
      tv.html ?? ""
    }`,
    figure: tv.figure,
  };
}

/** Memory per device as stacked bars: weights, KV cache and compute buffers in the device's colour. */
export function memoryFigure(memory: DeviceMemory[], options: { title?: string } = {}): PlotlyFigure {
  const devices = [...new Set(memory.map((m) => m.device))];
  const sum = (d: string, k: "model" | "context" | "compute") =>
    memory.filter((m) => m.device === d).reduce((a, m) => a + m[k], 0) / 2 ** 20;
  const kinds: Array<["model" | "context" | "compute", string, string]> = [
    ["model", "weights", ""],
    ["context", "KV cache", "/"],
    ["compute", "compute buffers", "."],
  ];
  return {
    data: kinds.map(([k, name, pattern]) => ({
      type: "bar",
      orientation: "h",
      name,
      y: devices,
      x: devices.map((d) => sum(d, k)),
      marker: {
        color: devices.map(deviceColor),
        opacity: k === "model" ? 1 : 0.6,
        pattern: { shape: pattern, fgcolor: "#ffffff" },
        line: { color: "#ffffff", width: 1 },
      },
      hovertemplate: `%{y}: %{x:.1f} MiB of ${name}<extra></extra>`,
    })),
    layout: {
      title: { text: options.title ?? "memory per device", x: 0, xanchor: "left" },
      barmode: "stack",
      height: Math.max(180, 120 + 40 * devices.length),
      margin: { l: 100, r: 20, t: 60, b: 45 },
      font: FONT,
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      legend: { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom" },
      xaxis: { title: { text: "MiB" }, gridcolor: "#eeeeee" },
      yaxis: { type: "category", automargin: true, autorange: "reversed" },
    },
    config: CONFIG,
  };
}

const MEMORY_COLUMNS: Column<DeviceMemory>[] = [
  { label: "device", text: (m) => m.device, html: (m) => `${swatch(m.device)}${escapeHtml(m.device)}` },
  { label: "buffer", text: (m) => m.buffer },
  { label: "weights", text: (m) => formatBytes(m.model), numeric: true },
  { label: "KV cache", text: (m) => formatBytes(m.context), numeric: true },
  { label: "compute", text: (m) => formatBytes(m.compute), numeric: true },
];

/** A two-column table of facts: name, value (models, projectors, sessions). */
const FACT_COLUMNS: Column<[string, string]>[] = [{ label: "", text: (f) => f[0] }, { label: "", text: (f) => f[1] }];

/** What the model views read of a loaded model (a `Model`, an embedder, or anything shaped alike). */
export interface ModelLike {
  /** The file it came from. */
  path: string;
  /** What the engine says about it; fields that are missing are left out. */
  info: { desc: string; [key: string]: unknown };
  /** The load's timeline. */
  loadTimeline: TimelineLike;
  /** Whether it was closed. */
  closed?: boolean;
}

/** The rich view of a loaded model: what it is, where its memory went, and how long loading took. */
export function modelView(m: ModelLike | Pick<Model, "path" | "info" | "loadTimeline" | "closed">): View {
  const i = m.info as unknown as Record<string, any>;
  const has = (...keys: string[]) => keys.every((k) => i[k] !== undefined && i[k] !== null);
  const facts: Array<[string, string]> = [["model", String(i.desc)], ["file", m.path]];
  if (has("arch")) facts.push(["architecture", i.arch]);
  if (has("nParams")) facts.push(["parameters", `${(i.nParams / 1e6).toFixed(1)} M`]);
  if (has("size")) facts.push(["size", formatBytes(i.size)]);
  if (has("nLayer")) facts.push(["layers", `${i.nLayer}${has("gpuLayers") ? ` (on GPU: ${i.gpuLayers})` : ""}`]);
  if (has("nCtx")) {
    facts.push(["context", `${i.nCtx} tokens${has("nCtxTrain") ? ` (trained for ${i.nCtxTrain})` : ""}`]);
  } else if (has("nCtxTrain")) facts.push(["training context", `${i.nCtxTrain} tokens`]);
  if (has("nVocab")) facts.push(["vocabulary", String(i.nVocab)]);
  if (has("pooling")) facts.push(["pooling", String(i.pooling)]);
  if (has("dimensions")) facts.push(["dimensions", String(i.dimensions)]);
  if ("chatTemplate" in i) facts.push(["chat template", i.chatTemplate ? "yes" : "no"]);
  const load = m.loadTimeline.stages.find((s) => s.name === "load");
  if (has("loadUs")) facts.push(["load", `${formatMs(i.loadUs / 1000)} ms`]);
  else if (load) facts.push(["load", `${formatMs(load.wallMs)} ms`]);
  if (m.closed) facts.push(["state", "closed"]);
  const memory: DeviceMemory[] = Array.isArray(i.memory) ? i.memory : m.loadTimeline.memory ?? [];
  const text = `${i.desc} — ${m.path}\n${textTable(FACT_COLUMNS, facts)}${
    memory.length ? `\n\n${textTable(MEMORY_COLUMNS, memory)}` : ""
  }`;
  const html = htmlTable(FACT_COLUMNS, facts, "model") +
    (memory.length ? htmlTable(MEMORY_COLUMNS, memory, "memory per device") : "");
  return {
    text,
    html,
    figure: memory.length ? memoryFigure(memory) : undefined,
    summary: `${i.desc} (${m.path.split("/").pop()})${m.closed ? ", closed" : ""}`,
  };
}

const DEVICE_COLUMNS: Column<Device>[] = [
  { label: "name", text: (d) => d.name, html: (d) => `${swatch(d.name)}${escapeHtml(d.name)}` },
  { label: "type", text: (d) => d.type + (d.software ? " (software)" : "") },
  { label: "backend", text: (d) => d.backend },
  { label: "description", text: (d) => d.description },
  { label: "memory", text: (d) => formatBytes(d.memoryTotal), numeric: true },
  { label: "free", text: (d) => formatBytes(d.memoryFree), numeric: true },
];

/** The rich view of `devices()`: a table and the memory of each device (used and free). */
export function devicesView(list: Device[]): View {
  const names = list.map((d) => d.name);
  const used = list.map((d) => Math.max(0, d.memoryTotal - d.memoryFree) / 2 ** 30);
  const free = list.map((d) => d.memoryFree / 2 ** 30);
  const figure: PlotlyFigure = {
    data: [
      {
        type: "bar",
        orientation: "h",
        name: "used",
        y: names,
        x: used,
        marker: { color: names.map(deviceColor) },
        hovertemplate: "%{y}: %{x:.2f} GiB used<extra></extra>",
      },
      {
        type: "bar",
        orientation: "h",
        name: "free",
        y: names,
        x: free,
        marker: { color: names.map(deviceColor), opacity: 0.35 },
        hovertemplate: "%{y}: %{x:.2f} GiB free<extra></extra>",
      },
    ],
    layout: {
      title: { text: "device memory", x: 0, xanchor: "left" },
      barmode: "stack",
      height: Math.max(170, 110 + 36 * list.length),
      margin: { l: 100, r: 20, t: 55, b: 45 },
      font: FONT,
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      legend: { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom" },
      xaxis: { title: { text: "GiB" }, gridcolor: "#eeeeee" },
      yaxis: { type: "category", automargin: true, autorange: "reversed" },
    },
    config: CONFIG,
  };
  return {
    summary: `${list.length} device${list.length === 1 ? "" : "s"}: ${list.map((d) => d.name).join(", ")}`,
    text: textTable(DEVICE_COLUMNS, list),
    html: htmlTable(DEVICE_COLUMNS, list, `${list.length} device${list.length === 1 ? "" : "s"}`),
    figure: list.length ? figure : undefined,
  };
}

const BACKEND_COLUMNS: Column<BackendReport>[] = [
  { label: "backend", text: (b) => b.name },
  {
    label: "loaded",
    text: (b) => (b.loaded ? "yes" : "no"),
    html: (
      b,
    ) => (b.loaded
      ? '<span style="color:#2e7d32">&#10003; yes</span>'
      : '<span style="color:#c62828">&#10007; no</span>'),
  },
  { label: "devices", text: (b) => String(b.devices ?? 0), numeric: true },
  { label: "file", text: (b) => (b.file ?? "").split("/").pop() ?? "" },
  { label: "why not", text: (b) => b.reason ?? "" },
];

const LOADED_COLOR = "#2e7d32";
const NOT_LOADED_COLOR = "#c62828";

/**
 * The rich view of `backends()`: which backends loaded, from which file, and why not; the plot
 * shows the devices each backend registered (a backend that did not load is a red stub, with the
 * loader's reason in its hover text).
 */
export function backendsView(list: BackendReport[]): View {
  const names = list.map((b) => b.name);
  const figure: PlotlyFigure = {
    data: [{
      type: "bar",
      orientation: "h",
      name: "devices",
      y: names,
      // a backend without devices still gets a visible stub, so "not loaded" is seen, not missed
      x: list.map((b) => b.loaded ? Math.max(b.devices ?? 0, 0.15) : 0.15),
      marker: { color: list.map((b) => (b.loaded ? LOADED_COLOR : NOT_LOADED_COLOR)) },
      text: list.map((b) => (b.loaded ? `${b.devices ?? 0} device${b.devices === 1 ? "" : "s"}` : "not loaded")),
      textposition: "outside",
      hovertext: list.map((b) =>
        b.loaded
          ? `${b.name}: loaded from ${(b.file ?? "").split("/").pop()}, ${b.devices ?? 0} device(s)`
          : `${b.name}: not loaded: ${b.reason ?? "no reason given"}`
      ),
      hoverinfo: "text",
    }],
    layout: {
      title: { text: "backends (devices registered)", x: 0, xanchor: "left" },
      height: Math.max(170, 110 + 36 * list.length),
      margin: { l: 100, r: 40, t: 55, b: 45 },
      font: FONT,
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      showlegend: false,
      xaxis: { title: { text: "devices" }, gridcolor: "#eeeeee", dtick: 1, rangemode: "tozero" },
      yaxis: { type: "category", automargin: true, autorange: "reversed" },
    },
    config: CONFIG,
  };
  return {
    summary: `backends: ${list.map((b) => `${b.name} (${b.loaded ? "loaded" : "not loaded"})`).join(", ")}`,
    text: textTable(BACKEND_COLUMNS, list),
    html: htmlTable(BACKEND_COLUMNS, list, "backends"),
    figure: list.length ? figure : undefined,
  };
}

/** What {@linkcode projectorView} reads of a loaded projector. */
export interface ProjectorLike {
  /** The file it came from. */
  path: string;
  /** The engine's description (type, device, image size, …). */
  info: {
    projectorType: string;
    device: string;
    gpu: boolean;
    nEmbd: number;
    imageSize: number;
    patchSize: number;
    threads: number;
    loadUs: number;
  };
  /** "projector load" and the measured "projector warm-up". */
  loadTimeline: TimelineLike;
  /** Devices skipped for images and a mixed warm-up placement, in sentences. */
  warnings: string[];
  /** The encoder's device requirement. */
  requireDevice?: string;
  /** Whether it was closed. */
  closed?: boolean;
}

/**
 * The rich view of a projector (`model.loadProjector`): what it is, the device it was given,
 * its warnings (devices skipped and why, a mixed placement), and the load timeline, whose warm-up stage shows where the image
 * encoder's graph actually ran.
 */
export function projectorView(p: ProjectorLike): View {
  const i = p.info;
  const facts: Array<[string, string]> = [
    ["projector", `${i.projectorType} (${p.path.split("/").pop()})`],
    ["device", `${i.device}${i.gpu ? "" : " (GPU not allowed)"}`],
    ["image", `${i.imageSize}×${i.imageSize} px, patches of ${i.patchSize} px`],
    ["embedding width", String(i.nEmbd)],
    ["CPU threads", String(i.threads)],
    ["load", `${formatMs(i.loadUs / 1000)} ms`],
  ];
  if (p.requireDevice) facts.push(["requireDevice", p.requireDevice]);
  for (const w of p.warnings) facts.push(["warning", w]);
  if (p.closed) facts.push(["state", "closed"]);
  const tv = timelineView(p.loadTimeline);
  return {
    summary: `projector ${i.projectorType} on ${i.device} (${p.path.split("/").pop()})${p.closed ? ", closed" : ""}`,
    text: `${textTable(FACT_COLUMNS, facts)}\n\n${tv.text}`,
    html: htmlTable(FACT_COLUMNS, facts, "projector") + (tv.html ?? ""),
    figure: tv.figure,
  };
}

/** What {@linkcode sessionView} reads of a session. */
export interface SessionLike {
  /** The model's file and description. */
  model: { path: string; info: { desc: string } };
  contextSize: number;
  contextShift: boolean;
  nKeep: number | null;
  systemPrompt: string | null;
  /** Tokens held (KV cache, then the pending one). */
  tokens: number[];
  /** The chat so far. */
  messages: Array<{ role: string }>;
  closed?: boolean;
}

/** The rich view of a session: how full its context is, what a shift keeps, the chat so far. */
export function sessionView(s: SessionLike): View {
  const used = s.tokens.length;
  const facts: Array<[string, string]> = [
    ["model", `${s.model.info.desc} (${s.model.path.split("/").pop()})`],
    ["context", `${used} of ${s.contextSize} tokens (${((100 * used) / s.contextSize).toFixed(1)} %)`],
    [
      "when full",
      !s.contextShift
        ? "stop (contextFull)"
        : `shift, keeping ${s.nKeep === null ? "the system prompt" : `the first ${s.nKeep} tokens`}`,
    ],
    ["messages", String(s.messages.length)],
  ];
  if (s.systemPrompt !== null) facts.push(["system prompt", s.systemPrompt]);
  if (s.closed) facts.push(["state", "closed"]);
  return {
    summary: `session: ${used}/${s.contextSize} tokens, ${s.messages.length} messages${s.closed ? ", closed" : ""}`,
    text: textTable(FACT_COLUMNS, facts),
    html: htmlTable(FACT_COLUMNS, facts, "session"),
  };
}

// ---------------------------------------------------------------------------------------------
// Embeddings, token embeddings and rerank scores: arrays that carry a timeline

/** An array of results with the call's timeline (the shape of embeddings and rerank scores). */
export type MeasuredArray<T> = T[] & { timeline: TimelineLike; tokenCounts?: number[]; truncated?: boolean[] };

function norm(v: ArrayLike<number>): number {
  let s = 0;
  for (let k = 0; k < v.length; k++) s += v[k] * v[k];
  return Math.sqrt(s);
}

function head(v: ArrayLike<number>, n = 4): string {
  return Array.from({ length: Math.min(n, v.length) }, (_, k) => v[k].toFixed(4)).join(", ") +
    (v.length > n ? ", …" : "");
}

/**
 * The rich view of vectors (one per text), per-token vectors, or scores that carry a timeline:
 * one row per input (tokens, dimensions, norm, first values, or the score) and the call's waterfall.
 */
export function measuredArrayView(values: MeasuredArray<unknown>): View {
  type Row = { i: number; v: unknown };
  const rows: Row[] = values.map((v, i) => ({ i, v }));
  const tokens = (r: Row) => String(values.tokenCounts?.[r.i] ?? "") + (values.truncated?.[r.i] ? " (cut)" : "");
  let columns: Column<Row>[];
  let what: string;
  if (values.every((v) => typeof v === "number")) {
    what = `${values.length} scores`;
    columns = [
      { label: "#", text: (r) => String(r.i), numeric: true },
      { label: "tokens", text: tokens, numeric: true },
      { label: "score", text: (r) => (r.v as number).toFixed(4), numeric: true },
    ];
  } else if (values.every((v) => Array.isArray(v))) {
    what = `${values.length} texts, a vector per token`;
    columns = [
      { label: "#", text: (r) => String(r.i), numeric: true },
      { label: "tokens", text: (r) => String((r.v as unknown[]).length), numeric: true },
      { label: "dimensions", text: (r) => String((r.v as ArrayLike<number>[])[0]?.length ?? 0), numeric: true },
    ];
  } else {
    what = `${values.length} vectors`;
    columns = [
      { label: "#", text: (r) => String(r.i), numeric: true },
      { label: "tokens", text: tokens, numeric: true },
      { label: "dimensions", text: (r) => String((r.v as ArrayLike<number>).length), numeric: true },
      { label: "norm", text: (r) => norm(r.v as ArrayLike<number>).toFixed(4), numeric: true },
      { label: "first values", text: (r) => head(r.v as ArrayLike<number>) },
    ];
  }
  const tv = timelineView(values.timeline);
  return {
    text: `${what}\n${textTable(columns, rows)}\n\n${tv.text}`,
    html: htmlTable(columns, rows, what) + (tv.html ?? ""),
    figure: tv.figure,
  };
}

// ---------------------------------------------------------------------------------------------
// Similarity heat maps (embeddings)

/** Cosine similarity of every pair of vectors. */
export function cosineSimilarity(vectors: ArrayLike<number>[]): number[][] {
  const norms = vectors.map((v) => Math.sqrt(Array.from(v).reduce((a, x) => a + x * x, 0)));
  return vectors.map((a, i) =>
    vectors.map((b, j) => {
      if (a.length !== b.length) {
        throw new TypeError(`Cannot compare vectors ${i} and ${j}: lengths ${a.length} and ${b.length} differ`);
      }
      let dot = 0;
      for (let k = 0; k < a.length; k++) dot += a[k] * b[k];
      return norms[i] && norms[j] ? dot / (norms[i] * norms[j]) : 0;
    })
  );
}

/** A heat map of a square matrix with labelled rows and columns (values written in the cells when few). */
export function heatmapFigure(matrix: number[][], labels: string[], options: { title?: string } = {}): PlotlyFigure {
  const short = labels.map((l) => (l.length > 28 ? l.slice(0, 27) + "…" : l));
  const n = labels.length;
  return {
    data: [{
      type: "heatmap",
      z: matrix,
      x: short,
      y: short,
      zmin: Math.min(0, ...matrix.flat()),
      zmax: 1,
      colorscale: "Viridis",
      hovertemplate: "%{y}<br>%{x}<br>%{z:.3f}<extra></extra>",
      ...(n <= 12 ? { texttemplate: "%{z:.2f}", textfont: { size: 11 } } : {}),
    }],
    layout: {
      title: { text: options.title ?? "cosine similarity", x: 0, xanchor: "left" },
      height: Math.min(900, 160 + 44 * n),
      margin: { l: 160, r: 20, t: 50, b: 120 },
      font: FONT,
      paper_bgcolor: "#ffffff",
      xaxis: { tickangle: -35, automargin: true },
      yaxis: { autorange: "reversed", automargin: true },
    },
    config: CONFIG,
  };
}

/**
 * A similarity matrix of labelled vectors (e.g. embeddings) as a table and a heat map.
 *
 * @example
 * ```ts
 * similarityMap(["a cat", "a dog"], [embA, embB]); // last expression of a cell
 * ```
 */
export function similarityMap(
  labels: string[],
  vectors: ArrayLike<number>[],
  options: { title?: string } = {},
): Displayable & { matrix: number[][]; toString(): string } {
  if (labels.length !== vectors.length) {
    throw new TypeError(`Cannot map similarity: ${labels.length} labels for ${vectors.length} vectors`);
  }
  const matrix = cosineSimilarity(vectors);
  const rows = labels.map((l, i) => ({ l, v: matrix[i] }));
  const columns: Column<(typeof rows)[number]>[] = [
    { label: "", text: (r) => r.l },
    ...labels.map((_, j): Column<(typeof rows)[number]> => ({
      label: String(j + 1),
      text: (r) => r.v[j].toFixed(3),
      numeric: true,
    })),
  ];
  const view: View = {
    summary: `${options.title ?? "cosine similarity"} of ${labels.length} vectors`,
    text: textTable(columns, rows),
    html: htmlTable(columns, rows, options.title ?? "cosine similarity"),
    figure: heatmapFigure(matrix, labels, options),
  };
  const out = { matrix, toString: () => view.text } as { matrix: number[][]; toString(): string } & Displayable;
  return attachDisplay(out, () => view);
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
 * classic notebook), and skipped when the page already has Plotly.
 */
export async function plotlyLibraryHtml(): Promise<string> {
  const { plotlyScript, PLOTLY_VERSION } = await import("./plotly.ts");
  const src = (await plotlyScript()).replace(/<\/(script)/gi, "<\\/$1");
  return `<script type="text/javascript">/* plotly.js ${PLOTLY_VERSION}, inlined by loupe */\n` +
    `if (!window.Plotly) { (function (define, module, exports, require) {\n${src}\n}).call(window); }\n</script>`;
}

/**
 * A plot as HTML: a `<div>` and the script that draws it, with plotly.js as the display
 * options say (inlined by default, or loaded from a URL with the AMD loader held off).
 */
export async function plotHtml(figure: PlotlyFigure, opts: Partial<DisplayOptions> = {}): Promise<string> {
  const mode = opts.plotly ?? options.plotly;
  const id = plotId();
  const height = Number((figure.layout as { height?: number }).height ?? 320);
  let library = "";
  let url = "";
  if (mode === "inline") {
    try {
      library = await plotlyLibraryHtml();
    } catch (e) {
      return `<div class="loupe-note">The plot is not shown: ${escapeHtml((e as Error).message)}</div>`;
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
  var url = ${JSON.stringify(url)};
  if (!url) { el.textContent = "plotly.js is not on this page"; return; }
  var waiting = window.__loupePlotlyWaiting = window.__loupePlotlyWaiting || [];
  waiting.push(draw);
  if (waiting.length > 1) return;
  var amd = window.define, mod = window.module;
  window.define = undefined; window.module = undefined;
  var s = document.createElement("script");
  s.src = url;
  s.onload = function () {
    window.define = amd; window.module = mod;
    var all = window.__loupePlotlyWaiting; window.__loupePlotlyWaiting = [];
    all.forEach(function (f) { f(); });
  };
  s.onerror = function () {
    window.define = amd; window.module = mod;
    window.__loupePlotlyWaiting = [];
    el.textContent = "Cannot load plotly.js from " + url;
  };
  document.head.appendChild(s);
})();</script>`;
  return `<div id="${id}" class="loupe-plot" style="width:100%;height:${height}px"></div>\n${library}\n${draw}`;
}

/** Turns a view into a MIME bundle: `text/plain`, `text/html` (tables + plot) and the plotly figure. */
export async function toBundle(view: View, opts: Partial<DisplayOptions> = {}): Promise<MimeBundle> {
  const bundle: MimeBundle = { "text/plain": view.text };
  const plot = view.figure ? await plotHtml(view.figure, opts) : "";
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

/**
 * The key of an object's own view ({@linkcode View}): classes that are not plain data (a
 * projector, a session) implement it, and {@linkcode viewOf} uses it before any shape test.
 */
export const VIEW: unique symbol = Symbol.for("loupe.view");

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
  if (v !== null && typeof v === "object" && typeof v[VIEW] === "function") return v[VIEW]();
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
export async function bundleOf(value: unknown, opts: Partial<DisplayOptions> = {}): Promise<MimeBundle> {
  const view = viewOf(value);
  if (view) return await toBundle(view, opts);
  const own = (value as any)?.[DISPLAY];
  if (typeof own === "function") return await own.call(value);
  return { "text/plain": inspectText(value) };
}

/**
 * What a loupe object's `[Symbol.for("Jupyter.display")]` method returns (it never calls that
 * method itself). In a plain script: its rich bundle. Inside the `deno jupyter` kernel the rich
 * bundle goes out as a `display_data` message whose delivery is confirmed before the cell may
 * end (see src/jupyter.ts: Deno's kernel can otherwise publish a large output after the cell's
 * end, where front ends drop it), and the returned `execute_result` is one line of text.
 */
export async function displayBundle(value: unknown): Promise<MimeBundle> {
  const view = viewOf(value) ?? { text: inspectText(value) };
  const bundle = await toBundle(view);
  const api = kernelApi();
  if (!api) return bundle;
  await publish(api, "display_data", { data: bundle, metadata: {}, transient: {} }, { confirm: true });
  return { "text/plain": view.summary ?? view.text.split("\n")[0] };
}

/**
 * Gives a plain object or array a rich display (a non-enumerable `[Symbol.for("Jupyter.display")]`),
 * so it shows as a table and plot when it is the last expression of a cell. `view` defaults to
 * {@linkcode viewOf}. Returns the same value.
 */
export function attachDisplay<T extends object>(value: T, view?: () => View): T {
  if (view) Object.defineProperty(value, VIEW, { value: view, configurable: true });
  Object.defineProperty(value, DISPLAY, { value: () => displayBundle(value), configurable: true });
  return value;
}

/**
 * Shows a value now (not only as the last expression of a cell): in a notebook as rich output
 * (table and plot; returns once the output has gone out), in a script as its text form on
 * stdout. `id` names the output; `update: true` replaces the earlier output with that id.
 */
export async function display(value: unknown, opts: { id?: string; update?: boolean } = {}): Promise<void> {
  const bundle = await bundleOf(value);
  const api = kernelApi();
  if (!api) {
    console.log(bundle["text/plain"]);
    return;
  }
  const transient = opts.id ? { display_id: opts.id } : {};
  const type = opts.update ? "update_display_data" : "display_data";
  await publish(api, type, { data: bundle, metadata: {}, transient }, { confirm: true });
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
