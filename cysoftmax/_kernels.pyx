# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True
"""Compiled softmax cross-entropy: the one entry per operation between Python and C.

Design
------
Three layers, each in its own file:

* ``src/cysm_kernels_impl.h`` -- the per-row math in C (``exp`` with an exact
  ``f - max`` difference, the loss with ``log1p`` of the non-maximal mass, the
  gradient ``P_k - 1(y = k)`` with smoothing and weights), compiled once per
  precision and instruction-set target by ``src/cysm_kernels.c``, which also
  computes the gradient's coefficients (``cysm_sce_coefficients``).
* this module -- one entry per operation (``softmax_cross_entropy``, which also
  serves the loss alone, and ``softmax``, which also serves ``log_softmax``).  An
  entry parses the options (their rules live here, in the ``_parse_*`` functions),
  takes plain arrays as they are and hands anything else to ``_validation`` to check
  and convert, copies the labels and weights into memory the call owns (the kernels
  index with the labels, and a caller's buffer may share memory with the gradient
  or be changed by another thread meanwhile), validates the copy, splits the rows
  into fixed blocks, runs them on OpenMP threads with the GIL released and returns
  the finished loss.  Nothing here depends on the precision but a flag: the
  float32/float64 split is in C.
* ``cysoftmax/_api.py`` -- the public functions and their documentation.

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
from libc.math cimport NAN, isfinite
from cython.parallel cimport prange

import operator

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from "src/cysm_kernels.h" nogil:
    enum:
        CYSM_SMALL_C
        CYSM_ROW_ALIGN
        CYSM_REDUCTION_NONE
        CYSM_REDUCTION_MEAN
        CYSM_REDUCTION_SUM

    ctypedef struct cysm_sce_args:
        const void *scores
        void *grad
        const int64_t *labels
        const void *targets
        Py_ssize_t n_classes
        int64_t ignore_index
        const double *weight
        double smoothing
        double z_loss
        double softcap
        double *row_z
        double *row_lse
        double grad_scale
        double z_grad
        double smooth_weight
        const void *grad_offset

    ctypedef struct cysm_sce_sums:
        double ce
        double z
        Py_ssize_t bad_row
        int no_memory

    ctypedef void (*cysm_sce_fn)(const cysm_sce_args *, Py_ssize_t, Py_ssize_t, double *,
                                 cysm_sce_sums *) noexcept nogil
    ctypedef void (*cysm_softmax_fn)(const void *, void *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                     int) noexcept nogil

    ctypedef struct cysm_kernel_table:
        const char *name
        int vector_bytes
        int (*supported)() noexcept nogil
        cysm_sce_fn sce[2]
        cysm_softmax_fn softmax[2]

    void cysm_sce_coefficients(cysm_sce_args *a, int is_f64, int reduction, double denominator,
                               double z_denominator, void *offset_buf)
    int cysm_n_targets()
    const cysm_kernel_table *cysm_target(int i)
    int cysm_openmp_enabled()

cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void *data, cnp.dtype descr, object base)

from . import _validation

__all__ = [
    "targets", "supported_targets", "current_target", "default_target", "set_target",
    "openmp_enabled", "default_num_threads", "max_num_threads", "forked_child",
    "softmax_cross_entropy", "softmax",
]

cdef enum:
    # A block holds about this many scores; blocks are the unit of threading.
    _BLOCK_ELEMS = 4096
    # A thread is worth starting for at least this many scores (~5-10 us of work).
    _THREAD_ELEMS = 16384
    # More threads than this are never asked for, whatever num_threads says.
    _THREADS_LIMIT = 1 << 16
    # A call's own buffer (labels, weights, ...) of up to this many 8-byte items is on the stack.
    _STACK_ITEMS = 512

cdef const cysm_kernel_table *_table = cysm_target(0)


# ---------------------------------------------------------------- targets

def targets():
    """Names of the instruction-set targets compiled into this build, baseline first."""
    return [cysm_target(i).name.decode() for i in range(cysm_n_targets())]


def supported_targets():
    """Names of the compiled targets that the running CPU can execute."""
    return [cysm_target(i).name.decode() for i in range(cysm_n_targets())
            if cysm_target(i).supported()]


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
            if not cysm_target(i).supported():
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


# ------------------------------------------------------------ the options

cdef struct Options:
    int reduction          # CYSM_REDUCTION_*
    int64_t ignore_index
    double smoothing       # in [0, 1]
    double z_loss          # >= 0, finite
    double softcap         # > 0 and finite, or 0 for none
    int num_threads        # >= 1, before the cap at the usable CPUs

cdef dict _REDUCTIONS = {"none": CYSM_REDUCTION_NONE, "mean": CYSM_REDUCTION_MEAN,
                         "sum": CYSM_REDUCTION_SUM}


cdef int _parse_reduction(object reduction) except -1:
    code = _REDUCTIONS.get(reduction) if isinstance(reduction, str) else None
    if code is None:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return code


cdef object _as_integer(object value, str name, str what):
    """value as a Python int (an int, NumPy integer or __index__ object; not a bool)."""
    if type(value) is int:
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be {what}, got a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be {what}, got {value!r}") from None


cdef int64_t _parse_ignore_index(object ignore_index) except? -1:
    ignore_index = _as_integer(ignore_index, "ignore_index", "an integer")
    if not -(2**63) <= ignore_index < 2**63:
        raise ValueError(f"ignore_index must fit in int64, got {ignore_index}")
    return ignore_index


cdef double _parse_smoothing(object label_smoothing) except? -1:
    cdef double eps
    original = label_smoothing
    if type(label_smoothing) is not float:
        if isinstance(label_smoothing, np.ndarray) and label_smoothing.ndim == 0:
            label_smoothing = label_smoothing[()]  # a 0-d array: its scalar
        if isinstance(label_smoothing, (bool, np.bool_)) or not isinstance(
            label_smoothing, (int, float, np.integer, np.floating)
        ):
            raise TypeError(f"label_smoothing must be a real number, got {original!r}")
        try:
            label_smoothing = float(label_smoothing)
        except OverflowError:
            raise ValueError(f"label_smoothing must be in [0, 1], got {original!r}") from None
    eps = label_smoothing
    if not 0.0 <= eps <= 1.0:  # (NaN too)
        raise ValueError(f"label_smoothing must be in [0, 1], got {original!r}")
    return eps


cdef double _parse_nonnegative(object value, str name, bint positive) except? -1:
    """A finite real number >= 0 (> 0 when positive), as a double."""
    cdef double x
    original = value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]  # a 0-d array: its scalar
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{name} must be a real number, got {original!r}")
    try:
        x = float(value)
    except OverflowError:
        x = float("inf")
    if not (isfinite(x) and (x > 0 if positive else x >= 0)):  # (NaN too)
        raise ValueError(
            f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {original!r}")
    return x


cdef double _parse_softcap(object softcap) except? -1:
    """None (0: no cap) or a finite c > 0."""
    if softcap is None:
        return 0.0
    return _parse_nonnegative(softcap, "softcap", True)


cdef bint _parse_flag(object value, str name) except? -1:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


cdef int _parse_num_threads(object num_threads) except -1:
    """Threads asked for: None is the default (fixed at import), else a positive int."""
    if num_threads is None:
        return 1 if _forked_child else _default_threads
    num_threads = _as_integer(num_threads, "num_threads", "None or a positive integer")
    if num_threads < 1:
        raise ValueError(f"num_threads must be None or a positive integer, got {num_threads}")
    return min(num_threads, _THREADS_LIMIT)


# ------------------------------------------------------------ arrays

cdef inline bint _plain_array(object a, int typenum) noexcept:
    """An exact ndarray of that type, aligned, C-contiguous and in native byte order."""
    return (cnp.PyArray_CheckExact(a) and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum
            and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>a)
            and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a))


cdef cnp.ndarray _scores(object scores):
    """scores as a native float32/float64 ndarray with ndim >= 1 and C >= 1."""
    cdef int typenum
    if cnp.PyArray_CheckExact(scores):
        typenum = cnp.PyArray_TYPE(<cnp.ndarray>scores)
        if ((typenum == cnp.NPY_FLOAT32 or typenum == cnp.NPY_FLOAT64)
                and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>scores)
                and cnp.PyArray_NDIM(<cnp.ndarray>scores) >= 1
                and cnp.PyArray_DIM(<cnp.ndarray>scores, cnp.PyArray_NDIM(<cnp.ndarray>scores) - 1) > 0):
            return <cnp.ndarray>scores
    return _validation.as_scores(scores)


cdef tuple _batch_shape(cnp.ndarray s):
    """scores.shape[:-1]."""
    return (<object>s).shape[:cnp.PyArray_NDIM(s) - 1]


cdef cnp.ndarray _rows(cnp.ndarray a, Py_ssize_t n_classes):
    """a (..., C) as aligned C-contiguous 2-D rows (a itself when it is already that;
    a copy when a is not contiguous or its data are not aligned for its dtype)."""
    if cnp.PyArray_NDIM(a) == 2 and cnp.PyArray_ISCARRAY_RO(a):
        return a
    return np.require(a, requirements="CA").reshape(-1, n_classes)


cdef cnp.ndarray _out(object out, cnp.ndarray s):
    """The output buffer: new when out is None, else out if it matches s (checked)."""
    cdef int typenum = cnp.PyArray_TYPE(s)
    if out is None:
        return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(s), cnp.PyArray_DIMS(s), typenum, 0)
    if (_plain_array(out, typenum) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)
            and cnp.PyArray_SAMESHAPE(<cnp.ndarray>out, s)):
        return <cnp.ndarray>out
    return _validation.check_out(out, s)


cdef inline bint _ranges_overlap(const void *a, size_t a_bytes, const void *b,
                                 size_t b_bytes) noexcept:
    cdef const char *ca = <const char *>a
    cdef const char *cb = <const char *>b
    return ca < cb + b_bytes and cb < ca + a_bytes


cdef inline int _check_overlap(cnp.ndarray rows, cnp.ndarray out) except -1:
    """out may be the scores' buffer itself (in place), but must not partly overlap it."""
    cdef const void *a = cnp.PyArray_DATA(rows)
    cdef const void *b = cnp.PyArray_DATA(out)
    cdef size_t nbytes = cnp.PyArray_NBYTES(rows)
    if a != b and _ranges_overlap(a, nbytes, b, nbytes):
        raise ValueError("out overlaps scores without being the same array")
    return 0


