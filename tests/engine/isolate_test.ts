// Isolated models (`isolate: true`): the engine in a worker process of its own. Answers equal
// llama.cpp's own completion tool; an engine that aborts, or a worker killed, is ENGINE_CRASHED
// in this process, which lives on. (The whole model suite also runs with LOUPE_ISOLATE=1: .ci/run.)
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { fixture, referenceCompletion, THREADS } from "../support/helpers.ts";
import { loadEmbedder, loadModel, LoupeError } from "../../mod.ts";
import { embedFixture } from "../../src/fixtures/embed.ts";

const tiny = await fixture("tiny");
const opts = { threads: THREADS, contextSize: 512, isolate: true };

/** Ids of this process's live child processes (from /proc). */
function children(): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === Deno.pid && fields[0] !== "Z") out.push(Number(e.name));
    } catch { /* it ended meanwhile */ }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

Deno.test("an isolated model answers as llama-completion does: generate, stream, a session saved and loaded", async () => {
  await using model = await loadModel(tiny, opts);
  assert(model.isolated && model.workerPid !== null && model.workerPid !== Deno.pid);
  assert(children().includes(model.workerPid!), "the worker is a child process of this one");
  const prompt = "Once upon a time";
  const ref = await referenceCompletion(tiny, prompt, 24);
  const r = await model.generate(prompt, { maxTokens: 24, temperature: 0 });
  assertEquals(r.text, ref);
  assert(r.timeline.stage("generation")!.devices.CPU.heavy > 0, "the worker's measured placement comes back");
  let streamed = "";
  for await (const part of model.stream(prompt, { maxTokens: 24, temperature: 0 })) streamed += part;
  assertEquals(streamed, ref);
  // a session: tokens, logits, save and load across the process boundary (files are shared)
  const dir = await Deno.makeTempDir();
  try {
    await using s = await model.session();
    const first = await s.generate(prompt, { maxTokens: 8, temperature: 0 });
    const logits = await s.logits();
    assertEquals(logits.length, model.info.nVocab);
    const saved = s.tokens;
    assert(saved.length > first.tokens.length);
    await s.save(`${dir}/s.bin`);
    const rest = await s.generate(" and", { maxTokens: 8, temperature: 0 });
    await using loaded = await model.loadSession(`${dir}/s.bin`);
    assertEquals(loaded.tokens, saved);
    assertEquals((await loaded.generate(" and", { maxTokens: 8, temperature: 0 })).text, rest.text);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an isolated embedder's vectors equal the in-process embedder's", async () => {
  const bert = await embedFixture("bert");
  await using inside = await loadEmbedder(bert, { threads: THREADS });
  await using apart = await loadEmbedder(bert, { threads: THREADS, isolate: true });
  assert(apart.isolated && !inside.isolated);
  const texts = ["the cat sat on the mat", "a dog ran far away", "hello"];
  const a = await inside.embed(texts);
  const b = await apart.embed(texts);
  for (let i = 0; i < texts.length; i++) assertEquals(Array.from(b[i]), Array.from(a[i]));
});

Deno.test("an engine abort in the worker is ENGINE_CRASHED with the assertion text; later calls too; this process lives and loads again", async () => {
  // the test hook makes the worker's token loop end in ggml_abort, as a failed GGML_ASSERT does
  Deno.env.set("LOUPE_TEST_ENGINE_ABORT", "loupe_ctx_gen_step");
  let model;
  try {
    model = await loadModel(tiny, opts);
  } finally {
    Deno.env.delete("LOUPE_TEST_ENGINE_ABORT");
  }
  const pid = model.workerPid!;
  const e = await assertRejects(() => model.generate("Hello", { maxTokens: 8 }), LoupeError);
  assertEquals(e.code, "ENGINE_CRASHED");
  assertEquals(e.crash?.signal, "SIGABRT");
  assert(e.message.includes("GGML_ASSERT(loupe_ctx_gen_step test hook) failed"), e.message);
  assert(e.crash!.stderr.includes("GGML_ASSERT"), "the worker's stderr comes with it");
  assert(model.crashed);
  assertEquals(assertThrowsCode(() => model.tokenize("Hi")), "ENGINE_CRASHED");
  assertEquals((await assertRejects(() => model.generate("Hi", { maxTokens: 2 }), LoupeError)).code, "ENGINE_CRASHED");
  await model.closeAsync();
  assert(!alive(pid));
  await using again = await loadModel(tiny, opts);
  assertEquals((await again.generate("Hi", { maxTokens: 3, temperature: 0 })).tokens.length, 3);
});

function assertThrowsCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert(e instanceof LoupeError, String(e));
    return e.code;
  }
  throw new Error("it did not throw");
}

Deno.test("a worker killed with SIGKILL mid-stream: the stream ends with ENGINE_CRASHED naming the signal", async () => {
  await using model = await loadModel(tiny, opts);
  const pid = model.workerPid!;
  let parts = 0;
  const e = await assertRejects(async () => {
    for await (const _ of model.stream("Once upon a time", { maxTokens: 400, ignoreEos: true })) {
      if (++parts === 2) Deno.kill(pid, "SIGKILL");
    }
  }, LoupeError);
  assertEquals(e.code, "ENGINE_CRASHED");
  assertEquals(e.crash?.signal, "SIGKILL");
  assert(parts >= 2 && parts < 400, `${parts} parts`);
  assert(model.crashed);
});

Deno.test("close() during a call: the call ends early, the worker process exits", async () => {
  const model = await loadModel(tiny, opts);
  const pid = model.workerPid!;
  let parts = 0;
  let closed: Promise<void> | null = null;
  const ended = await (async () => {
    for await (const _ of model.stream("Once upon a time", { maxTokens: 400, ignoreEos: true })) {
      if (++parts === 1) closed = model.closeAsync();
    }
    return "ended";
  })().catch((e) => (e as LoupeError).code);
  await closed;
  assert(["ended", "CLOSED", "ABORTED"].includes(ended), ended);
  assert(parts < 400, `${parts} parts: the call went on after close()`);
  assert(!alive(pid), "the worker exited");
  assert(!model.crashed, "a close is not a crash");
});

Deno.test("100 isolated load/close cycles leave no process behind and no growth", async () => {
  const before = children().length;
  const rss = () => Deno.memoryUsage().rss;
  const cycle = async () => {
    const m = await loadModel(tiny, { ...opts, contextSize: 64 });
    m.tokenize("hi");
    await m.closeAsync();
  };
  for (let i = 0; i < 10; i++) await cycle(); // warm
  const warm = rss();
  for (let i = 0; i < 90; i++) await cycle();
  const grown = rss() - warm;
  assertEquals(children().length, before, "no worker left");
  assert(grown < 32 * 2 ** 20, `RSS grew ${(grown / 2 ** 20).toFixed(1)} MiB over 90 cycles`);
});
