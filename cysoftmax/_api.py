"""The public functions of cysoftmax: argument checking, conversion, outputs.

Every function here validates its arguments (a clear ``TypeError``,
``ValueError`` or ``IndexError`` naming the argument), converts them to what the
compiled kernels take (native-endian float32/float64, C-contiguous rows, int64
labels), allocates the outputs the caller did not pass, and calls
``cysoftmax._kernels`` with the GIL released.  Input arrays are never modified,
except an ``out`` buffer, which may be ``scores`` itself.
"""

from __future__ import annotations

import operator
from typing import Optional, Tuple, Union

import numpy as np

from . import _kernels

__all__ = ["softmax_cross_entropy", "cross_entropy", "softmax", "log_softmax"]

_REDUCTIONS = {
    "none": _kernels.REDUCTION_NONE,
    "mean": _kernels.REDUCTION_MEAN,
    "sum": _kernels.REDUCTION_SUM,
}
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_I64 = np.dtype(np.int64)
_INT64_MAX = np.iinfo(np.int64).max


# ------------------------------------------------------------------ checks

def _refuse_masked(value, name: str, hint: str) -> None:
    """A masked array would silently lose its mask in the conversion: refuse it."""
    # (np.ma is imported lazily by NumPy: look only at ndarray subclasses)
    if isinstance(value, np.ndarray) and type(value) is not np.ndarray and isinstance(
        value, np.ma.MaskedArray
    ):
        raise TypeError(f"{name} is a masked array, whose mask would be ignored; {hint}")


