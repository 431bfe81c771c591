import {
  decodeFloatTensor,
  f16BitsToF32,
  f32ArrayToF16,
  f32ToF16Bits,
  GGMLType,
  ggmlTypeInfo,
  GGUFFormatError,
  type GGUFValue,
  GGUFValueType,
  GGUFWriter,
  readGGUF,
  readGGUFFile,
  readGGUFFileSync,
  tensorByteSize,
  tensorData,
} from "../../src/gguf/gguf.ts";
import { ensureSource } from "../../native/build/engine.ts";

// ---------------------------------------------------------------------------
// Helpers

const SRC_DIR = await ensureSource(false);
const VOCAB_DIR = `${SRC_DIR}/models`;

function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new Error(msg);
}

function assertEquals(actual: unknown, expected: unknown, msg?: string) {
  if (!deepEqual(actual, expected)) {
    throw new Error(
      `${msg ?? "values differ"}\n  actual:   ${show(actual)}\n  expected: ${show(expected)}`,
    );
  }
}

function show(v: unknown): string {
  return Deno.inspect(v, { depth: 4, iterableLimit: 20, strAbbreviateSize: 80 });
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== typeof b || a === null || b === null) return false;
  if (typeof a !== "object") return false;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  if (a instanceof Map && b instanceof Map) {
    if (a.size !== b.size) return false;
    const ka = [...a.keys()], kb = [...b.keys()];
    return deepEqual(ka, kb) &&
      ka.every((k) => deepEqual(a.get(k), b.get(k)));
  }
  if (ArrayBuffer.isView(a) && ArrayBuffer.isView(b)) {
    const x = a as unknown as ArrayLike<unknown>;
    const y = b as unknown as ArrayLike<unknown>;
    if (x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (!Object.is(x[i], y[i])) return false;
    return true;
  }
  const ka = Object.keys(a as object), kb = Object.keys(b as object);
  if (ka.length !== kb.length) return false;
  return ka.every((k) =>
    deepEqual(
      (a as Record<string, unknown>)[k],
      (b as Record<string, unknown>)[k],
    )
  );
}

/** Asserts `fn` throws a GGUFFormatError whose message matches `re`. */
function assertFormatError(fn: () => unknown, re: RegExp): GGUFFormatError {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof GGUFFormatError)) {
      throw new Error(`expected GGUFFormatError, got ${show(e)}`);
    }
    assert(
      /^[A-Z][^:]*: \S/.test(e.message),
      `message not in "Sentence case: detail" form: ${e.message}`,
    );
    assert(re.test(e.message), `message ${show(e.message)} does not match ${re}`);
    return e;
  }
  throw new Error(`expected GGUFFormatError matching ${re}, nothing thrown`);
}

/** Little-endian byte builder for hand-crafted (possibly invalid) files. */
class Raw {
  parts: number[] = [];
  u8(v: number) {
    this.parts.push(v & 0xff);
    return this;
  }
  u32(v: number) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, true);
    this.parts.push(...b);
    return this;
  }
  u64(v: bigint | number) {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(v)), true);
    this.parts.push(...b);
    return this;
  }
  bytes(b: ArrayLike<number>) {
    this.parts.push(...Array.from(b));
    return this;
  }
  str(s: string) {
    const b = new TextEncoder().encode(s);
    return this.u64(b.length).bytes(b);
  }
  header(nTensors: bigint | number, nKv: bigint | number, version = 3) {
    return this.bytes([0x47, 0x47, 0x55, 0x46]).u32(version).u64(nTensors).u64(
      nKv,
    );
  }
  /** A scalar u32 kv. */
  kvU32(key: string, v: number) {
    return this.str(key).u32(GGUFValueType.UINT32).u32(v);
  }
  tensor(name: string, dims: (number | bigint)[], type: number, offset: number | bigint) {
    this.str(name).u32(dims.length);
    for (const d of dims) this.u64(d);
    return this.u32(type).u64(offset);
  }
  padTo(alignment: number) {
    while (this.parts.length % alignment !== 0) this.parts.push(0);
    return this;
  }
  zeros(n: number) {
    for (let i = 0; i < n; i++) this.parts.push(0);
    return this;
  }
  get length() {
    return this.parts.length;
  }
  build() {
    return new Uint8Array(this.parts);
  }
}

