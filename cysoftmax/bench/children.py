"""Python child processes that import the same cysoftmax as this process.

``python -m cysoftmax...`` or ``python -c ...`` puts the child's working
directory first on its ``sys.path``. Started from the root of a source
checkout whose extension is not built in place, such a child would import the
checkout's ``cysoftmax`` rather than the installed one this process runs, and
fail ("cannot import name '_kernels' from partially initialized module
'cysoftmax'") or time other code. Every child the benchmark starts (the JAX
peer, the CPU probe, the busy processes of ``cysoftmax.bench.load``) runs
``python -c`` with the working directory's entry replaced by the directory
this process imported cysoftmax from.
"""

from __future__ import annotations

import os
import sys
from typing import List

import cysoftmax


def package_parent() -> str:
    """The directory holding the ``cysoftmax`` package this process imported."""
    return os.path.dirname(os.path.dirname(os.path.abspath(cysoftmax.__file__)))


def python_command(code: str) -> List[str]:
    """The command line of a child running ``code``, whose ``import cysoftmax`` finds
    :func:`package_parent`'s package (the working directory is not searched)."""
    preamble = ("import sys\n"
                "if sys.path and sys.path[0] == '':\n"
                "    del sys.path[0]\n"
                f"sys.path.insert(0, {package_parent()!r})\n")
    return [sys.executable, "-c", preamble + code]
