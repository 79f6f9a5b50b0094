"""Benchmark of the fused linear + cross-entropy: time and memory, side by side.

Usage::

    python -m cysoftmax.bench.linear [--shapes 4096x512x32000,4096x512x128000]
                                     [--dtype float32] [--threads all] [--repeats 3]
                                     [--variants fused,products,chunked-products,...]
                                     [--json]

For each shape N x D x V (rows, features, classes), forward + backward of the
mean loss of ``z = x @ W.T + b`` with class-index targets, each variant in a fresh
child process (so that its peak memory is its own):

``fused``          ``cysoftmax.linear_softmax_cross_entropy`` (default chunking;
                   ``fused:R`` with ``chunk_size=R``);
``products``       the three matrix products alone, on NumPy's BLAS and the same
                   threads: ``x @ W.T``, ``dz @ W``, ``dz.T @ x`` (the floor the
                   fused path is measured against; the loss itself is left out);
``chunked-products``  the products of the fused path alone, in its chunks (default
                   chunking; ``chunked-products:R`` in chunks of R rows), written
                   with NumPy here: per row chunk ``x_c @ W.T`` into one buffer,
                   ``dz_c @ W`` and ``dz_c.T @ x_c`` accumulated through a 2 MiB
                   temporary; with class blocks, the four products per block
                   (``x_c @ W_b.T`` twice).  The loss is left out: what chunking
                   itself costs;
``torch-eager``    ``F.cross_entropy(F.linear(x, W, b), y)`` and ``backward()``;
``torch-chunked``  PyTorch's ``F.linear_cross_entropy`` (2.13 and later), if present,
                   with ``options=nn.LinearCrossEntropyOptions()``: its chunked
                   implementation (without options it is the unchunked reference).

Reported per variant: the median time of ``--repeats`` calls after one warm-up;
``extra_peak_mb``, the peak resident memory of the child during the timed calls
(Linux's VmHWM, reset after the warm-up through /proc/self/clear_refs) minus its
resident memory before them, minus the returned gradients (input, weight and bias:
what any implementation must hand back); and for the NumPy variants ``tracemalloc_mb``,
the peak of NumPy's traced allocations during a call beyond the returned arrays.
The goal is stated against ``N x V x itemsize``, the size of the logits.
The children run with glibc's ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``
fixed at 128 KiB, so freed blocks leave the resident size at once.
Threads: the child's BLAS threads and PyTorch's intra-op threads are set to the
given count (``all``: the usable CPUs); the kernels use the same.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List, Optional

from .children import python_command

VARIANTS = ("fused", "products", "chunked-products", "torch-eager", "torch-chunked")
DEFAULT_SHAPES = ("4096x512x32000", "4096x512x128000")

_CHILD = r"""
import json, os, resource, statistics, time, tracemalloc
import numpy as np
N, D, V, dtype, variant, repeats, threads = {args!r}
dtype = np.dtype(dtype)

def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def reset_peak():
    # the peak resident size (VmHWM) afresh: building the inputs is no part of a call's
    # peak; False where Linux's clear_refs is not available
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False

def peak_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

rng = np.random.default_rng(0)
x = rng.standard_normal((N, D), dtype=np.float32).astype(dtype)
W = (rng.standard_normal((V, D), dtype=np.float32) / np.sqrt(D)).astype(dtype)
b = np.zeros(V, dtype)
y = rng.integers(0, V, N)
returned_mb = (x.nbytes + W.nbytes + b.nbytes) / 2**20
result = {{"variant": variant}}

