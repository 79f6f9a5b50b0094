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

:func:`reference_options` does the same for the further options (probability
targets, z-loss, soft-capping), with these conventions besides: a term of the
probability-target loss whose coefficient ``w_c t'_c`` is 0 is left out; a
``-inf`` score stays ``-inf`` under soft-capping (and its factor
``1 - tanh^2`` is 0, the limit); ``"mean"`` with ``D = 0`` or ``n = 0`` is NaN
(the gradient of the counted rows is NaN, of an all-ignored batch 0).

:func:`reference_linear` and :func:`reference_classifier` do the same for the
fused linear layer (``z = x W^T + b``, then the loss of :func:`reference_options`
and the layer's gradients ``g W``, ``g^T x``, the row sum of ``g``) and the case
study's classifier (``scores = X W + b``, the loss plus ``reg/2 sum W^2``,
``dW = X^T g + reg W``): the logits and the penalty from their definitions, the
rest from the proved closed forms, all in one working precision.

:func:`closed_forms` lists every closed form evaluated here; each is one that
a step of ``python -m symbolic`` proves (``tests/test_symbolic.py`` checks it).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import mpmath
import sympy as sp

from . import expressions as E

__all__ = ["DIGITS", "START_DPS", "Reference", "reference", "format_value", "closed_forms",
           "definitions", "OptionsReference", "reference_options", "LinearReference",
           "reference_linear", "ClassifierReference", "reference_classifier"]

#: significant digits stored for every expected value
DIGITS = 20
#: first working precision (decimal digits); doubled until results agree
START_DPS = 50
#: give up beyond this precision
MAX_DPS = 6400


def definitions() -> dict:
    """The definitions the evaluator computes directly (sums, soft-capping)."""
    return {"S": E.S_sum, "W": E.W_sum, "T": E.T_sum, "S'": E.Sc_sum,
            "f'": E.softcap(E.f[E.k]), "coefficient": E.w[E.c] * E.tprime(E.c),
            "z": E.linear_logit(E.i, E.out), "s": E.classifier_score(E.i, E.c),
            "penalty": E.classifier_penalty}


def closed_forms() -> dict:
    """Every closed form the evaluator lambdifies, by name.

    Each is one that a step of ``python -m symbolic`` proves (it appears, with
    ``S``, ``W``, ``T`` and ``S'`` written out, in the chain of a verified step);
    the probability-target loss is evaluated term by term (``prob_loss`` is
    the sum of ``prob_loss_term``).
    """
    forms = {
        "softmax": E.softmax_closed,
        "log_softmax": E.log_softmax_closed,
        "row_loss": E.row_loss_closed,
        "row_grad": E.row_grad_closed,
        "denominator": E.batch_denominator,
        "count": E.batch_count,
        "lse": E.lse_closed,
        "z": E.z_closed,
        "z_grad": E.z_grad_closed,
        "prob_loss": E.prob_loss_closed,
        "prob_grad": E.prob_grad_closed,
    }
    forms.update({f"{name} (soft-capped)": expr for name, expr in E.capped_closed_forms.items()
                  if name != "prob_loss_term"})
    forms.update({"linear grad_input": E.linear_grad_input_closed,
                  "linear grad_linear_weight": E.linear_grad_weight_closed,
                  "linear grad_linear_bias": E.linear_grad_bias_closed,
                  "classifier dW": E.classifier_grad_weight_closed,
                  "classifier db": E.classifier_grad_bias_closed})
    for name, table in (("loss", E.batch_loss_closed), ("grad", E.batch_grad_closed),
                        ("loss with z", E.batch_loss_z_closed), ("grad with z", E.batch_grad_z_closed),
                        ("z", E.batch_z_closed)):
        forms.update({f"batch {name} {reduction}": expr for reduction, expr in table.items()})
    return forms


def _lambdify(args, expr, smoothing: bool):
    if not smoothing:
        expr = expr.subs(E.eps, 0)
    return sp.lambdify(args, expr, modules="mpmath")


#: per-entry stand-ins for the batch forms' g_{i,k}, h_{i,k} and r_i
_g_ik, _h_ik, _r_i = sp.symbols("g_ik h_ik r_i")
_PER_ENTRY = {E.row_grad[E.i, E.k]: _g_ik, E.row_z_grad[E.i, E.k]: _h_ik,
              E.row_in_batch[E.i]: _r_i}


