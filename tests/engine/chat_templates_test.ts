// Every real chat template of the pinned llama.cpp source (models/templates/) rendered through
// loupe (the engine's Jinja chat engine) for several conversations, compared with a reference
// renderer that shares no code with loupe: Debian's python3-jinja2 used as Hugging Face
// transformers uses it (tests/support/render_jinja.py).
import { assert, assertEquals } from "../support/assert.ts";
import { loadModel } from "../../mod.ts";
import type { ChatTurn, ToolDefinition } from "../../src/chat/chat.ts";
import { build } from "../support/helpers.ts";

/**
 * One date for both sides, so date-aware templates (Llama 3.x "Today Date") agree. Today: the
 * pinned engine's strftime_now reads the clock whatever `now` says (see README, chat templates).
 */
const NOW = Date.now();
/** The variables llama.cpp's chat layer always gives a template (common/chat.cpp), given to jinja2 too. */
const ENGINE_CONTEXT = {
  enable_thinking: true,
  date_string: new Date(NOW).toLocaleDateString("en-GB", { day: "2-digit", month: "short", year: "numeric" }),
  datetime: new Date(NOW).toLocaleDateString("en-US", { day: "2-digit", month: "short", year: "numeric" })
    .replace(",", ""),
};

const TOOLS: ToolDefinition[] = [{
  name: "get_weather",
  description: "The weather in a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
}];

const CONVERSATIONS: Record<string, { messages: ChatTurn[]; tools?: boolean }> = {
  "system + multi-turn": {
    messages: [
      { role: "system", content: "You are a helpful assistant." },
      { role: "user", content: "Hello!" },
      { role: "assistant", content: "Hi there. How can I help?" },
      { role: "user", content: "Tell me a joke." },
    ],
  },
  "no system": {
    messages: [
      { role: "user", content: "What is 2+2?" },
      { role: "assistant", content: "4" },
      { role: "user", content: "And 3+3?" },
    ],
  },
  "non-ASCII and quotes": {
    messages: [
      { role: "user", content: `Ünïcødé “curly” "double" 'single' \\ 日本語 😀 <b>&amp;</b>` },
    ],
  },
  "tool call and result": {
    tools: true,
    messages: [
      { role: "user", content: "What is the weather in Paris?" },
      {
        role: "assistant",
        content: "",
        toolCalls: [{ id: "call_1", name: "get_weather", arguments: { city: "Paris" } }],
      },
      { role: "tool", toolCallId: "call_1", content: '{"temperature": 21}' },
    ],
  },
};

/**
 * Templates whose loupe rendering differs from the reference on purpose, with the reason: the
 * engine's chat layer adapts conversations to templates as llama.cpp's tools do (its
 * `workaround::*` steps in common/chat.cpp). Keyed by "template / conversation".
 */
export const KNOWN_DIFFERENCES: Record<string, string> = {
  "google-gemma-4-31B-it-interleaved.jinja / tool call and result":
    "llama.cpp's Gemma 4 handler turns OpenAI `tool` messages into the template's native tool_responses " +
    "(rendered as `<|tool_response>…`); jinja2, given the OpenAI messages as they are, renders a plain `tool` turn",
  "meetkai-functionary-medium-v3.1.jinja / tool call and result":
    "jinja2's Markup (from `|safe`) HTML-escapes every string added to it, so the tool list's JSON comes out as " +
    "`&#34;name&#34;`; llama.cpp's Jinja engine has no Markup type and writes the JSON as it is",
};

/** OpenAI-form messages with object arguments, as transformers takes them. */
function referenceMessages(messages: ChatTurn[]): unknown[] {
  return messages.map((m) => {
    const out: Record<string, unknown> = { role: m.role, content: m.content };
    if (m.toolCalls) {
      out.tool_calls = m.toolCalls.map((c) => ({
        id: c.id,
        type: "function",
        function: { name: c.name, arguments: c.arguments },
      }));
    }
    if (m.toolCallId) out.tool_call_id = m.toolCallId;
    return out;
  });
}

