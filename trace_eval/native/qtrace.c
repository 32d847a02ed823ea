/*
 * qtrace.c - the ncf trace recorder: a QEMU 7.2 TCG plugin for x86_64 linux-user guests.
 *
 * For every executed instruction of vCPU 0 it records the static instruction (pc + bytes, in a
 * table written once per translation), the 16 GPRs plus fs/gs base *before* the instruction runs,
 * and every memory access the instruction makes (address, size, load/store, value). It writes
 * the ncf trace format v1 (see ../format.py) with flags REGS|VALUES|BYTES.
 *
 *   qemu-x86_64 -singlestep -plugin qtrace.so,out=T.ncft[,skip=N][,count=M][,exit=on]
 *               [,level=L][,progress=FD][,virt=on][,seed=S]  /full/path/to/prog args...
 *
 * Options
 *   out=PATH     output file (required). Written as PATH.tmp.<pid> and renamed onto PATH only
 *                after the end record is written. If qemu dies before that (killed, execve,
 *                crash of qemu itself) the temp file is left behind: the caller removes it.
 *   skip=N       instructions to fast-forward before recording (default 0)
 *   count=M      instructions to record (default: until the guest exits). After M the file is
 *                finished and the plugin calls qemu_plugin_reset, so the rest of the guest runs
 *                uninstrumented; with exit=on the guest is ended at once with exit(0).
 *   exit=on|off  see count (default off)
 *   level=L      zstd level (default 3)
 *   progress=FD  an open file descriptor; every 2^22 executed instructions and once at the end
 *                the line "executed recorded\n" is written to it. Never blocks (a line that
 *                does not fit is dropped), EPIPE is ignored.
 *   virt=on|off  the virtual environment (see "determinism" below; default on)
 *   seed=S       seed of the virtual getrandom (default 0)
 *
 * Unknown or malformed options make qemu_plugin_install fail (qemu exits with an error).
 *
 * On stderr (a dup taken at start, since guests may close fd 2) the last line is
 *   qtrace: executed=N recorded=M seconds=S eip_mismatches=K dropped=D virt_tsc=T
 *           virt_syscalls=Y virt_skipped=Z out=PATH
 * S is the wall time from the first recorded instruction until the end record is written.
 * eip_mismatches counts instructions where env->eip != the translated pc, i.e. where the
 * register trick (below) failed; any nonzero value makes the trace worthless, and a
 * "qtrace: ERROR" line is printed too. On an I/O error "qtrace: ERROR: ..." is printed, no
 * summary line, and the temp file is removed.
 *
 * How registers are read: QEMU 7.2 calls an instruction callback directly from TCG code, where
 * the host rbp is TCG_AREG0 = the CPUX86State pointer. A 2-instruction asm trampoline passes rbp
 * as the third argument. Guest registers are only synced to env at TB ends, so -singlestep
 * (one instruction per TB) is required; a multi-instruction TB prints a warning.
 *
 * Threads: the vCPU thread fills column buffers; a writer thread (all signals blocked)
 * compresses each full chunk with ZSTD_compressCCtx and writes it, so recording and compression
 * overlap (NBUF buffers, so the vCPU only waits when the writer is two chunks behind). Only
 * vCPU 0 is recorded; a fork()ed child stops recording and never writes.
 *
 * The file is completed by the plugin's atexit callback (guest exit/exit_group) or when count is
 * reached. A guest killed by a signal, an execve, or a killed qemu leave only PATH.tmp.<pid>.
 * The guest's exit status is not changed by an I/O error: callers check for the summary line.
 *
 * Diagnostics: with QTRACE_STATS set in the environment a second line reports the vCPU thread's
 * CPU time while recording, the time it waited for the writer, and the writer's zstd time.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>
#include "qemu-plugin-min.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define NREG 18                  /* rax rcx rdx rbx rsp rbp rsi rdi r8..r15 fs_base gs_base */
#define CHUNK (1u << 20)         /* max instructions per chunk */
#define MEMCAP (4u * CHUNK)      /* memory records per chunk; beyond: dropped */
#define MEMSOFT (MEMCAP - 4096u) /* past this, flush at the next instruction boundary */
#define PROGRESS_EVERY (1ull << 22)
#define NBUF 3                   /* chunk buffers: one filling, up to two with the writer */
#define FLAGS 7u                 /* REGS | VALUES | BYTES */
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* u64 word offsets into QEMU 7.2's CPUX86State: regs[16] at 0, eip at byte 128, segs[6] at byte
 * 184 (24 bytes each, base at +8): fs base at byte 288 (word 36), gs base at 312 (word 39). */
#define ENV_EIP 16
#define ENV_FS 36
#define ENV_GS 39

typedef struct { /* the STATIC column entry, 32 bytes */
    uint32_t sid;
    uint8_t len, pad[3];
    uint64_t pc;
    uint8_t bytes[16];
} StaticInsn;
typedef struct {
    StaticInsn rec;
    uint32_t emitted;
    uint8_t kind; /* K_*: instructions whose results the virtual environment replaces */
} Insn;
enum { K_NONE, K_RDTSC, K_RDTSCP, K_SYSCALL };
typedef struct { /* chunk header, 48 bytes */
    char magic[4];
    uint32_t n_insn, n_mem, n_static, n_regval, crc;
    uint64_t first, raw_size, comp_size;
} ChunkHdr;
typedef struct { /* end record, 64 bytes */
    char magic[4];
    uint32_t n_chunks;
    uint64_t n_insn, n_mem, n_static, executed, dropped;
    uint32_t crc;
    uint8_t reserved[12];
} EndRec;
_Static_assert(sizeof(StaticInsn) == 32 && sizeof(ChunkHdr) == 48 && sizeof(EndRec) == 64, "layout");