/** One value of every type, scalars and arrays. */
function everyValue(): [string, GGUFValue][] {
  return [
    ["t.u8", { type: 0, value: 255 }],
    ["t.i8", { type: 1, value: -128 }],
    ["t.u16", { type: 2, value: 65535 }],
    ["t.i16", { type: 3, value: -32768 }],
    ["t.u32", { type: 4, value: 0xffffffff }],
    ["t.i32", { type: 5, value: -0x80000000 }],
    ["t.f32", { type: 6, value: Math.fround(3.14159) }],
    ["t.bool.true", { type: 7, value: true }],
    ["t.bool.false", { type: 7, value: false }],
    ["t.str", { type: 8, value: "héllo, wörld ✓ 🦕" }],
    ["t.str.empty", { type: 8, value: "" }],
    ["t.u64", { type: 10, value: 0xffffffffffffffffn }],
    ["t.i64", { type: 11, value: -0x8000000000000000n }],
    ["t.f64", { type: 12, value: Math.PI }],
    ["a.u8", { type: 9, itemType: 0, value: new Uint8Array([0, 1, 255]) }],
    ["a.i8", { type: 9, itemType: 1, value: new Int8Array([-128, 0, 127]) }],
    ["a.u16", { type: 9, itemType: 2, value: new Uint16Array([0, 65535]) }],
    ["a.i16", { type: 9, itemType: 3, value: new Int16Array([-32768, 7]) }],
    ["a.u32", {
      type: 9,
      itemType: 4,
      value: new Uint32Array([0, 0xffffffff]),
    }],
    ["a.i32", {
      type: 9,
      itemType: 5,
      value: new Int32Array([-1, 2, -0x80000000]),
    }],
    ["a.f32", {
      type: 9,
      itemType: 6,
      value: new Float32Array([0.5, -0, Infinity, -1e-30]),
    }],
    ["a.bool", { type: 9, itemType: 7, value: [true, false, true] }],
    ["a.str", { type: 9, itemType: 8, value: ["a", "", "ünï", "<0x0A>"] }],
    ["a.u64", {
      type: 9,
      itemType: 10,
      value: new BigUint64Array([0n, 0xffffffffffffffffn]),
    }],
    ["a.i64", {
      type: 9,
      itemType: 11,
      value: new BigInt64Array([-1n, 0x7fffffffffffffffn]),
    }],
    ["a.f64", {
      type: 9,
      itemType: 12,
      value: new Float64Array([Math.E, -0, NaN]),
    }],
    ["a.empty.str", { type: 9, itemType: 8, value: [] }],
    ["a.empty.i32", { type: 9, itemType: 5, value: new Int32Array(0) }],
  ];
}

function sampleWriter(alignment?: number): GGUFWriter {
  const w = new GGUFWriter(alignment ? { alignment } : {});
  for (const [k, v] of everyValue()) w.addKV(k, v);
  w.addTensor(
    "f32.weight",
    [3, 2],
    GGMLType.F32,
    new Float32Array([1, 2, 3, 4, 5, -6]),
  );
  w.addTensor(
    "f16.weight",
    [5],
    GGMLType.F16,
    () => new Float32Array([0.5, -2, 65504, 1e-5, 1 / 3]),
  );
  const q = new Uint8Array(34 * 2);
  q.forEach((_, i) => (q[i] = i));
  w.addTensor("q8.weight", [32, 1, 2], GGMLType.Q8_0, q);
  return w;
}

// ---------------------------------------------------------------------------
// Round trips

