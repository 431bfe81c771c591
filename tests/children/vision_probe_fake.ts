// A stand-in for src/vision_probe.ts as the probe's child module, for tests of the probe runner:
// LOUPE_FAKE_PROBE picks what it does — "crash" (a real segmentation fault, as a driver bug makes
// one), "exit" (exit code 3), "hang" (never ends), "silent" (exits 0 without a result line).
import { PROBE_RESULT_PREFIX } from "../../src/vision/probe.ts";

const mode = Deno.env.get("LOUPE_FAKE_PROBE") ?? "";
const config = JSON.parse(Deno.args[0] ?? "{}");
switch (mode) {
  case "crash":
    console.error(`vision_probe_fake: reading the null page on purpose (device ${config.device})`);
    new Deno.UnsafePointerView(Deno.UnsafePointer.create(16n)!).getInt8();
    break;
  case "exit":
    console.error("vision_probe_fake: giving up with exit code 3");
    Deno.exit(3);
    break;
  case "hang":
    await new Promise(() => setInterval(() => {}, 1000));
    break;
  case "silent":
    break;
  default:
    console.log(PROBE_RESULT_PREFIX + JSON.stringify({ ok: true, placement: {} }));
}
Deno.exit(0);