typedef struct { /* one chunk's columns */
    uint32_t n, nm, ns, nr;
    uint64_t first;
    uint32_t *sid, *m0, *mask; /* m0[i]: index of insn i's first memory record (-> nmem) */
    uint64_t *regval, *maddr, *mval;
    uint8_t *minfo;
    StaticInsn *st;
    int busy; /* handed to the writer */
} Buf;

enum { SKIP, REC, DONE };

/* Hot state first: what the two callbacks touch on every instruction / access. */
static struct {
    int mode;
    uint32_t n, n_limit, nm, mem_soft, nr, ns, use_api, check_left;
    uint64_t eip_bad;
    uint32_t *sid, *m0, *mask;
    uint64_t *regval, *maddr, *mval;
    uint8_t *minfo;
    StaticInsn *st;
    uint64_t prev[NREG];
    /* cold */
    Buf *cur;
    uint64_t first;        /* recorded instructions in earlier chunks */
    uint64_t exec;         /* SKIP mode: instructions executed so far */
    uint64_t evt;          /* SKIP mode: exec at which skip_event runs */
    uint64_t next_prog;    /* next progress point (executed count) */
    uint64_t skip, count, dropped, n_static_total, n_mem_total;
    uint32_t n_chunks, next_sid;
    int exit_when_done, level, warned, progress_fd, child;
    const char *out;
    char *tmp;
    int fd;
    qemu_plugin_id_t id;
    pid_t pid;
    FILE *log;
    struct timespec t0, c0;
    Buf bufs[NBUF];
    int next_buf;
    /* writer thread */
    pthread_t thr;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_free;
    Buf *q[NBUF];
    int qh, qn, stop, prog_pending, werr;
    uint64_t prog_exec, prog_rec;
    double wait_s, comp_s;
    EndRec end;
    /* the virtual environment (see "Determinism" above) */
    int virt;
    uint8_t pend;             /* K_* of the previous instruction: its results are fixed now */
    uint64_t pend_next;       /* the pc that follows it */
    uint64_t sys_nr, sys_a[6];
    uint64_t rng;             /* getrandom's stream */
    uint8_t rnd_fd[1024];     /* descriptors open on /dev/urandom or /dev/random */
    uint64_t v_tsc, v_sys, v_skipped;
    uint32_t n_dev, n_ino;
    uint64_t dev_of[64], ino_key[2 * 4096], ino_of[4096];
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv_work = PTHREAD_COND_INITIALIZER,
       .cv_free = PTHREAD_COND_INITIALIZER, .progress_fd = -1, .fd = -1, .virt = 1};

/* ------------------------------------------------------------------------------ writer thread */
static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k < 0 ? errno : EIO;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

static void write_progress(uint64_t exec, uint64_t rec) /* writer thread only: SIGPIPE blocked */
{
    char line[64];
    int len = snprintf(line, sizeof line, "%llu %llu\n", (unsigned long long)exec,
                       (unsigned long long)rec);
    struct pollfd p = {.fd = S.progress_fd, .events = POLLOUT};
    if (poll(&p, 1, 0) == 1 && (p.revents & POLLOUT)) /* room for a small write: never blocks */
        if (write(S.progress_fd, line, (size_t)len) < 0) { /* EPIPE, EAGAIN: ignore */ }
}

/* Compress one chunk into one zstd frame and write header + frame. */
static void write_chunk(ZSTD_CCtx *cc, Buf *b, uint8_t **raw, size_t *raw_cap, uint8_t **dst,
                        size_t *dst_cap)
{
    size_t n = b->n, nm = b->nm;
    size_t sz = 32 * b->ns + 4 * n + 2 * n + 4 * n + 8 * b->nr + 8 * nm + 8 * nm + nm;
    size_t bound = ZSTD_compressBound(sz) + sizeof(ChunkHdr);
    if (sz > *raw_cap && !(*raw = realloc(*raw, *raw_cap = sz + sz / 4)))
        goto oom;
    if (bound > *dst_cap && !(*dst = realloc(*dst, *dst_cap = bound + bound / 4)))
        goto oom;
    uint8_t *p = *raw;
#define PUT(src, len) (memcpy(p, (src), (len)), p += (len))
    PUT(b->st, 32 * b->ns);
    PUT(b->sid, 4 * n);
    uint16_t *nmem = (uint16_t *)p;
    for (size_t i = 0; i + 1 < n; i++)
        nmem[i] = (uint16_t)(b->m0[i + 1] - b->m0[i]);
    if (n)
        nmem[n - 1] = (uint16_t)(nm - b->m0[n - 1]);
    p += 2 * n;
    PUT(b->mask, 4 * n);
    PUT(b->regval, 8 * b->nr);
    PUT(b->maddr, 8 * nm);
    PUT(b->mval, 8 * nm);
    PUT(b->minfo, nm);
#undef PUT
    struct timespec a, z;
    clock_gettime(CLOCK_MONOTONIC, &a);
    size_t comp = ZSTD_compressCCtx(cc, *dst + sizeof(ChunkHdr), *dst_cap - sizeof(ChunkHdr), *raw,
                                    sz, S.level);
    clock_gettime(CLOCK_MONOTONIC, &z);
    S.comp_s += (z.tv_sec - a.tv_sec) + 1e-9 * (z.tv_nsec - a.tv_nsec);
    if (ZSTD_isError(comp)) {
        fprintf(S.log, "qtrace: ERROR: zstd: %s\n", ZSTD_getErrorName(comp));
        S.werr = EIO;
        return;
    }
    ChunkHdr h = {{'N', 'C', 'F', 'C'}, b->n, b->nm, b->ns, b->nr, 0, b->first, sz, comp};
    uLong crc = crc32(crc32(0L, Z_NULL, 0), (const Bytef *)&h, sizeof h);
    h.crc = (uint32_t)crc32_z(crc, *dst + sizeof h, comp);
    memcpy(*dst, &h, sizeof h);
    S.werr = write_all(S.fd, *dst, sizeof h + comp);
    return;
oom:
    S.werr = ENOMEM;
}

