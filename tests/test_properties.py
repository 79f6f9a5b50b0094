"""Hypothesis properties of the loss, gradient and softmax, for both dtypes and every option."""

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cysoftmax

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(1, 12))
    c = draw(st.sampled_from([1, 2, 3, 5, 16, 17, 40, 129]))
    scores = draw(hnp.arrays(dtype, (n, c), elements=st.floats(-50, 50, width=32)))
    labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    opts = {}
    if draw(st.booleans()):
        opts["weight"] = draw(hnp.arrays(np.float64, (c,), elements=st.floats(0.1, 5)))
    if draw(st.booleans()):
        opts["label_smoothing"] = draw(st.floats(0, 1))
    opts["reduction"] = draw(st.sampled_from(["mean", "sum", "none"]))
    return scores, labels, opts


def tol(dtype):
    return 2e-5 if dtype == np.float32 else 1e-11


@SETTINGS
@given(problems(), st.floats(-1000, 1000))
def test_shift_invariance_of_each_row(problem, shift):
    scores, labels, opts = problem
    shifts = np.linspace(-1, 1, len(scores))[:, None] * shift
    moved = (scores.astype(np.float64) + shifts).astype(scores.dtype)
    # the shifted scores are rounded; compare against the unshifted loss at the
    # precision the rounding allows
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, **opts)
    loss2, grad2 = cysoftmax.softmax_cross_entropy(moved, labels, **opts)
    ulp = np.finfo(scores.dtype).eps * (abs(shift) + 50)
    np.testing.assert_allclose(loss2, loss, rtol=tol(scores.dtype), atol=20 * ulp)
    np.testing.assert_allclose(grad2, grad, rtol=0, atol=20 * ulp + tol(scores.dtype))


@SETTINGS
@given(problems())
@example((np.zeros((1, 2), np.float32), np.array([0]),
          {"label_smoothing": 0.9999999999999999, "reduction": "mean"}))  # 0.5 - 0.5(1-2**-53)
def test_gradient_rows_sum_to_zero(problem):
    scores, labels, opts = problem
    _, grad = cysoftmax.softmax_cross_entropy(scores, labels, **opts)
    # Each entry is a difference of two terms (p_k times the row's coefficient, and the
    # smoothing offset); the README bounds its error relative to their magnitudes.
    n, c = scores.shape
    w = opts.get("weight", np.ones(c))
    eps = opts.get("label_smoothing", 0.0)
    wy = w[labels]
    denominator = wy.sum() if opts["reduction"] == "mean" else 1.0
    terms = ((1 - eps) * wy + 2 * eps * w.sum() / c) / denominator
    row_scale = np.abs(grad).sum(axis=1) + terms + np.finfo(scores.dtype).tiny
    assert np.all(np.abs(grad.astype(np.float64).sum(axis=1)) <= 8 * tol(scores.dtype) * row_scale)


@SETTINGS
@given(problems())
def test_loss_is_nonnegative_and_probabilities_sum_to_one(problem):
    scores, labels, opts = problem
    if "weight" in opts:
        assert np.all(opts["weight"] > 0)
    loss = cysoftmax.cross_entropy(scores, labels, **opts)
    assert np.all(np.asarray(loss) >= 0)
    p = cysoftmax.softmax(scores)
    assert np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.astype(np.float64).sum(axis=1), 1.0, rtol=0, atol=tol(scores.dtype))
    logp = cysoftmax.log_softmax(scores)
    assert np.all(logp <= 0)
    np.testing.assert_allclose(np.exp(logp.astype(np.float64)), p, rtol=20 * tol(scores.dtype),
                               atol=np.finfo(scores.dtype).tiny)


@SETTINGS
@given(problems())
def test_loss_only_kernel_agrees_with_fused_kernel(problem):
    scores, labels, opts = problem
    loss, _ = cysoftmax.softmax_cross_entropy(scores, labels, **opts)
    np.testing.assert_array_equal(cysoftmax.cross_entropy(scores, labels, **opts), loss)
