// idle_driver.c — checks that libloupe's CPU worker threads sleep once a call has returned
// (cpu_threadpool::idle) instead of spinning for the next graph, which would take a core from
// the host's own work between calls. tests/idle_test.ts builds and runs it.
//
// After each call it samples every thread's state (/proc/self/task/*/stat) a few times over
// 2 ms and counts threads other than the caller that are running. A control first spins a
// thread of its own for the sampling window, so a detector that cannot see a spinning thread
// fails the run instead of passing it.
//
// Usage: idle_driver <engine_dir> <model.gguf> <embedding model.gguf>
// Prints one line per check and "idle_driver: ok" when every one held.
#define _GNU_SOURCE
#include "../loupe.h"
#include "../loupe_embed.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int failures = 0;

static void sleep_us(long us) {
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
    nanosleep(&ts, NULL);
}

// Threads of this process other than the caller whose state is R (running or runnable).
static int running_others(void) {
    pid_t self = (pid_t) syscall(SYS_gettid);
    DIR * d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    struct dirent * e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == self) continue;
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
        FILE * f = fopen(path, "r");
        if (!f) continue;
        size_t len = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[len] = 0;
        const char * close = strrchr(buf, ')');  // the state follows the (name)
        if (close && close[1] == ' ' && close[2] == 'R') n++;
    }
    closedir(d);
    return n;
}

// Samples 5 times over ~2 ms; returns how many samples saw another thread running.
static int busy_samples(void) {
    int busy = 0;
    for (int i = 0; i < 5; i++) {
        sleep_us(400);
        if (running_others() > 0) busy++;
    }
    return busy;
}

static void expect(const char * what, int busy, int want_busy) {
    int ok = want_busy ? busy >= 4 : busy <= 1;
    printf("%s: another thread running in %d of 5 samples (%s)\n", what, busy, ok ? "as expected" : "WRONG");
    if (!ok) failures++;
}

static atomic_int stop_spin;

static void * spin(void * arg) {
    (void) arg;
    while (!atomic_load(&stop_spin)) {
    }
    return NULL;
}

int main(int argc, char ** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: idle_driver <engine_dir> <model.gguf> <embedding model.gguf>\n");
        return 2;
    }
    char * report = loupe_init(argv[1]);
    if (!report) {
        fprintf(stderr, "idle_driver: loupe_init: %s\n", loupe_last_error());
        return 1;
    }
    loupe_string_free(report);

    // the control: a thread that spins must be seen
    pthread_t t;
    pthread_create(&t, NULL, spin, NULL);
    sleep_us(1000);
    expect("control (a spinning thread of the driver's own)", busy_samples(), 1);
    atomic_store(&stop_spin, 1);
    pthread_join(t, NULL);

    char params[4096];
    snprintf(params, sizeof(params), "{\"path\": \"%s\", \"gpuLayers\": 0, \"contextSize\": 256, \"threads\": 2}", argv[2]);
    loupe_model * m = loupe_model_create(params);
    if (!m || loupe_model_load(m) != LOUPE_OK) {
        fprintf(stderr, "idle_driver: cannot load %s: %s\n", argv[2], loupe_last_error());
        return 1;
    }
    int32_t toks[64];
    int32_t n = loupe_model_tokenize(m, "Once upon a time", 16, 1, 0, toks, 64);
    loupe_ctx * ctx = loupe_model_context(m);
    for (int round = 0; round < 3; round++) {
        if (loupe_ctx_gen_begin(ctx, "{\"maxTokens\": 8, \"temperature\": 0, \"topK\": 40, \"topP\": 0.95, \"minP\": 0.05, \"repeatPenalty\": 1, \"repeatLastN\": 64, \"seed\": 1, \"grammar\": \"\", \"grammarLazy\": false, \"grammarTriggers\": [], \"preservedTokens\": [], \"grammarPrefill\": \"\", \"ignoreEos\": false}", toks, n) != LOUPE_OK ||
            loupe_ctx_gen_step(ctx, 10000, 0) != 1) {
            fprintf(stderr, "idle_driver: generation failed: %s\n", loupe_ctx_error(ctx));
            return 1;
        }
        expect("after loupe_ctx_gen_step", busy_samples(), 0);
    }
    loupe_model_free(m);

    snprintf(params, sizeof(params), "{\"path\": \"%s\", \"gpuLayers\": 0, \"threads\": 2, \"defaultContext\": false}",
             argv[3]);
    loupe_model * em = loupe_model_create(params);
    if (!em || loupe_model_load(em) != LOUPE_OK) {
        fprintf(stderr, "idle_driver: cannot load %s: %s\n", argv[3], loupe_last_error());
        return 1;
    }
    char err[512];
    loupe_embedder * e = loupe_embedder_create(em, "{\"threads\": 2, \"contextSize\": 128}", err, sizeof(err));
    if (!e) {
        fprintf(stderr, "idle_driver: loupe_embedder_create: %s\n", err);
        return 1;
    }
    int32_t etoks[64];
    int32_t en = loupe_model_tokenize(em, "a short text to embed", 21, 1, 0, etoks, 64);
    float out[4096];
    for (int round = 0; round < 3; round++) {
        int32_t lengths[1] = { en };
        if (loupe_embedder_begin(e, etoks, lengths, 1, 0) < 0 || loupe_embedder_run(e, out, 4096) < 0) {
            fprintf(stderr, "idle_driver: embedding failed: %s\n", loupe_embedder_error(e));
            return 1;
        }
        expect("after loupe_embedder_run", busy_samples(), 0);
    }
    loupe_embedder_free(e);
    loupe_model_free(em);
    if (failures == 0) printf("idle_driver: ok\n");
    return failures == 0 ? 0 : 1;
}
