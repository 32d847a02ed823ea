/* matrix kernels: blocked (tiled) multiplication with 8 x 8 tiles. */
#include "matrix.h"

#define TILE 8

static void matmul(long n)
{
    for (long i = 0; i < n; i++)
        for (long j = 0; j < n; j++) C[i][j] = 0;
    for (long ii = 0; ii < n; ii += TILE)
        for (long kk = 0; kk < n; kk += TILE)
            for (long jj = 0; jj < n; jj += TILE) {
                long ie = ii + TILE < n ? ii + TILE : n, ke = kk + TILE < n ? kk + TILE : n;
                long je = jj + TILE < n ? jj + TILE : n;
                for (long i = ii; i < ie; i++)
                    for (long k = kk; k < ke; k++) {
                        u64 a = A[i][k];
                        for (long j = jj; j < je; j++) C[i][j] += a * B[k][j];
                    }
            }
}
