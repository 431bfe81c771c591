// Which engine package a machine gets (native/build.ts chooseVariant), on made-up machine facts:
// Colab (a CUDA 12 runtime, a new driver), CUDA 13 machines, old drivers, Vulkan, CPU.
import { assertEquals } from "../support/assert.ts";
import { chooseVariant, type MachineFacts } from "../../native/build/engine.ts";

const driver = (major: number) =>
  `NVRM version: NVIDIA UNIX x86_64 Kernel Module  ${major}.54.15  Tue Mar 26 23:04:29 UTC 2025\n`;
const none: MachineFacts = {
  nvidiaDriver: null,
  cudaRuntimes: [],
  vulkanLoader: false,
  renderNode: false,
  vulkanVisible: false,
};

Deno.test("NVIDIA: the CUDA build whose runtime is installed, else by the driver", () => {
  // Colab: driver 580+ but the CUDA 12 toolkit
  assertEquals(chooseVariant({ ...none, nvidiaDriver: driver(580), cudaRuntimes: [12] }), "cuda12");
  assertEquals(chooseVariant({ ...none, nvidiaDriver: driver(550), cudaRuntimes: [12] }), "cuda12");
  assertEquals(chooseVariant({ ...none, nvidiaDriver: driver(590), cudaRuntimes: [12, 13] }), "cuda");
  // a CUDA 13 runtime cannot run on an old driver
  assertEquals(chooseVariant({ ...none, nvidiaDriver: driver(550), cudaRuntimes: [13] }), "cuda12");
  // no runtime found: by the driver
  assertEquals(chooseVariant({ ...none, nvidiaDriver: driver(575), cudaRuntimes: [] }), "cuda12");
  assertEquals(chooseVariant({ ...none, nvidiaDriver: driver(580), cudaRuntimes: [] }), "cuda");
  const open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.133.20  Release Build\n";
  assertEquals(chooseVariant({ ...none, nvidiaDriver: open, cudaRuntimes: [] }), "cuda12");
  // NVIDIA wins over Vulkan
  assertEquals(
    chooseVariant({ ...none, nvidiaDriver: driver(580), vulkanLoader: true, renderNode: true }),
    "cuda",
  );
});

Deno.test("no NVIDIA driver: Vulkan only with a GPU render node or a device made visible, else CPU", () => {
  assertEquals(chooseVariant({ ...none, vulkanLoader: true, renderNode: true }), "vulkan");
  assertEquals(chooseVariant({ ...none, vulkanLoader: true, vulkanVisible: true }), "vulkan");
  assertEquals(chooseVariant({ ...none, vulkanLoader: true }), "cpu", "lavapipe alone is not a GPU");
  assertEquals(chooseVariant({ ...none, renderNode: true }), "cpu", "no Vulkan loader");
  assertEquals(chooseVariant(none), "cpu");
});
