/**
 * Vision: LLaVA-style image chat through a multimodal projector (an "mmproj" GGUF: a CLIP image
 * encoder and the projection into the language model's embeddings), run by llama.cpp's mtmd.
 *
 * The encoder's device is measured like the language model's: mtmd's graph scheduler reports
 * every node of the CLIP graph, so the timeline of a vision call shows where the image encode
 * ran, and `requireDevice` (on the projector or on the call) fails with a `PlacementError` when
 * its heavy ops ran anywhere else — the silent CPU fallback of the encoder that made one LLaVA
 * request take ~92 s on an RTX 3090.
 *
 * Vulkan devices are probed for vision in a child process before the image path is trusted to
 * them (a driver that crashes must not take a notebook kernel with it); see
 * {@linkcode probeVisionDevice}.
 *
 * @example
 * ```ts
 * await using model = await loadModel("llava.gguf", { gpuLayers: "auto" });
 * await model.loadProjector("mmproj.gguf", { requireDevice: "gpu" });
 * const r = await model.chat([{ role: "user", content: [{ image: "cat.jpg" }, "What is in this picture?"] }]);
 * console.log(r.text, r.timeline.toString());
 * ```
 *
 * @module
 */
import { checkLoadOptions } from "../engine/load_options.ts";
import { type GenerateOptions, generateOptions, samplingParams } from "../generate/options.ts";
import { Resource } from "../util/resource.ts";
import { NativeImage, NativeImageError, NativeProjector } from "../../ffi/vision.ts";
import { NativeError } from "../../ffi/util.ts";
import { LoupeError, type LoupeErrorCode } from "../util/errors.ts";
import { checkProjectorMemory } from "../util/memory.ts";
import { wrap } from "../util/native_error.ts";
import { statFile } from "../util/files.ts";
import { checkString } from "../util/check.ts";
import { assertDeviceAvailable, type Device } from "../engine/engine.ts";
import { GGUFFormatError, readGGUFFile } from "../gguf/gguf.ts";
import { checkProjector } from "../gguf/rules/projector.ts";
import { addDownloadStage, fetchForLoad } from "../hub/resolve.ts";
import type { Model } from "../model/model.ts";
import { internalsOf, type ModelInternals } from "../generate/internals.ts";
import type { ChatMessage, GenerateResult, StopReason } from "../generate/result.ts";
import {
  addGenerationStages,
  COLLECT_STEP,
  runSteps,
  type Step,
  type StepOutput,
  STREAM_STEP,
} from "../generate/step.ts";
import type { NativeContext } from "../../ffi/model.ts";
import {
  addNativeStage,
  checkPlacement,
  checkRequirement,
  deviceMatches,
  type DevicePlacement,
  type NativeStage,
  type Stage,
  Timeline,
} from "../timeline/timeline.ts";
import { DISPLAY, displayable, displayOf, type MimeBundle, VIEW_KIND } from "../util/presenter.ts";
import { watchLoad } from "../util/load_watch.ts";
import {
  type ProbeConfig,
  type ProbeOptions,
  type ProbeVerdict,
  probeVisionDevice,
  visionProbeInvolves,
} from "./probe.ts";

export { type ProbeConfig, type ProbeOptions, type ProbeVerdict, probeVisionDevice };

/** Raw RGB pixels: 3 bytes per pixel, rows top to bottom. */
export interface RawImage {
  /** `width * height * 3` bytes. */
  data: Uint8Array;
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
}

/** An image: a file path, the bytes of an encoded file (JPEG, PNG, BMP, GIF) or raw RGB pixels. */
export type ImageInput = string | Uint8Array | RawImage;

/** An image in a message. */
export interface ImagePart {
  /** The image. */
  image: ImageInput;
}

/** An audio clip: a file path or the bytes of a WAV, MP3 or FLAC file. */
export type AudioInput = string | Uint8Array;

/** An audio clip in a message (for a projector with an audio encoder). */
export interface AudioPart {
  /** The clip. */
  audio: AudioInput;
}

/** A piece of a message: text, `{ text }`, `{ image }` or `{ audio }`. */
export type ContentPart = string | { text: string } | ImagePart | AudioPart;

/** A chat message whose content may hold images. */
export interface VisionMessage {
  /** "system", "user" or "assistant". */
  role: string;
  /** Text, or text and images in order. */
  content: string | ContentPart[];
}

