"""Numerical behaviour at the edges: offsets, exp overflow/underflow spreads, -inf masks,
NaN rows, tiny losses.  Expected values come from first principles (closed forms and
mpmath), never from the kernels."""

import numpy as np
import pytest

import cysoftmax
from cysoftmax import _kernels
import reference
from symbolic import evaluate

def exact_row(f, y):
    """Exact loss, gradient, softmax and log_softmax of one row (symbolic.evaluate, mpmath
    at a precision raised until the values settle)."""
    ref = evaluate.reference([[float(v) for v in f]], [int(y)], n_classes=len(f),
                             reduction="sum")
    return (float(ref.loss), np.array([float(v) for v in ref.grad[0]]),
            np.array([float(v) for v in ref.softmax[0]]),
            np.array([float(v) for v in ref.log_softmax[0]]))


def rel_ok(got, want, rtol, atol):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return np.all(np.abs(got - want) <= rtol * np.abs(want) + atol)


RTOL = reference.EXACT_RTOL


@pytest.mark.parametrize("offset", [-1e4, 0.0, 1e4], ids=["minus1e4", "zero", "plus1e4"])
@pytest.mark.parametrize("spread", [1.0, 30.0, 85.0, 100.0, 700.0, 800.0])
@pytest.mark.parametrize("C", [3, 40])
def test_offsets_and_spreads(simd_target, dtype, offset, spread, C):
    rng = np.random.default_rng(int(spread) + C)
    f = (offset + rng.uniform(-spread, 0, size=C)).astype(dtype)
    y = int(rng.integers(0, C))
    loss, grad = cysoftmax.softmax_cross_entropy(f, y, reduction="sum")
    want_loss, want_grad, want_p, want_logp = exact_row(f, y)
    tiny = np.finfo(dtype).tiny
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert rel_ok(loss, want_loss, RTOL[dtype], 0), (loss, want_loss)
    assert rel_ok(grad, want_grad, RTOL[dtype], tiny), np.abs(grad - want_grad).max()
    assert rel_ok(cysoftmax.softmax(f), want_p, RTOL[dtype], tiny)
    assert rel_ok(cysoftmax.log_softmax(f), want_logp, RTOL[dtype], tiny)


def test_tiny_loss_keeps_its_digits(simd_target, dtype):
    """A confidently right row: loss ~ e^-60 ~ 1e-26, not 0."""
    f = np.array([0.0, -60.0, -61.0], dtype=dtype)
    loss, grad = cysoftmax.softmax_cross_entropy(f, 0)
    want_loss, want_grad, _, _ = exact_row(f, 0)
    assert want_loss > 0
    assert rel_ok(loss, want_loss, RTOL[dtype], 0), (loss, want_loss)
    assert rel_ok(grad, want_grad, RTOL[dtype], 0), (grad, want_grad)


def test_subnormal_probabilities(simd_target, dtype):
    """exp(f - m) in the subnormal range is formed correctly, and below it is 0."""
    lim = 100.0 if dtype == np.float32 else 740.0
    f = np.array([0.0, -lim, -lim - 3, -(lim + 50)], dtype=dtype)
    p = cysoftmax.softmax(f)
    _, _, want_p, _ = exact_row(f, 0)
    tiny_sub = np.finfo(dtype).smallest_subnormal
    assert np.all(np.abs(p - want_p) <= 1e-6 * want_p + tiny_sub)
    assert p[3] == 0 and p[1] > 0


@pytest.mark.parametrize("C", [5, 40])
def test_masked_classes(simd_target, dtype, C):
    f = np.linspace(-2, 2, C).astype(dtype)
    masked = np.arange(C) % 3 == 1
    f[masked] = -np.inf
    y = 0
    loss, grad = cysoftmax.softmax_cross_entropy(f, y)
    assert np.isfinite(loss)
    assert np.all(grad[masked] == 0)
    want_loss, want_grad, want_p, _ = exact_row(f, y)  # (the exact values of a -inf score)
    assert rel_ok(loss, want_loss, RTOL[dtype], 0)
    assert rel_ok(grad, want_grad, RTOL[dtype], 0)
    p = cysoftmax.softmax(f)
    assert np.all(p[masked] == 0) and abs(p.sum() - 1) < 1e-6
    assert np.all(cysoftmax.log_softmax(f)[masked] == -np.inf)
    # a masked target: infinite loss, gradient -1 there and P elsewhere
    loss, grad = cysoftmax.softmax_cross_entropy(f, 1)
    assert loss == np.inf
    assert grad[1] == -1 and np.all(np.isfinite(grad))
    # with label smoothing the masked classes' -log p = +inf enters the loss
    assert cysoftmax.cross_entropy(f, 0, label_smoothing=0.1) == np.inf


