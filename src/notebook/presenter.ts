/**
 * Installs the notebook layer as the domain's presenter (src/util/presenter.ts): rich bundles
 * for loupe values, live text streams and progress bars. Importing this module installs it;
 * `mod.ts` does.
 *
 * @module
 */
import { setPresenter } from "../util/presenter.ts";
import { displayBundle } from "./display.ts";
import type { GenerateResult } from "../generate/result.ts";
import { progressFor, streamBundle } from "./progress.ts";

setPresenter({
  bundle: displayBundle,
  streamBundle: (stream) => streamBundle(stream as AsyncIterable<string> & { result: Promise<GenerateResult> }),
  progress: (label, show) => progressFor(label, show),
});
