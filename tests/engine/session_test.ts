// Sessions: prefix reuse, context shift (CPU and Vulkan on lavapipe, in child processes), state
// files, concurrency and lifetimes. One CPU thread everywhere: ggml's thread pool spins at
// barriers, which on a busy 2-core machine is 100x slower.
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { build, type CompletionOptions, fixture, referenceCompletion } from "../support/helpers.ts";
import { FIXTURE_PRESETS, makeTextModel } from "../../src/fixtures/text.ts";
import { readGGUFFile } from "../../src/gguf/gguf.ts";
import {
  compareLogits,
  LOGIT_KEEP,
  LOGIT_TOLERANCE,
  oneLayerModel,
  RESTORE_TOKENS,
  RESULT_PREFIX,
  SHIFT_CONTEXT,
  SHIFT_PROMPT,
  SHIFT_TOKENS,
  type ShiftRun,
} from "../children/session_child.ts";
import { loadModel, LoupeError } from "../../mod.ts";
import { ensureBuild } from "../../native/build/engine.ts";
import { runTestChild, VULKAN_ENV } from "../support/child_runner.ts";
import { NativeSession } from "../../ffi/session.ts";
import { internalsOf } from "../../src/generate/internals.ts";
import { samplingParams } from "../../src/generate/options.ts";
import { join } from "node:path";

const THREADS = 1;
const tiny = await fixture("tiny");
const model = await loadModel(tiny, { threads: THREADS });
const dir = await Deno.makeTempDir({ prefix: "loupe-session-" });
const CHILD = new URL("../children/session_child.ts", import.meta.url).pathname;

/** Runs `tests/session_child.ts` with `env` and returns its result (see tests/child_runner.ts). */
async function runChild(args: string[], env: Record<string, string> = {}, timeoutMs = 480_000): Promise<ShiftRun> {
  const label = `session child ${args.join(" ")} ${JSON.stringify(env)}`;
  return (await runTestChild<ShiftRun>(CHILD, args, { prefix: RESULT_PREFIX, label, env, timeoutMs })).result;
}

// The lavapipe run takes a few minutes (about 130 ms a token): it starts now and runs while the
// CPU tests below do; its test awaits it at the end.
const vulkanRun = ensureBuild({ variant: "vulkan", verbose: false })
  .then(() => runChild(["shift", "one", "all"], VULKAN_ENV))
  .then((r) => ({ ok: true as const, r }), (e) => ({ ok: false as const, e: e as Error }));

function log(msg: string): void {
  console.log(`  ${msg.replaceAll("\n", "\n  ")}`);
}

function checkShiftRun(r: ShiftRun, what: string): void {
  assertEquals(r.stopReason, "maxTokens", what);
  assertEquals(r.tokens.length, SHIFT_TOKENS, what);
  assertEquals(r.contextSize, SHIFT_CONTEXT);
  assert(r.shifts.length >= 3, `${what}: ${r.shifts.length} shifts`);
  for (const s of r.shifts) {
    assertEquals(s.position, r.nKeep, `${what}: the first nKeep tokens stay`);
    assertEquals(s.nPastBefore, SHIFT_CONTEXT, `${what}: a shift happens when the context is full`);
    assertEquals(s.nPastAfter, SHIFT_CONTEXT - s.dropped);
    assertEquals(s.dropped, Math.floor((SHIFT_CONTEXT - 1 - r.nKeep!) / 2), `${what}: half of what follows the head`);
  }
  const events = r.events.filter((e) => e.kind === "contextShift");
  assertEquals(events.length, r.shifts.length, `${what}: each shift is an event of the timeline`);
  assert(events[0].what.includes(`dropped ${r.shifts[0].dropped} tokens at position ${r.nKeep}`), events[0].what);
}

function checkRestore(r: ShiftRun, what: string): void {
  assert(r.restore, `${what}: no save and load`);
  assertEquals(r.restore.original.length, RESTORE_TOKENS, what);
  assertEquals(r.restore.restored, r.restore.original, `${what}: the loaded session continues as the original`);
}

