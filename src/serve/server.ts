/**
 * An OpenAI-compatible HTTP server on `Deno.serve`, in-process: a notebook cell or a script starts
 * it and goes on (`serve()` returns once it listens). Text generation goes through the batcher
 * (src/serve/batcher.ts: several requests decoded together in one batch per step); requests with
 * images or audio run one at a time in their own lane through the model's image chat (they are
 * not batched); embeddings and reranking go to the embedder. Every response carries its timeline
 * (`loupe`) and llama-server's `timings`.
 *
 * Safe by default: it binds 127.0.0.1; with `apiKey` every endpoint but `GET /health` needs
 * `Authorization: Bearer <key>` (compared in constant time); bodies, messages, images, the queue
 * and the time of a request are bounded, and every refusal is an OpenAI error object with its
 * status. A request never makes the server read a file or fetch a URL, and an error in one request
 * never takes the server down.
 *
 * @example
 * ```ts
 * await using server = await serve({ model: await fixtureModel(), port: 0 });
 * const r = await fetch(`${server.url}/v1/chat/completions`, {
 *   method: "POST",
 *   body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }], max_tokens: 16 }),
 * });
 * console.log((await r.json()).choices[0].message.content);
 * ```
 *
 * @module
 */
import { basename } from "node:path";
import {
  type ChatOptions,
  generationConstraint,
  parseReply,
  parseRequiredCall,
  prepareChat,
  type PreparedChat,
  usesOwnCallGrammar,
} from "../chat/chat.ts";
import { Embedder, loadEmbedder } from "../embed/embed.ts";
import { internalsOf, type ModelInternals } from "../generate/internals.ts";
import { generateOptions, type SamplingParams, samplingParams } from "../generate/options.ts";
import type { StopReason } from "../generate/result.ts";
import { isRemoteName } from "../hub/resolve.ts";
import { loadModel, Model } from "../model/model.ts";
import type { Timeline } from "../timeline/timeline.ts";
import { checkOptions, type FieldRule, shown } from "../util/check.ts";
import { LoupeError } from "../util/errors.ts";
import { DISPLAY, displayOf, LIVE, type MimeBundle, VIEW_KIND } from "../util/presenter.ts";
import { Projector, projectorOf, type VisionResult } from "../vision/vision.ts";
import { Batcher, type BatchResult } from "./batcher.ts";
import type { ServedRequest, ServerSnapshot } from "../notebook/server_view.ts";
import { Counters, prometheusText, type ServerStats } from "./metrics.ts";
import {
  ApiError,
  capMaxTokens,
  chatLogprobs,
  chatMessage,
  type ChatRequest,
  completionLogprobs,
  type CompletionRequest,
  createdNow,
  embeddingBody,
  errorOf,
  exposureWarning,
  finishReason,
  type LogprobEntry,
  modelsBody,
  openaiToolCalls,
  parseChatRequest,
  parseCompletionRequest,
  parseEmbeddingRequest,
  parseJsonBody,
  parseRerankRequest,
  type ReplyMessage,
  rerankBody,
  responseId,
  type ServedModel,
  sseEvent,
  timelineTimings,
  type Timings,
  usageOf,
} from "./openai.ts";

/** Options of {@linkcode serve}. */
export interface ServeOptions {
  /**
   * The language model: a path or a name (`hf:owner/repo[:quant]`, loaded with `contextSize`, and
   * closed with the server), or a loaded {@linkcode Model} (the server does not close it).
   */
  model: string | Model;
  /**
   * A multimodal projector for image (and audio) requests: a path or name (loaded onto the model,
   * closed with the server) or the model's loaded {@linkcode Projector}. Without one, a model
   * that already has a projector loaded serves images with it.
   */
  projector?: string | Projector;
  /**
   * An embedding or reranking model for `/v1/embeddings` and `/v1/rerank`: a path or name (closed
   * with the server), or a loaded {@linkcode Embedder} (not closed).
   */
  embedder?: string | Embedder;
  /** The port (default 8080; 0 takes any free port: read `server.url`). */
  port?: number;
  /** The address to bind (default "127.0.0.1"; anything but loopback without `apiKey` prints a warning). */
  host?: string;
  /** Requests generated together (the batcher's slots; default 4). */
  parallel?: number;
  /** When set, every endpoint but `GET /health` needs `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Largest request body in bytes (default 16 MiB; a larger one is a 413, refused while it is read). */
  maxBodyBytes?: number;
  /** Most messages in a chat request (default 256). */
  maxMessages?: number;
  /** Most images and audio clips in a chat request (default 8). */
  maxImages?: number;
  /**
   * Most requests waiting for a slot (the batcher's default when not given), and for the image
   * and embedding lanes (default 64 each); more is a 503.
   */
  queueLimit?: number;
  /**
   * Longest a request may take, in milliseconds (default 600,000): then its generation stops and it
   * is a 504 (an error event in a stream that has begun).
   */
  requestTimeoutMs?: number;
  /**
   * Tokens one request may hold, prompt and reply together (each slot's context; also the model's
   * own context, where image requests run, when the server loads the model).
   */
  contextSize?: number;
  /** CPU threads of the models the server loads itself (default: every CPU the process may use). */
  threads?: number;
}

/** The default port. */
export const DEFAULT_PORT = 8080;
/** The default body limit: 16 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 16 * 2 ** 20;
/** The default limit on messages per request. */
export const DEFAULT_MAX_MESSAGES = 256;
/** The default limit on images per request. */
export const DEFAULT_MAX_IMAGES = 8;
/** The default request timeout: 600 s. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 600_000;
/** The default queue of the image and embedding lanes. */
export const DEFAULT_LANE_QUEUE = 64;
/** The default number of slots. */
export const DEFAULT_PARALLEL = 4;

const SERVE_RULES: Record<string, FieldRule> = {
  port: (v) => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535 ? null : "a port from 0 to 65535",
  host: "nonEmptyString",
  parallel: "positiveInteger",
  apiKey: "nonEmptyString",
  maxBodyBytes: "positiveInteger",
  maxMessages: "positiveInteger",
  maxImages: "nonNegativeInteger",
  queueLimit: "nonNegativeInteger",
  requestTimeoutMs: "positiveInteger",
  contextSize: "positiveInteger",
  threads: "positiveInteger",
};

