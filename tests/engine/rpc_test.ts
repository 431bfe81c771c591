// Models across ggml RPC servers (`rpc`, `tensorSplit`): two of llama.cpp's own rpc-servers on
// 127.0.0.1, started and stopped here. Answers and the split of the weights equal llama.cpp's own
// completion tool over the same servers; unreachable, closing, hanging and dying servers are typed
// errors, never this process's death.
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { build, fixture, referenceCompletion, runTool, THREADS } from "../support/helpers.ts";
import { devices, loadModel, LoupeError, PlacementError } from "../../mod.ts";
import { ensureRpc } from "../../native/build/engine.ts";
import { freePort, startRpcServer } from "../support/rpc_servers.ts";

const tiny = await fixture("tiny");
const rpc = await ensureRpc({ verbose: false });

const a = await startRpcServer();
const b = await startRpcServer();
const both = [a.endpoint, b.endpoint];
const rpcEnv = { GGML_BACKEND_PATH: rpc.backend };
const split = { threads: THREADS, contextSize: 256, rpc: both, tensorSplit: [1, 1] };

Deno.test("a model split 1:1 across two rpc-servers answers as the CPU and as llama-completion --rpc; weights per server as llama.cpp puts them", async () => {
  const prompt = "Once upon a time";
  const cpu = await referenceCompletion(tiny, prompt, 24);
  const ref = await referenceCompletion(tiny, prompt, 24, {
    extra: ["--rpc", both.join(","), "-ts", "1,1", "-ngl", "99"],
    env: rpcEnv,
  });
  assertEquals(ref, cpu, "llama.cpp's own split answers as its CPU run");
  // weights per server: llama-completion's own load log ("RPC0[host:port] model buffer size = x MiB");
  // before loupe connects (a server serves one client at a time)
  const log = (await runTool(build.tools.completion, [
    "-m",
    tiny,
    "-p",
    prompt,
    "-n",
    "1",
    "--temp",
    "0",
    "-t",
    String(THREADS),
    "-no-cnv",
    "--no-warmup",
    "--simple-io",
    "-v",
    "--rpc",
    both.join(","),
    "-ts",
    "1,1",
    "-ngl",
    "99",
  ], { env: rpcEnv })).stderr;
  await using model = await loadModel(tiny, split);
  assert(model.isolated, "an RPC model runs isolated");
  const r = await model.generate(prompt, { maxTokens: 24, temperature: 0 });
  assertEquals(r.text, ref);
  // the timeline shows each server's device running its part
  const gen = r.timeline.stage("generation")!;
  assert(gen.devices.RPC0?.heavy > 0 && gen.devices.RPC1?.heavy > 0, JSON.stringify(gen.devices));
  const theirs = new Map<string, number>();
  for (const m of log.matchAll(/RPC\d+\[([^\]]+)\] model buffer size =\s+([\d.]+) MiB/g)) {
    theirs.set(m[1], Number(m[2]));
  }
  for (const endpoint of both) {
    const ours = model.loadTimeline.memory.find((d) => d.buffer.endsWith(`[${endpoint}]`));
    assert(ours && theirs.has(endpoint), `${endpoint}: ${JSON.stringify(model.loadTimeline.memory)} / ${[...theirs]}`);
    assertEquals((ours.model / 2 ** 20).toFixed(2), theirs.get(endpoint)!.toFixed(2), endpoint);
  }
});

Deno.test("devices({rpc}) lists each server's devices as type rpc with its endpoint; requireDevice rpc, an endpoint, never gpu", async () => {
  const list = await devices({ rpc: both });
  const remote = list.filter((d) => d.type === "rpc");
  assertEquals(remote.map((d) => d.description), both);
  assert(remote.every((d) => d.backend === "RPC" && d.memoryTotal > 0));
  assert(!(await devices()).some((d) => d.type === "rpc"), "this process's own list has none");
  assertEquals(
    (await assertRejects(() => loadModel(tiny, { ...split, requireDevice: "gpu" }), LoupeError)).code,
    "BACKEND_UNAVAILABLE",
  );
  {
    await using model = await loadModel(tiny, { ...split, requireDevice: "rpc" });
    const r = await model.generate("Hello", { maxTokens: 4, temperature: 0 });
    assertEquals(r.tokens.length, 4);
  } // closed: a server serves one client at a time
  // all layers on the second server: requiring the first is a placement error naming a stage
  await using one = await loadModel(tiny, { ...split, tensorSplit: [0, 1] });
  await assertRejects(() => one.generate("Hello", { maxTokens: 2, requireDevice: a.endpoint }), PlacementError);
  assertEquals((await one.generate("Hello", { maxTokens: 2, requireDevice: b.endpoint })).tokens.length, 2);
});