function checkLogits(r: ShiftRun, what: string): void {
  const l = r.logits!;
  log(
    `${what}: after ${r.shifts.length} shifts, ${l.kept} kept tokens: max |logit difference| ${
      l.maxDiff.toExponential(2)
    } against a fresh evaluation (tolerance ${LOGIT_TOLERANCE}); leaving out one token moves them by ${
      l.control.maxDiff.toExponential(2)
    }`,
  );
  assertEquals(l.freshPrompt, l.kept, "the fresh context evaluated every kept token");
  assertEquals(l.freshReused, 0);
  assert(l.maxDiff <= LOGIT_TOLERANCE, `${what}: logits differ by ${l.maxDiff} after the shifts`);
  assert(l.sameArgmax, `${what}: the greedy next token differs`);
  assert(l.control.maxDiff > 5 * LOGIT_TOLERANCE, `${what}: the control is not far enough: the check could not fail`);
}

/** llama-completion's own context shift over the same run, one thread. */
function referenceShift(options: CompletionOptions = {}): Promise<string> {
  const extra = ["-c", String(SHIFT_CONTEXT), "--context-shift", "--ignore-eos", ...options.extra ?? []];
  return referenceCompletion(tiny, SHIFT_PROMPT, SHIFT_TOKENS, { ...options, extra, threads: 1 });
}

Deno.test("a follow-up evaluates only what is new, and the timeline shows the reused tokens", async () => {
  await using s = await model.session({ contextSize: 512 });
  const a = await s.generate("Once upon a time", { maxTokens: 12, temperature: 0 });
  assertEquals(a.reusedTokens, 0);
  assertEquals(a.timeline.stage("prompt")!.tokens, a.promptTokens.length);
  const before = s.tokens;
  assertEquals(before, [...a.promptTokens, ...a.tokens], "the session holds the prompt and the reply");
  const b = await s.generate(" And then", { maxTokens: 12, temperature: 0 });
  // in the cache: everything but the last sampled token, which this call evaluates first
  assertEquals(b.reusedTokens, before.length - 1);
  const prompt = b.timeline.stage("prompt")!;
  assertEquals(prompt.reused, before.length - 1);
  assertEquals(prompt.tokens, 1 + b.promptTokens.length, "only the new tokens were evaluated");
  assert(b.timeline.toString().includes(`prompt (+${before.length - 1} reused)`), b.timeline.toString());
  assertEquals(s.tokens, [...before, ...b.promptTokens, ...b.tokens]);

  // The same tokens evaluated from scratch give the same continuation.
  await using fresh = await model.session({ contextSize: 512 });
  const f = await fresh.generate([...before, ...b.promptTokens], { maxTokens: 12, temperature: 0 });
  assertEquals(f.reusedTokens, 0);
  assertEquals(f.tokens, b.tokens);

  // An empty prompt continues where the last call stopped.
  const c = await s.generate("", { maxTokens: 4, temperature: 0 });
  assertEquals(c.promptTokens, []);
  assertEquals(c.timeline.stage("prompt")!.tokens, 1);
  const g = await fresh.generate("", { maxTokens: 4, temperature: 0 });
  assertEquals(c.tokens, g.tokens);
});

