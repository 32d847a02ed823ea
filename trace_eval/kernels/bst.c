/* bst SEED [N=30000]: insert N seeded random keys (drawn from [0, 4N), so some repeat) into an
 * unbalanced binary search tree whose nodes come from a static pool, then search 2N random keys
 * from the same range; the checksum folds hits, depths and the stored insertion order. */
#include "kernel.h"

#define MAXN (1 << 20)

struct node {
    u64 key, val;
    struct node *left, *right;
};

static struct node pool[MAXN];
static u64 used;

static struct node *root;

static void insert(u64 key, u64 val)
{
    struct node **p = &root;
    while (*p) {
        if (key == (*p)->key) return; /* keep the first */
        p = key < (*p)->key ? &(*p)->left : &(*p)->right;
    }
    struct node *x = &pool[used++];
    x->key = key;
    x->val = val;
    *p = x;
}

/* depth+1 of the node holding key, 0 if absent; *val gets its value */
static u64 search(u64 key, u64 *val)
{
    u64 d = 1;
    for (const struct node *x = root; x; d++) {
        if (key == x->key) { *val = x->val; return d; }
        x = key < x->key ? x->left : x->right;
    }
    return 0;
}

int kmain(int argc, char **argv)
{
    rng_seed(arg_u64(argc, argv, 1, 1));
    u64 n = clamp_u64(arg_u64(argc, argv, 2, 30000), 1, MAXN);
    for (u64 i = 0; i < n; i++)
        insert(rng_below(4 * n), i);
    u64 sum = used, hits = 0;
    for (u64 i = 0; i < 2 * n; i++) {
        u64 v = 0, d = search(rng_below(4 * n), &v);
        if (d) { hits++; sum = sum * 31 + v * 1024 + d; }
    }
    print_u64(sum ^ (hits << 40));
    return 0;
}
