/**
 * Header rules of multimodal projectors (mtmd's "clip" GGUF files, `general.architecture` =
 * "clip"): what the pinned engine's loader (`tools/mtmd/clip.cpp`: `clip_model_loader`'s
 * constructor, `load_hparams`, `load_tensors`) and its graphs (`tools/mtmd/models/*.cpp`) read
 * and assume without checking, where a hostile file would abort or crash the process instead of
 * failing the load:
 *
 * - **types**: every key the engine reads, with the GGUF type its reader demands (`gguf_get_val_*`
 *   asserts the type, so an `INT32` image size aborts);
 * - **projector types**: names the engine knows, for the encoder (vision, audio, audio
 *   generation) that names them;
 * - **values**: counts, sizes, epsilons and merge factors in the ranges the graphs need;
 * - **tensors**: integer tensor types, the tensors each projector type's graph uses without a
 *   null check (or asserts absent), and the shapes its reshapes and matrix products need, so the
 *   keys and the tensors agree.
 *
 * Each rule cites the engine line it stands in for. {@linkcode checkProjector} applies the table.
 *
 * @module
 */
import { type GGUFFile, type GGUFTensorInfo, type GGUFValue, GGUFValueType } from "../gguf.ts";
import { ggufValueTypeName } from "../reader.ts";
import { applyRules, Header, type Rule, shown } from "./rule.ts";

const CLIP = "tools/mtmd/clip.cpp";
/** The words of a space-separated list (keeps the type lists compact). */
const words = (s: string): string[] => s.split(" ");
const MTMD = "tools/mtmd/mtmd.cpp";
const GGUF_CPP = "ggml/src/gguf.cpp";
const M = "tools/mtmd/models/";

// ---- the projector types -----------------------------------------------------------------------

/** Every name in the engine's `PROJECTOR_TYPE_NAMES` (`tools/mtmd/clip-impl.h:510`). */
// deno-fmt-ignore
export const PROJECTOR_TYPES: readonly string[] = [
  "mlp", "ldp", "ldpv2", "resampler", "adapter", "qwen2vl_merger", "qwen2.5vl_merger", "qwen3vl_merger", "step3vl",
  "gemma3", "gemma3nv", "gemma3na", "gemma4v", "gemma4a", "gemma4uv", "gemma4ua", "phi4", "idefics3", "pixtral",
  "ultravox", "internvl", "llama4", "qwen2a", "qwen3a", "glma", "qwen2.5o", "voxtral", "meralion", "musicflamingo",
  "lfm2", "kimivl", "paddleocr", "lightonocr", "cogvlm", "janus_pro", "dots_ocr", "dots3note_v", "dots3note_a",
  "deepseekocr", "deepseekocr2", "deepseek4v", "lfm2a", "glm4v", "youtuvl", "yasa2", "kimik25", "nemotron_v2_vl",
  "exaone4_5", "hunyuanvl", "minicpmv4_6", "granite_speech", "mimovl", "minimax_m3", "granite4_vision", "mimo_audio",
  "parakeet", "qwen3tts_spkenc", "qwen3tts_gen", "pockettts_spkenc", "pockettts_gen", "muse-glimmer",
];

/** The types mtmd sets an image preprocessor up for (`tools/mtmd/mtmd.cpp:627` `init_vision`). */
const VISION_TYPES = new Set(words(
  "mlp ldp ldpv2 cogvlm janus_pro adapter resampler minicpmv4_6 qwen2vl_merger qwen2.5vl_merger qwen3vl_merger " +
    "mimovl minimax_m3 muse-glimmer youtuvl yasa2 gemma3 gemma3nv idefics3 pixtral phi4 llama4 step3vl internvl " +
    "kimivl kimik25 lightonocr deepseek4v dots_ocr dots3note_v nemotron_v2_vl lfm2 glm4v paddleocr gemma4v gemma4uv " +
    "deepseekocr deepseekocr2 hunyuanvl exaone4_5 granite4_vision",
));

/** The types mtmd sets an audio preprocessor up for (`tools/mtmd/mtmd.cpp:920` `init_audio`). */
const AUDIO_TYPES = new Set(words(
  "qwen2a qwen3a voxtral musicflamingo ultravox glma meralion lfm2a granite_speech gemma4a parakeet gemma4ua " +
    "dots3note_a mimo_audio qwen3tts_spkenc pockettts_spkenc",
));

/** The audio-generation types (`tools/mtmd/mtmd.cpp:1879` `mtmd_gen_audio_get_info`, `clip.cpp:6018` `clip_n_mmproj_embd`). */
const GEN_AUDIO_TYPES = new Set(["qwen3tts_gen", "pockettts_gen"]);

/** Types whose layers are not the standard blocks (`tools/mtmd/clip.cpp:2249` `has_standard_layers`). */
const NO_STANDARD_LAYERS = new Set(["gemma3nv", "qwen3tts_spkenc", "pockettts_gen"]);

/** The LLaVA graph (`models/llava.cpp`): q/k/v reshaped with `n_head`, no fused qkv. */
const LLAVA = new Set(["mlp", "ldp", "ldpv2", "adapter"]);
/** The Qwen2-VL graph (`models/qwen2vl.cpp`): q/k/v with biases, reshaped with `n_head`. */
const QWEN2VL = new Set(["qwen2vl_merger", "qwen2.5vl_merger"]);
/** Whisper-style audio encoders (`models/whisper-enc.cpp`). */
const WHISPER = new Set(["ultravox", "voxtral", "qwen2a", "glma", "meralion", "musicflamingo"]);
/** Types whose graph is `build_vit` on the `n_embd`-wide residual stream (`tools/mtmd/clip.cpp:337` `build_vit`). */
const BUILD_VIT = new Set([
  ...words(
    "gemma3 idefics3 lfm2 janus_pro phi4 internvl nemotron_v2_vl llama4 kimivl kimik25 paddleocr pixtral " +
      "lightonocr dots_ocr dots3note_v hunyuanvl glm4v deepseek4v step3vl muse-glimmer minimax_m3 gemma4v resampler",
  ),
  ...WHISPER,
]);
/** Types whose rope positions are consumed only inside the blocks (`ggml_rope*` in their graphs). */
const ROPE_IN_BLOCKS = new Set(words(
  "qwen2vl_merger qwen2.5vl_merger qwen3vl_merger deepseek4v dots_ocr dots3note_v exaone4_5 gemma4v glm4v kimik25 " +
    "kimivl llama4 mimovl minimax_m3 muse-glimmer paddleocr pixtral lightonocr step3vl youtuvl",
));
/** Types whose epsilon the engine sets itself, whatever the file says (`tools/mtmd/clip.cpp:1906`, `:1966`, `:1973`). */
const EPS_SET_BY_ENGINE = new Set(["deepseekocr", "gemma4a", "gemma4ua"]);
/** Types whose blocks are checked against the keys (width, heads, feed-forward). */
const STANDARD_BLOCKS = new Set([...LLAVA, ...QWEN2VL, "qwen3vl_merger", ...BUILD_VIT]);

// ---- the file as the engine sees it ------------------------------------------------------------

/** An encoder the engine loads: its modality, key prefix, tensor prefix and projector type. */
interface Encoder {
  /** "vision", "audio" or "gen.audio": the `clip.<m>.*` keys it reads. */
  m: "vision" | "audio" | "gen.audio";
  /** Tensor prefix (`tools/mtmd/clip.cpp:2121`). */
  p: "v" | "a" | "a.gen.code";
  /** The projector type, `qwen2.5o` resolved for the modality (`tools/mtmd/clip.cpp:1285`). */
  type: string;
  /** The type as written, and the key it came from. */
  raw: string;
  typeKey: string;
}

/** A projector's header: its encoders and tensors (cached per parsed file). */
interface View {
  encoders: Encoder[];
  tensors: Map<string, GGUFTensorInfo>;
}

const views = new WeakMap<GGUFFile, View>();

/** The single value of a scalar, or of a one-item array (which `gguf_get_val_*` reads the same). */
function one(v: GGUFValue | undefined): { type: number; value: unknown } | undefined {
  if (v === undefined) return undefined;
  if (v.type !== GGUFValueType.ARRAY) return v;
  if (v.value.length !== 1) return undefined;
  return { type: v.itemType, value: (v.value as ArrayLike<unknown>)[0] };
}

function flag(h: Header, key: string): boolean {
  const v = one(h.get(key));
  return v?.type === GGUFValueType.BOOL && v.value === true;
}

function text(h: Header, key: string): string | undefined {
  const v = one(h.get(key));
  return v?.type === GGUFValueType.STRING ? v.value as string : undefined;
}

