// Greedy chat through a real chat template equals llama.cpp's own completion tool, token for
// token, given the same rendered prompt (special tokens parsed on both sides, same threads).
import { assert, assertEquals } from "../support/assert.ts";
import { build, closesWithBlankLine, runTool, THREADS } from "../support/helpers.ts";
import { loadModel } from "../../mod.ts";
import { makeTextModel } from "../../src/fixtures/text.ts";

const templates = `${build.sourceDir}/models/templates`;
const dir = await Deno.makeTempDir({ prefix: "loupe-chat-ref-" });
/** A fixture model with the Qwen2 vocabulary: chatml's `<|im_start|>`/`<|im_end|>` are single tokens. */
const qwenPath = `${dir}/qwen.gguf`;
await makeTextModel(qwenPath, {
  vocabPath: `${build.sourceDir}/models/ggml-vocab-qwen2.gguf`,
  chatTemplate: await Deno.readTextFile(`${templates}/Qwen-Qwen2.5-7B-Instruct.jinja`),
});
const model = await loadModel(qwenPath, { threads: THREADS });

const N = 32;

/**
 * llama-completion's greedy reply to `prompt` (special tokens parsed, as the tool does), and the
 * prompt tokens it read, from its --verbose-prompt log ("  151644 -> '<|im_start|>'"). A run whose
 * stdout was cut at exit (see runLoggedTool) is run again.
 */
async function reference(prompt: string): Promise<{ text: string; promptTokens: number[] }> {
  const args = ["-m", qwenPath, "-p", prompt, "-n", String(N), "--temp", "0", "-s", "1", "-t", String(THREADS)];
  args.push("-no-cnv", "--no-warmup", "--simple-io", "--no-display-prompt", "--verbose-prompt");
  for (let attempt = 1; attempt <= 5; attempt++) {
    const { stdout, stderr } = await runTool(build.tools.completion, args);
    const text = new TextDecoder().decode(stdout);
    if (!closesWithBlankLine(text)) continue;
    const promptTokens = [...stderr.matchAll(/^[\d.]+ I +(\d+) -> '/gm)].map((m) => Number(m[1]));
    return { text: text.slice(0, -2), promptTokens };
  }
  throw new Error("llama-completion's output was cut short 5 times");
}
const conversations = [
  [{ role: "user", content: "Once upon a time" }],
  [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello! How can I help?" },
    { role: "user", content: 'Tell me about Ünïcödé "quotes".' },
  ],
];

/** The turns of a rendered Qwen2.5 prompt: its messages, the default system turn when none is given, the reply. */
const turns = (messages: Array<{ role: string }>) => messages.length + (messages[0].role === "system" ? 1 : 2);

for (const [i, messages] of conversations.entries()) {
  Deno.test(`greedy chat with the Qwen2.5 template equals llama-completion, token for token (${i})`, async () => {
    const prompt = model.applyChatTemplate(messages);
    const im = model.tokenize("<|im_start|>", { addSpecial: false, parseSpecial: true });
    assertEquals(im.length, 1, "<|im_start|> is one token of this vocabulary");
    assert(prompt.startsWith("<|im_start|>system\n") && prompt.endsWith("<|im_start|>assistant\n"), prompt);
    const ref = await reference(prompt);
    const c = await model.chat(messages, { maxTokens: N, temperature: 0 });
    assertEquals(c.stopReason, "maxTokens");
    assertEquals(c.promptTokens, ref.promptTokens, "loupe and the tool read the same prompt tokens");
    assertEquals(c.promptTokens.filter((t) => t === im[0]).length, turns(messages), "one <|im_start|> a turn");
    assertEquals(c.tokens.length, N);
    assertEquals(model.detokenize(c.tokens), ref.text, "the same reply");
    assertEquals(c.text, ref.text, "the reply's text, as the engine's parser gives it");
  });
}

globalThis.addEventListener("unload", () => model.close());
