/**
 * Timelines: per-stage wall time, tokens and the devices that actually ran each stage,
 * counted from the engine's compute graphs. Plain data with a text table form.
 *
 * @module
 */
import { LoupeError, PlacementError } from "../util/errors.ts";
import { oneOf, shown } from "../util/check.ts";
import { DISPLAY, displayOf, type MimeBundle } from "../util/presenter.ts";

/** What ran on one device during a stage. */
export interface DevicePlacement {
  /** Graph nodes whose output lives on this device. */
  nodes: number;
  /** Heavy nodes (matrix multiplications, attention, convolutions). */
  heavy: number;
  /** Node count per ggml op name. */
  ops: Record<string, number>;
  /** The first heavy op seen here, with its tensor name (e.g. "MUL_MAT Qcur-0"). */
  firstHeavy: string | null;
}

/** One stage of a call. */
export interface Stage {
  /** Stage name: "load", "tokenize", "prompt", "generation", "sampling", … */
  name: string;
  /** Start, in milliseconds from the start of the call. */
  startMs: number;
  /** Wall time in milliseconds. */
  wallMs: number;
  /** Tokens processed (prompt tokens, generated tokens, …). */
  tokens: number;
  /** tokens / wall time, or null when not meaningful. */
  tokensPerSecond: number | null;
  /** Compute graphs run. */
  graphs: number;
  /** Measured placement per device name; empty for host-only stages. */
  devices: Record<string, DevicePlacement>;
  /** Set when the stage's time is spread inside another stage's span (sampling within generation). */
  interleavedWith?: string;
  /** Prompt tokens found in a session's KV cache and not evaluated again (sessions only). */
  reused?: number;
}

/** Something that happened during a call, such as a context shift. */
export interface TimelineEvent {
  /** When, in milliseconds from the start of the call. */
  atMs: number;
  /** A sentence saying what happened. */
  what: string;
  /** Machine-readable kind, e.g. "contextShift". */
  kind?: string;
  /** The event's numbers (for a context shift: position, dropped, nPastBefore, nPastAfter, cut). */
  data?: Record<string, unknown>;
}

/** Memory the engine allocated on one device. */
export interface DeviceMemory {
  /** Device name ("CPU", "Vulkan0", "CUDA0"). */
  device: string;
  /** ggml buffer type name. */
  buffer: string;
  /** Bytes of model weights. */
  model: number;
  /** Bytes of context (KV cache). */
  context: number;
  /** Bytes of compute buffers. */
  compute: number;
}

/** A stage record as the engine reports it. */
export interface NativeStage {
  /** Wall time in microseconds. */
  wallUs: number;
  /** Tokens processed. */
  tokens: number;
  /** Graphs computed. */
  graphs: number;
  /** Placement per device. */
  devices: Record<string, DevicePlacement>;
}

/** Appends a stage reported by the engine to `timeline`. */
export function addNativeStage(timeline: Timeline, name: string, s: NativeStage, extra: Partial<Stage> = {}): Stage {
  return timeline.add({
    name,
    wallMs: s.wallUs / 1000,
    tokens: s.tokens,
    graphs: s.graphs,
    devices: s.devices,
    ...extra,
  });
}

/** The measured stages of one call. */
export class Timeline {
  /** What the call was: "load", "generate", "chat", … */
  readonly kind: string;
  /** Stages in order. */
  readonly stages: Stage[] = [];
  /** Memory per device (weights, KV cache, compute buffers), where known. */
  memory: DeviceMemory[] = [];
  /** Wall-clock start of the call. */
  readonly startedAt: Date;
  /** Context shifts and other events: filled by later stages of the API. */
  readonly events: TimelineEvent[] = [];

  /** Creates an empty timeline. */
  constructor(kind: string, startedAt: Date = new Date()) {
    this.kind = kind;
    this.startedAt = startedAt;
  }

  /** Appends a stage; `startMs` defaults to the end of the previous one. */
  add(stage: Omit<Stage, "startMs" | "tokensPerSecond"> & { startMs?: number }): Stage {
    const last = this.stages.filter((s) => !s.interleavedWith).at(-1);
    const startMs = stage.startMs ?? (last ? last.startMs + last.wallMs : 0);
    const full: Stage = {
      ...stage,
      startMs,
      tokensPerSecond: stage.tokens > 0 && stage.wallMs > 0 ? stage.tokens / (stage.wallMs / 1000) : null,
    };
    this.stages.push(full);
    return full;
  }

  /** The stage called `name`, if any. */
  stage(name: string): Stage | undefined {
    return this.stages.find((s) => s.name === name);
  }

  /** Sum of the wall times of the non-interleaved stages, in milliseconds. */
  get totalMs(): number {
    return this.stages.filter((s) => !s.interleavedWith).reduce((a, s) => a + s.wallMs, 0);
  }

  /** Names of the devices that ran heavy ops in a stage (or in any stage). */
  devicesUsed(stageName?: string): string[] {
    const set = new Set<string>();
    for (const s of this.stages) {
      if (stageName && s.name !== stageName) continue;
      for (const [dev, p] of Object.entries(s.devices)) if (p.heavy > 0) set.add(dev);
    }
    return [...set];
  }

