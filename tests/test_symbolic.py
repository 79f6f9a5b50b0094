"""Tests of the SymPy derivation, the mpmath evaluator and the cases generator.

* ``python -m symbolic`` verifies every step, exits 0 and writes its LaTeX
  and Markdown documents;
* each proof method rejects false claims (general C, concrete C, the batch
  reductions) and turns a crash inside SymPy into a failed step, and the
  command exits 1 when a step fails;
* the evaluator's numbers are right: known values, the gradient is the
  numerical derivative of the loss (mpmath.diff), the loss agrees with a
  direct mpmath transcription of PyTorch's formula, deep cancellations are
  resolved;
* ``python -m symbolic.cases --check`` reports an out-of-date file.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import mpmath
import numpy as np
import pytest
import sympy as sp

from symbolic import cases, derivation as D, evaluate, expressions as E
from symbolic.derivation import P, L, Step, ell, ell_cap, ell_t, verify, zeta
from symbolic.expressions import eps, f, fc, j, k, m, w, y

ROOT = Path(__file__).resolve().parent.parent
d = sp.Derivative
delta = sp.KroneckerDelta


# --------------------------------------------------------------------------
# python -m symbolic
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def derivation_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("derivation")
    tex, md = out / "derivation.tex", out / "derivation.md"
    proc = subprocess.run([sys.executable, "-m", "symbolic", "--latex", str(tex), "--markdown", str(md)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    return proc, tex, md


def test_derivation_command_verifies_every_step(derivation_run):
    proc, _, _ = derivation_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    n = len(D.steps())
    assert f"{n}/{n} steps verified" in proc.stdout
    assert proc.stdout.count("[ok]") == n and "FAILED" not in proc.stdout
    # the notes' result, proved for general C and exhaustively for C = 1..6
    overall = proc.stdout.split("[ok] overall")[1].split("\n\n")[0]
    assert "general C" in overall and "C = 1..6" in overall and "(182 checks)" in overall
    # the further options: general C and C = 1..6
    for label in ("targets", "z'", "softcap", "softcap_t", "softcap_z", "convex", "log1p"):
        block = proc.stdout.split(f"[ok] {label} ")[1].split("\n\n")[0]
        assert "general C" in block and "C = 1..6" in block, label
    # the fused linear layer and the classifier: general sizes and every size up to 3
    for label in ("linear x", "linear W", "linear b", "classifier W", "classifier b"):
        block = proc.stdout.split(f"[ok] {label} ")[1].split("\n\n")[0]
        assert "general N, D" in block and "= 1..3, every index" in block, label
    assert "every label pattern" in proc.stdout.split("[ok] classifier W ")[1]


def test_derivation_documents(derivation_run):
    proc, tex, md = derivation_run
    n = len(D.steps())
    latex = tex.read_text(encoding="utf-8")
    assert latex.startswith(r"\documentclass") and latex.rstrip().endswith(r"\end{document}")
    assert latex.count(r"\paragraph{") == n and latex.count(r"\textbf{verified}") == n
    assert r"\delta_{k y}" in latex
    markdown = md.read_text(encoding="utf-8")
    assert markdown.count("\n## ") == n and markdown.count("**verified**") == n
    # a sum over two indices keeps the line break between its limits (only the chain's
    # line breaks are dropped)
    assert r"\substack{0 \leq k \leq C - 1\\0 \leq j \leq C - 1}" in markdown


def test_ascii_output():
    text = D.render_text([verify(Step("t", "plain", [d(L, P[y]), -1 / P[y]], concrete=None))],
                         unicode=False)
    assert text.isascii() and "dL/dP_y" in text and "[ok]" in text


# --------------------------------------------------------------------------
# False claims fail
# --------------------------------------------------------------------------
Sj = E.S_sum
FALSE_CLAIMS = {
    "loss-sign": [-sp.log(P[y]), f[y] - sp.log(Sj)],
    "overall-sign": [d(L, f[k]), delta(k, y) - P[k]],
    "overall-no-delta": [d(L, f[k]), P[k]],
    "step3": [d(P[y], f[y]), P[y] * (1 + P[y])],
    "chain-rule-flipped": [d(L, f[k]), d(P[y], f[k]) / d(L, P[y])],
    "smoothing-missing-term": [d(ell, f[k]), (E.row_grad_closed + eps / E.C * w[k])
                               .xreplace({E.S: Sj, E.W: E.W_sum})],
    "smoothing-unweighted-sum": [d(ell, f[k]), E.row_grad_closed.xreplace({E.S: Sj, E.W: E.C})],
    "hessian-no-delta": [d(L, f[j], f[k]), -P[j] * P[k]],
    "shift-numerator-only": [P[k], sp.exp(f[k] - m) / Sj],
    "targets-unweighted-sum": [d(ell_t, f[k]),
                               P[k] * sp.Sum(E.tprime(E.c), (E.c, 0, E.C - 1)) - w[k] * E.tprime(k)],
    "targets-no-smoothing": [d(ell_t, f[k]), P[k] * E.T_sum - w[k] * E.t[k]],
    "z-loss-no-two": [d(zeta, f[k]), E.lam * sp.log(Sj) * P[k]],
    "softcap-no-factor": [d(ell_cap, f[k]), d(ell, fc[k])],
    "softcap-factor-not-squared": [d(ell_cap, f[k]), d(ell, fc[k]) * (1 - sp.tanh(f[k] / E.kappa))],
}


@pytest.mark.parametrize("mode", ["general", "concrete"])
@pytest.mark.parametrize("name", list(FALSE_CLAIMS))
def test_false_claim_is_rejected(name, mode):
    general = mode == "general"
    step = Step("x", name, FALSE_CLAIMS[name], general=general,
                concrete=None if general else D._all_pairs, classes=range(1, 4))
    if not general and name.startswith("shift"):
        step.concrete = lambda n: [{k: a} for a in range(n)]
    result = verify(step)
    assert not result.ok, f"{name} ({mode}) was 'verified'"


def test_true_claim_in_both_modes():
    result = verify(Step("x", "overall", [d(L, f[k]), P[k] - delta(k, y)],
                         concrete=D._all_pairs, classes=range(1, 3)))
    assert result.ok and result.methods[0] == "general C"
    assert result.methods[1].startswith("C = 1..2")


def test_unreduced_sum_fails_instead_of_passing():
    # S^2 is not a sum of squares; the general checker cannot rename the
    # right-hand sum to S and must report failure
    result = verify(Step("x", "bogus", [Sj ** 2, sp.Sum(sp.exp(2 * f[j]), (j, 0, E.C - 1))],
                         concrete=None))
    assert not result.ok and result.detail


def test_crash_is_a_failed_step():
    def boom(step):
        raise RuntimeError("inside sum_simplify")
    result = verify(Step("x", "crash", [sp.S.Zero, sp.S.Zero], custom=boom))
    assert not result.ok and "inside sum_simplify" in result.detail


def _batch_forms(with_z: bool):
    if with_z:
        return D.BatchForms(E.batch_loss_z_closed, E.batch_grad_z_closed, E.batch_denominator,
                            E.batch_z_closed, E.batch_count)
    return D.BatchForms(E.batch_loss_closed, E.batch_grad_closed, E.batch_denominator)


def test_batch_check_rejects_a_wrong_row_gradient(monkeypatch):
    for with_z in (False, True):
        count, failure = D._batch_check(2, (0, None), "index", _batch_forms(with_z))
        assert count > 0 and failure == ""
    monkeypatch.setattr(E, "row_grad_closed", E.row_grad_closed * 2)
    for with_z in (False, True):
        count, failure = D._batch_check(2, (0, None), "index", _batch_forms(with_z))
        assert failure
    count, failure = D._batch_check(2, (0, 0), "prob", _batch_forms(True))
    assert count > 0 and failure == ""
    monkeypatch.setattr(E, "prob_grad_closed", E.prob_grad_closed + E.w[E.k])
    count, failure = D._batch_check(2, (0, 0), "prob", _batch_forms(True))
    assert failure


def _step(label: str) -> Step:
    return next(s for s in D.steps() if s.label == label)


def test_mean_gradient_over_one_plus_d_is_caught(monkeypatch):
    """The displayed closed forms are the ones the batch step proves."""
    assert verify(_step("batch")).ok
    r_i, g_ik = E.row_in_batch[E.i], E.row_grad[E.i, E.k]
    monkeypatch.setitem(E.batch_grad_closed, "mean", r_i * g_ik / (1 + E.D))
    result = verify(_step("batch"))
    assert not result.ok and "mean grad" in result.detail


BATCH_MUTATIONS = {
    "loss-mean": ("batch", lambda: ("batch_loss_closed", "mean",
                                    E.batch_loss_closed["mean"] * (1 + E.row_in_batch[0]))),
    "loss-none": ("batch", lambda: ("batch_loss_closed", "none", E.row_loss[E.i])),
    "grad-sum": ("batch", lambda: ("batch_grad_closed", "sum", E.row_grad[E.i, E.k])),
    "z-grad-mean": ("batch z", lambda: ("batch_grad_z_closed", "mean", E.row_in_batch[E.i]
                                        * (E.row_grad[E.i, E.k] + E.row_z_grad[E.i, E.k]) / E.D)),
    "z-loss-mean": ("batch z", lambda: ("batch_loss_z_closed", "mean",
                                        E.batch_loss_closed["mean"] + E.batch_z_closed["sum"] / E.N)),
    "z-part-none": ("batch z", lambda: ("batch_z_closed", "none", E.row_z[E.i])),
}


@pytest.mark.parametrize("name", list(BATCH_MUTATIONS))
def test_batch_mutations_are_caught(name, monkeypatch):
    label, mutation = BATCH_MUTATIONS[name]
    table, key, value = mutation()
    monkeypatch.setitem(getattr(E, table), key, value)
    assert not verify(_step(label)).ok


def test_batch_denominators_are_proved(monkeypatch):
    unweighted = sp.Sum(E.row_in_batch[E.i], (E.i, 0, E.N - 1))
    monkeypatch.setattr(E, "batch_denominator", unweighted)
    assert not verify(_step("batch")).ok
    monkeypatch.undo()
    monkeypatch.setattr(E, "batch_count", sp.Sum(1, (E.i, 0, E.N - 1)))
    assert not verify(_step("batch z")).ok


R = E.S + 1
CLOSED_FORM_MUTATIONS = {
    "softmax_closed": ("P", lambda e: e.xreplace({E.S: R})),
    "log_softmax_closed": ("log P", lambda e: e - 1 / E.S),
    "row_loss_closed": ("loss", lambda e: e + E.eps * w[y] / E.C),
    "row_grad_plain_closed": ("overall", lambda e: e.xreplace({E.S: R})),
    "row_grad_closed": ("weights", lambda e: e + E.eps * w[y] / E.C * sp.KroneckerDelta(k, y)),
    "hessian_closed": ("hessian", lambda e: e.xreplace({sp.KroneckerDelta(j, k): 0})),
    "row_hessian_closed": ("hessian'", lambda e: 2 * e),
    "prob_loss_closed": ("loss_t", lambda e: e.xreplace({E.eps / E.C: E.eps})),
    "prob_grad_closed": ("targets", lambda e: e.xreplace({E.T: E.W})),
    "lse_closed": ("lse", lambda e: e.xreplace({E.S: R})),
    "z_closed": ("z", lambda e: 2 * e),
    "z_grad_closed": ("z'", lambda e: e / 2),
    "shifted_row_loss_closed": ("kernel loss", lambda e: e.xreplace({E.W: E.W + 1})),
    "shifted_grad_y_closed": ("kernel grad_y", lambda e: e + E.eps / E.C * w[y]),
    "shifted_prob_loss_closed": ("kernel loss_t", lambda e: e.xreplace({E.T: E.W})),
    "grad_y_minus_one": ("P_y - 1", lambda e: e.xreplace({m: 0}) + 1 / E.shifted_sum),
    "log_s_log1p": ("log1p", lambda e: e.func(e.args[0] + 1)),
    "hessian_quadratic_form": ("convex", lambda e: e.args[0] if e.is_Add else 2 * e),
    "hessian_variance_form": ("convex", lambda e: e.xreplace({E.v[k]: 2 * E.v[k]})),
    "softcap_factor_stable": ("softcap factor", lambda e: e * (1 + sp.exp(-2 * E.softcap_x))),
    "softcap_stable": ("softcap tanh", lambda e: e * 2),
}


@pytest.mark.parametrize("name", list(CLOSED_FORM_MUTATIONS))
def test_a_wrong_closed_form_fails_its_step(name, monkeypatch):
    """Each closed form (the ones the evaluator uses, the kernels' rewrites) is
    proved by a step: changing it makes that step fail."""
    label, mutate = CLOSED_FORM_MUTATIONS[name]
    monkeypatch.setattr(E, name, mutate(getattr(E, name)))
    step = _step(label)
    step.classes = range(1, 4)  # a failure shows for small C already
    assert not verify(step).ok, name


@pytest.mark.parametrize("name", ["row_grad", "prob_grad", "z_grad", "row_loss", "prob_loss", "z",
                                  "lse"])
def test_a_wrong_soft_capped_form_fails_its_step(name, monkeypatch):
    label = {"row_grad": "softcap", "prob_grad": "softcap_t", "z_grad": "softcap_z",
             "row_loss": "softcap loss", "prob_loss": "softcap loss_t", "z": "softcap z",
             "lse": "softcap lse"}[name]
    wrong = E.capped_closed_forms[name].xreplace({E.kappa: 2 * E.kappa}) + E.lam * E.t[0] ** 0 / 7
    monkeypatch.setitem(E.capped_closed_forms, name, wrong)
    step = _step(label)
    step.classes = range(1, 3)
    assert not verify(step).ok, name


LINEAR_MUTATIONS = {
    # the fused layer's gradients: W read the wrong way round, the rows of g not summed
    # (the bias gradient of row i alone), the input gradient missing W
    "grad-input-transposed": ("linear x", "linear_grad_input_closed",
                              lambda e: e.xreplace({E.lin_W[E.out_b, E.feature]:
                                                    E.lin_W[E.feature, E.out_b]})),
    "grad-bias-one-row": ("linear b", "linear_grad_bias_closed",
                          lambda e: E.logit_grad[E.i, E.out]),
    "grad-weight-no-x": ("linear W", "linear_grad_weight_closed",
                         lambda e: e.xreplace({E.lin_x[E.row_b, E.feature]: 1})),
    # the classifier: the L2 term's factor, a regularised bias
    "reg-twice": ("classifier W", "classifier_grad_weight_closed",
                  lambda e: e + E.reg * E.lin_W[E.feature, E.c]),
    "reg-half": ("classifier W", "classifier_grad_weight_closed",
                 lambda e: e - E.reg * E.lin_W[E.feature, E.c] / 2),
    "bias-regularised": ("classifier b", "classifier_grad_bias_closed",
                         lambda e: e + E.reg * E.lin_b[E.c]),
}


@pytest.mark.parametrize("name", list(LINEAR_MUTATIONS))
def test_a_wrong_linear_gradient_fails_its_step(name, monkeypatch):
    label, attribute, mutate = LINEAR_MUTATIONS[name]
    assert attribute in {n for n in dir(E) if n.endswith("_closed")}
    monkeypatch.setattr(E, attribute, mutate(getattr(E, attribute)))
    result = verify(_step(label))
    assert not result.ok, name


def test_linear_step_without_the_bias_in_the_logits_fails(monkeypatch):
    """Logits without the bias: the bias gradient (sum of g over the rows) is refused."""
    logit = E.linear_logit
    monkeypatch.setattr(E, "linear_logit", lambda row, out, *a: logit(row, out, *a) - E.lin_b[out])
    assert not verify(_step("linear b")).ok


@pytest.mark.parametrize("wrong", ["no-1/N", "reg/2", "no-reg", "P-only"])
def test_classifier_mean_form_is_proved_exhaustively(wrong):
    """The last line, X^T (P - Y)/N + reg W, is checked against sympy.diff of the mean
    cross-entropy (the general part stops at the line before it)."""
    step = _step("classifier W")
    r, dd, c = E.row_b, E.feature, E.c
    residual = D.P[r, c] - sp.KroneckerDelta(c, E.labels[r])
    total = sp.Sum(E.lin_x[r, dd] * residual, (r, 0, E.N - 1))
    step.chain[3] = {"no-1/N": total + E.reg * E.lin_W[dd, c],
                     "reg/2": total / E.N + E.reg * E.lin_W[dd, c] / 2,
                     "no-reg": total / E.N,
                     "P-only": sp.Sum(E.lin_x[r, dd] * D.P[r, c], (r, 0, E.N - 1)) / E.N
                     + E.reg * E.lin_W[dd, c]}[wrong]
    result = verify(step)
    assert not result.ok and "labels" in result.detail, result.detail


def test_psd_step_rejects_a_wrong_minor():
    step = _step("psd")
    variance, minor = step.chain
    step.chain = [variance, minor * 2]
    assert not verify(step).ok
    step.chain = [variance.xreplace({E.v[k]: E.v[k] ** 3}), minor]  # no longer a square
    assert not verify(step).ok


def test_every_evaluated_closed_form_is_proved():
    """Each closed form the evaluator lambdifies appears in the chain of a step of
    ``python -m symbolic`` (which verifies every step: see the first test)."""
    chains = {s.label: s.chain for s in D.steps()}
    unproved = []
    for name, expr in evaluate.closed_forms().items():
        shown = D.closed(expr)
        if not any(shown in chain or expr in chain for chain in chains.values()):
            unproved.append(name)
    assert unproved == []
    assert len(evaluate.closed_forms()) > 30


def test_command_exits_nonzero_on_a_failed_step(monkeypatch, capsys, tmp_path):
    cheap = Step("(2)", "dL/dP_y = -1/P_y", [d(L, P[y]), -1 / P[y]], concrete=None)
    wrong = Step("bad", "dL/df_k = P_k", [d(L, f[k]), P[k]], concrete=None)
    monkeypatch.setattr(D, "steps", lambda: [cheap])
    assert D.main([]) == 0
    tex = tmp_path / "out.tex"
    assert D.main(["--latex", str(tex)], extra_steps=[wrong]) == 1
    out = capsys.readouterr().out
    assert "[FAILED] bad" in out and "NOT VERIFIED" in out and "1/2 steps verified" in out
    assert "NOT VERIFIED" in tex.read_text(encoding="utf-8")


@pytest.mark.parametrize("expr, zero", [
    (sp.exp(f[0]) / (sp.exp(f[0]) + sp.exp(f[1])) - 1 / (1 + sp.exp(f[1] - f[0])), True),
    (sp.log(sp.exp(f[0]) * sp.exp(f[1])) - f[0] - f[1], True),
    (sp.exp(f[0]) - sp.exp(f[1]), False),
    (sp.log(sp.exp(f[0]) + sp.exp(f[1])) - f[0], False),
], ids=["softmax-identity", "log-product", "distinct-exps", "logsumexp-not-max"])
def test_is_zero(expr, zero):
    assert D.is_zero(expr) is zero


# --------------------------------------------------------------------------
# The evaluator
# --------------------------------------------------------------------------
def test_known_values():
    ref = evaluate.reference([[0.0, 0.0]], [0], n_classes=2, reduction="sum")
    assert ref.loss == "6.9314718055994530942e-1"  # log 2
    assert ref.softmax == [["5.0000000000000000000e-1"] * 2]
    assert ref.grad == [["-5.0000000000000000000e-1", "5.0000000000000000000e-1"]]
    one = evaluate.reference([[3.5]], [0], n_classes=1, reduction="mean", weight=[2.0],
                             label_smoothing=0.1)
    assert (one.loss, one.grad, one.log_softmax) == ("0.0", [["0.0"]], [["0.0"]])


def test_deep_cancellation_is_resolved():
    # P_0 - 1 = -e^-800 / (1 + e^-800) needs ~350 digits; 50 would give 0
    ref = evaluate.reference([[0.0, -800.0]], [0], n_classes=2, reduction="none")
    with mpmath.workdps(40):  # no cancellation in these forms
        tail = mpmath.exp(-800) / (1 + mpmath.exp(-800))
        assert ref.grad[0][0] == evaluate.format_value(-tail)
        assert ref.loss == [evaluate.format_value(mpmath.log1p(mpmath.exp(-800)))]
    assert ref.dps > 350


def test_conventions():
    assert evaluate.reference([], [], n_classes=3, reduction="mean").loss == "nan"
    assert evaluate.reference([], [], n_classes=3, reduction="sum").loss == "0.0"
    ignored = evaluate.reference([[1.0, 2.0]], [-100], n_classes=2, reduction="mean")
    assert ignored.loss == "nan" and ignored.grad == [["0.0", "0.0"]]
    masked = evaluate.reference([[0.0, -mpmath.inf, 1.0]], [2], n_classes=3, reduction="sum")
    assert masked.softmax[0][1] == "0.0" and masked.grad[0][1] == "0.0"
    assert masked.log_softmax[0][1] == "-inf" and masked.loss != "inf"
    smooth = evaluate.reference([[0.0, -mpmath.inf, 1.0]], [2], n_classes=3, reduction="sum",
                                label_smoothing=0.25)
    with mpmath.workdps(40):
        assert smooth.loss == "inf"
        assert smooth.grad[0][1] == evaluate.format_value(-mpmath.mpf(0.25) / 3)


def _direct_loss(scores, labels, reduction, weight, ignore_index, eps):
    """PyTorch's cross_entropy transcribed directly into mpmath (no SymPy)."""
    n_classes = len(scores[0])
    w = [mpmath.mpf(v) for v in weight or [1.0] * n_classes]
    eps = mpmath.mpf(eps)
    total, denom, rows = mpmath.mpf(0), mpmath.mpf(0), []
    for row, lab in zip(scores, labels):
        if lab == ignore_index:
            rows.append(mpmath.mpf(0))
            continue
        lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in row))
        nll = [lse - v for v in row]
        loss = (1 - eps) * w[lab] * nll[lab] + eps / n_classes * mpmath.fsum(
            wc * q for wc, q in zip(w, nll))
        rows.append(loss)
        total += loss
        denom += w[lab]
    return {"none": rows, "sum": total, "mean": total / denom}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [
    dict(weight=None, eps=0.0), dict(weight=[0.5, 2.0, 1.25, 3.0], eps=0.0),
    dict(weight=None, eps=0.1), dict(weight=[0.5, 2.0, 1.25, 3.0], eps=0.3),
], ids=["plain", "weights", "smoothing", "weights-smoothing"])
def test_evaluator_matches_definition_and_derivative(reduction, options):
    rng = random.Random(7)
    scores = [[rng.uniform(-4, 4) for _ in range(4)] for _ in range(3)]
    labels = [2, -100, 0]
    weight, eps_value = options["weight"], options["eps"]
    ref = evaluate.reference(scores, labels, n_classes=4, reduction=reduction, weight=weight,
                             label_smoothing=eps_value)
    with mpmath.workdps(40):
        want = _direct_loss(scores, labels, reduction, weight, -100, eps_value)
        wants = want if reduction == "none" else [want]
        gots = ref.loss if reduction == "none" else [ref.loss]
        for a, b in zip(gots, wants):
            assert abs(mpmath.mpf(a) - b) <= mpmath.mpf(10) ** -18 * (1 + abs(b))
        # the gradient is the derivative of the total loss (numerically, at 40 digits)
        for r in range(3):
            for q in range(4):
                def loss_at(t, r=r, q=q):
                    moved = [[mpmath.mpf(v) for v in row] for row in scores]
                    moved[r][q] += t
                    value = _direct_loss(moved, labels, reduction, weight, -100, eps_value)
                    return mpmath.fsum(value) if reduction == "none" else value
                slope = mpmath.diff(loss_at, 0)
                assert abs(mpmath.mpf(ref.grad[r][q]) - slope) <= mpmath.mpf(10) ** -18