@pytest.mark.parametrize("C", [4, 40])
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "posinf"])
def test_nan_row_is_contained(simd_target, dtype, C, bad):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(5, C)).astype(dtype)
    f[2, 1] = bad
    y = np.zeros(5, dtype=int)
    loss, grad = cysoftmax.softmax_cross_entropy(f, y, reduction="none")
    assert np.isnan(loss[2]) and np.all(np.isnan(grad[2]))
    rest = [0, 1, 3, 4]
    assert np.all(np.isfinite(loss[rest])) and np.all(np.isfinite(grad[rest]))
    l2, g2 = cysoftmax.softmax_cross_entropy(f[rest], y[rest], reduction="none")
    np.testing.assert_array_equal(loss[rest], l2)
    np.testing.assert_array_equal(grad[rest], g2)
    assert np.isnan(cysoftmax.cross_entropy(f, y))
    assert np.all(np.isnan(cysoftmax.softmax(f)[2]))
    assert np.all(np.isfinite(cysoftmax.softmax(f)[rest]))


def test_ties(simd_target, dtype):
    f = np.array([[3.0, 3.0, 3.0], [1.0, 5.0, 5.0], [7.0] * 20 + [0.0]], dtype=object)
    for row in f:
        row = np.array(row, dtype=dtype)
        for y in (0, len(row) - 1):
            loss, grad = cysoftmax.softmax_cross_entropy(row, y)
            want_loss, want_grad, _, _ = exact_row(row, y)
            assert rel_ok(loss, want_loss, RTOL[dtype], 0)
            assert rel_ok(grad, want_grad, RTOL[dtype], 0)


def _extended_reference(f, y):
    """Loss, gradient and softmax of every row in np.longdouble (x87's 64-bit
    mantissa): 11 more bits than float64, so its rounding sits far below 1e-13.  The
    target's terms are formed from the other classes' sum, so that a loss of 1e-90 or a
    gradient of -1e-90 at the target keeps its digits."""
    f = f.astype(np.longdouble)
    rows = np.arange(len(f))
    e = np.exp(f - f.max(axis=1, keepdims=True))
    s = e.sum(axis=1)
    mask = np.ones(f.shape, dtype=bool)
    mask[rows, y] = False
    others = np.where(mask, e, 0).sum(axis=1)  # the sum without the target, not s - e_y
    p = e / s[:, None]
    loss = np.log1p(others / e[rows, y])  # -log(e_y / s), s = e_y + others
    grad = p.copy()
    grad[rows, y] = -others / s
    return loss, grad, p


