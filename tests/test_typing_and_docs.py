"""The type stubs match the compiled module (mypy.stubtest), the package type-checks,
and the docstring examples run."""

import doctest
import os
import subprocess
import sys

import pytest

import cysoftmax
import cysoftmax._api


def test_docstring_examples_run():
    failures, tried = doctest.testmod(cysoftmax._api, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried >= 4
    assert failures == 0


def test_stubs_match_compiled_module(tmp_path):
    pytest.importorskip("mypy")
    pkg_dir = os.path.dirname(os.path.dirname(cysoftmax.__file__))
    env = dict(os.environ, MYPYPATH="", PYTHONPATH=pkg_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "cysoftmax._kernels", "--mypy-config-file",
         os.devnull],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _mypy_env(pkg_dir):
    """An installed package is found by mypy itself; a source checkout needs MYPYPATH
    (mypy refuses site-packages there)."""
    env = dict(os.environ)
    env.pop("MYPYPATH", None)
    if os.path.basename(pkg_dir) not in ("site-packages", "dist-packages"):
        env["MYPYPATH"] = pkg_dir
    return env


def test_public_api_type_checks(tmp_path):
    pytest.importorskip("mypy")
    _assert_type_checks(tmp_path, "user.py", (
        "import numpy as np\nimport cysoftmax\n"
        "loss, grad = cysoftmax.softmax_cross_entropy(np.zeros((2, 3)), [0, 1])\n"
        "p: np.ndarray = cysoftmax.softmax(np.zeros(3))\n"))


def _assert_type_checks(tmp_path, name, source):
    """mypy accepts user code ``source`` against the installed package."""
    user = tmp_path / name
    user.write_text(source)
    pkg_dir = os.path.dirname(os.path.dirname(cysoftmax.__file__))
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict-optional", str(user)],
                          capture_output=True, text=True, cwd=tmp_path,
                          env=_mypy_env(pkg_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_torch_front_end_type_checks(tmp_path):
    """User code of cysoftmax.torch, and the module itself, type-check against torch's
    own annotations."""
    pytest.importorskip("mypy")
    pytest.importorskip("torch")
    _assert_type_checks(tmp_path, "user_torch.py", (
        "import torch\nfrom cysoftmax.torch import CrossEntropyLoss, cross_entropy\n"
        "x = torch.zeros(2, 3, requires_grad=True)\n"
        "loss: torch.Tensor = cross_entropy(x, torch.tensor([0, 1]), label_smoothing=0.1)\n"
        "total: torch.Tensor = CrossEntropyLoss(reduction='sum')(x, torch.tensor([0, 1]))\n"))
