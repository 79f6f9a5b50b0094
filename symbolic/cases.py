"""Generate the reference cases ``tests/data/reference_cases.json``.

Usage::

    python -m symbolic.cases            # (re)write tests/data/reference_cases.json
    python -m symbolic.cases --check    # exit 1 if the file differs from what would be written

Each case holds inputs exactly as the kernels see them (float32 inputs are
rounded to float32 *before* evaluation, and every float is stored as the
``repr`` of its value, which round-trips exactly) and the expected loss,
gradient, softmax and log-softmax as decimal strings with 20 significant
digits.  The expected values come only from :mod:`symbolic.evaluate`, i.e.
from the SymPy closed forms proved by ``python -m symbolic``, evaluated with
mpmath at 50 or more digits; never from NumPy or the kernels.

The inputs are drawn from :class:`random.Random` with a fixed seed (its
``random()`` stream is stable across Python versions), the file is written
with sorted keys (the header fields first) and a fixed layout, so the output
is byte-for-byte deterministic.

Coverage: C = 1, 2, 3, small and large C (1000, 1024); one row (1-D and 2-D
scores) and batches, including an empty one; offsets of +-1e4; spreads past
float32's exp overflow (88) and float64's (709), with probabilities and
gradient entries that are subnormal or underflow to 0 (float64 entries far
below 1e-300); ties; ``-inf`` masked classes with and without label
smoothing; tiny probabilities and tiny losses; every reduction; class
weights; ignore_index (default, a valid class index, every row ignored);
label smoothing; NaN in a row; int32 labels; float32 and float64.

Sources: PyTorch's documentation of ``torch.nn.functional.cross_entropy``
for the option semantics; scipy's ``special/_precompute`` scripts for the
layout of a generator.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .evaluate import DIGITS, reference

__all__ = ["CaseSpec", "case_specs", "build_document", "render", "main", "DEFAULT_OUTPUT",
           "default_output", "COMMAND", "write_or_check"]

SEED = 20261129
COMMAND = "python -m symbolic.cases"
_CASES_FILE = Path("tests") / "data" / "reference_cases.json"
# the source tree this module belongs to (when it is not installed elsewhere)
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / _CASES_FILE


def default_output() -> Path:
    """The cases file of the source tree: the one beside this package when it is run
    from a checkout or an unpacked sdist, else the one under the current directory."""
    return source_tree_file(_CASES_FILE)


def source_tree_file(relative: Path) -> Path:
    """``relative`` (a path under the source tree, e.g. ``tests/data/...``) in the tree
    this package is in, else under the current directory (see :func:`default_output`);
    shared by the generators of the cases files."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / "tests").is_dir():
            return root / relative
    return Path(__file__).resolve().parent.parent / relative


REDUCTIONS = ("mean", "sum", "none")
DTYPES = ("float32", "float64")
INF, NAN = math.inf, math.nan


@dataclass
class CaseSpec:
    """Inputs of one case before rounding to the dtype.

    ``make(rng, dtype)`` returns ``(scores, labels)``; ``scores`` is a list
    of rows, or a single list for 1-D scores (then ``labels`` is an int).
    """

    name: str
    description: str
    make: Callable[[random.Random, str], tuple]
    n_classes: int
    dtypes: Sequence[str] = DTYPES
    reductions: Sequence[str] = REDUCTIONS
    weight: Callable[[random.Random], list] | None = None
    ignore_index: int = -100
    label_smoothing: dict = field(default_factory=lambda: {"float32": 0.0, "float64": 0.0})
    labels_dtype: str = "int64"


# --------------------------------------------------------------------------
# Input builders
# --------------------------------------------------------------------------
def _uniform(rng: random.Random, rows: int, cols: int, scale: float, offset: float = 0.0):
    return [[offset + rng.uniform(-scale, scale) for _ in range(cols)] for _ in range(rows)]


