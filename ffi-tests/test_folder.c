/* The key-as-folder persistent cache through the C ABI: every operation, keys that look
 * like paths or hold any bytes, a planted symbolic link, bad input, two processes on one
 * directory, and SIGKILL during writes. */
#include "persistent.h"
#include <dirent.h>

static cache_status open_folder(const char *dir, cache_t **out) { return cache_open_folder(dir, 0, out); }

/* Entries directly in `dir`: ".", ".." and the store's mark (.duckcache-folder) aside. */
static int count_names(const char *dir) {
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
            strcmp(e->d_name, ".duckcache-folder") != 0)
            n++;
    closedir(d);
    return n;
}

static void test_operations(const char *dir) {
    cache_t *c = NULL;
    CHECK_EQ(cache_open_folder(dir, 4, &c), CACHE_OK);
    CHECK_MISS(c, "a");
    CHECK_EQ(cache_set(c, K("a"), K("alpha"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, K("a"), K("alpha2"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "a", "alpha2");
    CHECK_EQ(cache_has(c, K("a")), CACHE_OK);
    static uint8_t big[200000];
    fill(big, sizeof big, 5);
    CHECK_EQ(cache_set(c, K("big"), big, sizeof big, CACHE_NO_TTL), CACHE_OK);
    cache_buf b = {0};
    CHECK_EQ(cache_get(c, K("big"), &b), CACHE_OK);
    CHECK(b.len == sizeof big && memcmp(b.data, big, sizeof big) == 0);
    cache_buf_free(&b);
    /* the value file is the value, byte for byte */
    char path[600];
    snprintf(path, sizeof path, "%s/big/value", dir);
    struct stat st;
    CHECK_EQ(stat(path, &st), 0);
    CHECK_EQ(st.st_size, sizeof big);
    CHECK_EQ(st.st_mode & 0777, 0600);
    check_ttl_expires(c);
    CHECK_EQ(cache_pop(c, K("big"), &b), CACHE_OK);
    CHECK_EQ(b.len, sizeof big);
    cache_buf_free(&b);
    CHECK_EQ(cache_pop(c, K("big"), &b), CACHE_NOT_FOUND);
    CHECK_EQ(cache_delete(c, K("a")), CACHE_OK);
    CHECK_EQ(cache_delete(c, K("a")), CACHE_OK);
    CHECK_EQ(cache_set(c, K("keep"), K("kept"), CACHE_NO_TTL), CACHE_OK);
    uint64_t n = 0;
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, 1);
    cache_stats s;
    CHECK_EQ(cache_get_stats(c, &s), CACHE_OK);
    CHECK_EQ(s.entries, 1);
    CHECK_EQ(s.bytes, 8);
    CHECK_EQ(s.expirations, 1);
    CHECK_EQ(s.deletes, 2);
    CHECK_EQ(cache_save(c), CACHE_OK);
    cache_free(c);
    CHECK_EQ(cache_open_folder(dir, 0, &c), CACHE_OK);
    CHECK_GET(c, "keep", "kept");
    CHECK_EQ(cache_clear(c), CACHE_OK);
    CHECK_EQ(count_names(dir), 0);
    check_refuses_closed(c);
}

/* Keys that look like paths, or hold any bytes, stay one folder below `dir`. */
static void test_hostile_keys(const char *base) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/cache", base);
    cache_t *c = NULL;
    CHECK_EQ(cache_open_folder(dir, 0, &c), CACHE_OK);
    static uint8_t long_key[10 * 1024];
    memset(long_key, '/', sizeof long_key);
    struct {
        const uint8_t *key;
        size_t len;
    } keys[] = {
        {(const uint8_t *)"../x", 4},         {(const uint8_t *)"../../escape", 12},
        {(const uint8_t *)"/etc/passwd", 11}, {(const uint8_t *)"a/b", 3},
        {(const uint8_t *)".", 1},            {(const uint8_t *)"..", 2},
        {(const uint8_t *)"", 0},             {(const uint8_t *)"\0\0", 2},
        {(const uint8_t *)"\xff\xc3\x28", 3}, {long_key, sizeof long_key},
    };
    const int count = (int)(sizeof keys / sizeof keys[0]);
    for (int i = 0; i < count; i++) {
        uint8_t v = (uint8_t)i;
        CHECK_EQ(cache_set(c, keys[i].key, keys[i].len, &v, 1, CACHE_NO_TTL), CACHE_OK);
    }
    for (int i = 0; i < count; i++) {
        cache_buf b = {0};
        CHECK_EQ(cache_get(c, keys[i].key, keys[i].len, &b), CACHE_OK);
        CHECK(b.len == 1 && b.data[0] == (uint8_t)i);
        cache_buf_free(&b);
    }
    uint64_t n = 0;
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, (uint64_t)count);
    CHECK_EQ(count_names(base), 1);     /* nothing beside the cache directory */
    CHECK_EQ(count_names(dir), count);  /* one folder per key */
    for (int i = 0; i < count; i++) CHECK_EQ(cache_delete(c, keys[i].key, keys[i].len), CACHE_OK);
    CHECK_EQ(count_names(dir), 0);
    cache_free(c);
}

