// generate.cpp — contexts and the native token loop: prompt evaluation in batches, sampling,
// stop strings, measured stages.

#include "loupe_internal.h"

#include "common.h"  // regex_escape (libllama-common)

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstring>
#include <memory>

namespace loupe {

namespace {

bool abort_callback(void * data) {
    return static_cast<loupe_ctx *>(data)->abort.load();
}

// ---- stop strings --------------------------------------------------------------------

// Length of the longest suffix of `text` that is a proper prefix of some stop string.
size_t partial_stop_len(const std::string & text, const std::vector<std::string> & stops) {
    size_t best = 0;
    for (const auto & stop : stops) {
        for (size_t len = std::min(stop.size() - 1, text.size()); len > best; len--) {
            if (text.compare(text.size() - len, len, stop, 0, len) == 0) {
                best = len;
                break;
            }
        }
    }
    return best;
}

// Bytes at the end of `text` that form an incomplete UTF-8 sequence.
size_t incomplete_utf8_len(const std::string & text) {
    size_t n = text.size();
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        unsigned char c = (unsigned char) text[n - back];
        if ((c & 0xC0) == 0x80) {
            continue;  // continuation byte
        }
        size_t need = (c & 0x80) == 0 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        return need > back ? back : 0;
    }
    return 0;
}


}  // namespace

void finish(gen_state * c, const char * reason) {
    c->done = true;
    c->active = false;
    c->stop_reason = reason;
}

bool append_piece(gen_state * c, const llama_vocab * vocab, llama_token tok) {
    char buf[256];
    const bool special = c->preserved.count(tok) > 0;
    int32_t n = llama_token_to_piece(vocab, tok, buf, sizeof(buf), 0, special);
    std::string piece;
    if (n < 0) {
        piece.resize(-n);
        n = llama_token_to_piece(vocab, tok, piece.data(), -n, 0, special);
        piece.resize(std::max(n, 0));
    } else {
        piece.assign(buf, n);
    }
    size_t search_from = c->text.size();
    c->text += piece;
    for (const auto & stop : c->stops) {
        size_t from = search_from >= stop.size() ? search_from - stop.size() + 1 : 0;
        size_t pos = c->text.find(stop, from);
        if (pos != std::string::npos) {
            c->text.resize(pos);
            return true;
        }
    }
    return false;
}

namespace {

// Tokens of `text`, special tokens parsed, nothing added.
std::vector<llama_token> tokenize_special(const llama_vocab * vocab, const std::string & text) {
    std::vector<llama_token> out(text.size() + 4);
    int32_t n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(), false, true);
    if (n < 0) {
        out.resize(-n);
        n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(), false, true);
    }
    out.resize(std::max(n, 0));
    return out;
}

