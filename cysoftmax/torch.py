"""PyTorch front end: a drop-in ``cross_entropy`` with autograd, on the CPU kernels.

``cysoftmax.cross_entropy`` works on NumPy arrays with the class axis last; this module
wraps the same compiled kernel as a PyTorch operator (``torch.library.custom_op``) with
the signature and semantics of ``torch.nn.functional.cross_entropy`` (class indices or
probability targets, plus z-loss and soft-capping as keywords), the class axis second as
in PyTorch.  ``import cysoftmax`` does not import torch; ``import cysoftmax.torch`` does.
``linear_cross_entropy`` and ``LinearCrossEntropyLoss`` follow PyTorch's (2.13)
``F.linear_cross_entropy`` and ``nn.LinearCrossEntropyLoss``; on CPU float32/float64
tensors they run the fused, chunked linear layer + loss of
:func:`cysoftmax.linear_softmax_cross_entropy` (operator
``cysoftmax::linear_cross_entropy``): the logits are never held whole.

How it runs
-----------
The operator ``cysoftmax::cross_entropy`` computes the loss *and* its gradient in one
kernel call on a ``(M, C)`` view of the input and keeps the gradient for the backward
pass, which only scales it by the incoming gradient (a scalar for ``"mean"`` and
``"sum"``, one value per row for ``"none"``).  A contiguous 2-D ``(N, C)`` float32 or
float64 CPU tensor is handed to the kernel without a copy, and the gradient is written
into a tensor allocated by torch.  An N-D input ``(N, C, d1, ...)`` is first copied with
its class axis moved last.  The kernel runs on ``torch.get_num_threads()`` threads
unless ``num_threads`` is given.  Both operators have fake (meta) implementations and
registered autograd formulas, so ``torch.compile(..., fullgraph=True)`` traces them.

Devices, dtypes and targets
---------------------------
- Input not on the CPU (CUDA, MPS, ...): ``torch.nn.functional.cross_entropy`` is called
  instead, with the same arguments.  So it is when `target` or `weight` is not on the CPU
  while the input is, and PyTorch raises its error for tensors on different devices.
- float16 and bfloat16 CPU input: computed in float32 (the input, and `weight`, are cast
  to float32); the loss is cast back to the input's dtype, and so is the gradient (by
  the autograd of the cast).  Each is a float32 result rounded once, so it may differ
  from PyTorch's own half-precision result in the last bit.
- Other input dtypes (integers, complex): ``torch.nn.functional.cross_entropy`` is
  called, which raises its own error.
- Floating-point targets (class probabilities, of the input's shape and dtype) and the
  keywords ``z_loss`` and ``softcap`` run on the operator ``cysoftmax::cross_entropy_options``
  (its backward scales the kept gradient; it has no second derivative: asking for one is
  an error).  Class-index targets may be of any integer dtype (PyTorch requires int64).
- `weight` is not differentiable: one that requires a gradient raises a
  ``RuntimeError``, as in PyTorch (``nll_loss``).
- Second (and higher) derivatives with respect to `input` are supported: the backward
  operator ``cysoftmax::cross_entropy_backward`` has its own autograd formula, the
  Hessian ``s_i (diag P - P P^T)`` of each row applied to the incoming gradient (``P``
  the row's softmax, ``s_i`` its weight and smoothing factor over the mean's
  denominator), written with torch operators.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import _linear
from ._api import softmax_cross_entropy

__all__ = ["cross_entropy", "CrossEntropyLoss", "linear_cross_entropy",
           "LinearCrossEntropyLoss"]

_REDUCTIONS = ("mean", "sum", "none")
_HALF = (torch.float16, torch.bfloat16)
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _empty(shape: Tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """A new CPU tensor on memory that NumPy allocated: for large tensors NumPy asks
    Linux for transparent huge pages (``madvise``), which makes the first writes to a
    fresh gradient much cheaper (500 MiB: 72 ms against 160-230 ms for
    ``torch.empty``, kernel included, measured on 2 threads)."""
    if dtype not in _NUMPY_DTYPES:
        return torch.empty(shape, dtype=dtype)
    return torch.from_numpy(np.empty(shape, dtype=_NUMPY_DTYPES[dtype]))


def _unit(grad_loss: Tensor) -> bool:
    """True when the backward pass may hand on the forward's gradient as it is:
    `grad_loss` is a plain CPU scalar tensor equal to 1 (``loss.backward()`` of a
    mean or sum), outside any tracing or functorch transform and with no graph of
    the backward pass being built (``create_graph=False``).  Saves a scaled copy
    of the gradient; autograd's check of saved tensors still refuses a second
    backward pass after the returned gradient was changed in place."""
    return (type(grad_loss) is Tensor and grad_loss.dim() == 0
            and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and torch._C._functorch.peek_interpreter_stack() is None
            and bool(grad_loss == 1))


@torch.library.custom_op("cysoftmax::cross_entropy", mutates_args=(), device_types="cpu")
def _cross_entropy_op(input: Tensor, target: Tensor, weight: Optional[Tensor],
                      ignore_index: int, reduction: str, label_smoothing: float,
                      num_threads: int) -> Tuple[Tensor, Tensor]:
    """Loss and gradient of ``(M, C)`` scores (class axis last) with targets of ``M``
    elements, in the caller's target shape (``()``, ``(N,)`` or ``(N, d1, ..., dk)``), which
    the error for a target out of range refers to.

    ``num_threads=0`` uses ``torch.get_num_threads()``, read when the kernel runs (also
    inside a compiled graph, where the wrapper cannot call it).
    """
    scores = input.detach().numpy()  # a view: no copy
    labels = target.detach().reshape(-1).numpy()
    w = None if weight is None else weight.detach().numpy()
    grad = _empty(tuple(input.shape), input.dtype)  # C-contiguous
    error: Optional[IndexError] = None
    try:
        loss, _ = softmax_cross_entropy(scores, labels, reduction=reduction, weight=w,
                                        ignore_index=ignore_index,
                                        label_smoothing=label_smoothing, out=grad.numpy(),
                                        num_threads=num_threads or torch.get_num_threads())
    except IndexError:
        error = _target_range_error(labels, tuple(target.shape), scores.shape[1],
                                    ignore_index)
        if error is None:  # the target changed while the kernel ran: the kernel's error
            raise
    if error is not None:  # raised outside the handler: no chained "labels" error
        raise error
    return torch.from_numpy(np.array(loss, dtype=scores.dtype)), grad


def _target_range_error(labels: np.ndarray, shape: Tuple[int, ...], n_classes: int,
                        ignore_index: int) -> Optional[IndexError]:
    """The ``IndexError`` for the first target outside ``[0, n_classes)`` that is not
    `ignore_index`, naming ``target`` and its index in `shape` (the target's own
    shape, of which `labels` is the flat copy); None when every target is valid."""
    bad = np.flatnonzero((labels != ignore_index) & ((labels < 0) | (labels >= n_classes)))
    if bad.size == 0:
        return None
    pos = int(bad[0])
    where = ("[" + ", ".join(str(int(i)) for i in np.unravel_index(pos, shape)) + "]"
             if shape else "")
    return IndexError(f"target{where} = {labels[pos]} is not a class index in "
                      f"[0, {n_classes}) and not ignore_index ({ignore_index})")


@_cross_entropy_op.register_fake
def _cross_entropy_fake(input: Tensor, target: Tensor, weight: Optional[Tensor],
                        ignore_index: int, reduction: str, label_smoothing: float,
                        num_threads: int) -> Tuple[Tensor, Tensor]:
    loss_shape = (input.shape[0],) if reduction == "none" else ()
    return input.new_empty(loss_shape), input.new_empty(input.shape)


def _cross_entropy_setup_context(ctx: Any, inputs: Tuple[Any, ...],
                                 output: Tuple[Tensor, Tensor]) -> None:
    input, target, weight, ignore_index, reduction, label_smoothing, _ = inputs
    grad = output[1]
    ctx.mark_non_differentiable(grad)
    # no zero tensor of the input's size for the gradient output's (absent) gradient
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(input, target.reshape(-1), weight, grad)
    ctx.options = (ignore_index, reduction, label_smoothing)


def _cross_entropy_backward(ctx: Any, grad_loss: Optional[Tensor],
                            _grad_grad: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
    input, target, weight, grad = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0] and grad_loss is not None:
        grad_input = grad if _unit(grad_loss) else _scale_gradient_op(
            grad, grad_loss, input, target, weight, *ctx.options)
    return grad_input, None, None, None, None, None, None


_cross_entropy_op.register_autograd(_cross_entropy_backward,
                                    setup_context=_cross_entropy_setup_context)


@torch.library.custom_op("cysoftmax::cross_entropy_backward", mutates_args=())
def _scale_gradient_op(grad: Tensor, grad_loss: Tensor, input: Tensor, target: Tensor,
                       weight: Optional[Tensor], ignore_index: int, reduction: str,
                       label_smoothing: float) -> Tensor:
    """The backward pass: ``grad * grad_loss`` (a scalar, or one value per row).

    `grad` is the forward's gradient; `input` and the options are only read by the
    second derivative (see `_scale_gradient_backward`).
    """
    return grad * grad_loss.unsqueeze(-1)


@_scale_gradient_op.register_fake
def _scale_gradient_fake(grad: Tensor, grad_loss: Tensor, input: Tensor, target: Tensor,
                         weight: Optional[Tensor], ignore_index: int, reduction: str,
                         label_smoothing: float) -> Tensor:
    return torch.empty_like(grad)


def _row_curvature(target: Tensor, weight: Optional[Tensor], C: int, ignore_index: int,
                   reduction: str, label_smoothing: float, dtype: torch.dtype) -> Tensor:
    """``s_i`` such that the Hessian of the loss in row ``i`` is ``s_i (diag P - P P^T)``:
    ``((1 - eps) w_{y_i} + eps/C sum_c w_c) / D`` for a kept row, 0 for an ignored one,
    with ``D`` the summed target weight for ``"mean"`` and 1 otherwise."""
    kept = target != ignore_index
    safe = torch.where(kept, target, torch.zeros_like(target)).long()
    w = torch.ones(C, dtype=dtype, device=target.device) if weight is None else weight.to(dtype)
    w_y = w[safe] * kept
    s = (1.0 - label_smoothing) * w_y + (label_smoothing / C) * w.sum() * kept
    return s / w_y.sum() if reduction == "mean" else s


def _scale_gradient_setup_context(ctx: Any, inputs: Tuple[Any, ...], output: Tensor) -> None:
    grad, grad_loss, input, target, weight, *options = inputs
    ctx.save_for_backward(grad, grad_loss, input, target, weight)
    ctx.options = options


def _scale_gradient_backward(ctx: Any, v: Tensor) -> Tuple[Optional[Tensor], ...]:
    """Second derivatives: of ``grad_loss * dL/dinput`` against `v`, with respect to
    `grad_loss` (``<v, dL/dinput>``, per row for "none") and to `input`
    (``grad_loss * s_i (P*v - P <P, v>)``, the Hessian applied to `v`)."""
    grad, grad_loss, input, target, weight = ctx.saved_tensors
    ignore_index, reduction, label_smoothing = ctx.options
    d_grad_loss = d_input = None
    if ctx.needs_input_grad[1]:
        # dL/dinput, through the operator again so that it stays differentiable in input
        unit = _scale_gradient_op(grad, torch.ones_like(grad_loss), input, target, weight,
                                  ignore_index, reduction, label_smoothing)
        d_grad_loss = (v * unit).sum(-1)
        if grad_loss.dim() == 0:
            d_grad_loss = d_grad_loss.sum()
    if ctx.needs_input_grad[2]:
        p = torch.softmax(input, dim=-1)
        s = _row_curvature(target, weight, input.shape[-1], ignore_index, reduction,
                           label_smoothing, input.dtype)
        hv = p * v - p * (p * v).sum(-1, keepdim=True)
        d_input = hv * (s * grad_loss).unsqueeze(-1)
    return None, d_grad_loss, d_input, None, None, None, None, None


_scale_gradient_op.register_autograd(_scale_gradient_backward,
                                     setup_context=_scale_gradient_setup_context)


# ---- probability targets, z-loss and soft-capping: the loss's options --------------

@torch.library.custom_op("cysoftmax::cross_entropy_options", mutates_args=(),
                         device_types="cpu")
def _options_op(input: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int,
                reduction: str, label_smoothing: float, z_loss: float, softcap: float,
                num_threads: int) -> Tuple[Tensor, Tensor]:
    """Loss and gradient of ``(M, C)`` scores with class indices (``M`` elements) or
    probability targets (``(M, C)``), with z-loss and soft-capping (``softcap=0``: none)."""
    scores = input.detach().numpy()
    t = target.detach().numpy()
    if not target.is_floating_point():
        t = t.reshape(-1)
    w = None if weight is None else weight.detach().numpy()
    grad = _empty(tuple(input.shape), input.dtype)
    loss, _ = softmax_cross_entropy(scores, t, reduction=reduction, weight=w,
                                    ignore_index=ignore_index, label_smoothing=label_smoothing,
                                    z_loss=z_loss, softcap=softcap or None, out=grad.numpy(),
                                    num_threads=num_threads or torch.get_num_threads())
    return torch.from_numpy(np.array(loss, dtype=scores.dtype)), grad


@_options_op.register_fake
def _options_fake(input: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int,
                  reduction: str, label_smoothing: float, z_loss: float, softcap: float,
                  num_threads: int) -> Tuple[Tensor, Tensor]:
    loss_shape = (input.shape[0],) if reduction == "none" else ()
    return input.new_empty(loss_shape), input.new_empty(input.shape)


@torch.library.custom_op("cysoftmax::scale_rows", mutates_args=())
def _scale_rows_op(grad: Tensor, grad_loss: Tensor) -> Tensor:
    """``grad * grad_loss`` (a scalar, or one value per row of grad).  It has no
    autograd formula: a second derivative through it is an error, not a wrong value."""
    return grad * grad_loss.unsqueeze(-1)


@_scale_rows_op.register_fake
def _scale_rows_fake(grad: Tensor, grad_loss: Tensor) -> Tensor:
    return torch.empty_like(grad)


def _options_setup_context(ctx: Any, inputs: Tuple[Any, ...],
                           output: Tuple[Tensor, Tensor]) -> None:
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(output[1])


def _options_backward(ctx: Any, grad_loss: Optional[Tensor],
                      _grad_grad: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
    (grad,) = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0] and grad_loss is not None:
        grad_input = grad if _unit(grad_loss) else _scale_rows_op(grad, grad_loss)
    return (grad_input,) + (None,) * 8


_options_op.register_autograd(_options_backward, setup_context=_options_setup_context)


# ---- the fused linear layer + loss --------------------------------------------------

def _linear_problem(input: Tensor, linear_weight: Tensor, target: Tensor,
                    linear_bias: Optional[Tensor], weight: Optional[Tensor],
                    ignore_index: int, reduction: str, label_smoothing: float, z_loss: float,
                    softcap: float, chunk_size: int, num_threads: int) -> Any:
    t = target.detach().numpy()
    return _linear._Problem(
        input.detach().numpy(), linear_weight.detach().numpy(), t,
        None if linear_bias is None else linear_bias.detach().numpy(),
        None if weight is None else weight.detach().numpy(), reduction, ignore_index,
        label_smoothing, z_loss, softcap or None, chunk_size or None,
        num_threads or torch.get_num_threads(), target_name="target")


@torch.library.custom_op("cysoftmax::linear_cross_entropy", mutates_args=(),
                         device_types="cpu")
def _linear_op(input: Tensor, linear_weight: Tensor, target: Tensor,
               linear_bias: Optional[Tensor], weight: Optional[Tensor], ignore_index: int,
               reduction: str, label_smoothing: float, z_loss: float, softcap: float,
               chunk_size: int, num_threads: int, with_grads: bool
               ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fused linear + cross-entropy of ``(M, D)`` inputs and ``(V, D)`` weights (see
    :func:`cysoftmax.linear_softmax_cross_entropy`): the loss and, when `with_grads`,
    the gradients of input, weight and bias (empty tensors otherwise).
    ``softcap=0``, ``chunk_size=0``, ``num_threads=0``: the defaults."""
    p = _linear_problem(input, linear_weight, target, linear_bias, weight, ignore_index,
                        reduction, label_smoothing, z_loss, softcap, chunk_size, num_threads)
    loss, gx, gW, gb = _linear._fused(p, with_grads)
    loss_t = torch.from_numpy(np.array(loss, dtype=p.dtype))
    if not with_grads:
        empty = input.new_empty((0,))
        return loss_t, empty, empty.clone(), empty.clone()
    return (loss_t, torch.from_numpy(gx), torch.from_numpy(np.ascontiguousarray(gW)),
            torch.from_numpy(gb.astype(p.dtype)))