function viewOf(h: Header): View {
  let v = views.get(h.file);
  if (v) return v;
  const encoders: Encoder[] = [];
  const add = (m: Encoder["m"], p: Encoder["p"]) => {
    let raw = text(h, "clip.projector_type") ?? "";
    let typeKey = "clip.projector_type";
    if (raw === "") {
      raw = text(h, `clip.${m}.projector_type`) ?? "";
      typeKey = `clip.${m}.projector_type`;
    }
    const type = raw === "qwen2.5o" ? (m === "vision" ? "qwen2.5vl_merger" : "qwen2a") : raw;
    encoders.push({ m, p, type, raw, typeKey });
  };
  if (flag(h, "clip.has_vision_encoder")) add("vision", "v");
  // Gemma 3n's audio tensors are skipped (tools/mtmd/clip.cpp:3991)
  if (flag(h, "clip.has_audio_encoder") && encoders[0]?.type !== "gemma3nv") add("audio", "a");
  if (flag(h, "clip.has_gen_audio_encoder")) add("gen.audio", "a.gen.code");
  v = { encoders, tensors: new Map(h.file.tensors.map((t) => [t.name, t])) };
  views.set(h.file, v);
  return v;
}

/** A UINT32 key's value as the engine's `get_u32` gives it, or `fallback` when absent. */
function u32(h: Header, key: string, fallback: number): number {
  const v = one(h.get(key));
  return v?.type === GGUFValueType.UINT32 ? v.value as number : fallback;
}

/** The hyperparameters of an encoder as `load_hparams` sets them (after the type rules passed). */
interface Hparams {
  nEmbd: number;
  nHead: number;
  nHeadKv: number;
  dHead: number;
  nLayer: number;
  eps: number;
  imageSize: number;
  patchSize: number;
  nMerge: number;
  stack: number;
  projectionDim: number;
}

/** `n_merge`'s default and key per type (`tools/mtmd/clip.cpp:1430-1780`). */
function merge(h: Header, type: string): number {
  const scale = "clip.vision.projector.scale_factor";
  const spatial = "clip.vision.spatial_merge_size";
  switch (type) {
    case "minicpmv4_6":
    case "gemma3":
    case "step3vl":
      return u32(h, scale, 4);
    case "gemma4v":
      return u32(h, scale, 3);
    case "gemma4uv":
      return 1;
    case "phi4":
      return 1;
    case "internvl":
    case "nemotron_v2_vl":
    case "idefics3":
    case "lfm2":
    case "kimivl":
    case "kimik25":
    case "gemma3nv":
    case "llama4":
    case "dots_ocr":
    case "deepseek4v":
      return u32(h, scale, 1);
    case "pixtral":
    case "lightonocr":
    case "dots3note_v":
      return u32(h, spatial, 1);
    case "qwen2vl_merger":
    case "qwen2.5vl_merger":
    case "qwen3vl_merger":
    case "minimax_m3":
    case "muse-glimmer":
    case "mimovl":
    case "youtuvl":
    case "glm4v":
    case "hunyuanvl":
    case "exaone4_5":
      return u32(h, spatial, 2);
    case "paddleocr":
      return 2;
    default:
      return 1;
  }
}

function hparams(h: Header, e: Encoder): Hparams {
  const k = (s: string) => `clip.${e.m}.${s}`;
  const nEmbd = u32(h, k("embedding_length"), 0);
  const nHead = u32(h, k("attention.head_count"), 0);
  const nEmbdHead = u32(h, k("attention.head_dim"), 0);
  const eps = one(h.get(k("attention.layer_norm_epsilon")));
  return {
    nEmbd,
    nHead,
    nHeadKv: u32(h, k("attention.head_count_kv"), nHead),
    dHead: nEmbdHead > 0 ? nEmbdHead : nHead > 0 ? Math.trunc(nEmbd / nHead) : 0,
    nLayer: u32(h, k("block_count"), 0),
    eps: eps?.type === GGUFValueType.FLOAT32 ? eps.value as number : 1e-6,
    imageSize: e.m === "vision" ? u32(h, "clip.vision.image_size", 0) : 0,
    patchSize: e.m === "vision" ? u32(h, "clip.vision.patch_size", 0) : 1,
    nMerge: merge(h, e.type),
    stack: u32(h, "clip.audio.projector.stack_factor", 0),
    projectionDim: u32(h, k("projection_dim"), 0),
  };
}

/** Rules over every encoder: `make` gets the encoder's keys and returns its rules. */
function perEncoder(make: (m: Encoder["m"], p: Encoder["p"]) => Rule[]): Rule[] {
  const out: Rule[] = [];
  for (const [m, p] of [["vision", "v"], ["audio", "a"], ["gen.audio", "a.gen.code"]] as const) out.push(...make(m, p));
  return out;
}

/** The encoder of modality `m`, when the engine loads one. */
function encoder(h: Header, m: Encoder["m"]): Encoder | undefined {
  return viewOf(h).encoders.find((e) => e.m === m);
}

// ---- 1. value types ------------------------------------------------------------------------------

type When = (h: Header) => boolean;

const always: When = () => true;
const hasEncoder = (m: Encoder["m"]): When => (h) => encoder(h, m) !== undefined;
const anyEncoder: When = (h) => viewOf(h).encoders.length > 0;
/** Whether an encoder of one of these types is loaded (the switch of `load_hparams`). */
const ofType = (...types: string[]): When => (h) => viewOf(h).encoders.some((e) => types.includes(e.type));

/** A key the engine reads: its GGUF type (arrays: the item type), when it is read, and where. */
interface KeyRead {
  key: string;
  type: number;
  array?: boolean;
  when: When;
  engine: string;
}

const u32Read = (key: string, when: When, line: number): KeyRead => ({
  key,
  type: GGUFValueType.UINT32,
  when,
  engine: `${CLIP}:${line} get_u32`,
});

