// The OpenAI-compatible server against the official `openai` npm client (a client loupe did not
// make), on loopback, with fixture models: the models list, embeddings and reranking equal to the
// embedder's own results, chat, streamed chat and completions equal to the model's own greedy
// output, tools and response_format (validated by ajv), logprobs, an image as a data: URL with the
// projector fixture, errors surfaced as the client's own error classes, the API key, the limits
// (body size, JSON depth, UTF-8, messages, images, queue, timeout), a client that disconnects, the
// command line, and close().
// deno-lint-ignore no-import-prefix -- the official client, pinned; fetched by Deno from npm
import OpenAI from "npm:openai@7.57.0";
// deno-lint-ignore no-import-prefix -- a test-only validator (see tests/engine/chat_test.ts)
import AjvModule from "npm:ajv@8";
import { basename } from "node:path";
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { build, THREADS } from "../support/helpers.ts";
import { encodePng, picture } from "../support/vision_images.ts";
import { fixtureProjector, loadEmbedder, loadModel, LoupeError, serve } from "../../mod.ts";
import { embedFixture } from "../../src/fixtures/embed.ts";
import { makeTextModel } from "../../src/fixtures/text.ts";
import { serverView } from "../../src/notebook/server_view.ts";
import { LIVE, VIEW_KIND } from "../../src/util/presenter.ts";

const Ajv = AjvModule.default;

const dir = await Deno.makeTempDir({ prefix: "loupe-serve-" });
/** A fixture model with Qwen2.5's vocabulary and chat template (tools, JSON), as tests/engine/chat_test.ts makes it. */
const qwenPath = `${dir}/qwen.gguf`;
await makeTextModel(qwenPath, {
  vocabPath: `${build.sourceDir}/models/ggml-vocab-qwen2.gguf`,
  chatTemplate: await Deno.readTextFile(`${build.sourceDir}/models/templates/Qwen-Qwen2.5-7B-Instruct.jinja`),
});
const bertPath = await embedFixture("bert");
const rerankPath = await embedFixture("rerank");
const { model: tinyPath, projector: projectorPath } = await fixtureProjector("tiny");

const LIMIT = 64 * 1024;
const SLOT = 512;
const KEY = "sk-loupe-test-0123456789";

/** The main server: it loads the Qwen-templated model and the BERT embedder itself. */
const server = await serve({
  model: qwenPath,
  embedder: bertPath,
  port: 0,
  parallel: 2,
  contextSize: SLOT,
  maxBodyBytes: LIMIT,
  maxMessages: 8,
  maxImages: 2,
});
/** A model loaded here and passed in (the server must not close it), with a projector and a reranker, behind a key. */
const tiny = await loadModel(tinyPath, { threads: THREADS, progress: false });
const keyed = await serve({
  model: tiny,
  projector: projectorPath,
  embedder: rerankPath,
  port: 0,
  apiKey: KEY,
  parallel: 1,
  contextSize: SLOT,
});
/** One slot, one waiting request, and a short timeout. */
const tight = await serve({
  model: tiny,
  port: 0,
  parallel: 1,
  queueLimit: 1,
  requestTimeoutMs: 300,
  contextSize: 4096,
});

/** The references: the same files used directly. */
const ref = await loadModel(qwenPath, { threads: THREADS, progress: false });
const bert = await loadEmbedder(bertPath, { threads: THREADS, progress: false });
const reranker = await loadEmbedder(rerankPath, { threads: THREADS, progress: false });

const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "not-checked", maxRetries: 0 });
const keyedClient = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: KEY, maxRetries: 0 });
const tightClient = new OpenAI({ baseURL: `${tight.url}/v1`, apiKey: "not-checked", maxRetries: 0 });

const QWEN = basename(qwenPath);
const BERT = basename(bertPath);
const RERANK = basename(rerankPath);
const TINY = basename(tinyPath);
const greedy = { temperature: 0 } as const;
const MESSAGES: OpenAI.ChatCompletionMessageParam[] = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "Say something about the sea." },
];

/** What the server adds to every response: llama-server's timings and loupe's timeline. */
interface Extras {
  timings: Record<string, number>;
  loupe: { kind: string; stages: Array<{ name: string; tokens: number }>; lane: string; [k: string]: unknown };
}
const extras = (x: unknown) => x as Extras;

/** A raw request to a server (for what the client will not send: bad JSON, bad bytes, wrong methods). */
async function raw(
  url: string,
  path: string,
  init: RequestInit & { key?: string } = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const headers = new Headers(init.headers);
  if (init.key) headers.set("authorization", `Bearer ${init.key}`);
  const res = await fetch(`${url}${path}`, { ...init, headers });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: kept as text
  }
  return { status: res.status, body, headers: res.headers };
}

/** The value of a sample line of the Prometheus text. */
function metric(text: string, line: string): number {
  const found = text.split("\n").find((l) => l.startsWith(`${line} `));
  return found === undefined ? NaN : Number(found.slice(line.length + 1));
}