static void *writer(void *arg)
{
    (void)arg;
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    uint8_t *raw = NULL, *dst = NULL;
    size_t raw_cap = 0, dst_cap = 0;
    if (!cc)
        S.werr = ENOMEM;
    pthread_mutex_lock(&S.mu);
    for (;;) {
        while (!S.qn && !S.stop && !S.prog_pending)
            pthread_cond_wait(&S.cv_work, &S.mu);
        if (S.prog_pending) {
            uint64_t e = S.prog_exec, r = S.prog_rec;
            S.prog_pending = 0;
            pthread_mutex_unlock(&S.mu);
            write_progress(e, r);
            pthread_mutex_lock(&S.mu);
            continue;
        }
        if (S.qn) {
            Buf *b = S.q[S.qh];
            pthread_mutex_unlock(&S.mu);
            if (!S.werr)
                write_chunk(cc, b, &raw, &raw_cap, &dst, &dst_cap);
            pthread_mutex_lock(&S.mu);
            S.qh = (S.qh + 1) % NBUF;
            S.qn--;
            b->busy = 0;
            pthread_cond_broadcast(&S.cv_free);
            continue;
        }
        break; /* stop, queue drained */
    }
    pthread_mutex_unlock(&S.mu);
    ZSTD_freeCCtx(cc);
    free(raw);
    free(dst);
    if (!S.werr) {
        EndRec *e = &S.end;
        e->crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), (const Bytef *)e, sizeof *e);
        S.werr = write_all(S.fd, e, sizeof *e);
    }
    if (close(S.fd) && !S.werr)
        S.werr = errno;
    S.fd = -1;
    if (!S.werr && rename(S.tmp, S.out))
        S.werr = errno;
    if (S.werr)
        unlink(S.tmp);
    if (S.progress_fd >= 0)
        write_progress(S.end.executed, S.end.n_insn);
    return NULL;
}

/* ------------------------------------------------------------------------------ vCPU side */
static void load_buf(Buf *b) /* make b the buffer being filled */
{
    S.cur = b;
    b->n = b->nm = b->ns = b->nr = 0;
    S.n = S.nm = S.ns = S.nr = 0;
    S.sid = b->sid, S.m0 = b->m0, S.mask = b->mask, S.regval = b->regval;
    S.maddr = b->maddr, S.mval = b->mval, S.minfo = b->minfo, S.st = b->st;
    S.mem_soft = S.check_left ? 0 : MEMSOFT;
}

static void flush_chunk(void)
{
    Buf *b = S.cur;
    if (!S.n)
        return;
    b->n = S.n, b->nm = S.nm, b->ns = S.ns, b->nr = S.nr, b->first = S.first;
    S.first += S.n;
    S.n_chunks++;
    S.n_static_total += S.ns;
    S.n_mem_total += S.nm;
    Buf *next = &S.bufs[S.next_buf];
    S.next_buf = (S.next_buf + 1) % NBUF;
    pthread_mutex_lock(&S.mu);
    b->busy = 1;
    S.q[(S.qh + S.qn) % NBUF] = b;
    S.qn++;
    pthread_cond_signal(&S.cv_work);
    if (next->busy) { /* the writer is behind: wait for it */
        struct timespec a, z;
        clock_gettime(CLOCK_MONOTONIC, &a);
        while (next->busy)
            pthread_cond_wait(&S.cv_free, &S.mu);
        clock_gettime(CLOCK_MONOTONIC, &z);
        S.wait_s += (z.tv_sec - a.tv_sec) + 1e-9 * (z.tv_nsec - a.tv_nsec);
    }
    pthread_mutex_unlock(&S.mu);
    load_buf(next);
}

static void post_progress(uint64_t exec, uint64_t rec)
{
    if (S.progress_fd < 0)
        return;
    pthread_mutex_lock(&S.mu);
    S.prog_exec = exec, S.prog_rec = rec, S.prog_pending = 1;
    pthread_cond_signal(&S.cv_work);
    pthread_mutex_unlock(&S.mu);
}

static void reset_done(qemu_plugin_id_t id) { (void)id; }

static void finish(int at_exit)
{
    if (S.mode == DONE || S.child || getpid() != S.pid)
        return;
    int was_rec = S.mode == REC;
    uint64_t rec = S.first + S.n;
    uint64_t exec = was_rec ? S.skip + rec : S.exec;
    struct timespec c1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    double vcpu_cpu = (c1.tv_sec - S.c0.tv_sec) + 1e-9 * (c1.tv_nsec - S.c0.tv_nsec);
    S.mode = DONE;
    flush_chunk();
    EndRec e = {{'N', 'C', 'F', 'E'}, S.n_chunks, rec, S.n_mem_total, S.n_static_total, exec,
                S.dropped, 0, {0}};
    pthread_mutex_lock(&S.mu);
    S.end = e;
    S.stop = 1;
    pthread_cond_signal(&S.cv_work);
    pthread_mutex_unlock(&S.mu);
    pthread_join(S.thr, NULL);
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = was_rec ? (t1.tv_sec - S.t0.tv_sec) + 1e-9 * (t1.tv_nsec - S.t0.tv_nsec) : 0;
    if (S.eip_bad)
        fprintf(S.log, "qtrace: ERROR: %llu eip mismatches: env is not CPUX86State (wrong QEMU "
                "version?) or -singlestep is missing; the register values are wrong\n",
                (unsigned long long)S.eip_bad);
    if (S.werr)
        fprintf(S.log, "qtrace: ERROR: writing %s failed: %s; no trace written\n", S.out,
                strerror(S.werr));
    else
        fprintf(S.log, "qtrace: executed=%llu recorded=%llu seconds=%.3f eip_mismatches=%llu "
                "dropped=%llu virt_tsc=%llu virt_syscalls=%llu virt_skipped=%llu out=%s\n",
                (unsigned long long)exec, (unsigned long long)rec, dt,
                (unsigned long long)S.eip_bad, (unsigned long long)S.dropped,
                (unsigned long long)S.v_tsc, (unsigned long long)S.v_sys,
                (unsigned long long)S.v_skipped, S.out);
    if (getenv("QTRACE_STATS"))
        fprintf(S.log, "qtrace: stats: vcpu_cpu_s=%.3f vcpu_wait_s=%.3f compress_s=%.3f chunks=%u\n", vcpu_cpu, S.wait_s,
                S.comp_s, S.n_chunks);
    fflush(S.log);
    if (at_exit)
        return;
    if (S.exit_when_done)
        exit(S.werr ? 1 : 0);
    qemu_plugin_reset(S.id, reset_done); /* drop the instrumentation for the rest of the run */
}

