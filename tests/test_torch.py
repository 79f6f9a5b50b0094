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
