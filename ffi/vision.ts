/**
 * Thin wrappers over `loupe_projector *` and `loupe_image *` (native/loupe_vision.h): the only
 * places that hold those pointers. No ownership bookkeeping beyond "freed once"; the typed API
 * in src/vision.ts owns them.
 *
 * @module
 */
import type { NativeContext, NativeModel } from "./model.ts";
import { Status } from "./model.ts";
import { cstr, lastError, type NativeApi, NativeError, readCString, readJson, takeJson } from "./util.ts";

/** Why an image could not be made: the prefix of the native message. */
export type ImageErrorKind = "format" | "size" | "corrupt" | "file" | "unsupported" | "state" | "invalid";

/** An image the native side refused, with the kind of problem. */
export class NativeImageError extends NativeError {
  /** What was wrong: an unsupported format, a refused size, corrupt data, an unreadable file. */
  readonly kind: ImageErrorKind;
  /** Creates the error from a native message "<kind>: <detail>". */
  constructor(message: string) {
    const m = message.match(/^(format|size|corrupt|file|unsupported|state): (.*)$/s);
    super(Status.INVALID, m ? m[2] : message);
    this.name = "NativeImageError";
    this.kind = m ? m[1] as ImageErrorKind : "invalid";
  }
}

/** A Vulkan physical device as the system's Vulkan loader reports it. */
export interface VulkanDriver {
  /** Index in the loader's list. */
  index: number;
  /** Device name (ggml's description of the device). */
  name: string;
  /** "gpu", "igpu", "cpu", "virtual" or "other". */
  type: string;
  /** Vulkan API version, e.g. "1.3.230". */
  apiVersion: string;
  /** The driver's own version number. */
  driverVersion: number;
  /** PCI vendor id. */
  vendorId: number;
  /** PCI device id. */
  deviceId: number;
  /** Driver name (Vulkan 1.2), e.g. "llvmpipe". */
  driverName: string | null;
  /** Driver details (Vulkan 1.2), e.g. "Mesa 22.3.6 (LLVM 15.0.6)". */
  driverInfo: string | null;
}

/** The Vulkan loader's physical devices with their driver versions ([] without a loader). */
export function vulkanDrivers(api: NativeApi): VulkanDriver[] {
  return takeJson<VulkanDriver[]>(api, api.loupe_vulkan_drivers());
}

function errorText(buf: Uint8Array): string {
  const end = buf.indexOf(0);
  return new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end));
}

/** One `loupe_image *`: a decoded image (RGB pixels) ready for a multimodal prompt. */
export class NativeImage {
  #api: NativeApi;
  #ptr: Deno.PointerObject | null;

  private constructor(api: NativeApi, ptr: Deno.PointerObject) {
    this.#api = api;
    this.#ptr = ptr;
  }

  /** Decodes an encoded image (JPEG, PNG, BMP, GIF) on a worker thread. */
  static async fromBytes(api: NativeApi, data: Uint8Array<ArrayBuffer>): Promise<NativeImage> {
    const err = new Uint8Array(1024);
    const ptr = await api.loupe_image_from_bytes(data, BigInt(data.length), err, err.length);
    if (ptr === null) throw new NativeImageError(errorText(err));
    return new NativeImage(api, ptr);
  }

  /** Decodes an audio clip (WAV, MP3, FLAC) at the projector's sample rate on a worker thread. */
  static async audioFromBytes(
    api: NativeApi,
    projector: NativeProjector,
    data: Uint8Array<ArrayBuffer>,
  ): Promise<NativeImage> {
    const err = new Uint8Array(1024);
    const ptr = await api.loupe_projector_audio_from_bytes(
      projector.pointer(),
      data,
      BigInt(data.length),
      err,
      err.length,
    );
    if (ptr === null) throw new NativeImageError(errorText(err));
    return new NativeImage(api, ptr);
  }

  /** Reads and decodes an image file on a worker thread. */
  static async fromFile(api: NativeApi, path: string): Promise<NativeImage> {
    const err = new Uint8Array(1024);
    const ptr = await api.loupe_image_from_file(cstr(path), err, err.length);
    if (ptr === null) throw new NativeImageError(errorText(err));
    return new NativeImage(api, ptr);
  }

  /** An image from raw RGB bytes (3 per pixel). */
  static fromRgb(api: NativeApi, width: number, height: number, rgb: Uint8Array<ArrayBuffer>): NativeImage {
    const ptr = api.loupe_image_from_rgb(width, height, rgb, BigInt(rgb.length));
    if (ptr === null) throw new NativeError(Status.INVALID, lastError(api));
    return new NativeImage(api, ptr);
  }

