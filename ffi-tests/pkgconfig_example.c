/* The README example; `make test-install` builds it against an installed copy through pkg-config. */
#include <duckcache.h>
#include <stdio.h>
int main(void) {
    cache_t *c;
    if (cache_open_memory(100, &c) != CACHE_OK) return 1;
    cache_set(c, (const uint8_t *)"greeting", 8, (const uint8_t *)"hello", 5, CACHE_NO_TTL);
    cache_buf v;
    if (cache_get(c, (const uint8_t *)"greeting", 8, &v) != CACHE_OK) return 1;
    printf("%.*s from duckcache %s\n", (int)v.len, (const char *)v.data, cache_version());
    cache_buf_free(&v);
    cache_free(c);
    return 0;
}
