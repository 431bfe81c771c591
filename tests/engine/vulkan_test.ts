// The Vulkan engine on a real Vulkan device: Mesa's lavapipe (package mesa-vulkan-drivers), which
// runs on the CPU. ggml skips CPU-type Vulkan devices unless GGML_VK_VISIBLE_DEVICES names them.
// Lavapipe's driver can crash inside itself, so every Vulkan check runs in a child process
// (tests/vulkan_child.ts); a crash, a non-zero exit or a hang is a failed check with the child's
// stderr, never the end of the test runner.
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { fixture } from "../support/helpers.ts";
import { ensureBuild } from "../../native/build/engine.ts";
import { engineInfo, loadModel, type Stage } from "../../mod.ts";
import { mixedPlacement } from "../../src/vision/vision.ts";
import { CHILD_THREADS, N_PREDICT, PROMPTS, RESULT_PREFIX } from "../children/vulkan_child.ts";
import { ChildError, runTestChild, VULKAN_ENV } from "../support/child_runner.ts";

const CHILD = new URL("../children/vulkan_child.ts", import.meta.url).pathname;

/** The Vulkan build, made once here so the children never race to build it. */
let vulkanBuild: ReturnType<typeof ensureBuild> | null = null;

/**
 * Runs `deno run -A tests/vulkan_child.ts <mode>` with {@linkcode VULKAN_ENV} and returns the JSON
 * of its result line. Throws a {@linkcode ChildError} when the child is ended by a signal,
 * exits non-zero, outlives `timeoutMs` (it is then killed) or prints no result line.
 */
export async function runChild<T>(
  mode: string,
  options: { timeoutMs?: number; build?: boolean } = {},
): Promise<{ result: T; wallMs: number }> {
  if (options.build ?? true) {
    const t0 = performance.now();
    vulkanBuild ??= ensureBuild({ variant: "vulkan", verbose: false });
    await vulkanBuild;
    const ms = performance.now() - t0;
    if (ms > 1000) log(`the Vulkan engine and libloupe were fetched and built in ${(ms / 1000).toFixed(0)} s`);
  }
  return await runTestChild<T>(CHILD, [mode], {
    prefix: RESULT_PREFIX,
    label: `Vulkan child "${mode}"`,
    env: VULKAN_ENV,
    timeoutMs: options.timeoutMs ?? 300_000,
  });
}

/** Index of the first difference of two token lists, or -1. */
function firstDiff(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return -1;
}

function assertSameTokens(actual: number[], expected: number[], what: string): void {
  const i = firstDiff(actual, expected);
  assert(i === -1, `${what}: token ${i} differs (${actual[i]} vs ${expected[i]}); ${actual} vs ${expected}`);
}

function log(msg: string): void {
  console.log(`  ${msg.replaceAll("\n", "\n  ")}`);
}

// Matrix multiplications per graph of the tiny fixture: q, k, v, o, gate, up, down per layer.
const MUL_MAT_PER_LAYER = 7;

Deno.test("the runner reports a crashing, failing, hanging or silent child as a failed check", async () => {
  const opts = { timeoutMs: 60_000, build: false };
  const segv = await assertRejects(() => runChild("crash", opts), ChildError, "crashed: ended by signal SIGSEGV");
  assertEquals(segv.signal, "SIGSEGV");
  assertEquals(segv.code, 139);
  assert(segv.stderrTail.includes("about to read the null page"), "the stderr tail is in the report");
  assert(segv.message.includes("about to read the null page"), "and in the message");
  const abrt = await assertRejects(() => runChild("abort", opts), ChildError, "signal SIGABRT");
  assertEquals(abrt.code, 134);
  const exit = await assertRejects(() => runChild("exit", opts), ChildError, "failed: exit code 139");
  assertEquals(exit.signal, null);
  assert(exit.message.includes("exiting with code 139 on purpose"));
  const thrown = await assertRejects(() => runChild("throw", opts), ChildError, "exit code 1");
  assert(thrown.message.includes("thrown on purpose"), thrown.message);
  await assertRejects(() => runChild("silent", opts), ChildError, "without a result line");
  const hang = await assertRejects(() => runChild("hang", { ...opts, timeoutMs: 1500 }), ChildError, "killed");
  assertEquals(hang.signal, "SIGKILL");
  log(`a crash is reported as:\n${segv.message}`);
});

interface DevicesResult {
  engine: { variant: string };
  backends: Array<{ name: string; loaded: boolean; reason: string | null; devices?: number }>;
  devices: Array<{ name: string; type: string; description: string; backend: string; memoryTotal: number }>;
}

