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

/* Rows with at most this many classes are processed a vector of rows at a time;
 * a block of such rows holds a multiple of CYSM_ROW_ALIGN rows (the widest vector
 * of rows: 64 bytes of float32).  The Cython layer reads both from here. */
#define CYSM_SMALL_C 16
#define CYSM_ROW_ALIGN 16

/* Reductions of the row losses. */
enum { CYSM_REDUCTION_NONE = 0, CYSM_REDUCTION_MEAN = 1, CYSM_REDUCTION_SUM = 2 };

/* Arguments of one softmax cross-entropy call, for either precision (scores,
 * grad, targets and grad_offset hold float or double, as the kernel called):
 *
 *   scores       (n_rows, n_classes), C-contiguous
 *   grad         (n_rows, n_classes), C-contiguous, or NULL for the loss only;
 *                it may be the same buffer as `scores` (in-place gradient)
 *   labels       (n_rows,), every entry in [0, n_classes) or == ignore_index;
 *                a buffer owned by the call (validated, and never written by
 *                anyone while the kernels run: they index scores and weight with it);
 *                NULL with probability targets
 *   targets      (n_rows, n_classes) probability targets, C-contiguous, or NULL for
 *                class indices; read as values only (never as indices), checked
 *                finite and >= 0 by the kernels, and never overlapping grad
 *   weight       (n_classes,) class weights owned by the call, or NULL for all ones
 *   smoothing    label smoothing epsilon in [0, 1]
 *   z_loss       lambda >= 0 of the z-loss lambda * lse^2 of each non-ignored row
 *   softcap      c > 0: every score f is replaced by c tanh(f / c) (-inf stays -inf);
 *                0 for none
 *   row_z, row_lse  (n_rows,) per-row z-loss and log-sum-exp (of the capped scores,
 *                ignored rows included), each written when not NULL
 * and the gradient's coefficients, set by cysm_sce_coefficients:
 *   grad_scale   factor of the cross-entropy part of every gradient row
 *                (1/denominator for "mean")
 *   z_grad       2 lambda times the factor of the z-loss part (1/rows counted for "mean")
 *   smooth_weight  smoothing / n_classes * (sum of the class weights), formed so
 *                that it does not overflow for huge finite weights; 0 without smoothing
 *   grad_offset  (n_classes,) grad_scale * smoothing / n_classes * weight[k];
 *                read only when smoothing > 0 and grad is not NULL
 */
typedef struct {
    const void *scores;
    void *grad;
    const int64_t *labels;
    const void *targets;
    ptrdiff_t n_classes;
    int64_t ignore_index;
    const double *weight;
    double smoothing;
    double z_loss;
    double softcap;
    double *row_z;
    double *row_lse;
    double grad_scale;
    double z_grad;
    double smooth_weight;
    const void *grad_offset;
} cysm_sce_args;

/* What one call of a kernel adds up over its rows: the cross-entropy and z-loss
 * parts of the loss, the first row whose probability targets are not finite and
 * >= 0 (-1: none), and whether a work buffer could not be allocated. */
typedef struct {
    double ce;
    double z;
    ptrdiff_t bad_row;
    int no_memory;
} cysm_sce_sums;

/* Fills the coefficients of `a` (see above) from its other fields, the reduction,
 * the "mean" denominator of the cross-entropy part (the summed weight of the
 * non-ignored rows; 0 makes the mean's gradient NaN, as PyTorch) and that of the
 * z-loss part (the number of non-ignored rows).  offset_buf holds n_classes items
 * of the precision: the smoothing offsets are written there. */
void cysm_sce_coefficients(cysm_sce_args *a, int is_f64, int reduction, double denominator,
                           double z_denominator, void *offset_buf);

/* Loss (+ gradient) of rows [r0, r1).  row_loss (indexed by absolute row) may be
 * NULL: each row's loss (its cross-entropy plus its z-loss) is written there. */
typedef void (*cysm_sce_fn)(const cysm_sce_args *args, ptrdiff_t r0, ptrdiff_t r1,
                            double *row_loss, cysm_sce_sums *sums);

/* softmax (log_space = 0) or log_softmax (log_space = 1) of rows [r0, r1) of a
 * C-contiguous array of float or double; out may be the same buffer as x. */
typedef void (*cysm_softmax_fn)(const void *x, void *out, ptrdiff_t n_classes, ptrdiff_t r0,
                                ptrdiff_t r1, int log_space);

/* One instruction-set target: its name, vector width, whether the running CPU
 * can execute it, and its kernels indexed by precision (0 float32, 1 float64). */
typedef struct {
    const char *name;
    int vector_bytes;
    int (*supported)(void);
    cysm_sce_fn sce[2];
    cysm_softmax_fn softmax[2];
} cysm_kernel_table;

/* Targets compiled into this build, baseline first. */
int cysm_n_targets(void);
const cysm_kernel_table *cysm_target(int i);

/* 1 when the extension was compiled with OpenMP, else 0. */
int cysm_openmp_enabled(void);

#ifdef __cplusplus
}
#endif

#endif /* CYSM_KERNELS_H */
