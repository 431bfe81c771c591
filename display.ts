/**
 * Building blocks of loupe's notebook displays, for new result types that want a table and a
 * plot like the built-in ones: views, MIME bundles, HTML tables and plotly figures.
 *
 * @example
 * ```ts
 * import { attachDisplay, htmlTable } from "./display.ts";
 * const rows = [{ name: "a", ms: 1.5 }];
 * const columns = [{ header: "name", value: (r: typeof rows[0]) => r.name }];
 * attachDisplay(rows, () => ({ text: "rows", html: htmlTable(columns, rows) }));
 * ```
 *
 * @module
 */
import "./src/notebook/presenter.ts";

export { bundleOf, richBundle } from "./src/notebook/display.ts";
export {
  attachDisplay,
  type Column,
  deviceColor,
  type Displayable,
  htmlTable,
  type PlotlyFigure,
  textTable,
  type View,
} from "./src/notebook/view.ts";
export { DISPLAY, type MimeBundle } from "./src/util/presenter.ts";
export { timelineFigure, type TimelineLike } from "./src/notebook/timeline_view.ts";
export { comparisonFigure } from "./src/notebook/comparison.ts";
export { heatmapFigure, memoryFigure, similarityMatrix } from "./src/notebook/views.ts";