if variant.startswith(("fused", "chunked-products")) or variant == "products":
    import cysoftmax
    chunk = int(variant.split(":")[1]) if ":" in variant else None
    if variant.startswith("fused"):
        def call():
            return cysoftmax.linear_softmax_cross_entropy(x, W, y, linear_bias=b,
                                                          chunk_size=chunk,
                                                          num_threads=threads)
    elif variant.startswith("chunked-products"):
        from cysoftmax import _linear
        layout = _linear._Problem(x, W, y, b, None, "mean", -100, 0.0, 0.0, None, chunk,
                                  threads)
        rows, block = layout.chunk, layout.class_block or V
        step = max(1, (2 << 20) // (D * dtype.itemsize))
        def accumulate(dst, a, c):  # dst += a @ c through a temporary of at most 2 MiB
            for s0 in range(0, dst.shape[0], step):
                s1 = min(dst.shape[0], s0 + step)
                out = tmp[: (s1 - s0) * D].reshape(s1 - s0, D)
                np.matmul(a[s0:s1], c, out=out)
                dst[s0:s1] += out
        def call():
            global tmp
            tmp = np.empty(step * D, dtype)
            gx, gW = np.empty((N, D), dtype), np.empty((V, D), dtype)
            flat = np.empty(rows * min(block, V), dtype)
            for r0 in range(0, N, rows):
                r1 = min(N, r0 + rows)
                for c0 in range(0, V, block):
                    c1 = min(V, c0 + block)
                    z = flat[: (r1 - r0) * (c1 - c0)].reshape(r1 - r0, c1 - c0)
                    if block < V:  # pass 1 of the class blocks
                        np.matmul(x[r0:r1], W[c0:c1].T, out=z)
                    np.matmul(x[r0:r1], W[c0:c1].T, out=z)
                    z *= dtype.type(1e-3)  # (stands for the gradient)
                    if c0 == 0:
                        np.matmul(W[c0:c1].T, z.T, out=gx[r0:r1].T)
                    else:
                        accumulate(gx[r0:r1], z, W[c0:c1])
                    if r0 == 0:
                        np.matmul(z.T, x[r0:r1], out=gW[c0:c1])
                    else:
                        accumulate(gW[c0:c1], z.T, x[r0:r1])
            return gx, gW
    else:
        def call():
            z = x @ W.T
            return z @ W, z.T @ x
    call()  # warm-up (imports, BLAS buffers)
    base = rss_mb()
    result["peak_reset"] = reset_peak()
    tracemalloc.start()
    times = []
    for _ in range(repeats):
        tracemalloc.reset_peak()
        t0 = time.perf_counter(); out = call(); times.append(time.perf_counter() - t0)
        traced = tracemalloc.get_traced_memory()[1] / 2**20
        del out
    tracemalloc.stop()
    result["tracemalloc_mb"] = traced - returned_mb
else:
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    tx = torch.from_numpy(x).requires_grad_(True)
    tW = torch.from_numpy(W).requires_grad_(True)
    tb = torch.from_numpy(b).requires_grad_(True)
    ty = torch.from_numpy(y)
    if variant == "torch-chunked" and not hasattr(torch.nn, "LinearCrossEntropyOptions"):
        print(json.dumps({{"variant": variant, "skipped": "no nn.LinearCrossEntropyOptions"}}))
        raise SystemExit
    def call():
        tx.grad = tW.grad = tb.grad = None
        if variant == "torch-eager":
            loss = F.cross_entropy(F.linear(tx, tW, tb), ty)
        else:
            # the chunked implementation: options=None would be the reference path
            loss = F.linear_cross_entropy(tx, tW, ty, linear_bias=tb,
                                          options=torch.nn.LinearCrossEntropyOptions())
        loss.backward()
        return loss
    call()
    tx.grad = tW.grad = tb.grad = None
    base = rss_mb()
    result["peak_reset"] = reset_peak()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); call(); times.append(time.perf_counter() - t0)
peak = peak_mb()
result["time_s"] = statistics.median(times)
result["extra_peak_mb"] = peak - base - returned_mb
print(json.dumps(result))
"""


def run_variant(n: int, d: int, v: int, dtype: str, variant: str, repeats: int,
                threads: int) -> Dict:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[key] = str(threads)
    # glibc: every large block its own mapping, returned when freed (a fixed threshold),
    # so the resident size before a call holds no freed memory of an earlier one
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 17))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(1 << 17))
    code = _CHILD.format(args=(n, d, v, dtype, variant, repeats, threads))
    proc = subprocess.run(python_command(code), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return {"variant": variant, "error": last}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(shapes: List[str], dtype: str, threads: int, repeats: int,
        variants: List[str]) -> List[Dict]:
    rows = []
    for shape in shapes:
        n, d, v = (int(s) for s in shape.split("x"))
        itemsize = 4 if dtype == "float32" else 8
        logits_mb = n * v * itemsize / 2**20
        for variant in variants:
            if variant.startswith("torch"):  # (optional)
                try:
                    import torch  # noqa: F401
                except ImportError:
                    continue
            r = run_variant(n, d, v, dtype, variant, repeats, threads)
            r.update(shape=shape, dtype=dtype, threads=threads, logits_mb=logits_mb)
            rows.append(r)
    return rows


def format_table(rows: List[Dict]) -> str:
    lines = ["| shape NxDxV | variant | time (s) | vs products | extra peak RSS (MB) | "
             "% of logits | tracemalloc (MB) |", "|---|---|---|---|---|---|---|"]
    floor = {r["shape"]: r.get("time_s") for r in rows if r["variant"] == "products"}
    for r in rows:
        if "time_s" not in r:
            lines.append(f"| {r['shape']} | {r['variant']} | {r.get('error') or r.get('skipped')}"
                         " | | | | |")
            continue
        ratio = f"{r['time_s'] / floor[r['shape']]:.2f}x" if floor.get(r["shape"]) else ""
        tm = f"{r['tracemalloc_mb']:.1f}" if "tracemalloc_mb" in r else ""
        lines.append(f"| {r['shape']} | {r['variant']} | {r['time_s']:.3f} | {ratio} | "
                     f"{r['extra_peak_mb']:.1f} | {100 * r['extra_peak_mb'] / r['logits_mb']:.1f}% "
                     f"| {tm} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cysoftmax.bench.linear",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES))
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--threads", default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    threads = len(os.sched_getaffinity(0)) if args.threads == "all" else int(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    unknown = {v for v in variants if v not in VARIANTS and not (
        v.split(":")[0] in ("fused", "chunked-products") and v.count(":") == 1
        and v.split(":")[1].isdigit() and int(v.split(":")[1]) > 0)}
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    rows = run([s for s in args.shapes.split(",") if s], args.dtype, threads, args.repeats,
               variants)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
