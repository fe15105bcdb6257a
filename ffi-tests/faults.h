/* Fault injection for the C tests: transient I/O errors (EIO, ENOSPC) returned by the
 * kernel's own system-call entry, so raw system calls are caught too (the folder kind
 * calls the kernel through rustix, which no LD_PRELOAD shim sees).
 *
 * How: a seccomp filter on the calling thread (inherited by every thread it starts
 * later, the library's workers included) sends the file system calls below to a
 * supervisor thread started before the filter, which is therefore not filtered itself.
 * For each call the supervisor either lets it run unchanged
 * (SECCOMP_USER_NOTIF_FLAG_CONTINUE) or, while injection is armed, fails it with an
 * error chosen by a seeded generator. Linux 5.5 or later. */
#ifndef DUCKCACHE_FAULTS_H
#define DUCKCACHE_FAULTS_H

#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The calls faults are injected into, and the errors each may get. */
typedef struct {
    long nr;
    const char *name;
    int errors[2];
} fault_call;

static const fault_call FAULT_CALLS[] = {
    {SYS_openat, "openat", {EIO, ENOSPC}},
    /* Reads, with DUCKCACHE_FAULT_READS=1 (issue 30 item 22: a failed read must be
     * CACHE_ERR_IO, never CORRUPT): SQLite reads its pages with pread64, value files are
     * read with read. Optional because intercepting every read costs: a 1500-operation
     * campaign takes about five times as long. */
    {SYS_read, "read", {EIO, EIO}},
    {SYS_pread64, "pread64", {EIO, EIO}},
    {SYS_write, "write", {EIO, ENOSPC}},
    {SYS_pwrite64, "pwrite64", {EIO, ENOSPC}},
    {SYS_fsync, "fsync", {EIO, EIO}},
    {SYS_fdatasync, "fdatasync", {EIO, EIO}},
    {SYS_renameat2, "renameat2", {EIO, ENOSPC}},
    {SYS_renameat, "renameat", {EIO, ENOSPC}},
    {SYS_rename, "rename", {EIO, ENOSPC}},
    {SYS_mkdirat, "mkdirat", {EIO, ENOSPC}},
    {SYS_mkdir, "mkdir", {EIO, ENOSPC}},
    {SYS_unlinkat, "unlinkat", {EIO, EIO}},
    {SYS_unlink, "unlink", {EIO, EIO}},
    {SYS_ftruncate, "ftruncate", {EIO, EIO}},
};
#define FAULT_NCALLS (sizeof FAULT_CALLS / sizeof FAULT_CALLS[0])

static struct {
    int listener;
    /* Chance in 1000 that an intercepted call fails while armed (0: disarmed). */
    volatile int per_mille;
    uint64_t rng;
    volatile unsigned long injected, seen;
    pthread_mutex_t lock;
} faults = {.listener = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

static uint64_t fault_next(void) {
    /* splitmix64: small, seedable, good enough to pick faults. */
    uint64_t z = (faults.rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void *fault_supervisor(void *arg) {
    (void)arg;
    struct seccomp_notif req;
    struct seccomp_notif_resp resp;
    while (__atomic_load_n(&faults.listener, __ATOMIC_ACQUIRE) < 0) usleep(1000);
    for (;;) {
        memset(&req, 0, sizeof req);
        if (ioctl(faults.listener, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) {
            if (errno == EINTR) continue;
            return NULL;
        }
        memset(&resp, 0, sizeof resp);
        resp.id = req.id;
        resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        pthread_mutex_lock(&faults.lock);
        faults.seen++;
        if (faults.per_mille > 0 && (int)(fault_next() % 1000) < faults.per_mille) {
            for (size_t i = 0; i < FAULT_NCALLS; i++) {
                if (FAULT_CALLS[i].nr == req.data.nr) {
                    resp.flags = 0;
                    resp.error = -FAULT_CALLS[i].errors[fault_next() % 2];
                    faults.injected++;
                    if (getenv("DUCKCACHE_FAULT_LOG"))
                        fprintf(stderr, "    injected %s -> %s\n", FAULT_CALLS[i].name, strerror(-resp.error));
                }
            }
        }
        pthread_mutex_unlock(&faults.lock);
        /* ENOENT: the caller was interrupted meanwhile; nothing to answer. */
        (void)ioctl(faults.listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
    }
}

/* Installs the filter on this thread (and the threads it starts from now on) and
 * starts the supervisor. Returns 0, or -1 when the kernel refuses (then nothing is
 * installed and the caller should say the campaign cannot run here). */
static int faults_install(uint64_t seed) {
    faults.rng = seed;
    struct sock_filter prog[4 + 2 * FAULT_NCALLS];
    size_t n = 0;
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    const char *reads = getenv("DUCKCACHE_FAULT_READS");
    int with_reads = reads && strcmp(reads, "1") == 0;
    for (size_t i = 0; i < FAULT_NCALLS; i++) {
        if (!with_reads && (FAULT_CALLS[i].nr == SYS_read || FAULT_CALLS[i].nr == SYS_pread64)) continue;
        /* if nr == call: notify; else go on to the next comparison */
        prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)FAULT_CALLS[i].nr, 0, 1);
        prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF);
    }
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog fprog = {.len = (unsigned short)n, .filter = prog};
    /* The supervisor starts first, so the filter does not apply to it. */
    pthread_t t;
    if (pthread_create(&t, NULL, fault_supervisor, NULL) != 0) return -1;
    long fd = -1;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0)
        fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
    if (fd < 0) {
        pthread_cancel(t);
        return -1;
    }
    __atomic_store_n(&faults.listener, (int)fd, __ATOMIC_RELEASE);
    pthread_detach(t);
    return 0;
}

/* Arms injection: each intercepted call fails with this chance in 1000 (0 disarms). */
static void faults_arm(int per_mille) {
    pthread_mutex_lock(&faults.lock);
    faults.per_mille = per_mille;
    pthread_mutex_unlock(&faults.lock);
}

#endif
