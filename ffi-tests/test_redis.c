/* The Redis/Valkey backend against real redis-server processes this test starts itself
 * (loopback TCP ports, passwords, temporary folders; all stopped at the end): the bytes
 * other clients read, the documented layout of flagged entries, prefix isolation, a
 * server that is stopped, frozen, restarted or refuses the password, a value over the
 * server's limit, the pool under threads, and the tiered handle over a Redis far cache.
 * The contract suite itself runs on Redis in test_v2.c. */
#include "persistent.h"
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>

#define SCALE_OPS(full, small) (small_scale() ? (small) : (full))

static char err_buf[2048];
static const char *last_error(void) {
    cache_last_error(err_buf, sizeof err_buf);
    return err_buf;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---- a server of our own ----------------------------------------------------------- */

struct server {
    pid_t pid;
    int port;
    char dir[256];
};

static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    CHECK_EQ(getsockname(s, (struct sockaddr *)&a, &len), 0);
    close(s);
    return ntohs(a.sin_port);
}

/* A raw connection: the test's own RESP client, to read what other clients see. */
static int dial(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        close(s);
        return -1;
    }
    struct timeval tv = {5, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return s;
}

/* Sends a command of `argc` byte strings; reads one reply into `out` (cap bytes): a bulk
 * string's bytes (returns its length, -1 for nil), an integer (returns it), a simple
 * string or error (copied, returns its length). */
static long command(int s, int argc, const char **argv, const size_t *lens, char *out, size_t cap) {
    char head[64];
    int n = snprintf(head, sizeof head, "*%d\r\n", argc);
    CHECK(write(s, head, (size_t)n) == n);
    for (int i = 0; i < argc; i++) {
        n = snprintf(head, sizeof head, "$%zu\r\n", lens[i]);
        CHECK(write(s, head, (size_t)n) == n);
        CHECK(write(s, argv[i], lens[i]) == (ssize_t)lens[i]);
        CHECK(write(s, "\r\n", 2) == 2);
    }
    char line[256];
    size_t at = 0;
    while (at < sizeof line - 1) {
        CHECK(read(s, line + at, 1) == 1);
        if (at > 0 && line[at - 1] == '\r' && line[at] == '\n') break;
        at++;
    }
    line[at - 1] = 0;
    if (line[0] == ':') return atol(line + 1);
    if (line[0] == '+' || line[0] == '-') {
        snprintf(out, cap, "%s", line);
        return (long)strlen(out);
    }
    CHECK(line[0] == '$');
    long len = atol(line + 1);
    if (len < 0) return -1;
    CHECK((size_t)len + 2 <= cap);
    size_t got = 0;
    while (got < (size_t)len + 2) {
        ssize_t r = read(s, out + got, (size_t)len + 2 - got);
        CHECK(r > 0);
        got += (size_t)r;
    }
    return len;
}

static long cmd2(int s, const char *a, const char *b, char *out, size_t cap) {
    const char *argv[2] = {a, b};
    size_t lens[2] = {strlen(a), strlen(b)};
    return command(s, 2, argv, lens, out, cap);
}