# ------------------------------------------------------------ the blocks

cdef inline Py_ssize_t _rows_per_block(Py_ssize_t n_classes) noexcept nogil:
    cdef Py_ssize_t rows = _BLOCK_ELEMS // n_classes
    if rows < 1:
        rows = 1
    if n_classes <= CYSM_SMALL_C:
        rows = (rows + CYSM_ROW_ALIGN - 1) // CYSM_ROW_ALIGN * CYSM_ROW_ALIGN
    return rows


cdef inline int _threads_for(Py_ssize_t n_blocks, Py_ssize_t n_elems, int num_threads) noexcept nogil:
    """Threads for a problem: at most one per block and per _THREAD_ELEMS scores."""
    cdef Py_ssize_t by_work = n_elems // _THREAD_ELEMS
    if _forked_child or not cysm_openmp_enabled():
        return 1
    num_threads = min(num_threads, _max_threads)
    return <int>max(1, min(<Py_ssize_t>num_threads, min(n_blocks, by_work)))


cdef inline void _sce_block(cysm_sce_fn kernel, const cysm_sce_args *args, Py_ssize_t block,
                            Py_ssize_t rows_per_block, Py_ssize_t n_rows, double *row_loss,
                            cysm_sce_sums *partials) noexcept nogil:
    cdef Py_ssize_t r0 = block * rows_per_block
    cdef Py_ssize_t r1 = min(r0 + rows_per_block, n_rows)
    kernel(args, r0, r1, row_loss, &partials[block])


