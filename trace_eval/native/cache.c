/* cache.c -- two-level data-cache model with L1D prefetcher baselines, called through ctypes.
 *
 * The model, the configuration, the outcome codes and the statistics are documented in
 * trace_eval/cache.py (the Python wrapper, which also holds a straightforward per-access
 * reference implementation that must give identical results). In short:
 *
 *   - L1D and L2: set-associative, true LRU, one line size, write-allocate, non-inclusive
 *     (no back-invalidation, no write-backs). Loads and stores both access; a demand L1 miss
 *     looks up the L2 and fills both levels.
 *   - Time is the instruction index of each access. A prefetch issued at instruction t is
 *     filled into the cache(s) at once but is "in flight" until t + prefetch_latency; a demand
 *     that hits it before then is a *late* (still useful) prefetch.
 *   - The prefetcher sits at the L1D and trains on every demand access, like ChampSim's
 *     prefetcher_cache_operate(addr, ip, cache_hit, useful_prefetch, type); it returns line
 *     numbers to prefetch, filled into the L1D (and L2) or into the L2 only (fill_level).
 *
 * Prefetchers (own implementations of the published algorithms, written from reading):
 *   next-line   ChampSim prefetcher/next_line: on every access, prefetch line+1..line+degree.
 *   ip-stride   ChampSim prefetcher/ip_stride (and its DPC-2 "legacy" l2c_ip_stride, Seth
 *               Pugsley): a per-IP table of (last line, last stride); when the same nonzero
 *               stride is seen again, prefetch line+(distance+m)*stride, m = 0..degree-1 (distance 1:
 *               ChampSim's line+k*stride, k = 1..degree; an IP may have its own distance,
 *               cache_ip_distances), stopping at the
 *               4 KiB page boundary. Here with a confidence counter (consecutive repeats of the
 *               stride, saturating at 3) and a threshold (1 = ChampSim's rule), and a
 *               set-associative LRU table indexed by a hash of the IP.
 *   bop         Best-Offset prefetcher, P. Michaud, "A Best-Offset Prefetcher", DPC-2 (2015) and
 *               "Best-Offset Hardware Prefetching", HPCA 2016 (the DPC-2 submission's code):
 *               46-entry offset list, score table, rounds, SCORE_MAX / ROUND_MAX / BAD_SCORE,
 *               a 2-bank recent-requests (RR) table written by prefetch fills ("right" bank)
 *               and through a delay queue ("left" bank). Triggered on L1D misses and on first
 *               demand hits to prefetched lines. Time is in instructions, not cycles; the
 *               MSHR/LLC-rate throttling of the DPC-2 code is not modelled (no MSHRs here).
 *   berti       Berti, A. Navarro-Torres, B. Panda, J. Alastruey-Benede, P. Ibanez, V. Vinals-Yufera
 *               and A. Ros, "Berti: an Accurate Local-Delta Data Prefetcher", MICRO 2022, and its
 *               ChampSim port: a per-IP history of misses and first hits to prefetched lines
 *               (line, time), searched at each such access for the entries early enough that a
 *               prefetch issued then would have been timely (time + latency <= now); their deltas
 *               count in the IP's delta table, and every `period` searches each delta's coverage
 *               gives its status (high / medium / none). Every access prefetches line + delta for
 *               the IP's high, then medium deltas. Latency = the model's constant prefetch latency
 *               (known at the access, so the search runs then, not at the fill); medium deltas fill
 *               the L1D like the high ones (as the ChampSim port does); no MSHR check.
 *   external    Requests computed outside (e.g. by a learned model, offline): cache_run's
 *               pf_addr[n][pf_k] holds, per access, up to pf_k byte addresses to prefetch
 *               (0 = no request); the nonzero ones of row i are issued after access i, where
 *               the built-in prefetchers' candidates are issued, with the same accounting. The
 *               rows may also come with a built-in prefetcher (a learned prefetcher for its loads
 *               beside the baseline for the rest): then they follow the built-in's requests.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EMPTY UINT64_MAX

enum { MISS = 0, HIT = 1, LATE = 2, NOT_ACCESSED = 3 };
enum { PF_NONE = 0, PF_NEXT_LINE = 1, PF_IP_STRIDE = 2, PF_BOP = 3, PF_EXTERNAL = 4, PF_BERTI = 5 };

/* cfg[] given to cache_new */
enum { CFG_L1_SIZE, CFG_L1_WAYS, CFG_L2_SIZE, CFG_L2_WAYS, CFG_LINE, CFG_PF_LATENCY,
       CFG_FILL_LEVEL, CFG_PAGE, CFG_N };

