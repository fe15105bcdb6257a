/* The encrypted handle (cache_open_encrypted) over every kind: round trips, ownership of
 * the inner handle, no plaintext anywhere in the stored bytes, tampering and wrong keys
 * (CORRUPT, then absent), empty and 64 MiB values, fresh nonces, async order, and the
 * two sealing functions. */
#define _GNU_SOURCE
#include "persistent.h"
#include <dirent.h>
#include <fcntl.h>

#define MARKER "PLAINTEXT-MARKER-7f3a"

static const uint8_t KEY[32] = "0123456789abcdef0123456789abcdef";
static const uint8_t OTHER_KEY[32] = "fedcba9876543210fedcba9876543210";

typedef cache_status (*raw_opener)(const char *dir, cache_t **out);

static cache_status open_memory(const char *dir, cache_t **out) {
    (void)dir;
    return cache_open_memory(0, out);
}
static cache_status open_file(const char *dir, cache_t **out) { return cache_open_file(dir, 0, out); }
static cache_status open_sharded(const char *dir, cache_t **out) {
    return cache_open_sharded(dir, 0, 0, out);
}
static cache_status open_folder(const char *dir, cache_t **out) { return cache_open_folder(dir, 0, out); }

static cache_t *encrypted(raw_opener open, const char *dir, const uint8_t *key) {
    cache_t *inner = NULL, *c = NULL;
    CHECK_EQ(open(dir, &inner), CACHE_OK);
    CHECK_EQ(cache_open_encrypted(inner, key, 32, &c), CACHE_OK);
    return c;
}

/* Calls `visit` with the path and size of every regular file under `dir`, recursively. */
static void walk(const char *dir, void (*visit)(const char *path, off_t size, void *ctx), void *ctx) {
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) walk(path, visit, ctx);
        else if (S_ISREG(st.st_mode)) visit(path, st.st_size, ctx);
    }
    closedir(d);
}

struct search { const char *needle; int found; };

