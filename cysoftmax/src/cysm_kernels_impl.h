/*
 * cysm_kernels_impl.h -- body of the row kernels for one precision and one
 * instruction-set target.  cysm_kernels.c includes it once per (precision,
 * target) after defining
 *
 *   CYSM_F64     0 for float32, 1 for float64
 *   CYSM_SFX     the target's name token (base, avx2, avx512)
 *   CYSM_VBYTES  the vector width in bytes (16, 32, 64)
 *
 * Everything is written with GCC/Clang generic vectors, so one body compiles to
 * SSE2, NEON, AVX2+FMA or AVX-512 depending on the target it is compiled for.
 *
 * The math (f = one row of scores, y its label, m = max_j f_j):
 *
 *   e_k = exp(f_k - m)            in the input precision, never above 1
 *   s   = sum_k e_k = n_max + t   n_max = #{k : f_k = m} (each e_k = 1 exactly),
 *                                 t = sum of the other e_k, accumulated in double
 *   log s = log1p(n_max - 1 + t)  so a row whose loss is 1e-30 keeps its digits
 *   L   = (1 - eps) w_y (m - f_y + log s) + eps/C (W log s - sum_c w_c (f_c - m))
 *   dL/df_k = grad_scale * (e_k / s * ((1 - eps) w_y + eps/C W) - eps/C w_k)
 *              for k != y; the k = y entry uses P_y - 1 = -(s - e_y)/s, with
 *              s - e_y formed from n_max and t, so it does not cancel.
 *   W = sum_c w_c enters only as eps/C W (smooth_weight, formed without overflow by
 *   cysm_sce_coefficients); the differences f_c - m of the smoothing sum are taken in
 *   double, so float32 scores of opposite signs near FLT_MAX stay finite.
 *
 * exp(f - m): f - m is taken exactly as a double-word (TwoSum), the argument is
 * reduced by Cody-Waite to r in [-ln2/2, ln2/2] with the low word added back,
 * exp(r) is a near-minimax polynomial (degree 6 for float32, 11 for float64,
 * both below 0.2 ulp; generated into cysm_exp_poly.h by gen_exp_poly.py), and
 * 2^n is applied in two halves (one vscalef on AVX-512) so that subnormal
 * results are formed correctly.  Arguments below the underflow threshold
 * (including -inf: masked classes) give exactly 0; NaN stays NaN.
 *
 * Passes over memory, per row with C above CYSM_SMALL_C: (1) the maximum,
 * (2) e_k written to the gradient buffer while t, n_max and the smoothing sum
 * accumulate, (3) the gradient scaled in place.  A row is read from main memory
 * once: passes 2 and 3 find it in cache.  Rows with C <= CYSM_SMALL_C are
 * handled a vector of rows at a time (lane l holds row l), so small class
 * counts use whole vectors too.  Rows never interact, so a row's result does
 * not depend on how rows are split across threads.
 */

#if CYSM_F64
#define REAL double
#define RINT int64_t
#define PREC f64
#else
#define REAL float
#define RINT int32_t
#define PREC f32
#endif

#define NL (CYSM_VBYTES / (int)sizeof(REAL))
#define FN(name) CYSM_CAT3(name, PREC, CYSM_SFX)
#define VREAL FN(vreal)
#define VINT FN(vint)
#define VACC FN(vacc)
#define ARGS cysm_sce_args

typedef REAL VREAL __attribute__((vector_size(CYSM_VBYTES)));
typedef RINT VINT __attribute__((vector_size(CYSM_VBYTES)));
typedef double VACC __attribute__((vector_size(CYSM_VBYTES)));
#if !CYSM_F64
typedef float FN(vhalf) __attribute__((vector_size(CYSM_VBYTES / 2)));
#endif

static inline VREAL FN(load)(const REAL *p)
{
    VREAL v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void FN(store)(REAL *p, VREAL v) { memcpy(p, &v, sizeof v); }

static inline VREAL FN(select)(VINT mask, VREAL a, VREAL b)
{
    return (VREAL)(((VINT)a & mask) | ((VINT)b & ~mask));
}

static inline VREAL FN(zero_where)(VINT mask, VREAL a) { return (VREAL)((VINT)a & ~mask); }

/* a > b ? a : b lane by lane, so a NaN in a gives b and a NaN in b stays: one
 * vmaxps/vmaxpd on x86, whose operand order has exactly this meaning. */
static inline VREAL FN(vmax)(VREAL a, VREAL b)
{
#if defined(CYSM_X86) && CYSM_VBYTES == 64 && defined(__AVX512F__)
#if CYSM_F64
    return (VREAL)_mm512_max_pd((__m512d)a, (__m512d)b);
#else
    return (VREAL)_mm512_max_ps((__m512)a, (__m512)b);
#endif
#elif defined(CYSM_X86) && CYSM_VBYTES == 32 && defined(__AVX__)
#if CYSM_F64
    return (VREAL)_mm256_max_pd((__m256d)a, (__m256d)b);
#else
    return (VREAL)_mm256_max_ps((__m256)a, (__m256)b);
#endif
#elif defined(CYSM_X86) && CYSM_VBYTES == 16 && defined(__SSE2__)
#if CYSM_F64
    return (VREAL)_mm_max_pd((__m128d)a, (__m128d)b);
#else
    return (VREAL)_mm_max_ps((__m128)a, (__m128)b);
#endif
#else
    return FN(select)(a > b, a, b);
#endif
}

/* float32 lanes widened to two double vectors (GCC's generic conversion of a half
 * vector is poor, so x86 targets use the one-instruction intrinsics); float64
 * lanes are already double: lo is x (and so is hi, which float64 never reads). */
static inline void FN(widen)(VREAL x, VACC *lo, VACC *hi)
{
#if CYSM_F64
    *lo = x;
    *hi = x;
#elif defined(CYSM_X86) && CYSM_VBYTES == 64 && defined(__AVX512F__)
    *lo = (VACC)_mm512_cvtps_pd(_mm512_castps512_ps256((__m512)x));
    *hi = (VACC)_mm512_cvtps_pd(
        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd((__m512)x), 1)));
#elif defined(CYSM_X86) && CYSM_VBYTES == 32 && defined(__AVX__)
    *lo = (VACC)_mm256_cvtps_pd(_mm256_castps256_ps128((__m256)x));
    *hi = (VACC)_mm256_cvtps_pd(_mm256_extractf128_ps((__m256)x, 1));
#elif defined(CYSM_X86) && CYSM_VBYTES == 16 && defined(__SSE2__)
    *lo = (VACC)_mm_cvtps_pd((__m128)x);
    *hi = (VACC)_mm_cvtps_pd(_mm_movehl_ps((__m128)x, (__m128)x));
#else
    FN(vhalf) a, b;
    memcpy(&a, &x, sizeof a);
    memcpy(&b, (const char *)&x + sizeof a, sizeof b);
    *lo = __builtin_convertvector(a, VACC);
    *hi = __builtin_convertvector(b, VACC);
#endif
}

