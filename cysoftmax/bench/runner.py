"""The run: every shape, dtype, thread setting and operation timed into one report.

:func:`run` returns a JSON-ready dict; :mod:`cysoftmax.bench.report` formats it.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import product
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

import cysoftmax
from cysoftmax import _kernels, casestudy
from cysoftmax.datasets import spiral

from .floor import FLOOR_KEYS, FLOOR_NOTE, floor_loops, keep_faster_floor
from .inputs import (DEFAULT_SHAPES, DTYPES, KINDS, empty_apart, make_inputs, thread_count,
                     thread_value)
from .machine import cpu_info, cpu_probe, loadavg, versions
from .peers import (IN_PROCESS_PEERS, PEER_NOTES, PEERS, numpy_loss_grad, ours_loop,
                    peer_missing, run_jax_child)
from .report import evaluate_goals
from .timing import (BUDGET, QUICK_BUDGET, QUICK_REPEATS, REPEATS, Loop, harness_overhead_ns,
                     loop_of, measure_group, on_target)

Entry = Dict[str, Any]


@dataclass
class _Plan:
    """What every row of a run shares."""

    budget: float
    repeats: int
    targets: Sequence[str]
    active: List[str] = field(default_factory=list)  # the peers that can run
    quiet: bool = False

    @property
    def ours_keys(self) -> Dict[str, str]:
        """Timing key of cysoftmax on each target: the first is plain "cysoftmax"."""
        return {t: "cysoftmax" if i == 0 else f"cysoftmax[{t}]"
                for i, t in enumerate(self.targets)}

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# the rows
# --------------------------------------------------------------------------


def _entry(shape: Tuple[int, int], dtype: str, setting: str, kind: str) -> Entry:
    return {"shape": list(shape), "dtype": dtype, "threads": setting,
            "num_threads": thread_count(setting), "kind": kind,
            "timings": {}, "skipped": {}, "ratios": {}}


def _row_loops(plan: _Plan, entry: Entry, scores: np.ndarray, labels: np.ndarray,
               pool: Executor) -> Dict[str, Loop]:
    """The loops of one row: cysoftmax on each target, the floor, the in-process peers
    (one that fails to set up is recorded in ``entry["skipped"]``)."""
    kind, setting = entry["kind"], entry["threads"]
    loops = {key: on_target(ours_loop(kind, scores, labels, thread_value(setting)), target)
             for target, key in plan.ours_keys.items()}
    loops.update(floor_loops(kind, scores, entry["num_threads"], pool))
    for name in (p for p in plan.active if p in IN_PROCESS_PEERS):
        try:
            loops[name] = IN_PROCESS_PEERS[name](kind, scores, labels, entry["num_threads"])
        except Exception as exc:  # a peer's failure is reported, not fatal
            entry["skipped"][name] = f"{type(exc).__name__}: {exc}"
    return loops


def _time_row(plan: _Plan, entry: Entry, scores: np.ndarray, labels: np.ndarray,
              pool: Executor) -> Entry:
    loops = _row_loops(plan, entry, scores, labels, pool)
    entry["timings"] = measure_group(loops, plan.budget, plan.repeats, entry["skipped"])
    for own in (*plan.ours_keys.values(), *FLOOR_KEYS):
        if own in entry["skipped"]:
            raise RuntimeError(f"{own} failed: {entry['skipped'][own]}")
    keep_faster_floor(entry["timings"], entry["num_threads"])
    return entry


def _time_inputs(plan: _Plan, shape: Tuple[int, int], dtype: str, setting: str,
                 pool: Executor) -> List[Entry]:
    """The rows of one shape and dtype (their arrays are freed on return)."""
    scores, labels = make_inputs(shape, dtype)
    rows = []
    for kind in KINDS:
        plan.log(f"{shape[0]}x{shape[1]} {dtype} threads={setting} {kind}")
        rows.append(_time_row(plan, _entry(shape, dtype, setting, kind), scores, labels, pool))
    return rows


def _time_setting(plan: _Plan, shapes: Sequence[Tuple[int, int]], dtypes: Sequence[str],
                  setting: str) -> List[Entry]:
    """The in-process rows of one thread setting; the split floors' pool lives as long."""
    with ThreadPoolExecutor(max_workers=max(1, thread_count(setting) - 1)) as pool:
        return [row for shape, dtype in product(shapes, dtypes)
                for row in _time_inputs(plan, shape, dtype, setting, pool)]


