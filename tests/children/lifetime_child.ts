// Child process of tests/lifetime_test.ts: load/generate/close cycles of the fixture model (with a
// session each time), measuring this process's resident memory after a garbage collection.
// Run with --v8-flags=--expose-gc. Prints one line `LIFETIME_CHILD_RESULT <json>`.
//
// Usage: deno run -A --v8-flags=--expose-gc tests/lifetime_child.ts <cycles>

/** Prefix of the one result line. */
export const RESULT_PREFIX = "LIFETIME_CHILD_RESULT ";

/** Resident set size of this process in bytes (VmRSS of /proc/self/status). */
export function residentBytes(): number {
  const m = Deno.readTextFileSync("/proc/self/status").match(/^VmRSS:\s+(\d+) kB/m);
  if (!m) throw new Error("no VmRSS in /proc/self/status");
  return Number(m[1]) * 1024;
}

async function main(cycles: number): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("run with --v8-flags=--expose-gc");
  const { fixtureModel, loadModel } = await import("../../mod.ts");
  const tiny = await fixtureModel("tiny");
  const rss: Array<{ cycle: number; bytes: number }> = [];
  let tokens = 0;
  for (let i = 1; i <= cycles; i++) {
    const model = await loadModel(tiny, { threads: 1, contextSize: 256 });
    const r = await model.generate("Hello", { maxTokens: 4, temperature: 0 });
    const s = await model.session({ contextSize: 256 });
    const t = await s.generate("Hello", { maxTokens: 4, temperature: 0 });
    tokens += r.tokens.length + t.tokens.length;
    await model.closeAsync(); // closes the session too
    if (i === 1 || i % 10 === 0) {
      gc();
      await new Promise((r) => setTimeout(r, 0)); // let finalizers and promise jobs run
      gc();
      rss.push({ cycle: i, bytes: residentBytes() });
    }
  }
  console.log(RESULT_PREFIX + JSON.stringify({ cycles, tokens, rss }));
}

if (import.meta.main) {
  await main(Number(Deno.args[0] ?? 200));
  Deno.exit(0);
}
