/**
 * The GGUF reader and strict validator (format versions 2 and 3).
 *
 * The layout follows llama.cpp's `ggml/include/gguf.h`: a little-endian
 * header (magic `GGUF`, version, tensor count, key-value count), the
 * key-value pairs, the tensor infos, padding up to the alignment, then the
 * tensor data blob, each tensor padded to the alignment.
 *
 * The reader never allocates an array from a count read from the file before
 * checking that the elements fit into the bytes that are left, so hostile or
 * corrupt files fail with a `GGUFFormatError` instead of exhausting memory.
 *
 * @module
 */
import {
  GGML_MAX_DIMS,
  GGML_MAX_NAME,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_KEY_ALIGNMENT,
  GGUF_MAX_ARRAY_ELEMENTS,
  GGUF_MAX_STRING_LENGTH,
  GGUF_VERSION,
  type GGUFArrayValue,
  type GGUFFile,
  GGUFFormatError,
  type GGUFScalarType,
  type GGUFScalarValue,
  type GGUFTensorInfo,
  type GGUFValue,
  GGUFValueType,
  type ReadGGUFOptions,
  TYPE_INFO,
} from "./types.ts";

export const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const UTF8_DECODER = new TextDecoder("utf-8", {
  fatal: true,
  ignoreBOM: true,
});
export const UTF8_ENCODER = new TextEncoder();

/** Byte size of fixed-size scalar types (strings are variable). */
const SCALAR_SIZE: Readonly<Record<number, number>> = {
  0: 1,
  1: 1,
  2: 2,
  3: 2,
  4: 4,
  5: 4,
  6: 4,
  7: 1,
  10: 8,
  11: 8,
  12: 8,
};

const VALUE_TYPE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(GGUFValueType).map(([k, v]) => [v, k]),
);

/**
 * Returns the name of a GGUF value type, e.g. `"UINT32"`.
 *
 * @param type The value type number.
 * @returns The name, or `"unknown(N)"`.
 */
export function ggufValueTypeName(type: number): string {
  return VALUE_TYPE_NAMES[type] ?? `unknown(${type})`;
}

const CODE_UNITS = new Uint16Array(128);

/**
 * Strictly decodes UTF-8 bytes `b[start..end)` (at most 64 bytes). Returns
 * `undefined` for invalid input, leaving the error to TextDecoder.
 */
function decodeShortUtf8(
  b: Uint8Array,
  start: number,
  end: number,
): string | undefined {
  const out = CODE_UNITS;
  let n = 0;
  let i = start;
  while (i < end) {
    const c = b[i];
    if (c < 0x80) {
      out[n++] = c;
      i++;
      continue;
    }
    let cp: number;
    let extra: number;
    let min: number;
    if (c >= 0xc2 && c <= 0xdf) {
      cp = c & 0x1f;
      extra = 1;
      min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      cp = c & 0x0f;
      extra = 2;
      min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      cp = c & 0x07;
      extra = 3;
      min = 0x10000;
    } else {
      return undefined;
    }
    if (i + extra >= end) return undefined;
    for (let k = 1; k <= extra; k++) {
      const cc = b[i + k];
      if ((cc & 0xc0) !== 0x80) return undefined;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return undefined;
    }
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out[n++] = 0xd800 | (cp >> 10);
      out[n++] = 0xdc00 | (cp & 0x3ff);
    } else {
      out[n++] = cp;
    }
    i += extra + 1;
  }
  return String.fromCharCode.apply(
    null,
    out.subarray(0, n) as unknown as number[],
  );
}

/** A description of the data being read, computed only for error messages. */
type What = string | (() => string);

function describe(what: What): string {
  return typeof what === "string" ? what : what();
}

/** Thrown internally when a header prefix is too short to finish parsing. */
class NeedMoreBytes {
  constructor(readonly needed: number) {}
}

const MIN_KV_BYTES = 8 + 1 + 4 + 1; // key length, 1-byte key, type, 1-byte value
const MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8; // name, n_dims, ne0, type, offset

class Cursor {
  pos = 0;
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  readonly #fileSize: number;