Deno.test("gguf: every value type round-trips with its type", () => {
  const bytes = sampleWriter().toBytes();
  const file = readGGUF(bytes);
  assertEquals(file.version, 3);
  assertEquals(file.alignment, 32);
  assertEquals(file.kv, new Map(everyValue()));
  assertEquals(
    file.tensors.map((t) => [t.name, t.dims, t.type, t.offset, t.size]),
    [
      ["f32.weight", [3, 2], GGMLType.F32, 0, 24],
      ["f16.weight", [5], GGMLType.F16, 32, 10],
      ["q8.weight", [32, 1, 2], GGMLType.Q8_0, 64, 68],
    ],
  );
  assertEquals(file.dataOffset % 32, 0);
  assertEquals(
    decodeFloatTensor(tensorData(bytes, file, "f32.weight"), GGMLType.F32),
    new Float32Array([1, 2, 3, 4, 5, -6]),
  );
  assertEquals(
    decodeFloatTensor(tensorData(bytes, file, "f16.weight"), GGMLType.F16),
    new Float32Array([0.5, -2, 65504, f16BitsToF32(0x00a8), 0.333251953125]),
  );
  const q = tensorData(bytes, file, "q8.weight");
  assertEquals(q[0], 0);
  assertEquals(q[67], 67);
  // The last tensor is padded too.
  assertEquals(bytes.length, file.dataOffset + 64 + 96);
});

Deno.test("gguf: typed helper methods produce the same file as addKV", () => {
  const a = new GGUFWriter()
    .addUint8("a", 1).addInt8("b", -1).addUint16("c", 2).addInt16("d", -2)
    .addUint32("e", 3).addInt32("f", -3).addUint64("g", 4).addInt64("h", -4n)
    .addFloat32("i", 0.1).addFloat64("j", 0.1).addBool("k", true)
    .addString("l", "x")
    .addArray("m", GGUFValueType.INT32, [1, -2, 3])
    .addArray("n", GGUFValueType.STRING, ["p", "q"])
    .addArray("o", GGUFValueType.FLOAT32, [0.25])
    .addArray("p", GGUFValueType.UINT64, [1n, 2n])
    .addArray("q", GGUFValueType.BOOL, [false]);
  const b = new GGUFWriter()
    .addKV("a", { type: 0, value: 1 }).addKV("b", { type: 1, value: -1 })
    .addKV("c", { type: 2, value: 2 }).addKV("d", { type: 3, value: -2 })
    .addKV("e", { type: 4, value: 3 }).addKV("f", { type: 5, value: -3 })
    .addKV("g", { type: 10, value: 4n }).addKV("h", { type: 11, value: -4n })
    .addKV("i", { type: 6, value: 0.1 }).addKV("j", { type: 12, value: 0.1 })
    .addKV("k", { type: 7, value: true }).addKV("l", { type: 8, value: "x" })
    .addKV("m", { type: 9, itemType: 5, value: new Int32Array([1, -2, 3]) })
    .addKV("n", { type: 9, itemType: 8, value: ["p", "q"] })
    .addKV("o", { type: 9, itemType: 6, value: new Float32Array([0.25]) })
    .addKV("p", { type: 9, itemType: 10, value: new BigUint64Array([1n, 2n]) })
    .addKV("q", { type: 9, itemType: 7, value: [false] });
  assertEquals(a.toBytes(), b.toBytes());
  const kv = readGGUF(a.toBytes()).kv;
  assertEquals(kv.get("i"), { type: 6, value: Math.fround(0.1) });
  assertEquals(kv.get("m"), {
    type: 9,
    itemType: 5,
    value: new Int32Array([1, -2, 3]),
  });
});

