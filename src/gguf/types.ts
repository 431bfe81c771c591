/**
 * The GGUF format's constants and types, as llama.cpp's `ggml/include/gguf.h` defines them: value
 * types, ggml tensor types with their block sizes, the parsed file, and the format error.
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
export const TYPE_INFO: ReadonlyMap<number, GGMLTypeInfo> = new Map(
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
