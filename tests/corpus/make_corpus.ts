/**
 * The bad-input corpus, made by code (nothing binary is committed): malformed GGUF files derived
 * from one small valid model — bad magic, wrong versions, absurd counts and dimensions, offsets
 * past the end, wrong hyperparameters, truncation at every section boundary, random byte flips —
 * and bad prompts. Deterministic: the same cases, byte for byte, on every run.
 *
 * CLI: `deno run -A tests/corpus/make_corpus.ts <dir>` writes every file into <dir> for a look.
 *
 * @module
 */
import { join } from "node:path";
import { cacheDir, ensureSource } from "../../native/build/engine.ts";
import { FIXTURE_GENERATOR_VERSION, makeTextModel } from "../../src/fixtures/text.ts";
import { type GGUFValue, GGUFValueType, GGUFWriter, readGGUF, readGGUFFile } from "../../src/gguf/gguf.ts";

/** One malformed (or odd) model file. */
export interface CorpusFile {
  /** Unique name, e.g. "version-99". */
  name: string;
  /** Group: magic, version, counts, kv, hparams, tensors, truncated, flips. */
  group: string;
  /** The file's bytes. */
  bytes: Uint8Array;
}

/** Tokens of the base model's vocabulary: the first 512 of llama.cpp's SPM vocabulary (bytes included). */
export const BASE_VOCAB = 512;

/**
 * The valid model every case derives from: llama architecture, one layer, 16 wide, a 512-token
 * SPM vocabulary — about 80 KB, so hundreds of variants load in seconds. Made once and cached.
 */
export async function baseModel(): Promise<{ path: string; bytes: Uint8Array }> {
  const dir = join(cacheDir(), "fixtures");
  const path = join(dir, `corpus-base-v${FIXTURE_GENERATOR_VERSION}.gguf`);
  try {
    return { path, bytes: await Deno.readFile(path) };
  } catch { /* make it */ }
  await Deno.mkdir(dir, { recursive: true });
  const src = await ensureSource(false);
  const spm = await readGGUFFile(join(src, "models", "ggml-vocab-llama-spm.gguf"));
  const w = new GGUFWriter();
  for (const [key, value] of spm.kv) {
    if (!key.startsWith("tokenizer.")) continue;
    if (value.type === GGUFValueType.ARRAY && value.value.length > BASE_VOCAB) {
      w.addKV(key, { ...value, value: sliceArray(value.value, BASE_VOCAB) } as GGUFValue);
    } else {
      w.addKV(key, value as GGUFValue);
    }
  }
  const vocabPath = `${path}.vocab.${Deno.pid}.tmp`;
  await Deno.writeFile(vocabPath, w.toBytes());
  const tmp = `${path}.${Deno.pid}.tmp`;
  try {
    await makeTextModel(tmp, { vocabPath, nEmbd: 16, nHead: 2, nLayer: 1, nFf: 32, name: "loupe-corpus-base" });
  } finally {
    await Deno.remove(vocabPath).catch(() => {});
  }
  await Deno.rename(tmp, path);
  return { path, bytes: await Deno.readFile(path) };
}

/** Where each section of a GGUF file lies (the base file is valid, so this never fails on it). */
export interface Layout {
  /** Each key-value pair: its start, where its type id is, where its value starts, and its end. */
  kvs: Array<{ key: string; start: number; typeAt: number; valueAt: number; end: number; type: number }>;
  /** Each tensor info: start, where its dims, type and offset are, and end. */
  tensors: Array<{ name: string; start: number; nDimsAt: number; typeAt: number; offsetAt: number; end: number }>;
  /** End of the header (before padding). */
  headerEnd: number;
  /** Start of the tensor data. */
  dataOffset: number;
  /** Absolute [start, end) of each tensor's data. */
  data: Array<[number, number]>;
}

