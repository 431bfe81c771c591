// The server's OpenAI dialect as pure functions (src/serve/openai.ts) and its metrics text
// (src/serve/metrics.ts): bodies read strictly, requests mapped onto loupe's options with every
// wrong field a 400 naming it, the max_tokens cap, and responses shaped as the openai client and
// llama-server's dashboards read them. No engine is needed.
import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import {
  ApiError,
  capMaxTokens,
  chatLogprobs,
  chatMessage,
  completionLogprobs,
  decodeDataUrl,
  embeddingBody,
  errorOf,
  exposureWarning,
  finishReason,
  float32Base64,
  isLoopback,
  jsonTooDeep,
  MAX_JSON_DEPTH,
  modelsBody,
  parseChatRequest,
  parseCompletionRequest,
  parseEmbeddingRequest,
  parseJsonBody,
  parseRerankRequest,
  rerankBody,
  sseEvent,
  timelineTimings,
  timingsOf,
  usageOf,
} from "../../src/serve/openai.ts";
import { Counters, labelValue, prometheusText } from "../../src/serve/metrics.ts";
import { LoupeError } from "../../src/util/errors.ts";
import { Timeline } from "../../src/timeline/timeline.ts";

const LIMITS = { maxMessages: 4, maxImages: 2 };
const enc = (s: string) => new TextEncoder().encode(s);
const PNG_URL = "data:image/png;base64," + btoa("\x89PNG\r\n\x1a\n fake but base64");

/** Expects `fn` to throw a 400 ApiError whose param is `param` and whose message holds `includes`. */
function bad(fn: () => unknown, param: string | null, includes: string, status = 400): ApiError {
  const e = assertThrows(fn, ApiError, includes);
  assertEquals(e.status, status, e.message);
  assertEquals(e.param, param, e.message);
  assert(e instanceof LoupeError, "an ApiError is a LoupeError");
  return e;
}

Deno.test("a body is read strictly: UTF-8, JSON, an object, and no deeper than the limit", () => {
  assertEquals(parseJsonBody(enc('{"a": [1, {"b": "ü"}]}')), { a: [1, { b: "ü" }] });
  bad(() => parseJsonBody(new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])), null, "not valid UTF-8");
  bad(() => parseJsonBody(enc('{"a": ')), null, "not valid JSON");
  bad(() => parseJsonBody(enc("")), null, "empty");
  bad(() => parseJsonBody(enc("[1, 2]")), null, "must be a JSON object, not an array");
  bad(() => parseJsonBody(enc("null")), null, "must be a JSON object, not null");
  const deep = "[".repeat(MAX_JSON_DEPTH + 1) + "]".repeat(MAX_JSON_DEPTH + 1);
  bad(() => parseJsonBody(enc(`{"a": ${deep}}`)), null, `deeper than ${MAX_JSON_DEPTH} levels`);
  // a million levels are refused by the scan, before JSON.parse could recurse
  assert(jsonTooDeep("[".repeat(1_000_000)));
  // brackets inside strings, and escaped quotes, do not count
  const quoted = JSON.stringify({ s: "[".repeat(500) + '\\"{{{' });
  assert(!jsonTooDeep(quoted));
  assertEquals(parseJsonBody(enc(quoted)), JSON.parse(quoted));
  assert(!jsonTooDeep("[".repeat(MAX_JSON_DEPTH) + "]".repeat(MAX_JSON_DEPTH)), "exactly the limit is allowed");
});