  /** Bytes of model weights per device. */
  get weights(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const m of this.memory) if (m.model > 0) out[m.device] = (out[m.device] ?? 0) + m.model;
    return out;
  }

  /** A plain-text table of the stages. */
  toString(): string {
    const rows = [["stage", "start ms", "wall ms", "tokens", "tok/s", "devices (heavy ops / nodes)"]];
    for (const s of this.stages) {
      const devs = Object.entries(s.devices)
        .map(([d, p]) => `${d} ${p.heavy}/${p.nodes}`)
        .join(", ") || "host";
      rows.push([
        s.name + (s.interleavedWith ? ` (in ${s.interleavedWith})` : "") + (s.reused ? ` (+${s.reused} reused)` : ""),
        s.startMs.toFixed(1),
        s.wallMs.toFixed(2),
        String(s.tokens),
        s.tokensPerSecond === null ? "" : s.tokensPerSecond.toFixed(1),
        devs,
      ]);
    }
    const widths = rows[0].map((_, i) => rows.reduce((w, r) => Math.max(w, r[i].length), 0));
    const lines = rows.map((r) =>
      r.map((c, i) => (i === 0 || i === 5 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ")
    );
    lines.splice(1, 0, widths.map((w) => "-".repeat(w)).join("  "));
    let out = `${this.kind} timeline, ${this.totalMs.toFixed(1)} ms\n${lines.join("\n")}`;
    const weights = Object.entries(this.weights);
    if (weights.length) {
      out += `\nweights: ${weights.map(([d, b]) => `${d} ${(b / 2 ** 20).toFixed(1)} MiB`).join(", ")}`;
    }
    for (const e of this.events) out += `\nevent at ${e.atMs.toFixed(1)} ms: ${e.what}`;
    return out;
  }

  /** Rich display in a notebook: the stage table and a waterfall plot coloured by device (src/notebook/). */
  [DISPLAY](): Promise<MimeBundle> {
    return displayOf(this);
  }

  /** Plain data for JSON. */
  toJSON(): Record<string, unknown> {
    return {
      kind: this.kind,
      startedAt: this.startedAt.toISOString(),
      totalMs: this.totalMs,
      stages: this.stages,
      memory: this.memory,
      events: this.events,
    };
  }
}

/** A device as {@linkcode checkPlacement} needs to know it. */
export interface PlacementDevice {
  /** Device name. */
  name: string;
  /** "cpu", "gpu", "igpu", "accel" or "rpc". */
  type: string;
  /** A GPU API implemented on the CPU (Mesa's lavapipe/llvmpipe, SwiftShader). */
  software?: boolean;
  /** The driver's description; an RPC device's server, "host:port". */
  description?: string;
}

/**
 * Whether a device satisfies a `requireDevice` value: "gpu" (not a software renderer, not an RPC
 * device), "cpu", "rpc" (any RPC server's device), an RPC server's "host:port", or a device name.
 */
export function deviceMatches(required: string, device: string, devices: PlacementDevice[]): boolean {
  const want = required.toLowerCase();
  const info = devices.find((d) => d.name.toLowerCase() === device.toLowerCase());
  // A software renderer reports itself as a GPU but runs on the CPU: it is not "gpu".
  if (want === "gpu") return info !== undefined && (info.type === "gpu" || info.type === "igpu") && !info.software;
  if (want === "cpu") return device.toLowerCase() === "cpu";
  // "rpc": any RPC server's device; "host:port": that server's devices (their description)
  if (want === "rpc") return info?.type === "rpc";
  if (info?.type === "rpc" && info.description?.toLowerCase() === want) return true;
  return device.toLowerCase() === want;
}

/**
 * Checks a call's `requireDevice` before the call runs: "gpu", "cpu" (any case) or the name of
 * one of this engine's `devices`. Anything else is an INVALID_ARGUMENT error starting with `what`
 * that lists the accepted values, not a placement error saying the call ran on the wrong device.
 */
export function checkRequirement(required: unknown, devices: PlacementDevice[], what: string): void {
  if (required === undefined) return;
  if (typeof required === "string") {
    const want = required.toLowerCase();
    if (want === "gpu" || want === "cpu" || devices.some((d) => d.name.toLowerCase() === want)) return;
    const rpc = devices.filter((d) => d.type === "rpc");
    if (rpc.length && (want === "rpc" || rpc.some((d) => d.description?.toLowerCase() === want))) return;
  }
  const rpc = devices.filter((d) => d.type === "rpc");
  const accepted = [
    ...new Set([
      "gpu",
      "cpu",
      ...(rpc.length ? ["rpc"] : []),
      ...devices.map((d) => d.name),
      ...rpc.map((d) => d.description!),
    ]),
  ];
  throw new LoupeError(
    "INVALID_ARGUMENT",
    `${what}: requireDevice must be ${oneOf(accepted)}, not ${shown(required)}`,
  );
}

/**
 * Throws a {@linkcode PlacementError} naming the first stage, op and device whose heavy work
 * ran outside `required`.
 */
export function checkPlacement(timeline: Timeline, required: string | undefined, devices: PlacementDevice[]): void {
  if (!required) return;
  for (const s of timeline.stages) {
    for (const [dev, p] of Object.entries(s.devices)) {
      if (p.heavy > 0 && !deviceMatches(required, dev, devices)) {
        const software = devices.find((d) => d.name === dev)?.software;
        throw new PlacementError(
          s.name,
          p.firstHeavy ?? "a heavy op",
          dev,
          required,
          software ? "a software renderer running on the CPU" : undefined,
        );
      }
    }
  }
}
