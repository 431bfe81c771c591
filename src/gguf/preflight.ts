/**
 * Checks a well-formed GGUF header for values on which llama.cpp would abort the whole process
 * (a failed GGML_ASSERT) instead of returning an error: found with the bad-input corpus
 * (tests/corpus/). Each rule names the engine's assertion it stands in for. Files the engine
 * merely rejects (with an error) are left to it.
 *
 * @module
 */
import { type GGUFFile, GGUFFormatError, GGUFValueType, readGGUFFile } from "./gguf.ts";
import { LoupeError } from "../util/errors.ts";
import { statFile } from "../util/files.ts";

/** llama.cpp's LLAMA_MAX_LAYERS (src/llama-hparams.h). */
export const LLAMA_MAX_LAYERS = 512;
/** llama.cpp's LLAMA_MAX_EXPERTS (src/llama-hparams.h). */
export const LLAMA_MAX_EXPERTS = 1024;

function num(file: GGUFFile, key: string): number | undefined {
  const v = file.kv.get(key);
  if (v === undefined || v.type === GGUFValueType.ARRAY || v.type === GGUFValueType.STRING) return undefined;
  if (v.type === GGUFValueType.BOOL) return v.value ? 1 : 0;
  return Number(v.value);
}

function fail(message: string): never {
  throw new GGUFFormatError(message);
}

/**
 * Throws a {@linkcode GGUFFormatError} when the engine would abort on this header. The rules
 * mirror assertions of the pinned llama.cpp: the block count is 1 to 512 and bounds the other
 * layer counts (llama-model.cpp, load_hparams); expert counts fit together (same place); norm
 * epsilons are finite and not negative (ggml-cpu ops.cpp, GGML_ASSERT(eps >= 0.0f) at the first
 * evaluation); tokens are distinct strings (llama-vocab.cpp, id_to_token.size() ==
 * token_to_id.size()).
 */
export function preflight(file: GGUFFile): void {
  const archValue = file.kv.get("general.architecture");
  const arch = archValue?.type === GGUFValueType.STRING ? archValue.value : undefined;
  if (arch !== undefined) {
    const key = (k: string) => `${arch}.${k}`;
    const nLayer = num(file, key("block_count"));
    if (nLayer !== undefined && !(nLayer > 0 && nLayer <= LLAMA_MAX_LAYERS)) {
      fail(`Invalid hyperparameter: ${key("block_count")} is ${nLayer}, the engine accepts 1 to ${LLAMA_MAX_LAYERS}`);
    }
    for (const k of ["nextn_predict_layers", "posnet.block_count", "convnext.block_count"]) {
      const v = num(file, key(k));
      if (v !== undefined && nLayer !== undefined && v > nLayer) {
        fail(`Invalid hyperparameter: ${key(k)} is ${v}, more than the ${nLayer} blocks`);
      }
    }
    const nExpert = num(file, key("expert_count")) ?? 0;
    if (nExpert > LLAMA_MAX_EXPERTS) {
      fail(
        `Invalid hyperparameter: ${key("expert_count")} is ${nExpert}, the engine accepts at most ${LLAMA_MAX_EXPERTS}`,
      );
    }
    const used = num(file, key("expert_used_count"));
    if (used !== undefined && (used > nExpert || (nExpert > 0 && used === 0))) {
      fail(`Invalid hyperparameter: ${key("expert_used_count")} is ${used} with ${nExpert} experts`);
    }
    const groups = num(file, key("expert_group_count"));
    if (nExpert > 0 && groups !== undefined && groups > 0) {
      const groupUsed = num(file, key("expert_group_used_count")) ?? 0;
      if (groups >= nExpert || nExpert % groups !== 0 || groupUsed === 0) {
        fail(`Invalid hyperparameter: ${groups} expert groups (${groupUsed} used) do not divide ${nExpert} experts`);
      }
    }
    for (const k of ["attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"]) {
      const eps = num(file, key(k));
      if (eps !== undefined && !(Number.isFinite(eps) && eps >= 0)) {
        fail(`Invalid hyperparameter: ${key(k)} is ${eps}, it must be a finite number not below 0`);
      }
    }
  }
  const tokens = file.kv.get("tokenizer.ggml.tokens");
  if (tokens?.type === GGUFValueType.ARRAY && tokens.itemType === GGUFValueType.STRING) {
    const seen = new Map<string, number>();
    const list = tokens.value as string[];
    for (let i = 0; i < list.length; i++) {
      const prev = seen.get(list[i]);
      if (prev !== undefined) {
        fail(`Invalid vocabulary: tokens ${prev} and ${i} are both ${JSON.stringify(list[i].slice(0, 40))}`);
      }
      seen.set(list[i], i);
    }
  }
}

/** Headers of files already read and checked (by path, size, mtime, ctime and inode): at most this many. */
const CACHE_SIZE = 4;
const checked = new Map<string, { key: string; header: GGUFFile }>();

/**
 * Reads a GGUF file's header and runs {@linkcode preflight} on it. The result is remembered while
 * the file stays the same (path, size, modification and change times, inode), so loading a model again (a
 * notebook cell run twice, load/close cycles) neither re-reads nor re-parses its header.
 *
 * @throws {GGUFFormatError} When the file is not a valid GGUF file or would abort the engine.
 */
export async function readCheckedHeader(path: string, info: Deno.FileInfo): Promise<GGUFFile> {
  const key = `${info.size}:${info.mtime?.getTime()}:${info.ctime?.getTime()}:${info.ino}`;
  const hit = checked.get(path);
  if (hit?.key === key) {
    checked.delete(path); // most recently used last
    checked.set(path, hit);
    return hit.header;
  }
  const header = await readGGUFFile(path);
  preflight(header);
  checked.set(path, { key, header });
  while (checked.size > CACHE_SIZE) checked.delete(checked.keys().next().value!);
  return header;
}

/** Checks a model path before the engine sees it: exists, is a file, is a well-formed GGUF. Returns the parsed header. */
export async function validateModelFile(path: string): Promise<GGUFFile> {
  const what = `Cannot load model "${path}"`;
  const info = await statFile(path, what);
  try {
    // the header, checked for values the engine would abort the process on (remembered per file)
    return await readCheckedHeader(path, info);
  } catch (e) {
    if (e instanceof GGUFFormatError) {
      throw new LoupeError("BAD_FORMAT", `${what}: ${lowerFirst(e.message)}`, { cause: e });
    }
    throw new LoupeError("BAD_FORMAT", `${what}: ${(e as Error).message}`, { cause: e });
  }
}

function lowerFirst(s: string): string {
  return s.length > 1 && s[1] !== s[1].toUpperCase() ? s[0].toLowerCase() + s.slice(1) : s;
}
