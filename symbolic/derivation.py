"""Machine-checked derivation of the softmax cross-entropy gradient.

Run ``python -m symbolic`` to print every step of the derivation in the
CS231n lecture notes on the softmax classifier ("Softmax derivation",
page 13/18) as an equation, each marked verified only when SymPy proves it,
followed by

* the closed forms that the reference values are computed from (softmax,
  log-softmax, the row loss with class weights and label smoothing, its
  gradient, the Hessian, the batch reductions),
* the kernels' exact rewrites (``log s = log1p(n_max - 1 + t)``,
  ``P_y - 1 = -(s - e_y)/s``, the shifted loss and ``k = y`` entry),
* convexity (``diag(P) - P P^T`` is positive semi-definite, null space
  spanned by the ones vector), and
* the further options: probability targets, the z-loss ``lambda lse^2``,
  logit soft-capping ``f' = kappa tanh(f/kappa)`` (the chain rule), and the
  reductions with a z-loss;
* the fused linear layer ``z = x W^T + b``: by the chain rule, for any loss of
  the logits with gradient ``g = dL/dz``, ``dL/dx = g W``, ``dL/dW = g^T x`` and
  ``dL/db = sum of g over the rows``; and the case study's classifier
  (``scores = X W + b``, loss ``+ reg/2 ||W||^2``): ``dL/dW = X^T g + reg W``,
  with the mean cross-entropy ``X^T (P - Y) / N + reg W``.

The command exits with status 1 if any step fails to verify.
``python -m symbolic --latex FILE`` or ``--markdown FILE`` also writes the
derivation as a document.

How a step is proved
--------------------
A step is a chain of expressions ``e_0 = e_1 = ... = e_n``; it is verified when
``e_m - e_0`` is proved identically zero for every ``m``:

* *general C*: the classes are an :class:`sympy.IndexedBase` ``f`` summed with
  :class:`sympy.Sum`; derivatives give :class:`sympy.KroneckerDelta` terms.
  Derivatives are taken with ``sympy.diff`` and only the sums that reduce
  exactly are evaluated (over a Kronecker delta, or with a body free of the
  index); ``Piecewise`` range conditions are resolved under the assumption that
  every free index is a valid class (``0 <= k <= C - 1``); constant factors
  are pulled out of the sums, and the sums ``sum_j e^{f_j}``, ``sum_c w_c``,
  ``sum_c w_c t_c`` and ``sum_j e^{f'_j}`` are replaced by the positive
  symbols ``S``, ``W``, ``T`` and ``S'`` *before* simplification (``simplify``
  on unevaluated sums can crash inside ``sum_simplify``).  In a term with a
  factor ``delta_ab`` the index b is written as a in the other factors.  Any
  other sum becomes a variable of its own (one per sum, equal up to the name
  of its index): an identity that holds for every value of these variables
  holds for the sums' values.  A derivative or ``Piecewise`` left over fails
  the step.
* *concrete C*: the same chain is instantiated for ``C = 1..6`` (fewer for a
  few steps, as shown) and for every combination of the free class indices,
  with explicit symbols ``f0..f{C-1}`` (and ``w0..``, ``t0..``, ``v0..``);
  the kernels' rewrites are checked for every set of maximal scores instead.
In both cases the zero test writes ``tanh(f_n/kappa)`` as ``f'_n/kappa``
(``f'_n`` then counts as a variable of its own), substitutes
``e^{f_n} = x_n`` and ``e^{f'_n} = xc_n`` (positive), which turns every
expression into a rational function (logarithms of positive quantities are
expanded first) and reduces it with :func:`sympy.cancel`; when that canonical
form is not 0 the test falls back to ``simplify(expr) == 0``.  Both are exact.
A few steps have their own exact checks (the batch reductions, the Hessian's
minors, identities in one variable, the linear layer).

The linear layer's steps are proved for general sizes N, D, V (rows, features,
outputs) with :class:`sympy.IndexedBase` entries: the derivatives of the
logits' definition (``sympy.diff``) and the chain rule's sums over the
Kronecker deltas they give, with every free index assumed in range; and for
every N, D, V in 1..3 and every value of the free indices with explicit symbols:
``sympy.diff`` of ``L(z(x, W, b))`` for an undefined function ``L`` of the
logits (so for any loss), and for the classifier also of its mean
cross-entropy with every label pattern (``e^{z}`` then a positive variable and
the difference a rational function reduced to 0).

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
from sympy.codegen.cfunctions import log1p
from sympy.simplify.simplify import factor_sum

from . import expressions as E
from .expressions import C, c, eps, f, fc, j, k, m, w, y

__all__ = ["Step", "Result", "steps", "verify", "main", "render_text",
           "render_latex", "render_markdown", "is_zero", "closed", "uncap", "BatchForms"]

# --------------------------------------------------------------------------
# Placeholders used in the displayed equations
# --------------------------------------------------------------------------
#: normalized probabilities P_n (a placeholder for e^{f_n} / sum_j e^{f_j})
P = sp.IndexedBase("P", positive=True)
#: probabilities of the soft-capped scores (a placeholder for e^{f'_n} / sum_j e^{f'_j})
Pc = sp.IndexedBase("P'", positive=True)
#: the loss of one row (placeholder)
L = sp.Symbol("L", real=True)
#: the loss of one row with weights and label smoothing (placeholder)
ell = sp.Symbol("l", real=True)
#: the loss of a row of probability targets (placeholder)
ell_t = sp.Symbol("l_t", real=True)
#: the z-loss of one row (placeholder)
zeta = sp.Symbol("z", real=True)
#: the same three of the soft-capped scores, as functions of the original scores
ell_cap = sp.Symbol("l_kappa", real=True)
ell_t_cap = sp.Symbol("l_t_kappa", real=True)
zeta_cap = sp.Symbol("z_kappa", real=True)
#: explicit symbols for the concrete positive quantities x_n = e^{f_n}, xc_n = e^{f'_n}
_x = sp.IndexedBase("x", positive=True)
_xc = sp.IndexedBase("xc", positive=True)
#: a bound index for the definitions behind placeholders (so that j and k stay free)
_q = sp.Symbol("q", integer=True, nonnegative=True)
#: the rows of the kernels' rewrites: n_max maximal scores m, the others u_j
u = sp.IndexedBase("u", real=True)
#: the mean of v under P (the Hessian's quadratic form)
vbar = sp.Symbol("vbar", real=True)

#: sum_{j != y} e^{f_j}, written with a Kronecker delta
S_not_y = sp.Sum(sp.exp(f[j]) * (1 - sp.KroneckerDelta(j, y)), (j, 0, C - 1))


def _bind(expr: sp.Expr) -> sp.Expr:
    """Rename the bound index of sum_j e^{f_j} to ``q`` (so ``j`` stays free)."""
    return expr.xreplace({E.S_sum: E.exp_sum(_q)})


def _at_fc(expr: sp.Expr) -> sp.Expr:
    """A definition written in the soft-capped scores f' instead of f."""
    return expr.xreplace({f: fc})


def closed(expr: sp.Expr) -> sp.Expr:
    """A closed form with its stand-in symbols written out as the sums they stand for
    (S, W, T, S'), as it appears in a step."""
    return expr.xreplace({E.S: E.S_sum, E.W: E.W_sum, E.T: E.T_sum, E.Sc: E.Sc_sum})


#: what each placeholder derivative means; applied before ``doit``.  (Sums
#: differentiated twice use the bound index ``c`` so that ``j`` stays free.)
_LOSS_C = -f[y] + sp.log(E.exp_sum(c))
_ROW_LOSS_C = _bind(E.row_loss_definition)
_PROB_LOSS_C = _bind(E.prob_loss_definition)
_Z_C = _bind(E.z_definition)
MEANING = {
    sp.Derivative(L, f[k]): sp.Derivative(E.loss_prob_form, f[k]),
    sp.Derivative(L, f[y]): sp.Derivative(E.loss_prob_form, f[y]),
    sp.Derivative(L, P[y]): sp.Derivative(-sp.log(P[y]), P[y]),
    sp.Derivative(P[y], f[k]): sp.Derivative(E.softmax(y), f[k]),
    sp.Derivative(P[y], f[y]): sp.Derivative(E.softmax(y), f[y]),
    sp.Derivative(ell, f[k]): sp.Derivative(E.row_loss_definition, f[k]),
    sp.Derivative(ell, f[y]): sp.Derivative(E.row_loss_definition, f[y]),
    sp.Derivative(L, f[j], f[k]): sp.Derivative(_LOSS_C, f[j], f[k]),
    sp.Derivative(ell, f[j], f[k]): sp.Derivative(_ROW_LOSS_C, f[j], f[k]),
    sp.Derivative(ell_t, f[k]): sp.Derivative(_PROB_LOSS_C, f[k]),
    sp.Derivative(zeta, f[k]): sp.Derivative(_Z_C, f[k]),
    sp.Derivative(ell_cap, f[k]): sp.Derivative(E.capped(_ROW_LOSS_C), f[k]),
    sp.Derivative(ell_t_cap, f[k]): sp.Derivative(E.capped(_PROB_LOSS_C), f[k]),
    sp.Derivative(zeta_cap, f[k]): sp.Derivative(E.capped(_Z_C), f[k]),
    L: E.loss_logit_form,
}
# the derivatives with respect to the soft-capped scores f'_j, f'_k
for _loss, _definition in ((ell, _ROW_LOSS_C), (ell_t, _PROB_LOSS_C), (zeta, _Z_C)):
    for _index in (j, k):
        MEANING[sp.Derivative(_loss, fc[_index])] = sp.Derivative(_at_fc(_definition), fc[_index])