Deno.test("chat turns reuse the cache, are tokenized as the whole chat would be, and keep the messages", async () => {
  await using s = await model.session({ contextSize: 1024, systemPrompt: "Be brief." });
  const a = await s.chat("Hi", { maxTokens: 8, temperature: 0 });
  const sys = model.tokenize(
    model.applyChatTemplate([{ role: "system", content: "Be brief." }], { addAssistant: false }),
    {
      parseSpecial: true,
    },
  );
  assertEquals(s.nKeep, sys.length, "nKeep defaults to the system prompt's tokens");
  // The first turn is what Model.chat sends for the same messages.
  const whole = await model.chat([{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }], {
    maxTokens: 8,
    temperature: 0,
  });
  assertEquals(a.promptTokens, whole.promptTokens);
  assertEquals(a.tokens, whole.tokens);
  const b = await s.chat("Tell me more.", { maxTokens: 8, temperature: 0 });
  assert(b.reusedTokens >= a.promptTokens.length + a.tokens.length - 1, `reused ${b.reusedTokens}`);
  assertEquals(s.messages.map((m) => m.role), ["system", "user", "assistant", "user", "assistant"]);
  assertEquals(s.messages[2].content, a.text);
  const text = model.detokenize(s.tokens, { unparseSpecial: true });
  assert(text.includes("<|im_start|>user\nTell me more.<|im_end|>\n<|im_start|>assistant\n"), text);
});

Deno.test("contextShift false stops with contextFull; a follow-up that cannot fit is CONTEXT_OVERFLOW", async () => {
  await using s = await model.session({ contextSize: 256, contextShift: false });
  const r = await s.generate("Once", { maxTokens: 1000, temperature: 0, ignoreEos: true });
  assertEquals(r.stopReason, "contextFull");
  assertEquals(r.shifts, []);
  assertEquals(s.tokens.length, 256 + 1, "a full cache and the last sampled token");
  const e = await assertRejects(() => s.generate(" more", { maxTokens: 4 }), LoupeError, "contextShift is off");
  assertEquals(e.code, "CONTEXT_OVERFLOW");
  assertEquals(s.tokens.length, 257, "the session is as it was");
  assertEquals((await s.logits()).length, model.info.nVocab);
});

Deno.test("a chat that outgrows its context drops whole turns and keeps the system prompt", async () => {
  await using s = await model.session({ contextSize: 256, systemPrompt: "You are a helpful assistant." });
  const shifts = [];
  for (let i = 0; i < 8; i++) {
    const r = await s.chat(`Tell me about the number ${i}.`, { maxTokens: 40, temperature: 0, ignoreEos: true });
    shifts.push(...r.shifts);
    assertEquals(r.tokens.length, 40);
  }
  const nKeep = s.nKeep!;
  const sys = model.tokenize(
    model.applyChatTemplate([{ role: "system", content: "You are a helpful assistant." }], { addAssistant: false }),
    { parseSpecial: true },
  );
  log(`${shifts.length} shifts: ${shifts.map((x) => `-${x.dropped} (${x.cut})`).join(", ")}`);
  assert(shifts.length >= 2, `${shifts.length} shifts`);
  assertEquals(s.tokens.slice(0, nKeep), sys, "the system prompt is never dropped");
  for (const x of shifts) {
    assertEquals(x.position, nKeep);
    assertEquals(x.cut, "turn", "the cut ends at a turn start");
  }
  const after = model.detokenize(s.tokens.slice(nKeep, nKeep + 12), { unparseSpecial: true });
  assert(after.trimStart().startsWith("<|im_start|>user"), `the kept part begins with a whole turn: ${after}`);
  assertEquals(s.messages.length, 1 + 2 * 8, "the messages keep every turn");
  assert(s.tokens.length <= 256 + 1);
});

Deno.test("a prompt longer than the context: Model.generate refuses it, a session drops its oldest part", async () => {
  const long = "word ".repeat(model.info.nCtx + 100);
  const e = await assertRejects(() => model.generate(long, { maxTokens: 2 }), LoupeError);
  assertEquals(e.code, "CONTEXT_OVERFLOW");
  await using s = await model.session({ contextSize: 256 });
  const r = await s.generate(long, { maxTokens: 8, temperature: 0 });
  assertEquals(r.tokens.length, 8);
  assert(r.shifts.length >= 1);
  assertEquals(r.shifts[0].position, 1, "the BOS token stays");
  assert(r.timeline.stage("prompt")!.tokens < r.promptTokens.length, "the dropped tokens were never evaluated");
  assert(s.tokens.length <= 257);
});

