/**
 * The vision notebook as a script: image chat through a multimodal projector, with the image
 * encoder's measured placement; the encoder on the CPU compared with the default placement.
 *
 *   deno run -A examples/vision.ts [--model lm.gguf --mmproj mmproj.gguf] [--image cat.jpg] [--html report.html]
 *
 * Without --model/--mmproj it uses loupe's tiny fixtures; without --image, a picture drawn by code.
 */
import { parseArgs } from "node:util";
import { compare, devices, fixtureProjector, htmlPage, type ImageInput, loadModel } from "../mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string" },
    mmproj: { type: "string" },
    image: { type: "string" },
    html: { type: "string" },
    "max-tokens": { type: "string", default: "24" },
  },
});
const fixture = values.model && values.mmproj ? null : await fixtureProjector("tiny");
const modelPath = values.model ?? fixture!.model;
const mmproj = values.mmproj ?? fixture!.projector;
const gpu = (await devices()).find((d) => (d.type === "gpu" || d.type === "igpu") && !d.software);

function drawn(size = 96): ImageInput {
  const data = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const disc = (x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 3) ** 2;
      data.set([x * 2.6, y * 2.6, disc ? 230 : 40], (y * size + x) * 3);
    }
  }
  return { data, width: size, height: size };
}
const question = [{ role: "user", content: [{ image: values.image ?? drawn() }, "What is in this picture?"] }];
const options = { maxTokens: Number(values["max-tokens"]), temperature: 0 };

await using model = await loadModel(modelPath, { gpuLayers: "auto", progress: true });
await model.loadProjector(mmproj);
const onDefault = await model.chat(question, options);
console.log(`${onDefault.text}\n\n${onDefault.timeline}\n`);

await model.loadProjector(mmproj, { gpu: false });
const onCpu = await model.chat(question, options);
const comparison = compare({
  "encoder on the CPU (gpu: false)": onCpu,
  [gpu ? `encoder on ${gpu.name}` : "encoder by default (no GPU here)"]: onDefault,
}, { title: "the projector on the CPU and on the GPU" });
console.log(String(comparison));

if (values.html) {
  await Deno.writeTextFile(values.html, await htmlPage([comparison, onDefault], "loupe vision"));
  console.log(`\nwrote ${values.html}`);
}
