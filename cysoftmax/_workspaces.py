"""The models' forward/backward passes, on preallocated buffers.

A workspace holds the buffers of one model for batches of up to ``n_rows`` rows
and runs its pass: :meth:`~_Workspace.loss_grad` computes the loss and leaves
the gradients in the buffers ``grads`` (one per parameter array, in the order
of the parameters); :meth:`~_Workspace.step` (gradient descent) and
:meth:`~_Workspace.flat_loss_grad` (L-BFGS) serve the two solvers. The linear model's
pass is the fused linear + cross-entropy (:mod:`cysoftmax._linear`, chunks of rows:
the n_rows x n_classes scores are never held).  In the two-layer pass the loss of the
output layer and ``dloss/dscores`` come from the compiled kernel, written over the
score buffer (``out=``); the products write into their outputs (``np.dot(...,
out=...)``) and the ReLU mask is applied in place, so an iteration allocates almost
nothing.

Both the loss functions (:mod:`cysoftmax._losses`) and the estimators'
training loops (:mod:`cysoftmax._estimators`) run these passes.
"""

from __future__ import annotations

import inspect

import numpy as np

from cysoftmax import _linear, _validation
from cysoftmax._api import softmax_cross_entropy

#: ``ignore_index`` when the loss options do not set it: the kernel's default.
DEFAULT_IGNORE_INDEX = inspect.signature(softmax_cross_entropy).parameters["ignore_index"].default


def kernel_loss(S, y, options):
    """``softmax_cross_entropy(S, y, out=S, **options)``: the loss; ``S`` becomes dloss/dscores.

    ``y`` holds the class indices of the rows (the models' ``y``, converted by
    ``_validation.as_labels(..., name="y")``). The kernel range-checks them in
    its own copy; a label that is no class index is reported naming ``y``, at
    its position.
    """
    try:
        loss, _ = softmax_cross_entropy(S, y, out=S, **options)
    except IndexError:
        ignore_index = options.get("ignore_index", DEFAULT_IGNORE_INDEX)
        _validation.check_label_range(y, y.shape, S.shape[1], ignore_index, name="y")
        raise  # (y changed since the kernel read it)
    return loss


class _Workspace:
    """What the two passes share: the solvers' entry points, on top of ``loss_grad``."""

    grads: tuple = ()  # gradient buffers, one per parameter array, in their order

    def loss_grad(self, X, y, arrays, reg, options):  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, X, y, arrays, reg, lr, options):
        """One gradient-descent update of the parameter ``arrays`` in place; returns the loss."""
        loss = self.loss_grad(X, y, arrays, reg, options)
        for p, g in zip(arrays, self.grads):
            g *= lr
            p -= g
        return loss

    def flat_loss_grad(self, X, y, theta, arrays, reg, options):
        """``loss_grad(x)`` for L-BFGS: the loss and the flat gradient at ``theta = x``.

        The parameter ``arrays`` are views of the flat vector ``theta``, laid out
        one after the other in their order.
        """

        def loss_grad(x):
            theta[:] = x
            loss = self.loss_grad(X, y, arrays, reg, options)
            return loss, np.concatenate([g.reshape(-1) for g in self.grads])

        return loss_grad


