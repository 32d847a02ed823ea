/* hashing: separate chaining, N/2 buckets (power of two) of singly linked nodes from a pool. */
#include "hash.h"

struct node { u64 key; struct node *next; };
static struct node pool[MAX_N];
static struct node *bucket[MAX_N];
static long used;
static u64 mask;

static void clear_table(long n)
{
    u64 size = 1;
    while (2 * size < (u64)n) size <<= 1;
    mask = size - 1;
    for (u64 i = 0; i < size; i++) bucket[i] = 0;
    used = 0;
}

static int lookup(u64 key, long n)
{
    (void)n;
    for (struct node *p = bucket[mix64(key) & mask]; p; p = p->next)
        if (p->key == key) return 1;
    return 0;
}

static int insert(u64 key, long n)
{
    if (lookup(key, n)) return 0;
    struct node *p = &pool[used++];
    u64 b = mix64(key) & mask;
    p->key = key;
    p->next = bucket[b];
    bucket[b] = p;
    return 1;
}
