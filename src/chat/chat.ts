/**
 * Chat through the engine's own chat layer (llama.cpp's common/chat): the model's Jinja template
 * rendered by its Jinja engine, tool calls and reasoning parsed by its output parsers, and JSON
 * Schemas turned into grammars by its converter. This module turns the typed options into what
 * the engine takes and the engine's answers into typed results; the model, sessions and image
 * chats use it.
 *
 * @module
 */
import { NativeChat, schemaToGrammar } from "../../ffi/chat.ts";
import type { NativeModel } from "../../ffi/model.ts";
import { LoupeError } from "../util/errors.ts";
import { wrap } from "../util/native_error.ts";
import { type FieldRule, fieldsProblem, isObject, shown } from "../util/check.ts";

/** A tool the model may call: a name, what it does, and its arguments as a JSON Schema. */
export interface ToolDefinition {
  /** The function's name (required). */
  name: string;
  /** What it does, for the model. */
  description?: string;
  /** Its arguments: a JSON Schema of an object (default: no arguments). */
  parameters?: Record<string, unknown>;
}

/** A call the model made. */
export interface ToolCall {
  /** The call's id (made up when the format has none); a tool message answers it by `toolCallId`. */
  id: string;
  /** The tool's name. */
  name: string;
  /** The arguments, parsed. */
  arguments: Record<string, unknown>;
}

/** Whether the model may call a tool ("auto"), must ("required"), or may not ("none"). */
export type ToolChoice = "auto" | "required" | "none";

/** A message of a chat: text, or an assistant's tool calls, or a tool's answer. */
export interface ChatTurn {
  /** "system", "user", "assistant" or "tool". */
  role: string;
  /** Message text. */
  content: string;
  /** The calls an assistant message made (its `content` may then be ""). */
  toolCalls?: ToolCall[];
  /** On a "tool" message: the id of the call it answers (required there). */
  toolCallId?: string;
  /** On an assistant message: its thinking text, for templates that show it. */
  reasoning?: string;
}

/** Options of chat calls: templates, tools, reasoning. */
export interface ChatOptions {
  /** A Jinja chat template to use instead of the model's own. */
  template?: string;
  /** Extra variables for the template, e.g. `{ enable_thinking: false }`. */
  chatTemplateKwargs?: Record<string, unknown>;
  /** The date date-aware templates print (default: now). */
  now?: Date | number;
  /** Tools the model may call. */
  tools?: ToolDefinition[];
  /** Whether it may or must call one (default "auto"). */
  toolChoice?: ToolChoice;
  /** Whether several calls may come in one reply (default: what the template supports). */
  parallelToolCalls?: boolean;
  /**
   * What to do with thinking text (`<think>…</think>` and the like): "separate" (default) puts it
   * in `result.reasoning` and the answer in `result.text`; "keep" leaves both in `result.text`.
   */
  reasoning?: "separate" | "keep";
}

/** The grammar constraint of one generation, as the sampler takes it (src/generate/options.ts). */
export interface GrammarConstraint {
  /** GBNF ("" for none). */
  grammar: string;
  /** Whether the grammar waits for a trigger. */
  grammarLazy: boolean;
  /** Its triggers. */
  grammarTriggers: Array<{ type: string; value: string }>;
  /** Special tokens that are written out as text (a format's markers). */
  preservedTokens: string[];
  /** Text fed through the grammar before sampling (the format's generation prompt). */
  grammarPrefill: string;
}

/** What the engine's chat layer made of a conversation. */
export interface RenderedChat {
  /** The prompt text. */
  prompt: string;
  /** The output format's name. */
  format: string;
  /** GBNF for tool calls or a schema ("" when none). */
  grammar: string;
  /** Whether it waits for a trigger. */
  grammarLazy: boolean;
  /** Its triggers. */
  grammarTriggers: Array<{ type: string; value: string }>;
  /** Special tokens to keep as text. */
  preservedTokens: string[];
  /** Extra stop strings of the format. */
  additionalStops: string[];
  /** What the prompt ends with for the reply (e.g. "<|im_start|>assistant\n<think>\n"). */
  generationPrompt: string;
  /** The thinking start tag, or "". */
  thinkingStartTag: string;
  /** The thinking end tags. */
  thinkingEndTags: string[];
  /** Whether the template thinks. */
  supportsThinking: boolean;
  /** The serialized output parser. */
  parser: string;
}

