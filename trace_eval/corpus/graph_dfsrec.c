/* graph traversal: recursive depth-first search. */
#include "graph.h"

static u64 count, ids;

static void visit(long v)
{
    seen[v] = 1;
    count++;
    ids += (u64)v;
    for (long e = first[v]; e < first[v + 1]; e++)
        if (!seen[edge[e]]) visit(edge[e]);
}

static u64 traverse(long n, long src)
{
    (void)n;
    count = ids = 0;
    visit(src);
    return count * 1000003 + ids;
}
