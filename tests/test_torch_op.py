"""cysoftmax.torch: the PyTorch operator against PyTorch's own F.cross_entropy (float64
reference), its registration (opcheck), autograd (gradcheck, gradgradcheck), devices and
dtypes, torch.compile and a training loop.  Skipped when torch is not installed."""

import doctest
import gc
import os
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
ct = pytest.importorskip("cysoftmax.torch")

REDUCTIONS = ["mean", "sum", "none"]
needs_torch_linear_ce = pytest.mark.skipif(  # the reference: new in PyTorch 2.13
    not hasattr(F, "linear_cross_entropy"), reason="needs F.linear_cross_entropy")
OPTIONS = {  # every option alone and together
    "plain": dict(),
    "weight": dict(weight=True),
    "ignore_index": dict(ignore_index=2),
    "smoothing": dict(label_smoothing=0.3),
    "all": dict(weight=True, ignore_index=2, label_smoothing=0.3),
}


def _case(shape, dtype=torch.float64, seed=0, weight=False, ignore_index=-100,
          label_smoothing=0.0):
    """Scores (class axis second), targets with some rows equal to ignore_index, options."""
    g = torch.Generator().manual_seed(seed)
    C = shape[1] if len(shape) > 1 else shape[0]
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)
    t_shape = (shape[0],) + tuple(shape[2:]) if len(shape) > 1 else ()
    t = torch.randint(0, C, t_shape, generator=g)
    if t.dim() > 0 and ignore_index != -100:
        t.view(-1)[::4] = ignore_index
    kw = dict(ignore_index=ignore_index, label_smoothing=label_smoothing)
    if weight:
        kw["weight"] = (torch.rand(C, generator=g, dtype=torch.float64) + 0.2).to(dtype)
    return x, t, kw


def _loss_and_grad(fn, x, t, grad_output=None, **kw):
    x = x.detach().clone().requires_grad_()
    loss = fn(x, t, **kw)
    loss.backward(torch.ones_like(loss) if grad_output is None else grad_output)
    return loss.detach(), x.grad


def test_import_cysoftmax_does_not_import_torch():
    code = "import sys, cysoftmax; print('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    code = "import sys, cysoftmax.torch; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.stdout.strip() == "True", proc.stderr


def test_docstring_examples_run():
    failures, tried = doctest.testmod(ct, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried >= 6 and failures == 0


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", ["plain", "all"])
def test_opcheck(reduction, option):
    x, t, kw = _case((6, 5), **OPTIONS[option])
    x.requires_grad_()
    w = kw.get("weight")
    args = (x, t, w, kw["ignore_index"], reduction, kw["label_smoothing"], 1)
    result = torch.library.opcheck(torch.ops.cysoftmax.cross_entropy.default, args)
    assert set(result.values()) == {"SUCCESS"} and len(result) == 4, result
    go = torch.randn(6 if reduction == "none" else (), dtype=torch.float64, requires_grad=True)
    grad = torch.randn(6, 5, dtype=torch.float64)
    args = (grad, go, x, t, w, kw["ignore_index"], reduction, kw["label_smoothing"])
    result = torch.library.opcheck(torch.ops.cysoftmax.cross_entropy_backward.default, args)
    assert set(result.values()) == {"SUCCESS"} and len(result) == 4, result


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(OPTIONS))
def test_gradcheck_and_gradgradcheck(reduction, option):
    x, t, kw = _case((5, 4), seed=1, **OPTIONS[option])
    x.requires_grad_()

    def f(x):
        return ct.cross_entropy(x, t, reduction=reduction, **kw)

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("shape", [(1, 2), (37, 11), (4, 7, 3), (2, 6, 3, 5), (9,)],
                         ids=lambda s: "x".join(map(str, s)))
