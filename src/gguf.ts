/**
 * Reader, strict validator and writer for GGUF files (format versions 2 and 3).
 *
 * The layout follows llama.cpp's `ggml/include/gguf.h`: a little-endian
 * header (magic `GGUF`, version, tensor count, key-value count), the
 * key-value pairs, the tensor infos, padding up to the alignment, then the
 * tensor data blob, each tensor padded to the alignment.
 *
 * The reader never allocates an array from a count read from the file before
 * checking that the elements fit into the bytes that are left, so hostile or
 * corrupt files fail with a {@linkcode GGUFFormatError} instead of exhausting
 * memory.
 *
 * @module
 */

/** The four magic bytes at the start of every GGUF file. */
export const GGUF_MAGIC = "GGUF";

/** The GGUF version this module writes. */
export const GGUF_VERSION = 3;

/** Alignment of the tensor data used when `general.alignment` is absent. */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Key holding the data alignment (must be a `UINT32` power of two). */
export const GGUF_KEY_ALIGNMENT = "general.alignment";

/** Longest string llama.cpp accepts in a GGUF file (1 GiB). */
export const GGUF_MAX_STRING_LENGTH = 1024 * 1024 * 1024;

/** Largest array llama.cpp accepts in a GGUF file (2^30 elements). */
export const GGUF_MAX_ARRAY_ELEMENTS = 1024 * 1024 * 1024;

/** Most dimensions a tensor may have (`GGML_MAX_DIMS`). */
export const GGML_MAX_DIMS = 4;

/** Tensor names must be shorter than this many bytes (`GGML_MAX_NAME`). */
export const GGML_MAX_NAME = 64;

/** Type tags of GGUF key-value data (`enum gguf_type`). */
export const GGUFValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

/** A GGUF value type tag (one of the numbers in {@linkcode GGUFValueType}). */
export type GGUFValueType = (typeof GGUFValueType)[keyof typeof GGUFValueType];

/** The value types that are not `ARRAY`: scalars and array element types. */
export type GGUFScalarType = Exclude<GGUFValueType, 9>;

/** The JavaScript representation of each scalar GGUF type. */
export interface GGUFScalarTypeMap {
  /** `UINT8` */
  0: number;
  /** `INT8` */
  1: number;
  /** `UINT16` */
  2: number;
  /** `INT16` */
  3: number;
  /** `UINT32` */
  4: number;
  /** `INT32` */
  5: number;
  /** `FLOAT32` */
  6: number;
  /** `BOOL` */
  7: boolean;
  /** `STRING` */
  8: string;
  /** `UINT64` */
  10: bigint;
  /** `INT64` */
  11: bigint;
  /** `FLOAT64` */
  12: number;
}

/** The JavaScript representation of a GGUF array of each element type. */
export interface GGUFArrayTypeMap {
  /** `UINT8` elements */
  0: Uint8Array;
  /** `INT8` elements */
  1: Int8Array;
  /** `UINT16` elements */
  2: Uint16Array;
  /** `INT16` elements */
  3: Int16Array;
  /** `UINT32` elements */
  4: Uint32Array;
  /** `INT32` elements */
  5: Int32Array;
  /** `FLOAT32` elements */
  6: Float32Array;
  /** `BOOL` elements */
  7: boolean[];
  /** `STRING` elements */
  8: string[];
  /** `UINT64` elements */
  10: BigUint64Array;
  /** `INT64` elements */
  11: BigInt64Array;
  /** `FLOAT64` elements */
  12: Float64Array;
}

/** A scalar GGUF value together with its type tag. */
export type GGUFScalarValue = {
  [T in GGUFScalarType]: { type: T; value: GGUFScalarTypeMap[T] };
}[GGUFScalarType];

/** A GGUF array value together with its element type tag. */
export type GGUFArrayValue = {
  [T in GGUFScalarType]: {
    type: typeof GGUFValueType.ARRAY;
    itemType: T;
    value: GGUFArrayTypeMap[T];
  };
}[GGUFScalarType];

/**
 * A GGUF key-value value that keeps its GGUF type, so it can be written back
 * unchanged (for example `tokenizer.ggml.token_type` stays an `INT32` array).
 */
export type GGUFValue = GGUFScalarValue | GGUFArrayValue;

/** Tensor data types (`enum ggml_type`); removed types are left out. */
export const GGMLType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q8_1: 9,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  Q8_K: 15,
  IQ2_XXS: 16,
  IQ2_XS: 17,
  IQ3_XXS: 18,
  IQ1_S: 19,
  IQ4_NL: 20,
  IQ3_S: 21,
  IQ2_S: 22,
  IQ4_XS: 23,
  I8: 24,
  I16: 25,
  I32: 26,
  I64: 27,
  F64: 28,
  IQ1_M: 29,
  BF16: 30,
  TQ1_0: 34,
  TQ2_0: 35,
  MXFP4: 39,
  NVFP4: 40,
  Q1_0: 41,
  Q2_0: 42,
} as const;

