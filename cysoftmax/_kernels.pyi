"""Type stubs of the compiled module cysoftmax._kernels (see _kernels.pyx)."""

from typing import Any, List, Optional, Tuple, Union

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "REDUCTION_NONE", "REDUCTION_MEAN", "REDUCTION_SUM", "LabelOutOfRange",
    "targets", "supported_targets", "current_target", "default_target", "set_target",
    "openmp_enabled", "default_num_threads", "max_num_threads", "forked_child",
    "finish_loss",
    "sce_float32", "sce_float64", "sce_fast", "softmax_float32", "softmax_float64",
]

REDUCTION_NONE: int
REDUCTION_MEAN: int
REDUCTION_SUM: int

class LabelOutOfRange(IndexError):
    position: int
    value: int
    def __init__(self, position: int, value: int) -> None: ...

def targets() -> List[str]: ...
def supported_targets() -> List[str]: ...
def current_target() -> str: ...
def default_target() -> str: ...
def set_target(name: str) -> None: ...
def openmp_enabled() -> bool: ...
def default_num_threads() -> int: ...
def max_num_threads() -> int: ...
def forked_child() -> bool: ...
def finish_loss(
    total: float,
    denominator: float,
    reduction: int,
    row_loss: Optional[NDArray[np.float64]],
    to_float32: bool,
) -> Union[np.floating[Any], NDArray[np.floating[Any]]]: ...
def sce_float32(
    scores: NDArray[np.float32],
    labels: NDArray[np.int64],
    weight: Optional[NDArray[np.float64]],
    ignore_index: int,
    smoothing: float,
    reduction: int,
    grad: Optional[NDArray[np.float32]],
    num_threads: int,
) -> Tuple[float, float, Optional[NDArray[np.float64]]]: ...
def sce_float64(
    scores: NDArray[np.float64],
    labels: NDArray[np.int64],
    weight: Optional[NDArray[np.float64]],
    ignore_index: int,
    smoothing: float,
    reduction: int,
    grad: Optional[NDArray[np.float64]],
    num_threads: int,
) -> Tuple[float, float, Optional[NDArray[np.float64]]]: ...
def sce_fast(
    scores: Any,
    labels: Any,
    reduction: Any,
    weight: Any,
    ignore_index: Any,
    label_smoothing: Any,
    out: Any,
    num_threads: Any,
    with_grad: bool,
) -> Optional[Tuple[Union[np.floating[Any], NDArray[np.floating[Any]]], Optional[NDArray[np.floating[Any]]]]]: ...
def softmax_float32(
    scores: NDArray[np.float32], out: NDArray[np.float32], log_space: bool, num_threads: int
) -> None: ...
def softmax_float64(
    scores: NDArray[np.float64], out: NDArray[np.float64], log_space: bool, num_threads: int
) -> None: ...
