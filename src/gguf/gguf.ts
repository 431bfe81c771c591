/**
 * GGUF files: the format's types, a strict reader, F16 helpers and a writer. This module is the
 * folder's face; the parts are types.ts, reader.ts, f16.ts and writer.ts.
 *
 * @module
 */
export {
  GGML_MAX_DIMS,
  GGML_MAX_NAME,
  GGMLType,
  type GGMLTypeInfo,
  ggmlTypeInfo,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_KEY_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_MAX_ARRAY_ELEMENTS,
  GGUF_MAX_STRING_LENGTH,
  GGUF_VERSION,
  type GGUFArrayTypeMap,
  type GGUFArrayValue,
  type GGUFFile,
  GGUFFormatError,
  type GGUFScalarType,
  type GGUFScalarTypeMap,
  type GGUFScalarValue,
  type GGUFTensorInfo,
  type GGUFValue,
  GGUFValueType,
  type ReadGGUFOptions,
  tensorByteSize,
} from "./types.ts";
export { ggufValueTypeName, readGGUF, readGGUFFile, readGGUFFileSync, tensorData } from "./reader.ts";
export { decodeFloatTensor, f16BitsToF32, f32ArrayToF16, f32ToF16Bits } from "./f16.ts";
export { type GGUFTensorSource, GGUFWriter, type GGUFWriterOptions } from "./writer.ts";
