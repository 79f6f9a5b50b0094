"""The models' losses and gradients as functions: :func:`linear_softmax_loss` and
:func:`two_layer_softmax_loss` (public through :mod:`cysoftmax.models`).

Each checks its arguments (each error naming the argument at fault), then runs
one pass of the model's workspace (:mod:`cysoftmax._workspaces`), the pass the
estimators train with.
"""

from __future__ import annotations

import numpy as np

from cysoftmax import _validation
from cysoftmax import _estimator_checks as _v
from cysoftmax._workspaces import (
    DEFAULT_IGNORE_INDEX,
    LinearWorkspace,
    TwoLayerWorkspace,
    append_ones,
)

__all__ = ["linear_softmax_loss", "two_layer_softmax_loss"]

_LOSS_OPTIONS = ("reduction", "weight", "ignore_index", "label_smoothing", "num_threads")


# --------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------


def _check_loss_options(options):
    """Keyword arguments forwarded to the kernel; the loss must be a scalar."""
    unknown = sorted(set(options) - set(_LOSS_OPTIONS))
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"the loss options are {', '.join(_LOSS_OPTIONS)}"
        )
    reduction = options.get("reduction", "mean")
    if reduction not in ("mean", "sum"):
        raise ValueError(
            f"reduction must be 'mean' or 'sum' here (the loss is a scalar "
            f"objective), got {reduction!r}"
        )
    return options


