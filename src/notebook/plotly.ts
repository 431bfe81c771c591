/**
 * plotly.js for the notebook plots: the pinned `plotly.js-dist-min` package, fetched once with
 * `npm pack`, checked against its pinned integrity and cached outside the repository like the
 * engine. `LOUPE_PLOTLY_JS` names a local copy of `plotly.min.js` instead (machines without
 * registry access).
 *
 * @module
 */
import { join } from "node:path";
import { fetchPackage } from "../../native/build/engine.ts";
import { PLOTLY_PACKAGE } from "../../native/build/pins.ts";
import { LoupeError } from "../util/errors.ts";

/** The pinned plotly.js version. */
export const PLOTLY_VERSION: string = PLOTLY_PACKAGE.version;

/** Plotly's CDN address of the pinned version, for `setDisplayOptions({ plotly: "cdn" })`. */
export const PLOTLY_CDN_URL = `https://cdn.plot.ly/plotly-${PLOTLY_PACKAGE.version}.min.js`;

let cached: Promise<string> | null = null;
let reachable: Promise<boolean> | null = null;

/**
 * Whether {@linkcode PLOTLY_CDN_URL} answers from here: one `HEAD` request, at most `timeoutMs`
 * (default 2 s); the answer is kept for the process. Asked only where the default depends on it
 * (Colab, see `DisplayOptions.plotly`).
 */
export function cdnReachable(timeoutMs = 2000): Promise<boolean> {
  reachable ??= (async () => {
    try {
      const res = await fetch(PLOTLY_CDN_URL, { method: "HEAD", signal: AbortSignal.timeout(timeoutMs) });
      await res.body?.cancel();
      return res.ok;
    } catch {
      return false;
    }
  })();
  return reachable;
}

/** The text of `plotly.min.js` (the pinned version, or `LOUPE_PLOTLY_JS`), read once per process. */
export function plotlyScript(): Promise<string> {
  if (!cached) {
    cached = load().catch((e) => {
      cached = null;
      throw e;
    });
  }
  return cached;
}

async function load(): Promise<string> {
  const explicit = Deno.env.get("LOUPE_PLOTLY_JS");
  const path = explicit ?? join(await fetchPackage(PLOTLY_PACKAGE, false), "plotly.min.js");
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new LoupeError("NOT_FOUND", `Cannot read plotly.js at "${path}": ${(e as Error).message}`, { cause: e });
  }
}
