"""Generate the reference cases of the further loss options,
``tests/data/reference_cases_options.json``.

Usage::

    python -m symbolic.cases_options            # (re)write the file
    python -m symbolic.cases_options --check    # exit 1 if it differs from what would be written

The options: probability targets (``labels`` a float array of the scores'
shape and dtype), the z-loss (``z_loss``, ``lambda * lse^2`` per row) and logit
soft-capping (``softcap``, ``f -> kappa tanh(f / kappa)``), alone and combined
with class weights, ``ignore_index``, label smoothing and every reduction.
Each case stores its inputs exactly as the kernels see them (float32 inputs,
weights and probability targets are rounded to float32 before evaluation) and
the expected loss, gradient, z part and per-row lse as decimal strings with 20
significant digits, from :func:`symbolic.evaluate.reference_options`: the
closed forms proved by ``python -m symbolic``, evaluated with mpmath at 50 or
more digits; never from NumPy or the kernels.  ``z_loss`` and ``softcap`` are
exact in float32 as well.

The layout and the random inputs follow :mod:`symbolic.cases` (a fixed seed,
:class:`random.Random` per family and dtype, sorted keys), so the output is
byte-for-byte deterministic.

Coverage: the z-loss alone, strong, with large positive and negative lse
(scores near +-1e4) and with spreads past float32's and float64's exp
overflow; soft-capping with a typical constant (30), a small one (0.5, so that
``1 - tanh^2`` is far below float32's range) and saturated rows near 1e4;
``-inf`` masked classes with and without label smoothing; ties; NaN in a row;
every row ignored; an empty batch; 1-D scores; C = 1 and C = 1000, 1024;
int32 labels; probability targets that sum to 1, that do not (one row all 0),
with zero entries on ``-inf`` classes (finite loss) and a positive one
(infinite loss), and one-hot rows that mirror a class-index family (same
scores, the same results for "sum" and "none", and for "mean" without
weights); everything combined; float32 and float64; every reduction.
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .cases import (_SMOOTH, _SPREAD_F32, _SPREAD_F64, DTYPES, INF, NAN, REDUCTIONS, _dump,
                    _labels, _round, _strings, _uniform, _weights, generator_main,
                    source_tree_file)
from .evaluate import DIGITS, reference_options

__all__ = ["OptionCase", "case_specs", "build_case", "build_document", "render", "main",
           "COMMAND", "default_output"]

SEED = 20261130
COMMAND = "python -m symbolic.cases_options"
_CASES_FILE = Path("tests") / "data" / "reference_cases_options.json"
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / _CASES_FILE


def default_output() -> Path:
    """The cases file of the source tree (see :func:`symbolic.cases.default_output`)."""
    return source_tree_file(_CASES_FILE)


#: z-loss coefficients: 2^-13 (exact in float32) and 1e-4 (PaLM's value)
_Z = {"float32": 2.0 ** -13, "float64": 1e-4}
_Z_STRONG = {"float32": 1.0, "float64": 1.0}
_NO = {"float32": 0.0, "float64": 0.0}


@dataclass
class OptionCase:
    """Inputs of one family before rounding to the dtype.

    ``make(rng, dtype)`` returns ``(scores, targets)``: ``scores`` a list of
    rows (or one list: 1-D scores), ``targets`` a list of class indices (an int
    for 1-D scores) or, with ``probability=True``, a list of rows of
    probability targets (one row for 1-D scores).  ``seed`` names the random
    stream (families with the same seed draw the same inputs).
    """

    name: str
    description: str
    make: Callable[[random.Random, str], tuple]
    n_classes: int
    probability: bool = False
    dtypes: Sequence[str] = DTYPES
    reductions: Sequence[str] = REDUCTIONS
    weight: Callable[[random.Random], list] | None = None
    ignore_index: int = -100
    label_smoothing: dict = field(default_factory=lambda: dict(_NO))
    z_loss: dict = field(default_factory=lambda: dict(_NO))
    softcap: float | None = None
    labels_dtype: str = "int64"
    seed: str | None = None


# --------------------------------------------------------------------------
# Input builders
# --------------------------------------------------------------------------
def _index(rows: int, cols: int, scale: float, offset: float = 0.0, ignored: Sequence[int] = (),
           ignore_index: int = -100):
    def make(rng, dtype):
        scores = _uniform(rng, rows, cols, scale, offset)
        labels = _labels(rng, rows, cols)
        for r in ignored:
            labels[r] = ignore_index
        return scores, labels
    return make


def _fixed(rows, targets, jitter: float = 0.0, nan_at: tuple | None = None):
    def make(rng, dtype):
        out = [[v + rng.uniform(-jitter, jitter) if jitter and math.isfinite(v) else v
                for v in row] for row in rows]
        if nan_at is not None:
            out[nan_at[0]][nan_at[1]] = NAN
        return out, [list(t) if isinstance(t, (list, tuple)) else t for t in targets]
    return make


def _one_d(n_classes: int, scale: float, probability: bool = False):
    def make(rng, dtype):
        scores = [rng.uniform(-scale, scale) for _ in range(n_classes)]
        if probability:
            return scores, [rng.uniform(0.0, 1.0) for _ in range(n_classes)]
        return scores, rng.randrange(n_classes)
    return make


def _probabilities(rng: random.Random, rows: int, cols: int, normalized: bool = True,
                   zeros: float = 0.0):
    """Rows of targets in [0, 1) (or [0, 2) when not normalized), some entries 0."""
    out = []
    for _ in range(rows):
        row = [0.0 if rng.random() < zeros else rng.uniform(0.0, 1.0 if normalized else 2.0)
               for _ in range(cols)]
        if normalized:
            total = sum(row)
            row = [v / total for v in row] if total > 0 else [1.0 / cols] * cols
        out.append(row)
    return out


def _prob(rows: int, cols: int, scale: float, offset: float = 0.0, normalized: bool = True,
          zeros: float = 0.0, zero_row: int | None = None):
    def make(rng, dtype):
        scores = _uniform(rng, rows, cols, scale, offset)
        targets = _probabilities(rng, rows, cols, normalized, zeros)
        if zero_row is not None:
            targets[zero_row] = [0.0] * cols
        return scores, targets
    return make


def _one_hot(make, n_classes: int):
    """The same draw as ``make`` (class indices), its labels as one-hot rows."""
    def wrapped(rng, dtype):
        scores, labels = make(rng, dtype)
        return scores, [[1.0 if q == lab else 0.0 for q in range(n_classes)] for lab in labels]
    return wrapped


def _with_nan(make, row: int, col: int):
    def wrapped(rng, dtype):
        scores, targets = make(rng, dtype)
        scores[row][col] = NAN
        return scores, targets
    return wrapped


def _spread_targets(rows, n_classes: int):
    """Probability-target rows for fixed score rows: a mix of mass on the top and
    tail classes."""
    def make(rng, dtype):
        out = [[v + rng.uniform(-0.25, 0.25) for v in row] for row in rows]
        return out, _probabilities(rng, len(rows), n_classes, normalized=False, zeros=0.25)
    return make


_MASKED = [[0.5, -INF, 2.0, -INF, -1.0], [-INF, -INF, 3.0, -INF, -INF],
           [1e4, -INF, 1e4 + 2.0, 1e4 - 3.0, -INF], [-2.0, 1.0, -INF, 0.0, 4.0]]
_MASKED_LABELS = [2, 2, 0, 4]
#: probability targets that are 0 on every -inf class
_MASKED_TARGETS = [[0.25, 0.0, 0.5, 0.0, 0.25], [0.0, 0.0, 1.0, 0.0, 0.0],
                   [0.5, 0.0, 0.125, 0.375, 0.0], [0.75, 0.5, 0.0, 0.25, 1.0]]
_TIES = [[2.5, 2.5, 2.5, 2.5], [1.0, 3.0, 3.0, -1.0], [-7.0, -7.0, 0.5, -7.0],
         [40.0, 40.0, 41.0, 39.0], [-30.0, 30.0, 30.0, 29.0]]


def case_specs() -> list[OptionCase]:
    """Every family of cases; each is crossed with its dtypes and reductions."""
    onehot_draw = _index(5, 6, 4.0)
    return [
        # ---- z-loss, class-index targets
        OptionCase("z", "z-loss", _index(6, 5, 4.0), 5, z_loss=_Z),
        OptionCase("z-strong", "z-loss with lambda = 1 (it dominates the gradient)",
                   _index(5, 4, 5.0), 4, z_loss=_Z_STRONG),
        OptionCase("z-offset-pos", "z-loss with a large lse (scores near +1e4)",
                   _index(4, 6, 8.0, 1e4), 6, z_loss=_Z),
        OptionCase("z-offset-neg", "z-loss with a large negative lse (scores near -1e4): "
                   "the z gradient opposes the cross-entropy one",
                   _index(4, 6, 8.0, -1e4), 6, z_loss=_Z),
        OptionCase("z-spread-f32", "z-loss, spreads past float32's exp overflow",
                   _fixed(_SPREAD_F32, [0, 1, 2, 5], jitter=0.25), 6, z_loss=_Z),
        OptionCase("z-spread-f64", "z-loss, spreads past float64's exp overflow",
                   _fixed(_SPREAD_F64, [0, 1, 3, 4], jitter=0.25), 8, z_loss=_Z),
        OptionCase("z-masked", "z-loss with -inf masked classes: their gradient is exactly 0",
                   _fixed(_MASKED, _MASKED_LABELS, jitter=0.25), 5, z_loss=_Z_STRONG),
        OptionCase("z-weights-ignore-smooth", "z-loss with class weights, ignore_index and label "
                   "smoothing ('mean': the z part divided by the number of counted rows)",
                   _index(6, 5, 4.0, ignored=(1, 4)), 5, weight=_weights(5),
                   label_smoothing=_SMOOTH, z_loss=_Z_STRONG),
        OptionCase("z-ignore-valid-class", "z-loss with ignore_index = 1, a valid class index",
                   _fixed([[0.1, 0.2, 0.3], [1.0, -1.0, 0.5], [2.0, 0.0, -2.0], [0.0, 0.0, 1.0]],
                          [1, 0, 1, 2], jitter=0.5), 3, ignore_index=1, weight=_weights(3),
                   z_loss=_Z_STRONG),
        # ---- soft-capping, class-index targets
        OptionCase("softcap", "soft-capping with kappa = 30 (scores up to +-60)",
                   _index(6, 6, 60.0), 6, softcap=30.0),
        OptionCase("softcap-small", "soft-capping with kappa = 0.5: 1 - tanh^2(f/kappa) down to "
                   "1e-52 (float32: subnormal and 0)", _index(5, 5, 30.0), 5, softcap=0.5),
        OptionCase("softcap-saturated", "soft-capping of scores near 1e4 with kappa = 30: every f' "
                   "within e^-600 of 30, gradients near 1e-290",
                   _index(3, 4, 8.0, 1e4), 4, softcap=30.0),
        OptionCase("softcap-ties", "soft-capping with ties and saturated near-ties (kappa = 2)",
                   _fixed(_TIES, [3, 1, 0, 2, 1]), 4, softcap=2.0, z_loss=_Z),
        OptionCase("softcap-masked", "soft-capping and z-loss with -inf masked classes: -inf stays "
                   "-inf, gradient exactly 0",
                   _fixed(_MASKED, _MASKED_LABELS, jitter=0.25), 5, softcap=5.0, z_loss=_Z_STRONG),
        OptionCase("softcap-masked-smooth", "soft-capping with masked classes and label smoothing: "
                   "infinite loss, gradient 0 on the masked classes",
                   _fixed(_MASKED[:1] + _MASKED[3:], [2, 4], jitter=0.25), 5, softcap=5.0,
                   label_smoothing=_SMOOTH),
        OptionCase("softcap-z-weights-ignore-smooth", "soft-capping, z-loss, class weights, "
                   "ignore_index and label smoothing",
                   _index(6, 6, 12.0, ignored=(2,)), 6, weight=_weights(6),
                   label_smoothing=_SMOOTH, z_loss=_Z_STRONG, softcap=5.0),
        OptionCase("combined", "offset 1e4, wide spreads, weights, ignore_index, label smoothing, "
                   "z-loss and soft-capping (kappa = 30)",
                   _fixed([[1e4 + v for v in row] for row in _SPREAD_F64], [0, -100, 3, 4],
                          jitter=0.25), 8, weight=_weights(8, 0.5, 2.0), label_smoothing=_SMOOTH,
                   z_loss=_Z, softcap=30.0),
        OptionCase("all-ignored", "every row ignored, z-loss and soft-capping: 'mean' NaN (loss and "
                   "z), 'sum' 0, zero gradient, lse still computed",
                   _index(3, 4, 5.0, ignored=(0, 1, 2)), 4, z_loss=_Z, softcap=5.0),
        OptionCase("empty", "an empty batch with z-loss and soft-capping", _fixed([], []), 3,
                   z_loss=_Z, softcap=5.0),
        OptionCase("n1-1d", "1-D scores with every option", _one_d(5, 6.0), 5, weight=_weights(5),
                   label_smoothing=_SMOOTH, z_loss=_Z_STRONG, softcap=5.0),
        OptionCase("c1", "a single class with z-loss and soft-capping: lse = f', gradient "
                   "2 lambda f' (1 - tanh^2)", _index(3, 1, 6.0), 1, z_loss=_Z_STRONG,
                   softcap=5.0),
        OptionCase("nan-row", "NaN in one row with z-loss and soft-capping: that row NaN",
                   _with_nan(_index(3, 4, 3.0), 1, 2), 4, z_loss=_Z, softcap=5.0),
        OptionCase("labels-int32", "int32 labels with every option", _index(4, 5, 4.0), 5,
                   labels_dtype="int32", reductions=("mean",), weight=_weights(5),
                   label_smoothing=_SMOOTH, z_loss=_Z, softcap=5.0),
        OptionCase("large-c1024", "C = 1024 with z-loss, label smoothing and soft-capping",
                   _index(2, 1024, 40.0), 1024, dtypes=("float32",), reductions=("sum",),
                   label_smoothing=_SMOOTH, z_loss=_Z, softcap=30.0),
        # ---- probability targets
        OptionCase("prob", "probability targets that sum to 1", _prob(5, 5, 4.0), 5,
                   probability=True),
        OptionCase("prob-unnormalized", "probability targets that do not sum to 1 (one row all 0)",
                   _prob(5, 5, 4.0, normalized=False, zeros=0.2, zero_row=3), 5,
                   probability=True),
        OptionCase("prob-weights-smooth", "probability targets with class weights and label "
                   "smoothing", _prob(5, 6, 5.0, normalized=False, zeros=0.2), 6,
                   probability=True, weight=_weights(6), label_smoothing=_SMOOTH),
        OptionCase("prob-masked", "probability targets 0 on every -inf class: finite loss, "
                   "gradient exactly 0 there", _fixed(_MASKED, _MASKED_TARGETS, jitter=0.25), 5,
                   probability=True, weight=_weights(5), z_loss=_Z),
        OptionCase("prob-masked-smooth", "probability targets 0 on the -inf classes, with label "
                   "smoothing: infinite loss, gradient -w_k eps/C there",
                   _fixed(_MASKED, _MASKED_TARGETS, jitter=0.25), 5, probability=True,
                   label_smoothing=_SMOOTH),
        OptionCase("prob-masked-target", "a positive probability target on a -inf class: that "
                   "row's loss is infinite", _fixed([[0.5, -INF, 2.0], [1.0, 0.0, -1.0]],
                                                    [[0.25, 0.5, 0.25], [0.5, 0.5, 0.0]],
                                                    jitter=0.25), 3, probability=True),
        OptionCase("prob-z-softcap", "probability targets with weights, label smoothing, z-loss "
                   "and soft-capping", _prob(6, 5, 12.0, normalized=False, zeros=0.2), 5,
                   probability=True, weight=_weights(5), label_smoothing=_SMOOTH,
                   z_loss=_Z_STRONG, softcap=5.0),
        OptionCase("prob-softcap-small", "probability targets with kappa = 0.5",
                   _prob(4, 5, 30.0), 5, probability=True, softcap=0.5),
        OptionCase("prob-offset", "probability targets with z-loss, scores near +1e4",
                   _prob(4, 6, 8.0, 1e4, normalized=False), 6, probability=True, z_loss=_Z),
        OptionCase("prob-spread-f64", "probability targets with z-loss, spreads past float64's "
                   "exp overflow", _spread_targets(_SPREAD_F64, 8), 8, probability=True,
                   z_loss=_Z),
        OptionCase("prob-spread-f32", "probability targets, spreads past float32's exp overflow",
                   _spread_targets(_SPREAD_F32, 6), 6, probability=True, weight=_weights(6)),
        OptionCase("prob-n1-1d", "1-D scores with probability targets and every option",
                   _one_d(5, 6.0, probability=True), 5, probability=True, weight=_weights(5),
                   label_smoothing=_SMOOTH, z_loss=_Z_STRONG, softcap=5.0),
        OptionCase("prob-c1", "a single class with probability targets, z-loss and soft-capping",
                   _prob(3, 1, 6.0, normalized=False), 1, probability=True, z_loss=_Z_STRONG,
                   softcap=5.0),
        OptionCase("prob-empty", "an empty batch of probability targets", _fixed([], []), 3,
                   probability=True, z_loss=_Z),
        OptionCase("prob-nan-row", "NaN in one row with probability targets",
                   _with_nan(_prob(3, 4, 3.0), 1, 2), 4, probability=True, z_loss=_Z),
        OptionCase("prob-large-c1000", "C = 1000, probability targets with every option",
                   _prob(2, 1000, 20.0, normalized=False, zeros=0.5), 1000, probability=True,
                   dtypes=("float64",), reductions=("none",), weight=_weights(1000),
                   label_smoothing=_SMOOTH, z_loss=_Z, softcap=30.0),
        # ---- one-hot probability targets and their class-index twins (same scores)
        OptionCase("onehot-index", "class indices; same inputs as 'onehot-prob'", onehot_draw, 6,
                   label_smoothing=_SMOOTH, z_loss=_Z_STRONG, softcap=5.0, seed="onehot"),
        OptionCase("onehot-prob", "one-hot probability targets: the results of 'onehot-index'",
                   _one_hot(onehot_draw, 6), 6, probability=True, label_smoothing=_SMOOTH,
                   z_loss=_Z_STRONG, softcap=5.0, seed="onehot"),
        OptionCase("onehot-weights-index", "class indices with weights; same inputs as "
                   "'onehot-weights-prob'", onehot_draw, 6, weight=_weights(6),
                   label_smoothing=_SMOOTH, z_loss=_Z, softcap=30.0, seed="onehot-weights"),
        OptionCase("onehot-weights-prob", "one-hot probability targets with weights: the results "
                   "of 'onehot-weights-index' for 'sum' and 'none' ('mean' divides by N, not by "
                   "the target weights)", _one_hot(onehot_draw, 6), 6, probability=True,
                   weight=_weights(6), label_smoothing=_SMOOTH, z_loss=_Z, softcap=30.0,
                   seed="onehot-weights"),
    ]


# --------------------------------------------------------------------------
# Building the document
# --------------------------------------------------------------------------
def build_case(spec: OptionCase, dtype: str, reduction: str, rng: random.Random) -> dict:
    """Draw the inputs of one case, round them to ``dtype`` and evaluate."""
    scores, targets = spec.make(rng, dtype)
    weight = spec.weight(rng) if spec.weight is not None else None
    scores = _round(scores, dtype)
    weight = _round(weight, dtype) if weight is not None else None
    one_d = bool(scores) and not isinstance(scores[0], list)
    rows = [scores] if one_d else scores
    if spec.probability:
        targets = _round(targets, dtype)
        row_targets = [targets] if one_d else targets
    else:
        row_targets = [targets] if one_d else targets
    eps, lam = spec.label_smoothing[dtype], spec.z_loss[dtype]
    ref = reference_options(rows, row_targets, n_classes=spec.n_classes, reduction=reduction,
                            weight=weight, ignore_index=spec.ignore_index, label_smoothing=eps,
                            z_loss=lam, softcap=spec.softcap)
    shape = [spec.n_classes] if one_d else [len(rows), spec.n_classes]
    unrow = (lambda x: x[0]) if one_d else (lambda x: x)
    loss, z = ref.loss, ref.z
    if reduction == "none" and one_d:
        loss, z = loss[0], z[0]
    return {
        "id": "-".join([spec.name, dtype, reduction]),
        "description": spec.description,
        "dtype": dtype,
        "shape": shape,
        "scores": _strings(scores),
        "targets": "probability" if spec.probability else "index",
        "labels": _strings(targets) if spec.probability else targets,
        "labels_dtype": dtype if spec.probability else spec.labels_dtype,
        "reduction": reduction,
        "weight": _strings(weight) if weight is not None else None,
        "ignore_index": spec.ignore_index,
        "label_smoothing": eps,
        "z_loss": lam,
        "softcap": spec.softcap,
        "mp_dps": ref.dps,
        "expected": {"loss": loss, "grad": unrow(ref.grad), "z": z, "lse": unrow(ref.lse)},
    }


def build_document() -> dict:
    """All cases, in a fixed order, with the file's header fields."""
    cases = []
    for spec in case_specs():
        for dtype in spec.dtypes:
            for reduction in spec.reductions:
                rng = random.Random(f"{SEED}-{spec.seed or spec.name}-{dtype}")
                cases.append(build_case(spec, dtype, reduction, rng))
    ids = [c["id"] for c in cases]
    assert len(set(ids)) == len(ids), "duplicate case ids"
    return {
        "generated_by": COMMAND,
        "comment": (f"GENERATED FILE - DO NOT EDIT. Regenerate with `{COMMAND}` (check with "
                    f"`{COMMAND} --check`). Expected values are the SymPy closed forms proved by "
                    "`python -m symbolic`, evaluated with mpmath (working precision mp_dps "
                    f"digits, stored to {DIGITS} significant digits)."),
        "format": {
            "scores, weight": "repr() of each float, exactly the value of the case's dtype "
                              "(float32 values were rounded before evaluation); "
                              "'inf', '-inf', 'nan' allowed",
            "shape": "[N, C] or [C] for 1-D scores",
            "targets": "'index': labels are class indices of shape shape[:-1] (labels_dtype); "
                       "'probability': labels are floats (repr strings) of the scores' shape "
                       "and dtype",
            "z_loss, softcap": "the keyword arguments (softcap null: none), exact in float32",
            "expected": "decimal strings: loss and z (lists for reduction 'none'), grad with "
                        "the scores' shape, lse with shape[:-1]; exact values for the given "
                        "input",
            "semantics": "f'_k = softcap*tanh(f_k/softcap) (-inf stays -inf), lse = log sum_j "
                         "exp(f'_j), z_i = z_loss*lse_i^2; index targets: l_i = (1-eps) w_y "
                         "(lse - f'_y) + (eps/C) sum_c w_c (lse - f'_c) + z_i, 0 on ignored rows, "
                         "'mean' = sum of the cross-entropy parts / sum of w_y + sum of z_i / "
                         "number of counted rows; probability targets t: l_i = sum_c w_c t'_c "
                         "(lse - f'_c) + z_i, t'_c = (1-eps) t_c + eps/C, a term with w_c t'_c = 0 "
                         "is 0, 'mean' divides by N; grad is with respect to the original scores",
        },
        "seed": SEED,
        "cases": cases,
    }


def render() -> bytes:
    """The exact bytes of ``tests/data/reference_cases_options.json``."""
    return (_dump(build_document()) + "\n").encode("utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    return generator_main(argv, COMMAND, __doc__, _CASES_FILE, render, default_output)


if __name__ == "__main__":
    sys.exit(main())
