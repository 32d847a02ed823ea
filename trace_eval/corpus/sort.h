/* sort.h: the frame of the sorting class: each round sorts N fresh 20-bit keys; the result is a
 * polynomial hash of the sorted array (0 if it is not sorted). Implementations define sort_keys. */
#define DEFAULT_N 200
#include "corpus.h"

static u64 keys[MAX_N];
static void sort_keys(u64 *v, long n);

static void setup(long n) { (void)n; }

static u64 one_round(long n)
{
    for (long i = 0; i < n; i++)
        keys[i] = rng_next() >> 44;
    sort_keys(keys, n);
    u64 h = 0;
    for (long i = 0; i < n; i++) {
        if (i && keys[i - 1] > keys[i]) return 0;
        h = h * 31 + keys[i];
    }
    return h;
}