def _add_jax(plan: _Plan, rows: List[Entry], shapes: Sequence[Tuple[int, int]],
             dtypes: Sequence[str], setting: str, processes: int) -> None:
    """Time JAX in its child processes and put its timings into ``rows``."""
    plan.log(f"jax (child process) threads={setting}")
    result = run_jax_child(shapes, dtypes, setting, plan.budget, plan.repeats, processes)
    for entry in rows:
        label = f"{entry['shape'][0]}x{entry['shape'][1]}/{entry['dtype']}"
        key = f"{label}/{entry['kind']}"
        if key in result["timings"]:
            entry["timings"]["jax"] = result["timings"][key]
        else:
            entry["skipped"]["jax"] = result["errors"].get(label, "no result")


def _ratios(entry: Entry, ours_key: str, peers: Sequence[str]) -> None:
    timings = entry["timings"]
    ours = timings[ours_key]["median_ns"]
    ratios = {"floor": ours / timings["floor"]["median_ns"]}
    best_name, best = None, math.inf
    for name in peers:
        if name in timings:
            ratios[name] = ours / timings[name]["median_ns"]
            if timings[name]["median_ns"] < best:
                best_name, best = name, timings[name]["median_ns"]
    if best_name is not None:
        ratios["best_peer"] = ours / best
        entry["best_peer"] = best_name
    entry["ratios"] = ratios


# --------------------------------------------------------------------------
# the other sections
# --------------------------------------------------------------------------


def _check_against_numpy(shape: Tuple[int, int], dtype: str) -> Dict[str, float]:
    scores, labels = make_inputs(shape, dtype)
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels)
    ref_loss, ref_grad = numpy_loss_grad(scores.astype(np.float64), labels)
    return {"loss_rel_diff": float(abs(float(loss) - ref_loss) / abs(ref_loss)),
            "grad_max_abs_diff": float(np.max(np.abs(grad - ref_grad)))}


def overhead_section(shape: Tuple[int, int], dtypes: Sequence[str], budget: float,
                     repeats: int) -> Dict[str, Any]:
    """Where the time of a small call goes, one thread, loss+grad.

    Times the public API, the compiled entry ``_kernels.softmax_cross_entropy``
    that it calls, and the public API on one row of the same width (about the
    fixed cost of a call); ``per_row_ns`` is the rest divided by the other rows.
    """
    out: Dict[str, Any] = {"shape": list(shape), "timings": {}, "per_row_ns": {}}
    one_row_name = f"softmax_cross_entropy at 1x{shape[1]}"
    for dtype in dtypes:
        scores, labels = make_inputs(shape, dtype)
        calls = {
            "softmax_cross_entropy": ours_loop("loss+grad", scores, labels, 1),
            "_kernels.softmax_cross_entropy": loop_of(partial(
                _kernels.softmax_cross_entropy, scores, labels, "mean", None, -100, 0.0, 0.0,
                None, False, False, empty_apart(scores), 1, True)),
            one_row_name: ours_loop("loss+grad", scores[:1].copy(), labels[:1].copy(), 1),
        }
        timed = measure_group(calls, budget, repeats)
        out["timings"][dtype] = {name: t["median_ns"] for name, t in timed.items()}
        if shape[0] > 1:
            rest = (timed["softmax_cross_entropy"]["median_ns"]
                    - timed[one_row_name]["median_ns"])
            out["per_row_ns"][dtype] = rest / (shape[0] - 1)
    return out


def casestudy_entry(iterations: int, repeats: int) -> Dict[str, Any]:
    """Time TwoLayerNet.fit against the notes' NumPy loop on the spiral."""
    seed, hidden = casestudy.DEFAULT_SEED, casestudy.HIDDEN_SIZE
    step, reg = casestudy.STEP_SIZE, casestudy.REG
    X, y = spiral(n_per_class=100, n_classes=3, noise=0.2, seed=seed)

    def ours() -> np.ndarray:
        net = cysoftmax.TwoLayerNet(solver="sgd", hidden_size=hidden, reg=reg,
                                    learning_rate=step, max_iter=iterations, random_state=seed)
        return np.asarray(net.fit(X, y).loss_history_)

    def notes() -> np.ndarray:
        return np.asarray(casestudy.notes_two_layer_numpy(
            X, y, hidden_size=hidden, step_size=step, reg=reg, max_iter=iterations,
            seed=seed)[-1])

    fns = {"cysoftmax": ours, "numpy": notes}
    times: Dict[str, List[float]] = {name: [] for name in fns}
    losses = {}
    for _, (name, fn) in product(range(repeats), fns.items()):
        t0 = time.perf_counter()
        losses[name] = fn()
        times[name].append(time.perf_counter() - t0)
    t_ours = statistics.median(times["cysoftmax"])
    t_numpy = statistics.median(times["numpy"])
    return {
        "iterations": iterations, "hidden_size": hidden, "n_samples": int(X.shape[0]),
        "repeats": repeats,
        "cysoftmax_s": t_ours, "numpy_s": t_numpy, "ratio": t_ours / t_numpy,
        "final_loss": float(losses["cysoftmax"][-1]),
        "max_loss_diff": float(np.max(np.abs(losses["cysoftmax"] - losses["numpy"]))),
    }


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------