/* Compute how many instructions the chunk may hold before rec_event must run again. */
static void set_limit(void)
{
    uint64_t lim = CHUNK;
    if (S.count - S.first < lim)
        lim = S.count - S.first;
    if (S.progress_fd >= 0) {
        uint64_t to_prog = S.next_prog - (S.skip + S.first); /* > S.n */
        if (to_prog < lim)
            lim = to_prog;
    }
    S.n_limit = (uint32_t)lim;
}

/* Record one instruction. `full`: the first instruction of a chunk carries all registers. */
static inline __attribute__((always_inline)) void record(const Insn *in, const uint64_t *env,
                                                         int full)
{
    uint32_t n = S.n, k = S.nr, m = 0;
    uint64_t *out = S.regval + k, *prev = S.prev;
    S.eip_bad += env[ENV_EIP] != in->rec.pc; /* proof that env really is CPUX86State */
    if (unlikely(!in->emitted)) {
        ((Insn *)in)->emitted = 1;
        S.st[S.ns++] = in->rec;
    }
    if (full) {
        for (int r = 0; r < 16; r++)
            out[r] = prev[r] = env[r];
        out[16] = prev[16] = env[ENV_FS];
        out[17] = prev[17] = env[ENV_GS];
        m = (1u << NREG) - 1;
        k += NREG;
    } else {
        /* branch-free delta: always store, advance only when changed (regval has NREG slack) */
        uint32_t j = 0;
#define R(r, w)                                                                                    \
    do {                                                                                           \
        uint64_t v = env[w];                                                                       \
        uint32_t c = v != prev[r];                                                                 \
        out[j] = v;                                                                                \
        j += c;                                                                                    \
        m |= c << r;                                                                               \
        prev[r] = v;                                                                               \
    } while (0)
        R(0, 0); R(1, 1); R(2, 2); R(3, 3); R(4, 4); R(5, 5); R(6, 6); R(7, 7);
        R(8, 8); R(9, 9); R(10, 10); R(11, 11); R(12, 12); R(13, 13); R(14, 14); R(15, 15);
        R(16, ENV_FS); R(17, ENV_GS);
#undef R
        k += j;
    }
    S.nr = k;
    S.sid[n] = in->rec.sid;
    S.mask[n] = m;
    S.m0[n] = S.nm;
    S.n = n + 1;
}

/* Slow path of a recorded instruction: chunk full, count reached, memory cap, progress. */
static __attribute__((noinline)) void rec_event(const Insn *in, const uint64_t *env)
{
    if (S.child || getpid() != S.pid) { /* a fork()ed child: never record or write */
        S.child = 1;
        S.mode = DONE;
        return;
    }
    uint64_t rec = S.first + S.n;
    if (S.progress_fd >= 0 && S.skip + rec >= S.next_prog) {
        post_progress(S.skip + rec, rec);
        S.next_prog += PROGRESS_EVERY;
    }
    if (rec >= S.count) {
        finish(0);
        return;
    }
    if (S.n >= CHUNK || S.nm >= MEMSOFT)
        flush_chunk();
    set_limit();
    record(in, env, S.n == 0);
}

static __attribute__((noinline)) void skip_event(const Insn *in, const uint64_t *env)
{
    if (S.child || getpid() != S.pid) {
        S.child = 1;
        S.mode = DONE;
        return;
    }
    if (S.progress_fd >= 0 && S.exec >= S.next_prog) {
        post_progress(S.exec, 0);
        S.next_prog += PROGRESS_EVERY;
    }
    if (S.exec >= S.skip) { /* this instruction is the first recorded one */
        if (!S.count) {
            finish(0);
            return;
        }
        S.mode = REC;
        clock_gettime(CLOCK_MONOTONIC, &S.t0);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &S.c0);
        set_limit();
        record(in, env, 1);
        return;
    }
    S.exec++;
    S.evt = S.progress_fd >= 0 && S.next_prog < S.skip ? S.next_prog : S.skip;
}


/* ------------------------------------------------------------------------------ determinism
 * The guest runs in a virtual environment so that the same program, input and window give the
 * same trace, byte for byte, on every run and machine. QEMU fixes AT_RANDOM and RDRAND (-seed),
 * the caller fixes the executable path, argv[0], environment, stack size and pids (capture.py).
 * What the host would otherwise leak into guest registers and memory is replaced here, at the
 * instruction after the one that produced it (its results are then in env and guest memory, and
 * no guest instruction has read them yet):
 *   rdtsc, rdtscp              a virtual time-stamp counter: 1 tick per executed instruction
 *   time, gettimeofday,        a virtual clock: 1 ns per executed instruction, the wall clock
 *   clock_gettime/getres,      starting at 2026-01-01T00:00:00Z and boot time at 1000 s;
 *   times, getrusage           CPU time = executed instructions (ns); rusage counters 0
 *   getrandom, reads of        a splitmix64 stream from seed=N
 *   /dev/urandom, /dev/random  (their descriptors are followed from open to close)
 *   sysinfo                    16 GiB RAM, 12 GiB free, no swap, 1 process, uptime virtual
 *   uname                      Linux ncf 6.1.0 "#1 SMP ncf" x86_64
 *   stat, fstat, lstat,        device and inode numbers renumbered in order of first sight,
 *   newfstatat, statx          times = the virtual epoch, blksize 4096, blocks = ceil(size/512)
 * Only vCPU 0 is virtualized (the recorded one). A syscall that does not return to the next
 * instruction (a signal arrived) keeps its host results; such cases are counted (virt_skipped).
 */