const SCALAR: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/** Walks a valid GGUF file and records its sections. */
export function layout(bytes: Uint8Array): Layout {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = 8;
  const nTensors = Number(v.getBigUint64(p, true));
  const nKv = Number(v.getBigUint64(p + 8, true));
  p += 16;
  const str = () => {
    const n = Number(v.getBigUint64(p, true));
    const s = new TextDecoder().decode(bytes.subarray(p + 8, p + 8 + n));
    p += 8 + n;
    return s;
  };
  const skipValue = (type: number) => {
    if (type === 8) str();
    else if (type === 9) {
      const item = v.getUint32(p, true);
      const count = Number(v.getBigUint64(p + 4, true));
      p += 12;
      for (let i = 0; i < count; i++) skipValue(item);
    } else p += SCALAR[type];
  };
  const kvs: Layout["kvs"] = [];
  for (let i = 0; i < nKv; i++) {
    const start = p;
    const key = str();
    const typeAt = p;
    const type = v.getUint32(p, true);
    p += 4;
    const valueAt = p;
    skipValue(type);
    kvs.push({ key, start, typeAt, valueAt, end: p, type });
  }
  const file = readGGUF(bytes);
  const tensors: Layout["tensors"] = [];
  for (let i = 0; i < nTensors; i++) {
    const start = p;
    const name = str();
    const nDimsAt = p;
    const nDims = v.getUint32(p, true);
    p += 4 + 8 * nDims;
    const typeAt = p;
    p += 4;
    const offsetAt = p;
    p += 8;
    tensors.push({ name, start, nDimsAt, typeAt, offsetAt, end: p });
  }
  return {
    kvs,
    tensors,
    headerEnd: p,
    dataOffset: file.dataOffset,
    data: file.tensors.map((t) => [file.dataOffset + t.offset, file.dataOffset + t.offset + t.size]),
  };
}

/** A deterministic generator (xorshift32). */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

/** The first `n` elements of an array value (a typed array or a string array). */
function sliceArray<T>(value: T, n: number): T {
  return (value as unknown as { slice(a: number, b: number): T }).slice(0, n);
}

function patched(base: Uint8Array, edits: (v: DataView, b: Uint8Array) => void): Uint8Array {
  const b = base.slice();
  edits(new DataView(b.buffer), b);
  return b;
}

/** Rebuilds the base file with changed key-value pairs (well-formed GGUF, wrong content). */
function rebuilt(base: Uint8Array, change: (kv: Map<string, GGUFValue>) => void): Uint8Array {
  const file = readGGUF(base);
  const kv = new Map(file.kv);
  change(kv);
  const w = new GGUFWriter();
  for (const [k, val] of kv) w.addKV(k, val);
  for (const t of file.tensors) {
    const at = file.dataOffset + t.offset;
    w.addTensor(t.name, t.dims, t.type, base.slice(at, at + t.size));
  }
  return w.toBytes();
}

const u32 = (value: number): GGUFValue => ({ type: GGUFValueType.UINT32, value });
const f32 = (value: number): GGUFValue => ({ type: GGUFValueType.FLOAT32, value });
const str = (value: string): GGUFValue => ({ type: GGUFValueType.STRING, value });

