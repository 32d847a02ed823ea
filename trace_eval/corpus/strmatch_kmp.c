/* string matching: Knuth-Morris-Pratt (failure function, then one pass over the text). */
#include "strmatch.h"

static long fail[PLEN + 1];

static u64 count_matches(const u8 *t, long n, const u8 *p, long m)
{
    fail[0] = -1;
    for (long i = 1, k = -1; i <= m; i++) {
        while (k >= 0 && p[k] != p[i - 1]) k = fail[k];
        fail[i] = ++k;
    }
    u64 c = 0;
    for (long i = 0, k = 0; i < n; i++) {
        while (k >= 0 && p[k] != t[i]) k = fail[k];
        if (++k == m) { c++; k = fail[k]; }
    }
    return c;
}