_INDICES = (j, k, y, c)
#: names of the explicit score symbols of concrete checks: f3 (one row), f1_3 (batches)
_EXPLICIT = re.compile(r"f\d+(_\d+)?")
_EXPLICIT_CAPPED = re.compile(r"fc\d+")


# --------------------------------------------------------------------------
# Zero tests
# --------------------------------------------------------------------------
def _is_indexed(base: sp.IndexedBase) -> Callable[[sp.Basic], bool]:
    return lambda e: isinstance(e, sp.Indexed) and e.base == base


def _capped_score(arg: sp.Expr) -> sp.Expr | None:
    """``f'_n`` when ``arg`` is ``f_n / kappa`` (indexed or explicit), else None."""
    score = sp.expand(arg * E.kappa)
    if isinstance(score, sp.Indexed) and score.base == f:
        return fc[score.indices]
    if isinstance(score, sp.Symbol) and _EXPLICIT.fullmatch(score.name) and "_" not in score.name:
        return sp.Symbol("fc" + score.name[1:], real=True)
    return None


def uncap(expr: sp.Expr) -> sp.Expr:
    """Write ``tanh(f_n / kappa)`` as ``f'_n / kappa``.

    ``f'_n`` *is* ``kappa tanh(f_n / kappa)`` wherever it occurs (the
    placeholders' derivatives with respect to f' are taken at f' = kappa
    tanh(f / kappa)), so this rewrites an expression into an equal one.  The zero
    tests then treat each ``f'_n`` as a variable of its own, independent of
    ``f_n``: an identity that holds for all values of the variables holds in
    particular for these, so a proof stays a proof.
    """
    sub = {}
    for e in expr.atoms(sp.tanh):
        score = _capped_score(e.args[0])
        if score is not None:
            sub[e] = score / E.kappa
    return expr.xreplace(sub) if sub else expr


def is_zero(expr: sp.Expr) -> bool:
    """Exact test that ``expr`` (free of sums and derivatives) is 0.

    Writes ``tanh(f_n / kappa)`` as ``f'_n / kappa`` (:func:`uncap`) and
    ``log1p(a)`` as ``log(1 + a)`` (with soft-capped scores, done if
    :func:`sympy.expand` gives 0), substitutes ``f_n = log(x_n)`` and
    ``f'_n = log(xc_n)`` with ``x_n, xc_n > 0`` so that the expression becomes
    rational in ``x`` and ``xc`` (after expanding logarithms of positive
    quantities), and checks that :func:`sympy.cancel` reduces it to 0; if it
    does not, falls back to ``sympy.simplify(expr) == 0``.
    """
    expr = uncap(expr)
    expr = expr.xreplace({e: sp.log(1 + e.args[0]) for e in expr.atoms(log1p)})
    capped = expr.has(fc) or any(_EXPLICIT_CAPPED.fullmatch(e.name) for e in expr.atoms(sp.Symbol))
    if capped and sp.expand(expr) == 0:  # usually enough for soft-capped chains, and cheap
        return True
    variables = {}
    for e in expr.atoms(sp.Indexed):
        if e.base == f:
            variables[e] = sp.log(_x[e.indices])
        elif e.base == fc:
            variables[e] = sp.log(_xc[e.indices])
    for e in expr.atoms(sp.Symbol):
        if _EXPLICIT.fullmatch(e.name):
            variables[e] = sp.log(sp.Symbol("x" + e.name[1:], positive=True))
        elif _EXPLICIT_CAPPED.fullmatch(e.name):
            variables[e] = sp.log(sp.Symbol("xc" + e.name[2:], positive=True))
    sub = expr.xreplace(variables)
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
def _derivative(expr: sp.Derivative) -> sp.Expr:
    """The derivative ``expr`` stands for, cached (concrete chains differentiate the
    same sums often).  ``sympy.diff``, unlike ``Derivative.doit``, does not try to
    evaluate the sums in closed form first."""
    variables = [v for v, count in expr.variable_count for _ in range(count)]
    return sp.diff(expr.expr, *variables)


def _evaluate(expr: sp.Expr) -> sp.Expr:
    """Evaluate derivatives, then the sums that reduce exactly: those over a
    Kronecker delta and those whose body does not depend on the index.

    Other sums are left alone (``Sum.doit`` would search for a closed form,
    which is slow and not needed: the zero test names them).
    """
    expr = expr.replace(lambda e: isinstance(e, sp.Derivative), _derivative)

    def reducible(e) -> bool:
        if not isinstance(e, sp.Sum):
            return False
        idx = e.limits[0][0]
        return e.function.has(sp.KroneckerDelta) or idx not in e.function.free_symbols

    for _ in range(4):  # sums of sums
        if not any(reducible(e) for e in sp.preorder_traversal(expr)):
            break
        expr = expr.replace(lambda e: isinstance(e, sp.Sum),
                            lambda e: _split_sum(e) if e.function.has(sp.KroneckerDelta) else e)
        expr = expr.replace(reducible, lambda e: e.doit(deep=False))
    return expr


@functools.lru_cache(maxsize=None)
def _resolve_cached(expr: sp.Expr, values: tuple) -> sp.Expr:
    out = expr.xreplace(MEANING)
    total, total_capped = E.S_sum, E.Sc_sum
    if values:
        sub = dict(values)
        bound = {lim[0] for s in out.atoms(sp.Sum) for lim in s.limits}
        # xreplace is much faster than subs, but would also rename bound indices
        out = out.subs(sub) if bound & set(sub) else out.xreplace(sub)
        if C in sub:
            total = sp.Add(*[sp.exp(f[q]) for q in range(sub[C])])
            total_capped = sp.Add(*[sp.exp(fc[q]) for q in range(sub[C])])
            out = _expand_sums(out)
    out = _evaluate(out)
    # P_n only survives outside derivatives (MEANING differentiates it)
    out = out.replace(_is_indexed(P), lambda e: sp.exp(f[e.indices[0]]) / total)
    return out.replace(_is_indexed(Pc), lambda e: sp.exp(fc[e.indices[0]]) / total_capped)


def _expand_sums(expr: sp.Expr) -> sp.Expr:
    """Write out every sum with numeric limits as explicit terms.

    The same as ``Sum.doit()`` for these sums, and much faster.
    """
    def terms(s: sp.Sum) -> sp.Expr:
        (idx, lo, hi), outer = s.limits[0], s.limits[1:]
        inner = sp.Add(*[s.function.xreplace({idx: q}) for q in range(int(lo), int(hi) + 1)])
        return sp.Sum(inner, *outer) if outer else inner

    def numeric(e) -> bool:
        return isinstance(e, sp.Sum) and all(b.is_Integer for b in e.limits[0][1:])

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
    """Sum of an Add -> Add of Sums; constant factors pulled out.  (SymPy merges a
    sum of a sum into one Sum with several limits; the innermost comes first.)"""
    if len(s.limits) > 1:  # split the innermost sum first
        inner = _split_sum(sp.Sum(s.function, s.limits[0]))
        return sp.Add(*[factor_sum(sp.Sum(q, *s.limits[1:]))
                        for q in sp.Add.make_args(sp.expand(inner))])
    body = sp.expand(s.function)
    terms = body.args if body.is_Add else (body,)
    return sp.Add(*[factor_sum(sp.Sum(q, *s.limits)) for q in terms])


def _named_sum(s: sp.Expr) -> sp.Expr:
    """``sum e^{f_n}`` -> S, ``sum w_n`` -> W, ``sum w_n t_n`` -> T and
    ``sum e^{f'_n}`` -> S' (any bound index, full range)."""
    if not isinstance(s, sp.Sum) or len(s.limits) != 1:
        return s
    idx, lo, hi = s.limits[0]
    if lo != 0 or hi != C - 1:
        return s
    named = {sp.exp(f[idx]): E.S, w[idx]: E.W, w[idx] * E.t[idx]: E.T, sp.exp(fc[idx]): E.Sc}
    return named.get(s.function, s)


def _delta_canonical(expr: sp.Expr) -> sp.Expr:
    """In every term with a factor ``delta_ab`` (a, b indices), write b as a in the
    other factors: ``delta_ky g(y) = delta_ky g(k)``."""
    terms = sp.Add.make_args(sp.expand(expr))
    out = []
    for term in terms:
        for delta in [a for a in sp.Mul.make_args(term) if isinstance(a, sp.KroneckerDelta)]:
            a, b = delta.args
            if isinstance(a, sp.Symbol) and isinstance(b, sp.Symbol):
                others = sp.Mul(*[q for q in sp.Mul.make_args(term) if q != delta])
                term = delta * others.xreplace({b: a})
        out.append(term)
    return sp.Add(*out)


class _Unknowns:
    """Other sums -> symbols, one per sum (equal up to the name of the bound index)."""

    def __init__(self):
        self.names: dict = {}

    def __call__(self, s: sp.Sum) -> sp.Expr:
        body, limits = s.function, list(s.limits)
        for n, (idx, lo, hi) in enumerate(limits):
            bound = sp.Symbol(f"_b{n}", integer=True)
            body = body.xreplace({idx: bound})
            limits[n] = (bound, lo, hi)
        key = sp.Tuple(body, *[sp.Tuple(*lim) for lim in limits])
        if key not in self.names:
            self.names[key] = sp.Symbol(f"_sum{len(self.names)}", real=True)
        return self.names[key]