@_linear_op.register_fake
def _linear_fake(input: Tensor, linear_weight: Tensor, target: Tensor,
                 linear_bias: Optional[Tensor], weight: Optional[Tensor], ignore_index: int,
                 reduction: str, label_smoothing: float, z_loss: float, softcap: float,
                 chunk_size: int, num_threads: int, with_grads: bool
                 ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    loss_shape = (input.shape[0],) if reduction == "none" else ()
    if not with_grads:
        return (input.new_empty(loss_shape), input.new_empty((0,)), input.new_empty((0,)),
                input.new_empty((0,)))
    return (input.new_empty(loss_shape), input.new_empty(input.shape),
            linear_weight.new_empty(linear_weight.shape),
            linear_weight.new_empty((linear_weight.shape[0],)))


@torch.library.custom_op("cysoftmax::linear_cross_entropy_backward", mutates_args=(),
                         device_types="cpu")
def _linear_backward_op(grad_loss: Tensor, input: Tensor, linear_weight: Tensor,
                        target: Tensor, linear_bias: Optional[Tensor],
                        weight: Optional[Tensor], ignore_index: int, reduction: str,
                        label_smoothing: float, z_loss: float, softcap: float,
                        chunk_size: int, num_threads: int) -> Tuple[Tensor, Tensor, Tensor]:
    """The gradients for ``reduction="none"``: the fused pass again, each row's gradient
    scaled by its `grad_loss` (which the forward pass could not know)."""
    p = _linear_problem(input, linear_weight, target, linear_bias, weight, ignore_index,
                        reduction, label_smoothing, z_loss, softcap, chunk_size, num_threads)
    scale = grad_loss.detach().reshape(-1).to(torch.float64).numpy()
    _, gx, gW, gb = _linear._fused(p, True, row_scale=scale)
    return (torch.from_numpy(gx), torch.from_numpy(np.ascontiguousarray(gW)),
            torch.from_numpy(gb.astype(p.dtype)))


@_linear_backward_op.register_fake
def _linear_backward_fake(grad_loss: Tensor, input: Tensor, linear_weight: Tensor,
                          target: Tensor, linear_bias: Optional[Tensor],
                          weight: Optional[Tensor], ignore_index: int, reduction: str,
                          label_smoothing: float, z_loss: float, softcap: float,
                          chunk_size: int, num_threads: int
                          ) -> Tuple[Tensor, Tensor, Tensor]:
    return (input.new_empty(input.shape), linear_weight.new_empty(linear_weight.shape),
            linear_weight.new_empty((linear_weight.shape[0],)))


def _linear_setup_context(ctx: Any, inputs: Tuple[Any, ...], output: Tuple[Tensor, ...]
                          ) -> None:
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)
    ctx.has_bias = inputs[3] is not None
    ctx.options = inputs[5:12]
    if inputs[6] == "none":  # recomputed in the backward pass with the rows' grad_loss
        ctx.save_for_backward(*inputs[:5])
    else:
        ctx.save_for_backward(*output[1:])