Deno.test("a chat request maps onto loupe's messages, sampling, tools and response_format", () => {
  const r = parseChatRequest({
    model: "tiny",
    messages: [
      { role: "developer", content: "Be brief." },
      { role: "user", content: [{ type: "text", text: "Hello " }, { type: "text", text: "there" }] },
      {
        role: "assistant",
        content: null,
        tool_calls: [{ id: "c1", type: "function", function: { name: "add", arguments: '{"a":1}' } }],
      },
      { role: "tool", tool_call_id: "c1", content: "2" },
    ],
    max_completion_tokens: 12,
    max_tokens: 99,
    temperature: 0,
    top_p: 0.5,
    stop: "END",
    seed: 7,
    n: 1,
    presence_penalty: 0,
    ignore_eos: true,
    top_k: 3,
    min_p: 0.1,
    repeat_penalty: 1.1,
    tools: [{ type: "function", function: { name: "add", description: "adds", parameters: { type: "object" } } }],
    tool_choice: "auto",
    logprobs: true,
    top_logprobs: 3,
    stream: true,
    stream_options: { include_usage: true },
    user: "ignored",
  }, LIMITS);
  assertEquals(r.model, "tiny");
  assertEquals(r.messages, [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hello there" },
    { role: "assistant", content: "", toolCalls: [{ id: "c1", name: "add", arguments: { a: 1 } }] },
    { role: "tool", content: "2", toolCallId: "c1" },
  ]);
  assertEquals(r.media, null);
  assertEquals(r.options, {
    maxTokens: 12, // max_completion_tokens wins over the deprecated max_tokens
    temperature: 0,
    topP: 0.5,
    seed: 7,
    stop: ["END"],
    ignoreEos: true,
    topK: 3,
    minP: 0.1,
    repeatPenalty: 1.1,
    tools: [{ name: "add", description: "adds", parameters: { type: "object" } }],
    toolChoice: "auto",
  });
  assertEquals([r.stream, r.includeUsage, r.logprobs], [true, true, 3]);
  // a named tool choice keeps that tool and requires a call
  const named = parseChatRequest({
    messages: [{ role: "user", content: "x" }],
    tools: [
      { type: "function", function: { name: "a" } },
      { type: "function", function: { name: "b" } },
    ],
    tool_choice: { type: "function", function: { name: "b" } },
  }, LIMITS);
  assertEquals([named.options.tools, named.options.toolChoice], [[{ name: "b" }], "required"]);
  // response_format: json_schema's schema, json_object as an object, text as nothing
  const schema = { type: "object", properties: { x: { type: "integer" } } };
  const fmt = (response_format: unknown) =>
    parseChatRequest({ messages: [{ role: "user", content: "x" }], response_format }, LIMITS).options.jsonSchema;
  assertEquals(fmt({ type: "json_schema", json_schema: { name: "s", schema } }), schema);
  assertEquals(fmt({ type: "json_object" }), { type: "object" });
  assertEquals(fmt({ type: "text" }), undefined);
  // seed -1 means random (left to loupe's default), logprobs without top_logprobs is 0 alternatives
  const r2 = parseChatRequest({ messages: [{ role: "user", content: "x" }], seed: -1, logprobs: true }, LIMITS);
  assertEquals([r2.options.seed, r2.logprobs, r2.stream], [undefined, 0, false]);
});