/** Every corpus file, derived from `base` (the bytes of {@linkcode baseModel}). */
export function* corpus(base: Uint8Array): Generator<CorpusFile> {
  const L = layout(base);
  const kvAt = (key: string) => {
    const kv = L.kvs.find((k) => k.key === key);
    if (!kv) throw new Error(`the base model has no key ${key}`);
    return kv;
  };
  const f = (group: string, name: string, bytes: Uint8Array): CorpusFile => ({
    group,
    name: `${group}-${name}`,
    bytes,
  });

  // magic
  const magics: Record<string, number[]> = {
    zeros: [0, 0, 0, 0],
    "byte-swapped": [0x46, 0x55, 0x47, 0x47],
    ggml: [0x67, 0x67, 0x6d, 0x6c],
    ggjt: [0x74, 0x6a, 0x67, 0x67],
    lowercase: [0x67, 0x67, 0x75, 0x66],
    text: [0x7b, 0x22, 0x61, 0x22],
  };
  for (const [name, m] of Object.entries(magics)) yield f("magic", name, patched(base, (_, b) => b.set(m, 0)));
  yield f("magic", "empty", new Uint8Array());
  yield f("magic", "html", new TextEncoder().encode("<!DOCTYPE html><html><body>404 Not Found</body></html>\n"));

  // version
  for (const ver of [0, 1, 4, 99, 0x03000000, 0xffffffff]) {
    yield f("version", String(ver), patched(base, (v) => v.setUint32(4, ver, true)));
  }

  // counts
  const nT = L.tensors.length;
  const nKv = L.kvs.length;
  for (
    const [name, n] of [["2^40", 1n << 40n], ["2^63-1", (1n << 63n) - 1n], ["-1", -1n], ["plus1", BigInt(nT + 1)], [
      "minus1",
      BigInt(nT - 1),
    ], ["zero", 0n]] as const
  ) {
    yield f("counts", `tensors-${name}`, patched(base, (v) => v.setBigInt64(8, n, true)));
  }
  for (
    const [name, n] of [["2^40", 1n << 40n], ["-1", -1n], ["plus1", BigInt(nKv + 1)], ["minus1", BigInt(nKv - 1)], [
      "zero",
      0n,
    ]] as const
  ) {
    yield f("counts", `kv-${name}`, patched(base, (v) => v.setBigInt64(16, n, true)));
  }

  // key-value bytes
  const first = L.kvs[0];
  yield f("kv", "key-length-2^40", patched(base, (v) => v.setBigUint64(first.start, 1n << 40n, true)));
  yield f("kv", "key-length-0", patched(base, (v) => v.setBigUint64(first.start, 0n, true)));
  yield f(
    "kv",
    "key-length-plus1",
    patched(base, (v, b) => v.setBigUint64(first.start, v.getBigUint64(first.start, true) + 1n, true) ?? b),
  );
  yield f("kv", "key-invalid-utf8", patched(base, (_, b) => b.set([0xc3, 0x28], first.start + 8)));
  for (const type of [13, 99, 0xffffffff]) {
    yield f("kv", `type-${type}`, patched(base, (v) => v.setUint32(kvAt("llama.block_count").typeAt, type, true)));
  }
  yield f("kv", "u32-as-string", patched(base, (v) => v.setUint32(kvAt("llama.block_count").typeAt, 8, true)));
  yield f("kv", "u32-as-u64", patched(base, (v) => v.setUint32(kvAt("llama.block_count").typeAt, 10, true)));
  yield f("kv", "u32-as-f32", patched(base, (v) => v.setUint32(kvAt("llama.embedding_length").typeAt, 6, true)));
  const name = kvAt("general.name");
  yield f("kv", "string-length-2^40", patched(base, (v) => v.setBigUint64(name.valueAt, 1n << 40n, true)));
  yield f(
    "kv",
    "string-length-past-end",
    patched(base, (v) => v.setBigUint64(name.valueAt, BigInt(base.length), true)),
  );
  const tokens = kvAt("tokenizer.ggml.tokens");
  yield f("kv", "array-count-2^40", patched(base, (v) => v.setBigUint64(tokens.valueAt + 4, 1n << 40n, true)));
  yield f(
    "kv",
    "array-count-plus1",
    patched(base, (v) => v.setBigUint64(tokens.valueAt + 4, BigInt(BASE_VOCAB + 1), true)),
  );
  yield f("kv", "array-item-type-99", patched(base, (v) => v.setUint32(tokens.valueAt, 99, true)));
  yield f("kv", "array-item-type-array", patched(base, (v) => v.setUint32(tokens.valueAt, 9, true)));
  yield f("kv", "array-item-type-u8", patched(base, (v) => v.setUint32(tokens.valueAt, 0, true)));
  yield f(
    "kv",
    "duplicate-key",
    patched(base, (_, b) => {
      // rename the second key to the first one's name when they have the same length
      const a = L.kvs.find((k, i) => i > 0 && k.key.length === first.key.length);
      if (a) b.set(new TextEncoder().encode(first.key), a.start + 8);
    }),
  );

  // hyperparameters: a well-formed GGUF with values the engine must refuse (or survive)
  const hp: Array<[string, (kv: Map<string, GGUFValue>) => void]> = [
    ["embedding-0", (kv) => kv.set("llama.embedding_length", u32(0))],
    ["embedding-17", (kv) => kv.set("llama.embedding_length", u32(17))],
    ["embedding-2^31", (kv) => kv.set("llama.embedding_length", u32(2 ** 31))],
    ["heads-0", (kv) => kv.set("llama.attention.head_count", u32(0))],
    ["heads-3", (kv) => kv.set("llama.attention.head_count", u32(3))],
    ["heads-2^31", (kv) => kv.set("llama.attention.head_count", u32(2 ** 31))],
    ["heads-kv-0", (kv) => kv.set("llama.attention.head_count_kv", u32(0))],
    ["heads-kv-3", (kv) => kv.set("llama.attention.head_count_kv", u32(3))],
    ["heads-kv-more-than-heads", (kv) => kv.set("llama.attention.head_count_kv", u32(4))],
    ["layers-0", (kv) => kv.set("llama.block_count", u32(0))],
    ["layers-2", (kv) => kv.set("llama.block_count", u32(2))],
    ["layers-100000", (kv) => kv.set("llama.block_count", u32(100000))],
    ["layers-2^32-1", (kv) => kv.set("llama.block_count", u32(0xffffffff))],
    ["ff-0", (kv) => kv.set("llama.feed_forward_length", u32(0))],
    ["ff-33", (kv) => kv.set("llama.feed_forward_length", u32(33))],
    ["context-0", (kv) => kv.set("llama.context_length", u32(0))],
    ["context-1", (kv) => kv.set("llama.context_length", u32(1))],
    ["context-2^32-1", (kv) => kv.set("llama.context_length", u32(0xffffffff))],
    ["rope-dims-0", (kv) => kv.set("llama.rope.dimension_count", u32(0))],
    ["rope-dims-3", (kv) => kv.set("llama.rope.dimension_count", u32(3))],
    ["rope-dims-1000", (kv) => kv.set("llama.rope.dimension_count", u32(1000))],
    ["rope-base-0", (kv) => kv.set("llama.rope.freq_base", f32(0))],
    ["rope-base-nan", (kv) => kv.set("llama.rope.freq_base", f32(NaN))],
    ["rms-eps-nan", (kv) => kv.set("llama.attention.layer_norm_rms_epsilon", f32(NaN))],
    ["rms-eps-negative", (kv) => kv.set("llama.attention.layer_norm_rms_epsilon", f32(-1))],
    ["vocab-size-mismatch", (kv) => kv.set("llama.vocab_size", u32(BASE_VOCAB * 2))],
    ["file-type-999", (kv) => kv.set("general.file_type", u32(999))],
    ["arch-unknown", (kv) => kv.set("general.architecture", str("no-such-architecture"))],
    ["arch-empty", (kv) => kv.set("general.architecture", str(""))],
    ["arch-missing", (kv) => kv.delete("general.architecture")],
    ["arch-bert", (kv) => kv.set("general.architecture", str("bert"))],
    ["tokenizer-unknown", (kv) => kv.set("tokenizer.ggml.model", str("no-such-tokenizer"))],
    ["tokenizer-missing", (kv) => kv.delete("tokenizer.ggml.model")],
    ["tokens-missing", (kv) => kv.delete("tokenizer.ggml.tokens")],
    ["tokens-as-ints", (kv) =>
      kv.set("tokenizer.ggml.tokens", {
        type: 9,
        itemType: GGUFValueType.INT32,
        value: Int32Array.from({ length: BASE_VOCAB }, (_, i) => i),
      } as GGUFValue)],
    [
      "tokens-empty",
      (kv) => kv.set("tokenizer.ggml.tokens", { type: 9, itemType: GGUFValueType.STRING, value: [] } as GGUFValue),
    ],
    ["scores-short", (kv) => {
      const s = kv.get("tokenizer.ggml.scores")!;
      kv.set("tokenizer.ggml.scores", { ...s, value: sliceArray(s.value, 10) } as GGUFValue);
    }],
    ["token-types-short", (kv) => {
      const s = kv.get("tokenizer.ggml.token_type")!;
      kv.set("tokenizer.ggml.token_type", { ...s, value: sliceArray(s.value, 10) } as GGUFValue);
    }],
    ["bos-out-of-range", (kv) => kv.set("tokenizer.ggml.bos_token_id", u32(99999))],
    ["eos-out-of-range", (kv) => kv.set("tokenizer.ggml.eos_token_id", u32(0xffffffff))],
    ["unk-out-of-range", (kv) => kv.set("tokenizer.ggml.unknown_token_id", u32(BASE_VOCAB))],
    ["chat-template-garbage", (kv) => kv.set("tokenizer.chat_template", str("{% for %}{{{{ nonsense"))],
    ["alignment-0", (kv) => kv.set("general.alignment", u32(0))],
    ["alignment-3", (kv) => kv.set("general.alignment", u32(3))],
  ];
  for (const [n, change] of hp) {
    let bytes: Uint8Array;
    try {
      bytes = rebuilt(base, change);
    } catch {
      // the writer refuses the value (e.g. alignment): patch the bytes of a copy written the normal way
      bytes = patched(rebuilt(base, (kv) => kv.set("general.alignment", u32(32))), (v, b) => {
        const l = layout(b);
        const k = l.kvs.find((x) => x.key === "general.alignment")!;
        v.setUint32(k.valueAt, n === "alignment-0" ? 0 : 3, true);
      });
    }
    yield f("hparams", n, bytes);
  }

  // tensor infos
  const t0 = L.tensors[0];
  const tLast = L.tensors[L.tensors.length - 1];
  const tv = (edit: (v: DataView, b: Uint8Array) => void) => patched(base, edit);
  yield f("tensors", "ndims-0", tv((v) => v.setUint32(t0.nDimsAt, 0, true)));
  yield f("tensors", "ndims-5", tv((v) => v.setUint32(t0.nDimsAt, 5, true)));
  yield f("tensors", "ndims-2^32-1", tv((v) => v.setUint32(t0.nDimsAt, 0xffffffff, true)));
  yield f("tensors", "dim-0", tv((v) => v.setBigInt64(t0.nDimsAt + 4, 0n, true)));
  yield f("tensors", "dim-negative", tv((v) => v.setBigInt64(t0.nDimsAt + 4, -16n, true)));
  yield f("tensors", "dim-2^40", tv((v) => v.setBigInt64(t0.nDimsAt + 4, 1n << 40n, true)));
  yield f("tensors", "dim-2^62", tv((v) => v.setBigInt64(t0.nDimsAt + 4, 1n << 62n, true)));
  yield f(
    "tensors",
    "dims-swapped",
    tv((v) => {
      const a = v.getBigInt64(t0.nDimsAt + 4, true);
      const b2 = v.getBigInt64(t0.nDimsAt + 12, true);
      v.setBigInt64(t0.nDimsAt + 4, b2, true);
      v.setBigInt64(t0.nDimsAt + 12, a, true);
    }),
  );
  yield f(
    "tensors",
    "dim-doubled-halved",
    tv((v) => {
      v.setBigInt64(t0.nDimsAt + 4, v.getBigInt64(t0.nDimsAt + 4, true) * 2n, true);
      v.setBigInt64(t0.nDimsAt + 12, v.getBigInt64(t0.nDimsAt + 12, true) / 2n, true);
    }),
  );
  for (const type of [4, 5, 99, 0xffffffff, 1, /* F16: half the bytes */ 8 /* Q8_0 */]) {
    yield f("tensors", `type-${type}`, tv((v) => v.setUint32(t0.typeAt, type, true)));
  }
  yield f("tensors", "offset-past-end", tv((v) => v.setBigUint64(tLast.offsetAt, BigInt(base.length), true)));
  yield f("tensors", "offset-2^63", tv((v) => v.setBigUint64(tLast.offsetAt, 1n << 63n, true)));
  yield f(
    "tensors",
    "offset-misaligned",
    tv((v) => v.setBigUint64(tLast.offsetAt, v.getBigUint64(tLast.offsetAt, true) + 1n, true)),
  );
  yield f("tensors", "offset-overlapping", tv((v) => v.setBigUint64(tLast.offsetAt, 0n, true)));
  yield f("tensors", "name-length-0", tv((v) => v.setBigUint64(t0.start, 0n, true)));
  yield f("tensors", "name-length-2^40", tv((v) => v.setBigUint64(t0.start, 1n << 40n, true)));
  yield f("tensors", "name-renamed", tv((_, b) => b.set(new TextEncoder().encode("x"), t0.start + 8)));
  yield f(
    "tensors",
    "name-duplicate",
    tv((_, b) => {
      const other = L.tensors.find((t, i) => i > 0 && t.name.length === t0.name.length);
      if (other) b.set(new TextEncoder().encode(t0.name), other.start + 8);
    }),
  );
  yield f("tensors", "missing-output-norm", rebuiltWithout(base, "output_norm.weight"));
  yield f("tensors", "extra-tensor", rebuiltWithExtra(base));

  // truncated at every section boundary (and one byte either side of a few)
  const cuts = new Set<number>([4, 8, 16, 24, L.headerEnd, L.dataOffset, base.length - 1]);
  for (const k of L.kvs) cuts.add(k.start), cuts.add(k.valueAt);
  for (const t of L.tensors) cuts.add(t.start), cuts.add(t.offsetAt);
  for (const [s, e] of L.data) cuts.add(s + 1), cuts.add(Math.floor((s + e) / 2));
  for (const cut of [...cuts].filter((c) => c > 0 && c < base.length).sort((a, b) => a - b)) {
    yield f("truncated", `at-${cut}`, base.slice(0, cut));
  }

  // random byte flips: in the header (where a flip changes meaning) and anywhere
  const rand = rng(20240611);
  for (let i = 0; i < 60; i++) {
    const at = 24 + Math.floor(rand() * (L.headerEnd - 24));
    const bit = 1 << Math.floor(rand() * 8);
    yield f("flips", `header-${i}-at-${at}`, patched(base, (_, b) => (b[at] ^= bit)));
  }
  for (let i = 0; i < 20; i++) {
    const at = Math.floor(rand() * base.length);
    yield f("flips", `anywhere-${i}-at-${at}`, patched(base, (_, b) => (b[at] = Math.floor(rand() * 256))));
  }
  for (let i = 0; i < 20; i++) {
    yield f(
      "flips",
      `burst-${i}`,
      patched(base, (_, b) => {
        for (let k = 0; k < 8; k++) b[Math.floor(rand() * L.headerEnd)] = Math.floor(rand() * 256);
      }),
    );
  }
}

