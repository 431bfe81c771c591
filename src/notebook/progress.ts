/**
 * Progress that updates in place: in a notebook a bar that one output keeps redrawing
 * (`display_data` with a `display_id`, then `update_display_data`), in a terminal one line
 * rewritten with a carriage return, elsewhere nothing. Used by the engine download and build,
 * by model loading, and by {@linkcode showStream}, which streams generated text into a cell.
 *
 * @example
 * ```ts
 * const bar = new Progress("indexing");
 * for (let i = 0; i < 100; i++) bar.update(i / 100, `file ${i}`);
 * await bar.done();
 * ```
 *
 * @module
 */
import { displayBundle, type MimeBundle } from "./display.ts";
import { escapeHtml, formatMs } from "./view.ts";
import { type KernelApi, kernelApi, publish } from "./kernel.ts";
import type { GenerateResult } from "../generate/result.ts";

/** Where progress goes: a notebook output, a terminal line, or nowhere; "auto" picks. */
export type ProgressMode = "auto" | "jupyter" | "terminal" | "silent";

/** Options of {@linkcode Progress}. */
export interface ProgressOptions {
  /** "auto" (default): the notebook when running in `deno jupyter`, else the terminal when stderr is one, else silent. */
  mode?: ProgressMode;
  /** The notebook API (default `Deno.jupyter`); for other kernels and tests. */
  jupyter?: KernelApi;
  /** Where terminal lines go (default stderr). */
  write?: (text: string) => void;
  /** Terminal width (default: the console's, else 80). */
  columns?: number;
  /** Fewest milliseconds between two redraws (default 100); the first and the last are always drawn. */
  minIntervalMs?: number;
}

let progressCounter = 0;

function stderrWriter(): (text: string) => void {
  const enc = new TextEncoder();
  return (text) => {
    try {
      Deno.stderr.writeSync(enc.encode(text));
    } catch { /* a closed stderr must not break the work */ }
  };
}