#define NS 1000000000ull
#define V_EPOCH 1767225600ull /* 2026-01-01T00:00:00Z */
#define V_BOOT 1000ull

static uint64_t icount(void) { return S.mode == REC ? S.skip + S.first + S.n : S.exec; }

static void put64(uint64_t a, uint64_t v) { memcpy((void *)(uintptr_t)a, &v, 8); }
static void put32(uint64_t a, uint32_t v) { memcpy((void *)(uintptr_t)a, &v, 4); }
static uint64_t get64(uint64_t a) { uint64_t v; memcpy(&v, (const void *)(uintptr_t)a, 8); return v; }
static uint32_t get32(uint64_t a) { uint32_t v; memcpy(&v, (const void *)(uintptr_t)a, 4); return v; }

static void put_time(uint64_t a, uint64_t ns, int usec) /* struct timespec or timeval */
{
    put64(a, ns / NS);
    put64(a + 8, usec ? ns % NS / 1000 : ns % NS);
}

static uint64_t clock_ns(int64_t clk, uint64_t ns)
{
    switch (clk) {
    case 0: case 5: case 8: case 11: return V_EPOCH * NS + ns; /* REALTIME(_COARSE, _ALARM), TAI */
    case 1: case 4: case 6: case 7: case 9: return V_BOOT * NS + ns; /* MONOTONIC.., BOOTTIME.. */
    default: return ns; /* process / thread CPU-time clocks */
    }
}

static uint64_t vdev(uint64_t dev)
{
    for (uint32_t k = 0; k < S.n_dev; k++)
        if (S.dev_of[k] == dev)
            return 0x801 + k;
    if (S.n_dev < 64)
        S.dev_of[S.n_dev++] = dev;
    return 0x801 + S.n_dev - 1;
}

static uint64_t vino(uint64_t dev, uint64_t ino)
{
    for (uint32_t k = 0; k < S.n_ino; k++)
        if (S.ino_key[2 * k] == dev && S.ino_key[2 * k + 1] == ino)
            return S.ino_of[k];
    uint64_t v = 1000 + S.n_ino;
    if (S.n_ino < 4096) {
        S.ino_key[2 * S.n_ino] = dev, S.ino_key[2 * S.n_ino + 1] = ino;
        S.ino_of[S.n_ino++] = v;
    }
    return v;
}

static void virt_stat(uint64_t st) /* struct stat, x86_64 */
{
    uint64_t dev = get64(st), size = get64(st + 48);
    put64(st + 8, vino(dev, get64(st + 8)));
    put64(st, vdev(dev));
    put64(st + 56, 4096);
    put64(st + 64, (size + 511) / 512);
    for (int t = 72; t <= 104; t += 16)
        put_time(st + (uint64_t)t, V_EPOCH * NS, 0);
}

static void virt_statx(uint64_t stx) /* struct statx */
{
    uint32_t maj = get32(stx + 136), min = get32(stx + 140);
    uint64_t dev = ((uint64_t)(maj & 0xfff) << 8) | (min & 0xff) | ((uint64_t)(min & ~0xffu) << 12) |
                   ((uint64_t)(maj & ~0xfffu) << 32);
    uint64_t size = get64(stx + 40), v = vdev(dev);
    put64(stx + 32, vino(dev, get64(stx + 32)));
    put32(stx + 136, (uint32_t)(v >> 8)), put32(stx + 140, (uint32_t)(v & 0xff));
    put32(stx + 4, 4096);
    put64(stx + 48, (size + 511) / 512);
    for (int t = 64; t <= 112; t += 16) {
        put64(stx + (uint64_t)t, V_EPOCH);
        put32(stx + (uint64_t)t + 8, 0);
    }
    put64(stx + 144, 1); /* stx_mnt_id */
}