cdef inline void _release(char *owned, double *stack_buffer) noexcept nogil:
    if owned != <char *>stack_buffer:
        free(owned)


cdef enum SceStatus:
    SCE_OK = 0
    SCE_BAD_LABEL = 1
    SCE_NO_MEMORY = 2
    SCE_BAD_WEIGHT = 3
    SCE_BAD_TARGET = 4


cdef struct SceTotals:
    double ce              # sum of the rows' cross-entropy parts (block order)
    double z               # sum of the rows' z-loss parts
    double denominator     # "mean" denominator of the cross-entropy part
    double z_denominator   # ... and of the z-loss part: the rows counted
    Py_ssize_t bad         # row of a bad label or target
    int64_t bad_value      # that label


cdef SceStatus _sce_raw(bint is_f64, const void *scores, void *grad, const void *targets,
                        Py_ssize_t n_rows, Py_ssize_t n_classes, const int64_t *labels,
                        const double *weight, const Options *opt, double *row_loss,
                        double *row_z, double *row_lse, SceTotals *totals) noexcept nogil:
    """Loss (+ gradient) of a C-contiguous (n_rows, n_classes) batch.

    Fills *totals, and row_loss[i], row_z[i], row_lse[i] where they are not NULL.
    `targets` (probability targets, the scores' shape) or `labels` (class indices)
    is NULL.

    Memory safety: the kernels index the scores, the gradient and the weights with
    the labels, and read labels and weights after they have begun writing the
    gradient.  The caller's label and weight buffers may share memory with the
    gradient, and another thread may change them while this runs.  So both are first
    copied into one buffer owned by this call, and only the copies are checked and
    read: a label is range-checked in the very memory the kernels index with.
    Probability targets are only read as values, like the scores (the caller has
    made sure they do not overlap the gradient); the kernels check each as they read it.
    """
    cdef Py_ssize_t i, block, n_blocks, rows_per_block
    cdef int64_t y
    cdef double denominator = 0.0, counted = 0.0
    cdef cysm_sce_args args
    cdef cysm_sce_fn kernel = _table.sce[1 if is_f64 else 0]
    cdef char *owned
    cdef size_t owned_bytes, head_bytes
    cdef double stack_buffer[_STACK_ITEMS]
    cdef cysm_sce_sums *partials
    cdef int n_threads

    totals.ce = totals.z = totals.denominator = totals.z_denominator = 0.0
    totals.bad = -1
    totals.bad_value = 0
    if n_rows == 0:
        return SCE_OK
    rows_per_block = _rows_per_block(n_classes)
    n_blocks = (n_rows + rows_per_block - 1) // rows_per_block
    # one buffer: labels, weights, smoothing offsets (8-byte items), block sums (on the
    # stack for small problems, where a malloc is a noticeable part of the call)
    head_bytes = (n_rows + 2 * n_classes) * 8
    owned_bytes = head_bytes + n_blocks * sizeof(cysm_sce_sums)
    owned = <char *>stack_buffer if owned_bytes <= sizeof(stack_buffer) else <char *>malloc(owned_bytes)
    if owned == NULL:
        return SCE_NO_MEMORY
    partials = <cysm_sce_sums *>(owned + head_bytes)
    args.labels = NULL
    if labels != NULL:
        args.labels = <int64_t *>owned
        memcpy(owned, labels, n_rows * 8)
    args.weight = NULL
    if weight != NULL:
        args.weight = <double *>(owned + n_rows * 8)
        memcpy(owned + n_rows * 8, weight, n_classes * 8)
        for i in range(n_classes):  # (checked by the caller too; this is the copy used)
            if not isfinite(args.weight[i]):
                _release(owned, stack_buffer)
                return SCE_BAD_WEIGHT

    if labels != NULL:
        # labels: range check and the "mean" denominators, in row order, on the copies
        for i in range(n_rows):
            y = args.labels[i]
            if y == opt.ignore_index:
                continue
            if y < 0 or y >= n_classes:
                totals.bad = i
                totals.bad_value = y
                _release(owned, stack_buffer)
                return SCE_BAD_LABEL
            denominator += args.weight[y] if args.weight != NULL else 1.0
            counted += 1.0
    else:  # probability targets: every row counts once (PyTorch's "mean")
        denominator = counted = <double>n_rows
    totals.denominator = denominator
    totals.z_denominator = counted

    args.scores = scores
    args.grad = grad
    args.targets = targets
    args.n_classes = n_classes
    args.ignore_index = opt.ignore_index
    args.smoothing = opt.smoothing
    args.z_loss = opt.z_loss
    args.softcap = opt.softcap
    args.row_z = row_z
    args.row_lse = row_lse
    cysm_sce_coefficients(&args, is_f64, opt.reduction, denominator, counted,
                          owned + (n_rows + n_classes) * 8)

    n_threads = _threads_for(n_blocks, n_rows * n_classes, opt.num_threads)
    if n_threads > 1:
        for block in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
            _sce_block(kernel, &args, block, rows_per_block, n_rows, row_loss, partials)
    else:
        for block in range(n_blocks):
            _sce_block(kernel, &args, block, rows_per_block, n_rows, row_loss, partials)
    for block in range(n_blocks):
        if partials[block].no_memory:
            _release(owned, stack_buffer)
            return SCE_NO_MEMORY
        if partials[block].bad_row >= 0:
            totals.bad = partials[block].bad_row
            _release(owned, stack_buffer)
            return SCE_BAD_TARGET
        totals.ce += partials[block].ce
        totals.z += partials[block].z
    _release(owned, stack_buffer)
    return SCE_OK


