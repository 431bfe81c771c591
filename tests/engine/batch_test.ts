// Continuous batching (src/serve/batcher.ts over native/loupe_batch.h) against llama.cpp's own
// completion tool, and requests batched together against the same requests one at a time.
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { fixture, referenceCompletion, THREADS } from "../support/helpers.ts";
import { loadModel, LoupeError } from "../../mod.ts";
import { Batcher, type BatchResult } from "../../src/serve/batcher.ts";
import { samplingParams } from "../../src/generate/options.ts";

const tiny = await fixture("tiny");
const model = await loadModel(tiny, { threads: THREADS, contextSize: 1024 });
const greedy = (maxTokens: number, more: Record<string, unknown> = {}) =>
  samplingParams({ maxTokens, temperature: 0, ...more });

/** Index of the first token where two answers differ (-1: equal). */
function firstDifference(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return -1;
}

/**
 * Asserts a batched answer equals the one-at-a-time answer up to the first token where the
 * one-at-a-time run's top two log-probabilities are within 2e-3 (a near tie batched kernels may flip).
 */
function assertFaithful(batched: BatchResult, alone: BatchResult, what: string): void {
  const at = firstDifference(batched.tokens, alone.tokens);
  if (at < 0) return;
  const top = alone.logprobs[at]?.top;
  assert(
    top && top.length >= 2 && top[0].logprob - top[1].logprob < 2e-3,
    `${what}: the batched answer differs at token ${at} (${batched.tokens[at]} vs ${alone.tokens[at]}), where the ` +
      `top two log-probabilities are ${top?.[0]?.logprob} and ${top?.[1]?.logprob}: not a near tie`,
  );
}

Deno.test("batched greedy answers equal llama-completion's", async () => {
  await using batcher = await Batcher.open(model, { parallel: 4, contextSize: 256 });
  const prompts = ["Once upon a time", "The quick brown fox jumps over", "Hello world", "In the beginning"];
  const refs = await Promise.all(prompts.map((p) => referenceCompletion(tiny, p, 24)));
  const results = await Promise.all(
    prompts.map((p) => batcher.submit({ tokens: model.tokenize(p), params: greedy(24) })),
  );
  results.forEach((r, i) => {
    assertEquals(r.stopReason, "maxTokens");
    assertEquals(r.text, refs[i], `prompt ${i}`);
    assertEquals(r.batching.maxSlots, 4, "the four requests shared batches");
    assert(r.batching.sharedSteps > 0);
  });
  // the timeline shows the stages of the shared batches and the devices that ran them
  const t = results[0].timeline;
  assert(t.stage("prompt")!.devices.CPU.heavy > 0);
  assertEquals(t.stage("generation")!.tokens, 23); // the last sampled token is not decoded
  assert(t.events.some((e) => e.kind === "batching"));
});

Deno.test("16 requests at once equal the same requests one at a time, up to a near tie", async () => {
  await using batcher = await Batcher.open(model, { parallel: 4, contextSize: 256 });
  const words = "the cat sat on a mat and then it ran far away over hills to see the sea".split(" ");
  const requests = Array.from({ length: 16 }, (_, i) => ({
    tokens: model.tokenize(words.slice(0, 1 + (i * 5) % words.length).join(" ")),
    params: greedy(16 + (i % 3) * 8, i % 4 === 1 ? { stop: [" the", "."] } : {}),
    logprobs: 2,
  }));
  const alone: BatchResult[] = [];
  for (const r of requests) alone.push(await batcher.submit(r));
  const pieces = new Map<number, string>();
  const together = await Promise.all(
    requests.map((r, i) =>
      batcher.submit({
        ...r,
        onPiece: i % 2 ? (p) => pieces.set(i, (pieces.get(i) ?? "") + p.text) : undefined,
      })
    ),
  );
  together.forEach((r, i) => {
    assertFaithful(r, alone[i], `request ${i}`);
    if (i % 2) assertEquals(pieces.get(i) ?? "", r.text, `request ${i}'s pieces make its text`);
  });
  assert(together.some((r) => r.batching.maxSlots === 4));
  assertEquals(batcher.stats().slotsBusy, 0);
  assertEquals(batcher.stats().requests, 32);
});

