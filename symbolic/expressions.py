"""SymPy definitions and closed forms of the softmax cross-entropy family.

This module is the single source of the formulas that the rest of the
project trusts:

* :mod:`symbolic.derivation` proves that every *closed form* below equals the
  ``sympy.diff`` of the corresponding *definition*, and
* :mod:`symbolic.evaluate` evaluates the very same closed-form expressions with
  mpmath to produce the reference cases in ``tests/data/reference_cases.json``.

Notation follows the CS231n lecture notes on the softmax classifier
("Softmax derivation", page 13/18): ``f_j`` is the score of class ``j``, ``y``
the correct class, ``P_k = e^{f_k} / sum_j e^{f_j}`` and
``L = -log P_y = -f_y + log sum_j e^{f_j}``.

The option semantics are those of PyTorch's ``torch.nn.functional.cross_entropy``
with class-index targets (``weight``, ``ignore_index``, ``label_smoothing``,
``reduction``): for one row with target ``y``

    l = (1 - eps) * w_y * (-log P_y) + (eps / C) * sum_c w_c * (-log P_c),

``l = 0`` for an ignored row, ``"sum"`` adds the rows, and ``"mean"`` divides the
sum by ``D = sum over non-ignored rows of w_{y_i}``.

General-``C`` objects use :class:`sympy.IndexedBase` and :class:`sympy.Sum`.
Closed forms are written in terms of the plain positive symbols ``S`` (standing
for ``sum_j e^{f_j}``) and ``W`` (standing for ``sum_c w_c``), which keeps them
cheap to evaluate for large ``C`` and keeps SymPy's ``simplify`` away from
unevaluated sums (``sum_simplify`` is fragile on them).
"""

from __future__ import annotations

import sympy as sp

__all__ = [
    "C", "N", "i", "j", "k", "y", "c", "f", "w", "eps", "m", "S", "W",
    "S_sum", "W_sum", "exp_sum", "softmax", "log_softmax",
    "loss_prob_form", "loss_logit_form", "row_loss_definition",
    "row_loss_closed", "row_grad_closed", "row_grad_plain_closed",
    "hessian_closed", "row_hessian_closed", "softmax_closed",
    "log_softmax_closed", "shifted_softmax_closed", "shifted_log_softmax_closed",
    "row_loss", "row_loss_weights", "row_in_batch", "batch_denominator",
    "batch_loss_closed", "batch_grad_closed", "concrete",
]

# --------------------------------------------------------------------------
# Symbols
# --------------------------------------------------------------------------
#: number of classes
C = sp.Symbol("C", integer=True, positive=True)
#: number of rows in a batch
N = sp.Symbol("N", integer=True, positive=True)
#: row index (batch)
i = sp.Symbol("i", integer=True, nonnegative=True)
#: summation index over classes, as in the notes' sum_j e^{f_j}
j = sp.Symbol("j", integer=True, nonnegative=True)
#: class with respect to which we differentiate
k = sp.Symbol("k", integer=True, nonnegative=True)
#: correct class (the notes' y_i)
y = sp.Symbol("y", integer=True, nonnegative=True)
#: second summation index over classes (weights, label smoothing, Hessian)
c = sp.Symbol("c", integer=True, nonnegative=True)
#: scores (logits) of one row
f = sp.IndexedBase("f", real=True)
#: class weights
w = sp.IndexedBase("w", positive=True)
#: label-smoothing parameter epsilon in [0, 1]
eps = sp.Symbol("varepsilon", nonnegative=True)
#: shift (the kernels use m = max_j f_j)
m = sp.Symbol("m", real=True)
#: stands for sum_j e^{f_j}
S = sp.Symbol("S", positive=True)
#: stands for sum_c w_c
W = sp.Symbol("W", positive=True)


def exp_sum(index: sp.Symbol = j, shift: sp.Expr = sp.S.Zero) -> sp.Sum:
    """``Sum(exp(f[index] - shift), (index, 0, C - 1))``, unevaluated."""
    return sp.Sum(sp.exp(f[index] - shift), (index, 0, C - 1))


#: sum_j e^{f_j} as a SymPy Sum
S_sum = exp_sum(j)
#: sum_c w_c as a SymPy Sum
W_sum = sp.Sum(w[c], (c, 0, C - 1))


# --------------------------------------------------------------------------
# Definitions (general C)
# --------------------------------------------------------------------------
def softmax(index: sp.Expr, total: sp.Expr = S_sum) -> sp.Expr:
    """Definition ``P_index = e^{f_index} / sum_j e^{f_j}``."""
    return sp.exp(f[index]) / total


def log_softmax(index: sp.Expr, total: sp.Expr = S_sum) -> sp.Expr:
    """Definition ``log P_index = f_index - log sum_j e^{f_j}``."""
    return f[index] - sp.log(total)


#: the notes' first loss form, -log(e^{f_y} / sum_j e^{f_j})
loss_prob_form = -sp.log(sp.exp(f[y]) / S_sum)
#: the notes' second loss form, -f_y + log sum_j e^{f_j}
loss_logit_form = -f[y] + sp.log(S_sum)