/* A symbolic link planted where an entry would be is never followed out. */
static void test_symlink(const char *base) {
    char dir[600], victim[600], path[700];
    snprintf(dir, sizeof dir, "%s/linked", base);
    snprintf(victim, sizeof victim, "%s/victim", base);
    CHECK_EQ(mkdir(victim, 0700), 0);
    snprintf(path, sizeof path, "%s/value", victim);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs("secret", f);
    fclose(f);
    cache_t *c = NULL;
    CHECK_EQ(cache_open_folder(dir, 0, &c), CACHE_OK);
    snprintf(path, sizeof path, "%s/k", dir);
    CHECK_EQ(symlink(victim, path), 0);
    CHECK_MISS(c, "k");
    CHECK_EQ(cache_has(c, K("k")), CACHE_NOT_FOUND);
    CHECK_EQ(cache_set(c, K("k"), K("mine"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "k", "mine");
    CHECK_EQ(count_names(victim), 1); /* untouched */
    snprintf(path, sizeof path, "%s/j", dir);
    CHECK_EQ(symlink(victim, path), 0);
    CHECK_EQ(cache_delete(c, K("j")), CACHE_OK);
    CHECK_EQ(cache_clear(c), CACHE_OK);
    CHECK_EQ(count_names(dir), 0);
    CHECK_EQ(count_names(victim), 1);
    cache_free(c);
}

static void test_bad_input(const char *dir) {
    check_open_bad_input(open_folder, dir);
    cache_t *c = NULL;
    FILE *f;
    /* a damaged entry: CACHE_ERR_CORRUPT once, then absent, and the cache usable */
    char store[512], meta[700];
    snprintf(store, sizeof store, "%s/damaged", dir);
    CHECK_EQ(cache_open_folder(store, 0, &c), CACHE_OK);
    CHECK_EQ(cache_set(c, K("k"), K("v"), CACHE_NO_TTL), CACHE_OK);
    snprintf(meta, sizeof meta, "%s/k/meta", store);
    f = fopen(meta, "w");
    CHECK(f != NULL);
    fputs("garbage", f);
    fclose(f);
    cache_buf b = {0};
    CHECK_EQ(cache_get(c, K("k"), &b), CACHE_ERR_CORRUPT);
    CHECK_EQ(cache_get(c, K("k"), &b), CACHE_NOT_FOUND);
    CHECK_EQ(cache_set(c, K("k"), K("v2"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "k", "v2");
    CHECK_EQ(cache_set(c, NULL, 1, K("v"), CACHE_NO_TTL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_set(c, K("k"), K("v"), 0.0 / 0.0), CACHE_ERR_INVALID_ARG);
    cache_free(c);
}

/* cache_entry_path: the folder of a key, by the library's one naming rule, whether or not
 * the key is there; refused on a kind whose entries have no place of their own. */
static void test_entry_path(const char *dir) {
    char store[512], want[700];
    snprintf(store, sizeof store, "%s/paths", dir);
    cache_t *c = NULL;
    CHECK_EQ(cache_open_folder(store, 0, &c), CACHE_OK);
    cache_buf p = {0};
    CHECK_EQ(cache_entry_path(c, K("user:42"), &p), CACHE_OK);
    snprintf(want, sizeof want, "%s/user%%3A42", store);
    CHECK(p.len == strlen(want) && memcmp(p.data, want, p.len) == 0);
    cache_buf_free(&p);
    CHECK_EQ(cache_set(c, K("user:42"), K("v"), CACHE_NO_TTL), CACHE_OK);
    snprintf(want, sizeof want, "%s/user%%3A42/meta", store);
    CHECK(access(want, F_OK) == 0); /* the entry is where the path says */
    CHECK_EQ(cache_entry_path(c, NULL, 1, &p), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_close(c), CACHE_OK);
    CHECK_EQ(cache_entry_path(c, K("user:42"), &p), CACHE_ERR_CLOSED);
    CHECK(p.data == NULL && p.len == 0);
    cache_free(c);
    CHECK_EQ(cache_open_memory(0, &c), CACHE_OK);
    CHECK_EQ(cache_entry_path(c, K("k"), &p), CACHE_ERR_INVALID_ARG);
    CHECK(p.data == NULL && p.len == 0);
    cache_free(c);
}

int main(void) {
    char dir[256];
    make_tmpdir(dir, sizeof dir);
    char sub[512];
    snprintf(sub, sizeof sub, "%s/ops/nested", dir);
    test_operations(sub);
    snprintf(sub, sizeof sub, "%s/hostile", dir);
    CHECK_EQ(mkdir(sub, 0700), 0);
    test_hostile_keys(sub);
    test_symlink(dir);
    test_bad_input(dir);
    test_entry_path(dir);
    snprintf(sub, sizeof sub, "%s/procs", dir);
    check_two_processes(open_folder, sub);
    check_sigkill(open_folder, dir, small_scale() ? 2 : 6);
    remove_tree(dir);
    printf("test_folder: ok\n");
    return 0;
}
