/* Checks every persistent kind must pass, written once against an "opener" (a function
 * opening one kind with fixed options on a directory): scratch directories, two
 * processes on one directory, a writer killed with SIGKILL, and calls after close. */
#ifndef DUCKCACHE_PERSISTENT_H
#define DUCKCACHE_PERSISTENT_H

#include "check.h"
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef cache_status (*opener)(const char *dir, cache_t **out);

/* DUCKCACHE_TEST_SCALE (set for the valgrind run) asks for fewer iterations. */
static inline int small_scale(void) { return getenv("DUCKCACHE_TEST_SCALE") != NULL; }

static inline void make_tmpdir(char *out, size_t cap) {
    snprintf(out, cap, "/tmp/duckcache-ctest-XXXXXX");
    CHECK(mkdtemp(out) != NULL);
}

static inline void remove_tree(const char *dir) {
    char cmd[1100];
    int n = snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(n > 0 && (size_t)n < sizeof cmd);
    CHECK_EQ(system(cmd), 0);
}

static inline void fill(uint8_t *buf, size_t len, unsigned seed) {
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)(seed * 131u + i * 7u);
}

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A 1 s TTL: present at once, absent (and counted as an expiration) after it.
 * Long enough that a slow run under valgrind still reads it before it expires. */
static inline void check_ttl_expires(cache_t *c) {
    CHECK_EQ(cache_set(c, K("ttl"), K("v"), 1.0), CACHE_OK);
    CHECK_EQ(cache_has(c, K("ttl")), CACHE_OK);
    sleep_ms(1100);
    CHECK_MISS(c, "ttl");
}

/* Every call on a closed handle gives CACHE_ERR_CLOSED; close stays idempotent. Frees c. */
static inline void check_refuses_closed(cache_t *c) {
    CHECK_EQ(cache_close(c), CACHE_OK);
    CHECK_EQ(cache_close(c), CACHE_OK);
    cache_buf b = {0};
    uint64_t n;
    cache_stats s;
    uint8_t small[4];
    size_t len;
    CHECK_EQ(cache_set(c, K("k"), K("v"), CACHE_NO_TTL), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_get(c, K("k"), &b), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_get_into(c, K("k"), small, sizeof small, &len), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_pop(c, K("k"), &b), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_has(c, K("k")), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_delete(c, K("k")), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_clear(c), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_len(c, &n), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_get_stats(c, &s), CACHE_ERR_CLOSED);
    CHECK_EQ(cache_save(c), CACHE_ERR_CLOSED);
    cache_free(c);
}

/* Opening with bad arguments, or on a path that is a file: the documented status, *out
 * left untouched, and a message naming the path. Leaves `dir`/plain-file behind. */
