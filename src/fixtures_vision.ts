/**
 * Deterministic vision projector fixtures: CLIP image encoders with a LLaVA 1.5 style `mlp`
 * projector, written with the project's GGUF writer in the layout llama.cpp's mtmd loads
 * (`tools/mtmd/clip.cpp`, `clip-impl.h`, `models/llava.cpp`), with pseudo-random weights.
 *
 * The projector's output width equals its text fixture's embedding width, so the pair loads
 * together: `tiny` goes with the `tiny` text fixture, `clip-vit-l-336` (the shapes of LLaVA
 * 1.5's CLIP ViT-L/14-336 encoder: 24 layers, width 1024, 16 heads, 336×336 images in 14×14
 * patches) with the `bench` text fixture.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { GGMLType, GGUFValueType, GGUFWriter } from "./gguf.ts";
import { fillNormal, FIXTURE_PRESETS, fixtureModel, type FixtureName, sha256File, Xoshiro128 } from "./fixtures.ts";
import { cacheDir } from "../native/build.ts";

/**
 * Version of the projector generator; part of the cache key, so bump it whenever the bytes
 * produced for the same options change.
 */
export const PROJECTOR_GENERATOR_VERSION = 1;

/** CLIP's image normalisation (OpenAI CLIP, as LLaVA 1.5 uses it). */
export const CLIP_IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073];
/** CLIP's image standard deviations. */
export const CLIP_IMAGE_STD = [0.26862954, 0.26130258, 0.27577711];

/** Options of {@linkcode makeProjector}. */
export interface ProjectorOptions {
  /** Width of the projector's output: must equal the language model's embedding width. */
  nEmbdText: number;
  /** Vision transformer width. Default 64. */
  nEmbd?: number;
  /** Vision transformer blocks (the graph runs all but the last, as LLaVA does). Default 3. */
  nLayer?: number;
  /** Attention heads; must divide `nEmbd`. Default 4. */
  nHead?: number;
  /** Feed-forward width. Default 4 × `nEmbd`. */
  nFf?: number;
  /** Width of the projector's hidden layer (mm.0). Default `nEmbdText`. */
  nHidden?: number;
  /** Side of the square input image in pixels; a multiple of `patchSize`. Default 56. */
  imageSize?: number;
  /** Side of a patch in pixels. Default 14. */
  patchSize?: number;
  /** Storage type of the matrices (norms, biases and embeddings stay F32). Default "f32". */
  type?: "f32" | "f16";
  /** Seed of the weights (an unsigned 32-bit integer). Default 1. */
  seed?: number;
  /** `general.name`. Default "loupe-projector". */
  name?: string;
  /** Layer norm epsilon. Default 1e-5. */
  eps?: number;
}

/** {@linkcode ProjectorOptions} with every default filled in. */
export type ResolvedProjectorOptions = Required<ProjectorOptions>;

/** One tensor of a generated projector. */
export interface ProjectorTensor {
  /** Tensor name. */
  name: string;
  /** Shape, `ne0` first. */
  dims: number[];
  /** What it holds: a matrix (stored in `type`), a norm weight, a bias or an embedding (F32). */
  kind: "matrix" | "norm" | "bias" | "embedding";
  /** Fan-in of a matrix (sets the weights' scale). */
  fanIn: number;
}

/** A written projector. */
export interface Projector {
  /** Path of the file. */
  path: string;
  /** Number of weights. */
  nParams: number;
  /** Hex SHA-256 of the file. */
  sha256: string;
  /** File size in bytes. */
  fileSize: number;
  /** Image tokens one image becomes (patches per image). */
  nImageTokens: number;
  /** The options, defaults filled in. */
  options: ResolvedProjectorOptions;
}

/**
 * Fills in the defaults of {@linkcode ProjectorOptions} and validates them.
 *
 * @throws {RangeError} For inconsistent dimensions or a bad seed.
 */