/**
 * Starts an OpenAI-compatible server and returns once it listens: `POST /v1/chat/completions`,
 * `/v1/completions`, `/v1/embeddings`, `/v1/rerank`, `GET /v1/models`, `/health` and `/metrics`.
 * Models given by path or name are loaded first (and closed with the server). A bad option is an
 * INVALID_ARGUMENT LoupeError; a port in use too.
 *
 * @example
 * ```ts
 * await using server = await serve({ model: "model.gguf", embedder: "bge-m3.gguf", parallel: 4 });
 * console.log(server.url); // http://127.0.0.1:8080 — point any OpenAI client at `${server.url}/v1`
 * ```
 */
export async function serve(options: ServeOptions): Promise<Server> {
  const what = "Cannot serve";
  const o = checkOptions(options, SERVE_RULES, what);
  if (options === undefined) {
    throw new LoupeError("INVALID_ARGUMENT", `${what}: the options must be an object with a model`);
  }
  if (!(typeof o.model === "string" && o.model !== "") && !(o.model instanceof Model)) {
    throw new LoupeError(
      "INVALID_ARGUMENT",
      `${what}: model must be a path, a name or a loaded Model, not ${shown(o.model)}`,
    );
  }
  if (
    o.projector !== undefined && !(typeof o.projector === "string" && o.projector !== "") &&
    !(o.projector instanceof Projector)
  ) {
    throw new LoupeError(
      "INVALID_ARGUMENT",
      `${what}: projector must be a path, a name or a Projector, not ${shown(o.projector)}`,
    );
  }
  if (
    o.embedder !== undefined && !(typeof o.embedder === "string" && o.embedder !== "") &&
    !(o.embedder instanceof Embedder)
  ) {
    throw new LoupeError(
      "INVALID_ARGUMENT",
      `${what}: embedder must be a path, a name or an Embedder, not ${shown(o.embedder)}`,
    );
  }
  const host = o.host ?? "127.0.0.1";
  const port = o.port ?? DEFAULT_PORT;
  const owned: Array<{ closeAsync(): Promise<void> }> = [];
  let batcher: Batcher | null = null;
  try {
    const model = typeof o.model === "string"
      ? await loadModel(o.model, { contextSize: o.contextSize, threads: o.threads })
      : o.model;
    if (typeof o.model === "string") owned.push(model);
    internalsOf(model); // a closed model is a CLOSED error here
    let projector: Projector | null = null;
    if (typeof o.projector === "string") {
      projector = await model.loadProjector(o.projector, { threads: o.threads });
      if (typeof o.model !== "string") owned.push(projector); // a model the server loaded closes its projector
    } else if (o.projector) {
      let current: Projector | null = null;
      try {
        current = projectorOf(model);
      } catch {
        current = null;
      }
      if (current !== o.projector) {
        throw new LoupeError(
          "INVALID_ARGUMENT",
          `${what}: the projector is not the model's current one (load it with model.loadProjector)`,
        );
      }
      projector = o.projector;
    } else {
      try {
        projector = projectorOf(model); // one loaded before serve(): image requests use it
      } catch {
        projector = null;
      }
    }
    let embedder: Embedder | null = null;
    if (typeof o.embedder === "string") {
      embedder = await loadEmbedder(o.embedder, { threads: o.threads });
      owned.push(embedder);
    } else if (o.embedder) embedder = o.embedder;
    if (embedder?.closed) throw new LoupeError("CLOSED", `${what}: the embedder is closed`);
    batcher = await Batcher.open(model, {
      parallel: o.parallel ?? DEFAULT_PARALLEL,
      contextSize: o.contextSize,
      queueLimit: o.queueLimit,
    });
    const server = createServer({
      options: o,
      host,
      port,
      model,
      modelName: typeof o.model === "string" ? o.model : null,
      projector,
      embedder,
      embedderName: typeof o.embedder === "string" ? o.embedder : null,
      batcher,
      owned,
    });
    await server.listening;
    const warning = exposureWarning(host, o.apiKey, server.url);
    if (warning) console.warn(warning);
    return server;
  } catch (e) {
    await batcher?.close().catch(() => {});
    for (const r of owned.reverse()) await r.closeAsync().catch(() => {});
    throw e;
  }
}

/** What the server constructor takes (module-private: use {@linkcode serve}). */
interface ServerInit {
  options: ServeOptions;
  host: string;
  port: number;
  model: Model;
  modelName: string | null;
  projector: Projector | null;
  embedder: Embedder | null;
  embedderName: string | null;
  batcher: Batcher;
  owned: Array<{ closeAsync(): Promise<void> }>;
}

let createServer: (init: ServerInit) => Server;

/** Why a request was stopped: its timeout, the server closing, or its client (gone, or a cancelled stream). */
type AbortReason = "timeout" | "closing" | "client";

/** One request's signals: its abort (client gone, timeout, server closing) and why, and what it did. */
interface RequestContext {
  /** Aborts the request's work. */
  signal: AbortSignal;
  /** Aborts it from the server's side (a stream the client cancelled). */
  cancel(): void;
  /** Why it was aborted: "timeout", "closing" or "client" (null while it runs). */
  reason(): AbortReason | null;
  /** Marks the request as answered (a stream calls it when it ends). */
  finish(): void;
  /** What the server's view lists of it (filled by the handler that answered it). */
  record: Partial<ServedRequest>;
}

/** A run of a generation, whichever lane it took. */
interface Outcome {
  text: string;
  completionTokens: number;
  stopReason: StopReason;
  logprobs: LogprobEntry[];
  promptTokens: number;
  cachedTokens: number;
  timings: Timings;
  loupe: Record<string, unknown>;
  /** Devices that ran its heavy ops. */
  devices: string[];
  /** Its batches, and those shared with other requests (batched requests only). */
  steps?: number;
  sharedSteps?: number;
}

