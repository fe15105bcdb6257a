/* The persistent file cache through the C ABI: every operation, large values, bad input,
 * two processes on one directory, and SIGKILL during writes. */
#include "check.h"
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BIG (100 * 1024)

static int small_scale(void) { return getenv("DUCKCACHE_TEST_SCALE") != NULL; }

static void make_tmpdir(char *out, size_t cap) {
    snprintf(out, cap, "/tmp/duckcache-ctest-XXXXXX");
    CHECK(mkdtemp(out) != NULL);
}

static void remove_tree(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK_EQ(system(cmd), 0);
}

static void fill(uint8_t *buf, size_t len, unsigned seed) {
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)(seed * 131u + i * 7u);
}

static void test_operations(const char *dir) {
    cache_t *c = NULL;
    CHECK_EQ(cache_open_file(dir, 0, &c), CACHE_OK);
    CHECK_MISS(c, "a");
    CHECK_EQ(cache_set(c, K("a"), K("alpha"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "a", "alpha");
    CHECK_EQ(cache_has(c, K("a")), CACHE_OK);
    static uint8_t big[BIG];
    fill(big, sizeof big, 3);
    CHECK_EQ(cache_set(c, K("big"), big, sizeof big, CACHE_NO_TTL), CACHE_OK);
    cache_buf b = {0};
    CHECK_EQ(cache_get(c, K("big"), &b), CACHE_OK);
    CHECK(b.len == sizeof big && memcmp(b.data, big, sizeof big) == 0);
    cache_buf_free(&b);
    size_t len = 0;
    uint8_t small[16];
    CHECK_EQ(cache_get_into(c, K("big"), small, sizeof small, &len), CACHE_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(len, BIG);
    CHECK_EQ(cache_set(c, K("ttl"), K("v"), 0.05), CACHE_OK);
    uint64_t n = 0;
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, 3);
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    CHECK_MISS(c, "ttl");
    CHECK_EQ(cache_pop(c, K("big"), &b), CACHE_OK);
    CHECK(b.len == sizeof big && memcmp(b.data, big, sizeof big) == 0);
    cache_buf_free(&b);
    CHECK_EQ(cache_pop(c, K("big"), &b), CACHE_NOT_FOUND);
    CHECK_EQ(cache_delete(c, K("a")), CACHE_OK);
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, 0);
    CHECK_EQ(cache_set(c, K("keep"), K("kept"), CACHE_NO_TTL), CACHE_OK);
    cache_stats s;
    CHECK_EQ(cache_get_stats(c, &s), CACHE_OK);
    CHECK_EQ(s.entries, 1);
    CHECK_EQ(s.bytes, 8);
    CHECK_EQ(s.expirations, 1);
    CHECK_EQ(cache_save(c), CACHE_OK);
    CHECK_EQ(cache_close(c), CACHE_OK);
    cache_free(c);
    /* reopen: still there */
    CHECK_EQ(cache_open_file(dir, 0, &c), CACHE_OK);
    CHECK_GET(c, "keep", "kept");
    CHECK_EQ(cache_clear(c), CACHE_OK);
    CHECK_MISS(c, "keep");
    cache_free(c);
}

static void test_size_limit(const char *dir) {
    cache_t *c = NULL;
    CHECK_EQ(cache_open_file(dir, 300, &c), CACHE_OK);
    uint8_t v[99];
    memset(v, 1, sizeof v);
    CHECK_EQ(cache_set(c, K("a"), v, 99, CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, K("b"), v, 99, CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, K("c"), v, 99, CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, K("d"), v, 99, CACHE_NO_TTL), CACHE_OK); /* evicts a */
    CHECK_EQ(cache_has(c, K("a")), CACHE_NOT_FOUND);
    CHECK_EQ(cache_has(c, K("d")), CACHE_OK);
    uint8_t huge[400] = {0};
    CHECK_EQ(cache_set(c, K("b"), huge, sizeof huge, CACHE_NO_TTL), CACHE_ERR_TOO_LARGE);
    cache_buf b = {0};
    CHECK_EQ(cache_get(c, K("b"), &b), CACHE_OK); /* unchanged */
    CHECK_EQ(b.len, 99);
    cache_buf_free(&b);
    cache_stats s;
    CHECK_EQ(cache_get_stats(c, &s), CACHE_OK);
    CHECK_EQ(s.evictions, 1);
    CHECK(s.bytes <= 300);
    cache_free(c);
}

static void test_bad_input(const char *dir) {
    cache_t *c = (cache_t *)0x1;
    CHECK_EQ(cache_open_file(NULL, 0, &c), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_open_file("", 0, &c), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_open_file(dir, 0, NULL), CACHE_ERR_INVALID_ARG);
    /* a path that is a file */
    char file[512];
    snprintf(file, sizeof file, "%s/plain-file", dir);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    fputs("x", f);
    fclose(f);
    CHECK_EQ(cache_open_file(file, 0, &c), CACHE_ERR_IO);
    CHECK(c == (cache_t *)0x1); /* untouched */
    char err[512];
    CHECK(cache_last_error(err, sizeof err) > 0 && strstr(err, "plain-file") != NULL);
    /* a damaged store */
    char store[512], db[600];
    snprintf(store, sizeof store, "%s/damaged", dir);
    CHECK_EQ(cache_open_file(store, 0, &c), CACHE_OK);
    CHECK_EQ(cache_set(c, K("k"), K("v"), CACHE_NO_TTL), CACHE_OK);
    cache_free(c);
    snprintf(db, sizeof db, "%s/cache.db", store);
    f = fopen(db, "w");
    CHECK(f != NULL);
    for (int i = 0; i < 4096; i++) fputc(0x5a ^ i, f);
    fclose(f);
    c = (cache_t *)0x1;
    CHECK_EQ(cache_open_file(store, 0, &c), CACHE_ERR_CORRUPT);
    CHECK(c == (cache_t *)0x1);
    CHECK(cache_last_error(err, sizeof err) > 0 && strstr(err, "cache.db") != NULL);
    /* calls after close */
    char ok[512];
    snprintf(ok, sizeof ok, "%s/closed", dir);
    CHECK_EQ(cache_open_file(ok, 0, &c), CACHE_OK);
    CHECK_EQ(cache_close(c), CACHE_OK);
    CHECK_EQ(cache_close(c), CACHE_OK);
    cache_buf b = {0};
    uint64_t n;
    CHECK_EQ(cache_set(c, K("k"), K("v"), CACHE_NO_TTL), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_get(c, K("k"), &b), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_pop(c, K("k"), &b), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_has(c, K("k")), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_delete(c, K("k")), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_clear(c), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_len(c, &n), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_save(c), CACHE_ERR_CLOSED);
    cache_free(c);
}

/* Two processes set, read and pop the same keys: each pop key is won exactly once, and
 * a key set by one is read by the other. */
static void test_two_processes(const char *dir) {
    const int keys = small_scale() ? 60 : 400;
    cache_t *c = NULL;
    CHECK_EQ(cache_open_file(dir, 0, &c), CACHE_OK);
    char key[32];
    for (int i = 0; i < keys; i++) {
        snprintf(key, sizeof key, "pop-%d", i);
        CHECK_EQ(cache_set(c, K(key), K(key), CACHE_NO_TTL), CACHE_OK);
    }
    cache_free(c);
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    pid_t pids[2];
    for (int p = 0; p < 2; p++) {
        pids[p] = fork();
        CHECK(pids[p] >= 0);
        if (pids[p] == 0) {
            cache_t *h = NULL;
            if (cache_open_file(dir, 0, &h) != CACHE_OK) _exit(2);
            int won = 0;
            for (int i = 0; i < keys; i++) {
                /* interleave: child 1 walks backwards */
                int k = p == 0 ? i : keys - 1 - i;
                snprintf(key, sizeof key, "pop-%d", k);
                cache_buf b = {0};
                int s = cache_pop(h, K(key), &b);
                if (s == CACHE_OK) {
                    if (!buf_equals(&b, key)) _exit(3);
                    won++;
                } else if (s != CACHE_NOT_FOUND) {
                    _exit(4);
                }
                cache_buf_free(&b);
                char mine[32];
                snprintf(mine, sizeof mine, "from-%d-%d", p, i);
                if (cache_set(h, K(mine), K(mine), CACHE_NO_TTL) != CACHE_OK) _exit(5);
            }
            cache_free(h);
            if (write(fds[1], &won, sizeof won) != sizeof won) _exit(6);
            _exit(0);
        }
    }
    close(fds[1]);
    int total = 0;
    for (int p = 0; p < 2; p++) {
        int status = 0;
        CHECK_EQ(waitpid(pids[p], &status, 0), pids[p]);
        CHECK(WIFEXITED(status));
        CHECK_EQ(WEXITSTATUS(status), 0);
    }
    int won;
    while (read(fds[0], &won, sizeof won) == sizeof won) total += won;
    close(fds[0]);
    CHECK_EQ(total, keys);
    /* each process's writes are visible here */
    CHECK_EQ(cache_open_file(dir, 0, &c), CACHE_OK);
    uint64_t n = 0;
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, (uint64_t)(2 * keys));
    CHECK_GET(c, "from-0-0", "from-0-0");
    snprintf(key, sizeof key, "from-1-%d", keys - 1);
    CHECK_GET(c, key, key);
    cache_free(c);
}

