"""Evaluate the verified closed forms with mpmath at high precision.

Every number produced here comes from the SymPy expressions in
:mod:`symbolic.expressions` (the ones :mod:`symbolic.derivation` proves),
turned into mpmath functions with :func:`sympy.lambdify`.  No NumPy
arithmetic and nothing from the compiled kernels is involved.

Inputs are taken *exactly*: every float (already rounded to the dtype the
kernels will see) becomes the mpmath number with the same binary value.  The
evaluation is repeated at increasing working precision until two successive
precisions agree on every output to :data:`DIGITS` significant digits,
starting from a precision that resolves the closed forms' cancellations
(``P_y - 1`` with ``P_y`` within ``1e-300`` of 1 needs several hundred
digits), so every stored digit is correct.

Conventions that are not derivable (they are PyTorch's): ``"mean"`` of an
empty or all-ignored batch is NaN and its gradient is zero; ``"sum"`` of an
empty batch is 0; the label-smoothing term is absent when ``eps == 0`` (so a
``-inf`` score does not produce ``0 * inf``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import mpmath
import sympy as sp

from . import expressions as E

__all__ = ["DIGITS", "START_DPS", "Reference", "reference", "format_value"]

#: significant digits stored for every expected value
DIGITS = 20
#: first working precision (decimal digits); doubled until results agree
START_DPS = 50
#: give up beyond this precision
MAX_DPS = 6400


@functools.lru_cache(maxsize=None)
def _functions(smoothing: bool) -> dict:
    """mpmath functions lambdified from the closed forms.

    ``smoothing=False`` substitutes ``eps = 0`` symbolically first, which
    removes the label-smoothing term instead of multiplying it by zero.
    """
    def lam(args, expr):
        if not smoothing:
            expr = expr.subs(E.eps, 0)
        return sp.lambdify(args, expr, modules="mpmath")

    g_ik, r_i, D = sp.symbols("g_ik r_i D")
    per_entry = {E.row_grad[E.i, E.k]: g_ik, E.row_in_batch[E.i]: r_i, E.D: D}
    f, w, k, y, C, S, W, eps = E.f, E.w, E.k, E.y, E.C, E.S, E.W, E.eps
    return {
        "S": lam((f, C), E.S_sum),
        "W": lam((w, C), E.W_sum),
        "softmax": lam((f, k, S), E.softmax_closed),
        "log_softmax": lam((f, k, S), E.log_softmax_closed),
        "row_loss": lam((f, w, y, C, S, eps), E.row_loss_closed),
        "row_grad": lam((f, w, k, y, C, S, W, eps), E.row_grad_closed),
        "denominator": lam((E.row_in_batch, E.row_loss_weights, E.N), E.batch_denominator),
        "sum": lam((E.row_loss, E.row_in_batch, E.N), E.batch_loss_closed["sum"]),
        "none": lam((E.row_loss, E.row_in_batch, E.i), E.batch_loss_closed["none"]),
        "grad_none": lam((g_ik, r_i), E.batch_grad_closed["none"].xreplace(per_entry)),
        "grad_sum": lam((g_ik, r_i), E.batch_grad_closed["sum"].xreplace(per_entry)),
        "grad_mean": lam((g_ik, r_i, D), E.batch_grad_closed["mean"].xreplace(per_entry)),
    }


@dataclass
class Reference:
    """Exact results for one input, as strings with :data:`DIGITS` digits.

    ``loss`` is a string (``"mean"``/``"sum"``, or ``"none"`` of a 1-D input)
    or a list of strings (``"none"``); the other fields are lists of rows of
    strings (a single row for a 1-D input).  ``dps`` is the working
    precision that produced them.
    """

    loss: object
    grad: list
    softmax: list
    log_softmax: list
    dps: int


def format_value(value) -> str:
    """``mpf`` -> fixed-format string, e.g. ``'-1.2345678901234567890e-5'``.

    NaN and infinities are ``'nan'``, ``'inf'``, ``'-inf'``; zero is ``'0.0'``.
    The digits come from the full mantissa of ``value``, whatever the current
    working precision.
    """
    if not isinstance(value, mpmath.mpf):
        value = mpmath.mpf(value)  # ints (an empty sum); never re-round an mpf
    if mpmath.isnan(value):
        return "nan"
    if mpmath.isinf(value):
        return "inf" if value > 0 else "-inf"
    return mpmath.nstr(value, DIGITS, strip_zeros=False, min_fixed=0, max_fixed=0)


@functools.lru_cache(maxsize=4096)
def _row(row: tuple, label: int | None, w: tuple, eps, n_classes: int, dps: int) -> tuple:
    """Softmax, log-softmax, loss and gradient of one row at ``dps`` digits.

    ``label=None`` is an ignored row: it is never evaluated (l_i = 0,
    g_i = 0).  Cached, so the three reductions of one input share the work.
    """
    fn = _functions(eps != 0)
    with mpmath.workdps(dps):
        f = [mpmath.mpf(v) for v in row]
        S = fn["S"](f, n_classes)
        softmax = [fn["softmax"](f, k, S) for k in range(n_classes)]
        log_softmax = [fn["log_softmax"](f, k, S) for k in range(n_classes)]
        if label is None:
            return softmax, log_softmax, mpmath.mpf(0), [mpmath.mpf(0)] * n_classes
        W = fn["W"](list(w), n_classes)
        loss = fn["row_loss"](f, list(w), label, n_classes, S, eps)
        grad = [fn["row_grad"](f, list(w), k, label, n_classes, S, W, eps) for k in range(n_classes)]
        return softmax, log_softmax, loss, grad


def _evaluate(scores: Sequence[Sequence[float]], labels: Sequence[int], reduction: str,
              weight: Sequence[float] | None, ignore_index: int, label_smoothing: float,
              n_classes: int) -> dict:
    """One evaluation at the current mpmath precision (mpf results)."""
    fn = _functions(label_smoothing != 0)
    n_rows = len(scores)
    eps = mpmath.mpf(label_smoothing)
    w = [mpmath.mpf(v) for v in weight] if weight is not None else [mpmath.mpf(1)] * n_classes
    kept = [int(lab != ignore_index) for lab in labels]
    softmax, log_softmax, losses, grads, omega = [], [], [], [], []
    for row, lab, keep in zip(scores, labels, kept):
        p, logp, loss, grad = _row(tuple(row), lab if keep else None, tuple(w), eps, n_classes,
                                   mpmath.mp.dps)
        softmax.append(p)
        log_softmax.append(logp)
        losses.append(loss)
        grads.append(grad)
        omega.append(w[lab] if keep else mpmath.mpf(1))  # multiplied by r_i = 0
    D = fn["denominator"](kept, omega, n_rows)
    if reduction == "none":
        loss = [fn["none"](losses, kept, q) for q in range(n_rows)]
        grad = [[fn["grad_none"](g, r) for g in row] for row, r in zip(grads, kept)]
    elif reduction == "sum":
        loss = fn["sum"](losses, kept, n_rows)
        grad = [[fn["grad_sum"](g, r) for g in row] for row, r in zip(grads, kept)]
    elif reduction == "mean":
        # 0/0 for an empty or all-ignored batch: NaN loss, zero gradient
        loss = fn["sum"](losses, kept, n_rows) / D if D != 0 else mpmath.nan
        grad = [[fn["grad_mean"](g, r, D) if r else mpmath.mpf(0) for g in row]
                for row, r in zip(grads, kept)]
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    return {"loss": loss, "grad": grad, "softmax": softmax, "log_softmax": log_softmax}


def _settled(low, high, dps: int, scale: float):
    """Formatted value once two precisions agree, else ``None``.

    ``low`` was computed at ``dps`` digits and ``high`` at ``2 * dps``.  They
    agree when their strings match.  A value that is exactly 0 in exact
    arithmetic (``log(e^{f}) - f`` for C = 1) is computed as rounding noise
    that shrinks with the precision; both values below
    ``10^-(dps - 15) * scale`` count as 0.  This cannot hide a genuine
    nonzero value: the starting precision is at least 40 digits more than the
    deepest structural cancellation (see :func:`_starting_precision`).
    """
    if isinstance(low, list):
        out = [_settled(a, b, dps, scale) for a, b in zip(low, high)]
        return None if any(v is None for v in out) else out
    a, b = format_value(low), format_value(high)
    if a == b:
        return a
    tiny = mpmath.mpf(10) ** (15 - dps) * scale
    if mpmath.isfinite(low) and mpmath.isfinite(high) and abs(low) <= tiny and abs(high) <= tiny:
        return format_value(0)
    return None


def _starting_precision(scores: Sequence[Sequence[float]]) -> int:
    """A working precision that resolves the structural cancellations.

    ``P_y - 1 = -sum_{j != y} P_j`` and ``log S - f_y`` can be as small as
    about ``e^{-spread}`` while their terms are of order ``max |f|``, where
    ``spread`` is the range of a row's finite scores.  Both cancel to exactly
    0 at any precision short of that, which two agreeing precisions would not
    detect, so the first precision already covers it.
    """
    digits = 0.0
    for row in scores:
        finite = [v for v in row if math.isfinite(v)]
        if finite:
            spread = max(finite) - min(finite)
            size = max(abs(v) for v in finite)
            digits = max(digits, spread / math.log(10) + math.log10(1 + size))
    return max(START_DPS, DIGITS + 20 + math.ceil(digits))


def reference(scores: Sequence[Sequence[float]], labels: Sequence[int], *, n_classes: int,
              reduction: str = "mean", weight: Sequence[float] | None = None,
              ignore_index: int = -100, label_smoothing: float = 0.0) -> Reference:
    """Expected loss, gradient, softmax and log-softmax of a batch.

    Parameters
    ----------
    scores : list of rows of float
        The scores exactly as the kernels see them (already rounded to the
        kernels' dtype); may contain ``-inf`` and ``nan``.
    labels : list of int
        One label per row; ``ignore_index`` marks an ignored row.
    n_classes : int
        ``C`` (needed when there are no rows).
    reduction, weight, ignore_index, label_smoothing
        As in ``torch.nn.functional.cross_entropy``.

    Returns
    -------
    Reference
        Values stable to :data:`DIGITS` digits between two working precisions.
    """
    if not all(math.isfinite(v) for v in (weight or [])):
        raise ValueError("weights must be finite")
    dps = _starting_precision(scores)
    finite = [abs(v) for row in scores for v in row if math.isfinite(v)]
    scale = 1 + max(finite, default=0.0) + max(weight or [1.0])
    args = (scores, labels, reduction, weight, ignore_index, label_smoothing, n_classes)
    with mpmath.workdps(dps):
        previous = _evaluate(*args)
    while dps <= MAX_DPS:
        with mpmath.workdps(2 * dps):
            current = _evaluate(*args)
        settled = {key: _settled(previous[key], current[key], dps, scale) for key in current}
        if all(v is not None for v in settled.values()):
            return Reference(dps=dps, **settled)
        previous, dps = current, 2 * dps
    raise ArithmeticError(f"results did not settle below {MAX_DPS} digits")
