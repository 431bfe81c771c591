// The reference-tool runner itself: a run whose end was lost is run again, never taken as whole.
import { join } from "node:path";
import { assertEquals, assertRejects } from "../support/assert.ts";
import { closesWithBlankLine, runLoggedTool } from "../support/helpers.ts";

/** A stand-in tool that prints a cut output for its first `cutRuns` runs, then a whole one. */
async function flakyTool(cutRuns: number): Promise<{ tool: string; runs: () => Promise<number> }> {
  const dir = await Deno.makeTempDir({ prefix: "loupe-helpers-" });
  const count = join(dir, "runs");
  const tool = join(dir, "tool.sh");
  await Deno.writeTextFile(
    tool,
    `#!/bin/sh\necho x >> '${count}'\nif [ $(wc -l < '${count}') -le ${cutRuns} ]; then printf 'reply'; else printf 'reply\\n\\n'; fi\n`,
  );
  await Deno.chmod(tool, 0o755);
  return { tool, runs: async () => (await Deno.readTextFile(count)).trim().split("\n").length };
}

Deno.test("runLoggedTool runs a cut output again, and gives up after five cut runs", async () => {
  const twice = await flakyTool(2);
  assertEquals(await runLoggedTool(twice.tool, [], closesWithBlankLine), "reply\n\n");
  assertEquals(await twice.runs(), 3);
  const never = await flakyTool(99);
  await assertRejects(() => runLoggedTool(never.tool, [], closesWithBlankLine), Error, "cut short 5 times");
  assertEquals(await never.runs(), 5);
});
