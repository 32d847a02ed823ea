/*
 * bp.c -- compiled core of the branch-predictor baselines (bimodal, gshare, hashed perceptron,
 * TAGE-SC-L 64KB), called from trace_eval/branch_predictors.py through ctypes.
 *
 * The algorithms, their parameters and the storage computation are documented in the module
 * docstring of trace_eval/branch_predictors.py, which also holds a pure-Python reference of
 * every predictor; the two must give bit-identical predictions and confidences.
 *
 * TAGE-SC-L follows the algorithm and the 64KB configuration of A. Seznec, "TAGE-SC-L Branch
 * Predictors Again", CBP-5 (2016), as read in the CBP-2016 `predictor.h` of the 64KB entry
 * (e.g. github.com/jiegec/cbp-experiments predictors/AndreSeznec-TAGE-SC-L-64KB/predictor.h).
 * This is an independent re-implementation in C; deviations are listed in the Python docstring
 * (32-bit unsigned pseudo-random generator, bank-interleaving hash uses the whole 27-bit path
 * history, non-conditional branches are treated as taken).
 *
 * C API (ctypes):
 *   void   *bp_new(int kind, const int *params);       kind: 0 bimodal, 1 gshare,
 *                                                      2 perceptron, 3 TAGE-SC-L
 *   void    bp_free(void *);
 *   int     bp_predict(void *, uint64_t pc, uint8_t *conf);
 *   void    bp_update(void *, uint64_t pc, uint64_t target, int taken, int kind);
 *   void    bp_run(void *, pc[], target[], taken[], kind[], n, pred[], conf[]);
 *   int     bp_run_detail(void *, pc[], target[], taken[], kind[], n, pred[], conf[], detail[n][BP_DETAIL]);
 *           (TAGE-SC-L only, else -1: bp_run that also fills the internals of each prediction, see
 *           tage_detail; bp_run is bp_run_detail without them)
 *   int64_t bp_storage_bits(void *);
 * Branch kinds: 0 COND, 1 JUMP, 2 CALL, 3 RET, 4 IND_JUMP, 5 IND_CALL.
 */
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { K_COND = 0, K_JUMP = 1, K_CALL = 2, K_RET = 3, K_IND_JUMP = 4, K_IND_CALL = 5 };
enum { BP_BIMODAL = 0, BP_GSHARE = 1, BP_PERCEPTRON = 2, BP_TAGESCL = 3 };

/* Common header: every predictor struct starts with it. `pending` records that predict() was
 * called for `pending_pc` and its per-branch state is valid for the following update(). */
typedef struct {
    int kind;
    int pending;
    uint64_t pending_pc;
} Head;

static inline int sat_inc(int v, int max) { return v < max ? v + 1 : v; }
static inline int sat_dec(int v, int min) { return v > min ? v - 1 : v; }
/* Signed saturating counter of `nbits` bits, range [-2^(nbits-1), 2^(nbits-1)-1]. */
static inline void ctr_update(int8_t *c, int taken, int nbits) {
    if (taken) { if (*c < (1 << (nbits - 1)) - 1) (*c)++; }
    else       { if (*c > -(1 << (nbits - 1))) (*c)--; }
}
/* XOR-fold x into `bits`-bit chunks. */
static inline uint64_t fold64(uint64_t x, int bits) {
    uint64_t r = 0, m = (1ULL << bits) - 1;
    while (x) { r ^= x & m; x >>= bits; }
    return r;
}
/* Confidence code of a 2-bit counter (0..3): strong = 2 (high), weak = 0 (low). */
static inline uint8_t conf2(int c) { return (c == 0 || c == 3) ? 2 : 0; }

/* ============================== bimodal ============================== */
typedef struct { Head h; int log; uint8_t *ctr; } Bimodal;

static inline uint32_t bim_idx(const Bimodal *p, uint64_t pc) {
    return (uint32_t)((pc ^ (pc >> 2) ^ (pc >> (p->log + 2))) & ((1ULL << p->log) - 1));
}
static int bim_predict(Bimodal *p, uint64_t pc, uint8_t *conf) {
    int c = p->ctr[bim_idx(p, pc)];
    *conf = conf2(c);
    return c >= 2;
}
static void bim_update(Bimodal *p, uint64_t pc, int taken, int kind) {
    if (kind != K_COND) return;
    uint8_t *c = &p->ctr[bim_idx(p, pc)];
    *c = (uint8_t)(taken ? sat_inc(*c, 3) : sat_dec(*c, 0));
}

/* ============================== gshare ============================== */
typedef struct { Head h; int hist_len, log; uint64_t ghist; uint8_t *ctr; } Gshare;

static inline uint32_t gs_idx(const Gshare *p, uint64_t pc) {
    uint64_t hm = p->hist_len >= 64 ? ~0ULL : ((1ULL << p->hist_len) - 1);
    return (uint32_t)((pc ^ (pc >> 2) ^ fold64(p->ghist & hm, p->log)) & ((1ULL << p->log) - 1));
}
static int gs_predict(Gshare *p, uint64_t pc, uint8_t *conf) {
    int c = p->ctr[gs_idx(p, pc)];
    *conf = conf2(c);
    return c >= 2;
}
static void gs_update(Gshare *p, uint64_t pc, int taken, int kind) {
    if (kind == K_COND) {
        uint8_t *c = &p->ctr[gs_idx(p, pc)];
        *c = (uint8_t)(taken ? sat_inc(*c, 3) : sat_dec(*c, 0));
    }
    p->ghist = (p->ghist << 1) | (uint64_t)(taken != 0);
}