static uint64_t splitmix(void)
{
    uint64_t z = (S.rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void put_random(uint64_t a, int64_t n)
{
    for (int64_t k = 0; k < n; k += 8) {
        uint64_t r = splitmix();
        memcpy((void *)(uintptr_t)(a + (uint64_t)k), &r, n - k < 8 ? (size_t)(n - k) : 8);
    }
}

static int random_device(uint64_t path)
{
    const char *p = (const char *)(uintptr_t)path;
    return p && (!strcmp(p, "/dev/urandom") || !strcmp(p, "/dev/random"));
}

static void put_str(uint64_t a, const char *str) /* one 65-byte utsname field */
{
    memset((void *)(uintptr_t)a, 0, 65);
    memcpy((void *)(uintptr_t)a, str, strlen(str));
}

static void virt_syscall(uint64_t *env)
{
    int64_t ret = (int64_t)env[0];
    const uint64_t *a = S.sys_a, ns = icount();
    if (ret < 0 && ret > -4096)
        return; /* failed: the kernel wrote nothing */
    switch (S.sys_nr) {
    case 201: /* time */
        env[0] = V_EPOCH + ns / NS;
        if (a[0])
            put64(a[0], env[0]);
        break;
    case 96: /* gettimeofday */
        if (a[0])
            put_time(a[0], V_EPOCH * NS + ns, 1);
        if (a[1])
            put64(a[1], 0);
        break;
    case 228: /* clock_gettime */
        if (a[1])
            put_time(a[1], clock_ns((int64_t)a[0], ns), 0);
        break;
    case 229: /* clock_getres */
        if (a[1])
            put_time(a[1], 1, 0);
        break;
    case 100: /* times */
        env[0] = (V_BOOT * NS + ns) / 10000000;
        if (a[0]) {
            put64(a[0], ns / 10000000);
            put64(a[0] + 8, 0), put64(a[0] + 16, 0), put64(a[0] + 24, 0);
        }
        break;
    case 98: /* getrusage */
        if (a[1]) {
            memset((void *)(uintptr_t)a[1], 0, 144);
            put_time(a[1], ns, 1);
        }
        break;
    case 99: /* sysinfo */
        if (a[0]) {
            memset((void *)(uintptr_t)a[0], 0, 112);
            put64(a[0], V_BOOT + ns / NS);
            put64(a[0] + 32, 16ull << 30), put64(a[0] + 40, 12ull << 30);
            *(uint16_t *)(uintptr_t)(a[0] + 80) = 1;
            put32(a[0] + 104, 1);
        }
        break;
    case 318: /* getrandom */
        put_random(a[0], ret);
        break;
    case 2: case 257: /* open, openat: follow a random device's descriptor */
        if (ret >= 1024 || !random_device(S.sys_nr == 2 ? a[0] : a[1]))
            return;
        S.rnd_fd[ret] = 1;
        return;
    case 3: /* close */
        if (a[0] < 1024)
            S.rnd_fd[a[0]] = 0;
        return;
    case 0: case 17: /* read, pread64 */
        if (a[0] >= 1024 || !S.rnd_fd[a[0]])
            return;
        put_random(a[1], ret);
        break;
    case 63: /* uname */
        if (a[0]) {
            put_str(a[0], "Linux"), put_str(a[0] + 65, "ncf"), put_str(a[0] + 130, "6.1.0");
            put_str(a[0] + 195, "#1 SMP ncf"), put_str(a[0] + 260, "x86_64");
            put_str(a[0] + 325, "(none)");
        }
        break;
    case 4: case 5: case 6: /* stat, fstat, lstat */
        virt_stat(a[1]);
        break;
    case 262: /* newfstatat */
        virt_stat(a[2]);
        break;
    case 332: /* statx */
        virt_statx(a[4]);
        break;
    default:
        return;
    }
    S.v_sys++;
}

/* Called for every instruction while the virtual environment has work: the previous instruction
 * was an rdtsc/syscall (its results are fixed now), or this one is (its inputs are saved). */
static __attribute__((noinline)) void virt_step(const Insn *in, uint64_t *env)
{
    if (S.pend) {
        if (env[ENV_EIP] != S.pend_next) {
            S.v_skipped++;
        } else if (S.pend == K_SYSCALL) {
            virt_syscall(env);
        } else {
            uint64_t tsc = icount();
            env[0] = tsc & 0xffffffffu, env[2] = tsc >> 32;
            if (S.pend == K_RDTSCP)
                env[1] = 0; /* TSC_AUX: cpu 0 */
            S.v_tsc++;
        }
        S.pend = 0;
    }
    if (in->kind) {
        S.pend = in->kind;
        S.pend_next = in->rec.pc + in->rec.len;
        if (in->kind == K_SYSCALL) {
            static const int arg[6] = {7, 6, 2, 10, 8, 9}; /* rdi rsi rdx r10 r8 r9 */
            S.sys_nr = env[0];
            for (int k = 0; k < 6; k++)
                S.sys_a[k] = env[arg[k]];
        }
    }
}

static uint8_t insn_kind(const uint8_t *b, int len)
{
    int i = 0;
    while (i < len && (b[i] == 0x66 || b[i] == 0x67 || b[i] == 0xf2 || b[i] == 0xf3 ||
                       (b[i] & 0xf0) == 0x40))
        i++;
    if (i + 1 < len && b[i] == 0x0f && b[i + 1] == 0x31)
        return K_RDTSC;
    if (i + 1 < len && b[i] == 0x0f && b[i + 1] == 0x05)
        return K_SYSCALL;
    if (i + 2 < len && b[i] == 0x0f && b[i + 1] == 0x01 && b[i + 2] == 0xf9)
        return K_RDTSCP;
    return K_NONE;
}

/* Called from TCG code through the trampoline below, with env = CPUX86State. */
__attribute__((used, visibility("hidden"))) void insn_exec(unsigned vcpu, void *ud,
                                                           uint64_t *env)
{
    const Insn *in = ud;
    if (unlikely(S.pend | in->kind) && !vcpu)
        virt_step(in, env);
    if (likely(S.mode == REC) && likely(!vcpu)) {
        if (unlikely(S.n == S.n_limit))
            rec_event(in, env);
        else
            record(in, env, 0);
        return;
    }
    if (S.mode == SKIP && !vcpu) {
        if (likely(S.exec < S.evt))
            S.exec++;
        else
            skip_event(in, env);
    }
}

/*
 * QEMU calls instruction callbacks directly from generated code, where the host register rbp
 * is TCG_AREG0, i.e. the CPUX86State pointer. A C function cannot reliably read rbp after its
 * own prologue, so this 2-instruction trampoline passes rbp as a third argument.
 */
__attribute__((visibility("hidden"))) void insn_exec_tramp(unsigned vcpu, void *ud);
__asm__(".text\n.globl insn_exec_tramp\n.hidden insn_exec_tramp\n"
        ".type insn_exec_tramp,@function\n.p2align 4\ninsn_exec_tramp:\n"
        "\tmov %rbp, %rdx\n\tjmp insn_exec\n.size insn_exec_tramp,.-insn_exec_tramp\n");

/* qemu_plugin_meminfo_t in QEMU 7.2 is MemOpIdx | rw << 16, MemOpIdx = MemOp << 4 | mmu_idx, and
 * the size shift is MemOp & MO_SIZE (7). The callback decodes that inline instead of making two
 * calls into qemu per access; the first MEMCHECK accesses are checked against the API, and on
 * any difference the API is used from then on. */
#define MEMCHECK 100000
static inline uint8_t minfo_inline(qemu_plugin_meminfo_t info)
{
    return (uint8_t)(((info >> 4) & 7) | ((info >> 17) & 1) << 7);
}
static uint8_t minfo_api(qemu_plugin_meminfo_t info)
{
    return (uint8_t)(qemu_plugin_mem_size_shift(info) | (qemu_plugin_mem_is_store(info) ? 0x80 : 0));
}

static __attribute__((noinline)) int mem_event(qemu_plugin_meminfo_t info)
{
    if (S.nm >= MEMCAP) {
        S.dropped++;
        return 0;
    }
    if (S.nm >= MEMSOFT) {
        S.n_limit = S.n;     /* flush at the next instruction boundary */
        S.mem_soft = MEMCAP; /* until then only the hard cap applies */
        return 1;
    }
    if (S.check_left) { /* self-check of the inline meminfo decoding */
        if (minfo_inline(info) != minfo_api(info) && !S.use_api) {
            S.use_api = 1;
            fprintf(S.log, "qtrace: note: meminfo encoding differs from QEMU 7.2's; using the "
                    "(slower) plugin API calls\n");
        }
        if (--S.check_left == 0)
            S.mem_soft = MEMSOFT;
    }
    return 1;
}

static void mem_access(unsigned vcpu, qemu_plugin_meminfo_t info, uint64_t va, void *ud)
{
    (void)ud;
    if (S.mode != REC || vcpu)
        return;
    uint32_t nm = S.nm;
    if (unlikely(nm >= S.mem_soft) && !mem_event(info))
        return;
    uint8_t mi = likely(!S.use_api) ? minfo_inline(info) : minfo_api(info);
    uint64_t v;
    /* linux-user with guest_base == 0: the guest address is the host address. The callback
     * runs after the access, so this is the value loaded / stored. */
    const void *p = (const void *)(uintptr_t)va;
    switch (mi & 0xF) {
    case 0: v = *(const uint8_t *)p; break;
    case 1: { uint16_t t; memcpy(&t, p, 2); v = t; break; }
    case 2: { uint32_t t; memcpy(&t, p, 4); v = t; break; }
    default: memcpy(&v, p, 8); break; /* QEMU 7.2 splits wider accesses into 8-byte pieces */
    }
    S.maddr[nm] = va;
    S.mval[nm] = v;
    S.minfo[nm] = mi;
    S.nm = nm + 1;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (S.mode == DONE)
        return;
    if (n > 1 && !S.warned++)
        fprintf(S.log, "qtrace: WARNING: multi-instruction TB; run qemu with -singlestep "
                "or register values will be stale\n");
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *qi = qemu_plugin_tb_get_insn(tb, i);
        Insn *in = calloc(1, sizeof *in);
        in->rec.sid = S.next_sid++;
        in->rec.pc = qemu_plugin_insn_vaddr(qi);
        in->rec.len = (uint8_t)qemu_plugin_insn_size(qi);
        memcpy(in->rec.bytes, qemu_plugin_insn_data(qi), in->rec.len < 16 ? in->rec.len : 16);
        in->kind = S.virt ? insn_kind(in->rec.bytes, in->rec.len < 16 ? in->rec.len : 16) : K_NONE;
        /* RW: the virtual environment writes registers (only at the start of a 1-insn TB, before
         * the instruction has loaded any) */
        qemu_plugin_register_vcpu_insn_exec_cb(qi, insn_exec_tramp, QEMU_PLUGIN_CB_RW_REGS, in);
        qemu_plugin_register_vcpu_mem_cb(qi, mem_access, QEMU_PLUGIN_CB_NO_REGS,
                                         QEMU_PLUGIN_MEM_RW, in);
    }
}

static void at_exit(qemu_plugin_id_t id, void *p) { (void)id; (void)p; finish(1); }

static void atfork_child(void) { S.child = 1; S.mode = DONE; }

/* ------------------------------------------------------------------------------ install */
static int parse_u64(const char *key, const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 0);
    if (errno || !*v || *end || *v == '-') {
        fprintf(stderr, "qtrace: bad value for %s: '%s' (expected a non-negative integer)\n", key, v);
        return -1;
    }
    *out = x;
    return 0;
}

