// After a call returns, loupe's CPU worker threads sleep instead of spinning for the next graph
// (native cpu_threadpool::idle): a spinning worker would take a core from the notebook's own
// work between calls. A C driver (native/tests/idle_driver.c) samples the threads' states right
// after loupe_ctx_gen_step and loupe_embedder_run return, with a control that a spinning thread is seen.
import { assert } from "../support/assert.ts";
import { build, compileDriver, fixture } from "../support/helpers.ts";
import { embedFixture } from "../../mod.ts";

Deno.test("no worker thread spins after a generation step or an embedding run returns", async () => {
  const dir = await Deno.makeTempDir({ prefix: "loupe-idle-" });
  try {
    const driver = await compileDriver("idle_driver", dir);
    const out = await new Deno.Command(driver, {
      args: [build.engineDir, await fixture("tiny"), await embedFixture("bert")],
      cwd: build.engineDir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert(out.success && stdout.includes("idle_driver: ok"), `idle_driver:\n${stdout}\n${stderr.slice(-3000)}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
