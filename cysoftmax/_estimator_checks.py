"""Input and parameter checks of the estimators, with scikit-learn's conventions.

The estimators (:mod:`cysoftmax.models`) follow scikit-learn's estimator
conventions without depending on scikit-learn. This module holds what that
takes:

* the exceptions and warnings they raise (:class:`NotFittedError`,
  :class:`DataConversionWarning`, :class:`ConvergenceWarning`), which are also
  instances of scikit-learn's classes of the same names whenever
  scikit-learn is loaded (see :func:`sklearn_compatible`);
* the checks of ``X`` and ``y``, whose messages carry the phrases that
  scikit-learn's own estimator checks look for ("Reshape your data",
  "0 feature(s)", "Unknown label type", "Complex data not supported",
  "sparse", ...) while naming the argument at fault;
* the checks of the hyper-parameters shared by both estimators.

scikit-learn is never imported here unless it is already loaded.
"""

from __future__ import annotations

import importlib
import numbers
import sys
import warnings

import numpy as np

from cysoftmax import _validation

# --------------------------------------------------------------------------
# exceptions and warnings
# --------------------------------------------------------------------------


class NotFittedError(ValueError, AttributeError):
    """Raised when an estimator is used for prediction before ``fit``.

    When scikit-learn is loaded, the error raised is also an instance of
    ``sklearn.exceptions.NotFittedError``.
    """


class DataConversionWarning(UserWarning):
    """Warns that ``fit`` converted its input, e.g. a column-vector ``y`` to 1-D.

    When scikit-learn is loaded, the warning issued is also an instance of
    ``sklearn.exceptions.DataConversionWarning``.
    """


class ConvergenceWarning(UserWarning):
    """Warns that the L-BFGS solver stopped before converging.

    When scikit-learn is loaded, the warning issued is also an instance of
    ``sklearn.exceptions.ConvergenceWarning``, so scikit-learn's filters of
    that warning apply to it.
    """


_OWN_CLASSES = {cls.__name__: cls for cls in (NotFittedError, DataConversionWarning,
                                               ConvergenceWarning)}
_COMPAT_PREFIX = "_with_sklearn_"
_compat_classes: dict = {}


def _compat_class(name):
    """Our class ``name`` joined with scikit-learn's class of that name (cached)."""
    cls = _compat_classes.get(name)
    if cls is None:
        ours = _OWN_CLASSES[name]
        theirs = getattr(importlib.import_module("sklearn.exceptions"), name)
        cls = type(name, (ours, theirs), {
            "__module__": __name__,
            # the name pickle looks the class up by, served by __getattr__ below
            "__qualname__": _COMPAT_PREFIX + name,
            "__doc__": ours.__doc__,
        })
        _compat_classes[name] = cls
    return cls


def __getattr__(attr):
    """Serve the joined classes by their qualified names, so their instances unpickle."""
    if attr.startswith(_COMPAT_PREFIX) and attr[len(_COMPAT_PREFIX):] in _OWN_CLASSES:
        return _compat_class(attr[len(_COMPAT_PREFIX):])
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def sklearn_compatible(cls):
    """``cls``, or a subclass of it and of scikit-learn's class of the same name.

    The subclass is used only when ``sklearn.exceptions`` is already imported
    (scikit-learn imports it as soon as any part of scikit-learn is imported),
    so that code catching or filtering scikit-learn's class (``except
    sklearn.exceptions.NotFittedError``, scikit-learn's estimator checks,
    warning filters on its ``ConvergenceWarning``) sees our errors and
    warnings too. cysoftmax never imports scikit-learn itself.
    """
    if "sklearn.exceptions" not in sys.modules:
        return cls
    return _compat_class(cls.__name__)


# --------------------------------------------------------------------------
# X
# --------------------------------------------------------------------------