Deno.test("CPU: four context lengths with shifts, token for token as llama-completion --context-shift", async () => {
  const r = await runChild(["shift", "tiny", "0"]);
  log(`${r.engine} engine: ${r.tokens.length} tokens, ${r.shifts.length} shifts in ${r.wallMs.toFixed(0)} ms`);
  checkShiftRun(r, "CPU");
  assertEquals(r.nKeep, 1, "without a system prompt the BOS token stays");
  assertEquals(r.devicesUsed, ["CPU"]);
  const ref = await referenceShift();
  assertEquals(r.text, ref, "the same text as llama.cpp's own context shift");
});

Deno.test("CPU: after context shifts the logits equal a fresh evaluation of the kept tokens; save and load continue", async () => {
  const r = await runChild(["shift", "one", "0"]);
  checkShiftRun(r, "CPU, one layer");
  assertEquals(r.nKeep, LOGIT_KEEP);
  checkLogits(r, "CPU");
  checkRestore(r, "CPU");
});

Deno.test("Vulkan engine with gpuLayers 0 (the reported segfault): four context lengths without a crash", async () => {
  const r = await runChild(["shift", "tiny", "0"], VULKAN_ENV);
  log(`Vulkan engine, gpuLayers 0: ${r.tokens.length} tokens, ${r.shifts.length} shifts in ${r.wallMs.toFixed(0)} ms`);
  assertEquals(r.engine, "vulkan");
  checkShiftRun(r, "Vulkan engine, gpuLayers 0");
  assertEquals(r.devicesUsed, ["CPU"]);
  // llama.cpp's own context shift on the same engine (its tool built against the Vulkan libraries)
  const vk = await ensureBuild({ variant: "vulkan", verbose: false });
  const ref = await referenceShift({ extra: ["-ngl", "0"], env: { GGML_VK_VISIBLE_DEVICES: "0" }, engine: vk });
  assertEquals(r.text, ref, "the same text as llama.cpp's own context shift on this engine");
});

Deno.test("save and load: the loaded session continues exactly as the original", async () => {
  await using s = await model.session({ contextSize: 256 });
  const first = await s.generate("Once upon a time", { maxTokens: 300, temperature: 0, ignoreEos: true });
  assert(first.shifts.length >= 1, "the saved state is a shifted one");
  const path = join(dir, "story.session");
  const saved = s.tokens;
  await s.save(path);
  const original = await s.generate(" The end.", { maxTokens: 60, temperature: 0, ignoreEos: true });
  await using loaded = await model.loadSession(path);
  assertEquals(loaded.tokens, saved);
  assertEquals(loaded.nKeep, s.nKeep);
  assertEquals(loaded.contextSize, s.contextSize);
  assertEquals(loaded.contextShift, true);
  const again = await loaded.generate(" The end.", { maxTokens: 60, temperature: 0, ignoreEos: true });
  assertEquals(again.reusedTokens, original.reusedTokens);
  assertEquals(again.tokens, original.tokens, "token for token");
  assertEquals(again.shifts, original.shifts.map((x, i) => ({ ...x, atMs: again.shifts[i]?.atMs })));
  assertEquals(loaded.tokens, s.tokens);
});

Deno.test("save and load a chat: the messages come back and the next turn is the same", async () => {
  await using s = await model.session({ contextSize: 512, systemPrompt: "Be brief." });
  await s.chat("Hi", { maxTokens: 16, temperature: 0 });
  const path = join(dir, "chat.session");
  await s.save(path);
  const original = await s.chat("Why?", { maxTokens: 16, temperature: 0 });
  await using loaded = await model.loadSession(path);
  assertEquals(loaded.systemPrompt, "Be brief.");
  assertEquals(loaded.messages.length, 3);
  const again = await loaded.chat("Why?", { maxTokens: 16, temperature: 0 });
  assertEquals(again.promptTokens, original.promptTokens);
  assertEquals(again.tokens, original.tokens);
  assertEquals(loaded.messages, s.messages);
});