/** Options of `Model.loadProjector`. */
export interface ProjectorOptions {
  /**
   * Require the image encoder's heavy ops on this device ("gpu", "cpu" or a name like "CUDA0"):
   * checked at the warm-up and on every call; a `PlacementError` otherwise. Defaults to the
   * model's `requireDevice`.
   */
  requireDevice?: string;
  /** The device for the encoder, e.g. "Vulkan0"; default: the model's GPU, else the first GPU. */
  device?: string;
  /** `false` keeps the encoder on the CPU on purpose (default true: a GPU when there is one). */
  gpu?: boolean;
  /** CPU threads of the encoder; default: the model's. */
  threads?: number;
  /** Flash attention in the encoder; default: the model's setting ("auto"). */
  flashAttn?: "auto" | "on" | "off";
  /** Encode one blank image at load, measuring where the encoder runs (default true). */
  warmup?: boolean;
  /** Count graph nodes per device (default true). */
  measure?: boolean;
  /**
   * Probe Vulkan devices for vision in a child process before using them (default true; the
   * verdict is remembered per device, driver version and model placement). An object sets the
   * probe's options (verdict file, timeout, the child's module).
   */
  probe?: boolean | ProbeOptions;
  /** Called with the load fraction in [0, 1]. */
  onProgress?: (fraction: number) => void;
  /** Show a progress bar while loading: default only in a notebook; true also shows one line on a terminal. */
  progress?: boolean;
  /** Cancels the load. */
  signal?: AbortSignal;
}

/** What the engine says about a loaded projector. */
export interface ProjectorInfo {
  /** mtmd's projector type, e.g. "mlp" (LLaVA 1.5). */
  projectorType: string;
  /** The device the encoder was given ("CPU" when none). */
  device: string;
  /** Whether a GPU was allowed. */
  gpu: boolean;
  /** The media marker of prompts ("<__media__>"). */
  marker: string;
  /** Width of the image embeddings (= the model's). */
  nEmbd: number;
  /** Side of the encoder's input image in pixels. */
  imageSize: number;
  /** Side of a patch in pixels. */
  patchSize: number;
  /** Whether it encodes images. */
  vision: boolean;
  /** Whether it encodes audio. */
  audio: boolean;
  /** The sample rate audio is decoded at (Hz; 0 without an audio encoder). */
  audioSampleRate: number;
  /**
   * Whether the language model places an image's tokens by M-RoPE (Qwen2-VL and its kin): by
   * time, row and column, at fewer positions than tokens. loupe then decodes text at explicit
   * positions after each image, and a context shift is not possible (a full context stops with
   * `contextFull`).
   */
  mrope: boolean;
  /** Whether an image's tokens attend to each other both ways (Gemma 3 and others). */
  nonCausal: boolean;
  /** Whether the engine splits a large image into tiles (several chunks) plus an overview. */
  tiles: boolean;
  /** CPU threads of the encoder. */
  threads: number;
  /** Load time in microseconds. */
  loadUs: number;
}

/** The result of a chat with images or audio. */
export interface VisionResult extends GenerateResult {
  /** Image tokens in the prompt (all images and tiles): the cells of the KV cache they fill. */
  imageTokens: number;
  /** Audio tokens in the prompt (all clips). */
  audioTokens: number;
  /** Positions the prompt takes: fewer than its tokens under M-RoPE (see `ProjectorInfo.mrope`). */
  positions: number;
  /** The images as decoded (before the encoder's resize). */
  images: Array<{ width: number; height: number }>;
  /** Devices skipped for the image path, mixed placements: plain sentences (also timeline events). */
  warnings: string[];
}

interface NativeProjectorInfo extends ProjectorInfo {
  stages: Record<string, NativeStage>;
}

/** What a prefill did (native/loupe_vision.h). */
export interface PrefillOutput {
  /** Cells of the KV cache in use. */
  nPast: number;
  /** The next position. */
  nPos: number;
  /** Cells kept from the cache (a session). */
  reused: number;
  /** The prompt's text tokens. */
  textTokens: number[];
  /** Image tokens (cells). */
  imageTokens: number;
  /** Audio tokens (cells). */
  audioTokens: number;
  /** Positions the prompt takes. */
  positions: number;
  /** The prompt's chunks. */
  chunks: Array<{ type: "text" | "image" | "audio"; tokens: number; positions?: number }>;
  /** The media as decoded. */
  images: Array<{ width: number; height: number }>;
  /** Stage counters. */
  stages: Record<string, NativeStage>;
}

/** The projector of each model (one at a time). */
const projectors = new WeakMap<Model, Projector>();

const finalizer = new FinalizationRegistry<NativeProjector>((native) => native.free());

/** What the projector constructor takes (module-private: use `Model.loadProjector`). */
interface ProjectorInit {
  path: string;
  native: NativeProjector;
  info: ProjectorInfo;
  loadTimeline: Timeline;
  warnings: string[];
  requireDevice: string | undefined;
}

let createProjector: (init: ProjectorInit) => Projector;
/** The native handle of an open projector; throws CLOSED once closed. */
let nativeOf: (projector: Projector) => NativeProjector;
/** Runs `run` as the projector's current call: close() frees the handle only after it. */
let trackOn: <T>(projector: Projector, run: Promise<T>) => Promise<T>;
/** Runs `fn` in the projector's turn (one prompt at a time); throws CLOSED once it is closed. */
let exclusive: <T>(projector: Projector, fn: () => Promise<T>) => Promise<T>;
/** Marks `ctx` as running a call with the projector (its close() aborts it); returns the unmark. */
let runningOn: (projector: Projector, ctx: NativeContext) => () => void;

