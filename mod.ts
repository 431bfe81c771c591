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
export { type DeviceMemory, type DevicePlacement, type Stage, Timeline } from "./src/timeline.ts";
export { fixtureModel, type FixtureName } from "./src/fixtures.ts";
