/* corpus.h: the shared frame of the algorithm-classification corpus (ncf classify).
 *
 * Every program here is one implementation of one algorithm class, named CLASS_IMPL.c (the class
 * is the part before the first underscore). Like the trace_eval kernels they are static, -nostdlib
 * programs with their own _start (../kernels/start.S, ../kernels/kernel.h), so that QEMU runs are
 * deterministic; corpus.mk builds each at -O0, -O1 and -O2 into build/native/corpus/O<level>/.
 *
 * Command line: PROGRAM SEED [ROUNDS=100000] [SIZE]; output: one line, a u64 checksum.
 * A program may build a structure once (setup(n)), then runs ROUNDS rounds of its algorithm
 * (one_round(n)), each on freshly drawn input from the seeded PRNG, folding every round's result
 * into the checksum. Programs of one class that solve the same problem print the same checksum
 * for the same SEED, ROUNDS and SIZE. The default ROUNDS is far more than a traced window needs
 * (the recorder stops the program at the end of its window); tests pass a small ROUNDS.
 */
#ifndef NCF_CORPUS_H
#define NCF_CORPUS_H

#include "../kernels/kernel.h"

#ifndef DEFAULT_N
#error "define DEFAULT_N (the default SIZE) before including corpus.h"
#endif
#ifndef MAX_N
#define MAX_N (DEFAULT_N * 4)
#endif

static void setup(long n);       /* once, before the rounds (may do nothing) */
static u64 one_round(long n);    /* one round of the algorithm on fresh input; its result */

int kmain(int argc, char **argv)
{
    rng_seed(arg_u64(argc, argv, 1, 1));
    u64 rounds = arg_u64(argc, argv, 2, 100000);
    long n = (long)clamp_u64(arg_u64(argc, argv, 3, DEFAULT_N), 2, MAX_N);
    setup(n);
    u64 sum = 0;
    for (u64 r = 0; r < rounds; r++)
        sum = (sum ^ one_round(n)) * 0x100000001B3UL;   /* FNV-style fold */
    print_u64(sum);
    return 0;
}

#endif
