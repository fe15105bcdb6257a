/* A hostile environment (issue 14): every case runs in a child process under a crash
 * guard, so a signal (SIGBUS, SIGSEGV) or a hang (an alarm) is reported as a failure of
 * that case by name instead of killing the test run:
 * - another process damaging the store while a handle is open: truncate, overwrite with
 *   garbage, unlink, and non-regular files (a FIFO) or symbolic links in its place;
 * - several processes opening one new directory at the same moment;
 * - exact LRU across threads (a set orders after everything before it in any thread);
 * - nested closes from callbacks with a single worker thread.
 * DUCKCACHE_STRESS=1 runs each campaign longer (make stress). */
#define _DEFAULT_SOURCE
#include "persistent.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>

static int stress(void) { return getenv("DUCKCACHE_STRESS") != NULL; }

/* ---- the crash guard ---- */

/* Runs fn(arg) in a child with an alarm of `seconds`; a signal, an alarm or a non-zero
 * exit fails the test, naming the case. */
static void guarded(const char *name, void (*fn)(void *), void *arg, unsigned seconds) {
    /* DUCKCACHE_ONLY=text runs only the cases whose name contains it (to replay one). */
    const char *only = getenv("DUCKCACHE_ONLY");
    if (only && !strstr(name, only)) return;
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(seconds);
        fn(arg);
        exit(0);
    }
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        fprintf(stderr, "%s: killed by signal %d (%s)%s\n", name, sig, strsignal(sig),
                sig == SIGALRM ? ": a call hung" : "");
        exit(1);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "%s: failed (exit %d)\n", name, WEXITSTATUS(status));
        exit(1);
    }
    printf("  ok %s\n", name);
}

/* ---- kinds ---- */

static cache_status open_file(const char *dir, cache_t **out) { return cache_open_file(dir, 0, out); }
static cache_status open_sharded(const char *dir, cache_t **out) {
    return cache_open_sharded(dir, 0, 0, out);
}
static cache_status open_folder(const char *dir, cache_t **out) { return cache_open_folder(dir, 0, out); }

typedef struct {
    const char *name;
    opener open;
    /* The database file damage is done to ("" for the folder kind). */
    const char *db;
} kind_t;

static const kind_t KINDS[] = {
    {"file", open_file, "cache.db"},
    {"sharded", open_sharded, "index.db"},
    {"folder", open_folder, ""},
};
#define NKINDS (sizeof KINDS / sizeof KINDS[0])

/* Statuses a call may answer on a damaged store: anything but a crash, a hang or a
 * status that blames the library (INTERNAL). */
static void check_damage_status(cache_status s) {
    if (s == CACHE_ERR_INTERNAL || s == CACHE_ERR_INVALID_ARG || s == CACHE_ERR_CLOSED) {
        char err[512];
        cache_last_error(err, sizeof err);
        fprintf(stderr, "unexpected status %d (%s): %s\n", s, cache_status_str(s), err);
        exit(1);
    }
}

/* Every operation once; the statuses are checked, the values are not (the store may be
 * gone). */
static void exercise(cache_t *c) {
    static uint8_t big[50000];
    fill(big, sizeof big, 3);
    cache_buf b = {0};
    uint64_t n;
    cache_stats st;
    for (int i = 0; i < 40; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%d", i);
        check_damage_status(cache_set(c, K(key), (i % 4 == 0) ? big : (const uint8_t *)"v",
                                      (i % 4 == 0) ? sizeof big : 1, CACHE_NO_TTL));
        cache_status s = cache_get(c, K(key), &b);
        check_damage_status(s);
        cache_buf_free(&b);
    }
    check_damage_status(cache_has(c, K("k1")));
    check_damage_status(cache_pop(c, K("k2"), &b));
    cache_buf_free(&b);
    check_damage_status(cache_delete(c, K("k3")));
    check_damage_status(cache_len(c, &n));
    check_damage_status(cache_get_stats(c, &st));
    check_damage_status(cache_save(c));
    check_damage_status(cache_clear(c));
}