Deno.test("gguf: write() streams the same bytes as toBytes() and readGGUFFile reads them", async () => {
  const dir = await Deno.makeTempDir({ prefix: "loupe_gguf_" });
  try {
    const w = sampleWriter();
    const path = `${dir}/sample.gguf`;
    const n = await w.write(path);
    const disk = await Deno.readFile(path);
    assertEquals(disk, w.toBytes());
    assertEquals(n, disk.length);
    const a = await readGGUFFile(path);
    const b = readGGUFFileSync(path);
    const c = readGGUF(disk);
    assertEquals(a, c);
    assertEquals(b, c);
    assertEquals([...Deno.readDirSync(dir)].length, 1, "temporary file left");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gguf: custom alignment via option and via general.alignment", () => {
  const a = sampleWriter(64).toBytes();
  const fa = readGGUF(a);
  assertEquals(fa.alignment, 64);
  assertEquals(fa.kv.get("general.alignment"), { type: 4, value: 64 });
  assertEquals(fa.dataOffset % 64, 0);
  assertEquals(fa.tensors.map((t) => t.offset), [0, 64, 128]);

  const w = new GGUFWriter().addUint32("general.alignment", 8);
  w.addTensor("x", [3], GGMLType.F32, new Float32Array(3));
  w.addTensor("y", [1], GGMLType.F32, new Float32Array(1));
  const fb = readGGUF(w.toBytes());
  assertEquals(fb.alignment, 8);
  assertEquals(fb.tensors.map((t) => t.offset), [0, 16]);

  let threw = false;
  try {
    new GGUFWriter({ alignment: 24 });
  } catch (e) {
    threw = e instanceof RangeError;
  }
  assert(threw, "alignment 24 accepted");
});

Deno.test("gguf: writer rejects bad input", () => {
  const throws = (fn: () => unknown, cls: ErrorConstructor) => {
    try {
      fn();
    } catch (e) {
      assert(e instanceof cls, `expected ${cls.name}, got ${show(e)}`);
      return;
    }
    throw new Error(`expected ${cls.name}`);
  };
  const w = new GGUFWriter().addUint8("k", 1);
  throws(() => w.addUint8("k", 2), TypeError);
  throws(() => w.addString("", "x"), TypeError);
  throws(() => w.addUint8("u8", 256), RangeError);
  throws(() => w.addInt32("i32", 2 ** 31), RangeError);
  throws(() => w.addUint32("u32", -1), RangeError);
  throws(() => w.addUint32("frac", 1.5), TypeError);
  throws(() => w.addUint64("u64", -1n), RangeError);
  throws(() => w.addArray("arr", GGUFValueType.UINT8, [1, 300]), RangeError);
  throws(
    () => w.addKV("nested", { type: 9, itemType: 9 as 0, value: new Uint8Array() }),
    TypeError,
  );
  throws(() => w.addUint64("general.alignment", 32), TypeError);
  throws(() => w.addTensor("t", [0], GGMLType.F32, new Float32Array()), RangeError);
  throws(() => w.addTensor("t", [1, 1, 1, 1, 1], GGMLType.F32, new Float32Array(1)), RangeError);
  throws(() => w.addTensor("t", [2], GGMLType.F32, new Float32Array(3)), RangeError);
  throws(() => w.addTensor("t", [31], GGMLType.Q8_0, new Uint8Array(34)), RangeError);
  throws(() => w.addTensor("t", [32], GGMLType.Q8_0, new Float32Array(32)), RangeError);
  throws(() => w.addTensor("x".repeat(64), [1], GGMLType.F32, new Float32Array(1)), TypeError);
  w.addTensor("t", [1], GGMLType.F32, new Float32Array(1));
  throws(() => w.addTensor("t", [1], GGMLType.F32, new Float32Array(1)), TypeError);
  // A lazy source of the wrong size fails at write time.
  const lazy = new GGUFWriter().addTensor(
    "t",
    [4],
    GGMLType.F32,
    () => new Float32Array(3),
  );
  throws(() => lazy.toBytes(), RangeError);
});

Deno.test("gguf: type sizes match ggml", () => {
  assertEquals(ggmlTypeInfo(GGMLType.Q4_K), {
    name: "Q4_K",
    blockSize: 256,
    typeSize: 144,
  });
  assertEquals(ggmlTypeInfo(GGMLType.Q6_K)?.typeSize, 210);
  assertEquals(ggmlTypeInfo(GGMLType.IQ4_XS)?.typeSize, 136);
  assertEquals(ggmlTypeInfo(4), undefined);
  assertEquals(tensorByteSize([4096, 4096], GGMLType.Q4_0), 4096 * 128 * 18);
  assertEquals(tensorByteSize([64, 3], GGMLType.F16), 384);
});

// ---------------------------------------------------------------------------
// F16 conversion

Deno.test("gguf: f16 conversion of known bit patterns", () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [0.1, 0x2e66],
    [1 / 3, 0x3555],
    [65504, 0x7bff], // largest finite
    [65519, 0x7bff], // just below the rounding boundary
    [65520, 0x7c00], // tie between 65504 (odd) and 65536 → even → inf
    [1e6, 0x7c00],
    [-1e6, 0xfc00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [2 ** -25, 0x0000], // tie between 0 and 1 ulp → even → 0
    [-(2 ** -25), 0x8000],
    [Math.fround(2 ** -25 * (1 + 2 ** -23)), 0x0001], // just above the tie
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 → even → 2
    [5 * 2 ** -25, 0x0002], // tie between 2 and 3 → even → 2
    [2 ** -14 - 2 ** -25, 0x0400], // subnormal rounds up into the normals
    [2 ** -26, 0x0000],
    [1e-40, 0x0000], // f32 subnormal
    [1 + 2 ** -11, 0x3c00], // tie → even (down)
    [1 + 3 * 2 ** -11, 0x3c02], // tie → even (up)
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // above the tie
    [2048 + 1, 0x6800], // 2049 → tie → 2048
    [2048 + 3, 0x6802], // 2051 → tie → 2052
  ];
  for (const [x, bits] of cases) {
    assertEquals(
      f32ToF16Bits(x),
      bits,
      `f32ToF16Bits(${x}) = 0x${f32ToF16Bits(x).toString(16)}`,
    );
  }
  // NaN → canonical quiet NaN, keeping the sign.
  assertEquals(f32ToF16Bits(NaN), 0x7e00);
  const negNaN = new Float32Array(new Uint32Array([0xffc00001]).buffer)[0];
  assertEquals(f32ToF16Bits(negNaN), 0xfe00);
  assert(Number.isNaN(f16BitsToF32(0x7e00)));
  assert(Number.isNaN(f16BitsToF32(0x7c01)));
  assertEquals(f16BitsToF32(0xfc00), -Infinity);
  assertEquals(f16BitsToF32(0x0001), 2 ** -24);
  assertEquals(f16BitsToF32(0x8000), -0);
});

