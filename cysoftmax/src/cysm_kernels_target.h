/*
 * cysm_kernels_target.h -- one instruction-set target: the float32 and float64
 * row kernels of cysm_kernels_impl.h, named with the suffix CYSM_SFX and built on
 * CYSM_VBYTES-byte vectors.  Included by cysm_kernels.c once per target, after
 * it defines CYSM_SFX and CYSM_VBYTES (both undefined again here) and, for a
 * non-baseline target, inside #pragma GCC push_options / target / pop_options.
 * No include guard: it is meant to be included several times.
 */
#if !defined(CYSM_SFX) || !defined(CYSM_VBYTES)
#error "define CYSM_SFX and CYSM_VBYTES before including cysm_kernels_target.h"
#endif

/* float64 first: the float32 kernels' general path (soft-capping, probability
 * targets) works in double with the float64 kernels' row functions. */
#define CYSM_F64 1
#include "cysm_kernels_impl.h"
#undef CYSM_F64
#define CYSM_F64 0
#include "cysm_kernels_impl.h"
#undef CYSM_F64

#undef CYSM_SFX
#undef CYSM_VBYTES
