// session.cpp — sessions: prefix reuse between calls, context shift on turn boundaries, the
// evaluated tokens and logits, and state files. See loupe_session.h.

#include "loupe_internal.h"
#include "loupe_session.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>

namespace loupe {

namespace {

constexpr char kMagic[8] = { 'L', 'O', 'U', 'P', 'E', 'S', 'E', 'S' };
constexpr uint32_t kVersion = 1;
// A header larger than this is not one we wrote.
constexpr uint32_t kMaxHeader = 256u << 20;
// Bytes per cell a saved state may hold besides the KV data: position, sequence count and id,
// M-RoPE position (and room to spare).
constexpr uint64_t kStateBytesPerCell = 64;

// The spans a shift never cuts: the given atomic spans and the media in the cache.
std::vector<std::pair<int32_t, int32_t>> uncuttable(const loupe_ctx * c,
                                                    const std::vector<std::pair<int32_t, int32_t>> & atomic) {
    std::vector<std::pair<int32_t, int32_t>> out = atomic;
    for (const auto & m : c->media) {
        out.push_back({ m.start, m.end });
    }
    return out;
}

// The first kept index after the head: the shift drops [keep, p).
struct cut_plan {
    int32_t p = 0;
    const char * kind = "tokens";
};

// Chooses the cut (see loupe_session.h): at least `d_min` tokens dropped after `keep`, at a turn
// start when one lies in [keep + d_min, len - 1], never inside an atomic span, and at least
// `d_req` tokens in any case. Returns false with `why` when nothing fits the rules.
bool plan_cut(const loupe_ctx * c, int32_t keep, int32_t len, int32_t d_min, int32_t d_req, cut_plan & out,
              std::string & why) {
    int32_t target = std::min(keep + std::max(d_min, d_req), len - 1);
    if (target <= keep || target - keep < d_req) {
        why = "the first " + std::to_string(keep) + " tokens are kept (nKeep) and " + std::to_string(len - keep) +
              " follow them: nothing can be dropped";
        return false;
    }
    out.p = target;
    out.kind = "tokens";
    for (int32_t t : c->turn_starts) {  // sorted
        if (t >= target && t <= len - 1) {
            out.p = t;
            out.kind = "turn";
            break;
        }
    }
    for (bool moved = true; moved;) {
        moved = false;
        for (const auto & [s, e] : uncuttable(c, c->atomic)) {
            if (s < out.p && out.p < e) {
                if (e <= len - 1) {
                    out.p = e;  // drop the whole span
                } else if (s > keep && s - keep >= d_req) {
                    out.p = s;  // the span reaches the end: keep it whole, drop what is before it
                } else {
                    why = "an atomic span (an image) of " + std::to_string(e - s) + " tokens at " + std::to_string(s) +
                          " cannot be cut, and dropping around it does not make room";
                    return false;
                }
                out.kind = "atomic";
                moved = true;
            }
        }
    }
    return true;
}

void shift_positions(std::vector<int32_t> & v, int32_t keep, int32_t p) {
    std::vector<int32_t> out;
    for (int32_t t : v) {
        if (t < keep) {
            out.push_back(t);
        } else if (t >= p) {
            out.push_back(t - (p - keep));
        }
    }
    v.swap(out);
}

// Reads a whole file.
// Reads a whole file of at most `max_size` bytes (a larger one is refused before any of it is read).
bool read_file(const std::string & path, size_t max_size, std::vector<uint8_t> & out, std::string & err) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        err = "cannot open \"" + path + "\": " + std::strerror(errno);
        return false;
    }
    f.seekg(0, std::ios::end);
    std::streamoff size = f.tellg();
    if (size < 0) {
        err = "cannot read \"" + path + "\"";
        return false;
    }
    if ((uint64_t) size > max_size) {
        err = "the session file has " + std::to_string(size) + " bytes, more than a saved state of this context can have (" +
              std::to_string(max_size) + ")";
        return false;
    }
    f.seekg(0, std::ios::beg);
    out.resize((size_t) size);
    if (size > 0 && !f.read(reinterpret_cast<char *>(out.data()), size)) {
        err = "cannot read \"" + path + "\"";
        return false;
    }
    return true;
}

