/**
 * A model across two RPC servers: loupe (`rpc`, `tensorSplit` 1:1) against llama.cpp's own
 * llama-bench with `--rpc` and the same servers, in interleaved rounds: generation tokens/s
 * (tg, decode only: loupe's "generation" stage, llama-bench's avg_ts). Target: loupe / llama-bench
 * ≥ 0.95 with no added delay.
 *
 * Toward real networks: the same runs through a delaying TCP relay written here (each chunk held
 * `d` ms in each direction, so a round trip costs 2d; ./delay_relay.ts), at d = 0.5 and 5 ms. This kernel has no
 * `sch_netem` (tc netem cannot run here), so the relay stands in for it: it models latency, not
 * bandwidth or loss. The rule of thumb it shows: time per token ≈ compute + round trips per token
 * × 2d.
 *
 * CLI: `deno run -A tests/bench/bench_rpc.ts [--quick] [--rounds=N]`
 *
 * @module
 */
import { loadModel } from "../../mod.ts";
import { ensureRpc } from "../../native/build/engine.ts";
import { build, fixture, runTool } from "../support/helpers.ts";
import { startRpcServer } from "../support/rpc_servers.ts";

const QUICK = Deno.args.includes("--quick");
const ROUNDS = Number(Deno.args.find((a) => a.startsWith("--rounds="))?.split("=")[1] ?? (QUICK ? 1 : 5));
const THREADS = navigator.hardwareConcurrency;
const rpc = await ensureRpc({ verbose: false });
const model = await fixture("bench");

/** The delaying relay (./delay_relay.ts) in a process of its own, in front of `port`. */
async function relay(port: number, delayMs: number): Promise<{ port: number; stop(): Promise<void> }> {
  const p = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./delay_relay.ts", import.meta.url).pathname, String(port), String(delayMs)],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let line = "";
  while (!line.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the relay did not start");
    line += value;
  }
  return {
    port: Number(line.trim()),
    async stop() {
      p.kill("SIGKILL");
      await p.status;
    },
  };
}

async function loupeTg(endpoints: string[], n: number): Promise<number> {
  await using m = await loadModel(model, {
    threads: THREADS,
    contextSize: n + 16,
    rpc: endpoints,
    tensorSplit: [1, 1],
  });
  await m.generate("", { maxTokens: 4, temperature: 0, ignoreEos: true }); // warm, as llama-bench's warm-up run
  const r = await m.generate("", { maxTokens: n, temperature: 0, ignoreEos: true });
  const g = r.timeline.stage("generation")!;
  return g.tokens / (g.wallMs / 1000);
}

async function benchTg(endpoints: string[], n: number): Promise<number> {
  const { stdout } = await runTool(build.tools.bench, [
    "-m",
    model,
    "-p",
    "0",
    "-n",
    String(n),
    "-t",
    String(THREADS),
    "-r",
    "1",
    "--rpc",
    endpoints.join(","),
    "-ts",
    "1/1",
    "-ngl",
    "99",
    "-o",
    "json",
  ], { env: { GGML_BACKEND_PATH: rpc.backend } });
  const text = new TextDecoder().decode(stdout);
  const entries = JSON.parse(text.slice(text.indexOf("["))) as Array<{ n_gen: number; avg_ts: number }>;
  return entries.find((e) => e.n_gen === n)!.avg_ts;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const threads = Math.max(1, THREADS >> 1); // each server gets half the cores
const servers = [await startRpcServer(threads), await startRpcServer(threads)];
console.log(`loupe vs llama-bench over two local rpc-servers (${model}), tensor split 1:1, tokens/s (medians)`);
console.log(
  `${"one-way delay".padEnd(14)} ${"tokens".padStart(6)} ${"loupe".padStart(8)} ${"llama-bench".padStart(12)} ${
    "ratio".padStart(7)
  }`,
);
try {
  for (const delay of [0, 0.5, 5]) {
    const n = delay >= 5 ? 16 : delay > 0 ? 32 : 64;
    const relays = await Promise.all(
      servers.map((s) => delay ? relay(s.port, delay) : { port: s.port, stop: () => Promise.resolve() }),
    );
    const endpoints = relays.map((r) => `127.0.0.1:${r.port}`);
    const ours: number[] = [];
    const theirs: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      // which goes first flips each round; one client at a time per server
      if (round % 2) {
        theirs.push(await benchTg(endpoints, n));
        ours.push(await loupeTg(endpoints, n));
      } else {
        ours.push(await loupeTg(endpoints, n));
        theirs.push(await benchTg(endpoints, n));
      }
    }
    for (const r of relays) await r.stop();
    console.log(
      `${`${delay} ms`.padEnd(14)} ${String(n).padStart(6)} ${median(ours).toFixed(1).padStart(8)} ${
        median(theirs).toFixed(1).padStart(12)
      } ${(median(ours) / median(theirs)).toFixed(3).padStart(7)}`,
    );
  }
} finally {
  for (const s of servers) await s.stop();
}
console.log("target: ratio >= 0.95 at 0 ms");
