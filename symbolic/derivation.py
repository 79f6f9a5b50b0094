"""Machine-checked derivation of the softmax cross-entropy gradient.

Run ``python -m symbolic`` to print every step of the derivation in the
CS231n lecture notes on the softmax classifier ("Softmax derivation",
page 13/18) as an equation, each marked verified only when SymPy proves it,
followed by the closed forms that the compiled kernels implement (class
weights, label smoothing, the batch reductions, the Hessian, the shifted
forms).  The command exits with status 1 if any step fails to verify.

``python -m symbolic --latex FILE`` or ``--markdown FILE`` also writes the
derivation as a document.

How a step is proved
--------------------
A step is a chain of expressions ``e_0 = e_1 = ... = e_n``; it is verified when
``e_m - e_0`` is proved identically zero for every ``m``:

* *general C*: the classes are an :class:`sympy.IndexedBase` ``f`` summed with
  :class:`sympy.Sum`; derivatives give :class:`sympy.KroneckerDelta` terms.
  After ``doit()``, ``Piecewise`` range conditions are resolved under the
  assumption that every free index is a valid class (``0 <= k <= C - 1``),
  constant factors are pulled out of the sums, and the remaining sums
  ``sum_j e^{f_j}`` and ``sum_c w_c`` are replaced by the positive symbols
  ``S`` and ``W`` *before* simplification (``simplify`` on unevaluated sums can
  crash inside ``sum_simplify``).  Any sum left over fails the step.
* *concrete C*: the same chain is instantiated for ``C = 1..6`` (or ``1..3``
  for the options) and for every combination of the free class indices,
  with explicit symbols ``f0..f{C-1}`` (and ``w0..``).
In both cases the zero test substitutes ``e^{f_n} = x_n`` (``x_n > 0``),
which turns every expression into a rational function (logarithms of
positive quantities are expanded first) and reduces it with
:func:`sympy.cancel`; when that canonical form is not 0 the test falls back
to ``simplify(expr) == 0``.  Both are exact.

Sources: the lecture notes above; PyTorch's documentation of
``torch.nn.functional.cross_entropy`` for the option semantics.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import sympy as sp
from sympy.printing.pretty.pretty import PrettyPrinter
from sympy.printing.str import StrPrinter
from sympy.simplify.simplify import factor_sum

from . import expressions as E
from .expressions import C, c, eps, f, j, k, w, y

__all__ = ["Step", "Result", "steps", "verify", "main", "render_text",
           "render_latex", "render_markdown", "is_zero"]

# --------------------------------------------------------------------------
# Placeholders used in the displayed equations
# --------------------------------------------------------------------------
#: normalized probabilities P_n (a placeholder for e^{f_n} / sum_j e^{f_j})
P = sp.IndexedBase("P", positive=True)
#: the loss of one row (placeholder)
L = sp.Symbol("L", real=True)
#: the loss of one row with weights and label smoothing (placeholder)
ell = sp.Symbol("l", real=True)
#: explicit symbols for the concrete positive quantities x_n = e^{f_n}
_x = sp.IndexedBase("x", positive=True)

#: sum_{j != y} e^{f_j}, written with a Kronecker delta
S_not_y = sp.Sum(sp.exp(f[j]) * (1 - sp.KroneckerDelta(j, y)), (j, 0, C - 1))

#: what each placeholder derivative means; applied before ``doit``.  (Sums
#: differentiated twice use the bound index ``c`` so that ``j`` stays free.)
_LOSS_C = -f[y] + sp.log(E.exp_sum(c))
_ROW_LOSS_C = E.row_loss_definition.xreplace({E.S_sum: E.exp_sum(sp.Symbol("n", integer=True, nonnegative=True))})
MEANING = {
    sp.Derivative(L, f[k]): sp.Derivative(E.loss_prob_form, f[k]),
    sp.Derivative(L, f[y]): sp.Derivative(E.loss_prob_form, f[y]),
    sp.Derivative(L, P[y]): sp.Derivative(-sp.log(P[y]), P[y]),
    sp.Derivative(P[y], f[k]): sp.Derivative(E.softmax(y), f[k]),
    sp.Derivative(P[y], f[y]): sp.Derivative(E.softmax(y), f[y]),
    sp.Derivative(ell, f[k]): sp.Derivative(E.row_loss_definition, f[k]),
    sp.Derivative(L, f[j], f[k]): sp.Derivative(_LOSS_C, f[j], f[k]),
    sp.Derivative(ell, f[j], f[k]): sp.Derivative(_ROW_LOSS_C, f[j], f[k]),
    L: E.loss_logit_form,
}

_INDICES = (j, k, y, c)
#: names of the explicit score symbols of concrete checks: f3 (one row), f1_3 (batches)
_EXPLICIT = re.compile(r"f\d+(_\d+)?")


# --------------------------------------------------------------------------
# Zero tests
# --------------------------------------------------------------------------
def _is_indexed(base: sp.IndexedBase) -> Callable[[sp.Basic], bool]:
    return lambda e: isinstance(e, sp.Indexed) and e.base == base


def is_zero(expr: sp.Expr) -> bool:
    """Exact test that ``expr`` (free of sums and derivatives) is 0.

    Substitutes ``f_n = log(x_n)`` with ``x_n > 0`` so that the expression
    becomes rational in ``x`` (after expanding logarithms of positive
    quantities), and checks that :func:`sympy.cancel` reduces it to 0; if it
    does not, falls back to ``sympy.simplify(expr) == 0``.
    """
    sub = expr.replace(_is_indexed(f), lambda e: sp.log(_x[e.indices]))
    sub = sub.replace(lambda e: isinstance(e, sp.Symbol) and _EXPLICIT.fullmatch(e.name) is not None,
                      lambda e: sp.log(sp.Symbol("x" + e.name[1:], positive=True)))
    rational = sp.expand_power_exp(sp.expand_log(sub))
    if sp.expand(sp.numer(sp.together(rational))) == 0:
        return True  # numerator of the rational function is the zero polynomial
    try:
        if sp.cancel(rational) == 0:
            return True
    except sp.PolynomialError:
        pass
    return sp.simplify(expr) == 0


@functools.lru_cache(maxsize=None)
def _resolve_cached(expr: sp.Expr, values: tuple) -> sp.Expr:
    out = expr.xreplace(MEANING)
    total = E.S_sum
    if values:
        sub = dict(values)
        bound = {lim[0] for s in out.atoms(sp.Sum) for lim in s.limits}
        # xreplace is much faster than subs, but would also rename bound indices
        out = out.subs(sub) if bound & set(sub) else out.xreplace(sub)
        if C in sub:
            total = sp.Add(*[sp.exp(f[q]) for q in range(sub[C])])
            out = _expand_sums(out)
    out = out.doit()
    # P_n only survives outside derivatives (MEANING differentiates it)
    return out.replace(_is_indexed(P), lambda e: sp.exp(f[e.indices[0]]) / total)


def _expand_sums(expr: sp.Expr) -> sp.Expr:
    """Write out every sum with numeric limits as explicit terms.

    The same as ``Sum.doit()`` for these sums, and much faster.
    """
    def terms(s: sp.Sum) -> sp.Expr:
        (idx, lo, hi), = s.limits
        return sp.Add(*[s.function.xreplace({idx: q}) for q in range(int(lo), int(hi) + 1)])

    def numeric(e) -> bool:
        return (isinstance(e, sp.Sum) and len(e.limits) == 1
                and all(b.is_Integer for b in e.limits[0][1:]))

    while any(numeric(e) for e in sp.preorder_traversal(expr)):
        expr = expr.replace(numeric, terms)
    return expr


def _resolve(expr: sp.Expr, values: dict | None = None) -> sp.Expr:
    """Replace placeholders by their definitions and evaluate derivatives.

    ``values`` (``{C: 3, k: 1, ...}``) makes the expression concrete *before*
    differentiating, so that concrete checks differentiate explicit sums.
    Cached: steps share their left-hand sides.
    """
    key = tuple(sorted((values or {}).items(), key=lambda kv: kv[0].name))
    return _resolve_cached(expr, key)


def _split_sum(s: sp.Sum) -> sp.Expr:
    """Sum of an Add -> Add of Sums; constant factors pulled out."""
    (idx, lo, hi), = s.limits
    body = sp.expand(s.function)
    terms = body.args if body.is_Add else (body,)
    return sp.Add(*[factor_sum(sp.Sum(t, (idx, lo, hi))) for t in terms])


def _named_sum(s: sp.Expr) -> sp.Expr:
    """``sum e^{f_n}`` -> S and ``sum w_n`` -> W (any bound index, full range)."""
    if not isinstance(s, sp.Sum) or len(s.limits) != 1:
        return s
    idx, lo, hi = s.limits[0]
    if lo != 0 or hi != C - 1:
        return s
    if s.function == sp.exp(f[idx]):
        return E.S
    if s.function == w[idx]:
        return E.W
    return s


def _general_zero(expr: sp.Expr, hypotheses: dict) -> tuple[bool, str]:
    """Prove a general-C expression zero (see the module docstring)."""
    out = expr.doit()  # sums of Kronecker deltas from the derivatives
    in_range = sp.And(*[sp.Q.nonnegative(n) & sp.Q.le(n, C - 1) for n in _INDICES])
    out = out.replace(lambda e: isinstance(e, sp.Piecewise), lambda e: sp.refine(e, in_range))
    out = out.xreplace(hypotheses)
    for _ in range(3):  # sums inside sums
        out = out.replace(lambda e: isinstance(e, sp.Sum), _split_sum)
        out = out.replace(lambda e: isinstance(e, sp.Sum), _named_sum)
    leftovers = [e for e in sp.preorder_traversal(out)
                 if isinstance(e, (sp.Sum, sp.Piecewise, sp.Derivative))]
    if leftovers:
        return False, f"could not eliminate {leftovers[0]}"
    return is_zero(out), ""


# --------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------
@dataclass
class Step:
    """One equation chain of the derivation.

    Attributes
    ----------
    label : str
        Short tag, e.g. ``"(1)"``.
    title : str
        What the step states, in words.
    chain : list of sympy.Expr
        ``chain[0] = chain[1] = ...``; placeholders (``L``, ``l``, ``P_n``,
        placeholder derivatives) are resolved through :data:`MEANING`.
    general : bool
        Prove the chain for a general number of classes ``C``.
    concrete : callable or None
        ``concrete(C) -> list of dicts`` of free-index values for which the
        chain is also proved with ``C`` explicit; ``None`` to skip.
    classes : range
        The concrete values of ``C``.
    hypotheses : dict
        Substitutions that encode a case split (e.g. ``delta_ky -> 0`` for
        ``k != y``).
    custom : callable or None
        Replaces the chain check: ``custom() -> (ok, method, n_checks)``.
    """

    label: str
    title: str
    chain: list
    general: bool = True
    concrete: Callable[[int], list[dict]] | None = None
    classes: range = range(1, 7)
    hypotheses: dict = field(default_factory=dict)
    custom: Callable[[], tuple[bool, str, int]] | None = None
    note: str = ""


@dataclass
class Result:
    """Outcome of verifying one :class:`Step`."""

    step: Step
    ok: bool
    methods: list[str]
    seconds: float
    detail: str = ""


def _all_pairs(n: int) -> list[dict]:
    return [{k: a, y: b} for a in range(n) for b in range(n)]


def _k_equals_y(n: int) -> list[dict]:
    return [{y: b} for b in range(n)]


def _k_not_y(n: int) -> list[dict]:
    return [{k: a, y: b} for a in range(n) for b in range(n) if a != b]


def _labels(n: int) -> list[dict]:
    return [{y: b} for b in range(n)]


def _hessian_indices(n: int) -> list[dict]:
    return [{j: a, k: b, y: t} for a in range(n) for b in range(n) for t in range(n)]


def _explicit(expr: sp.Expr, n: int) -> sp.Expr:
    """Indexed f[n], w[n] -> explicit symbols f0.., w0.."""
    fs = {f[q]: sp.Symbol(f"f{q}", real=True) for q in range(n)}
    ws = {w[q]: sp.Symbol(f"w{q}", positive=True) for q in range(n)}
    return expr.xreplace({**fs, **ws})


def _verify_chain(step: Step) -> tuple[bool, list[str], str]:
    methods: list[str] = []
    ok = True
    first, rest = step.chain[0], step.chain[1:]
    if step.general:
        base = _resolve(first)
        for other in rest:
            good, why = _general_zero(_resolve(other) - base, step.hypotheses)
            if not good:
                return False, methods, f"general C: {sp.sstr(other)}: {why or 'not zero'}"
        methods.append("general C")
    if step.concrete is not None:
        count = 0
        for n in step.classes:
            for values in step.concrete(n):
                sub = {C: n, **values}
                base = _explicit(_resolve(first, sub), n)
                for other in rest:
                    diff = _explicit(_resolve(other, sub), n) - base
                    count += 1
                    if any(isinstance(e, (sp.Sum, sp.Derivative)) for e in sp.preorder_traversal(diff)) \
                            or not is_zero(diff):
                        return False, methods, f"C = {n}, {values}: {sp.sstr(other)}"
        methods.append(f"C = {step.classes.start}..{step.classes.stop - 1}, "
                       f"every index combination ({count} checks)")
    return ok, methods, ""


def verify(step: Step) -> Result:
    """Prove one step; never raises (an exception is a failed step)."""
    start = time.perf_counter()
    try:
        if step.custom is not None:
            ok, method, _ = step.custom()
            methods, detail = [method], ("" if ok else "closed form differs from the derivative")
        else:
            ok, methods, detail = _verify_chain(step)
    except Exception as exc:  # a crash inside SymPy is a failed proof, not a pass
        ok, methods, detail = False, [], f"{type(exc).__name__}: {exc}"
    return Result(step, ok, methods, time.perf_counter() - start, detail)


def _batch_check(n: int, labels: Sequence[int | None], abstract: bool) -> tuple[int, str]:
    """Check the reductions of one batch; return (number of checks, failure or "")."""
    ws = [sp.Symbol(f"w{q}", positive=True) for q in range(n)]
    F = [[sp.Symbol(f"f{r}_{q}", real=True) for q in range(n)] for r in range(len(labels))]
    kept = [lab is not None for lab in labels]
    if abstract:  # l_i: any function of row i's scores
        row_losses = [sp.Function(f"l{r}")(*F[r]) for r in range(len(labels))]
    else:         # l_i: PyTorch's row loss, weights and epsilon symbolic
        row_losses = [E.concrete(E.row_loss_definition, n, F[r], ws, y=lab) if kept[r] else None
                      for r, lab in enumerate(labels)]
    losses = [loss if kept[r] else sp.S.Zero for r, loss in enumerate(row_losses)]
    total = sp.Add(*losses)
    denom = sp.Add(*[ws[lab] for lab in labels if lab is not None])
    count = 0
    for r, lab in enumerate(labels):
        for q in range(n):
            if not kept[r]:
                g = sp.S.Zero
            elif abstract:
                g = sp.Derivative(row_losses[r], F[r][q])
            else:
                g = E.concrete(E.row_grad_closed, n, F[r], ws, k=q, y=lab)
            checks = [(sp.diff(total, F[r][q]), g)]                       # "sum"
            if any(kept):                                                  # "mean"
                checks.append((sp.diff(total / denom, F[r][q]), g / denom))
            for other, loss in enumerate(losses):                          # "none"
                checks.append((sp.diff(loss, F[r][q]), g if other == r else sp.S.Zero))
            for lhs, rhs in checks:
                count += 1
                diff = lhs - rhs
                if abstract:  # linear in the derivatives of the l_i: expand suffices
                    zero = sp.expand(diff) == 0 or sp.simplify(diff) == 0
                else:
                    zero = diff == 0 or is_zero(diff)
                if not zero:
                    return count, f"C={n}, labels={labels}, row {r}, k={q}"
    return count, ""


def _batch_reductions() -> tuple[bool, str, int]:
    """Prove the batch closed forms.

    The definitions

        L_none_i = r_i l_i,   L_sum = sum_i r_i l_i,   L_mean = L_sum / D,
        D = sum_i r_i w_{y_i}

    (r_i = 0 for ignored rows) are differentiated with respect to every
    f_{i',k} and compared with r_i g_{i,k} delta_{i i'} (none),
    r_i g_{i,k} (sum) and r_i g_{i,k} / D (mean):

    * with each l_i an arbitrary function of row i's scores (g = dl_i/df_{i,k}),
      for C = 1, 2 with N = 1..3 rows and C = 3 with N = 1, 2, and every
      label/ignore pattern;
    * with l_i PyTorch's row loss and g the closed form
      :data:`symbolic.expressions.row_grad_closed` (weights and epsilon
      symbolic), for five N = 2, C = 2 batches (distinct and equal labels,
      one or both rows ignored) and one N = 3, C = 3 batch.
    """
    count = 0
    sizes = {1: (1, 2, 3), 2: (1, 2, 3), 3: (1, 2)}  # classes -> batch sizes
    abstract = [(n, p) for n, rows in sizes.items() for size in rows
                for p in itertools.product([*range(n), None], repeat=size)]
    explicit = [(2, (0, 1)), (2, (1, 1)), (2, (0, None)), (2, (None, 1)), (2, (None, None)),
                (3, (2, 0, None))]
    for is_abstract, configs in ((True, abstract), (False, explicit)):
        for n, labels in configs:
            done, failure = _batch_check(n, labels, is_abstract)
            count += done
            if failure:
                return False, failure, count
    return True, (f"any row loss: every label/ignore pattern for C = 1, 2 with N = 1..3 "
                  f"and C = 3 with N = 1, 2; "
                  f"PyTorch's row loss: five N = 2, C = 2 batches and one N = 3, C = 3 "
                  f"batch ({count} checks)"), count


def steps() -> list[Step]:
    """The derivation, in the order of the notes, then the kernels' closed forms."""
    Sj = E.S_sum
    ey = sp.exp(f[y])
    d = sp.Derivative
    return [
        Step("(0)", "the two loss forms: -log P_y = -f_y + log sum_j e^{f_j}",
             [-sp.log(P[y]), E.loss_prob_form, E.loss_logit_form],
             concrete=_labels),
        Step("(1)", "chain rule: dL/df_k = dL/dP_y * dP_y/df_k",
             [d(L, f[k]), d(L, P[y]) * d(P[y], f[k])],
             concrete=_all_pairs),
        Step("(2)", "dL/dP_y = [-log P_y]' = -1/P_y",
             [d(L, P[y]), -1 / P[y]], concrete=_labels),
        Step("(3)", "k = y: dP_y/df_k = (sum_j e^{f_j} - e^{f_y}) / sum_j e^{f_j} * P_y",
             [d(P[y], f[y]),
              d((Sj - S_not_y) / Sj, f[y]),
              d(1 - S_not_y / Sj, f[y]),
              sp.Mul(-S_not_y, sp.Mul(-1 / Sj**2, ey, evaluate=False), evaluate=False),
              (Sj - ey) * ey / Sj**2,
              sp.Mul((Sj - ey) / Sj, ey / Sj, evaluate=False),
              (Sj - ey) / Sj * P[y]],
             concrete=_k_equals_y),
        Step("(3)=>", "k = y: put (2) and (3) into (1): dL/df_k = P_y - 1",
             [d(L, f[y]),
              sp.Mul(-1 / P[y], sp.Mul((Sj - ey) / Sj, P[y], evaluate=False), evaluate=False),
              ey / Sj - 1,
              P[y] - 1],
             concrete=_k_equals_y),
        Step("(4)", "k != y: dP_y/df_k = -P_y P_k",
             [d(P[y], f[k]),
              sp.Mul(ey, sp.Mul(-1 / Sj**2, sp.exp(f[k]), evaluate=False), evaluate=False),
              -P[y] * P[k]],
             concrete=_k_not_y, hypotheses={sp.KroneckerDelta(k, y): 0}),
        Step("(4)=>", "k != y: put (2) and (4) into (1): dL/df_k = P_k",
             [d(L, f[k]), sp.Mul(-1 / P[y], -P[y] * P[k], evaluate=False), P[k]],
             concrete=_k_not_y, hypotheses={sp.KroneckerDelta(k, y): 0}),
        Step("overall", "dL/df_k = P_k - 1(y = k)",
             [d(L, f[k]), P[k] - sp.KroneckerDelta(k, y)],
             concrete=_all_pairs),
        Step("shift", "the kernels' overflow-safe forms: shifting every score by m changes nothing",
             [P[k], E.shifted_softmax_closed],
             concrete=None),
        Step("shift'", "log P_k = (f_k - m) - log sum_j e^{f_j - m}",
             [f[k] - sp.log(Sj), E.shifted_log_softmax_closed],
             concrete=None),
        Step("weights", "weights and label smoothing (PyTorch): "
             "dl/df_k = P_k ((1-eps) w_y + eps/C sum_c w_c) - (1-eps) w_y 1(k = y) - eps/C w_k",
             [d(ell, f[k]), E.row_grad_closed.xreplace({E.S: Sj, E.W: E.W_sum})],
             concrete=_all_pairs, classes=range(1, 4),
             note="l = (1-eps) w_y (-log P_y) + (eps/C) sum_c w_c (-log P_c); "
                  "with eps = 0 the smoothing term is absent (not 0 * inf)"),
        Step("hessian", "second derivative: d^2 L / df_j df_k = P_j (1(j = k) - P_k)",
             [d(L, f[j], f[k]), P[j] * (sp.KroneckerDelta(j, k) - P[k])],
             concrete=_hessian_indices, classes=range(1, 5)),
        Step("hessian'", "with weights and label smoothing the Hessian is scaled by "
             "(1-eps) w_y + eps/C sum_c w_c",
             [d(ell, f[j], f[k]),
              ((1 - eps) * w[y] + eps / C * E.W_sum) * P[j] * (sp.KroneckerDelta(j, k) - P[k])],
             concrete=_hessian_indices, classes=range(1, 3)),
        Step("batch", "reductions: none -> r_i l_i; sum -> sum_i r_i l_i; "
             "mean -> sum_i r_i l_i / D with D = sum_i r_i w_{y_i}; "
             "dL/df_{i,k} = r_i g_{i,k} (none, sum), r_i g_{i,k} / D (mean)",
             [E.batch_loss_closed["mean"], E.batch_grad_closed["mean"]],
             general=False, custom=_batch_reductions,
             note="r_i = 0 for rows whose label is ignore_index, 1 otherwise; "
                  "g_{i,k} is the per-row gradient above. Conventions (not derived): "
                  "'mean' of an empty or all-ignored batch is NaN with zero gradient, "
                  "'sum' of an empty batch is 0"),
    ]


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------
def _status(result: Result) -> str:
    return "verified" if result.ok else "NOT VERIFIED"


