// Misuse of the public API (issue #14, items 3 and 4 of the fuzz of ~940 misuse calls): a throwing
// callback, special files, wrong-typed arguments and options at every entry point, huge prompts,
// user conditions that were INTERNAL, raw engine messages, logits before any call, a bogus
// requireDevice, leaving a stream's loop, use after close, and close() during an image chat.
// Every failure is a LoupeError whose code is checked and whose message is a sentence naming what
// was wrong; the process stays alive throughout.
import { join } from "node:path";
import { assert, assertEquals } from "../support/assert.ts";
import { THREADS } from "../support/helpers.ts";
import { FakeHub, randomBytes } from "../support/fake_hub.ts";
import { encodePng, picture } from "../support/vision_images.ts";
import {
  cosine,
  embedFixture,
  fixtureModel,
  fixtureProjector,
  loadEmbedder,
  loadModel,
  LoupeError,
  type LoupeErrorCode,
  probeVisionDevice,
  pull,
  resolveModel,
  type TextStream,
  type VisionMessage,
} from "../../mod.ts";
import { familyFixture, makeToneWav } from "../../testing.ts";
import { NativeError } from "../../ffi/util.ts";
import { Status } from "../../ffi/model.ts";
import { wrap } from "../../src/util/native_error.ts";
import { shown } from "../../src/util/check.ts";

const tinyPath = await fixtureModel("tiny");
const { model: visionModelPath, projector: projectorPath } = await fixtureProjector("tiny");
const bertPath = await embedFixture("bert");
const rerankPath = await embedFixture("rerank");
const tmp = await Deno.makeTempDir({ prefix: "loupe-misuse-" });
const fifo = join(tmp, "fifo");
await new Deno.Command("mkfifo", { args: [fifo] }).output();
const greedy = { temperature: 0 } as const;

const model = await loadModel(tinyPath, { threads: THREADS, progress: false });
const bert = await loadEmbedder(bertPath, { threads: THREADS, progress: false });
const tokensBert = await loadEmbedder(bertPath, { threads: THREADS, progress: false, pooling: "none" });
const reranker = await loadEmbedder(rerankPath, { threads: THREADS, progress: false });

/** A sentence with a colon before the detail: `Cannot generate: …`. */
const SENTENCE = /^[A-Z][^:]*: \S/;

/** Runs `fn` (a throw or a rejection alike) and returns its LoupeError, or null when it succeeded. */
async function outcome(fn: () => unknown): Promise<LoupeError | null> {
  try {
    const r = await fn();
    if (r && typeof r === "object" && "result" in r && r.result instanceof Promise) await r.result; // a stream
    return null;
  } catch (e) {
    if (!(e instanceof LoupeError)) {
      throw new Error(`not a LoupeError: ${(e as Error)?.name}: ${(e as Error)?.message}`, { cause: e });
    }
    return e;
  }
}

/** Checks that `fn` fails with `code` and a sentence that includes every one of `names`. */
async function fails(fn: () => unknown, code: LoupeErrorCode, ...names: Array<string | RegExp>): Promise<LoupeError> {
  const e = await outcome(fn);
  assert(e, `expected a ${code} error, but the call succeeded`);
  assertEquals(e.code, code, e.message);
  assert(SENTENCE.test(e.message), `a sentence: ${e.message}`);
  for (const n of names) {
    assert(typeof n === "string" ? e.message.includes(n) : n.test(e.message), `"${e.message}" should name ${n}`);
  }
  return e;
}

function log(msg: string): void {
  console.log(`  ${msg}`);
}

// ---- 1. a throwing onProgress ------------------------------------------------------------