def _linear_backward(ctx: Any, grad_loss: Optional[Tensor], *_: Any
                     ) -> Tuple[Optional[Tensor], ...]:
    if grad_loss is None:
        return (None,) * 13
    if ctx.options[1] == "none":
        gx, gW, gb = _linear_backward_op(grad_loss, *ctx.saved_tensors, *ctx.options)
    else:
        unit = _unit(grad_loss)
        gx, gW, gb = (g if unit else _scale_rows_op(g, grad_loss) for g in ctx.saved_tensors)
    return (gx if ctx.needs_input_grad[0] else None,
            gW if ctx.needs_input_grad[1] else None, None,
            gb if ctx.has_bias and ctx.needs_input_grad[3] else None) + (None,) * 9


_linear_op.register_autograd(_linear_backward, setup_context=_linear_setup_context)


def _check_legacy(size_average: Any, reduce: Any) -> None:
    if size_average is not None or reduce is not None:
        raise ValueError(
            "cysoftmax.torch does not support the deprecated size_average and reduce "
            "arguments; pass reduction='mean', 'sum' or 'none' instead")


def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                  size_average: None = None, ignore_index: int = -100, reduce: None = None,
                  reduction: str = "mean", label_smoothing: float = 0.0, *,
                  z_loss: float = 0.0, softcap: Optional[float] = None,
                  num_threads: Optional[int] = None) -> Tensor:
    """Cross-entropy loss of scores and class-index targets, as ``F.cross_entropy``.

    Same signature and results as ``torch.nn.functional.cross_entropy`` with class-index
    targets, differentiable (to any order) with respect to `input`, computed by
    cysoftmax's fused CPU kernel (loss and gradient in one pass).

    Parameters
    ----------
    input : Tensor, shape (C,), (N, C) or (N, C, d1, ..., dk)
        Unnormalized scores; the class axis is the second one (the only one for ``(C,)``).
        float32 or float64 on the CPU use the kernel directly; float16 and bfloat16 are
        computed in float32; other devices use ``torch.nn.functional.cross_entropy``.
    target : Tensor of integers, shape (), (N) or (N, d1, ..., dk); or of floats, the shape
        and dtype of `input`
        Class index of each sample, in ``[0, C)`` or equal to `ignore_index`; or class
        probabilities (as ``F.cross_entropy``; entries must be finite and >= 0).
    weight : Tensor, shape (C,), optional
        Class weights (not differentiable; one requiring a gradient is an error).
    size_average, reduce : None
        PyTorch's deprecated arguments; anything but None raises a ``ValueError``.
    ignore_index : int, default -100
        Samples with this target add no loss and get a zero gradient.
    z_loss : float >= 0, default 0.0
        Adds ``z_loss * logsumexp(input)**2`` per counted sample (see
        :func:`cysoftmax.softmax_cross_entropy`).
    softcap : float > 0, optional
        Scores become ``softcap * tanh(input / softcap)`` before the softmax.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides by the summed weight of the non-ignored targets; ``"none"``
        returns the loss of each sample, shaped as `target`.
    label_smoothing : float in [0, 1], default 0.0
        Mixes the one-hot target with the uniform distribution.
    num_threads : int, optional
        Threads of the kernel; None uses ``torch.get_num_threads()``.

    Returns
    -------
    Tensor
        A scalar, or the per-sample losses for ``reduction="none"``; in the dtype of
        `input`.

    Raises
    ------
    ValueError
        Bad shapes, an unknown reduction, the deprecated arguments, and the kernel's
        checks (`label_smoothing` outside [0, 1], a weight of the wrong length).
    IndexError
        A target outside ``[0, C)`` that is not `ignore_index`; the message gives its
        index in `target`'s own shape, e.g. ``target[1, 2, 3] = 7``.
    RuntimeError
        A `weight` that requires a gradient (as ``F.cross_entropy``), and (from
        ``F.cross_entropy``) `target` or `weight` on another device than `input`.

    Examples
    --------
    >>> import torch
    >>> from cysoftmax.torch import cross_entropy
    >>> x = torch.tensor([[2.0, 1.0, 0.1]], requires_grad=True)
    >>> loss = cross_entropy(x, torch.tensor([0]))
    >>> loss.backward()
    >>> round(loss.item(), 5), x.grad
    (0.41703, tensor([[-0.3410,  0.2424,  0.0986]]))
    """
    _check_legacy(size_average, reduce)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    extras = z_loss != 0.0 or softcap is not None
    probabilities = target.is_floating_point()
    if (input.device.type != "cpu" or target.device.type != "cpu"
            or (weight is not None and weight.device.type != "cpu")
            or (probabilities and target.dtype != input.dtype)
            or input.dtype not in (torch.float32, torch.float64) + _HALF):
        # other devices, and tensors on different devices (PyTorch raises its error)
        if extras:
            raise ValueError("z_loss and softcap need CPU float tensors (and probability "
                             "targets of the input's dtype)")
        return F.cross_entropy(input, target, weight=weight, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=label_smoothing)
    if input.dim() == 0:
        raise ValueError("input must have at least one dimension (the classes)")
    unbatched = input.dim() == 1
    expected = (() if unbatched else (input.shape[0],) + tuple(input.shape[2:]))
    if probabilities or extras:
        return _cross_entropy_options(input, target, weight, ignore_index, reduction,
                                      label_smoothing, z_loss, softcap, num_threads,
                                      unbatched, expected)
    if tuple(target.shape) != expected:
        raise ValueError(f"target has shape {tuple(target.shape)}, expected {expected} "
                         f"for input of shape {tuple(input.shape)}")
    if unbatched:
        input = input.unsqueeze(0)
    if weight is not None and weight.requires_grad and torch.is_grad_enabled():
        raise RuntimeError("cysoftmax.torch.cross_entropy is not differentiable with respect "
                           "to weight (as PyTorch's nll_loss): pass weight.detach()")
    dtype = input.dtype
    if dtype in _HALF:
        input = input.float()
    if weight is not None:
        weight = weight.to(input.dtype)
    C = input.shape[1]
    scores = input.movedim(1, -1).reshape(-1, C) if input.dim() > 2 else input.contiguous()
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be at least 1, got {num_threads}")
    loss: Tensor
    # the target in its own shape: an error for a target out of range gives its index there
    loss, _ = _cross_entropy_op(scores, target, weight, ignore_index, reduction,
                                float(label_smoothing), num_threads or 0)
    if reduction == "none":
        loss = loss.reshape(expected)
    return loss.to(dtype)


