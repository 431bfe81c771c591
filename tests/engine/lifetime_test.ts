// Lifetimes: 200 load/generate/close cycles keep resident memory flat, and one full cycle of the
// C ABI is clean under valgrind's leak checker (a small C driver, native/tests/leak_driver.c).
import { assert, assertEquals } from "../support/assert.ts";
import { build, compileDriver, fixture } from "../support/helpers.ts";
import { RESULT_PREFIX } from "../children/lifetime_child.ts";
import { join } from "node:path";

const CYCLES = 200;

function log(msg: string): void {
  console.log(`  ${msg.replaceAll("\n", "\n  ")}`);
}

async function has(cmd: string): Promise<boolean> {
  try {
    return (await new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" }).output()).success;
  } catch {
    return false;
  }
}

Deno.test(`${CYCLES} load/generate/close cycles: resident memory after the last is within 10 % of after the tenth`, async () => {
  // A child of its own: a fresh process, with V8's gc() to collect before each measurement.
  const child = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      new URL("../children/lifetime_child.ts", import.meta.url).pathname,
      String(CYCLES),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(child.stderr);
  assert(child.success, `the cycles child failed (${child.signal ?? child.code}):\n${stderr.slice(-2000)}`);
  const line = new TextDecoder().decode(child.stdout).split("\n").findLast((l) => l.startsWith(RESULT_PREFIX));
  assert(line, `no result from the cycles child:\n${stderr.slice(-2000)}`);
  const r = JSON.parse(line.slice(RESULT_PREFIX.length)) as {
    cycles: number;
    tokens: number;
    rss: Array<{ cycle: number; bytes: number }>;
  };
  assertEquals(r.cycles, CYCLES);
  assertEquals(r.tokens, CYCLES * 8, "every cycle generated its tokens");
  const mib = (b: number) => (b / 2 ** 20).toFixed(1);
  log(`VmRSS (MiB) by cycle: ${r.rss.map((x) => `${x.cycle}: ${mib(x.bytes)}`).join(", ")}`);
  const tenth = r.rss.find((x) => x.cycle === 10)!.bytes;
  const last = r.rss.find((x) => x.cycle === CYCLES)!.bytes;
  log(
    `after the tenth ${mib(tenth)} MiB, after the last ${mib(last)} MiB (${((last / tenth - 1) * 100).toFixed(1)} %)`,
  );
  assert(last <= tenth * 1.1, `resident memory grew from ${mib(tenth)} to ${mib(last)} MiB`);
});

Deno.test({
  name: "one full cycle of the C ABI leaks nothing and touches no freed memory (valgrind memcheck)",
  fn: async () => {
    // never skipped: `deno task test` installs valgrind (tests/setup.ts)
    assert(
      await has("valgrind"),
      "valgrind is not installed (Debian package valgrind): run `deno run -A tests/setup.ts`",
    );
    const dir = await Deno.makeTempDir({ prefix: "loupe-leak-" });
    try {
      const driver = await compileDriver("leak_driver", dir);
      const out = await new Deno.Command("valgrind", {
        args: [
          "--leak-check=full",
          "--show-leak-kinds=definite,indirect,possible",
          "--errors-for-leak-kinds=definite,indirect,possible",
          "--error-exitcode=99",
          "--num-callers=30",
          driver,
          build.engineDir,
          await fixture("tiny"),
          join(dir, "driver.session"),
        ],
        cwd: build.engineDir,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const report = new TextDecoder().decode(out.stderr);
      const stdout = new TextDecoder().decode(out.stdout);
      const summary = report.split("\n").filter((l) => /lost:|reachable:|ERROR SUMMARY/.test(l)).map((l) =>
        l.replace(/^==\d+==\s*/, "")
      );
      log(summary.join("\n"));
      assert(stdout.includes("leak_driver: ok"), `the driver's calls failed:\n${stdout}\n${report.slice(-3000)}`);
      assertEquals(out.code, 0, `valgrind found errors or leaks:\n${report.slice(-6000)}`);
      assert(/definitely lost: 0 bytes in 0 blocks|All heap blocks were freed/.test(report), report.slice(-3000));
      assert(/ERROR SUMMARY: 0 errors/.test(report), report.slice(-3000));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
