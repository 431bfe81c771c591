/**
 * Comparisons: several runs (timelines, or results that carry one) in one table and one plot.
 *
 * @module
 */
import type { Stage } from "../timeline/timeline.ts";
import { LoupeError } from "../util/errors.ts";
import { DISPLAY, displayOf, type MimeBundle } from "../util/presenter.ts";
import {
  type BarTrace,
  barTraces,
  CONFIG,
  devicesText,
  FONT,
  stageHover,
  stageLabel,
  stageSegments,
  type TimelineLike,
  totalOf,
  trace,
} from "./timeline_view.ts";
import {
  type Column,
  type Displayable,
  escapeHtml,
  formatMs,
  htmlTable,
  type PlotlyFigure,
  swatch,
  textTable,
  type View,
} from "./view.ts";

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
      throw new LoupeError(
        "INVALID_ARGUMENT",
        `Cannot compare run "${label}": it is neither a timeline nor a result with one`,
      );
    }
    return { label: n === 1 ? label : `${label} #${n}`, timeline };
  });
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
      x: run.timeline.stages.reduce((x, s) => Math.max(x, s.startMs + Math.max(s.wallMs, minWidth)), -Infinity),
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
    return displayOf(this);
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