/* ============================== hashed perceptron ============================== */
#define PC_MAXT 32
typedef unsigned __int128 u128;
typedef struct {
    Head h;
    int log, ntab, theta, tc, speed;
    int seg_lo[PC_MAXT], seg_hi[PC_MAXT];  /* table t uses history bits [lo, hi); lo==hi: bias */
    u128 ghist;                           /* bit 0 = most recent branch */
    int8_t *w;                            /* ntab * 2^log weights in [-128, 127] */
    uint32_t idx[PC_MAXT];
    int sum;
} Perceptron;

static int pc_predict(Perceptron *p, uint64_t pc, uint8_t *conf) {
    uint64_t m = (1ULL << p->log) - 1, ph = pc ^ (pc >> 2) ^ (pc >> 17);
    int sum = 0;
    for (int t = 0; t < p->ntab; t++) {
        int w = p->seg_hi[t] - p->seg_lo[t];
        u128 mask = w >= 128 ? ~(u128)0 : ((((u128)1) << w) - 1);
        u128 seg = w ? (p->ghist >> p->seg_lo[t]) & mask : 0;
        uint64_t f = 0;
        while (seg) { f ^= (uint64_t)(seg & m); seg >>= p->log; }
        p->idx[t] = (uint32_t)((ph ^ f ^ ((uint64_t)t << 3)) & m);
        sum += p->w[((size_t)t << p->log) + p->idx[t]];
    }
    p->sum = sum;
    int a = abs(sum);
    *conf = a >= p->theta ? 2 : (a >= p->theta / 2 ? 1 : 0);
    return sum >= 0;
}
static void pc_update(Perceptron *p, int taken, int kind) {
    if (kind == K_COND) {
        int pred = p->sum >= 0, a = abs(p->sum);
        if (pred != taken || a < p->theta) {
            for (int t = 0; t < p->ntab; t++) {
                int8_t *w = &p->w[((size_t)t << p->log) + p->idx[t]];
                *w = (int8_t)(taken ? sat_inc(*w, 127) : sat_dec(*w, -128));
            }
            /* adaptive threshold (Seznec's O-GEHL rule, as in ChampSim's hashed perceptron) */
            if (pred != taken) {
                if (++p->tc >= p->speed) { p->theta++; p->tc = 0; }
            } else {
                if (--p->tc <= -p->speed) { if (p->theta > 1) p->theta--; p->tc = 0; }
            }
        }
    }
    p->ghist = (p->ghist << 1) | (u128)(taken != 0);
}

/* ============================== TAGE-SC-L 64KB ============================== */
#define NHIST 36
#define NBANKLOW 10
#define NBANKHIGH 20
#define BORN 13
#define BORNINFASSOC 9
#define BORNSUPASSOC 23
#define MINHIST 6
#define MAXHIST 3000
#define LOGG 10
#define TBITS 8
#define NNN 1
#define HYSTSHIFT 2
#define LOGB 13
#define PHISTWIDTH 27
#define UWIDTH 1
#define CWIDTH 3
#define LOGSIZEUSEALT 4
#define SIZEUSEALT (1 << LOGSIZEUSEALT)
#define ALTWIDTH 5
#define BORNTICK 1024
#define HBUF 4096
/* loop predictor */
#define LOGL 5
#define WIDTHNBITERLOOP 10
#define LOOPTAG 10
#define CONFLOOP 15
/* statistical corrector */
#define PERCWIDTH 6
#define LOGBIAS 8
#define LOGSIZEUP 6
#define LOGSIZEUPS 3
#define WIDTHRES 12
#define WIDTHRESP 8
#define EWIDTH 6
#define CONFWIDTH 7
#define NLOCAL 256
#define NSECLOCAL 16
#define NTLOCAL 16

typedef struct { int8_t ctr; uint8_t u; uint16_t tag; } GEntry;
typedef struct { uint16_t nbiter, curiter, tag; uint8_t confid, age, dir; } LEntry;
/* Folded histories (P. Michaud's cyclic shift registers), one set per distinct history length
 * (the odd banks 1, 3, ..., 35; bank 2k shares the length of bank 2k-1): index (10 bits),
 * tag (TB bits) and second tag (TB-1 bits), stored as arrays so that one update of the global
 * history reads the outgoing bit once for the three registers of a length. */
#define NFOLD (NHIST / 2)
typedef struct {
    unsigned ci[NFOLD], ct0[NFOLD], ct1[NFOLD];
    int olen[NFOLD], clen_t0[NFOLD], op_i[NFOLD], op_t0[NFOLD], op_t1[NFOLD];
} Folded;

/* one GEHL-like SC component: nbr tables, the last two (or all, if nbr <= 2) of half size */
typedef struct { int nbr, logs; int len[3]; int8_t *tab[3]; int8_t w[1 << LOGSIZEUPS]; int idx[3]; } SCComp;
enum { SC_G, SC_P, SC_L, SC_S, SC_T, SC_IM, SC_I, SC_N };

typedef struct {
    Head h;
    /* TAGE */
    int m[NHIST + 1], tb[NHIST + 1], noskip[NHIST + 1];
    GEntry *glow, *ghigh;
    int8_t bpred[1 << LOGB], bhyst[1 << (LOGB - HYSTSHIFT)];
    int8_t use_alt_on_na[SIZEUSEALT];
    int tick;
    uint8_t ghist[HBUF];
    uint32_t ptghist;
    uint64_t phist;
    Folded f;
    uint32_t seed;
    /* per-branch TAGE state */
    int GI[NHIST + 1]; unsigned GTAG[NHIST + 1]; int BI, BIM;
    int hitbank, altbank, longest_pred, alttaken, tage_pred, pred_inter, pred_taken, used_alt;
    int highconf, lowconf, medconf, altconf;
    /* loop predictor */
    LEntry ltable[1 << LOGL];
    int lhit, li, lib, ltag, lvalid, predloop;
    int8_t withloop;
    /* statistical corrector */
    int8_t bias[1 << LOGBIAS], biassk[1 << LOGBIAS], biasbank[1 << LOGBIAS];
    int8_t wb[1 << LOGSIZEUPS];
    SCComp sc[SC_N];
    int updatethreshold, pupdatethreshold[1 << LOGSIZEUP];
    int8_t firsth, secondh;
    uint64_t GHIST, lhist[NLOCAL], shist[NSECLOCAL], thist[NTLOCAL], imhist[256];
    int imlicount;
    int lsum, thres, scpred;
    int ib, ibsk, ibbank;
} Tage;

