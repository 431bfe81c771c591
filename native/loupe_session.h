// loupe_session.h — sessions on a loupe_ctx: the KV cache kept between calls (prefix reuse),
// context shift, the evaluated tokens and logits, and saved state. Same conventions as loupe.h.
//
// A context used through loupe_ctx_session_begin keeps, between calls, the tokens it has evaluated
// (its "history", position by position) and the last sampled token not yet evaluated ("pending",
// in loupe_ctx_gen_output). A new call passes the whole token sequence it wants in the cache; the
// longest common prefix with the history is kept and only the rest is evaluated.
//
// Context shift: when a token is to be evaluated at position n_ctx - 1 (the rule of llama.cpp's
// tools/completion), or a new prompt does not fit, the first `nKeep` tokens stay and the oldest
// half of the rest is dropped (llama_memory_seq_rm), the later positions moved back
// (llama_memory_seq_add), and the call goes on. Cut rule: the dropped range ends at the first
// turn start at or after the halfway point; when the last turn alone is longer than that, its
// oldest tokens are cut; an atomic span (an image's tokens) is never cut: the cut moves to the
// span's end, or, when the span reaches the end, to its start; when nothing can be dropped the
// call stops with stopReason "contextFull" (during generation) or fails with LOUPE_ERR_CONTEXT
// (a prompt). Each shift is an event in loupe_ctx_gen_output:
//   events: [{kind: "contextShift", position, dropped, nPastBefore, nPastAfter, cut, atUs}]
// with cut "turn", "tokens" or "atomic"; `reused` there is the count of tokens kept from the
// cache at the start of the call.
//
// State files: magic "LOUPESES", u32 version (1), u32 header length, the header (UTF-8 JSON:
// {"native": {...}, "meta": <the caller's JSON>}), then the engine state (llama_state_get_data).
// All integers are little-endian.
#pragma once

#include "loupe.h"

#ifdef __cplusplus
extern "C" {
#endif

// Starts a generation on a session context. params_json: the options of loupe_ctx_gen_begin plus
//   {contextShift: bool (default false), nKeep: int, turns: [token index where a turn starts],
//    atomic: [[start, end]] (token ranges a shift must not cut)}
// indexes are into `tokens`. Returns LOUPE_OK, LOUPE_ERR_INVALID (bad token, nKeep inside an
// atomic span or leaving no room) or LOUPE_ERR_CONTEXT (the tokens do not fit and contextShift
// is off). Continue with loupe_ctx_gen_step / loupe_ctx_gen_output as for loupe_ctx_gen_begin.
LOUPE_API int32_t loupe_ctx_session_begin(loupe_ctx * ctx, const char * params_json, const int32_t * tokens,
                                          int32_t n_tokens);

// The context size in tokens (llama.cpp may round the requested size up).
LOUPE_API int32_t loupe_ctx_size(const loupe_ctx * ctx);

// The tokens in the KV cache, in position order, into `out` (capacity `cap`).
// Returns the count, -(needed) when cap is too small, or INT32_MIN on error.
LOUPE_API int32_t loupe_ctx_tokens(loupe_ctx * ctx, int32_t * out, int32_t cap);

// The logits of the last evaluated token (one float per vocabulary entry) into `out`
// (capacity `cap` floats). Returns the vocabulary size, -(needed) when cap is too small, or
// INT32_MIN when nothing was evaluated yet (see loupe_last_error).
LOUPE_API int32_t loupe_ctx_logits(loupe_ctx * ctx, float * out, int32_t cap);

// Writes the session (history, pending token, turns, atomic spans, nKeep and the engine state)
// to `path`, with `meta_json` (any JSON) stored in the header. A shift whose K-rotation has not
// run yet is settled first by evaluating the last token again. nonblocking.
// Returns LOUPE_OK or an error (message in loupe_ctx_error).
LOUPE_API int32_t loupe_ctx_save(loupe_ctx * ctx, const char * path, const char * meta_json);

// Reads a state file written by loupe_ctx_save into this context, after checking it was
// saved from a model with the same architecture, vocabulary, width, depth and parameter count.
// nonblocking.
// Returns the stored meta JSON (free with loupe_string_free), or NULL on error (message in
// loupe_ctx_error; the context is then cleared).
LOUPE_API char * loupe_ctx_load(loupe_ctx * ctx, const char * path);

#ifdef __cplusplus
}
#endif