Deno.test("gguf: f16 round-trips every non-NaN half exactly", () => {
  for (let h = 0; h < 0x10000; h++) {
    const x = f16BitsToF32(h);
    if (Number.isNaN(x)) continue;
    if (f32ToF16Bits(x) !== h) {
      throw new Error(`0x${h.toString(16)} → ${x} → 0x${f32ToF16Bits(x).toString(16)}`);
    }
  }
});

Deno.test("gguf: f16 conversion agrees with Math.f16round on random floats", () => {
  const f16round = (Math as { f16round?: (x: number) => number }).f16round;
  if (typeof f16round !== "function") return; // engine without Float16 support
  const bits = new Uint32Array(200_000);
  let s = 12345;
  for (let i = 0; i < bits.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    bits[i] = s;
  }
  // Bias some towards the f16 range (exponents 100..145).
  for (let i = 0; i < bits.length; i += 2) {
    bits[i] = (bits[i] & 0x807fffff) | ((100 + (bits[i] % 46)) << 23);
  }
  const f32 = new Float32Array(bits.buffer);
  const half = f32ArrayToF16(f32);
  for (let i = 0; i < f32.length; i++) {
    const want = f16round(f32[i]);
    const got = f16BitsToF32(half[i]);
    if (!(Object.is(want, got) || (Number.isNaN(want) && Number.isNaN(got)))) {
      throw new Error(`${f32[i]}: want ${want}, got ${got}`);
    }
  }
});

// ---------------------------------------------------------------------------
// Rejection of invalid files

Deno.test("gguf: rejects a bad magic and unsupported versions", () => {
  const good = sampleWriter().toBytes();
  const bad = good.slice();
  bad.set([0x61, 0x62, 0x63, 0x64]);
  const e = assertFormatError(() => readGGUF(bad), /^Not a GGUF file: bad magic "abcd"$/);
  assertEquals(e.offset, 0);
  assertFormatError(() => readGGUF(new Uint8Array([0x47, 0x47])), /^Not a GGUF file/);
  assertFormatError(() => readGGUF(new Uint8Array(0)), /^Not a GGUF file/);
  for (
    const [version, re] of [
      [0, /^Unsupported GGUF version: 0/],
      [1, /^Unsupported GGUF version: 1/],
      [4, /^Unsupported GGUF version: 4/],
      [99, /^Unsupported GGUF version: 99/],
      [0x03000000, /big-endian/],
    ] as const
  ) {
    const b = good.slice();
    new DataView(b.buffer).setUint32(4, version, true);
    assertFormatError(() => readGGUF(b), re);
  }
  // Version 2 has the same layout and is accepted.
  const v2 = good.slice();
  new DataView(v2.buffer).setUint32(4, 2, true);
  assertEquals(readGGUF(v2).version, 2);
});

