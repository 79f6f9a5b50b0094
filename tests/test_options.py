"""The loss options: probability targets, z-loss and logit soft-capping.

* a grid (dtype x targets x options x reduction x threads) against the float64 NumPy
  reference of their documented formulas (``reference.cross_entropy_options``);
* float64 PyTorch as an oracle for probability targets and soft-capping (random
  shapes and options; skipped without torch);
* finite differences of the loss for the gradients;
* the edge cases the documentation promises (masked classes, zero targets, ignored
  rows' lse, N-D batches, ``out=``, bitwise determinism across thread counts);
* errors, each naming its argument, with nothing modified.

The exact (mpmath) cross-check of these options is tests/test_reference_options.py.
"""

import itertools
import zlib

import numpy as np
import pytest

import cysoftmax
import reference

TOL = reference.REFERENCE_TOL
DTYPES = [np.float32, np.float64]


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def make_case(key, n, C, dtype, targets, ignore=True, spread=3.0):
    rng = _rng(*key)
    f = (rng.standard_normal((n, C)) * spread).astype(dtype)
    if targets == "prob":
        t = rng.random((n, C)).astype(dtype)
        t[:, 0] = 0.0  # zero targets
        return f, t
    y = rng.integers(0, C, n)
    if ignore:
        y[::5] = -100
    return f, y


def assert_close(got, want, dtype, what, scale=None):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    tol = TOL[dtype]
    if scale is None:
        scale = np.max(np.abs(want[np.isfinite(want)]), initial=0.0)
    err = np.abs(got - want)
    bad = ~((err <= tol["rtol"] * scale + tol["atol"]) | ((got == want) & ~np.isnan(want))
            | (np.isnan(got) & np.isnan(want)))
    assert not bad.any(), (f"{what}: worst error {np.nanmax(err)} (scale {scale}) at "
                           f"{np.argwhere(bad)[:3].tolist()}")


OPTIONS = {
    "plain": {},
    "z": dict(z_loss=1e-2),
    "cap": dict(softcap=5.0),
    "cap-small": dict(softcap=0.5),
    "z-cap-smooth": dict(z_loss=0.3, softcap=3.0, label_smoothing=0.1),
    "smooth-weight-z": dict(label_smoothing=0.2, z_loss=1e-3, weight="w"),
    "all": dict(label_smoothing=0.05, z_loss=0.1, softcap=2.0, weight="w"),
}


@pytest.mark.parametrize("threads", [1, 2], ids=lambda t: f"t{t}")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("targets", ["index", "prob"])
@pytest.mark.parametrize("C", [3, 17, 300], ids=lambda c: f"C{c}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_grid_against_reference(dtype, C, targets, option, reduction, threads):
    f, lab = make_case((dtype, C, targets, option), 67, C, dtype, targets)
    opts = dict(OPTIONS[option])
    if opts.get("weight") == "w":
        opts["weight"] = _rng(C, "w").uniform(0.25, 3.0, C)
    loss, grad, z, lse = cysoftmax.softmax_cross_entropy(
        f, lab, reduction=reduction, return_z_loss=True, return_lse=True,
        num_threads=threads, **opts)
    L, G, Z, LSE = reference.cross_entropy_options(f, lab, reduction=reduction, **opts)
    assert loss.dtype == grad.dtype == dtype and np.asarray(z).dtype == dtype
    assert lse.dtype == dtype and lse.shape == f.shape[:-1]
    assert_close(loss, L, dtype, "loss")
    assert_close(grad, G, dtype, "grad")
    assert_close(z, Z, dtype, "z")
    assert_close(lse, LSE, dtype, "lse")
    # the loss alone agrees bitwise with the loss of the fused call
    alone = cysoftmax.cross_entropy(f, lab, reduction=reduction, num_threads=threads, **opts)
    np.testing.assert_array_equal(alone, loss)


@pytest.mark.parametrize("seed", range(40))
def test_pytorch_oracle(seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in rng.integers(1, 6, rng.integers(1, 3))) + (
        int(rng.choice([1, 2, 5, 16, 33, 129])),)
    C = shape[-1]
    dtype = np.float64 if seed % 2 else np.float32
    f = (rng.standard_normal(shape) * rng.choice([0.5, 4.0, 40.0])).astype(dtype)
    prob = seed % 4 < 2
    if prob:
        lab = (rng.random(shape) * (rng.random(shape) < 0.7)).astype(dtype)
    else:
        lab = rng.integers(0, C, shape[:-1])
        lab[rng.random(shape[:-1]) < 0.2] = 3
    weight = rng.uniform(0.1, 4.0, C) if rng.random() < 0.5 else None
    eps = float(rng.choice([0.0, 0.1, 0.7]))
    cap = [None, 0.7, 10.0][seed % 3]
    reduction = ["mean", "sum", "none"][seed % 5 % 3]
    kw = dict(reduction=reduction, weight=weight, label_smoothing=eps)
    if not prob:
        kw["ignore_index"] = 3
    loss, grad = cysoftmax.softmax_cross_entropy(f, lab, softcap=cap, **kw)

    # PyTorch wants the class axis second
    ft = torch.tensor(np.moveaxis(f.astype(np.float64), -1, 1) if f.ndim > 1
                      else f.astype(np.float64), requires_grad=True)
    x = cap * torch.tanh(ft / cap) if cap else ft
    if prob:
        tt = torch.tensor(np.moveaxis(lab.astype(np.float64), -1, 1) if f.ndim > 1
                          else lab.astype(np.float64))
    else:
        tt = torch.tensor(lab)
    kw_t = dict(kw, weight=None if weight is None else torch.tensor(weight))
    L = F.cross_entropy(x, tt, **kw_t)
    L.backward(torch.ones_like(L))
    G = ft.grad.numpy()
    G = np.moveaxis(G, 1, -1) if f.ndim > 1 else G
    assert_close(loss, L.detach().numpy(), dtype, "loss")
    assert_close(grad, G, dtype, "grad")


@pytest.mark.parametrize("targets", ["index", "prob"])
@pytest.mark.parametrize("option", ["z", "cap", "all"])
def test_gradient_is_the_derivative_of_the_loss(targets, option):
    f, lab = make_case(("fd", targets, option), 4, 7, np.float64, targets, ignore=False)
    opts = dict(OPTIONS[option])
    if opts.get("weight") == "w":
        opts["weight"] = np.linspace(0.5, 2.0, 7)
    _, grad = cysoftmax.softmax_cross_entropy(f, lab, **opts)
    fd = reference.fd4(lambda x: float(cysoftmax.cross_entropy(x, lab, **opts)), f, 1e-4)
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-9)