/** Every key `clip_model_loader` reads (constructor and `load_hparams`), by the condition it is read under. */
const KEYS_READ: readonly KeyRead[] = [
  { key: "general.name", type: GGUFValueType.STRING, when: always, engine: `${CLIP}:1200 get_string` },
  { key: "general.description", type: GGUFValueType.STRING, when: always, engine: `${CLIP}:1202 get_string` },
  { key: "clip.has_vision_encoder", type: GGUFValueType.BOOL, when: always, engine: `${CLIP}:1214 get_bool` },
  { key: "clip.has_audio_encoder", type: GGUFValueType.BOOL, when: always, engine: `${CLIP}:1215 get_bool` },
  { key: "clip.has_gen_audio_encoder", type: GGUFValueType.BOOL, when: always, engine: `${CLIP}:1216 get_bool` },
  { key: "clip.projector_type", type: GGUFValueType.STRING, when: anyEncoder, engine: `${CLIP}:1263 get_string` },
  ...(["vision", "audio", "gen.audio"] as const).map((m): KeyRead => ({
    key: `clip.${m}.projector_type`,
    type: GGUFValueType.STRING,
    when: (h) => hasEncoder(m)(h) && (text(h, "clip.projector_type") ?? "") === "",
    engine: `${CLIP}:1268 get_string`,
  })),
  ...(["vision", "audio", "gen.audio"] as const).flatMap((m): KeyRead[] => [
    u32Read(`clip.${m}.embedding_length`, hasEncoder(m), 1299),
    u32Read(`clip.${m}.attention.head_count`, hasEncoder(m), 1300),
    u32Read(`clip.${m}.attention.head_dim`, hasEncoder(m), 1301),
    u32Read(`clip.${m}.feed_forward_length`, hasEncoder(m), 1302),
    u32Read(`clip.${m}.block_count`, hasEncoder(m), 1303),
    u32Read(`clip.${m}.projection_dim`, hasEncoder(m), 1304),
    {
      key: `clip.${m}.attention.layer_norm_epsilon`,
      type: GGUFValueType.FLOAT32,
      when: hasEncoder(m),
      engine: `${CLIP}:1305 get_f32`,
    },
    u32Read(`clip.${m}.attention.head_count_kv`, hasEncoder(m), 1309),
    {
      key: `clip.${m}.feature_layer`,
      type: GGUFValueType.INT32,
      array: true,
      when: hasEncoder(m),
      engine: `${CLIP}:1412 get_arr_int`,
    },
  ]),
  u32Read("clip.vision.image_size", hasEncoder("vision"), 1312),
  u32Read("clip.vision.patch_size", hasEncoder("vision"), 1313),
  {
    key: "clip.minicpmv_version",
    type: GGUFValueType.INT32,
    when: hasEncoder("vision"),
    engine: `${CLIP}:1314 get_i32`,
  },
  u32Read("clip.minicpmv_query_num", hasEncoder("vision"), 1315),
  u32Read("clip.audio.num_mel_bins", hasEncoder("audio"), 1333),
  {
    key: "clip.gen.audio.model_variant",
    type: GGUFValueType.STRING,
    when: hasEncoder("gen.audio"),
    engine: `${CLIP}:1342 get_string`,
  },
  {
    key: "clip.vision.image_grid_pinpoints",
    type: GGUFValueType.INT32,
    array: true,
    when: anyEncoder,
    engine: `${CLIP}:1351 get_arr_int`,
  },
  { key: "clip.use_gelu", type: GGUFValueType.BOOL, when: anyEncoder, engine: `${CLIP}:1371 get_bool` },
  { key: "clip.use_silu", type: GGUFValueType.BOOL, when: anyEncoder, engine: `${CLIP}:1372 get_bool` },
  {
    key: "clip.vision.mm_patch_merge_type",
    type: GGUFValueType.STRING,
    when: anyEncoder,
    engine: `${CLIP}:1390 get_string`,
  },
  {
    key: "clip.vision.image_mean",
    type: GGUFValueType.FLOAT32,
    array: true,
    when: hasEncoder("vision"),
    engine: `${CLIP}:1399 get_arr_f32`,
  },
  {
    key: "clip.vision.image_std",
    type: GGUFValueType.FLOAT32,
    array: true,
    when: hasEncoder("vision"),
    engine: `${CLIP}:1400 get_arr_f32`,
  },
  // the keys of the type switch of load_hparams
  u32Read(
    "clip.vision.projector.scale_factor",
    ofType(...words(
      "minicpmv4_6 internvl nemotron_v2_vl idefics3 lfm2 dots_ocr kimivl kimik25 deepseek4v gemma3 gemma4v " +
        "gemma4uv gemma3nv step3vl llama4",
    )),
    1457,
  ),
  {
    key: "clip.vision.wa_layer_indexes",
    type: GGUFValueType.INT32,
    array: true,
    when: ofType("minicpmv4_6", "youtuvl"),
    engine: `${CLIP}:1462 get_arr_int`,
  },
  u32Read("clip.vision.preproc_min_tiles", ofType("internvl", "deepseekocr", "deepseekocr2"), 1479),
  u32Read("clip.vision.preproc_max_tiles", ofType("internvl", "deepseekocr", "deepseekocr2"), 1480),
  u32Read("clip.audio.subsampling_factor", ofType("parakeet"), 1490),
  u32Read("clip.audio.conv_kernel_size", ofType("parakeet", "granite_speech"), 1493),
  u32Read("clip.vision.preproc_image_size", ofType("idefics3", "lightonocr", "step3vl"), 1507),
  u32Read(
    "clip.vision.image_min_pixels",
    ofType("phi4", "dots_ocr", "dots3note_v", "kimik25", "deepseek4v", "mimovl", "paddleocr", "hunyuanvl", "exaone4_5"),
    1523,
  ),
  u32Read(
    "clip.vision.image_max_pixels",
    ofType("phi4", "dots_ocr", "dots3note_v", "kimik25", "mimovl", "paddleocr", "hunyuanvl", "exaone4_5"),
    1524,
  ),
  u32Read(
    "clip.vision.spatial_merge_size",
    ofType(...words(
      "pixtral lightonocr dots3note_v qwen2vl_merger qwen2.5vl_merger qwen3vl_merger minimax_m3 muse-glimmer " +
        "mimovl youtuvl glm4v hunyuanvl exaone4_5",
    )),
    1534,
  ),
  u32Read("clip.vision.expert_used_count", ofType("dots3note_v"), 1564),
  u32Read(
    "clip.vision.n_wa_pattern",
    ofType("qwen2vl_merger", "qwen2.5vl_merger", "qwen3vl_merger", "exaone4_5"),
    1668,
  ),
  u32Read("clip.vision.window_size", ofType("mimovl", "youtuvl", "deepseekocr", "deepseekocr2"), 1711),
  {
    key: "clip.vision.wa_pattern_mode",
    type: GGUFValueType.INT32,
    array: true,
    when: ofType("mimovl"),
    engine: `${CLIP}:1713 get_arr_int`,
  },
  u32Read(
    "clip.audio.projector.stack_factor",
    ofType("ultravox", "qwen2a", "qwen3a", "glma", "voxtral", "meralion", "musicflamingo"),
    1786,
  ),
  u32Read("clip.audio.rvq.num_quantizers", ofType("mimo_audio"), 1799),
  {
    key: "clip.audio.rvq.codebook_size",
    type: GGUFValueType.INT32,
    array: true,
    when: ofType("mimo_audio"),
    engine: `${CLIP}:1800 get_arr_int`,
  },
  u32Read("clip.audio.window_size", ofType("mimo_audio"), 1819),
  {
    key: "clip.audio.wa_pattern_mode",
    type: GGUFValueType.INT32,
    array: true,
    when: ofType("mimo_audio"),
    engine: `${CLIP}:1821 get_arr_int`,
  },
  u32Read("clip.audio.local_block_count", ofType("mimo_audio"), 1829),
  u32Read("clip.audio.local_group_size", ofType("mimo_audio"), 1830),
  u32Read("clip.vision.sam.block_count", ofType("deepseekocr", "deepseekocr2"), 1897),
  u32Read("clip.vision.sam.head_count", ofType("deepseekocr", "deepseekocr2"), 1898),
  u32Read("clip.vision.sam.embedding_length", ofType("deepseekocr", "deepseekocr2"), 1899),
  u32Read("clip.audio.chunk_size", ofType("granite_speech"), 1983),
  u32Read("clip.audio.max_pos_emb", ofType("granite_speech"), 1988),
  u32Read("clip.audio.projector.window_size", ofType("granite_speech"), 1989),
  u32Read("clip.audio.projector.downsample_rate", ofType("granite_speech"), 1990),
  u32Read("clip.audio.projector.head_count", ofType("granite_speech"), 1991),
  {
    key: "clip.vision.projector.spatial_offsets",
    type: GGUFValueType.INT32,
    array: true,
    when: ofType("granite4_vision"),
    engine: `${CLIP}:2006 get_arr_int`,
  },
  u32Read("clip.vision.projector.query_side", ofType("granite4_vision"), 2012),
  u32Read("clip.vision.projector.window_side", ofType("granite4_vision"), 2013),
];

/** The value in words: its GGUF type and the value (arrays shortened). */
function typed(v: GGUFValue): string {
  if (v.type === GGUFValueType.ARRAY) {
    const items = Array.from(v.value as ArrayLike<unknown>, (x) => (typeof x === "bigint" ? Number(x) : x));
    return `an ARRAY of ${ggufValueTypeName(v.itemType)} ${shown(items)}`;
  }
  return `${ggufValueTypeName(v.type)} ${shown(typeof v.value === "bigint" ? Number(v.value) : v.value)}`;
}

const TYPE_RULES: Rule[] = KEYS_READ.map((r): Rule => {
  const name = ggufValueTypeName(r.type);
  return r.array
    ? {
      key: r.key,
      rule: `an ARRAY of ${name}`,
      engine: `${r.engine} (throws on another type; ${GGUF_CPP}:195 for the scalar getters)`,
      broken(h) {
        const v = h.get(r.key);
        if (v === undefined || !r.when(h)) return undefined;
        return v.type === GGUFValueType.ARRAY && v.itemType === r.type ? undefined : typed(v);
      },
    }
    : {
      key: r.key,
      rule: `one ${name} value, as the engine reads it`,
      engine: `${r.engine}: ${GGUF_CPP}:195 GGML_ASSERT(type_to_gguf_type<T>::value == type), ${GGUF_CPP}:1099 ` +
        `GGML_ASSERT(get_ne() == 1)`,
      broken(h) {
        const v = h.get(r.key);
        if (v === undefined || !r.when(h)) return undefined;
        return one(v)?.type === r.type ? undefined : typed(v);
      },
    };
});

// ---- 2. projector types --------------------------------------------------------------------------

const PROJECTOR_TYPE_RULES: Rule[] = perEncoder((m): Rule[] => [{
  key: m === "vision" ? "clip.projector_type" : `clip.projector_type (${m} encoder)`,
  rule:
    `a projector type the engine knows for a${
      m === "audio" ? "n audio" : m === "vision" ? " vision" : "n audio generation"
    } ` +
    `encoder: ${[...(m === "vision" ? VISION_TYPES : m === "audio" ? AUDIO_TYPES : GEN_AUDIO_TYPES)].join(", ")}`,
  engine: `${CLIP}:1281 unknown projector type; ${MTMD}:${m === "vision" ? 914 : m === "audio" ? 1009 : 611} ` +
    `(another modality's type is built as this modality's graph in the warm-up, before mtmd refuses it)`,
  broken(h) {
    const e = encoder(h, m);
    if (!e) return undefined;
    const ok = m === "vision"
      ? VISION_TYPES.has(e.type)
      : m === "audio"
      ? AUDIO_TYPES.has(e.type)
      : GEN_AUDIO_TYPES.has(e.type);
    return ok ? undefined : `${shown(e.raw)}${e.typeKey !== "clip.projector_type" ? ` (from ${e.typeKey})` : ""}`;
  },
}]);

// ---- 3. values -------------------------------------------------------------------------------------

/** A rule on one encoder's hyperparameters: `check` returns the offending value or undefined. */
function hp(
  m: Encoder["m"],
  key: string,
  rule: string,
  engine: string,
  check: (hp: Hparams, e: Encoder, h: Header) => string | undefined,
  types?: ReadonlySet<string>,
): Rule {
  return {
    key: key.replaceAll("<m>", m),
    rule,
    engine,
    broken(h) {
      const e = encoder(h, m);
      if (!e || (types && !types.has(e.type))) return undefined;
      return check(hparams(h, e), e, h);
    },
  };
}

