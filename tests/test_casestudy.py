"""The CS231n case study: outcomes with the default seed, agreement with the notes' own
NumPy loops, and the command line (including --plot)."""

import subprocess
import sys

import numpy as np
import pytest

from cysoftmax import casestudy
from cysoftmax.datasets import spiral
from cysoftmax.models import SoftmaxClassifier, TwoLayerNet


@pytest.fixture(scope="module")
def result():
    """Both full runs (200 + 10 000 iterations) with the default seed, once."""
    return casestudy.run(casestudy.DEFAULT_SEED, verbose=False)


def test_default_seed_is_documented():
    assert casestudy.DEFAULT_SEED == 1278
    assert "DEFAULT_SEED" in casestudy.__doc__


def test_linear_classifier_lands_near_the_notes(result):
    hist = result["linear"].loss_history_
    assert hist.shape == (200,)
    assert hist[0] == pytest.approx(1.097, abs=0.002)  # notes: 1.096956
    assert hist[190] == pytest.approx(0.786, abs=0.01)  # notes: 0.786 at iteration 190
    assert np.all(np.diff(hist) < 0)
    assert 0.45 <= result["linear_accuracy"] <= 0.55  # notes: 0.49


def test_two_layer_net_lands_near_the_notes(result):
    hist = result["two_layer"].loss_history_
    assert hist.shape == (10_000,)
    assert hist[0] == pytest.approx(1.099, abs=0.002)  # notes: 1.098...
    assert hist[9000] == pytest.approx(0.245, abs=0.01)  # notes: 0.245 at iteration 9000
    assert hist[-1] < 0.26
    assert result["two_layer_accuracy"] >= 0.97  # notes: 0.98


def test_summary_table_has_both_columns(result):
    text = casestudy.format_summary(result)
    assert "cysoftmax" in text and "notes" in text
    assert "loss at iteration 190" in text and "loss at iteration 9000" in text
    assert "0.786" in text and "0.245" in text and "0.980" in text


def test_run_uses_the_notes_hyper_parameters(result):
    lin, net = result["linear"], result["two_layer"]
    assert lin.solver == "sgd" and net.solver == "sgd"  # the notes' gradient descent
    assert lin.random_state == net.random_state == casestudy.DEFAULT_SEED
    assert lin.n_iter_ == 200 and net.n_iter_ == 10_000
    assert (lin.learning_rate, lin.reg, lin.max_iter) == (1.0, 1e-3, 200)
    assert (net.hidden_size, net.learning_rate, net.reg, net.max_iter) == (100, 1.0, 1e-3, 10_000)
    assert net.batch_size is None and lin.batch_size is None
    assert result["X"].shape == (300, 2)


# ---------------------------------------------------------------- the notes' loops


