// Text generation against llama.cpp's own completion tool, and the API's contracts.
import { assert, assertEquals, assertRejects, assertThrows } from "../support/assert.ts";
import { fixture, referenceCompletion, THREADS } from "../support/helpers.ts";
import { DEFAULT_MAX_TOKENS, loadModel, LoupeError } from "../../mod.ts";

const tiny = await fixture("tiny");
const model = await loadModel(tiny, { threads: THREADS });

for (const prompt of ["Once upon a time", "The quick brown fox jumps over"]) {
  Deno.test(`greedy generation equals llama-completion: ${JSON.stringify(prompt)}`, async () => {
    const ref = await referenceCompletion(tiny, prompt, 32);
    const r = await model.generate(prompt, { maxTokens: 32, temperature: 0 });
    assertEquals(r.stopReason, "maxTokens");
    assertEquals(r.tokens.length, 32);
    assertEquals(r.text, ref);
  });
}

Deno.test("stream yields the same text as generate, piece by piece", async () => {
  const full = await model.generate("Hello world", { maxTokens: 40, temperature: 0 });
  const stream = model.stream("Hello world", { maxTokens: 40, temperature: 0 });
  const pieces: string[] = [];
  for await (const p of stream) pieces.push(p);
  assert(pieces.length >= 40 / 8 - 1, `pieces arrive at most 8 tokens apart (${pieces.length})`);
  assertEquals(pieces.join(""), full.text);
  assertEquals((await stream.result).tokens, full.tokens);
});

Deno.test("a stop string ends generation and is not in the text", async () => {
  const full = await model.generate("Once upon a time", { maxTokens: 32, temperature: 0 });
  const words = full.text.split(" ").filter((w) => w.length >= 3);
  const stop = words[Math.floor(words.length / 2)];
  const cut = full.text.indexOf(stop);
  const r = await model.generate("Once upon a time", { maxTokens: 32, temperature: 0, stop: [stop] });
  assertEquals(r.stopReason, "stop");
  assertEquals(r.text, full.text.slice(0, cut));
  const streamed: string[] = [];
  for await (const p of model.stream("Once upon a time", { maxTokens: 32, temperature: 0, stop: [stop] })) {
    streamed.push(p);
  }
  assertEquals(streamed.join(""), full.text.slice(0, cut), "streaming never emits part of a stop string");
});

Deno.test("maxTokens has a bounded default", async () => {
  assertEquals(DEFAULT_MAX_TOKENS, 256);
  const r = await model.generate("A", { temperature: 0, ignoreEos: true });
  assertEquals(r.stopReason, "maxTokens");
  assertEquals(r.tokens.length, DEFAULT_MAX_TOKENS);
});

Deno.test("generation stops with contextFull when the context is full", async () => {
  await using small = await loadModel(tiny, { contextSize: 64, threads: THREADS });
  assert(small.info.nCtx >= 64 && small.info.nCtx <= 256, `llama.cpp rounds the context up (${small.info.nCtx})`);
  const prompt = small.tokenize("Once upon a time");
  const r = await small.generate("Once upon a time", { maxTokens: 1000, temperature: 0, ignoreEos: true });
  assertEquals(r.stopReason, "contextFull");
  assertEquals(
    prompt.length + r.tokens.length,
    small.info.nCtx + 1,
    "the last sampled token is returned but not decoded",
  );
});

Deno.test("a prompt that does not fit is a typed error and the model stays usable", async () => {
  await using small = await loadModel(tiny, { contextSize: 32, threads: THREADS });
  const long = "word ".repeat(small.info.nCtx + 10);
  const e = await assertRejects(
    () => small.generate(long, { maxTokens: 4 }),
    LoupeError,
    `context holds ${small.info.nCtx}`,
  );
  assertEquals(e.code, "CONTEXT_OVERFLOW");
  const ok = await small.generate("Hi", { maxTokens: 4, temperature: 0 });
  assertEquals(ok.tokens.length, 4);
});

Deno.test("an AbortSignal stops generation with stopReason aborted", async () => {
  const ac = new AbortController();
  const stream = model.stream("Once", { maxTokens: 100000, temperature: 0, ignoreEos: true, signal: ac.signal });
  let n = 0;
  for await (const _ of stream) if (++n === 2) ac.abort();
  const r = await stream.result;
  assertEquals(r.stopReason, "aborted");
  assert(r.tokens.length < 100000);
  const pre = new AbortController();
  pre.abort();
  assertEquals((await model.generate("Once", { maxTokens: 50, signal: pre.signal })).stopReason, "aborted");
});

