"""softmax_cross_entropy / cross_entropy against the float64 NumPy reference, over a grid.

Grid: dtype x layout x reduction x weight x ignore_index x label_smoothing x num_threads,
with readable ids.  Tolerances: float64 1e-12 relative to the largest magnitude,
float32 2e-6 (the reference itself is float64 NumPy, not exact; the exact check is
tests/test_reference_cases.py).
"""

import itertools
import zlib

import numpy as np
import pytest

import cysoftmax
import reference

TOL = {np.float32: 2e-6, np.float64: 1e-12}


def make_scores(rng, shape, dtype, layout):
    """Scores with the requested memory layout (values identical across layouts)."""
    base = (rng.normal(size=shape) * 3).astype(dtype)
    if layout == "C":
        return base, base
    if layout == "F":
        return base, np.asfortranarray(base)
    if layout == "strided":
        wide = np.zeros(shape[:-1] + (2 * shape[-1],), dtype=dtype)
        wide[..., ::2] = base
        return base, wide[..., ::2]
    if layout == "reversed":
        return base, base[::-1, ::-1].copy()[::-1, ::-1]
    if layout == "readonly":
        ro = base.copy()
        ro.flags.writeable = False
        return base, ro
    if layout == "bigendian":
        return base, base.astype(base.dtype.newbyteorder(">"))
    if layout == "list":
        return base, base.tolist()
    raise ValueError(layout)


LAYOUTS = ["C", "F", "strided", "reversed", "readonly", "bigendian", "list"]
REDUCTIONS = ["mean", "sum", "none"]


