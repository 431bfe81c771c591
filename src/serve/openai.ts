/**
 * The OpenAI dialect of the server (src/serve/server.ts), as pure functions: a request body read
 * and checked (JSON, its depth, UTF-8), each endpoint's request mapped onto loupe's options, and
 * loupe's results shaped into the OpenAI (and llama-server) responses, error objects and
 * streamed chunks. Nothing here touches a model: the server does, with what these return.
 *
 * A request that is wrong is an {@linkcode ApiError}, a LoupeError that carries the HTTP status and
 * the OpenAI error object's `type`, `param` and `code`; {@linkcode errorOf} maps every other error
 * to a status too (an error of loupe's own is a 500, never a crash).
 *
 * @module
 */
import type { ChatOptions, ChatTurn, ToolCall, ToolChoice, ToolDefinition } from "../chat/chat.ts";
import type { GenerateOptions } from "../generate/options.ts";
import type { StopReason } from "../generate/result.ts";
import type { Timeline } from "../timeline/timeline.ts";
import { isObject, ruleProblem, shown } from "../util/check.ts";
import { LoupeError, type LoupeErrorCode } from "../util/errors.ts";
import type { ContentPart, VisionMessage } from "../vision/vision.ts";

/** How deep a request's JSON may nest (objects and arrays) before it is refused unread. */
export const MAX_JSON_DEPTH = 64;

/** The most `top_logprobs` (and legacy `logprobs`) a request may ask for. */
export const MAX_TOP_LOGPROBS = 20;

/** The most inputs of one embeddings request (as OpenAI's API). */
export const MAX_EMBEDDING_INPUTS = 2048;

/**
 * How deep a request's `grammar` may nest groups, and how long it may be: the engine parses a
 * grammar and follows its rules recursively, on the thread that starts the request, so a deeper
 * or longer one (about 20,000 nested groups, or 100,000 chained rules) overflows its stack and
 * ends the process.
 */
export const MAX_GRAMMAR_DEPTH = 128;
/** The longest `grammar`, in characters (see {@linkcode MAX_GRAMMAR_DEPTH}). */
export const MAX_GRAMMAR_LENGTH = 64 * 1024;
/**
 * The most `$ref`s in one JSON schema of a request (`response_format`, `json_schema`, a tool's
 * `parameters`): the engine turns a schema into a grammar recursively through its references, and
 * a chain of some 20,000 overflows its stack and ends the process.
 */
export const MAX_SCHEMA_REFS = 1024;
/**
 * The most optional properties (those a schema's `required` leaves out) in a request's JSON
 * schemas together: the engine's conversion of a schema into a grammar takes time that grows with
 * about their cube (1,000 in one object take 2.5 s, 3,000 take 45 s on a 2-core machine), while
 * it holds the thread that answers every request.
 */
export const MAX_SCHEMA_OPTIONAL = 512;

/** Options of {@linkcode ApiError}: the OpenAI error object's fields. */
export interface ApiErrorOptions {
  /** The error's `type` (default by status: "invalid_request_error", "authentication_error", …). */
  type?: string;
  /** The request field at fault, e.g. "messages[0].content". */
  param?: string | null;
  /** A machine-readable code, e.g. "context_length_exceeded", "model_not_found". */
  code?: string | null;
  /** The LoupeError code (default by status). */
  loupeCode?: LoupeErrorCode;
  /** The underlying error. */
  cause?: unknown;
}

/** A request the server refuses, with its HTTP status and the OpenAI error object's fields. */
export class ApiError extends LoupeError {
  /** HTTP status, e.g. 400. */
  readonly status: number;
  /** The error object's `type`. */
  readonly type: string;
  /** The request field at fault, or null. */
  readonly param: string | null;
  /** The error object's `code`, or null. */
  readonly apiCode: string | null;

  /** Creates the error. */
  constructor(status: number, message: string, options: ApiErrorOptions = {}) {
    super(options.loupeCode ?? loupeCodeOf(status), message, { cause: options.cause });
    this.name = "ApiError";
    this.status = status;
    this.type = options.type ?? typeOf(status);
    this.param = options.param ?? null;
    this.apiCode = options.code ?? null;
  }
}

function loupeCodeOf(status: number): LoupeErrorCode {
  if (status === 401) return "UNAUTHORIZED";
  if (status === 404) return "NOT_FOUND";
  if (status === 504) return "ABORTED";
  return status >= 500 ? "INTERNAL" : "INVALID_ARGUMENT";
}

function typeOf(status: number): string {
  if (status === 401) return "authentication_error";
  if (status === 404) return "not_found_error";
  if (status === 503) return "unavailable_error";
  if (status === 504) return "timeout_error";
  return status >= 500 ? "server_error" : "invalid_request_error";
}

/** An OpenAI error object: `{ error: { message, type, param, code } }`. */
export interface ErrorBody {
  /** The error. */
  error: { message: string; type: string; param: string | null; code: string | number | null };
}

/** The HTTP status of a LoupeError code that is not a request's own fault. */
const STATUS_OF_CODE: Partial<Record<string, number>> = {
  INVALID_ARGUMENT: 400,
  BAD_FORMAT: 400, // an image that does not decode
  WRONG_KIND: 400,
  CONTEXT_OVERFLOW: 400,
  NOT_FOUND: 400, // only a request's own input can be missing here (nothing is read from paths)
  BUSY: 503,
  CLOSED: 503, // the server is closing
  NOT_ENOUGH_MEMORY: 503,
  ABORTED: 503,
};

/**
 * The status and OpenAI error object of any error: an {@linkcode ApiError} as it says, a
 * LoupeError by its code (bad input 400, `CONTEXT_OVERFLOW` 400 with code
 * "context_length_exceeded", `BUSY` 503, …), anything else a 500 "server_error".
 */
