// llama.cpp's own rpc-server (ggml-rpc-server, built by ensureRpc) on 127.0.0.1, for the RPC
// tests and benchmarks: started on a free port, waited for, killed.
import { ensureRpc } from "../../native/build/engine.ts";

/** A free TCP port on 127.0.0.1 (asked of the kernel, then released). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** One running rpc-server. */
export interface RpcServer {
  port: number;
  /** "127.0.0.1:<port>". */
  endpoint: string;
  process: Deno.ChildProcess;
  /** Kills it (SIGKILL) and waits for its exit. */
  stop(): Promise<void>;
}

/** Starts an rpc-server with `threads` CPU threads on a free port and waits until it accepts. */
export async function startRpcServer(threads = 1): Promise<RpcServer> {
  const rpc = await ensureRpc({ verbose: false });
  const port = freePort();
  const process = new Deno.Command(rpc.server, {
    args: ["-H", "127.0.0.1", "-p", String(port), "-t", String(threads)],
    cwd: rpc.dir,
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0;; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch (e) {
      if (i > 200) {
        process.kill("SIGKILL");
        throw e;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    port,
    endpoint: `127.0.0.1:${port}`,
    process,
    async stop() {
      try {
        process.kill("SIGKILL");
      } catch { /* ended */ }
      await process.status;
    },
  };
}