Deno.test("a state file from another model, or no state file at all, is a clear error", async () => {
  await using s = await model.session({ contextSize: 256 });
  await s.generate("Hello", { maxTokens: 4, temperature: 0 });
  const path = join(dir, "tiny.session");
  await s.save(path);
  await using other = await loadModel(await oneLayerModel(), { threads: THREADS });
  const e = await assertRejects(() => other.loadSession(path), LoupeError, "it was saved from another model");
  assertEquals(e.code, "WRONG_MODEL");
  assert(e.message.startsWith(`Cannot load session "${path}": `), e.message);
  assert(e.message.includes(tiny) && e.message.includes(other.path), e.message);
  // the same shapes, name and vocabulary with other weights (another seed) is another model too
  const reseeded = join(dir, "tiny-seed-2.gguf");
  const preset = FIXTURE_PRESETS.tiny;
  await makeTextModel(reseeded, {
    vocabPath: join(build.sourceDir, "models", preset.vocab),
    name: preset.name,
    type: preset.type,
    seed: 2,
  });
  const headerOf = async (p: string) => (await Deno.readFile(p)).subarray(0, (await readGGUFFile(p)).headerSize);
  assertEquals(await headerOf(reseeded), await headerOf(tiny), "the reseeded model's GGUF header is the fixture's");
  await using twin = await loadModel(reseeded, { threads: THREADS });
  const e2 = await assertRejects(() => twin.loadSession(path), LoupeError, "it was saved from another model");
  assertEquals(e2.code, "WRONG_MODEL");

  const notSession = await assertRejects(() => model.loadSession(tiny), LoupeError, "not a loupe session file");
  assertEquals(notSession.code, "BAD_FORMAT");
  assertEquals(
    (await assertRejects(() => model.loadSession(join(dir, "nope")), LoupeError, "no such file")).code,
    "NOT_FOUND",
  );
  const bytes = await Deno.readFile(path);
  const cut = join(dir, "cut.session");
  await Deno.writeFile(cut, bytes.subarray(0, bytes.length - 100));
  const truncated = await assertRejects(() => model.loadSession(cut), LoupeError, "Cannot load session");
  assertEquals(truncated.code, "BAD_FORMAT");
  const damaged = bytes.slice();
  damaged[20] = 0x7b; // inside the JSON header
  const bad = join(dir, "damaged.session");
  await Deno.writeFile(bad, damaged);
  assertEquals((await assertRejects(() => model.loadSession(bad), LoupeError, "damaged")).code, "BAD_FORMAT");
  // all of that left the model working
  assertEquals((await model.generate("Hi", { maxTokens: 2, temperature: 0 })).tokens.length, 2);
});

