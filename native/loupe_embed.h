// loupe_embed.h — embeddings and reranking: an embedding context on a loaded model that packs
// many token sequences into one batch (one sequence id each) and reads back pooled vectors,
// per-token vectors or rank scores. Conventions as in loupe.h (opaque handles, JSON
// parameters, LOUPE_ERR_* codes, per-thread and per-handle errors, no C++ exception crosses).
#pragma once

#include "loupe.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loupe_embedder loupe_embedder;

// Creates an embedding context on a loaded model (load the model with
// {"defaultContext": false} to skip the generation context). params_json:
//   {contextSize (longest sequence and largest batch in tokens; 0 = min(training context, 4096)),
//    seqMax (sequences per batch; 0 = llama_max_parallel_sequences(); at most contextSize),
//    pooling: "model" | "none" | "mean" | "cls" | "last" | "rank",
//    threads, threadsBatch, flashAttn: "auto"|"on"|"off", measure}
// The KV cache (decoder models) is unified across sequences. nonblocking.
// Returns NULL on failure, with the reason copied into `err` (capacity `err_cap`, NUL-terminated).
LOUPE_API loupe_embedder * loupe_embedder_create(loupe_model * model, const char * params_json, char * err,
                                                 int32_t err_cap);

// Frees the context (not the model).
LOUPE_API void loupe_embedder_free(loupe_embedder * e);

// The last error recorded on this handle ("" when none). Owned by the handle.
LOUPE_API const char * loupe_embedder_error(const loupe_embedder * e);

// JSON: {pooling: "none"|"mean"|"cls"|"last"|"rank", nOut (floats per pooled result), nEmbdOut,
// nClsOut, clsLabels: [string|null], maxTokens (longest sequence accepted), nCtx, nBatch,
// nSeqMax, encoder (true when the model keeps no KV cache and runs llama_encode), bos, eos,
// sep, addBos, addEos, addSep, rerankTemplate (string|null), memory: [{device, buffer, model,
// context, compute}]}. Owned by the handle.
LOUPE_API const char * loupe_embedder_info(loupe_embedder * e);

// Prepares a run over `n_seqs` token sequences: `tokens` holds them back to back and
// `lengths` gives each one's length (at least 1, at most maxTokens). Sequences are packed in
// order into batches of at most `batch_tokens` tokens (0 = nBatch; a longer sequence goes
// alone) and nSeqMax sequences. Clears a pending abort and the measurements.
// Returns the number of floats loupe_embedder_run will write (n_seqs × nOut when pooled, total
// tokens × nEmbdOut with pooling "none"), or a negative LOUPE_ERR_* (LOUPE_ERR_CONTEXT for a
// sequence that is too long).
LOUPE_API int32_t loupe_embedder_begin(loupe_embedder * e, const int32_t * tokens, const int32_t * lengths,
                                       int32_t n_seqs, int32_t batch_tokens);

// Runs the prepared batches (one graph each) and writes the raw (not normalised) results into
// `out` (capacity `out_cap` floats), sequence by sequence. nonblocking.
// Returns the number of floats written, or a negative LOUPE_ERR_* (LOUPE_ERR_ABORTED after
// loupe_embedder_abort).
LOUPE_API int32_t loupe_embedder_run(loupe_embedder * e, float * out, int32_t out_cap);

// Makes the prepared or running loupe_embedder_run stop at its next batch or graph. Thread-safe.
LOUPE_API void loupe_embedder_abort(loupe_embedder * e);

// The last run's measurements: {batches, sequences, stages: {encode: {wallUs, tokens, graphs,
// devices: {<dev>: {nodes, heavy, ops, firstHeavy}}}}}. Owned by the handle.
LOUPE_API const char * loupe_embedder_output(loupe_embedder * e);

#ifdef __cplusplus
}
#endif
