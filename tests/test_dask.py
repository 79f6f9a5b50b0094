"""cysoftmax.dask on a real distributed cluster: two worker processes of one thread each
(distributed.LocalCluster), started once for the module.

Losses and gradients are compared with the in-memory functions and with the float64
reference (tests/reference.py); the classifier with scikit-learn's multinomial
LogisticRegression; training from chunks on disk is watched for each worker's peak
memory; a worker is killed during a fit; bad chunks are named in the errors.
Skipped without dask[array] and distributed (the ``dask`` extra).
"""

import concurrent.futures
import doctest
import logging
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import warnings

import numpy as np
import pytest

import cysoftmax
import reference

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
import cysoftmax.dask as cd  # noqa: E402

MEMORY_LIMIT = 300 * 2**20  # per worker; the out-of-core data set is larger


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  memory_limit=MEMORY_LIMIT, dashboard_address=":0",
                                  silence_logs=logging.CRITICAL) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _worker_pids(client):
    return client.run(os.getpid)


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


def _classification(seed, n=2400, d=6, c=4, offset=0.5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) + offset
    y = np.argmax(X @ rng.normal(size=(d, c)) + rng.gumbel(size=(n, c)), axis=1)
    return X, y


def test_docstring_examples_run(client):
    failures, tried = doctest.testmod(cd, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried >= 4 and failures == 0


def test_import_cysoftmax_does_not_import_dask():
    code = "import sys, cysoftmax; print('dask' in sys.modules, 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]


# --------------------------------------------------------------------------
# losses and gradients: distributed == in memory
# --------------------------------------------------------------------------

OPTIONS = [
    {},
    {"weight": np.linspace(0.2, 3.0, 7), "label_smoothing": 0.2},
    {"ignore_index": 3, "label_smoothing": 0.05},
]


@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "weighted-smoothed", "ignore3"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_cross_entropy_matches_in_memory(client, reduction, options):
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(403, 7)) * 4
    labels = rng.integers(0, 7, size=403)
    labels[::11] = options.get("ignore_index", -100)
    # uneven chunks, the labels chunked differently from the scores
    s = da.from_array(scores, chunks=((100, 150, 53, 100), 7))
    lab = da.from_array(labels, chunks=77)
    loss, grad = cd.softmax_cross_entropy(s, lab, reduction=reduction, **options)
    assert grad.chunks == s.chunks
    loss_only = cd.cross_entropy(s, lab, reduction=reduction, **options)
    loss, grad, loss_only = dask.compute(loss, grad, loss_only)
    loss0, grad0 = cysoftmax.softmax_cross_entropy(scores, labels, reduction=reduction, **options)
    np.testing.assert_allclose(loss, loss0, rtol=1e-12, atol=0)
    np.testing.assert_allclose(loss_only, loss0, rtol=1e-12, atol=0)
    np.testing.assert_allclose(grad, grad0, rtol=1e-12, atol=1e-17)
    ref_loss, ref_grad = reference.cross_entropy(scores, labels, reduction=reduction, **options)
    # (the NumPy reference itself is off by ~1e-16 where p - 1 cancels)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-14)


