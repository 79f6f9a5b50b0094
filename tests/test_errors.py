"""Bad input: a clear TypeError / ValueError / IndexError naming the argument; and the
awkward-but-valid inputs that must be accepted with the right answer."""

import numpy as np
import pytest

import cysoftmax
import reference

S = np.random.default_rng(0).normal(size=(4, 3))
Y = np.array([0, 1, 2, 1])


def ro(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# (id, call, exception, words the message must contain)
BAD = [
    ("scores-0d", lambda: cysoftmax.softmax_cross_entropy(np.float64(1.0), 0), ValueError, "scores"),
    ("scores-C0", lambda: cysoftmax.softmax_cross_entropy(np.zeros((4, 0)), Y), ValueError, "C = 0"),
    ("scores-int", lambda: cysoftmax.softmax_cross_entropy(np.ones((4, 3), int), Y), TypeError, "scores"),
    ("scores-intlist", lambda: cysoftmax.cross_entropy([[1, 2, 3]], [0]), TypeError, "scores"),
    ("scores-bool", lambda: cysoftmax.softmax_cross_entropy(S > 0, Y), TypeError, "scores"),
    ("scores-complex", lambda: cysoftmax.softmax_cross_entropy(S + 0j, Y), TypeError, "scores"),
    ("scores-object", lambda: cysoftmax.softmax_cross_entropy(S.astype(object), Y), TypeError, "scores"),
    ("scores-float16", lambda: cysoftmax.softmax_cross_entropy(S.astype(np.float16), Y), TypeError, "scores"),
    ("scores-str", lambda: cysoftmax.softmax("abc"), TypeError, "scores"),
    ("softmax-0d", lambda: cysoftmax.softmax(1.0), ValueError, "scores"),
    ("log_softmax-int", lambda: cysoftmax.log_softmax([1, 2]), TypeError, "scores"),
    ("labels-shape", lambda: cysoftmax.softmax_cross_entropy(S, Y[:3]), ValueError, "labels"),
    ("labels-2d", lambda: cysoftmax.softmax_cross_entropy(S, Y[:, None]), ValueError, "labels"),
    ("labels-float", lambda: cysoftmax.softmax_cross_entropy(S, Y.astype(float)), TypeError, "labels"),
    ("labels-bool", lambda: cysoftmax.softmax_cross_entropy(S, Y > 0), TypeError, "labels"),
    ("labels-str", lambda: cysoftmax.softmax_cross_entropy(S, ["a", "b", "c", "d"]), TypeError, "labels"),
    ("labels-high", lambda: cysoftmax.softmax_cross_entropy(S, [0, 1, 3, 0]), IndexError, "labels[2] = 3"),
    ("labels-negative", lambda: cysoftmax.softmax_cross_entropy(S, [0, -1, 0, 0]), IndexError, "labels[1] = -1"),
    ("labels-huge-int64", lambda: cysoftmax.softmax_cross_entropy(S, [0, 2**62, 0, 0]), IndexError, "labels"),
    ("labels-huge-uint64", lambda: cysoftmax.softmax_cross_entropy(
        S, np.array([0, 2**64 - 100, 0, 0], dtype=np.uint64)), IndexError, "labels[1]"),
    ("labels-huge-python", lambda: cysoftmax.softmax_cross_entropy(S, [0, 2**70, 0, 0]), IndexError, "labels"),
    ("labels-nd-index", lambda: cysoftmax.cross_entropy(np.zeros((2, 2, 3)), [[0, 1], [5, 0]]),
     IndexError, "labels[1, 0] = 5"),
    ("labels-loss-only", lambda: cysoftmax.cross_entropy(S, [0, 1, 9, 0]), IndexError, "labels[2] = 9"),
    ("weight-length", lambda: cysoftmax.softmax_cross_entropy(S, Y, weight=[1, 2]), ValueError, "weight"),
    ("weight-2d", lambda: cysoftmax.softmax_cross_entropy(S, Y, weight=np.ones((3, 1))), ValueError, "weight"),
    ("weight-nan", lambda: cysoftmax.softmax_cross_entropy(S, Y, weight=[1, np.nan, 1]), ValueError, "weight"),
    ("weight-complex", lambda: cysoftmax.softmax_cross_entropy(S, Y, weight=[1j, 1, 1]), TypeError, "weight"),
    ("smoothing-neg", lambda: cysoftmax.softmax_cross_entropy(S, Y, label_smoothing=-0.1), ValueError, "label_smoothing"),
    ("smoothing-big", lambda: cysoftmax.softmax_cross_entropy(S, Y, label_smoothing=1.5), ValueError, "label_smoothing"),
    ("smoothing-nan", lambda: cysoftmax.softmax_cross_entropy(S, Y, label_smoothing=float("nan")), ValueError, "label_smoothing"),
    ("smoothing-str", lambda: cysoftmax.softmax_cross_entropy(S, Y, label_smoothing="0.1"), TypeError, "label_smoothing"),
    ("reduction-unknown", lambda: cysoftmax.softmax_cross_entropy(S, Y, reduction="avg"), ValueError, "reduction"),
    ("reduction-none-obj", lambda: cysoftmax.cross_entropy(S, Y, reduction=None), ValueError, "reduction"),
    ("ignore-float", lambda: cysoftmax.softmax_cross_entropy(S, Y, ignore_index=1.5), TypeError, "ignore_index"),
    ("ignore-bool", lambda: cysoftmax.softmax_cross_entropy(S, Y, ignore_index=True), TypeError, "ignore_index"),
    ("ignore-huge", lambda: cysoftmax.softmax_cross_entropy(S, Y, ignore_index=2**70), ValueError, "ignore_index"),
    ("out-shape", lambda: cysoftmax.softmax_cross_entropy(S, Y, out=np.empty((3, 4))), ValueError, "out"),
    ("out-dtype", lambda: cysoftmax.softmax_cross_entropy(S, Y, out=np.empty((4, 3), np.float32)), TypeError, "out"),
    ("out-layout", lambda: cysoftmax.softmax_cross_entropy(S, Y, out=np.empty((4, 3), order="F")), ValueError, "out"),
    ("out-readonly", lambda: cysoftmax.softmax_cross_entropy(S, Y, out=ro(np.empty((4, 3)))), ValueError, "out"),
    ("out-list", lambda: cysoftmax.softmax_cross_entropy(S, Y, out=[[0.0] * 3] * 4), TypeError, "out"),
    ("softmax-out-shape", lambda: cysoftmax.softmax(S, out=np.empty(3)), ValueError, "out"),
    ("log_softmax-out-dtype", lambda: cysoftmax.log_softmax(S, out=np.empty((4, 3), np.float32)), TypeError, "out"),
    ("threads-zero", lambda: cysoftmax.softmax_cross_entropy(S, Y, num_threads=0), ValueError, "num_threads"),
    ("threads-negative", lambda: cysoftmax.cross_entropy(S, Y, num_threads=-2), ValueError, "num_threads"),
    ("threads-float", lambda: cysoftmax.softmax(S, num_threads=2.0), TypeError, "num_threads"),
    ("threads-bool", lambda: cysoftmax.softmax(S, num_threads=True), TypeError, "num_threads"),
    ("positional-options", lambda: cysoftmax.softmax_cross_entropy(S, Y, "sum"), TypeError, None),
    ("labels-one-sample", lambda: cysoftmax.cross_entropy(np.zeros(3), 5), IndexError, "labels = 5 "),
    ("labels-object-mixed-huge", lambda: cysoftmax.cross_entropy(
        S, np.array([np.int64(0), 2**70, 0, 0], dtype=object)), IndexError, f"labels[1] = {2**70} "),
    ("labels-object-float", lambda: cysoftmax.cross_entropy(
        S, np.array([0, 1.5, 0, 0], dtype=object)), TypeError, "labels"),
    ("labels-object-bool", lambda: cysoftmax.cross_entropy(
        S, np.array([0, True, 0, 0], dtype=object)), TypeError, "labels"),
    ("scores-masked", lambda: cysoftmax.softmax_cross_entropy(np.ma.masked_less(S, 0), Y),
     TypeError, "scores is a masked array"),
    ("softmax-masked", lambda: cysoftmax.softmax(np.ma.masked_less(S, 0)), TypeError, "scores"),
    ("labels-masked", lambda: cysoftmax.cross_entropy(S, np.ma.masked_equal(Y, 1)),
     TypeError, "labels is a masked array"),
    ("weight-masked", lambda: cysoftmax.cross_entropy(S, Y, weight=np.ma.masked_equal([1., 2., 3.], 2)),
     TypeError, "weight is a masked array"),
    ("out-masked", lambda: cysoftmax.softmax_cross_entropy(S, Y, out=np.ma.zeros((4, 3))), TypeError, "out"),
    ("labels-list-beyond-int64", lambda: cysoftmax.cross_entropy(S, [0, 2**63, 0, 0]),
     IndexError, f"labels[1] = {2**63} "),
    ("labels-list-uint64-max", lambda: cysoftmax.cross_entropy(S, [-100, 2**64 - 1, 0, 0]),
     IndexError, f"labels[1] = {2**64 - 1} "),
    ("labels-list-floats", lambda: cysoftmax.cross_entropy(S, [0.0, 1.0, 2.0, 1.0]), TypeError, "labels"),
    ("scores-ragged", lambda: cysoftmax.softmax([[0.0], [1.0, 2.0]]), ValueError, "scores"),
    ("labels-ragged", lambda: cysoftmax.cross_entropy(np.zeros((2, 3)), [[0], [1, 2]]),
     ValueError, "labels"),
    ("weight-ragged", lambda: cysoftmax.cross_entropy(S, Y, weight=[[1.0], [1.0, 2.0]]),
     ValueError, "weight"),
    ("smoothing-overflow", lambda: cysoftmax.cross_entropy(S, Y, label_smoothing=10**400),
     ValueError, "label_smoothing"),
    ("smoothing-1d-array", lambda: cysoftmax.cross_entropy(S, Y, label_smoothing=np.array([0.1])),
     TypeError, "label_smoothing"),
]


@pytest.mark.parametrize("call, exc, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_raises_clearly(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    if words:
        assert words in str(info.value), str(info.value)


def test_out_overlapping_scores_is_refused():
    buf = np.zeros(13)
    scores = buf[:12].reshape(4, 3)
    out = buf[1:].reshape(4, 3)
    with pytest.raises(ValueError, match="overlaps"):
        cysoftmax.softmax_cross_entropy(scores, Y, out=out)


def test_errors_leave_out_and_inputs_untouched():
    scores = S.copy()
    out = np.full((4, 3), 5.0)
    with pytest.raises(IndexError):
        cysoftmax.softmax_cross_entropy(scores, [0, 1, 7, 0], out=out)
    np.testing.assert_array_equal(scores, S)
    assert np.all(out == 5.0)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                   np.uint32, np.uint64, np.intp, np.dtype(">i4")],
                         ids=lambda d: np.dtype(d).str)
