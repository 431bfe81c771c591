/**
 * The shape of a header rule, shared by the rule tables of each model kind (text.ts, vocab.ts,
 * tensors.ts, projector.ts): a value the pinned engine reads, what must hold for it, and the
 * engine line the rule stands in for. A file that breaks a rule is refused with
 * {@linkcode GGUFFormatError} naming the key, the value and the rule, before the engine sees it
 * (where the engine would abort the process, or run memory away, instead of returning an error).
 *
 * @module
 */
import { type GGUFFile, GGUFFormatError, type GGUFValue, GGUFValueType } from "../gguf.ts";
import { shown as shownValue } from "../../util/check.ts";

/** One rule of a table. */
export interface Rule {
  /** The key it reads, with `{arch}` for the architecture prefix, e.g. "{arch}.expert_used_count". */
  key: string;
  /** What must hold, in words, e.g. "at most {arch}.expert_count, and not 0 when there are experts". */
  rule: string;
  /**
   * The engine lines it stands in for, separated by "; ": each `file:line excerpt`, the excerpt
   * copied from that line of the pinned source (tests/unit/rules_test.ts checks it), optionally
   * followed by " — " and a comment, e.g. "src/llama-model.cpp:1293 GGML_ASSERT(hparams.n_expert
   * <= LLAMA_MAX_EXPERTS)".
   */
  engine: string;
  /** Returns the offending value, in words, when the header breaks the rule; otherwise undefined. */
  broken(h: Header): string | undefined;
}

/** A parsed header with typed lookups, the architecture's prefix resolved. */
export class Header {
  /** `general.architecture`, or "" when missing or not a string. */
  readonly arch: string;

  /** Wraps a parsed file. */
  constructor(readonly file: GGUFFile) {
    const a = file.kv.get("general.architecture");
    this.arch = a?.type === GGUFValueType.STRING ? a.value : "";
  }

  /** The key with `{arch}` replaced. */
  key(key: string): string {
    return key.replaceAll("{arch}", this.arch);
  }

  /** The raw value, or undefined. */
  get(key: string): GGUFValue | undefined {
    return this.file.kv.get(this.key(key));
  }

  /** A numeric scalar (booleans as 0/1), or undefined when missing, a string or an array. */
  num(key: string): number | undefined {
    const v = this.get(key);
    if (v === undefined || v.type === GGUFValueType.ARRAY || v.type === GGUFValueType.STRING) return undefined;
    if (v.type === GGUFValueType.BOOL) return v.value ? 1 : 0;
    return Number(v.value);
  }

  /** A string scalar, or undefined. */
  str(key: string): string | undefined {
    const v = this.get(key);
    return v?.type === GGUFValueType.STRING ? v.value : undefined;
  }

  /** A numeric array's items (a scalar as one item), or undefined when missing or not numeric. */
  nums(key: string): number[] | undefined {
    const v = this.get(key);
    if (v === undefined || v.type === GGUFValueType.STRING) return undefined;
    if (v.type !== GGUFValueType.ARRAY) return [v.type === GGUFValueType.BOOL ? (v.value ? 1 : 0) : Number(v.value)];
    if (v.itemType === GGUFValueType.STRING) return undefined;
    return Array.from(v.value as ArrayLike<number | bigint | boolean>, (x) => Number(x));
  }

  /** Whether the key is present. */
  has(key: string): boolean {
    return this.file.kv.has(this.key(key));
  }
}

/** A header value in words for an error message: as util/check.ts shows values, and arrays by their first items. */
export function shown(v: unknown): string {
  if (Array.isArray(v)) return `[${v.slice(0, 8).map(shown).join(", ")}${v.length > 8 ? ", …" : ""}]`;
  return shownValue(v);
}

/**
 * Applies a table: throws {@linkcode GGUFFormatError} at the first broken rule, e.g.
 * `Invalid header value: llama.expert_used_count is 9, it must be at most llama.expert_count (8)
 * (the engine: src/llama-model.cpp:612 …)`.
 */
export function applyRules(rules: readonly Rule[], h: Header): void {
  for (const r of rules) {
    const value = r.broken(h);
    if (value !== undefined) {
      throw new GGUFFormatError(
        `Invalid header value: ${h.key(r.key)} is ${value}; it must be ${h.key(r.rule)} (engine: ${r.engine})`,
      );
    }
  }
}
