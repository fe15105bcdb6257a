/* Tiny assertion helpers shared by the C tests. A failed check prints where and why,
 * with the library's last error, and exits non-zero. */
#ifndef DUCKCACHE_CHECK_H
#define DUCKCACHE_CHECK_H

#include "duckcache.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void check_fail(const char *file, int line, const char *expr, long got, long want) {
    char err[512];
    cache_last_error(err, sizeof err);
    fprintf(stderr, "%s:%d: check failed: %s (got %ld, want %ld)\n  last error: %s\n",
            file, line, expr, got, want, err);
    exit(1);
}

/* CHECK_EQ(expr, want): integer equality. */
#define CHECK_EQ(expr, want)                                                            \
    do {                                                                                \
        long got_ = (long)(expr), want_ = (long)(want);                                 \
        if (got_ != want_) check_fail(__FILE__, __LINE__, #expr, got_, want_);           \
    } while (0)

#define CHECK(cond) CHECK_EQ(!!(cond), 1)

/* Keys and values from C strings (without the NUL). */
#define K(s) (const uint8_t *)(s), strlen(s)

static inline int buf_equals(const cache_buf *b, const char *s) {
    return b->len == strlen(s) && (b->len == 0 || memcmp(b->data, s, b->len) == 0);
}

/* get(key) must return exactly `want`. */
#define CHECK_GET(c, key, want)                                                         \
    do {                                                                                \
        cache_buf b_ = {0};                                                             \
        CHECK_EQ(cache_get((c), K(key), &b_), CACHE_OK);                                \
        CHECK(buf_equals(&b_, (want)));                                                 \
        cache_buf_free(&b_);                                                            \
    } while (0)

#define CHECK_MISS(c, key)                                                              \
    do {                                                                                \
        cache_buf b_ = {(uint8_t *)1, 7};                                               \
        CHECK_EQ(cache_get((c), K(key), &b_), CACHE_NOT_FOUND);                         \
        CHECK(b_.data == NULL && b_.len == 0);                                          \
    } while (0)

#endif