/* The plugin's own fds (progress pipe, trace file, log) live at HIGH_FD and above, close-on-exec: the
 * guest's open() returns the lowest free number, so an fd of ours at a low number would change the
 * guest's fd numbers, hence its registers and its trace, with whatever the caller had open (xz's input
 * was fd 5 from a shell, 6 elsewhere). With `replace`, fd is closed (the copy replaces it, or the plugin
 * stops). No fallback to a low number: an error the user can fix beats a trace that depends on the caller. */
#define HIGH_FD 900
static int move_high(int fd, const char *what, int replace) {
    int hi = fcntl(fd, F_DUPFD_CLOEXEC, HIGH_FD);
    if (hi < 0) {
        struct rlimit rl = {0};
        getrlimit(RLIMIT_NOFILE, &rl);
        fprintf(stderr, "qtrace: cannot move the %s (fd %d) to fd %d or above: %s; the open-file limit is "
                "%llu, raise it above %d (ulimit -n 1024)\n", what, fd, HIGH_FD, strerror(errno),
                (unsigned long long)rl.rlim_cur, HIGH_FD);
        hi = -1;
    }
    if (replace)
        close(fd);
    return hi;
}

static int parse_onoff(const char *key, const char *v, int *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "1") || !strcmp(v, "true"))
        *out = 1;
    else if (!strcmp(v, "off") || !strcmp(v, "0") || !strcmp(v, "false"))
        *out = 0;
    else {
        fprintf(stderr, "qtrace: bad value for %s: '%s' (on or off)\n", key, v);
        return -1;
    }
    return 0;
}

