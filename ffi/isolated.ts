/**
 * An isolated engine: libloupe opened in a worker process of its own, behind an object with the
 * same functions as the in-process library (`NativeApi`). Every handle wrapper works on it
 * unchanged; when the engine aborts, segfaults or is killed, the process ends, not the caller.
 *
 * How a call travels: the caller posts it to a broker thread (isolated_broker.ts), which writes it
 * to the process (isolated_child.ts) and reads the reply. A `nonblocking` symbol returns a
 * Promise, as in-process; any other blocks the caller on a shared buffer (Atomics.wait) until the
 * reply is there, so the handle wrappers' synchronous calls stay synchronous. Pointers are the
 * worker's addresses, never read here: C strings are read by the worker (`$cstring`). Typed
 * arrays are copied there and back, so output buffers are filled as in-process.
 *
 * Once the process has died, every call throws {@linkcode EngineCrash} (the signal or exit code
 * and its last stderr), except the `void` ones (frees, cancels), which then do nothing.
 *
 * @module
 */
import { deserialize } from "node:v8";
import type { BackendReport } from "./library.ts";
import type { BrokerRequest, CrashInfo } from "./isolated_broker.ts";
import { symbols } from "./symbols.ts";
import { type NativeApi, NativeError, setCStringReader } from "./util.ts";

/** The status of a call whose worker process died (not a loupe.h status: the library never returns it). */
export const CRASHED = -100;

/** A call on an isolated engine whose worker process died. */
export class EngineCrash extends NativeError {
  /** The signal that ended the process (e.g. "SIGABRT", "SIGKILL"), or null when it exited. */
  readonly signal: string | null;
  /** The exit code when it exited without a signal. */
  readonly exitCode: number | null;
  /** The last lines it wrote to stderr (the engine's assertion text, for one). */
  readonly stderr: string;
  constructor(info: CrashInfo) {
    const tail = crashLines(info.stderr);
    super(
      CRASHED,
      `the engine's worker process died (${info.signal ? `signal ${info.signal}` : `exit code ${info.code}`})${
        tail ? `: ${tail}` : ""
      }`,
    );
    this.name = "EngineCrash";
    this.signal = info.signal;
    this.exitCode = info.code;
    this.stderr = info.stderr;
  }
}

/**
 * What says why, from a dying process's stderr: the engine's `file:line: message` (how ggml_abort
 * and GGML_ASSERT print) or the last line naming an error, else the last lines; not the
 * debugger's backtrace that follows.
 */
function crashLines(stderr: string): string {
  const lines = stderr.split("\n").map((l) => l.trimEnd()).filter((l) => l !== "");
  const engine = lines.findLast((l) => /^\S+:\d+: \S/.test(l));
  return engine ?? lines.findLast((l) => /error|fail|abort|terminate|fault/i.test(l)) ?? lines.slice(-3).join("\n");
}

function lastLines(text: string, n: number): string {
  return text.trimEnd().split("\n").filter((l) => l.trim() !== "").slice(-n).join("\n");
}

/** One isolated engine; close() ends its process. */
export interface IsolatedEngine {
  /** The library's functions, made in the worker process. */
  api: NativeApi;
  /** What the worker's loupe_init reported. */
  backends: BackendReport[];
  /** The worker's process id. */
  pid: number;
  /** The crash, once the process died of something other than close(). */
  readonly crash: EngineCrash | null;
  /** Settles when the process has exited, closed or crashed. */
  readonly exited: Promise<void>;
  /** Ends the process (its handles are then gone) and waits for it. Idempotent. */
  close(): Promise<void>;
}

type Reply = { id: number; result?: unknown; error?: string; status?: number; buffers?: unknown[]; crash?: CrashInfo };

const toWire = (a: unknown): unknown =>
  a !== null && typeof a === "object" && !ArrayBuffer.isView(a)
    ? { $p: BigInt(Deno.UnsafePointer.value(a as Deno.PointerObject)) }
    : a;

const fromWire = (r: unknown): unknown =>
  r !== null && typeof r === "object" && "$p" in (r as object)
    ? Deno.UnsafePointer.create((r as { $p: bigint }).$p)
    : r;