/* stats_out[] of cache_run, in this order (cache.py STAT_FIELDS mirrors it) */
enum { ST_LOADS, ST_L1_LOAD_MISSES, ST_L2_LOAD_MISSES, ST_STORES, ST_L1_STORE_MISSES,
       ST_L2_STORE_MISSES, ST_L1_LOAD_LATE, ST_L2_LOAD_LATE, ST_PF_REQUESTED, ST_PF_ISSUED,
       ST_PF_USEFUL, ST_PF_LATE, ST_PF_USELESS, ST_PF_UNUSED_AT_END, ST_PF_LATE_WAIT,
       ST_PF_STATE, ST_N };

#define MAX_CANDIDATES 64

/* ------------------------------------------------------------------------------------------ */
/* one cache level */

typedef struct {
    int64_t sets, ways;
    uint64_t mask;      /* sets - 1 when sets is a power of two, else 0 */
    uint64_t *tag;      /* line number, EMPTY if invalid */
    uint64_t *stamp;    /* LRU: last-touch clock value */
    int64_t *ready;     /* prefetched lines: instruction at which the prefetch completes */
    uint8_t *pf;        /* 1 = filled by a prefetch and not yet demanded */
    uint64_t clock;
} level_t;

static int level_init(level_t *c, int64_t size, int64_t ways, int64_t line)
{
    c->ways = ways;
    c->sets = size / (ways * line);
    if (c->sets < 1) return -1;
    c->mask = (c->sets & (c->sets - 1)) == 0 ? (uint64_t)(c->sets - 1) : 0;
    size_t n = (size_t)(c->sets * ways);
    c->tag = malloc(n * sizeof *c->tag);
    c->stamp = calloc(n, sizeof *c->stamp);
    c->ready = calloc(n, sizeof *c->ready);
    c->pf = calloc(n, 1);
    if (!c->tag || !c->stamp || !c->ready || !c->pf) return -1;
    for (size_t i = 0; i < n; i++) c->tag[i] = EMPTY;
    c->clock = 0;
    return 0;
}

static void level_free(level_t *c)
{
    free(c->tag); free(c->stamp); free(c->ready); free(c->pf);
}

static inline int64_t set_base(const level_t *c, uint64_t line)
{
    uint64_t s = c->mask || c->sets == 1 ? (line & c->mask) : (line % (uint64_t)c->sets);
    return (int64_t)s * c->ways;
}

/* slot of `line`, or -1 */
static inline int64_t level_find(const level_t *c, uint64_t line)
{
    int64_t b = set_base(c, line);
    for (int64_t w = 0; w < c->ways; w++)
        if (c->tag[b + w] == line) return b + w;
    return -1;
}

static inline void level_touch(level_t *c, int64_t slot) { c->stamp[slot] = ++c->clock; }

/* Insert `line` (not present) into its set: the first invalid way, else the LRU way. Returns the
 * slot; *evicted_pf is set when the victim was an unused prefetched line. */
static inline int64_t level_insert(level_t *c, uint64_t line, int *evicted_pf)
{
    int64_t b = set_base(c, line), v = -1;
    uint64_t best = UINT64_MAX;
    for (int64_t w = 0; w < c->ways; w++) {
        if (c->tag[b + w] == EMPTY) { v = b + w; break; }
        if (c->stamp[b + w] < best) { best = c->stamp[b + w]; v = b + w; }
    }
    *evicted_pf = c->tag[v] != EMPTY && c->pf[v];
    c->tag[v] = line;
    c->pf[v] = 0;
    c->ready[v] = 0;
    level_touch(c, v);
    return v;
}

/* ------------------------------------------------------------------------------------------ */
/* prefetchers */

/* IP-stride: params[] = degree, table sets, table ways, confidence threshold, distance */
typedef struct {
    uint64_t ip, last_line, stamp;
    int64_t stride;
    int conf, valid;
} ips_entry;

typedef struct {
    int64_t degree, sets, ways, threshold, distance;
    ips_entry *t;
    uint64_t clock;
    uint64_t *dist_ip;                      /* per-IP distances (cache_ip_distances), n_dist of them */
    int64_t *dist_k, n_dist;
} ips_t;

/* BOP (DPC-2 constants unless given): params[] = score_max, round_max, bad_score, dq_delay,
 * default_offset */
