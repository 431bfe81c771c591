// Structured output, tool calls, reasoning parsing and bad input through the engine's chat layer,
// on fixture models: their weights are random, so only the grammar can make their output valid.
// Outputs are checked with ajv, a JSON Schema validator from npm that shares no code with loupe
// or llama.cpp.
// deno-lint-ignore no-import-prefix -- a test-only validator, fetched by Deno from npm (see README, Tests)
import AjvModule from "npm:ajv@8";
import { assert, assertEquals, assertRejects, assertThrows } from "../support/assert.ts";
import { build, fixture } from "../support/helpers.ts";
import { loadModel, LoupeError } from "../../mod.ts";
import { makeTextModel } from "../../src/fixtures/text.ts";
import { internalsOf } from "../../src/generate/internals.ts";
import { parseReply, prepareChat } from "../../src/chat/chat.ts";

/** ajv's CommonJS default export, as Deno sees it. */
const Ajv = AjvModule.default;

const templates = `${build.sourceDir}/models/templates`;
const dir = await Deno.makeTempDir({ prefix: "loupe-chat-" });
/** A fixture model with the Qwen2 vocabulary (it has chatml's `<|im_start|>`/`<|im_end|>`). */
const qwenPath = `${dir}/qwen.gguf`;
await makeTextModel(qwenPath, {
  vocabPath: `${build.sourceDir}/models/ggml-vocab-qwen2.gguf`,
  chatTemplate: await Deno.readTextFile(`${templates}/Qwen-Qwen2.5-7B-Instruct.jinja`),
});

const SCHEMA = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 12 },
    age: { type: "integer", minimum: 0, maximum: 150 },
    tags: { type: "array", items: { enum: ["a", "b", "c"] }, maxItems: 3 },
  },
  required: ["name", "age", "tags"],
  additionalProperties: false,
};

const WEATHER = {
  name: "get_weather",
  description: "The weather in a city",
  parameters: {
    type: "object",
    properties: { city: { type: "string", maxLength: 16 }, days: { type: "integer", minimum: 1, maximum: 7 } },
    required: ["city", "days"],
    additionalProperties: false,
  },
};

Deno.test("a GBNF grammar yields only its strings", async () => {
  await using model = await loadModel(await fixture("tiny"));
  for (let seed = 1; seed <= 8; seed++) {
    const r = await model.generate("Answer:", {
      grammar: 'root ::= "yes" | "no"',
      temperature: 1,
      seed,
      maxTokens: 16,
    });
    assert(r.text === "yes" || r.text === "no", `seed ${seed}: ${JSON.stringify(r.text)}`);
    assertEquals(r.stopReason, "eos");
    assert(r.timeline.stage("grammar"), "the grammar has its own stage");
  }
  // without the grammar the random model says anything but that
  const free = await model.generate("Answer:", { temperature: 1, seed: 1, maxTokens: 16 });
  assert(free.text !== "yes" && free.text !== "no");
});

Deno.test("jsonSchema output validates against the schema for 20 seeds (ajv)", async () => {
  await using model = await loadModel(qwenPath);
  const validate = new Ajv().compile(SCHEMA);
  for (let seed = 1; seed <= 20; seed++) {
    const r = await model.chat([{ role: "user", content: "Who are you?" }], {
      jsonSchema: SCHEMA,
      temperature: 1,
      seed,
      maxTokens: 200,
    });
    assert(r.json !== undefined, `seed ${seed}: not JSON: ${JSON.stringify(r.text)}`);
    assert(validate(r.json), `seed ${seed}: ${JSON.stringify(r.json)}: ${JSON.stringify(validate.errors)}`);
    assertEquals(JSON.parse(r.text), r.json);
    assertEquals(r.timeline.stages.slice(0, 2).map((s) => s.name), ["template", "grammar"]);
  }
});

Deno.test('toolChoice "required" yields a call whose arguments validate', async () => {
  await using model = await loadModel(qwenPath);
  const validate = new Ajv().compile(WEATHER.parameters);
  for (let seed = 1; seed <= 3; seed++) {
    const r = await model.chat([{ role: "user", content: "Weather in Paris?" }], {
      tools: [WEATHER],
      toolChoice: "required",
      temperature: 1,
      seed,
      maxTokens: 200,
    });
    assertEquals(r.stopReason, "toolCalls", `seed ${seed}: ${JSON.stringify(r.text)}`);
    assertEquals(r.toolCalls!.length >= 1, true);
    assertEquals(r.toolCalls![0].name, "get_weather");
    assert(validate(r.toolCalls![0].arguments), JSON.stringify(r.toolCalls![0].arguments));
    // the round trip: the call and its answer go back into the conversation
    const prompt = model.applyChatTemplate([
      { role: "user", content: "Weather in Paris?" },
      { role: "assistant", content: "", toolCalls: r.toolCalls },
      { role: "tool", toolCallId: r.toolCalls![0].id, content: '{"temp": 21}' },
    ], { tools: [WEATHER] });
    assert(prompt.includes("<tool_response>") && prompt.includes('"get_weather"'), prompt);
  }
});