/** A streamed piece of a generation. */
interface Piece {
  text: string;
  logprobs: LogprobEntry[];
}

/** Starts a generation: pieces go to `onPiece` (when streaming); resolves with the outcome. */
type Source = (onPiece: ((piece: Piece) => void) | undefined) => Promise<Outcome>;

/** How a generation's answer is shaped: a chat completion or a legacy completion. */
interface Shape {
  /** The response id. */
  id: string;
  /** The chunks that open a stream. */
  opening(): unknown[];
  /** The chunk of a streamed piece, or null when nothing is to be sent yet. */
  piece(piece: Piece): unknown | null;
  /** The chunks that close a stream (the last carries `timings` and `loupe`). */
  closing(outcome: Outcome, includeUsage: boolean): unknown[];
  /** The whole response of a request that does not stream. */
  body(outcome: Outcome): Record<string, unknown>;
}

const SSE_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache",
  "x-accel-buffering": "no",
};

/** A request waiting in a lane beyond the limit. */
function busy(what: string, limit: number): LoupeError {
  return new ApiError(503, `${what}: the server is busy (${limit} requests are waiting); try again later`, {
    code: "busy",
    loupeCode: "BUSY",
  });
}

/** Requests run one at a time, at most `limit` waiting (the image and embedding lanes). */
class Lane {
  #tail: Promise<unknown> = Promise.resolve();
  #count = 0;
  readonly limit: number;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Requests running or waiting. */
  get size(): number {
    return this.#count;
  }