def test_matches_torch_float64(shape, option, reduction):
    """Loss and gradient (with a non-uniform grad_output for "none") within 1e-12 of
    F.cross_entropy in float64, for 1-D, 2-D and N-D inputs."""
    x, t, kw = _case(shape, seed=len(shape), **OPTIONS[option])
    if len(shape) == 1 and kw["ignore_index"] != -100:
        kw["ignore_index"] = (int(t) + 1) % shape[0]
    go = None
    if reduction == "none":
        go = torch.rand(t.shape, generator=torch.Generator().manual_seed(3),
                        dtype=torch.float64) * 4 - 1
    loss, grad = _loss_and_grad(ct.cross_entropy, x, t, go, reduction=reduction, **kw)
    ref_loss, ref_grad = _loss_and_grad(F.cross_entropy, x, t, go, reduction=reduction, **kw)
    assert loss.shape == ref_loss.shape and loss.dtype == torch.float64
    # equal_nan: a 1x2 batch whose one row is ignored has a NaN mean (and gradient)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-14, equal_nan=True)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-14, equal_nan=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(64, 10), (8, 10, 4)], ids=lambda s: "x".join(map(str, s)))
def test_matches_torch_float32(shape, reduction):
    """float32 against F.cross_entropy in float64 on the same (float32) values."""
    x, t, kw = _case(shape, dtype=torch.float32, seed=5, **OPTIONS["all"])
    loss, grad = _loss_and_grad(ct.cross_entropy, x, t, reduction=reduction, **kw)
    kw64 = dict(kw, weight=kw["weight"].double())
    ref_loss, ref_grad = _loss_and_grad(F.cross_entropy, x.double(), t, reduction=reduction,
                                        **kw64)
    assert loss.dtype == grad.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref_loss, rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=2e-6, atol=2e-7)


def test_second_derivative_matches_torch():
    """A Hessian-vector product through create_graph=True, against F.cross_entropy's."""
    x, t, kw = _case((6, 5), seed=7, **OPTIONS["all"])
    v = torch.randn(6, 5, dtype=torch.float64)
    out = []
    for fn in (ct.cross_entropy, F.cross_entropy):
        xx = x.clone().requires_grad_()
        g, = torch.autograd.grad(fn(xx, t, **kw), xx, create_graph=True)
        out.append(torch.autograd.grad((g * v).sum(), xx)[0])
    torch.testing.assert_close(out[0], out[1], rtol=1e-12, atol=1e-14)


