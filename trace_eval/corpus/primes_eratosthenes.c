/* prime counting: the sieve of Eratosthenes (byte array, crossing out from p*p). */
#include "primes.h"

static u8 composite[2 * MAX_N];

static u64 count_primes(long limit, u64 *largest)
{
    for (long x = 0; x < limit; x++) composite[x] = 0;
    u64 c = 0;
    for (long p = 2; p < limit; p++) {
        if (composite[p]) continue;
        c++;
        *largest = (u64)p;
        for (long q = p * p; q < limit; q += p) composite[q] = 1;
    }
    return c;
}
