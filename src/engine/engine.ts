/**
 * The engine as loupe loaded it: which backends loaded (and why not), and the devices.
 *
 * @module
 */
import { type BackendReport, listDevices } from "../../ffi/library.ts";
import { loadEngine } from "./library.ts";
import { LoupeError } from "../util/errors.ts";
import { deviceMatches } from "../timeline/timeline.ts";
import { displayable } from "../util/presenter.ts";

export type { BackendReport };

/** A compute device ggml sees. */
export interface Device {
  /** Index in ggml's device list. */
  index: number;
  /** Name used by requireDevice and device options, e.g. "CPU", "Vulkan0", "CUDA0". */
  name: string;
  /** The driver's description (GPU model, CPU model). */
  description: string;
  /** "cpu", "gpu", "igpu" (integrated) or "accel", as ggml reports it (a software Vulkan device says "gpu"). */
  type: string;
  /** True for a GPU API implemented on the CPU (Mesa's lavapipe/llvmpipe, SwiftShader): never counts as "gpu". */
  software: boolean;
  /** Backend that registered it. */
  backend: string;
  /** Total memory in bytes. */
  memoryTotal: number;
  /** Free memory in bytes. */
  memoryFree: number;
}

/** Where the engine came from. */
export interface EngineInfo {
  /** "cpu", "vulkan", "cuda", "cuda12" or "source". */
  variant: string;
  /** Directory of the engine's shared libraries. */
  engineDir: string;
  /** Path of libloupe.so. */
  library: string;
}

const SOFTWARE_RENDERER = /\b(llvmpipe|lavapipe|softpipe|swiftshader)\b/i;

/** Every backend found in the engine directory, whether it loaded, and the loader's reason when not. */
export async function backends(): Promise<BackendReport[]> {
  const list = (await loadEngine()).backends;
  return displayable(list, "backends");
}

/** Every device of every loaded backend, with memory. */
export async function devices(): Promise<Device[]> {
  const lib = await loadEngine();
  const list = listDevices<Omit<Device, "software">>(lib.api);
  const out = list.map((d) => ({ ...d, software: SOFTWARE_RENDERER.test(d.description) }));
  return displayable(out, "devices"); // a table and a memory plot in a notebook
}

/** Which engine build is in use. */
export async function engineInfo(): Promise<EngineInfo> {
  const { build } = await loadEngine();
  return { variant: build.variant, engineDir: build.engineDir, library: build.library };
}

/**
 * Throws a `BACKEND_UNAVAILABLE` error, with every backend's reason, when no device satisfies
 * `required` ("gpu", "cpu" or a device name).
 */
export async function assertDeviceAvailable(required: string): Promise<void> {
  const devs = await devices();
  if (devs.some((d) => deviceMatches(required, d.name, devs))) return;
  const reasons = (await backends())
    .map((b) => b.loaded ? `${b.name}: loaded, ${b.devices ?? 0} device(s)` : `${b.name}: not loaded (${b.reason})`)
    .join("; ");
  throw new LoupeError(
    "BACKEND_UNAVAILABLE",
    `No device matches requireDevice "${required}": devices are ${
      devs.map((d) => d.name).join(", ") || "none"
    }; ${reasons}`,
  );
}