Deno.test("gguf: rejects every truncation of a valid file", () => {
  const good = sampleWriter().toBytes();
  const file = readGGUF(good);
  const last = file.tensors.at(-1)!;
  const end = file.dataOffset + last.offset + last.size;
  for (let n = 0; n < end; n++) {
    assertFormatError(
      () => readGGUF(good.subarray(0, n)),
      /^(Not a GGUF file|Truncated GGUF file|Invalid .*|Tensor data out of bounds): /,
    );
  }
  // The trailing padding of the last tensor is optional.
  readGGUF(good.subarray(0, end));
});

Deno.test("gguf: a header prefix needs fileSize and enough bytes", () => {
  const good = sampleWriter().toBytes();
  const file = readGGUF(good);
  const prefix = good.subarray(0, file.headerSize);
  assertEquals(readGGUF(prefix, { fileSize: good.length }), file);
  assertFormatError(
    () => readGGUF(prefix.subarray(0, 40), { fileSize: good.length }),
    /^Incomplete GGUF header: /,
  );
  assertFormatError(() => readGGUF(prefix), /^Tensor data out of bounds: /);
});

Deno.test("gguf: rejects absurd counts without allocating", () => {
  for (
    const [nT, nKv, re] of [
      [2n ** 40n, 0n, /^Invalid tensor count: 1099511627776 /],
      [0n, 2n ** 40n, /^Invalid key-value count: 1099511627776 /],
      [-1n, 0n, /^Invalid tensor count: -1 /],
      [0n, -5n, /^Invalid key-value count: -5 /],
      [2n ** 63n - 1n, 2n ** 63n - 1n, /^Invalid tensor count/],
      [1n, 1n, /^Invalid counts: /],
    ] as const
  ) {
    const b = new Raw().header(nT, nKv).zeros(40).build();
    assertFormatError(() => readGGUF(b), re);
  }
  // Array element counts are checked against the remaining bytes too.
  const arr = new Raw().header(0, 1).str("big").u32(9).u32(GGUFValueType.INT64)
    .u64(2n ** 40n).zeros(64).build();
  assertFormatError(() => readGGUF(arr), /^Invalid array length: key "big" claims 1099511627776 INT64/);
  const strArr = new Raw().header(0, 1).str("big").u32(9).u32(GGUFValueType.STRING)
    .u64(1000).zeros(64).build();
  assertFormatError(() => readGGUF(strArr), /^Invalid array length: /);
});

Deno.test("gguf: rejects strings running past the end and invalid strings", () => {
  const key = new Raw().header(0, 1).u64(1000).bytes([0x61, 0x62]).zeros(20)
    .build();
  assertFormatError(
    () => readGGUF(key),
    /^Invalid string length: key 0 at offset 24 claims 1000 bytes but only 22 remain/,
  );
  const val = new Raw().header(0, 1).str("k").u32(GGUFValueType.STRING).u64(2n ** 62n)
    .zeros(8).build();
  assertFormatError(() => readGGUF(val), /^Invalid string length: value of key "k"/);
  const utf8 = new Raw().header(0, 1).str("k").u32(GGUFValueType.STRING).u64(2)
    .bytes([0xc3, 0x28]).build();
  assertFormatError(() => readGGUF(utf8), /^Invalid string: .*not valid UTF-8/);
  // Long strings take the TextDecoder path; overlong and surrogate encodings
  // are rejected on both paths.
  for (
    const bad of [
      [0xc0, 0x80],
      [0xed, 0xa0, 0x80],
      [0xf4, 0x90, 0x80, 0x80],
      [0xe2, 0x82],
      [0x80],
    ]
  ) {
    for (const pad of [0, 100]) {
      const bytes = [...new Array(pad).fill(0x61), ...bad];
      const b = new Raw().header(0, 1).str("k").u32(GGUFValueType.STRING)
        .u64(bytes.length).bytes(bytes).build();
      assertFormatError(() => readGGUF(b), /^Invalid string: /);
    }
  }
  // Valid multi-byte strings decode the same on both paths.
  for (const text of ["▁the", "Ġworld", "日本語", "🦕x", "é".repeat(40)]) {
    const b = new Raw().header(0, 1).str("k").u32(GGUFValueType.STRING)
      .str(text).build();
    assertEquals(readGGUF(b).kv.get("k"), { type: 8, value: text });
  }
  const emptyKey = new Raw().header(0, 1).str("").u32(0).u8(1).zeros(8).build();
  assertFormatError(() => readGGUF(emptyKey), /^Invalid key: key 0 is empty/);
});

