// The build lock (native/build/engine.ts): a lock left by a build that was interrupted is taken
// at once, one held by a live process is waited for.
import { assert, assertEquals } from "../support/assert.ts";
import { withLock } from "../../native/build/engine.ts";

Deno.test("a build lock whose process is gone is taken at once; a live holder's is waited for", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const lock = `${dir}/x.lock`;
    // left by a process that has exited (a build stopped with Ctrl-C)
    const gone = new Deno.Command("true").spawn();
    await gone.status;
    await Deno.mkdir(lock);
    await Deno.writeTextFile(`${lock}/pid`, String(gone.pid));
    const t0 = performance.now();
    assertEquals(await withLock(lock, () => Promise.resolve("ran")), "ran");
    assert(performance.now() - t0 < 2000, "taken at once");
    // held by a live process (this one): waited for until it is released
    await Deno.mkdir(lock);
    await Deno.writeTextFile(`${lock}/pid`, String(Deno.pid));
    let ran = false;
    const waiting = withLock(lock, () => Promise.resolve(ran = true));
    await new Promise((r) => setTimeout(r, 1500));
    assert(!ran, "it waited while the holder lives");
    await Deno.remove(lock, { recursive: true });
    await waiting;
    assert(ran);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
