// loupe_vision.h — vision through a multimodal projector (mtmd): projectors, images and the
// multimodal prompt. Same conventions as loupe.h (opaque handles, JSON in and out, `char *`
// results freed with loupe_string_free, LOUPE_ERR_* codes, no C++ exception crosses).
#pragma once

#include "loupe.h"

#ifdef __cplusplus
extern "C" {
#endif

// Largest image side and pixel count loupe decodes; larger declared sizes are refused from the
// file header, before any pixel memory is allocated.
#define LOUPE_IMAGE_MAX_SIDE   16384
#define LOUPE_IMAGE_MAX_PIXELS (64 * 1024 * 1024)
// Largest encoded audio file and longest clip loupe decodes.
#define LOUPE_AUDIO_MAX_BYTES   (64 * 1024 * 1024)
#define LOUPE_AUDIO_MAX_SECONDS 3600

typedef struct loupe_projector loupe_projector;
typedef struct loupe_image     loupe_image;

// ---- projectors ----------------------------------------------------------------------

// Creates an unloaded projector for a loaded model (which must outlive it). params_json:
//   {path, gpu (bool, default true), device (name, e.g. "Vulkan0") | null, threads,
//    flashAttn: "auto"|"on"|"off", measure (bool, default true)}
// With gpu true and no device, mtmd picks the first GPU. Returns NULL on bad parameters.
LOUPE_API loupe_projector * loupe_projector_create(loupe_model * model, const char * params_json);

// Loads the projector file (mtmd_init_from_file, with its reserve-only warm-up). nonblocking.
// Returns LOUPE_OK, LOUPE_ERR_LOAD (e.g. embedding width mismatch) or LOUPE_ERR_ABORTED.
LOUPE_API int32_t loupe_projector_load(loupe_projector * proj);

// Estimates what loading would take, per device, before loading: mtmd_get_memory_usage lays the
// projector out with no_alloc (weights) and reserves its warm-up graph (the compute buffer for
// an image of the encoder's largest size); on a GPU those buffers are taken for a moment, on the
// CPU they are never touched. Call before loupe_projector_load. nonblocking.
// Returns JSON {device, host: {available, total, source}, devices: [{name, type, free, total,
// bytes}], wallUs} (bytes: weights and compute together), or NULL on error (message in
// loupe_projector_error). Free with loupe_string_free.
LOUPE_API char * loupe_projector_memory_estimate(loupe_projector * proj);

// Load progress in [0, 1]; safe to call from another thread while loading.
LOUPE_API float loupe_projector_progress(const loupe_projector * proj);

// Makes an ongoing loupe_projector_load stop at its next progress report. Thread-safe.
LOUPE_API void loupe_projector_cancel(loupe_projector * proj);

// Encodes one blank image of the projector's native size, measuring where the encoder's graph
// runs (the "projector warm-up" stage of loupe_projector_info). nonblocking.
LOUPE_API int32_t loupe_projector_warmup(loupe_projector * proj);

// The last error recorded on this handle ("" when none). Owned by the handle.
LOUPE_API const char * loupe_projector_error(const loupe_projector * proj);

// JSON after load: {projectorType, device, gpu, marker, nEmbd, imageSize, patchSize,
// vision, audio, audioSampleRate, mrope, nonCausal, tiles, loadUs, stages: {<name>: stage}}.
// Owned by the handle.
LOUPE_API const char * loupe_projector_info(loupe_projector * proj);

LOUPE_API void loupe_projector_free(loupe_projector * proj);

// ---- images --------------------------------------------------------------------------

// Decodes an encoded image (JPEG, PNG, BMP or GIF, by the engine's own decoder, stb_image)
// after checking its format and declared size. nonblocking.
// Returns NULL on failure with the reason in `err` (capacity `err_cap`, NUL-terminated),
// prefixed by a code: "format: ", "size: " or "corrupt: ".
LOUPE_API loupe_image * loupe_image_from_bytes(const uint8_t * data, size_t len, char * err, int32_t err_cap);

// Reads and decodes an image file, as loupe_image_from_bytes. nonblocking.
LOUPE_API loupe_image * loupe_image_from_file(const char * path, char * err, int32_t err_cap);

// An image from raw RGB pixels (3 bytes per pixel, rows top to bottom): `len` must be
// width * height * 3. Returns NULL on bad sizes (see loupe_last_error).
LOUPE_API loupe_image * loupe_image_from_rgb(uint32_t width, uint32_t height, const uint8_t * rgb, size_t len);

// Decodes an audio clip (WAV, MP3 or FLAC, by the engine's own decoder, miniaudio) at the
// projector's sample rate into a medium that prompts take like an image (loupe_image). The
// projector must have an audio encoder. nonblocking.
// Returns NULL on failure with the reason in `err`, prefixed by a code: "format: ", "size: ",
// "corrupt: ", "unsupported: " (no audio encoder) or "state: ".
LOUPE_API loupe_image * loupe_projector_audio_from_bytes(loupe_projector * proj, const uint8_t * data, size_t len, char * err,
                                               int32_t err_cap);

// JSON {width, height, decodeUs, format, audio} (an audio clip: width is its samples, height 1).
// Returns NULL for NULL.
LOUPE_API char * loupe_image_info(const loupe_image * image);

LOUPE_API void loupe_image_free(loupe_image * image);

// ---- multimodal prompts --------------------------------------------------------------

// Evaluates a prompt with images (or audio clips) into `ctx` (whose model must be the
// projector's): `prompt` is split at the projector's media marker (one per medium, in order),
// text is tokenized (params_json: {addSpecial, parseSpecial, reuse}), each medium is
// preprocessed, encoded and its embeddings decoded into the context; text between them is
// decoded in batches, at explicit positions that follow each medium's n_pos (M-RoPE models place
// an image's tokens at fewer positions than cells). Stages: "image preprocess" (or "audio
// preprocess"), "image encode", "audio encode", "image decode", "audio decode", "prompt".
// Without `reuse` the KV cache is cleared first; with it (a session) the longest common prefix
// of cells is kept and only the rest is evaluated: params `prefix` (the cells before the new
// text, -1 where the cache holds a medium) keeps those media, which are not encoded again; a
// medium of the new text is never taken for a cached one. Afterwards the KV cache holds the whole prompt and the last
// logits are ready for loupe_ctx_vision_gen_begin. The context's history (loupe_session.h) holds
// -1 at a medium's cells, and each medium is an atomic span. The prompt must end with text; a
// prompt whose cells do not fit the context is refused before anything is evaluated (a medium's
// tokens are never cut). nonblocking.
// Returns LOUPE_OK or an error (message in loupe_projector_error); result in
// loupe_projector_output.
LOUPE_API int32_t loupe_ctx_vision_prefill(loupe_ctx * ctx, loupe_projector * proj, const char * prompt,
                                           loupe_image * const * images, int32_t n_images, const char * params_json);

// Starts generating from the prompt the last loupe_ctx_vision_prefill left in `ctx`, with the
// options of loupe_ctx_gen_begin (and no new tokens), plus a session's {contextShift, nKeep}
// (a shift never cuts a medium; under M-RoPE it cannot move positions and stops with
// contextFull). Continue with loupe_ctx_gen_step and
// loupe_ctx_gen_output. Returns LOUPE_OK, or LOUPE_ERR_STATE when the context no longer holds that
// prompt (message in loupe_projector_error).
LOUPE_API int32_t loupe_ctx_vision_gen_begin(loupe_ctx * ctx, loupe_projector * proj, const char * params_json);

// What the last loupe_ctx_vision_prefill did: {nPast (cells), nPos (next position), reused
// (cells kept), textTokens: [ids], imageTokens, audioTokens (cells), positions, chunks:
// [{type: "text"|"image"|"audio", tokens, positions}], images: [{width, height}], stages:
// {<name>: stage}}. After
// LOUPE_ERR_ABORTED: {aborted: true, stages} with what ran before the abort (an abort during an
// image encode cuts its graph short: the encode stage then counts the nodes that ran). "{}" after
// other errors. Owned by the projector.
LOUPE_API const char * loupe_projector_output(loupe_projector * proj);

// ---- Vulkan drivers ------------------------------------------------------------------

// The Vulkan physical devices as the system's Vulkan loader reports them (independent of
// ggml): [{index, name, type, apiVersion, driverVersion, vendorId, deviceId, driverName,
// driverInfo}]; [] when there is no Vulkan loader. Used to key per-driver verdicts.
LOUPE_API char * loupe_vulkan_drivers(void);

#ifdef __cplusplus
}
#endif
