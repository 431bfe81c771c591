/**
 * The placement notebook as a script: the same call with every layer on the CPU and with every
 * layer on the GPU (when there is one), compared stage by stage; then `requireDevice: "gpu"`.
 *
 *   deno run -A examples/placement.ts [--model path.gguf] [--html report.html]
 */
import { parseArgs } from "node:util";
import { compare, devices, display, fixtureModel, htmlPage, loadModel, LoupeError } from "../mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { model: { type: "string" }, html: { type: "string" }, "max-tokens": { type: "string", default: "48" } },
});
const path = values.model ?? Deno.env.get("LOUPE_MODEL") ?? await fixtureModel("tiny");
const options = { maxTokens: Number(values["max-tokens"]), temperature: 0 };
const prompt = "The quick brown fox jumps over the lazy dog. Once upon a time";

const devs = await devices();
const gpu = devs.find((d) => (d.type === "gpu" || d.type === "igpu") && !d.software);
await display(devs);

const runs: Record<string, Awaited<ReturnType<typeof run>>> = {};
async function run(gpuLayers: number | "auto") {
  await using model = await loadModel(path, { gpuLayers, progress: true });
  return await model.generate(prompt, options);
}
runs["gpuLayers: 0"] = await run(0);
runs[gpu ? `gpuLayers: auto (${gpu.name})` : "gpuLayers: auto (no GPU here)"] = await run("auto");
const comparison = compare(runs, { title: "the same call, on the CPU and on the GPU" });
console.log(`\n${comparison}\n`);

try {
  await using model = await loadModel(path, { gpuLayers: "auto" });
  const r = await model.generate(prompt, { ...options, maxTokens: 4, requireDevice: "gpu" });
  console.log(`requireDevice "gpu": every stage ran on ${r.timeline.devicesUsed().join(", ")}`);
} catch (e) {
  if (!(e instanceof LoupeError)) throw e;
  console.log(`requireDevice "gpu": ${e.name} (${e.code}): ${e.message}`);
}

if (values.html) {
  await Deno.writeTextFile(values.html, await htmlPage([comparison, ...Object.values(runs)], "loupe placement"));
  console.log(`wrote ${values.html}`);
}
