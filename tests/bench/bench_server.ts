/**
 * Serving benchmark: OpenAI-compatible servers driven by the official `openai` npm client, side by
 * side on the ≈58M-parameter F16 `bench` fixture (a report, not a timed test).
 *
 * For each concurrency level (1, 4 and 8 streams by default), every stream is a loop of streamed
 * chat completions (`max_tokens` 128, temperature 0, `ignore_eos: true` as an extra body field, so
 * that every request generates exactly 128 tokens, and `stream_options.include_usage`). A stream
 * starts new requests until the level's time is up; the level ends when the last one has finished.
 * Measured per level:
 *
 * - aggregate generated tokens/s: the tokens of every request (`usage.completion_tokens`, or the
 *   content chunks counted where a server sends no usage) over the level's wall time, start to
 *   last completion (so it includes the drain, when fewer streams are left running);
 * - time to first token (p50, p99): from the client's `create()` call to the first chunk that
 *   carries content (HTTP round trip, queueing for a free slot and the prompt included).
 *
 * Each request's prompt is distinct (it names its stream and number), so that no server answers a
 * prompt from a cache of an identical one. One untimed warm-up request precedes the levels.
 *
 * The client runs in this process and takes some of the machine's CPU. Under the table, each
 * level's CPU is printed in cores' worth: this process's, the server's own process's (when it has
 * one) and every other process's (a benchmark disturbed by other work shows there; it is not run
 * again).
 *
 * The servers compared are {@linkcode SERVERS}: each a function that starts one on a model with a
 * number of slots and CPU threads and returns its URL and how to stop it. llama.cpp's own
 * `llama-server` (built from the pinned source against the same engine, see
 * native/build/engine.ts, `BuildOptions.server`) is the reference the ratios divide by.
 *
 * Both servers stay up for the whole run, and each level is measured in rounds (`--rounds`, default
 * 2; `--quick` 1) in which the servers take turns, the order flipping every round: a machine whose
 * speed drifts (a shared host) slows both alike, and the ratios compare like with like.
 *
 * CLI: `deno run -A tests/bench/bench_server.ts [--quick] [--rounds=N] [--seconds=S] [--concurrency=1,4,8]
 * [--parallel=N] [--threads=N] [--max-tokens=N] [--model=PATH] [--json=PATH]`: `--seconds` per
 * level and round (default 20; `--quick` 5), `--parallel` the servers' slots (default 4), `--threads` their
 * CPU threads (default: every core).
 *
 * @module
 */
// deno-lint-ignore no-import-prefix -- a benchmark-only client, pinned, fetched by Deno from npm (as chat_test.ts's ajv)
import OpenAI from "npm:openai@7.57.0";
import { type BuildResult, ensureBuild } from "../../native/build/engine.ts";
import { fixtureModel } from "../../src/fixtures/text.ts";

// ---- servers -------------------------------------------------------------------------------

/** A server that is up: its base URL (with or without the `/v1` suffix) and how to stop it. */
export interface RunningServer {
  /** Base URL, e.g. `http://127.0.0.1:8080` (the harness adds `/v1` when missing). */
  url: string;
  /** Stops the server and frees what it holds. */
  close(): Promise<void> | void;
  /** The server's process id when it runs in a process of its own (its CPU is then reported apart). */
  pid?: number;
}

/** Starts a server on `model` with `parallel` slots (concurrent sequences) and `threads` CPU threads. */
export type ServerStarter = (model: string, parallel: number, threads: number) => Promise<RunningServer>;

/** Context each server slot holds, in tokens (a request here needs about 30 + 128). */
export const SLOT_CONTEXT = 512;

/** An unused loopback TCP port (taken from the OS, then released for the server). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** Whether `url` answers 200 (a refused connection is false). */
async function answersOk(url: string): Promise<boolean> {
  try {
    const r = await fetch(url);
    await r.body?.cancel();
    return r.ok;
  } catch {
    return false;
  }
}

/** Keeps the last `limit` characters of a stream (a child's log), reading it to the end. */
function tailOf(stream: ReadableStream<Uint8Array>, limit = 8000): { text: () => string; done: Promise<void> } {
  let text = "";
  const done = stream.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({
      write(chunk) {
        text = (text + chunk).slice(-limit);
      },
    }),
  ).catch(() => {});
  return { text: () => text, done };
}

let serverBuild: Promise<BuildResult> | null = null;