  constructor(bytes: Uint8Array, fileSize: number) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#fileSize = fileSize;
  }

  get remaining(): number {
    return this.#fileSize - this.pos;
  }

  /** Checks `n` bytes are in the file and loaded; `what` names them. */
  need(n: number, what: What): void {
    if (n > this.remaining) {
      throw new GGUFFormatError(
        `Truncated GGUF file: ${
          describe(what)
        } at offset ${this.pos} needs ${n} bytes but only ${this.remaining} remain`,
        { offset: this.pos },
      );
    }
    if (this.pos + n > this.#bytes.length) {
      throw new NeedMoreBytes(this.pos + n);
    }
  }

  u8(what: What): number {
    this.need(1, what);
    return this.#view.getUint8(this.pos++);
  }

  u32(what: What): number {
    this.need(4, what);
    const v = this.#view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  u64(what: What): bigint {
    this.need(8, what);
    const v = this.#view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }

  i64(what: What): bigint {
    this.need(8, what);
    const v = this.#view.getBigInt64(this.pos, true);
    this.pos += 8;
    return v;
  }

  bytes(n: number, what: What): Uint8Array {
    this.need(n, what);
    const out = this.#bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  string(what: What): string {
    const at = this.pos;
    this.need(8, () => `length of ${describe(what)}`);
    const lo = this.#view.getUint32(at, true);
    const hi = this.#view.getUint32(at + 4, true);
    this.pos += 8;
    // hi !== 0 means at least 2^32 bytes, beyond both limits below.
    const len = hi === 0 ? lo : hi * 2 ** 32 + lo;
    if (len > GGUF_MAX_STRING_LENGTH) {
      throw new GGUFFormatError(
        `Invalid string length: ${describe(what)} at offset ${at} claims ${
          hi === 0 ? len : (BigInt(hi) << 32n) + BigInt(lo)
        } bytes, more than the maximum ${GGUF_MAX_STRING_LENGTH}`,
        { offset: at },
      );
    }
    if (len > this.remaining) {
      throw new GGUFFormatError(
        `Invalid string length: ${
          describe(what)
        } at offset ${at} claims ${len} bytes but only ${this.remaining} remain in the file`,
        { offset: at },
      );
    }
    this.need(len, what);
    const start = this.pos;
    this.pos += len;
    const b = this.#bytes;
    if (len <= 64) {
      // Short strings (keys, tokens) decode faster in JS than via TextDecoder.
      const str = decodeShortUtf8(b, start, start + len);
      if (str !== undefined) return str;
    }
    try {
      return UTF8_DECODER.decode(b.subarray(start, start + len));
    } catch (cause) {
      throw new GGUFFormatError(
        `Invalid string: ${describe(what)} at offset ${at} is not valid UTF-8`,
        { offset: at, cause },
      );
    }
  }

  scalar(type: GGUFScalarType, what: What): GGUFScalarValue {
    const v = this.#view;
    switch (type) {
      case 8:
        return { type, value: this.string(what) };
      case 7: {
        const at = this.pos;
        const b = this.u8(what);
        if (b > 1) {
          throw new GGUFFormatError(
            `Invalid bool: ${describe(what)} at offset ${at} has byte value ${b}`,
            { offset: at },
          );
        }
        return { type, value: b === 1 };
      }
    }
    const size = SCALAR_SIZE[type];
    this.need(size, what);
    const p = this.pos;
    this.pos += size;
    switch (type) {
      case 0:
        return { type, value: v.getUint8(p) };
      case 1:
        return { type, value: v.getInt8(p) };
      case 2:
        return { type, value: v.getUint16(p, true) };
      case 3:
        return { type, value: v.getInt16(p, true) };
      case 4:
        return { type, value: v.getUint32(p, true) };
      case 5:
        return { type, value: v.getInt32(p, true) };
      case 6:
        return { type, value: v.getFloat32(p, true) };
      case 10:
        return { type, value: v.getBigUint64(p, true) };
      case 11:
        return { type, value: v.getBigInt64(p, true) };
      case 12:
        return { type, value: v.getFloat64(p, true) };
    }
  }

  array(itemType: GGUFScalarType, n: number, what: What): GGUFArrayValue {
    if (itemType === 8) {
      const value: string[] = [];
      for (let i = 0; i < n; i++) {
        value.push(this.string(() => `${describe(what)}[${i}]`));
      }
      return { type: 9, itemType, value };
    }
    if (itemType === 7) {
      const value: boolean[] = [];
      for (let i = 0; i < n; i++) {
        value.push(
          this.scalar(7, () => `${describe(what)}[${i}]`).value as boolean,
        );
      }
      return { type: 9, itemType, value };
    }
    const size = SCALAR_SIZE[itemType];
    const raw = this.bytes(n * size, what);
    const value = decodeNumericArray(itemType, raw);
    return { type: 9, itemType, value } as GGUFArrayValue;
  }
}

