// loupe_internal.h — shared by libloupe's C++ files; not part of the C ABI.
#pragma once

#include "loupe.h"

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

using json = nlohmann::ordered_json;

// Declared in the engine's src/llama-ext.h (exported by libllama, not part of llama.h).
struct llama_memory_breakdown_data {
    size_t model   = 0;
    size_t context = 0;
    size_t compute = 0;
};
using llama_memory_breakdown = std::map<ggml_backend_buffer_type_t, llama_memory_breakdown_data>;
LLAMA_API llama_memory_breakdown llama_get_memory_breakdown(const struct llama_context * ctx);
LLAMA_API int32_t llama_model_n_devices(const struct llama_model * model);
LLAMA_API ggml_backend_dev_t llama_model_get_device(const struct llama_model * model, int i);

namespace loupe {

// Sets this thread's last error and returns `code`.
int32_t fail(int32_t code, std::string msg);
// fail(), and the message copied into a caller's buffer `err` (capacity `err_cap`) as well.
void fail_into(int32_t code, const std::string & msg, char * err, int32_t err_cap);

// A malloc'd copy, to be released with loupe_string_free.
char * dup_string(const std::string & s);

int64_t now_us();

// Collects the engine's warning and error lines while in scope (for error messages).
struct log_capture {
    std::string lines;
    std::string * prev;
    log_capture();
    ~log_capture();
};

// ---- graph measuring -------------------------------------------------------------------

bool is_heavy(enum ggml_op op);

// Counts per device and op for one stage.
struct stage_stats {
    int64_t wall_us = 0;
    int64_t tokens  = 0;
    int64_t graphs  = 0;
    std::vector<std::vector<int64_t>> ops;  // device index -> op -> count
    std::vector<std::string> first_heavy;

    void count(int dev, enum ggml_op op, const char * tensor_name);
};

// Maps buffer types to device names; index 0 is the host (CPU).
struct device_table {
    std::vector<std::string> names{ "CPU" };
    std::unordered_map<ggml_backend_buffer_type_t, int> by_buft;

    int index_of(ggml_backend_buffer_t buf);
};

json stage_json(const stage_stats & s, const device_table & devs);

// What a graph measurement is attached to: the eval callback counts into `cur_stage`.
struct measured {
    device_table devices;
    stage_stats * cur_stage = nullptr;
    // While set (an image encode, which has no abort callback of its own), the graph runs in
    // pieces of stop_check_nodes nodes, and once the flag is true the rest of each split is
    // skipped. The caller checks the flag afterwards and throws the partial result away.
    const std::atomic<bool> * stop = nullptr;
    int64_t since_check = 0;
    static constexpr int64_t stop_check_nodes = 128;
};

// ggml_backend_sched_eval_callback: counts every node into the `measured` user data, and cuts
// the graph short once `stop` is raised.
bool eval_callback(struct ggml_tensor * t, bool ask, void * user_data);

// Something that records errors: sets its own message and the thread's.
struct error_holder {
    std::string error;
    int32_t set_error(int32_t code, const std::string & msg) {
        error = msg;
        return fail(code, msg);
    }
};

// Runs `f`, turning C++ exceptions into error codes on `h` (may be null): a JSON parameter that is
// missing or of the wrong type, or a std::invalid_argument, is LOUPE_ERR_INVALID, anything else
// LOUPE_ERR_INTERNAL.
template <typename F>
int32_t guarded(error_holder * h, F && f) {
    try {
        return f();
    } catch (const json::exception & e) {
        const std::string msg = std::string("invalid parameters: ") + e.what();
        return h ? h->set_error(LOUPE_ERR_INVALID, msg) : fail(LOUPE_ERR_INVALID, msg);
    } catch (const std::invalid_argument & e) {
        // a bad argument the engine or loupe rejected (a grammar that does not parse, ...)
        return h ? h->set_error(LOUPE_ERR_INVALID, e.what()) : fail(LOUPE_ERR_INVALID, e.what());
    } catch (const std::bad_alloc & e) {
        const std::string msg = std::string("out of memory (") + e.what() + ")";
        return h ? h->set_error(LOUPE_ERR_MEMORY, msg) : fail(LOUPE_ERR_MEMORY, msg);
    } catch (const std::exception & e) {
        return h ? h->set_error(LOUPE_ERR_INTERNAL, e.what()) : fail(LOUPE_ERR_INTERNAL, e.what());
    } catch (...) {
        return h ? h->set_error(LOUPE_ERR_INTERNAL, "unknown exception") : fail(LOUPE_ERR_INTERNAL, "unknown exception");
    }
}

// For the tokenizer calls, whose negative results are counts: an exception inside the engine's
// tokenizer is LOUPE_VOCAB_FAILED, its message in this thread's last error.
template <typename F>
int32_t vocab_guarded(F && f) {
    try {
        return f();
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_FORMAT, std::string("the vocabulary's tokenizer failed: ") + e.what());
    } catch (...) {
        fail(LOUPE_ERR_FORMAT, "the vocabulary's tokenizer failed");
    }
    return LOUPE_VOCAB_FAILED;
}

