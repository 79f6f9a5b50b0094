# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True
"""Compiled softmax cross-entropy kernels: the thin layer between Python and C.

Design
------
Three layers, each in its own file:

* ``src/cysm_kernels_impl.h`` -- the per-row math in C (``exp`` with an exact
  ``f - max`` difference, the loss with ``log1p`` of the non-maximal mass, the
  gradient ``P_k - 1(y = k)`` with smoothing and weights), compiled once per
  instruction-set target by ``src/cysm_kernels.c``.
* this module -- typed-memoryview wrappers that validate the labels, compute the
  "mean" denominator, split the rows into fixed blocks and run the blocks on
  OpenMP threads with the GIL released.
* ``cysoftmax/_api.py`` -- the public functions: argument checking, conversion,
  output allocation, documentation.

Threads and determinism: a batch of N rows is cut into blocks whose size depends
only on the number of classes; every block writes its own rows and its own
partial loss sum, and the partial sums are added in block order afterwards.  So
the results are bitwise identical for any thread count.  Small problems run on
the calling thread (see ``_BLOCK_ELEMS``).
"""

from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from cython cimport floating
from cython.parallel cimport prange

import numpy as np

cdef extern from "src/cysm_kernels.h" nogil:
    ctypedef struct cysm_sce_args_f32:
        const float *scores
        float *grad
        const int64_t *labels
        Py_ssize_t n_classes
        int64_t ignore_index
        const double *weight
        const float *grad_offset
        double weight_total
        double smoothing
        double grad_scale

    ctypedef struct cysm_sce_args_f64:
        const double *scores
        double *grad
        const int64_t *labels
        Py_ssize_t n_classes
        int64_t ignore_index
        const double *weight
        const double *grad_offset
        double weight_total
        double smoothing
        double grad_scale

    ctypedef struct cysm_kernel_table:
        const char *name
        int vector_bytes
        void (*sce_f32)(const cysm_sce_args_f32 *, Py_ssize_t, Py_ssize_t, double *, double *) noexcept nogil
        void (*sce_f64)(const cysm_sce_args_f64 *, Py_ssize_t, Py_ssize_t, double *, double *) noexcept nogil
        void (*softmax_f32)(const float *, float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, int) noexcept nogil
        void (*softmax_f64)(const double *, double *, Py_ssize_t, Py_ssize_t, Py_ssize_t, int) noexcept nogil

    int cysm_n_targets()
    const cysm_kernel_table *cysm_target(int i)
    int cysm_target_supported(int i)
    int cysm_openmp_enabled()
    int cysm_openmp_max_threads()

cdef enum:
    # A block holds about this many scores; blocks are the unit of threading.
    _BLOCK_ELEMS = 16384
    # Rows of small-C blocks come in multiples of the widest vector of rows.
    _ROW_ALIGN = 16
    # Classes at or below which the C kernels work on a vector of rows at a time
    # (CYSM_SMALL_C in src/cysm_kernels.c).
    _SMALL_C = 16

REDUCTION_NONE = 0
REDUCTION_MEAN = 1
REDUCTION_SUM = 2

cdef const cysm_kernel_table *_table = cysm_target(0)


class LabelOutOfRange(IndexError):
    """A label outside [0, n_classes) that is not ignore_index (flat position, value)."""

    def __init__(self, Py_ssize_t position, int64_t value):
        super().__init__(position, value)
        self.position = position
        self.value = value


# ---------------------------------------------------------------- targets

def targets():
    """Names of the instruction-set targets compiled into this build, baseline first."""
    return [cysm_target(i).name.decode() for i in range(cysm_n_targets())]


def supported_targets():
    """Names of the compiled targets that the running CPU can execute."""
    return [cysm_target(i).name.decode() for i in range(cysm_n_targets())
            if cysm_target_supported(i)]


def current_target():
    """Name of the target the kernels currently run on."""
    return _table.name.decode()


def set_target(name):
    """Make the kernels run on target ``name`` (one of ``supported_targets()``)."""
    global _table
    cdef int i
    for i in range(cysm_n_targets()):
        if cysm_target(i).name.decode() == name:
            if not cysm_target_supported(i):
                raise ValueError(f"target {name!r} is compiled in but this CPU cannot run it")
            _table = cysm_target(i)
            return
    raise ValueError(f"unknown target {name!r}; compiled targets: {targets()}")


