"""The estimators :class:`SoftmaxClassifier` and :class:`TwoLayerNet` (public through
:mod:`cysoftmax.models`), with scikit-learn's conventions.

:class:`_SoftmaxEstimator` holds what they share: the parameter protocol, the
checks, training -- a model's workspace (:mod:`cysoftmax._workspaces`) driven by
one of the solvers (:mod:`cysoftmax._solvers`) -- and prediction. Each model
adds its parameters' layout, its workspace and its scores.
"""

from __future__ import annotations

import functools
import inspect
import warnings

import numpy as np

# The package is looked up at call time, so this module can be imported while
# ``cysoftmax/__init__.py`` is still running (it re-exports names from here).
import cysoftmax as _core
from cysoftmax import _solvers, _validation
from cysoftmax import _estimator_checks as _v
from cysoftmax._estimator_checks import NotFittedError
from cysoftmax._workspaces import LinearWorkspace, TwoLayerWorkspace, append_ones

__all__ = ["SoftmaxClassifier", "TwoLayerNet"]


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

    def _store_params(self, values):
        """What ``__init__`` does, by scikit-learn's convention: store each constructor
        parameter, as given, under its name (``values`` is ``__init__``'s ``locals()``)."""
        for name in self._get_param_names():
            setattr(self, name, values[name])

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

    # -- what each model defines ---------------------------------------------

    def _init_parameters(self, n_features, n_classes, params, rng):  # pragma: no cover
        """``(theta, arrays, weights)`` of a fresh fit: the flat parameter vector, the
        arrays the model's pass updates (views of ``theta``, in the order of its
        workspace's ``grads``) and the fitted attributes by name."""
        raise NotImplementedError

    def _workspace(self, n_rows, n_features, n_classes, params):  # pragma: no cover
        """The model's workspace (:mod:`cysoftmax._workspaces`) for ``n_rows`` rows."""
        raise NotImplementedError

    def _scores(self, X):  # pragma: no cover
        """The class scores of the checked rows ``X``."""
        raise NotImplementedError

    def _training_matrix(self, X):
        """The rows the model's pass takes (the checked ``X``, unless the model says)."""
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

    def _check_params(self):
        return _v.check_common_params(self)

    # -- training ------------------------------------------------------------

    def fit(self, X, y):
        """Train from scratch.

{X}
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
        theta, arrays, weights = self._init_parameters(n_features, n_classes, params, rng)
        X_train = self._training_matrix(X)
        n_rows = X.shape[0] if params["batch_size"] is None else min(params["batch_size"],
                                                                     X.shape[0])
        ws = self._workspace(n_rows, n_features, n_classes, params)
        reg, options = params["reg"], {}
        if params["solver"] == "sgd":
            step = functools.partial(ws.step, arrays=arrays, reg=reg,
                                     lr=params["learning_rate"], options=options)
            history = _solvers.gradient_descent(step, X_train, y_idx, params, rng, name)
        else:
            loss_grad = ws.flat_loss_grad(X_train, y_idx, theta, arrays, reg, options)
            solution, history = _solvers.lbfgs(loss_grad, theta.copy(), params, name)
            theta[:] = solution  # the fitted weights are views of it
        # only a completed fit replaces the fitted state
        return self._set_fitted(weights, classes, n_features, history)

    def _set_fitted(self, weights, classes, n_features, history):
        """Store a completed fit: the weights by name, the classes, the number of features
        and the loss history (whose length is n_iter_); returns self."""
        for name, value in weights.items():
            setattr(self, name, value)
        self.classes_ = classes
        self.n_features_in_ = n_features
        self.loss_history_ = history
        self.n_iter_ = history.shape[0]
        return self

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

{X}

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

{X}

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

{X}

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        X = self._check_predict_X(X, "predict")
        return self.classes_[np.argmax(self._scores(X), axis=1)]

    def score(self, X, y):
        """Mean accuracy of ``predict(X)`` against ``y``.

{X}
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
        _v.check_lengths(pred, y)  # (a row of X for each prediction)
        return float(np.mean(pred == y))


def _flat_parameters(*shapes):
    """``(theta, views)``: one float64 vector of zeros, the vector L-BFGS works on,
    and arrays of the given shapes that are views of consecutive pieces of it."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    theta = np.zeros(sum(sizes))
    ends = np.cumsum(sizes)
    return theta, [theta[end - size : end].reshape(shape)
                   for shape, size, end in zip(shapes, sizes, ends)]


_COMMON_PARAMETERS = """\
    learning_rate : float, default 1.0
        ``solver="sgd"`` only: the step size, > 0. 1.0 is the case study's
        full-batch step; other data may need a smaller one.
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
        lowers the loss by a relative 1.4e-14 or less, scikit-learn's ``ftol``;
        with a small ``tol`` the fit is scikit-learn's multinomial
        ``LogisticRegression(C=1 / (reg * n_samples))`` to about 1e-7).
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
        self._store_params(locals())

    def _init_parameters(self, n_features, n_classes, params, rng):
        theta, (W, b) = _flat_parameters((n_features, n_classes), (n_classes,))
        W[...] = 0.01 * rng.standard_normal((n_features, n_classes))
        return theta, (W, b), {"W_": W, "b_": b, "coef_": W.T, "intercept_": b}

    def _workspace(self, n_rows, n_features, n_classes, params):
        return LinearWorkspace(n_rows, n_features, n_classes)

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
        self._store_params(locals())

    def _check_params(self):
        params = super()._check_params()
        params["hidden_size"] = _validation.check_scalar(self.hidden_size, "hidden_size", "int",
                                                         low=1)
        return params

    def _init_parameters(self, n_features, n_classes, params, rng):
        h = params["hidden_size"]
        # A1 = [[W1], [b1]]: the first bias rides in the first product (TwoLayerWorkspace)
        theta, (A1, W2, b2) = _flat_parameters((n_features + 1, h), (h, n_classes),
                                               (n_classes,))
        A1[:-1] = 0.01 * rng.standard_normal((n_features, h))
        W2[...] = 0.01 * rng.standard_normal((h, n_classes))
        W1, b1 = A1[:-1], A1[-1]
        return theta, (A1, W2, b2), {"W1_": W1, "b1_": b1, "W2_": W2, "b2_": b2,
                                     "coefs_": [W1, W2], "intercepts_": [b1, b2], "_A1": A1}

    def _training_matrix(self, X):
        return append_ones(X)

    def _workspace(self, n_rows, n_features, n_classes, params):
        return TwoLayerWorkspace(n_rows, n_features, params["hidden_size"], n_classes)

    def _scores(self, X):
        hidden = np.dot(X, self.W1_)
        hidden += self.b1_
        np.maximum(hidden, 0.0, out=hidden)
        scores = np.dot(hidden, self.W2_)
        scores += self.b2_
        return scores


_X_PARAMETER = """\
        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)"""

for _method in (_SoftmaxEstimator.fit, _SoftmaxEstimator.decision_function,
                _SoftmaxEstimator.predict_proba, _SoftmaxEstimator.predict,
                _SoftmaxEstimator.score):
    _method.__doc__ = (_method.__doc__ or "").format(X=_X_PARAMETER)
for _cls in (SoftmaxClassifier, TwoLayerNet):
    _cls.__doc__ = (_cls.__doc__ or "").format(common=_COMMON_PARAMETERS,
                                               attributes=_COMMON_ATTRIBUTES)
del _method, _cls