export function resolveProjectorOptions(options: ProjectorOptions): ResolvedProjectorOptions {
  const nEmbd = options.nEmbd ?? 64;
  const r: ResolvedProjectorOptions = {
    nEmbdText: options.nEmbdText,
    nEmbd,
    nLayer: options.nLayer ?? 3,
    nHead: options.nHead ?? 4,
    nFf: options.nFf ?? 4 * nEmbd,
    nHidden: options.nHidden ?? options.nEmbdText,
    imageSize: options.imageSize ?? 56,
    patchSize: options.patchSize ?? 14,
    type: options.type ?? "f32",
    seed: options.seed ?? 1,
    name: options.name ?? "loupe-projector",
    eps: options.eps ?? 1e-5,
  };
  for (const k of ["nEmbdText", "nEmbd", "nLayer", "nHead", "nFf", "nHidden", "imageSize", "patchSize"] as const) {
    if (!Number.isSafeInteger(r[k]) || r[k] <= 0) {
      throw new RangeError(`Invalid projector options: ${k} must be a positive integer`);
    }
  }
  if (r.nLayer < 2) throw new RangeError("Invalid projector options: nLayer must be at least 2 (the last is skipped)");
  if (r.nEmbd % r.nHead !== 0) {
    throw new RangeError(`Invalid projector options: nEmbd ${r.nEmbd} must split into ${r.nHead} heads`);
  }
  if (r.imageSize % r.patchSize !== 0) {
    throw new RangeError(`Invalid projector options: imageSize ${r.imageSize} must be a multiple of ${r.patchSize}`);
  }
  if (r.type !== "f32" && r.type !== "f16") throw new RangeError(`Invalid projector options: type must be f32 or f16`);
  if (!Number.isInteger(r.seed) || r.seed < 0 || r.seed > 0xffffffff) {
    throw new RangeError("Invalid projector options: seed must be an unsigned 32-bit integer");
  }
  return r;
}

/** Patches (= image tokens) per image. */
export function projectorImageTokens(o: Pick<ResolvedProjectorOptions, "imageSize" | "patchSize">): number {
  return (o.imageSize / o.patchSize) ** 2;
}

/**
 * The tensors of a projector in file order, with the shapes mtmd expects for projector type
 * `mlp` (LLaVA 1.5): class and position embeddings, the patch convolution, a pre-norm, the
 * transformer blocks, and the two-layer MLP `mm.0` → GELU → `mm.2`.
 */
export function projectorTensors(o: ResolvedProjectorOptions): ProjectorTensor[] {
  const { nEmbd, nFf, nLayer, patchSize, nHidden, nEmbdText } = o;
  const nPos = projectorImageTokens(o) + 1; // + the class embedding
  const t: ProjectorTensor[] = [
    { name: "v.class_embd", dims: [nEmbd], kind: "embedding", fanIn: 0 },
    // ggml's conv_2d kernel: [kernel w, kernel h, input channels, output channels]
    { name: "v.patch_embd.weight", dims: [patchSize, patchSize, 3, nEmbd], kind: "matrix", fanIn: 3 * patchSize ** 2 },
    { name: "v.position_embd.weight", dims: [nEmbd, nPos], kind: "embedding", fanIn: 0 },
    { name: "v.pre_ln.weight", dims: [nEmbd], kind: "norm", fanIn: 0 },
    { name: "v.pre_ln.bias", dims: [nEmbd], kind: "bias", fanIn: 0 },
  ];
  for (let i = 0; i < nLayer; i++) {
    const b = `v.blk.${i}.`;
    for (const x of ["attn_q", "attn_k", "attn_v", "attn_out"]) {
      t.push({ name: `${b}${x}.weight`, dims: [nEmbd, nEmbd], kind: "matrix", fanIn: nEmbd });
      t.push({ name: `${b}${x}.bias`, dims: [nEmbd], kind: "bias", fanIn: 0 });
    }
    t.push(
      { name: `${b}ln1.weight`, dims: [nEmbd], kind: "norm", fanIn: 0 },
      { name: `${b}ln1.bias`, dims: [nEmbd], kind: "bias", fanIn: 0 },
      { name: `${b}ffn_up.weight`, dims: [nEmbd, nFf], kind: "matrix", fanIn: nEmbd },
      { name: `${b}ffn_up.bias`, dims: [nFf], kind: "bias", fanIn: 0 },
      { name: `${b}ffn_down.weight`, dims: [nFf, nEmbd], kind: "matrix", fanIn: nFf },
      { name: `${b}ffn_down.bias`, dims: [nEmbd], kind: "bias", fanIn: 0 },
      { name: `${b}ln2.weight`, dims: [nEmbd], kind: "norm", fanIn: 0 },
      { name: `${b}ln2.bias`, dims: [nEmbd], kind: "bias", fanIn: 0 },
    );
  }
  t.push(
    { name: "mm.0.weight", dims: [nEmbd, nHidden], kind: "matrix", fanIn: nEmbd },
    { name: "mm.0.bias", dims: [nHidden], kind: "bias", fanIn: 0 },
    { name: "mm.2.weight", dims: [nHidden, nEmbdText], kind: "matrix", fanIn: nHidden },
    { name: "mm.2.bias", dims: [nEmbdText], kind: "bias", fanIn: 0 },
  );
  return t;
}