def _is_sparse(value):
    """Whether ``value`` is a SciPy sparse matrix or array (without importing SciPy)."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and bool(sparse.issparse(value))


def refuse_masked(value, name):
    """``np.asarray`` would silently drop the mask of a masked array: refuse it."""
    _validation.refuse_masked(value, name, f"pass {name}.filled(...) or drop the masked rows")


def refuse_sparse(value, name):
    if _is_sparse(value):
        raise TypeError(
            f"{name} is a sparse matrix ({type(value).__name__}), but sparse input is not "
            f"supported: the estimators need dense data; pass {name}.toarray()"
        )


def check_X(X, name="X"):
    """Return ``X`` as a finite, C-contiguous float64 array of shape (n_samples, n_features).

    Lists, integer, bool and float arrays are converted; object arrays are
    converted to float64 when every element is a number. Sparse matrices,
    masked arrays, complex, string and other non-numeric arrays are refused,
    as are arrays that are not 2-D, have no sample or no feature, or contain
    NaN or infinity.
    """
    refuse_sparse(X, name)
    refuse_masked(X, name)
    try:
        arr = np.asarray(X)
    except (TypeError, ValueError) as exc:  # e.g. rows of different lengths
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features): {exc}"
        ) from None
    if arr.dtype.kind == "c":
        raise ValueError(
            f"Complex data not supported: {name} has dtype {arr.dtype}; pass real "
            f"numbers (e.g. {name}.real if the imaginary parts are zero)"
        )
    if arr.dtype.kind not in "biufO":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {arr.dtype}")
    if arr.ndim != 2:
        hint = ""
        if arr.ndim == 1:
            hint = (f". Reshape your data either using {name}.reshape(-1, 1) if it has a "
                    f"single feature or {name}.reshape(1, -1) if it is a single sample")
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features), "
            f"got a {arr.ndim}-D array of shape {arr.shape}{hint}"
        )
    for axis, what in ((0, "sample"), (1, "feature")):
        if arr.shape[axis] == 0:
            raise ValueError(
                f"{name} has 0 {what}(s) (shape={arr.shape}) while a minimum of 1 is required."
            )
    try:
        arr = np.ascontiguousarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as exc:  # an object array holding a non-number
        raise type(exc)(
            f"{name} must hold real numbers; its object array could not be converted "
            f"to float64: {exc}"
        ) from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def check_n_features(X, n_features_in, estimator_name):
    if X.shape[1] != n_features_in:
        raise ValueError(
            f"X has {X.shape[1]} features, but {estimator_name} is expecting "
            f"{n_features_in} features as input"
        )


# --------------------------------------------------------------------------
# y
# --------------------------------------------------------------------------


def check_lengths(X, y):
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            "X and y have inconsistent numbers of samples: "
            f"X has {X.shape[0]} rows, y has {y.shape[0]} labels"
        )


def _label_category(value):
    """``"number"``, ``"string"`` or ``"bytes"`` for one label; None if it is none of them."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, (numbers.Number, np.bool_)):
        return "number"
    return None


_A_LABEL = {"number": "a number", "string": "a string", "bytes": "bytes"}

_CATEGORY_OF_KIND = {"b": "number", "i": "number", "u": "number", "f": "number",
                     "U": "string", "S": "bytes"}


def _complex_labels(name, dtype):
    return ValueError(f"Complex data not supported: {name} has dtype {dtype}; class labels "
                      "must be numbers or strings")


def check_label_values(y, name="y", *, column_vector="refuse"):
    """Return ``(labels, category)``: ``y`` as a 1-D array of labels of one kind.

    The labels must be all numbers, all strings or all bytes, and finite.
    ``np.asarray`` would silently turn ``[0, "a", 1]`` into the strings
    ``["0", "a", "1"]``, so sequences that NumPy turns into strings, and
    object arrays, are checked element by element. A column vector (shape
    ``(n, 1)``) is raveled with a :class:`DataConversionWarning` when
    ``column_vector="warn"`` and refused otherwise.
    """
    refuse_sparse(y, name)
    refuse_masked(y, name)
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError) as exc:  # e.g. ragged nested sequences
        raise ValueError(f"{name} must be a 1-D array of labels: {exc}") from None
    if column_vector == "warn" and arr.ndim == 2 and arr.shape[1] == 1:
        warnings.warn(
            sklearn_compatible(DataConversionWarning)(
                f"A column-vector y was passed when a 1d array was expected: {name} has "
                f"shape {arr.shape}; it is used as shape ({arr.shape[0]},). Pass "
                f"{name}.ravel() to avoid this warning."
            ),
            stacklevel=4,
        )
        arr = arr.reshape(-1)
        y = arr
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, got shape {arr.shape}")
    kind = arr.dtype.kind
    if kind == "c":
        raise _complex_labels(name, arr.dtype)
    if kind in "US" and isinstance(y, np.ndarray):
        return arr, _CATEGORY_OF_KIND[kind]
    if kind in "OUS":
        items = arr if kind == "O" else np.asarray(y, dtype=object).reshape(-1)
        category, first = None, None
        for i, v in enumerate(items):
            c = _label_category(v)
            if c is None:
                raise TypeError(
                    f"{name} must hold numbers or strings (class labels), got "
                    f"{name}[{i}] = {v!r} of type {type(v).__name__}"
                )
            if category is None:
                category, first = c, i
            elif c != category:
                raise TypeError(
                    f"{name} mixes label types: {name}[{first}] = {items[first]!r} is "
                    f"{_A_LABEL[category]} but {name}[{i}] = {v!r} is {_A_LABEL[c]}; "
                    "use labels of one type"
                )
        if kind != "O":
            return arr, category
        if category != "number":  # strings or bytes, or empty: kept as an object array
            return arr, category or "number"
        arr = np.array(arr.tolist())  # numbers: a numeric array (object for huge ints)
        kind = arr.dtype.kind
        if kind == "c":
            raise _complex_labels(name, "object (complex numbers)")
    if kind not in _CATEGORY_OF_KIND and kind != "O":
        raise TypeError(
            f"{name} must hold numbers or strings (class labels), got dtype {arr.dtype}"
        )
    if kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return arr, _CATEGORY_OF_KIND.get(kind, "number")


