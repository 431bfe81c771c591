/**
 * Vision benchmark: CLIP encode time and image-to-first-token latency per device, loupe beside
 * llama.cpp's own `llama-mtmd-cli` (built from the pinned source against the same engine
 * libraries), measured side by side in one run (a report, not a timed test). The projector has
 * the shapes of LLaVA 1.5's CLIP ViT-L/14-336 (24 blocks, width 1024, 16 heads, 336×336 images
 * → 576 image tokens, F16, random weights, made by `fixtureProjector("clip-vit-l-336")`) with the
 * `bench` text fixture; the image is a 336×336 picture (no resize).
 *
 * Rows, per device the engine has (the CPU, and each GPU that is not a software renderer):
 *
 * 1. CLIP encode ms: loupe's "image encode" stage (one `mtmd_encode_chunk`, measured) against
 *    the CLI's own "mtmd batch encoding done in N ms" line for the same image; ratio =
 *    reference / loupe (a speed ratio), target ≥ 0.95.
 * 2. image-to-first-token ms: loupe's "image encode" + "image decode" + "prompt" stages and the
 *    first sampling of a chat with `maxTokens: 1`, against the CLI's span between the
 *    timestamps of its "encoding mtmd batch" and "llama_perf_context_print" log lines (encode,
 *    image embeddings and text decoded, one token sampled — and that token decoded, which the
 *    CLI does before it stops: a single-token decode more than loupe); preprocessing is left
 *    out on both sides (the CLI logs nothing before it) and shown in loupe's end-to-end figure;
 *    target ≥ 0.95.
 * 3. CUDA vs CPU: loupe's encode time on the CPU divided by that on CUDA0, target ≥ 20×;
 *    "n/a (no CUDA device)" on a machine without one.
 *
 * Rounds interleave loupe and the CLI per device; medians are reported.
 *
 * CLI: `deno run -A tests/bench_vision.ts [--quick] [--rounds=N]`
 *
 * @module
 */
import { devices, loadModel, type Model } from "../../mod.ts";
import { fixtureProjector } from "../../src/fixtures/vision.ts";
import { build, runTool, THREADS } from "../support/helpers.ts";
import { encodePng, picture } from "../support/vision_images.ts";

/** One line of the report. */
export interface VisionBenchRow {
  /** What was measured. */
  metric: string;
  /** loupe's figure (ms), or null when not measurable here. */
  loupe: number | null;
  /** The reference figure (ms), or null. */
  reference: number | null;
  /** The speed ratio (reference / loupe, or CPU / CUDA), or null. */
  ratio: number | null;
  /** The ratio aimed for, e.g. "≥ 0.95". */
  target: string;
  /** Why a figure is missing, or extra facts. */
  note?: string;
}

/** Options of {@linkcode benchVision}. */
export interface VisionBenchOptions {
  /** Interleaved rounds per device (default 3). */
  rounds?: number;
  /** Progress lines (default: to stderr). */
  log?: (line: string) => void;
}

const SIDE = 336;
const PROMPT = "What is in this picture?";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** One loupe measurement: a chat with one image and one generated token. */
async function loupeRound(model: Model, png: Uint8Array) {
  const t0 = performance.now();
  const r = await model.chat([{ role: "user", content: [{ image: png }, PROMPT] }], { maxTokens: 1, temperature: 0 });
  const e2e = performance.now() - t0;
  const ms = (name: string) => r.timeline.stage(name)?.wallMs ?? 0;
  return {
    encode: ms("image encode"),
    firstToken: ms("image encode") + ms("image decode") + ms("prompt") + ms("sampling"),
    e2e,
    devices: r.timeline.devicesUsed("image encode"),
    timeline: r.timeline.toString(),
  };
}

/** One llama-mtmd-cli measurement, from its own log lines. */
async function referenceRound(modelPath: string, projectorPath: string, image: string, gpu: boolean) {
  const args = ["-m", modelPath, "--mmproj", projectorPath, "--image", image, "-p", PROMPT, "-n", "1", "--temp", "0"];
  args.push("-t", String(THREADS), "-ngl", gpu ? "99" : "0");
  if (!gpu) args.push("--no-mmproj-offload");
  args.push("-lv", "4"); // its timestamped info lines
  const { stderr } = await runTool(build.tools.mtmd, args);
  // "M.SS.mmm.uuu I text": minutes, seconds, milliseconds, microseconds since start
  const at = (pattern: RegExp) => {
    const line = stderr.split("\n").find((l) => pattern.test(l));
    const m = line?.match(/^(\d+)\.(\d+)\.(\d+)\.(\d+) /);
    return m ? Number(m[1]) * 60_000 + Number(m[2]) * 1000 + Number(m[3]) + Number(m[4]) / 1000 : NaN;
  };
  const encode = Number(stderr.match(/mtmd batch encoding done in (\d+) ms/)?.[1]);
  const firstToken = at(/llama_perf_context_print/) - at(/encoding mtmd batch/);
  if (!Number.isFinite(encode) || !Number.isFinite(firstToken)) {
    throw new Error(`llama-mtmd-cli printed no encode time or timestamps: ${stderr.slice(-1500)}`);
  }
  return { encode, firstToken };
}

