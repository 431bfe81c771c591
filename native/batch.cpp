// batch.cpp — continuous batching (loupe_batch.h): slots on one context, one llama_decode per
// step for all of them, prefix reuse per slot, per-request measured stages.

#include "loupe_batch.h"
#include "loupe_internal.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <queue>

namespace loupe {

namespace {

// One sequence of the batch context and the request it serves.
struct batch_slot : gen_state {
    int32_t index = 0;
    int64_t id = -1;
    bool busy = false;                 // has a request (running, or done and not yet reported)
    std::atomic<bool> cancel{ false };
    std::vector<llama_token> cache;    // tokens in this slot's sequence of the KV cache
    int64_t last_used_us = 0;
    int32_t n_logprobs = -1;
    json logprobs = json::array();     // entries since the last output
    int32_t i_batch = -1;              // output index of its last token in the current batch
    int32_t n_prompt = 0;
    int32_t n_cached = 0;
    int64_t start_us = 0;
    int64_t first_token_us = -1;
    int64_t end_us = 0;
    int64_t steps = 0;
    int64_t shared_steps = 0;
    int32_t max_slots = 0;
    bool news = false;                 // something to report
};

// Adds one step's graph counts and wall time to a slot's stage.
void add_stage(stage_stats & into, const stage_stats & step, int64_t tokens) {
    into.wall_us += step.wall_us;
    into.graphs += step.graphs;
    into.tokens += tokens;
    if (into.ops.size() < step.ops.size()) {
        into.ops.resize(step.ops.size(), std::vector<int64_t>(GGML_OP_COUNT, 0));
        into.first_heavy.resize(step.ops.size());
    }
    for (size_t d = 0; d < step.ops.size(); d++) {
        for (int op = 0; op < GGML_OP_COUNT; op++) {
            into.ops[d][op] += step.ops[d][op];
        }
        if (into.first_heavy[d].empty()) {
            into.first_heavy[d] = step.first_heavy[d];
        }
    }
}

// The bytes of a token's text (special tokens written out).
json token_bytes(const llama_vocab * vocab, llama_token tok) {
    char buf[256];
    int32_t n = llama_token_to_piece(vocab, tok, buf, sizeof(buf), 0, true);
    std::string piece;
    if (n < 0) {
        piece.resize(-n);
        n = llama_token_to_piece(vocab, tok, piece.data(), -n, 0, true);
        piece.resize(std::max(n, 0));
    } else {
        piece.assign(buf, n);
    }
    json bytes = json::array();
    for (unsigned char ch : piece) {
        bytes.push_back((int) ch);
    }
    return bytes;
}

// The log-probability of `tok` and of the `top` most likely tokens, from the raw logits of
// output `idx` (a log-softmax over the whole vocabulary).
json token_logprobs(llama_context * ctx, const llama_vocab * vocab, int32_t idx, llama_token tok, int32_t top) {
    const float * logits = llama_get_logits_ith(ctx, idx);
    const int32_t n = llama_vocab_n_tokens(vocab);
    float max = logits[0];
    for (int32_t i = 1; i < n; i++) {
        max = std::max(max, logits[i]);
    }
    double sum = 0;
    for (int32_t i = 0; i < n; i++) {
        sum += std::exp((double) logits[i] - max);
    }
    const double lse = max + std::log(sum);
    // the `top` largest, by a min-heap (ties: the lower id first, as a stable sort would give)
    using entry = std::pair<float, int32_t>;
    auto worse = [](const entry & a, const entry & b) {
        return a.first != b.first ? a.first > b.first : a.second < b.second;
    };
    std::priority_queue<entry, std::vector<entry>, decltype(worse)> heap(worse);
    for (int32_t i = 0; i < n && top > 0; i++) {
        if ((int32_t) heap.size() < top) {
            heap.push({ logits[i], i });
        } else if (logits[i] > heap.top().first) {
            heap.pop();
            heap.push({ logits[i], i });
        }
    }
    std::vector<entry> best;
    while (!heap.empty()) {
        best.push_back(heap.top());
        heap.pop();
    }
    std::reverse(best.begin(), best.end());
    json tops = json::array();
    for (const auto & [logit, id] : best) {
        tops.push_back({ { "id", id }, { "logprob", (double) logit - lse }, { "bytes", token_bytes(vocab, id) } });
    }
    return { { "id", tok },
             { "logprob", (double) logits[tok] - lse },
             { "bytes", token_bytes(vocab, tok) },
             { "top", tops } };
}

size_t common_prefix(const std::vector<llama_token> & a, const int32_t * b, int32_t n) {
    size_t i = 0;
    while (i < a.size() && i < (size_t) n && a[i] == b[i]) {
        i++;
    }
    return i;
}

}  // namespace

}  // namespace loupe

