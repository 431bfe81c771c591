// embed.cpp — embeddings and reranking (loupe_embed.h): an embedding context that packs many
// sequences into one batch, one sequence id each, as llama.cpp's examples/embedding does, and
// measures every graph like the token loop does.

#include "loupe_embed.h"
#include "loupe_internal.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>

struct loupe_embedder : loupe::error_holder, loupe::measured {
    loupe_model * owner = nullptr;
    loupe::cpu_threadpool threads;  // destroyed after ctx is freed (declared before it)
    llama_context * ctx = nullptr;
    llama_batch batch{};
    bool has_batch = false;
    std::atomic<bool> abort{ false };

    enum llama_pooling_type pooling = LLAMA_POOLING_TYPE_NONE;
    bool encoder = false;       // no KV cache: llama_encode
    int32_t n_embd_out = 0;
    int32_t n_out = 0;          // floats per pooled result
    int32_t max_tokens = 0;     // longest sequence accepted
    int32_t n_batch = 0;
    int32_t n_seq_max = 1;

    // prepared run
    std::vector<llama_token> tokens;
    std::vector<int32_t> lengths;
    int32_t batch_tokens = 0;
    int64_t out_size = 0;
    bool prepared = false;

    loupe::stage_stats encode;
    int32_t batches = 0;
    std::string info;
    std::string output;

    ~loupe_embedder() {
        if (has_batch) {
            llama_batch_free(batch);
        }
        if (ctx) {
            llama_detach_threadpool(ctx);
            llama_free(ctx);
        }
    }
};

namespace {

using namespace loupe;

bool embed_abort_callback(void * data) {
    return static_cast<loupe_embedder *>(data)->abort.load();
}

const char * pooling_name(enum llama_pooling_type t) {
    switch (t) {
        case LLAMA_POOLING_TYPE_NONE: return "none";
        case LLAMA_POOLING_TYPE_MEAN: return "mean";
        case LLAMA_POOLING_TYPE_CLS: return "cls";
        case LLAMA_POOLING_TYPE_LAST: return "last";
        case LLAMA_POOLING_TYPE_RANK: return "rank";
        default: return "unspecified";
    }
}

bool pooling_from_name(const std::string & s, enum llama_pooling_type & out) {
    static const std::pair<const char *, enum llama_pooling_type> names[] = {
        { "model", LLAMA_POOLING_TYPE_UNSPECIFIED }, { "none", LLAMA_POOLING_TYPE_NONE },
        { "mean", LLAMA_POOLING_TYPE_MEAN },         { "cls", LLAMA_POOLING_TYPE_CLS },
        { "last", LLAMA_POOLING_TYPE_LAST },         { "rank", LLAMA_POOLING_TYPE_RANK },
    };
    for (const auto & [name, type] : names) {
        if (s == name) {
            out = type;
            return true;
        }
    }
    return false;
}

}  // namespace

namespace loupe {

bool embedding_params(int32_t n_train, const json & p, llama_context_params & cp, std::string & err) {
    enum llama_pooling_type pooling = LLAMA_POOLING_TYPE_UNSPECIFIED;
    std::string pooling_arg = p.value("pooling", "model");
    if (!pooling_from_name(pooling_arg, pooling)) {
        err = "unknown pooling \"" + pooling_arg + "\" (expected model, none, mean, cls, last or rank)";
        return false;
    }
    int32_t n_ctx = p.value("contextSize", 0);
    if (n_ctx < 0) {
        err = "contextSize must not be negative";
        return false;
    }
    if (n_ctx == 0) {
        n_ctx = std::min(n_train, 4096);
    }
    int32_t seq_max = p.value("seqMax", 0);
    const int32_t seq_limit = (int32_t) llama_max_parallel_sequences();
    if (seq_max < 0 || seq_max > seq_limit) {
        err = "seqMax must be between 1 and " + std::to_string(seq_limit);
        return false;
    }
    if (seq_max == 0) {
        seq_max = seq_limit;
    }
    // A batch of n_ctx tokens holds at most n_ctx sequences, and llama.cpp reserves one output
    // per sequence within n_batch (= n_ctx): more would fail its assertion and abort the process.
    seq_max = std::min(seq_max, n_ctx);

    cp = llama_context_default_params();
    // One batch is one graph: the encoder of a non-causal model cannot split a batch anyway.
    cp.n_ctx = n_ctx;
    cp.n_batch = n_ctx;
    cp.n_ubatch = n_ctx;
    cp.n_seq_max = seq_max;
    cp.kv_unified = true;  // sequences of any length share the cache (examples/embedding does the same)
    cp.embeddings = true;
    cp.pooling_type = pooling;
    return true;
}

}  // namespace loupe