/** Copies the worker's view of each typed-array argument back into the caller's. */
function copyBack(args: unknown[], buffers: unknown[] | undefined): void {
  buffers?.forEach((b, i) => {
    const to = args[i];
    if (!b || !ArrayBuffer.isView(to) || !ArrayBuffer.isView(b)) return;
    new Uint8Array(to.buffer, to.byteOffset, to.byteLength).set(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
  });
}

/**
 * Starts a worker process with libloupe at `library` and the engine in `engineDir`, and waits
 * until its loupe_init has run. Throws an Error naming why it could not start.
 */
export async function openIsolated(library: string, engineDir: string): Promise<IsolatedEngine> {
  const broker = new Worker(new URL("./isolated_broker.ts", import.meta.url), { type: "module" });
  const sab = new SharedArrayBuffer(64 * 1024, { maxByteLength: 1 << 30 });
  const head = new Int32Array(sab, 0, 2);
  let nextId = 1;
  let crash: EngineCrash | null = null;
  let closed = false;
  const waiting = new Map<number, { resolve: (r: Reply) => void }>();
  let markExited: () => void;
  const exited = new Promise<void>((r) => markExited = r);
  let markStarted: (m: { pid: number; backends: BackendReport[] }) => void;
  let markFailed: (e: Error) => void;
  const started = new Promise<{ pid: number; backends: BackendReport[] }>((resolve, reject) => {
    markStarted = resolve;
    markFailed = reject;
  });

  broker.onmessage = (event: MessageEvent) => {
    const m = event.data;
    if (m.type === "reply") {
      const w = waiting.get(m.id);
      waiting.delete(m.id);
      w?.resolve(m);
    } else if (m.type === "started") {
      markStarted(m);
    } else if (m.type === "failed") {
      markFailed(
        new Error(
          `the engine's worker process did not start: ${m.error}${m.crash ? `; ${lastLines(m.crash.stderr, 6)}` : ""}`,
        ),
      );
    } else if (m.type === "exit") {
      crash ??= new EngineCrash(m.crash);
      for (const [id, w] of waiting) w.resolve({ id, crash: m.crash });
      waiting.clear();
      markExited();
    } else if (m.type === "stopped") {
      markExited();
    }
  };
  const post = (r: BrokerRequest) => broker.postMessage(r);
  post({
    type: "start",
    sab,
    deno: Deno.execPath(),
    child: new URL("./isolated_child.ts", import.meta.url).href,
    library,
    engineDir,
  });
  let info;
  try {
    info = await started;
  } catch (e) {
    broker.terminate();
    throw e;
  }
  exited.then(() => broker.terminate());

  const settle = (args: unknown[], reply: Reply): unknown => {
    if (reply.crash) {
      crash ??= new EngineCrash(reply.crash);
      throw crash;
    }
    if (reply.error !== undefined) throw new NativeError(reply.status ?? 0, reply.error);
    copyBack(args, reply.buffers);
    return fromWire(reply.result);
  };
  const dead = (isVoid: boolean): boolean => {
    if (!crash && !closed) return false;
    if (isVoid) return true;
    throw crash ?? new NativeError(-6, "the isolated engine was closed");
  };
  const callSync = (sym: string, args: unknown[], isVoid = false): unknown => {
    if (dead(isVoid)) return undefined;
    const id = nextId++;
    Atomics.store(head, 0, 0);
    post({ type: "call", id, sym, args: args.map(toWire), sync: true });
    Atomics.wait(head, 0, 0);
    const reply = deserialize(new Uint8Array(sab, 8, head[1])) as Reply;
    return settle(args, reply);
  };
  const callAsync = async (sym: string, args: unknown[]): Promise<unknown> => {
    dead(false);
    const id = nextId++;
    const reply = new Promise<Reply>((resolve) => waiting.set(id, { resolve }));
    post({ type: "call", id, sym, args: args.map(toWire), sync: false });
    return settle(args, await reply);
  };

  const api: Record<string, unknown> = {};
  for (const [name, def] of Object.entries(symbols) as [string, { result: string; nonblocking?: boolean }][]) {
    api[name] = def.nonblocking
      ? (...args: unknown[]) => callAsync(name, args)
      : (...args: unknown[]) => callSync(name, args, def.result === "void");
  }
  const native = api as unknown as NativeApi;
  setCStringReader(native, (ptr) => callSync("$cstring", [ptr]) as string);
  return {
    api: native,
    backends: info.backends,
    pid: info.pid,
    get crash() {
      return crash;
    },
    exited,
    close() {
      if (!closed) {
        closed = true;
        post({ type: "stop" });
      }
      return exited;
    },
  };
}
