/**
 * Checks a well-formed GGUF header for values on which llama.cpp would abort the whole process
 * (a failed GGML_ASSERT) instead of returning an error, with the rule tables of ./rules/. Files
 * the engine merely rejects (with an error) are left to it.
 *
 * @module
 */
import { type GGUFFile, GGUFFormatError, readGGUFFile } from "./gguf.ts";
import { applyRules, Header } from "./rules/rule.ts";
import { TEXT_RULES } from "./rules/text.ts";
import { TENSOR_RULES, VOCAB_RULES } from "./rules/vocab.ts";
import { LoupeError } from "../util/errors.ts";
import { statFile } from "../util/files.ts";

/**
 * Throws a {@linkcode GGUFFormatError} when the engine would abort on this header (or run memory
 * away), naming the key, the value and the rule. The rules are tables in ./rules/, each citing
 * the engine line it stands in for: text.ts (hyperparameters), vocab.ts (the vocabulary and the
 * tensors' types).
 */
export function preflight(file: GGUFFile): void {
  const h = new Header(file);
  if (h.arch !== "clip") applyRules(TEXT_RULES, h);
  applyRules(VOCAB_RULES, h);
  applyRules(TENSOR_RULES, h);
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
  let header: GGUFFile;
  try {
    // the header, checked for values the engine would abort the process on (remembered per file)
    header = await readCheckedHeader(path, info);
  } catch (e) {
    if (e instanceof GGUFFormatError) {
      throw new LoupeError("BAD_FORMAT", `${what}: ${lowerFirst(e.message)}`, { cause: e });
    }
    throw new LoupeError("BAD_FORMAT", `${what}: ${(e as Error).message}`, { cause: e });
  }
  const tokenizer = new Header(header).str("tokenizer.ggml.model");
  if (tokenizer === "none" || tokenizer === "no_vocab") {
    // the engine loads such a file, then aborts at the first tokenization (src/llama-vocab.cpp:3417)
    throw new LoupeError(
      "WRONG_KIND",
      `${what}: it has no vocabulary (tokenizer.ggml.model is "${tokenizer}"), and loupe needs one to read and ` +
        "write text",
    );
  }
  return header;
}

function lowerFirst(s: string): string {
  return s.length > 1 && s[1] !== s[1].toUpperCase() ? s[0].toLowerCase() + s.slice(1) : s;
}
