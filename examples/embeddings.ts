/**
 * The embeddings notebook as a script: embed texts, print the vectors' summary, the call's
 * timeline and the cosine similarity table (with --html, the heat map too).
 *
 *   deno run -A examples/embeddings.ts [--model embedding-model.gguf] [--html report.html]
 *
 * Without --model (or LOUPE_EMBED_MODEL) it uses loupe's BERT fixture.
 */
import { parseArgs } from "node:util";
import { display, embedFixture, htmlPage, loadEmbedder, similarityMap } from "../mod.ts";

const { values } = parseArgs({ args: Deno.args, options: { model: { type: "string" }, html: { type: "string" } } });
const path = values.model ?? Deno.env.get("LOUPE_EMBED_MODEL") ?? await embedFixture("bert");

const texts = [
  "A cat sits on the mat.",
  "A kitten is lying on a rug.",
  "The dog chases the ball.",
  "Stock markets fell sharply today.",
  "Shares dropped at the opening bell.",
];
const embedder = await loadEmbedder(path, { gpuLayers: "auto" });
try {
  const vectors = await embedder.embed(texts);
  await display(vectors); // the vectors' table and the call's timeline
  const similarity = similarityMap(texts, vectors);
  console.log(`\ncosine similarity\n${similarity}`);
  if (values.html) {
    await Deno.writeTextFile(values.html, await htmlPage([embedder, vectors, similarity], "loupe embeddings"));
    console.log(`\nwrote ${values.html}`);
  }
} finally {
  embedder.close();
}