/** A loaded projector. Owned by its model (closed with it); `close()` it to load another. */
export class Projector extends Resource {
  /** The file it came from. */
  readonly path: string;
  /** The engine's description of it. */
  readonly info: ProjectorInfo;
  /** The load's timeline: "projector load" and the measured "projector warm-up". */
  readonly loadTimeline: Timeline;
  /** Devices skipped for the image path at load and why, and a mixed warm-up placement (also events of the load timeline). */
  readonly warnings: string[];
  /** The encoder's device requirement (the projector's own, else the model's). */
  readonly requireDevice: string | undefined;
  #native: NativeProjector;
  #unadopt: () => void = () => {};
  /** Prompts in turn: a prefill and its generation's start (the model's calls, and sessions beside them). */
  #turn: Promise<unknown> = Promise.resolve();
  /** The contexts of the calls running with it: close() aborts them. */
  #running = new Set<NativeContext>();

  static {
    createProjector = (init) => new Projector(init);
    nativeOf = (p) => {
      p.assertOpen();
      return p.#native;
    };
    trackOn = (p, run) => p.track(run);
    exclusive = (p, fn) => {
      p.assertOpen();
      const run = p.#turn.then(fn);
      p.#turn = run.catch(() => {});
      return run;
    };
    runningOn = (p, ctx) => {
      p.#running.add(ctx);
      return () => p.#running.delete(ctx);
    };
  }

  private constructor(init: ProjectorInit) {
    super();
    this.path = init.path;
    this.#native = init.native;
    this.info = init.info;
    this.loadTimeline = init.loadTimeline;
    this.warnings = init.warnings;
    this.requireDevice = init.requireDevice;
    finalizer.register(this, init.native, this);
  }

  /** Its view's name: facts, skipped devices and the load timeline (src/notebook/). */
  get [VIEW_KIND](): string {
    return "projector";
  }

  /** Rich display in a notebook: the view as a table and the load waterfall. */
  [DISPLAY](): Promise<MimeBundle> {
    return displayOf(this);
  }

  /** Called by the model when it adopts the projector (close order). */
  setRelease(unadopt: () => void): void {
    this.#unadopt = unadopt;
  }

  /** The sentence of a CLOSED error. */
  protected closedMessage(): string {
    return `Cannot use projector "${this.path}": it is closed`;
  }