def test_softmax_cross_entropy_nd_float32_and_edge_cases(client):
    rng = np.random.default_rng(6)
    scores = rng.normal(size=(6, 5, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=(6, 5))
    s = da.from_array(scores, chunks=(2, 3, 4))
    loss, grad = dask.compute(*cd.softmax_cross_entropy(s, labels, label_smoothing=0.1))
    loss0, grad0 = cysoftmax.softmax_cross_entropy(scores, labels, label_smoothing=0.1)
    assert loss.dtype == grad.dtype == np.float32
    np.testing.assert_allclose(loss, loss0, rtol=1e-6)
    np.testing.assert_allclose(grad, grad0, rtol=1e-6, atol=1e-8)
    # every row ignored: "mean" is NaN and the gradient 0, as in memory
    ignored = da.full((6, 5), -100, chunks=(2, 3))
    loss, grad = dask.compute(*cd.softmax_cross_entropy(s, ignored))
    assert np.isnan(loss) and not grad.any()
    # a zero total weight on kept rows: NaN loss, NaN gradient on the kept rows only
    lab = np.array([0, 1, -100, 0, 1, 1])
    w = np.array([0.0, 0.0, 1.0, 1.0])
    s2 = da.from_array(scores[:, 0].astype(np.float64), chunks=(3, 4))
    loss, grad = dask.compute(*cd.softmax_cross_entropy(s2, lab, weight=w))
    loss0, grad0 = cysoftmax.softmax_cross_entropy(scores[:, 0].astype(np.float64), lab,
                                                   weight=w)
    np.testing.assert_array_equal(loss, loss0)
    np.testing.assert_array_equal(grad, grad0)
    # one sample of shape (C,)
    loss, grad = dask.compute(*cd.softmax_cross_entropy(da.from_array(scores[0, 0]), 2))
    loss0, grad0 = cysoftmax.softmax_cross_entropy(scores[0, 0], 2)
    np.testing.assert_allclose(loss, loss0, rtol=1e-6)
    np.testing.assert_allclose(grad, grad0, rtol=1e-6)


@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "weighted-smoothed", "ignore3"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_loss_matches_in_memory_and_every_worker_computes(client, reduction, options):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(1200, 9))
    y = rng.integers(0, 7, size=1200)
    y[::13] = options.get("ignore_index", -100)
    W, b = rng.normal(size=(9, 7)) * 0.3, rng.normal(size=(1, 7))
    Xd = da.from_array(X, chunks=(100, 5)).persist()  # 12 row chunks, columns split too
    with distributed.get_task_stream(client) as stream:
        out = dask.compute(*cd.linear_softmax_loss(W, Xd, da.from_array(y, chunks=300), b=b,
                                                   reg=0.05, reduction=reduction, **options))
    expected = cysoftmax.linear_softmax_loss(W, X, y, b=b, reg=0.05, reduction=reduction,
                                             **options)
    for got, want in zip(out, expected):
        assert got.shape == np.shape(want) and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    workers = {t["worker"] for t in stream.data if "cysoftmax-linear-chunk" in str(t["key"])}
    assert workers == set(client.scheduler_info()["workers"])


def test_linear_loss_float32_and_no_bias(client):
    rng = np.random.default_rng(8)
    X = rng.normal(size=(500, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=500)
    W = rng.normal(size=(4, 3)).astype(np.float32)
    out = dask.compute(*cd.linear_softmax_loss(W, da.from_array(X, chunks=(64, 4)), y))
    expected = cysoftmax.linear_softmax_loss(W, X, y)
    for got, want in zip(out, expected):
        assert got.dtype == np.float32 and got.shape == np.shape(want)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)


