// loupe.h — the C ABI of libloupe, a small layer over llama.h and mtmd.h made for Deno FFI.
//
// Conventions (in the style of llama.h; loupe_session.h, loupe_vision.h and loupe_embed.h follow
// them too):
// - Handles are opaque. Every *_create has a *_free; a free of NULL is a no-op.
// - Names: a function is named after the handle it acts on, which is its first argument:
//   loupe_model_* take a loupe_model *, loupe_ctx_* a loupe_ctx *, loupe_projector_* a
//   loupe_projector *, loupe_image_* a loupe_image *, loupe_embedder_* a loupe_embedder *.
//   A function that makes a handle is named after the handle it makes (loupe_ctx_create takes
//   the model, loupe_image_from_file a path). Library-wide functions have the bare loupe_ prefix.
//   When a call needs a second handle, the context comes first (loupe_ctx_vision_prefill(ctx,
//   proj, ...)).
// - Every exported declaration carries LOUPE_API; libloupe is compiled with
//   -fvisibility=hidden, so nothing else of it is exported.
// - Parameters that would be structs are passed as one JSON string; results that are
//   structured come back as JSON.
// - Strings returned as `char *` are owned by the caller and must be released with
//   loupe_string_free(). Strings returned as `const char *` are owned by the handle and
//   stay valid until the next call on that handle (or its free).
// - No C++ exception crosses this boundary.
//
// Return codes, per family of functions:
//   int32_t status (loads, warm-up, begins, save,  LOUPE_OK (0) or a negative LOUPE_ERR_*
//     prefill)
//   int32_t loupe_ctx_gen_step                     1 finished, 0 call again, or LOUPE_ERR_*
//   int32_t counts into a caller's buffer          the count, -(needed) when the buffer is too
//     (loupe_model_tokenize/_many/_detokenize,     small, INT32_MIN on error; the three tokenizer
//      loupe_ctx_tokens, loupe_ctx_logits)         calls give LOUPE_VOCAB_FAILED when the engine's
//                                                  tokenizer itself failed (message in
//                                                  loupe_last_error): a vocabulary it cannot use
//   int32_t loupe_embedder_begin / _run            a float count, or a negative LOUPE_ERR_*
//   int32_t loupe_ctx_size                         the size, or a negative LOUPE_ERR_*
//   pointers (handles, `char *`, `const char *`)   NULL on error
//   float *_progress                               in [0, 1]
//
// Errors travel on three channels:
//   1. Per thread: loupe_last_error() holds the message of this thread's last failure; a failing
//      call sets it.
//   2. Per handle: loupe_model_error, loupe_ctx_error, loupe_projector_error and
//      loupe_embedder_error hold the last failure recorded on that handle. Calls that may run on
//      a worker thread (marked "nonblocking") record their failures there, since the caller's
//      thread is not the one whose last error was set. loupe_ctx_vision_prefill and
//      loupe_ctx_vision_gen_begin record on the projector.
//   3. A caller's buffer: functions that make a handle and may fail on a worker thread before
//      any handle exists (loupe_ctx_create, loupe_embedder_create, loupe_image_from_bytes,
//      loupe_image_from_file), and loupe_model_memory_estimate, which may overlap them, take
//      `char * err, int32_t err_cap` and copy the reason there (NUL-terminated, cut to
//      err_cap - 1 bytes), since neither the other thread's last error nor a handle that was
//      never made can carry it. They return NULL on failure.
//
// Threads:
// - Calls on one handle must not overlap; calls on different handles may.
// - Thread-safe, callable from any thread at any time, also while another call runs on the same
//   handle: loupe_model_progress, loupe_model_cancel, loupe_projector_progress,
//   loupe_projector_cancel, loupe_ctx_gen_abort, loupe_embedder_abort.
// - Thread-safe library-wide functions: loupe_abi_version, loupe_last_error (this thread's),
//   loupe_string_free, loupe_init (serialised by a lock) and loupe_logs (under a lock).
#pragma once

