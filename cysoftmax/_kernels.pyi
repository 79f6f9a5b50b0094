"""Type stubs of the compiled module cysoftmax._kernels (see _kernels.pyx)."""

from typing import Any, List, Optional, Tuple, Union

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "targets", "supported_targets", "current_target", "default_target", "set_target",
    "openmp_enabled", "default_num_threads", "max_num_threads", "forked_child",
    "softmax_cross_entropy", "softmax",
]

_Loss = Union[np.floating[Any], NDArray[np.floating[Any]]]

def targets() -> List[str]: ...
def supported_targets() -> List[str]: ...
def current_target() -> str: ...
def default_target() -> str: ...
def set_target(name: str) -> None: ...
def openmp_enabled() -> bool: ...
def default_num_threads() -> int: ...
def max_num_threads() -> int: ...
def forked_child() -> bool: ...
def softmax_cross_entropy(
    scores: Any,
    labels: Any,
    reduction: Any,
    weight: Any,
    ignore_index: Any,
    label_smoothing: Any,
    z_loss: Any,
    softcap: Any,
    return_z_loss: Any,
    return_lse: Any,
    out: Any,
    num_threads: Any,
    with_grad: bool,
    wide: bool = ...,
) -> Tuple[_Loss, Optional[NDArray[np.floating[Any]]], Optional[_Loss],
           Optional[NDArray[np.floating[Any]]]]: ...
def softmax(scores: Any, out: Any, num_threads: Any, log_space: bool) -> NDArray[np.floating[Any]]: ...
