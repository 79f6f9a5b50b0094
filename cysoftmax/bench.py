"""Benchmark of cysoftmax against a memory floor, NumPy and the installed peers.

Usage::

    python -m cysoftmax.bench [--quick] [--json | --markdown]
                              [--shapes 300x3,4096x1000] [--dtypes float32,float64]
                              [--threads 1,all] [--targets avx2,baseline]
                              [--peers numpy,torch,sklearn,jax] [--casestudy-iters N]
                              [--jax-processes N] [--save-json FILE] [--no-cpu-probe]

Two operations are timed for every shape, dtype and thread setting:

``loss+grad``
    ``softmax_cross_entropy(scores, labels, out=grad, num_threads=t)`` -- mean
    loss and gradient, the gradient written into a preallocated array.
``loss``
    ``cross_entropy(scores, labels, num_threads=t)`` -- mean loss only.

Each is compared, in the same run, with

* the floor: ``np.copyto(dst, scores)`` into a preallocated array for
  loss+grad (a gradient has to be written, and the scores read, at least once),
  ``scores.sum()`` (one read-only pass) for the loss;
* ``numpy``: a plain vectorized NumPy implementation (:func:`numpy_loss_grad`,
  :func:`numpy_loss`);
* when installed (never required): PyTorch (``F.cross_entropy`` forward, plus
  ``torch.autograd.grad`` for the gradient; ``torch.set_num_threads(t)``),
  scikit-learn (``sklearn._loss.loss.HalfMultinomialLoss`` ``loss_gradient`` /
  ``loss``, which return per-sample losses and an unscaled gradient, with
  ``n_threads=t``) and JAX (a jitted ``value_and_grad`` of optax's
  ``softmax_cross_entropy_with_integer_labels(...).mean()``; run in a fresh
  child process per shape and dtype, pinned to ``t`` CPUs when ``t`` is not
  "all", because XLA's thread pool takes no thread count).

Every time is the median over repeated samples; each sample times a
``perf_counter_ns`` loop over many calls, so the harness adds tens of
nanoseconds per call (the run reports how much). Ratios are ours / other: a
ratio below 1 means cysoftmax takes less time.

The case study entry times one training run of the CS231n two-layer network
(spiral data, 100 hidden units) with :class:`cysoftmax.TwoLayerNet` against
the notes' own NumPy loop (:func:`cysoftmax.casestudy.notes_two_layer_numpy`).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from functools import partial
from importlib import metadata
from itertools import repeat
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import cysoftmax
from cysoftmax import _kernels

__all__ = ["main", "numpy_loss", "numpy_loss_grad", "run"]

DEFAULT_SHAPES: List[Tuple[int, int]] = [(300, 3), (4096, 10), (4096, 1000), (512, 32000)]
DTYPES = ("float32", "float64")
PEERS = ("numpy", "torch", "sklearn", "jax")
OPTIONAL_PEERS = ("torch", "sklearn", "jax")
KINDS = ("loss+grad", "loss")
FLOOR_NAME = {"loss+grad": "copy floor", "loss": "read floor"}
LARGE = 4_000_000  # elements from which a shape counts as large (memory-bound)
SEED = 20261201

# seconds per measurement and samples per measurement, full run / --quick
BUDGET, QUICK_BUDGET = 0.3, 0.02
REPEATS, QUICK_REPEATS = 7, 3
MIN_REPEATS = 3
# pause before each sample of a group: OpenMP workers spin for ~5-8 ms after a parallel
# region, and those of the previous loop (another runtime, maybe) would compete
SETTLE_S = 0.015


Timing = Dict[str, Any]
Loop = Callable[[int], int]


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------


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
        plans: Dict[str, Tuple[int, int]] = {}
        for name, loop in loops.items():
            try:
                plans[name] = _plan(loop, budget, repeats)
            except Exception as exc:  # a peer's failure is reported, not fatal
                if errors is None:
                    raise
                errors[name] = f"{type(exc).__name__}: {exc}"
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


# --------------------------------------------------------------------------
# inputs and the NumPy reference
# --------------------------------------------------------------------------


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


def numpy_loss_grad(scores: np.ndarray, labels: np.ndarray) -> Tuple[Any, np.ndarray]:
    """Mean softmax cross-entropy and its gradient, in plain vectorized NumPy."""
    n = scores.shape[0]
    rows = np.arange(n)
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    loss = np.mean(np.log(total[:, 0]) - shifted[rows, labels])
    grad = exp
    grad /= total
    grad[rows, labels] -= 1
    grad /= n
    return loss, grad


def numpy_loss(scores: np.ndarray, labels: np.ndarray) -> Any:
    """Mean softmax cross-entropy, in plain vectorized NumPy."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=1))
    return np.mean(lse - shifted[np.arange(scores.shape[0]), labels])


# --------------------------------------------------------------------------
# the implementations: each returns a Loop for (kind, scores, labels, threads)
# --------------------------------------------------------------------------