def test_every_integer_label_dtype(dtype):
    loss, grad = cysoftmax.softmax_cross_entropy(S, Y.astype(dtype))
    want_loss, want_grad = reference.cross_entropy(S, Y)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-14)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-13, atol=1e-16)


def test_one_sample_and_python_inputs():
    loss, grad = cysoftmax.softmax_cross_entropy([1.0, 2.0, 3.0], 2)
    want_loss, want_grad = reference.cross_entropy(np.array([[1.0, 2.0, 3.0]]), [2])
    np.testing.assert_allclose(loss, want_loss, rtol=1e-14)
    np.testing.assert_allclose(grad, want_grad[0], rtol=1e-14)
    assert cysoftmax.cross_entropy([1.0, 2.0, 3.0], np.int8(2), reduction="none").shape == ()
    assert cysoftmax.cross_entropy([[1.0, 2.0, 3.0]], [np.uint64(2)]) == loss


def test_ignore_index_matching_a_uint_label_value():
    """ignore_index compares by value whatever the label dtype."""
    labels = np.array([0, 200, 2, 1], dtype=np.uint8)
    loss = cysoftmax.cross_entropy(S, labels, ignore_index=200, reduction="none")
    assert loss[1] == 0


def test_out_sharing_memory_with_labels_or_weight():
    """labels and weight are read after out is written: shared memory must not matter."""
    rng = np.random.default_rng(4)
    s = rng.random((64, 40))
    want_loss, want_grad = reference.cross_entropy(s, np.ones(64, dtype=int))
    out = np.zeros_like(s)
    y = out.reshape(-1).view(np.int64)[:64]
    y[:] = 1
    loss, grad = cysoftmax.softmax_cross_entropy(s, y, out=out)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-17)
    out2 = np.zeros_like(s)
    w = out2.reshape(-1)[:40]
    w[:] = 1
    loss, _ = cysoftmax.softmax_cross_entropy(s, [0] * 64, weight=w, out=out2, reduction="none")
    assert np.all(loss > 0)