static inline GEntry *tg_entry(Tage *p, int bank) {
    return bank < BORN ? &p->glow[p->GI[bank]] : &p->ghigh[p->GI[bank]];
}

static uint32_t tg_random(Tage *p) {
    /* Seznec's MYRANDOM on 32-bit unsigned arithmetic (well-defined shifts) */
    uint32_t s = p->seed + 1;
    s ^= (uint32_t)p->phist;
    s = (s >> 21) + (s << 11);
    s ^= p->ptghist;
    s = (s >> 10) + (s << 22);
    p->seed = s;
    return s;
}

/* comp = rotate-fold: c = (c << 1) ^ in ^ (out << (olen mod clen)); c ^= c >> clen; c mod 2^clen */
static inline unsigned fold_step(unsigned c, unsigned in, unsigned out, int op, int clen) {
    c = (c << 1) ^ in ^ (out << op);
    c ^= c >> clen;
    return c & ((1u << clen) - 1);
}
static void folded_update(Folded *f, const uint8_t *h, uint32_t pt) {
    unsigned in = h[pt & (HBUF - 1)];
    for (int k = 0; k < NFOLD; k++) {
        unsigned out = h[(pt + (uint32_t)f->olen[k]) & (HBUF - 1)];
        int tb = f->clen_t0[k];
        f->ci[k] = fold_step(f->ci[k], in, out, f->op_i[k], LOGG);
        f->ct0[k] = fold_step(f->ct0[k], in, out, f->op_t0[k], tb);
        f->ct1[k] = fold_step(f->ct1[k], in, out, f->op_t1[k], tb - 1);
    }
}

static void sc_comp_init(SCComp *c, int nbr, int logs, const int *len, int8_t w0) {
    c->nbr = nbr; c->logs = logs;
    for (int i = 0; i < nbr; i++) {
        c->len[i] = len[i];
        int sz = 1 << (logs - (i >= nbr - 2));
        c->tab[i] = malloc((size_t)sz);
        for (int j = 0; j < sz; j++) c->tab[i][j] = (j & 1) ? 0 : -1;
    }
    for (int i = 0; i < (1 << LOGSIZEUPS); i++) c->w[i] = w0;
}

static Tage *tage_new(void) {
    Tage *p = calloc(1, sizeof(Tage));
    p->h.kind = BP_TAGESCL;
    int morig[NHIST / 2 + 1];
    morig[1] = MINHIST;
    for (int i = 2; i <= NHIST / 2; i++)
        morig[i] = (int)((double)MINHIST * pow((double)MAXHIST / (double)MINHIST,
                                               (double)(i - 1) / (double)(NHIST / 2 - 1)) + 0.5);
    for (int i = 1; i <= NHIST; i++) {
        p->m[i] = morig[(i + 1) / 2];
        p->tb[i] = TBITS + 4 * (i >= BORN);
        p->noskip[i] = ((i - 1) & 1) || (i >= BORNINFASSOC && i < BORNSUPASSOC);
    }
    p->noskip[4] = p->noskip[NHIST - 2] = p->noskip[8] = p->noskip[NHIST - 6] = 0;
    p->glow = calloc((size_t)NBANKLOW << LOGG, sizeof(GEntry));
    p->ghigh = calloc((size_t)NBANKHIGH << LOGG, sizeof(GEntry));
    for (int i = 0; i < (1 << LOGB); i++) p->bpred[i] = 0;
    for (int i = 0; i < (1 << (LOGB - HYSTSHIFT)); i++) p->bhyst[i] = 1;
    for (int k = 0; k < NFOLD; k++) {
        int i = 2 * k + 1, L = p->m[i];
        p->f.olen[k] = L; p->f.clen_t0[k] = p->tb[i];
        p->f.op_i[k] = L % LOGG; p->f.op_t0[k] = L % p->tb[i]; p->f.op_t1[k] = L % (p->tb[i] - 1);
    }
    p->withloop = -1;
    p->updatethreshold = 35 << 3;
    static const int8_t b0[4] = {-32, 31, -1, 0}, bsk0[4] = {-8, 7, -32, 31};
    for (int j = 0; j < (1 << LOGBIAS); j++) {
        p->bias[j] = b0[j & 3]; p->biasbank[j] = b0[j & 3]; p->biassk[j] = bsk0[j & 3];
    }
    for (int i = 0; i < (1 << LOGSIZEUPS); i++) p->wb[i] = 4;
    static const int Gm[3] = {40, 24, 10}, Pm[3] = {25, 16, 9}, Lm[3] = {11, 6, 3},
                     Sm[3] = {16, 11, 6}, Tm[2] = {9, 4}, IMm[2] = {10, 4}, Im[1] = {8};
    sc_comp_init(&p->sc[SC_G], 3, 10, Gm, 7);
    sc_comp_init(&p->sc[SC_P], 3, 9, Pm, 7);
    sc_comp_init(&p->sc[SC_L], 3, 10, Lm, 7);
    sc_comp_init(&p->sc[SC_S], 3, 9, Sm, 7);
    sc_comp_init(&p->sc[SC_T], 2, 10, Tm, 7);
    sc_comp_init(&p->sc[SC_IM], 2, 9, IMm, 0);
    sc_comp_init(&p->sc[SC_I], 1, 8, Im, 7);
    return p;
}

static void tage_free(Tage *p) {
    for (int c = 0; c < SC_N; c++)
        for (int i = 0; i < p->sc[c].nbr; i++) free(p->sc[c].tab[i]);
    free(p->glow); free(p->ghigh); free(p);
}

