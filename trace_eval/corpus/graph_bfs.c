/* graph traversal: breadth-first search with an array queue. */
#include "graph.h"

static long queue[MAX_N];

static u64 traverse(long n, long src)
{
    (void)n;
    long head = 0, tail = 0;
    u64 count = 0, ids = 0;
    seen[src] = 1;
    queue[tail++] = src;
    while (head < tail) {
        long v = queue[head++];
        count++;
        ids += (u64)v;
        for (long e = first[v]; e < first[v + 1]; e++) {
            long w = edge[e];
            if (!seen[w]) { seen[w] = 1; queue[tail++] = w; }
        }
    }
    return count * 1000003 + ids;
}