// The grammar sampler of gen_begin parameters (nullptr when `grammar` is ""), as llama.cpp's
// common_sampler_init makes it: lazy grammars wait for a trigger (a preserved token, a word, a
// pattern), and `grammarPrefill` (the generation prompt a chat format ends with) is fed through
// the grammar first. Also fills the context's preserved tokens.
llama_sampler * make_grammar(gen_state * c, const llama_vocab * vocab, const json & p) {
    c->preserved.clear();
    for (const auto & t : p.at("preservedTokens")) {
        auto ids = tokenize_special(vocab, t.get<std::string>());
        if (ids.size() == 1) {
            c->preserved.insert(ids[0]);
        }
    }
    const std::string grammar = p.at("grammar").get<std::string>();
    if (grammar.empty()) {
        return nullptr;
    }
    std::vector<std::string> patterns;
    std::vector<llama_token> trigger_tokens;
    for (const auto & t : p.at("grammarTriggers")) {
        const std::string type = t.at("type").get<std::string>();
        const std::string value = t.at("value").get<std::string>();
        if (type == "word" || type == "token") {
            auto ids = tokenize_special(vocab, value);
            if (ids.size() == 1 && c->preserved.count(ids[0])) {
                trigger_tokens.push_back(ids[0]);
            } else {
                patterns.push_back(regex_escape(value));
            }
        } else if (type == "pattern") {
            patterns.push_back(value);
        } else if (type == "patternFull") {
            std::string anchored = "^$";
            if (!value.empty()) {
                anchored = (value.front() != '^' ? "^" : "") + value + (value.back() != '$' ? "$" : "");
            }
            patterns.push_back(anchored);
        } else {
            throw std::invalid_argument("unknown grammar trigger type: " + type);
        }
    }
    const bool lazy = p.at("grammarLazy").get<bool>();
    if (lazy && patterns.empty() && trigger_tokens.empty()) {
        throw std::invalid_argument("a lazy grammar needs at least one trigger");
    }
    std::vector<const char *> patterns_c;
    for (const auto & s : patterns) {
        patterns_c.push_back(s.c_str());
    }
    log_capture cap;
    llama_sampler * g = lazy ? llama_sampler_init_grammar_lazy_patterns(vocab, grammar.c_str(), "root", patterns_c.data(),
                                                                        patterns_c.size(), trigger_tokens.data(),
                                                                        trigger_tokens.size())
                             : llama_sampler_init_grammar(vocab, grammar.c_str(), "root");
    if (!g) {
        throw std::invalid_argument("the grammar does not parse" + (cap.lines.empty() ? "" : ": " + cap.lines));
    }
    const std::string prefill = p.at("grammarPrefill").get<std::string>();
    if (!lazy && !prefill.empty()) {
        auto ids = tokenize_special(vocab, prefill);
        for (size_t i = 0; i < ids.size(); i++) {
            char buf[256];
            int32_t n = llama_token_to_piece(vocab, ids[i], buf, sizeof(buf), 0, true);
            if (i == 0 && n > 0 && std::isspace((unsigned char) buf[0]) && !std::isspace((unsigned char) prefill[0])) {
                continue;  // a tokenizer's space before the first special token
            }
            try {
                llama_sampler_accept(g, ids[i]);
            } catch (const std::exception & e) {
                llama_sampler_free(g);
                // llama-server says "Failed to initialize samplers" here: a template whose
                // special tokens (e.g. <|im_start|>) this vocabulary lacks
                throw std::invalid_argument("the chat format's generation prompt " + json(prefill).dump() +
                                            " does not tokenize as its grammar expects: the model's vocabulary "
                                            "lacks the chat template's special tokens (" + e.what() + ")");
            }
        }
    }
    return g;
}

}  // namespace

llama_context_params generation_params(int32_t n_train, const json & p) {
    llama_context_params cp = llama_context_default_params();
    int32_t n_ctx = p.value("contextSize", 0);
    cp.n_ctx = n_ctx > 0 ? n_ctx : std::min(n_train, 4096);
    cp.n_batch = p.value("batchSize", 512);
    cp.n_ubatch = cp.n_batch;
    return cp;
}

loupe_ctx * make_context(loupe_model * m, const json & p, std::string & err) {
    llama_context_params cp = generation_params(llama_model_n_ctx_train(m->model), p);
    auto c = std::make_unique<loupe_ctx>();
    c->owner = m;
    apply_common_params(cp, p, c.get());
    cp.abort_callback = abort_callback;
    cp.abort_callback_data = c.get();
    c->ctx = init_context(m->model, cp, c->threads, "a context", err);
    if (!c->ctx) {
        return nullptr;
    }
    return c.release();
}

void apply_common_params(llama_context_params & cp, const json & p, measured * counts) {
    int32_t threads = p.value("threads", 0);
    if (threads > 0) {
        cp.n_threads = threads;
    }
    int32_t threads_batch = p.value("threadsBatch", 0);
    cp.n_threads_batch = threads_batch > 0 ? threads_batch : cp.n_threads;
    std::string fa = p.value("flashAttn", "auto");
    cp.flash_attn_type = fa == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                       : fa == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                     : LLAMA_FLASH_ATTN_TYPE_AUTO;
    cp.no_perf = true;
    if (p.value("measure", true)) {
        cp.cb_eval = eval_callback;
        cp.cb_eval_user_data = counts;
    }
}

llama_context * init_context(llama_model * model, const llama_context_params & cp, cpu_threadpool & threads,
                             const char * what, std::string & err) {
    log_capture cap;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        err = std::string("cannot create ") + what + (cap.lines.empty() ? "" : ": " + cap.lines);
        return nullptr;
    }
    threads.attach(ctx, llama_n_threads(ctx), llama_n_threads_batch(ctx));
    return ctx;
}

