"""Linear and two-layer softmax models: gradients by finite differences, estimator
conventions (both solvers), the spiral data set and bad input."""

import pickle
import sys
import warnings

import numpy as np
import pytest

import cysoftmax
import reference
from cysoftmax import datasets
from cysoftmax.models import (
    ConvergenceWarning,
    DataConversionWarning,
    NotFittedError,
    SoftmaxClassifier,
    TwoLayerNet,
    linear_softmax_loss,
    two_layer_softmax_loss,
)

# Many fits here run a few L-BFGS iterations on purpose; the warning that they stopped
# before converging is tested on its own (test_lbfgs_warns_when_it_stops_early).
pytestmark = pytest.mark.filterwarnings("ignore::cysoftmax.models.ConvergenceWarning")


@pytest.fixture(autouse=True, scope="module")
def _blas_on_one_thread():
    """The fits here are tiny; L-BFGS-B's vector algebra runs through SciPy's own
    OpenBLAS, whose threads only wait for cores on a machine busy with other work (that
    costs seconds). One BLAS thread when threadpoolctl (a scikit-learn dependency) is
    there; nothing to do without it. threadpoolctl sets the libraries loaded already,
    so SciPy's is loaded first."""
    try:
        import scipy.optimize  # noqa: F401
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield

# ----------------------------------------------------------------- helpers


# The expected values come from tests/reference.py, a float64 NumPy cross-entropy
# written from the formulas, and its finite differences (fd4), never from cysoftmax.

FD_STEP = 1e-3  # of reference.fd4, a 4th-order central difference


def linear_objective(W, b, X, y, reg=0.0, **options):
    """cross_entropy(X @ W + b, y) + 0.5 * reg * sum(W**2), by the reference."""
    return reference.cross_entropy(X @ W + b, y, **options)[0] + 0.5 * reg * np.sum(W * W)


def two_layer_objective(W1, b1, W2, b2, X, y, reg=0.0, **options):
    """The two-layer network's loss, by the reference."""
    scores = np.maximum(0.0, X @ W1 + b1) @ W2 + b2
    return (reference.cross_entropy(scores, y, **options)[0]
            + 0.5 * reg * (np.sum(W1 * W1) + np.sum(W2 * W2)))


@pytest.fixture
def problem():
    """A small float64 problem: X (9, 4), labels of 5 classes, linear and 2-layer weights."""
    rng = np.random.default_rng(7)
    n, d, h, c = 9, 4, 6, 5
    return {
        "X": rng.normal(size=(n, d)),
        "y": rng.integers(0, c, size=n),
        "W": rng.normal(size=(d, c)),
        "b": rng.normal(size=c),
        "W1": rng.normal(size=(d, h)),
        "b1": rng.normal(size=h),
        "W2": rng.normal(size=(h, c)),
        "b2": rng.normal(size=c),
    }


LOSS_OPTIONS = [
    pytest.param({}, id="plain"),
    pytest.param({"reduction": "sum"}, id="sum"),
    pytest.param({"weight": np.array([0.5, 2.0, 1.0, 0.1, 3.0])}, id="class-weight"),
    pytest.param({"label_smoothing": 0.2}, id="label-smoothing"),
    pytest.param({"weight": np.array([0.5, 2.0, 1.0, 0.1, 3.0]), "label_smoothing": 0.1,
                  "reduction": "sum"}, id="weight+smoothing+sum"),
    pytest.param({"ignore_index": -1}, id="ignore-index"),
]


def _labels_for(options, y):
    if "ignore_index" in options:
        y = y.copy()
        y[[1, 4]] = options["ignore_index"]
    return y


# ------------------------------------------------ linear_softmax_loss


