/**
 * The server's counters and their Prometheus text form (`GET /metrics`): requests by endpoint and
 * status, prompt and generated tokens, queue length, slots busy and total, and tokens per device,
 * from the server's own counters plus the batcher's stats.
 *
 * @module
 */

import type { BatcherStats } from "./batcher.ts";

/** A server's numbers at one moment: what `/metrics` shows and `Server.stats()` returns. */
export interface ServerStats {
  /** Seconds since the server started. */
  uptimeSeconds: number;
  /** Requests answered, by endpoint and HTTP status (`"/v1/chat/completions 200"` → count). */
  requests: Record<string, number>;
  /** Requests being answered now. */
  inFlight: number;
  /** Text generation slots. */
  slotsTotal: number;
  /** Slots generating now. */
  slotsBusy: number;
  /** Text requests waiting for a slot. */
  queued: number;
  /** Image requests running or waiting (one runs at a time, outside the batcher). */
  imageQueue: number;
  /** Embedding and rerank requests running or waiting. */
  embedQueue: number;
  /** Prompt tokens evaluated for generation (batched and image requests). */
  promptTokens: number;
  /** Tokens generated. */
  generatedTokens: number;
  /** Tokens of embedded and reranked texts. */
  embeddingTokens: number;
  /** Batched decode steps. */
  batchSteps: number;
  /** Tokens per device that ran them (generation, images, embeddings). */
  tokensByDevice: Record<string, number>;
}

/** The counters the server keeps beside the batcher's. */
export class Counters {
  /** When the server started (performance.now()). */
  readonly startedMs: number = performance.now();
  /** Requests answered, by "endpoint status". */
  readonly requests: Map<string, number> = new Map();
  /** Requests being answered now. */
  inFlight = 0;
  /** Prompt tokens of the requests outside the batcher (image chats). */
  promptTokens = 0;
  /** Tokens generated outside the batcher. */
  generatedTokens = 0;
  /** Tokens of embedded and reranked texts. */
  embeddingTokens = 0;
  /** Tokens per device outside the batcher. */
  readonly tokensByDevice: Map<string, number> = new Map();

  /** Counts one answered request. */
  request(endpoint: string, status: number): void {
    const key = `${endpoint} ${status}`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
  }

  /** Counts tokens run on a device. */
  device(name: string, tokens: number): void {
    if (tokens > 0) this.tokensByDevice.set(name, (this.tokensByDevice.get(name) ?? 0) + tokens);
  }

  /** The counters and the batcher's stats together. */
  snapshot(batch: BatcherStats | null, imageQueue: number, embedQueue: number): ServerStats {
    const byDevice: Record<string, number> = { ...batch?.tokensByDevice };
    for (const [d, n] of this.tokensByDevice) byDevice[d] = (byDevice[d] ?? 0) + n;
    return {
      uptimeSeconds: (performance.now() - this.startedMs) / 1000,
      requests: Object.fromEntries(this.requests),
      inFlight: this.inFlight,
      slotsTotal: batch?.parallel ?? 0,
      slotsBusy: batch?.slotsBusy ?? 0,
      queued: batch?.queued ?? 0,
      imageQueue,
      embedQueue,
      promptTokens: (batch?.promptTokens ?? 0) + this.promptTokens,
      generatedTokens: (batch?.generatedTokens ?? 0) + this.generatedTokens,
      embeddingTokens: this.embeddingTokens,
      batchSteps: batch?.steps ?? 0,
      tokensByDevice: byDevice,
    };
  }
}

/** A label value as Prometheus' text format writes it (backslash, quote and newline escaped). */
export function labelValue(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

/** A number as the text format writes it. */
function num(n: number): string {
  return Number.isFinite(n) ? String(n) : n > 0 ? "+Inf" : n < 0 ? "-Inf" : "NaN";
}

/**
 * The Prometheus text exposition (version 0.0.4) of a server's stats: `loupe_*` metrics, and the
 * llama-server (`llamacpp:*`) names for the figures both servers have, so its dashboards read them.
 */
export function prometheusText(s: ServerStats): string {
  const out: string[] = [];
  const metric = (name: string, type: "counter" | "gauge", help: string, rows: Array<[string, number]>) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of rows) out.push(`${name}${labels} ${num(value)}`);
  };
  const requests = Object.entries(s.requests).map(([key, n]): [string, number] => {
    const cut = key.lastIndexOf(" ");
    return [`{endpoint="${labelValue(key.slice(0, cut))}",status="${labelValue(key.slice(cut + 1))}"}`, n];
  });
  metric("loupe_requests_total", "counter", "HTTP requests answered, by endpoint and status.", requests);
  metric("loupe_requests_in_flight", "gauge", "HTTP requests being answered.", [["", s.inFlight]]);
  metric("loupe_prompt_tokens_total", "counter", "Prompt tokens evaluated for generation.", [["", s.promptTokens]]);
  metric("loupe_generated_tokens_total", "counter", "Tokens generated.", [["", s.generatedTokens]]);
  metric("loupe_embedding_tokens_total", "counter", "Tokens of embedded and reranked texts.", [[
    "",
    s.embeddingTokens,
  ]]);
  metric("loupe_queue_length", "gauge", "Text generation requests waiting for a slot.", [["", s.queued]]);
  metric("loupe_image_queue_length", "gauge", "Image requests running or waiting (one at a time).", [[
    "",
    s.imageQueue,
  ]]);
  metric("loupe_embedding_queue_length", "gauge", "Embedding and rerank requests running or waiting.", [[
    "",
    s.embedQueue,
  ]]);
  metric("loupe_slots_busy", "gauge", "Generation slots holding a request.", [["", s.slotsBusy]]);
  metric("loupe_slots_total", "gauge", "Generation slots.", [["", s.slotsTotal]]);
  metric("loupe_batch_steps_total", "counter", "Batched decode steps.", [["", s.batchSteps]]);
  metric(
    "loupe_device_tokens_total",
    "counter",
    "Tokens evaluated per device that ran their heavy ops.",
    Object.entries(s.tokensByDevice).sort().map(([d, n]) => [`{device="${labelValue(d)}"}`, n]),
  );
  metric("loupe_uptime_seconds", "gauge", "Seconds since the server started.", [["", s.uptimeSeconds]]);
  // llama-server's names (tools/server: metrics), for dashboards made for it
  metric("llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed.", [["", s.promptTokens]]);
  metric("llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed.", [[
    "",
    s.generatedTokens,
  ]]);
  metric("llamacpp:requests_processing", "gauge", "Number of requests processing.", [["", s.slotsBusy]]);
  metric("llamacpp:requests_deferred", "gauge", "Number of requests deferred.", [["", s.queued]]);
  return out.join("\n") + "\n";
}
