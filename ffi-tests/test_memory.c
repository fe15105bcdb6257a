/* The in-memory backend through the C ABI: every operation, LRU order, TTL expiry,
 * get_into's buffer-too-small path, stats, version and status text. */
#include "check.h"
#include <math.h>
#include <time.h>

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_library(void) {
    const char *v = cache_version();
    int major, minor, patch;
    CHECK_EQ(sscanf(v, "%d.%d.%d", &major, &minor, &patch), 3);
    CHECK(strcmp(cache_status_str(CACHE_OK), "success") == 0);
    CHECK(strcmp(cache_status_str(CACHE_ERR_BUFFER_TOO_SMALL), "buffer too small") == 0);
    CHECK(strcmp(cache_status_str(12345), "unknown status") == 0);
    CHECK(strcmp(cache_status_str(-100), "unknown status") == 0);
    for (int s = -9; s <= 1; s++) CHECK(strlen(cache_status_str(s)) > 0);
}

static void test_operations(void) {
    cache_t *c = NULL;
    CHECK_EQ(cache_open_memory(0, &c), CACHE_OK);
    CHECK(c != NULL);
    CHECK_MISS(c, "a");
    CHECK_EQ(cache_set(c, K("a"), K("alpha"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "a", "alpha");
    CHECK_EQ(cache_set(c, K("a"), K("again"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "a", "again");
    CHECK_EQ(cache_has(c, K("a")), CACHE_OK);
    CHECK_EQ(cache_has(c, K("b")), CACHE_NOT_FOUND);

    /* empty key and empty value; binary bytes */
    CHECK_EQ(cache_set(c, NULL, 0, NULL, 0, CACHE_NO_TTL), CACHE_OK);
    cache_buf b = {0};
    CHECK_EQ(cache_get(c, NULL, 0, &b), CACHE_OK);
    CHECK_EQ(b.len, 0);
    cache_buf_free(&b);
    const uint8_t bin_key[] = {0, 0xff, 0, 7};
    const uint8_t bin_val[] = {0xde, 0, 0xad};
    CHECK_EQ(cache_set(c, bin_key, 4, bin_val, 3, CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_get(c, bin_key, 4, &b), CACHE_OK);
    CHECK(b.len == 3 && memcmp(b.data, bin_val, 3) == 0);
    cache_buf_free(&b);
    CHECK(b.data == NULL && b.len == 0);
    CHECK_EQ(cache_has(c, bin_key, 3), CACHE_NOT_FOUND);

    uint64_t n = 0;
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, 3);

    /* pop */
    CHECK_EQ(cache_pop(c, K("a"), &b), CACHE_OK);
    CHECK(buf_equals(&b, "again"));
    cache_buf_free(&b);
    b.data = (uint8_t *)1;
    CHECK_EQ(cache_pop(c, K("a"), &b), CACHE_NOT_FOUND);
    CHECK(b.data == NULL && b.len == 0);

    /* delete, present or not */
    CHECK_EQ(cache_delete(c, bin_key, 4), CACHE_OK);
    CHECK_EQ(cache_delete(c, bin_key, 4), CACHE_OK);
    CHECK_EQ(cache_has(c, bin_key, 4), CACHE_NOT_FOUND);

    /* clear */
    CHECK_EQ(cache_set(c, K("x"), K("1"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_clear(c), CACHE_OK);
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, 0);
    CHECK_MISS(c, "x");

    CHECK_EQ(cache_save(c), CACHE_OK);
    CHECK_EQ(cache_close(c), CACHE_OK);
    cache_free(c);
}

static void test_lru(void) {
    cache_t *c = NULL;
    CHECK_EQ(cache_open_memory(3, &c), CACHE_OK);
    CHECK_EQ(cache_set(c, K("a"), K("1"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, K("b"), K("2"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, K("c"), K("3"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "a", "1");                  /* b is now least recently used */
    CHECK_EQ(cache_set(c, K("d"), K("4"), CACHE_NO_TTL), CACHE_OK);
    CHECK_MISS(c, "b");
    CHECK_EQ(cache_has(c, K("c")), CACHE_OK); /* a peek: c stays least recently used */
    CHECK_EQ(cache_set(c, K("e"), K("5"), CACHE_NO_TTL), CACHE_OK);
    CHECK_MISS(c, "c");
    uint8_t buf[8];
    size_t len = 0;
    CHECK_EQ(cache_get_into(c, K("d"), buf, sizeof buf, &len), CACHE_OK); /* a is LRU */
    CHECK_EQ(cache_set(c, K("f"), K("6"), CACHE_NO_TTL), CACHE_OK);
    CHECK_MISS(c, "a");
    uint64_t n = 0;
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, 3);
    cache_stats s;
    CHECK_EQ(cache_get_stats(c, &s), CACHE_OK);
    CHECK_EQ(s.evictions, 3);
    cache_free(c);
}

static void test_ttl(void) {
    cache_t *c = NULL;
    CHECK_EQ(cache_open_memory(0, &c), CACHE_OK);
    CHECK_EQ(cache_set(c, K("short"), K("v"), 0.05), CACHE_OK);
    CHECK_EQ(cache_set(c, K("long"), K("v"), 60.0), CACHE_OK);
    CHECK_EQ(cache_set(c, K("inf"), K("v"), INFINITY), CACHE_OK);
    CHECK_EQ(cache_set(c, K("neg"), K("v"), -5.0), CACHE_OK);
    CHECK_EQ(cache_set(c, K("zero"), K("v"), 0.0), CACHE_OK);
    CHECK_MISS(c, "zero");
    CHECK_GET(c, "short", "v");
    sleep_ms(100);
    uint64_t n = 0;
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, 3);
    CHECK_MISS(c, "short");
    CHECK_EQ(cache_has(c, K("short")), CACHE_NOT_FOUND);
    CHECK_GET(c, "long", "v");
    CHECK_GET(c, "inf", "v");
    CHECK_GET(c, "neg", "v");
    /* an expired entry is not popped either */
    CHECK_EQ(cache_set(c, K("p"), K("v"), 0.02), CACHE_OK);
    sleep_ms(50);
    cache_buf b = {0};
    CHECK_EQ(cache_pop(c, K("p"), &b), CACHE_NOT_FOUND);
    cache_stats s;
    CHECK_EQ(cache_get_stats(c, &s), CACHE_OK);
    CHECK_EQ(s.expirations, 2); /* short and p; "zero" was never stored */
    CHECK_EQ(s.entries, 3);
    cache_free(c);
}

static void test_get_into(void) {
    cache_t *c = NULL;
    CHECK_EQ(cache_open_memory(0, &c), CACHE_OK);
    CHECK_EQ(cache_set(c, K("k"), K("hello world"), CACHE_NO_TTL), CACHE_OK);
    char buf[32];
    memset(buf, 'z', sizeof buf);
    size_t len = 0;
    CHECK_EQ(cache_get_into(c, K("k"), (uint8_t *)buf, 4, &len), CACHE_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(len, 11);
    CHECK_EQ(buf[0], 'z'); /* nothing copied */
    char err[256];
    CHECK(cache_last_error(err, sizeof err) > 0);
    CHECK(strstr(err, "11 bytes") != NULL);
    CHECK_EQ(cache_get_into(c, K("k"), NULL, 0, &len), CACHE_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(len, 11);
    CHECK_EQ(cache_get_into(c, K("k"), (uint8_t *)buf, 11, &len), CACHE_OK);
    CHECK(len == 11 && memcmp(buf, "hello world", 11) == 0);
    len = 99;
    CHECK_EQ(cache_get_into(c, K("missing"), (uint8_t *)buf, sizeof buf, &len), CACHE_NOT_FOUND);
    /* empty value fits a zero-capacity NULL buffer */
    CHECK_EQ(cache_set(c, K("e"), NULL, 0, CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_get_into(c, K("e"), NULL, 0, &len), CACHE_OK);
    CHECK_EQ(len, 0);
    cache_free(c);
}

static void test_stats(void) {
    cache_t *c = NULL;
    CHECK_EQ(cache_open_memory(2, &c), CACHE_OK);
    cache_stats s;
    CHECK_EQ(cache_get_stats(c, &s), CACHE_OK);
    CHECK(s.hits == 0 && s.misses == 0 && s.sets == 0 && s.entries == 0 && s.bytes == 0);
    CHECK_EQ(cache_set(c, K("a"), K("xy"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, K("b"), K("z"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, K("c"), K("w"), CACHE_NO_TTL), CACHE_OK); /* evicts a */
    CHECK_GET(c, "b", "z");  /* hit */
    CHECK_MISS(c, "a");      /* miss */
    cache_buf b = {0};
    CHECK_EQ(cache_pop(c, K("c"), &b), CACHE_OK); /* hit, delete */
    cache_buf_free(&b);
    CHECK_EQ(cache_get_stats(c, &s), CACHE_OK);
    CHECK_EQ(s.hits, 2);
    CHECK_EQ(s.misses, 1);
    CHECK_EQ(s.sets, 3);
    CHECK_EQ(s.deletes, 1);
    CHECK_EQ(s.evictions, 1);
    CHECK_EQ(s.expirations, 0);
    CHECK_EQ(s.entries, 1);
    CHECK_EQ(s.bytes, 2);
    cache_free(c);
}

static void test_large_value(void) {
    cache_t *c = NULL;
    CHECK_EQ(cache_open_memory(0, &c), CACHE_OK);
    size_t size = 8u << 20;
    uint8_t *big = malloc(size);
    for (size_t i = 0; i < size; i++) big[i] = (uint8_t)(i * 31);
    CHECK_EQ(cache_set(c, K("big"), big, size, CACHE_NO_TTL), CACHE_OK);
    cache_buf b = {0};
    CHECK_EQ(cache_get(c, K("big"), &b), CACHE_OK);
    CHECK(b.len == size && memcmp(b.data, big, size) == 0);
    cache_buf_free(&b);
    free(big);
    cache_free(c);
}

int main(void) {
    test_library();
    test_operations();
    test_lru();
    test_ttl();
    test_get_into();
    test_stats();
    test_large_value();
    printf("test_memory: ok\n");
    return 0;
}
