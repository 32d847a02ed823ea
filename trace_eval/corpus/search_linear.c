/* searching: linear scan of the sorted array (stops at the first key >= the query). */
#include "search.h"

static long find(const u64 *v, long n, u64 key)
{
    for (long i = 0; i < n; i++) {
        if (v[i] == key) return i;
        if (v[i] > key) return -1;
    }
    return -1;
}