def test_2d_input_and_gradient_are_not_copied(monkeypatch):
    """A contiguous (N, C) tensor reaches the kernel as a view, and the kernel writes the
    gradient into the tensor that the backward pass then scales."""
    seen = {}
    real = ct.softmax_cross_entropy

    def spy(scores, labels, **kw):
        seen["scores"], seen["out"] = scores, kw["out"]
        return real(scores, labels, **kw)

    monkeypatch.setattr(ct, "softmax_cross_entropy", spy)
    x = torch.randn(16, 5, requires_grad=True)
    t = torch.zeros(16, dtype=torch.long)
    loss, grad = torch.ops.cysoftmax.cross_entropy(x, t, None, -100, "mean", 0.0, 1)
    assert seen["scores"].__array_interface__["data"][0] == x.data_ptr()
    assert seen["out"].__array_interface__["data"][0] == grad.data_ptr()
    ct.cross_entropy(x, t).backward()  # through the wrapper
    assert seen["scores"].__array_interface__["data"][0] == x.data_ptr()
    for dtype in (torch.float64, torch.float16):  # N-D and half precision: a copy
        ct.cross_entropy(torch.randn(4, 5, 3).to(dtype), torch.zeros(4, 3, dtype=torch.long))
        assert seen["scores"].flags.c_contiguous and seen["scores"].shape == (12, 5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computed_in_float32(dtype):
    x, t, kw = _case((32, 6), dtype=dtype, seed=2, **OPTIONS["all"])
    loss, grad = _loss_and_grad(ct.cross_entropy, x, t, **kw)
    assert loss.dtype == grad.dtype == dtype
    kw64 = dict(kw, weight=kw["weight"].double())
    ref_loss, ref_grad = _loss_and_grad(F.cross_entropy, x.double(), t, **kw64)
    # a float32 result rounded once to `dtype`: within one unit in the last place of it
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(loss, ref_loss.to(dtype), rtol=eps, atol=0)
    torch.testing.assert_close(grad, ref_grad.to(dtype), rtol=eps, atol=1e-5)



@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_module_nd(dtype, reduction):
    """CrossEntropyLoss moved to a half dtype (its weight buffer too), on (N, C, d1, d2)
    input: the loss and gradient in `dtype`, each a float32 result rounded once."""
    x, t, kw = _case((4, 6, 3, 2), dtype=dtype, seed=12, **OPTIONS["all"])
    module = ct.CrossEntropyLoss(kw["weight"].double(), ignore_index=2, reduction=reduction,
                                 label_smoothing=0.3).to(dtype)
    assert module.weight.dtype == dtype
    loss, grad = _loss_and_grad(module, x, t)
    assert loss.dtype == grad.dtype == dtype and loss.shape == (() if reduction != "none"
                                                                else t.shape)
    ref_loss, ref_grad = _loss_and_grad(F.cross_entropy, x.double(), t, reduction=reduction,
                                        weight=module.weight.double(), ignore_index=2,
                                        label_smoothing=0.3)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(loss, ref_loss.to(dtype), rtol=eps, atol=0)
    torch.testing.assert_close(grad, ref_grad.to(dtype), rtol=eps, atol=1e-5)


@needs_torch_linear_ce
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_linear_cross_entropy_half_precision(dtype):
    """The linear layer in `dtype` (F.linear), the loss computed in float32: the loss and
    the gradients of input, linear_weight and linear_bias in `dtype`, within two units in
    the last place (of the largest entry) of PyTorch's own F.linear_cross_entropy in
    `dtype`."""
    g = torch.Generator().manual_seed(13)
    x, lw = torch.randn(16, 8, generator=g), torch.randn(5, 8, generator=g)
    lb, t = torch.randn(5, generator=g), torch.randint(0, 5, (16,), generator=g)
    results = []
    for fn in (ct.linear_cross_entropy, F.linear_cross_entropy):
        leaves = [a.to(dtype).requires_grad_() for a in (x, lw, lb)]
        loss = fn(leaves[0], leaves[1], t, linear_bias=leaves[2], label_smoothing=0.1)
        results.append((loss, torch.autograd.grad(loss, leaves)))
    eps = torch.finfo(dtype).eps
    (loss, grads), (ref_loss, ref_grads) = results
    assert loss.dtype == dtype and all(gr.dtype == dtype for gr in grads)
    torch.testing.assert_close(loss, ref_loss, rtol=2 * eps, atol=0)
    for gr, ref in zip(grads, ref_grads):
        torch.testing.assert_close(gr, ref, rtol=0, atol=2 * eps * ref.abs().max().item())

@pytest.mark.parametrize("target_dtype", [torch.uint8, torch.int16, torch.int32])
def test_integer_target_dtypes(target_dtype):
    x, t, kw = _case((10, 7), seed=4)
    loss, grad = _loss_and_grad(ct.cross_entropy, x, t.to(target_dtype))
    ref_loss, ref_grad = _loss_and_grad(F.cross_entropy, x, t)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-14)