/** Measures every device and returns the report's rows. */
export async function benchVision(options: VisionBenchOptions = {}): Promise<VisionBenchRow[]> {
  const rounds = options.rounds ?? 3;
  const log = options.log ?? ((l: string) => console.error(l));
  log("the clip-vit-l-336 projector fixture (made on first use: about 600 MB)");
  const { model: modelPath, projector: projectorPath } = await fixtureProjector("clip-vit-l-336");
  const png = await encodePng(picture(SIDE, SIDE, 1));
  const imagePath = await Deno.makeTempFile({ suffix: ".png" });
  await Deno.writeFile(imagePath, png);
  const devs = (await devices()).filter((d) =>
    d.name === "CPU" || ((d.type === "gpu" || d.type === "igpu") && !d.software)
  );
  const rows: VisionBenchRow[] = [];
  const encodeByDevice: Record<string, number> = {};
  try {
    for (const dev of devs) {
      const gpu = dev.name !== "CPU";
      await using model = await loadModel(modelPath, {
        gpuLayers: gpu ? "all" : 0,
        device: gpu ? dev.name : undefined,
        threads: THREADS,
        progress: false,
      });
      const projector = await model.loadProjector(projectorPath, { gpu, device: gpu ? dev.name : undefined });
      log(`${dev.name}: ${projector.loadTimeline.toString()}`);
      const mine: Array<Awaited<ReturnType<typeof loupeRound>>> = [];
      const ref: Array<Awaited<ReturnType<typeof referenceRound>>> = [];
      for (let i = 0; i < rounds; i++) {
        const order = i % 2 ? ["ref", "loupe"] : ["loupe", "ref"];
        for (const who of order) {
          if (who === "loupe") mine.push(await loupeRound(model, png));
          else ref.push(await referenceRound(modelPath, projectorPath, imagePath, gpu));
        }
        log(
          `${dev.name} round ${i + 1}/${rounds}: encode loupe ${mine.at(-1)!.encode.toFixed(0)} ms ` +
            `(on ${mine.at(-1)!.devices.join(", ")}), llama-mtmd-cli ${ref.at(-1)!.encode} ms`,
        );
      }
      log(`${dev.name}, last round: ${mine.at(-1)!.timeline}`);
      const enc = median(mine.map((m) => m.encode));
      const refEnc = median(ref.map((m) => m.encode));
      const ftt = median(mine.map((m) => m.firstToken));
      const refFtt = median(ref.map((m) => m.firstToken));
      encodeByDevice[dev.name] = enc;
      const where = `${dev.name}${gpu ? ` (${dev.description})` : ""}`;
      rows.push({
        metric: `CLIP encode ms, ${where}`,
        loupe: enc,
        reference: refEnc,
        ratio: refEnc / enc,
        target: "≥ 0.95",
        note: `on ${mine[0].devices.join(", ")}`,
      });
      rows.push({
        metric: `image-to-first-token ms, ${where}`,
        loupe: ftt,
        reference: refFtt,
        ratio: refFtt / ftt,
        target: "≥ 0.95",
        note: `loupe end to end ${median(mine.map((m) => m.e2e)).toFixed(0)} ms`,
      });
    }
  } finally {
    await Deno.remove(imagePath).catch(() => {});
  }
  const cuda = devs.find((d) => /^CUDA/.test(d.name));
  rows.push({
    metric: "CLIP encode speed-up, CUDA vs CPU (same image and projector)",
    loupe: cuda ? encodeByDevice[cuda.name] : null,
    reference: encodeByDevice.CPU ?? null,
    ratio: cuda ? encodeByDevice.CPU / encodeByDevice[cuda.name] : null,
    target: "≥ 20",
    note: cuda ? `${cuda.name} (${cuda.description}) vs CPU` : "n/a (no CUDA device)",
  });
  return rows;
}

function table(rows: VisionBenchRow[]): string {
  const fmt = (n: number | null, digits: number) => (n === null ? "n/a" : n.toFixed(digits));
  const cells = [
    ["metric", "loupe", "reference", "ratio", "target", "note"],
    ...rows.map((r) => [r.metric, fmt(r.loupe, 1), fmt(r.reference, 1), fmt(r.ratio, 3), r.target, r.note ?? ""]),
  ];
  const widths = cells[0].map((_, i) => Math.max(...cells.map((c) => c[i].length)));
  const line = (c: string[]) =>
    c.map((x, i) => (i === 0 || i >= 4 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join("  ").trimEnd();
  return [line(cells[0]), widths.map((w) => "-".repeat(w)).join("  "), ...cells.slice(1).map(line)].join("\n");
}

if (import.meta.main) {
  const rounds = Number(
    Deno.args.find((a) => a.startsWith("--rounds="))?.slice(9) ?? (Deno.args.includes("--quick") ? 1 : 3),
  );
  const started = performance.now();
  const rows = await benchVision({ rounds });
  console.log();
  console.log(table(rows));
  console.log(
    `\nwall time ${
      ((performance.now() - started) / 1000).toFixed(0)
    } s; ratios are speed ratios (reference ms / loupe ms); ` +
      "image-to-first-token leaves out image preprocessing on both sides (loupe's end-to-end figure includes it)",
  );
  Deno.exit(0);
}