Deno.test("vulkan engine: the vulkan backend loads and lists lavapipe as Vulkan0 besides the CPU", async () => {
  const { result: r, wallMs } = await runChild<DevicesResult>("devices");
  log(`devices child: ${wallMs.toFixed(0)} ms`);
  for (const d of r.devices) log(`${d.name}: type "${d.type}", ${d.backend}, ${d.description}`);
  assertEquals(r.engine.variant, "vulkan");
  const vk = r.backends.find((b) => b.name === "vulkan");
  assert(vk, `no vulkan backend in the report: ${JSON.stringify(r.backends)}`);
  assert(vk.loaded, `the vulkan backend did not load: ${vk.reason}`);
  assert((vk.devices ?? 0) >= 1, "the vulkan backend registered a device (is mesa-vulkan-drivers installed?)");
  const cpu = r.devices.find((d) => d.name === "CPU");
  assertEquals(cpu?.type, "cpu");
  const vk0 = r.devices.find((d) => d.name === "Vulkan0");
  assert(vk0, `no Vulkan0 in ${r.devices.map((d) => d.name)} (is mesa-vulkan-drivers installed?)`);
  assertEquals(vk0.backend, "Vulkan");
  assert(/llvmpipe|lavapipe/i.test(vk0.description), `Vulkan0 is lavapipe: ${vk0.description}`);
  assert(["gpu", "igpu", "accel", "cpu"].includes(vk0.type), `a known device type: ${vk0.type}`);
  assert(vk0.memoryTotal > 0);
});

interface DecodeRun {
  gpuLayers: number;
  results: Array<{ prompt: string; tokens: number[]; text: string; stopReason: string; devicesUsed: string[] }>;
}

interface DecodeResult {
  runs: { all: DecodeRun; "0": DecodeRun };
  reference: Array<{ prompt: string; text: string }>;
}

Deno.test("vulkan engine: greedy decoding on lavapipe equals the CPU, the CPU engine and llama-completion", async () => {
  const tiny = await fixture("tiny");
  // This process's own engine, every layer on the CPU.
  const parentEngine = (await engineInfo()).variant;
  const own: number[][] = [];
  const ownText: string[] = [];
  {
    await using model = await loadModel(tiny, { gpuLayers: 0, threads: CHILD_THREADS });
    for (const prompt of PROMPTS) {
      const r = await model.generate(prompt, { maxTokens: N_PREDICT, temperature: 0 });
      own.push(r.tokens);
      ownText.push(r.text);
    }
  }
  const { result: r, wallMs } = await runChild<DecodeResult>("decode");
  log(`decode child: ${wallMs.toFixed(0)} ms; this process's engine: ${parentEngine}`);
  const { all, "0": cpu } = r.runs;
  assertEquals(all.gpuLayers, 3, "every layer and the output layer are offloaded");
  assertEquals(cpu.gpuLayers, 0);
  for (const [i, prompt] of PROMPTS.entries()) {
    const a = all.results[i];
    const c = cpu.results[i];
    assertEquals(a.prompt, prompt);
    assertEquals(a.stopReason, "maxTokens");
    assertEquals(a.tokens.length, N_PREDICT);
    assertEquals(a.devicesUsed, ["Vulkan0"], "the offloaded run's heavy ops ran on lavapipe");
    assertEquals(c.devicesUsed, ["CPU"], "the gpuLayers 0 run's heavy ops ran on the CPU");
    assertSameTokens(a.tokens, c.tokens, `${JSON.stringify(prompt)}: lavapipe vs CPU in the Vulkan engine`);
    assertSameTokens(a.tokens, own[i], `${JSON.stringify(prompt)}: lavapipe vs the ${parentEngine} engine`);
    assertEquals(a.text, c.text);
    assertEquals(a.text, ownText[i]);
    const ref = r.reference[i].text;
    assertEquals(a.text, ref, `${JSON.stringify(prompt)}: lavapipe vs llama-completion -ngl 99`);
  }
});

interface TimelineRun {
  gpuLayers: "all" | number;
  offloaded: number;
  nLayer: number;
  weights: Record<string, number>;
  text: string;
  timeline: { stages: Stage[] };
  tokens: number[];
}

