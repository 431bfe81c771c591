// The projector header rules (src/gguf/rules/projector.ts) and the projector mutants
// (tests/corpus/mutants_projector.ts): the fixtures' projectors pass, the mutants that abort the
// pinned engine are refused with a message naming the key, its value and the rule, and the
// mutant corpus is deterministic with unique names. No engine is loaded here.
import { createHash } from "node:crypto";
import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { GGUFFormatError, readGGUF, readGGUFFile } from "../../src/gguf/gguf.ts";
import { checkProjector, PROJECTOR_RULES, PROJECTOR_TYPES } from "../../src/gguf/rules/projector.ts";
import {
  type Mutant,
  PROJECTOR_BASES,
  projectorMutants,
  type ProjectorMutantSet,
} from "../corpus/mutants_projector.ts";

const sets: ProjectorMutantSet[] = await projectorMutants();
const mutants = new Map<string, Mutant>(sets.flatMap((s) => s.mutants.map((m) => [m.name, m] as const)));

/** The message checkProjector gives a mutant, or undefined when it passes. */
function refusal(name: string): string | undefined {
  const m = mutants.get(name);
  if (!m) throw new Error(`no mutant named ${name}`);
  try {
    checkProjector(readGGUF(m.bytes));
    return undefined;
  } catch (e) {
    if (!(e instanceof GGUFFormatError)) throw e;
    return e.message;
  }
}

Deno.test("the fixtures' projectors pass: tiny and the six families", async () => {
  assertEquals(sets.map((s) => s.base), [...PROJECTOR_BASES]);
  for (const s of sets) checkProjector(await readGGUFFile(s.projector));
});

Deno.test("every rule names a key, says what must hold and cites an engine line", () => {
  assert(PROJECTOR_RULES.length > 50, `${PROJECTOR_RULES.length} rules`);
  for (const r of PROJECTOR_RULES) {
    assert(r.key.length > 0 && r.rule.length > 0, JSON.stringify(r.key));
    assert(/(tools\/mtmd|ggml\/src)\/[\w./-]+:\d+/.test(r.engine), `${r.key}: ${r.engine}`);
  }
  assert(PROJECTOR_TYPES.includes("qwen2.5vl_merger") && PROJECTOR_TYPES.length === 61);
});