def _asarray(value, name: str, dtype=None) -> np.ndarray:
    """np.asarray, with NumPy's errors for ragged or odd sequences naming the argument."""
    try:
        return np.asarray(value, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{name} could not be converted to an array: {exc}") from None


def _as_scores(scores) -> np.ndarray:
    """scores as a native-endian float32/float64 ndarray with ndim >= 1 and C >= 1."""
    _refuse_masked(scores, "scores", "pass scores.filled(-np.inf) to mask classes")
    arr = scores if type(scores) is np.ndarray else _asarray(scores, "scores")
    dt = arr.dtype
    if dt is not _F64 and dt is not _F32:
        if dt.kind != "f" or dt.itemsize not in (4, 8):
            raise TypeError(
                f"scores must hold float32 or float64 values, got dtype {dt}"
                + (" (convert with scores.astype(np.float64))" if dt.kind in "iub" else "")
            )
        arr = arr.astype(_F32 if dt.itemsize == 4 else _F64)  # byte order, dtype identity
    if arr.ndim == 0:
        raise ValueError("scores must have at least one dimension (..., C); got a 0-d array")
    if arr.shape[-1] == 0:
        raise ValueError(f"scores must have at least one class: shape {arr.shape} has C = 0")
    return arr


def _as_labels(labels, batch_shape: tuple, n_classes: int, ignore_index: int) -> np.ndarray:
    """labels as a flat C-contiguous int64 array with shape batch_shape."""
    _refuse_masked(labels, "labels", "pass labels.filled(ignore_index) to ignore masked rows")
    arr = labels if type(labels) is np.ndarray else _asarray(labels, "labels")
    if arr.dtype.kind == "f" and arr.size and type(labels) is not np.ndarray:
        # a sequence of Python ints that no integer dtype holds (e.g. 0 and 2**63)
        # becomes float64: keep the exact values instead
        arr = _asarray(labels, "labels", dtype=object)
    dt = arr.dtype
    if arr.shape != batch_shape:
        raise ValueError(
            f"labels must have shape scores.shape[:-1] = {batch_shape}, got {arr.shape}"
        )
    if dt is not _I64:
        kind = dt.kind
        if kind == "u" and dt.itemsize == 8 and arr.size and arr.max() > _INT64_MAX:
            pos = int(np.argmax(arr > _INT64_MAX))
            _raise_label_range(arr.reshape(-1)[pos], pos, batch_shape, n_classes, ignore_index)
        if kind == "O":
            arr = _object_labels(arr, batch_shape, n_classes, ignore_index)
        elif kind == "f" and arr.size == 0 and type(labels) is not np.ndarray:
            pass  # an empty Python sequence
        elif kind not in "iu":
            raise TypeError(f"labels must be integers (class indices), got dtype {dt}")
        arr = arr.astype(_I64)
    return np.ascontiguousarray(arr).reshape(-1)


def _object_labels(arr, batch_shape, n_classes, ignore_index) -> np.ndarray:
    """An object array of Python or NumPy integers (any size) as int64, range-checked."""
    values = []
    for v in arr.flat:
        if isinstance(v, (bool, np.bool_)):
            raise TypeError("labels must be integers (class indices), got a bool")
        try:
            values.append(operator.index(v))
        except TypeError:
            raise TypeError(
                f"labels must be integers (class indices), got {type(v).__name__} {v!r}"
            ) from None
    for pos, v in enumerate(values):
        if v != ignore_index and not 0 <= v < n_classes:
            _raise_label_range(values[pos], pos, batch_shape, n_classes, ignore_index)
    return np.array(values, dtype=_I64).reshape(batch_shape)


def _raise_label_range(value, pos, batch_shape, n_classes, ignore_index):
    index = ", ".join(str(int(i)) for i in np.unravel_index(pos, batch_shape))
    where = f"[{index}]" if batch_shape else ""  # one sample: labels is a scalar
    raise IndexError(
        f"labels{where} = {value} is not a class index in [0, {n_classes}) "
        f"and not ignore_index ({ignore_index})"
    )


def _as_weight(weight, n_classes: int) -> Optional[np.ndarray]:
    if weight is None:
        return None
    _refuse_masked(weight, "weight", "pass weight.filled(0) to give masked classes no weight")
    w = _asarray(weight, "weight")
    if w.dtype.kind not in "iuf":
        raise TypeError(f"weight must hold real numbers, got dtype {w.dtype}")
    if w.shape != (n_classes,):
        raise ValueError(f"weight must have shape (C,) = ({n_classes},), got {w.shape}")
    with np.errstate(over="ignore"):  # (a long double beyond float64's range: inf)
        w = np.ascontiguousarray(w, dtype=np.float64)
    if not np.isfinite(w).all():
        raise ValueError("weight must be finite (and within float64's range)")
    return w


def _as_reduction(reduction) -> int:
    code = _REDUCTIONS.get(reduction) if isinstance(reduction, str) else None
    if code is None:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return code


def _as_smoothing(label_smoothing) -> float:
    if isinstance(label_smoothing, np.ndarray) and label_smoothing.ndim == 0:
        label_smoothing = label_smoothing[()]  # a 0-d array: its scalar
    if isinstance(label_smoothing, (bool, np.bool_)) or not isinstance(
        label_smoothing, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"label_smoothing must be a real number, got {label_smoothing!r}")
    try:
        eps = float(label_smoothing)
    except OverflowError:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}") from None
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return eps


def _as_ignore_index(ignore_index) -> int:
    if isinstance(ignore_index, (bool, np.bool_)):
        raise TypeError("ignore_index must be an integer, got a bool")
    try:
        value = operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}") from None
    if not -(2**63) <= value <= _INT64_MAX:
        raise ValueError(f"ignore_index must fit in int64, got {value}")
    return value


def _as_num_threads(num_threads) -> int:
    if num_threads is None:
        return _kernels.default_num_threads()
    if isinstance(num_threads, (bool, np.bool_)):
        raise TypeError("num_threads must be None or a positive integer, got a bool")
    try:
        n = operator.index(num_threads)
    except TypeError:
        raise TypeError(f"num_threads must be None or a positive integer, got {num_threads!r}") from None
    if n < 1:
        raise ValueError(f"num_threads must be None or a positive integer, got {n}")
    return min(n, 1 << 16)