export function errorOf(e: unknown): { status: number; body: ErrorBody } {
  if (e instanceof ApiError) {
    return { status: e.status, body: errorBody(e.message, e.type, e.param, e.apiCode) };
  }
  if (e instanceof LoupeError) {
    const status = STATUS_OF_CODE[e.code] ?? 500;
    const code = e.code === "CONTEXT_OVERFLOW" ? "context_length_exceeded" : e.code.toLowerCase();
    return { status, body: errorBody(e.message, typeOf(status), null, code) };
  }
  const message = e instanceof Error ? e.message : String(e);
  return { status: 500, body: errorBody(`Internal error: ${message}`, "server_error", null, null) };
}

/** An OpenAI error object. */
export function errorBody(
  message: string,
  type: string,
  param: string | null = null,
  code: string | null = null,
): ErrorBody {
  return { error: { message, type, param, code } };
}

/** A 400 naming the field at fault. */
function invalid(what: string, detail: string, param: string | null, code: string | null = null): ApiError {
  return new ApiError(400, `${what}: ${detail}`, { param, code });
}

/** Whether a host name binds the loopback interface only ("localhost", 127.x.x.x, ::1). */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** The warning of a server bound beyond loopback without an API key, or null when there is none to give. */
export function exposureWarning(host: string, apiKey: string | undefined, url: string): string | null {
  if (isLoopback(host) || apiKey) return null;
  return `loupe: the server listens on ${host} without an API key: anyone who can reach ${url} can use it; ` +
    `give apiKey (--api-key) to require one`;
}

// ---------------------------------------------------------------------------------------------
// The body

/**
 * Whether `text` (JSON) nests objects and arrays deeper than `limit`: a linear scan that skips
 * strings, made before JSON.parse so a deeply nested body costs no recursion.
 */
export function jsonTooDeep(text: string, limit: number = MAX_JSON_DEPTH): boolean {
  let depth = 0;
  let inString = false;
  let escaped = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (escaped) escaped = false;
      else if (c === 0x5c) escaped = true;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > limit) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

/**
 * A request body as a JSON object: UTF-8 (strictly: invalid bytes are a 400), at most
 * `maxDepth` levels deep, and an object at the top; anything else is a 400 {@linkcode ApiError}.
 */
export function parseJsonBody(bytes: Uint8Array, maxDepth: number = MAX_JSON_DEPTH): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (e) {
    throw new ApiError(400, "Cannot read the request: the body is not valid UTF-8", { cause: e });
  }
  if (text.trim() === "") throw new ApiError(400, "Cannot read the request: the body is empty; send a JSON object");
  if (jsonTooDeep(text, maxDepth)) {
    throw new ApiError(400, `Cannot read the request: the JSON nests deeper than ${maxDepth} levels`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, `Cannot read the request: the body is not valid JSON (${(e as Error).message})`, {
      cause: e,
    });
  }
  if (!isObject(value)) {
    throw new ApiError(400, `Cannot read the request: the body must be a JSON object, not ${shown(value)}`);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Requests

/** The limits a request is checked against. */
export interface RequestLimits {
  /** Most messages in a chat request. */
  maxMessages: number;
  /** Most images (and audio clips) in a chat request. */
  maxImages: number;
}

/** What a chat or completion request asks for besides its prompt. */
interface GenerationFields {
  /** The `model` field, if given. */
  model?: string;
  /** Sampling and stopping (and, for chats, templates, tools, structured output). */
  options: GenerateOptions & ChatOptions;
  /** Whether to stream (server-sent events). */
  stream: boolean;
  /** Whether a stream ends with a usage chunk (`stream_options.include_usage`). */
  includeUsage: boolean;
  /** Top alternatives per token when logprobs are asked for (0..20), else undefined. */
  logprobs?: number;
}

/** A checked `/v1/chat/completions` request. */
export interface ChatRequest extends GenerationFields {
  /** The messages as loupe's chat takes them (no media). */
  messages: ChatTurn[];
  /** The messages with their media, when any message holds an image or audio (the image lane). */
  media: VisionMessage[] | null;
  /** Images and audio clips in all messages. */
  mediaCount: number;
}

/** A checked `/v1/completions` request. */
export interface CompletionRequest extends GenerationFields {
  /** The prompt. */
  prompt: string;
}

/** A checked `/v1/embeddings` request. */
export interface EmbeddingRequest {
  /** The `model` field, if given. */
  model?: string;
  /** The texts. */
  input: string[];
  /** Whether vectors go out as base64 (little-endian float32 bytes). */
  base64: boolean;
}

/** A checked `/v1/rerank` request (llama-server's shape). */
export interface RerankRequest {
  /** The `model` field, if given. */
  model?: string;
  /** The query. */
  query: string;
  /** The documents. */
  documents: string[];
  /** How many results to keep (default: all). */
  topN?: number;
  /** Whether each result repeats its document's text. */
  returnDocuments: boolean;
}

/** Reads one field of `body` under a rule of src/util/check.ts; undefined and null mean "not given". */
function field<T>(
  body: Record<string, unknown>,
  name: string,
  rule: Parameters<typeof ruleProblem>[1],
  what: string,
): T | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  const problem = ruleProblem(v, rule);
  if (problem) throw invalid(what, `${name} ${problem}`, name);
  return v as T;
}

const range = (lo: number, hi: number) => (v: unknown) =>
  typeof v === "number" && Number.isFinite(v) && v >= lo && v <= hi ? null : `a number from ${lo} to ${hi}`;

const atLeast = (lo: number, integer = false) => (v: unknown) =>
  typeof v === "number" && Number.isFinite(v) && v >= lo && (!integer || Number.isInteger(v))
    ? null
    : `${integer ? "a whole number" : "a number"} ≥ ${lo}`;

