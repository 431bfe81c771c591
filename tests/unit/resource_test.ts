// The Resource base: one call at a time, CLOSED after close(), and the handles freed only after
// the running call (a stand-in owner whose "handles" are a log, no engine).
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { Resource } from "../../src/util/resource.ts";
import { LoupeError } from "../../src/util/errors.ts";

class Owner extends Resource {
  log: string[] = [];
  aborted = 0;
  protected closedMessage(): string {
    return "Cannot use the owner: it is closed";
  }
  protected closing(queue: Promise<unknown>): Promise<unknown> {
    this.aborted++;
    return queue.then(() => this.log.push("freed"));
  }
  call(name: string, ms: number): Promise<string> {
    return this.serial(async () => {
      this.log.push(`start ${name}`);
      await new Promise((r) => setTimeout(r, ms));
      this.log.push(`end ${name}`);
      return name;
    });
  }
  finish(name: string): Promise<string> {
    return this.serial(() => Promise.resolve(this.log.push(`finish ${name}`)).then(() => name), true);
  }
}

Deno.test("calls run one at a time, in order", async () => {
  const o = new Owner();
  assertEquals(await Promise.all([o.call("a", 20), o.call("b", 1)]), ["a", "b"]);
  assertEquals(o.log, ["start a", "end a", "start b", "end b"]);
});

Deno.test("close() frees after the running call, once; later and queued calls are CLOSED", async () => {
  const o = new Owner();
  const running = o.call("a", 20);
  const queued = o.call("b", 1).then(() => null, (e) => e);
  const saving = o.finish("save");
  await new Promise((r) => setTimeout(r, 5)); // "a" has started
  o.close();
  o.close();
  assert(o.closed);
  assertEquals(await running, "a");
  const e = await queued;
  assert(e instanceof LoupeError && e.message === "Cannot use the owner: it is closed", String(e));
  assertEquals(e.code, "CLOSED");
  assertEquals(await saving, "save", "a call that must finish is run even after close()");
  await assertRejects(() => o.call("c", 1), LoupeError, "it is closed");
  await o.closeAsync();
  assertEquals(o.log, ["start a", "end a", "finish save", "freed"]);
  assertEquals(o.aborted, 1, "closing runs once");
});

Deno.test("await using closes and waits for the free", async () => {
  const log: string[] = [];
  {
    await using o = new Owner();
    o.log = log;
    await o.call("a", 1);
  }
  assertEquals(log, ["start a", "end a", "freed"]);
});
