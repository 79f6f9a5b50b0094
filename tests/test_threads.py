"""Threads: bitwise determinism across thread counts, concurrent calls from Python threads,
no memory growth, and the SIMD target override."""

import concurrent.futures
import os
import subprocess
import sys

import numpy as np
import pytest

import cysoftmax
from cysoftmax import _kernels

# large enough that several threads start (a thread takes >= 16384 scores)
SHAPES = [(50000, 3), (20000, 10), (4000, 40), (300, 1000), (9, 33000)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_bitwise_identical_for_any_thread_count(simd_target, shape, dtype):
    rng = np.random.default_rng(shape[1])
    scores = (rng.normal(size=shape) * 5).astype(dtype)
    labels = rng.integers(0, shape[1], size=shape[0])
    labels[::7] = -100
    weight = rng.uniform(0.1, 2, size=shape[1])
    for kw in ({}, dict(weight=weight, label_smoothing=0.1), dict(reduction="none")):
        results = [cysoftmax.softmax_cross_entropy(scores, labels, num_threads=t, **kw)
                   for t in (1, 2, 3, 4, 7)]
        for loss, grad in results[1:]:
            np.testing.assert_array_equal(loss, results[0][0])
            np.testing.assert_array_equal(grad, results[0][1])
        losses = [cysoftmax.cross_entropy(scores, labels, num_threads=t, **kw) for t in (1, 2, 5)]
        for loss in losses:
            np.testing.assert_array_equal(loss, results[0][0])
    for fn in (cysoftmax.softmax, cysoftmax.log_softmax):
        ref = fn(scores, num_threads=1)
        for t in (2, 3):
            np.testing.assert_array_equal(fn(scores, num_threads=t), ref)


def test_concurrent_calls_from_python_threads():
    rng = np.random.default_rng(1)
    jobs = []
    for i in range(24):
        C = [3, 10, 100, 2000][i % 4]
        dtype = [np.float32, np.float64][i % 2]
        scores = rng.normal(size=(257, C)).astype(dtype)
        labels = rng.integers(0, C, size=257)
        jobs.append((scores, labels, dict(label_smoothing=0.05 * (i % 3), num_threads=1 + i % 2)))
    serial = [cysoftmax.softmax_cross_entropy(s, y, **kw) for s, y, kw in jobs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(3):
            futures = [pool.submit(cysoftmax.softmax_cross_entropy, s, y, **kw) for s, y, kw in jobs]
            for fut, (loss, grad) in zip(futures, serial):
                got_loss, got_grad = fut.result()
                np.testing.assert_array_equal(got_loss, loss)
                np.testing.assert_array_equal(got_grad, grad)


def _rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_no_memory_growth_over_many_calls():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(200, 50))
    labels = rng.integers(0, 50, size=200)
    weight = np.ones(50)
    out = np.empty_like(scores)

    def many(n):
        for _ in range(n):
            cysoftmax.softmax_cross_entropy(scores, labels, out=out, weight=weight, label_smoothing=0.1)
            cysoftmax.cross_entropy(scores, labels, reduction="none")
            cysoftmax.softmax(scores)
            try:
                cysoftmax.softmax_cross_entropy(scores, labels + 100)
            except IndexError:
                pass

    many(200)  # warm up allocator pools
    before = _rss_bytes()
    many(3000)
    grown = _rss_bytes() - before
    assert grown < 4 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 12000 calls"


def test_num_threads_default_and_reporting():
    info = cysoftmax.build_info()
    assert info["default_num_threads"] >= 1
    assert info["target"] in info["supported_targets"]
    assert info["supported_targets"][0] == "baseline"
    assert _kernels.default_target() in ("avx512", "avx2", "baseline")
    assert cysoftmax.simd_target() == info["target"]


@pytest.mark.parametrize("target", _kernels.supported_targets())
def test_target_forced_by_environment(target, tmp_path):
    code = "import cysoftmax; print(cysoftmax.simd_target())"
    env = dict(os.environ, CYSOFTMAX_TARGET=target)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=tmp_path)  # the installed package, not the source tree
    assert out.stdout.strip() == target


def test_unknown_target_in_environment_warns_and_falls_back(tmp_path):
    code = "import cysoftmax; print(cysoftmax.simd_target())"
    env = dict(os.environ, CYSOFTMAX_TARGET="sse9")
    out = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env,
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == _kernels.default_target()
    assert "CYSOFTMAX_TARGET ignored" in out.stderr


