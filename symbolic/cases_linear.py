"""Generate the reference cases of the fused linear layer and of the case study's
classifier, ``tests/data/reference_cases_linear.json``.

Usage::

    python -m symbolic.cases_linear            # (re)write the file
    python -m symbolic.cases_linear --check    # exit 1 if it differs from what would be written

Two kinds of case (the field ``function``):

``linear_softmax_cross_entropy``
    ``input`` (shape ``(..., D)``), ``linear_weight`` (V, D), ``linear_bias`` (V,) or
    none, and class-index or probability targets, with every loss option:
    the expected loss, ``grad_input``, ``grad_linear_weight`` and
    ``grad_linear_bias`` of ``z = input @ linear_weight.T + linear_bias`` followed
    by the softmax cross-entropy, from :func:`symbolic.evaluate.reference_linear`;
``linear_softmax_loss``
    the case study's classifier, ``X`` (N, D), ``W`` (D, C), ``b`` ((C,), (1, C) or
    none), labels ``y`` and ``reg > 0``: the expected loss (cross-entropy plus
    ``reg/2 sum W^2``), ``dW`` and ``db``, from
    :func:`symbolic.evaluate.reference_classifier`.

The expected values are the closed forms proved by ``python -m symbolic`` (the
steps 'linear x', 'linear W', 'linear b', 'classifier W', 'classifier b' and the
loss's own), evaluated with mpmath at 50 or more digits and stored as decimal
strings with 20 significant digits; never from NumPy or the kernels.  Every input
is stored exactly as the kernels see it (float32 cases are rounded to float32
before evaluation); ``reg``, ``z_loss``, ``softcap`` and the label smoothing are
exact in float32 as well.

The layout and the random inputs follow :mod:`symbolic.cases` (a fixed seed,
:class:`random.Random` per family and dtype, sorted keys), so the output is
byte-for-byte deterministic.

Coverage: float32 and float64, every reduction; with and without a bias; class
weights, ``ignore_index`` rows (the default and a valid class index, every row
ignored), label smoothing, the z-loss, soft-capping, probability targets, all
combined; N-D input ``(2, 3, D)`` and 1-D input ``(D,)``; an empty batch; D = 1
and V = 1; logits spread over up to 180 in a row (probabilities down to e^-180,
far below float32's range); int32 labels; and V = 300 with 9 rows (what
``chunk_size`` 1 or 2 splits into many chunks).  The classifier: reg > 0 with a
bias of shape (C,) and (1, C), without a bias, and with weights, ``ignore_index``
and label smoothing, for "mean" and "sum".
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .cases import (_SMOOTH, DTYPES, REDUCTIONS, _dump, _round, _strings, _weights,
                    generator_main, source_tree_file)
from .evaluate import DIGITS, reference_classifier, reference_linear

__all__ = ["LinearCase", "ClassifierCase", "case_specs", "classifier_specs", "build_case",
           "build_classifier_case", "build_document", "render", "main", "COMMAND",
           "default_output"]

SEED = 20261201
COMMAND = "python -m symbolic.cases_linear"
_CASES_FILE = Path("tests") / "data" / "reference_cases_linear.json"
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / _CASES_FILE


def default_output() -> Path:
    """The cases file of the source tree (see :func:`symbolic.cases.default_output`)."""
    return source_tree_file(_CASES_FILE)


#: z-loss coefficients: 2^-13 (exact in float32) and 1e-4 (PaLM's value); lambda = 1
_Z = {"float32": 2.0 ** -13, "float64": 1e-4}
_Z_STRONG = {"float32": 1.0, "float64": 1.0}
_NO = {"float32": 0.0, "float64": 0.0}


@dataclass
class LinearCase:
    """Inputs of one family of fused cases before rounding to the dtype.

    ``batch`` is the batch shape of ``input`` (``()`` for 1-D input), ``D`` and ``V``
    the layer's sizes.  Inputs are uniform in ``[-x_scale, x_scale]``, the weight
    matrix in ``[-w_scale, w_scale]``, the bias (``bias_scale`` None: no bias) in
    ``[-bias_scale, bias_scale]``; class-index targets are uniform, ``ignored`` lists
    the (flattened) rows set to ``ignore_index``; probability targets are uniform in
    ``[0, 2)`` with about a quarter of them 0.
    """

    name: str
    description: str
    batch: tuple
    D: int
    V: int
    x_scale: float = 2.0
    w_scale: float = 1.0
    bias_scale: float | None = 1.0
    probability: bool = False
    ignored: Sequence[int] = ()
    dtypes: Sequence[str] = DTYPES
    reductions: Sequence[str] = REDUCTIONS
    weight: Callable[[random.Random], list] | None = None
    ignore_index: int = -100
    label_smoothing: dict = field(default_factory=lambda: dict(_NO))
    z_loss: dict = field(default_factory=lambda: dict(_NO))
    softcap: float | None = None
    labels_dtype: str = "int64"


@dataclass
class ClassifierCase:
    """Inputs of one family of classifier cases (``scores = X @ W + b``, W (D, C)).

    ``bias`` is ``"1d"`` (shape (C,)), ``"2d"`` (shape (1, C)) or None (no bias).
    """

    name: str
    description: str
    N: int
    D: int
    C: int
    reg: float
    bias: str | None = "1d"
    ignored: Sequence[int] = ()
    dtypes: Sequence[str] = DTYPES
    reductions: Sequence[str] = ("mean", "sum")
    weight: Callable[[random.Random], list] | None = None
    ignore_index: int = -100
    label_smoothing: dict = field(default_factory=lambda: dict(_NO))


def case_specs() -> list[LinearCase]:
    """Every family of fused cases; each is crossed with its dtypes and reductions."""
    return [
        LinearCase("plain", "class indices with a bias", (5,), 4, 6),
        LinearCase("no-bias", "no bias (grad_linear_bias None)", (4,), 3, 5, bias_scale=None),
        LinearCase("weights-ignore", "class weights and ignore_index rows ('mean' divides by "
                   "the target weights of the counted rows)", (6,), 4, 5, ignored=(1, 4),
                   weight=_weights(5)),
        LinearCase("ignore-valid-class", "ignore_index = 1, a valid class index, with weights",
                   (5,), 3, 3, ignore_index=1, weight=_weights(3)),
        LinearCase("smooth", "label smoothing with weights and an ignored row", (5,), 5, 6,
                   ignored=(2,), weight=_weights(6), label_smoothing=_SMOOTH),
        LinearCase("z", "the z-loss with lambda = 1", (5,), 4, 5, z_loss=_Z_STRONG),
        LinearCase("softcap", "soft-capping (kappa = 5) of logits up to about 20", (5,), 4, 6,
                   x_scale=4.0, w_scale=2.5, softcap=5.0),
        LinearCase("combined", "weights, ignore_index, label smoothing, z-loss and "
                   "soft-capping", (6,), 5, 7, ignored=(0, 3), weight=_weights(7),
                   label_smoothing=_SMOOTH, z_loss=_Z_STRONG, softcap=5.0, x_scale=3.0),
        LinearCase("prob", "probability targets (not summing to 1) with weights and label "
                   "smoothing", (5,), 4, 5, probability=True, weight=_weights(5),
                   label_smoothing=_SMOOTH),
        LinearCase("prob-z-softcap", "probability targets with the z-loss and soft-capping",
                   (4,), 3, 6, probability=True, z_loss=_Z, softcap=5.0, x_scale=4.0,
                   w_scale=2.0),
        LinearCase("nd", "N-D input of shape (2, 3, D) with weights, an ignored row and the "
                   "z-loss", (2, 3), 4, 5, ignored=(4,), weight=_weights(5), z_loss=_Z),
        LinearCase("nd-prob", "N-D input (2, 2, D) with probability targets (2, 2, V)",
                   (2, 2), 3, 4, probability=True, label_smoothing=_SMOOTH),
        LinearCase("one-d", "1-D input (D,) with a scalar target and every option", (), 5, 4,
                   weight=_weights(4), label_smoothing=_SMOOTH, z_loss=_Z_STRONG, softcap=5.0),
        LinearCase("d1", "a single input feature (D = 1)", (4,), 1, 3),
        LinearCase("v1", "a single class (V = 1) with the z-loss: the cross-entropy is 0, the "
                   "gradient 2 lambda z", (3,), 2, 1, z_loss=_Z_STRONG),
        LinearCase("wide", "logits spread over up to 180 in a row: probabilities down to "
                   "e^-180, far below float32's range",
                   (4,), 4, 6, x_scale=8.0, w_scale=8.0, bias_scale=4.0),
        LinearCase("large-v", "V = 300 classes and 9 rows (many chunks with chunk_size 1 or 2) "
                   "with weights, an ignored row, label smoothing and the z-loss", (9,), 8, 300,
                   ignored=(5,), weight=_weights(300), label_smoothing=_SMOOTH, z_loss=_Z,
                   reductions=("mean", "none")),
        LinearCase("all-ignored", "every row ignored: 'mean' NaN, 'sum' 0, zero gradients",
                   (3,), 3, 4, ignored=(0, 1, 2), z_loss=_Z),
        LinearCase("empty", "an empty batch (N = 0): 'mean' NaN, 'sum' 0, zero gradients",
                   (0,), 3, 4),
        LinearCase("labels-int32", "int32 labels", (4,), 3, 5, labels_dtype="int32",
                   reductions=("mean",)),
    ]


def classifier_specs() -> list[ClassifierCase]:
    """Every family of classifier cases; each is crossed with its dtypes and reductions."""
    return [
        ClassifierCase("clf", "reg = 0.5 with a bias of shape (C,)", 6, 4, 5, 0.5),
        ClassifierCase("clf-no-bias", "reg = 0.25 without a bias (db: of a zero bias)", 5, 3, 4,
                       0.25, bias=None),
        ClassifierCase("clf-bias-2d", "reg = 2 (the penalty dominates dW) with a bias of shape "
                       "(1, C)", 4, 3, 3, 2.0, bias="2d"),
        ClassifierCase("clf-options", "reg = 0.125 with class weights, an ignored row and "
                       "label smoothing", 6, 4, 5, 0.125, ignored=(2,), weight=_weights(5),
                       label_smoothing=_SMOOTH),
    ]


# --------------------------------------------------------------------------
# Building the document
# --------------------------------------------------------------------------
def _matrix(rng: random.Random, rows: int, cols: int, scale: float) -> list:
    return [[rng.uniform(-scale, scale) for _ in range(cols)] for _ in range(rows)]


def _nest(flat: list, shape: Sequence[int]):
    """A flat list as nested lists of ``shape`` (``()``: the single item)."""
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[n * step:(n + 1) * step], shape[1:]) for n in range(shape[0])]


def _rows_of(batch: Sequence[int]) -> int:
    count = 1
    for n in batch:
        count *= n
    return count


def _targets(rng: random.Random, spec, rows: int, n_classes: int) -> list:
    """Flat targets: class indices (some ignored) or rows of probability targets."""
    if getattr(spec, "probability", False):
        return [[0.0 if rng.random() < 0.25 else rng.uniform(0.0, 2.0) for _ in range(n_classes)]
                for _ in range(rows)]
    labels = [rng.randrange(n_classes) for _ in range(rows)]
    for r in spec.ignored:
        labels[r] = spec.ignore_index
    return labels


def build_case(spec: LinearCase, dtype: str, reduction: str, rng: random.Random) -> dict:
    """Draw the inputs of one fused case, round them to ``dtype`` and evaluate."""
    rows = _rows_of(spec.batch)
    x = _round(_matrix(rng, rows, spec.D, spec.x_scale), dtype)
    W = _round(_matrix(rng, spec.V, spec.D, spec.w_scale), dtype)
    b = _round(_matrix(rng, 1, spec.V, spec.bias_scale)[0], dtype) \
        if spec.bias_scale is not None else None
    targets = _targets(rng, spec, rows, spec.V)
    if spec.probability:
        targets = _round(targets, dtype)
    weight = _round(spec.weight(rng), dtype) if spec.weight is not None else None
    eps, lam = spec.label_smoothing[dtype], spec.z_loss[dtype]
    ref = reference_linear(x, W, b, targets, reduction=reduction, weight=weight,
                           ignore_index=spec.ignore_index, label_smoothing=eps, z_loss=lam,
                           softcap=spec.softcap)
    batch = tuple(spec.batch)
    loss = _nest(ref.loss, batch) if reduction == "none" else ref.loss
    flat_inputs = [v for row in x for v in row]
    return {
        "id": "-".join([spec.name, dtype, reduction]),
        "function": "linear_softmax_cross_entropy",
        "description": spec.description,
        "dtype": dtype,
        "input_shape": [*batch, spec.D],
        "input": _nest(_strings(flat_inputs), [*batch, spec.D]),
        "linear_weight": _strings(W),
        "linear_bias": _strings(b) if b is not None else None,
        "target_kind": "probability" if spec.probability else "index",
        "target": _nest(_strings(targets) if spec.probability else targets, batch),
        "target_dtype": dtype if spec.probability else spec.labels_dtype,
        "reduction": reduction,
        "weight": _strings(weight) if weight is not None else None,
        "ignore_index": spec.ignore_index,
        "label_smoothing": eps,
        "z_loss": lam,
        "softcap": spec.softcap,
        "mp_dps": ref.dps,
        "expected": {
            "loss": loss,
            "grad_input": _nest([v for row in ref.grad_input for v in row], [*batch, spec.D]),
            "grad_linear_weight": ref.grad_linear_weight,
            "grad_linear_bias": ref.grad_linear_bias if b is not None else None,
        },
    }


def build_classifier_case(spec: ClassifierCase, dtype: str, reduction: str,
                          rng: random.Random) -> dict:
    """Draw the inputs of one classifier case, round them to ``dtype`` and evaluate."""
    X = _round(_matrix(rng, spec.N, spec.D, 2.0), dtype)
    W = _round(_matrix(rng, spec.D, spec.C, 1.0), dtype)
    b = _round(_matrix(rng, 1, spec.C, 1.0)[0], dtype) if spec.bias is not None else None
    y = _targets(rng, spec, spec.N, spec.C)
    weight = _round(spec.weight(rng), dtype) if spec.weight is not None else None
    eps = spec.label_smoothing[dtype]
    ref = reference_classifier(X, W, b, y, reg=spec.reg, reduction=reduction, weight=weight,
                               ignore_index=spec.ignore_index, label_smoothing=eps)
    as_given = (lambda v: [v]) if spec.bias == "2d" else (lambda v: v)
    return {
        "id": "-".join([spec.name, dtype, reduction]),
        "function": "linear_softmax_loss",
        "description": spec.description,
        "dtype": dtype,
        "X": _strings(X),
        "W": _strings(W),
        "b": as_given(_strings(b)) if b is not None else None,
        "y": y,
        "reg": spec.reg,
        "reduction": reduction,
        "weight": _strings(weight) if weight is not None else None,
        "ignore_index": spec.ignore_index,
        "label_smoothing": eps,
        "mp_dps": ref.dps,
        "expected": {"loss": ref.loss, "dW": ref.dW, "db": as_given(ref.db)},
    }


def build_document() -> dict:
    """All cases, in a fixed order, with the file's header fields."""
    cases = []
    for builder, specs in ((build_case, case_specs()),
                           (build_classifier_case, classifier_specs())):
        for spec in specs:
            for dtype in spec.dtypes:
                for reduction in spec.reductions:
                    # one generator per family and dtype: the reductions see the same input
                    rng = random.Random(f"{SEED}-{spec.name}-{dtype}")
                    cases.append(builder(spec, dtype, reduction, rng))
    ids = [c["id"] for c in cases]
    assert len(set(ids)) == len(ids), "duplicate case ids"
    return {
        "generated_by": COMMAND,
        "comment": (f"GENERATED FILE - DO NOT EDIT. Regenerate with `{COMMAND}` (check with "
                    f"`{COMMAND} --check`). Expected values are the SymPy closed forms proved by "
                    "`python -m symbolic`, evaluated with mpmath (working precision mp_dps "
                    f"digits, stored to {DIGITS} significant digits)."),
        "format": {
            "function": "'linear_softmax_cross_entropy' (the fused function's arguments: "
                        "input, linear_weight, linear_bias, target and the loss options) or "
                        "'linear_softmax_loss' (the classifier's: X, W, b, y, reg and the "
                        "loss options)",
            "floats": "repr() of each float, exactly the value of the case's dtype (float32 "
                      "values were rounded before evaluation)",
            "input_shape": "the shape of input, (..., D); target has input_shape[:-1] "
                           "('index', target_dtype) or input_shape[:-1] + (V,) ('probability')",
            "linear_weight, W": "(V, D) for the fused function, (D, C) for the classifier; "
                                "linear_bias (V,) or null; b (C,), (1, C) or null",
            "expected": "decimal strings, exact values for the given input: loss (for "
                        "reduction 'none' of shape input_shape[:-1]), grad_input (the shape "
                        "of input), grad_linear_weight (V, D), grad_linear_bias (V,) or null "
                        "without a bias; the classifier's loss, dW (the shape of W) and db "
                        "(the shape of b, (C,) without one)",
            "semantics": "z = input @ linear_weight.T + linear_bias, then the softmax "
                         "cross-entropy of z with the options of "
                         "reference_cases_options.json; g = dloss/dz (for 'none' of the sum "
                         "of the row losses), grad_input = g @ linear_weight, "
                         "grad_linear_weight = g.T @ input, grad_linear_bias = g.sum(0). "
                         "Classifier: scores = X @ W + b, loss = cross-entropy + "
                         "0.5*reg*sum(W**2), dW = X.T @ g + reg*W, db = g.sum(0)",
        },
        "seed": SEED,
        "cases": cases,
    }


def render() -> bytes:
    """The exact bytes of ``tests/data/reference_cases_linear.json``."""
    return (_dump(build_document()) + "\n").encode("utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    return generator_main(argv, COMMAND, __doc__, _CASES_FILE, render, default_output)


if __name__ == "__main__":
    sys.exit(main())