  /** The raw handle, for the prefill call (throws once freed). */
  pointer(): Deno.PointerObject {
    if (this.#ptr === null) throw new NativeError(Status.STATE, "the native image was freed");
    return this.#ptr;
  }

  /** {width, height, decodeUs, format, audio} (a clip's width is its samples). */
  info(): { width: number; height: number; decodeUs: number; format: string; audio: boolean } {
    return takeJson(this.#api, this.#api.loupe_image_info(this.pointer()));
  }

  /** Frees the pixels; later calls throw. Idempotent. */
  free(): void {
    if (this.#ptr !== null) {
      this.#api.loupe_image_free(this.#ptr);
      this.#ptr = null;
    }
  }
}

/** One `loupe_projector *`: an mtmd context tied to a loaded model. */
export class NativeProjector {
  #api: NativeApi;
  #ptr: Deno.PointerObject | null;

  /** Creates the (unloaded) handle for `model` from parameters sent as JSON. */
  constructor(model: NativeModel, params: Record<string, unknown>) {
    const api = model.api;
    this.#api = api;
    const ptr = api.loupe_projector_create(model.pointer(), cstr(JSON.stringify(params)));
    if (ptr === null) throw new NativeError(Status.INVALID, lastError(api));
    this.#ptr = ptr;
  }

  #handle(): Deno.PointerObject {
    if (this.#ptr === null) throw new NativeError(Status.STATE, "the native projector was freed");
    return this.#ptr;
  }

  /** The raw handle, for decoding audio at its sample rate (throws once freed). */
  pointer(): Deno.PointerObject {
    return this.#handle();
  }

  #check(rc: number): number {
    if (rc < 0) {
      throw new NativeError(
        rc,
        readCString(this.#api, this.#api.loupe_projector_error(this.#handle())) || lastError(this.#api),
      );
    }
    return rc;
  }

  /** Loads the projector file on a worker thread. */
  async load(): Promise<void> {
    this.#check(await this.#api.loupe_projector_load(this.#handle()));
  }

  /** What loading would take per device (JSON of loupe_projector_memory_estimate), on a worker thread. */
  async memoryEstimate<T>(): Promise<T> {
    const ptr = await this.#api.loupe_projector_memory_estimate(this.#handle());
    if (ptr === null) {
      throw new NativeError(
        Status.LOAD,
        readCString(this.#api, this.#api.loupe_projector_error(this.#handle())) || lastError(this.#api),
      );
    }
    return takeJson<T>(this.#api, ptr);
  }

  /** Load progress in [0, 1]. */
  progress(): number {
    return this.#api.loupe_projector_progress(this.#handle());
  }

  /** Stops an ongoing load at its next progress report. */
  cancel(): void {
    this.#api.loupe_projector_cancel(this.#handle());
  }

  /** Encodes one blank image (measured) on a worker thread. */
  async warmup(): Promise<void> {
    this.#check(await this.#api.loupe_projector_warmup(this.#handle()));
  }

  /** The projector's description (see loupe_vision.h). */
  info<T>(): T {
    return readJson<T>(this.#api, this.#api.loupe_projector_info(this.#handle()));
  }

  /** Evaluates a prompt with media markers and its images into `ctx`, on a worker thread. */
  async prefill(
    ctx: NativeContext,
    prompt: string,
    images: NativeImage[],
    params: Record<string, unknown>,
  ): Promise<void> {
    const list = new BigUint64Array(Math.max(images.length, 1));
    images.forEach((img, i) => (list[i] = BigInt(Deno.UnsafePointer.value(img.pointer()))));
    const bytes = new Uint8Array(list.buffer);
    this.#check(
      await this.#api.loupe_ctx_vision_prefill(
        ctx.pointer(),
        this.#handle(),
        cstr(prompt),
        bytes,
        images.length,
        cstr(JSON.stringify(params)),
      ),
    );
  }

  /** Starts generating from the prompt the last prefill left in `ctx`. */
  genBegin(ctx: NativeContext, params: object): void {
    const proj = this.#handle(); // a freed projector is reported first
    this.#check(this.#api.loupe_ctx_vision_gen_begin(ctx.pointer(), proj, cstr(JSON.stringify(params))));
  }

  /** What the last prefill did (see loupe_vision.h). */
  output<T>(): T {
    return readJson<T>(this.#api, this.#api.loupe_projector_output(this.#handle()));
  }

  /** Frees the handle; later calls throw. Idempotent. */
  free(): void {
    if (this.#ptr !== null) {
      this.#api.loupe_projector_free(this.#ptr);
      this.#ptr = null;
    }
  }

  /** Whether free() has run. */
  get freed(): boolean {
    return this.#ptr === null;
  }
}
