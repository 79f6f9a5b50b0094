"""Optional comparison with PyTorch's F.cross_entropy (skipped when torch is not installed)."""

import numpy as np
import pytest

import cysoftmax

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("C", [3, 50])
def test_matches_torch_float64(C, reduction, weighted, smoothing):
    rng = np.random.default_rng(C)
    scores = rng.normal(size=(64, C)) * 3
    labels = rng.integers(0, C, size=64)
    labels[::9] = -100
    weight = rng.uniform(0.2, 3.0, size=C) if weighted else None
    x = torch.tensor(scores, requires_grad=True)
    t_loss = F.cross_entropy(x, torch.tensor(labels), reduction=reduction, label_smoothing=smoothing,
                             weight=None if weight is None else torch.tensor(weight))
    t_loss.backward(torch.ones_like(t_loss))
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, reduction=reduction, weight=weight,
                                                 label_smoothing=smoothing)
    np.testing.assert_allclose(loss, t_loss.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_all_ignored_matches_torch():
    scores = np.zeros((3, 4))
    labels = np.full(3, -100)
    t = F.cross_entropy(torch.tensor(scores), torch.tensor(labels))
    assert np.isnan(float(t)) and np.isnan(cysoftmax.cross_entropy(scores, labels))


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_zero_total_weight_matches_torch(smoothing):
    scores = np.random.default_rng(1).normal(size=(3, 4))
    labels = np.array([0, 1, -100])
    weight = np.array([0.0, 0.0, 1.0, 2.0])
    x = torch.tensor(scores, requires_grad=True)
    t = F.cross_entropy(x, torch.tensor(labels), weight=torch.tensor(weight), label_smoothing=smoothing)
    t.backward()
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, weight=weight, label_smoothing=smoothing)
    np.testing.assert_array_equal(loss, t.detach().numpy())  # both NaN
    np.testing.assert_array_equal(grad, x.grad.numpy())


def test_zero_weighted_masked_class_with_smoothing_matches_torch():
    # weight 0 times -log p = +inf of a masked (-inf) class is NaN, in PyTorch too
    scores = np.array([[0.0, 1.0, -np.inf], [2.0, 0.0, -np.inf]])
    labels = np.array([0, 1])
    weight = np.array([1.0, 1.0, 0.0])
    x = torch.tensor(scores, requires_grad=True)
    t = F.cross_entropy(x, torch.tensor(labels), weight=torch.tensor(weight), label_smoothing=0.1)
    t.backward()
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, weight=weight, label_smoothing=0.1)
    np.testing.assert_array_equal(loss, t.detach().numpy())
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-12, atol=1e-15)


def _torch_loss_and_grad(scores, labels, double=False, **kw):
    """F.cross_entropy on scores (..., C) with the class axis moved second, as torch wants it;
    the loss and the gradient (class axis moved back last).  In scores' dtype, or in float64
    from the same values when `double`."""
    x = np.moveaxis(scores, -1, 1) if scores.ndim > 2 else scores
    x = torch.tensor(x.astype(np.float64) if double else x, requires_grad=True)
    if kw.get("weight") is not None:
        kw = dict(kw, weight=torch.tensor(np.asarray(kw["weight"]), dtype=x.dtype))
    t = F.cross_entropy(x, torch.tensor(labels), **kw)
    t.backward(torch.ones_like(t))
    grad = x.grad.numpy()
    return t.detach().numpy(), np.moveaxis(grad, 1, -1) if scores.ndim > 2 else grad


def _compare_to_torch(scores, labels, kw, rtol, ignored, double=False):
    """cysoftmax against torch: the loss within rtol, each gradient entry within rtol of the
    largest entry of its row.  Ignored rows: the spec says loss 0 and gradient 0, checked
    exactly; torch gives NaN gradients on an ignored row whose own scores make NaN (a row
    of -inf), so its ignored rows are only required to be 0 or NaN."""
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, **kw)
    t_loss, t_grad = _torch_loss_and_grad(scores, labels, double, **kw)
    assert np.all(grad[ignored] == 0)
    assert np.all((t_grad[ignored] == 0) | np.isnan(t_grad[ignored]))
    if kw.get("reduction") == "none":
        assert np.all(loss[ignored] == 0)
    np.testing.assert_allclose(loss, t_loss, rtol=rtol, atol=0)
    kept = ~ignored
    diff = np.abs(grad[kept] - t_grad[kept])
    scale = np.abs(t_grad[kept]).max(axis=-1, keepdims=True)
    ok = (diff <= rtol * scale) | (grad[kept] == t_grad[kept])  # == : infinities
    assert np.all(ok), f"gradient differs from torch by {np.nanmax(diff / scale):.3g} of its row"


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(64, 5), (64, 40), (6, 7, 5), (6, 7, 40)],
                         ids=lambda s: "x".join(map(str, s)))
