"""The README's Python examples run as written, and its install/test commands are the CI's."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

pytestmark = pytest.mark.skipif(not os.path.exists(README), reason="needs the source tree")


def python_blocks():
    with open(README, encoding="utf-8") as fh:
        text = fh.read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks()) if os.path.exists(README) else 0))
def test_readme_python_example_runs(index, capsys):
    if "import torch" in python_blocks()[index]:
        pytest.importorskip("torch")  # the PyTorch section needs the optional torch
    if "import dask" in python_blocks()[index] or "cysoftmax.dask" in python_blocks()[index]:
        pytest.importorskip("distributed")  # the Dask section needs the optional dask
    exec(compile(python_blocks()[index], f"README.md python block {index}", "exec"), {})


def test_readme_commands_are_what_ci_runs():
    with open(README, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as fh:
        ci = fh.read()
    assert 'pip install ".[test]"' in lines and "pytest" in lines
    assert "INSTALL='pip install \".[test]\"'" in ci and "TEST='pytest'" in ci