def _new_report(command: Optional[str], settings: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "command": command,
        "machine": cpu_info(),
        "build_info": cysoftmax.build_info(),
        "versions": versions(),
        "settings": dict(settings, ratio="ours / other: < 1 means cysoftmax takes less time"),
        "notes": [], "skipped_peers": {}, "results": [],
    }


def _add_peers(report: Dict[str, Any], peers: Sequence[str], jax_processes: int) -> List[str]:
    """The peers that can run; notes on them (and on the floor) and on those skipped."""
    active = []
    for name in peers:
        why = peer_missing(name)
        if why is None:
            active.append(name)
        else:
            report["skipped_peers"][name] = why
            report["notes"].append(f"{name}: skipped, {why}")
    report["notes"].append(FLOOR_NOTE)
    report["notes"].extend(f"{name}: {PEER_NOTES[name]}" for name in active)
    if "jax" in active and jax_processes > 1:
        report["notes"].append(f"jax: at shapes of 1M elements or more, the best median of "
                               f"{jax_processes} fresh processes (JAX's times there change "
                               f"by up to 3-4x from one process to the next)")
    return active


def run(shapes: Sequence[Tuple[int, int]] = DEFAULT_SHAPES, dtypes: Sequence[str] = DTYPES,
        threads: Sequence[str] = ("1", "all"), targets: Optional[Sequence[str]] = None,
        peers: Sequence[str] = PEERS, quick: bool = False, casestudy_iters: Optional[int] = None,
        probe: Optional[bool] = None, quiet: bool = False,
        command: Optional[str] = None, jax_processes: Optional[int] = None) -> Dict[str, Any]:
    """Run the benchmark; return the results as a JSON-ready dict."""
    started = time.perf_counter()
    plan = _Plan(budget=QUICK_BUDGET if quick else BUDGET,
                 repeats=QUICK_REPEATS if quick else REPEATS,
                 targets=[_kernels.current_target()] if targets is None else list(targets),
                 quiet=quiet)
    if jax_processes is None:
        jax_processes = 1 if quick else 2
    report = _new_report(command, {
        "quick": quick, "budget_s": plan.budget, "repeats": plan.repeats,
        "shapes": [list(s) for s in shapes], "dtypes": list(dtypes), "threads": list(threads),
        "targets": list(plan.targets), "peers": list(peers), "jax_processes": jax_processes})
    plan.active = _add_peers(report, peers, jax_processes)

    if probe if probe is not None else not quick:
        plan.log("probing what the CPUs deliver ...")
        report["cpu_probe"] = cpu_probe()
    report["harness_overhead_ns"] = harness_overhead_ns(plan.budget, plan.repeats)
    report["checks"] = {f"{s[0]}x{s[1]}/{d}": _check_against_numpy(s, d)
                        for s, d in product(shapes, dtypes)}

    for setting in threads:
        rows = _time_setting(plan, shapes, dtypes, setting)
        if "jax" in plan.active:
            _add_jax(plan, rows, shapes, dtypes, setting, jax_processes)
        report["results"].extend(rows)
    for entry in report["results"]:
        _ratios(entry, "cysoftmax", [p for p in plan.active if p in entry["timings"]])

    if shapes:
        small = min(shapes, key=lambda s: s[0] * s[1])
        plan.log(f"per-call overhead at {small[0]}x{small[1]}")
        report["overhead"] = overhead_section(small, dtypes, plan.budget, plan.repeats)
    if casestudy_iters is None:
        casestudy_iters = 200 if quick else 10_000
    if casestudy_iters > 0:
        plan.log(f"case study: {casestudy_iters} iterations")
        report["casestudy"] = casestudy_entry(casestudy_iters, 1 if quick else 3)
    else:
        report["casestudy"] = {"skipped": "--casestudy-iters 0"}

    report["goals"] = evaluate_goals(report)
    load = loadavg()
    if load is not None:
        report["machine"]["loadavg_at_end"] = load
    report["total_seconds"] = time.perf_counter() - started
    return report
