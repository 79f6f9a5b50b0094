"""Softmax classifiers after the CS231n case study: losses, gradients and estimators.

* :func:`linear_softmax_loss` -- loss and gradients of ``scores = X @ W + b``
  with L2 regularisation, the building block of a linear softmax classifier.
* :func:`two_layer_softmax_loss` -- the same for
  ``scores = relu(X @ W1 + b1) @ W2 + b2``.
* :class:`SoftmaxClassifier` and :class:`TwoLayerNet` -- estimators with
  scikit-learn's conventions (``fit``/``predict``/``predict_proba``/
  ``decision_function``/``score``, ``get_params``/``set_params``, its input
  checks and messages) that pass ``sklearn.utils.estimator_checks.
  check_estimator``. They train with L-BFGS (``solver="lbfgs"``, the default;
  needs SciPy) or with the notes' (minibatch) gradient descent
  (``solver="sgd"``). scikit-learn is not a dependency: when installed, it
  recognises them as classifiers (``is_classifier``, ``cross_val_score``,
  ``clone``).

In every case the loss of the output layer and its gradient with respect to
the scores come from the compiled kernel
:func:`cysoftmax.softmax_cross_entropy`; the layers around it are NumPy (BLAS)
matrix products. The training loops work in float64 on preallocated buffers:
the kernel writes the gradient over the score buffer (``out=``), the products
write into their outputs (``np.dot(..., out=...)``) and the ReLU mask is
applied in place, so an iteration allocates almost nothing.

Regularisation follows the notes: the loss gets ``0.5 * reg * sum(W**2)`` for
each weight matrix (biases are not regularised) and the gradient ``reg * W``.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np

# The package is looked up at call time, so this module can be imported while
# ``cysoftmax/__init__.py`` is still running (it re-exports names from here).
import cysoftmax as _core
from cysoftmax import _validation
from cysoftmax import _solvers
from cysoftmax import _estimator_checks as _v
from cysoftmax._estimator_checks import ConvergenceWarning, DataConversionWarning, NotFittedError

__all__ = [
    "ConvergenceWarning",
    "DataConversionWarning",
    "NotFittedError",
    "SoftmaxClassifier",
    "TwoLayerNet",
    "linear_softmax_loss",
    "two_layer_softmax_loss",
]

_LOSS_OPTIONS = ("reduction", "weight", "ignore_index", "label_smoothing", "num_threads")


# --------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------


def _refuse_masked(value, name):
    """``np.asarray`` would silently drop the mask of a masked array: refuse it."""
    _validation.refuse_masked(value, name, f"pass {name}.filled(...) or drop the masked rows")


def _check_X(X, *, dtype=np.float64, name="X"):
    """Return ``X`` as a finite, C-contiguous 2-D array of ``dtype``."""
    _refuse_masked(X, name)
    arr = np.asarray(X)
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers, got an array of dtype {arr.dtype}"
        )
    if arr.ndim != 2:
        hint = " (reshape a single feature with X.reshape(-1, 1))" if arr.ndim == 1 else ""
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features), "
            f"got a {arr.ndim}-D array of shape {arr.shape}{hint}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sample and one feature, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def _check_labels(y, X):
    """Return ``y`` as a 1-D array of class indices for the kernel (the loss functions).

    The dtype is left as given: the kernel accepts every integer dtype (and
    object arrays of Python ints) and raises ``IndexError`` for a label that
    is neither a class index nor ``ignore_index``. A cast to ``intp`` here
    would wrap, e.g., the uint64 label ``2**64 - 100`` to ``-100``, the
    default ``ignore_index``, and silently drop that row.
    """
    _refuse_masked(y, "y")
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"y must be a 1-D array of class indices, got shape {arr.shape}")
    if arr.dtype.kind not in "iuO":
        raise TypeError(
            f"y must hold integer class indices 0 .. n_classes - 1, got dtype {arr.dtype}"
        )
    _v.check_lengths(X, arr)
    return np.ascontiguousarray(arr)


def _kernel_loss(S, y, options):
    """``softmax_cross_entropy(S, y, out=S)``; its label errors name ``y``, not ``labels``."""
    try:
        return _core.softmax_cross_entropy(S, y, out=S, **options)
    except (IndexError, TypeError) as exc:
        msg = str(exc)
        if msg.startswith("labels"):
            raise type(exc)("y" + msg[len("labels"):]) from None
        raise


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


# --------------------------------------------------------------------------
# workspaces: one forward/backward pass on preallocated buffers
# --------------------------------------------------------------------------


class _LinearWorkspace:
    """Buffers and the pass for ``scores = X @ W + b`` on up to ``n_rows`` rows."""

    def __init__(self, n_rows, n_features, n_classes, dtype=np.float64):
        self.S = np.empty((n_rows, n_classes), dtype)  # scores, then dloss/dscores
        self.dW = np.empty((n_features, n_classes), dtype)
        self.db = np.empty(n_classes, dtype)

    def loss_grad(self, X, y, W, b, reg, options):
        """Loss; leaves ``dW``/``db`` (regularisation included) in the buffers."""
        S = self.S[: X.shape[0]]
        np.dot(X, W, out=S)
        if b is not None:
            S += b
        loss, _ = _kernel_loss(S, y, options)
        np.dot(X.T, S, out=self.dW)
        np.sum(S, axis=0, out=self.db)
        if reg:
            loss += 0.5 * reg * float(np.vdot(W, W))
            self.dW += reg * W
        return float(loss)

    def step(self, X, y, W, b, reg, lr, options):
        """One gradient-descent update of ``W`` and ``b`` in place; returns the loss."""
        loss = self.loss_grad(X, y, W, b, reg, options)
        self.dW *= lr
        W -= self.dW
        self.db *= lr
        b -= self.db
        return loss


class _TwoLayerWorkspace:
    """Buffers and the pass for ``scores = relu(X @ W1 + b1) @ W2 + b2``.

    The first layer's bias rides in its matrix product: the pass takes
    ``X1 = [X, 1]`` (a column of ones appended) and ``A1 = [[W1], [b1]]``
    (``b1`` as the last row), so ``X1 @ A1 = X @ W1 + b1`` and ``X1.T @ dH``
    is ``[[dW1], [db1]]``. That saves two passes over the (n, hidden)
    activations per iteration.
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

    def loss_grad(self, X1, y, A1, W2, b2, reg, options):
        m = X1.shape[0]
        H, M, dH, S = self.H[:m], self.M[:m], self.dH[:m], self.S[:m]
        # forward
        np.dot(X1, A1, out=H)  # X @ W1 + b1
        np.greater(H, 0.0, out=M)
        np.multiply(H, M, out=H)  # ReLU; the mask is kept for the backward pass
        np.dot(H, W2, out=S)
        S += b2
        # output layer: the kernel overwrites the scores with dloss/dscores
        loss, _ = _kernel_loss(S, y, options)
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

    def step(self, X1, y, A1, W2, b2, reg, lr, options):
        loss = self.loss_grad(X1, y, A1, W2, b2, reg, options)
        for p, g in ((A1, self.dA1), (W2, self.dW2), (b2, self.db2)):
            g *= lr
            p -= g
        return loss


