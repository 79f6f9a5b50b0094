"""Fused linear + softmax cross-entropy: ``z = input @ linear_weight.T + linear_bias``,
the loss of ``z`` and the gradients of the three arrays, without ever holding all of ``z``.

Design
------
The rows are processed in chunks.  For a chunk of ``r`` rows (one buffer of r x V
logits, reused):

1. ``z = x_chunk @ W.T (+ b)`` (BLAS, into the buffer);
2. the compiled kernel turns ``z`` into the loss and ``dloss/dz`` in place (every
   option of :func:`cysoftmax.softmax_cross_entropy`);
3. ``grad_input[chunk] = dz @ W`` (BLAS, written in place), ``grad_linear_weight +=
   dz.T @ x_chunk`` (BLAS gemm with beta = 1, accumulating in place: no V x D
   temporary) and ``grad_linear_bias += dz.sum(0)``.

The "mean" reduction needs the whole batch's denominators, known before the first
chunk from the targets: the kernel is run with reduction "sum" on class weights
divided by the summed target weight (and the z-loss weight divided by the counted
rows), which is the mean's loss and gradient.  So every chunk contributes exactly
its share, the results do not depend on the chunking except through rounding, and
for a given chunk size and thread count they are deterministic.

When even a chunk of ``_MIN_ROWS`` rows x V would not fit the budget (V in the
millions), the classes are chunked too, with an online log-sum-exp: a first pass
over class blocks computes each row's log-sum-exp (the compiled kernel, per block;
blocks combined with ``logaddexp``), the target logit and the label-smoothing sum;
a second pass recomputes each block's logits and forms its gradient from the
finished log-sum-exp (NumPy's vectorized exp).  That costs a fourth matrix product.

Memory beyond the inputs and the returned gradients: the logits buffer
(``chunk_size x V``, or a row chunk x class block) and O(V + chunk_size) vectors.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from . import _kernels, _validation

__all__ = ["linear_softmax_cross_entropy", "linear_cross_entropy"]

# The logits buffer is kept under this many bytes (with at least _MIN_ROWS rows) ...
_BUDGET_BYTES = 16 << 20
_MIN_ROWS = 32
# ... unless _MIN_ROWS rows of logits exceed this: then classes are chunked too, in
# blocks of _BUDGET_BYTES for chunks of _CLASS_CHUNK_ROWS rows.
_CLASS_CHUNKING_BYTES = 64 << 20
_CLASS_CHUNK_ROWS = 256


def _gemm(dtype):
    from scipy.linalg import blas  # type: ignore[import-untyped, import-not-found, unused-ignore]

    return blas.sgemm if dtype == np.float32 else blas.dgemm


def _accumulate_outer(dst: np.ndarray, dz: np.ndarray, x: np.ndarray, first: bool) -> None:
    """``dst += dz.T @ x`` in place (dst (V, D), C- or F-contiguous; dz (r, V), x (r, D),
    C-contiguous): one BLAS gemm with beta = 1 (SciPy's), no temporary; for the
    ``first`` product (dst still zero), NumPy's matmul writing into dst."""
    if first:
        np.matmul(dz.T, x, out=dst)
        return
    gemm = _gemm(dst.dtype)
    if dst.flags.c_contiguous:  # dst.T (D, V) is Fortran-ordered: dst.T += x.T @ dz
        out = gemm(1.0, x.T, dz.T, beta=1.0, c=dst.T, trans_b=True, overwrite_c=True)
    else:  # dst itself is Fortran-ordered: dst += dz.T @ x
        out = gemm(1.0, dz.T, x.T, beta=1.0, c=dst, trans_b=True, overwrite_c=True)
    if not np.shares_memory(out, dst):  # pragma: no cover - a BLAS that copied
        dst += out.T if dst.flags.c_contiguous else out


class _Problem:
    """The checked arguments of one fused call."""

    def __init__(self, input, linear_weight, target, linear_bias, weight, reduction,
                 ignore_index, label_smoothing, z_loss, softcap, chunk_size, num_threads,
                 target_name="target"):
        x = _validation.as_scores(input, name="input")
        dtype = x.dtype
        W = np.asarray(linear_weight) if not isinstance(linear_weight, np.ndarray) \
            else linear_weight
        _validation.refuse_masked(W, "linear_weight", "pass a plain ndarray")
        if W.dtype != dtype:
            raise TypeError(f"linear_weight must have the dtype of input ({dtype}), got "
                            f"{W.dtype}; convert one of them (no silent promotion)")
        if W.ndim != 2 or W.shape[1] != x.shape[-1] or W.shape[0] < 1:
            raise ValueError(f"linear_weight must have shape (V, D) with D = input.shape[-1] "
                             f"= {x.shape[-1]} and V >= 1, got {W.shape}")
        self.V, self.D = W.shape
        b = None
        if linear_bias is not None:
            b = np.asarray(linear_bias)
            _validation.refuse_masked(linear_bias, "linear_bias", "pass a plain ndarray")
            if b.dtype != dtype:
                raise TypeError(f"linear_bias must have the dtype of input ({dtype}), "
                                f"got {b.dtype}")
            if b.shape != (self.V,):
                raise ValueError(f"linear_bias must have shape ({self.V},), got {b.shape}")
        self.dtype = dtype
        self.batch_shape = x.shape[:-1]
        self.x = np.ascontiguousarray(x.reshape(-1, self.D))
        self.W = W if (W.flags.c_contiguous or W.flags.f_contiguous) else np.ascontiguousarray(W)
        self.b = b
        self.N = self.x.shape[0]
        # the options, checked once by the kernel's own parser (a call on no rows)
        _kernels.softmax_cross_entropy(np.empty((0, self.V), dtype), np.empty(0, np.int64),
                                       reduction, weight, ignore_index, label_smoothing,
                                       z_loss, softcap, False, False, None, num_threads, False)
        self.reduction = reduction
        self.ignore_index = int(ignore_index)
        self.eps = float(label_smoothing)
        self.z_loss = float(z_loss)
        self.softcap = None if softcap is None else float(softcap)
        self.num_threads = num_threads
        self.weight = None if weight is None else _validation.as_weight(weight, self.V)
        t = _validation.as_targets(target, self.batch_shape + (self.V,), dtype,
                                   name=target_name, scores="input")
        if t is not None:
            if self.ignore_index != -100:
                raise ValueError("ignore_index is not supported with probability targets "
                                 "(float target of shape input.shape[:-1] + (V,))")
            self.targets, self.labels = t.reshape(-1, self.V), None
        else:
            y = _validation.as_labels(target, self.batch_shape, self.V, self.ignore_index,
                                      name=target_name)
            _validation.check_label_range(y, self.batch_shape, self.V, self.ignore_index,
                                          name=target_name)
            self.targets, self.labels = None, y
        row_bytes = self.V * dtype.itemsize
        self.class_block = None
        if chunk_size is None:
            chunk = max(_MIN_ROWS, _BUDGET_BYTES // row_bytes)
            if _MIN_ROWS * row_bytes > _CLASS_CHUNKING_BYTES:  # V in the millions
                chunk = _CLASS_CHUNK_ROWS
                self.class_block = max(1, _BUDGET_BYTES // (chunk * dtype.itemsize))
        else:
            chunk = _validation.check_scalar(chunk_size, "chunk_size", "int", low=1)
        self.chunk = max(1, min(chunk, self.N))
        self.scales()

    def scales(self):
        """The kernel's class weights and z-loss for the whole batch's reduction."""
        w = np.ones(self.V) if self.weight is None else self.weight
        if self.labels is not None:
            kept = self.labels != self.ignore_index
            denominator = float(w[self.labels[kept]].sum())
            counted = float(kept.sum())
        else:
            kept = None
            denominator = counted = float(self.N)
        self.kept = kept
        self.nan_rows = False  # "mean" over a zero denominator: NaN loss and gradient
        self.kernel_weight, self.kernel_z = self.weight, self.z_loss
        if self.reduction == "mean":
            if denominator != 0:
                self.kernel_weight = w / denominator
            else:
                self.nan_rows = True
            if self.z_loss > 0 and counted:
                self.kernel_z = self.z_loss / counted
        self.denominator, self.counted = denominator, counted

    def target_rows(self, r0, r1):
        if self.labels is not None:
            return self.labels[r0:r1]
        return self.targets[r0:r1]

    def logits(self, r0, r1, out, c0=0, c1=None):
        """``x[r0:r1] @ W[c0:c1].T + b[c0:c1]`` into ``out``."""
        c1 = self.V if c1 is None else c1
        np.matmul(self.x[r0:r1], self.W[c0:c1].T, out=out)
        if self.b is not None:
            out += self.b[c0:c1]
        return out


def _fused(p: _Problem, want_grads: bool, want_input_grad: bool = True,
           row_scale: Optional[np.ndarray] = None, class_block: Optional[int] = None,
           grad_weight_out: Optional[np.ndarray] = None):
    """The fused pass: (row losses or total, grad_input or None, grad_linear_weight,
    grad_bias as float64 -- also without a bias, then the gradient of a zero bias).

    ``row_scale`` multiplies each row's gradient (PyTorch's ``grad_output`` of "none");
    ``grad_weight_out`` is where grad_linear_weight goes ((V, D), C- or F-ordered);
    ``class_block`` forces class chunking (tests)."""
    N, V, D, dtype = p.N, p.V, p.D, p.dtype
    rows_losses = np.empty(N, np.float64) if p.reduction == "none" else None
    total = 0.0
    gx = gW = gb = None
    if want_grads:
        gx = np.empty((N, D), dtype) if want_input_grad else None
        # (written by the first chunk's product, then accumulated into)
        gW = grad_weight_out if grad_weight_out is not None else np.empty((V, D), dtype)
        if N == 0:
            gW[...] = 0
        gb = np.zeros(V, np.float64)
    class_block = p.class_block if class_block is None else class_block
    if class_block is not None and class_block < V:
        total = _class_chunked(p, want_grads, row_scale, class_block, rows_losses, gx, gW, gb)
    else:
        flat = np.empty(p.chunk * V, dtype)
        kernel_reduction = "none" if p.reduction == "none" else "sum"
        for r0 in range(0, N, p.chunk):
            r1 = min(N, r0 + p.chunk)
            z = p.logits(r0, r1, flat[: (r1 - r0) * V].reshape(r1 - r0, V))
            loss, _, _, _ = _kernels.softmax_cross_entropy(
                z, p.target_rows(r0, r1), kernel_reduction, p.kernel_weight, p.ignore_index,
                p.eps, p.kernel_z, p.softcap, False, False, z if want_grads else None,
                p.num_threads, want_grads)
            if rows_losses is not None:
                rows_losses[r0:r1] = loss
            else:
                total += float(loss)
            if want_grads:
                _finish_chunk(p, z, r0, r1, row_scale, gx, gW, gb)
    return _loss(p, rows_losses, total), gx, gW, gb


def _finish_chunk(p, dz, r0, r1, row_scale, gx, gW, gb, c0=0, c1=None, accumulate_x=False):
    """The three products of a chunk's ``dloss/dz`` (rows r0:r1, classes c0:c1)."""
    c1 = p.V if c1 is None else c1
    if p.nan_rows:
        dz[p.kept[r0:r1]] = np.nan
    if row_scale is not None:
        dz *= row_scale[r0:r1, None]
    if gx is not None:
        part = _rows_times(dz, p.W[c0:c1])
        if accumulate_x:
            gx[r0:r1] += part
        else:
            gx[r0:r1] = part
    _accumulate_outer(gW[c0:c1], dz, p.x[r0:r1], first=r0 == 0)
    gb[c0:c1] += dz.sum(axis=0, dtype=np.float64)


def _rows_times(dz: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``dz @ W`` for a chunk (few rows, long inner dimension V).  With W C-ordered,
    OpenBLAS computes the product as ``(W.T @ dz.T).T`` 5-9x faster than as ``dz @ W``
    (measured at 131 x 32000 x 512); the (D, r) result is small."""
    if W.flags.c_contiguous:
        return (W.T @ dz.T).T
    return dz @ W


def _loss(p, rows_losses, total):
    if p.reduction == "none":
        return rows_losses.astype(p.dtype).reshape(p.batch_shape)
    if p.reduction == "mean" and (p.nan_rows or p.counted == 0):
        total = math.nan
    return p.dtype.type(total)


def _public(p, loss, gx, gW, gb):
    """The public functions' results: shapes and dtypes of the inputs."""
    gx = gx.reshape(p.batch_shape + (p.D,))
    return loss, gx, gW, (gb.astype(p.dtype) if p.b is not None else None)


def _class_chunked(p, want_grads, row_scale, block, rows_losses, gx, gW, gb):
    """Rows in chunks and classes in blocks of ``block``: online log-sum-exp (see the
    module's comment)."""
    V, dtype = p.V, p.dtype
    eps, cap, C = p.eps, p.softcap, float(V)
    w = np.ones(V) if p.kernel_weight is None else np.asarray(p.kernel_weight, np.float64)
    lam = p.kernel_z
    total = 0.0
    flat = np.empty(p.chunk * min(block, V), dtype)
    for r0 in range(0, p.N, p.chunk):
        r1 = min(p.N, r0 + p.chunk)
        r = r1 - r0
        lse = np.full(r, -np.inf)
        tw_x = np.zeros(r)  # sum_c wt_c x'_c
        tw = np.zeros(r)  # sum_c wt_c  (A)
        if p.labels is not None:
            y = p.labels[r0:r1]
            kept = y != p.ignore_index
            ys = np.where(kept, y, 0)
            wy = np.where(kept, w[ys], 0.0)
        # pass 1: lse, sum wt x', sum wt
        for c0 in range(0, V, block):
            c1 = min(V, c0 + block)
            z = p.logits(r0, r1, flat[: r * (c1 - c0)].reshape(r, c1 - c0), c0, c1)
            _, _, _, lse_b = _kernels.softmax_cross_entropy(
                z, np.full(r, -1, np.int64), "sum", None, -1, 0.0, 0.0, cap, False, True,
                None, p.num_threads, False)
            lse = np.logaddexp(lse, lse_b.astype(np.float64))
            xc = _capped(z, cap)
            if p.labels is not None:
                inside = kept & (ys >= c0) & (ys < c1)
                rows = np.flatnonzero(inside)
                tw_x[rows] += (1 - eps) * wy[rows] * xc[rows, ys[rows] - c0]
                if eps > 0:
                    tw_x += eps / C * (xc @ w[c0:c1])
                    tw += eps / C * w[c0:c1].sum()
            else:
                wt = w[c0:c1] * ((1 - eps) * p.targets[r0:r1, c0:c1].astype(np.float64)
                                 + eps / C)
                _check_targets(p, r0, r1, c0, c1)
                with np.errstate(invalid="ignore"):
                    tw_x += np.where(wt != 0, wt * xc, 0.0).sum(axis=1)
                tw += wt.sum(axis=1)
        if p.labels is not None:
            tw += (1 - eps) * wy
            z_rows = np.where(kept, lam * lse * lse, 0.0) if lam > 0 else 0.0
            ce = np.where(kept, tw * lse - tw_x, 0.0)
        else:
            z_rows = lam * lse * lse if lam > 0 else 0.0
            ce = tw * lse - tw_x
        row_loss = ce + z_rows
        if rows_losses is not None:
            rows_losses[r0:r1] = row_loss
        else:
            total += float(np.sum(row_loss))
        if not want_grads:
            continue
        # pass 2: each block's gradient from the finished lse
        coef = tw + (2 * lam * lse if lam > 0 else 0.0)
        for c0 in range(0, V, block):
            c1 = min(V, c0 + block)
            z = p.logits(r0, r1, flat[: r * (c1 - c0)].reshape(r, c1 - c0), c0, c1)
            if cap is not None:
                t = np.tanh(z.astype(np.float64) / cap)
                xc = np.where(z == -np.inf, -np.inf, cap * t)
                dcap = np.where(z == -np.inf, 0.0, (1 - t) * (1 + t))
            else:
                xc, dcap = z.astype(np.float64), None
            P = np.exp(xc - lse[:, None])
            g = P * coef[:, None]
            if p.labels is not None:
                if eps > 0:
                    g -= eps / C * w[c0:c1]
                inside = kept & (ys >= c0) & (ys < c1)
                rows = np.flatnonzero(inside)
                g[rows, ys[rows] - c0] -= (1 - eps) * wy[rows]
                g[~kept] = 0.0
            else:
                g -= w[c0:c1] * ((1 - eps) * p.targets[r0:r1, c0:c1] + eps / C)
            if dcap is not None:
                g *= dcap
            z[...] = g
            _finish_chunk(p, z, r0, r1, row_scale, gx, gW, gb, c0, c1, accumulate_x=c0 > 0)
    return total


def _capped(z, cap):
    x = z.astype(np.float64)
    if cap is None:
        return x
    return np.where(z == -np.inf, -np.inf, cap * np.tanh(x / cap))


def _check_targets(p, r0, r1, c0, c1):
    t = p.targets[r0:r1, c0:c1]
    bad = ~(np.isfinite(t) & (t >= 0))
    if bad.any():
        i, k = np.argwhere(bad)[0]
        _validation.raise_bad_targets(p.targets[r0 + i], r0 + i, p.batch_shape, name="target")


def linear_softmax_cross_entropy(
    input, linear_weight, target, *, linear_bias=None, weight=None, reduction: str = "mean",
    ignore_index: int = -100, label_smoothing: float = 0.0, z_loss: float = 0.0,
    softcap: Optional[float] = None, chunk_size: Optional[int] = None,
    num_threads: Optional[int] = None,
) -> Tuple[Any, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    r"""Fused linear layer + softmax cross-entropy: the loss and the three gradients,
    without ever holding the N x V logits.

    Computes ``z = input @ linear_weight.T + linear_bias`` and
    ``softmax_cross_entropy(z, target, ...)`` chunk by chunk of rows, then
    ``grad_input = dz @ linear_weight``, ``grad_linear_weight = dz.T @ input`` and
    ``grad_linear_bias = dz.sum(0)``, the chain rule of ``z``'s linear map.  Argument
    names follow PyTorch 2.13's ``F.linear_cross_entropy``.

    Parameters
    ----------
    input : array_like of float32 or float64, shape (..., D)
    linear_weight : ndarray, shape (V, D), the dtype of `input`
        (C- or Fortran-ordered; a transposed view is used without a copy.)
    target : array_like
        Class indices of shape ``input.shape[:-1]``, or probability targets of shape
        ``input.shape[:-1] + (V,)`` and the dtype of `input`; as in
        :func:`cysoftmax.softmax_cross_entropy`.
    linear_bias : ndarray of shape (V,), optional
        Its gradient is None when it is None.
    weight, reduction, ignore_index, label_smoothing, z_loss, softcap, num_threads
        As in :func:`cysoftmax.softmax_cross_entropy` (``num_threads`` is the
        kernels'; the matrix products run on NumPy's BLAS with its own threads).
    chunk_size : int >= 1, optional
        Rows per chunk.  Default: as many as keep a chunk of logits under 16 MiB (at
        least 32).  Results are deterministic for a given chunk size and thread count.

    Returns
    -------
    loss : numpy scalar, or ndarray of shape ``input.shape[:-1]`` for "none"
    grad_input : ndarray, shape of `input`
    grad_linear_weight : ndarray, shape (V, D)
    grad_linear_bias : ndarray of shape (V,), or None without a bias
        With ``reduction="none"`` the gradients are those of the sum of the row losses.

    Raises
    ------
    TypeError
        Mixed dtypes (no silent promotion), and all that
        :func:`~cysoftmax.softmax_cross_entropy` refuses.
    ValueError
        Shapes that do not match (D or V), chunk_size < 1, and all that
        :func:`~cysoftmax.softmax_cross_entropy` refuses.
    IndexError
        A target that is no class index and not `ignore_index`.

    Examples
    --------
    >>> import numpy as np, cysoftmax
    >>> x = np.array([[1.0, 2.0]]); W = np.array([[0.5, 0.0], [0.0, 0.5], [0.1, 0.1]])
    >>> loss, gx, gW, gb = cysoftmax.linear_softmax_cross_entropy(x, W, [1])
    >>> z = x @ W.T
    >>> bool(np.isclose(loss, cysoftmax.cross_entropy(z, [1])))
    True
    """
    p = _Problem(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
                 label_smoothing, z_loss, softcap, chunk_size, num_threads)
    return _public(p, *_fused(p, True))


def linear_cross_entropy(
    input, linear_weight, target, *, linear_bias=None, weight=None, reduction: str = "mean",
    ignore_index: int = -100, label_smoothing: float = 0.0, z_loss: float = 0.0,
    softcap: Optional[float] = None, chunk_size: Optional[int] = None,
    num_threads: Optional[int] = None,
):
    """The loss of :func:`linear_softmax_cross_entropy` alone (no gradient is formed).

    Same arguments, semantics and errors.

    Examples
    --------
    >>> import numpy as np, cysoftmax
    >>> float(cysoftmax.linear_cross_entropy(np.zeros((1, 2)), np.ones((4, 2)), [3]))  # log 4
    1.3862943611198906
    """
    p = _Problem(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
                 label_smoothing, z_loss, softcap, chunk_size, num_threads)
    return _fused(p, False)[0]
