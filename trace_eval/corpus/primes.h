/* primes.h: the frame of the prime-counting class. Each round counts the primes below a fresh
 * limit in [N, 2N) and returns the count times 65536 plus the largest prime found.
 * Implementations define count_primes (sets *largest). */
#define DEFAULT_N 1024
#include "corpus.h"

static u64 count_primes(long limit, u64 *largest);

static void setup(long n) { (void)n; }

static u64 one_round(long n)
{
    u64 largest = 0;
    u64 c = count_primes(n + (long)rng_below((u64)n), &largest);
    return c * 65536 + largest;
}