def ours_loop(kind: str, scores: np.ndarray, labels: np.ndarray, threads: Optional[int]) -> Loop:
    """The public API called directly in the loop (no wrapper between)."""
    perf = time.perf_counter_ns
    if kind == "loss+grad":
        f = cysoftmax.softmax_cross_entropy
        out = empty_apart(scores)

        def loop(n: int) -> int:
            t0 = perf()
            for _ in repeat(None, n):
                f(scores, labels, out=out, num_threads=threads)
            return perf() - t0
    else:
        g = cysoftmax.cross_entropy

        def loop(n: int) -> int:
            t0 = perf()
            for _ in repeat(None, n):
                g(scores, labels, num_threads=threads)
            return perf() - t0

    return loop


def floor_loop(kind: str, scores: np.ndarray) -> Loop:
    if kind == "loss+grad":
        dst = empty_apart(scores)
        return loop_of(partial(np.copyto, dst, scores))
    return loop_of(scores.sum)


def numpy_peer(kind: str, scores: np.ndarray, labels: np.ndarray, threads: int) -> Loop:
    fn = numpy_loss_grad if kind == "loss+grad" else numpy_loss
    return loop_of(partial(fn, scores, labels))


def torch_peer(kind: str, scores: np.ndarray, labels: np.ndarray, threads: int) -> Loop:
    import torch
    import torch.nn.functional as F

    target = torch.from_numpy(labels)
    if kind == "loss":
        x = torch.from_numpy(scores.copy())
        inner = loop_of(partial(F.cross_entropy, x, target))
    else:
        xg = torch.from_numpy(scores.copy()).requires_grad_(True)
        grad = torch.autograd.grad

        def call() -> Any:
            return grad(F.cross_entropy(xg, target), xg)

        inner = loop_of(call)

    # torch.set_num_threads also sets the OpenMP runtime's default, which the process
    # shares with other libraries: undo it after timing
    return with_setting(inner, torch.get_num_threads, torch.set_num_threads, threads)


def sklearn_peer(kind: str, scores: np.ndarray, labels: np.ndarray, threads: int) -> Loop:
    from sklearn._loss.loss import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
        HalfMultinomialLoss,
    )

    loss = HalfMultinomialLoss(n_classes=scores.shape[1])
    y_true = labels.astype(scores.dtype)
    loss_out = np.empty(scores.shape[0], dtype=scores.dtype)
    if kind == "loss":
        return loop_of(partial(loss.loss, y_true=y_true, raw_prediction=scores,
                               loss_out=loss_out, n_threads=threads))
    gradient_out = empty_apart(scores)
    return loop_of(partial(loss.loss_gradient, y_true=y_true, raw_prediction=scores,
                           loss_out=loss_out, gradient_out=gradient_out, n_threads=threads))


def jax_peer(kind: str, scores: np.ndarray, labels: np.ndarray, threads: int) -> Loop:
    """Only in the JAX child process (see ``_jax_worker``)."""
    import jax
    import jax.numpy as jnp
    import optax  # type: ignore[import-untyped, import-not-found, unused-ignore]

    def mean_loss(s: Any, y: Any) -> Any:
        return optax.softmax_cross_entropy_with_integer_labels(s, y).mean()

    fn = jax.jit(jax.value_and_grad(mean_loss) if kind == "loss+grad" else mean_loss)
    s = jnp.asarray(scores)
    y = jnp.asarray(labels)
    ready = jax.block_until_ready
    ready(fn(s, y))  # compile outside the timed region

    def call() -> Any:
        return ready(fn(s, y))

    return loop_of(call)


IN_PROCESS_PEERS: Dict[str, Callable[[str, np.ndarray, np.ndarray, int], Loop]] = {
    "numpy": numpy_peer,
    "torch": torch_peer,
    "sklearn": sklearn_peer,
}

PEER_NOTES = {
    "numpy": "plain vectorized NumPy (max-subtract, exp, sum, log; p - onehot, / N), "
             "single-threaded whatever the thread setting",
    "torch": "F.cross_entropy forward + torch.autograd.grad (loss only: forward on a tensor "
             "without grad), torch.set_num_threads(t), tensors made outside the timed region; "
             "torch shares the process's OpenMP runtime, so its thread setting is undone "
             "after each of its measurements",
    "sklearn": "sklearn._loss.loss.HalfMultinomialLoss(n_classes=C).loss_gradient / .loss "
               "with n_threads=t: per-sample losses (no mean) and a per-sample gradient "
               "(not divided by N), float labels",
    "jax": "jax.jit(jax.value_and_grad(optax.softmax_cross_entropy_with_integer_labels(...)"
           ".mean())) (loss only: the jitted loss), compiled before timing, "
           "block_until_ready on each call, float64 with jax_enable_x64; timed in a fresh "
           "child process per shape and dtype (JAX's times depend on what its process ran "
           "before), pinned to t CPUs for t != all (XLA's thread pool takes no thread "
           "count), so not interleaved with the others",
}

PEER_MODULES = {"torch": ("torch",), "sklearn": ("sklearn",), "jax": ("jax", "jaxlib", "optax")}
VERSION_PACKAGES = {"numpy": "numpy", "torch": "torch", "sklearn": "scikit-learn",
                    "jax": "jax", "jaxlib": "jaxlib", "optax": "optax", "Cython": "Cython"}


