// leak_driver.c — one full cycle of libloupe's C ABI for a leak checker (tests/lifetime_test.ts
// runs it under valgrind): init, a model with its context, tokenize/detokenize, chat template,
// generation, memory estimates, a session context with prefix reuse and context shifts, logits, save and load of
// the session, an error path, and every free. Exits 0 when every call did what it should.
//
// Usage: leak_driver <engine_dir> <model.gguf> <session file path>
#include "../loupe.h"
#include "../loupe_session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond, what)                                                     \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "leak_driver: %s failed: %s\n", what, loupe_last_error()); \
            failures++;                                                       \
        }                                                                     \
    } while (0)

static int run(loupe_ctx * ctx, int budget) {
    for (int i = 0; i < 100000; i++) {
        int rc = loupe_ctx_gen_step(ctx, budget, 0);
        if (rc != 0) return rc;
    }
    return -100;
}

int main(int argc, char ** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: leak_driver <engine_dir> <model.gguf> <session file>\n");
        return 2;
    }
    char * report = loupe_init(argv[1]);
    CHECK(report != NULL, "loupe_init");
    loupe_string_free(report);
    char * devs = loupe_devices();
    CHECK(devs != NULL, "loupe_devices");
    loupe_string_free(devs);

    char params[4096];
    snprintf(params, sizeof(params), "{\"path\": \"%s\", \"gpuLayers\": 0, \"contextSize\": 256, \"threads\": 1}", argv[2]);
    loupe_model * m = loupe_model_create(params);
    CHECK(m != NULL, "loupe_model_create");
    CHECK(loupe_model_load(m) == LOUPE_OK, "loupe_model_load");
    CHECK(loupe_model_info(m) != NULL, "loupe_model_info");

    int32_t toks[512];
    const char * text = "Once upon a time";
    int32_t n = loupe_model_tokenize(m, text, (int32_t) strlen(text), 1, 0, toks, 512);
    CHECK(n > 0, "loupe_model_tokenize");
    char out[1024];
    CHECK(loupe_model_detokenize(m, toks, n, 0, 0, out, sizeof(out)) > 0, "loupe_model_detokenize");
    char * chat = loupe_model_chat_apply(m, "[{\"role\": \"user\", \"content\": \"Hi\"}]", NULL, 1);
    CHECK(chat != NULL, "loupe_model_chat_apply");
    loupe_string_free(chat);

    // the model's context: a generation to its end
    loupe_ctx * def = loupe_model_context(m);
    CHECK(loupe_ctx_gen_begin(def, "{\"maxTokens\": 16, \"temperature\": 0, \"topK\": 40, \"topP\": 0.95, \"minP\": 0.05, \"repeatPenalty\": 1, \"repeatLastN\": 64, \"seed\": 1, \"grammar\": \"\", \"grammarLazy\": false, \"grammarTriggers\": [], \"preservedTokens\": [], \"grammarPrefill\": \"\", \"ignoreEos\": false, \"stop\": [\"zzz\"]}", toks, n) == LOUPE_OK, "gen_begin");
    CHECK(run(def, 1000) == 1, "gen_step");
    CHECK(loupe_ctx_gen_output(def) != NULL, "gen_output");
    // an error path: a token out of range
    int32_t bad = 1 << 30;
    CHECK(loupe_ctx_gen_begin(def, "{}", &bad, 1) == LOUPE_ERR_INVALID, "gen_begin refuses a bad token");

    // memory estimates: the quick bound, a layout (which loads the shadow model, freed with the
    // model) and an extrapolated one
    char err[256];
    const char * estimates[] = { "{\"contextSize\": 256}", "{\"contextSize\": 256, \"exact\": true}",
                                 "{\"contextSize\": 1000000000}" };
    for (int i = 0; i < 3; i++) {
        char * est = loupe_model_memory_estimate(m, estimates[i], err, sizeof(err));
        CHECK(est != NULL, "loupe_model_memory_estimate");
        loupe_string_free(est);
    }
    CHECK(loupe_model_memory_estimate(m, "{\"kind\": \"nope\"}", err, sizeof(err)) == NULL, "an unknown kind is refused");

    // a session: two calls (the second reuses the first), shifts past the context
    loupe_ctx * s = loupe_ctx_create(m, "{\"contextSize\": 256, \"threads\": 1}", err, sizeof(err));
    CHECK(s != NULL, "loupe_ctx_create");
    CHECK(loupe_ctx_session_begin(s, "{\"maxTokens\": 300, \"temperature\": 0, \"topK\": 40, \"topP\": 0.95, \"minP\": 0.05, \"repeatPenalty\": 1, \"repeatLastN\": 64, \"seed\": 1, \"grammar\": \"\", \"grammarLazy\": false, \"grammarTriggers\": [], \"preservedTokens\": [], \"grammarPrefill\": \"\", \"ignoreEos\": true, \"contextShift\": true, \"nKeep\": 1, \"turns\": [0]}", toks, n) == LOUPE_OK, "session_begin");
    CHECK(run(s, 1000) == 1, "session steps");
    const char * o = loupe_ctx_gen_output(s);
    CHECK(o != NULL && strstr(o, "contextShift") != NULL, "a context shift happened");
    int32_t hist[512];
    int32_t nh = loupe_ctx_tokens(s, hist, 512);
    CHECK(nh > 0 && nh < 256, "loupe_ctx_tokens");
    hist[nh] = toks[1];
    CHECK(loupe_ctx_session_begin(s, "{\"maxTokens\": 8, \"temperature\": 0, \"topK\": 40, \"topP\": 0.95, \"minP\": 0.05, \"repeatPenalty\": 1, \"repeatLastN\": 64, \"seed\": 1, \"grammar\": \"\", \"grammarLazy\": false, \"grammarTriggers\": [], \"preservedTokens\": [], \"grammarPrefill\": \"\", \"ignoreEos\": false, \"contextShift\": true, \"nKeep\": 1}", hist, nh + 1) == LOUPE_OK, "session_begin reuse");
    CHECK(run(s, 1000) == 1, "session steps again");
    float * logits = malloc(sizeof(float) * 40000);
    CHECK(loupe_ctx_logits(s, logits, 40000) > 0, "loupe_ctx_logits");
    free(logits);
    CHECK(loupe_ctx_save(s, argv[3], "{\"driver\": true}") == LOUPE_OK, "loupe_ctx_save");

    loupe_ctx * s2 = loupe_ctx_create(m, "{\"contextSize\": 256, \"threads\": 1}", err, sizeof(err));
    CHECK(s2 != NULL, "loupe_ctx_create 2");
    char * meta = loupe_ctx_load(s2, argv[3]);
    CHECK(meta != NULL && strcmp(meta, "{\"driver\":true}") == 0, "loupe_ctx_load");
    loupe_string_free(meta);
    CHECK(loupe_ctx_load(s2, argv[2]) == NULL, "loupe_ctx_load refuses a model file");
    loupe_ctx_free(s2);
    loupe_ctx_free(s);
    loupe_model_free(m);
    char * logs = loupe_logs();
    loupe_string_free(logs);
    if (failures == 0) printf("leak_driver: ok\n");
    return failures == 0 ? 0 : 1;
}
