/**
 * Publishing to the notebook from inside the `deno jupyter` kernel, with delivery confirmed.
 *
 * Deno's kernel (2.9) publishes what user code displays (display_data, execute_result, stream)
 * from a queue that runs beside the code that sends the cell's closing `status: idle`, so a
 * large output often reaches the front end *after* the cell has ended, and front ends (nbclient,
 * JupyterLab) drop what comes after idle: a 5 MB plot was lost about half the time, a 20 KB
 * one about one time in twenty. loupe therefore publishes rich outputs as `display_data` and
 * waits until it sees them on the kernel's own iopub channel (a small ZMTP subscriber connected
 * like any front end; the kernel sends to subscribers in the order they connected, so the
 * front end has its copy first) before the cell may end.
 *
 * Nothing here runs outside the kernel: {@linkcode kernelApi} is null in plain scripts.
 *
 * @module
 */

/** What loupe uses of `Deno.jupyter`. */
export interface KernelApi {
  /** Sends a message on the iopub channel (display_data, update_display_data, …). */
  broadcast(
    msgType: string,
    content: Record<string, unknown>,
    extra?: { metadata?: Record<string, unknown>; buffers?: Uint8Array[] },
  ): Promise<void>;
}

/** `Deno.jupyter` inside the `deno jupyter` kernel; null in plain scripts (where touching it throws). */
export function kernelApi(): KernelApi | null {
  try {
    const j = (Deno as unknown as { jupyter?: KernelApi }).jupyter;
    return j && typeof j.broadcast === "function" ? j : null;
  } catch {
    return null;
  }
}

/** Environment variables Google Colab's runtime sets (and passes on to the kernels it starts). */
export const COLAB_ENV_MARKERS = ["COLAB_RELEASE_TAG", "COLAB_BACKEND_VERSION", "COLAB_GPU"] as const;

function envGet(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no env permission
  }
}

/**
 * Whether this process runs in a Google Colab runtime: one of {@linkcode COLAB_ENV_MARKERS} is
 * set (Colab's Jupyter server has them, and so do the kernels it starts, the Deno kernel behind
 * notebooks/colab/deno_kernel_bridge.py included). Colab shows each output in its own iframe.
 */
export function isColab(getEnv: (name: string) => string | undefined = envGet): boolean {
  return COLAB_ENV_MARKERS.some((name) => getEnv(name) !== undefined);
}

/** The kernel's connection file, from its command line (`deno jupyter --kernel --conn FILE`). */
export async function kernelConnection(): Promise<Record<string, unknown> | null> {
  try {
    const args = (await Deno.readTextFile("/proc/self/cmdline")).split("\0");
    const i = args.indexOf("--conn");
    if (i < 0 || !args[i + 1]) return null;
    return JSON.parse(await Deno.readTextFile(args[i + 1]));
  } catch {
    return null;
  }
}

const enc = new TextEncoder();

function frame(body: Uint8Array, command = false): Uint8Array {
  const long = body.length > 255;
  const head = long ? 9 : 2;
  const out = new Uint8Array(head + body.length);
  out[0] = (long ? 0x02 : 0) | (command ? 0x04 : 0);
  if (long) new DataView(out.buffer).setBigUint64(1, BigInt(body.length));
  else out[1] = body.length;
  out.set(body, head);
  return out;
}

function readyCommand(socketType: string): Uint8Array {
  const name = enc.encode("READY");
  const key = enc.encode("Socket-Type");
  const value = enc.encode(socketType);
  const body = new Uint8Array(1 + name.length + 1 + key.length + 4 + value.length);
  let o = 0;
  body[o++] = name.length;
  body.set(name, o);
  o += name.length;
  body[o++] = key.length;
  body.set(key, o);
  o += key.length;
  new DataView(body.buffer).setUint32(o, value.length);
  body.set(value, o + 4);
  return frame(body, true);
}

function greeting(): Uint8Array {
  const g = new Uint8Array(64);
  g[0] = 0xff;
  g[9] = 0x7f;
  g[10] = 3; // ZMTP 3.0
  g.set(enc.encode("NULL"), 12);
  return g;
}