#define BOP_NOFFSETS 46
static const int BOP_OFFSETS[BOP_NOFFSETS] = {
    1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7, 8, -8, 9, -9, 10, -10, 11, -11, 12, -12,
    13, -13, 14, -14, 15, -15, 16, -16, 18, -18, 20, -20, 24, -24, 30, -30, 32, -32, 36, -36,
    40, -40};
#define BOP_RRINDEX 6
#define BOP_RRTAG 12
#define BOP_DQSIZE 15

typedef struct {
    int64_t score_max, round_max, bad_score, dq_delay, default_offset;
    int64_t offset;                         /* current prefetch offset, 0 = off */
    uint32_t rr[2][1 << BOP_RRINDEX];       /* left bank (delay queue), right bank (fills) */
    int64_t score[BOP_NOFFSETS];
    int64_t max_score, best_offset, round, p;
    uint64_t dq_line[BOP_DQSIZE];
    int64_t dq_time[BOP_DQSIZE];
    int dq_valid[BOP_DQSIZE], dq_head, dq_tail;
    /* FIFO of in-flight fills (prefetches and demand misses), for the fill hook */
    uint64_t *fq_line;
    int64_t *fq_ready;
    uint8_t *fq_pf;
    size_t fq_cap, fq_head, fq_len;
} bop_t;

/* Berti: params[] = degree, ips, deltas, hist_sets, hist_ways, period, high, medium (percent) */
enum { BERTI_NONE = 0, BERTI_MEDIUM = 1, BERTI_HIGH = 2 };
#define BERTI_MAX_WAYS 256                  /* history entries per set (cache.py checks it) */

typedef struct {
    uint64_t ip, line;
    int64_t time;
    int valid;
} berti_hist;                               /* one history entry */

typedef struct {
    int64_t delta, count;                   /* delta 0 = free slot */
    int status;
} berti_delta;

typedef struct {
    int64_t degree, ips, deltas, hist_sets, hist_ways, period, high, medium;
    berti_hist *hist;                       /* hist_sets rings of hist_ways entries */
    int64_t *hist_head;                     /* per set: the slot written next (the oldest) */
    uint64_t *ip;                           /* delta table: ips entries, FIFO replacement */
    int64_t *searches;                      /* per entry; -1 = invalid entry */
    berti_delta *d;                         /* per entry: `deltas` slots */
    int64_t next;                           /* the entry allocated next */
} berti_t;

/* ------------------------------------------------------------------------------------------ */

typedef struct {
    level_t l1, l2;
    int64_t cfg[CFG_N];
    int lshift, page_shift;                 /* log2 line, log2(page / line) */
    int kind;                               /* prefetcher of the previous run, -1 = none yet */
    int64_t params[8];
    ips_t ips;
    bop_t bop;
    berti_t berti;
} sim_t;

static int log2i(int64_t v) { int s = 0; while ((INT64_C(1) << s) < v) s++; return s; }

void cache_free(void *p);

void *cache_new(const int64_t *cfg)
{
    sim_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    memcpy(s->cfg, cfg, sizeof s->cfg);
    s->lshift = log2i(cfg[CFG_LINE]);
    s->page_shift = log2i(cfg[CFG_PAGE]) - s->lshift;
    s->kind = -1;
    if (level_init(&s->l1, cfg[CFG_L1_SIZE], cfg[CFG_L1_WAYS], cfg[CFG_LINE]) ||
        level_init(&s->l2, cfg[CFG_L2_SIZE], cfg[CFG_L2_WAYS], cfg[CFG_LINE])) {
        cache_free(s);
        return NULL;
    }
    return s;
}

void cache_free(void *p)
{
    sim_t *s = p;
    if (!s) return;
    level_free(&s->l1);
    level_free(&s->l2);
    free(s->ips.t); free(s->ips.dist_ip); free(s->ips.dist_k);
    free(s->bop.fq_line);
    free(s->bop.fq_ready);
    free(s->bop.fq_pf);
    free(s->berti.hist); free(s->berti.hist_head);
    free(s->berti.ip); free(s->berti.searches); free(s->berti.d);
    free(s);
}

int cache_n_stats(void) { return ST_N; }

/* IP-stride's per-IP distances (ip[j] prefetches at distance k[j]; other IPs at params[4]), used by
 * the following runs until set again; n = 0 clears them. Returns 0, or -1 when out of memory. */