type NumericArray =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | BigUint64Array
  | BigInt64Array
  | Float64Array;

// deno-lint-ignore no-explicit-any
type TypedArrayCtor = new (input: any) => NumericArray;

export const NUMERIC_ARRAY_CTORS: Readonly<Record<number, TypedArrayCtor>> = {
  0: Uint8Array,
  1: Int8Array,
  2: Uint16Array,
  3: Int16Array,
  4: Uint32Array,
  5: Int32Array,
  6: Float32Array,
  10: BigUint64Array,
  11: BigInt64Array,
  12: Float64Array,
};

function decodeNumericArray(type: number, raw: Uint8Array): NumericArray {
  const Ctor = NUMERIC_ARRAY_CTORS[type];
  const size = SCALAR_SIZE[type];
  const n = raw.length / size;
  if (LITTLE_ENDIAN_HOST) {
    // slice() copies into a fresh, correctly aligned buffer.
    return new Ctor(raw.slice().buffer);
  }
  const out = new Ctor(n);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  for (let i = 0; i < n; i++) {
    (out as unknown as (number | bigint)[])[i] = readLE(view, type, i * size);
  }
  return out;
}

function readLE(view: DataView, type: number, p: number): number | bigint {
  switch (type) {
    case 2:
      return view.getUint16(p, true);
    case 3:
      return view.getInt16(p, true);
    case 4:
      return view.getUint32(p, true);
    case 5:
      return view.getInt32(p, true);
    case 6:
      return view.getFloat32(p, true);
    case 10:
      return view.getBigUint64(p, true);
    case 11:
      return view.getBigInt64(p, true);
    case 12:
      return view.getFloat64(p, true);
    default:
      return view.getUint8(p);
  }
}

function describeMagic(b: Uint8Array): string {
  let s = "";
  for (const c of b) {
    s += c >= 0x20 && c < 0x7f && c !== 0x22 && c !== 0x5c
      ? String.fromCharCode(c)
      : `\\x${c.toString(16).padStart(2, "0")}`;
  }
  return `"${s}"`;
}

export function isScalarType(t: number): t is GGUFScalarType {
  return Number.isInteger(t) && t >= 0 && t <= 12 && t !== 9;
}

