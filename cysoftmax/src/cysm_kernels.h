/*
 * cysm_kernels.h -- the C interface of the softmax cross-entropy row kernels.
 *
 * The kernels live in cysm_kernels.c (with the per-precision, per-target body in
 * cysm_kernels_impl.h).  Each kernel processes a half-open range of rows
 * [r0, r1) of a C-contiguous (n_rows, n_classes) array, so the caller (the Cython
 * layer, _kernels.pyx) can split a batch into fixed blocks and run them on
 * OpenMP threads.  Nothing here allocates, locks or touches Python.
 */
#ifndef CYSM_KERNELS_H
#define CYSM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Arguments of one softmax cross-entropy call (float32 and float64 flavours).
 *
 *   scores       (n_rows, n_classes), C-contiguous
 *   grad         (n_rows, n_classes), C-contiguous, or NULL for the loss only;
 *                it may be the same buffer as `scores` (in-place gradient)
 *   labels       (n_rows,), every entry in [0, n_classes) or == ignore_index;
 *                a buffer owned by the call (validated, and never written by
 *                anyone while the kernels run: they index scores and weight with it)
 *   weight       (n_classes,) class weights owned by the call, or NULL for all ones
 *   grad_offset  (n_classes,) grad_scale * smoothing / n_classes * weight[k];
 *                read only when smoothing > 0
 *   smooth_weight  smoothing / n_classes * (sum of the class weights), computed so
 *                that it does not overflow for huge finite weights; 0 without smoothing
 *   smoothing    label smoothing epsilon in [0, 1]
 *   grad_scale   factor applied to every gradient row (1/denominator for "mean")
 */
#define CYSM_DECLARE_ARGS(REAL, SUFFIX)                                          \
    typedef struct {                                                             \
        const REAL *scores;                                                      \
        REAL *grad;                                                              \
        const int64_t *labels;                                                   \
        ptrdiff_t n_classes;                                                     \
        int64_t ignore_index;                                                    \
        const double *weight;                                                    \
        const REAL *grad_offset;                                                 \
        double smooth_weight;                                                    \
        double smoothing;                                                        \
        double grad_scale;                                                       \
    } cysm_sce_args_##SUFFIX;

CYSM_DECLARE_ARGS(float, f32)
CYSM_DECLARE_ARGS(double, f64)

/* Loss (+ gradient) of rows [r0, r1).  row_loss (indexed by absolute row) may be
 * NULL; *loss_sum receives the sum of the row losses, added in row order. */
typedef void (*cysm_sce_f32_fn)(const cysm_sce_args_f32 *args, ptrdiff_t r0,
                                ptrdiff_t r1, double *row_loss, double *loss_sum);
typedef void (*cysm_sce_f64_fn)(const cysm_sce_args_f64 *args, ptrdiff_t r0,
                                ptrdiff_t r1, double *row_loss, double *loss_sum);

/* softmax (log_space = 0) or log_softmax (log_space = 1) of rows [r0, r1);
 * out may be the same buffer as x. */
typedef void (*cysm_softmax_f32_fn)(const float *x, float *out, ptrdiff_t n_classes,
                                    ptrdiff_t r0, ptrdiff_t r1, int log_space);
typedef void (*cysm_softmax_f64_fn)(const double *x, double *out, ptrdiff_t n_classes,
                                    ptrdiff_t r0, ptrdiff_t r1, int log_space);

typedef struct {
    const char *name;
    int vector_bytes;
    cysm_sce_f32_fn sce_f32;
    cysm_sce_f64_fn sce_f64;
    cysm_softmax_f32_fn softmax_f32;
    cysm_softmax_f64_fn softmax_f64;
} cysm_kernel_table;

/* Targets compiled into this build, baseline first.  cysm_target_supported(i)
 * tells whether the running CPU can execute target i. */
int cysm_n_targets(void);
const cysm_kernel_table *cysm_target(int i);
int cysm_target_supported(int i);

/* 1 when the extension was compiled with OpenMP, else 0. */
int cysm_openmp_enabled(void);

#ifdef __cplusplus
}
#endif

#endif /* CYSM_KERNELS_H */
