"""Scaling of :mod:`cysoftmax.dask` over worker processes.

``python -m cysoftmax.bench.dask_scaling [--n N --d D --classes C --workers 1,2 ...]``

For each worker count (``--workers 1,2``) a ``distributed.LocalCluster`` of that many
single-threaded worker processes is started, the data are generated on the workers
and persisted there, and the run times

* one distributed loss + gradient of the linear model
  (``dask.compute(*cysoftmax.dask.linear_softmax_loss(...))``), ``--evals`` times:
  the median wall time, the scheduling overhead = wall time minus the busiest
  worker's time in its tasks, and the balance = all workers' time in tasks over the
  busiest worker's (the speed-up the split of the work allows; from Dask's task
  stream);
* the overhead alone: the same call, and a fit's time per iteration, on
  ``--overhead-chunks`` chunks of 16 rows;
* ``DaskSoftmaxClassifier(max_iter=--iters, tol=0)`` fits: time per L-BFGS iteration;
* on a two-class version of the labels, the same fit beside dask-ml's
  ``LogisticRegression(solver="lbfgs")`` (when dask-ml is installed);

then, in this process with the data in memory, scikit-learn's multinomial
``LogisticRegression`` and :class:`cysoftmax.SoftmaxClassifier` for the same number of
iterations (their own threads: all CPUs). ``--out-of-core DIR`` adds a run on data
written to disk (zarr if installed, else one ``.npy`` file per chunk) larger than each
worker's ``--memory-limit``, with each worker's peak resident memory.

Nothing here is a test: times depend on the machine and its load (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from typing import Any, Dict, List, Optional

import numpy as np

from .machine import loadavg, package_version
from .report import text_table


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cysoftmax.bench.dask_scaling",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000, help="rows (default 200000)")
    p.add_argument("--d", type=int, default=256, help="features (default 256)")
    p.add_argument("--classes", type=int, default=100, help="classes (default 100)")
    p.add_argument("--chunk-rows", type=int, default=12_500, help="rows per chunk")
    p.add_argument("--workers", default="1,2", help="worker counts (default 1,2)")
    p.add_argument("--evals", type=int, default=5, help="timed loss+gradient calls")
    p.add_argument("--iters", type=int, default=10, help="L-BFGS iterations per fit")
    p.add_argument("--overhead-chunks", type=int, default=32)
    p.add_argument("--reg", type=float, default=1e-4)
    p.add_argument("--no-peers", action="store_true", help="skip dask-ml and scikit-learn")
    p.add_argument("--out-of-core", metavar="DIR", default=None,
                   help="also train from chunks written under DIR ('tmp': a temporary "
                        "directory, removed afterwards)")
    p.add_argument("--ooc-n", type=int, default=1_000_000, help="rows of the on-disk set")
    p.add_argument("--ooc-d", type=int, default=128)
    p.add_argument("--memory-limit", default="512MiB", help="per worker, out of core")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p.parse_args(argv)


def _true_weights(d: int, c: int) -> np.ndarray:
    return np.random.default_rng(12345).normal(size=(d, c)) / np.sqrt(d)


def _make_data(da: Any, n: int, d: int, c: int, rows: int, seed: int = 0):
    """Lazy X (standard normal) and labels drawn from a linear softmax model."""
    rng = da.random.default_rng(seed)
    X = rng.standard_normal((n, d), chunks=(rows, d))
    noise = rng.gumbel(size=(n, c), chunks=(rows, c))
    y = da.argmax(X @ _true_weights(d, c) + noise, axis=1)
    return X, y


def _worker_busy(stream: List[Dict[str, Any]]) -> Dict[str, float]:
    """Seconds each worker spent computing tasks of the stream."""
    busy: Dict[str, float] = {}
    for task in stream:
        for ss in task.get("startstops", ()):
            if ss.get("action") == "compute":
                busy[task["worker"]] = busy.get(task["worker"], 0.0) + ss["stop"] - ss["start"]
    return busy


def _time_evals(dask: Any, distributed: Any, cd: Any, client: Any, X: Any, y: Any,
                n_classes: int, reg: float, evals: int) -> Dict[str, float]:
    W = 0.01 * np.random.default_rng(0).standard_normal((X.shape[1], n_classes))
    b = np.zeros(n_classes)
    dask.compute(*cd.linear_softmax_loss(W, X, y, b=b, reg=reg))  # warm-up
    walls, overheads, balance = [], [], []
    for _ in range(evals):
        with distributed.get_task_stream(client) as ts:
            start = time.perf_counter()
            dask.compute(*cd.linear_softmax_loss(W, X, y, b=b, reg=reg))
            wall = time.perf_counter() - start
        busy = _worker_busy(ts.data) or {"": 0.0}
        walls.append(wall)
        overheads.append(wall - max(busy.values()))
        balance.append(sum(busy.values()) / max(max(busy.values()), 1e-12))
    # balance: the work over the busiest worker's share, the speed-up the split allows
    return {"eval_s": statistics.median(walls), "overhead_s": statistics.median(overheads),
            "balance": statistics.median(balance)}


def _time_fit(est: Any, X: Any, y: Any) -> Dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter reached: expected
        start = time.perf_counter()
        est.fit(X, y)
        total = time.perf_counter() - start
    n_iter = int(np.max(getattr(est, "n_iter_", 0)))  # (scikit-learn's is an array)
    return {"fit_s": total, "n_iter": n_iter,
            "per_iter_s": total / n_iter if n_iter else float("nan")}


def _cluster_run(args: argparse.Namespace, n_workers: int) -> Dict[str, Any]:
    import dask  # type: ignore[import-not-found, unused-ignore]
    import dask.array as da  # type: ignore[import-not-found, unused-ignore]
    import distributed  # type: ignore[import-not-found, unused-ignore]

    import cysoftmax.dask as cd

    out: Dict[str, Any] = {"workers": n_workers}
    with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", memory_limit=0,
                                  silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        X, y = _make_data(da, args.n, args.d, args.classes, args.chunk_rows)
        X, y = dask.persist(X, y)
        distributed.wait([X, y])
        out.update(_time_evals(dask, distributed, cd, client, X, y, args.classes, args.reg,
                               args.evals))
        tiny_X, tiny_y = dask.persist(*_make_data(da, 16 * args.overhead_chunks, args.d,
                                                  args.classes, 16, seed=1))
        tiny = _time_evals(dask, distributed, cd, client, tiny_X, tiny_y, args.classes,
                           args.reg, args.evals)
        out["tiny_eval_s"], out["tiny_overhead_s"] = tiny["eval_s"], tiny["overhead_s"]
        # a fit on the tiny chunks: its time per L-BFGS iteration is all overhead
        out["tiny_fit"] = _time_fit(cd.DaskSoftmaxClassifier(reg=args.reg, max_iter=args.iters,
                                                             tol=0.0, random_state=0),
                                    tiny_X, tiny_y)
        est = cd.DaskSoftmaxClassifier(reg=args.reg, max_iter=args.iters, tol=0.0,
                                       random_state=0)
        out["fit"] = _time_fit(est, X, y)
        if not args.no_peers:
            y2 = (y % 2).persist()
            out["binary_cysoftmax"] = _time_fit(
                cd.DaskSoftmaxClassifier(reg=args.reg, max_iter=args.iters, tol=0.0,
                                         random_state=0), X, y2)
            try:
                from dask_ml.linear_model import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
                    LogisticRegression,
                )
            except ImportError:
                out["binary_dask_ml"] = None
            else:
                # dask-glm minimises sum(loss) + lamduh/2 |beta|^2, lamduh = 1 / C
                est_ml = LogisticRegression(solver="lbfgs", C=1.0 / (args.reg * args.n),
                                            max_iter=args.iters, tol=1e-12)
                res = _time_fit(est_ml, X, y2)
                res["n_iter"] = args.iters  # dask-glm does not report it: at most max_iter
                res["per_iter_s"] = res["fit_s"] / args.iters
                out["binary_dask_ml"] = res
    return out


def _in_memory_run(args: argparse.Namespace) -> Dict[str, Any]:
    import dask  # type: ignore[import-not-found, unused-ignore]
    import dask.array as da  # type: ignore[import-not-found, unused-ignore]

    import cysoftmax

    with dask.config.set(scheduler="threads"):
        X, y = dask.compute(*_make_data(da, args.n, args.d, args.classes, args.chunk_rows))
    out: Dict[str, Any] = {"cysoftmax": _time_fit(
        cysoftmax.SoftmaxClassifier(reg=args.reg, max_iter=args.iters, tol=0.0,
                                    random_state=0), X, y)}
    try:
        from sklearn.linear_model import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            LogisticRegression,
        )
    except ImportError:
        out["sklearn"] = None
    else:
        sk = LogisticRegression(C=1.0 / (args.reg * args.n), max_iter=args.iters, tol=0.0)
        out["sklearn"] = _time_fit(sk, X, y)
        out["sklearn_binary"] = _time_fit(
            LogisticRegression(C=1.0 / (args.reg * args.n), max_iter=args.iters, tol=0.0),
            X, y % 2)
    return out


def _reset_peak_rss() -> None:
    """Start a new peak of this process's resident memory (Linux >= 4.0; else nothing)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss() -> int:
    """Peak resident memory (bytes) since exec or :func:`_reset_peak_rss`: VmHWM on
    Linux (ru_maxrss there carries the parent's peak over a fork and exec)."""
    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _chunk_data(i: int, rows: int, d: int, c: int):
    """Chunk ``i`` of the on-disk set: standard normal rows, labels of a linear model."""
    rng = np.random.default_rng([7, i])
    X = rng.standard_normal((rows, d))
    y = np.argmax(X @ _true_weights(d, c) + rng.gumbel(size=(rows, c)), axis=1)
    return X, y


