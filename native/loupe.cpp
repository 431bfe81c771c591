// loupe.cpp — libloupe's core: errors, logging, backends, graph measuring, models,
// tokenizer and chat templates. Every entry point catches C++ exceptions.

#include "loupe_internal.h"

#include <dirent.h>
#include <dlfcn.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

namespace loupe {

namespace {
thread_local std::string t_error;
thread_local std::string * t_capture = nullptr;  // error lines of the current call
}  // namespace

int32_t fail(int32_t code, std::string msg) {
    t_error = std::move(msg);
    return code;
}

void fail_into(int32_t code, const std::string & msg, char * err, int32_t err_cap) {
    fail(code, msg);
    if (err && err_cap > 0) {
        size_t n = std::min<size_t>(msg.size(), (size_t) err_cap - 1);
        std::memcpy(err, msg.data(), n);
        err[n] = '\0';
    }
}

char * dup_string(const std::string & s) {
    char * out = static_cast<char *>(std::malloc(s.size() + 1));
    if (out) {
        std::memcpy(out, s.data(), s.size());
        out[s.size()] = '\0';
    }
    return out;
}

int64_t now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

log_capture::log_capture() : prev(t_capture) {
    t_capture = &lines;
}

log_capture::~log_capture() {
    t_capture = prev;
}

namespace {

// ---- logging -------------------------------------------------------------------------

struct log_line {
    int level;
    std::string text;
};

std::mutex g_log_mutex;
std::vector<log_line> g_logs;       // kept until loupe_logs() takes them
constexpr size_t kMaxLogs = 2000;
bool g_log_echo = std::getenv("LOUPE_LOG") != nullptr;

void log_callback(ggml_log_level level, const char * text, void *) {
    if (!text) {
        return;
    }
    if (level >= GGML_LOG_LEVEL_WARN && t_capture) {
        std::string line(text);
        if (!line.empty() && line.back() == '\n') {
            line.pop_back();
        }
        if (!line.empty()) {
            if (!t_capture->empty()) {
                t_capture->append("; ");
            }
            t_capture->append(line);
        }
    }
    if (g_log_echo) {
        std::fputs(text, stderr);
    }
    if (level == GGML_LOG_LEVEL_DEBUG) {
        return;
    }
    std::lock_guard<std::mutex> lock(g_log_mutex);
    if (g_logs.size() >= kMaxLogs) {
        g_logs.erase(g_logs.begin(), g_logs.begin() + kMaxLogs / 2);
    }
    g_logs.push_back({ (int) level, text });
}


// ---- backends ------------------------------------------------------------------------

std::mutex g_init_mutex;
bool g_initialized = false;
std::string g_backend_report;

const char * dev_type_name(enum ggml_backend_dev_type t) {
    switch (t) {
        case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
        default: return "unknown";
    }
}

bool ends_with(const std::string & s, const std::string & suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Backend name of a file named libggml-<name>[-<variant>].so; "" for other files.
std::string backend_name_of(const std::string & file) {
    const std::string prefix = "libggml-";
    if (file.rfind(prefix, 0) != 0 || !ends_with(file, ".so")) {
        return "";
    }
    std::string rest = file.substr(prefix.size(), file.size() - prefix.size() - 3);
    if (rest == "base" || rest.empty()) {
        return "";
    }
    size_t dash = rest.find('-');
    return dash == std::string::npos ? rest : rest.substr(0, dash);
}

json load_backends(const std::string & dir) {
    std::map<std::string, std::vector<std::string>> files;  // backend name -> files
    DIR * d = opendir(dir.c_str());
    if (!d) {
        throw std::runtime_error("cannot open engine directory \"" + dir + "\": " + std::strerror(errno));
    }
    while (struct dirent * e = readdir(d)) {
        std::string name = e->d_name;
        std::string backend = backend_name_of(name);
        if (!backend.empty()) {
            files[backend].push_back(name);
        }
    }
    closedir(d);

    json report = json::array();
    for (auto & [backend, list] : files) {
        std::sort(list.begin(), list.end());
        json entry = { { "name", backend }, { "loaded", false }, { "file", nullptr }, { "reason", nullptr },
                       { "score", 0 }, { "variants", json::array() } };
        std::string best_file;
        std::string first_error;
        int best_score = -1;
        for (const auto & file : list) {
            std::string path = dir + "/" + file;
            json variant = { { "file", file }, { "score", nullptr }, { "error", nullptr } };
            dlerror();
            void * h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
            if (!h) {
                const char * err = dlerror();
                variant["error"] = err ? err : "dlopen failed";
                if (first_error.empty()) {
                    first_error = variant["error"].get<std::string>();
                }
            } else {
                using score_fn_t = int (*)(void);
                auto score_fn = (score_fn_t) dlsym(h, "ggml_backend_score");
                // A backend without a score function (e.g. Vulkan) is always usable.
                int score = score_fn ? score_fn() : 1;
                variant["score"] = score;
                if (score == 0) {
                    variant["error"] = "not supported on this machine (score 0)";
                    if (first_error.empty()) {
                        first_error = "no variant is supported on this machine";
                    }
                } else if (score > best_score) {
                    best_score = score;
                    best_file = file;
                }
                dlclose(h);
            }
            entry["variants"].push_back(variant);
        }
        if (best_file.empty()) {
            entry["reason"] = first_error.empty() ? "no loadable library" : first_error;
        } else {
            log_capture cap;
            ggml_backend_reg_t reg = ggml_backend_load((dir + "/" + best_file).c_str());
            entry["file"] = best_file;
            entry["score"] = best_score;
            if (reg) {
                entry["loaded"] = true;
                entry["devices"] = ggml_backend_reg_dev_count(reg);
            } else {
                entry["reason"] = cap.lines.empty() ? "ggml_backend_load failed" : cap.lines;
            }
        }
        report.push_back(entry);
    }
    return report;
}

}  // namespace

// ---- graph measuring -----------------------------------------------------------------

bool is_heavy(enum ggml_op op) {
    switch (op) {
        case GGML_OP_MUL_MAT:
        case GGML_OP_MUL_MAT_ID:
        case GGML_OP_FLASH_ATTN_EXT:
        case GGML_OP_CONV_2D:
        case GGML_OP_CONV_2D_DW:
        case GGML_OP_CONV_3D:
        case GGML_OP_CONV_TRANSPOSE_1D:
        case GGML_OP_CONV_TRANSPOSE_2D:
            return true;
        default:
            return false;
    }
}

void stage_stats::count(int dev, enum ggml_op op, const char * tensor_name) {
    if ((int) ops.size() <= dev) {
        ops.resize(dev + 1, std::vector<int64_t>(GGML_OP_COUNT, 0));
        first_heavy.resize(dev + 1);
    }
    ops[dev][op]++;
    if (is_heavy(op) && first_heavy[dev].empty()) {
        first_heavy[dev] = std::string(ggml_op_name(op)) + " " + tensor_name;
    }
}

int device_table::index_of(ggml_backend_buffer_t buf) {
    if (!buf) {
        return 0;
    }
    ggml_backend_buffer_type_t buft = ggml_backend_buffer_get_type(buf);
    auto it = by_buft.find(buft);
    if (it != by_buft.end()) {
        return it->second;
    }
    int idx = 0;
    // Host buffers (CPU, pinned host memory of a GPU backend) belong to the CPU.
    if (!ggml_backend_buft_is_host(buft)) {
        ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
        std::string name = dev ? ggml_backend_dev_name(dev) : ggml_backend_buft_name(buft);
        auto pos = std::find(names.begin(), names.end(), name);
        if (pos == names.end()) {
            names.push_back(name);
            idx = (int) names.size() - 1;
        } else {
            idx = (int) (pos - names.begin());
        }
    }
    by_buft.emplace(buft, idx);
    return idx;
}

bool eval_callback(struct ggml_tensor * t, bool ask, void * user_data) {
    auto * m = static_cast<measured *>(user_data);
    // ggml's scheduler asks about every node of a split before it computes the split, and
    // computes up to the first node asked for, then calls again with ask = false: returning
    // false there skips the rest of the split.
    const bool stopping = m->stop && m->stop->load(std::memory_order_relaxed);
    if (ask) {
        if (stopping) {
            return true;  // compute this node alone, then leave the split
        }
        if (m->cur_stage) {
            ggml_backend_buffer_t buf = t->view_src ? t->view_src->buffer : t->buffer;
            m->cur_stage->count(m->devices.index_of(buf), t->op, t->name);
        }
        if (m->stop && ++m->since_check >= measured::stop_check_nodes) {
            m->since_check = 0;
            return true;  // a piece ends here: the flag is looked at after it
        }
        return false;  // otherwise never ask for data: each split runs as one graph
    }
    return !stopping;
}

json stage_json(const stage_stats & s, const device_table & devs) {
    json devices = json::object();
    for (size_t d = 0; d < s.ops.size(); d++) {
        int64_t nodes = 0;
        int64_t heavy = 0;
        json ops = json::object();
        for (int op = 0; op < GGML_OP_COUNT; op++) {
            int64_t n = s.ops[d][op];
            if (n == 0) {
                continue;
            }
            nodes += n;
            if (is_heavy((enum ggml_op) op)) {
                heavy += n;
            }
            ops[ggml_op_name((enum ggml_op) op)] = n;
        }
        if (nodes == 0) {
            continue;
        }
        devices[devs.names[d]] = { { "nodes", nodes }, { "heavy", heavy }, { "ops", ops },
                                   { "firstHeavy", s.first_heavy[d].empty() ? json(nullptr) : json(s.first_heavy[d]) } };
    }
    return { { "wallUs", s.wall_us }, { "tokens", s.tokens }, { "graphs", s.graphs }, { "devices", devices } };
}


void cpu_threadpool::attach(llama_context * ctx, int n_threads, int n_threads_batch) {
    ggml_backend_reg_t reg = ggml_backend_reg_by_name("CPU");
    if (!reg) {
        return;
    }
    using new_fn_t = ggml_threadpool * (*) (ggml_threadpool_params *);
    auto new_fn = (new_fn_t) ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new");
    free_fn = (void (*)(ggml_threadpool *)) ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free");
    if (!new_fn || !free_fn) {
        return;
    }
    // poll 1: spin briefly between tokens, then sleep, so an idle model does not burn cores
    ggml_threadpool_params tpp = ggml_threadpool_params_default(n_threads);
    tpp.poll = 1;
    pool = new_fn(&tpp);
    pool_batch = pool;
    if (pool && n_threads_batch != n_threads) {
        ggml_threadpool_params tpb = ggml_threadpool_params_default(n_threads_batch);
        tpb.poll = 1;
        pool_batch = new_fn(&tpb);
    }
    if (pool && pool_batch) {
        llama_attach_threadpool(ctx, pool, pool_batch);
    }
    // ggml_threadpool_pause is exported by the CPU backend's library but not offered through
    // its registry: look it up in the library that holds ggml_threadpool_new.
    Dl_info where{};
    if (dladdr((void *) new_fn, &where) && where.dli_fname) {
        if (void * lib = dlopen(where.dli_fname, RTLD_NOW | RTLD_NOLOAD)) {
            pause_fn = (void (*)(ggml_threadpool *)) dlsym(lib, "ggml_threadpool_pause");
            dlclose(lib);  // drops the reference dlopen took; the backend keeps its own
        }
    }
}

void cpu_threadpool::idle() {
    if (!pause_fn) {
        return;
    }
    if (pool) {
        pause_fn(pool);
    }
    if (pool_batch && pool_batch != pool) {
        pause_fn(pool_batch);
    }
}

cpu_threadpool::~cpu_threadpool() {
    if (!free_fn) {
        return;
    }
    if (pool_batch && pool_batch != pool) {
        free_fn(pool_batch);
    }
    if (pool) {
        free_fn(pool);
    }
}

namespace {

bool progress_callback(float p, void * data) {
    auto * m = static_cast<loupe_model *>(data);
    m->progress.store(p);
    return !m->cancel.load();
}

std::string meta_string(const llama_model * model, const char * key) {
    char buf[256];
    int32_t n = llama_model_meta_val_str(model, key, buf, sizeof(buf));
    return n < 0 ? std::string() : std::string(buf, std::min<int32_t>(n, sizeof(buf) - 1));
}

}  // namespace

llama_model_params model_params(const json & p, model_placement & place) {
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = p.value("gpuLayers", -1);
    mp.vocab_only = p.value("vocabOnly", false);
    mp.load_mode = p.value("useMmap", true) ? mp.load_mode : LLAMA_LOAD_MODE_NONE;
    const std::string split_mode = p.value("splitMode", std::string("layer"));
    mp.split_mode = split_mode == "none" ? LLAMA_SPLIT_MODE_NONE
                  : split_mode == "row"  ? LLAMA_SPLIT_MODE_ROW
                                         : LLAMA_SPLIT_MODE_LAYER;
    mp.main_gpu = p.value("mainGpu", 0);
    place.split.clear();
    if (p.contains("tensorSplit") && p["tensorSplit"].is_array() && !p["tensorSplit"].empty()) {
        if (p["tensorSplit"].size() > llama_max_devices()) {
            throw std::invalid_argument("tensorSplit has " + std::to_string(p["tensorSplit"].size()) +
                                        " parts but the engine takes at most " + std::to_string(llama_max_devices()));
        }
        place.split.assign(llama_max_devices(), 0.0f);
        for (size_t i = 0; i < p["tensorSplit"].size(); i++) {
            place.split[i] = p["tensorSplit"][i].get<float>();
        }
        mp.tensor_split = place.split.data();
    }
    std::vector<ggml_backend_dev_t> & devs = place.devs;
    devs.clear();
    if (p.contains("devices") && p["devices"].is_array()) {
        for (const auto & name : p["devices"]) {
            ggml_backend_dev_t dev = ggml_backend_dev_by_name(name.get<std::string>().c_str());
            if (!dev) {
                throw std::invalid_argument("no device named \"" + name.get<std::string>() + "\"");
            }
            devs.push_back(dev);
        }
        devs.push_back(nullptr);
        mp.devices = devs.data();
    }
    return mp;
}

}  // namespace loupe

using namespace loupe;

loupe_model::~loupe_model() {
    delete default_ctx;
    if (model) {
        llama_model_free(model);
    }
    if (shadow) {
        llama_model_free(shadow);
    }
}

extern "C" {

int32_t loupe_abi_version(void) {
    return LOUPE_ABI_VERSION;
}

const char * loupe_last_error(void) {
    return t_error.c_str();
}

void loupe_string_free(char * s) {
    std::free(s);
}

char * loupe_init(const char * engine_dir) {
    try {
        std::lock_guard<std::mutex> lock(g_init_mutex);
        if (!g_initialized) {
            if (!engine_dir) {
                fail(LOUPE_ERR_INVALID, "engine_dir is NULL");
                return nullptr;
            }
            llama_log_set(log_callback, nullptr);
            json report = load_backends(engine_dir);
            llama_backend_init();
            g_backend_report = report.dump();
            g_initialized = true;
        }
        return dup_string(g_backend_report);
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_LOAD, e.what());
        return nullptr;
    }
}

char * loupe_devices(void) {
    try {
        json out = json::array();
        for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
            ggml_backend_dev_t dev = ggml_backend_dev_get(i);
            size_t free = 0;
            size_t total = 0;
            ggml_backend_dev_memory(dev, &free, &total);
            out.push_back({ { "index", i },
                            { "name", ggml_backend_dev_name(dev) },
                            { "description", ggml_backend_dev_description(dev) },
                            { "type", dev_type_name(ggml_backend_dev_type(dev)) },
                            { "backend", ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev)) },
                            { "memoryTotal", total },
                            { "memoryFree", free } });
        }
        return dup_string(out.dump());
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_INTERNAL, e.what());
        return nullptr;
    }
}

