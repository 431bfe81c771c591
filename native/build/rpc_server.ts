/**
 * Starts ggml's RPC server (`ggml-rpc-server`, llama.cpp's tools/rpc) on this machine's engine,
 * building it first when it is missing (see `ensureRpc` in ./engine.ts): it offers this machine's
 * devices to a client that names it with `--rpc host:port` (llama.cpp's tools) or, later,
 * loupe's `rpc` option.
 *
 * `deno task rpc-server [--host 127.0.0.1] [--port 50052] [--device CPU|CUDA0|Vulkan0[,…]] [--threads N] [--cache]
 * [--engine=cpu|vulkan|cuda|cuda12|source]`
 *
 * - `--host`: the address to bind; 127.0.0.1 unless told otherwise.
 * - `--port`: the TCP port (default 50052).
 * - `--device`: the devices to offer, comma-separated, by the engine's names (default: every
 *   accelerator, else the CPU). Give `CPU` for the CPU on a machine with a GPU.
 * - `--threads`: CPU threads for the CPU device (the server's default: half the cores).
 * - `--cache`: keep tensors sent by clients in a local file cache (`$LLAMA_CACHE/rpc`, else
 *   `$XDG_CACHE_HOME/llama.cpp/rpc` or `~/.cache/llama.cpp/rpc`), so that reloading a model does
 *   not send its weights again.
 * - `--engine`: the engine variant (default: `LOUPE_ENGINE`, else detected, as for libloupe).
 *
 * ggml's RPC protocol has no authentication and no encryption: whoever reaches the port can
 * read and write the server's memory buffers. Never expose it to an open network; to span
 * machines, use an SSH tunnel or a private network. The server runs until it is interrupted.
 *
 * @module
 */
import { ensureRpc } from "./engine.ts";
import type { EngineVariant } from "./pins.ts";

const USAGE = "usage: deno task rpc-server [--host 127.0.0.1] [--port 50052] [--device CPU|CUDA0|Vulkan0[,...]] " +
  "[--threads N] [--cache] [--engine=cpu|vulkan|cuda|cuda12|source]";

/** The warning printed before the server starts (the engine's own, and how to span machines safely). */
export const RPC_WARNING =
  "ggml's RPC protocol is unauthenticated and unencrypted, and the RPC server is experimental " +
  "and not secure: never expose it to an open network. To span machines, bind 127.0.0.1 and use an SSH tunnel " +
  "(ssh -N -L 50052:127.0.0.1:50052 host), or a private network.";

/** What `deno task rpc-server` was asked for. */
export interface RpcServerArgs {
  /** Address to bind (default 127.0.0.1). */
  host: string;
  /** TCP port (default 50052). */
  port: number;
  /** Devices to offer, by the engine's names; empty for the server's default. */
  devices: string[];
  /** CPU threads, or null for the server's default. */
  threads: number | null;
  /** Whether to keep a local file cache of tensors. */
  cache: boolean;
  /** Engine variant, or undefined for the detected one. */
  engine?: EngineVariant;
}

/** Parses the task's arguments (`--flag value` or `--flag=value`); throws with the usage on an error. */
export function parseRpcServerArgs(args: string[]): RpcServerArgs {
  const out: RpcServerArgs = { host: "127.0.0.1", port: 50052, devices: [], threads: null, cache: false };
  const bad = (why: string): never => {
    throw new Error(`${why}\n${USAGE}`);
  };
  for (let i = 0; i < args.length; i++) {
    const eq = args[i].indexOf("=");
    const flag = eq >= 0 ? args[i].slice(0, eq) : args[i];
    const value = () => {
      if (eq >= 0) return args[i].slice(eq + 1);
      if (i + 1 >= args.length) bad(`${flag} needs a value`);
      return args[++i];
    };
    switch (flag) {
      case "--host":
      case "-H": {
        out.host = value();
        if (!out.host) bad("--host is empty");
        break;
      }
      case "--port":
      case "-p": {
        const v = value();
        out.port = Number(v);
        if (!/^\d+$/.test(v) || out.port < 1 || out.port > 65535) bad(`--port must be 1 to 65535, not "${v}"`);
        break;
      }
      case "--device":
      case "-d": {
        out.devices = value().split(",").map((d) => d.trim()).filter((d) => d);
        if (!out.devices.length) bad("--device names no device");
        break;
      }
      case "--threads":
      case "-t": {
        const v = value();
        out.threads = Number(v);
        if (!/^\d+$/.test(v) || out.threads < 1) bad(`--threads must be a positive integer, not "${v}"`);
        break;
      }
      case "--cache":
      case "-c":
        if (eq >= 0) bad("--cache takes no value");
        out.cache = true;
        break;
      case "--engine": {
        const v = value();
        if (!["cpu", "vulkan", "cuda", "cuda12", "source"].includes(v)) bad(`unknown engine "${v}"`);
        out.engine = v as EngineVariant;
        break;
      }
      default:
        bad(`unknown argument "${args[i]}"`);
    }
  }
  return out;
}

/** The server's own command line for the parsed arguments (its flags have the same long names). */
export function rpcServerCommandLine(a: RpcServerArgs): string[] {
  const line = ["--host", a.host, "--port", String(a.port)];
  if (a.devices.length) line.push("--device", a.devices.join(","));
  if (a.threads !== null) line.push("--threads", String(a.threads));
  if (a.cache) line.push("--cache");
  return line;
}

if (import.meta.main) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(USAGE);
    Deno.exit(0);
  }
  let args: RpcServerArgs;
  try {
    args = parseRpcServerArgs(Deno.args);
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(2);
  }
  const rpc = await ensureRpc({ variant: args.engine });
  console.error(`loupe: WARNING: ${RPC_WARNING}`);
  console.error(`loupe: starting ${rpc.server} (${rpc.variant} engine) on ${args.host}:${args.port}`);
  const child = new Deno.Command(rpc.server, {
    args: rpcServerCommandLine(args),
    // Its own directory, where it finds its backends, also as the working directory (which
    // ggml_backend_load_all searches too).
    cwd: rpc.dir,
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    Deno.addSignalListener(sig, () => {
      try {
        child.kill(sig);
      } catch { /* already gone */ }
    });
  }
  const status = await child.status;
  // Killed by a signal: the shell's convention, 128 plus its number.
  const signals: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGSEGV: 11, SIGTERM: 15, SIGABRT: 6 };
  Deno.exit(status.signal ? 128 + (signals[status.signal] ?? 0) : status.code);
}
