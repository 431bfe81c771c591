/**
 * The view of a running server (src/serve/): its slots and queue, the requests it answered and
 * where their batches ran, and throughput over time from the batcher's decode steps. As the last
 * expression of a cell it is live: src/notebook/display.ts redraws it in place while the server
 * runs (see {@linkcode LiveValue} in src/util/presenter.ts).
 *
 * @module
 */
import {
  deviceColor,
  escapeHtml,
  formatMs,
  htmlTable,
  type PlotlyFigure,
  swatch,
  textTable,
  type View,
} from "./view.ts";

/** One answered request, as the view lists it. */
export interface ServedRequest {
  /** The response id (e.g. "chatcmpl-…"). */
  id: string;
  /** The endpoint, e.g. "/v1/chat/completions". */
  endpoint: string;
  /** HTTP status. */
  status: number;
  /** Prompt tokens. */
  promptTokens: number;
  /** Generated tokens. */
  completionTokens: number;
  /** Milliseconds from arrival to the last byte. */
  ms: number;
  /** Devices that ran its heavy ops. */
  devices: string[];
  /** Batches it shared with other requests, and all its batches. */
  sharedSteps?: number;
  /** All its batches. */
  steps?: number;
}

/** What a server reports of itself at one moment. */
export interface ServerSnapshot {
  /** Its base URL. */
  url: string;
  /** The model's description. */
  model: string;
  /** Whether it was closed. */
  closed: boolean;
  /** Milliseconds since it started. */
  uptimeMs: number;
  /** Slots. */
  parallel: number;
  /** Slots with a request. */
  slotsBusy: number;
  /** Requests waiting for a slot. */
  queued: number;
  /** Requests answered (any status). */
  requests: number;
  /** Of them, answered with an error status. */
  errors: number;
  /** Prompt tokens of generation requests. */
  promptTokens: number;
  /** Generated tokens. */
  generatedTokens: number;
  /** Tokens decoded per device that ran the batches' heavy ops. */
  tokensByDevice: Record<string, number>;
  /** Recent decode steps: when (ms since the batcher opened), tokens, requests in the batch. */
  steps: Array<{ atMs: number; tokens: number; slots: number; wallMs: number }>;
  /** The last requests answered, newest last. */
  recent: ServedRequest[];
}

/** A server as the view reads it. */
export interface ServerLike {
  /** What it reports now. */
  snapshot(): ServerSnapshot;
}

const FACTS = [
  { label: "", text: (r: [string, string]) => r[0] },
  { label: "", text: (r: [string, string]) => r[1], html: (r: [string, string]) => r[1] },
];

const REQUEST_COLUMNS = [
  { label: "request", text: (r: ServedRequest) => r.id },
  { label: "endpoint", text: (r: ServedRequest) => r.endpoint },
  { label: "status", text: (r: ServedRequest) => String(r.status), numeric: true },
  { label: "prompt", text: (r: ServedRequest) => String(r.promptTokens), numeric: true },
  { label: "reply", text: (r: ServedRequest) => String(r.completionTokens), numeric: true },
  { label: "ms", text: (r: ServedRequest) => formatMs(r.ms), numeric: true },
  {
    label: "shared batches",
    text: (r: ServedRequest) => r.steps ? `${r.sharedSteps}/${r.steps}` : "",
    numeric: true,
  },
  {
    label: "devices",
    text: (r: ServedRequest) => r.devices.join(", "),
    html: (r: ServedRequest) => r.devices.map((d) => swatch(d) + escapeHtml(d)).join(" "),
  },
];