char * loupe_rpc_add_server(const char * rpc_library, const char * endpoint) {
    try {
        if (!rpc_library || !endpoint) {
            fail(LOUPE_ERR_INVALID, "rpc_library and endpoint must not be NULL");
            return nullptr;
        }
        std::lock_guard<std::mutex> lock(g_init_mutex);
        if (!g_initialized) {
            fail(LOUPE_ERR_STATE, "loupe_init has not run");
            return nullptr;
        }
        ggml_backend_reg_t rpc = ggml_backend_reg_by_name("RPC");
        if (!rpc) {
            rpc = ggml_backend_load(rpc_library);  // registers it
            if (!rpc) {
                fail(LOUPE_ERR_LOAD, std::string("cannot load ggml's RPC backend module ") + rpc_library);
                return nullptr;
            }
        }
        using add_server_t = ggml_backend_reg_t (*)(const char *);
        auto add_server = (add_server_t) ggml_backend_reg_get_proc_address(rpc, "ggml_backend_rpc_add_server");
        if (!add_server) {
            fail(LOUPE_ERR_LOAD, "the RPC backend module has no ggml_backend_rpc_add_server");
            return nullptr;
        }
        static std::map<std::string, ggml_backend_reg_t> added;  // under g_init_mutex
        ggml_backend_reg_t reg;
        auto it = added.find(endpoint);
        if (it != added.end()) {
            reg = it->second;
        } else {
            reg = add_server(endpoint);
            if (!reg) {
                fail(LOUPE_ERR_LOAD, std::string("the RPC server at ") + endpoint + " offers no device");
                return nullptr;
            }
            ggml_backend_register(reg);
            added[endpoint] = reg;
        }
        json names = json::array();
        for (size_t i = 0; i < ggml_backend_reg_dev_count(reg); i++) {
            names.push_back(ggml_backend_dev_name(ggml_backend_reg_dev_get(reg, i)));
        }
        return dup_string(names.dump());
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_INTERNAL, e.what());
        return nullptr;
    }
}