  /** Aborts the calls running with it and frees the encoder once they have returned; the model then has no projector. */
  protected closing(queue: Promise<unknown>): Promise<unknown> {
    finalizer.unregister(this);
    for (const ctx of this.#running) ctx.genAbort();
    this.#unadopt();
    const native = this.#native;
    return queue.then(() => native.free());
  }
}

/** Whether any message holds an array of parts (a chat for {@linkcode visionChat}). */
export function hasParts(messages: ReadonlyArray<ChatMessage | VisionMessage>): boolean {
  return Array.isArray(messages) && messages.some((m) => Array.isArray(m?.content));
}

const CODE_OF_IMAGE_ERROR: Record<string, LoupeErrorCode> = {
  format: "BAD_FORMAT",
  corrupt: "BAD_FORMAT",
  size: "INVALID_ARGUMENT",
  file: "NOT_FOUND",
  unsupported: "INVALID_ARGUMENT",
  state: "CLOSED",
  invalid: "INVALID_ARGUMENT",
};

/** Checks a projector file before the engine sees it. */
async function validateProjectorFile(path: string, nEmbd: number): Promise<void> {
  const what = `Cannot load projector "${path}"`;
  await statFile(path, what);
  let file;
  try {
    file = await readGGUFFile(path);
  } catch (e) {
    const msg = (e as Error).message;
    throw new LoupeError(
      "BAD_FORMAT",
      `${what}: ${e instanceof GGUFFormatError ? msg[0].toLowerCase() + msg.slice(1) : msg}`,
      {
        cause: e,
      },
    );
  }
  const str = (key: string) => {
    const v = file.kv.get(key);
    return v?.type === 8 ? v.value : undefined;
  };
  const arch = str("general.architecture") ?? "";
  if (arch !== "clip") {
    throw new LoupeError(
      "WRONG_KIND",
      `${what}: it is ${arch ? `a model of architecture "${arch}"` : "a GGUF file without an architecture"}, ` +
        `not a multimodal projector (clip); load language models with loadModel`,
    );
  }
  const flag = (key: string) => {
    const v = file.kv.get(key);
    return v?.type === 7 && v.value === true;
  };
  if (!flag("clip.has_vision_encoder") && !flag("clip.has_audio_encoder")) {
    throw new LoupeError(
      "WRONG_KIND",
      `${what}: it has neither a vision nor an audio encoder (clip.has_vision_encoder and clip.has_audio_encoder are not true)`,
    );
  }
  // the header rules of src/gguf/rules/projector.ts: values and tensors the engine would abort on
  try {
    checkProjector(file);
  } catch (e) {
    if (!(e instanceof GGUFFormatError)) throw e;
    throw new LoupeError("BAD_FORMAT", `${what}: ${e.message[0].toLowerCase()}${e.message.slice(1)}`, { cause: e });
  }
  const type = str("clip.projector_type") ?? str("clip.vision.projector_type") ?? "";
  if (type === "mlp") {
    // mtmd dereferences these without checking: a file without them would crash the engine
    const tensors = new Map(file.tensors.map((t) => [t.name, t]));
    for (const name of ["v.patch_embd.weight", "v.position_embd.weight", "mm.0.weight", "mm.2.weight"]) {
      if (!tensors.has(name)) {
        throw new LoupeError("BAD_FORMAT", `${what}: the mlp projector has no tensor "${name}"`);
      }
    }
    const out = Number(tensors.get("mm.2.weight")!.dims[1]);
    if (out !== nEmbd) {
      throw new LoupeError(
        "WRONG_MODEL",
        `${what}: its image embeddings are ${out} wide but the model's embeddings are ${nEmbd}: ` +
          `this projector belongs to another model`,
      );
    }
  }
}

/** Non-CPU devices holding the model's weights. */
function modelDevices(model: Model): string[] {
  return [...new Set(model.info.memory.filter((m) => m.model > 0 && m.device !== "CPU").map((m) => m.device))];
}

/**
 * The encoder's device candidates, best first, the CPU last: `gpu: false` → the CPU; `device`
 * → it, then the CPU; else the GPU holding the model's weights (the first GPU when the model is
 * on the CPU), then the other GPUs. Each is probed in turn where its driver needs it.
 */
export function projectorDeviceCandidates(
  options: Pick<ProjectorOptions, "gpu" | "device">,
  lmDevices: string[],
  devs: Pick<Device, "name" | "type">[],
): string[] {
  if (options.gpu === false) return ["CPU"];
  const gpus = devs.filter((d) => d.type === "gpu" || d.type === "igpu").map((d) => d.name);
  const first = options.device ?? lmDevices[0] ?? gpus[0];
  if (!first || first === "CPU") return ["CPU"];
  // an explicit device falls back to the CPU only; the default tries the other GPUs too
  const rest = options.device ? [] : gpus.filter((g) => g !== first);
  return [first, ...rest, "CPU"];
}

function describeDevice(name: string, devs: Device[]): string {
  const d = devs.find((x) => x.name === name);
  return d && d.name !== "CPU" ? `${name} (${d.description})` : name;
}

/** "Vulkan0 ran 85 of 120 nodes; CPU ran SOFT_MAX ×12, CONT ×24" when a stage ran on several devices. */
export function mixedPlacement(stage: Pick<Stage, "name" | "devices">): string | null {
  const entries = Object.entries(stage.devices);
  if (entries.length < 2) return null;
  const [main] = entries.reduce((
    a,
    b,
  ) => (b[1].heavy > a[1].heavy || (b[1].heavy === a[1].heavy && b[1].nodes > a[1].nodes) ? b : a));
  const total = entries.reduce((n, [, p]) => n + p.nodes, 0);
  const others = entries.filter(([d]) => d !== main).map(([d, p]: [string, DevicePlacement]) =>
    `${d} ran ${Object.entries(p.ops).map(([op, n]) => `${op} ×${n}`).join(", ")}`
  );
  return `${stage.name}: mixed placement: ${main} ran ${stage.devices[main].nodes} of ${total} nodes; ${
    others.join("; ")
  }` +
    ` (ops the ${main} backend does not support run on another device)`;
}

/**
 * Loads a projector for `model` (use `Model.loadProjector`). Checks the file (a language model,
 * a non-vision file or a projector of another width is a typed error), picks and probes the
 * encoder's device, estimates what it takes there (weights and the compute buffer for the
 * largest image: `NOT_ENOUGH_MEMORY` when that is not free), loads it on a worker thread, encodes
 * one blank image measuring where the encoder runs, and enforces `requireDevice`. Replaces the
 * model's previous projector.
 */
export async function loadProjector(model: Model, name: string, given?: ProjectorOptions): Promise<Projector> {
  internalsOf(model); // CLOSED first
  checkString(name, "the path or name", "Cannot load projector");
  const options = checkLoadOptions(given, `Cannot load projector "${name}"`);
  const fetched = await fetchForLoad(name, options);
  const path = fetched?.path ?? name;
  const what = `Cannot load projector "${path}"`;
  const internals = internalsOf(model);
  if (internals.options.vocabOnly) {
    throw new LoupeError("INVALID_ARGUMENT", `${what}: the model was loaded with vocabOnly`);
  }
  await validateProjectorFile(path, model.info.nEmbd);
  const required = options.requireDevice ?? internals.options.requireDevice;
  if (options.requireDevice) await assertDeviceAvailable(options.requireDevice);
  if (options.device) await assertDeviceAvailable(options.device);
  const devs = internals.devices;
  const lmDevices = modelDevices(model);
  const flashAttn = options.flashAttn ?? internals.options.flashAttn ?? "auto";
  const timeline = new Timeline("projector");
  if (fetched) addDownloadStage(timeline, fetched);
  const t0 = performance.now();

  // the encoder's device: the first candidate whose image path does not crash its driver
  const warnings: string[] = [];
  let device: string | undefined;
  for (const cand of projectorDeviceCandidates(options, lmDevices, devs)) {
    if (options.probe === false || !visionProbeInvolves(cand, lmDevices, devs)) {
      device = cand;
      break;
    }
    const probeOptions = typeof options.probe === "object" ? options.probe : {};
    const verdict = await probeVisionDevice({ device: cand, modelDevices: lmDevices, flashAttn }, probeOptions);
    if (verdict.ok) {
      device = cand;
      break;
    }
    const where = cand === "CPU" ? `the CPU (with the model on ${lmDevices.join(", ")})` : describeDevice(cand, devs);
    warnings.push(
      `${where} was skipped for images: ${verdict.reason}${verdict.fromCache ? " (remembered verdict)" : ""}`,
    );
  }
  const skipped = warnings.join("; ");
  if (device === undefined) {
    throw new LoupeError(
      "BACKEND_UNAVAILABLE",
      `${what}: no device can run images with this model: ${skipped}; load the model with gpuLayers: 0 ` +
        `(or another device) to use images`,
    );
  }
  if (warnings.length && required && !deviceMatches(required, device, devs)) {
    throw new LoupeError(
      "BACKEND_UNAVAILABLE",
      `${what}: requireDevice is "${required}" but the image encoder would run on ${device}: ${skipped}`,
    );
  }
  for (const w of warnings) console.warn(`loupe: ${w}`);

  const native = new NativeProjector(internals.native, {
    path,
    gpu: device !== "CPU",
    device: device === "CPU" ? null : device,
    threads: options.threads ?? internals.options.threads ?? navigator.hardwareConcurrency,
    flashAttn,
    measure: options.measure ?? true,
  });
  const onAbort = () => native.cancel();
  if (options.signal?.aborted) native.cancel();
  options.signal?.addEventListener("abort", onAbort);
  const watch = watchLoad(path, () => native.progress(), options, what, () => native.cancel());
  let info: NativeProjectorInfo;
  try {
    // weights and the encoder's compute buffer, estimated before anything is taken (src/util/memory.ts)
    await internals.serial(() => checkProjectorMemory(native, what));
    await internals.serial(() => native.load());
    await watch.done();
    timeline.add({ name: "projector load", wallMs: performance.now() - t0, tokens: 0, graphs: 0, devices: {} });
    if (options.warmup ?? true) await internals.serial(() => native.warmup());
    info = native.info<NativeProjectorInfo>();
  } catch (e) {
    native.free();
    if (watch.error) throw watch.error;
    const err = wrap(e, what);
    await watch.fail(err.message);
    if (err.code === "ABORTED" || err.code === "NOT_ENOUGH_MEMORY") throw err;
    const code = /mismatch between text model/.test(err.message) ? "WRONG_MODEL" : "LOAD_FAILED";
    throw new LoupeError(code, err.message, { nativeMessage: err.nativeMessage, cause: e });
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
  const warm = info.stages["projector warm-up"];
  if (warm) addNativeStage(timeline, "projector warm-up", warm);
  for (const w of warnings) timeline.events.push({ atMs: 0, what: w, kind: "deviceSkipped" });
  const mixed = timeline.stage("projector warm-up") && mixedPlacement(timeline.stage("projector warm-up")!);
  if (mixed) {
    timeline.events.push({ atMs: timeline.stage("projector load")!.wallMs, what: mixed, kind: "mixedPlacement" });
    warnings.push(mixed);
    console.warn(`loupe: ${mixed}`);
  }
  try {
    checkPlacement(timeline, required, devs);
  } catch (e) {
    native.free();
    throw e;
  }
  const { stages: _, ...rest } = info;
  const projector = createProjector({
    path,
    native,
    info: rest,
    loadTimeline: timeline,
    warnings,
    requireDevice: required,
  });
  projectors.get(model)?.close();
  projectors.set(model, projector);
  projector.setRelease(internals.adopt(projector));
  return displayable(projector);
}

/** The model's open projector, or a typed error. */
export function projectorOf(model: Model): Projector {
  const p = projectors.get(model);
  if (!p || p.closed) {
    throw new LoupeError(
      "INVALID_ARGUMENT",
      `Cannot chat with images: no projector is loaded for "${model.path}" (a text-only model needs ` +
        `its multimodal projector: call model.loadProjector("mmproj.gguf") first)`,
    );
  }
  return p;
}

/** An image or an audio clip of a message, in prompt order. */
export type MediaInput = { kind: "image"; input: ImageInput } | { kind: "audio"; input: AudioInput };

/**
 * Splits messages into text messages with the media marker where each image or clip was, and
 * the media in order. Messages with string content pass unchanged.
 */
export function flattenMedia(
  messages: ReadonlyArray<ChatMessage | VisionMessage>,
  marker: string,
): { text: ChatMessage[]; media: MediaInput[] } {
  const media: MediaInput[] = [];
  const text: ChatMessage[] = [];
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new LoupeError("INVALID_ARGUMENT", "Cannot chat: messages must be a non-empty array");
  }
  for (const [i, m] of messages.entries()) {
    if (typeof m?.role !== "string") {
      throw new LoupeError("INVALID_ARGUMENT", `Cannot chat: message ${i} needs a string role`);
    }
    if (typeof m.content === "string") {
      if (m.content.includes(marker)) {
        throw new LoupeError(
          "INVALID_ARGUMENT",
          `Cannot chat: message ${i} contains the media marker "${marker}" as text`,
        );
      }
      text.push({ role: m.role, content: m.content });
      continue;
    }
    if (!Array.isArray(m.content)) {
      throw new LoupeError("INVALID_ARGUMENT", `Cannot chat: message ${i} needs string content or an array of parts`);
    }
    let content = "";
    for (const [j, part] of m.content.entries()) {
      const t = typeof part === "string"
        ? part
        : part && typeof (part as { text?: unknown }).text === "string"
        ? (part as { text: string }).text
        : undefined;
      if (t !== undefined) {
        if (t.includes(marker)) {
          throw new LoupeError(
            "INVALID_ARGUMENT",
            `Cannot chat: part ${j} of message ${i} contains the media marker "${marker}" as text`,
          );
        }
        content += t;
      } else if (part && typeof part === "object" && "image" in part) {
        media.push({ kind: "image", input: checkImageInput(part.image, `part ${j} of message ${i}`) });
        content += marker;
      } else if (part && typeof part === "object" && "audio" in part) {
        media.push({ kind: "audio", input: checkAudioInput(part.audio, `part ${j} of message ${i}`) });
        content += marker;
      } else {
        throw new LoupeError(
          "INVALID_ARGUMENT",
          `Cannot chat: part ${j} of message ${i} is neither text, { image } nor { audio }`,
        );
      }
    }
    text.push({ role: m.role, content });
  }
  return { text, media };
}

function checkImageInput(image: unknown, where: string): ImageInput {
  if (typeof image === "string" && image !== "") return image;
  if (image instanceof Uint8Array) return image;
  if (image && typeof image === "object" && (image as RawImage).data instanceof Uint8Array) {
    const { width, height } = image as RawImage;
    if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0) {
      throw new LoupeError(
        "INVALID_ARGUMENT",
        `Cannot chat: the raw image in ${where} needs whole-number width and height`,
      );
    }
    return image as RawImage;
  }
  throw new LoupeError(
    "INVALID_ARGUMENT",
    `Cannot chat: the image in ${where} must be a path, a Uint8Array of an encoded file or { data, width, height }`,
  );
}