// ---------------------------------------------------------------------------------------------
// Models, health, embeddings, rerank

Deno.test("GET /v1/models lists the served models; GET /health answers without the key", async () => {
  const list = await client.models.list();
  assertEquals(list.data.map((m) => [m.id, m.object, m.owned_by]), [
    [QWEN, "model", "loupe"],
    [basename(bertPath), "model", "loupe"],
  ]);
  const keyedList = await keyedClient.models.list();
  assertEquals(keyedList.data.map((m) => (m as unknown as { loupe: { kind: string } }).loupe.kind), [
    "generation",
    "rerank",
  ]);
  assertEquals(keyedList.data[0].id, basename(tinyPath));
  const health = await raw(keyed.url, "/health");
  assertEquals([health.status, health.body], [200, { status: "ok" }]);
});

Deno.test("embeddings: float, the client's default base64 and explicit base64 all equal the embedder's own embed()", async () => {
  const texts = ["hello world", "The quick brown fox jumps over the lazy dog.", "Ünïcödé, with punctuation!"];
  const own = await bert.embed(texts);
  const expected = own.map((v) => Array.from(v));
  const floats = await client.embeddings.create({ model: BERT, input: texts, encoding_format: "float" });
  assertEquals(floats.data.map((d) => d.embedding), expected);
  assertEquals(floats.data.map((d) => d.index), [0, 1, 2]);
  const tokens = own.tokenCounts.reduce((a, b) => a + b, 0);
  assertEquals(floats.usage, { prompt_tokens: tokens, total_tokens: tokens });
  assertEquals(floats.model, basename(bertPath));
  const x = extras(floats);
  assertEquals(x.timings.prompt_n, tokens);
  assert(x.loupe.stages.some((s) => s.name === "encode"), JSON.stringify(x.loupe));
  // without encoding_format the client asks for base64 and decodes the little-endian float32 bytes itself
  const decoded = await client.embeddings.create({ model: BERT, input: texts });
  assertEquals(decoded.data.map((d) => d.embedding), expected);
  // asked for explicitly, base64 comes back as the string
  const b64 = await client.embeddings.create({ model: BERT, input: texts[0], encoding_format: "base64" });
  const text = b64.data[0].embedding as unknown as string;
  assertEquals(typeof text, "string");
  assertEquals(Array.from(new Float32Array(Uint8Array.fromBase64(text).buffer)), expected[0]);
});

Deno.test("rerank (llama-server's shape), through fetch and client.post, equals the reranker's own scores", async () => {
  const query = "what do cats eat";
  const documents = ["cats eat fish and mice", "the stock market fell today", "kittens drink milk", "a recipe"];
  const own = await reranker.rerank(query, documents);
  const order = own.map((score, index) => ({ index, score })).sort((a, b) => b.score - a.score);
  const r = await raw(keyed.url, "/v1/rerank", {
    method: "POST",
    key: KEY,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: RERANK, query, documents, top_n: 3 }),
  });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  assertEquals(
    r.body.results,
    order.slice(0, 3).map((o) => ({ index: o.index, relevance_score: o.score })),
  );
  const tokens = own.tokenCounts.reduce((a, b) => a + b, 0);
  assertEquals(r.body.usage, { prompt_tokens: tokens, total_tokens: tokens });
  assertEquals([r.body.object, r.body.model], ["list", basename(rerankPath)]);
  const viaClient = await keyedClient.post<{ results: Array<{ index: number; document: { text: string } }> }>(
    "/rerank",
    { body: { query, documents, return_documents: true } },
  );
  assertEquals(viaClient.results.length, documents.length);
  assertEquals(viaClient.results.map((x) => x.document.text), order.map((o) => documents[o.index]));
});

// ---------------------------------------------------------------------------------------------
// Errors, auth, limits

