/**
 * The quickstart notebook as a script: load a model, generate, stream, chat, and print the
 * measured timelines as tables (and, with --html, write them with their plots to a page).
 *
 *   deno run -A examples/quickstart.ts [--model path.gguf] [--html report.html]
 *
 * Without --model (or LOUPE_MODEL) it uses loupe's tiny fixture model.
 */
import { parseArgs } from "node:util";
import { backends, compare, devices, display, fixtureModel, htmlPage, loadModel, showStream } from "../mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { model: { type: "string" }, html: { type: "string" }, "max-tokens": { type: "string", default: "32" } },
});
const path = values.model ?? Deno.env.get("LOUPE_MODEL") ?? await fixtureModel("tiny");
const maxTokens = Number(values["max-tokens"]);

// display() prints the text form in a script (and shows the table and plot in a notebook).
await display(await backends());
await display(await devices());

await using model = await loadModel(path, { gpuLayers: "auto", progress: true });
console.log(`\nmodel: ${model.info.desc}, ${(model.info.nParams / 1e6).toFixed(1)}M parameters`);

const r = await model.generate("Once upon a time", { maxTokens, temperature: 0 });
console.log(`\nOnce upon a time|${r.text}\n[stop: ${r.stopReason}, ${r.tokens.length} tokens]\n`);
console.log(r.timeline.toString());

console.log("\nstreamed:");
const streamed = await showStream(model.stream("Hello", { maxTokens: 24, temperature: 0 }));

const c = await model.chat([{ role: "user", content: "Tell me a story." }], { maxTokens: 24, temperature: 0 });
const comparison = compare({ generate: r, stream: streamed, chat: c }, { title: "three calls of one model" });
console.log(`\n${comparison}`);

if (values.html) {
  await Deno.writeTextFile(values.html, await htmlPage([model, r, comparison], "loupe quickstart"));
  console.log(`\nwrote ${values.html}`);
}
