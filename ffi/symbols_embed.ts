/**
 * The symbol table of native/loupe_embed.h (embeddings and reranking), spread into
 * `symbols` in ffi/symbols.ts. The symbol-table test checks it against the header.
 *
 * @module
 */

/** Embedding functions of libloupe. */
export const embedSymbols = {
  // loupe_embedder * loupe_embedder_create(loupe_model * model, const char * params_json, char * err, int32_t err_cap)
  loupe_embedder_create: {
    parameters: [
      "pointer", /* loupe_model * model */
      "buffer", /* const char * params_json */
      "buffer", /* char * err */
      "i32", /* int32_t err_cap */
    ],
    result: "pointer",
    nonblocking: true,
  },
  // void loupe_embedder_free(loupe_embedder * e)
  loupe_embedder_free: { parameters: ["pointer" /* loupe_embedder * e */], result: "void" },
  // const char * loupe_embedder_error(const loupe_embedder * e)
  loupe_embedder_error: { parameters: ["pointer" /* const loupe_embedder * e */], result: "pointer" },
  // const char * loupe_embedder_info(loupe_embedder * e)
  loupe_embedder_info: { parameters: ["pointer" /* loupe_embedder * e */], result: "pointer" },
  // int32_t loupe_embedder_begin(loupe_embedder * e, const int32_t * tokens, const int32_t * lengths,
  //                              int32_t n_seqs, int32_t batch_tokens)
  loupe_embedder_begin: {
    parameters: [
      "pointer", /* loupe_embedder * e */
      "buffer", /* const int32_t * tokens */
      "buffer", /* const int32_t * lengths */
      "i32", /* int32_t n_seqs */
      "i32", /* int32_t batch_tokens */
    ],
    result: "i32",
  },
  // int32_t loupe_embedder_run(loupe_embedder * e, float * out, int32_t out_cap)
  loupe_embedder_run: {
    parameters: [
      "pointer", /* loupe_embedder * e */
      "buffer", /* float * out */
      "i32", /* int32_t out_cap */
    ],
    result: "i32",
    nonblocking: true,
  },
  // void loupe_embedder_abort(loupe_embedder * e)
  loupe_embedder_abort: { parameters: ["pointer" /* loupe_embedder * e */], result: "void" },
  // const char * loupe_embedder_output(loupe_embedder * e)
  loupe_embedder_output: { parameters: ["pointer" /* loupe_embedder * e */], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;