/**
 * Writes a CLIP vision encoder with an `mlp` projector (LLaVA 1.5 layout) and deterministic
 * pseudo-random weights: matrices ≈ N(0, 1/fan_in), norm weights 1 + N(0, 0.05²), biases and
 * embeddings N(0, 0.02²). The same options give a byte-identical file.
 *
 * @example
 * ```ts
 * const p = await makeProjector("/tmp/mmproj.gguf", { nEmbdText: 64 });
 * console.log(p.nParams, p.nImageTokens);
 * ```
 */
export async function makeProjector(outPath: string, options: ProjectorOptions): Promise<Projector> {
  const o = resolveProjectorOptions(options);
  const w = new GGUFWriter();
  w.addString("general.architecture", "clip");
  w.addString("general.name", o.name);
  w.addString("general.description", "loupe fixture: CLIP vision encoder with a LLaVA 1.5 mlp projector");
  w.addUint32("general.file_type", o.type === "f16" ? 1 : 0);
  w.addBool("clip.has_text_encoder", false);
  w.addBool("clip.has_vision_encoder", true);
  w.addBool("clip.has_llava_projector", true);
  w.addString("clip.projector_type", "mlp");
  w.addBool("clip.use_gelu", false); // quick GELU, as OpenAI's CLIP
  w.addUint32("clip.vision.image_size", o.imageSize);
  w.addUint32("clip.vision.patch_size", o.patchSize);
  w.addUint32("clip.vision.embedding_length", o.nEmbd);
  w.addUint32("clip.vision.feed_forward_length", o.nFf);
  w.addUint32("clip.vision.projection_dim", o.nEmbdText);
  w.addUint32("clip.vision.attention.head_count", o.nHead);
  w.addFloat32("clip.vision.attention.layer_norm_epsilon", o.eps);
  w.addUint32("clip.vision.block_count", o.nLayer);
  w.addArray("clip.vision.image_mean", GGUFValueType.FLOAT32, CLIP_IMAGE_MEAN);
  w.addArray("clip.vision.image_std", GGUFValueType.FLOAT32, CLIP_IMAGE_STD);

  const wtype = o.type === "f16" ? GGMLType.F16 : GGMLType.F32;
  let nParams = 0;
  for (const t of projectorTensors(o)) {
    const n = t.dims.reduce((a, b) => a * b, 1);
    nParams += n;
    const [mean, std] = t.kind === "norm" ? [1, 0.05] : t.kind === "matrix" ? [0, 1 / Math.sqrt(t.fanIn)] : [0, 0.02];
    w.addTensor(t.name, t.dims, t.kind === "matrix" ? wtype : GGMLType.F32, () => {
      const data = new Float32Array(n);
      fillNormal(data, new Xoshiro128(o.seed, t.name), mean, std);
      return data;
    });
  }
  const fileSize = await w.write(outPath);
  return {
    path: outPath,
    nParams,
    sha256: await sha256File(outPath),
    fileSize,
    nImageTokens: projectorImageTokens(o),
    options: o,
  };
}

