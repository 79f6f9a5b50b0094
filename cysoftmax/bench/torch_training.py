"""PyTorch training step and loss: ``python -m cysoftmax.bench.torch_training``.

Usage::

    python -m cysoftmax.bench.torch_training [--batch 4096] [--features 512]
        [--hidden 512] [--classes 32000] [--threads N] [--steps 5] [--warmup 1]
        [--rounds 1] [--variants cysoftmax,torch,torch-chunked,floor]
        [--loss-shapes 4096x32000,4096x1000] [--loss-budget 6] [--json | --markdown]
        [--save-json FILE]

Two sections, both in float32 on the CPU, with PyTorch and cysoftmax on the same
number of threads (``torch.set_num_threads(t)`` and ``num_threads=t``; ``--threads``,
default every CPU the process may use):

Training step
    An MLP classifier, ``Linear(features, hidden) -> ReLU -> Linear(hidden, classes)``
    with biases, on ``batch`` random samples with random labels; one step is
    ``zero_grad``, the forward pass, the mean loss, ``backward`` and an SGD step. The
    output layer and the loss are computed by one of the variants

    ``cysoftmax``
        ``cysoftmax.torch.linear_cross_entropy(h, W, y, linear_bias=b, num_threads=t)``
    ``torch``
        ``F.cross_entropy(F.linear(h, W, b), y)``
    ``torch-chunked``
        ``F.linear_cross_entropy(h, W, y, linear_bias=b,
        options=nn.LinearCrossEntropyOptions())``, PyTorch's chunked path (PyTorch
        2.13 or later; reported as skipped where it is missing)
    ``floor``
        ``F.linear(h, W, b)`` and a loss that costs nothing: its forward returns 0
        and its backward a fixed gradient (that of the mean loss at the first call,
        a warm-up step when ``warmup >= 1``). The step's time and memory without the
        loss's own: what an unfused loss, however fast, cannot go below (the output
        layer's matrix products dominate a large layer's step)

    Each variant runs in a fresh Python process (per round, the variants in turn):
    the model, data and optimizer are built from the same seed, then ``warmup``
    untimed and ``steps`` timed steps run. The time is the median step; the memory
    is the peak resident set size during the timed steps minus the resident size
    just before them (after the warm-up, whose first step also loads code and
    starts threads, with the parameters' gradients freed). On Linux the kernel's
    high-water mark is reset there (``/proc/self/clear_refs``); elsewhere the
    process's lifetime peak (``ru_maxrss``) is used, which may include the setup's
    and the warm-up's. PyTorch's allocator keeps no statistics on the CPU, so the
    resident size is what is measured: it counts every tensor PyTorch holds; glibc
    returns blocks of 32 MiB or more to the system when they are freed, while
    smaller freed blocks may stay resident and be reused (not counted again).

Loss alone
    ``cysoftmax.torch.cross_entropy(x, y, num_threads=t)`` and ``F.cross_entropy(x,
    y)``, each followed by ``torch.autograd.grad`` (forward and backward), at each
    ``--loss-shapes`` shape, in one fresh process, their samples taken in turn
    (:func:`cysoftmax.bench.measure_group`) with those of the kernel alone:
    ``cysoftmax.softmax_cross_entropy(scores, labels, out=grad, num_threads=t)`` on
    the same memory, into a preallocated gradient (what the operator adds to it is
    the gradient's allocation, the backward's scaling and the dispatch).

Every process imports cysoftmax before torch (so all of them run with the OpenMP
settings cysoftmax makes, see :mod:`cysoftmax._openmp_env`). Speed-ups are other /
cysoftmax: above 1 cysoftmax is faster; so are the memory factors.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
import warnings
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .children import python_command
from .inputs import parse_shapes
from .machine import cpu_info, loadavg, versions
from .report import fmt_time, text_table
from .timing import Loop, loop_of, measure_group

VARIANTS = ("cysoftmax", "torch", "torch-chunked", "floor")
VARIANT_CODE = {
    "cysoftmax": "cysoftmax.torch.linear_cross_entropy(h, W, y, linear_bias=b, num_threads=t)",
    "torch": "F.cross_entropy(F.linear(h, W, b), y)",
    "torch-chunked": "F.linear_cross_entropy(h, W, y, linear_bias=b, "
                     "options=nn.LinearCrossEntropyOptions())",
    "floor": "F.linear(h, W, b), then a loss whose forward returns 0 and whose backward "
             "returns a fixed gradient (the mean loss's at the warm-up step)",
}
DEFAULT_LOSS_SHAPES: List[Tuple[int, int]] = [(4096, 32000), (4096, 1000)]
SEED = 20261201
LEARNING_RATE = 0.01
# the project's goals: cysoftmax / F.cross_entropy(F.linear(...))
GOAL_TRAIN_SPEEDUP, GOAL_TRAIN_MEMORY, GOAL_LOSS_SPEEDUP = 1.5, 5.0, 3.0
WORKER_TIMEOUT_S = 3600

Report = Dict[str, Any]


# --------------------------------------------------------------------------
# the child processes
# --------------------------------------------------------------------------


def _status_kib(field: str) -> Optional[int]:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's resident-size high-water mark (Linux 4.0+); True if it was."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _maxrss_kib() -> int:
    """The process's peak resident size so far, in KiB (ru_maxrss is in bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def _loss_of(variant: str, threads: int, shape: Tuple[int, int]) -> Callable[..., Any]:
    """``(h, W, b, y) -> mean loss`` of the output layer and the loss of ``variant``
    (logits of ``shape``)."""
    import torch
    import torch.nn.functional as F

    import cysoftmax.torch as ct

    if variant == "cysoftmax":
        return lambda h, W, b, y: ct.linear_cross_entropy(h, W, y, linear_bias=b,
                                                          num_threads=threads)
    if variant == "torch":
        return lambda h, W, b, y: F.cross_entropy(F.linear(h, W, b), y)
    if variant == "torch-chunked":
        if not hasattr(F, "linear_cross_entropy"):
            raise LookupError(f"torch {torch.__version__} has no F.linear_cross_entropy")
        options = torch.nn.LinearCrossEntropyOptions()
        return lambda h, W, b, y: F.linear_cross_entropy(h, W, y, linear_bias=b,
                                                         options=options)
    if variant == "floor":
        kept: List[Any] = []  # the gradient of the first call's mean loss

        class FreeLoss(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, logits: Any, y: Any) -> Any:
                if not kept:  # the warm-up step: realistic values, computed once
                    p = torch.softmax(logits, dim=1)
                    p[torch.arange(len(y)), y] -= 1.0
                    kept.append(p.div_(len(y)))
                return logits.new_zeros(())

            @staticmethod
            def backward(ctx: Any, grad_output: Any) -> Any:
                return kept[0], None

        return lambda h, W, b, y: FreeLoss.apply(F.linear(h, W, b), y)
    raise ValueError(f"unknown variant {variant!r}")


