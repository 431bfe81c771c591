/**
 * The symbol table of native/loupe_session.h (sessions: prefix reuse, context shift, tokens,
 * logits, state files), spread into `symbols` in ffi/symbols.ts. The symbol-table test checks it
 * against the header.
 *
 * @module
 */

/** Session functions of libloupe. */
export const sessionSymbols = {
  // int32_t loupe_ctx_session_begin(loupe_ctx * ctx, const char * params_json, const int32_t * tokens,
  //                                 int32_t n_tokens)
  loupe_ctx_session_begin: {
    parameters: [
      "pointer", /* loupe_ctx * ctx */
      "buffer", /* const char * params_json */
      "buffer", /* const int32_t * tokens */
      "i32", /* int32_t n_tokens */
    ],
    result: "i32",
  },
  // int32_t loupe_ctx_size(const loupe_ctx * ctx)
  loupe_ctx_size: { parameters: ["pointer" /* const loupe_ctx * ctx */], result: "i32" },
  // int32_t loupe_ctx_tokens(loupe_ctx * ctx, int32_t * out, int32_t cap)
  loupe_ctx_tokens: {
    parameters: ["pointer", /* loupe_ctx * ctx */ "buffer", /* int32_t * out */ "i32" /* int32_t cap */],
    result: "i32",
  },
  // int32_t loupe_ctx_logits(loupe_ctx * ctx, float * out, int32_t cap)
  loupe_ctx_logits: {
    parameters: ["pointer", /* loupe_ctx * ctx */ "buffer", /* float * out */ "i32" /* int32_t cap */],
    result: "i32",
  },
  // int32_t loupe_ctx_save(loupe_ctx * ctx, const char * path, const char * meta_json)
  loupe_ctx_save: {
    parameters: [
      "pointer", /* loupe_ctx * ctx */
      "buffer", /* const char * path */
      "buffer", /* const char * meta_json */
    ],
    result: "i32",
    nonblocking: true,
  },
  // char * loupe_ctx_load(loupe_ctx * ctx, const char * path)
  loupe_ctx_load: {
    parameters: ["pointer", /* loupe_ctx * ctx */ "buffer" /* const char * path */],
    result: "pointer",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;