def encode_targets(y, X, estimator_name):
    """Map the labels ``y`` of ``fit`` to indices 0..C-1; return ``(classes, indices)``.

    ``y`` must be given (not None), hold at least two classes, and not be
    continuous: floats must have integral values.
    """
    if y is None:
        raise ValueError(
            f"{estimator_name} requires y to be passed, but the target y is None"
        )
    arr, _ = check_label_values(y, column_vector="warn")
    check_lengths(X, arr)
    if arr.dtype.kind == "f":
        fractional = np.flatnonzero(arr != np.trunc(arr))
        if fractional.size:
            i = int(fractional[0])
            raise ValueError(
                f"Unknown label type: continuous. y must hold class labels (integers, "
                f"strings, or floats with integral values), but y[{i}] = {arr[i].item()!r} is "
                "not integral: a classifier cannot be fitted to a continuous target"
            )
    classes, indices = np.unique(arr, return_inverse=True)
    if classes.shape[0] < 2:
        k = classes.shape[0]
        raise ValueError(
            f"y must contain at least 2 classes, got {k} class{'' if k == 1 else 'es'}: "
            f"{classes.tolist()}"
        )
    return classes, np.ascontiguousarray(indices.reshape(-1), dtype=np.intp)


# --------------------------------------------------------------------------
# hyper-parameters
# --------------------------------------------------------------------------


def check_reg(reg):
    """The L2 strength of the estimators and the loss functions: a finite real >= 0."""
    return _validation.check_scalar(reg, "reg", "real", low=0, finite=True)


def check_common_params(est):
    """The hyper-parameters both estimators share, checked; returns them as a dict."""
    check = _validation.check_scalar
    batch_size = check(est.batch_size, "batch_size", "int", low=1, allow_none=True)
    return dict(
        solver=check_solver(est.solver, batch_size),
        reg=check_reg(est.reg),
        learning_rate=check(est.learning_rate, "learning_rate", "real", low=0, low_open=True,
                            finite=True),
        max_iter=check(est.max_iter, "max_iter", "int", low=1),
        batch_size=batch_size,
        tol=check(est.tol, "tol", "real", low=0, finite=True),
        verbose=check(est.verbose, "verbose", "int", low=0, allow_bool=True),
    )


SOLVERS = ("lbfgs", "sgd")


def check_solver(solver, batch_size):
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"solver must be 'lbfgs' or 'sgd', got {solver!r}")
    if solver == "lbfgs" and batch_size is not None:
        raise ValueError(
            f"batch_size={batch_size!r} needs solver='sgd': solver='lbfgs' always uses "
            "the full batch; set batch_size=None, or solver='sgd' for minibatch training"
        )
    return solver


_RANDOM_STATE_KINDS = ("None, an int >= 0, a numpy.random.SeedSequence, "
                       "a numpy.random.Generator or a numpy.random.RandomState")


def make_rng(random_state, name="random_state"):
    """The random generator of one fit, its errors naming ``name``.

    ``None``, an int or a ``SeedSequence`` seed ``numpy.random.default_rng``
    (an int gives the same draws on every fit); a ``Generator`` or a
    ``RandomState`` is used as given, and advanced by each fit.
    """
    if isinstance(random_state, (np.random.Generator, np.random.RandomState)):
        return random_state
    if isinstance(random_state, (bool, np.bool_)):
        raise TypeError(f"{name} must be {_RANDOM_STATE_KINDS}, got a bool")
    try:
        return np.random.default_rng(random_state)
    except (TypeError, ValueError) as exc:
        raise type(exc)(
            f"{name} must be {_RANDOM_STATE_KINDS}, got {random_state!r} ({exc})"
        ) from None