  /** Runs `fn` after the requests before it; rejects at once with a 503 when too many wait. */
  run<T>(fn: () => Promise<T>, what: string): Promise<T> {
    if (this.#count > this.limit) return Promise.reject(busy(what, this.limit));
    this.#count++;
    const run = this.#tail.then(fn);
    this.#tail = run.catch(() => {});
    return run.finally(() => this.#count--);
  }
}

/** The device that ran most of a stage's heavy ops (null for a host stage). */
function mainDevice(devices: Timeline["stages"][number]["devices"]): string | null {
  let best: string | null = null;
  let most = -1;
  for (const [name, p] of Object.entries(devices)) {
    const weight = p.heavy * 1e6 + p.nodes;
    if (p.nodes > 0 && weight > most) {
      best = name;
      most = weight;
    }
  }
  return best;
}

/**
 * A running server. `url` is where it listens; `close()` (or `await using`) stops it: running
 * requests are aborted, and the models it loaded itself are closed.
 */
export class Server implements AsyncDisposable {
  /** Where it listens, e.g. "http://127.0.0.1:8080". */
  readonly url: string;
  /** The bound address. */
  readonly host: string;
  /** The bound port. */
  readonly port: number;
  /** The language model. */
  readonly model: Model;
  /** The embedder, if any. */
  readonly embedder: Embedder | null;
  /** The projector image requests use, if any (the server's own, or the model's when serve() began). */
  readonly projector: Projector | null;
  /** Requests generated together. */
  readonly parallel: number;
  /** Tokens one request may hold (prompt and reply). */
  readonly slotContext: number;
  /** Settles once it listens (serve() waits for it). */
  readonly listening: Promise<void>;
  #http: Deno.HttpServer<Deno.NetAddr>;
  #batcher: Batcher;
  #owned: Array<{ closeAsync(): Promise<void> }>;
  #counters = new Counters();
  /** The abort of every request being answered (close() stops them). */
  #active = new Set<(reason: AbortReason) => void>();
  #closed: Promise<void> | null = null;
  #keyDigest: Promise<Uint8Array> | null;
  #options: ServeOptions;
  #models: ServedModel[];
  #modelIds: Set<string>;
  #embedderIds: Set<string>;
  #imageLane: Lane;
  #embedLane: Lane;
  #startedMs = performance.now();
  /** The last work requests answered (generation, embeddings, rerank), newest last. */
  #recent: ServedRequest[] = [];
  #answered = 0;
  #errors = 0;

  static {
    createServer = (init) => new Server(init);
  }

  private constructor(init: ServerInit) {
    const o = init.options;
    this.#options = o;
    this.model = init.model;
    this.embedder = init.embedder;
    this.projector = init.projector;
    this.#batcher = init.batcher;
    this.#owned = init.owned;
    this.parallel = init.batcher.parallel;
    this.slotContext = init.batcher.slotContext;
    this.#keyDigest = o.apiKey ? digest(o.apiKey) : null;
    this.#imageLane = new Lane(o.queueLimit ?? DEFAULT_LANE_QUEUE);
    this.#embedLane = new Lane(o.queueLimit ?? DEFAULT_LANE_QUEUE);
    const created = createdNow();
    const modelId = idOf(init.modelName, init.model.path);
    this.#modelIds = aliases(modelId, init.modelName, init.model.path);
    this.#models = [{ id: modelId, kind: "generation", path: init.model.path, created }];
    this.#embedderIds = new Set();
    if (init.embedder) {
      const id = idOf(init.embedderName, init.embedder.path);
      this.#embedderIds = aliases(id, init.embedderName, init.embedder.path);
      const kind = init.embedder.info.pooling === "rank" ? "rerank" : "embedding";
      this.#models.push({ id, kind, path: init.embedder.path, created });
    }
    let ready: () => void;
    this.listening = new Promise((r) => ready = r);
    try {
      this.#http = Deno.serve({
        hostname: init.host,
        port: init.port,
        onListen: () => ready(),
        onError: (e) => json(errorOf(e).body, 500),
      }, (req) => this.#handle(req));
    } catch (e) {
      const detail = e instanceof Deno.errors.AddrInUse ? "the address is in use" : (e as Error).message;
      throw new LoupeError("INVALID_ARGUMENT", `Cannot serve on ${init.host}:${init.port}: ${detail}`, { cause: e });
    }
    this.host = this.#http.addr.hostname;
    this.port = this.#http.addr.port;
    this.url = `http://${this.host.includes(":") ? `[${this.host}]` : this.host}:${this.port}`;
  }

  /** The numbers `/metrics` shows: requests by endpoint and status, tokens, queues, slots, tokens per device. */
  stats(): ServerStats {
    let batch = null;
    try {
      batch = this.#batcher.stats();
    } catch {
      batch = null; // closed
    }
    return this.#counters.snapshot(batch, this.#imageLane.size, this.#embedLane.size);
  }

  /**
   * What the server reports of itself now (its notebook view reads it): slots, queue, requests,
   * tokens per device, recent decode steps and the last requests answered.
   */
  snapshot(): ServerSnapshot {
    const s = this.stats();
    let steps: ServerSnapshot["steps"] = [];
    try {
      steps = this.#batcher.steps();
    } catch {
      steps = []; // closed
    }
    return {
      url: this.url,
      model: `${this.#models[0].id} (${this.model.info.desc})`,
      closed: this.#closed !== null,
      uptimeMs: performance.now() - this.#startedMs,
      parallel: s.slotsTotal,
      slotsBusy: s.slotsBusy,
      queued: s.queued,
      requests: this.#answered,
      errors: this.#errors,
      promptTokens: s.promptTokens,
      generatedTokens: s.generatedTokens,
      tokensByDevice: s.tokensByDevice,
      steps,
      recent: [...this.#recent],
    };
  }

  /** Its view's name: the notebook layer shows slots, queue, requests and throughput (src/notebook/server_view.ts). */
  get [VIEW_KIND](): string {
    return "server";
  }

  /** As the last expression of a notebook cell the view is redrawn every second while the server runs. */
  get [LIVE](): { intervalMs: number; active(): boolean } {
    return { intervalMs: 1000, active: () => this.#closed === null };
  }

  /** Rich display in a notebook: the live view. */
  [DISPLAY](): Promise<MimeBundle> {
    return displayOf(this);
  }

  /**
   * Stops the server: running requests are aborted, then the batcher and the models it loaded are
   * closed (a model, projector or embedder passed in stays open). Idempotent.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      for (const abort of this.#active) abort("closing");
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#http.shutdown().catch(() => {}),
        new Promise<void>((r) => timer = setTimeout(r, 5000)),
      ]);
      clearTimeout(timer);
      await this.#batcher.close().catch(() => {});
      for (const r of this.#owned.reverse()) await r.closeAsync().catch(() => {});
    })();
    return this.#closed;
  }

  /** `await using server = …` support: {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // -------------------------------------------------------------------------------------------
  // Requests

  async #handle(req: Request): Promise<Response> {
    let path: string;
    try {
      path = new URL(req.url).pathname;
    } catch {
      path = "";
    }
    const route = ROUTES.get(path);
    const endpoint = route ? route.endpoint : "other";
    const counters = this.#counters;
    const t0 = performance.now();
    counters.inFlight++;
    let finished = false;
    let status = 500;
    let why: AbortReason | null = null;
    const stop = new AbortController();
    const abort = (reason: AbortReason) => {
      if (finished || why) return;
      why = reason;
      stop.abort();
    };
    const onClientGone = () => abort("client");
    req.signal.addEventListener("abort", onClientGone, { once: true });
    const timer = setTimeout(() => abort("timeout"), this.#options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS);
    this.#active.add(abort);
    const ctx: RequestContext = {
      signal: stop.signal,
      cancel: () => abort("client"),
      reason: () => why,
      finish: () => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        req.signal.removeEventListener("abort", onClientGone);
        this.#active.delete(abort);
        counters.inFlight--;
        counters.request(endpoint, status);
        this.#answered++;
        if (status >= 400) this.#errors++;
        if (route && WORK.has(route.endpoint)) this.#remember(ctx.record, route.endpoint, status, t0);
      },
      record: {},
    };
    if (this.#closed) abort("closing");
    let response: Response;
    try {
      if (why) throw abortError(why);
      response = await this.#route(req, route, ctx);
    } catch (e) {
      response = this.#errorResponse(e, ctx);
    }
    status = response.status;
    if (!response.headers.get("content-type")?.startsWith("text/event-stream")) ctx.finish();
    return response;
  }

  /** Adds an answered request to the recent ones (at most 100 kept). */
  #remember(r: Partial<ServedRequest>, endpoint: string, status: number, t0: number): void {
    this.#recent.push({
      id: r.id ?? "",
      endpoint,
      status,
      promptTokens: r.promptTokens ?? 0,
      completionTokens: r.completionTokens ?? 0,
      ms: performance.now() - t0,
      devices: r.devices ?? [],
      ...(r.steps !== undefined ? { steps: r.steps, sharedSteps: r.sharedSteps ?? 0 } : {}),
    });
    if (this.#recent.length > 100) this.#recent.splice(0, this.#recent.length - 100);
  }

  /** The error response of `e` (a timeout or a closing server said as such). */
  #errorResponse(e: unknown, ctx: RequestContext): Response {
    const reason = ctx.reason();
    const err = reason && !(e instanceof ApiError && e.status !== 503) ? abortError(reason) : e;
    const { status, body } = errorOf(err);
    const headers: Record<string, string> = {};
    if (status === 401) headers["www-authenticate"] = "Bearer";
    return json(body, status, headers);
  }