def test_object_labels_of_numpy_and_python_integers():
    labels = np.array([np.int64(0), 1, np.uint8(2), -100], dtype=object)
    want = reference.cross_entropy(S, np.array([0, 1, 2, -100]))
    loss, grad = cysoftmax.softmax_cross_entropy(S, labels)
    np.testing.assert_allclose(loss, want[0], rtol=1e-14)
    np.testing.assert_allclose(grad, want[1], rtol=1e-14, atol=1e-300)


def test_zero_d_array_label_smoothing_is_its_value():
    for eps in (np.array(0.1), np.array(0.1, dtype=np.float32), np.float64(0.1)):
        got = cysoftmax.cross_entropy(S, Y, label_smoothing=eps)
        want = reference.cross_entropy(S, Y, label_smoothing=float(eps))[0]
        np.testing.assert_allclose(got, want, rtol=1e-14)


def test_memmap_out_receives_the_gradient(tmp_path):
    out = np.memmap(tmp_path / "grad.f64", dtype=np.float64, mode="w+", shape=S.shape)
    loss, grad = cysoftmax.softmax_cross_entropy(S, Y, weight=[1.0, 2.0, 3.0], out=out)
    assert grad is out
    want = reference.cross_entropy(S, Y, weight=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(np.asarray(out), want[1], rtol=1e-14, atol=1e-300)
    probs = cysoftmax.softmax(S, out=np.memmap(tmp_path / "p.f64", dtype=np.float64, mode="w+",
                                               shape=S.shape))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_float32_loss_beyond_float32_range_is_inf_without_warnings(reduction, weighted):
    # The loss is summed in double; beyond float32's range it is +inf, like torch,
    # not a NumPy overflow warning (or an error under errstate(all="raise")).
    scores = np.array([[3e38, -3e38, 0.0], [0.0, 1.0, 2.0]], np.float32)
    kw = dict(reduction=reduction, weight=[1.0, 2.0, 3.0] if weighted else None)
    with np.errstate(all="raise"):
        loss = cysoftmax.cross_entropy(scores, [1, -100], **kw)  # the loss of row 0: 6e38
        loss2, _ = cysoftmax.softmax_cross_entropy(scores, [1, -100], **kw)
    assert loss.dtype == np.float32 and loss2.dtype == np.float32
    assert np.isinf(np.ravel(loss)[0]) and np.isinf(np.ravel(loss2)[0])


def test_num_threads_beyond_the_cpus_starts_no_more_threads(tmp_path):
    import subprocess
    import sys
    # Only the threads cysoftmax starts count: the process's threads before its first
    # parallel call (the BLAS pool, which OpenBLAS starts at import, among them) are
    # subtracted.  The calling thread is one of the team.
    code = """if True:
        import numpy as np, cysoftmax
        from cysoftmax import _kernels
        def threads():
            with open("/proc/self/status") as fh:
                return int(fh.read().split("Threads:")[1].split()[0])
        s = np.zeros((200000, 64), np.float32)
        y = np.zeros(200000, np.int64)
        before = threads()
        cysoftmax.cross_entropy(s, y, num_threads=5000)
        cysoftmax.softmax(s, num_threads=5000)
        print(threads() - before, _kernels.max_num_threads())
    """
    if not __import__("os").path.exists("/proc/self/status"):
        pytest.skip("needs /proc")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120, check=True)
    started, cap = map(int, out.stdout.split())
    assert started <= cap - 1, out.stdout


