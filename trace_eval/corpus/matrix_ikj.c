/* matrix kernels: i-k-j loop order (row of B streamed, C row accumulated). */
#include "matrix.h"

static void matmul(long n)
{
    for (long i = 0; i < n; i++) {
        for (long j = 0; j < n; j++) C[i][j] = 0;
        for (long k = 0; k < n; k++) {
            u64 a = A[i][k];
            for (long j = 0; j < n; j++) C[i][j] += a * B[k][j];
        }
    }
}
