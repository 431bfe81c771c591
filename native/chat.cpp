// chat.cpp — the engine's own chat layer (common/chat: Jinja templates, tool-call and reasoning
// parsers, json_schema_to_grammar) behind the C ABI of loupe_chat.h: JSON in, JSON out, every C++
// exception caught here.

#include "loupe_chat.h"
#include "loupe_internal.h"

#include "chat.h"
#include "json-schema-to-grammar.h"

#include <chrono>
#include <memory>

struct loupe_chat {
    common_chat_templates_ptr tmpls;
    json info;
    std::string info_text;
};

namespace {

// Runs `f`, returning its string (a caller-owned copy), or NULL with the exception's message as
// this thread's last error.
template <typename F>
char * guarded_string(F && f) {
    char * out = nullptr;
    loupe::guarded(nullptr, [&]() -> int32_t {
        out = loupe::dup_string(f());
        return LOUPE_OK;
    });
    return out;
}

std::string token_text(const llama_vocab * vocab, llama_token tok) {
    if (tok == LLAMA_TOKEN_NULL) {
        return "";
    }
    char buf[256];
    int32_t n = llama_token_to_piece(vocab, tok, buf, sizeof(buf), 0, true);
    if (n < 0) {
        std::string s(-n, '\0');
        n = llama_token_to_piece(vocab, tok, s.data(), -n, 0, true);
        s.resize(std::max(n, 0));
        return s;
    }
    return std::string(buf, n);
}

const char * trigger_type_name(common_grammar_trigger_type t) {
    switch (t) {
        case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN:        return "token";
        case COMMON_GRAMMAR_TRIGGER_TYPE_WORD:         return "word";
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN:      return "pattern";
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: return "patternFull";
    }
    return "word";
}

common_chat_format format_from_name(const std::string & name) {
    for (int f = 0; f < COMMON_CHAT_FORMAT_COUNT; f++) {
        if (name == common_chat_format_name((common_chat_format) f)) {
            return (common_chat_format) f;
        }
    }
    throw std::invalid_argument("unknown chat format: " + name);
}

}  // namespace

