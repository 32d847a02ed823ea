/* string matching: the naive algorithm (compare at every shift). */
#include "strmatch.h"

static u64 count_matches(const u8 *t, long n, const u8 *p, long m)
{
    u64 c = 0;
    for (long s = 0; s + m <= n; s++) {
        long k = 0;
        while (k < m && t[s + k] == p[k]) k++;
        c += k == m;
    }
    return c;
}
