/* graph traversal: iterative depth-first search with an explicit stack of (node, next edge). */
#include "graph.h"

static long stack_v[MAX_N], stack_e[MAX_N];

static u64 traverse(long n, long src)
{
    (void)n;
    long top = 0;
    u64 count = 1, ids = (u64)src;
    seen[src] = 1;
    stack_v[0] = src;
    stack_e[0] = first[src];
    while (top >= 0) {
        long v = stack_v[top];
        if (stack_e[top] == first[v + 1]) { top--; continue; }
        long w = edge[stack_e[top]++];
        if (seen[w]) continue;
        seen[w] = 1;
        count++;
        ids += (u64)w;
        top++;
        stack_v[top] = w;
        stack_e[top] = first[w];
    }
    return count * 1000003 + ids;
}
