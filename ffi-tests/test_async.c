/* The asynchronous functions on every backend: many operations from several threads
 * mixed with synchronous calls, per-handle ordering, every callback exactly once,
 * close and free with work queued and from inside a callback, NULL callbacks, closed
 * handles, bad input, and process exit with work still queued. */
#include "persistent.h"
#include <pthread.h>
#include <math.h>
#include <stdatomic.h>

#define THREADS 4

static int ops_per_thread(void) { return small_scale() ? 150 : 1500; }

/* One submitted operation's record: how often its callback ran, and what it saw. */
typedef struct {
    atomic_int calls;
    atomic_int status;
    int expect_value; /* for ordered gets: the value the callback must see */
} slot;

static void count_cb(void *user, cache_status status, const uint8_t *value, size_t len) {
    slot *s = user;
    atomic_store(&s->status, status);
    if (s->expect_value >= 0) {
        /* a get queued right after the set of this value must see it */
        char want[16];
        snprintf(want, sizeof want, "v%d", s->expect_value);
        if (status != CACHE_OK || len != strlen(want) || memcmp(value, want, len) != 0) {
            fprintf(stderr, "ordered get saw status %d, %.*s; want %s\n", status, (int)len,
                    value ? (const char *)value : "", want);
            abort();
        }
    }
    atomic_fetch_add(&s->calls, 1);
}

typedef struct {
    cache_t *c;
    int id;
    slot *slots;
} worker_args;

/* Mixed async work on shared keys plus sync calls, and an ordered set-then-get stream on
 * keys of its own. */
static void *submitter(void *p) {
    worker_args *a = p;
    int n = ops_per_thread();
    for (int i = 0; i < n; i++) {
        slot *s = &a->slots[i];
        s->expect_value = -1;
        char key[32], value[16];
        snprintf(key, sizeof key, "shared-%d", i % 50);
        snprintf(value, sizeof value, "v%d", i);
        int st;
        switch (i % 6) {
        case 0: st = cache_set_async(a->c, K(key), K(value), CACHE_NO_TTL, count_cb, s); break;
        case 1: st = cache_get_async(a->c, K(key), count_cb, s); break;
        case 2: st = cache_pop_async(a->c, K(key), count_cb, s); break;
        case 3: st = cache_delete_async(a->c, K(key), count_cb, s); break;
        case 4: {
            /* ordered: set then get of a key only this thread writes */
            char own[32];
            snprintf(own, sizeof own, "own-%d", a->id);
            CHECK_EQ(cache_set_async(a->c, K(own), K(value), CACHE_NO_TTL, NULL, NULL), CACHE_OK);
            s->expect_value = i;
            st = cache_get_async(a->c, K(own), count_cb, s);
            break;
        }
        default: {
            /* a synchronous call in between, then an async one */
            cache_buf b = {0};
            int g = cache_get(a->c, K(key), &b);
            CHECK(g == CACHE_OK || g == CACHE_NOT_FOUND);
            cache_buf_free(&b);
            st = cache_set_async(a->c, K(key), K(value), 60.0, count_cb, s);
        }
        }
        CHECK_EQ(st, CACHE_OK);
    }
    return NULL;
}