function checkAudioInput(audio: unknown, where: string): AudioInput {
  if (typeof audio === "string" && audio !== "") return audio;
  if (audio instanceof Uint8Array) return audio;
  throw new LoupeError(
    "INVALID_ARGUMENT",
    `Cannot chat: the audio in ${where} must be a path or a Uint8Array of a WAV, MP3 or FLAC file`,
  );
}

function mediaLabel(media: MediaInput, i: number): string {
  const what = `${media.kind} ${i + 1}`;
  const input = media.input;
  if (typeof input === "string") return `${what} ("${input}")`;
  if (input instanceof Uint8Array) return `${what} (${input.length} bytes)`;
  return `${what} (raw ${input.width}x${input.height})`;
}

/** Decodes one image or clip with the engine's decoders; typed errors. */
async function decodeMedia(
  api: Parameters<typeof NativeImage.fromRgb>[0],
  projector: NativeProjector,
  media: MediaInput,
  i: number,
): Promise<NativeImage> {
  const what = `Cannot read ${mediaLabel(media, i)}`;
  const owned = (bytes: Uint8Array) => {
    const copy = new Uint8Array(bytes.length); // an owned buffer for the worker thread
    copy.set(bytes);
    return copy;
  };
  try {
    if (media.kind === "audio") {
      let bytes: Uint8Array<ArrayBuffer>;
      if (typeof media.input === "string") {
        await statFile(media.input, what);
        bytes = await Deno.readFile(media.input);
      } else {
        bytes = owned(media.input);
      }
      return await NativeImage.audioFromBytes(api, projector, bytes);
    }
    const image = media.input;
    if (typeof image === "string") {
      await statFile(image, what);
      return await NativeImage.fromFile(api, image);
    }
    if (image instanceof Uint8Array) return await NativeImage.fromBytes(api, owned(image));
    return NativeImage.fromRgb(api, image.width, image.height, owned(image.data));
  } catch (e) {
    if (e instanceof LoupeError) throw e;
    if (e instanceof NativeImageError) {
      throw new LoupeError(CODE_OF_IMAGE_ERROR[e.kind] ?? "INVALID_ARGUMENT", `${what}: ${e.message}`, {
        nativeMessage: e.message,
        cause: e,
      });
    }
    if (e instanceof NativeError) {
      throw new LoupeError("INVALID_ARGUMENT", `${what}: ${e.message}`, { nativeMessage: e.message, cause: e });
    }
    if (e instanceof Error && Object.values(Deno.errors).some((k) => e instanceof k)) {
      // the file went away or cannot be read after its check (a permission, an I/O error)
      throw new LoupeError("NOT_FOUND", `${what}: ${e.message}`, { cause: e });
    }
    throw wrap(e, what);
  }
}