def openmp_enabled():
    """Whether this build runs kernels on OpenMP threads."""
    return bool(cysm_openmp_enabled())


def default_num_threads():
    """Threads used when ``num_threads=None``: OpenMP's default (honours OMP_NUM_THREADS)."""
    return cysm_openmp_max_threads()


# ------------------------------------------------------------ the blocks

cdef inline Py_ssize_t _rows_per_block(Py_ssize_t n_classes) noexcept nogil:
    cdef Py_ssize_t rows = _BLOCK_ELEMS // n_classes
    if rows < 1:
        rows = 1
    if n_classes <= _SMALL_C:
        rows = (rows + _ROW_ALIGN - 1) // _ROW_ALIGN * _ROW_ALIGN
    return rows


cdef inline int _threads_for(Py_ssize_t n_blocks, int num_threads) noexcept nogil:
    if not cysm_openmp_enabled():
        return 1
    return <int>min(<Py_ssize_t>num_threads, n_blocks) if n_blocks > 1 else 1


cdef inline void _sce_block(const cysm_kernel_table *table, const void *args, bint is_float,
                            Py_ssize_t block, Py_ssize_t rows_per_block, Py_ssize_t n_rows,
                            double *row_loss, double *partials) noexcept nogil:
    cdef Py_ssize_t r0 = block * rows_per_block
    cdef Py_ssize_t r1 = min(r0 + rows_per_block, n_rows)
    if is_float:
        table.sce_f32(<const cysm_sce_args_f32 *>args, r0, r1, row_loss, &partials[block])
    else:
        table.sce_f64(<const cysm_sce_args_f64 *>args, r0, r1, row_loss, &partials[block])


cdef object _sce(const floating[:, ::1] scores, const int64_t[::1] labels, object weight,
                 int64_t ignore_index, double smoothing, int reduction,
                 floating[:, ::1] grad, int num_threads):
    cdef Py_ssize_t n_rows = scores.shape[0], n_classes = scores.shape[1]
    cdef Py_ssize_t i, block, n_blocks, rows_per_block, bad = -1
    cdef int64_t y
    cdef double denominator = 0.0, weight_total = <double>n_classes, total = 0.0
    cdef const double[::1] w
    cdef const double *w_ptr = NULL
    cdef floating[::1] offset
    cdef double[::1] row_loss_view
    cdef double *row_loss = NULL
    cdef double *partials
    cdef cysm_sce_args_f32 a32
    cdef cysm_sce_args_f64 a64
    cdef const void *args
    cdef const cysm_kernel_table *table = _table
    cdef int n_threads
    cdef bint is_float = floating is float

    if weight is not None:
        w = weight
        w_ptr = &w[0]
        weight_total = 0.0
        for i in range(n_classes):
            weight_total += w_ptr[i]

    # labels: range check and the "mean" denominator, in row order
    with nogil:
        for i in range(n_rows):
            y = labels[i]
            if y == ignore_index:
                continue
            if y < 0 or y >= n_classes:
                bad = i
                break
            denominator += w_ptr[y] if w_ptr != NULL else 1.0
    if bad >= 0:
        raise LabelOutOfRange(bad, labels[bad])

    row_loss_array = None
    if reduction == REDUCTION_NONE:
        row_loss_array = np.empty(n_rows, dtype=np.float64)
        row_loss_view = row_loss_array
    if n_rows == 0:
        return 0.0, denominator, row_loss_array
    if reduction == REDUCTION_NONE:
        row_loss = &row_loss_view[0]

    cdef double grad_scale = 1.0 / denominator if reduction == REDUCTION_MEAN else 1.0
    cdef floating *offset_ptr = NULL
    if smoothing > 0 and grad is not None:
        offset = np.empty(n_classes, dtype=np.float32 if is_float else np.float64)
        for i in range(n_classes):
            offset[i] = <floating>(grad_scale * smoothing / n_classes *
                                   (w_ptr[i] if w_ptr != NULL else 1.0))
        offset_ptr = &offset[0]
    cdef floating *grad_ptr = &grad[0, 0] if grad is not None else NULL

    if is_float:
        a32.scores = <const float *>&scores[0, 0]
        a32.grad = <float *>grad_ptr
        a32.labels = &labels[0]
        a32.n_classes = n_classes
        a32.ignore_index = ignore_index
        a32.weight = w_ptr
        a32.grad_offset = <const float *>offset_ptr
        a32.weight_total = weight_total
        a32.smoothing = smoothing
        a32.grad_scale = grad_scale
        args = &a32
    else:
        a64.scores = <const double *>&scores[0, 0]
        a64.grad = <double *>grad_ptr
        a64.labels = &labels[0]
        a64.n_classes = n_classes
        a64.ignore_index = ignore_index
        a64.weight = w_ptr
        a64.grad_offset = <const double *>offset_ptr
        a64.weight_total = weight_total
        a64.smoothing = smoothing
        a64.grad_scale = grad_scale
        args = &a64

    rows_per_block = _rows_per_block(n_classes)
    n_blocks = (n_rows + rows_per_block - 1) // rows_per_block
    n_threads = _threads_for(n_blocks, num_threads)
    partials = <double *>malloc(n_blocks * sizeof(double))
    if partials == NULL:
        raise MemoryError()
    with nogil:
        if n_threads > 1:
            for block in prange(n_blocks, num_threads=n_threads, schedule="static"):
                _sce_block(table, args, is_float, block, rows_per_block, n_rows, row_loss, partials)
        else:
            for block in range(n_blocks):
                _sce_block(table, args, is_float, block, rows_per_block, n_rows, row_loss, partials)
        for block in range(n_blocks):
            total += partials[block]
    free(partials)
    return total, denominator, row_loss_array


