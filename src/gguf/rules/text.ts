/**
 * Header rules of language and embedding models (any `general.architecture` but "clip"): the
 * hyperparameters the pinned engine reads in `llama_model_base::load_hparams`
 * (src/llama-model.cpp) and asserts on there or in an architecture's graph (src/models/*.cpp),
 * and the values that reach an abort in ggml (src/ggml-cpu). Values the engine refuses with an
 * error of its own are left to it.
 *
 * @module
 */
import { ENGINE_FACTS } from "./engine_facts.ts";
import { type Header, type Rule, shown } from "./rule.ts";

/** llama.cpp's LLAMA_MAX_LAYERS (src/llama-hparams.h). */
export const LLAMA_MAX_LAYERS = 512;
/** llama.cpp's LLAMA_MAX_EXPERTS (src/llama-hparams.h). */
export const LLAMA_MAX_EXPERTS = 1024;

const M = "src/llama-model.cpp";
const archs: Record<string, readonly [string, number, number]> = ENGINE_FACTS.archs;
const hybridOrRecurrent = new Set<string>([...ENGINE_FACTS.hybrid, ...ENGINE_FACTS.recurrent]);

/** The block count when it is a plain number in range, else undefined (its own rule reports it). */
function layers(h: Header): number | undefined {
  const n = h.num("{arch}.block_count");
  return n !== undefined && n > 0 && n <= LLAMA_MAX_LAYERS ? n : undefined;
}

/** A per-layer value as the engine's get_key_or_arr reads it: a scalar for every layer, or an array of one per layer. */
function perLayer(h: Header, key: string): number[] | undefined {
  const n = layers(h);
  const v = h.nums(key);
  if (v === undefined || n === undefined) return undefined;
  if (v.length === 1 && h.get(key)?.type !== 9) return Array(n).fill(v[0]);
  return v.length === n ? v : undefined; // another length is the engine's own error
}

const expertsOf = (h: Header) => h.num("{arch}.expert_count") ?? 0;
const usedMax = (h: Header) => Math.max(0, ...(perLayer(h, "{arch}.expert_used_count") ?? [0]));
const groupsOf = (h: Header) => h.num("{arch}.expert_group_count") ?? 0;

/** The attention head widths the engine derives (keys, values), for layer 0, or undefined without heads. */
function headWidths(h: Header): { k: number; v: number } | undefined {
  const heads = perLayer(h, "{arch}.attention.head_count")?.[0];
  const embd = h.num("{arch}.embedding_length");
  if (!heads || embd === undefined) return undefined;
  const fallback = Math.floor(embd / heads);
  return { k: h.num("{arch}.attention.key_length") ?? fallback, v: h.num("{arch}.attention.value_length") ?? fallback };
}

/** A finite number not below zero, when present. */
function nonNegative(key: string, engine: string): Rule {
  return {
    key,
    rule: "a finite number not below 0",
    engine,
    broken: (h) => {
      const v = h.num(key);
      return v !== undefined && !(Number.isFinite(v) && v >= 0) ? shown(v) : undefined;
    },
  };
}