class CompactPrinter(StrPrinter):
    """One-line printer close to the notes' notation: ``f_k``, ``Σ_j e^f_j``,
    ``δ_ky``, ``∂L/∂f_k``.  ``unicode=False`` gives plain ASCII."""

    _ascii = {"Σ": "sum", "δ": "delta", "∂": "d", "ε": "eps", "²": "^2", "·": "*"}
    printmethod = "_compactstr"  # ignore the objects' own _sympystr

    def __init__(self, unicode: bool = True):
        super().__init__({"order": "none"})  # print products in the notes' order
        self.unicode = unicode

    def parenthesize(self, item, level, strict=False) -> str:
        if isinstance(item, sp.Sum):  # _print_Sum adds its own parentheses
            return self._print(item)
        return super().parenthesize(item, level, strict)

    def _print_log(self, expr) -> str:
        text = self._print(expr.args[0])
        return "log" + (text if isinstance(expr.args[0], sp.Sum) else f"({text})")

    def doprint(self, expr) -> str:
        text = super().doprint(expr).replace("**", "^").replace("*", "·")
        if not self.unicode:
            for old, new in self._ascii.items():
                text = text.replace(old, new)
        return text

    def _print_Symbol(self, expr) -> str:
        return {"varepsilon": "ε"}.get(expr.name, expr.name)

    def _print_Indexed(self, expr) -> str:
        name = expr.base.label.name
        idx = [self._print(q) for q in expr.indices]
        if name == "omega":  # the weight of row i's target
            return "w_{y_%s}" % idx[0]
        sub = "".join(idx) if all(len(q) == 1 for q in idx) else "{%s}" % ",".join(idx)
        return f"{name}_{sub}"

    def _print_Sum(self, expr) -> str:
        body = expr.function
        text = self._print(body)
        if body.is_Add:
            text = f"({text})"
        return "(Σ_" + "".join(self._print(lim[0]) for lim in expr.limits) + " " + text + ")"

    def _print_exp(self, expr) -> str:
        arg = expr.args[0]
        text = self._print(arg)
        return "e^" + (text if arg.is_Atom or isinstance(arg, sp.Indexed) else f"({text})")

    def _print_KroneckerDelta(self, expr) -> str:
        a, b = (self._print(q) for q in expr.args)
        return f"δ_{a}{b}" if len(a) == len(b) == 1 else f"δ_{{{a},{b}}}"

    def _print_Derivative(self, expr) -> str:
        body = expr.expr
        wrt = "".join("∂" + self._print(v) * 1 for v, _ in expr.variable_count)
        order = sum(n for _, n in expr.variable_count)
        top = "∂" + ("²" if order == 2 else "" if order == 1 else str(order))
        if body.is_Atom or isinstance(body, sp.Indexed):
            return f"{top}{self._print(body)}/{wrt}"
        return f"{top}/{wrt} [{self._print(body)}]"