char * loupe_logs(void) {
    try {
        std::vector<log_line> lines;
        {
            std::lock_guard<std::mutex> lock(g_log_mutex);
            lines.swap(g_logs);
        }
        json out = json::array();
        for (auto & l : lines) {
            out.push_back({ { "level", l.level }, { "text", l.text } });
        }
        return dup_string(out.dump());
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_INTERNAL, e.what());
        return nullptr;
    }
}

loupe_model * loupe_model_create(const char * params_json) {
    try {
        auto m = std::make_unique<loupe_model>();
        m->params = json::parse(params_json ? params_json : "");
        if (!m->params.is_object() || !m->params.contains("path") || !m->params["path"].is_string()) {
            fail(LOUPE_ERR_INVALID, "model parameters need a \"path\" string");
            return nullptr;
        }
        return m.release();
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_INVALID, std::string("invalid model parameters: ") + e.what());
        return nullptr;
    }
}

int32_t loupe_model_load(loupe_model * m) {
    if (!m) {
        return fail(LOUPE_ERR_INVALID, "model is NULL");
    }
    return guarded(m, [&]() -> int32_t {
        if (m->model) {
            return m->set_error(LOUPE_ERR_STATE, "model is already loaded");
        }
        const json & p = m->params;
        const std::string path = p["path"];
        int64_t t0 = now_us();

        model_placement place;
        llama_model_params mp;
        try {
            mp = model_params(p, place);
        } catch (const std::invalid_argument & e) {
            return m->set_error(LOUPE_ERR_LOAD, e.what());
        }
        mp.progress_callback = progress_callback;
        mp.progress_callback_user_data = m;

        if (m->cancel.load()) {
            return m->set_error(LOUPE_ERR_ABORTED, "loading was cancelled");
        }
        {
            log_capture cap;
            m->model = llama_model_load_from_file(path.c_str(), mp);
            if (!m->model) {
                if (m->cancel.load()) {
                    return m->set_error(LOUPE_ERR_ABORTED, "loading was cancelled");
                }
                return m->set_error(LOUPE_ERR_LOAD, cap.lines.empty() ? "the engine could not load the file" : cap.lines);
            }
        }
        m->vocab = llama_model_get_vocab(m->model);

        if (!mp.vocab_only && p.value("defaultContext", true)) {
            std::string err;
            m->default_ctx = make_context(m, p, err);
            if (!m->default_ctx) {
                return m->set_error(LOUPE_ERR_LOAD, err);
            }
        }
        if (m->cancel.load()) {
            return m->set_error(LOUPE_ERR_ABORTED, "loading was cancelled");
        }
        m->load_us = now_us() - t0;
        m->progress.store(1.0f);
        return LOUPE_OK;
    });
}

