// Child process of tests/corpus_test.ts: runs corpus cases in this process and prints one line
// per case — `CASE_BEGIN <i> <name>` before, `CASE_END <i> <json>` after — so that when a
// case kills the process the parent knows which one, records it, and starts a new child after it.
//
// Usage: deno run -A tests/corpus/run_corpus.ts <files|prompts> <i,j,…|all> [engine-only]
//   files: the malformed GGUF files through loadModel (the public API, with its checks);
//          with "engine-only", through the native loader alone (no checks in TypeScript), to
//          show which files the engine itself would die on.
//   prompts: the bad prompts against the base model (generate, chat, tokenize, sessions, FFI).
import { join } from "node:path";
import { badPrompts, baseModel, corpus } from "../corpus/make_corpus.ts";
import { caseIndexes, type CaseResult, typedOutcome } from "../support/case_runner.ts";

const short = (s: string) => (s.length > 300 ? s.slice(0, 300) + "…" : s);

async function main(kind: string, which: string, engineOnly: boolean): Promise<void> {
  const { LoupeError, loadModel } = await import("../../mod.ts");
  const { loadEngine } = await import("../../src/engine/library.ts");
  const { NativeModel } = await import("../../ffi/model.ts");
  const { samplingParams } = await import("../../src/generate/options.ts");
  const typed = (e: unknown): CaseResult => typedOutcome(e, LoupeError);
  const dir = await Deno.makeTempDir({ prefix: "loupe-corpus-" });
  const { path: basePath, bytes: base } = await baseModel();
  const report = (i: number, r: CaseResult) => console.log(`CASE_END ${i} ${JSON.stringify(r)}`);

  if (kind === "files") {
    const files = [...corpus(base)];
    const lib = await loadEngine();
    for (const i of caseIndexes(which, files.length)) {
      const c = files[i];
      console.log(`CASE_BEGIN ${i} ${c.name}`);
      const path = join(dir, `${c.name}.gguf`);
      await Deno.writeFile(path, c.bytes);
      let r: CaseResult;
      if (engineOnly) {
        // the native loader alone: no GGUF reader, no checks
        const native = new NativeModel(lib.api, { path, gpuLayers: 0, threads: 1, contextSize: 256 });
        try {
          await native.load();
          // and one evaluation: some values only fail there
          const ctx = native.defaultContext();
          ctx.genBegin(samplingParams({ maxTokens: 2, temperature: 0 }), Int32Array.of(1));
          while (!(await ctx.genStep(1000))) { /* until done */ }
          r = { ok: true, outcome: "loaded" };
        } catch (e) {
          r = { ok: true, outcome: "error", message: short((e as Error).message) };
        } finally {
          native.free();
        }
      } else {
        try {
          await using m = await loadModel(path, { threads: 1, contextSize: 256 });
          try {
            const g = await m.generate("Hello", { maxTokens: 4, temperature: 0 });
            r = { ok: true, outcome: "loaded", message: `generated ${g.tokens.length} tokens (${g.stopReason})` };
          } catch (e) {
            r = typed(e);
            r.outcome = r.ok ? "loaded" : r.outcome;
          }
        } catch (e) {
          r = typed(e);
        }
      }
      await Deno.remove(path);
      report(i, r);
    }
  } else if (kind === "prompts") {
    const prompts = badPrompts();
    await using m = await loadModel(basePath, { threads: 1, contextSize: 256 });
    const lib = await loadEngine();
    for (const i of caseIndexes(which, prompts.length)) {
      const p = prompts[i];
      console.log(`CASE_BEGIN ${i} ${p.name}`);
      let r: CaseResult;
      try {
        const parts: string[] = [];
        if (p.bytes) {
          // invalid UTF-8 straight into loupe_model_tokenize, then back through detokenize
          const out = new Int32Array(4096);
          const n = lib.api.loupe_model_tokenize(
            (await import("../../src/generate/internals.ts")).internalsOf(m).native.pointer(),
            new Uint8Array(p.bytes),
            p.bytes.length,
            1,
            0,
            out,
            out.length,
          );
          if (n < 0) throw new Error(`loupe_model_tokenize returned ${n}`);
          const text = m.detokenize(Array.from(out.subarray(0, n)));
          await using s = await m.session({ contextSize: 256 });
          const g = await s.generate(Array.from(out.subarray(0, n)), { maxTokens: 3, temperature: 0 });
          parts.push(`${n} tokens, detokenized to ${text.length} chars, ${g.tokens.length} generated`);
        } else if (p.tokens) {
          await using s = await m.session({ contextSize: 256 });
          const g = await s.generate(p.tokens, { maxTokens: 3, temperature: 0, ...p.options });
          parts.push(`session: ${g.tokens.length} tokens (${g.stopReason})`);
        } else {
          const text = p.contextMultiple ? "word ".repeat(256 * p.contextMultiple) : p.text!;
          const options = { maxTokens: 3, temperature: 0, ...p.options };
          // the model's own call (fresh context each time): a typed error or a result
          try {
            const g = await m.generate(text, options);
            parts.push(`generate: ${g.tokens.length} tokens (${g.stopReason})`);
          } catch (e) {
            if (!(e instanceof LoupeError)) throw e;
            parts.push(`generate: ${e.code}`);
          }
          // a session: a prompt longer than the context is shifted, not refused
          await using s = await m.session({ contextSize: 256 });
          try {
            const g = await s.generate(text, options);
            parts.push(`session: ${g.tokens.length} tokens (${g.stopReason}, ${g.shifts.length} shifts)`);
          } catch (e) {
            if (!(e instanceof LoupeError)) throw e;
            parts.push(`session: ${e.code}`);
          }
          try {
            const c = await m.chat([{ role: "user", content: text }], options);
            parts.push(`chat: ${c.tokens.length} tokens`);
          } catch (e) {
            if (!(e instanceof LoupeError)) throw e;
            parts.push(`chat: ${e.code}`);
          }
          const toks = m.tokenize(text);
          parts.push(`tokenize: ${toks.length}, round trip ${m.detokenize(toks, { removeSpecial: true }) === text}`);
        }
        const unexpected = p.expect
          ? parts.filter((x) => /^(generate|session|chat):/.test(x) && !x.endsWith(`: ${p.expect}`))
          : [];
        r = unexpected.length
          ? { ok: false, outcome: "unexpected", message: short(`expected ${p.expect}: ${parts.join("; ")}`) }
          : { ok: true, outcome: "result", message: short(parts.join("; ")) };
      } catch (e) {
        r = typed(e);
      }
      report(i, r);
    }
  } else {
    throw new Error(`run_corpus: unknown kind "${kind}"`);
  }
  await Deno.remove(dir, { recursive: true });
}

if (import.meta.main) {
  await main(Deno.args[0] ?? "files", Deno.args[1] ?? "all", Deno.args[2] === "engine-only");
  Deno.exit(0);
}