def render_text(results: Sequence[Result], unicode: bool = True, pretty: bool = False) -> str:
    """Terminal rendering: one block per step, one equation per line.

    ``pretty=True`` uses SymPy's two-dimensional pretty-printer instead of the
    one-line :class:`CompactPrinter`.
    """
    compact = CompactPrinter(unicode)
    lines = []
    for r in results:
        mark = "[ok]" if r.ok else "[FAILED]"
        lines.append(f"{mark} {r.step.label} {r.step.title}")
        names: list[str | None] = [None] * len(r.step.chain)
        if r.step.custom is not None:
            names = ["L_mean", "dL_mean/df_ik"]
        for n, (name, expr) in enumerate(zip(names, r.step.chain)):
            if name is not None:
                prefix = f"    {name} = "
            else:
                prefix = "      " if n == 0 else "    = "
            if pretty:
                body, base = _pretty(expr, unicode)
            else:
                body, base = [compact.doprint(expr)], 0
            pad = " " * len(prefix)
            # the "=" goes on the baseline row of a multi-line expression
            lines.extend((prefix if q == base else pad) + row for q, row in enumerate(body))
        if r.step.note:
            lines.append(f"    ({r.step.note})")
        how = "; ".join(r.methods) if r.methods else "-"
        lines.append(f"    {_status(r)}: {how}  [{r.seconds:.2f} s]")
        if r.detail:
            lines.append(f"    failure: {r.detail}")
        lines.append("")
    passed = sum(r.ok for r in results)
    lines.append(f"{passed}/{len(results)} steps verified")
    return "\n".join(lines)


