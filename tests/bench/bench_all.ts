// `deno task bench`: every benchmark, one after another, each printing its own table of ratios
// measured side by side in one run. Arguments (e.g. --quick, --rounds=N) go to each.
const parts = ["bench.ts", "bench_isolate.ts", "bench_rpc.ts", "bench_embed.ts", "bench_vision.ts", "bench_server.ts"];
let failed = 0;
for (const part of parts) {
  console.log(`\n=== ${part}`);
  const status = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(part, import.meta.url).pathname, ...Deno.args],
    stdout: "inherit",
    stderr: "inherit",
  }).spawn().status;
  if (!status.success) {
    failed++;
    console.log(`${part} did not finish (exit code ${status.code})`);
  }
}
if (failed) Deno.exit(1);
