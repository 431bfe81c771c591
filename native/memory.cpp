// memory.cpp — what a context would take, per device, found before anything is allocated
// (loupe_model_memory_estimate), and the memory the host has free.
//
// Three stages, cheapest first:
//
// 1. A quick upper bound from the file's header (read once per handle, a few milliseconds): KV
//    cache, compute buffer, host bookkeeping and, before the weights are loaded, the file's size
//    (context_bound). When it is at most half of the smallest free memory among the host and the
//    GPUs, the context fits and nothing else is done. This is the common case (a default context
//    on a machine with room), and it costs no second load of the model.
//
// 2. Otherwise the layout, as llama.cpp's own fit does it (common/fit.cpp,
//    common_get_device_memory_data): the model file is loaded a second time with no_alloc (tensor
//    shapes on their devices, no data: the "shadow" model, about as long as loading a small model,
//    since the vocabulary is read again; kept on the handle for the next estimate), a context is
//    created on it (the KV cache and the worst-case graphs are laid out, nothing is allocated) and
//    llama_get_memory_breakdown gives the bytes per buffer type and device.
//
// 3. Laying out a context still allocates the KV cache's cell bookkeeping on the host (position,
//    M-RoPE position, shift and a 256-bit sequence set: 54 bytes of peak RSS per cell, measured)
//    and takes 0.2-0.3 µs per cell, so a context of 10^9 cells cannot be laid out either. Contexts of up to
//    kExactMax cells are laid out as they are; larger ones at kProbe / 2 and kProbe cells, and each
//    device's KV cache and compute buffer are extrapolated along the line through both. Past the
//    batch size both grow linearly with the context (the KV cache per cell, the attention mask and
//    scores per cell of the batch); the compute buffer is the largest of the graph's stages, so
//    it may turn from one regime to a steeper one later, and the line through two points then
//    underestimates it, which can only let a context through to the check below. (An embedding
//    context's batch is its whole context: its attention grows with the square of it, and the
//    line underestimates it too.) When the extrapolated context fits in free memory, it is laid
//    out at its real size after all (its bookkeeping then fits too) and that figure is reported.

#include "loupe_internal.h"

#include "gguf.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace loupe {
namespace {

// Contexts of up to kExactMax cells are laid out as they are; larger ones at kProbe / 2 and kProbe.
constexpr uint32_t kExactMax = 1u << 19;
constexpr uint32_t kProbe = 1u << 18;
// The quick bound lets a context through when it is at most this share of the smallest free memory.
constexpr double kBoundShare = 0.5;
// Host bytes per cell not in the engine's breakdown: the KV cache's cell bookkeeping (52 bytes per
// cell, rounded up; 54 of peak RSS per cell measured while laying out), and for an embedding
// context, whose batch is its whole context, the llama_batch loupe keeps (token, position,
// sequence count and id, output flag per token).
constexpr uint64_t kCellHostBytes = 64;
constexpr uint64_t kBatchHostBytes = 64;

struct device_memory {
    std::string name;
    std::string type;
    ggml_backend_dev_t dev = nullptr;  // null for the host
    int64_t free = 0;
    int64_t total = 0;
    double model = 0;
    double context = 0;
    double compute = 0;
    double overhead = 0;
};

const char * type_name(ggml_backend_dev_t dev) {
    if (!dev) {
        return "cpu";
    }
    switch (ggml_backend_dev_type(dev)) {
        case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
        default: return "unknown";
    }
}

// A number from a cgroup file ("max" and unreadable files give -1).
int64_t read_cgroup_number(const std::string & path) {
    std::ifstream f(path);
    std::string s;
    if (!f || !(f >> s) || s == "max") {
        return -1;
    }
    try {
        return std::stoll(s);
    } catch (...) {
        return -1;
    }
}

// One field of a "key value" file (/proc/meminfo in kB, memory.stat in bytes); -1 when absent.
int64_t read_field(const std::string & path, const std::string & key) {
    std::ifstream f(path);
    std::string line;
    while (std::getline(f, line)) {
        if (line.compare(0, key.size(), key) == 0 && line.size() > key.size() &&
            (line[key.size()] == ':' || line[key.size()] == ' ')) {
            std::istringstream in(line.substr(key.size() + 1));
            int64_t v = -1;
            in >> v;
            return v;
        }
    }
    return -1;
}

}  // namespace