Deno.test("gguf: rejects unknown value types, nested arrays, duplicate keys", () => {
  const unknown = new Raw().header(0, 1).str("k").u32(13).zeros(8).build();
  assertFormatError(() => readGGUF(unknown), /^Unknown value type: 13 for key "k"/);
  const unknownItem = new Raw().header(0, 1).str("k").u32(9).u32(77).u64(0).build();
  assertFormatError(() => readGGUF(unknownItem), /^Unknown value type: 77 for elements/);
  const nested = new Raw().header(0, 1).str("k").u32(9).u32(9).u64(0).zeros(8).build();
  assertFormatError(() => readGGUF(nested), /^Unsupported value type: key "k" is a nested array/);
  const dup = new Raw().header(0, 2).kvU32("k", 1).kvU32("k", 2).build();
  assertFormatError(() => readGGUF(dup), /^Duplicate key: "k"/);
  const badBool = new Raw().header(0, 1).str("k").u32(7).u8(2).build();
  assertFormatError(() => readGGUF(badBool), /^Invalid bool: /);
});

Deno.test("gguf: rejects a bad general.alignment", () => {
  const wrongType = new Raw().header(0, 1).str("general.alignment").u32(10).u64(32).build();
  assertFormatError(() => readGGUF(wrongType), /^Invalid alignment: "general.alignment" must be UINT32 but is UINT64/);
  for (const a of [0, 3, 48]) {
    const b = new Raw().header(0, 1).kvU32("general.alignment", a).build();
    assertFormatError(() => readGGUF(b), /^Invalid alignment: \d+ is not a power of two/);
  }
});

/** A file with one tensor of the given description, data zero-filled. */
function oneTensor(
  dims: (number | bigint)[],
  type = GGMLType.F32 as number,
  offset: number | bigint = 0,
  dataBytes = 64,
  name = "t",
): Uint8Array {
  const r = new Raw().header(1, 0).tensor(name, dims, type, offset);
  return r.padTo(32).zeros(dataBytes).build();
}

Deno.test("gguf: rejects bad tensor infos", () => {
  readGGUF(oneTensor([4, 4])); // sanity: valid
  assertFormatError(() => readGGUF(oneTensor([4, 0])), /^Invalid tensor shape: dimension 1 of tensor "t" is 0/);
  assertFormatError(() => readGGUF(oneTensor([-4])), /^Invalid tensor shape: dimension 0 of tensor "t" is -4/);
  assertFormatError(
    () => readGGUF(oneTensor([2n ** 31n, 2n ** 31n, 2n ** 31n, 2n ** 31n])),
    /^Invalid tensor shape: tensor "t" has more than/,
  );
  assertFormatError(
    () => readGGUF(oneTensor([2n ** 62n, 4n])),
    /^Invalid tensor shape: tensor "t" has more than/,
  );
  assertFormatError(
    () => readGGUF(oneTensor([1, 1, 1, 1, 1])),
    /^Invalid tensor dimensions: tensor "t" has 5 dimensions/,
  );
  assertFormatError(() => readGGUF(oneTensor([])), /^Invalid tensor dimensions: tensor "t" has 0 dimensions/);
  assertFormatError(() => readGGUF(oneTensor([4], 99)), /^Unknown tensor type: 99 for tensor "t"/);
  assertFormatError(() => readGGUF(oneTensor([4], 4)), /^Unknown tensor type: 4 /); // removed Q4_2
  assertFormatError(
    () => readGGUF(oneTensor([31], GGMLType.Q8_0)),
    /^Invalid tensor shape: tensor "t" of type Q8_0 has 31 elements per row, not a multiple of the block size 32/,
  );
  assertFormatError(() => readGGUF(oneTensor([4], GGMLType.F32, 0, 64, "x".repeat(64))), /^Invalid tensor name: /);
  assertFormatError(
    () => readGGUF(oneTensor([4], GGMLType.F32, 0, 64, "")),
    /^Invalid tensor name: tensor 0 is unnamed/,
  );
  const dup = new Raw().header(2, 0).tensor("t", [4], 0, 0).tensor("t", [4], 0, 32)
    .padTo(32).zeros(64).build();
  assertFormatError(() => readGGUF(dup), /^Duplicate tensor name: "t"/);
});

