/**
 * Header rules of a model's vocabulary (`tokenizer.*`), as the pinned engine reads it in
 * `llama_vocab::impl::load` (src/llama-vocab.cpp), and of its tensors' types.
 *
 * @module
 */
import { GGMLType, GGUFValueType } from "../gguf.ts";
import { type Header, type Rule, shown } from "./rule.ts";

const V = "src/llama-vocab.cpp";

/** The tokens as the engine keys them: C strings, so cut at the first NUL. */
function tokenList(h: Header): string[] | undefined {
  const v = h.get("tokenizer.ggml.tokens");
  return v?.type === GGUFValueType.ARRAY && v.itemType === GGUFValueType.STRING ? v.value as string[] : undefined;
}

/**
 * What each tokenizer model adds around a text by default, and the ids it uses when the file
 * names none (src/llama-vocab.cpp:1971-2110 for the ids, 2425-2447 for the flags). A BPE
 * tokenizer's BOS depends on its pre-tokenizer, so it counts as added.
 */
const ADDS: Record<string, Partial<Record<"bos" | "eos" | "sep", number | null>>> = {
  llama: { bos: 1 },
  bert: { bos: 101, sep: 102 },
  gpt2: { bos: 11 },
  hybriddna: { bos: 11 },
  whitespace: { bos: 11 },
  t5: { eos: 1 },
};