def _general_zero(expr: sp.Expr, hypotheses: dict) -> tuple[bool, str]:
    """Prove a general-C expression zero (see the module docstring)."""
    in_range = sp.And(*[sp.Q.nonnegative(n) & sp.Q.le(n, C - 1) for n in _INDICES])

    def in_range_pieces(e: sp.Expr) -> sp.Expr:
        return e.replace(lambda q: isinstance(q, sp.Piecewise), lambda q: sp.refine(q, in_range))

    # sums of Kronecker deltas from the derivatives, then the hypotheses
    out = in_range_pieces(_evaluate(expr))
    out = uncap(in_range_pieces(_evaluate(out.xreplace(hypotheses))))
    for _ in range(4):  # sums inside sums
        out = out.replace(lambda e: isinstance(e, sp.Sum), _split_sum)
        out = in_range_pieces(_evaluate(out))
        out = out.replace(lambda e: isinstance(e, sp.Sum), _named_sum)
    leftovers = [e for e in sp.preorder_traversal(out)
                 if isinstance(e, (sp.Piecewise, sp.Derivative))]
    if leftovers:
        return False, f"could not eliminate {leftovers[0]}"
    out = _delta_canonical(out)
    # innermost first: a sum whose body holds another sum is named after it
    unknowns = _Unknowns()
    while any(isinstance(e, sp.Sum) for e in sp.preorder_traversal(out)):
        out = out.replace(lambda e: isinstance(e, sp.Sum)
                          and not any(isinstance(a, sp.Sum) for a in sp.preorder_traversal(e.function)),
                          unknowns)
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
        placeholder derivatives) are resolved through :data:`MEANING`.  For a
        step with ``custom``, the formulas that ``custom`` proves, shown as
        ``names[n] = chain[n]``.
    general : bool
        Prove the chain for a general number of classes ``C``.
    concrete : callable or None
        ``concrete(C) -> list of dicts`` of free-index values for which the
        chain is also proved with ``C`` explicit; ``None`` to skip.
    classes : range
        The concrete values of ``C``.
    hypotheses : dict
        Substitutions that encode a case split (e.g. ``delta_ky -> 0`` for
        ``k != y``) or name a quantity of the chain (e.g. ``t``).
    custom : callable or None
        Replaces the chain check: ``custom(step) -> (ok, method, n_checks)``;
        it proves the formulas of ``step.chain``.
    exhaustive : callable or None
        Replaces the ``concrete`` check: ``exhaustive(step) -> (ok, method,
        detail)``, for concrete checks that enumerate more than index values.
    names : list of str
        What each formula of a ``custom`` step is (its left-hand side).
    note : str
        Conditions and conventions, shown under the chain.
    """

    label: str
    title: str
    chain: list
    general: bool = True
    concrete: Callable[[int], list[dict]] | None = None
    classes: range = range(1, 7)
    hypotheses: dict = field(default_factory=dict)
    custom: Callable[["Step"], tuple[bool, str, int]] | None = None
    exhaustive: Callable[["Step"], tuple[bool, str, str]] | None = None
    names: list = field(default_factory=list)
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


def _classes_k(n: int) -> list[dict]:
    return [{k: a} for a in range(n)]


def _classes_j(n: int) -> list[dict]:
    return [{j: a} for a in range(n)]


def _no_index(n: int) -> list[dict]:
    return [{}]


def _hessian_indices(n: int) -> list[dict]:
    return [{j: a, k: b, y: q} for a in range(n) for b in range(n) for q in range(n)]


def _explicit(expr: sp.Expr, n: int) -> sp.Expr:
    """Indexed f[n], f'[n], w[n], t[n], v[n] -> explicit symbols f0.., fc0.., w0.., t0.., v0.."""
    sub = {}
    for q in range(n):
        sub[f[q]] = sp.Symbol(f"f{q}", real=True)
        sub[fc[q]] = sp.Symbol(f"fc{q}", real=True)
        sub[w[q]] = sp.Symbol(f"w{q}", positive=True)
        sub[E.t[q]] = sp.Symbol(f"t{q}", nonnegative=True)
        sub[E.v[q]] = sp.Symbol(f"v{q}", real=True)
    return expr.xreplace(sub)


def _verify_chain(step: Step) -> tuple[bool, list[str], str]:
    methods: list[str] = []
    first, rest = step.chain[0], step.chain[1:]
    if step.general:
        base = _resolve(first)
        for other in rest:
            good, why = _general_zero(_resolve(other) - base, step.hypotheses)
            if not good:
                return False, methods, f"general C: {sp.sstr(other)}: {why or 'not zero'}"
        methods.append("general C")
    if step.exhaustive is not None:
        good, method, detail = step.exhaustive(step)
        if not good:
            return False, methods, detail
        methods.append(method)
    elif step.concrete is not None:
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
    return True, methods, ""


def verify(step: Step) -> Result:
    """Prove one step; never raises (an exception is a failed step)."""
    start = time.perf_counter()
    try:
        if step.custom is not None:
            ok, method, _ = step.custom(step)
            methods, detail = [method], ("" if ok else f"failed: {method}")
        else:
            ok, methods, detail = _verify_chain(step)
    except Exception as exc:  # a crash inside SymPy is a failed proof, not a pass
        ok, methods, detail = False, [], f"{type(exc).__name__}: {exc}"
    return Result(step, ok, methods, time.perf_counter() - start, detail)


# --------------------------------------------------------------------------
# The batch reductions
# --------------------------------------------------------------------------
REDUCTIONS = ("none", "sum", "mean")


@dataclass
class BatchForms:
    """The closed forms of a batch step (taken from the step's chain)."""

    loss: dict
    grad: dict
    denominator: sp.Expr
    z: dict | None = None
    count: sp.Expr | None = None

    @property
    def chain(self) -> list:
        out = [self.loss[r] for r in REDUCTIONS] + [self.grad[r] for r in REDUCTIONS]
        out.append(self.denominator)
        if self.z is not None:
            out += [self.z[r] for r in REDUCTIONS] + [self.count]
        return out

    @classmethod
    def from_chain(cls, chain: Sequence[sp.Expr]) -> "BatchForms":
        loss, grad = dict(zip(REDUCTIONS, chain[0:3])), dict(zip(REDUCTIONS, chain[3:6]))
        if len(chain) == 7:
            return cls(loss, grad, chain[6])
        return cls(loss, grad, chain[6], dict(zip(REDUCTIONS, chain[7:10])), chain[10])


def _batch_names(with_z: bool) -> list[str]:
    names = [f"L_{r}" if r != "none" else "L_none_i" for r in REDUCTIONS]
    names += [f"dL_{r}/df_ik" for r in REDUCTIONS] + ["D"]
    if with_z:
        names += [f"Z_{r}" if r != "none" else "Z_none_i" for r in REDUCTIONS] + ["n"]
    return names


def _instantiate(expr: sp.Expr, size: int, values: dict, row: int | None = None,
                 cls: int | None = None) -> sp.Expr:
    """A batch closed form for a batch of ``size`` rows.

    ``values`` maps the IndexedBases ``l, z, r, omega`` (indexed by row) and
    ``g, h`` (by row and class) and the symbols ``D, n`` to Python lists,
    nested lists or expressions; ``row`` and ``cls`` give ``i`` and ``k``.
    """
    sub = {E.N: size}
    if row is not None:
        sub[E.i] = row
    if cls is not None:
        sub[E.k] = cls
    out = _expand_sums(expr.subs(sub))
    table = {}
    for base, value in values.items():
        if isinstance(base, sp.IndexedBase):
            for e in out.atoms(sp.Indexed):
                if e.base == base:
                    idx = [int(q) for q in e.indices]
                    item = value
                    for q in idx:
                        item = item[q]
                    table[e] = item
        else:
            table[base] = value
    return out.xreplace(table)