@pytest.mark.parametrize("reg", [0.0, 0.3], ids=["reg0", "reg0.3"])
@pytest.mark.parametrize("options", LOSS_OPTIONS)
def test_linear_loss_gradients_match_finite_differences(problem, options, reg):
    X, W, b = problem["X"], problem["W"], problem["b"]
    y = _labels_for(options, problem["y"])
    loss, dW, db = linear_softmax_loss(W, X, y, b=b, reg=reg, **options)
    assert loss == pytest.approx(linear_objective(W, b, X, y, reg, **options), rel=1e-12)
    fd_W = reference.fd4(lambda W_: linear_objective(W_, b, X, y, reg, **options), W, FD_STEP)
    fd_b = reference.fd4(lambda b_: linear_objective(W, b_, X, y, reg, **options), b, FD_STEP)
    np.testing.assert_allclose(dW, fd_W, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(db, fd_b, rtol=1e-8, atol=1e-10)


def test_linear_loss_is_cross_entropy_plus_l2(problem):
    X, y, W, b = problem["X"], problem["y"], problem["W"], problem["b"]
    loss, dW, db = linear_softmax_loss(W, X, y, b=b, reg=0.25)
    assert loss == pytest.approx(linear_objective(W, b, X, y, 0.25), rel=1e-12)
    assert isinstance(loss, float)
    # the chain rule through scores = X @ W + b, from the reference dloss/dscores
    dscores = reference.cross_entropy(X @ W + b, y)[1]
    np.testing.assert_allclose(dW, X.T @ dscores + 0.25 * W, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(db, dscores.sum(axis=0), rtol=1e-12, atol=1e-15)


def test_linear_loss_bias_shapes(problem):
    X, y, W, b = problem["X"], problem["y"], problem["W"], problem["b"]
    _, _, db_row = linear_softmax_loss(W, X, y, b=b[None, :])
    assert db_row.shape == (1, 5)
    loss0, dW0, db0 = linear_softmax_loss(W, X, y)  # no bias: gradient for a zero bias
    loss1, dW1, db1 = linear_softmax_loss(W, X, y, b=np.zeros(5))
    assert db0.shape == (5,)
    assert loss0 == loss1
    np.testing.assert_array_equal(dW0, dW1)
    np.testing.assert_array_equal(db0, db1)


def test_linear_loss_float32(problem):
    X, y, W, b = problem["X"], problem["y"], problem["W"], problem["b"]
    loss64, dW64, db64 = linear_softmax_loss(W, X, y, b=b, reg=0.1)
    loss32, dW32, db32 = linear_softmax_loss(W.astype(np.float32), X.astype(np.float32), y,
                                             b=b.astype(np.float32), reg=0.1)
    assert dW32.dtype == np.float32 and db32.dtype == np.float32
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    np.testing.assert_allclose(dW32, dW64, rtol=1e-4, atol=1e-5)
    # mixed precision computes in float64
    assert linear_softmax_loss(W.astype(np.float32), X, y)[1].dtype == np.float64


def test_linear_loss_does_not_modify_inputs(problem):
    arrays = {k: problem[k].copy() for k in ("X", "y", "W", "b")}
    linear_softmax_loss(problem["W"], problem["X"], problem["y"], b=problem["b"], reg=1.0)
    for k, v in arrays.items():
        np.testing.assert_array_equal(problem[k], v)


# ------------------------------------------------ two_layer_softmax_loss


@pytest.mark.parametrize("reg", [0.0, 0.3], ids=["reg0", "reg0.3"])
@pytest.mark.parametrize("options", LOSS_OPTIONS)
def test_two_layer_gradients_match_finite_differences(problem, options, reg):
    X = problem["X"]
    params = [problem[k] for k in ("W1", "b1", "W2", "b2")]
    y = _labels_for(options, problem["y"])
    # no hidden pre-activation may sit within the steps (up to 2 FD_STEP) of the ReLU kink
    pre = X @ params[0] + params[1]
    assert np.abs(pre).min() > 2 * FD_STEP * max(1.0, np.abs(X).max())

    loss, *grads = two_layer_softmax_loss(*params, X, y, reg=reg, **options)
    assert loss == pytest.approx(two_layer_objective(*params, X, y, reg, **options), rel=1e-12)

    for i, (name, p, g) in enumerate(zip(("dW1", "db1", "dW2", "db2"), params, grads)):
        assert g.shape == p.shape, name

        def f(value, i=i):
            return two_layer_objective(*params[:i], value, *params[i + 1:], X, y, reg,
                                       **options)

        np.testing.assert_allclose(g, reference.fd4(f, p, FD_STEP), rtol=1e-8, atol=1e-10,
                                   err_msg=name)


def test_two_layer_loss_matches_plain_numpy(problem):
    X, y = problem["X"], problem["y"]
    W1, b1, W2, b2 = (problem[k] for k in ("W1", "b1", "W2", "b2"))
    loss, dW1, db1, dW2, db2 = two_layer_softmax_loss(W1, b1, W2, b2, X, y, reg=0.1)
    assert loss == pytest.approx(two_layer_objective(W1, b1, W2, b2, X, y, 0.1), rel=1e-12)
    assert db1.shape == (6,) and db2.shape == (5,)
    # the chain rule, from the reference dloss/dscores
    hidden = np.maximum(0, X @ W1 + b1)
    dscores = reference.cross_entropy(hidden @ W2 + b2, y)[1]
    dhidden = (dscores @ W2.T) * (hidden > 0)
    np.testing.assert_allclose(dW2, hidden.T @ dscores + 0.1 * W2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(db2, dscores.sum(axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dW1, X.T @ dhidden + 0.1 * W1, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(db1, dhidden.sum(axis=0), rtol=1e-12, atol=1e-15)


def test_two_layer_net_takes_gradient_steps(problem):
    """The seeded init is 0.01 * randn (W1, then W2), zero biases; an iteration of
    TwoLayerNet.fit with solver="sgd" is W -= learning_rate * gradient."""
    X, y = problem["X"], problem["y"]
    rng = np.random.default_rng(3)
    init = [0.01 * rng.standard_normal((4, 6)), np.zeros(6),
            0.01 * rng.standard_normal((6, 5)), np.zeros(5)]
    net = TwoLayerNet(hidden_size=6, max_iter=1, learning_rate=0.7, reg=0.2, random_state=3,
                      solver="sgd").fit(X, y)
    loss, *grads = two_layer_softmax_loss(*init, X, y, reg=0.2)
    assert net.loss_history_[0] == pytest.approx(loss, rel=1e-12)
    for p0, g, p in zip(init, grads, (net.W1_, net.b1_, net.W2_, net.b2_)):
        np.testing.assert_allclose(p, p0 - 0.7 * g, rtol=1e-12, atol=1e-15)


def test_softmax_classifier_takes_gradient_steps(problem):
    X, y = problem["X"], problem["y"]
    W0 = 0.01 * np.random.default_rng(5).standard_normal((4, 5))  # the seeded init
    clf = SoftmaxClassifier(max_iter=1, learning_rate=0.5, reg=0.1, random_state=5,
                            solver="sgd").fit(X, y)
    loss, dW, db = linear_softmax_loss(W0, X, y, b=np.zeros(5), reg=0.1)
    assert clf.loss_history_[0] == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(clf.W_, W0 - 0.5 * dW, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(clf.b_, -0.5 * db, rtol=1e-12, atol=1e-15)


# ------------------------------------------------ datasets.spiral


def test_spiral_is_the_notes_generator():
    X, y = datasets.spiral(n_per_class=50, n_classes=4, noise=0.3, seed=11)
    assert X.shape == (200, 2) and X.dtype == np.float64
    assert y.shape == (200,) and y.dtype.kind == "i"
    rng = np.random.default_rng(11)
    r = np.linspace(0.0, 1, 50)
    for j in range(4):
        t = np.linspace(j * 4, (j + 1) * 4, 50) + rng.standard_normal(50) * 0.3
        np.testing.assert_array_equal(X[50 * j: 50 * (j + 1)], np.c_[r * np.sin(t), r * np.cos(t)])
        assert np.all(y[50 * j: 50 * (j + 1)] == j)
    np.testing.assert_allclose(np.hypot(X[:, 0], X[:, 1]), np.tile(r, 4), atol=1e-15)


def test_spiral_seeding():
    a, _ = datasets.spiral(seed=3)
    b, _ = datasets.spiral(seed=3)
    c, _ = datasets.spiral(seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # seed=None: fresh randomness on each call
    assert not np.array_equal(datasets.spiral()[0], datasets.spiral()[0])
    # noise=0 needs no randomness
    np.testing.assert_array_equal(datasets.spiral(noise=0)[0], datasets.spiral(noise=0.0)[0])


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"n_per_class": 0}, ValueError, "n_per_class"),
        ({"n_classes": 0}, ValueError, "n_classes"),
        ({"n_per_class": 2.5}, TypeError, "n_per_class"),
        ({"noise": -0.1}, ValueError, "noise"),
        ({"noise": "big"}, TypeError, "noise"),
        ({"noise": np.inf}, ValueError, "noise must be finite and >= 0, got inf"),
        ({"n_classes": True}, TypeError, "n_classes must be an integer, got a bool"),
    ],
    ids=["n_per_class-0", "n_classes-0", "n_per_class-float", "noise-negative", "noise-str",
         "noise-inf", "n_classes-bool"],
)
def test_spiral_bad_arguments(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        datasets.spiral(**kwargs)


# ------------------------------------------------ estimators


@pytest.fixture(scope="module")
def spiral_data():
    return datasets.spiral(n_per_class=40, seed=1)


ESTIMATORS = [
    pytest.param(lambda **kw: SoftmaxClassifier(**{"max_iter": 100, **kw}), id="SoftmaxClassifier"),
    pytest.param(lambda **kw: TwoLayerNet(**{"hidden_size": 20, "max_iter": 300, **kw}),
                 id="TwoLayerNet"),
]


@pytest.mark.parametrize("make", ESTIMATORS)
def test_string_labels_and_probabilities(make, spiral_data):
    X, y = spiral_data
    names = np.array(["red", "green", "blue"])[y]
    est = make(random_state=0).fit(X, names)
    assert est.classes_.tolist() == ["blue", "green", "red"]  # sorted, as np.unique
    pred = est.predict(X)
    assert pred.dtype == names.dtype and set(pred) <= set(names)
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(proba >= 0)
    np.testing.assert_array_equal(est.classes_[proba.argmax(axis=1)], pred)
    assert est.score(X, names) == pytest.approx(np.mean(pred == names))
    # labels sorting like the integer codes: the same seed learns the same model
    ordered = np.array(["ant", "bee", "cat"])[y]
    np.testing.assert_array_equal(make(random_state=0).fit(X, ordered).predict_proba(X),
                                  make(random_state=0).fit(X, y).predict_proba(X))


@pytest.mark.parametrize("make", ESTIMATORS)
def test_fitted_attributes(make, spiral_data):
    X, y = spiral_data
    est = make(random_state=0)
    assert est.fit(X, y) is est
    assert est.n_features_in_ == 2
    assert est.classes_.tolist() == [0, 1, 2]
    assert 1 <= est.n_iter_ <= est.max_iter
    assert est.loss_history_.shape == (est.n_iter_,)
    assert est.loss_history_[-1] < est.loss_history_[0]
    scores = est.decision_function(X)
    np.testing.assert_allclose(reference.softmax(scores), est.predict_proba(X), rtol=1e-12)


def test_softmax_classifier_attribute_layouts(spiral_data):
    X, y = spiral_data
    clf = SoftmaxClassifier(max_iter=20, random_state=0).fit(X, y)
    assert clf.W_.shape == (2, 3) and clf.b_.shape == (3,)
    assert clf.coef_.shape == (3, 2) and clf.intercept_.shape == (3,)
    np.testing.assert_array_equal(clf.coef_, clf.W_.T)
    np.testing.assert_allclose(clf.decision_function(X), X @ clf.coef_.T + clf.intercept_,
                               rtol=1e-12)


def test_two_layer_net_attribute_layouts(spiral_data):
    X, y = spiral_data
    net = TwoLayerNet(hidden_size=7, max_iter=20, random_state=0).fit(X, y)
    assert net.W1_.shape == (2, 7) and net.b1_.shape == (7,)
    assert net.W2_.shape == (7, 3) and net.b2_.shape == (3,)
    assert net.coefs_[0] is net.W1_ and net.intercepts_[1] is net.b2_
    expected = np.maximum(0, X @ net.W1_ + net.b1_) @ net.W2_ + net.b2_
    np.testing.assert_allclose(net.decision_function(X), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("make", ESTIMATORS)
def test_same_seed_same_model_and_refit_restarts(make, spiral_data):
    X, y = spiral_data
    a = make(random_state=42).fit(X, y)
    b = make(random_state=42).fit(X, y)
    np.testing.assert_array_equal(a.loss_history_, b.loss_history_)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    c = make(random_state=43).fit(X, y)
    assert not np.array_equal(a.loss_history_, c.loss_history_)

    # refit on other data, then on the first again: the same model as a fresh fit
    first = a.predict_proba(X).copy()
    a.fit(X[::2] * 2.0, y[::2])
    assert a.n_features_in_ == 2
    assert not np.array_equal(a.predict_proba(X), first)
    a.fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), first)
    np.testing.assert_array_equal(a.loss_history_, b.loss_history_)


def test_refit_with_other_classes_and_features():
    rng = np.random.default_rng(0)
    net = TwoLayerNet(hidden_size=5, max_iter=5, random_state=0)
    net.fit(rng.normal(size=(20, 3)), rng.integers(0, 4, 20))
    assert net.n_features_in_ == 3 and len(net.classes_) == 4
    net.fit(rng.normal(size=(20, 2)), np.arange(20) % 2)
    assert net.n_features_in_ == 2 and net.classes_.tolist() == [0, 1]
    assert net.W2_.shape == (5, 2)
    assert net.predict_proba(rng.normal(size=(4, 2))).shape == (4, 2)


@pytest.mark.parametrize("make", ESTIMATORS)
def test_random_state_none_gives_fresh_initialisations(make, spiral_data):
    X, y = spiral_data
    a = make(max_iter=1).fit(X, y)
    b = make(max_iter=1).fit(X, y)
    assert a.loss_history_[0] != b.loss_history_[0]


@pytest.mark.parametrize("make_generator", [np.random.default_rng, np.random.RandomState],
                         ids=["Generator", "RandomState"])
def test_generator_random_state_is_advanced(make_generator, spiral_data):
    X, y = spiral_data
    gen = make_generator(0)
    clf = SoftmaxClassifier(max_iter=3, random_state=gen)
    h1 = clf.fit(X, y).loss_history_.copy()
    h2 = clf.fit(X, y).loss_history_.copy()
    assert not np.array_equal(h1, h2)
    # the initial weights are the generator's next draws
    W0 = 0.01 * make_generator(0).standard_normal((2, 3))
    assert h1[0] == pytest.approx(linear_softmax_loss(W0, X, y, b=np.zeros(3), reg=1e-3)[0],
                                  rel=1e-12)


def test_get_params_set_params_and_repr():
    net = TwoLayerNet(hidden_size=8, reg=0.0, random_state=1)
    params = net.get_params()
    assert params == {"hidden_size": 8, "reg": 0.0, "learning_rate": 1.0, "max_iter": 200,
                      "batch_size": None, "random_state": 1, "verbose": 0, "solver": "lbfgs",
                      "tol": 1e-4, "seed": "deprecated"}
    assert repr(net) == ("TwoLayerNet(hidden_size=8, reg=0.0, learning_rate=1.0, "
                         "max_iter=200, batch_size=None, random_state=1, verbose=0, "
                         "solver='lbfgs', tol=0.0001, seed='deprecated')")
    assert net.set_params(learning_rate=0.5, max_iter=3) is net
    assert net.learning_rate == 0.5 and net.max_iter == 3
    clone = type(net)(**net.get_params())
    assert clone.get_params() == net.get_params()
    with pytest.raises(ValueError, match="Invalid parameter 'hidden'.*hidden_size"):
        net.set_params(hidden=3)
    clf = SoftmaxClassifier()
    assert clf.get_params() == {"reg": 1e-3, "learning_rate": 1.0, "max_iter": 200,
                                "batch_size": None, "random_state": None, "verbose": 0,
                                "solver": "lbfgs", "tol": 1e-4, "seed": "deprecated"}
    assert repr(clf).startswith("SoftmaxClassifier(reg=0.001, learning_rate=1.0, max_iter=200")


def test_parameters_are_validated_at_fit_not_init(spiral_data):
    X, y = spiral_data
    clf = SoftmaxClassifier(learning_rate=-1.0)  # stored as given
    assert clf.learning_rate == -1.0
    with pytest.raises(ValueError, match="learning_rate"):
        clf.fit(X, y)
    clf.set_params(learning_rate=1.0, max_iter=2)
    assert clf.fit(X, y).n_iter_ == 2


def test_parameters_of_numpy_types_and_a_bool_verbose_are_accepted(spiral_data, capsys):
    X, y = spiral_data
    net = TwoLayerNet(hidden_size=np.int64(3), max_iter=np.int32(2), reg=np.float32(0.01),
                      learning_rate=np.array(0.5), tol=np.float64(1e-3), verbose=True,
                      solver="sgd", random_state=0).fit(X, y)
    assert net.n_iter_ == 2 and net.W1_.shape == (2, 3)
    assert "TwoLayerNet iteration 1: loss" in capsys.readouterr().out  # verbose=True: 1


@pytest.mark.parametrize("make", ESTIMATORS)
def test_minibatch_sgd(make, spiral_data):
    X, y = spiral_data
    est = make(batch_size=16, random_state=0, learning_rate=0.5, solver="sgd")
    est.set_params(max_iter=40)
    est.fit(X, y)
    assert est.loss_history_.shape == (40,)  # one entry per epoch
    assert est.loss_history_[-1] < est.loss_history_[0]
    # deterministic with a seed, and the shuffling matters
    again = make(batch_size=16, random_state=0, learning_rate=0.5, solver="sgd")
    again.set_params(max_iter=40).fit(X, y)
    np.testing.assert_array_equal(est.loss_history_, again.loss_history_)
    other = make(batch_size=16, random_state=1, learning_rate=0.5, solver="sgd")
    other.set_params(max_iter=40).fit(X, y)
    assert not np.array_equal(est.loss_history_, other.loss_history_)


@pytest.mark.parametrize("make", ESTIMATORS)
def test_batch_size_at_least_n_is_full_batch(make, spiral_data):
    X, y = spiral_data
    full = make(random_state=0, solver="sgd").set_params(max_iter=10).fit(X, y)
    big = make(random_state=0, solver="sgd", batch_size=10 * len(X))
    big.set_params(max_iter=10).fit(X, y)
    np.testing.assert_array_equal(full.loss_history_, big.loss_history_)


def test_minibatch_epoch_loss_is_row_weighted_mean():
    """batch_size=1 with learning_rate tiny: each epoch's loss is ~ the full-batch loss."""
    X, y = datasets.spiral(n_per_class=5, seed=0)
    clf = SoftmaxClassifier(batch_size=4, learning_rate=1e-12, max_iter=2, reg=0.0,
                            random_state=0, solver="sgd")
    clf.fit(X, y)
    full = SoftmaxClassifier(learning_rate=1e-12, max_iter=1, reg=0.0, random_state=0,
                             solver="sgd").fit(X, y)
    assert clf.loss_history_[0] == pytest.approx(full.loss_history_[0], rel=1e-9)


def test_two_layer_net_learns_the_spiral(spiral_data):
    X, y = spiral_data
    net = TwoLayerNet(hidden_size=50, max_iter=2000, random_state=0).fit(X, y)
    clf = SoftmaxClassifier(random_state=0).fit(X, y)
    assert net.score(X, y) > 0.9
    assert clf.score(X, y) < 0.7


@pytest.mark.parametrize("make", ESTIMATORS)
def test_verbose_prints_progress(make, spiral_data, capsys):
    X, y = spiral_data
    est = make(max_iter=25, verbose=10, random_state=0, solver="sgd").fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    name = type(est).__name__
    assert [line.split(":")[0] for line in lines] == [
        f"{name} iteration 0", f"{name} iteration 10", f"{name} iteration 20"]
    assert float(lines[1].split("loss")[1]) == pytest.approx(est.loss_history_[10], abs=1e-6)


@pytest.mark.parametrize("make", ESTIMATORS)
def test_verbose_prints_lbfgs_progress(make, spiral_data, capsys):
    """One line per L-BFGS iterate: the loss before each iteration, then the final loss."""
    X, y = spiral_data
    est = make(max_iter=25, verbose=1, random_state=0).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    name = type(est).__name__
    assert [line.split(":")[0] for line in lines] == [
        f"{name} iteration {k}" for k in range(est.n_iter_ + 1)]
    printed = [float(line.split("loss")[1]) for line in lines]
    np.testing.assert_allclose(printed[:-1], est.loss_history_, atol=1e-6)
    assert printed[-1] <= printed[-2]


def test_accepts_lists_ints_and_noncontiguous_arrays(spiral_data):
    X, y = spiral_data
    Xf = np.asfortranarray(X)
    a = SoftmaxClassifier(max_iter=5, random_state=0).fit(Xf, y.tolist())
    b = SoftmaxClassifier(max_iter=5, random_state=0).fit(X.tolist(), y)
    np.testing.assert_array_equal(a.W_, b.W_)
    assert a.predict(np.array([[1, 0], [0, 1]])).shape == (2,)  # integer X is converted


def test_divergence_warns(spiral_data):
    X, y = spiral_data
    with pytest.warns(RuntimeWarning, match="diverged") as record, np.errstate(all="ignore"):
        TwoLayerNet(hidden_size=5, learning_rate=1e200, max_iter=20, random_state=0,
                    solver="sgd").fit(X * 1e100, y)
    # the warning points at the caller of fit
    assert [w.filename for w in record if "diverged" in str(w.message)] == [__file__]


# ------------------------------------------------ bad input

_X = np.random.default_rng(0).normal(size=(12, 3))
_Y = np.arange(12) % 3
_W = np.zeros((3, 3))


def _fit(est, X=_X, y=_Y):
    return lambda: est.fit(X, y)


def _fitted(est):
    return est.fit(_X, _Y)


_X_nan = _X.copy()
_X_nan[2, 1] = np.nan
_X_inf = _X.copy()
_X_inf[0, 0] = -np.inf

# (id, call, exception, regex the message must match)
BAD_INPUT = [
    # data given to fit
    ("fit-length-mismatch", _fit(SoftmaxClassifier(), y=_Y[:-1]), ValueError,
     "inconsistent numbers of samples.*12 rows.*11 labels"),
    ("fit-X-1d", _fit(TwoLayerNet(), X=_X[:, 0]), ValueError,
     r"X must be a 2-D array.*1-D.*Reshape your data.*X\.reshape\(-1, 1\)"),
    ("fit-X-3d", _fit(TwoLayerNet(), X=_X[:, :, None]), ValueError, "X must be a 2-D array"),
    ("fit-X-nan", _fit(SoftmaxClassifier(), X=_X_nan), ValueError, "X contains NaN or infinity"),
    ("fit-X-inf", _fit(TwoLayerNet(), X=_X_inf), ValueError, "X contains NaN or infinity"),
    ("fit-X-str", _fit(SoftmaxClassifier(), X=_X.astype(str)), TypeError, "X must hold real numbers"),
    ("fit-X-complex", _fit(SoftmaxClassifier(), X=_X + 1j), ValueError,
     "Complex data not supported: X has dtype complex128"),
    ("fit-X-object-dict",
     _fit(TwoLayerNet(), X=np.array([[0.5, {"a": 1}, 2.0]] * 12, dtype=object)),
     TypeError, "X must hold real numbers; its object array could not be converted.*dict"),
    ("fit-X-object-str",
     _fit(SoftmaxClassifier(), X=np.array([[0.5, "abc", 2.0]] * 12, dtype=object)),
     ValueError, "X must hold real numbers.*could not convert string to float: 'abc'"),
    ("fit-X-ragged", _fit(SoftmaxClassifier(), X=[[0.0, 1.0], [2.0]] * 6), ValueError,
     "X must be a 2-D array of shape"),
    ("fit-X-empty", _fit(SoftmaxClassifier(), X=_X[:0], y=_Y[:0]), ValueError,
     r"X has 0 sample\(s\) \(shape=\(0, 3\)\) while a minimum of 1 is required"),
    ("fit-X-no-features", _fit(TwoLayerNet(), X=_X[:, :0]), ValueError,
     r"X has 0 feature\(s\) \(shape=\(12, 0\)\) while a minimum of 1 is required"),
    ("fit-y-one-class", _fit(SoftmaxClassifier(), y=np.zeros(12)), ValueError,
     r"at least 2 classes, got 1 class: \[0\.0\]"),
    ("fit-y-one-sample", _fit(SoftmaxClassifier(), X=_X[:1], y=_Y[:1]), ValueError,
     r"at least 2 classes, got 1 class: \[0\]"),
    ("fit-y-none", _fit(TwoLayerNet(), y=None), ValueError,
     "TwoLayerNet requires y to be passed, but the target y is None"),
    ("fit-y-continuous", _fit(SoftmaxClassifier(), y=_Y + 0.5), ValueError,
     r"Unknown label type: continuous.*y\[0\] = 0\.5 is not integral"),
    ("fit-y-continuous-object", _fit(TwoLayerNet(), y=np.array([0, 1, 2.25] * 4, dtype=object)),
     ValueError, r"Unknown label type: continuous.*y\[2\] = 2\.25"),
    ("fit-y-complex", _fit(SoftmaxClassifier(), y=_Y + 1j), ValueError,
     "Complex data not supported: y has dtype complex128"),
    ("fit-y-2d", _fit(TwoLayerNet(), y=np.c_[_Y, _Y]), ValueError,
     r"y must be a 1-D array of labels, got shape \(12, 2\)"),
    ("fit-y-nan", _fit(TwoLayerNet(), y=np.where(_Y == 0, np.nan, _Y)), ValueError, "y contains NaN"),
    ("fit-y-object-nan", _fit(TwoLayerNet(), y=np.array([0, np.nan, 1] * 4, dtype=object)),
     ValueError, "y contains NaN"),
    ("fit-y-mixed-int-str", _fit(SoftmaxClassifier(), y=[0, "a", 1] * 4), TypeError,
     r"y mixes label types: y\[0\] = 0 is a number but y\[1\] = 'a' is a string"),
    ("fit-y-mixed-object-array", _fit(TwoLayerNet(), y=np.array([1.5, 2, "b"] * 4, dtype=object)),
     TypeError, r"y mixes label types.*y\[2\] = 'b'"),
    ("fit-y-mixed-bytes-str", _fit(SoftmaxClassifier(), y=[b"a", "b", "c"] * 4), TypeError,
     "y mixes label types"),
    ("fit-y-all-none", _fit(SoftmaxClassifier(), y=[None] * 12), TypeError,
     r"y must hold numbers or strings.*y\[0\] = None"),
    ("fit-y-some-none", _fit(TwoLayerNet(), y=[0, 1, 2, None] * 3), TypeError,
     r"y\[3\] = None"),
    ("fit-y-ragged", _fit(SoftmaxClassifier(), y=[[0], [1, 2]] * 6), ValueError,
     "y must be a 1-D array of labels"),
    ("fit-y-datetime", _fit(SoftmaxClassifier(), y=np.arange(12).astype("datetime64[D]")),
     TypeError, "y must hold numbers or strings"),
    ("fit-X-masked", _fit(SoftmaxClassifier(), X=np.ma.masked_greater(_X, 1.0)), TypeError,
     "X is a masked array"),
    ("fit-y-masked", _fit(TwoLayerNet(), y=np.ma.masked_equal(_Y, 2)), TypeError,
     "y is a masked array"),
    # hyper-parameters
    ("learning_rate-0", _fit(SoftmaxClassifier(learning_rate=0)), ValueError, "learning_rate must be"),
    ("learning_rate-negative", _fit(TwoLayerNet(learning_rate=-0.1)), ValueError, "learning_rate"),
    ("learning_rate-nan", _fit(TwoLayerNet(learning_rate=float("nan"))), ValueError, "learning_rate"),
    ("learning_rate-str", _fit(TwoLayerNet(learning_rate="1")), TypeError, "learning_rate"),
    ("max_iter-0", _fit(SoftmaxClassifier(max_iter=0)), ValueError, "max_iter must be >= 1, got 0"),
    ("max_iter-float", _fit(TwoLayerNet(max_iter=10.0)), TypeError, "max_iter must be an int"),
    ("hidden_size-0", _fit(TwoLayerNet(hidden_size=0)), ValueError, "hidden_size must be >= 1"),
    ("hidden_size-negative", _fit(TwoLayerNet(hidden_size=-5)), ValueError, "hidden_size"),
    ("batch_size-0", _fit(SoftmaxClassifier(batch_size=0)), ValueError, "batch_size must be >= 1"),
    ("batch_size-float", _fit(TwoLayerNet(batch_size=3.5)), TypeError,
     "batch_size must be None or an integer, got 3.5"),
    ("reg-negative", _fit(SoftmaxClassifier(reg=-1e-3)), ValueError, "reg must be finite and >= 0"),
    ("reg-inf", _fit(TwoLayerNet(reg=np.inf)), ValueError, "reg must be"),
    ("reg-bool", _fit(TwoLayerNet(reg=True)), TypeError, "reg must be a real number"),
    ("verbose-negative", _fit(SoftmaxClassifier(verbose=-1)), ValueError, "verbose"),
    ("verbose-float", _fit(SoftmaxClassifier(verbose=1.5)), TypeError, "verbose must be an int"),
    ("verbose-str", _fit(TwoLayerNet(verbose="2")), TypeError, "verbose must be an int"),
    ("random_state-str", _fit(SoftmaxClassifier(random_state="abc")), TypeError,
     "random_state must be None, an int >= 0"),
    ("random_state-negative", _fit(TwoLayerNet(random_state=-1)), ValueError,
     "random_state must be.*got -1"),
    ("random_state-float", _fit(SoftmaxClassifier(random_state=1.5)), TypeError,
     "random_state must be.*got 1.5"),
    ("random_state-bool", _fit(SoftmaxClassifier(random_state=True)), TypeError,
     "random_state must be.*bool"),
    ("solver-unknown", _fit(TwoLayerNet(solver="adam")), ValueError,
     "solver must be 'lbfgs' or 'sgd', got 'adam'"),
    ("solver-none", _fit(SoftmaxClassifier(solver=None)), ValueError, "solver must be"),
    ("tol-negative", _fit(SoftmaxClassifier(tol=-1e-3)), ValueError,
     "tol must be finite and >= 0"),
    ("tol-str", _fit(TwoLayerNet(tol="small")), TypeError, "tol must be a real number"),
    ("tol-inf", _fit(SoftmaxClassifier(tol=np.inf)), ValueError,
     "tol must be finite and >= 0, got inf"),
    ("learning_rate-bool", _fit(SoftmaxClassifier(learning_rate=True)), TypeError,
     "learning_rate must be a real number, got a bool"),
    ("max_iter-bool", _fit(TwoLayerNet(max_iter=True)), TypeError,
     "max_iter must be an integer, got a bool"),
    ("hidden_size-str", _fit(TwoLayerNet(hidden_size="8")), TypeError,
     "hidden_size must be an integer, got '8'"),
    ("batch_size-with-lbfgs", _fit(SoftmaxClassifier(batch_size=4)), ValueError,
     "batch_size=4 needs solver='sgd'"),
    # prediction
    ("predict-before-fit", lambda: SoftmaxClassifier().predict(_X), NotFittedError,
     "SoftmaxClassifier instance is not fitted yet.*'predict'"),
    ("predict_proba-before-fit", lambda: TwoLayerNet().predict_proba(_X), NotFittedError,
     "not fitted yet.*'predict_proba'"),
    ("score-before-fit", lambda: TwoLayerNet().score(_X, _Y), NotFittedError, "not fitted yet"),
    ("predict-wrong-n-features",
     lambda: _fitted(SoftmaxClassifier(max_iter=2)).predict(_X[:, :2]), ValueError,
     "X has 2 features, but SoftmaxClassifier is expecting 3 features as input"),
    ("predict_proba-wrong-n-features",
     lambda: _fitted(TwoLayerNet(hidden_size=3, max_iter=2)).predict_proba(np.ones((2, 4))),
     ValueError, "X has 4 features, but TwoLayerNet is expecting 3 features as input"),
    ("decision_function-wrong-n-features",
     lambda: _fitted(SoftmaxClassifier(max_iter=2)).decision_function(_X[:, :1]), ValueError,
     "X has 1 features, but SoftmaxClassifier is expecting 3 features as input"),
    ("decision_function-before-fit", lambda: SoftmaxClassifier().decision_function(_X),
     NotFittedError, "not fitted yet.*'decision_function'"),
    ("predict-X-complex", lambda: _fitted(TwoLayerNet(max_iter=2)).predict(_X + 0j), ValueError,
     "Complex data not supported"),
    ("predict-X-1d", lambda: _fitted(SoftmaxClassifier(max_iter=2)).predict(_X[0]), ValueError,
     "2-D array.*reshape"),
    ("predict-X-nan", lambda: _fitted(SoftmaxClassifier(max_iter=2)).predict(_X_nan), ValueError,
     "NaN"),
    ("score-length-mismatch", lambda: _fitted(SoftmaxClassifier(max_iter=2)).score(_X, _Y[:5]),
     ValueError, "inconsistent numbers of samples"),
    ("score-string-labels-for-int-classes",
     lambda: _fitted(SoftmaxClassifier(max_iter=2)).score(_X, _Y.astype(str)), TypeError,
     "y holds string labels but the estimator was fitted on number labels"),
    ("score-y-none", lambda: _fitted(TwoLayerNet(hidden_size=3, max_iter=2)).score(_X, [None] * 12),
     TypeError, r"y must hold numbers or strings.*y\[0\] = None"),
    ("score-y-mixed", lambda: _fitted(SoftmaxClassifier(max_iter=2)).score(_X, [0, "1", 2] * 4),
     TypeError, "y mixes label types"),
    ("score-y-nan",
     lambda: _fitted(SoftmaxClassifier(max_iter=2)).score(_X, np.where(_Y == 0, np.nan, _Y)),
     ValueError, "y contains NaN"),
    ("predict-X-masked",
     lambda: _fitted(SoftmaxClassifier(max_iter=2)).predict(np.ma.masked_greater(_X, 1.0)),
     TypeError, "X is a masked array"),
    # linear_softmax_loss
    ("loss-W-wrong-rows", lambda: linear_softmax_loss(np.zeros((2, 3)), _X, _Y), ValueError,
     r"W must have shape \(3, n_classes\).*got shape \(2, 3\)"),
    ("loss-W-1d", lambda: linear_softmax_loss(np.zeros(3), _X, _Y), ValueError, "W must have shape"),
    ("loss-b-wrong-shape", lambda: linear_softmax_loss(_W, _X, _Y, b=np.zeros(4)), ValueError,
     r"b must have shape \(3,\) or \(1, 3\)"),
    ("loss-length-mismatch", lambda: linear_softmax_loss(_W, _X, _Y[:4]), ValueError,
     "inconsistent numbers of samples"),
    ("loss-X-1d", lambda: linear_softmax_loss(_W, _X[0], _Y[:1]), ValueError, "X must be a 2-D"),
    ("loss-X-nan", lambda: linear_softmax_loss(_W, _X_nan, _Y), ValueError, "NaN"),
    ("loss-y-float", lambda: linear_softmax_loss(_W, _X, _Y.astype(float)), TypeError,
     r"y must be integers \(class indices\), got dtype float64"),
    ("loss-y-out-of-range", lambda: linear_softmax_loss(_W, _X, _Y + 1), IndexError,
     r"y\[2\] = 3 is not a class index in \[0, 3\)"),
    ("loss-y-object-none", lambda: linear_softmax_loss(_W, _X, [0, 1, None] * 4), TypeError,
     r"^y\b.*None"),
    ("loss-y-bool", lambda: linear_softmax_loss(_W, _X, _Y == 1), TypeError,
     r"y must be integers \(class indices\).*bool"),
    ("loss-y-masked", lambda: linear_softmax_loss(_W, _X, np.ma.masked_equal(_Y, 0)), TypeError,
     "y is a masked array"),
    ("loss-X-masked", lambda: linear_softmax_loss(_W, np.ma.masked_greater(_X, 1.0), _Y),
     TypeError, "X is a masked array"),
    ("loss-W-masked", lambda: linear_softmax_loss(np.ma.masked_equal(_W, 0), _X, _Y), TypeError,
     "W is a masked array"),
    ("loss-b-masked", lambda: linear_softmax_loss(_W, _X, _Y, b=np.ma.masked_equal(np.ones(3), 1)),
     TypeError, "b is a masked array"),
    ("loss-b-complex", lambda: linear_softmax_loss(_W, _X, _Y, b=np.zeros(3) + 1j), TypeError,
     "b must hold real numbers, got dtype complex128"),
    ("loss-b-str", lambda: linear_softmax_loss(_W, _X, _Y, b=np.array(["0", "1", "2"])),
     TypeError, "b must hold real numbers"),
    ("two-layer-W1-masked",
     lambda: two_layer_softmax_loss(np.ma.masked_equal(np.zeros((3, 4)), 0), np.zeros(4),
                                    np.zeros((4, 3)), np.zeros(3), _X, _Y), TypeError,
     "W1 is a masked array"),
    ("two-layer-b2-complex",
     lambda: two_layer_softmax_loss(np.zeros((3, 4)), np.zeros(4), np.zeros((4, 3)),
                                    np.zeros(3) + 1j, _X, _Y), TypeError, "b2 must hold real numbers"),
    ("loss-reg-negative", lambda: linear_softmax_loss(_W, _X, _Y, reg=-1.0), ValueError, "reg"),
    ("loss-reduction-none", lambda: linear_softmax_loss(_W, _X, _Y, reduction="none"), ValueError,
     "reduction must be 'mean' or 'sum'.*'none'"),
    ("loss-reduction-unknown", lambda: linear_softmax_loss(_W, _X, _Y, reduction="avg"), ValueError,
     "reduction"),
    ("loss-unknown-option", lambda: linear_softmax_loss(_W, _X, _Y, out=np.empty((12, 3))),
     TypeError, "unexpected keyword argument.*'out'"),
    ("loss-label-smoothing-2", lambda: linear_softmax_loss(_W, _X, _Y, label_smoothing=2.0),
     ValueError, "label_smoothing"),
    ("two-layer-W2-wrong-rows",
     lambda: two_layer_softmax_loss(np.zeros((3, 4)), np.zeros(4), np.zeros((5, 3)), np.zeros(3),
                                    _X, _Y), ValueError, r"W2 must have shape \(4, n_classes\)"),
    ("two-layer-b1-wrong-shape",
     lambda: two_layer_softmax_loss(np.zeros((3, 4)), np.zeros(3), np.zeros((4, 3)), np.zeros(3),
                                    _X, _Y), ValueError, r"b1 must have shape \(4,\)"),
    ("two-layer-reduction-none",
     lambda: two_layer_softmax_loss(np.zeros((3, 4)), np.zeros(4), np.zeros((4, 3)), np.zeros(3),
                                    _X, _Y, reduction="none"), ValueError, "reduction"),
]


@pytest.mark.parametrize("call, exc, pattern", [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT])
def test_bad_input(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_not_fitted_error_is_value_and_attribute_error():
    assert issubclass(NotFittedError, ValueError)
    assert issubclass(NotFittedError, AttributeError)


def test_failed_refit_keeps_the_fitted_model(spiral_data):
    X, y = spiral_data
    clf = SoftmaxClassifier(max_iter=5, random_state=0).fit(X, y)
    before = clf.predict_proba(X)
    with pytest.raises(ValueError):
        clf.fit(X[:, :1].ravel(), y)
    np.testing.assert_array_equal(clf.predict_proba(X), before)


# ------------------------------------------------ labels reach the kernel uncast


def _two_layer_call(problem, y):
    return two_layer_softmax_loss(problem["W1"], problem["b1"], problem["W2"], problem["b2"],
                                  problem["X"], y)


def _linear_call(problem, y):
    return linear_softmax_loss(problem["W"], problem["X"], y, b=problem["b"])


LOSS_CALLS = [pytest.param(_linear_call, id="linear"), pytest.param(_two_layer_call, id="two-layer")]


@pytest.mark.parametrize("call", LOSS_CALLS)
def test_loss_uint64_label_beyond_int64_raises_index_error(problem, call):
    """2**64 - 100 cast to intp wraps to -100, the default ignore_index: the row was
    silently dropped. It is no class index, so it must raise."""
    y = problem["y"].astype(np.uint64)
    y[5] = 2**64 - 100
    with pytest.raises(IndexError, match=r"y\[5\] = 18446744073709551516 is not a class index"):
        call(problem, y)
    # the same with ignore_index set to the wrapped value
    with pytest.raises(IndexError, match=r"y\[5\]"):
        linear_softmax_loss(problem["W"], problem["X"], y, ignore_index=-100)


@pytest.mark.parametrize("call", LOSS_CALLS)
def test_loss_huge_python_int_label_raises_index_error(problem, call):
    y = np.array(problem["y"].tolist()[:-1] + [2**70], dtype=object)
    with pytest.raises(IndexError, match=r"y\[8\] = 1180591620717411303424"):
        call(problem, y)


@pytest.mark.parametrize("call", LOSS_CALLS)
def test_loss_label_out_of_range_names_y_and_its_position(problem, call):
    """Plain int64 labels reach the kernel unconverted; its range error is reported for
    y, at the position of the first bad label, with the ignore_index in force."""
    y = problem["y"].copy()
    y[[3, 6]] = [-1, 5]
    with pytest.raises(IndexError, match=r"^y\[3\] = -1 is not a class index in \[0, 5\) "
                                         r"and not ignore_index \(-100\)$"):
        call(problem, y)
    with pytest.raises(IndexError, match=r"^y\[6\] = 5 .* not ignore_index \(-1\)$"):
        linear_softmax_loss(problem["W"], problem["X"], y, b=problem["b"], ignore_index=-1)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint32, np.int64, np.uint64, object])
def test_loss_accepts_every_integer_label_dtype(problem, dtype):
    X, W, b, y = problem["X"], problem["W"], problem["b"], problem["y"]
    expected = linear_objective(W, b, X, y)
    labels = np.array(y.tolist(), dtype=dtype)
    assert linear_softmax_loss(W, X, labels, b=b)[0] == pytest.approx(expected, rel=1e-12)
    expected2 = two_layer_objective(*(problem[k] for k in ("W1", "b1", "W2", "b2")), X, y)
    assert _two_layer_call(problem, labels)[0] == pytest.approx(expected2, rel=1e-12)


# ------------------------------------------------ two_layer_softmax_loss dtypes


def test_two_layer_loss_float32_with_none_biases(problem):
    """All arrays given are float32 and the biases are None: float32, as documented
    (np.asarray(None) is an object array and used to force float64)."""
    X, y = problem["X"].astype(np.float32), problem["y"]
    W1, W2 = problem["W1"].astype(np.float32), problem["W2"].astype(np.float32)
    loss, dW1, db1, dW2, db2 = two_layer_softmax_loss(W1, None, W2, None, X, y, reg=0.1)
    for g in (dW1, db1, dW2, db2):
        assert g.dtype == np.float32
    assert db1.shape == (6,) and db2.shape == (5,)
    X64, W1_64, W2_64 = (a.astype(np.float64) for a in (X, W1, W2))
    expected = two_layer_objective(W1_64, 0.0, W2_64, 0.0, X64, y, 0.1)
    assert loss == pytest.approx(expected, rel=1e-5)
    # one float64 bias makes the computation float64
    out = two_layer_softmax_loss(W1, None, W2, np.zeros(5), X, y)
    assert all(g.dtype == np.float64 for g in out[1:])
    # as in linear_softmax_loss with b=None
    assert linear_softmax_loss(W1[:, :5], X, y)[1].dtype == np.float32


def test_two_layer_loss_does_not_modify_inputs(problem):
    keys = ("X", "y", "W1", "b1", "W2", "b2")
    arrays = {k: problem[k].copy() for k in keys}
    two_layer_softmax_loss(problem["W1"], problem["b1"], problem["W2"], problem["b2"],
                           problem["X"], problem["y"], reg=1.0)
    for k, v in arrays.items():
        np.testing.assert_array_equal(problem[k], v)


def test_fit_does_not_modify_inputs(spiral_data):
    X, y = spiral_data
    X0, y0 = X.copy(), y.copy()
    for est in (SoftmaxClassifier(max_iter=3, random_state=0),
                TwoLayerNet(hidden_size=4, max_iter=3, batch_size=16, random_state=0,
                            solver="sgd")):
        est.fit(X, y).score(X, y)
        np.testing.assert_array_equal(X, X0)
        np.testing.assert_array_equal(y, y0)


# ------------------------------------------------ labels of one kind


@pytest.mark.parametrize(
    "labels, classes",
    [
        pytest.param([2, 0, 1] * 4, [0, 1, 2], id="int-list"),
        pytest.param([2.0, 0, 1] * 4, [0.0, 1.0, 2.0], id="int-and-float-list"),
        pytest.param(np.array([2, 0, 1] * 4, dtype=object), [0, 1, 2], id="int-object-array"),
        pytest.param(["c", "a", "b"] * 4, ["a", "b", "c"], id="str-list"),
        pytest.param(np.array(["c", "a", "b"] * 4, dtype=object), ["a", "b", "c"],
                     id="str-object-array"),
        pytest.param([b"c", b"a", b"b"] * 4, [b"a", b"b", b"c"], id="bytes-list"),
        pytest.param([True, False, False] * 4, [False, True], id="bool-list"),
    ],
)
def test_labels_all_numbers_or_all_strings_are_accepted(labels, classes):
    clf = SoftmaxClassifier(max_iter=3, random_state=0).fit(_X, labels)
    assert clf.classes_.tolist() == classes
    assert set(clf.predict(_X).tolist()) <= set(classes)
    assert 0.0 <= clf.score(_X, labels) <= 1.0


def test_score_numbers_of_another_dtype_match(spiral_data):
    """Fitted on ints, scored with the same labels as floats: a number is a number."""
    X, y = spiral_data
    clf = SoftmaxClassifier(max_iter=20, random_state=0).fit(X, y)
    pred = clf.predict(X)
    expected = np.count_nonzero(pred == y) / len(y)
    assert clf.score(X, y.astype(float)) == pytest.approx(expected)
    assert clf.score(X, y.tolist()) == pytest.approx(expected)


# ------------------------------------------------ scikit-learn's conventions, without it


def _blobs(n_per_class, seed, centers=((0.0, 0.0), (4.0, 0.0), (0.0, 4.0)), scale=0.7):
    """Gaussian blobs around ``centers``; the label of a point is the blob it came from."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + scale * rng.standard_normal((n_per_class, 2)) for c in centers])
    y = np.repeat(np.arange(len(centers)), n_per_class)
    order = rng.permutation(len(y))
    return X[order], y[order]


def _numpy_scores(est, X):
    """The estimator's class scores recomputed in plain NumPy from its fitted weights."""
    if isinstance(est, SoftmaxClassifier):
        return X @ est.coef_.T + est.intercept_
    hidden = np.maximum(0.0, X @ est.coefs_[0] + est.intercepts_[0])
    return hidden @ est.coefs_[1] + est.intercepts_[1]


SOLVERS = [
    pytest.param({}, id="lbfgs"),
    pytest.param({"solver": "sgd", "learning_rate": 0.5}, id="sgd"),
    pytest.param({"solver": "sgd", "learning_rate": 0.1, "batch_size": 16}, id="minibatch-sgd"),
]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("make", ESTIMATORS)
def test_binary_decision_function_is_one_score_for_the_second_class(make, solver):
    """Two classes: one score per row, scores[:, 1] - scores[:, 0], positive exactly where
    classes_[1] is predicted, ranked as predict_proba[:, 1] (its logistic sigmoid)."""
    X, y = _blobs(30, seed=3, centers=((0.0, 0.0), (2.0, 1.0)), scale=1.0)
    labels = np.array(["no", "yes"])[y]
    est = make(random_state=0, **solver).fit(X, labels)
    assert est.classes_.tolist() == ["no", "yes"]
    dec = est.decision_function(X)
    assert dec.shape == (len(X),)
    scores = _numpy_scores(est, X)
    np.testing.assert_allclose(dec, scores[:, 1] - scores[:, 0], rtol=1e-10, atol=1e-12)
    pred = est.predict(X)
    np.testing.assert_array_equal(pred, np.where(dec > 0, "yes", "no"))
    assert 0 < np.count_nonzero(dec > 0) < len(X)  # both classes are predicted
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba[:, 1], 1.0 / (1.0 + np.exp(-dec)), rtol=1e-12)
    order = np.argsort(dec, kind="stable")
    assert np.all(np.diff(proba[order, 1]) >= 0)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("make", ESTIMATORS)
def test_refit_with_the_same_random_state_is_idempotent(make, solver):
    """Random labels on uncentred data (scikit-learn's idempotence check): fitting again,
    or a fresh estimator with the same random_state, gives the same predictions."""
    rng = np.random.RandomState(0)
    X = rng.normal(loc=100, size=(80, 2))
    y = rng.randint(0, 2, size=80)
    est = make(random_state=7, **solver).fit(X, y)
    first = {m: getattr(est, m)(X) for m in ("predict", "predict_proba", "decision_function")}
    assert est.fit(X, y) is est
    for method, value in first.items():
        np.testing.assert_array_equal(getattr(est, method)(X), value, err_msg=method)
    np.testing.assert_array_equal(make(random_state=7, **solver).fit(X, y).predict_proba(X),
                                  first["predict_proba"])


@pytest.mark.parametrize("make", ESTIMATORS)
def test_default_solver_fits_separable_blobs(make):
    """L-BFGS with the default parameters learns three well-separated blobs, as the blobs'
    own labels say, on the training points and on fresh points from the same blobs."""
    X, y = _blobs(50, seed=0)
    X_new, y_new = _blobs(50, seed=1)
    est = make(random_state=0).set_params(max_iter=200).fit(X, y)
    assert est.solver == "lbfgs"
    assert est.score(X, y) >= 0.95
    assert est.score(X_new, y_new) >= 0.95


def test_lbfgs_finds_the_minimum_of_the_linear_objective(spiral_data):
    """The objective is convex: at the L-BFGS solution its gradient, taken by finite
    differences of the reference objective, vanishes; the loss decreased at every step."""
    X, y = spiral_data
    clf = SoftmaxClassifier(reg=1e-2, tol=1e-8, random_state=0).fit(X, y)
    assert clf.n_iter_ < clf.max_iter
    W, b = clf.W_, clf.b_
    # tol=1e-8 or a relative decrease below SciPy's ftol (2.2e-9) stops it; the gradient
    # there is tiny next to its size at the start (about 0.1)
    fd_W = reference.fd4(lambda W_: linear_objective(W_, b, X, y, 1e-2), W, FD_STEP)
    fd_b = reference.fd4(lambda b_: linear_objective(W, b_, X, y, 1e-2), b, FD_STEP)
    assert np.abs(fd_W).max() < 1e-5
    assert np.abs(fd_b).max() < 1e-5
    hist = clf.loss_history_
    assert np.all(np.diff(hist) <= 0)
    assert linear_objective(W, b, X, y, 1e-2) <= hist[-1]


def test_lbfgs_warns_when_it_stops_early(spiral_data):
    X, y = spiral_data
    with pytest.warns(ConvergenceWarning, match="SoftmaxClassifier: L-BFGS stopped after 2 "
                                                "iteration.*increase max_iter"):
        clf = SoftmaxClassifier(max_iter=2, random_state=0).fit(X, y)
    assert clf.n_iter_ == 2 and clf.loss_history_.shape == (2,)
    with pytest.warns(ConvergenceWarning) as record:
        SoftmaxClassifier(max_iter=2, random_state=0).fit(X, y)
    assert [w.filename for w in record] == [__file__]  # the caller of fit
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged: no warning
        SoftmaxClassifier(random_state=0).fit(X, y)


def test_lbfgs_without_scipy_fails_clearly_and_sgd_still_works(monkeypatch, spiral_data):
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # import -> ImportError
    X, y = spiral_data
    with pytest.raises(ImportError, match="solver='lbfgs' needs SciPy.*solver='sgd'"):
        TwoLayerNet(hidden_size=4).fit(X, y)
    assert TwoLayerNet(hidden_size=4, max_iter=3, solver="sgd").fit(X, y).n_iter_ == 3


@pytest.mark.parametrize("make", ESTIMATORS)
def test_sparse_input_is_refused_clearly(make, spiral_data):
    sparse = pytest.importorskip("scipy.sparse")
    X, y = spiral_data
    est = make(random_state=0)
    for container in (sparse.csr_matrix, sparse.csr_array, sparse.coo_matrix):
        with pytest.raises(TypeError, match=r"X is a sparse matrix \(\w+\), but sparse input "
                                            r"is not supported.*X\.toarray\(\)"):
            est.fit(container(X), y)
    est.fit(X, y)
    with pytest.raises(TypeError, match="sparse input is not supported"):
        est.predict(sparse.csr_matrix(X))


def test_object_X_of_numbers_is_converted(spiral_data):
    X, y = spiral_data
    a = SoftmaxClassifier(random_state=0).fit(X.astype(object), y)
    b = SoftmaxClassifier(random_state=0).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.predict_proba(X.astype(object)), b.predict_proba(X))


