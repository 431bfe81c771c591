/**
 * Half-precision numbers: F16 conversions and float tensor decoding.
 *
 * @module
 */
import { GGMLType, TYPE_INFO } from "./types.ts";

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