Deno.test("a shift never cuts an atomic span (an image's tokens); nKeep inside one is refused", async () => {
  const native = internalsOf(model).native;
  const tokens = Int32Array.from({ length: 300 }, (_, i) => 100 + i);
  const run = async (atomic: Array<[number, number]>, turns: number[] = []) => {
    const s = new NativeSession(await native.createContext({ contextSize: 256, threads: THREADS }));
    try {
      s.begin(
        { ...samplingParams({ maxTokens: 0, temperature: 0 }), contextShift: true, nKeep: 1, atomic, turns },
        tokens,
      );
      while (!(await s.context.genStep(1000))) { /* to the end */ }
      const out = s.context.genOutput<{ events: Array<Record<string, unknown>> }>();
      return { events: out.events, kept: Array.from(s.tokens()) };
    } finally {
      s.free();
    }
  };
  const expectKept = (from: number) => [100, ...Array.from({ length: 300 - from }, (_, i) => 100 + from + i)];
  // 300 tokens in 256: half of what follows the head goes (up to token 150)
  const plain = await run([]);
  assertEquals(plain.events[0].cut, "tokens");
  assertEquals(plain.kept, expectKept(150));
  // a turn start after the halfway point: the cut goes there
  const turn = await run([], [50, 180]);
  assertEquals([turn.events[0].cut, turn.events[0].dropped], ["turn", 179]);
  assertEquals(turn.kept, expectKept(180));
  // the halfway point inside a span: the whole span goes
  const image = await run([[100, 200]]);
  assertEquals([image.events[0].cut, image.events[0].dropped], ["atomic", 199]);
  assertEquals(image.kept, expectKept(200));
  // a span that reaches the end stays whole; what is before it goes
  const last = await run([[120, 300]]);
  assertEquals([last.events[0].cut, last.events[0].dropped], ["atomic", 119]);
  assertEquals(last.kept, expectKept(120));
  // a span too big to keep and too big to drop: a clear error
  const e = await assertRejects(
    () => run([[10, 300]]),
    Error,
    "an atomic span (an image) of 290 tokens at 10 cannot be cut",
  );
  assertEquals((e as { status?: number }).status, -4);
  const s = new NativeSession(await native.createContext({ contextSize: 256, threads: THREADS }));
  try {
    const inside = (() => {
      try {
        s.begin(
          { ...samplingParams({ maxTokens: 0 }), contextShift: true, nKeep: 5, atomic: [[3, 8]] },
          tokens.subarray(0, 20),
        );
      } catch (e) {
        return e as Error;
      }
    })();
    assert(inside?.message.includes("nKeep (5) ends inside an atomic span"), inside?.message);
  } finally {
    s.free();
  }
});

Deno.test("two generate calls on one model at once are queued; two sessions run side by side", async () => {
  const prompts = ["Once upon a time", "The quick brown fox"];
  const alone = [];
  for (const p of prompts) alone.push((await model.generate(p, { maxTokens: 24, temperature: 0 })).tokens);
  const both = await Promise.all(prompts.map((p) => model.generate(p, { maxTokens: 24, temperature: 0 })));
  assertEquals(both.map((r) => r.tokens), alone);
  // sessions have their own contexts: their calls overlap, and each gets its own result
  const sessions = await Promise.all(prompts.map(() => model.session({ contextSize: 256 })));
  try {
    const results = await Promise.all(
      sessions.map((s, i) => s.generate(prompts[i], { maxTokens: 24, temperature: 0 })),
    );
    assertEquals(results.map((r) => r.tokens), alone);
    // and a model call at the same time as a session call
    const [m, s] = await Promise.all([
      model.generate(prompts[0], { maxTokens: 24, temperature: 0 }),
      sessions[1].generate(" and", { maxTokens: 8, temperature: 0 }),
    ]);
    assertEquals(m.tokens, alone[0]);
    assertEquals(s.tokens.length, 8);
  } finally {
    for (const s of sessions) await s.closeAsync();
  }
});