// The memory the host can give without swapping: MemAvailable of /proc/meminfo (free pages plus
// the page cache and slab that can be reclaimed), bounded by the cgroup's limit when there is one
// (its limit, less what the cgroup uses, plus its inactive page cache). Falls back to what the
// engine's CPU device reports.
json host_memory() {
    int64_t avail = -1;
    int64_t total = -1;
    std::string source = "meminfo";
    const int64_t kb_avail = read_field("/proc/meminfo", "MemAvailable");
    const int64_t kb_total = read_field("/proc/meminfo", "MemTotal");
    if (kb_avail >= 0 && kb_total > 0) {
        avail = kb_avail * 1024;
        total = kb_total * 1024;
    } else {
        ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
        size_t f = 0;
        size_t t = 0;
        if (cpu) {
            ggml_backend_dev_memory(cpu, &f, &t);
        }
        avail = (int64_t) f;
        total = (int64_t) t;
        source = "engine";
    }
    // cgroup v2: the process's own group (from /proc/self/cgroup, "0::/path"), or the root
    std::string group;
    {
        std::ifstream f("/proc/self/cgroup");
        std::string line;
        while (std::getline(f, line)) {
            if (line.rfind("0::", 0) == 0) {
                group = line.substr(3);
            }
        }
    }
    std::vector<std::string> dirs;
    if (!group.empty() && group != "/") {
        dirs.push_back("/sys/fs/cgroup" + group);
    }
    dirs.push_back("/sys/fs/cgroup");
    for (const auto & dir : dirs) {
        const int64_t limit = read_cgroup_number(dir + "/memory.max");
        const int64_t used = read_cgroup_number(dir + "/memory.current");
        if (limit > 0 && used >= 0) {
            const int64_t inactive = std::max<int64_t>(0, read_field(dir + "/memory.stat", "inactive_file"));
            const int64_t cg = std::max<int64_t>(0, limit - used + inactive);
            if (cg < avail) {
                avail = cg;
                total = std::min(total, limit);
                source = "cgroup";
            }
            break;
        }
    }
    if (source != "cgroup") {
        // cgroup v1
        const int64_t limit = read_cgroup_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
        const int64_t used = read_cgroup_number("/sys/fs/cgroup/memory/memory.usage_in_bytes");
        if (limit > 0 && used >= 0 && limit < (int64_t) 1 << 60) {
            const int64_t inactive =
                std::max<int64_t>(0, read_field("/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"));
            const int64_t cg = std::max<int64_t>(0, limit - used + inactive);
            if (cg < avail) {
                avail = cg;
                total = std::min(total, limit);
                source = "cgroup";
            }
        }
    }
    return { { "available", avail }, { "total", total }, { "source", source } };
}

