/*
 * selfcheck.c -- compiled core of the trace self-check, called from trace_eval/selfcheck.py
 * through ctypes. The checks are described there; its numpy engine is the reference, and the two
 * must give the same counts and flag the same instructions.
 *
 * Python decodes each static instruction once (selfcheck.Decoder) and passes its per-sid tables;
 * this file does the per-dynamic-instruction arithmetic of one chunk:
 *
 *   void selfcheck_chunk(const Tables *t, int64_t n, const int64_t sid[n], const uint16_t nmem[n],
 *                        const uint32_t mask[n], const uint64_t regval[], const uint64_t addr[],
 *                        const uint64_t val[], uint8_t fail[n], int64_t counts[N_COUNTS]);
 *
 * mask/regval are the chunk's register-delta columns as stored (format.py): registers are
 * replayed here rather than expanded into an (n, NREG) matrix. fail[i] gets the F_* bits of
 * instruction i; counts[] (zeroed by the caller) gets the chunk's counts in the order of
 * selfcheck.COUNTS.
 */
#include <stdint.h>

#define NREG 18  /* register NREG reads as 0 (an absent base, index or segment) */
#define NSLOT 3
#define RCX 1    /* the count register of rep-prefixed string instructions (selfcheck.RCX) */

enum { KIND_NONE, KIND_CHECKED, KIND_NO_ACCESS, KIND_UNSUPPORTED };
enum { F_ADDRESS = 1, F_NO_ACCESS = 2, F_UNSUPPORTED = 4, F_VALUE = 8 };
enum { INSNS, MEM_RECORDS, ADDR_CHECKED, ADDR_MATCH, ADDR_NO_ACCESS, ADDR_MISMATCH, SKIPPED_NO_ACCESS,
       UNSUPPORTED, VALUE_CHECKED, VALUE_MATCH, N_COUNTS };

typedef struct { /* selfcheck.Decoder's arrays, indexed by sid ([sid * NSLOT + k] for slots) */
    const int8_t *kind;
    const int64_t *base, *index, *seg;
    const uint64_t *scale, *cnst, *amask;
    const uint8_t *valid, *region, *rep;
    const int8_t *vkind;
    const int64_t *vreg;
    const uint64_t *vshift, *vmask, *vimm;
} Tables;

/* Do the accesses a[0..k) of an instruction hold the effective addresses of all its slots? */
static int addresses_ok(const Tables *t, int64_t s, const uint64_t *r, const uint64_t *a, int k)
{
    for (int j = 0; j < NSLOT; j++) {
        int64_t q = s * NSLOT + j;
        if (!t->valid[q])
            continue;
        uint64_t ea = (r[t->base[q]] + r[t->index[q]] * t->scale[q] + r[t->seg[q]] + t->cnst[q]) & t->amask[q];
        int hit = 0;
        if (j == 0 && t->region[s]) { /* xsave & co: every access inside [EA, EA + 4096) */
            hit = 1;
            for (int m = 0; m < k; m++)
                hit &= a[m] - ea < 4096;
        } else {
            for (int m = 0; m < k; m++)
                hit |= a[m] == ea;
        }
        if (!hit)
            return 0;
    }
    return 1;
}

void selfcheck_chunk(const Tables *t, int64_t n, const uint32_t *sid, const uint16_t *nmem, const uint32_t *mask,
                     const uint64_t *regval, const uint64_t *addr, const uint64_t *val, uint8_t *fail,
                     int64_t *counts)
{
    uint64_t r[NREG + 1] = {0};     /* registers before instruction i */
    int64_t load = -1;              /* a load whose value is checked against the next registers */
    uint64_t loaded = 0;
    const uint64_t *a = addr, *v = val;  /* instruction i's accesses */
    for (int64_t i = 0; i < n; i++) {
        for (uint32_t m = mask[i]; m; m &= m - 1)  /* values are packed by ascending register */
            r[__builtin_ctz(m)] = *regval++;
        if (load >= 0) {
            int64_t s = sid[load];
            int good = loaded == ((r[t->vreg[s]] >> t->vshift[s]) & t->vmask[s]);
            counts[VALUE_MATCH] += good;
            fail[load] |= good ? 0 : F_VALUE;
            load = -1;
        }
        int64_t s = sid[i];
        int k = nmem[i];
        fail[i] = 0;
        int kind = t->kind[s];
        if (kind == KIND_CHECKED && k == 0 && t->rep[s] && (r[RCX] & t->amask[s * NSLOT]) == 0)
            kind = KIND_NO_ACCESS;  /* rep with rcx = 0: no iteration, no access */
        switch (kind) {
        case KIND_CHECKED: {
            int ok = addresses_ok(t, s, r, a, k);
            counts[ADDR_CHECKED]++;
            counts[ADDR_MATCH] += ok;
            if (k == 0) {
                counts[ADDR_NO_ACCESS]++;
                fail[i] |= F_NO_ACCESS;
            } else if (!ok) {
                counts[ADDR_MISMATCH]++;
                fail[i] |= F_ADDRESS;
            }
            break;
        }
        case KIND_NO_ACCESS:
            counts[SKIPPED_NO_ACCESS]++;
            break;
        case KIND_UNSUPPORTED:
            counts[UNSUPPORTED]++;
            fail[i] |= F_UNSUPPORTED;
            break;
        }
        /* value check: one access, not the chunk's last instruction (a load needs the next one) */
        int vk = t->vkind[s];
        if (vk && k == 1 && i < n - 1) {
            uint64_t got = v[0] & t->vmask[s];
            counts[VALUE_CHECKED]++;
            if (vk == 1) {
                load = i;
                loaded = got;
            } else {
                uint64_t want = (vk == 3 ? t->vimm[s] : r[t->vreg[s]] >> t->vshift[s]) & t->vmask[s];
                counts[VALUE_MATCH] += got == want;
                fail[i] |= got == want ? 0 : F_VALUE;
            }
        }
        a += k;
        v += k;
    }
    counts[INSNS] += n;
    counts[MEM_RECORDS] += a - addr;
}