@pytest.mark.parametrize("make", ESTIMATORS)
def test_column_vector_y_warns_and_is_raveled(make, spiral_data):
    X, y = spiral_data
    with pytest.warns(DataConversionWarning, match=r"A column-vector y was passed when a 1d "
                                                   r"array was expected: y has shape \(120, 1\)"):
        a = make(random_state=0).fit(X, y[:, None])
    b = make(random_state=0).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_seed_is_a_deprecated_alias_of_random_state(spiral_data):
    X, y = spiral_data
    with pytest.warns(FutureWarning, match=r"seed was renamed random_state.*"
                                           r"TwoLayerNet\(random_state=\.\.\.\)"):
        old = TwoLayerNet(hidden_size=5, max_iter=20, seed=4).fit(X, y)
    new = TwoLayerNet(hidden_size=5, max_iter=20, random_state=4).fit(X, y)
    np.testing.assert_array_equal(old.predict_proba(X), new.predict_proba(X))
    with pytest.warns(FutureWarning), pytest.raises(TypeError, match="seed must be None"):
        SoftmaxClassifier(seed="abc").fit(X, y)
    with pytest.raises(ValueError, match="seed and random_state are both set"):
        SoftmaxClassifier(seed=1, random_state=1).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no warning unless seed is given
        SoftmaxClassifier(random_state=4).fit(X, y)


