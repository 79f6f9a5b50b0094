"""SymPy definitions and closed forms of the softmax cross-entropy family.

This module is the single source of the formulas that the rest of the
project trusts:

* :mod:`symbolic.derivation` proves that every *closed form* below equals the
  ``sympy.diff`` of the corresponding *definition*, and
* :mod:`symbolic.evaluate` evaluates the very same closed-form expressions with
  mpmath to produce the reference cases in ``tests/data/reference_cases.json``
  and ``tests/data/reference_cases_options.json``.

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

The further options (probability targets, z-loss, logit soft-capping) are
defined in the sections below: a probability-target row ``t`` has the loss
``-sum_c w_c t'_c log P_c`` with ``t'_c = (1 - eps) t_c + eps / C``; the z-loss
of a row is ``lambda * lse^2`` with ``lse = log sum_j e^{f_j}``; soft-capping
replaces every score ``f_k`` by ``f'_k = kappa * tanh(f_k / kappa)`` before
everything else.  With the z-loss, ``"mean"`` divides the cross-entropy part by
``D`` and the z part by the number ``n`` of non-ignored rows (probability
targets: both by ``N``).

The fused linear layer computes the logits ``z_{i,v} = sum_d x_{i,d} W_{v,d} + b_v``
(``z = x @ W.T + b``, ``W`` of shape ``(V, D)``) and the loss of ``z``; with
``g_{i,v} = dL/dz_{i,v}`` its gradients are ``g @ W``, ``g.T @ x`` and the row sum of
``g``.  The case study's classifier has the scores ``s = X @ W + b`` (``W`` of shape
``(D, C)``) and the loss ``L_data(s) + (reg/2) sum W^2``.

General-``C`` objects use :class:`sympy.IndexedBase` and :class:`sympy.Sum`.
Closed forms are written in terms of the plain positive symbols ``S`` (standing
for ``sum_j e^{f_j}``), ``W`` (standing for ``sum_c w_c``), ``T`` (``sum_c w_c
t_c``) and ``S'`` (``sum_j e^{f'_j}``), which keeps them cheap to evaluate for
large ``C`` and keeps SymPy's ``simplify`` away from unevaluated sums
(``sum_simplify`` is fragile on them).
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.cfunctions import log1p

__all__ = [
    "C", "N", "i", "j", "k", "y", "c", "f", "w", "eps", "m", "S", "W",
    "S_sum", "W_sum", "exp_sum", "softmax", "log_softmax",
    "loss_prob_form", "loss_logit_form", "row_loss_definition",
    "row_loss_closed", "row_grad_closed", "row_grad_plain_closed",
    "hessian_closed", "row_hessian_closed", "softmax_closed",
    "log_softmax_closed", "shifted_softmax_closed", "shifted_log_softmax_closed",
    "row_loss", "row_loss_weights", "row_in_batch", "batch_denominator",
    "batch_loss_closed", "batch_grad_closed", "concrete",
    # further options
    "lam", "kappa", "t", "fc", "T", "Sc", "n", "T_sum", "Sc_sum", "tprime",
    "lse_definition", "z_definition", "prob_loss_definition", "softcap", "capped",
    "at_capped", "lse_closed", "z_closed", "z_grad_closed", "prob_loss_term",
    "prob_loss_closed", "prob_grad_closed", "softcap_factor", "softcap_factor_stable",
    "softcap_stable", "softcap_x", "capped_closed_forms",
    "row_z", "row_z_grad", "batch_count", "batch_loss_z_closed", "batch_grad_z_closed",
    "batch_z_closed",
    # the kernels' rewrites
    "n_max", "t_rest", "shifted_sum", "log_s_log1p", "grad_y_minus_one",
    "shifted_row_loss_closed", "shifted_grad_y_closed", "shifted_prob_loss_closed",
    "shifted_lse", "v", "hessian_quadratic_form", "hessian_variance_form",
    # the linear layer and the classifier
    "n_features", "n_outputs", "feature", "out", "row_b", "out_b", "feature_b", "lin_x",
    "lin_W", "lin_b", "logit_grad", "linear_logit", "linear_grad_input_closed",
    "linear_grad_weight_closed", "linear_grad_bias_closed", "reg", "labels",
    "classifier_score", "classifier_penalty", "classifier_grad_weight_closed",
    "classifier_grad_bias_closed",
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
#: z-loss coefficient lambda >= 0
lam = sp.Symbol("lambda", nonnegative=True)
#: soft-capping constant (the ``softcap`` argument) kappa > 0
kappa = sp.Symbol("kappa", positive=True)
#: probability targets of one row (finite, >= 0, any sum)
t = sp.IndexedBase("t", nonnegative=True)
#: soft-capped scores f'_k = kappa tanh(f_k / kappa)
fc = sp.IndexedBase("f'", real=True)
#: stands for sum_c w_c t_c
T = sp.Symbol("T", nonnegative=True)
#: stands for sum_j e^{f'_j} (soft-capped scores)
Sc = sp.Symbol("S'", positive=True)
#: number of non-ignored rows of a batch (the z-loss "mean" divides by it)
n = sp.Symbol("n", positive=True)


def exp_sum(index: sp.Symbol = j, shift: sp.Expr = sp.S.Zero) -> sp.Sum:
    """``Sum(exp(f[index] - shift), (index, 0, C - 1))``, unevaluated."""
    return sp.Sum(sp.exp(f[index] - shift), (index, 0, C - 1))


#: sum_j e^{f_j} as a SymPy Sum
S_sum = exp_sum(j)
#: sum_c w_c as a SymPy Sum
W_sum = sp.Sum(w[c], (c, 0, C - 1))
#: sum_c w_c t_c as a SymPy Sum
T_sum = sp.Sum(w[c] * t[c], (c, 0, C - 1))
#: sum_j e^{f'_j} as a SymPy Sum
Sc_sum = sp.Sum(sp.exp(fc[j]), (j, 0, C - 1))


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
# Probability targets, z-loss, soft-capping: definitions (general C)
# --------------------------------------------------------------------------
def tprime(index: sp.Expr) -> sp.Expr:
    """Smoothed probability target ``t'_index = (1 - eps) t_index + eps / C``."""
    return (1 - eps) * t[index] + eps / C