int cache_ip_distances(void *handle, int64_t n, const uint64_t *ip, const int64_t *k)
{
    ips_t *p = &((sim_t *)handle)->ips;
    free(p->dist_ip); free(p->dist_k);
    p->dist_ip = malloc((size_t)(n ? n : 1) * sizeof *p->dist_ip);
    p->dist_k = malloc((size_t)(n ? n : 1) * sizeof *p->dist_k);
    p->n_dist = 0;
    if (!p->dist_ip || !p->dist_k) return -1;
    if (n) {
        memcpy(p->dist_ip, ip, (size_t)n * sizeof *ip);
        memcpy(p->dist_k, k, (size_t)n * sizeof *k);
    }
    p->n_dist = n;
    return 0;
}

static inline int same_page(const sim_t *s, uint64_t a, uint64_t b)
{
    return ((a ^ b) >> s->page_shift) == 0;
}

/* --- IP-stride --- */

static void ips_init(ips_t *p, const int64_t *prm)
{
    free(p->t);
    p->degree = prm[0]; p->sets = prm[1]; p->ways = prm[2]; p->threshold = prm[3]; p->distance = prm[4];
    p->t = calloc((size_t)(p->sets * p->ways), sizeof *p->t);
    p->clock = 0;
}

static inline uint64_t ips_index(uint64_t ip, int64_t sets)
{
    return (ip ^ (ip >> 8) ^ (ip >> 16)) % (uint64_t)sets;
}

static int ips_operate(sim_t *s, uint64_t line, uint64_t ip, uint64_t *out)
{
    ips_t *p = &s->ips;
    ips_entry *set = p->t + ips_index(ip, p->sets) * p->ways;
    ips_entry *e = NULL;
    for (int64_t w = 0; w < p->ways; w++)
        if (set[w].valid && set[w].ip == ip) { e = &set[w]; break; }
    if (!e) {                                   /* allocate: first invalid way, else LRU */
        uint64_t best = UINT64_MAX;
        for (int64_t w = 0; w < p->ways; w++) {
            if (!set[w].valid) { e = &set[w]; break; }
            if (set[w].stamp < best) { best = set[w].stamp; e = &set[w]; }
        }
        e->valid = 1; e->ip = ip; e->last_line = line; e->stride = 0; e->conf = 0;
        e->stamp = ++p->clock;
        return 0;
    }
    int64_t stride = (int64_t)(line - e->last_line);
    if (stride == 0) return 0;                  /* same line twice: no update (as ChampSim) */
    if (stride == e->stride) { if (e->conf < 3) e->conf++; }
    else e->conf = 0;
    int n = 0;
    int64_t d = p->distance;
    for (int64_t j = 0; j < p->n_dist; j++)
        if (p->dist_ip[j] == ip) { d = p->dist_k[j]; break; }
    if (e->conf >= p->threshold)
        for (int64_t m = 0; m < p->degree && n < MAX_CANDIDATES; m++) {
            uint64_t pf = line + (uint64_t)(stride * (d + m));
            if (!same_page(s, pf, line)) break;
            out[n++] = pf;
        }
    e->last_line = line; e->stride = stride; e->stamp = ++p->clock;
    return n;
}

/* --- BOP --- */

static void bop_os_reset(bop_t *b)
{
    memset(b->score, 0, sizeof b->score);
    b->max_score = 0; b->best_offset = 0; b->round = 0; b->p = 0;
}

static void bop_init(bop_t *b, const int64_t *prm)
{
    b->score_max = prm[0]; b->round_max = prm[1]; b->bad_score = prm[2]; b->dq_delay = prm[3];
    b->default_offset = prm[4];
    b->offset = b->default_offset;
    memset(b->rr, 0, sizeof b->rr);
    bop_os_reset(b);
    memset(b->dq_valid, 0, sizeof b->dq_valid);
    b->dq_head = b->dq_tail = 0;
    b->fq_head = b->fq_len = 0;
}

static inline uint32_t rr_tag(uint64_t l) { return (uint32_t)((l >> BOP_RRINDEX) & ((1u << BOP_RRTAG) - 1)); }
static inline int rr_left(uint64_t l) { return (int)((l ^ (l >> BOP_RRINDEX)) & ((1u << BOP_RRINDEX) - 1)); }
static inline int rr_right(uint64_t l) { return (int)((l ^ (l >> (2 * BOP_RRINDEX))) & ((1u << BOP_RRINDEX) - 1)); }