def test_other_devices_use_torch_and_probability_targets_the_kernel():
    x = torch.empty(4, 3, device="meta")
    loss = ct.cross_entropy(x, torch.empty(4, dtype=torch.long, device="meta"),
                            reduction="none")
    assert loss.device.type == "meta" and loss.shape == (4,)
    x, _, _ = _case((5, 3), seed=6)
    probs = torch.softmax(torch.randn(5, 3, dtype=torch.float64), dim=1)
    ours = ct.cross_entropy(x, probs, label_smoothing=0.1)
    assert "cross_entropy_options" in str(ours.grad_fn) or ours.grad_fn is None
    torch.testing.assert_close(ours, F.cross_entropy(x, probs, label_smoothing=0.1),
                               rtol=1e-12, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_uses_torch():
    x, t, kw = _case((8, 5), seed=10, **OPTIONS["all"])
    x, t, kw["weight"] = x.cuda(), t.cuda(), kw["weight"].cuda()
    loss, grad = _loss_and_grad(ct.cross_entropy, x, t, **kw)
    ref_loss, ref_grad = _loss_and_grad(F.cross_entropy, x, t, **kw)
    assert loss.device.type == grad.device.type == "cuda"
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=0)


def test_all_ignored_mean_is_nan_as_in_torch():
    x = torch.randn(3, 4, dtype=torch.float64)
    t = torch.full((3,), -100)
    assert torch.isnan(ct.cross_entropy(x, t)) and torch.isnan(F.cross_entropy(x, t))


def test_thread_counts_give_identical_results():
    x, t, kw = _case((300, 40), seed=8, **OPTIONS["all"])
    results = [_loss_and_grad(ct.cross_entropy, x, t, num_threads=n, **kw) for n in (1, 2)]
    results.append(_loss_and_grad(ct.cross_entropy, x, t, **kw))
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


def test_errors():
    x, t = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="reduction"):
        ct.cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match="size_average"):
        ct.cross_entropy(x, t, size_average=True)
    with pytest.raises(ValueError, match="size_average"):
        ct.CrossEntropyLoss(reduce=False)
    with pytest.raises(ValueError, match="target has shape"):
        ct.cross_entropy(x, t[:3])
    with pytest.raises(IndexError):
        ct.cross_entropy(x, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="num_threads"):
        ct.cross_entropy(x, t, num_threads=0)
    with pytest.raises(ValueError):
        ct.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(RuntimeError, match="weight"):  # as F.cross_entropy
        ct.cross_entropy(x, t, weight=torch.ones(3, requires_grad=True))



def _bad_target(shape, pos, value, dtype=torch.long, transposed=False):
    t = torch.zeros(shape, dtype=dtype)
    if transposed:  # a non-contiguous view of the same shape
        t = torch.zeros((shape[0],) + tuple(reversed(shape[1:])), dtype=dtype).transpose(1, 2)
    t[pos] = value
    return t


@pytest.mark.parametrize("input_shape, target, where, value, ignore_index", [
    ((5, 3), torch.tensor([0, 1, 2, 3, 0]), "[3]", 3, -100),
    ((2, 3, 4, 5), _bad_target((2, 4, 5), (1, 2, 3), 7), "[1, 2, 3]", 7, -100),
    ((2, 3, 4, 5), _bad_target((2, 4, 5), (0, 3, 1), -1, transposed=True), "[0, 3, 1]", -1,
     -100),
    ((3,), torch.tensor(9), "", 9, -100),
    ((3, 3), torch.tensor([-100, 1, 4]), "[2]", 4, -100),  # the ignored one is fine
    ((2, 3), torch.tensor([5, -100]), "[1]", -100, 5),
    ((2, 3), torch.tensor([0, 200], dtype=torch.uint8), "[1]", 200, -100),
], ids=["1d", "3d", "3d-transposed", "unbatched", "after-ignored", "ignore-5", "uint8"])
def test_target_out_of_range_names_target_and_its_index(input_shape, target, where, value,
                                                         ignore_index):
    """The IndexError names `target` (not the NumPy API's `labels`) with the index in the
    target's own shape (N, d1, ...), not in the flattened batch."""
    message = (rf"^target{re.escape(where)} = {value} is not a class index in \[0, 3\) "
               rf"and not ignore_index \({ignore_index}\)$")
    x = torch.randn(input_shape, requires_grad=True)
    for fn in (ct.cross_entropy, ct.CrossEntropyLoss(ignore_index=ignore_index)):
        kw = dict(ignore_index=ignore_index) if fn is ct.cross_entropy else {}
        with pytest.raises(IndexError, match=message) as info:
            fn(x, target, **kw)
        assert info.value.__context__ is None  # no chained error about "labels"
    if len(input_shape) == 2:  # through the linear layer: logits of the same shape
        with pytest.raises(IndexError, match=message):
            ct.linear_cross_entropy(torch.randn(input_shape[0], 4), torch.randn(3, 4), target,
                                    ignore_index=ignore_index)