# ------------------------------------------------ the scalar and label-range checks


def test_check_scalar_types_ranges_and_names():
    from cysoftmax._validation import check_scalar

    assert check_scalar(np.int64(3), "n", "int", low=1) == 3
    assert type(check_scalar(np.int64(3), "n", "int")) is int
    assert check_scalar(np.array(2.5), "x", "real") == 2.5  # a 0-d array: its scalar
    assert check_scalar(None, "n", "int", allow_none=True) is None
    assert check_scalar(10**400, "x", "real") == float("inf")  # beyond float's range
    assert check_scalar(-(10**400), "x", "real") == float("-inf")
    for value, kind, words in [(True, "int", "n must be an integer, got a bool"),
                               (np.False_, "real", "n must be a real number, got a bool"),
                               (2.0, "int", "n must be an integer, got 2.0"),
                               ("1", "real", "n must be a real number, got '1'"),
                               (1.5, "int", "n must be None or an integer")]:
        with pytest.raises(TypeError, match=words):
            check_scalar(value, "n", kind, allow_none=words.endswith("integer"))
    for kwargs, value, words in [({"low": 1}, 0, "n must be >= 1, got 0"),
                                 ({"low": 0, "low_open": True}, 0.0, "n must be > 0, got 0.0"),
                                 ({"high": 1, "high_open": True}, 1, "n must be < 1, got 1"),
                                 ({}, float("nan"), "n must not be NaN")]:
        with pytest.raises(ValueError, match=words):
            check_scalar(value, "n", "real", **kwargs)