#: log-sum-exp of one row
lse_definition = sp.log(S_sum)
#: the z-loss of one row, lambda * lse^2 (not weighted by any class weight)
z_definition = lam * sp.log(S_sum) ** 2
#: the loss of a row of probability targets (t need not sum to 1)
prob_loss_definition = -sp.Sum(w[c] * tprime(c) * log_softmax(c), (c, 0, C - 1))


def softcap(score: sp.Expr) -> sp.Expr:
    """Definition of soft-capping: ``kappa * tanh(score / kappa)``."""
    return kappa * sp.tanh(score / kappa)


def capped(expr: sp.Expr) -> sp.Expr:
    """A definition with every score ``f_n`` replaced by its soft-capped value."""
    return expr.replace(lambda e: isinstance(e, sp.Indexed) and e.base == f,
                        lambda e: softcap(e))


# --------------------------------------------------------------------------
# Probability targets, z-loss, soft-capping: closed forms
# --------------------------------------------------------------------------
#: lse with S standing for sum_j e^{f_j}
lse_closed = sp.log(S)
#: z-loss with S standing for sum_j e^{f_j}
z_closed = lam * sp.log(S) ** 2
#: d(lambda lse^2)/df_k = 2 lambda lse P_k
z_grad_closed = 2 * lam * sp.log(S) * sp.exp(f[k]) / S
#: one term of the probability-target loss; the loss is the sum over c
prob_loss_term = w[c] * tprime(c) * (sp.log(S) - f[c])
#: the probability-target loss, sum_c w_c t'_c (log S - f_c)
prob_loss_closed = sp.Sum(prob_loss_term, (c, 0, C - 1))
#: dl/df_k = P_k sum_c w_c t'_c - w_k t'_k, with sum_c w_c t'_c = (1-eps) T + eps/C W
prob_grad_closed = sp.exp(f[k]) / S * ((1 - eps) * T + eps / C * W) - w[k] * tprime(k)
#: d f'_k / d f_k
softcap_factor = 1 - sp.tanh(f[k] / kappa) ** 2


