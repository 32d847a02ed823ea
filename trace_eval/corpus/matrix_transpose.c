/* matrix kernels: transpose B first, then dot products of rows of A and rows of B^T. */
#include "matrix.h"

static u64 BT[MAX_N][MAX_N];

static void matmul(long n)
{
    for (long k = 0; k < n; k++)
        for (long j = 0; j < n; j++) BT[j][k] = B[k][j];
    for (long i = 0; i < n; i++)
        for (long j = 0; j < n; j++) {
            u64 s = 0;
            for (long k = 0; k < n; k++) s += A[i][k] * BT[j][k];
            C[i][j] = s;
        }
}