/** Reads ZMTP frames from a connection, buffering partial reads. */
class FrameReader {
  #conn: Deno.Conn;
  #buf = new Uint8Array(0);
  #start = 0;
  #end = 0;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  async #fill(n: number): Promise<void> {
    while (this.#end - this.#start < n) {
      if (this.#buf.length - this.#start < n || this.#end === this.#buf.length) {
        const next = new Uint8Array(Math.max(n, 65536, (this.#end - this.#start) * 2));
        next.set(this.#buf.subarray(this.#start, this.#end));
        this.#end -= this.#start;
        this.#start = 0;
        this.#buf = next;
      }
      const got = await this.#conn.read(this.#buf.subarray(this.#end));
      if (got === null) throw new Error("connection closed");
      this.#end += got;
    }
  }

  async bytes(n: number): Promise<Uint8Array> {
    await this.#fill(n);
    const out = this.#buf.slice(this.#start, this.#start + n);
    this.#start += n;
    return out;
  }

  /** One frame: its body, whether more frames follow, and whether it is a command. */
  async frame(): Promise<{ body: Uint8Array; more: boolean; command: boolean }> {
    const [flags] = await this.bytes(1);
    const long = (flags & 0x02) !== 0;
    const sizeBytes = await this.bytes(long ? 8 : 1);
    const size = long ? Number(new DataView(sizeBytes.buffer).getBigUint64(0)) : sizeBytes[0];
    return { body: await this.bytes(size), more: (flags & 0x01) !== 0, command: (flags & 0x04) !== 0 };
  }
}

const DELIM = "<IDS|MSG>";
const dec = new TextDecoder();

/**
 * A subscriber to the kernel's own iopub channel that tells when a message carrying a marker
 * in its metadata has been published. One per kernel process, connected on first use.
 */
export class IopubWatcher {
  #waiters = new Map<string, (seen: boolean) => void>();
  #seen = new Set<string>();
  #alive = true;

  private constructor(conn: Deno.Conn) {
    this.#read(new FrameReader(conn)).catch(() => {}).finally(() => {
      this.#alive = false;
      for (const wake of this.#waiters.values()) wake(false);
      try {
        conn.close();
      } catch { /* already closed */ }
    });
  }

  /** Whether the connection still works. */
  get alive(): boolean {
    return this.#alive;
  }

  static #instance: Promise<IopubWatcher | null> | null = null;

  /** The watcher of this kernel, or null outside the kernel or when it cannot connect. */
  static get(api: KernelApi | null = kernelApi()): Promise<IopubWatcher | null> {
    if (!api) return Promise.resolve(null);
    if (!IopubWatcher.#instance) {
      IopubWatcher.#instance = IopubWatcher.#open(api).catch(() => null).then((w) => {
        if (!w) IopubWatcher.#instance = null; // try again next time
        return w;
      });
    }
    return IopubWatcher.#instance.then((w) => (w?.alive ? w : (IopubWatcher.#instance = null)));
  }

  static async #open(api: KernelApi): Promise<IopubWatcher | null> {
    const info = await kernelConnection();
    const port = Number(info?.iopub_port);
    if (!info || !port) return null;
    const conn = info.transport === "ipc"
      ? await Deno.connect({ transport: "unix", path: `${info.ip}-${port}` })
      : await Deno.connect({ hostname: String(info.ip ?? "127.0.0.1"), port });
    const reader = new FrameReader(conn);
    try {
      await conn.write(greeting());
      await reader.bytes(64);
      await conn.write(readyCommand("SUB"));
      const ready = await reader.frame();
      if (!ready.command) throw new Error("the kernel's iopub did not send READY");
      await conn.write(frame(new Uint8Array([1]))); // subscribe to everything
    } catch (e) {
      conn.close();
      throw e;
    }
    const watcher = new IopubWatcher(conn);
    // The kernel takes a subscriber on only after reading its subscription: probe until a
    // harmless message (another "busy" status) comes back.
    for (let i = 0; i < 20 && watcher.alive; i++) {
      const marker = `loupe-probe-${crypto.randomUUID()}`;
      await api.broadcast("status", { execution_state: "busy" }, { metadata: { loupe_marker: marker } });
      if (await watcher.waitFor(marker, 250)) return watcher;
    }
    conn.close();
    return null;
  }

  async #read(reader: FrameReader): Promise<void> {
    while (true) {
      const frames: Uint8Array[] = [];
      while (true) {
        const f = await reader.frame();
        if (f.command) break; // e.g. a PING: not part of a message
        frames.push(f.body);
        if (!f.more) break;
      }
      const d = frames.findIndex((f) => f.length === DELIM.length && dec.decode(f) === DELIM);
      if (d < 0 || !frames[d + 4]) continue;
      // Only the (small) metadata frame is decoded; a marker is in it when loupe sent the message.
      const meta = frames[d + 4];
      if (meta.length > 4096) continue;
      const marker = dec.decode(meta).match(/"loupe_marker":"([^"]+)"/)?.[1];
      if (!marker) continue;
      const wake = this.#waiters.get(marker);
      if (wake) wake(true);
      else {
        this.#seen.add(marker);
        if (this.#seen.size > 1000) this.#seen.clear();
      }
    }
  }

  /** Waits until a message with this marker has been published; false on timeout or a dead connection. */
  waitFor(marker: string, timeoutMs: number): Promise<boolean> {
    if (this.#seen.delete(marker)) return Promise.resolve(true);
    if (!this.#alive) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(marker);
        resolve(false);
      }, timeoutMs);
      this.#waiters.set(marker, (seen) => {
        clearTimeout(timer);
        this.#waiters.delete(marker);
        resolve(seen);
      });
    });
  }
}

/**
 * Publishes an iopub message from inside the kernel; with `confirm`, waits until it has gone
 * out (at most `timeoutMs`, default 30 s). Returns whether delivery was confirmed.
 */
export async function publish(
  api: KernelApi,
  msgType: string,
  content: Record<string, unknown>,
  options: { confirm?: boolean; timeoutMs?: number } = {},
): Promise<boolean> {
  const watcher = options.confirm ? await IopubWatcher.get(api) : null;
  const marker = `loupe-${crypto.randomUUID()}`;
  await api.broadcast(msgType, content, { metadata: { loupe_marker: marker } });
  if (!watcher) return false;
  return await watcher.waitFor(marker, options.timeoutMs ?? 30_000);
}
