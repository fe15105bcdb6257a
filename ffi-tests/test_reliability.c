/* Reliability of the persistent kinds through the C ABI (issue 8):
 * - a writer mixing sets, replacements and deletes, killed with SIGKILL at random
 *   moments, 50 times per kind: the store opens, nothing reads back partial or damaged,
 *   every acknowledged operation is there;
 * - 4 processes mixing every operation on one directory: no errors, then pop
 *   exactly-once across the 4, and a consistent final state;
 * - hard input for every kind: zero-length keys and values, a 64 MiB value, NaN and
 *   infinite TTLs, a truncated value file, a full disk (RLIMIT_FSIZE) in a child,
 *   and owner-only permissions on everything created. */
#define _DEFAULT_SOURCE
#include "persistent.h"
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <sys/resource.h>

/* out = base + suffix; a path too long for out fails the test instead of truncating. */
#define PATH_OF(out, base, ...)                                                         \
    do {                                                                                \
        char suffix_[300];                                                              \
        CHECK((size_t)snprintf(suffix_, sizeof suffix_, __VA_ARGS__) < sizeof suffix_); \
        int n_ = snprintf((out), sizeof(out), "%s/%s", (base), suffix_);                \
        CHECK(n_ > 0 && (size_t)n_ < sizeof(out));                                      \
    } while (0)

/* ---- the writer killed at random moments ---- */

/* Operation i of the writer's fixed sequence: which key it touches and what it leaves
 * there (a version number, or -1 for deleted). */
typedef struct {
    int key;
    int version;
} op_t;

static op_t writer_op(int i) {
    if (i % 5 == 4) return (op_t){i - 3, -1};       /* delete an earlier key */
    if (i % 7 == 6) return (op_t){i - 2, i + 1000}; /* replace an earlier key */
    return (op_t){i, i};                            /* a new key */
}

/* A value's bytes and length for a version: a third are large (own value file). */
static size_t version_value(int version, uint8_t *buf) {
    size_t len = (version % 3 == 0) ? 40000 : 10 + (size_t)version % 200;
    fill(buf, len, (unsigned)version);
    return len;
}

static void key_name(int k, char *out, size_t cap) { snprintf(out, cap, "key-%d", k); }

/* The state key k must be in: its version, or -1. */
static void check_key(cache_t *c, int k, int want, int alternative, uint8_t *scratch) {
    char key[32];
    key_name(k, key, sizeof key);
    cache_buf b = {0};
    cache_status s = cache_get(c, K(key), &b);
    CHECK(s == CACHE_OK || s == CACHE_NOT_FOUND);
    int ok = 0;
    for (int pass = 0; pass < 2 && !ok; pass++) {
        int v = pass == 0 ? want : alternative;
        if (v == -2) continue; /* no alternative */
        if (v == -1) {
            ok = s == CACHE_NOT_FOUND;
        } else if (s == CACHE_OK) {
            size_t len = version_value(v, scratch);
            ok = b.len == len && memcmp(b.data, scratch, len) == 0;
        }
    }
    if (!ok) {
        fprintf(stderr, "key-%d: status %d, %zu bytes; want version %d (or %d)\n", k, s, b.len, want,
                alternative);
        exit(1);
    }
    cache_buf_free(&b);
}

