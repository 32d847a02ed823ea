/* prime counting: trial division by the primes found so far, up to the square root. */
#include "primes.h"

static u64 found[2 * MAX_N];

static u64 count_primes(long limit, u64 *largest)
{
    u64 c = 0;
    for (u64 x = 2; x < (u64)limit; x++) {
        int prime = 1;
        for (u64 k = 0; k < c && found[k] * found[k] <= x; k++)
            if (x % found[k] == 0) { prime = 0; break; }
        if (prime) { found[c++] = x; *largest = x; }
    }
    return c;
}