static void test_many_threads(cache_t *c) {
    pthread_t threads[THREADS];
    worker_args args[THREADS];
    int n = ops_per_thread();
    for (int t = 0; t < THREADS; t++) {
        args[t].c = c;
        args[t].id = t;
        args[t].slots = calloc((size_t)n, sizeof(slot));
        CHECK(args[t].slots != NULL);
        CHECK_EQ(pthread_create(&threads[t], NULL, submitter, &args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) CHECK_EQ(pthread_join(threads[t], NULL), 0);
    /* close drains: every callback has returned when it does */
    CHECK_EQ(cache_close(c), CACHE_OK);
    for (int t = 0; t < THREADS; t++) {
        for (int i = 0; i < n; i++) {
            CHECK_EQ(atomic_load(&args[t].slots[i].calls), 1);
            int st = atomic_load(&args[t].slots[i].status);
            CHECK(st == CACHE_OK || st == CACHE_NOT_FOUND);
        }
        free(args[t].slots);
    }
}

/* --- callbacks that call back into the library --- */

typedef struct {
    cache_t *c;
    atomic_int done;
    atomic_int close_status;
    atomic_int nested_calls;
} reentrant;

static void nested_cb(void *user, cache_status status, const uint8_t *value, size_t len) {
    reentrant *r = user;
    CHECK_EQ(status, CACHE_OK);
    CHECK(len == 6 && memcmp(value, "nested", 6) == 0);
    atomic_fetch_add(&r->nested_calls, 1);
}

static void reenter_cb(void *user, cache_status status, const uint8_t *value, size_t len) {
    (void)value;
    (void)len;
    reentrant *r = user;
    CHECK_EQ(status, CACHE_OK);
    /* synchronous calls on the same handle, and more queued work */
    CHECK_EQ(cache_set(r->c, K("nested"), K("nested"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(r->c, "nested", "nested");
    CHECK_EQ(cache_get_async(r->c, K("nested"), nested_cb, r), CACHE_OK);
    /* closing from inside its own callback must not deadlock */
    atomic_store(&r->close_status, cache_close(r->c));
    atomic_fetch_add(&r->done, 1);
}

static void free_inside_cb(void *user, cache_status status, const uint8_t *value, size_t len) {
    (void)status;
    (void)value;
    (void)len;
    reentrant *r = user;
    cache_free(r->c); /* deferred until the queue is empty */
    atomic_fetch_add(&r->done, 1);
}

/* Holds the handle's queue until the test opens the gate. */
static void gate_cb(void *user, cache_status status, const uint8_t *value, size_t len) {
    (void)status;
    (void)value;
    (void)len;
    atomic_int *gate = user;
    while (!atomic_load(gate)) sleep_ms(1);
}

static void after_free_cb(void *user, cache_status status, const uint8_t *value, size_t len) {
    (void)value;
    (void)len;
    reentrant *r = user;
    CHECK_EQ(status, CACHE_OK); /* queued before the free: still runs, on a live handle */
    atomic_fetch_add(&r->nested_calls, 1);
}

static void never_cb(void *user, cache_status status, const uint8_t *value, size_t len) {
    (void)user;
    (void)status;
    (void)value;
    (void)len;
    fprintf(stderr, "a callback ran for an operation that was not queued\n");
    abort();
}

static void wait_for(atomic_int *v, int want) {
    for (int i = 0; i < 20000 && atomic_load(v) < want; i++) sleep_ms(1);
    CHECK_EQ(atomic_load(v), want);
}

static void test_reentrancy(opener open, const char *dir) {
    reentrant r = {0};
    CHECK_EQ(open(dir, &r.c), CACHE_OK);
    CHECK_EQ(cache_set_async(r.c, K("k"), K("v"), CACHE_NO_TTL, reenter_cb, &r), CACHE_OK);
    wait_for(&r.done, 1);
    CHECK_EQ(atomic_load(&r.close_status), CACHE_ERR_BUSY);
    wait_for(&r.nested_calls, 1);
    CHECK_EQ(cache_close(r.c), CACHE_OK); /* from outside: drains and closes */
    CHECK_EQ(cache_get_async(r.c, K("k"), never_cb, NULL), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_clear_async(r.c, never_cb, NULL), CACHE_ERR_CLOSED);
    cache_free(r.c);

    /* free from inside a callback, with more work queued behind it. A gate holds the
     * queue until everything is submitted: once the free is requested this thread must
     * not touch the handle, which is freed as soon as the queue is empty. */
    reentrant f = {0};
    atomic_int gate = 0;
    CHECK_EQ(open(dir, &f.c), CACHE_OK);
    CHECK_EQ(cache_set_async(f.c, K("a"), K("b"), CACHE_NO_TTL, gate_cb, &gate), CACHE_OK);
    for (int i = 0; i < 50; i++) CHECK_EQ(cache_set_async(f.c, K("a"), K("b"), CACHE_NO_TTL, NULL, NULL), CACHE_OK);
    CHECK_EQ(cache_delete_async(f.c, K("a"), free_inside_cb, &f), CACHE_OK);
    for (int i = 0; i < 20; i++)
        CHECK_EQ(cache_set_async(f.c, K("a"), K("b"), CACHE_NO_TTL, after_free_cb, &f), CACHE_OK);
    atomic_store(&gate, 1);
    wait_for(&f.done, 1);
    wait_for(&f.nested_calls, 20); /* queued before the free: all ran */
    /* f.c is gone now; valgrind and ASan check it was freed */
}

/* close and free with thousands of operations still queued */
static void test_close_and_free_with_work_queued(opener open, const char *dir) {
    int n = small_scale() ? 300 : 3000;
    slot *slots = calloc((size_t)n, sizeof(slot));
    CHECK(slots != NULL);
    for (int round = 0; round < 2; round++) {
        cache_t *c = NULL;
        CHECK_EQ(open(dir, &c), CACHE_OK);
        for (int i = 0; i < n; i++) {
            slots[i].expect_value = -1;
            atomic_store(&slots[i].calls, 0);
            char key[32];
            snprintf(key, sizeof key, "q-%d", i % 97);
            CHECK_EQ(cache_set_async(c, K(key), K("x"), CACHE_NO_TTL, count_cb, &slots[i]), CACHE_OK);
        }
        if (round == 0) {
            CHECK_EQ(cache_close(c), CACHE_OK);
            cache_free(c);
        } else {
            cache_free(c);
        }
        for (int i = 0; i < n; i++) CHECK_EQ(atomic_load(&slots[i].calls), 1);
    }
    free(slots);
}

static void test_null_callbacks_and_bad_input(opener open, const char *dir) {
    cache_t *c = NULL;
    CHECK_EQ(open(dir, &c), CACHE_OK);
    CHECK_EQ(cache_set_async(c, K("n"), K("1"), CACHE_NO_TTL, NULL, NULL), CACHE_OK);
    CHECK_EQ(cache_get_async(c, K("n"), NULL, NULL), CACHE_OK);
    CHECK_EQ(cache_pop_async(c, K("n"), NULL, NULL), CACHE_OK);
    CHECK_EQ(cache_set_async(c, K("m"), K("2"), CACHE_NO_TTL, NULL, NULL), CACHE_OK);
    CHECK_EQ(cache_delete_async(c, K("m"), NULL, NULL), CACHE_OK);
    CHECK_EQ(cache_clear_async(c, NULL, NULL), CACHE_OK);
    CHECK_EQ(cache_set_async(c, K("after"), K("3"), CACHE_NO_TTL, NULL, NULL), CACHE_OK);
    slot s = {0};
    s.expect_value = -1;
    CHECK_EQ(cache_get_async(c, K("after"), count_cb, &s), CACHE_OK);
    wait_for(&s.calls, 1);
    CHECK_EQ(atomic_load(&s.status), CACHE_OK); /* queued in order after the clear */
    CHECK_EQ(cache_has(c, K("n")), CACHE_NOT_FOUND);
    /* refused submissions never call back */
    double nan = 0.0 / 0.0;
    CHECK_EQ(cache_set_async(NULL, K("k"), K("v"), CACHE_NO_TTL, never_cb, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_set_async(c, NULL, 3, K("v"), CACHE_NO_TTL, never_cb, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_set_async(c, K("k"), NULL, 3, CACHE_NO_TTL, never_cb, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_set_async(c, K("k"), K("v"), nan, never_cb, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get_async(NULL, K("k"), never_cb, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_pop_async(c, NULL, 1, never_cb, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_delete_async(c, NULL, 1, never_cb, NULL), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_clear_async(NULL, never_cb, NULL), CACHE_ERR_INVALID_ARG);
    char err[256];
    CHECK(cache_last_error(err, sizeof err) > 0 && strstr(err, "cache_clear_async") != NULL);
    cache_free(c);
}

/* A process that exits with work still queued neither crashes nor hangs. */
static void test_exit_with_work_queued(opener open, const char *dir) {
    fflush(stdout); /* or the child's exit would print our buffered lines again */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        cache_t *c = NULL;
        if (open(dir, &c) != CACHE_OK) _exit(2);
        for (int i = 0; i < 5000; i++) {
            char key[32];
            snprintf(key, sizeof key, "exit-%d", i);
            if (cache_set_async(c, K(key), K("v"), CACHE_NO_TTL, NULL, NULL) != CACHE_OK) _exit(3);
        }
        exit(0); /* no close, no free: atexit handlers run while workers are busy */
    }
    int status = 0;
    for (int i = 0; i < 30000; i++) {
        pid_t done = waitpid(pid, &status, WNOHANG);
        CHECK(done >= 0);
        if (done == pid) break;
        sleep_ms(1);
    }
    if (!WIFEXITED(status)) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fprintf(stderr, "a process exiting with queued work hung or crashed\n");
        exit(1);
    }
    CHECK_EQ(WEXITSTATUS(status), 0);
}

/* The flags word, synchronous and asynchronous: stored with the entry, returned by
 * get and pop, replaced by a later set (a plain set stores 0), NULL out-pointer
 * allowed, and seen by a flagged callback. */
typedef struct {
    atomic_int calls;
    atomic_int status;
    uint32_t flags;
    char value[8];
} flagged_slot;

static void flagged_cb(void *user, cache_status status, const uint8_t *value, size_t len,
                       uint32_t flags) {
    flagged_slot *s = user;
    s->flags = flags;
    if (len < sizeof s->value && value) memcpy(s->value, value, len);
    atomic_store(&s->status, status);
    atomic_fetch_add(&s->calls, 1);
}

static void test_flags(opener open, const char *dir) {
    cache_t *c = NULL;
    CHECK_EQ(open(dir, &c), CACHE_OK);
    uint32_t flags = 99;
    cache_buf b = {0};
    CHECK_EQ(cache_set_flagged(c, K("f"), K("pickled"), CACHE_NO_TTL, 1), CACHE_OK);
    CHECK_EQ(cache_get_flagged(c, K("f"), &b, &flags), CACHE_OK);
    CHECK(buf_equals(&b, "pickled") && flags == 1);
    cache_buf_free(&b);
    CHECK_GET(c, "f", "pickled"); /* the plain get ignores the flags */
    CHECK_EQ(cache_get_flagged(c, K("f"), &b, NULL), CACHE_OK);
    cache_buf_free(&b);
    CHECK_EQ(cache_get_flagged(c, K("absent"), &b, &flags), CACHE_NOT_FOUND);
    CHECK(b.data == NULL && flags == 0);
    CHECK_EQ(cache_set(c, K("f"), K("raw"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_get_flagged(c, K("f"), &b, &flags), CACHE_OK);
    CHECK(buf_equals(&b, "raw") && flags == 0);
    cache_buf_free(&b);
    /* get_into_flagged: flags written with the length, also when the buffer is small */
    CHECK_EQ(cache_set_flagged(c, K("g"), K("four"), CACHE_NO_TTL, 42), CACHE_OK);
    uint8_t small[2], big[8];
    size_t len = 0;
    flags = 0;
    CHECK_EQ(cache_get_into_flagged(c, K("g"), small, sizeof small, &len, &flags), CACHE_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 4 && flags == 42);
    flags = 0;
    CHECK_EQ(cache_get_into_flagged(c, K("g"), big, sizeof big, &len, &flags), CACHE_OK);
    CHECK(len == 4 && flags == 42 && memcmp(big, "four", 4) == 0);
    CHECK_EQ(cache_get_into_flagged(c, K("g"), big, sizeof big, &len, NULL), CACHE_OK);
    CHECK_EQ(cache_get_into_flagged(c, K("absent"), big, sizeof big, &len, &flags), CACHE_NOT_FOUND);
    CHECK_EQ(cache_get_into_flagged(c, K("g"), NULL, 8, &len, &flags), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get_into_flagged(c, K("g"), big, sizeof big, NULL, &flags), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_set_flagged(c, K("f"), K("x"), NAN, 1), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get_flagged(c, K("f"), NULL, &flags), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_pop_flagged(NULL, K("f"), &b, &flags), CACHE_ERR_INVALID_ARG);

    flagged_slot got = {0}, popped = {0}, again = {0};
    CHECK_EQ(cache_set_flagged_async(c, K("a"), K("v1"), CACHE_NO_TTL, 0xdeadbeef, NULL, NULL), CACHE_OK);
    CHECK_EQ(cache_get_flagged_async(c, K("a"), flagged_cb, &got), CACHE_OK);
    CHECK_EQ(cache_pop_flagged_async(c, K("a"), flagged_cb, &popped), CACHE_OK);
    CHECK_EQ(cache_pop_flagged_async(c, K("a"), flagged_cb, &again), CACHE_OK);
    CHECK_EQ(cache_get_flagged_async(c, (const uint8_t *)NULL, 1, flagged_cb, &got), CACHE_ERR_INVALID_ARG);
    wait_for(&again.calls, 1);
    CHECK_EQ(atomic_load(&got.calls), 1);
    CHECK(atomic_load(&got.status) == CACHE_OK && got.flags == 0xdeadbeef && memcmp(got.value, "v1", 2) == 0);
    CHECK(atomic_load(&popped.status) == CACHE_OK && popped.flags == 0xdeadbeef);
    CHECK(atomic_load(&again.status) == CACHE_NOT_FOUND && again.flags == 0);
    CHECK_EQ(cache_close(c), CACHE_OK);
    CHECK_EQ(cache_set_flagged(c, K("f"), K("x"), CACHE_NO_TTL, 1), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_get_flagged_async(c, K("a"), flagged_cb, &got), CACHE_ERR_CLOSED);
    cache_free(c);
}

static void value_cb(void *user, cache_status status, const uint8_t *value, size_t len) {
    flagged_cb(user, status, value, len, 0);
}

/* The conditional calls' async forms: add, has, touch, incr. */
static void test_conditional_async(opener open, const char *dir) {
    cache_t *c = NULL;
    CHECK_EQ(open(dir, &c), CACHE_OK);
    flagged_slot added = {0}, exists = {0}, has = {0}, hasnt = {0}, touched = {0}, untouched = {0};
    flagged_slot five = {0}, three = {0}, not_numeric = {0};
    CHECK_EQ(cache_add_flagged_async(c, K("a"), K("v"), CACHE_NO_TTL, 7, value_cb, &added), CACHE_OK);
    CHECK_EQ(cache_add_flagged_async(c, K("a"), K("w"), CACHE_NO_TTL, 8, value_cb, &exists), CACHE_OK);
    CHECK_EQ(cache_has_async(c, K("a"), value_cb, &has), CACHE_OK);
    CHECK_EQ(cache_has_async(c, K("b"), value_cb, &hasnt), CACHE_OK);
    CHECK_EQ(cache_touch_async(c, K("a"), 100, value_cb, &touched), CACHE_OK);
    CHECK_EQ(cache_touch_async(c, K("b"), 100, value_cb, &untouched), CACHE_OK);
    CHECK_EQ(cache_incr_async(c, K("n"), 5, CACHE_NO_TTL, value_cb, &five), CACHE_OK);
    CHECK_EQ(cache_incr_async(c, K("n"), -2, CACHE_NO_TTL, value_cb, &three), CACHE_OK);
    CHECK_EQ(cache_incr_async(c, K("a"), 1, CACHE_NO_TTL, value_cb, &not_numeric), CACHE_OK);
    /* refused at once, never called back */
    CHECK_EQ(cache_add_flagged_async(c, K("x"), K("v"), NAN, 0, value_cb, &added), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_touch_async(c, K("x"), NAN, value_cb, &added), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_incr_async(c, (const uint8_t *)NULL, 1, 1, CACHE_NO_TTL, value_cb, &added), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_has_async(NULL, K("a"), value_cb, &added), CACHE_ERR_INVALID_ARG);
    wait_for(&not_numeric.calls, 1); /* one handle's queue runs in order */
    CHECK(atomic_load(&added.calls) == 1 && atomic_load(&added.status) == CACHE_OK);
    CHECK_EQ(atomic_load(&exists.status), CACHE_EXISTS);
    CHECK_EQ(atomic_load(&has.status), CACHE_OK);
    CHECK_EQ(atomic_load(&hasnt.status), CACHE_NOT_FOUND);
    CHECK_EQ(atomic_load(&touched.status), CACHE_OK);
    CHECK_EQ(atomic_load(&untouched.status), CACHE_NOT_FOUND);
    CHECK(atomic_load(&five.status) == CACHE_OK && memcmp(five.value, "5", 1) == 0);
    CHECK(atomic_load(&three.status) == CACHE_OK && memcmp(three.value, "3", 1) == 0);
    CHECK_EQ(atomic_load(&not_numeric.status), CACHE_ERR_NOT_NUMERIC);
    cache_buf b = {0};
    uint32_t flags = 0;
    CHECK_EQ(cache_get_flagged(c, K("a"), &b, &flags), CACHE_OK);
    CHECK(buf_equals(&b, "v") && flags == 7); /* the first add stored, the second did not */
    cache_buf_free(&b);
    double left = 0;
    CHECK_EQ(cache_ttl(c, K("a"), &left), CACHE_OK);
    CHECK(left > 90 && left <= 100);
    CHECK_GET(c, "n", "3");
    CHECK_EQ(cache_close(c), CACHE_OK);
    CHECK_EQ(cache_incr_async(c, K("n"), 1, CACHE_NO_TTL, value_cb, &added), CACHE_ERR_CLOSED);
    cache_free(c);
}

/* What a cache_get_many_async callback saw. */
typedef struct {
    atomic_int calls;
    atomic_int status;
    size_t n;
    int found[4];
    char values[4][8];
    uint32_t flags[4];
} many_slot;

static void many_cb(void *user, cache_status status, size_t n, const cache_status *statuses,
                    const cache_slice *values, const uint32_t *flags) {
    many_slot *s = user;
    s->n = n;
    for (size_t i = 0; i < n && i < 4; i++) {
        s->found[i] = statuses[i] == CACHE_OK;
        s->flags[i] = flags[i];
        if (values[i].len < sizeof s->values[i] && values[i].data) memcpy(s->values[i], values[i].data, values[i].len);
        CHECK(statuses[i] == CACHE_OK || (values[i].data == NULL && values[i].len == 0));
    }
    atomic_store(&s->status, status);
    atomic_fetch_add(&s->calls, 1);
}

/* The bulk calls' async forms: one transaction each, as their sync forms. */
static void test_bulk_async(opener open, const char *dir) {
    cache_t *c = NULL;
    CHECK_EQ(open(dir, &c), CACHE_OK);
    cache_entry entries[3] = {
        {{(const uint8_t *)"k1", 2}, {(const uint8_t *)"v1", 2}, CACHE_NO_TTL, 11},
        {{(const uint8_t *)"k2", 2}, {(const uint8_t *)"v2", 2}, CACHE_NO_TTL, 22},
        {{(const uint8_t *)"k3", 2}, {(const uint8_t *)"", 0}, CACHE_NO_TTL, 33},
    };
    cache_slice keys[4] = {{(const uint8_t *)"k1", 2}, {(const uint8_t *)"absent", 6},
                           {(const uint8_t *)"k2", 2}, {(const uint8_t *)"k3", 2}};
    flagged_slot stored = {0}, deleted = {0};
    many_slot got = {0}, after = {0}, none = {0};
    CHECK_EQ(cache_set_many_async(c, entries, 3, value_cb, &stored), CACHE_OK);
    CHECK_EQ(cache_get_many_async(c, keys, 4, many_cb, &got), CACHE_OK);
    CHECK_EQ(cache_delete_many_async(c, keys, 3, value_cb, &deleted), CACHE_OK);
    CHECK_EQ(cache_get_many_async(c, keys, 4, many_cb, &after), CACHE_OK);
    CHECK_EQ(cache_get_many_async(c, NULL, 0, many_cb, &none), CACHE_OK);
    /* refused at once, never called back */
    CHECK_EQ(cache_get_many_async(c, NULL, 2, many_cb, &none), CACHE_ERR_INVALID_ARG);
    cache_entry bad = {{(const uint8_t *)"k", 1}, {(const uint8_t *)"v", 1}, NAN, 0};
    CHECK_EQ(cache_set_many_async(c, &bad, 1, value_cb, &stored), CACHE_ERR_INVALID_ARG);
    cache_slice null_key = {NULL, 3};
    CHECK_EQ(cache_delete_many_async(c, &null_key, 1, value_cb, &deleted), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_get_many_async(c, keys, 4, NULL, NULL), CACHE_OK); /* no callback: fine */
    wait_for(&none.calls, 1); /* one handle's queue runs in order */
    CHECK(atomic_load(&stored.calls) == 1 && atomic_load(&stored.status) == CACHE_OK);
    CHECK(atomic_load(&got.status) == CACHE_OK && got.n == 4);
    CHECK(got.found[0] && !got.found[1] && got.found[2] && got.found[3]);
    CHECK(memcmp(got.values[0], "v1", 2) == 0 && got.flags[0] == 11);
    CHECK(memcmp(got.values[2], "v2", 2) == 0 && got.flags[2] == 22 && got.flags[3] == 33);
    CHECK(atomic_load(&deleted.status) == CACHE_OK && memcmp(deleted.value, "2", 1) == 0);
    CHECK(atomic_load(&after.status) == CACHE_OK && !after.found[0] && !after.found[2] && after.found[3]);
    CHECK(atomic_load(&none.status) == CACHE_OK && none.n == 0);
    CHECK_EQ(cache_close(c), CACHE_OK);
    CHECK_EQ(cache_get_many_async(c, keys, 4, many_cb, &got), CACHE_ERR_CLOSED);
    cache_free(c);
}

/* A child made by fork() has none of the parent's worker threads: its async calls
 * must still complete (the library starts a pool of the child's own). */
static void test_async_after_fork(void) {
    cache_t *c = NULL;
    CHECK_EQ(cache_open_memory(0, &c), CACHE_OK);
    flagged_slot before = {0};
    CHECK_EQ(cache_set_flagged_async(c, K("k"), K("v"), CACHE_NO_TTL, 3, NULL, NULL), CACHE_OK);
    CHECK_EQ(cache_get_flagged_async(c, K("k"), flagged_cb, &before), CACHE_OK);
    wait_for(&before.calls, 1); /* the parent's pool is running, and idle */
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        cache_t *own = NULL;
        flagged_slot got = {0}, inherited = {0};
        if (cache_open_memory(0, &own) != CACHE_OK) _exit(2);
        if (cache_set_async(own, K("x"), K("y"), CACHE_NO_TTL, NULL, NULL) != CACHE_OK) _exit(3);
        if (cache_get_flagged_async(own, K("x"), flagged_cb, &got) != CACHE_OK) _exit(4);
        if (cache_get_flagged_async(c, K("k"), flagged_cb, &inherited) != CACHE_OK) _exit(5);
        for (int i = 0; i < 10000 && (atomic_load(&got.calls) < 1 || atomic_load(&inherited.calls) < 1); i++)
            sleep_ms(1);
        if (atomic_load(&got.calls) != 1 || atomic_load(&got.status) != CACHE_OK) _exit(6);
        if (atomic_load(&inherited.status) != CACHE_OK || inherited.flags != 3) _exit(7);
        cache_free(own);
        cache_free(c);
        _exit(0);
    }
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
    cache_free(c);
}

/* cache_before_fork waits for a callback in flight and holds new ones back until
 * cache_after_fork (what a runtime with an interpreter lock needs before it forks). */
typedef struct {
    atomic_int entered, release, done;
} slow_slot;

static void slow_cb(void *user, cache_status status, const uint8_t *value, size_t len) {
    (void)status;
    (void)value;
    (void)len;
    slow_slot *s = user;
    atomic_fetch_add(&s->entered, 1);
    while (!atomic_load(&s->release)) sleep_ms(1);
    atomic_fetch_add(&s->done, 1);
}

static void *release_later(void *p) {
    sleep_ms(100);
    atomic_store(&((slow_slot *)p)->release, 1);
    return NULL;
}

static void test_callbacks_held_around_fork(void) {
    cache_t *c = NULL, *other = NULL;
    CHECK_EQ(cache_open_memory(0, &c), CACHE_OK);
    CHECK_EQ(cache_open_memory(0, &other), CACHE_OK);
    slow_slot slow = {0};
    CHECK_EQ(cache_set_async(c, K("k"), K("v"), CACHE_NO_TTL, slow_cb, &slow), CACHE_OK);
    wait_for(&slow.entered, 1);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, release_later, &slow), 0);
    cache_before_fork(); /* returns only once the callback in flight has finished */
    CHECK_EQ(atomic_load(&slow.done), 1);
    flagged_slot held = {0};
    CHECK_EQ(cache_get_flagged_async(other, K("k"), flagged_cb, &held), CACHE_OK);
    sleep_ms(50);
    CHECK_EQ(atomic_load(&held.calls), 0); /* its operation ran; its callback waits */
    cache_after_fork();
    wait_for(&held.calls, 1);
    CHECK_EQ(atomic_load(&held.status), CACHE_NOT_FOUND);
    CHECK_EQ(pthread_join(t, NULL), 0);
    cache_free(other);
    cache_free(c);
}

static cache_status open_memory(const char *dir, cache_t **out) {
    (void)dir;
    return cache_open_memory(1000, out);
}
static cache_status open_file(const char *dir, cache_t **out) { return cache_open_file(dir, 0, out); }
static cache_status open_sharded(const char *dir, cache_t **out) {
    return cache_open_sharded(dir, 1 << 20, 8, out);
}
static cache_status open_folder(const char *dir, cache_t **out) { return cache_open_folder(dir, 0, out); }

int main(void) {
    struct {
        const char *name;
        opener open;
    } kinds[] = {{"memory", open_memory}, {"file", open_file}, {"sharded", open_sharded}, {"folder", open_folder}};
    char base[256];
    make_tmpdir(base, sizeof base);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s", base, kinds[k].name);
        cache_t *c = NULL;
        CHECK_EQ(kinds[k].open(dir, &c), CACHE_OK);
        test_many_threads(c);
        cache_free(c);
        test_flags(kinds[k].open, dir);
        test_conditional_async(kinds[k].open, dir);
        test_bulk_async(kinds[k].open, dir);
        test_reentrancy(kinds[k].open, dir);
        test_close_and_free_with_work_queued(kinds[k].open, dir);
        test_null_callbacks_and_bad_input(kinds[k].open, dir);
        if (!small_scale()) test_exit_with_work_queued(kinds[k].open, dir);
        printf("test_async: %s ok\n", kinds[k].name);
    }
    /* Plain pass only: in the child, the memory of the parent's vanished worker threads
     * looks leaked to valgrind, and TSan does not follow a fork of a threaded process. */
    test_callbacks_held_around_fork();
    printf("test_async: callbacks held around fork ok\n");
    if (!small_scale()) {
        test_async_after_fork();
        printf("test_async: after fork ok\n");
    }
    remove_tree(base);
    printf("test_async: ok\n");
    return 0;
}