static void crash_rounds(opener open, const char *base, int rounds) {
    static uint8_t value[40000];
    static int model[100000];
    unsigned seed = 12345;
    for (int round = 0; round < rounds; round++) {
        char dir[400];
        PATH_OF(dir, base, "crash-%d", round);
        int fds[2];
        CHECK_EQ(pipe(fds), 0);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            cache_t *h = NULL;
            if (open(dir, &h) != CACHE_OK) _exit(2);
            for (int i = 0; i < 100000; i++) {
                op_t op = writer_op(i);
                char key[32];
                key_name(op.key, key, sizeof key);
                cache_status s;
                if (op.version < 0) {
                    s = cache_delete(h, K(key));
                } else {
                    size_t len = version_value(op.version, value);
                    s = cache_set(h, K(key), value, len, CACHE_NO_TTL);
                }
                if (s != CACHE_OK) _exit(3);
                if (write(fds[1], &i, sizeof i) != sizeof i) _exit(4); /* acknowledged */
            }
            _exit(5);
        }
        close(fds[1]);
        /* Once the writer is under way (its first acknowledgement), a random moment. */
        int acked = -1, i;
        CHECK_EQ(read(fds[0], &acked, sizeof acked), (long)sizeof acked);
        seed = seed * 1103515245u + 12345u;
        long delay_us = 2000 + (long)(seed >> 8) % 60000; /* 2 to 62 ms */
        if (small_scale()) delay_us *= 10;
        sleep_ms(delay_us / 1000);
        CHECK_EQ(kill(pid, SIGKILL), 0);
        int status = 0;
        CHECK_EQ(waitpid(pid, &status, 0), pid);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        while (read(fds[0], &i, sizeof i) == sizeof i) acked = i;
        close(fds[0]);

        /* Replay the acknowledged operations into the model; the next one was in flight
         * and may or may not have happened. */
        int keys = acked + 2;
        for (int k = 0; k < keys; k++) model[k] = -1;
        for (int j = 0; j <= acked; j++) model[writer_op(j).key] = writer_op(j).version;
        op_t in_flight = writer_op(acked + 1);

        cache_t *c = NULL;
        CHECK_EQ(open(dir, &c), CACHE_OK);
        for (int k = 0; k < keys; k++)
            check_key(c, k, model[k], k == in_flight.key ? in_flight.version : -2, value);
        CHECK_EQ(cache_set(c, K("after"), K("crash"), CACHE_NO_TTL), CACHE_OK);
        CHECK_GET(c, "after", "crash");
        cache_free(c);
        remove_tree(dir);
    }
}

/* ---- 4 processes on one directory ---- */

#define PROCS 4

/* A child mixing every operation on shared keys; exits 0 when every status was
 * OK or NOT_FOUND and every value read back was one some process wrote. */
static void mixed_child(opener open, const char *dir, int id, int ops) {
    cache_t *c = NULL;
    if (open(dir, &c) != CACHE_OK) _exit(10);
    uint8_t value[64];
    unsigned x = (unsigned)id * 7919u + 1;
    for (int i = 0; i < ops; i++) {
        x = x * 1103515245u + 12345u;
        char key[32];
        snprintf(key, sizeof key, "shared-%u", (x >> 8) % 64);
        unsigned writer = (x >> 16) % 1000;
        fill(value, sizeof value, writer);
        cache_buf b = {0};
        uint64_t n;
        cache_status s;
        switch ((x >> 4) % 6) {
        case 0:
        case 1: s = cache_set(c, K(key), value, sizeof value, (x & 1) ? CACHE_NO_TTL : 30.0); break;
        case 2: s = cache_get(c, K(key), &b); break;
        case 3: s = cache_pop(c, K(key), &b); break;
        case 4: s = cache_delete(c, K(key)); break;
        default: s = (x & 2) ? cache_has(c, K(key)) : cache_len(c, &n); break;
        }
        if (s != CACHE_OK && s != CACHE_NOT_FOUND) {
            char err[256];
            cache_last_error(err, sizeof err);
            fprintf(stderr, "process %d: status %d: %s\n", id, s, err);
            _exit(11);
        }
        if (s == CACHE_OK && b.data) {
            /* a whole value some writer wrote: its bytes follow fill()'s pattern */
            int whole = b.len == sizeof value;
            for (size_t j = 2; whole && j < b.len; j++)
                whole = (uint8_t)(b.data[j] - b.data[j - 1]) == 7u;
            if (!whole) _exit(12);
        }
        cache_buf_free(&b);
    }
    cache_free(c);
    _exit(0);
}

/* A child popping every key of `keys`, reporting what it got on `fd`. */
static void popping_child(opener open, const char *dir, int keys, int fd) {
    cache_t *c = NULL;
    if (open(dir, &c) != CACHE_OK) _exit(20);
    for (int k = 0; k < keys; k++) {
        char key[32];
        snprintf(key, sizeof key, "pop-%d", k);
        cache_buf b = {0};
        cache_status s = cache_pop(c, K(key), &b);
        if (s == CACHE_OK) {
            if (write(fd, &k, sizeof k) != sizeof k) _exit(21);
        } else if (s != CACHE_NOT_FOUND) {
            _exit(22);
        }
        cache_buf_free(&b);
    }
    cache_free(c);
    _exit(0);
}

static void wait_all(pid_t *pids, int n) {
    for (int p = 0; p < n; p++) {
        int status = 0;
        CHECK_EQ(waitpid(pids[p], &status, 0), pids[p]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "process %d ended with status %d\n", p, status);
            exit(1);
        }
    }
}

