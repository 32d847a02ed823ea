/* string matching: Boyer-Moore-Horspool (bad-character shift table, compare right to left). */
#include "strmatch.h"

static long shift[256];

static u64 count_matches(const u8 *t, long n, const u8 *p, long m)
{
    for (int c = 0; c < 256; c++) shift[c] = m;
    for (long k = 0; k < m - 1; k++) shift[p[k]] = m - 1 - k;
    u64 c = 0;
    for (long s = 0; s + m <= n; s += shift[t[s + m - 1]]) {
        long k = m - 1;
        while (k >= 0 && t[s + k] == p[k]) k--;
        c += k < 0;
    }
    return c;
}