async function renderReference(cases: unknown[]): Promise<Array<{ text?: string; error?: string }>> {
  const script = new URL("../support/render_jinja.py", import.meta.url).pathname;
  const child = new Deno.Command("python3", { args: [script], stdin: "piped", stdout: "piped", stderr: "piped" })
    .spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify(cases)));
  await writer.close();
  const out = await child.output();
  if (!out.success) throw new Error(`render_jinja.py failed: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("every real chat template renders as jinja2 renders it (transformers' settings)", async () => {
  const dir = `${build.sourceDir}/models/templates`;
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".jinja")) names.push(e.name);
  names.sort();
  assert(names.length >= 60, `expected the pinned source's templates, found ${names.length}`);
  // a vocabulary with BOS and EOS (Llama 3's): both sides get its BOS/EOS text
  await using model = await loadModel(`${build.sourceDir}/models/ggml-vocab-llama-bpe.gguf`, { vocabOnly: true });
  const loupe: Array<{ key: string; text?: string; error?: string; bos: string; eos: string; addBos: boolean }> = [];
  const cases: unknown[] = [];
  for (const name of names) {
    const template = await Deno.readTextFile(`${dir}/${name}`);
    for (const [conv, { messages, tools }] of Object.entries(CONVERSATIONS)) {
      const key = `${name} / ${conv}`;
      let text: string | undefined, error: string | undefined;
      let info = { bosToken: "", eosToken: "", addBos: false, caps: {} as Record<string, boolean> };
      try {
        info = model.chatTemplateInfo(template);
        text = model.applyChatTemplate(messages, { template, now: NOW, tools: tools ? TOOLS : undefined });
      } catch (e) {
        error = (e as Error).message;
      }
      loupe.push({ key, text, error, bos: info.bosToken, eos: info.eosToken, addBos: info.addBos });
      cases.push({
        template,
        messages: referenceMessages(messages),
        tools: tools ? TOOLS.map((t) => ({ type: "function", function: t })) : null,
        bos_token: info.bosToken,
        eos_token: info.eosToken,
        add_generation_prompt: true,
        now_ms: NOW,
        kwargs: ENGINE_CONTEXT,
      });
    }
  }
  const reference = await renderReference(cases);
  const equal: string[] = [], differ: string[] = [], refFails: string[] = [], loupeFails: string[] = [];
  const unexplained: string[] = [];
  loupe.forEach((l, i) => {
    const r = reference[i];
    if (r.error !== undefined) {
      refFails.push(`${l.key}: ${r.error.slice(0, 120)}`);
      return;
    }
    if (l.error !== undefined) {
      loupeFails.push(`${l.key}: ${l.error.slice(0, 200)}`);
      if (!(l.key in KNOWN_DIFFERENCES)) unexplained.push(`${l.key}: loupe fails where jinja2 renders: ${l.error}`);
      return;
    }
    // llama.cpp leaves out a BOS the tokenizer adds anyway (common_chat_templates_apply)
    let ref = r.text!;
    if (l.addBos && l.bos && ref.startsWith(l.bos)) ref = ref.slice(l.bos.length);
    if (ref === l.text) equal.push(l.key);
    else {
      differ.push(l.key);
      if (!(l.key in KNOWN_DIFFERENCES)) {
        unexplained.push(`${l.key}:\n  loupe:  ${JSON.stringify(l.text)}\n  jinja2: ${JSON.stringify(ref)}`);
      }
    }
  });
  const rendered = equal.length + differ.length + loupeFails.length;
  console.log(
    `${names.length} templates, ${loupe.length} renderings: ${equal.length} equal, ${differ.length} differ, ` +
      `${loupeFails.length} fail in loupe only, ${refFails.length} refused by jinja2 (of ${
        rendered + refFails.length
      })`,
  );
  if (Deno.env.get("LOUPE_TEMPLATE_REPORT")) {
    await Deno.writeTextFile(
      Deno.env.get("LOUPE_TEMPLATE_REPORT")!,
      JSON.stringify({ equal, differ, loupeFails, refFails, unexplained }, null, 1),
    );
  }
  assertEquals(unexplained, [], `renderings that differ from jinja2 without a documented reason`);
});
