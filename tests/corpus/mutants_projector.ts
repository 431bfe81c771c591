/**
 * Hostile multimodal projectors, made by code (nothing binary is committed): each of the seven
 * projector fixtures (the tiny LLaVA `mlp` one and the families' `qwen2vl_merger`,
 * `qwen2.5vl_merger`, `gemma3`, `idefics3`, `internvl` and `ultravox` ones) rebuilt with one
 * thing wrong — a `clip.*` value out of range or of the wrong GGUF type, an array of the wrong
 * length or with bad entries, a key the engine reads added with a bad value, a projector type
 * the engine does not know or one whose tensors the file lacks, a tensor of an integer type, a
 * required tensor missing, or an extra tensor that changes the engine's graph.
 *
 * Each base needs its own text model (the projector's output width and the model's
 * architecture pair up), so {@linkcode projectorMutants} returns one entry per base: the text
 * model to load, the valid projector, and its mutants. Deterministic: the same mutants, byte
 * for byte and in the same order, on every run; names are unique across all bases. About 770
 * mutants: the bases take turns over the wrong types and block tensors, so each base gets a share
 * of those cases while every key keeps its range cases. Loaded by the pinned engine on its own,
 * 290 of them abort the process; src/gguf/rules/projector.ts refuses every one of those first.
 *
 * CLI: `deno run -A tests/corpus/mutants_projector.ts <dir>` writes every file into <dir>.
 *
 * @module
 */
import { join } from "node:path";
import { fixtureProjector } from "../../src/fixtures/vision.ts";
import { familyFixture } from "../../src/fixtures/families.ts";
import { GGMLType, type GGUFValue, GGUFValueType, GGUFWriter, readGGUF } from "../../src/gguf/gguf.ts";
import { PROJECTOR_TYPES } from "../../src/gguf/rules/projector.ts";

/** One mutated projector file. */
export interface Mutant {
  /** Unique and stable, e.g. "qwen2vl-range-clip.vision.patch_size-zero". */
  name: string;
  /** What is wrong: range, type, array, added, removed, projector-type, tensor-type, tensor-missing, tensor-extra, tensor-shape. */
  group: string;
  /** Always "projector". */
  kind: "projector";
  /** The file's bytes (rebuilt from the base on each read: keep them only as long as needed). */
  readonly bytes: Uint8Array;
}

/** One base projector with the text model it pairs with, and its mutants. */
export interface ProjectorMutantSet {
  /** The base's short name: tiny, qwen2vl, qwen25vl, gemma3, smolvlm, internvl, ultravox. */
  base: string;
  /** Path of the text model that pairs with the base projector. */
  model: string;
  /** Path of the (valid) base projector. */
  projector: string;
  /** The mutants of the base. */
  mutants: Mutant[];
}

/** The base projectors: the tiny LLaVA fixture and the six family fixtures. */
export const PROJECTOR_BASES = ["tiny", "qwen2vl", "qwen25vl", "gemma3", "smolvlm", "internvl", "ultravox"] as const;

/** Name of a base. */
export type ProjectorBase = (typeof PROJECTOR_BASES)[number];

/**
 * Every projector mutant, one entry per base (each base pairs with its own text model), the
 * fixtures made on first use. The order of bases and of mutants is fixed.
 */
export async function projectorMutants(): Promise<ProjectorMutantSet[]> {
  const out: ProjectorMutantSet[] = [];
  for (const base of PROJECTOR_BASES) out.push(await projectorMutantSet(base));
  return out;
}

/** The mutants of one base, with its text model and valid projector (made on first use). */
export async function projectorMutantSet(base: ProjectorBase): Promise<ProjectorMutantSet> {
  const pair = base === "tiny" ? await fixtureProjector("tiny") : await familyFixture(base);
  const bytes = await Deno.readFile(pair.projector);
  return {
    base,
    model: pair.model,
    projector: pair.projector,
    mutants: mutantsOf(base, bytes, PROJECTOR_BASES.indexOf(base)),
  };
}

// ---- values ---------------------------------------------------------------------------------

type KV = Map<string, GGUFValue>;

