// loupe_chat.h — chat templates, tool calls, reasoning and structured output through the engine's
// own chat layer (llama.cpp's common/chat: its Jinja engine, its output parsers, and
// json_schema_to_grammar). Follows the conventions of loupe.h: JSON in and out, `char *` results
// owned by the caller (loupe_string_free), NULL on error with the message in loupe_last_error
// (every call here runs on the calling thread), no C++ exception crossing the boundary.
#pragma once

#include "loupe.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loupe_chat loupe_chat;

// Creates the chat templates of a loaded model (vocabOnly is enough). params_json:
//   {template: string | null}
// `template` (Jinja source) replaces the model's own; without either, the engine's chatml
// fallback is used (reported as `fallback` by loupe_chat_info). A template that does not parse is
// an error (NULL, message in loupe_last_error). The handle does not keep the model: it may
// outlive it.
LOUPE_API loupe_chat * loupe_chat_create(loupe_model * model, const char * params_json);

LOUPE_API void loupe_chat_free(loupe_chat * chat);

// JSON: {source, fallback, bosToken, eosToken, addBos, addEos, supportsThinking,
//        caps: {<name>: bool}}. Owned by the handle.
LOUPE_API const char * loupe_chat_info(loupe_chat * chat);

// Renders a conversation. inputs_json:
//   {messages: [OpenAI chat messages: {role, content, tool_calls?, tool_call_id?,
//               reasoning_content?}], tools: [OpenAI tools] | [], toolChoice: "auto"|"required"|"none",
//    jsonSchema: object | null, grammar: string, addGenerationPrompt: bool, reasoning: bool
//    (parse the thinking text apart), enableThinking: bool, kwargs: {name: value},
//    parallelToolCalls: bool, now: milliseconds since the epoch}
// Every key is required (the TypeScript side fills in the defaults).
// Returns {prompt, format, grammar, grammarLazy, grammarTriggers: [{type: "token"|"word"|"pattern"|
//   "patternFull", value}], preservedTokens, additionalStops, generationPrompt, thinkingStartTag,
//   thinkingEndTags, supportsThinking, parser}, or NULL on error.
LOUPE_API char * loupe_chat_apply(loupe_chat * chat, const char * inputs_json);

// Parses a reply with what loupe_chat_apply returned. params_json:
//   {format, parser, generationPrompt, reasoning: bool, partial: bool}
// Returns {content, reasoning, toolCalls: [{id, name, arguments (JSON text)}]}, or NULL on error
// (a reply that does not parse while not partial).
LOUPE_API char * loupe_chat_parse(loupe_chat * chat, const char * text, const char * params_json);

// Converts a JSON Schema to a GBNF grammar (the engine's json_schema_to_grammar).
// Returns the grammar, or NULL when the converter rejects the schema (message in loupe_last_error).
LOUPE_API char * loupe_json_schema_to_grammar(const char * schema_json);

#ifdef __cplusplus
}
#endif
