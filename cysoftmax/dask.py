"""Dask front end: softmax cross-entropy and the linear softmax classifier on Dask arrays.

The data stay where their chunks live: every chunk of rows is handled by a task that
calls the compiled kernel on that chunk (on the worker that holds or loads it), and
only small partial results travel -- a loss sum, a denominator and, for the linear
model, the chunk's ``(dW, db)`` -- which Dask adds up in a tree. Nothing here gathers
``X`` (or the scores) on the client.

* :func:`softmax_cross_entropy` and :func:`cross_entropy` take row-chunked Dask arrays
  of scores and labels and return lazy Dask arrays: the loss (a 0-d array, or one
  value per row for ``reduction="none"``) and the gradient, chunked like the scores.
  The ``"mean"`` divides by the global denominator ``sum w[y]`` over the non-ignored
  rows, itself a tree reduction over the labels.
* :func:`linear_softmax_loss` is :func:`cysoftmax.linear_softmax_loss` for a
  row-chunked ``X``: lazy ``(loss, dW, db)``, with the same options (class weights,
  ``ignore_index``, label smoothing) and optional per-sample weights.
* :class:`DaskSoftmaxClassifier` is :class:`cysoftmax.SoftmaxClassifier` trained on
  Dask arrays: SciPy's L-BFGS-B runs on the client and asks the cluster for one loss
  and gradient per evaluation; ``solver="sgd"`` runs full-batch gradient descent the
  same way, or minibatch SGD that visits the chunks in a random order, the (small)
  parameters moving from chunk to chunk. Prediction on a Dask array returns Dask
  arrays.

Computations use Dask's current scheduler: the ``distributed.Client`` most recently
created (a ``LocalCluster`` or any remote cluster) or, without one, Dask's local
threads. ``import cysoftmax`` does not import Dask; ``import cysoftmax.dask`` does.

Errors found inside a chunk (``X`` not finite, a label that is no class index, a
sample weight that is not finite) raise the error the in-memory function raises,
with the chunk and the global row named in the message; they reach the client as the
same exception type.
"""

from __future__ import annotations

import uuid
import warnings

import numpy as np

try:
    import dask  # type: ignore[import-not-found, unused-ignore]
    import dask.array as da  # type: ignore[import-not-found, unused-ignore]
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "cysoftmax.dask needs Dask: install the 'dask' extra, which brings dask[array] "
        f"and distributed (pip install \"cysoftmax[dask]\"); {_exc}"
    ) from _exc

from cysoftmax import _api, _solvers, _validation
from cysoftmax import _estimator_checks as _v
from cysoftmax._estimators import SoftmaxClassifier
from cysoftmax._losses import _check_loss_options
from cysoftmax._workspaces import DEFAULT_IGNORE_INDEX, LinearWorkspace

__all__ = ["softmax_cross_entropy", "cross_entropy", "linear_softmax_loss",
           "DaskSoftmaxClassifier"]

# --------------------------------------------------------------------------
# where a chunk is, for the messages of errors found in it
# --------------------------------------------------------------------------


class _Chunk:
    """The position of one chunk of rows: its block index and its rows (array bounds)
    along the first ``batch_ndim`` axes, from Dask's ``block_info`` or given."""

    def __init__(self, index, bounds):
        self.index = tuple(int(i) for i in index)
        self.bounds = tuple((int(a), int(b)) for a, b in bounds)

    @classmethod
    def from_block_info(cls, block_info, batch_ndim, arg=0):
        info = block_info[arg]
        return cls(info["chunk-location"][:batch_ndim], info["array-location"][:batch_ndim])

    def describe(self, name):
        if len(self.index) == 1:
            (a, b), = self.bounds
            return f"chunk {self.index[0]} of {name} (rows {a}:{b})"
        where = ", ".join(f"{a}:{b}" for a, b in self.bounds)
        return f"chunk {self.index} of {name} ({name}[{where}])"

    def global_position(self, local):
        """``name[...]`` subscript of the element at index tuple ``local`` of the chunk
        (axes beyond the chunked ones are whole)."""
        offsets = [a for a, _ in self.bounds] + [0] * (len(local) - len(self.bounds))
        return ", ".join(str(int(i) + a) for i, a in zip(local, offsets))

    def error(self, exc, name):
        """``exc`` (an error about this chunk's data) retyped with the chunk named."""
        return type(exc)(f"{exc}; in {self.describe(name)}")