def _labels(rng: random.Random, rows: int, n_classes: int):
    return [rng.randrange(n_classes) for _ in range(rows)]


def _random(rows: int, cols: int, scale: float, offset: float = 0.0):
    def make(rng, dtype):
        return _uniform(rng, rows, cols, scale, offset), _labels(rng, rows, cols)
    return make


def _fixed(rows: Sequence[Sequence[float]], labels, jitter: float = 0.0):
    """Fixed rows, optionally with a small random jitter on finite entries."""
    def make(rng, dtype):
        out = [[v + rng.uniform(-jitter, jitter) if jitter and math.isfinite(v) else v
                for v in row] for row in rows]
        return out, list(labels)
    return make


def _one_d(n_classes: int, scale: float):
    def make(rng, dtype):
        return [rng.uniform(-scale, scale) for _ in range(n_classes)], rng.randrange(n_classes)
    return make


def _with_ignored(make, rows_ignored: Sequence[int], ignore_index: int = -100):
    def wrapped(rng, dtype):
        scores, labels = make(rng, dtype)
        for r in rows_ignored:
            labels[r] = ignore_index
        return scores, labels
    return wrapped


def _with_nan(make, row: int, col: int):
    def wrapped(rng, dtype):
        scores, labels = make(rng, dtype)
        scores[row][col] = NAN
        return scores, labels
    return wrapped


def _weights(n_classes: int, low: float = 0.25, high: float = 3.0):
    return lambda rng: [rng.uniform(low, high) for _ in range(n_classes)]


_SMOOTH = {"float32": 0.25, "float64": 0.1}  # 0.25 is exact in both dtypes

# spreads past float32's exp overflow/underflow (|x| ~ 88 .. 104 .. 150)
_SPREAD_F32 = [
    [0.0, -90.0, -100.0, -104.0, -110.0, -150.0],
    [100.0, 0.0, -20.0, 50.0, 88.5, 95.0],
    [-0.5, 89.0, 89.25, -200.0, 0.0, 3.0],
    [120.0, 120.5, -30.0, -60.0, 119.0, 121.0],
]
# spreads past float64's: e^-700 ~ 1e-304 (normal), e^-720 subnormal,
# e^-745.5 at the last subnormal, e^-760 and beyond underflow
_SPREAD_F64 = [
    [0.0, -700.0, -720.0, -740.0, -745.5, -760.0, -1000.0, -1500.0],
    [710.0, 0.0, -30.0, 750.0, 300.0, -700.0, 20.0, 1.0],
    [-800.0, 800.0, 799.0, -5.0, 0.0, 2.0, 790.0, -1.0],
    [50.0, 40.0, 30.0, -680.0, -690.0, -710.0, 45.0, 49.0],
]


