// An executed notebook exported to HTML (nbconvert), opened offline in headless Chromium: the
// screenshot must show the plots drawn, with the stage bars in the devices' colours. The
// colours and bar sizes to look for come from the executed notebook's own plotly figures. A
// page with a RequireJS/AMD loader (nbviewer, the classic notebook) must draw them too; with
// JavaScript off the same colours must be absent (the tables' small swatches do not count).
import { join } from "node:path";
import { assert, assertEquals } from "../support/assert.ts";
import {
  chromium,
  installDenoKernel,
  plotOutputs,
  readNotebook,
  ROOT,
  runNotebook,
  type RunSummary,
} from "../support/notebook_helpers.ts";
import { colourRuns, decodePng, type Pixels } from "../support/png.ts";

const WIDTH = 1200;
const HEIGHT = 8000;
const tmp = await Deno.makeTempDir({ prefix: "loupe-screenshot-" });

async function screenshot(html: string, png: string): Promise<Pixels> {
  const browser = await chromium();
  const out = await new Deno.Command(browser, {
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--hide-scrollbars",
      "--no-first-run",
      `--user-data-dir=${join(tmp, "profile")}`,
      // Offline: no host name resolves (the export links MathJax and require.js on CDNs).
      "--host-resolver-rules=MAP * ~NOTFOUND",
      `--window-size=${WIDTH},${HEIGHT}`,
      "--virtual-time-budget=15000",
      `--screenshot=${png}`,
      `file://${html}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert(out.success, `chromium failed (${out.code}): ${stderr.slice(-2000)}`);
  return await decodePng(await Deno.readFile(png));
}

interface Bar {
  colour: string;
  widest: number; // widest segment as a fraction of the x axis range
}

/**
 * The device colours of a figure's stage bars, with their widest opaque segment relative to the
 * axis (interleaved stages are drawn translucent: their pixels are not the device's colour).
 */
function barsOf(fig: { data: any[]; layout: any }): Bar[] {
  const range: number[] = fig.layout.xaxis?.range ?? [0, 1];
  return fig.data
    .filter((t) => t.type === "bar" && (t.xaxis ?? "x") === "x" && typeof t.marker?.color === "string")
    .map((t) => {
      const opacity = (i: number) => (Array.isArray(t.marker.opacity) ? t.marker.opacity[i] : t.marker.opacity ?? 1);
      const widths = (t.x as number[]).filter((_, i) => opacity(i) === 1);
      return { colour: t.marker.color, widest: Math.max(0, ...widths) / (range[1] - range[0]) };
    });
}

const executed = join(tmp, "quickstart.ipynb");
const html = join(tmp, "quickstart.html");

interface Executed {
  summary: RunSummary;
  figures: any[];
  /** Stage bar colours wide enough to be seen for sure, with how many figures have them. */
  expected: Map<string, number>;
}

/**
 * The quickstart executed and exported once, on first use: inside the tests, so a missing Jupyter
 * or nbconvert fails them with the package to install instead of breaking this file's import.
 */
let executedOnce: Promise<Executed> | null = null;
function executeQuickstart(): Promise<Executed> {
  executedOnce ??= (async () => {
    const kernelEnv = await installDenoKernel(tmp);
    const summary = await runNotebook(join(ROOT, "notebooks", "quickstart.ipynb"), {
      out: executed,
      html,
      env: kernelEnv,
    });
    const nb = await readNotebook(executed);
    const figures = nb.cells.flatMap(plotOutputs).map((o) => o.data!["application/vnd.plotly.v1+json"] as any);
    // Stage bars wide enough to be seen for sure: at least 8% of the axis (~50 px on this page).
    const expected = new Map<string, number>();
    for (const fig of figures) {
      for (const b of barsOf(fig)) if (b.widest >= 0.08) expected.set(b.colour, (expected.get(b.colour) ?? 0) + 1);
    }
    return { summary, figures, expected };
  })();
  return executedOnce;
}

Deno.test("the executed quickstart exports to HTML with its plots", async () => {
  const { summary, figures, expected } = await executeQuickstart();
  assertEquals(summary.errors, []);
  assert(figures.length >= 3, `plots in the notebook (${figures.length})`);
  assert(expected.size > 0, "some stage bar is wide enough to look for");
});

Deno.test("offline headless Chromium draws the plots with the stage bars' device colours", async () => {
  const { expected } = await executeQuickstart();
  const img = await screenshot(html, join(tmp, "page.png"));
  assertEquals([img.width, img.height], [WIDTH, HEIGHT]);
  for (const [colour, count] of expected) {
    const runs = colourRuns(img, colour, 30);
    // Every bar is drawn ~20 px tall: several bars of this colour give many rows of long runs.
    assert(runs.longest >= 40, `a stage bar of ${colour} is drawn (longest run ${runs.longest} px)`);
    assert(runs.rows >= 8 * Math.min(count, 3), `bars of ${colour} cover ${runs.rows} rows (figures: ${count})`);
  }
});

Deno.test("the plots draw on a page with a RequireJS/AMD loader too", async () => {
  const { expected } = await executeQuickstart();
  const page = await Deno.readTextFile(html);
  const amd = `<script>window.define = function (deps, f) { window.__amdUsed = true; };` +
    ` window.define.amd = {}; window.module = { exports: {} }; window.exports = window.module.exports;` +
    ` window.require = function () {};</script>`;
  const amdHtml = join(tmp, "quickstart-amd.html");
  await Deno.writeTextFile(amdHtml, page.replace(/<head>/i, `<head>${amd}`));
  const img = await screenshot(amdHtml, join(tmp, "page-amd.png"));
  for (const colour of expected.keys()) {
    assert(colourRuns(img, colour, 30).longest >= 40, `a stage bar of ${colour} is drawn under AMD`);
  }
});

Deno.test("without its scripts the page has no such bars (the check sees plots, not table swatches)", async () => {
  const { expected } = await executeQuickstart();
  const page = await Deno.readTextFile(html);
  const noJs = join(tmp, "quickstart-nojs.html");
  await Deno.writeTextFile(noJs, page.replace(/<script\b[\s\S]*?<\/script>/gi, ""));
  const img = await screenshot(noJs, join(tmp, "page-nojs.png"));
  for (const colour of expected.keys()) {
    assert(colourRuns(img, colour, 30).longest < 30, `no long run of ${colour} without the plots`);
  }
});

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(tmp, { recursive: true });
  } catch { /* already gone */ }
});
