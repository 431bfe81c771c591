/**
 * Vision probes: before the image path is trusted to a Vulkan device, a small image chat runs
 * in a child process (`deno run -A src/vision_probe_child.ts <config>`) with the same engine, the
 * same placement of the language model and the encoder on the candidate device, using the tiny
 * fixtures. A driver that crashes (Mesa 22.3's lavapipe segfaults inside itself on this path)
 * then ends the child, not the notebook kernel or script. The verdict is remembered per device,
 * driver version, engine and model placement in `<cache>/vision-probes.json` (or the file named
 * by `LOUPE_VISION_PROBES`).
 *
 * @module
 */
import { join } from "node:path";
import { loadEngine } from "../engine/library.ts";
import { vulkanDrivers } from "../../ffi/vision.ts";
import { cacheDir } from "../../native/build/engine.ts";
import { LLAMA_CPP_COMMIT } from "../../native/build/pins.ts";
import type { Device } from "../engine/engine.ts";
import { runDenoChild } from "../util/child.ts";
import { LoupeError } from "../util/errors.ts";
import { checkOptions, type FieldRule, isObject, ruleProblem, shown } from "../util/check.ts";

/** Prefix of the child's one result line on stdout. */
export const PROBE_RESULT_PREFIX = "LOUPE_VISION_PROBE ";

/** What a probe tries: the encoder's device with the language model placed as the user's. */
export interface ProbeConfig {
  /** The encoder's candidate device ("CPU" or a name like "Vulkan0"). */
  device: string;
  /** Non-CPU devices holding the language model's weights ([] when it is on the CPU). */
  modelDevices: string[];
  /** The model's flash attention setting. */
  flashAttn: "auto" | "on" | "off";
}

/** A probe's outcome. */
export interface ProbeVerdict {
  /** Whether the image path ran to the end in the child. */
  ok: boolean;
  /** A sentence: what happened ("a vision probe crashed with SIGSEGV …"). */
  reason: string;
  /** The cache key: device, driver, engine, model placement. */
  key: string;
  /** When the probe ran (ISO time). */
  checkedAt: string;
  /** Whether the verdict came from the cache. */
  fromCache: boolean;
  /** The child's wall time in milliseconds (0 from the cache). */
  wallMs: number;
  /** The end of the child's stderr when it failed. */
  stderrTail?: string;
  /** Devices of the child's "image encode" and "image decode" stages when it succeeded. */
  placement?: Record<string, string[]>;
}

/** Options of {@linkcode probeVisionDevice}. */
export interface ProbeOptions {
  /** The verdict file (default `LOUPE_VISION_PROBES`, else `<cache>/vision-probes.json`). */
  cacheFile?: string;
  /** Run the probe even when a verdict is remembered. */
  force?: boolean;
  /** Kill the child after this many milliseconds (default 180 000): a hang is a failed probe. */
  timeoutMs?: number;
  /** The module the child runs (default src/vision_probe_child.ts); tests pass one that crashes on purpose. */
  module?: string;
}

/** What a probe's config holds (all required). */
const PROBE_CONFIG_RULES: Record<string, FieldRule> = {
  device: "nonEmptyString",
  modelDevices: (v) => Array.isArray(v) && v.every((d) => typeof d === "string") ? null : "an array of device names",
  flashAttn: ["auto", "on", "off"],
};

/** What a probe's options may hold. */
const PROBE_RULES: Record<string, FieldRule> = {
  cacheFile: "nonEmptyString",
  force: "boolean",
  timeoutMs: "positiveInteger",
  module: "nonEmptyString",
};

/** Whether the image path of `device` with the model on `modelDevices` touches a Vulkan device. */
export function visionProbeInvolves(device: string, modelDevices: string[], devs: Device[]): boolean {
  const vulkan = (name: string) => devs.some((d) => d.name === name && /vulkan/i.test(d.backend));
  return vulkan(device) || modelDevices.some(vulkan);
}

/** The verdict file. */
export function probeCacheFile(): string {
  return Deno.env.get("LOUPE_VISION_PROBES") ?? join(cacheDir(), "vision-probes.json");
}

async function readVerdicts(file: string): Promise<Record<string, ProbeVerdict>> {
  try {
    const v = JSON.parse(await Deno.readTextFile(file));
    return v && typeof v === "object" ? v : {};
  } catch {
    return {};
  }
}

async function writeVerdict(file: string, verdict: ProbeVerdict): Promise<void> {
  const all = await readVerdicts(file);
  all[verdict.key] = { ...verdict, fromCache: false };
  const tmp = `${file}.tmp-${Deno.pid}`;
  await Deno.mkdir(join(file, ".."), { recursive: true });
  await Deno.writeTextFile(tmp, JSON.stringify(all, null, 2) + "\n");
  await Deno.rename(tmp, file);
}