float loupe_model_progress(const loupe_model * m) {
    return m ? m->progress.load() : 0.0f;
}

void loupe_model_cancel(loupe_model * m) {
    if (m) {
        m->cancel.store(true);
    }
}

const char * loupe_model_error(const loupe_model * m) {
    return m ? m->error.c_str() : "model is NULL";
}

const char * loupe_model_info(loupe_model * m) {
    if (!m || !m->model) {
        fail(LOUPE_ERR_STATE, "model is not loaded");
        return nullptr;
    }
    try {
        char desc[256];
        llama_model_desc(m->model, desc, sizeof(desc));
        const char * tmpl = llama_model_chat_template(m->model, nullptr);
        int32_t n_layer = llama_model_n_layer(m->model);
        // layers that went to a non-CPU device: none when there is no such device
        int32_t gpu_layers = m->params.value("gpuLayers", -1);
        bool any_gpu = false;
        for (int i = 0; i < llama_model_n_devices(m->model); i++) {
            ggml_backend_dev_t dev = llama_model_get_device(m->model, i);
            any_gpu = any_gpu || ggml_backend_dev_type(dev) != GGML_BACKEND_DEVICE_TYPE_CPU;
        }
        json memory = json::array();
        llama_context * lctx = m->default_ctx ? m->default_ctx->ctx : nullptr;
        if (lctx) {
            for (const auto & [buft, mb] : llama_get_memory_breakdown(lctx)) {
                ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
                std::string dev_name = ggml_backend_buft_is_host(buft) || !dev ? "CPU" : ggml_backend_dev_name(dev);
                memory.push_back({ { "device", dev_name }, { "buffer", ggml_backend_buft_name(buft) },
                                   { "model", mb.model }, { "context", mb.context }, { "compute", mb.compute } });
            }
        }
        json info = {
            { "desc", desc },
            { "arch", meta_string(m->model, "general.architecture") },
            { "name", meta_string(m->model, "general.name") },
            { "nParams", llama_model_n_params(m->model) },
            { "size", llama_model_size(m->model) },
            { "nCtxTrain", llama_model_n_ctx_train(m->model) },
            { "nEmbd", llama_model_n_embd(m->model) },
            { "nLayer", n_layer },
            { "nVocab", llama_vocab_n_tokens(m->vocab) },
            { "nCtx", lctx ? (int64_t) llama_n_ctx(lctx) : 0 },
            { "nBatch", lctx ? (int64_t) llama_n_batch(lctx) : 0 },
            { "nThreads", lctx ? llama_n_threads(lctx) : 0 },
            { "bos", llama_vocab_bos(m->vocab) },
            { "eos", llama_vocab_eos(m->vocab) },
            { "addBos", llama_vocab_get_add_bos(m->vocab) },
            { "hasEncoder", llama_model_has_encoder(m->model) },
            { "hasDecoder", llama_model_has_decoder(m->model) },
            { "chatTemplate", tmpl ? json(tmpl) : json(nullptr) },
            { "loadUs", m->load_us },
            { "gpuLayers", !any_gpu ? 0 : gpu_layers < 0 || gpu_layers > n_layer + 1 ? n_layer + 1 : gpu_layers },
            { "memory", memory },
        };
        m->info = info.dump();
        return m->info.c_str();
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_INTERNAL, e.what());
        return nullptr;
    }
}