/* acc += x, in double (float32 lanes are widened in two halves). */
static inline void FN(acc_add)(VACC *lo, VACC *hi, VREAL x)
{
#if CYSM_F64
    (void)hi;
    *lo += x;
#else
    VACC a, b;
    FN(widen)(x, &a, &b);
    *lo += a;
    *hi += b;
#endif
}

/* The smoothing sum: acc += w * (f - m) in double, w_lo/w_hi the weights of the
 * lanes (as double halves).  float32 lanes are widened before the subtraction, so
 * the difference is exact and finite for any finite f and m. */
static inline void FN(acc_wd)(VACC *lo, VACC *hi, VREAL f, VREAL m, VACC w_lo, VACC w_hi)
{
#if CYSM_F64
    (void)hi;
    (void)w_hi;
    *lo += (f - m) * w_lo;
#else
    VACC f_lo, f_hi, m_lo, m_hi;
    FN(widen)(f, &f_lo, &f_hi);
    FN(widen)(m, &m_lo, &m_hi);
    *lo += (f_lo - m_lo) * w_lo;
    *hi += (f_hi - m_hi) * w_hi;
#endif
}

/* acc_wd with the weights of NL consecutive classes (w NULL: all ones); with
 * skip_zero, a class of weight 0 adds 0 (also where f = -inf: 0 log 0 = 0). */
static inline void FN(acc_wd_at)(VACC *lo, VACC *hi, VREAL f, VREAL m, const double *w,
                                 const int skip_zero)
{
    VACC w_lo = (VACC){0} + 1.0, w_hi = w_lo;
    if (w) {
        memcpy(&w_lo, w, sizeof w_lo);
#if !CYSM_F64
        memcpy(&w_hi, w + NL / 2, sizeof w_hi);
#endif
    }
    if (skip_zero && w) {
        typedef int64_t vlong __attribute__((vector_size(CYSM_VBYTES)));
        VACC a = {0}, b = {0};
        FN(acc_wd)(&a, &b, f, m, w_lo, w_hi);
        *lo += (VACC)((vlong)a & ~(vlong)(w_lo == 0));
#if !CYSM_F64
        *hi += (VACC)((vlong)b & ~(vlong)(w_hi == 0));
#endif
        return;
    }
    FN(acc_wd)(lo, hi, f, m, w_lo, w_hi);
}

/* exp(x + xlo) for x <= 0 (or NaN), |xlo| tiny: see the comment at the top.  Below
 * lowest, x is raised to it and xlo (there maybe large or NaN: -inf - -inf) dropped;
 * p 2^n is then far below half the smallest subnormal and rounds to exactly 0,
 * also with the two-step scaling, whose halves stay normal.  NaN stays NaN. */
static inline VREAL FN(vexp)(VREAL x, VREAL xlo)
{
#if CYSM_F64
    const REAL lowest = -750.0, log2e = 1.4426950408889634074, shifter = 0x1.8p52;
    const REAL ln2hi = 6.93147180369123816490e-01, ln2lo = 1.90821492927058770002e-10;
    const RINT bias = 1023, mant_bits = 52;
#else
    const REAL lowest = -110.0f, log2e = 1.44269504088896341f, shifter = 0x1.8p23f;
    const REAL ln2hi = 0.693145751953125f, ln2lo = 1.428606765330187045e-06f;
    const RINT bias = 127, mant_bits = 23;
#endif
    xlo = FN(zero_where)(x < lowest, xlo);
    x = FN(vmax)((VREAL){0} + lowest, x);
    const VREAL kf = x * log2e + shifter; /* round(x / ln2) + shifter */
    const VREAL n = kf - shifter;
    const VINT ni = (VINT)kf - (VINT)((VREAL){0} + shifter);
    VREAL r = x - n * ln2hi;
    r = r - n * ln2lo;
    r = r + xlo;
#if CYSM_F64
    static const REAL q[CYSM_EXP_F64_NCOEF] = CYSM_EXP_F64_COEFS;
    enum { NQ = CYSM_EXP_F64_NCOEF };
#else
    static const REAL q[CYSM_EXP_F32_NCOEF] = CYSM_EXP_F32_COEFS;
    enum { NQ = CYSM_EXP_F32_NCOEF };
#endif
    VREAL p = (VREAL){0} + q[0]; /* exp(r) ~ 1 + r q(r), see cysm_exp_poly.h */
    for (int i = 1; i < NQ; i++) p = p * r + q[i];
    p = p * r + 1;
#if defined(CYSM_X86) && CYSM_VBYTES == 64 && defined(__AVX512F__)
    /* vscalefps/pd: p * 2^n rounded once, subnormals included -- the same result as
     * the two halves below, in one instruction */
    (void)ni;
#if CYSM_F64
    return (VREAL)_mm512_scalef_pd((__m512d)p, (__m512d)n);
#else
    return (VREAL)_mm512_scalef_ps((__m512)p, (__m512)n);
#endif
#endif
    const VINT n1 = ni >> 1, n2 = ni - n1;
    const VREAL s1 = (VREAL)((n1 + bias) << mant_bits);
    const VREAL s2 = (VREAL)((n2 + bias) << mant_bits);
    return (p * s1) * s2;
}

/* e = exp(f - m), the difference taken exactly (TwoSum); *d = rounded f - m. */
static inline VREAL FN(exp_diff)(VREAL f, VREAL m, VREAL *d)
{
    const VREAL neg_m = -m;
    const VREAL s = f + neg_m;
    const VREAL bb = s - f;
    const VREAL lo = (f - (s - bb)) + (neg_m - bb);
    *d = s;
    return FN(vexp)(s, lo);
}

/* Lane l holds l. */
static inline VINT FN(lane_index)(void)
{
    VINT v;
    for (int l = 0; l < NL; l++) v[l] = (RINT)l;
    return v;
}

/* Sum of the lanes of a double accumulator pair, as a fixed tree (short latency). */
static inline double FN(acc_total)(VACC lo, VACC hi)
{
    enum { NA = CYSM_VBYTES / 8 };
#if !CYSM_F64
    lo += hi;
#else
    (void)hi;
#endif
    double part[NA];
    memcpy(part, &lo, sizeof part);
    for (int w = NA / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) part[l] += part[l + w];
    return part[0];
}

/* The last NL entries of a row of C, in one vector: for C >= NL the last full vector
 * (it overlaps the one before it where C % NL != 0); for a short row the C entries in
 * the top lanes, padded below with -inf (e = 0 there, never a maximum). */
static inline VREAL FN(load_tail)(const REAL *f, ptrdiff_t C)
{
    if (C >= NL) return FN(load)(f + C - NL);
    VREAL x = (VREAL){0} - INFINITY;
    for (ptrdiff_t k = 0; k < C; k++) x[NL - C + k] = f[k];
    return x;
}

/* Pass 1: the row maximum.  NaN entries are skipped here; they make e NaN in pass 2.
 * The tail vector covers what the full vectors leave (max is idempotent). */