/* Storage in bits, component by component (see the Python docstring for the table). */
static int64_t tage_storage(const Tage *p) {
    int64_t s = 0;
    s += (int64_t)NBANKHIGH * (1 << LOGG) * (CWIDTH + UWIDTH + TBITS + 4);
    s += (int64_t)NBANKLOW * (1 << LOGG) * (CWIDTH + UWIDTH + TBITS);
    s += SIZEUSEALT * ALTWIDTH;
    s += (1 << LOGB) + (1 << (LOGB - HYSTSHIFT));
    s += p->m[NHIST] + PHISTWIDTH + 10;                          /* histories + TICK */
    s += (1 << LOGL) * (2 * WIDTHNBITERLOOP + LOOPTAG + 4 + 4 + 1); /* loop predictor */
    s += WIDTHRES + WIDTHRESP * (1 << LOGSIZEUP);                /* SC thresholds */
    s += EWIDTH * (1 << LOGSIZEUPS);                             /* WB */
    s += PERCWIDTH * 3 * (1 << LOGBIAS);                         /* 3 bias tables */
    for (int c = 0; c < SC_N; c++) {
        const SCComp *k = &p->sc[c];
        for (int i = 0; i < k->nbr; i++) s += (int64_t)PERCWIDTH << (k->logs - (i >= k->nbr - 2));
        s += EWIDTH * (1 << LOGSIZEUPS);
    }
    s += p->sc[SC_G].len[0] + NLOCAL * p->sc[SC_L].len[0] + NSECLOCAL * p->sc[SC_S].len[0] +
         NTLOCAL * p->sc[SC_T].len[0] + p->sc[SC_I].len[0] + 256 * p->sc[SC_IM].len[0];
    s += 2 * CONFWIDTH + 7;                                      /* FirstH, SecondH, WITHLOOP */
    return s;
}

static inline int F_mix(uint64_t A, int size, int bank) {
    int a = (int)(A & ((1ULL << size) - 1));
    int a1 = a & ((1 << LOGG) - 1), a2 = a >> LOGG;
    if (bank < LOGG) a2 = ((a2 << bank) & ((1 << LOGG) - 1)) + (a2 >> (LOGG - bank));
    a = a1 ^ a2;
    if (bank < LOGG) a = ((a << bank) & ((1 << LOGG) - 1)) + (a >> (LOGG - bank));
    return a;
}

static inline int sc_index(uint64_t pc, uint64_t bh, int i, int logs, int nbr) {
    uint64_t x = pc ^ bh ^ (bh >> (8 - i)) ^ (bh >> (16 - 2 * i)) ^ (bh >> (24 - 3 * i)) ^
                 (bh >> (32 - 3 * i)) ^ (bh >> (40 - 4 * i));
    return (int)(x & ((1ULL << (logs - (i >= nbr - 2))) - 1));
}
/* sum of 2c+1 over the component's tables (x2 if its weight is >= 0); the indices are kept
 * for the update (the histories do not change between predict and update) */
static int sc_predict(SCComp *c, uint64_t pc, uint64_t hist, int upds) {
    int sum = 0;
    for (int i = 0; i < c->nbr; i++) {
        uint64_t bh = hist & ((1ULL << c->len[i]) - 1);
        c->idx[i] = sc_index(pc, bh, i, c->logs, c->nbr);
        sum += 2 * c->tab[i][c->idx[i]] + 1;
    }
    return (1 + (c->w[upds] >= 0)) * sum;
}
static void sc_train(SCComp *c, int upds, int taken, int lsum) {
    int sum = 0;
    for (int i = 0; i < c->nbr; i++) {
        int8_t *e = &c->tab[i][c->idx[i]];
        sum += 2 * *e + 1;
        ctr_update(e, taken, PERCWIDTH);
    }
    int x = lsum - (c->w[upds] >= 0) * sum;
    if ((x + sum >= 0) != (x >= 0)) ctr_update(&c->w[upds], (sum >= 0) == taken, EWIDTH);
}

static inline int abs2c1(int c) { return abs(2 * c + 1); }

static int tg_getbim(Tage *p) {
    p->BIM = (p->bpred[p->BI] << 1) + p->bhyst[p->BI >> HYSTSHIFT];
    p->highconf = (p->BIM == 0) || (p->BIM == 3);
    p->lowconf = !p->highconf;
    p->altconf = p->highconf;
    p->medconf = 0;
    return p->bpred[p->BI] > 0;
}
static void tg_baseupdate(Tage *p, int taken) {
    int v = p->BIM;
    if (taken) { if (v < 3) v++; } else if (v > 0) v--;
    p->bpred[p->BI] = (int8_t)(v >> 1);
    p->bhyst[p->BI >> HYSTSHIFT] = (int8_t)(v & 1);
}
static inline int ind_usealt(const Tage *p) {
    return ((((p->hitbank - 1) / 8) << 1) + p->altconf) % (SIZEUSEALT - 1);
}

