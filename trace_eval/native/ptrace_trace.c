/* ptrace_trace: a portable, slow single-step tracer used to cross-check the QEMU plugin.
 *
 *   ptrace_trace OUT N PROG [ARGS...]
 *
 * Runs PROG natively under ptrace and, for each of its first N instructions, writes the registers
 * *before* the instruction executes: one record of 19 little-endian u64,
 *
 *   rip, rax rcx rdx rbx rsp rbp rsi rdi r8 r9 r10 r11 r12 r13 r14 r15, fs_base, gs_base
 *
 * (the GPR order of the ncf trace format), 152 bytes per instruction, no header. Recording starts
 * at the exec stop, i.e. at PROG's first instruction (for a static binary, its _start). If PROG
 * exits earlier the file simply has fewer records. After N instructions the tracer detaches and
 * PROG runs on natively to its end. The exit status is PROG's (128+signal if it was killed); the
 * tracer's own failures print "ptrace_trace: <what>: <errno text>" and exit with 125.
 * Speed: some 25-50 k instructions/s (two context switches and a GETREGS per instruction).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#define TRACER_FAIL 125
#define NREC 19

static pid_t child = -1;

static void die(const char *what)
{
    fprintf(stderr, "ptrace_trace: %s: %s\n", what, strerror(errno));
    if (child > 0) kill(child, SIGKILL);
    exit(TRACER_FAIL);
}

static int status_code(int st)
{
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s OUT N PROG [ARGS...]\n"
                        "  writes rip + 16 GPRs + fs_base + gs_base (19 x u64 LE) before each of "
                        "PROG's first N instructions to OUT\n", argv[0]);
        return 2;
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(argv[2], &end, 10);
    if (errno || *end || end == argv[2] || argv[2][0] == '-') {
        fprintf(stderr, "ptrace_trace: N must be a non-negative decimal integer, got '%s'\n", argv[2]);
        return 2;
    }
    FILE *out = fopen(argv[1], "wb");
    if (!out) {
        fprintf(stderr, "ptrace_trace: cannot open %s: %s\n", argv[1], strerror(errno));
        return TRACER_FAIL;
    }
    static char obuf[1 << 20];
    setvbuf(out, obuf, _IOFBF, sizeof obuf);

    /* a pipe that closes on a successful exec tells the parent whether execv worked */
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) die("pipe2");
    child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        close(pfd[0]);
        if (ptrace(PTRACE_TRACEME, 0, 0, 0) < 0) {
            int e = errno;
            if (write(pfd[1], &e, sizeof e) < 0) _exit(127);
            _exit(127);
        }
        execv(argv[3], argv + 3);
        int e = errno;
        if (write(pfd[1], &e, sizeof e) < 0) _exit(127);
        _exit(127);
    }
    close(pfd[1]);

    int st;
    if (waitpid(child, &st, 0) < 0) die("waitpid");
    int cerr;
    if (read(pfd[0], &cerr, sizeof cerr) == (ssize_t)sizeof cerr) {
        errno = cerr;
        fprintf(stderr, "ptrace_trace: cannot run %s: %s\n", argv[3], strerror(errno));
        child = -1;
        return TRACER_FAIL;
    }
    close(pfd[0]);
    if (!WIFSTOPPED(st) || WSTOPSIG(st) != SIGTRAP) {
        fprintf(stderr, "ptrace_trace: %s did not stop at exec (wait status 0x%x)\n", argv[3], st);
        if (WIFSTOPPED(st)) kill(child, SIGKILL);
        return TRACER_FAIL;
    }
    if (ptrace(PTRACE_SETOPTIONS, child, 0, PTRACE_O_EXITKILL) < 0) die("PTRACE_SETOPTIONS");

    unsigned long long done = 0;
    int sig = 0, exited = 0;
    while (done < n) {
        struct user_regs_struct r;
        if (ptrace(PTRACE_GETREGS, child, 0, &r) < 0) die("PTRACE_GETREGS");
        uint64_t rec[NREC] = {r.rip, r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi,
                              r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15,
                              r.fs_base, r.gs_base};
        if (fwrite(rec, sizeof rec, 1, out) != 1) die("write");
        done++;
        if (ptrace(PTRACE_SINGLESTEP, child, 0, (void *)(long)sig) < 0) die("PTRACE_SINGLESTEP");
        if (waitpid(child, &st, 0) < 0) die("waitpid");
        if (WIFEXITED(st) || WIFSIGNALED(st)) {
            exited = 1;
            break;
        }
        /* a signal other than the single-step trap is passed on with the next step */
        sig = WIFSTOPPED(st) && WSTOPSIG(st) != SIGTRAP ? WSTOPSIG(st) : 0;
    }
    if (fclose(out) != 0) die("close output");
    if (!exited) {
        if (ptrace(PTRACE_DETACH, child, 0, (void *)(long)sig) < 0) die("PTRACE_DETACH");
        if (waitpid(child, &st, 0) < 0) die("waitpid");
    }
    fprintf(stderr, "ptrace_trace: recorded %llu instructions%s; %s %d\n", done,
            exited ? " (program ended)" : "", WIFEXITED(st) ? "exit status" : "killed by signal",
            WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    child = -1;
    return status_code(st);
}