#: PyTorch's per-row loss with class weights and label smoothing (definition)
row_loss_definition = (
    (1 - eps) * w[y] * (-log_softmax(y))
    + eps / C * sp.Sum(w[c] * (-log_softmax(c)), (c, 0, C - 1))
)

# --------------------------------------------------------------------------
# Closed forms (general C, in terms of S and W)
# --------------------------------------------------------------------------
#: P_k with S = sum_j e^{f_j}
softmax_closed = sp.exp(f[k]) / S
#: log P_k with S = sum_j e^{f_j}
log_softmax_closed = f[k] - sp.log(S)
#: the kernels' overflow-safe softmax: shift every score by m (m = max_j f_j)
shifted_softmax_closed = sp.exp(f[k] - m) / exp_sum(j, m)
#: the kernels' overflow-safe log-softmax
shifted_log_softmax_closed = (f[k] - m) - sp.log(exp_sum(j, m))

#: per-row loss evaluated with S standing for sum_j e^{f_j}
row_loss_closed = (
    (1 - eps) * w[y] * (sp.log(S) - f[y])
    + eps / C * sp.Sum(w[c] * (sp.log(S) - f[c]), (c, 0, C - 1))
)
#: the notes' result dL/df_k = P_k - 1(y = k)
row_grad_plain_closed = softmax_closed - sp.KroneckerDelta(k, y)
#: dl/df_k with weights and label smoothing
row_grad_closed = (
    softmax_closed * ((1 - eps) * w[y] + eps / C * W)
    - (1 - eps) * w[y] * sp.KroneckerDelta(k, y)
    - eps / C * w[k]
)
#: d^2 L / (df_j df_k) = P_j (delta_jk - P_k)
hessian_closed = sp.exp(f[j]) / S * (sp.KroneckerDelta(j, k) - sp.exp(f[k]) / S)
#: the same with weights and label smoothing: the Hessian is scaled by
#: a = (1 - eps) w_y + (eps / C) W
row_hessian_closed = ((1 - eps) * w[y] + eps / C * W) * hessian_closed


# --------------------------------------------------------------------------
# Batch reductions
# --------------------------------------------------------------------------
#: per-row loss values l_i, "row is not ignored" indicators r_i and target
#: weights w_{y_i} of a batch (indexed by i)
row_loss = sp.IndexedBase("l", real=True)
row_in_batch = sp.IndexedBase("r", nonnegative=True)
row_loss_weights = sp.IndexedBase("omega", positive=True)

#: D = sum over non-ignored rows of w_{y_i}
batch_denominator = sp.Sum(row_in_batch[i] * row_loss_weights[i], (i, 0, N - 1))
#: the three reductions of l_i (ignored rows have r_i = 0)
batch_loss_closed = {
    "none": row_in_batch[i] * row_loss[i],
    "sum": sp.Sum(row_in_batch[i] * row_loss[i], (i, 0, N - 1)),
    "mean": sp.Sum(row_in_batch[i] * row_loss[i], (i, 0, N - 1)) / batch_denominator,
}
#: per-row gradient g_{i,k} of a batch
row_grad = sp.IndexedBase("g", real=True)
#: Symbol for D in the gradient closed form
D = sp.Symbol("D", positive=True)
#: dL/df_{i,k} for the three reductions ("none": the Jacobian's diagonal block)
batch_grad_closed = {
    "none": row_in_batch[i] * row_grad[i, k],
    "sum": row_in_batch[i] * row_grad[i, k],
    "mean": row_in_batch[i] * row_grad[i, k] / D,
}


# --------------------------------------------------------------------------
# Concrete instances
# --------------------------------------------------------------------------
def concrete(expr: sp.Expr, n_classes: int, scores, weights=None, **indices) -> sp.Expr:
    """Instantiate a general-``C`` expression for ``C = n_classes``.

    ``indices`` gives integer values to the free indices (``k=``, ``y=``,
    ``j=``); unevaluated sums are expanded; ``f[n]``, ``w[n]``, ``S`` and
    ``W`` are replaced by the explicit ``scores[n]``, ``weights[n]``,
    ``sum_n exp(scores[n])`` and ``sum_n weights[n]``.  ``weights=None``
    means all class weights are 1.

    Parameters
    ----------
    expr : sympy.Expr
        A definition or closed form from this module.
    n_classes : int
        Concrete number of classes.
    scores, weights : sequence of sympy.Expr
        Explicit symbols (or values) for ``f_0..f_{C-1}`` and ``w_0..w_{C-1}``.
    """
    if weights is None:
        weights = [sp.S.One] * n_classes
    named = {"k": k, "y": y, "j": j, "c": c, "i": i}
    sub = {C: n_classes}
    sub.update({named[name]: value for name, value in indices.items()})
    out = expr.subs(sub).doit()
    replace = {S: sp.Add(*[sp.exp(s) for s in scores]), W: sp.Add(*weights)}
    for n in range(n_classes):
        replace[f[n]] = scores[n]
        replace[w[n]] = weights[n]
    return out.xreplace(replace)
