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

TOL = {dt: tol["rtol"] for dt, tol in reference.REFERENCE_TOL.items()}


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
    numeric = reference.fd4(lambda s: float(cysoftmax.cross_entropy(s, labels, **opts)),
                            scores, 1e-3)
    np.testing.assert_allclose(grad, numeric, rtol=1e-8, atol=1e-10)


def test_matches_docstring_example():
    loss, grad = cysoftmax.softmax_cross_entropy(np.array([[2.0, 1.0, 0.1]]), [0])
    p = np.exp([2.0, 1.0, 0.1]) / np.exp([2.0, 1.0, 0.1]).sum()
    assert abs(loss + np.log(p[0])) < 1e-15
    np.testing.assert_allclose(grad[0], p - [1, 0, 0], rtol=1e-14)


# ------------------------------------------------------------------ memory

def _traced_peak(call):
    """Peak bytes traced by tracemalloc (NumPy reports its data buffers) during call()."""
    import tracemalloc

    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


NO_GRAD_OPTIONS = {
    "mean": {},  # the compiled fast path
    "sum": dict(reduction="sum"),
    "none": dict(reduction="none"),  # only the N per-row losses
    "all": dict(weight=np.linspace(0.5, 2, 500), ignore_index=3, label_smoothing=0.1),
    "all-none": dict(weight=np.linspace(0.5, 2, 500), label_smoothing=0.1, reduction="none"),
}


@pytest.mark.parametrize("opts", NO_GRAD_OPTIONS.values(), ids=NO_GRAD_OPTIONS.keys())
def test_cross_entropy_allocates_no_gradient(dtype, opts):
    rng = np.random.default_rng(17)
    scores = rng.normal(size=(2000, 500)).astype(dtype)
    labels = rng.integers(0, 500, size=2000)
    cysoftmax.cross_entropy(scores, labels, **opts)  # one-time imports (numpy.ma: ~1 MB)
    # sanity: tracing sees NumPy's buffers, and the gradient is as large as the scores
    with_grad = _traced_peak(lambda: cysoftmax.softmax_cross_entropy(scores, labels, **opts))
    assert with_grad >= scores.nbytes
    loss_only = _traced_peak(lambda: cysoftmax.cross_entropy(scores, labels, **opts))
    # the per-row losses (16 kB) and small temporaries only: far below one gradient
    assert loss_only < scores.nbytes // 20, f"cross_entropy traced {loss_only} bytes"


# ------------------------------------------------------------------ inputs untouched

def _layout(a, layout):
    """a (values unchanged) in the given memory layout, and the buffer that holds it."""
    if layout == "C":
        b = a.copy()
        return b, b
    if layout == "F":
        b = np.asfortranarray(a)
        return b, b
    if layout == "strided":
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        wide[..., 1::2] = a
        return wide[..., 1::2], wide
    if layout == "bigendian":
        b = a.astype(a.dtype.newbyteorder(">"))
        return b, b
    raise ValueError(layout)


@pytest.mark.parametrize("layout", ["C", "F", "strided", "bigendian"])
@pytest.mark.parametrize("shape", [(20, 5), (20, 40), (4, 6, 5), (4, 6, 40)],
                         ids=lambda s: "x".join(map(str, s)))
