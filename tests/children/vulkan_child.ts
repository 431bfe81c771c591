// Child process of tests/vulkan_test.ts: runs one Vulkan check in its own process (lavapipe's
// driver can crash inside itself; a crash here must not take the test runner with it) and prints
// one line `VULKAN_CHILD_RESULT <json>` on stdout for the parent to assert on.
//
// Usage: LOUPE_ENGINE=vulkan GGML_VK_VISIBLE_DEVICES=0 deno run -A tests/vulkan_child.ts <mode>
// Modes: devices | decode | timeline | placement, and for testing the parent's runner:
// crash (SIGSEGV) | abort (SIGABRT) | exit (exit code 139) | throw (uncaught error) |
// silent (exits 0, prints nothing) | hang (never ends).

/** Prefix of the one result line. */
export const RESULT_PREFIX = "VULKAN_CHILD_RESULT ";

/** Prompts of the decoding comparison. */
export const PROMPTS = ["Once upon a time", "The quick brown fox jumps over"];

/** Tokens generated per prompt in the decoding comparison. */
export const N_PREDICT = 32;

/**
 * CPU threads of loupe's own runs. One thread: ggml's CPU thread pool spins at a barrier after
 * every graph node, and on a busy 2-core machine two threads make decoding 100x slower. The
 * thread count does not change ggml's results.
 */
export const CHILD_THREADS = 1;

function emit(result: unknown): void {
  console.log(RESULT_PREFIX + JSON.stringify(result));
}

/** What a caught error looks like in a child's result (also tests/vision_child.ts). */
export function describeError(e: unknown): Record<string, unknown> {
  const err = e as Record<string, unknown> & Error;
  return {
    name: err?.name ?? null,
    message: err?.message ?? String(e),
    code: err?.code ?? null,
    stage: err?.stage ?? null,
    op: err?.op ?? null,
    device: err?.device ?? null,
    required: err?.required ?? null,
  };
}