Deno.test("a chat request's wrong fields are 400s that name the field", () => {
  const chat = (extra: Record<string, unknown>, messages: unknown = [{ role: "user", content: "x" }]) => () =>
    parseChatRequest({ messages, ...extra }, LIMITS);
  bad(chat({}, []), "messages", "messages must be a non-empty array");
  bad(chat({}, "hi"), "messages", 'not "hi"');
  bad(chat({}, [1, 2, 3, 4, 5]), "messages", "at most 4 messages");
  bad(chat({}, [{ role: "robot", content: "x" }]), "messages[0].role", '"robot"');
  bad(chat({}, [{ role: "user", content: 5 }]), "messages[0].content", "not 5");
  bad(chat({}, [{ role: "user", content: [{ type: "video", url: "x" }] }]), "messages[0].content[0].type", '"video"');
  bad(chat({}, [{ role: "tool", content: "x" }]), "messages[0].tool_call_id", "the id of the call");
  bad(
    chat({}, [{ role: "assistant", content: "", tool_calls: [{ function: { name: "f", arguments: "{" } }] }]),
    "messages[0].tool_calls[0].function.arguments",
    "not valid JSON",
  );
  bad(chat({ temperature: "hot" }), "temperature", 'not "hot"');
  bad(chat({ temperature: 3 }), "temperature", "from 0 to 2");
  bad(chat({ max_tokens: 0 }), "max_tokens", "≥ 1");
  bad(chat({ max_tokens: 1.5 }), "max_tokens", "whole number");
  bad(chat({ n: 2 }), "n", "1 (one choice per request)");
  bad(chat({ stop: [1] }), "stop", "a string or an array of strings");
  bad(chat({ seed: 2 ** 40 }), "seed", "from -1");
  bad(chat({ top_logprobs: 2 }), "top_logprobs", "needs logprobs: true");
  bad(chat({ logprobs: true, top_logprobs: 21 }), "top_logprobs", "from 0 to 20");
  bad(chat({ stream_options: { include_usage: true } }), "stream_options", "only allowed when stream is true");
  bad(chat({ presence_penalty: 0.5 }), "presence_penalty", "not supported");
  bad(chat({ logit_bias: { "1": 5 } }), "logit_bias", "not supported");
  bad(chat({ tools: {} }), "tools", "must be an array");
  bad(chat({ tools: [{ type: "function", function: {} }] }), "tools[0].function.name", "non-empty string");
  bad(chat({ tool_choice: "always" }), "tool_choice", '"always"');
  bad(chat({ tool_choice: "required" }), "tool_choice", "needs tools");
  bad(chat({ response_format: { type: "json_schema" } }), "response_format.json_schema.schema", "JSON Schema");
  bad(chat({ response_format: { type: "xml" } }), "response_format.type", '"xml"');
  bad(chat({ model: 5 }), "model", "must be a string");
});

Deno.test("images are data: URLs only: a path, file: or http(s) URL is refused, nothing is read or fetched", () => {
  const withImage = (url: unknown, role = "user") => () =>
    parseChatRequest({
      messages: [{ role, content: [{ type: "text", text: "What is it?" }, { type: "image_url", image_url: { url } }] }],
    }, LIMITS);
  const r = withImage(PNG_URL)();
  assertEquals(r.mediaCount, 1);
  const parts = r.media![0].content as unknown[];
  assertEquals(parts[0], "What is it?");
  assertEquals((parts[1] as { image: Uint8Array }).image, Uint8Array.fromBase64(PNG_URL.split(",")[1]));
  assertEquals(r.messages, [{ role: "user", content: "What is it?" }], "the text alone, for templates");
  for (const url of ["/etc/passwd", "file:///etc/passwd", "http://127.0.0.1:1/x.png", "https://example.com/a.png"]) {
    const e = bad(withImage(url), "messages[0].content[1].image_url.url", "must be a data: URL");
    assertEquals(e.apiCode, "invalid_image_url");
  }
  bad(withImage("data:image/png,rawbytes"), "messages[0].content[1].image_url.url", "base64-encoded");
  bad(withImage("data:image/png;base64,@@@"), "messages[0].content[1].image_url.url", "not valid base64");
  bad(withImage("data:image/png;base64,"), "messages[0].content[1].image_url.url", "holds no data");
  bad(withImage(PNG_URL, "system"), "messages[0].content[1]", "only user messages may hold images");
  assertEquals(decodeDataUrl("data:image/png;base64,aGk=", "x"), new Uint8Array([104, 105]));
  // the image limit counts every message's images; tools, formats and logprobs do not go with images
  const three = Array.from({ length: 3 }, () => ({ type: "image_url", image_url: { url: PNG_URL } }));
  bad(
    () => parseChatRequest({ messages: [{ role: "user", content: three }] }, LIMITS),
    "messages[0].content",
    "at most 2 images",
  );
  const one = [{ role: "user", content: [{ type: "image_url", image_url: { url: PNG_URL } }] }];
  bad(
    () => parseChatRequest({ messages: one, tools: [{ type: "function", function: { name: "f" } }] }, LIMITS),
    "tools",
    "cannot be combined with images",
  );
  bad(() => parseChatRequest({ messages: one, logprobs: true }, LIMITS), "logprobs", "not available");
});

