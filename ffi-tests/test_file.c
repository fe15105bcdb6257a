/* The persistent file cache through the C ABI: every operation, large values, bad input,
 * two processes on one directory, and SIGKILL during writes. */
#include "persistent.h"
#include <sys/wait.h>
#include <unistd.h>

#define BIG (100 * 1024)

static cache_status open_file(const char *dir, cache_t **out) { return cache_open_file(dir, 0, out); }

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
    CHECK_EQ(cache_set(c, K("ttl"), K("v"), 1.0), CACHE_OK);
    uint64_t n = 0;
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, 3);
    sleep_ms(1100);
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
    check_open_bad_input(open_file, dir);
    cache_t *c = NULL;
    char store[512];
    snprintf(store, sizeof store, "%s/damaged", dir);
    check_damaged_database(open_file, store, "cache.db");
    /* calls after close */
    char ok[512];
    snprintf(ok, sizeof ok, "%s/closed", dir);
    CHECK_EQ(cache_open_file(ok, 0, &c), CACHE_OK);
    check_refuses_closed(c);
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
    check_across_processes(open_file, dir);
    if (!small_scale()) {
        snprintf(sub, sizeof sub, "%s/fork", dir);
        cache_t *c = NULL;
        CHECK_EQ(cache_open_file(sub, 0, &c), CACHE_OK);
        check_fork_beside_traffic(c, 5000, 3);
    }
    remove_tree(dir);
    printf("test_file: ok\n");
    return 0;
}
