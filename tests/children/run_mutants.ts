// Child process of tests/engine/mutants_test.ts: runs semantic mutants (tests/corpus/mutants.ts,
// mutants_projector.ts) in this process and prints `CASE_BEGIN <i>` before and `CASE_END <i>
// <json>` after each, so that when a case kills the process (or the parent kills it for running
// memory or time away) the parent knows which one and starts a new child after it.
//
// Usage: deno run -A tests/children/run_mutants.ts <i,j,…|all> [engine-only]
//   Each mutant is loaded through the public API and used once: a text model generates, chats,
//   tokenizes and loads vocabulary-only; an embedder embeds; a reranker reranks; a projector
//   loads (without and with warm-up) and describes an image. With "engine-only" the text and
//   embedding mutants go to the native loader alone (no checks in TypeScript), to show which
//   files the engine itself dies on.
import { join } from "node:path";
import { allMutants } from "../corpus/all_mutants.ts";
import { caseIndexes, type CaseResult, typedOutcome } from "../support/case_runner.ts";

const short = (s: string) => (s.length > 300 ? s.slice(0, 300) + "…" : s);

async function main(which: string, engineOnly: boolean): Promise<void> {
  const { loadEmbedder, loadModel, LoupeError } = await import("../../mod.ts");
  const { loadEngine } = await import("../../src/engine/library.ts");
  const { NativeModel } = await import("../../ffi/model.ts");
  const { NativeEmbedder } = await import("../../ffi/embed.ts");
  const { samplingParams } = await import("../../src/generate/options.ts");
  const { mutants, pairs } = await allMutants();
  const dir = await Deno.makeTempDir({ prefix: "loupe-mutants-" });
  const lib = await loadEngine();
  const image = { width: 8, height: 8, data: new Uint8Array(8 * 8 * 3).fill(128) };

  for (const i of caseIndexes(which, mutants.length)) {
    const c = mutants[i];
    console.log(`CASE_BEGIN ${i} ${c.name}`);
    const path = join(dir, `case-${i}.gguf`);
    await Deno.writeFile(path, c.make());
    const did: string[] = [];
    let r: CaseResult;
    try {
      if (engineOnly && c.kind !== "projector") {
        const native = new NativeModel(lib.api, {
          path,
          gpuLayers: 0,
          threads: 1,
          contextSize: 256,
          defaultContext: c.kind === "text",
        });
        try {
          await native.load();
          if (c.kind === "text") {
            const ctx = native.defaultContext();
            ctx.genBegin(samplingParams({ maxTokens: 2, temperature: 0 }), Int32Array.of(1, 2, 3));
            while (!(await ctx.genStep(1000))) { /* until done */ }
          } else {
            const e = await NativeEmbedder.create(native, { pooling: "model", threads: 1, measure: false });
            try {
              const n = e.begin(Int32Array.of(1, 2, 3), Int32Array.of(3), 3);
              await e.run(new Float32Array(n));
            } finally {
              e.free();
            }
          }
          r = { ok: true, outcome: "loaded" };
        } finally {
          native.free();
        }
      } else if (c.kind === "text") {
        // the vocabulary alone, as a tokenizer
        try {
          await using v = await loadModel(path, { vocabOnly: true });
          const toks = v.tokenize("😀 héllo wörld [CLS] <s>", { parseSpecial: true });
          did.push(`vocab-only ${toks.length} tokens, ${v.detokenize(toks).length} chars`);
        } catch (e) {
          if (!(e instanceof LoupeError)) throw e;
          did.push(`vocab-only ${e.code}`);
        }
        await using m = await loadModel(path, { threads: 1, contextSize: 256 });
        did.push("loaded");
        const g = await m.generate("Hello", { maxTokens: 3, temperature: 0 });
        did.push(`generated ${g.tokens.length}`);
        did.push(`tokenized ${m.tokenize("😀 héllo wörld\u0000x").length}`);
        if (m.info.chatTemplate) {
          const c2 = await m.chat([{ role: "user", content: "Hi" }], { maxTokens: 2, temperature: 0 });
          did.push(`chatted ${c2.tokens.length}`);
        }
        r = { ok: true, outcome: "loaded", message: did.join(", ") };
      } else if (c.kind === "embedding" || c.kind === "rerank") {
        await using e = await loadEmbedder(path, { threads: 1 });
        did.push("loaded");
        if (c.kind === "rerank") {
          const ranked = await e.rerank("what is a cat", ["a cat is an animal", "😀 a car"]);
          did.push(`reranked ${ranked.length}`);
        } else {
          const v = await e.embed(["hello world", "😀 wörld"]);
          did.push(`embedded ${v.length}`);
        }
        r = { ok: true, outcome: "loaded", message: did.join(", ") };
      } else {
        await using m = await loadModel(pairs[c.pair ?? 0], { threads: 1, contextSize: 512 });
        await using p = await m.loadProjector(path, { warmup: false });
        did.push("loaded");
        await p.close();
        await using _warm = await m.loadProjector(path);
        did.push("warmed up");
        const content = [{ type: "image" as const, image }, { type: "text" as const, text: "What is this?" }];
        const g = await m.chat([{ role: "user", content }], { maxTokens: 2, temperature: 0 });
        did.push(`described ${g.tokens.length}`);
        r = { ok: true, outcome: "loaded", message: did.join(", ") };
      }
    } catch (e) {
      r = engineOnly
        ? { ok: true, outcome: "error", message: short((e as Error).message) }
        : typedOutcome(e, LoupeError);
      if (did.length) r.message = `${did.join(", ")}; then ${r.message}`;
    }
    await Deno.remove(path).catch(() => {});
    console.log(`CASE_END ${i} ${JSON.stringify(r)}`);
  }
  await Deno.remove(dir, { recursive: true });
}

if (import.meta.main) {
  await main(Deno.args[0] ?? "all", Deno.args[1] === "engine-only");
  Deno.exit(0);
}