async function main(mode: string): Promise<void> {
  // Modes that exercise the parent's crash reporting: they load nothing.
  switch (mode) {
    case "crash":
      // A real segmentation fault, as a driver bug makes one: a read of the null page. (Sending
      // SIGSEGV with Deno.kill does not do: V8's fault handler ignores a signal that is no fault.)
      console.error("vulkan_child: about to read the null page on purpose");
      new Deno.UnsafePointerView(Deno.UnsafePointer.create(16n)!).getInt8();
      return;
    case "abort":
      console.error("vulkan_child: raising SIGABRT on purpose");
      Deno.kill(Deno.pid, "SIGABRT");
      await new Promise((r) => setTimeout(r, 10_000));
      return;
    case "exit":
      console.error("vulkan_child: exiting with code 139 on purpose");
      Deno.exit(139);
      break;
    case "throw":
      throw new Error("vulkan_child: thrown on purpose");
    case "silent":
      return;
    case "hang":
      console.error("vulkan_child: hanging on purpose");
      await new Promise(() => setInterval(() => {}, 1000));
      return;
  }

  // The engine: imported only now, so the modes above do not start it.
  const { backends, devices, engineInfo, loadModel, PlacementError } = await import("../../mod.ts");
  const { fixture, referenceCompletion } = await import("../support/helpers.ts");
  const tiny = await fixture("tiny");

  switch (mode) {
    case "devices": {
      emit({ engine: await engineInfo(), backends: await backends(), devices: await devices() });
      return;
    }

    case "decode": {
      const runs: Record<string, unknown> = {};
      for (const gpuLayers of ["all", 0] as const) {
        await using model = await loadModel(tiny, { gpuLayers, threads: CHILD_THREADS });
        const results = [];
        for (const prompt of PROMPTS) {
          const r = await model.generate(prompt, { maxTokens: N_PREDICT, temperature: 0 });
          results.push({
            prompt,
            tokens: r.tokens,
            text: r.text,
            stopReason: r.stopReason,
            devicesUsed: r.timeline.devicesUsed(),
          });
        }
        runs[String(gpuLayers)] = { gpuLayers: model.info.gpuLayers, results };
      }
      // llama.cpp's own tool on the same engine, every layer on lavapipe.
      const reference = [];
      for (const prompt of PROMPTS) {
        reference.push({
          prompt,
          text: await referenceCompletion(tiny, prompt, N_PREDICT, {
            extra: ["-ngl", "99"],
            env: { GGML_VK_VISIBLE_DEVICES: "0" },
          }),
        });
      }
      emit({ engine: await engineInfo(), runs, reference });
      return;
    }

    case "timeline": {
      // "all": every layer and the output on Vulkan0; 2 (of 2 layers + output): layer 0 stays on
      // the CPU; 0: everything on the CPU.
      const runs = [];
      for (const gpuLayers of ["all", 2, 0] as const) {
        await using model = await loadModel(tiny, { gpuLayers, threads: CHILD_THREADS });
        const r = await model.generate(PROMPTS[0], { maxTokens: 8, temperature: 0 });
        runs.push({
          gpuLayers,
          offloaded: model.info.gpuLayers,
          nLayer: model.info.nLayer,
          weights: model.loadTimeline.weights,
          text: r.timeline.toString(),
          timeline: r.timeline.toJSON(),
          tokens: r.tokens,
        });
      }
      emit({ runs });
      return;
    }

    case "placement": {
      const out: Record<string, unknown> = {};
      {
        // Every layer on the CPU while Vulkan0 is required: the first step breaks the rule.
        await using model = await loadModel(tiny, { gpuLayers: 0, requireDevice: "Vulkan0", threads: CHILD_THREADS });
        try {
          const r = await model.generate(PROMPTS[0], { maxTokens: 8, temperature: 0 });
          out.cpuLayers = { threw: false, tokens: r.tokens.length };
        } catch (e) {
          out.cpuLayers = { threw: true, isPlacementError: e instanceof PlacementError, error: describeError(e) };
        }
        // The model stays usable without the requirement (a per-call override).
        const r = await model.generate(PROMPTS[0], { maxTokens: 4, temperature: 0, requireDevice: "cpu" });
        out.cpuLayersAfter = { tokens: r.tokens.length };
      }
      {
        await using model = await loadModel(tiny, {
          gpuLayers: "all",
          requireDevice: "Vulkan0",
          threads: CHILD_THREADS,
        });
        const heavyElsewhere = (t: { stages: Array<{ name: string; devices: Record<string, any> }> }) =>
          t.stages.flatMap((s) =>
            Object.entries(s.devices)
              .filter(([dev, p]) => dev !== "Vulkan0" && p.heavy > 0)
              .map(([dev, p]) => ({ stage: s.name, device: dev, heavy: p.heavy, firstHeavy: p.firstHeavy }))
          );
        try {
          const r = await model.generate(PROMPTS[0], { maxTokens: 8, temperature: 0 });
          out.allLayers = {
            threw: false,
            tokens: r.tokens.length,
            devicesUsed: r.timeline.devicesUsed(),
            heavyElsewhere: heavyElsewhere(r.timeline),
            cpuOps: Object.fromEntries(r.timeline.stages.map((s) => [s.name, s.devices.CPU?.ops ?? null])),
          };
        } catch (e) {
          out.allLayers = { threw: true, isPlacementError: e instanceof PlacementError, error: describeError(e) };
        }
        // "gpu" as a requirement: what lavapipe (a CPU rasterizer) counts as.
        try {
          const r = await model.generate(PROMPTS[0], { maxTokens: 2, temperature: 0, requireDevice: "gpu" });
          out.requireGpu = { threw: false, tokens: r.tokens.length };
        } catch (e) {
          out.requireGpu = { threw: true, error: describeError(e) };
        }
      }
      emit(out);
      return;
    }

    default:
      throw new Error(`vulkan_child: unknown mode "${mode}"`);
  }
}

if (import.meta.main) {
  await main(Deno.args[0] ?? "");
  // Exit explicitly: nothing left running may keep the process (or the driver) alive.
  Deno.exit(0);
}