def _finite_rows(X, dtype, name, chunk):
    """The chunk ``X`` as a C-contiguous array of ``dtype``; ValueError naming the chunk
    and the first entry if it holds NaN or infinity."""
    X = np.ascontiguousarray(X, dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(X, axis=None)  # one pass, no temporary; exact check below
    if not np.isfinite(total) and not np.isfinite(X).all():
        bad = tuple(np.argwhere(~np.isfinite(X))[0])
        raise ValueError(
            f"{name} contains NaN or infinity: {name}[{chunk.global_position(bad)}] = "
            f"{X[bad].item()!r}; in {chunk.describe(name)}"
        )
    return X


def _class_indices(labels, n_classes, ignore_index, name, chunk):
    """The chunk's labels as flat int64 class indices, checked; the errors (TypeError,
    IndexError) are the in-memory ones, with the global position and the chunk named."""
    shape = labels.shape
    try:
        y = _validation.as_labels(labels, shape, n_classes, ignore_index, name=name)
    except (TypeError, ValueError, IndexError) as exc:
        raise chunk.error(exc, name) from None
    bad = np.flatnonzero((y != ignore_index) & ((y < 0) | (y >= n_classes)))
    if bad.size:
        pos = np.unravel_index(int(bad[0]), shape)
        raise IndexError(
            f"{name}[{chunk.global_position(pos)}] = {y[bad[0]]} is not a class index in "
            f"[0, {n_classes}) and not ignore_index ({ignore_index}); in {chunk.describe(name)}"
        )
    return y


def _sample_weights(sw, name, chunk):
    sw = np.ascontiguousarray(sw, dtype=np.float64).reshape(-1)
    if not np.isfinite(sw).all():
        bad = int(np.flatnonzero(~np.isfinite(sw))[0])
        raise ValueError(
            f"{name} must be finite: {name}[{chunk.global_position((bad,))}] = "
            f"{sw[bad].item()!r}; in {chunk.describe(name)}"
        )
    return sw


def _denominator(y, ignore_index, weight, sw):
    """``(sum of w[y_n] (times the sample weights) over the kept rows, number kept)``."""
    keep = y != ignore_index
    n_kept = int(np.count_nonzero(keep))
    if weight is None and sw is None:
        return float(n_kept), n_kept
    w = np.ones(n_kept) if weight is None else weight[y[keep]]
    if sw is not None:
        w = w * sw[keep]
    return float(np.sum(w)), n_kept


# --------------------------------------------------------------------------
# argument checks on the client
# --------------------------------------------------------------------------


def _is_dask(value):
    return isinstance(value, da.Array)


def _known_chunks(arr, name):
    if any(np.isnan(c) for chunks in arr.chunks for c in chunks):
        raise ValueError(
            f"{name} has chunks of unknown size (e.g. from a Dask DataFrame's .values); "
            f"call {name}.compute_chunk_sizes() first, or build it with lengths=True"
        )


def _as_dask(value, name):
    """``value`` as a Dask array: Dask arrays as they are, anything else in one chunk."""
    if _is_dask(value):
        return value
    _v.refuse_masked(value, name)
    _v.refuse_sparse(value, name)
    return da.from_array(_validation.asarray(value, name), chunks=-1)


def _check_rows(X, name="X"):
    """``X`` as a 2-D Dask array of real numbers, chunked along its rows only."""
    X = _as_dask(X, name)
    _known_chunks(X, name)
    if X.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}; "
                         "pass real numbers")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {X.dtype}")
    if X.ndim != 2:
        hint = ""
        if X.ndim == 1:
            hint = (f". Reshape your data either using {name}.reshape(-1, 1) if it has a "
                    f"single feature or {name}.reshape(1, -1) if it is a single sample")
        raise ValueError(f"{name} must be a 2-D array of shape (n_samples, n_features), "
                         f"got a {X.ndim}-D array of shape {X.shape}{hint}")
    for axis, what in ((0, "sample"), (1, "feature")):
        if X.shape[axis] == 0:
            raise ValueError(
                f"{name} has 0 {what}(s) (shape={X.shape}) while a minimum of 1 is required."
            )
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})  # the chunks hold whole rows
    return X


def _like_rows(value, rows, name, what):
    """``value`` (array-like or Dask array) of shape ``(n,)`` chunked like ``rows``
    (the row chunks of X or of the scores)."""
    arr = _as_dask(value, name)
    _known_chunks(arr, name)
    n = sum(rows[0])
    if arr.ndim != len(rows):
        raise ValueError(f"{name} must be {what} of shape {tuple(sum(c) for c in rows)}, "
                         f"got shape {arr.shape}")
    if tuple(arr.shape) != tuple(sum(c) for c in rows):
        if len(rows) == 1:
            raise ValueError(f"X and {name} have inconsistent numbers of samples: "
                             f"X has {n} rows, {name} has {arr.shape[0]} entries")
        raise ValueError(f"{name} must have shape scores.shape[:-1] = "
                         f"{tuple(sum(c) for c in rows)}, got {arr.shape}")
    if tuple(arr.chunks) != tuple(rows):
        arr = arr.rechunk(rows)
    return arr


def _labels_like(labels, rows, name="y"):
    arr = _like_rows(labels, rows, name, "class indices")
    if arr.dtype.kind not in "iuO":
        raise TypeError(f"{name} must be integers (class indices), got dtype {arr.dtype}")
    return arr


def _kernel_options(n_classes, dtype, reduction, weight, ignore_index, label_smoothing,
                    num_threads):
    """The kernel's options, checked by the kernel itself (on an empty batch), so the
    errors are the in-memory ones; ``weight`` as float64."""
    if weight is not None:
        weight = _validation.as_weight(weight, n_classes)
    options = dict(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                   num_threads=num_threads)
    _api.cross_entropy(np.zeros((0, n_classes), dtype), np.zeros(0, np.int64),
                       reduction=reduction, **options)
    options["ignore_index"] = int(ignore_index)
    return options


def _check_split_every(split_every):
    return _validation.check_scalar(split_every, "split_every", "int", low=2, allow_none=True)


# --------------------------------------------------------------------------
# softmax_cross_entropy / cross_entropy on chunked scores
# --------------------------------------------------------------------------


def _scores_block(s, y, *, mode, grad, n_classes, options, block_info=None):
    """One chunk of scores: ``(loss part, gradient)`` (``grad``) or the loss part.

    The loss part is one loss per row (``mode="none"``) or the chunk's loss sum,
    as an array of ones in every batch axis, in float64.
    """
    batch_ndim = s.ndim - 1
    chunk = _Chunk.from_block_info(block_info, batch_ndim)
    labels = _class_indices(y.reshape(y.shape[:-1]), n_classes, options["ignore_index"],
                            "labels", chunk).reshape(s.shape[:-1])
    reduction = "none" if mode == "none" else "sum"
    if grad:
        loss, g = _api.softmax_cross_entropy(s, labels, reduction=reduction, **options)
    else:
        loss = _api.cross_entropy(s, labels, reduction=reduction, **options)
    if mode != "none":
        loss = np.full((1,) * batch_ndim, float(loss))
    return (loss, g) if grad else loss


def _labels_denominator_block(y, *, options, block_info=None):
    """The chunk's ``sum w[y_n]`` over its kept rows (float64, ones in every axis)."""
    chunk = _Chunk.from_block_info(block_info, y.ndim)
    n_classes = len(options["weight"]) if options["weight"] is not None else None
    keep = y != options["ignore_index"]
    if options["weight"] is None:
        den = float(np.count_nonzero(keep))
    else:
        labels = _class_indices(y, n_classes, options["ignore_index"], "labels", chunk)
        den = float(np.sum(options["weight"][labels[labels != options["ignore_index"]]]))
    return np.full((1,) * y.ndim, den)