# ------------------------------------------------------------ the loss

cdef inline object _scalar(double value, bint is_f64):
    """A numpy float64 or float32 scalar (+-inf beyond float32's range, silently)."""
    cdef float value32 = <float>value
    if is_f64:
        return PyArray_Scalar(&value, cnp.PyArray_DescrFromType(cnp.NPY_FLOAT64), None)
    return PyArray_Scalar(&value32, cnp.PyArray_DescrFromType(cnp.NPY_FLOAT32), None)


cdef object _losses_as_float32(cnp.ndarray values):
    """Float64 losses as a new float32 array (+-inf beyond float32's range, silently,
    where NumPy's cast would warn of an overflow)."""
    cdef Py_ssize_t i, n = cnp.PyArray_SIZE(values)
    cdef const double *v = <const double *>cnp.PyArray_DATA(values)
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(values), cnp.NPY_FLOAT32, 0)
    cdef float *o = <float *>cnp.PyArray_DATA(out)
    for i in range(n):
        o[i] = <float>v[i]
    return out


cdef object _per_row(object values, bint is_f64, cnp.ndarray s):
    """Per-row float64 results in the scores' dtype and batch shape."""
    if not is_f64:
        values = _losses_as_float32(values)
    if cnp.PyArray_NDIM(s) != 2:
        values = values.reshape(_batch_shape(s))
    return values


