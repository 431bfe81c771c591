/**
 * The second bad-input corpus: a semantic mutator. Where make_corpus.ts breaks the container
 * (magic, counts, truncations, byte flips), this one keeps every file well-formed and changes
 * what it says: for every key the engine reads in each kind of model (text, embedding,
 * reranker) the values zero, one, huge, negative, NaN, a wrong value type, a wrong array length,
 * per-layer arrays with bad entries and strings the engine does not know; the key removed; keys
 * the engine reads, added (or replaced where the base has them) with such values; and for every tensor a type swap
 * of the same size (F32→I32, F16→I16). Projector mutants come from mutants_projector.ts.
 *
 * Deterministic: the same files, byte for byte, on every run. The bases are small fixtures made
 * by loupe's own GGUF writer (a 512-token vocabulary, 16–32 wide), so a thousand files load in
 * minutes.
 *
 * CLI: `deno run -A tests/corpus/mutants.ts [dir]` prints the count per base and group, and
 * writes every file into `dir` when given.
 *
 * @module
 */
import { join } from "node:path";
import { cacheDir, ensureSource } from "../../native/build/engine.ts";
import { FIXTURE_GENERATOR_VERSION, makeTextModel, type TextModelOptions } from "../../src/fixtures/text.ts";
import { EMBED_FIXTURE_VERSION, makeBertModel } from "../../src/fixtures/embed.ts";
import {
  GGMLType,
  type GGUFFile,
  type GGUFValue,
  GGUFValueType,
  GGUFWriter,
  readGGUF,
  readGGUFFile,
} from "../../src/gguf/gguf.ts";
import { baseModel, layout } from "./make_corpus.ts";

/** What a mutant is loaded as, and so what the runner does with it. */
export type MutantKind = "text" | "embedding" | "rerank" | "projector";

/** One mutated model file. */
export interface Mutant {
  /** Unique, stable name: `<base>/<group>/<key or tensor>=<what>`. */
  name: string;
  /** The mutation's group: value, type, array, string, removed, added, tensor, vocab, container. */
  group: string;
  /** How it is loaded. */
  kind: MutantKind;
  /** Makes the file's bytes (on demand: a runner makes only the files it loads). */
  make(): Uint8Array;
}

/** A base model the mutants derive from. */
export interface MutantBase {
  /** Short name, e.g. "llama". */
  name: string;
  /** How it and its mutants are loaded. */
  kind: Exclude<MutantKind, "projector">;
  /** Its bytes. */
  bytes: Uint8Array;
}

/** Tokens kept of the reference vocabularies. */
const VOCAB = 512;
/** Bump when the bases change. */
const BASES_VERSION = 1;

/** A vocabulary file with the first `n` tokens of one of llama.cpp's test vocabularies, cached. */
async function smallVocab(file: string, n: number): Promise<string> {
  const dir = join(cacheDir(), "fixtures");
  const path = join(dir, `vocab-${file.replace(/\.gguf$/, "")}-${n}.gguf`);
  if (await Deno.stat(path).then((s) => s.isFile, () => false)) return path;
  await Deno.mkdir(dir, { recursive: true });
  const src = await readGGUFFile(join(await ensureSource(false), "models", file));
  const w = new GGUFWriter();
  for (const [key, value] of src.kv) {
    if (!key.startsWith("tokenizer.")) continue;
    if (value.type === GGUFValueType.ARRAY && value.value.length > n && key !== "tokenizer.ggml.merges") {
      w.addKV(
        key,
        { ...value, value: (value.value as { slice(a: number, b: number): unknown }).slice(0, n) } as GGUFValue,
      );
    } else {
      w.addKV(key, value);
    }
  }
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeFile(tmp, w.toBytes());
  await Deno.rename(tmp, path);
  return path;
}