static void tg_tagepred(Tage *p, uint64_t pc) {
    unsigned pc32 = (unsigned)pc;
    p->hitbank = p->altbank = p->used_alt = 0;
    for (int i = 1; i <= NHIST; i += 2) {
        int M = p->m[i] > PHISTWIDTH ? PHISTWIDTH : p->m[i];
        int k = i >> 1;
        int gi = (int)((pc32 ^ (pc32 >> (abs(LOGG - i) + 1)) ^ p->f.ci[k] ^ (unsigned)F_mix(p->phist, M, i))
                       & ((1u << LOGG) - 1));
        unsigned tag = (pc32 ^ p->f.ct0[k] ^ (p->f.ct1[k] << 1)) & ((1u << p->tb[i]) - 1);
        p->GI[i] = gi; p->GTAG[i] = tag;
        p->GTAG[i + 1] = tag; p->GI[i + 1] = gi ^ (int)(tag & ((1u << LOGG) - 1));
    }
    uint64_t T = (pc ^ p->phist) % NBANKHIGH;
    for (int i = BORN; i <= NHIST; i++)
        if (p->noskip[i]) { p->GI[i] += (int)(T << LOGG); T = (T + 1) % NBANKHIGH; }
    T = (pc ^ (p->phist & ((1ULL << p->m[1]) - 1))) % NBANKLOW;
    for (int i = 1; i < BORN; i++)
        if (p->noskip[i]) { p->GI[i] += (int)(T << LOGG); T = (T + 1) % NBANKLOW; }
    p->BI = (int)((pc ^ (pc >> 2)) & ((1 << LOGB) - 1));
    p->alttaken = p->tage_pred = p->longest_pred = tg_getbim(p);
    for (int i = NHIST; i > 0; i--)
        if (p->noskip[i] && tg_entry(p, i)->tag == p->GTAG[i]) {
            p->hitbank = i; p->longest_pred = tg_entry(p, i)->ctr >= 0; break;
        }
    for (int i = p->hitbank - 1; i > 0; i--)
        if (p->noskip[i] && tg_entry(p, i)->tag == p->GTAG[i]) { p->altbank = i; break; }
    if (p->hitbank > 0) {
        if (p->altbank > 0) {
            int c = tg_entry(p, p->altbank)->ctr;
            p->alttaken = c >= 0;
            p->altconf = abs2c1(c) > 1;
        } else {
            p->alttaken = tg_getbim(p);
        }
        int hc = tg_entry(p, p->hitbank)->ctr;
        int use_alt = p->use_alt_on_na[ind_usealt(p)] >= 0;
        p->used_alt = use_alt && abs2c1(hc) <= 1;
        p->tage_pred = p->used_alt ? p->alttaken : p->longest_pred;
        p->highconf = abs2c1(hc) >= (1 << CWIDTH) - 1;
        p->lowconf = abs2c1(hc) == 1;
        p->medconf = abs2c1(hc) == 5;
    }
}

/* ---- loop predictor: 32 entries, 4-way skewed ---- */
static int lp_get(Tage *p, uint64_t pc) {
    p->lhit = -1;
    p->li = (int)(((pc ^ (pc >> 2)) & ((1 << (LOGL - 2)) - 1)) << 2);
    p->lib = (int)((pc >> (LOGL - 2)) & ((1 << (LOGL - 2)) - 1));
    int t = (int)((pc >> (LOGL - 2)) & ((1 << 2 * LOOPTAG) - 1));
    t ^= t >> LOOPTAG;
    p->ltag = t & ((1 << LOOPTAG) - 1);
    for (int i = 0; i < 4; i++) {
        LEntry *e = &p->ltable[(p->li ^ ((p->lib >> i) << 2)) + i];
        if (e->tag == p->ltag) {
            p->lhit = i;
            p->lvalid = (e->confid == CONFLOOP) || (e->confid * e->nbiter > 128);
            if (e->curiter + 1 == e->nbiter) return !e->dir;
            return e->dir;
        }
    }
    p->lvalid = 0;
    return 0;
}
static void lp_update(Tage *p, int taken, int alloc) {
    if (p->lhit >= 0) {
        LEntry *e = &p->ltable[(p->li ^ ((p->lib >> p->lhit) << 2)) + p->lhit];
        if (p->lvalid) {
            if (taken != p->predloop) {  /* free the entry */
                e->nbiter = 0; e->age = 0; e->confid = 0; e->curiter = 0;
                return;
            } else if (p->predloop != p->tage_pred || (tg_random(p) & 7) == 0) {
                if (e->age < CONFLOOP) e->age++;
            }
        }
        e->curiter = (uint16_t)((e->curiter + 1) & ((1 << WIDTHNBITERLOOP) - 1));
        if (e->curiter > e->nbiter) { e->confid = 0; e->nbiter = 0; }
        if (taken != e->dir) {
            if (e->curiter == e->nbiter) {
                if (e->confid < CONFLOOP) e->confid++;
                if (e->nbiter < 3) { e->dir = (uint8_t)taken; e->nbiter = 0; e->age = 0; e->confid = 0; }
            } else if (e->nbiter == 0) {
                e->confid = 0; e->nbiter = e->curiter;
            } else {
                e->nbiter = 0; e->confid = 0;
            }
            e->curiter = 0;
        }
    } else if (alloc) {
        uint32_t x = tg_random(p) & 3;
        if ((tg_random(p) & 3) == 0) {
            int w = (int)x;   /* only the first candidate way is examined, as in CBP-5 */
            LEntry *e = &p->ltable[(p->li ^ ((p->lib >> w) << 2)) + w];
            if (e->age == 0) {
                e->dir = (uint8_t)!taken; e->tag = (uint16_t)p->ltag;
                e->nbiter = 0; e->age = 7; e->confid = 0; e->curiter = 0;
            } else {
                e->age--;
            }
        }
    }
}

static inline int upd_idx(uint64_t pc) { return (int)((pc ^ (pc >> 2)) & ((1 << LOGSIZEUP) - 1)); }
static inline int upds_idx(uint64_t pc) { return (int)((pc ^ (pc >> 2)) & ((1 << LOGSIZEUPS) - 1)); }

static uint64_t sc_hist(const Tage *p, int c, uint64_t pc) {
    switch (c) {
    case SC_G: return p->GHIST;
    case SC_P: return p->phist;
    case SC_L: return p->lhist[(pc ^ (pc >> 2)) & (NLOCAL - 1)];
    case SC_S: return p->shist[(pc ^ (pc >> 5)) & (NSECLOCAL - 1)];
    case SC_T: return p->thist[(pc ^ (pc >> 10)) & (NTLOCAL - 1)];
    case SC_IM: return p->imhist[p->imlicount];
    default: return (uint64_t)p->imlicount;
    }
}

