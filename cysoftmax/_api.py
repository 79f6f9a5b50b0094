"""The public functions of cysoftmax: signatures and documentation.

Each function hands its arguments, unchecked, to its one compiled entry in
``cysoftmax._kernels``, which checks them (a clear ``TypeError``, ``ValueError`` or
``IndexError`` naming the argument; array conversions in ``_validation``), runs
the kernels with the GIL released and returns the finished result.  Input arrays
are never modified, except an ``out`` buffer, which may be ``scores`` itself.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

from . import _kernels

__all__ = ["softmax_cross_entropy", "cross_entropy", "softmax", "log_softmax"]


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
    return _kernels.softmax_cross_entropy(scores, labels, reduction, weight, ignore_index,
                                          label_smoothing, out, num_threads, True)


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
    return _kernels.softmax_cross_entropy(scores, labels, reduction, weight, ignore_index,
                                          label_smoothing, None, num_threads, False)[0]


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
    return _kernels.softmax(scores, out, num_threads, False)


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
    return _kernels.softmax(scores, out, num_threads, True)
