/**
 * A thin wrapper over one `loupe_chat *` (a model's chat templates in the engine's chat layer):
 * the only place that holds that pointer. JSON goes in and out as the header describes.
 *
 * @module
 */
import type { NativeModel } from "./model.ts";
import { cstr, lastError, type NativeApi, NativeError, readJson, takeJson, takeString } from "./util.ts";

/** The status of a NULL result from the chat functions: they all fail on bad input. */
const INVALID = -1;

/** One `loupe_chat *` handle. */
export class NativeChat {
  #api: NativeApi;
  #ptr: Deno.PointerObject | null;

  /** Makes the chat templates of `model` (or of `template`, when given); throws the engine's message. */
  constructor(model: NativeModel, template: string | null) {
    const api = model.api;
    this.#api = api;
    const ptr = api.loupe_chat_create(
      model.pointer(),
      cstr(JSON.stringify({ template: template?.toWellFormed() ?? null })),
    );
    if (ptr === null) throw new NativeError(INVALID, lastError(api));
    this.#ptr = ptr;
  }

  #handle(): Deno.PointerObject {
    if (this.#ptr === null) throw new NativeError(-6, "the native chat was freed");
    return this.#ptr;
  }

  /** What the templates are (see loupe_chat.h). */
  info<T>(): T {
    return readJson<T>(this.#api, this.#api.loupe_chat_info(this.#handle()));
  }

  /** Renders a conversation (inputs as loupe_chat_apply takes them). */
  apply<T>(inputs: Record<string, unknown>): T {
    return this.#take<T>(this.#api.loupe_chat_apply(this.#handle(), cstr(JSON.stringify(inputs))));
  }

  /** Parses a reply (params as loupe_chat_parse takes them). */
  parse<T>(text: string, params: Record<string, unknown>): T {
    return this.#take<T>(
      this.#api.loupe_chat_parse(this.#handle(), cstr(text.toWellFormed()), cstr(JSON.stringify(params))),
    );
  }

  /** A JSON result; NULL is the engine refusing its input (the thread's last error says why). */
  #take<T>(ptr: Deno.PointerValue): T {
    if (ptr === null) throw new NativeError(INVALID, lastError(this.#api));
    return takeJson<T>(this.#api, ptr);
  }

  /** Frees the handle; later calls throw. Idempotent. */
  free(): void {
    if (this.#ptr !== null) {
      this.#api.loupe_chat_free(this.#ptr);
      this.#ptr = null;
    }
  }
}

/** The GBNF grammar of a JSON Schema (the engine's converter); throws its message. */
export function schemaToGrammar(api: NativeApi, schema: unknown): string {
  const ptr = api.loupe_json_schema_to_grammar(cstr(JSON.stringify(schema)));
  try {
    return takeString(api, ptr);
  } catch (e) {
    throw new NativeError(INVALID, (e as Error).message);
  }
}