/** Stages of the encoder (the projector's requirement applies), the others the model's. */
const ENCODER_STAGES = new Set(["image preprocess", "image encode", "audio preprocess", "audio encode"]);

/** A prompt with media to evaluate and generate from: a model's call, or a session's turn. */
export interface MediaCall {
  model: Model;
  internals: ModelInternals;
  projector: Projector;
  /** The context it runs in. */
  ctx: NativeContext;
  /** The rendered prompt, with the projector's marker where each medium goes. */
  prompt: string;
  media: MediaInput[];
  options: GenerateOptions;
  step: Step;
  onPiece?: (piece: string) => void;
  /** The timeline's kind. */
  kind: string;
  /** A timeline to add the stages to (with what ran before, e.g. a session's tokenize). */
  timeline?: Timeline;
  /**
   * A session's turn: the cells before the new text (the cache's, -1 where it holds a medium, then
   * the token sampled last and a reply's closing), turn starts, and the shift settings. The
   * common prefix with the cache is kept (media compared by content), the rest evaluated.
   */
  session?: { prefix: number[]; turns: number[]; contextShift: boolean; nKeep: number };
  /** Called with each step's output. */
  each?: (out: StepOutput) => void;
  /** Whether the caller (a session) was closed: the call then stops as if aborted. */
  closed?: () => boolean;
}