/** The sampling fields shared by chat and completion requests (OpenAI's, and llama.cpp's extras). */
function samplingFields(body: Record<string, unknown>, what: string): GenerateOptions & ChatOptions {
  const o: GenerateOptions & ChatOptions = {};
  const n = field<number>(body, "n", (v) => v === 1 ? null : "1 (one choice per request)", what);
  void n;
  const maxTokens = field<number>(body, "max_tokens", atLeast(1, true), what);
  const maxCompletion = field<number>(body, "max_completion_tokens", atLeast(1, true), what);
  const max = maxCompletion ?? maxTokens;
  if (max !== undefined) o.maxTokens = Math.min(max, 2 ** 31 - 1);
  const temperature = field<number>(body, "temperature", range(0, 2), what);
  if (temperature !== undefined) o.temperature = temperature;
  const topP = field<number>(body, "top_p", range(0, 1), what);
  if (topP !== undefined) o.topP = topP;
  const seed = field<number>(
    body,
    "seed",
    (v) =>
      Number.isInteger(v) && (v as number) >= -1 && (v as number) <= 0xFFFFFFFF
        ? null
        : `a whole number from -1 (random) to ${0xFFFFFFFF}`,
    what,
  );
  if (seed !== undefined && seed !== -1) o.seed = seed;
  const stop = body.stop;
  if (stop !== undefined && stop !== null) {
    const list = typeof stop === "string" ? [stop] : stop;
    if (!Array.isArray(list) || list.some((s) => typeof s !== "string")) {
      throw invalid(what, `stop must be a string or an array of strings, not ${shown(stop)}`, "stop");
    }
    const kept = (list as string[]).filter((s) => s !== "");
    if (kept.length) o.stop = kept;
  }
  for (const name of ["presence_penalty", "frequency_penalty"]) {
    const v = field<number>(body, name, range(-2, 2), what);
    if (v !== undefined && v !== 0) {
      throw invalid(what, `${name} is not supported (only 0); use repeat_penalty`, name, "unsupported_parameter");
    }
  }
  const bias = field<Record<string, unknown>>(body, "logit_bias", "object", what);
  if (bias && Object.keys(bias).length) {
    throw invalid(what, "logit_bias is not supported", "logit_bias", "unsupported_parameter");
  }
  // llama.cpp's extras, as clients send them in the extra body
  const ignoreEos = field<boolean>(body, "ignore_eos", "boolean", what);
  if (ignoreEos !== undefined) o.ignoreEos = ignoreEos;
  const topK = field<number>(body, "top_k", atLeast(0, true), what);
  if (topK !== undefined) o.topK = topK;
  const minP = field<number>(body, "min_p", range(0, 1), what);
  if (minP !== undefined) o.minP = minP;
  const repeatPenalty = field<number>(body, "repeat_penalty", atLeast(0), what);
  if (repeatPenalty !== undefined) o.repeatPenalty = repeatPenalty;
  const repeatLastN = field<number>(body, "repeat_last_n", atLeast(-1, true), what);
  if (repeatLastN !== undefined) o.repeatLastN = repeatLastN;
  const grammar = field<string>(body, "grammar", "string", what);
  if (grammar !== undefined && grammar !== "") o.grammar = checkedGrammar(grammar, what);
  return o;
}

/**
 * How deep a GBNF grammar nests parenthesized groups (strings, character classes and comments
 * skipped): a linear scan made before the engine parses it recursively.
 */
export function grammarDepth(text: string): number {
  let depth = 0;
  let max = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"' || c === "[") {
      const close = c === '"' ? '"' : "]";
      for (i++; i < text.length && text[i] !== close; i++) if (text[i] === "\\") i++;
    } else if (c === "#") {
      while (i < text.length && text[i] !== "\n") i++;
    } else if (c === "(") {
      max = Math.max(max, ++depth);
    } else if (c === ")") {
      depth--;
    }
  }
  return max;
}

/** A request's grammar, refused (400) when longer or deeper than the engine can take without overflowing its stack. */
function checkedGrammar(grammar: string, what: string): string {
  if (grammar.length > MAX_GRAMMAR_LENGTH) {
    throw invalid(what, `grammar may hold at most ${MAX_GRAMMAR_LENGTH} characters, not ${grammar.length}`, "grammar");
  }
  const depth = grammarDepth(grammar);
  if (depth > MAX_GRAMMAR_DEPTH) {
    throw invalid(
      what,
      `grammar nests groups ${depth} levels deep; at most ${MAX_GRAMMAR_DEPTH} are allowed`,
      "grammar",
    );
  }
  return grammar;
}

/**
 * The `$ref`s and the optional properties (keys of `properties` that `required` does not name) in a
 * JSON schema (a request's JSON is at most MAX_JSON_DEPTH deep, so the recursion is bounded).
 */
function schemaCost(value: unknown): { refs: number; optional: number } {
  const cost = { refs: 0, optional: 0 };
  const visit = (v: unknown) => {
    if (Array.isArray(v)) {
      v.forEach(visit);
      return;
    }
    if (!isObject(v)) return;
    if (typeof v.$ref === "string") cost.refs++;
    if (isObject(v.properties)) {
      const required = new Set(Array.isArray(v.required) ? v.required : []);
      cost.optional += Object.keys(v.properties).filter((k) => !required.has(k)).length;
    }
    Object.values(v).forEach(visit);
  };
  visit(value);
  return cost;
}

/**
 * A request's JSON schema, refused (400) when it holds more references than the engine can follow
 * without overflowing its stack, or more optional properties than it converts in reasonable time.
 */