static void four_processes(opener open, const char *base) {
    char dir[400];
    PATH_OF(dir, base, "stress");
    cache_t *c = NULL;
    CHECK_EQ(open(dir, &c), CACHE_OK);
    cache_free(c);
    int ops = small_scale() ? 100 : 1500;
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        CHECK(pids[p] >= 0);
        if (pids[p] == 0) mixed_child(open, dir, p, ops);
    }
    wait_all(pids, PROCS);

    /* pop exactly-once: N keys popped by 4 processes together give N values */
    int keys = small_scale() ? 100 : 600;
    CHECK_EQ(open(dir, &c), CACHE_OK);
    CHECK_EQ(cache_clear(c), CACHE_OK);
    for (int k = 0; k < keys; k++) {
        char key[32];
        snprintf(key, sizeof key, "pop-%d", k);
        CHECK_EQ(cache_set(c, K(key), K("v"), CACHE_NO_TTL), CACHE_OK);
    }
    cache_free(c); /* children start with no handle of the parent's */
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        CHECK(pids[p] >= 0);
        if (pids[p] == 0) {
            close(fds[0]);
            popping_child(open, dir, keys, fds[1]);
        }
    }
    close(fds[1]);
    static int popped[1000];
    memset(popped, 0, sizeof popped);
    int k, total = 0;
    while (read(fds[0], &k, sizeof k) == sizeof k) {
        CHECK(k >= 0 && k < keys);
        popped[k]++;
        total++;
    }
    close(fds[0]);
    wait_all(pids, PROCS);
    for (int j = 0; j < keys; j++) CHECK_EQ(popped[j], 1);
    CHECK_EQ(total, keys);
    CHECK_EQ(open(dir, &c), CACHE_OK);
    /* consistent final state: nothing left, the counts agree, still usable */
    uint64_t n = 99;
    CHECK_EQ(cache_len(c, &n), CACHE_OK);
    CHECK_EQ(n, 0);
    cache_stats st;
    CHECK_EQ(cache_get_stats(c, &st), CACHE_OK);
    CHECK_EQ(st.entries, 0);
    CHECK_EQ(st.bytes, 0);
    CHECK_EQ(cache_set(c, K("after"), K("stress"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "after", "stress");
    cache_free(c);
}

/* ---- hard input ---- */

static void large_and_empty(cache_t *c) {
    size_t big = (size_t)64 << 20;
    uint8_t *v = malloc(big);
    CHECK(v != NULL);
    fill(v, big, 99);
    CHECK_EQ(cache_set(c, K("big"), v, big, CACHE_NO_TTL), CACHE_OK);
    cache_buf b = {0};
    CHECK_EQ(cache_get(c, K("big"), &b), CACHE_OK);
    CHECK(b.len == big && memcmp(b.data, v, big) == 0);
    cache_buf_free(&b);
    CHECK_EQ(cache_delete(c, K("big")), CACHE_OK);
    free(v);
    CHECK_EQ(cache_set(c, NULL, 0, NULL, 0, CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_get(c, NULL, 0, &b), CACHE_OK);
    CHECK(b.len == 0 && b.data == NULL);
    CHECK_EQ(cache_set(c, K("nan"), K("v"), NAN), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_set(c, K("nan"), K("v"), -NAN), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_set(c, K("inf"), K("v"), INFINITY), CACHE_OK);
    CHECK_GET(c, "inf", "v");
    CHECK_EQ(cache_set(c, K("-inf"), K("v"), -INFINITY), CACHE_OK);
    CHECK_GET(c, "-inf", "v");
    CHECK_EQ(cache_set(c, K("huge ttl"), K("v"), 1e300), CACHE_OK);
    CHECK_GET(c, "huge ttl", "v");
    CHECK_EQ(cache_set(c, K("tiny ttl"), K("v"), 1e-300), CACHE_OK);
    CHECK_EQ(cache_clear(c), CACHE_OK);
}

/* Truncates the one regular file named `leaf` below `dir` (depth first). */
static int truncate_file_named(const char *dir, const char *leaf) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int done = 0;
    while (!done && (e = readdir(d))) {
        if (e->d_name[0] == '.' && (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0)))
            continue;
        char path[1024];
        PATH_OF(path, dir, "%s", e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            done = truncate_file_named(path, leaf);
        } else if (S_ISREG(st.st_mode) && (!leaf || strcmp(e->d_name, leaf) == 0) &&
                   st.st_size >= 40000) {
            CHECK_EQ(truncate(path, 100), 0);
            done = 1;
        }
    }
    closedir(d);
    return done;
}