const VALUE_RULES: Rule[] = perEncoder((m) => [
  hp(
    m,
    "clip.<m>.attention.layer_norm_epsilon",
    "a number at least 0 (not NaN)",
    "ggml/src/ggml-cpu/ops.cpp:3843 GGML_ASSERT(eps >= 0.0f) in every norm of the graph",
    (p, e) => (p.eps >= 0 || EPS_SET_BY_ENGINE.has(e.type) ? undefined : String(p.eps)),
  ),
  hp(
    m,
    "clip.<m>.attention.head_count",
    "at least 1",
    `${CLIP}:260 d_head = n_embd / n_head; the attention reshapes (e.g. ${M}llava.cpp:87) need whole heads`,
    (p) => (p.nHead >= 1 ? undefined : String(p.nHead)),
    STANDARD_BLOCKS,
  ),
  hp(
    m,
    "clip.<m>.attention.head_count_kv",
    "at least 1 and a divisor of the head count",
    `${M}deepseekocr2.cpp:4-5 GGML_ASSERT(n_head_kv > 0), GGML_ASSERT(n_head % n_head_kv == 0), the same grouping as build_attn's broadcast`,
    (p) => (p.nHeadKv >= 1 && p.nHead % p.nHeadKv === 0 ? undefined : `${p.nHeadKv} (head count ${p.nHead})`),
    BUILD_VIT, // the LLaVA and Qwen2-VL graphs reshape K and V with n_head
  ),
  hp(
    m,
    "clip.<m>.block_count",
    "at most the number of blocks in the file (each needs its attn_out.weight)",
    `${CLIP}:2256 model.layers.resize(n_layer), then ${CLIP}:2262 get_tensor(attn_out) for every block`,
    (p, e, h) => {
      if (NO_STANDARD_LAYERS.has(e.type)) return undefined;
      const have = countBlocks(viewOf(h).tensors, e.p);
      return p.nLayer <= have ? undefined : `${p.nLayer} (the file has ${have})`;
    },
  ),
  hp(
    m,
    "clip.<m>.block_count",
    "at least 1 (the rope positions, an input of the graph, are used only by its blocks)",
    `${CLIP}:4472 GGML_ABORT("Failed to get tensor %s") for an input no block uses (e.g. qwen2vl's positions); ` +
      `${M}whisper-enc.cpp:28 reads model.layers[0]`,
    (p) => (p.nLayer >= 1 ? undefined : String(p.nLayer)),
    new Set([...ROPE_IN_BLOCKS, ...WHISPER]),
  ),
]);

/**
 * The blocks the graph runs: all of them, except in the LLaVA graph, which stops before the last
 * (or after the deepest `feature_layer`) (`tools/mtmd/models/llava.cpp:11-29`); at most those in the file.
 */
function usedBlocks(h: Header, e: Encoder, x: Hparams): number {
  let n = x.nLayer;
  if (LLAVA.has(e.type)) {
    const v = h.get(`clip.${e.m}.feature_layer`);
    const deepest = v?.type === GGUFValueType.ARRAY
      ? Math.max(-1, ...Array.from(v.value as ArrayLike<number>, Number))
      : -1;
    n = deepest < 0 ? x.nLayer - 1 + (e.type === "adapter" ? 1 : 0) : deepest;
  }
  return Math.max(0, Math.min(n, countBlocks(viewOf(h).tensors, e.p)));
}

function countBlocks(tensors: Map<string, GGUFTensorInfo>, p: string): number {
  let n = 0;
  while (tensors.has(`${p}.blk.${n}.attn_out.weight`)) n++;
  return n;
}

/** Vision keys of the fixed-size types: the warm-up image is `image_size` square (`tools/mtmd/clip.cpp:1366`). */
// deno-fmt-ignore
const FIXED_SIZE = new Set([
  "mlp", "ldp", "ldpv2", "adapter", "cogvlm", "janus_pro", "gemma3", "idefics3", "internvl", "nemotron_v2_vl",
  "llama4",
]);

const VISION_RULES: Rule[] = [
  hp(
    "vision",
    "clip.vision.image_size",
    "at least clip.vision.patch_size (the image the encoder is warmed up with and fed is image_size square)",
    `${CLIP}:3675 warm-up image of image_size; ggml/src/ggml.c:4570 GGML_ASSERT(OH > 0) in the patch convolution ` +
      `(ggml/src/ggml.c:4560 GGML_ASSERT(a->ne[2] == b->ne[2]) for its 3 channels)`,
    (p) => (p.imageSize >= p.patchSize ? undefined : `${p.imageSize} (patch size ${p.patchSize})`),
    FIXED_SIZE,
  ),
  hp(
    "vision",
    "clip.vision.projector.scale_factor",
    "a divisor of the patch grid (image_size / patch_size)",
    `${CLIP}:4186 expects n_patches / scale² tokens; ${CLIP}:5780 GGML_ABORT("Invalid number of output tokens") ` +
      `when the pooled or shuffled grid gives another count`,
    (p) => {
      const grid = Math.trunc(p.imageSize / p.patchSize);
      return p.nMerge >= 1 && grid % p.nMerge === 0 ? undefined : `${p.nMerge} (grid ${grid})`;
    },
    new Set(["gemma3", "idefics3", "internvl", "nemotron_v2_vl", "llama4"]),
  ),
  hp(
    "vision",
    "clip.vision.projector.scale_factor",
    "at least 2",
    `${CLIP}:900 GGML_ASSERT(scale_factor > 1) in build_patch_merge_permute`,
    (p) => (p.nMerge > 1 ? undefined : String(p.nMerge)),
    new Set(["idefics3", "lfm2"]),
  ),
  hp(
    "vision",
    "clip.vision.spatial_merge_size",
    "2 (the graph merges 2 × 2 patches)",
    `${M}qwen2vl.cpp:6 GGML_ASSERT(img.nx() % (patch_size * 2) == 0) while the preprocessor aligns to ` +
      `patch_size × spatial_merge_size; ${M}qwen2vl.cpp:181 reshapes to n_embd * 4`,
    (p) => (p.nMerge === 2 ? undefined : String(p.nMerge)),
    new Set([...QWEN2VL, "qwen3vl_merger"]),
  ),
  hp(
    "vision",
    "clip.vision.n_wa_pattern",
    "0 or absent for qwen2vl_merger (only qwen2.5vl_merger sets the window-attention inputs)",
    `${CLIP}:4796 sets only the positions for qwen2vl_merger (${CLIP}:4898 the window inputs for ` +
      `qwen2.5vl_merger); ${M}qwen2vl.cpp:79 gathers rows by the unset inv_window_idx whenever n_wa_pattern > 0, ` +
      `which ggml/src/ggml-cpu/ops.cpp:5138 GGML_ASSERT(i01 >= 0 && i01 < ne01) aborts on when the memory holds garbage`,
    (_p, _e, h) => {
      const n = u32(h, "clip.vision.n_wa_pattern", 0);
      return n === 0 ? undefined : String(n);
    },
    new Set(["qwen2vl_merger"]),
  ),
  hp(
    "vision",
    "clip.vision.n_wa_pattern",
    "0 (no window attention) or at least 2 with at least one block, so some block attends within windows",
    `${CLIP}:4955 set_input_f32("window_mask"): ${CLIP}:4472 GGML_ABORT("Failed to get tensor") when no ` +
      `block uses the mask`,
    (p, _e, h) => {
      const n = u32(h, "clip.vision.n_wa_pattern", 0);
      return n === 0 || (n >= 2 && p.nLayer >= 1) ? undefined : `${n} (block count ${p.nLayer})`;
    },
    new Set(["qwen2.5vl_merger", "exaone4_5"]),
  ),
  hp(
    "vision",
    "clip.vision.patch_size",
    "at most 56 with window attention (its 112-pixel windows must span at least one merged patch)",
    `${CLIP}:4919 grid_window = 112 / patch_size / 2; the window loop at ${CLIP}:4925 never advances when it is 0`,
    (p, _e, h) =>
      u32(h, "clip.vision.n_wa_pattern", 0) === 0 || Math.trunc(112 / p.patchSize / 2) >= 1
        ? undefined
        : String(p.patchSize),
    new Set(["qwen2.5vl_merger"]),
  ),
];

/** The tile counts of the types that cut images into tiles, with the engine's defaults. */
const TILES: Record<string, [number, number]> = { internvl: [1, 12], deepseekocr: [2, 9], deepseekocr2: [2, 6] };

VISION_RULES.push(
  hp(
    "vision",
    "clip.vision.preproc_min_tiles, clip.vision.preproc_max_tiles",
    "a minimum from 1 (internvl; 0 for deepseekocr) to the maximum, at most 256, with min² ≤ max for internvl " +
      "so some tile grid fits",
    `${CLIP}:1481 GGML_ASSERT(preproc_min_tiles <= preproc_max_tiles && preproc_max_tiles < INT32_MAX), ` +
      `${CLIP}:1917 (max <= 256 for deepseekocr); ${CLIP}:3946 set_internvl_dhr_res_candidates leaves no ` +
      `candidate otherwise: tools/mtmd/mtmd-image.cpp:1081 GGML_ASSERT(!image_res_candidates.empty())`,
    (_p, e, h) => {
      const [dMin, dMax] = TILES[e.type];
      const min = u32(h, "clip.vision.preproc_min_tiles", dMin);
      const max = u32(h, "clip.vision.preproc_max_tiles", dMax);
      const ok = e.type === "internvl"
        ? min >= 1 && min <= max && max <= 256 && min * min <= max
        : min <= max && max <= 256;
      return ok ? undefined : `${min} and ${max}`;
    },
    new Set(Object.keys(TILES)),
  ),
);