function checkedSchema(schema: Record<string, unknown>, param: string, what: string): Record<string, unknown> {
  const { refs, optional } = schemaCost(schema);
  if (refs > MAX_SCHEMA_REFS) {
    throw invalid(what, `${param} holds ${refs} $refs; at most ${MAX_SCHEMA_REFS} are allowed`, param);
  }
  if (optional > MAX_SCHEMA_OPTIONAL) {
    throw invalid(
      what,
      `${param} holds ${optional} optional properties; at most ${MAX_SCHEMA_OPTIONAL} are allowed`,
      param,
    );
  }
  return schema;
}

/** `stream`, `stream_options` and the logprob fields. */
function streamFields(
  body: Record<string, unknown>,
  what: string,
  legacyLogprobs: boolean,
): Pick<GenerationFields, "stream" | "includeUsage" | "logprobs"> {
  const stream = field<boolean>(body, "stream", "boolean", what) ?? false;
  const options = field<Record<string, unknown>>(body, "stream_options", "object", what);
  if (options && !stream) {
    throw invalid(what, "stream_options is only allowed when stream is true", "stream_options");
  }
  const includeUsage = options
    ? field<boolean>(options, "include_usage", "boolean", `${what}: stream_options`) ?? false
    : false;
  let logprobs: number | undefined;
  if (legacyLogprobs) {
    logprobs = field<number>(
      body,
      "logprobs",
      (v) =>
        Number.isInteger(v) && (v as number) >= 0 && (v as number) <= MAX_TOP_LOGPROBS
          ? null
          : `a whole number from 0 to ${MAX_TOP_LOGPROBS}`,
      what,
    );
  } else {
    const on = field<boolean>(body, "logprobs", "boolean", what) ?? false;
    const top = field<number>(
      body,
      "top_logprobs",
      (v) =>
        Number.isInteger(v) && (v as number) >= 0 && (v as number) <= MAX_TOP_LOGPROBS
          ? null
          : `a whole number from 0 to ${MAX_TOP_LOGPROBS}`,
      what,
    );
    if (top !== undefined && !on) throw invalid(what, "top_logprobs needs logprobs: true", "top_logprobs");
    if (on) logprobs = top ?? 0;
  }
  return { stream, includeUsage, logprobs };
}

function modelField(body: Record<string, unknown>, what: string): string | undefined {
  return field<string>(body, "model", "string", what);
}

/** The tools of a chat request, OpenAI's shape to loupe's. */
function toolFields(body: Record<string, unknown>, what: string): Partial<ChatOptions> {
  const out: Partial<ChatOptions> = {};
  const tools = body.tools;
  let defs: ToolDefinition[] | undefined;
  if (tools !== undefined && tools !== null) {
    if (!Array.isArray(tools)) throw invalid(what, `tools must be an array, not ${shown(tools)}`, "tools");
    defs = tools.map((t, i) => {
      const param = `tools[${i}]`;
      if (!isObject(t) || (t.type !== undefined && t.type !== "function") || !isObject(t.function)) {
        throw invalid(what, `${param} must be { type: "function", function: { name, … } }`, param);
      }
      const f = t.function;
      if (typeof f.name !== "string" || f.name === "") {
        throw invalid(what, `${param}.function.name must be a non-empty string`, `${param}.function.name`);
      }
      if (f.description !== undefined && typeof f.description !== "string") {
        throw invalid(what, `${param}.function.description must be a string`, `${param}.function.description`);
      }
      if (f.parameters !== undefined && !isObject(f.parameters)) {
        throw invalid(
          what,
          `${param}.function.parameters must be a JSON Schema object`,
          `${param}.function.parameters`,
        );
      }
      const def: ToolDefinition = { name: f.name };
      if (f.description !== undefined) def.description = f.description as string;
      if (f.parameters !== undefined) {
        def.parameters = checkedSchema(f.parameters, `${param}.function.parameters`, what);
      }
      return def;
    });
    const optional = defs.reduce((n, d) => n + schemaCost(d.parameters).optional, 0);
    if (optional > MAX_SCHEMA_OPTIONAL) {
      throw invalid(
        what,
        `the tools' parameters hold ${optional} optional properties in all; at most ${MAX_SCHEMA_OPTIONAL} are allowed`,
        "tools",
      );
    }
    if (defs.length) out.tools = defs;
  }
  const choice = body.tool_choice;
  if (choice !== undefined && choice !== null) {
    if (choice === "auto" || choice === "none" || choice === "required") {
      out.toolChoice = choice as ToolChoice;
    } else if (isObject(choice) && isObject(choice.function) && typeof choice.function.name === "string") {
      const name = choice.function.name;
      const one = defs?.find((d) => d.name === name);
      if (!one) throw invalid(what, `tool_choice names "${name}", which is not among the tools`, "tool_choice");
      out.tools = [one];
      out.toolChoice = "required";
    } else {
      throw invalid(
        what,
        `tool_choice must be "auto", "none", "required" or { type: "function", function: { name } }, not ${
          shown(choice)
        }`,
        "tool_choice",
      );
    }
    if (out.toolChoice === "required" && !out.tools) {
      throw invalid(what, 'tool_choice "required" needs tools', "tool_choice");
    }
  }
  const parallel = field<boolean>(body, "parallel_tool_calls", "boolean", what);
  if (parallel !== undefined && out.tools) out.parallelToolCalls = parallel;
  return out;
}