def _check_out(out, scores: np.ndarray, name: str = "out") -> np.ndarray:
    _refuse_masked(out, name, "pass a plain ndarray (np.memmap is fine)")
    is_matrix = type(out) is not np.ndarray and isinstance(out, np.matrix)
    if not isinstance(out, np.ndarray) or is_matrix:
        raise TypeError(f"{name} must be a numpy.ndarray (np.memmap is fine; not a matrix), "
                        f"got {type(out).__name__}")
    if out.dtype != scores.dtype or not out.dtype.isnative:
        raise TypeError(f"{name} must have dtype {scores.dtype} (native byte order), got {out.dtype}")
    if out.shape != scores.shape:
        raise ValueError(f"{name} must have shape {scores.shape}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return out


def _rows(scores: np.ndarray, out: Optional[np.ndarray]):
    """scores as C-contiguous 2-D rows, and the out buffer (allocated if None) viewed alike."""
    n_classes = scores.shape[-1]
    rows = scores if scores.flags.c_contiguous else np.ascontiguousarray(scores)
    rows = rows.reshape(-1, n_classes)
    if out is None:
        out = np.empty(scores.shape, dtype=scores.dtype)
    else:
        out = _check_out(out, scores)  # the kernels refuse a partial overlap with rows
    return rows, out, out.reshape(-1, n_classes)


# ------------------------------------------------------------------ the API

def _run(scores, labels, reduction, weight, ignore_index, label_smoothing, num_threads,
         out, with_grad):
    fast = _kernels.sce_fast(scores, labels, reduction, weight, ignore_index, label_smoothing,
                             out, num_threads, with_grad)
    if fast is not None:  # plain arrays and default options: no conversion needed
        return fast
    s = _as_scores(scores)
    code = _as_reduction(reduction)
    ii = _as_ignore_index(ignore_index)
    eps = _as_smoothing(label_smoothing)
    n_threads = _as_num_threads(num_threads)
    n_classes = s.shape[-1]
    y = _as_labels(labels, s.shape[:-1], n_classes, ii)
    w = _as_weight(weight, n_classes)
    if with_grad:
        rows, grad, grad_rows = _rows(s, out)
    else:
        rows = s if s.flags.c_contiguous else np.ascontiguousarray(s)
        rows, grad, grad_rows = rows.reshape(-1, n_classes), None, None
    kernel = _kernels.sce_float32 if s.dtype is _F32 else _kernels.sce_float64
    try:
        total, denominator, row_loss = kernel(rows, y, w, ii, eps, code, grad_rows, n_threads)
    except _kernels.LabelOutOfRange as exc:  # (the value the kernels saw, in their copy)
        _raise_label_range(exc.value, exc.position, s.shape[:-1], n_classes, ii)
    loss = _kernels.finish_loss(total, denominator, code, row_loss, s.dtype is _F32)
    if code == _kernels.REDUCTION_NONE:
        loss = loss.reshape(s.shape[:-1])
    return loss, grad


def softmax_cross_entropy(
    scores,
    labels,
    *,
    reduction: str = "mean",
    weight=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
) -> Tuple[Union[np.floating, np.ndarray], np.ndarray]:
    r"""Softmax cross-entropy loss and its gradient with respect to the scores, in one pass.

    For a row of scores ``f`` (class axis last) with target class ``y``,

    .. math::

        P_k = \frac{e^{f_k}}{\sum_j e^{f_j}}, \qquad
        L = -\log P_y = -f_y + \log \sum_j e^{f_j}, \qquad
        \frac{\partial L}{\partial f_k} = P_k - 1(y = k).

    Options follow ``torch.nn.functional.cross_entropy`` with class-index targets.

    Parameters
    ----------
    scores : array_like of float32 or float64, shape (..., C)
        Unnormalized log-probabilities; ``(C,)`` is a single sample.  Fortran-ordered,
        strided, read-only and big-endian arrays are accepted (copied when needed).
        ``-inf`` marks a masked class (probability 0, gradient 0 without smoothing).
    labels : array_like of int, shape (...)
        Target class of each row, in ``[0, C)`` or equal to `ignore_index`.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides the summed loss by the summed weight of the non-ignored
        rows (their count when `weight` is None); ``"none"`` returns one loss per row
        and then ``grad[i]`` is the gradient of row ``i``'s own loss.
    weight : array_like, shape (C,), optional
        Class weights: row ``i`` is weighted by ``weight[labels[i]]``.
    ignore_index : int, default -100
        Rows with this label contribute no loss and get a zero gradient.
    label_smoothing : float in [0, 1], default 0.0
        Target distribution ``(1 - eps) * onehot(y) + eps / C``; the loss becomes
        ``(1-eps) * w_y * (-log P_y) + eps/C * sum_c w_c * (-log P_c)``.
    out : ndarray, optional
        Where to write the gradient: C-contiguous, writeable, shape and dtype of
        `scores`.  It may be `scores` itself (in-place gradient).
    num_threads : int, optional
        OpenMP threads; None uses all usable cores (honouring ``OMP_NUM_THREADS``).
        Results are bitwise identical for any thread count.

    Returns
    -------
    loss : numpy scalar, or ndarray of shape (...) when ``reduction="none"``
        In the dtype of `scores`; accumulated in float64.  ``"mean"`` over no
        (non-ignored) rows, or with a total target weight of 0, is NaN (and so is
        the gradient of the non-ignored rows); ``"sum"`` of an empty batch is 0.
    grad : ndarray, shape and dtype of `scores`
        ``dloss/dscores``; `out` when given.

    Raises
    ------
    TypeError
        Non-float scores, non-integer labels, badly typed options or `out`.
    ValueError
        Bad shapes, C = 0, unknown reduction, label_smoothing outside [0, 1],
        non-finite weight, num_threads < 1, `out` not contiguous or read-only.
    IndexError
        A label outside ``[0, C)`` that is not `ignore_index`.

    Examples
    --------
    >>> import numpy as np, cysoftmax
    >>> loss, grad = cysoftmax.softmax_cross_entropy(np.array([[2.0, 1.0, 0.1]]), [0])
    >>> round(float(loss), 6)
    0.41703
    >>> grad.round(4)
    array([[-0.341 ,  0.2424,  0.0986]])
    """
    return _run(scores, labels, reduction, weight, ignore_index, label_smoothing, num_threads,
                out, True)


def cross_entropy(
    scores,
    labels,
    *,
    reduction: str = "mean",
    weight=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    num_threads: Optional[int] = None,
) -> Union[np.floating, np.ndarray]:
    """Softmax cross-entropy loss only (no gradient is computed or allocated).

    Same arguments, semantics and errors as :func:`softmax_cross_entropy`, without `out`.

    Examples
    --------
    >>> import cysoftmax
    >>> float(cysoftmax.cross_entropy([[0.0, 0.0]], [1], reduction="sum"))  # log 2
    0.6931471805599453
    """
    return _run(scores, labels, reduction, weight, ignore_index, label_smoothing, num_threads,
                None, False)[0]


def _softmax(scores, out, num_threads, log_space):
    s = _as_scores(scores)
    n_threads = _as_num_threads(num_threads)
    rows, result, out_rows = _rows(s, out)
    kernel = _kernels.softmax_float32 if s.dtype is _F32 else _kernels.softmax_float64
    kernel(rows, out_rows, log_space, n_threads)
    return result


def softmax(scores, *, out: Optional[np.ndarray] = None,
            num_threads: Optional[int] = None) -> np.ndarray:
    r"""Softmax over the last axis: ``P_k = exp(f_k) / sum_j exp(f_j)``.

    Parameters
    ----------
    scores : array_like of float32 or float64, shape (..., C)
        ``-inf`` entries get probability 0; a row containing NaN (or ``+inf``) is NaN.
    out : ndarray, optional
        C-contiguous, writeable, shape and dtype of `scores`; may be `scores` itself.
    num_threads : int, optional
        OpenMP threads (None: all usable cores).

    Returns
    -------
    ndarray
        Probabilities, rows summing to 1, in the dtype of `scores`.

    Examples
    --------
    >>> import cysoftmax
    >>> cysoftmax.softmax([0.0, 0.0, float("-inf")])
    array([0.5, 0.5, 0. ])
    """
    return _softmax(scores, out, num_threads, False)


def log_softmax(scores, *, out: Optional[np.ndarray] = None,
                num_threads: Optional[int] = None) -> np.ndarray:
    r"""Log-softmax over the last axis: ``f_k - log sum_j exp(f_j)``, without overflow.

    Same arguments as :func:`softmax`; ``-inf`` entries stay ``-inf``.

    Examples
    --------
    >>> import cysoftmax
    >>> cysoftmax.log_softmax([1000.0, 1000.0])
    array([-0.69314718, -0.69314718])
    """
    return _softmax(scores, out, num_threads, True)