/** Mel frames of the window mtmd encodes (and warms up with): `warmup_audio_size` (`tools/mtmd/clip-model.h:88`). */
const AUDIO_WINDOW = 3000;

const AUDIO_RULES: Rule[] = [
  hp(
    "audio",
    "clip.audio.projector.stack_factor",
    "at least 1, and such that stacking the 1500 encoder positions of a 30-second window gives the token count " +
      "the engine expects (⌈1500 / factor⌉ = ⌊⌈3000 / factor⌉ / 2⌋, e.g. a divisor of 1500)",
    `${CLIP}:4248 GGML_ASSERT(proj_stack_factor > 0) and ${CLIP}:4249-4258 count ⌊⌈3000/f⌉/2⌋ tokens while ` +
      `${CLIP}:873 build_stack makes ⌈1500/f⌉: ${CLIP}:5780 GGML_ABORT("Invalid number of output tokens")`,
    (p) => {
      const f = p.stack;
      if (f <= 0) return String(f);
      const graph = Math.ceil(AUDIO_WINDOW / 2 / f);
      const expected = Math.floor(Math.ceil(AUDIO_WINDOW / f) / 2);
      return f === 1 || graph === expected ? undefined : `${f} (${graph} tokens made, ${expected} expected)`;
    },
    new Set(["ultravox", "voxtral", "meralion"]),
  ),
];

// ---- 4. tensors -----------------------------------------------------------------------------------

/** ggml's integer tensor types: no projector weight may be one (`ggml/src/ggml.h` I8, I16, I32, I64). */
const INTEGER_TYPES = new Map([[24, "I8"], [25, "I16"], [26, "I32"], [27, "I64"]]);

const TENSOR_TYPE_RULES: Rule[] = [{
  key: "tensor type",
  rule: "a float or quantized type (no I8, I16, I32 or I64 weights)",
  engine: "ggml/src/ggml-cpu/binary-ops.cpp:135 GGML_ABORT(unsupported types) for integer operands of add and mul; " +
    "integer weights have no matrix-product kernel",
  broken(h) {
    for (const t of h.file.tensors) {
      const name = INTEGER_TYPES.get(t.type);
      if (name) return `${name} (${t.name})`;
    }
    return undefined;
  },
}];

/** A tensor rule of a projector type: tensors the graph needs, or must not have. */
interface Presence {
  /** The types it applies to. */
  types: readonly string[];
  /** Tensor names, `{p}` for the encoder's prefix. */
  tensors: readonly string[];
  /** "needs": every one present; "forbids": none present. */
  kind: "needs" | "forbids";
  engine: string;
}

/** What each type's graph dereferences without a null check, or asserts absent. */
const PRESENCE: readonly Presence[] = [
  // the patch convolution (build_inp, tools/mtmd/clip.cpp:572; the Qwen temporal merge; the direct convolutions)
  {
    types: words(
      "mlp ldp ldpv2 adapter resampler minicpmv4_6 cogvlm deepseek4v dots_ocr dots3note_v hunyuanvl internvl " +
        "kimik25 kimivl muse-glimmer nemotron_v2_vl paddleocr pixtral lightonocr gemma3 idefics3 lfm2 janus_pro " +
        "phi4 exaone4_5 gemma4v gemma4uv glm4v llama4 qwen2vl_merger qwen2.5vl_merger qwen3vl_merger yasa2",
    ),
    tensors: ["v.patch_embd.weight"],
    kind: "needs",
    engine:
      `${CLIP}:574 ggml_conv_2d(model.patch_embeddings_0, …) in build_inp (and the graphs' own patch convolutions)`,
  },
  {
    types: ["qwen2vl_merger", "qwen2.5vl_merger", "qwen3vl_merger", "minimax_m3", "mimovl"],
    tensors: ["v.patch_embd.weight", "v.patch_embd.weight.1"],
    kind: "needs",
    engine:
      `${M}qwen2vl.cpp:15 ggml_conv_2d(model.patch_embeddings_1, …) (${M}minimax-m3.cpp:26, ${M}mimovl.cpp:24 assert it)`,
  },
  {
    types: ["qwen2vl_merger", "qwen2.5vl_merger", "exaone4_5", "minimax_m3"],
    tensors: ["v.patch_embd.bias", "v.class_embd"],
    kind: "forbids",
    engine:
      `${M}qwen2vl.cpp:33 GGML_ASSERT(model.patch_bias == nullptr), :34 GGML_ASSERT(model.class_embedding == nullptr)`,
  },
  {
    types: words(
      "qwen3vl_merger glm4v granite4_vision mimovl resampler step3vl youtuvl",
    ),
    tensors: ["v.class_embd"],
    kind: "forbids",
    engine: `${M}qwen3vl.cpp:6 GGML_ASSERT(model.class_embedding == nullptr) (the same in glm4v.cpp:5, ` +
      `granite4-vision.cpp:313, mimovl.cpp:25, minicpmv.cpp:4, step3vl.cpp:4, youtuvl.cpp:4)`,
  },
  {
    types: ["qwen3vl_merger", "glm4v", "gemma4uv"],
    tensors: ["v.patch_embd.bias"],
    kind: "needs",
    engine: `${M}qwen3vl.cpp:4 GGML_ASSERT(model.patch_bias != nullptr) (glm4v.cpp:4; gemma4uv.cpp:23 adds it)`,
  },
  {
    types: words(
      "mlp ldp ldpv2 adapter resampler minicpmv4_6 cogvlm internvl nemotron_v2_vl llama4 qwen3vl_merger step3vl " +
        "granite4_vision kimik25 kimivl paddleocr lfm2 phi4 muse-glimmer gemma4v gemma4uv",
    ),
    tensors: ["v.position_embd.weight"],
    kind: "needs",
    engine: `${M}llava.cpp:43 ggml_get_rows(model.position_embeddings, …) (asserted in internvl.cpp:5, ` +
      `qwen3vl.cpp:5, step3vl.cpp:6, …; resized in ${CLIP}:317 resize_position_embeddings)`,
  },
  {
    types: ["internvl", "cogvlm", "llama4", "nemotron_v2_vl"],
    tensors: ["v.class_embd"],
    kind: "needs",
    engine: `${M}internvl.cpp:4 GGML_ASSERT(model.class_embedding != nullptr) (cogvlm.cpp:4, llama4.cpp:4, ` +
      `nemotron-v2-vl.cpp:4)`,
  },
  {
    types: [...WHISPER, "qwen3a"],
    tensors: ["a.position_embd.weight"],
    kind: "needs",
    engine: `${M}whisper-enc.cpp:6 GGML_ASSERT(model.position_embeddings->ne[1] >= n_pos) reads it unchecked`,
  },
  {
    types: [...WHISPER],
    tensors: [
      "a.blk.0.ln1.weight",
      "a.blk.0.ln1.bias",
      "a.blk.0.ln2.weight",
      "a.blk.0.ln2.bias",
      "a.blk.0.attn_q.bias",
      "a.blk.0.attn_v.bias",
    ],
    kind: "needs",
    engine: `${M}whisper-enc.cpp:28-31 GGML_ASSERT(model.layers[0].ln_1_w && …, q_b, v_b)`,
  },
  {
    types: [...WHISPER],
    tensors: ["a.blk.0.attn_k.bias"],
    kind: "forbids",
    engine: `${M}whisper-enc.cpp:32 GGML_ASSERT(!model.layers[0].k_b)`,
  },
  // the LLaVA projector: every tensor of mm.* is loaded as optional (tools/mtmd/clip.cpp:2350)
  {
    types: ["mlp"],
    tensors: ["mm.0.weight", "mm.0.bias"],
    kind: "needs",
    engine: `${M}llava.cpp:166 build_mm(model.mm_0_w, …), :167 ggml_add(…, model.mm_0_b) (and :176-177 for mlp_norm)`,
  },
];