  async #route(req: Request, route: Route | undefined, ctx: RequestContext): Promise<Response> {
    const open = route?.endpoint === "/health" && req.method === "GET";
    if (!open && this.#keyDigest) await this.#authorize(req);
    if (!route) throw new ApiError(404, `Not found: ${new URL(req.url).pathname}`, { code: "not_found" });
    const method = route.methods.get(req.method);
    if (!method) {
      const allowed = [...route.methods.keys()].join(", ");
      throw new ApiError(405, `Method ${req.method} is not allowed here; use ${allowed}`, {
        code: "method_not_allowed",
      });
    }
    switch (method) {
      case "health":
        return json({ status: "ok" });
      case "models":
        return json(modelsBody(this.#models));
      case "metrics":
        return new Response(prometheusText(this.stats()), {
          headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
        });
    }
    const body = parseJsonBody(await readBody(req, this.#options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES, ctx.signal));
    switch (method) {
      case "chat":
        return await this.#chat(parseChatRequest(body, this.#limits()), ctx);
      case "completion":
        return await this.#completion(parseCompletionRequest(body), ctx);
      case "embeddings":
        return await this.#embeddings(body, ctx);
      case "rerank":
        return await this.#rerank(body, ctx);
    }
  }

  #limits() {
    return {
      maxMessages: this.#options.maxMessages ?? DEFAULT_MAX_MESSAGES,
      maxImages: this.#options.maxImages ?? DEFAULT_MAX_IMAGES,
    };
  }

  /** Checks the bearer key in constant time (SHA-256 digests compared without an early exit). */
  async #authorize(req: Request): Promise<void> {
    const header = req.headers.get("authorization") ?? "";
    const m = header.match(/^Bearer\s+(.*)$/i);
    if (!m) {
      throw new ApiError(401, "Missing API key: send it as Authorization: Bearer <key>", { code: "invalid_api_key" });
    }
    const [given, key] = await Promise.all([digest(m[1].trim()), this.#keyDigest!]);
    let diff = 0;
    for (let i = 0; i < key.length; i++) diff |= given[i] ^ key[i];
    if (diff !== 0) throw new ApiError(401, "Incorrect API key", { code: "invalid_api_key" });
  }

  /** Checks that a request's `model` names the generation model (the default when left out). */
  #generationModel(name: string | undefined, what: string): string {
    const id = this.#models[0].id;
    if (name === undefined || this.#modelIds.has(name)) return id;
    if (this.#embedderIds.has(name)) {
      throw new ApiError(400, `${what}: ${shown(name)} is an embedding model; this server generates with "${id}"`, {
        param: "model",
        code: "model_not_found",
      });
    }
    throw new ApiError(400, `${what}: unknown model ${shown(name)}; this server generates with "${id}"`, {
      param: "model",
      code: "model_not_found",
    });
  }

  /** The embedder a request's `model` names (the default when left out). */
  #embedderFor(name: string | undefined, what: string): { embedder: Embedder; id: string } {
    if (!this.embedder) {
      throw new ApiError(400, `${what}: this server has no embedding model (start it with embedder)`, {
        param: "model",
        code: "model_not_found",
      });
    }
    const id = this.#models[1].id;
    if (name !== undefined && !this.#embedderIds.has(name)) {
      throw new ApiError(400, `${what}: unknown model ${shown(name)}; this server embeds with "${id}"`, {
        param: "model",
        code: "model_not_found",
      });
    }
    return { embedder: this.embedder, id };
  }

  // -------------------------------------------------------------------------------------------
  // Generation

  async #chat(r: ChatRequest, ctx: RequestContext): Promise<Response> {
    const what = "Cannot chat";
    const modelId = this.#generationModel(r.model, what);
    const id = responseId("chatcmpl");
    const created = createdNow();
    const logprobs = r.logprobs !== undefined;
    if (r.media) {
      return await this.#respond(ctx, chatShape(id, created, modelId, null, logprobs), this.#imageSource(r, ctx), r);
    }
    const internals = internalsOf(this.model);
    const options = generateOptions(r.options, what);
    const prepared = prepareChat(internals.chats, r.messages, options);
    const params = samplingParams(options, prepared.constraint);
    params.stop = [...params.stop, ...prepared.rendered.additionalStops];
    const tokens = this.model.tokenize(prepared.rendered.prompt, { addSpecial: true, parseSpecial: true });
    const reader = replyReader(internals, prepared, options);
    const source = this.#batchSource(tokens, params, r, ctx);
    return await this.#respond(ctx, chatShape(id, created, modelId, reader, logprobs), source, r);
  }

  async #completion(r: CompletionRequest, ctx: RequestContext): Promise<Response> {
    const what = "Cannot complete";
    const modelId = this.#generationModel(r.model, what);
    const options = generateOptions(r.options, what);
    const params = samplingParams(options, generationConstraint(internalsOf(this.model).chats, options));
    const tokens = this.model.tokenize(r.prompt, { addSpecial: true, parseSpecial: true });
    const source = this.#batchSource(tokens, params, r, ctx);
    return await this.#respond(
      ctx,
      completionShape(responseId("cmpl"), createdNow(), modelId, r.logprobs !== undefined),
      source,
      r,
    );
  }

