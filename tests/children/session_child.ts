// Child process of tests/session_test.ts: long generation with context shifts on one engine
// (a Vulkan driver can crash inside itself; a crash here must not take the test runner with it).
// Prints one line `SESSION_CHILD_RESULT <json>` on stdout.
//
// Usage: [LOUPE_ENGINE=vulkan GGML_VK_VISIBLE_DEVICES=0] deno run -A tests/session_child.ts shift <tiny|one> <gpuLayers>
// shift: four context lengths of greedy generation in a session of 256 tokens; on the one-layer
// model ("one") also the logits after the shifts against a fresh evaluation of the kept tokens.

import { join } from "node:path";
import { cacheDir, ensureSource } from "../../native/build/engine.ts";
import { FIXTURE_GENERATOR_VERSION, makeTextModel } from "../../src/fixtures/text.ts";

/** Prefix of the one result line. */
export const RESULT_PREFIX = "SESSION_CHILD_RESULT ";

/** Context size of the shift runs: small, so four context lengths stay cheap. */
export const SHIFT_CONTEXT = 256;

/** Tokens generated in the shift runs: four context lengths. */
export const SHIFT_TOKENS = 4 * SHIFT_CONTEXT;

/** Prompt of the shift runs. */
export const SHIFT_PROMPT = "Once upon a time";

/** Prompt of the logit check: long enough to give it a 32-token head (nKeep) worth checking. */
export const LOGIT_PROMPT =
  "Once upon a time there was a little girl who lived in a village near the forest. She liked to walk along the river";

/** Tokens a shift keeps in the logit check. */
export const LOGIT_KEEP = 32;

/**
 * Largest difference allowed between the logits after context shifts and those of a fresh
 * context that evaluates the shifted tokens from scratch (logits of the fixture are within ±5).
 * The K cache is F16: a shift rotates stored F16 keys and rounds them again (relative error
 * 2^-11 per element, twice), and a token evaluated alone sums its matrix products in another
 * order than a batch does. Measured: about 1e-3 after shifts, the same as without any shift;
 * dropping a single token from the sequence moves the logits by 2e-2 to 1e-1.
 */
export const LOGIT_TOLERANCE = 5e-3;

/**
 * A one-layer fixture (made once, cached): its keys and values depend only on each token and its
 * position, so after a shift a fresh evaluation of the kept tokens must give the same logits. (With
 * more layers the kept tokens' deeper keys still carry what the dropped tokens told them — by
 * design of a context shift — and a fresh evaluation differs as much as any other context does.)
 */
export async function oneLayerModel(): Promise<string> {
  const path = join(cacheDir(), "fixtures", `one-layer-v${FIXTURE_GENERATOR_VERSION}.gguf`);
  try {
    await Deno.stat(path);
    return path;
  } catch { /* make it */ }
  await Deno.mkdir(join(cacheDir(), "fixtures"), { recursive: true });
  const src = await ensureSource(false);
  const tmp = `${path}.${Deno.pid}.tmp`;
  await makeTextModel(tmp, {
    vocabPath: join(src, "models", "ggml-vocab-llama-spm.gguf"),
    nLayer: 1,
    name: "loupe-one-layer",
    seed: 7,
  });
  await Deno.rename(tmp, path);
  return path;
}

/** Largest absolute difference, and whether the argmax agrees. */
export function compareLogits(a: Float32Array, b: Float32Array): { maxDiff: number; sameArgmax: boolean } {
  let maxDiff = 0;
  let am = 0;
  let bm = 0;
  for (let i = 0; i < a.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    if (a[i] > a[am]) am = i;
    if (b[i] > b[bm]) bm = i;
  }
  return { maxDiff, sameArgmax: am === bm };
}

/** Tokens generated after a save and load, by the original session and by the restored one. */
export const RESTORE_TOKENS = 8;

/** One thread: ggml's thread pool spins at barriers, which on a busy 2-core machine is 100x slower. */
const THREADS = 1;