extern "C" {

loupe_chat * loupe_chat_create(loupe_model * m, const char * params_json) {
    loupe_chat * out = nullptr;
    loupe::guarded(nullptr, [&]() -> int32_t {
        if (!m || !m->model) {
            return loupe::fail(LOUPE_ERR_STATE, "model is not loaded");
        }
        json p = json::parse(params_json ? params_json : "{}");
        std::string override_src = p.contains("template") && p["template"].is_string() ? p["template"].get<std::string>() : "";
        const char * own = llama_model_chat_template(m->model, nullptr);
        bool fallback = override_src.empty() && (!own || std::string(own).empty() || std::string(own) == "chatml") &&
                        !llama_model_chat_template(m->model, "tool_use");
        auto c = std::make_unique<loupe_chat>();
        loupe::log_capture cap;
        try {
            c->tmpls = common_chat_templates_init(m->model, override_src);
        } catch (const std::exception & e) {
            return loupe::fail(LOUPE_ERR_INVALID, std::string("the chat template does not parse: ") + e.what());
        }
        const llama_vocab * vocab = llama_model_get_vocab(m->model);
        json caps = json::object();
        for (const auto & [k, v] : common_chat_templates_get_caps(c->tmpls.get())) {
            caps[k] = v;
        }
        c->info = { { "source", common_chat_templates_source(c->tmpls.get()) },
                    { "fallback", fallback },
                    { "bosToken", token_text(vocab, llama_vocab_bos(vocab)) },
                    { "eosToken", token_text(vocab, llama_vocab_eos(vocab)) },
                    { "addBos", llama_vocab_get_add_bos(vocab) },
                    { "addEos", llama_vocab_get_add_eos(vocab) },
                    { "supportsThinking", common_chat_templates_support_enable_thinking(c->tmpls.get()) },
                    { "caps", caps } };
        c->info_text = c->info.dump(-1, ' ', false, json::error_handler_t::replace);
        out = c.release();
        return LOUPE_OK;
    });
    return out;
}

void loupe_chat_free(loupe_chat * c) {
    delete c;
}

const char * loupe_chat_info(loupe_chat * c) {
    if (!c) {
        loupe::fail(LOUPE_ERR_INVALID, "chat is NULL");
        return nullptr;
    }
    return c->info_text.c_str();
}

char * loupe_chat_apply(loupe_chat * c, const char * inputs_json) {
    return guarded_string([&]() -> std::string {
        if (!c) {
            throw std::invalid_argument("chat is NULL");
        }
        json p = json::parse(inputs_json ? inputs_json : "{}");
        common_chat_templates_inputs in;
        in.messages = common_chat_msgs_parse_oaicompat(common_json::parse(p.at("messages").dump()));
        in.tools = common_chat_tools_parse_oaicompat(common_json::parse(p.at("tools").dump()));
        in.tool_choice = common_chat_tool_choice_parse_oaicompat(p.at("toolChoice").get<std::string>());
        in.json_schema = p.at("jsonSchema").is_null() ? "" : p.at("jsonSchema").dump();
        in.grammar = p.at("grammar").get<std::string>();
        in.add_generation_prompt = p.at("addGenerationPrompt").get<bool>();
        in.use_jinja = true;
        in.parallel_tool_calls = p.at("parallelToolCalls").get<bool>();
        in.reasoning_format = p.at("reasoning").get<bool>() ? COMMON_REASONING_FORMAT_DEEPSEEK : COMMON_REASONING_FORMAT_NONE;
        in.enable_thinking = p.at("enableThinking").get<bool>();
        in.now = std::chrono::system_clock::time_point(std::chrono::milliseconds(p.at("now").get<int64_t>()));
        for (const auto & [k, v] : p.at("kwargs").items()) {
            in.chat_template_kwargs[k] = v.dump();
        }
        common_chat_params r;
        {
            loupe::log_capture cap;
            r = common_chat_templates_apply(c->tmpls.get(), in);
        }
        json triggers = json::array();
        for (const auto & t : r.grammar_triggers) {
            triggers.push_back({ { "type", trigger_type_name(t.type) }, { "value", t.value } });
        }
        json out = { { "prompt", r.prompt },
                     { "format", common_chat_format_name(r.format) },
                     { "grammar", r.grammar },
                     { "grammarLazy", r.grammar_lazy },
                     { "grammarTriggers", triggers },
                     { "preservedTokens", r.preserved_tokens },
                     { "additionalStops", r.additional_stops },
                     { "generationPrompt", r.generation_prompt },
                     { "thinkingStartTag", r.thinking_start_tag },
                     { "thinkingEndTags", r.thinking_end_tags },
                     { "supportsThinking", r.supports_thinking },
                     { "parser", r.parser } };
        return out.dump(-1, ' ', false, json::error_handler_t::replace);
    });
}

char * loupe_chat_parse(loupe_chat * c, const char * text, const char * params_json) {
    return guarded_string([&]() -> std::string {
        if (!c) {
            throw std::invalid_argument("chat is NULL");
        }
        json p = json::parse(params_json ? params_json : "{}");
        common_chat_parser_params pp;
        pp.format = format_from_name(p.at("format").get<std::string>());
        pp.generation_prompt = p.at("generationPrompt").get<std::string>();
        pp.reasoning_format = p.at("reasoning").get<bool>() ? COMMON_REASONING_FORMAT_DEEPSEEK : COMMON_REASONING_FORMAT_NONE;
        pp.parse_tool_calls = true;
        std::string parser = p.at("parser").get<std::string>();
        if (!parser.empty()) {
            pp.parser.load(parser);
        }
        common_chat_msg msg = common_chat_parse(text ? text : "", p.at("partial").get<bool>(), pp);
        json calls = json::array();
        for (const auto & tc : msg.tool_calls) {
            calls.push_back({ { "id", tc.id }, { "name", tc.name }, { "arguments", tc.arguments } });
        }
        json out = { { "content", msg.content }, { "reasoning", msg.reasoning_content }, { "toolCalls", calls } };
        return out.dump(-1, ' ', false, json::error_handler_t::replace);
    });
}

char * loupe_json_schema_to_grammar(const char * schema_json) {
    return guarded_string([&]() -> std::string {
        common_json schema = common_json::parse(schema_json ? schema_json : "");
        return json_schema_to_grammar(schema);
    });
}

}  // extern "C"