static inline int rr_hit(const bop_t *b, uint64_t l)
{
    uint32_t t = rr_tag(l);
    return b->rr[0][rr_left(l)] == t || b->rr[1][rr_right(l)] == t;
}

static void bop_dq_push(bop_t *b, uint64_t line, int64_t now)
{
    if (b->dq_valid[b->dq_tail]) {              /* full: the oldest goes to the left bank now */
        uint64_t o = b->dq_line[b->dq_head];
        b->rr[0][rr_left(o)] = rr_tag(o);
        b->dq_head = (b->dq_head + 1) % BOP_DQSIZE;
    }
    b->dq_line[b->dq_tail] = line & ((UINT64_C(1) << (BOP_RRINDEX + BOP_RRTAG)) - 1);
    b->dq_time[b->dq_tail] = now;
    b->dq_valid[b->dq_tail] = 1;
    b->dq_tail = (b->dq_tail + 1) % BOP_DQSIZE;
}

static void bop_dq_pop(bop_t *b, int64_t now)
{
    for (int i = 0; i < BOP_DQSIZE; i++) {
        if (!b->dq_valid[b->dq_head] || now < b->dq_time[b->dq_head] + b->dq_delay) break;
        uint64_t o = b->dq_line[b->dq_head];
        b->rr[0][rr_left(o)] = rr_tag(o);
        b->dq_valid[b->dq_head] = 0;
        b->dq_head = (b->dq_head + 1) % BOP_DQSIZE;
    }
}

static void bop_learn(sim_t *s, uint64_t line)
{
    bop_t *b = &s->bop;
    int64_t off = BOP_OFFSETS[b->p];
    uint64_t test = line - (uint64_t)off;
    if (same_page(s, line, test) && rr_hit(b, test)) {
        b->score[b->p]++;
        if (b->score[b->p] >= b->max_score) { b->max_score = b->score[b->p]; b->best_offset = off; }
    }
    if (b->p == BOP_NOFFSETS - 1) {
        b->round++;
        if (b->max_score >= b->score_max || b->round >= b->round_max) {
            b->offset = b->best_offset != 0 ? b->best_offset : b->default_offset;
            if (b->max_score <= b->bad_score) b->offset = 0;
            bop_os_reset(b);
            return;
        }
    }
    b->p = (b->p + 1) % BOP_NOFFSETS;
}

static int bop_operate(sim_t *s, uint64_t line, int hit, int useful, int64_t now, uint64_t *out)
{
    bop_t *b = &s->bop;
    bop_dq_pop(b, now);
    if (hit && !useful) return 0;
    bop_learn(s, line);
    if (b->offset == 0) { bop_dq_push(b, line, now); return 0; }
    uint64_t pf = line + (uint64_t)b->offset;
    if (!same_page(s, line, pf)) return 0;
    bop_dq_push(b, line, now);
    out[0] = pf;
    return 1;
}

/* fill hook: a prefetch, or the fill of a demand L1D miss, completed */
static void bop_fill(sim_t *s, uint64_t line, int prefetch)
{
    bop_t *b = &s->bop;
    if (prefetch || b->offset == 0) {
        uint64_t base = line - (uint64_t)b->offset;
        if (same_page(s, line, base)) b->rr[1][rr_right(base)] = rr_tag(base);
    }
}

static void fq_push(bop_t *b, uint64_t line, int64_t ready, int prefetch)
{
    if (b->fq_len == b->fq_cap) {
        size_t cap = b->fq_cap ? 2 * b->fq_cap : 1024;
        uint64_t *nl = malloc(cap * sizeof *nl);
        int64_t *nr = malloc(cap * sizeof *nr);
        uint8_t *np = malloc(cap);
        if (!nl || !nr || !np) abort();
        for (size_t i = 0; i < b->fq_len; i++) {
            size_t j = (b->fq_head + i) % b->fq_cap;
            nl[i] = b->fq_line[j]; nr[i] = b->fq_ready[j]; np[i] = b->fq_pf[j];
        }
        free(b->fq_line); free(b->fq_ready); free(b->fq_pf);
        b->fq_line = nl; b->fq_ready = nr; b->fq_pf = np; b->fq_cap = cap; b->fq_head = 0;
    }
    size_t j = (b->fq_head + b->fq_len) % b->fq_cap;
    b->fq_line[j] = line; b->fq_ready[j] = ready; b->fq_pf[j] = (uint8_t)prefetch;
    b->fq_len++;
}

