/* dynamic programming: longest common subsequence of two fresh strings of length N over a
 * 4-letter alphabet, two-row table. */
#define DEFAULT_N 48
#include "corpus.h"

static u8 a[MAX_N], b[MAX_N];
static u32 prev[MAX_N + 1], cur[MAX_N + 1];

static void setup(long n) { (void)n; }

static u64 one_round(long n)
{
    for (long i = 0; i < n; i++) { a[i] = (u8)rng_below(4); b[i] = (u8)rng_below(4); }
    for (long j = 0; j <= n; j++) prev[j] = 0;
    for (long i = 1; i <= n; i++) {
        cur[0] = 0;
        for (long j = 1; j <= n; j++) {
            if (a[i - 1] == b[j - 1]) cur[j] = prev[j - 1] + 1;
            else cur[j] = prev[j] > cur[j - 1] ? prev[j] : cur[j - 1];
        }
        for (long j = 0; j <= n; j++) prev[j] = cur[j];
    }
    return prev[n];
}
