/* quicksort SEED [N=50000]: sort N seeded random u64 with a recursive quicksort (median of three,
 * Hoare partition, insertion sort below 16 elements); the checksum folds the sorted array, and
 * is 0 if the result is not sorted. */
#include "kernel.h"

#define MAXN (1 << 21)

static u64 a[MAXN];

static void swap(u64 *x, u64 *y) { u64 t = *x; *x = *y; *y = t; }

static void insertion_sort(u64 *v, long n)
{
    for (long i = 1; i < n; i++) {
        u64 x = v[i];
        long j = i - 1;
        while (j >= 0 && v[j] > x) { v[j + 1] = v[j]; j--; }
        v[j + 1] = x;
    }
}

static void quicksort(u64 *v, long n)
{
    while (n > 16) {
        long m = n / 2;
        if (v[m] < v[0]) swap(&v[m], &v[0]);
        if (v[n - 1] < v[0]) swap(&v[n - 1], &v[0]);
        if (v[n - 1] < v[m]) swap(&v[n - 1], &v[m]);
        u64 pivot = v[m];
        long i = -1, j = n;
        for (;;) { /* Hoare */
            do i++; while (v[i] < pivot);
            do j--; while (v[j] > pivot);
            if (i >= j) break;
            swap(&v[i], &v[j]);
        }
        /* recurse into the smaller half, loop on the larger: stack depth O(log n) */
        if (j + 1 < n - j - 1) { quicksort(v, j + 1); v += j + 1; n -= j + 1; }
        else { quicksort(v + j + 1, n - j - 1); n = j + 1; }
    }
    insertion_sort(v, n);
}

int kmain(int argc, char **argv)
{
    rng_seed(arg_u64(argc, argv, 1, 1));
    long n = (long)clamp_u64(arg_u64(argc, argv, 2, 50000), 1, MAXN);
    for (long i = 0; i < n; i++)
        a[i] = rng_next();
    quicksort(a, n);
    u64 sum = 0;
    for (long i = 0; i < n; i++) {
        if (i && a[i - 1] > a[i]) { sum = 0; break; }
        sum = sum * 31 + a[i];
    }
    print_u64(sum);
    return 0;
}
