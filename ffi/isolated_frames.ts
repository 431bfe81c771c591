/**
 * The frames between an isolated engine's broker and its worker process: a 4-byte little-endian
 * length, then a V8-serialized message.
 *
 * @module
 */
import { deserialize, serialize } from "node:v8";

/** One message as a frame. */
export function frame(message: unknown): Uint8Array<ArrayBuffer> {
  const body = serialize(message);
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length, true);
  out.set(body, 4);
  return out;
}

/** Reads frames from `stream` until it ends, handing each message to `on` in order. */
export async function readFrames<T>(stream: ReadableStream<Uint8Array>, on: (message: T) => void): Promise<void> {
  let pending = new Uint8Array(0);
  for await (const chunk of stream) {
    const joined = new Uint8Array(pending.length + chunk.length);
    joined.set(pending);
    joined.set(chunk, pending.length);
    let at = 0;
    while (joined.length - at >= 4) {
      const n = new DataView(joined.buffer, at).getUint32(0, true);
      if (joined.length - at - 4 < n) break;
      on(deserialize(joined.subarray(at + 4, at + 4 + n)) as T);
      at += 4 + n;
    }
    pending = joined.slice(at);
  }
}