# --------------------------------------------------------------------------
# The generator's command line
# --------------------------------------------------------------------------
def test_cases_check_reports_a_stale_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cases, "render", lambda: b'{"cases": []}\n')
    target = tmp_path / "reference_cases.json"
    assert cases.main(["--check", "--output", str(target)]) == 1  # missing
    assert cases.main(["--output", str(target)]) == 0
    assert target.read_bytes() == b'{"cases": []}\n'
    assert cases.main(["--check", "--output", str(target)]) == 0
    target.write_bytes(b'{"cases": [1]}\n')
    assert cases.main(["--check", "--output", str(target)]) == 1
    assert "python -m symbolic.cases" in capsys.readouterr().err


def test_cases_default_output_is_the_source_trees_file_or_the_current_directorys(
        tmp_path, monkeypatch, capsys):
    here = Path(cases.__file__).resolve().parent.parent
    if (here / "tests").is_dir():  # a checkout or an unpacked sdist: its own file, anywhere
        monkeypatch.chdir(tmp_path)
        assert cases.default_output() == here / "tests" / "data" / "reference_cases.json"
    else:  # installed: the current directory's tree, or a clear error
        monkeypatch.chdir(tmp_path)
        assert cases.main(["--check"]) == 2
        assert "root of a checkout" in capsys.readouterr().err
        (tmp_path / "tests").mkdir()
        assert cases.default_output() == tmp_path / "tests" / "data" / "reference_cases.json"


