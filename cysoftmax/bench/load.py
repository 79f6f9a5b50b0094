"""Per-call latency under a competing load: ``python -m cysoftmax.bench.load``.

Times single calls of ``softmax_cross_entropy`` (loss and gradient, float32, into a
preallocated ``out``) on one thread and with ``num_threads=None``, first on an idle
machine and then while ``--load`` other processes each keep a core busy, and prints
the median, 99th percentile and maximum per call.  A thread pool that depends on a
core another process holds shows up here as a p99 of milliseconds; see
``cysoftmax._openmp_env``.  Figures are of the machine the command runs on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from cysoftmax import _api, build_info

from .children import python_command
from .inputs import empty_apart, make_inputs, parse_shapes
from .report import text_table

DEFAULT_SHAPES: Tuple[Tuple[int, int], ...] = ((4096, 10), (1024, 100), (4096, 1000))
BUSY_LOOP = "while True: pass"


@contextlib.contextmanager
def competing_load(n_processes: int) -> Iterator[None]:
    """n_processes Python processes spinning on a CPU each, for the duration of the block."""
    procs = [subprocess.Popen(python_command(BUSY_LOOP), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(n_processes)]
    try:
        time.sleep(0.2 if procs else 0.0)  # let them start spinning
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def call_times(shape: Tuple[int, int], num_threads: Optional[int], calls: int) -> np.ndarray:
    """Wall time of each of ``calls`` calls, in microseconds (after 10 warm-up calls), on
    the benchmark's float32 inputs (:func:`cysoftmax.bench.make_inputs`)."""
    scores, labels = make_inputs(shape, "float32")
    out = empty_apart(scores)
    times = np.empty(calls)
    for i in range(-10, calls):
        t0 = time.perf_counter()
        _api.softmax_cross_entropy(scores, labels, out=out, num_threads=num_threads)
        if i >= 0:
            times[i] = time.perf_counter() - t0
    return times * 1e6


def summarize(times: np.ndarray) -> Dict[str, float]:
    return {"median_us": round(float(np.median(times)), 1),
            "p99_us": round(float(np.percentile(times, 99)), 1),
            "max_us": round(float(times.max()), 1),
            "mean_us": round(float(times.mean()), 1)}


def _row(load: int, shape: Tuple[int, int], threads: Optional[int], calls: int,
         budget_s: float) -> Dict[str, object]:
    """One shape and thread setting: as many calls as ``budget_s / 2`` allows (20 to
    ``calls``)."""
    probe = call_times(shape, threads, 3)
    n = int(max(20, min(calls, budget_s / 2 * 1e6 / max(np.median(probe), 1.0))))
    return {"load": load, "shape": f"{shape[0]}x{shape[1]}",
            "threads": "1" if threads == 1 else "None", "calls": n,
            **summarize(call_times(shape, threads, n))}


def run(shapes: Sequence[Tuple[int, int]], loads: Sequence[int], calls: int,
        budget_s: float) -> List[Dict[str, object]]:
    """One row per (load, shape, threads); each shape gets at most ``budget_s`` seconds."""
    rows: List[Dict[str, object]] = []
    for load in loads:
        with competing_load(load):
            rows.extend(_row(load, shape, threads, calls, budget_s)
                        for shape in shapes for threads in (1, None))
    return rows


def format_rows(rows: List[Dict[str, object]]) -> str:
    header = ["busy procs", "shape", "num_threads", "calls", "median us", "p99 us", "max us",
              "mean us"]
    keys = ["load", "shape", "threads", "calls", "median_us", "p99_us", "max_us", "mean_us"]
    return "\n".join(text_table(header, [[str(r[k]) for k in keys] for r in rows]))


def _non_negative_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = [-1]
    if min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers like 0,1: {text!r}")
    return values


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cysoftmax.bench.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", type=parse_shapes, default=list(DEFAULT_SHAPES),
                   help="NxC shapes, comma-separated (default 4096x10,1024x100,4096x1000)")
    p.add_argument("--load", type=_non_negative_list, default=[0, 1],
                   help="numbers of busy processes to run beside, comma-separated (default 0,1)")
    p.add_argument("--calls", type=_positive_int, default=3000,
                   help="most calls timed per shape and thread setting (default 3000)")
    p.add_argument("--budget", type=_positive_float, default=2.0,
                   help="seconds per shape and load, at most (default 2)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    info = build_info()
    rows = run(args.shapes, args.load, args.calls, args.budget)
    if args.json:
        print(json.dumps({"build": info, "rows": rows}, indent=1))
    else:
        print(f"cysoftmax {info['version']}, target {info['target']}, "
              f"{info['default_num_threads']} threads for num_threads=None, "
              f"OpenMP wait policy: {info['openmp_wait_policy']}")
        print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
