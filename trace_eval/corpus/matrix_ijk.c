/* matrix kernels: the textbook i-j-k loop (dot product per output element). */
#include "matrix.h"

static void matmul(long n)
{
    for (long i = 0; i < n; i++)
        for (long j = 0; j < n; j++) {
            u64 s = 0;
            for (long k = 0; k < n; k++) s += A[i][k] * B[k][j];
            C[i][j] = s;
        }
}
