/**
 * The main job: set up the engine on first run, show what it loaded, run a model and print
 * its measured timeline.
 *
 *   deno task demo                      # a fixture model made by loupe (no download)
 *   deno task demo path/to/model.gguf   # your own model
 *   deno task demo --fixture bench      # the 58M-parameter F16 fixture
 *
 * Options: --gpu-layers N|auto, --require-device gpu|cpu|NAME, --max-tokens N.
 */
import { parseArgs } from "node:util";
import { backends, devices, engineInfo, fixtureModel, type FixtureName, loadModel, LoupeError } from "../mod.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    fixture: { type: "string", default: "tiny" },
    "gpu-layers": { type: "string", default: "auto" },
    "require-device": { type: "string" },
    "max-tokens": { type: "string", default: "32" },
  },
});

const engine = await engineInfo();
console.log(`engine: ${engine.variant} (${engine.engineDir})`);
console.log("\nbackends:");
for (const b of await backends()) {
  console.log(`  ${b.name.padEnd(8)} ${b.loaded ? `loaded from ${b.file}` : `not loaded: ${b.reason}`}`);
}
console.log("\ndevices:");
for (const d of await devices()) {
  console.log(
    `  ${d.name.padEnd(10)} ${d.type.padEnd(5)} ${(d.memoryTotal / 2 ** 30).toFixed(1)} GiB  ${d.description}`,
  );
}

const path = positionals[0] ?? await fixtureModel(values.fixture as FixtureName);
const gpuLayers = values["gpu-layers"] === "auto" ? "auto" : Number(values["gpu-layers"]);
try {
  await using model = await loadModel(path, {
    gpuLayers,
    requireDevice: values["require-device"],
    onProgress: (f) => Deno.stderr.writeSync(new TextEncoder().encode(`\rloading ${(f * 100).toFixed(0)}%`)),
  });
  console.error("");
  console.log(
    `\nmodel: ${model.info.desc}, ${(model.info.nParams / 1e6).toFixed(1)}M parameters, context ${model.info.nCtx}`,
  );
  console.log(model.loadTimeline.toString());

  const prompt = "Once upon a time";
  const r = await model.generate(prompt, { maxTokens: Number(values["max-tokens"]), temperature: 0 });
  console.log(`\n${prompt}|${r.text}`);
  console.log(`stop: ${r.stopReason}, ${r.tokens.length} tokens\n`);
  console.log(r.timeline.toString());

  if (model.info.chatTemplate) {
    console.log("\nchat (streamed):");
    const stream = model.streamChat([{ role: "user", content: "Tell me a story." }], { maxTokens: 24, temperature: 0 });
    for await (const piece of stream) Deno.stdout.writeSync(new TextEncoder().encode(piece));
    console.log(`\n\n${(await stream.result).timeline.toString()}`);
  }
} catch (e) {
  if (e instanceof LoupeError) {
    console.error(`\n${e.name} (${e.code}): ${e.message}`);
    Deno.exit(1);
  }
  throw e;
}
