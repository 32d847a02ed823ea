/* hash_table SEED [N=50000]: insert N seeded random keys into an open-addressing hash table
 * (linear probing, multiplicative hash, capacity = power of two >= 2N), then look up 2N keys:
 * the N inserted ones again (regenerated from the same seed) and N fresh ones (almost all misses).
 * The checksum folds each hit's value and slot (the slot depends on the keys and collisions). */
#include "kernel.h"

#define MAXCAP (1 << 21)

struct slot {
    u64 key; /* 0 = empty */
    u64 val;
};

static struct slot table[MAXCAP];
static u64 mask, shift;

static u64 home(u64 key) { return (key * 0x9E3779B97F4A7C15UL) >> shift; }

static void insert(u64 key, u64 val)
{
    u64 i = home(key);
    while (table[i].key && table[i].key != key)
        i = (i + 1) & mask;
    table[i].key = key;
    table[i].val = val;
}

static const struct slot *lookup(u64 key)
{
    for (u64 i = home(key); table[i].key; i = (i + 1) & mask)
        if (table[i].key == key)
            return &table[i];
    return 0;
}

int kmain(int argc, char **argv)
{
    u64 seed = arg_u64(argc, argv, 1, 1);
    u64 n = clamp_u64(arg_u64(argc, argv, 2, 50000), 1, MAXCAP / 2);
    u64 bits = 1;
    while ((1UL << bits) < 2 * n) bits++;
    mask = (1UL << bits) - 1;
    shift = 64 - bits;

    rng_seed(seed);
    for (u64 i = 0; i < n; i++)
        insert(rng_next() | 1, i);

    u64 sum = 0, hits = 0;
    rng_seed(seed); /* the same keys again: all hits */
    for (u64 i = 0; i < n; i++) {
        const struct slot *s = lookup(rng_next() | 1);
        if (s) { hits++; sum = sum * 31 + s->val * 4096 + (u64)(s - table); }
    }
    for (u64 i = 0; i < n; i++) { /* fresh keys: (almost) all misses */
        const struct slot *s = lookup(rng_next() | 1);
        if (s) { hits++; sum = sum * 31 + s->val * 4096 + (u64)(s - table); }
    }
    print_u64(sum ^ (hits << 40));
    return 0;
}