def test_one_hot_targets_equal_class_indices():
    f, y = make_case(("onehot",), 50, 9, np.float64, "index", ignore=False)
    t = np.eye(9)[y]
    w = np.linspace(0.5, 2.0, 9)
    for opts in [dict(), dict(label_smoothing=0.1, weight=w), dict(softcap=2.0, z_loss=0.1)]:
        # "mean" differs (PyTorch divides by the rows for targets, by the weight for
        # indices), so compare sums
        a = cysoftmax.softmax_cross_entropy(f, y, reduction="sum", **opts)
        b = cysoftmax.softmax_cross_entropy(f, t, reduction="sum", **opts)
        np.testing.assert_allclose(b[0], a[0], rtol=1e-13)
        np.testing.assert_allclose(b[1], a[1], rtol=1e-12, atol=1e-15)


def test_zero_targets_on_masked_classes_give_finite_results():
    f = np.array([[0.0, -np.inf, 1.0], [2.0, 1.0, -np.inf]])
    t = np.array([[0.3, 0.0, 0.7], [1.0, 0.0, 0.0]])
    loss, grad = cysoftmax.softmax_cross_entropy(f, t, reduction="none")
    L, G, _, _ = reference.cross_entropy_options(f, t, reduction="none")
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, L, rtol=1e-14)
    np.testing.assert_allclose(grad, G, rtol=1e-14, atol=1e-300)
    assert grad[0, 1] == 0 and grad[1, 2] == 0
    # a positive target on a masked class: an infinite loss
    t[0, 1] = 0.1
    assert cysoftmax.cross_entropy(f, t, reduction="none")[0] == np.inf


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_softcap_keeps_masked_classes_masked(dtype):
    f = np.array([[3.0, -np.inf, 1.0, 50.0]], dtype=dtype)
    loss, grad, lse = cysoftmax.softmax_cross_entropy(f, [0], softcap=4.0, return_lse=True)
    x = 4.0 * np.tanh(np.array([3.0, 1.0, 50.0]) / 4.0)
    np.testing.assert_allclose(lse[0], np.log(np.exp(x).sum()), rtol=TOL[dtype]["rtol"])
    assert grad[0, 1] == 0
    # with smoothing the masked class gets target mass: infinite loss, as without a cap
    assert cysoftmax.cross_entropy(f, [0], softcap=4.0, label_smoothing=0.1) == np.inf
    # +inf is capped (to c); NaN stays NaN
    assert np.isfinite(cysoftmax.cross_entropy(np.array([[np.inf, 0.0]], dtype), [1],
                                               softcap=2.0))
    assert np.isnan(cysoftmax.cross_entropy(np.array([[np.nan, 0.0]], dtype), [1],
                                            softcap=2.0))