def at_capped(expr: sp.Expr) -> sp.Expr:
    """A closed form evaluated at the soft-capped scores (f -> f', S -> S')."""
    return expr.xreplace({f: fc, S: Sc})


def _capped_closed_forms() -> dict:
    """The closed forms of a soft-capped row: the loss is the uncapped closed form
    at f', each gradient the uncapped one at f' times d f'_k / d f_k."""
    return {
        "lse": at_capped(lse_closed),
        "z": at_capped(z_closed),
        "z_grad": at_capped(z_grad_closed) * softcap_factor,
        "row_loss": at_capped(row_loss_closed),
        "row_grad": at_capped(row_grad_closed) * softcap_factor,
        "prob_loss_term": at_capped(prob_loss_term),
        "prob_loss": at_capped(prob_loss_closed),
        "prob_grad": at_capped(prob_grad_closed) * softcap_factor,
    }


capped_closed_forms = _capped_closed_forms()

#: x >= 0: 1 - tanh(x)^2 without cancellation (the kernels' form of d f'/d f)
softcap_x = sp.Symbol("x", nonnegative=True)
softcap_factor_stable = 4 * sp.exp(-2 * softcap_x) / (1 + sp.exp(-2 * softcap_x)) ** 2
#: x >= 0: tanh(x) = (1 - e^{-2x}) / (1 + e^{-2x})
softcap_stable = (1 - sp.exp(-2 * softcap_x)) / (1 + sp.exp(-2 * softcap_x))


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

#: per-row z-loss values z_i and their gradients h_{i,k}
row_z = sp.IndexedBase("z", real=True)
row_z_grad = sp.IndexedBase("h", real=True)
#: n = number of non-ignored rows
batch_count = sp.Sum(row_in_batch[i], (i, 0, N - 1))
#: the reductions with a z-loss: "mean" divides the cross-entropy part by D and the
#: z part by n (probability targets: r_i = 1 and w_{y_i} -> 1, so D = n = N)
batch_loss_z_closed = {
    "none": row_in_batch[i] * (row_loss[i] + row_z[i]),
    "sum": sp.Sum(row_in_batch[i] * (row_loss[i] + row_z[i]), (i, 0, N - 1)),
    "mean": (sp.Sum(row_in_batch[i] * row_loss[i], (i, 0, N - 1)) / batch_denominator
             + sp.Sum(row_in_batch[i] * row_z[i], (i, 0, N - 1)) / batch_count),
}
#: dL/df_{i,k} with a z-loss (D and n stand for the two denominators)
batch_grad_z_closed = {
    "none": row_in_batch[i] * (row_grad[i, k] + row_z_grad[i, k]),
    "sum": row_in_batch[i] * (row_grad[i, k] + row_z_grad[i, k]),
    "mean": row_in_batch[i] * (row_grad[i, k] / D + row_z_grad[i, k] / n),
}
#: the z part of the loss, reduced like the loss
batch_z_closed = {
    "none": row_in_batch[i] * row_z[i],
    "sum": sp.Sum(row_in_batch[i] * row_z[i], (i, 0, N - 1)),
    "mean": sp.Sum(row_in_batch[i] * row_z[i], (i, 0, N - 1)) / batch_count,
}