def peer_missing(name: str) -> Optional[str]:
    """None when peer ``name`` can run, else why not (without importing it)."""
    for module in PEER_MODULES.get(name, ()):
        try:
            found = sys.modules.get(module, True) is not None and \
                importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"{module} is not installed"
    return None


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------


def cpu_info() -> Dict[str, Any]:
    info: Dict[str, Any] = {"model": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        text = ""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # first processor only
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    if "model name" in fields:
        info["model"] = fields["model name"]
        for key, name in (("vendor_id", "vendor"), ("cpu family", "family"),
                          ("model", "model_number"), ("stepping", "stepping")):
            if key in fields:
                info[name] = fields[key]
        flags = fields.get("flags", "").split()
        info["simd_flags"] = [f for f in ("avx2", "fma", "avx512f", "avx512bw") if f in flags]
        info["hypervisor"] = "hypervisor" in flags
    info["logical_cpus"] = os.cpu_count()
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    info["platform"] = platform.platform()
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


_PROBES = {
    "python": "import time\nt = time.perf_counter()\nx = 0\n"
              "for i in range(3_000_000):\n    x += i * i\n"
              "print(time.perf_counter() - t)\n",
    "simd": "import time\nimport numpy as np\n"
            "x = np.linspace(-5, 5, 16384, dtype=np.float32)\ny = np.empty_like(x)\n"
            "t = time.perf_counter()\nfor _ in range(15_000):\n    np.exp(x, out=y)\n"
            "print(time.perf_counter() - t)\n",
}


def cpu_probe(rounds: int = 3) -> Dict[str, Any]:
    """Do two busy processes each run at full speed at once?

    Times two workloads -- a pure-Python loop, and ``np.exp`` over an array
    that stays in L1/L2 (vector arithmetic) -- in one child process alone,
    then in two child processes at once. ``parallel_speed`` is (time alone) /
    (time of each of the two): about 1.0 when the two CPUs are real cores,
    0.5 when they share one (or another program keeps one busy).
    """

    def run_children(code: str, k: int) -> List[float]:
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                  text=True) for _ in range(k)]
        return [float(p.communicate()[0]) for p in procs]

    out: Dict[str, Any] = {}
    for name, code in _PROBES.items():
        alone, together = [], []
        for _ in range(rounds):
            alone.append(run_children(code, 1)[0])
            together.extend(run_children(code, 2))
        a, t = statistics.median(alone), statistics.median(together)
        out[name] = {"alone_s": a, "two_at_once_s": t, "parallel_speed": a / t}
    out["cores_delivered"] = 2 * min(v["parallel_speed"] for v in out.values())
    return out


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------


def _thread_value(setting: str) -> Optional[int]:
    return None if setting == "all" else int(setting)


def _thread_count(setting: str) -> int:
    value = _thread_value(setting)
    return _kernels.default_num_threads() if value is None else value


def _entry(shape: Tuple[int, int], dtype: str, setting: str, kind: str) -> Dict[str, Any]:
    return {"shape": list(shape), "dtype": dtype, "threads": setting,
            "num_threads": _thread_count(setting), "kind": kind,
            "timings": {}, "skipped": {}, "ratios": {}}


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _check_against_numpy(shape: Tuple[int, int], dtype: str) -> Dict[str, float]:
    scores, labels = make_inputs(shape, dtype)
    loss, grad = cysoftmax.softmax_cross_entropy(scores, labels)
    ref_loss, ref_grad = numpy_loss_grad(scores.astype(np.float64), labels)
    return {"loss_rel_diff": float(abs(float(loss) - ref_loss) / abs(ref_loss)),
            "grad_max_abs_diff": float(np.max(np.abs(grad - ref_grad)))}


def _jax_configs(shapes: Sequence[Tuple[int, int]], dtypes: Sequence[str]) -> List[Dict[str, Any]]:
    return [{"shape": list(s), "dtype": d} for s in shapes for d in dtypes]


def run_jax_child(shapes: Sequence[Tuple[int, int]], dtypes: Sequence[str], setting: str,
                  budget: float, repeats: int, processes: int = 1) -> Dict[str, Any]:
    """Time the JAX peer in child processes, one per shape and dtype.

    Returns ``{"timings": {"NxC/dtype/kind": timing}, "errors": {...}}``. A fresh
    process for each shape and dtype, because JAX allocates its outputs on every
    call and its times at large shapes change by up to 3-4x from one process to
    the next (with what the same process ran before, and the allocator's state).
    At shapes of 1M elements or more, ``processes`` fresh processes are run and
    each time is the best of their medians (all medians are kept in
    ``process_medians_ns``). For a thread setting other than "all"
    the child is pinned to that many CPUs before JAX starts: XLA's CPU thread
    pool takes no thread count (XLA_FLAGS such as
    ``--xla_cpu_multi_thread_eigen=false`` left it using both CPUs).
    """
    cpus: Optional[List[int]] = None
    if setting != "all" and hasattr(os, "sched_getaffinity"):
        usable = sorted(os.sched_getaffinity(0))
        if _thread_count(setting) < len(usable):
            cpus = usable[:_thread_count(setting)]
    result: Dict[str, Any] = {"timings": {}, "errors": {}, "cpus": cpus}
    for cfg in _jax_configs(shapes, dtypes):
        label = f"{cfg['shape'][0]}x{cfg['shape'][1]}/{cfg['dtype']}"
        request = {"configs": [cfg], "threads": _thread_count(setting), "cpus": cpus,
                   "budget": budget, "repeats": repeats}
        large = cfg["shape"][0] * cfg["shape"][1] >= 1_000_000
        for _ in range(processes if large else 1):
            _jax_process(request, label, result)
    return result


