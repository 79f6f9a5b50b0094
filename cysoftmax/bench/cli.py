"""The command line: ``python -m cysoftmax.bench [options]`` (see :mod:`cysoftmax.bench`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, List, Optional, Sequence

from cysoftmax import _kernels

from .inputs import DEFAULT_SHAPES, DTYPES, parse_shapes
from .peers import PEERS, jax_worker
from .report import format_markdown, format_text
from .runner import run


def _split(text: str) -> List[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _items_of(text: str, allowed: Sequence[str], expected: str) -> List[str]:
    """The comma-separated items of ``text``, at least one, each one of ``allowed``."""
    items = _split(text)
    if not items or any(x not in allowed for x in items):
        raise argparse.ArgumentTypeError(f"{expected}; got {text!r}")
    return items


def _choice_list(choices: Sequence[str]) -> Callable[[str], List[str]]:
    def parse(text: str) -> List[str]:
        return _items_of(text, choices, f"expected a comma-separated list of {', '.join(choices)}")
    return parse


def _threads(text: str) -> List[str]:
    items = _split(text)
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
    return _items_of(text, supported, f"targets: this CPU runs {', '.join(supported)} (or 'all')")


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
    p.add_argument("--shapes", type=parse_shapes, default=DEFAULT_SHAPES,
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
        return jax_worker()
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