static inline REAL FN(row_max)(const REAL *f, ptrdiff_t C)
{
    ptrdiff_t k = 0;
    VREAL m0 = (VREAL){0} - INFINITY, m1 = m0;
    for (; k + 2 * NL <= C; k += 2 * NL) {
        m0 = FN(vmax)(FN(load)(f + k), m0);
        m1 = FN(vmax)(FN(load)(f + k + NL), m1);
    }
    if (k + NL <= C) m1 = FN(vmax)(FN(load)(f + k), m1);
    if (C % NL) m0 = FN(vmax)(FN(load_tail)(f, C), m0);
    m0 = FN(vmax)(m1, m0);
    for (int w = NL / 2; w >= 1; w /= 2) { /* a fixed tree over the lanes */
        VINT from;
        for (int l = 0; l < NL; l++) from[l] = (RINT)(l < w ? l + w : l);
        m0 = FN(vmax)(__builtin_shuffle(m0, from), m0);
    }
    return m0[0];
}

typedef struct {
    double t;        /* sum of e_k over k with f_k != m (NaN if the row has NaN) */
    ptrdiff_t n_max; /* number of k with f_k == m */
    double wd;       /* sum of w_k (f_k - m), when asked for */
} FN(row_sums);

/* Pass 2: e_k = exp(f_k - m) into e_out (may be NULL, may alias f) and the sums. */
static inline __attribute__((always_inline)) FN(row_sums)
    FN(row_exp_body)(const REAL *f, REAL *e_out, ptrdiff_t C, REAL m, const double *w,
                     const REAL *next_f, REAL *next_e, const int store, const int want_wd)
{
    VACC t_lo = {0}, t_hi = {0}, wd_lo = {0}, wd_hi = {0};
    VINT cnt = {0};
    const VREAL mv = (VREAL){0} + m;
    FN(row_sums) out = {0.0, 0, 0.0};
    ptrdiff_t k = 0;
    /* The tail is the last full vector, loaded now (e_out may alias f); its lanes
     * that the other vectors cover are left out of the sums and, stored again,
     * get the same e. */
    const ptrdiff_t rest = C % NL;
    const VREAL f_tail = rest ? FN(load_tail)(f, C) : mv;
    /* Four vectors per step: four independent exps in flight, and their non-maximal
     * parts added in the input precision (two roundings) before one widening add. */
    for (; k + 4 * NL <= C; k += 4 * NL) {
        VREAL x[4], d[4], e[4], t4[4];
        /* this pass is compute-bound: meanwhile bring the next row into cache */
        for (int b = 0; b < 4 * CYSM_VBYTES; b += 64) {
            if (next_f) __builtin_prefetch((const char *)(next_f + k) + b, 0, 3);
            if (store && next_e) __builtin_prefetch((char *)(next_e + k) + b, 1, 3);
        }
        for (int j = 0; j < 4; j++) {
            x[j] = FN(load)(f + k + j * NL);
            e[j] = FN(exp_diff)(x[j], mv, &d[j]);
            const VINT is_max = d[j] == 0;
            cnt -= is_max;
            t4[j] = FN(zero_where)(is_max, e[j]);
        }
        FN(acc_add)(&t_lo, &t_hi, (t4[0] + t4[1]) + (t4[2] + t4[3]));
        for (int j = 0; j < 4; j++) {
            if (want_wd)
                FN(acc_wd_at)(&wd_lo, &wd_hi, x[j], mv, w ? w + k + j * NL : NULL, want_wd == 2);
            if (store) FN(store)(e_out + k + j * NL, e[j]);
        }
    }
    for (; k + NL <= C; k += NL) {
        VREAL d;
        const VREAL x = FN(load)(f + k);
        const VREAL e = FN(exp_diff)(x, mv, &d);
        const VINT is_max = d == 0;
        cnt -= is_max;
        FN(acc_add)(&t_lo, &t_hi, FN(zero_where)(is_max, e));
        if (want_wd) FN(acc_wd_at)(&wd_lo, &wd_hi, x, mv, w ? w + k : NULL, want_wd == 2);
        if (store) FN(store)(e_out + k, e);
    }
    if (rest) {
        const VINT old = FN(lane_index)() < (RINT)(NL - rest);
        VREAL d;
        const VREAL e = FN(exp_diff)(f_tail, mv, &d);
        const VINT is_max = (d == 0) & ~old;
        cnt -= is_max;
        FN(acc_add)(&t_lo, &t_hi, FN(zero_where)(is_max | old, e));
        if (want_wd) /* lanes already covered count as f = m (wd is asked for only with
                      * C >= NL, so w + C - NL is in range) */
            FN(acc_wd_at)(&wd_lo, &wd_hi, FN(select)(old, mv, f_tail), mv, w ? w + C - NL : NULL,
                          want_wd == 2);
        if (store && C >= NL) {
            FN(store)(e_out + C - NL, e);
        } else if (store) {
            for (int l = NL - (int)rest; l < NL; l++) e_out[l - (NL - rest)] = e[l];
        }
    }
    out.t = FN(acc_total)(t_lo, t_hi);
    for (int l = 0; l < NL; l++) out.n_max += cnt[l];
    if (want_wd) out.wd += FN(acc_total)(wd_lo, wd_hi);
    return out;
}

/* want_wd: 0 no weighted sum, 1 sum_k w_k (f_k - m), 2 the same without the terms of
 * weight 0 (probability targets). */
static FN(row_sums) FN(row_exp)(const REAL *f, REAL *e_out, ptrdiff_t C, REAL m,
                                 const double *w, int want_wd, const REAL *next_f, REAL *next_e)
{
    if (e_out) {
        if (want_wd == 2) return FN(row_exp_body)(f, e_out, C, m, w, next_f, next_e, 1, 2);
        if (want_wd) return FN(row_exp_body)(f, e_out, C, m, w, next_f, next_e, 1, 1);
        return FN(row_exp_body)(f, e_out, C, m, w, next_f, next_e, 1, 0);
    }
    if (want_wd == 2) return FN(row_exp_body)(f, e_out, C, m, w, next_f, next_e, 0, 2);
    if (want_wd) return FN(row_exp_body)(f, e_out, C, m, w, next_f, next_e, 0, 1);
    return FN(row_exp_body)(f, e_out, C, m, w, next_f, next_e, 0, 0);
}

/* What a row needs after its sums are known: its loss, and the gradient
 * coefficient of e_k and the target entry of the gradient. */
typedef struct {
    double loss; /* the cross-entropy part */
    double z;    /* the z-loss part */
    double lse;  /* m + log s */
    REAL coef;
    REAL grad_y;
} FN(row_result);

static inline FN(row_result) FN(finish_row)(const ARGS *a, int64_t y, REAL m, REAL fy,
                                          double ey, double t, ptrdiff_t n_max, double wd)
{
    const double eps = a->smoothing, C = (double)a->n_classes, sw = a->smooth_weight;
    const double wy = a->weight ? a->weight[y] : 1.0;
    const double log_s = log1p((double)(n_max - 1) + t);
    const double nll = ((double)m - (double)fy) + log_s;
    FN(row_result) res;
    res.loss = (1.0 - eps) * wy * nll;
    if (eps > 0) res.loss += sw * log_s - eps / C * wd;
    res.lse = (double)m + log_s;
    res.z = 0.0;
    const double inv_s = 1.0 / ((double)n_max + t);
    double coef = a->grad_scale * ((1.0 - eps) * wy + sw) * inv_s;
    /* P_y - 1 = -(s - e_y) / s, with s - e_y free of cancellation */
    const double others = (fy == m) ? (double)(n_max - 1) + t : (double)n_max + (t - ey);
    double gy = (1.0 - eps) * wy * (-others * inv_s);
    if (eps > 0) gy += sw * (ey * inv_s) - eps / C * wy;
    gy *= a->grad_scale;
    if (a->z_loss > 0) { /* lambda lse^2, whose gradient is 2 lambda lse P_k */
        const double zc = a->z_grad * res.lse * inv_s;
        res.z = a->z_loss * res.lse * res.lse;
        coef += zc;
        gy += zc * ey;
    }
    res.coef = (REAL)coef;
    res.grad_y = (REAL)gy;
    return res;
}

