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


def cross_entropy_options(f, labels, reduction="mean", weight=None, ignore_index=-100,
                          label_smoothing=0.0, z_loss=0.0, softcap=None):
    """The loss options in float64, from their documented formulas (README, "Options").

    Returns (loss, grad, z, lse): z is the z-loss part reduced like the loss, lse the
    per-row log-sum-exp of the capped scores.  ``labels`` are class indices (shape
    f.shape[:-1]) or probability targets (a float array of f's shape).
    """
    f = np.asarray(f, dtype=np.float64)
    C = f.shape[-1]
    f2 = f.reshape(-1, C)
    n = f2.shape[0]
    w = np.ones(C) if weight is None else np.asarray(weight, dtype=np.float64)
    eps = float(label_smoothing)
    if softcap is not None:  # c tanh(f / c), with -inf kept (a masked class)
        with np.errstate(invalid="ignore"):
            th = np.tanh(f2 / softcap)
        x = np.where(f2 == -np.inf, -np.inf, softcap * th)
        dcap = np.where(f2 == -np.inf, 0.0, 1.0 - th * th)
    else:
        x, dcap = f2, np.ones_like(f2)
    logp = log_softmax(x)
    p = np.exp(logp)
    m = np.max(x, axis=1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        lse = np.where(np.isfinite(m), m, 0.0) + np.log(
            np.sum(np.exp(x - np.where(np.isfinite(m), m, 0.0)[:, None]), axis=1))
    labels = np.asarray(labels)
    if labels.dtype.kind == "f":  # probability targets
        t = labels.reshape(-1, C).astype(np.float64)
        wt = w[None, :] * ((1 - eps) * t + eps / C)
        with np.errstate(invalid="ignore"):
            ce = -np.where(wt != 0, wt * logp, 0.0).sum(axis=1)
        keep = np.ones(n, dtype=bool)
        ce_den = z_den = float(n)
        g_ce = p * wt.sum(axis=1)[:, None] - wt
    else:
        y = labels.reshape(-1).astype(np.int64)
        keep = y != ignore_index
        ys = np.where(keep, y, 0)
        wy = np.where(keep, w[ys], 0.0)
        onehot = np.zeros_like(p)
        onehot[np.arange(n), ys] = 1.0
        wt = (1 - eps) * wy[:, None] * onehot + eps / C * w[None, :]
        with np.errstate(invalid="ignore"):
            ce = (1 - eps) * wy * -logp[np.arange(n), ys]
            if eps > 0:  # absent without smoothing (not 0 * -inf on a masked class)
                ce = ce - eps * (logp * (w / C)).sum(axis=1)
            ce = np.where(keep, ce, 0.0)
        ce_den, z_den = wy.sum(), float(keep.sum())
        g_ce = p * ((1 - eps) * wy + eps * (w / C).sum())[:, None] - wt
    with np.errstate(invalid="ignore", over="ignore"):
        z = np.where(keep, z_loss * lse * lse, 0.0)
        g_z = 2 * z_loss * lse[:, None] * p
    if reduction == "mean":
        s_ce = 1.0 / ce_den if ce_den != 0 else np.nan
        s_z = 1.0 / z_den if z_den != 0 else np.nan
    else:
        s_ce = s_z = 1.0
    with np.errstate(invalid="ignore"):
        grad = g_ce * s_ce + (g_z * s_z if z_loss > 0 else 0.0)
        grad = np.where(keep[:, None], grad * dcap, 0.0)
    batch = f.shape[:-1]
    if reduction == "none":
        return (ce + z).reshape(batch), grad.reshape(f.shape), z.reshape(batch), lse.reshape(batch)
    if reduction == "sum":
        return ce.sum() + z.sum(), grad.reshape(f.shape), z.sum(), lse.reshape(batch)
    zr = z.sum() * s_z if z_loss > 0 else 0.0
    return ce.sum() * s_ce + zr, grad.reshape(f.shape), zr, lse.reshape(batch)
