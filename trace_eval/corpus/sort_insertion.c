/* sorting: insertion sort. */
#include "sort.h"

static void sort_keys(u64 *v, long n)
{
    for (long i = 1; i < n; i++) {
        u64 x = v[i];
        long j = i - 1;
        while (j >= 0 && v[j] > x) { v[j + 1] = v[j]; j--; }
        v[j + 1] = x;
    }
}