def train_worker(request: Dict[str, Any]) -> Dict[str, Any]:
    """One variant's training steps in this process (run in a fresh one): step times,
    losses and the peak resident size above the size before the steps."""
    import torch

    threads = request["threads"]
    torch.set_num_threads(threads)
    try:
        loss_of = _loss_of(request["variant"], threads,
                           (request["batch"], request["classes"]))
    except LookupError as exc:
        return {"variant": request["variant"], "skipped": str(exc)}
    torch.manual_seed(SEED)
    body = torch.nn.Sequential(torch.nn.Linear(request["features"], request["hidden"]),
                               torch.nn.ReLU())
    head = torch.nn.Linear(request["hidden"], request["classes"])
    X = torch.randn(request["batch"], request["features"])
    y = torch.randint(0, request["classes"], (request["batch"],))
    opt = torch.optim.SGD([*body.parameters(), *head.parameters()], lr=LEARNING_RATE)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_of(body(X), head.weight, head.bias, y)
        loss.backward()
        opt.step()
        return float(loss.item())

    times: List[float] = []
    losses: List[float] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(request["warmup"] + request["steps"]):
            if i == request["warmup"]:  # the baseline: after the warm-up, without gradients
                opt.zero_grad(set_to_none=True)
                gc.collect()
                baseline = _status_kib("VmRSS")
                hwm_reset = _reset_peak()
                if baseline is None or not hwm_reset:
                    baseline = _maxrss_kib()  # elsewhere: the lifetime peak so far
            t0 = time.perf_counter()
            losses.append(step())
            times.append(time.perf_counter() - t0)
    peak = _status_kib("VmHWM") if hwm_reset else _maxrss_kib()
    assert peak is not None and baseline is not None
    w = request["warmup"]
    return {
        "variant": request["variant"], "threads": torch.get_num_threads(),
        "step_s": times[w:], "warmup_s": times[:w], "losses": losses,
        "baseline_mib": baseline / 1024, "peak_above_baseline_mib": (peak - baseline) / 1024,
        "peak_source": "VmHWM, reset before the steps" if hwm_reset else "ru_maxrss",
        "warnings": sorted({f"{c.category.__name__}: {c.message}" for c in caught}),
    }