/** Rules for the tensors of {@linkcode PRESENCE}, and per-block ones. */
const PRESENCE_RULES: Rule[] = perEncoder((m, p) => [
  ...PRESENCE.map((r): Rule => ({
    key: r.tensors.length === 1 ? `tensor ${r.tensors[0].replace("{p}", p)}` : `tensors ${r.tensors.join(", ")}`,
    rule: `${r.kind === "needs" ? "present" : "absent"} for projector type ${r.types.join(", ")}`,
    engine: r.engine,
    broken(h) {
      const e = encoder(h, m);
      if (!e || !r.types.includes(e.type)) return undefined;
      const ts = viewOf(h).tensors;
      for (const name of r.tensors) {
        if (!name.startsWith(`${p}.`) && !name.startsWith("mm.")) continue; // another encoder's tensor
        if (r.kind === "needs" && !ts.has(name)) return `missing: ${name} (projector type ${e.type})`;
        if (r.kind === "forbids" && ts.has(name)) return `present: ${name} (projector type ${e.type})`;
      }
      return undefined;
    },
  })),
  {
    key: "tensors mm.2.weight, mm.2.bias",
    rule: "present for projector type mlp (without mm.3.weight, which makes it Yi's mlp_norm)",
    engine: `${CLIP}:5940 clip_n_mmproj_embd reads model.mm_2_w->ne[1]; ${M}llava.cpp:172 ` +
      `ggml_add(ctx0, embeddings, model.mm_2_b)`,
    broken(h) {
      const e = encoder(h, m);
      const ts = viewOf(h).tensors;
      if (e?.type !== "mlp" || ts.has("mm.3.weight")) return undefined;
      const missing = ["mm.2.weight", "mm.2.bias"].filter((n) => !ts.has(n));
      return missing.length ? `missing: ${missing.join(", ")}` : undefined;
    },
  },
  {
    key: "tensor mm.3.weight",
    rule: "absent for projector type mlp unless mm.1.weight, mm.1.bias, mm.3.bias, mm.4.weight and mm.4.bias " +
      "are present (mm.3.weight makes it Yi's mlp_norm projector)",
    engine: `${CLIP}:2365 proj_type = PROJECTOR_TYPE_MLP_NORM when mm.3.weight exists; ${M}llava.cpp:181-192 ` +
      `uses mm_1_w, mm_1_b, mm_3_b, mm_4_w, mm_4_b unchecked`,
    broken(h) {
      const e = encoder(h, m);
      const ts = viewOf(h).tensors;
      if (e?.type !== "mlp" || !ts.has("mm.3.weight")) return undefined;
      const missing = ["mm.1.weight", "mm.1.bias", "mm.3.bias", "mm.4.weight", "mm.4.bias"].filter((n) => !ts.has(n));
      return missing.length ? `present without ${missing.join(", ")}` : undefined;
    },
  },
  {
    key: `tensors ${p}.blk.N.attn_q/k/v.weight`,
    rule: "present in every block (or a fused attn_qkv.weight where the graph takes one)",
    engine: `${CLIP}:424 build_mm(layer.q_w, cur) (and k_w, v_w) in build_vit; ${M}llava.cpp:72, ` +
      `${M}qwen2vl.cpp:115 use them without a fused path`,
    broken(h) {
      const e = encoder(h, m);
      if (!e || !STANDARD_BLOCKS.has(e.type) || e.type === "qwen3vl_merger") return undefined;
      const fusedOk = !LLAVA.has(e.type) && !QWEN2VL.has(e.type);
      const ts = viewOf(h).tensors;
      const n = usedBlocks(h, e, hparams(h, e));
      for (let il = 0; il < n; il++) {
        const b = `${p}.blk.${il}.`;
        if (fusedOk && ts.has(`${b}attn_qkv.weight`)) continue;
        for (const x of ["attn_q", "attn_k", "attn_v"]) {
          if (!ts.has(`${b}${x}.weight`)) return `missing: ${b}${x}.weight`;
        }
      }
      return undefined;
    },
  },
  {
    key: `tensors ${p}.blk.N.attn_q/k/v.bias`,
    rule: "present in every block (projector types qwen2vl_merger, qwen2.5vl_merger)",
    engine: `${M}qwen2vl.cpp:114-119 ggml_add(ctx0, build_mm(layer.q_w, cur), layer.q_b) (k_b, v_b)`,
    broken(h) {
      const e = encoder(h, m);
      if (!e || !QWEN2VL.has(e.type)) return undefined;
      const ts = viewOf(h).tensors;
      const n = usedBlocks(h, e, hparams(h, e));
      for (let il = 0; il < n; il++) {
        for (const x of ["attn_q", "attn_k", "attn_v"]) {
          const name = `${p}.blk.${il}.${x}.bias`;
          if (!ts.has(name)) return `missing: ${name}`;
        }
      }
      return undefined;
    },
  },
  {
    key: `tensors ${p}.blk.N.attn_qkv.weight, attn_qkv.bias`,
    rule: "present in every block (projector type qwen3vl_merger)",
    engine: `${M}qwen3vl.cpp:81 build_mm(layer.qkv_w, cur), :82 ggml_add(ctx0, cur, layer.qkv_b)`,
    broken(h) {
      const e = encoder(h, m);
      if (e?.type !== "qwen3vl_merger") return undefined;
      const ts = viewOf(h).tensors;
      const n = usedBlocks(h, e, hparams(h, e));
      for (let il = 0; il < n; il++) {
        for (const x of ["attn_qkv.weight", "attn_qkv.bias"]) {
          if (!ts.has(`${p}.blk.${il}.${x}`)) return `missing: ${p}.blk.${il}.${x}`;
        }
      }
      return undefined;
    },
  },
  {
    key: `tensors ${p}.blk.N.ffn_gate_exps.weight`,
    rule: "absent except for projector type dots3note_v (a mixture-of-experts feed-forward needs its expert count)",
    engine: `${CLIP}:710 GGML_ASSERT(n_expert_used > 0), :711 GGML_ASSERT(type_op == FFN_SILU) in build_moe_ffn`,
    broken(h) {
      const e = encoder(h, m);
      // only build_vit takes the MoE path (tools/mtmd/clip.cpp:517)
      if (!e || !BUILD_VIT.has(e.type) || e.type === "dots3note_v") return undefined;
      for (const t of h.file.tensors) {
        if (t.name.startsWith(`${p}.blk.`) && t.name.includes(".ffn_gate_exps.")) return `present: ${t.name}`;
      }
      return undefined;
    },
  },
]);

// ---- 5. shapes ----------------------------------------------------------------------------------

function dims(t: GGUFTensorInfo | undefined): string {
  return t ? `[${t.dims.join(", ")}]` : "absent";
}

