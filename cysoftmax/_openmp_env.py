"""How idle OpenMP threads wait: passive (asleep) unless the user chose otherwise.

GNU OpenMP's threads spin for a while after each parallel region before they sleep.
On a machine where another process keeps a core busy, a spinning thread loses its
core to that process, and the next region cannot end before the scheduler gives the
core back (a time slice, milliseconds): a call that takes 100 us on one thread then
took 10 ms on two.  A sleeping thread is woken at once when work arrives, so the
kernels ask for ``OMP_WAIT_POLICY=passive``.  On a Xeon restricted to two CPUs,
4096x10 float32 with two threads: idle, 63 us spinning and 62 us passive; with a busy
process on one of the two CPUs, 10 ms spinning and 96 us passive (one thread: 90-114 us).

The runtime reads the setting once, when it is loaded, so it is set only around
the import of the compiled module and only if neither ``OMP_WAIT_POLICY`` nor
``GOMP_SPINCOUNT`` is set; the environment is restored afterwards.  If the runtime
was already loaded by another library, its setting stays and ``wait_policy()`` says so.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator, Optional

_USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_policy: Optional[str] = None
_SHARED_RUNTIME = re.compile(r"/libgomp\.so\.1(\.\d+)*$")


def _runtime_loaded() -> Optional[bool]:
    """Whether the shared GNU OpenMP runtime (libgomp.so.1) is mapped into this process;
    None where that cannot be told.  (torch ships a copy named libgomp.so.1, which then
    serves cysoftmax too; copies bundled under other names, libgomp-<hash>.so.1.0.0 as
    scikit-learn ships, are separate runtimes.)"""
    try:
        with open("/proc/self/maps") as fh:
            return any(_SHARED_RUNTIME.search(line) for line in fh)
    except OSError:
        return None


@contextlib.contextmanager
def passive_wait_unless_configured() -> Iterator[None]:
    """Set OMP_WAIT_POLICY=passive for the duration of the block, unless configured."""
    global _policy
    chosen = {k: os.environ[k] for k in _USER_VARIABLES if k in os.environ}
    if chosen:
        _policy = ", ".join(f"{k}={v}" for k, v in chosen.items()) + " (from the environment)"
        yield
        return
    if _runtime_loaded():
        _policy = "the OpenMP runtime's default (it was loaded before cysoftmax)"
        yield
        return
    os.environ["OMP_WAIT_POLICY"] = "passive"
    try:
        yield
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)
    _policy = "passive"


def wait_policy() -> Optional[str]:
    """How idle OpenMP threads wait in this process (see the module docstring)."""
    return _policy
