/* dynamic programming: Levenshtein edit distance of two fresh strings of length N over a
 * 4-letter alphabet, full table. */
#define DEFAULT_N 48
#include "corpus.h"

static u8 a[MAX_N], b[MAX_N];
static u32 d[MAX_N + 1][MAX_N + 1];

static void setup(long n) { (void)n; }

static u32 min3(u32 x, u32 y, u32 z) { u32 m = x < y ? x : y; return m < z ? m : z; }

static u64 one_round(long n)
{
    for (long i = 0; i < n; i++) { a[i] = (u8)rng_below(4); b[i] = (u8)rng_below(4); }
    for (long i = 0; i <= n; i++) { d[i][0] = (u32)i; d[0][i] = (u32)i; }
    for (long i = 1; i <= n; i++)
        for (long j = 1; j <= n; j++)
            d[i][j] = min3(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]));
    return d[n][n];
}