namespace {

// The shadow model of `m`, loaded on first use. Call with m->shadow_mutex held.
llama_model * shadow_of(loupe_model * m, std::string & err, int64_t & load_us) {
    load_us = 0;
    if (m->shadow) {
        return m->shadow;
    }
    const json & p = m->params;
    if (p.value("vocabOnly", false)) {
        err = "the model is loaded with vocabOnly: it has no context to estimate";
        return nullptr;
    }
    model_placement place;
    llama_model_params mp = model_params(p, place);
    mp.no_alloc = true;
    mp.load_mode = LLAMA_LOAD_MODE_NONE;
    mp.vocab_only = false;
    const int64_t t0 = now_us();
    log_capture cap;
    m->shadow = llama_model_load_from_file(p["path"].get<std::string>().c_str(), mp);
    load_us = now_us() - t0;
    if (!m->shadow) {
        err = "cannot read the model's layout" + (cap.lines.empty() ? std::string() : ": " + cap.lines);
    }
    return m->shadow;
}

// The devices an estimate reports: the host first, then the model's devices.
std::vector<device_memory> device_list(const llama_model * model, const json & host) {
    std::vector<device_memory> out(1);
    out[0].name = "CPU";
    out[0].type = "cpu";
    out[0].free = host["available"].get<int64_t>();
    out[0].total = host["total"].get<int64_t>();
    for (int i = 0; i < llama_model_n_devices(model); i++) {
        ggml_backend_dev_t dev = llama_model_get_device(model, i);
        size_t free = 0;
        size_t total = 0;
        ggml_backend_dev_memory(dev, &free, &total);
        const auto type = ggml_backend_dev_type(dev);
        if (type == GGML_BACKEND_DEVICE_TYPE_CPU ||
            (free == 0 && total == 0 && type != GGML_BACKEND_DEVICE_TYPE_GPU && type != GGML_BACKEND_DEVICE_TYPE_IGPU)) {
            continue;  // an accelerator without memory of its own (BLAS) uses the host's
        }
        device_memory d;
        d.name = ggml_backend_dev_name(dev);
        d.type = type_name(dev);
        d.dev = dev;
        d.free = (int64_t) free;
        d.total = (int64_t) total;
        out.push_back(d);
    }
    return out;
}

// Lays out a context with `cp` on the shadow model: `out` is `devs` with the breakdown added.
bool lay_out(llama_model * shadow, const llama_context_params & cp, const std::vector<device_memory> & devs,
             std::vector<device_memory> & out, std::string & err) {
    out = devs;
    log_capture cap;
    llama_context * ctx = llama_init_from_model(shadow, cp);
    if (!ctx) {
        err = "cannot lay out the context" + (cap.lines.empty() ? std::string() : ": " + cap.lines);
        return false;
    }
    for (const auto & [buft, mb] : llama_get_memory_breakdown(ctx)) {
        device_memory * d = &out[0];
        if (!ggml_backend_buft_is_host(buft)) {
            ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
            for (auto & cand : out) {
                if (cand.dev && cand.dev == dev) {
                    d = &cand;
                    break;
                }
            }
        }
        d->model += (double) mb.model;
        d->context += (double) mb.context;
        d->compute += (double) mb.compute;
    }
    llama_free(ctx);
    return true;
}

json device_json(const device_memory & d) {
    auto bytes = [](double v) { return (uint64_t) std::llround(std::max(0.0, v)); };
    return { { "name", d.name },         { "type", d.type },
             { "free", d.free },         { "total", d.total },
             { "model", bytes(d.model) }, { "context", bytes(d.context) },
             { "compute", bytes(d.compute) }, { "overhead", bytes(d.overhead) } };
}

// ---- the quick bound -------------------------------------------------------------------

// A number of the header, or the largest of an array of numbers; -1 when absent.
int64_t header_number(const gguf_context * g, const std::string & key) {
    const int64_t id = gguf_find_key(g, key.c_str());
    if (id < 0) {
        return -1;
    }
    auto scalar = [](enum gguf_type t, const void * d) -> int64_t {
        switch (t) {
            case GGUF_TYPE_UINT8: return *(const uint8_t *) d;
            case GGUF_TYPE_INT8: return *(const int8_t *) d;
            case GGUF_TYPE_UINT16: return *(const uint16_t *) d;
            case GGUF_TYPE_INT16: return *(const int16_t *) d;
            case GGUF_TYPE_UINT32: return *(const uint32_t *) d;
            case GGUF_TYPE_INT32: return *(const int32_t *) d;
            case GGUF_TYPE_UINT64: return (int64_t) std::min<uint64_t>(*(const uint64_t *) d, INT64_MAX);
            case GGUF_TYPE_INT64: return *(const int64_t *) d;
            default: return -1;
        }
    };
    const enum gguf_type t = gguf_get_kv_type(g, id);
    if (t == GGUF_TYPE_STRING) {
        return -1; // gguf_get_val_data asserts a string is not asked for (the loader refuses it after)
    }
    if (t != GGUF_TYPE_ARRAY) {
        return scalar(t, gguf_get_val_data(g, id));
    }
    const enum gguf_type at = gguf_get_arr_type(g, id);
    if (at == GGUF_TYPE_STRING || at == GGUF_TYPE_ARRAY) {
        return -1;
    }
    const size_t n = gguf_get_arr_n(g, id);
    size_t size = 0;
    switch (at) {
        case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: size = 1; break;
        case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: size = 2; break;
        case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: size = 4; break;
        case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: size = 8; break;
        default: return -1;
    }
    const auto * data = (const uint8_t *) gguf_get_arr_data(g, id);
    int64_t best = -1;
    for (size_t i = 0; i < n; i++) {
        best = std::max(best, scalar(at, data + i * size));
    }
    return best;
}

// What the file's header says of the model's size: {known, nLayer, nEmbd, nHead, nHeadKv, headK,
// headV, nFf, nVocab, nCtxTrain, fileSize}. `known` is false where the bound does not apply
// (recurrent and hybrid models, whose state is not a KV cache; a model split over several files;
// missing keys).
json read_shape(const std::string & path) {
    gguf_init_params gp = { /*no_alloc =*/ true, /*ctx =*/ nullptr };
    gguf_context * g = gguf_init_from_file(path.c_str(), gp);
    if (!g) {
        return { { "known", false } };
    }
    json shape;
    const int64_t arch_id = gguf_find_key(g, "general.architecture");
    const std::string arch =
        arch_id >= 0 && gguf_get_kv_type(g, arch_id) == GGUF_TYPE_STRING ? gguf_get_val_str(g, arch_id) : "";
    const std::string a = arch + ".";
    bool recurrent = arch.empty();
    for (int64_t i = 0; i < gguf_get_n_kv(g); i++) {
        const std::string k = gguf_get_key(g, i);
        for (const char * mark : { "ssm.", "wkv.", "rwkv", "time_mix", "shortconv." }) {
            if (k.rfind(a, 0) == 0 && k.find(mark, a.size()) != std::string::npos) {
                recurrent = true;
            }
        }
    }
    const int64_t n_layer = header_number(g, a + "block_count");
    const int64_t n_embd = header_number(g, a + "embedding_length");
    const int64_t n_head = header_number(g, a + "attention.head_count");
    const int64_t head_count_kv = header_number(g, a + "attention.head_count_kv");
    const int64_t n_head_kv = head_count_kv > 0 ? head_count_kv : n_head;
    const int64_t head_k =
        std::max(header_number(g, a + "attention.key_length"), n_head > 0 ? n_embd / n_head : (int64_t) 0);
    const int64_t head_v = std::max(header_number(g, a + "attention.value_length"), head_k);
    const int64_t n_ff = std::max<int64_t>(header_number(g, a + "feed_forward_length"), 4 * n_embd);
    const int64_t n_ff_exp = std::max<int64_t>(0, header_number(g, a + "expert_feed_forward_length")) *
                                 std::max<int64_t>(1, header_number(g, a + "expert_used_count")) +
                             std::max<int64_t>(0, header_number(g, a + "expert_shared_feed_forward_length"));
    const int64_t vocab_id = gguf_find_key(g, "tokenizer.ggml.tokens");
    const int64_t n_vocab = vocab_id >= 0 && gguf_get_kv_type(g, vocab_id) == GGUF_TYPE_ARRAY ? (int64_t) gguf_get_arr_n(g, vocab_id) : -1;
    uint64_t file_size = 0;
    {
        std::ifstream f(path, std::ios::binary | std::ios::ate);
        file_size = f ? (uint64_t) std::max<std::streamoff>(0, f.tellg()) : 0;
    }
    // a model split over several files: the first one's size is not the weights'
    const bool split = header_number(g, "split.count") > 1;
    shape = { { "known", !recurrent && !split && n_layer > 0 && n_embd > 0 && n_head > 0 && n_vocab > 0 },
              { "arch", arch },
              { "nLayer", n_layer },
              { "nEmbd", n_embd },
              { "nHead", n_head },
              { "nHeadKv", n_head_kv },
              { "headK", head_k },
              { "headV", head_v },
              { "nFf", std::max(n_ff, n_ff_exp) },
              { "nVocab", n_vocab },
              { "nCtxTrain", std::max<int64_t>(0, header_number(g, a + "context_length")) },
              { "fileSize", file_size } };
    gguf_free(g);
    return shape;
}

// An upper bound of the bytes a context takes (and the weights, when `with_weights`), from the
// header alone: the KV cache at 4 bytes per element (the cache is F16: twice what it takes) for
// every layer and KV head; the compute buffer as the sum of the batch's logits, attention
// scores and mask over the whole context for every head, and 16 activations of the widest layer,
// at 4 bytes each, doubled; the host bookkeeping per cell; the weights as the file's size.
double context_bound(const json & s, const llama_context_params & cp, bool embedding, bool with_weights, bool mmap,
                     const json & params) {
    const double n_ctx = (double) ((cp.n_ctx + 255) / 256 * 256);
    const double n_ubatch = std::min<double>(n_ctx, embedding ? cp.n_ctx : std::min(cp.n_batch, cp.n_ubatch));
    const double n_layer = s["nLayer"].get<double>();
    const double n_head = s["nHead"].get<double>();
    const double kv_cell = n_layer * s["nHeadKv"].get<double>() * (s["headK"].get<double>() + s["headV"].get<double>()) * 4;
    const double wide = std::max({ s["nEmbd"].get<double>(), s["nFf"].get<double>(), n_head * s["headK"].get<double>(),
                                   n_head * s["headV"].get<double>() });
    const double compute = 2 * 4 * n_ubatch * (s["nVocab"].get<double>() + n_ctx * (n_head + 3) + 16 * wide);
    const double overhead = (double) (kCellHostBytes + (embedding ? kBatchHostBytes : 0)) * n_ctx;
    double weights = 0;
    if (with_weights && (!mmap || params.value("gpuLayers", -1) != 0)) {
        weights = s["fileSize"].get<double>();
    }
    return kv_cell * n_ctx + compute + overhead + weights;
}

// The smallest free memory among the host and the GPUs the model may use (those named in
// `devices`, or every GPU).
double smallest_free(const json & params, const json & host) {
    double floor = host["available"].get<double>();
    std::vector<ggml_backend_dev_t> devs;
    if (params.contains("devices") && params["devices"].is_array()) {
        for (const auto & name : params["devices"]) {
            if (ggml_backend_dev_t dev = ggml_backend_dev_by_name(name.get<std::string>().c_str())) {
                devs.push_back(dev);
            }
        }
    } else {
        for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
            devs.push_back(ggml_backend_dev_get(i));
        }
    }
    for (ggml_backend_dev_t dev : devs) {
        const auto type = ggml_backend_dev_type(dev);
        if (type != GGML_BACKEND_DEVICE_TYPE_GPU && type != GGML_BACKEND_DEVICE_TYPE_IGPU) {
            continue;
        }
        size_t free = 0;
        size_t total = 0;
        ggml_backend_dev_memory(dev, &free, &total);
        floor = std::min(floor, (double) free);
    }
    return floor;
}

}  // namespace

