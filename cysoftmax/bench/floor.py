"""The floors: the least memory traffic of an operation, timed on the row's threads.

loss+grad has to read the scores and write a gradient of the same size at least
once; its "copy floor" is ``np.copyto(dst, scores)`` into a preallocated array
(:func:`~cysoftmax.bench.inputs.empty_apart`). The loss has to read the scores
once; its "read floor" is ``scores.sum()``.

A floor is compared with cysoftmax on the same number of threads ``t``. On one
thread it is that one call. With ``t > 1`` the flat array is also split into
``t`` contiguous chunks of about equal size, the calling thread copies (sums)
the first and ``t - 1`` threads of a ``ThreadPoolExecutor`` the others (NumPy
releases the GIL while it copies or sums), and a call ends when every chunk is
done. Handing chunks to threads costs microseconds, more than the whole copy
at small shapes, so both are timed and the floor is the faster: the least time
in which at most ``t`` threads move those bytes with NumPy. Its timing says
which (``threads``) and keeps both medians (``median_ns_by_threads``).
"""

from __future__ import annotations

from concurrent.futures import Executor
from functools import partial
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .inputs import empty_apart
from .timing import Loop, Timing, loop_of

FLOOR_NAME = {"loss+grad": "copy floor", "loss": "read floor"}
FLOOR = "floor"
SPLIT = "floor split"  # the split floor's name while it is timed
FLOOR_KEYS = (FLOOR, SPLIT)
FLOOR_NOTE = (
    "floor: np.copyto(dst, scores) for loss+grad, scores.sum() for the loss; dst, like "
    "cysoftmax's and scikit-learn's gradient buffers, lies half a page (2048 bytes modulo "
    "4 KiB) from the scores (on AMD Zen 3 a copy of ~160 KB into a buffer 1-31 bytes past "
    "its source modulo 4 KiB runs ~12x slower); with t > 1 threads, the faster of that on "
    "one thread and the array split into t chunks copied (summed) at once on t threads "
    "(the calling thread and a ThreadPoolExecutor's; NumPy releases the GIL there)")


def _chunk_calls(kind: str, scores: np.ndarray, chunks: int) -> List[Callable[[], Any]]:
    """One call per chunk of the flat scores: copy it into its part of a buffer placed
    like cysoftmax's gradient (loss+grad), or sum it (loss)."""
    src = np.array_split(scores.reshape(-1), chunks)
    if kind == "loss":
        return [part.sum for part in src]
    dst = np.array_split(empty_apart(scores).reshape(-1), chunks)
    return [partial(np.copyto, d, s) for d, s in zip(dst, src)]


def _split_call(calls: List[Callable[[], Any]], pool: Executor) -> Callable[[], None]:
    """All of ``calls`` at once: the first here, the others on ``pool``'s threads."""
    first, rest = calls[0], calls[1:]
    submit = pool.submit

    def call() -> None:
        futures = [submit(c) for c in rest]
        first()
        for f in futures:
            f.result()

    return call


def floor_loops(kind: str, scores: np.ndarray, threads: int = 1,
                pool: Optional[Executor] = None) -> Dict[str, Loop]:
    """The floor's loops for a row on ``threads`` threads (the split one needs ``pool``,
    with at least ``threads - 1`` workers)."""
    loops = {FLOOR: loop_of(_chunk_calls(kind, scores, 1)[0])}
    if threads > 1 and pool is not None:
        loops[SPLIT] = loop_of(_split_call(_chunk_calls(kind, scores, threads), pool))
    return loops


def keep_faster_floor(timings: Dict[str, Timing], threads: int) -> None:
    """Replace the floor's timings by the faster of the two, under ``"floor"``."""
    candidates = {1: timings.pop(FLOOR)}
    if SPLIT in timings:
        candidates[threads] = timings.pop(SPLIT)
    best = min(candidates, key=lambda t: candidates[t]["median_ns"])
    timings[FLOOR] = dict(candidates[best], threads=best, median_ns_by_threads={
        str(t): c["median_ns"] for t, c in candidates.items()})