def test_set_target_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown target"):
        _kernels.set_target("sse9")
    unsupported = [t for t in _kernels.targets() if t not in _kernels.supported_targets()]
    for name in unsupported:
        with pytest.raises(ValueError, match="cannot run"):
            _kernels.set_target(name)


def test_omp_num_threads_is_honoured(tmp_path):
    code = "import cysoftmax; print(cysoftmax.build_info()['default_num_threads'])"
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=tmp_path)  # the installed package, not the source tree
    expected = "3" if cysoftmax.build_info()["openmp"] else "1"
    assert out.stdout.strip() == expected


def _run_script(code, tmp_path, env=None, timeout=120):
    """Run ``code`` in a fresh interpreter on the installed package; return its stdout."""
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, cwd=tmp_path, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the script hung (no exit after {timeout} s):\n{code}")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_omp_num_threads_list_takes_its_first_value(tmp_path):
    code = "import cysoftmax; print(cysoftmax.build_info()['default_num_threads'])"
    out = _run_script(code, tmp_path, env=dict(os.environ, OMP_NUM_THREADS="3,2"))
    assert out == ("3" if cysoftmax.build_info()["openmp"] else "1")


def test_default_without_omp_num_threads_is_the_usable_cpus(tmp_path):
    code = "import cysoftmax; print(cysoftmax.build_info()['default_num_threads'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert _run_script(code, tmp_path, env=env) == str(usable if cysoftmax.build_info()["openmp"] else 1)


@pytest.mark.skipif(not cysoftmax.build_info()["openmp"], reason="built without OpenMP")
def test_default_ignores_omp_set_num_threads_by_other_libraries(tmp_path):
    # torch.set_num_threads and others call omp_set_num_threads on the shared runtime
    code = """if True:
        import ctypes, sys
        import cysoftmax
        try:
            gomp = ctypes.CDLL("libgomp.so.1")
        except OSError:
            print("no-libgomp"); sys.exit(0)
        before = cysoftmax.build_info()["default_num_threads"]
        gomp.omp_set_num_threads(1)
        assert gomp.omp_get_max_threads() == 1
        print(before, cysoftmax.build_info()["default_num_threads"])
    """
    out = _run_script(code, tmp_path, env=dict(os.environ, OMP_NUM_THREADS="4"))
    if out == "no-libgomp":
        pytest.skip("the OpenMP runtime is not libgomp")
    assert out == "4 4"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_child_forked_after_threaded_calls_runs_serially_and_does_not_hang(tmp_path):
    # GNU OpenMP's thread pool does not survive fork(): a parallel region in the child
    # would wait forever for the parent's worker threads.
    code = """if True:
        import os
        import numpy as np
        import cysoftmax
        from cysoftmax import _kernels
        rng = np.random.default_rng(0)
        scores = rng.normal(size=(4096, 256))
        labels = rng.integers(0, 256, size=4096)
        loss, grad = cysoftmax.softmax_cross_entropy(scores, labels, num_threads=2)
        p = cysoftmax.softmax(scores, num_threads=2)
        assert not _kernels.forked_child()
        pid = os.fork()
        if pid == 0:
            ok = (_kernels.forked_child() and _kernels.default_num_threads() == 1)
            for threads in (None, 2):
                l2, g2 = cysoftmax.softmax_cross_entropy(scores, labels, num_threads=threads)
                ok = ok and l2 == loss and np.array_equal(g2, grad)
                ok = ok and np.array_equal(cysoftmax.softmax(scores, num_threads=threads), p)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), _kernels.forked_child())
    """
    assert _run_script(code, tmp_path) == "0 False"


def _counter_progress_mid_call(call):
    """Increments a Python thread makes during the middle half of call() (best effort).

    A spinning thread stamps the time every 256 increments.  If call() held the GIL,
    the thread could run only at the edges of the call (before the kernel takes over,
    and after it returns, when the interpreter hands the GIL over at switch intervals),
    never in its middle half: there it would count 0."""
    import sys
    import threading
    import time

    stamps = []
    stop = []
    ready = threading.Event()

    def spin():
        n = 0
        ready.set()
        while not stop:
            n += 1
            if not n & 255:
                stamps.append(time.perf_counter())

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-3)  # short edge windows
    thread = threading.Thread(target=spin, daemon=True)
    try:
        thread.start()
        ready.wait()
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
    finally:
        stop.append(True)
        thread.join()
        sys.setswitchinterval(old)
    lo, hi = t0 + (t1 - t0) / 4, t1 - (t1 - t0) / 4
    return 256 * sum(lo < s < hi for s in stamps), t1 - t0


