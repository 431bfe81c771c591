// Batching is faithful, over HTTP: the server (src/serve/server.ts, parallel 4, the tiny fixture) is
// driven by the official `openai` npm client. 16 greedy requests sent at once (chat and completions,
// short and long prompts, some streamed, some cut by stop strings) are checked against the same 16
// requests sent one at a time: each batched answer must equal its one-at-a-time answer up to the
// first token where the one-at-a-time run's top two log-probabilities are within 2e-3 (a near tie
// batched kernels may flip, as llama-server's do); any other difference fails. The responses' `loupe`
// extension and `timings` must show the concurrent requests sharing batches and the lone ones not.
// Then a stream the client cuts off must free its slot (seen through GET /metrics) while three long
// requests beside it run to their full length.
// deno-lint-ignore no-import-prefix -- the official client, pinned; fetched by Deno from npm
import OpenAI from "npm:openai@7.57.0";
import { basename } from "node:path";
import { assert, assertEquals } from "../support/assert.ts";
import { fixture, THREADS } from "../support/helpers.ts";
import { serve } from "../../mod.ts";

const tinyPath = await fixture("tiny");
const SLOT = 1024;
const server = await serve({ model: tinyPath, port: 0, parallel: 4, contextSize: SLOT, threads: THREADS });
const TINY = basename(tinyPath);
const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "not-checked", maxRetries: 0 });

/** The gap under which the top two log-probabilities are a near tie that batching may flip. */
const NEAR_TIE = 2e-3;

/** The batching record the server puts in `loupe` (src/serve/batcher.ts: BatchSharing). */
interface Sharing {
  slot: number;
  steps: number;
  sharedSteps: number;
  maxSlots: number;
}

/** One generated token as the response shows it: a key to compare, and the top two log-probabilities there. */
interface Tok {
  /** The token's bytes (chat), or its text (legacy completions show no bytes). */
  key: string;
  /** The chosen token's log-probability and its runner-up's, best first. */
  top: number[];
  /** Whether the runner-up shows the same text as the choice (legacy completions): a flip there is invisible. */
  hidden: boolean;
}

/** An answer, read from a response or a stream. */
interface Answer {
  text: string;
  tokens: Tok[];
  finish: string | null;
  completionTokens: number;
  batching: Sharing;
  timings: Record<string, number>;
}

/** One request of the 16: chat or completion, streamed or not, with or without stop strings. */
interface Case {
  kind: "chat" | "completion";
  prompt: string;
  maxTokens: number;
  stream: boolean;
  stop?: string[];
}

const chatTok = (e: OpenAI.ChatCompletionTokenLogprob): Tok => ({
  key: JSON.stringify(e.bytes),
  top: e.top_logprobs.map((t) => t.logprob),
  hidden: false,
});

/**
 * A legacy completion's token: `top_logprobs` maps text to log-probability, so when the runner-up
 * shows the same text as the choice (two partial UTF-8 tokens, both "\uFFFD") the map holds one key,
 * whose value is the runner-up's (src/serve/openai.ts completionLogprobs writes the choice first).
 */
function completionTok(token: string, logprob: number, top: Record<string, number>): Tok {
  const values = Object.values(top).sort((a, b) => b - a);
  if (values.length === 1 && top[token] !== undefined) {
    return { key: token, top: [logprob, top[token]].sort((a, b) => b - a), hidden: true };
  }
  return { key: token, top: values, hidden: false };
}

/**
 * What a response says of its batches: `loupe.batching`, which its timeline's "batching" event
 * must repeat, and llama-server's `timings`.
 */