/**
 * Starts llama.cpp's `llama-server` (built on first use, see native/build/engine.ts) on a free
 * loopback port: `-np parallel`, `-t threads`, a context of {@linkcode SLOT_CONTEXT} tokens per slot,
 * no web UI, otherwise its defaults (continuous batching, flash attention auto, prompt cache).
 * Resolves once `/health` answers 200; `close()` stops it with SIGTERM (SIGKILL after 10 s).
 */
export const startLlamaServer: ServerStarter = async (model, parallel, threads) => {
  serverBuild ??= ensureBuild({ server: true });
  const build = await serverBuild;
  const port = freePort();
  const args = ["-m", model, "-np", String(parallel), "-t", String(threads), "-c", String(SLOT_CONTEXT * parallel)];
  args.push("--host", "127.0.0.1", "--port", String(port), "--no-webui");
  // From the engine directory, as every reference tool runs (ggml looks for its backends there).
  return await startChild("llama-server", build.tools.server, args, build.engineDir, port);
};

/**
 * Starts loupe's own server (`deno task serve`, src/serve/cli.ts) in a process of its own, as
 * llama-server runs: the same model, slots, threads and context per slot, on a free loopback port.
 */
export const startLoupeServer: ServerStarter = async (model, parallel, threads) => {
  const port = freePort();
  const cli = new URL("../../src/serve/cli.ts", import.meta.url).pathname;
  const args = ["run", "-A", cli, "--model", model, "--parallel", String(parallel), "--threads", String(threads)];
  args.push("--ctx-size", String(SLOT_CONTEXT), "--host", "127.0.0.1", "--port", String(port));
  return await startChild("loupe", Deno.execPath(), args, Deno.cwd(), port);
};

