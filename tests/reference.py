"""A plain float64 NumPy reference of softmax cross-entropy, written from the formulas.

Independent of the compiled kernels: log-sum-exp with the row maximum subtracted,
then the loss and gradient exactly as PyTorch's ``F.cross_entropy`` defines them
for class-index targets (weights, ignore_index, label smoothing, reductions).
Used by the test grids; the high-precision reference is the SymPy cases file.
``fd4`` is the finite-difference gradient the gradient checks compare against.
"""

import numpy as np

# The one tolerance table.  EXACT_RTOL: the accuracy the README promises against exact
# values (relative; the dtype's smallest normal number is the absolute floor where a
# value underflows).  REFERENCE_TOL: against the float64 reference below, which carries
# rounding errors of its own (np.testing.assert_allclose keyword arguments).
EXACT_RTOL = {np.float32: 1e-6, np.float64: 1e-13}
REFERENCE_TOL = {np.float32: dict(rtol=2e-6, atol=1e-7), np.float64: dict(rtol=1e-12, atol=1e-16)}


def log_softmax(f):
    f = np.asarray(f, dtype=np.float64)
    m = np.max(f, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return f - m - np.log(np.sum(np.exp(f - m), axis=-1, keepdims=True))


def softmax(f):
    return np.exp(log_softmax(f))


def cross_entropy(f, y, reduction="mean", weight=None, ignore_index=-100, label_smoothing=0.0):
    """Returns (loss, grad) in float64 for scores f (..., C) and labels y (...)."""
    f = np.asarray(f, dtype=np.float64)
    C = f.shape[-1]
    f2 = f.reshape(-1, C)
    y2 = np.asarray(y).reshape(-1).astype(np.int64)
    w = np.ones(C) if weight is None else np.asarray(weight, dtype=np.float64)
    eps = float(label_smoothing)
    keep = y2 != ignore_index
    ys = np.where(keep, y2, 0)
    logp = log_softmax(f2)
    p = np.exp(logp)
    n = len(y2)
    wy = np.where(keep, w[ys], 0.0)
    with np.errstate(invalid="ignore"):
        nll = -logp[np.arange(n), ys]
        # eps/C sum_c w_c (-log p_c), as eps sum_c (w_c/C) (-log p_c): finite for weights
        # whose sum overflows (the same for the gradient's eps/C sum_c w_c)
        smooth = -(logp * (w / C)).sum(axis=1)
        row = np.where(keep, (1 - eps) * wy * nll + eps * smooth, 0.0)
    onehot = np.zeros_like(p)
    onehot[np.arange(n), ys] = 1.0
    grad = (p * ((1 - eps) * wy + eps * (w / C).sum())[:, None]
            - (1 - eps) * wy[:, None] * onehot - eps / C * w[None, :])
    grad[~keep] = 0.0
    denominator = wy.sum()
    if reduction == "none":
        return row.reshape(f.shape[:-1]), grad.reshape(f.shape)
    if reduction == "sum":
        return row.sum(), grad.reshape(f.shape)
    # a zero total weight (no rows, every row ignored, or weight 0 on every target):
    # the mean is undefined, NaN, and so is the gradient of the kept rows (as PyTorch)
    scale = 1.0 / denominator if denominator != 0 else np.nan
    loss = row.sum() * scale
    grad = np.where(keep[:, None], grad * scale, 0.0)
    return loss, grad.reshape(f.shape)


def fd4(fun, x, h):
    """4th-order central difference gradient of a scalar function of an array x, step h."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        def at(d):
            y = x.copy()
            y[i] += d
            return fun(y)
        g[i] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
    return g
