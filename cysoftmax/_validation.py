"""Argument checks and conversions, each rule written once, each error naming its argument.

Arrays (used by the compiled entries in ``_kernels.pyx`` whenever an argument is not
already a plain array of the right type, and by the models):

* :func:`as_scores`  -- native float32/float64 ndarray, ndim >= 1, C >= 1;
* :func:`as_targets` -- probability targets (a float array of the scores' shape), or None;
* :func:`as_labels`  -- flat C-contiguous int64 class indices of a batch shape;
* :func:`check_label_range` -- the first label that is no class index, as an IndexError;
* :func:`as_weight`  -- C-contiguous finite float64 class weights;
* :func:`check_out`  -- a writeable C-contiguous ndarray matching the scores;
* :func:`refuse_masked` -- masked arrays would lose their mask in a conversion.

Scalars: :func:`check_scalar` (in the spirit of scikit-learn's ``check_scalar``):
a type check that refuses bools unless asked, and a range check, with the caller's
argument name in every message.  The options of the loss (reduction, ignore_index,
label_smoothing, num_threads) are parsed in one place, ``_kernels.pyx``.
"""

from __future__ import annotations

import numbers
import operator
from typing import Any, Optional, Sequence

import numpy as np

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_I64 = np.dtype(np.int64)
_INT64_MAX = np.iinfo(np.int64).max


# ------------------------------------------------------------------ scalars

def check_scalar(value: Any, name: str, kind: str, *, low: Optional[float] = None,
                 high: Optional[float] = None, low_open: bool = False,
                 high_open: bool = False, allow_none: bool = False, finite: bool = False,
                 allow_bool: bool = False) -> Any:
    """``value`` checked as an ``"int"`` or a ``"real"`` within [low, high]; returned as
    a Python int or float (None passes through when ``allow_none``).

    Raises ``TypeError`` for another type (bools included, unless ``allow_bool``: then
    a bool is the int 0 or 1) and ``ValueError`` outside the range, for NaN, and for
    an infinite real when ``finite``, each naming ``name``.  With ``finite`` the range
    messages read "finite and >= low".
    """
    if value is None and allow_none:
        return None
    what = {"int": "an integer", "real": "a real number"}[kind]
    if allow_none:
        what = "None or " + what
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]  # a 0-d array: its scalar
    if isinstance(value, (bool, np.bool_)):
        if not allow_bool:
            raise TypeError(f"{name} must be {what}, got a bool")
        value = int(value)
    if kind == "int":
        try:
            result: Any = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be {what}, got {value!r}") from None
    else:
        if not isinstance(value, (numbers.Real, np.integer, np.floating)):
            raise TypeError(f"{name} must be {what}, got {value!r}")
        try:
            result = float(value)
        except OverflowError:  # an int beyond float's range
            result = float("-inf") if value < 0 else float("inf")
        if result != result:
            raise ValueError(f"{name} must not be NaN")
    must = "finite and " if finite else ""
    lower = None if low is None else f"{'>' if low_open else '>='} {low}"
    if finite and result in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be {must + lower if lower else 'finite'}, got {value!r}")
    if low is not None and (result < low or (low_open and result == low)):
        raise ValueError(f"{name} must be {must}{lower}, got {value!r}")
    if high is not None and (result > high or (high_open and result == high)):
        raise ValueError(f"{name} must be {must}{'<' if high_open else '<='} {high}, got {value!r}")
    return result


# ------------------------------------------------------------------ arrays

def refuse_masked(value: Any, name: str, hint: str) -> None:
    """A masked array would silently lose its mask in the conversion: refuse it."""
    # (np.ma is imported lazily by NumPy: look only at ndarray subclasses)
    if isinstance(value, np.ndarray) and type(value) is not np.ndarray and isinstance(
        value, np.ma.MaskedArray
    ):
        raise TypeError(f"{name} is a masked array, whose mask would be ignored; {hint}")