function stderrIsTerminal(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

function consoleColumns(): number {
  try {
    return Deno.consoleSize().columns;
  } catch {
    return 80;
  }
}

/** Resolves "auto" to where progress can actually be shown now. */
export function resolveMode(mode: ProgressMode = "auto", api: KernelApi | null = kernelApi()): Exclude<
  ProgressMode,
  "auto"
> {
  if (mode !== "auto") return mode;
  if (api) return "jupyter";
  return stderrIsTerminal() ? "terminal" : "silent";
}

/**
 * A progress indicator that updates in place. `update(fraction, detail)` with a fraction in
 * [0, 1] (or null when the amount is unknown), then `done()` or `fail()`. Updates never
 * throw, and never block the work: notebook messages are sent in order in the background
 * (`flush()` waits for them).
 */
export class Progress {
  /** What is in progress, e.g. "loading model.gguf". */
  readonly label: string;
  /** Where it is shown. */
  readonly mode: "jupyter" | "terminal" | "silent";
  /** The notebook output's display_id. */
  readonly id: string;
  #api: KernelApi | null;
  #write: (text: string) => void;
  #columns: number;
  #minInterval: number;
  #fraction: number | null = 0;
  #detail = "";
  #shown = false;
  #lastAt = -Infinity;
  #lastKey = "";
  #lastLength = 0;
  #ended = false;
  #started = performance.now();
  #chain: Promise<void> = Promise.resolve();

  /** Creates it; nothing is shown before the first update. */
  constructor(label: string, options: ProgressOptions = {}) {
    this.label = label;
    const api = options.jupyter ?? kernelApi();
    this.mode = resolveMode(options.mode, api);
    this.#api = this.mode === "jupyter" ? api : null;
    if (this.mode === "jupyter" && !this.#api) this.mode = "silent";
    this.id = `loupe-progress-${Date.now().toString(36)}-${(progressCounter++).toString(36)}`;
    this.#write = options.write ?? stderrWriter();
    this.#columns = options.columns ?? consoleColumns();
    this.#minInterval = options.minIntervalMs ?? 100;
  }

  /** The last fraction (null when unknown). */
  get fraction(): number | null {
    return this.#fraction;
  }

  /** Whether done() or fail() was called. */
  get ended(): boolean {
    return this.#ended;
  }

  /** An `onProgress(fraction)` callback that updates this indicator and then calls `next`. */
  callback(next?: (fraction: number) => void): (fraction: number) => void {
    return (fraction) => {
      this.update(fraction);
      next?.(fraction);
    };
  }

  /** Sets the fraction done (null: unknown) and an optional detail line; redraws when it changed. */
  update(fraction: number | null, detail?: string): void {
    if (this.#ended) return;
    this.#fraction = fraction === null || !Number.isFinite(fraction) ? null : Math.min(1, Math.max(0, fraction));
    if (detail !== undefined) this.#detail = detail;
    const key = `${this.#fraction === null ? "?" : Math.floor(this.#fraction * 100)}|${this.#detail}`;
    if (key === this.#lastKey) return;
    const now = performance.now();
    if (this.#shown && now - this.#lastAt < this.#minInterval) return;
    this.#lastKey = key;
    this.#lastAt = now;
    this.#draw("running");
  }

  /** Marks it finished (the bar full, with the time taken); waits until the notebook has the last update. */
  async done(detail?: string): Promise<void> {
    if (this.#ended) return await this.flush();
    this.#fraction = 1;
    if (detail !== undefined) this.#detail = detail;
    this.#ended = true;
    this.#draw("done");
    await this.flush();
  }

  /** Marks it failed with a reason; waits until the notebook has the last update. */
  async fail(reason: string): Promise<void> {
    if (this.#ended) return await this.flush();
    this.#detail = reason;
    this.#ended = true;
    this.#draw("failed");
    await this.flush();
  }

  /** Waits until every notebook message so far has been sent. */
  flush(): Promise<void> {
    return this.#chain;
  }

  /** The text form of the current state, e.g. `loading x.gguf [#########-----------]  45% detail`. */
  text(state: "running" | "done" | "failed" = "running"): string {
    const elapsed = `${formatMs(performance.now() - this.#started)} ms`;
    if (state === "done") return `${this.label}: done in ${elapsed}${this.#detail ? ` (${this.#detail})` : ""}`;
    if (state === "failed") return `${this.label}: failed after ${elapsed}: ${this.#detail}`;
    const width = 20;
    const f = this.#fraction;
    const bar = f === null ? "~".repeat(width) : "#".repeat(Math.round(f * width)).padEnd(width, "-");
    const pct = f === null ? "    " : `${Math.floor(f * 100)}%`.padStart(4);
    return `${this.label} [${bar}] ${pct}${this.#detail ? ` ${this.#detail}` : ""}`;
  }

  /** The MIME bundle of the current state: an HTML `<progress>` bar and the text form. */
  bundle(state: "running" | "done" | "failed" = "running"): MimeBundle {
    const f = state === "done" ? 1 : this.#fraction;
    const value = f === null ? "" : ` value="${f.toFixed(3)}" max="1"`;
    const color = state === "failed" ? "#c62828" : state === "done" ? "#2e7d32" : "inherit";
    const label = state === "running"
      ? `${escapeHtml(this.label)}${f === null ? "" : ` ${Math.floor(f * 100)}%`}${
        this.#detail ? ` · ${escapeHtml(this.#detail)}` : ""
      }`
      : escapeHtml(this.text(state));
    return {
      "text/plain": this.text(state),
      "text/html": `<div class="loupe-progress" data-state="${state}" style="font-family:system-ui,sans-serif;` +
        `font-size:12px;display:flex;align-items:center;gap:8px"><progress${value} style="width:220px"></progress>` +
        `<span style="color:${color}">${label}</span></div>`,
    };
  }

  #draw(state: "running" | "done" | "failed"): void {
    if (this.mode === "jupyter" && this.#api) {
      const api = this.#api;
      const content = { data: this.bundle(state), metadata: {}, transient: { display_id: this.id } };
      const type = this.#shown ? "update_display_data" : "display_data";
      this.#shown = true;
      // Messages go out in order; the last one is confirmed, so the cell cannot end before it.
      const confirm = state !== "running";
      this.#chain = this.#chain
        .then(() => publish(api, type, content, { confirm }))
        .then(() => {}, () => {}); // a progress message must never fail the work
    } else if (this.mode === "terminal") {
      this.#shown = true;
      let line = this.text(state);
      if (line.length > this.#columns - 1) line = line.slice(0, Math.max(10, this.#columns - 2)) + "…";
      const pad = " ".repeat(Math.max(0, this.#lastLength - line.length));
      this.#lastLength = line.length;
      this.#write(`\r${line}${pad}${state === "running" ? "" : "\n"}`);
    }
  }
}

/**
 * A progress indicator when one should be shown: `show` true → notebook or terminal; false →
 * none; undefined → only in a notebook.
 */
export function progressFor(label: string, show?: boolean, options: ProgressOptions = {}): Progress | null {
  if (show === false) return null;
  const mode = resolveMode(options.mode ?? "auto", options.jupyter ?? kernelApi());
  if (mode === "silent" || (show === undefined && mode !== "jupyter")) return null;
  return new Progress(label, { ...options, mode });
}

/** Options of {@linkcode showStream}. */
export interface ShowStreamOptions {
  /** "auto" (default): the notebook in `deno jupyter`, else stdout. */
  mode?: "auto" | "jupyter" | "stdout";
  /** The notebook API (default `Deno.jupyter`). */
  jupyter?: KernelApi;
  /** Where text goes outside a notebook (default stdout). */
  write?: (text: string) => void;
  /** Fewest milliseconds between two redraws in a notebook (default 50). */
  minIntervalMs?: number;
  /** What the notebook output shows at the end: the text (default) or a one-line summary. */
  final?: "text" | "summary";
}

/**
 * Streams generated text into the notebook cell as it arrives (one output redrawn in place)
 * or to stdout in a script, and returns the final result. A `TextStream` that is the last
 * expression of a cell does this by itself.
 *
 * @example
 * ```ts
 * const r = await showStream(model.stream("Once upon a time", { maxTokens: 64 }));
 * ```
 */
export async function showStream(
  stream: AsyncIterable<string> & { result: Promise<GenerateResult> },
  options: ShowStreamOptions = {},
): Promise<GenerateResult> {
  const api = options.jupyter ?? kernelApi();
  const inNotebook = options.mode === "jupyter" || (options.mode !== "stdout" && api !== null);
  const enc = new TextEncoder();
  const write = options.write ?? ((t: string) => Deno.stdout.writeSync(enc.encode(t)));
  if (!inNotebook || !api) {
    for await (const piece of stream) write(piece);
    write("\n");
    return await stream.result;
  }
  const id = `loupe-stream-${Date.now().toString(36)}-${(progressCounter++).toString(36)}`;
  const minInterval = options.minIntervalMs ?? 50;
  let text = "";
  let shown = false;
  let lastAt = -Infinity;
  let chain: Promise<unknown> = Promise.resolve();
  const send = (bundle: MimeBundle, confirm = false) => {
    const type = shown ? "update_display_data" : "display_data";
    shown = true;
    const content = { data: bundle, metadata: {}, transient: { display_id: id } };
    chain = chain.then(() => publish(api, type, content, { confirm })).catch(() => {});
  };
  const live = (cursor: boolean): MimeBundle => ({
    "text/plain": text,
    "text/html": `<pre class="loupe-stream" style="white-space:pre-wrap;margin:0">${escapeHtml(text)}${
      cursor ? '<span style="opacity:.5">&#9612;</span>' : ""
    }</pre>`,
  });
  send(live(true));
  try {
    for await (const piece of stream) {
      text += piece;
      const now = performance.now();
      if (now - lastAt >= minInterval) {
        lastAt = now;
        send(live(true));
      }
    }
  } catch (e) {
    send(live(false), true);
    await chain;
    throw e;
  }
  const result = await stream.result;
  if (options.final === "summary") {
    send({
      "text/plain": `streamed ${result.tokens.length} tokens (stop: ${result.stopReason})`,
      "text/html": `<div class="loupe-stream" style="font-family:system-ui,sans-serif;font-size:12px;opacity:.7">` +
        `streamed ${result.tokens.length} tokens (stop: ${escapeHtml(result.stopReason)})</div>`,
    }, true);
  } else {
    send(live(false), true);
  }
  await chain;
  return result;
}

/** The rich display of a stream that is the last expression of a cell: streams it, then shows the result. */
export async function streamBundle(
  stream: AsyncIterable<string> & { result: Promise<GenerateResult> },
): Promise<MimeBundle> {
  return await displayBundle(await showStream(stream, { final: "summary" }));
}