/** `response_format` (and llama-server's `json_schema` extra) as loupe's jsonSchema. */
function formatFields(body: Record<string, unknown>, what: string): Partial<GenerateOptions> {
  const format = body.response_format;
  const extra = field<Record<string, unknown>>(body, "json_schema", "object", what);
  if (extra) checkedSchema(extra, "json_schema", what);
  if (format === undefined || format === null) return extra ? { jsonSchema: extra } : {};
  if (!isObject(format)) {
    throw invalid(what, `response_format must be an object, not ${shown(format)}`, "response_format");
  }
  switch (format.type) {
    case "text":
      return {};
    case "json_object": {
      const schema = format.schema; // llama-server takes a schema here too
      if (schema !== undefined && !isObject(schema)) {
        throw invalid(what, "response_format.schema must be a JSON Schema object", "response_format.schema");
      }
      if (schema !== undefined) checkedSchema(schema, "response_format.schema", what);
      return { jsonSchema: (schema as Record<string, unknown>) ?? { type: "object" } };
    }
    case "json_schema": {
      const spec = format.json_schema;
      if (!isObject(spec) || !isObject(spec.schema)) {
        throw invalid(
          what,
          "response_format.json_schema.schema must be a JSON Schema object",
          "response_format.json_schema.schema",
        );
      }
      return { jsonSchema: checkedSchema(spec.schema, "response_format.json_schema.schema", what) };
    }
    default:
      throw invalid(
        what,
        `response_format.type must be "text", "json_object" or "json_schema", not ${shown(format.type)}`,
        "response_format.type",
      );
  }
}

/** The image bytes of a `data:` URL; a path, `file:` or `http(s):` URL (anything else) is a 400. */
export function decodeDataUrl(url: unknown, param: string, what = "Cannot chat"): Uint8Array {
  if (typeof url !== "string") throw invalid(what, `${param} must be a string, not ${shown(url)}`, param);
  const m = url.match(/^data:([^,]*),/i);
  if (!m) {
    throw invalid(
      what,
      `${param} must be a data: URL (data:image/png;base64,…); the server reads no files and fetches no URLs, ` +
        `not ${shown(url)}`,
      param,
      "invalid_image_url",
    );
  }
  if (!/;base64$/i.test(m[1])) {
    throw invalid(what, `${param} must be base64-encoded (data:<type>;base64,…)`, param, "invalid_image_url");
  }
  const data = url.slice(m[0].length).replace(/\s+/g, "");
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.fromBase64(data);
  } catch (e) {
    throw new ApiError(400, `${what}: ${param} is not valid base64`, { param, code: "invalid_image_url", cause: e });
  }
  if (bytes.length === 0) throw invalid(what, `${param} holds no data`, param, "invalid_image_url");
  return bytes;
}

/** The text of a message's content (string, or text parts); media parts go to `media`. */
function contentOf(
  content: unknown,
  param: string,
  what: string,
  media: ContentPart[] | null,
): string {
  if (typeof content === "string") return content;
  if (content === null || content === undefined) return "";
  if (!Array.isArray(content)) {
    throw invalid(what, `${param} must be a string or an array of content parts, not ${shown(content)}`, param);
  }
  let text = "";
  for (const [j, part] of content.entries()) {
    const p = `${param}[${j}]`;
    if (typeof part === "string") {
      text += part;
      media?.push(part);
      continue;
    }
    if (!isObject(part)) throw invalid(what, `${p} must be a content part object, not ${shown(part)}`, p);
    if (part.type === "text") {
      if (typeof part.text !== "string") throw invalid(what, `${p}.text must be a string`, `${p}.text`);
      text += part.text;
      media?.push(part.text);
    } else if (part.type === "image_url") {
      if (!media) throw invalid(what, `${p}: only user messages may hold images`, p);
      const image = part.image_url;
      const url = isObject(image) ? image.url : image;
      media.push({ image: decodeDataUrl(url, isObject(image) ? `${p}.image_url.url` : `${p}.image_url`, what) });
    } else if (part.type === "input_audio") {
      if (!media) throw invalid(what, `${p}: only user messages may hold audio`, p);
      const audio = part.input_audio;
      if (!isObject(audio) || typeof audio.data !== "string") {
        throw invalid(what, `${p}.input_audio must be { data: <base64>, format }`, `${p}.input_audio`);
      }
      media.push({ audio: decodeDataUrl(`data:;base64,${audio.data}`, `${p}.input_audio.data`, what) });
    } else {
      throw invalid(
        what,
        `${p}.type must be "text", "image_url" or "input_audio", not ${shown(part.type)}`,
        `${p}.type`,
      );
    }
  }
  return text;
}

/** An assistant message's `tool_calls`, OpenAI's shape to loupe's (arguments parsed). */
function toolCallsOf(calls: unknown, param: string, what: string): ToolCall[] {
  if (!Array.isArray(calls)) throw invalid(what, `${param} must be an array, not ${shown(calls)}`, param);
  return calls.map((c, j) => {
    const p = `${param}[${j}]`;
    if (!isObject(c) || !isObject(c.function) || typeof c.function.name !== "string" || c.function.name === "") {
      throw invalid(what, `${p} must be { id, type: "function", function: { name, arguments } }`, p);
    }
    const raw = c.function.arguments;
    let args: unknown = {};
    if (typeof raw === "string") {
      try {
        args = raw.trim() === "" ? {} : JSON.parse(raw);
      } catch {
        throw invalid(what, `${p}.function.arguments is not valid JSON`, `${p}.function.arguments`);
      }
    } else if (raw !== undefined && raw !== null) args = raw;
    if (!isObject(args)) {
      throw invalid(what, `${p}.function.arguments must be a JSON object`, `${p}.function.arguments`);
    }
    return { id: typeof c.id === "string" ? c.id : `call_${j}`, name: c.function.name, arguments: args };
  });
}

const ROLES = ["system", "developer", "user", "assistant", "tool"];

/**
 * A `/v1/chat/completions` request checked and mapped: messages (string content or text, image
 * and audio parts; images only as base64 `data:` URLs), sampling, tools, response_format,
 * logprobs and streaming. A wrong field is a 400 {@linkcode ApiError} naming it.
 */
