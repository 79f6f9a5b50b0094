"""The implementations timed: cysoftmax, NumPy, PyTorch, scikit-learn and JAX.

Each ``*_peer`` returns a :data:`~cysoftmax.bench.timing.Loop` for ``(kind,
scores, labels, threads)``. JAX runs in child processes (:func:`run_jax_child`),
on the CPU: ``JAX_PLATFORMS=cpu`` is set in their environment, so that a GPU
JAX would otherwise pick is not compared with a CPU kernel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from functools import partial
from itertools import repeat
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import cysoftmax

from .children import python_command
from .inputs import KINDS, empty_apart, make_inputs, thread_count
from .timing import Loop, loop_of, measure, with_setting

PEERS = ("numpy", "torch", "sklearn", "jax")
OPTIONAL_PEERS = ("torch", "sklearn", "jax")
PEER_MODULES = {"torch": ("torch",), "sklearn": ("sklearn",), "jax": ("jax", "jaxlib", "optax")}
JAX_ENV = {"JAX_PLATFORMS": "cpu"}  # added to the JAX children's environment
# at shapes of this many elements or more, JAX is timed in several fresh processes
JAX_LARGE = 1_000_000


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
    """Only in the JAX child process (see :func:`jax_worker`)."""
    import jax  # type: ignore[import-not-found, unused-ignore]
    import jax.numpy as jnp  # type: ignore[import-not-found, unused-ignore]
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
           "block_until_ready on each call, float64 with jax_enable_x64; on the CPU "
           "(JAX_PLATFORMS=cpu in the child's environment: a GPU that JAX sees is not used); "
           "timed in a fresh child process per shape and dtype (JAX's times depend on what "
           "its process ran before), pinned to t CPUs for t != all (XLA's thread pool takes "
           "no thread count), so not interleaved with the others",
}


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


# --------------------------------------------------------------------------
# the JAX child processes
# --------------------------------------------------------------------------


def _jax_cpus(setting: str) -> Optional[List[int]]:
    """The CPUs a JAX child runs on for a thread setting (None: all usable ones)."""
    if setting == "all" or not hasattr(os, "sched_getaffinity"):
        return None
    usable = sorted(os.sched_getaffinity(0))
    count = thread_count(setting)
    return usable[:count] if count < len(usable) else None


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
    ``--xla_cpu_multi_thread_eigen=false`` left it using both CPUs). The children
    run JAX on the CPU (``JAX_PLATFORMS=cpu``) and import this process's
    cysoftmax (:mod:`cysoftmax.bench.children`).
    """
    cpus = _jax_cpus(setting)
    result: Dict[str, Any] = {"timings": {}, "errors": {}, "cpus": cpus}
    for shape in shapes:
        for dtype in dtypes:
            request = {"configs": [{"shape": list(shape), "dtype": dtype}],
                       "threads": thread_count(setting), "cpus": cpus,
                       "budget": budget, "repeats": repeats}
            large = shape[0] * shape[1] >= JAX_LARGE
            for _ in range(processes if large else 1):
                _jax_process(request, f"{shape[0]}x{shape[1]}/{dtype}", result)
    return result


def _jax_answer(request: Dict[str, Any]) -> Dict[str, Any]:
    """Run one JAX child process; its answer, or ``{"error": why}``."""
    command = python_command("from cysoftmax.bench.peers import jax_worker\n"
                             "raise SystemExit(jax_worker())\n")
    try:
        proc = subprocess.run(command, input=json.dumps(request), capture_output=True,
                              text=True, timeout=900, env=dict(os.environ, **JAX_ENV))
    except subprocess.TimeoutExpired:
        return {"error": "the JAX child process timed out"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"the JAX child process failed: {tail[0]}"}
    try:
        answer: Dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "the JAX child process printed no result"}
    return answer


def _jax_process(request: Dict[str, Any], label: str, result: Dict[str, Any]) -> None:
    """One JAX child process; merges its timings into ``result`` (best median wins)."""
    answer = _jax_answer(request)
    if "error" in answer:
        result["errors"][label] = answer["error"]
        return
    for key, timing in answer["timings"].items():
        best = result["timings"].get(key)
        medians = (best or {}).get("process_medians_ns", []) + [timing["median_ns"]]
        if best is None or timing["median_ns"] < best["median_ns"]:
            best = timing
        result["timings"][key] = dict(best, process_medians_ns=medians)
    result["version"] = answer.get("version")
    result["platform"] = answer.get("platform")


def jax_worker() -> int:
    """Child process: read a request on stdin, print the JAX timings as one JSON line."""
    request = json.loads(sys.stdin.read())
    if request.get("cpus"):  # before JAX starts its threads: they all inherit it
        os.sched_setaffinity(0, request["cpus"])
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 stays float64
    platform = jax.default_backend()
    if platform != "cpu":
        raise RuntimeError(f"JAX runs on {platform}, not the CPU (is JAX_PLATFORMS=cpu set?)")
    timings: Dict[str, Any] = {}
    for cfg in request["configs"]:
        shape, dtype = tuple(cfg["shape"]), cfg["dtype"]
        scores, labels = make_inputs(shape, dtype)  # type: ignore[arg-type]
        for kind in KINDS:
            key = f"{shape[0]}x{shape[1]}/{dtype}/{kind}"
            timings[key] = measure(jax_peer(kind, scores, labels, request["threads"]),
                                   request["budget"], request["repeats"])
    print(json.dumps({"timings": timings, "version": jax.__version__, "platform": platform,
                      "cpus": request.get("cpus")}))
    return 0