def test_inputs_are_never_modified(dtype, shape, layout):
    """scores, labels and weight keep every byte of their buffers (a strided buffer's gaps
    too) through every option of the loss functions and through softmax / log_softmax;
    only out is written.  C-contiguous int64 labels and float64 weight reach the kernels
    without a copy, so those are the ones a conversion in place would change."""
    rng = np.random.default_rng(zlib.crc32(f"{shape}-{layout}".encode()))
    C = shape[-1]
    base = (rng.normal(size=shape) * 3).astype(dtype)
    base.reshape(-1, C)[1, 2] = -np.inf  # a masked class
    scores, s_buf = _layout(base, layout)
    weight, w_buf = _layout(rng.uniform(-1, 3, size=(1, C)), layout)  # row 0 is the weight
    buffers = {"scores": s_buf, "weight": w_buf}
    labels = {}
    for ignore in (-100, 1):  # ignore_index outside the classes, and a valid class
        y = rng.integers(0, C, size=shape[:-1])
        y.reshape(-1)[::4] = ignore
        y, buffers[f"labels{ignore}"] = _layout(y[..., None], layout)  # a gap when strided
        labels[ignore] = y[..., 0]
    before = {name: b.tobytes(order="A") for name, b in buffers.items()}

    def unchanged(what):
        for name, b in buffers.items():
            assert b.tobytes(order="A") == before[name], f"{what} modified {name}"

    for reduction, weighted, ignore, smoothing in itertools.product(
            REDUCTIONS, [False, True], [-100, 1], [0.0, 0.3]):
        kw = dict(reduction=reduction, weight=weight[0] if weighted else None,
                  ignore_index=ignore, label_smoothing=smoothing)
        cysoftmax.softmax_cross_entropy(scores, labels[ignore], **kw)
        cysoftmax.softmax_cross_entropy(scores, labels[ignore], out=np.empty(shape, dtype), **kw)
        cysoftmax.cross_entropy(scores, labels[ignore], **kw)
        unchanged(kw)
    for fn in (cysoftmax.softmax, cysoftmax.log_softmax):
        fn(scores)
        fn(scores, out=np.empty(shape, dtype))
        unchanged(fn.__name__)


# ------------------------------------------------------------------ out buffers, N-D

OUT_OPTIONS = {
    "plain": lambda C: {},
    "all": lambda C: dict(weight=np.linspace(0.25, 3, C), ignore_index=1, label_smoothing=0.2),
}


@pytest.mark.parametrize("opts", OUT_OPTIONS.values(), ids=OUT_OPTIONS.keys())
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(12, 7), (12, 33), (3, 4, 7), (3, 4, 40), (2, 3, 2, 16),
                                   (2, 3, 2, 17)], ids=lambda s: "x".join(map(str, s)))
def test_out_and_inplace_with_batches(dtype, shape, reduction, inplace, opts):
    rng = np.random.default_rng(zlib.crc32(f"{shape}-{reduction}".encode()))
    C = shape[-1]
    kw = dict(reduction=reduction, **opts(C))
    scores = (rng.normal(size=shape) * 3).astype(dtype)
    labels = rng.integers(0, C, size=shape[:-1])
    want_loss, want_grad = reference.cross_entropy(scores, labels, **kw)
    out = scores.copy() if inplace else np.full(shape, np.nan, dtype=dtype)
    loss, grad = cysoftmax.softmax_cross_entropy(out if inplace else scores, labels, out=out, **kw)
    assert grad is out
    assert np.shape(loss) == (shape[:-1] if reduction == "none" else ())
    assert np.asarray(loss).dtype == dtype
    check(loss, want_loss, dtype, "loss")
    check(grad, want_grad, dtype, "grad")
    for fn, ref in ((cysoftmax.softmax, reference.softmax),
                    (cysoftmax.log_softmax, reference.log_softmax)):
        out = scores.copy() if inplace else np.full(shape, np.nan, dtype=dtype)
        assert fn(out if inplace else scores, out=out) is out
        check(out, ref(scores), dtype, fn.__name__)


# ------------------------------------------------------------------ writes stay inside out

PAD = 64
SENTINEL = 1234.5  # no softmax, log_softmax or gradient entry here is ever > 1


def _padded(n, C, dtype, fill):
    """An (n, C) C-contiguous view into a buffer with PAD elements of `fill` either side."""
    buf = np.full(PAD + n * C + PAD, fill, dtype=dtype)
    return buf[PAD:PAD + n * C].reshape(n, C), buf