#include <stddef.h>
#include <stdint.h>

// Marks what libloupe exports (Linux: the library is compiled with -fvisibility=hidden).
#define LOUPE_API __attribute__((visibility("default")))

#ifdef __cplusplus
extern "C" {
#endif

#define LOUPE_ABI_VERSION 6

#define LOUPE_OK              0
#define LOUPE_ERR_INVALID    -1  // bad argument or parameter JSON
#define LOUPE_ERR_LOAD       -2  // the model or a backend could not be loaded
#define LOUPE_ERR_DECODE     -3  // llama_decode failed
#define LOUPE_ERR_CONTEXT    -4  // the prompt does not fit in the context
#define LOUPE_ERR_ABORTED    -5  // stopped by an abort (loupe_ctx_gen_abort, ...) or a load cancel
#define LOUPE_ERR_STATE      -6  // call made in the wrong state (e.g. step before begin)
#define LOUPE_ERR_INTERNAL   -7  // an exception inside the engine
#define LOUPE_ERR_FORMAT     -8  // the engine failed on what a file holds (a vocabulary its tokenizer cannot use)
#define LOUPE_ERR_MEMORY     -9  // an allocation failed (std::bad_alloc inside the engine)

// Returned by loupe_model_tokenize/_many/_detokenize (whose other negative results are counts)
// when the engine's tokenizer threw on the file's vocabulary (LOUPE_ERR_FORMAT's case).
#define LOUPE_VOCAB_FAILED   (INT32_MIN + 1)

typedef struct loupe_model loupe_model;
typedef struct loupe_ctx   loupe_ctx;

// ---- library -------------------------------------------------------------------------

// ABI version of this header (LOUPE_ABI_VERSION).
LOUPE_API int32_t loupe_abi_version(void);

// The last error message of this thread ("" when none). Owned by the library.
LOUPE_API const char * loupe_last_error(void);

// Releases a string returned as `char *` by this library.
LOUPE_API void loupe_string_free(char * s);

// Loads every ggml backend found in `engine_dir` (libggml-<name>[-<variant>].so), choosing
// the best-scoring CPU variant, and records per backend whether it loaded and why not.
// Idempotent: a second call returns the report of the first.
// Returns a JSON array [{name, file, loaded, reason, score, variants:[{file, score, error}]}],
// or NULL on failure (see loupe_last_error).
LOUPE_API char * loupe_init(const char * engine_dir);

// JSON array of devices: [{index, name, description, type, backend, memoryTotal, memoryFree}].
// type is "cpu", "gpu", "igpu" or "accel". Call after loupe_init.
LOUPE_API char * loupe_devices(void);

// Adds the devices of ggml's RPC server at `endpoint` ("host:port"), loading ggml's RPC backend
// module from `rpc_library` first when no backend named "RPC" is registered, as llama.cpp's tools
// do for --rpc (through the module's ggml_backend_rpc_add_server). An endpoint added before is
// not added again. Returns a JSON array of the names of that server's devices ("RPC0", ...), or
// NULL (see loupe_last_error). Call after loupe_init. The engine's RPC client aborts the process
// when the server cannot be reached, fails its handshake, or dies during a call: loupe calls this
// only in an isolated engine (a worker process), after checking the server itself. nonblocking.
LOUPE_API char * loupe_rpc_add_server(const char * rpc_library, const char * endpoint);

// Log lines of the engine (all but debug lines, ggml_log_level in `level`) kept since the last
// call, as a JSON array of {level, text}; the buffer is emptied. Lines are also echoed to stderr
// when the environment variable LOUPE_LOG is set.
LOUPE_API char * loupe_logs(void);

// ---- models --------------------------------------------------------------------------

// Creates an unloaded model handle. params_json:
//   {path, gpuLayers (int, -1 = all), devices: [names] | null, vocabOnly, useMmap,
//    contextSize, batchSize, threads, threadsBatch, flashAttn: "auto"|"on"|"off",
//    defaultContext (default true; false loads the weights without a generation context)}
// Returns NULL when the JSON is invalid.
LOUPE_API loupe_model * loupe_model_create(const char * params_json);

// Loads the weights and creates the default context. nonblocking.
// Returns LOUPE_OK, LOUPE_ERR_LOAD or LOUPE_ERR_ABORTED; message in loupe_model_error.
LOUPE_API int32_t loupe_model_load(loupe_model * model);

// Load progress in [0, 1]; safe to call from another thread while loading.
LOUPE_API float loupe_model_progress(const loupe_model * model);

// Makes an ongoing loupe_model_load stop at its next progress report. Thread-safe.
LOUPE_API void loupe_model_cancel(loupe_model * model);

// The last error recorded on this handle ("" when none). Owned by the handle.
LOUPE_API const char * loupe_model_error(const loupe_model * model);

// JSON description after load: {desc, arch, nParams, size, nCtxTrain, nEmbd, nLayer, nVocab,
// nCtx, bos, eos, addBos, chatTemplate, load: {wallUs}, memory: [{device, buffer, model,
// context, compute}], layers: {total, offloaded}}. Owned by the handle.
LOUPE_API const char * loupe_model_info(loupe_model * model);

LOUPE_API void loupe_model_free(loupe_model * model);

// Tokenizes UTF-8 text of `len` bytes into `out` (capacity `cap`).
// Returns the number of tokens, or -(needed) when cap is too small, or INT32_MIN on error.
LOUPE_API int32_t loupe_model_tokenize(loupe_model * model, const char * text, int32_t len, int32_t add_special,
                                       int32_t parse_special, int32_t * out, int32_t cap);

// Tokenizes `n` UTF-8 texts stored back to back in `text`: text i is the bytes from
// offsets[i] to offsets[i + 1] (`offsets` has n + 1 non-decreasing entries from 0). Writes their
// tokens back to back into `out` (capacity `cap`) and each text's token count into `lengths`
// (n entries), as n calls of loupe_model_tokenize would, in one call: many short texts (an
// embedding batch) cost one FFI crossing instead of n. Runs on the calling thread, as
// loupe_model_tokenize.
// Returns the total number of tokens, or -(needed) when cap is too small (`lengths` is then
// filled all the same), or INT32_MIN on error.
LOUPE_API int32_t loupe_model_tokenize_many(loupe_model * model, const char * text, const int32_t * offsets, int32_t n,
                                            int32_t add_special, int32_t parse_special, int32_t * out, int32_t cap,
                                            int32_t * lengths);

// Turns tokens into UTF-8 text in `out` (capacity `cap`), without NUL.
// Returns the byte count, or -(needed) when cap is too small, or INT32_MIN on error
// (e.g. a token id out of range).
LOUPE_API int32_t loupe_model_detokenize(loupe_model * model, const int32_t * tokens, int32_t n,
                                         int32_t remove_special, int32_t unparse_special, char * out,
                                         int32_t cap);

// Applies the model's own chat template (from its GGUF metadata, or `template_override`
// when not NULL) through llama_chat_apply_template.
// messages_json: [{role, content}]. Returns the prompt, or NULL on error.
LOUPE_API char * loupe_model_chat_apply(loupe_model * model, const char * messages_json,
                                        const char * template_override, int32_t add_assistant);

// The context made at load (from the load parameters). Owned by the model: do not free it
// (loupe_ctx_free ignores it).
LOUPE_API loupe_ctx * loupe_model_context(loupe_model * model);

// Estimates the memory a context would take, per device, without allocating anything (see
// native/memory.cpp). Works on a model handle before loupe_model_load (the weights then count
// too, where they will go) and after it. params_json: those of loupe_ctx_create ({contextSize,
// batchSize, flashAttn}) with kind "generation" (default), or those of loupe_embedder_create
// ({contextSize, seqMax, pooling}) with kind "embedding"; exact: true skips the quick bound.
// The method, cheapest first:
//   "bound"        an upper bound from the file's header is at most half of the smallest free
//                  memory of the host and the GPUs: it fits (no device figures);
//   "layout"       the file is laid out a second time with no_alloc (kept on the handle for later
//                  estimates) and the context laid out on it, as llama.cpp's fit does
//                  (common/fit.cpp): the engine's own figures;
//   "extrapolated" a context past 2^19 cells is laid out at 2^17 and 2^18 cells and extrapolated
//                  linearly (a lower bound: reported only when it does not fit; otherwise it is
//                  laid out as it is).
// Returns JSON {kind, nCtx, nBatch, method, exact, probes, weightsLoaded, mmap, bound, floor,
//   host: {available, total, source}, devices: [{name, type, free, total, model, context,
//   compute, overhead}], shadowUs, layoutUs, wallUs}: devices[0] is the host ("CPU", its free
//   memory that of `host`: MemAvailable bounded by a cgroup limit); model/context/compute are
//   the engine's breakdown (weights, KV cache, compute buffers), overhead the host bookkeeping per
//   cell outside it. nonblocking; may overlap other estimates and loupe_ctx_create on the model.
// Returns NULL on failure, with the reason copied into `err` (capacity `err_cap`, NUL-terminated).
LOUPE_API char * loupe_model_memory_estimate(loupe_model * model, const char * params_json, char * err,
                                             int32_t err_cap);

// ---- contexts ------------------------------------------------------------------------

// Creates another context (its own KV cache) on a loaded model. params_json: {contextSize,
// batchSize, threads, threadsBatch, flashAttn, measure}. nonblocking.
// Returns NULL on failure, with the reason copied into `err` (capacity `err_cap`, NUL-terminated).
LOUPE_API loupe_ctx * loupe_ctx_create(loupe_model * model, const char * params_json, char * err, int32_t err_cap);

// Frees a context made by loupe_ctx_create. A model's own context is left alone.
LOUPE_API void loupe_ctx_free(loupe_ctx * ctx);

// The last error recorded on this context ("" when none). Owned by the context.
LOUPE_API const char * loupe_ctx_error(const loupe_ctx * ctx);

// ---- generation ----------------------------------------------------------------------

// Prepares a generation: tokens of the prompt and options
//   {maxTokens, temperature, topK, topP, minP, repeatPenalty, repeatLastN, seed,
//    stop: [strings], ignoreEos}
// The KV cache is cleared. Returns LOUPE_OK or an error (LOUPE_ERR_CONTEXT when the prompt
// plus at least one generated token cannot fit).
LOUPE_API int32_t loupe_ctx_gen_begin(loupe_ctx * ctx, const char * params_json, const int32_t * tokens,
                                      int32_t n_tokens);

// Runs the generation for at most `budget_ms` milliseconds and, when `max_step_tokens` > 0,
// at most that many new tokens (the prompt is evaluated first); the token loop stays in
// native code. nonblocking.
// Returns 1 when finished, 0 when it should be called again, or a negative error.
LOUPE_API int32_t loupe_ctx_gen_step(loupe_ctx * ctx, int32_t budget_ms, int32_t max_step_tokens);

// Asks a running loupe_ctx_gen_step to stop at the next token or graph. Thread-safe.
LOUPE_API void loupe_ctx_gen_abort(loupe_ctx * ctx);

// What the last loupe_ctx_gen_step produced: {text, tokens, done, stopReason, nPast, nGenerated,
// stages: {<name>: {wallUs, tokens, graphs, devices: {<dev>: {nodes, heavy, ops: {<op>: n},
// firstHeavy}}}}}. `text` and `tokens` are the new ones since the previous call; `stages`
// is cumulative for the generation. Owned by the context. Also: pending (the last sampled token,
// not evaluated yet, or null), reused and events (sessions: see loupe_session.h).
LOUPE_API const char * loupe_ctx_gen_output(loupe_ctx * ctx);

#ifdef __cplusplus
}
#endif
