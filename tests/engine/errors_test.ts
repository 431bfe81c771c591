// Bad input gives a typed error with a clear message, and the process stays alive.
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { build, fixture } from "../support/helpers.ts";
import { loadModel, LoupeError } from "../../mod.ts";
import { join } from "node:path";

const tiny = await fixture("tiny");
const dir = await Deno.makeTempDir({ prefix: "loupe-bad-" });
const bytes = await Deno.readFile(tiny);

async function expectLoadError(path: string, code: string, includes: string) {
  const e = await assertRejects(() => loadModel(path), LoupeError, includes);
  assertEquals(e.code, code, e.message);
  assert(e.message.startsWith(`Cannot load model "${path}": `), e.message);
  return e;
}

Deno.test("a missing path", async () => {
  await expectLoadError(join(dir, "nope.gguf"), "NOT_FOUND", "no such file");
});

Deno.test("a directory", async () => {
  await expectLoadError(dir, "NOT_A_FILE", "directory");
});

Deno.test("a file that is not GGUF", async () => {
  const p = join(dir, "text.gguf");
  await Deno.writeTextFile(p, "hello, this is not a model\n".repeat(10));
  await expectLoadError(p, "BAD_FORMAT", "not a GGUF file");
});

Deno.test("an empty file", async () => {
  const p = join(dir, "empty.gguf");
  await Deno.writeFile(p, new Uint8Array());
  await expectLoadError(p, "BAD_FORMAT", "");
});

Deno.test("a truncated GGUF, cut in the header and in the tensor data", async () => {
  for (const cut of [6, 100, 4096, Math.floor(bytes.length / 2), bytes.length - 1]) {
    const p = join(dir, `cut-${cut}.gguf`);
    await Deno.writeFile(p, bytes.subarray(0, cut));
    await expectLoadError(p, "BAD_FORMAT", "");
  }
});

Deno.test("a GGUF with a corrupted header", async () => {
  const version = bytes.slice();
  new DataView(version.buffer).setUint32(4, 99, true);
  const p1 = join(dir, "version.gguf");
  await Deno.writeFile(p1, version);
  await expectLoadError(p1, "BAD_FORMAT", "version");

  const counts = bytes.slice();
  new DataView(counts.buffer).setBigUint64(8, 1n << 40n, true); // tensor count
  const p2 = join(dir, "counts.gguf");
  await Deno.writeFile(p2, counts);
  await expectLoadError(p2, "BAD_FORMAT", "");
});

Deno.test("a well-formed GGUF the engine rejects: the engine's reason is in the message", async () => {
  // A vocab-only file as a model: the GGUF is fine, the tensors are missing.
  const vocab = join(build.sourceDir, "models", "ggml-vocab-llama-spm.gguf");
  const e = await expectLoadError(vocab, "LOAD_FAILED", "");
  assert(e.nativeMessage && e.nativeMessage.length > 0, "the engine's own words are kept");
  assert(/tensor|missing|load/i.test(e.message), e.message);
});

Deno.test("the process is alive and loads a good model after all of that", async () => {
  await using m = await loadModel(tiny);
  const r = await m.generate("Hi", { maxTokens: 3, temperature: 0 });
  assertEquals(r.tokens.length, 3);
});

Deno.test("bad generate arguments", async () => {
  await using m = await loadModel(tiny);
  // An empty prompt is BOS alone for a model that adds BOS (as in llama.cpp), and an error otherwise.
  assertEquals((await m.generate("", { maxTokens: 3, temperature: 0 })).promptTokens, [m.info.bos]);
  await assertRejects(() => m.generate("", { maxTokens: 3, addSpecial: false }), LoupeError, "empty");
  await assertRejects(() => m.generate("x", { maxTokens: -1 }), LoupeError, "maxTokens");
  // the engine counts in 32 bits: a larger count is refused, not wrapped to a small one
  await assertRejects(() => m.generate("x", { maxTokens: 2 ** 40 }), LoupeError, "at most 2147483647");
  await assertRejects(() => m.chat([{ role: "user", content: "x" }], { maxTokens: 2 ** 31 }), LoupeError, "at most");
  await using small = await loadModel(tiny, { contextSize: 32 });
  const unlimited = await small.generate("x", { maxTokens: 2 ** 31 - 1, temperature: 0, ignoreEos: true });
  assertEquals(unlimited.stopReason, "contextFull", "the largest count runs until the context is full");
  await assertRejects(() => m.generate(42 as unknown as string), LoupeError, "string");
  const nul = await m.generate("a\u0000b", { maxTokens: 2, temperature: 0 });
  assertEquals(nul.tokens.length, 2, "a NUL inside the prompt is text, not a terminator");
});

Deno.test("bad load options: sizes and threads are typed errors before the engine sees them", async () => {
  const cpus = navigator.hardwareConcurrency;
  for (
    const [options, name] of [
      [{ contextSize: 0.5 }, "contextSize"],
      [{ contextSize: NaN }, "contextSize"],
      [{ batchSize: 0 }, "batchSize"],
      [{ threads: 0 }, "threads"],
      [{ threads: 1.5 }, "threads"],
      // More threads than CPUs: ggml's spinning threads made 4 tokens take 34 s with 64 threads
      // on 2 CPUs, and 128 did not finish in a minute.
      [{ threads: cpus + 1 }, "threads"],
      [{ threadsBatch: 1000 }, "threadsBatch"],
    ] as const
  ) {
    const e = await assertRejects(() => loadModel(tiny, options), LoupeError, name);
    assertEquals(e.code, "INVALID_ARGUMENT", e.message);
    assert(e.message.startsWith(`Cannot load model "${tiny}": ${name} `), e.message);
  }
  await using m = await loadModel(tiny, { threads: cpus });
  await assertRejects(() => m.session({ threads: cpus + 1 }), LoupeError, "threads");
  await assertRejects(() => m.loadProjector("/nonexistent.gguf", { threads: 0 }), LoupeError, "threads");
  assertEquals((await m.generate("x", { maxTokens: 2, temperature: 0 })).tokens.length, 2, "the model still works");
});

globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