export function parseChatRequest(body: Record<string, unknown>, limits: RequestLimits): ChatRequest {
  const what = "Cannot chat";
  const model = modelField(body, what);
  const list = body.messages;
  if (!Array.isArray(list) || list.length === 0) {
    throw invalid(what, `messages must be a non-empty array, not ${shown(list)}`, "messages");
  }
  if (list.length > limits.maxMessages) {
    throw invalid(what, `a request may hold at most ${limits.maxMessages} messages, not ${list.length}`, "messages");
  }
  const messages: ChatTurn[] = [];
  const vision: VisionMessage[] = [];
  let mediaCount = 0;
  for (const [i, m] of list.entries()) {
    const param = `messages[${i}]`;
    if (!isObject(m)) throw invalid(what, `${param} must be an object, not ${shown(m)}`, param);
    if (typeof m.role !== "string" || !ROLES.includes(m.role)) {
      throw invalid(
        what,
        `${param}.role must be "system", "developer", "user", "assistant" or "tool", not ${shown(m.role)}`,
        `${param}.role`,
      );
    }
    const role = m.role === "developer" ? "system" : m.role;
    const parts: ContentPart[] | null = role === "user" ? [] : null;
    const content = contentOf(m.content, `${param}.content`, what, parts);
    const turn: ChatTurn = { role, content };
    if (role === "assistant" && m.tool_calls !== undefined && m.tool_calls !== null) {
      const calls = toolCallsOf(m.tool_calls, `${param}.tool_calls`, what);
      if (calls.length) turn.toolCalls = calls;
    }
    if (role === "assistant" && typeof m.reasoning_content === "string" && m.reasoning_content !== "") {
      turn.reasoning = m.reasoning_content;
    }
    if (role === "tool") {
      if (typeof m.tool_call_id !== "string" || m.tool_call_id === "") {
        throw invalid(what, `${param}.tool_call_id must be the id of the call it answers`, `${param}.tool_call_id`);
      }
      turn.toolCallId = m.tool_call_id;
    }
    const media = parts?.filter((p) => typeof p === "object" && ("image" in p || "audio" in p)).length ?? 0;
    mediaCount += media;
    if (mediaCount > limits.maxImages) {
      throw invalid(
        what,
        `a request may hold at most ${limits.maxImages} images and audio clips`,
        `${param}.content`,
      );
    }
    messages.push(turn);
    vision.push({ role, content: media > 0 ? parts! : content });
  }
  const options = { ...samplingFields(body, what), ...toolFields(body, what), ...formatFields(body, what) };
  const kwargs = field<Record<string, unknown>>(body, "chat_template_kwargs", "object", what);
  if (kwargs) options.chatTemplateKwargs = kwargs;
  if (options.grammar !== undefined && options.jsonSchema !== undefined) {
    throw invalid(what, "give grammar or response_format, not both", "grammar");
  }
  const out: ChatRequest = {
    messages,
    media: mediaCount > 0 ? vision : null,
    mediaCount,
    options,
    ...streamFields(body, what, false),
  };
  if (model !== undefined) out.model = model;
  if (out.media) {
    if (options.tools) throw invalid(what, "tools cannot be combined with images or audio", "tools");
    if (options.jsonSchema || options.grammar) {
      throw invalid(what, "response_format and grammar cannot be combined with images or audio", "response_format");
    }
    if (out.logprobs !== undefined) {
      throw invalid(what, "logprobs are not available for requests with images or audio", "logprobs");
    }
  }
  return out;
}

/**
 * A `/v1/completions` request checked and mapped: the prompt (a string, or an array of one
 * string), sampling, legacy `logprobs` (0..20) and streaming; `echo`, `suffix` and `best_of`
 * other than their defaults are refused.
 */
export function parseCompletionRequest(body: Record<string, unknown>): CompletionRequest {
  const what = "Cannot complete";
  const model = modelField(body, what);
  let prompt = body.prompt;
  if (Array.isArray(prompt)) {
    if (prompt.length !== 1 || typeof prompt[0] !== "string") {
      throw invalid(what, "prompt must be a string or an array of one string", "prompt");
    }
    prompt = prompt[0];
  }
  if (typeof prompt !== "string") throw invalid(what, `prompt must be a string, not ${shown(prompt)}`, "prompt");
  if (prompt === "") throw invalid(what, "prompt is empty", "prompt");
  if (body.echo === true) throw invalid(what, "echo is not supported", "echo", "unsupported_parameter");
  if (typeof body.suffix === "string" && body.suffix !== "") {
    throw invalid(what, "suffix is not supported", "suffix", "unsupported_parameter");
  }
  field<number>(body, "best_of", (v) => v === 1 ? null : "1", what);
  const options = { ...samplingFields(body, what), ...formatFields(body, what) };
  if (options.grammar !== undefined && options.jsonSchema !== undefined) {
    throw invalid(what, "give grammar or json_schema, not both", "grammar");
  }
  const out: CompletionRequest = { prompt, options, ...streamFields(body, what, true) };
  if (model !== undefined) out.model = model;
  return out;
}