/** Spawns a server process and resolves once its `/health` answers 200; `close()` stops it with SIGTERM (SIGKILL after 10 s). */
async function startChild(name: string, program: string, args: string[], cwd: string, port: number) {
  const child = new Deno.Command(program, { args, cwd, stdin: "null", stdout: "piped", stderr: "piped" }).spawn();
  const out = tailOf(child.stdout);
  const err = tailOf(child.stderr);
  let exited = false;
  const status = child.status.finally(() => (exited = true));
  const url = `http://127.0.0.1:${port}`;
  const close = async () => {
    if (!exited) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => {
        try {
          if (!exited) child.kill("SIGKILL");
        } catch { /* it exited meanwhile */ }
      }, 10_000);
      await status;
      clearTimeout(timer);
    }
    await Promise.all([out.done, err.done]);
  };
  const started = performance.now();
  while (true) {
    if (exited) {
      await close();
      throw new Error(`${name} exited (${(await status).code}): ${(out.text() + err.text()).slice(-3000)}`);
    }
    if (await answersOk(`${url}/health`)) return { url, close, pid: child.pid };
    if (performance.now() - started > 120_000) {
      await close();
      throw new Error(`${name} did not become healthy in 120 s: ${(out.text() + err.text()).slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The servers benchmarked, in table order; the first is the reference the ratios divide by. Both
 * run in processes of their own, apart from this client's event loop.
 */
export const SERVERS: Record<string, ServerStarter> = {
  "llama-server": startLlamaServer,
  loupe: startLoupeServer,
};

// ---- measuring -----------------------------------------------------------------------------

/** Options of {@linkcode benchServer}. */
export interface ServerBenchOptions {
  /** The server's process id, if it has a process of its own (for the CPU figures). */
  pid?: number;
  /** Concurrent streams per level (default 1, 4, 8). */
  concurrency?: number[];
  /** Seconds during which each level starts new requests (default 20). */
  seconds?: number;
  /** Tokens each request generates (default 128). */
  maxTokens?: number;
  /** Called after each level with its result (for progress lines). */
  onLevel?: (level: LevelResult) => void;
}

/** What one concurrency level measured. */
export interface LevelResult {
  /** Concurrent streams. */
  concurrency: number;
  /** Requests completed. */
  requests: number;
  /** Tokens generated by them. */
  tokens: number;
  /** Wall time of the level, start to last completion, s. */
  seconds: number;
  /** Aggregate generated tokens per second. */
  tokensPerSecond: number;
  /** Median time to first token, ms. */
  ttftP50Ms: number;
  /** 99th percentile time to first token (nearest rank), ms. */
  ttftP99Ms: number;
  /** Requests whose token count came from counting chunks (the server sent no usage). */
  chunkCounted: number;
  /** Requests that did not generate exactly `maxTokens` tokens. */
  offCount: number;
  /** CPU used by this process (the client, and the server if it runs in here) during the level, in cores. */
  clientCores: number;
  /** CPU used by the server's own process during the level, in cores (0 when it has none, see `pid`). */
  serverCores: number;
  /** CPU used by every other process of the machine during the level, in cores. */
  foreignCores: number;
}

/** One streamed request's measurements. */
interface RequestSample {
  ttftMs: number;
  tokens: number;
  fromUsage: boolean;
}

/** Nearest-rank percentile `p` (0..1] of `xs`. */
function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil(p * s.length) - 1)];
}

/** A process's CPU time so far (user + system, all its threads) in clock ticks; NaN if unreadable. */
function processTicks(pid: number | "self"): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
    return fields[11] + fields[12]; // utime, stime (fields 14 and 15)
  } catch {
    return NaN;
  }
}

/** The machine's busy and total CPU time, this process's and the server's (`pid`), in clock ticks. */
function cpuTicks(pid?: number) {
  let busy = NaN, total = NaN;
  try {
    const f = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
    busy = user + nice + system + irq + softirq + (steal ?? 0);
    total = busy + idle + iowait;
  } catch { /* not Linux */ }
  return { busy, total, client: processTicks("self"), server: pid === undefined ? 0 : processTicks(pid) };
}

/** Cores' worth of CPU used between two {@linkcode cpuTicks}: by this process, the server, the rest. */
function coresUsed(a: ReturnType<typeof cpuTicks>, b: ReturnType<typeof cpuTicks>) {
  const cores = navigator.hardwareConcurrency;
  const per = (x: number) => x / (b.total - a.total) * cores;
  const client = per(b.client - a.client);
  const server = per(b.server - a.server);
  return { client, server, foreign: Math.max(0, per(b.busy - a.busy) - client - server) };
}

/** One streamed chat completion, timed. */
async function streamedRequest(client: OpenAI, model: string, prompt: string, maxTokens: number) {
  const t0 = performance.now();
  // ignore_eos is llama-server's extension (loupe's server takes it too); the client passes it on.
  const body = {
    model,
    messages: [{ role: "user" as const, content: prompt }],
    max_tokens: maxTokens,
    temperature: 0,
    stream: true as const,
    stream_options: { include_usage: true },
    ignore_eos: true,
  };
  const stream = await client.chat.completions.create(body);
  let ttftMs = NaN;
  let chunks = 0;
  let usage: number | undefined;
  for await (const chunk of stream) {
    const delta = chunk.choices[0]?.delta as { content?: string | null; reasoning_content?: string } | undefined;
    if (delta?.content || delta?.reasoning_content) {
      if (Number.isNaN(ttftMs)) ttftMs = performance.now() - t0;
      chunks++;
    }
    if (chunk.usage) usage = chunk.usage.completion_tokens;
  }
  return { ttftMs, tokens: usage ?? chunks, fromUsage: usage !== undefined } satisfies RequestSample;
}

/** The OpenAI client for a server's base URL (`/v1` added when missing), without retries. */
function clientFor(baseUrl: string): OpenAI {
  const base = baseUrl.replace(/\/+$/, "");
  return new OpenAI({
    baseURL: base.endsWith("/v1") ? base : `${base}/v1`,
    apiKey: "none",
    maxRetries: 0,
    timeout: 300_000,
  });
}

/**
 * Measures an OpenAI-compatible server at `baseUrl` (see the module documentation): one untimed
 * warm-up request, then each concurrency level in turn. The model named in the requests is the
 * first one `/v1/models` lists.
 */
export async function benchServer(baseUrl: string, options: ServerBenchOptions = {}): Promise<LevelResult[]> {
  const { concurrency = [1, 4, 8], seconds = 20, maxTokens = 128 } = options;
  const client = clientFor(baseUrl);
  const models = await client.models.list();
  const model = models.data[0]?.id ?? "default";
  await streamedRequest(client, model, "Warm-up: say something.", maxTokens);
  const results: LevelResult[] = [];
  for (const n of concurrency) {
    const samples: RequestSample[] = [];
    const cpu0 = cpuTicks(options.pid);
    const start = performance.now();
    const deadline = start + seconds * 1000;
    await Promise.all(Array.from({ length: n }, async (_, stream) => {
      for (let i = 0; i === 0 || performance.now() < deadline; i++) {
        const prompt = `Stream ${stream}, request ${i} at ${n} streams: tell me a long story about a lighthouse.`;
        samples.push(await streamedRequest(client, model, prompt, maxTokens));
      }
    }));
    const wall = (performance.now() - start) / 1000;
    const cpu = coresUsed(cpu0, cpuTicks(options.pid));
    const tokens = samples.reduce((a, s) => a + s.tokens, 0);
    const ttft = samples.map((s) => s.ttftMs);
    const level: LevelResult = {
      concurrency: n,
      requests: samples.length,
      tokens,
      seconds: wall,
      tokensPerSecond: tokens / wall,
      ttftP50Ms: percentile(ttft, 0.5),
      ttftP99Ms: percentile(ttft, 0.99),
      chunkCounted: samples.filter((s) => !s.fromUsage).length,
      offCount: samples.filter((s) => s.tokens !== maxTokens).length,
      clientCores: cpu.client,
      serverCores: cpu.server,
      foreignCores: cpu.foreign,
    };
    options.onLevel?.(level);
    results.push(level);
  }
  return results;
}

// ---- report --------------------------------------------------------------------------------

/**
 * Other processes' CPU (cores) above which a level is marked disturbed in the table (as bench.ts):
 * with every core running a compute thread, a little foreign work slows the servers a lot.
 */
export const FOREIGN_LIMIT = 0.05;

/** One server's results, for {@linkcode formatServerTable}. */
export interface ServerRun {
  /** The server's name (a column heading). */
  name: string;
  /** Its levels, in the same concurrency order as the other runs'. */
  levels: LevelResult[];
}

/**
 * The comparison table: per concurrency level, each server's aggregate tokens/s, each further
 * server's ratio to the first (the reference), and each server's TTFT p50/p99 in ms; then a note
 * on each level's requests, the client's CPU and any request that did not generate the tokens
 * asked for, had its tokens counted from chunks, or ran while other processes used more than
 * {@linkcode FOREIGN_LIMIT} cores.
 */
export function formatServerTable(runs: ServerRun[]): string {
  const [ref, ...others] = runs;
  const header = [
    "streams",
    ...runs.map((r) => `${r.name} tok/s`),
    ...others.map((r) => `${r.name}/${ref.name}`),
    ...runs.map((r) => `${r.name} TTFT p50/p99 ms`),
  ];
  const rows = ref.levels.map((l, i) => [
    String(l.concurrency),
    ...runs.map((r) => r.levels[i].tokensPerSecond.toFixed(1)),
    ...others.map((r) => (r.levels[i].tokensPerSecond / l.tokensPerSecond).toFixed(3)),
    ...runs.map((r) => `${r.levels[i].ttftP50Ms.toFixed(0)} / ${r.levels[i].ttftP99Ms.toFixed(0)}`),
  ]);
  const widths = header.map((_, c) => Math.max(...[header, ...rows].map((r) => r[c].length)));
  const line = (r: string[]) => r.map((x, c) => x.padStart(widths[c])).join("  ");
  const out = [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line), ""];
  // the targets: each level at least 0.95 of the reference, and 4 streams at least 1.9 times one
  for (const r of others) {
    const worst = Math.min(...r.levels.map((l, i) => l.tokensPerSecond / ref.levels[i].tokensPerSecond));
    const one = r.levels.find((l) => l.concurrency === 1);
    const four = r.levels.find((l) => l.concurrency === 4);
    const scale = one && four ? four.tokensPerSecond / one.tokensPerSecond : NaN;
    const refScale = one && four
      ? ref.levels.find((l) => l.concurrency === 4)!.tokensPerSecond /
        ref.levels.find((l) => l.concurrency === 1)!.tokensPerSecond
      : NaN;
    out.push(
      `${r.name}: lowest ratio to ${ref.name} ${worst.toFixed(3)} (target >= 0.95: ${
        worst >= 0.95 ? "met" : "NOT met"
      }); ` +
        `4 streams / 1 stream ${scale.toFixed(2)}x (target >= 1.9: ${scale >= 1.9 ? "met" : "NOT met"}; ` +
        `${ref.name}: ${refScale.toFixed(2)}x)`,
    );
  }
  out.push("");
  for (const r of runs) {
    out.push(`${r.name} (CPU in cores: this client / the server's process / other processes):`);
    for (const l of r.levels) {
      out.push(
        `  ${l.concurrency} streams: ${l.requests} requests, ${l.tokens} tokens in ${l.seconds.toFixed(1)} s; CPU ` +
          [l.clientCores, l.serverCores, l.foreignCores].map((x) => x.toFixed(2)).join(" / "),
      );
    }
    for (const l of r.levels) {
      if (l.offCount) out.push(`  ! ${l.concurrency} streams: ${l.offCount} requests not of the asked length`);
      if (l.chunkCounted) out.push(`  ! ${l.concurrency} streams: ${l.chunkCounted} requests counted by chunks`);
      if (l.foreignCores > FOREIGN_LIMIT) {
        out.push(`  ! ${l.concurrency} streams: disturbed (other processes used ${l.foreignCores.toFixed(2)} cores)`);
      }
    }
  }
  return out.join("\n");
}

// ---- run -----------------------------------------------------------------------------------

/**
 * One level's rounds as one result: tokens and seconds summed (tokens/s over all of them), the
 * median of the rounds' TTFT p50 and the largest p99, CPU averaged by time.
 */
export function mergeRounds(rounds: LevelResult[]): LevelResult {
  const sum = (f: (l: LevelResult) => number) => rounds.reduce((a, l) => a + f(l), 0);
  const seconds = sum((l) => l.seconds);
  const byTime = (f: (l: LevelResult) => number) => sum((l) => f(l) * l.seconds) / seconds;
  const p50s = rounds.map((l) => l.ttftP50Ms).sort((a, b) => a - b);
  return {
    concurrency: rounds[0].concurrency,
    requests: sum((l) => l.requests),
    tokens: sum((l) => l.tokens),
    seconds,
    tokensPerSecond: sum((l) => l.tokens) / seconds,
    ttftP50Ms: p50s[Math.floor((p50s.length - 1) / 2)],
    ttftP99Ms: Math.max(...rounds.map((l) => l.ttftP99Ms)),
    chunkCounted: sum((l) => l.chunkCounted),
    offCount: sum((l) => l.offCount),
    clientCores: byTime((l) => l.clientCores),
    serverCores: byTime((l) => l.serverCores),
    foreignCores: byTime((l) => l.foreignCores),
  };
}

function flag(name: string): string | undefined {
  const prefix = `--${name}=`;
  return Deno.args.find((a) => a.startsWith(prefix))?.slice(prefix.length);
}

function positive(name: string, fallback: number): number {
  const v = flag(name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!(n > 0)) throw new Error(`--${name} must be a positive number, not "${v}"`);
  return n;
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  const seconds = positive("seconds", quick ? 5 : 20);
  const parallel = positive("parallel", 4);
  const threads = positive("threads", navigator.hardwareConcurrency);
  const maxTokens = positive("max-tokens", 128);
  const concurrency = (flag("concurrency") ?? "1,4,8").split(",").map(Number);
  const model = flag("model") ?? await fixtureModel("bench");
  console.log(`loupe server bench${quick ? " (quick)" : ""}: ${model}`);
  console.log(
    `servers: ${Object.keys(SERVERS).join(", ")}; ${parallel} slots of ${SLOT_CONTEXT} tokens, ${threads} threads; ` +
      `${maxTokens} tokens per request; ${seconds} s per level; streams ${concurrency.join(", ")}; ` +
      `${navigator.hardwareConcurrency} cores, load ${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")}`,
  );
  // Every server is up for the whole run; levels are measured in rounds, the servers taking turns
  // (the order flips every round), so that a machine whose speed drifts slows them alike.
  const rounds = positive("rounds", quick ? 1 : 2);
  const servers: Array<{ name: string; server: RunningServer; levels: LevelResult[][] }> = [];
  try {
    for (const [name, start] of Object.entries(SERVERS)) {
      const t0 = performance.now();
      const server = await start(model, parallel, threads);
      servers.push({ name, server, levels: concurrency.map(() => []) });
      console.error(`${name}: up at ${server.url} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
    for (let round = 0; round < rounds; round++) {
      for (const [i, c] of concurrency.entries()) {
        const order = (round + i) % 2 ? [...servers].reverse() : servers;
        for (const s of order) {
          const [level] = await benchServer(s.server.url, {
            concurrency: [c],
            seconds,
            maxTokens,
            pid: s.server.pid,
          });
          s.levels[i].push(level);
          console.error(
            `round ${round + 1}, ${s.name}: ${c} streams: ${level.tokensPerSecond.toFixed(1)} tok/s, ` +
              `TTFT p50 ${level.ttftP50Ms.toFixed(0)} ms, p99 ${
                level.ttftP99Ms.toFixed(0)
              } ms (${level.requests} requests)`,
          );
        }
      }
    }
  } finally {
    for (const s of servers) await s.server.close();
  }
  const runs: ServerRun[] = servers.map((s) => ({ name: s.name, levels: s.levels.map(mergeRounds) }));
  console.log();
  console.log(formatServerTable(runs));
  const json = flag("json");
  if (json) await Deno.writeTextFile(json, JSON.stringify({ model, parallel, threads, seconds, runs }, null, 2));
}