/** What a {@linkcode MediaCall} did. */
export interface MediaOutcome {
  timeline: Timeline;
  warnings: string[];
  pre: PrefillOutput | null;
  text: string;
  tokens: number[];
  stopReason: StopReason;
  /** The last step's output (null when generation did not start). */
  last: StepOutput | null;
}

/**
 * Evaluates a prompt with images or audio and generates from it: decodes the media, evaluates
 * the prompt in the projector's turn (one prompt at a time per projector), checks placement per
 * stage, then runs the token loop. Runs inside the caller's queue, as one of the projector's
 * calls: its close() frees the encoder only after it.
 */
export function runMedia(call: MediaCall): Promise<MediaOutcome> {
  return trackOn(call.projector, mediaCall(call));
}

async function mediaCall(call: MediaCall): Promise<MediaOutcome> {
  const { projector, options, ctx, internals } = call;
  const sampling = samplingParams(options);
  const native = nativeOf(projector);
  const devs = internals.devices;
  const requiredLm = options.requireDevice ?? internals.options.requireDevice;
  const requiredEncoder = options.requireDevice ?? projector.requireDevice;
  const timeline = call.timeline ?? new Timeline(call.kind);
  const warnings = [...projector.warnings];
  const check = (tl: Timeline) => {
    for (const s of tl.stages) {
      const one = new Timeline(tl.kind);
      one.stages.push(s);
      checkPlacement(one, ENCODER_STAGES.has(s.name) ? requiredEncoder : requiredLm, devs);
    }
  };
  const outcome = (
    pre: PrefillOutput | null,
    gen: { text: string; tokens: number[]; stopReason: StopReason; last: StepOutput | null },
  ): MediaOutcome => {
    timeline.memory = call.model.info.memory;
    const start = timeline.stages[0]?.startMs ?? 0;
    for (const w of warnings) timeline.events.push({ atMs: start, what: w, kind: "vision" });
    return { timeline, warnings, pre, ...gen };
  };
  const aborted = (pre: PrefillOutput | null = null) =>
    outcome(pre, { text: "", tokens: [], stopReason: "aborted", last: null });
  // An abort (a signal, or close() of the model, the session or the projector) sets the context's
  // abort flag, but the prefill and the generation's start clear that flag for the call they
  // begin: one asked for before them (while the media decode, or the call waits for the
  // projector's turn) would be lost. So it is also read here after every wait, and the call stops.
  const stopped = () =>
    !!options.signal?.aborted || call.model.closed || projector.closed || (call.closed?.() ?? false);
  const decoded: NativeImage[] = [];
  const onAbort = () => ctx.genAbort();
  options.signal?.addEventListener("abort", onAbort);
  const unmark = runningOn(projector, ctx);
  try {
    for (const [i, m] of call.media.entries()) {
      decoded.push(await decodeMedia(internals.native.api, native, m, i));
      if (stopped()) return aborted();
    }
    if (stopped()) return aborted();
    // the prompt and the generation's start in the projector's turn: its output and prefilled
    // context are the projector's, and a session may run beside the model's own calls
    const pre = await exclusive(projector, async () => {
      if (stopped()) return null;
      try {
        await native.prefill(ctx, call.prompt, decoded, {
          addSpecial: options.addSpecial ?? true,
          parseSpecial: options.parseSpecial ?? true,
          reuse: call.session !== undefined,
          prefix: call.session?.prefix ?? [],
          turns: call.session?.turns ?? [],
        });
      } catch (e) {
        const err = wrap(e, "Cannot evaluate the prompt with media");
        if (err.code !== "ABORTED") throw err;
        // what ran before the abort; an image encode it cut short counts the nodes that ran
        addPrefillStages(timeline, native.output<Partial<PrefillOutput>>(), true);
        return null;
      }
      const pre = native.output<PrefillOutput>();
      addPrefillStages(timeline, pre);
      if (stopped()) return pre;
      try {
        native.genBegin(ctx, {
          ...sampling,
          contextShift: call.session?.contextShift ?? false,
          nKeep: call.session?.nKeep ?? 0,
        });
      } catch (e) {
        throw wrap(e, "Cannot generate");
      }
      return pre;
    });
    if (pre === null || stopped()) return aborted(pre);
    for (const name of ["image encode", "audio encode"]) {
      const encodeStage = timeline.stage(name);
      const mixed = encodeStage && mixedPlacement(encodeStage);
      if (mixed) warnings.push(mixed);
    }
    check(timeline);
    const run = await runSteps<StepOutput>(ctx, {
      step: call.step,
      onPiece: call.onPiece,
      each: (out) => {
        if (requiredLm) checkPlacement(addGenerationStages(new Timeline(call.kind), out.stages), requiredLm, devs);
        call.each?.(out);
      },
    });
    addGenerationStages(timeline, run.last.stages);
    return outcome(pre, {
      text: run.text,
      tokens: run.tokens,
      stopReason: run.last.stopReason ?? "maxTokens",
      last: run.last,
    });
  } finally {
    unmark();
    options.signal?.removeEventListener("abort", onAbort);
    for (const img of decoded) img.free();
  }
}

