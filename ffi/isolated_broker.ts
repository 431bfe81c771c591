/**
 * The thread between an isolated engine's caller and its worker process (see isolated.ts). It
 * starts the process, writes the calls to its stdin and reads the replies from its stdout. A
 * synchronous call's reply goes into the shared buffer the caller is waiting on (Atomics), an
 * asynchronous one's is posted. When the process dies, every call waiting and every later one
 * gets the crash: the exit signal or code and the last lines the process wrote to stderr.
 *
 * @module
 */
import { serialize } from "node:v8";
import { frame, readFrames } from "./isolated_frames.ts";

/** What the process's death reports. */
export interface CrashInfo {
  code: number | null;
  signal: string | null;
  stderr: string;
}

/** Messages from the caller. */
export type BrokerRequest =
  | { type: "start"; sab: SharedArrayBuffer; deno: string; child: string; library: string; engineDir: string }
  | { type: "call"; id: number; sym: string; args: unknown[]; sync: boolean }
  | { type: "stop" };

/** The worker's global scope (typed here: the package may not change the global types). */
const scope = globalThis as unknown as {
  postMessage(message: unknown): void;
  onmessage: ((event: MessageEvent<BrokerRequest>) => void) | null;
};

const STDERR_KEEP = 16 * 1024;

let sab: SharedArrayBuffer;
let child: Deno.ChildProcess | null = null;
let stdin: WritableStreamDefaultWriter<Uint8Array> | null = null;
let syncId = -1; // the synchronous call the caller is blocked on
let crash: CrashInfo | null = null;
let stopping = false;
let stderrTail = "";
const decoder = new TextDecoder();

/** Hands a synchronous reply to the blocked caller: [state, length] then the serialized reply. */
function wake(reply: unknown): void {
  const body = serialize(reply);
  if (sab.byteLength < 8 + body.length) sab.grow(Math.max(8 + body.length, sab.byteLength * 2));
  new Uint8Array(sab, 8, body.length).set(body);
  const head = new Int32Array(sab, 0, 2);
  head[1] = body.length;
  Atomics.store(head, 0, 1);
  Atomics.notify(head, 0);
}

function answer(message: { id: number }): void {
  if (message.id === syncId) {
    syncId = -1;
    wake(message);
  } else {
    scope.postMessage({ type: "reply", ...message });
  }
}

async function readStderr(stream: ReadableStream<Uint8Array>): Promise<void> {
  for await (const chunk of stream) {
    await Deno.stderr.write(chunk); // the engine's own messages reach the terminal as they would in-process
    stderrTail = (stderrTail + decoder.decode(chunk, { stream: true })).slice(-STDERR_KEEP);
  }
}

async function readReplies(stream: ReadableStream<Uint8Array>, onFirst: (m: Record<string, unknown>) => void) {
  let first = true;
  await readFrames<{ id: number } & Record<string, unknown>>(stream, (message) => {
    if (first) {
      first = false;
      onFirst(message);
    } else {
      answer(message);
    }
  });
}

async function start(request: Extract<BrokerRequest, { type: "start" }>): Promise<void> {
  sab = request.sab;
  const command = new Deno.Command(request.deno, {
    args: ["run", "-A", "--no-config", "--no-lock", request.child, request.library, request.engineDir],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  });
  const proc = command.spawn();
  child = proc;
  stdin = proc.stdin.getWriter();
  let started = false;
  const replies = readReplies(proc.stdout, (m) => {
    started = true;
    scope.postMessage(
      m.error ? { type: "failed", error: m.error } : { type: "started", pid: proc.pid, backends: m.result },
    );
  });
  const errors = readStderr(proc.stderr);
  const status = await proc.status;
  await Promise.allSettled([replies, errors]);
  child = null;
  if (stopping) {
    scope.postMessage({ type: "stopped" });
    return;
  }
  crash = { code: status.signal ? null : status.code, signal: status.signal, stderr: stderrTail };
  if (!started) scope.postMessage({ type: "failed", error: `the worker process exited before it started`, crash });
  scope.postMessage({ type: "exit", crash });
  if (syncId >= 0) answer({ id: syncId, crash } as { id: number });
}

async function call(request: Extract<BrokerRequest, { type: "call" }>): Promise<void> {
  if (request.sync) syncId = request.id;
  if (crash || !stdin) {
    answer({ id: request.id, crash: crash ?? { code: null, signal: null, stderr: "the worker is not running" } } as {
      id: number;
    });
    return;
  }
  try {
    await stdin.write(frame({ id: request.id, sym: request.sym, args: request.args }));
  } catch {
    // the process is gone: its exit answers this call
  }
}

scope.onmessage = (event: MessageEvent<BrokerRequest>) => {
  const request = event.data;
  if (request.type === "start") {
    start(request).catch((e) => scope.postMessage({ type: "failed", error: (e as Error).message }));
  } else if (request.type === "call") {
    void call(request);
  } else if (request.type === "stop") {
    stopping = true;
    if (child) stdin?.close().catch(() => {});
    else scope.postMessage({ type: "stopped" });
  }
};