def test_inputs_are_rounded_to_the_dtype_before_evaluation():
    spec = cases.CaseSpec("t", "t", lambda rng, dtype: ([[0.1, 0.2]], [1]), 2)
    case = cases.build_case(spec, "float32", "sum", random.Random(0))
    assert case["scores"] == [["0.10000000149011612", "0.20000000298023224"]]
    exact = evaluate.reference([[0.10000000149011612, 0.20000000298023224]], [1], n_classes=2,
                               reduction="sum")
    assert case["expected"]["loss"] == exact.loss
    assert case["expected"]["loss"] != evaluate.reference([[0.1, 0.2]], [1], n_classes=2,
                                                          reduction="sum").loss


# --------------------------------------------------------------------------
# The evaluator of the further options
# --------------------------------------------------------------------------
def _direct_options(scores, targets, reduction, weight, eps, lam, kappa, probability):
    """The options' definitions transcribed directly into mpmath (no SymPy):
    loss, z part and lse (``kappa=None``: no soft-capping)."""
    n_classes = len(scores[0])
    w = [mpmath.mpf(v) for v in weight]
    eps, lam = mpmath.mpf(eps), mpmath.mpf(lam)
    ces, zs, lses, counted, denom = [], [], [], 0, mpmath.mpf(0)
    for row, target in zip(scores, targets):
        capped = [kappa * mpmath.tanh(mpmath.mpf(v) / kappa) if kappa is not None
                  else mpmath.mpf(v) for v in row]
        lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in capped))
        nll = [lse - v for v in capped]
        lses.append(lse)
        if probability:
            ce = mpmath.fsum(wc * ((1 - eps) * tc + eps / n_classes) * q
                             for wc, tc, q in zip(w, target, nll))
            denom += 1
        elif target == -100:
            ces.append(mpmath.mpf(0))
            zs.append(mpmath.mpf(0))
            continue
        else:
            ce = (1 - eps) * w[target] * nll[target] + eps / n_classes * mpmath.fsum(
                wc * q for wc, q in zip(w, nll))
            denom += w[target]
        ces.append(ce)
        zs.append(lam * lse ** 2)
        counted += 1
    if reduction == "none":
        return [a + b for a, b in zip(ces, zs)], zs, lses
    if reduction == "sum":
        return mpmath.fsum(ces) + mpmath.fsum(zs), mpmath.fsum(zs), lses
    return mpmath.fsum(ces) / denom + mpmath.fsum(zs) / counted, mpmath.fsum(zs) / counted, lses


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("probability", [False, True], ids=["index", "probability"])
def test_option_evaluator_matches_definition_and_derivative(reduction, probability):
    rng = random.Random(11)
    scores = [[rng.uniform(-4, 4) for _ in range(4)] for _ in range(3)]
    targets = ([[rng.uniform(0, 1) for _ in range(4)] for _ in range(3)] if probability
               else [2, -100, 0])
    weight, eps_value, lam, kappa = [0.5, 2.0, 1.25, 3.0], 0.1, 0.3, 1.5
    ref = evaluate.reference_options(scores, targets, n_classes=4, reduction=reduction,
                                     weight=weight, label_smoothing=eps_value, z_loss=lam,
                                     softcap=kappa)
    tol = mpmath.mpf(10) ** -18
    with mpmath.workdps(40):
        loss, z, lse = _direct_options(scores, targets, reduction, weight, eps_value, lam,
                                       mpmath.mpf(kappa), probability)
        for got, want in ((ref.loss, loss), (ref.z, z), (ref.lse, lse)):
            for a, b in zip(got if isinstance(got, list) else [got],
                            want if isinstance(want, list) else [want]):
                assert abs(mpmath.mpf(a) - b) <= tol * (1 + abs(b))
        for r in range(3):
            for q in range(4):
                def total(t, r=r, q=q):
                    moved = [[mpmath.mpf(v) for v in row] for row in scores]
                    moved[r][q] += t
                    value = _direct_options(moved, targets, reduction, weight, eps_value, lam,
                                            mpmath.mpf(kappa), probability)[0]
                    return mpmath.fsum(value) if reduction == "none" else value
                assert abs(mpmath.mpf(ref.grad[r][q]) - mpmath.diff(total, 0)) <= tol


