// The header rule tables (src/gguf/rules/): every citation is a line of the pinned engine that
// says what the rule quotes; the generated engine facts are what the source says; the real
// fixtures pass; a broken value is refused naming its key, its value and the rule.
import { join } from "node:path";
import { ensureSource } from "../../native/build/engine.ts";
import { readEngineFacts } from "../../native/build/engine_facts.ts";
import { ENGINE_FACTS } from "../../src/gguf/rules/engine_facts.ts";
import { applyRules, Header, type Rule } from "../../src/gguf/rules/rule.ts";
import { TEXT_RULES } from "../../src/gguf/rules/text.ts";
import { TENSOR_RULES, VOCAB_RULES } from "../../src/gguf/rules/vocab.ts";
import { preflight } from "../../src/gguf/preflight.ts";
import { type GGUFFile, GGUFFormatError, type GGUFValue, GGUFValueType, readGGUFFile } from "../../src/gguf/gguf.ts";
import { embedFixture } from "../../src/fixtures/embed.ts";
import { familyFixture } from "../../src/fixtures/families.ts";
import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { fixture } from "../support/helpers.ts";

const src = await ensureSource(false);
const TABLES: Record<string, readonly Rule[]> = { TEXT_RULES, VOCAB_RULES, TENSOR_RULES };

const squash = (s: string) => s.replace(/\s+/g, "");

Deno.test("every rule cites lines of the pinned engine that hold what it quotes", async () => {
  let cited = 0;
  for (const [table, rules] of Object.entries(TABLES)) {
    for (const r of rules) {
      for (const part of r.engine.split("; ")) {
        const m = part.match(/^((?:src|ggml|tools|common)\/[\w/.<>-]+?)(?::(\d+))? (.+?)(?: — .*)?$/);
        assert(m, `${table} ${r.key}: "${part}" is not "file:line excerpt"`);
        const [, file, line, excerpt] = m;
        if (file.includes("<arch>")) {
          // stands for the graphs engine_facts.ts lists: check each listed line
          const col = excerpt.includes("n_rot") ? 2 : 1;
          for (const [, at] of Object.entries(ENGINE_FACTS.archs)) {
            if (!at[col]) continue;
            const text = (await Deno.readTextFile(join(src, at[0]))).split("\n")[at[col] - 1];
            assert(squash(text).includes(squash(excerpt)), `${at[0]}:${at[col]} does not hold ${excerpt}`);
            cited++;
          }
          continue;
        }
        assert(line, `${table} ${r.key}: "${part}" has no line number`);
        const text = (await Deno.readTextFile(join(src, file))).split("\n")[Number(line) - 1] ?? "";
        assert(
          squash(text).includes(squash(excerpt)),
          `${table} ${r.key}: ${file}:${line} is "${text.trim()}", not "${excerpt}"`,
        );
        cited++;
      }
    }
  }
  assert(cited > 20, `${cited} citations checked`);
});

Deno.test("the engine facts are what the pinned source says", async () => {
  const fresh = await readEngineFacts(src);
  assertEquals(JSON.parse(JSON.stringify(ENGINE_FACTS)), JSON.parse(JSON.stringify(fresh)));
  assert(Object.keys(fresh.archs).length > 100, "the architectures were found");
  assert(fresh.archs.llama[1] > 0 && fresh.archs.llama[2] > 0, "llama's graph asserts both widths");
  assertEquals(fresh.ropeScalingTypes, ["none", "linear", "yarn", "longrope"]);
  assert(fresh.hybrid.includes("lfm2") && fresh.recurrent.includes("mamba"));
});

Deno.test("real fixtures of every kind pass every rule", async () => {
  const paths = [
    await fixture("tiny"),
    await embedFixture("bert"),
    await embedFixture("rerank"),
    await embedFixture("decoder"),
    ...(await Promise.all(["qwen2vl", "gemma3", "smolvlm", "internvl", "ultravox"].map(async (f) => {
      const fam = await familyFixture(f as "qwen2vl");
      return fam.model;
    }))),
  ];
  for (const p of paths) preflight(await readGGUFFile(p));
  // and llama.cpp's own vocabulary files
  for (const v of ["ggml-vocab-llama-spm.gguf", "ggml-vocab-bert-bge.gguf", "ggml-vocab-qwen2.gguf"]) {
    preflight(await readGGUFFile(join(src, "models", v)));
  }
});

