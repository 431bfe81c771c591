// Images made by the vision tests: deterministic RGB pictures and small encoders for PNG, BMP
// and GIF (written here so nothing is downloaded; the engine's own decoder reads them back).

/** An RGB picture: 3 bytes per pixel, rows top to bottom. */
export interface Rgb {
  data: Uint8Array<ArrayBuffer>;
  width: number;
  height: number;
}

/** A deterministic picture: gradients and a few shapes, seeded so each seed differs. */
export function picture(width: number, height: number, seed = 0): Rgb {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      const inDisc = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (Math.min(width, height) / 3) ** 2;
      data[i] = (x * 255 / Math.max(1, width - 1) + seed * 40) & 255;
      data[i + 1] = (y * 255 / Math.max(1, height - 1) + seed * 90) & 255;
      data[i + 2] = inDisc ? 230 - seed * 30 : ((x ^ y) * 5 + seed * 17) & 255;
    }
  }
  return { data, width, height };
}

/** The same picture with every channel rounded to 6 levels (a 216-colour palette, GIF-exact). */
export function palettized(img: Rgb): Rgb {
  const data = img.data.map((v) => Math.round(v / 51) * 51);
  return { ...img, data };
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function chunk(type: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, body.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(body, 8);
  view.setUint32(8 + body.length, crc32(out.subarray(4, 8 + body.length)));
  return out;
}

/** A PNG IHDR chunk (8-bit RGB) declaring any size. */
export function pngHeader(width: number, height: number): Uint8Array<ArrayBuffer> {
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, width);
  v.setUint32(4, height);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return concat([new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr)]);
}

async function zlib(data: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  const stream = new Blob([data]).stream().pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Encodes a PNG (8-bit RGB, no filter). */
export async function encodePng(img: Rgb): Promise<Uint8Array<ArrayBuffer>> {
  const raw = new Uint8Array(img.height * (1 + img.width * 3));
  for (let y = 0; y < img.height; y++) {
    raw[y * (1 + img.width * 3)] = 0; // filter: none
    raw.set(img.data.subarray(y * img.width * 3, (y + 1) * img.width * 3), y * (1 + img.width * 3) + 1);
  }
  return concat([pngHeader(img.width, img.height), chunk("IDAT", await zlib(raw)), chunk("IEND", new Uint8Array())]);
}

/** Encodes a 24-bit BMP (bottom-up rows padded to 4 bytes, BGR). */
export function encodeBmp(img: Rgb): Uint8Array<ArrayBuffer> {
  const stride = Math.ceil(img.width * 3 / 4) * 4;
  const size = 54 + stride * img.height;
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  out.set([0x42, 0x4d], 0);
  v.setUint32(2, size, true);
  v.setUint32(10, 54, true);
  v.setUint32(14, 40, true);
  v.setInt32(18, img.width, true);
  v.setInt32(22, img.height, true);
  v.setUint16(26, 1, true);
  v.setUint16(28, 24, true);
  v.setUint32(34, stride * img.height, true);
  for (let y = 0; y < img.height; y++) {
    const row = 54 + (img.height - 1 - y) * stride;
    for (let x = 0; x < img.width; x++) {
      const i = (y * img.width + x) * 3;
      out[row + x * 3] = img.data[i + 2];
      out[row + x * 3 + 1] = img.data[i + 1];
      out[row + x * 3 + 2] = img.data[i];
    }
  }
  return out;
}

/**
 * Encodes a GIF of a palettized picture (channels in multiples of 51: a 6×6×6 colour cube).
 * The LZW stream sends one literal code per pixel and a clear code every 254 codes, so codes
 * stay 9 bits wide: valid and simple, if not small.
 */
export function encodeGif(img: Rgb): Uint8Array<ArrayBuffer> {
  const bytes: number[] = [];
  const u16 = (n: number) => bytes.push(n & 255, n >> 8);
  bytes.push(...new TextEncoder().encode("GIF89a"));
  u16(img.width);
  u16(img.height);
  bytes.push(0xf7, 0, 0); // global colour table of 256 entries
  for (let i = 0; i < 256; i++) {
    if (i < 216) bytes.push(Math.floor(i / 36) * 51, Math.floor(i / 6) % 6 * 51, i % 6 * 51);
    else bytes.push(0, 0, 0);
  }
  bytes.push(0x2c);
  u16(0);
  u16(0);
  u16(img.width);
  u16(img.height);
  bytes.push(0, 8); // no local table; LZW minimum code size 8
  const codes: number[] = [256];
  let sinceClear = 0;
  for (let p = 0; p < img.width * img.height; p++) {
    const [r, g, b] = [img.data[p * 3], img.data[p * 3 + 1], img.data[p * 3 + 2]].map((c) => Math.round(c / 51));
    codes.push(r * 36 + g * 6 + b);
    if (++sinceClear === 254) {
      codes.push(256);
      sinceClear = 0;
    }
  }
  codes.push(257);
  const packed: number[] = [];
  let acc = 0;
  let nbits = 0;
  for (const c of codes) {
    acc |= c << nbits;
    nbits += 9;
    while (nbits >= 8) {
      packed.push(acc & 255);
      acc >>>= 8;
      nbits -= 8;
    }
  }
  if (nbits > 0) packed.push(acc & 255);
  for (let i = 0; i < packed.length; i += 255) {
    const block = packed.slice(i, i + 255);
    bytes.push(block.length, ...block);
  }
  bytes.push(0, 0x3b);
  return new Uint8Array(bytes);
}