def _batch_check(n: int, labels: Sequence[int | None], kind: str, forms: BatchForms) -> tuple[int, str]:
    """Check the reductions of one batch; return (number of checks, failure or "").

    ``kind``: ``"abstract"`` (each row loss and z-loss an arbitrary function of
    the row's scores), ``"index"`` (PyTorch's row loss and the z-loss, weights,
    epsilon and lambda symbolic) or ``"prob"`` (probability targets: every row
    counts, labels are ignored).  The definitions below are written from the
    documented semantics; the closed forms come from ``forms``.
    """
    with_z = forms.z is not None
    rows = len(labels)
    ws = [sp.Symbol(f"w{q}", positive=True) for q in range(n)]
    ts = [[sp.Symbol(f"t{r}_{q}", nonnegative=True) for q in range(n)] for r in range(rows)]
    F = [[sp.Symbol(f"f{r}_{q}", real=True) for q in range(n)] for r in range(rows)]
    kept = [True] * rows if kind == "prob" else [lab is not None for lab in labels]
    if kind == "abstract":
        ce = [sp.Function(f"l{r}")(*F[r]) for r in range(rows)]
        zs = [sp.Function(f"z{r}")(*F[r]) for r in range(rows)]
    elif kind == "index":
        ce = [E.concrete(E.row_loss_definition, n, F[r], ws, y=lab) if kept[r] else None
              for r, lab in enumerate(labels)]
        zs = [E.concrete(E.z_definition, n, F[r], ws) for r in range(rows)]
    else:
        ce = [E.concrete(E.prob_loss_definition, n, F[r], ws, ts[r]) for r in range(rows)]
        zs = [E.concrete(E.z_definition, n, F[r], ws) for r in range(rows)]
    if not with_z:
        zs = [sp.S.Zero] * rows

    # the definitions: sums over the rows that count
    counted = [r for r in range(rows) if kept[r]]
    total_ce = sp.Add(*[ce[r] for r in counted])
    total_z = sp.Add(*[zs[r] for r in counted])
    if kind == "prob":
        denominator = count = sp.Integer(rows)  # every row, not weights
    else:
        denominator = sp.Add(*[ws[labels[r]] for r in counted])
        count = sp.Integer(len(counted))
    definition = {"none": [ce[r] + zs[r] if kept[r] else sp.S.Zero for r in range(rows)],
                  "sum": total_ce + total_z}
    z_definition = {"none": [zs[r] if kept[r] else sp.S.Zero for r in range(rows)], "sum": total_z}
    if counted:
        definition["mean"] = total_ce / denominator + total_z / count
        z_definition["mean"] = total_z / count

    # the closed forms' ingredients
    ones = [1 if kept[r] else 0 for r in range(rows)]
    omega = [sp.S.One if kind == "prob" else (ws[labels[r]] if kept[r] else sp.S.One)
             for r in range(rows)]
    g, h = [], []
    for r in range(rows):
        if kind == "abstract":
            g.append([sp.Derivative(ce[r], F[r][q]) for q in range(n)])
            h.append([sp.Derivative(zs[r], F[r][q]) if with_z else sp.S.Zero for q in range(n)])
        elif not kept[r]:
            g.append([sp.Integer(7)] * n)  # never used: r_i = 0
            h.append([sp.Integer(7)] * n)
        else:
            form = E.prob_grad_closed if kind == "prob" else E.row_grad_closed
            extra = {"y": labels[r]} if kind == "index" else {}
            g.append([E.concrete(form, n, F[r], ws, ts[r], k=q, **extra) for q in range(n)])
            h.append([E.concrete(E.z_grad_closed, n, F[r], ws, k=q) if with_z else sp.S.Zero
                      for q in range(n)])
    values = {E.row_loss: ce if kind != "index" else [v if v is not None else sp.Integer(7) for v in ce],
              E.row_z: zs, E.row_in_batch: ones, E.row_loss_weights: omega,
              E.row_grad: g, E.row_z_grad: h}
    D_value = _instantiate(forms.denominator, rows, values)
    values[E.D] = D_value
    if with_z:
        values[E.n] = _instantiate(forms.count, rows, values)

    def zero(expr) -> bool:
        expr = expr.doit() if kind == "abstract" else expr
        if kind == "abstract":  # linear in the l_i, z_i and their derivatives
            return sp.expand(expr) == 0 or sp.simplify(expr) == 0
        return expr == 0 or is_zero(expr)

    checks: list[tuple[str, sp.Expr]] = []
    for red in REDUCTIONS:
        if red not in definition:
            continue  # "mean" of no rows: a convention (NaN), not derived
        targets = range(rows) if red == "none" else [None]
        for r in targets:
            want = definition[red][r] if r is not None else definition[red]
            checks.append((f"{red} loss", _instantiate(forms.loss[red], rows, values, row=r) - want))
            if with_z:
                want_z = z_definition[red][r] if r is not None else z_definition[red]
                checks.append((f"{red} z", _instantiate(forms.z[red], rows, values, row=r) - want_z))
        for r in range(rows):
            for q in range(n):
                got = _instantiate(forms.grad[red], rows, values, row=r, cls=q)
                if red == "none":  # row r's own loss; other rows' losses do not depend on f_r
                    for other in range(rows):
                        slope = sp.diff(definition["none"][other], F[r][q])
                        checks.append((f"none grad row {other} by f_{r},{q}",
                                       slope - (got if other == r else sp.S.Zero)))
                else:
                    checks.append((f"{red} grad f_{r},{q}",
                                   sp.diff(definition[red], F[r][q]) - got))
    for what, diff in checks:
        if not zero(diff):
            return len(checks), f"C={n}, labels={list(labels)} ({kind}): {what}"
    return len(checks), ""


def _batch_reductions(step: Step) -> tuple[bool, str, int]:
    """Prove the batch closed forms shown in ``step.chain``.

    The definitions (``l_i`` the row loss, ``z_i`` the row's z-loss, sums over
    the rows that count)

        none: l_i + z_i on counted rows, 0 on ignored ones;  sum: sum_i (l_i + z_i);
        mean: sum_i l_i / sum_i w_{y_i} + sum_i z_i / (number of counted rows)

    (probability targets: every row counts and "mean" divides both parts by N;
    without the z-loss, z_i = 0) are compared with the closed forms of the
    chain instantiated for the batch: the losses and z parts directly, the
    gradients with the derivative of the definition with respect to every
    score f_{i',k} (for "none", of every row's loss):

    * with each l_i (and z_i) an arbitrary function of row i's scores (the
      gradients g_{i,k} = dl_i/df_{i,k}, h_{i,k} = dz_i/df_{i,k}), for C = 1, 2
      with N = 1..3 rows and C = 3 with N = 1, 2, every label/ignore pattern;
    * with l_i PyTorch's row loss (or the probability-target loss) and z_i the
      z-loss, g and h their closed forms (weights, epsilon, lambda symbolic),
      for a few N = 2, C = 2 batches and one N = 3, C = 3 batch.
    """
    forms = BatchForms.from_chain(step.chain)
    with_z = forms.z is not None
    count = 0
    sizes = {1: (1, 2, 3), 2: (1, 2, 3), 3: (1, 2)}  # classes -> batch sizes
    abstract = [(n, p) for n, rows in sizes.items() for size in rows
                for p in itertools.product([*range(n), None], repeat=size)]
    explicit = [(2, (0, 1)), (2, (1, 1)), (2, (0, None)), (2, (None, 1)), (2, (None, None)),
                (3, (2, 0, None))]
    runs = [("abstract", abstract), ("index", explicit)]
    if with_z:  # probability targets: the label pattern only sets the batch size
        runs += [("prob", [(1, (0,)), (2, (0, 0)), (3, (0, 0, 0))])]
    for kind, configs in runs:
        for n, labels in configs:
            done, failure = _batch_check(n, labels, kind, forms)
            count += done
            if failure:
                return False, failure, count
    what = ("any row loss and z-loss" if with_z else "any row loss")
    text = (f"{what}: every label/ignore pattern for C = 1, 2 with N = 1..3 and C = 3 with "
            f"N = 1, 2; PyTorch's row loss{' and the z-loss' if with_z else ''}: five N = 2, "
            f"C = 2 batches and one N = 3, C = 3 batch")
    if with_z:
        text += "; probability targets with the z-loss: N = 1, 2, 3 with C = N"
    return True, f"{text} ({count} checks)", count


# --------------------------------------------------------------------------
# Exhaustive checks of the kernels' rewrites
# --------------------------------------------------------------------------
def _tie_patterns(step: Step):
    """Every row shape of C = 1..6 classes: every nonempty set of maximal scores
    (equal to m), the others explicit symbols; yields (C, maximal set, scores)."""
    for n in step.classes:
        for size in range(1, n + 1):
            for top in itertools.combinations(range(n), size):
                scores = [m if q in top else sp.Symbol(f"f{q}", real=True) for q in range(n)]
                yield n, set(top), scores


def _log1p_exhaustive(step: Step) -> tuple[bool, str, str]:
    """log s = log1p(n_max - 1 + t) for every tie pattern (s, t, n_max explicit)."""
    count = 0
    for n, top, scores in _tie_patterns(step):
        s = sp.Add(*[sp.exp(v - m) for v in scores])
        rest = sp.Add(*[sp.exp(scores[q] - m) for q in range(n) if q not in top])
        count += 1
        if not is_zero(sp.log(s) - log1p(len(top) - 1 + rest)):
            return False, "", f"C = {n}, maximal scores {sorted(top)}"
    return True, f"C = {step.classes.start}..{step.classes.stop - 1}, every set of maximal " \
                 f"scores ({count} checks)", ""


def _grad_y_exhaustive(step: Step) -> tuple[bool, str, str]:
    """P_y - 1 = -(s - e_y)/s with the kernels' s - e_y, for every tie pattern and y."""
    count = 0
    for n, top, scores in _tie_patterns(step):
        e = [sp.exp(v - m) for v in scores]
        rest = sp.Add(*[e[q] for q in range(n) if q not in top])
        s = len(top) + rest
        for label in range(n):
            others = (len(top) - 1) + rest if label in top else len(top) + (rest - e[label])
            p_y = sp.exp(scores[label]) / sp.Add(*[sp.exp(v) for v in scores])
            count += 1
            if not is_zero(p_y - 1 - (-others / s)):
                return False, "", f"C = {n}, maximal scores {sorted(top)}, y = {label}"
    return True, f"C = {step.classes.start}..{step.classes.stop - 1}, every set of maximal " \
                 f"scores and every y, with the kernels' s - e_y ({count} checks)", ""


