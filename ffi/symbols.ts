/**
 * The symbol table of libloupe, kept by hand beside native/loupe.h (a test checks one against
 * the other). Calls that may take long are `nonblocking`: they run on a worker thread and
 * return a Promise, so a notebook kernel stays responsive.
 *
 * @module
 */
import { batchSymbols } from "./symbols_batch.ts";
import { chatSymbols } from "./symbols_chat.ts";
import { embedSymbols } from "./symbols_embed.ts";
import { sessionSymbols } from "./symbols_session.ts";
import { visionSymbols } from "./symbols_vision.ts";

export const symbols = {
  ...batchSymbols,
  ...chatSymbols,
  ...embedSymbols,
  ...sessionSymbols,
  ...visionSymbols,
  // int32_t loupe_abi_version(void)
  loupe_abi_version: { parameters: [], result: "i32" },
  // const char * loupe_last_error(void)
  loupe_last_error: { parameters: [], result: "pointer" },
  // void loupe_string_free(char * s)
  loupe_string_free: { parameters: ["pointer" /* char * s */], result: "void" },
  // char * loupe_init(const char * engine_dir)
  loupe_init: { parameters: ["buffer" /* const char * engine_dir */], result: "pointer" },
  // char * loupe_devices(void)
  loupe_devices: { parameters: [], result: "pointer" },
  // char * loupe_rpc_add_server(const char * rpc_library, const char * endpoint)
  loupe_rpc_add_server: {
    parameters: ["buffer", /* const char * rpc_library */ "buffer" /* const char * endpoint */],
    result: "pointer",
    nonblocking: true,
  },
  // char * loupe_logs(void)
  loupe_logs: { parameters: [], result: "pointer" },

  // loupe_model * loupe_model_create(const char * params_json)
  loupe_model_create: { parameters: ["buffer" /* const char * params_json */], result: "pointer" },
  // int32_t loupe_model_load(loupe_model * model)
  loupe_model_load: { parameters: ["pointer" /* loupe_model * model */], result: "i32", nonblocking: true },
  // float loupe_model_progress(const loupe_model * model)
  loupe_model_progress: { parameters: ["pointer" /* const loupe_model * model */], result: "f32" },
  // void loupe_model_cancel(loupe_model * model)
  loupe_model_cancel: { parameters: ["pointer" /* loupe_model * model */], result: "void" },
  // const char * loupe_model_error(const loupe_model * model)
  loupe_model_error: { parameters: ["pointer" /* const loupe_model * model */], result: "pointer" },
  // const char * loupe_model_info(loupe_model * model)
  loupe_model_info: { parameters: ["pointer" /* loupe_model * model */], result: "pointer" },
  // void loupe_model_free(loupe_model * model)
  loupe_model_free: { parameters: ["pointer" /* loupe_model * model */], result: "void" },

  // int32_t loupe_model_tokenize(loupe_model * model, const char * text, int32_t len,
  //                              int32_t add_special, int32_t parse_special, int32_t * out, int32_t cap)
  loupe_model_tokenize: {
    parameters: [
      "pointer", /* loupe_model * model */
      "buffer", /* const char * text */
      "i32", /* int32_t len */
      "i32", /* int32_t add_special */
      "i32", /* int32_t parse_special */
      "buffer", /* int32_t * out */
      "i32", /* int32_t cap */
    ],
    result: "i32",
  },
  // int32_t loupe_model_tokenize_many(loupe_model * model, const char * text, const int32_t * offsets, int32_t n,
  //                                   int32_t add_special, int32_t parse_special, int32_t * out, int32_t cap,
  //                                   int32_t * lengths)
  loupe_model_tokenize_many: {
    parameters: [
      "pointer", /* loupe_model * model */
      "buffer", /* const char * text */
      "buffer", /* const int32_t * offsets */
      "i32", /* int32_t n */
      "i32", /* int32_t add_special */
      "i32", /* int32_t parse_special */
      "buffer", /* int32_t * out */
      "i32", /* int32_t cap */
      "buffer", /* int32_t * lengths */
    ],
    result: "i32",
  },
  // int32_t loupe_model_detokenize(loupe_model * model, const int32_t * tokens, int32_t n,
  //                                int32_t remove_special, int32_t unparse_special, char * out, int32_t cap)
  loupe_model_detokenize: {
    parameters: [
      "pointer", /* loupe_model * model */
      "buffer", /* const int32_t * tokens */
      "i32", /* int32_t n */
      "i32", /* int32_t remove_special */
      "i32", /* int32_t unparse_special */
      "buffer", /* char * out */
      "i32", /* int32_t cap */
    ],
    result: "i32",
  },
  // char * loupe_model_chat_apply(loupe_model * model, const char * messages_json,
  //                               const char * template_override, int32_t add_assistant)
  loupe_model_chat_apply: {
    parameters: [
      "pointer", /* loupe_model * model */
      "buffer", /* const char * messages_json */
      "buffer", /* const char * template_override */
      "i32", /* int32_t add_assistant */
    ],
    result: "pointer",
  },

  // loupe_ctx * loupe_model_context(loupe_model * model)
  loupe_model_context: { parameters: ["pointer" /* loupe_model * model */], result: "pointer" },
  // char * loupe_model_memory_estimate(loupe_model * model, const char * params_json, char * err, int32_t err_cap)
  loupe_model_memory_estimate: {
    parameters: [
      "pointer", /* loupe_model * model */
      "buffer", /* const char * params_json */
      "buffer", /* char * err */
      "i32", /* int32_t err_cap */
    ],
    result: "pointer",
    nonblocking: true,
  },

  // loupe_ctx * loupe_ctx_create(loupe_model * model, const char * params_json, char * err, int32_t err_cap)
  loupe_ctx_create: {
    parameters: [
      "pointer", /* loupe_model * model */
      "buffer", /* const char * params_json */
      "buffer", /* char * err */
      "i32", /* int32_t err_cap */
    ],
    result: "pointer",
    nonblocking: true,
  },
  // void loupe_ctx_free(loupe_ctx * ctx)
  loupe_ctx_free: { parameters: ["pointer" /* loupe_ctx * ctx */], result: "void" },
  // const char * loupe_ctx_error(const loupe_ctx * ctx)
  loupe_ctx_error: { parameters: ["pointer" /* const loupe_ctx * ctx */], result: "pointer" },

  // int32_t loupe_ctx_gen_begin(loupe_ctx * ctx, const char * params_json,
  //                             const int32_t * tokens, int32_t n_tokens)
  loupe_ctx_gen_begin: {
    parameters: [
      "pointer", /* loupe_ctx * ctx */
      "buffer", /* const char * params_json */
      "buffer", /* const int32_t * tokens */
      "i32", /* int32_t n_tokens */
    ],
    result: "i32",
  },
  // int32_t loupe_ctx_gen_step(loupe_ctx * ctx, int32_t budget_ms, int32_t max_step_tokens)
  loupe_ctx_gen_step: {
    parameters: [
      "pointer", /* loupe_ctx * ctx */
      "i32", /* int32_t budget_ms */
      "i32", /* int32_t max_step_tokens */
    ],
    result: "i32",
    nonblocking: true,
  },
  // void loupe_ctx_gen_abort(loupe_ctx * ctx)
  loupe_ctx_gen_abort: { parameters: ["pointer" /* loupe_ctx * ctx */], result: "void" },
  // const char * loupe_ctx_gen_output(loupe_ctx * ctx)
  loupe_ctx_gen_output: { parameters: ["pointer" /* loupe_ctx * ctx */], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The opened library's functions. */
export type LoupeSymbols = Deno.DynamicLibrary<typeof symbols>["symbols"];