# --------------------------------------------------------------------------
# The kernels' rewrites (m = max_j f_j)
# --------------------------------------------------------------------------
#: number of maximal scores (each has e^{f_k - m} = 1)
n_max = sp.Symbol("n_max", integer=True, positive=True)
#: sum of e^{f_k - m} over the other scores
t_rest = sp.Symbol("t", nonnegative=True)
#: s = sum_j e^{f_j - m}
shifted_sum = exp_sum(j, m)
#: log s as the kernels compute it
log_s_log1p = log1p(n_max - 1 + t_rest)
#: P_y - 1 as the kernels compute it
grad_y_minus_one = -(shifted_sum - sp.exp(f[y] - m)) / shifted_sum
#: the kernels' row loss: (1-eps) w_y (m - f_y + log s) + eps/C (W log s - sum_c w_c (f_c - m))
shifted_row_loss_closed = (
    (1 - eps) * w[y] * (m - f[y] + sp.log(shifted_sum))
    + eps / C * (W * sp.log(shifted_sum) - sp.Sum(w[c] * (f[c] - m), (c, 0, C - 1)))
)
#: the kernels' k = y gradient entry:
#: -(1-eps) w_y (s - e_y)/s + eps/C W e_y/s - eps/C w_y
shifted_grad_y_closed = (
    -(1 - eps) * w[y] * (shifted_sum - sp.exp(f[y] - m)) / shifted_sum
    + eps / C * W * sp.exp(f[y] - m) / shifted_sum - eps / C * w[y]
)
#: lse = m + log s
shifted_lse = m + sp.log(shifted_sum)
#: the probability-target loss: A log s - sum_c w_c t'_c (f_c - m), A = sum_c w_c t'_c
shifted_prob_loss_closed = (
    ((1 - eps) * T + eps / C * W) * sp.log(shifted_sum)
    - sp.Sum(w[c] * tprime(c) * (f[c] - m), (c, 0, C - 1))
)

#: a direction in score space (the Hessian's quadratic form)
v = sp.IndexedBase("v", real=True)
#: v^T H v = sum_k P_k v_k^2 - (sum_k P_k v_k)^2, P_k = e^{f_k}/S
hessian_quadratic_form = (sp.Sum(sp.exp(f[k]) / S * v[k] ** 2, (k, 0, C - 1))
                          - sp.Sum(sp.exp(f[k]) / S * v[k], (k, 0, C - 1)) ** 2)
#: the same as a variance: sum_k P_k (v_k - sum_j P_j v_j)^2 >= 0
hessian_variance_form = sp.Sum(
    sp.exp(f[k]) / S * (v[k] - sp.Sum(sp.exp(f[j]) / S * v[j], (j, 0, C - 1))) ** 2,
    (k, 0, C - 1))


# --------------------------------------------------------------------------
# The fused linear layer and the case study's linear classifier
# --------------------------------------------------------------------------
#: number of input features (the linear layer's inner dimension)
n_features = sp.Symbol("D", integer=True, positive=True)
#: number of outputs (classes) of the fused linear layer
n_outputs = sp.Symbol("V", integer=True, positive=True)
#: feature index and output (class) index of the linear layer; i is the row index
feature = sp.Symbol("d", integer=True, nonnegative=True)
out = sp.Symbol("v", integer=True, nonnegative=True)
#: bound indices of the linear layer's sums: rows, outputs, features
row_b = sp.Symbol("r", integer=True, nonnegative=True)
out_b = sp.Symbol("u", integer=True, nonnegative=True)
feature_b = sp.Symbol("q", integer=True, nonnegative=True)
#: the input rows x_{i,d}, the layer's weight W_{v,d} (shape (V, D)) and bias b_v
lin_x = sp.IndexedBase("x", real=True)
lin_W = sp.IndexedBase("W", real=True)
lin_b = sp.IndexedBase("b", real=True)
#: g_{i,v} = dL/dz_{i,v}: the gradient of the loss with respect to the logits
#: (any loss; for the fused function the batch gradient of the chosen reduction)
logit_grad = sp.IndexedBase("g", real=True)


