"""The fuzz harness (tests/fuzz_api.py) on the public API, for a bounded time, and proof
that the harness reports each kind of failure it looks for.

``CYSOFTMAX_FUZZ_SECONDS`` sets the time for random cases (default 20 s; the known cases
run first whatever it says).
"""

import os
import re
import subprocess
import sys

import pytest

import cysoftmax
import fuzz_api

FUZZ = os.path.abspath(fuzz_api.__file__)
PACKAGE = os.path.dirname(os.path.abspath(cysoftmax.__file__))


def fuzz_seconds(default=20.0):
    return float(os.environ.get(fuzz_api.SECONDS_ENV, default))


def run_fuzz(*args, timeout, env=None, cwd=None):
    """Run the harness on the cysoftmax this test session imported."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(PACKAGE)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    try:
        return subprocess.run([sys.executable, FUZZ, *args], capture_output=True, text=True,
                              env=env, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the fuzz harness did not finish in {timeout} s:\n{exc.stdout or ''}")


def test_fuzz_public_api(tmp_path):
    seconds = fuzz_seconds()
    proc = run_fuzz("--seconds", str(seconds), timeout=seconds + 600, cwd=tmp_path)
    assert fuzz_api.fuzzed_package(proc.stdout) == os.path.realpath(PACKAGE), proc.stdout + proc.stderr
    assert proc.returncode == 0, (
        f"fuzz_api.py found failures:\n{proc.stdout}\n--- stderr (end) ---\n{proc.stderr[-4000:]}")


@pytest.mark.parametrize("fault, report", [
    ("crash", r"\[crashed\] \d+:\d+"),
    ("wrong-loss", r"\[failed\] \d+:\d+.*\n    wrong loss"),
    ("modify-input", r"the call modified scores"),
    ("unnamed-error", r"valid arguments refused: ValueError: bad input"),
])
def test_harness_reports_injected_faults(fault, report, tmp_path):
    """The harness must catch a crash (and go on after it), a wrong result, a modified
    input and an error that names no argument, even once the API has no such bug."""
    proc = run_fuzz("--seconds", "2", "--no-known", "--inject", fault, "--show", "1000",
                    timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(report, proc.stdout), proc.stdout
    n_cases = int(re.search(r"(\d+) cases in", proc.stdout).group(1))
    assert n_cases >= 10, proc.stdout  # a crash does not end the run


def test_known_cases_replay(tmp_path):
    """Every known case can be replayed alone (the ids the harness prints work)."""
    listed = run_fuzz("--list-known", timeout=120, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    ids = re.findall(r"^(known:[\w-]+):", listed.stdout, re.M)
    assert {"known:labels-memoryview-of-out", "known:weight-memoryview-of-out",
            "known:label-flipped-during-call"} <= set(ids), listed.stdout
    proc = run_fuzz("--replay", "0:1", timeout=120, cwd=tmp_path)
    assert proc.returncode in (0, 1) and proc.stdout.startswith(("softmax", "cross", "log")), \
        proc.stdout + proc.stderr
