// A running server as the last expression of a notebook cell: its output is redrawn in place
// (update_display_data with the first output's display_id) while it runs, showing the requests
// made after it was shown, once more after it closes, and then never again. The kernel is a
// recorder of what the display code broadcasts (src/notebook/kernel.ts's KernelApi); the server,
// its requests and its batches are real.
import { assert, assertEquals } from "../support/assert.ts";
import { fixture, THREADS } from "../support/helpers.ts";
import { serve } from "../../mod.ts";
import { displayBundle } from "../../src/notebook/display.ts";
import type { KernelApi } from "../../src/notebook/kernel.ts";

interface Sent {
  type: string;
  content: { data: Record<string, string>; transient: { display_id?: string } };
}

function recorder(): KernelApi & { sent: Sent[] } {
  const sent: Sent[] = [];
  return {
    sent,
    broadcast(type, content) {
      sent.push({ type, content: content as unknown as Sent["content"] });
      return Promise.resolve();
    },
  };
}

const until = async (what: string, ok: () => boolean, ms = 10_000) => {
  const end = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

Deno.test("a server shown in a notebook cell is redrawn in place while it runs, and once after it closes", async () => {
  const server = await serve({ model: await fixture("tiny"), port: 0, parallel: 2, threads: THREADS });
  const kernel = recorder();
  const result = await displayBundle(server, kernel);
  assert(result["text/plain"].startsWith(`loupe server at ${server.url}`), result["text/plain"]);
  const first = kernel.sent.find((m) => m.type === "display_data" && m.content.transient.display_id);
  assert(first, "the view goes out with a display id");
  const id = first.content.transient.display_id!;
  assert(first.content.data["text/plain"].includes("0 (0 errors)"), "no requests yet");
  // plotly.js goes out in an output of its own, before the view (the view's redraws never carry it)
  const library = kernel.sent.findIndex((m) => (m.content.data["text/html"] ?? "").includes('class="loupe-library"'));
  assert(library >= 0 && library < kernel.sent.indexOf(first));

  const answers = await Promise.all(["Once upon a time", "Hello"].map(async (prompt) => {
    const res = await fetch(`${server.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt, max_tokens: 8, temperature: 0 }),
    });
    return await res.json();
  }));
  assertEquals(answers.map((a) => a.usage.completion_tokens), [8, 8]);
  const updates = () => kernel.sent.filter((m) => m.type === "update_display_data");
  await until(
    "a redraw showing both requests",
    () => updates().some((m) => /requests\s+2 \(0 errors\)/.test(m.content.data["text/plain"])),
  );
  const redraw = updates().at(-1)!;
  assertEquals(redraw.content.transient.display_id, id, "the redraw replaces the view's own output");
  assert(redraw.content.data["application/vnd.plotly.v1+json"], "with the throughput plot once batches ran");
  assert(!redraw.content.data["text/html"].includes("inlined by loupe"), "a redraw does not carry plotly.js");

  await server.close();
  await until("the last redraw", () => updates().at(-1)!.content.data["text/plain"].includes("closed"));
  const count = updates().length;
  await new Promise((r) => setTimeout(r, 2_500));
  assertEquals(updates().length, count, "no redraw after the one that shows it closed");
});