namespace {

loupe_embedder * make_embedder(loupe_model * m, const json & p, std::string & err) {
    llama_context_params cp;
    if (!embedding_params(llama_model_n_ctx_train(m->model), p, cp, err)) {
        return nullptr;
    }
    const int32_t n_train = llama_model_n_ctx_train(m->model);
    auto e = std::make_unique<loupe_embedder>();
    e->owner = m;
    apply_common_params(cp, p, e.get());
    cp.abort_callback = embed_abort_callback;
    cp.abort_callback_data = e.get();
    e->ctx = init_context(m->model, cp, e->threads, "an embedding context", err);
    if (!e->ctx) {
        return nullptr;
    }
    e->pooling = llama_pooling_type(e->ctx);
    e->encoder = llama_get_memory(e->ctx) == nullptr ||
                 (llama_model_has_encoder(m->model) && !llama_model_has_decoder(m->model));
    e->n_embd_out = llama_model_n_embd_out(m->model);
    e->n_out = e->pooling == LLAMA_POOLING_TYPE_RANK ? (int32_t) llama_model_n_cls_out(m->model) : e->n_embd_out;
    e->n_batch = (int32_t) llama_n_ubatch(e->ctx);
    e->n_seq_max = (int32_t) llama_n_seq_max(e->ctx);
    // Learned position embeddings (BERT) end at the training context.
    e->max_tokens = std::min(e->n_batch, n_train);
    e->batch = llama_batch_init(e->n_batch, 0, 1);
    e->has_batch = true;
    return e.release();
}

json embedder_info(loupe_embedder * e) {
    const llama_model * model = e->owner->model;
    const llama_vocab * vocab = e->owner->vocab;
    json labels = json::array();
    for (uint32_t i = 0; i < llama_model_n_cls_out(model); i++) {
        const char * label = llama_model_cls_label(model, i);
        labels.push_back(label ? json(label) : json(nullptr));
    }
    json memory = json::array();
    for (const auto & [buft, mb] : llama_get_memory_breakdown(e->ctx)) {
        ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
        std::string dev_name = ggml_backend_buft_is_host(buft) || !dev ? "CPU" : ggml_backend_dev_name(dev);
        memory.push_back({ { "device", dev_name }, { "buffer", ggml_backend_buft_name(buft) }, { "model", mb.model },
                           { "context", mb.context }, { "compute", mb.compute } });
    }
    const char * rerank = llama_model_chat_template(model, "rerank");
    return {
        { "pooling", pooling_name(e->pooling) },
        { "nOut", e->n_out },
        { "nEmbdOut", e->n_embd_out },
        { "nClsOut", llama_model_n_cls_out(model) },
        { "clsLabels", labels },
        { "maxTokens", e->max_tokens },
        { "nCtx", (int64_t) llama_n_ctx(e->ctx) },
        { "nBatch", e->n_batch },
        { "nSeqMax", e->n_seq_max },
        { "encoder", e->encoder },
        { "bos", llama_vocab_bos(vocab) },
        { "eos", llama_vocab_eos(vocab) },
        { "sep", llama_vocab_sep(vocab) },
        { "addBos", llama_vocab_get_add_bos(vocab) },
        { "addEos", llama_vocab_get_add_eos(vocab) },
        { "addSep", llama_vocab_get_add_sep(vocab) },
        { "rerankTemplate", rerank ? json(rerank) : json(nullptr) },
        { "memory", memory },
    };
}

// Runs the filled batch as one graph and copies its results to `out`: one result per sequence
// (`first_seq` is the index of the batch's sequence 0), or one per token with pooling "none".
int32_t run_batch(loupe_embedder * e, int32_t n_seqs, float * out) {
    if (e->batch.n_tokens == 0) {
        return LOUPE_OK;
    }
    if (!e->encoder) {
        llama_memory_clear(llama_get_memory(e->ctx), false);  // sequences never share state between batches
    }
    e->cur_stage = &e->encode;
    const int64_t t0 = now_us();
    int32_t rc;
    {
        log_capture cap;
        rc = e->encoder ? llama_encode(e->ctx, e->batch) : llama_decode(e->ctx, e->batch);
        if (rc != 0) {
            e->cur_stage = nullptr;
            if (rc == 2 || e->abort.load()) {
                return e->set_error(LOUPE_ERR_ABORTED, "aborted");
            }
            return e->set_error(LOUPE_ERR_DECODE, std::string(e->encoder ? "llama_encode" : "llama_decode") +
                                                      " failed with code " + std::to_string(rc) +
                                                      (cap.lines.empty() ? "" : ": " + cap.lines));
        }
    }
    if (e->pooling == LLAMA_POOLING_TYPE_NONE) {
        for (int32_t i = 0; i < e->batch.n_tokens; i++) {
            const float * v = llama_get_embeddings_ith(e->ctx, i);
            if (!v) {
                e->cur_stage = nullptr;
                return e->set_error(LOUPE_ERR_INTERNAL, "no embedding for token " + std::to_string(i));
            }
            std::memcpy(out + (size_t) i * e->n_embd_out, v, sizeof(float) * e->n_embd_out);
        }
    } else {
        for (int32_t s = 0; s < n_seqs; s++) {
            const float * v = llama_get_embeddings_seq(e->ctx, s);
            if (!v) {
                e->cur_stage = nullptr;
                return e->set_error(LOUPE_ERR_INTERNAL, "no pooled result for sequence " + std::to_string(s));
            }
            std::memcpy(out + (size_t) s * e->n_out, v, sizeof(float) * e->n_out);
        }
    }
    e->encode.wall_us += now_us() - t0;
    e->encode.tokens += e->batch.n_tokens;
    e->encode.graphs += 1;
    e->batches += 1;
    e->cur_stage = nullptr;
    return LOUPE_OK;
}

}  // namespace