static inline void check_open_bad_input(opener open, const char *dir) {
    cache_t *c = (cache_t *)0x1;
    CHECK_EQ(open(NULL, &c), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(open("", &c), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(open(dir, NULL), CACHE_ERR_INVALID_ARG);
    char file[512];
    snprintf(file, sizeof file, "%s/plain-file", dir);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    fputs("x", f);
    fclose(f);
    CHECK_EQ(open(file, &c), CACHE_ERR_IO);
    CHECK(c == (cache_t *)0x1); /* untouched */
    char err[512];
    CHECK(cache_last_error(err, sizeof err) > 0 && strstr(err, "plain-file") != NULL);
}

/* Garbage written over the database file `db` of a store in `dir`: open gives
 * CACHE_ERR_CORRUPT, leaves *out untouched, and names the file. */
static inline void check_damaged_database(opener open, const char *dir, const char *db) {
    cache_t *c = NULL;
    CHECK_EQ(open(dir, &c), CACHE_OK);
    CHECK_EQ(cache_set(c, K("k"), K("v"), CACHE_NO_TTL), CACHE_OK);
    cache_free(c);
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, db);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    for (int i = 0; i < 4096; i++) fputc(0x5a ^ i, f);
    fclose(f);
    c = (cache_t *)0x1;
    CHECK_EQ(open(dir, &c), CACHE_ERR_CORRUPT);
    CHECK(c == (cache_t *)0x1);
    char err[512];
    CHECK(cache_last_error(err, sizeof err) > 0 && strstr(err, db) != NULL);
}

/* Two processes pop the same keys and each set keys of their own: each key is popped
 * exactly once, and what one process set the other (and the parent) reads. */
/* Freshness across processes: process B sets or deletes a key and says so; process A,
 * whose handle has been reading that key all along (its read connections warm), must
 * see exactly that at once, every time. */
static inline void check_fresh_across_processes(opener open, const char *dir) {
    const int rounds = small_scale() ? 300 : 3000;
    int said[2], heard[2];
    CHECK_EQ(pipe(said), 0);
    CHECK_EQ(pipe(heard), 0);
    /* The fork comes before A opens its handle: a child holding none of the parent's
     * memory leaves valgrind nothing to report in it. */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        cache_t *b = NULL;
        if (open(dir, &b) != CACHE_OK) _exit(2);
        char value[32];
        for (int i = 0; i < rounds; i++) {
            snprintf(value, sizeof value, "v%d", i);
            cache_status s = i % 3 == 2 ? cache_delete(b, K("fresh"))
                                        : cache_set(b, K("fresh"), K(value), CACHE_NO_TTL);
            if (s != CACHE_OK) _exit(3);
            if (write(said[1], &i, sizeof i) != (ssize_t)sizeof i) _exit(4);
            int ack;
            if (read(heard[0], &ack, sizeof ack) != (ssize_t)sizeof ack) _exit(5);
        }
        cache_free(b);
        _exit(0);
    }
    cache_t *a = NULL;
    CHECK_EQ(open(dir, &a), CACHE_OK);
    char want[32];
    cache_buf got = {0};
    for (int i = 0; i < rounds; i++) {
        /* Warm reads while B works: the read connections stay busy with the key. */
        cache_status warm = cache_get(a, K("fresh"), &got);
        CHECK(warm == CACHE_OK || warm == CACHE_NOT_FOUND);
        cache_buf_free(&got);
        int n;
        CHECK_EQ(read(said[0], &n, sizeof n), (ssize_t)sizeof n);
        CHECK_EQ(n, i);
        if (i % 3 == 2) {
            CHECK_EQ(cache_get(a, K("fresh"), &got), CACHE_NOT_FOUND);
            CHECK_EQ(cache_has(a, K("fresh")), CACHE_NOT_FOUND);
        } else {
            snprintf(want, sizeof want, "v%d", i);
            CHECK_EQ(cache_get(a, K("fresh"), &got), CACHE_OK);
            CHECK(buf_equals(&got, want));
            cache_buf_free(&got);
            CHECK_EQ(cache_has(a, K("fresh")), CACHE_OK);
        }
        CHECK_EQ(write(heard[1], &i, sizeof i), (ssize_t)sizeof i);
    }
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cache_free(a);
    for (int i = 0; i < 2; i++) {
        close(said[i]);
        close(heard[i]);
    }
}

