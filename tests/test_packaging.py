"""Packaging: the sdist holds every file of the source tree, and a source tree without
its build, imported from its root, uses the installed build or says what to do."""

import os
import shutil
import subprocess
import sys
import tarfile

import pytest

import cysoftmax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_CHECKOUT = os.path.isdir(os.path.join(ROOT, ".git"))


def _git_files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return {line for line in out.splitlines() if line}


@pytest.mark.skipif(not IN_CHECKOUT or shutil.which("git") is None, reason="needs a git checkout")
def test_sdist_holds_every_tracked_file(tmp_path):
    pytest.importorskip("Cython")
    tree = tmp_path / "tree"
    files = _git_files()
    for name in files:  # build from a copy: the build writes egg-info beside the sources
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), tree / name)
    proc = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)],
                          cwd=tree, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (archive,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    missing = sorted(f for f in files if f not in members and f != ".gitignore")
    assert not missing, f"missing from the sdist (see MANIFEST.in): {missing}"
    assert "cysoftmax/_kernels.c" not in members  # generated at build time


def _source_copy(dest):
    """The package's Python sources without any compiled module."""
    src = os.path.dirname(os.path.abspath(cysoftmax.__file__))
    shutil.copytree(src, dest / "cysoftmax",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "*.c"))


def test_source_tree_without_build_borrows_the_installed_build(tmp_path):
    """From a clone's root after `pip install .` (the sources shadow the installed
    package), `import cysoftmax` works and computes."""
    _source_copy(tmp_path)
    installed = os.path.dirname(os.path.dirname(os.path.abspath(cysoftmax._kernels.__file__)))
    code = ("import cysoftmax, numpy as np; "
            "print(float(cysoftmax.cross_entropy(np.zeros((2, 4)), [0, 3])))")
    env = dict(os.environ, PYTHONPATH=installed)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) == pytest.approx(1.3862943611198906)  # log 4


def test_source_tree_without_any_build_says_what_to_do(tmp_path):
    _source_copy(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-S", "-c", "import cysoftmax"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    if "No module named 'numpy'" in proc.stderr:
        pytest.skip("numpy lives in site-packages, which -S leaves out")
    assert proc.returncode != 0
    assert "build_ext --inplace" in proc.stderr and "pip install" in proc.stderr