def test_sklearn_is_fitted_protocol(spiral_data):
    X, y = spiral_data
    clf = SoftmaxClassifier(random_state=0)
    assert clf.__sklearn_is_fitted__() is False
    assert clf.fit(X, y).__sklearn_is_fitted__() is True


def test_import_loads_neither_sklearn_nor_scipy():
    """scikit-learn stays optional and SciPy is imported by the first L-BFGS fit only; an
    estimator used before fit raises cysoftmax's own NotFittedError then."""
    code = (
        "import sys, numpy as np, cysoftmax\n"
        "assert not any(m.split('.')[0] in ('sklearn', 'scipy') for m in sys.modules), 'import'\n"
        "try:\n"
        "    cysoftmax.SoftmaxClassifier().predict(np.ones((2, 2)))\n"
        "except cysoftmax.NotFittedError as exc:\n"
        "    assert type(exc) is cysoftmax.NotFittedError, type(exc).__mro__\n"
        "assert 'sklearn' not in sys.modules\n"
        "X, y = cysoftmax.datasets.spiral(n_per_class=5, seed=0)\n"
        "cysoftmax.SoftmaxClassifier(solver='sgd', max_iter=2).fit(X, y)\n"
        "assert 'scipy' not in sys.modules, 'sgd'\n"
        "cysoftmax.SoftmaxClassifier(max_iter=2).fit(X, y)\n"
        "assert 'scipy.optimize' in sys.modules and 'sklearn' not in sys.modules\n"
    )
    import subprocess

    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_models_is_the_public_module_of_its_names(spiral_data):
    """The code lives in private modules; cysoftmax.models names it, pickles refer to
    it, and the docstrings are complete (their shared parts filled in)."""
    from cysoftmax import models

    assert sorted(models.__all__) == sorted(
        ["ConvergenceWarning", "DataConversionWarning", "NotFittedError", "SoftmaxClassifier",
         "TwoLayerNet", "linear_softmax_loss", "two_layer_softmax_loss"])
    for name in models.__all__:
        assert getattr(cysoftmax, name) is getattr(models, name)
    for obj in (SoftmaxClassifier, TwoLayerNet, linear_softmax_loss, two_layer_softmax_loss):
        assert obj.__module__ == "cysoftmax.models"
    X, y = spiral_data
    net = TwoLayerNet(hidden_size=3, max_iter=2, random_state=0).fit(X, y)
    data = pickle.dumps(net)
    assert b"cysoftmax.models" in data and b"_estimators" not in data
    np.testing.assert_array_equal(pickle.loads(data).predict_proba(X), net.predict_proba(X))
    for cls in (SoftmaxClassifier, TwoLayerNet):
        assert "{common}" not in cls.__doc__ and "{attributes}" not in cls.__doc__
        assert "learning_rate : float, default 1.0" in cls.__doc__
        assert "n_iter_ : int" in cls.__doc__
        for method in (cls.fit, cls.predict, cls.score, cls.predict_proba,
                       cls.decision_function):
            assert "{X}" not in method.__doc__
            assert "X : array-like of shape (n_samples, n_features)" in method.__doc__