def test_matches_torch_float32(shape, reduction, smoothing):
    """float32 against torch's float32, N-D batches (torch: class axis second), a valid class
    as ignore_index, weights, and smoothing up to 1."""
    rng = np.random.default_rng(shape[-1] + len(shape))
    C = shape[-1]
    scores = (rng.normal(size=shape) * 3).astype(np.float32)
    labels = rng.integers(0, C, size=shape[:-1])
    labels.reshape(-1)[::6] = 1  # some rows with the class that is ignore_index below
    for kw in (dict(), dict(weight=rng.uniform(0.2, 3.0, size=C).astype(np.float32)),
               dict(ignore_index=1), dict(ignore_index=1, weight=rng.uniform(0.2, 3.0, size=C))):
        kw = dict(kw, reduction=reduction, label_smoothing=smoothing)
        ignored = labels == kw.get("ignore_index", -100)
        # torch's float32 gradient is up to 1.1e-5 (of its row's largest entry) off its
        # float64 one here, where label smoothing cancels; cysoftmax's is within 2e-7
        _compare_to_torch(scores, labels, kw, 5e-5, ignored)
        # the same float32 inputs in float64: cysoftmax's float32 accuracy
        _compare_to_torch(scores, labels, kw, 1e-6, ignored, double=True)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("C", [5, 40])
def test_masked_classes_match_torch(dtype, C, reduction, smoothing):
    """-inf scores (masked classes), including a fully masked row whose label is ignore_index
    (torch: NaN gradient there; the spec, and cysoftmax: 0)."""
    rng = np.random.default_rng(C)
    scores = (rng.normal(size=(12, C)) * 3).astype(dtype)
    labels = rng.integers(0, C, size=12)
    scores[:, 2] = -np.inf  # class 2 masked everywhere: never a target
    labels[labels == 2] = 0
    scores[3, :] = -np.inf  # a fully masked row, ignored
    labels[3] = 1
    labels[7] = 1
    kw = dict(reduction=reduction, label_smoothing=smoothing, ignore_index=1,
              weight=rng.uniform(0.5, 2.0, size=C))
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, **kw)
    kept_loss = loss[labels != 1] if reduction == "none" else loss
    if smoothing == 0:
        assert np.all(np.isfinite(kept_loss)) and np.all(grad[:, 2] == 0)
    else:
        assert np.all(kept_loss == np.inf)  # -log p = inf of a masked class
    _compare_to_torch(scores, labels, kw, 5e-5 if dtype == np.float32 else 1e-12, labels == 1)
    if dtype == np.float32:
        _compare_to_torch(scores, labels, kw, 1e-6, labels == 1, double=True)


@pytest.mark.parametrize("targets", ["mixed", "negative"])
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("C", [5, 40])
def test_negative_and_zero_weights_match_torch(C, reduction, smoothing, targets):
    """Zero and negative class weights (the mean's denominator may be negative)."""
    rng = np.random.default_rng(C)
    scores = rng.normal(size=(40, C)) * 3
    weight = rng.uniform(0.5, 2, size=C) * np.resize([1, -1, 0, 1, -1], C)
    pos, neg, zero = (np.flatnonzero(weight > 0), np.flatnonzero(weight < 0),
                      np.flatnonzero(weight == 0))
    if targets == "mixed":
        labels = np.concatenate([rng.choice(pos, 20), rng.choice(neg, 10),
                                 rng.choice(zero, 10)])
    else:
        labels = rng.choice(neg, 40)
    labels[::9] = -100
    assert abs(weight[labels[labels != -100]].sum()) > 1  # the mean's denominator
    kw = dict(reduction=reduction, weight=weight, label_smoothing=smoothing)
    _compare_to_torch(scores, labels, kw, 1e-11, labels == -100)