/** The table. Each rule's `engine` is the line it stands in for. */
export const TEXT_RULES: readonly Rule[] = [
  // layer counts
  {
    key: "{arch}.block_count",
    rule: `1 to ${LLAMA_MAX_LAYERS}`,
    engine: `${M}:1260 GGML_ASSERT(hparams.n_layer_all > 0 && hparams.n_layer_all <= LLAMA_MAX_LAYERS)`,
    broken: (h) => {
      const n = h.num("{arch}.block_count");
      return n !== undefined && !(n > 0 && n <= LLAMA_MAX_LAYERS) ? shown(n) : undefined;
    },
  },
  ...(["nextn_predict_layers", "posnet.block_count", "convnext.block_count"] as const).map((k, i): Rule => ({
    key: `{arch}.${k}`,
    rule: "at most {arch}.block_count",
    engine: [
      `${M}:1262 GGML_ASSERT(hparams.n_layer_nextn <= hparams.n_layer_all)`,
      `${M}:1286 GGML_ASSERT(hparams.posnet.n_layer <= hparams.n_layer_all)`,
      `${M}:1287 GGML_ASSERT(hparams.convnext.n_layer <= hparams.n_layer_all)`,
    ][i],
    broken: (h) => {
      const v = h.num(`{arch}.${k}`);
      const n = h.num("{arch}.block_count");
      return v !== undefined && n !== undefined && v > n ? `${v} with ${n} blocks` : undefined;
    },
  })),

  // experts (src/llama-model.cpp:1293-1305)
  {
    key: "{arch}.expert_count",
    rule: `at most ${LLAMA_MAX_EXPERTS}`,
    engine: `${M}:1293 GGML_ASSERT(hparams.n_expert <= LLAMA_MAX_EXPERTS)`,
    broken: (h) => (expertsOf(h) > LLAMA_MAX_EXPERTS ? shown(expertsOf(h)) : undefined),
  },
  {
    key: "{arch}.expert_used_count",
    rule: "at most {arch}.expert_count in every layer, and above 0 when there are experts",
    engine:
      `${M}:1294 GGML_ASSERT(n_expert_used_max <= hparams.n_expert); ${M}:1296 GGML_ASSERT(n_expert_used_max > 0)`,
    broken: (h) => {
      const used = usedMax(h), experts = expertsOf(h);
      return used > experts || (experts > 0 && used === 0)
        ? `${used} (the most of any layer) with ${experts} experts`
        : undefined;
    },
  },
  {
    key: "{arch}.expert_group_count",
    rule: "0 without experts; else below {arch}.expert_count and, above 1, dividing it",
    engine:
      `${M}:1297 GGML_ASSERT(hparams.n_expert_groups < hparams.n_expert); ${M}:1299 GGML_ASSERT(hparams.n_expert % ` +
      `hparams.n_expert_groups == 0); ${M}:1305 GGML_ASSERT(hparams.n_expert_groups == 0)`,
    broken: (h) => {
      const groups = groupsOf(h), experts = expertsOf(h);
      const bad = experts === 0 ? groups !== 0 : groups >= experts || (groups > 1 && experts % groups !== 0);
      return bad ? `${groups} with ${experts} experts` : undefined;
    },
  },
  {
    key: "{arch}.expert_group_used_count",
    rule: "above 0 and below {arch}.expert_group_count when there are groups",
    engine: `${M}:1300 GGML_ASSERT(hparams.n_group_used > 0); ${M}:1301 GGML_ASSERT(hparams.n_group_used < ` +
      `hparams.n_expert_groups)`,
    broken: (h) => {
      const groups = groupsOf(h), used = h.num("{arch}.expert_group_used_count") ?? 0;
      return expertsOf(h) > 0 && groups > 1 && !(used > 0 && used < groups) ? `${used} of ${groups} groups` : undefined;
    },
  },

  // attention heads
  {
    key: "{arch}.attention.head_count_kv",
    rule: "in every layer with heads, above 0 and dividing {arch}.attention.head_count (0 only in a hybrid or " +
      "recurrent model's layers without attention)",
    engine: "ggml/src/ggml.c:3345 GGML_ASSERT(ggml_can_mul_mat(a, b)); ggml/src/ggml.c:3337 (t1->ne[2]%t0->ne[2] == 0)",
    broken: (h) => {
      const heads = perLayer(h, "{arch}.attention.head_count");
      const kv = perLayer(h, "{arch}.attention.head_count_kv");
      if (!heads || !kv) return undefined;
      for (let il = 0; il < heads.length; il++) {
        if (heads[il] === 0 && kv[il] === 0) continue;
        if (kv[il] === 0 && hybridOrRecurrent.has(h.arch)) continue;
        if (kv[il] === 0 || heads[il] % kv[il] !== 0) return `${kv[il]} in layer ${il}, with ${heads[il]} heads`;
      }
      return undefined;
    },
  },
  {
    key: "{arch}.attention.key_length",
    rule: "equal to {arch}.attention.value_length (this architecture's graph takes one head width)",
    engine: "src/models/<arch>.cpp GGML_ASSERT(n_embd_head == hparams.n_embd_head_k()) — in the graphs of the " +
      "architectures engine_facts.ts lists with its line",
    broken: (h) => {
      const w = headWidths(h);
      const at = archs[h.arch]?.[1];
      return w && at && w.k !== w.v ? `${w.k}, with values ${w.v} wide (${archs[h.arch][0]}:${at})` : undefined;
    },
  },
  {
    key: "{arch}.rope.dimension_count",
    rule: "the attention head's width (this architecture's graph turns whole heads)",
    engine: "src/models/<arch>.cpp GGML_ASSERT(n_embd_head == n_rot) — in the graphs of the architectures " +
      "engine_facts.ts lists with its line",
    broken: (h) => {
      const w = headWidths(h);
      const rot = h.num("{arch}.rope.dimension_count");
      const at = archs[h.arch]?.[2];
      return w && at && rot !== undefined && rot !== w.v
        ? `${rot}, with heads ${w.v} wide (${archs[h.arch][0]}:${at})`
        : undefined;
    },
  },

  // attention tensors follow the per-layer head counts
  {
    key: "{arch}.attention.head_count_kv",
    rule: "per layer, what that layer's K and V tensors hold (blk.N.attn_k.weight is head_count_kv(N) × key_length " +
      "wide)",
    engine: "ggml/src/ggml.c:3345 GGML_ASSERT(ggml_can_mul_mat(a, b)) — the graph reshapes K and V by the layer's " +
      "head count",
    broken: (h) => {
      const kv = perLayer(h, "{arch}.attention.head_count_kv") ?? perLayer(h, "{arch}.attention.head_count");
      const w = headWidths(h);
      if (!kv || !w || kv.every((x) => x === kv[0])) return undefined; // uniform: the engine checks the shapes
      const dims = new Map(h.file.tensors.map((t) => [t.name, t.dims]));
      for (let il = 0; il < kv.length; il++) {
        for (const [name, width] of [[`blk.${il}.attn_k.weight`, w.k], [`blk.${il}.attn_v.weight`, w.v]] as const) {
          const d = dims.get(name);
          if (d && d.length >= 2 && Number(d[1]) !== kv[il] * width) {
            return `${shown(kv)}, but ${name} is ${Number(d[1])} wide, not ${kv[il]} × ${width}`;
          }
        }
      }
      return undefined;
    },
  },

  // RoPE
  ...(["rope.dimension_count", "rope.dimension_count_swa"] as const).map((k): Rule => ({
    key: `{arch}.${k}`,
    rule: "an even number from 2 to the attention head's width",
    engine: "ggml/src/ggml-cpu/ops.cpp:6126 GGML_ASSERT(n_dims <= ne0); ggml/src/ggml-cpu/ops.cpp:6127 " +
      "GGML_ASSERT(n_dims % 2 == 0)",
    broken: (h) => {
      const rot = h.num(`{arch}.${k}`);
      const w = headWidths(h);
      if (rot === undefined || !w) return undefined;
      return rot < 2 || rot % 2 !== 0 || rot > w.k ? `${rot}, with heads ${w.k} wide` : undefined;
    },
  })),
  {
    key: "{arch}.rope.dimension_sections",
    rule: "M-RoPE sections not below 0, one of the first three above 0, adding up to at most the head's width",
    engine: "ggml/src/ggml-cpu/ops.cpp:6153 GGML_ASSERT(sections[0] > 0 || sections[1] > 0 || sections[2] > 0); " +
      "ggml/src/ggml-cpu/ops.cpp:6003 GGML_ASSERT(sect_dims <= ne0)",
    broken: (h) => {
      const s = h.nums("{arch}.rope.dimension_sections");
      const w = headWidths(h);
      if (!s) return undefined;
      const first = s.slice(0, 3);
      const sum = s.slice(0, 4).reduce((a, b) => a + b, 0);
      return s.some((x) => x < 0) || !first.some((x) => x > 0) || (w !== undefined && sum > w.k)
        ? `${shown(s)}${w ? `, with heads ${w.k} wide` : ""}`
        : undefined;
    },
  },
  {
    key: "{arch}.rope.scaling.type",
    rule: `one of ${ENGINE_FACTS.ropeScalingTypes.map((s) => `"${s}"`).join(", ")}`,
    engine: `${M}:1352 GGML_ASSERT(hparams.rope_scaling_type_train != LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED); ` +
      `${ENGINE_FACTS.lines.ropeScalingTypes} LLAMA_ROPE_SCALING_TYPES = {`,
    broken: (h) => {
      const v = h.str("{arch}.rope.scaling.type");
      return v !== undefined && !(ENGINE_FACTS.ropeScalingTypes as readonly string[]).includes(v)
        ? shown(v)
        : undefined;
    },
  },

  // sliding windows
  {
    key: "{arch}.attention.sliding_window_pattern",
    rule: "a pattern that makes some layer slide when {arch}.attention.sliding_window is above 0 (not 1, nor " +
      "an array without a true entry)",
    engine: `${M}:2685 GGML_ASSERT(hparams.is_swa_any()); src/llama-hparams.cpp:15 is_swa_impl[il] = ` +
      "n_pattern == 0 || (il % n_pattern < (n_pattern - 1))",
    broken: (h) => {
      if (!((h.num("{arch}.attention.sliding_window") ?? 0) > 0) || !h.has("{arch}.attention.sliding_window_pattern")) {
        return undefined;
      }
      const v = h.get("{arch}.attention.sliding_window_pattern")!;
      if (v.type === 9) {
        const items = h.nums("{arch}.attention.sliding_window_pattern") ?? [];
        return items.some((x) => x !== 0) ? undefined : `${shown(items)} (no layer slides)`;
      }
      return h.num("{arch}.attention.sliding_window_pattern") === 1 ? "1 (no layer slides)" : undefined;
    },
  },

  // norms
  nonNegative(
    "{arch}.attention.layer_norm_rms_epsilon",
    "ggml/src/ggml-cpu/ops.cpp:3949 GGML_ASSERT(eps >= 0.0f) — rms_norm",
  ),
  nonNegative("{arch}.attention.layer_norm_epsilon", "ggml/src/ggml-cpu/ops.cpp:3843 GGML_ASSERT(eps >= 0.0f) — norm"),

  // pooling
  {
    key: "{arch}.pooling_type",
    rule: "0 to 4 (none, mean, cls, last, rank)",
    engine: 'src/llama-graph.cpp:3767 GGML_ABORT("unknown pooling type") — at the first embedding',
    broken: (h) => {
      const v = h.num("{arch}.pooling_type");
      return v !== undefined && !(v >= 0 && v <= 4) && v !== 0xffffffff ? shown(v) : undefined;
    },
  },
];
