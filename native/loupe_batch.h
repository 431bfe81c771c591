// loupe_batch.h — continuous batching: one context whose KV cache holds `parallel` sequences
// (slots), and a token loop that decodes every active slot in one llama_decode per step, as
// llama.cpp's tools/server does. Same conventions as loupe.h.
//
// A request is started in a free slot (loupe_batch_start). Each step builds one batch: the token
// each generating slot sampled last, then the prompt tokens of the slots still reading their
// prompt, as many as the batch holds (a long prompt is read over several steps, side by side with
// the others' generation). After the decode every slot whose last token was in the batch samples
// its next token. A new request may start between any two steps; a slot keeps its cache when its
// request ends, and a new request whose tokens begin with what a free slot holds reuses that
// prefix (the slot with the longest common prefix is chosen, else the one idle longest).
//
// Slots are not unified: each has contextSize / parallel cells of the KV cache (llama.cpp's
// kv_unified false, the default of llama-server with -np); a request whose tokens reach its
// slot's size stops with stopReason "contextFull".
//
// Threads: calls on one batch must not overlap, except loupe_batch_cancel and
// loupe_batch_interrupt, which are thread-safe and may be called while a step runs.
#pragma once

#include "loupe.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loupe_batch loupe_batch;

// The most alternatives a request may ask log-probabilities of (OpenAI's top_logprobs limit).
#define LOUPE_BATCH_MAX_LOGPROBS 20

// Creates a batching context on a loaded model. params_json: {parallel (slots, 1..256),
// contextSize (cells of all slots together; 0: parallel times the model's default), batchSize,
// threads, threadsBatch, flashAttn, measure}. nonblocking.
// Returns NULL on failure, with the reason copied into `err` (capacity `err_cap`, NUL-terminated).
LOUPE_API loupe_batch * loupe_batch_create(loupe_model * model, const char * params_json, char * err, int32_t err_cap);

LOUPE_API void loupe_batch_free(loupe_batch * batch);

// The last error recorded on this batch ("" when none). Owned by the batch.
LOUPE_API const char * loupe_batch_error(const loupe_batch * batch);

// JSON {parallel, nCtx, nCtxSlot, nBatch, threads}. Owned by the batch.
LOUPE_API const char * loupe_batch_info(loupe_batch * batch);

// Starts a request in a free slot. params_json: the options of loupe_ctx_gen_begin plus
// {id (the caller's number for the request, echoed in the output), logprobs (-1: none; 0..20:
// the log-probability of each generated token and of that many most likely alternatives, from
// the raw logits)}. `tokens` is the whole prompt; the longest prefix of it the chosen slot holds
// is kept.
// Returns the slot index (>= 0), LOUPE_ERR_STATE when no slot is free, LOUPE_ERR_CONTEXT when
// the prompt and one generated token do not fit a slot, or LOUPE_ERR_INVALID (a token out of
// range, bad parameters); message in loupe_batch_error.
LOUPE_API int32_t loupe_batch_start(loupe_batch * batch, const char * params_json, const int32_t * tokens,
                                    int32_t n_tokens);

// Ends the request in `slot` at the next step with stopReason "aborted" (its output then reports
// it done). Thread-safe; a free slot or an index out of range is ignored.
LOUPE_API void loupe_batch_cancel(loupe_batch * batch, int32_t slot);

// Makes a running loupe_batch_step return after its current decode (the caller has a request to
// start or a result to deliver). Thread-safe.
LOUPE_API void loupe_batch_interrupt(loupe_batch * batch);

// Runs steps until `budget_ms` has passed, `max_steps` steps have run (0: no limit), some slot
// sampled its first token or finished, loupe_batch_interrupt was called, or no slot is active.
// nonblocking.
// Returns the number of slots with a request (running, or done and not yet reported by
// loupe_batch_output), or a negative error: a failed decode ends every request in the batch
// (each reported done with stopReason "error").
LOUPE_API int32_t loupe_batch_step(loupe_batch * batch, int32_t budget_ms, int32_t max_steps);

// What happened since the last call:
//   {slots: [{slot, id, text, tokens, logprobs: [{id, logprob, bytes: [..], top: [{id, logprob,
//             bytes}]}], done, stopReason, nPrompt, nCached, nGenerated, firstTokenUs, wallUs,
//             steps, sharedSteps, maxSlots, stages (when done: {<name>: stage, as loupe.h})}],
//    steps: [{atUs, tokens, slots, wallUs}], busy, totalSteps, deviceTokens: {<device>: tokens}}
// with an entry per slot that has news (tokens, text, or its end); `text` is new text (held back at
// a possible stop string's start), `tokens` the new tokens; firstTokenUs and wallUs are
// microseconds since the request started (firstTokenUs -1 before it). A slot reported done is
// free afterwards. deviceTokens counts each batch's tokens on the devices that ran its heavy ops.
// Owned by the batch.
LOUPE_API const char * loupe_batch_output(loupe_batch * batch);

#ifdef __cplusplus
}
#endif