Deno.test("close() during a call aborts it and frees after; a closed session or model refuses calls", async () => {
  // a session closed while it streams
  const s = await model.session({ contextSize: 256 });
  const stream = s.stream("Once", { maxTokens: 100_000, temperature: 0, ignoreEos: true });
  for await (const _ of stream) break;
  s.close();
  s.close();
  assertEquals((await stream.result).stopReason, "aborted");
  assertEquals((await assertRejects(() => s.generate("x"), LoupeError, "closed")).code, "CLOSED");
  await s.closeAsync();

  // a model closed while its session generates: the session is closed with it
  const m = await loadModel(tiny, { threads: THREADS });
  const ms = await m.session({ contextSize: 256 });
  const running = ms.generate("Once", { maxTokens: 100_000, temperature: 0, ignoreEos: true });
  const own = m.generate("Once", { maxTokens: 100_000, temperature: 0, ignoreEos: true });
  await new Promise((r) => setTimeout(r, 20));
  m.close();
  assertEquals((await running).stopReason, "aborted");
  assertEquals((await own).stopReason, "aborted");
  assert(ms.closed, "the model closed its session");
  await assertRejects(() => ms.generate("x"), LoupeError, "closed");
  await assertRejects(() => m.session(), LoupeError, "closed");
  await m.closeAsync();

  // a session still being created when its model closes
  const m2 = await loadModel(tiny, { threads: THREADS });
  const opening = m2.session({ contextSize: 256 });
  m2.close();
  const e = await assertRejects(() => opening, LoupeError);
  assertEquals(e.code, "CLOSED");
  await m2.closeAsync();

  // close during a save: the save finishes first, and the file loads
  const saver = await model.session({ contextSize: 256 });
  await saver.generate("Hello", { maxTokens: 8, temperature: 0 });
  const path = join(dir, "closing.session");
  const saving = saver.save(path);
  saver.close();
  await saving;
  await using back = await model.loadSession(path);
  assertEquals(back.tokens.length, saver.tokens.length);
});

Deno.test("closing at random moments never crashes: each call ends aborted or complete", async () => {
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const outcomes: Record<string, number> = {};
  for (let i = 0; i < 16; i++) {
    const m = await loadModel(tiny, { threads: THREADS });
    const sessions = await Promise.all([m.session({ contextSize: 256 }), m.session({ contextSize: 256 })]);
    const calls: Promise<{ stopReason: string }>[] = [
      m.generate("Once", { maxTokens: 200, temperature: 0, ignoreEos: true }),
      ...sessions.map((s) => s.generate("Once", { maxTokens: 200, temperature: 0, ignoreEos: true })),
      sessions[0].save(join(dir, `random-${i}.session`)).then(() => ({ stopReason: "saved" })),
    ];
    await new Promise((r) => setTimeout(r, Math.floor(rand() * 40)));
    if (rand() < 0.5) sessions[Math.floor(rand() * 2)].close();
    m.close();
    for (const r of await Promise.allSettled(calls)) {
      const k = r.status === "fulfilled"
        ? r.value.stopReason
        : r.reason instanceof LoupeError
        ? r.reason.code
        : `untyped: ${r.reason}`;
      outcomes[k] = (outcomes[k] ?? 0) + 1;
    }
    await m.closeAsync();
  }
  log(`outcomes: ${JSON.stringify(outcomes)}`);
  for (const k of Object.keys(outcomes)) assert(["aborted", "maxTokens", "saved", "CLOSED"].includes(k), k);
});

Deno.test("Vulkan (lavapipe, all layers offloaded): four context lengths, the logits after shifts, save and load", async () => {
  const run = await vulkanRun;
  if (!run.ok) throw run.e;
  const r = run.r;
  log(`Vulkan0: ${r.tokens.length} tokens, ${r.shifts.length} shifts in ${(r.wallMs / 1000).toFixed(0)} s`);
  assertEquals(r.engine, "vulkan");
  assertEquals(r.devicesUsed, ["Vulkan0"], "every heavy op ran on lavapipe");
  assertEquals(r.offloaded, 2, "the layer and the output layer are offloaded");
  checkShiftRun(r, "Vulkan, one layer");
  checkLogits(r, "Vulkan0");
  checkRestore(r, "Vulkan0");
});

Deno.test("logit comparison helper: equal, different, argmax", () => {
  const a = Float32Array.of(0, 1, 2);
  assertEquals(compareLogits(a, a), { maxDiff: 0, sameArgmax: true });
  const b = Float32Array.of(0, 3, 2.5);
  assertEquals(compareLogits(a, b).sameArgmax, false);
  assert(Math.abs(compareLogits(a, b).maxDiff - 2) < 1e-6);
});

globalThis.addEventListener("unload", () => {
  model.close();
  Deno.removeSync(dir, { recursive: true });
});