def _write_chunk(directory: str, fmt: str, i: int, rows: int, d: int, c: int) -> int:
    """Generate chunk ``i`` and write it: into the zarr arrays, or as two .npy files."""
    X, y = _chunk_data(i, rows, d, c)
    if fmt == "zarr":
        import zarr  # type: ignore[import-not-found, import-untyped, unused-ignore]

        zarr.open_array(os.path.join(directory, "X.zarr"), mode="r+")[i * rows:(i + 1) * rows] = X
        zarr.open_array(os.path.join(directory, "y.zarr"), mode="r+")[i * rows:(i + 1) * rows] = y
    else:
        np.save(os.path.join(directory, f"X{i}.npy"), X)
        np.save(os.path.join(directory, f"y{i}.npy"), y)
    return i


def _out_of_core_run(args: argparse.Namespace) -> Dict[str, Any]:
    if args.out_of_core != "tmp":
        return _out_of_core_in(args, args.out_of_core)
    with tempfile.TemporaryDirectory(prefix="cysoftmax-ooc-") as directory:
        return _out_of_core_in(args, directory)  # (removed afterwards)


def _out_of_core_in(args: argparse.Namespace, directory: str) -> Dict[str, Any]:
    import dask  # type: ignore[import-not-found, unused-ignore]
    import dask.array as da  # type: ignore[import-not-found, unused-ignore]
    import distributed  # type: ignore[import-not-found, unused-ignore]

    import cysoftmax.dask as cd

    d, c, rows = args.ooc_d, 10, args.chunk_rows
    n_chunks = -(-args.ooc_n // rows)
    n = n_chunks * rows
    fmt = "zarr" if package_version("zarr") else "npy"
    out: Dict[str, Any] = {"rows": n, "features": d, "bytes": n * d * 8, "format": fmt,
                           "directory": directory}
    if fmt == "zarr":
        import zarr  # type: ignore[import-not-found, import-untyped, unused-ignore]

        zarr.open_array(os.path.join(directory, "X.zarr"), mode="w", shape=(n, d),
                        chunks=(rows, d), dtype="f8")
        zarr.open_array(os.path.join(directory, "y.zarr"), mode="w", shape=(n,),
                        chunks=(rows,), dtype="i8")
    start = time.perf_counter()
    # written by the workers of a first cluster, one chunk per task
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        client.gather(client.map(_write_chunk, [directory] * n_chunks, [fmt] * n_chunks,
                                 range(n_chunks), rows=rows, d=d, c=c))
    out["write_s"] = time.perf_counter() - start
    if fmt == "zarr":
        X = da.from_zarr(os.path.join(directory, "X.zarr"))
        y = da.from_zarr(os.path.join(directory, "y.zarr"))
    else:
        load = dask.delayed(np.load, pure=True)
        X = da.concatenate([da.from_delayed(load(os.path.join(directory, f"X{i}.npy")),
                                            (rows, d), float) for i in range(n_chunks)])
        y = da.concatenate([da.from_delayed(load(os.path.join(directory, f"y{i}.npy")),
                                            (rows,), np.int64) for i in range(n_chunks)])
    # trained by fresh workers, so that their peak memory is the training's
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", memory_limit=args.memory_limit,
                                  silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        limit = next(iter(client.scheduler_info()["workers"].values()))["memory_limit"]
        out["memory_limit"] = limit
        pids = client.run(os.getpid)
        client.run(_reset_peak_rss)
        out["worker_start_rss"] = sorted(client.run(_peak_rss).values())
        tracemalloc.start()
        est = cd.DaskSoftmaxClassifier(reg=args.reg, max_iter=3, tol=0.0, random_state=0)
        out["fit"] = _time_fit(est, X, y)
        out["client_peak_traced_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out["worker_peak_rss"] = sorted(client.run(_peak_rss).values())
        out["workers_restarted"] = client.run(os.getpid) != pids
        out["loss_history"] = est.loss_history_.tolist()
    return out


def _fmt(seconds: Optional[float]) -> str:
    if seconds is None or seconds != seconds:
        return "-"
    return f"{seconds * 1e3:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def format_text(report: Dict[str, Any]) -> str:
    s = report["settings"]
    lines = [f"python -m cysoftmax.bench.dask_scaling: N={s['n']}, D={s['d']}, "
             f"C={s['classes']}, {s['chunk_rows']} rows per chunk, float64; load average "
             f"{report['loadavg']}", ""]
    rows = []
    for r in report["cluster"]:
        rows.append([str(r["workers"]), _fmt(r["eval_s"]), _fmt(r["overhead_s"]),
                     f"{r['balance']:.2f}", _fmt(r["fit"]["per_iter_s"]),
                     _fmt(r["tiny_eval_s"]), _fmt(r["tiny_fit"]["per_iter_s"])])
    lines += text_table(["workers", "loss+grad", "overhead", "balance", "fit / iteration",
                         "tiny: loss+grad", "tiny: fit / iteration"], rows)
    lines.append(f"(tiny: {s['overhead_chunks']} chunks of 16 rows, all overhead; fits of "
                 f"{s['iters']} L-BFGS iterations)")
    if len(report["cluster"]) > 1:
        base = report["cluster"][0]
        for r in report["cluster"][1:]:
            lines.append(f"speed-up {r['workers']} vs {base['workers']} workers: loss+grad "
                         f"{base['eval_s'] / r['eval_s']:.2f}x, fit "
                         f"{base['fit']['per_iter_s'] / r['fit']['per_iter_s']:.2f}x")
    lines.append("")
    peer_rows = []
    for r in report["cluster"]:
        for key, label in (("binary_cysoftmax", "cysoftmax.dask, 2 classes"),
                           ("binary_dask_ml", "dask-ml LogisticRegression, 2 classes")):
            if key in r:
                res = r[key]
                peer_rows.append([f"{label}, {r['workers']} workers",
                                  "not installed" if res is None else _fmt(res["fit_s"]),
                                  "-" if res is None else _fmt(res["per_iter_s"])])
    mem = report.get("in_memory") or {}
    for key, label in (("cysoftmax", f"cysoftmax SoftmaxClassifier, {s['classes']} classes"),
                       ("sklearn", f"scikit-learn LogisticRegression, {s['classes']} classes"),
                       ("sklearn_binary", "scikit-learn LogisticRegression, 2 classes")):
        if key in mem:
            res = mem[key]
            peer_rows.append([f"{label}, in memory",
                              "not installed" if res is None else _fmt(res["fit_s"]),
                              "-" if res is None else _fmt(res["per_iter_s"])])
    if peer_rows:
        lines += text_table([f"fit, {s['iters']} L-BFGS iterations", "total", "per iteration"],
                            peer_rows)
    ooc = report.get("out_of_core")
    if ooc:
        lines += ["", f"out of core ({ooc['format']}): {ooc['bytes'] / 2**20:.0f} MiB on disk, "
                  f"workers limited to {ooc['memory_limit'] / 2**20:.0f} MiB; written in "
                  f"{_fmt(ooc['write_s'])}; {ooc['fit']['n_iter']} iterations in "
                  f"{_fmt(ooc['fit']['fit_s'])}; worker RSS at start "
                  + ", ".join(f"{p / 2**20:.0f} MiB" for p in ooc["worker_start_rss"])
                  + ", peak "
                  + ", ".join(f"{p / 2**20:.0f} MiB" for p in ooc["worker_peak_rss"])
                  + f"; client peak allocation {ooc['client_peak_traced_bytes'] / 2**20:.1f} MiB"
                  + ("; a worker was restarted" if ooc["workers_restarted"] else "")]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse_args(argv)
    try:
        import dask  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
        import distributed  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError as exc:
        print(f"needs the 'dask' extra (dask[array] and distributed): {exc}", file=sys.stderr)
        return 2
    report: Dict[str, Any] = {"settings": vars(args), "loadavg": loadavg(),
                              "versions": {k: package_version(k) for k in
                                           ("dask", "distributed", "dask-ml", "scikit-learn",
                                            "zarr", "numpy")},
                              "cluster": []}
    for w in (int(x) for x in args.workers.split(",")):
        report["cluster"].append(_cluster_run(args, w))
    if not args.no_peers:
        report["in_memory"] = _in_memory_run(args)
    if args.out_of_core:
        report["out_of_core"] = _out_of_core_run(args)
    report["loadavg_after"] = loadavg()
    print(json.dumps(report, indent=1, default=str) if args.json else format_text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