@pytest.mark.skipif(np.finfo(np.longdouble).nmant < 63,
                    reason="needs an extended-precision long double")
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
def test_short_rows_every_length_every_maximum(simd_target, dtype, masked):
    """Rows shorter than a few vectors (C = 1..40) take the padded short-row paths of
    the row maximum and of exp.  Each row's maximum sits at every position in turn,
    with the other scores up to far below it (into exp's subnormal range) around large
    offsets: a maximum that skipped an entry would overflow exp or lose the count of
    maxima, and shows.  The reference is computed in extended precision."""
    spread = 110.0 if dtype == np.float32 else 760.0
    tiny = np.finfo(dtype).tiny
    rng = np.random.default_rng(11)
    for C in range(1, 41):
        f = -rng.uniform(0.0, spread, (C, C))
        f[np.arange(C), np.arange(C)] = spread / 4  # row i's maximum at column i
        if C > 1:  # the lower rows: ties for the maximum (the count of maxima matters)
            f[C // 2:, (C + 1) // 2:] = f[C // 2:, (C + 1) // 2:].max(axis=1, keepdims=True)
        f += rng.choice([0.0, 1e4, -3e3], (C, 1))
        if masked and C > 2:
            keep = np.eye(C, dtype=bool) | (np.arange(C) % 3 != 1)
            f[~keep] = -np.inf
        f = f.astype(dtype)
        y = rng.integers(0, C, C)
        y[f[np.arange(C), y] == -np.inf] = np.arange(C)[f[np.arange(C), y] == -np.inf]
        want_loss, want_grad, want_p = _extended_reference(f, y)
        loss, grad = cysoftmax.softmax_cross_entropy(f, y, reduction="none")
        where = f"{simd_target}, C={C}"
        assert rel_ok(loss, want_loss, RTOL[dtype], 0), where
        assert rel_ok(grad, want_grad, RTOL[dtype], tiny), where
        assert rel_ok(cysoftmax.softmax(f), want_p, RTOL[dtype], tiny), where
        assert np.all(cysoftmax.softmax(f)[f == -np.inf] == 0), where


def test_float32_is_computed_in_float32_range():
    """Spreads far beyond float32's exp range do not overflow or produce NaN."""
    f = np.array([[1e30, -1e30, 0.0], [-3e38, 3e38, 0.0]], dtype=np.float32)
    loss, grad = cysoftmax.softmax_cross_entropy(f, [0, 1], reduction="none")
    np.testing.assert_allclose(loss, [0.0, 0.0])
    np.testing.assert_array_equal(grad, np.zeros_like(f))


# ------------------------------------------------------------------ the loss sum is double

def _float32_accumulator(losses, rows_per_block, lanes):
    """What a float32 accumulator would return: within each block of rows, `lanes` float32
    running sums (row i into lane i % lanes, as a vector of rows would), the blocks' sums
    then added in double."""
    total = 0.0
    for b0 in range(0, len(losses), rows_per_block):
        block = losses[b0:b0 + rows_per_block].astype(np.float32)
        block = np.concatenate([block, np.zeros(-len(block) % lanes, np.float32)])
        running = np.cumsum(block.reshape(-1, lanes), axis=0, dtype=np.float32)  # sequential
        total += float(running[-1].astype(np.float64).sum())
    return total


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_is_accumulated_in_double(simd_target, reduction):
    """300 000 float32 rows of 2 classes: mostly confidently right (loss 9.2e-7, just under
    half a float32 ulp of 16) and one in 127 confidently wrong (loss 16.25).  In double the
    small losses add up to 7e-6 of the total; a float32 running sum drops them once it has
    passed 16.  The expected value is the float64 reference on the same float32 inputs."""
    N = 300_000
    margin = np.full(N, 13.9)
    margin[::127] = -16.25
    scores = np.stack([margin, np.zeros(N)], axis=1).astype(np.float32)
    labels = np.zeros(N, dtype=np.int64)
    rows, _ = reference.cross_entropy(scores, labels, reduction="none")
    exact = rows.sum()
    assert rows[rows < 1].sum() / exact > 6e-6  # the share a float32 sum would lose
    # A float32 accumulator would miss the 1e-6 tolerance several times over, whether
    # sequential over a block (2048 rows of 2 classes), in vector lanes (4, 8, 16: SSE,
    # AVX2, AVX-512 float32) or over the whole batch: checked here on these very losses.
    # (On N(0, 3) scores it would not: its rounding errors cancel to ~6e-8.)
    for rows_per_block, lanes in [(2048, 1), (2048, 4), (2048, 8), (2048, 16), (N, 1)]:
        err = abs(_float32_accumulator(rows, rows_per_block, lanes) - exact) / exact
        assert err > 3e-6, (rows_per_block, lanes, err)
    want = exact if reduction == "sum" else exact / N
    for threads in (1, 2):
        loss = cysoftmax.cross_entropy(scores, labels, reduction=reduction, num_threads=threads)
        assert loss.dtype == np.float32
        np.testing.assert_allclose(float(loss), want, rtol=1e-6, atol=0)
        loss, _ = cysoftmax.softmax_cross_entropy(scores, labels, reduction=reduction,
                                                  num_threads=threads)
        np.testing.assert_allclose(float(loss), want, rtol=1e-6, atol=0)


# ------------------------------------------------------------------ finite differences, large C

LARGE_C_OPTIONS = {
    "plain": lambda C: {},
    "sum": lambda C: dict(reduction="sum"),
    "weighted": lambda C: dict(weight=np.linspace(0.25, 3.0, C)),
    "smooth": lambda C: dict(label_smoothing=0.3),
    "all": lambda C: dict(weight=np.linspace(3.0, 0.25, C), ignore_index=2, label_smoothing=0.15),
    "signed": lambda C: dict(weight=np.resize([1.5, -0.5, 0.0, 2.0], C), label_smoothing=0.2,
                             reduction="sum"),
}


@pytest.mark.parametrize("opts", LARGE_C_OPTIONS.values(), ids=LARGE_C_OPTIONS.keys())
@pytest.mark.parametrize("C", [40, 129])
def test_gradient_matches_finite_differences_large_C(C, opts):
    """The large-C path (full vectors, four per step, an overlapping tail): the gradient is
    the derivative of the loss, both of cysoftmax's own loss and of the reference's."""
    rng = np.random.default_rng(C)
    scores = rng.normal(size=(4, C)) * 2
    labels = np.array([0, 2, C - 1, 17])
    kw = opts(C)
    _, grad = cysoftmax.softmax_cross_entropy(scores, labels, **kw)
    numeric = reference.fd4(lambda s: float(cysoftmax.cross_entropy(s, labels, **kw)),
                            scores, 1e-3)
    np.testing.assert_allclose(grad, numeric, rtol=1e-8, atol=1e-10)
    numeric = reference.fd4(lambda s: float(reference.cross_entropy(s, labels, **kw)[0]),
                            scores, 1e-3)
    np.testing.assert_allclose(grad, numeric, rtol=1e-8, atol=1e-10)


@pytest.mark.skipif(not {"avx512", "avx2-w64"} <= set(_kernels.supported_targets()),
                    reason="needs a CPU with AVX-512F")
@pytest.mark.parametrize("n_classes", [5, 16, 17, 100, 1000], ids=lambda c: f"C{c}")
def test_avx512_agrees_bitwise_with_its_avx2_emulation(dtype, n_classes):
    """The avx512 target scales exp's result by 2^n with vscalef; the avx2-w64 target
    runs the same 64-byte vectors in the same order with the two-step scaling on
    AVX2.  Both round p * 2^n once, so every output must agree bitwise, also where
    exp(f - m) is subnormal, zero, -inf-masked or NaN."""
    rng = np.random.default_rng(5)
    n = 64
    # spreads that reach the subnormal range and below (float32 ~ -87..-104,
    # float64 ~ -708..-746), around offsets that make f - m inexact
    spread = 110.0 if dtype == np.float32 else 760.0
    f = -rng.uniform(0.0, spread, (n, n_classes)) + rng.choice([0.0, 3e3, -1e4], (n, 1))
    f[::7, 0] = -np.inf
    f[5, 1] = np.nan
    f = f.astype(dtype)
    y = rng.integers(0, n_classes, n)
    outputs = {}
    before = _kernels.current_target()
    try:
        for target in ("avx512", "avx2-w64"):
            _kernels.set_target(target)
            loss, grad = cysoftmax.softmax_cross_entropy(f, y, reduction="none",
                                                         label_smoothing=0.1)
            outputs[target] = (loss, grad, cysoftmax.softmax(f), cysoftmax.log_softmax(f))
    finally:
        _kernels.set_target(before)
    p = outputs["avx2-w64"][2]
    tiny = np.finfo(dtype).tiny
    assert ((p > 0) & (p < tiny)).any() and (p == 0).any()  # subnormal and zero e's
    for got, want in zip(outputs["avx512"], outputs["avx2-w64"]):
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(got), nan)  # (NaN's sign bit may differ)
        np.testing.assert_array_equal(got[~nan].view(np.uint8), want[~nan].view(np.uint8))