/** A `/v1/embeddings` request: `input` a string or an array of strings, `encoding_format` float or base64. */
export function parseEmbeddingRequest(body: Record<string, unknown>): EmbeddingRequest {
  const what = "Cannot embed";
  const model = modelField(body, what);
  const input = body.input;
  const list = typeof input === "string" ? [input] : input;
  if (!Array.isArray(list) || list.length === 0) {
    throw invalid(what, `input must be a string or a non-empty array of strings, not ${shown(input)}`, "input");
  }
  for (const [i, t] of list.entries()) {
    if (typeof t !== "string") {
      throw invalid(
        what,
        `input[${i}] must be a string, not ${shown(t)}${
          typeof t === "number" || Array.isArray(t) ? " (token arrays are not supported)" : ""
        }`,
        `input[${i}]`,
      );
    }
  }
  if (list.length > MAX_EMBEDDING_INPUTS) {
    throw invalid(what, `input may hold at most ${MAX_EMBEDDING_INPUTS} texts, not ${list.length}`, "input");
  }
  const format = field<string>(body, "encoding_format", ["float", "base64"], what) ?? "float";
  field<number>(body, "dimensions", atLeast(1, true), what);
  const out: EmbeddingRequest = { input: list as string[], base64: format === "base64" };
  if (model !== undefined) out.model = model;
  return out;
}

/** A `/v1/rerank` request: `query`, `documents` (strings or `{ text }`), `top_n`, `return_documents`. */
export function parseRerankRequest(body: Record<string, unknown>): RerankRequest {
  const what = "Cannot rerank";
  const model = modelField(body, what);
  const query = body.query;
  if (typeof query !== "string") throw invalid(what, `query must be a string, not ${shown(query)}`, "query");
  const docs = body.documents;
  if (!Array.isArray(docs) || docs.length === 0) {
    throw invalid(what, `documents must be a non-empty array of strings, not ${shown(docs)}`, "documents");
  }
  const documents = docs.map((d, i) => {
    if (typeof d === "string") return d;
    if (isObject(d) && typeof d.text === "string") return d.text;
    throw invalid(what, `documents[${i}] must be a string, not ${shown(d)}`, `documents[${i}]`);
  });
  if (documents.length > MAX_EMBEDDING_INPUTS) {
    throw invalid(what, `documents may hold at most ${MAX_EMBEDDING_INPUTS} texts`, "documents");
  }
  const topN = field<number>(body, "top_n", atLeast(1, true), what);
  const returnDocuments = field<boolean>(body, "return_documents", "boolean", what) ?? false;
  const out: RerankRequest = { query, documents, returnDocuments };
  if (topN !== undefined) out.topN = topN;
  if (model !== undefined) out.model = model;
  return out;
}

/**
 * The tokens a request may generate: what it asked for (default: the rest of the slot), capped by
 * what is left of the slot after the prompt, as llama-server caps `n_predict`. A prompt that
 * leaves no room is a 400 with code "context_length_exceeded".
 */
export function capMaxTokens(
  requested: number | undefined,
  promptTokens: number,
  slotContext: number,
): { maxTokens: number; capped: boolean } {
  const room = slotContext - promptTokens;
  if (room < 1) {
    throw new ApiError(
      400,
      `Cannot generate: the prompt has ${promptTokens} tokens, but a request may hold at most ${slotContext} ` +
        `(prompt and reply together)`,
      { param: "messages", code: "context_length_exceeded", loupeCode: "CONTEXT_OVERFLOW" },
    );
  }
  if (requested === undefined) return { maxTokens: room, capped: false };
  return requested > room ? { maxTokens: room, capped: true } : { maxTokens: requested, capped: false };
}

// ---------------------------------------------------------------------------------------------
// Responses

/** One generated token's log-probability under the raw logits, and the most likely tokens at its place. */
export interface LogprobEntry {
  /** The token's id. */
  token: number;
  /** Its text (bytes that are not whole UTF-8 become U+FFFD). */
  text: string;
  /** Its bytes (a token may hold part of a UTF-8 character). */
  bytes: number[];
  /** Its log-probability. */
  logprob: number;
  /** The most likely tokens at its place, best first. */
  top: Array<{ token: number; text: string; bytes: number[]; logprob: number }>;
}

/** llama-server's `timings` object. */
export interface Timings {
  /** Prompt tokens taken from the cache. */
  cache_n: number;
  /** Prompt tokens evaluated. */
  prompt_n: number;
  /** Milliseconds of prompt evaluation. */
  prompt_ms: number;
  /** Milliseconds per prompt token. */
  prompt_per_token_ms: number;
  /** Prompt tokens per second. */
  prompt_per_second: number;
  /** Tokens generated. */
  predicted_n: number;
  /** Milliseconds of generation. */
  predicted_ms: number;
  /** Milliseconds per generated token. */
  predicted_per_token_ms: number;
  /** Generated tokens per second. */
  predicted_per_second: number;
}

/** A timings object from counts and times (per-token and per-second figures derived; 0 where undefined). */
export function timingsOf(
  cacheN: number,
  promptN: number,
  promptMs: number,
  predictedN: number,
  predictedMs: number,
): Timings {
  return {
    cache_n: cacheN,
    prompt_n: promptN,
    prompt_ms: promptMs,
    prompt_per_token_ms: promptN > 0 ? promptMs / promptN : 0,
    prompt_per_second: promptMs > 0 ? promptN / (promptMs / 1000) : 0,
    predicted_n: predictedN,
    predicted_ms: predictedMs,
    predicted_per_token_ms: predictedN > 0 ? predictedMs / predictedN : 0,
    predicted_per_second: predictedMs > 0 ? predictedN / (predictedMs / 1000) : 0,
  };
}

/** Stages that evaluate a prompt (its text, images and audio) rather than generate. */
const PROMPT_STAGES = new Set([
  "prompt",
  "encode",
  "image preprocess",
  "image encode",
  "image decode",
  "audio preprocess",
  "audio encode",
  "audio decode",
]);

/**
 * The `timings` of a call that did not go through the batcher (an image chat, embeddings,
 * reranking), from its timeline: the prompt's stages and the generation stage.
 */