def test_option_conventions():
    inf = mpmath.inf
    # soft-capping keeps -inf (gradient 0 there); probability targets of 0 on it: finite loss
    ref = evaluate.reference_options([[0.0, -inf, 1.0]], [[0.5, 0.0, 0.5]], n_classes=3,
                                     reduction="sum", softcap=2.0, z_loss=0.5)
    assert ref.grad[0][1] == "0.0" and ref.loss != "inf"
    plain = evaluate.reference_options([[0.0, -inf, 1.0]], [[0.5, 0.0, 0.5]], n_classes=3,
                                       reduction="sum")
    assert plain.grad[0][1] == "0.0" and plain.loss not in ("inf", "nan")
    smooth = evaluate.reference_options([[0.0, -inf, 1.0]], [[0.5, 0.0, 0.5]], n_classes=3,
                                        reduction="sum", label_smoothing=0.25)
    with mpmath.workdps(40):
        assert smooth.loss == "inf"
        assert smooth.grad[0][1] == evaluate.format_value(-mpmath.mpf(0.25) / 3)
    # every row ignored: mean NaN (loss and z), zero gradient; lse of every row
    ignored = evaluate.reference_options([[1.0, 2.0]], [-100], n_classes=2, reduction="mean",
                                         z_loss=0.5)
    assert (ignored.loss, ignored.z, ignored.grad) == ("nan", "nan", [["0.0", "0.0"]])
    with mpmath.workdps(40):
        assert ignored.lse == [evaluate.format_value(mpmath.log(mpmath.e + mpmath.e ** 2))]
    # "mean": the z part divided by the number of counted rows, the CE part by sum w_y
    two = evaluate.reference_options([[0.0, 0.0], [0.0, 0.0]], [0, 1], n_classes=2,
                                     reduction="mean", weight=[1.0, 3.0], z_loss=1.0)
    with mpmath.workdps(40):
        assert two.z == evaluate.format_value(mpmath.log(2) ** 2)
        assert two.loss == evaluate.format_value(mpmath.log(2) + mpmath.log(2) ** 2)
        # probability targets: both parts divided by N
        prob = evaluate.reference_options([[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 2.0]],
                                          n_classes=2, reduction="mean", z_loss=1.0)
        assert prob.loss == evaluate.format_value(3 * mpmath.log(2) / 2 + mpmath.log(2) ** 2)