static void *xalloc(size_t n) { return malloc(n); } /* lazily backed: untouched pages cost nothing */

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    if (strcmp(info->target_name, "x86_64") || info->system_emulation) {
        fprintf(stderr, "qtrace: only x86_64 linux-user is supported\n");
        return -1;
    }
    S.id = id;
    S.count = UINT64_MAX;
    S.level = 3;
    uint64_t x;
    for (int i = 0; i < argc; i++) {
        char *v = strchr(argv[i], '=');
        if (!v) {
            fprintf(stderr, "qtrace: bad option '%s' (expected key=value; options: out, skip, "
                    "count, exit, level, progress)\n", argv[i]);
            return -1;
        }
        *v++ = 0;
        const char *k = argv[i];
        if (!strcmp(k, "out")) {
            S.out = v;
        } else if (!strcmp(k, "skip")) {
            if (parse_u64(k, v, &S.skip))
                return -1;
        } else if (!strcmp(k, "count")) {
            if (parse_u64(k, v, &S.count))
                return -1;
        } else if (!strcmp(k, "level")) {
            char *end;
            long l = strtol(v, &end, 10);
            if (!*v || *end || l < ZSTD_minCLevel() || l > ZSTD_maxCLevel()) {
                fprintf(stderr, "qtrace: bad value for level: '%s' (zstd levels %d..%d)\n", v,
                        ZSTD_minCLevel(), ZSTD_maxCLevel());
                return -1;
            }
            S.level = (int)l;
        } else if (!strcmp(k, "exit")) {
            if (parse_onoff(k, v, &S.exit_when_done))
                return -1;
        } else if (!strcmp(k, "virt")) {
            if (parse_onoff(k, v, &S.virt))
                return -1;
        } else if (!strcmp(k, "seed")) {
            if (parse_u64(k, v, &S.rng))
                return -1;
        } else if (!strcmp(k, "progress")) {
            if (parse_u64(k, v, &x))
                return -1;
            if (x > 1 << 20 || fcntl((int)x, F_GETFL) < 0) {
                fprintf(stderr, "qtrace: progress=%s is not an open file descriptor\n", v);
                return -1;
            }
            S.progress_fd = (int)x;
        } else {
            fprintf(stderr, "qtrace: unknown option '%s' (options: out, skip, count, exit, level, "
                    "progress, virt, seed)\n", k);
            return -1;
        }
    }
    if (!S.out || !*S.out) {
        fprintf(stderr, "qtrace: the option out=PATH is required\n");
        return -1;
    }
    if (S.progress_fd >= 0 && (S.progress_fd = move_high(S.progress_fd, "progress pipe", 1)) < 0)
        return -1;
    S.next_prog = PROGRESS_EVERY;
    S.check_left = MEMCHECK;
    S.evt = S.progress_fd >= 0 && S.next_prog < S.skip ? S.next_prog : S.skip;

    for (int b = 0; b < NBUF; b++) {
        Buf *B = &S.bufs[b];
        B->sid = xalloc(4ul * CHUNK);
        B->m0 = xalloc(4ul * CHUNK);
        B->mask = xalloc(4ul * CHUNK);
        B->regval = xalloc(8ul * NREG * (CHUNK + 1));
        B->st = xalloc(sizeof(StaticInsn) * CHUNK);
        B->maddr = xalloc(8ul * MEMCAP);
        B->mval = xalloc(8ul * MEMCAP);
        B->minfo = xalloc(MEMCAP);
        if (!B->sid || !B->m0 || !B->mask || !B->regval || !B->st || !B->maddr || !B->mval ||
            !B->minfo) {
            fprintf(stderr, "qtrace: out of memory\n");
            return -1;
        }
    }
    load_buf(&S.bufs[0]);
    S.next_buf = 1;
    S.pid = getpid();
    int lfd = move_high(2, "log copy of stderr", 0);
    if (lfd < 0)
        return -1;
    S.log = fdopen(lfd, "w");
    if (!S.log)
        S.log = stderr;

    if (asprintf(&S.tmp, "%s.tmp.%d", S.out, (int)S.pid) < 0)
        return -1;
    int fd = open(S.tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "qtrace: cannot create %s: %s\n", S.tmp, strerror(errno));
        return -1;
    }
    if ((S.fd = move_high(fd, "trace file", 1)) < 0) {
        unlink(S.tmp);
        return -1;
    }
    uint8_t hdr[64] = "NCFTRACE";
    uint16_t ver = 1, hsz = 64;
    uint32_t flags = FLAGS, nreg = NREG, chunk = CHUNK;
    memcpy(hdr + 8, &ver, 2);
    memcpy(hdr + 10, &hsz, 2);
    memcpy(hdr + 12, &flags, 4);
    memcpy(hdr + 16, &nreg, 4);
    memcpy(hdr + 20, &chunk, 4);
    int err = write_all(S.fd, hdr, sizeof hdr);
    if (err) {
        fprintf(stderr, "qtrace: cannot write %s: %s\n", S.tmp, strerror(err));
        unlink(S.tmp);
        return -1;
    }

    /* The writer thread must never run a host signal handler (QEMU's handlers assume a vCPU
     * thread), and its writes must get EPIPE instead of SIGPIPE: block everything in it. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&S.thr, NULL, writer, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        fprintf(stderr, "qtrace: cannot start the writer thread: %s\n", strerror(rc));
        unlink(S.tmp);
        return -1;
    }
    pthread_atfork(NULL, NULL, atfork_child);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