def test_target_or_weight_on_another_device_is_torchs_error():
    """A CPU input with a target or weight elsewhere: PyTorch's device error, as
    F.cross_entropy (not a kernel call on memory that is not there)."""
    x = torch.randn(4, 3, requires_grad=True)
    t = torch.tensor([0, 1, 2, 0])
    for kw in (dict(target=t.to("meta")), dict(target=t, weight=torch.ones(3, device="meta"))):
        for fn in (F.cross_entropy, ct.cross_entropy):
            with pytest.raises(RuntimeError, match="device"):
                fn(x, **kw)

def test_module_matches_torch_module():
    x, t, kw = _case((12, 5), seed=9, **OPTIONS["all"])
    mine = ct.CrossEntropyLoss(kw["weight"], ignore_index=2, reduction="sum",
                               label_smoothing=0.3)
    ref = torch.nn.CrossEntropyLoss(kw["weight"], ignore_index=2, reduction="sum",
                                    label_smoothing=0.3)
    torch.testing.assert_close(mine(x, t), ref(x, t), rtol=1e-12, atol=0)
    assert torch.equal(mine.state_dict()["weight"], kw["weight"])
    assert "reduction='sum'" in repr(mine)


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def _spiral(n=60):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat_interleave(n)
    r = torch.linspace(0.05, 1, n).repeat(3)
    angle = y * 4.0 + r * 4.0 + torch.randn(3 * n, generator=g) * 0.2
    return torch.stack([r * torch.sin(angle), r * torch.cos(angle)], dim=1), y


def test_torch_compile_fullgraph_matches_eager():
    """The loss inside a compiled model: one graph (fullgraph=True raises on a break),
    the same loss and parameter gradients as eager."""
    X, y = _spiral(20)
    model = _tiny_model()

    def loss_fn(model, X, y):
        return ct.cross_entropy(model(X), y, label_smoothing=0.1)

    results = []
    for fn in (loss_fn, torch.compile(loss_fn, fullgraph=True)):
        model.zero_grad()
        loss = fn(model, X, y)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (eager_loss, eager_grads), (loss, grads) = results
    torch.testing.assert_close(loss, eager_loss, rtol=1e-6, atol=0)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)


def test_training_converges_like_torch():
    X, y = _spiral()
    histories, models = [], []
    for fn in (ct.cross_entropy, F.cross_entropy):
        model = _tiny_model()
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        history = []
        for _ in range(200):
            opt.zero_grad()
            loss = fn(model(X), y)
            loss.backward()
            opt.step()
            history.append(loss.item())
        histories.append(np.array(history))
        models.append(model)
    mine, ref = histories
    assert mine[-1] < 0.3 * mine[0]  # it learns
    np.testing.assert_allclose(mine, ref, rtol=1e-3)
    accuracy = (models[0](X).argmax(1) == y).float().mean().item()
    assert accuracy > 0.8