Deno.test("an onProgress that throws rejects the load with INVALID_ARGUMENT whose cause is the thrown error", async () => {
  for (
    const [what, load] of [
      ["loadModel", (onProgress: () => void) => loadModel(tinyPath, { progress: false, onProgress })],
      ["loadEmbedder", (onProgress: () => void) => loadEmbedder(bertPath, { progress: false, onProgress })],
      ["loadProjector", async (onProgress: () => void) => {
        await using m = await loadModel(visionModelPath, { threads: THREADS, progress: false });
        return await m.loadProjector(projectorPath, { warmup: false, progress: false, onProgress });
      }],
    ] as const
  ) {
    const boom = new Error(`boom from ${what}`);
    const e = await fails(
      () =>
        load(() => {
          throw boom;
        }),
      "INVALID_ARGUMENT",
      "the onProgress callback threw",
      boom.message,
    );
    assert(e.cause === boom, `${what}: the cause is the thrown error`);
    assert(/^Cannot load (model|projector) "/.test(e.message), e.message);
    // a callback that throws a non-Error value too
    const e2 = await fails(
      () =>
        load(() => {
          throw "a string";
        }),
      "INVALID_ARGUMENT",
      "onProgress",
    );
    assertEquals(e2.cause, "a string");
  }
  // the process is alive and the same loads work with a well-behaved callback
  const seen: number[] = [];
  await using m = await loadModel(tinyPath, { progress: false, onProgress: (f) => seen.push(f) });
  assertEquals(seen.at(-1), 1);
  assertEquals((await m.generate("Hi", { ...greedy, maxTokens: 2 })).tokens.length, 2);
});

Deno.test("a download's onProgress that throws rejects pull with INVALID_ARGUMENT whose cause is the thrown error", async () => {
  const hub = await FakeHub.start([{
    id: "owner/repo",
    files: [{ path: "model-Q8_0.gguf", data: randomBytes(80_000, 1) }],
  }]);
  const root = await Deno.makeTempDir({ dir: tmp });
  try {
    const opts = { endpoint: hub.endpoint, cacheDir: join(root, "hub"), token: false as const, progress: false };
    const boom = new Error("progress boom");
    const e = await fails(
      () =>
        pull("hf:owner/repo", {
          ...opts,
          onProgress: () => {
            throw boom;
          },
        }),
      "INVALID_ARGUMENT",
      "Cannot download owner/repo: the onProgress callback threw: progress boom",
    );
    assert(e.cause === boom);
    // the next pull works (the partial download was kept or finished)
    assert((await pull("hf:owner/repo", opts)).path.endsWith("model-Q8_0.gguf"));
  } finally {
    await hub.close();
  }
});

// ---- 2. special files --------------------------------------------------------------------

Deno.test("FIFOs and devices are refused by type (NOT_A_FILE) wherever a path is read or written", async () => {
  for (const path of [fifo, "/dev/zero"]) {
    const kind = path === fifo ? "a FIFO" : "a device";
    await fails(() => model.loadSession(path), "NOT_A_FILE", `Cannot load session "${path}": it is ${kind}`);
    await fails(() => loadModel(path), "NOT_A_FILE", `Cannot load model "${path}": it is ${kind}`);
    await fails(() => loadEmbedder(path), "NOT_A_FILE", `Cannot load model "${path}": it is ${kind}`);
    await fails(() => model.loadProjector(path), "NOT_A_FILE", `Cannot load projector "${path}": it is ${kind}`);
  }
  await using s = await model.session({ contextSize: 64 });
  await s.generate("Hi", { ...greedy, maxTokens: 2 });
  for (const [path, kind] of [[fifo, "a FIFO"], ["/dev/null", "a device"], [tmp, "a directory"]]) {
    await fails(() => s.save(path), "NOT_A_FILE", `Cannot save the session to "${path}": it is ${kind}`);
  }
  assert((await Deno.stat("/dev/null")).isCharDevice, "/dev/null is still the device");
  const saved = join(tmp, "ok.session");
  await s.save(saved);
  await s.save(saved); // a regular file is replaced
  await (await model.loadSession(saved)).closeAsync();

  // images and audio given by path
  await using vm = await loadModel(visionModelPath, { threads: THREADS, progress: false });
  await vm.loadProjector(projectorPath, { warmup: false });
  for (const [path, kind] of [[fifo, "a FIFO"], ["/dev/zero", "a device"]]) {
    await fails(
      () => vm.chat([{ role: "user", content: [{ image: path }, "Hi"] }], { maxTokens: 1 }),
      "NOT_A_FILE",
      `Cannot read image 1 ("${path}"): it is ${kind}`,
    );
  }
  const audio = await familyFixture("ultravox");
  await using am = await loadModel(audio.model, { threads: THREADS, progress: false });
  await am.loadProjector(audio.projector, { warmup: false });
  await fails(
    () => am.chat([{ role: "user", content: [{ audio: fifo }, "Hi"] }], { maxTokens: 1 }),
    "NOT_A_FILE",
    `Cannot read audio 1 ("${fifo}"): it is a FIFO`,
  );
  const wav = join(tmp, "tone.wav");
  await Deno.writeFile(wav, makeToneWav({ durationMs: 200, sampleRate: 16000 }));
  const r = await am.chat([{ role: "user", content: [{ audio: wav }, "Hi"] }], { ...greedy, maxTokens: 1 });
  assertEquals(r.tokens.length, 1, "the model goes on");
});

// ---- 3. wrong types at every entry point -------------------------------------------------

/** Wrong values for an option of each kind (null included: only undefined means "not given"). */
const WRONG: Record<string, unknown[]> = {
  number: ["5", null, true, {}, 1.5, -1, NaN],
  integerOrAuto: ["5", null, true, 1.5, "some"],
  boolean: ["yes", 1, null, {}],
  string: [5, null, {}, true],
  nonEmpty: [5, null, {}, true, ""],
  function: ["f", 5, null, {}],
  signal: [{}, "s", true, null, { aborted: false }],
  enum: ["bogus", 5, null],
  count: ["5", null, true, 1.5, -1],
  normalize: ["bogus", null, 0.5, true],
  probe: ["yes", 1, null],
  object: ["x", 5, [], null],
  strings: ["x", [5], null, {}],
  tools: ["x", {}, null, [{}], [{ name: 5 }], [{ name: "f", description: 5 }], [{ name: "f", parameters: "x" }]],
  now: ["x", null, {}, NaN, new Date(NaN)],
  number01: ["0.5", null, true, NaN, Infinity],
  toolCalls: ["x"],
};

const LOAD_FIELDS = {
  gpuLayers: "integerOrAuto",
  device: "nonEmpty",
  contextSize: "number",
  batchSize: "number",
  threads: "number",
  threadsBatch: "number",
  flashAttn: "enum",
  requireDevice: "nonEmpty",
  vocabOnly: "boolean",
  measure: "boolean",
  projector: "nonEmpty",
  onProgress: "function",
  progress: "boolean",
  signal: "signal",
};
const SESSION_FIELDS = {
  contextSize: "number",
  contextShift: "boolean",
  nKeep: "count",
  systemPrompt: "string",
  batchSize: "number",
  threads: "number",
  threadsBatch: "number",
  flashAttn: "enum",
  measure: "boolean",
};
const GENERATE_FIELDS = {
  maxTokens: "count",
  temperature: "number01",
  topK: "number01",
  topP: "number01",
  minP: "number01",
  repeatPenalty: "number01",
  repeatLastN: "number01",
  seed: "number01",
  stop: "strings",
  ignoreEos: "boolean",
  signal: "signal",
  requireDevice: "nonEmpty",
  addSpecial: "boolean",
  parseSpecial: "boolean",
  grammar: "string",
  jsonSchema: "object",
};
const CHAT_FIELDS = {
  ...GENERATE_FIELDS,
  template: "string",
  chatTemplateKwargs: "object",
  now: "now",
  tools: "tools",
  toolChoice: "enum",
  parallelToolCalls: "boolean",
  reasoning: "enum",
};
const TEMPLATE_FIELDS = {
  template: "string",
  chatTemplateKwargs: "object",
  now: "now",
  tools: "tools",
  toolChoice: "enum",
  parallelToolCalls: "boolean",
  reasoning: "enum",
  addAssistant: "boolean",
};
const EMBED_FIELDS = {
  normalize: "normalize",
  truncate: "boolean",
  addSpecial: "boolean",
  parseSpecial: "boolean",
  batchSize: "number",
  requireDevice: "nonEmpty",
  signal: "signal",
};
const PROJECTOR_FIELDS = {
  requireDevice: "nonEmpty",
  device: "nonEmpty",
  gpu: "boolean",
  threads: "number",
  flashAttn: "enum",
  warmup: "boolean",
  measure: "boolean",
  probe: "probe",
  onProgress: "function",
  progress: "boolean",
  signal: "signal",
};
const RESOLVE_FIELDS = {
  endpoint: "nonEmpty",
  cacheDir: "nonEmpty",
  token: "string",
  offline: "boolean",
  projector: "enum",
  urlCacheDir: "nonEmpty",
  retries: "number",
  signal: "signal",
  progress: "boolean",
  onProgress: "function",
};

/** Every option field set to each wrong value of its kind: INVALID_ARGUMENT naming the field and the value. */
async function fuzzOptions(
  label: string,
  fields: Record<string, string>,
  call: (options: Record<string, unknown>) => unknown,
  base: Record<string, unknown> = {},
): Promise<number> {
  let n = 0;
  for (const [field, kind] of Object.entries(fields)) {
    for (const value of WRONG[kind]) {
      const e = await outcome(() => call({ ...base, [field]: value }));
      n++;
      assert(e, `${label} with ${field}: ${shown(value)} succeeded`);
      assertEquals(e.code, "INVALID_ARGUMENT", `${label} with ${field}: ${shown(value)}: ${e.message}`);
      assert(SENTENCE.test(e.message), e.message);
      assert(
        e.message.includes(field === "tools" ? "tool" : `${field} must be`),
        `${label}: "${e.message}" names ${field}`,
      );
      assert(!/json\.exception|TypeError|undefined is not|Cannot read prop/.test(e.message), e.message);
    }
  }
  return n;
}

/** Values for an argument that should be an object, a string or an array, each refused or accepted. */
const ARGS: unknown[] = [null, undefined, 5, "str", [], {}, true, () => {}];

/**
 * Calls `call` with each of ARGS: a LoupeError (never a TypeError) whose code is one of `codes`
 * and whose message is a sentence matching `names`, or a success.
 */
async function fuzzArgument(
  label: string,
  call: (value: unknown) => unknown,
  names: RegExp,
  codes: LoupeErrorCode[] = ["INVALID_ARGUMENT"],
): Promise<number> {
  for (const value of ARGS) {
    const e = await outcome(() => call(value));
    if (!e) continue;
    assert(codes.includes(e.code), `${label}(${shown(value)}): ${e.code}: ${e.message}`);
    assert(SENTENCE.test(e.message), `${label}(${shown(value)}): a sentence: ${e.message}`);
    if (e.code === "INVALID_ARGUMENT") assert(names.test(e.message), `${label}(${shown(value)}): ${e.message}`);
  }
  return ARGS.length;
}

const OPTIONS_NAME = /the options must be an object, not /;

Deno.test("every entry point refuses wrong-typed arguments and options with INVALID_ARGUMENT, never a TypeError", async () => {
  let calls = 0;
  const one = { maxTokens: 1 };
  await using s = await model.session({ contextSize: 128 });
  const vision = await loadModel(visionModelPath, { threads: THREADS, progress: false });
  await vision.loadProjector(projectorPath, { warmup: false });
  const image: VisionMessage[] = [{ role: "user", content: [{ image: picture(8, 8) }, "Hi"] }];
  try {
    // loaders
    calls += await fuzzArgument("loadModel", (v) => loadModel(v as string), /the path or name must be/, [
      "INVALID_ARGUMENT",
      "NOT_FOUND",
    ]);
    calls += await fuzzArgument(
      "loadModel options",
      (v) => loadModel(tinyPath, v as never).then((m) => m.closeAsync()),
      OPTIONS_NAME,
    );
    calls += await fuzzOptions("loadModel", LOAD_FIELDS, (o) => loadModel(tinyPath, o));
    calls += await fuzzArgument("loadEmbedder", (v) => loadEmbedder(v as string), /the path or name must be/, [
      "INVALID_ARGUMENT",
      "NOT_FOUND",
    ]);
    calls += await fuzzArgument(
      "loadEmbedder options",
      (v) => loadEmbedder(bertPath, v as never).then((e) => e.closeAsync()),
      OPTIONS_NAME,
    );
    calls += await fuzzOptions(
      "loadEmbedder",
      { ...LOAD_FIELDS, pooling: "enum", maxSequences: "number" },
      (o) => loadEmbedder(bertPath, o),
    );
    calls += await fuzzArgument("pull", (v) => pull(v as string), /the name must be/);
    calls += await fuzzArgument("pull options", (v) => pull("local.gguf", v as never), OPTIONS_NAME);
    calls += await fuzzOptions("pull", RESOLVE_FIELDS, (o) => pull("local.gguf", o));
    calls += await fuzzArgument("resolveModel", (v) => resolveModel(v as string), /the name must be/);
    calls += await fuzzOptions("resolveModel", RESOLVE_FIELDS, (o) => resolveModel("local.gguf", o));
    calls += await fuzzArgument(
      "probeVisionDevice",
      (v) => probeVisionDevice(v as never),
      /the config must be an object|config\.device must be/,
    );
    calls += await fuzzOptions(
      "probeVisionDevice",
      { cacheFile: "nonEmpty", force: "boolean", timeoutMs: "number", module: "nonEmpty" },
      (o) => probeVisionDevice({ device: "CPU", modelDevices: [], flashAttn: "auto" }, o),
    );

    // the model
    calls += await fuzzArgument("generate", (v) => model.generate(v as string, one), /the prompt must be a string/);
    calls += await fuzzArgument("generate options", (v) => model.generate("Hi", v as never), OPTIONS_NAME);
    calls += await fuzzOptions("generate", GENERATE_FIELDS, (o) => model.generate("Hi", o), one);
    calls += await fuzzArgument("stream", (v) => model.stream(v as string, one), /prompt|messages?/);
    calls += await fuzzOptions("stream", GENERATE_FIELDS, (o) => model.stream("Hi", o), one);
    const hi = [{ role: "user", content: "Hi" }];
    calls += await fuzzArgument("chat", (v) => model.chat(v as never, one), /messages?/);
    calls += await fuzzArgument("chat options", (v) => model.chat(hi, v as never), OPTIONS_NAME);
    calls += await fuzzOptions("chat", CHAT_FIELDS, (o) => model.chat(hi, o), one);
    calls += await fuzzArgument("streamChat", (v) => model.streamChat(v as never, one), /messages?/);
    calls += await fuzzOptions("streamChat", CHAT_FIELDS, (o) => model.streamChat(hi, o), one);
    calls += await fuzzArgument(
      "chat message",
      (v) => model.chat([v] as never, one),
      /message 0 needs/,
    );
    calls += await fuzzArgument(
      "chat tool call",
      (v) => model.chat([{ role: "assistant", content: "", toolCalls: [v] }] as never, one),
      /toolCalls|tool call 0/,
    );
    calls += await fuzzArgument(
      "chat tool call fields",
      (v) =>
        model.chat([{ role: "assistant", content: "", toolCalls: [{ name: "f", id: v, arguments: v }] }] as never, one),
      /tool call 0 of message 0: its (id|arguments) must be|chat template/,
    );
    calls += await fuzzArgument("tokenize", (v) => model.tokenize(v as string), /the text must be a string/);
    calls += await fuzzOptions(
      "tokenize",
      { addSpecial: "boolean", parseSpecial: "boolean" },
      (o) => model.tokenize("Hi", o),
    );
    calls += await fuzzArgument("tokenizeMany", (v) => model.tokenizeMany(v as never), /the texts must be an array/);
    calls += await fuzzArgument(
      "tokenizeMany item",
      (v) => model.tokenizeMany([v] as never),
      /texts must be an array of strings/,
    );
    calls += await fuzzArgument("detokenize", (v) => model.detokenize(v as never), /the tokens must be an array/);
    calls += await fuzzArgument("detokenize item", (v) => model.detokenize([v] as never), /token 0 must be a token id/);
    calls += await fuzzOptions(
      "detokenize",
      { removeSpecial: "boolean", unparseSpecial: "boolean" },
      (o) => model.detokenize([1], o),
    );
    calls += await fuzzArgument("applyChatTemplate", (v) => model.applyChatTemplate(v as never), /messages/);
    calls += await fuzzOptions("applyChatTemplate", TEMPLATE_FIELDS, (o) => model.applyChatTemplate(hi, o));
    calls += await fuzzArgument(
      "chatTemplateInfo",
      (v) => model.chatTemplateInfo(v as string),
      /the template must be a non-empty string/,
    );
    calls += await fuzzArgument("session", (v) => model.session(v as never).then((x) => x.closeAsync()), OPTIONS_NAME);
    calls += await fuzzOptions("session", SESSION_FIELDS, (o) => model.session(o));
    calls += await fuzzArgument("loadSession", (v) => model.loadSession(v as string), /the path must be/, [
      "INVALID_ARGUMENT",
      "NOT_FOUND",
    ]);
    calls += await fuzzOptions(
      "loadSession",
      { batchSize: "number", threads: "number", threadsBatch: "number", flashAttn: "enum", measure: "boolean" },
      (o) => model.loadSession(join(tmp, "none.session"), o),
    );
    calls += await fuzzArgument("loadProjector", (v) => vision.loadProjector(v as string), /the path or name must be/, [
      "INVALID_ARGUMENT",
      "NOT_FOUND",
    ]);
    calls += await fuzzOptions("loadProjector", PROJECTOR_FIELDS, (o) => vision.loadProjector(projectorPath, o));
    calls += await fuzzArgument("image chat options", (v) => vision.chat(image, v as never), OPTIONS_NAME);
    calls += await fuzzOptions("image chat", GENERATE_FIELDS, (o) => vision.chat(image, o), one);
    calls += await fuzzArgument(
      "image part",
      (v) => vision.chat([{ role: "user", content: [{ image: v }, "Hi"] }] as never, one),
      /the image in part 0 of message 0 must be/,
      ["INVALID_ARGUMENT", "NOT_FOUND"],
    );

    // the session
    calls += await fuzzArgument(
      "session.generate",
      (v) => s.generate(v as string, one),
      /the prompt (must be|is empty)/,
    );
    calls += await fuzzArgument("session.generate options", (v) => s.generate("Hi", v as never), OPTIONS_NAME);
    calls += await fuzzOptions("session.generate", GENERATE_FIELDS, (o) => s.generate("Hi", o), one);
    calls += await fuzzArgument("session.generate ids", (v) => s.generate([v] as never, one), /token ids must be/);
    calls += await fuzzArgument("session.stream", (v) => s.stream(v as string, one), /the prompt (must be|is empty)/);
    calls += await fuzzOptions("session.stream", GENERATE_FIELDS, (o) => s.stream("Hi", o), one);
    calls += await fuzzArgument("session.chat", (v) => s.chat(v as never, one), /message|the prompt/);
    calls += await fuzzArgument("session.chat options", (v) => s.chat("Hi", v as never), OPTIONS_NAME);
    calls += await fuzzOptions("session.chat", GENERATE_FIELDS, (o) => s.chat("Hi", o), one);
    calls += await fuzzArgument("session.streamChat", (v) => s.streamChat(v as never, one), /message/);
    calls += await fuzzOptions("session.streamChat", GENERATE_FIELDS, (o) => s.streamChat("Hi", o), one);
    for (const bad of [null, undefined, 5, "", {}, [], true]) {
      await fails(() => s.save(bad as string), "INVALID_ARGUMENT", "Cannot save the session: the path must be");
      calls++;
    }

    // embedders
    calls += await fuzzArgument("embed", (v) => bert.embed(v as never), /the texts must be an array/);
    calls += await fuzzArgument("embed item", (v) => bert.embed([v] as never), /text 0 (must be a string|is empty)/);
    calls += await fuzzArgument("embed options", (v) => bert.embed(["x"], v as never), OPTIONS_NAME);
    calls += await fuzzOptions("embed", EMBED_FIELDS, (o) => bert.embed(["x"], o));
    calls += await fuzzArgument("embedTokens", (v) => tokensBert.embedTokens(v as never), /the texts must be an array/);
    calls += await fuzzOptions("embedTokens", EMBED_FIELDS, (o) => tokensBert.embedTokens(["x"], o));
    calls += await fuzzArgument("rerank query", (v) => reranker.rerank(v as string, ["a"]), /the query must be/);
    calls += await fuzzArgument("rerank documents", (v) => reranker.rerank("q", v as never), /the documents must be/);
    calls += await fuzzOptions("rerank", EMBED_FIELDS, (o) => reranker.rerank("q", ["a"], o));
    calls += await fuzzArgument(
      "cosine",
      (v) => cosine(v as never, [1, 2]),
      /the first must be an array|lengths differ/,
    );
    calls += await fuzzArgument(
      "cosine",
      (v) => cosine([1, 2], v as never),
      /the second must be an array|lengths differ/,
    );
  } finally {
    await vision.closeAsync();
  }
  log(`${calls} misuse calls, each a LoupeError with a sentence or a success`);
  // after all of that the model, session and embedders work
  assertEquals((await model.generate("Hi", { ...greedy, maxTokens: 2 })).tokens.length, 2);
  assertEquals((await s.generate("Hi", { ...greedy, maxTokens: 2 })).tokens.length, 2);
  assertEquals((await bert.embed(["x"])).length, 1);
});

Deno.test("wrong values name the option and what it must be", async () => {
  await fails(
    () => model.generate("x", { maxTokens: "5" as never }),
    "INVALID_ARGUMENT",
    'Cannot generate: maxTokens must be a whole number, not "5"',
  );
  await fails(
    () => model.generate("x", null as never),
    "INVALID_ARGUMENT",
    "Cannot generate: the options must be an object, not null",
  );
  await fails(
    () => model.generate("x", { signal: {} as never }),
    "INVALID_ARGUMENT",
    "signal must be an AbortSignal, not an object",
  );
  await fails(
    () => model.generate("x", { seed: -1 }),
    "INVALID_ARGUMENT",
    "seed must be a whole number from 0 to 4294967295",
  );
  await fails(
    () => loadModel(tinyPath, { flashAttn: "yes" as never }),
    "INVALID_ARGUMENT",
    `flashAttn must be "auto", "on" or "off", not "yes"`,
  );
  await fails(
    () => loadModel(5 as never),
    "INVALID_ARGUMENT",
    "Cannot load model: the path or name must be a non-empty string, not 5",
  );
  await fails(
    () => model.session({ nKeep: -1 }),
    "INVALID_ARGUMENT",
    "Cannot open a session: nKeep must be a whole number ≥ 0, not -1",
  );
  await fails(
    () => bert.embed(["x"], { normalize: "l3" as never }),
    "INVALID_ARGUMENT",
    'normalize must be "l2", "none", "max" or a number p ≥ 1, not "l3"',
  );
  await fails(
    () => model.detokenize([1.5]),
    "INVALID_ARGUMENT",
    "Cannot detokenize: token 0 must be a token id (a whole number ≥ 0), not 1.5",
  );
});

// ---- 4. no spread of unbounded arrays ------------------------------------------------------

Deno.test("a 1M-character prompt is a typed error, not a stack overflow", async () => {
  const huge = "a ".repeat(500_000);
  await using s = await model.session({ contextSize: 256, contextShift: false });
  await fails(() => s.generate(huge, { maxTokens: 1 }), "CONTEXT_OVERFLOW", "Cannot generate: the prompt has");
  await fails(() => s.chat(huge, { maxTokens: 1 }), "CONTEXT_OVERFLOW", "Cannot generate: the prompt has");
  await using sys = await model.session({ contextSize: 256, contextShift: false, systemPrompt: huge });
  await fails(() => sys.generate("x", { maxTokens: 1 }), "CONTEXT_OVERFLOW", "tokens but the context holds");
  await fails(() => model.generate(huge, { maxTokens: 1 }), "CONTEXT_OVERFLOW", "Cannot generate:");
  // the timeline's text table of a long call has its widths without a spread either
  const r = await s.generate("Hi", { ...greedy, maxTokens: 2 });
  assert(r.timeline.toString().includes("generation"));
});

// ---- 5 and 6. codes of user conditions; the engine's raw words ---------------------------

Deno.test("user conditions are not INTERNAL; option values are checked before the engine's JSON reader sees them", async () => {
  // a template the engine cannot parse or that raises: the caller's template, INVALID_ARGUMENT
  await fails(() => model.chatTemplateInfo("{% if %}"), "INVALID_ARGUMENT", "Cannot use the chat template");
  await fails(
    () => model.applyChatTemplate([{ role: "user", content: "x" }], { template: "{{ raise_exception('no') }}" }),
    "INVALID_ARGUMENT",
    /^Cannot (use|apply) the chat template: /,
    "no",
  );
  await fails(
    () => model.chat([{ role: "user", content: "x" }], { grammar: 5 as never }),
    "INVALID_ARGUMENT",
    "Cannot chat: grammar must be a GBNF string, not 5",
  );
  await fails(
    () => model.chatTemplateInfo(5 as never),
    "INVALID_ARGUMENT",
    "the template must be a non-empty string, not 5",
  );
  // values that go to the engine as JSON: refused in TypeScript, by name, never "[json.exception…]"
  for (
    const [call, detail] of [
      [() => loadModel(tinyPath, { measure: "no" as never }), 'measure must be true or false, not "no"'],
      [() => loadModel(tinyPath, { vocabOnly: "no" as never }), 'vocabOnly must be true or false, not "no"'],
      [() => loadEmbedder(bertPath, { measure: "no" as never }), 'measure must be true or false, not "no"'],
      [() => model.session({ contextShift: "no" as never }), 'contextShift must be true or false, not "no"'],
      [() => model.session({ measure: "no" as never }), 'measure must be true or false, not "no"'],
      [() => model.generate("x", { ignoreEos: "no" as never }), 'ignoreEos must be true or false, not "no"'],
      [() => model.loadProjector(projectorPath, { measure: "no" as never }), 'measure must be true or false, not "no"'],
      [
        () => model.chat([{ role: "user", content: "x" }], { tools: [{ name: "f", description: 5 as never }] }),
        `tool "f"'s description must be a string, not 5`,
      ],
    ] as const
  ) {
    const e = await fails(call, "INVALID_ARGUMENT", detail);
    assert(!e.message.includes("json.exception"), e.message);
  }
  // where an engine message is passed on, it is the detail of a sentence; a JSON reader's is reworded
  const raw = "invalid parameters: [json.exception.type_error.302] type must be boolean, but is string";
  const e = wrap(new NativeError(Status.INVALID, raw), "Cannot generate");
  assertEquals(e.code, "INVALID_ARGUMENT");
  assertEquals(
    e.message,
    "Cannot generate: the engine could not read a parameter loupe sent it (type must be boolean, but is string)",
  );
  assertEquals(e.nativeMessage, raw, "the engine's words are kept whole in nativeMessage");
  const plain = wrap(new NativeError(Status.DECODE, "llama_decode failed"), "Cannot generate");
  assertEquals([plain.code, plain.message], ["DECODE_FAILED", "Cannot generate: llama_decode failed"]);
});

// ---- 7. logits before any call -----------------------------------------------------------

Deno.test("session.logits() before any call says that nothing was evaluated (INVALID_ARGUMENT), after one gives the logits", async () => {
  await using s = await model.session({ contextSize: 64 });
  await fails(() => s.logits(), "INVALID_ARGUMENT", "Cannot read the logits: no token has been evaluated yet");
  await s.generate("Hi", { ...greedy, maxTokens: 1 });
  assertEquals((await s.logits()).length, model.info.nVocab);
  s.close();
  await fails(() => s.logits(), "CLOSED", "Cannot use the session: it is closed");
});

// ---- 8. requireDevice values -------------------------------------------------------------

Deno.test('a per-call requireDevice that is no device is INVALID_ARGUMENT listing the accepted values, not "ran on the wrong device"', async () => {
  const accepted = /requireDevice must be "gpu", "cpu" or "CPU"|requireDevice must be "gpu", "cpu", .*"CPU"/;
  await fails(
    () => model.generate("x", { maxTokens: 1, requireDevice: "bogus" }),
    "INVALID_ARGUMENT",
    accepted,
    'not "bogus"',
  );
  await fails(
    () => model.chat([{ role: "user", content: "x" }], { requireDevice: "bogus" }),
    "INVALID_ARGUMENT",
    accepted,
  );
  await fails(() => model.stream("x", { requireDevice: "bogus" }), "INVALID_ARGUMENT", accepted);
  await using s = await model.session({ contextSize: 64 });
  await fails(() => s.generate("x", { requireDevice: "bogus" }), "INVALID_ARGUMENT", accepted);
  await fails(() => s.chat("x", { requireDevice: "Vulkan9" }), "INVALID_ARGUMENT", accepted, 'not "Vulkan9"');
  await fails(
    () => bert.embed(["x"], { requireDevice: "bogus" }),
    "INVALID_ARGUMENT",
    "Cannot embed: requireDevice must be",
  );
  await fails(
    () => reranker.rerank("q", ["a"], { requireDevice: "bogus" }),
    "INVALID_ARGUMENT",
    "Cannot rerank: requireDevice",
  );
  await using vm = await loadModel(visionModelPath, { threads: THREADS, progress: false });
  await vm.loadProjector(projectorPath, { warmup: false });
  const image: VisionMessage[] = [{ role: "user", content: [{ image: picture(8, 8) }, "Hi"] }];
  await fails(
    () => vm.chat(image, { requireDevice: "bogus" }),
    "INVALID_ARGUMENT",
    "Cannot chat: requireDevice must be",
  );
  // accepted values, in any case, still work (the CPU is every engine's device)
  assertEquals((await model.generate("x", { ...greedy, maxTokens: 1, requireDevice: "CPU" })).tokens.length, 1);
  assertEquals((await s.generate("x", { ...greedy, maxTokens: 1, requireDevice: "cpu" })).tokens.length, 1);
});

// ---- 9. leaving a stream's loop stops the generation -------------------------------------

/** Breaks out of `stream` after its first piece; returns the result and how long the break took to free the model. */
async function breakEarly(stream: TextStream): Promise<{ tokens: number; stopReason: string }> {
  let pieces = 0;
  for await (const _ of stream) {
    if (++pieces === 1) break;
  }
  const r = await stream.result;
  return { tokens: r.tokens.length, stopReason: r.stopReason };
}

Deno.test("breaking out of a stream's loop stops the generation; the next call starts at once", async () => {
  const long = { ...greedy, maxTokens: 100_000, ignoreEos: true };
  const four = { ...greedy, maxTokens: 4, ignoreEos: true };
  await using s = await model.session({ contextSize: 4096 });
  await using vm = await loadModel(visionModelPath, { threads: THREADS, progress: false });
  await vm.loadProjector(projectorPath, { warmup: false });
  const image: VisionMessage[] = [{ role: "user", content: [{ image: picture(16, 16) }, "Go"] }];
  for (
    const [what, start, next] of [
      ["model.stream", () => model.stream("Once upon a time", long), () => model.generate("Hi", four)],
      [
        "model.streamChat",
        () => model.streamChat([{ role: "user", content: "Hi" }], long),
        () => model.generate("Hi", four),
      ],
      ["session.stream", () => s.stream("Once upon a time", long), () => s.generate(" Hi", four)],
      ["session.streamChat", () => s.streamChat("Tell me a story.", long), () => s.chat("Hi", four)],
      ["image streamChat", () => vm.streamChat(image, long), () => vm.chat(image, four)],
    ] as const
  ) {
    const t0 = performance.now();
    const r = await breakEarly(start());
    const stopMs = performance.now() - t0;
    assertEquals(r.stopReason, "aborted", `${what}: the result says it was stopped`);
    // a streaming step is at most 8 tokens: the loop stops at the next one, not at 100 000
    assert(r.tokens < 64, `${what}: ${r.tokens} tokens ran after the break`);
    const t1 = performance.now();
    const after = await next();
    const nextMs = performance.now() - t1;
    assertEquals(after.tokens.length, 4, `${what}: the next call runs`);
    assert(nextMs < 10_000, `${what}: the next call took ${nextMs.toFixed(0)} ms`);
    log(`${what}: ${r.tokens} tokens, stopped in ${stopMs.toFixed(0)} ms; the next call took ${nextMs.toFixed(0)} ms`);
  }
  // parts() too, and a loop that ends normally is not stopped
  const st = model.stream("Hi", { ...greedy, maxTokens: 100_000, ignoreEos: true });
  for await (const _ of st.parts()) break;
  assertEquals((await st.result).stopReason, "aborted");
  const whole = model.stream("Hi", { ...greedy, maxTokens: 6, ignoreEos: true });
  for await (const _ of whole) { /* to the end */ }
  assertEquals([(await whole.result).stopReason, (await whole.result).tokens.length], ["maxTokens", 6]);
  // the caller's own signal still works alongside
  const ac = new AbortController();
  const own = model.stream("Hi", { ...long, signal: ac.signal });
  let n = 0;
  for await (const _ of own) if (++n === 1) ac.abort();
  assertEquals((await own.result).stopReason, "aborted");
});

// ---- 10. use after close is CLOSED everywhere --------------------------------------------

Deno.test("every method of a closed model, session, embedder and projector is CLOSED", async () => {
  const m = await loadModel(visionModelPath, { threads: THREADS, progress: false });
  const p = await m.loadProjector(projectorPath, { warmup: false });
  const s = await m.session({ contextSize: 64 });
  await s.generate("Hi", { maxTokens: 1 });
  const saved = join(tmp, "closed.session");
  await s.save(saved);
  s.close();
  const sessionClosed = "Cannot use the session: it is closed";
  await fails(() => s.generate("x"), "CLOSED", sessionClosed);
  await fails(() => s.generate(5 as never, null as never), "CLOSED", sessionClosed); // closed comes first
  await fails(() => s.stream("x"), "CLOSED", sessionClosed);
  await fails(() => s.chat("x"), "CLOSED", sessionClosed);
  await fails(() => s.streamChat("x"), "CLOSED", sessionClosed);
  await fails(() => s.logits(), "CLOSED", sessionClosed);
  await fails(() => s.save(join(tmp, "x.session")), "CLOSED", sessionClosed);
  s.close(); // idempotent
  await s.closeAsync();

  const s2 = await m.session({ contextSize: 64 });
  await m.closeAsync();
  assert(p.closed && s2.closed, "the projector and the session closed with their model");
  const modelClosed = `Cannot use model "${visionModelPath}": it is closed`;
  const msg = [{ role: "user", content: "x" }];
  const image: VisionMessage[] = [{ role: "user", content: [{ image: picture(8, 8) }, "Hi"] }];
  await fails(() => m.tokenize("x"), "CLOSED", modelClosed);
  await fails(() => m.tokenizeMany(["x"]), "CLOSED", modelClosed);
  await fails(() => m.detokenize([1]), "CLOSED", modelClosed);
  await fails(() => m.applyChatTemplate(msg), "CLOSED", modelClosed);
  await fails(() => m.chatTemplateInfo(), "CLOSED", modelClosed);
  await fails(() => m.generate("x"), "CLOSED", modelClosed);
  await fails(() => m.generate(5 as never, null as never), "CLOSED", modelClosed);
  await fails(() => m.chat(msg), "CLOSED", modelClosed);
  await fails(() => m.chat(image), "CLOSED", modelClosed);
  await fails(() => m.stream("x"), "CLOSED", modelClosed);
  await fails(() => m.streamChat(msg), "CLOSED", modelClosed);
  await fails(() => m.streamChat(image), "CLOSED", modelClosed);
  await fails(() => m.session(), "CLOSED", modelClosed);
  await fails(() => m.loadSession(saved), "CLOSED", modelClosed);
  await fails(() => m.loadProjector(projectorPath), "CLOSED", modelClosed);
  await fails(() => m.loadProjector(5 as never), "CLOSED", modelClosed);
  await fails(() => s2.generate("x"), "CLOSED", "Cannot use the session");
  await fails(() => s2.logits(), "CLOSED", "Cannot use the session");
  // a projector has no calls of its own: closing it again is a no-op, and the model's image chat says it is gone
  p.close();
  await p.closeAsync();
  await using m2 = await loadModel(visionModelPath, { threads: THREADS, progress: false });
  const p2 = await m2.loadProjector(projectorPath, { warmup: false });
  await p2.closeAsync();
  await fails(() => m2.chat(image), "INVALID_ARGUMENT", "Cannot chat with images: no projector is loaded");

  for (
    const [e, pooling] of [[await loadEmbedder(bertPath), "cls"], [await loadEmbedder(rerankPath), "rank"]] as const
  ) {
    await e.closeAsync();
    const closed = `Cannot use embedder "${e.path}": it is closed`;
    await fails(() => e.embed(["x"]), "CLOSED", closed);
    await fails(() => e.embedTokens(["x"]), "CLOSED", closed);
    await fails(() => e.rerank("q", ["a"]), "CLOSED", closed);
    await fails(() => e.rerank(5 as never, null as never), "CLOSED", closed);
    e.close();
    log(`embedder (${pooling}) after close: CLOSED for embed, embedTokens and rerank`);
  }
});

// ---- 11. close() during an image chat ----------------------------------------------------

/**
 * Starts a streamed image chat and closes with `close` after `delay` ms, or at its first piece
 * (then it is surely generating); the result and the milliseconds from close() to the end.
 */
async function closeDuring(
  stream: () => TextStream,
  close: () => void,
  delay: number | "first piece",
): Promise<[{ stopReason: string; tokens: number[] }, number]> {
  const running = stream();
  let t0 = 0;
  const closeNow = () => {
    if (t0) return;
    t0 = performance.now();
    close();
  };
  if (delay === "first piece") {
    for await (const _ of running) closeNow(); // the loop goes on to the end: the stream is not left early
  } else {
    await new Promise((r) => setTimeout(r, delay));
    closeNow();
  }
  const r = await running.result;
  return [r, performance.now() - t0];
}

Deno.test("close() during an image chat stops it: the session's, the model's and the projector's", async () => {
  const big = await encodePng(picture(2500, 2500)); // its decode takes a while
  const raw = picture(64, 64);
  // 5000 tokens: the session shifts and the model's 8192 cells do not fill, so only close() ends the call
  const long = { ...greedy, maxTokens: 5000, ignoreEos: true };
  const turn = (image: Uint8Array | typeof raw): VisionMessage[] => [{ role: "user", content: [{ image }, "Go"] }];
  // during the decode of the PNG, the encode, the prompt, and the generation
  for (const delay of [5, 30, 300, "first piece"] as const) {
    for (const [label, image] of [["a PNG", big], ["raw pixels", raw]] as const) {
      await using m = await loadModel(visionModelPath, { threads: THREADS, progress: false, contextSize: 8192 });
      const p = await m.loadProjector(projectorPath, { warmup: false });
      const s = await m.session({ contextSize: 4096 });
      const results: Array<[string, { stopReason: string; tokens: number[] }, number]> = [
        ["session", ...await closeDuring(() => s.streamChat(turn(image), long), () => s.close(), delay)],
        ["projector", ...await closeDuring(() => m.streamChat(turn(image), long), () => p.close(), delay)],
      ];
      await m.loadProjector(projectorPath, { warmup: false });
      results.push(["model", ...await closeDuring(() => m.streamChat(turn(image), long), () => m.close(), delay)]);
      for (const [whose, r, ms] of results) {
        const what = `${whose} closed ${delay === "first piece" ? "at the first piece of" : `${delay} ms into`} ` +
          `an image chat with ${label}`;
        assertEquals(r.stopReason, "aborted", what);
        assert(
          r.tokens.length < long.maxTokens && ms < 5000,
          `${what}: ${r.tokens.length} tokens, ${ms.toFixed(0)} ms after close`,
        );
        if (delay === "first piece") assert(r.tokens.length > 0, `${what}: it was generating`);
      }
      log(
        `${label}, close ${delay === "first piece" ? "at the first piece" : `after ${delay} ms`}: ${
          results.map(([w, r, ms]) => `${w} ${r.tokens.length} tokens, ${ms.toFixed(0)} ms`).join("; ")
        }`,
      );
    }
  }
});

// ---- 12. the codes are documented --------------------------------------------------------

Deno.test("every LoupeErrorCode has one line in the README's Errors table and in the type's doc comment", async () => {
  const source = await Deno.readTextFile(new URL("../../src/util/errors.ts", import.meta.url));
  const union = source.slice(
    source.indexOf("export type LoupeErrorCode"),
    source.indexOf(";", source.indexOf("export type LoupeErrorCode")),
  );
  const codes = [...union.matchAll(/"([A-Z_]+)"/g)].map((m) => m[1]);
  assert(codes.includes("NOT_ENOUGH_MEMORY") && codes.includes("INTERNAL"), codes.join(", "));
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const section = readme.slice(
    readme.indexOf("### Errors"),
    readme.indexOf("\n### ", readme.indexOf("### Errors") + 1),
  );
  const rows = [...section.matchAll(/^\| `([A-Z_]+)` +\| (.+?) +\|$/gm)].map((m) => m[1]);
  assertEquals(rows, codes, "the README's table lists the codes in the type's order");
  const doc = source.slice(0, source.indexOf("export type LoupeErrorCode"));
  for (const c of codes) assert(doc.includes(` * - \`${c}\`: `), `the doc comment explains ${c}`);
});