def loss_worker(request: Dict[str, Any]) -> Dict[str, Any]:
    """Forward + backward of the loss alone at each shape, cysoftmax and torch in turn,
    and cysoftmax's kernel alone (NumPy API, preallocated gradient)."""
    import torch
    import torch.nn.functional as F

    import cysoftmax.torch as ct
    from cysoftmax import softmax_cross_entropy

    threads = request["threads"]
    torch.set_num_threads(threads)
    losses: Dict[str, Callable[[Any, Any], Any]] = {
        "cysoftmax": lambda x, y: ct.cross_entropy(x, y, num_threads=threads),
        "torch": F.cross_entropy,
    }

    def forward_backward(loss_fn: Callable[[Any, Any], Any], x: Any, y: Any) -> Loop:
        return loop_of(lambda: torch.autograd.grad(loss_fn(x, y), x))

    rows = []
    for n, c in request["shapes"]:
        g = torch.Generator().manual_seed(SEED)
        x = (2.0 * torch.randn(n, c, generator=g)).requires_grad_()
        y = torch.randint(0, c, (n,), generator=g)
        ref = F.cross_entropy(x.detach().double(), y).item()  # float64 reference
        check: Dict[str, float] = {}
        grads = {}
        for name, fn in losses.items():
            loss = fn(x, y)
            check[f"{name}_loss_rel_err"] = abs(loss.item() - ref) / abs(ref)
            grads[name] = torch.autograd.grad(loss, x)[0]
        check["grad_max_abs_diff"] = (grads["cysoftmax"] - grads["torch"]).abs().max().item()
        del grads, loss
        loops = {k: forward_backward(f, x, y) for k, f in losses.items()}
        # the kernel alone, through the NumPy API into a preallocated gradient: what the
        # operator adds (allocations, the backward's scaling, dispatch) is the difference
        scores, labels = x.detach().numpy(), y.numpy()
        out = torch.empty_like(x).numpy()
        loops["kernel"] = loop_of(partial(softmax_cross_entropy, scores, labels, out=out,
                                          num_threads=threads))
        timings = measure_group(loops, request["budget"], request["repeats"])
        rows.append({"shape": [n, c], "timings": timings, "check": check,
                     "speedup": timings["torch"]["median_ns"]
                     / timings["cysoftmax"]["median_ns"]})
        del x, y, scores, labels, out, loops
        gc.collect()
    return {"threads": torch.get_num_threads(), "rows": rows}


_WORKERS = {"train": train_worker, "loss": loss_worker}


def worker_main() -> int:
    """The child's entry point: a JSON request on stdin, the JSON answer on stdout."""
    request = json.loads(sys.stdin.read())
    answer = _WORKERS[request["kind"]](request)
    print(json.dumps(answer))
    return 0


