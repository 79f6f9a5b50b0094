"""The machine a run is on: CPU, versions of the libraries, and what the CPUs deliver."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from importlib import metadata
from typing import Any, Dict, List, Optional

import cysoftmax

from .children import python_command

VERSION_PACKAGES = {"numpy": "numpy", "Cython": "Cython", "torch": "torch",
                    "sklearn": "scikit-learn", "jax": "jax", "jaxlib": "jaxlib",
                    "optax": "optax"}


def package_version(package: str) -> Optional[str]:
    """The installed version of distribution ``package``, or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def versions() -> Dict[str, Optional[str]]:
    """Python's, cysoftmax's and :data:`VERSION_PACKAGES`' versions (None: not installed)."""
    out: Dict[str, Optional[str]] = {"python": platform.python_version(),
                                     "cysoftmax": cysoftmax.__version__}
    out.update((name, package_version(dist)) for name, dist in VERSION_PACKAGES.items())
    return out


def loadavg() -> Optional[List[float]]:
    """The 1, 5 and 15 minute load averages, rounded, where the system has them."""
    if not hasattr(os, "getloadavg"):
        return None
    return [round(x, 2) for x in os.getloadavg()]


def _cpuinfo_fields() -> Dict[str, str]:
    """The fields of the first processor in /proc/cpuinfo (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        text = ""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # first processor only
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_info() -> Dict[str, Any]:
    info: Dict[str, Any] = {"model": platform.processor() or platform.machine()}
    fields = _cpuinfo_fields()
    if "model name" in fields:
        info["model"] = fields["model name"]
        for key, name in (("vendor_id", "vendor"), ("cpu family", "family"),
                          ("model", "model_number"), ("stepping", "stepping")):
            if key in fields:
                info[name] = fields[key]
        flags = fields.get("flags", "").split()
        info["simd_flags"] = [f for f in ("avx2", "fma", "avx512f", "avx512bw") if f in flags]
        info["hypervisor"] = "hypervisor" in flags
    info["logical_cpus"] = os.cpu_count()
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    info["platform"] = platform.platform()
    load = loadavg()
    if load is not None:
        info["loadavg_at_start"] = load
    return info


_PROBES = {
    "python": "import time\nt = time.perf_counter()\nx = 0\n"
              "for i in range(3_000_000):\n    x += i * i\n"
              "print(time.perf_counter() - t)\n",
    "simd": "import time\nimport numpy as np\n"
            "x = np.linspace(-5, 5, 16384, dtype=np.float32)\ny = np.empty_like(x)\n"
            "t = time.perf_counter()\nfor _ in range(15_000):\n    np.exp(x, out=y)\n"
            "print(time.perf_counter() - t)\n",
}


def _run_children(code: str, k: int) -> List[float]:
    """Run ``k`` children of ``code`` at once; the number each prints."""
    procs = [subprocess.Popen(python_command(code), stdout=subprocess.PIPE, text=True)
             for _ in range(k)]
    return [float(p.communicate()[0]) for p in procs]


def cpu_probe(rounds: int = 3) -> Dict[str, Any]:
    """Do two busy processes each run at full speed at once?

    Times two workloads -- a pure-Python loop, and ``np.exp`` over an array
    that stays in L1/L2 (vector arithmetic) -- in one child process alone,
    then in two child processes at once. ``parallel_speed`` is (time alone) /
    (time of each of the two): about 1.0 when the two CPUs are real cores,
    0.5 when they share one (or another program keeps one busy).
    """
    out: Dict[str, Any] = {}
    for name, code in _PROBES.items():
        alone: List[float] = []
        together: List[float] = []
        for _ in range(rounds):
            alone.append(_run_children(code, 1)[0])
            together.extend(_run_children(code, 2))
        a, t = statistics.median(alone), statistics.median(together)
        out[name] = {"alone_s": a, "two_at_once_s": t, "parallel_speed": a / t}
    out["cores_delivered"] = 2 * min(v["parallel_speed"] for v in out.values())
    return out