@needs_torch_linear_ce
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("out_features", [(), (3,), (2, 3)], ids=str)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_linear_cross_entropy_matches_torch(bias, out_features, reduction):
    """Loss and the gradients of input, linear_weight and linear_bias within 1e-12 of
    F.linear_cross_entropy (its reference path) in float64."""
    g = torch.Generator().manual_seed(11)
    N, D, C = 9, 6, 5
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    lw = torch.randn(C, *out_features, D, generator=g, dtype=torch.float64)
    lb = torch.randn(C, *out_features, generator=g, dtype=torch.float64) if bias else None
    t = torch.randint(0, C, (N, *out_features), generator=g)
    t.view(-1)[::4] = 1
    kw = dict(weight=torch.rand(C, generator=g, dtype=torch.float64) + 0.2, ignore_index=1,
              label_smoothing=0.2, reduction=reduction)
    results = []
    for fn in (ct.linear_cross_entropy, F.linear_cross_entropy):
        leaves = [a.clone().requires_grad_() for a in (x, lw) + ((lb,) if bias else ())]
        loss = fn(leaves[0], leaves[1], t, linear_bias=leaves[2] if bias else None, **kw)
        grads = torch.autograd.grad(loss, leaves, torch.linspace(-1, 2, loss.numel(),
                                                                 dtype=torch.float64
                                                                 ).reshape(loss.shape))
        results.append((loss.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-12, atol=1e-14)
    for mine, ref in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(mine, ref, rtol=1e-12, atol=1e-13)


@needs_torch_linear_ce
def test_linear_cross_entropy_unbatched_options_and_errors():
    x, lw, t = torch.randn(4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64), \
        torch.tensor(2)
    torch.testing.assert_close(ct.linear_cross_entropy(x, lw, t),
                               F.linear_cross_entropy(x, lw, t), rtol=1e-12, atol=0)
    with pytest.warns(UserWarning, match="options"):
        ct.linear_cross_entropy(x, lw, t, options=object())
    with pytest.raises(RuntimeError, match="in_features"):
        ct.linear_cross_entropy(x, torch.randn(3, 5, dtype=torch.float64), t)
    with pytest.raises(RuntimeError, match="batched"):
        ct.linear_cross_entropy(x, torch.randn(3, 2, 4, dtype=torch.float64), t)
    with pytest.raises(RuntimeError, match="linear_bias"):
        ct.linear_cross_entropy(x, lw, t, linear_bias=torch.zeros(4, dtype=torch.float64))


@needs_torch_linear_ce
@pytest.mark.parametrize("out_features", [(), (2,)], ids=str)
def test_linear_module_matches_torch_module(out_features):
    kw = dict(out_features=out_features, bias=True, dtype=torch.float64,
              weight=torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64),
              ignore_index=0, label_smoothing=0.1, reduction="sum")
    torch.manual_seed(0)
    ref = torch.nn.LinearCrossEntropyLoss(3, 4, **kw)
    mine = ct.LinearCrossEntropyLoss(3, 4, **kw)
    mine.load_state_dict(ref.state_dict())  # the same parameter and buffer names
    x = torch.randn(6, 3, dtype=torch.float64)
    t = torch.randint(0, 4, (6, *out_features))
    torch.testing.assert_close(mine(x, t), ref(x, t), rtol=1e-12, atol=0)
    mine(x, t).backward()
    ref(x, t).backward()
    torch.testing.assert_close(mine.linear.weight.grad, ref.linear.weight.grad,
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("grad_output, expected", [(1.0, 1), (2.0, 2)],
                         ids=["grad_output_1", "grad_output_2"])
def test_backward_memory_in_gradient_sized_tensors(grad_output, expected):
    """The forward keeps the gradient (one tensor of the input's size).  The backward
    hands it on as it is when grad_output is 1, and adds one tensor (the scaled
    gradient) otherwise; never a zero tensor for the gradient output's (absent)
    gradient.  Measured as the peak resident size above the size before the call
    (Linux)."""
    from cysoftmax.bench.torch_training import _reset_peak, _status_kib
    x = torch.randn(512, 32768, requires_grad=True)  # 64 MiB: blocks glibc returns when freed
    t = torch.randint(0, 32768, (512,))
    size_mib = x.numel() * x.element_size() / 2**20
    peaks = []
    for _ in range(2):  # the first call also loads code
        gc.collect()
        before = _status_kib("VmRSS")
        if before is None or not _reset_peak():
            pytest.skip("needs Linux's /proc/self/status and clear_refs")
        loss = ct.cross_entropy(x, t, num_threads=1)
        grad, = torch.autograd.grad(loss, x, torch.tensor(grad_output))
        del loss, grad
        peaks.append((_status_kib("VmHWM") - before) / 1024)
    assert (expected - 0.1) * size_mib <= peaks[-1] < (expected + 0.5) * size_mib, \
        (peaks, size_mib)


@pytest.mark.parametrize("op", ["cross_entropy", "options", "linear"])
def test_unscaled_gradient_is_protected_from_changes(op):
    """With grad_output 1 the input's gradient is the tensor the forward saved:
    changing it in place and going through the graph again is autograd's error, not a
    wrong gradient."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    W = torch.randn(6, 5, dtype=torch.float64, generator=gen)
    t = torch.tensor([0, 1, 2, 3])
    if op == "cross_entropy":
        loss, reference = ct.cross_entropy(x, t), F.cross_entropy(x, t)
    elif op == "options":  # probability targets: the operator of the loss's options
        p = torch.softmax(torch.randn(4, 5, dtype=torch.float64, generator=gen), -1)
        loss, reference = ct.cross_entropy(x, p), F.cross_entropy(x, p)
    else:
        loss = ct.linear_cross_entropy(x, W, t)
        reference = F.cross_entropy(x @ W.T, t)
    grad, = torch.autograd.grad(loss, x, retain_graph=True)
    expected, = torch.autograd.grad(reference, x)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)
    grad.mul_(3.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(loss, x)


README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
README_IMPORT = "from cysoftmax.torch import CrossEntropyLoss, cross_entropy\n"


def _run_readme_torch_example(loss_module, loss_function):
    """Run the README's PyTorch example with its imports replaced by `loss_module` and
    `loss_function`; the loss of each training step and the example's variables."""
    with open(README, encoding="utf-8") as fh:
        blocks = re.findall(r"```python\n(.*?)```", fh.read(), flags=re.S)
    block, = [b for b in blocks if README_IMPORT in b]
    losses = []

    class Recording(loss_module):
        def forward(self, input, target):
            loss = super().forward(input, target)
            losses.append(loss.item())
            return loss

    namespace = {"CrossEntropyLoss": Recording, "cross_entropy": loss_function}
    exec(compile(block.replace(README_IMPORT, ""), "README.md", "exec"), namespace)
    return np.array(losses), namespace


@pytest.mark.skipif(not os.path.exists(README), reason="needs the source tree")
def test_readme_example_trains_as_with_torch(capsys):
    """The README's training loop (same seed) with cysoftmax.torch and with torch.nn's
    CrossEntropyLoss and F.cross_entropy: the model learns, and the losses of every step,
    the trained parameters and the per-pixel example agree."""
    mine, ns = _run_readme_torch_example(ct.CrossEntropyLoss, ct.cross_entropy)
    ref, ref_ns = _run_readme_torch_example(torch.nn.CrossEntropyLoss, F.cross_entropy)
    assert len(mine) == len(ref) == 100
    assert mine[-1] < 0.4 * mine[0]  # it learns (from about log 3)
    np.testing.assert_allclose(mine, ref, rtol=1e-4)
    for p, q in zip(ns["model"].parameters(), ref_ns["model"].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        accuracy = (ns["model"](ns["X"]).argmax(1) == ns["y"]).float().mean().item()
    assert accuracy > 0.9
    torch.testing.assert_close(ns["per_pixel"], ref_ns["per_pixel"], rtol=1e-6, atol=0)
    assert ns["per_pixel"].shape == (4, 8, 8)