/* The log-sum-exp of a row of scores (for an ignored row, whose other results are 0). */
static double FN(row_lse)(const REAL *f, ptrdiff_t C)
{
    const REAL m = FN(row_max)(f, C);
    const FN(row_sums) rs = FN(row_exp)(f, NULL, C, m, NULL, 0, NULL, NULL);
    return (double)m + log1p((double)(rs.n_max - 1) + rs.t);
}

/* The two parts of a row's loss. */
typedef struct {
    double ce;
    double z;
} FN(row_parts);

/* Row i with C > CYSM_SMALL_C: its loss parts; its lse and z-loss are written to
 * a->row_lse and a->row_z when they are not NULL. */
static FN(row_parts) FN(sce_row)(const ARGS *a, ptrdiff_t i, const REAL *f, REAL *g, int64_t y,
                                 const REAL *next_f, REAL *next_g)
{
    const ptrdiff_t C = a->n_classes;
    FN(row_parts) parts = {0.0, 0.0};
    if (y == a->ignore_index) {
        if (a->row_lse) a->row_lse[i] = FN(row_lse)(f, C); /* (before g, maybe == f, is zeroed) */
        if (a->row_z) a->row_z[i] = 0.0;
        if (g) memset(g, 0, (size_t)C * sizeof(REAL));
        return parts;
    }
    const int smooth = a->smoothing > 0;
    const REAL fy = f[y]; /* read before g (maybe == f) is written */
    const REAL m = FN(row_max)(f, C);
    const FN(row_sums) rs = FN(row_exp)(f, g, C, m, a->weight, smooth, next_f, next_g);
    const double ey = g ? (double)g[y] : 0.0;
    const FN(row_result) res = FN(finish_row)(a, y, m, fy, ey, rs.t, rs.n_max, rs.wd);
    if (g) {
        const VREAL coef = (VREAL){0} + res.coef;
        ptrdiff_t k = 0;
        if (smooth) {
            const REAL *off = (const REAL *)a->grad_offset;
            for (; k + NL <= C; k += NL)
                FN(store)(g + k, FN(load)(g + k) * coef - FN(load)(off + k));
            for (; k < C; k++) g[k] = g[k] * res.coef - off[k];
        } else {
            for (; k + NL <= C; k += NL) FN(store)(g + k, FN(load)(g + k) * coef);
            for (; k < C; k++) g[k] = g[k] * res.coef;
        }
        g[y] = res.grad_y;
    }
    if (a->row_lse) a->row_lse[i] = res.lse;
    if (a->row_z) a->row_z[i] = res.z;
    parts.ce = res.loss;
    parts.z = res.z;
    return parts;
}

/* log1p(u) for u >= 0 (NaN and +inf pass through), in double lanes: u = 2^k z with
 * z in [sqrt(1/2), sqrt(2)), log z = 2 atanh((z-1)/(z+1)) by its odd series (11
 * terms, truncation below 1e-19), and the rounding of 1 + u corrected by
 * (u - (y - 1)) / y.  Within 2 ulp; used where rows are too short to amortize a
 * scalar log1p. */
static inline VACC FN(vlog1p)(VACC u)
{
    typedef int64_t vlong __attribute__((vector_size(CYSM_VBYTES)));
    const VACC y = 1.0 + u;
    const VACC corr = (u - (y - 1.0)) / y;
    const vlong bits = (vlong)y;
    vlong k = (bits >> 52) - 1023;
    VACC z = (VACC)((bits & 0x000fffffffffffffLL) | 0x3ff0000000000000LL);
    const vlong big = z > 1.4142135623730951;
    z = (VACC)(((vlong)(z * 0.5) & big) | ((vlong)z & ~big));
    k -= big; /* big lanes are -1 */
    const VACC sq = (z - 1.0) / (z + 1.0), s2 = sq * sq;
    VACC p = (VACC){0} + 1.0 / 23;
    p = p * s2 + 1.0 / 21;
    p = p * s2 + 1.0 / 19;
    p = p * s2 + 1.0 / 17;
    p = p * s2 + 1.0 / 15;
    p = p * s2 + 1.0 / 13;
    p = p * s2 + 1.0 / 11;
    p = p * s2 + 1.0 / 9;
    p = p * s2 + 1.0 / 7;
    p = p * s2 + 1.0 / 5;
    p = p * s2 + 1.0 / 3;
    /* k (|k| < 1100) as double without an int64 conversion instruction (AVX2 has
     * none): the bits of 2^52 + k, read as a double, minus 2^52 */
    const VACC kd = (VACC)(k + 0x4330000000000000LL) - 4503599627370496.0;
    const VACC log_z = 2.0 * sq + 2.0 * sq * s2 * p;
    const VACC r = kd * 6.93147180369123816490e-01 + ((kd * 1.90821492927058770002e-10 + log_z) + corr);
    const vlong finite = (u == u) & (u < INFINITY);
    return (VACC)(((vlong)r & finite) | ((vlong)u & ~finite));
}

/* float32 lanes (two double vectors) rounded back to one float vector; the
 * identity for float64. */
static inline VREAL FN(narrow)(VACC lo, VACC hi)
{
#if CYSM_F64
    (void)hi;
    return lo;
#elif defined(CYSM_X86) && CYSM_VBYTES == 64 && defined(__AVX512F__)
    return (VREAL)_mm512_insertf64x4(
        _mm512_castpd256_pd512(_mm256_castps_pd(_mm512_cvtpd_ps((__m512d)lo))),
        _mm256_castps_pd(_mm512_cvtpd_ps((__m512d)hi)), 1);
#elif defined(CYSM_X86) && CYSM_VBYTES == 32 && defined(__AVX__)
    return (VREAL)_mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps((__m256d)lo)),
                                       _mm256_cvtpd_ps((__m256d)hi), 1);
#else
    const FN(vhalf) a = __builtin_convertvector(lo, FN(vhalf));
    const FN(vhalf) b = __builtin_convertvector(hi, FN(vhalf));
    VREAL x;
    memcpy(&x, &a, sizeof a);
    memcpy((char *)&x + sizeof a, &b, sizeof b);
    return x;
#endif
}

/* One half (NL / 2 rows for float32, all NL for float64) of finish_row in double
 * lanes; ign marks ignored rows, whose loss is 0. */
typedef int64_t FN(vlong) __attribute__((vector_size(CYSM_VBYTES)));

