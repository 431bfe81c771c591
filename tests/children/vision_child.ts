// Child process of tests/vision_test.ts for the Vulkan engine on Mesa's lavapipe: each mode runs
// in its own process (a driver crash must not end the test runner) and prints one line
// `VISION_CHILD_RESULT <json>` for the parent to assert on.
//
// Usage: LOUPE_ENGINE=vulkan GGML_VK_VISIBLE_DEVICES=0 deno run -A tests/vision_child.ts <mode>
// Modes: lavapipe | fallback | placement (see each below).

import { CHILD_THREADS, describeError } from "./vulkan_child.ts";

/** Prefix of the one result line. */
export const RESULT_PREFIX = "VISION_CHILD_RESULT ";

function emit(result: unknown): void {
  console.log(RESULT_PREFIX + JSON.stringify(result));
}

async function main(mode: string): Promise<void> {
  const { devices, loadModel, probeVisionDevice } = await import("../../mod.ts");
  const { fixtureProjector } = await import("../../src/fixtures/vision.ts");
  const { picture } = await import("../support/vision_images.ts");
  const { model: modelPath, projector: projectorPath } = await fixtureProjector("tiny");
  const img = picture(64, 48, 2);
  const messages = [{ role: "user", content: [{ image: img }, "Describe the picture."] }];
  const greedy = { maxTokens: 8, temperature: 0 };

  switch (mode) {
    // The model on lavapipe; the projector on its default device (the model's GPU), trusted only
    // after a real probe in a grandchild process; a second load uses the remembered verdict.
    case "lavapipe": {
      const verdictFile = Deno.env.get("LOUPE_VISION_PROBES")!;
      await using model = await loadModel(modelPath, { gpuLayers: "all", threads: CHILD_THREADS, progress: false });
      const first = await model.loadProjector(projectorPath);
      const verdicts = JSON.parse(await Deno.readTextFile(verdictFile));
      const r = await model.chat(messages, greedy);
      const again = await probeVisionDevice({ device: "Vulkan0", modelDevices: ["Vulkan0"], flashAttn: "auto" });
      await using cpu = await loadModel(modelPath, { gpuLayers: 0, threads: CHILD_THREADS, progress: false });
      await cpu.loadProjector(projectorPath, { gpu: false });
      const c = await cpu.chat(messages, greedy);
      emit({
        devices: await devices(),
        device: first.info.device,
        warnings: first.warnings,
        verdicts,
        remembered: again,
        loadTimeline: first.loadTimeline.toJSON(),
        timeline: r.timeline.toJSON(),
        text: r.timeline.toString(),
        tokens: r.tokens,
        cpuTokens: c.tokens,
      });
      return;
    }

    // The probe's child crashes (a stand-in module that reads the null page, chosen by the
    // parent through LOUPE_FAKE_PROBE): Vulkan0 is skipped, the encoder runs on the CPU, and the
    // user is told; with requireDevice "Vulkan0" the load fails naming the crash.
    case "fallback": {
      const probe = {
        module: new URL("./vision_probe_fake.ts", import.meta.url).pathname,
        cacheFile: Deno.env.get("LOUPE_VISION_PROBES")!,
      };
      await using model = await loadModel(modelPath, { gpuLayers: 0, threads: CHILD_THREADS, progress: false });
      const warned: string[] = [];
      const warn = console.warn;
      console.warn = (...a: unknown[]) => warned.push(a.join(" "));
      let p;
      try {
        p = await model.loadProjector(projectorPath, { probe });
      } finally {
        console.warn = warn;
      }
      const r = await model.chat(messages, greedy);
      let required: Record<string, unknown> | null = null;
      try {
        await model.loadProjector(projectorPath, { probe, requireDevice: "Vulkan0" });
      } catch (e) {
        required = describeError(e);
      }
      const after = await model.chat(messages, greedy);
      emit({
        device: p.info.device,
        warnings: p.warnings,
        consoleWarnings: warned,
        loadEvents: p.loadTimeline.events,
        resultWarnings: r.warnings,
        events: r.timeline.events,
        encode: r.timeline.devicesUsed("image encode"),
        tokens: r.tokens.length,
        required,
        afterTokens: after.tokens.length,
      });
      return;
    }

    // requireDevice "Vulkan0" on a projector kept on the CPU fails at its measured warm-up; on
    // Vulkan0 it passes, and a call-level requirement catches the model's stages on the CPU.
    case "placement": {
      await using model = await loadModel(modelPath, { gpuLayers: 0, threads: CHILD_THREADS, progress: false });
      let cpuKept: Record<string, unknown> | null = null;
      try {
        await model.loadProjector(projectorPath, { gpu: false, requireDevice: "Vulkan0" });
      } catch (e) {
        cpuKept = { ...describeError(e), isPlacementError: e instanceof (await import("../../mod.ts")).PlacementError };
      }
      const p = await model.loadProjector(projectorPath, { device: "Vulkan0", requireDevice: "Vulkan0", probe: false });
      const r = await model.chat(messages, greedy);
      let call: Record<string, unknown> | null = null;
      try {
        await model.chat(messages, { ...greedy, requireDevice: "Vulkan0" });
      } catch (e) {
        call = describeError(e);
      }
      emit({
        cpuKept,
        device: p.info.device,
        warmup: p.loadTimeline.stage("projector warm-up")?.devices ?? null,
        encode: r.timeline.stage("image encode")?.devices ?? null,
        decode: r.timeline.devicesUsed("image decode"),
        tokens: r.tokens.length,
        call,
      });
      return;
    }

    default:
      throw new Error(`vision_child: unknown mode "${mode}"`);
  }
}

if (import.meta.main) {
  await main(Deno.args[0] ?? "");
  Deno.exit(0);
}