export function timelineTimings(timeline: Timeline, promptN: number, predictedN: number): Timings {
  let promptMs = 0;
  let predictedMs = 0;
  for (const s of timeline.stages) {
    if (PROMPT_STAGES.has(s.name)) promptMs += s.wallMs;
    else if (s.name === "generation") predictedMs += s.wallMs;
  }
  return timingsOf(0, promptN, promptMs, predictedN, predictedMs);
}

/** OpenAI's `finish_reason` of a stop reason: "tool_calls", "length" (maxTokens, a full context) or "stop". */
export function finishReason(stop: StopReason, toolCalls = false): "stop" | "length" | "tool_calls" {
  if (toolCalls || stop === "toolCalls") return "tool_calls";
  return stop === "maxTokens" || stop === "contextFull" ? "length" : "stop";
}

/** A chat choice's `logprobs`: `{ content: [{ token, logprob, bytes, top_logprobs }], refusal: null }`. */
export function chatLogprobs(entries: LogprobEntry[]): {
  content: Array<
    {
      token: string;
      logprob: number;
      bytes: number[];
      top_logprobs: Array<{ token: string; logprob: number; bytes: number[] }>;
    }
  >;
  refusal: null;
} {
  return {
    content: entries.map((e) => ({
      token: e.text,
      logprob: e.logprob,
      bytes: e.bytes,
      top_logprobs: e.top.map((t) => ({ token: t.text, logprob: t.logprob, bytes: t.bytes })),
    })),
    refusal: null,
  };
}

/** A legacy completion's `logprobs`: tokens, token_logprobs, top_logprobs (token → logprob) and text_offset. */
export function completionLogprobs(entries: LogprobEntry[], offset = 0): {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Array<Record<string, number>>;
  text_offset: number[];
} {
  const textOffset: number[] = [];
  let at = offset;
  for (const e of entries) {
    textOffset.push(at);
    at += e.text.length;
  }
  return {
    tokens: entries.map((e) => e.text),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries(e.top.map((t) => [t.text, t.logprob]))),
    text_offset: textOffset,
  };
}

/** Tool calls in OpenAI's shape: arguments as a JSON string. */
export function openaiToolCalls(calls: ToolCall[]): Array<{
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}> {
  return calls.map((c) => ({
    id: c.id,
    type: "function",
    function: { name: c.name, arguments: JSON.stringify(c.arguments) },
  }));
}

/** `usage` of a generation. */
export function usageOf(promptTokens: number, completionTokens: number, cachedTokens = 0): {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
} {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: cachedTokens },
  };
}

/** A reply message of a chat completion. */
export interface ReplyMessage {
  /** The answer ("" or null with tool calls). */
  content: string | null;
  /** Thinking text (llama-server's `reasoning_content`), when any. */
  reasoning?: string;
  /** Tool calls, when any. */
  toolCalls?: ToolCall[];
}

/** The `message` of a chat choice. */
export function chatMessage(reply: ReplyMessage): Record<string, unknown> {
  const calls = reply.toolCalls?.length ? openaiToolCalls(reply.toolCalls) : undefined;
  const out: Record<string, unknown> = {
    role: "assistant",
    content: calls && !reply.content ? null : reply.content ?? "",
    refusal: null,
  };
  if (reply.reasoning) out.reasoning_content = reply.reasoning;
  if (calls) out.tool_calls = calls;
  return out;
}

/** A new response id: `chatcmpl-…`, `cmpl-…`. */
export function responseId(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().replaceAll("-", "")}`;
}

/** Seconds since the epoch, as `created` holds them. */
export function createdNow(): number {
  return Math.floor(Date.now() / 1000);
}

/** A vector as base64 of its little-endian float32 bytes, as the openai client decodes it. */
export function float32Base64(vector: ArrayLike<number>): string {
  const bytes = new Uint8Array(vector.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < vector.length; i++) view.setFloat32(i * 4, vector[i], true);
  return bytes.toBase64();
}

/** The body of a `/v1/embeddings` response. */
export function embeddingBody(
  vectors: ArrayLike<number>[],
  base64: boolean,
  model: string,
  tokens: number,
): Record<string, unknown> {
  return {
    object: "list",
    data: vectors.map((v, index) => ({
      object: "embedding",
      index,
      embedding: base64 ? float32Base64(v) : Array.from(v),
    })),
    model,
    usage: { prompt_tokens: tokens, total_tokens: tokens },
  };
}

/** The body of a `/v1/rerank` response (llama-server's): results by score, best first, cut to `topN`. */
export function rerankBody(
  scores: ArrayLike<number>,
  request: RerankRequest,
  model: string,
  tokens: number,
): Record<string, unknown> {
  const results = Array.from(scores, (score, index) => {
    const r: Record<string, unknown> = { index, relevance_score: score };
    if (request.returnDocuments) r.document = { text: request.documents[index] };
    return r;
  }).sort((a, b) => (b.relevance_score as number) - (a.relevance_score as number));
  return {
    model,
    object: "list",
    usage: { prompt_tokens: tokens, total_tokens: tokens },
    results: request.topN === undefined ? results : results.slice(0, request.topN),
  };
}

/** A model served, as `/v1/models` lists it. */
export interface ServedModel {
  /** Its id (what requests name in `model`). */
  id: string;
  /** "generation", "embedding" or "rerank". */
  kind: string;
  /** The file. */
  path: string;
  /** When it was loaded (seconds since the epoch). */
  created: number;
}

/** The body of `/v1/models`. */
export function modelsBody(models: ServedModel[]): Record<string, unknown> {
  return {
    object: "list",
    data: models.map((m) => ({
      id: m.id,
      object: "model",
      created: m.created,
      owned_by: "loupe",
      loupe: { kind: m.kind, path: m.path },
    })),
  };
}

/** A server-sent event holding `data` as JSON (or `[DONE]`). */
export function sseEvent(data: unknown): string {
  return `data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
}
