"""The fused linear + softmax cross-entropy (cysoftmax.linear_softmax_cross_entropy).

Against the unfused computation in float64 (``z = input @ W.T + b``, the float64
NumPy reference of the loss, then the three products), over a grid of dtype x
targets x reduction x options x chunking (rows, and classes with the online
log-sum-exp), with tolerances relative to the magnitudes of the terms; N-D inputs;
determinism; errors; and the memory the fused path holds (tracemalloc).
"""

import tracemalloc
import zlib

import numpy as np
import pytest

import cysoftmax
import reference
from cysoftmax import _linear

RTOL = {np.float32: 2e-6, np.float64: 1e-12}


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def make(key, n, d, v, dtype, targets, bias=True):
    rng = _rng(*key)
    x = rng.standard_normal((n, d)).astype(dtype)
    W = (rng.standard_normal((v, d)) / np.sqrt(d) * 3).astype(dtype)
    b = rng.standard_normal(v).astype(dtype) if bias else None
    if targets == "prob":
        t = rng.random((n, v)).astype(dtype)
    else:
        t = rng.integers(0, v, n)
        t[::4] = -100
    return x, W, b, t


def unfused(x, W, b, t, **opts):
    """float64: the loss and the three gradients from the reference loss's dz."""
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    z = x64 @ W64.T + (0.0 if b is None else b.astype(np.float64))
    t = t.astype(np.float64) if np.asarray(t).dtype.kind == "f" else t
    loss, dz, _, _ = reference.cross_entropy_options(z, t, **opts)
    return loss, dz @ W64, dz.T @ x64, dz.sum(axis=0)


