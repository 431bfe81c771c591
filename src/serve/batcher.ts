/**
 * Continuous batching for a server: requests share one native context of `parallel` slots, and
 * the engine decodes every active slot in one batch per step (native/loupe_batch.h). This module
 * queues requests, starts them in free slots between steps, drives the steps (one native call
 * for all slots, never one per token per request), and hands each request its pieces and its
 * result with a measured timeline.
 *
 * @module
 */
import { NativeBatch } from "../../ffi/batch.ts";
import { internalsOf } from "../generate/internals.ts";
import type { SamplingParams } from "../generate/options.ts";
import type { StopReason } from "../generate/result.ts";
import { addGenerationStages } from "../generate/step.ts";
import { addNativeStage, checkPlacement, type NativeStage, Timeline } from "../timeline/timeline.ts";
import { checkOptions, type FieldRule } from "../util/check.ts";
import { LoupeError } from "../util/errors.ts";
import { wrap } from "../util/native_error.ts";
import { type LogprobEntry, type Timings, timingsOf } from "./openai.ts";

/** Options of {@linkcode Batcher.open}. */
export interface BatcherOptions {
  /** Slots: requests decoded together (default 4). */
  parallel?: number;
  /** Tokens one request may hold, prompt and reply together (default: the model's context size). */
  contextSize?: number;
  /** Requests that may wait for a slot; one more is refused with BUSY (default 64). */
  queueLimit?: number;
  /** A device every batch's heavy ops must run on (default: the model's requireDevice). */
  requireDevice?: string;
}

/** A generated token's log-probability and the most likely alternatives at its place (see openai.ts). */
export type TokenLogprob = LogprobEntry;

/** New output of one request. */
export interface BatchPiece {
  /** New text (held back where a stop string may be starting). */
  text: string;
  /** New tokens. */
  tokens: number[];
  /** Their log-probabilities, when asked for. */
  logprobs: TokenLogprob[];
}

/** One request to {@linkcode Batcher.submit}. */
export interface BatchRequest {
  /** The prompt's tokens. */
  tokens: number[] | Int32Array;
  /** Sampling and stopping, as every generating call sends the engine (see samplingParams). */
  params: SamplingParams;
  /** Each generated token's log-probability and this many top alternatives (0..20); none when absent. */
  logprobs?: number;
  /** Ends the request: its slot is freed at the next step and the result has stopReason "aborted". */
  signal?: AbortSignal;
  /** Receives the request's pieces as they come. */
  onPiece?: (piece: BatchPiece) => void;
}

/** How a request shared the batches. */
export interface BatchSharing {
  /** The slot it ran in. */
  slot: number;
  /** Batches (decode steps) it took part in. */
  steps: number;
  /** Those of them shared with other requests. */
  sharedSteps: number;
  /** The most requests in one of its batches. */
  maxSlots: number;
}

/** What a request produced. */
export interface BatchResult {
  /** Generated text (stop strings removed). */
  text: string;
  /** Generated tokens. */
  tokens: number[];
  /** Why it stopped ("error" never reaches here: a failed batch rejects). */
  stopReason: StopReason;
  /** Log-probabilities of the generated tokens, when asked for. */
  logprobs: TokenLogprob[];
  /** Prompt tokens. */
  promptTokens: number;
  /** Prompt tokens found in the slot's cache (not evaluated again). */
  cachedTokens: number;
  /** llama-server's timings. */
  timings: Timings;
  /** Measured stages: "queue", "prompt", "generation", "sampling", with the devices of every batch. */
  timeline: Timeline;
  /** How it shared the batches. */
  batching: BatchSharing;
}

/** The batcher's counters, for metrics and views. */
export interface BatcherStats {
  /** Slots. */
  parallel: number;
  /** Slots with a request. */
  slotsBusy: number;
  /** Requests waiting for a slot. */
  queued: number;
  /** Requests finished. */
  requests: number;
  /** Prompt tokens of finished requests (cached ones included). */
  promptTokens: number;
  /** Tokens generated. */
  generatedTokens: number;
  /** Decode steps run. */
  steps: number;
  /** Tokens decoded per device that ran the batches' heavy ops. */
  tokensByDevice: Record<string, number>;
}