def case_specs() -> list[CaseSpec]:
    """Every family of cases; each is crossed with dtypes and reductions."""
    return [
        CaseSpec("c1", "a single class: P = 1, loss 0, gradient 0", _random(3, 1, 3.0), 1),
        CaseSpec("c1-smooth-weight", "a single class with weights and label smoothing",
                 _random(3, 1, 3.0), 1, weight=_weights(1), label_smoothing=_SMOOTH),
        CaseSpec("c2", "two classes", _random(4, 2, 4.0), 2),
        CaseSpec("c3", "three classes", _random(5, 3, 4.0), 3),
        CaseSpec("c7", "seven classes", _random(6, 7, 6.0), 7),
        CaseSpec("n1-1d", "1-D scores (one row, labels a scalar)", _one_d(5, 3.0), 5),
        CaseSpec("n1-2d", "one row of 2-D scores", _random(1, 4, 3.0), 4),
        CaseSpec("large-c1000", "C = 1000", _random(3, 1000, 8.0), 1000,
                 dtypes=("float64",), reductions=("mean", "none")),
        CaseSpec("large-c1024", "C = 1024", _random(2, 1024, 8.0), 1024,
                 dtypes=("float32",), reductions=("sum",)),
        CaseSpec("offset-pos", "scores near +1e4", _random(4, 6, 8.0, 1e4), 6),
        CaseSpec("offset-neg", "scores near -1e4", _random(4, 6, 8.0, -1e4), 6),
        CaseSpec("spread-f32", "spreads past float32 exp overflow/underflow: subnormal and "
                 "zero float32 probabilities and gradients",
                 _fixed(_SPREAD_F32, [0, 1, 2, 5], jitter=0.25), 6),
        CaseSpec("spread-f64", "spreads past float64 exp overflow/underflow: gradient entries "
                 "far below 1e-300, subnormal and zero",
                 _fixed(_SPREAD_F64, [0, 1, 3, 4], jitter=0.25), 8),
        CaseSpec("spread-f64-smooth", "float64-sized spreads with weights and label smoothing",
                 _fixed(_SPREAD_F64, [0, 1, 3, 4], jitter=0.25), 8,
                 weight=_weights(8), label_smoothing=_SMOOTH),
        CaseSpec("ties", "ties: equal scores and tied maxima",
                 _fixed([[2.5, 2.5, 2.5, 2.5], [1.0, 3.0, 3.0, -1.0], [-7.0, -7.0, 0.5, -7.0],
                         [1e4, 1e4, 1e4 - 1.0, 1e4]], [3, 1, 0, 2]), 4),
        CaseSpec("masked", "-inf masked classes (targets not masked): P and gradient exactly 0",
                 _fixed([[0.5, -INF, 2.0, -INF, -1.0], [-INF, -INF, 3.0, -INF, -INF],
                         [1e4, -INF, 1e4 + 2.0, 1e4 - 3.0, -INF], [-2.0, 1.0, -INF, 0.0, 4.0]],
                        [2, 2, 0, 4], jitter=0.25), 5),
        CaseSpec("masked-smooth", "-inf masked classes with label smoothing: infinite loss "
                 "(PyTorch), finite gradient",
                 _fixed([[0.5, -INF, 2.0, -INF, -1.0], [-2.0, 1.0, 0.5, 0.0, 4.0]],
                        [2, 4], jitter=0.25), 5, label_smoothing=_SMOOTH),
        CaseSpec("tiny-prob", "targets with tiny probability (loss ~ 40..90) and confident rows "
                 "(loss ~ 1e-22, 1e-30)",
                 _fixed([[0.0, 30.0, 40.0], [-45.0, 40.0, 0.0], [50.0, 0.0, 0.0],
                         [69.0, 0.0, -3.0], [0.0, 88.0, 1.0]], [0, 0, 0, 0, 0], jitter=0.25), 3),
        CaseSpec("weights", "class weights", _random(6, 5, 5.0), 5, weight=_weights(5)),
        CaseSpec("ignore", "rows with the default ignore_index -100",
                 _with_ignored(_random(6, 4, 5.0), [1, 4]), 4),
        CaseSpec("ignore-weights", "ignore_index with class weights (weighted-mean denominator)",
                 _with_ignored(_random(6, 4, 5.0), [0, 3]), 4, weight=_weights(4)),
        CaseSpec("ignore-valid-class", "ignore_index = 1, a valid class index",
                 _fixed([[0.1, 0.2, 0.3], [1.0, -1.0, 0.5], [2.0, 0.0, -2.0], [0.0, 0.0, 1.0]],
                        [1, 0, 1, 2], jitter=0.5), 3, ignore_index=1, weight=_weights(3)),
        CaseSpec("all-ignored", "every row ignored: mean NaN, sum 0, zero gradient",
                 _with_ignored(_random(3, 4, 5.0), [0, 1, 2]), 4),
        CaseSpec("smooth", "label smoothing", _random(5, 6, 5.0), 6, label_smoothing=_SMOOTH),
        CaseSpec("smooth-weights-ignore", "label smoothing, class weights and ignore_index",
                 _with_ignored(_random(6, 6, 5.0), [2]), 6, weight=_weights(6),
                 label_smoothing=_SMOOTH),
        CaseSpec("empty", "an empty batch (N = 0): mean NaN, sum 0",
                 _fixed([], []), 3),
        CaseSpec("nan-row", "NaN in one row: that row NaN, other rows unaffected",
                 _with_nan(_random(3, 4, 3.0), 1, 2), 4),
        CaseSpec("labels-int32", "int32 labels", _random(4, 5, 4.0), 5, labels_dtype="int32",
                 reductions=("mean",)),
        CaseSpec("combined", "offset, wide spread, weights, ignore_index and label smoothing",
                 _with_ignored(_fixed([[1e4 + v for v in row] for row in _SPREAD_F64],
                                      [0, 1, 3, 4], jitter=0.25), [2]),
                 8, weight=_weights(8, 0.5, 2.0), label_smoothing=_SMOOTH),
    ]