/* A value file cut short: CORRUPT once (never the short bytes), then the key is gone
 * and the store usable. */
static void truncated_value(opener open, const char *base, const char *leaf) {
    char dir[400];
    PATH_OF(dir, base, "truncated");
    static uint8_t v[40000];
    fill(v, sizeof v, 5);
    cache_t *c = NULL;
    CHECK_EQ(open(dir, &c), CACHE_OK);
    CHECK_EQ(cache_set(c, K("cut"), v, sizeof v, CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, K("fine"), K("ok"), CACHE_NO_TTL), CACHE_OK);
    CHECK(truncate_file_named(dir, leaf));
    cache_buf b = {0};
    CHECK_EQ(cache_get(c, K("cut"), &b), CACHE_ERR_CORRUPT);
    CHECK(b.data == NULL);
    CHECK_EQ(cache_get(c, K("cut"), &b), CACHE_NOT_FOUND);
    CHECK_GET(c, "fine", "ok");
    CHECK_EQ(cache_set(c, K("cut"), v, sizeof v, CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_get(c, K("cut"), &b), CACHE_OK);
    CHECK(b.len == sizeof v && memcmp(b.data, v, sizeof v) == 0);
    cache_buf_free(&b);
    cache_free(c);
}

/* The value of set i in full_disk: 20 KB (inline in SQLite, so the database grows),
 * or every `big_every`th a 5 MiB one (a file of its own, larger than the limit). */
static size_t full_disk_len(int i, int big_every) {
    return (big_every && i % big_every == big_every - 1) ? (size_t)5 << 20 : 20000;
}

/* A full disk: a child limited to 4 MiB per file (RLIMIT_FSIZE) writes until a set
 * fails. The failure must be CACHE_ERR_IO with a message, the child must not die, and
 * the store must afterwards open with every acknowledged set readable. */
static void full_disk(opener open, const char *base, int big_every) {
    char dir[400];
    PATH_OF(dir, base, "full");
    cache_t *c = NULL;
    CHECK_EQ(open(dir, &c), CACHE_OK);
    cache_free(c);
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    uint8_t *v = malloc((size_t)5 << 20);
    CHECK(v != NULL);
    if (pid == 0) {
        close(fds[0]);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = {(rlim_t)4 << 20, (rlim_t)4 << 20};
        if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(30);
        if (open(dir, &c) != CACHE_OK) _exit(31);
        for (int i = 0; i < 2000; i++) {
            char key[32];
            snprintf(key, sizeof key, "fill-%d", i);
            size_t len = full_disk_len(i, big_every);
            fill(v, len, (unsigned)i);
            cache_status s = cache_set(c, K(key), v, len, CACHE_NO_TTL);
            if (s == CACHE_ERR_IO) {
                char err[256];
                if (cache_last_error(err, sizeof err) == 0) _exit(32);
                /* still usable for reads and small deletes */
                cache_buf b = {0};
                if (i > 0 && cache_get(c, K("fill-0"), &b) != CACHE_OK) _exit(33);
                cache_buf_free(&b);
                cache_free(c);
                free(v);
                _exit(0);
            }
            if (s != CACHE_OK) _exit(34);
            if (write(fds[1], &i, sizeof i) != sizeof i) _exit(35);
        }
        _exit(36); /* never reached the limit */
    }
    close(fds[1]);
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "full-disk child ended with status %d\n", status);
        exit(1);
    }
    int acked = -1, i;
    while (read(fds[0], &i, sizeof i) == sizeof i) acked = i;
    close(fds[0]);
    CHECK(acked >= 0);
    CHECK_EQ(open(dir, &c), CACHE_OK);
    for (int k = 0; k <= acked; k++) {
        char key[32];
        snprintf(key, sizeof key, "fill-%d", k);
        size_t len = full_disk_len(k, big_every);
        fill(v, len, (unsigned)k);
        cache_buf b = {0};
        CHECK_EQ(cache_get(c, K(key), &b), CACHE_OK);
        CHECK(b.len == len && memcmp(b.data, v, len) == 0);
        cache_buf_free(&b);
    }
    CHECK_EQ(cache_clear(c), CACHE_OK);
    CHECK_EQ(cache_set(c, K("after"), K("full"), CACHE_NO_TTL), CACHE_OK);
    cache_free(c);
    free(v);
}