/** What a template is, from the engine. */
export interface TemplateInfo {
  /** The Jinja source used. */
  source: string;
  /** Whether the model had no template and chatml stands in. */
  fallback: boolean;
  /** The BOS text templates see. */
  bosToken: string;
  /** The EOS text templates see. */
  eosToken: string;
  /** Whether tokenizing adds BOS (the prompt then leaves it out). */
  addBos: boolean;
  /** Whether tokenizing adds EOS. */
  addEos: boolean;
  /** Whether it can think (enable_thinking). */
  supportsThinking: boolean;
  /** What the engine found the template supports. */
  caps: Record<string, boolean>;
}

/** A parsed reply. */
export interface ParsedReply {
  /** The answer text. */
  text: string;
  /** The thinking text ("" when none). */
  reasoning: string;
  /** The tool calls. */
  toolCalls: ToolCall[];
}

/** The warning of a model without a chat template. */
export const FALLBACK_WARNING = "the model has no chat template; chatml is used, as llama.cpp's tools do";

/** A model's chat templates, one native handle per template source; freed with the model. */
export class ChatTemplates {
  #model: NativeModel;
  #byTemplate = new Map<string | null, NativeChat>();

  /** Made by the model (the handles are made on first use). */
  constructor(model: NativeModel) {
    this.#model = model;
  }