# one single-threaded call of ~50-150 ms each, on float32 shapes that are slow per score
# (the compiled fast path, the general path with options, the softmax kernels)
GIL_CALLS = {
    "cross_entropy": ((800_000, 17), lambda s, y: cysoftmax.cross_entropy(s, y, num_threads=1)),
    "softmax_cross_entropy": ((800_000, 17), lambda s, y: cysoftmax.softmax_cross_entropy(
        s, y, num_threads=1)),
    "weighted_smoothed": ((800_000, 17), lambda s, y: cysoftmax.softmax_cross_entropy(
        s, y, weight=np.linspace(0.5, 2, 17), label_smoothing=0.1, num_threads=1)),
    "softmax": ((2_000_000, 3), lambda s, y: cysoftmax.softmax(s, num_threads=1)),
    "log_softmax": ((2_000_000, 3), lambda s, y: cysoftmax.log_softmax(s, num_threads=1)),
}
# Measured on a loaded 2-core machine: 330 000 to 1 700 000 increments in the middle half
# of these calls; 0 for a call that holds the GIL as long (sum(range(...))).
MIN_INCREMENTS = 20_000


@pytest.mark.parametrize("name", GIL_CALLS)
def test_gil_is_released_during_the_kernels(name):
    shape, call = GIL_CALLS[name]
    rng = np.random.default_rng(3)
    scores = np.tile(rng.standard_normal((1000, shape[1]), dtype=np.float32), (shape[0] // 1000, 1))
    labels = np.tile(rng.integers(0, shape[1], size=1000), shape[0] // 1000)
    call(scores, labels)  # warm up (page in the output buffers' allocator)
    seen = []
    for _ in range(3):  # a busy machine may deschedule the counting thread: best of three
        increments, seconds = _counter_progress_mid_call(lambda: call(scores, labels))
        seen.append((increments, round(seconds * 1e3, 1)))
        if increments >= MIN_INCREMENTS:
            break
    else:
        pytest.fail(f"a Python thread barely ran during {name} (increments, ms): {seen}")


def _gomp_settings(tmp_path, env, import_first=""):
    """cysoftmax's wait-policy report and what GNU OpenMP itself says it uses."""
    code = f"""if True:
        {import_first}
        import ctypes, os, sys, cysoftmax
        info = cysoftmax.build_info()
        sys.stderr.flush()
        print(info["openmp_wait_policy"])
        print(os.environ.get("OMP_WAIT_POLICY"))
        sys.stdout.flush()
        os.dup2(1, 2)  # omp_display_env writes to stderr
        ctypes.CDLL("libgomp.so.1").omp_display_env(1)
    """
    return _run_script(code, tmp_path, env=env)


def _without(*names):
    return {k: v for k, v in os.environ.items() if k not in names}


@pytest.mark.skipif(not cysoftmax.build_info()["openmp"], reason="built without OpenMP")
@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_idle_threads_sleep_instead_of_spinning(tmp_path):
    """Spinning threads lose their core to a busy process and then hold every call up
    for a time slice; cysoftmax asks GNU OpenMP for passive waiting at import."""
    out = _gomp_settings(tmp_path, _without("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"))
    lines = out.splitlines()
    assert lines[0] == "passive" and lines[1] == "None"  # the environment is restored
    assert "GOMP_SPINCOUNT = '0'" in out, out


@pytest.mark.skipif(not cysoftmax.build_info()["openmp"], reason="built without OpenMP")
def test_the_users_wait_policy_is_kept(tmp_path):
    env = dict(_without("GOMP_SPINCOUNT"), OMP_WAIT_POLICY="active")
    out = _gomp_settings(tmp_path, env)
    assert out.splitlines()[0] == "OMP_WAIT_POLICY=active (from the environment)"
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in out, out


@pytest.mark.skipif(not cysoftmax.build_info()["openmp"], reason="built without OpenMP")
@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_a_runtime_loaded_before_cysoftmax_is_reported(tmp_path):
    out = _gomp_settings(tmp_path, _without("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"),
                         import_first="import ctypes; ctypes.CDLL('libgomp.so.1')")
    assert out.splitlines()[0].startswith("the OpenMP runtime's default"), out
    assert "GOMP_SPINCOUNT = '300000'" in out, out