def _jax_process(request: Dict[str, Any], label: str, result: Dict[str, Any]) -> None:
    """One JAX child process; merges its timings into ``result`` (best median wins)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "cysoftmax.bench", "--jax-worker"],
                              input=json.dumps(request), capture_output=True, text=True,
                              timeout=900)
    except subprocess.TimeoutExpired:
        result["errors"][label] = "the JAX child process timed out"
        return
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        result["errors"][label] = f"the JAX child process failed: {tail[0]}"
        return
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result["errors"][label] = "the JAX child process printed no result"
        return
    for key, timing in answer["timings"].items():
        best = result["timings"].get(key)
        medians = (best or {}).get("process_medians_ns", []) + [timing["median_ns"]]
        if best is None or timing["median_ns"] < best["median_ns"]:
            best = timing
        result["timings"][key] = dict(best, process_medians_ns=medians)
    result["version"] = answer.get("version")


def _jax_worker() -> int:
    """Child process: read a request on stdin, print the JAX timings as one JSON line."""
    request = json.loads(sys.stdin.read())
    if request.get("cpus"):  # before JAX starts its threads: they all inherit it
        os.sched_setaffinity(0, request["cpus"])
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 stays float64
    timings: Dict[str, Any] = {}
    for cfg in request["configs"]:
        shape, dtype = tuple(cfg["shape"]), cfg["dtype"]
        scores, labels = make_inputs(shape, dtype)  # type: ignore[arg-type]
        for kind in KINDS:
            key = f"{shape[0]}x{shape[1]}/{dtype}/{kind}"
            timings[key] = measure(jax_peer(kind, scores, labels, request["threads"]),
                                   request["budget"], request["repeats"])

    print(json.dumps({"timings": timings, "version": jax.__version__,
                      "cpus": request.get("cpus")}))
    return 0


def overhead_section(shape: Tuple[int, int], dtypes: Sequence[str], budget: float,
                     repeats: int) -> Dict[str, Any]:
    """Where the time of a small call goes, one thread, loss+grad.

    Times the public API, the compiled entry ``_kernels.softmax_cross_entropy``
    that it calls, and the public API on one row of the same width (about the
    fixed cost of a call); ``per_row_ns`` is the rest divided by the other rows.
    """
    out: Dict[str, Any] = {"shape": list(shape), "timings": {}, "per_row_ns": {}}
    for dtype in dtypes:
        scores, labels = make_inputs(shape, dtype)
        grad = empty_apart(scores)
        one_row, one_label = scores[:1].copy(), labels[:1].copy()
        calls = {"softmax_cross_entropy": ours_loop("loss+grad", scores, labels, 1)}
        calls["_kernels.softmax_cross_entropy"] = loop_of(partial(
            _kernels.softmax_cross_entropy, scores, labels, "mean", None, -100, 0.0, grad, 1,
            True))
        calls[f"softmax_cross_entropy at 1x{shape[1]}"] = ours_loop(
            "loss+grad", one_row, one_label, 1)
        timed = measure_group(calls, budget, repeats)
        out["timings"][dtype] = {name: t["median_ns"] for name, t in timed.items()}
        if shape[0] > 1:
            rest = (timed["softmax_cross_entropy"]["median_ns"]
                    - timed[f"softmax_cross_entropy at 1x{shape[1]}"]["median_ns"])
            out["per_row_ns"][dtype] = rest / (shape[0] - 1)
    return out


def casestudy_entry(iterations: int, repeats: int) -> Dict[str, Any]:
    """Time TwoLayerNet.fit against the notes' NumPy loop on the spiral."""
    try:
        from cysoftmax import casestudy
    except ImportError as exc:
        return {"skipped": f"cysoftmax.casestudy cannot be imported ({exc})"}
    reference = getattr(casestudy, "notes_two_layer_numpy", None)
    if reference is None:
        return {"skipped": "cysoftmax.casestudy has no notes_two_layer_numpy"}
    from cysoftmax.datasets import spiral

    seed = getattr(casestudy, "DEFAULT_SEED", 0)
    hidden = getattr(casestudy, "HIDDEN_SIZE", 100)
    step = getattr(casestudy, "STEP_SIZE", 1.0)
    reg = getattr(casestudy, "REG", 1e-3)
    X, y = spiral(n_per_class=100, n_classes=3, noise=0.2, seed=seed)

    def ours() -> np.ndarray:
        net = cysoftmax.TwoLayerNet(solver="sgd", hidden_size=hidden, reg=reg,
                                    learning_rate=step, max_iter=iterations, random_state=seed)
        return np.asarray(net.fit(X, y).loss_history_)

    def notes() -> np.ndarray:
        return np.asarray(reference(X, y, hidden_size=hidden, step_size=step, reg=reg,
                                    max_iter=iterations, seed=seed)[-1])

    times: Dict[str, List[float]] = {"cysoftmax": [], "numpy": []}
    losses = {}
    for _ in range(repeats):
        for name, fn in (("cysoftmax", ours), ("numpy", notes)):
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


