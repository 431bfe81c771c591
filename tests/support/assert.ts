// Small assertion helpers (JSR's @std/assert cannot be reached from these machines).
import { deepStrictEqual, ok } from "node:assert/strict";

/** Deep equality with a readable diff. */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  deepStrictEqual(actual, expected, msg);
}

/** Truthiness. */
export function assert(cond: unknown, msg?: string): asserts cond {
  ok(cond, msg);
}

/** Awaits `fn` and checks it rejects with an instance of `cls` whose message includes `includes`. */
export async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  cls: new (...args: any[]) => E,
  includes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof cls)) {
      throw new Error(`Expected ${cls.name}, got ${(e as Error)?.name}: ${(e as Error)?.message}`);
    }
    if (includes && !e.message.includes(includes)) {
      throw new Error(`Expected message to include "${includes}", got "${e.message}"`);
    }
    return e;
  }
  throw new Error(`Expected ${cls.name} to be thrown, but nothing was`);
}

/** Checks `fn` throws synchronously. */
export function assertThrows<E extends Error>(fn: () => unknown, cls: new (...args: any[]) => E, includes?: string): E {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof cls)) {
      throw new Error(`Expected ${cls.name}, got ${(e as Error)?.name}: ${(e as Error)?.message}`);
    }
    if (includes && !e.message.includes(includes)) {
      throw new Error(`Expected message to include "${includes}", got "${e.message}"`);
    }
    return e;
  }
  throw new Error(`Expected ${cls.name} to be thrown, but nothing was`);
}