// A persistent CPU threadpool attached to a context, as llama.cpp's own tools attach one:
// without it ggml creates and joins its worker threads for every graph (every decoded token).
// Frees its pools on destruction; detach (llama_detach_threadpool) before llama_free.
struct cpu_threadpool {
    ggml_threadpool * pool = nullptr;
    ggml_threadpool * pool_batch = nullptr;
    void (*free_fn)(ggml_threadpool *) = nullptr;
    void (*pause_fn)(ggml_threadpool *) = nullptr;

    // Creates the pools and attaches them; does nothing when the CPU backend lacks the entry points.
    void attach(llama_context * ctx, int n_threads, int n_threads_batch);
    // Puts the workers to sleep at once instead of letting them spin for the next graph (ggml
    // resumes a paused pool when it starts one). Call when a native call returns to the host:
    // a worker still spinning would take a core from the host's own work between calls.
    void idle();
    ~cpu_threadpool();
};

// Idles a threadpool when a native call returns to the host, however it returns.
struct idle_on_return {
    cpu_threadpool & pool;
    ~idle_on_return() { pool.idle(); }
};

// Sets what every context shares from JSON params: threads, threadsBatch, flashAttn, and the
// graph measuring (`measure`, default true) into `counts`; no_perf on.
void apply_common_params(llama_context_params & cp, const json & p, measured * counts);

// Creates a llama context and attaches a CPU threadpool to it. Returns nullptr with the engine's
// reason in `err` ("cannot create <what>: …").
llama_context * init_context(llama_model * model, const llama_context_params & cp, cpu_threadpool & threads,
                             const char * what, std::string & err);

}  // namespace loupe

namespace loupe {

// An image's (or an audio clip's) cells in the KV cache: [start, end) cells, at `n_pos`
// positions (fewer than its cells under M-RoPE, where a whole image shares one temporal
// position).
struct media_span {
    int32_t start = 0;
    int32_t end   = 0;
    int32_t n_pos = 0;
};

}  // namespace loupe

namespace loupe {

// One generation's sampling and stopping state: a context's (loupe_ctx) or a batch slot's
// (native/batch.cpp). The functions below work on it without knowing which.
struct gen_state {
    llama_sampler * sampler = nullptr;
    // Plain greedy decoding (temperature <= 0, no penalties): the token loop takes the argmax of
    // the logits itself, the greedy sampler's choice (the first maximum) without filling and
    // scanning a candidate array of n_vocab entries for every token.
    bool greedy = false;
    std::vector<llama_token> prompt;
    size_t prompt_done = 0;
    bool active = false;
    bool done = false;
    std::string stop_reason;
    int32_t max_tokens = 0;
    int32_t n_generated = 0;
    bool ignore_eos = false;
    llama_token pending = -1;  // sampled but not yet decoded
    std::vector<std::string> stops;
    std::set<llama_token> preserved;  // special tokens written out as text (a chat format's markers)
    std::string text;          // generated text so far (stop strings removed)
    size_t emitted = 0;        // bytes of `text` already reported
    std::vector<llama_token> new_tokens;
    std::map<std::string, stage_stats> stages;

    gen_state() = default;
    gen_state(const gen_state &) = delete;
    gen_state & operator=(const gen_state &) = delete;
    ~gen_state();
};

// Sets up sampling and the stopping state from gen_begin parameters (every sampling key is
// required, see loupe_ctx_gen_begin): the sampler chain with its grammar, stop strings, limits;
// the text, counters and stages start empty.
void begin_sampling(gen_state * g, const llama_vocab * vocab, const json & p, const int32_t * tokens, int32_t n_tokens);

// Ends the generation with `reason`.
void finish(gen_state * g, const char * reason);

// Appends a token's text and applies the stop strings. Returns true when a stop string ended it.
bool append_piece(gen_state * g, const llama_vocab * vocab, llama_token tok);

// The token chosen from the logits of output `idx` of the last decode.
llama_token sample_token(gen_state * g, llama_context * ctx, const llama_vocab * vocab, int32_t idx);

// The text generated since the last call, holding back a possible start of a stop string and an
// unfinished UTF-8 sequence until the generation is done.
std::string take_text(gen_state * g);

}  // namespace loupe

// ---- handles -----------------------------------------------------------------------------

struct loupe_ctx : loupe::error_holder, loupe::measured, loupe::gen_state {
    loupe_model * owner = nullptr;
    loupe::cpu_threadpool threads;  // destroyed after ctx is freed (declared before it)
    llama_context * ctx = nullptr;
    std::atomic<bool> abort{ false };
    std::string output;  // loupe_ctx_gen_output's JSON
    // The next position to evaluate at. Equal to the cells in the cache (history.size()) except
    // after media under M-RoPE, whose tokens take fewer positions than cells: capacity is counted
    // in cells, positions only place tokens.
    int32_t n_past = 0;
    llama_batch batch{};        // reused by decode_tokens (explicit positions)
    int32_t     batch_cap = 0;  // its capacity in tokens