def _ratios(entry: Dict[str, Any], ours_key: str, peers: Sequence[str]) -> None:
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


def run(shapes: Sequence[Tuple[int, int]] = DEFAULT_SHAPES, dtypes: Sequence[str] = DTYPES,
        threads: Sequence[str] = ("1", "all"), targets: Optional[Sequence[str]] = None,
        peers: Sequence[str] = PEERS, quick: bool = False, casestudy_iters: Optional[int] = None,
        probe: Optional[bool] = None, quiet: bool = False,
        command: Optional[str] = None, jax_processes: Optional[int] = None) -> Dict[str, Any]:
    """Run the benchmark; return the results as a JSON-ready dict."""
    started = time.perf_counter()
    budget = QUICK_BUDGET if quick else BUDGET
    repeats = QUICK_REPEATS if quick else REPEATS
    if targets is None:
        targets = [_kernels.current_target()]
    if jax_processes is None:
        jax_processes = 1 if quick else 2
    ours_keys = {t: "cysoftmax" if i == 0 else f"cysoftmax[{t}]" for i, t in enumerate(targets)}

    report: Dict[str, Any] = {
        "command": command,
        "machine": cpu_info(),
        "build_info": cysoftmax.build_info(),
        "versions": {"python": platform.python_version(), "cysoftmax": cysoftmax.__version__},
        "settings": {"quick": quick, "budget_s": budget, "repeats": repeats,
                     "shapes": [list(s) for s in shapes], "dtypes": list(dtypes),
                     "threads": list(threads), "targets": list(targets), "peers": list(peers),
                     "jax_processes": jax_processes,
                     "ratio": "ours / other: < 1 means cysoftmax takes less time"},
        "notes": [], "skipped_peers": {}, "results": [],
    }
    for name in ("numpy", "Cython", "torch", "sklearn", "jax", "jaxlib", "optax"):
        report["versions"][name] = _version(VERSION_PACKAGES[name])

    active = []
    for name in peers:
        why = peer_missing(name)
        if why is None:
            active.append(name)
        else:
            report["skipped_peers"][name] = why
            report["notes"].append(f"{name}: skipped, {why}")
    report["notes"].append(
        "floor: np.copyto(dst, scores) for loss+grad, scores.sum() for the loss; dst, like "
        "cysoftmax's and scikit-learn's gradient buffers, lies half a page (2048 bytes modulo "
        "4 KiB) from the scores (on AMD Zen 3 a copy of ~160 KB into a buffer 1-31 bytes past "
        "its source modulo 4 KiB runs ~12x slower)")
    for name in active:
        report["notes"].append(f"{name}: {PEER_NOTES[name]}")
    if "jax" in active and jax_processes > 1:
        report["notes"].append(f"jax: at shapes of 1M elements or more, the best median of "
                               f"{jax_processes} fresh processes (JAX's times there change "
                               f"by up to 3-4x from one process to the next)")

    if probe if probe is not None else not quick:
        _log(quiet, "probing what the CPUs deliver ...")
        report["cpu_probe"] = cpu_probe()
    report["harness_overhead_ns"] = harness_overhead_ns(budget, repeats)
    report["checks"] = {f"{s[0]}x{s[1]}/{d}": _check_against_numpy(s, d)
                        for s in shapes for d in dtypes}

    for setting in threads:
        n_threads = _thread_count(setting)
        ours_threads = _thread_value(setting)
        for shape in shapes:
            for dtype in dtypes:
                scores, labels = make_inputs(shape, dtype)
                for kind in KINDS:
                    entry = _entry(shape, dtype, setting, kind)
                    _log(quiet, f"{shape[0]}x{shape[1]} {dtype} threads={setting} {kind}")
                    loops: Dict[str, Loop] = {}
                    for target in targets:
                        loops[ours_keys[target]] = on_target(
                            ours_loop(kind, scores, labels, ours_threads), target)
                    loops["floor"] = floor_loop(kind, scores)
                    for name in active:
                        if name not in IN_PROCESS_PEERS:
                            continue
                        try:
                            loops[name] = IN_PROCESS_PEERS[name](kind, scores, labels, n_threads)
                        except Exception as exc:  # a peer's failure is reported, not fatal
                            entry["skipped"][name] = f"{type(exc).__name__}: {exc}"
                    entry["timings"] = measure_group(loops, budget, repeats, entry["skipped"])
                    del loops
                    for own in (*ours_keys.values(), "floor"):
                        if own in entry["skipped"]:
                            raise RuntimeError(f"{own} failed: {entry['skipped'][own]}")
                    report["results"].append(entry)
                del scores, labels
        if "jax" in active:
            _log(quiet, f"jax (child process) threads={setting}")
            jax_result = run_jax_child(shapes, dtypes, setting, budget, repeats,
                                       jax_processes)
            for entry in report["results"]:
                if entry["threads"] != setting:
                    continue
                label = f"{entry['shape'][0]}x{entry['shape'][1]}/{entry['dtype']}"
                key = f"{label}/{entry['kind']}"
                if key in jax_result["timings"]:
                    entry["timings"]["jax"] = jax_result["timings"][key]
                else:
                    entry["skipped"]["jax"] = jax_result["errors"].get(label, "no result")
    for entry in report["results"]:
        _ratios(entry, "cysoftmax", [p for p in active if p in entry["timings"]])

    if shapes:
        small = min(shapes, key=lambda s: s[0] * s[1])
        _log(quiet, f"per-call overhead at {small[0]}x{small[1]}")
        report["overhead"] = overhead_section(small, dtypes, budget, repeats)

    if casestudy_iters is None:
        casestudy_iters = 200 if quick else 10_000
    if casestudy_iters > 0:
        _log(quiet, f"case study: {casestudy_iters} iterations")
        report["casestudy"] = casestudy_entry(casestudy_iters, 1 if quick else 3)
    else:
        report["casestudy"] = {"skipped": "--casestudy-iters 0"}

    report["goals"] = evaluate_goals(report)
    if hasattr(os, "getloadavg"):
        report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["total_seconds"] = time.perf_counter() - started
    return report