void loupe_model_free(loupe_model * m) {
    delete m;
#if defined(__GLIBC__)
    // Give the freed heap back to the system: without it glibc keeps the model's small
    // allocations (vocabulary, graphs) and a process that loads and closes models keeps growing.
    malloc_trim(0);
#endif
}

int32_t loupe_model_tokenize(loupe_model * m, const char * text, int32_t len, int32_t add_special,
                             int32_t parse_special, int32_t * out, int32_t cap) {
    if (!m || !m->vocab || (!text && len > 0) || len < 0) {
        fail(LOUPE_ERR_INVALID, "invalid arguments to loupe_model_tokenize");
        return INT32_MIN;
    }
    return vocab_guarded([&]() -> int32_t {
        return llama_tokenize(m->vocab, text ? text : "", len, out, cap, add_special != 0, parse_special != 0);
    });
}

int32_t loupe_model_tokenize_many(loupe_model * m, const char * text, const int32_t * offsets, int32_t n,
                                  int32_t add_special, int32_t parse_special, int32_t * out, int32_t cap,
                                  int32_t * lengths) {
    if (!m || !m->vocab || n < 0 || !offsets || (n > 0 && !lengths) || cap < 0 || (!out && cap > 0) ||
        offsets[0] != 0) {
        fail(LOUPE_ERR_INVALID, "invalid arguments to loupe_model_tokenize_many");
        return INT32_MIN;
    }
    for (int32_t i = 0; i < n; i++) {
        if (offsets[i + 1] < offsets[i]) {
            fail(LOUPE_ERR_INVALID, "loupe_model_tokenize_many: offset " + std::to_string(i + 1) + " is below offset " +
                                        std::to_string(i));
            return INT32_MIN;
        }
    }
    if (!text && offsets[n] > 0) {
        fail(LOUPE_ERR_INVALID, "loupe_model_tokenize_many: no text for non-empty offsets");
        return INT32_MIN;
    }
    return vocab_guarded([&]() -> int32_t {
        int64_t total = 0;
        for (int32_t i = 0; i < n; i++) {
            // Past the end of `out` only the count is wanted (llama_tokenize returns -count).
            int32_t room = total < cap ? (int32_t) (cap - total) : 0;
            int32_t rc = llama_tokenize(m->vocab, text ? text + offsets[i] : "", offsets[i + 1] - offsets[i],
                                        room > 0 ? out + total : nullptr, room, add_special != 0,
                                        parse_special != 0);
            if (rc == INT32_MIN) {
                fail(LOUPE_ERR_INVALID, "text " + std::to_string(i) + " has too many tokens to count");
                return INT32_MIN;
            }
            lengths[i] = rc < 0 ? -rc : rc;
            total += lengths[i];
            if (total > INT32_MAX) {
                fail(LOUPE_ERR_INVALID, "the texts have more than 2^31 tokens together");
                return INT32_MIN;
            }
        }
        return total <= cap ? (int32_t) total : (int32_t) -total;
    });
}

