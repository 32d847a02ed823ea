/* kernel.h: the tiny freestanding runtime shared by the trace_eval kernels.
 *
 * The kernels are static, -nostdlib programs (built by the Makefile with start.S first), so that a
 * run under qemu-x86_64 and a native run execute exactly the same instructions: no libc, no IFUNC
 * choices, no dynamic loader. This header gives them raw write/exit syscalls, a seeded PRNG,
 * decimal argv parsing and decimal printing, plus memset/memcpy in case gcc emits calls to them.
 * Include it from exactly one .c file per program (it defines non-static memset/memcpy).
 *
 * Command line of every kernel: KERNEL SEED SIZE; output: one line, the u64 checksum.
 */
#ifndef NCF_KERNEL_H
#define NCF_KERNEL_H

typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned char u8;

static inline long sys_write(int fd, const void *buf, u64 n)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(1L), "D"((long)fd), "S"(buf), "d"(n)
                     : "rcx", "r11", "memory");
    return r;
}

static inline __attribute__((noreturn)) void sys_exit(int code)
{
    __asm__ volatile("syscall" : : "a"(60L), "D"((long)code) : "rcx", "r11", "memory");
    __builtin_unreachable();
}

/* gcc may emit calls to these for struct copies / zeroing even with -fno-builtin. The optimize
 * attribute stops gcc from turning the loops back into calls to themselves. */
#define NO_LOOP_CALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
NO_LOOP_CALLS void *memset(void *d, int c, u64 n)
{
    u8 *p = d;
    while (n--) *p++ = (u8)c;
    return d;
}
NO_LOOP_CALLS void *memcpy(void *d, const void *s, u64 n)
{
    u8 *p = d;
    const u8 *q = s;
    while (n--) *p++ = *q++;
    return d;
}

/* PRNG: xorshift64*, seeded through splitmix64 so that every seed (0 included) gives a good,
 * non-zero state and nearby seeds give unrelated streams. */
static u64 rng_state;
static void rng_seed(u64 seed)
{
    u64 z = seed + 0x9E3779B97F4A7C15UL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
    z ^= z >> 31;
    rng_state = z ? z : 1;
}
static u64 rng_next(void)
{
    u64 x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DUL;
}
static u64 rng_below(u64 n) { return rng_next() % n; } /* n > 0; modulo bias is irrelevant here */

/* argv[i] as a decimal u64, or dflt if it is absent or not a number. */
static u64 arg_u64(int argc, char **argv, int i, u64 dflt)
{
    if (i >= argc || !argv[i] || !*argv[i]) return dflt;
    u64 v = 0;
    for (const char *s = argv[i]; *s; s++) {
        if (*s < '0' || *s > '9') return dflt;
        v = v * 10 + (u64)(*s - '0');
    }
    return v;
}

static u64 clamp_u64(u64 v, u64 lo, u64 hi) { return v < lo ? lo : v > hi ? hi : v; }

/* "<v>\n" on stdout. */
static void print_u64(u64 v)
{
    char buf[24];
    int i = sizeof buf;
    buf[--i] = '\n';
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    sys_write(1, buf + i, sizeof buf - i);
}

int kmain(int argc, char **argv);

#endif