def _psd(step: Step) -> tuple[bool, str, int]:
    """The Hessian is positive semi-definite with null space spanned by the ones.

    General C: the variance form's summand ``P_k (v_k - vbar)^2`` is
    nonnegative (SymPy's assumptions: ``P_k > 0``, ``v`` real), so ``v^T H v >= 0``;
    it is 0 only at ``v_k = vbar``, so ``v^T H v = 0`` iff every ``v_k`` equals
    ``vbar`` (v constant; conversely a constant v has vbar equal to it, see the
    step before).  Concrete C = 1..6: the leading principal minors of
    ``H = diag(P) - P P^T`` of order ``r < C`` are
    ``P_0 ... P_{r-1} (P_r + ... + P_{C-1}) > 0`` (so that block is positive
    definite), and ``H 1 = 0``: so the rank is ``C - 1``, H is positive
    semi-definite and its null space is spanned by the ones vector.  (The
    probabilities are the variables ``p_q = e^{f_q} / S > 0``, with
    ``p_{C-1} = 1 - p_0 - ... - p_{C-2}``.)
    """
    variance, minor = step.chain
    summand = variance.function if isinstance(variance, sp.Sum) else None
    if summand is None:
        return False, "the first formula is not a sum", 0
    means = [e for e in sp.preorder_traversal(summand)
             if isinstance(e, sp.Sum) and e.function.has(E.v)]
    if len(means) != 1:
        return False, "the summand is not P_k (v_k - vbar)^2", 0
    plain = summand.xreplace({means[0]: vbar}).xreplace({E.S_sum: E.S})
    if plain.is_nonnegative is not True:
        return False, f"cannot show {plain} >= 0", 0
    xk = sp.Symbol("xk", real=True)
    if sp.solve(plain.xreplace({E.v[k]: xk}), xk) != [vbar]:
        return False, "the summand vanishes elsewhere than at v_k = vbar", 0
    count = 0
    r_sym = sp.Symbol("r", integer=True, positive=True)
    for n in step.classes:
        # P_q = e^{f_q} / S as variables p_q > 0 with p_0 + ... + p_{C-1} = 1
        ps = [sp.Symbol(f"p{q}", positive=True) for q in range(n)]
        scores = [sp.Symbol(f"f{q}", real=True) for q in range(n)]
        as_p = {sp.exp(scores[q]): ps[q] * E.S for q in range(n)}
        H = sp.Matrix(n, n, lambda a, b: sp.expand(
            _explicit(E.hessian_closed.subs({j: a, k: b}), n).xreplace(as_p)))
        total = {ps[-1]: 1 - sp.Add(*ps[:-1])}
        for r in range(1, n):
            want = minor.subs({r_sym: r, C: n}).doit()
            want = want.replace(_is_indexed(P), lambda e: ps[int(e.indices[0])])
            count += 1
            if sp.expand((H[:r, :r].det(method="berkowitz") - want).xreplace(total)) != 0:
                return False, f"C = {n}: leading minor of order {r}", count
        count += 1
        if any(sp.expand(q.xreplace(total)) != 0 for q in H * sp.ones(n, 1)):
            return False, f"C = {n}: H 1 is not zero", count
    return True, (f"general C: P_k (v_k - vbar)^2 >= 0, zero only at v_k = vbar; "
                  f"C = {step.classes.start}..{step.classes.stop - 1}: every leading principal "
                  f"minor and H 1 = 0 ({count} checks)"), count


def _scalar_identity(step: Step) -> tuple[bool, str, int]:
    """Identities in one real variable x >= 0: exact after writing tanh with e^x."""
    first, rest = step.chain[0], step.chain[1:]
    x = next(iter(first.free_symbols))
    ex = sp.Symbol("ex", positive=True)
    for other in rest:
        diff = (other - first).rewrite(sp.exp).replace(
            lambda e: isinstance(e, sp.exp), lambda e: ex ** sp.expand(e.args[0] / x))
        if sp.cancel(sp.together(diff)) != 0:
            return False, f"{sp.sstr(other)} differs", 0
    return True, "exact, for every x >= 0 (tanh(x) = (e^x - e^-x)/(e^x + e^-x), " \
                 "then e^x a positive variable); x < 0 by symmetry", len(rest)


# --------------------------------------------------------------------------
# The fused linear layer and the case study's classifier
# --------------------------------------------------------------------------
#: the classifier's data loss (cross-entropy of the scores; placeholder)
L_data = sp.Symbol("L_data", real=True)
#: the sizes of the exhaustive checks: N, D and V (classes C for the classifier)
LINEAR_SIZES = tuple(itertools.product(range(1, 4), repeat=3))


def _linear_range() -> sp.Expr:
    """Every free index of the linear steps is a valid row, feature, output or class."""
    bounds = ((E.i, E.N), (E.feature, E.n_features), (E.out, E.n_outputs), (c, C))
    return sp.And(*[sp.Q.nonnegative(q) & sp.Q.le(q, n - 1) for q, n in bounds])


def _linear_general(chain: Sequence[sp.Expr], upto: int) -> tuple[bool, str]:
    """General sizes: ``chain[1]`` (the chain rule's sum over the logits, with the
    derivatives of their definition) reduces to each of ``chain[2:upto]``.

    Derivatives with ``sympy.diff``; the sums over Kronecker deltas evaluated
    (:func:`_evaluate`), ``Piecewise`` range conditions resolved under the assumption
    that every free index is in range; the sums left over are named as in
    :func:`_general_zero` and the difference expanded."""
    in_range = _linear_range()

    def refine(e: sp.Expr) -> sp.Expr:
        return e.replace(lambda q: isinstance(q, sp.Piecewise), lambda q: sp.refine(q, in_range))

    reduced = chain[1]
    for _ in range(4):  # sums inside sums
        reduced = refine(_evaluate(reduced))
        reduced = reduced.replace(lambda e: isinstance(e, sp.Sum), _split_sum)
    for other in chain[2:upto]:
        diff = reduced - other
        if any(isinstance(e, (sp.Piecewise, sp.Derivative)) for e in sp.preorder_traversal(diff)):
            return False, f"general sizes: could not reduce {sp.sstr(reduced)}"
        unknowns = _Unknowns()
        while any(isinstance(e, sp.Sum) for e in sp.preorder_traversal(diff)):
            diff = diff.replace(lambda e: isinstance(e, sp.Sum) and not any(
                isinstance(a, sp.Sum) for a in sp.preorder_traversal(e.function)), unknowns)
        if sp.expand(diff) != 0:
            return False, f"general sizes: {sp.sstr(other)}"
    return True, ""


class _ExplicitBatch:
    """Explicit symbols of one batch of the linear steps: inputs ``x{r}_{q}``, weights
    ``W{a}_{b}``, biases ``b{u}``, the logits (``z = x W^T + b`` or the classifier's
    ``s = X W + b``) as expressions, and a loss of the logits: an undefined function
    ``L(z_00, ...)`` (``labels=None``) or the classifier's mean cross-entropy with the
    given labels.  ``grad[r][u]`` is the loss's derivative with respect to logit
    ``(r, u)``, evaluated at the logits."""

    def __init__(self, rows: int, features: int, outputs: int, classifier: bool,
                 labels: tuple | None = None):
        self.rows, self.features, self.outputs = rows, features, outputs
        self.classifier, self.labels = classifier, labels
        sym = functools.partial(sp.Symbol, real=True)
        self.x = [[sym(f"x{r}_{q}") for q in range(features)] for r in range(rows)]
        if classifier:  # W (D, C)
            self.W = [[sym(f"W{q}_{u}") for u in range(outputs)] for q in range(features)]
            weight = lambda u, q: self.W[q][u]  # noqa: E731
        else:  # W (V, D)
            self.W = [[sym(f"W{u}_{q}") for q in range(features)] for u in range(outputs)]
            weight = lambda u, q: self.W[u][q]  # noqa: E731
        self.b = [sym(f"b{u}") for u in range(outputs)]
        self.z = [[sp.Add(*[self.x[r][q] * weight(u, q) for q in range(features)]) + self.b[u]
                   for u in range(outputs)] for r in range(rows)]
        Z = [[sym(f"z{r}_{u}") for u in range(outputs)] for r in range(rows)]
        flat = [a for row in Z for a in row]
        values = [a for row in self.z for a in row]
        at_logits = dict(zip(flat, values))
        if labels is None:
            of_logits = sp.Function("L")(*flat)
            self.loss = of_logits.xreplace(at_logits)
            self.grad = [[sp.Subs(sp.Derivative(of_logits, Z[r][u]), flat, values).doit()
                          for u in range(outputs)] for r in range(rows)]
        else:  # the mean cross-entropy of the notes: (1/N) sum_i (log sum_j e^{s_ij} - s_{i,y_i})
            of_logits = sp.Add(*[sp.log(sp.Add(*[sp.exp(a) for a in Z[r]])) - Z[r][labels[r]]
                                 for r in range(rows)]) / rows
            self.loss = of_logits.xreplace(at_logits)
            self.grad = [[sp.diff(of_logits, Z[r][u]).xreplace(at_logits)
                          for u in range(outputs)] for r in range(rows)]
        # the placeholders' values: g_{r,u}, and for the cross-entropy P_{r,u} and y_r
        self.placeholders = {E.logit_grad[r, u]: self.grad[r][u]
                             for r in range(rows) for u in range(outputs)}
        if labels is not None:
            for r in range(rows):
                total = sp.Add(*[sp.exp(a) for a in self.z[r]])
                self.placeholders[E.labels[r]] = labels[r]
                for u in range(outputs):
                    self.placeholders[P[r, u]] = sp.exp(self.z[r][u]) / total
        # e^{+-z} -> a positive variable (or its inverse): the zero test's rational form
        self.exps = {}
        for r in range(rows):
            for u in range(outputs):
                e = sp.Symbol(f"e{r}_{u}", positive=True)
                self.exps[sp.expand(self.z[r][u])] = e
                self.exps[sp.expand(-self.z[r][u])] = 1 / e

    def table(self) -> dict:
        """Indexed entries -> explicit symbols (the logits' gradient apart)."""
        out = {}
        for r in range(self.rows):
            for q in range(self.features):
                out[E.lin_x[r, q]] = self.x[r][q]
        for a, row in enumerate(self.W):
            for b, value in enumerate(row):
                out[E.lin_W[a, b]] = value
        for u in range(self.outputs):
            out[E.lin_b[u]] = self.b[u]
        return out

    def instantiate(self, expr: sp.Expr, indices: dict) -> sp.Expr:
        """A chain expression for this batch: sizes and free indices substituted, sums
        written out, the placeholders (L, L_data, g_{r,u}, P_{r,u}, y_r) replaced by
        their values here, and the derivatives of explicit expressions evaluated."""
        key = tuple(sorted((q.name, value) for q, value in indices.items()))
        out = _skeleton(self.rows, self.features, self.outputs, self.classifier, expr, key)
        out = out.xreplace({L: self.loss, L_data: self.loss})
        out = out.replace(lambda e: isinstance(e, sp.Derivative) and not e.has(sp.Subs),
                          lambda e: e.doit())
        return out.xreplace(self.placeholders)

    def zero(self, expr: sp.Expr) -> bool:
        """Exact zero test: the undefined L's derivatives are variables of their own;
        e^{z} becomes a positive variable, and the rational function must cancel."""
        if self.labels is None:
            return sp.expand(expr) == 0
        rational = expr.replace(lambda e: isinstance(e, sp.exp),
                                lambda e: self.exps.get(sp.expand(e.args[0]), e))
        if rational.has(sp.exp):
            return sp.simplify(expr) == 0
        # usually the same fractions on both sides; else the canonical rational form
        return sp.expand(rational) == 0 or sp.cancel(sp.together(rational)) == 0