def test_check_scalar_finite_and_allow_bool():
    from cysoftmax._validation import check_scalar

    assert check_scalar(float("inf"), "x", "real", low=0) == float("inf")  # not asked
    for value, kwargs, words in [
        (float("inf"), {"low": 0}, "x must be finite and >= 0, got inf"),
        (-float("inf"), {}, "x must be finite, got -inf"),
        (10**400, {"high": 1}, "x must be finite, got 1000"),
        (-0.5, {"low": 0}, r"x must be finite and >= 0, got -0\.5"),
        (2.0, {"high": 1}, r"x must be finite and <= 1, got 2\.0"),
    ]:
        with pytest.raises(ValueError, match=words):
            check_scalar(value, "x", "real", finite=True, **kwargs)
    assert check_scalar(True, "v", "int", allow_bool=True) == 1
    assert type(check_scalar(np.True_, "v", "int", allow_bool=True)) is int
    assert check_scalar(False, "v", "real", allow_bool=True) == 0.0


def test_check_label_range_reports_the_first_bad_label_by_position():
    from cysoftmax._validation import check_label_range

    check_label_range(np.array([0, 2, -100, 1]), (4,), 3, -100)  # all fine: no error
    with pytest.raises(IndexError, match=r"^y\[2\] = 3 is not a class index in \[0, 3\) "
                                         r"and not ignore_index \(-1\)$"):
        check_label_range(np.array([0, -1, 3, -2]), (4,), 3, -1, name="y")
    with pytest.raises(IndexError, match=r"^labels\[1, 0\] = -100 "):
        check_label_range(np.array([[0, 1], [-100, 2]]), (2, 2), 3, -5)
    with pytest.raises(IndexError, match=r"^labels\[1\] = 1180591620717411303424 "):
        check_label_range(np.array([1, 2**70], dtype=object), (2,), 3, -100)