def run_child(request: Dict[str, Any]) -> Dict[str, Any]:
    """Run one request in a fresh Python process that imports this cysoftmax; its answer,
    or ``{"error": ...}`` when it failed."""
    code = "import sys\nfrom cysoftmax.bench.torch_training import worker_main\n" \
           "sys.exit(worker_main())\n"
    proc = subprocess.run(python_command(code), input=json.dumps(request), text=True,
                          capture_output=True, timeout=WORKER_TIMEOUT_S)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"exit status {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    answer: Dict[str, Any] = json.loads(lines[-1])
    return answer


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _summarize_train(variant: str, answers: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One variant's processes: pooled step times, the largest peak."""
    for a in answers:
        if "skipped" in a or "error" in a:
            return {"variant": variant, **{k: a[k] for k in ("skipped", "error") if k in a}}
    steps = [t for a in answers for t in a["step_s"]]
    return {
        "variant": variant, "code": VARIANT_CODE[variant], "processes": len(answers),
        "threads": answers[0]["threads"], "steps": len(steps),
        "median_step_s": statistics.median(steps), "min_step_s": min(steps),
        "process_medians_s": [statistics.median(a["step_s"]) for a in answers],
        "peak_above_baseline_mib": max(a["peak_above_baseline_mib"] for a in answers),
        "peaks_mib": [a["peak_above_baseline_mib"] for a in answers],
        "baseline_mib": answers[0]["baseline_mib"], "peak_source": answers[0]["peak_source"],
        "first_loss": answers[0]["losses"][0], "losses": answers[0]["losses"],
        "warnings": sorted({w for a in answers for w in a["warnings"]}),
    }


def _train_ratios(train: Dict[str, Dict[str, Any]]) -> None:
    """Speed-up and memory factor of cysoftmax against each other variant (other / ours),
    and each variant's first loss against torch's (the same model and data)."""
    ours = train.get("cysoftmax", {})
    ref = train.get("torch", {})
    for name, entry in train.items():
        if "median_step_s" not in entry:
            continue
        if "first_loss" in ref and name != "floor":  # the floor's loss is 0
            entry["first_loss_rel_diff_vs_torch"] = (
                abs(entry["first_loss"] - ref["first_loss"]) / abs(ref["first_loss"]))
        if name != "cysoftmax" and "median_step_s" in ours:
            entry["speedup_of_cysoftmax"] = entry["median_step_s"] / ours["median_step_s"]
            entry["memory_factor_of_cysoftmax"] = (
                entry["peak_above_baseline_mib"] / max(ours["peak_above_baseline_mib"], 1e-9))


def _goal(name: str, value: Optional[float], limit: float, detail: str) -> Dict[str, Any]:
    if value is None:
        return {"goal": name, "holds": None, "detail": "not measured in this run"}
    return {"goal": name, "holds": value >= limit,
            "detail": f"{value:.2f}x (goal {limit:g}x){detail}"}


def evaluate_goals(report: Report) -> List[Dict[str, Any]]:
    """The project's goals for the PyTorch front end, against ``F.cross_entropy``."""
    ref = report["train"].get("torch", {})
    floor = report["train"].get("floor", {})
    ceiling = ""
    if "median_step_s" in ref and "median_step_s" in floor:
        ceiling = (f"; a loss that cost nothing would give "
                   f"{ref['median_step_s'] / floor['median_step_s']:.2f}x (the floor)")
    goals = [
        _goal("training step: cysoftmax.torch.linear_cross_entropy at least "
              f"{GOAL_TRAIN_SPEEDUP:g}x faster than F.cross_entropy(F.linear(...))",
              ref.get("speedup_of_cysoftmax"), GOAL_TRAIN_SPEEDUP, ceiling),
        _goal(f"training step: at least {GOAL_TRAIN_MEMORY:g}x less peak memory than "
              "F.cross_entropy(F.linear(...))", ref.get("memory_factor_of_cysoftmax"),
              GOAL_TRAIN_MEMORY, ""),
    ]
    rows = report["loss"].get("rows", [])
    worst = min(rows, key=lambda r: r["speedup"]) if rows else None
    goals.append(_goal(
        f"loss alone (forward + backward): cysoftmax.torch.cross_entropy at least "
        f"{GOAL_LOSS_SPEEDUP:g}x faster than F.cross_entropy at every shape",
        None if worst is None else worst["speedup"], GOAL_LOSS_SPEEDUP,
        "" if worst is None else f", worst at {worst['shape'][0]}x{worst['shape'][1]}"))
    return goals


def run(batch: int = 4096, features: int = 512, hidden: int = 512, classes: int = 32000,
        variants: Sequence[str] = VARIANTS, threads: Optional[int] = None, steps: int = 5,
        warmup: int = 1, rounds: int = 1,
        loss_shapes: Sequence[Tuple[int, int]] = DEFAULT_LOSS_SHAPES,
        loss_budget: float = 6.0, loss_repeats: int = 7, quiet: bool = False,
        command: Optional[str] = None) -> Report:
    """Run both sections; return a JSON-ready dict (see the module's docstring)."""
    started = time.perf_counter()
    t = _usable_cpus() if threads is None else threads

    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    report: Report = {
        "command": command, "machine": cpu_info(), "versions": versions(),
        "settings": {"batch": batch, "features": features, "hidden": hidden,
                     "classes": classes, "dtype": "float32", "threads": t, "steps": steps,
                     "warmup": warmup, "rounds": rounds, "variants": list(variants),
                     "loss_shapes": [list(s) for s in loss_shapes],
                     "loss_budget_s": loss_budget, "loss_repeats": loss_repeats,
                     "logits_mib": batch * classes * 4 / 2**20},
        "train": {}, "loss": {},
    }
    model = {"batch": batch, "features": features, "hidden": hidden, "classes": classes,
             "threads": t, "steps": steps, "warmup": warmup}
    answers: Dict[str, List[Dict[str, Any]]] = {v: [] for v in variants}
    for r in range(rounds if variants else 0):
        for v in variants:
            log(f"training step, {v}, round {r + 1} of {rounds} ...")
            answers[v].append(run_child({"kind": "train", "variant": v, **model}))
    report["train"] = {v: _summarize_train(v, a) for v, a in answers.items()}
    _train_ratios(report["train"])
    if loss_shapes:
        log("loss alone ...")
        report["loss"] = run_child({"kind": "loss", "threads": t,
                                    "shapes": [list(s) for s in loss_shapes],
                                    "budget": loss_budget, "repeats": loss_repeats})
    report["goals"] = evaluate_goals(report)
    load = loadavg()
    if load is not None:
        report["machine"]["loadavg_at_end"] = load
    report["total_seconds"] = time.perf_counter() - started
    return report


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------


def _train_table(report: Report) -> Tuple[List[str], List[List[str]]]:
    header = ["variant", "time per step", "fastest step", "peak memory",
              "speed-up of cysoftmax", "memory factor of cysoftmax", "first loss"]
    rows = []
    for name, e in report["train"].items():
        if "median_step_s" not in e:
            why = e.get("skipped") or e.get("error", "?")
            rows.append([name, f"skipped: {why}"] + [""] * (len(header) - 2))
            continue
        speed = e.get("speedup_of_cysoftmax")
        mem = e.get("memory_factor_of_cysoftmax")
        rows.append([
            name, fmt_time(e["median_step_s"] * 1e9), fmt_time(e["min_step_s"] * 1e9),
            f"{e['peak_above_baseline_mib']:.0f} MiB",
            "-" if speed is None else f"{speed:.2f}x",
            "-" if mem is None else f"{mem:.2f}x",
            f"{e['first_loss']:.5f}",
        ])
    return header, rows


def _loss_table(report: Report) -> Tuple[List[str], List[List[str]]]:
    header = ["shape", "cysoftmax", "F.cross_entropy", "speed-up of cysoftmax",
              "kernel alone (out=)", "max abs grad diff"]
    rows = [[f"{r['shape'][0]}x{r['shape'][1]}",
             fmt_time(r["timings"]["cysoftmax"]["median_ns"]),
             fmt_time(r["timings"]["torch"]["median_ns"]), f"{r['speedup']:.2f}x",
             fmt_time(r["timings"].get("kernel", {}).get("median_ns")),
             f"{r['check']['grad_max_abs_diff']:.1e}"]
            for r in report["loss"].get("rows", [])]
    return header, rows


def _lines(report: Report) -> Dict[str, List[str]]:
    s, m, v = report["settings"], report["machine"], report["versions"]
    intro = [
        f"CPU: {m.get('model', '?')}; {m.get('logical_cpus')} logical CPUs "
        f"({m.get('usable_cpus', '?')} usable); load average at start "
        f"{m.get('loadavg_at_start')}, at end {m.get('loadavg_at_end')}",
        "versions: " + ", ".join(f"{k} {v[k]}" for k in ("python", "cysoftmax", "numpy",
                                                          "torch") if v.get(k)),
        f"threads: {s['threads']} (torch.set_num_threads and cysoftmax's num_threads)",
    ]
    train = [
        f"training step: MLP {s['features']} -> {s['hidden']} (ReLU) -> {s['classes']}, "
        f"batch {s['batch']}, float32, zero_grad + forward + mean loss + backward + SGD; "
        f"median of {s['steps']} steps after {s['warmup']} warm-up per process, "
        f"{s['rounds']} fresh process(es) per variant; peak memory: resident size above "
        f"the size before the steps (the logits alone are {s['logits_mib']:.3g} MiB)",
    ]
    train += [f"{name}: {e['code']}" for name, e in report["train"].items() if "code" in e]
    for name, e in report["train"].items():
        train += [f"{name}: warning {w}" for w in e.get("warnings", [])]
        if "first_loss_rel_diff_vs_torch" in e and name != "torch":
            train.append(f"{name}: first loss differs from torch's by "
                         f"{e['first_loss_rel_diff_vs_torch']:.1e} (relative)")
    loss = []
    if report["loss"].get("rows"):
        loss.append(f"loss alone: forward + torch.autograd.grad, float32, mean loss; "
                    f"median of up to {s['loss_repeats']} samples, taken in turn")
    elif "error" in report["loss"]:
        loss.append(f"loss alone: failed: {report['loss']['error']}")
    goals = []
    for g in report["goals"]:
        status = {True: "HOLDS", False: "FAILS", None: "n/a"}[g["holds"]]
        goals.append(f"[{status}] {g['goal']}: {g['detail']}")
    return {"intro": intro, "train": train, "loss": loss, "goals": goals}


SPEEDUP_NOTE = ("Speed-up and memory factor of cysoftmax: the other's time (peak memory) "
                "over cysoftmax's; above 1 cysoftmax is faster (smaller).")


def format_text(report: Report) -> str:
    parts = _lines(report)
    out = ["cysoftmax PyTorch benchmark", *parts["intro"], SPEEDUP_NOTE, ""]
    out += parts["train"] + text_table(*_train_table(report)) + [""]
    if report["loss"].get("rows"):
        out += parts["loss"] + text_table(*_loss_table(report)) + [""]
    else:
        out += parts["loss"]
    out += ["goals:", *parts["goals"], f"total time {report['total_seconds']:.0f} s"]
    return "\n".join(out)


def _markdown_table(header: List[str], rows: List[List[str]]) -> List[str]:
    return (["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows])


def format_markdown(report: Report) -> str:
    parts = _lines(report)
    out = [f"- {line}" for line in parts["intro"]] + ["", SPEEDUP_NOTE, ""]
    out += [f"- {line}" for line in parts["train"]] + [""]
    out += _markdown_table(*_train_table(report)) + [""]
    if report["loss"].get("rows"):
        out += [f"- {line}" for line in parts["loss"]] + [""]
        out += _markdown_table(*_loss_table(report)) + [""]
    else:
        out += [f"- {line}" for line in parts["loss"]]
    out += ["Goals:", ""] + [f"- {line}" for line in parts["goals"]]
    out += ["", f"Total time {report['total_seconds']:.0f} s."]
    return re.sub(r"(\d) us\b", "\\1 µs", "\n".join(out))


# --------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _variants(text: str) -> List[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items or any(x not in VARIANTS for x in items):
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(VARIANTS)}; got {text!r}")
    return items


def _loss_shapes(text: str) -> List[Tuple[int, int]]:
    return [] if text == "none" else parse_shapes(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cysoftmax.bench.torch_training",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=_positive_int, default=4096, help="default 4096")
    p.add_argument("--features", type=_positive_int, default=512,
                   help="input features (default 512)")
    p.add_argument("--hidden", type=_positive_int, default=512,
                   help="hidden units, the output layer's inputs (default 512)")
    p.add_argument("--classes", type=_positive_int, default=32000, help="default 32000")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="threads of torch and cysoftmax (default: the usable CPUs)")
    p.add_argument("--steps", type=_positive_int, default=5,
                   help="timed steps per process (default 5)")
    p.add_argument("--warmup", type=_non_negative_int, default=1,
                   help="untimed steps first (default 1)")
    p.add_argument("--rounds", type=_positive_int, default=1,
                   help="fresh processes per variant, the variants in turn (default 1)")
    p.add_argument("--variants", type=_variants, default=list(VARIANTS),
                   help="cysoftmax,torch,torch-chunked,floor (default all)")
    p.add_argument("--loss-shapes", type=_loss_shapes, default=DEFAULT_LOSS_SHAPES,
                   help="NxC shapes of the loss alone, comma-separated, or 'none' "
                        "(default 4096x32000,4096x1000)")
    p.add_argument("--loss-budget", type=_positive_float, default=6.0,
                   help="seconds per implementation and shape of the loss alone (default 6)")
    p.add_argument("--loss-repeats", type=_positive_int, default=7,
                   help="samples per implementation and shape, at most (default 7)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the results as JSON")
    fmt.add_argument("--markdown", action="store_true", help="print the results as markdown")
    p.add_argument("--save-json", metavar="FILE", help="also write the JSON results to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    report = run(batch=args.batch, features=args.features, hidden=args.hidden,
                 classes=args.classes, variants=args.variants, threads=args.threads,
                 steps=args.steps, warmup=args.warmup, rounds=args.rounds,
                 loss_shapes=args.loss_shapes, loss_budget=args.loss_budget,
                 loss_repeats=args.loss_repeats, quiet=args.quiet,
                 command=" ".join(["python -m cysoftmax.bench.torch_training",
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