@functools.lru_cache(maxsize=None)
def _skeleton(rows: int, features: int, outputs: int, classifier: bool, expr: sp.Expr,
              indices: tuple) -> sp.Expr:
    """The part of :meth:`_ExplicitBatch.instantiate` that does not depend on the loss:
    sizes and indices substituted, sums written out, x, W, b explicit, and the
    derivatives that do not involve the loss evaluated (shared by the label patterns)."""
    batch = _explicit_batch(rows, features, outputs, classifier)
    sizes = {E.N: rows, E.n_features: features, (C if classifier else E.n_outputs): outputs}
    named = {q.name: q for q in (E.i, E.feature, E.out, c)}
    out = _expand_sums(expr.xreplace(sizes).xreplace({named[n]: v for n, v in indices}))
    out = out.xreplace(batch.table())
    return out.replace(lambda e: isinstance(e, sp.Derivative) and not e.has(L, L_data),
                       lambda e: e.doit())


@functools.lru_cache(maxsize=None)
def _explicit_batch(rows: int, features: int, outputs: int, classifier: bool,
                    labels: tuple | None = None) -> _ExplicitBatch:
    return _ExplicitBatch(rows, features, outputs, classifier, labels)


def _free_indices(param: sp.Indexed, rows: int, features: int, outputs: int, classifier: bool):
    """Every value of the free indices of ``d/d param`` (x_{i,d}, W_{v,d} or W_{d,c}, b_v)."""
    ranges = {E.i: rows, E.feature: features, E.out: outputs, c: outputs}
    free = list(param.indices)
    values = itertools.product(*[range(ranges[q]) for q in free])
    return [dict(zip(free, combination)) for combination in values]


def _linear_chain(step: Step) -> tuple[bool, str, int]:
    """The fused layer's chain rule: ``dL/dp = sum_{r,u} g_{r,u} dz_{r,u}/dp = closed form``
    for p one of x_{i,d}, W_{v,d}, b_v (``step.chain``, in that order).

    General N, D, V: the sum over the logits reduces to the closed form
    (:func:`_linear_general`).  N, D, V = 1..3, every value of the free indices:
    ``sympy.diff`` of ``L(z(x, W, b))`` with L an undefined function of the N V
    logits (so any loss), and the chain's other expressions with
    ``g_{r,u} = dL/dz_{r,u}`` at the logits, are equal.
    """
    ok, detail = _linear_general(step.chain, len(step.chain))
    if not ok:
        return False, detail, 0
    param = step.chain[0].variables[0]
    count = 0
    for sizes in LINEAR_SIZES:
        batch = _explicit_batch(*sizes, False)
        for indices in _free_indices(param, *sizes, False):
            first = batch.instantiate(step.chain[0], indices)
            for other in step.chain[1:]:
                count += 1
                if not batch.zero(batch.instantiate(other, indices) - first):
                    return False, f"N, D, V = {sizes}, {indices}: {sp.sstr(other)}", count
    method = (f"general N, D, V: the derivatives of z's definition and the sums over their "
              f"Kronecker deltas; N, D, V = 1..3, every index: sympy.diff of L(z(x, W, b)) for "
              f"an undefined function L of the logits ({count} checks)")
    return True, method, count


def _classifier_chain(step: Step) -> tuple[bool, str, int]:
    """The classifier's regularised gradient: ``chain = [dL/dp, chain rule + penalty,
    closed form (any data loss), closed form (mean cross-entropy)]`` for p one of
    W_{d,c}, b_c.

    General N, D, C: ``chain[1]`` reduces to ``chain[2]`` (:func:`_linear_general`);
    ``chain[3]`` is ``chain[2]`` with ``g_{i,c} = (P_{i,c} - delta_{c,y_i}) / N``, the
    results of the steps 'overall' and 'batch' ("mean", unit weights, no row ignored).
    N, D, C = 1..3, every index: with L_data an undefined function of the scores,
    ``sympy.diff`` of ``L_data(s) + (reg/2) sum W^2`` equals ``chain[1]`` and
    ``chain[2]``; with L_data the mean cross-entropy and every label pattern, it
    equals all three.
    """
    ok, detail = _linear_general(step.chain, 3)
    if not ok:
        return False, detail, 0
    param = step.chain[0].variables[0]
    count = 0
    for sizes in LINEAR_SIZES:
        rows, _, classes = sizes
        runs = [(None, step.chain[1:3])]
        runs += [(labels, step.chain[1:]) for labels in itertools.product(range(classes),
                                                                          repeat=rows)]
        for labels, others in runs:
            batch = _explicit_batch(*sizes, True, labels)
            for indices in _free_indices(param, *sizes, True):
                first = batch.instantiate(step.chain[0], indices)
                for other in others:
                    count += 1
                    if not batch.zero(batch.instantiate(other, indices) - first):
                        what = "any L_data" if labels is None else f"labels {labels}"
                        detail = f"N, D, C = {sizes}, {what}, {indices}: {sp.sstr(other)}"
                        return False, detail, count
    return True, (f"general N, D, C: the derivatives of the scores' definition and of the "
                  f"penalty, the sums over their Kronecker deltas; N, D, C = 1..3, every index: "
                  f"sympy.diff of the definition, for an undefined L_data and for the mean "
                  f"cross-entropy with every label pattern ({count} checks)"), count