function parse(bytes: Uint8Array, fileSize: number): GGUFFile {
  const c = new Cursor(bytes, fileSize);

  // Magic and version.
  if (fileSize < 4) {
    throw new GGUFFormatError(
      `Not a GGUF file: only ${fileSize} bytes long`,
      { offset: 0 },
    );
  }
  const magic = c.bytes(4, "magic");
  if (
    magic[0] !== 0x47 || magic[1] !== 0x47 || magic[2] !== 0x55 ||
    magic[3] !== 0x46
  ) {
    throw new GGUFFormatError(
      `Not a GGUF file: bad magic ${describeMagic(magic)}`,
      { offset: 0 },
    );
  }
  const version = c.u32("version");
  if (version === 0 || version > GGUF_VERSION) {
    const hint = (version & 0xffff) === 0 && version !== 0
      ? " (the file may be big-endian, which is not supported)"
      : ` (supported versions are 2 and ${GGUF_VERSION})`;
    throw new GGUFFormatError(
      `Unsupported GGUF version: ${version}${hint}`,
      { offset: 4 },
    );
  }
  if (version === 1) {
    throw new GGUFFormatError(
      "Unsupported GGUF version: 1 (GGUF v1 is no longer supported)",
      { offset: 4 },
    );
  }

  // Counts. Check them against the bytes left before using them.
  const nTensorsBig = c.i64("tensor count");
  const nKvBig = c.i64("key-value count");
  const rem = BigInt(c.remaining);
  if (
    nTensorsBig < 0n || nTensorsBig * BigInt(MIN_TENSOR_INFO_BYTES) > rem
  ) {
    throw new GGUFFormatError(
      `Invalid tensor count: ${nTensorsBig} tensors cannot fit in the remaining ${rem} bytes`,
      { offset: 8 },
    );
  }
  if (nKvBig < 0n || nKvBig * BigInt(MIN_KV_BYTES) > rem) {
    throw new GGUFFormatError(
      `Invalid key-value count: ${nKvBig} pairs cannot fit in the remaining ${rem} bytes`,
      { offset: 16 },
    );
  }
  if (
    nTensorsBig * BigInt(MIN_TENSOR_INFO_BYTES) +
        nKvBig * BigInt(MIN_KV_BYTES) > rem
  ) {
    throw new GGUFFormatError(
      `Invalid counts: ${nTensorsBig} tensors and ${nKvBig} key-value pairs cannot fit in the remaining ${rem} bytes`,
      { offset: 8 },
    );
  }
  const nTensors = Number(nTensorsBig);
  const nKv = Number(nKvBig);

  // Key-value pairs.
  const kv = new Map<string, GGUFValue>();
  for (let i = 0; i < nKv; i++) {
    const at = c.pos;
    const key = c.string(`key ${i}`);
    if (key.length === 0) {
      throw new GGUFFormatError(`Invalid key: key ${i} is empty`, {
        offset: at,
      });
    }
    if (kv.has(key)) {
      throw new GGUFFormatError(`Duplicate key: "${key}"`, { offset: at });
    }
    const typeAt = c.pos;
    const type = c.u32(`type of key "${key}"`);
    if (type === GGUFValueType.ARRAY) {
      const itemType = c.u32(`element type of key "${key}"`);
      if (itemType === GGUFValueType.ARRAY) {
        throw new GGUFFormatError(
          `Unsupported value type: key "${key}" is a nested array`,
          { offset: typeAt },
        );
      }
      if (!isScalarType(itemType)) {
        throw new GGUFFormatError(
          `Unknown value type: ${itemType} for elements of key "${key}"`,
          { offset: typeAt },
        );
      }
      const countAt = c.pos;
      const count = c.u64(`element count of key "${key}"`);
      const minSize = itemType === 8 ? 8 : SCALAR_SIZE[itemType];
      if (
        count > BigInt(GGUF_MAX_ARRAY_ELEMENTS) ||
        count * BigInt(minSize) > BigInt(c.remaining)
      ) {
        throw new GGUFFormatError(
          `Invalid array length: key "${key}" claims ${count} ${
            ggufValueTypeName(itemType)
          } elements but only ${c.remaining} bytes remain`,
          { offset: countAt },
        );
      }
      kv.set(key, c.array(itemType, Number(count), `value of key "${key}"`));
    } else {
      if (!isScalarType(type)) {
        throw new GGUFFormatError(
          `Unknown value type: ${type} for key "${key}"`,
          { offset: typeAt },
        );
      }
      kv.set(key, c.scalar(type, `value of key "${key}"`));
    }
  }

  // Alignment.
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const alignKv = kv.get(GGUF_KEY_ALIGNMENT);
  if (alignKv !== undefined) {
    if (alignKv.type !== GGUFValueType.UINT32) {
      throw new GGUFFormatError(
        `Invalid alignment: "${GGUF_KEY_ALIGNMENT}" must be UINT32 but is ${ggufValueTypeName(alignKv.type)}`,
      );
    }
    alignment = alignKv.value;
    if (alignment === 0 || (alignment & (alignment - 1)) !== 0) {
      throw new GGUFFormatError(
        `Invalid alignment: ${alignment} is not a power of two`,
      );
    }
  }

  // Tensor infos.
  const tensors: GGUFTensorInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const at = c.pos;
    const name = c.string(`name of tensor ${i}`);
    const nameBytes = UTF8_ENCODER.encode(name).length;
    if (nameBytes === 0) {
      throw new GGUFFormatError(`Invalid tensor name: tensor ${i} is unnamed`, {
        offset: at,
      });
    }
    if (nameBytes >= GGML_MAX_NAME) {
      throw new GGUFFormatError(
        `Invalid tensor name: "${name}" is ${nameBytes} bytes long, the limit is ${GGML_MAX_NAME - 1}`,
        { offset: at },
      );
    }
    if (names.has(name)) {
      throw new GGUFFormatError(`Duplicate tensor name: "${name}"`, {
        offset: at,
      });
    }
    names.add(name);
    const nDimsAt = c.pos;
    const nDims = c.u32(`dimension count of tensor "${name}"`);
    if (nDims === 0 || nDims > GGML_MAX_DIMS) {
      throw new GGUFFormatError(
        `Invalid tensor dimensions: tensor "${name}" has ${nDims} dimensions, expected 1 to ${GGML_MAX_DIMS}`,
        { offset: nDimsAt },
      );
    }
    const dims: number[] = [];
    let nElements = 1n;
    for (let d = 0; d < nDims; d++) {
      const dimAt = c.pos;
      const ne = c.i64(`dimension ${d} of tensor "${name}"`);
      if (ne <= 0n) {
        throw new GGUFFormatError(
          `Invalid tensor shape: dimension ${d} of tensor "${name}" is ${ne}`,
          { offset: dimAt },
        );
      }
      nElements *= ne;
      if (nElements > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new GGUFFormatError(
          `Invalid tensor shape: tensor "${name}" has more than ${Number.MAX_SAFE_INTEGER} elements`,
          { offset: dimAt },
        );
      }
      dims.push(Number(ne));
    }
    const typeAt = c.pos;
    const type = c.u32(`type of tensor "${name}"`);
    const info = TYPE_INFO.get(type);
    if (info === undefined) {
      throw new GGUFFormatError(
        `Unknown tensor type: ${type} for tensor "${name}"`,
        { offset: typeAt },
      );
    }
    if (dims[0] % info.blockSize !== 0) {
      throw new GGUFFormatError(
        `Invalid tensor shape: tensor "${name}" of type ${info.name} has ${
          dims[0]
        } elements per row, not a multiple of the block size ${info.blockSize}`,
        { offset: typeAt },
      );
    }
    const size = Number(nElements) / info.blockSize * info.typeSize;
    const offsetAt = c.pos;
    const offset = c.u64(`data offset of tensor "${name}"`);
    if (offset > BigInt(fileSize)) {
      throw new GGUFFormatError(
        `Tensor data out of bounds: tensor "${name}" has offset ${offset}, past the end of the ${fileSize}-byte file`,
        { offset: offsetAt },
      );
    }
    tensors.push({
      name,
      dims,
      type,
      offset: Number(offset),
      size,
      nElements: Number(nElements),
    });
  }
  const headerSize = c.pos;
  const dataOffset = nTensors > 0 ? alignUp(headerSize, alignment) : headerSize;

  // Tensor data layout: each tensor must start where the previous one ends
  // (padded to the alignment), as llama.cpp requires, and lie inside the file.
  let expected = 0;
  for (const t of tensors) {
    if (t.offset % alignment !== 0) {
      throw new GGUFFormatError(
        `Misaligned tensor data: tensor "${t.name}" has offset ${t.offset}, not a multiple of the alignment ${alignment}`,
      );
    }
    if (t.offset !== expected) {
      throw new GGUFFormatError(
        `Invalid tensor offset: tensor "${t.name}" has offset ${t.offset}, expected ${expected}`,
      );
    }
    const end = dataOffset + t.offset + t.size;
    if (end > fileSize) {
      throw new GGUFFormatError(
        `Tensor data out of bounds: tensor "${t.name}" spans bytes ${
          dataOffset + t.offset
        } to ${end} but the file is ${fileSize} bytes long`,
      );
    }
    expected = alignUp(t.offset + t.size, alignment);
  }

  return {
    version,
    kv,
    tensors,
    dataOffset,
    alignment,
    headerSize,
    fileSize,
  };
}

