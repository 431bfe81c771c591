/**
 * loupe — run local GGUF models from Deno notebooks and scripts, with a measured timeline
 * of every call: per-stage wall time and the devices that actually ran each stage, counted
 * from the engine's compute graphs. `requireDevice` turns a silent CPU fallback into an error.
 *
 * @example
 * ```ts
 * import { backends, devices, loadModel } from "./mod.ts";
 * console.table(await devices());
 * await using model = await loadModel("model.gguf", { gpuLayers: "auto" });
 * const r = await model.generate("Once upon a time", { maxTokens: 32, temperature: 0 });
 * console.log(r.text);
 * console.log(r.timeline.toString());
 * ```
 *
 * @module
 */
export { type BackendReport, backends, type Device, devices, type EngineInfo, engineInfo } from "./src/engine.ts";
export { LoupeError, type LoupeErrorCode, PlacementError } from "./src/errors.ts";
export { NativeOwner } from "./src/owner.ts";
export {
  type ChatMessage,
  DEFAULT_MAX_TOKENS,
  type GenerateOptions,
  type GenerateResult,
  loadModel,
  type LoadModelOptions,
  Model,
  type ModelInfo,
  type StopReason,
  TextStream,
  type TokenizeOptions,
} from "./src/model.ts";
export { type DeviceMemory, type DevicePlacement, type Stage, Timeline, type TimelineEvent } from "./src/timeline.ts";
export { fixtureModel, type FixtureName } from "./src/fixtures.ts";
export {
  type CallInfo,
  cosine,
  Embedder,
  type EmbedderInfo,
  type Embeddings,
  type EmbedOptions,
  loadEmbedder,
  type LoadEmbedderOptions,
  type Normalize,
  type Pooling,
  type RerankOptions,
  type RerankScores,
  type TokenEmbeddings,
} from "./src/embed.ts";
export { embedFixture, type EmbedFixtureName } from "./src/fixtures_embed.ts";
export {
  attachDisplay,
  bundleOf,
  type Column,
  compare,
  Comparison,
  comparisonFigure,
  cosineSimilarity,
  deviceColor,
  DISPLAY,
  display,
  type Displayable,
  type DisplayOptions,
  displayOptions,
  heatmapFigure,
  htmlPage,
  htmlTable,
  memoryFigure,
  type MimeBundle,
  type PlotlyFigure,
  richBundle,
  type Run,
  type RunsInput,
  setDisplayOptions,
  similarityMap,
  textTable,
  timelineFigure,
  type TimelineLike,
  type View,
} from "./src/display.ts";
export {
  Progress,
  type ProgressMode,
  type ProgressOptions,
  showStream,
  type ShowStreamOptions,
} from "./src/progress.ts";
export type { KernelApi } from "./src/jupyter.ts";
export {
  type ContextShift,
  loadSession,
  type LoadSessionOptions,
  Session,
  type SessionOptions,
  type SessionResult,
} from "./src/session.ts";
export {
  type ContentPart,
  type ImageInput,
  type ImagePart,
  mixedPlacement,
  type ProbeOptions,
  type ProbeVerdict,
  probeVisionDevice,
  Projector,
  type ProjectorInfo,
  type ProjectorOptions,
  type RawImage,
  type VisionMessage,
  type VisionResult,
} from "./src/vision.ts";
export { fixtureProjector, makeProjector, type ProjectorName } from "./src/fixtures_vision.ts";
