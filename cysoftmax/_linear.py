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
   dz.T @ x_chunk`` (accumulated block by block of classes: no V x D
   temporary beyond a few MiB) and ``grad_linear_bias += dz.sum(0)``.

The "mean" reduction needs the whole batch's denominators, known before the first
chunk from the targets: the kernel is run with reduction "sum" on class weights
divided by the summed target weight (and the z-loss weight divided by the counted
rows), which is the mean's loss and gradient.  So every chunk contributes exactly
its share, the results do not depend on the chunking except through rounding, and
for a given chunk size and thread count they are deterministic.

When a chunk would hold fewer than ``_EFFICIENT_ROWS`` rows (and fewer than the
batch), the classes are blocked too, with an online log-sum-exp (matrix products of
a few rows are slow: see the constants below).  For a chunk of up to
``_CLASS_CHUNK_ROWS`` rows:

1. pass 1, over the class blocks: each block's logits (BLAS), its log-sum-exp per row
   (the compiled kernel), combined with ``logaddexp``; the target logit and the
   label-smoothing or probability-target sums;
2. pass 2, the blocks in reverse order (the last one's logits are still in the
   buffer): the block's logits again, ``P_k`` as the block's softmax (the compiled
   kernel) times ``e^{lse_block - lse}``, the gradient in place, and the three
   products as above (``grad_input`` accumulated over the blocks).

That is a fourth matrix product, but all four are large (rows x block x D), which
on OpenBLAS is faster than three products of a few rows each.