def test_writes_stay_inside_out(simd_target, dtype):
    """Every class count 1..70 (vector-of-rows path, vectors and overlapping tails, four
    vectors per step) and row counts that leave partial row groups: the padding around
    out keeps its bytes, for an out buffer and in place.  The scores themselves sit
    between NaNs, so a read past them would show in the values."""
    rng = np.random.default_rng(70)
    for C in range(1, 71):
        for n in (1, 7, 33):
            base = (rng.normal(size=(n, C)) * 3).astype(dtype)
            scores, _ = _padded(n, C, dtype, np.nan)
            scores[...] = base
            labels = rng.integers(0, C, size=n)
            labels[1::3] = -100
            calls = {
                "softmax": (lambda s, o: cysoftmax.softmax(s, out=o), reference.softmax(base)),
                "log_softmax": (lambda s, o: cysoftmax.log_softmax(s, out=o),
                                reference.log_softmax(base)),
            }
            for name, kw in [("sce", {}),
                             ("sce-all", dict(reduction="none", label_smoothing=0.2,
                                              weight=np.linspace(0.5, 2, C)))]:
                want = reference.cross_entropy(base, labels, **kw)[1]
                calls[name] = (lambda s, o, kw=kw: cysoftmax.softmax_cross_entropy(
                    s, labels, out=o, **kw)[1], want)
            for name, (fn, want) in calls.items():
                for inplace in (False, True):
                    out, buf = _padded(n, C, dtype, SENTINEL)
                    if inplace:
                        out[...] = base
                    snap = buf.copy()
                    got = fn(out if inplace else scores, out)
                    what = f"{name} C={C} n={n}{' in place' if inplace else ''}"
                    assert got is out, what
                    assert buf[:PAD].tobytes() == snap[:PAD].tobytes(), f"{what}: before out"
                    assert buf[-PAD:].tobytes() == snap[-PAD:].tobytes(), f"{what}: after out"
                    check(got, want, dtype, what, floor=1e-3)


# ------------------------------------------------------------------ negative and zero weights

@pytest.mark.parametrize("smoothing", [0.0, 0.2], ids=lambda s: f"eps{s}")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("C", [5, 40])
def test_negative_and_zero_weights(dtype, C, reduction, smoothing):
    """PyTorch accepts any real weights: zero and negative ones enter the loss, the gradient
    and the mean's denominator with their sign (here sum w_y is well away from 0)."""
    rng = np.random.default_rng(C)
    N = 48
    scores = (rng.normal(size=(N, C)) * 3).astype(dtype)
    weight = rng.uniform(0.5, 2, size=C) * np.resize([1, -1, 0, 1, -1], C)
    pos, neg, zero = (np.flatnonzero(weight > 0), np.flatnonzero(weight < 0),
                      np.flatnonzero(weight == 0))
    mixed = np.concatenate([rng.choice(pos, N // 2), rng.choice(neg, N // 4),
                            rng.choice(zero, N // 4)])
    for name, labels in [("mixed", rng.permutation(mixed)),
                         ("negative targets", rng.choice(neg, size=N))]:
        labels[::7] = -100
        kw = dict(reduction=reduction, weight=weight, label_smoothing=smoothing)
        w_y = weight[labels[labels != -100]]
        assert abs(w_y.sum()) > 1.0, w_y.sum()  # a well-conditioned mean
        loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, **kw)
        want_loss, want_grad = reference.cross_entropy(scores, labels, **kw)
        # where signs cancel, the error scale is that of the terms: the same loss with |w|
        # (its mean rescaled to this denominator)
        mag_loss, mag_grad = reference.cross_entropy(scores, labels,
                                                     **dict(kw, weight=np.abs(weight)))
        rescale = np.abs(w_y).sum() / abs(w_y.sum()) if reduction == "mean" else 1.0
        check(loss, want_loss, dtype, f"{name} loss", floor=np.abs(mag_loss).max() * rescale)
        check(grad, want_grad, dtype, f"{name} grad", floor=np.abs(mag_grad).max() * rescale)
        np.testing.assert_array_equal(cysoftmax.cross_entropy(scores, labels, **kw), loss)
        assert np.all(grad[labels == -100] == 0)
