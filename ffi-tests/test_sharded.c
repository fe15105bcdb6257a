/* The sharded persistent cache through the C ABI: every operation, roll-over to new
 * shards, newest value wins, reopen, the open-shard bound, bad input, two processes on
 * one directory, and SIGKILL during writes. */
#include "persistent.h"

static cache_status open_sharded(const char *dir, cache_t **out) {
    return cache_open_sharded(dir, 100000, 4, out);
}

static int exists(const char *dir, const char *name) {
    char path[600];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void test_operations(const char *dir) {
    cache_t *c = NULL;
    /* 1000 bytes per shard, at most 2 shard stores open */
    CHECK_EQ(cache_open_sharded(dir, 1000, 2, &c), CACHE_OK);
    CHECK_MISS(c, "a");
    CHECK_EQ(cache_set(c, K("a"), K("alpha"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "a", "alpha");
    CHECK_EQ(cache_has(c, K("a")), CACHE_OK);
    CHECK_EQ(cache_set(c, (const uint8_t *)"", 0, (const uint8_t *)"", 0, CACHE_NO_TTL), CACHE_OK);
    cache_buf b = {0};
    CHECK_EQ(cache_get(c, NULL, 0, &b), CACHE_OK);
    CHECK_EQ(b.len, 0);
    /* roll-over: 300-byte entries, three per shard (shard 1 also holds "a" and "") */
    uint8_t v[296];
    char key[16];
    for (int i = 0; i < 12; i++) {
        fill(v, sizeof v, (unsigned)i);
        snprintf(key, sizeof key, "k%03d", i);
        CHECK_EQ(cache_set(c, K(key), v, sizeof v, CACHE_NO_TTL), CACHE_OK);
    }
    CHECK(exists(dir, "shard-000001") && exists(dir, "shard-000004"));
    CHECK(!exists(dir, "shard-000005"));
    /* newest value wins: k000 lives in shard 1, its new value goes to the newest */
    CHECK_EQ(cache_set(c, K("k000"), K("newest"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "k000", "newest");
    for (int i = 1; i < 12; i++) {
        fill(v, sizeof v, (unsigned)i);
        snprintf(key, sizeof key, "k%03d", i);
        CHECK_EQ(cache_get(c, K(key), &b), CACHE_OK);
        CHECK(b.len == sizeof v && memcmp(b.data, v, sizeof v) == 0);
        cache_buf_free(&b);
    }
    uint8_t huge[1001] = {0};
    CHECK_EQ(cache_set(c, K("huge"), huge, sizeof huge, CACHE_NO_TTL), CACHE_ERR_TOO_LARGE);
    check_ttl_expires(c);
    CHECK_EQ(cache_pop(c, K("k001"), &b), CACHE_OK);
    CHECK_EQ(b.len, sizeof v);
    cache_buf_free(&b);
    CHECK_EQ(cache_pop(c, K("k001"), &b), CACHE_NOT_FOUND);
    CHECK_EQ(cache_delete(c, K("k002")), CACHE_OK);
    CHECK_EQ(cache_delete(c, K("k002")), CACHE_OK);
    uint64_t n = 0;
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, 12); /* a, "", k000, k003..k011 */
    cache_stats s;
    CHECK_EQ(cache_get_stats(c, &s), CACHE_OK);
    CHECK_EQ(s.entries, 12);
    CHECK_EQ(s.expirations, 1);
    CHECK_EQ(s.deletes, 2);
    CHECK_EQ(cache_save(c), CACHE_OK);
    cache_free(c);
    /* after a restart: same entries, same shards */
    CHECK_EQ(cache_open_sharded(dir, 1000, 2, &c), CACHE_OK);
    CHECK_GET(c, "k000", "newest");
    CHECK_GET(c, "a", "alpha");
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, 12);
    CHECK_EQ(cache_clear(c), CACHE_OK);
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, 0);
    CHECK_MISS(c, "k005");
    check_refuses_closed(c);
}

static void test_bad_input(const char *dir) {
    check_open_bad_input(open_sharded, dir);
    cache_t *c = NULL;
    char store[512];
    snprintf(store, sizeof store, "%s/damaged", dir);
    check_damaged_database(open_sharded, store, "index.db");
    /* NULL keys and values with a length */
    snprintf(store, sizeof store, "%s/ok", dir);
    CHECK_EQ(cache_open_sharded(store, 0, 0, &c), CACHE_OK);
    cache_buf b = {0};
    CHECK_EQ(cache_set(c, NULL, 1, K("v"), CACHE_NO_TTL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_set(c, K("k"), NULL, 1, CACHE_NO_TTL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get(c, NULL, 1, &b), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get(c, K("k"), NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_set(c, K("k"), K("v"), 0.0 / 0.0), CACHE_ERR_INVALID_ARG);
    cache_free(c);
}

/* fork() while a writer makes the handle open and close shards without pause (4 KiB
 * shards, 2 open at most: a shard's store is opened, its locks registered with the fork
 * handlers, under the handle's lock) and readers read. */
static void test_fork_beside_shard_churn(const char *dir) {
    cache_t *c = NULL;
    CHECK_EQ(cache_open_sharded(dir, 4096, 2, &c), CACHE_OK);
    check_fork_beside_traffic(c, 400, 2);
}

int main(void) {
    char dir[256];
    make_tmpdir(dir, sizeof dir);
    char sub[512];
    snprintf(sub, sizeof sub, "%s/ops/nested", dir);
    test_operations(sub);
    test_bad_input(dir);
    check_across_processes(open_sharded, dir);
    if (!small_scale()) {
        snprintf(sub, sizeof sub, "%s/fork", dir);
        test_fork_beside_shard_churn(sub);
    }
    remove_tree(dir);
    printf("test_sharded: ok\n");
    return 0;
}