static inline void check_two_processes(opener open, const char *dir) {
    const int keys = small_scale() ? 60 : 400;
    cache_t *c = NULL;
    CHECK_EQ(open(dir, &c), CACHE_OK);
    char key[32];
    for (int i = 0; i < keys; i++) {
        snprintf(key, sizeof key, "pop-%d", i);
        CHECK_EQ(cache_set(c, K(key), K(key), CACHE_NO_TTL), CACHE_OK);
    }
    cache_free(c);
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    pid_t pids[2];
    for (int p = 0; p < 2; p++) {
        pids[p] = fork();
        CHECK(pids[p] >= 0);
        if (pids[p] == 0) {
            cache_t *h = NULL;
            if (open(dir, &h) != CACHE_OK) _exit(2);
            int won = 0;
            for (int i = 0; i < keys; i++) {
                /* interleave: child 1 walks backwards */
                int k = p == 0 ? i : keys - 1 - i;
                snprintf(key, sizeof key, "pop-%d", k);
                cache_buf b = {0};
                int s = cache_pop(h, K(key), &b);
                if (s == CACHE_OK) {
                    if (!buf_equals(&b, key)) _exit(3);
                    won++;
                } else if (s != CACHE_NOT_FOUND) {
                    _exit(4);
                }
                cache_buf_free(&b);
                char mine[32];
                snprintf(mine, sizeof mine, "from-%d-%d", p, i);
                if (cache_set(h, K(mine), K(mine), CACHE_NO_TTL) != CACHE_OK) _exit(5);
                /* the other process's writes are visible without reopening */
                snprintf(mine, sizeof mine, "from-%d-%d", 1 - p, i / 2);
                int seen = cache_has(h, K(mine));
                if (seen != CACHE_OK && seen != CACHE_NOT_FOUND) _exit(7);
            }
            cache_free(h);
            if (write(fds[1], &won, sizeof won) != sizeof won) _exit(6);
            _exit(0);
        }
    }
    close(fds[1]);
    for (int p = 0; p < 2; p++) {
        int status = 0;
        CHECK_EQ(waitpid(pids[p], &status, 0), pids[p]);
        CHECK(WIFEXITED(status));
        CHECK_EQ(WEXITSTATUS(status), 0);
    }
    int total = 0, won;
    while (read(fds[0], &won, sizeof won) == sizeof won) total += won;
    close(fds[0]);
    CHECK_EQ(total, keys);
    CHECK_EQ(open(dir, &c), CACHE_OK);
    uint64_t n = 0;
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, (uint64_t)(2 * keys));
    CHECK_GET(c, "from-0-0", "from-0-0");
    snprintf(key, sizeof key, "from-1-%d", keys - 1);
    CHECK_GET(c, key, key);
    /* a key deleted here is never returned to another process */
    CHECK_EQ(cache_delete(c, K("from-0-0")), CACHE_OK);
    cache_free(c); /* before fork: the child must not inherit a live handle */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        cache_t *h = NULL;
        if (open(dir, &h) != CACHE_OK) _exit(2);
        int gone = cache_has(h, K("from-0-0")) == CACHE_NOT_FOUND;
        cache_free(h);
        _exit(gone ? 0 : 8);
    }
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
}

/* A writer killed with SIGKILL at a random moment, `rounds` times: the store reopens
 * cleanly and holds every set that had returned CACHE_OK, small and large values alike. */
static inline void check_sigkill(opener open, const char *base, int rounds) {
    static uint8_t value[40000];
    for (int round = 0; round < rounds; round++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/kill-%d", base, round);
        int fds[2];
        CHECK_EQ(pipe(fds), 0);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            cache_t *h = NULL;
            if (open(dir, &h) != CACHE_OK) _exit(2);
            for (int i = 0;; i++) {
                char key[32];
                snprintf(key, sizeof key, "k%d", i);
                size_t len = (i % 3 == 0) ? sizeof value : 100 + (size_t)i % 50;
                fill(value, len, (unsigned)i);
                if (cache_set(h, K(key), value, len, CACHE_NO_TTL) != CACHE_OK) _exit(3);
                if (write(fds[1], &i, sizeof i) != sizeof i) _exit(4); /* acknowledged */
            }
        }
        close(fds[1]);
        /* The kill lands 20-100 ms after the first acknowledged set (timed from there,
         * not from the fork: on a loaded machine opening the store alone can take
         * longer than that). */
        int acked = -1, i;
        if (read(fds[0], &i, sizeof i) == sizeof i) acked = i;
        sleep_ms((20 + (round * 37) % 80) * (small_scale() ? 10 : 1));
        CHECK_EQ(kill(pid, SIGKILL), 0);
        int status = 0;
        CHECK_EQ(waitpid(pid, &status, 0), pid);
        CHECK(WIFSIGNALED(status));
        while (read(fds[0], &i, sizeof i) == sizeof i) acked = i;
        close(fds[0]);
        cache_t *c = NULL;
        CHECK_EQ(open(dir, &c), CACHE_OK);
        for (int k = 0; k <= acked; k++) {
            char key[32];
            snprintf(key, sizeof key, "k%d", k);
            size_t len = (k % 3 == 0) ? sizeof value : 100 + (size_t)k % 50;
            fill(value, len, (unsigned)k);
            cache_buf b = {0};
            CHECK_EQ(cache_get(c, K(key), &b), CACHE_OK);
            CHECK(b.len == len && memcmp(b.data, value, len) == 0);
            cache_buf_free(&b);
        }
        /* and the store is usable */
        CHECK_EQ(cache_set(c, K("after"), K("crash"), CACHE_NO_TTL), CACHE_OK);
        CHECK_GET(c, "after", "crash");
        cache_free(c);
        if (getenv("DUCKCACHE_TEST_VERBOSE"))
            fprintf(stderr, "check_sigkill %s: round %d: %d acknowledged sets all present\n", base, round,
                    acked + 1);
        CHECK(acked >= 0); /* the writer got going before the kill */
    }
}