/* A store with entries in it, inline values and value files. */
static void populate(cache_t *c) {
    static uint8_t big[60000];
    fill(big, sizeof big, 9);
    for (int i = 0; i < 200; i++) {
        char key[32];
        snprintf(key, sizeof key, "p%d", i);
        CHECK_EQ(cache_set(c, K(key), (i % 10 == 0) ? big : (const uint8_t *)"value",
                           (i % 10 == 0) ? sizeof big : 5, CACHE_NO_TTL),
                 CACHE_OK);
    }
    CHECK_EQ(cache_save(c), CACHE_OK);
}

/* ---- damage done by another process while a handle is open ---- */

typedef enum { TRUNCATE, GARBAGE, UNLINK, FIFO, SYMLINK } damage_t;
static const char *DAMAGE_NAMES[] = {"truncate", "garbage", "unlink", "fifo", "symlink"};

/* Damages the file at `path` in the way `d` says (a symlink points at `outside`). */
static void damage_file(const char *path, damage_t d, const char *outside) {
    switch (d) {
    case TRUNCATE:
        CHECK_EQ(truncate(path, 0), 0);
        break;
    case GARBAGE: {
        int fd = open(path, O_WRONLY);
        if (fd < 0) return;
        uint8_t junk[8192];
        fill(junk, sizeof junk, 77);
        CHECK_EQ(pwrite(fd, junk, sizeof junk, 0), (long)sizeof junk);
        close(fd);
        break;
    }
    case UNLINK:
        CHECK_EQ(unlink(path), 0);
        break;
    case FIFO:
        CHECK_EQ(unlink(path), 0);
        CHECK_EQ(mkfifo(path, 0600), 0);
        break;
    case SYMLINK:
        CHECK_EQ(unlink(path), 0);
        CHECK_EQ(symlink(outside, path), 0);
        break;
    }
}

typedef struct {
    const kind_t *kind;
    damage_t damage;
    int to_value_file; /* else the database file */
    char dir[300];
} damage_case;

/* The name of one value file (a regular file under `dir`, recursively, named *.val or
 * `value`), or 0 when there is none. */
static int find_value_file(const char *dir, char *out, size_t cap) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0) continue;
        size_t n = strlen(e->d_name);
        if (S_ISDIR(st.st_mode)) {
            found = find_value_file(path, out, cap);
        } else if (S_ISREG(st.st_mode) && st.st_size >= 50000 &&
                   ((n > 4 && strcmp(e->d_name + n - 4, ".val") == 0) || strcmp(e->d_name, "value") == 0)) {
            snprintf(out, cap, "%s", path);
            found = 1;
        }
    }
    closedir(d);
    return found;
}

/* An outside file a planted symlink points at: the test checks it is never changed or
 * returned. */
static void outside_file(const char *base, char *out, size_t cap) {
    snprintf(out, cap, "%s-outside", base);
    FILE *f = fopen(out, "w");
    CHECK(f != NULL);
    static uint8_t secret[60000];
    fill(secret, sizeof secret, 10); /* the length of a stored big value, other bytes */
    CHECK_EQ(fwrite(secret, 1, sizeof secret, f), sizeof secret);
    fclose(f);
}

static void check_outside_untouched(const char *path) {
    struct stat st;
    CHECK_EQ(stat(path, &st), 0);
    CHECK_EQ(st.st_size, 60000);
}

/* Damage to the database file, or to one value file, while a handle is open: the
 * handle answers statuses (never a signal or a hang), and after the damage is undone a
 * new handle works. */
static void run_damage(void *arg) {
    damage_case *dc = arg;
    cache_t *c = NULL;
    CHECK_EQ(dc->kind->open(dc->dir, &c), CACHE_OK);
    populate(c);
    char outside[400];
    outside_file(dc->dir, outside, sizeof outside);
    char target[1024];
    if (!dc->to_value_file) {
        snprintf(target, sizeof target, "%s/%s", dc->dir, dc->kind->db);
    } else {
        CHECK(find_value_file(dc->dir, target, sizeof target));
    }
    damage_file(target, dc->damage, outside);
    /* The outside file's bytes are never returned, whatever stands in the store. */
    static uint8_t secret[60000];
    fill(secret, sizeof secret, 10);
    cache_buf b = {0};
    for (int i = 0; i < 200; i += 10) {
        char key[32];
        snprintf(key, sizeof key, "p%d", i);
        cache_status s = cache_get(c, K(key), &b);
        check_damage_status(s);
        CHECK(!(s == CACHE_OK && b.len == sizeof secret && memcmp(b.data, secret, b.len) == 0));
        cache_buf_free(&b);
    }
    exercise(c);
    cache_free(c);
    /* Opening again on the damaged directory: a status, never a hang or a crash. */
    cache_t *again = NULL;
    cache_status s = dc->kind->open(dc->dir, &again);
    check_damage_status(s);
    if (s == CACHE_OK) {
        exercise(again);
        cache_free(again);
    }
    if (dc->damage == SYMLINK) check_outside_untouched(outside);
    unlink(outside);
}