/** A projector preset: its options and the text fixture it goes with. */
export interface ProjectorPreset {
  /** The text fixture whose embedding width the projector's output matches. */
  textFixture: FixtureName;
  /** Options besides the output width (taken from the text fixture). */
  options: Omit<ProjectorOptions, "nEmbdText">;
}

/**
 * The projector presets: `tiny` (3 blocks of width 64, 56×56 images → 16 image tokens) for
 * functional tests, and `clip-vit-l-336` (CLIP ViT-L/14-336 shapes: 24 blocks of width 1024,
 * 16 heads, FFN 4096, 336×336 images → 576 image tokens, F16) for the benchmark.
 */
export const PROJECTOR_PRESETS = {
  tiny: { textFixture: "tiny", options: { name: "loupe-projector-tiny", type: "f32", seed: 1 } },
  "clip-vit-l-336": {
    textFixture: "bench",
    options: {
      name: "loupe-clip-vit-l-336",
      nEmbd: 1024,
      nLayer: 24,
      nHead: 16,
      nFf: 4096,
      imageSize: 336,
      patchSize: 14,
      type: "f16",
      seed: 1,
    },
  },
} as const satisfies Record<string, ProjectorPreset>;

/** Name of a projector preset. */
export type ProjectorName = keyof typeof PROJECTOR_PRESETS;

/** The text fixture's embedding width (the default 64 when its preset does not set one). */
function textWidth(name: FixtureName): number {
  const preset = FIXTURE_PRESETS[name] as { nEmbd?: number };
  return preset.nEmbd ?? 64;
}

/** Options of a projector preset, output width included. */
export function projectorPresetOptions(name: ProjectorName): ResolvedProjectorOptions {
  const preset = PROJECTOR_PRESETS[name];
  return resolveProjectorOptions({ ...preset.options, nEmbdText: textWidth(preset.textFixture) });
}

/**
 * Path of a projector fixture in loupe's cache, made on first use (nothing is downloaded),
 * with the path of the text fixture it goes with.
 *
 * @example
 * ```ts
 * const { model, projector } = await fixtureProjector("tiny");
 * await using m = await loadModel(model);
 * await m.loadProjector(projector);
 * ```
 */
export async function fixtureProjector(name: ProjectorName = "tiny"): Promise<{ model: string; projector: string }> {
  const options = projectorPresetOptions(name);
  const key = createHash("sha256").update(JSON.stringify({ generator: PROJECTOR_GENERATOR_VERSION, options }))
    .digest("hex");
  const dir = `${cacheDir()}/fixtures`;
  const path = `${dir}/projector-${name}.gguf`;
  const metaPath = `${path}.json`;
  const model = await fixtureModel(PROJECTOR_PRESETS[name].textFixture);
  const meta = await Deno.readTextFile(metaPath).then(JSON.parse).catch(() => null);
  const stat = await Deno.stat(path).catch(() => null);
  if (meta?.key === key && stat?.isFile && stat.size === meta.fileSize) return { model, projector: path };
  await Deno.mkdir(dir, { recursive: true });
  const p = await makeProjector(path, options);
  const tmp = `${metaPath}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, JSON.stringify({ key, sha256: p.sha256, fileSize: p.fileSize, nParams: p.nParams }));
  await Deno.rename(tmp, metaPath);
  return { model, projector: path };
}