const u32 = (value: number): GGUFValue => ({ type: GGUFValueType.UINT32, value });
const i32 = (value: number): GGUFValue => ({ type: GGUFValueType.INT32, value });
const u64 = (value: number): GGUFValue => ({ type: GGUFValueType.UINT64, value: BigInt(value) });
const f32 = (value: number): GGUFValue => ({ type: GGUFValueType.FLOAT32, value });
const f64 = (value: number): GGUFValue => ({ type: GGUFValueType.FLOAT64, value });
const str = (value: string): GGUFValue => ({ type: GGUFValueType.STRING, value });
const bool = (value: boolean): GGUFValue => ({ type: GGUFValueType.BOOL, value });
const u8 = (value: number): GGUFValue => ({ type: GGUFValueType.UINT8, value });
const arr = (itemType: number, value: ArrayLike<number> | string[] | boolean[]): GGUFValue => {
  const v = itemType === GGUFValueType.FLOAT32
    ? Float32Array.from(value as ArrayLike<number>)
    : itemType === GGUFValueType.INT32
    ? Int32Array.from(value as ArrayLike<number>)
    : itemType === GGUFValueType.UINT32
    ? Uint32Array.from(value as ArrayLike<number>)
    : itemType === GGUFValueType.FLOAT64
    ? Float64Array.from(value as ArrayLike<number>)
    : Array.from(value as ArrayLike<unknown>);
  return { type: GGUFValueType.ARRAY, itemType, value: v } as GGUFValue;
};

const MAX_I32 = 2 ** 31 - 1;
const MAX_U32 = 2 ** 32 - 1;

/** Every projector type the pinned engine names. */
const KNOWN_TYPES = PROJECTOR_TYPES;

/** The fixtures' own projector types (each base is swapped to every other one). */
const FIXTURE_TYPES = ["mlp", "qwen2vl_merger", "qwen2.5vl_merger", "gemma3", "idefics3", "internvl", "ultravox"];

/** A tensor of the file being rebuilt. */
interface Tensor {
  name: string;
  dims: number[];
  type: number;
  data: Uint8Array;
}

/** Rebuilds a projector with its key-values and tensors changed (a well-formed GGUF file). */
function rebuilt(base: Uint8Array, kvEdit?: (kv: KV) => void, tensorEdit?: (t: Tensor[]) => Tensor[]): Uint8Array {
  const file = readGGUF(base);
  const kv: KV = new Map(file.kv);
  kvEdit?.(kv);
  let tensors: Tensor[] = file.tensors.map((t) => {
    const at = file.dataOffset + t.offset;
    return { name: t.name, dims: [...t.dims], type: t.type, data: base.subarray(at, at + t.size) };
  });
  if (tensorEdit) tensors = tensorEdit(tensors);
  const w = new GGUFWriter();
  for (const [k, v] of kv) w.addKV(k, v);
  for (const t of tensors) w.addTensor(t.name, t.dims, t.type, t.data.slice());
  return w.toBytes();
}

/** Zero bytes for a new F32 tensor of these dims. */
function f32Tensor(name: string, dims: number[]): Tensor {
  return { name, dims, type: GGMLType.F32, data: new Uint8Array(dims.reduce((a, b) => a * b, 1) * 4) };
}

/** The value of a key as a number (the base files are valid, so this holds where used). */
function numOf(kv: KV, key: string): number {
  const v = kv.get(key);
  if (!v || v.type === GGUFValueType.ARRAY || v.type === GGUFValueType.STRING) return 0;
  return Number(v.value);
}

// ---- the mutants of one base ------------------------------------------------------------------

/**
 * The mutants of one base projector, in a fixed order.
 *
 * Every `clip.*` key of the file gets its range cases (integers: zero, 2^31-1 and one of one,
 * one more or 2^32-1; floats: zero, negative, NaN and one of infinity or huge; booleans flipped;
 * arrays: two of empty, short, long, NaN, zero or infinite entries) and one wrong GGUF type. So
 * that the corpus stays a few hundred files, the bases take turns (`seed`): the seven bases
 * together give every key each of its cases and each wrong type, and each block tensor each of
 * its tensor cases.
 *
 * @param base The base's name (the prefix of every mutant's name).
 * @param bytes The base projector's bytes.
 * @param seed The base's index, which rotates the cases.
 */
