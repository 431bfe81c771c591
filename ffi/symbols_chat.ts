/**
 * The symbol table of native/loupe_chat.h (chat templates, output parsers, JSON Schema to
 * grammar through the engine's chat layer), spread into `symbols` in ffi/symbols.ts. The
 * symbol-table test checks it against the header.
 *
 * @module
 */

/** Chat functions of libloupe. */
export const chatSymbols = {
  // loupe_chat * loupe_chat_create(loupe_model * model, const char * params_json)
  loupe_chat_create: {
    parameters: ["pointer", /* loupe_model * model */ "buffer" /* const char * params_json */],
    result: "pointer",
  },
  // void loupe_chat_free(loupe_chat * chat)
  loupe_chat_free: { parameters: ["pointer" /* loupe_chat * chat */], result: "void" },
  // const char * loupe_chat_info(loupe_chat * chat)
  loupe_chat_info: { parameters: ["pointer" /* loupe_chat * chat */], result: "pointer" },
  // char * loupe_chat_apply(loupe_chat * chat, const char * inputs_json)
  loupe_chat_apply: {
    parameters: ["pointer", /* loupe_chat * chat */ "buffer" /* const char * inputs_json */],
    result: "pointer",
  },
  // char * loupe_chat_parse(loupe_chat * chat, const char * text, const char * params_json)
  loupe_chat_parse: {
    parameters: [
      "pointer", /* loupe_chat * chat */
      "buffer", /* const char * text */
      "buffer", /* const char * params_json */
    ],
    result: "pointer",
  },
  // char * loupe_json_schema_to_grammar(const char * schema_json)
  loupe_json_schema_to_grammar: { parameters: ["buffer" /* const char * schema_json */], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;
