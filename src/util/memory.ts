/**
 * Memory checks before memory is taken: a context (the KV cache and compute buffers of a model's
 * own context, a session's, an embedder's) or a projector is estimated per device by the engine
 * before it is created, and refused with a `NOT_ENOUGH_MEMORY` error naming what it needs and
 * what is free when it would not fit (instead of the kernel killing the process halfway through).
 *
 * How the engine estimates (native/memory.cpp): a quick upper bound from the GGUF header first;
 * when that bound is not clearly below the free memory, the model is laid out with llama.cpp's
 * no_alloc mode and the context created on that layout (nothing allocated), as llama.cpp's own
 * `--fit` does; contexts past 2^19 tokens are laid out at 2^17 and 2^18 and extrapolated.
 *
 * Free memory: the host's is what the kernel says it can give without swapping (MemAvailable,
 * bounded by a cgroup limit); a GPU's is what its driver reports. A margin is kept on every
 * device: 5% of its total memory, at least 256 MiB and at most 1 GiB (for what the estimate does
 * not see: the process's own heap, driver scratch memory, other allocations meanwhile).
 *
 * @module
 */
import type { NativeModel } from "../../ffi/model.ts";
import type { NativeProjector } from "../../ffi/vision.ts";
import { LoupeError } from "./errors.ts";

/** One device in a context estimate (bytes). */
export interface DeviceEstimate {
  /** "CPU" for the host, else the device's name ("CUDA0", "Vulkan0"). */
  name: string;
  /** "cpu", "gpu", "igpu" or "accel". */
  type: string;
  /** Free memory (the host's: MemAvailable, bounded by a cgroup limit). */
  free: number;
  /** Total memory. */
  total: number;
  /** Weights on this device. */
  model: number;
  /** KV cache (or recurrent state). */
  context: number;
  /** Compute buffers. */
  compute: number;
  /** Host bookkeeping per KV cell outside the engine's buffers. */
  overhead: number;
}

/** What loupe_model_memory_estimate reports. */
export interface ContextEstimate {
  /** "generation" or "embedding". */
  kind: string;
  /** The context size in tokens (after defaults). */
  nCtx: number;
  /** The batch size in tokens. */
  nBatch: number;
  /**
   * "bound": an upper bound from the header is at most half the smallest free memory (fits; no
   * device figures); "layout": laid out as it is; "extrapolated": laid out at two smaller sizes
   * and extrapolated (a lower bound of what it needs, reported only when that does not fit).
   */
  method: "bound" | "layout" | "extrapolated";
  /** Whether the figures are the layout of the context itself. */
  exact: boolean;
  /** Whether the weights were loaded when it was made (else they count where they will go). */
  weightsLoaded: boolean;
  /** Whether the weights are memory-mapped (host weights then live in the page cache). */
  mmap: boolean;
  /** The upper bound of the quick check, when it was made. */
  bound?: number;
  /** The smallest free memory it was compared with. */
  floor?: number;
  /** Per device; the host first. Empty for "bound". */
  devices: DeviceEstimate[];
  /** Microseconds spent laying the model out (0 when it was already, or not needed). */
  shadowUs: number;
  /** Microseconds spent laying the context out. */
  layoutUs: number;
  /** Microseconds of the whole estimate. */
  wallUs: number;
}

/** What loupe_projector_memory_estimate reports. */
export interface ProjectorEstimate {
  /** The encoder's device. */
  device: string;
  /** Per device: weights and compute buffers together. */
  devices: Array<{ name: string; type: string; free: number; total: number; bytes: number }>;
  /** Microseconds of the estimate. */
  wallUs: number;
}

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** Bytes kept free on a device of `total` bytes: 5% of it, between 256 MiB and 1 GiB. */
export function memoryMargin(total: number): number {
  return Math.min(GiB, Math.max(256 * MiB, 0.05 * total));
}

/** A size for a message: "1.5 GiB", "96 MiB". */
export function formatBytes(bytes: number): string {
  return bytes >= GiB ? `${(bytes / GiB).toFixed(1)} GiB` : `${Math.ceil(bytes / MiB)} MiB`;
}

