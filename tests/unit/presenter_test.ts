// The presenter hook: without a presenter values show as text and no progress is made; with one,
// the domain's display and progress calls go to it.
import { assert, assertEquals } from "../support/assert.ts";
import {
  DISPLAY,
  displayable,
  displayOf,
  type MimeBundle,
  presenter,
  progressFor,
  setPresenter,
  VIEW_KIND,
} from "../../src/util/presenter.ts";

Deno.test("the hook: text without a presenter; the presenter's bundle and progress with one", async () => {
  const before = presenter();
  try {
    const value = displayable({ a: 1 }, "thing");
    assertEquals(Object.keys(value), ["a"], "the display keys are not enumerable");
    assertEquals(JSON.stringify(value), '{"a":1}');
    assertEquals((value as Record<symbol, unknown>)[VIEW_KIND], "thing");
    if (!before) {
      assertEquals((await displayOf(value))["text/plain"], "{ a: 1 }");
      assertEquals(progressFor("x", true), null);
    }
    const seen: unknown[] = [];
    const updates: Array<number | null> = [];
    setPresenter({
      bundle: (v): Promise<MimeBundle> => {
        seen.push(v);
        return Promise.resolve({ "text/plain": "rich", "text/html": "<b>rich</b>" });
      },
      streamBundle: () => Promise.resolve({ "text/plain": "stream" }),
      progress: (_label, show) =>
        show === false ? null : {
          update: (f) => void updates.push(f),
          done: () => Promise.resolve(),
          fail: () => Promise.resolve(),
        },
    });
    const bundle = await (value as unknown as { [DISPLAY](): Promise<MimeBundle> })[DISPLAY]();
    assertEquals(bundle["text/html"], "<b>rich</b>");
    assert(seen[0] === value);
    progressFor("x")?.update(0.5);
    assertEquals(updates, [0.5]);
    assertEquals(progressFor("x", false), null);
  } finally {
    if (before) setPresenter(before);
  }
});