function rebuiltWithout(base: Uint8Array, tensor: string): Uint8Array {
  const file = readGGUF(base);
  const w = new GGUFWriter();
  for (const [k, val] of file.kv) w.addKV(k, val);
  for (const t of file.tensors) {
    if (t.name === tensor) continue;
    const at = file.dataOffset + t.offset;
    w.addTensor(t.name, t.dims, t.type, base.slice(at, at + t.size));
  }
  return w.toBytes();
}

function rebuiltWithExtra(base: Uint8Array): Uint8Array {
  const file = readGGUF(base);
  const w = new GGUFWriter();
  for (const [k, val] of file.kv) w.addKV(k, val);
  for (const t of file.tensors) {
    const at = file.dataOffset + t.offset;
    w.addTensor(t.name, t.dims, t.type, base.slice(at, at + t.size));
  }
  w.addTensor("blk.7.attn_q.weight", [16, 16], 0, new Float32Array(256));
  return w.toBytes();
}

/** One bad prompt: what to pass and how (text, raw bytes at the FFI boundary, or token ids). */
export interface BadPrompt {
  /** Unique name. */
  name: string;
  /** Text for generate/chat/tokenize. */
  text?: string;
  /** Raw bytes handed to loupe_tokenize (invalid UTF-8 where the TypeScript string cannot carry it). */
  bytes?: number[];
  /** Token ids for a session's generate. */
  tokens?: number[];
  /** Generate options, some of them bad. */
  options?: Record<string, unknown>;
  /** Longer than the context (a multiple of the context size, in words). */
  contextMultiple?: number;
  /** The error code every call (generate, session, chat) must give; without it any defined result passes. */
  expect?: string;
}