/** The tiny fixture with changed keys. */
async function changed(edit: (kv: Map<string, GGUFValue>) => void): Promise<GGUFFile> {
  const f = await readGGUFFile(await fixture("tiny"));
  const kv = new Map(f.kv);
  edit(kv);
  return { ...f, kv };
}
const u32 = (value: number): GGUFValue => ({ type: GGUFValueType.UINT32, value });
const u32s = (values: number[]): GGUFValue => ({
  type: GGUFValueType.ARRAY,
  itemType: GGUFValueType.UINT32,
  value: Uint32Array.from(values),
});

Deno.test("a broken value is refused with its key, its value, the rule and the engine line", async () => {
  const cases: Array<[string, (kv: Map<string, GGUFValue>) => void, string[]]> = [
    ["rope.scaling.type", (kv) => kv.set("llama.rope.scaling.type", { type: 8, value: "bogus" }), [
      'llama.rope.scaling.type is "bogus"',
      '"none", "linear", "yarn", "longrope"',
      "src/llama-model.cpp:1352",
    ]],
    ["expert groups without experts", (kv) => kv.set("llama.expert_group_count", u32(1)), [
      "llama.expert_group_count is 1 with 0 experts",
      "0 without experts",
    ]],
    ["experts without used ones", (kv) => kv.set("llama.expert_count", u32(4)), [
      "llama.expert_used_count is 0 (the most of any layer) with 4 experts",
      "n_expert_used_max > 0",
    ]],
    ["a per-layer used count above the experts", (kv) => {
      kv.set("llama.expert_count", u32(4));
      kv.set("llama.expert_used_count", u32s([2, 5]));
    }, ["llama.expert_used_count is 5 (the most of any layer) with 4 experts"]],
    ["a KV head count of 0 in one layer", (kv) => kv.set("llama.attention.head_count_kv", u32s([4, 0])), [
      "llama.attention.head_count_kv is 0 in layer 1, with 4 heads",
      "ggml/src/ggml.c:3345",
    ]],
    ["KV heads that do not divide the heads", (kv) => kv.set("llama.attention.head_count_kv", u32(3)), [
      "is 3 in layer 0, with 4 heads",
    ]],
    ["key and value widths that differ", (kv) => kv.set("llama.attention.key_length", u32(8)), [
      "llama.attention.key_length is 8, with values 16 wide (src/models/llama.cpp:",
    ]],
    ["a RoPE width other than the head", (kv) => kv.set("llama.rope.dimension_count", u32(8)), [
      "llama.rope.dimension_count is 8, with heads 16 wide",
    ]],
    ["a pooling type outside the enum", (kv) => kv.set("llama.pooling_type", u32(5)), [
      "llama.pooling_type is 5",
      "0 to 4",
    ]],
    ["an epsilon of NaN", (kv) => kv.set("llama.attention.layer_norm_rms_epsilon", { type: 6, value: NaN }), [
      "layer_norm_rms_epsilon is NaN",
    ]],
    ["tokens equal up to a NUL", (kv) => {
      const t = [...(kv.get("tokenizer.ggml.tokens")!.value as string[])];
      t[300] = "ab\u0000x";
      t[301] = "ab\u0000y";
      kv.set("tokenizer.ggml.tokens", { type: 9, itemType: 8, value: t });
    }, ['tokens 300 and 301 are both "ab"']],
  ];
  for (const [what, edit, parts] of cases) {
    const file = await changed(edit);
    const e = assertThrows(() => preflight(file), GGUFFormatError);
    assert(e.message.startsWith("Invalid header value: "), `${what}: ${e.message}`);
    for (const p of parts) assert(e.message.includes(p), `${what}: "${e.message}" lacks "${p}"`);
  }
});

Deno.test("a tensor of an integer type is refused by name", async () => {
  const f = await readGGUFFile(await fixture("tiny"));
  const tensors = f.tensors.map((t, i) => (i === 3 ? { ...t, type: 26 as typeof t.type } : t));
  const e = assertThrows(() => applyRules(TENSOR_RULES, new Header({ ...f, tensors })), GGUFFormatError);
  assert(e.message.includes(`I32 for tensor "${f.tensors[3].name}"`), e.message);
});