function extrasOf(x: unknown): { batching: Sharing; timings: Record<string, number> } {
  const e = x as {
    loupe: { batching: Sharing; lane: string; events: Array<{ kind: string; data: unknown }> };
    timings: Record<string, number>;
  };
  assert(e.loupe?.batching && e.timings, `no loupe/timings in ${JSON.stringify(x).slice(0, 400)}`);
  assertEquals(e.loupe.lane, "batch");
  const event = e.loupe.events.find((v) => v.kind === "batching");
  assertEquals(event?.data, e.loupe.batching, "the timeline's batching event");
  return { batching: e.loupe.batching, timings: e.timings };
}

/** Sends one request through the official client and reads its answer, logprobs included. */
async function ask(c: Case): Promise<Answer> {
  const common = { model: TINY, temperature: 0, max_tokens: c.maxTokens, ...(c.stop ? { stop: c.stop } : {}) };
  if (c.kind === "chat") {
    const body = { messages: [{ role: "user" as const, content: c.prompt }], logprobs: true, top_logprobs: 2 };
    if (!c.stream) {
      const r = await client.chat.completions.create({ ...body, ...common });
      return {
        text: r.choices[0].message.content ?? "",
        tokens: (r.choices[0].logprobs?.content ?? []).map(chatTok),
        finish: r.choices[0].finish_reason,
        completionTokens: r.usage!.completion_tokens,
        ...extrasOf(r),
      };
    }
    const stream = await client.chat.completions.create({
      ...body,
      ...common,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    const last = chunks.at(-1)!;
    return {
      text: chunks.map((x) => x.choices[0]?.delta.content ?? "").join(""),
      tokens: chunks.flatMap((x) => x.choices[0]?.logprobs?.content ?? []).map(chatTok),
      finish: chunks.find((x) => x.choices[0]?.finish_reason)?.choices[0].finish_reason ?? null,
      completionTokens: last.usage!.completion_tokens,
      ...extrasOf(last),
    };
  }
  const legacy = (lp: OpenAI.Completions.CompletionChoice.Logprobs | null | undefined): Tok[] =>
    (lp?.tokens ?? []).map((t, i) => completionTok(t, lp!.token_logprobs![i], lp!.top_logprobs![i]));
  if (!c.stream) {
    const r = await client.completions.create({ prompt: c.prompt, logprobs: 2, ...common });
    return {
      text: r.choices[0].text,
      tokens: legacy(r.choices[0].logprobs),
      finish: r.choices[0].finish_reason,
      completionTokens: r.usage!.completion_tokens,
      ...extrasOf(r),
    };
  }
  const stream = await client.completions.create({
    prompt: c.prompt,
    logprobs: 2,
    ...common,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks: OpenAI.Completion[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  const last = chunks.at(-1)!;
  return {
    text: chunks.map((x) => x.choices[0]?.text ?? "").join(""),
    tokens: chunks.flatMap((x) => legacy(x.choices[0]?.logprobs)),
    finish: chunks.find((x) => x.choices[0]?.finish_reason)?.choices[0].finish_reason ?? null,
    completionTokens: last.usage!.completion_tokens,
    ...extrasOf(last),
  };
}

const nearTie = (top: number[] | undefined) => !!top && top.length >= 2 && top[0] - top[1] < NEAR_TIE;
const gap = (top: number[] | undefined) => top && top.length >= 2 ? (top[0] - top[1]).toExponential(2) : "unknown";

/**
 * Checks a batched answer against the one-at-a-time answer: equal (text, tokens, finish) unless
 * they part at a near tie of the lone run. Where the lone run ended (an end-of-generation token,
 * which logprobs do not list) and the batched one went on, the batched run's own top two at that
 * place are the only ones there are, and they must be the near tie.
 */
function assertFaithful(batched: Answer, alone: Answer, what: string): void {
  const a = alone.tokens;
  const b = batched.tokens;
  let at = 0;
  while (at < a.length && at < b.length && a[at].key === b[at].key) at++;
  // earlier places where a flip would not show (a legacy runner-up with the choice's text)
  const hiddenTies = a.slice(0, at).some((t) => t.hidden && nearTie(t.top));
  if (at === a.length && at === b.length) {
    if (batched.text === alone.text && batched.finish === alone.finish) {
      assertEquals(batched.completionTokens, alone.completionTokens, `${what}: usage`);
      return;
    }
    assert(
      hiddenTies,
      `${what}: the same tokens but another answer: ${JSON.stringify(batched.text)} (${batched.finish}) vs ` +
        `${JSON.stringify(alone.text)} (${alone.finish})`,
    );
    return;
  }
  const top = at < a.length ? a[at].top : b[at].top;
  assert(
    nearTie(top) || hiddenTies,
    `${what}: the batched answer differs at token ${at} (${b[at]?.key ?? "end"} vs ${a[at]?.key ?? "end"}), ` +
      `where the top two log-probabilities are ${JSON.stringify(top)} (gap ${gap(top)}): not a near tie\n` +
      `batched: ${JSON.stringify(batched.text)}\nalone:   ${JSON.stringify(alone.text)}`,
  );
  console.log(`${what}: parted at token ${at} of ${a.length}, a near tie (gap ${gap(top)})`);
}

const WORDS = ("the cat sat on a mat and then it ran far away over the hills to see the sea where boats " +
  "sail under a pale moon while gulls cry and old men mend their nets by the harbour wall").split(" ");
/** A prompt of about `n` words. */
const words = (n: number, from = 0) => Array.from({ length: n }, (_, i) => WORDS[(from + i) % WORDS.length]).join(" ");

/** The 16 requests: chat and completions, 1 to 160 words, every third streamed, four with stop strings. */
const CASES: Case[] = Array.from({ length: 16 }, (_, i) => ({
  kind: i % 2 === 0 ? "chat" : "completion",
  prompt: words([1, 3, 8, 20, 45, 90, 160, 5][i % 8], i * 7),
  maxTokens: 16 + (i % 3) * 12,
  stream: i % 3 === 1,
}));
const WITH_STOP = [2, 5, 10, 13];

Deno.test("16 greedy requests at once equal the same requests one at a time, up to a near tie; they share batches", async () => {
  // stop strings taken from the middle of the greedy answers, so that they cut them
  for (const i of WITH_STOP) {
    const text = (await ask(CASES[i])).text;
    let at = -1;
    for (let k = Math.floor(text.length / 2); k >= 1 && at < 0; k--) {
      const s = text.slice(k, k + 3);
      if (s.trim().length === 3 && text.indexOf(s) === k) at = k;
    }
    assert(at > 0, `no stop string found in ${JSON.stringify(text)}`);
    CASES[i].stop = [text.slice(at, at + 3), "never-seen"];
  }
  const t0 = performance.now();
  const alone: Answer[] = [];
  for (const c of CASES) alone.push(await ask(c));
  const t1 = performance.now();
  const together = await Promise.all(CASES.map(ask));
  const t2 = performance.now();
  console.log(`one at a time ${(t1 - t0).toFixed(0)} ms, at once ${(t2 - t1).toFixed(0)} ms`);

  for (const [i, r] of alone.entries()) {
    const what = `request ${i} alone`;
    assertEquals(r.tokens.length, r.completionTokens, `${what}: a logprob per token`);
    assert(r.tokens.every((t) => t.top.length === 2 || t.hidden), `${what}: the top two at every token`);
    assertEquals(r.timings.predicted_n, r.completionTokens, `${what}: timings`);
    assert(r.batching.steps > 0, `${what}: ${JSON.stringify(r.batching)}`);
    assertEquals([r.batching.sharedSteps, r.batching.maxSlots], [0, 1], `${what} shared no batch`);
  }
  for (const i of WITH_STOP) assertEquals(alone[i].finish, "stop", `request ${i} is cut by its stop string`);
  assert(alone.some((r) => r.finish === "length"));

  for (const [i, r] of together.entries()) {
    assertFaithful(r, alone[i], `request ${i} (${CASES[i].kind}${CASES[i].stream ? ", streamed" : ""})`);
    assertEquals(r.timings.predicted_n, r.completionTokens);
  }
  // every request but at most the last to run shared some of its batches; some ran four at a time
  const shared = together.filter((r) => r.batching.sharedSteps > 0 && r.batching.maxSlots > 1);
  assert(shared.length >= 15, JSON.stringify(together.map((r) => r.batching)));
  assert(together.some((r) => r.batching.maxSlots === 4), JSON.stringify(together.map((r) => r.batching)));
  assertEquals(new Set(together.map((r) => r.batching.slot)), new Set([0, 1, 2, 3]));
});

/** The value of a sample line of the Prometheus text. */
function metric(text: string, line: string): number {
  const found = text.split("\n").find((l) => l.startsWith(`${line} `));
  return found === undefined ? NaN : Number(found.slice(line.length + 1));
}

async function metrics(): Promise<string> {
  const r = await fetch(`${server.url}/metrics`);
  assertEquals(r.status, 200);
  return await r.text();
}

Deno.test("a stream cut off by the client frees its slot (GET /metrics) while three long requests beside it run to their length", async () => {
  const LONG = 600;
  const long = { model: TINY, temperature: 0, max_tokens: LONG, ignore_eos: true } as const;
  let running = 3;
  const others = [
    client.completions.create({ prompt: "Once upon a time", ...long } as never).then((r: OpenAI.Completion) => {
      running--;
      return { finish: r.choices[0].finish_reason, tokens: r.usage!.completion_tokens };
    }),
    client.chat.completions.create({ messages: [{ role: "user", content: "Tell me a story" }], ...long } as never)
      .then((r: OpenAI.ChatCompletion) => {
        running--;
        return { finish: r.choices[0].finish_reason, tokens: r.usage!.completion_tokens };
      }),
    (async () => {
      const stream = await client.chat.completions.create({
        messages: [{ role: "user", content: "And another one" }],
        ...long,
        stream: true,
        stream_options: { include_usage: true },
      } as never) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>;
      let finish: string | null = null;
      let tokens = 0;
      for await (const c of stream) {
        finish ??= c.choices[0]?.finish_reason ?? null;
        if (c.usage) tokens = c.usage.completion_tokens;
      }
      running--;
      return { finish, tokens };
    })(),
  ];
  // the three hold three slots before the fourth comes
  for (let i = 0; i < 200 && metric(await metrics(), "loupe_slots_busy") < 3; i++) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const controller = new AbortController();
  const stream = await client.chat.completions.create({
    messages: [{ role: "user", content: "Cut me off" }],
    ...long,
    stream: true,
  } as never, { signal: controller.signal }) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>;
  let chunks = 0;
  let busyBefore = NaN;
  for await (const _ of stream) {
    if (++chunks === 3) {
      busyBefore = metric(await metrics(), "loupe_slots_busy");
      controller.abort();
      break;
    }
  }
  assertEquals(busyBefore, 4, "the four requests held the four slots");
  // the cut stream's slot is freed while the three others still run
  let busy = NaN;
  let processing = NaN;
  for (let i = 0; i < 200 && running === 3; i++) {
    const text = await metrics();
    busy = metric(text, "loupe_slots_busy");
    processing = metric(text, "llamacpp:requests_processing");
    if (busy === 3) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  assertEquals([busy, processing, running], [3, 3, 3], "the slot was freed before the others ended");
  for (const r of await Promise.all(others)) assertEquals(r, { finish: "length", tokens: LONG });
  const text = await metrics();
  assertEquals([metric(text, "loupe_slots_busy"), metric(text, "llamacpp:requests_processing")], [0, 0]);
  assertEquals(metric(text, "loupe_requests_in_flight"), 1, "only this /metrics request is in flight");
});

Deno.test({
  name: "the batching server closes",
  fn: async () => await server.close(),
});
