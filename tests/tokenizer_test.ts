// Tokenizer results equal llama.cpp's own test vectors (models/ggml-vocab-*.gguf.inp/.out in the
// pinned source), read the way tests/test-tokenizer-0.cpp reads them (no special tokens added).
import { assert, assertEquals } from "./assert.ts";
import { ensureSource } from "../native/build.ts";
import { loadModel } from "../mod.ts";
import { join } from "node:path";

const src = await ensureSource(false);
const modelsDir = join(src, "models");
const vocabs: string[] = [];
for await (const e of Deno.readDir(modelsDir)) {
  if (e.name.endsWith(".gguf.inp")) vocabs.push(e.name.slice(0, -".inp".length));
}
vocabs.sort();

function readCases(inp: Uint8Array, out: string): Array<{ text: string; tokens: number[] }> {
  const raw = new TextDecoder("utf-8", { fatal: true }).decode(inp);
  const inputs = raw.split("\n__ggml_vocab_test__\n");
  if (inputs.at(-1) === "") inputs.pop();
  const outputs = out.split("\n");
  if (outputs.at(-1) === "") outputs.pop();
  assertEquals(inputs.length, outputs.length, "inputs and outputs pair up");
  return inputs.map((text, i) => ({
    text,
    tokens: outputs[i].trim() === "" ? [] : outputs[i].trim().split(" ").map(Number),
  }));
}

Deno.test("the pinned source has tokenizer test vectors", () => {
  assert(vocabs.length >= 10, `found ${vocabs.length} vocab test files`);
});

for (const vocab of vocabs) {
  Deno.test(`tokenizer matches llama.cpp test vectors: ${vocab}`, async () => {
    const cases = readCases(
      await Deno.readFile(join(modelsDir, vocab + ".inp")),
      await Deno.readTextFile(join(modelsDir, vocab + ".out")),
    );
    assert(cases.length > 5);
    await using model = await loadModel(join(modelsDir, vocab), { vocabOnly: true });
    const mismatches: string[] = [];
    for (const c of cases) {
      const got = model.tokenize(c.text, { addSpecial: false, parseSpecial: false });
      if (JSON.stringify(got) !== JSON.stringify(c.tokens)) {
        mismatches.push(`${JSON.stringify(c.text)}: got ${got.join(" ")}, expected ${c.tokens.join(" ")}`);
      }
    }
    assertEquals(mismatches, []);
  });
}