def _pretty(expr: sp.Expr, unicode: bool) -> tuple[list[str], int]:
    """Pretty-printed rows of ``expr`` and the index of its baseline row."""
    form = PrettyPrinter({"use_unicode": unicode, "wrap_line": False})._print(expr)
    return form.render(wrap_line=False).split("\n"), form.baseline


def render_latex(results: Sequence[Result]) -> str:
    """A standalone LaTeX document of the derivation."""
    out = [r"\documentclass{article}", r"\usepackage{amsmath,amssymb}",
           r"\begin{document}", r"\section*{Softmax cross-entropy: verified derivation}",
           r"Generated by \texttt{python -m symbolic --latex}. Every equation below was "
           r"proved with SymPy (methods listed per step).", ""]
    for r in results:
        out.append(r"\paragraph{%s %s}" % (_tex_escape(r.step.label), _tex_escape(r.step.title)))
        out.append(r"\begin{align*}")
        out.append(_latex_chain(r.step))
        out.append(r"\end{align*}")
        if r.step.note:
            out.append(r"\noindent\emph{%s}\\" % _tex_escape(r.step.note))
        out.append(r"\noindent\textbf{%s}: %s" % (_status(r), _tex_escape("; ".join(r.methods))))
        out.append("")
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"


def render_markdown(results: Sequence[Result]) -> str:
    """A Markdown document (math in ``$$`` blocks) of the derivation."""
    out = ["# Softmax cross-entropy: verified derivation", "",
           "Generated by `python -m symbolic --markdown`. Every equation below was "
           "proved with SymPy (methods listed per step).", ""]
    for r in results:
        out += [f"## {r.step.label} {r.step.title}", "", "$$",
                _latex_chain(r.step).replace(r"\\", "").replace("&", ""), "$$", ""]
        if r.step.note:
            out += [f"*{r.step.note}*", ""]
        out += [f"**{_status(r)}**: {'; '.join(r.methods)}", ""]
    return "\n".join(out)


