/* searching: interpolation search (probe where the key would sit if keys were uniform). */
#include "search.h"

static long find(const u64 *v, long n, u64 key)
{
    long lo = 0, hi = n - 1;
    while (lo <= hi && key >= v[lo] && key <= v[hi]) {
        if (v[hi] == v[lo]) return v[lo] == key ? lo : -1;
        long pos = lo + (long)((key - v[lo]) * (u64)(hi - lo) / (v[hi] - v[lo]));
        if (v[pos] == key) return pos;
        if (v[pos] < key) lo = pos + 1;
        else hi = pos - 1;
    }
    return -1;
}