static void start(struct server *sv, int port) {
    sv->port = port;
    sv->pid = fork();
    CHECK(sv->pid >= 0);
    if (sv->pid == 0) {
        char p[16];
        snprintf(p, sizeof p, "%d", port);
        const char *server = getenv("DUCKCACHE_REDIS_SERVER") ? getenv("DUCKCACHE_REDIS_SERVER") : "redis-server";
        execlp(server, server, "--port", p, "--bind", "127.0.0.1", "--requirepass", "secret", "--save", "",
               "--appendonly", "no", "--dir", sv->dir, "--proto-max-bulk-len", "2mb", "--logfile", "redis.log",
               (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        int s = dial(port);
        if (s >= 0) {
            char out[64];
            long n = cmd2(s, "AUTH", "secret", out, sizeof out);
            close(s);
            if (n > 0 && strcmp(out, "+OK") == 0) return;
        }
        sleep_ms(25);
    }
    fprintf(stderr, "redis-server did not start on port %d\n", port);
    exit(1);
}

static void stop(struct server *sv) {
    kill(sv->pid, SIGKILL);
    waitpid(sv->pid, NULL, 0);
}

static cache_t *open_on(int port, const char *params) {
    char uri[256];
    snprintf(uri, sizeof uri, "redis://:secret@127.0.0.1:%d/0?%s", port, params);
    cache_t *c = NULL;
    CHECK_EQ(cache_open(uri, &c), CACHE_OK);
    return c;
}

static int raw_client(int port) {
    int s = dial(port);
    CHECK(s >= 0);
    char out[64];
    CHECK(cmd2(s, "AUTH", "secret", out, sizeof out) > 0);
    return s;
}

/* ---- the tests ------------------------------------------------------------------- */

static void test_layout_and_isolation(int port) {
    cache_t *c = open_on(port, "prefix=app:");
    int raw = raw_client(port);
    char out[4096];
    /* flags 0: exactly the bytes, at prefix + key */
    const uint8_t bytes[5] = {0, 'a', 0xff, '\r', '\n'};
    CHECK_EQ(cache_set(c, K("bin"), bytes, sizeof bytes, CACHE_NO_TTL), CACHE_OK);
    CHECK_EQ(cmd2(raw, "GET", "app:bin", out, sizeof out), 5);
    CHECK(memcmp(out, bytes, 5) == 0);
    /* a counter is Redis's own decimal text: INCRBY from another client adds to it */
    CHECK_EQ(cache_incr(c, K("n"), 41, CACHE_NO_TTL, NULL), CACHE_OK);
    CHECK_EQ(cmd2(raw, "INCR", "app:n", out, sizeof out), 42);
    CHECK_GET(c, "n", "42");
    /* other flags: a hash with fields v and f */
    CHECK_EQ(cache_set_flagged(c, K("fl"), K("val"), CACHE_NO_TTL, 7), CACHE_OK);
    CHECK_EQ(cmd2(raw, "TYPE", "app:fl", out, sizeof out), 5);
    CHECK(strcmp(out, "+hash") == 0);
    const char *hget[3] = {"HGET", "app:fl", "f"};
    size_t hlen[3] = {4, 6, 1};
    CHECK_EQ(command(raw, 3, hget, hlen, out, sizeof out), 1);
    CHECK(out[0] == '7');
    /* TTLs are the server's, in milliseconds */
    CHECK_EQ(cache_set(c, K("t"), K("v"), 100.0), CACHE_OK);
    long pttl = cmd2(raw, "PTTL", "app:t", out, sizeof out);
    CHECK(pttl > 90000 && pttl <= 100000);
    /* nothing outside the prefix is touched: not by clear, delete_prefix or keys */
    const char *set[3] = {"SET", "other:keep", "mine"};
    size_t slen[3] = {3, 10, 4};
    CHECK(command(raw, 3, set, slen, out, sizeof out) > 0);
    const char *glob[3] = {"SET", "app*x", "glob"}; /* a glob character in a key outside */
    size_t glen[3] = {3, 5, 4};
    CHECK(command(raw, 3, glob, glen, out, sizeof out) > 0);
    cache_t *star = open_on(port, "prefix=app%2A"); /* prefix "app*": its own keys only */
    uint64_t n = 99;
    CHECK_EQ(cache_len(star, &n), CACHE_OK);
    CHECK_EQ(n, 1); /* only "app*x": the '*' is escaped in SCAN's pattern, not a glob */
    CHECK_EQ(cache_has(star, K("x")), CACHE_OK);
    CHECK_EQ(cache_delete_prefix(star, NULL, 0, &n), CACHE_OK);
    CHECK_EQ(n, 1);
    CHECK_EQ(cmd2(raw, "EXISTS", "app:bin", out, sizeof out), 1); /* the other prefix's keys stay */
    cache_free(star);
    CHECK_EQ(cache_clear(c), CACHE_OK);
    CHECK_EQ(cmd2(raw, "GET", "other:keep", out, sizeof out), 4);
    CHECK_EQ(cmd2(raw, "EXISTS", "app:bin", out, sizeof out), 0);
    /* stats are the handle's own; bytes unknown */
    cache_stats st;
    CHECK_EQ(cache_get_stats(c, &st), CACHE_OK);
    CHECK(st.sets >= 3 && st.bytes == 0 && st.entries == 0);
    close(raw);
    cache_free(c);
}

static void test_value_over_the_limit(int port) {
    cache_t *c = open_on(port, "prefix=big:");
    size_t n = 3 << 20; /* the server takes 2 MiB */
    uint8_t *v = calloc(1, n);
    CHECK(v != NULL);
    CHECK_EQ(cache_set(c, K("k"), v, n, CACHE_NO_TTL), CACHE_ERR_TOO_LARGE);
    CHECK(strstr(last_error(), "proto-max-bulk-len") != NULL);
    CHECK_EQ(cache_set(c, K("k"), v, 1 << 20, CACHE_NO_TTL), CACHE_OK); /* and the handle works */
    free(v);
    cache_free(c);
}

static void test_unavailable_and_back(struct server *sv) {
    cache_t *c = open_on(sv->port, "prefix=down:&timeout_ms=500&pool_size=2");
    CHECK_EQ(cache_set(c, K("k"), K("v"), CACHE_NO_TTL), CACHE_OK);
    stop(sv);
    double t = now_s();
    cache_buf b;
    CHECK_EQ(cache_get(c, K("k"), &b), CACHE_ERR_UNAVAILABLE);
    CHECK(now_s() - t < 2.0);
    char where[32];
    snprintf(where, sizeof where, "127.0.0.1:%d", sv->port);
    CHECK(strstr(last_error(), where) != NULL);
    CHECK_EQ(cache_set(c, K("k"), K("v"), CACHE_NO_TTL), CACHE_ERR_UNAVAILABLE);
    /* the server comes back (empty: no persistence): the same handle works again */
    start(sv, sv->port);
    CHECK_EQ(cache_set(c, K("k"), K("again"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "k", "again");

    /* a frozen server (SIGSTOP): calls give up within the timeout, then recover */
    kill(sv->pid, SIGSTOP);
    t = now_s();
    CHECK_EQ(cache_get(c, K("k"), &b), CACHE_ERR_UNAVAILABLE);
    double took = now_s() - t;
    CHECK(took >= 0.4 && took < 2.5);
    kill(sv->pid, SIGCONT);
    CHECK_GET(c, "k", "again");
    cache_free(c);
}

static void test_refusals(int port) {
    char uri[256];
    cache_t *c = (cache_t *)0x1;
    snprintf(uri, sizeof uri, "redis://:wrong@127.0.0.1:%d", port);
    CHECK_EQ(cache_open(uri, &c), CACHE_ERR_UNAVAILABLE);
    CHECK(c == (cache_t *)0x1);
    CHECK(strstr(last_error(), "***") != NULL);       /* the password is not shown */
    CHECK(strstr(last_error(), "wrong") == NULL);
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d", port); /* no password at all */
    CHECK_EQ(cache_open(uri, &c), CACHE_ERR_UNAVAILABLE);

    /* a listener that never answers: open gives up within timeout_ms */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    CHECK_EQ(listen(s, 4), 0);
    socklen_t len = sizeof a;
    CHECK_EQ(getsockname(s, (struct sockaddr *)&a, &len), 0);
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d?timeout_ms=300", ntohs(a.sin_port));
    double t = now_s();
    CHECK_EQ(cache_open(uri, &c), CACHE_ERR_UNAVAILABLE);
    CHECK(now_s() - t < 2.0);
    close(s);
}

struct pool_arg {
    cache_t *c;
    int id;
};

static void *pool_worker(void *p) {
    struct pool_arg *a = p;
    char key[32];
    for (int i = 0; i < SCALE_OPS(300, 60); i++) {
        snprintf(key, sizeof key, "w%d-%d", a->id, i);
        CHECK_EQ(cache_set(a->c, K(key), K(key), CACHE_NO_TTL), CACHE_OK);
        CHECK_GET(a->c, key, key);
        CHECK_EQ(cache_incr(a->c, K("shared"), 1, CACHE_NO_TTL, NULL), CACHE_OK);
    }
    return NULL;
}

static void test_pool_under_threads(int port) {
    cache_t *c = open_on(port, "prefix=pool:&pool_size=3");
    pthread_t th[6];
    struct pool_arg args[6];
    for (int i = 0; i < 6; i++) {
        args[i] = (struct pool_arg){c, i};
        CHECK_EQ(pthread_create(&th[i], NULL, pool_worker, &args[i]), 0);
    }
    for (int i = 0; i < 6; i++) CHECK_EQ(pthread_join(th[i], NULL), 0);
    char want[16];
    snprintf(want, sizeof want, "%d", 6 * SCALE_OPS(300, 60));
    CHECK_GET(c, "shared", want);
    cache_free(c);
}

/* The tiered handle: near memory in front of far Redis; another client's write is seen
 * once the near copy's bound passes. */
static void test_tiered(int port) {
    cache_t *near = NULL, *far = open_on(port, "prefix=tier:"), *t = NULL;
    CHECK_EQ(cache_open_memory(0, &near), CACHE_OK);
    CHECK_EQ(cache_open_tiered(near, near, 1.0, &t), CACHE_ERR_INVALID_ARG); /* the same handle */
    CHECK_EQ(cache_open_tiered(near, far, 0.0, &t), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_open_tiered(near, far, NAN, &t), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_open_tiered(near, far, INFINITY, &t), CACHE_ERR_INVALID_ARG);
    CHECK_EQ(cache_set(near, K("still"), K("mine"), CACHE_NO_TTL), CACHE_OK); /* both still usable */
    CHECK_EQ(cache_open_tiered(near, far, 0.3, &t), CACHE_OK);
    cache_t *other = open_on(port, "prefix=tier:");
    CHECK_EQ(cache_set(t, K("k"), K("v1"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(other, "k", "v1"); /* written through to far */
    CHECK_GET(t, "k", "v1");
    CHECK_EQ(cache_set(other, K("k"), K("v2"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(t, "k", "v1"); /* the near copy, for at most 0.3 s */
    sleep_ms(400);
    CHECK_GET(t, "k", "v2"); /* seen within near_ttl_max */
    cache_stats st;
    CHECK_EQ(cache_get_stats(t, &st), CACHE_OK);
    CHECK(st.hits >= 3);
    cache_free(other);
    cache_free(t); /* frees near and far */
}

/* rediss://: a server with a certificate from a CA of this test's own (openssl). With
 * ca_file naming that CA the handle works; without it, the unknown issuer is refused
 * (UNAVAILABLE, saying why), never a plain-text fallback. */
static void test_tls(const char *dir) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && printf 'subjectAltName=IP:127.0.0.1\n' > san.ext && "
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=duckcache-test-ca >/dev/null 2>&1 && "
             "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 >/dev/null 2>&1 && "
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext >/dev/null 2>&1",
             dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_tls: openssl could not make the test certificates (is openssl installed?)\n");
        exit(1);
    }
    int port = free_port();
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        char p[16], cert[600], key[600], ca[600];
        snprintf(p, sizeof p, "%d", port);
        snprintf(cert, sizeof cert, "%s/server.pem", dir);
        snprintf(key, sizeof key, "%s/server.key", dir);
        snprintf(ca, sizeof ca, "%s/ca.pem", dir);
        const char *server = getenv("DUCKCACHE_REDIS_SERVER") ? getenv("DUCKCACHE_REDIS_SERVER") : "redis-server";
        execlp(server, server, "--port", "0", "--tls-port", p, "--bind", "127.0.0.1", "--tls-cert-file", cert,
               "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no", "--requirepass",
               "secret", "--save", "", "--appendonly", "no", "--dir", dir, "--logfile", "redis-tls.log", (char *)NULL);
        _exit(127);
    }
    char uri[1024];
    snprintf(uri, sizeof uri, "rediss://:secret@127.0.0.1:%d?prefix=tls:&timeout_ms=2000&ca_file=%s/ca.pem", port, dir);
    cache_t *c = NULL;
    cache_status s = CACHE_ERR_UNAVAILABLE;
    for (int i = 0; i < 200 && s == CACHE_ERR_UNAVAILABLE; i++) {
        s = cache_open(uri, &c);
        if (s == CACHE_ERR_UNAVAILABLE) sleep_ms(25);
    }
    CHECK_EQ(s, CACHE_OK);
    CHECK_EQ(cache_set(c, K("k"), K("over tls"), CACHE_NO_TTL), CACHE_OK);
    CHECK_GET(c, "k", "over tls");
    int64_t n;
    CHECK_EQ(cache_incr(c, K("n"), 5, CACHE_NO_TTL, &n), CACHE_OK);
    cache_free(c);
    /* The system's roots do not know this CA: refused, and the message says why. */
    snprintf(uri, sizeof uri, "rediss://:secret@127.0.0.1:%d?timeout_ms=2000", port);
    c = (cache_t *)0x1;
    CHECK_EQ(cache_open(uri, &c), CACHE_ERR_UNAVAILABLE);
    CHECK(c == (cache_t *)0x1);
    CHECK(strstr(last_error(), "ertificate") != NULL || strstr(last_error(), "Unknown") != NULL ||
          strstr(last_error(), "issuer") != NULL);
    /* Plain text to a TLS port is no connection either. */
    snprintf(uri, sizeof uri, "redis://:secret@127.0.0.1:%d?timeout_ms=500", port);
    CHECK_EQ(cache_open(uri, &c), CACHE_ERR_UNAVAILABLE);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

int main(void) {
    struct server sv;
    make_tmpdir(sv.dir, sizeof sv.dir);
    start(&sv, free_port());
    test_layout_and_isolation(sv.port);
    test_value_over_the_limit(sv.port);
    test_refusals(sv.port);
    test_pool_under_threads(sv.port);
    test_tiered(sv.port);
    test_unavailable_and_back(&sv);
    test_tls(sv.dir);
    stop(&sv);
    remove_tree(sv.dir);
    puts("test_redis: all passed");
    return 0;
}