/* --- Berti --- */

static void berti_init(berti_t *b, const int64_t *prm)
{
    free(b->hist); free(b->hist_head); free(b->ip); free(b->searches); free(b->d);
    b->degree = prm[0]; b->ips = prm[1]; b->deltas = prm[2]; b->hist_sets = prm[3];
    b->hist_ways = prm[4]; b->period = prm[5]; b->high = prm[6]; b->medium = prm[7];
    b->hist = calloc((size_t)(b->hist_sets * b->hist_ways), sizeof *b->hist);
    b->hist_head = calloc((size_t)b->hist_sets, sizeof *b->hist_head);
    b->ip = calloc((size_t)b->ips, sizeof *b->ip);
    b->searches = malloc((size_t)b->ips * sizeof *b->searches);
    b->d = calloc((size_t)(b->ips * b->deltas), sizeof *b->d);
    if (!b->hist || !b->hist_head || !b->ip || !b->searches || !b->d) abort();
    for (int64_t e = 0; e < b->ips; e++) b->searches[e] = -1;
    b->next = 0;
}

static inline int64_t berti_set(const berti_t *b, uint64_t ip)
{
    return (int64_t)(((ip >> 1) ^ (ip >> 4)) % (uint64_t)b->hist_sets);
}

static int64_t berti_find(const berti_t *b, uint64_t ip)
{
    for (int64_t e = 0; e < b->ips; e++)
        if (b->searches[e] >= 0 && b->ip[e] == ip) return e;
    return -1;
}

/* count one timely `delta` in an entry's slots: a new delta takes a free slot, else replaces the
 * lowest count without status, else the lowest count with medium status, else is dropped */
static void berti_count(const berti_t *b, berti_delta *d, int64_t delta)
{
    int64_t v = -1;
    for (int64_t k = 0; k < b->deltas; k++)
        if (d[k].delta == delta) { if (d[k].count < b->period) d[k].count++; return; }
    for (int64_t k = 0; k < b->deltas && v < 0; k++)
        if (d[k].delta == 0) v = k;
    for (int status = BERTI_NONE; status <= BERTI_MEDIUM && v < 0; status++)
        for (int64_t k = 0; k < b->deltas; k++)
            if (d[k].status == status && (v < 0 || d[k].count < d[v].count)) v = k;
    if (v >= 0) { d[v].delta = delta; d[v].count = 1; d[v].status = BERTI_NONE; }
}

/* a miss or a first hit to a prefetched line: search the IP's history, newest first, for entries
 * a prefetch from which would have been timely, and count their deltas */
static void berti_search(sim_t *s, uint64_t ip, uint64_t line, int64_t now)
{
    berti_t *b = &s->berti;
    int64_t set = berti_set(b, ip), head = b->hist_head[set];
    berti_hist *h = b->hist + set * b->hist_ways;
    int64_t found[BERTI_MAX_WAYS], nf = 0, span = INT64_C(1) << s->page_shift;
    for (int64_t k = 1; k <= b->hist_ways; k++) {
        berti_hist *x = &h[(head - k + b->hist_ways) % b->hist_ways];
        if (!x->valid || x->ip != ip || x->time + s->cfg[CFG_PF_LATENCY] > now) continue;
        if (x->line == line) break;
        int64_t delta = (int64_t)(line - x->line);
        if (delta > -span && delta < span) found[nf++] = delta;
    }
    int64_t e = berti_find(b, ip);
    if (e < 0) {
        if (nf == 0) return;
        e = b->next;
        b->next = (b->next + 1) % b->ips;
        b->ip[e] = ip;
        b->searches[e] = 0;
        memset(b->d + e * b->deltas, 0, (size_t)b->deltas * sizeof *b->d);
    }
    berti_delta *d = b->d + e * b->deltas;
    b->searches[e]++;
    for (int64_t k = 0; k < nf; k++) berti_count(b, d, found[k]);
    if (b->searches[e] >= b->period) {
        for (int64_t k = 0; k < b->deltas; k++) {
            d[k].status = 100 * d[k].count >= b->high * b->period ? BERTI_HIGH
                          : 100 * d[k].count >= b->medium * b->period ? BERTI_MEDIUM : BERTI_NONE;
            d[k].count = 0;
        }
        b->searches[e] = 0;
    }
}