static void damage_cases(const char *base) {
    for (size_t k = 0; k < NKINDS; k++) {
        for (int to_value = 0; to_value < 2; to_value++) {
            if (!to_value && KINDS[k].db[0] == '\0') continue; /* the folder kind has no database */
            for (int d = TRUNCATE; d <= SYMLINK; d++) {
                damage_case dc = {.kind = &KINDS[k], .damage = (damage_t)d, .to_value_file = to_value};
                const char *what = to_value ? "value file" : KINDS[k].db;
                snprintf(dc.dir, sizeof dc.dir, "%s/damage-%s-%d-%s", base, KINDS[k].name, to_value,
                         DAMAGE_NAMES[d]);
                char name[100];
                snprintf(name, sizeof name, "%s: %s %s", KINDS[k].name, what, DAMAGE_NAMES[d]);
                guarded(name, run_damage, &dc, small_scale() ? 120 : 30);
            }
        }
    }
}

/* `values` (file kind) replaced by a link to an outside folder: nothing is written
 * there, nothing read from there. */
static void run_values_link(void *arg) {
    const char *dir = arg;
    cache_t *c = NULL;
    CHECK_EQ(open_file(dir, &c), CACHE_OK);
    populate(c);
    cache_free(c);
    char values[400], outside[400], cmd[1400];
    snprintf(values, sizeof values, "%s/values", dir);
    snprintf(outside, sizeof outside, "%s-outside-values", dir);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s' && rm -rf '%s'", values, outside, values);
    CHECK_EQ(system(cmd), 0);
    CHECK_EQ(symlink(outside, values), 0);
    cache_status s = open_file(dir, &c);
    check_damage_status(s);
    if (s == CACHE_OK) {
        exercise(c);
        cache_buf b = {0};
        CHECK(cache_get(c, K("p0"), &b) != CACHE_OK);
        cache_free(c);
    }
    /* The outside folder holds exactly what was copied there. */
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | wc -l) -eq 20", outside);
    CHECK_EQ(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", outside);
    CHECK_EQ(system(cmd), 0);
}

/* The sharded index removed (with its -wal and -shm) while a handle is open: no call
 * answers INTERNAL, the handle goes on with a new index (rebuilt from the shards), and a
 * handle opened afterwards shares it: each sees the other's writes. */