def test_not_fitted_error_pickles(spiral_data):
    with pytest.raises(NotFittedError) as info:
        TwoLayerNet().predict_proba(spiral_data[0])
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is type(info.value) and str(again) == str(info.value)



# ------------------------------------------------ scikit-learn


def _shuffled_spiral():
    X, y = datasets.spiral(n_per_class=40, seed=1)
    order = np.random.default_rng(0).permutation(len(y))
    return X[order], y[order]


SKLEARN_ESTIMATORS = [
    pytest.param(lambda: SoftmaxClassifier(random_state=0), 0.4, id="SoftmaxClassifier"),
    pytest.param(lambda: TwoLayerNet(hidden_size=50, max_iter=1000, random_state=0), 0.7,
                 id="TwoLayerNet"),
]


@pytest.mark.parametrize("make, min_accuracy", SKLEARN_ESTIMATORS)
def test_sklearn_recognises_a_classifier(make, min_accuracy):
    sklearn_base = pytest.importorskip("sklearn.base")
    from sklearn.utils import get_tags

    est = make()
    assert sklearn_base.is_classifier(est)
    tags = get_tags(est)
    assert tags.estimator_type == "classifier"
    assert tags.target_tags.required
    assert tags.classifier_tags is not None and tags.classifier_tags.multi_class