/** One decode step, for views of throughput over time. */
export interface BatchStep {
  /** Milliseconds since the batcher opened. */
  atMs: number;
  /** Tokens in the batch. */
  tokens: number;
  /** Requests in the batch. */
  slots: number;
  /** Milliseconds the decode took. */
  wallMs: number;
}

interface NativeLogprob {
  id: number;
  logprob: number;
  bytes: number[];
  top: Array<{ id: number; logprob: number; bytes: number[] }>;
}

interface SlotOutput {
  slot: number;
  id: number;
  text: string;
  tokens: number[];
  logprobs: NativeLogprob[];
  done: boolean;
  stopReason: StopReason | "error" | null;
  nPrompt: number;
  nCached: number;
  nGenerated: number;
  firstTokenUs: number;
  wallUs: number;
  steps: number;
  sharedSteps: number;
  maxSlots: number;
  stages?: Record<string, NativeStage>;
}

interface BatchOutput {
  slots: SlotOutput[];
  steps: Array<{ atUs: number; tokens: number; slots: number; wallUs: number }>;
  busy: number;
  totalSteps: number;
  deviceTokens: Record<string, number>;
}

/** A request in the queue or in a slot. */
interface Job {
  id: number;
  request: BatchRequest;
  tokens: Int32Array;
  queuedAt: number;
  startedAt: number;
  slot: number;
  text: string;
  tokensOut: number[];
  logprobs: TokenLogprob[];
  resolve: (r: BatchResult) => void;
  reject: (e: unknown) => void;
  onAbort?: () => void;
  /** What its onPiece threw: the request was ended and rejects with it. */
  thrown?: { error: unknown };
}

const OPTION_RULES: Record<string, FieldRule> = {
  parallel: "positiveInteger",
  contextSize: "positiveInteger",
  queueLimit: "nonNegativeInteger",
  requireDevice: "nonEmptyString",
};

/** Steps run at most this long before returning to JavaScript (new requests also end a step). */
const STEP_BUDGET_MS = 50;

/** How long an idle batcher waits for more requests before its first step. */
const GATHER_MS = 2;

const decoder = new TextDecoder();

function logprobOf(n: NativeLogprob): TokenLogprob {
  return {
    token: n.id,
    text: decoder.decode(new Uint8Array(n.bytes)),
    bytes: n.bytes,
    logprob: n.logprob,
    top: n.top.map((t) => ({
      token: t.id,
      text: decoder.decode(new Uint8Array(t.bytes)),
      bytes: t.bytes,
      logprob: t.logprob,
    })),
  };
}

/**
 * Serves generation requests of one model side by side: up to `parallel` in slots of one native
 * context, decoded together, the rest in a queue. Owned by whoever opened it; the model closes it
 * before itself.
 *
 * @example
 * ```ts
 * await using batcher = await Batcher.open(model, { parallel: 4 });
 * const r = await batcher.submit({ tokens: model.tokenize("Hello"), params: samplingParams({ maxTokens: 16 }) });
 * ```
 */
export class Batcher implements AsyncDisposable {
  /** Slots. */
  readonly parallel: number;
  /** Tokens one request may hold, prompt and reply together. */
  readonly slotContext: number;
  #native: NativeBatch;
  #queueLimit: number;
  #requireDevice: string | undefined;
  #devices: Array<{ name: string; type: string }>;
  #queue: Job[] = [];
  #slots: Array<Job | null>;
  #nextId = 1;
  #running: Promise<void> = Promise.resolve();
  /** Whether the step loop runs; cleared by the loop in the same turn it sees nothing to do. */
  #looping = false;
  #stepping = false;
  #closed = false;
  #unadopt: () => void;
  #openedAt = performance.now();
  #stats = { requests: 0, promptTokens: 0, generatedTokens: 0, steps: 0, tokensByDevice: {} as Record<string, number> };
  #stepLog: BatchStep[] = [];