/* Nothing the library creates is readable or writable by group or others. */
static void check_owner_only(const char *path) {
    struct stat st;
    CHECK_EQ(lstat(path, &st), 0);
    if (st.st_mode & 077) {
        fprintf(stderr, "%s has mode %o\n", path, st.st_mode & 0777);
        exit(1);
    }
    if (!S_ISDIR(st.st_mode)) return;
    DIR *d = opendir(path);
    CHECK(d != NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char child[1024];
        PATH_OF(child, path, "%s", e->d_name);
        check_owner_only(child);
    }
    closedir(d);
}

static void owner_only(opener open, const char *base) {
    char dir[400];
    PATH_OF(dir, base, "perm/deeper");
    mode_t old = umask(0); /* even with a permissive umask */
    cache_t *c = NULL;
    CHECK_EQ(open(dir, &c), CACHE_OK);
    static uint8_t v[40000];
    CHECK_EQ(cache_set(c, K("small"), K("v"), CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_set(c, K("large"), v, sizeof v, CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cache_save(c), CACHE_OK);
    check_owner_only(dir);
    cache_free(c);
    umask(old);
}

static cache_status open_file(const char *dir, cache_t **out) { return cache_open_file(dir, 0, out); }
static cache_status open_sharded(const char *dir, cache_t **out) {
    return cache_open_sharded(dir, 1 << 20, 4, out);
}
static cache_status open_folder(const char *dir, cache_t **out) { return cache_open_folder(dir, 0, out); }
static cache_status open_sharded_default(const char *dir, cache_t **out) {
    return cache_open_sharded(dir, 0, 0, out);
}

/* The same kinds with the read cache on (cache_open's read_cache): what a handle
   serves from memory must survive every round as what SQLite holds does. */
static cache_status open_uri_on(const char *format, const char *dir, cache_t **out) {
    char uri[600];
    snprintf(uri, sizeof uri, format, dir);
    return cache_open(uri, out);
}
static cache_status open_file_read_cache(const char *dir, cache_t **out) {
    return open_uri_on("file:%s?read_cache=4MiB", dir, out);
}
static cache_status open_sharded_read_cache(const char *dir, cache_t **out) {
    return open_uri_on("sharded:%s?shard_size_limit=1MiB&max_open_shards=4&read_cache=4MiB", dir, out);
}
static cache_status open_sharded_default_read_cache(const char *dir, cache_t **out) {
    return open_uri_on("sharded:%s?read_cache=4MiB", dir, out);
}

int main(void) {
    struct {
        const char *name;
        opener open;
        const char *value_file; /* name of a large value's file, NULL: any large file */
        int big_every;          /* full_disk: how often a value is larger than the limit */
        opener open_large;      /* default limits: room for 64 MiB values, shards past 4 MiB */
    } kinds[] = {{"file", open_file, NULL, 0, open_file},
                 {"sharded", open_sharded, NULL, 0, open_sharded_default},
                 {"file-read-cache", open_file_read_cache, NULL, 0, open_file_read_cache},
                 {"sharded-read-cache", open_sharded_read_cache, NULL, 0,
                  open_sharded_default_read_cache},
                 {"folder", open_folder, "value", 5, open_folder}};
    char base[256];
    make_tmpdir(base, sizeof base);
    int rounds = small_scale() ? 3 : 50;
    cache_t *m = NULL;
    CHECK_EQ(cache_open_memory(0, &m), CACHE_OK);
    large_and_empty(m);
    cache_free(m);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        char dir[400];
        PATH_OF(dir, base, "%s", kinds[k].name);
        CHECK_EQ(mkdir(dir, 0700), 0);
        crash_rounds(kinds[k].open, dir, rounds);
        printf("test_reliability: %s: %d SIGKILL rounds ok\n", kinds[k].name, rounds);
        fflush(stdout); /* before the next fork copies the buffer */
        four_processes(kinds[k].open, dir);
        printf("test_reliability: %s: 4 processes ok\n", kinds[k].name);
        fflush(stdout);
        char hard[512];
        PATH_OF(hard, dir, "hard");
        cache_t *c = NULL;
        CHECK_EQ(kinds[k].open_large(hard, &c), CACHE_OK);
        large_and_empty(c);
        cache_free(c);
        truncated_value(kinds[k].open, dir, kinds[k].value_file);
        full_disk(kinds[k].open_large, dir, kinds[k].big_every);
        owner_only(kinds[k].open, dir);
        printf("test_reliability: %s: hard input ok\n", kinds[k].name);
        fflush(stdout);
    }
    remove_tree(base);
    printf("test_reliability: ok\n");
    return 0;
}
