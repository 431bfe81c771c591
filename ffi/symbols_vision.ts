/**
 * The symbol table of native/loupe_vision.h (projectors, images, multimodal prompts, Vulkan
 * drivers), spread into `symbols` in ffi/symbols.ts. The symbol-table test checks it against the
 * header.
 *
 * @module
 */

/** Vision functions of libloupe. */
export const visionSymbols = {
  // loupe_projector * loupe_projector_create(loupe_model * model, const char * params_json)
  loupe_projector_create: {
    parameters: ["pointer", /* loupe_model * model */ "buffer" /* const char * params_json */],
    result: "pointer",
  },
  // int32_t loupe_projector_load(loupe_projector * proj)
  loupe_projector_load: { parameters: ["pointer" /* loupe_projector * proj */], result: "i32", nonblocking: true },
  // float loupe_projector_progress(const loupe_projector * proj)
  loupe_projector_progress: { parameters: ["pointer" /* const loupe_projector * proj */], result: "f32" },
  // void loupe_projector_cancel(loupe_projector * proj)
  loupe_projector_cancel: { parameters: ["pointer" /* loupe_projector * proj */], result: "void" },
  // char * loupe_projector_memory_estimate(loupe_projector * proj)
  loupe_projector_memory_estimate: {
    parameters: ["pointer" /* loupe_projector * proj */],
    result: "pointer",
    nonblocking: true,
  },
  // int32_t loupe_projector_warmup(loupe_projector * proj)
  loupe_projector_warmup: { parameters: ["pointer" /* loupe_projector * proj */], result: "i32", nonblocking: true },
  // const char * loupe_projector_error(const loupe_projector * proj)
  loupe_projector_error: { parameters: ["pointer" /* const loupe_projector * proj */], result: "pointer" },
  // const char * loupe_projector_info(loupe_projector * proj)
  loupe_projector_info: { parameters: ["pointer" /* loupe_projector * proj */], result: "pointer" },
  // void loupe_projector_free(loupe_projector * proj)
  loupe_projector_free: { parameters: ["pointer" /* loupe_projector * proj */], result: "void" },

  // loupe_image * loupe_image_from_bytes(const uint8_t * data, size_t len, char * err, int32_t err_cap)
  loupe_image_from_bytes: {
    parameters: [
      "buffer", /* const uint8_t * data */
      "usize", /* size_t len */
      "buffer", /* char * err */
      "i32", /* int32_t err_cap */
    ],
    result: "pointer",
    nonblocking: true,
  },
  // loupe_image * loupe_projector_audio_from_bytes(loupe_projector * proj, const uint8_t * data, size_t len, char * err, int32_t err_cap)
  loupe_projector_audio_from_bytes: {
    parameters: [
      "pointer", /* loupe_projector * proj */
      "buffer", /* const uint8_t * data */
      "usize", /* size_t len */
      "buffer", /* char * err */
      "i32", /* int32_t err_cap */
    ],
    result: "pointer",
    nonblocking: true,
  },
  // loupe_image * loupe_image_from_file(const char * path, char * err, int32_t err_cap)
  loupe_image_from_file: {
    parameters: ["buffer", /* const char * path */ "buffer", /* char * err */ "i32" /* int32_t err_cap */],
    result: "pointer",
    nonblocking: true,
  },
  // loupe_image * loupe_image_from_rgb(uint32_t width, uint32_t height, const uint8_t * rgb, size_t len)
  loupe_image_from_rgb: {
    parameters: [
      "u32", /* uint32_t width */
      "u32", /* uint32_t height */
      "buffer", /* const uint8_t * rgb */
      "usize", /* size_t len */
    ],
    result: "pointer",
  },
  // char * loupe_image_info(const loupe_image * image)
  loupe_image_info: { parameters: ["pointer" /* const loupe_image * image */], result: "pointer" },
  // void loupe_image_free(loupe_image * image)
  loupe_image_free: { parameters: ["pointer" /* loupe_image * image */], result: "void" },

  // int32_t loupe_ctx_vision_prefill(loupe_ctx * ctx, loupe_projector * proj, const char * prompt,
  //                                  loupe_image * const * images, int32_t n_images, const char * params_json)
  loupe_ctx_vision_prefill: {
    parameters: [
      "pointer", /* loupe_ctx * ctx */
      "pointer", /* loupe_projector * proj */
      "buffer", /* const char * prompt */
      "buffer", /* loupe_image * const * images */
      "i32", /* int32_t n_images */
      "buffer", /* const char * params_json */
    ],
    result: "i32",
    nonblocking: true,
  },
  // int32_t loupe_ctx_vision_gen_begin(loupe_ctx * ctx, loupe_projector * proj, const char * params_json)
  loupe_ctx_vision_gen_begin: {
    parameters: [
      "pointer", /* loupe_ctx * ctx */
      "pointer", /* loupe_projector * proj */
      "buffer", /* const char * params_json */
    ],
    result: "i32",
  },
  // const char * loupe_projector_output(loupe_projector * proj)
  loupe_projector_output: { parameters: ["pointer" /* loupe_projector * proj */], result: "pointer" },

  // char * loupe_vulkan_drivers(void)
  loupe_vulkan_drivers: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;
