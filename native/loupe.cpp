// loupe.cpp — implementation of loupe.h over llama.h (and, later, mtmd.h).
// Every entry point catches C++ exceptions; errors become codes plus a message.

#include "loupe.h"

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

#include <nlohmann/json.hpp>

#include <dirent.h>
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
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

namespace {

thread_local std::string t_error;

int32_t fail(int32_t code, std::string msg) {
    t_error = std::move(msg);
    return code;
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

// ---- logging -------------------------------------------------------------------------

struct log_line {
    int level;
    std::string text;
};

std::mutex g_log_mutex;
std::vector<log_line> g_logs;       // kept until loupe_logs() takes them
constexpr size_t kMaxLogs = 2000;
thread_local std::string * t_capture = nullptr;  // error lines of the current call
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

// Collects the engine's warning and error lines while in scope (for error messages).
struct log_capture {
    std::string lines;
    std::string * prev;
    log_capture() : prev(t_capture) { t_capture = &lines; }
    ~log_capture() { t_capture = prev; }
};

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

// Counts per device and op for one stage.
struct stage_stats {
    int64_t wall_us = 0;
    int64_t tokens  = 0;
    int64_t graphs  = 0;
    // device index -> op -> count
    std::vector<std::vector<int64_t>> ops;
    std::vector<std::string> first_heavy;

    void count(int dev, enum ggml_op op, const char * tensor_name) {
        if ((int) ops.size() <= dev) {
            ops.resize(dev + 1, std::vector<int64_t>(GGML_OP_COUNT, 0));
            first_heavy.resize(dev + 1);
        }
        ops[dev][op]++;
        if (is_heavy(op) && first_heavy[dev].empty()) {
            first_heavy[dev] = std::string(ggml_op_name(op)) + " " + tensor_name;
        }
    }
};

// Maps buffer types to device names; index 0 is the host (CPU).
struct device_table {
    std::vector<std::string> names{ "CPU" };
    std::unordered_map<ggml_backend_buffer_type_t, int> by_buft;

    int index_of(ggml_backend_buffer_t buf) {
        if (!buf) {
            return 0;
        }
        ggml_backend_buffer_type_t buft = ggml_backend_buffer_get_type(buf);
        auto it = by_buft.find(buft);
        if (it != by_buft.end()) {
            return it->second;
        }
        int idx = 0;
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
};

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

// ---- handles ---------------------------------------------------------------------------

struct loupe_model {
    json params;
    llama_model * model = nullptr;
    llama_context * ctx = nullptr;
    const llama_vocab * vocab = nullptr;
    std::atomic<float> progress{ 0.0f };
    std::atomic<bool> cancel{ false };
    std::string error;
    std::string info;
    int64_t load_us = 0;

    // generation state
    device_table devices;
    stage_stats * cur_stage = nullptr;
    std::map<std::string, stage_stats> stages;
    llama_sampler * sampler = nullptr;
    std::vector<llama_token> prompt;
    size_t prompt_done = 0;
    bool active = false;
    bool done = false;
    std::string stop_reason;
    int32_t max_tokens = 0;
    int32_t n_generated = 0;
    int32_t n_past = 0;
    bool ignore_eos = false;
    llama_token pending = -1;  // sampled but not yet decoded
    std::vector<std::string> stops;
    std::string text;          // generated text so far (stop strings removed)
    size_t emitted = 0;        // bytes of `text` already reported
    std::vector<llama_token> new_tokens;
    std::atomic<bool> abort{ false };
    std::string output;

    ~loupe_model() {
        if (sampler) {
            llama_sampler_free(sampler);
        }
        if (ctx) {
            llama_free(ctx);
        }
        if (model) {
            llama_model_free(model);
        }
    }

    int32_t set_error(int32_t code, const std::string & msg) {
        error = msg;
        return fail(code, msg);
    }
};

namespace {

bool eval_callback(struct ggml_tensor * t, bool ask, void * user_data) {
    auto * m = static_cast<loupe_model *>(user_data);
    if (ask && m->cur_stage) {
        ggml_backend_buffer_t buf = t->view_src ? t->view_src->buffer : t->buffer;
        m->cur_stage->count(m->devices.index_of(buf), t->op, t->name);
    }
    return false;  // never ask for the data: each split runs as one graph
}

bool abort_callback(void * data) {
    return static_cast<loupe_model *>(data)->abort.load();
}

bool progress_callback(float p, void * data) {
    auto * m = static_cast<loupe_model *>(data);
    m->progress.store(p);
    return !m->cancel.load();
}

template <typename F>
int32_t guarded(loupe_model * m, F && f) {
    try {
        return f();
    } catch (const std::exception & e) {
        return m ? m->set_error(LOUPE_ERR_INTERNAL, e.what()) : fail(LOUPE_ERR_INTERNAL, e.what());
    } catch (...) {
        return m ? m->set_error(LOUPE_ERR_INTERNAL, "unknown exception") : fail(LOUPE_ERR_INTERNAL, "unknown exception");
    }
}

std::string meta_string(const llama_model * model, const char * key) {
    char buf[256];
    int32_t n = llama_model_meta_val_str(model, key, buf, sizeof(buf));
    return n < 0 ? std::string() : std::string(buf, std::min<int32_t>(n, sizeof(buf) - 1));
}

// Decodes `n` tokens at the current position, measuring into `stage`.
int32_t decode_tokens(loupe_model * m, llama_token * tokens, int32_t n, stage_stats & stage, bool want_logits) {
    llama_batch batch = llama_batch_get_one(tokens, n);
    (void) want_logits;
    m->cur_stage = &stage;
    int64_t t0 = now_us();
    int32_t rc;
    {
        log_capture cap;
        rc = llama_decode(m->ctx, batch);
        if (rc != 0) {
            m->cur_stage = nullptr;
            if (rc == 2 || m->abort.load()) {
                return m->set_error(LOUPE_ERR_ABORTED, "aborted");
            }
            return m->set_error(LOUPE_ERR_DECODE, "llama_decode failed with code " + std::to_string(rc) +
                                                      (cap.lines.empty() ? "" : ": " + cap.lines));
        }
    }
    llama_synchronize(m->ctx);
    stage.wall_us += now_us() - t0;
    stage.tokens += n;
    stage.graphs += 1;
    m->cur_stage = nullptr;
    m->n_past += n;
    return LOUPE_OK;
}

void finish(loupe_model * m, const char * reason) {
    m->done = true;
    m->active = false;
    m->stop_reason = reason;
}

// Appends a token's text and applies stop strings. Returns true when a stop string ended it.
bool append_piece(loupe_model * m, llama_token tok) {
    char buf[256];
    int32_t n = llama_token_to_piece(m->vocab, tok, buf, sizeof(buf), 0, false);
    std::string piece;
    if (n < 0) {
        piece.resize(-n);
        n = llama_token_to_piece(m->vocab, tok, piece.data(), -n, 0, false);
        piece.resize(std::max(n, 0));
    } else {
        piece.assign(buf, n);
    }
    size_t search_from = m->text.size();
    m->text += piece;
    for (const auto & stop : m->stops) {
        size_t from = search_from >= stop.size() ? search_from - stop.size() + 1 : 0;
        size_t pos = m->text.find(stop, from);
        if (pos != std::string::npos) {
            m->text.resize(pos);
            return true;
        }
    }
    return false;
}

}  // namespace

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

        llama_model_params mp = llama_model_default_params();
        mp.n_gpu_layers = p.value("gpuLayers", -1);
        mp.vocab_only = p.value("vocabOnly", false);
        mp.load_mode = p.value("useMmap", true) ? mp.load_mode : LLAMA_LOAD_MODE_NONE;
        mp.progress_callback = progress_callback;
        mp.progress_callback_user_data = m;

        std::vector<ggml_backend_dev_t> devs;
        if (p.contains("devices") && p["devices"].is_array()) {
            for (const auto & name : p["devices"]) {
                ggml_backend_dev_t dev = ggml_backend_dev_by_name(name.get<std::string>().c_str());
                if (!dev) {
                    return m->set_error(LOUPE_ERR_LOAD, "no device named \"" + name.get<std::string>() + "\"");
                }
                devs.push_back(dev);
            }
            devs.push_back(nullptr);
            mp.devices = devs.data();
        }

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

        if (!mp.vocab_only) {
            llama_context_params cp = llama_context_default_params();
            int32_t n_ctx = p.value("contextSize", 0);
            int32_t n_train = llama_model_n_ctx_train(m->model);
            cp.n_ctx = n_ctx > 0 ? n_ctx : std::min(n_train, 4096);
            cp.n_batch = p.value("batchSize", 512);
            cp.n_ubatch = cp.n_batch;
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
                cp.cb_eval_user_data = m;
            }
            cp.abort_callback = abort_callback;
            cp.abort_callback_data = m;
            log_capture cap;
            m->ctx = llama_init_from_model(m->model, cp);
            if (!m->ctx) {
                return m->set_error(LOUPE_ERR_LOAD, "cannot create a context" + (cap.lines.empty() ? "" : ": " + cap.lines));
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
        if (m->ctx) {
            for (const auto & [buft, mb] : llama_get_memory_breakdown(m->ctx)) {
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
            { "nCtx", m->ctx ? (int64_t) llama_n_ctx(m->ctx) : 0 },
            { "nBatch", m->ctx ? (int64_t) llama_n_batch(m->ctx) : 0 },
            { "nThreads", m->ctx ? llama_n_threads(m->ctx) : 0 },
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
}

int32_t loupe_tokenize(loupe_model * m, const char * text, int32_t len, int32_t add_special, int32_t parse_special,
                       int32_t * out, int32_t cap) {
    if (!m || !m->vocab || (!text && len > 0) || len < 0) {
        fail(LOUPE_ERR_INVALID, "invalid arguments to loupe_tokenize");
        return INT32_MIN;
    }
    int32_t rc = guarded(m, [&]() -> int32_t {
        return llama_tokenize(m->vocab, text ? text : "", len, out, cap, add_special != 0, parse_special != 0);
    });
    return rc;
}

int32_t loupe_detokenize(loupe_model * m, const int32_t * tokens, int32_t n, int32_t remove_special,
                         int32_t unparse_special, char * out, int32_t cap) {
    if (!m || !m->vocab || n < 0 || (!tokens && n > 0)) {
        fail(LOUPE_ERR_INVALID, "invalid arguments to loupe_detokenize");
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
    return guarded(m, [&]() -> int32_t {
        return llama_detokenize(m->vocab, tokens, n, out, cap, remove_special != 0, unparse_special != 0);
    });
}

char * loupe_chat_apply(loupe_model * m, const char * messages_json, const char * template_override,
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

int32_t loupe_gen_begin(loupe_model * m, const char * params_json, const int32_t * tokens, int32_t n_tokens) {
    if (!m || !m->ctx) {
        return fail(LOUPE_ERR_STATE, "model is not loaded with a context");
    }
    if (n_tokens <= 0 || !tokens) {
        return m->set_error(LOUPE_ERR_INVALID, "the prompt is empty");
    }
    return guarded(m, [&]() -> int32_t {
        json p = json::parse(params_json ? params_json : "{}");
        int32_t n_ctx = (int32_t) llama_n_ctx(m->ctx);
        if (n_tokens + 1 > n_ctx) {
            return m->set_error(LOUPE_ERR_CONTEXT, "the prompt has " + std::to_string(n_tokens) +
                                                       " tokens but the context holds " + std::to_string(n_ctx) +
                                                       " (including one token to generate)");
        }
        int32_t n_vocab = llama_vocab_n_tokens(m->vocab);
        for (int32_t i = 0; i < n_tokens; i++) {
            if (tokens[i] < 0 || tokens[i] >= n_vocab) {
                return m->set_error(LOUPE_ERR_INVALID, "prompt token " + std::to_string(tokens[i]) + " is out of range");
            }
        }
        if (m->sampler) {
            llama_sampler_free(m->sampler);
            m->sampler = nullptr;
        }
        llama_sampler_chain_params sp = llama_sampler_chain_default_params();
        sp.no_perf = true;
        m->sampler = llama_sampler_chain_init(sp);
        float temp = p.value("temperature", 0.8f);
        float repeat_penalty = p.value("repeatPenalty", 1.0f);
        if (repeat_penalty != 1.0f) {
            llama_sampler_chain_add(m->sampler,
                                    llama_sampler_init_penalties(llama_vocab_n_tokens(m->vocab), p.value("repeatLastN", 64), repeat_penalty, 0.0f, 0.0f));
        }
        if (temp <= 0.0f) {
            llama_sampler_chain_add(m->sampler, llama_sampler_init_greedy());
        } else {
            int32_t top_k = p.value("topK", 40);
            float top_p = p.value("topP", 0.95f);
            float min_p = p.value("minP", 0.05f);
            if (top_k > 0) {
                llama_sampler_chain_add(m->sampler, llama_sampler_init_top_k(top_k));
            }
            if (top_p < 1.0f) {
                llama_sampler_chain_add(m->sampler, llama_sampler_init_top_p(top_p, 1));
            }
            if (min_p > 0.0f) {
                llama_sampler_chain_add(m->sampler, llama_sampler_init_min_p(min_p, 1));
            }
            llama_sampler_chain_add(m->sampler, llama_sampler_init_temp(temp));
            llama_sampler_chain_add(m->sampler, llama_sampler_init_dist(p.value("seed", (uint32_t) LLAMA_DEFAULT_SEED)));
        }
        m->stops.clear();
        if (p.contains("stop") && p["stop"].is_array()) {
            for (const auto & s : p["stop"]) {
                std::string stop = s.get<std::string>();
                if (!stop.empty()) {
                    m->stops.push_back(stop);
                }
            }
        }
        m->max_tokens = p.value("maxTokens", 256);
        m->ignore_eos = p.value("ignoreEos", false);
        m->prompt.assign(tokens, tokens + n_tokens);
        m->prompt_done = 0;
        m->n_generated = 0;
        m->n_past = 0;
        m->pending = -1;
        m->text.clear();
        m->emitted = 0;
        m->new_tokens.clear();
        m->stages.clear();
        m->stop_reason.clear();
        m->done = false;
        m->active = true;
        m->abort.store(false);
        llama_memory_clear(llama_get_memory(m->ctx), true);
        return LOUPE_OK;
    });
}

int32_t loupe_gen_step(loupe_model * m, int32_t budget_ms, int32_t max_step_tokens) {
    if (!m || !m->ctx) {
        return fail(LOUPE_ERR_STATE, "model is not loaded with a context");
    }
    return guarded(m, [&]() -> int32_t {
        if (m->done) {
            return 1;
        }
        if (!m->active) {
            return m->set_error(LOUPE_ERR_STATE, "no generation was begun");
        }
        const int64_t deadline = now_us() + (int64_t) std::max(budget_ms, 0) * 1000;
        const int32_t n_ctx = (int32_t) llama_n_ctx(m->ctx);
        const int32_t n_batch = (int32_t) llama_n_batch(m->ctx);

        // prompt evaluation, in batches
        stage_stats & prompt_stage = m->stages["prompt"];
        while (m->prompt_done < m->prompt.size()) {
            if (m->abort.load()) {
                finish(m, "aborted");
                return 1;
            }
            int32_t n = (int32_t) std::min<size_t>(n_batch, m->prompt.size() - m->prompt_done);
            int32_t rc = decode_tokens(m, m->prompt.data() + m->prompt_done, n, prompt_stage, true);
            if (rc == LOUPE_ERR_ABORTED) {
                finish(m, "aborted");
                return 1;
            }
            if (rc != LOUPE_OK) {
                m->active = false;
                return rc;
            }
            m->prompt_done += n;
            if (m->prompt_done < m->prompt.size() && now_us() > deadline) {
                return 0;
            }
        }

        int32_t step_tokens = 0;
        stage_stats & gen_stage = m->stages["generation"];
        stage_stats & sample_stage = m->stages["sampling"];
        while (true) {
            if (m->pending >= 0) {
                // decode the token sampled last time, unless the context is full
                if (m->n_past >= n_ctx) {
                    finish(m, "contextFull");
                    break;
                }
                llama_token tok = m->pending;
                int32_t rc = decode_tokens(m, &tok, 1, gen_stage, true);
                if (rc == LOUPE_ERR_ABORTED) {
                    finish(m, "aborted");
                    break;
                }
                if (rc != LOUPE_OK) {
                    m->active = false;
                    return rc;
                }
                m->pending = -1;
            }
            if (m->abort.load()) {
                finish(m, "aborted");
                break;
            }
            if (m->n_generated >= m->max_tokens) {
                finish(m, "maxTokens");
                break;
            }
            int64_t t0 = now_us();
            llama_token tok = llama_sampler_sample(m->sampler, m->ctx, -1);
            sample_stage.wall_us += now_us() - t0;
            sample_stage.tokens += 1;
            if (!m->ignore_eos && llama_vocab_is_eog(m->vocab, tok)) {
                finish(m, "eos");
                break;
            }
            m->n_generated++;
            m->new_tokens.push_back(tok);
            if (append_piece(m, tok)) {
                finish(m, "stop");
                break;
            }
            m->pending = tok;
            if (m->n_generated >= m->max_tokens) {
                finish(m, "maxTokens");
                break;
            }
            if (now_us() > deadline || (max_step_tokens > 0 && ++step_tokens >= max_step_tokens)) {
                return 0;
            }
        }
        return 1;
    });
}

void loupe_gen_abort(loupe_model * m) {
    if (m) {
        m->abort.store(true);
    }
}

const char * loupe_gen_output(loupe_model * m) {
    if (!m) {
        fail(LOUPE_ERR_INVALID, "model is NULL");
        return nullptr;
    }
    try {
        // hold back a possible start of a stop string and an unfinished UTF-8 sequence
        size_t end = m->text.size();
        if (!m->done) {
            std::string rest = m->text.substr(m->emitted);
            size_t hold = std::max(partial_stop_len(rest, m->stops), incomplete_utf8_len(rest));
            end -= std::min(hold, rest.size());
        }
        std::string piece = m->text.substr(m->emitted, end - m->emitted);
        m->emitted = end;
        json stages = json::object();
        for (const auto & [name, s] : m->stages) {
            stages[name] = stage_json(s, m->devices);
        }
        json out = { { "text", piece },
                     { "tokens", m->new_tokens },
                     { "done", m->done },
                     { "stopReason", m->done ? json(m->stop_reason) : json(nullptr) },
                     { "nPast", m->n_past },
                     { "nGenerated", m->n_generated },
                     { "stages", stages } };
        m->new_tokens.clear();
        m->output = out.dump(-1, ' ', false, json::error_handler_t::replace);
        return m->output.c_str();
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_INTERNAL, e.what());
        return nullptr;
    }
}

}  // extern "C"