def test_options_cases_check_reports_a_stale_file(tmp_path, monkeypatch, capsys):
    from symbolic import cases_options
    monkeypatch.setattr(cases_options, "render", lambda: b'{"cases": []}\n')
    target = tmp_path / "reference_cases_options.json"
    assert cases_options.main(["--check", "--output", str(target)]) == 1  # missing
    assert cases_options.main(["--output", str(target)]) == 0
    assert cases_options.main(["--check", "--output", str(target)]) == 0
    target.write_bytes(b'{"cases": [1]}\n')
    assert cases_options.main(["--check", "--output", str(target)]) == 1
    assert "python -m symbolic.cases_options" in capsys.readouterr().err


def test_options_inputs_are_rounded_to_the_dtype_before_evaluation():
    from symbolic import cases_options
    spec = cases_options.OptionCase("t", "t", lambda rng, dtype: ([[0.1, 0.2]], [[0.3, 0.7]]), 2,
                                    probability=True, z_loss={"float32": 0.5, "float64": 0.5},
                                    softcap=2.0)
    case = cases_options.build_case(spec, "float32", "sum", random.Random(0))
    assert case["scores"] == [["0.10000000149011612", "0.20000000298023224"]]
    assert case["labels"] == [["0.30000001192092896", "0.699999988079071"]]
    exact = evaluate.reference_options([[0.10000000149011612, 0.20000000298023224]],
                                       [[0.30000001192092896, 0.699999988079071]], n_classes=2,
                                       reduction="sum", z_loss=0.5, softcap=2.0)
    assert (case["expected"]["loss"], case["expected"]["z"]) == (exact.loss, exact.z)
    assert case["expected"]["lse"] == exact.lse and case["expected"]["grad"] == exact.grad


