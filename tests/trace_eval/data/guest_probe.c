/* What a program can learn about its host, printed: tests/trace_eval/test_reproducible.py traces it
 * and checks that every line is the tracer's virtual environment, not the host's. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/time.h>
#include <sys/times.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

int main(void)
{
    unsigned long long t0 = __rdtsc();
    unsigned aux;
    unsigned long long t1 = __rdtscp(&aux);
    struct timespec rt, mono;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tms tm;
    clock_t ticks = times(&tm);
    unsigned char rnd[16];
    getrandom(rnd, sizeof rnd, 0);
    unsigned char dev[8] = {0};
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd >= 0 && read(fd, dev, sizeof dev) == (ssize_t)sizeof dev)
        close(fd);
    struct sysinfo si;
    sysinfo(&si);
    struct utsname u;
    uname(&u);
    struct stat st;
    stat(".", &st);
    printf("tsc %llu %llu aux %u\n", t0, t1, aux);
    printf("realtime %lld mono %lld gettimeofday %lld time %lld\n", (long long)rt.tv_sec, (long long)mono.tv_sec,
           (long long)tv.tv_sec, (long long)time(NULL));
    printf("times %lld utime %lld\n", (long long)ticks, (long long)tm.tms_utime);
    printf("random");
    for (int i = 0; i < 16; i++)
        printf(" %02x", rnd[i]);
    printf("\nurandom");
    for (int i = 0; i < 8; i++)
        printf(" %02x", dev[i]);
    printf("\nsysinfo totalram %lu freeram %lu procs %u\n", si.totalram * si.mem_unit, si.freeram * si.mem_unit,
           (unsigned)si.procs);
    printf("uname %s %s %s %s\n", u.sysname, u.nodename, u.release, u.machine);
    printf("stat dev %lu ino %lu mtime %lld blksize %ld\n", (unsigned long)st.st_dev, (unsigned long)st.st_ino,
           (long long)st.st_mtime, (long)st.st_blksize);
    printf("pid %d\n", (int)getpid());
    printf("fd %d\n", fd); /* the lowest free number: what the tracer itself holds open must not move it */
    int ignored = 0, blocked = 0; /* inherited across exec: xz, for one, keeps an ignored SIGINT ignored */
    sigset_t mask;
    sigprocmask(SIG_SETMASK, NULL, &mask);
    for (int s = 1; s < NSIG; s++) {
        struct sigaction sa;
        ignored += sigaction(s, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN;
        blocked += sigismember(&mask, s) == 1;
    }
    printf("signals ignored %d blocked %d\n", ignored, blocked);
    return 0;
}