Deno.test("completion, embedding and rerank requests: their shapes, and wrong fields as 400s", () => {
  const c = parseCompletionRequest({ prompt: ["Once"], max_tokens: 5, logprobs: 2, stream: true });
  assertEquals([c.prompt, c.options.maxTokens, c.logprobs, c.stream], ["Once", 5, 2, true]);
  assertEquals(parseCompletionRequest({ prompt: "x" }).logprobs, undefined);
  bad(() => parseCompletionRequest({ prompt: ["a", "b"] }), "prompt", "an array of one string");
  bad(() => parseCompletionRequest({ prompt: [1, 2] }), "prompt", "an array of one string");
  bad(() => parseCompletionRequest({}), "prompt", "must be a string");
  bad(() => parseCompletionRequest({ prompt: "" }), "prompt", "empty");
  bad(() => parseCompletionRequest({ prompt: "x", echo: true }), "echo", "not supported");
  bad(() => parseCompletionRequest({ prompt: "x", logprobs: 50 }), "logprobs", "from 0 to 20");

  assertEquals(parseEmbeddingRequest({ input: "a" }), { input: ["a"], base64: false });
  assertEquals(parseEmbeddingRequest({ input: ["a", "b"], encoding_format: "base64", model: "m" }), {
    input: ["a", "b"],
    base64: true,
    model: "m",
  });
  bad(() => parseEmbeddingRequest({ input: [] }), "input", "non-empty array");
  bad(() => parseEmbeddingRequest({ input: [1, 2] }), "input[0]", "token arrays are not supported");
  bad(() => parseEmbeddingRequest({ input: "a", encoding_format: "int8" }), "encoding_format", '"float" or "base64"');

  assertEquals(parseRerankRequest({ query: "q", documents: ["a", { text: "b" }], top_n: 1 }), {
    query: "q",
    documents: ["a", "b"],
    topN: 1,
    returnDocuments: false,
  });
  bad(() => parseRerankRequest({ documents: ["a"] }), "query", "must be a string");
  bad(() => parseRerankRequest({ query: "q", documents: [] }), "documents", "non-empty array");
  bad(() => parseRerankRequest({ query: "q", documents: [3] }), "documents[0]", "not 3");
  bad(() => parseRerankRequest({ query: "q", documents: ["a"], top_n: 0 }), "top_n", "≥ 1");
});

Deno.test("max_tokens is capped by what the prompt leaves of the slot; a prompt that fills it is a 400", () => {
  assertEquals(capMaxTokens(undefined, 10, 100), { maxTokens: 90, capped: false }, "default: the rest of the slot");
  assertEquals(capMaxTokens(20, 10, 100), { maxTokens: 20, capped: false });
  assertEquals(capMaxTokens(500, 10, 100), { maxTokens: 90, capped: true }, "as llama-server caps n_predict");
  const e = bad(() => capMaxTokens(5, 100, 100), "messages", "the prompt has 100 tokens");
  assertEquals([e.apiCode, e.code], ["context_length_exceeded", "CONTEXT_OVERFLOW"]);
});

Deno.test("errors map to OpenAI error objects and statuses; an unexpected error is a 500, not a crash", () => {
  assertEquals(errorOf(new ApiError(413, "too big", { code: "request_too_large" })), {
    status: 413,
    body: { error: { message: "too big", type: "invalid_request_error", param: null, code: "request_too_large" } },
  });
  assertEquals(errorOf(new ApiError(401, "no")).body.error.type, "authentication_error");
  assertEquals(errorOf(new LoupeError("INVALID_ARGUMENT", "Cannot chat: x")).status, 400);
  assertEquals(errorOf(new LoupeError("BAD_FORMAT", "Cannot read image 1: not an image")).status, 400);
  const overflow = errorOf(new LoupeError("CONTEXT_OVERFLOW", "too long"));
  assertEquals([overflow.status, overflow.body.error.code], [400, "context_length_exceeded"]);
  const busy = errorOf(new LoupeError("BUSY", "full"));
  assertEquals([busy.status, busy.body.error.type], [503, "unavailable_error"]);
  assertEquals(errorOf(new LoupeError("DECODE_FAILED", "engine")).status, 500);
  const bug = errorOf(new TypeError("x is undefined"));
  assertEquals([bug.status, bug.body.error.message], [500, "Internal error: x is undefined"]);
});