Deno.test("gguf: rejects tensor data outside the file or misplaced", () => {
  assertFormatError(
    () => readGGUF(oneTensor([4], GGMLType.F32, 2n ** 40n)),
    /^Tensor data out of bounds: tensor "t" has offset 1099511627776, past the end/,
  );
  assertFormatError(
    () => readGGUF(oneTensor([32], GGMLType.F32, 0, 64)),
    /^Tensor data out of bounds: tensor "t" spans bytes 64 to 192 but the file is 128 bytes long/,
  );
  assertFormatError(
    () => readGGUF(oneTensor([4], GGMLType.F32, 8, 64)),
    /^Misaligned tensor data: tensor "t" has offset 8, not a multiple of the alignment 32/,
  );
  assertFormatError(
    () => readGGUF(oneTensor([4], GGMLType.F32, 32, 128)),
    /^Invalid tensor offset: tensor "t" has offset 32, expected 0/,
  );
  // Overlapping tensors: the second starts inside the first.
  const overlap = new Raw().header(2, 0).tensor("a", [16], 0, 0).tensor("b", [4], 0, 32)
    .padTo(32).zeros(128).build();
  assertFormatError(() => readGGUF(overlap), /^Invalid tensor offset: tensor "b" has offset 32, expected 64/);
  // The size of quantized data is computed from the block size.
  const q = new Raw().header(1, 0).tensor("q", [256, 2], GGMLType.Q4_K, 0).padTo(32);
  const base = q.length;
  assertFormatError(() => readGGUF(q.zeros(287).build()), /^Tensor data out of bounds/);
  const ok = readGGUF(new Raw().header(1, 0).tensor("q", [256, 2], GGMLType.Q4_K, 0).padTo(32).zeros(288).build());
  assertEquals(ok.tensors[0].size, 288);
  assertEquals(ok.dataOffset, base);
});

// ---------------------------------------------------------------------------
// Real files

Deno.test({
  name: "gguf: parses every llama.cpp vocab file and re-serializes it byte for byte",
  fn: async () => {
    const names = [...Deno.readDirSync(VOCAB_DIR)]
      .map((e) => e.name)
      .filter((n) => /^ggml-vocab-.*\.gguf$/.test(n))
      .sort();
    assert(names.length > 0, `no vocab files in ${VOCAB_DIR}`);
    for (const name of names) {
      const path = `${VOCAB_DIR}/${name}`;
      const bytes = await Deno.readFile(path);
      const file = readGGUF(bytes);
      assertEquals(await readGGUFFile(path), file, `${name}: readGGUFFile`);
      const tokens = file.kv.get("tokenizer.ggml.tokens");
      assert(tokens?.type === 9 && tokens.itemType === 8, `${name}: tokens`);
      const types = file.kv.get("tokenizer.ggml.token_type");
      assert(types?.type === 9 && types.itemType === GGUFValueType.INT32, `${name}: token_type`);
      assertEquals(types.value.length, tokens.value.length, `${name}: token_type length`);
      const scores = file.kv.get("tokenizer.ggml.scores");
      if (scores) {
        assert(scores.type === 9 && scores.itemType === GGUFValueType.FLOAT32, `${name}: scores`);
      }
      // Copying every KV through the writer reproduces the file (apart from
      // the version field of old v2 files).
      const w = new GGUFWriter();
      for (const [k, v] of file.kv) w.addKV(k, v);
      const out = w.toBytes();
      const expected = bytes.slice(0, out.length);
      new DataView(expected.buffer).setUint32(4, 3, true);
      assertEquals(out.length, bytes.length, `${name}: length`);
      assert(deepEqual(out, expected), `${name}: bytes differ`);
    }
  },
});