def linear_logit(row: sp.Expr, output: sp.Expr, bound: sp.Symbol = feature_b) -> sp.Expr:
    """Definition of the fused layer's logits: ``z_{row,output} = sum_d x_{row,d} W_{output,d}
    + b_output`` (``z = x @ W.T + b``)."""
    return sp.Sum(lin_x[row, bound] * lin_W[output, bound], (bound, 0, n_features - 1)) \
        + lin_b[output]


#: dL/dx_{i,d} = sum_v g_{i,v} W_{v,d}  (grad_input = g @ W)
linear_grad_input_closed = sp.Sum(logit_grad[i, out_b] * lin_W[out_b, feature],
                                  (out_b, 0, n_outputs - 1))
#: dL/dW_{v,d} = sum_i g_{i,v} x_{i,d}  (grad_linear_weight = g.T @ x)
linear_grad_weight_closed = sp.Sum(logit_grad[row_b, out] * lin_x[row_b, feature],
                                   (row_b, 0, N - 1))
#: dL/db_v = sum_i g_{i,v}  (grad_linear_bias = g.sum(0))
linear_grad_bias_closed = sp.Sum(logit_grad[row_b, out], (row_b, 0, N - 1))

#: the case study's classifier: scores s_{i,c} = sum_d X_{i,d} W_{d,c} + b_c (W of shape
#: (D, C)), loss L_data(s) + (reg/2) sum_{d,c} W_{d,c}^2
reg = sp.Symbol("reg", nonnegative=True)
#: the rows' labels y_i of the classifier's batch
labels = sp.IndexedBase("y", integer=True, nonnegative=True)


def classifier_score(row: sp.Expr, cls: sp.Expr, bound: sp.Symbol = feature_b) -> sp.Expr:
    """Definition of the classifier's scores ``s_{row,cls} = sum_d X_{row,d} W_{d,cls} +
    b_cls`` (``scores = X @ W + b``)."""
    return sp.Sum(lin_x[row, bound] * lin_W[bound, cls], (bound, 0, n_features - 1)) \
        + lin_b[cls]


#: the L2 term of the classifier's loss, (reg/2) sum_{d,c} W_{d,c}^2 (biases not regularised)
classifier_penalty = reg / 2 * sp.Sum(lin_W[feature_b, out_b] ** 2, (feature_b, 0, n_features - 1),
                                      (out_b, 0, C - 1))
#: dL/dW_{d,c} = sum_i X_{i,d} g_{i,c} + reg W_{d,c}  (dW = X.T @ dscores + reg W), any L_data
classifier_grad_weight_closed = (sp.Sum(lin_x[row_b, feature] * logit_grad[row_b, c],
                                        (row_b, 0, N - 1)) + reg * lin_W[feature, c])
#: dL/db_c = sum_i g_{i,c}  (db = dscores.sum(0))
classifier_grad_bias_closed = sp.Sum(logit_grad[row_b, c], (row_b, 0, N - 1))


# --------------------------------------------------------------------------
# Concrete instances
# --------------------------------------------------------------------------
def concrete(expr: sp.Expr, n_classes: int, scores, weights=None, targets=None,
             **indices) -> sp.Expr:
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
    scores, weights, targets : sequence of sympy.Expr
        Explicit symbols (or values) for ``f_0..f_{C-1}``, ``w_0..w_{C-1}`` and
        (probability targets) ``t_0..t_{C-1}``; ``T`` becomes ``sum_n w_n t_n``.
    """
    if weights is None:
        weights = [sp.S.One] * n_classes
    named = {"k": k, "y": y, "j": j, "c": c, "i": i}
    sub = {C: n_classes}
    sub.update({named[name]: value for name, value in indices.items()})
    out = expr.subs(sub).doit()
    replace = {S: sp.Add(*[sp.exp(s) for s in scores]), W: sp.Add(*weights)}
    for q in range(n_classes):
        replace[f[q]] = scores[q]
        replace[w[q]] = weights[q]
    if targets is not None:
        replace[T] = sp.Add(*[a * b for a, b in zip(weights, targets)])
        for q in range(n_classes):
            replace[t[q]] = targets[q]
    return out.xreplace(replace)