def _cross_entropy_options(input: Tensor, target: Tensor, weight: Optional[Tensor],
                           ignore_index: int, reduction: str, label_smoothing: float,
                           z_loss: float, softcap: Optional[float], num_threads: Optional[int],
                           unbatched: bool, expected: Tuple[int, ...]) -> Tensor:
    """:func:`cross_entropy` with probability targets, z-loss or soft-capping."""
    probabilities = target.is_floating_point()
    if probabilities and tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"probability targets must have the shape of input "
                         f"{tuple(input.shape)}, got {tuple(target.shape)}")
    if not probabilities and tuple(target.shape) != expected:
        raise ValueError(f"target has shape {tuple(target.shape)}, expected {expected} "
                         f"for input of shape {tuple(input.shape)}")
    if weight is not None and weight.requires_grad and torch.is_grad_enabled():
        raise RuntimeError("cysoftmax.torch.cross_entropy is not differentiable with respect "
                           "to weight (as PyTorch's nll_loss): pass weight.detach()")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be at least 1, got {num_threads}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap must be a finite number > 0, got {softcap!r}")
    dtype = input.dtype
    if unbatched:
        input, target = input.unsqueeze(0), target.unsqueeze(0) if probabilities else target
    if dtype in _HALF:
        input = input.float()
        target = target.float() if probabilities else target
    if weight is not None:
        weight = weight.to(input.dtype)
    C = input.shape[1]

    def rows(t: Tensor) -> Tensor:
        return t.movedim(1, -1).reshape(-1, C) if t.dim() > 2 else t.contiguous()

    t = rows(target) if probabilities else target.contiguous()
    loss, _ = _options_op(rows(input), t, weight, ignore_index, reduction,
                          float(label_smoothing), float(z_loss), float(softcap or 0.0),
                          num_threads or 0)
    if reduction == "none":
        loss = loss.reshape(expected)
    return loss.to(dtype)


