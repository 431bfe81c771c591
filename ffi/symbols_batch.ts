/**
 * The symbol table of native/loupe_batch.h (continuous batching: slots on one context, one
 * decode per step for all), spread into `symbols` in ffi/symbols.ts. The symbol-table test checks
 * it against the header.
 *
 * @module
 */

/** Batching functions of libloupe. */
export const batchSymbols = {
  // loupe_batch * loupe_batch_create(loupe_model * model, const char * params_json, char * err, int32_t err_cap)
  loupe_batch_create: {
    parameters: [
      "pointer", /* loupe_model * model */
      "buffer", /* const char * params_json */
      "buffer", /* char * err */
      "i32", /* int32_t err_cap */
    ],
    result: "pointer",
    nonblocking: true,
  },
  // void loupe_batch_free(loupe_batch * batch)
  loupe_batch_free: { parameters: ["pointer" /* loupe_batch * batch */], result: "void" },
  // const char * loupe_batch_error(const loupe_batch * batch)
  loupe_batch_error: { parameters: ["pointer" /* const loupe_batch * batch */], result: "pointer" },
  // const char * loupe_batch_info(loupe_batch * batch)
  loupe_batch_info: { parameters: ["pointer" /* loupe_batch * batch */], result: "pointer" },
  // int32_t loupe_batch_start(loupe_batch * batch, const char * params_json, const int32_t * tokens,
  //                           int32_t n_tokens)
  loupe_batch_start: {
    parameters: [
      "pointer", /* loupe_batch * batch */
      "buffer", /* const char * params_json */
      "buffer", /* const int32_t * tokens */
      "i32", /* int32_t n_tokens */
    ],
    result: "i32",
  },
  // void loupe_batch_cancel(loupe_batch * batch, int32_t slot)
  loupe_batch_cancel: { parameters: ["pointer", /* loupe_batch * batch */ "i32" /* int32_t slot */], result: "void" },
  // void loupe_batch_interrupt(loupe_batch * batch)
  loupe_batch_interrupt: { parameters: ["pointer" /* loupe_batch * batch */], result: "void" },
  // int32_t loupe_batch_step(loupe_batch * batch, int32_t budget_ms, int32_t max_steps)
  loupe_batch_step: {
    parameters: ["pointer", /* loupe_batch * batch */ "i32", /* int32_t budget_ms */ "i32" /* int32_t max_steps */],
    result: "i32",
    nonblocking: true,
  },
  // const char * loupe_batch_output(loupe_batch * batch)
  loupe_batch_output: { parameters: ["pointer" /* loupe_batch * batch */], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;