Deno.test("vulkan engine: the timeline shows Vulkan0 running the offloaded layers and CPU the rest", async () => {
  const { result, wallMs } = await runChild<{ runs: TimelineRun[] }>("timeline");
  log(`timeline child: ${wallMs.toFixed(0)} ms`);
  for (const run of result.runs) {
    log(`gpuLayers ${run.gpuLayers}: ${run.offloaded} of ${run.nLayer} layers + output offloaded\n${run.text}`);
  }
  const [all, partial, none] = result.runs;
  assertEquals([all.gpuLayers, partial.gpuLayers, none.gpuLayers], ["all", 2, 0]);
  const n = all.nLayer;
  const perGraph = n * MUL_MAT_PER_LAYER + 1;
  const stage = (run: TimelineRun, name: string) => {
    const s = run.timeline.stages.find((x) => x.name === name);
    assert(s, `gpuLayers ${run.gpuLayers}: no ${name} stage`);
    assert(s.graphs > 0);
    return s;
  };
  for (const name of ["prompt", "generation"]) {
    // All offloaded: every matrix multiplication (layers and output) on Vulkan0, no heavy op on the CPU.
    const a = stage(all, name);
    assertEquals(a.devices.Vulkan0?.ops.MUL_MAT, a.graphs * perGraph, `${name}: MUL_MATs on Vulkan0`);
    assert(a.devices.Vulkan0.firstHeavy?.startsWith("MUL_MAT"), a.devices.Vulkan0.firstHeavy ?? "");
    assertEquals(a.devices.CPU?.heavy ?? 0, 0, `${name}: no heavy op left on the CPU when all is offloaded`);
    // Layer 0 on the CPU, layer 1 and the output on Vulkan0.
    const p = stage(partial, name);
    assertEquals(p.devices.CPU?.ops.MUL_MAT, p.graphs * MUL_MAT_PER_LAYER, `${name}: layer 0's MUL_MATs on the CPU`);
    assertEquals(p.devices.CPU.firstHeavy, "MUL_MAT Qcur-0");
    assertEquals(p.devices.Vulkan0?.ops.MUL_MAT, p.graphs * (perGraph - MUL_MAT_PER_LAYER), `${name}: the rest`);
    assertEquals(p.devices.Vulkan0.firstHeavy, `MUL_MAT Qcur-${n - 1}`);
    // the sentence a mixed stage gets (as the image encoder's warnings do), on this real split
    const named = mixedPlacement(p);
    assert(
      named?.startsWith(`${name}: mixed placement: Vulkan0 ran ${p.devices.Vulkan0.nodes} of `) &&
        named.includes(`CPU ran `) && named.includes(`MUL_MAT ×${p.graphs * MUL_MAT_PER_LAYER}`),
      `${name}: ${named}`,
    );
    // Nothing offloaded: everything on the CPU.
    const z = stage(none, name);
    assertEquals(Object.keys(z.devices), ["CPU"], `${name}: only the CPU with gpuLayers 0`);
    assertEquals(z.devices.CPU.ops.MUL_MAT, z.graphs * perGraph);
    assertEquals(mixedPlacement(z), null, `${name}: one device is no mixed placement`);
  }
  assert(all.weights.Vulkan0 > 0 && partial.weights.Vulkan0 > 0, "weights on Vulkan0 when offloaded");
  assertEquals(Object.keys(none.weights), ["CPU"]);
  assertSameTokens(partial.tokens, all.tokens, "gpuLayers 2 vs all");
  assertSameTokens(none.tokens, all.tokens, "gpuLayers 0 vs all");
});

interface PlacementResult {
  cpuLayers: { threw: boolean; isPlacementError?: boolean; error?: Record<string, string | null>; tokens?: number };
  cpuLayersAfter: { tokens: number };
  allLayers: {
    threw: boolean;
    tokens?: number;
    devicesUsed?: string[];
    heavyElsewhere?: Array<{ stage: string; device: string; heavy: number; firstHeavy: string }>;
    cpuOps?: Record<string, Record<string, number> | null>;
    error?: Record<string, string | null>;
  };
  requireGpu: { threw: boolean; tokens?: number; error?: Record<string, string | null> };
}

Deno.test("vulkan engine: requireDevice Vulkan0 fails on the CPU and passes when all layers are offloaded", async () => {
  const { result: r, wallMs } = await runChild<PlacementResult>("placement");
  log(`placement child: ${wallMs.toFixed(0)} ms`);
  log(`gpuLayers 0: ${JSON.stringify(r.cpuLayers.error ?? r.cpuLayers)}`);
  log(`gpuLayers all: CPU ops per stage ${JSON.stringify(r.allLayers.cpuOps ?? r.allLayers.error)}`);
  log(`requireDevice "gpu" with lavapipe: ${JSON.stringify(r.requireGpu)}`);
  // lavapipe reports itself as a GPU but runs on the CPU: "gpu" must refuse it.
  assert(r.requireGpu.threw, `requireDevice "gpu" accepted lavapipe: ${JSON.stringify(r.requireGpu)}`);
  assertEquals(r.requireGpu.error?.code, "PLACEMENT");
  assert(r.cpuLayers.threw, `gpuLayers 0 with requireDevice Vulkan0 generated ${r.cpuLayers.tokens} tokens`);
  assert(r.cpuLayers.isPlacementError, `a PlacementError: ${JSON.stringify(r.cpuLayers.error)}`);
  const e = r.cpuLayers.error!;
  assertEquals(e.code, "PLACEMENT");
  assertEquals(e.stage, "prompt");
  assertEquals(e.device, "CPU");
  assertEquals(e.required, "Vulkan0");
  assert(e.op?.startsWith("MUL_MAT"), `the op is a matrix multiplication: ${e.op}`);
  assertEquals(r.cpuLayersAfter.tokens, 4, "the model stays usable after a PlacementError");
  assert(!r.allLayers.threw, `all layers offloaded still broke requireDevice: ${JSON.stringify(r.allLayers.error)}`);
  assertEquals(r.allLayers.tokens, 8);
  assertEquals(r.allLayers.heavyElsewhere, [], "no heavy op outside Vulkan0 (the token embedding is a GET_ROWS)");
  assertEquals(r.allLayers.devicesUsed, ["Vulkan0"]);
});