class CrossEntropyLoss(torch.nn.Module):
    """Cross-entropy loss module, as ``torch.nn.CrossEntropyLoss``, on cysoftmax's kernel.

    Parameters
    ----------
    weight : Tensor, shape (C,), optional
        Class weights, registered as a buffer (moved with the module).
    size_average, reduce : None
        PyTorch's deprecated arguments; anything but None raises a ``ValueError``.
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"
    label_smoothing : float in [0, 1], default 0.0
    num_threads : int, optional
        Threads of the kernel; None uses ``torch.get_num_threads()`` at each call.

    See :func:`cross_entropy` for the semantics, devices and dtypes.

    Examples
    --------
    >>> import torch
    >>> from cysoftmax.torch import CrossEntropyLoss
    >>> CrossEntropyLoss(reduction="sum")(torch.zeros(2, 4), torch.tensor([0, 3]))
    tensor(2.7726)
    """

    weight: Optional[Tensor]

    def __init__(self, weight: Optional[Tensor] = None, size_average: None = None,
                 ignore_index: int = -100, reduce: None = None, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, num_threads: Optional[int] = None) -> None:
        super().__init__()
        _check_legacy(size_average, reduce)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.num_threads = num_threads

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """The loss of `input` (class axis second) against `target` (class indices)."""
        return cross_entropy(input, target, weight=self.weight,
                             ignore_index=self.ignore_index, reduction=self.reduction,
                             label_smoothing=self.label_smoothing,
                             num_threads=self.num_threads)

    def extra_repr(self) -> str:
        return (f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
                f"label_smoothing={self.label_smoothing}")


