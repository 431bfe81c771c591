// The timeline's data, table form and placement rule, on hand-made stages.
import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { checkPlacement, deviceMatches, Timeline } from "../../src/timeline/timeline.ts";
import { PlacementError } from "../../src/util/errors.ts";

const devs = [
  { name: "CPU", type: "cpu" },
  { name: "Vulkan0", type: "gpu" },
  { name: "CUDA0", type: "gpu" },
];

function mixed(): Timeline {
  const t = new Timeline("generate");
  t.add({ name: "tokenize", wallMs: 0.5, tokens: 0, graphs: 0, devices: {} });
  t.add({
    name: "prompt",
    wallMs: 10,
    tokens: 20,
    graphs: 1,
    devices: {
      Vulkan0: { nodes: 60, heavy: 14, ops: { MUL_MAT: 14 }, firstHeavy: "MUL_MAT Qcur-0" },
      CPU: { nodes: 3, heavy: 0, ops: { GET_ROWS: 1 }, firstHeavy: null },
    },
  });
  t.add({
    name: "generation",
    wallMs: 40,
    tokens: 4,
    graphs: 4,
    devices: { CPU: { nodes: 8, heavy: 4, ops: { MUL_MAT: 4 }, firstHeavy: "MUL_MAT result_output" } },
  });
  return t;
}

Deno.test("stages follow each other and carry tokens per second", () => {
  const t = mixed();
  assertEquals(t.stages.map((s) => s.startMs), [0, 0.5, 10.5]);
  assertEquals(t.stage("prompt")!.tokensPerSecond, 2000);
  assertEquals(t.stage("tokenize")!.tokensPerSecond, null);
  assertEquals(t.totalMs, 50.5);
  assertEquals(t.devicesUsed(), ["Vulkan0", "CPU"]);
  assertEquals(t.devicesUsed("prompt"), ["Vulkan0"]);
});

Deno.test("the table names each stage's devices with heavy/total nodes", () => {
  const text = mixed().toString();
  assert(text.startsWith("generate timeline, 50.5 ms"), text);
  assert(/prompt\s+0\.5\s+10\.00\s+20\s+2000\.0\s+Vulkan0 14\/60, CPU 0\/3/.test(text), text);
  assert(/tokenize .* host/.test(text), text);
});

Deno.test("deviceMatches understands gpu, cpu and names", () => {
  assert(deviceMatches("gpu", "Vulkan0", devs));
  assert(!deviceMatches("gpu", "CPU", devs));
  assert(deviceMatches("cpu", "CPU", devs));
  assert(deviceMatches("vulkan0", "Vulkan0", devs));
  assert(!deviceMatches("CUDA0", "Vulkan0", devs));
  assert(!deviceMatches("gpu", "Unknown0", devs));
  // Mesa's lavapipe says "gpu" but runs on the CPU: it does not satisfy "gpu", only its name.
  const lavapipe = [{ name: "Vulkan0", type: "gpu", software: true }];
  assert(!deviceMatches("gpu", "Vulkan0", lavapipe));
  assert(deviceMatches("Vulkan0", "Vulkan0", lavapipe));
});

Deno.test("checkPlacement names the stage, op and device that broke the rule", () => {
  const e = assertThrows(() => checkPlacement(mixed(), "gpu", devs), PlacementError);
  assertEquals([e.stage, e.op, e.device, e.required, e.code], [
    "generation",
    "MUL_MAT result_output",
    "CPU",
    "gpu",
    "PLACEMENT",
  ]);
  assert(e.message.includes('Stage "generation" ran on the wrong device: MUL_MAT result_output ran on CPU'));
  // Light ops elsewhere do not count; no requirement, no check.
  const t = mixed();
  t.stages.pop();
  checkPlacement(t, "Vulkan0", devs);
  checkPlacement(mixed(), undefined, devs);
});

Deno.test("weights and JSON form", () => {
  const t = mixed();
  t.memory = [
    { device: "Vulkan0", buffer: "Vulkan0", model: 3 * 2 ** 20, context: 0, compute: 0 },
    { device: "CPU", buffer: "CPU_Mapped", model: 2 ** 20, context: 0, compute: 0 },
  ];
  assertEquals(t.weights, { Vulkan0: 3 * 2 ** 20, CPU: 2 ** 20 });
  assert(t.toString().includes("weights: Vulkan0 3.0 MiB, CPU 1.0 MiB"));
  const json = JSON.parse(JSON.stringify(t));
  assertEquals(json.stages.length, 3);
  assertEquals(json.kind, "generate");
});
