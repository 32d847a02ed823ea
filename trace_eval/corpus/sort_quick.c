/* sorting: recursive quicksort, Lomuto partition with a middle pivot. */
#include "sort.h"

static void quick(u64 *v, long lo, long hi)
{
    if (lo >= hi) return;
    long mid = lo + (hi - lo) / 2;
    u64 t = v[mid]; v[mid] = v[hi]; v[hi] = t;
    u64 pivot = v[hi];
    long i = lo;
    for (long j = lo; j < hi; j++)
        if (v[j] < pivot) { t = v[i]; v[i] = v[j]; v[j] = t; i++; }
    t = v[i]; v[i] = v[hi]; v[hi] = t;
    quick(v, lo, i - 1);
    quick(v, i + 1, hi);
}

static void sort_keys(u64 *v, long n) { quick(v, 0, n - 1); }