/** What a shift run reports. */
export interface ShiftRun {
  engine: string;
  model: string;
  tokens: number[];
  text: string;
  stopReason: string;
  shifts: Array<{ position: number; dropped: number; nPastBefore: number; nPastAfter: number; cut: string }>;
  events: Array<{ kind?: string; what: string }>;
  devicesUsed: string[];
  offloaded: number;
  contextSize: number;
  nKeep: number | null;
  wallMs: number;
  /** After the shifts, RESTORE_TOKENS greedy tokens of the session and of its saved and loaded copy (one-layer model). */
  restore?: { original: number[]; restored: number[] };
  /** The logit check, for the one-layer model. */
  logits?: {
    kept: number;
    freshPrompt: number | undefined;
    freshReused: number;
    maxDiff: number;
    sameArgmax: boolean;
    control: { maxDiff: number; sameArgmax: boolean };
  };
}

async function main(mode: string, which: string, gpuLayersArg: string): Promise<void> {
  const { engineInfo, fixtureModel, loadModel } = await import("../../mod.ts");
  const gpuLayers = gpuLayersArg === "all" ? "all" : Number(gpuLayersArg);
  if (mode !== "shift") throw new Error(`session_child: unknown mode "${mode}"`);
  const one = which === "one";
  const path = one ? await oneLayerModel() : await fixtureModel("tiny");
  await using model = await loadModel(path, { gpuLayers, threads: THREADS });
  // Four context lengths of greedy generation: the one-layer model keeps a 32-token head.
  await using s = await model.session({ contextSize: SHIFT_CONTEXT, ...(one ? { nKeep: LOGIT_KEEP } : {}) });
  const t0 = performance.now();
  const r = await s.generate(one ? LOGIT_PROMPT : SHIFT_PROMPT, {
    maxTokens: SHIFT_TOKENS,
    temperature: 0,
    ignoreEos: true,
  });
  const out: ShiftRun = {
    engine: (await engineInfo()).variant,
    model: which,
    tokens: r.tokens,
    text: r.text,
    stopReason: r.stopReason,
    shifts: r.shifts,
    events: r.timeline.events,
    devicesUsed: r.timeline.devicesUsed(),
    offloaded: model.info.gpuLayers,
    contextSize: s.contextSize,
    nKeep: s.nKeep,
    wallMs: performance.now() - t0,
  };
  if (one) {
    // The logits after the shifts against a fresh context that evaluates the kept tokens.
    const kept = s.tokens.slice(0, -1); // the last sampled token is not evaluated yet
    const shifted = await s.logits();
    await using fresh = await model.session({ contextSize: SHIFT_CONTEXT, contextShift: false });
    const f = await fresh.generate(kept, { maxTokens: 0 });
    const direct = await fresh.logits();
    // a control: the same tokens with one (the first after the head) left out
    await using other = await model.session({ contextSize: SHIFT_CONTEXT, contextShift: false });
    await other.generate([...kept.slice(0, LOGIT_KEEP), ...kept.slice(LOGIT_KEEP + 1)], { maxTokens: 0 });
    const control = await other.logits();
    out.logits = {
      kept: kept.length,
      freshPrompt: f.timeline.stage("prompt")?.tokens,
      freshReused: f.reusedTokens,
      ...compareLogits(shifted, direct),
      control: compareLogits(shifted, control),
    };
    // save the shifted session, load it back, and continue both greedily
    const file = await Deno.makeTempFile({ suffix: ".session" });
    try {
      await s.save(file);
      await using restored = await model.loadSession(file);
      const go = { maxTokens: RESTORE_TOKENS, temperature: 0, ignoreEos: true } as const;
      out.restore = { original: (await s.generate("", go)).tokens, restored: (await restored.generate("", go)).tokens };
    } finally {
      await Deno.remove(file).catch(() => {});
    }
  }
  console.log(RESULT_PREFIX + JSON.stringify(out));
}

if (import.meta.main) {
  await main(Deno.args[0] ?? "", Deno.args[1] ?? "tiny", Deno.args[2] ?? "0");
  Deno.exit(0);
}
