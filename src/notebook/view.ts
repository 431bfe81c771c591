/**
 * The building blocks of a rich display: a view (text, HTML, plot), plotly figures, HTML and
 * text tables, number formats and device colours, and `attachDisplay` for values that bring
 * their own view.
 *
 * @module
 */
import { DISPLAY, displayOf, type MimeBundle } from "../util/presenter.ts";

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

/** Where {@linkcode attachDisplay} keeps a value's own view (read by the dispatch). */
export const OWN_VIEW: unique symbol = Symbol("loupe.ownView");

/**
 * Gives a plain object or array a rich display (a non-enumerable `[Symbol.for("Jupyter.display")]`),
 * so it shows as a table and plot when it is the last expression of a cell. `view` defaults to
 * {@linkcode viewOf}. Returns the same value.
 */
export function attachDisplay<T extends object>(value: T, view?: () => View): T {
  if (view) Object.defineProperty(value, OWN_VIEW, { value: view, configurable: true });
  Object.defineProperty(value, DISPLAY, { value: () => displayOf(value), configurable: true });
  return value;
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
  const widths = columns.map((_, i) => cells.reduce((w, row) => Math.max(w, row[i].length), 0));
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