int32_t pos_of_cell(const loupe_ctx * c, int32_t cell) {
    int32_t pos = cell;
    for (const auto & m : c->media) {
        if (m.start >= cell) {
            break;
        }
        pos -= (std::min(m.end, cell) - m.start) - (cell >= m.end ? m.n_pos : 0);
    }
    return pos;
}

bool positions_are_cells(const loupe_ctx * c) {
    for (const auto & m : c->media) {
        if (m.n_pos != m.end - m.start) {
            return false;
        }
    }
    return true;
}

void clear_cache(loupe_ctx * c) {
    c->n_past = 0;
    c->history.clear();
    c->media.clear();
    c->atomic.clear();
    c->turn_starts.clear();
    c->shift_unsettled = false;
    llama_memory_clear(llama_get_memory(c->ctx), false);  // cells only: zeroing the buffers costs ~1 ms per 10 MiB
}

int32_t keep_cells(loupe_ctx * c, int32_t n_keep) {
    n_keep = std::max(0, std::min(n_keep, n_cells(c)));
    for (const auto & m : c->media) {
        if (m.start < n_keep && n_keep < m.end) {
            n_keep = m.start;  // never half an image
        }
    }
    if (n_keep == n_cells(c)) {
        return n_keep;
    }
    const int32_t pos = pos_of_cell(c, n_keep);
    if (!llama_memory_seq_rm(llama_get_memory(c->ctx), 0, pos, -1)) {
        clear_cache(c);  // a memory that cannot drop a part (recurrent): start over
        llama_memory_clear(llama_get_memory(c->ctx), true);
        return 0;
    }
    c->history.resize((size_t) n_keep);
    while (!c->media.empty() && c->media.back().start >= n_keep) {
        c->media.pop_back();
    }
    std::vector<std::pair<int32_t, int32_t>> spans;
    for (const auto & a : c->atomic) {
        if (a.second <= n_keep) {
            spans.push_back(a);
        }
    }
    c->atomic.swap(spans);
    c->n_past = pos;
    return n_keep;
}

int32_t decode_tokens(loupe_ctx * c, llama_token * tokens, int32_t n, stage_stats & stage) {
    if (n > c->batch_cap) {
        if (c->batch_cap > 0) {
            llama_batch_free(c->batch);
        }
        c->batch_cap = std::max(n, (int32_t) llama_n_batch(c->ctx));
        c->batch = llama_batch_init(c->batch_cap, 0, 1);
    }
    // explicit positions, as mtmd's helper places text: after media under M-RoPE the next
    // position is not the cache's last position plus one
    llama_batch & batch = c->batch;
    batch.n_tokens = n;
    for (int32_t i = 0; i < n; i++) {
        batch.token[i] = tokens[i];
        batch.pos[i] = c->n_past + i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = i == n - 1;
    }
    c->cur_stage = &stage;
    int64_t t0 = now_us();
    int32_t rc;
    {
        log_capture cap;
        rc = llama_decode(c->ctx, batch);
        if (rc != 0) {
            c->cur_stage = nullptr;
            if (rc == 2 || c->abort.load()) {
                return c->set_error(LOUPE_ERR_ABORTED, "aborted");
            }
            return c->set_error(LOUPE_ERR_DECODE, "llama_decode failed with code " + std::to_string(rc) +
                                                      (cap.lines.empty() ? "" : ": " + cap.lines));
        }
    }
    llama_synchronize(c->ctx);
    stage.wall_us += now_us() - t0;
    stage.tokens += n;
    stage.graphs += 1;
    c->cur_stage = nullptr;
    c->n_past += n;
    c->history.insert(c->history.end(), tokens, tokens + n);
    c->shift_unsettled = false;  // a decode applies a pending K-rotation first
    return LOUPE_OK;
}