def linear_cross_entropy(input: Tensor, linear_weight: Tensor, target: Tensor, *,
                         linear_bias: Optional[Tensor] = None,
                         weight: Optional[Tensor] = None, reduction: str = "mean",
                         ignore_index: Optional[int] = None, label_smoothing: float = 0.0,
                         options: Any = None, z_loss: float = 0.0,
                         softcap: Optional[float] = None, chunk_size: Optional[int] = None,
                         num_threads: Optional[int] = None) -> Tensor:
    """Cross-entropy of linearly transformed inputs, as ``F.linear_cross_entropy``.

    On CPU float32/float64 tensors of one dtype with a 2-D `linear_weight`: the fused,
    chunked pass of :func:`cysoftmax.linear_softmax_cross_entropy` (the gradients are
    formed in the forward pass and scaled by the incoming gradient; for ``"none"`` the
    backward pass runs the fused pass again with each row's incoming gradient).
    Otherwise (other devices or dtypes, K-dimensional losses) ``logits = F.linear(input,
    linear_weight, linear_bias)`` and then :func:`cross_entropy` of the logits.

    Parameters
    ----------
    input : Tensor, shape (in_features,) or (N, in_features)
    linear_weight : Tensor, shape (C, d1, ..., dk, in_features)
        ``k > 0`` gives a K-dimensional loss (logits of shape ``(N, C, d1, ..., dk)``),
        which needs a batched `input`.
    target : Tensor
        Class indices, shape ``()``, ``(N,)`` or ``(N, d1, ..., dk)``; or class
        probabilities of the logits' shape (handed to ``F.cross_entropy``).
    linear_bias : Tensor, shape (C, d1, ..., dk), optional
    weight : Tensor, shape (C,), optional
        Class weights.
    reduction : {"mean", "sum", "none"}, default "mean"
    ignore_index : int, optional
        None means -100 for class-index targets; must be None for probabilities.
    label_smoothing : float in [0, 1], default 0.0
    options : LinearCrossEntropyOptions, optional
        PyTorch's chunking options; not used here (a ``UserWarning`` says so).
    z_loss, softcap : optional
        As in :func:`cross_entropy` (fused path only).
    chunk_size : int, optional
        Rows per chunk of the fused path (default: logits chunks under 16 MiB).
    num_threads : int, optional
        Threads of the kernel; None uses ``torch.get_num_threads()``.

    Returns
    -------
    Tensor
        As :func:`cross_entropy`.

    Raises
    ------
    RuntimeError
        Shapes that do not fit together (PyTorch's checks and messages), or
        `ignore_index` given with probability targets.

    Examples
    --------
    >>> import torch
    >>> from cysoftmax.torch import linear_cross_entropy
    >>> x, w = torch.ones(2, 3), torch.zeros(4, 3)
    >>> linear_cross_entropy(x, w, torch.tensor([0, 3]))  # uniform logits: log 4
    tensor(1.3863)
    """
    if input.dim() < 1 or input.dim() > 2:
        raise RuntimeError(f"expected input with dimensionality 1 or 2, got {input.dim()}")
    if linear_weight.dim() < 2:
        raise RuntimeError("expected linear_weight with dimensionality at least 2, got "
                           f"{linear_weight.dim()}")
    in_features = input.shape[-1]
    if in_features != linear_weight.shape[-1]:
        raise RuntimeError("expected equal input and linear_weight last dimensions "
                           f"(in_features), got {in_features} and {linear_weight.shape[-1]}")
    num_classes = linear_weight.shape[0]
    out_features = tuple(linear_weight.shape[1:-1])
    if linear_bias is not None and tuple(linear_bias.shape) != (num_classes, *out_features):
        raise RuntimeError(f"expected linear_bias shape {(num_classes, *out_features)}, "
                           f"got {tuple(linear_bias.shape)}")
    if out_features and input.dim() == 1:
        raise RuntimeError(f"K-dimensional loss defined by linear_weight shape "
                           f"{tuple(linear_weight.shape)} requires batched input, "
                           f"(N, {in_features}), got {tuple(input.shape)}")
    logits_shape = (*input.shape[:-1], num_classes, *out_features)
    if tuple(target.shape) == logits_shape and ignore_index is not None:
        raise RuntimeError("ignore_index cannot be specified when target contains "
                           "probabilities")
    if options is not None:
        warnings.warn("cysoftmax.torch.linear_cross_entropy: options (PyTorch's chunking) "
                      "ignored; chunk_size sets cysoftmax's", stacklevel=2)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    tensors = [t for t in (input, linear_weight, target, linear_bias, weight) if t is not None]
    fused = (not out_features and input.dtype in (torch.float32, torch.float64)
             and all(t.device.type == "cpu" for t in tensors)
             and linear_weight.dtype == input.dtype
             and (linear_bias is None or linear_bias.dtype == input.dtype)
             and (not target.is_floating_point() or target.dtype == input.dtype))
    if fused:
        if weight is not None and weight.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("cysoftmax.torch.linear_cross_entropy is not differentiable "
                               "with respect to weight: pass weight.detach()")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads}")
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        t = target.unsqueeze(0) if unbatched else target
        needs_grad = torch.is_grad_enabled() and any(
            v is not None and v.requires_grad for v in (input, linear_weight, linear_bias))
        loss = _linear_op(x.contiguous(), linear_weight, t.contiguous(), linear_bias,
                          None if weight is None else weight.to(input.dtype),
                          -100 if ignore_index is None else ignore_index, reduction,
                          float(label_smoothing), float(z_loss), float(softcap or 0.0),
                          int(chunk_size or 0), num_threads or 0,
                          needs_grad and reduction != "none")[0]
        return loss.reshape(()) if unbatched and reduction == "none" else loss
    if z_loss != 0.0 or softcap is not None or chunk_size is not None:
        raise ValueError("z_loss, softcap and chunk_size need the fused path: CPU float32 "
                         "or float64 tensors of one dtype and a 2-D linear_weight")
    if out_features:
        flat = math.prod(out_features) * num_classes
        linear_weight = linear_weight.reshape(flat, in_features)
        if linear_bias is not None:
            linear_bias = linear_bias.reshape(flat)
    logits = F.linear(input, linear_weight, linear_bias).reshape(logits_shape)
    return cross_entropy(logits, target, weight=weight,
                         ignore_index=-100 if ignore_index is None else ignore_index,
                         reduction=reduction, label_smoothing=label_smoothing,
                         num_threads=num_threads)