  private constructor(
    native: NativeBatch,
    info: { parallel: number; nCtxSlot: number },
    queueLimit: number,
    requireDevice: string | undefined,
    devices: Array<{ name: string; type: string }>,
    adopt: (child: { closeAsync(): Promise<void> }) => () => void,
  ) {
    this.#native = native;
    this.parallel = info.parallel;
    this.slotContext = info.nCtxSlot;
    this.#queueLimit = queueLimit;
    this.#requireDevice = requireDevice;
    this.#devices = devices;
    this.#slots = new Array(info.parallel).fill(null);
    this.#unadopt = adopt({ closeAsync: () => this.close() });
  }

  /** Opens a batching context of `parallel` slots on a loaded model (a worker thread makes it). */
  static async open(model: object, options?: BatcherOptions): Promise<Batcher> {
    const what = "Cannot open a batching context";
    const o = checkOptions(options, OPTION_RULES, what) as BatcherOptions;
    const internals = internalsOf(model);
    const parallel = o.parallel ?? 4;
    if (parallel > 256) {
      throw new LoupeError("INVALID_ARGUMENT", `${what}: parallel must be at most 256, not ${parallel}`);
    }
    const load = internals.options;
    const perSlot = o.contextSize ?? internals.native.info<{ nCtx: number }>().nCtx;
    let native: NativeBatch;
    try {
      native = await NativeBatch.create(internals.native, {
        parallel,
        contextSize: perSlot > 0 ? perSlot * parallel : 0,
        batchSize: load.batchSize ?? 512,
        threads: load.threads ?? navigator.hardwareConcurrency,
        threadsBatch: load.threadsBatch ?? 0,
        flashAttn: load.flashAttn ?? "auto",
        measure: load.measure ?? true,
      });
    } catch (e) {
      throw wrap(e, what);
    }
    const info = native.info<{ parallel: number; nCtxSlot: number }>();
    return new Batcher(
      native,
      info,
      o.queueLimit ?? 64,
      o.requireDevice ?? load.requireDevice,
      internals.devices,
      internals.adopt,
    );
  }

