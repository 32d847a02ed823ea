/* strmatch.h: the frame of the string-matching class. setup draws a text of N letters over a
 * 3-letter alphabet; each round draws a pattern of 6 letters (every other round a substring of
 * the text) and counts its occurrences (overlapping ones included). Implementations define
 * count_matches. */
#define DEFAULT_N 1024
#include "corpus.h"

#define PLEN 6
static u8 text[MAX_N];
static u8 pat[PLEN];
static u64 count_matches(const u8 *t, long n, const u8 *p, long m);
static u64 round_no;

static void setup(long n)
{
    for (long i = 0; i < n; i++) text[i] = (u8)('a' + rng_below(3));
}

static u64 one_round(long n)
{
    long from = (long)rng_below((u64)(n - PLEN));
    for (long k = 0; k < PLEN; k++)
        pat[k] = (round_no & 1) ? text[from + k] : (u8)('a' + rng_below(3));
    round_no++;
    return count_matches(text, n, pat, PLEN);
}