Deno.test("bad requests come back as the client's own error classes, with OpenAI error objects", async () => {
  const chat = (body: Record<string, unknown>) =>
    client.chat.completions.create({ model: QWEN, messages: MESSAGES, max_tokens: 4, ...body } as never);
  const unknown = await assertRejects(() => chat({ model: "gpt-4o" }), OpenAI.BadRequestError, "unknown model");
  assertEquals([unknown.status, unknown.param, unknown.code, unknown.type], [
    400,
    "model",
    "model_not_found",
    "invalid_request_error",
  ]);
  await assertRejects(() => chat({ model: BERT }), OpenAI.BadRequestError, "is an embedding model");
  await assertRejects(() => chat({ messages: [] }), OpenAI.BadRequestError, "messages must be a non-empty array");
  const n = await assertRejects(() => chat({ n: 2 }), OpenAI.BadRequestError, "n must be 1");
  assertEquals(n.param, "n");
  await assertRejects(() => chat({ temperature: "hot" }), OpenAI.BadRequestError, "temperature must be");
  await assertRejects(() => chat({ max_tokens: -1 }), OpenAI.BadRequestError, "max_tokens must be");
  await assertRejects(
    () =>
      chat({
        messages: [{
          role: "user",
          content: [{ type: "image_url", image_url: { url: "data:image/png;base64,aGk=" } }],
        }],
      }),
    OpenAI.BadRequestError,
    "no projector is loaded",
  );
  await assertRejects(() => client.get("/nope"), OpenAI.NotFoundError, "Not found: /v1/nope");
  const method = await assertRejects(() => client.delete("/chat/completions"), OpenAI.APIError, "use POST");
  assertEquals(method.status, 405);
  // an embedder that is not a reranker, and a reranker asked for embeddings: 400s, not 500s
  await assertRejects(
    () => client.post("/rerank", { body: { query: "q", documents: ["d"] } }),
    OpenAI.BadRequestError,
    'not "rank"',
  );
  await assertRejects(
    () => keyedClient.embeddings.create({ model: RERANK, input: "x" }),
    OpenAI.BadRequestError,
    "use rerank",
  );
  await assertRejects(
    () => client.embeddings.create({ model: BERT, input: [1, 2, 3] }),
    OpenAI.BadRequestError,
    "token arrays are not supported",
  );
  await assertRejects(
    () => client.embeddings.create({ input: "x", model: QWEN }),
    OpenAI.BadRequestError,
    "unknown model",
  );
});

Deno.test("with an API key every endpoint but /health answers 401 without it, and the client's AuthenticationError", async () => {
  const endpoints: Array<[string, string]> = [
    ["GET", "/v1/models"],
    ["GET", "/metrics"],
    ["POST", "/v1/chat/completions"],
    ["POST", "/v1/completions"],
    ["POST", "/v1/embeddings"],
    ["POST", "/v1/rerank"],
    ["GET", "/no/such/path"],
  ];
  for (const [method, path] of endpoints) {
    for (const key of [undefined, "wrong-key", `${KEY}x`, KEY.slice(0, -1)]) {
      const r = await raw(keyed.url, path, { method, key, body: method === "POST" ? "{}" : undefined });
      assertEquals(r.status, 401, `${method} ${path} with ${key}`);
      assertEquals(r.body.error.type, "authentication_error");
      assertEquals(r.headers.get("www-authenticate"), "Bearer");
    }
  }
  assertEquals((await raw(keyed.url, "/health")).status, 200);
  assertEquals((await raw(keyed.url, "/metrics", { key: KEY })).status, 200);
  const wrong = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
  const e = await assertRejects(() => wrong.models.list(), OpenAI.AuthenticationError, "Incorrect API key");
  assertEquals(e.code, "invalid_api_key");
});

Deno.test("limits: a large body is a 413 (declared or streamed); bad JSON, bad UTF-8 and deep JSON are 400s, never 500s", async () => {
  const big = "x".repeat(LIMIT + 1);
  const e = await assertRejects(
    () => client.chat.completions.create({ model: QWEN, messages: [{ role: "user", content: big }] }),
    OpenAI.APIError,
    "larger than 65536 bytes",
  );
  assertEquals(e.status, 413);
  // a body without a length, streamed: refused once the limit is passed, not read to its end
  let sent = 0;
  const endless = new ReadableStream<Uint8Array>({
    pull(c) {
      if (sent > 64 * LIMIT) return c.close();
      sent += 16384;
      c.enqueue(new Uint8Array(16384).fill(0x20));
    },
  });
  const streamed = await fetch(`${server.url}/v1/chat/completions`, { method: "POST", body: endless }).then(
    async (r) => ({ status: r.status, body: await r.json() }),
    (err) => ({ status: 0, body: String(err) }),
  );
  assertEquals(streamed.status, 413, JSON.stringify(streamed.body));
  assert(sent < 64 * LIMIT, `the server read ${sent} bytes`);
  const post = (body: BodyInit) => raw(server.url, "/v1/chat/completions", { method: "POST", body });
  for (
    const [body, message] of [
      ['{"messages": [', "not valid JSON"],
      ["", "the body is empty"],
      ["[]", "must be a JSON object"],
      [new Uint8Array([0x7b, 0x22, 0x61, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d]), "not valid UTF-8"],
      ["[".repeat(5000) + "]".repeat(5000), "deeper than 64 levels"],
    ] as Array<[BodyInit, string]>
  ) {
    const r = await post(body);
    assertEquals(r.status, 400, JSON.stringify(r.body));
    assert(r.body.error.message.includes(message), r.body.error.message);
    assertEquals(r.body.error.type, "invalid_request_error");
  }
  // deep JSON sent by the client itself
  let deep: unknown = 1;
  for (let i = 0; i < 100; i++) deep = [deep];
  await assertRejects(
    () => client.chat.completions.create({ model: QWEN, messages: MESSAGES, metadata: deep } as never),
    OpenAI.BadRequestError,
    "deeper than 64 levels",
  );
  const many = Array.from({ length: 9 }, () => ({ role: "user" as const, content: "hi" }));
  await assertRejects(
    () => client.chat.completions.create({ model: QWEN, messages: many }),
    OpenAI.BadRequestError,
    "at most 8 messages",
  );
  const png = `data:image/png;base64,${(await encodePng(picture(8, 8))).toBase64()}`;
  const images = Array.from({ length: 3 }, () => ({ type: "image_url" as const, image_url: { url: png } }));
  await assertRejects(
    () => client.chat.completions.create({ model: QWEN, messages: [{ role: "user", content: images }] }),
    OpenAI.BadRequestError,
    "at most 2 images",
  );
  assertEquals((await raw(server.url, "/v1/chat/completions")).status, 405);
  assertEquals((await raw(server.url, "/v1/nope", { method: "POST", body: "{}" })).status, 404);
  // after all that, the server still answers
  assertEquals((await raw(server.url, "/health")).body, { status: "ok" });
  const metrics = (await raw(server.url, "/metrics")).body as string;
  assert(metric(metrics, 'loupe_requests_total{endpoint="/v1/chat/completions",status="400"}') >= 8, metrics);
  assertEquals(metric(metrics, 'loupe_requests_total{endpoint="/v1/chat/completions",status="500"}'), NaN);
});

