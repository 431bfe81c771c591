/**
 * The GGUF writer: metadata and tensors into a file llama.cpp loads, checked as it is built.
 *
 * @module
 */
import { f32ArrayToF16 } from "./f16.ts";
import {
  alignUp,
  ggufValueTypeName,
  isScalarType,
  LITTLE_ENDIAN_HOST,
  NUMERIC_ARRAY_CTORS,
  UTF8_ENCODER,
} from "./reader.ts";
import {
  GGML_MAX_DIMS,
  GGML_MAX_NAME,
  GGMLType,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_KEY_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_MAX_ARRAY_ELEMENTS,
  GGUF_VERSION,
  type GGUFArrayValue,
  type GGUFScalarType,
  type GGUFScalarTypeMap,
  type GGUFScalarValue,
  type GGUFValue,
  GGUFValueType,
  tensorByteSize,
  TYPE_INFO,
} from "./types.ts";

export type GGUFTensorSource = Float32Array | Uint8Array;

/** Options for {@linkcode GGUFWriter}. */
export interface GGUFWriterOptions {
  /**
   * Data alignment in bytes (a power of two). Defaults to the
   * `general.alignment` key if one is added, else 32. A value other than 32
   * is recorded as `general.alignment` automatically.
   */
  alignment?: number;
}

interface PendingTensor {
  name: string;
  dims: number[];
  type: number;
  size: number;
  data: GGUFTensorSource | (() => GGUFTensorSource);
}

const INT_RANGES: Readonly<Record<number, [number, number]>> = {
  0: [0, 0xff],
  1: [-0x80, 0x7f],
  2: [0, 0xffff],
  3: [-0x8000, 0x7fff],
  4: [0, 0xffffffff],
  5: [-0x80000000, 0x7fffffff],
};

/**
 * Builds a GGUF (version 3) file from key-value pairs and tensors and writes
 * it to disk or memory.
 *
 * Tensor data may be given lazily as a function; it is then produced one
 * tensor at a time while writing, so large models need little memory.
 *
 * @example Write a small file
 * ```ts
 * const w = new GGUFWriter();
 * w.addString("general.architecture", "llama");
 * w.addArray("tokenizer.ggml.scores", GGUFValueType.FLOAT32, [0, -1]);
 * w.addTensor("x.weight", [4, 2], GGMLType.F16, new Float32Array(8));
 * await w.write("out.gguf");
 * ```
 */
export class GGUFWriter {
  #kv = new Map<string, GGUFValue>();
  #tensors: PendingTensor[] = [];
  #tensorNames = new Set<string>();
  #alignmentOption: number | undefined;

  /**
   * Creates an empty writer.
   *
   * @param options Writer options.
   */
  constructor(options: GGUFWriterOptions = {}) {
    if (options.alignment !== undefined) {
      checkAlignment(options.alignment);
      this.#alignmentOption = options.alignment;
    }
  }

  /** The data alignment that will be used. */
  get alignment(): number {
    const kv = this.#kv.get(GGUF_KEY_ALIGNMENT);
    return kv?.type === GGUFValueType.UINT32 ? kv.value : this.#alignmentOption ?? GGUF_DEFAULT_ALIGNMENT;
  }