static inline void FN(finish_half)(const ARGS *a, VACC m, VACC fy, VACC ey, VACC t, VACC n_max,
                                   VACC wd, VACC wy, FN(vlong) ign, VACC *loss, VACC *coef,
                                   VACC *grad_y, VACC *z, VACC *lse)
{
    const double eps = a->smoothing, C = (double)a->n_classes, sw = a->smooth_weight;
    const double keep = 1.0 - eps, spread = eps / C, scale = a->grad_scale;
    const VACC log_s = FN(vlog1p)((n_max - 1.0) + t);
    VACC l = keep * wy * ((m - fy) + log_s);
    if (eps > 0) l += sw * log_s - spread * wd;
    *loss = (VACC)((FN(vlong))l & ~ign);
    const VACC inv_s = 1.0 / (n_max + t);
    *coef = scale * (keep * wy + sw) * inv_s;
    /* P_y - 1 = -(s - e_y) / s, with s - e_y free of cancellation */
    const FN(vlong) at_max = fy == m;
    const VACC others_max = (n_max - 1.0) + t, others = n_max + (t - ey);
    const VACC oth = (VACC)(((FN(vlong))others_max & at_max) | ((FN(vlong))others & ~at_max));
    VACC gy = keep * wy * (-oth * inv_s);
    if (eps > 0) gy += sw * (ey * inv_s) - spread * wy;
    *grad_y = scale * gy;
    *lse = m + log_s;
    *z = (VACC){0};
    if (a->z_loss > 0) { /* lambda lse^2, whose gradient is 2 lambda lse P_k */
        const VACC zc = a->z_grad * *lse * inv_s;
        *z = (VACC)((FN(vlong))(a->z_loss * *lse * *lse) & ~ign);
        *coef += zc;
        *grad_y += zc * ey;
    }
}

/* out[g0 + l] = lane l of the double halves v, for the nv valid lanes (out NULL: nothing). */
static inline void FN(put_lanes)(double *out, ptrdiff_t g0, int nv, const VACC *v)
{
    enum { NA = CYSM_VBYTES / 8 };
    if (!out) return;
    if (nv == NL) {
        memcpy(out + g0, v, NL * sizeof(double));
    } else {
        for (int l = 0; l < nv; l++) out[g0 + l] = v[l / NA][l % NA];
    }
}

/* Rows with C <= CYSM_SMALL_C, NL rows at a time: lane l of column vector T[k]
 * holds f[row l, class k].  Everything but the transpositions in and out runs
 * on whole vectors: the label's entry is picked by a select per class, the
 * per-row finish runs in double lanes, and the gradient columns are formed
 * before they are written back as rows. */
#if !CYSM_F64
/* Lane l of the result is lane 2l of the pair (a, b) read as int32 lanes: the low
 * halves of the int64 lanes of a, then of b (for values that fit in int32). */
#if CYSM_VBYTES == 16
#define CYSM_EVEN_LANES {0, 2, 4, 6}
#elif CYSM_VBYTES == 32
#define CYSM_EVEN_LANES {0, 2, 4, 6, 8, 10, 12, 14}
#else
#define CYSM_EVEN_LANES {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}
#endif
#endif

/* GCC (12) reports T, E and ey as "maybe uninitialized" after inlining with a
 * compile-time C, although every T[k] and E[k] with k < C is written before it is
 * read and no other is read; zero-initializing them does not silence it.  The
 * warning is turned off for this function alone. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
static inline __attribute__((always_inline)) void
    FN(sce_small_body)(const ARGS *a, ptrdiff_t r0, ptrdiff_t r1, double *row_loss,
                       cysm_sce_sums *sums, const ptrdiff_t C)
{
    enum { NA = CYSM_VBYTES / 8, NH = NL / NA }; /* double lanes per vector, halves */
    const int smooth = a->smoothing > 0;
    VREAL T[CYSM_SMALL_C], E[CYSM_SMALL_C]; /* only [0, C) is used, each written first */
    VACC sum[NH] = {{0}}, zsum[NH] = {{0}};
    int64_t lab_tail[NL];
    for (ptrdiff_t g0 = r0; g0 < r1; g0 += NL) {
        const int nv = (int)(r1 - g0 < NL ? r1 - g0 : NL);
        const REAL *fb = (const REAL *)a->scores + g0 * C;
        if (nv == NL) {
            for (int l = 0; l < NL; l++)
                for (ptrdiff_t k = 0; k < C; k++) T[k][l] = fb[l * C + k];
        } else {
            for (int l = 0; l < NL; l++) {
                for (ptrdiff_t k = 0; k < C; k++) T[k][l] = l < nv ? fb[l * C + k] : 0;
                lab_tail[l] = l < nv ? a->labels[g0 + l] : a->ignore_index;
            }
        }
        /* the label of each lane (0 where ignored: any class will do), in int64
         * double-lane halves and in the lanes of T */
        const int64_t *lab = nv == NL ? a->labels + g0 : lab_tail;
        FN(vlong) ign_h[NH], k_h[NH];
        for (int h = 0; h < NH; h++) {
            FN(vlong) y;
            memcpy(&y, lab + h * NA, sizeof y);
            ign_h[h] = y == a->ignore_index;
            k_h[h] = y & ~ign_h[h];
        }
#if CYSM_F64
        const VINT kv = k_h[0], ignv = ign_h[0];
#else
        const VINT even = CYSM_EVEN_LANES;
        const VINT kv = __builtin_shuffle((VINT)k_h[0], (VINT)k_h[1], even);
        const VINT ignv = __builtin_shuffle((VINT)ign_h[0], (VINT)ign_h[1], even);
#endif

        VREAL mv = (VREAL){0} - INFINITY;
        for (ptrdiff_t k = 0; k < C; k++) mv = FN(vmax)(T[k], mv);
        VACC t_lo = {0}, t_hi = {0}, wd_lo = {0}, wd_hi = {0};
        VINT cnt = {0};
        VREAL fy = T[0], ey;
        for (ptrdiff_t k = 0; k < C; k++) {
            VREAL d;
            E[k] = FN(exp_diff)(T[k], mv, &d);
            const VINT is_max = d == 0;
            cnt -= is_max;
            FN(acc_add)(&t_lo, &t_hi, FN(zero_where)(is_max, E[k]));
            if (smooth) {
                const VACC wk = (VACC){0} + (a->weight ? a->weight[k] : 1.0);
                FN(acc_wd)(&wd_lo, &wd_hi, T[k], mv, wk, wk);
            }
            if (k == 0) {
                ey = E[0];
            } else {
                const VINT is_y = kv == (RINT)k;
                fy = FN(select)(is_y, T[k], fy);
                ey = FN(select)(is_y, E[k], ey);
            }
        }
        /* the per-row finish, in double lanes (halves h < NH of the pairs) */
        const VREAL n_max = __builtin_convertvector(cnt, VREAL);
        VACC m_h[2], fy_h[2], ey_h[2], n_h[2], t_h[2] = {t_lo, t_hi}, wd_h[2] = {wd_lo, wd_hi};
        VACC loss_h[NH], coef_h[NH], gy_h[NH], z_h[NH], lse_h[NH];
        FN(widen)(mv, &m_h[0], &m_h[1]);
        FN(widen)(fy, &fy_h[0], &fy_h[1]);
        FN(widen)(ey, &ey_h[0], &ey_h[1]);
        FN(widen)(n_max, &n_h[0], &n_h[1]);
        for (int h = 0; h < NH; h++) {
            VACC wy = (VACC){0} + 1.0;
            if (a->weight)
                for (int l = 0; l < NA; l++) wy[l] = a->weight[k_h[h][l]];
            FN(finish_half)(a, m_h[h], fy_h[h], ey_h[h], t_h[h], n_h[h], wd_h[h],
                            wy, ign_h[h], &loss_h[h], &coef_h[h], &gy_h[h], &z_h[h], &lse_h[h]);
            sum[h] += loss_h[h];
            zsum[h] += z_h[h];
            if (row_loss) loss_h[h] += z_h[h];
        }
        FN(put_lanes)(row_loss, g0, nv, loss_h);
        FN(put_lanes)(a->row_z, g0, nv, z_h);
        FN(put_lanes)(a->row_lse, g0, nv, lse_h);
        if (a->grad) {
            const VREAL coef = FN(narrow)(coef_h[0], coef_h[NH - 1]);
            const VREAL gy = FN(narrow)(gy_h[0], gy_h[NH - 1]);
            for (ptrdiff_t k = 0; k < C; k++) {
                VREAL gk = E[k] * coef;
                if (smooth) gk -= ((const REAL *)a->grad_offset)[k];
                gk = FN(select)(kv == (RINT)k, gy, gk);
                E[k] = FN(zero_where)(ignv, gk);
            }
            REAL *g = (REAL *)a->grad + g0 * C;
            for (int l = 0; l < nv; l++)
                for (ptrdiff_t k = 0; k < C; k++) g[l * C + k] = E[k][l];
        }
    }
    sums->ce = FN(acc_total)(sum[0], sum[NH - 1]);
    sums->z = FN(acc_total)(zsum[0], zsum[NH - 1]);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/* The class count as a compile-time constant for the smallest C, so the
 * transposition and the per-row loops unroll. */
