"""The extension built with AddressSanitizer and UndefinedBehaviorSanitizer runs a subset of
the suite and the fuzz harness (tests/fuzz_api.py) without a single sanitizer report.

The build (``CYSOFTMAX_SANITIZE=address,undefined python setup.py build_ext --inplace``) is
made in a copy of the package in a temporary directory, never over the checkout's extension;
the runs are ordinary Python with the ASan runtime preloaded (``LD_PRELOAD``) and that copy
first on the path.  Every sanitizer report aborts the process.  Skipped where GCC, its
sanitizer runtimes, Cython or setuptools are missing.  ``CYSOFTMAX_FUZZ_SECONDS`` sets the
fuzzing time (default 20 s).
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

import fuzz_api

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
# memory-heavy paths: bad input, every shape and option on every SIMD target, threads
SUBSET = ["test_errors.py", "test_grid.py", "test_numerics.py", "test_options.py",
          "test_properties.py", "test_reference_cases.py", "test_threads.py"]
# RSS under ASan grows by design (freed memory waits in its quarantine)
DESELECT = ["test_no_memory_growth_over_many_calls"]
REPORT = re.compile(r"ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer")
BUILD_TIMEOUT_S = 900
RUN_TIMEOUT_S = 900


def _gcc_runtime(name):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    path = subprocess.run([gcc, f"-print-file-name={name}"], capture_output=True,
                          text=True).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        pytest.skip(f"gcc has no {name} (install its sanitizer runtimes, e.g. libasan, libubsan)")
    return path


def _copy_sources(tree):
    """The packages and what building the extension needs, with the generated C's time
    stamps kept (so an up-to-date _kernels.c is not regenerated)."""
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy2(os.path.join(ROOT, name), tree)
    for package in ("cysoftmax", "symbolic"):  # (symbolic: test_reference_cases uses it)
        shutil.copytree(os.path.join(ROOT, package), os.path.join(tree, package),
                        ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "*.html"))


def _tail(text, n=60):
    return "\n".join(text.splitlines()[-n:])


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory):
    if not sys.platform.startswith("linux"):
        pytest.skip("the sanitizer build is set up for Linux with GCC")
    if not os.path.exists(os.path.join(ROOT, "setup.py")):
        pytest.skip("needs the source tree")
    libasan = _gcc_runtime("libasan.so")
    _gcc_runtime("libubsan.so")
    for module in ("Cython", "setuptools"):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{module} is needed to build the extension")
    tree = str(tmp_path_factory.mktemp("sanitized"))
    _copy_sources(tree)
    base_env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYTHONPATH")}
    # CYSOFTMAX_WERROR=1: the build is also the check that the C and the generated Cython
    # code compile without a warning at -Wall -Wextra
    env = dict(base_env, CYSOFTMAX_SANITIZE="address,undefined", CYSOFTMAX_WERROR="1", CC="gcc")
    t0 = time.monotonic()
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tree,
                           env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    build_s = time.monotonic() - t0
    assert build.returncode == 0, _tail(build.stdout + build.stderr)
    built = glob.glob(os.path.join(tree, "cysoftmax", "_kernels*.so"))
    assert len(built) == 1, built
    run_env = dict(base_env, PYTHONPATH=tree, LD_PRELOAD=libasan,
                   ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:print_summary=1",
                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:print_summary=1")
    # an ASan runtime that cannot start Python here (e.g. a sandbox without the address
    # space it needs) is a missing tool, not a bug of the extension
    probe = subprocess.run([sys.executable, "-c", "pass"], env=run_env, capture_output=True,
                           text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"Python does not start with {libasan} preloaded: {_tail(probe.stderr, 5)}")
    print(f"\nsanitized build: {build_s:.0f} s in {tree}")
    return SimpleNamespace(tree=tree, so=built[0], env=run_env)


def _run(sanitized, label, args, timeout=RUN_TIMEOUT_S, log_to=None):
    env = dict(sanitized.env)
    if log_to:  # reports of every process (the tests start subprocesses) as files
        env["ASAN_OPTIONS"] += f":log_path={log_to}/asan"
        env["UBSAN_OPTIONS"] += f":log_path={log_to}/ubsan"
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, *args], cwd=sanitized.tree, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{args} did not finish in {timeout} s:\n{_tail(str(exc.stdout or ''))}")
    print(f"{label}: {time.monotonic() - t0:.0f} s")
    return proc


def test_sanitized_build_is_instrumented_and_reports(sanitized):
    with open(sanitized.so, "rb") as fh:
        binary = fh.read()
    assert b"__asan_report_load8" in binary and b"__ubsan_handle_" in binary, \
        "CYSOFTMAX_SANITIZE=address,undefined did not instrument the extension"
    proc = _run(sanitized, "import", ["-c", "import cysoftmax; print(cysoftmax.__file__)"])
    assert proc.returncode == 0, proc.stderr
    assert os.path.realpath(proc.stdout.strip()).startswith(os.path.realpath(sanitized.tree))
    # the runtime is active and its report is recognized: a heap overflow by 1 byte
    overflow = ("import ctypes; libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p;"
                "ctypes.string_at(libc.malloc(16), 17)")
    proc = _run(sanitized, "heap overflow canary", ["-c", overflow])
    assert proc.returncode != 0 and REPORT.search(proc.stderr), proc.stderr
    assert "heap-buffer-overflow" in proc.stderr, proc.stderr


def test_suite_subset_under_sanitizers(sanitized, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    # (--capture=sys: a report written to fd 2 by a dying pytest reaches proc.stderr)
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "--capture=sys",
            *[os.path.join(TESTS, name) for name in SUBSET]]
    args += ["-k", " and ".join(f"not {name}" for name in DESELECT)]
    proc = _run(sanitized, "test subset", args, log_to=str(logs))
    found = sorted(glob.glob(str(logs / "*")))
    text = "".join(open(f, errors="replace").read() for f in found[:3])
    assert not found, f"sanitizer reports ({len(found)} files):\n{text[:20000]}"
    hits = [ln for ln in proc.stderr.splitlines() if REPORT.search(ln)]
    assert proc.returncode == 0 and not hits, (
        "\n".join(hits[:20]) + "\n--- output (end) ---\n" + _tail(proc.stdout + proc.stderr))


def test_fuzz_harness_under_sanitizers(sanitized):
    seconds = float(os.environ.get(fuzz_api.SECONDS_ENV, 20.0))
    proc = _run(sanitized, "fuzz harness",
                [os.path.abspath(fuzz_api.__file__), "--seconds", str(seconds)],
                timeout=seconds + RUN_TIMEOUT_S)
    assert fuzz_api.fuzzed_package(proc.stdout) == os.path.realpath(
        os.path.join(sanitized.tree, "cysoftmax")), proc.stdout + proc.stderr
    hits = [ln for ln in proc.stderr.splitlines() if REPORT.search(ln)]
    assert proc.returncode == 0 and not hits, (
        f"{proc.stdout}\n--- sanitizer reports ({len(hits)} lines) ---\n"
        + "\n".join(hits[:40]))
