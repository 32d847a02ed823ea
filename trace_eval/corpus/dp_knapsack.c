/* dynamic programming: 0/1 knapsack of N fresh items (weights 1..32, values 1..100) into
 * capacity 4N, one-row table updated from high capacity to low. */
#define DEFAULT_N 32
#include "corpus.h"

static u32 w[MAX_N], val[MAX_N];
static u64 best[4 * MAX_N + 1];

static void setup(long n) { (void)n; }

static u64 one_round(long n)
{
    long cap = 4 * n;
    for (long i = 0; i < n; i++) { w[i] = 1 + (u32)rng_below(32); val[i] = 1 + (u32)rng_below(100); }
    for (long c = 0; c <= cap; c++) best[c] = 0;
    for (long i = 0; i < n; i++)
        for (long c = cap; c >= (long)w[i]; c--) {
            u64 take = best[c - w[i]] + val[i];
            if (take > best[c]) best[c] = take;
        }
    return best[cap];
}