# --------------------------------------------------------------------------
# Building the document
# --------------------------------------------------------------------------
def _round(values, dtype: str):
    """Round (nested lists of) floats to ``dtype``; return Python floats."""
    if isinstance(values, list):
        return [_round(v, dtype) for v in values]
    return float(np.array(values, dtype=np.float64).astype(dtype))


def _strings(values):
    if isinstance(values, list):
        return [_strings(v) for v in values]
    return repr(float(values))


def _shape(scores) -> list:
    if scores and isinstance(scores[0], list):
        return [len(scores), len(scores[0])]
    return [len(scores)]


def build_case(spec: CaseSpec, dtype: str, reduction: str, rng: random.Random) -> dict:
    """Draw the inputs of one case, round them to ``dtype`` and evaluate."""
    scores, labels = spec.make(rng, dtype)
    weight = spec.weight(rng) if spec.weight is not None else None
    scores = _round(scores, dtype)
    weight = _round(weight, dtype) if weight is not None else None
    eps = spec.label_smoothing[dtype]
    one_d = not isinstance(labels, list)
    rows = [scores] if one_d else scores
    ref = reference(rows, [labels] if one_d else labels, n_classes=spec.n_classes,
                    reduction=reduction, weight=weight, ignore_index=spec.ignore_index,
                    label_smoothing=eps)
    shape = [spec.n_classes] if one_d else [len(rows), spec.n_classes]
    unrow = (lambda x: x[0]) if one_d else (lambda x: x)
    loss = ref.loss
    if reduction == "none" and one_d and isinstance(loss, list):
        loss = loss[0]
    parts = [spec.name, dtype, reduction]
    return {
        "id": "-".join(parts),
        "description": spec.description,
        "dtype": dtype,
        "shape": shape,
        "scores": _strings(scores),
        "labels": labels,
        "labels_dtype": spec.labels_dtype,
        "reduction": reduction,
        "weight": _strings(weight) if weight is not None else None,
        "ignore_index": spec.ignore_index,
        "label_smoothing": eps,
        "mp_dps": ref.dps,
        "expected": {
            "loss": loss,
            "grad": unrow(ref.grad),
            "softmax": unrow(ref.softmax),
            "log_softmax": unrow(ref.log_softmax),
        },
    }