/** A tensor data type tag (one of the numbers in {@linkcode GGMLType}). */
export type GGMLType = (typeof GGMLType)[keyof typeof GGMLType];

/** Size information of a tensor data type. */
export interface GGMLTypeInfo {
  /** Name as printed by ggml, e.g. `"Q4_K"`. */
  name: string;
  /** Elements per block. */
  blockSize: number;
  /** Bytes per block. */
  typeSize: number;
}

const QK_K = 256;
const TYPE_INFO: ReadonlyMap<number, GGMLTypeInfo> = new Map(
  ([
    ["F32", 1, 4],
    ["F16", 1, 2],
    ["Q4_0", 32, 2 + 16],
    ["Q4_1", 32, 2 + 2 + 16],
    ["Q5_0", 32, 2 + 4 + 16],
    ["Q5_1", 32, 2 + 2 + 4 + 16],
    ["Q8_0", 32, 2 + 32],
    ["Q8_1", 32, 2 + 2 + 32],
    ["Q2_K", 256, 2 + 2 + QK_K / 16 + QK_K / 4],
    ["Q3_K", 256, 2 + QK_K / 4 + QK_K / 8 + 12],
    ["Q4_K", 256, 2 + 2 + QK_K / 2 + 12],
    ["Q5_K", 256, 2 + 2 + QK_K / 2 + QK_K / 8 + 12],
    ["Q6_K", 256, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16],
    ["Q8_K", 256, 4 + QK_K + QK_K / 8],
    ["IQ2_XXS", 256, 2 + QK_K / 4],
    ["IQ2_XS", 256, 2 + QK_K / 4 + QK_K / 32],
    ["IQ3_XXS", 256, 2 + QK_K / 4 + QK_K / 8],
    ["IQ1_S", 256, 2 + QK_K / 8 + QK_K / 16],
    ["IQ4_NL", 32, 2 + 16],
    ["IQ3_S", 256, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4],
    ["IQ2_S", 256, 2 + QK_K / 4 + QK_K / 16],
    ["IQ4_XS", 256, 2 + 2 + QK_K / 2 + QK_K / 64],
    ["I8", 1, 1],
    ["I16", 1, 2],
    ["I32", 1, 4],
    ["I64", 1, 8],
    ["F64", 1, 8],
    ["IQ1_M", 256, QK_K / 8 + QK_K / 16 + QK_K / 32],
    ["BF16", 1, 2],
    ["TQ1_0", 256, 2 + 4 * 13],
    ["TQ2_0", 256, 2 + 64],
    ["MXFP4", 32, 1 + 16],
    ["NVFP4", 64, 4 + 32],
    ["Q1_0", 128, 2 + 16],
    ["Q2_0", 64, 2 + 16],
  ] as const).map(([name, blockSize, typeSize]) => [
    GGMLType[name],
    { name, blockSize, typeSize },
  ]),
);

/**
 * Returns the block size and block byte size of a tensor data type, or
 * `undefined` for a number that is not a (supported) ggml type.
 *
 * @param type The ggml type number.
 * @returns The type information, or `undefined`.
 */
export function ggmlTypeInfo(type: number): GGMLTypeInfo | undefined {
  return TYPE_INFO.get(type);
}

/**
 * Computes the number of bytes a contiguous tensor occupies.
 *
 * @param dims The shape, `ne0` (the contiguous dimension) first.
 * @param type The ggml type number.
 * @returns The size in bytes.
 * @throws {RangeError} If the type is unknown, `dims[0]` is not a multiple of
 * the type's block size, or the size is not a safe integer.
 */
export function tensorByteSize(dims: readonly number[], type: number): number {
  const info = TYPE_INFO.get(type);
  if (info === undefined) {
    throw new RangeError(`Unknown tensor type: ${type}`);
  }
  if (dims.length === 0 || dims[0] % info.blockSize !== 0) {
    throw new RangeError(
      `Invalid tensor shape: first dimension of [${dims}] is not a multiple of the ${info.name} block size ${info.blockSize}`,
    );
  }
  let n = 1n;
  for (const d of dims) n *= BigInt(d);
  const size = n / BigInt(info.blockSize) * BigInt(info.typeSize);
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError(`Invalid tensor shape: [${dims}] is too large`);
  }
  return Number(size);
}

/** Error thrown when bytes are not a valid GGUF file. */
export class GGUFFormatError extends Error {
  /** Byte offset in the file where the problem was found, when known. */
  readonly offset: number | undefined;