static int tage_predict(Tage *p, uint64_t pc, uint8_t *conf) {
    tg_tagepred(p, pc);
    p->pred_taken = p->tage_pred;
    p->predloop = lp_get(p, pc);
    if (p->withloop >= 0 && p->lvalid) p->pred_taken = p->predloop;
    p->pred_inter = p->pred_taken;
    int pi = p->pred_inter, upd = upd_idx(pc), upds = upds_idx(pc);
    uint64_t h = pc ^ (pc >> 2);
    p->ib = (int)((((h << 1) ^ (uint64_t)(p->lowconf & (p->longest_pred != p->alttaken))) << 1) + (uint64_t)pi) & ((1 << LOGBIAS) - 1);
    p->ibsk = (int)(((((pc ^ (pc >> (LOGBIAS - 2))) << 1) ^ (uint64_t)p->highconf) << 1) + (uint64_t)pi) & ((1 << LOGBIAS) - 1);
    p->ibbank = (int)((pi + (((p->hitbank + 1) / 4) << 4) + (p->highconf << 1) + (p->lowconf << 2) +
                       ((p->altbank != 0) << 3) + (h << 7)) & ((1 << LOGBIAS) - 1));
    int lsum = (2 * p->bias[p->ib] + 1) + (2 * p->biassk[p->ibsk] + 1) + (2 * p->biasbank[p->ibbank] + 1);
    lsum *= 1 + (p->wb[upds] >= 0);
    for (int c = 0; c < SC_N; c++) {
        uint64_t key = c == SC_G ? (pc << 1) + (uint64_t)pi : pc;
        lsum += sc_predict(&p->sc[c], key, sc_hist(p, c, pc), upds);
    }
    p->lsum = lsum;
    p->scpred = lsum >= 0;
    p->thres = (p->updatethreshold >> 3) + p->pupdatethreshold[upd] +
               12 * ((p->wb[upds] >= 0) + (p->sc[SC_P].w[upds] >= 0) + (p->sc[SC_S].w[upds] >= 0) +
                     (p->sc[SC_T].w[upds] >= 0) + (p->sc[SC_L].w[upds] >= 0) +
                     (p->sc[SC_G].w[upds] >= 0) + (p->sc[SC_I].w[upds] >= 0));
    int a = abs(lsum), th = p->thres;
    if (pi != p->scpred) {
        p->pred_taken = p->scpred;
        if (p->highconf) {
            if (a < th / 4) p->pred_taken = pi;
            else if (a < th / 2) p->pred_taken = (p->secondh < 0) ? p->scpred : pi;
        }
        if (p->medconf && a < th / 4) p->pred_taken = (p->firsth < 0) ? p->scpred : pi;
    }
    /* confidence classes */
    int tconf = p->highconf ? 2 : (p->medconf ? 1 : 0);
    if (p->withloop >= 0 && p->lvalid && p->pred_taken == p->predloop) *conf = 2;
    else if (p->pred_taken != pi) *conf = a >= th ? 1 : 0;
    else if (p->scpred != pi) *conf = tconf > 1 ? 1 : tconf;
    else *conf = (uint8_t)tconf;
    return p->pred_taken;
}

/* The internals of the latest prediction, before the update with its outcome (the columns of
 * TAGE_DETAIL_COLUMNS in branch_predictors.py): provider's prediction, alternate prediction,
 * provider's signed counter (tagged: ctr in [-4, 3]; bimodal: BIM - 2 in [-2, 1]), provider bank
 * (0 = bimodal, 1..36), alternate bank, use-alt-on-new-alloc chose the alternate, TAGE's prediction,
 * loop hit, loop valid, loop prediction, loop used, SC sum, SC threshold, SC flipped the TAGE/loop
 * prediction. */
#define BP_DETAIL 14
static void tage_detail(Tage *p, int32_t *d) {
    int ctr = p->hitbank > 0 ? tg_entry(p, p->hitbank)->ctr : p->BIM - 2;
    int32_t v[BP_DETAIL] = {p->longest_pred, p->alttaken, ctr, p->hitbank, p->altbank, p->used_alt,
                            p->tage_pred, p->lhit >= 0, p->lvalid, p->predloop,
                            p->withloop >= 0 && p->lvalid, p->lsum, p->thres, p->pred_taken != p->pred_inter};
    memcpy(d, v, sizeof v);
}

static void tage_history(Tage *p, uint64_t pc, uint64_t target, int taken, int kind) {
    int cond = kind == K_COND;
    int indirect = kind == K_RET || kind == K_IND_JUMP || kind == K_IND_CALL;
    int brtype = (indirect ? 2 : 0) + cond;
    int maxt = (brtype & 1) ? 2 : ((brtype & 2) ? 3 : 2);
    if (cond) {
        p->imhist[p->imlicount] = (p->imhist[p->imlicount] << 1) + (uint64_t)taken;
        if (target < pc) {
            if (!taken) p->imlicount = 0;
            else if (p->imlicount < (1 << p->sc[SC_I].len[0]) - 1) p->imlicount++;
        }
        p->GHIST = (p->GHIST << 1) + (uint64_t)(taken && target < pc);
        uint64_t li = (pc ^ (pc >> 2)) & (NLOCAL - 1), si = (pc ^ (pc >> 5)) & (NSECLOCAL - 1),
                 ti = (pc ^ (pc >> 10)) & (NTLOCAL - 1);
        p->lhist[li] = (p->lhist[li] << 1) + (uint64_t)taken;
        p->shist[si] = ((p->shist[si] << 1) + (uint64_t)taken) ^ (pc & 15);
        p->thist[ti] = (p->thist[ti] << 1) + (uint64_t)taken;
    }
    uint64_t T = (pc ^ (pc >> 2)) ^ (uint64_t)taken;
    uint64_t path = pc ^ (pc >> 2) ^ (pc >> 4);
    if (brtype == 3 && taken) { T ^= target >> 2; path ^= (target >> 2) ^ (target >> 4); }
    for (int t = 0; t < maxt; t++) {
        uint8_t dir = (uint8_t)(T & 1);
        T >>= 1;
        uint64_t pathbit = path & 127;
        path >>= 1;
        p->ptghist--;
        p->ghist[p->ptghist & (HBUF - 1)] = dir;
        p->phist = (p->phist << 1) ^ pathbit;
        folded_update(&p->f, p->ghist, p->ptghist);
    }
    p->phist &= (1ULL << PHISTWIDTH) - 1;
}

