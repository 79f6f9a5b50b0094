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
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
    return_z_loss: bool = False,
    return_lse: bool = False,
    out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
) -> tuple:
    r"""Softmax cross-entropy loss and its gradient with respect to the scores, in one pass.

    For a row of scores ``f`` (class axis last) with target class ``y``,

    .. math::

        P_k = \frac{e^{f_k}}{\sum_j e^{f_j}}, \qquad
        L = -\log P_y = -f_y + \log \sum_j e^{f_j}, \qquad
        \frac{\partial L}{\partial f_k} = P_k - 1(y = k).

    Options follow ``torch.nn.functional.cross_entropy`` (class indices or probability
    targets), with Liger-Kernel's z-loss and Gemma 2's logit soft-capping.

    Parameters
    ----------
    scores : array_like of float32 or float64, shape (..., C)
        Unnormalized log-probabilities; ``(C,)`` is a single sample.  Fortran-ordered,
        strided, read-only and big-endian arrays are accepted (copied when needed).
        ``-inf`` marks a masked class (probability 0, gradient 0 without smoothing).
    labels : array_like of int, shape (...); or array_like of float, shape (..., C)
        Target class of each row, in ``[0, C)`` or equal to `ignore_index`.  Or
        probability targets: a float array of the shape and dtype of `scores`, each
        row a distribution over the classes (it need not sum to 1); entries must be
        finite and ``>= 0`` (PyTorch does not check; negative entries are refused
        here).  Then row ``i`` loses ``-sum_c w_c t'_ic log P_ic`` with
        ``t' = (1 - eps) t + eps / C`` (a term with ``w_c t'_ic = 0`` is 0, also where
        ``P_ic = 0``), ``"mean"`` divides by the number of rows and `ignore_index` must
        be left at its default (every row counts), as in PyTorch.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides the summed loss by the summed weight of the non-ignored
        rows (their count when `weight` is None; the z-loss part always by their
        count); ``"none"`` returns one loss per row and then ``grad[i]`` is the
        gradient of row ``i``'s own loss.
    weight : array_like, shape (C,), optional
        Class weights: row ``i`` is weighted by ``weight[labels[i]]``.
    ignore_index : int, default -100
        Rows with this label contribute no loss and get a zero gradient.
    label_smoothing : float in [0, 1], default 0.0
        Target distribution ``(1 - eps) * onehot(y) + eps / C``; the loss becomes
        ``(1-eps) * w_y * (-log P_y) + eps/C * sum_c w_c * (-log P_c)``.
    z_loss : float >= 0, default 0.0
        Adds ``z_loss * lse**2`` to each counted row's loss, ``lse = log sum_j e^{f_j}``
        (PaLM's z-loss, as Liger-Kernel defines it: not weighted by class weights, and
        divided by the number of counted rows for ``"mean"``).  Its gradient is
        ``2 z_loss lse P_k``.
    softcap : float > 0, optional
        Logit soft-capping: every score ``f`` is replaced by ``softcap * tanh(f /
        softcap)`` before the softmax, and the gradient is chain-ruled through it.  A
        ``-inf`` score stays ``-inf`` (a masked class; taken literally, tanh would make
        it ``-softcap``), with gradient 0.
    return_z_loss : bool, default False
        Also return the z-loss part of the loss, reduced like the loss.
    return_lse : bool, default False
        Also return each row's ``lse`` (of the capped scores; ignored rows included),
        shape ``scores.shape[:-1]``.
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
    z : numpy scalar or ndarray, only with ``return_z_loss=True``
        The z-loss part of `loss` (included in it).
    lse : ndarray of shape (...), only with ``return_lse=True``
        Each row's log-sum-exp, in the dtype of `scores`.

    The result is ``(loss, grad)``, with ``z`` and then ``lse`` appended when asked for.

    Raises
    ------
    TypeError
        Non-float scores, labels that are neither integers nor float targets (a float
        ndarray of another precision than `scores`), badly typed options or `out`.
    ValueError
        Bad shapes, C = 0, unknown reduction, label_smoothing outside [0, 1],
        z_loss < 0 or not finite, softcap <= 0 or not finite, non-finite weight,
        probability targets that are negative or not finite, num_threads < 1, `out`
        not contiguous or read-only or overlapping the targets.
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
    loss, grad, z, lse = _kernels.softmax_cross_entropy(
        scores, labels, reduction, weight, ignore_index, label_smoothing, z_loss, softcap,
        return_z_loss, return_lse, out, num_threads, True)
    return _results((loss, grad), z, lse)


def _results(head: tuple, z, lse):
    """``head``, with the z-loss part and the lse appended where they were asked for."""
    if z is not None:
        head += (z,)
    if lse is not None:
        head += (lse,)
    return head


def cross_entropy(
    scores,
    labels,
    *,
    reduction: str = "mean",
    weight=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
    return_z_loss: bool = False,
    return_lse: bool = False,
    num_threads: Optional[int] = None,
):
    """Softmax cross-entropy loss only (no gradient is computed or allocated).

    Same arguments, semantics and errors as :func:`softmax_cross_entropy`, without `out`.
    Returns the loss, or a tuple ``(loss, z)``, ``(loss, lse)`` or ``(loss, z, lse)``
    with `return_z_loss` and `return_lse`.

    Examples
    --------
    >>> import cysoftmax
    >>> float(cysoftmax.cross_entropy([[0.0, 0.0]], [1], reduction="sum"))  # log 2
    0.6931471805599453
    """
    loss, _, z, lse = _kernels.softmax_cross_entropy(
        scores, labels, reduction, weight, ignore_index, label_smoothing, z_loss, softcap,
        return_z_loss, return_lse, None, num_threads, False)
    if z is None and lse is None:
        return loss
    return _results((loss,), z, lse)


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
