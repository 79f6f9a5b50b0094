"""cysoftmax.torch with probability targets, z-loss, soft-capping, and the fused
linear_cross_entropy: against PyTorch in float64, gradcheck, opcheck, torch.compile."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from cysoftmax.torch import LinearCrossEntropyLoss, cross_entropy, linear_cross_entropy  # noqa: E402

import reference  # noqa: E402


def _close(a, b, rtol=1e-12, atol=1e-14):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 2, 2), (6,)], ids=["2d", "4d", "1d"])
def test_probability_targets_equal_pytorch(shape, reduction):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.rand(shape, dtype=torch.float64, generator=g)
    w = torch.rand(shape[1] if len(shape) > 1 else shape[0], dtype=torch.float64,
                   generator=g) + 0.5
    go = torch.rand(F.cross_entropy(x, t, reduction=reduction).shape, dtype=torch.float64,
                    generator=g)
    ours = cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=0.2)
    (gx,) = torch.autograd.grad(ours, x, go)
    theirs = F.cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=0.2)
    (gt,) = torch.autograd.grad(theirs, x, go)
    _close(ours, theirs)
    _close(gx, gt)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_z_loss_and_softcap_follow_their_formulas(reduction):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(9, 6, dtype=torch.float64, generator=g) * 4
    y = torch.randint(0, 6, (9,), generator=g)
    y[2] = -100
    loss = cross_entropy(x, y, reduction=reduction, z_loss=0.05, softcap=3.0)
    L, _, _, _ = reference.cross_entropy_options(x.numpy(), y.numpy(), reduction=reduction,
                                                 z_loss=0.05, softcap=3.0)
    _close(loss, torch.as_tensor(L, dtype=torch.float64))


@pytest.mark.parametrize("option", [dict(z_loss=0.1), dict(softcap=2.0),
                                    dict(z_loss=0.1, softcap=2.0, label_smoothing=0.1)],
                         ids=["z", "cap", "all"])
@pytest.mark.parametrize("targets", ["index", "prob"])
def test_gradcheck(option, targets):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    t = (torch.rand(5, 4, dtype=torch.float64, generator=g) if targets == "prob"
         else torch.randint(0, 4, (5,), generator=g))
    for reduction in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda z: cross_entropy(z, t, reduction=reduction, **option), (x,))


def test_second_derivative_with_options_is_an_error_not_a_wrong_value():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss = cross_entropy(x, torch.tensor([0, 1, 2]), softcap=2.0)
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g.sum(), x)


def test_opcheck_of_the_new_operators():
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    t = torch.rand(6, 5, dtype=torch.float64)
    torch.library.opcheck(torch.ops.cysoftmax.cross_entropy_options.default,
                          (x, t, None, -100, "mean", 0.1, 0.01, 2.0, 1))
    W = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 7, (6,))
    for reduction in ("mean", "none"):
        torch.library.opcheck(torch.ops.cysoftmax.linear_cross_entropy.default,
                              (x, W, y, b, None, -100, reduction, 0.0, 0.0, 0.0, 4, 1,
                               reduction != "none"))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("targets", ["index", "prob"])
def test_fused_linear_equals_pytorch(reduction, targets):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(33, 8, dtype=torch.float64, generator=g, requires_grad=True)
    W = torch.randn(21, 8, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(21, dtype=torch.float64, generator=g, requires_grad=True)
    t = (torch.rand(33, 21, dtype=torch.float64, generator=g) if targets == "prob"
         else torch.randint(0, 21, (33,), generator=g))
    w = torch.rand(21, dtype=torch.float64, generator=g) + 0.5
    kw = dict(weight=w, reduction=reduction, label_smoothing=0.1)
    ours = linear_cross_entropy(x, W, t, linear_bias=b, chunk_size=5, **kw)
    go = torch.rand(ours.shape, dtype=torch.float64, generator=g)
    grads = torch.autograd.grad(ours, (x, W, b), go)
    theirs = F.cross_entropy(F.linear(x, W, b), t, **kw)
    expected = torch.autograd.grad(theirs, (x, W, b), go)
    _close(ours, theirs)
    for a, e in zip(grads, expected):
        _close(a, e)


def test_fused_linear_gradcheck_and_module():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    W = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(0, 5, (6,), generator=g)
    assert torch.autograd.gradcheck(
        lambda a, B: linear_cross_entropy(a, B, y, reduction="none", z_loss=0.1, softcap=2.0,
                                          chunk_size=4), (x, W))
    module = LinearCrossEntropyLoss(3, 5, bias=True, dtype=torch.float64)
    loss = module(x, y)
    ref = F.cross_entropy(F.linear(x, module.linear.weight, module.linear.bias), y)
    _close(loss, ref)


def test_fused_linear_under_torch_compile():
    g = torch.Generator().manual_seed(6)
    lin = torch.nn.Linear(8, 40)
    x = torch.randn(16, 8, generator=g)
    y = torch.randint(0, 40, (16,), generator=g)

    def step(x, y):
        return linear_cross_entropy(x, lin.weight, y, linear_bias=lin.bias)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(x, y)
    gw, gb = torch.autograd.grad(loss, (lin.weight, lin.bias))
    ref = step(x, y)
    rw, rb = torch.autograd.grad(ref, (lin.weight, lin.bias))
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(gw, rw)
    torch.testing.assert_close(gb, rb)


def test_no_grad_forward_computes_no_gradients():
    x = torch.randn(4, 3)
    W = torch.randn(5, 3, requires_grad=True)
    with torch.no_grad():
        loss = linear_cross_entropy(x, W, torch.tensor([0, 1, 2, 3]))
    assert loss.grad_fn is None and np.isfinite(loss.item())


def test_fused_linear_target_errors_name_target():
    x, W = torch.randn(3, 2), torch.randn(4, 2)
    with pytest.raises(IndexError, match=r"target\[1\] = 9"):
        linear_cross_entropy(x, W, torch.tensor([0, 9, 1]))
    with pytest.raises(ValueError, match="z_loss, softcap and chunk_size need"):
        linear_cross_entropy(x.double(), W, torch.tensor([0, 1, 1]), z_loss=0.1)
