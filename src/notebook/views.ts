/**
 * The views of loupe's values: results, models, devices, backends, projectors, sessions,
 * embeddings with their timeline, and similarity heat maps.
 *
 * @module
 */
import type { BackendReport, Device } from "../engine/engine.ts";
import { LoupeError } from "../util/errors.ts";
import type { Model } from "../model/model.ts";
import type { GenerateResult } from "../generate/result.ts";
import type { DeviceMemory } from "../timeline/timeline.ts";
import { cosine } from "../embed/embed.ts";
import { CONFIG, FONT, type TimelineLike, timelineView, tokensPerSecond } from "./timeline_view.ts";
import {
  attachDisplay,
  type Column,
  deviceColor,
  type Displayable,
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
    vision?: boolean;
    audio?: boolean;
    audioSampleRate?: number;
    mrope?: boolean;
    nonCausal?: boolean;
    tiles?: boolean;
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
    [
      "inputs",
      [i.vision !== false ? "images" : "", i.audio ? `audio at ${i.audioSampleRate} Hz` : ""].filter(Boolean).join(
        ", ",
      ),
    ],
  ];
  if (i.vision !== false) {
    facts.push([
      "image",
      `${i.imageSize}×${i.imageSize} px, patches of ${i.patchSize} px${i.tiles ? ", large images in tiles" : ""}`,
    ]);
    facts.push([
      "image tokens",
      i.mrope
        ? "M-RoPE: fewer positions than tokens (no context shift)"
        : i.nonCausal
        ? "non-causal attention inside an image"
        : "causal, one position each",
    ]);
  }
  facts.push(
    ["embedding width", String(i.nEmbd)],
    ["CPU threads", String(i.threads)],
    ["load", `${formatMs(i.loadUs / 1000)} ms`],
  );
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

export function head(v: ArrayLike<number>, n = 4): string {
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

/** The cosine similarity ({@linkcode cosine}) of every pair of vectors, as a matrix. */
export function similarityMatrix(vectors: ArrayLike<number>[]): number[][] {
  return vectors.map((a) => vectors.map((b) => cosine(a, b)));
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
    throw new LoupeError(
      "INVALID_ARGUMENT",
      `Cannot map similarity: ${labels.length} labels for ${vectors.length} vectors`,
    );
  }
  const matrix = similarityMatrix(vectors);
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