def sce_float32(const float[:, ::1] scores, const int64_t[::1] labels, weight,
                int64_t ignore_index, double smoothing, int reduction,
                float[:, ::1] grad, int num_threads):
    """Loss sum, denominator and per-row losses (or None); fills ``grad`` unless None."""
    return _sce(scores, labels, weight, ignore_index, smoothing, reduction, grad, num_threads)


def sce_float64(const double[:, ::1] scores, const int64_t[::1] labels, weight,
                int64_t ignore_index, double smoothing, int reduction,
                double[:, ::1] grad, int num_threads):
    """Loss sum, denominator and per-row losses (or None); fills ``grad`` unless None."""
    return _sce(scores, labels, weight, ignore_index, smoothing, reduction, grad, num_threads)


# ------------------------------------------------------ softmax, log_softmax

cdef object _softmax(const floating[:, ::1] scores, floating[:, ::1] out, bint log_space,
                     int num_threads):
    cdef Py_ssize_t n_rows = scores.shape[0], n_classes = scores.shape[1]
    cdef Py_ssize_t block, r0, r1, n_blocks, rows_per_block
    cdef const cysm_kernel_table *table = _table
    cdef int n_threads
    if n_rows == 0:
        return
    rows_per_block = _rows_per_block(n_classes)
    n_blocks = (n_rows + rows_per_block - 1) // rows_per_block
    n_threads = _threads_for(n_blocks, num_threads)
    with nogil:
        for block in prange(n_blocks, num_threads=n_threads, schedule="static"):
            r0 = block * rows_per_block
            r1 = min(r0 + rows_per_block, n_rows)
            if floating is float:
                table.softmax_f32(&scores[0, 0], &out[0, 0], n_classes, r0, r1, log_space)
            else:
                table.softmax_f64(&scores[0, 0], &out[0, 0], n_classes, r0, r1, log_space)


def softmax_float32(const float[:, ::1] scores, float[:, ::1] out, bint log_space, int num_threads):
    """Row-wise softmax (or log_softmax) of ``scores`` into ``out``."""
    _softmax(scores, out, log_space, num_threads)


def softmax_float64(const double[:, ::1] scores, double[:, ::1] out, bint log_space, int num_threads):
    """Row-wise softmax (or log_softmax) of ``scores`` into ``out``."""
    _softmax(scores, out, log_space, num_threads)


# ------------------------------------------------------------ target at import

def _select_initial_target():
    import os
    import warnings
    forced = os.environ.get("CYSOFTMAX_TARGET", "").strip()
    if forced:
        try:
            set_target(forced)
            return
        except ValueError as exc:
            warnings.warn(f"CYSOFTMAX_TARGET ignored: {exc}", RuntimeWarning, stacklevel=2)
    usable = supported_targets()
    set_target(usable[len(usable) - 1])  # the widest


_select_initial_target()
