/**
 * The engine as loupe loaded it: which backends loaded (and why not), and the devices.
 *
 * @module
 */
import { type BackendReport, listDevices } from "../../ffi/library.ts";
import type { NativeApi } from "../../ffi/util.ts";
import { engineFor, loadEngine } from "./library.ts";
import { connectRpcServers, parseEndpoint } from "./rpc.ts";
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
  /** The driver's description (GPU model, CPU model); an RPC device's is its server's "host:port". */
  description: string;
  /**
   * "cpu", "gpu", "igpu" (integrated) or "accel", as ggml reports it (a software Vulkan device says
   * "gpu"); "rpc" for a device of an RPC server (ggml reports those as GPUs whatever the remote
   * hardware is, and its protocol does not say: so they never count as "gpu").
   */
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

/**
 * Every device of every loaded backend, with memory. With `rpc` ("host:port" each), the devices a
 * model loaded with that `rpc` option would have: this machine's and each server's (type "rpc",
 * the endpoint as description), listed by a short-lived isolated engine.
 */
export async function devices(options: { rpc?: string[] } = {}): Promise<Device[]> {
  if (options.rpc) {
    const what = "Cannot list the devices";
    for (const e of options.rpc) parseEndpoint(e, what);
    const engine = await engineFor(true, what);
    try {
      await connectRpcServers(engine.api, options.rpc, what);
      return displayable(devicesOf(engine.api), "devices");
    } finally {
      await engine.isolated!.close();
    }
  }
  const lib = await loadEngine();
  return displayable(devicesOf(lib.api), "devices"); // a table and a memory plot in a notebook
}

/** The devices of a library: this process's, or an isolated engine's (which may have RPC devices). */
export function devicesOf(api: NativeApi): Device[] {
  return listDevices<Omit<Device, "software">>(api).map((d) => ({
    ...d,
    type: d.backend === "RPC" ? "rpc" : d.type,
    software: SOFTWARE_RENDERER.test(d.description),
  }));
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
export async function assertDeviceAvailable(required: string, among?: Device[]): Promise<void> {
  const devs = among ?? await devices();
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
