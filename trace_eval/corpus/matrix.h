/* matrix.h: the frame of the matrix-kernel class. setup draws two N x N matrices of small
 * integers; each round changes one row of A, computes C = A B (u64 arithmetic, so every loop
 * order gives the same C) and hashes C. Implementations define matmul. */
#define DEFAULT_N 20
#define MAX_N 64
#include "corpus.h"

static u64 A[MAX_N][MAX_N], B[MAX_N][MAX_N], C[MAX_N][MAX_N];
static void matmul(long n);

static void setup(long n)
{
    for (long i = 0; i < n; i++)
        for (long j = 0; j < n; j++) { A[i][j] = rng_below(100); B[i][j] = rng_below(100); }
}

static u64 one_round(long n)
{
    long r = (long)rng_below((u64)n);
    for (long j = 0; j < n; j++) A[r][j] = rng_below(100);
    matmul(n);
    u64 h = 0;
    for (long i = 0; i < n; i++)
        for (long j = 0; j < n; j++) h = h * 31 + C[i][j];
    return h;
}