Deno.test("an image_url that is a path or an http(s) URL is refused: nothing is read or fetched", async () => {
  let hits = 0;
  const lure = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    hits++;
    return new Response("no");
  });
  const file = `${dir}/cat.png`;
  await Deno.writeFile(file, await encodePng(picture(16, 16)));
  try {
    for (
      const url of [file, `file://${file}`, `http://127.0.0.1:${lure.addr.port}/cat.png`, "https://example.com/cat.png"]
    ) {
      const e = await assertRejects(
        () =>
          keyedClient.chat.completions.create({
            model: TINY,
            messages: [{
              role: "user",
              content: [{ type: "text", text: "What is it?" }, { type: "image_url", image_url: { url } }],
            }],
          }),
        OpenAI.BadRequestError,
        "must be a data: URL",
      );
      assertEquals([e.param, e.code], ["messages[0].content[1].image_url.url", "invalid_image_url"]);
    }
    assertEquals(hits, 0, "the server fetched the URL");
  } finally {
    await lure.shutdown();
  }
});

// ---------------------------------------------------------------------------------------------
// Generation

Deno.test("chat: a greedy reply equals the model's own chat; usage, timings and the timeline come with it", async () => {
  const r = await client.chat.completions.create({
    model: QWEN,
    messages: MESSAGES,
    ...greedy,
    max_tokens: 24,
  });
  const own = await ref.chat(MESSAGES as never, { ...greedy, maxTokens: 24 });
  assertEquals(r.object, "chat.completion");
  assert(r.id.startsWith("chatcmpl-"));
  assertEquals(r.model, QWEN);
  assertEquals(r.choices.length, 1);
  assertEquals(r.choices[0].message.role, "assistant");
  assertEquals(r.choices[0].message.content, own.text);
  assertEquals(r.choices[0].finish_reason, own.stopReason === "maxTokens" ? "length" : "stop");
  assertEquals(r.choices[0].logprobs, null);
  assertEquals(r.usage?.completion_tokens, own.tokens.length);
  assertEquals(r.usage?.prompt_tokens, own.promptTokens.length);
  assertEquals(r.usage?.total_tokens, own.tokens.length + own.promptTokens.length);
  assertEquals(typeof r.usage?.prompt_tokens_details?.cached_tokens, "number");
  const x = extras(r);
  for (
    const k of [
      "cache_n",
      "prompt_n",
      "prompt_ms",
      "prompt_per_second",
      "predicted_n",
      "predicted_ms",
      "predicted_per_second",
    ]
  ) {
    assertEquals(typeof x.timings[k], "number", k);
  }
  assertEquals(x.timings.predicted_n, own.tokens.length);
  assertEquals(x.loupe.lane, "batch");
  assert(x.loupe.stages.length > 0 && typeof x.loupe.batching === "object", JSON.stringify(x.loupe));
});