/** The words on the margin of the devices that fall short. */
function reserve(devices: Array<{ name: string; total: number }>): string {
  return devices.map((d) => `${formatBytes(memoryMargin(d.total))} of ${d.name}'s memory is kept in reserve`)
    .join(", ");
}

/** Whether a device's weights are still to be taken: not loaded yet, and not file pages mapped on the host. */
function weightsCount(e: ContextEstimate, d: DeviceEstimate): boolean {
  return !e.weightsLoaded && !(d.type === "cpu" && e.mmap);
}

/** What a context needs on a device, in bytes. */
export function contextNeed(e: ContextEstimate, d: DeviceEstimate): number {
  return (weightsCount(e, d) ? d.model : 0) + d.context + d.compute + d.overhead;
}

/** The sentence of a NOT_ENOUGH_MEMORY error, or null when everything fits. */
export function contextShortfall(e: ContextEstimate, what: string): string | null {
  if (e.method === "bound") return null;
  const short = e.devices.filter((d) => contextNeed(e, d) > d.free - memoryMargin(d.total));
  if (short.length === 0) return null;
  const parts = short.map((d) => {
    const items = [
      weightsCount(e, d) && d.model > 0 ? `weights ${formatBytes(d.model)}` : "",
      `KV cache ${formatBytes(d.context)}`,
      `compute ${formatBytes(d.compute)}`,
      d.overhead > 0 ? `bookkeeping ${formatBytes(d.overhead)}` : "",
    ].filter((s) => s !== "");
    return `${formatBytes(contextNeed(e, d))} on ${d.name} (${items.join(", ")}) but ${formatBytes(d.free)} is free`;
  });
  const least = e.method === "extrapolated" ? "at least " : "";
  return `${what}: it needs ${least}${parts.join("; and ")} (${reserve(short)})`;
}

/** A promise the owner of a native handle can wait for before freeing it; returns its release. */
export type Adopt = (child: { closeAsync(): Promise<void> }) => () => void;

/**
 * Estimates a context with the engine and throws `NOT_ENOUGH_MEMORY` when it would not fit;
 * returns the estimate, or null when the engine could not make one (the creation itself then
 * reports what is wrong). `params` are those of the context (kind "embedding" for an embedder);
 * `what` opens the error's sentence; `adopt` registers the estimate with a model that may close
 * meanwhile.
 */
export async function checkContextMemory(
  native: NativeModel,
  params: Record<string, unknown>,
  what: (nCtx: number) => string,
  adopt?: Adopt,
): Promise<ContextEstimate | null> {
  const estimating = native.memoryEstimate<ContextEstimate>(params);
  const release = adopt?.({ closeAsync: () => estimating.then(() => {}, () => {}) });
  let e: ContextEstimate;
  try {
    e = await estimating;
  } catch {
    return null;
  } finally {
    release?.();
  }
  const message = contextShortfall(e, what(e.nCtx));
  if (message) throw new LoupeError("NOT_ENOUGH_MEMORY", message);
  return e;
}

/**
 * Estimates a projector (weights and the encoder's compute buffer) and throws
 * `NOT_ENOUGH_MEMORY` when it would not fit; null when no estimate could be made.
 */
export async function checkProjectorMemory(native: NativeProjector, what: string): Promise<ProjectorEstimate | null> {
  let e: ProjectorEstimate;
  try {
    e = await native.memoryEstimate<ProjectorEstimate>();
  } catch {
    return null;
  }
  const short = e.devices.filter((d) => d.bytes > d.free - memoryMargin(d.total));
  if (short.length > 0) {
    const parts = short.map((d) =>
      `${formatBytes(d.bytes)} on ${d.name} (weights and compute) but ${formatBytes(d.free)} is free`
    );
    throw new LoupeError("NOT_ENOUGH_MEMORY", `${what}: it needs ${parts.join("; and ")} (${reserve(short)})`);
  }
  return e;
}
