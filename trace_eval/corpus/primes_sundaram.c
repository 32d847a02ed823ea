/* prime counting: the sieve of Sundaram (odd primes 2k+1 for the k not of the form i+j+2ij). */
#include "primes.h"

static u8 marked[MAX_N];

static u64 count_primes(long limit, u64 *largest)
{
    long k = (limit - 2) / 2;                       /* odd numbers 2m+1 < limit: m <= k */
    for (long m = 0; m <= k; m++) marked[m] = 0;
    for (long i = 1; i + i + 2 * i * i <= k; i++)
        for (long j = i; i + j + 2 * i * j <= k; j++) marked[i + j + 2 * i * j] = 1;
    u64 c = limit > 2;
    *largest = limit > 2 ? 2 : 0;
    for (long m = 1; m <= k; m++)
        if (!marked[m] && 2 * m + 1 < limit) { c++; *largest = (u64)(2 * m + 1); }
    return c;
}
