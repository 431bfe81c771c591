/**
 * The child process of a vision probe (see src/vision_probe.ts): one small image chat with the
 * placement it is given, using the tiny fixtures, then one result line on stdout. A driver that
 * crashes on the image path ends this process, not the caller.
 *
 * Usage: `deno run -A src/vision_probe_child.ts '{"device":"Vulkan0","modelDevices":[],"flashAttn":"auto"}'`
 *
 * @module
 */
import { PROBE_RESULT_PREFIX, type ProbeConfig } from "../vision/probe.ts";

/** The child: one small image chat with the placement of `config`, then one result line. */
async function child(config: ProbeConfig): Promise<void> {
  const { loadModel } = await import("../model/model.ts");
  const { fixtureProjector } = await import("../fixtures/vision.ts");
  const { model: modelPath, projector: projectorPath } = await fixtureProjector("tiny");
  const onModel = config.modelDevices.length > 0;
  await using model = await loadModel(modelPath, {
    gpuLayers: onModel ? "all" : 0,
    device: onModel ? config.modelDevices[0] : undefined,
    flashAttn: config.flashAttn,
    threads: 1,
    contextSize: 256,
    progress: false,
  });
  await model.loadProjector(projectorPath, {
    gpu: config.device !== "CPU",
    device: config.device === "CPU" ? undefined : config.device,
    probe: false,
    threads: 1,
  });
  const side = 64;
  const data = new Uint8Array(side * side * 3).map((_, i) => (i * 7) % 256);
  const r = await model.chat(
    [{ role: "user", content: [{ image: { data, width: side, height: side } }, "Describe."] }],
    {
      maxTokens: 2,
      temperature: 0,
    },
  );
  const placement: Record<string, string[]> = {};
  for (const name of ["image encode", "image decode"]) placement[name] = r.timeline.devicesUsed(name);
  console.log(PROBE_RESULT_PREFIX + JSON.stringify({ ok: true, placement, tokens: r.tokens.length }));
}

if (import.meta.main) {
  await child(JSON.parse(Deno.args[0] ?? "{}") as ProbeConfig);
  Deno.exit(0); // nothing left running may keep the process (or the driver) alive
}
