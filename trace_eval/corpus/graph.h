/* graph.h: the frame of the graph-traversal class. setup builds a random directed graph of N
 * nodes in CSR form (out-degree 0..3); each round traverses from a random source; the result
 * combines how many nodes were reached and the sum of their ids (independent of the visit
 * order). Implementations define traverse (marks seen[] and returns that result). */
#define DEFAULT_N 1024
#include "corpus.h"

#define MAX_DEG 3
static long first[MAX_N + 1], edge[MAX_N * MAX_DEG];
static u8 seen[MAX_N];
static u64 traverse(long n, long src);

static void setup(long n)
{
    long m = 0;
    for (long v = 0; v < n; v++) {
        first[v] = m;
        long deg = (long)rng_below(MAX_DEG + 1);
        for (long k = 0; k < deg; k++) edge[m++] = (long)rng_below((u64)n);
    }
    first[n] = m;
}

static u64 one_round(long n)
{
    for (long v = 0; v < n; v++) seen[v] = 0;
    return traverse(n, (long)rng_below((u64)n));
}
