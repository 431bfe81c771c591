/**
 * A TCP relay that holds every chunk `delay` ms in each direction, in order: a stand-in for tc
 * netem (latency only) where the kernel has no sch_netem. Prints its port, then relays until
 * killed. It runs as a process of its own: loupe's isolated engine blocks the caller's thread
 * during synchronous calls, so a relay on that thread would stall the engine's own traffic.
 *
 * `deno run -A tests/bench/delay_relay.ts <target port> <one-way delay ms>`
 *
 * @module
 */
const [target, delayArg] = Deno.args.map(Number);
const delayMs = delayArg;
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log((listener.addr as Deno.NetAddr).port);

async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  let chain = Promise.resolve();
  const buf = new Uint8Array(1 << 20);
  try {
    while (true) {
      const n = await from.read(buf);
      if (n === null) break;
      const chunk = buf.slice(0, n);
      const due = performance.now() + delayMs;
      chain = chain.then(async () => {
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        for (let at = 0; at < chunk.length;) at += await to.write(chunk.subarray(at));
      });
    }
    await chain;
  } catch { /* a side closed */ }
  try {
    to.close();
  } catch { /* closed */ }
}

for await (const client of listener) {
  const upstream = await Deno.connect({ hostname: "127.0.0.1", port: target });
  client.setNoDelay(true);
  upstream.setNoDelay(true);
  void pump(client, upstream);
  void pump(upstream, client);
}