def _append_ones(X):
    """``[X, 1]``: X with a column of ones appended (C-contiguous)."""
    X1 = np.empty((X.shape[0], X.shape[1] + 1), dtype=X.dtype)
    X1[:, :-1] = X
    X1[:, -1] = 1.0
    return X1


def _work_dtype(*arrays):
    return np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64


def _check_matrix(name, value, shape, dtype):
    _refuse_masked(value, name)
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _check_weight_matrix(name, W, n_in, what):
    _refuse_masked(W, name)
    W = np.asarray(W)
    if W.ndim != 2 or W.shape[0] != n_in or W.shape[1] < 1:
        raise ValueError(
            f"{name} must have shape ({n_in}, {what}) to match the {n_in} "
            f"input columns, got shape {W.shape}"
        )
    return W


def _check_bias(name, b, n_out, dtype):
    """Accept ``(n_out,)`` or ``(1, n_out)``; return a 1-D array and the shape given."""
    if b is None:
        return None, (n_out,)
    _refuse_masked(b, name)
    arr = np.asarray(b)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape not in ((n_out,), (1, n_out)):
        raise ValueError(f"{name} must have shape ({n_out},) or (1, {n_out}), got {arr.shape}")
    return np.ascontiguousarray(arr.reshape(n_out), dtype=dtype), arr.shape


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
    for name, value in (("X", X), ("W", W), ("b", b), ("y", y)):
        _refuse_masked(value, name)
    X_arr = np.asarray(X)
    W_arr = np.asarray(W)
    arrays = [X_arr, W_arr] + ([np.asarray(b)] if b is not None else [])
    dtype = _work_dtype(*arrays)
    X = _check_X(X_arr, dtype=dtype)
    n_features = X.shape[1]
    W = _check_weight_matrix("W", W_arr, n_features, "n_classes")
    W = _check_matrix("W", W, W.shape, dtype)
    n_classes = W.shape[1]
    b, b_shape = _check_bias("b", b, n_classes, dtype)
    y = _check_labels(y, X)
    reg = _v.check_reg(reg)

    ws = _LinearWorkspace(X.shape[0], n_features, n_classes, dtype)
    loss = ws.loss_grad(X, y, W, b, reg, options)
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
    for name, value in (("X", X), ("W1", W1), ("b1", b1), ("W2", W2), ("b2", b2), ("y", y)):
        _refuse_masked(value, name)
    X_arr, W1_arr, W2_arr = np.asarray(X), np.asarray(W1), np.asarray(W2)
    biases = [np.asarray(b) for b in (b1, b2) if b is not None]  # None is a zero bias
    dtype = _work_dtype(X_arr, W1_arr, W2_arr, *biases)
    X = _check_X(X_arr, dtype=dtype)
    W1 = _check_weight_matrix("W1", W1_arr, X.shape[1], "n_hidden")
    W1 = _check_matrix("W1", W1, W1.shape, dtype)
    n_hidden = W1.shape[1]
    W2 = _check_weight_matrix("W2", W2_arr, n_hidden, "n_classes")
    W2 = _check_matrix("W2", W2, W2.shape, dtype)
    n_classes = W2.shape[1]
    b1, b1_shape = _check_bias("b1", b1, n_hidden, dtype)
    b2, b2_shape = _check_bias("b2", b2, n_classes, dtype)
    y = _check_labels(y, X)
    reg = _v.check_reg(reg)

    A1 = np.vstack([W1, np.zeros(n_hidden, dtype) if b1 is None else b1])
    ws = _TwoLayerWorkspace(X.shape[0], X.shape[1], n_hidden, n_classes, dtype)
    loss = ws.loss_grad(_append_ones(X), y, A1, W2, b2 if b2 is not None else 0.0,
                        reg, options)
    dW1, db1 = ws.dA1[:-1], ws.dA1[-1]
    return loss, dW1, db1.reshape(b1_shape), ws.dW2, ws.db2.reshape(b2_shape)


