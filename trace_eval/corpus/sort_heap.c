/* sorting: heapsort (binary max-heap, sift-down). */
#include "sort.h"

static void sift_down(u64 *v, long root, long n)
{
    for (;;) {
        long c = 2 * root + 1;
        if (c >= n) return;
        if (c + 1 < n && v[c + 1] > v[c]) c++;
        if (v[root] >= v[c]) return;
        u64 t = v[root]; v[root] = v[c]; v[c] = t;
        root = c;
    }
}

static void sort_keys(u64 *v, long n)
{
    for (long i = n / 2 - 1; i >= 0; i--) sift_down(v, i, n);
    for (long end = n - 1; end > 0; end--) {
        u64 t = v[0]; v[0] = v[end]; v[end] = t;
        sift_down(v, 0, end);
    }
}