export function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

/**
 * Parses and validates a GGUF file held in memory.
 *
 * @example Read the architecture of a model
 * ```ts
 * const file = readGGUF(await Deno.readFile("model.gguf"));
 * const arch = file.kv.get("general.architecture")?.value;
 * ```
 *
 * @param bytes The whole file, or a prefix of it together with
 * `options.fileSize`.
 * @param options Reader options.
 * @returns The parsed header.
 * @throws {GGUFFormatError} If the bytes are not a valid GGUF file, or the
 * prefix is too short to contain the header.
 */
export function readGGUF(
  bytes: Uint8Array,
  options: ReadGGUFOptions = {},
): GGUFFile {
  const fileSize = options.fileSize ?? bytes.length;
  if (!Number.isSafeInteger(fileSize) || fileSize < bytes.length) {
    throw new RangeError(
      `Invalid file size: ${fileSize} is smaller than the ${bytes.length} bytes given`,
    );
  }
  try {
    return parse(bytes, fileSize);
  } catch (e) {
    if (e instanceof NeedMoreBytes) {
      throw new GGUFFormatError(
        `Incomplete GGUF header: parsing needs the first ${e.needed} bytes but only ${bytes.length} were given`,
        { offset: bytes.length },
      );
    }
    throw e;
  }
}