def _item(t, i):
    return t[i]


def _loss_part(t):
    return t[0][..., None]


def _mean_gradient_block(g, y, den, *, ignore_index):
    """The chunk's gradient of the sum over the global denominator; a zero denominator
    gives NaN on the kept rows and 0 on the ignored ones (as the in-memory "mean")."""
    den = float(den)
    if den != 0.0:
        return g / g.dtype.type(den) if g.dtype == np.float32 else g / den
    keep = np.broadcast_to((y.reshape(y.shape[:-1]) != ignore_index)[..., None], g.shape)
    return np.where(keep, np.array(np.nan, g.dtype), np.zeros((), g.dtype))


def _mean(total, den):
    total, den = float(total), float(den)
    return np.array(total / den if den != 0.0 else np.nan)


def _check_scores_labels(scores, labels):
    scores = _as_dask(scores, "scores")
    _known_chunks(scores, "scores")
    dt = scores.dtype
    if dt.kind != "f" or dt.itemsize not in (4, 8):
        raise TypeError(
            f"scores must hold float32 or float64 values, got dtype {dt}"
            + (" (convert with scores.astype(np.float64))" if dt.kind in "iub" else "")
        )
    if scores.ndim == 0:
        raise ValueError("scores must have at least one dimension (..., C); got a 0-d array")
    if scores.shape[-1] == 0:
        raise ValueError(f"scores must have at least one class: shape {scores.shape} has C = 0")
    if scores.numblocks[-1] != 1:
        scores = scores.rechunk({scores.ndim - 1: -1})
    labels = _as_dask(labels, "labels")
    if scores.ndim == 1:  # one sample: a batch of one row
        if labels.ndim != 0:
            raise ValueError(f"labels must have shape scores.shape[:-1] = (), got {labels.shape}")
        return scores[None, :], labels[None], True
    labels = _labels_like(labels, scores.chunks[:-1], "labels")
    return scores, labels, False


def _scores_loss(scores, labels, *, grad, reduction, weight, ignore_index, label_smoothing,
                 num_threads, split_every):
    split_every = _check_split_every(split_every)
    scores, labels, single = _check_scores_labels(scores, labels)
    n_classes, nd = scores.shape[-1], scores.ndim
    options = _kernel_options(n_classes, scores.dtype, reduction, weight, ignore_index,
                              label_smoothing, num_threads)
    batch_axes = tuple(range(nd - 1))
    # the loss part of each chunk: per-row losses ("none") or one float64 sum
    if reduction == "none":
        part_chunks, part_dtype = labels.chunks, scores.dtype
    else:
        part_chunks, part_dtype = tuple((1,) * len(c) for c in labels.chunks), np.float64
    part_meta = np.empty((0,) * (nd - 1), part_dtype)
    block = dict(mode=reduction, grad=grad, n_classes=n_classes, options=options)
    gradient = None
    if grad:  # one kernel call per chunk gives both: a chunk of (loss part, gradient) pairs
        pairs = da.map_blocks(_scores_block, scores, labels[..., None], **block, dtype=object,
                              meta=np.empty((0,) * nd, dtype=object))
        gradient = pairs.map_blocks(_item, 1, dtype=scores.dtype,
                                    meta=np.empty((0,) * nd, scores.dtype))
        # (the class axis is kept, of length 1, then dropped: Dask would concatenate
        # the pairs along an axis dropped here)
        parts = pairs.map_blocks(_loss_part, chunks=part_chunks + ((1,),), dtype=part_dtype,
                                 meta=np.empty((0,) * nd, part_dtype))[..., 0]
    else:
        parts = da.map_blocks(_scores_block, scores, labels[..., None], **block,
                              drop_axis=nd - 1, chunks=part_chunks, dtype=part_dtype,
                              meta=part_meta)
    if reduction == "none":
        loss = parts
    else:
        loss = parts.sum(axis=batch_axes, split_every=split_every)
        if reduction == "mean":
            den = da.map_blocks(_labels_denominator_block, labels, options=options,
                                chunks=part_chunks, dtype=np.float64,
                                meta=np.empty((0,) * (nd - 1), np.float64))
            den = den.sum(axis=batch_axes, split_every=split_every)
            loss = da.map_blocks(_mean, loss, den, dtype=np.float64,
                                 meta=np.empty((), np.float64))
            if grad:
                gradient = da.map_blocks(
                    _mean_gradient_block, gradient, labels[..., None], den,
                    ignore_index=options["ignore_index"], dtype=scores.dtype,
                    meta=np.empty((0,) * nd, scores.dtype))
        loss = loss.astype(scores.dtype)
    if single:
        loss = loss[0] if reduction == "none" else loss
        gradient = None if gradient is None else gradient[0]
    return loss, gradient