    // sessions (native/session.cpp): what the KV cache holds, prefix reuse and context shift
    std::vector<llama_token> history;             // tokens in the KV cache, cell by cell (-1: a media cell)
    std::vector<loupe::media_span> media;         // media in the cache, in order (their cells hold -1)
    bool shift_enabled = false;                   // shift instead of stopping with contextFull
    bool shift_unsettled = false;                 // a shift whose K-rotation has not run yet
    int32_t n_keep = 0;                           // tokens a shift never drops
    std::vector<int32_t> turn_starts;             // token indexes where a turn begins
    std::vector<std::pair<int32_t, int32_t>> atomic;  // [start, end) ranges a shift never cuts (besides media)
    int32_t reused = 0;                           // tokens kept from the cache by this call
    int64_t begin_us = 0;                         // when this call began
    json events = json::array();                  // this call's context shifts

    ~loupe_ctx();
};

struct loupe_model : loupe::error_holder {
    json params;
    llama_model * model = nullptr;
    // The same file loaded with no_alloc (tensor shapes, no data) on the same devices, made by the
    // first memory estimate and kept for the next (native/memory.cpp); guarded by shadow_mutex.
    llama_model * shadow = nullptr;
    json shape;  // what the file's header says of the model's size (native/memory.cpp), once read
    std::mutex shadow_mutex;
    const llama_vocab * vocab = nullptr;
    loupe_ctx * default_ctx = nullptr;  // owned
    std::atomic<float> progress{ 0.0f };
    std::atomic<bool> cancel{ false };
    std::string info;
    int64_t load_us = 0;

    ~loupe_model();
};

namespace loupe {

// What a llama_model_params points to: the device list and the tensor split.
struct model_placement {
    std::vector<ggml_backend_dev_t> devs;
    std::vector<float> split;
};

// The llama_model_params of loupe_model_create's JSON (gpuLayers, vocabOnly, useMmap, devices,
// tensorSplit, splitMode, mainGpu); `place` holds what they point to. Throws
// std::invalid_argument for a device name no backend has, or a split longer than the engine takes.
llama_model_params model_params(const json & p, model_placement & place);

// The llama_context_params of a generation context (loupe_ctx_create's JSON) for a model trained
// on `n_train` tokens, without the callbacks: those are set by make_context.
llama_context_params generation_params(int32_t n_train, const json & p);

// The llama_context_params of an embedding context (loupe_embedder_create's JSON) for a model
// trained on `n_train` tokens, without the callbacks. Returns false with the reason in `err` for
// bad parameters.
bool embedding_params(int32_t n_train, const json & p, llama_context_params & cp, std::string & err);

// The host's available memory: {available, total, source: "meminfo"|"cgroup"|"engine"}
// (native/memory.cpp).
json host_memory();

// The memory a context would take per device (see loupe_model_memory_estimate). Returns null
// with the reason in `err`.
json memory_estimate(loupe_model * m, const json & p, std::string & err);

// Creates a context on a loaded model from JSON parameters (see loupe_ctx_create).
// Returns nullptr with the reason in `err`.
loupe_ctx * make_context(loupe_model * m, const json & p, std::string & err);

// Decodes `n` tokens at the context's current position (explicit positions n_past, n_past + 1,
// ...), measuring into `stage`.
int32_t decode_tokens(loupe_ctx * c, llama_token * tokens, int32_t n, stage_stats & stage);

// Cells of the KV cache in use (history.size()).
inline int32_t n_cells(const loupe_ctx * c) {
    return (int32_t) c->history.size();
}

// The position of cell `cell` (a text cell, or the first cell of a media span, or n_cells):
// cells minus what the media before it save by taking fewer positions than cells.
int32_t pos_of_cell(const loupe_ctx * c, int32_t cell);

// Whether every cell has its own position (no M-RoPE media in the cache): a shift needs it.
bool positions_are_cells(const loupe_ctx * c);

// Empties the KV cache and everything that describes it (history, media, spans, turns).
void clear_cache(loupe_ctx * c);

// Keeps the first `n_keep` cells of the cache and drops the rest (a cut inside a media span moves
// to its start). Returns the cells kept: 0 when the memory cannot drop a part (then it is
// cleared: a recurrent model's memory starts over).
int32_t keep_cells(loupe_ctx * c, int32_t n_keep);

// Sets up sampling and the generation state from gen_begin parameters (both begin calls).
void begin_generation(loupe_ctx * c, const json & p, const int32_t * tokens, int32_t n_tokens);

// Context shift (native/session.cpp): makes the evaluated tokens plus the `pending` not yet
// evaluated fit in `limit` tokens by dropping whole turns after n_keep (see loupe_session.h).
// Returns LOUPE_OK, or LOUPE_ERR_CONTEXT when nothing can be dropped (message set on `c`).
int32_t shift_context(loupe_ctx * c, int32_t pending, int32_t limit);

}  // namespace loupe
