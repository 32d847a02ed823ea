/* search.h: the frame of the searching class. setup builds a sorted array of N distinct keys
 * (random gaps of 1..16); each round looks up 16 keys, half of them present; the result sums
 * (index + 1) of the keys found. Implementations define find (index of key, or -1). */
#define DEFAULT_N 2048
#include "corpus.h"

static u64 sorted[MAX_N];
static long find(const u64 *v, long n, u64 key);

static void setup(long n)
{
    u64 x = 0;
    for (long i = 0; i < n; i++) {
        x += 1 + rng_below(16);
        sorted[i] = x;
    }
}

static u64 one_round(long n)
{
    u64 h = 0;
    for (int q = 0; q < 16; q++) {
        u64 key = (q & 1) ? sorted[rng_below((u64)n)] : rng_below(sorted[n - 1] + 8);
        long at = find(sorted, n, key);
        h += (u64)(at + 1);
    }
    return h;
}