# --------------------------------------------------------------------------
# The evaluator of the linear layer and the classifier
# --------------------------------------------------------------------------
def _direct_linear(x, W, b, targets, reduction, weight, eps, lam, kappa, probability,
                   classifier=False, reg=0.0):
    """The fused layer's (or the classifier's) loss transcribed directly into mpmath:
    the logits as sums of products, then :func:`_direct_options`."""
    if classifier:  # scores = X W + b, W (D, C)
        W = [list(col) for col in zip(*W)]
    mp = mpmath.mpf  # exact: never a float product
    logits = [[mpmath.fsum(mp(a) * mp(v) for a, v in zip(row, Wv)) + mp(bv)
               for Wv, bv in zip(W, b)] for row in x]
    loss = _direct_options(logits, targets, reduction, weight, eps, lam, kappa, probability)[0]
    if classifier:
        loss += reg / 2 * mpmath.fsum(mp(v) ** 2 for Wv in W for v in Wv)
    return mpmath.fsum(loss) if reduction == "none" else loss


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("probability", [False, True], ids=["index", "probability"])
def test_linear_evaluator_matches_definition_and_derivative(reduction, probability):
    """reference_linear: the loss is the options' loss of x W^T + b, and each gradient
    (input, weight, bias) the numerical derivative of the summed loss (mpmath.diff)."""
    rng = random.Random(13)
    x = [[rng.uniform(-2, 2) for _ in range(2)] for _ in range(3)]
    W = [[rng.uniform(-2, 2) for _ in range(2)] for _ in range(4)]
    b = [rng.uniform(-1, 1) for _ in range(4)]
    targets = ([[rng.uniform(0, 1) for _ in range(4)] for _ in range(3)] if probability
               else [2, -100, 0])
    options = dict(weight=[0.5, 2.0, 1.25, 3.0], label_smoothing=0.1, z_loss=0.3, softcap=1.5)
    ref = evaluate.reference_linear(x, W, b, targets, reduction=reduction, **options)
    tol = mpmath.mpf(10) ** -18
    args = (reduction, options["weight"], 0.1, 0.3, mpmath.mpf(1.5), probability)
    with mpmath.workdps(40):
        loss = _direct_linear(x, W, b, targets, *args)
        got = mpmath.fsum(mpmath.mpf(v) for v in ref.loss) if reduction == "none" \
            else mpmath.mpf(ref.loss)
        assert abs(got - loss) <= tol * (1 + abs(loss))
        for name, array, grads in (("x", x, ref.grad_input), ("W", W, ref.grad_linear_weight),
                                   ("b", [b], [ref.grad_linear_bias])):
            for r, row in enumerate(array):
                for q in range(len(row)):
                    def total(t, name=name, r=r, q=q):
                        moved = {"x": [list(v) for v in x], "W": [list(v) for v in W],
                                 "b": [list(b)]}
                        moved[name][r][q] = moved[name][r][q] + t
                        return _direct_linear(moved["x"], moved["W"], moved["b"][0], targets,
                                              *args)
                    assert abs(mpmath.mpf(grads[r][q]) - mpmath.diff(total, 0)) <= tol, \
                        (name, r, q)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_classifier_evaluator_matches_definition_and_derivative(reduction):
    """reference_classifier: loss = cross-entropy of X W + b plus reg/2 sum W^2; dW and
    db are its numerical derivatives."""
    rng = random.Random(17)
    X = [[rng.uniform(-2, 2) for _ in range(3)] for _ in range(4)]
    W = [[rng.uniform(-1, 1) for _ in range(3)] for _ in range(3)]  # (D, C)
    b = [rng.uniform(-1, 1) for _ in range(3)]
    y, reg = [2, 0, -100, 1], 0.75
    ref = evaluate.reference_classifier(X, W, b, y, reg=reg, reduction=reduction,
                                        weight=[0.5, 2.0, 1.25], label_smoothing=0.1)
    tol = mpmath.mpf(10) ** -18
    args = (reduction, [0.5, 2.0, 1.25], 0.1, 0.0, None, False, True, mpmath.mpf(reg))
    with mpmath.workdps(40):
        loss = _direct_linear(X, W, b, y, *args)
        assert abs(mpmath.mpf(ref.loss) - loss) <= tol * (1 + abs(loss))
        for name, array, grads in (("W", W, ref.dW), ("b", [b], [ref.db])):
            for r, row in enumerate(array):
                for q in range(len(row)):
                    def total(t, name=name, r=r, q=q):
                        moved = {"W": [list(v) for v in W], "b": [list(b)]}
                        moved[name][r][q] = moved[name][r][q] + t
                        return _direct_linear(X, moved["W"], moved["b"][0], y, *args)
                    assert abs(mpmath.mpf(grads[r][q]) - mpmath.diff(total, 0)) <= tol, \
                        (name, r, q)


