/**
 * The worker process of an isolated engine (see isolated.ts): it opens libloupe itself and makes
 * the calls its parent sends, so that an engine that aborts or segfaults ends this process only.
 *
 * Frames on stdin and stdout are a 4-byte little-endian length and a V8-serialized message:
 * `{id, sym, args}` in; `{id, result}` or `{id, error, status}` out, with `buffers` (the call's
 * typed-array arguments after the call, which the library may have written). Pointers travel as
 * `{$p: address}`; `$cstring` reads a C string here, where the pointer means something.
 *
 * Run as `deno run -A isolated_child.ts <libloupe> <engine dir>`.
 *
 * @module
 */
import { frame, readFrames } from "./isolated_frames.ts";
import { openLibrary } from "./library.ts";
import { symbols } from "./symbols.ts";
import type { NativeError } from "./util.ts";

type Wire = { $p: bigint } | null | number | bigint | boolean | string | ArrayBufferView;
type Symbols = Record<string, (...args: unknown[]) => unknown>;

const [library, engineDir] = Deno.args;
const out = Deno.stdout;

function send(message: unknown): void {
  const bytes = frame(message);
  for (let at = 0; at < bytes.length;) at += out.writeSync(bytes.subarray(at));
}

const toNative = (a: Wire): unknown =>
  a !== null && typeof a === "object" && "$p" in a ? Deno.UnsafePointer.create(a.$p) : a;
const toWire = (r: unknown): unknown =>
  r !== null && typeof r === "object" && !ArrayBuffer.isView(r)
    ? { $p: BigInt(Deno.UnsafePointer.value(r as Deno.PointerObject)) }
    : r;

function reply(id: number, args: unknown[], result: Promise<unknown> | unknown): void {
  const buffers = args.map((a) => ArrayBuffer.isView(a) ? a : null);
  Promise.resolve(result).then(
    (r) => send({ id, result: toWire(r), buffers }),
    (e) => send({ id, error: (e as Error)?.message ?? String(e), status: (e as NativeError).status ?? 0 }),
  );
}

let opened;
try {
  opened = openLibrary(library, engineDir);
} catch (e) {
  send({ id: 0, error: (e as Error).message, status: 0 });
  Deno.exit(3);
}
const api = { ...opened.api } as unknown as Symbols; // a copy: the test hook below may replace one

// Test-only: LOUPE_TEST_ENGINE_ABORT=<symbol> makes a call of that symbol end in the engine's own
// abort (ggml_abort, as a failed GGML_ASSERT does), to test what a caller sees when the engine dies.
const abortOn = Deno.env.get("LOUPE_TEST_ENGINE_ABORT");
if (abortOn && abortOn in api) {
  const ggml = Deno.dlopen(`${engineDir}/libggml-base.so`, {
    ggml_abort: { parameters: ["buffer", "i32", "buffer"], result: "void" },
  });
  const c = (s: string) => new TextEncoder().encode(s + "\0");
  api[abortOn] = () => ggml.symbols.ggml_abort(c("loupe-test"), 1, c(`GGML_ASSERT(${abortOn} test hook) failed`));
}
send({ id: 0, result: opened.backends, buffers: [] });

function call(id: number, sym: string, wire: Wire[]): void {
  const args = wire.map(toNative);
  if (sym === "$cstring") {
    reply(id, [], args[0] === null ? "" : Deno.UnsafePointerView.getCString(args[0] as Deno.PointerObject));
    return;
  }
  if (!(sym in symbols)) {
    reply(id, [], Promise.reject(new Error(`no symbol ${sym}`)));
    return;
  }
  try {
    reply(id, args, api[sym](...args)); // a nonblocking symbol's Promise settles later; the next frame is read meanwhile
  } catch (e) {
    reply(id, [], Promise.reject(e));
  }
}

// frames until the parent closes stdin, then exit
await readFrames<{ id: number; sym: string; args: Wire[] }>(Deno.stdin.readable, (m) => call(m.id, m.sym, m.args));
Deno.exit(0);