Deno.test("responses: finish reasons, usage, logprobs, tool calls, timings, embeddings and rerank results", () => {
  assertEquals(
    (["eos", "stop", "maxTokens", "contextFull", "aborted", "toolCalls"] as const).map((s) => finishReason(s)),
    ["stop", "stop", "length", "length", "stop", "tool_calls"],
  );
  assertEquals(finishReason("eos", true), "tool_calls");
  assertEquals(usageOf(10, 5, 4), {
    prompt_tokens: 10,
    completion_tokens: 5,
    total_tokens: 15,
    prompt_tokens_details: { cached_tokens: 4 },
  });
  const entries = [
    {
      token: 1,
      text: "Hi",
      bytes: [72, 105],
      logprob: -0.5,
      top: [{ token: 1, text: "Hi", bytes: [72, 105], logprob: -0.5 }],
    },
    { token: 2, text: "!", bytes: [33], logprob: -1, top: [] },
  ];
  assertEquals(chatLogprobs(entries), {
    content: [
      {
        token: "Hi",
        logprob: -0.5,
        bytes: [72, 105],
        top_logprobs: [{ token: "Hi", logprob: -0.5, bytes: [72, 105] }],
      },
      { token: "!", logprob: -1, bytes: [33], top_logprobs: [] },
    ],
    refusal: null,
  });
  assertEquals(completionLogprobs(entries, 3), {
    tokens: ["Hi", "!"],
    token_logprobs: [-0.5, -1],
    top_logprobs: [{ Hi: -0.5 }, {}],
    text_offset: [3, 5],
  });
  assertEquals(chatMessage({ content: "", toolCalls: [{ id: "c", name: "f", arguments: { a: [1] } }] }), {
    role: "assistant",
    content: null,
    refusal: null,
    tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: '{"a":[1]}' } }],
  });
  assertEquals(chatMessage({ content: "yes", reasoning: "hmm" }), {
    role: "assistant",
    content: "yes",
    refusal: null,
    reasoning_content: "hmm",
  });
  assertEquals(timingsOf(2, 10, 20, 4, 40), {
    cache_n: 2,
    prompt_n: 10,
    prompt_ms: 20,
    prompt_per_token_ms: 2,
    prompt_per_second: 500,
    predicted_n: 4,
    predicted_ms: 40,
    predicted_per_token_ms: 10,
    predicted_per_second: 100,
  });
  assertEquals(timingsOf(0, 0, 0, 0, 0).prompt_per_second, 0, "no division by zero");
  const tl = new Timeline("chat");
  for (const [name, wallMs] of [["image encode", 30], ["prompt", 10], ["generation", 50]] as const) {
    tl.add({ name, wallMs, tokens: 1, graphs: 1, devices: {} });
  }
  const t = timelineTimings(tl, 8, 5);
  assertEquals([t.prompt_ms, t.prompt_n, t.predicted_ms, t.predicted_n], [40, 8, 50, 5]);
  // base64 vectors are little-endian float32 bytes, as the openai client decodes them
  const v = new Float32Array([1, -2.5, 0.1]);
  const b64 = float32Base64(v);
  assertEquals(Array.from(new Float32Array(Uint8Array.fromBase64(b64).buffer)), Array.from(v));
  assertEquals(new DataView(Uint8Array.fromBase64(b64).buffer).getFloat32(4, true), -2.5);
  const emb = embeddingBody([v], false, "m", 3);
  assertEquals(emb.data, [{ object: "embedding", index: 0, embedding: Array.from(v) }]);
  assertEquals(emb.usage, { prompt_tokens: 3, total_tokens: 3 });
  const ranked = rerankBody(
    [0.1, 0.9, 0.5],
    { query: "q", documents: ["a", "b", "c"], topN: 2, returnDocuments: true },
    "r",
    9,
  );
  assertEquals(ranked.results, [
    { index: 1, relevance_score: 0.9, document: { text: "b" } },
    { index: 2, relevance_score: 0.5, document: { text: "c" } },
  ]);
  const models = modelsBody([{ id: "tiny.gguf", kind: "generation", path: "/m/tiny.gguf", created: 5 }]);
  assertEquals(models, {
    object: "list",
    data: [{
      id: "tiny.gguf",
      object: "model",
      created: 5,
      owned_by: "loupe",
      loupe: { kind: "generation", path: "/m/tiny.gguf" },
    }],
  });
  assertEquals(sseEvent({ a: 1 }), 'data: {"a":1}\n\n');
  assertEquals(sseEvent("[DONE]"), "data: [DONE]\n\n");
});