def test_softmax_classifier_follows_the_notes_numpy_loop():
    X, y = spiral(seed=casestudy.DEFAULT_SEED)
    W, b, losses = casestudy.notes_softmax_numpy(X, y, seed=5)
    clf = SoftmaxClassifier(solver="sgd", learning_rate=1.0, random_state=5).fit(X, y)
    np.testing.assert_allclose(clf.loss_history_, losses, rtol=1e-12)
    np.testing.assert_allclose(clf.W_, W, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(clf.b_, b, rtol=1e-10, atol=1e-13)


def test_two_layer_net_follows_the_notes_numpy_loop():
    """Same data, same initial weights: the compiled loop and the notes' plain NumPy
    loop give the same loss trajectory up to rounding (they drift apart only slowly,
    through the loss spikes of step size 1.0, so 1000 iterations are compared)."""
    X, y = spiral(seed=casestudy.DEFAULT_SEED)
    n = 1000
    W1, b1, W2, b2, losses = casestudy.notes_two_layer_numpy(X, y, seed=3, max_iter=n)
    net = TwoLayerNet(solver="sgd", learning_rate=1.0, random_state=3, max_iter=n).fit(X, y)
    assert losses[0] == pytest.approx(np.log(3), abs=1e-3)
    assert losses[-1] < 0.5  # it has learned something by then
    np.testing.assert_allclose(net.loss_history_, losses, rtol=1e-9)
    for ours, theirs in ((net.W1_, W1), (net.b1_, b1), (net.W2_, W2), (net.b2_, b2)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-9)


def test_notes_loops_are_seeded_like_the_models():
    X, y = spiral(n_per_class=10, seed=0)
    *_, a = casestudy.notes_two_layer_numpy(X, y, seed=1, max_iter=3, hidden_size=4)
    *_, b = casestudy.notes_two_layer_numpy(X, y, seed=1, max_iter=3, hidden_size=4)
    *_, c = casestudy.notes_two_layer_numpy(X, y, seed=2, max_iter=3, hidden_size=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ---------------------------------------------------------------- command line


@pytest.fixture
def short_runs(monkeypatch):
    """Make the command-line tests quick: few iterations."""
    monkeypatch.setattr(casestudy, "LINEAR_ITERATIONS", 20)
    monkeypatch.setattr(casestudy, "TWO_LAYER_ITERATIONS", 50)


def test_main_prints_progress_and_the_comparison(short_runs, capsys):
    assert casestudy.main(["--seed", "3", "--compare-numpy"]) == 0
    out = capsys.readouterr().out
    assert "seed 3" in out
    assert "SoftmaxClassifier iteration 10: loss" in out
    assert "TwoLayerNet iteration 0: loss" in out
    assert "training accuracy" in out
    assert "notes" in out and "cysoftmax" in out
    assert "notes' NumPy loop, same data and init" in out
    assert "max loss difference" in out


def test_main_plot_writes_a_png(short_runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "case.png"
    assert casestudy.main(["--plot", str(path)]) == 0
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    assert f"wrote {path}" in capsys.readouterr().out


def _argument_error(argv, capsys):
    """The stderr of main(argv), which must stop with argparse's status 2 before any work."""
    with pytest.raises(SystemExit) as info:
        casestudy.main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # it stopped before training
    assert "usage:" in captured.err and "error: argument" in captured.err
    return captured.err


def test_main_plot_without_matplotlib_fails_clearly(short_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    path = tmp_path / "case.png"
    err = _argument_error(["--plot", str(path)], capsys)
    assert "--plot" in err and "matplotlib" in err and "pip install" in err
    assert not path.exists()


@pytest.mark.parametrize(
    "value, words",
    [("-1", "seed must be >= 0, got -1"), ("abc", "seed must be an integer, got 'abc'"),
     ("1.5", "seed must be an integer, got '1.5'")],
    ids=["negative", "word", "float"],
)
def test_main_refuses_a_bad_seed_before_any_work(value, words, capsys):
    err = _argument_error(["--seed", value], capsys)
    assert f"argument --seed: {words}" in err


def test_main_checks_the_plot_path_before_any_work(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    missing = tmp_path / "missing" / "case.png"
    err = _argument_error(["--plot", str(missing)], capsys)
    assert f"argument --plot: the directory {missing.parent} does not exist" in err
    err = _argument_error(["--plot", str(tmp_path)], capsys)
    assert "is a directory" in err
    err = _argument_error(["--plot", str(tmp_path / "case.docx")], capsys)
    assert "matplotlib cannot write .docx files; use .png" in err
    assert "the file name is empty" in _argument_error(["--plot", ""], capsys)
    # (a permission check, which root passes anyway: as the operating system answers)
    monkeypatch.setattr(casestudy.os, "access", lambda path, mode: False)
    err = _argument_error(["--plot", str(tmp_path / "case.png")], capsys)
    assert f"argument --plot: {tmp_path} is not writable" in err
    assert list(tmp_path.iterdir()) == []


def test_bad_seed_on_the_command_line_exits_2_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cysoftmax.casestudy", "--seed", "-1"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert "error: argument --seed: seed must be >= 0" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_module_runs_as_a_script(tmp_path):
    # cwd away from the source tree, so the installed package is the one imported
    proc = subprocess.run([sys.executable, "-m", "cysoftmax.casestudy", "--help"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0
    assert "--seed" in proc.stdout and "--plot" in proc.stdout


def test_bad_command_line_argument():
    with pytest.raises(SystemExit) as info:
        casestudy.main(["--seed", "abc"])
    assert info.value.code == 2