  /** The handle of `template` (null: the model's own); a template that does not parse is INVALID_ARGUMENT. */
  handle(template: string | null = null): NativeChat {
    let chat = this.#byTemplate.get(template);
    if (!chat) {
      try {
        chat = new NativeChat(this.#model, template);
      } catch (e) {
        throw wrap(e, "Cannot use the chat template");
      }
      this.#byTemplate.set(template, chat);
    }
    return chat;
  }

  /** What the template of `template` (null: the model's own) is. */
  info(template: string | null = null): TemplateInfo {
    const chat = this.handle(template);
    try {
      return chat.info<TemplateInfo>();
    } catch (e) {
      throw wrap(e, "Cannot read the chat template");
    }
  }

  /** A JSON Schema's grammar; a schema the converter rejects is INVALID_ARGUMENT with its message. */
  schemaGrammar(schema: unknown): string {
    try {
      return schemaToGrammar(this.#model.api, schema);
    } catch (e) {
      throw wrap(e, "Cannot use the JSON schema");
    }
  }

  /** Frees every handle. */
  free(): void {
    for (const c of this.#byTemplate.values()) c.free();
    this.#byTemplate.clear();
  }
}

/** What `prepareChat` needs of the generate options too. */
export interface ChatConstraintOptions {
  /** GBNF for the reply. */
  grammar?: string;
  /** A JSON Schema the reply must follow. */
  jsonSchema?: Record<string, unknown>;
}

/** A conversation made ready to generate: prompt, constraint, and how to read the reply. */
export interface PreparedChat {
  /** The rendered chat. */
  rendered: RenderedChat;
  /** The grammar constraint for the sampler. */
  constraint: GrammarConstraint;
  /** Whether reasoning is parsed apart. */
  reasoning: boolean;
  /** Whether the reply is JSON (a schema was given). */
  json: boolean;
  /** Whether tools were offered. */
  tools: boolean;
  /** Warnings for the result. */
  warnings: string[];
  /** Milliseconds of rendering. */
  templateMs: number;
  /** Milliseconds of schema conversion. */
  grammarMs: number;
}

/** The fields of chat options and what each may hold (combinations are checked in checkChatOptions). */
const CHAT_RULES: Record<string, FieldRule> = {
  template: "string",
  chatTemplateKwargs: "object",
  now: (v) =>
    (v instanceof Date && Number.isFinite(v.getTime())) || (typeof v === "number" && Number.isFinite(v))
      ? null
      : "a Date or milliseconds",
  tools: (v) => Array.isArray(v) ? null : "an array",
  toolChoice: ["auto", "required", "none"],
  parallelToolCalls: "boolean",
  reasoning: ["separate", "keep"],
  // the constraint options, which the engine's chat layer takes too (as generate options checks them)
  grammar: (v) => typeof v === "string" ? null : "a GBNF string",
  jsonSchema: (v) => isObject(v) ? null : "a JSON Schema object",
};

/** What a tool definition's fields may hold. */
const TOOL_RULES: Record<string, FieldRule> = {
  description: "string",
  parameters: (v) => isObject(v) ? null : "a JSON Schema object",
};

/** What the fields of a tool call in a message may hold. */
const TOOL_CALL_RULES: Record<string, FieldRule> = { id: "string", arguments: "object" };

/** What is wrong with a chat's options, or null. */
function checkChatOptions(options: unknown): string | null {
  if (options === undefined) return null;
  if (!isObject(options)) return `the options must be an object, not ${shown(options)}`;
  const problem = fieldsProblem(options, CHAT_RULES);
  if (problem) return problem;
  const o = options as ChatOptions & ChatConstraintOptions;
  for (const [i, t] of (o.tools ?? []).entries()) {
    if (!isObject(t) || typeof t.name !== "string" || t.name === "") return `tool ${i} needs a name`;
    const bad = fieldsProblem(t as unknown as Record<string, unknown>, TOOL_RULES);
    if (bad) return `tool "${t.name}"'s ${bad}`;
  }
  if (o.toolChoice === "required" && !o.tools?.length) return 'toolChoice "required" needs tools';
  if (o.grammar !== undefined && o.jsonSchema !== undefined) return "give grammar or jsonSchema, not both";
  if (o.grammar !== undefined && o.tools?.length && o.toolChoice !== "none") {
    return "a grammar cannot be combined with tools";
  }
  return null;
}

/** Messages in the OpenAI form the engine parses; throws INVALID_ARGUMENT for a bad message. */
export function toEngineMessages(messages: ReadonlyArray<ChatTurn>, what = "Cannot chat"): Record<string, unknown>[] {
  if (!Array.isArray(messages)) {
    throw new LoupeError("INVALID_ARGUMENT", `${what}: the messages must be an array, not ${shown(messages)}`);
  }
  return messages.map((m, i) => {
    if (typeof m?.role !== "string" || typeof m?.content !== "string") {
      throw new LoupeError("INVALID_ARGUMENT", `${what}: message ${i} needs a string role and content`);
    }
    const out: Record<string, unknown> = { role: m.role.toWellFormed(), content: m.content.toWellFormed() };
    if (m.role === "tool") {
      if (typeof m.toolCallId !== "string" || m.toolCallId === "") {
        throw new LoupeError(
          "INVALID_ARGUMENT",
          `${what}: tool message ${i} needs the toolCallId of the call it answers`,
        );
      }
      out.tool_call_id = m.toolCallId;
    }
    if (m.toolCalls !== undefined) {
      if (!Array.isArray(m.toolCalls)) {
        throw new LoupeError("INVALID_ARGUMENT", `${what}: message ${i}'s toolCalls must be an array`);
      }
      out.tool_calls = (m.toolCalls as ToolCall[]).map((c: ToolCall, j: number) => {
        if (typeof c?.name !== "string" || c.name === "") {
          throw new LoupeError("INVALID_ARGUMENT", `${what}: tool call ${j} of message ${i} needs a name`);
        }
        const bad = fieldsProblem(c as unknown as Record<string, unknown>, TOOL_CALL_RULES);
        if (bad) throw new LoupeError("INVALID_ARGUMENT", `${what}: tool call ${j} of message ${i}: its ${bad}`);
        return {
          id: c.id ?? "",
          type: "function",
          function: { name: c.name, arguments: JSON.stringify(c.arguments ?? {}) },
        };
      });
    }
    if (typeof m.reasoning === "string" && m.reasoning !== "") out.reasoning_content = m.reasoning.toWellFormed();
    return out;
  });
}

/** Renders messages with the engine's chat layer and works out the constraint of the reply. */
export function prepareChat(
  chats: ChatTemplates,
  messages: ReadonlyArray<ChatTurn>,
  options: ChatOptions & ChatConstraintOptions,
  addGenerationPrompt = true,
): PreparedChat {
  const invalid = checkChatOptions(options);
  if (invalid) throw new LoupeError("INVALID_ARGUMENT", `Cannot chat: ${invalid}`);
  options ??= {};
  const t0 = performance.now();
  const engineMessages = toEngineMessages(messages);
  const chat = chats.handle(options.template ?? null);
  const info = chat.info<TemplateInfo>();
  const tools = (options.tools ?? []).map((t) => ({
    type: "function",
    function: {
      name: t.name,
      description: t.description ?? "",
      parameters: t.parameters ?? { type: "object", properties: {} },
    },
  }));
  const reasoning = (options.reasoning ?? "separate") === "separate";
  const now = options.now === undefined
    ? Date.now()
    : options.now instanceof Date
    ? options.now.getTime()
    : options.now;
  // the pinned engine sets date_string and datetime from its clock and ignores its `now` input
  // for them: a given `now` goes in as those variables (strftime_now still reads the clock)
  const kwargs = options.now === undefined ? options.chatTemplateKwargs ?? {} : {
    date_string: formatDate(now, "dmy"),
    datetime: formatDate(now, "mdy"),
    ...options.chatTemplateKwargs,
  };
  let rendered: RenderedChat;
  try {
    rendered = chat.apply<RenderedChat>({
      messages: engineMessages,
      tools,
      toolChoice: options.toolChoice ?? "auto",
      jsonSchema: options.jsonSchema ?? null,
      grammar: options.grammar ?? "",
      addGenerationPrompt,
      reasoning,
      enableThinking: kwargs.enable_thinking === undefined ? true : kwargs.enable_thinking !== false,
      kwargs,
      parallelToolCalls: options.parallelToolCalls ?? info.caps.supports_parallel_tool_calls ?? false,
      now,
    });
  } catch (e) {
    const err = wrap(e, "Cannot apply the chat template");
    throw new LoupeError("INVALID_ARGUMENT", err.message, { nativeMessage: err.nativeMessage, cause: e });
  }
  const templateMs = performance.now() - t0;
  const t1 = performance.now();
  let grammar = rendered.grammar;
  let lazy = rendered.grammarLazy;
  let prefill = rendered.grammarLazy ? "" : rendered.generationPrompt;
  if (options.toolChoice === "required" && grammar !== "") {
    // The engine's grammar for a required call lets free text come first (`root ::= <generation
    // prompt> space until-N? tool-calls`: anything up to the call's opening). A model that does not
    // choose to open a call then writes text to maxTokens and no call comes (llama-server does the
    // same). Required means the reply is the call: the free text goes.
    grammar = grammar.replace(/^(root ::= .*?)\s+until-\d+\?(?=\s)/m, "$1");
  }
  if (options.grammar !== undefined) {
    grammar = options.grammar;
    lazy = false;
    prefill = ""; // a user's grammar starts where the reply starts
  } else if (options.jsonSchema !== undefined && grammar === "") {
    grammar = chats.schemaGrammar(options.jsonSchema);
    prefill = "";
  } else if (options.toolChoice === "required" && grammar === "") {
    // the template shows no call format the engine knows: constrain to a JSON call of one tool
    grammar = chats.schemaGrammar(requiredCallSchema(options.tools!));
    lazy = false;
    prefill = "";
  }
  const warnings = info.fallback && options.template === undefined ? [FALLBACK_WARNING] : [];
  return {
    rendered,
    constraint: {
      grammar,
      grammarLazy: lazy,
      grammarTriggers: rendered.grammarTriggers,
      preservedTokens: rendered.preservedTokens,
      grammarPrefill: prefill,
    },
    reasoning,
    json: options.jsonSchema !== undefined,
    tools: (options.tools?.length ?? 0) > 0 && options.toolChoice !== "none",
    warnings,
    templateMs,
    grammarMs: performance.now() - t1,
  };
}

/** `now` as the engine writes date_string ("26 Sep 2024") and datetime ("Sep 26 2024"), in local time. */
function formatDate(ms: number, order: "dmy" | "mdy"): string {
  const d = new Date(ms);
  const month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][d.getMonth()];
  const day = String(d.getDate()).padStart(2, "0");
  return order === "dmy" ? `${day} ${month} ${d.getFullYear()}` : `${month} ${day} ${d.getFullYear()}`;
}

/** A schema of one call `{"name": …, "arguments": {…}}` of one of `tools`. */
function requiredCallSchema(tools: ToolDefinition[]): Record<string, unknown> {
  return {
    oneOf: tools.map((t) => ({
      type: "object",
      properties: {
        name: { const: t.name },
        arguments: t.parameters ?? { type: "object", properties: {} },
      },
      required: ["name", "arguments"],
    })),
  };
}

/** The grammar of a plain generate call's `grammar`/`jsonSchema` options (no template). */
export function generationConstraint(chats: ChatTemplates, options: ChatConstraintOptions): GrammarConstraint {
  if (options.grammar !== undefined && options.jsonSchema !== undefined) {
    throw new LoupeError("INVALID_ARGUMENT", "Cannot generate: give grammar or jsonSchema, not both");
  }
  const grammar = options.grammar ?? (options.jsonSchema !== undefined ? chats.schemaGrammar(options.jsonSchema) : "");
  return { grammar, grammarLazy: false, grammarTriggers: [], preservedTokens: [], grammarPrefill: "" };
}

/** Parses a reply with the engine's parser of its format; `partial` while it is still coming. */
export function parseReply(
  chats: ChatTemplates,
  template: string | undefined,
  prepared: PreparedChat,
  text: string,
  partial = false,
): ParsedReply {
  const r = prepared.rendered;
  let parsed: { content: string; reasoning: string; toolCalls: Array<{ id: string; name: string; arguments: string }> };
  try {
    parsed = chats.handle(template ?? null).parse(text, {
      format: r.format,
      parser: r.parser,
      generationPrompt: r.generationPrompt,
      reasoning: prepared.reasoning,
      partial,
    });
  } catch {
    // a reply the format's parser does not accept (a model that strayed): the text as it came
    return { text, reasoning: "", toolCalls: [] };
  }
  const toolCalls = parsed.toolCalls.map((c, i) => {
    let args: Record<string, unknown> = {};
    try {
      args = c.arguments ? JSON.parse(c.arguments) : {};
    } catch {
      args = {};
    }
    return { id: c.id || `call_${i}`, name: c.name, arguments: args };
  });
  return { text: parsed.content, reasoning: parsed.reasoning, toolCalls };
}

/** A required call constrained by {@linkcode requiredCallSchema}: parsed from the reply's JSON. */
export function parseRequiredCall(text: string): ToolCall[] {
  try {
    const v = JSON.parse(text);
    if (v && typeof v.name === "string") return [{ id: "call_0", name: v.name, arguments: v.arguments ?? {} }];
  } catch {
    // not a call
  }
  return [];
}

/** Whether {@linkcode prepareChat} fell back to loupe's own call grammar for a required call. */
export function usesOwnCallGrammar(prepared: PreparedChat, options: ChatOptions): boolean {
  return options.toolChoice === "required" && prepared.rendered.grammar === "";
}