Deno.test("a request that continues a conversation reuses its slot's cache", async () => {
  await using batcher = await Batcher.open(model, { parallel: 2, contextSize: 256 });
  const first = await batcher.submit({ tokens: model.tokenize("Once upon a time"), params: greedy(8) });
  const history = [
    ...model.tokenize("Once upon a time"),
    ...first.tokens,
    ...model.tokenize(" and then", { addSpecial: false }),
  ];
  const next = await batcher.submit({ tokens: history, params: greedy(8) });
  // the cache holds the prompt and the decoded replies (all but the last sampled token)
  assertEquals(next.cachedTokens, model.tokenize("Once upon a time").length + first.tokens.length - 1);
  assertEquals(next.timings.cache_n, next.cachedTokens);
  assertEquals(next.timeline.stage("prompt")!.reused, next.cachedTokens);
  // and answers as a fresh slot does
  await using fresh = await Batcher.open(model, { parallel: 1, contextSize: 256 });
  const cold = await fresh.submit({ tokens: history, params: greedy(8) });
  assertEquals(cold.cachedTokens, 0);
  assertEquals(next.tokens, cold.tokens);
});

Deno.test("an aborted request frees its slot at the next step; the others finish", async () => {
  await using batcher = await Batcher.open(model, { parallel: 3, contextSize: 512 });
  const abort = new AbortController();
  let pieces = 0;
  const long = (signal?: AbortSignal) =>
    batcher.submit({
      tokens: model.tokenize("Once upon a time"),
      params: greedy(400, { ignoreEos: true }),
      signal,
      onPiece: signal ? () => ++pieces === 3 && abort.abort() : undefined,
    });
  const [cut, a, b] = await Promise.all([long(abort.signal), long(), long()]);
  assertEquals(cut.stopReason, "aborted");
  assert(cut.tokens.length < 400);
  assertEquals([a.stopReason, b.stopReason], ["maxTokens", "maxTokens"]);
  assertEquals([a.tokens.length, b.tokens.length], [400, 400]);
  assertEquals(batcher.stats().slotsBusy, 0);
  // aborted while still queued: it never takes a slot
  const queued = new AbortController();
  const busy = [long(), long(), long()];
  const waiting = batcher.submit({ tokens: model.tokenize("Hi"), params: greedy(4), signal: queued.signal });
  queued.abort();
  assertEquals((await waiting).stopReason, "aborted");
  assertEquals((await waiting).batching.slot, -1);
  await Promise.all(busy);
});

Deno.test("a full queue is BUSY, a prompt longer than a slot is CONTEXT_OVERFLOW, bad logprobs INVALID_ARGUMENT", async () => {
  await using batcher = await Batcher.open(model, { parallel: 1, contextSize: 64, queueLimit: 1 });
  const tokens = model.tokenize("Once upon a time");
  const running = [batcher.submit({ tokens, params: greedy(8) }), batcher.submit({ tokens, params: greedy(8) })];
  const busy = await assertRejects(() => batcher.submit({ tokens, params: greedy(8) }), LoupeError);
  assertEquals(busy.code, "BUSY");
  await Promise.all(running);
  const long = new Array(batcher.slotContext).fill(tokens[1]); // the engine may round a slot's size up
  assertEquals(
    (await assertRejects(() => batcher.submit({ tokens: long, params: greedy(1) }), LoupeError)).code,
    "CONTEXT_OVERFLOW",
  );
  for (const logprobs of [-1, 21, 1.5]) {
    const e = await assertRejects(() => batcher.submit({ tokens, params: greedy(1), logprobs }), LoupeError);
    assertEquals(e.code, "INVALID_ARGUMENT");
  }
  const e = await assertRejects(() => batcher.submit({ tokens: [999999], params: greedy(1) }), LoupeError);
  assertEquals(e.code, "INVALID_ARGUMENT");
  // a request reaching its slot's end stops with contextFull
  const full = await batcher.submit({ tokens, params: greedy(1000, { ignoreEos: true }) });
  assertEquals(full.stopReason, "contextFull");
  assertEquals(tokens.length + full.tokens.length, batcher.slotContext + 1); // every cell, and the last sampled token
});

