/* hashing: open addressing with linear probing, table of 2N slots (power of two), key + 1 stored
 * (0 = empty). */
#include "hash.h"

static u64 slots[8 * MAX_N];
static u64 mask;

static void clear_table(long n)
{
    u64 size = 1;
    while (size < 2 * (u64)n) size <<= 1;
    mask = size - 1;
    for (u64 i = 0; i < size; i++) slots[i] = 0;
}

static int insert(u64 key, long n)
{
    (void)n;
    for (u64 i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (slots[i] == key + 1) return 0;
        if (!slots[i]) { slots[i] = key + 1; return 1; }
    }
}

static int lookup(u64 key, long n)
{
    (void)n;
    for (u64 i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (slots[i] == key + 1) return 1;
        if (!slots[i]) return 0;
    }
}