/** Tokens per second and requests per batch in one-second bins of the decode steps. */
export function throughputSeries(
  steps: ServerSnapshot["steps"],
): { t: number[]; tokensPerSecond: number[]; slots: number[] } {
  const bins = new Map<number, { tokens: number; slots: number; n: number }>();
  for (const s of steps) {
    const k = Math.floor(s.atMs / 1000);
    const b = bins.get(k) ?? { tokens: 0, slots: 0, n: 0 };
    b.tokens += s.tokens;
    b.slots += s.slots;
    b.n++;
    bins.set(k, b);
  }
  const keys = [...bins.keys()].sort((a, b) => a - b);
  return {
    t: keys,
    tokensPerSecond: keys.map((k) => bins.get(k)!.tokens),
    slots: keys.map((k) => bins.get(k)!.slots / bins.get(k)!.n),
  };
}

function throughputFigure(snap: ServerSnapshot): PlotlyFigure | undefined {
  const series = throughputSeries(snap.steps);
  if (series.t.length === 0) return undefined;
  const device = Object.entries(snap.tokensByDevice).sort((a, b) => b[1] - a[1])[0]?.[0] ?? "CPU";
  return {
    data: [
      {
        type: "bar",
        name: "tokens/s (batched)",
        x: series.t,
        y: series.tokensPerSecond,
        marker: { color: deviceColor(device) },
        hovertemplate: "%{y} tokens in second %{x}<extra></extra>",
      },
      {
        type: "scatter",
        mode: "lines+markers",
        name: "requests per batch",
        x: series.t,
        y: series.slots,
        yaxis: "y2",
        line: { color: "#1f77b4" },
        hovertemplate: "%{y:.2f} requests per batch<extra></extra>",
      },
    ],
    layout: {
      title: { text: "throughput over time" },
      height: 260,
      margin: { l: 50, r: 50, t: 40, b: 40 },
      xaxis: { title: { text: "seconds since the server started" } },
      yaxis: { title: { text: "tokens/s" }, rangemode: "tozero" },
      yaxis2: {
        title: { text: "requests per batch" },
        overlaying: "y",
        side: "right",
        rangemode: "tozero",
        range: [0, Math.max(snap.parallel, 1) + 0.5],
      },
      legend: { orientation: "h", y: -0.3 },
    },
    config: { responsive: true, displaylogo: false },
  };
}

/** The rich view of a server: slots, queue, requests, devices, throughput over time. */
export function serverView(s: ServerLike): View {
  const snap = s.snapshot();
  const totalDevTokens = Object.values(snap.tokensByDevice).reduce((a, b) => a + b, 0);
  const devices = Object.entries(snap.tokensByDevice)
    .map(([d, n]) => [d, `${n} tokens (${totalDevTokens ? ((100 * n) / totalDevTokens).toFixed(0) : 0} %)`]);
  const facts: Array<[string, string]> = [
    ["url", escapeHtml(snap.url)],
    ["model", escapeHtml(snap.model)],
    ["state", snap.closed ? "closed" : `running for ${(snap.uptimeMs / 1000).toFixed(0)} s`],
    ["slots busy", `${snap.slotsBusy} of ${snap.parallel}`],
    ["queued", String(snap.queued)],
    ["requests", `${snap.requests} (${snap.errors} errors)`],
    ["tokens", `${snap.promptTokens} prompt, ${snap.generatedTokens} generated`],
    ...devices.map(([d, t]): [string, string] => [`batches on ${escapeHtml(d)}`, `${swatch(d)}${t}`]),
  ];
  const plainFacts = facts.map(([k, v]): [string, string] => [k, v.replace(/<[^>]*>/g, "")]);
  const recent = snap.recent.slice(-10);
  const text = [
    textTable(FACTS, plainFacts),
    recent.length ? "\n" + textTable(REQUEST_COLUMNS, recent) : "",
  ].join("");
  const html = htmlTable(FACTS, facts, "server") +
    (recent.length ? htmlTable(REQUEST_COLUMNS, recent, `last ${recent.length} requests`) : "");
  return {
    summary: `loupe server at ${snap.url}: ${snap.slotsBusy}/${snap.parallel} slots busy, ${snap.requests} requests${
      snap.closed ? ", closed" : ""
    }`,
    text,
    html,
    figure: throughputFigure(snap),
  };
}