static void FN(sce_small)(const ARGS *a, ptrdiff_t r0, ptrdiff_t r1, double *row_loss,
                          cysm_sce_sums *sums)
{
    switch (a->n_classes) {
    case 2: FN(sce_small_body)(a, r0, r1, row_loss, sums, 2); break;
    case 3: FN(sce_small_body)(a, r0, r1, row_loss, sums, 3); break;
    case 4: FN(sce_small_body)(a, r0, r1, row_loss, sums, 4); break;
    case 5: FN(sce_small_body)(a, r0, r1, row_loss, sums, 5); break;
    case 10: FN(sce_small_body)(a, r0, r1, row_loss, sums, 10); break;
    default: FN(sce_small_body)(a, r0, r1, row_loss, sums, a->n_classes); break;
    }
}

/* ---- the general path: soft-capping and probability targets ----------------
 *
 * A row is first converted to double (x_k = c tanh(f_k / c), or f_k without a cap,
 * with d_k = 1 - tanh^2(f_k / c) for the chain rule), then processed by the
 * float64 row functions of this target, so float32 scores lose nothing to a
 * rounded capped score.  Probability targets t give per-class weights
 * wt_c = w_c ((1 - eps) t_c + eps / C) with A = sum_c wt_c:
 *   loss = A log s - sum_{wt_c != 0} wt_c (x_c - m)      (0 log 0 taken as 0)
 *   dloss/dx_k = grad_scale (A P_k - wt_k) + z_grad lse P_k
 * Class indices take the fast path's finish_row (float64) on x.
 * Passes per row: the conversion, the maximum, the exponentials (in place in x),
 * the gradient; three work rows of C doubles per block. */
#define D64(name) CYSM_CAT3(name, f64, CYSM_SFX)

#if CYSM_F64
/* tanh of the lanes of u: *t = tanh(u) and *om = 1 - |tanh(u)|, both without
 * cancellation: a polynomial below CYSM_TANH_SMALL, (1 - e)/(1 + e) and 2e/(1 + e)
 * with e = exp(-2|u|) above (e > 1/2 there, so 1 - e is exact).  NaN stays NaN. */
static inline void FN(vtanh)(VREAL u, VREAL *t, VREAL *om)
{
    const VINT sbit = (VINT){0} + (RINT)(-0x7fffffffffffffffLL - 1);
    const VINT sign = (VINT)u & sbit;
    const VREAL x = (VREAL)((VINT)u & ~sbit);
    const VREAL e = FN(vexp)(-2.0 * x, (VREAL){0});
    static const double q[CYSM_TANH_F64_NCOEF] = CYSM_TANH_F64_COEFS;
    const VREAL uu = x * x;
    VREAL p = (VREAL){0} + q[0];
    for (int i = 1; i < CYSM_TANH_F64_NCOEF; i++) p = p * uu + q[i];
    const VREAL t_small = x + x * uu * p;
    const VINT small = x < CYSM_TANH_SMALL;
    const VREAL r = 1.0 / (1.0 + e);
    const VREAL ta = FN(select)(small, t_small, (1.0 - e) * r);
    *om = FN(select)(small, 1.0 - t_small, (2.0 * e) * r);
    *t = (VREAL)((VINT)ta | sign);
}

/* sum_k w_k (x_k - m) (w NULL: ones), leaving out the terms with w_k == 0 when
 * skip_zero; lanes in a fixed order. */
static double FN(dot_shift)(const double *w, const double *x, ptrdiff_t C, double m,
                            int skip_zero)
{
    VACC acc = {0};
    double tail = 0.0;
    ptrdiff_t k = 0;
    for (; k + NL <= C; k += NL) {
        const VREAL wv = w ? FN(load)(w + k) : (VREAL){0} + 1.0;
        VREAL term = wv * (FN(load)(x + k) - m);
        if (skip_zero) term = FN(zero_where)(wv == 0, term);
        acc += term;
    }
    for (; k < C; k++) {
        const double wk = w ? w[k] : 1.0;
        if (!(skip_zero && wk == 0)) tail += wk * (x[k] - m);
    }
    return FN(acc_total)(acc, acc) + tail;
}

#endif

/* The lanes of v (double) capped: x = c tanh(v / c) (-inf stays -inf) and, in *d, the
 * cap's derivative 1 - tanh^2(v / c) (0 at -inf). */
static inline VACC FN(cap_lanes)(VACC v, double cap, double inv_cap, VACC *d)
{
    typedef int64_t vlong __attribute__((vector_size(CYSM_VBYTES)));
    VACC t, om;
    D64(vtanh)(v * inv_cap, &t, &om);
    const vlong masked = v == -INFINITY;
    *d = (VACC)((vlong)(om * (2.0 - om)) & ~masked);
    return (VACC)(((vlong)(cap * t) & ~masked) | ((vlong)v & masked));
}

/* NL entries of a row of the input precision as double halves (lo: the first NA). */
static inline void FN(load_wide)(const REAL *p, VACC *lo, VACC *hi)
{
    FN(widen)(FN(load)(p), lo, hi);
}

/* x = the row f in double, capped when cap > 0, with d = the cap's derivative
 * (when d is not NULL). */