Deno.test("chat uses the model's own template", async () => {
  const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }];
  const prompt = model.applyChatTemplate(messages);
  assertEquals(
    prompt,
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
  );
  const c = await model.chat(messages, { maxTokens: 12, temperature: 0 });
  const g = await model.generate(prompt, { maxTokens: 12, temperature: 0 });
  assertEquals(c.tokens, g.tokens);
  assertEquals(c.timeline.kind, "chat");
  assertThrows(() => model.applyChatTemplate([{ role: "user" } as never]), LoupeError, "message 0");
});

Deno.test("tokenize and detokenize round-trip", () => {
  const text = "Hello, world! Ünïcödé 🦙";
  const toks = model.tokenize(text, { addSpecial: false });
  assert(toks.length > 3);
  assertEquals(model.detokenize(toks), text);
  assertEquals(model.tokenize(text)[0], model.info.bos, "BOS is added by default");
  assertThrows(() => model.detokenize([model.info.nVocab + 5]), LoupeError, "out of range");
});

Deno.test("sampling with a seed is reproducible", async () => {
  const opts = { maxTokens: 16, temperature: 1.0, seed: 42 };
  const a = await model.generate("Once", opts);
  const b = await model.generate("Once", opts);
  const c = await model.generate("Once", { ...opts, seed: 43 });
  assertEquals(a.tokens, b.tokens);
  assert(JSON.stringify(a.tokens) !== JSON.stringify(c.tokens), "another seed samples other tokens");
});

Deno.test("the timeline measures each stage and its devices", async () => {
  const r = await model.generate("Once upon a time", { maxTokens: 8, temperature: 0 });
  const t = r.timeline;
  assertEquals(t.stages.map((s) => s.name), ["tokenize", "prompt", "generation", "sampling"]);
  const prompt = t.stage("prompt")!;
  assertEquals(prompt.tokens, r.promptTokens.length);
  assertEquals(prompt.graphs, 1);
  const gen = t.stage("generation")!;
  assertEquals(gen.tokens, 7, "the last sampled token is not decoded");
  assertEquals(gen.graphs, 7);
  assertEquals(t.stage("sampling")!.tokens, 8);
  // 2 layers x 7 matrix multiplications + the output projection, per graph
  assertEquals(Object.keys(gen.devices), ["CPU"]);
  assertEquals(gen.devices.CPU.ops.MUL_MAT, 7 * (2 * 7 + 1) + (gen.devices.CPU.ops.MUL_MAT - 7 * 15));
  assert(gen.devices.CPU.heavy >= 7 * 15, `heavy ops ${gen.devices.CPU.heavy}`);
  assert(gen.devices.CPU.firstHeavy?.startsWith("MUL_MAT"));
  assert(t.toString().includes("generation"));
  assertEquals(t.devicesUsed(), ["CPU"]);
});

Deno.test("requireDevice cpu passes on the CPU; gpu without a GPU names the backends", async () => {
  const r = await model.generate("Hi", { maxTokens: 2, requireDevice: "cpu" });
  assertEquals(r.tokens.length, 2);
  const devs = (await import("../../mod.ts")).devices;
  if ((await devs()).some((d) => d.type === "gpu" || d.type === "igpu")) return;
  const e = await assertRejects(() => loadModel(tiny, { requireDevice: "gpu" }), LoupeError, "No device matches");
  assertEquals(e.code, "BACKEND_UNAVAILABLE");
});

Deno.test("close is idempotent, use after close throws, close during a call is safe", async () => {
  const m = await loadModel(tiny, { threads: THREADS });
  const running = m.generate("Once", { maxTokens: 100000, temperature: 0, ignoreEos: true });
  await new Promise((r) => setTimeout(r, 50));
  m.close();
  m.close();
  const r = await running;
  assertEquals(r.stopReason, "aborted");
  assertThrows(() => m.tokenize("x"), LoupeError, "closed");
  await assertRejects(() => m.generate("x"), LoupeError, "closed");
  await m.closeAsync();
});

Deno.test("loading reports progress and can be cancelled", async () => {
  const seen: number[] = [];
  await using m = await loadModel(tiny, { onProgress: (f) => seen.push(f) });
  assertEquals(seen.at(-1), 1);
  assert(m.loadTimeline.stage("load")!.wallMs > 0);
  assert(m.loadTimeline.weights.CPU > 0, "weights per device come from the memory breakdown");
  const ac = new AbortController();
  ac.abort();
  const e = await assertRejects(() => loadModel(tiny, { signal: ac.signal }), LoupeError, "cancelled");
  assertEquals(e.code, "ABORTED");
});

globalThis.addEventListener("unload", () => model.close());