  /** The keys added so far, in order. */
  get keys(): string[] {
    return [...this.#kv.keys()];
  }

  /** The names of the tensors added so far, in order. */
  get tensorNames(): string[] {
    return this.#tensors.map((t) => t.name);
  }

  /**
   * Adds a key-value pair, keeping its GGUF type. Values read with
   * {@linkcode readGGUF} can be passed unchanged. Array values may be any
   * array-like of the right element kind; they are copied.
   *
   * @param key The key (non-empty, not added before).
   * @param value The typed value.
   * @returns This writer.
   * @throws {TypeError} If the key is empty or already present, or the value
   * does not match its type.
   * @throws {RangeError} If an integer is out of range for its type.
   */
  addKV(key: string, value: GGUFValue): this {
    if (typeof key !== "string" || key.length === 0) {
      throw new TypeError("Invalid key: keys must be non-empty strings");
    }
    if (this.#kv.has(key)) {
      throw new TypeError(`Duplicate key: "${key}"`);
    }
    const v = normalizeValue(key, value);
    if (key === GGUF_KEY_ALIGNMENT) {
      if (v.type !== GGUFValueType.UINT32) {
        throw new TypeError(
          `Invalid alignment: "${GGUF_KEY_ALIGNMENT}" must be UINT32`,
        );
      }
      checkAlignment(v.value);
      if (
        this.#alignmentOption !== undefined && this.#alignmentOption !== v.value
      ) {
        throw new RangeError(
          `Invalid alignment: "${GGUF_KEY_ALIGNMENT}" is ${v.value} but the writer was created with alignment ${this.#alignmentOption}`,
        );
      }
    }
    this.#kv.set(key, v);
    return this;
  }

  /**
   * Adds a `UINT8` value.
   * @param key The key.
   * @param value An integer from 0 to 255.
   * @returns This writer.
   */
  addUint8(key: string, value: number): this {
    return this.addKV(key, { type: 0, value });
  }

  /**
   * Adds an `INT8` value.
   * @param key The key.
   * @param value An integer from -128 to 127.
   * @returns This writer.
   */
  addInt8(key: string, value: number): this {
    return this.addKV(key, { type: 1, value });
  }

  /**
   * Adds a `UINT16` value.
   * @param key The key.
   * @param value An integer from 0 to 65535.
   * @returns This writer.
   */
  addUint16(key: string, value: number): this {
    return this.addKV(key, { type: 2, value });
  }

  /**
   * Adds an `INT16` value.
   * @param key The key.
   * @param value An integer from -32768 to 32767.
   * @returns This writer.
   */
  addInt16(key: string, value: number): this {
    return this.addKV(key, { type: 3, value });
  }

  /**
   * Adds a `UINT32` value.
   * @param key The key.
   * @param value An integer from 0 to 2^32-1.
   * @returns This writer.
   */
  addUint32(key: string, value: number): this {
    return this.addKV(key, { type: 4, value });
  }

  /**
   * Adds an `INT32` value.
   * @param key The key.
   * @param value An integer from -2^31 to 2^31-1.
   * @returns This writer.
   */
  addInt32(key: string, value: number): this {
    return this.addKV(key, { type: 5, value });
  }

  /**
   * Adds a `UINT64` value.
   * @param key The key.
   * @param value A non-negative integer (a `number` must be a safe integer).
   * @returns This writer.
   */
  addUint64(key: string, value: bigint | number): this {
    return this.addKV(key, { type: 10, value: toBigInt(key, value) });
  }

  /**
   * Adds an `INT64` value.
   * @param key The key.
   * @param value An integer (a `number` must be a safe integer).
   * @returns This writer.
   */
  addInt64(key: string, value: bigint | number): this {
    return this.addKV(key, { type: 11, value: toBigInt(key, value) });
  }

  /**
   * Adds a `FLOAT32` value (rounded to single precision).
   * @param key The key.
   * @param value The number.
   * @returns This writer.
   */
  addFloat32(key: string, value: number): this {
    return this.addKV(key, { type: 6, value });
  }

  /**
   * Adds a `FLOAT64` value.
   * @param key The key.
   * @param value The number.
   * @returns This writer.
   */
  addFloat64(key: string, value: number): this {
    return this.addKV(key, { type: 12, value });
  }

  /**
   * Adds a `BOOL` value.
   * @param key The key.
   * @param value The boolean.
   * @returns This writer.
   */
  addBool(key: string, value: boolean): this {
    return this.addKV(key, { type: 7, value });
  }

  /**
   * Adds a `STRING` value.
   * @param key The key.
   * @param value The string (stored as UTF-8).
   * @returns This writer.
   */
  addString(key: string, value: string): this {
    return this.addKV(key, { type: 8, value });
  }

  /**
   * Adds an array value.
   *
   * @param key The key.
   * @param itemType The element type (any type but `ARRAY`).
   * @param values The elements: numbers (or bigints for 64-bit integers),
   * booleans or strings, matching `itemType`.
   * @returns This writer.
   */
  addArray<T extends GGUFScalarType>(
    key: string,
    itemType: T,
    values: ArrayLike<GGUFScalarTypeMap[T]> | Iterable<GGUFScalarTypeMap[T]>,
  ): this {
    return this.addKV(
      key,
      {
        type: 9,
        itemType,
        value: Array.from(values as ArrayLike<unknown>),
      } as unknown as GGUFValue,
    );
  }

  /**
   * Adds a tensor.
   *
   * @param name Tensor name (unique, 1 to 63 bytes of UTF-8).
   * @param dims Shape with `ne0` (the contiguous dimension) first; 1 to 4
   * positive integers.
   * @param type The ggml type. With a `Float32Array` source it must be `F32`
   * or `F16` (values are converted, rounding to nearest even). With a
   * `Uint8Array` source any type is allowed and the bytes are written as
   * they are.
   * @param data The data, or a function producing it when the file is
   * written (called once per write).
   * @returns This writer.
   * @throws {TypeError} For a duplicate or invalid name.
   * @throws {RangeError} For an invalid shape or type.
   */
  addTensor(
    name: string,
    dims: readonly number[],
    type: number,
    data: GGUFTensorSource | (() => GGUFTensorSource),
  ): this {
    const nameBytes = UTF8_ENCODER.encode(name).length;
    if (nameBytes === 0 || nameBytes >= GGML_MAX_NAME) {
      throw new TypeError(
        `Invalid tensor name: "${name}" must be 1 to ${GGML_MAX_NAME - 1} bytes long`,
      );
    }
    if (this.#tensorNames.has(name)) {
      throw new TypeError(`Duplicate tensor name: "${name}"`);
    }
    if (
      dims.length === 0 || dims.length > GGML_MAX_DIMS ||
      !dims.every((d) => Number.isSafeInteger(d) && d > 0)
    ) {
      throw new RangeError(
        `Invalid tensor shape: [${dims}] for "${name}" must be 1 to ${GGML_MAX_DIMS} positive integers`,
      );
    }
    const size = tensorByteSize(dims, type);
    if (typeof data !== "function") checkSource(name, type, size, data);
    this.#tensors.push({ name, dims: [...dims], type, size, data });
    this.#tensorNames.add(name);
    return this;
  }

  /**
   * Serializes the whole file into memory.
   *
   * @returns The file bytes.
   */
  toBytes(): Uint8Array {
    const chunks = [...this.#chunks()];
    const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let pos = 0;
    for (const c of chunks) {
      out.set(c, pos);
      pos += c.length;
    }
    return out;
  }

  /**
   * Writes the file to disk, one tensor at a time. The data goes to a
   * temporary file next to `path` that is renamed to `path` when complete,
   * so readers never see a partial file.
   *
   * @param path Destination path.
   * @returns The number of bytes written.
   */
  async write(path: string): Promise<number> {
    const tmp = `${path}.tmp-${Deno.pid}-${Math.random().toString(36).slice(2)}`;
    let total = 0;
    try {
      using file = await Deno.open(tmp, {
        write: true,
        create: true,
        truncate: true,
      });
      for (const chunk of this.#chunks()) {
        let off = 0;
        while (off < chunk.length) {
          off += await file.write(chunk.subarray(off));
        }
        total += chunk.length;
      }
      await file.sync();
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
    await Deno.rename(tmp, path);
    return total;
  }

  *#chunks(): Generator<Uint8Array> {
    const alignment = this.alignment;
    const kv = new Map(this.#kv);
    if (alignment !== GGUF_DEFAULT_ALIGNMENT && !kv.has(GGUF_KEY_ALIGNMENT)) {
      kv.set(GGUF_KEY_ALIGNMENT, { type: 4, value: alignment });
    }
    const h = new ByteSink();
    h.bytes(UTF8_ENCODER.encode(GGUF_MAGIC));
    h.u32(GGUF_VERSION);
    h.u64(BigInt(this.#tensors.length));
    h.u64(BigInt(kv.size));
    for (const [key, value] of kv) {
      h.string(key);
      h.u32(value.type);
      if (value.type === GGUFValueType.ARRAY) {
        h.u32(value.itemType);
        h.u64(BigInt(value.value.length));
        writeArray(h, value);
      } else {
        writeScalar(h, value);
      }
    }
    let offset = 0;
    for (const t of this.#tensors) {
      h.string(t.name);
      h.u32(t.dims.length);
      for (const d of t.dims) h.u64(BigInt(d));
      h.u32(t.type);
      h.u64(BigInt(offset));
      offset = alignUp(offset + t.size, alignment);
    }
    if (this.#tensors.length > 0) {
      h.zeros(alignUp(h.length, alignment) - h.length);
    }
    yield h.result();
    for (const t of this.#tensors) {
      const src = typeof t.data === "function" ? t.data() : t.data;
      checkSource(t.name, t.type, t.size, src);
      yield encodeTensor(t.type, src);
      const pad = alignUp(t.size, alignment) - t.size;
      if (pad > 0) yield new Uint8Array(pad);
    }
  }
}

function checkAlignment(a: number): void {
  if (!Number.isInteger(a) || a <= 0 || a > 0xffffffff || (a & (a - 1)) !== 0) {
    throw new RangeError(`Invalid alignment: ${a} is not a power of two`);
  }
}

function toBigInt(key: string, v: bigint | number): bigint {
  if (typeof v === "bigint") return v;
  if (!Number.isSafeInteger(v)) {
    throw new RangeError(`Invalid value: "${key}" must be an integer, got ${v}`);
  }
  return BigInt(v);
}

function checkScalar(key: string, type: number, v: unknown): void {
  const bad = (what: string) =>
    new TypeError(
      `Invalid value: "${key}" of type ${ggufValueTypeName(type)} ${what}`,
    );
  switch (type) {
    case 0:
    case 1:
    case 2:
    case 3:
    case 4:
    case 5: {
      if (typeof v !== "number" || !Number.isInteger(v)) {
        throw bad(`needs an integer, got ${String(v)}`);
      }
      const [lo, hi] = INT_RANGES[type];
      if (v < lo || v > hi) {
        throw new RangeError(
          `Invalid value: ${v} is out of range for "${key}" of type ${ggufValueTypeName(type)}`,
        );
      }
      return;
    }
    case 6:
    case 12:
      if (typeof v !== "number") throw bad(`needs a number, got ${typeof v}`);
      return;
    case 7:
      if (typeof v !== "boolean") throw bad(`needs a boolean, got ${typeof v}`);
      return;
    case 8:
      if (typeof v !== "string") throw bad(`needs a string, got ${typeof v}`);
      return;
    case 10:
    case 11: {
      if (typeof v !== "bigint") throw bad(`needs a bigint, got ${typeof v}`);
      const ok = type === 10
        ? v >= 0n && v <= 0xffffffffffffffffn
        : v >= -0x8000000000000000n && v <= 0x7fffffffffffffffn;
      if (!ok) {
        throw new RangeError(
          `Invalid value: ${v} is out of range for "${key}" of type ${ggufValueTypeName(type)}`,
        );
      }
      return;
    }
    default:
      throw new TypeError(`Unknown value type: ${type} for key "${key}"`);
  }
}

function normalizeValue(key: string, value: GGUFValue): GGUFValue {
  if (value === null || typeof value !== "object") {
    throw new TypeError(`Invalid value: "${key}" needs a typed GGUF value`);
  }
  if (value.type !== GGUFValueType.ARRAY) {
    checkScalar(key, value.type, value.value);
    if (value.type === GGUFValueType.FLOAT32) {
      return { type: value.type, value: Math.fround(value.value) };
    }
    return { ...value } as GGUFValue;
  }
  const itemType = value.itemType as number;
  if (!isScalarType(itemType)) {
    throw new TypeError(
      `Unknown value type: ${itemType} for elements of key "${key}"`,
    );
  }
  const src = value.value as ArrayLike<unknown>;
  if (src === null || typeof src !== "object" || !("length" in src)) {
    throw new TypeError(`Invalid value: "${key}" needs an array`);
  }
  if (src.length > GGUF_MAX_ARRAY_ELEMENTS) {
    throw new RangeError(`Invalid value: "${key}" has too many elements`);
  }
  const Ctor = NUMERIC_ARRAY_CTORS[itemType];
  if (Ctor !== undefined && src instanceof Ctor) {
    return { type: 9, itemType, value: src.slice() } as GGUFArrayValue;
  }
  for (let i = 0; i < src.length; i++) {
    checkScalar(`${key}[${i}]`, itemType, src[i]);
  }
  const copy = Ctor !== undefined ? new Ctor(Array.from(src)) : Array.from(src);
  return { type: 9, itemType, value: copy } as GGUFArrayValue;
}

function checkSource(
  name: string,
  type: number,
  size: number,
  src: GGUFTensorSource,
): void {
  if (src instanceof Float32Array) {
    if (type !== GGMLType.F32 && type !== GGMLType.F16) {
      throw new RangeError(
        `Invalid tensor data: "${name}" has type ${
          TYPE_INFO.get(type)?.name
        }, which needs raw bytes, not a Float32Array`,
      );
    }
    const n = size / (type === GGMLType.F32 ? 4 : 2);
    if (src.length !== n) {
      throw new RangeError(
        `Invalid tensor data: "${name}" needs ${n} values, got ${src.length}`,
      );
    }
  } else if (src instanceof Uint8Array) {
    if (src.length !== size) {
      throw new RangeError(
        `Invalid tensor data: "${name}" needs ${size} bytes, got ${src.length}`,
      );
    }
  } else {
    throw new TypeError(
      `Invalid tensor data: "${name}" needs a Float32Array or Uint8Array`,
    );
  }
}

function encodeTensor(type: number, src: GGUFTensorSource): Uint8Array {
  if (src instanceof Uint8Array) return src;
  if (type === GGMLType.F32) {
    if (LITTLE_ENDIAN_HOST) {
      return new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    }
    const out = new Uint8Array(src.length * 4);
    const view = new DataView(out.buffer);
    for (let i = 0; i < src.length; i++) view.setFloat32(i * 4, src[i], true);
    return out;
  }
  const half = f32ArrayToF16(src);
  if (LITTLE_ENDIAN_HOST) return new Uint8Array(half.buffer);
  const out = new Uint8Array(half.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < half.length; i++) view.setUint16(i * 2, half[i], true);
  return out;
}

function writeScalar(h: ByteSink, v: GGUFScalarValue): void {
  switch (v.type) {
    case 0:
      return h.u8(v.value);
    case 1:
      return h.u8(v.value & 0xff);
    case 2:
      return h.u16(v.value);
    case 3:
      return h.u16(v.value & 0xffff);
    case 4:
      return h.u32(v.value);
    case 5:
      return h.u32(v.value >>> 0);
    case 6:
      return h.f32(v.value);
    case 7:
      return h.u8(v.value ? 1 : 0);
    case 8:
      return h.string(v.value);
    case 10:
      return h.u64(v.value);
    case 11:
      return h.u64(BigInt.asUintN(64, v.value));
    case 12:
      return h.f64(v.value);
  }
}

function writeArray(h: ByteSink, v: GGUFArrayValue): void {
  if (v.itemType === 8) {
    for (const s of v.value) h.string(s);
  } else if (v.itemType === 7) {
    for (const b of v.value) h.u8(b ? 1 : 0);
  } else if (LITTLE_ENDIAN_HOST) {
    const a = v.value;
    h.bytes(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  } else {
    const a = v.value as ArrayLike<number | bigint>;
    for (let i = 0; i < a.length; i++) {
      writeScalar(h, { type: v.itemType, value: a[i] } as GGUFScalarValue);
    }
  }
}

/** Growable little-endian byte buffer. */
class ByteSink {
  #buf = new Uint8Array(1 << 16);
  #view = new DataView(this.#buf.buffer);
  length = 0;

  #reserve(n: number): number {
    const need = this.length + n;
    if (need > this.#buf.length) {
      let cap = this.#buf.length * 2;
      while (cap < need) cap *= 2;
      const next = new Uint8Array(cap);
      next.set(this.#buf.subarray(0, this.length));
      this.#buf = next;
      this.#view = new DataView(next.buffer);
    }
    const at = this.length;
    this.length = need;
    return at;
  }

  u8(v: number): void {
    const at = this.#reserve(1);
    this.#view.setUint8(at, v);
  }
  u16(v: number): void {
    const at = this.#reserve(2);
    this.#view.setUint16(at, v, true);
  }
  u32(v: number): void {
    const at = this.#reserve(4);
    this.#view.setUint32(at, v, true);
  }
  u64(v: bigint): void {
    const at = this.#reserve(8);
    this.#view.setBigUint64(at, v, true);
  }
  f32(v: number): void {
    const at = this.#reserve(4);
    this.#view.setFloat32(at, v, true);
  }
  f64(v: number): void {
    const at = this.#reserve(8);
    this.#view.setFloat64(at, v, true);
  }
  bytes(b: Uint8Array): void {
    const at = this.#reserve(b.length);
    this.#buf.set(b, at);
  }
  zeros(n: number): void {
    this.#reserve(n); // new space is already zero
  }
  string(s: string): void {
    // Reserve the worst case (3 bytes per UTF-16 unit), then shrink.
    const at = this.#reserve(8 + s.length * 3);
    const { written } = UTF8_ENCODER.encodeInto(
      s,
      this.#buf.subarray(at + 8),
    );
    this.#view.setUint32(at, written % 2 ** 32, true);
    this.#view.setUint32(at + 4, Math.floor(written / 2 ** 32), true);
    this.#buf.fill(0, at + 8 + written, this.length);
    this.length = at + 8 + written;
  }
  result(): Uint8Array {
    return this.#buf.subarray(0, this.length);
  }
}
