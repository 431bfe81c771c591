/**
 * ggml RPC servers (`deno task rpc-server`, llama.cpp's `rpc-server`) as devices of a model: the
 * endpoint checked here first (TCP connect and the protocol's HELLO, with a time limit), then
 * added to an isolated engine. The engine's own RPC client aborts its process on a server it
 * cannot reach, a failed handshake or a server that dies mid-call; the checks turn the first two
 * into `RPC_UNREACHABLE`, and isolation turns the rest into `ENGINE_CRASHED`.
 *
 * @module
 */
import { addRpcServer } from "../../ffi/library.ts";
import type { NativeApi } from "../../ffi/util.ts";
import { ensureRpc } from "../../native/build/engine.ts";
import { LoupeError } from "../util/errors.ts";
import { wrap } from "../util/native_error.ts";

/** The protocol version this engine's RPC client speaks (ggml-rpc.h, RPC_PROTO_*_VERSION). */
export const RPC_PROTOCOL = { major: 7, minor: 0 } as const;
/** How long a server may take to accept and answer the handshake (ms). */
export const RPC_HANDSHAKE_MS = 5000;

const RPC_CMD_HELLO = 14;
const CONN_CAPS = 24; // RPC_CONN_CAPS_SIZE

/** `host:port` split, or INVALID_ARGUMENT. */
export function parseEndpoint(endpoint: unknown, what: string): { hostname: string; port: number } {
  const m = typeof endpoint === "string" ? endpoint.match(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d{1,5})$/) : null;
  const port = m ? Number(m[2]) : 0;
  if (!m || port < 1 || port > 65535) {
    throw new LoupeError(
      "INVALID_ARGUMENT",
      `${what}: an RPC server is "host:port" (e.g. "127.0.0.1:50052"), not ${JSON.stringify(endpoint)}`,
    );
  }
  return { hostname: m[1].replace(/^\[|\]$/g, ""), port };
}

/** Reads exactly `n` bytes, or null when the peer closed first. */
async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array | null> {
  const out = new Uint8Array(n);
  for (let at = 0; at < n;) {
    const got = await conn.read(out.subarray(at));
    if (got === null) return null;
    at += got;
  }
  return out;
}

/**
 * Connects to the RPC server at `endpoint` and makes the protocol's HELLO, within `timeoutMs`;
 * returns the server's version. Throws `RPC_UNREACHABLE` naming what failed: the connection, a
 * server that closed or hung, or another protocol version.
 */
export async function probeRpcServer(
  endpoint: string,
  timeoutMs = RPC_HANDSHAKE_MS,
  what = "Cannot use RPC server",
): Promise<string> {
  const { hostname, port } = parseEndpoint(endpoint, what);
  const fail = (why: string, cause?: unknown) =>
    new LoupeError("RPC_UNREACHABLE", `${what} ${endpoint}: ${why}`, { cause });
  let conn: Deno.Conn | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      conn?.close();
      conn = null;
      reject(
        fail(
          `no answer to the handshake within ${timeoutMs} ms (a server serves one client at a time: is another connected?)`,
        ),
      );
    }, timeoutMs);
  });
  const hello = async () => {
    try {
      conn = await Deno.connect({ hostname, port });
    } catch (e) {
      throw fail(`cannot connect (${(e as Error).message})`, e);
    }
    const request = new Uint8Array(1 + 8 + CONN_CAPS);
    request[0] = RPC_CMD_HELLO;
    new DataView(request.buffer).setBigUint64(1, BigInt(CONN_CAPS), true);
    try {
      await conn.write(request);
      const size = await readExactly(conn, 8);
      if (!size) throw fail("it closed the connection during the handshake (is it an RPC server?)");
      const n = Number(new DataView(size.buffer).getBigUint64(0, true));
      if (n !== 4 + CONN_CAPS) {
        throw fail(`its handshake answer has ${n} bytes, not ${4 + CONN_CAPS}: not this protocol`);
      }
      const body = await readExactly(conn, n);
      if (!body) throw fail("it closed the connection during the handshake");
      const [major, minor, patch] = body;
      if (major !== RPC_PROTOCOL.major || minor > RPC_PROTOCOL.minor) {
        throw fail(
          `it speaks RPC protocol ${major}.${minor}.${patch}, this engine ${RPC_PROTOCOL.major}.${RPC_PROTOCOL.minor}: use the same llama.cpp release on both sides`,
        );
      }
      return `${major}.${minor}.${patch}`;
    } catch (e) {
      if (e instanceof LoupeError) throw e;
      throw fail(`the handshake failed (${(e as Error).message})`, e);
    }
  };
  try {
    return await Promise.race([hello(), timeout]);
  } finally {
    clearTimeout(timer);
    try {
      (conn as Deno.Conn | null)?.close();
    } catch { /* closed by the timeout */ }
  }
}

/**
 * Checks each server and adds its devices to the isolated engine behind `api`; returns the
 * devices' names per endpoint, in order. The RPC backend module is built on first use.
 */
export async function connectRpcServers(
  api: NativeApi,
  endpoints: string[],
  what: string,
): Promise<Map<string, string[]>> {
  for (const e of endpoints) await probeRpcServer(e, RPC_HANDSHAKE_MS, `${what}: RPC server`);
  const { backend } = await ensureRpc({ verbose: false });
  const out = new Map<string, string[]>();
  for (const e of endpoints) {
    try {
      out.set(e, await addRpcServer(api, backend, e));
    } catch (err) {
      const w = wrap(err, `${what}: RPC server ${e}`);
      throw w.code === "ENGINE_CRASHED"
        ? new LoupeError("RPC_UNREACHABLE", w.message, { cause: err, nativeMessage: w.nativeMessage, crash: w.crash })
        : w;
    }
  }
  return out;
}
