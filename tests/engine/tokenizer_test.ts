// Tokenizer results equal llama.cpp's own test vectors (models/ggml-vocab-*.gguf.inp/.out in the
// pinned source), read the way tests/test-tokenizer-0.cpp reads them (no special tokens added).
import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { ensureSource } from "../../native/build/engine.ts";
import { loadModel, LoupeError } from "../../mod.ts";
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
    // The same cases in one batch call (the embedder's path): each text's tokens, in order.
    const batch = model.tokenizeMany(cases.map((c) => c.text), { addSpecial: false, parseSpecial: false });
    assertEquals(batch, cases.map((c) => c.tokens));
  });
}

Deno.test("tokenizeMany equals one tokenize per text, special tokens and edge cases included", async () => {
  await using model = await loadModel(join(modelsDir, "ggml-vocab-bert-bge.gguf"), { vocabOnly: true });
  const texts = [
    "",
    "hello world",
    "[SEP] is special",
    "a\u0000b",
    "lone \ud800 surrogate",
    "héllo wörld ".repeat(300),
  ];
  for (const addSpecial of [true, false]) {
    for (const parseSpecial of [true, false]) {
      const one = texts.map((t) => model.tokenize(t, { addSpecial, parseSpecial }));
      assertEquals(model.tokenizeMany(texts, { addSpecial, parseSpecial }), one);
    }
  }
  assertEquals(model.tokenizeMany([]), []);
  assert(model.tokenizeMany(["[SEP]"], { parseSpecial: true })[0].length < model.tokenizeMany(["[SEP]"])[0].length);
  const err = assertThrows(() => model.tokenizeMany("text" as unknown as string[]), LoupeError);
  assertEquals(err.code, "INVALID_ARGUMENT");
});