def check(got, want, dtype, what, floor=1e-12):
    """Max error relative to the largest expected magnitude (at least `floor`)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    scale = max(np.abs(want).max(initial=0.0), floor)
    err = np.abs(got - want).max(initial=0.0) / scale
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]:.1g}"


@pytest.mark.parametrize("threads", [1, 2], ids=lambda t: f"t{t}")
@pytest.mark.parametrize("smoothing", [0.0, 0.2], ids=lambda s: f"eps{s}")
@pytest.mark.parametrize("ignore", [False, True], ids=["noignore", "ignore"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_grid(dtype, layout, reduction, weighted, ignore, smoothing, threads):
    rng = np.random.default_rng(zlib.crc32(f"{layout}-{reduction}".encode()))
    N, C = 37, 11
    base, scores = make_scores(rng, (N, C), dtype, layout)
    labels = rng.integers(0, C, size=N)
    if ignore:
        labels[::5] = -7
    weight = rng.uniform(0.5, 2.0, size=C) if weighted else None
    kw = dict(reduction=reduction, weight=weight, ignore_index=-7 if ignore else -100,
              label_smoothing=smoothing)
    snapshot = base.copy()
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, num_threads=threads, **kw)
    want_loss, want_grad = reference.cross_entropy(base, labels, **kw)
    dtype = np.float64 if layout == "list" else dtype  # a list of floats is float64
    assert grad.dtype == dtype and grad.shape == (N, C)
    assert np.asarray(loss).dtype == dtype
    check(loss, want_loss, dtype, "loss")
    check(grad, want_grad, dtype, "grad")
    only = cysoftmax.cross_entropy(scores, labels, num_threads=threads, **kw)
    np.testing.assert_array_equal(only, loss)  # the loss-only kernel agrees bitwise
    np.testing.assert_array_equal(np.asarray(scores, dtype=dtype), snapshot)  # input untouched


@pytest.mark.parametrize("C", [1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 33, 64, 100, 1000, 4099])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_class_counts(simd_target, dtype, C):
    """Every code path: vector-of-rows (C <= 16), full vectors, tails, large C."""
    rng = np.random.default_rng(C)
    N = 45
    scores = (rng.normal(size=(N, C)) * 4).astype(dtype)
    labels = rng.integers(0, C, size=N)
    for smoothing, weight in [(0.0, None), (0.3, rng.uniform(0.1, 3, size=C))]:
        kw = dict(label_smoothing=smoothing, weight=weight)
        loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, **kw)
        want_loss, want_grad = reference.cross_entropy(scores, labels, **kw)
        check(loss, want_loss, dtype, f"loss C={C}")
        # C = 1: the exact gradient is 0 and both sides hold rounding noise; the
        # entries' natural scale is weight / N ~ 1e-2
        check(grad, want_grad, dtype, f"grad C={C}", floor=1e-3)
    check(cysoftmax.softmax(scores), reference.softmax(scores), dtype, "softmax")
    check(cysoftmax.log_softmax(scores), reference.log_softmax(scores), dtype, "log_softmax")


@pytest.mark.parametrize("shape", [(5,), (2, 3, 5), (4, 1, 6), (0, 5), (3, 0, 4)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_batch_shapes(shape, reduction):
    rng = np.random.default_rng(1)
    scores = rng.normal(size=shape)
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, reduction=reduction)
    want_loss, want_grad = reference.cross_entropy(scores, labels, reduction=reduction)
    assert grad.shape == shape
    if reduction == "none":
        assert np.shape(loss) == shape[:-1]
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=0)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-15)


def test_empty_batch():
    scores = np.zeros((0, 4))
    labels = np.zeros(0, dtype=np.int64)
    assert np.isnan(cysoftmax.cross_entropy(scores, labels))
    assert cysoftmax.cross_entropy(scores, labels, reduction="sum") == 0.0
    assert cysoftmax.cross_entropy(scores, labels, reduction="none").shape == (0,)
    loss, grad = cysoftmax.softmax_cross_entropy(scores, [])
    assert np.isnan(loss) and grad.shape == (0, 4)


def test_all_ignored_mean_is_nan_with_zero_grad():
    scores = np.random.default_rng(0).normal(size=(6, 3))
    labels = np.full(6, -100)
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels)
    assert np.isnan(loss)
    assert np.all(grad == 0)
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, reduction="sum", label_smoothing=0.5)
    assert loss == 0.0 and np.all(grad == 0)


@pytest.mark.parametrize("smoothing", [0.0, 0.3], ids=["plain", "smoothed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_zero_total_weight_mean_is_nan(dtype, smoothing):
    # Every target weighted 0: the mean divides by 0, so it is NaN (not the +inf that
    # the smoothing term over 0 would give), the kept rows' gradient is NaN and the
    # ignored row's stays 0.  "sum" stays finite.
    scores = np.random.default_rng(0).normal(size=(3, 4)).astype(dtype)
    labels = np.array([0, 1, -100])
    weight = [0.0, 0.0, 1.0, 2.0]
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, weight=weight,
                                                 label_smoothing=smoothing)
    assert np.isnan(loss) and loss.dtype == dtype
    assert np.all(np.isnan(grad[:2])) and np.all(grad[2] == 0)
    assert np.isnan(cysoftmax.cross_entropy(scores, labels, weight=weight, label_smoothing=smoothing))
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, weight=weight, reduction="sum",
                                                 label_smoothing=smoothing)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


def test_ignored_rows_get_zero_gradient_and_loss():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(8, 40))
    scores[2, 5] = np.nan  # even a NaN row is silent when ignored
    labels = rng.integers(0, 40, size=8)
    labels[[2, 6]] = -100
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, reduction="none", label_smoothing=0.1)
    assert loss[2] == 0 and loss[6] == 0
    assert np.all(grad[[2, 6]] == 0)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("C", [3, 50])
def test_out_buffers(dtype, C):
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(20, C)).astype(dtype)
    labels = rng.integers(0, C, size=20)
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels)
    out = np.full_like(scores, 7)
    loss2, grad2 = cysoftmax.softmax_cross_entropy(scores, labels, out=out)
    assert grad2 is out and np.shares_memory(grad2, out)
    np.testing.assert_array_equal(grad2, grad)
    assert loss2 == loss
    inplace = scores.copy()
    loss3, grad3 = cysoftmax.softmax_cross_entropy(inplace, labels, out=inplace,
                                                   label_smoothing=0.1, weight=np.arange(1, C + 1))
    want_loss, want_grad = reference.cross_entropy(scores, labels, label_smoothing=0.1,
                                                   weight=np.arange(1, C + 1))
    assert grad3 is inplace
    check(loss3, want_loss, dtype, "in-place loss")
    check(grad3, want_grad, dtype, "in-place grad")
    for fn in (cysoftmax.softmax, cysoftmax.log_softmax):
        want = fn(scores)
        buf = scores.copy()
        assert fn(buf, out=buf) is buf
        np.testing.assert_array_equal(buf, want)
        o = np.empty_like(scores)
        assert fn(scores, out=o) is o


def test_reduction_none_grad_is_per_row_gradient():
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(5, 6))
    labels = rng.integers(0, 6, size=5)
    _, grad_none = cysoftmax.softmax_cross_entropy(scores, labels, reduction="none")
    _, grad_sum = cysoftmax.softmax_cross_entropy(scores, labels, reduction="sum")
    _, grad_mean = cysoftmax.softmax_cross_entropy(scores, labels, reduction="mean")
    np.testing.assert_allclose(grad_none, grad_sum, rtol=0, atol=0)
    np.testing.assert_allclose(grad_mean, grad_sum / 5, rtol=1e-15)


def test_two_classes_match_binary_logistic_loss():
    """C = 2 softmax cross-entropy is the logistic loss of the score difference."""
    rng = np.random.default_rng(11)
    scores = rng.normal(size=(50, 2)) * 5
    labels = rng.integers(0, 2, size=50)
    z = np.where(labels == 1, scores[:, 1] - scores[:, 0], scores[:, 0] - scores[:, 1])
    want = np.logaddexp(0, -z)
    np.testing.assert_allclose(cysoftmax.cross_entropy(scores, labels, reduction="none"), want,
                               rtol=1e-14)


def fd4(fun, x, h):
    """4th-order central difference gradient of a scalar function."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        def at(d):
            y = x.copy()
            y[i] += d
            return fun(y)
        g[i] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
    return g


OPTION_SETS = {
    "plain": {},
    "sum": dict(reduction="sum"),
    "weighted": dict(weight=[0.5, 2.0, 1.0, 3.0, 0.25]),
    "ignore": dict(ignore_index=2),
    "smooth": dict(label_smoothing=0.3),
    "all": dict(weight=[0.5, 2.0, 1.0, 3.0, 0.25], ignore_index=2, label_smoothing=0.15),
}


@pytest.mark.parametrize("opts", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_gradient_matches_finite_differences(opts):
    rng = np.random.default_rng(13)
    scores = rng.normal(size=(6, 5)) * 2
    labels = np.array([0, 1, 2, 3, 4, 1])
    _, grad = cysoftmax.softmax_cross_entropy(scores, labels, **opts)
    numeric = fd4(lambda s: float(cysoftmax.cross_entropy(s, labels, **opts)), scores, 1e-3)
    np.testing.assert_allclose(grad, numeric, rtol=1e-8, atol=1e-10)


def test_matches_docstring_example():
    loss, grad = cysoftmax.softmax_cross_entropy(np.array([[2.0, 1.0, 0.1]]), [0])
    p = np.exp([2.0, 1.0, 0.1]) / np.exp([2.0, 1.0, 0.1]).sum()
    assert abs(loss + np.log(p[0])) < 1e-15
    np.testing.assert_allclose(grad[0], p - [1, 0, 0], rtol=1e-14)