llama_token sample_token(gen_state * g, llama_context * ctx, const llama_vocab * vocab, int32_t idx) {
    if (!g->greedy) {
        return llama_sampler_sample(g->sampler, ctx, idx);
    }
    // the greedy sampler's choice: the first index of the largest logit
    const float * logits = llama_get_logits_ith(ctx, idx);
    if (!logits) {
        return llama_sampler_sample(g->sampler, ctx, idx);  // the same error path as sampling
    }
    const int32_t n = llama_vocab_n_tokens(vocab);
    llama_token best = 0;
    float best_logit = logits[0];
    for (int32_t i = 1; i < n; i++) {
        if (logits[i] > best_logit) {
            best_logit = logits[i];
            best = i;
        }
    }
    return best;
}

std::string take_text(gen_state * g) {
    size_t end = g->text.size();
    if (!g->done) {
        std::string rest = g->text.substr(g->emitted);
        size_t hold = std::max(partial_stop_len(rest, g->stops), incomplete_utf8_len(rest));
        end -= std::min(hold, rest.size());
    }
    std::string piece = g->text.substr(g->emitted, end - g->emitted);
    g->emitted = end;
    return piece;
}

gen_state::~gen_state() {
    if (sampler) {
        llama_sampler_free(sampler);
    }
}

// Every sampling key is required: the defaults and checks live in one place, the TypeScript side
// (src/generate/options.ts), which always sends them all.
void begin_sampling(gen_state * c, const llama_vocab * vocab, const json & p, const int32_t * tokens, int32_t n_tokens) {
    if (c->sampler) {
        llama_sampler_free(c->sampler);
        c->sampler = nullptr;
    }
    llama_sampler_chain_params sp = llama_sampler_chain_default_params();
    sp.no_perf = true;
    c->sampler = llama_sampler_chain_init(sp);
    const int64_t t_grammar = now_us();
    llama_sampler * grammar = make_grammar(c, vocab, p);
    const int64_t grammar_us = now_us() - t_grammar;
    if (grammar) {
        llama_sampler_chain_add(c->sampler, grammar);  // first: the others see only what it allows
    }
    float temp = p.at("temperature").get<float>();
    float repeat_penalty = p.at("repeatPenalty").get<float>();
    if (repeat_penalty != 1.0f) {
        llama_sampler_chain_add(c->sampler,
                                llama_sampler_init_penalties(llama_vocab_n_tokens(vocab), p.at("repeatLastN").get<int32_t>(), repeat_penalty, 0.0f, 0.0f));
    }
    c->greedy = temp <= 0.0f && repeat_penalty == 1.0f && !grammar;
    if (temp <= 0.0f) {
        llama_sampler_chain_add(c->sampler, llama_sampler_init_greedy());
    } else {
        int32_t top_k = p.at("topK").get<int32_t>();
        float top_p = p.at("topP").get<float>();
        float min_p = p.at("minP").get<float>();
        if (top_k > 0) {
            llama_sampler_chain_add(c->sampler, llama_sampler_init_top_k(top_k));
        }
        if (top_p < 1.0f) {
            llama_sampler_chain_add(c->sampler, llama_sampler_init_top_p(top_p, 1));
        }
        if (min_p > 0.0f) {
            llama_sampler_chain_add(c->sampler, llama_sampler_init_min_p(min_p, 1));
        }
        llama_sampler_chain_add(c->sampler, llama_sampler_init_temp(temp));
        llama_sampler_chain_add(c->sampler, llama_sampler_init_dist(p.at("seed").get<uint32_t>()));
    }
    c->stops.clear();
    if (p.contains("stop") && p["stop"].is_array()) {
        for (const auto & s : p["stop"]) {
            std::string stop = s.get<std::string>();
            if (!stop.empty()) {
                c->stops.push_back(stop);
            }
        }
    }
    // 64-bit first: a huge count is "no limit" (INT32_MAX), never a small number after wrapping
    c->max_tokens = (int32_t) std::clamp<int64_t>(p.at("maxTokens").get<int64_t>(), 0, INT32_MAX);
    c->ignore_eos = p.at("ignoreEos").get<bool>();
    c->prompt.assign(tokens, tokens + n_tokens);
    c->prompt_done = 0;
    c->n_generated = 0;
    c->pending = -1;
    c->text.clear();
    c->emitted = 0;
    c->new_tokens.clear();
    c->stages.clear();
    if (grammar) {
        c->stages["grammar"].wall_us = grammar_us;
    }
    c->stop_reason.clear();
    c->done = false;
    c->active = true;
}