/** The names of the Vulkan drivers behind a set of ggml devices ("Mesa 22.3.6 (LLVM 15.0.6)", …). */
async function driverOf(names: string[]): Promise<Record<string, string>> {
  const lib = await loadEngine();
  const devs = await import("../engine/engine.ts").then((m) => m.devices());
  const drivers = vulkanDrivers(lib.api);
  const out: Record<string, string> = {};
  for (const name of names) {
    const d = devs.find((x) => x.name === name);
    if (!d) continue;
    const drv = drivers.find((x) => x.name === d.description);
    out[name] = `${d.description}; ${drv ? drv.driverInfo ?? `driver ${drv.driverVersion}` : "driver unknown"}`;
  }
  return out;
}

function tail(text: string, lines = 12, chars = 1500): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "").trimEnd().split("\n").slice(-lines).join("\n").slice(-chars);
}

/**
 * Probes the image path for `config` in a child process, or returns the remembered verdict.
 * The child loads the tiny text and projector fixtures with the same placement, and runs one
 * image chat of two tokens.
 */
export async function probeVisionDevice(config: ProbeConfig, given?: ProbeOptions): Promise<ProbeVerdict> {
  const what = "Cannot probe the vision device";
  if (!isObject(config)) {
    throw new LoupeError("INVALID_ARGUMENT", `${what}: the config must be an object, not ${shown(config)}`);
  }
  for (const [name, rule] of Object.entries(PROBE_CONFIG_RULES)) {
    const problem = ruleProblem(config[name], rule); // every field is required
    if (problem) throw new LoupeError("INVALID_ARGUMENT", `${what}: config.${name} ${problem}`);
  }
  const options = checkOptions(given, PROBE_RULES, what);
  const lib = await loadEngine();
  const drivers = await driverOf([config.device, ...config.modelDevices]);
  const key = JSON.stringify({
    device: config.device,
    model: config.modelDevices,
    flashAttn: config.flashAttn,
    drivers,
    engine: lib.build.variant,
    llama: LLAMA_CPP_COMMIT.slice(0, 12),
  });
  const file = options.cacheFile ?? probeCacheFile();
  if (!options.force) {
    const known = (await readVerdicts(file))[key];
    if (known) return { ...known, fromCache: true, wallMs: 0 };
  }
  const env: Record<string, string> = { ...Deno.env.toObject(), LOUPE_VISION_PROBE_CHILD: "1", NO_COLOR: "1" };
  if (!env.LOUPE_LIB) env.LOUPE_ENGINE = lib.build.variant;
  const timeoutMs = options.timeoutMs ?? 180_000;
  const module = options.module ?? new URL("../children/vision_probe.ts", import.meta.url).pathname;
  const { out, stdout, stderr: rawStderr, timedOut, wallMs } = await runDenoChild([module, JSON.stringify(config)], {
    env,
    timeoutMs,
  });
  const stderr = tail(rawStderr);
  const line = stdout.split("\n").findLast((l) => l.startsWith(PROBE_RESULT_PREFIX));
  const where = `${config.device === "CPU" ? "the CPU" : config.device}${
    config.modelDevices.length ? ` with the model on ${config.modelDevices.join(", ")}` : ""
  }`;
  const driver = Object.values(drivers).filter((d) => !d.includes("driver unknown")).join(", ");
  const on = driver ? ` (${driver})` : "";
  let verdict: Omit<ProbeVerdict, "key" | "checkedAt" | "fromCache" | "wallMs">;
  if (timedOut) {
    verdict = { ok: false, reason: `a vision probe on ${where}${on} hung and was killed after ${timeoutMs / 1000} s` };
  } else if (out.signal) {
    verdict = {
      ok: false,
      reason: `a vision probe on ${where}${on} crashed its child process with ${out.signal}`,
      stderrTail: stderr,
    };
  } else if (out.code !== 0 || line === undefined) {
    verdict = {
      ok: false,
      reason: `a vision probe on ${where}${on} failed (exit code ${out.code}): ${stderr.split("\n").at(-1) ?? ""}`,
      stderrTail: stderr,
    };
  } else {
    const r = JSON.parse(line.slice(PROBE_RESULT_PREFIX.length));
    verdict = { ok: true, reason: `a vision probe on ${where}${on} ran to the end`, placement: r.placement };
  }
  const full: ProbeVerdict = { ...verdict, key, checkedAt: new Date().toISOString(), fromCache: false, wallMs };
  // a killed probe (a hang) is not remembered: the machine may just have been busy
  if (!timedOut) await writeVerdict(file, full);
  return full;
}
