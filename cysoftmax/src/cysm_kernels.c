/*
 * cysm_kernels.c -- instantiates the row kernels of cysm_kernels_impl.h for
 * float32 and float64 and for each instruction-set target, and tells which
 * targets the running CPU supports.
 *
 * Targets: "baseline" (the compiler's default for the platform: SSE2 on x86-64,
 * NEON on arm64) everywhere; with GCC on x86-64 also "avx2" (AVX2 + FMA) and
 * "avx512" (AVX-512F), compiled in this one file under #pragma GCC target, so the
 * extension runs on any CPU of its architecture and picks the widest kernels
 * the CPU has at import (see _kernels.pyx).  The build never uses -march=native.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cysm_exp_poly.h"
#include "cysm_kernels.h"

#define CYSM_CAT_(a, b) a##_##b
#define CYSM_CAT(a, b) CYSM_CAT_(a, b)
#define CYSM_CAT3(a, b, c) CYSM_CAT(CYSM_CAT(a, b), c)

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CYSM_X86_TARGETS 1
#else
#define CYSM_X86_TARGETS 0
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define CYSM_X86 1 /* intrinsics for the few operations generic vectors do poorly */
#include <immintrin.h>
#endif

/* ---- baseline ---------------------------------------------------------- */
#define CYSM_SFX base
#define CYSM_VBYTES 16
#include "cysm_kernels_target.h"

#if CYSM_X86_TARGETS
/* ---- AVX2 + FMA -------------------------------------------------------- */
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CYSM_SFX avx2
#define CYSM_VBYTES 32
#include "cysm_kernels_target.h"
#pragma GCC pop_options

/* ---- AVX2 + FMA with the AVX-512 target's 64-byte vectors (each operation
 * split in two): never chosen by default; it runs the AVX-512 kernels' lane
 * logic on CPUs without AVX-512, so that logic is tested everywhere. ---- */
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CYSM_SFX avx2w64
#define CYSM_VBYTES 64
#include "cysm_kernels_target.h"
#pragma GCC pop_options

/* ---- AVX-512F ---------------------------------------------------------- */
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#define CYSM_SFX avx512
#define CYSM_VBYTES 64
#include "cysm_kernels_target.h"
#pragma GCC pop_options
#endif

/* ---- which targets the CPU runs: one check per table entry ------------ */
static int cysm_always(void) { return 1; }

#if CYSM_X86_TARGETS
static int cysm_has_avx2_fma(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static int cysm_has_avx512f(void)
{
    __builtin_cpu_init();
    return cysm_has_avx2_fma() && __builtin_cpu_supports("avx512f");
}
#endif

#define CYSM_TABLE(NAME, SFX, BYTES, SUPPORTED)                                        \
    {NAME, BYTES, SUPPORTED, {sce_rows_f32_##SFX, sce_rows_f64_##SFX},                 \
     {softmax_rows_f32_##SFX, softmax_rows_f64_##SFX}}

static const cysm_kernel_table cysm_tables[] = {
    CYSM_TABLE("baseline", base, 16, cysm_always),
#if CYSM_X86_TARGETS
    CYSM_TABLE("avx2", avx2, 32, cysm_has_avx2_fma),
    CYSM_TABLE("avx512", avx512, 64, cysm_has_avx512f),
    CYSM_TABLE("avx2-w64", avx2w64, 64, cysm_has_avx2_fma),
#endif
};

int cysm_n_targets(void) { return (int)(sizeof cysm_tables / sizeof cysm_tables[0]); }

const cysm_kernel_table *cysm_target(int i)
{
    return (i >= 0 && i < cysm_n_targets()) ? &cysm_tables[i] : NULL;
}

/* ---- the gradient's coefficients -------------------------------------- */
void cysm_sce_coefficients(cysm_sce_args *a, int is_f64, int reduction, double denominator,
                           double z_denominator, void *offset_buf)
{
    const ptrdiff_t C = a->n_classes;
    const double eps = a->smoothing, spread = eps / (double)C;
    double mean_weight = 1.0;
    if (a->weight && eps > 0) { /* as a sum of w_c / C: no overflow for weights near DBL_MAX */
        mean_weight = 0.0;
        for (ptrdiff_t c = 0; c < C; c++) mean_weight += a->weight[c] / (double)C;
    }
    a->smooth_weight = eps * mean_weight;
    a->grad_scale = 1.0;
    if (reduction == CYSM_REDUCTION_MEAN) /* a zero total weight: NaN (as PyTorch) */
        a->grad_scale = denominator != 0 ? 1.0 / denominator : NAN;
    a->z_grad = 0.0;
    if (a->z_loss > 0) {
        a->z_grad = 2.0 * a->z_loss;
        if (reduction == CYSM_REDUCTION_MEAN)
            a->z_grad = z_denominator != 0 ? a->z_grad / z_denominator : NAN;
    }
    a->grad_offset = NULL;
    if (eps > 0 && a->grad) {
        for (ptrdiff_t c = 0; c < C; c++) {
            const double off = a->grad_scale * spread * (a->weight ? a->weight[c] : 1.0);
            if (is_f64) {
                ((double *)offset_buf)[c] = off;
            } else {
                ((float *)offset_buf)[c] = (float)off;
            }
        }
        a->grad_offset = offset_buf;
    }
}

int cysm_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