Deno.test("streamed chat: the deltas add up to the same reply, and the last chunks carry finish, usage, timings", async () => {
  const plain = await client.chat.completions.create({ model: QWEN, messages: MESSAGES, ...greedy, max_tokens: 24 });
  const stream = await client.chat.completions.create({
    model: QWEN,
    messages: MESSAGES,
    ...greedy,
    max_tokens: 24,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks: OpenAI.ChatCompletionChunk[] = [];
  for await (const c of stream) chunks.push(c);
  assertEquals(chunks[0].choices[0].delta.role, "assistant");
  const text = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");
  assertEquals(text, plain.choices[0].message.content);
  const finish = chunks.filter((c) => c.choices[0]?.finish_reason);
  assertEquals(finish.map((c) => c.choices[0].finish_reason), [plain.choices[0].finish_reason]);
  const last = chunks.at(-1)!;
  assertEquals(last.choices, []);
  assertEquals(last.usage?.completion_tokens, plain.usage?.completion_tokens);
  assertEquals(extras(last).timings.predicted_n, plain.usage?.completion_tokens);
  assert(extras(last).loupe.stages.length > 0);
  assert(chunks.every((c) => c.object === "chat.completion.chunk" && c.id === chunks[0].id));
  // the wire format itself: `data: {...}` events, then `data: [DONE]`
  const res = await fetch(`${server.url}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({ messages: MESSAGES, ...greedy, max_tokens: 4, stream: true }),
  });
  assertEquals(res.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const wire = await res.text();
  assert(wire.endsWith("data: [DONE]\n\n"), wire);
  assert(wire.split("\n\n").slice(0, -1).every((e) => e.startsWith("data: ")), wire);
});

Deno.test("completions: greedy text equals generate(), streamed too; stop strings and llama.cpp's extras apply", async () => {
  const prompt = "Once upon a time";
  const r = await client.completions.create({ model: QWEN, prompt, ...greedy, max_tokens: 24 });
  const own = await ref.generate(prompt, { ...greedy, maxTokens: 24 });
  assertEquals(r.object, "text_completion");
  assertEquals(r.choices[0].text, own.text);
  assertEquals(r.usage?.completion_tokens, own.tokens.length);
  const stream = await client.completions.create({ model: QWEN, prompt, ...greedy, max_tokens: 24, stream: true });
  let streamed = "";
  for await (const c of stream) streamed += c.choices[0]?.text ?? "";
  assertEquals(streamed, own.text);
  // a stop string from the middle of the greedy text cuts it there, streamed or not
  const text = own.text;
  let at = -1;
  for (let i = Math.floor(text.length / 2); i >= 1 && at < 0; i--) {
    const s = text.slice(i, i + 3);
    if (s.trim().length === 3 && text.indexOf(s) === i) at = i;
  }
  assert(at > 0, `no stop string found in ${JSON.stringify(text)}`);
  const stop = text.slice(at, at + 3);
  const cut = await client.completions.create({
    model: QWEN,
    prompt,
    ...greedy,
    max_tokens: 24,
    stop: [stop, "never-seen"],
  });
  assertEquals([cut.choices[0].text, cut.choices[0].finish_reason], [text.slice(0, at), "stop"]);
  const cutStream = await client.completions.create({
    model: QWEN,
    prompt,
    ...greedy,
    max_tokens: 24,
    stop,
    stream: true,
  });
  let cutText = "";
  for await (const c of cutStream) cutText += c.choices[0]?.text ?? "";
  assertEquals(cutText, text.slice(0, at), "a stream never shows the stop string, not even in part");
  // llama.cpp's extras: top_k 1 is greedy at any temperature; ignore_eos runs to max_tokens
  const extra = { top_k: 1, min_p: 0, repeat_penalty: 1, ignore_eos: true };
  const k1 = await client.completions.create(
    { prompt, temperature: 1, max_tokens: 12, ...extra } as never,
  ) as OpenAI.Completion;
  const ownK1 = await ref.generate(prompt, { temperature: 1, topK: 1, minP: 0, ignoreEos: true, maxTokens: 12 });
  assertEquals(k1.choices[0].text, ownK1.text);
  assertEquals([k1.usage?.completion_tokens, k1.choices[0].finish_reason], [12, "length"]);
});

Deno.test("max_tokens past the slot is capped (as llama-server caps it), and the response says so", async () => {
  const r = await client.completions.create(
    { prompt: "Answer:", max_tokens: 1_000_000, grammar: 'root ::= "yes"' } as never,
  ) as OpenAI.Completion;
  assertEquals(r.choices[0].text, "yes");
  const capped = extras(r).loupe.maxTokens as { requested: number; used: number; capped: boolean };
  assertEquals(capped, { requested: 1_000_000, used: SLOT - r.usage!.prompt_tokens, capped: true });
  const fits = await client.completions.create(
    { model: QWEN, prompt: "Answer:", max_tokens: 8, grammar: 'root ::= "no"' } as never,
  );
  assertEquals(extras(fits).loupe.maxTokens, { requested: 8, used: 8, capped: false });
  // a prompt longer than the slot is a 400 with OpenAI's code
  const e = await assertRejects(
    () => client.completions.create({ model: QWEN, prompt: "word ".repeat(SLOT * 2), max_tokens: 4 }),
    OpenAI.BadRequestError,
    "a request may hold at most 512",
  );
  assertEquals(e.code, "context_length_exceeded");
});

Deno.test("logprobs: top_logprobs alternatives per token, best first, the greedy choice on top", async () => {
  const r = await client.chat.completions.create({
    model: QWEN,
    messages: MESSAGES,
    ...greedy,
    max_tokens: 8,
    logprobs: true,
    top_logprobs: 3,
  });
  const content = r.choices[0].logprobs!.content!;
  assertEquals(content.length, r.usage!.completion_tokens);
  for (const e of content) {
    assertEquals(e.top_logprobs.length, 3);
    assert(e.logprob <= 0 && Number.isFinite(e.logprob), JSON.stringify(e));
    for (let i = 1; i < 3; i++) assert(e.top_logprobs[i - 1].logprob >= e.top_logprobs[i].logprob, JSON.stringify(e));
    assert(Math.abs(e.logprob - e.top_logprobs[0].logprob) < 1e-4, JSON.stringify(e));
    assert(e.top_logprobs.reduce((a, t) => a + Math.exp(t.logprob), 0) <= 1 + 1e-4);
  }
  const bytes = Uint8Array.from(content.flatMap((e) => e.bytes ?? []));
  assertEquals(new TextDecoder().decode(bytes), r.choices[0].message.content);
  // streamed: the same entries, spread over the chunks
  const stream = await client.chat.completions.create({
    model: QWEN,
    messages: MESSAGES,
    ...greedy,
    max_tokens: 8,
    logprobs: true,
    top_logprobs: 3,
    stream: true,
  });
  const streamed: OpenAI.ChatCompletionTokenLogprob[] = [];
  for await (const c of stream) streamed.push(...(c.choices[0]?.logprobs?.content ?? []));
  assertEquals(streamed.map((e) => e.token), content.map((e) => e.token));
  // the legacy completions form
  const legacy = await client.completions.create({
    model: QWEN,
    prompt: "Once upon a time",
    ...greedy,
    max_tokens: 6,
    logprobs: 2,
  });
  const lp = legacy.choices[0].logprobs!;
  assertEquals(lp.tokens!.length, legacy.usage!.completion_tokens);
  assertEquals(lp.token_logprobs!.length, lp.tokens!.length);
  assert(lp.top_logprobs!.every((t) => Object.keys(t).length >= 1 && Object.keys(t).length <= 2));
});

Deno.test("tools: a required call comes back as tool_calls with JSON-string arguments that validate (ajv), streamed too", async () => {
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
  const validate = new Ajv().compile(WEATHER.parameters);
  const request = {
    model: QWEN,
    messages: [{ role: "user" as const, content: "Weather in Paris?" }],
    tools: [{ type: "function" as const, function: WEATHER }],
    tool_choice: "required" as const,
    parallel_tool_calls: false,
    temperature: 1,
    seed: 1,
    max_tokens: 200,
  };
  const r = await client.chat.completions.create(request);
  const choice = r.choices[0];
  assertEquals(choice.finish_reason, "tool_calls", JSON.stringify(choice));
  const call = choice.message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
  assertEquals([call.type, call.function.name], ["function", "get_weather"]);
  assertEquals(typeof call.function.arguments, "string");
  const args = JSON.parse(call.function.arguments);
  assert(validate(args), JSON.stringify(args));
  // the call and its answer go back in; the next turn is a plain reply
  const next = await client.chat.completions.create({
    model: QWEN,
    messages: [
      ...request.messages,
      { role: "assistant", content: null, tool_calls: [call] },
      { role: "tool", tool_call_id: call.id, content: '{"temp": 21}' },
    ],
    tools: request.tools,
    ...greedy,
    max_tokens: 8,
  });
  assert(next.choices[0].finish_reason !== undefined);
  // streamed: the call arrives as a tool_calls delta before finish_reason "tool_calls"
  const stream = await client.chat.completions.create({ ...request, stream: true });
  const deltas: OpenAI.ChatCompletionChunk.Choice.Delta.ToolCall[] = [];
  let finish: string | null = null;
  for await (const c of stream) {
    deltas.push(...(c.choices[0]?.delta.tool_calls ?? []));
    finish ??= c.choices[0]?.finish_reason ?? null;
  }
  assertEquals(finish, "tool_calls");
  assertEquals(deltas[0].function?.name, "get_weather");
  const first = deltas.filter((d) => d.index === 0).map((d) => d.function?.arguments ?? "").join("");
  assert(validate(JSON.parse(first)), first);
});

Deno.test("response_format json_schema and json_object yield JSON that validates (ajv)", async () => {
  const SCHEMA = {
    type: "object",
    properties: {
      name: { type: "string", maxLength: 12 },
      age: { type: "integer", minimum: 0, maximum: 150 },
    },
    required: ["name", "age"],
    additionalProperties: false,
  };
  const validate = new Ajv().compile(SCHEMA);
  for (const seed of [1, 2]) {
    const r = await client.chat.completions.create({
      model: QWEN,
      messages: [{ role: "user", content: "Who are you?" }],
      response_format: { type: "json_schema", json_schema: { name: "person", schema: SCHEMA } },
      temperature: 1,
      seed,
      max_tokens: 200,
    });
    const value = JSON.parse(r.choices[0].message.content!);
    assert(validate(value), JSON.stringify(value));
  }
  const obj = await client.chat.completions.create({
    model: QWEN,
    messages: [{ role: "user", content: "JSON please" }],
    response_format: { type: "json_object" },
    temperature: 1,
    seed: 3,
    max_tokens: 200,
  });
  const parsed = JSON.parse(obj.choices[0].message.content!);
  assert(typeof parsed === "object" && parsed !== null && !Array.isArray(parsed), obj.choices[0].message.content!);
});

Deno.test("an image as a data: URL, with the projector fixture, equals the model's own image chat (not batched)", async () => {
  const png = await encodePng(picture(48, 40, 2));
  const url = `data:image/png;base64,${png.toBase64()}`;
  const question = "What is in this picture?";
  const r = await keyedClient.chat.completions.create({
    model: TINY,
    messages: [{
      role: "user",
      content: [{ type: "text", text: question }, { type: "image_url", image_url: { url } }],
    }],
    ...greedy,
    max_tokens: 16,
  });
  const own = await tiny.chat([{ role: "user", content: [question, { image: png }] }], { ...greedy, maxTokens: 16 });
  assertEquals(r.choices[0].message.content, own.text);
  assertEquals(r.usage!.completion_tokens, own.tokens.length);
  assertEquals(r.usage!.prompt_tokens, own.promptTokens.length + own.imageTokens);
  const x = extras(r);
  assertEquals(x.loupe.lane, "image");
  assert(x.loupe.stages.some((s) => s.name === "image encode"), JSON.stringify(x.loupe.stages.map((s) => s.name)));
  assert(x.timings.prompt_ms > 0);
  const stream = await keyedClient.chat.completions.create({
    model: TINY,
    messages: [{
      role: "user",
      content: [{ type: "text", text: question }, { type: "image_url", image_url: { url } }],
    }],
    ...greedy,
    max_tokens: 16,
    stream: true,
  });
  let text = "";
  for await (const c of stream) text += c.choices[0]?.delta.content ?? "";
  assertEquals(text, own.text);
  // bytes that are not an image: a 400 naming the image, and the server goes on
  await assertRejects(
    () =>
      keyedClient.chat.completions.create({
        model: TINY,
        messages: [{
          role: "user",
          content: [{ type: "image_url", image_url: { url: "data:image/png;base64,aGVsbG8=" } }],
        }],
        max_tokens: 4,
      }),
    OpenAI.BadRequestError,
    "Cannot read image 1",
  );
});

// ---------------------------------------------------------------------------------------------
// Queue, timeout, disconnect

Deno.test("a request past its timeout is a 504 (an error event in a stream); a full queue is a 503", async () => {
  const long = { model: TINY, prompt: "Once upon a time", max_tokens: 4000, ignore_eos: true, temperature: 0 };
  const t0 = performance.now();
  const e = await assertRejects(
    () => tightClient.completions.create(long as never),
    OpenAI.InternalServerError,
    "request timeout",
  );
  assertEquals([e.status, e.type], [504, "timeout_error"]);
  assert(performance.now() - t0 < 10_000, "the generation was stopped");
  // a stream has sent its headers: the timeout comes as an error event, which the client throws
  const stream = await tightClient.completions.create({ ...long, stream: true } as never) as unknown as AsyncIterable<
    unknown
  >;
  await assertRejects(
    async () => {
      for await (const _ of stream) { /* reading until the error */ }
    },
    OpenAI.APIError,
    "request timeout",
  );
  // one running, one waiting, the third refused at once
  const first = tightClient.completions.create(long as never).catch((x) => x);
  await new Promise((r) => setTimeout(r, 60));
  const second = tightClient.completions.create(long as never).catch((x) => x);
  await new Promise((r) => setTimeout(r, 60));
  const busy = await assertRejects(() => tightClient.completions.create(long as never), OpenAI.APIError);
  assertEquals([busy.status, busy.type], [503, "unavailable_error"]);
  for (const x of await Promise.all([first, second])) assertEquals((x as { status?: number }).status, 504);
  assertEquals((await raw(tight.url, "/health")).status, 200);
});

Deno.test("a streamed request cut off by the client frees its slot (seen in /metrics), and the next one runs", async () => {
  const controller = new AbortController();
  const stream = await client.chat.completions.create({
    model: QWEN,
    messages: MESSAGES,
    max_tokens: 400,
    ignore_eos: true,
    stream: true,
  } as never, { signal: controller.signal }) as unknown as AsyncIterable<unknown>;
  for await (const _ of stream) {
    const busy = metric((await raw(server.url, "/metrics")).body, "loupe_slots_busy");
    assertEquals(busy, 1);
    controller.abort();
    break;
  }
  let busy = NaN;
  for (let i = 0; i < 100; i++) {
    const text = (await raw(server.url, "/metrics")).body as string;
    busy = metric(text, "loupe_slots_busy");
    if (busy === 0 && metric(text, "loupe_requests_in_flight") === 1) break; // in flight: this /metrics request
    await new Promise((r) => setTimeout(r, 50));
  }
  assertEquals(busy, 0);
  const after = await client.chat.completions.create({ model: QWEN, messages: MESSAGES, ...greedy, max_tokens: 4 });
  assertEquals(after.choices.length, 1);
});

Deno.test("the server's snapshot (its notebook view) lists the requests, their batches and the decode steps", () => {
  const snap = server.snapshot();
  assertEquals([snap.url, snap.closed, snap.parallel], [server.url, false, 2]);
  assert(snap.model.startsWith(QWEN), snap.model);
  const chats = snap.recent.filter((r) => r.endpoint === "/v1/chat/completions" && r.status === 200);
  assert(
    chats.length > 0 && chats.every((r) => r.id.startsWith("chatcmpl-") && r.promptTokens > 0),
    JSON.stringify(chats),
  );
  assert(
    chats.some((r) => (r.steps ?? 0) > 0 && r.completionTokens > 0 && r.devices.length > 0),
    JSON.stringify(chats),
  );
  assert(snap.recent.some((r) => r.endpoint === "/v1/embeddings" && r.id.startsWith("embd-")));
  assert(snap.steps.length > 0 && snap.generatedTokens > 0 && snap.errors > 0);
  assert(snap.recent.every((r) => r.endpoint !== "/metrics"), "polling /metrics is not listed");
  const view = serverView(server);
  assert(view.text.includes(server.url) && view.summary!.includes("slots busy"), view.text);
  assertEquals(server[VIEW_KIND], "server");
  assert(server[LIVE].active() && server[LIVE].intervalMs >= 100);
});

// ---------------------------------------------------------------------------------------------
// The command line, and close()

Deno.test("deno task serve: the command line serves, answers and stops on SIGINT; bad arguments exit 2", async () => {
  const cli = new URL("../../src/serve/cli.ts", import.meta.url).pathname;
  const deno = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-no-legacy-abort", cli, ...args],
      stdout: "piped",
      stderr: "piped",
    });
  const bad = await deno(["--model", tinyPath, "--port", "eighty"]).output();
  assertEquals(bad.code, 2);
  assert(new TextDecoder().decode(bad.stderr).includes("--port must be a whole number"));
  const missing = await deno(["--model", `${dir}/missing.gguf`, "--port", "0"]).output();
  assertEquals(missing.code, 1);
  assert(new TextDecoder().decode(missing.stderr).includes("missing.gguf"));
  const child = deno(["--model", tinyPath, "--port", "0", "-np", "1", "--ctx-size", "256", "-t", "2", "--api-key", KEY])
    .spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("OpenAI base URL")) {
    const { value, done } = await lines.read();
    if (done) break;
    out += value;
  }
  const url = out.match(/on (http:\/\/127\.0\.0\.1:\d+) /)?.[1];
  assert(url, out);
  assert(out.includes("256 tokens per request") && out.includes("API key required"), out);
  const cliClient = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 });
  assertEquals((await cliClient.models.list()).data[0].id, basename(tinyPath));
  const r = await cliClient.completions.create({ model: TINY, prompt: "Hello", ...greedy, max_tokens: 4 });
  assertEquals(r.choices.length, 1);
  child.kill("SIGINT");
  const status = await child.status;
  lines.releaseLock();
  await child.stdout.cancel().catch(() => {});
  const stderr = await new Response(child.stderr).text();
  assertEquals(status.code, 0, stderr);
});

Deno.test("close(): the servers stop; a model passed in stays open, what the server loaded is closed", async () => {
  // a port in use is a typed error, and the model passed in is left as it was
  const taken = await assertRejects(() => serve({ model: tiny, port: keyed.port }), LoupeError, "address is in use");
  assertEquals(taken.code, "INVALID_ARGUMENT");
  await assertRejects(() => serve({ model: tiny, port: -1 }), LoupeError, "port must be a port from 0 to 65535");
  await assertRejects(() => serve({ model: 5 } as never), LoupeError, "model must be a path");
  assert(!tiny.closed);
  const model = server.model;
  await server.close();
  await server.close(); // idempotent
  assert(server.snapshot().closed && !server[LIVE].active(), "the live view stops");
  assert(model.closed, "the server loaded it, so it closed it");
  assert(server.embedder!.closed);
  await assertRejects(() => fetch(`${server.url}/health`), TypeError);
  await keyed[Symbol.asyncDispose]();
  await tight.close();
  assert(!tiny.closed, "a model passed in is the caller's");
  const r = await tiny.generate("Hello", { ...greedy, maxTokens: 2, ignoreEos: true });
  assertEquals(r.tokens.length, 2);
  await assertRejects(
    () => tiny.chat([{ role: "user", content: [{ image: new Uint8Array([1]) }, "x"] }]),
    Error,
    "no projector",
  );
  for (const m of [tiny, ref, bert, reranker]) await m.closeAsync();
  await Deno.remove(dir, { recursive: true });
});