using namespace loupe;

extern "C" {

loupe_embedder * loupe_embedder_create(loupe_model * m, const char * params_json, char * err, int32_t err_cap) {
    std::string msg;
    try {
        if (!m || !m->model) {
            msg = "model is not loaded";
        } else {
            json p = json::parse(params_json ? params_json : "{}");
            if (!p.is_object()) {
                msg = "embedding parameters must be a JSON object";
            } else if (loupe_embedder * e = make_embedder(m, p, msg)) {
                return e;
            }
        }
    } catch (const std::exception & ex) {
        msg = ex.what();
    }
    fail_into(LOUPE_ERR_LOAD, msg, err, err_cap);
    return nullptr;
}

void loupe_embedder_free(loupe_embedder * e) {
    delete e;
}

const char * loupe_embedder_error(const loupe_embedder * e) {
    return e ? e->error.c_str() : "embedder is NULL";
}

const char * loupe_embedder_info(loupe_embedder * e) {
    if (!e || !e->ctx) {
        fail(LOUPE_ERR_STATE, "embedder is NULL");
        return nullptr;
    }
    try {
        e->info = embedder_info(e).dump(-1, ' ', false, json::error_handler_t::replace);
        return e->info.c_str();
    } catch (const std::exception & ex) {
        fail(LOUPE_ERR_INTERNAL, ex.what());
        return nullptr;
    }
}

int32_t loupe_embedder_begin(loupe_embedder * e, const int32_t * tokens, const int32_t * lengths, int32_t n_seqs,
                             int32_t batch_tokens) {
    if (!e || !e->ctx) {
        return fail(LOUPE_ERR_STATE, "embedder is NULL");
    }
    return guarded(e, [&]() -> int32_t {
        e->prepared = false;
        if (n_seqs < 0 || (n_seqs > 0 && (!tokens || !lengths)) || batch_tokens < 0) {
            return e->set_error(LOUPE_ERR_INVALID, "invalid arguments to loupe_embedder_begin");
        }
        const int32_t n_vocab = llama_vocab_n_tokens(e->owner->vocab);
        int64_t total = 0;
        for (int32_t s = 0; s < n_seqs; s++) {
            if (lengths[s] < 1) {
                return e->set_error(LOUPE_ERR_INVALID, "sequence " + std::to_string(s) + " is empty");
            }
            if (lengths[s] > e->max_tokens) {
                return e->set_error(LOUPE_ERR_CONTEXT, "sequence " + std::to_string(s) + " has " +
                                                           std::to_string(lengths[s]) + " tokens but at most " +
                                                           std::to_string(e->max_tokens) + " fit");
            }
            total += lengths[s];
        }
        for (int64_t i = 0; i < total; i++) {
            if (tokens[i] < 0 || tokens[i] >= n_vocab) {
                return e->set_error(LOUPE_ERR_INVALID, "token " + std::to_string(tokens[i]) + " at index " +
                                                           std::to_string(i) + " is out of range (vocabulary of " +
                                                           std::to_string(n_vocab) + ")");
            }
        }
        const int64_t out_size = e->pooling == LLAMA_POOLING_TYPE_NONE ? total * e->n_embd_out
                                                                        : (int64_t) n_seqs * e->n_out;
        if (out_size > INT32_MAX) {
            return e->set_error(LOUPE_ERR_INVALID, "the results would need " + std::to_string(out_size) +
                                                       " floats; embed fewer texts per call");
        }
        e->tokens.assign(tokens, tokens + total);
        e->lengths.assign(lengths, lengths + n_seqs);
        e->batch_tokens = batch_tokens == 0 ? e->n_batch : std::min(batch_tokens, e->n_batch);
        e->out_size = out_size;
        e->encode = stage_stats{};
        e->batches = 0;
        e->abort.store(false);
        e->prepared = true;
        return (int32_t) out_size;
    });
}

int32_t loupe_embedder_run(loupe_embedder * e, float * out, int32_t out_cap) {
    if (!e || !e->ctx) {
        return fail(LOUPE_ERR_STATE, "embedder is NULL");
    }
    loupe::idle_on_return idle{ e->threads };  // no worker spinning while the host reads the results
    return guarded(e, [&]() -> int32_t {
        if (!e->prepared) {
            return e->set_error(LOUPE_ERR_STATE, "no run was prepared with loupe_embedder_begin");
        }
        e->prepared = false;
        if ((!out && e->out_size > 0) || out_cap < e->out_size) {
            return e->set_error(LOUPE_ERR_INVALID, "the output buffer holds " + std::to_string(out_cap) +
                                                       " floats but " + std::to_string(e->out_size) + " are needed");
        }
        const bool per_token = e->pooling == LLAMA_POOLING_TYPE_NONE;
        llama_batch & batch = e->batch;
        batch.n_tokens = 0;
        int32_t in_batch = 0;   // sequences in the current batch
        int64_t written = 0;    // floats of finished batches
        size_t offset = 0;      // into e->tokens
        auto flush = [&]() -> int32_t {
            if (e->abort.load()) {
                return e->set_error(LOUPE_ERR_ABORTED, "aborted");
            }
            int32_t rc = run_batch(e, in_batch, out + written);
            if (rc != LOUPE_OK) {
                return rc;
            }
            written += per_token ? (int64_t) batch.n_tokens * e->n_embd_out : (int64_t) in_batch * e->n_out;
            batch.n_tokens = 0;
            in_batch = 0;
            return LOUPE_OK;
        };
        for (size_t s = 0; s < e->lengths.size(); s++) {
            const int32_t len = e->lengths[s];
            if (in_batch > 0 && (batch.n_tokens + len > e->batch_tokens || in_batch >= e->n_seq_max)) {
                int32_t rc = flush();
                if (rc != LOUPE_OK) {
                    return rc;
                }
            }
            for (int32_t i = 0; i < len; i++) {
                const int32_t k = batch.n_tokens++;
                batch.token[k] = e->tokens[offset + i];
                batch.pos[k] = i;
                batch.n_seq_id[k] = 1;
                batch.seq_id[k][0] = in_batch;
                batch.logits[k] = 1;
            }
            offset += len;
            in_batch++;
        }
        if (in_batch > 0) {
            int32_t rc = flush();
            if (rc != LOUPE_OK) {
                return rc;
            }
        }
        e->abort.store(false);
        return (int32_t) written;
    });
}

void loupe_embedder_abort(loupe_embedder * e) {
    if (e) {
        e->abort.store(true);
    }
}

const char * loupe_embedder_output(loupe_embedder * e) {
    if (!e) {
        fail(LOUPE_ERR_INVALID, "embedder is NULL");
        return nullptr;
    }
    try {
        json out = { { "batches", e->batches },
                     { "sequences", e->lengths.size() },
                     { "stages", { { "encode", stage_json(e->encode, e->devices) } } } };
        e->output = out.dump();
        return e->output.c_str();
    } catch (const std::exception & ex) {
        fail(LOUPE_ERR_INTERNAL, ex.what());
        return nullptr;
    }
}

}  // extern "C"