static void FN(load_capped)(const REAL *f, ptrdiff_t C, double cap, double *x, double *d)
{
    enum { NA = CYSM_VBYTES / 8, NH = NL / NA };
    const double inv_cap = cap > 0 ? 1.0 / cap : 0.0;
    ptrdiff_t k = 0;
    for (; k + NL <= C; k += NL) {
        VACC v[2], dv[2] = {{0}, {0}};
        FN(load_wide)(f + k, &v[0], &v[1]);
        for (int h = 0; h < NH; h++) {
            if (cap > 0) v[h] = FN(cap_lanes)(v[h], cap, inv_cap, &dv[h]);
            memcpy(x + k + h * NA, &v[h], sizeof v[h]);
            if (d) memcpy(d + k + h * NA, &dv[h], sizeof dv[h]);
        }
    }
    for (; k < C; k += NA) { /* the tail, NA at a time (lanes are independent) */
        const int n = (int)(C - k < NA ? C - k : NA);
        VACC v = {0}, dv = {0};
        for (int l = 0; l < n; l++) v[l] = (double)f[k + l];
        if (cap > 0) v = FN(cap_lanes)(v, cap, inv_cap, &dv);
        for (int l = 0; l < n; l++) {
            x[k + l] = v[l];
            if (d) d[k + l] = dv[l];
        }
    }
}

/* wt_k = w_k ((1 - eps) t_k + eps / C) for a row of probability targets t; returns
 * sum_k wt_k, or NaN when some t_k is not finite and >= 0 (*bad set). */
static double FN(target_weights)(const REAL *t, const double *w, ptrdiff_t C, double eps,
                                 double *wt, int *bad)
{
    enum { NA = CYSM_VBYTES / 8, NH = NL / NA };
    typedef int64_t vlong __attribute__((vector_size(CYSM_VBYTES)));
    const double keep = 1.0 - eps, spread = eps / (double)C;
    VACC acc = {0};
    vlong wrong = {0};
    double tail = 0.0;
    ptrdiff_t k = 0;
    for (; k + NL <= C; k += NL) {
        VACC v[2];
        FN(load_wide)(t + k, &v[0], &v[1]);
        for (int h = 0; h < NH; h++) {
            wrong |= ~((v[h] >= 0) & (v[h] <= DBL_MAX));
            VACC wv = (VACC){0} + 1.0;
            if (w) memcpy(&wv, w + k + h * NA, sizeof wv);
            const VACC x = wv * (keep * v[h] + spread);
            memcpy(wt + k + h * NA, &x, sizeof x);
            acc += x;
        }
    }
    int tail_bad = 0;
    for (; k < C; k++) {
        const double tk = (double)t[k];
        tail_bad |= !(tk >= 0 && tk <= DBL_MAX);
        wt[k] = (w ? w[k] : 1.0) * (keep * tk + spread);
        tail += wt[k];
    }
    for (int l = 0; l < NA; l++) tail_bad |= wrong[l] != 0;
    *bad = tail_bad;
    return D64(acc_total)(acc, acc) + tail;
}

/* g = (x * coef - off - gs * wt) * d in the input precision (wt NULL: 0; d NULL: 1). */
static void FN(store_grad)(REAL *g, const double *x, double coef, double off, double gs,
                           const double *wt, const double *d, ptrdiff_t C)
{
    enum { NA = CYSM_VBYTES / 8, NH = NL / NA };
    ptrdiff_t k = 0;
    for (; k + NL <= C; k += NL) {
        VACC out[2] = {{0}, {0}};
        for (int h = 0; h < NH; h++) {
            VACC xv, v;
            memcpy(&xv, x + k + h * NA, sizeof xv);
            v = xv * coef - off;
            if (wt) {
                VACC wv;
                memcpy(&wv, wt + k + h * NA, sizeof wv);
                v -= gs * wv;
            }
            if (d) {
                VACC dv;
                memcpy(&dv, d + k + h * NA, sizeof dv);
                v *= dv;
            }
            out[h] = v;
        }
        FN(store)(g + k, FN(narrow)(out[0], out[NH - 1]));
    }
    for (; k < C; k++) {
        double v = x[k] * coef - off;
        if (wt) v -= gs * wt[k];
        if (d) v *= d[k];
        g[k] = (REAL)v;
    }
}

/* The results of one row on the general path. */
typedef struct {
    double ce, z, lse;
    int bad; /* probability targets not finite and >= 0 */
} FN(general_row);

static FN(general_row) FN(sce_row_general)(const ARGS *a, ptrdiff_t i, double *x, double *d,
                                           double *wt)
{
    const ptrdiff_t C = a->n_classes;
    const double cap = a->softcap, eps = a->smoothing;
    const REAL *f = (const REAL *)a->scores + i * C;
    REAL *g = a->grad ? (REAL *)a->grad + i * C : NULL;
    const double *dd = (g && cap > 0) ? d : NULL;
    FN(general_row) r = {0.0, 0.0, 0.0, 0};
    FN(load_capped)(f, C, cap, x, dd ? d : NULL);
    const double m = D64(row_max)(x, C);
    if (!a->targets) { /* class indices: the fast path's finish on x */
        const int64_t y = a->labels[i];
        if (y == a->ignore_index) {
            if (g) memset(g, 0, (size_t)C * sizeof(REAL));
            if (a->row_lse) {
                const D64(row_sums) rs = D64(row_exp)(x, NULL, C, m, NULL, 0, NULL, NULL);
                r.lse = m + log1p((double)(rs.n_max - 1) + rs.t);
            }
            return r;
        }
        const double fy = x[y];
        const double wd = eps > 0 ? D64(dot_shift)(a->weight, x, C, m, 0) : 0.0;
        const D64(row_sums) rs = D64(row_exp)(x, x, C, m, NULL, 0, NULL, NULL);
        const D64(row_result) res = D64(finish_row)(a, y, m, fy, x[y], rs.t, rs.n_max, wd);
        if (g) {
            /* e_k coef - eps/C grad_scale w_k; the target's own entry from finish_row */
            const double spread = a->grad_scale * eps / (double)C;
            const double gy = dd ? res.grad_y * dd[y] : res.grad_y;
            if (eps > 0 && a->weight) {
                FN(store_grad)(g, x, res.coef, 0.0, spread, a->weight, dd, C);
            } else { /* the same offset for every k */
                FN(store_grad)(g, x, res.coef, eps > 0 ? spread : 0.0, 0.0, NULL, dd, C);
            }
            g[y] = (REAL)gy;
        }
        r.ce = res.loss;
        r.z = res.z;
        r.lse = res.lse;
        return r;
    }
    /* probability targets */
    int bad = 0;
    const double A = FN(target_weights)((const REAL *)a->targets + i * C, a->weight, C, eps,
                                        wt, &bad);
    if (bad) {
        r.bad = 1;
        return r;
    }
    const double B = D64(dot_shift)(wt, x, C, m, 1);
    const D64(row_sums) rs = D64(row_exp)(x, x, C, m, NULL, 0, NULL, NULL);
    const double log_s = log1p((double)(rs.n_max - 1) + rs.t);
    r.lse = m + log_s;
    r.ce = A * log_s - B;
    const double inv_s = 1.0 / ((double)rs.n_max + rs.t);
    double coef = a->grad_scale * A * inv_s;
    if (a->z_loss > 0) {
        r.z = a->z_loss * r.lse * r.lse;
        coef += a->z_grad * r.lse * inv_s;
    }
    if (g) FN(store_grad)(g, x, coef, 0.0, a->grad_scale, wt, dd, C);
    return r;
}