cdef inline double _mean(double total, double denominator) noexcept:
    """total / denominator; NaN for a denominator of 0 (no rows, or no target weight)."""
    return total / denominator if denominator != 0 else NAN


def softmax_cross_entropy(scores, labels, reduction, weight, ignore_index, label_smoothing,
                          z_loss, softcap, return_z_loss, return_lse, out, num_threads,
                          bint with_grad, bint wide=False):
    """(loss, grad, z, lse) of ``cysoftmax.softmax_cross_entropy``: grad is None unless
    with_grad, z (the z-loss part) and lse (per row) are None unless asked for.
    ``wide``: the results (loss, z, lse) stay float64, as the kernels compute them,
    instead of being rounded to the scores' dtype.

    The arguments are those of the public function, unchecked: each is checked here
    (the options) or by ``_validation`` (arrays that are not plain already), in the
    order scores, reduction, ignore_index, label_smoothing, z_loss, softcap,
    return_z_loss, return_lse, num_threads, labels, weight, out.

    The loss: "sum" adds the rows' losses (cross-entropy plus z-loss), "mean" divides
    the cross-entropy parts by the summed target weight of the counted rows and the
    z-loss parts by their number (with probability targets both by the row count),
    "none" returns each row's loss.
    """
    cdef Options opt
    cdef cnp.ndarray s, rows, y = None, t = None, t_rows = None, w = None
    cdef cnp.ndarray grad = None, grad_rows = None, row_loss = None, row_z = None, row_lse = None
    cdef Py_ssize_t n_rows, n_classes
    cdef SceTotals totals
    cdef const double *w_ptr = NULL
    cdef const int64_t *y_ptr = NULL
    cdef const void *t_ptr = NULL
    cdef double *row_loss_ptr = NULL
    cdef double *row_z_ptr = NULL
    cdef double *row_lse_ptr = NULL
    cdef void *grad_ptr = NULL
    cdef SceStatus status
    cdef bint is_f64, want_z, want_lse
    cdef double total, z_total

    s = _scores(scores)
    opt.reduction = _parse_reduction(reduction)
    opt.ignore_index = _parse_ignore_index(ignore_index)
    opt.smoothing = _parse_smoothing(label_smoothing)
    opt.z_loss = _parse_nonnegative(z_loss, "z_loss", False)
    opt.softcap = _parse_softcap(softcap)
    want_z = _parse_flag(return_z_loss, "return_z_loss")
    want_lse = _parse_flag(return_lse, "return_lse")
    opt.num_threads = _parse_num_threads(num_threads)
    is_f64 = cnp.PyArray_TYPE(s) == cnp.NPY_FLOAT64
    n_classes = cnp.PyArray_DIM(s, cnp.PyArray_NDIM(s) - 1)
    rows = _rows(s, n_classes)
    n_rows = cnp.PyArray_DIM(rows, 0)
    if (cnp.PyArray_NDIM(s) == 2 and _plain_array(labels, cnp.NPY_INT64)
            and cnp.PyArray_NDIM(<cnp.ndarray>labels) == 1
            and cnp.PyArray_DIM(<cnp.ndarray>labels, 0) == n_rows):
        y = <cnp.ndarray>labels
    else:
        t = _validation.as_targets(labels, (<object>s).shape, (<object>s).dtype)
        if t is None:
            y = _validation.as_labels(labels, _batch_shape(s), n_classes, opt.ignore_index)
    if y is not None:
        y_ptr = <const int64_t *>cnp.PyArray_DATA(y)
    else:
        if opt.ignore_index != -100:  # (PyTorch refuses it too)
            raise ValueError(f"ignore_index (here {opt.ignore_index}) is not supported with "
                             f"probability targets (float labels of the scores' shape); "
                             f"leave it at -100")
        t_rows = t if cnp.PyArray_NDIM(t) == 2 else t.reshape(-1, n_classes)
        t_ptr = cnp.PyArray_DATA(t_rows)
    if weight is not None:
        w = _validation.as_weight(weight, n_classes)
        w_ptr = <const double *>cnp.PyArray_DATA(w)
    if with_grad:
        grad = _out(out, s)
        grad_rows = grad if cnp.PyArray_NDIM(grad) == 2 else grad.reshape(-1, n_classes)
        _check_overlap(rows, grad_rows)
        grad_ptr = cnp.PyArray_DATA(grad_rows)
        if t_ptr != NULL and _ranges_overlap(t_ptr, cnp.PyArray_NBYTES(t_rows), grad_ptr,
                                             cnp.PyArray_NBYTES(grad_rows)):
            raise ValueError("out overlaps labels (the probability targets)")
    if opt.reduction == CYSM_REDUCTION_NONE:
        row_loss = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(rows), cnp.NPY_FLOAT64, 0)
        row_loss_ptr = <double *>cnp.PyArray_DATA(row_loss)
        if want_z:
            row_z = cnp.PyArray_ZEROS(1, cnp.PyArray_DIMS(rows), cnp.NPY_FLOAT64, 0)
            row_z_ptr = <double *>cnp.PyArray_DATA(row_z)
    if want_lse:
        row_lse = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(rows), cnp.NPY_FLOAT64, 0)
        row_lse_ptr = <double *>cnp.PyArray_DATA(row_lse)
    with nogil:
        status = _sce_raw(is_f64, cnp.PyArray_DATA(rows), grad_ptr, t_ptr, n_rows, n_classes,
                          y_ptr, w_ptr, &opt, row_loss_ptr, row_z_ptr, row_lse_ptr, &totals)
    if status == SCE_BAD_LABEL:  # (the value the kernels saw, in their copy)
        _validation.raise_label_range(totals.bad_value, totals.bad, _batch_shape(s), n_classes,
                                      opt.ignore_index)
    if status == SCE_BAD_TARGET:
        _validation.raise_bad_targets(t_rows[totals.bad], totals.bad, _batch_shape(s))
    if status == SCE_BAD_WEIGHT:  # changed by another thread after it was checked
        raise ValueError("weight must be finite (and within float64's range)")
    if status == SCE_NO_MEMORY:
        raise MemoryError()

    z = None
    is_f64 = is_f64 or wide
    if opt.reduction == CYSM_REDUCTION_NONE:
        loss = _per_row(row_loss, is_f64, s)
        if want_z:
            z = _per_row(row_z, is_f64, s)
    else:
        z_total = totals.z
        if opt.reduction == CYSM_REDUCTION_MEAN:
            total = _mean(totals.ce, totals.denominator)
            if opt.z_loss > 0:
                z_total = _mean(totals.z, totals.z_denominator)
                total += z_total
        else:
            total = totals.ce + totals.z
        loss = _scalar(total, is_f64)
        if want_z:
            z = _scalar(z_total, is_f64)
    lse = _per_row(row_lse, is_f64, s) if want_lse else None
    return loss, grad, z, lse


