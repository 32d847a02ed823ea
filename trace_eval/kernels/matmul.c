/* matmul SEED [N=100]: C = A * B for seeded random N x N u64 matrices (entries < 2^16, wrapping
 * arithmetic), i-k-j loop order; the checksum weights every C[i][j] by its position. */
#include "kernel.h"

#define MAXN 256

static u64 A[MAXN][MAXN], B[MAXN][MAXN], C[MAXN][MAXN];

int kmain(int argc, char **argv)
{
    rng_seed(arg_u64(argc, argv, 1, 1));
    u64 n = clamp_u64(arg_u64(argc, argv, 2, 100), 1, MAXN);
    for (u64 i = 0; i < n; i++)
        for (u64 j = 0; j < n; j++) {
            A[i][j] = rng_next() >> 48;
            B[i][j] = rng_next() >> 48;
            C[i][j] = 0;
        }
    for (u64 i = 0; i < n; i++)
        for (u64 k = 0; k < n; k++) {
            u64 a = A[i][k];
            for (u64 j = 0; j < n; j++)
                C[i][j] += a * B[k][j];
        }
    u64 sum = 0;
    for (u64 i = 0; i < n; i++)
        for (u64 j = 0; j < n; j++)
            sum += C[i][j] * (i * n + j + 1);
    print_u64(sum);
    return 0;
}
