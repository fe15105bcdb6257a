/* Every bad input gets a clear status and message, never a crash or a leak. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include "check.h"
#include <math.h>
#include <sys/mman.h>

static void check_last_error_mentions(const char *word) {
    char err[256];
    size_t full = cache_last_error(err, sizeof err);
    CHECK(full > 0);
    if (!strstr(err, word)) {
        fprintf(stderr, "last error \"%s\" does not mention \"%s\"\n", err, word);
        exit(1);
    }
}

static void test_null_handle(void) {
    cache_buf b = {0};
    uint8_t buf[4];
    size_t len = 0;
    uint64_t n = 0;
    cache_stats s;
    CHECK_EQ(cache_set(NULL, K("k"), K("v"), CACHE_NO_TTL), CACHE_ERR_INVALID_ARG);
    check_last_error_mentions("handle is NULL");
    CHECK_EQ(cache_get(NULL, K("k"), &b), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get_into(NULL, K("k"), buf, 4, &len), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_pop(NULL, K("k"), &b), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_has(NULL, K("k")), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_delete(NULL, K("k")), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_clear(NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_len(NULL, &n), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get_stats(NULL, &s), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_save(NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_close(NULL), CACHE_ERR_INVALID_ARG);
    cache_free(NULL);
    cache_buf_free(NULL);
    cache_buf zero = {0};
    cache_buf_free(&zero);
    CHECK(zero.data == NULL && zero.len == 0);
}

static void test_null_pointers(cache_t *c) {
    uint8_t buf[4];
    size_t len = 0;
    /* NULL out pointers */
    CHECK_EQ(cache_open_memory(0, NULL), CACHE_ERR_INVALID_ARG);
    check_last_error_mentions("out is NULL");
    CHECK_EQ(cache_get(c, K("k"), NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_pop(c, K("k"), NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_len(c, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get_stats(c, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get_into(c, K("k"), buf, 4, NULL), CACHE_ERR_INVALID_ARG);
    check_last_error_mentions("value_len is NULL");
    CHECK_EQ(cache_get_into(c, K("k"), NULL, 4, &len), CACHE_ERR_INVALID_ARG);
    /* NULL key or value with a non-zero length */
    CHECK_EQ(cache_set(c, NULL, 3, K("v"), CACHE_NO_TTL), CACHE_ERR_INVALID_ARG);
    check_last_error_mentions("key is NULL but key_len is 3");
    CHECK_EQ(cache_set(c, K("k"), NULL, 3, CACHE_NO_TTL), CACHE_ERR_INVALID_ARG);
    check_last_error_mentions("value is NULL");
    cache_buf b = {0};
    CHECK_EQ(cache_get(c, NULL, 1, &b), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_pop(c, NULL, 1, &b), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_has(c, NULL, 1), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_delete(c, NULL, 1), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get_into(c, NULL, 1, buf, 4, &len), CACHE_ERR_INVALID_ARG);
    /* NaN ttl; nothing stored */
    CHECK_EQ(cache_set(c, K("nan"), K("v"), NAN), CACHE_ERR_INVALID_ARG);
    check_last_error_mentions("NaN");
    CHECK_EQ(cache_has(c, K("nan")), CACHE_NOT_FOUND);
    /* The open function leaves *out untouched on failure: nothing to test for memory,
       which cannot fail, but a bad call must not have stored anything. */
    uint64_t n = 99;
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, 0);
}

static void test_after_close(void) {
    cache_t *c = NULL;
    CHECK_EQ(cache_open_memory(0, &c), CACHE_OK);
    CHECK_EQ(cache_set(c, K("k"), K("v"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_close(c), CACHE_OK);
    CHECK_EQ(cache_close(c), CACHE_OK); /* idempotent */
    cache_buf b = {(uint8_t *)1, 5};
    uint8_t buf[4];
    size_t len = 77;
    uint64_t n = 77;
    cache_stats s;
    memset(&s, 0xab, sizeof s);
    CHECK_EQ(cache_set(c, K("k"), K("v"), CACHE_NO_TTL), CACHE_ERR_CLOSED);
    check_last_error_mentions("closed");
    CHECK_EQ(cache_get(c, K("k"), &b), CACHE_ERR_CLOSED);
    CHECK(b.data == (uint8_t *)1 && b.len == 5); /* out untouched on failure */
    CHECK_EQ(cache_get_into(c, K("k"), buf, 4, &len), CACHE_ERR_CLOSED);
    CHECK_EQ(len, 77);
    CHECK_EQ(cache_pop(c, K("k"), &b), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_has(c, K("k")), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_delete(c, K("k")), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_clear(c), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_len(c, &n), CACHE_ERR_CLOSED);
    CHECK_EQ(n, 77);
    CHECK_EQ(cache_get_stats(c, &s), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_save(c), CACHE_ERR_CLOSED);
    cache_free(c);
}

static void test_last_error_buffer(void) {
    CHECK_EQ(cache_set(NULL, K("k"), K("v"), 1.0), CACHE_ERR_INVALID_ARG);
    char small[6];
    size_t full = cache_last_error(small, sizeof small);
    CHECK(full > 5);
    CHECK_EQ(strlen(small), 5); /* cap-1 bytes plus NUL */
    CHECK_EQ(cache_last_error(NULL, 0), full);
    CHECK_EQ(cache_last_error(small, 0), full);
    /* A successful call does not clear the last failure's detail. */
    cache_t *c = NULL;
    CHECK_EQ(cache_open_memory(0, &c), CACHE_OK);
    CHECK_EQ(cache_last_error(NULL, 0), full);
    cache_free(c);
}

/* A memory-cache value of 4 GiB or more: CACHE_ERR_TOO_LARGE, without reading it (the
 * "value" is address space no page backs: a read would crash the test), nothing stored. */
static void test_memory_value_past_4_gib(void) {
    size_t len = ((size_t)1 << 32) + 1;
    void *none = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    CHECK(none != MAP_FAILED);
    cache_t *c = NULL;
    CHECK_EQ(cache_open_memory(0, &c), CACHE_OK);
    CHECK_EQ(cache_set(c, K("huge"), none, len, CACHE_NO_TTL), CACHE_ERR_TOO_LARGE);
    check_last_error_mentions("4 GiB");
    CHECK_EQ(cache_has(c, K("huge")), CACHE_NOT_FOUND);
    cache_free(c);
    CHECK_EQ(munmap(none, len), 0);
}

int main(void) {
    test_null_handle();
    test_memory_value_past_4_gib();
    cache_t *c = NULL;
    CHECK_EQ(cache_open_memory(0, &c), CACHE_OK);
    test_null_pointers(c);
    cache_free(c);
    test_after_close();
    test_last_error_buffer();
    printf("test_bad_input: ok\n");
    return 0;
}