  /**
   * Creates a format error.
   *
   * @param message Sentence-case message with the detail after a colon.
   * @param options The byte offset of the problem and an optional cause.
   */
  constructor(
    message: string,
    options: { offset?: number; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "GGUFFormatError";
    this.offset = options.offset;
  }
}

/** Description of one tensor in a GGUF file. */
export interface GGUFTensorInfo {
  /** Tensor name, e.g. `"blk.0.attn_q.weight"`. */
  name: string;
  /** Shape with `ne0` (the contiguous dimension) first. */
  dims: number[];
  /** The ggml type number (see {@linkcode GGMLType}). */
  type: number;
  /** Offset of the data relative to {@linkcode GGUFFile.dataOffset}. */
  offset: number;
  /** Size of the data in bytes (without padding). */
  size: number;
  /** Number of elements. */
  nElements: number;
}

/** The parsed and validated header of a GGUF file. */
export interface GGUFFile {
  /** Format version (2 or 3). */
  version: number;
  /** Key-value pairs in file order, each with its GGUF type. */
  kv: Map<string, GGUFValue>;
  /** Tensor infos in file order. */
  tensors: GGUFTensorInfo[];
  /** Absolute offset of the tensor data blob. */
  dataOffset: number;
  /** Data alignment in bytes. */
  alignment: number;
  /** Bytes of the header (magic through the last tensor info). */
  headerSize: number;
  /** Size of the whole file in bytes. */
  fileSize: number;
}

/** Options for {@linkcode readGGUF}. */
export interface ReadGGUFOptions {
  /**
   * Size of the whole file when `bytes` is only a prefix of it. Defaults to
   * `bytes.length`. Tensor data ranges are validated against this size.
   */
  fileSize?: number;
}

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const UTF8_DECODER = new TextDecoder("utf-8", {
  fatal: true,
  ignoreBOM: true,
});
const UTF8_ENCODER = new TextEncoder();

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

const NUMERIC_ARRAY_CTORS: Readonly<Record<number, TypedArrayCtor>> = {
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

function isScalarType(t: number): t is GGUFScalarType {
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

function alignUp(n: number, alignment: number): number {
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

/**
 * Decodes `F32`, `F16` or `BF16` tensor bytes into 32-bit floats.
 *
 * @param data Raw tensor bytes (little-endian).
 * @param type The ggml type of the data.
 * @returns The values.
 * @throws {RangeError} For other types.
 */
export function decodeFloatTensor(data: Uint8Array, type: number): Float32Array {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  switch (type) {
    case GGMLType.F32: {
      const out = new Float32Array(data.length / 4);
      for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
      return out;
    }
    case GGMLType.F16: {
      const out = new Float32Array(data.length / 2);
      for (let i = 0; i < out.length; i++) {
        out[i] = f16BitsToF32(view.getUint16(i * 2, true));
      }
      return out;
    }
    case GGMLType.BF16: {
      const out = new Float32Array(data.length / 2);
      const u32 = new Uint32Array(out.buffer);
      for (let i = 0; i < out.length; i++) {
        u32[i] = view.getUint16(i * 2, true) << 16;
      }
      return out;
    }
    default:
      throw new RangeError(
        `Unsupported tensor type: cannot decode ${TYPE_INFO.get(type)?.name ?? type} to floats`,
      );
  }
}

const F32_SCRATCH = new Float32Array(1);
const U32_SCRATCH = new Uint32Array(F32_SCRATCH.buffer);

/**
 * Converts a number to IEEE 754 half-precision bits, rounding to nearest with
 * ties to even. The number is first rounded to single precision (as when it
 * comes from a `Float32Array`). Overflow gives infinity; NaN gives the
 * canonical quiet NaN `0x7e00` with the input's sign, as ggml does.
 *
 * @param value The number.
 * @returns The 16-bit pattern.
 */
export function f32ToF16Bits(value: number): number {
  F32_SCRATCH[0] = value;
  const x = U32_SCRATCH[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | (mant === 0 ? 0x7c00 : 0x7e00);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): value = m * 2^-24.
    const shift = 14 - e;
    if (shift > 24) return sign;
    const full = mant | 0x800000;
    let m = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (m & 1) === 1)) m++;
    return sign | m;
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++; // may carry to inf
  return h;
}

/**
 * Converts IEEE 754 half-precision bits to a number (exactly).
 *
 * @param bits The 16-bit pattern.
 * @returns The value.
 */
export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/**
 * Converts 32-bit floats to half-precision bit patterns with
 * {@linkcode f32ToF16Bits}.
 *
 * @param values The values.
 * @returns The 16-bit patterns.
 */
export function f32ArrayToF16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = f32ToF16Bits(values[i]);
  return out;
}

/** Tensor data accepted by {@linkcode GGUFWriter.addTensor}. */
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