def _linear_steps() -> list[Step]:
    """The chain rule through the fused layer's logits and the classifier's gradient."""
    d = sp.Derivative
    i, r, u, v, dd = E.i, E.row_b, E.out_b, E.out, E.feature
    x, W, b, g = E.lin_x, E.lin_W, E.lin_b, E.logit_grad
    N, V = E.N, E.n_outputs

    def chain_rule(param):
        return sp.Sum(g[r, u] * d(E.linear_logit(r, u), param), (u, 0, V - 1), (r, 0, N - 1))

    def classifier_rule(param):
        return (sp.Sum(g[r, u] * d(E.classifier_score(r, u), param), (u, 0, C - 1), (r, 0, N - 1))
                + d(E.classifier_penalty, param))

    loss = L_data + E.classifier_penalty
    residual = P[r, c] - sp.KroneckerDelta(c, E.labels[r])
    logits = ("z_{i,v} = sum_d x_{i,d} W_{v,d} + b_v (z = x W^T + b), g_{i,v} = dL/dz_{i,v}; "
              "chain rule: ")
    note = ("L is any function of the logits: for the fused function the loss of the chosen "
            "reduction, g its batch gradient (steps 'batch', 'batch z'); with reduction "
            "'none' the gradients are those of the sum of the row losses")
    scores = "s_{i,c} = sum_d X_{i,d} W_{d,c} + b_c (scores = X W + b, W of shape (D, C)), "
    return [
        Step("linear x", logits + "dL/dx_{i,d} = sum_{r,u} g_{r,u} dz_{r,u}/dx_{i,d} "
             "= sum_u g_{i,u} W_{u,d} (grad_input = g W)",
             [d(L, x[i, dd]), chain_rule(x[i, dd]), E.linear_grad_input_closed],
             general=False, custom=_linear_chain, note=note),
        Step("linear W", logits + "dL/dW_{v,d} = sum_{r,u} g_{r,u} dz_{r,u}/dW_{v,d} "
             "= sum_r g_{r,v} x_{r,d} (grad_linear_weight = g^T x)",
             [d(L, W[v, dd]), chain_rule(W[v, dd]), E.linear_grad_weight_closed],
             general=False, custom=_linear_chain),
        Step("linear b", logits + "dL/db_v = sum_{r,u} g_{r,u} dz_{r,u}/db_v "
             "= sum_r g_{r,v} (grad_linear_bias = sum of g over the rows)",
             [d(L, b[v]), chain_rule(b[v]), E.linear_grad_bias_closed],
             general=False, custom=_linear_chain),
        Step("classifier W", "the case study's classifier, " + scores + "L = L_data(s) + "
             "reg/2 sum_{d,c} W_{d,c}^2: dL/dW_{d,c} = sum_r X_{r,d} g_{r,c} + reg W_{d,c}; "
             "mean cross-entropy: dL/dW = X^T (P - Y) / N + reg W",
             [d(loss, W[dd, c]), classifier_rule(W[dd, c]), E.classifier_grad_weight_closed,
              sp.Sum(x[r, dd] * residual, (r, 0, N - 1)) / N + E.reg * W[dd, c]],
             general=False, custom=_classifier_chain,
             note="g_{i,c} = dL_data/ds_{i,c}; L_data = (1/N) sum_i -log P_{i,y_i} in the last "
                  "line (reduction 'mean' without weights); 'sum' drops the 1/N; the bias is "
                  "not regularised"),
        Step("classifier b", "the classifier's bias: dL/db_c = sum_r g_{r,c}; mean "
             "cross-entropy: (1/N) sum_r (P_{r,c} - 1(c = y_r))",
             [d(loss, b[c]), classifier_rule(b[c]), E.classifier_grad_bias_closed,
              sp.Sum(residual, (r, 0, N - 1)) / N],
             general=False, custom=_classifier_chain),
    ]


# --------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------
def _softcap_chain(capped_loss, loss, closed_form) -> list:
    """d l_kappa/df_k = sum_j dl/df'_j df'_j/df_k = dl/df'_k (1 - tanh^2(f_k/kappa)) = ..."""
    d = sp.Derivative
    return [d(capped_loss, f[k]),
            sp.Sum(d(loss, fc[j]) * d(E.softcap(f[j]), f[k]), (j, 0, C - 1)),
            d(loss, fc[k]) * d(E.softcap(f[k]), f[k]),
            d(loss, fc[k]) * E.softcap_factor,
            closed(closed_form)]


def steps() -> list[Step]:
    """The derivation, in the order of the notes, then the kernels' closed forms,
    their rewrites, convexity and the further options."""
    Sj = E.S_sum
    ey = sp.exp(f[y])
    d = sp.Derivative
    tp = E.tprime
    s = E.shifted_sum
    capped = E.capped_closed_forms
    wt_sum = sp.Sum(w[c] * tp(c), (c, 0, C - 1))
    top = sp.Sum(sp.exp(sp.Add(m, -m, evaluate=False), evaluate=False), (j, 0, E.n_max - 1))
    rest = sp.Sum(sp.exp(u[j] - m), (j, 0, C - E.n_max - 1))
    r_sym = sp.Symbol("r", integer=True, positive=True)
    quadratic = sp.Sum(sp.Sum(E.v[j] * E.v[k] * P[j] * (sp.KroneckerDelta(j, k) - P[k]),
                              (k, 0, C - 1)), (j, 0, C - 1))
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
             [d(L, f[k]), P[k] - sp.KroneckerDelta(k, y), closed(E.row_grad_plain_closed)],
             concrete=_all_pairs),
        # ---- the closed forms the reference values are computed from
        Step("P", "the softmax in the closed form evaluated for the reference values: "
             "P_k = e^{f_k} / S, S = sum_j e^{f_j}",
             [E.softmax(k), closed(E.softmax_closed)], concrete=_classes_k),
        Step("log P", "log P_k = f_k - log S",
             [E.log_softmax(k), closed(E.log_softmax_closed)], concrete=_classes_k),
        Step("shift", "the kernels' overflow-safe forms: shifting every score by m changes nothing",
             [P[k], E.shifted_softmax_closed],
             concrete=None),
        Step("shift'", "log P_k = (f_k - m) - log sum_j e^{f_j - m}",
             [f[k] - sp.log(Sj), E.shifted_log_softmax_closed],
             concrete=None),
        Step("loss", "the row loss with weights and label smoothing (PyTorch), closed form: "
             "l = (1-eps) w_y (log S - f_y) + eps/C sum_c w_c (log S - f_c)",
             [E.row_loss_definition, closed(E.row_loss_closed)], concrete=_labels,
             note="l = (1-eps) w_y (-log P_y) + (eps/C) sum_c w_c (-log P_c)"),
        Step("weights", "weights and label smoothing (PyTorch): "
             "dl/df_k = P_k ((1-eps) w_y + eps/C sum_c w_c) - (1-eps) w_y 1(k = y) - eps/C w_k",
             [d(ell, f[k]), closed(E.row_grad_closed)],
             concrete=_all_pairs, classes=range(1, 4),
             note="with eps = 0 the smoothing term is absent (not 0 * inf)"),
        Step("hessian", "second derivative: d^2 L / df_j df_k = P_j (1(j = k) - P_k)",
             [d(L, f[j], f[k]), P[j] * (sp.KroneckerDelta(j, k) - P[k]), closed(E.hessian_closed)],
             concrete=_hessian_indices, classes=range(1, 5)),
        Step("hessian'", "with weights and label smoothing the Hessian is scaled by "
             "(1-eps) w_y + eps/C sum_c w_c",
             [d(ell, f[j], f[k]),
              ((1 - eps) * w[y] + eps / C * E.W_sum) * P[j] * (sp.KroneckerDelta(j, k) - P[k]),
              closed(E.row_hessian_closed)],
             concrete=_hessian_indices, classes=range(1, 3)),
        Step("batch", "reductions: none -> r_i l_i; sum -> sum_i r_i l_i; "
             "mean -> sum_i r_i l_i / D with D = sum_i r_i w_{y_i}; "
             "dL/df_{i,k} = r_i g_{i,k} (none, sum), r_i g_{i,k} / D (mean)",
             BatchForms(E.batch_loss_closed, E.batch_grad_closed, E.batch_denominator).chain,
             general=False, custom=_batch_reductions, names=_batch_names(False),
             note="r_i = 0 for rows whose label is ignore_index, 1 otherwise; "
                  "g_{i,k} is the per-row gradient above. Conventions (not derived): "
                  "'mean' of an empty or all-ignored batch is NaN with zero gradient, "
                  "'sum' of an empty batch is 0"),
        # ---- the kernels' rewrites (m = max_j f_j)
        Step("log1p", "the kernels' log s: s = sum_j e^{f_j - m} = n_max + t, "
             "log s = log1p(n_max - 1 + t)",
             [sp.log(top + rest), sp.log(E.n_max + E.t_rest), E.log_s_log1p],
             hypotheses={E.t_rest: rest}, exhaustive=_log1p_exhaustive,
             note="general C: a row with n_max maximal scores (= m, each e^{m - m} = 1) and "
                  "the others u_j; t = sum_j e^{u_j - m} (a sum does not depend on the order "
                  "of its terms); concrete C: every set of maximal scores"),
        Step("P_y - 1", "the kernels' k = y entry: P_y - 1 = -(s - e_y)/s, "
             "s - e_y = n_max - 1 + t (y maximal) or n_max + (t - e_y)",
             [P[y] - 1, E.grad_y_minus_one],
             exhaustive=_grad_y_exhaustive,
             note="e_y = e^{f_y - m}; s - e_y is formed without cancellation"),
        Step("kernel loss", "the kernels' row loss: l = (1-eps) w_y (m - f_y + log s) "
             "+ eps/C (W log s - sum_c w_c (f_c - m))",
             [E.row_loss_definition, closed(E.shifted_row_loss_closed)], concrete=_labels),
        Step("kernel grad_y", "the kernels' k = y entry with weights and smoothing: "
             "dl/df_y = -(1-eps) w_y (s - e_y)/s + eps/C W e_y/s - eps/C w_y",
             [d(ell, f[y]), closed(E.shifted_grad_y_closed)], concrete=_labels),
        # ---- convexity
        Step("convex", "the Hessian's quadratic form is a variance: v^T H v = "
             "sum_k P_k v_k^2 - (sum_k P_k v_k)^2 = sum_k P_k (v_k - sum_j P_j v_j)^2",
             [quadratic, closed(E.hessian_quadratic_form), closed(E.hessian_variance_form)],
             concrete=_no_index,
             note="H = diag(P) - P P^T, proved in step 'hessian'"),
        Step("null", "the ones vector is in the null space: (H 1)_j = sum_k P_j (1(j = k) - P_k) "
             "= 0; a constant v has sum_k P_k v_k = v",
             [sp.Sum(P[j] * (sp.KroneckerDelta(j, k) - P[k]), (k, 0, C - 1)), sp.S.Zero],
             concrete=_classes_j),
        Step("psd", "convexity: v^T H v >= 0, with equality iff v is constant "
             "(H positive semi-definite, null space spanned by the ones vector)",
             [closed(E.hessian_variance_form),
              sp.Product(P[j], (j, 0, r_sym - 1)) * sp.Sum(P[j], (j, r_sym, C - 1))],
             general=False, custom=_psd, names=["v^T H v", "det H[:r, :r]"],
             note="for finite scores (every P_k > 0); a masked class adds its unit vector "
                  "to the null space"),
        # ---- probability targets
        Step("loss_t", "probability targets: l_t = -sum_c w_c t'_c log P_c "
             "= sum_c w_c t'_c (log S - f_c), t'_c = (1-eps) t_c + eps/C",
             [E.prob_loss_definition, closed(E.prob_loss_closed)], concrete=_no_index,
             note="t_c >= 0, any sum; a term with w_c t'_c = 0 contributes 0 "
                  "(a convention, also where P_c = 0)"),
        Step("targets", "probability targets: dl_t/df_k = P_k sum_c w_c t'_c - w_k t'_k",
             [d(ell_t, f[k]),
              sp.Sum(w[c] * tp(c) * (P[k] - sp.KroneckerDelta(c, k)), (c, 0, C - 1)),
              P[k] * wt_sum - w[k] * tp(k),
              closed(E.prob_grad_closed)],
             concrete=_classes_k,
             note="term by term the result 'overall' with y = c; "
                  "sum_c w_c t'_c = (1-eps) T + eps/C W, T = sum_c w_c t_c"),
        Step("one-hot", "one-hot probability targets (t_c = 1(c = y)) give the class-index loss",
             [E.prob_loss_definition.xreplace({E.t[c]: sp.KroneckerDelta(c, y)}),
              E.row_loss_definition], concrete=_labels),
        Step("kernel loss_t", "probability targets, shifted: "
             "l_t = (sum_c w_c t'_c) log s - sum_c w_c t'_c (f_c - m)",
             [E.prob_loss_definition, closed(E.shifted_prob_loss_closed)], concrete=_no_index),
        # ---- z-loss
        Step("lse", "log-sum-exp: lse = log S = m + log s",
             [E.lse_definition, closed(E.lse_closed), E.shifted_lse], concrete=_no_index),
        Step("z", "z-loss z = lambda lse^2: closed form",
             [E.z_definition, closed(E.z_closed)], concrete=_no_index,
             note="not weighted by any class weight"),
        Step("z'", "z-loss gradient: d(lambda lse^2)/df_k = 2 lambda lse P_k",
             [d(zeta, f[k]), 2 * E.lam * sp.log(Sj) * P[k], closed(E.z_grad_closed)],
             concrete=_classes_k),
        # ---- soft-capping
        Step("softcap", "soft-capping, chain rule: f'_k = kappa tanh(f_k/kappa), "
             "dl/df_k = sum_j dl/df'_j df'_j/df_k = dl/df'_k (1 - tanh^2(f_k/kappa))",
             _softcap_chain(ell_cap, ell, capped["row_grad"]), concrete=_all_pairs,
             note="l_kappa(f) = l(f'); dl/df'_k is the result 'weights' at f'. "
                  "Convention (not derived): a score of -inf stays -inf (masked class) and "
                  "its gradient entry is 0"),
        Step("softcap_t", "soft-capping with probability targets: "
             "dl_t/df_k = dl_t/df'_k (1 - tanh^2(f_k/kappa))",
             _softcap_chain(ell_t_cap, ell_t, capped["prob_grad"]), concrete=_classes_k),
        Step("softcap_z", "soft-capping and the z-loss: dz/df_k = 2 lambda lse' P'_k "
             "(1 - tanh^2(f_k/kappa)), lse' = log sum_j e^{f'_j}",
             _softcap_chain(zeta_cap, zeta, capped["z_grad"]), concrete=_classes_k),
        Step("softcap loss", "soft-capped loss (class indices): the closed form at f'",
             [E.capped(E.row_loss_definition), closed(capped["row_loss"])],
             concrete=_labels),
        Step("softcap loss_t", "soft-capped probability-target loss: the closed form at f'",
             [E.capped(E.prob_loss_definition), closed(capped["prob_loss"])],
             concrete=_no_index),
        Step("softcap z", "soft-capped z-loss and lse: the closed forms at f'",
             [E.capped(E.z_definition), closed(capped["z"])], concrete=_no_index),
        Step("softcap lse", "soft-capped lse: the closed form at f'",
             [E.capped(E.lse_definition), closed(capped["lse"])], concrete=_no_index),
        Step("softcap factor", "soft-capping without cancellation, x = |f_k|/kappa: "
             "1 - tanh^2(x) = 4 e^{-2x} / (1 + e^{-2x})^2",
             [1 - sp.tanh(E.softcap_x) ** 2, E.softcap_factor_stable],
             general=False, custom=_scalar_identity,
             note="1 - tanh^2 is even; 1 - tanh^2(x) itself loses about 2x/ln 10 digits"),
        Step("softcap tanh", "tanh(x) = (1 - e^{-2x}) / (1 + e^{-2x}) for x >= 0 (tanh is odd)",
             [sp.tanh(E.softcap_x), E.softcap_stable],
             general=False, custom=_scalar_identity),
        # ---- reductions with the z-loss
        Step("batch z", "reductions with the z-loss: none -> r_i (l_i + z_i); "
             "sum -> sum_i r_i (l_i + z_i); mean -> sum_i r_i l_i / D + sum_i r_i z_i / n, "
             "n = sum_i r_i; dL/df_{i,k} = r_i (g_{i,k} + h_{i,k}) (none, sum), "
             "r_i (g_{i,k}/D + h_{i,k}/n) (mean); the z part reduced alike",
             BatchForms(E.batch_loss_z_closed, E.batch_grad_z_closed, E.batch_denominator,
                        E.batch_z_closed, E.batch_count).chain,
             general=False, custom=_batch_reductions, names=_batch_names(True),
             note="h_{i,k} = dz_i/df_{i,k}. Probability targets: every row counts (r_i = 1) "
                  "and w_{y_i} -> 1, so both parts of 'mean' divide by N. Conventions (not "
                  "derived): 'mean' with D = 0 or n = 0 is NaN (an all-ignored batch: zero "
                  "gradient), 'sum' of an empty batch is 0"),
        # ---- the fused linear layer and the case study's classifier
        *_linear_steps(),
    ]


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------
def _status(result: Result) -> str:
    return "verified" if result.ok else "NOT VERIFIED"