void begin_generation(loupe_ctx * c, const json & p, const int32_t * tokens, int32_t n_tokens) {
    begin_sampling(c, c->owner->vocab, p, tokens, n_tokens);
    c->events = json::array();
    c->reused = 0;
    c->begin_us = now_us();
    c->abort.store(false);
}

}  // namespace loupe

using namespace loupe;

loupe_ctx::~loupe_ctx() {
    if (batch_cap > 0) {
        llama_batch_free(batch);
    }
    if (ctx) {
        llama_detach_threadpool(ctx);
        llama_free(ctx);
    }
}

extern "C" {

loupe_ctx * loupe_ctx_create(loupe_model * m, const char * params_json, char * err, int32_t err_cap) {
    std::string msg;
    try {
        if (!m || !m->model) {
            msg = "model is not loaded";
        } else {
            json p = json::parse(params_json ? params_json : "{}");
            loupe_ctx * c = make_context(m, p, msg);
            if (c) {
                return c;
            }
        }
    } catch (const std::exception & e) {
        msg = e.what();
    }
    fail_into(LOUPE_ERR_LOAD, msg, err, err_cap);
    return nullptr;
}

void loupe_ctx_free(loupe_ctx * c) {
    if (c && c->owner && c->owner->default_ctx == c) {
        return;  // owned by its model
    }
    delete c;
}

const char * loupe_ctx_error(const loupe_ctx * c) {
    return c ? c->error.c_str() : "context is NULL";
}

int32_t loupe_ctx_gen_begin(loupe_ctx * c, const char * params_json, const int32_t * tokens, int32_t n_tokens) {
    if (!c || !c->ctx) {
        return fail(LOUPE_ERR_STATE, "context is NULL");
    }
    if (n_tokens <= 0 || !tokens) {
        return c->set_error(LOUPE_ERR_INVALID, "the prompt is empty");
    }
    return guarded(c, [&]() -> int32_t {
        json p = json::parse(params_json ? params_json : "{}");
        int32_t n_ctx = (int32_t) llama_n_ctx(c->ctx);
        if (n_tokens + 1 > n_ctx) {
            return c->set_error(LOUPE_ERR_CONTEXT, "the prompt has " + std::to_string(n_tokens) +
                                                       " tokens but the context holds " + std::to_string(n_ctx) +
                                                       " (including one token to generate)");
        }
        int32_t n_vocab = llama_vocab_n_tokens(c->owner->vocab);
        for (int32_t i = 0; i < n_tokens; i++) {
            if (tokens[i] < 0 || tokens[i] >= n_vocab) {
                return c->set_error(LOUPE_ERR_INVALID, "prompt token " + std::to_string(tokens[i]) + " is out of range");
            }
        }
        begin_generation(c, p, tokens, n_tokens);
        // a fresh KV cache every call: no reuse, no shift (sessions use loupe_ctx_session_begin)
        clear_cache(c);
        c->shift_enabled = false;
        c->n_keep = 0;
        return LOUPE_OK;
    });
}

int32_t loupe_ctx_gen_step(loupe_ctx * c, int32_t budget_ms, int32_t max_step_tokens) {
    if (!c || !c->ctx) {
        return fail(LOUPE_ERR_STATE, "context is NULL");
    }
    loupe::idle_on_return idle{ c->threads };  // no worker spinning while the host handles the step
    return guarded(c, [&]() -> int32_t {
        if (c->done) {
            return 1;
        }
        if (!c->active) {
            return c->set_error(LOUPE_ERR_STATE, "no generation was begun");
        }
        const int64_t deadline = now_us() + (int64_t) std::max(budget_ms, 0) * 1000;
        const int32_t n_ctx = (int32_t) llama_n_ctx(c->ctx);
        const int32_t n_batch = (int32_t) llama_n_batch(c->ctx);

        // a session's prompt that does not fit: shift first (whole turns where possible)
        if (c->shift_enabled && c->prompt_done < c->prompt.size()) {
            int32_t rest = (int32_t) (c->prompt.size() - c->prompt_done);
            if (n_cells(c) + rest > n_ctx - 1) {
                int32_t rc = shift_context(c, rest, n_ctx - 1);
                if (rc != LOUPE_OK) {
                    c->active = false;
                    return rc;
                }
            }
        }

        // prompt evaluation, in batches
        stage_stats & prompt_stage = c->stages["prompt"];
        while (c->prompt_done < c->prompt.size()) {
            if (c->abort.load()) {
                finish(c, "aborted");
                return 1;
            }
            int32_t n = (int32_t) std::min<size_t>(n_batch, c->prompt.size() - c->prompt_done);
            int32_t rc = decode_tokens(c, c->prompt.data() + c->prompt_done, n, prompt_stage);
            if (rc == LOUPE_ERR_ABORTED) {
                finish(c, "aborted");
                return 1;
            }
            if (rc != LOUPE_OK) {
                c->active = false;
                return rc;
            }
            c->prompt_done += n;
            if (c->prompt_done < c->prompt.size() && now_us() > deadline) {
                return 0;
            }
        }

        int32_t step_tokens = 0;
        stage_stats & gen_stage = c->stages["generation"];
        stage_stats & sample_stage = c->stages["sampling"];
        while (true) {
            if (c->pending >= 0) {
                // decode the token sampled last time, unless the context is full; a session
                // shifts instead, at the point llama.cpp's tools/completion does (position n_ctx - 1)
                if (c->shift_enabled && n_cells(c) + 1 >= n_ctx) {
                    if (shift_context(c, 1, n_ctx - 1) != LOUPE_OK) {
                        finish(c, "contextFull");
                        break;
                    }
                }
                if (n_cells(c) >= n_ctx) {
                    finish(c, "contextFull");
                    break;
                }
                llama_token tok = c->pending;
                int32_t rc = decode_tokens(c, &tok, 1, gen_stage);
                if (rc == LOUPE_ERR_ABORTED) {
                    finish(c, "aborted");
                    break;
                }
                if (rc != LOUPE_OK) {
                    c->active = false;
                    return rc;
                }
                c->pending = -1;
            }
            if (c->abort.load()) {
                finish(c, "aborted");
                break;
            }
            if (c->n_generated >= c->max_tokens) {
                finish(c, "maxTokens");
                break;
            }
            int64_t t0 = now_us();
            llama_token tok = sample_token(c, c->ctx, c->owner->vocab, -1);
            sample_stage.wall_us += now_us() - t0;
            sample_stage.tokens += 1;
            if (!c->ignore_eos && llama_vocab_is_eog(c->owner->vocab, tok)) {
                finish(c, "eos");
                break;
            }
            c->n_generated++;
            c->new_tokens.push_back(tok);
            c->pending = tok;  // sampled, decoded at the next turn of the loop (or the next call)
            if (append_piece(c, c->owner->vocab, tok)) {
                finish(c, "stop");
                break;
            }
            if (c->n_generated >= c->max_tokens) {
                finish(c, "maxTokens");
                break;
            }
            if (now_us() > deadline || (max_step_tokens > 0 && ++step_tokens >= max_step_tokens)) {
                return 0;
            }
        }
        return 1;
    });
}

void loupe_ctx_gen_abort(loupe_ctx * c) {
    if (c) {
        c->abort.store(true);
    }
}

const char * loupe_ctx_gen_output(loupe_ctx * c) {
    if (!c) {
        fail(LOUPE_ERR_INVALID, "context is NULL");
        return nullptr;
    }
    try {
        std::string piece = take_text(c);
        json stages = json::object();
        for (const auto & [name, s] : c->stages) {
            stages[name] = stage_json(s, c->devices);
        }
        json out = { { "text", piece },
                     { "tokens", c->new_tokens },
                     { "done", c->done },
                     { "stopReason", c->done ? json(c->stop_reason) : json(nullptr) },
                     { "nPast", n_cells(c) },
                     { "nPos", c->n_past },
                     { "nGenerated", c->n_generated },
                     { "pending", c->pending >= 0 ? json(c->pending) : json(nullptr) },
                     { "reused", c->reused },
                     { "events", c->events },
                     { "stages", stages } };
        c->new_tokens.clear();
        c->output = out.dump(-1, ' ', false, json::error_handler_t::replace);
        return c->output.c_str();
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_INTERNAL, e.what());
        return nullptr;
    }
}

}  // extern "C"