/* fork() 60 times while two threads set 1 KiB values over `keys` keys and `readers`
 * threads read without pause: every fork goes through (readers, the background
 * checkpointer, shard opening and the writers' group commit step aside or wait; none can
 * hold the fork handlers up), and the child reads "hot" and sets and reads a key of its
 * own (a lead or sets queued by the parent's writers at the fork must not hold it up).
 * Plain runs only: in a child, valgrind counts the parent's threads' memory as lost.
 * Frees c. */
struct fork_traffic {
    cache_t *c;
    long keys;
    atomic_int on;
};

static inline void *fork_traffic_writer(void *p) {
    struct fork_traffic *t = p;
    static uint8_t value[1024];
    char key[32];
    for (long i = 0; atomic_load(&t->on); i++) {
        snprintf(key, sizeof key, "traffic-%ld", i % t->keys);
        CHECK_EQ(cache_set(t->c, (const uint8_t *)key, strlen(key), value, sizeof value,
                           CACHE_NO_TTL),
                 CACHE_OK);
    }
    return NULL;
}

static inline void *fork_traffic_reader(void *p) {
    struct fork_traffic *t = p;
    uint8_t buf[2048];
    size_t len;
    char key[32];
    for (long i = 0; atomic_load(&t->on); i++) {
        CHECK_EQ(cache_get_into(t->c, K("hot"), buf, sizeof buf, &len), CACHE_OK);
        snprintf(key, sizeof key, "traffic-%ld", (i * 7) % t->keys);
        cache_status s = cache_get_into(t->c, (const uint8_t *)key, strlen(key), buf, sizeof buf, &len);
        CHECK(s == CACHE_OK || s == CACHE_NOT_FOUND);
    }
    return NULL;
}

static inline void check_fork_beside_traffic(cache_t *c, long keys, int readers) {
    struct fork_traffic t = {c, keys, 1};
    CHECK_EQ(cache_set(c, K("hot"), K("value"), CACHE_NO_TTL), CACHE_OK);
    pthread_t th[8];
    const int writers = 2;
    CHECK(readers >= 1 && writers + readers <= 8);
    for (int i = 0; i < writers; i++) CHECK_EQ(pthread_create(&th[i], NULL, fork_traffic_writer, &t), 0);
    for (int i = writers; i < writers + readers; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, fork_traffic_reader, &t), 0);
    for (int round = 0; round < 60; round++) {
        alarm(30); /* a fork held up forever fails the test instead of hanging it */
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            alarm(30); /* the child's alarm: a set held up in the child kills it */
            char key[32];
            snprintf(key, sizeof key, "child-%d", round);
            cache_buf b = {0};
            int ok = cache_get(c, K("hot"), &b) == CACHE_OK && buf_equals(&b, "value");
            cache_buf_free(&b);
            ok = ok && cache_set(c, (const uint8_t *)key, strlen(key), K("set"), CACHE_NO_TTL) == CACHE_OK;
            ok = ok && cache_get(c, (const uint8_t *)key, strlen(key), &b) == CACHE_OK && buf_equals(&b, "set");
            _exit(ok ? 0 : 1);
        }
        int status = 0;
        CHECK_EQ(waitpid(pid, &status, 0), pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        alarm(0);
    }
    atomic_store(&t.on, 0);
    for (int i = 0; i < writers + readers; i++) CHECK_EQ(pthread_join(th[i], NULL), 0);
    CHECK_GET(c, "child-59", "set"); /* the children's sets reached the store */
    cache_free(c);
}

/* The checks across processes every SQLite-backed kind passes: two processes on one
 * store, fresh reads after another process's writes, and SIGKILL rounds. */
static inline void check_across_processes(opener open, const char *dir) {
    char sub[512];
    snprintf(sub, sizeof sub, "%s/procs", dir);
    check_two_processes(open, sub);
    check_fresh_across_processes(open, sub);
    check_sigkill(open, dir, small_scale() ? 2 : 6);
}

#endif