class CompactPrinter(StrPrinter):
    """One-line printer close to the notes' notation: ``f_k``, ``Σ_j e^f_j``,
    ``δ_ky``, ``∂L/∂f_k``.  ``unicode=False`` gives plain ASCII."""

    _ascii = {"Σ": "sum", "Π": "prod", "δ": "delta", "∂": "d", "ε": "eps", "κ": "kappa",
              "λ": "lambda", "v̄": "vbar", "²": "^2", "·": "*"}
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

    _names = {"varepsilon": "ε", "kappa": "κ", "lambda": "λ", "l_kappa": "l_κ",
              "l_t_kappa": "l_t,κ", "z_kappa": "z_κ", "vbar": "v̄"}

    def _print_Symbol(self, expr) -> str:
        return self._names.get(expr.name, expr.name)

    def _print_Indexed(self, expr) -> str:
        name = expr.base.label.name
        idx = [self._print(q) for q in expr.indices]
        if name == "omega":  # the weight of row i's target
            return "w_{y_%s}" % idx[0]
        sub = "".join(idx) if all(len(q) == 1 for q in idx) else "{%s}" % ",".join(idx)
        return f"{name}_{sub}"

    def _print_Sum(self, expr, sign: str = "Σ") -> str:
        body = expr.function
        text = self._print(body)
        if body.is_Add:
            text = f"({text})"
        idx, lo, hi = expr.limits[0]
        names = "".join(self._print(lim[0]) for lim in expr.limits)
        if len(expr.limits) == 1 and not (lo == 0 and hi == C - 1):  # j < n, or r <= j < n
            below = f"{names}<{self._print(hi + 1)}"
            names = "{" + (below if lo == 0 else f"{self._print(lo)}<={below}") + "}"
        return f"({sign}_{names} {text})"

    def _print_Product(self, expr) -> str:
        return self._print_Sum(expr, "Π")

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
        if r.step.custom is not None and r.step.names:
            names = list(r.step.names)
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
                _latex_chain(r.step).replace(r" \\ ", " ").replace("&", ""), "$$", ""]
        if r.step.note:
            out += [f"*{r.step.note}*", ""]
        out += [f"**{_status(r)}**: {'; '.join(r.methods)}", ""]
    return "\n".join(out)


#: LaTeX names of the placeholder symbols
_LATEX_NAMES = {ell_cap: r"l_{\kappa}", ell_t_cap: r"l_{t,\kappa}", zeta_cap: r"z_{\kappa}",
                vbar: r"\bar{v}", L_data: r"L_{\mathrm{data}}", E.reg: r"\mathrm{reg}"}


def _latex(expr: sp.Expr) -> str:
    return sp.latex(expr, symbol_names=_LATEX_NAMES)


def _latex_chain(step: Step) -> str:
    if step.custom is not None and step.names:
        return r" \\ ".join(r"\text{%s} &= %s" % (_tex_escape(name), _latex(expr))
                             for name, expr in zip(step.names, step.chain))
    first, rest = step.chain[0], step.chain[1:]
    body = [_latex(first) + " &= " + _latex(rest[0])]
    body += ["&= " + _latex(e) for e in rest[1:]]
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