Deno.test("logprobs: the greedy token is the most likely, alternatives in order, from one distribution", async () => {
  await using batcher = await Batcher.open(model, { parallel: 2, contextSize: 128 });
  const r = await batcher.submit({ tokens: model.tokenize("Hello world"), params: greedy(6), logprobs: 5 });
  assertEquals(r.logprobs.length, r.tokens.length);
  r.logprobs.forEach((l, i) => {
    assertEquals(l.token, r.tokens[i]);
    assertEquals(l.top.length, 5);
    assertEquals(l.top[0].token, l.token);
    assertEquals(l.top[0].logprob, l.logprob);
    for (let k = 1; k < 5; k++) assert(l.top[k].logprob <= l.top[k - 1].logprob);
    const mass = l.top.reduce((a, t) => a + Math.exp(t.logprob), 0);
    assert(mass <= 1 + 1e-9 && l.logprob <= 0);
    assertEquals(l.text, new TextDecoder().decode(new Uint8Array(l.bytes)));
  });
  assertEquals(r.logprobs.map((l) => l.text).join(""), r.text);
});

Deno.test("closing ends running and queued requests; the model goes on", async () => {
  const batcher = await Batcher.open(model, { parallel: 1, contextSize: 512 });
  const tokens = model.tokenize("Once upon a time");
  const running = batcher.submit({ tokens, params: greedy(400, { ignoreEos: true }) });
  const queued = batcher.submit({ tokens, params: greedy(4) });
  const settled = queued.catch((e) => e); // handled from the start: it rejects while `running` is awaited
  await new Promise((r) => setTimeout(r, 20));
  await batcher.close();
  assertEquals((await running).stopReason, "aborted");
  await settled;
  assertEquals((await assertRejects(() => queued, LoupeError)).code, "CLOSED");
  assertEquals((await assertRejects(() => batcher.submit({ tokens, params: greedy(1) }), LoupeError)).code, "CLOSED");
  assertEquals((await model.generate("Hi", { maxTokens: 2, temperature: 0 })).tokens.length, 2);
});

Deno.test("a model closes its batcher first", async () => {
  const own = await loadModel(tiny, { threads: THREADS });
  const batcher = await Batcher.open(own, { parallel: 2, contextSize: 128 });
  let started: () => void;
  const generating = new Promise<void>((r) => started = r);
  const running = batcher.submit({
    tokens: own.tokenize("Hi"),
    params: greedy(300, { ignoreEos: true }),
    onPiece: () => started(),
  });
  await generating; // in a slot, generating
  await own.close();
  assertEquals((await running).stopReason, "aborted");
  assertEquals(
    (await assertRejects(() => batcher.submit({ tokens: [1], params: greedy(1) }), LoupeError)).code,
    "CLOSED",
  );
});

Deno.test("requests sent the moment others end run in one step loop, never two at once", async () => {
  // A client that sends its next request from the previous one's reply (a microtask after the
  // step loop went idle) once made the batcher start a second step loop beside a first, and two
  // decodes ran on one context at once: the engine aborted the process.
  await using batcher = await Batcher.open(model, { parallel: 4, contextSize: 256 });
  const prompts = ["Once upon a time", "Hello world", "In the beginning", "The quick brown fox jumps over"];
  const refs = await Promise.all(prompts.map((p) => referenceCompletion(tiny, p, 8)));
  const ask = (i: number) => batcher.submit({ tokens: model.tokenize(prompts[i % 4]), params: greedy(8) });
  const answers: Promise<BatchResult>[] = [];
  for (let n = 0; n < 12; n += 3) {
    // alone in the batcher, so its end leaves the step loop idle
    const trigger = ask(n);
    answers.push(trigger);
    const next = await trigger.then(() => {
      // one straight from the reply, one a moment later: the second found the loop's flag cleared
      const first = ask(n + 1);
      const second = new Promise<BatchResult>((r) => setTimeout(() => r(ask(n + 2)), 0));
      return [first, second];
    });
    answers.push(...next);
    await Promise.all(next);
  }
  const results = await Promise.all(answers);
  results.forEach((r, i) => assertEquals(r.text, refs[i % 4], `answer ${i}`));
});

Deno.test({
  name: "batch tests close the model",
  fn: async () => await model.close(),
});