const INITIAL_READ = 16 << 20;

/**
 * Reads and validates the header of a GGUF file on disk. Only the header
 * region is read (progressively, starting with 16 MiB), so this is cheap even
 * for multi-gigabyte models; tensor data ranges are checked against the file
 * size.
 *
 * @param path Path of the file.
 * @returns The parsed header.
 * @throws {GGUFFormatError} If the file is not a valid GGUF file.
 */
export async function readGGUFFile(path: string | URL): Promise<GGUFFile> {
  using file = await Deno.open(path, { read: true });
  const fileSize = (await file.stat()).size;
  let buf: Uint8Array = new Uint8Array(0);
  let want = Math.min(INITIAL_READ, fileSize);
  for (;;) {
    buf = await growBuffer(file, buf, want);
    try {
      return parse(buf, fileSize);
    } catch (e) {
      if (!(e instanceof NeedMoreBytes)) throw e;
      want = Math.min(fileSize, Math.max(e.needed, buf.length * 4));
    }
  }
}

/**
 * Synchronous variant of {@linkcode readGGUFFile}.
 *
 * @param path Path of the file.
 * @returns The parsed header.
 * @throws {GGUFFormatError} If the file is not a valid GGUF file.
 */
export function readGGUFFileSync(path: string | URL): GGUFFile {
  using file = Deno.openSync(path, { read: true });
  const fileSize = file.statSync().size;
  let buf: Uint8Array = new Uint8Array(0);
  let want = Math.min(INITIAL_READ, fileSize);
  for (;;) {
    buf = growBufferSync(file, buf, want);
    try {
      return parse(buf, fileSize);
    } catch (e) {
      if (!(e instanceof NeedMoreBytes)) throw e;
      want = Math.min(fileSize, Math.max(e.needed, buf.length * 4));
    }
  }
}

async function growBuffer(
  file: Deno.FsFile,
  old: Uint8Array,
  size: number,
): Promise<Uint8Array> {
  const buf = new Uint8Array(size);
  buf.set(old);
  let pos = old.length;
  await file.seek(pos, Deno.SeekMode.Start);
  while (pos < size) {
    const n = await file.read(buf.subarray(pos));
    if (n === null) break;
    pos += n;
  }
  return pos === size ? buf : buf.subarray(0, pos);
}

function growBufferSync(
  file: Deno.FsFile,
  old: Uint8Array,
  size: number,
): Uint8Array {
  const buf = new Uint8Array(size);
  buf.set(old);
  let pos = old.length;
  file.seekSync(pos, Deno.SeekMode.Start);
  while (pos < size) {
    const n = file.readSync(buf.subarray(pos));
    if (n === null) break;
    pos += n;
  }
  return pos === size ? buf : buf.subarray(0, pos);
}

/**
 * Returns the bytes of one tensor from a GGUF file held in memory.
 *
 * @param bytes The whole file.
 * @param file The header parsed from `bytes`.
 * @param tensor The tensor or its name.
 * @returns A view of the tensor data (no copy).
 * @throws {RangeError} If there is no such tensor.
 */
export function tensorData(
  bytes: Uint8Array,
  file: GGUFFile,
  tensor: GGUFTensorInfo | string,
): Uint8Array {
  const t = typeof tensor === "string" ? file.tensors.find((x) => x.name === tensor) : tensor;
  if (t === undefined) {
    throw new RangeError(`Unknown tensor: "${tensor}"`);
  }
  const start = file.dataOffset + t.offset;
  return bytes.subarray(start, start + t.size);
}