/* sort order of the selected deltas: high before medium, then by |delta|, then by delta */
static inline int berti_before(const berti_delta *a, const berti_delta *c)
{
    int64_t aa = a->delta < 0 ? -a->delta : a->delta, ac = c->delta < 0 ? -c->delta : c->delta;
    if (a->status != c->status) return a->status > c->status;
    if (aa != ac) return aa < ac;
    return a->delta < c->delta;
}

static int berti_operate(sim_t *s, uint64_t line, uint64_t ip, int hit, int useful, int64_t now,
                         uint64_t *out)
{
    berti_t *b = &s->berti;
    if (!hit || useful) {
        berti_search(s, ip, line, now);
        int64_t set = berti_set(b, ip);
        berti_hist *x = &b->hist[set * b->hist_ways + b->hist_head[set]];
        x->ip = ip; x->line = line; x->time = now; x->valid = 1;
        b->hist_head[set] = (b->hist_head[set] + 1) % b->hist_ways;
    }
    int64_t e = berti_find(b, ip);
    if (e < 0) return 0;
    berti_delta sel[MAX_CANDIDATES];        /* deltas <= MAX_CANDIDATES (cache.py checks it) */
    int ns = 0, n = 0;
    for (int64_t k = 0; k < b->deltas; k++) {     /* insertion sort of the selected deltas */
        berti_delta x = b->d[e * b->deltas + k];
        if (x.delta == 0 || x.status == BERTI_NONE) continue;
        int j = ns++;
        for (; j > 0 && berti_before(&x, &sel[j - 1]); j--) sel[j] = sel[j - 1];
        sel[j] = x;
    }
    for (int k = 0; k < ns && n < b->degree; k++) {
        uint64_t pf = line + (uint64_t)sel[k].delta;
        if (same_page(s, line, pf)) out[n++] = pf;
    }
    return n;
}

/* ------------------------------------------------------------------------------------------ */

/* Issue one prefetch of `line` at instruction `now`. Dropped (returns 0) when the line is already
 * in the L1D, or in the L2 when the fill level is the L2. */
static int issue(sim_t *s, uint64_t line, int64_t now, int64_t *st)
{
    int ev;
    if (level_find(&s->l1, line) >= 0) return 0;
    int64_t s2 = level_find(&s->l2, line);
    int64_t ready = now + s->cfg[CFG_PF_LATENCY];
    if (s->cfg[CFG_FILL_LEVEL] == 2) {
        if (s2 >= 0) return 0;
        s2 = level_insert(&s->l2, line, &ev);
        st[ST_PF_USELESS] += ev;
        s->l2.pf[s2] = 1; s->l2.ready[s2] = ready;
    } else {
        if (s2 >= 0) level_touch(&s->l2, s2);
        else { level_insert(&s->l2, line, &ev); st[ST_PF_USELESS] += ev; }
        int64_t s1 = level_insert(&s->l1, line, &ev);
        st[ST_PF_USELESS] += ev;
        s->l1.pf[s1] = 1; s->l1.ready[s1] = ready;
    }
    if (s->kind == PF_BOP) fq_push(&s->bop, line, ready, 1);
    return 1;
}

/* A demand finds a prefetched line at `slot`: count it useful (and late if in flight). */
static inline int demand_prefetched(level_t *c, int64_t slot, int64_t now, int64_t *st)
{
    c->pf[slot] = 0;
    st[ST_PF_USEFUL]++;
    if (now < c->ready[slot]) {
        st[ST_PF_LATE]++;
        st[ST_PF_LATE_WAIT] += c->ready[slot] - now;
        return LATE;
    }
    return HIT;
}

static int64_t count_unused(const level_t *c)
{
    int64_t n = 0, total = c->sets * c->ways;
    for (int64_t i = 0; i < total; i++) n += c->tag[i] != EMPTY && c->pf[i];
    return n;
}

/* Run n accesses. The cache and prefetcher state persist across calls on the same object (the
 * prefetcher is re-initialised when kind or params change); stats_out[ST_N] is for this call.
 * pf_addr / pf_k (NULL / 0 for none; PF_EXTERNAL needs them) are requests computed outside, with any
 * kind: pf_addr is a row-major n x pf_k array of byte addresses to prefetch after each access (after the
 * built-in prefetcher's own requests), 0 = no request. */
