/* sorting: top-down merge sort with a scratch buffer. */
#include "sort.h"

static u64 scratch[MAX_N];

static void merge_sort(u64 *v, long lo, long hi)   /* [lo, hi) */
{
    if (hi - lo < 2) return;
    long mid = lo + (hi - lo) / 2;
    merge_sort(v, lo, mid);
    merge_sort(v, mid, hi);
    long i = lo, j = mid, k = lo;
    while (i < mid && j < hi) scratch[k++] = v[i] <= v[j] ? v[i++] : v[j++];
    while (i < mid) scratch[k++] = v[i++];
    while (j < hi) scratch[k++] = v[j++];
    for (k = lo; k < hi; k++) v[k] = scratch[k];
}

static void sort_keys(u64 *v, long n) { merge_sort(v, 0, n); }
