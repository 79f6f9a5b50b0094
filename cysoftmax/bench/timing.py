"""The timing harness: loops of many calls, planned to a time budget, sampled in turn.

Every time is the median over repeated samples; each sample times a
``perf_counter_ns`` loop over many calls, so the harness adds tens of
nanoseconds per call (:func:`harness_overhead_ns` tells how much).
"""

from __future__ import annotations

import gc
import statistics
import time
from functools import partial
from itertools import repeat
from typing import Any, Callable, Dict, List, Optional, Tuple

from cysoftmax import _kernels

# seconds per measurement and samples per measurement, full run / --quick
BUDGET, QUICK_BUDGET = 0.3, 0.02
REPEATS, QUICK_REPEATS = 7, 3
MIN_REPEATS = 3
# pause before each sample of a group: OpenMP workers spin for ~5-8 ms after a parallel
# region, and those of the previous loop (another runtime, maybe) would compete
SETTLE_S = 0.015

Timing = Dict[str, Any]
Loop = Callable[[int], int]


def loop_of(fn: Callable[[], Any]) -> Loop:
    """A loop ``n -> elapsed ns`` of ``n`` calls of the zero-argument ``fn``."""

    def loop(n: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in repeat(None, n):
            fn()
        return time.perf_counter_ns() - t0

    return loop


def _plan(loop: Loop, budget: float, repeats: int) -> Tuple[int, int]:
    """Warm ``loop`` up and choose (calls per sample, samples) for about ``budget`` s.

    The first calls warm up (caches, page faults, JIT) and estimate the cost of
    one call. A call too slow for ``repeats`` samples within the budget gets one
    call per sample and at least ``MIN_REPEATS`` samples.
    """
    loop(1)  # warm-up
    n = 1
    while True:
        elapsed = loop(n)
        if elapsed >= 2_000_000 or n >= 1 << 22:
            break
        n *= 8 if elapsed < 250_000 else 2
    per_call = max(elapsed / n, 1.0)
    number = max(1, int(budget * 1e9 / repeats / per_call))
    if number == 1:
        repeats = max(MIN_REPEATS, min(repeats, int(budget * 1e9 / per_call)))
    return number, repeats


def _plans(loops: Dict[str, Loop], budget: float, repeats: int,
           errors: Optional[Dict[str, str]]) -> Dict[str, Tuple[int, int]]:
    """:func:`_plan` of each loop; a loop that raises is left out, its error recorded in
    ``errors`` (re-raised when ``errors`` is None)."""
    plans: Dict[str, Tuple[int, int]] = {}
    for name, loop in loops.items():
        try:
            plans[name] = _plan(loop, budget, repeats)
        except Exception as exc:  # a peer's failure is reported, not fatal
            if errors is None:
                raise
            errors[name] = f"{type(exc).__name__}: {exc}"
    return plans


def measure_group(loops: Dict[str, Loop], budget: float, repeats: int,
                  errors: Optional[Dict[str, str]] = None) -> Dict[str, Timing]:
    """Median and minimum time per call of each loop, in ns.

    Each loop is warmed up and planned (:func:`_plan`), then the samples are
    taken round-robin -- one sample of each loop in turn -- so that a change of
    load on a shared machine affects all of them alike; before each sample the
    harness sleeps ``SETTLE_S`` so that idle threads of the previous loop have
    stopped spinning. ``cpu_per_wall`` is the
    process's CPU time over the wall time of the samples: about how many cores
    the loop kept busy (threads of other libraries count too). A loop that raises
    while warming up is left out, its error recorded in ``errors``. The garbage
    collector is off while timing.
    """
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        plans = _plans(loops, budget, repeats, errors)
        samples: Dict[str, List[float]] = {name: [] for name in plans}
        cpu = {name: 0 for name in plans}
        for r in range(max((p[1] for p in plans.values()), default=0)):
            for name, (number, reps) in plans.items():
                if r < reps:
                    if len(plans) > 1:
                        time.sleep(SETTLE_S)  # let the previous loop's idle threads stop
                    c0 = time.process_time_ns()
                    samples[name].append(loops[name](number) / number)
                    cpu[name] += time.process_time_ns() - c0
    finally:
        if gc_was_enabled:
            gc.enable()
    return {
        name: {"median_ns": statistics.median(xs), "min_ns": min(xs),
               "repeats": len(xs), "number": plans[name][0],
               "cpu_per_wall": round(cpu[name] / max(1.0, sum(xs) * plans[name][0]), 2)}
        for name, xs in samples.items()
    }


def measure(loop: Loop, budget: float, repeats: int) -> Timing:
    """Median and minimum time per call of one loop (see :func:`measure_group`)."""
    return measure_group({"loop": loop}, budget, repeats)["loop"]


def with_setting(loop: Loop, get: Callable[[], Any], set_: Callable[[Any], Any],
                 value: Any) -> Loop:
    """``loop`` run with a process-wide setting at ``value``, restored afterwards (both
    outside the timing)."""

    def run(n: int) -> int:
        before = get()
        set_(value)
        try:
            return loop(n)
        finally:
            set_(before)

    return run


def on_target(loop: Loop, target: str) -> Loop:
    """``loop`` run with the kernels on SIMD target ``target``."""
    return with_setting(loop, _kernels.current_target, _kernels.set_target, target)


def harness_overhead_ns(budget: float, repeats: int) -> float:
    """Time per call that the harness loop adds around a trivial builtin call."""
    return measure(loop_of(partial(abs, 0)), budget, repeats)["median_ns"]