def test_linear_loss_with_sample_weights_matches_float64_reference(client):
    rng = np.random.default_rng(9)
    X = rng.normal(size=(700, 5))
    y = rng.integers(0, 4, size=700)
    y[::7] = -100
    sw = rng.uniform(0.0, 2.0, size=700)
    W, b = rng.normal(size=(5, 4)), rng.normal(size=4)
    weight = np.array([0.5, 1.0, 2.0, 1.5])
    reg = 0.1
    for reduction in ("mean", "sum"):
        loss, dW, db = dask.compute(*cd.linear_softmax_loss(
            W, da.from_array(X, chunks=(90, 5)), y, b=b, reg=reg, reduction=reduction,
            weight=weight, label_smoothing=0.1, sample_weight=da.from_array(sw, chunks=200)))
        # the reference: per-row losses and gradients in float64, weighted by hand
        rows, G = reference.cross_entropy(X @ W + b, y, reduction="none", weight=weight,
                                          label_smoothing=0.1)
        kept = y != -100
        den = np.sum(sw[kept] * weight[y[kept]]) if reduction == "mean" else 1.0
        G = G * sw[:, None] / den
        np.testing.assert_allclose(loss, np.dot(rows, sw) / den + 0.5 * reg * np.sum(W * W),
                                   rtol=1e-12)
        np.testing.assert_allclose(dW, X.T @ G + reg * W, rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(db, G.sum(axis=0), rtol=1e-11, atol=1e-14)


# --------------------------------------------------------------------------
# the classifier
# --------------------------------------------------------------------------


def _sklearn_multinomial(X, y, reg, sample_weight=None):
    """scikit-learn minimises mean(loss) + ||W||^2 / (2 C n) (n: the sum of the sample
    weights), the intercept unpenalised: that is our objective with C = 1 / (reg n)."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    n = X.shape[0] if sample_weight is None else np.sum(sample_weight)
    return linear_model.LogisticRegression(C=1.0 / (reg * n), tol=1e-12, max_iter=10000).fit(
        X, y, sample_weight=sample_weight)


def _assert_same_model(est, sk, rtol):
    assert _rel(est.coef_, sk.coef_) < rtol
    # softmax is unchanged by adding one constant to every intercept: compare centred
    # intercepts, relative to the largest coefficient
    shift = (est.intercept_ - est.intercept_.mean()) - (sk.intercept_ - sk.intercept_.mean())
    assert np.max(np.abs(shift)) < rtol * np.max(np.abs(sk.coef_))


def test_lbfgs_fit_matches_sklearn(client):
    X, y = _classification(0)
    reg = 0.01
    est = cd.DaskSoftmaxClassifier(reg=reg, tol=1e-10, max_iter=1000, random_state=0)
    est.fit(da.from_array(X, chunks=(600, 6)).persist(), da.from_array(y, chunks=600))
    sk = _sklearn_multinomial(X, y, reg)
    _assert_same_model(est, sk, 1e-5)
    assert est.coef_.shape == (4, 6) and est.loss_history_.shape == (est.n_iter_,)
    np.testing.assert_array_equal(est.classes_, np.arange(4))


def test_in_memory_lbfgs_fit_matches_sklearn():
    X, y = _classification(0)
    est = cysoftmax.SoftmaxClassifier(reg=0.01, tol=1e-10, max_iter=1000, random_state=0)
    _assert_same_model(est.fit(X, y), _sklearn_multinomial(X, y, 0.01), 1e-5)


def test_lbfgs_fit_with_sample_weights_matches_sklearn(client):
    X, y = _classification(2, n=1200, d=4, c=3)
    sw = np.random.default_rng(3).uniform(0.2, 3.0, size=1200)
    reg = 0.02
    est = cd.DaskSoftmaxClassifier(reg=reg, tol=1e-10, max_iter=1000, random_state=0).fit(
        da.from_array(X, chunks=(400, 4)).persist(), y,
        sample_weight=da.from_array(sw, chunks=400))
    _assert_same_model(est, _sklearn_multinomial(X, y, reg, sample_weight=sw), 1e-5)


def test_gradient_descent_matches_in_memory(client):
    X, y = _classification(4, n=900)
    kwargs = dict(solver="sgd", learning_rate=0.5, max_iter=15, random_state=3)
    est = cd.DaskSoftmaxClassifier(**kwargs).fit(da.from_array(X, chunks=(200, 6)), y)
    mem = cysoftmax.SoftmaxClassifier(**kwargs).fit(X, y)
    np.testing.assert_allclose(est.coef_, mem.coef_, rtol=1e-11)
    np.testing.assert_allclose(est.intercept_, mem.intercept_, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(est.loss_history_, mem.loss_history_, rtol=1e-12)


def _numpy_minibatch_sgd(X, y, chunk_rows, batch, lr, reg, epochs, random_state):
    """The documented algorithm in plain float64 NumPy: per epoch, the chunks in the
    order of rng.permutation, then rng.integers seeds; in each chunk, its rows in the
    order of default_rng(seed).permutation, in minibatches of ``batch`` rows."""
    rng = np.random.default_rng(random_state)
    d, c = X.shape[1], int(y.max()) + 1
    W, b = 0.01 * rng.standard_normal((d, c)), np.zeros(c)
    starts = np.arange(0, X.shape[0], chunk_rows)
    history = []
    for _ in range(epochs):
        order = rng.permutation(len(starts))
        seeds = rng.integers(0, 2**63, size=len(starts))
        total = 0.0
        for i, seed in zip(order, seeds):
            Xc, yc = X[starts[i]:starts[i] + chunk_rows], y[starts[i]:starts[i] + chunk_rows]
            rows = np.random.default_rng(int(seed)).permutation(Xc.shape[0])
            for k in range(0, len(rows), batch):
                idx = rows[k:k + batch]
                loss, G = reference.cross_entropy(Xc[idx] @ W + b, yc[idx])
                total += (loss + 0.5 * reg * np.sum(W * W)) * len(idx)
                dW, db = Xc[idx].T @ G + reg * W, G.sum(axis=0)
                W, b = W - lr * dW, b - lr * db
        history.append(total / X.shape[0])
    return W, b, np.array(history)


def test_minibatch_sgd_follows_the_documented_algorithm(client):
    X, y = _classification(5, n=1000, c=3)
    est = cd.DaskSoftmaxClassifier(solver="sgd", batch_size=64, learning_rate=0.2,
                                   max_iter=4, random_state=11)
    est.fit(da.from_array(X, chunks=(250, 6)).persist(), da.from_array(y, chunks=250))
    W, b, history = _numpy_minibatch_sgd(X, y, 250, 64, 0.2, 1e-3, 4, 11)
    np.testing.assert_allclose(est.W_, W, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(est.b_, b, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(est.loss_history_, history, rtol=1e-11)
    assert history[-1] < history[0]


def test_prediction_returns_dask_arrays(client):
    X, y = _classification(6, n=600, c=3)
    labels = np.array(["ant", "bee", "cat"])[y]
    Xd = da.from_array(X, chunks=(128, 6))
    est = cd.DaskSoftmaxClassifier(reg=0.01, random_state=0).fit(Xd, labels)
    mem = cysoftmax.SoftmaxClassifier()
    mem.W_, mem.b_, mem.classes_, mem.n_features_in_ = est.W_, est.b_, est.classes_, 6
    for method in ("predict", "predict_proba", "decision_function"):
        got = getattr(est, method)(Xd)
        assert isinstance(got, da.Array) and got.chunks[0] == Xd.chunks[0]
        want = getattr(mem, method)(X)
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got.compute(), want, rtol=1e-12, atol=1e-15)
        else:
            np.testing.assert_array_equal(got.compute(), want)
        # NumPy in, NumPy out
        np.testing.assert_array_equal(getattr(est, method)(X[:5]), want[:5])
    score = est.score(Xd, da.from_array(labels, chunks=100))
    assert isinstance(score, da.Array) and score.ndim == 0
    assert float(score) == pytest.approx(np.mean(mem.predict(X) == labels), abs=0)
    assert float(score) > 0.6
    with pytest.raises(TypeError, match="string labels"):
        est.score(Xd, y)
    # scikit-learn's parameter protocol
    clone = pytest.importorskip("sklearn.base").clone(est)
    assert clone.get_params() == est.get_params() and not hasattr(clone, "coef_")


# --------------------------------------------------------------------------
# out of core, faults, bad chunks
# --------------------------------------------------------------------------


def _write_chunk(directory, i, rows, d, c, seed):
    rng = np.random.default_rng([seed, i])
    X = rng.standard_normal((rows, d))
    W = np.random.default_rng(seed).normal(size=(d, c)) / np.sqrt(d)
    y = np.argmax(X @ W + rng.gumbel(size=(rows, c)), axis=1)
    np.save(os.path.join(directory, f"X{i}.npy"), X)
    np.save(os.path.join(directory, f"y{i}.npy"), y)
    return i


def _reset_peak_rss():
    """Start a new peak of this process's resident memory (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss():
    """This process's peak resident memory (bytes) since its last exec or reset: VmHWM.
    (Not ru_maxrss: Linux carries the parent's peak over a fork and exec.)"""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_out_of_core_fit_stays_within_each_workers_memory_limit(client, tmp_path):
    n_chunks, rows, d, c = 48, 10_000, 100, 5
    nbytes = n_chunks * rows * d * 8
    assert nbytes > 1.2 * MEMORY_LIMIT  # 384 MB on disk, workers of 300 MiB
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("reads peak memory from Linux's /proc")
    pids = _worker_pids(client)
    # the workers write the chunks; the client only names the files
    client.gather(client.map(_write_chunk, [str(tmp_path)] * n_chunks, range(n_chunks),
                             rows=rows, d=d, c=c, seed=17))
    load = dask.delayed(np.load, pure=True)
    X = da.concatenate([da.from_delayed(load(str(tmp_path / f"X{i}.npy")), (rows, d), float)
                        for i in range(n_chunks)])
    y = da.concatenate([da.from_delayed(load(str(tmp_path / f"y{i}.npy")), (rows,), np.int64)
                        for i in range(n_chunks)])
    client.run(_reset_peak_rss)
    start_rss = client.run(_peak_rss)
    tracemalloc.start()
    try:  # full-batch gradient descent: exactly two passes over the data
        est = cd.DaskSoftmaxClassifier(solver="sgd", learning_rate=0.5, max_iter=2,
                                       random_state=0).fit(X, y)
        client_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    peaks = client.run(_peak_rss)
    print(f"\nout of core: {nbytes / 2**20:.0f} MiB on disk; worker RSS at the start "
          f"{', '.join(f'{p / 2**20:.0f}' for p in start_rss.values())} MiB, peak "
          f"{', '.join(f'{p / 2**20:.0f}' for p in peaks.values())} MiB (limit "
          f"{MEMORY_LIMIT / 2**20:.0f}); client peak allocation {client_peak / 2**20:.1f} MiB")
    assert _worker_pids(client) == pids  # no worker was restarted for its memory
    assert max(peaks.values()) < MEMORY_LIMIT
    assert client_peak < nbytes / 10  # X never came to the client
    assert est.n_iter_ == 2 and est.loss_history_[1] < est.loss_history_[0]
    assert est.score(X[:rows], y[:rows]).compute() > 0.35  # 5 classes: chance is 0.2


def test_fit_completes_after_a_worker_is_killed(client):
    X, y = _classification(8, n=6000, d=8, c=4)
    Xd = da.from_array(X, chunks=(500, 8)).persist()  # 12 chunks, on both workers
    yd = da.from_array(y, chunks=500).persist()
    params = dict(reg=0.01, tol=0.0, max_iter=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cysoftmax.ConvergenceWarning)
        undisturbed = cd.DaskSoftmaxClassifier(**params).fit(Xd, yd)
        holders = client.who_has(Xd)
        pids = _worker_pids(client)
        victim = sorted(pids)[0]
        assert any(victim in workers for workers in holders.values())  # it holds chunks
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            fit = pool.submit(cd.DaskSoftmaxClassifier(**params).fit, Xd, yd)
            # wait for the tasks of the fit's third evaluation (keys name their pass)
            passes, deadline = set(), time.monotonic() + 60
            while len(passes) < 3 and not fit.done():
                assert time.monotonic() < deadline
                passes.update(str(key).split("-")[-1].split("'")[0]
                              for keys in client.processing().values() for key in keys
                              if "cysoftmax-linear-chunk" in str(key))
                time.sleep(0.002)
            assert not fit.done()
            os.kill(pids[victim], signal.SIGKILL)
            killed_during_fit = not fit.done()
            est = fit.result(timeout=120)
    assert killed_during_fit
    client.wait_for_workers(2, timeout=60)
    assert pids[victim] not in _worker_pids(client).values()  # a new process took its place
    assert est.n_iter_ == undisturbed.n_iter_ == 15
    np.testing.assert_allclose(est.coef_, undisturbed.coef_, rtol=1e-12, atol=0)
    np.testing.assert_allclose(est.intercept_, undisturbed.intercept_, rtol=1e-12, atol=0)


def test_bad_chunks_are_named_and_the_cluster_stays_usable(client):
    X, y = _classification(9, n=1000)
    pids = _worker_pids(client)
    bad = X.copy()
    bad[437, 2] = np.nan
    Xbad = da.from_array(bad, chunks=(200, 6))
    with pytest.raises(ValueError, match=r"X\[437, 2\] = .*nan.*chunk 2 of X \(rows 400:600\)"):
        cd.DaskSoftmaxClassifier().fit(Xbad, y)
    with pytest.raises(ValueError, match=r"chunk 2 of X \(rows 400:600\)"):
        cd.DaskSoftmaxClassifier(solver="sgd", batch_size=50, max_iter=1).fit(Xbad, y)
    est = cd.DaskSoftmaxClassifier(solver="sgd", max_iter=1).fit(X, y)
    with pytest.raises(ValueError, match=r"chunk 2 of X \(rows 400:600\)"):
        est.predict(Xbad).compute()
    labels = y.copy()
    labels[905] = 4  # four classes: 4 is no class index
    W = np.zeros((6, 4))
    with pytest.raises(IndexError, match=r"y\[905\] = 4 is not a class index in \[0, 4\) "
                                         r"and not ignore_index \(-100\); in chunk 4 of y "
                                         r"\(rows 800:1000\)"):
        dask.compute(*cd.linear_softmax_loss(W, da.from_array(X, chunks=(200, 6)), labels))
    with pytest.raises(IndexError,
                       match=r"labels\[905\] = 4 .* chunk 9 of labels \(rows 900:1000\)"):
        cd.cross_entropy(da.from_array(X[:, :4], chunks=(100, 4)), labels).compute()
    float_labels = y.astype(float)
    float_labels[20] = np.nan
    with pytest.raises(ValueError, match=r"y contains NaN.*chunk 0 of y \(rows 0:250\)"):
        cd.DaskSoftmaxClassifier().fit(X, da.from_array(float_labels, chunks=250))
    sw = np.ones(1000)
    sw[999] = np.inf
    with pytest.raises(ValueError, match=r"sample_weight\[999\] = .*inf.*chunk 4"):
        cd.DaskSoftmaxClassifier().fit(da.from_array(X, chunks=(200, 6)), y, sample_weight=sw)
    # the same workers, still working
    assert _worker_pids(client) == pids
    est = cd.DaskSoftmaxClassifier(random_state=0).fit(da.from_array(X, chunks=(200, 6)), y)
    assert float(est.score(da.from_array(X, chunks=(200, 6)), y)) > 0.6


def test_argument_errors_on_the_client(client):
    X = da.zeros((10, 3), chunks=(5, 3))
    y = np.zeros(10, dtype=int)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        cd.linear_softmax_loss(np.zeros((3, 2)), X, y[:9])
    with pytest.raises(ValueError, match=r"W must have shape \(3, n_classes\)"):
        cd.linear_softmax_loss(np.zeros((4, 2)), X, y)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum' here"):
        cd.linear_softmax_loss(np.zeros((3, 2)), X, y, reduction="none")
    with pytest.raises(TypeError, match="unexpected keyword"):
        cd.linear_softmax_loss(np.zeros((3, 2)), X, y, out=None)
    with pytest.raises(ValueError, match="label_smoothing"):
        cd.cross_entropy(X, y, label_smoothing=2.0)
    with pytest.raises(ValueError, match="weight must have shape"):
        cd.softmax_cross_entropy(X, y, weight=[1.0, 2.0])
    with pytest.raises(TypeError, match="scores must hold float32 or float64"):
        cd.cross_entropy(X.astype(int), y)
    with pytest.raises(TypeError, match="labels must be integers"):
        cd.cross_entropy(X, y.astype(float))
    with pytest.raises(ValueError, match="Reshape your data"):
        cd.DaskSoftmaxClassifier().fit(da.zeros(10, chunks=5), y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        cd.DaskSoftmaxClassifier().fit(X, y)
    with pytest.raises(ValueError, match="batch_size=8 needs solver='sgd'"):
        cd.DaskSoftmaxClassifier(batch_size=8).fit(X, y)
    with pytest.raises(ValueError, match="unknown size"):
        cd.DaskSoftmaxClassifier().fit(X[X[:, 0] > 0], y)
    with pytest.raises(cysoftmax.NotFittedError):
        cd.DaskSoftmaxClassifier().predict(X)