void cache_run(void *handle, int kind, const int64_t *pf_params, const uint64_t *pc,
               const uint64_t *addr, const uint8_t *is_store, const uint64_t *insn_idx, int64_t n,
               uint8_t *l1_out, uint8_t *l2_out, int64_t *st, const uint64_t *pf_addr,
               int64_t pf_k)
{
    sim_t *s = handle;
    memset(st, 0, ST_N * sizeof *st);
    if (kind != s->kind || memcmp(pf_params, s->params, sizeof s->params) != 0) {
        memcpy(s->params, pf_params, sizeof s->params);
        s->kind = kind;
        if (kind == PF_IP_STRIDE) ips_init(&s->ips, pf_params);
        if (kind == PF_BOP) bop_init(&s->bop, pf_params);
        if (kind == PF_BERTI) berti_init(&s->berti, pf_params);
    }
    uint64_t cand[MAX_CANDIDATES];
    int64_t degree = pf_params[0] < MAX_CANDIDATES ? pf_params[0] : MAX_CANDIDATES;

    for (int64_t i = 0; i < n; i++) {
        uint64_t line = addr[i] >> s->lshift;
        int64_t now = (int64_t)insn_idx[i];
        int store = is_store[i] != 0, ev, c1, c2 = NOT_ACCESSED, useful = 0;

        if (kind == PF_BOP) {                   /* fills completed by now: fill hook */
            bop_t *b = &s->bop;
            while (b->fq_len && b->fq_ready[b->fq_head] <= now) {
                bop_fill(s, b->fq_line[b->fq_head], b->fq_pf[b->fq_head]);
                b->fq_head = (b->fq_head + 1) % b->fq_cap;
                b->fq_len--;
            }
        }

        int64_t s1 = level_find(&s->l1, line);
        if (s1 >= 0) {
            level_touch(&s->l1, s1);
            c1 = HIT;
            if (s->l1.pf[s1]) { useful = 1; c1 = demand_prefetched(&s->l1, s1, now, st); }
        } else {
            c1 = MISS;
            int64_t s2 = level_find(&s->l2, line);
            if (s2 >= 0) {
                level_touch(&s->l2, s2);
                c2 = HIT;
                if (s->l2.pf[s2]) { useful = 1; c2 = demand_prefetched(&s->l2, s2, now, st); }
            } else {
                c2 = MISS;
                level_insert(&s->l2, line, &ev);
                st[ST_PF_USELESS] += ev;
            }
            level_insert(&s->l1, line, &ev);
            st[ST_PF_USELESS] += ev;
        }
        l1_out[i] = (uint8_t)c1;
        l2_out[i] = (uint8_t)c2;
        if (store) {
            st[ST_STORES]++;
            st[ST_L1_STORE_MISSES] += c1 == MISS;
            st[ST_L2_STORE_MISSES] += c2 == MISS;
        } else {
            st[ST_LOADS]++;
            st[ST_L1_LOAD_MISSES] += c1 == MISS;
            st[ST_L2_LOAD_MISSES] += c2 == MISS;
            st[ST_L1_LOAD_LATE] += c1 == LATE;
            st[ST_L2_LOAD_LATE] += c2 == LATE;
        }

        int nc = 0;
        switch (kind) {
        case PF_NEXT_LINE:
            for (int64_t k = 1; k <= degree; k++) cand[nc++] = line + (uint64_t)k;
            break;
        case PF_IP_STRIDE:
            nc = ips_operate(s, line, pc[i], cand);
            break;
        case PF_BOP:
            nc = bop_operate(s, line, c1 != MISS, useful, now, cand);
            if (c1 == MISS) fq_push(&s->bop, line, now + s->cfg[CFG_PF_LATENCY], 0);
            break;
        case PF_BERTI:
            nc = berti_operate(s, line, pc[i], c1 != MISS, useful, now, cand);
            break;
        default:                                /* PF_NONE, PF_EXTERNAL: no built-in requests */
            break;
        }
        for (int k = 0; k < nc; k++) {
            st[ST_PF_REQUESTED]++;
            st[ST_PF_ISSUED] += issue(s, cand[k], now, st);
        }
        for (int64_t k = 0; pf_addr && k < pf_k; k++) {  /* then row i's requests (any length) */
            uint64_t a = pf_addr[i * pf_k + k];
            if (!a) continue;
            st[ST_PF_REQUESTED]++;
            st[ST_PF_ISSUED] += issue(s, a >> s->lshift, now, st);
        }
    }
    st[ST_PF_UNUSED_AT_END] = count_unused(&s->l1) + count_unused(&s->l2);
    st[ST_PF_STATE] = kind == PF_BOP ? s->bop.offset : 0;
}
