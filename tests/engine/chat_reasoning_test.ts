// Reasoning through real thinking templates, on fixture models: their weights are random, so a
// GBNF grammar alone shapes the reply as thinking, the end tag, and an answer; the engine's parser
// must then split them, "keep" must leave them together, and a stream must mark the thinking pieces.
import { assert, assertEquals } from "../support/assert.ts";
import { build } from "../support/helpers.ts";
import { loadModel, type StreamPart } from "../../mod.ts";
import { makeTextModel } from "../../src/fixtures/text.ts";

const templates = `${build.sourceDir}/models/templates`;
const dir = await Deno.makeTempDir({ prefix: "loupe-reasoning-" });

/** Thinking templates: QwQ's generation prompt opens `<think>` itself; with Qwen3's the model opens it. */
const CASES = [
  { template: "Qwen-QwQ-32B.jinja", promptOpens: true },
  { template: "Qwen-Qwen3-0.6B.jinja", promptOpens: false },
];
const WORDS = '[a-z] [a-z ]{2,18} "</think>" [a-z] [a-z ]{2,18}';
const messages = [{ role: "user", content: "What is two and two?" }];

for (const c of CASES) {
  const path = `${dir}/${c.template}.gguf`;
  await makeTextModel(path, {
    vocabPath: `${build.sourceDir}/models/ggml-vocab-qwen2.gguf`,
    chatTemplate: await Deno.readTextFile(`${templates}/${c.template}`),
  });
  const grammar = `root ::= ${c.promptOpens ? "" : '"<think>" '}${WORDS}`;
  const options = { grammar, temperature: 1, seed: 7, maxTokens: 80 };

  Deno.test(`${c.template}: reasoning and answer are split; "keep" keeps them together`, async () => {
    await using model = await loadModel(path);
    const prompt = model.applyChatTemplate(messages);
    assertEquals(prompt.endsWith("<think>\n"), c.promptOpens, JSON.stringify(prompt.slice(-30)));
    const r = await model.chat(messages, options);
    assertEquals(r.stopReason, "eos", "the grammar ended the reply");
    const raw = model.detokenize(r.tokens);
    const [thinking, answer] = raw.replace(/^<think>/, "").split("</think>");
    assert(answer !== undefined && thinking.trim() !== "" && answer.trim() !== "", raw);
    assertEquals(r.reasoning?.trim(), thinking.trim(), `reasoning of ${JSON.stringify(raw)}`);
    assertEquals(r.text.trim(), answer.trim(), `answer of ${JSON.stringify(raw)}`);
    assert(!r.text.includes("think>"), r.text);

    const kept = await model.chat(messages, { ...options, reasoning: "keep" });
    assertEquals(kept.tokens, r.tokens, "the same seed samples the same reply");
    assertEquals(kept.reasoning, undefined);
    assertEquals(kept.text, (c.promptOpens ? "<think>\n" : "") + raw, "the reply as it came, with its tags");
  });

  Deno.test(`${c.template}: stream parts mark the thinking pieces`, async () => {
    await using model = await loadModel(path);
    const stream = model.streamChat(messages, options);
    const parts: StreamPart[] = [];
    for await (const p of stream.parts()) parts.push(p);
    const r = await stream.result;
    const raw = model.detokenize(r.tokens);
    const join = (ps: StreamPart[]) => ps.map((p) => p.text).join("");
    assertEquals(join(parts), raw, "the parts are the reply");
    const firstAnswer = parts.findIndex((p) => !p.reasoning);
    assert(firstAnswer > 0, JSON.stringify(parts));
    assert(parts.slice(firstAnswer).every((p) => !p.reasoning), `thinking comes first: ${JSON.stringify(parts)}`);
    const thinking = join(parts.slice(0, firstAnswer));
    assert(thinking.endsWith("</think>"), `thinking runs to its end tag: ${JSON.stringify(thinking)}`);
    assertEquals(thinking.replace(/^<think>/, "").replace(/<\/think>$/, "").trim(), r.reasoning?.trim());
    assertEquals(join(parts.slice(firstAnswer)).trim(), r.text.trim());
    const whole = await model.chat(messages, options);
    assertEquals([whole.text, whole.reasoning], [r.text, r.reasoning], "a stream gives chat's result");
  });
}