def asarray(value: Any, name: str, dtype: Any = None) -> np.ndarray:
    """np.asarray, with NumPy's errors for ragged or odd sequences naming the argument."""
    try:
        return np.asarray(value, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{name} could not be converted to an array: {exc}") from None


def as_scores(scores: Any, name: str = "scores") -> np.ndarray:
    """scores as a native-endian float32/float64 ndarray with ndim >= 1 and C >= 1."""
    refuse_masked(scores, name, f"pass {name}.filled(-np.inf) to mask classes")
    arr = scores if type(scores) is np.ndarray else asarray(scores, name)
    dt = arr.dtype
    if dt is not _F64 and dt is not _F32:
        if dt.kind != "f" or dt.itemsize not in (4, 8):
            raise TypeError(
                f"{name} must hold float32 or float64 values, got dtype {dt}"
                + (f" (convert with {name}.astype(np.float64))" if dt.kind in "iub" else "")
            )
        arr = arr.astype(_F32 if dt.itemsize == 4 else _F64)  # byte order, dtype identity
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (..., C); got a 0-d array")
    if arr.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one class: shape {arr.shape} has C = 0")
    return arr


def raise_label_range(value: Any, pos: int, batch_shape: Sequence[int], n_classes: int,
                      ignore_index: int, name: str = "labels") -> None:
    """The IndexError for label ``value`` at flat position ``pos`` of the batch."""
    index = ", ".join(str(int(i)) for i in np.unravel_index(pos, tuple(batch_shape)))
    where = f"[{index}]" if len(batch_shape) else ""  # one sample: labels is a scalar
    raise IndexError(
        f"{name}{where} = {value} is not a class index in [0, {n_classes}) "
        f"and not ignore_index ({ignore_index})"
    )


def as_targets(labels: Any, shape: tuple, dtype: np.dtype, name: str = "labels",
               scores: str = "scores") -> Optional[np.ndarray]:
    """labels as probability targets, when they are that: a float array of the scores'
    ``shape``; returned C-contiguous, aligned and in the scores' ``dtype``.  None when
    they are not (they are then class indices, for :func:`as_labels`).

    A float ndarray must have the scores' precision (TypeError otherwise: no silent
    rounding of targets); a float sequence is converted to the scores' dtype.  Their
    values (finite and >= 0) are checked by the compiled kernels as they read them.
    """
    if isinstance(labels, np.ndarray):
        refuse_masked(labels, name, f"pass {name}.filled(0) for probability targets")
        arr = labels
    else:
        try:
            arr = np.asarray(labels)
        except (ValueError, TypeError):
            return None  # as_labels reports it
    if arr.dtype.kind != "f" or arr.shape != tuple(shape):
        return None
    if isinstance(labels, np.ndarray) and arr.dtype.itemsize != np.dtype(dtype).itemsize:
        raise TypeError(
            f"{name} as probability targets must have the dtype of {scores} "
            f"({np.dtype(dtype)}), got {arr.dtype}; convert with {name}.astype({scores}.dtype)"
        )
    return np.require(arr, dtype=dtype, requirements=["C", "A"])


def raise_bad_targets(row: np.ndarray, pos: int, batch_shape: Sequence[int],
                      name: str = "labels") -> None:
    """The ValueError for probability targets at flat row ``pos`` that are not all
    finite and >= 0 (``row``: that row of targets)."""
    bad = np.flatnonzero(~(np.isfinite(row) & (row >= 0)))
    k = int(bad[0]) if bad.size else 0
    index = [str(int(i)) for i in np.unravel_index(pos, tuple(batch_shape))] + [str(k)]
    raise ValueError(f"{name} (probability targets) must be finite and >= 0; "
                     f"{name}[{', '.join(index)}] = {float(row[k])!r}")


def as_labels(labels: Any, batch_shape: tuple, n_classes: int, ignore_index: int,
              name: str = "labels") -> np.ndarray:
    """labels as a flat C-contiguous int64 array of a batch of shape batch_shape.

    Values are range-checked where a conversion could change them (uint64 beyond
    int64, Python integers of any size); the compiled kernels check every label again
    in their own copy.
    """
    refuse_masked(labels, name, f"pass {name}.filled(ignore_index) to ignore masked rows")
    arr = labels if type(labels) is np.ndarray else asarray(labels, name)
    if arr.dtype.kind == "f" and arr.size and type(labels) is not np.ndarray:
        # a sequence of Python ints that no integer dtype holds (e.g. 0 and 2**63)
        # becomes float64: keep the exact values instead
        arr = asarray(labels, name, dtype=object)
    dt = arr.dtype
    if arr.shape != batch_shape:
        raise ValueError(
            f"{name} must have shape scores.shape[:-1] = {batch_shape}, got {arr.shape}"
        )
    if dt is not _I64:
        kind = dt.kind
        if kind == "u" and dt.itemsize == 8 and arr.size and arr.max() > _INT64_MAX:
            pos = int(np.argmax(arr > _INT64_MAX))
            raise_label_range(arr.reshape(-1)[pos], pos, batch_shape, n_classes, ignore_index,
                              name)
        if kind == "O":
            arr = _object_labels(arr, batch_shape, n_classes, ignore_index, name)
        elif kind == "f" and arr.size == 0 and type(labels) is not np.ndarray:
            pass  # an empty Python sequence
        elif kind not in "iu":
            raise TypeError(f"{name} must be integers (class indices), got dtype {dt}"
                            + (f" (probability targets are floats of the scores' shape, "
                               f"{tuple(batch_shape) + (n_classes,)})" if kind == "f" else ""))
        arr = arr.astype(_I64)
    return np.ascontiguousarray(arr).reshape(-1)


def _object_labels(arr: np.ndarray, batch_shape: tuple, n_classes: int, ignore_index: int,
                   name: str) -> np.ndarray:
    """An object array of Python or NumPy integers (any size) as int64, range-checked."""
    values = []
    for v in arr.flat:
        if isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{name} must be integers (class indices), got a bool")
        try:
            values.append(operator.index(v))
        except TypeError:
            raise TypeError(
                f"{name} must be integers (class indices), got {type(v).__name__} {v!r}"
            ) from None
    check_label_range(np.array(values, dtype=object), batch_shape, n_classes, ignore_index,
                      name)
    return np.array(values, dtype=_I64).reshape(batch_shape)


def check_label_range(labels: np.ndarray, batch_shape: Sequence[int], n_classes: int,
                      ignore_index: int, name: str = "labels") -> None:
    """The IndexError of :func:`raise_label_range` for the first of ``labels`` (integers,
    an integer or object array of the batch in row order) that is neither a class
    index in [0, n_classes) nor ignore_index; nothing if there is none."""
    flat = labels.reshape(-1)
    bad = np.flatnonzero((flat != ignore_index) & ((flat < 0) | (flat >= n_classes)))
    if bad.size:
        pos = int(bad[0])
        raise_label_range(flat[pos], pos, batch_shape, n_classes, ignore_index, name)


def as_weight(weight: Any, n_classes: int, name: str = "weight") -> np.ndarray:
    """Class weights as a C-contiguous finite float64 array of shape (n_classes,)."""
    refuse_masked(weight, name, f"pass {name}.filled(0) to give masked classes no weight")
    w = asarray(weight, name)
    if w.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {w.dtype}")
    if w.shape != (n_classes,):
        raise ValueError(f"{name} must have shape (C,) = ({n_classes},), got {w.shape}")
    with np.errstate(over="ignore"):  # (a long double beyond float64's range: inf)
        w = np.ascontiguousarray(w, dtype=np.float64)
    if not np.isfinite(w).all():
        raise ValueError(f"{name} must be finite (and within float64's range)")
    return w


def check_out(out: Any, scores: np.ndarray, name: str = "out") -> np.ndarray:
    """out as given, if it can receive a result of the shape and dtype of scores."""
    refuse_masked(out, name, "pass a plain ndarray (np.memmap is fine)")
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
    if not out.flags.aligned:
        raise ValueError(f"{name} must be aligned for its dtype (its data start at an "
                         f"address that is a multiple of {out.dtype.itemsize})")
    return out