def test_linear_cases_check_reports_a_stale_file(tmp_path, monkeypatch, capsys):
    from symbolic import cases_linear
    monkeypatch.setattr(cases_linear, "render", lambda: b'{"cases": []}\n')
    target = tmp_path / "reference_cases_linear.json"
    assert cases_linear.main(["--check", "--output", str(target)]) == 1  # missing
    assert cases_linear.main(["--output", str(target)]) == 0
    assert cases_linear.main(["--check", "--output", str(target)]) == 0
    target.write_bytes(b'{"cases": [1]}\n')
    assert cases_linear.main(["--check", "--output", str(target)]) == 1
    assert "python -m symbolic.cases_linear" in capsys.readouterr().err


def test_linear_inputs_are_rounded_to_the_dtype_before_evaluation():
    from symbolic import cases_linear
    spec = cases_linear.LinearCase("t", "t", (2,), 2, 3, x_scale=0.3)
    case = cases_linear.build_case(spec, "float32", "sum", random.Random(0))
    stored = [[float(v) for v in row] for row in case["input"]]
    assert all(float(np.float32(v)) == v for row in stored for v in row)
    weight = [[float(v) for v in row] for row in case["linear_weight"]]
    bias = [float(v) for v in case["linear_bias"]]
    exact = evaluate.reference_linear(stored, weight, bias, case["target"], reduction="sum")
    assert case["expected"]["loss"] == exact.loss
    assert case["expected"]["grad_linear_weight"] == exact.grad_linear_weight
    unrounded = cases_linear.build_case(spec, "float64", "sum", random.Random(0))
    assert unrounded["input"] != case["input"]  # the same draw, not rounded