  /** A generation through the batcher: maxTokens capped by what is left of the slot. */
  #batchSource(
    tokens: number[],
    sampling: SamplingParams,
    r: ChatRequest | CompletionRequest,
    ctx: RequestContext,
  ): Source {
    if (tokens.length === 0) throw new ApiError(400, "Cannot generate: the prompt is empty", { param: "prompt" });
    const requested = r.options.maxTokens;
    const cap = capMaxTokens(requested, tokens.length, this.#batcher.slotContext);
    // a repeat window past the slot sees nothing more, and the engine allocates all of it (2^31
    // tokens: 8 GiB, on the thread that answers every request)
    const repeatLastN = Math.min(sampling.repeatLastN, this.#batcher.slotContext);
    const params: SamplingParams = { ...sampling, maxTokens: cap.maxTokens, repeatLastN };
    return async (onPiece) => {
      const result: BatchResult = await this.#batcher.submit({
        tokens,
        params,
        logprobs: r.logprobs,
        signal: ctx.signal,
        onPiece: onPiece && ((p) => onPiece({ text: p.text, logprobs: p.logprobs })),
      });
      return {
        text: result.text,
        completionTokens: result.tokens.length,
        stopReason: result.stopReason,
        logprobs: result.logprobs,
        promptTokens: result.promptTokens,
        cachedTokens: result.cachedTokens,
        timings: result.timings,
        devices: result.timeline.devicesUsed(),
        steps: result.batching.steps,
        sharedSteps: result.batching.sharedSteps,
        loupe: {
          ...result.timeline.toJSON(),
          lane: "batch",
          batching: result.batching,
          maxTokens: { requested: requested ?? null, used: cap.maxTokens, capped: cap.capped },
        },
      };
    };
  }

  /** A chat with images or audio: the model's image chat, one request at a time (not batched). */
  #imageSource(r: ChatRequest, ctx: RequestContext): Source {
    const what = "Cannot chat";
    try {
      projectorOf(this.model);
    } catch (e) {
      throw new ApiError(
        400,
        `${what} with images: no projector is loaded on this server (start it with projector, or --mmproj)`,
        { param: "messages", code: "images_not_supported", cause: e },
      );
    }
    const nCtx = this.model.info.nCtx;
    const requested = r.options.maxTokens;
    const maxTokens = Math.min(requested ?? nCtx, nCtx);
    const options = { ...r.options, maxTokens, signal: ctx.signal };
    if (options.repeatLastN !== undefined) options.repeatLastN = Math.min(options.repeatLastN, nCtx); // as #batchSource
    return (onPiece) =>
      this.#imageLane.run(async () => {
        if (ctx.signal.aborted) throw abortError(ctx.reason() ?? "client");
        let result: VisionResult;
        if (onPiece) {
          const stream = this.model.streamChat(r.media!, options);
          for await (const text of stream) onPiece({ text, logprobs: [] });
          result = await stream.result as VisionResult;
        } else {
          result = await this.model.chat(r.media!, options);
        }
        const promptTokens = result.promptTokens.length + result.imageTokens + result.audioTokens;
        this.#countStages(result.timeline, "generation");
        this.#counters.promptTokens += promptTokens;
        this.#counters.generatedTokens += result.tokens.length;
        return {
          text: result.text,
          completionTokens: result.tokens.length,
          stopReason: result.stopReason,
          logprobs: [],
          promptTokens,
          cachedTokens: 0,
          timings: timelineTimings(result.timeline, promptTokens, result.tokens.length),
          devices: result.timeline.devicesUsed(),
          loupe: {
            ...result.timeline.toJSON(),
            lane: "image",
            batching: null,
            maxTokens: {
              requested: requested ?? null,
              used: maxTokens,
              capped: requested !== undefined && requested > nCtx,
            },
            imageTokens: result.imageTokens,
            audioTokens: result.audioTokens,
            images: result.images,
          },
        };
      }, what);
  }

  /** Counts a timeline's tokens per device (each stage's to the device of most of its heavy ops). */
  #countStages(timeline: Timeline, ...extra: string[]): void {
    for (const s of timeline.stages) {
      if (s.interleavedWith || s.tokens === 0) continue;
      if (!["prompt", "encode", "image encode", "audio encode", ...extra].includes(s.name)) continue;
      const device = mainDevice(s.devices);
      if (device) this.#counters.device(device, s.tokens);
    }
  }

  /**
   * Runs a generation and answers it: one JSON body, or a stream of server-sent events. A stream's
   * headers go out with its first piece (or its end): until then a refusal (a full queue, a
   * prompt that does not fit) is still a plain error response with its status.
   */
  async #respond(
    ctx: RequestContext,
    shape: Shape,
    source: Source,
    r: ChatRequest | CompletionRequest,
  ): Promise<Response> {
    const note = (o: Outcome) => {
      ctx.record = {
        id: shape.id,
        promptTokens: o.promptTokens,
        completionTokens: o.completionTokens,
        devices: o.devices,
        steps: o.steps,
        sharedSteps: o.sharedSteps,
      };
    };
    if (!r.stream) {
      const outcome = await source(undefined);
      note(outcome);
      if (outcome.stopReason === "aborted" && ctx.reason()) throw abortError(ctx.reason()!);
      return json(shape.body(outcome));
    }
    const encoder = new TextEncoder();
    let controller: ReadableStreamDefaultController<Uint8Array> | null = null;
    let open = true;
    const early: Piece[] = [];
    let wake: () => void = () => {};
    const first = new Promise<void>((resolve) => wake = resolve);
    const send = (data: unknown) => {
      if (!open || !controller) return;
      try {
        controller.enqueue(encoder.encode(sseEvent(data)));
      } catch {
        open = false;
      }
    };
    const end = () => {
      if (open && controller) {
        open = false;
        try {
          controller.close();
        } catch {
          // already closed
        }
      }
      ctx.finish();
    };
    const onPiece = (piece: Piece) => {
      if (!controller) {
        early.push(piece);
        wake();
        return;
      }
      const chunk = shape.piece(piece);
      if (chunk) send(chunk);
    };
    let settled: { outcome?: Outcome; error?: unknown } | null = null;
    const run = source(onPiece).then((outcome) => {
      note(outcome);
      settled = { outcome };
    }, (error) => {
      settled = { error };
    });
    await Promise.race([first, run]);
    const done = settled as { outcome?: Outcome; error?: unknown } | null;
    if (early.length === 0 && done) {
      // nothing was streamed yet: a refusal or an abort is still a plain error response
      if (done.error !== undefined) throw done.error;
      if (done.outcome!.stopReason === "aborted" && ctx.reason()) throw abortError(ctx.reason()!);
    }
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        controller = c;
      },
      cancel() {
        open = false;
        ctx.cancel();
      },
    });
    for (const chunk of shape.opening()) send(chunk);
    for (const piece of early.splice(0)) {
      const chunk = shape.piece(piece);
      if (chunk) send(chunk);
    }
    run.then(() => {
      const s = settled!;
      const reason = ctx.reason();
      if (s.error !== undefined) {
        send(errorOf(reason ? abortError(reason) : s.error).body);
      } else if (s.outcome!.stopReason === "aborted" && reason) {
        if (reason !== "client") send(errorOf(abortError(reason)).body);
      } else {
        for (const chunk of shape.closing(s.outcome!, r.includeUsage)) send(chunk);
        send("[DONE]");
      }
    }).catch((e) => send(errorOf(e).body)).finally(end);
    return new Response(body, { headers: SSE_HEADERS });
  }

  // -------------------------------------------------------------------------------------------
  // Embeddings

  async #embeddings(body: Record<string, unknown>, ctx: RequestContext): Promise<Response> {
    const what = "Cannot embed";
    const r = parseEmbeddingRequest(body);
    const { embedder, id } = this.#embedderFor(r.model, what);
    const vectors = await this.#embedLane.run(() => embedder.embed(r.input, { signal: ctx.signal }), what);
    const tokens = vectors.tokenCounts.reduce((a, b) => a + b, 0);
    this.#counters.embeddingTokens += tokens;
    this.#countStages(vectors.timeline);
    ctx.record = { id: responseId("embd"), promptTokens: tokens, devices: vectors.timeline.devicesUsed() };
    return json({
      ...embeddingBody(vectors, r.base64, id, tokens),
      timings: timelineTimings(vectors.timeline, tokens, 0),
      loupe: { ...vectors.timeline.toJSON(), lane: "embed" },
    });
  }

  async #rerank(body: Record<string, unknown>, ctx: RequestContext): Promise<Response> {
    const what = "Cannot rerank";
    const r = parseRerankRequest(body);
    const { embedder, id } = this.#embedderFor(r.model, what);
    const scores = await this.#embedLane.run(() => embedder.rerank(r.query, r.documents, { signal: ctx.signal }), what);
    const tokens = scores.tokenCounts.reduce((a, b) => a + b, 0);
    this.#counters.embeddingTokens += tokens;
    this.#countStages(scores.timeline);
    ctx.record = { id: responseId("rerank"), promptTokens: tokens, devices: scores.timeline.devicesUsed() };
    return json({
      ...rerankBody(scores, r, id, tokens),
      timings: timelineTimings(scores.timeline, tokens, 0),
      loupe: { ...scores.timeline.toJSON(), lane: "embed" },
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Routes

type Handler = "health" | "models" | "metrics" | "chat" | "completion" | "embeddings" | "rerank";

interface Route {
  endpoint: string;
  methods: ReadonlyMap<string, Handler>;
}

/** The endpoints whose requests the server's view lists. */
const WORK = new Set(["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank"]);

/** The paths served (llama-server's aliases too), each with its canonical endpoint and its methods. */
const ROUTES: ReadonlyMap<string, Route> = new Map(
  ([
    ["/health", "/health", "GET", "health"],
    ["/v1/health", "/health", "GET", "health"],
    ["/v1/models", "/v1/models", "GET", "models"],
    ["/models", "/v1/models", "GET", "models"],
    ["/metrics", "/metrics", "GET", "metrics"],
    ["/v1/chat/completions", "/v1/chat/completions", "POST", "chat"],
    ["/chat/completions", "/v1/chat/completions", "POST", "chat"],
    ["/v1/completions", "/v1/completions", "POST", "completion"],
    ["/completions", "/v1/completions", "POST", "completion"],
    ["/v1/embeddings", "/v1/embeddings", "POST", "embeddings"],
    ["/embeddings", "/v1/embeddings", "POST", "embeddings"],
    ["/v1/rerank", "/v1/rerank", "POST", "rerank"],
    ["/rerank", "/v1/rerank", "POST", "rerank"],
    ["/v1/reranking", "/v1/rerank", "POST", "rerank"],
  ] as const).map(([path, endpoint, method, handler]) => [path, { endpoint, methods: new Map([[method, handler]]) }]),
);

// ---------------------------------------------------------------------------------------------
// Helpers

/** A JSON response. */
function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/** SHA-256 of a key's UTF-8 bytes. */
async function digest(key: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key)));
}