uint32_t read_u32(const uint8_t * p) {
    return (uint32_t) p[0] | ((uint32_t) p[1] << 8) | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 24);
}

void put_u32(std::string & s, uint32_t v) {
    for (int i = 0; i < 4; i++) {
        s.push_back((char) ((v >> (8 * i)) & 0xFF));
    }
}

// What a state file must agree on with the model it is loaded into.
json model_identity(const loupe_model * m) {
    char desc[256];
    llama_model_desc(m->model, desc, sizeof(desc));
    char arch[128];
    int32_t n = llama_model_meta_val_str(m->model, "general.architecture", arch, sizeof(arch));
    return { { "arch", n < 0 ? std::string() : std::string(arch) },
             { "desc", desc },
             { "nVocab", llama_vocab_n_tokens(m->vocab) },
             { "nEmbd", llama_model_n_embd(m->model) },
             { "nLayer", llama_model_n_layer(m->model) },
             { "nParams", llama_model_n_params(m->model) } };
}

int32_t check_tokens(loupe_ctx * c, const int32_t * tokens, int32_t n) {
    int32_t n_vocab = llama_vocab_n_tokens(c->owner->vocab);
    for (int32_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab) {
            return c->set_error(LOUPE_ERR_INVALID, "prompt token " + std::to_string(tokens[i]) + " at index " +
                                                       std::to_string(i) + " is out of range (vocabulary of " +
                                                       std::to_string(n_vocab) + ")");
        }
    }
    return LOUPE_OK;
}

}  // namespace

int32_t shift_context(loupe_ctx * c, int32_t pending, int32_t limit) {
    const int32_t h = n_cells(c);
    const int32_t len = h + pending;
    const int32_t keep = std::min(c->n_keep, len - 1);
    // generation drops half of what follows the head, as llama.cpp's tools/completion; a prompt
    // that does not fit drops half of the whole sequence (and at least what does not fit)
    const int32_t d_min = pending == 1 ? (h - keep) / 2 : (len - keep) / 2;
    const int32_t d_req = len - limit;
    cut_plan plan;
    std::string why;
    auto fail_shift = [&](const std::string & reason) {
        c->events.push_back({ { "kind", "contextShiftFailed" }, { "reason", reason }, { "nPast", h },
                              { "atUs", now_us() - c->begin_us } });
        return c->set_error(LOUPE_ERR_CONTEXT, "cannot shift the context: " + reason);
    };
    if (!positions_are_cells(c)) {
        // M-RoPE: an image's tokens share positions, and the engine cannot move them
        // (llama_memory_can_shift is false for such models)
        return fail_shift("this model places an image's tokens at fewer positions than cells (M-RoPE), and its "
                          "positions cannot be moved");
    }
    if (!plan_cut(c, keep, len, d_min, d_req, plan, why)) {
        return fail_shift(why);
    }
    const int32_t p = plan.p;
    const int32_t r1 = std::min(p, h);  // evaluated tokens dropped: [keep, r1)
    llama_memory_t mem = llama_get_memory(c->ctx);
    if (r1 > keep) {
        if (r1 < h && !llama_memory_can_shift(mem)) {
            return fail_shift("this model's memory cannot move positions (llama_memory_can_shift is false)");
        }
        if (!llama_memory_seq_rm(mem, 0, keep, r1)) {
            return fail_shift("the engine cannot remove part of this model's memory");
        }
        if (r1 < h) {
            llama_memory_seq_add(mem, 0, r1, h, -(r1 - keep));
            c->shift_unsettled = true;
        }
        c->history.erase(c->history.begin() + keep, c->history.begin() + r1);
        c->n_past -= r1 - keep;
    }
    if (p > h) {
        // prompt tokens not evaluated yet in [max(keep, h), p): taken out of the prompt
        const int32_t lo = std::max(keep, h);
        auto first = c->prompt.begin() + (ptrdiff_t) c->prompt_done + (lo - h);
        c->prompt.erase(first, first + (p - lo));
    }
    shift_positions(c->turn_starts, keep, p);
    std::vector<std::pair<int32_t, int32_t>> spans;
    for (const auto & [s, e] : c->atomic) {
        if (s < keep) {
            spans.push_back({ s, e });
        } else if (s >= p) {
            spans.push_back({ s - (p - keep), e - (p - keep) });
        }
    }
    c->atomic.swap(spans);
    std::vector<media_span> media;
    for (media_span m : c->media) {
        if (m.start < keep) {
            media.push_back(m);
        } else if (m.start >= p) {
            m.start -= p - keep;
            m.end -= p - keep;
            media.push_back(m);
        }
    }
    c->media.swap(media);
    c->events.push_back({ { "kind", "contextShift" },
                          { "position", keep },
                          { "dropped", p - keep },
                          { "nPastBefore", len },
                          { "nPastAfter", len - (p - keep) },
                          { "cut", plan.kind },
                          { "atUs", now_us() - c->begin_us } });
    return LOUPE_OK;
}

}  // namespace loupe