def softmax_cross_entropy(scores, labels, *, reduction="mean", weight=None,
                          ignore_index=DEFAULT_IGNORE_INDEX, label_smoothing=0.0,
                          num_threads=None, split_every=None):
    """Softmax cross-entropy and its gradient for scores chunked along their rows.

    :func:`cysoftmax.softmax_cross_entropy` applied chunk by chunk: each chunk of
    rows is one kernel call where it lives; the loss is the tree-reduced sum of the
    chunks' losses (over the global denominator for ``"mean"``). Nothing is computed
    until the results are (``dask.compute(loss, grad)``).

    Parameters
    ----------
    scores : dask.array.Array of float32 or float64, shape (..., C)
        Chunked along the batch axes in any way; the class axis is brought into one
        chunk (rechunked) if it is split. Array-likes are taken as one chunk.
    labels : dask.array.Array of int, shape scores.shape[:-1]
        Class indices in ``[0, C)`` or ``ignore_index``; rechunked like ``scores``
        if their chunks differ.
    reduction : {"mean", "sum", "none"}, default "mean"
        As in :func:`cysoftmax.softmax_cross_entropy`. ``"mean"`` divides by
        ``sum w[y_n]`` over the non-ignored rows of all chunks, a tree reduction over
        the labels, and the gradient chunks are divided by it too.
    weight, ignore_index, label_smoothing, num_threads
        As in :func:`cysoftmax.softmax_cross_entropy` (``num_threads`` applies to each
        chunk's call on its worker).
    split_every : int >= 2, optional
        Fan-in of the tree reductions (Dask's default when None).

    Returns
    -------
    loss : dask.array.Array
        0-d (``"mean"``, ``"sum"``), or of shape ``scores.shape[:-1]`` chunked like
        ``labels`` (``"none"``); dtype of ``scores``. The chunk sums are added in
        float64 and rounded to the dtype of ``scores`` once.
    grad : dask.array.Array
        ``dloss/dscores``, chunked like ``scores`` (class axis in one chunk).

    Raises
    ------
    TypeError, ValueError
        Bad arguments, on the client, with the in-memory messages.
    IndexError
        When computed: a label that is no class index, naming it, its global position
        and its chunk.

    Examples
    --------
    >>> import numpy as np, dask.array as da, cysoftmax.dask
    >>> scores = da.from_array(np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0]]), chunks=(1, 3))
    >>> loss, grad = cysoftmax.dask.softmax_cross_entropy(scores, da.from_array([0, 2], chunks=1))
    >>> round(float(loss), 6), grad.chunks
    (0.757821, ((1, 1), (3,)))
    """
    return _scores_loss(scores, labels, grad=True, reduction=reduction, weight=weight,
                        ignore_index=ignore_index, label_smoothing=label_smoothing,
                        num_threads=num_threads, split_every=split_every)


def cross_entropy(scores, labels, *, reduction="mean", weight=None,
                  ignore_index=DEFAULT_IGNORE_INDEX, label_smoothing=0.0, num_threads=None,
                  split_every=None):
    """Softmax cross-entropy only (no gradient) for scores chunked along their rows.

    Same arguments, semantics and errors as :func:`softmax_cross_entropy`; returns the
    lazy loss alone.

    Examples
    --------
    >>> import numpy as np, dask.array as da, cysoftmax.dask
    >>> scores = da.zeros((4, 2), chunks=(2, 2))
    >>> float(cysoftmax.dask.cross_entropy(scores, da.zeros(4, dtype=int, chunks=2)))  # log 2
    0.6931471805599453
    """
    return _scores_loss(scores, labels, grad=False, reduction=reduction, weight=weight,
                        ignore_index=ignore_index, label_smoothing=label_smoothing,
                        num_threads=num_threads, split_every=split_every)[0]


# --------------------------------------------------------------------------
# the linear model: one pass over the chunks, partial sums tree-reduced
# --------------------------------------------------------------------------


def _linear_block(X, y, sw, theta, *, chunk, n_classes, has_bias, dtype, options, classes):
    """One chunk of rows of the linear model: ``[loss sum, denominator, rows kept,
    dW..., db...]`` (float64), the chunk's share of the sums before the "mean"'s
    division and the regularisation.

    ``sw`` is the chunk's sample weights or None; ``theta`` is ``[W.ravel(), b]``
    (``b`` when ``has_bias``). With ``classes`` (the classifier), ``y`` holds labels,
    mapped to class indices by their position in ``classes``.
    """
    sw = None if sw is None else _sample_weights(sw, "sample_weight", chunk)
    X = _finite_rows(X, dtype, "X", chunk)
    n_features = X.shape[1]
    W = theta[: n_features * n_classes].reshape(n_features, n_classes).astype(dtype, copy=False)
    y = y.reshape(-1)
    if classes is not None:
        labels = np.searchsorted(classes, y).astype(np.int64)
    else:
        labels = _class_indices(y, n_classes, options["ignore_index"], "y", chunk)
    S = np.dot(X, W)
    if has_bias:
        S += theta[n_features * n_classes:].astype(dtype, copy=False)
    if sw is None:
        loss_sum, _ = _api.softmax_cross_entropy(S, labels, reduction="sum", out=S, **options)
        loss_sum = float(loss_sum)
    else:
        losses, _ = _api.softmax_cross_entropy(S, labels, reduction="none", out=S, **options)
        loss_sum = float(np.dot(losses.astype(np.float64), sw))
        S *= sw.astype(dtype)[:, None]
    den, n_kept = _denominator(labels, options["ignore_index"], options["weight"], sw)
    out = np.empty(3 + n_features * n_classes + n_classes)
    out[:3] = loss_sum, den, n_kept
    out[3:3 + n_features * n_classes] = np.dot(X.T, S).reshape(-1)
    out[3 + n_features * n_classes:] = np.sum(S, axis=0)
    return out


def _add(*parts):
    """The sum of chunk results (one node of the reduction tree)."""
    total = np.array(parts[0], dtype=np.float64)
    for part in parts[1:]:
        total += part
    return total


def _linear_finish(total, W, reg, reduction, dtype):
    """``(loss, dW, db)`` from the summed chunk results (NumPy, on the client)."""
    n_features, n_classes = W.shape
    loss_sum, den, n_kept = float(total[0]), float(total[1]), int(total[2])
    dW = total[3:3 + n_features * n_classes].reshape(n_features, n_classes)
    db = total[3 + n_features * n_classes:]
    if reduction == "mean":
        if den != 0.0:
            loss, dW, db = loss_sum / den, dW / den, db / den
        else:  # as in memory: NaN, and a NaN gradient from each kept row
            fill = np.nan if n_kept else 0.0
            loss, dW, db = np.nan, np.full_like(dW, fill), np.full_like(db, fill)
    else:
        loss = loss_sum
    if reg:
        W64 = W.astype(np.float64)
        loss += 0.5 * reg * float(np.vdot(W64, W64))
        dW = dW + reg * W64
    return (np.asarray(loss, dtype=dtype)[()], np.ascontiguousarray(dW, dtype=dtype),
            np.ascontiguousarray(db, dtype=dtype))