# --------------------------------------------------------------------------
# estimators
# --------------------------------------------------------------------------


class _SoftmaxEstimator:
    """Shared machinery: parameters, validation, the solvers, prediction."""

    _fitted_attribute = "classes_"

    # -- scikit-learn recognition, without depending on scikit-learn ---------

    #: read by scikit-learn < 1.6 (``is_classifier``, stratified CV splits)
    _estimator_type = "classifier"

    def __sklearn_tags__(self):
        """Estimator tags for scikit-learn >= 1.6: a classifier of dense, finite 2-D ``X``.

        Only scikit-learn calls this, so it imports scikit-learn here;
        cysoftmax itself does not depend on it.
        """
        from sklearn.utils import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            ClassifierTags,
            InputTags,
            Tags,
            TargetTags,
        )

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(),
            input_tags=InputTags(),
        )

    def __sklearn_is_fitted__(self):
        """Whether ``fit`` has completed (read by ``sklearn.utils.validation.check_is_fitted``)."""
        return hasattr(self, self._fitted_attribute)

    # -- parameters (scikit-learn protocol) --------------------------------

    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self"]

    def get_params(self, deep=True):
        """Constructor parameters as a dict.

        Parameters
        ----------
        deep : bool, default True
            Accepted for scikit-learn compatibility and ignored (no parameter
            is itself an estimator).

        Returns
        -------
        dict
            Parameter name to value, in the constructor's order.
        """
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set constructor parameters; they take effect at the next ``fit``.

        Parameters
        ----------
        **params
            Parameter names and their new values.

        Returns
        -------
        self
        """
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}; "
                    f"valid parameters are: {', '.join(valid)}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _training_matrix(self, X):
        return X

    def _random_state(self):
        """``(value, name)`` of the seed of this fit: ``random_state``, or the deprecated ``seed``."""
        if isinstance(self.seed, str) and self.seed == "deprecated":
            return self.random_state, "random_state"
        if self.random_state is not None:
            raise ValueError(
                "seed and random_state are both set; seed is the deprecated name of "
                "random_state: set random_state only"
            )
        warnings.warn(
            "seed was renamed random_state and will be removed in a future release; "
            f"use {type(self).__name__}(random_state=...) instead",
            FutureWarning,
            stacklevel=3,
        )
        return self.seed, "seed"

    def _check_common_params(self):
        return _v.check_common_params(self)

    # -- training ------------------------------------------------------------

    def fit(self, X, y):
        """Train from scratch.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Finite real numbers; dense (a sparse matrix raises ``TypeError``).
        y : array-like of shape (n_samples,)
            Class labels: numbers (ints, bools, or floats with integral
            values) or strings, but not a mix of the two (``TypeError``;
            NumPy would silently turn ``[0, "a"]`` into strings), not
            continuous values (``ValueError`` "Unknown label type:
            continuous"), not ``None`` or NaN. At least two classes. A column
            vector of shape (n_samples, 1) is raveled with a
            :class:`DataConversionWarning`.

        Returns
        -------
        self
            Fitted: the distinct labels are stored sorted in ``classes_``.
        """
        name = type(self).__name__
        params = self._check_params()
        random_state, rs_name = self._random_state()
        X = _v.check_X(X)
        classes, y_idx = _v.encode_targets(y, X, name)
        rng = _v.make_rng(random_state, rs_name)
        n_features, n_classes = X.shape[1], classes.shape[0]
        weights = self._init_parameters(n_features, n_classes, params, rng)
        X_train = self._training_matrix(X)
        if params["solver"] == "sgd":
            n_rows = X.shape[0] if params["batch_size"] is None else min(params["batch_size"],
                                                                         X.shape[0])
            step = self._make_step(weights, n_rows, n_features, n_classes, params)
            history = _solvers.gradient_descent(step, X_train, y_idx, params, rng, name)
            _warn_if_diverged(history, name)
        else:
            theta0, loss_grad = self._make_loss_grad(weights, X_train, y_idx, n_classes, params)
            theta, history = _solvers.lbfgs(loss_grad, theta0, params, name)
            weights["_theta"][:] = theta  # the fitted weights are views of it
        del weights["_theta"]
        # only a completed fit replaces the fitted state
        self._set_fitted(weights)
        self.classes_ = classes
        self.n_features_in_ = n_features
        self.loss_history_ = history
        self.n_iter_ = history.shape[0]
        return self

    def _set_fitted(self, weights):
        for name, value in weights.items():
            setattr(self, name, value)

    # -- prediction ----------------------------------------------------------

    def _check_is_fitted(self, method):
        if not hasattr(self, self._fitted_attribute):
            raise _v.sklearn_compatible(NotFittedError)(
                f"This {type(self).__name__} instance is not fitted yet; call "
                f"'fit' with appropriate arguments before using '{method}'."
            )

    def _check_predict_X(self, X, method):
        self._check_is_fitted(method)
        X = _v.check_X(X)
        _v.check_n_features(X, self.n_features_in_, type(self).__name__)
        return X

    def decision_function(self, X):
        """Class scores (logits) of the rows of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
            Columns in ``classes_`` order. With two classes, scikit-learn's
            convention: one score per row, ``scores[:, 1] - scores[:, 0]``,
            positive where ``classes_[1]`` is predicted.
        """
        X = self._check_predict_X(X, "decision_function")
        scores = self._scores(X)
        if scores.shape[1] == 2:
            return scores[:, 1] - scores[:, 0]
        return scores

    def predict_proba(self, X):
        """Class probabilities ``softmax(scores)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in ``classes_`` order; each row sums to 1.
        """
        X = self._check_predict_X(X, "predict_proba")
        scores = self._scores(X)
        return _core.softmax(scores, out=scores)

    def predict(self, X):
        """The most probable class label of each row of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        X = self._check_predict_X(X, "predict")
        return self.classes_[np.argmax(self._scores(X), axis=1)]

    def score(self, X, y):
        """Mean accuracy of ``predict(X)`` against ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Labels of the kind seen in ``fit`` (numbers, or strings): string
            labels never equal numeric predictions, so a mismatch raises
            ``TypeError`` instead of scoring 0.

        Returns
        -------
        float
            The fraction of rows predicted correctly.
        """
        pred = self.predict(X)
        y, category = _v.check_label_values(y)
        fitted_category = _v.check_label_values(self.classes_, "classes_")[1]
        if category != fitted_category and y.shape[0]:
            raise TypeError(
                f"y holds {category} labels but the estimator was fitted on "
                f"{fitted_category} labels (classes_ = {self.classes_.tolist()!r})"
            )
        if y.shape[0] != pred.shape[0]:
            raise ValueError(
                "X and y have inconsistent numbers of samples: "
                f"X has {pred.shape[0]} rows, y has {y.shape[0]} labels"
            )
        return float(np.mean(pred == y))


def _warn_if_diverged(history, name):
    if not np.isfinite(history[-1]):
        warnings.warn(
            f"{name} training diverged (the loss is {history[-1]}); "
            "try a smaller learning_rate",
            RuntimeWarning,
            stacklevel=3,
        )


_COMMON_PARAMETERS = """\
    max_iter : int, default 200
        ``solver="lbfgs"``: the most L-BFGS iterations. ``solver="sgd"``:
        the number of full-batch gradient steps, or of epochs (passes over
        the data) when ``batch_size`` is set.
    batch_size : int or None, default None
        ``solver="sgd"`` only (``"lbfgs"`` needs None). ``None`` is full-batch
        gradient descent. An int switches to minibatch SGD: each epoch visits
        the rows in a fresh random order (drawn from ``random_state``) in
        batches of this size (the last may be smaller; a size larger than the
        data means full batch).
    random_state : None, int, numpy.random.Generator, numpy.random.RandomState \
or numpy.random.SeedSequence, default None
        Source of the initial weights and of the minibatch order. An int (or
        a ``SeedSequence``) seeds ``numpy.random.default_rng``, so every fit
        gives the same model; ``None`` gives fresh randomness; a
        ``Generator`` or ``RandomState`` is used as given and advanced by
        each fit.
    verbose : int, default 0
        When > 0, print the loss every ``verbose`` iterations (epochs).
    solver : {"lbfgs", "sgd"}, default "lbfgs"
        ``"lbfgs"``: SciPy's L-BFGS-B on the loss and gradient from the
        compiled kernel (needs SciPy). ``"sgd"``: (minibatch) gradient
        descent with step ``learning_rate``, the case study's loop (NumPy
        only).
    tol : float, default 1e-4
        ``solver="lbfgs"`` only: stop when no gradient component exceeds
        ``tol`` in absolute value (L-BFGS-B also stops when an iteration
        lowers the loss by a relative 2.2e-9 or less, SciPy's default).
        ``solver="sgd"`` always runs ``max_iter`` iterations.
    seed : deprecated
        The former name of ``random_state``; still accepted, with a
        ``FutureWarning`` at ``fit``, and to be removed in a future release.
        Setting both is an error."""

_COMMON_ATTRIBUTES = """\
    classes_ : ndarray of shape (n_classes,)
        Sorted distinct labels seen in ``fit``.
    n_features_in_ : int
        Number of columns of the ``X`` given to ``fit``.
    loss_history_ : ndarray of shape (n_iter_,)
        Loss (data + regularisation) before each update; for minibatch
        training, the mean minibatch loss of each epoch.
    n_iter_ : int
        Iterations (epochs) run: ``max_iter`` for ``solver="sgd"``, at most
        ``max_iter`` for ``solver="lbfgs"``."""


class SoftmaxClassifier(_SoftmaxEstimator):
    """Linear softmax classifier ``scores = X @ W + b``.

    The first model of the CS231n case study. It minimises the mean softmax
    cross-entropy plus ``0.5 * reg * sum(W**2)``, whose value and gradients
    come from the compiled kernel (see :func:`linear_softmax_loss`), with
    L-BFGS (the default) or with the notes' gradient descent
    (``solver="sgd"``: ``W -= learning_rate * dW``, ``b -= learning_rate *
    db``). Weights start at ``0.01 * standard_normal``, biases at zero.

    Parameters
    ----------
    reg : float, default 1e-3
        L2 strength: the loss gets ``0.5 * reg * sum(W**2)``.
    learning_rate : float, default 1.0
        ``solver="sgd"`` only: the step size, > 0. 1.0 is the case study's
        full-batch step; other data may need a smaller one.
{common}

    Attributes
    ----------
    W_ : ndarray of shape (n_features, n_classes)
        Weights in the notes' layout.
    b_ : ndarray of shape (n_classes,)
        Biases.
    coef_ : ndarray of shape (n_classes, n_features)
        ``W_.T`` (a view), scikit-learn's layout.
    intercept_ : ndarray of shape (n_classes,)
        Same array as ``b_``.
{attributes}
    """

    def __init__(self, reg=1e-3, learning_rate=1.0, max_iter=200, batch_size=None,
                 random_state=None, verbose=0, *, solver="lbfgs", tol=1e-4,
                 seed="deprecated"):
        self.reg = reg
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose
        self.solver = solver
        self.tol = tol
        self.seed = seed

    def _check_params(self):
        return self._check_common_params()

    def _init_parameters(self, n_features, n_classes, params, rng):
        # one flat vector [W.ravel(), b], which L-BFGS works on; W and b are views
        theta = np.zeros(n_features * n_classes + n_classes)
        W = theta[: n_features * n_classes].reshape(n_features, n_classes)
        b = theta[n_features * n_classes :]
        W[...] = 0.01 * rng.standard_normal((n_features, n_classes))
        return {"W_": W, "b_": b, "coef_": W.T, "intercept_": b, "_theta": theta}

    def _make_step(self, weights, n_rows, n_features, n_classes, params):
        ws = _LinearWorkspace(n_rows, n_features, n_classes)
        W, b = weights["W_"], weights["b_"]
        reg, lr = params["reg"], params["learning_rate"]
        options = {}

        def step(X, y):
            return ws.step(X, y, W, b, reg, lr, options)

        return step

    def _make_loss_grad(self, weights, X, y, n_classes, params):
        ws = _LinearWorkspace(X.shape[0], X.shape[1], n_classes)
        theta, W, b = weights["_theta"], weights["W_"], weights["b_"]
        reg = params["reg"]
        options = {}

        def loss_grad(x):
            theta[:] = x
            loss = ws.loss_grad(X, y, W, b, reg, options)
            return loss, np.concatenate((ws.dW.reshape(-1), ws.db))

        return theta.copy(), loss_grad

    def _scores(self, X):
        scores = np.dot(X, self.W_)
        scores += self.b_
        return scores


class TwoLayerNet(_SoftmaxEstimator):
    """Two-layer ReLU network ``relu(X @ W1 + b1) @ W2 + b2`` with a softmax output.

    The second model of the CS231n case study. It minimises the mean softmax
    cross-entropy plus ``0.5 * reg * (sum(W1**2) + sum(W2**2))`` with L-BFGS
    (the default) or gradient descent (``solver="sgd"``). The output layer's
    loss and ``dloss/dscores`` come from the compiled kernel, written in
    place over the score buffer; the rest of the pass (see
    :func:`two_layer_softmax_loss`) runs on preallocated float64 buffers.
    Weights start at ``0.01 * standard_normal`` (``W1`` drawn first, then
    ``W2``, from ``random_state``), biases at zero.

    Parameters
    ----------
    hidden_size : int, default 100
        Width of the hidden layer.
    reg : float, default 1e-3
        L2 strength: the loss gets ``0.5 * reg * (sum(W1**2) + sum(W2**2))``.
    learning_rate : float, default 1.0
        ``solver="sgd"`` only: the step size, > 0. 1.0 is the case study's
        full-batch step; other data may need a smaller one.
{common}

    Attributes
    ----------
    W1_ : ndarray of shape (n_features, hidden_size)
        First-layer weights.
    b1_ : ndarray of shape (hidden_size,)
        First-layer biases. ``W1_`` and ``b1_`` are views of one array
        ``[[W1_], [b1_]]``: the training loop folds the first bias into the
        first matrix product.
    W2_ : ndarray of shape (hidden_size, n_classes)
        Output-layer weights.
    b2_ : ndarray of shape (n_classes,)
        Output-layer biases.
    coefs_ : list of ndarray
        ``[W1_, W2_]``, the layout of scikit-learn's ``MLPClassifier``.
    intercepts_ : list of ndarray
        ``[b1_, b2_]``.
{attributes}
    """

    def __init__(self, hidden_size=100, reg=1e-3, learning_rate=1.0, max_iter=200,
                 batch_size=None, random_state=None, verbose=0, *, solver="lbfgs", tol=1e-4,
                 seed="deprecated"):
        self.hidden_size = hidden_size
        self.reg = reg
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose
        self.solver = solver
        self.tol = tol
        self.seed = seed

    def _check_params(self):
        params = self._check_common_params()
        params["hidden_size"] = _validation.check_scalar(self.hidden_size, "hidden_size", "int",
                                                         low=1)
        return params

    def _init_parameters(self, n_features, n_classes, params, rng):
        h = params["hidden_size"]
        # one flat vector [A1.ravel(), W2.ravel(), b2], which L-BFGS works on, where
        # A1 = [[W1], [b1]] (see _TwoLayerWorkspace); the weights are views of it
        n_a1, n_w2 = (n_features + 1) * h, h * n_classes
        theta = np.zeros(n_a1 + n_w2 + n_classes)
        A1 = theta[:n_a1].reshape(n_features + 1, h)
        W2 = theta[n_a1 : n_a1 + n_w2].reshape(h, n_classes)
        b2 = theta[n_a1 + n_w2 :]
        A1[:-1] = 0.01 * rng.standard_normal((n_features, h))
        W2[...] = 0.01 * rng.standard_normal((h, n_classes))
        W1, b1 = A1[:-1], A1[-1]
        return {"W1_": W1, "b1_": b1, "W2_": W2, "b2_": b2,
                "coefs_": [W1, W2], "intercepts_": [b1, b2], "_A1": A1, "_theta": theta}

    def _training_matrix(self, X):
        return _append_ones(X)

    def _make_step(self, weights, n_rows, n_features, n_classes, params):
        ws = _TwoLayerWorkspace(n_rows, n_features, params["hidden_size"], n_classes)
        A1, W2, b2 = weights["_A1"], weights["W2_"], weights["b2_"]
        reg, lr = params["reg"], params["learning_rate"]
        options = {}

        def step(X1, y):
            return ws.step(X1, y, A1, W2, b2, reg, lr, options)

        return step

    def _make_loss_grad(self, weights, X1, y, n_classes, params):
        ws = _TwoLayerWorkspace(X1.shape[0], X1.shape[1] - 1, params["hidden_size"], n_classes)
        theta, A1, W2, b2 = weights["_theta"], weights["_A1"], weights["W2_"], weights["b2_"]
        reg = params["reg"]
        options = {}

        def loss_grad(x):
            theta[:] = x
            loss = ws.loss_grad(X1, y, A1, W2, b2, reg, options)
            return loss, np.concatenate((ws.dA1.reshape(-1), ws.dW2.reshape(-1), ws.db2))

        return theta.copy(), loss_grad

    def _scores(self, X):
        hidden = np.dot(X, self.W1_)
        hidden += self.b1_
        np.maximum(hidden, 0.0, out=hidden)
        scores = np.dot(hidden, self.W2_)
        scores += self.b2_
        return scores


for _cls in (SoftmaxClassifier, TwoLayerNet):
    _cls.__doc__ = (_cls.__doc__ or "").format(common=_COMMON_PARAMETERS,
                                               attributes=_COMMON_ATTRIBUTES)
del _cls