  /**
   * Queues a request; it starts in the first free slot. Resolves when it ends (also when aborted:
   * stopReason "aborted"). Rejects with BUSY when the queue is full, CONTEXT_OVERFLOW when the
   * prompt and one token do not fit a slot, INVALID_ARGUMENT for bad parameters, CLOSED once closed.
   */
  submit(request: BatchRequest): Promise<BatchResult> {
    const what = "Cannot generate";
    if (this.#closed) return Promise.reject(new LoupeError("CLOSED", `${what}: the batcher is closed`));
    const tokens = Int32Array.from(request.tokens);
    if (tokens.length === 0) return Promise.reject(new LoupeError("INVALID_ARGUMENT", `${what}: the prompt is empty`));
    if (tokens.length + 1 > this.slotContext) {
      return Promise.reject(
        new LoupeError(
          "CONTEXT_OVERFLOW",
          `${what}: the prompt has ${tokens.length} tokens but a slot holds ${this.slotContext} (including one token to generate)`,
        ),
      );
    }
    const lp = request.logprobs;
    if (lp !== undefined && (!Number.isInteger(lp) || lp < 0 || lp > 20)) {
      return Promise.reject(new LoupeError("INVALID_ARGUMENT", `${what}: logprobs must be 0..20, not ${lp}`));
    }
    const free = this.#slots.filter((s) => s === null).length;
    if (this.#queue.length >= this.#queueLimit + free) {
      return Promise.reject(
        new LoupeError("BUSY", `${what}: all ${this.parallel} slots are busy and ${this.#queue.length} requests wait`),
      );
    }
    return new Promise<BatchResult>((resolve, reject) => {
      const job: Job = {
        id: this.#nextId++,
        request,
        tokens,
        queuedAt: performance.now(),
        startedAt: 0,
        slot: -1,
        text: "",
        tokensOut: [],
        logprobs: [],
        resolve,
        reject,
      };
      if (request.signal) {
        if (request.signal.aborted) {
          resolve(this.#abortedInQueue(job));
          return;
        }
        job.onAbort = () => this.#abort(job);
        request.signal.addEventListener("abort", job.onAbort, { once: true });
      }
      this.#queue.push(job);
      if (this.#stepping) this.#native.interrupt();
      if (!this.#looping) {
        this.#looping = true;
        // from idle, the first step waits a moment for requests arriving together (clients whose
        // replies ended in the same step send their next ones at once): their prompts then share it
        this.#running = new Promise((r) => setTimeout(r, GATHER_MS)).then(() => this.#run());
      }
    });
  }

  /** The counters so far. */
  stats(): BatcherStats {
    return {
      parallel: this.parallel,
      slotsBusy: this.#slots.filter((s) => s !== null).length,
      queued: this.#queue.length,
      ...this.#stats,
      tokensByDevice: { ...this.#stats.tokensByDevice },
    };
  }

  /** The last decode steps (up to 2,048), oldest first. */
  steps(): BatchStep[] {
    return [...this.#stepLog];
  }

  /** Ends every request (aborted), refuses new ones, and frees the native context. Idempotent. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      for (const job of this.#queue.splice(0)) {
        this.#detach(job);
        job.reject(new LoupeError("CLOSED", "Cannot generate: the batcher was closed"));
      }
      for (const job of this.#slots) if (job) this.#native.cancel(job.slot);
    }
    await this.#running;
    this.#native.free();
    this.#unadopt();
  }

  /** Closes (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #detach(job: Job): void {
    if (job.onAbort) job.request.signal?.removeEventListener("abort", job.onAbort);
  }

  #abort(job: Job): void {
    const i = this.#queue.indexOf(job);
    if (i >= 0) {
      this.#queue.splice(i, 1);
      job.resolve(this.#abortedInQueue(job));
    } else if (job.slot >= 0) {
      this.#native.cancel(job.slot); // reported done at the next step
    }
  }

  #abortedInQueue(job: Job): BatchResult {
    this.#detach(job);
    const timeline = new Timeline("batch");
    timeline.add({ name: "queue", wallMs: performance.now() - job.queuedAt, tokens: 0, graphs: 0, devices: {} });
    return {
      text: "",
      tokens: [],
      stopReason: "aborted",
      logprobs: [],
      promptTokens: job.tokens.length,
      cachedTokens: 0,
      timings: requestTimings(0, job.tokens.length, -1, 0, 0),
      timeline,
      batching: { slot: -1, steps: 0, sharedSteps: 0, maxSlots: 0 },
    };
  }

  /** Starts queued requests in free slots; a request the engine refuses is rejected alone. */
  #admit(): void {
    while (this.#queue.length > 0 && this.#slots.includes(null)) {
      const job = this.#queue.shift()!;
      try {
        const slot = this.#native.start(
          { ...job.request.params, id: job.id, logprobs: job.request.logprobs ?? -1 },
          job.tokens,
        );
        job.slot = slot;
        job.startedAt = performance.now();
        this.#slots[slot] = job;
      } catch (e) {
        this.#detach(job);
        job.reject(wrap(e, "Cannot generate"));
      }
    }
  }

  /** The step loop: runs while some slot has a request. */
  async #run(): Promise<void> {
    try {
      await this.#loop(); // it clears #looping itself, in the same task as its last step's results
    } catch (e) {
      // a failure of loupe's own: every request ends with it, the batcher stays usable
      for (const job of [...this.#queue.splice(0), ...this.#slots]) {
        if (job) job.reject(wrap(e, "Cannot generate"));
      }
      this.#slots.fill(null);
      this.#looping = false;
    }
    // Not in a `finally`: that runs a microtask after #loop returned, when a reply's handler may
    // already have started the next loop; clearing the flag then let a third request start a
    // second loop beside it, and two decodes ran on one context.
  }

  async #loop(): Promise<void> {
    while (true) {
      if (!this.#closed) this.#admit();
      if (!this.#slots.some((s) => s !== null)) {
        this.#looping = false;
        return;
      }
      let failure: unknown = null;
      this.#stepping = true;
      try {
        await this.#native.step(STEP_BUDGET_MS, 0);
      } catch (e) {
        failure = e; // the engine ended every request of the failed batch: they come out as "error"
      } finally {
        this.#stepping = false;
      }
      this.#deliver(this.#native.output<BatchOutput>(), failure);
    }
  }

  #deliver(out: BatchOutput, failure: unknown): void {
    for (const s of out.steps) {
      this.#stepLog.push({ atMs: s.atUs / 1000, tokens: s.tokens, slots: s.slots, wallMs: s.wallUs / 1000 });
    }
    if (this.#stepLog.length > 2048) this.#stepLog.splice(0, this.#stepLog.length - 2048);
    this.#stats.steps = out.totalSteps;
    this.#stats.tokensByDevice = out.deviceTokens;
    for (const o of out.slots) {
      const job = this.#slots[o.slot];
      if (!job || job.id !== o.id) continue;
      const logprobs = o.logprobs.map(logprobOf);
      job.text += o.text;
      for (const t of o.tokens) job.tokensOut.push(t);
      for (const l of logprobs) job.logprobs.push(l);
      if ((o.text || o.tokens.length) && job.request.onPiece) {
        try {
          job.request.onPiece({ text: o.text, tokens: o.tokens, logprobs });
        } catch (e) {
          // a receiver that throws ends its own request only
          job.thrown ??= { error: e };
          this.#native.cancel(o.slot);
        }
      }
      if (!o.done) continue;
      this.#slots[o.slot] = null;
      this.#detach(job);
      if (job.thrown) {
        job.reject(job.thrown.error);
        continue;
      }
      if (o.stopReason === "error") {
        job.reject(wrap(failure ?? new Error("the batch failed"), "Cannot generate"));
        continue;
      }
      try {
        job.resolve(this.#result(job, o));
      } catch (e) {
        job.reject(e);
      }
    }
  }

  #result(job: Job, o: SlotOutput): BatchResult {
    this.#stats.requests++;
    this.#stats.promptTokens += o.nPrompt;
    this.#stats.generatedTokens += o.nGenerated;
    const timeline = new Timeline("batch", new Date(Date.now() - (performance.now() - job.queuedAt)));
    timeline.add({ name: "queue", wallMs: job.startedAt - job.queuedAt, tokens: 0, graphs: 0, devices: {} });
    const stages = o.stages ?? {};
    if (stages.prompt) {
      addNativeStage(timeline, "prompt", stages.prompt, o.nCached > 0 ? { reused: o.nCached } : {});
    }
    addGenerationStages(timeline, stages);
    timeline.events.push({
      atMs: timeline.totalMs,
      what:
        `shared ${o.sharedSteps} of its ${o.steps} batches with other requests (at most ${o.maxSlots} requests in one)`,
      kind: "batching",
      data: { slot: o.slot, steps: o.steps, sharedSteps: o.sharedSteps, maxSlots: o.maxSlots },
    });
    checkPlacement(timeline, this.#requireDevice, this.#devices);
    return {
      text: job.text,
      tokens: job.tokensOut,
      stopReason: o.stopReason as StopReason,
      logprobs: job.logprobs,
      promptTokens: o.nPrompt,
      cachedTokens: o.nCached,
      timings: requestTimings(o.nCached, o.nPrompt, o.firstTokenUs, o.wallUs, o.nGenerated),
      timeline,
      batching: { slot: o.slot, steps: o.steps, sharedSteps: o.sharedSteps, maxSlots: o.maxSlots },
    };
  }
}

/** llama-server's timings from a request's counts and times (microseconds since it started; firstUs -1: no token). */
function requestTimings(cached: number, prompt: number, firstUs: number, wallUs: number, generated: number): Timings {
  const promptMs = firstUs >= 0 ? firstUs / 1000 : wallUs / 1000;
  const predictedMs = firstUs >= 0 ? (wallUs - firstUs) / 1000 : 0;
  return timingsOf(cached, Math.max(prompt - cached, 0), promptMs, generated, predictedMs);
}
