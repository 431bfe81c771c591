/**
 * Fixture makers: deterministic GGUF models and projectors written by loupe's own GGUF writer
 * (random weights, real tokenizers from the pinned llama.cpp source), for tests and examples
 * that must not download anything. `fixtureModel`, `embedFixture` and `fixtureProjector` in
 * `mod.ts` make the ready-made ones.
 *
 * @example
 * ```ts
 * import { makeProjector } from "./testing.ts";
 * await makeProjector("/tmp/mmproj.gguf", { nEmbdText: 64 });
 * ```
 *
 * @module
 */
export {
  type AddedToken,
  makeTextModel,
  type ResolvedTextModelOptions,
  type TextArchitecture,
  type TextModel,
  type TextModelOptions,
} from "./src/fixtures/text.ts";
export { type AnyFamilyName, type Family, familyFixture, type FamilyName } from "./src/fixtures/families.ts";
export {
  type CachedFamily,
  type FamilyFiles,
  type FamilyFixture,
  type Modality,
} from "./src/fixtures/projectors/family.ts";
export { makeToneWav, type ToneOptions } from "./src/fixtures/audio.ts";
export {
  type GGUFArrayTypeMap,
  type GGUFArrayValue,
  type GGUFScalarType,
  type GGUFScalarTypeMap,
  type GGUFScalarValue,
  type GGUFValue,
  GGUFValueType,
} from "./src/gguf/gguf.ts";
export { type BertModelOptions, makeBertModel } from "./src/fixtures/embed.ts";
export {
  makeProjector,
  type Projector as ProjectorFixture,
  type ProjectorOptions as ProjectorFixtureOptions,
  type ResolvedProjectorOptions,
} from "./src/fixtures/vision.ts";