export function mutantsOf(base: string, bytes: Uint8Array, seed = 0): Mutant[] {
  const file = readGGUF(bytes);
  const kv0 = file.kv;
  const audio = kv0.get("clip.has_audio_encoder")?.value === true && kv0.get("clip.has_vision_encoder") === undefined;
  const m = audio ? "audio" : "vision";
  const p = audio ? "a" : "v";
  const out: Mutant[] = [];
  const names = new Set<string>();
  const add = (group: string, detail: string, make: () => Uint8Array) => {
    const name = `${base}-${group}-${detail}`;
    if (names.has(name)) throw new Error(`duplicate mutant name ${name}`);
    names.add(name);
    // the bytes are made on each read (a mutant is about a megabyte; the corpus would hold hundreds)
    out.push({
      name,
      group,
      kind: "projector",
      get bytes() {
        return make();
      },
    });
  };
  const setKey = (key: string, value: GGUFValue) => () => rebuilt(bytes, (kv) => kv.set(key, value));
  // one rotating counter per list, started at the base's index: the bases take turns
  const turns = new Map<string, number>();
  const pick = <T>(list: string, items: readonly T[]): T => {
    const n = turns.get(list) ?? seed;
    turns.set(list, n + 1);
    return items[n % items.length];
  };

  // the values of every clip.* key of the file
  for (const [key, value] of kv0) {
    if (!key.startsWith("clip.")) continue;
    switch (value.type) {
      case GGUFValueType.UINT32: {
        const v = value.value;
        add("range", `${key}-zero`, setKey(key, u32(0)));
        add("range", `${key}-2^31-1`, setKey(key, u32(MAX_I32)));
        const [r, rv] = pick("u32-range", [["one", 1], ["plus1", v + 1], ["2^32-1", MAX_U32]] as const);
        add("range", `${key}-${r}`, setKey(key, u32(rv)));
        const [t, w] = pick<[string, GGUFValue]>("u32-type", [
          ["int32-negative", i32(-1)],
          ["int32", i32(v)],
          ["string", str(String(v))],
          ["float32", f32(v)],
          ["bool", bool(true)],
          ["array", arr(GGUFValueType.UINT32, [v])],
          ["uint64", u64(v)],
        ]);
        add("type", `${key}-${t}`, setKey(key, w));
        break;
      }
      case GGUFValueType.FLOAT32: {
        const v = value.value;
        add("range", `${key}-zero`, setKey(key, f32(0)));
        add("range", `${key}-negative`, setKey(key, f32(-v)));
        add("range", `${key}-nan`, setKey(key, f32(NaN)));
        const [r, rv] = pick("f32-range", [["inf", Infinity], ["huge", 3e38]] as const);
        add("range", `${key}-${r}`, setKey(key, f32(rv)));
        const [t, w] = pick<[string, GGUFValue]>("f32-type", [
          ["float64", f64(v)],
          ["uint32", u32(1)],
          ["string", str(String(v))],
          ["array", arr(GGUFValueType.FLOAT32, [v])],
          ["int32", i32(0)],
        ]);
        add("type", `${key}-${t}`, setKey(key, w));
        break;
      }
      case GGUFValueType.BOOL: {
        const v = value.value;
        add("range", `${key}-flipped`, setKey(key, bool(!v)));
        const [t, w] = pick<[string, GGUFValue]>("bool-type", [
          ["uint8", u8(v ? 1 : 0)],
          ["int32", i32(v ? 1 : 0)],
          ["string", str(String(v))],
          ["array", arr(GGUFValueType.BOOL, [v])],
          ["uint32", u32(v ? 1 : 0)],
        ]);
        add("type", `${key}-${t}`, setKey(key, w));
        break;
      }
      case GGUFValueType.STRING: {
        // clip.projector_type, the only string key of the bases
        const v = value.value;
        add("projector-type", "unknown", setKey(key, str("no-such-projector")));
        add("projector-type", "empty", setKey(key, str("")));
        const [r, rv] = pick("string-range", [["uppercase", v.toUpperCase()], ["trailing-space", `${v} `]] as const);
        add("projector-type", r, setKey(key, str(rv)));
        const [t, w] = pick<[string, GGUFValue]>("string-type", [
          ["uint32", u32(0)],
          ["array", arr(GGUFValueType.STRING, [v])],
          ["int32", i32(1)],
        ]);
        add("type", `${key}-${t}`, setKey(key, w));
        // another known type: the other fixture types, Qwen3-VL's, and one more of the engine's
        const others = FIXTURE_TYPES.filter((x) => x !== v);
        const rest = KNOWN_TYPES.filter((x) => !FIXTURE_TYPES.includes(x) && x !== "qwen3vl_merger");
        for (const x of [...others, "qwen3vl_merger", rest[(seed * 5) % rest.length]]) {
          add("projector-type", `as-${x}`, setKey(key, str(x)));
        }
        break;
      }
      case GGUFValueType.ARRAY: {
        // clip.vision.image_mean and image_std
        const v = Array.from(value.value as Float32Array);
        const cases: Array<[string, number[]]> = [
          ["empty", []],
          ["length-2", v.slice(0, 2)],
          ["length-4", [...v, 0.5]],
          ["nan", [NaN, v[1], v[2]]],
          [key.endsWith("std") ? "zero" : "inf", key.endsWith("std") ? [0, 0, 0] : [Infinity, -Infinity, v[2]]],
        ];
        for (let k = 0; k < 2; k++) {
          const [r, rv] = pick("array-range", cases);
          add("array", `${key}-${r}`, setKey(key, arr(GGUFValueType.FLOAT32, rv)));
        }
        const [t, w] = pick<[string, GGUFValue]>("array-type", [
          ["int32-items", arr(GGUFValueType.INT32, [0, 0, 0])],
          ["float64-items", arr(GGUFValueType.FLOAT64, v)],
          ["scalar", f32(v[0])],
          ["string-items", arr(GGUFValueType.STRING, v.map(String))],
        ]);
        add("type", `${key}-${t}`, setKey(key, w));
        break;
      }
    }
  }

  // the strings the engine reads besides clip.* (general.name, general.description)
  const [gk, gt, gv] = pick<[string, string, GGUFValue]>("general", [
    ["general.name", "uint32", u32(7)],
    ["general.description", "array", arr(GGUFValueType.STRING, ["a", "b"])],
  ]);
  add("type", `${gk}-${gt}`, setKey(gk, gv));

  // keys removed: the type-specific ones, and one common one per base
  const common = [...kv0.keys()].filter((k) =>
    /^clip\.(vision|audio)\.(embedding_length|block_count|attention\.head_count|image_size|patch_size|image_mean)$/
      .test(k)
  );
  const removed = [
    ...[...kv0.keys()].filter((k) =>
      /projector_type|has_(vision|audio)|scale_factor|stack_factor|n_wa_pattern|mel_bins|preproc/.test(k)
    ),
    pick("removed", common),
  ];
  for (const key of removed) add("removed", key, () => rebuilt(bytes, (kv) => kv.delete(key)));

  // the projector type under the modality's key only (read when clip.projector_type is absent)
  const type = kv0.get("clip.projector_type")!;
  const [mt, mv] = pick<[string, GGUFValue]>("modality-type", [
    ["", type],
    ["-uint32", u32(1)],
    ["-unknown", str("no-such-projector")],
  ]);
  add("added", `clip.${m}.projector_type-only${mt}`, () =>
    rebuilt(bytes, (kv) => {
      kv.delete("clip.projector_type");
      kv.set(`clip.${m}.projector_type`, mv);
    }));

  // keys the engine reads that the file lacks, added with bad values (a quarter of them per base,
  // the bases taking turns, and the ones that change the graph's geometry in every base)
  const nEmbd = numOf(kv0, `clip.${m}.embedding_length`);
  const nHead = numOf(kv0, `clip.${m}.attention.head_count`);
  const nLayer = numOf(kv0, `clip.${m}.block_count`);
  const always: Array<[string, string, GGUFValue]> = [
    [`clip.${m}.attention.head_count_kv`, "non-divisor", u32(nHead + 1)],
    [`clip.${m}.attention.head_dim`, "double", u32(2 * nEmbd / nHead)],
    ["clip.use_silu", "with-gelu", bool(true)],
  ];
  const added: Array<[string, string, GGUFValue]> = [
    [`clip.${m}.attention.head_count_kv`, "zero", u32(0)],
    [`clip.${m}.attention.head_count_kv`, "2^31-1", u32(MAX_I32)],
    [`clip.${m}.attention.head_count_kv`, "int32", i32(nHead)],
    [`clip.${m}.attention.head_dim`, "zero", u32(0)],
    [`clip.${m}.attention.head_dim`, "2^31-1", u32(MAX_I32)],
    [`clip.${m}.attention.head_dim`, "float32", f32(nEmbd / nHead)],
    [`clip.${m}.feature_layer`, "past-end", arr(GGUFValueType.INT32, [nLayer + 5])],
    [`clip.${m}.feature_layer`, "negative", arr(GGUFValueType.INT32, [-7])],
    [`clip.${m}.feature_layer`, "uint32-items", arr(GGUFValueType.UINT32, [0])],
    [`clip.${m}.feature_layer`, "scalar", i32(0)],
    ["clip.use_silu", "uint8", u8(1)],
    ["clip.use_gelu", "string", str("true")],
    ["clip.has_gen_audio_encoder", "int32", i32(0)],
    ["clip.has_gen_audio_encoder", "true", bool(true)],
    [`clip.${m}.projector.scale_factor`, "float32", f32(2)],
  ];
  if (!audio) {
    always.push(
      ["clip.vision.image_grid_pinpoints", "odd", arr(GGUFValueType.INT32, [56])],
      ["clip.vision.n_wa_pattern", "two", u32(2)],
    );
    added.push(
      ["clip.vision.image_grid_pinpoints", "zeros", arr(GGUFValueType.INT32, [0, 0])],
      ["clip.vision.image_grid_pinpoints", "negative", arr(GGUFValueType.INT32, [-56, -56])],
      ["clip.vision.image_grid_pinpoints", "huge", arr(GGUFValueType.INT32, [MAX_I32, MAX_I32])],
      ["clip.vision.image_grid_pinpoints", "uint32", u32(56)],
      ["clip.vision.mm_patch_merge_type", "spatial_unpad", str("spatial_unpad")],
      ["clip.vision.mm_patch_merge_type", "uint32", u32(1)],
      ["clip.minicpmv_version", "uint32", u32(2)],
      ["clip.minicpmv_version", "negative", i32(-1)],
      ["clip.minicpmv_query_num", "int32", i32(64)],
      ["clip.minicpmv_query_num", "2^31-1", u32(MAX_I32)],
      ["clip.vision.spatial_merge_size", "zero", u32(0)],
      ["clip.vision.spatial_merge_size", "three", u32(3)],
      ["clip.vision.spatial_merge_size", "2^31-1", u32(MAX_I32)],
      ["clip.vision.spatial_merge_size", "int32", i32(2)],
      ["clip.vision.n_wa_pattern", "int32", i32(2)],
      ["clip.vision.image_min_pixels", "int32", i32(1024)],
      ["clip.vision.image_max_pixels", "2^31-1", u32(MAX_I32)],
      ["clip.vision.preproc_image_size", "2^31-1", u32(MAX_I32)],
      ["clip.vision.preproc_min_tiles", "int32", i32(1)],
      ["clip.vision.preproc_max_tiles", "2^31-1", u32(MAX_I32)],
      ["clip.vision.window_size", "int32", i32(64)],
      ["clip.vision.wa_layer_indexes", "past-end", arr(GGUFValueType.INT32, [nLayer + 3])],
      ["clip.vision.wa_layer_indexes", "uint32-items", arr(GGUFValueType.UINT32, [0])],
    );
  } else {
    added.push(
      ["clip.audio.chunk_size", "int32", i32(12)],
      ["clip.audio.subsampling_factor", "int32", i32(8)],
      ["clip.audio.conv_kernel_size", "float32", f32(3)],
    );
  }
  for (const [i, [key, detail, value]] of [...always.map((a) => [-1, a] as const), ...added.entries()]) {
    if (kv0.has(key) || (i >= 0 && (i + seed) % 4 !== 0)) continue;
    add("added", `${key}-${detail}`, setKey(key, value));
  }

  // tensors: integer types of the same size, missing ones, extra ones that change the graph, shapes
  const tensors = file.tensors;
  const has = (n: string) => tensors.some((t) => t.name === n);
  const topLevel = tensors.filter((t) => !/\.blk\.\d+\./.test(t.name));
  const block0 = tensors.filter((t) => t.name.startsWith(`${p}.blk.0.`));
  // the bases take turns over the tensors: a quarter of block 0's each, half of the top-level ones
  // for the type swaps (one rule covers every tensor), all of them for the missing ones
  const some = (i: number, k: number, n = 4) => (i + seed + k) % n === 0;
  for (const t of [...topLevel.filter((_, j) => some(j, 0, 2)), ...block0.filter((_, j) => some(j, 0))]) {
    const to = t.type === GGMLType.F32 ? GGMLType.I32 : t.type === GGMLType.F16 ? GGMLType.I16 : undefined;
    if (to === undefined) continue;
    add(
      "tensor-type",
      `${t.name}-${to === GGMLType.I32 ? "i32" : "i16"}`,
      () => rebuilt(bytes, undefined, (ts) => ts.map((x) => (x.name === t.name ? { ...x, type: to } : x))),
    );
  }
  for (const t of [...topLevel, ...block0.filter((_, j) => some(j, 1))]) {
    add("tensor-missing", t.name, () => rebuilt(bytes, undefined, (ts) => ts.filter((x) => x.name !== t.name)));
  }
  // a tensor missing from the last block only
  const last = `${p}.blk.${nLayer - 1}.${pick("last", ["attn_q.weight", "ln1.weight", "ffn_down.weight"])}`;
  if (nLayer > 1 && has(last)) {
    add("tensor-missing", last, () => rebuilt(bytes, undefined, (ts) => ts.filter((x) => x.name !== last)));
  }
  const nFf = block0.find((t) => t.name.endsWith(".ffn_up.weight"))?.dims[1] ?? 4 * nEmbd;
  const patch = tensors.find((t) => t.name === "v.patch_embd.weight")?.dims ?? [14, 14, 3, nEmbd];
  const extras: Tensor[] = [
    f32Tensor("v.class_embd", [nEmbd]),
    f32Tensor("v.patch_embd.bias", [nEmbd]),
    f32Tensor("v.patch_embd.weight.1", patch),
    f32Tensor(`${p}.blk.0.attn_qkv.weight`, [nEmbd, 3 * nEmbd]),
    f32Tensor(`${p}.blk.0.ffn_gate_exps.weight`, [nEmbd, nFf, 2]),
    f32Tensor("mm.3.weight", [nEmbd, nEmbd]),
  ];
  const optional: Tensor[] = [
    f32Tensor(`${p}.pre_ln.weight`, [nEmbd]),
    f32Tensor(`${p}.post_ln.weight`, [nEmbd]),
    f32Tensor(`${p}.position_embd.weight`, [nEmbd, 16]),
    f32Tensor("v.norm_embd.weight", [nEmbd]),
    f32Tensor(`${p}.blk.0.attn_q_norm.weight`, [nEmbd]),
    f32Tensor(`${p}.blk.0.ls1.weight`, [nEmbd]),
    f32Tensor(`${p}.blk.0.ffn_gate.weight`, [nEmbd, nFf]),
    f32Tensor(`${p}.blk.0.attn_sinks`, [nHead]),
    f32Tensor("v.deepstack.0.fc1.weight", [nEmbd, nEmbd]),
    f32Tensor("v.image_newline", [nEmbd]),
  ];
  for (const t of [...extras, ...optional.filter((_, j) => some(j, 2, 3))]) {
    if (has(t.name)) continue;
    add("tensor-extra", t.name, () => rebuilt(bytes, undefined, (ts) => [...ts, t]));
  }
  // shapes that disagree with the keys
  const reshaped = (name: string, dims: (d: number[]) => number[]) => () =>
    rebuilt(bytes, undefined, (ts) => ts.map((x) => (x.name === name ? f32Tensor(name, dims(x.dims)) : x)));
  const pos = `${p}.position_embd.weight`;
  if (has(pos)) add("tensor-shape", `${pos}-one-more-row`, reshaped(pos, (d) => [d[0], d[1] + 1]));
  const q = `${p}.blk.0.attn_q.weight`;
  if (has(q)) add("tensor-shape", `${q}-half-wide`, reshaped(q, (d) => [d[0], d[1] / 2]));
  const ln = `${p}.blk.0.ln1.weight`;
  if (has(ln)) add("tensor-shape", `${ln}-one-more`, reshaped(ln, (d) => [d[0] + 1]));
  const pe = "v.patch_embd.weight";
  if (has(pe)) add("tensor-shape", `${pe}-kernel-7`, reshaped(pe, (d) => [7, 7, d[2], d[3]]));
  return out;
}

if (import.meta.main) {
  const dir = Deno.args[0];
  if (!dir) throw new Error("usage: deno run -A tests/corpus/mutants_projector.ts <dir>");
  await Deno.mkdir(dir, { recursive: true });
  let n = 0;
  for (const set of await projectorMutants()) {
    for (const mu of set.mutants) {
      await Deno.writeFile(join(dir, `${mu.name}.gguf`), mu.bytes);
      n++;
    }
    console.log(`${set.base}: ${set.mutants.length} mutants (text model ${set.model})`);
  }
  console.log(`${n} files in ${dir}`);
}