/** The bad prompts. */
export function badPrompts(): BadPrompt[] {
  return [
    { name: "empty", text: "" },
    { name: "nul", text: "\u0000" },
    { name: "nul-inside", text: "a\u0000b\u0000c" },
    { name: "lone-high-surrogate", text: "\ud800" },
    { name: "lone-low-surrogate", text: "x\udfffy" },
    { name: "bom-and-controls", text: "\ufeff\u0001\u0002\u001b[31m\u007f" },
    { name: "special-token-text", text: "<s></s><unk><|im_start|>" },
    { name: "long-unicode", text: "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ".repeat(200) },
    { name: "ffi-invalid-utf8", bytes: [0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1] },
    { name: "ffi-overlong-nul", bytes: [0x41, 0xc0, 0x80, 0x42] },
    { name: "ffi-truncated-sequence", bytes: [0x48, 0x69, 0xe2, 0x82] },
    { name: "ffi-surrogate-encoded", bytes: [0xed, 0xa0, 0x80] },
    { name: "ffi-nul-bytes", bytes: [0, 0, 0, 0] },
    { name: "ffi-all-bytes", bytes: Array.from({ length: 256 }, (_, i) => i) },
    { name: "longer-than-context", contextMultiple: 2 },
    { name: "much-longer-than-context", contextMultiple: 20 },
    { name: "tokens-out-of-range", tokens: [1, 1 << 30] },
    { name: "tokens-negative", tokens: [1, -5] },
    { name: "tokens-not-integers", tokens: [1, 2.5] },
    { name: "tokens-nan", tokens: [1, NaN] },
    { name: "tokens-empty", tokens: [] },
    { name: "max-tokens-nan", text: "Hi", options: { maxTokens: NaN }, expect: "INVALID_ARGUMENT" },
    { name: "max-tokens-negative", text: "Hi", options: { maxTokens: -1 }, expect: "INVALID_ARGUMENT" },
    { name: "max-tokens-fraction", text: "Hi", options: { maxTokens: 1.5 }, expect: "INVALID_ARGUMENT" },
    { name: "max-tokens-huge", text: "Hi", options: { maxTokens: 2 ** 40 }, expect: "INVALID_ARGUMENT" },
    { name: "temperature-nan", text: "Hi", options: { temperature: NaN, maxTokens: 2 }, expect: "INVALID_ARGUMENT" },
    { name: "temperature-negative", text: "Hi", options: { temperature: -3, maxTokens: 2 } },
    { name: "top-k-string", text: "Hi", options: { topK: "forty", maxTokens: 2 }, expect: "INVALID_ARGUMENT" },
    { name: "stop-not-strings", text: "Hi", options: { stop: [1, null], maxTokens: 2 }, expect: "INVALID_ARGUMENT" },
    { name: "stop-empty-string", text: "Hi", options: { stop: [""], maxTokens: 2 } },
    { name: "seed-negative", text: "Hi", options: { seed: -1, maxTokens: 2, temperature: 1 } },
  ];
}

if (import.meta.main) {
  const dir = Deno.args[0];
  if (!dir) throw new Error("usage: deno run -A tests/corpus/make_corpus.ts <dir>");
  await Deno.mkdir(dir, { recursive: true });
  const { bytes } = await baseModel();
  let n = 0;
  for (const c of corpus(bytes)) {
    await Deno.writeFile(join(dir, `${c.name}.gguf`), c.bytes);
    n++;
  }
  await Deno.writeTextFile(join(dir, "prompts.json"), JSON.stringify(badPrompts(), null, 2));
  console.log(`${n} files and ${badPrompts().length} prompts in ${dir}`);
}