using namespace loupe;

struct loupe_batch : error_holder, measured {
    loupe_model * owner = nullptr;
    cpu_threadpool threads;  // destroyed after ctx is freed (declared before it)
    llama_context * ctx = nullptr;
    llama_batch batch{};
    int32_t n_batch = 0;
    int32_t n_ctx_slot = 0;
    std::vector<std::unique_ptr<batch_slot>> slots;
    std::atomic<bool> interrupt{ false };
    std::atomic<bool> stopping{ false };  // the abort callback's flag (a free during a decode never happens: calls do not overlap)
    stage_stats step;                     // the current step's counts
    json step_log = json::array();        // steps since the last output
    int64_t total_steps = 0;
    int64_t created_us = 0;
    std::map<std::string, int64_t> device_tokens;
    std::string info;
    std::string output;

    ~loupe_batch() {
        slots.clear();
        if (n_batch > 0) {
            llama_batch_free(batch);
        }
        if (ctx) {
            llama_detach_threadpool(ctx);
            llama_free(ctx);
        }
    }
};

namespace {

bool batch_abort(void * data) {
    return static_cast<loupe_batch *>(data)->stopping.load();
}

void end_request(batch_slot * s, const char * reason) {
    finish(s, reason);
    s->end_us = now_us();
    s->news = true;
}

// Samples the next token of every slot whose last token got logits in the batch just decoded.
// Returns whether some slot sampled its first token or finished.
bool sample_slots(loupe_batch * b) {
    const llama_vocab * vocab = b->owner->vocab;
    bool event = false;
    for (auto & sp : b->slots) {
        batch_slot * s = sp.get();
        if (s->i_batch < 0 || !s->active) {
            s->i_batch = -1;
            continue;
        }
        const int32_t idx = s->i_batch;
        s->i_batch = -1;
        if (s->n_generated >= s->max_tokens) {
            end_request(s, "maxTokens");
            event = true;
            continue;
        }
        llama_token tok = sample_token(s, b->ctx, vocab, idx);
        if (s->first_token_us < 0) {
            s->first_token_us = now_us() - s->start_us;
            event = true;
        }
        if (!s->ignore_eos && llama_vocab_is_eog(vocab, tok)) {
            end_request(s, "eos");
            event = true;
            continue;
        }
        s->n_generated++;
        s->new_tokens.push_back(tok);
        s->news = true;
        if (s->n_logprobs >= 0) {
            s->logprobs.push_back(token_logprobs(b->ctx, vocab, idx, tok, s->n_logprobs));
        }
        s->pending = tok;
        if (append_piece(s, vocab, tok)) {
            end_request(s, "stop");
            event = true;
        } else if (s->n_generated >= s->max_tokens) {
            end_request(s, "maxTokens");
            event = true;
        }
    }
    return event;
}

// Builds and decodes one batch of every active slot. Returns 1 when a decode ran, 0 when no slot
// had anything to decode, or a negative error.
int32_t run_step(loupe_batch * b, bool & event) {
    llama_batch & batch = b->batch;
    batch.n_tokens = 0;
    struct part {
        batch_slot * slot;
        int32_t prompt_tokens;
        int32_t gen_tokens;
    };
    std::vector<part> parts;
    auto add = [&](batch_slot * s, llama_token tok, bool logits) {
        const int32_t i = batch.n_tokens++;
        batch.token[i] = tok;
        batch.pos[i] = (llama_pos) s->cache.size();
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = s->index;
        batch.logits[i] = logits;
        s->cache.push_back(tok);
        if (logits) {
            s->i_batch = i;
        }
    };
    // the generating slots' sampled tokens first, one each
    for (auto & sp : b->slots) {
        batch_slot * s = sp.get();
        if (!s->active) {
            continue;
        }
        if (s->cancel.load()) {
            end_request(s, "aborted");
            event = true;
            continue;
        }
        if (s->pending >= 0) {
            if ((int32_t) s->cache.size() >= b->n_ctx_slot) {
                end_request(s, "contextFull");
                event = true;
                continue;
            }
            add(s, s->pending, true);
            s->pending = -1;
            parts.push_back({ s, 0, 1 });
        }
    }
    // then prompts, as much as the batch holds
    for (auto & sp : b->slots) {
        batch_slot * s = sp.get();
        if (!s->active || s->prompt_done >= s->prompt.size() || batch.n_tokens >= b->n_batch) {
            continue;
        }
        const int32_t room = b->n_batch - batch.n_tokens;
        const int32_t n = (int32_t) std::min<size_t>(room, s->prompt.size() - s->prompt_done);
        for (int32_t k = 0; k < n; k++) {
            const bool last = s->prompt_done + k + 1 == s->prompt.size();
            add(s, s->prompt[s->prompt_done + k], last);
        }
        s->prompt_done += n;
        parts.push_back({ s, n, 0 });
    }
    if (batch.n_tokens == 0) {
        return 0;
    }
    for (auto & row : b->step.ops) {
        std::fill(row.begin(), row.end(), 0);
    }
    for (auto & f : b->step.first_heavy) {
        f.clear();
    }
    b->step.wall_us = 0;
    b->step.graphs = 0;
    b->step.tokens = 0;
    b->cur_stage = &b->step;
    const int64_t t0 = now_us();
    int32_t rc;
    {
        log_capture cap;
        rc = llama_decode(b->ctx, batch);
        b->cur_stage = nullptr;
        if (rc != 0) {
            // the cache of every slot in the batch no longer matches what it holds: end them all
            for (auto & p : parts) {
                llama_memory_seq_rm(llama_get_memory(b->ctx), p.slot->index, -1, -1);
                p.slot->cache.clear();
                p.slot->i_batch = -1;
                end_request(p.slot, "error");
            }
            event = true;
            if (rc == 2 || b->stopping.load()) {
                return b->set_error(LOUPE_ERR_ABORTED, "aborted");
            }
            return b->set_error(LOUPE_ERR_DECODE, "llama_decode failed with code " + std::to_string(rc) +
                                                      (cap.lines.empty() ? "" : ": " + cap.lines));
        }
    }
    llama_synchronize(b->ctx);
    const int64_t t1 = now_us();
    b->step.wall_us = t1 - t0;
    b->step.graphs = 1;
    b->total_steps++;
    const int32_t n_slots = (int32_t) parts.size();
    for (auto & p : parts) {
        batch_slot * s = p.slot;
        s->steps++;
        if (n_slots > 1) {
            s->shared_steps++;
        }
        s->max_slots = std::max(s->max_slots, n_slots);
        if (p.prompt_tokens > 0) {
            add_stage(s->stages["prompt"], b->step, p.prompt_tokens);
        } else {
            add_stage(s->stages["generation"], b->step, p.gen_tokens);
        }
    }
    for (size_t d = 0; d < b->step.ops.size(); d++) {
        int64_t heavy = 0;
        for (int op = 0; op < GGML_OP_COUNT; op++) {
            if (is_heavy((enum ggml_op) op)) {
                heavy += b->step.ops[d][op];
            }
        }
        if (heavy > 0) {
            b->device_tokens[b->devices.names[d]] += batch.n_tokens;
        }
    }
    b->step_log.push_back({ { "atUs", t0 - b->created_us },
                            { "tokens", batch.n_tokens },
                            { "slots", n_slots },
                            { "wallUs", t1 - t0 } });
    if (b->step_log.size() > 4096) {
        b->step_log.erase(b->step_log.begin());  // a caller that never reads keeps the last steps only
    }
    const int64_t t_sample = now_us();
    if (sample_slots(b)) {
        event = true;
    }
    const int64_t sample_us = now_us() - t_sample;
    for (auto & p : parts) {
        stage_stats & st = p.slot->stages["sampling"];
        st.wall_us += sample_us / n_slots;
        st.tokens += p.gen_tokens > 0 || p.slot->prompt_done == p.slot->prompt.size() ? 1 : 0;
    }
    return 1;
}

int32_t busy_count(const loupe_batch * b) {
    int32_t n = 0;
    for (const auto & s : b->slots) {
        n += s->busy ? 1 : 0;
    }
    return n;
}

}  // namespace