static void tg_try_alloc(Tage *p, int i, int taken, int *done, int *na, int *penalty, int *T, int *I, int *brk) {
    GEntry *e = tg_entry(p, i);
    if (e->u == 0) {
        if (abs2c1(e->ctr) <= 3) {
            e->tag = (uint16_t)p->GTAG[i];
            e->ctr = taken ? 0 : -1;
            (*na)++;
            if (*T <= 0) { *brk = 1; return; }
            *I += 2; *done = 1; (*T)--;
        } else {
            if (e->ctr > 0) e->ctr--; else e->ctr++;
        }
    } else {
        (*penalty)++;
    }
}

static void tage_update_cond(Tage *p, uint64_t pc, int taken) {
    /* loop predictor */
    if (p->lvalid && p->pred_taken != p->predloop) ctr_update(&p->withloop, p->predloop == taken, 7);
    lp_update(p, taken, p->pred_taken != taken);
    /* statistical corrector */
    int a = abs(p->lsum), th = p->thres, pi = p->pred_inter, upd = upd_idx(pc), upds = upds_idx(pc);
    if (pi != p->scpred && a < th) {
        if (p->highconf && a < th / 2 && a >= th / 4) ctr_update(&p->secondh, pi == taken, CONFWIDTH);
        if (p->medconf && a < th / 4) ctr_update(&p->firsth, pi == taken, CONFWIDTH);
    }
    if (p->scpred != taken || a < th) {
        int d = p->scpred != taken ? 1 : -1;
        p->pupdatethreshold[upd] += d;
        p->updatethreshold += d;
        int pm = 1 << (WIDTHRESP - 1), gm = 1 << (WIDTHRES - 1);
        if (p->pupdatethreshold[upd] >= pm) p->pupdatethreshold[upd] = pm - 1;
        if (p->pupdatethreshold[upd] < -pm) p->pupdatethreshold[upd] = -pm;
        if (p->updatethreshold >= gm) p->updatethreshold = gm - 1;
        if (p->updatethreshold < -gm) p->updatethreshold = -gm;
        int bsum = (2 * p->bias[p->ib] + 1) + (2 * p->biassk[p->ibsk] + 1) + (2 * p->biasbank[p->ibbank] + 1);
        int x = p->lsum - (p->wb[upds] >= 0) * bsum;
        if ((x + bsum >= 0) != (x >= 0)) ctr_update(&p->wb[upds], (bsum >= 0) == taken, EWIDTH);
        ctr_update(&p->bias[p->ib], taken, PERCWIDTH);
        ctr_update(&p->biassk[p->ibsk], taken, PERCWIDTH);
        ctr_update(&p->biasbank[p->ibbank], taken, PERCWIDTH);
        for (int c = 0; c < SC_N; c++) sc_train(&p->sc[c], upds, taken, p->lsum);
    }
    /* TAGE */
    int alloc = (p->tage_pred != taken) && (p->hitbank < NHIST);
    if (p->hitbank > 0) {
        GEntry *hit = tg_entry(p, p->hitbank);
        if (abs2c1(hit->ctr) <= 1) {
            if (p->longest_pred == taken) alloc = 0;
            if (p->longest_pred != p->alttaken)
                ctr_update(&p->use_alt_on_na[ind_usealt(p)], p->alttaken == taken, ALTWIDTH);
        }
    }
    if (p->pred_taken == taken && (tg_random(p) & 31) != 0) alloc = 0;
    if (alloc) {
        int T = NNN, A = 1;
        if ((tg_random(p) & 127) < 32) A = 2;
        int penalty = 0, na = 0;
        int dep = ((p->hitbank - 1 + 2 * A) & 0xffe) ^ (int)(tg_random(p) & 1);
        for (int I = dep; I < NHIST; I += 2) {
            int done = 0, brk = 0;
            int i = I + 1;
            if (p->noskip[i]) tg_try_alloc(p, i, taken, &done, &na, &penalty, &T, &I, &brk);
            if (brk) break;
            if (!done) {
                i = (I ^ 1) + 1;
                if (p->noskip[i]) {
                    int d2 = 0;
                    tg_try_alloc(p, i, taken, &d2, &na, &penalty, &T, &I, &brk);
                    if (brk) break;
                }
            }
        }
        p->tick += penalty - 2 * na;
        if (p->tick < 0) p->tick = 0;
        if (p->tick >= BORNTICK) {
            for (int j = 0; j < (NBANKLOW << LOGG); j++) p->glow[j].u >>= 1;
            for (int j = 0; j < (NBANKHIGH << LOGG); j++) p->ghigh[j].u >>= 1;
            p->tick = 0;
        }
    }
    if (p->hitbank > 0) {
        GEntry *hit = tg_entry(p, p->hitbank);
        if (abs2c1(hit->ctr) == 1 && p->longest_pred != taken) {
            if (p->altbank > 0) ctr_update(&tg_entry(p, p->altbank)->ctr, taken, CWIDTH);
            else tg_baseupdate(p, taken);
        }
        ctr_update(&hit->ctr, taken, CWIDTH);
        if (abs2c1(hit->ctr) == 1) hit->u = 0;
        if (p->alttaken == taken && p->altbank > 0 && abs2c1(tg_entry(p, p->altbank)->ctr) == 7 &&
            hit->u == 1 && p->longest_pred == taken)
            hit->u = 0;
    } else {
        tg_baseupdate(p, taken);
    }
    if (p->longest_pred != p->alttaken && p->longest_pred == taken) {
        GEntry *hit = tg_entry(p, p->hitbank);
        if (hit->u < (1 << UWIDTH) - 1) hit->u++;
    }
}