class _LinearPass:
    """The linear model's loss over a row-chunked ``X``: the task graph of one evaluation.

    ``sums(theta)`` is a ``Delayed`` of the summed chunk results: one task per chunk
    (on the chunk's blocks of ``X``, ``y`` and the sample weights, and on ``theta``,
    a single key) and a tree of :func:`_add` tasks with fan-in ``split_every``.
    ``loss_grad(theta)`` computes it and finishes on the client (the step of L-BFGS
    and of gradient descent).
    """

    def __init__(self, X, y, *, n_classes, has_bias, dtype, options, reg, reduction,
                 sample_weight=None, classes=None, split_every=None):
        # one Delayed per chunk of rows, pointing at the arrays' own keys: built once
        self.x_blocks = X.to_delayed(optimize_graph=False).reshape(-1)
        self.y_blocks = y.to_delayed(optimize_graph=False).reshape(-1)
        self.sw_blocks = (None if sample_weight is None else
                          sample_weight.to_delayed(optimize_graph=False).reshape(-1))
        starts = np.concatenate([[0], np.cumsum(X.chunks[0])])
        self.chunks = [_Chunk((i,), ((starts[i], starts[i + 1]),))
                       for i in range(X.numblocks[0])]
        self.n_features, self.n_classes = X.shape[1], n_classes
        self.block_options = dict(n_classes=n_classes, has_bias=has_bias,
                                  dtype=np.dtype(dtype), options=options, classes=classes)
        self.dtype, self.reg, self.reduction = np.dtype(dtype), reg, reduction
        self.split_every = 8 if split_every is None else split_every

    def sums(self, theta):
        token = uuid.uuid4().hex
        theta_key = dask.delayed(theta, name="cysoftmax-theta-" + token)
        block = dask.delayed(_linear_block, pure=False)
        level = [block(x, y, None if self.sw_blocks is None else self.sw_blocks[i], theta_key,
                       chunk=chunk, **self.block_options,
                       dask_key_name=("cysoftmax-linear-chunk-" + token, i))
                 for i, (x, y, chunk) in enumerate(zip(self.x_blocks, self.y_blocks,
                                                       self.chunks))]
        add, depth = dask.delayed(_add, pure=False), 0
        while len(level) > 1:
            depth += 1
            level = [add(*level[i:i + self.split_every],
                         dask_key_name=(f"cysoftmax-linear-sum-{depth}-" + token, i))
                     for i in range(0, len(level), self.split_every)]
        return level[0]

    def W_of(self, theta):
        return theta[: self.n_features * self.n_classes].reshape(self.n_features,
                                                                 self.n_classes)

    def loss_grad(self, theta):
        """``(loss, flat gradient [dW.ravel(), db])`` at ``theta``, computed now."""
        (total,) = dask.compute(self.sums(theta))
        loss, dW, db = _linear_finish(total, self.W_of(theta), self.reg, self.reduction,
                                      self.dtype)
        return float(loss), np.concatenate([dW.reshape(-1), db])


def linear_softmax_loss(W, X, y, b=None, reg=0.0, *, sample_weight=None, split_every=None,
                        **loss_options):
    """Softmax cross-entropy of a linear classifier and its gradients, for a row-chunked ``X``.

    :func:`cysoftmax.linear_softmax_loss` over a Dask array: ``scores = X @ W + b``,
    ``loss = cross_entropy(scores, y) + 0.5 * reg * sum(W**2)``. Each chunk of rows
    computes its scores, calls the compiled kernel, and returns its loss sum and its
    ``(X_chunk.T @ dscores, dscores.sum(0))``; these are added in a tree (Dask's
    ``sum`` with ``split_every``) and only the sums reach the client, which divides
    by the denominator for ``"mean"`` and adds the regularisation. ``X`` is never
    gathered.

    Parameters
    ----------
    W : array of shape (n_features, n_classes)
        Weights (NumPy; sent to every chunk's task once per evaluation).
    X : dask.array.Array of shape (n_samples, n_features)
        Finite real numbers, chunked along the rows (a column split is undone by a
        rechunk). Array-likes are taken as one chunk.
    y : dask.array.Array or array-like of int, shape (n_samples,)
        Class indices in ``0 .. n_classes - 1`` or ``ignore_index``; rechunked like
        the rows of ``X`` if needed.
    b : array of shape (n_classes,) or (1, n_classes), optional
        Bias; None means no bias (zero).
    reg : float, default 0.0
        L2 strength; the biases are not regularised.
    sample_weight : dask.array.Array or array-like of shape (n_samples,), optional
        Finite per-row weights ``s_n``: the loss is ``sum_n s_n l_n`` (``"sum"``) or
        that over ``sum_n s_n w[y_n]`` (``"mean"``, over the non-ignored rows; with
        ``s = 1`` this is the unweighted definition).
    split_every : int >= 2, optional
        Fan-in of the tree reduction of the chunk results (8 when None).
    **loss_options
        ``reduction`` (``"mean"``, the default, or ``"sum"``), ``weight``,
        ``ignore_index``, ``label_smoothing`` and ``num_threads``, with the kernel's
        semantics.

    Returns
    -------
    loss : dask.array.Array, 0-d
    dW : dask.array.Array, shape of ``W``
    db : dask.array.Array, shape of ``b`` (``(n_classes,)`` when ``b`` is None)
        Lazy; ``dask.compute(loss, dW, db)`` computes all three in one pass over ``X``.
        float32 when ``X``, ``W`` (and ``b``, unless None) are all float32, otherwise
        float64; the chunk results are added in float64.

    Raises
    ------
    TypeError, ValueError
        Bad arguments, on the client.
    ValueError, IndexError
        When computed: ``X`` or ``sample_weight`` not finite, or a label that is no
        class index, in some chunk; the message names the chunk and the global row.
    """
    _check_loss_options(loss_options)  # the in-memory checks and messages
    for name, value in (("W", W), ("b", b), ("y", y), ("sample_weight", sample_weight)):
        _v.refuse_masked(value, name)
    X = _check_rows(X)
    W = _validation.asarray(W, "W")
    if W.dtype.kind not in "biuf":
        raise TypeError(f"W must hold real numbers, got dtype {W.dtype}")
    n_features = X.shape[1]
    if W.ndim != 2 or W.shape[0] != n_features or W.shape[1] < 1:
        raise ValueError(f"W must have shape ({n_features}, n_classes) to match the "
                         f"{n_features} input columns, got shape {W.shape}")
    n_classes = W.shape[1]
    b_shape = (n_classes,)
    if b is not None:
        b = _validation.asarray(b, "b")
        if b.dtype.kind not in "biuf":
            raise TypeError(f"b must hold real numbers, got dtype {b.dtype}")
        if b.shape not in ((n_classes,), (1, n_classes)):
            raise ValueError(f"b must have shape ({n_classes},) or (1, {n_classes}), "
                             f"got {b.shape}")
        b_shape = b.shape
    dtypes = [X.dtype, W.dtype] + ([] if b is None else [b.dtype])
    dtype = np.float32 if all(d == np.float32 for d in dtypes) else np.float64
    reg = _v.check_reg(reg)
    split_every = _check_split_every(split_every)
    options = _kernel_options(n_classes, dtype, loss_options.get("reduction", "mean"),
                              loss_options.get("weight"),
                              loss_options.get("ignore_index", DEFAULT_IGNORE_INDEX),
                              loss_options.get("label_smoothing", 0.0),
                              loss_options.get("num_threads"))
    reduction = loss_options.get("reduction", "mean")
    y = _labels_like(y, X.chunks[:1], "y")
    if sample_weight is not None:
        sample_weight = _like_rows(sample_weight, X.chunks[:1], "sample_weight",
                                   "per-sample weights")
        if sample_weight.dtype.kind not in "biuf":
            raise TypeError("sample_weight must hold real numbers, got dtype "
                            f"{sample_weight.dtype}")
    W = np.array(W, dtype=dtype)  # a copy: later changes to the caller's W do not leak in
    theta = W.reshape(-1) if b is None else np.concatenate(
        [W.reshape(-1), np.asarray(b, dtype=dtype).reshape(-1)])
    lin = _LinearPass(X, y, n_classes=n_classes, has_bias=b is not None, dtype=dtype,
                      options=options, reg=reg, reduction=reduction,
                      sample_weight=sample_weight, split_every=split_every)
    finished = dask.delayed(_linear_finish, nout=3, pure=False)(lin.sums(theta), W, reg,
                                                               reduction, dtype)
    loss = da.from_delayed(finished[0], shape=(), dtype=dtype)
    dW = da.from_delayed(finished[1], shape=W.shape, dtype=dtype)
    db = da.from_delayed(finished[2], shape=(n_classes,), dtype=dtype).reshape(b_shape)
    return loss, dW, db