def _latex_chain(step: Step) -> str:
    if step.custom is not None:
        return (r"L_{\mathrm{mean}} &= " + sp.latex(step.chain[0]) + r" \\ "
                + r"\frac{\partial L_{\mathrm{mean}}}{\partial f_{i,k}} &= " + sp.latex(step.chain[1]))
    first, rest = step.chain[0], step.chain[1:]
    body = [sp.latex(first) + " &= " + sp.latex(rest[0])]
    body += ["&= " + sp.latex(e) for e in rest[1:]]
    return r" \\ ".join(body)


def _tex_escape(text: str) -> str:
    special = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "^": r"\^{}",
               "&": r"\&", "%": r"\%", "#": r"\#", "$": r"\$", "~": r"\~{}"}
    return "".join(special.get(ch, ch) for ch in text)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None, extra_steps: Iterable[Step] = ()) -> int:
    """Verify and print the derivation; return 0 when every step verified.

    ``extra_steps`` are appended to the derivation (the tests use it to show
    that a false step makes the command fail).
    """
    parser = argparse.ArgumentParser(prog="python -m symbolic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--latex", metavar="FILE", help="also write the derivation as a LaTeX document")
    parser.add_argument("--markdown", metavar="FILE", help="also write the derivation as Markdown")
    parser.add_argument("--ascii", action="store_true", help="ASCII output instead of Unicode")
    parser.add_argument("--pretty", action="store_true", help="two-dimensional SymPy pretty-printing")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    results = [verify(s) for s in [*steps(), *extra_steps]]
    print(render_text(results, unicode=not args.ascii, pretty=args.pretty))
    print(f"total {time.perf_counter() - start:.1f} s")
    if args.latex:
        with open(args.latex, "w", encoding="utf-8") as fh:
            fh.write(render_latex(results))
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.write(render_markdown(results))
    return 0 if all(r.ok for r in results) else 1
