/**
 * loupe — run local GGUF models from Deno notebooks and scripts, with a measured timeline
 * of every call: per-stage wall time and the devices that actually ran each stage, counted
 * from the engine's compute graphs. `requireDevice` turns a silent CPU fallback into an error.
 *
 * Building blocks for new displays are in `./display.ts` (the `./display` export), fixture
 * makers in `./testing.ts` (`./testing`).
 *
 * @example
 * ```ts
 * import { devices, fixtureModel, loadModel } from "./mod.ts";
 * console.table(await devices());
 * await using model = await loadModel(await fixtureModel(), { gpuLayers: "auto" });
 * const r = await model.generate("Once upon a time", { maxTokens: 32, temperature: 0 });
 * console.log(r.text);
 * console.log(r.timeline.toString());
 * ```
 *
 * @module
 */
import "./src/notebook/presenter.ts"; // rich display and progress bars in notebooks

export {
  type BackendReport,
  backends,
  type Device,
  devices,
  type EngineInfo,
  engineInfo,
} from "./src/engine/engine.ts";
export {
  type EngineCrashInfo,
  LoupeError,
  type LoupeErrorCode,
  type LoupeErrorOptions,
  PlacementError,
} from "./src/util/errors.ts";
export { Resource } from "./src/util/resource.ts";
export type { LoadModelOptions } from "./src/engine/load_options.ts";
export {
  type DownloadProgress,
  type HubSettings,
  pull,
  type PullResult,
  resolveModel,
  type ResolveOptions,
} from "./src/hub/resolve.ts";
export {
  type ChatCallOptions,
  type ChatTemplateOptions,
  type DetokenizeOptions,
  loadModel,
  Model,
  type ModelInfo,
  type TokenizeOptions,
} from "./src/model/model.ts";
export { DEFAULT_MAX_TOKENS, type GenerateOptions, SAMPLING_DEFAULTS } from "./src/generate/options.ts";
export type { ChatMessage, GenerateResult, StopReason } from "./src/generate/result.ts";
export { type StreamPart, TextStream } from "./src/generate/stream.ts";
export type { ChatOptions, ChatTurn, TemplateInfo, ToolCall, ToolChoice, ToolDefinition } from "./src/chat/chat.ts";
export {
  type DeviceMemory,
  type DevicePlacement,
  type Stage,
  Timeline,
  type TimelineEvent,
} from "./src/timeline/timeline.ts";
export {
  type ContextShift,
  type LoadSessionOptions,
  Session,
  type SessionOptions,
  type SessionResult,
} from "./src/session/session.ts";
export {
  type AudioInput,
  type AudioPart,
  type ContentPart,
  type ImageInput,
  type ImagePart,
  type ProbeConfig,
  type ProbeOptions,
  type ProbeVerdict,
  probeVisionDevice,
  Projector,
  type ProjectorInfo,
  type ProjectorOptions,
  type RawImage,
  type VisionMessage,
  type VisionResult,
} from "./src/vision/vision.ts";
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
} from "./src/embed/embed.ts";
export { display, type DisplayOptions, displayOptions, htmlPage, setDisplayOptions } from "./src/notebook/display.ts";
export { compare, Comparison, type Run, type RunsInput } from "./src/notebook/comparison.ts";
export { similarityMap } from "./src/notebook/views.ts";
export {
  Progress,
  type ProgressMode,
  type ProgressOptions,
  showStream,
  type ShowStreamOptions,
} from "./src/notebook/progress.ts";
export type { KernelApi } from "./src/notebook/kernel.ts";
export {
  serve,
  type ServedRequest,
  type ServeOptions,
  Server,
  type ServerSnapshot,
  type ServerStats,
} from "./src/serve/server.ts";
export { fixtureModel, type FixtureName } from "./src/fixtures/text.ts";
export { embedFixture, type EmbedFixtureName } from "./src/fixtures/embed.ts";
export { fixtureProjector, type ProjectorName } from "./src/fixtures/vision.ts";