Deno.test("metrics: Prometheus text from the counters and the batcher's stats", () => {
  const c = new Counters();
  c.request("/v1/chat/completions", 200);
  c.request("/v1/chat/completions", 200);
  c.request("/v1/embeddings", 400);
  c.promptTokens = 7;
  c.generatedTokens = 3;
  c.device("CPU", 10);
  const s = c.snapshot(
    {
      parallel: 4,
      slotsBusy: 1,
      queued: 2,
      requests: 5,
      promptTokens: 100,
      generatedTokens: 50,
      steps: 30,
      tokensByDevice: { CPU: 150, Vulkan0: 5 },
    },
    1,
    0,
  );
  assertEquals([s.promptTokens, s.generatedTokens, s.slotsTotal, s.tokensByDevice], [107, 53, 4, {
    CPU: 160,
    Vulkan0: 5,
  }]);
  const text = prometheusText(s);
  for (
    const line of [
      "# TYPE loupe_requests_total counter",
      'loupe_requests_total{endpoint="/v1/chat/completions",status="200"} 2',
      'loupe_requests_total{endpoint="/v1/embeddings",status="400"} 1',
      "loupe_prompt_tokens_total 107",
      "loupe_generated_tokens_total 53",
      "loupe_queue_length 2",
      "loupe_slots_busy 1",
      "loupe_slots_total 4",
      'loupe_device_tokens_total{device="CPU"} 160',
      'loupe_device_tokens_total{device="Vulkan0"} 5',
      "llamacpp:tokens_predicted_total 53",
    ]
  ) assert(text.split("\n").includes(line), `${line}\n---\n${text}`);
  assert(text.endsWith("\n"));
  // every sample line is `name{labels} value` with a number
  for (const l of text.split("\n").filter((l) => l && !l.startsWith("#"))) {
    assert(/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eE]+$/.test(l), l);
  }
  assertEquals(labelValue('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
  // without a batcher (closed) the slots read 0
  assertEquals(new Counters().snapshot(null, 0, 0).slotsTotal, 0);
});

Deno.test("binding beyond loopback without an API key gives a warning; loopback or a key does not", () => {
  for (const h of ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"]) assert(isLoopback(h), h);
  for (const h of ["0.0.0.0", "::", "192.168.1.5", "example.com", "128.0.0.1"]) assert(!isLoopback(h), h);
  assertEquals(exposureWarning("127.0.0.1", undefined, "http://127.0.0.1:8080"), null);
  assertEquals(exposureWarning("0.0.0.0", "key", "http://0.0.0.0:8080"), null);
  const w = exposureWarning("0.0.0.0", undefined, "http://0.0.0.0:8080");
  assert(w?.includes("without an API key") && w.includes("http://0.0.0.0:8080") && w.includes("--api-key"), w!);
});