@pytest.mark.parametrize("x", [1e-300, 1e-20, 1e-8, 0.1, 0.2999, 0.3, 0.3001, 1.0, 5.0, 19.0,
                               25.0, 300.0])
def test_softcap_tanh_is_accurate(x):
    """The capped score and its derivative, through lse of a two-class row [f, -inf]:
    lse = c tanh(f / c) exactly; and the gradient of the z-loss alone there."""
    mpmath = pytest.importorskip("mpmath")
    for sign in (1, -1):
        f = np.array([[sign * x, -np.inf]])
        _, grad, lse = cysoftmax.softmax_cross_entropy(
            f, np.array([[0.0, 0.0]]), softcap=1.0, z_loss=0.5, reduction="sum",
            return_lse=True)
        with mpmath.workdps(40):
            t = mpmath.tanh(mpmath.mpf(sign * x))
            want_lse = float(t)
            # 2 lam lse P (P = 1) times the cap's derivative 1 - tanh^2 = sech^2
            want_grad = float(2 * 0.5 * t * mpmath.sech(mpmath.mpf(x)) ** 2)
        assert lse[0] == pytest.approx(want_lse, rel=2e-16, abs=0)
        assert grad[0, 0] == pytest.approx(want_grad, rel=1e-15, abs=1e-300)


def test_ignored_rows_have_lse_and_no_z():
    f, _ = make_case(("ign",), 6, 20, np.float64, "index")
    y = np.array([1, -100, 2, -100, 3, 4])
    for cap in (None, 3.0):
        loss, grad, z, lse = cysoftmax.softmax_cross_entropy(
            f, y, z_loss=0.5, softcap=cap, reduction="none", return_z_loss=True,
            return_lse=True)
        _, _, Z, LSE = reference.cross_entropy_options(f, y, z_loss=0.5, softcap=cap,
                                                       reduction="none")
        np.testing.assert_allclose(lse, LSE, rtol=1e-14)
        assert z[1] == z[3] == loss[1] == loss[3] == 0
        assert not grad[[1, 3]].any()
        np.testing.assert_allclose(z, Z, rtol=1e-14)


@pytest.mark.parametrize("targets", ["index", "prob"])
def test_nd_batches_and_out(targets):
    rng = np.random.default_rng(5)
    f = rng.standard_normal((3, 4, 11))
    lab = rng.random((3, 4, 11)) if targets == "prob" else rng.integers(0, 11, (3, 4))
    opts = dict(z_loss=0.1, softcap=2.0, label_smoothing=0.1)
    loss, grad, lse = cysoftmax.softmax_cross_entropy(f, lab, reduction="none",
                                                      return_lse=True, **opts)
    L, G, _, LSE = reference.cross_entropy_options(f, lab, reduction="none", **opts)
    assert loss.shape == lse.shape == (3, 4) and grad.shape == f.shape
    np.testing.assert_allclose(loss, L, rtol=1e-13)
    np.testing.assert_allclose(grad, G, rtol=1e-12, atol=1e-16)
    out = np.empty_like(f)
    loss2, g2 = cysoftmax.softmax_cross_entropy(f, lab, reduction="none", out=out, **opts)
    assert g2 is out
    np.testing.assert_array_equal(g2, grad)
    inplace = f.copy()
    cysoftmax.softmax_cross_entropy(inplace, lab, reduction="none", out=inplace, **opts)
    np.testing.assert_array_equal(inplace, grad)


