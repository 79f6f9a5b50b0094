"""PyTorch front end: a drop-in ``cross_entropy`` with autograd, on the CPU kernels.

``cysoftmax.cross_entropy`` works on NumPy arrays with the class axis last; this module
wraps the same compiled kernel as a PyTorch operator (``torch.library.custom_op``) with
the signature and semantics of ``torch.nn.functional.cross_entropy`` for class-index
targets, the class axis second as in PyTorch.  ``import cysoftmax`` does not import
torch; ``import cysoftmax.torch`` does.

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
  instead, with the same arguments.
- float16 and bfloat16 CPU input: computed in float32 (the input, and `weight`, are cast
  to float32); the loss is cast back to the input's dtype, and so is the gradient (by
  the autograd of the cast).  The result is thus at least as accurate as PyTorch's own
  half-precision computation, but not bitwise equal to it.
- Other input dtypes (integers, complex): ``torch.nn.functional.cross_entropy`` is
  called, which raises its own error.
- Floating-point targets (class probabilities) are not class indices:
  ``torch.nn.functional.cross_entropy`` is called.  Class-index targets may be of any
  integer dtype (PyTorch itself requires int64).
- `weight` gets no gradient (as with PyTorch's ``nll_loss``).
- Second (and higher) derivatives with respect to `input` are supported: the backward
  operator ``cysoftmax::cross_entropy_backward`` has its own autograd formula, the
  Hessian ``s_i (diag P - P P^T)`` of each row applied to the incoming gradient (``P``
  the row's softmax, ``s_i`` its weight and smoothing factor over the mean's
  denominator), written with torch operators.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._api import softmax_cross_entropy

__all__ = ["cross_entropy", "CrossEntropyLoss"]

_REDUCTIONS = ("mean", "sum", "none")
_HALF = (torch.float16, torch.bfloat16)


@torch.library.custom_op("cysoftmax::cross_entropy", mutates_args=(), device_types="cpu")
def _cross_entropy_op(input: Tensor, target: Tensor, weight: Optional[Tensor],
                      ignore_index: int, reduction: str, label_smoothing: float,
                      num_threads: int) -> Tuple[Tensor, Tensor]:
    """Loss and gradient of ``(M, C)`` scores (class axis last) with targets ``(M,)``.

    ``num_threads=0`` uses ``torch.get_num_threads()``, read when the kernel runs (also
    inside a compiled graph, where the wrapper cannot call it).
    """
    scores = input.detach().numpy()  # a view: no copy
    labels = target.detach().numpy()
    w = None if weight is None else weight.detach().numpy()
    grad = torch.empty(tuple(input.shape), dtype=input.dtype)  # C-contiguous
    loss, _ = softmax_cross_entropy(scores, labels, reduction=reduction, weight=w,
                                    ignore_index=ignore_index,
                                    label_smoothing=label_smoothing, out=grad.numpy(),
                                    num_threads=num_threads or torch.get_num_threads())
    return torch.from_numpy(np.array(loss, dtype=scores.dtype)), grad


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
    ctx.save_for_backward(input, target, weight, grad)
    ctx.options = (ignore_index, reduction, label_smoothing)


def _cross_entropy_backward(ctx: Any, grad_loss: Tensor,
                            _grad_grad: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
    input, target, weight, grad = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = _scale_gradient_op(grad, grad_loss, input, target, weight, *ctx.options)
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


def _check_legacy(size_average: Any, reduce: Any) -> None:
    if size_average is not None or reduce is not None:
        raise ValueError(
            "cysoftmax.torch does not support the deprecated size_average and reduce "
            "arguments; pass reduction='mean', 'sum' or 'none' instead")


def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                  size_average: None = None, ignore_index: int = -100, reduce: None = None,
                  reduction: str = "mean", label_smoothing: float = 0.0, *,
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
    target : Tensor of integers, shape (), (N) or (N, d1, ..., dk)
        Class index of each sample, in ``[0, C)`` or equal to `ignore_index`.  A floating
        target (class probabilities) is handed to ``torch.nn.functional.cross_entropy``.
    weight : Tensor, shape (C,), optional
        Class weights (no gradient is computed for them).
    size_average, reduce : None
        PyTorch's deprecated arguments; anything but None raises a ``ValueError``.
    ignore_index : int, default -100
        Samples with this target add no loss and get a zero gradient.
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
        A target outside ``[0, C)`` that is not `ignore_index`.

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
    if (input.device.type != "cpu" or target.is_floating_point()
            or input.dtype not in (torch.float32, torch.float64) + _HALF):
        return F.cross_entropy(input, target, weight=weight, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=label_smoothing)
    if input.dim() == 0:
        raise ValueError("input must have at least one dimension (the classes)")
    unbatched = input.dim() == 1
    if unbatched:
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    expected = (input.shape[0],) + tuple(input.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"target has shape {tuple(target.shape)}, expected {expected} "
                         f"for input of shape {tuple(input.shape)}")
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
    loss, _ = _cross_entropy_op(scores, target.reshape(-1), weight, ignore_index, reduction,
                                float(label_smoothing), num_threads or 0)
    if reduction == "none":
        loss = loss.reshape(() if unbatched else expected)
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