/** The result fields of a media call's prompt. */
export function mediaResult(
  pre: PrefillOutput | null,
): Pick<VisionResult, "imageTokens" | "audioTokens" | "positions" | "images"> {
  return {
    imageTokens: pre?.imageTokens ?? 0,
    audioTokens: pre?.audioTokens ?? 0,
    positions: pre?.positions ?? 0,
    images: pre?.images ?? [],
  };
}

/**
 * Chats with images or audio (use `Model.chat` / `Model.streamChat` with parts): applies the
 * model's chat template with the projector's media marker where the media are, decodes them,
 * evaluates the prompt (preprocess, encode, decode into the model, text), then generates.
 */
export function visionChat(
  model: Model,
  messages: VisionMessage[],
  given?: GenerateOptions,
  onPiece?: (piece: string) => void,
): Promise<VisionResult> {
  let projector: Projector;
  let prompt: string;
  let media: MediaInput[];
  let internals: ModelInternals;
  let options: GenerateOptions;
  try {
    internals = internalsOf(model);
    options = generateOptions(given, "Cannot chat");
    checkRequirement(options.requireDevice, internals.devices, "Cannot chat");
    projector = projectorOf(model);
    const flat = flattenMedia(messages, projector.info.marker);
    media = flat.media;
    prompt = model.applyChatTemplate(flat.text);
    samplingParams(options); // bad options reject before anything runs
  } catch (e) {
    return Promise.reject(e);
  }
  return internals.serial(async () => {
    const out = await runMedia({
      model,
      internals,
      projector,
      ctx: internals.context(),
      prompt,
      media,
      options,
      step: onPiece ? STREAM_STEP : COLLECT_STEP,
      onPiece,
      kind: "chat",
    });
    return displayable<VisionResult>({
      text: out.text,
      tokens: out.tokens,
      stopReason: out.stopReason,
      promptTokens: out.pre?.textTokens ?? [],
      timeline: out.timeline,
      ...mediaResult(out.pre),
      warnings: out.warnings,
    });
  });
}

/**
 * The prompt's stages of a prefill output, in order: preprocess, encode, decode, prompt. A
 * medium's stages are shown when the prompt has that medium; a session's turn, and a call cut
 * short (`onlyRun`), show only what ran (a kept image is not encoded again).
 */
function addPrefillStages(timeline: Timeline, pre: Partial<PrefillOutput>, onlyRun = false): void {
  const kinds = new Set<string>(pre.chunks?.map((c) => c.type));
  const names = ["preprocess", "encode", "decode"].flatMap((step) => [`image ${step}`, `audio ${step}`]);
  for (const name of [...names, "prompt"]) {
    const stage = pre.stages?.[name];
    if (!stage) continue;
    const expected = !onlyRun && (name === "prompt" || (!pre.reused && kinds.has(name.split(" ")[0])));
    if (expected || stage.wallUs > 0) {
      addNativeStage(timeline, name, stage, name === "prompt" && pre.reused ? { reused: pre.reused } : undefined);
    }
  }
}
