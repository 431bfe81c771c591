/**
 * Timelines drawn: the stage table and the waterfall plot, coloured by the device that ran each
 * stage's heavy ops.
 *
 * @module
 */
import type { DeviceMemory, Stage, Timeline, TimelineEvent } from "../timeline/timeline.ts";
import {
  type Column,
  deviceColor,
  escapeHtml,
  formatBytes,
  formatMs,
  htmlTable,
  type PlotlyFigure,
  swatch,
  textTable,
  type View,
} from "./view.ts";

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

export function stageLabel(stage: Stage): string {
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

export function tokensPerSecond(s: Stage): number | null {
  return s.tokensPerSecond ?? (s.tokens > 0 && s.wallMs > 0 ? s.tokens / (s.wallMs / 1000) : null);
}

export function devicesText(s: Stage): string {
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

export interface BarTrace {
  x: number[];
  base: number[];
  y: string[];
  hovertext: string[];
  text: string[];
  opacity: number[];
}

export function barTraces(
  traces: Map<string, BarTrace>,
  extra: Record<string, unknown> = {},
): Array<Record<string, unknown>> {
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

export function trace(traces: Map<string, BarTrace>, device: string): BarTrace {
  let t = traces.get(device);
  if (!t) traces.set(device, t = { x: [], base: [], y: [], hovertext: [], text: [], opacity: [] });
  return t;
}

export const FONT = { family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size: 12, color: "#333" };
export const CONFIG = { responsive: true, displaylogo: false, displayModeBar: "hover" };

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

/** The total wall time of a timeline: its own total, else the sum of its non-interleaved stages. */
export function totalOf(t: TimelineLike): number {
  return t.totalMs ?? t.stages.filter((s) => !s.interleavedWith).reduce((a, s) => a + s.wallMs, 0);
}