/** Rules that the standard blocks' tensors agree with the keys (width, heads, feed-forward). */
const BLOCK_SHAPE_RULES: Rule[] = perEncoder((m, p) => {
  /** The first block whose tensor breaks `check`, in words. */
  const blocks =
    (check: (b: string, hp: Hparams, ts: Map<string, GGUFTensorInfo>, e: Encoder) => string | undefined) =>
    (h: Header) => {
      const e = encoder(h, m);
      if (!e || !STANDARD_BLOCKS.has(e.type)) return undefined;
      const x = hparams(h, e);
      const ts = viewOf(h).tensors;
      const n = usedBlocks(h, e, x);
      for (let il = 0; il < n; il++) {
        const bad = check(`${p}.blk.${il}.`, x, ts, e);
        if (bad) return bad;
      }
      return undefined;
    };
  return [
    {
      key: `clip.${m}.embedding_length`,
      rule: `the width of every block: the input of ${p}.blk.N.attn_q/k/v (or attn_qkv) and ffn_up, the output of ` +
        `attn_out and ffn_down, the size of the ln1/ln2 norms`,
      engine: `${CLIP}:355 ggml_reshape_2d(inp, n_embd, n_pos * B) feeds every block; ggml/src/ggml.c:3345 ` +
        `GGML_ASSERT(ggml_can_mul_mat(a, b)), ggml/src/ggml.c:2063 GGML_ASSERT(ggml_can_repeat(b, a))`,
      broken: blocks((b, x, ts) => {
        const w = x.nEmbd;
        for (const n of ["attn_q", "attn_k", "attn_v", "attn_qkv"]) {
          const t = ts.get(`${b}${n}.weight`);
          if (t && t.dims[0] !== w) return `${w} but ${b}${n}.weight is ${dims(t)}`;
        }
        const o = ts.get(`${b}attn_out.weight`);
        if (o && o.dims[1] !== w) return `${w} but ${b}attn_out.weight is ${dims(o)}`;
        for (const n of ["ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "attn_out.bias"]) {
          const t = ts.get(`${b}${n}`);
          if (t && t.dims[0] !== w) return `${w} but ${b}${n} is ${dims(t)}`;
        }
        return undefined;
      }),
    },
    {
      key: `clip.${m}.attention.head_count`,
      rule: `such that head_count × head size (attention.head_dim, else embedding_length / head_count) is the ` +
        `output width of ${p}.blk.N.attn_q.weight and the input width of attn_out.weight`,
      engine: `${CLIP}:260 d_head; ${CLIP}:453 ggml_reshape_4d(Qcur, d_head, n_head, n_pos, B) ` +
        `(${M}llava.cpp:87, ${M}qwen2vl.cpp:121 ggml_reshape_3d): ggml/src/ggml.c:3749 ` +
        `GGML_ASSERT(ggml_nelements(a) == ne0*ne1*ne2)`,
      broken: blocks((b, x, ts, e) => {
        const q = x.nHead * x.dHead;
        if (x.dHead < 1) return `${x.nHead} (head size ${x.dHead})`;
        const tq = ts.get(`${b}attn_q.weight`);
        if (tq && tq.dims[1] !== q) {
          return `${x.nHead} × head size ${x.dHead} = ${q} but ${b}attn_q.weight is ${dims(tq)}`;
        }
        const tqb = ts.get(`${b}attn_q.bias`);
        if (tq && tqb && tqb.dims[0] !== q) return `${x.nHead} × ${x.dHead} = ${q} but ${b}attn_q.bias is ${dims(tqb)}`;
        const o = ts.get(`${b}attn_out.weight`);
        if (o && o.dims[0] !== q) {
          return `${x.nHead} × head size ${x.dHead} = ${q} but ${b}attn_out.weight is ${dims(o)}`;
        }
        // K and V: the LLaVA and Qwen2-VL graphs reshape them with n_head, build_vit with n_head_kv
        const kvHeads = LLAVA.has(e.type) || QWEN2VL.has(e.type) || e.type === "qwen3vl_merger" ? x.nHead : x.nHeadKv;
        const kv = kvHeads * x.dHead;
        for (const n of ["attn_k", "attn_v"]) {
          const t = ts.get(`${b}${n}.weight`);
          if (t && t.dims[1] !== kv) {
            return `${kvHeads} K/V heads × ${x.dHead} = ${kv} but ${b}${n}.weight is ${dims(t)}`;
          }
          const tb = ts.get(`${b}${n}.bias`);
          if (t && tb && tb.dims[0] !== kv) return `${kv} but ${b}${n}.bias is ${dims(tb)}`;
        }
        // a fused qkv is viewed as three n_head × d_head parts (tools/mtmd/clip.cpp:392-408, models/qwen3vl.cpp:84-96,
        // which offsets K and V by n_embd); the LLaVA and Qwen2-VL graphs ignore it
        const qkv = LLAVA.has(e.type) || QWEN2VL.has(e.type) ? undefined : ts.get(`${b}attn_qkv.weight`);
        if (qkv && (qkv.dims[1] !== 3 * q || (e.type === "qwen3vl_merger" && q !== x.nEmbd))) {
          return `${x.nHead} × ${x.dHead} but ${b}attn_qkv.weight is ${dims(qkv)}`;
        }
        return undefined;
      }),
    },
    {
      key: `tensors ${p}.blk.N.ffn_up/ffn_gate/ffn_down.weight`,
      rule: "a chain from the block width back to it: ffn_up (and ffn_gate) [width, F], ffn_down [F, width]",
      engine: `${CLIP}:616 build_ffn: build_mm(up, cur), build_mm(gate, cur), build_mm(down, cur): ` +
        `ggml/src/ggml.c:3345 GGML_ASSERT(ggml_can_mul_mat(a, b)); ${CLIP}:2314 swaps up and down of old files`,
      broken: blocks((b, x, ts) => {
        let up = ts.get(`${b}ffn_up.weight`);
        let down = ts.get(`${b}ffn_down.weight`);
        let upB = ts.get(`${b}ffn_up.bias`);
        let downB = ts.get(`${b}ffn_down.bias`);
        if (!up || !down) return undefined; // the loader requires them (typed error) or it is a MoE block
        if (down.dims[0] === x.nEmbd && up.dims[0] !== x.nEmbd) {
          [up, down, upB, downB] = [down, up, downB, upB]; // the legacy swap (tools/mtmd/clip.cpp:2331)
        }
        const gate = ts.get(`${b}ffn_gate.weight`);
        const f = up.dims[1];
        const bad = up.dims[0] !== x.nEmbd || down.dims[0] !== f || down.dims[1] !== x.nEmbd ||
          (gate !== undefined && (gate.dims[0] !== x.nEmbd || gate.dims[1] !== f)) ||
          (upB !== undefined && upB.dims[0] !== f) || (downB !== undefined && downB.dims[0] !== x.nEmbd);
        return bad
          ? `width ${x.nEmbd}: ffn_up ${dims(up)}, ffn_gate ${dims(gate)}, ffn_down ${dims(down)} in ${b.slice(0, -1)}`
          : undefined;
      }),
    },
  ];
});

/** Rules on the tensors around the blocks: patch convolution, position embeddings, projector inputs. */
const SHAPE_RULES: Rule[] = [
  {
    key: "tensor v.patch_embd.weight",
    rule: "[k, k, 3, embedding_length] with k at most patch_size (and, where the image is image_size square, " +
      "image_size mod patch_size below k), so the stride-patch_size convolution gives one output per patch",
    engine: `${CLIP}:574 ggml_conv_2d(patch_embeddings_0, inp_raw, patch_size, patch_size, …) then ` +
      `${CLIP}:575 ggml_reshape_3d(inp, n_patches, n_embd, n_batch): ggml/src/ggml.c:3749; ` +
      `ggml/src/ggml.c:4560 GGML_ASSERT(a->ne[2] == b->ne[2]) for the 3 channels`,
    broken(h) {
      const e = encoder(h, "vision");
      if (!e || !STANDARD_BLOCKS.has(e.type) || e.type === "llama4") return undefined;
      const x = hparams(h, e);
      const ts = viewOf(h).tensors;
      // the remainder of the image side the convolution sees (dynamic sizes are whole patches)
      const r = FIXED_SIZE.has(e.type) ? x.imageSize % x.patchSize : 0;
      for (const name of ["v.patch_embd.weight", "v.patch_embd.weight.1"]) {
        const t = ts.get(name);
        if (!t) continue;
        const [k0, k1, c, w] = [t.dims[0], t.dims[1] ?? 1, t.dims[2] ?? 1, t.dims[3] ?? 1];
        const fits = (k: number) => k >= 1 && k <= x.patchSize && r < k;
        if (!fits(k0) || !fits(k1) || c !== 3 || w !== x.nEmbd) {
          return `${dims(t)} for ${name} (patch size ${x.patchSize}, width ${x.nEmbd}` +
            `${r ? `, image_size ${x.imageSize}` : ""})`;
        }
      }
      const bias = ts.get("v.patch_embd.bias");
      return bias && bias.dims[0] !== x.nEmbd ? `bias ${dims(bias)} (width ${x.nEmbd})` : undefined;
    },
  },
  {
    key: "tensor v.position_embd.weight",
    rule: "one row of the width per patch of the image_size square (plus one for v.class_embd where the graph " +
      "adds it: mlp rows at least that many)",
    engine: `${M}llava.cpp:43 ggml_get_rows(position_embeddings, positions[0..n_pos)); ${CLIP}:350 ` +
      `ggml_add(inp, learned_pos_embd) in build_vit: ggml/src/ggml.c:2063 GGML_ASSERT(ggml_can_repeat(b, a))`,
    broken(h) {
      const e = encoder(h, "vision");
      if (
        !e || !new Set(["mlp", "ldp", "ldpv2", "adapter", "gemma3", "idefics3", "janus_pro", "internvl"]).has(e.type)
      ) {
        return undefined;
      }
      const t = viewOf(h).tensors.get("v.position_embd.weight");
      if (!t) return undefined;
      const x = hparams(h, e);
      const grid = Math.trunc(x.imageSize / x.patchSize);
      const cls = e.type === "internvl" || (LLAVA.has(e.type) && viewOf(h).tensors.has("v.class_embd")) ? 1 : 0;
      const need = grid * grid + cls;
      const rows = t.dims[1] ?? 1;
      const ok = t.dims[0] === x.nEmbd && (LLAVA.has(e.type) ? rows >= need : rows === need);
      return ok ? undefined : `${dims(t)} (width ${x.nEmbd}, ${need} positions for image_size ${x.imageSize})`;
    },
  },
  {
    key: "tensor v.class_embd",
    rule: "[embedding_length] (it is concatenated to the patches)",
    engine: `${M}llava.cpp:36 ggml_concat(inp, model.class_embedding, 1); ${M}internvl.cpp:11 ggml_repeat_4d`,
    broken(h) {
      const e = encoder(h, "vision");
      const t = viewOf(h).tensors.get("v.class_embd");
      if (!e || !t || !(LLAVA.has(e.type) || e.type === "internvl")) return undefined;
      const x = hparams(h, e);
      return t.dims[0] === x.nEmbd && t.dims.slice(1).every((d) => d === 1)
        ? undefined
        : `${dims(t)} (width ${x.nEmbd})`;
    },
  },
  {
    key: "tensor mm.0.weight",
    rule: "taking the block width in (projector type mlp), or four merged patches of it (qwen2vl_merger, " +
      "qwen2.5vl_merger, qwen3vl_merger)",
    engine: `${M}llava.cpp:166 build_mm(model.mm_0_w, embeddings); ${M}qwen2vl.cpp:181 ggml_reshape_3d(embeddings, ` +
      `n_embd * 4, n_pos / 4): ggml/src/ggml.c:3345 GGML_ASSERT(ggml_can_mul_mat(a, b))`,
    broken(h) {
      const e = encoder(h, "vision");
      const ts = viewOf(h).tensors;
      const t = ts.get("mm.0.weight");
      if (!e || !t || !(e.type === "mlp" || QWEN2VL.has(e.type) || e.type === "qwen3vl_merger")) return undefined;
      const x = hparams(h, e);
      const w = e.type === "mlp" ? x.nEmbd : 4 * x.nEmbd;
      const b = ts.get("mm.0.bias");
      const b2 = ts.get("mm.2.weight");
      const b2b = ts.get("mm.2.bias");
      const out = t.dims[1] ?? 1;
      if (t.dims[0] !== w) return `${dims(t)} (input ${w})`;
      if (b && b.dims[0] !== out) return `${dims(t)} with mm.0.bias ${dims(b)}`;
      if (b2 && (b2.dims[0] !== out || (b2b && b2b.dims[0] !== (b2.dims[1] ?? 1)))) {
        return `${dims(t)} then mm.2.weight ${dims(b2)}, mm.2.bias ${dims(b2b)}`;
      }
      return undefined;
    },
  },
  {
    key: "clip.vision.projection_dim",
    rule: "the output width of mm.2.weight (with window attention, the merger's output is reshaped to it)",
    engine: `${M}qwen2vl.cpp:196 ggml_reshape_2d(embeddings, hparams.projection_dim, n_patches / 4): ` +
      `ggml/src/ggml.c:3730 GGML_ASSERT(ggml_nelements(a) == ne0*ne1)`,
    broken(h) {
      const e = encoder(h, "vision");
      if (e?.type !== "qwen2.5vl_merger" || u32(h, "clip.vision.n_wa_pattern", 0) === 0) return undefined;
      const x = hparams(h, e);
      const t = viewOf(h).tensors.get("mm.2.weight");
      return !t || t.dims[1] === x.projectionDim ? undefined : `${x.projectionDim} but mm.2.weight is ${dims(t)}`;
    },
  },
  {
    key: "tensor mm.model.fc.weight",
    rule: "taking embedding_length × scale_factor² in (the pixel shuffle's output; projector type idefics3)",
    engine: `${M}siglip.cpp:45 build_patch_merge_permute(cur, scale_factor) then :46 build_mm(model.mm_fc_w, cur): ` +
      `ggml/src/ggml.c:3345 GGML_ASSERT(ggml_can_mul_mat(a, b))`,
    broken(h) {
      const e = encoder(h, "vision");
      const t = viewOf(h).tensors.get("mm.model.fc.weight");
      if (e?.type !== "idefics3" || !t) return undefined;
      const x = hparams(h, e);
      const w = x.nEmbd * x.nMerge * x.nMerge;
      return t.dims[0] === w ? undefined : `${dims(t)} (input ${x.nEmbd} × ${x.nMerge}² = ${w})`;
    },
  },
  {
    key: "tensors mm.soft_emb_norm.weight, mm.input_projection.weight",
    rule: "[embedding_length] and [text width, embedding_length] (projector type gemma3)",
    engine:
      `${M}siglip.cpp:34 ggml_mul(cur, model.mm_soft_emb_norm_w), :37 ggml_mul_mat(transpose(mm_input_proj_w), cur)`,
    broken(h) {
      const e = encoder(h, "vision");
      if (e?.type !== "gemma3") return undefined;
      const x = hparams(h, e);
      const ts = viewOf(h).tensors;
      const n = ts.get("mm.soft_emb_norm.weight");
      const p = ts.get("mm.input_projection.weight");
      if (n && n.dims[0] !== x.nEmbd) return `mm.soft_emb_norm.weight ${dims(n)} (width ${x.nEmbd})`;
      if (p && (p.dims[1] ?? 1) !== x.nEmbd) return `mm.input_projection.weight ${dims(p)} (width ${x.nEmbd})`;
      return undefined;
    },
  },
  {
    key: "tensors mm.model.mlp.0/1.weight",
    rule: "taking embedding_length × scale_factor² in (the pixel shuffle's output; projector type internvl)",
    engine:
      `${M}internvl.cpp:41 ggml_reshape_4d(cur, n_embd * scale_factor, …), :60 build_norm(cur, mm_0_w, mm_0_b), ` +
      `:61 build_ffn(cur, mm_1_w, …): ggml/src/ggml.c:2063, 3345`,
    broken(h) {
      const e = encoder(h, "vision");
      if (e?.type !== "internvl") return undefined;
      const x = hparams(h, e);
      const w = x.nEmbd * x.nMerge * x.nMerge;
      const ts = viewOf(h).tensors;
      for (const n of ["mm.model.mlp.0.weight", "mm.model.mlp.0.bias", "mm.model.mlp.1.weight"]) {
        const t = ts.get(n);
        if (t && t.dims[0] !== w) return `${n} ${dims(t)} (input ${x.nEmbd} × ${x.nMerge}² = ${w})`;
      }
      return undefined;
    },
  },
  {
    key: "tensors a.conv1d.1.weight, a.conv1d.2.weight",
    rule:
      "[kernel, num_mel_bins, embedding_length] then [kernel, embedding_length, embedding_length] (whisper encoders)",
    engine: `${M}whisper-enc.cpp:13 ggml_conv_1d_ph(model.conv1d_1_w, inp, …) over num_mel_bins rows, :18 the second ` +
      `convolution, then build_vit on embedding_length: ggml/src/ggml.c:4563 GGML_ASSERT(b->ne[1] == a->ne[1]) in im2col`,
    broken(h) {
      const e = encoder(h, "audio");
      if (!e || !WHISPER.has(e.type)) return undefined;
      const x = hparams(h, e);
      const mel = u32(h, "clip.audio.num_mel_bins", 0);
      const ts = viewOf(h).tensors;
      const c1 = ts.get("a.conv1d.1.weight");
      const c2 = ts.get("a.conv1d.2.weight");
      if (c1 && (c1.dims[1] !== mel || c1.dims[2] !== x.nEmbd)) {
        return `a.conv1d.1.weight ${dims(c1)} (mel bins ${mel}, width ${x.nEmbd})`;
      }
      if (c2 && (c2.dims[1] !== x.nEmbd || c2.dims[2] !== x.nEmbd)) {
        return `a.conv1d.2.weight ${dims(c2)} (width ${x.nEmbd})`;
      }
      for (const n of ["a.conv1d.1.bias", "a.conv1d.2.bias"]) {
        const t = ts.get(n);
        if (t && t.dims[t.dims.length - 1] !== x.nEmbd) return `${n} ${dims(t)} (width ${x.nEmbd})`;
      }
      return undefined;
    },
  },
  {
    key: "tensor a.position_embd.weight",
    rule: "[embedding_length, at least 1500] (one row per encoder position of a 30-second window)",
    engine: `${M}whisper-enc.cpp:6 GGML_ASSERT(model.position_embeddings->ne[1] >= n_pos) and :34 its view added ` +
      `to the n_embd-wide input`,
    broken(h) {
      const e = encoder(h, "audio");
      if (!e || !WHISPER.has(e.type)) return undefined;
      const t = viewOf(h).tensors.get("a.position_embd.weight");
      const x = hparams(h, e);
      return !t || (t.dims[0] === x.nEmbd && (t.dims[1] ?? 1) >= AUDIO_WINDOW / 2)
        ? undefined
        : `${dims(t)} (width ${x.nEmbd})`;
    },
  },
  {
    key: "tensors mm.a.norm_pre.weight, mm.a.mlp.1.weight",
    rule: "taking embedding_length × stack_factor in (the stacked frames; projector type ultravox)",
    engine: `${M}whisper-enc.cpp:51 build_stack(cur, proj_stack_factor, n_embd), :59 ggml_mul(cur, mm_norm_pre_w), ` +
      `:62 build_mm(model.mm_1_w, cur): ggml/src/ggml.c:2063, 3345`,
    broken(h) {
      const e = encoder(h, "audio");
      if (e?.type !== "ultravox") return undefined;
      const x = hparams(h, e);
      const w = x.nEmbd * Math.max(1, x.stack);
      const ts = viewOf(h).tensors;
      for (const n of ["mm.a.norm_pre.weight", "mm.a.mlp.1.weight"]) {
        const t = ts.get(n);
        if (t && t.dims[0] !== w) return `${n} ${dims(t)} (input ${x.nEmbd} × ${x.stack} = ${w})`;
      }
      const up = ts.get("mm.a.mlp.1.weight");
      const mid = ts.get("mm.a.norm_mid.weight");
      const down = ts.get("mm.a.mlp.2.weight");
      const half = up ? (up.dims[1] ?? 1) / 2 : undefined;
      if (half !== undefined && ((mid && mid.dims[0] !== half) || (down && down.dims[0] !== half))) {
        return `mm.a.mlp.1.weight ${dims(up)}, mm.a.norm_mid.weight ${dims(mid)}, mm.a.mlp.2.weight ${dims(down)}`;
      }
      return undefined;
    },
  },
];

// ---- the table -------------------------------------------------------------------------------------

/**
 * The projector rules, in the order they are applied: value types first (a later rule may then
 * read any value as the type the engine reads), then projector types, values, tensors and shapes.
 */
export const PROJECTOR_RULES: readonly Rule[] = [
  ...TYPE_RULES,
  ...PROJECTOR_TYPE_RULES,
  ...VALUE_RULES,
  ...VISION_RULES,
  ...AUDIO_RULES,
  ...TENSOR_TYPE_RULES,
  ...PRESENCE_RULES,
  ...BLOCK_SHAPE_RULES,
  ...SHAPE_RULES,
];

/**
 * Checks a parsed projector file against {@linkcode PROJECTOR_RULES}.
 *
 * @param file A parsed GGUF file of architecture "clip".
 * @throws {GGUFFormatError} Naming the key, its value and the rule of the first rule broken.
 */
export function checkProjector(file: GGUFFile): void {
  applyRules(PROJECTOR_RULES, new Header(file));
}