int32_t loupe_model_detokenize(loupe_model * m, const int32_t * tokens, int32_t n, int32_t remove_special,
                               int32_t unparse_special, char * out, int32_t cap) {
    if (!m || !m->vocab || n < 0 || (!tokens && n > 0)) {
        fail(LOUPE_ERR_INVALID, "invalid arguments to loupe_model_detokenize");
        return INT32_MIN;
    }
    int32_t n_vocab = llama_vocab_n_tokens(m->vocab);
    for (int32_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab) {
            fail(LOUPE_ERR_INVALID, "token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                        " is out of range (vocabulary of " + std::to_string(n_vocab) + ")");
            return INT32_MIN;
        }
    }
    return vocab_guarded([&]() -> int32_t {
        return llama_detokenize(m->vocab, tokens, n, out, cap, remove_special != 0, unparse_special != 0);
    });
}

char * loupe_model_chat_apply(loupe_model * m, const char * messages_json, const char * template_override,
                              int32_t add_assistant) {
    if (!m || !m->model) {
        fail(LOUPE_ERR_STATE, "model is not loaded");
        return nullptr;
    }
    try {
        json msgs = json::parse(messages_json ? messages_json : "");
        if (!msgs.is_array()) {
            fail(LOUPE_ERR_INVALID, "messages must be a JSON array");
            return nullptr;
        }
        const char * tmpl = template_override ? template_override : llama_model_chat_template(m->model, nullptr);
        if (!tmpl) {
            fail(LOUPE_ERR_INVALID, "the model has no chat template (tokenizer.chat_template) and none was given");
            return nullptr;
        }
        std::vector<std::string> roles;
        std::vector<std::string> contents;
        for (const auto & msg : msgs) {
            roles.push_back(msg.value("role", "user"));
            contents.push_back(msg.value("content", ""));
        }
        std::vector<llama_chat_message> chat;
        size_t total = 0;
        for (size_t i = 0; i < roles.size(); i++) {
            chat.push_back({ roles[i].c_str(), contents[i].c_str() });
            total += roles[i].size() + contents[i].size();
        }
        std::string buf(2 * total + 256, '\0');
        int32_t n = llama_chat_apply_template(tmpl, chat.data(), chat.size(), add_assistant != 0, buf.data(), buf.size());
        if (n > (int32_t) buf.size()) {
            buf.resize(n);
            n = llama_chat_apply_template(tmpl, chat.data(), chat.size(), add_assistant != 0, buf.data(), buf.size());
        }
        if (n < 0) {
            fail(LOUPE_ERR_INVALID, "the chat template is not one llama.cpp supports");
            return nullptr;
        }
        buf.resize(n);
        return dup_string(buf);
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_INVALID, e.what());
        return nullptr;
    }
}

loupe_ctx * loupe_model_context(loupe_model * m) {
    if (!m || !m->default_ctx) {
        fail(LOUPE_ERR_STATE, "model is not loaded with a context");
        return nullptr;
    }
    return m->default_ctx;
}

}  // extern "C"