/** The error of a request cut short: 504 after its timeout, 503 when the server closes, 499 when the client left. */
function abortError(reason: AbortReason): ApiError {
  if (reason === "timeout") {
    return new ApiError(504, "The request took longer than the server's request timeout and was stopped", {
      code: "timeout",
    });
  }
  if (reason === "closing") return new ApiError(503, "The server is closing", { code: "closing", loupeCode: "CLOSED" });
  return new ApiError(499, "The client closed the request", { code: "client_closed", loupeCode: "ABORTED" });
}

/**
 * A request's body, read with its size checked as it comes (a declared or actual size over `max`
 * is a 413; nothing more is buffered); the request's signal (timeout, disconnect) stops it.
 */
async function readBody(req: Request, max: number, signal: AbortSignal): Promise<Uint8Array> {
  const tooLarge = () =>
    new ApiError(413, `Cannot read the request: the body is larger than ${max} bytes`, { code: "request_too_large" });
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > max) throw tooLarge();
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  const onAbort = () => reader.cancel().catch(() => {});
  signal.addEventListener("abort", onAbort);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > max) {
        reader.cancel().catch(() => {});
        throw tooLarge();
      }
      chunks.push(value);
    }
  } catch (e) {
    if (e instanceof ApiError) throw e;
    if (signal.aborted) throw new LoupeError("ABORTED", "Cannot read the request: it was stopped", { cause: e });
    throw new ApiError(400, "Cannot read the request: the body could not be read", { cause: e });
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  if (signal.aborted) throw new LoupeError("ABORTED", "Cannot read the request: it was stopped");
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** A model's id: the name it was given (`hf:…`, a URL), else its file's name. */
function idOf(given: string | null, path: string): string {
  return given && isRemoteName(given) ? given : basename(path);
}

/** The names a request may give for a model: its id, its path, its file name with and without ".gguf". */
function aliases(id: string, given: string | null, path: string): Set<string> {
  const file = basename(path);
  const out = new Set([id, path, file, file.replace(/\.gguf$/i, "")]);
  if (given) out.add(given);
  return out;
}

/** Reads a chat reply: the answer, thinking and tool calls apart, while it streams and at its end. */
interface ReplyReader {
  /** The content and reasoning to send for a streamed piece (null: nothing yet). */
  piece(text: string): { content?: string; reasoning_content?: string } | null;
  /** The whole reply, and what of it was not sent yet. */
  finish(text: string): { message: ReplyMessage; rest: { content?: string; reasoning_content?: string } };
}

/** How a chat's reply is read: as the model's chat reads it (src/model/model.ts #readReply). */
function replyReader(internals: ModelInternals, prepared: PreparedChat, options: ChatOptions): ReplyReader {
  const ownCall = usesOwnCallGrammar(prepared, options);
  const thinking = prepared.reasoning && prepared.rendered.thinkingStartTag.trim() !== "";
  const parsing = ownCall || prepared.tools || thinking;
  let text = "";
  let sentContent = "";
  let sentReasoning = "";
  const parse = (all: string, partial: boolean) =>
    parseReply(internals.chats, options.template, prepared, all, partial);
  const diff = (content: string, reasoning: string) => {
    const out: { content?: string; reasoning_content?: string } = {};
    if (content.startsWith(sentContent) && content.length > sentContent.length) {
      out.content = content.slice(sentContent.length);
      sentContent = content;
    }
    if (reasoning.startsWith(sentReasoning) && reasoning.length > sentReasoning.length) {
      out.reasoning_content = reasoning.slice(sentReasoning.length);
      sentReasoning = reasoning;
    }
    return out;
  };
  return {
    piece(piece) {
      text += piece;
      if (!parsing) {
        sentContent += piece;
        return { content: piece };
      }
      if (ownCall) return null; // the reply is a JSON call: nothing to show until it ends
      const p = parse(text, true);
      const out = diff(p.text, p.reasoning);
      return out.content !== undefined || out.reasoning_content !== undefined ? out : null;
    },
    finish(all) {
      let message: ReplyMessage;
      if (ownCall) {
        message = { content: "", toolCalls: parseRequiredCall(all) };
      } else if (!parsing) {
        message = { content: all };
      } else {
        const p = parse(all, false);
        message = { content: p.text };
        if (p.reasoning) message.reasoning = p.reasoning;
        if (prepared.tools && p.toolCalls.length) message.toolCalls = p.toolCalls;
      }
      return { message, rest: diff(message.content ?? "", message.reasoning ?? "") };
    },
  };
}

/** Chat completions: `chat.completion` bodies and `chat.completion.chunk` events. */
function chatShape(
  id: string,
  created: number,
  model: string,
  reader: ReplyReader | null,
  logprobs: boolean,
): Shape {
  const base = { id, object: "chat.completion.chunk", created, model, system_fingerprint: "loupe" };
  let pending: LogprobEntry[] = [];
  const chunk = (delta: Record<string, unknown>, finish: string | null, entries: LogprobEntry[] | null) => ({
    ...base,
    choices: [{ index: 0, delta, logprobs: entries && logprobs ? chatLogprobs(entries) : null, finish_reason: finish }],
  });
  const read: ReplyReader = reader ?? {
    piece: (text) => ({ content: text }),
    finish: (all) => ({ message: { content: all }, rest: {} }),
  };
  let message: ReplyMessage | null = null;
  const finishOf = (o: Outcome) => {
    message ??= read.finish(o.text).message;
    return message;
  };
  return {
    id,
    opening: () => [chunk({ role: "assistant", content: "" }, null, null)],
    piece(piece) {
      pending.push(...piece.logprobs);
      const delta = read.piece(piece.text);
      if (!delta) return null;
      const lp = pending;
      pending = [];
      return chunk(delta, null, lp);
    },
    closing(o, includeUsage) {
      const { message: m, rest } = read.finish(o.text);
      message = m;
      const calls = m.toolCalls?.length ? openaiToolCalls(m.toolCalls) : null;
      const delta: Record<string, unknown> = { ...rest };
      if (calls) delta.tool_calls = calls.map((c, index) => ({ index, ...c }));
      const extra = { timings: o.timings, loupe: o.loupe };
      const last = chunk(delta, finishReason(o.stopReason, !!calls), pending);
      if (!includeUsage) return [{ ...last, ...extra }];
      return [last, {
        ...base,
        choices: [],
        usage: usageOf(o.promptTokens, o.completionTokens, o.cachedTokens),
        ...extra,
      }];
    },
    body(o) {
      const m = finishOf(o);
      return {
        id,
        object: "chat.completion",
        created,
        model,
        system_fingerprint: "loupe",
        choices: [{
          index: 0,
          message: chatMessage(m),
          logprobs: logprobs ? chatLogprobs(o.logprobs) : null,
          finish_reason: finishReason(o.stopReason, !!m.toolCalls?.length),
        }],
        usage: usageOf(o.promptTokens, o.completionTokens, o.cachedTokens),
        timings: o.timings,
        loupe: o.loupe,
      };
    },
  };
}

/** Legacy completions: `text_completion` bodies and events. */
function completionShape(id: string, created: number, model: string, logprobs: boolean): Shape {
  const base = { id, object: "text_completion", created, model, system_fingerprint: "loupe" };
  let offset = 0;
  const choice = (text: string, finish: string | null, logprobs: unknown) => ({
    ...base,
    choices: [{ text, index: 0, logprobs, finish_reason: finish }],
  });
  return {
    id,
    opening: () => [],
    piece(piece) {
      const lp = logprobs ? completionLogprobs(piece.logprobs, offset) : null;
      offset += piece.text.length;
      return choice(piece.text, null, lp);
    },
    closing(o, includeUsage) {
      const extra = { timings: o.timings, loupe: o.loupe };
      const last = choice("", finishReason(o.stopReason), null);
      if (!includeUsage) return [{ ...last, ...extra }];
      return [last, {
        ...base,
        choices: [],
        usage: usageOf(o.promptTokens, o.completionTokens, o.cachedTokens),
        ...extra,
      }];
    },
    body(o) {
      return {
        id,
        object: "text_completion",
        created,
        model,
        system_fingerprint: "loupe",
        choices: [{
          text: o.text,
          index: 0,
          logprobs: logprobs ? completionLogprobs(o.logprobs) : null,
          finish_reason: finishReason(o.stopReason),
        }],
        usage: usageOf(o.promptTokens, o.completionTokens, o.cachedTokens),
        timings: o.timings,
        loupe: o.loupe,
      };
    },
  };
}

export type { ServerStats } from "./metrics.ts";
export type { ServedRequest, ServerSnapshot } from "../notebook/server_view.ts";