Deno.test("selected mutants are refused with the key, the value and the rule", () => {
  const cases: Array<[string, RegExp]> = [
    // a key of the wrong GGUF type: gguf_get_val_* would abort
    [
      "qwen2vl-type-clip.vision.image_size-uint64",
      /clip\.vision\.image_size is UINT64 560; it must be one UINT32 value.*gguf\.cpp:195/,
    ],
    ["tiny-type-clip.projector_type-uint32", /clip\.projector_type is UINT32 0; it must be one STRING value/],
    ["smolvlm-added-clip.has_gen_audio_encoder-int32", /clip\.has_gen_audio_encoder is INT32 0; it must be one BOOL/],
    [
      "smolvlm-added-clip.vision.feature_layer-uint32-items",
      /clip\.vision\.feature_layer is an ARRAY of UINT32 \[0\]; it must be an ARRAY of INT32/,
    ],
    // types and values
    ["tiny-projector-type-unknown", /clip\.projector_type is "no-such-projector"; it must be a projector type/],
    [
      "gemma3-range-clip.vision.attention.layer_norm_epsilon-nan",
      /layer_norm_epsilon is NaN; it must be a number at least 0.*eps >= 0/,
    ],
    ["gemma3-range-clip.vision.projector.scale_factor-plus1", /scale_factor is 3 \(grid 8\); it must be a divisor/],
    ["qwen25vl-range-clip.vision.n_wa_pattern-one", /n_wa_pattern is 1 \(block count 4\); it must be 0/],
    ["ultravox-range-clip.audio.projector.stack_factor-zero", /stack_factor is 0; it must be at least 1/],
    ["internvl-range-clip.vision.preproc_max_tiles-zero", /preproc_max_tiles is 1 and 0; it must be a minimum/],
    // tensors: presence by projector type, integer types, shapes against the keys
    [
      "qwen2vl-tensor-extra-v.class_embd",
      /is present: v\.class_embd \(projector type qwen2vl_merger\); it must be absent/,
    ],
    ["qwen2vl-projector-type-as-qwen3vl_merger", /v\.patch_embd\.bias is missing.*qwen3vl\.cpp:4/],
    ["tiny-tensor-missing-mm.0.weight", /missing: mm\.0\.weight \(projector type mlp\); it must be present/],
    ["tiny-tensor-type-v.class_embd-i32", /tensor type is I32 \(v\.class_embd\); it must be a float or quantized type/],
    [
      "tiny-tensor-shape-v.blk.0.attn_q.weight-half-wide",
      /head_count is 4 × head size 16 = 64 but v\.blk\.0\.attn_q\.weight is \[64, 32\]/,
    ],
    ["internvl-removed-clip.vision.projector.scale_factor", /mm\.model\.mlp\.0\.weight \[256\] \(input 64 × 1² = 64\)/],
  ];
  for (const [name, pattern] of cases) {
    const msg = refusal(name);
    assert(msg !== undefined, `${name} passed the rules`);
    assert(msg.startsWith("Invalid header value: ") && /\(engine: .+:\d+/.test(msg), msg);
    assert(pattern.test(msg), `${name}: ${msg}`);
  }
  assertThrows(() => checkProjector(readGGUF(mutants.get("tiny-projector-type-empty")!.bytes)), GGUFFormatError);
});

/**
 * The 290 mutants that abort the process (GGML_ASSERT, GGML_ABORT or a null dereference) when
 * the pinned engine (tools/mtmd at de3ff815ea7d) loads them on its own, without these rules:
 * native load with its reserve-only warm-up, then one encode. Measured once with a throwaway
 * harness; the other mutants give a typed error or load. Every one must be refused here.
 */
const ENGINE_KILLERS: Record<string, string> = {
  tiny: `
    type-clip.has_vision_encoder-int32 type-clip.projector_type-uint32 projector-type-as-qwen2vl_merger
    projector-type-as-qwen3vl_merger range-clip.vision.image_size-zero range-clip.vision.image_size-one
    type-clip.vision.image_size-int32-negative type-clip.vision.patch_size-int32
    range-clip.vision.embedding_length-2^31-1 type-clip.vision.embedding_length-string
    type-clip.vision.feed_forward_length-float32 type-clip.vision.projection_dim-bool
    range-clip.vision.attention.head_count-zero range-clip.vision.attention.head_count-2^31-1
    range-clip.vision.attention.layer_norm_epsilon-negative range-clip.vision.attention.layer_norm_epsilon-nan
    type-clip.vision.attention.layer_norm_epsilon-float64 type-clip.vision.block_count-uint64
    type-general.name-uint32 added-clip.vision.attention.head_dim-double
    added-clip.vision.attention.head_dim-2^31-1 added-clip.has_gen_audio_encoder-int32
    added-clip.vision.mm_patch_merge_type-uint32 tensor-type-v.class_embd-i32
    tensor-type-v.position_embd.weight-i32 tensor-type-v.pre_ln.bias-i32 tensor-type-mm.0.bias-i32
    tensor-type-mm.2.bias-i32 tensor-type-v.blk.0.attn_q.weight-i32 tensor-type-v.blk.0.attn_v.weight-i32
    tensor-type-v.blk.0.ln1.weight-i32 tensor-type-v.blk.0.ffn_down.weight-i32 tensor-missing-v.patch_embd.weight
    tensor-missing-v.position_embd.weight tensor-missing-mm.0.weight tensor-missing-mm.0.bias
    tensor-missing-mm.2.weight tensor-missing-mm.2.bias tensor-extra-mm.3.weight
    tensor-shape-v.blk.0.attn_q.weight-half-wide tensor-shape-v.blk.0.ln1.weight-one-more`,
  qwen2vl: `
    type-clip.has_vision_encoder-int32 projector-type-as-mlp projector-type-as-qwen3vl_merger
    range-clip.vision.embedding_length-2^31-1 range-clip.vision.embedding_length-plus1
    type-clip.vision.embedding_length-int32 type-clip.vision.feed_forward_length-string
    range-clip.vision.block_count-zero type-clip.vision.block_count-float32
    range-clip.vision.attention.head_count-zero range-clip.vision.attention.head_count-2^31-1
    range-clip.vision.attention.head_count-plus1 type-clip.vision.attention.head_count-bool
    range-clip.vision.attention.layer_norm_epsilon-negative range-clip.vision.attention.layer_norm_epsilon-nan
    type-clip.vision.attention.layer_norm_epsilon-uint32 type-clip.vision.image_size-uint64
    type-clip.vision.patch_size-int32-negative type-general.description-array
    added-clip.vision.projector_type-only-uint32 added-clip.vision.attention.head_dim-double
    added-clip.use_gelu-string added-clip.minicpmv_query_num-int32 tensor-type-v.patch_embd.weight.1-i32
    tensor-type-v.post_ln.bias-i32 tensor-type-mm.0.bias-i32 tensor-type-mm.2.bias-i32
    tensor-type-v.blk.0.attn_k.bias-i32 tensor-type-v.blk.0.attn_out.bias-i32 tensor-type-v.blk.0.ffn_up.bias-i32
    tensor-type-v.blk.0.ln2.bias-i32 tensor-missing-v.patch_embd.weight tensor-missing-v.patch_embd.weight.1
    tensor-missing-v.blk.0.attn_k.weight tensor-extra-v.class_embd tensor-extra-v.patch_embd.bias
    tensor-shape-v.blk.0.attn_q.weight-half-wide tensor-shape-v.blk.0.ln1.weight-one-more`,
  qwen25vl: `
    type-clip.has_vision_encoder-string type-clip.projector_type-int32 projector-type-as-mlp
    projector-type-as-qwen3vl_merger range-clip.vision.embedding_length-2^31-1
    type-clip.vision.embedding_length-string type-clip.vision.feed_forward_length-float32
    range-clip.vision.block_count-zero type-clip.vision.block_count-bool
    range-clip.vision.attention.head_count-zero range-clip.vision.attention.head_count-2^31-1
    range-clip.vision.attention.layer_norm_epsilon-negative range-clip.vision.attention.layer_norm_epsilon-nan
    type-clip.vision.attention.layer_norm_epsilon-string range-clip.vision.projection_dim-zero
    range-clip.vision.projection_dim-2^31-1 range-clip.vision.projection_dim-one
    type-clip.vision.projection_dim-uint64 type-clip.vision.image_size-int32-negative
    type-clip.vision.patch_size-int32 range-clip.vision.n_wa_pattern-one type-clip.vision.n_wa_pattern-string
    type-general.name-uint32 added-clip.vision.attention.head_dim-double
    added-clip.vision.attention.head_count_kv-int32 added-clip.vision.spatial_merge_size-three
    tensor-type-v.patch_embd.weight-i32 tensor-type-v.post_ln.weight-i32 tensor-type-mm.0.bias-i32
    tensor-type-mm.2.bias-i32 tensor-type-v.blk.0.attn_k.weight-i32 tensor-type-v.blk.0.attn_out.weight-i32
    tensor-type-v.blk.0.ffn_gate.bias-i32 tensor-type-v.blk.0.ffn_down.bias-i32 tensor-missing-v.patch_embd.weight
    tensor-missing-v.patch_embd.weight.1 tensor-missing-v.blk.0.attn_q.bias tensor-missing-v.blk.0.attn_v.bias
    tensor-extra-v.class_embd tensor-extra-v.patch_embd.bias tensor-shape-v.blk.0.attn_q.weight-half-wide
    tensor-shape-v.blk.0.ln1.weight-one-more`,
  gemma3: `
    type-clip.projector_type-uint32 projector-type-as-mlp range-clip.vision.embedding_length-2^31-1
    range-clip.vision.embedding_length-one type-clip.vision.embedding_length-float32
    type-clip.vision.feed_forward_length-bool range-clip.vision.attention.head_count-zero
    range-clip.vision.attention.head_count-2^31-1 type-clip.vision.attention.head_count-uint64
    range-clip.vision.attention.layer_norm_epsilon-negative range-clip.vision.attention.layer_norm_epsilon-nan
    type-clip.vision.projection_dim-int32-negative range-clip.vision.image_size-zero
    type-clip.vision.image_size-int32 range-clip.vision.patch_size-one type-clip.vision.patch_size-string
    type-clip.use_gelu-uint32 range-clip.vision.projector.scale_factor-plus1
    type-clip.vision.projector.scale_factor-float32 type-general.description-array
    added-clip.vision.attention.head_count_kv-non-divisor added-clip.vision.attention.head_dim-double
    added-clip.vision.attention.head_count_kv-2^31-1 added-clip.vision.attention.head_dim-float32
    added-clip.minicpmv_version-uint32 tensor-type-v.patch_embd.bias-i32 tensor-type-v.post_ln.weight-i32
    tensor-type-mm.soft_emb_norm.weight-i32 tensor-type-v.blk.0.attn_q.bias-i32 tensor-type-v.blk.0.attn_v.bias-i32
    tensor-type-v.blk.0.ln1.bias-i32 tensor-type-v.blk.0.ffn_down.bias-i32 tensor-missing-v.patch_embd.weight
    tensor-missing-v.blk.0.attn_q.weight tensor-missing-v.blk.0.attn_v.weight tensor-missing-v.blk.1.attn_q.weight
    tensor-extra-v.blk.0.ffn_gate_exps.weight tensor-shape-v.position_embd.weight-one-more-row
    tensor-shape-v.blk.0.attn_q.weight-half-wide tensor-shape-v.blk.0.ln1.weight-one-more`,
  smolvlm: `
    type-clip.has_vision_encoder-uint32 projector-type-as-mlp range-clip.vision.embedding_length-2^31-1
    range-clip.vision.embedding_length-plus1 type-clip.vision.embedding_length-bool
    type-clip.vision.block_count-uint64 range-clip.vision.attention.head_count-zero
    range-clip.vision.attention.head_count-2^31-1 range-clip.vision.attention.head_count-plus1
    type-clip.vision.attention.head_count-int32-negative range-clip.vision.attention.layer_norm_epsilon-negative
    range-clip.vision.attention.layer_norm_epsilon-nan type-clip.vision.attention.layer_norm_epsilon-int32
    type-clip.vision.projection_dim-int32 range-clip.vision.image_size-zero range-clip.vision.image_size-one
    type-clip.vision.image_size-string range-clip.vision.patch_size-plus1 type-clip.vision.patch_size-float32
    type-clip.use_gelu-uint8 type-clip.vision.projector.scale_factor-bool type-general.name-uint32
    removed-clip.vision.projector.scale_factor added-clip.vision.projector_type-only-uint32
    added-clip.vision.attention.head_count_kv-non-divisor added-clip.vision.attention.head_dim-double
    added-clip.vision.attention.head_count_kv-zero added-clip.vision.attention.head_dim-2^31-1
    added-clip.has_gen_audio_encoder-int32 added-clip.vision.mm_patch_merge_type-uint32
    tensor-type-v.patch_embd.weight-i32 tensor-type-v.position_embd.weight-i32 tensor-type-v.post_ln.bias-i32
    tensor-type-v.blk.0.attn_q.weight-i32 tensor-type-v.blk.0.attn_v.weight-i32 tensor-type-v.blk.0.ln1.weight-i32
    tensor-type-v.blk.0.ffn_down.weight-i32 tensor-missing-v.patch_embd.weight
    tensor-extra-v.blk.0.ffn_gate_exps.weight tensor-shape-v.position_embd.weight-one-more-row
    tensor-shape-v.blk.0.attn_q.weight-half-wide tensor-shape-v.blk.0.ln1.weight-one-more`,
  internvl: `
    type-clip.has_vision_encoder-uint8 type-clip.projector_type-int32 projector-type-as-mlp
    range-clip.vision.embedding_length-2^31-1 type-clip.vision.feed_forward_length-uint64
    type-clip.vision.block_count-int32-negative range-clip.vision.attention.head_count-zero
    range-clip.vision.attention.head_count-2^31-1 type-clip.vision.attention.head_count-int32
    range-clip.vision.attention.layer_norm_epsilon-negative range-clip.vision.attention.layer_norm_epsilon-nan
    type-clip.vision.attention.layer_norm_epsilon-float64 type-clip.vision.projection_dim-string
    range-clip.vision.image_size-zero type-clip.vision.image_size-float32 type-clip.vision.patch_size-bool
    type-clip.use_gelu-int32 range-clip.vision.projector.scale_factor-one range-clip.vision.preproc_min_tiles-zero
    range-clip.vision.preproc_min_tiles-2^31-1 type-clip.vision.preproc_min_tiles-uint64
    range-clip.vision.preproc_max_tiles-zero range-clip.vision.preproc_max_tiles-2^31-1
    type-clip.vision.preproc_max_tiles-int32-negative type-general.description-array
    removed-clip.vision.projector.scale_factor added-clip.vision.attention.head_count_kv-non-divisor
    added-clip.vision.attention.head_dim-double added-clip.minicpmv_query_num-int32
    tensor-type-v.patch_embd.weight-i32 tensor-type-v.position_embd.weight-i32 tensor-type-mm.model.mlp.0.bias-i32
    tensor-type-mm.model.mlp.1.bias-i32 tensor-type-mm.model.mlp.3.bias-i32 tensor-type-v.blk.0.attn_k.bias-i32
    tensor-type-v.blk.0.attn_out.bias-i32 tensor-type-v.blk.0.ffn_up.bias-i32 tensor-type-v.blk.0.ln2.bias-i32
    tensor-missing-v.class_embd tensor-missing-v.patch_embd.weight tensor-missing-v.position_embd.weight
    tensor-missing-v.blk.0.attn_k.weight tensor-extra-v.blk.0.ffn_gate_exps.weight
    tensor-shape-v.position_embd.weight-one-more-row tensor-shape-v.blk.0.attn_q.weight-half-wide
    tensor-shape-v.blk.0.ln1.weight-one-more`,
  ultravox: `
    type-clip.has_audio_encoder-int32 type-clip.projector_type-uint32 range-clip.audio.embedding_length-2^31-1
    range-clip.audio.embedding_length-one type-clip.audio.embedding_length-uint64
    type-clip.audio.feed_forward_length-int32-negative range-clip.audio.block_count-zero
    type-clip.audio.block_count-int32 range-clip.audio.attention.head_count-zero
    range-clip.audio.attention.head_count-2^31-1 type-clip.audio.attention.head_count-string
    range-clip.audio.attention.layer_norm_epsilon-negative range-clip.audio.attention.layer_norm_epsilon-nan
    type-clip.audio.attention.layer_norm_epsilon-uint32 type-clip.audio.projection_dim-float32
    type-clip.audio.num_mel_bins-bool range-clip.audio.projector.stack_factor-zero
    range-clip.audio.projector.stack_factor-2^31-1 range-clip.audio.projector.stack_factor-one
    type-general.name-uint32 added-clip.audio.attention.head_count_kv-non-divisor
    added-clip.audio.attention.head_dim-double added-clip.audio.attention.head_count_kv-int32
    added-clip.use_silu-uint8 tensor-type-a.conv1d.1.weight-i16 tensor-type-a.conv1d.2.weight-i16
    tensor-type-a.position_embd.weight-i32 tensor-type-a.post_ln.bias-i32 tensor-type-mm.a.mlp.1.weight-i32
    tensor-type-mm.a.mlp.2.weight-i32 tensor-type-a.blk.0.attn_k.weight-i32 tensor-type-a.blk.0.attn_out.bias-i32
    tensor-type-a.blk.0.ffn_up.bias-i32 tensor-type-a.blk.0.ln2.bias-i32 tensor-missing-a.position_embd.weight
    tensor-missing-a.blk.0.attn_q.bias tensor-missing-a.blk.0.ln2.weight tensor-missing-a.blk.1.attn_q.weight
    tensor-extra-a.blk.0.ffn_gate_exps.weight tensor-shape-a.blk.0.attn_q.weight-half-wide
    tensor-shape-a.blk.0.ln1.weight-one-more`,
};

Deno.test("every mutant that kills the pinned engine on its own is refused", () => {
  let n = 0;
  for (const [base, names] of Object.entries(ENGINE_KILLERS)) {
    for (const name of names.trim().split(/\s+/)) {
      assert(refusal(`${base}-${name}`) !== undefined, `${base}-${name} passed the rules`);
      n++;
    }
  }
  assertEquals(n, 290);
});

Deno.test("the mutants are a few hundred, in every group, with unique names, the same on every run", async () => {
  const all = sets.flatMap((s) => s.mutants);
  assert(all.length >= 300 && all.length <= 1000, `${all.length} mutants`);
  assertEquals(new Set(all.map((m) => m.name)).size, all.length, "names are unique");
  assert(all.every((m) => m.kind === "projector" && m.name.startsWith(`${m.name.split("-")[0]}-${m.group}-`)));
  const groups = new Set(all.map((m) => m.group));
  for (
    const g of [
      "range",
      "type",
      "projector-type",
      "array",
      "removed",
      "added",
      "tensor-type",
      "tensor-missing",
      "tensor-extra",
      "tensor-shape",
    ]
  ) assert(groups.has(g), `group ${g}`);
  const again = (await projectorMutants()).flatMap((s) => s.mutants);
  assertEquals(again.map((m) => m.name), all.map((m) => m.name));
  const hash = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
  for (const [i, m] of all.entries()) {
    const bytes = m.bytes;
    readGGUF(bytes); // a well-formed GGUF file, wrong only in content
    assertEquals(hash(bytes), hash(again[i].bytes), m.name);
  }
});
