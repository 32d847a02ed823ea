/* hash.h: the frame of the hashing class. Each round empties a table, inserts N fresh keys drawn
 * from [0, 4N) (a key already present is not inserted twice) and looks up N more keys from the
 * same range; the result is the number of distinct keys inserted times 65536 plus the number of
 * lookups that found their key. Implementations define clear_table, insert (returns 1 if the key
 * was new) and lookup (1 if present). */
#define DEFAULT_N 256
#include "corpus.h"

static void clear_table(long n);
static int insert(u64 key, long n);
static int lookup(u64 key, long n);

static void setup(long n) { (void)n; }

static u64 mix64(u64 x) { x ^= x >> 29; x *= 0xBF58476D1CE4E5B9UL; return x ^ (x >> 32); }

static u64 one_round(long n)
{
    clear_table(n);
    u64 added = 0, found = 0;
    for (long i = 0; i < n; i++) added += (u64)insert(rng_below(4 * (u64)n), n);
    for (long i = 0; i < n; i++) found += (u64)lookup(rng_below(4 * (u64)n), n);
    return added * 65536 + found;
}