class LinearWorkspace(_Workspace):
    """Buffers and the pass for ``scores = X @ W + b``: the fused linear + softmax
    cross-entropy of :mod:`cysoftmax._linear`, in chunks of rows, so the pass never
    holds the ``n_rows x n_classes`` scores (only a chunk of them).

    The parameter arrays are ``(W, b)``; ``b`` may be None (no bias) in :meth:`loss_grad`.
    """

    def __init__(self, n_rows, n_features, n_classes, dtype=np.float64):
        self.dW = np.empty((n_features, n_classes), dtype)
        self.db = np.empty(n_classes, dtype)
        self.grads = (self.dW, self.db)

    def loss_grad(self, X, y, arrays, reg, options):
        """Loss; leaves ``dW``/``db`` (regularisation included) in the buffers."""
        W, b = arrays
        problem = _linear._Problem(
            X, W.T, y, b, options.get("weight"), options.get("reduction", "mean"),
            options.get("ignore_index", DEFAULT_IGNORE_INDEX),
            options.get("label_smoothing", 0.0), 0.0, None, None,
            options.get("num_threads"), target_name="y")
        # dW (n_features, n_classes) is the transpose of the fused pass's (V, D) gradient
        loss, _, _, db = _linear._fused(problem, True, want_input_grad=False,
                                        grad_weight_out=self.dW.T)
        self.db[...] = db
        loss = float(loss)
        if reg:
            loss += 0.5 * reg * float(np.vdot(W, W))
            self.dW += reg * W
        return loss


class TwoLayerWorkspace(_Workspace):
    """Buffers and the pass for ``scores = relu(X @ W1 + b1) @ W2 + b2``.

    The first layer's bias rides in its matrix product: the pass takes
    ``X1 = [X, 1]`` (a column of ones appended, :func:`append_ones`) and
    ``A1 = [[W1], [b1]]`` (``b1`` as the last row), so ``X1 @ A1 = X @ W1 + b1``
    and ``X1.T @ dH`` is ``[[dW1], [db1]]``. That saves two passes over the
    (n, hidden) activations per iteration. The parameter arrays are ``(A1, W2, b2)``.
    """

    def __init__(self, n_rows, n_features, n_hidden, n_classes, dtype=np.float64):
        self.H = np.empty((n_rows, n_hidden), dtype)  # hidden activations
        self.M = np.empty((n_rows, n_hidden), np.bool_)  # ReLU mask
        self.dH = np.empty((n_rows, n_hidden), dtype)
        self.S = np.empty((n_rows, n_classes), dtype)  # scores, then dloss/dscores
        self.ones = np.ones(n_rows, dtype)
        self.dA1 = np.empty((n_features + 1, n_hidden), dtype)  # [[dW1], [db1]]
        self.dW2 = np.empty((n_hidden, n_classes), dtype)
        self.db2 = np.empty(n_classes, dtype)
        self.grads = (self.dA1, self.dW2, self.db2)

    def loss_grad(self, X1, y, arrays, reg, options):
        """Loss; leaves ``dA1``/``dW2``/``db2`` (regularisation included) in the buffers."""
        A1, W2, b2 = arrays
        m = X1.shape[0]
        H, M, dH, S = self.H[:m], self.M[:m], self.dH[:m], self.S[:m]
        # forward
        np.dot(X1, A1, out=H)  # X @ W1 + b1
        np.greater(H, 0.0, out=M)
        np.multiply(H, M, out=H)  # ReLU; the mask is kept for the backward pass
        np.dot(H, W2, out=S)
        S += b2
        # output layer: the kernel overwrites the scores with dloss/dscores
        loss = kernel_loss(S, y, options)
        # backward
        np.dot(H.T, S, out=self.dW2)
        np.dot(self.ones[:m], S, out=self.db2)  # column sums, as a BLAS gemv
        np.dot(S, W2.T, out=dH)
        np.multiply(dH, M, out=dH)  # through the ReLU
        np.dot(X1.T, dH, out=self.dA1)
        if reg:
            W1, dW1 = A1[:-1], self.dA1[:-1]
            loss += 0.5 * reg * (float(np.vdot(W1, W1)) + float(np.vdot(W2, W2)))
            dW1 += reg * W1
            self.dW2 += reg * W2
        return float(loss)


def append_ones(X):
    """``[X, 1]``: X with a column of ones appended (C-contiguous)."""
    X1 = np.empty((X.shape[0], X.shape[1] + 1), dtype=X.dtype)
    X1[:, :-1] = X
    X1[:, -1] = 1.0
    return X1