# --------------------------------------------------------------------------
# the classifier
# --------------------------------------------------------------------------


def _label_block(y, block_info=None):
    """The distinct labels of one chunk of ``y`` and their kind, checked as in memory."""
    chunk = _Chunk.from_block_info(block_info, 1)
    try:
        arr, category = _v.check_label_values(y, "y")
    except (TypeError, ValueError) as exc:
        raise chunk.error(exc, "y") from None
    if arr.dtype.kind == "f":
        fractional = np.flatnonzero(arr != np.trunc(arr))
        if fractional.size:
            i = int(fractional[0])
            raise ValueError(
                "Unknown label type: continuous. y must hold class labels (integers, "
                f"strings, or floats with integral values), but "
                f"y[{chunk.global_position((i,))}] = {arr[i].item()!r} is not integral "
                f"({chunk.describe('y')}): a classifier cannot be fitted to a continuous target"
            )
    out = np.empty(1, dtype=object)
    out[0] = (np.unique(arr), category)
    return out


def _classes(y):
    """The sorted distinct labels of the Dask array ``y`` (one pass over its chunks)."""
    per_chunk = y.map_blocks(_label_block, dtype=object, meta=np.empty((0,), object),
                             chunks=((1,) * y.numblocks[0],))
    found = per_chunk.compute()
    categories = {category for _, category in found}
    if len(categories) > 1:
        raise TypeError(f"y mixes label types across its chunks ({', '.join(sorted(categories))}); "
                        "use labels of one type")
    classes = np.unique(np.concatenate([uniques for uniques, _ in found]))
    if classes.shape[0] < 2:
        k = classes.shape[0]
        raise ValueError(f"y must contain at least 2 classes, got {k} "
                         f"class{'' if k == 1 else 'es'}: {classes.tolist()}")
    return classes


def _sgd_chunk(X, y, state, *, classes, seed, lr, reg, batch_size, chunk):
    """Minibatch SGD over one chunk (rows in a random order), from the parameters in
    ``state = (theta, loss total, rows seen)``; returns the updated state."""
    theta, total, rows = state
    theta = np.array(theta)
    n_classes = classes.shape[0]
    X = _finite_rows(X, np.float64, "X", chunk)
    n, n_features = X.shape
    W = theta[: n_features * n_classes].reshape(n_features, n_classes)
    b = theta[n_features * n_classes:]
    labels = np.searchsorted(classes, np.asarray(y).reshape(-1)).astype(np.intp)
    order = np.random.default_rng(seed).permutation(n)
    m_max = min(batch_size, n)
    ws = LinearWorkspace(m_max, n_features, n_classes)
    Xb, yb = np.empty((m_max, n_features)), np.empty(m_max, dtype=np.intp)
    for start in range(0, n, m_max):
        idx = order[start:start + m_max]
        m = idx.shape[0]
        np.take(X, idx, axis=0, out=Xb[:m])
        np.take(labels, idx, out=yb[:m])
        total += ws.step(Xb[:m], yb[:m], (W, b), reg, lr, {}) * m
    return theta, total, rows + n


def _scores_of_block(X, W, b, *, kind, classes=None, block_info=None):
    chunk = _Chunk.from_block_info(block_info, 1)
    X = _finite_rows(X, np.float64, "X", chunk)
    scores = np.dot(X, W)
    scores += b
    if kind == "proba":
        return _api.softmax(scores, out=scores)
    if kind == "predict":
        return classes[np.argmax(scores, axis=1)]
    if kind == "decision" and scores.shape[1] == 2:
        return scores[:, 1] - scores[:, 0]
    return scores


