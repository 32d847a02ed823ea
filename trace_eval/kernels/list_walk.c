/* list_walk SEED [N=100000]: link N nodes of a static pool in a seeded random order (Fisher-Yates
 * shuffle of the node indices), then walk the list ROUNDS times, folding the values in order.
 * The pointer chasing jumps all over the pool: the classic cache-unfriendly load chain. */
#include "kernel.h"

#define MAXN (1 << 20)
#define ROUNDS 4

struct node {
    u64 val;
    struct node *next;
};

static struct node pool[MAXN];
static u32 order[MAXN];

int kmain(int argc, char **argv)
{
    rng_seed(arg_u64(argc, argv, 1, 1));
    u64 n = clamp_u64(arg_u64(argc, argv, 2, 100000), 2, MAXN);

    for (u64 i = 0; i < n; i++) {
        order[i] = (u32)i;
        pool[i].val = rng_next() >> 32;
    }
    for (u64 i = n - 1; i > 0; i--) { /* Fisher-Yates */
        u64 j = rng_below(i + 1);
        u32 t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (u64 i = 0; i + 1 < n; i++)
        pool[order[i]].next = &pool[order[i + 1]];
    pool[order[n - 1]].next = 0;

    u64 sum = 0;
    for (int r = 0; r < ROUNDS; r++)
        for (struct node *p = &pool[order[0]]; p; p = p->next)
            sum = sum * 31 + p->val;
    print_u64(sum);
    return 0;
}