# ------------------------------------------------------ softmax, log_softmax

cdef inline void _softmax_block(cysm_softmax_fn kernel, const void *scores, void *out,
                                Py_ssize_t n_rows, Py_ssize_t n_classes, Py_ssize_t block,
                                Py_ssize_t rows_per_block, bint log_space) noexcept nogil:
    cdef Py_ssize_t r0 = block * rows_per_block
    cdef Py_ssize_t r1 = min(r0 + rows_per_block, n_rows)
    kernel(scores, out, n_classes, r0, r1, log_space)


def softmax(scores, out, num_threads, bint log_space):
    """``cysoftmax.softmax`` (or ``log_softmax``) of unchecked arguments: the result."""
    cdef cnp.ndarray s, rows, result, out_rows
    cdef Py_ssize_t n_rows, n_classes, block, n_blocks, rows_per_block
    cdef cysm_softmax_fn kernel
    cdef const void *x
    cdef void *o
    cdef int n_threads
    s = _scores(scores)
    n_threads = _parse_num_threads(num_threads)
    n_classes = cnp.PyArray_DIM(s, cnp.PyArray_NDIM(s) - 1)
    rows = _rows(s, n_classes)
    result = _out(out, s)
    out_rows = result if cnp.PyArray_NDIM(result) == 2 else result.reshape(-1, n_classes)
    n_rows = cnp.PyArray_DIM(rows, 0)
    if n_rows == 0:
        return result
    _check_overlap(rows, out_rows)
    kernel = _table.softmax[1 if cnp.PyArray_TYPE(s) == cnp.NPY_FLOAT64 else 0]
    x = cnp.PyArray_DATA(rows)
    o = cnp.PyArray_DATA(out_rows)
    rows_per_block = _rows_per_block(n_classes)
    n_blocks = (n_rows + rows_per_block - 1) // rows_per_block
    n_threads = _threads_for(n_blocks, n_rows * n_classes, n_threads)
    with nogil:
        if n_threads > 1:
            for block in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
                _softmax_block(kernel, x, o, n_rows, n_classes, block, rows_per_block,
                               log_space)
        else:
            for block in range(n_blocks):
                _softmax_block(kernel, x, o, n_rows, n_classes, block, rows_per_block,
                               log_space)
    return result


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