const SPECIAL = [
  ["bos", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token", 3438, "special_bos_id"],
  ["eos", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_eos_token", 3475, "special_eos_id"],
  ["sep", "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.add_sep_token", 3542, "special_sep_id"],
] as const;

/** Tokenizers whose token_to_byte reads byte tokens (the others abort on one). */
const READS_BYTE_TOKENS = new Set(["llama", "t5", "gpt2", "hybriddna", "whitespace", "gemma4"]);

/** A token's bytes as the RWKV tokenizer unescapes them (src/llama-vocab.cpp:1258 llama_unescape_rwkv_token). */
export function unescapeRwkv(escaped: string): number[] {
  const out: number[] = [];
  let escaping = false, hexLeft = 0, hex = 0;
  for (const c of new TextEncoder().encode(escaped)) {
    if (hexLeft) {
      hex = ((hex << 4) + (c >= 0x61 ? c - 0x61 + 10 : c - 0x30)) & 0xff;
      if (--hexLeft === 0) (out.push(hex), hex = 0);
    } else if (escaping) {
      if (c === 0x74) out.push(9);
      else if (c === 0x6e) out.push(10);
      else if (c === 0x72) out.push(13);
      else if (c === 0x78) hexLeft = 2;
      else out.push(c);
      escaping = false;
    } else if (c === 0x5c) escaping = true;
    else out.push(c);
  }
  return out;
}

/** The largest literal bound of a `range(…)` call a chat template may hold (the engine builds the whole list). */
export const TEMPLATE_RANGE_LIMIT = 100_000;

/** ggml types no operator accepts as weights: integers and F64. */
const NOT_WEIGHTS = new Map<number, string>([
  [GGMLType.I8, "I8"],
  [GGMLType.I16, "I16"],
  [GGMLType.I32, "I32"],
  [GGMLType.I64, "I64"],
  [GGMLType.F64, "F64"],
]);

/** The vocabulary's table. */
export const VOCAB_RULES: readonly Rule[] = [
  ...SPECIAL.map(([name, idKey, addKey, line, field]): Rule => ({
    key: idKey,
    rule: `a token of the vocabulary when the tokenizer adds its ${name.toUpperCase()} token (${addKey}, or the ` +
      "tokenizer's default)",
    engine: `${V}:${line} GGML_ASSERT(${field} != LLAMA_TOKEN_NULL); ${V}:2614 if (id >= 0 && ` +
      "static_cast<size_t>(id) >= id_to_token.size()) { — an id past the vocabulary is dropped",
    broken: (h) => {
      const model = h.str("tokenizer.ggml.model") ?? "";
      const n = tokenList(h)?.length ?? 0;
      const fallback = ADDS[model]?.[name];
      const adds = h.has(addKey) ? h.num(addKey) === 1 : fallback !== undefined;
      if (!adds || !(model in ADDS)) return undefined;
      const id = h.num(idKey);
      const usable = (x: number | null | undefined) => x !== undefined && x !== null && x >= 0 && x < n;
      if (usable(id) || (!usable(id) && usable(fallback))) return undefined;
      return `${id === undefined ? "missing" : shown(id)} with ${n} tokens (the default ${fallback ?? "none"} is not ` +
        "a token either)";
    },
  })),
  {
    key: "tokenizer.ggml.token_type",
    rule: "no byte tokens (type 6) unless the tokenizer reads them (llama, t5, gpt2 and its kin)",
    engine: `${V}:3202 GGML_ABORT("fatal error") — token_to_byte of a WPM vocabulary; ${V}:3205 GGML_ABORT("fatal ` +
      'error") — of the other tokenizers',
    broken: (h) => {
      const model = h.str("tokenizer.ggml.model") ?? "";
      const types = h.nums("tokenizer.ggml.token_type");
      if (!types || READS_BYTE_TOKENS.has(model) || model === "none" || model === "no_vocab") return undefined;
      const at = types.indexOf(6);
      return at >= 0 ? `6 (byte) for token ${at}, with the "${model}" tokenizer` : undefined;
    },
  },
  {
    key: "tokenizer.ggml.tokens",
    rule:
      'with the "rwkv" tokenizer, every byte that starts a token is a token of its own (else tokenizing never ends)',
    engine: `${V}:1358 position = token_length — 0 when no prefix of the text is a token, so the loop starts over`,
    broken: (h) => {
      const list = tokenList(h);
      if (h.str("tokenizer.ggml.model") !== "rwkv" || !list) return undefined;
      const singles = new Set<number>(), firsts = new Map<number, number>();
      list.forEach((t, i) => {
        const b = unescapeRwkv(t);
        if (b.length === 1) singles.add(b[0]);
        if (b.length > 0 && !firsts.has(b[0])) firsts.set(b[0], i);
      });
      for (const [byte, i] of firsts) {
        if (!singles.has(byte)) return `a list where token ${i} starts with byte ${byte}, which is no token of its own`;
      }
      return undefined;
    },
  },
  {
    key: "tokenizer.chat_template",
    rule: `a template whose range() bounds are at most ${TEMPLATE_RANGE_LIMIT} (the engine builds the whole list in ` +
      "memory)",
    engine: "common/jinja/value.cpp:411 out->push_back(mk_val<value_int>(i)) — every item of the range, in memory",
    broken: (h) => {
      const t = h.str("tokenizer.chat_template");
      if (!t) return undefined;
      for (const m of t.matchAll(/range\s*\(([^)]*)\)/g)) {
        const big = (m[1].match(/-?\d+(?:\.\d+)?(?:e\d+)?/gi) ?? []).map(Number).find((n) =>
          Math.abs(n) > TEMPLATE_RANGE_LIMIT
        );
        if (big !== undefined) return `a template calling ${shown(m[0])}`;
      }
      return undefined;
    },
  },
  {
    key: "tokenizer.ggml.tokens",
    rule: "distinct strings, up to the first NUL byte of each (the engine keys tokens by C string)",
    engine: `${V}:2539 GGML_ASSERT(id_to_token.size() == token_to_id.size())`,
    broken: (h) => {
      const list = tokenList(h);
      if (!list) return undefined;
      const seen = new Map<string, number>();
      for (let i = 0; i < list.length; i++) {
        const nul = list[i].indexOf("\u0000");
        const key = nul < 0 ? list[i] : list[i].slice(0, nul);
        const prev = seen.get(key);
        if (prev !== undefined) return `a list where tokens ${prev} and ${i} are both ${shown(key)}`;
        seen.set(key, i);
      }
      return undefined;
    },
  },
];

/** ggml's TENSOR_ALIGNMENT (ggml/src/ggml-impl.h): the engine maps tensor data in place. */
export const TENSOR_ALIGNMENT = 32;

/** Tensor types and data alignment, checked for every tensor. */
export const TENSOR_RULES: readonly Rule[] = [
  {
    key: "general.alignment",
    rule: `a multiple of ${TENSOR_ALIGNMENT} (the engine maps tensor data in place, and ggml needs it aligned so)`,
    engine: 'ggml/src/ggml-backend.cpp:2511 GGML_ASSERT((uintptr_t)ptr % TENSOR_ALIGNMENT == 0 && "buffer pointer ' +
      'must be aligned"); ggml/src/ggml-impl.h:44 #define TENSOR_ALIGNMENT 32',
    broken: (h) => {
      const a = h.num("general.alignment");
      return a !== undefined && a % TENSOR_ALIGNMENT !== 0 ? shown(a) : undefined;
    },
  },
  {
    key: "tensor types",
    rule: "float or quantized types (no operator takes integer or F64 weights)",
    engine: 'ggml/src/ggml-cpu/binary-ops.cpp:135 GGML_ABORT("%s: unsupported types — and the matrix ' +
      "product's missing vec_dot for those types",
    broken: (h) => {
      const t = h.file.tensors.find((t) => NOT_WEIGHTS.has(t.type));
      return t ? `${NOT_WEIGHTS.get(t.type)} for tensor "${t.name}"` : undefined;
    },
  },
];