static void search_file(const char *path, off_t size, void *ctx) {
    struct search *s = ctx;
    if (size == 0 || s->found) return;
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    char *data = malloc((size_t)size);
    CHECK(data != NULL);
    CHECK_EQ(fread(data, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    s->found = memmem(data, (size_t)size, s->needle, strlen(s->needle)) != NULL;
    free(data);
}

/* Whether `needle` occurs in any file under `dir` (recursively). */
static int found_in_tree(const char *dir, const char *needle) {
    struct search s = {needle, 0};
    walk(dir, search_file, &s);
    return s.found;
}

struct largest { char path[1024]; off_t size; };

static void keep_largest(const char *path, off_t size, void *ctx) {
    struct largest *l = ctx;
    if (size > l->size) {
        l->size = size;
        snprintf(l->path, sizeof l->path, "%s", path);
    }
}

/* Flips one byte, in place on disk, of the file holding the biggest value under `dir`. */
static void tamper_on_disk(const char *dir, off_t at) {
    struct largest l = {"", 0};
    walk(dir, keep_largest, &l);
    CHECK(l.size > at);
    int fd = open(l.path, O_RDWR);
    CHECK(fd >= 0);
    uint8_t byte;
    CHECK_EQ(pread(fd, &byte, 1, at), 1);
    byte ^= 0x10;
    CHECK_EQ(pwrite(fd, &byte, 1, at), 1);
    close(fd);
}

/* Changes one byte of the stored (sealed) value of `key` through a plain handle on the
 * same store: what an attacker with write access to the files can do. */
static void tamper(cache_t *raw, const char *key, size_t at) {
    cache_buf b = {0};
    CHECK_EQ(cache_get(raw, K(key), &b), CACHE_OK);
    CHECK(b.len > at);
    b.data[at] ^= 0x01;
    CHECK_EQ(cache_set(raw, K(key), b.data, b.len, CACHE_NO_TTL), CACHE_OK);
    cache_buf_free(&b);
}

static void check_corrupt_then_absent(cache_t *c, const char *key) {
    cache_buf b = {(uint8_t *)0x1, 7};
    CHECK_EQ(cache_get(c, K(key), &b), CACHE_ERR_CORRUPT);
    char err[256];
    CHECK(cache_last_error(err, sizeof err) > 0 && strstr(err, "authentication failed") != NULL);
    CHECK(b.data == (uint8_t *)0x1); /* out untouched on failure */
    CHECK_MISS(c, key);
}

static void check_kind(const char *name, raw_opener open, const char *base) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", base, name);
    int persistent = open != open_memory;
    cache_t *c = encrypted(open, dir, KEY);

    /* round trips, flags and TTLs in the clear, empty values */
    CHECK_EQ(cache_set(c, K("k"), K("value " MARKER), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "k", "value " MARKER);
    CHECK_EQ(cache_set_flagged(c, K("f"), K("flagged"), CACHE_NO_TTL, 77), CACHE_OK);
    cache_buf b = {0};
    uint32_t flags = 0;
    CHECK_EQ(cache_get_flagged(c, K("f"), &b, &flags), CACHE_OK);
    CHECK(buf_equals(&b, "flagged") && flags == 77);
    cache_buf_free(&b);
    CHECK_EQ(cache_set(c, K("empty"), NULL, 0, CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_get(c, K("empty"), &b), CACHE_OK);
    CHECK(b.len == 0);
    CHECK_EQ(cache_pop(c, K("empty"), &b), CACHE_OK);
    CHECK(b.len == 0);
    CHECK_MISS(c, "empty");
    uint8_t into[64];
    size_t len = 0;
    CHECK_EQ(cache_get_into(c, K("k"), into, sizeof into, &len), CACHE_OK);
    CHECK(len == strlen("value " MARKER) && memcmp(into, "value " MARKER, len) == 0);
    CHECK_EQ(cache_has(c, K("k")), CACHE_OK);
    uint64_t n = 0;
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, 2);
    check_ttl_expires(c);

    /* a large value: 64 MiB (8 MiB under valgrind) */
    size_t big_len = small_scale() ? (8u << 20) : (64u << 20);
    uint8_t *big = malloc(big_len);
    CHECK(big != NULL);
    fill(big, big_len, 9);
    memcpy(big + big_len / 2, MARKER, strlen(MARKER));
    CHECK_EQ(cache_set(c, K("big"), big, big_len, CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_get(c, K("big"), &b), CACHE_OK);
    CHECK(b.len == big_len && memcmp(b.data, big, big_len) == 0);
    cache_buf_free(&b);
    free(big);

    if (persistent) {
        CHECK_EQ(cache_save(c), CACHE_OK);
        cache_free(c);
        /* the plaintext marker is nowhere in the files, SQLite pages included */
        CHECK(!found_in_tree(dir, MARKER));
        cache_t *raw = NULL;
        CHECK_EQ(open(dir, &raw), CACHE_OK);
        CHECK_EQ(cache_get(raw, K("k"), &b), CACHE_OK);
        CHECK_EQ(b.len, 40 + strlen("value " MARKER));
        cache_buf_free(&b);
        /* tampering: a byte of the ciphertext, of the tag, of the nonce; a value file */
        c = encrypted(open, dir, KEY);
        tamper(raw, "k", 45);
        check_corrupt_then_absent(c, "k");
        CHECK_EQ(cache_set(c, K("k"), K("again"), CACHE_NO_TTL), CACHE_OK);
        tamper(raw, "k", 30);
        check_corrupt_then_absent(c, "k");
        CHECK_EQ(cache_set(c, K("k"), K("again"), CACHE_NO_TTL), CACHE_OK);
        tamper(raw, "k", 3);
        CHECK_EQ(cache_pop(c, K("k"), &b), CACHE_ERR_CORRUPT);
        CHECK_MISS(raw, "k"); /* the pop removed it */
        tamper_on_disk(dir, 4096); /* the 64 MiB value's own file */
        check_corrupt_then_absent(c, "big");
        /* a value that was never sealed */
        CHECK_EQ(cache_set(raw, K("plain"), K("not sealed at all, long enough to pass 40 bytes"),
                           CACHE_NO_TTL),
                 CACHE_OK);
        check_corrupt_then_absent(c, "plain");
        CHECK_EQ(cache_set(raw, K("short"), K("short"), CACHE_NO_TTL), CACHE_OK);
        check_corrupt_then_absent(c, "short");
        cache_free(c);
        /* another key: CORRUPT, then absent, for every value */
        c = encrypted(open, dir, KEY);
        CHECK_EQ(cache_set(c, K("w"), K("wrong key"), CACHE_NO_TTL), CACHE_OK);
        cache_free(c);
        c = encrypted(open, dir, OTHER_KEY);
        check_corrupt_then_absent(c, "w");
        CHECK_EQ(cache_get(c, K("f"), &b), CACHE_ERR_CORRUPT);
        cache_free(raw);
    }
    cache_free(c);
    printf("  ok %s\n", name);
}

static int memcmp_24(const void *a, const void *b) { return memcmp(a, b, 24); }

/* The nonces of many sealed values are all different. */
static void check_fresh_nonces(void) {
    size_t count = small_scale() ? 2000 : 100000;
    uint8_t (*nonces)[24] = malloc(count * 24);
    CHECK(nonces != NULL);
    for (size_t i = 0; i < count; i++) {
        cache_buf b = {0};
        CHECK_EQ(cache_secretbox_seal(KEY, 32, K("same value"), &b), CACHE_OK);
        CHECK_EQ(b.len, 40 + 10);
        memcpy(nonces[i], b.data, 24);
        cache_buf_free(&b);
    }
    qsort(nonces, count, 24, memcmp_24);
    for (size_t i = 1; i < count; i++) CHECK(memcmp(nonces[i - 1], nonces[i], 24) != 0);
    free(nonces);
    printf("  ok %zu nonces all different\n", count);
}

static void check_seal_functions(void) {
    cache_buf sealed = {0}, opened = {0};
    CHECK_EQ(cache_secretbox_seal(KEY, 32, K(MARKER), &sealed), CACHE_OK);
    CHECK(memmem(sealed.data, sealed.len, MARKER, strlen(MARKER)) == NULL);
    CHECK_EQ(cache_secretbox_open(KEY, 32, sealed.data, sealed.len, &opened), CACHE_OK);
    CHECK(buf_equals(&opened, MARKER));
    cache_buf_free(&opened);
    CHECK_EQ(cache_secretbox_open(OTHER_KEY, 32, sealed.data, sealed.len, &opened), CACHE_ERR_CORRUPT);
    sealed.data[sealed.len - 1] ^= 0x80;
    CHECK_EQ(cache_secretbox_open(KEY, 32, sealed.data, sealed.len, &opened), CACHE_ERR_CORRUPT);
    CHECK_EQ(cache_secretbox_open(KEY, 32, sealed.data, 39, &opened), CACHE_ERR_CORRUPT);
    CHECK(opened.data == NULL);
    cache_buf_free(&sealed);
    /* empty input seals to 40 bytes and opens to empty */
    CHECK_EQ(cache_secretbox_seal(KEY, 32, NULL, 0, &sealed), CACHE_OK);
    CHECK_EQ(sealed.len, 40);
    CHECK_EQ(cache_secretbox_open(KEY, 32, sealed.data, sealed.len, &opened), CACHE_OK);
    CHECK_EQ(opened.len, 0);
    cache_buf_free(&sealed);
    /* bad input */
    CHECK_EQ(cache_secretbox_seal(KEY, 31, K("x"), &sealed), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_secretbox_seal(NULL, 32, K("x"), &sealed), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_secretbox_seal(KEY, 32, NULL, 5, &sealed), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_secretbox_seal(KEY, 32, K("x"), NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_secretbox_open(KEY, 32, K("x"), NULL), CACHE_ERR_INVALID_ARG);
    printf("  ok seal and open\n");
}

/* Ownership: a failed open leaves the inner handle with the caller; bad arguments. */
static void check_ownership_and_bad_input(void) {
    cache_t *inner = NULL, *c = (cache_t *)0x1;
    CHECK_EQ(cache_open_memory(0, &inner), CACHE_OK);
    CHECK_EQ(cache_open_encrypted(inner, KEY, 16, &c), CACHE_ERR_INVALID_ARG);
    CHECK(c == (cache_t *)0x1);
    char err[256];
    CHECK(cache_last_error(err, sizeof err) > 0 && strstr(err, "32") != NULL);
    CHECK_EQ(cache_open_encrypted(inner, NULL, 32, &c), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_open_encrypted(inner, KEY, 32, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_open_encrypted(NULL, KEY, 32, &c), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_set(inner, K("still"), K("mine"), CACHE_NO_TTL), CACHE_OK); /* still usable */
    CHECK_EQ(cache_open_encrypted(inner, KEY, 32, &c), CACHE_OK);
    cache_buf b = {0};
    CHECK_EQ(cache_get(c, K("still"), &b), CACHE_ERR_CORRUPT); /* stored before: never sealed */
    CHECK_EQ(cache_set(c, K("now"), K("sealed"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "now", "sealed");
    cache_free(c); /* frees inner too (valgrind and ASan check it) */
    /* a closed inner handle: the wrapper opens, and every call says the cache is closed */
    CHECK_EQ(cache_open_memory(0, &inner), CACHE_OK);
    CHECK_EQ(cache_close(inner), CACHE_OK);
    CHECK_EQ(cache_open_encrypted(inner, KEY, 32, &c), CACHE_OK);
    CHECK_EQ(cache_set(c, K("k"), K("v"), CACHE_NO_TTL), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_get(c, K("k"), &b), CACHE_ERR_CLOSED);
    cache_free(c);
    /* a 1 MiB key passes through in the clear, its value sealed */
    CHECK_EQ(cache_open_memory(0, &inner), CACHE_OK);
    CHECK_EQ(cache_open_encrypted(inner, KEY, 32, &c), CACHE_OK);
    size_t huge_len = (size_t)1 << 20;
    uint8_t *huge = malloc(huge_len);
    CHECK(huge != NULL);
    fill(huge, huge_len, 3);
    CHECK_EQ(cache_set(c, huge, huge_len, K("value"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_get(c, huge, huge_len, &b), CACHE_OK);
    CHECK(buf_equals(&b, "value"));
    cache_buf_free(&b);
    free(huge);
    cache_free(c);
    printf("  ok ownership and bad input\n");
}

struct async_seen {
    int calls;
    cache_status status[3];
    char value[32];
};

static void on_done(void *user, cache_status status, const uint8_t *value, size_t len) {
    struct async_seen *seen = user;
    seen->status[seen->calls] = status;
    if (seen->calls == 1 && value && len < sizeof seen->value) memcpy(seen->value, value, len);
    seen->calls++;
}

/* The async forms through the wrapper, in the handle's FIFO order: set, get, pop. */
static void check_async_in_order(void) {
    cache_t *inner = NULL, *c = NULL;
    CHECK_EQ(cache_open_memory(0, &inner), CACHE_OK);
    CHECK_EQ(cache_open_encrypted(inner, KEY, 32, &c), CACHE_OK);
    struct async_seen seen = {0};
    CHECK_EQ(cache_set_async(c, K("k"), K("async value"), CACHE_NO_TTL, on_done, &seen), CACHE_OK);
    CHECK_EQ(cache_get_async(c, K("k"), on_done, &seen), CACHE_OK);
    CHECK_EQ(cache_pop_async(c, K("k"), on_done, &seen), CACHE_OK);
    CHECK_EQ(cache_close(c), CACHE_OK); /* waits for the queue */
    CHECK_EQ(seen.calls, 3);
    CHECK(seen.status[0] == CACHE_OK && seen.status[1] == CACHE_OK && seen.status[2] == CACHE_OK);
    CHECK(strcmp(seen.value, "async value") == 0);
    cache_free(c);
    printf("  ok async in order\n");
}

int main(void) {
    char base[256];
    make_tmpdir(base, sizeof base);
    check_seal_functions();
    check_ownership_and_bad_input();
    check_async_in_order();
    check_kind("memory", open_memory, base);
    check_kind("file", open_file, base);
    check_kind("sharded", open_sharded, base);
    check_kind("folder", open_folder, base);
    check_fresh_nonces();
    remove_tree(base);
    printf("test_encrypted: ok\n");
    return 0;
}