@functools.lru_cache(maxsize=None)
def _functions(smoothing: bool) -> dict:
    """mpmath functions lambdified from the closed forms.

    ``smoothing=False`` substitutes ``eps = 0`` symbolically first, which
    removes the label-smoothing term instead of multiplying it by zero.
    """
    def lam(args, expr):
        return _lambdify(args, expr, smoothing)

    forms, defs = closed_forms(), definitions()
    f, w, k, y, C, S, W, eps = E.f, E.w, E.k, E.y, E.C, E.S, E.W, E.eps
    return {
        "S": lam((f, C), defs["S"]),
        "W": lam((w, C), defs["W"]),
        "softmax": lam((f, k, S), forms["softmax"]),
        "log_softmax": lam((f, k, S), forms["log_softmax"]),
        "row_loss": lam((f, w, y, C, S, eps), forms["row_loss"]),
        "row_grad": lam((f, w, k, y, C, S, W, eps), forms["row_grad"]),
        "denominator": lam((E.row_in_batch, E.row_loss_weights, E.N), forms["denominator"]),
        "sum": lam((E.row_loss, E.row_in_batch, E.N), forms["batch loss sum"]),
        "none": lam((E.row_loss, E.row_in_batch, E.i), forms["batch loss none"]),
        "mean": lam((E.row_loss, E.row_in_batch, E.row_loss_weights, E.N), forms["batch loss mean"]),
        "grad_none": lam((_g_ik, _r_i), forms["batch grad none"].xreplace(_PER_ENTRY)),
        "grad_sum": lam((_g_ik, _r_i), forms["batch grad sum"].xreplace(_PER_ENTRY)),
        "grad_mean": lam((_g_ik, _r_i, E.D), forms["batch grad mean"].xreplace(_PER_ENTRY)),
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
        loss = fn["mean"](losses, kept, omega, n_rows) if D != 0 else mpmath.nan
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


# --------------------------------------------------------------------------
# Probability targets, z-loss, soft-capping
# --------------------------------------------------------------------------
#: the arguments of every lambdified option form (unused ones are ignored)
_OPTION_ARGS = (E.f, E.fc, E.w, E.t, E.k, E.y, E.c, E.C, E.S, E.Sc, E.W, E.T, E.eps, E.lam,
                E.kappa)


@functools.lru_cache(maxsize=None)
def _option_functions(smoothing: bool, capped: bool) -> dict:
    """mpmath functions of the option closed forms (soft-capped ones if ``capped``)."""
    forms, defs = closed_forms(), definitions()

    def lam(name):
        key = f"{name} (soft-capped)" if capped else name
        return _lambdify(_OPTION_ARGS, forms[key], smoothing)

    def batch(name, reduction):
        expr = forms[f"batch {name} {reduction}"]
        if name.startswith("grad"):  # one entry: g_{i,k}, h_{i,k} and r_i as numbers
            expr = expr.xreplace(_PER_ENTRY)
        args = (E.row_loss, E.row_z, E.row_in_batch, E.row_loss_weights, E.N, E.i,
                _g_ik, _h_ik, _r_i, E.D, E.n)
        return _lambdify(args, expr, smoothing)

    out = {name: lam(name) for name in ("lse", "z", "z_grad", "row_loss", "row_grad", "prob_grad")}
    term = E.capped_closed_forms["prob_loss_term"] if capped else E.prob_loss_term
    # the loss is the sum over c of this term (its proved closed form "prob_loss")
    out["prob_loss_term"] = _lambdify(_OPTION_ARGS, term, smoothing)
    out["coefficient"] = _lambdify(_OPTION_ARGS, defs["coefficient"], smoothing)
    out["S"] = _lambdify((E.f, E.C), defs["S"], smoothing)
    out["S'"] = _lambdify((E.fc, E.C), defs["S'"], smoothing)
    out["W"] = _lambdify((E.w, E.C), defs["W"], smoothing)
    out["T"] = _lambdify((E.w, E.t, E.C), defs["T"], smoothing)
    out["f'"] = _lambdify((E.f, E.k, E.kappa), defs["f'"], smoothing)
    out["denominator"] = _lambdify((E.row_in_batch, E.row_loss_weights, E.N),
                                   forms["denominator"], smoothing)
    out["count"] = _lambdify((E.row_in_batch, E.N), forms["count"], smoothing)
    for reduction in ("none", "sum", "mean"):
        out[f"loss {reduction}"] = batch("loss with z", reduction)
        out[f"grad {reduction}"] = batch("grad with z", reduction)
        out[f"z {reduction}"] = batch("z", reduction)
    return out


@dataclass
class OptionsReference:
    """Exact results for one input with the further options (strings, :data:`DIGITS` digits).

    ``loss`` and ``z`` are strings (``"mean"``/``"sum"``) or lists of strings
    (``"none"``), ``grad`` a list of rows of strings, ``lse`` a list of strings
    (one per row).  ``dps`` is the working precision that produced them.
    """

    loss: object
    grad: list
    z: object
    lse: list
    dps: int


@functools.lru_cache(maxsize=4096)
def _option_row(row: tuple, target, w: tuple, eps, lam, kappa, n_classes: int,
                smoothing: bool, dps: int) -> tuple:
    """lse, z, loss, z gradient and loss gradient of one row at ``dps`` digits.

    ``target``: a class index, a tuple of probability targets, or None (an
    ignored row: only its lse is evaluated; the rest is 0 and multiplied by
    r_i = 0).
    """
    capped = kappa is not None
    fn = _option_functions(smoothing, capped)
    with mpmath.workdps(dps):
        f = [mpmath.mpf(v) for v in row]
        w = [mpmath.mpf(v) for v in w]
        C = n_classes
        if capped:  # a -inf score stays -inf (the limit of kappa tanh would be -kappa)
            fc = [v if mpmath.isinf(v) and v < 0 else fn["f'"](f, q, kappa) for q, v in enumerate(f)]
        else:
            fc = f
        S = fn["S'"](fc, C) if capped else fn["S"](f, C)
        W = fn["W"](w, C)
        probability = isinstance(target, tuple)
        t = [mpmath.mpf(v) for v in target] if probability else [mpmath.mpf(0)] * C
        T = fn["T"](w, t, C)
        args = dict(f=f, fc=fc, w=w, t=t, C=C, S=S, Sc=S, W=W, T=T, eps=eps, lam=lam, kappa=kappa)

        def call(name, k=0, y=0, c=0):
            a = dict(args, k=k, y=y, c=c)
            return fn[name](a["f"], a["fc"], a["w"], a["t"], a["k"], a["y"], a["c"], a["C"],
                            a["S"], a["Sc"], a["W"], a["T"], a["eps"], a["lam"], a["kappa"])

        lse = call("lse")
        zero = mpmath.mpf(0)
        if target is None:
            return lse, zero, zero, [zero] * C, [zero] * C
        z = call("z")
        z_grad = [call("z_grad", k=q) for q in range(C)]
        if probability:
            loss = mpmath.fsum(call("prob_loss_term", c=q) for q in range(C)
                               if call("coefficient", c=q) != 0)
            grad = [call("prob_grad", k=q) for q in range(C)]
        else:
            loss = call("row_loss", y=target)
            grad = [call("row_grad", k=q, y=target) for q in range(C)]
        return lse, z, loss, z_grad, grad


def _evaluate_options(scores, targets, reduction, weight, ignore_index, label_smoothing, z_loss,
                      softcap, n_classes) -> dict:
    """One evaluation at the current mpmath precision (mpf results)."""
    smoothing = label_smoothing != 0
    fn = _option_functions(smoothing, softcap is not None)
    n_rows = len(scores)
    w = tuple(weight) if weight is not None else (1.0,) * n_classes
    eps, lam = mpmath.mpf(label_smoothing), mpmath.mpf(z_loss)
    kappa = mpmath.mpf(softcap) if softcap is not None else None
    probability = bool(targets) and isinstance(targets[0], (list, tuple))
    if probability:
        kept = [1] * n_rows
        omega = [mpmath.mpf(1)] * n_rows  # probability targets: w_{y_i} -> 1
        row_targets = [tuple(t) for t in targets]
    else:
        kept = [int(lab != ignore_index) for lab in targets]
        omega = [mpmath.mpf(w[lab]) if keep else mpmath.mpf(1) for lab, keep in zip(targets, kept)]
        row_targets = [lab if keep else None for lab, keep in zip(targets, kept)]
    lses, zs, losses, hs, gs = [], [], [], [], []
    for row, target in zip(scores, row_targets):
        lse, z, loss, h, g = _option_row(tuple(row), target, w, eps, lam, kappa, n_classes,
                                         smoothing, mpmath.mp.dps)
        lses.append(lse)
        zs.append(z)
        losses.append(loss)
        hs.append(h)
        gs.append(g)
    D = fn["denominator"](kept, omega, n_rows)
    n = fn["count"](kept, n_rows)

    def batch(name, i=0, g=0, h=0, r=0):
        return fn[name](losses, zs, kept, omega, n_rows, i, g, h, r, D, n)

    if reduction in ("none", "sum"):
        if reduction == "none":
            loss = [batch("loss none", i=q) for q in range(n_rows)]
            z = [batch("z none", i=q) for q in range(n_rows)]
        else:
            loss, z = batch("loss sum"), batch("z sum")
        grad = [[batch(f"grad {reduction}", g=g, h=h, r=r) for g, h in zip(grow, hrow)]
                for grow, hrow, r in zip(gs, hs, kept)]
    elif reduction == "mean":
        nan = mpmath.nan
        if n == 0:  # an empty or all-ignored batch: NaN, zero gradient
            loss, z = nan, nan
            grad = [[mpmath.mpf(0)] * n_classes for _ in range(n_rows)]
        elif D == 0:  # the cross-entropy part is NaN, and the counted rows' gradient
            loss, z = nan, batch("z mean")
            grad = [[nan if r else mpmath.mpf(0) for _ in range(n_classes)] for r in kept]
        else:
            loss, z = batch("loss mean"), batch("z mean")
            grad = [[batch("grad mean", g=g, h=h, r=r) if r else mpmath.mpf(0)
                     for g, h in zip(grow, hrow)] for grow, hrow, r in zip(gs, hs, kept)]
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    return {"loss": loss, "grad": grad, "z": z, "lse": lses}


def _options_precision(scores, softcap) -> int:
    """:func:`_starting_precision` for the (soft-capped) scores, plus the digits that
    ``1 - tanh^2(f/kappa)`` loses (about ``2 |f| / kappa / ln 10``)."""
    if softcap is None:
        return _starting_precision(scores)
    capped = [[softcap * math.tanh(v / softcap) if math.isfinite(v) else v for v in row]
              for row in scores]
    extra = max([2 * abs(v) / softcap / math.log(10) for row in scores for v in row
                 if math.isfinite(v)], default=0.0)
    return _starting_precision(capped) + math.ceil(extra)


def reference_options(scores: Sequence[Sequence[float]], targets: Sequence, *, n_classes: int,
                      reduction: str = "mean", weight: Sequence[float] | None = None,
                      ignore_index: int = -100, label_smoothing: float = 0.0,
                      z_loss: float = 0.0, softcap: float | None = None) -> OptionsReference:
    """Expected loss, gradient, z part and lse with the further options.

    Parameters
    ----------
    scores : list of rows of float
        The scores exactly as the kernels see them; may contain ``-inf`` and ``nan``.
    targets : list
        One class index per row (``ignore_index`` marks an ignored row), or one
        list of ``n_classes`` probability targets per row (finite, >= 0, any sum).
    n_classes : int
        ``C``.
    reduction, weight, ignore_index, label_smoothing
        As in ``torch.nn.functional.cross_entropy``; probability targets ignore
        ``ignore_index`` and "mean" divides by the number of rows.
    z_loss : float
        ``lambda >= 0``: each counted row adds ``lambda * lse^2`` ("mean": divided
        by the number of counted rows).
    softcap : float or None
        ``kappa > 0``: every score ``f`` becomes ``kappa * tanh(f / kappa)`` first.

    Returns
    -------
    OptionsReference
        Values stable to :data:`DIGITS` digits between two working precisions.
    """
    if not all(math.isfinite(v) for v in (weight or [])):
        raise ValueError("weights must be finite")
    dps = _options_precision(scores, softcap)
    finite = [abs(v) for row in scores for v in row if math.isfinite(v)]
    top = max(finite, default=0.0)
    scale = 1 + top + max(weight or [1.0]) + z_loss * (1 + top) ** 2
    args = (scores, targets, reduction, weight, ignore_index, label_smoothing, z_loss, softcap,
            n_classes)
    with mpmath.workdps(dps):
        previous = _evaluate_options(*args)
    while dps <= MAX_DPS:
        with mpmath.workdps(2 * dps):
            current = _evaluate_options(*args)
        settled = {key: _settled(previous[key], current[key], dps, scale) for key in current}
        if all(v is not None for v in settled.values()):
            return OptionsReference(dps=dps, **settled)
        previous, dps = current, 2 * dps
    raise ArithmeticError(f"results did not settle below {MAX_DPS} digits")


# --------------------------------------------------------------------------
# The fused linear layer and the case study's classifier
# --------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _linear_functions() -> dict:
    """mpmath functions of the linear layer's definitions and proved closed forms."""
    forms, defs = closed_forms(), definitions()
    x, W, b, g = E.lin_x, E.lin_W, E.lin_b, E.logit_grad
    i, v, d, c, N, D, V, C = E.i, E.out, E.feature, E.c, E.N, E.n_features, E.n_outputs, E.C

    def lam(args, expr):
        return sp.lambdify(args, expr, modules="mpmath")

    return {
        "z": lam((x, W, b, i, v, D), defs["z"]),
        "s": lam((x, W, b, i, c, D), defs["s"]),
        "penalty": lam((W, E.reg, D, C), defs["penalty"]),
        "grad_input": lam((g, W, i, d, V), forms["linear grad_input"]),
        "grad_linear_weight": lam((g, x, v, d, N), forms["linear grad_linear_weight"]),
        "grad_linear_bias": lam((g, v, N), forms["linear grad_linear_bias"]),
        "dW": lam((g, x, W, E.reg, d, c, N), forms["classifier dW"]),
        "db": lam((g, c, N), forms["classifier db"]),
    }


class _Table:
    """Rows of mpf indexed ``a[r, q]``, as the lambdified forms index the IndexedBases."""

    def __init__(self, rows):
        self.rows = [[mpmath.mpf(value) for value in row] for row in rows]

    def __getitem__(self, index):
        r, q = index
        return self.rows[r][q]


@dataclass
class LinearReference:
    """Exact results of the fused linear layer (strings, :data:`DIGITS` digits).

    ``loss`` is a string, or a list of strings for reduction ``"none"``;
    ``grad_input`` has the rows' shape (N, D), ``grad_linear_weight`` (V, D) and
    ``grad_linear_bias`` (V,) (with no bias, the gradient of a zero bias).  ``dps``
    is the working precision that produced them.
    """

    loss: object
    grad_input: list
    grad_linear_weight: list
    grad_linear_bias: list
    dps: int


@dataclass
class ClassifierReference:
    """Exact results of the case study's classifier: ``loss`` (cross-entropy plus
    ``reg/2 sum W^2``), ``dW`` (D, C) and ``db`` (C,) as strings."""

    loss: str
    dW: list
    db: list
    dps: int


def _evaluate_linear(inputs, weight_matrix, bias, targets, options: dict, classifier: bool,
                     reg) -> dict:
    """One evaluation at the current mpmath precision (mpf results)."""
    fn = _linear_functions()
    n_rows = len(inputs)
    n_features = len(weight_matrix[0]) if not classifier else len(weight_matrix)
    n_out = len(weight_matrix) if not classifier else len(weight_matrix[0])
    x, W = _Table(inputs), _Table(weight_matrix)
    b = [mpmath.mpf(v) for v in bias] if bias is not None else [mpmath.mpf(0)] * n_out
    logit = fn["s"] if classifier else fn["z"]
    logits = [[logit(x, W, b, r, u, n_features) for u in range(n_out)] for r in range(n_rows)]
    out = _evaluate_options(logits, targets, n_classes=n_out, **options)
    g = _Table(out["grad"])
    if classifier:
        penalty = fn["penalty"](W, mpmath.mpf(reg), n_features, n_out)
        return {"loss": out["loss"] + penalty,
                "dW": [[fn["dW"](g, x, W, mpmath.mpf(reg), q, u, n_rows) for u in range(n_out)]
                       for q in range(n_features)],
                "db": [fn["db"](g, u, n_rows) for u in range(n_out)]}
    zero = mpmath.mpf(0)
    return {
        "loss": out["loss"],
        "grad_input": [[fn["grad_input"](g, W, r, q, n_out) for q in range(n_features)]
                       for r in range(n_rows)],
        "grad_linear_weight": [[fn["grad_linear_weight"](g, x, u, q, n_rows) if n_rows else zero
                                for q in range(n_features)] for u in range(n_out)],
        "grad_linear_bias": [fn["grad_linear_bias"](g, u, n_rows) if n_rows else zero
                             for u in range(n_out)],
    }


def _settle_linear(inputs, weight_matrix, bias, targets, options: dict, classifier: bool,
                   reg=0.0) -> tuple[dict, int]:
    """Evaluate at increasing precision until two agree on every output."""
    transposed = (list(zip(*weight_matrix)) if classifier else weight_matrix)  # (V, D)
    approximate = [[math.fsum(a * w for a, w in zip(row, column))
                    + (bias[u] if bias is not None else 0.0)
                    for u, column in enumerate(transposed)] for row in inputs]
    dps = _options_precision(approximate, options["softcap"])
    entries = [abs(v) for v in [*(a for row in inputs for a in row),
                                *(w for row in weight_matrix for w in row), *(bias or [])]]
    top = max((abs(v) for row in approximate for v in row), default=0.0)
    scale = ((1 + top + max(options["weight"] or [1.0]) + options["z_loss"] * (1 + top) ** 2)
             * (1 + max(entries, default=0.0)) ** 2 * (1 + len(inputs) + len(transposed))
             + abs(reg) * max(entries, default=0.0) ** 2)
    args = (inputs, weight_matrix, bias, targets, options, classifier, reg)
    with mpmath.workdps(dps):
        previous = _evaluate_linear(*args)
    while dps <= MAX_DPS:
        with mpmath.workdps(2 * dps):
            current = _evaluate_linear(*args)
        settled = {key: _settled(previous[key], current[key], dps, scale) for key in current}
        if all(v is not None for v in settled.values()):
            return settled, dps
        previous, dps = current, 2 * dps
    raise ArithmeticError(f"results did not settle below {MAX_DPS} digits")


def reference_linear(inputs: Sequence[Sequence[float]], linear_weight: Sequence[Sequence[float]],
                     linear_bias: Sequence[float] | None, targets: Sequence, *,
                     reduction: str = "mean", weight: Sequence[float] | None = None,
                     ignore_index: int = -100, label_smoothing: float = 0.0,
                     z_loss: float = 0.0, softcap: float | None = None) -> LinearReference:
    """Expected loss and gradients of the fused linear layer + softmax cross-entropy.

    The logits ``z = x W^T + b`` from their definition, the loss and its gradient
    ``g = dL/dz`` from the closed forms of :func:`reference_options`, then
    ``grad_input = g W``, ``grad_linear_weight = g^T x`` and ``grad_linear_bias =
    sum of g over the rows`` from the closed forms of the steps 'linear x', 'linear W'
    and 'linear b', all at the same working precision.

    Parameters
    ----------
    inputs : list of N rows of D floats
        The input rows exactly as the kernels see them.
    linear_weight : list of V rows of D floats
    linear_bias : list of V floats, or None
    targets, reduction, weight, ignore_index, label_smoothing, z_loss, softcap
        As in :func:`reference_options` (``n_classes`` is V).

    Returns
    -------
    LinearReference
        Values stable to :data:`DIGITS` digits between two working precisions.
    """
    if not all(math.isfinite(v) for v in (weight or [])):
        raise ValueError("weights must be finite")
    options = dict(reduction=reduction, weight=weight, ignore_index=ignore_index,
                   label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap)
    settled, dps = _settle_linear(inputs, linear_weight, linear_bias, targets, options, False)
    return LinearReference(dps=dps, **settled)


def reference_classifier(X: Sequence[Sequence[float]], W: Sequence[Sequence[float]],
                         b: Sequence[float] | None, y: Sequence[int], *, reg: float,
                         reduction: str = "mean", weight: Sequence[float] | None = None,
                         ignore_index: int = -100,
                         label_smoothing: float = 0.0) -> ClassifierReference:
    """Expected loss, ``dW`` and ``db`` of the case study's linear classifier.

    ``scores = X W + b`` (W of shape (D, C)) from its definition, the
    cross-entropy and its gradient ``g`` from :func:`reference_options`, the loss
    plus ``reg/2 sum W^2``, ``dW = X^T g + reg W`` and ``db = sum of g over the
    rows`` from the closed forms of the steps 'classifier W' and 'classifier b'.
    ``b=None`` is a zero bias (``db`` its gradient).
    """
    if not all(math.isfinite(v) for v in (weight or [])):
        raise ValueError("weights must be finite")
    options = dict(reduction=reduction, weight=weight, ignore_index=ignore_index,
                   label_smoothing=label_smoothing, z_loss=0.0, softcap=None)
    settled, dps = _settle_linear(X, W, b, y, options, True, reg)
    return ClassifierReference(dps=dps, **settled)
