/**
 * Child process of the GPU kit's benchmark steps (tests/device/check.ts): each mode writes its
 * figures as JSON to `--json=PATH`.
 *
 * - `fixture --path=FILE`: the ≈1.1B-parameter F16 model the GPU benchmarks use, made by the
 *   fixture writer (`makeTextModel`) with TinyLlama-1.1B's shapes (width 2048, 22 blocks, 32
 *   heads, 4 key/value heads, FFN 5632, the llama SPM vocabulary) and random weights; made once
 *   (a sidecar records its options).
 * - `embed [--rounds=N]`: `benchEmbeddings()` of tests/bench/bench_embed.ts.
 * - `vision [--rounds=N]`: `benchVision()` of tests/bench/bench_vision.ts.
 *
 * @module
 */
import { join } from "node:path";

/** The GPU benchmarks' model: TinyLlama-1.1B's shapes. */
export const BIG_FIXTURE_OPTIONS = {
  name: "loupe-gpu-1b",
  nEmbd: 2048,
  nLayer: 22,
  nHead: 32,
  nHeadKv: 4,
  nFf: 5632,
  type: "f16",
  seed: 1,
} as const;

function arg(name: string): string | undefined {
  return Deno.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}

async function bigFixture(path: string): Promise<Record<string, unknown>> {
  const { ensureSource } = await import("../../native/build/engine.ts");
  const { FIXTURE_GENERATOR_VERSION, makeTextModel } = await import("../../src/fixtures/text.ts");
  const src = await ensureSource(false);
  const options = { ...BIG_FIXTURE_OPTIONS, vocabPath: join(src, "models", "ggml-vocab-llama-spm.gguf") };
  const key = JSON.stringify({ generator: FIXTURE_GENERATOR_VERSION, ...BIG_FIXTURE_OPTIONS });
  const meta = await Deno.readTextFile(`${path}.json`).then(JSON.parse).catch(() => null);
  const size = (await Deno.stat(path).catch(() => null))?.size;
  if (meta?.key === key && size === meta.fileSize) return { ...meta, path, made: false };
  await Deno.mkdir(join(path, ".."), { recursive: true });
  const t0 = performance.now();
  const m = await makeTextModel(path, options);
  const wallS = (performance.now() - t0) / 1000;
  const out = { key, nParams: m.nParams, fileSize: m.fileSize, sha256: m.sha256, wallS };
  await Deno.writeTextFile(`${path}.json`, JSON.stringify(out) + "\n");
  console.error(
    `made ${path}: ${(m.nParams / 1e9).toFixed(2)}B parameters, ${(m.fileSize / 2 ** 30).toFixed(2)} GiB in ${
      wallS.toFixed(0)
    } s`,
  );
  return { ...out, path, made: true };
}

if (import.meta.main) {
  const mode = Deno.args[0];
  const json = arg("json");
  const rounds = arg("rounds") === undefined ? undefined : Number(arg("rounds"));
  const t0 = performance.now();
  let result: Record<string, unknown>;
  if (mode === "fixture") {
    const path = arg("path");
    if (!path) throw new Error("bench_parts fixture: --path=FILE is required");
    result = await bigFixture(path);
  } else if (mode === "embed") {
    const { benchEmbeddings } = await import("../bench/bench_embed.ts");
    const { build } = await import("../support/helpers.ts");
    const rows = await benchEmbeddings({ rounds });
    result = { engine: build.variant, rows };
    for (const r of rows) console.log(`${r.metric}: ${r.ratio.toFixed(3)} (target ${r.target ?? "info"})`);
  } else if (mode === "vision") {
    const { benchVision } = await import("../bench/bench_vision.ts");
    const { build } = await import("../support/helpers.ts");
    const rows = await benchVision({ rounds });
    result = { engine: build.variant, rows };
    for (const r of rows) {
      console.log(`${r.metric}: ${r.ratio?.toFixed(3) ?? "n/a"} (target ${r.target}) ${r.note ?? ""}`);
    }
  } else {
    throw new Error(`bench_parts: unknown mode "${mode}" (fixture, embed or vision)`);
  }
  result.wallS ??= (performance.now() - t0) / 1000;
  if (json) await Deno.writeTextFile(json, JSON.stringify(result, null, 2) + "\n");
  Deno.exit(0);
}
