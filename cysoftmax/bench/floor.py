"""The floors: the least memory traffic of an operation.

loss+grad has to read the scores and write a gradient of the same size at least
once; its "copy floor" is ``np.copyto(dst, scores)`` into a preallocated array
(:func:`~cysoftmax.bench.inputs.empty_apart`). The loss has to read the scores
once; its "read floor" is ``scores.sum()``.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .inputs import empty_apart
from .timing import Loop, loop_of

FLOOR_NAME = {"loss+grad": "copy floor", "loss": "read floor"}
FLOOR_NOTE = (
    "floor: np.copyto(dst, scores) for loss+grad, scores.sum() for the loss; dst, like "
    "cysoftmax's and scikit-learn's gradient buffers, lies half a page (2048 bytes modulo "
    "4 KiB) from the scores (on AMD Zen 3 a copy of ~160 KB into a buffer 1-31 bytes past "
    "its source modulo 4 KiB runs ~12x slower)")


def floor_loop(kind: str, scores: np.ndarray) -> Loop:
    """The floor's loop for ``kind``."""
    if kind == "loss+grad":
        return loop_of(partial(np.copyto, empty_apart(scores), scores))
    return loop_of(scores.sum)