static void run_index_removed(void *arg) {
    const char *dir = arg;
    cache_t *c = NULL;
    CHECK_EQ(open_sharded(dir, &c), CACHE_OK);
    populate(c);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -f '%s/index.db' '%s/index.db-wal' '%s/index.db-shm'", dir, dir, dir);
    CHECK_EQ(system(cmd), 0);
    CHECK_EQ(cache_set(c, K("after"), K("a"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "p1", "value"); /* the new index is rebuilt from the shards */
    cache_t *d = NULL;
    CHECK_EQ(open_sharded(dir, &d), CACHE_OK);
    CHECK_GET(d, "after", "a");
    CHECK_GET(d, "p1", "value");
    CHECK_EQ(cache_set(d, K("from-new"), K("n"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "from-new", "n");
    CHECK_EQ(cache_set(c, K("from-old"), K("o"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(d, "from-old", "o");
    exercise(c);
    cache_free(d);
    cache_free(c);
}

/* ---- several processes opening one new directory at once ---- */

typedef struct {
    const kind_t *kind;
    const char *base;
} open_race;

static void run_open_race(void *arg) {
    open_race *r = arg;
    const int procs = 8, rounds = stress() ? 200 : (small_scale() ? 3 : 30);
    for (int round = 0; round < rounds; round++) {
        char dir[400];
        snprintf(dir, sizeof dir, "%s/open-race-%s-%d", r->base, r->kind->name, round);
        int go[2];
        CHECK_EQ(pipe(go), 0);
        pid_t pids[8];
        for (int p = 0; p < procs; p++) {
            pids[p] = fork();
            CHECK(pids[p] >= 0);
            if (pids[p] == 0) {
                close(go[1]);
                char x;
                CHECK_EQ(read(go[0], &x, 1), 0); /* all start when the pipe closes */
                cache_t *c = NULL;
                CHECK_EQ(r->kind->open(dir, &c), CACHE_OK);
                char key[32];
                snprintf(key, sizeof key, "from-%d", p);
                CHECK_EQ(cache_set(c, K(key), K("v"), CACHE_NO_TTL), CACHE_OK);
                cache_free(c);
                _exit(0);
            }
        }
        close(go[0]);
        close(go[1]);
        for (int p = 0; p < procs; p++) {
            int status;
            CHECK_EQ(waitpid(pids[p], &status, 0), pids[p]);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "open race %s round %d: process %d failed\n", r->kind->name, round, p);
                exit(1);
            }
        }
        cache_t *c = NULL;
        CHECK_EQ(r->kind->open(dir, &c), CACHE_OK);
        uint64_t n = 0;
        CHECK_EQ(cache_len(c, &n), CACHE_OK);
        CHECK_EQ(n, procs);
        cache_free(c);
    }
}

/* ---- exact LRU across threads ---- */

static void *set_a_many(void *arg) {
    cache_t *c = arg;
    for (int i = 0; i < 1000; i++) CHECK_EQ(cache_set(c, K("a"), K("1"), CACHE_NO_TTL), CACHE_OK);
    return NULL;
}

/* max_keys 1: a thread sets "a" 1000 times and is joined; then this thread's set of "b"
 * must evict "a" (the older), never "b" itself; and every later set keeps its own key. */
static void run_lru_threads(void *arg) {
    (void)arg;
    const int rounds = stress() ? 2000 : 200;
    for (int round = 0; round < rounds; round++) {
        cache_t *c = NULL;
        CHECK_EQ(cache_open_memory(1, &c), CACHE_OK);
        pthread_t t;
        CHECK_EQ(pthread_create(&t, NULL, set_a_many, c), 0);
        CHECK_EQ(pthread_join(t, NULL), 0);
        CHECK_EQ(cache_set(c, K("b"), K("2"), CACHE_NO_TTL), CACHE_OK);
        CHECK_GET(c, "b", "2");
        CHECK_MISS(c, "a");
        for (int i = 0; i < 8; i++) {
            char key[16];
            snprintf(key, sizeof key, "n%d", i);
            CHECK_EQ(cache_set(c, K(key), K("x"), CACHE_NO_TTL), CACHE_OK);
            CHECK_GET(c, key, "x");
        }
        cache_free(c);
    }
}

/* ---- nested closes from callbacks with one worker ---- */

/* A callback that closes another handle. With `started` set, it first waits (up to
 * 5 s) until the other closer's callback has started too, so both run at once. */
typedef struct {
    cache_t *other;
    cache_status closed;
    volatile int *started;
    volatile int done;
} closer_t;

static void close_other(void *user, cache_status status, const uint8_t *v, size_t n) {
    (void)status, (void)v, (void)n;
    closer_t *cl = user;
    if (cl->started) {
        __atomic_add_fetch(cl->started, 1, __ATOMIC_SEQ_CST);
        for (int i = 0; i < 5000 && __atomic_load_n(cl->started, __ATOMIC_SEQ_CST) < 2; i++) sleep_ms(1);
    }
    cl->closed = cache_close(cl->other);
    __atomic_store_n(&cl->done, 1, __ATOMIC_RELEASE);
}

/* cache_free must not race with other calls on the handle (the contract): wait until
 * both closers have returned from their close, then free both handles. */
static void free_after_closers(cache_t *a, cache_t *b, closer_t *x, closer_t *y) {
    while (!__atomic_load_n(&x->done, __ATOMIC_ACQUIRE) || !__atomic_load_n(&y->done, __ATOMIC_ACQUIRE))
        sleep_ms(1);
    cache_free(a);
    cache_free(b);
}

static void wait_gate(void *user, cache_status status, const uint8_t *v, size_t n) {
    (void)status, (void)v, (void)n;
    volatile int *gate = user;
    while (!*gate) sleep_ms(1);
}

/* B's callback closes A while A's queued callback (run by the same single worker)
 * closes B: both return, neither deadlocks. A first job on B holds the worker until
 * both are queued. */
static void run_nested_close(void *arg) {
    (void)arg;
    setenv("DUCKCACHE_WORKERS", "1", 1);
    for (int round = 0; round < 50; round++) {
        cache_t *a = NULL, *b = NULL;
        CHECK_EQ(cache_open_memory(0, &a), CACHE_OK);
        CHECK_EQ(cache_open_memory(0, &b), CACHE_OK);
        closer_t in_b = {a, 99, NULL, 0}, in_a = {b, 99, NULL, 0};
        volatile int gate = 0;
        CHECK_EQ(cache_get_async(b, K("gate"), wait_gate, (void *)&gate), CACHE_OK);
        CHECK_EQ(cache_set_async(b, K("k"), K("v"), CACHE_NO_TTL, close_other, &in_b), CACHE_OK);
        CHECK_EQ(cache_set_async(a, K("k"), K("v"), CACHE_NO_TTL, close_other, &in_a), CACHE_OK);
        gate = 1;
        free_after_closers(a, b, &in_a, &in_b);
        /* Both callbacks ran; a close from inside a callback of the handle's own
         * (nested) queue answers BUSY rather than waiting for itself. */
        CHECK(in_b.closed == CACHE_OK || in_b.closed == CACHE_ERR_BUSY);
        CHECK(in_a.closed == CACHE_OK || in_a.closed == CACHE_ERR_BUSY);
    }
}

/* Two workers: A's callback and B's callback run at once and each closes the other's
 * handle. Waiting both ways would never end: one of them answers BUSY. */
static void run_cross_close(void *arg) {
    (void)arg;
    setenv("DUCKCACHE_WORKERS", "2", 1);
    for (int round = 0; round < 20; round++) {
        cache_t *a = NULL, *b = NULL;
        CHECK_EQ(cache_open_memory(0, &a), CACHE_OK);
        CHECK_EQ(cache_open_memory(0, &b), CACHE_OK);
        volatile int started = 0;
        closer_t in_a = {b, 99, &started, 0}, in_b = {a, 99, &started, 0};
        CHECK_EQ(cache_set_async(a, K("k"), K("v"), CACHE_NO_TTL, close_other, &in_a), CACHE_OK);
        CHECK_EQ(cache_set_async(b, K("k"), K("v"), CACHE_NO_TTL, close_other, &in_b), CACHE_OK);
        free_after_closers(a, b, &in_a, &in_b);
        CHECK(in_a.closed == CACHE_OK || in_a.closed == CACHE_ERR_BUSY);
        CHECK(in_b.closed == CACHE_OK || in_b.closed == CACHE_ERR_BUSY);
        CHECK(in_a.closed == CACHE_ERR_BUSY || in_b.closed == CACHE_ERR_BUSY);
    }
}

int main(void) {
    char base[256];
    make_tmpdir(base, sizeof base);
    printf("hostile environment tests in %s\n", base);
    damage_cases(base);
    char values_dir[400];
    snprintf(values_dir, sizeof values_dir, "%s/values-link", base);
    guarded("file values/ replaced by a link", run_values_link, values_dir, 60);
    char index_dir[400];
    snprintf(index_dir, sizeof index_dir, "%s/index-removed", base);
    guarded("sharded index.db removed while open", run_index_removed, index_dir, 60);
    for (size_t k = 0; k < NKINDS; k++) {
        open_race r = {&KINDS[k], base};
        char name[100];
        snprintf(name, sizeof name, "concurrent first open %s", KINDS[k].name);
        guarded(name, run_open_race, &r, stress() ? 1200 : 300);
    }
    guarded("exact LRU across threads", run_lru_threads, NULL, 120);
    guarded("nested close with one worker", run_nested_close, NULL, 60);
    guarded("callbacks closing each other's handles on two workers", run_cross_close, NULL, 60);
    remove_tree(base);
    printf("test_hostile: all passed\n");
    return 0;
}
