"""Memory safety: no argument, alias or concurrent change crashes a call or makes it wrong.

The kernels index scores, gradient and weights with the labels, and read labels and
weights after they have begun writing the gradient.  They read private copies of both,
made and range-checked inside the compiled call, so:

* a label or weight buffer of any kind (ndarray, memoryview, array.array) that shares
  memory with ``out`` gives the same result as an unshared one;
* another thread changing the labels during a call gets an ``IndexError`` or a result,
  never an out-of-bounds access.

Each known reproducer is a test here; the expected values come from the float64 NumPy
reference (``tests/reference.py``) evaluated on copies taken before the call.
"""

import array
import subprocess
import sys
import tempfile
import textwrap
import warnings

import numpy as np
import pytest

import cysoftmax
import fuzz_api
import reference

TOL = reference.REFERENCE_TOL


def _as_buffer(kind, arr):
    """arr's memory (not a copy) as a buffer of another kind than ndarray."""
    if kind == "memoryview":
        return memoryview(arr)
    if kind == "ndarray":
        return arr
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["ndarray", "memoryview"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("n_classes", [3, 17, 40], ids=lambda c: f"C{c}")
def test_labels_sharing_memory_with_out(dtype, n_classes, reduction, kind):
    """Labels written over by the gradient while the kernels run (it crashed with a
    memoryview: the labels were re-read after rows of out had been written)."""
    rng = np.random.default_rng(n_classes)
    n = 64
    s = rng.normal(size=(n, n_classes)).astype(dtype)
    labels = rng.integers(0, n_classes, n)
    want_loss, want_grad = reference.cross_entropy(s, labels, reduction=reduction)
    out = np.zeros_like(s)
    shared = out.reshape(-1).view(np.int64)[:n]  # the first rows of out
    shared[:] = labels
    loss, grad = cysoftmax.softmax_cross_entropy(s, _as_buffer(kind, shared), out=out,
                                                 reduction=reduction)
    assert grad is out
    np.testing.assert_allclose(loss, want_loss, **TOL[dtype])
    np.testing.assert_allclose(grad, want_grad, **TOL[dtype])


@pytest.mark.parametrize("kind", ["ndarray", "memoryview"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("n_classes", [4, 40], ids=lambda c: f"C{c}")
def test_weight_sharing_memory_with_out(n_classes, smoothing, kind):
    """The reproducer: a memoryview weight of out gave a loss of 11.21 for 112.82."""
    rng = np.random.default_rng(0)
    n = 64
    s = rng.normal(size=(n, n_classes))
    y = rng.integers(0, n_classes, n)
    out = np.zeros((n, n_classes))
    w = out.reshape(-1)[:n_classes]
    w[:] = np.linspace(0.5, 2.0, n_classes)
    want_loss, want_grad = reference.cross_entropy(s, y, reduction="sum", weight=w.copy(),
                                                   label_smoothing=smoothing)
    loss, grad = cysoftmax.softmax_cross_entropy(s, y, weight=_as_buffer(kind, w), out=out,
                                                 reduction="sum", label_smoothing=smoothing)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-16)


def test_the_weight_reproducer_value():
    """The issue's reproducer, as the fuzzer's known case builds it."""
    args = fuzz_api.KNOWN["weight-memoryview-of-out"]().args
    s, y = args["scores"].copy(), args["labels"].copy()
    loss = cysoftmax.softmax_cross_entropy(**args)[0]
    assert loss == pytest.approx(reference.cross_entropy(s, y, reduction="sum")[0], rel=1e-13)
    assert loss == pytest.approx(112.82, abs=0.005)


def test_array_array_labels_sharing_memory_with_out():
    """A buffer that is neither ndarray nor memoryview, shared with out through NumPy."""
    labels = array.array("q", [1] * 8 + [0] * 8)
    out = np.frombuffer(labels, dtype=np.float64).reshape(4, 4)  # writeable, same memory
    s = np.arange(16.0).reshape(4, 4) / 7
    want_loss, want_grad = reference.cross_entropy(s, np.array(labels[:4]))
    loss, grad = cysoftmax.softmax_cross_entropy(s, memoryview(labels)[:4], out=out)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-16)


def _run_python(code, timeout=240):
    """Run code in a fresh interpreter (away from the source tree: the installed package)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, cwd=tempfile.gettempdir())
    assert proc.returncode == 0, (
        f"exit code {proc.returncode} (negative: killed by that signal)\n{proc.stderr[-3000:]}")
    return proc.stdout


def test_the_label_race_reproducer_does_not_crash():
    """Another thread sets a label out of range during a long call (it segfaulted: the
    labels were range-checked, then read again without the GIL)."""
    out = _run_python("""
        import numpy as np, cysoftmax, threading, time
        s = np.zeros((50_000, 1000), np.float32); y = np.zeros(50_000, np.int64)
        results = []
        for delay in (0.0, 0.002, 0.005, 0.01, 0.02):
            y[:] = 0
            def mutate():
                time.sleep(delay); y[-1] = 1 << 40
            t = threading.Thread(target=mutate); t.start()
            try:
                results.append(float(cysoftmax.cross_entropy(s, y, num_threads=1)))
            except IndexError as exc:
                assert "labels[49999] = 1099511627776" in str(exc), exc
                results.append("IndexError")
            t.join()
        print(results)
    """)
    for r in eval(out):  # noqa: S307 (our own subprocess's list of floats and strings)
        assert r == "IndexError" or r == pytest.approx(np.log(1000), rel=1e-6)


@pytest.mark.parametrize("n_classes", [5, 300], ids=lambda c: f"C{c}")
def test_labels_flipping_during_calls_never_crash(n_classes):
    """A thread flips labels between valid and far out of range while calls run on both
    the small-C and the large-C kernels, with and without weights, one and two threads."""
    out = _run_python(f"""
        import numpy as np, cysoftmax, threading
        C = {n_classes}
        n = 400_000 // C
        s = np.random.default_rng(0).normal(size=(n, C)).astype(np.float32)
        y = np.zeros(n, np.int64)
        w = np.ones(C)
        stop = False
        def flip():  # every label valid, then every label far out of range, ...
            i = 0
            while not stop:
                y[:] = 1
                y[:] = (1 << 40) if i % 2 else -(1 << 50)
                i += 1
        t = threading.Thread(target=flip); t.start()
        errors = ok = 0
        try:
            for k in range(60):
                try:
                    kw = dict(weight=w) if k % 2 else dict()
                    loss, grad = cysoftmax.softmax_cross_entropy(
                        s, y, num_threads=1 + k % 2, out=None, **kw)
                    assert np.isfinite(loss) and np.isfinite(grad).all()
                    ok += 1
                except IndexError:
                    errors += 1
        finally:
            stop = True
            t.join()
        print(ok, errors)
    """)
    ok, errors = map(int, out.split())
    assert ok + errors == 60


@pytest.mark.parametrize("n_classes", [3, 21], ids=lambda c: f"C{c}")
def test_opposite_scores_near_float32_max_with_smoothing_stay_finite(dtype, n_classes):
    """The smoothing sum of w_c (f_c - max f) overflowed in float32 (3e38 - -3e38): the
    exact loss of the reproducer is 0.1 / 3 * 9e38 = 3e37."""
    big = float(np.finfo(np.float32).max) * 0.99
    s = np.zeros((2, n_classes), dtype)
    s[0, :3] = [big, -big, 0.0]
    s[1, :3] = [-big, 0.0, big]
    labels = [0, 2]
    want_loss, want_grad = reference.cross_entropy(s, labels, reduction="none",
                                                   label_smoothing=0.1)
    assert np.isfinite(want_loss).all() and want_loss.max() < 3e38  # float32 holds it
    with np.errstate(all="raise"):
        loss, grad = cysoftmax.softmax_cross_entropy(s, labels, reduction="none",
                                                     label_smoothing=0.1)
        loss_only = cysoftmax.cross_entropy(s, labels, reduction="none", label_smoothing=0.1)
    np.testing.assert_allclose(loss, want_loss, **TOL[dtype])
    np.testing.assert_array_equal(loss_only, loss)
    np.testing.assert_allclose(grad, want_grad, **TOL[dtype])


def test_the_float32_smoothing_reproducer_value():
    loss = cysoftmax.cross_entropy(np.array([[3e38, -3e38, 0.0]], np.float32), [0],
                                   label_smoothing=0.1, reduction="none")
    f = np.array([3e38, -3e38, 0.0], np.float32).astype(np.float64)
    exact = 0.1 / 3 * float(np.sum(f.max() - f))  # log s = 0 exactly here
    assert loss[0] == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("n_classes", [3, 20], ids=lambda c: f"C{c}")
def test_weights_whose_sum_overflows_give_finite_results(n_classes, smoothing):
    """Weights of 1e308 made sum(w) = inf, and 0 * inf = NaN gradients without smoothing."""
    # (with smoothing, sum_c w_c |f_c - max f| must stay within float64's range too)
    s = np.array([[0.0, 1.0, 2.0] + [0.5] * (n_classes - 3),
                  [1.0, 0.0, -1.0] + [0.25] * (n_classes - 3)]) / 64
    w = np.full(n_classes, np.finfo(np.float64).max / n_classes * 1.5)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.sum(w))
    with np.errstate(all="raise"):
        loss, grad = cysoftmax.softmax_cross_entropy(s, [0, 2], weight=w, reduction="none",
                                                     label_smoothing=smoothing)
    want_loss, want_grad = reference.cross_entropy(s, [0, 2], weight=w, reduction="none",
                                                   label_smoothing=smoothing)
    assert np.isfinite(want_loss).all() and np.isfinite(want_grad).all()
    np.testing.assert_allclose(loss, want_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12)


def test_the_huge_weight_reproducer_gradient_is_finite():
    loss, grad = cysoftmax.softmax_cross_entropy([[0., 1., 2.], [1., 0., -1.]], [0, 2],
                                                 weight=[1e308] * 3, reduction="sum")
    assert np.isfinite(grad).all()
    assert loss == np.inf  # the exact sum, 1e308 * 2 * 2.4076, is beyond float64's range


def test_long_double_weight_beyond_float64_raises_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="weight must be finite"):
            cysoftmax.cross_entropy(np.zeros((1, 5)), [0],
                                    weight=np.full(5, np.finfo(np.longdouble).max))