/** Makes (once) and reads a cached base file. */
async function cached(name: string, make: (path: string) => Promise<unknown>): Promise<Uint8Array> {
  const dir = join(cacheDir(), "fixtures");
  const path = join(
    dir,
    `mutant-base-${name}-v${BASES_VERSION}.${FIXTURE_GENERATOR_VERSION}.${EMBED_FIXTURE_VERSION}.gguf`,
  );
  try {
    return await Deno.readFile(path);
  } catch { /* make it */ }
  await Deno.mkdir(dir, { recursive: true });
  const tmp = `${path}.${Deno.pid}.tmp`;
  await make(tmp);
  await Deno.rename(tmp, path);
  return await Deno.readFile(path);
}

/**
 * The bases: llama (the corpus base: SPM vocabulary, one layer), qwen2vl (M-RoPE, grouped KV
 * heads, biases, tied output), gemma3 (sliding-window layers, its own head size), a BERT
 * embedder (WordPiece, CLS pooling), a BERT reranker (rank pooling, classifier head) and a llama
 * decoder embedder (last-token pooling).
 */
export async function mutantBases(): Promise<MutantBase[]> {
  const spm = await smallVocab("ggml-vocab-llama-spm.gguf", VOCAB);
  const wpm = await smallVocab("ggml-vocab-bert-bge.gguf", VOCAB);
  const small: Partial<TextModelOptions> = { nEmbd: 32, nHead: 2, nLayer: 2, nFf: 64, nCtxTrain: 512 };
  const text = (o: Partial<TextModelOptions>) => (p: string) => makeTextModel(p, { vocabPath: spm, ...small, ...o });
  return [
    { name: "llama", kind: "text", bytes: (await baseModel()).bytes },
    {
      name: "qwen2vl",
      kind: "text",
      bytes: await cached("qwen2vl", text({ architecture: "qwen2vl", nHeadKv: 1, seed: 11 })),
    },
    {
      name: "gemma3",
      kind: "text",
      bytes: await cached(
        "gemma3",
        text({ architecture: "gemma3", slidingWindow: 8, slidingWindowPattern: 2, headDim: 32, seed: 12 }),
      ),
    },
    {
      name: "bert",
      kind: "embedding",
      bytes: await cached(
        "bert",
        (p) =>
          makeBertModel(p, { vocabPath: wpm, nEmbd: 16, nHead: 2, nLayer: 2, nFf: 32, nCtxTrain: 128, pooling: "cls" }),
      ),
    },
    {
      name: "rerank",
      kind: "rerank",
      bytes: await cached("rerank", (p) =>
        makeBertModel(p, {
          vocabPath: wpm,
          nEmbd: 16,
          nHead: 2,
          nLayer: 1,
          nFf: 32,
          nCtxTrain: 128,
          pooling: "rank",
          seed: 2,
        })),
    },
    {
      name: "decoder",
      kind: "embedding",
      bytes: await cached("decoder", (p) =>
        makeTextModel(p, {
          vocabPath: spm,
          nEmbd: 16,
          nHead: 2,
          nLayer: 1,
          nFf: 32,
          seed: 13,
          chatTemplate: null,
          extraKv: { "llama.pooling_type": { type: GGUFValueType.UINT32, value: 3 } },
        })),
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// values

const u32 = (value: number): GGUFValue => ({ type: GGUFValueType.UINT32, value: value >>> 0 });
const i32 = (value: number): GGUFValue => ({ type: GGUFValueType.INT32, value: value | 0 });
const f32 = (value: number): GGUFValue => ({ type: GGUFValueType.FLOAT32, value });
const str = (value: string): GGUFValue => ({ type: GGUFValueType.STRING, value });
const bool = (value: boolean): GGUFValue => ({ type: GGUFValueType.BOOL, value });
const u32s = (values: number[]): GGUFValue => ({
  type: GGUFValueType.ARRAY,
  itemType: GGUFValueType.UINT32,
  value: Uint32Array.from(values),
});
const i32s = (values: number[]): GGUFValue => ({
  type: GGUFValueType.ARRAY,
  itemType: GGUFValueType.INT32,
  value: Int32Array.from(values),
});
const f32s = (values: number[]): GGUFValue => ({
  type: GGUFValueType.ARRAY,
  itemType: GGUFValueType.FLOAT32,
  value: Float32Array.from(values),
});
const strs = (values: string[]): GGUFValue => ({
  type: GGUFValueType.ARRAY,
  itemType: GGUFValueType.STRING,
  value: values,
});

const INTEGER_TYPES = new Set<number>([0, 1, 2, 3, 4, 5, 10, 11]);
const FLOAT_TYPES = new Set<number>([6, 12]);

/** The values tried for a numeric key, named. */
function numericValues(v: GGUFValue): Array<[string, GGUFValue]> {
  if (FLOAT_TYPES.has(v.type)) {
    return [
      ["0", f32(0)],
      ["1", f32(1)],
      ["huge", f32(3.4e38)],
      ["inf", f32(Infinity)],
      ["negative", f32(-1)],
      ["nan", f32(NaN)],
      ["tiny", f32(1e-38)],
    ];
  }
  return [
    ["0", { ...v, value: v.type >= 10 ? 0n : 0 } as GGUFValue],
    ["1", { ...v, value: v.type >= 10 ? 1n : 1 } as GGUFValue],
    ["2^31-1", u32(2 ** 31 - 1)],
    ["2^32-1", u32(2 ** 32 - 1)],
    ["65536", u32(65536)],
    ["negative", i32(-1)],
    ["int32-min", i32(-(2 ** 31))],
  ];
}

/** Values of another GGUF type than the key's. */
function wrongTypes(v: GGUFValue, nLayer: number): Array<[string, GGUFValue]> {
  const out: Array<[string, GGUFValue]> = [["as-string", str("7")]];
  if (v.type !== GGUFValueType.FLOAT32) out.push(["as-f32", f32(2.5)]);
  if (v.type !== GGUFValueType.INT32) out.push(["as-i32", i32(2)]);
  if (v.type !== GGUFValueType.BOOL) out.push(["as-bool", bool(true)]);
  out.push(["as-u64", { type: GGUFValueType.UINT64, value: 2n }]);
  out.push(["as-f64", { type: GGUFValueType.FLOAT64, value: 2 }]);
  if (v.type !== GGUFValueType.ARRAY) out.push(["as-string-array", strs(["a", "b"])]);
  out.push(["as-empty-array", u32s([])]);
  out.push(["as-long-array", u32s(Array.from({ length: nLayer + 3 }, () => 2))]);
  return out;
}

/** Per-layer array forms of a numeric key (the engine reads many keys "or arrays"). */
function perLayerValues(v: GGUFValue, nLayer: number): Array<[string, GGUFValue]> {
  if (v.type === GGUFValueType.ARRAY || v.type === GGUFValueType.STRING || v.type === GGUFValueType.BOOL) return [];
  const n = Number(v.value);
  if (FLOAT_TYPES.has(v.type)) {
    return [
      ["per-layer-nan", f32s(Array.from({ length: nLayer }, (_, i) => (i === nLayer - 1 ? NaN : n)))],
      ["per-layer-short", f32s([n])],
    ];
  }
  const arr = (last: number) => u32s(Array.from({ length: nLayer }, (_, i) => (i === nLayer - 1 ? last : n)));
  return [
    ["per-layer-same", arr(n)],
    ["per-layer-0", arr(0)],
    ["per-layer-huge", arr(2 ** 31 - 1)],
    ["per-layer-plus1", arr(n + 1)],
    ["per-layer-short", u32s(Array.from({ length: Math.max(nLayer - 1, 0) }, () => n))],
    ["per-layer-long", u32s(Array.from({ length: nLayer + 1 }, () => n))],
    ["per-layer-i32-negative", i32s(Array.from({ length: nLayer }, (_, i) => (i === nLayer - 1 ? -1 : n)))],
  ];
}

/** Strings the engine does not know, and near misses. */
function stringValues(v: string): Array<[string, GGUFValue]> {
  const out: Array<[string, GGUFValue]> = [
    ["empty", str("")],
    ["bogus", str("bogus")],
    ["upper", str(v.toUpperCase() === v ? v.toLowerCase() + "x" : v.toUpperCase())],
    ["nul", str(`${v}\u0000x`)],
    ["long", str("x".repeat(70_000))],
  ];
  return out;
}

/**
 * Keys the engine reads that the bases may lack, by the base kinds they matter to, with the values
 * tried. `{arch}` is the architecture prefix.
 */
function addedKeys(nLayer: number, nVocab: number): Array<[string, Array<[string, GGUFValue]>]> {
  const counts = (extra: Array<[string, GGUFValue]> = []): Array<[string, GGUFValue]> => [
    ["0", u32(0)],
    ["1", u32(1)],
    ["2", u32(2)],
    ["huge", u32(2 ** 31 - 1)],
    ["negative", i32(-1)],
    ["per-layer", u32s(Array.from({ length: nLayer }, (_, i) => i))],
    ...extra,
  ];
  const floats: Array<[string, GGUFValue]> = [
    ["0", f32(0)],
    ["negative", f32(-1)],
    ["nan", f32(NaN)],
    ["inf", f32(Infinity)],
    ["huge", f32(3.4e38)],
  ];
  const token = (): Array<[string, GGUFValue]> => [
    ["vocab-size", u32(nVocab)],
    ["huge", u32(2 ** 31 - 1)],
    ["negative", i32(-1)],
    ["minus-2", i32(-2)],
  ];
  return [
    ["{arch}.rope.scaling.type", [
      ["bogus", str("bogus")],
      ["empty", str("")],
      ["LINEAR", str("LINEAR")],
      ["yarn", str("yarn")],
      ["longrope", str("longrope")],
      ["none", str("none")],
    ]],
    ["{arch}.rope.scaling.factor", floats],
    ["{arch}.rope.scaling.original_context_length", counts()],
    ["{arch}.rope.scaling.attn_factor", floats],
    ["{arch}.rope.freq_base", floats],
    ["{arch}.rope.dimension_count", counts()],
    ["{arch}.rope.dimension_sections", [
      ["zeros", i32s([0, 0, 0, 0])],
      ["huge", i32s([1000, 1000, 1000, 1000])],
      ["negative", i32s([-8, 0, 0, 0])],
      ["short", i32s([2])],
    ]],
    ["{arch}.expert_count", counts([["1025", u32(1025)]])],
    ["{arch}.expert_used_count", counts()],
    ["{arch}.expert_group_count", counts()],
    ["{arch}.expert_group_used_count", counts()],
    ["{arch}.expert_feed_forward_length", counts()],
    ["{arch}.expert_shared_count", counts()],
    ["{arch}.attention.head_count_kv", counts([["per-layer-0", u32s(Array.from({ length: nLayer }, () => 0))]])],
    ["{arch}.attention.key_length", counts()],
    ["{arch}.attention.value_length", counts()],
    ["{arch}.attention.sliding_window", counts()],
    ["{arch}.attention.causal", [["false", bool(false)], ["as-u32", u32(5)]]],
    ["{arch}.attention.clamp_kqv", floats],
    ["{arch}.attention.max_alibi_bias", floats],
    ["{arch}.logit_scale", floats],
    ["{arch}.pooling_type", [
      ["5", u32(5)],
      ["99", u32(99)],
      ["2^31-1", u32(2 ** 31 - 1)],
      ["negative", i32(-1)],
      ["2^32-1", u32(2 ** 32 - 1)],
      ["rank", u32(4)],
      ["none", u32(0)],
    ]],
    ["{arch}.embedding_length_out", counts()],
    ["{arch}.nextn_predict_layers", counts()],
    ["{arch}.vocab_size", [["0", u32(0)], ["double", u32(nVocab * 2)], ["huge", u32(2 ** 31 - 1)]]],
    ["{arch}.decoder_start_token_id", token()],
    ["general.alignment", [
      ["1", u32(1)],
      ["8", u32(8)],
      ["0", u32(0)],
      ["3", u32(3)],
      ["4096", u32(4096)],
    ]],
    ["tokenizer.ggml.bos_token_id", token()],
    ["tokenizer.ggml.eos_token_id", token()],
    ["tokenizer.ggml.unknown_token_id", token()],
    ["tokenizer.ggml.seperator_token_id", token()],
    ["tokenizer.ggml.padding_token_id", token()],
    ["tokenizer.ggml.eot_token_id", token()],
    ["tokenizer.ggml.eom_token_id", token()],
    ["tokenizer.ggml.mask_token_id", token()],
    ["tokenizer.ggml.fim_pre_token_id", token()],
    ["tokenizer.ggml.add_bos_token", [["as-u32", u32(7)], ["true", bool(true)], ["false", bool(false)]]],
    ["tokenizer.ggml.add_eos_token", [["as-u32", u32(7)], ["true", bool(true)]]],
    ["tokenizer.ggml.add_sep_token", [["true", bool(true)]]],
    ["tokenizer.ggml.add_space_prefix", [["as-string", str("yes")], ["false", bool(false)]]],
    ["tokenizer.ggml.model", [
      ["bert", str("bert")],
      ["t5", str("t5")],
      ["rwkv", str("rwkv")],
      ["gpt2", str("gpt2")],
      ["llama", str("llama")],
      ["plamo2", str("plamo2")],
      ["ugm", str("ugm")],
      ["none", str("none")],
      ["no_vocab", str("no_vocab")],
      ["bogus", str("bogus")],
      ["empty", str("")],
    ]],
    ["tokenizer.ggml.pre", [["bogus", str("bogus")], ["empty", str("")], ["qwen2", str("qwen2")]]],
    ["tokenizer.chat_template", [["broken-jinja", str("{% for %}")], ["empty", str("")], [
      "huge-loop",
      str(
        "{% for i in range(100000000) %}x{% endfor %}",
      ),
    ]]],
  ];
}

// ---------------------------------------------------------------------------------------------
// building files

/** Rebuilds `file` (parsed from `bytes`) with changed key-value pairs and tensors. */
function rebuild(
  bytes: Uint8Array,
  file: GGUFFile,
  change: { kv?: (kv: Map<string, GGUFValue>) => void; tensorType?: [string, number] },
): Uint8Array {
  const kv = new Map(file.kv);
  change.kv?.(kv);
  // the data is laid out at the alignment the key asks for, where the writer can (a power of two)
  const asked = kv.get("general.alignment");
  const n = asked?.type === GGUFValueType.UINT32 ? asked.value : 32;
  const layable = n > 0 && (n & (n - 1)) === 0;
  const w = new GGUFWriter({ alignment: layable ? n : 32 });
  for (const [k, val] of kv) {
    if (k === "general.alignment" && !layable) w.addKV(k, u32(32));
    else if (k !== "general.alignment" || asked?.type === GGUFValueType.UINT32) w.addKV(k, val);
  }
  for (const t of file.tensors) {
    const at = file.dataOffset + t.offset;
    const type = change.tensorType?.[0] === t.name ? change.tensorType[1] : t.type;
    w.addTensor(t.name, t.dims, type as typeof t.type, bytes.slice(at, at + t.size));
  }
  const out = w.toBytes();
  if (asked && !layable) {
    // an alignment the writer refuses (0, 3): written as 32, then patched to the value asked
    const at = layout(out).kvs.find((k) => k.key === "general.alignment")!.valueAt;
    new DataView(out.buffer, out.byteOffset).setUint32(at, n, true);
  }
  return out;
}

/** Same-size integer types of the float types, for tensor type swaps. */
const SWAPS: Record<number, Array<[string, number]>> = {
  [GGMLType.F32]: [["i32", GGMLType.I32]],
  [GGMLType.F16]: [["i16", GGMLType.I16], ["bf16", GGMLType.BF16]],
};

/** Every mutant of one base. */
export function* mutantsOf(base: MutantBase): Generator<Mutant> {
  const file = readGGUF(base.bytes);
  const arch = (file.kv.get("general.architecture") as { value: string }).value;
  const nLayer = Number((file.kv.get(`${arch}.block_count`) as { value: number }).value);
  const nVocab = (file.kv.get("tokenizer.ggml.tokens") as { value: string[] }).value.length;
  const m = (group: string, what: string, kv: (kv: Map<string, GGUFValue>) => void): Mutant => ({
    name: `${base.name}/${group}/${what}`,
    group,
    kind: base.kind,
    make: () => rebuild(base.bytes, file, { kv }),
  });
  const BIG_ARRAYS = new Set([
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
  ]);

  // every key of the base
  for (const [key, v] of file.kv) {
    if (key === "general.architecture" || BIG_ARRAYS.has(key)) continue;
    const set = (value: GGUFValue) => (kv: Map<string, GGUFValue>) => kv.set(key, value);
    yield m("removed", key, (kv) => kv.delete(key));
    if (v.type === GGUFValueType.STRING) {
      if (key === "tokenizer.chat_template" || key === "general.name") continue;
      for (const [what, value] of stringValues(v.value)) yield m("string", `${key}=${what}`, set(value));
      yield m("type", `${key}=as-u32`, set(u32(1)));
      continue;
    }
    if (v.type === GGUFValueType.ARRAY) {
      const items = Array.from(v.value as ArrayLike<unknown>);
      yield m(
        "array",
        `${key}=empty`,
        set({ ...v, value: (v.value as { slice(a: number, b: number): unknown }).slice(0, 0) } as GGUFValue),
      );
      yield m(
        "array",
        `${key}=short`,
        set(
          {
            ...v,
            value: (v.value as { slice(a: number, b: number): unknown }).slice(0, Math.max(items.length - 1, 0)),
          } as GGUFValue,
        ),
      );
      if (v.itemType !== GGUFValueType.STRING) {
        yield m("array", `${key}=long`, set(i32s([...items.map(Number), ...items.map(Number)])));
        yield m("array", `${key}=negative`, set(i32s(items.map((x, i) => (i === 0 ? -1 : Number(x))))));
        yield m("array", `${key}=huge`, set(u32s(items.map((x, i) => (i === 0 ? 2 ** 31 - 1 : Number(x))))));
      }
      yield m("type", `${key}=as-u32`, set(u32(1)));
      yield m("type", `${key}=as-string`, set(str("1")));
      continue;
    }
    if (v.type === GGUFValueType.BOOL) {
      yield m("value", `${key}=flipped`, set(bool(!v.value)));
      yield m("type", `${key}=as-u32`, set(u32(2)));
      yield m("type", `${key}=as-string`, set(str("true")));
      continue;
    }
    if (INTEGER_TYPES.has(v.type) || FLOAT_TYPES.has(v.type)) {
      for (const [what, value] of numericValues(v)) yield m("value", `${key}=${what}`, set(value));
      for (const [what, value] of wrongTypes(v, nLayer)) yield m("type", `${key}=${what}`, set(value));
      if (key.startsWith(`${arch}.`)) {
        for (const [what, value] of perLayerValues(v, nLayer)) yield m("array", `${key}=${what}`, set(value));
      }
    }
  }

  // keys the engine reads that the base lacks
  for (const [pattern, values] of addedKeys(nLayer, nVocab)) {
    const key = pattern.replaceAll("{arch}", arch);
    const group = file.kv.has(key) ? "replaced" : "added";
    for (const [what, value] of values) {
      yield m(group, `${key}=${what}`, (kv) => kv.set(key, value));
    }
  }

  // the vocabulary's arrays
  const tokens = (file.kv.get("tokenizer.ggml.tokens") as { value: string[] }).value;
  const withTokens = (f: (t: string[]) => string[]) => (kv: Map<string, GGUFValue>) =>
    kv.set("tokenizer.ggml.tokens", strs(f([...tokens])));
  const target = tokens.findIndex((t, i) => i > 260 && /^[a-z▁]{2,}$/.test(t));
  yield m(
    "vocab",
    "tokens=nul-collision",
    withTokens((t) => {
      // two tokens that differ only after a NUL byte: distinct in JavaScript, equal as C strings
      t[target] = `${t[target]}\u0000a`;
      t[target + 1] = `${tokens[target]}\u0000b`;
      return t;
    }),
  );
  yield m("vocab", "tokens=nul-only", withTokens((t) => ((t[target] = "\u0000"), t)));
  yield m("vocab", "tokens=empty-string", withTokens((t) => ((t[target] = ""), t)));
  yield m("vocab", "tokens=one", withTokens((t) => t.slice(0, 1)));
  yield m("vocab", "tokens=none", withTokens(() => []));
  yield m("vocab", "tokens=long-token", withTokens((t) => ((t[target] = "ab".repeat(40_000)), t)));
  yield m("vocab", "tokens=invalid-utf8-like", withTokens((t) => ((t[target] = "\uFFFD\uD800"), t)));
  // another tokenizer over this vocabulary, its token types gone (so byte tokens do not give it away)
  for (const model of ["rwkv", "bert", "t5", "gpt2", "plamo2"]) {
    yield m("vocab", `tokenizer.ggml.model=${model}-untyped`, (kv) => {
      kv.set("tokenizer.ggml.model", str(model));
      kv.delete("tokenizer.ggml.token_type");
    });
  }
  for (const key of ["tokenizer.ggml.scores", "tokenizer.ggml.token_type"]) {
    if (!file.kv.has(key)) continue;
    yield m("vocab", `${key}=nan`, (kv) => {
      const v = kv.get(key)! as { value: ArrayLike<number> };
      kv.set(key, f32s(Array.from(v.value, (x, i) => (i === target ? NaN : Number(x)))));
    });
    yield m("vocab", `${key}=out-of-range`, (kv) => {
      const v = kv.get(key)! as { value: ArrayLike<number> };
      kv.set(key, i32s(Array.from(v.value, (x, i) => (i === target ? 99 : i === target + 1 ? -5 : Number(x)))));
    });
  }
  if (file.kv.has("tokenizer.ggml.merges")) {
    const merges = (file.kv.get("tokenizer.ggml.merges") as { value: string[] }).value;
    yield m("vocab", "merges=no-space", (kv) => kv.set("tokenizer.ggml.merges", strs(["ab", ...merges])));
    yield m("vocab", "merges=unknown-tokens", (kv) => kv.set("tokenizer.ggml.merges", strs(["zzq qqz", ...merges])));
  }

  // tensors: a type swap of the same size, a missing tensor, a transposed shape
  for (const t of file.tensors) {
    for (const [what, type] of SWAPS[t.type] ?? []) {
      yield {
        name: `${base.name}/tensor/${t.name}=${what}`,
        group: "tensor",
        kind: base.kind,
        make: () => rebuild(base.bytes, file, { tensorType: [t.name, type] }),
      };
    }
  }
}

/** Every mutant of every base (text, embedding, reranker), in a stable order. */
export async function textMutants(): Promise<Mutant[]> {
  const out: Mutant[] = [];
  for (const base of await mutantBases()) out.push(...mutantsOf(base));
  return out;
}

if (import.meta.main) {
  const all = await textMutants();
  const counts: Record<string, number> = {};
  for (const x of all) {
    const k = `${x.name.split("/")[0]} ${x.group}`;
    counts[k] = (counts[k] ?? 0) + 1;
  }
  console.log(counts, all.length, "mutants,", new Set(all.map((x) => x.name)).size, "names");
  if (Deno.args[0]) {
    await Deno.mkdir(Deno.args[0], { recursive: true });
    for (const x of all) await Deno.writeFile(join(Deno.args[0], x.name.replaceAll("/", "__") + ".gguf"), x.make());
  }
}