/* ============================== dispatch ============================== */
static int64_t bits_of(Head *h) {
    switch (h->kind) {
    case BP_BIMODAL: return (int64_t)2 << ((Bimodal *)h)->log;
    case BP_GSHARE: { Gshare *g = (Gshare *)h; return ((int64_t)2 << g->log) + g->hist_len; }
    case BP_PERCEPTRON: {
        Perceptron *q = (Perceptron *)h;
        return ((int64_t)8 * q->ntab << q->log) + q->seg_hi[q->ntab - 1] + 16;
    }
    default: return tage_storage((Tage *)h);
    }
}

void *bp_new(int kind, const int *params) {
    switch (kind) {
    case BP_BIMODAL: {
        Bimodal *p = calloc(1, sizeof *p);
        p->h.kind = kind; p->log = params ? params[0] : 14;
        p->ctr = malloc((size_t)1 << p->log);
        memset(p->ctr, 1, (size_t)1 << p->log);
        return p;
    }
    case BP_GSHARE: {
        Gshare *p = calloc(1, sizeof *p);
        p->h.kind = kind;
        p->hist_len = params ? params[0] : 14; p->log = params ? params[1] : 14;
        p->ctr = malloc((size_t)1 << p->log);
        memset(p->ctr, 1, (size_t)1 << p->log);
        return p;
    }
    case BP_PERCEPTRON: {
        /* params: log, theta0, speed, ntab, then ntab (lo, hi) pairs */
        if (!params || params[3] > PC_MAXT || params[3] < 1) return NULL;
        Perceptron *p = calloc(1, sizeof *p);
        p->h.kind = kind; p->log = params[0]; p->theta = params[1]; p->speed = params[2];
        p->ntab = params[3];
        for (int t = 0; t < p->ntab; t++) {
            p->seg_lo[t] = params[4 + 2 * t]; p->seg_hi[t] = params[5 + 2 * t];
            if (p->seg_hi[t] > 128 || p->seg_lo[t] > p->seg_hi[t]) { free(p); return NULL; }
        }
        p->w = calloc((size_t)p->ntab << p->log, 1);
        return p;
    }
    case BP_TAGESCL: {
        Tage *p = tage_new();
        int64_t s = tage_storage(p);
        assert(s <= 524288 && s > 500000);
        return p;
    }
    default: return NULL;
    }
}

void bp_free(void *v) {
    Head *h = v;
    if (!h) return;
    switch (h->kind) {
    case BP_BIMODAL: free(((Bimodal *)h)->ctr); free(h); break;
    case BP_GSHARE: free(((Gshare *)h)->ctr); free(h); break;
    case BP_PERCEPTRON: free(((Perceptron *)h)->w); free(h); break;
    default: tage_free((Tage *)h);
    }
}

int64_t bp_storage_bits(void *v) { return bits_of((Head *)v); }

int bp_predict(void *v, uint64_t pc, uint8_t *conf) {
    Head *h = v;
    uint8_t c = 0;
    int r;
    switch (h->kind) {
    case BP_BIMODAL: r = bim_predict(v, pc, &c); break;
    case BP_GSHARE: r = gs_predict(v, pc, &c); break;
    case BP_PERCEPTRON: r = pc_predict(v, pc, &c); break;
    default: r = tage_predict(v, pc, &c);
    }
    h->pending = 1; h->pending_pc = pc;
    if (conf) *conf = c;
    return r;
}

void bp_update(void *v, uint64_t pc, uint64_t target, int taken, int kind) {
    Head *h = v;
    if (kind != K_COND) taken = 1;          /* non-conditional branches are always taken */
    taken = taken != 0;
    if (kind == K_COND && !(h->pending && h->pending_pc == pc)) bp_predict(v, pc, NULL);
    h->pending = 0;
    switch (h->kind) {
    case BP_BIMODAL: bim_update(v, pc, taken, kind); break;
    case BP_GSHARE: gs_update(v, pc, taken, kind); break;
    case BP_PERCEPTRON: pc_update(v, taken, kind); break;
    default:
        if (kind == K_COND) tage_update_cond(v, pc, taken);
        tage_history(v, pc, target, taken, kind);
    }
}

int bp_run_detail(void *v, const uint64_t *pc, const uint64_t *target, const uint8_t *taken,
                  const uint8_t *kind, int64_t n, uint8_t *pred, uint8_t *conf, int32_t *detail) {
    if (detail && ((Head *)v)->kind != BP_TAGESCL) return -1;
    for (int64_t i = 0; i < n; i++) {
        uint8_t c = 0, p = 0;
        int32_t *d = detail ? detail + i * BP_DETAIL : NULL;
        if (d) memset(d, 0, BP_DETAIL * sizeof *d);
        if (kind[i] == K_COND) {
            p = (uint8_t)bp_predict(v, pc[i], &c);
            if (d) tage_detail(v, d);
        }
        pred[i] = p; conf[i] = c;
        bp_update(v, pc[i], target[i], taken[i], kind[i]);
    }
    return 0;
}

void bp_run(void *v, const uint64_t *pc, const uint64_t *target, const uint8_t *taken,
            const uint8_t *kind, int64_t n, uint8_t *pred, uint8_t *conf) {
    bp_run_detail(v, pc, target, taken, kind, n, pred, conf, NULL);
}