# --------------------------------------------------------------------------
# goals
# --------------------------------------------------------------------------


def _label(entry: Dict[str, Any]) -> str:
    n, c = entry["shape"]
    return f"{n}x{c} {entry['dtype']} t={entry['threads']}"


def evaluate_goals(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each goal: holds (True / False / None when not measured) and the worst case."""
    results = report["results"]

    def goal(name: str, entries: List[Dict[str, Any]], value: Callable[[Dict[str, Any]], float],
             limit: Callable[[Dict[str, Any]], float], unit: str,
             extra: Optional[Callable[[Dict[str, Any]], str]] = None) -> Dict[str, Any]:
        checked = [(e, value(e), limit(e)) for e in entries]
        checked = [c for c in checked if c[1] == c[1]]  # drop NaN (not measured)
        if not checked:
            return {"goal": name, "holds": None, "detail": "not measured in this run"}
        failing = [c for c in checked if c[1] > c[2]]
        worst = max(checked, key=lambda c: c[1] / c[2])
        detail = f"worst {_label(worst[0])}: {worst[1]:.3g}{unit} (limit {worst[2]:.3g}{unit})"
        if extra is not None:
            detail += extra(worst[0])
        if failing:
            detail += "; fails at " + ", ".join(_label(c[0]) for c in failing)
        return {"goal": name, "holds": not failing, "detail": detail,
                "checked": len(checked), "failed": len(failing)}

    def elems(e: Dict[str, Any]) -> int:
        return int(e["shape"][0] * e["shape"][1])

    lg = [e for e in results if e["kind"] == "loss+grad"]
    lo = [e for e in results if e["kind"] == "loss"]
    floor = lambda e: e["ratios"].get("floor", math.nan)  # noqa: E731
    return [
        goal("large shapes (>= 4M elements): loss+grad <= 1.5x the copy floor (float32), "
             "<= 1.3x (float64)", [e for e in lg if elems(e) >= LARGE], floor,
             lambda e: 1.5 if e["dtype"] == "float32" else 1.3, "x"),
        goal("every shape and dtype: loss+grad at least 2x faster than the fastest peer",
             lg, lambda e: e["ratios"].get("best_peer", math.nan), lambda e: 0.5, "x"),
        goal("300x3: loss+grad <= 3 us per call", [e for e in lg if e["shape"] == [300, 3]],
             lambda e: e["timings"]["cysoftmax"]["median_ns"] / 1e3, lambda e: 3.0, " us",
             lambda e: f", fastest sample {e['timings']['cysoftmax']['min_ns'] / 1e3:.3g} us"),
        goal("4096x10: loss+grad <= 5x the copy floor",
             [e for e in lg if e["shape"] == [4096, 10]], floor, lambda e: 5.0, "x"),
        goal("large shapes: loss only <= 1.5x the read-only floor",
             [e for e in lo if elems(e) >= LARGE], floor, lambda e: 1.5, "x"),
        goal("(also reported) every shape and dtype: loss only at least 2x faster than the "
             "fastest peer", lo, lambda e: e["ratios"].get("best_peer", math.nan),
             lambda e: 0.5, "x"),
    ]


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------


def fmt_time(ns: Optional[float]) -> str:
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            v = ns / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{ns:.0f} ns"


def _columns(report: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """Implementation columns (ours first, then extra targets, floor, peers) and peers."""
    keys: List[str] = []
    for entry in report["results"]:
        for k in entry["timings"]:
            if k not in keys:
                keys.append(k)
    ours = [k for k in keys if k.startswith("cysoftmax")]
    peers = [p for p in PEERS if p in keys]
    return ours + ["floor"] + peers, peers


def _table_rows(report: Dict[str, Any], kind: str) -> Tuple[List[str], List[List[str]]]:
    impls, peers = _columns(report)
    targets = report["settings"]["targets"]
    names = {"floor": FLOOR_NAME[kind]}
    if len(targets) > 1:
        names["cysoftmax"] = f"cysoftmax[{targets[0]}]"
    header = ["shape", "dtype", "threads"] + [names.get(k, k) for k in impls] + ["ours/floor"] + [f"ours/{p}" for p in peers] + ["ours/best peer"]
    rows = []
    for e in report["results"]:
        if e["kind"] != kind:
            continue
        t = e["timings"]
        threads = e["threads"] if e["threads"] != "all" else f"all ({e['num_threads']})"
        row = [f"{e['shape'][0]}x{e['shape'][1]}", e["dtype"], threads]
        row += [fmt_time(t[k]["median_ns"]) if k in t else "-" for k in impls]
        r = e["ratios"]
        row += [f"{r['floor']:.2f}"] + [f"{r[p]:.3f}" if p in r else "-" for p in peers]
        row += [f"{r['best_peer']:.3f} ({e['best_peer']})" if "best_peer" in r else "-"]
        rows.append(row)
    return header, rows


def _machine_lines(report: Dict[str, Any]) -> List[str]:
    m, b, v = report["machine"], report["build_info"], report["versions"]
    cpu = m.get("model", "?")
    if "family" in m:
        cpu += (f" (family {m['family']}, model {m.get('model_number')}, "
                f"stepping {m.get('stepping')})")
    if m.get("hypervisor"):
        cpu += ", virtualized"
    lines = [
        f"CPU: {cpu}; {m.get('logical_cpus')} logical CPUs ({m.get('usable_cpus', '?')} usable); "
        f"SIMD flags {', '.join(m.get('simd_flags', [])) or '?'}",
        f"platform: {m.get('platform')}; load average at start {m.get('loadavg_at_start')}, "
        f"at end {m.get('loadavg_at_end')}",
        f"cysoftmax {v['cysoftmax']}: SIMD target {b['target']} (supported "
        f"{', '.join(b['supported_targets'])}), OpenMP {'on' if b['openmp'] else 'off'}, "
        f"default threads {b['default_num_threads']}",
        "versions: " + ", ".join(f"{k} {v[k]}" for k in v if v[k] and k != "cysoftmax"),
    ]
    probe = report.get("cpu_probe")
    if probe:
        parts = [f"{name} loop {p['alone_s']:.2f} s alone, {p['two_at_once_s']:.2f} s each "
                 f"with two at once ({p['parallel_speed']:.2f}x speed)"
                 for name, p in probe.items() if isinstance(p, dict)]
        lines.append(f"CPU probe (two busy processes at once): {'; '.join(parts)} -> the CPUs "
                     f"deliver about {probe['cores_delivered']:.1f} cores")
    s = report["settings"]
    lines.append(
        f"timing: median of {s['repeats']} samples per measurement (~{s['budget_s']} s per "
        f"measurement, many calls per sample; the samples of one row are taken in turn); the "
        f"harness loop adds ~{report['harness_overhead_ns']:.0f} ns per call (not subtracted)")
    return lines


def _overhead_lines(report: Dict[str, Any]) -> List[str]:
    o = report.get("overhead")
    if not o:
        return []
    lines = [f"per-call cost at {o['shape'][0]}x{o['shape'][1]}, 1 thread (loss+grad):"]
    for dtype, t in o["timings"].items():
        line = f"  {dtype}: " + ", ".join(f"{k} {fmt_time(v)}" for k, v in t.items())
        if dtype in o["per_row_ns"]:
            line += f"; so about {o['per_row_ns'][dtype]:.1f} ns per further row"
        lines.append(line)
    return lines


def _casestudy_lines(report: Dict[str, Any]) -> List[str]:
    c = report.get("casestudy") or {}
    if "skipped" in c:
        return [f"case study: skipped ({c['skipped']})"]
    return [
        f"case study (spiral, {c['n_samples']} points, 2-layer net with {c['hidden_size']} "
        f"hidden units, {c['iterations']} iterations, median of {c['repeats']}): "
        f"cysoftmax.TwoLayerNet {c['cysoftmax_s']:.3g} s, the notes' NumPy loop "
        f"{c['numpy_s']:.3g} s, ratio {c['ratio']:.2f} (max loss difference "
        f"{c['max_loss_diff']:.1e})"
    ]


def _goal_lines(report: Dict[str, Any]) -> List[str]:
    lines = []
    for g in report["goals"]:
        status = {True: "HOLDS", False: "FAILS", None: "n/a"}[g["holds"]]
        lines.append(f"[{status}] {g['goal']}: {g['detail']}")
    return lines


TITLES = {
    "loss+grad": "loss + gradient: softmax_cross_entropy(scores, labels, out=grad, "
                 "num_threads=t), mean loss",
    "loss": "loss only: cross_entropy(scores, labels, num_threads=t), mean loss",
}
RATIO_NOTE = ("Times are medians per call. Ratios are ours / other: below 1 cysoftmax is "
              "faster (0.25 = 4x faster), above 1 it is slower.")


def format_text(report: Dict[str, Any]) -> str:
    out = ["cysoftmax benchmark", *_machine_lines(report), RATIO_NOTE, ""]
    for kind in KINDS:
        header, rows = _table_rows(report, kind)
        widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
                  for i in range(len(header))]
        out.append(TITLES[kind])
        out.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        out.extend("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)
        out.append("")
    out.extend(f"note: {n}" for n in report["notes"])
    out.extend(_overhead_lines(report))
    out.extend(_casestudy_lines(report))
    out.append("")
    out.append("goals:")
    out.extend(_goal_lines(report))
    out.append(f"total time {report['total_seconds']:.0f} s")
    return "\n".join(out)


def format_markdown(report: Dict[str, Any]) -> str:
    out = [f"- {line}" for line in _machine_lines(report)]
    out += ["", RATIO_NOTE, ""]
    for kind in KINDS:
        header, rows = _table_rows(report, kind)
        out.append(f"**{TITLES[kind]}**")
        out.append("")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|")
        out.extend("| " + " | ".join(r) + " |" for r in rows)
        out.append("")
    out.extend(f"- {n}" for n in report["notes"])
    out.extend(f"  - {line.strip()}" if line.startswith(" ") else f"- {line}"
               for line in _overhead_lines(report))
    out.extend(f"- {line}" for line in _casestudy_lines(report))
    out.append("")
    out.append("Goals:")
    out.append("")
    out.extend(f"- {line}" for line in _goal_lines(report))
    out.append("")
    out.append(f"Total bench time {report['total_seconds']:.0f} s.")
    return re.sub(r"(\d) us\b", "\\1 µs", "\n".join(out))


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


def _shapes(text: str) -> List[Tuple[int, int]]:
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


def _choice_list(choices: Sequence[str]) -> Callable[[str], List[str]]:
    def parse(text: str) -> List[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(choices)}; got {text!r}")
        return items
    return parse


def _threads(text: str) -> List[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    for x in items:
        if x != "all" and not (x.isdigit() and int(x) >= 1):
            raise argparse.ArgumentTypeError(f"threads: 'all' or a positive integer, got {x!r}")
    if not items:
        raise argparse.ArgumentTypeError("threads: empty list")
    return items


def _targets(text: str) -> List[str]:
    supported = _kernels.supported_targets()
    if text == "all":  # the current target first: the ratios use it
        current = _kernels.current_target()
        return [current] + [t for t in supported if t != current]
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in supported]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"targets: this CPU runs {', '.join(supported)} (or 'all'); got {text!r}")
    return items


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cysoftmax.bench",
        description="Time cysoftmax's loss + gradient and loss against a memory floor, NumPy "
                    "and, when installed, PyTorch, scikit-learn and JAX. Ratios are "
                    "ours / other: below 1 means cysoftmax is faster.")
    p.add_argument("--quick", action="store_true",
                   help="short measurements, 200 case-study iterations, no CPU probe: "
                        "a smoke run, not for the record")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the results as JSON")
    fmt.add_argument("--markdown", action="store_true",
                     help="print the results as markdown (as in BENCHMARKS.md)")
    p.add_argument("--shapes", type=_shapes, default=DEFAULT_SHAPES,
                   help="comma-separated NxC (default 300x3,4096x10,4096x1000,512x32000)")
    p.add_argument("--dtypes", type=_choice_list(DTYPES), default=list(DTYPES),
                   help="float32,float64 (default both)")
    p.add_argument("--threads", type=_threads, default=["1", "all"],
                   help="thread settings: positive integers or 'all' (num_threads=None); "
                        "default 1,all")
    p.add_argument("--targets", type=_targets, default=None,
                   help="SIMD targets to run cysoftmax on, or 'all'; ratios use the first "
                        "(default: the current one)")
    p.add_argument("--peers", type=_choice_list(PEERS), default=list(PEERS),
                   help="numpy,torch,sklearn,jax (default all; missing ones are skipped)")
    p.add_argument("--casestudy-iters", type=int, default=None, metavar="N",
                   help="training iterations of the case study (default 10000, --quick 200; "
                        "0 skips it)")
    p.add_argument("--jax-processes", type=int, default=None, metavar="N",
                   help="fresh JAX processes per large shape and dtype, best median kept "
                        "(default 2, --quick 1)")
    p.add_argument("--save-json", metavar="FILE",
                   help="also write the JSON results to FILE (whatever is printed)")
    p.add_argument("--no-cpu-probe", action="store_true",
                   help="skip the check of what two busy processes get")
    p.add_argument("--jax-worker", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.jax_worker:
        return _jax_worker()
    if args.casestudy_iters is not None and args.casestudy_iters < 0:
        build_parser().error("--casestudy-iters must be >= 0")
    if args.jax_processes is not None and args.jax_processes < 1:
        build_parser().error("--jax-processes must be >= 1")
    report = run(shapes=args.shapes, dtypes=args.dtypes, threads=args.threads,
                 targets=args.targets, peers=args.peers, quick=args.quick,
                 casestudy_iters=args.casestudy_iters,
                 probe=False if args.no_cpu_probe else None,
                 jax_processes=args.jax_processes,
                 command=" ".join(["python -m cysoftmax.bench",
                                   *(sys.argv[1:] if argv is None else argv)]))
    if args.save_json:
        with open(args.save_json, "w") as fh:
            json.dump(report, fh, indent=1)
    if args.json:
        print(json.dumps(report, indent=1))
    elif args.markdown:
        print(format_markdown(report))
    else:
        print(format_text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