@pytest.mark.parametrize("targets", ["index", "prob"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_bitwise_identical_for_any_thread_count(dtype, targets):
    f, lab = make_case(("threads", dtype, targets), 3000, 40, dtype, targets)
    opts = dict(z_loss=0.01, softcap=10.0, label_smoothing=0.1)
    results = [cysoftmax.softmax_cross_entropy(f, lab, num_threads=t, return_z_loss=True,
                                               return_lse=True, **opts) for t in (1, 2, 3)]
    for r in results[1:]:
        for a, b in zip(results[0], r):
            np.testing.assert_array_equal(a, b)


def test_defaults_are_the_plain_loss_bitwise():
    f, y = make_case(("defaults",), 300, 37, np.float32, "index")
    a = cysoftmax.softmax_cross_entropy(f, y)
    b = cysoftmax.softmax_cross_entropy(f, y, z_loss=0.0, softcap=None, return_z_loss=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_return_shapes():
    f, y = make_case(("shapes",), 5, 4, np.float64, "index", ignore=False)
    assert isinstance(cysoftmax.cross_entropy(f, y), np.floating)
    loss, z = cysoftmax.cross_entropy(f, y, z_loss=0.1, return_z_loss=True)
    loss2, lse = cysoftmax.cross_entropy(f, y, return_lse=True)
    loss3, z3, lse3 = cysoftmax.cross_entropy(f, y, z_loss=0.1, return_z_loss=True,
                                              return_lse=True)
    assert lse.shape == (5,) and z3 == z and loss3 == loss
    assert len(cysoftmax.softmax_cross_entropy(f, y, return_lse=True)) == 3
    assert len(cysoftmax.softmax_cross_entropy(f, y, return_lse=True,
                                               return_z_loss=True)) == 4
    # z-loss "mean" divides by the counted rows, not by the weights
    w = np.array([1.0, 2.0, 3.0, 4.0])
    _, zw = cysoftmax.cross_entropy(f, y, weight=w, z_loss=0.1, return_z_loss=True)
    assert zw == z


BAD = [
    ("z_loss-negative", dict(z_loss=-0.1), ValueError, "z_loss"),
    ("z_loss-nan", dict(z_loss=float("nan")), ValueError, "z_loss"),
    ("z_loss-inf", dict(z_loss=float("inf")), ValueError, "z_loss"),
    ("z_loss-str", dict(z_loss="0.1"), TypeError, "z_loss"),
    ("z_loss-bool", dict(z_loss=True), TypeError, "z_loss"),
    ("softcap-zero", dict(softcap=0.0), ValueError, "softcap"),
    ("softcap-negative", dict(softcap=-1.0), ValueError, "softcap"),
    ("softcap-inf", dict(softcap=float("inf")), ValueError, "softcap"),
    ("softcap-str", dict(softcap="1"), TypeError, "softcap"),
    ("return_z_loss-int", dict(return_z_loss=1), TypeError, "return_z_loss"),
    ("return_lse-none", dict(return_lse=None), TypeError, "return_lse"),
]


@pytest.mark.parametrize("kwargs, exc, name", [pytest.param(*b[1:], id=b[0]) for b in BAD])
def test_bad_options(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        cysoftmax.softmax_cross_entropy(np.zeros((2, 3)), [0, 1], **kwargs)
    with pytest.raises(exc, match=name):
        cysoftmax.cross_entropy(np.zeros((2, 3)), [0, 1], **kwargs)


@pytest.mark.parametrize("bad, exc, pattern", [
    (np.float32, TypeError, r"labels as probability targets must have the dtype of scores"),
    ("nan", ValueError, r"labels \(probability targets\) must be finite and >= 0; "
                        r"labels\[1, 2\] = nan"),
    ("neg", ValueError, r"labels\[1, 2\] = -0.5"),
    ("inf", ValueError, r"labels\[1, 2\] = inf"),
    ("shape", ValueError, r"labels must have shape scores.shape\[:-1\] = \(3,\)"),
], ids=["dtype", "nan", "negative", "inf", "shape"])
@pytest.mark.parametrize("cap", [None, 2.0], ids=["nocap", "cap"])
def test_bad_targets(bad, exc, pattern, cap):
    f = np.zeros((3, 4))
    t = np.full((3, 4), 0.25)
    if bad is np.float32:
        t = t.astype(np.float32)
    elif bad == "shape":
        t = t[:, :3]
    else:
        t[1, 2] = {"nan": np.nan, "neg": -0.5, "inf": np.inf}[bad]
    before = t.copy()
    with pytest.raises(exc, match=pattern):
        cysoftmax.softmax_cross_entropy(f, t, softcap=cap)
    np.testing.assert_array_equal(t, before)


def test_ignore_index_is_refused_with_targets():
    with pytest.raises(ValueError, match="ignore_index .* not supported with probability"):
        cysoftmax.cross_entropy(np.zeros((2, 3)), np.ones((2, 3)), ignore_index=0)


def test_out_overlapping_targets_is_refused():
    f = np.zeros((3, 4))
    t = np.full((3, 4), 0.25)
    with pytest.raises(ValueError, match="out overlaps labels"):
        cysoftmax.softmax_cross_entropy(f, t, out=t)


def test_float_sequences_become_targets_of_the_scores_dtype():
    f = np.array([[1.0, 2.0], [0.5, 0.0]], dtype=np.float32)
    a = cysoftmax.cross_entropy(f, [[0.2, 0.8], [1.0, 0.0]])
    b = cysoftmax.cross_entropy(f, np.array([[0.2, 0.8], [1.0, 0.0]], dtype=np.float32))
    assert a == b and a.dtype == np.float32