/* g = (e * coef - gs * wt) with e the row's exponentials in the input precision
 * (already in g). */
static void FN(store_grad_e)(REAL *g, double coef, double gs, const double *wt, ptrdiff_t C)
{
    enum { NA = CYSM_VBYTES / 8, NH = NL / NA };
    ptrdiff_t k = 0;
    for (; k + NL <= C; k += NL) {
        VACC e[2], out[2] = {{0}, {0}};
        FN(load_wide)(g + k, &e[0], &e[1]);
        for (int h = 0; h < NH; h++) {
            VACC wv;
            memcpy(&wv, wt + k + h * NA, sizeof wv);
            out[h] = e[h] * coef - gs * wv;
        }
        FN(store)(g + k, FN(narrow)(out[0], out[NH - 1]));
    }
    for (; k < C; k++) g[k] = (REAL)((double)g[k] * coef - gs * wt[k]);
}

/* Probability targets without a cap, for C >= NL: the row in its own precision (the
 * fast path's exponential pass, e_k into g), the target-weighted sums in double. */
static FN(general_row) FN(sce_row_targets)(const ARGS *a, ptrdiff_t i, double *wt)
{
    const ptrdiff_t C = a->n_classes;
    const REAL *f = (const REAL *)a->scores + i * C;
    REAL *g = a->grad ? (REAL *)a->grad + i * C : NULL;
    FN(general_row) r = {0.0, 0.0, 0.0, 0};
    int bad = 0;
    const double A = FN(target_weights)((const REAL *)a->targets + i * C, a->weight, C,
                                        a->smoothing, wt, &bad);
    if (bad) {
        r.bad = 1;
        return r;
    }
    const REAL m = FN(row_max)(f, C);
    const FN(row_sums) rs = FN(row_exp)(f, g, C, m, wt, 2, NULL, NULL);
    const double log_s = log1p((double)(rs.n_max - 1) + rs.t);
    r.lse = (double)m + log_s;
    r.ce = A * log_s - rs.wd;
    const double inv_s = 1.0 / ((double)rs.n_max + rs.t);
    double coef = a->grad_scale * A * inv_s;
    if (a->z_loss > 0) {
        r.z = a->z_loss * r.lse * r.lse;
        coef += a->z_grad * r.lse * inv_s;
    }
    if (g) FN(store_grad_e)(g, coef, a->grad_scale, wt, C);
    return r;
}

/* Work rows on the stack up to this many doubles, else malloc'ed once per block. */
#define CYSM_GENERAL_STACK 1536

static void FN(sce_rows_general)(const ARGS *a, ptrdiff_t r0, ptrdiff_t r1, double *row_loss,
                                 cysm_sce_sums *sums)
{
    const ptrdiff_t C = a->n_classes;
    double stack_buf[CYSM_GENERAL_STACK];
    double *buf = 3 * C <= CYSM_GENERAL_STACK ? stack_buf
                                              : (double *)malloc((size_t)(3 * C) * sizeof(double));
    if (!buf) {
        sums->no_memory = 1;
        return;
    }
    double ce = 0.0, z = 0.0;
    const int own_precision = a->targets && !(a->softcap > 0) && C >= NL;
    for (ptrdiff_t i = r0; i < r1; i++) {
        const FN(general_row) r = own_precision
                                      ? FN(sce_row_targets)(a, i, buf + 2 * C)
                                      : FN(sce_row_general)(a, i, buf, buf + C, buf + 2 * C);
        if (r.bad) {
            sums->bad_row = i;
            break;
        }
        if (row_loss) row_loss[i] = r.ce + r.z;
        if (a->row_z) a->row_z[i] = r.z;
        if (a->row_lse) a->row_lse[i] = r.lse;
        ce += r.ce;
        z += r.z;
    }
    if (buf != stack_buf) free(buf);
    sums->ce = ce;
    sums->z = z;
}

static void FN(sce_rows)(const ARGS *a, ptrdiff_t r0, ptrdiff_t r1, double *row_loss,
                         cysm_sce_sums *sums)
{
    const ptrdiff_t C = a->n_classes;
    sums->ce = sums->z = 0.0;
    sums->bad_row = -1;
    sums->no_memory = 0;
    if (a->targets || a->softcap > 0) {
        FN(sce_rows_general)(a, r0, r1, row_loss, sums);
        return;
    }
    if (C <= CYSM_SMALL_C) {
        FN(sce_small)(a, r0, r1, row_loss, sums);
        return;
    }
    const REAL *scores = (const REAL *)a->scores;
    double ce = 0.0, z = 0.0;
    for (ptrdiff_t i = r0; i < r1; i++) {
        const int last = i + 1 == r1;
        REAL *g = a->grad ? (REAL *)a->grad + i * C : NULL;
        const FN(row_parts) parts = FN(sce_row)(a, i, scores + i * C, g, a->labels[i],
                                                last ? NULL : scores + (i + 1) * C,
                                                (last || !g) ? NULL : g + C);
        if (row_loss) row_loss[i] = parts.ce + parts.z;
        ce += parts.ce;
        z += parts.z;
    }
    sums->ce = ce;
    sums->z = z;
}

static void FN(softmax_rows)(const void *x_, void *out_, ptrdiff_t C, ptrdiff_t r0,
                             ptrdiff_t r1, int log_space)
{
    const REAL *x = (const REAL *)x_;
    REAL *out = (REAL *)out_;
    for (ptrdiff_t i = r0; i < r1; i++) {
        const REAL *f = x + i * C;
        REAL *o = out + i * C;
        const REAL m = FN(row_max)(f, C);
        const int last = i + 1 == r1;
        const FN(row_sums) rs = FN(row_exp)(f, log_space ? NULL : o, C, m, NULL, 0,
                                            last ? NULL : f + C, last ? NULL : o + C);
        if (log_space) {
            const double log_s = log1p((double)(rs.n_max - 1) + rs.t);
            const double md = (double)m;
            for (ptrdiff_t k = 0; k < C; k++) o[k] = (REAL)(((double)f[k] - md) - log_s);
        } else {
            const REAL inv_s = (REAL)(1.0 / ((double)rs.n_max + rs.t));
            const VREAL iv = (VREAL){0} + inv_s;
            ptrdiff_t k = 0;
            for (; k + NL <= C; k += NL) FN(store)(o + k, FN(load)(o + k) * iv);
            for (; k < C; k++) o[k] = o[k] * inv_s;
        }
    }
}

#undef REAL
#undef RINT
#undef PREC
#undef NL
#undef FN
#undef VREAL
#undef VINT
#undef VACC
#undef ARGS
#undef D64
#ifdef CYSM_EVEN_LANES
#undef CYSM_EVEN_LANES
#endif