extern "C" {

loupe_batch * loupe_batch_create(loupe_model * m, const char * params_json, char * err, int32_t err_cap) {
    std::string msg;
    try {
        if (!m || !m->model) {
            msg = "model is not loaded";
        } else {
            json p = json::parse(params_json ? params_json : "{}");
            const int32_t parallel = p.value("parallel", 4);
            if (parallel < 1 || parallel > 256) {
                throw std::invalid_argument("parallel must be 1..256, not " + std::to_string(parallel));
            }
            llama_context_params cp = generation_params(llama_model_n_ctx_train(m->model), p);
            if (p.value("contextSize", 0) <= 0) {
                cp.n_ctx *= parallel;
            }
            cp.n_seq_max = parallel;
            cp.kv_unified = false;
            auto b = std::make_unique<loupe_batch>();
            b->owner = m;
            apply_common_params(cp, p, b.get());
            cp.abort_callback = batch_abort;
            cp.abort_callback_data = b.get();
            b->ctx = init_context(m->model, cp, b->threads, "a batching context", msg);
            if (b->ctx) {
                b->n_batch = (int32_t) llama_n_batch(b->ctx);
                b->n_ctx_slot = (int32_t) llama_n_ctx_seq(b->ctx);
                b->batch = llama_batch_init(b->n_batch, 0, 1);
                for (int32_t i = 0; i < parallel; i++) {
                    b->slots.push_back(std::make_unique<batch_slot>());
                    b->slots.back()->index = i;
                }
                b->created_us = now_us();
                b->info = json({ { "parallel", parallel },
                                 { "nCtx", (int32_t) llama_n_ctx(b->ctx) },
                                 { "nCtxSlot", b->n_ctx_slot },
                                 { "nBatch", b->n_batch },
                                 { "threads", llama_n_threads(b->ctx) } })
                              .dump();
                return b.release();
            }
        }
    } catch (const std::exception & e) {
        msg = e.what();
    }
    fail_into(LOUPE_ERR_LOAD, msg, err, err_cap);
    return nullptr;
}

void loupe_batch_free(loupe_batch * b) {
    delete b;
}

const char * loupe_batch_error(const loupe_batch * b) {
    return b ? b->error.c_str() : "batch is NULL";
}

const char * loupe_batch_info(loupe_batch * b) {
    if (!b) {
        fail(LOUPE_ERR_INVALID, "batch is NULL");
        return nullptr;
    }
    return b->info.c_str();
}

int32_t loupe_batch_start(loupe_batch * b, const char * params_json, const int32_t * tokens, int32_t n_tokens) {
    if (!b || !b->ctx) {
        return fail(LOUPE_ERR_STATE, "batch is NULL");
    }
    if (n_tokens <= 0 || !tokens) {
        return b->set_error(LOUPE_ERR_INVALID, "the prompt is empty");
    }
    return guarded(b, [&]() -> int32_t {
        json p = json::parse(params_json ? params_json : "{}");
        if (n_tokens + 1 > b->n_ctx_slot) {
            return b->set_error(LOUPE_ERR_CONTEXT, "the prompt has " + std::to_string(n_tokens) +
                                                       " tokens but a slot holds " + std::to_string(b->n_ctx_slot) +
                                                       " (including one token to generate)");
        }
        const int32_t n_vocab = llama_vocab_n_tokens(b->owner->vocab);
        for (int32_t i = 0; i < n_tokens; i++) {
            if (tokens[i] < 0 || tokens[i] >= n_vocab) {
                return b->set_error(LOUPE_ERR_INVALID, "prompt token " + std::to_string(tokens[i]) + " is out of range");
            }
        }
        const int32_t n_logprobs = p.value("logprobs", -1);
        if (n_logprobs > LOUPE_BATCH_MAX_LOGPROBS) {
            return b->set_error(LOUPE_ERR_INVALID, "logprobs must be at most " +
                                                       std::to_string(LOUPE_BATCH_MAX_LOGPROBS) + ", not " +
                                                       std::to_string(n_logprobs));
        }
        // the free slot holding the longest prefix of the prompt, else the one idle longest
        batch_slot * best = nullptr;
        size_t best_common = 0;
        for (auto & sp : b->slots) {
            batch_slot * s = sp.get();
            if (s->busy) {
                continue;
            }
            const size_t common = common_prefix(s->cache, tokens, n_tokens);
            if (!best || common > best_common || (common == best_common && s->last_used_us < best->last_used_us)) {
                best = s;
                best_common = common;
            }
        }
        if (!best) {
            return b->set_error(LOUPE_ERR_STATE, "no slot is free");
        }
        batch_slot * s = best;
        begin_sampling(s, b->owner->vocab, p, tokens, n_tokens);
        // keep the common prefix, but evaluate at least the last prompt token again: its logits
        size_t keep = std::min(best_common, (size_t) n_tokens - 1);
        llama_memory_t mem = llama_get_memory(b->ctx);
        if (!llama_memory_seq_rm(mem, s->index, (llama_pos) keep, -1)) {
            llama_memory_seq_rm(mem, s->index, -1, -1);  // a memory that cannot drop a part: start over
            keep = 0;
        }
        s->cache.resize(keep);
        s->prompt_done = keep;
        s->id = p.value("id", (int64_t) -1);
        s->n_logprobs = n_logprobs;
        s->logprobs = json::array();
        s->cancel.store(false);
        s->busy = true;
        s->news = false;
        s->i_batch = -1;
        s->n_prompt = n_tokens;
        s->n_cached = (int32_t) keep;
        s->start_us = now_us();
        s->last_used_us = s->start_us;
        s->first_token_us = -1;
        s->end_us = 0;
        s->steps = 0;
        s->shared_steps = 0;
        s->max_slots = 0;
        return s->index;
    });
}

void loupe_batch_cancel(loupe_batch * b, int32_t slot) {
    if (b && slot >= 0 && slot < (int32_t) b->slots.size()) {
        b->slots[slot]->cancel.store(true);
        b->interrupt.store(true);
    }
}

void loupe_batch_interrupt(loupe_batch * b) {
    if (b) {
        b->interrupt.store(true);
    }
}

int32_t loupe_batch_step(loupe_batch * b, int32_t budget_ms, int32_t max_steps) {
    if (!b || !b->ctx) {
        return fail(LOUPE_ERR_STATE, "batch is NULL");
    }
    return guarded(b, [&]() -> int32_t {
        const int64_t deadline = now_us() + (int64_t) std::max(budget_ms, 0) * 1000;
        int32_t steps = 0;
        while (true) {
            bool event = false;
            int32_t rc = run_step(b, event);  // ends the cancelled requests first
            if (rc < 0) {
                b->threads.idle();
                return rc;
            }
            const bool interrupted = b->interrupt.exchange(false);
            if (rc == 0 || event || interrupted || (max_steps > 0 && ++steps >= max_steps) || now_us() > deadline) {
                break;
            }
        }
        bool active = false;
        for (const auto & s : b->slots) {
            active = active || s->active;
        }
        if (!active) {
            b->threads.idle();  // nothing to decode until the caller starts a request
        }
        return busy_count(b);
    });
}

const char * loupe_batch_output(loupe_batch * b) {
    if (!b) {
        fail(LOUPE_ERR_INVALID, "batch is NULL");
        return nullptr;
    }
    try {
        json slots = json::array();
        const int64_t now = now_us();
        for (auto & sp : b->slots) {
            batch_slot * s = sp.get();
            if (!s->busy || (!s->news && !s->done)) {
                continue;
            }
            std::string text = take_text(s);
            json e = { { "slot", s->index },
                       { "id", s->id },
                       { "text", text },
                       { "tokens", s->new_tokens },
                       { "logprobs", s->logprobs },
                       { "done", s->done },
                       { "stopReason", s->done ? json(s->stop_reason) : json(nullptr) },
                       { "nPrompt", s->n_prompt },
                       { "nCached", s->n_cached },
                       { "nGenerated", s->n_generated },
                       { "firstTokenUs", s->first_token_us },
                       { "wallUs", (s->done ? s->end_us : now) - s->start_us },
                       { "steps", s->steps },
                       { "sharedSteps", s->shared_steps },
                       { "maxSlots", s->max_slots } };
            if (s->done) {
                json stages = json::object();
                for (const auto & [name, st] : s->stages) {
                    stages[name] = stage_json(st, b->devices);
                }
                e["stages"] = stages;
                s->busy = false;
                s->done = false;
                s->last_used_us = now;
            }
            s->new_tokens.clear();
            s->logprobs = json::array();
            s->news = false;
            slots.push_back(std::move(e));
        }
        json out = { { "slots", slots },
                     { "steps", b->step_log },
                     { "busy", busy_count(b) },
                     { "totalSteps", b->total_steps },
                     { "deviceTokens", b->device_tokens } };
        b->step_log = json::array();
        b->output = out.dump(-1, ' ', false, json::error_handler_t::replace);
        return b->output.c_str();
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_INTERNAL, e.what());
        return nullptr;
    }
}

}  // extern "C"