class LinearCrossEntropyLoss(torch.nn.Module):
    """A linear layer followed by the cross-entropy loss, as ``torch.nn.LinearCrossEntropyLoss``.

    Same constructor, parameters (``linear.weight``, ``linear.bias``, stored flat) and
    buffer (``weight``) as PyTorch's module, so their state dicts are interchangeable;
    the loss is :func:`linear_cross_entropy` (fused on CPU float32/float64 parameters).

    Parameters
    ----------
    in_features : int
    num_classes : int
    out_features : tuple of int, default ()
        ``(d1, ..., dk)`` for a K-dimensional loss.
    bias : bool, default False
    device, dtype : optional
        Of the linear layer's parameters.
    reduction : {"mean", "sum", "none"}, default "mean"
    weight : Tensor, shape (num_classes,), optional
    ignore_index : int, optional
    label_smoothing : float in [0, 1], default 0.0
    options : LinearCrossEntropyOptions, optional
        Not used (a warning says so at each call).
    num_threads : int, optional
        Threads of the kernel; None uses ``torch.get_num_threads()``.

    Examples
    --------
    >>> import torch
    >>> from cysoftmax.torch import LinearCrossEntropyLoss
    >>> loss_fn = LinearCrossEntropyLoss(3, 4, bias=True)
    >>> loss_fn(torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])).shape
    torch.Size([])
    """

    weight: Optional[Tensor]

    def __init__(self, in_features: int, num_classes: int, *,
                 out_features: Tuple[int, ...] = (), bias: bool = False, device: Any = None,
                 dtype: Any = None, reduction: str = "mean", weight: Optional[Tensor] = None,
                 ignore_index: Optional[int] = None, label_smoothing: float = 0.0,
                 options: Any = None, num_threads: Optional[int] = None) -> None:
        super().__init__()
        if weight is not None and tuple(weight.shape) != (num_classes,):
            raise RuntimeError(f"expected weight shape to be {(num_classes,)}, "
                               f"got {tuple(weight.shape)}")
        if label_smoothing < 0 or label_smoothing > 1.0:
            raise RuntimeError("expected label_smoothing to be in range [0, 1], got "
                               f"{label_smoothing}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.register_buffer("weight", weight)
        self.reduction = reduction
        self.num_classes = num_classes
        self.out_features = tuple(out_features)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.linear = torch.nn.Linear(in_features, math.prod(self.out_features) * num_classes,
                                      bias=bias, device=device, dtype=dtype)
        self.options = options
        self.num_threads = num_threads

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """The loss of ``linear(input)`` against `target`."""
        linear_weight = self.linear.weight.reshape(
            (self.num_classes, *self.out_features, self.linear.in_features))
        bias = self.linear.bias
        linear_bias = (None if bias is None
                       else bias.reshape((self.num_classes, *self.out_features)))
        return linear_cross_entropy(input, linear_weight, target, linear_bias=linear_bias,
                                    weight=self.weight, reduction=self.reduction,
                                    ignore_index=self.ignore_index,
                                    label_smoothing=self.label_smoothing,
                                    options=self.options, num_threads=self.num_threads)

    def extra_repr(self) -> str:
        return (f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
                f"out_features={self.out_features}, bias={self.linear.bias is not None}, "
                f"reduction={self.reduction!r}, ignore_index={self.ignore_index}, "
                f"label_smoothing={self.label_smoothing}")