def close(got, want, dtype, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.max(np.abs(want), initial=0.0)
    err = np.max(np.abs(got - want), initial=0.0)
    assert err <= RTOL[dtype] * scale + 1e-300, f"{what}: error {err:.3g}, scale {scale:.3g}"


OPTIONS = {
    "plain": {},
    "weight-smooth": dict(weight="w", label_smoothing=0.1),
    "z-cap": dict(z_loss=0.01, softcap=4.0),
}


@pytest.mark.parametrize("chunk", ["auto", "c7", "c7-classes5"])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("targets", ["index", "prob"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_equals_the_unfused_computation(dtype, targets, reduction, option, chunk):
    x, W, b, t = make((dtype, targets, option), 30, 6, 13, dtype, targets,
                      bias=option != "plain")
    opts = dict(OPTIONS[option], reduction=reduction)
    if opts.get("weight") == "w":
        opts["weight"] = np.linspace(0.5, 2.0, 13)
    chunk_size = None if chunk == "auto" else 7
    p = _linear._Problem(x, W, t, b, opts.get("weight"), reduction, -100,
                         opts.get("label_smoothing", 0.0), opts.get("z_loss", 0.0),
                         opts.get("softcap"), chunk_size, None)
    loss, gx, gW, gb = _linear._public(
        p, *_linear._fused(p, True, class_block=5 if "classes" in chunk else None))
    L, GX, GW, GB = unfused(x, W, b, t, **opts)
    assert gx.dtype == gW.dtype == dtype and gW.shape == W.shape and gx.shape == x.shape
    close(loss, L, dtype, "loss")
    close(gx, GX, dtype, "grad_input")
    close(gW, GW, dtype, "grad_linear_weight")
    if b is None:
        assert gb is None
    else:
        assert gb.dtype == dtype
        close(gb, GB, dtype, "grad_linear_bias")
    if chunk != "c7-classes5":  # the public functions take the same path
        a = cysoftmax.linear_softmax_cross_entropy(x, W, t, linear_bias=b,
                                                   chunk_size=chunk_size, **opts)
        np.testing.assert_array_equal(a[0], loss)
        np.testing.assert_array_equal(a[2], gW)
        alone = cysoftmax.linear_cross_entropy(x, W, t, linear_bias=b, chunk_size=chunk_size,
                                               **opts)
        np.testing.assert_array_equal(alone, loss)


def test_nd_input_and_fortran_weight():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 4))
    W = np.asfortranarray(rng.standard_normal((9, 4)))
    t = rng.integers(0, 9, (2, 5))
    loss, gx, gW, gb = cysoftmax.linear_softmax_cross_entropy(x, W, t, reduction="none",
                                                              chunk_size=3)
    L, GX, GW, _ = unfused(x.reshape(-1, 4), W, None, t.reshape(-1), reduction="none")
    assert loss.shape == (2, 5) and gx.shape == x.shape and gb is None
    close(loss.reshape(-1), L, np.float64, "loss")
    close(gx.reshape(-1, 4), GX, np.float64, "grad_input")
    close(gW, GW, np.float64, "grad_linear_weight")


@pytest.mark.parametrize("option", ["plain", "smooth", "cap", "prob"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_class_blocks_with_masked_classes_nan_rows_and_ignored_rows(dtype, option):
    """Class blocks (5 of 13 classes) where a whole block is masked (-inf bias) for
    every row, a row holds NaN, and rows are ignored: what the unfused path gives,
    NaN where it has NaN."""
    targets = "prob" if option == "prob" else "index"
    x, W, b, t = make(("blocks", dtype, option), 12, 4, 13, dtype, targets)
    b[5:10] = -np.inf
    if targets == "prob":  # no target mass on masked classes: finite losses
        t[:, 5:10] = 0
    else:
        t = np.where((t >= 5) & (t < 10), t - 5, t)
    x[3, 1] = np.nan
    opts = dict(label_smoothing=0.1) if option == "smooth" else {}
    if option == "cap":
        opts = dict(softcap=2.0, z_loss=0.01)
    for reduction in ("sum", "none"):
        p = _linear._Problem(x, W, t, b, None, reduction, -100, opts.get("label_smoothing", 0.0),
                             opts.get("z_loss", 0.0), opts.get("softcap"), 5, None)
        loss, gx, gW, gb = _linear._public(p, *_linear._fused(p, True, class_block=5))
        L, GX, GW, GB = unfused(x, W, b, t, reduction=reduction, **opts)
        for got, want, what in ((loss, L, "loss"), (gx, GX, "grad_input"),
                                (gW, GW, "grad_linear_weight"), (gb, GB, "grad_linear_bias")):
            got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
            np.testing.assert_array_equal(np.isinf(got), np.isinf(want), err_msg=what)
            finite = np.isfinite(want)
            close(got[finite], want[finite], dtype, what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_default_chunks_block_the_classes_when_rows_would_be_few(dtype, monkeypatch):
    """The default chunking: a fraction of the rows within a budget, and class blocks
    when that leaves fewer than _EFFICIENT_ROWS rows (budgets shrunk to this size)."""
    x, W, b, t = make(("default-chunks", dtype), 40, 5, 13, dtype, "index")
    row_bytes = 13 * np.dtype(dtype).itemsize
    monkeypatch.setattr(_linear, "_BUDGET_BYTES", 6 * row_bytes)
    monkeypatch.setattr(_linear, "_MAX_BUDGET_BYTES", 6 * row_bytes)
    monkeypatch.setattr(_linear, "_MIN_CLASS_BLOCK", 4)
    monkeypatch.setattr(_linear, "_CLASS_CHUNK_ROWS", 16)
    L, GX, GW, GB = unfused(x, W, b, t, label_smoothing=0.05)
    for efficient, blocked in ((5, False), (7, True)):
        monkeypatch.setattr(_linear, "_EFFICIENT_ROWS", efficient)
        p = _linear._Problem(x, W, t, b, None, "mean", -100, 0.05, 0.0, None, None, None)
        assert (p.class_block is not None) == blocked
        assert (p.chunk, p.class_block) == ((16, 6 * 13 // 16) if blocked else (6, None))
        loss, gx, gW, gb = cysoftmax.linear_softmax_cross_entropy(x, W, t, linear_bias=b,
                                                                  label_smoothing=0.05)
        close(loss, L, dtype, "loss")
        close(gx, GX, dtype, "grad_input")
        close(gW, GW, dtype, "grad_linear_weight")
        close(gb, GB, dtype, "grad_linear_bias")


def test_mean_over_no_rows_is_nan_with_zero_gradients():
    x, W, b, _ = make(("nan",), 6, 3, 4, np.float64, "index")
    t = np.full(6, -100)
    loss, gx, gW, gb = cysoftmax.linear_softmax_cross_entropy(x, W, t, linear_bias=b)
    assert np.isnan(loss) and not gx.any() and not gW.any() and not gb.any()


def test_deterministic_for_a_chunk_size_and_any_thread_count():
    x, W, b, t = make(("det",), 500, 16, 700, np.float32, "index")
    runs = [cysoftmax.linear_softmax_cross_entropy(x, W, t, linear_bias=b, chunk_size=64,
                                                   num_threads=k) for k in (1, 2, 1)]
    for r in runs[1:]:
        for a, c in zip(runs[0], r):
            np.testing.assert_array_equal(a, c)


def test_holds_a_chunk_of_logits_not_all_of_them():
    """Peak NumPy memory beyond the inputs and the returned gradients stays a small
    fraction of the N x V logits (tracemalloc sees NumPy's allocations)."""
    n, d, v = 2048, 32, 4000
    x, W, b, t = make(("mem",), n, d, v, np.float32, "index")
    logits_bytes = n * v * 4
    returned = x.nbytes + W.nbytes + b.nbytes
    cysoftmax.linear_softmax_cross_entropy(x[:70], W, t[:70], chunk_size=64)  # warm-up
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = cysoftmax.linear_softmax_cross_entropy(x, W, t, linear_bias=b, chunk_size=64)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    extra = peak - returned
    assert out[1].shape == x.shape
    assert extra <= 0.05 * logits_bytes, (extra, logits_bytes)


def test_classifier_fit_never_holds_all_scores():
    n, d, v = 3000, 4, 2000
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    y = rng.integers(0, v, n)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        cysoftmax.SoftmaxClassifier(solver="sgd", max_iter=2).fit(X, y)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * n * v * 8, peak  # the n x v float64 scores would be 48 MB


def test_linear_softmax_loss_is_the_fused_pass():
    x, W, b, t = make(("casestudy",), 40, 5, 7, np.float64, "index")
    loss, dW, db = cysoftmax.linear_softmax_loss(W.T, x, t, b, reg=0.0)
    L, _, GW, GB = unfused(x, W, b, t)
    close(loss, L, np.float64, "loss")
    close(dW, GW.T, np.float64, "dW")
    close(db, GB, np.float64, "db")


BAD = [
    ("D", lambda x, W, b, t: (x, W[:, :-1], t), {}, ValueError, r"linear_weight must have shape"),
    ("bias-V", lambda x, W, b, t: (x, W, t), dict(linear_bias=np.zeros(3)), ValueError,
     r"linear_bias must have shape \(5,\)"),
    ("mixed", lambda x, W, b, t: (x, W.astype(np.float32), t), {}, TypeError,
     r"linear_weight must have the dtype of input"),
    ("bias-dtype", lambda x, W, b, t: (x, W, t), dict(linear_bias=np.zeros(5, np.float32)),
     TypeError, r"linear_bias must have the dtype"),
    ("chunk0", lambda x, W, b, t: (x, W, t), dict(chunk_size=0), ValueError, "chunk_size"),
    ("chunk-float", lambda x, W, b, t: (x, W, t), dict(chunk_size=2.5), TypeError,
     "chunk_size"),
    ("target-range", lambda x, W, b, t: (x, W, np.full(4, 5)), {}, IndexError,
     r"target\[0\] = 5"),
    ("target-shape", lambda x, W, b, t: (x, W, t[:3]), {}, ValueError, "target must have shape"),
    ("target-dtype", lambda x, W, b, t: (x, W, np.ones((4, 5), np.float32)), {}, TypeError,
     "target as probability targets must have the dtype of input"),
    ("input-int", lambda x, W, b, t: (x.astype(int), W, t), {}, TypeError, "input must hold"),
    ("reduction", lambda x, W, b, t: (x, W, t), dict(reduction="avg"), ValueError,
     "reduction"),
    ("softcap", lambda x, W, b, t: (x, W, t), dict(softcap=-1.0), ValueError, "softcap"),
]


@pytest.mark.parametrize("args, kwargs, exc, pattern",
                         [pytest.param(*b[1:], id=b[0]) for b in BAD])
@pytest.mark.parametrize("fn", [cysoftmax.linear_softmax_cross_entropy,
                                cysoftmax.linear_cross_entropy], ids=["fused", "loss"])
def test_bad_input(fn, args, kwargs, exc, pattern):
    x, W, b, t = make(("bad",), 4, 3, 5, np.float64, "index", bias=True)
    x0, W0 = x.copy(), W.copy()
    with pytest.raises(exc, match=pattern):
        fn(*args(x, W, b, t), **kwargs)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(W, W0)
