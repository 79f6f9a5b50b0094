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
* this module -- typed-memoryview wrappers that copy the labels and weights into
  memory the call owns (the kernels index with the labels, and a caller's buffer may
  share memory with the gradient or be changed by another thread meanwhile),
  validate the copy, compute the "mean" denominator, split the rows into fixed
  blocks and run the blocks on OpenMP threads with the GIL released.
* ``cysoftmax/_api.py`` -- the public functions: argument checking, conversion,
  output allocation, documentation.

Threads and determinism: a batch of N rows is cut into blocks whose size depends
only on the number of classes; every block writes its own rows and its own
partial loss sum, and the partial sums are added in block order afterwards.  So
the results are bitwise identical for any thread count.  Blocks are handed out
dynamically (a thread that lost its core to another process does not hold up the
others' blocks), and a thread is started only per ``_THREAD_ELEMS`` scores, so
small problems run on the calling thread.  The thread count for ``num_threads=None``
is fixed at import (``OMP_NUM_THREADS`` or the usable CPUs), requests beyond the
usable CPUs are capped, and a process created by ``fork()`` runs everything on one
thread (GNU OpenMP's pool does not survive a fork).
"""

from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from libc.math cimport NAN
from cython cimport floating
from cython.parallel cimport prange

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from "src/cysm_kernels.h" nogil:
    ctypedef struct cysm_sce_args_f32:
        const float *scores
        float *grad
        const int64_t *labels
        Py_ssize_t n_classes
        int64_t ignore_index
        const double *weight
        const float *grad_offset
        double smooth_weight
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
        double smooth_weight
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

__all__ = [
    "REDUCTION_NONE", "REDUCTION_MEAN", "REDUCTION_SUM", "LabelOutOfRange",
    "targets", "supported_targets", "current_target", "default_target", "set_target",
    "openmp_enabled", "default_num_threads", "max_num_threads", "forked_child",
    "finish_loss",
    "sce_float32", "sce_float64", "sce_fast", "softmax_float32", "softmax_float64",
]

cdef enum:
    # A block holds about this many scores; blocks are the unit of threading.
    _BLOCK_ELEMS = 4096
    # A thread is worth starting for at least this many scores (~5-10 us of work).
    _THREAD_ELEMS = 16384
    # Rows of small-C blocks come in multiples of the widest vector of rows.
    _ROW_ALIGN = 16
    # Classes at or below which the C kernels work on a vector of rows at a time
    # (CYSM_SMALL_C in src/cysm_kernels.c).
    _SMALL_C = 16

cdef enum:
    RED_NONE = 0
    RED_MEAN = 1
    RED_SUM = 2

REDUCTION_NONE = RED_NONE
REDUCTION_MEAN = RED_MEAN
REDUCTION_SUM = RED_SUM

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


def default_target():
    """The target chosen at import: the widest of avx512, avx2, baseline the CPU runs.

    (``avx2-w64`` runs the AVX-512 kernels' 64-byte lane logic on AVX2 hardware; it is
    slower than ``avx2`` and exists so that this logic is tested on any AVX2 machine.)
    """
    usable = supported_targets()
    for name in ("avx512", "avx2"):
        if name in usable:
            return name
    return "baseline"


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


# Threads for num_threads=None, fixed at import (see _initial_num_threads), and whether
# this process is a child created by fork() (then every kernel runs on one thread).
cdef int _default_threads = 1
cdef bint _forked_child = False
# More threads than this are never started: the usable CPUs, or OMP_NUM_THREADS if larger.
cdef int _max_threads = 1


def default_num_threads():
    """Threads used when ``num_threads=None``.

    The first value of ``OMP_NUM_THREADS`` when it is a positive integer, else the
    number of CPUs this process may run on; read once, at import.  Other libraries
    changing the OpenMP runtime's setting (``omp_set_num_threads``, as
    ``torch.set_num_threads`` does) do not change it.  1 without OpenMP, and in a
    process created by ``fork()`` (see ``forked_child``).
    """
    return 1 if _forked_child else _default_threads


def forked_child():
    """Whether this process was created by ``fork()`` after cysoftmax was imported.

    GNU OpenMP's thread pool does not survive ``fork()``: a parallel region in the
    child can hang forever.  So in such a child every kernel runs on one thread,
    whatever ``num_threads`` says; results are bitwise the same on any thread count.
    """
    return bool(_forked_child)


def _usable_cpus():
    import os
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _initial_num_threads(usable_cpus):
    import os
    if not cysm_openmp_enabled():
        return 1
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if first.isdigit() and 0 < int(first) < 65536:
        return int(first)
    return usable_cpus


def max_num_threads():
    """The most threads a call starts: more than the usable CPUs (or than
    ``OMP_NUM_THREADS``, if larger) would only slow it down."""
    return 1 if _forked_child else _max_threads


def _after_fork_in_child():
    global _forked_child
    _forked_child = True


# ------------------------------------------------------------ the blocks

cdef inline Py_ssize_t _rows_per_block(Py_ssize_t n_classes) noexcept nogil:
    cdef Py_ssize_t rows = _BLOCK_ELEMS // n_classes
    if rows < 1:
        rows = 1
    if n_classes <= _SMALL_C:
        rows = (rows + _ROW_ALIGN - 1) // _ROW_ALIGN * _ROW_ALIGN
    return rows


cdef inline int _threads_for(Py_ssize_t n_blocks, Py_ssize_t n_elems, int num_threads) noexcept nogil:
    """Threads for a problem: at most one per block and per _THREAD_ELEMS scores."""
    cdef Py_ssize_t by_work = n_elems // _THREAD_ELEMS
    if _forked_child or not cysm_openmp_enabled():
        return 1
    num_threads = min(num_threads, _max_threads)
    return <int>max(1, min(<Py_ssize_t>num_threads, min(n_blocks, by_work)))


cdef inline void _sce_block(const cysm_kernel_table *table, const void *args, bint is_float,
                            Py_ssize_t block, Py_ssize_t rows_per_block, Py_ssize_t n_rows,
                            double *row_loss, double *partials) noexcept nogil:
    cdef Py_ssize_t r0 = block * rows_per_block
    cdef Py_ssize_t r1 = min(r0 + rows_per_block, n_rows)
    if is_float:
        table.sce_f32(<const cysm_sce_args_f32 *>args, r0, r1, row_loss, &partials[block])
    else:
        table.sce_f64(<const cysm_sce_args_f64 *>args, r0, r1, row_loss, &partials[block])


cdef enum SceStatus:
    SCE_OK = 0
    SCE_BAD_LABEL = 1
    SCE_NO_MEMORY = 2


cdef SceStatus _sce_raw(bint is_float, const void *scores, void *grad, Py_ssize_t n_rows,
                        Py_ssize_t n_classes, const int64_t *labels, const double *weight,
                        int64_t ignore_index, double smoothing, int reduction, int num_threads,
                        double *row_loss, double *total_out, double *denominator_out,
                        Py_ssize_t *bad_out, int64_t *bad_value_out) noexcept nogil:
    """Loss (+ gradient) of a C-contiguous (n_rows, n_classes) batch.

    Fills *total_out (sum of the row losses, in block order), *denominator_out (the
    "mean" denominator) and row_loss[i] when row_loss is not NULL.

    Memory safety: the kernels index the scores, the gradient and the weights with
    the labels, and read labels and weights after they have begun writing the
    gradient.  The caller's label and weight buffers may share memory with the
    gradient, and another thread may change them while this runs.  So both are first
    copied into one buffer owned by this call, and only the copies are checked and
    read: a label is range-checked in the very memory the kernels index with.
    """
    cdef Py_ssize_t i, block, n_blocks, rows_per_block
    cdef int64_t y
    cdef double denominator = 0.0, total = 0.0, grad_scale, weight_mean = 1.0, w_i
    cdef double smooth_each = smoothing / n_classes
    cdef int64_t *own_labels
    cdef double *own_weight = NULL
    cdef double *partials
    cdef void *offset = NULL
    cdef char *owned
    cdef cysm_sce_args_f32 a32
    cdef cysm_sce_args_f64 a64
    cdef const void *args
    cdef const cysm_kernel_table *table = _table
    cdef int n_threads

    total_out[0] = 0.0
    denominator_out[0] = 0.0
    if n_rows == 0:
        return SCE_OK
    rows_per_block = _rows_per_block(n_classes)
    n_blocks = (n_rows + rows_per_block - 1) // rows_per_block
    # one allocation: labels, weights, smoothing offsets, per-block sums (8-byte items)
    owned = <char *>malloc((n_rows + 2 * n_classes + n_blocks) * 8)
    if owned == NULL:
        return SCE_NO_MEMORY
    own_labels = <int64_t *>owned
    partials = <double *>(owned + (n_rows + 2 * n_classes) * 8)
    memcpy(own_labels, labels, n_rows * 8)
    if weight != NULL:
        own_weight = <double *>(owned + n_rows * 8)
        memcpy(own_weight, weight, n_classes * 8)

    # labels: range check and the "mean" denominator, in row order
    for i in range(n_rows):
        y = own_labels[i]
        if y == ignore_index:
            continue
        if y < 0 or y >= n_classes:
            bad_out[0] = i
            bad_value_out[0] = y
            free(owned)
            return SCE_BAD_LABEL
        denominator += own_weight[y] if own_weight != NULL else 1.0
    denominator_out[0] = denominator
    if own_weight != NULL and smoothing > 0:
        # the mean weight, as a sum of w_i / C: no overflow for weights near DBL_MAX
        weight_mean = 0.0
        for i in range(n_classes):
            weight_mean += own_weight[i] / n_classes
    grad_scale = 1.0
    if reduction == RED_MEAN:
        # a zero total weight (every target weighted 0): the mean is NaN, and so is the
        # gradient of every non-ignored row (as PyTorch)
        grad_scale = 1.0 / denominator if denominator != 0 else NAN

    if smoothing > 0 and grad != NULL:
        offset = owned + (n_rows + n_classes) * 8
        for i in range(n_classes):
            w_i = own_weight[i] if own_weight != NULL else 1.0
            if is_float:
                (<float *>offset)[i] = <float>(grad_scale * smooth_each * w_i)
            else:
                (<double *>offset)[i] = grad_scale * smooth_each * w_i
    if is_float:
        a32.scores = <const float *>scores
        a32.grad = <float *>grad
        a32.labels = own_labels
        a32.n_classes = n_classes
        a32.ignore_index = ignore_index
        a32.weight = own_weight
        a32.grad_offset = <const float *>offset
        a32.smooth_weight = smoothing * weight_mean
        a32.smoothing = smoothing
        a32.grad_scale = grad_scale
        args = &a32
    else:
        a64.scores = <const double *>scores
        a64.grad = <double *>grad
        a64.labels = own_labels
        a64.n_classes = n_classes
        a64.ignore_index = ignore_index
        a64.weight = own_weight
        a64.grad_offset = <const double *>offset
        a64.smooth_weight = smoothing * weight_mean
        a64.smoothing = smoothing
        a64.grad_scale = grad_scale
        args = &a64

    n_threads = _threads_for(n_blocks, n_rows * n_classes, num_threads)
    if n_threads > 1:
        for block in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
            _sce_block(table, args, is_float, block, rows_per_block, n_rows, row_loss, partials)
    else:
        for block in range(n_blocks):
            _sce_block(table, args, is_float, block, rows_per_block, n_rows, row_loss, partials)
    for block in range(n_blocks):
        total += partials[block]
    free(owned)
    total_out[0] = total
    return SCE_OK


cdef object _sce(const floating[:, ::1] scores, const int64_t[::1] labels, object weight,
                 int64_t ignore_index, double smoothing, int reduction,
                 floating[:, ::1] grad, int num_threads):
    cdef Py_ssize_t n_rows = scores.shape[0], n_classes = scores.shape[1], bad = -1
    cdef int64_t bad_value = 0
    cdef const double[::1] w
    cdef const double *w_ptr = NULL
    cdef double[::1] row_loss_view
    cdef double *row_loss = NULL
    cdef double total = 0.0, denominator = 0.0
    cdef SceStatus status
    cdef const void *scores_ptr = &scores[0, 0] if n_rows > 0 else NULL
    cdef void *grad_ptr = NULL
    if weight is not None:
        w = weight
        w_ptr = &w[0]
    if grad is not None and n_rows > 0:
        grad_ptr = &grad[0, 0]
        _check_overlap(scores_ptr, grad_ptr, n_rows * n_classes * sizeof(floating))
    row_loss_array = None
    if reduction == RED_NONE:
        row_loss_array = np.empty(n_rows, dtype=np.float64)
        if n_rows > 0:
            row_loss_view = row_loss_array
            row_loss = &row_loss_view[0]
    with nogil:
        status = _sce_raw(floating is float, scores_ptr, grad_ptr, n_rows, n_classes,
                          &labels[0] if n_rows > 0 else NULL, w_ptr, ignore_index, smoothing,
                          reduction, num_threads, row_loss, &total, &denominator, &bad,
                          &bad_value)
    if status == SCE_BAD_LABEL:
        raise LabelOutOfRange(bad, bad_value)
    if status == SCE_NO_MEMORY:
        raise MemoryError()
    return total, denominator, row_loss_array


cdef inline bint _ranges_overlap(const void *a, size_t a_bytes, const void *b,
                                 size_t b_bytes) noexcept:
    cdef const char *ca = <const char *>a
    cdef const char *cb = <const char *>b
    return ca < cb + b_bytes and cb < ca + a_bytes


cdef inline int _check_overlap(const void *a, const void *b, size_t nbytes) except -1:
    """out may be the scores buffer itself, but must not partly overlap it."""
    if a != b and _ranges_overlap(a, nbytes, b, nbytes):
        raise ValueError("out overlaps scores without being the same array")
    return 0


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


# ------------------------------------------------------------ the fast path

cdef dict _REDUCTION_CODES = {"none": RED_NONE, "mean": RED_MEAN, "sum": RED_SUM}


cdef inline bint _plain_array(object a, int typenum) noexcept:
    """An exact ndarray of that type, aligned, C-contiguous and in native byte order."""
    return (cnp.PyArray_CheckExact(a) and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum
            and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>a)
            and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a))


def sce_fast(scores, labels, reduction, weight, ignore_index, label_smoothing, out, num_threads,
             bint with_grad):
    """The common case without any conversion: (loss, grad), or None when not applicable.

    Applies to 2-D C-contiguous native float32/float64 scores, 1-D int64 labels, no
    weight, no label smoothing, a plain int ignore_index and num_threads, and an ``out``
    that is a matching writeable C-contiguous array (or None).  (Labels may share memory
    with ``out``: the kernels read a private copy of them.)
    Anything else, and any invalid label, returns None and the caller takes the general
    path (which converts, or raises the right error).
    """
    cdef int typenum, code, n_threads
    cdef Py_ssize_t n_rows, n_classes, bad = -1
    cdef int64_t bad_value = 0
    cdef double total = 0.0, denominator = 0.0
    cdef int64_t ignore
    cdef SceStatus status
    cdef cnp.ndarray s, y, g = None, row_loss_array = None
    cdef void *grad_ptr = NULL
    cdef double *row_loss = NULL
    if weight is not None or type(ignore_index) is not int:
        return None
    if not ((type(label_smoothing) is float or type(label_smoothing) is int) and label_smoothing == 0):
        return None
    if type(reduction) is not str or reduction not in _REDUCTION_CODES:
        return None
    code = _REDUCTION_CODES[reduction]
    if num_threads is None:
        n_threads = _default_threads
    elif type(num_threads) is int and 0 < num_threads < 65536:
        n_threads = num_threads
    else:
        return None
    if not (cnp.PyArray_CheckExact(scores) and cnp.PyArray_NDIM(<cnp.ndarray>scores) == 2):
        return None
    s = <cnp.ndarray>scores
    typenum = cnp.PyArray_TYPE(s)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return None
    if not _plain_array(s, typenum) or not _plain_array(labels, cnp.NPY_INT64):
        return None
    y = <cnp.ndarray>labels
    n_rows = cnp.PyArray_DIM(s, 0)
    n_classes = cnp.PyArray_DIM(s, 1)
    if (cnp.PyArray_NDIM(y) != 1 or cnp.PyArray_DIM(y, 0) != n_rows or n_classes == 0
            or n_rows == 0 or not -(2**63) <= ignore_index < 2**63):
        return None
    ignore = ignore_index
    if with_grad:
        if out is None:
            g = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(s), typenum, 0)
        elif (_plain_array(out, typenum) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)
              and cnp.PyArray_NDIM(<cnp.ndarray>out) == 2
              and cnp.PyArray_DIM(<cnp.ndarray>out, 0) == n_rows
              and cnp.PyArray_DIM(<cnp.ndarray>out, 1) == n_classes):
            g = <cnp.ndarray>out
        else:
            return None
        grad_ptr = cnp.PyArray_DATA(g)
        _check_overlap(cnp.PyArray_DATA(s), grad_ptr, cnp.PyArray_NBYTES(s))
    if code == RED_NONE:
        row_loss_array = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(y), cnp.NPY_FLOAT64, 0)
        row_loss = <double *>cnp.PyArray_DATA(row_loss_array)
    with nogil:
        status = _sce_raw(typenum == cnp.NPY_FLOAT32, cnp.PyArray_DATA(s), grad_ptr, n_rows,
                          n_classes, <const int64_t *>cnp.PyArray_DATA(y), NULL, ignore, 0.0,
                          code, n_threads, row_loss, &total, &denominator, &bad, &bad_value)
    if status == SCE_NO_MEMORY:
        raise MemoryError()
    if status != SCE_OK:
        return None
    return _finish_loss(total, denominator, code, row_loss_array, typenum == cnp.NPY_FLOAT32), g


cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void *data, cnp.dtype descr, object base)


cdef inline object _scalar(double value, int typenum):
    """A numpy float64 or float32 scalar (+-inf beyond float32's range, silently)."""
    cdef float value32 = <float>value
    if typenum == cnp.NPY_FLOAT64:
        return PyArray_Scalar(&value, cnp.PyArray_DescrFromType(typenum), None)
    return PyArray_Scalar(&value32, cnp.PyArray_DescrFromType(typenum), None)


cdef object _losses_as_float32(const double[::1] values):
    """Float64 losses as a new float32 array (+-inf beyond float32's range, silently,
    where NumPy's cast would warn of an overflow)."""
    cdef Py_ssize_t i, n = values.shape[0]
    out = np.empty(n, dtype=np.float32)
    cdef float[::1] o = out
    for i in range(n):
        o[i] = <float>values[i]
    return out


cdef object _finish_loss(double total, double denominator, int reduction, object row_loss,
                         bint to_float32):
    """The loss returned to the caller, in the dtype of the scores: the per-row losses
    (``row_loss``, float64), their sum, or the mean.  The mean is NaN when the
    denominator (the summed weight of the rows) is 0: every row ignored, an empty batch
    or weights of 0 on every target (the kernels then make the gradient of the
    non-ignored rows NaN too, as PyTorch does)."""
    if reduction == RED_NONE:
        return _losses_as_float32(row_loss) if to_float32 else row_loss
    if reduction == RED_MEAN:
        total = total / denominator if denominator != 0 else NAN
    return _scalar(total, cnp.NPY_FLOAT32 if to_float32 else cnp.NPY_FLOAT64)


def finish_loss(double total, double denominator, int reduction, row_loss, bint to_float32):
    """The loss from a kernel's sum, denominator and per-row losses (see _finish_loss)."""
    return _finish_loss(total, denominator, reduction, row_loss, to_float32)


# ------------------------------------------------------ softmax, log_softmax

cdef inline void _softmax_block(const cysm_kernel_table *table, const floating *scores,
                                floating *out, Py_ssize_t n_rows, Py_ssize_t n_classes,
                                Py_ssize_t block, Py_ssize_t rows_per_block,
                                bint log_space) noexcept nogil:
    cdef Py_ssize_t r0 = block * rows_per_block
    cdef Py_ssize_t r1 = min(r0 + rows_per_block, n_rows)
    if floating is float:
        table.softmax_f32(scores, out, n_classes, r0, r1, log_space)
    else:
        table.softmax_f64(scores, out, n_classes, r0, r1, log_space)


cdef object _softmax(const floating[:, ::1] scores, floating[:, ::1] out, bint log_space,
                     int num_threads):
    cdef Py_ssize_t n_rows = scores.shape[0], n_classes = scores.shape[1]
    cdef Py_ssize_t block, n_blocks, rows_per_block
    cdef const cysm_kernel_table *table = _table
    cdef int n_threads
    if n_rows == 0:
        return
    _check_overlap(&scores[0, 0], &out[0, 0], n_rows * n_classes * sizeof(floating))
    rows_per_block = _rows_per_block(n_classes)
    n_blocks = (n_rows + rows_per_block - 1) // rows_per_block
    n_threads = _threads_for(n_blocks, n_rows * n_classes, num_threads)
    with nogil:
        if n_threads > 1:
            for block in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
                _softmax_block(table, &scores[0, 0], &out[0, 0], n_rows, n_classes,
                               block, rows_per_block, log_space)
        else:
            for block in range(n_blocks):
                _softmax_block(table, &scores[0, 0], &out[0, 0], n_rows, n_classes,
                               block, rows_per_block, log_space)


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
    set_target(default_target())


_select_initial_target()
_usable = _usable_cpus()
_default_threads = _initial_num_threads(_usable)
_max_threads = max(_default_threads, _usable) if cysm_openmp_enabled() else 1
del _usable


def _register_fork_handler():
    import os
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)


_register_fork_handler()