Memory beyond the inputs and the returned gradients: the logits buffer
(``chunk_size x V``: by default 1/24 of the logits, 16 MiB to 256 MiB; or a row chunk
x class block of 16 MiB), temporaries of the accumulating products (2 MiB), O(V + rows)
vectors and, with class blocks, one float64 per row and block (each block's lse).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from . import _kernels, _validation

__all__ = ["linear_softmax_cross_entropy", "linear_cross_entropy"]

# Rows per chunk by default: 1/_CHUNK_FRACTION of the batch (the buffer of logits is
# then that fraction of the N x V logits: 4.2%), but at least as many as fit
# _BUDGET_BYTES and at most as many as fit _MAX_BUDGET_BYTES.  Matrix products of a
# few rows are slow (they stream all of linear_weight for little work): on OpenBLAS,
# 2 threads, N = 4096, D = 512, V = 32000, the three products took 2.9 s in chunks of
# 131 rows, 2.5 s in chunks of 256 and 2.2 s whole; at V = 128000, 23.6 s in chunks
# of 32 rows, 12.1 s in chunks of 128, 10.7 s in chunks of 256.
_CHUNK_FRACTION = 24
_BUDGET_BYTES = 16 << 20
_MAX_BUDGET_BYTES = 256 << 20
# When that leaves fewer than _EFFICIENT_ROWS rows per chunk (and fewer than the
# batch), the classes are blocked instead: chunks of up to _CLASS_CHUNK_ROWS rows,
# blocks of at least _MIN_CLASS_BLOCK classes in _BUDGET_BYTES.  Its four products are
# large ones (V = 128000: 15.3 s against 23.6 s for three in chunks of 32 rows).
_EFFICIENT_ROWS = 64
_CLASS_CHUNK_ROWS = 4096
_MIN_CLASS_BLOCK = 256
# float64 temporaries of the class blocks' general case (soft-capping, probability
# targets, label smoothing) are made for row ranges of at most this many bytes.
_SUB_BLOCK_BYTES = 4 << 20
# The products that accumulate (into grad_linear_weight over row chunks, into
# grad_input over class blocks) go through temporaries of at most this many bytes.
# They are NumPy's: SciPy's BLAS is another OpenBLAS with its own threads, and
# alternating between the two halved the speed of both (their idle threads spin).
_ACCUMULATE_BYTES = 2 << 20


class _Scratch:
    """Temporaries of one fused call, allocated once: ``flat`` (at most
    ``_ACCUMULATE_BYTES``) for the products that accumulate, and ``column_sums``
    (float64, V) for the bias gradient.  Fresh temporaries in every chunk cost page
    faults where glibc maps large blocks afresh (e.g. with a small
    ``MALLOC_MMAP_THRESHOLD_``)."""

    def __init__(self, V: int, D: int, rows: int, dtype: np.dtype):
        # at most a quarter of the chunk's logits (rows x V), and what one product of
        # V (or `rows`) rows of width D needs
        size = min(_ACCUMULATE_BYTES // dtype.itemsize, rows * V // 4, max(V, rows) * D)
        self.flat = np.empty(max(D, size), dtype)
        self.column_sums = np.empty(V, np.float64)

    def rows_of(self, width: int) -> int:
        """Rows of this width that fit the accumulating temporary (at least 1)."""
        return max(1, self.flat.size // max(1, width))

    def matrix(self, rows: int, cols: int) -> np.ndarray:
        return self.flat[: rows * cols].reshape(rows, cols)


def _accumulate_outer(dst: np.ndarray, dz: np.ndarray, x: np.ndarray, first: bool,
                      scratch: _Scratch) -> None:
    """``dst += dz.T @ x`` (dst (V', D); dz (r, V'), x (r, D)): for the ``first``
    product (dst not yet written) NumPy's matmul writing into dst, else in blocks of
    dst's rows through the scratch temporary."""
    if first:
        np.matmul(dz.T, x, out=dst)
        return
    step = scratch.rows_of(dst.shape[1])
    for c0 in range(0, dst.shape[0], step):
        c1 = min(dst.shape[0], c0 + step)
        product = scratch.matrix(c1 - c0, dst.shape[1])
        np.matmul(dz[:, c0:c1].T, x, out=product)
        dst[c0:c1] += product


def _rows_times(dst: np.ndarray, dz: np.ndarray, W: np.ndarray, accumulate: bool,
                scratch: _Scratch) -> None:
    """``dst = dz @ W`` or, if `accumulate`, ``dst += dz @ W`` (dst (r, D), dz (r, c),
    W (c, D)).  With W C-ordered, OpenBLAS computes the product as ``(W.T @ dz.T).T``
    5-9x faster than as ``dz @ W`` (measured at 131 x 32000 x 512); it is written
    straight into dst (a Fortran-ordered view of its transpose) or, to accumulate, in
    blocks of rows through the scratch temporary."""
    def product(rows: slice, out: np.ndarray) -> None:
        if W.flags.c_contiguous:
            np.matmul(W.T, dz[rows].T, out=out.T)
        else:
            np.matmul(dz[rows], W, out=out)

    if not accumulate:
        product(slice(None), dst)
        return
    step = scratch.rows_of(dst.shape[1])
    for s0 in range(0, dst.shape[0], step):
        s1 = min(dst.shape[0], s0 + step)
        out = scratch.matrix(s1 - s0, dst.shape[1])
        product(slice(s0, s1), out)
        dst[s0:s1] += out


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
            chunk = max(_BUDGET_BYTES // row_bytes,
                        min(self.N // _CHUNK_FRACTION, _MAX_BUDGET_BYTES // row_bytes))
            if chunk < min(self.N, _EFFICIENT_ROWS):  # few rows per chunk: block the classes
                chunk = min(self.N, _CLASS_CHUNK_ROWS)
                self.class_block = max(_MIN_CLASS_BLOCK,
                                       _BUDGET_BYTES // (chunk * dtype.itemsize))
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
    scratch = _Scratch(V, D, p.chunk, dtype) if want_grads else None
    class_block = p.class_block if class_block is None else class_block
    if class_block is not None and class_block < V:
        total = _class_chunked(p, want_grads, row_scale, class_block, rows_losses, gx, gW, gb,
                               scratch)
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
                _finish_chunk(p, z, r0, r1, row_scale, gx, gW, gb, scratch)
    return _loss(p, rows_losses, total), gx, gW, gb


def _finish_chunk(p, dz, r0, r1, row_scale, gx, gW, gb, scratch, c0=0, c1=None,
                  accumulate_x=False):
    """The three products of a chunk's ``dloss/dz`` (rows r0:r1, classes c0:c1)."""
    c1 = p.V if c1 is None else c1
    if p.nan_rows:
        dz[p.kept[r0:r1]] = np.nan
    if row_scale is not None:
        dz *= row_scale[r0:r1, None]
    if gx is not None:
        _rows_times(gx[r0:r1], dz, p.W[c0:c1], accumulate_x, scratch)
    _accumulate_outer(gW[c0:c1], dz, p.x[r0:r1], r0 == 0, scratch)
    column_sums = scratch.column_sums[c0:c1]
    np.add.reduce(dz, axis=0, dtype=np.float64, out=column_sums)
    gb[c0:c1] += column_sums


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


def _class_chunked(p, want_grads, row_scale, block, rows_losses, gx, gW, gb, scratch):
    """Rows in chunks and classes in blocks of ``block``: online log-sum-exp (see the
    module's comment)."""
    V, dtype = p.V, p.dtype
    w = np.ones(V) if p.kernel_weight is None else np.asarray(p.kernel_weight, np.float64)
    lam = p.kernel_z
    blocks = [(c0, min(V, c0 + block)) for c0 in range(0, V, block)]
    last = len(blocks) - 1
    flat = np.empty(p.chunk * min(block, V), dtype)
    block_lse = np.empty((len(blocks), p.chunk))
    total = 0.0
    for r0 in range(0, p.N, p.chunk):
        r1 = min(p.N, r0 + p.chunk)
        r = r1 - r0
        rows = _ChunkRows(p, r0, r1, w)
        lse = np.full(r, -np.inf)
        own = np.zeros(r)  # the blocks' own losses: sum_b sum_{c in b} wt_c (lse_b - x'_c)
        tw = np.zeros(r)  # sum_c wt_c (A): its smoothing part for class indices
        smooth_x = np.zeros(r)  # class indices: eps/C sum_c w_c x'_c
        block_tw = np.zeros((len(blocks), r)) if p.labels is None else None
        # pass 1: per block, lse (the kernel's, combined) and the losses within the block
        for bi, (c0, c1) in enumerate(blocks):
            z = p.logits(r0, r1, flat[: r * (c1 - c0)].reshape(r, c1 - c0), c0, c1)
            block_lse[bi, :r] = _block_losses(p, rows, z, c0, c1, w, own, tw, smooth_x,
                                              None if block_tw is None else block_tw[bi])
            with np.errstate(invalid="ignore"):  # NaN rows stay NaN
                np.logaddexp(lse, block_lse[bi, :r], out=lse)
        # ... and -wt_c log P_c = wt_c (lse_b - x'_c) + wt_c (lse - lse_b), the second
        # term as log1p of the other blocks' mass: a sum of terms >= 0, without the
        # cancellation of lse - x'_c when P_c is near 1
        if p.labels is not None:
            nll = own + _beyond(block_lse[:, :r], rows.label_block(block))
            ce = (1 - p.eps) * rows.wy * nll
            if p.eps > 0:
                ce += tw * lse - smooth_x
            ce = np.where(rows.kept, ce, 0.0)
            tw += (1 - p.eps) * rows.wy
            z_rows = np.where(rows.kept, lam * lse * lse, 0.0) if lam > 0 else 0.0
        else:
            tw = block_tw.sum(axis=0)
            ce = own
            for bi in range(len(blocks)):
                held = block_tw[bi] != 0
                ce[held] += block_tw[bi, held] * _beyond(block_lse[:, :r][:, held], bi)
            z_rows = lam * lse * lse if lam > 0 else 0.0
        row_loss = ce + z_rows
        if rows_losses is not None:
            rows_losses[r0:r1] = row_loss
        else:
            total += float(np.sum(row_loss))
        if not want_grads:
            continue
        # pass 2: each block's gradient from the finished lse, the last block first (its
        # logits are still in the buffer)
        coef = tw + (2 * lam * lse if lam > 0 else 0.0)
        for bi in range(last, -1, -1):
            c0, c1 = blocks[bi]
            z = flat[: r * (c1 - c0)].reshape(r, c1 - c0)
            if bi != last:
                p.logits(r0, r1, z, c0, c1)
            _block_gradient(p, rows, z, c0, c1, w, lse, block_lse[bi, :r], coef)
            _finish_chunk(p, z, r0, r1, row_scale, gx, gW, gb, scratch, c0, c1,
                          accumulate_x=bi != last)
    return total


class _ChunkRows:
    """The class-index targets of rows r0:r1: kept rows, their labels (0 where
    ignored) and label weights (0 where ignored)."""

    def __init__(self, p, r0, r1, w):
        self.r0, self.r1 = r0, r1
        if p.labels is not None:
            y = p.labels[r0:r1]
            self.kept = y != p.ignore_index
            self.all_kept = bool(self.kept.all())
            self.ys = np.where(self.kept, y, 0)
            self.wy = np.where(self.kept, w[self.ys], 0.0)

    def label_block(self, block):
        """The index of the class block that holds each row's label (0 if ignored)."""
        return self.ys // block

    def inside(self, c0, c1):
        """The rows whose label is a class of c0:c1, and its column in the block."""
        rows = np.flatnonzero(self.kept & (self.ys >= c0) & (self.ys < c1))
        return rows, self.ys[rows] - c0


def _sub_blocks(r, width):
    """Row ranges of at most _SUB_BLOCK_BYTES of float64 temporaries of this width."""
    step = max(1, _SUB_BLOCK_BYTES // (8 * max(1, width)))
    return [(s0, min(r, s0 + step)) for s0 in range(0, r, step)]


def _block_losses(p, rows, z, c0, c1, w, own, tw, smooth_x, block_tw):
    """Pass 1 of a class block ``z`` (its logits): returns each row's log-sum-exp over
    the block (-inf where every logit is -inf) and adds to ``own`` the loss within the
    block, ``sum_{c in block} wt_c (lse_block - x'_c)`` (the compiled kernel, in
    float64); for class indices with smoothing, to ``tw`` and ``smooth_x`` the block's
    shares of ``eps/C sum_c w_c`` and ``eps/C sum_c w_c x'_c``; for probability
    targets, ``sum_{c in block} wt_c`` into ``block_tw``."""
    eps, cap, C = p.eps, p.softcap, float(p.V)
    if p.labels is not None:
        at, cols = rows.inside(c0, c1)
        y = np.full(z.shape[0], -1, np.int64)
        y[at] = cols
        loss, _, _, lse = _kernels.softmax_cross_entropy(
            z, y, "none", None, -1, 0.0, 0.0, cap, False, True, None, p.num_threads, False,
            True)
        masked = _masked_rows(z, lse)
        loss[masked] = np.inf  # the target's logit is -inf as well
        own[at] += loss[at]
        if eps > 0:
            wb = w[c0:c1]
            for s0, s1 in _sub_blocks(z.shape[0], c1 - c0):
                smooth_x[s0:s1] += eps / C * (_capped(z[s0:s1], cap) @ wb)
            tw += eps / C * wb.sum()
        return lse
    _check_targets(p, rows.r0, rows.r1, c0, c1)
    lse = np.empty(z.shape[0])
    for s0, s1 in _sub_blocks(z.shape[0], c1 - c0):
        t = p.targets[rows.r0 + s0:rows.r0 + s1, c0:c1]
        if eps > 0:
            t64 = (1 - eps) * t.astype(np.float64) + eps / C
            t = t64.astype(z.dtype)
        else:
            t64, t = t.astype(np.float64), np.ascontiguousarray(t)
        block_tw[s0:s1] = t64 @ w[c0:c1]
        loss, _, _, lse[s0:s1] = _kernels.softmax_cross_entropy(
            z[s0:s1], t, "none", w[c0:c1], -100, 0.0, 0.0, cap, False, True, None,
            p.num_threads, False, True)
        masked = _masked_rows(z[s0:s1], lse[s0:s1])
        loss[masked] = np.where(block_tw[s0:s1][masked] != 0, np.inf, 0.0)
        own[s0:s1] += loss
    return lse


def _masked_rows(z, lse):
    """Rows of ``z`` that are -inf throughout (the kernel's lse, NaN there, set to -inf
    in place); NaN rows stay NaN."""
    masked = np.zeros(z.shape[0], bool)
    undefined = np.flatnonzero(np.isnan(lse))
    if undefined.size:
        masked[undefined[(z[undefined] == -np.inf).all(axis=1)]] = True
        lse[masked] = -np.inf
    return masked


def _beyond(block_lse, b):
    """``log1p(sum_{b' != b} e^{lse_b' - lse_b})`` per row (columns of ``block_lse``,
    (n_blocks, rows)): ``lse - lse_b``, where b is a block index per row or one for
    all."""
    cols = np.arange(block_lse.shape[1])
    own = block_lse[b, cols]
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(block_lse - own)
    e[b, cols] = 0.0
    with np.errstate(invalid="ignore"):
        return np.log1p(e.sum(axis=0))


def _block_gradient(p, rows, z, c0, c1, w, lse, lse_b, coef):
    """Pass 2 of a class block: its gradient in place of its logits ``z``, from each
    row's log-sum-exp over all classes ``lse``, over the block ``lse_b``, and the
    factor ``coef`` of P_k (sum_c wt_c + 2 lambda lse)."""
    eps, cap, C = p.eps, p.softcap, float(p.V)
    if cap is None and p.labels is not None:
        # P_k = softmax of the block (the compiled kernel) * e^{lse_b - lse}
        _kernels.softmax(z, z, p.num_threads, False)
        with np.errstate(invalid="ignore"):  # rows -inf throughout: NaN, as the kernel's
            scale = np.exp(lse_b - lse) * coef
        empty = lse_b == -np.inf  # the block holds none of the row's mass
        if empty.any():
            z[empty] = 0
        z *= scale.astype(z.dtype)[:, None]
        if eps > 0:
            z -= (eps / C * w[c0:c1]).astype(z.dtype)
        at, cols = rows.inside(c0, c1)
        z[at, cols] -= ((1 - eps) * rows.wy[at]).astype(z.dtype)
        if not rows.all_kept:
            z[~rows.kept] = 0
        return
    for s0, s1 in _sub_blocks(z.shape[0], c1 - c0):
        zs = z[s0:s1]
        if cap is not None:
            t = np.tanh(zs.astype(np.float64) / cap)
            xc = np.where(zs == -np.inf, -np.inf, cap * t)
            dcap = np.where(zs == -np.inf, 0.0, (1 - t) * (1 + t))
        else:
            xc, dcap = zs.astype(np.float64), None
        g = np.exp(xc - lse[s0:s1, None])
        g *= coef[s0:s1, None]
        if p.labels is not None:
            if eps > 0:
                g -= eps / C * w[c0:c1]
            at, cols = rows.inside(c0, c1)
            inside = (at >= s0) & (at < s1)
            g[at[inside] - s0, cols[inside]] -= (1 - eps) * rows.wy[at[inside]]
            g[~rows.kept[s0:s1]] = 0.0
        else:
            t = p.targets[rows.r0 + s0:rows.r0 + s1, c0:c1]
            g -= w[c0:c1] * ((1 - eps) * t + eps / C)
        if dcap is not None:
            g *= dcap
        zs[...] = g


def _capped(z, cap):
    x = np.asarray(z, np.float64)
    if cap is None:
        return x
    return np.where(x == -np.inf, -np.inf, cap * np.tanh(x / cap))


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
        Rows per chunk, with all V classes at once (a chunk_size x V buffer of
        logits).  Default: 1/24 of the rows (a buffer of 4.2% of the N x V logits),
        at least as many as fit 16 MiB of logits and at most 256 MiB; where that is
        fewer than 64 rows (and than the batch), chunks of up to 4096 rows and blocks
        of classes in 16 MiB, with an online log-sum-exp.  Results are deterministic
        for a given chunk size and thread count.

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