Deno.test("recorded replies in real formats parse into tool calls and reasoning", async () => {
  const cases: Array<{ template: string; text: string; tools: boolean; expect: Record<string, unknown> }> = [
    {
      template: "Qwen-Qwen2.5-7B-Instruct.jinja", // Hermes-style <tool_call>
      tools: true,
      text: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>',
      expect: { text: "", toolCalls: [{ name: "get_weather", arguments: { city: "Paris", days: 2 } }] },
    },
    {
      template: "meta-llama-Llama-3.3-70B-Instruct.jinja", // Llama 3.x JSON
      tools: true,
      text: '{"type": "function", "name": "get_weather", "parameters": {"city": "Paris", "days": 2}}',
      expect: { toolCalls: [{ name: "get_weather", arguments: { city: "Paris", days: 2 } }] },
    },
    {
      template: "mistralai-Mistral-Nemo-Instruct-2407.jinja", // Mistral [TOOL_CALLS]
      tools: true,
      text: '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}, "id": "abcdef123"}]',
      expect: { toolCalls: [{ name: "get_weather", arguments: { city: "Paris", days: 2 } }] },
    },
    {
      template: "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", // DeepSeek R1 <think>
      tools: false,
      text: "Let me think: 2+2 is 4.\n</think>\n\nThe answer is 4.",
      expect: { text: "The answer is 4.", reasoning: "Let me think: 2+2 is 4.", toolCalls: [] },
    },
  ];
  await using model = await loadModel(`${build.sourceDir}/models/ggml-vocab-llama-bpe.gguf`, { vocabOnly: true });
  const chats = internalsOf(model).chats;
  for (const c of cases) {
    const template = await Deno.readTextFile(`${templates}/${c.template}`);
    const options = { template, tools: c.tools ? [WEATHER] : undefined };
    const prepared = prepareChat(chats, [{ role: "user", content: "Weather in Paris?" }], options);
    const got = parseReply(chats, template, prepared, c.text);
    const seen = {
      text: got.text.trim(),
      reasoning: got.reasoning.trim(),
      toolCalls: got.toolCalls.map((t) => ({ name: t.name, arguments: t.arguments })),
    };
    for (const [k, v] of Object.entries(c.expect)) assertEquals(seen[k as keyof typeof seen], v, `${c.template}: ${k}`);
  }
});

Deno.test("bad input is a typed error and the process goes on", async () => {
  await using model = await loadModel(qwenPath);
  const msgs = [{ role: "user", content: "hi" }];
  const bad = async (p: Promise<unknown>, re: RegExp) => {
    const e = await assertRejects(() => p, LoupeError);
    assertEquals(e.code, "INVALID_ARGUMENT");
    assert(re.test(e.message), e.message);
  };
  await bad(model.chat(msgs, { template: "{% if %}", maxTokens: 1 }), /chat template/);
  await bad(model.chat(msgs, { template: "{{ raise_exception('no way') }}", maxTokens: 1 }), /no way/);
  await bad(
    model.chat(msgs, { jsonSchema: { $ref: "#/definitions/a", definitions: { a: { $ref: "#/definitions/a" } } } }),
    /JSON schema|grammar/,
  );
  await bad(model.chat(msgs, { jsonSchema: { $ref: "https://example.com/elsewhere.json" } }), /JSON schema/);
  // deno-lint-ignore no-explicit-any
  await bad(model.chat(msgs, { tools: [{ description: "nameless" } as any] }), /tool 0 needs a name/);
  await bad(
    model.chat([...msgs, { role: "tool", content: "21" }], { tools: [WEATHER] }),
    /toolCallId/,
  );
  await bad(model.generate("x", { grammar: "root ::= (", maxTokens: 1 }), /grammar/);
  assertThrows(() => model.applyChatTemplate(msgs, { template: "{% for %}" }), LoupeError);
  // still alive
  const r = await model.chat(msgs, { maxTokens: 2, temperature: 0 });
  assertEquals(r.tokens.length > 0, true);
});

Deno.test("a model without a template falls back to chatml with a warning", async () => {
  const path = `${dir}/plain.gguf`;
  await makeTextModel(path, { vocabPath: `${build.sourceDir}/models/ggml-vocab-qwen2.gguf`, chatTemplate: "" });
  await using model = await loadModel(path);
  const r = await model.chat([{ role: "user", content: "hi" }], { maxTokens: 2, temperature: 0 });
  assert(r.warnings?.some((w) => w.includes("chatml")), JSON.stringify(r.warnings));
  assert(model.applyChatTemplate([{ role: "user", content: "hi" }]).startsWith("<|im_start|>user\nhi<|im_end|>"));
});

Deno.test("a chat template whose special tokens the vocabulary lacks is a clear error", async () => {
  // the tiny fixture: a chatml template on the llama SPM vocabulary, which has no <|im_start|>
  await using model = await loadModel(await fixture("tiny"));
  assertEquals(model.tokenize("<|im_start|>", { addSpecial: false, parseSpecial: true }).length > 1, true);
  const e = await assertRejects(
    () => model.chat([{ role: "user", content: "hi" }], { jsonSchema: SCHEMA, maxTokens: 4 }),
    LoupeError,
  );
  assertEquals(e.code, "INVALID_ARGUMENT");
  assert(/lacks the chat template's special tokens/.test(e.message), e.message);
  // the model still works
  assertEquals((await model.generate("Hi", { maxTokens: 2, temperature: 0 })).tokens.length, 2);
});