Deno.test("on the split, a session saved and loaded continues as the original; a context shift answers as on the CPU", async () => {
  await using model = await loadModel(tiny, split);
  await using cpu = await loadModel(tiny, { threads: THREADS, contextSize: 256, gpuLayers: 0 });
  const dir = await Deno.makeTempDir();
  try {
    await using s = await model.session({ contextSize: 256, contextShift: true });
    const first = await s.generate("Once upon a time", { maxTokens: 300, temperature: 0, ignoreEos: true });
    assert(first.shifts.length >= 1, "the context shifted");
    await using c = await cpu.session({ contextSize: 256, contextShift: true });
    assertEquals(
      first.tokens,
      (await c.generate("Once upon a time", { maxTokens: 300, temperature: 0, ignoreEos: true })).tokens,
    );
    const saved = s.tokens;
    await s.save(`${dir}/s.bin`);
    const next = await s.generate(" The end.", { maxTokens: 20, temperature: 0, ignoreEos: true });
    await using loaded = await model.loadSession(`${dir}/s.bin`);
    assertEquals(loaded.tokens, saved);
    assertEquals(
      (await loaded.generate(" The end.", { maxTokens: 20, temperature: 0, ignoreEos: true })).tokens,
      next.tokens,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a wrong port, a host that closes, a server that never answers: RPC_UNREACHABLE within the time limit", async () => {
  const refused = await assertRejects(() => loadModel(tiny, { rpc: [`127.0.0.1:${freePort()}`] }), LoupeError);
  assertEquals(refused.code, "RPC_UNREACHABLE");
  assert(refused.message.includes("cannot connect"), refused.message);
  // accepts, then closes at once
  const closer = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closing = (async () => {
    for await (const c of closer) c.close();
  })();
  // accepts and reads, never answers
  const mute = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const muting = (async () => {
    for await (const c of mute) held.push(c);
  })();
  try {
    const closed = await assertRejects(
      () => loadModel(tiny, { rpc: [`127.0.0.1:${(closer.addr as Deno.NetAddr).port}`] }),
      LoupeError,
    );
    assertEquals(closed.code, "RPC_UNREACHABLE");
    assert(closed.message.includes("closed the connection"), closed.message);
    const t0 = performance.now();
    const hung = await assertRejects(
      () => loadModel(tiny, { rpc: [`127.0.0.1:${(mute.addr as Deno.NetAddr).port}`] }),
      LoupeError,
    );
    const ms = performance.now() - t0;
    assertEquals(hung.code, "RPC_UNREACHABLE");
    assert(hung.message.includes("no answer to the handshake within 5000 ms"), hung.message);
    assert(ms < 8000, `it took ${ms.toFixed(0)} ms`);
  } finally {
    closer.close();
    mute.close();
    for (const c of held) c.close();
    await Promise.allSettled([closing, muting]);
  }
  assertEquals(
    (await assertRejects(() => loadModel(tiny, { rpc: both, isolate: false }), LoupeError)).code,
    "INVALID_ARGUMENT",
  );
  assertEquals((await assertRejects(() => loadModel(tiny, { rpc: ["nohost"] }), LoupeError)).code, "INVALID_ARGUMENT");
});

Deno.test("a server killed mid-generation: ENGINE_CRASHED with the engine's words; this process lives; the survivor serves a new load", async () => {
  const doomed = await startRpcServer();
  const survivor = await startRpcServer();
  try {
    const model = await loadModel(tiny, { ...split, rpc: [doomed.endpoint, survivor.endpoint] });
    let parts = 0;
    const e = await assertRejects(async () => {
      for await (const _ of model.stream("Once upon a time", { maxTokens: 5000, ignoreEos: true })) {
        if (++parts === 2) doomed.process.kill("SIGKILL");
      }
    }, LoupeError);
    assertEquals(e.code, "ENGINE_CRASHED");
    assertEquals(e.crash?.signal, "SIGABRT");
    assert(e.message.includes("Remote RPC server crashed or returned malformed response"), e.message);
    assert(model.crashed);
    await model.closeAsync();
    await using again = await loadModel(tiny, { threads: THREADS, contextSize: 256, rpc: [survivor.endpoint] });
    const r = await again.generate("Once upon a time", { maxTokens: 8, temperature: 0 });
    assertEquals(r.text, await referenceCompletion(tiny, "Once upon a time", 8));
  } finally {
    await doomed.stop();
    await survivor.stop();
  }
});

Deno.test({
  name: "rpc tests stop their servers",
  fn: async () => {
    await a.stop();
    await b.stop();
  },
});