using namespace loupe;

extern "C" {

int32_t loupe_ctx_session_begin(loupe_ctx * c, const char * params_json, const int32_t * tokens, int32_t n_tokens) {
    if (!c || !c->ctx) {
        return fail(LOUPE_ERR_STATE, "context is NULL");
    }
    if (n_tokens <= 0 || !tokens) {
        return c->set_error(LOUPE_ERR_INVALID, "the prompt is empty");
    }
    if (c->owner && c->owner->default_ctx == c) {
        return c->set_error(LOUPE_ERR_STATE, "the model's own context is not a session context");
    }
    return guarded(c, [&]() -> int32_t {
        json p = json::parse(params_json ? params_json : "{}");
        const int32_t n_ctx = (int32_t) llama_n_ctx(c->ctx);
        // media cells (-1) can only be kept from the cache, never evaluated from ids
        int32_t n_media_prefix = 0;
        for (const auto & m : c->media) {
            bool same = m.end <= n_tokens;
            for (int32_t i = m.start; same && i < m.end; i++) {
                same = tokens[i] == -1;
            }
            for (int32_t i = n_media_prefix; same && i < m.start; i++) {
                same = tokens[i] == c->history[i];
            }
            if (!same) {
                break;
            }
            n_media_prefix = m.end;
        }
        int32_t rc = check_tokens(c, tokens + n_media_prefix, n_tokens - n_media_prefix);
        if (rc != LOUPE_OK) {
            return rc;
        }
        const bool shift = p.value("contextShift", false);
        const int32_t n_keep = p.value("nKeep", 0);
        if (n_keep < 0 || (shift && n_keep > n_ctx - 2)) {
            return c->set_error(LOUPE_ERR_INVALID, "nKeep is " + std::to_string(n_keep) + " but a context of " +
                                                       std::to_string(n_ctx) + " tokens keeps at most " +
                                                       std::to_string(n_ctx - 2) + " when it shifts");
        }
        if (!shift && n_tokens + 1 > n_ctx) {
            return c->set_error(LOUPE_ERR_CONTEXT, "the prompt has " + std::to_string(n_tokens) +
                                                       " tokens but the context holds " + std::to_string(n_ctx) +
                                                       " (including one token to generate) and contextShift is off");
        }
        std::vector<int32_t> turns;
        if (p.contains("turns") && p["turns"].is_array()) {
            for (const auto & t : p["turns"]) {
                int32_t v = t.get<int32_t>();
                if (v < 0 || v > n_tokens) {
                    return c->set_error(LOUPE_ERR_INVALID, "turn start " + std::to_string(v) + " is outside the " +
                                                               std::to_string(n_tokens) + " tokens");
                }
                turns.push_back(v);
            }
        }
        std::vector<std::pair<int32_t, int32_t>> spans;
        if (p.contains("atomic") && p["atomic"].is_array()) {
            for (const auto & a : p["atomic"]) {
                if (!a.is_array() || a.size() != 2) {
                    return c->set_error(LOUPE_ERR_INVALID, "an atomic span is [start, end]");
                }
                int32_t s = a[0].get<int32_t>();
                int32_t e = a[1].get<int32_t>();
                if (s < 0 || e <= s || e > n_tokens) {
                    return c->set_error(LOUPE_ERR_INVALID, "atomic span [" + std::to_string(s) + ", " +
                                                               std::to_string(e) + ") is not inside the " +
                                                               std::to_string(n_tokens) + " tokens");
                }
                spans.push_back({ s, e });
            }
        }
        std::sort(spans.begin(), spans.end());
        for (size_t i = 0; i < spans.size(); i++) {
            if (i > 0 && spans[i].first < spans[i - 1].second) {
                return c->set_error(LOUPE_ERR_INVALID, "atomic spans overlap");
            }
        }
        for (const auto & [s, e] : uncuttable(c, spans)) {
            if (s < n_keep && n_keep < e) {
                return c->set_error(LOUPE_ERR_INVALID, "nKeep (" + std::to_string(n_keep) +
                                                           ") ends inside an atomic span (an image) [" +
                                                           std::to_string(s) + ", " + std::to_string(e) + ")");
            }
        }

        // prefix reuse: keep the longest common prefix, evaluate at least the last token
        int32_t n_common = 0;
        const int32_t n_hist = n_cells(c);
        while (n_common < n_hist && n_common < n_tokens && c->history[n_common] == tokens[n_common]) {
            n_common++;
        }
        n_common = std::max(std::min(n_common, n_tokens - 1), 0);
        n_common = keep_cells(c, n_common);  // a cut inside an image moves to its start
        if (n_common < n_media_prefix) {
            return c->set_error(LOUPE_ERR_INVALID, "the prompt reuses an image the cache no longer holds");
        }

        begin_generation(c, p, tokens + n_common, n_tokens - n_common);
        c->reused = n_common;
        c->shift_enabled = shift;
        c->n_keep = n_keep;
        // turns and spans of the kept prefix stay; the caller's describe the rest
        std::vector<int32_t> all_turns;
        for (int32_t t : c->turn_starts) {
            if (t < n_common) {
                all_turns.push_back(t);
            }
        }
        for (int32_t t : turns) {
            all_turns.push_back(t);
        }
        std::sort(all_turns.begin(), all_turns.end());
        all_turns.erase(std::unique(all_turns.begin(), all_turns.end()), all_turns.end());
        c->turn_starts.swap(all_turns);
        c->atomic.swap(spans);
        return LOUPE_OK;
    });
}

int32_t loupe_ctx_size(const loupe_ctx * c) {
    if (!c || !c->ctx) {
        return fail(LOUPE_ERR_INVALID, "context is NULL");
    }
    return (int32_t) llama_n_ctx(c->ctx);
}

int32_t loupe_ctx_tokens(loupe_ctx * c, int32_t * out, int32_t cap) {
    if (!c || !c->ctx || (!out && cap > 0) || cap < 0) {
        fail(LOUPE_ERR_INVALID, "invalid arguments to loupe_ctx_tokens");
        return INT32_MIN;
    }
    int32_t n = (int32_t) c->history.size();
    if (n > cap) {
        return -n;
    }
    std::copy(c->history.begin(), c->history.end(), out);
    return n;
}

int32_t loupe_ctx_logits(loupe_ctx * c, float * out, int32_t cap) {
    if (!c || !c->ctx || (!out && cap > 0) || cap < 0) {
        fail(LOUPE_ERR_INVALID, "invalid arguments to loupe_ctx_logits");
        return INT32_MIN;
    }
    const int32_t n_vocab = llama_vocab_n_tokens(c->owner->vocab);
    if (c->history.empty()) {
        fail(LOUPE_ERR_STATE, "there are no logits: nothing was evaluated yet");
        return INT32_MIN;
    }
    if (n_vocab > cap) {
        return -n_vocab;
    }
    const float * logits = nullptr;
    {
        log_capture cap_lines;
        logits = llama_get_logits_ith(c->ctx, -1);
    }
    if (!logits) {
        fail(LOUPE_ERR_STATE, "there are no logits: the last evaluation kept none");
        return INT32_MIN;
    }
    std::memcpy(out, logits, sizeof(float) * (size_t) n_vocab);
    return n_vocab;
}

int32_t loupe_ctx_save(loupe_ctx * c, const char * path, const char * meta_json) {
    if (!c || !c->ctx) {
        return fail(LOUPE_ERR_STATE, "context is NULL");
    }
    if (!path) {
        return c->set_error(LOUPE_ERR_INVALID, "path is NULL");
    }
    loupe::idle_on_return idle{ c->threads };  // it may evaluate a token
    return guarded(c, [&]() -> int32_t {
        json meta = json::parse(meta_json ? meta_json : "null");
        if (c->shift_unsettled && !c->history.empty()) {
            // The K-rotation of a shift runs at the next decode, and a state file does not carry
            // it: evaluate the last token again (same position, same result) to apply it.
            llama_token last = c->history.back();  // a text token: a shift needs positions_are_cells
            llama_memory_seq_rm(llama_get_memory(c->ctx), 0, c->n_past - 1, -1);
            c->history.pop_back();
            c->n_past -= 1;
            stage_stats scratch;
            int32_t rc = decode_tokens(c, &last, 1, scratch);
            if (rc != LOUPE_OK) {
                return rc;
            }
        }
        json turns = c->turn_starts;
        json media = json::array();
        for (const auto & m : c->media) {
            media.push_back({ { "start", m.start }, { "end", m.end }, { "nPos", m.n_pos } });
        }
        json spans = json::array();
        for (const auto & [s, e] : c->atomic) {
            spans.push_back({ s, e });
        }
        json native = { { "model", model_identity(c->owner) },
                        { "nCtx", llama_n_ctx(c->ctx) },
                        { "history", c->history },
                        { "pending", c->pending >= 0 ? json(c->pending) : json(nullptr) },
                        { "nKeep", c->n_keep },
                        { "contextShift", c->shift_enabled },
                        { "turns", turns },
                        { "atomic", spans },
                        { "media", media } };
        std::string header = json{ { "native", native }, { "meta", meta } }.dump();
        std::vector<uint8_t> state(llama_state_get_size(c->ctx));
        size_t written = llama_state_get_data(c->ctx, state.data(), state.size());
        if (written == 0 || written > state.size()) {
            return c->set_error(LOUPE_ERR_INTERNAL, "the engine could not write its state");
        }
        std::string head(kMagic, sizeof(kMagic));
        put_u32(head, kVersion);
        put_u32(head, (uint32_t) header.size());
        head += header;
        std::string tmp = std::string(path) + ".tmp";
        {
            std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
            if (!f) {
                return c->set_error(LOUPE_ERR_INVALID,
                                    "cannot write \"" + std::string(path) + "\": " + std::strerror(errno));
            }
            f.write(head.data(), (std::streamsize) head.size());
            f.write(reinterpret_cast<const char *>(state.data()), (std::streamsize) written);
            if (!f.flush()) {
                std::remove(tmp.c_str());
                return c->set_error(LOUPE_ERR_INVALID, "cannot write \"" + std::string(path) + "\"");
            }
        }
        if (std::rename(tmp.c_str(), path) != 0) {
            std::remove(tmp.c_str());
            return c->set_error(LOUPE_ERR_INVALID,
                                "cannot write \"" + std::string(path) + "\": " + std::strerror(errno));
        }
        return LOUPE_OK;
    });
}

char * loupe_ctx_load(loupe_ctx * c, const char * path) {
    if (!c || !c->ctx) {
        fail(LOUPE_ERR_STATE, "context is NULL");
        return nullptr;
    }
    if (!path) {
        c->set_error(LOUPE_ERR_INVALID, "path is NULL");
        return nullptr;
    }
    char * result = nullptr;
    auto body = [&]() -> int32_t {
        // A saved state holds at most the KV cache (the context's memory in the engine's breakdown)
        // and a few words per cell: a file larger than that is refused before it is read.
        uint64_t kv_bytes = 0;
        for (const auto & [buft, mb] : llama_get_memory_breakdown(c->ctx)) {
            kv_bytes += mb.context;
        }
        const uint64_t max_state = kv_bytes + (uint64_t) llama_n_ctx(c->ctx) * kStateBytesPerCell + (1u << 20);
        uint64_t max_header = kMaxHeader;
        {
            // the header's length, when the file opens like a session file, bounds it more tightly
            uint8_t head[16] = { 0 };
            std::ifstream f(path, std::ios::binary);
            if (f.read(reinterpret_cast<char *>(head), sizeof(head)) && std::memcmp(head, kMagic, sizeof(kMagic)) == 0) {
                max_header = std::min<uint64_t>(max_header, read_u32(head + 12));
            }
        }
        std::vector<uint8_t> bytes;
        std::string err;
        if (!read_file(path, 16 + max_header + max_state, bytes, err)) {
            return c->set_error(LOUPE_ERR_INVALID, err);
        }
        if (bytes.size() < 16 || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
            return c->set_error(LOUPE_ERR_INVALID, "not a loupe session file");
        }
        uint32_t version = read_u32(bytes.data() + 8);
        uint32_t header_len = read_u32(bytes.data() + 12);
        if (version != kVersion) {
            return c->set_error(LOUPE_ERR_INVALID, "session file version " + std::to_string(version) +
                                                       " is not supported (this library reads " +
                                                       std::to_string(kVersion) + ")");
        }
        if (header_len > kMaxHeader || 16 + (size_t) header_len > bytes.size()) {
            return c->set_error(LOUPE_ERR_INVALID, "the session file is truncated");
        }
        json header = json::parse(bytes.begin() + 16, bytes.begin() + 16 + header_len, nullptr, false);
        if (header.is_discarded() || !header.is_object() || !header.contains("native") ||
            !header["native"].is_object() || !header["native"].contains("model")) {
            return c->set_error(LOUPE_ERR_INVALID, "the session file's header is damaged");
        }
        const json & native = header.at("native");
        json want = model_identity(c->owner);
        const json & got = native.at("model");
        for (const char * key : { "arch", "nVocab", "nEmbd", "nLayer", "nParams" }) {
            if (got.value(key, json()) != want[key]) {
                return c->set_error(LOUPE_ERR_INVALID, "the state was saved from another model (" +
                                                           got.value("desc", std::string("?")) + ", " + key + " " +
                                                           got.value(key, json()).dump() + "; this model has " +
                                                           want[key].dump() + ")");
            }
        }
        int32_t n_ctx = (int32_t) llama_n_ctx(c->ctx);
        int32_t saved_ctx = native.value("nCtx", 0);
        if (saved_ctx != n_ctx) {
            return c->set_error(LOUPE_ERR_INVALID, "the state was saved from a context of " +
                                                       std::to_string(saved_ctx) + " tokens, this one has " +
                                                       std::to_string(n_ctx));
        }
        std::vector<llama_token> history = native.at("history").get<std::vector<llama_token>>();
        if ((int32_t) history.size() >= n_ctx) {
            return c->set_error(LOUPE_ERR_INVALID, "the session file's token list is invalid");
        }
        // media spans: in order, inside the history, holding -1 and nothing else does
        std::vector<media_span> media;
        int32_t n_pos = (int32_t) history.size();
        std::vector<bool> in_media(history.size(), false);
        for (const auto & m : native.value("media", json::array())) {
            media_span s{ m.at("start").get<int32_t>(), m.at("end").get<int32_t>(), m.at("nPos").get<int32_t>() };
            if (s.start < (media.empty() ? 0 : media.back().end) || s.end <= s.start ||
                s.end > (int32_t) history.size() || s.n_pos < 1 || s.n_pos > s.end - s.start) {
                return c->set_error(LOUPE_ERR_INVALID, "the session file's media list is invalid");
            }
            n_pos -= (s.end - s.start) - s.n_pos;
            for (int32_t i = s.start; i < s.end; i++) {
                in_media[(size_t) i] = true;
            }
            media.push_back(s);
        }
        for (size_t i = 0; i < history.size(); i++) {
            const bool ok = in_media[i] ? history[i] == -1 : check_tokens(c, &history[i], 1) == LOUPE_OK;
            if (!ok) {
                return c->set_error(LOUPE_ERR_INVALID, "the session file's token list is invalid");
            }
        }
        // everything from the header first, so a damaged one leaves the context as it was
        const int32_t pending = native.value("pending", json()).is_number() ? native["pending"].get<int32_t>() : -1;
        const int32_t n_keep = native.value("nKeep", 0);
        const bool shift = native.value("contextShift", false);
        std::vector<int32_t> turns = native.value("turns", std::vector<int32_t>());
        std::vector<std::pair<int32_t, int32_t>> spans;
        for (const auto & a : native.value("atomic", json::array())) {
            spans.push_back({ a.at(0).get<int32_t>(), a.at(1).get<int32_t>() });
        }
        std::string meta = header.value("meta", json()).dump();
        const uint8_t * state = bytes.data() + 16 + header_len;
        size_t state_len = bytes.size() - 16 - header_len;
        // The engine's state opens with the architecture's name (u32 length, then the bytes), which
        // it reads into a buffer of that length before comparing: a damaged length would make it
        // take up to 4 GiB. Checked here first.
        {
            const std::string arch = want["arch"].get<std::string>();
            if (state_len < 4 || read_u32(state) != arch.size() || state_len - 4 < arch.size() ||
                std::memcmp(state + 4, arch.data(), arch.size()) != 0) {
                return c->set_error(LOUPE_ERR_INVALID, "the saved state is damaged (it does not open with the "
                                                       "architecture's name, \"" + arch + "\")");
            }
        }
        llama_memory_clear(llama_get_memory(c->ctx), true);
        size_t read = 0;
        {
            log_capture cap;
            read = llama_state_set_data(c->ctx, state, state_len);
            if (read == 0) {
                clear_cache(c);
                llama_memory_clear(llama_get_memory(c->ctx), true);
                return c->set_error(LOUPE_ERR_INVALID, "the engine rejected the saved state" +
                                                           (cap.lines.empty() ? std::string() : ": " + cap.lines));
            }
        }
        llama_pos pos_max = llama_memory_seq_pos_max(llama_get_memory(c->ctx), 0);
        if (pos_max + 1 != (llama_pos) n_pos) {
            clear_cache(c);
            llama_memory_clear(llama_get_memory(c->ctx), true);
            return c->set_error(LOUPE_ERR_INVALID, "the saved state holds " + std::to_string(pos_max + 1) +
                                                       " positions but its token list has " + std::to_string(n_pos));
        }
        c->history = history;
        c->media = media;
        c->n_past = n_pos;
        c->pending = pending;
        c->n_keep = n_keep;
        c->shift_enabled = shift;
        c->shift_unsettled = false;
        c->turn_starts = turns;
        c->atomic = spans;
        c->active = false;
        c->done = false;
        result = dup_string(meta);
        return result ? LOUPE_OK : c->set_error(LOUPE_ERR_INTERNAL, "out of memory");
    };
    int32_t rc = guarded(c, [&]() -> int32_t {
        try {
            return body();
        } catch (const json::exception & e) {
            return c->set_error(LOUPE_ERR_INVALID, std::string("the session file's header is damaged: ") + e.what());
        }
    });
    if (rc != LOUPE_OK) {
        std::free(result);
        return nullptr;
    }
    return result;
}

}  // extern "C"
