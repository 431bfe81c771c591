/**
 * Where the domain meets presentation, as a leaf: the key the notebook kernel calls on a value,
 * the key naming a value's view, a progress interface, and a registry the notebook layer fills
 * (`src/notebook/`). Domain modules mark values as displayable and ask for progress here; they
 * never import the notebook layer, and without it (a script importing a module directly) values
 * display as inspected text and progress is not shown.
 *
 * @module
 */

/** The key the `deno jupyter` kernel calls for the last expression of a cell: `Symbol.for("Jupyter.display")`. */
export const DISPLAY: unique symbol = Symbol.for("Jupyter.display");

/** The key of a value's view name (e.g. "session", "backends"), looked up in the notebook layer's registry. */
export const VIEW_KIND: unique symbol = Symbol.for("loupe.viewKind");

/**
 * The key of a value whose view keeps changing (a running server): as the last expression of a
 * cell its output is redrawn in place every `intervalMs` while `active()` is true, then once more.
 */
export const LIVE: unique symbol = Symbol.for("loupe.live");

/** What a live value gives under {@linkcode LIVE}. */
export interface LiveValue {
  /** Milliseconds between redraws. */
  intervalMs: number;
  /** Whether it still changes (false: one last redraw, then no more). */
  active(): boolean;
}

/** A MIME bundle as Jupyter front ends take it; `text/plain` is always present. */
export interface MimeBundle {
  /** The text form (terminals, plain front ends, nbconvert to text). */
  "text/plain": string;
  /** Other representations by MIME type. */
  [mime: string]: unknown;
}

/** A progress indicator that updates in place; updates never throw. */
export interface ProgressSink {
  /** Sets the fraction done (null: unknown) and an optional detail. */
  update(fraction: number | null, detail?: string): void;
  /** Marks it finished. */
  done(detail?: string): Promise<void>;
  /** Marks it failed with a reason. */
  fail(reason: string): Promise<void>;
}

/** What the notebook layer provides to the domain. */
export interface Presenter {
  /** The rich bundle of a value (its view, else its own display, else its text). */
  bundle(value: unknown): Promise<MimeBundle>;
  /** The bundle of a text stream that is the last expression of a cell: streams it, then shows the result. */
  streamBundle(stream: AsyncIterable<string> & { result: Promise<unknown> }): Promise<MimeBundle>;
  /**
   * A progress indicator labelled `label`, or null when none is to be shown: `show` true means
   * a notebook or a terminal, false none, undefined only in a notebook.
   */
  progress(label: string, show?: boolean): ProgressSink | null;
}

let current: Presenter | null = null;

/** Installs the presenter (the notebook layer does, when it is imported). */
export function setPresenter(presenter: Presenter): void {
  current = presenter;
}

/** The installed presenter, or null. */
export function presenter(): Presenter | null {
  return current;
}

function inspected(value: unknown): MimeBundle {
  return { "text/plain": typeof value === "string" ? value : Deno.inspect(value, { colors: false }) };
}

/** What `[DISPLAY]()` of a loupe value returns: the presenter's bundle, else the inspected text. */
export function displayOf(value: unknown): Promise<MimeBundle> {
  return current ? current.bundle(value) : Promise.resolve(inspected(value));
}

/** What `[DISPLAY]()` of a text stream returns: the presenter's live stream, else the inspected text. */
export function displayStream(stream: AsyncIterable<string> & { result: Promise<unknown> }): Promise<MimeBundle> {
  return current ? current.streamBundle(stream) : Promise.resolve(inspected(stream));
}

/**
 * Gives a plain object or array a rich display (non-enumerable `[DISPLAY]`, and `[VIEW_KIND]`
 * when `kind` is given), so it shows as a table and plot as the last expression of a cell.
 * Returns the same value.
 */
export function displayable<T extends object>(value: T, kind?: string): T {
  if (kind) Object.defineProperty(value, VIEW_KIND, { value: kind, configurable: true });
  Object.defineProperty(value, DISPLAY, { value: () => displayOf(value), configurable: true });
  return value;
}

/** A progress indicator from the presenter, or null (see {@linkcode Presenter.progress}). */
export function progressFor(label: string, show?: boolean): ProgressSink | null {
  return current ? current.progress(label, show) : null;
}