def build_document() -> dict:
    """All cases, in a fixed order, with the file's header fields."""
    cases = []
    for spec in case_specs():
        for dtype in spec.dtypes:
            for reduction in spec.reductions:
                # one generator per family and dtype: the reductions see the same
                # input, and adding a case does not change the others
                rng = random.Random(f"{SEED}-{spec.name}-{dtype}")
                cases.append(build_case(spec, dtype, reduction, rng))
    ids = [c["id"] for c in cases]
    assert len(set(ids)) == len(ids), "duplicate case ids"
    return {
        "generated_by": COMMAND,
        "comment": ("GENERATED FILE - DO NOT EDIT. Regenerate with `python -m symbolic.cases` "
                    "(check with `python -m symbolic.cases --check`). Expected values are the "
                    "SymPy closed forms proved by `python -m symbolic`, evaluated with mpmath "
                    f"(working precision mp_dps digits, stored to {DIGITS} significant digits)."),
        "format": {
            "scores, weight": "repr() of each float, exactly the value of the case's dtype "
                              "(float32 values were rounded before evaluation); "
                              "'inf', '-inf', 'nan' allowed",
            "shape": "[N, C] or [C] for 1-D scores; labels has shape[:-1]",
            "expected": "decimal strings: loss (a list for reduction 'none'), grad, softmax, "
                        "log_softmax with the scores' shape; exact values for the given input",
            "semantics": "torch.nn.functional.cross_entropy with class-index targets: "
                         "l_i = (1-eps) w_y (-log p_iy) + (eps/C) sum_c w_c (-log p_ic), l_i = 0 "
                         "on ignored rows; 'mean' divides by the sum of w_y over non-ignored "
                         "rows (NaN if there are none, gradient 0); 'sum' of no rows is 0",
        },
        "seed": SEED,
        "cases": cases,
    }


#: order of the top-level fields: the header comes first, the cases last
TOP_LEVEL = ("comment", "generated_by", "format", "seed", "cases")


def _dump(obj, indent: int = 0) -> str:
    """JSON with sorted keys (top level: :data:`TOP_LEVEL`); lists of scalars on one line."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        keys = TOP_LEVEL if indent == 0 and set(obj) == set(TOP_LEVEL) else sorted(obj)
        items = [f"{inner}{json.dumps(k)}: {_dump(obj[k], indent + 1)}" for k in keys]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(v, (dict, list)) for v in obj):
            return "[" + ", ".join(json.dumps(v, allow_nan=False) for v in obj) + "]"
        return "[\n" + ",\n".join(inner + _dump(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, allow_nan=False)


def render() -> bytes:
    """The exact bytes of ``tests/data/reference_cases.json``."""
    return (_dump(build_document()) + "\n").encode("utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    return generator_main(argv, COMMAND, __doc__, _CASES_FILE, render, default_output)


def generator_main(argv: Sequence[str] | None, command: str, doc: str, cases_file: Path,
                   render: Callable[[], bytes], default_output: Callable[[], Path]) -> int:
    """The command line of a cases generator (``--check``, ``--output``), shared by
    the generators: ``doc`` is its module docstring, ``cases_file`` its file's path in
    the source tree."""
    parser = argparse.ArgumentParser(prog=command, description=doc.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the file instead of writing it; exit 1 if it differs")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"path of the cases file (default: {cases_file.as_posix()} of the "
                             "source tree this module is in, else of the current directory)")
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = default_output()
    return write_or_check(args.output, render, command, args.check)


def write_or_check(output: Path, render: Callable[[], bytes], command: str, check: bool) -> int:
    """Write ``render()`` to ``output``, or with ``check`` compare them (exit status 1 when
    they differ); 2 when ``output`` is not in a source tree.  Shared by the generators of
    the cases files (``command`` is the one named in the messages)."""
    if not output.parent.parent.is_dir():  # neither a checkout nor an unpacked sdist
        print(f"{output.parent.parent} does not exist: the cases file belongs to the "
              f"source tree; run `{command}` from the root of a checkout or an unpacked "
              f"sdist, or pass --output PATH", file=sys.stderr)
        return 2

    start = time.perf_counter()
    data = render()
    seconds = time.perf_counter() - start
    n_cases = data.count(b'"id": ')
    if check:
        current = output.read_bytes() if output.exists() else b""
        if current != data:
            print(f"{output} is out of date; regenerate it with `{command}`", file=sys.stderr)
            return 1
        print(f"{output}: up to date ({n_cases} cases, {seconds:.1f} s)")
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    print(f"wrote {output} ({n_cases} cases, {len(data)} bytes, {seconds:.1f} s)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
