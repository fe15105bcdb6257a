/* Several threads mixing every operation on one handle; invariants checked at the end:
 * values never torn or mixed up, pop exactly-once, the key bound held, stats consistent
 * with the calls made. On the memory kind (unbounded, bounded), the file kind, whose
 * gets run in parallel on read connections beside the writers, and the sharded kind,
 * whose gets read its index and shards so, with small shards and at most 3 open, so
 * shards open and close under the readers (TSan runs this too). */
#include "check.h"
#include "persistent.h"
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define THREADS 6
#define OPS (getenv("DUCKCACHE_TEST_SCALE") ? 3000 : 20000)
/* Fewer on the file kind, whose every write is a commit. */
static int ops = 0;
#define MAX_KEYS 500
#define POP_KEYS 2000

static cache_t *cache;
static atomic_long lookups, sets, pops_won;

/* A value encodes its key, so a torn or misdirected value is detected. */
static int make_value(char *out, size_t cap, const char *key, unsigned version) {
    return snprintf(out, cap, "%s=%u|%s", key, version, key);
}

static void check_value(const char *key, const uint8_t *v, size_t len) {
    char expect_prefix[64];
    int n = snprintf(expect_prefix, sizeof expect_prefix, "%s=", key);
    CHECK(len > (size_t)n && memcmp(v, expect_prefix, n) == 0);
    size_t klen = strlen(key);
    CHECK(len >= klen && memcmp(v + len - klen, key, klen) == 0);
}

static void *worker(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u + 1;
    char key[32], value[96], buf[96];
    long my_lookups = 0, my_sets = 0, my_pops = 0;
    for (int i = 0; i < ops; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned r = seed >> 8;
        snprintf(key, sizeof key, "key-%u", r % 2000);
        cache_buf b = {0};
        size_t len = 0;
        switch (r % 9) {
        case 0: case 1: case 2: {
            int vl = make_value(value, sizeof value, key, r);
            CHECK_EQ(cache_set(cache, K(key), (const uint8_t *)value, (size_t)vl,
                               (r % 5 == 0) ? 0.001 : CACHE_NO_TTL), CACHE_OK);
            my_sets++;
            break;
        }
        case 3: {
            int s = cache_get(cache, K(key), &b);
            CHECK(s == CACHE_OK || s == CACHE_NOT_FOUND);
            if (s == CACHE_OK) check_value(key, b.data, b.len);
            cache_buf_free(&b);
            my_lookups++;
            break;
        }
        case 4: {
            int s = cache_get_into(cache, K(key), (uint8_t *)buf, sizeof buf, &len);
            CHECK(s == CACHE_OK || s == CACHE_NOT_FOUND);
            if (s == CACHE_OK) check_value(key, (uint8_t *)buf, len);
            my_lookups++;
            break;
        }
        case 5: {
            int s = cache_has(cache, K(key));
            CHECK(s == CACHE_OK || s == CACHE_NOT_FOUND);
            my_lookups++;
            break;
        }
        case 6: {
            /* contended pops of the shared pop keys */
            snprintf(key, sizeof key, "pop-%u", r % POP_KEYS);
            int s = cache_pop(cache, K(key), &b);
            CHECK(s == CACHE_OK || s == CACHE_NOT_FOUND);
            if (s == CACHE_OK) {
                CHECK(buf_equals(&b, key));
                my_pops++;
            }
            cache_buf_free(&b);
            my_lookups++;
            break;
        }
        case 7:
            CHECK_EQ(cache_delete(cache, K(key)), CACHE_OK);
            break;
        default: {
            uint64_t n = 0;
            cache_stats st;
            CHECK_EQ(cache_len(cache, &n), CACHE_OK);
            CHECK_EQ(cache_get_stats(cache, &st), CACHE_OK);
            break;
        }
        }
    }
    atomic_fetch_add(&lookups, my_lookups);
    atomic_fetch_add(&sets, my_sets);
    atomic_fetch_add(&pops_won, my_pops);
    return NULL;
}

int main(void) {
    char dir[256];
    make_tmpdir(dir, sizeof dir);
    /* Unbounded first so every pop key is present, then the same with a bound, then the
     * file kind and the sharded kind (unbounded), then both with the read cache on (its
     * gets beside the other threads' writes, under TSan in make test-tsan). */
    static const char *const names[] = {"memory", "memory, bounded", "file", "sharded",
                                         "file, read cache", "sharded, read cache"};
    for (int round = 0; round <= 5; round++) {
        int bounded = round == 1, file = round == 2, sharded = round == 3;
        int read_cached = round >= 4;
        ops = file || sharded ? OPS / 4 : OPS;
        atomic_store(&lookups, 0);
        atomic_store(&sets, 0);
        atomic_store(&pops_won, 0);
        if (read_cached) {
            char uri[400];
            snprintf(uri, sizeof uri, "%s:%s/%s?read_cache=1MiB", round == 4 ? "file" : "sharded",
                     dir, round == 4 ? "file-rc" : "sharded-rc");
            ops = OPS / 4;
            CHECK_EQ(cache_open(uri, &cache), CACHE_OK);
        } else if (file) {
            CHECK_EQ(cache_open_file(dir, 0, &cache), CACHE_OK);
        } else if (sharded) {
            char shards[300];
            snprintf(shards, sizeof shards, "%s/sharded", dir);
            CHECK_EQ(cache_open_sharded(shards, 16 * 1024, 3, &cache), CACHE_OK);
        } else {
            CHECK_EQ(cache_open_memory(bounded ? MAX_KEYS : 0, &cache), CACHE_OK);
        }
        char key[32];
        for (int i = 0; i < POP_KEYS; i++) {
            snprintf(key, sizeof key, "pop-%d", i);
            CHECK_EQ(cache_set(cache, K(key), K(key), CACHE_NO_TTL), CACHE_OK);
        }
        pthread_t t[THREADS];
        for (int i = 0; i < THREADS; i++)
            CHECK_EQ(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 1)), 0);
        for (int i = 0; i < THREADS; i++) CHECK_EQ(pthread_join(t[i], NULL), 0);

        /* Let every 1 ms entry expire, so len and stats look at the same live set. */
        struct timespec pause = {0, 20 * 1000000L};
        nanosleep(&pause, NULL);
        cache_stats st;
        uint64_t n = 0;
        CHECK_EQ(cache_get_stats(cache, &st), CACHE_OK);
        CHECK_EQ(cache_len(cache, &n), CACHE_OK);
        CHECK_EQ(st.hits + st.misses, atomic_load(&lookups));
        CHECK_EQ(st.sets, atomic_load(&sets) + POP_KEYS);
        CHECK_EQ(n, st.entries);
        if (bounded) {
            CHECK(n <= MAX_KEYS);
        } else {
            /* Unbounded: nothing evicted, and each pop key won at most once: the ones
               left plus the ones popped are exactly the ones set. */
            CHECK_EQ(st.evictions, 0);
            long left = 0;
            for (int i = 0; i < POP_KEYS; i++) {
                snprintf(key, sizeof key, "pop-%d", i);
                if (cache_has(cache, K(key)) == CACHE_OK) left++;
            }
            CHECK_EQ(left + atomic_load(&pops_won), POP_KEYS);
        }
        CHECK_EQ(cache_close(cache), CACHE_OK);
        cache_free(cache);
        printf("test_threads: %s ok\n", names[round]);
    }
    remove_tree(dir);
    printf("test_threads: ok\n");
    return 0;
}