def _check_X(X, dtype):
    """Return ``X`` as a finite, C-contiguous 2-D array of ``dtype``."""
    if X.dtype.kind not in "biuf":
        raise TypeError(f"X must hold real numbers, got an array of dtype {X.dtype}")
    if X.ndim != 2:
        hint = " (reshape a single feature with X.reshape(-1, 1))" if X.ndim == 1 else ""
        raise ValueError(
            "X must be a 2-D array of shape (n_samples, n_features), "
            f"got a {X.ndim}-D array of shape {X.shape}{hint}"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must have at least one sample and one feature, got shape {X.shape}")
    X = np.ascontiguousarray(X, dtype=dtype)
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity")
    return X


def _check_labels(y, X, n_classes, options):
    """``y`` as flat int64 class indices of the rows of ``X``, checked by
    ``_validation.as_labels`` (its errors name ``y``).

    Every integer dtype (and object arrays of Python ints) is accepted; no cast
    wraps a label: the uint64 label ``2**64 - 100`` is no class index and raises,
    rather than becoming ``-100``, the default ``ignore_index``.
    """
    arr = _validation.asarray(y, "y")
    if arr.ndim != 1:
        raise ValueError(f"y must be a 1-D array of class indices, got shape {arr.shape}")
    _v.check_lengths(X, arr)
    ignore_index = options.get("ignore_index", DEFAULT_IGNORE_INDEX)
    return _validation.as_labels(y, arr.shape, n_classes, ignore_index, name="y")


def _work_dtype(*arrays):
    return np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64


def _check_weight_matrix(name, W, n_in, what, dtype):
    if W.ndim != 2 or W.shape[0] != n_in or W.shape[1] < 1:
        raise ValueError(
            f"{name} must have shape ({n_in}, {what}) to match the {n_in} "
            f"input columns, got shape {W.shape}"
        )
    if W.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {W.dtype}")
    return np.ascontiguousarray(W, dtype=dtype)


def _check_bias(name, b, n_out, dtype):
    """Accept ``(n_out,)`` or ``(1, n_out)``; return a 1-D array and the shape given."""
    if b is None:
        return None, (n_out,)
    if b.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {b.dtype}")
    if b.shape not in ((n_out,), (1, n_out)):
        raise ValueError(f"{name} must have shape ({n_out},) or (1, {n_out}), got {b.shape}")
    return np.ascontiguousarray(b.reshape(n_out), dtype=dtype), b.shape


def _check_arrays(arrays, y):
    """The parameter arrays and ``X`` (a dict by name; None for no bias) as ndarrays.

    Masked arrays (``y``'s included) are refused before anything is converted;
    returns the arrays and the working dtype: float32 when every array given is
    float32, float64 otherwise.
    """
    for name, value in (*arrays.items(), ("y", y)):
        _v.refuse_masked(value, name)
    out = {name: None if a is None else np.asarray(a) for name, a in arrays.items()}
    return out, _work_dtype(*(a for a in out.values() if a is not None))


# --------------------------------------------------------------------------
# loss functions
# --------------------------------------------------------------------------


def linear_softmax_loss(W, X, y, b=None, reg=0.0, **loss_options):
    """Softmax cross-entropy of a linear classifier and its gradients.

    ``scores = X @ W + b``; ``loss = cross_entropy(scores, y) + 0.5 * reg *
    sum(W**2)``. The cross-entropy and ``dloss/dscores`` come from
    :func:`cysoftmax.softmax_cross_entropy`; then ``dW = X.T @ dscores +
    reg * W`` and ``db = dscores.sum(axis=0)``.

    Parameters
    ----------
    W : array of shape (n_features, n_classes)
    X : array of shape (n_samples, n_features), finite
    y : int array of shape (n_samples,)
        Class indices in ``0 .. n_classes - 1`` (or ``ignore_index``), of any
        integer dtype; any other value raises ``IndexError`` (no cast wraps a
        large unsigned label onto ``ignore_index``).
    b : array of shape (n_classes,) or (1, n_classes), optional
        Bias; ``None`` means no bias (zero).
    reg : float, default 0.0
        L2 strength; the biases are not regularised.
    **loss_options
        ``reduction`` (``"mean"``, the default, or ``"sum"``; ``"none"`` is
        rejected because the loss must be a scalar), ``weight``,
        ``ignore_index``, ``label_smoothing`` and ``num_threads``, passed to
        the kernel with its semantics.

    Returns
    -------
    loss : float
    dW : ndarray, shape of ``W``
    db : ndarray, shape of ``b`` (``(n_classes,)`` when ``b`` is None: the
        gradient with respect to a zero bias)

    The computation and the gradients are float32 when ``X``, ``W`` (and
    ``b``, unless None) are all float32, otherwise float64.
    """
    options = _check_loss_options(loss_options)
    a, dtype = _check_arrays({"X": X, "W": W, "b": b}, y)
    X = _check_X(a["X"], dtype)
    W = _check_weight_matrix("W", a["W"], X.shape[1], "n_classes", dtype)
    n_classes = W.shape[1]
    b, b_shape = _check_bias("b", a["b"], n_classes, dtype)
    y = _check_labels(y, X, n_classes, options)
    reg = _v.check_reg(reg)

    ws = LinearWorkspace(X.shape[0], X.shape[1], n_classes, dtype)
    loss = ws.loss_grad(X, y, (W, b), reg, options)
    return loss, ws.dW, ws.db.reshape(b_shape)


def two_layer_softmax_loss(W1, b1, W2, b2, X, y, reg=0.0, **loss_options):
    """Softmax cross-entropy of a two-layer ReLU network and its gradients.

    ``hidden = max(0, X @ W1 + b1)``, ``scores = hidden @ W2 + b2``,
    ``loss = cross_entropy(scores, y) + 0.5 * reg * (sum(W1**2) + sum(W2**2))``.
    This is the pass that :class:`TwoLayerNet` trains with.

    Parameters
    ----------
    W1 : array of shape (n_features, n_hidden)
    b1 : array of shape (n_hidden,) or (1, n_hidden), or None
        ``None`` means no bias (zero).
    W2 : array of shape (n_hidden, n_classes)
    b2 : array of shape (n_classes,) or (1, n_classes), or None
        ``None`` means no bias (zero).
    X, y, reg, **loss_options
        As in :func:`linear_softmax_loss`.

    Returns
    -------
    loss : float
    dW1, db1, dW2, db2 : ndarrays shaped like the parameters
        A ``None`` bias gets the gradient with respect to a zero bias, of
        shape ``(n_hidden,)`` or ``(n_classes,)``.

    The computation and the gradients are float32 when ``X``, ``W1``, ``W2``
    and the biases given (those that are not None) are all float32,
    otherwise float64.
    """
    options = _check_loss_options(loss_options)
    a, dtype = _check_arrays({"X": X, "W1": W1, "b1": b1, "W2": W2, "b2": b2}, y)
    X = _check_X(a["X"], dtype)
    W1 = _check_weight_matrix("W1", a["W1"], X.shape[1], "n_hidden", dtype)
    n_hidden = W1.shape[1]
    W2 = _check_weight_matrix("W2", a["W2"], n_hidden, "n_classes", dtype)
    n_classes = W2.shape[1]
    b1, b1_shape = _check_bias("b1", a["b1"], n_hidden, dtype)
    b2, b2_shape = _check_bias("b2", a["b2"], n_classes, dtype)
    y = _check_labels(y, X, n_classes, options)
    reg = _v.check_reg(reg)

    A1 = np.vstack([W1, np.zeros(n_hidden, dtype) if b1 is None else b1])
    ws = TwoLayerWorkspace(X.shape[0], X.shape[1], n_hidden, n_classes, dtype)
    loss = ws.loss_grad(append_ones(X), y, (A1, W2, 0.0 if b2 is None else b2), reg, options)
    dW1, db1 = ws.dA1[:-1], ws.dA1[-1]
    return loss, dW1, db1.reshape(b1_shape), ws.dW2, ws.db2.reshape(b2_shape)
