// The public surface: every export of mod.ts, display.ts and testing.ts is documented and names no
// private type (deno doc --lint), the package would publish (license, exports, no slow types), and
// mod.ts holds no building blocks or native handles.
import { dirname, join, normalize } from "node:path";
import { assert, assertEquals } from "../support/assert.ts";

const ROOT = normalize(join(dirname(new URL(import.meta.url).pathname), "..", ".."));

async function deno(args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

Deno.test("deno doc --lint passes on every export", async () => {
  const config = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json")));
  const entries = Object.values(config.exports as Record<string, string>);
  assertEquals(entries.sort(), ["./display.ts", "./mod.ts", "./testing.ts"]);
  const r = await deno(["doc", "--lint", ...entries]);
  assertEquals(r.code, 0, r.out.slice(-4000));
});

Deno.test("deno publish --dry-run passes (license, exports, no slow types)", async () => {
  const config = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json")));
  assertEquals(config.license, "MIT");
  assert((await Deno.readTextFile(join(ROOT, "LICENSE"))).startsWith("MIT License"));
  const r = await deno(["publish", "--dry-run", "--allow-dirty"]);
  assertEquals(r.code, 0, r.out.slice(-4000));
  assert(r.out.includes("Success Dry run complete"), r.out.slice(-2000));
});

Deno.test("mod.ts exports no display building blocks, fixture makers or native handles", async () => {
  const mod = await import("../../mod.ts");
  for (const name of ["textTable", "htmlTable", "bundleOf", "richBundle", "NativeOwner", "makeProjector", "wrap"]) {
    assert(!(name in mod), `mod.ts exports ${name}`);
  }
  const display = await import("../../display.ts");
  const testing = await import("../../testing.ts");
  for (const name of ["htmlTable", "bundleOf", "richBundle", "attachDisplay"]) assert(name in display, name);
  assert("makeProjector" in testing);
  // the classes users get have no public constructor taking native handles
  for (const name of ["Model", "Embedder", "Projector", "Session"] as const) {
    assertEquals((mod[name] as unknown as { length: number }).length <= 1, true, name);
  }
  assert(!("addNative" in mod.Timeline.prototype), "Timeline.addNative takes the engine's stage records");
});