/* A writer killed with SIGKILL at a random moment: the store reopens cleanly and holds
 * every set that had returned CACHE_OK, small and large values alike. */
static void test_sigkill(const char *base) {
    const int rounds = small_scale() ? 2 : 6;
    static uint8_t value[40000];
    for (int round = 0; round < rounds; round++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/kill-%d", base, round);
        int fds[2];
        CHECK_EQ(pipe(fds), 0);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            cache_t *h = NULL;
            if (cache_open_file(dir, 0, &h) != CACHE_OK) _exit(2);
            for (int i = 0;; i++) {
                char key[32];
                snprintf(key, sizeof key, "k%d", i);
                size_t len = (i % 3 == 0) ? sizeof value : 100 + (size_t)i % 50;
                fill(value, len, (unsigned)i);
                if (cache_set(h, K(key), value, len, CACHE_NO_TTL) != CACHE_OK) _exit(3);
                if (write(fds[1], &i, sizeof i) != sizeof i) _exit(4); /* acknowledged */
            }
        }
        close(fds[1]);
        struct timespec ts = {0, (long)(20 + (round * 37) % 80) * 1000000L * (small_scale() ? 10 : 1)};
        nanosleep(&ts, NULL);
        CHECK_EQ(kill(pid, SIGKILL), 0);
        int status = 0;
        CHECK_EQ(waitpid(pid, &status, 0), pid);
        CHECK(WIFSIGNALED(status));
        int acked = -1, i;
        while (read(fds[0], &i, sizeof i) == sizeof i) acked = i;
        close(fds[0]);
        cache_t *c = NULL;
        CHECK_EQ(cache_open_file(dir, 0, &c), CACHE_OK);
        for (int k = 0; k <= acked; k++) {
            char key[32];
            snprintf(key, sizeof key, "k%d", k);
            size_t len = (k % 3 == 0) ? sizeof value : 100 + (size_t)k % 50;
            fill(value, len, (unsigned)k);
            cache_buf b = {0};
            CHECK_EQ(cache_get(c, K(key), &b), CACHE_OK);
            CHECK(b.len == len && memcmp(b.data, value, len) == 0);
            cache_buf_free(&b);
        }
        /* and the store is usable */
        CHECK_EQ(cache_set(c, K("after"), K("crash"), CACHE_NO_TTL), CACHE_OK);
        CHECK_GET(c, "after", "crash");
        cache_free(c);
        if (getenv("DUCKCACHE_TEST_VERBOSE")) fprintf(stderr, "test_sigkill: round %d: %d acknowledged sets all present\n", round, acked + 1);
        CHECK(acked >= 0); /* the writer got going before the kill */
    }
}

int main(void) {
    char dir[256];
    make_tmpdir(dir, sizeof dir);
    char sub[512];
    snprintf(sub, sizeof sub, "%s/ops/nested", dir);
    test_operations(sub);
    snprintf(sub, sizeof sub, "%s/limit", dir);
    test_size_limit(sub);
    test_bad_input(dir);
    snprintf(sub, sizeof sub, "%s/procs", dir);
    test_two_processes(sub);
    test_sigkill(dir);
    remove_tree(dir);
    printf("test_file: ok\n");
    return 0;
}