@pytest.mark.parametrize("make, min_accuracy", SKLEARN_ESTIMATORS)
def test_sklearn_cross_val_score(make, min_accuracy):
    model_selection = pytest.importorskip("sklearn.model_selection")
    X, y = _shuffled_spiral()
    # an int cv is stratified only for classifiers
    cv = model_selection.check_cv(3, y, classifier=True)
    assert type(cv).__name__ == "StratifiedKFold"
    scores = model_selection.cross_val_score(make(), X, y, cv=3)
    assert scores.shape == (3,)
    assert np.all(scores > min_accuracy)  # chance is 1/3
    # string labels: predictions compare with the held-out labels
    names = np.array(["red", "green", "blue"])[y]
    assert np.all(model_selection.cross_val_score(make(), X, names, cv=3) > min_accuracy)


@pytest.mark.parametrize("make, min_accuracy", SKLEARN_ESTIMATORS)
def test_sklearn_clone(make, min_accuracy, spiral_data):
    sklearn_base = pytest.importorskip("sklearn.base")
    X, y = spiral_data
    est = make().set_params(max_iter=5, reg=0.25, learning_rate=0.5)
    est.fit(X, y)
    copy = sklearn_base.clone(est)
    assert type(copy) is type(est) and copy is not est
    assert copy.get_params() == est.get_params()
    assert copy.reg == 0.25 and copy.learning_rate == 0.5 and copy.max_iter == 5
    assert not hasattr(copy, "classes_")  # unfitted
    gen = sklearn_base.clone(make().set_params(random_state=np.random.default_rng(0)))
    assert isinstance(gen.random_state, np.random.Generator)


def test_estimators_work_without_sklearn(monkeypatch, spiral_data):
    """scikit-learn is optional: nothing but __sklearn_tags__ (which only
    scikit-learn calls) imports it."""
    import sys

    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn -> ImportError
    X, y = spiral_data
    for est in (SoftmaxClassifier(max_iter=3, random_state=0),
                TwoLayerNet(hidden_size=4, max_iter=3, random_state=0)):
        assert est._estimator_type == "classifier"
        est.fit(X, y)
        assert 0.0 <= est.score(X, y) <= 1.0
        with pytest.raises(ImportError):
            est.__sklearn_tags__()
