"""scikit-learn's own estimator checks on both estimators with default parameters, and
the points where cysoftmax meets scikit-learn: its exceptions and warnings, its
``check_is_fitted``, and its logistic regression as an independent reference for the
linear model. Skipped when scikit-learn is not installed."""

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning  # noqa: E402
from sklearn.exceptions import DataConversionWarning as SklearnDataConversionWarning  # noqa: E402
from sklearn.exceptions import NotFittedError as SklearnNotFittedError  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402

import cysoftmax  # noqa: E402
from cysoftmax import SoftmaxClassifier, TwoLayerNet, datasets  # noqa: E402

# Checks that fit for a few iterations end before L-BFGS converges, by design.
pytestmark = pytest.mark.filterwarnings("ignore::cysoftmax.ConvergenceWarning")


@pytest.fixture(autouse=True, scope="module")
def _blas_on_one_thread():
    """The checks fit tiny problems, thousands of BLAS calls on a few hundred numbers each.
    L-BFGS-B runs its vector algebra through SciPy's own OpenBLAS, whose threads then
    only wait for cores: on a machine busy with other work that costs seconds. One
    thread each (threadpoolctl comes with scikit-learn)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


_NOT_A_BASE_ESTIMATOR = ".*does not inherit from `sklearn.base.BaseEstimator`"


def _default_estimators():
    return [SoftmaxClassifier(), TwoLayerNet()]


def _check_name(check):
    """``check_name`` or ``check_name(arg=value,...)`` for a functools.partial."""
    name = getattr(check, "func", check).__name__
    keywords = getattr(check, "keywords", None)
    if keywords:
        name += "(" + ",".join(f"{k}={v}" for k, v in keywords.items()) + ")"
    return name


def _all_checks():
    """scikit-learn's checks for each estimator, as (estimator, check) pairs.

    What ``parametrize_with_checks`` yields, collected here so that scikit-learn's
    warning that the estimators do not inherit from its ``BaseEstimator`` (on purpose:
    scikit-learn is optional) can be silenced.
    """
    from sklearn.utils.estimator_checks import estimator_checks_generator

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NOT_A_BASE_ESTIMATOR, category=UserWarning)
        return [pytest.param(est, check, id=f"{type(est).__name__}-{_check_name(check)}")
                for est in _default_estimators()
                for est, check in estimator_checks_generator(est, legacy=True, mark="skip")]


ALL_CHECKS = _all_checks()


@pytest.mark.filterwarnings(f"ignore:{_NOT_A_BASE_ESTIMATOR}:UserWarning")
@pytest.mark.parametrize("estimator, check", ALL_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_all_checks_are_run():
    """The parametrization above is scikit-learn's full list for a classifier (the 55
    checks of scikit-learn 1.9, or more), the same for each estimator, and includes the
    checks that used to fail."""
    names = {}
    for param in ALL_CHECKS:
        est, check = param.values
        names.setdefault(type(est).__name__, []).append(_check_name(check))
    assert len(names["SoftmaxClassifier"]) >= 55
    assert names["SoftmaxClassifier"] == names["TwoLayerNet"]
    for expected in ("check_decision_proba_consistency", "check_classifiers_classes",
                     "check_fit_idempotent", "check_classifiers_train",
                     "check_estimators_unfitted", "check_n_features_in_after_fitting",
                     "check_estimator_sparse_array", "check_requires_y_none",
                     "check_supervised_y_2d", "check_classifiers_regression_target",
                     "check_fit2d_1sample", "check_fit2d_predict1d", "check_complex_data",
                     "check_dtype_object", "check_estimators_empty_data_messages"):
        assert expected in names["SoftmaxClassifier"], expected


# ---------------------------------------------------------------- exceptions and warnings


@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function", "score"])
def test_not_fitted_error_is_sklearns(method):
    est = TwoLayerNet()
    args = (np.ones((3, 2)),) + ((np.zeros(3),) if method == "score" else ())
    reported = "predict" if method == "score" else method  # score calls predict
    with pytest.raises(SklearnNotFittedError, match=f"not fitted yet.*'{reported}'") as info:
        getattr(est, method)(*args)
    assert isinstance(info.value, cysoftmax.NotFittedError)
    assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError)
    # it travels between processes (joblib pickles exceptions raised in workers)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is type(info.value)
    assert isinstance(again, SklearnNotFittedError) and str(again) == str(info.value)


def test_check_is_fitted():
    X, y = datasets.spiral(n_per_class=10, seed=0)
    clf = SoftmaxClassifier(random_state=0)
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(clf)
    check_is_fitted(clf.fit(X, y))


def test_warnings_are_sklearns():
    X, y = datasets.spiral(n_per_class=10, seed=0)
    with pytest.warns(SklearnConvergenceWarning, match="L-BFGS stopped") as record:
        SoftmaxClassifier(max_iter=1, random_state=0).fit(X, y)
    assert all(isinstance(w.message, cysoftmax.ConvergenceWarning) for w in record)
    with pytest.warns(SklearnDataConversionWarning, match="column-vector y") as record:
        SoftmaxClassifier(random_state=0).fit(X, y[:, None])
    assert any(isinstance(w.message, cysoftmax.DataConversionWarning) for w in record)


# ---------------------------------------------------------------- logistic regression


def test_softmax_classifier_matches_logistic_regression():
    """Both minimise the mean cross-entropy plus an L2 penalty of the weights (not the
    intercepts): scikit-learn's multinomial LogisticRegression with C = 1 / (n * reg) has
    the same solution, so the same probabilities and coefficients."""
    from sklearn.linear_model import LogisticRegression

    X, y = datasets.spiral(n_per_class=40, seed=1)
    reg = 1e-2
    clf = SoftmaxClassifier(reg=reg, tol=1e-8, random_state=0).fit(X, y)
    ref = LogisticRegression(C=1 / (len(X) * reg), tol=1e-10, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(clf.predict_proba(X), ref.predict_proba(X), atol=1e-4)
    np.testing.assert_allclose(clf.coef_, ref.coef_, atol=2e-3)
    np.testing.assert_array_equal(clf.classes_, ref.classes_)


def test_binary_decision_function_matches_logistic_regression():
    """Two classes: the softmax weights of the two columns are opposite at the optimum, so
    the decision function scores[:, 1] - scores[:, 0] is a logistic regression's with half
    the penalty, C = 2 / (n * reg); same sign convention (positive: classes_[1])."""
    from sklearn.linear_model import LogisticRegression

    X, y = datasets.spiral(n_per_class=40, seed=1)
    keep = y != 2
    X, y = X[keep], np.array(["no", "yes"])[y[keep]]
    reg = 1e-2
    clf = SoftmaxClassifier(reg=reg, tol=1e-8, random_state=0).fit(X, y)
    ref = LogisticRegression(C=2 / (len(X) * reg), tol=1e-10, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(clf.decision_function(X), ref.decision_function(X), atol=1e-3)
    np.testing.assert_array_equal(clf.predict(X), ref.predict(X))
