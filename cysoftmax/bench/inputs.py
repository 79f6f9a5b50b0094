"""What the benchmark times: shapes, dtypes, operations, thread settings and the arrays."""

from __future__ import annotations

import argparse
from typing import List, Optional, Tuple

import numpy as np

from cysoftmax import _kernels

DEFAULT_SHAPES: List[Tuple[int, int]] = [(300, 3), (4096, 10), (4096, 1000), (512, 32000)]
DTYPES = ("float32", "float64")
KINDS = ("loss+grad", "loss")
LARGE = 4_000_000  # elements from which a shape counts as large (memory-bound)
SEED = 20261201


def parse_shapes(text: str) -> List[Tuple[int, int]]:
    """``"300x3,4096X1000"`` -> ``[(300, 3), (4096, 1000)]`` (an argparse type)."""
    shapes = []
    for part in text.split(","):
        try:
            n, c = (int(x) for x in part.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad shape {part!r}: write NxC, e.g. 300x3")
        if n < 1 or c < 1:
            raise argparse.ArgumentTypeError(f"bad shape {part!r}: N and C must be >= 1")
        shapes.append((n, c))
    return shapes


def thread_value(setting: str) -> Optional[int]:
    """The ``num_threads`` argument of a thread setting ("all" -> None)."""
    return None if setting == "all" else int(setting)


def thread_count(setting: str) -> int:
    """How many threads a thread setting runs on."""
    value = thread_value(setting)
    return _kernels.default_num_threads() if value is None else value


def make_inputs(shape: Tuple[int, int], dtype: str) -> Tuple[np.ndarray, np.ndarray]:
    """Scores ~ 2 * N(0, 1) and uniform labels, the same for every implementation."""
    n, c = shape
    rng = np.random.default_rng(SEED)
    scores = (2.0 * rng.standard_normal((n, c))).astype(dtype)
    labels = rng.integers(0, c, size=n, dtype=np.int64)
    return scores, labels


def empty_apart(src: np.ndarray, offset: int = 2048) -> np.ndarray:
    """An uninitialized C-contiguous array like ``src`` starting ``offset`` bytes past
    ``src``'s address modulo 4 KiB.

    Where an output buffer lies relative to its input matters to ``memcpy``: on
    AMD Zen 3, ``np.copyto`` of 160 KB into a buffer 1-31 bytes past the source
    modulo 4 KiB takes ~12x longer (``rep movsb``) than at any other offset. The
    floor's destination, and the gradient buffers of cysoftmax and scikit-learn,
    are all placed half a page from the scores, so they are measured alike and
    away from that case.
    """
    nbytes = src.nbytes
    raw = np.empty(nbytes + 2 * 4096, dtype=np.uint8)
    start = (src.ctypes.data + offset - raw.ctypes.data) % 4096
    out = raw[start:start + nbytes].view(src.dtype).reshape(src.shape)
    out[...] = 0  # touch every page before timing
    return out