class DaskSoftmaxClassifier(SoftmaxClassifier):
    """Linear softmax classifier ``scores = X @ W + b`` trained on Dask arrays.

    :class:`cysoftmax.SoftmaxClassifier` (same objective, parameters, starting point
    and fitted attributes) for data chunked along the rows on a Dask cluster. It
    minimises the mean softmax cross-entropy plus ``0.5 * reg * sum(W**2)``:

    * ``solver="lbfgs"`` (default): SciPy's L-BFGS-B on the client; each evaluation
      is one distributed pass -- every chunk's loss and ``(dW, db)`` from the compiled
      kernel where the chunk lives, tree-reduced -- and only ``W`` and ``b`` travel.
      It stops when no gradient component exceeds ``tol``, or when an iteration
      lowers the loss by a relative 1.4e-14 or less (scikit-learn's ``ftol``, as
      ``SoftmaxClassifier``), so a small ``tol`` gives the minimiser to many digits.
    * ``solver="sgd"`` with ``batch_size=None``: full-batch gradient descent with step
      ``learning_rate``, one such pass per iteration.
    * ``solver="sgd"`` with ``batch_size``: minibatch SGD; each epoch visits the
      chunks in a random order and, in each, its rows in a random order in
      minibatches of ``batch_size`` rows (a minibatch never spans two chunks). The
      parameters go from chunk to chunk in one task graph per epoch; the data stay put.

    Chunks of ``X`` are read (or taken from memory) once per evaluation: persist ``X``
    (``X = X.persist()``) when it fits in the cluster's memory, and leave it on disk
    (e.g. ``da.from_zarr``) when it does not -- only one chunk per worker thread is then
    in memory at a time. Prediction on a Dask array returns lazy Dask arrays chunked
    like its rows; on a NumPy array, NumPy arrays (as :class:`SoftmaxClassifier`).

    Parameters
    ----------
    reg : float, default 1e-3
        L2 strength: the loss gets ``0.5 * reg * sum(W**2)``. scikit-learn's
        ``LogisticRegression(C=C)`` minimises the same objective when
        ``reg = 1 / (C * n_samples)`` (``1 / (C * sum(sample_weight))`` with weights).
    learning_rate, max_iter, random_state, verbose, solver, tol
        As in :class:`cysoftmax.SoftmaxClassifier`; ``max_iter`` counts L-BFGS
        iterations, gradient-descent iterations or SGD epochs. The same
        ``random_state`` gives the same starting weights as ``SoftmaxClassifier``.
    batch_size : int or None, default None
        ``solver="sgd"`` only: ``None`` is full-batch gradient descent, an int the
        minibatch size within each chunk.
    split_every : int >= 2 or None, default None
        Fan-in of the tree reduction of the chunk results (8 when None).

    Attributes
    ----------
    W_, b_, coef_, intercept_, classes_, n_features_in_, loss_history_, n_iter_
        As in :class:`cysoftmax.SoftmaxClassifier` (NumPy arrays).
    """

    def __init__(self, reg=1e-3, learning_rate=1.0, max_iter=200, batch_size=None,
                 random_state=None, verbose=0, *, solver="lbfgs", tol=1e-4, split_every=None):
        self._store_params(locals())

    def _check_params(self):
        params = _v.check_common_params(self)
        params["split_every"] = _check_split_every(self.split_every)
        return params

    def fit(self, X, y, sample_weight=None):
        """Train from scratch on the chunks of ``X`` where they live.

        Parameters
        ----------
        X : dask.array.Array of shape (n_samples, n_features)
            Finite real numbers, chunked along the rows (a column split is undone).
            A NumPy array (or array-like) is wrapped with ``dask.array.from_array``.
        y : dask.array.Array or array-like of shape (n_samples,)
            Class labels (numbers or strings, as ``SoftmaxClassifier`` takes them);
            rechunked like the rows of ``X`` if needed. One pass over ``y`` finds the
            classes; a chunk with NaN, non-integral or mixed labels is named in the
            error.
        sample_weight : dask.array.Array or array-like of shape (n_samples,), optional
            Finite per-row weights: the data term becomes ``sum_n s_n l_n / sum_n
            s_n``. Not with minibatch SGD.

        Returns
        -------
        self
        """
        name = type(self).__name__
        params = self._check_params()
        # NumPy input goes to the workers once (not with every evaluation's graph)
        in_memory = {"X": not _is_dask(X), "y": not _is_dask(y),
                     "sample_weight": sample_weight is not None and not _is_dask(sample_weight)}
        if in_memory["X"]:
            X = da.from_array(_v.check_X(X), chunks=("auto", -1)).persist()
        X = _check_rows(X)
        if y is None:
            raise ValueError(f"{name} requires y to be passed, but the target y is None")
        y = _as_dask(y, "y")
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn(_v.sklearn_compatible(_v.DataConversionWarning)(
                f"A column-vector y was passed when a 1d array was expected: y has shape "
                f"{y.shape}; it is used as shape ({y.shape[0]},). Pass y.ravel() to avoid "
                "this warning."), stacklevel=2)
            y = y.reshape(-1)
        y = _like_rows(y, (y.chunks[0],) if y.ndim == 1 else X.chunks[:1], "y", "labels")
        if y.shape[0] != X.shape[0]:
            raise ValueError("X and y have inconsistent numbers of samples: "
                             f"X has {X.shape[0]} rows, y has {y.shape[0]} labels")
        classes = _classes(y)  # on the chunks as given, so that errors name those
        y = _like_rows(y, X.chunks[:1], "y", "labels")
        if in_memory["y"]:
            y = y.persist()
        if sample_weight is not None:
            if params["solver"] == "sgd" and params["batch_size"] is not None:
                raise ValueError("sample_weight is not supported with minibatch SGD "
                                 "(solver='sgd' with batch_size); use solver='lbfgs'")
            sample_weight = _like_rows(sample_weight, X.chunks[:1], "sample_weight",
                                       "per-sample weights")
            if sample_weight.dtype.kind not in "biuf":
                raise TypeError("sample_weight must hold real numbers, got dtype "
                                f"{sample_weight.dtype}")
            if in_memory["sample_weight"]:
                sample_weight = sample_weight.persist()
        rng = _v.make_rng(self.random_state)
        n_features, n_classes = X.shape[1], classes.shape[0]
        theta, arrays, weights = self._init_parameters(n_features, n_classes, params, rng)
        if params["solver"] == "sgd" and params["batch_size"] is not None:
            history = self._minibatch_sgd(X, y, classes, theta, params, rng)
        else:
            options = dict(weight=None, ignore_index=DEFAULT_IGNORE_INDEX,
                           label_smoothing=0.0, num_threads=None)
            lin = _LinearPass(X, y, n_classes=n_classes, has_bias=True, dtype=np.float64,
                              options=options, reg=params["reg"], reduction="mean",
                              sample_weight=sample_weight, classes=classes,
                              split_every=params["split_every"])
            if params["solver"] == "lbfgs":
                solution, history = _solvers.lbfgs(lin.loss_grad, theta.copy(), params, name)
                theta[:] = solution  # the fitted weights are views of it
            else:
                lr = params["learning_rate"]

                def step(_X, _y):
                    loss, grad = lin.loss_grad(theta)
                    theta[:] -= lr * grad
                    return loss

                history = _solvers.gradient_descent(step, X, y, dict(params, batch_size=None),
                                                    rng, name)
        return self._set_fitted(weights, classes, n_features, history)

    def _minibatch_sgd(self, X, y, classes, theta, params, rng):
        """Epochs of minibatch SGD, one task graph (a chain over the chunks) per epoch."""
        name = type(self).__name__
        x_blocks = X.to_delayed().reshape(-1)
        y_blocks = y.to_delayed().reshape(-1)
        starts = np.concatenate([[0], np.cumsum(X.chunks[0])])
        history = np.empty(params["max_iter"])
        step = dask.delayed(_sgd_chunk, pure=False)
        for epoch in range(params["max_iter"]):
            order = rng.permutation(len(x_blocks))
            seeds = rng.integers(0, 2**63, size=len(x_blocks))
            state = (theta.copy(), 0.0, 0)
            for i, seed in zip(order, seeds):
                chunk = _Chunk((i,), ((starts[i], starts[i + 1]),))
                state = step(x_blocks[i], y_blocks[i], state, classes=classes, seed=int(seed),
                             lr=params["learning_rate"], reg=params["reg"],
                             batch_size=params["batch_size"], chunk=chunk)
            new_theta, total, rows = dask.compute(state)[0]
            theta[:] = new_theta
            history[epoch] = total / rows
            if params["verbose"] and epoch % params["verbose"] == 0:
                print(f"{name} epoch {epoch}: loss {history[epoch]:.6f}", flush=True)
        if not np.isfinite(history[-1]):
            warnings.warn(f"{name} training diverged (the loss is {history[-1]}); try a "
                          "smaller learning_rate", RuntimeWarning, stacklevel=3)
        return history

    # -- prediction: Dask arrays in, Dask arrays out ---------------------------

    def _dask_scores(self, X, method, kind):
        self._check_is_fitted(method)
        X = _check_rows(X)
        _v.check_n_features(X, self.n_features_in_, type(self).__name__)
        n_classes = self.classes_.shape[0]
        W, b = np.array(self.W_), np.array(self.b_)
        if kind == "predict" or (kind == "decision" and n_classes == 2):
            dtype = self.classes_.dtype if kind == "predict" else np.float64
            return X.map_blocks(_scores_of_block, W, b, kind=kind, classes=self.classes_,
                                drop_axis=1, dtype=dtype, meta=np.empty((0,), dtype))
        return X.map_blocks(_scores_of_block, W, b, kind=kind,
                            chunks=(X.chunks[0], (n_classes,)), dtype=np.float64,
                            meta=np.empty((0, 0)))

    def decision_function(self, X):
        """Class scores (logits) of the rows of ``X``.

        Parameters
        ----------
        X : dask.array.Array or array-like of shape (n_samples, n_features)

        Returns
        -------
        dask.array.Array (for Dask input) or ndarray
            Shape (n_samples, n_classes), or (n_samples,) for two classes (scikit-learn's
            convention, as :meth:`SoftmaxClassifier.decision_function`).
        """
        if _is_dask(X):
            return self._dask_scores(X, "decision_function", "decision")
        return super().decision_function(X)

    def predict_proba(self, X):
        """Class probabilities ``softmax(scores)``, rows summing to 1.

        Parameters
        ----------
        X : dask.array.Array or array-like of shape (n_samples, n_features)

        Returns
        -------
        dask.array.Array (for Dask input) or ndarray of shape (n_samples, n_classes)
        """
        if _is_dask(X):
            return self._dask_scores(X, "predict_proba", "proba")
        return super().predict_proba(X)

    def predict(self, X):
        """The most probable class label of each row of ``X``.

        Parameters
        ----------
        X : dask.array.Array or array-like of shape (n_samples, n_features)

        Returns
        -------
        dask.array.Array (for Dask input) or ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        if _is_dask(X):
            return self._dask_scores(X, "predict", "predict")
        return super().predict(X)

    def score(self, X, y):
        """Mean accuracy of ``predict(X)`` against ``y``.

        Parameters
        ----------
        X : dask.array.Array or array-like of shape (n_samples, n_features)
        y : dask.array.Array or array-like of shape (n_samples,)
            Labels of the kind seen in ``fit``.

        Returns
        -------
        dask.array.Array (0-d, for Dask ``X``) or float
            The fraction of rows predicted correctly; ``float(...)`` computes it.
        """
        if not _is_dask(X):
            return super().score(X, y)
        pred = self.predict(X)
        y = _like_rows(y, pred.chunks, "y", "labels")
        fitted_kind = self.classes_.dtype.kind in "US" or self.classes_.dtype == object
        given_kind = y.dtype.kind in "US" or y.dtype == object
        if fitted_kind != given_kind:
            raise TypeError(
                f"y holds {'string' if given_kind else 'number'} labels but the estimator "
                f"was fitted on {'string' if fitted_kind else 'number'} labels "
                f"(classes_ = {self.classes_.tolist()!r})"
            )
        return (pred == y).mean()