json memory_estimate(loupe_model * m, const json & p, std::string & err) {
    const int64_t t0 = now_us();
    std::lock_guard<std::mutex> lock(m->shadow_mutex);
    if (m->params.value("vocabOnly", false)) {
        err = "the model is loaded with vocabOnly: it has no context to estimate";
        return nullptr;
    }
    if (m->shape.is_null()) {
        m->shape = read_shape(m->params["path"].get<std::string>());
    }
    const json & shape = m->shape;
    const std::string kind = p.value("kind", "generation");
    const int32_t n_train = m->model ? llama_model_n_ctx_train(m->model) : shape.value("nCtxTrain", 0);
    llama_context_params cp;
    if (kind == "embedding") {
        if (!embedding_params(n_train, p, cp, err)) {
            return nullptr;
        }
    } else if (kind == "generation") {
        cp = generation_params(n_train, p);
    } else {
        err = "unknown context kind \"" + kind + "\"";
        return nullptr;
    }
    std::string fa = p.value("flashAttn", "auto");
    cp.flash_attn_type = fa == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                       : fa == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                     : LLAMA_FLASH_ATTN_TYPE_AUTO;
    cp.no_perf = true;
    const uint32_t n_ctx = cp.n_ctx;
    const json host = host_memory();
    const bool mmap = m->params.value("useMmap", true);
    json out = { { "kind", kind },
                 { "nCtx", n_ctx },
                 { "nBatch", std::min(cp.n_batch, n_ctx) },
                 { "weightsLoaded", m->model != nullptr },
                 { "mmap", mmap },
                 { "host", host } };

    // 1. The quick bound: when even an upper bound of everything the context (and the weights,
    // when not loaded yet) takes is at most half of the smallest free memory among the devices,
    // the context fits and nothing needs to be laid out.
    if (!p.value("exact", false) && !m->shadow && shape.value("known", false)) {
        const double bound = context_bound(shape, cp, kind == "embedding", m->model == nullptr, mmap, m->params);
        const double floor = smallest_free(m->params, host);
        if (bound <= kBoundShare * floor) {
            out["method"] = "bound";
            out["exact"] = false;
            out["bound"] = (uint64_t) bound;
            out["floor"] = (uint64_t) floor;
            out["devices"] = json::array();
            out["shadowUs"] = 0;
            out["layoutUs"] = 0;
            out["wallUs"] = now_us() - t0;
            return out;
        }
        out["bound"] = (uint64_t) bound;
        out["floor"] = (uint64_t) floor;
    }

    // 2. The layout on the shadow model.
    int64_t shadow_us = 0;
    llama_model * shadow = shadow_of(m, err, shadow_us);
    if (!shadow) {
        return nullptr;
    }
    std::vector<device_memory> devs = device_list(shadow, host);

    // what the context keeps on the host besides its buffers, per cell
    const bool has_cells = !llama_model_is_recurrent(shadow) || llama_model_is_hybrid(shadow);
    const uint64_t per_cell = (has_cells ? kCellHostBytes : 0) + (kind == "embedding" ? kBatchHostBytes : 0);

    auto with_size = [&](uint32_t n) {
        llama_context_params c = cp;
        c.n_ctx = n;
        if (kind == "embedding") {
            c.n_batch = n;
            c.n_ubatch = n;
            c.n_seq_max = std::min<uint32_t>(cp.n_seq_max, n);
        }
        return c;
    };
    auto fits = [&](const std::vector<device_memory> & ds) {
        for (const auto & d : ds) {
            if (d.context + d.compute + d.overhead > (double) d.free) {
                return false;
            }
        }
        return true;
    };

    const int64_t t1 = now_us();
    std::vector<device_memory> result;
    json probes = json::array();
    std::string method = "layout";
    if (n_ctx <= kExactMax) {
        if (!lay_out(shadow, cp, devs, result, err)) {
            return nullptr;
        }
    } else {
        std::vector<device_memory> a;
        std::vector<device_memory> b;
        if (!lay_out(shadow, with_size(kProbe / 2), devs, a, err) || !lay_out(shadow, with_size(kProbe), devs, b, err)) {
            return nullptr;
        }
        probes = { kProbe / 2, kProbe };
        const double t = ((double) n_ctx - kProbe) / (kProbe / 2.0);
        result = b;
        for (size_t i = 0; i < result.size(); i++) {
            result[i].context = b[i].context + std::max(0.0, (b[i].context - a[i].context) * t);
            result[i].compute = b[i].compute + std::max(0.0, (b[i].compute - a[i].compute) * t);
        }
        result[0].overhead = (double) per_cell * n_ctx;
        method = "extrapolated";
        if (fits(result)) {
            // it may fit: the real size can be laid out (its bookkeeping fits in free memory)
            if (!lay_out(shadow, cp, devs, result, err)) {
                return nullptr;
            }
            method = "layout";
        }
    }
    result[0].overhead = (double) per_cell * n_ctx;
    json devices = json::array();
    for (const auto & d : result) {
        devices.push_back(device_json(d));
    }
    out["method"] = method;
    out["exact"] = method == "layout";
    out["probes"] = probes;
    out["devices"] = devices;
    out["shadowUs"] = shadow_us;
    out["layoutUs"] = now_us() - t1;
    out["wallUs"] = now_us() - t0;
    return out;
}

}  // namespace loupe

using namespace loupe;

extern "C" {

char * loupe_model_memory_estimate(loupe_model * m, const char * params_json, char * err, int32_t err_cap) {
    std::string msg;
    try {
        if (!m) {
            msg = "model is NULL";
        } else {
            json p = json::parse(params_json ? params_json : "{}");
            json r = memory_estimate(m, p, msg);
            if (!r.is_null()) {
                char * out = dup_string(r.dump());
                if (out) {
                    return out;
                }
                msg = "out of memory";
            }
        }
    } catch (const std::exception & e) {
        msg = e.what();
    }
    fail_into(LOUPE_ERR_LOAD, msg, err, err_cap);
    return nullptr;
}

}  // extern "C"
