/* Version 2 of the contract on every backend, opened through cache_open: add, touch,
 * ttl, incr, get_or_compute (and its async form), the bulk calls, key walks,
 * delete_prefix and purge_expired; bad input for each; exactly-once across threads
 * and, for the persistent kinds, across processes. */
#include "persistent.h"
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define SCALE(full, small) (small_scale() ? (small) : (full))

static char err_buf[2048];
static const char *last_error(void) {
    cache_last_error(err_buf, sizeof err_buf);
    return err_buf;
}

/* ---- open ------------------------------------------------------------------------ */

static void refused(const char *uri, const char *mention) {
    cache_t *c = (cache_t *)0x1;
    CHECK_EQ(cache_open(uri, &c), CACHE_ERR_INVALID_ARG);
    CHECK(c == (cache_t *)0x1);
    if (strstr(last_error(), mention) == NULL) {
        fprintf(stderr, "%s: message \"%s\" lacks \"%s\"\n", uri, err_buf, mention);
        exit(1);
    }
    CHECK(strncmp(err_buf, "cache_open: ", 12) == 0);
}

static void test_open_errors(const char *dir) {
    cache_t *c = NULL;
    CHECK_EQ(cache_open(NULL, &c), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_open("memory:", NULL), CACHE_ERR_INVALID_ARG);
    refused("", "no scheme");
    refused("memcached://localhost", "unknown scheme");
    refused("memory:?max_keys=abc", "max_keys");
    refused("memory:?max_keys=18446744073709551616", "max_keys");
    refused("memory:?ttl=5", "unknown parameter \"ttl\"");
    refused("memory:?policy=lfu", "lfu");
    refused("memory:?max_bytes=1XB", "max_bytes");
    refused("memory:?policy=S3FIFO", "S3FIFO");
    refused("file:", "needs a directory");
    refused("file://example.org/cache", "host");
    refused("file:/tmp/x?size_limit=10TB", "size_limit");
    refused("file:/tmp/x?sync=always", "sync");
    refused("file:/tmp/x?busy_timeout_ms=-5", "busy_timeout_ms");
    refused("file:/tmp/a%2", "'%'");
    refused("sharded:/tmp/x?max_open=3", "unknown parameter \"max_open\"");
    refused("folder:/tmp/x?max_open=1&max_open=2", "twice");
    refused("redis://127.0.0.1:1?ca_file=/etc/hostname", "rediss");
    refused("rediss://127.0.0.1:1?ca_file=/no/such/ca.pem", "cannot be read");
    refused("redis://127.0.0.1:1?pool_size=0", "pool_size");
    refused("redis://127.0.0.1:1?timeout_ms=soon", "timeout_ms");
    refused("redis://no host here", "not a Redis URL");
    /* Nobody listens on loopback port 1: unavailable, at once, naming the address. */
    CHECK_EQ(cache_open("redis://127.0.0.1:1?timeout_ms=500", &c), CACHE_ERR_UNAVAILABLE);
    CHECK(strstr(last_error(), "127.0.0.1:1") != NULL);

    /* The memory shorthand holds exactly what cache_open_memory holds. */
    CHECK_EQ(cache_open("memory:?max_keys=2", &c), CACHE_OK);
    CHECK_EQ(cache_set(c, K("a"), K("1"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, K("b"), K("2"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, K("c"), K("3"), CACHE_NO_TTL), CACHE_OK);
    CHECK_MISS(c, "a");
    cache_free(c);

    /* A percent-encoded '?' and space in a directory name; file:/// and relative forms. */
    char uri[1200], path[1100];
    snprintf(uri, sizeof uri, "file://%s/odd%%3Fname%%20here?size_limit=1KiB&sync=full&busy_timeout_ms=100", dir);
    CHECK_EQ(cache_open(uri, &c), CACHE_OK);
    CHECK_EQ(cache_set(c, K("k"), K("v"), CACHE_NO_TTL), CACHE_OK);
    uint8_t big[2000] = {0};
    CHECK_EQ(cache_set(c, K("big"), big, sizeof big, CACHE_NO_TTL), CACHE_ERR_TOO_LARGE);
    cache_free(c);
    snprintf(path, sizeof path, "%s/odd?name here/cache.db", dir);
    struct stat st;
    CHECK_EQ(stat(path, &st), 0);
    char cwd[1024];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK_EQ(chdir(dir), 0);
    CHECK_EQ(cache_open("folder:relative/dir?max_open=4", &c), CACHE_OK);
    cache_free(c);
    CHECK_EQ(chdir(cwd), 0);
    snprintf(path, sizeof path, "%s/relative/dir", dir);
    CHECK_EQ(stat(path, &st), 0);
}

/* ---- add, touch, ttl, incr --------------------------------------------------------- */

static void test_add(cache_t *c) {
    CHECK_EQ(cache_add(c, K("a"), K("first"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_add(c, K("a"), K("second"), CACHE_NO_TTL), CACHE_EXISTS);
    CHECK_GET(c, "a", "first");
    /* An expired entry counts as absent. */
    CHECK_EQ(cache_set(c, K("short"), K("old"), 0.05), CACHE_OK);
    sleep_ms(80);
    CHECK_EQ(cache_add(c, K("short"), K("new"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "short", "new");
    /* Flags are stored; an add with TTL 0 stores nothing that can be read. */
    CHECK_EQ(cache_add_flagged(c, K("f"), K("v"), CACHE_NO_TTL, 0xfeedu), CACHE_OK);
    cache_buf b = {0};
    uint32_t flags = 0;
    CHECK_EQ(cache_get_flagged(c, K("f"), &b, &flags), CACHE_OK);
    CHECK_EQ(flags, 0xfeedu);
    cache_buf_free(&b);
    CHECK_EQ(cache_add(c, K("dead"), K("v"), 0), CACHE_OK);
    CHECK_MISS(c, "dead");
    /* An empty value is a value. */
    CHECK_EQ(cache_add(c, K("empty"), NULL, 0, CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_add(c, K("empty"), K("x"), CACHE_NO_TTL), CACHE_EXISTS);
    CHECK_GET(c, "empty", "");
    /* Bad input changes nothing. */
    CHECK_EQ(cache_add(c, K("nan"), K("v"), NAN), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_has(c, K("nan")), CACHE_NOT_FOUND);
    CHECK_EQ(cache_add(c, NULL, 3, K("v"), CACHE_NO_TTL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_add(c, K("k"), NULL, 3, CACHE_NO_TTL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_add(NULL, K("k"), K("v"), CACHE_NO_TTL), CACHE_ERR_INVALID_ARG);
}

static void test_touch_ttl(cache_t *c) {
    double left = 42;
    CHECK_EQ(cache_set(c, K("t"), K("v"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_ttl(c, K("t"), &left), CACHE_OK);
    CHECK(left == CACHE_NO_TTL);
    CHECK_EQ(cache_touch(c, K("t"), 100), CACHE_OK);
    CHECK_EQ(cache_ttl(c, K("t"), &left), CACHE_OK);
    CHECK(left > 90 && left <= 100);
    CHECK_GET(c, "t", "v");
    CHECK_EQ(cache_touch(c, K("t"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_ttl(c, K("t"), &left), CACHE_OK);
    CHECK(left == CACHE_NO_TTL);
    CHECK_EQ(cache_touch(c, K("t"), 0), CACHE_OK); /* expires now */
    CHECK_MISS(c, "t");
    left = 42;
    CHECK_EQ(cache_ttl(c, K("t"), &left), CACHE_NOT_FOUND);
    CHECK(left == 42); /* untouched */
    CHECK_EQ(cache_touch(c, K("absent"), 10), CACHE_NOT_FOUND);
    CHECK_EQ(cache_has(c, K("absent")), CACHE_NOT_FOUND);
    CHECK_EQ(cache_set(c, K("t2"), K("v"), 0.05), CACHE_OK);
    sleep_ms(80);
    CHECK_EQ(cache_touch(c, K("t2"), 100), CACHE_NOT_FOUND); /* expired: absent */
    CHECK_EQ(cache_touch(c, K("t"), NAN), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_ttl(c, K("t"), NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_ttl(c, NULL, 1, &left), CACHE_ERR_INVALID_ARG);
}

static void test_incr(cache_t *c) {
    int64_t v = 0;
    CHECK_EQ(cache_incr(c, K("n"), 1, 100, &v), CACHE_OK);
    CHECK_EQ(v, 1);
    CHECK_GET(c, "n", "1"); /* decimal text, readable by anyone */
    CHECK_EQ(cache_incr(c, K("n"), -5, CACHE_NO_TTL, &v), CACHE_OK);
    CHECK_EQ(v, -4);
    CHECK_GET(c, "n", "-4");
    double left = 0;
    CHECK_EQ(cache_ttl(c, K("n"), &left), CACHE_OK); /* kept the TTL of the first incr */
    CHECK(left > 90 && left <= 100);
    CHECK_EQ(cache_incr(c, K("n"), 10, 5, NULL), CACHE_OK); /* out may be NULL */
    CHECK_GET(c, "n", "6");
    const char *bad[] = {"abc", "", "+5", " 5", "5 ", "1.5", "0x10", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(cache_set(c, K("s"), K(bad[i]), CACHE_NO_TTL), CACHE_OK);
        CHECK_EQ(cache_incr(c, K("s"), 1, CACHE_NO_TTL, &v), CACHE_ERR_NOT_NUMERIC);
        CHECK_GET(c, "s", bad[i]); /* unchanged */
    }
    CHECK_EQ(cache_set(c, K("max"), K("9223372036854775807"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_incr(c, K("max"), 1, CACHE_NO_TTL, &v), CACHE_ERR_NOT_NUMERIC);
    CHECK(strstr(last_error(), "overflow") != NULL);
    CHECK_GET(c, "max", "9223372036854775807");
    CHECK_EQ(cache_incr(c, K("max"), INT64_MIN, CACHE_NO_TTL, &v), CACHE_OK);
    CHECK_EQ(v, -1);
    CHECK_EQ(cache_set(c, K("min"), K("-9223372036854775808"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_incr(c, K("min"), -1, CACHE_NO_TTL, &v), CACHE_ERR_NOT_NUMERIC);
    /* An expired counter starts again at 0. */
    CHECK_EQ(cache_incr(c, K("e"), 7, 0.05, &v), CACHE_OK);
    sleep_ms(80);
    CHECK_EQ(cache_incr(c, K("e"), 1, CACHE_NO_TTL, &v), CACHE_OK);
    CHECK_EQ(v, 1);
    CHECK_EQ(cache_incr(c, K("nan"), 1, NAN, &v), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_has(c, K("nan")), CACHE_NOT_FOUND);
    CHECK_EQ(cache_incr(c, NULL, 2, 1, CACHE_NO_TTL, &v), CACHE_ERR_INVALID_ARG);
}

/* ---- bulk ------------------------------------------------------------------------- */

static void test_bulk(cache_t *c) {
    enum { N = 100 };
    char keys[N][16], vals[N][16];
    cache_entry entries[N];
    cache_slice slices[N + 2];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "bulk-%d", i);
        snprintf(vals[i], sizeof vals[i], "value-%d", i);
        entries[i] = (cache_entry){{(const uint8_t *)keys[i], strlen(keys[i])},
                                   {(const uint8_t *)vals[i], strlen(vals[i])},
                                   CACHE_NO_TTL, (uint32_t)i};
        slices[i] = entries[i].key;
    }
    slices[N] = (cache_slice){(const uint8_t *)"missing", 7};
    slices[N + 1] = (cache_slice){NULL, 0}; /* the empty key, absent */
    CHECK_EQ(cache_set_many(c, entries, N), CACHE_OK);
    cache_buf values[N + 2];
    cache_status statuses[N + 2];
    uint32_t flags[N + 2];
    CHECK_EQ(cache_get_many(c, slices, N + 2, values, statuses, flags), CACHE_OK);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(statuses[i], CACHE_OK);
        CHECK(buf_equals(&values[i], vals[i]));
        CHECK_EQ(flags[i], i);
        cache_buf_free(&values[i]);
    }
    CHECK_EQ(statuses[N], CACHE_NOT_FOUND);
    CHECK(values[N].data == NULL && values[N].len == 0);
    CHECK_EQ(statuses[N + 1], CACHE_NOT_FOUND);
    /* flags may be NULL. */
    CHECK_EQ(cache_get_many(c, slices, 1, values, statuses, NULL), CACHE_OK);
    cache_buf_free(&values[0]);

    /* A repeated key: the last one wins. */
    cache_entry twice[2] = {entries[0], entries[1]};
    twice[1].key = entries[0].key;
    CHECK_EQ(cache_set_many(c, twice, 2), CACHE_OK);
    CHECK_GET(c, "bulk-0", "value-1");

    /* n = 0 with NULL arrays. */
    uint64_t deleted = 99;
    CHECK_EQ(cache_set_many(c, NULL, 0), CACHE_OK);
    CHECK_EQ(cache_get_many(c, NULL, 0, NULL, NULL, NULL), CACHE_OK);
    CHECK_EQ(cache_delete_many(c, NULL, 0, &deleted), CACHE_OK);
    CHECK_EQ(deleted, 0);

    /* Bad input: nothing happens, nothing is allocated. */
    CHECK_EQ(cache_set_many(c, NULL, 3), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get_many(c, NULL, 3, values, statuses, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get_many(c, slices, 3, NULL, statuses, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get_many(c, slices, 3, values, NULL, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_delete_many(c, NULL, 3, NULL), CACHE_ERR_INVALID_ARG);
    cache_entry bad[3];
    for (int i = 0; i < 3; i++) {
        bad[i] = entries[i];
        bad[i].value = (cache_slice){(const uint8_t *)"new", 3};
    }
    bad[2].value = (cache_slice){NULL, 5};
    CHECK_EQ(cache_set_many(c, bad, 3), CACHE_ERR_INVALID_ARG);
    CHECK(strstr(last_error(), "entries[2].value") != NULL);
    CHECK_GET(c, "bulk-1", "value-1"); /* the first entries were not stored either */
    bad[2] = entries[2];
    bad[2].ttl_seconds = NAN;
    CHECK_EQ(cache_set_many(c, bad, 3), CACHE_ERR_INVALID_ARG);
    CHECK_GET(c, "bulk-1", "value-1");
    cache_slice bad_keys[2] = {slices[0], {NULL, 4}};
    CHECK_EQ(cache_get_many(c, bad_keys, 2, values, statuses, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_delete_many(c, bad_keys, 2, &deleted), CACHE_ERR_INVALID_ARG);
    CHECK_GET(c, "bulk-0", "value-1");

    /* A dead-on-arrival entry removes its key. */
    cache_entry dead = entries[3];
    dead.ttl_seconds = 0;
    CHECK_EQ(cache_set_many(c, &dead, 1), CACHE_OK);
    CHECK_MISS(c, "bulk-3");

    CHECK_EQ(cache_delete_many(c, slices, N + 2, &deleted), CACHE_OK);
    CHECK_EQ(deleted, N - 1); /* bulk-3 was gone already */
    CHECK_EQ(cache_delete_many(c, slices, N, NULL), CACHE_OK);
    CHECK_MISS(c, "bulk-5");
}

/* ---- keys, delete_prefix, purge_expired ------------------------------------------ */

struct walk {
    cache_t *c;
    int seen[2000];
    int visits, stop_after;
    int delete_each, set_new;
};

static int visit_key(void *user, const uint8_t *key, size_t len) {
    struct walk *w = user;
    char k[64];
    CHECK(len < sizeof k);
    memcpy(k, key, len);
    k[len] = 0;
    int i = -1;
    CHECK_EQ(sscanf(k, "p:%d", &i), 1);
    CHECK(i >= 0 && i < 2000);
    w->seen[i]++;
    w->visits++;
    if (w->delete_each) CHECK_EQ(cache_delete(w->c, key, len), CACHE_OK);
    if (w->set_new) {
        char fresh[32];
        snprintf(fresh, sizeof fresh, "new:%d", w->visits);
        CHECK_EQ(cache_set(w->c, K(fresh), K("x"), CACHE_NO_TTL), CACHE_OK);
    }
    return w->stop_after && w->visits >= w->stop_after;
}

static void fill_prefix(cache_t *c, int n) {
    char key[32];
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "p:%d", i);
        CHECK_EQ(cache_set(c, K(key), K("v"), CACHE_NO_TTL), CACHE_OK);
    }
}

/* A remote server expires entries itself: purge_expired has nothing to remove. */
static int remote_kind;

static void test_keys(cache_t *c) {
    int n = SCALE(1000, 300);
    CHECK_EQ(cache_clear(c), CACHE_OK);
    fill_prefix(c, n);
    CHECK_EQ(cache_set(c, K("q:1"), K("v"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, K("p"), K("v"), CACHE_NO_TTL), CACHE_OK); /* shorter than the prefix */
    CHECK_EQ(cache_set(c, K("p:expired"), K("v"), 0.05), CACHE_OK);
    sleep_ms(80);
    static struct walk w;
    memset(&w, 0, sizeof w);
    w.c = c;
    CHECK_EQ(cache_keys(c, K("p:"), visit_key, &w), CACHE_OK);
    CHECK_EQ(w.visits, n);
    for (int i = 0; i < n; i++) CHECK_EQ(w.seen[i], 1); /* each exactly once */

    memset(&w, 0, sizeof w);
    w.c = c;
    w.stop_after = 5;
    CHECK_EQ(cache_keys(c, K("p:"), visit_key, &w), CACHE_OK);
    CHECK_EQ(w.visits, 5);

    /* A visitor that sets new keys, on this very handle, finishes. */
    memset(&w, 0, sizeof w);
    w.c = c;
    w.set_new = 1;
    CHECK_EQ(cache_keys(c, K("p:"), visit_key, &w), CACHE_OK);
    CHECK_EQ(w.visits, n);
    for (int i = 0; i < n; i++) CHECK_EQ(w.seen[i], 1);
    uint64_t deleted = 0;
    CHECK_EQ(cache_delete_prefix(c, K("new:"), &deleted), CACHE_OK);
    CHECK_EQ(deleted, n);

    /* A visitor that deletes every key it sees finishes, and they are gone. */
    memset(&w, 0, sizeof w);
    w.c = c;
    w.delete_each = 1;
    CHECK_EQ(cache_keys(c, K("p:"), visit_key, &w), CACHE_OK);
    CHECK_EQ(w.visits, n);
    uint64_t len = 0;
    CHECK_EQ(cache_len(c, &len), CACHE_OK);
    CHECK_EQ(len, 2); /* "q:1" and "p" */

    /* The empty prefix walks everything. */
    memset(&w, 0, sizeof w);
    w.c = c;
    fill_prefix(c, 10);
    CHECK_EQ(cache_delete(c, K("q:1")), CACHE_OK);
    CHECK_EQ(cache_delete(c, K("p")), CACHE_OK);
    CHECK_EQ(cache_keys(c, NULL, 0, visit_key, &w), CACHE_OK);
    CHECK_EQ(w.visits, 10);

    CHECK_EQ(cache_keys(c, K("p:"), NULL, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_keys(c, NULL, 2, visit_key, &w), CACHE_ERR_INVALID_ARG);

    /* delete_prefix counts live keys only; other keys stay. */
    CHECK_EQ(cache_set(c, K("p:gone"), K("v"), 0.05), CACHE_OK);
    CHECK_EQ(cache_set(c, K("keep"), K("v"), CACHE_NO_TTL), CACHE_OK);
    const uint8_t ff[2] = {0xff, 0xff}, ff0[3] = {0xff, 0xff, 0x00}, fe[2] = {0xff, 0xfe};
    CHECK_EQ(cache_set(c, ff0, 3, K("v"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, fe, 2, K("v"), CACHE_NO_TTL), CACHE_OK);
    sleep_ms(80);
    CHECK_EQ(cache_delete_prefix(c, K("p:"), &deleted), CACHE_OK);
    CHECK_EQ(deleted, 10);
    CHECK_EQ(cache_delete_prefix(c, ff, 2, &deleted), CACHE_OK); /* no upper bound exists */
    CHECK_EQ(deleted, 1);
    CHECK_EQ(cache_has(c, fe, 2), CACHE_OK);
    CHECK_GET(c, "keep", "v");
    CHECK_EQ(cache_delete_prefix(c, NULL, 0, NULL), CACHE_OK);
    CHECK_EQ(cache_len(c, &len), CACHE_OK);
    CHECK_EQ(len, 0);
    CHECK_EQ(cache_delete_prefix(c, NULL, 3, NULL), CACHE_ERR_INVALID_ARG);

    /* purge_expired removes exactly the expired entries (delete_prefix may have left
     * the expired "p:gone"). */
    CHECK_EQ(cache_purge_expired(c, NULL), CACHE_OK);
    char key[16];
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof key, "x%d", i);
        CHECK_EQ(cache_set(c, K(key), K("v"), 0.05), CACHE_OK);
    }
    CHECK_EQ(cache_set(c, K("live"), K("v"), CACHE_NO_TTL), CACHE_OK);
    sleep_ms(80);
    uint64_t removed = 0;
    CHECK_EQ(cache_purge_expired(c, &removed), CACHE_OK);
    CHECK_EQ(removed, remote_kind ? 0 : 5);
    CHECK_EQ(cache_len(c, &len), CACHE_OK);
    CHECK_EQ(len, 1); /* only "live" */
    CHECK_EQ(cache_purge_expired(c, NULL), CACHE_OK);
    CHECK_GET(c, "live", "v");
}

/* ---- get_or_compute -------------------------------------------------------------- */

struct compute {
    atomic_int calls;
    cache_status status; /* returned by the compute */
    const char *value;   /* put when not NULL */
    int sleep_ms, put_twice, reenter;
    cache_t *c;
    atomic_int *gate; /* when set: wait until it is non-zero (5 s at most) */
};

static cache_status compute_fn(void *user, const uint8_t *key, size_t len, cache_sink *sink) {
    struct compute *cp = user;
    atomic_fetch_add(&cp->calls, 1);
    if (cp->sleep_ms) sleep_ms(cp->sleep_ms);
    if (cp->gate)
        for (int i = 0; i < 500 && !atomic_load(cp->gate); i++) sleep_ms(10);
    if (cp->reenter) {
        cache_buf b = {0};
        CHECK_EQ(cache_get_or_compute(cp->c, key, len, compute_fn, cp, &b, NULL), CACHE_ERR_BUSY);
        CHECK(strstr(last_error(), "same key") != NULL);
        /* Any other call works, on this handle too. */
        CHECK_EQ(cache_set(cp->c, K("other"), K("o"), CACHE_NO_TTL), CACHE_OK);
    }
    if (cp->value) {
        CHECK_EQ(cache_sink_put(sink, K(cp->value), 100, 7u), CACHE_OK);
        if (cp->put_twice) CHECK_EQ(cache_sink_put(sink, K("again"), 100, 7u), CACHE_ERR_INVALID_ARG);
    }
    return cp->status;
}

struct goc_thread {
    cache_t *c;
    const char *key;
    struct compute *cp;
    cache_status status;
    char got[32];
};

static void *goc_worker(void *arg) {
    struct goc_thread *t = arg;
    cache_buf b = {0};
    t->status = cache_get_or_compute(t->c, K(t->key), compute_fn, t->cp, &b, NULL);
    if (t->status == CACHE_OK) {
        CHECK(b.len < sizeof t->got);
        memcpy(t->got, b.data, b.len);
        t->got[b.len] = 0;
        cache_buf_free(&b);
    }
    return NULL;
}

static atomic_int async_done;
static void goc_callback(void *user, cache_status status, const uint8_t *v, size_t len, uint32_t flags) {
    char *out = user;
    CHECK_EQ(status, CACHE_OK);
    CHECK(len < 32);
    memcpy(out, v, len);
    out[len] = 0;
    (void)flags;
    atomic_fetch_add(&async_done, 1);
}

static void test_get_or_compute(cache_t *c) {
    struct compute cp = {0};
    cp.value = "computed";
    cache_buf b = {0};
    uint32_t flags = 0;
    CHECK_EQ(cache_get_or_compute(c, K("g"), compute_fn, &cp, &b, &flags), CACHE_OK);
    CHECK(buf_equals(&b, "computed"));
    CHECK_EQ(flags, 7);
    cache_buf_free(&b);
    CHECK_EQ(cp.calls, 1);
    double left = 0;
    CHECK_EQ(cache_ttl(c, K("g"), &left), CACHE_OK); /* stored with the sink's TTL */
    CHECK(left > 90 && left <= 100);
    /* A hit: compute is not called. */
    CHECK_EQ(cache_get_or_compute(c, K("g"), compute_fn, &cp, &b, NULL), CACHE_OK);
    cache_buf_free(&b);
    CHECK_EQ(cp.calls, 1);

    /* A failing compute stores nothing and its status is returned. */
    struct compute fail = {0};
    fail.status = CACHE_ERR_IO;
    fail.value = "ignored";
    b = (cache_buf){(uint8_t *)1, 3};
    CHECK_EQ(cache_get_or_compute(c, K("f"), compute_fn, &fail, &b, NULL), CACHE_ERR_IO);
    CHECK_EQ(cache_has(c, K("f")), CACHE_NOT_FOUND);
    /* CACHE_OK without a value: NOT_FOUND, nothing stored. */
    struct compute none = {0};
    CHECK_EQ(cache_get_or_compute(c, K("f"), compute_fn, &none, &b, NULL), CACHE_NOT_FOUND);
    CHECK(b.data == NULL && b.len == 0);
    CHECK_EQ(cache_has(c, K("f")), CACHE_NOT_FOUND);
    /* A status that is no cache_status. */
    struct compute odd = {0};
    odd.status = (cache_status)12345;
    CHECK_EQ(cache_get_or_compute(c, K("f"), compute_fn, &odd, &b, NULL), CACHE_ERR_INVALID_ARG);
    CHECK(strstr(last_error(), "12345") != NULL);
    /* A second sink_put is refused; the first value stands. */
    struct compute twice = {0};
    twice.value = "first";
    twice.put_twice = 1;
    CHECK_EQ(cache_get_or_compute(c, K("tw"), compute_fn, &twice, &b, NULL), CACHE_OK);
    CHECK(buf_equals(&b, "first"));
    cache_buf_free(&b);
    /* Re-entry for the same key on the same handle: BUSY inside, the outer call goes on. */
    struct compute re = {0};
    re.value = "outer";
    re.reenter = 1;
    re.c = c;
    CHECK_EQ(cache_get_or_compute(c, K("re"), compute_fn, &re, &b, NULL), CACHE_OK);
    CHECK(buf_equals(&b, "outer"));
    cache_buf_free(&b);
    CHECK_GET(c, "other", "o");
    /* Bad input. */
    CHECK_EQ(cache_get_or_compute(c, K("x"), NULL, NULL, &b, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get_or_compute(c, K("x"), compute_fn, &cp, NULL, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get_or_compute(c, NULL, 1, compute_fn, &cp, &b, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_sink_put(NULL, K("v"), 1, 0), CACHE_ERR_INVALID_ARG);

    /* 16 threads asking for one missing key: one compute, everyone gets its value. */
    enum { T = 16 };
    struct compute slow = {0};
    slow.value = "shared";
    slow.sleep_ms = 200;
    pthread_t th[T];
    struct goc_thread args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (struct goc_thread){c, "stampede", &slow, CACHE_ERR_INTERNAL, ""};
        CHECK_EQ(pthread_create(&th[i], NULL, goc_worker, &args[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        CHECK_EQ(pthread_join(th[i], NULL), 0);
        CHECK_EQ(args[i].status, CACHE_OK);
        CHECK_EQ(strcmp(args[i].got, "shared"), 0);
    }
    CHECK_EQ(slow.calls, 1);

    /* Every waiter of a failing compute gets its status. */
    struct compute slow_fail = {0};
    slow_fail.status = CACHE_ERR_TOO_LARGE;
    slow_fail.sleep_ms = 200;
    for (int i = 0; i < 4; i++) {
        args[i] = (struct goc_thread){c, "fails", &slow_fail, CACHE_OK, ""};
        CHECK_EQ(pthread_create(&th[i], NULL, goc_worker, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(pthread_join(th[i], NULL), 0);
        CHECK_EQ(args[i].status, CACHE_ERR_TOO_LARGE);
    }
    CHECK(slow_fail.calls >= 1);
    CHECK_EQ(cache_has(c, K("fails")), CACHE_NOT_FOUND);

    /* A compute that waits does not block other keys: key A's compute waits until
     * key B's get_or_compute is done (if B waited for A, the gate would time out). */
    atomic_int gate = 0;
    struct compute waits = {0}, quick = {0};
    waits.value = "A";
    waits.gate = &gate;
    quick.value = "B";
    args[0] = (struct goc_thread){c, "key-A", &waits, CACHE_ERR_INTERNAL, ""};
    CHECK_EQ(pthread_create(&th[0], NULL, goc_worker, &args[0]), 0);
    while (atomic_load(&waits.calls) == 0) sleep_ms(1);
    CHECK_EQ(cache_get_or_compute(c, K("key-B"), compute_fn, &quick, &b, NULL), CACHE_OK);
    cache_buf_free(&b);
    CHECK_EQ(atomic_load(&gate), 0); /* A is still computing */
    atomic_store(&gate, 1);
    CHECK_EQ(pthread_join(th[0], NULL), 0);
    CHECK_EQ(args[0].status, CACHE_OK);

    /* The async form runs in the handle's FIFO order: after the queued set. */
    static char got1[32], got2[32];
    struct compute never = {0};
    never.value = "not used";
    struct compute on_worker = {0};
    on_worker.value = "from worker";
    atomic_store(&async_done, 0);
    CHECK_EQ(cache_set_async(c, K("aq"), K("queued"), CACHE_NO_TTL, NULL, NULL), CACHE_OK);
    CHECK_EQ(cache_get_or_compute_async(c, K("aq"), compute_fn, &never, goc_callback, got1), CACHE_OK);
    CHECK_EQ(cache_get_or_compute_async(c, K("aw"), compute_fn, &on_worker, goc_callback, got2), CACHE_OK);
    for (int i = 0; i < 20000 && atomic_load(&async_done) < 2; i++) sleep_ms(1);
    CHECK_EQ(atomic_load(&async_done), 2);
    CHECK_EQ(strcmp(got1, "queued"), 0);
    CHECK_EQ(never.calls, 0);
    CHECK_EQ(strcmp(got2, "from worker"), 0);
    CHECK_EQ(on_worker.calls, 1);
    CHECK_EQ(cache_get_or_compute_async(c, K("x"), NULL, NULL, goc_callback, got1), CACHE_ERR_INVALID_ARG);
}

/* A 1 MiB key through every new call. */
static void test_huge_key(cache_t *c) {
    size_t n = 1 << 20;
    uint8_t *key = malloc(n);
    CHECK(key != NULL);
    fill(key, n, 3);
    int64_t v;
    double left;
    cache_status added = cache_add(c, key, n, K("v"), CACHE_NO_TTL);
    if (added == CACHE_ERR_TOO_LARGE) { /* the small shards of the sharded run */
        CHECK(strstr(last_error(), "a shard holds at most") != NULL);
        CHECK_EQ(cache_incr(c, key, n, 3, CACHE_NO_TTL, &v), CACHE_ERR_TOO_LARGE);
        free(key);
        return;
    }
    CHECK_EQ(added, CACHE_OK);
    CHECK_EQ(cache_add(c, key, n, K("w"), CACHE_NO_TTL), CACHE_EXISTS);
    CHECK_EQ(cache_touch(c, key, n, 50), CACHE_OK);
    CHECK_EQ(cache_ttl(c, key, n, &left), CACHE_OK);
    CHECK_EQ(cache_delete(c, key, n), CACHE_OK);
    CHECK_EQ(cache_incr(c, key, n, 3, CACHE_NO_TTL, &v), CACHE_OK);
    CHECK_EQ(v, 3);
    cache_slice s = {key, n};
    cache_buf b;
    cache_status st;
    CHECK_EQ(cache_get_many(c, &s, 1, &b, &st, NULL), CACHE_OK);
    CHECK_EQ(st, CACHE_OK);
    CHECK(buf_equals(&b, "3"));
    cache_buf_free(&b);
    uint64_t deleted;
    CHECK_EQ(cache_delete_prefix(c, key, 1000, &deleted), CACHE_OK);
    CHECK_EQ(deleted, 1);
    free(key);
}

static void test_closed(cache_t *c) {
    CHECK_EQ(cache_close(c), CACHE_OK);
    int64_t v;
    double left;
    cache_buf b;
    cache_status st;
    uint64_t n;
    cache_slice s = {(const uint8_t *)"k", 1};
    cache_entry e = {s, s, CACHE_NO_TTL, 0};
    struct compute cp = {0};
    cp.value = "v";
    struct walk w = {0};
    CHECK_EQ(cache_add(c, K("k"), K("v"), CACHE_NO_TTL), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_touch(c, K("k"), 1), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_ttl(c, K("k"), &left), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_incr(c, K("k"), 1, CACHE_NO_TTL, &v), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_get_or_compute(c, K("k"), compute_fn, &cp, &b, NULL), CACHE_ERR_CLOSED);
    CHECK_EQ(cp.calls, 0);
    CHECK_EQ(cache_get_many(c, &s, 1, &b, &st, NULL), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_set_many(c, &e, 1), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_delete_many(c, &s, 1, &n), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_keys(c, NULL, 0, visit_key, &w), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_delete_prefix(c, NULL, 0, &n), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_purge_expired(c, &n), CACHE_ERR_CLOSED);
    cache_free(c);
}

/* ---- across processes ------------------------------------------------------------ */

/* Children that each open `uri` and run `body`, which returns a count (< 256) as the
 * exit status; returns the sum. */
static int in_children(const char *uri, int children, int (*body)(cache_t *, int)) {
    pid_t pids[16];
    for (int i = 0; i < children; i++) {
        pids[i] = fork();
        CHECK(pids[i] >= 0);
        if (pids[i] == 0) {
            cache_t *c = NULL;
            if (cache_open(uri, &c) != CACHE_OK) _exit(255);
            int n = body(c, i);
            cache_free(c);
            _exit(n);
        }
    }
    int total = 0;
    for (int i = 0; i < children; i++) {
        int status;
        CHECK_EQ(waitpid(pids[i], &status, 0), pids[i]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 255);
        total += WEXITSTATUS(status);
    }
    return total;
}

static int incr_body(cache_t *c, int child) {
    (void)child;
    for (int i = 0; i < SCALE(100, 20); i++)
        if (cache_incr(c, K("counter"), 1, CACHE_NO_TTL, NULL) != CACHE_OK) return 255;
    return 0;
}

static int add_body(cache_t *c, int child) {
    (void)child;
    int won = 0;
    for (int i = 0; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof key, "race-%d", i);
        cache_status s = cache_add(c, K(key), K("v"), CACHE_NO_TTL);
        if (s == CACHE_OK) won++;
        else if (s != CACHE_EXISTS) return 255;
    }
    return won;
}

/* Pops and adds racing on one key: every add that stored is popped once, or is the
 * entry left at the end. Returns adds - pops + 128 (a net count, offset to stay >= 0). */
static int pop_add_body(cache_t *c, int child) {
    (void)child;
    int adds = 0, pops = 0;
    for (int i = 0; i < SCALE(60, 15); i++) {
        cache_buf b = {0};
        cache_status s = cache_pop(c, K("pa"), &b);
        if (s == CACHE_OK) {
            pops++;
            cache_buf_free(&b);
        } else if (s != CACHE_NOT_FOUND) return 255;
        s = cache_add(c, K("pa"), K("v"), CACHE_NO_TTL);
        if (s == CACHE_OK) adds++;
        else if (s != CACHE_EXISTS) return 255;
    }
    return adds - pops + 100;
}

/* The parent holds no handle while children run: a forked child would inherit the
 * parent's open connections as memory it can no longer free (valgrind reports it). */
static cache_t *open_uri(const char *uri) {
    cache_t *c = NULL;
    CHECK_EQ(cache_open(uri, &c), CACHE_OK);
    return c;
}

static void test_processes(const char *uri) {
    int children = 4;
    cache_t *c = open_uri(uri);
    CHECK_EQ(cache_clear(c), CACHE_OK);
    cache_free(c);
    CHECK_EQ(in_children(uri, children, incr_body), 0);
    c = open_uri(uri);
    char want[16];
    snprintf(want, sizeof want, "%d", children * SCALE(100, 20));
    CHECK_GET(c, "counter", want);
    cache_free(c);
    CHECK_EQ(in_children(uri, children, add_body), 20); /* one winner per key */
    c = open_uri(uri);
    CHECK_EQ(cache_set(c, K("pa"), K("v"), CACHE_NO_TTL), CACHE_OK);
    cache_free(c);
    int net = in_children(uri, children, pop_add_body) - 100 * children;
    c = open_uri(uri);
    cache_status present = cache_has(c, K("pa"));
    CHECK_EQ(1 + net, present == CACHE_OK ? 1 : 0);
    cache_free(c);
}

/* ---- the memory kind's byte bound --------------------------------------------------- */

struct bytes_arg {
    cache_t *c;
    int id;
};

/* Writers done (the watcher stops), and the most bytes the watcher saw. */
static atomic_int writers_done;
static uint64_t most_bytes_seen;

/* Reads the cache's bytes over and over while the writers run. */
static void *byte_watcher(void *p) {
    cache_t *c = p;
    most_bytes_seen = 0;
    while (!atomic_load(&writers_done)) {
        cache_stats st;
        CHECK_EQ(cache_get_stats(c, &st), CACHE_OK);
        if (st.bytes > most_bytes_seen) most_bytes_seen = st.bytes;
        if (small_scale()) sched_yield(); /* valgrind runs one thread at a time: let writers run */
    }
    return NULL;
}

static void *byte_writer(void *p) {
    struct bytes_arg *a = p;
    static uint8_t value[3000];
    char key[32];
    unsigned seed = (unsigned)a->id * 2654435761u + 7;
    for (int i = 0; i < SCALE(3000, 300); i++) {
        seed = seed * 1103515245u + 12345u;
        snprintf(key, sizeof key, "t%d-%u", a->id, (seed >> 8) % 500);
        size_t len = (seed >> 4) % sizeof value;
        if (i % 3 == 2) { /* set-if-absent and counters go through the same bound */
            cache_status st = cache_add(a->c, K(key), value, len, CACHE_NO_TTL);
            CHECK(st == CACHE_OK || st == CACHE_EXISTS);
            int64_t n = 0;
            snprintf(key, sizeof key, "count-%u", (seed >> 8) % 50);
            CHECK_EQ(cache_incr(a->c, K(key), 1, CACHE_NO_TTL, &n), CACHE_OK);
        } else {
            CHECK_EQ(cache_set(a->c, K(key), value, len, CACHE_NO_TTL), CACHE_OK);
        }
    }
    return NULL;
}

/* max_bytes: keys and values held stay within it (either policy evicting), 8 threads
 * writing, at every moment a ninth thread looks; an entry larger than the bound is
 * refused and changes nothing. */
static void test_byte_bound(const char *uri) {
    fprintf(stderr, "  byte bound, %s\n", uri);
    cache_t *c = NULL;
    CHECK_EQ(cache_open(uri, &c), CACHE_OK);
    static uint8_t big[200 * 1024];
    CHECK_EQ(cache_set(c, K("keep"), K("v"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, K("big"), big, sizeof big, CACHE_NO_TTL), CACHE_ERR_TOO_LARGE);
    CHECK(strstr(last_error(), "max_bytes") != NULL);
    CHECK_GET(c, "keep", "v");
    pthread_t th[8], watcher;
    struct bytes_arg args[8];
    atomic_store(&writers_done, 0);
    CHECK_EQ(pthread_create(&watcher, NULL, byte_watcher, c), 0);
    for (int i = 0; i < 8; i++) {
        args[i] = (struct bytes_arg){c, i};
        CHECK_EQ(pthread_create(&th[i], NULL, byte_writer, &args[i]), 0);
    }
    for (int i = 0; i < 8; i++) CHECK_EQ(pthread_join(th[i], NULL), 0);
    atomic_store(&writers_done, 1);
    CHECK_EQ(pthread_join(watcher, NULL), 0);
    CHECK(most_bytes_seen <= 100 * 1024);
    cache_stats st;
    CHECK_EQ(cache_get_stats(c, &st), CACHE_OK);
    CHECK(st.bytes <= 100 * 1024);
    CHECK(st.bytes > 50 * 1024); /* evicted down to the bound, not far below it */
    CHECK(st.entries <= 1000 && st.evictions > 0);
    cache_free(c);
}

/* ---- the kinds ----------------------------------------------------------------- */

static void run_kind(const char *uri) {
    fprintf(stderr, "  %s\n", uri);
    cache_t *c = NULL;
    CHECK_EQ(cache_open(uri, &c), CACHE_OK);
    test_add(c);
    test_touch_ttl(c);
    test_incr(c);
    test_bulk(c);
    test_keys(c);
    test_get_or_compute(c);
    test_huge_key(c);
    test_closed(c);
}

int main(void) {
    char dir[256], uri[512];
    const char *persistent[3] = {"file:%s/file", "sharded:%s/sharded?shard_size_limit=4KiB&max_open_shards=2",
                                 "folder:%s/folder"};
    make_tmpdir(dir, sizeof dir);
    /* Processes first: a child forked while the async workers' threads run would hold
     * their memory unreachable (valgrind then reports it lost in the child). */
    for (int i = 0; i < 3; i++) {
        char sub[300];
        snprintf(sub, sizeof sub, "%s/procs", dir);
        snprintf(uri, sizeof uri, persistent[i], sub);
        fprintf(stderr, "  processes on %s\n", uri);
        test_processes(uri);
    }
    /* The Redis/Valkey kind, when a server is given (make test starts one: tools/with-redis). */
    const char *redis = getenv("DUCKCACHE_REDIS_URL");
    char redis_uri[600] = "";
    if (redis != NULL) {
        snprintf(redis_uri, sizeof redis_uri, "%s%cprefix=test-v2-%ld:", redis, strchr(redis, '?') ? '&' : '?',
                 (long)getpid());
        fprintf(stderr, "  processes on %s\n", redis_uri);
        test_processes(redis_uri);
    }
    test_open_errors(dir);
    run_kind("memory:");
    run_kind("memory:?max_keys=100000");
    run_kind("memory:?max_bytes=64MiB");
    run_kind("memory:?max_keys=100000&policy=s3fifo");
    run_kind("memory:?max_bytes=64MiB&policy=s3fifo");
    test_byte_bound("memory:?max_bytes=100KiB&max_keys=1000");
    test_byte_bound("memory:?max_bytes=100KiB&max_keys=1000&policy=s3fifo");
    /* (The sharded run has small shards, so writes roll over to new ones.) */
    for (int i = 0; i < 3; i++) {
        snprintf(uri, sizeof uri, persistent[i], dir);
        run_kind(uri);
    }
    if (redis != NULL) {
        remote_kind = 1;
        run_kind(redis_uri);
    } else {
        fprintf(stderr, "  (no DUCKCACHE_REDIS_URL: the Redis kind is tested by make test, which starts a server)\n");
    }
    remove_tree(dir);
    puts("test_v2: all passed");
    return 0;
}
