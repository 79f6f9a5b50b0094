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
#include <math.h>
#include <string.h>

#include "cysm_exp_poly.h"
#include "cysm_kernels.h"

#define CYSM_CAT_(a, b) a##_##b
#define CYSM_CAT(a, b) CYSM_CAT_(a, b)
#define CYSM_CAT3(a, b, c) CYSM_CAT(CYSM_CAT(a, b), c)

/* Rows with at most this many classes are processed a vector of rows at a time. */
#define CYSM_SMALL_C 16

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

#define CYSM_TABLE(NAME, SFX, BYTES)                                                   \
    {NAME, BYTES, sce_rows_f32_##SFX, sce_rows_f64_##SFX, softmax_rows_f32_##SFX,      \
     softmax_rows_f64_##SFX}

static const cysm_kernel_table cysm_tables[] = {
    CYSM_TABLE("baseline", base, 16),
#if CYSM_X86_TARGETS
    CYSM_TABLE("avx2", avx2, 32),
    CYSM_TABLE("avx512", avx512, 64),
    CYSM_TABLE("avx2-w64", avx2w64, 64),
#endif
};

int cysm_n_targets(void) { return (int)(sizeof cysm_tables / sizeof cysm_tables[0]); }

const cysm_kernel_table *cysm_target(int i)
{
    return (i >= 0 && i < cysm_n_targets()) ? &cysm_tables[i] : NULL;
}

int cysm_target_supported(int i)
{
    if (i == 0) return 1;
#if CYSM_X86_TARGETS
    __builtin_cpu_init();
    if (i == 1) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (i == 2) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
                       __builtin_cpu_supports("fma");
    if (i == 3) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 0;
}

int cysm_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
