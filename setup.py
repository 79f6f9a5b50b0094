"""Build script for the compiled part of cysoftmax.

The extension ``cysoftmax._kernels`` is Cython (``_kernels.pyx``) over C
(``src/cysm_kernels.c``).  OpenMP is used when the compiler can build and run a
small OpenMP program; otherwise the build goes on without it (the kernels then
run on one thread) and says so.  ``CYSOFTMAX_OPENMP=0`` or ``=1`` forces the
choice.  No ``-march=native``: the C file compiles its hot kernels for several
instruction sets itself and picks one at import.

``CYSOFTMAX_SANITIZE=address,undefined`` (any comma-separated ``-fsanitize=``
list) builds an instrumented extension for tests/test_sanitizers.py: the
sanitizers on, -O1 -g, frame pointers kept, the first undefined-behaviour
report fatal.  Such a build needs the sanitizer runtime preloaded to import
(``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``).  Make it in a copy of the
sources (as the test does) or with ``--force``: setuptools does not rebuild when
only the flags change.  Unset, the build is the normal one.
"""

import os
import re
import subprocess
import sys
import sysconfig
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

OPENMP_TEST = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d\n", n > 0);
    return 0;
}
"""


def _compiler():
    return (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()


def openmp_works():
    """Compile, link and run a tiny OpenMP program with -fopenmp."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.c")
        exe = os.path.join(tmp, "omp_probe")
        with open(src, "w") as fh:
            fh.write(OPENMP_TEST)
        try:
            subprocess.run(_compiler() + ["-fopenmp", src, "-o", exe], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return False
        return out.strip() == "1"


def use_openmp():
    forced = os.environ.get("CYSOFTMAX_OPENMP", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return openmp_works()


OPENMP = use_openmp()
print(f"cysoftmax: building {'with' if OPENMP else 'WITHOUT'} OpenMP"
      + ("" if OPENMP else " (kernels will run on one thread)"), file=sys.stderr)

compile_args = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-Wno-psabi"]
link_args = []
if OPENMP:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")


def sanitizer_flags():
    """(compile flags, link flags) for CYSOFTMAX_SANITIZE, or None when it is unset."""
    value = os.environ.get("CYSOFTMAX_SANITIZE", "").strip()
    if not value:
        return None
    if not re.fullmatch(r"[a-z0-9-]+(,[a-z0-9-]+)*", value):
        sys.exit(f"CYSOFTMAX_SANITIZE must be a comma-separated list such as "
                 f"'address,undefined', got {value!r}")
    flags = [f"-fsanitize={value}", "-fno-omit-frame-pointer"]
    if "undefined" in value.split(","):
        flags.append("-fno-sanitize-recover=undefined")
    return flags + ["-O1", "-g"], flags


SANITIZE = sanitizer_flags()
if SANITIZE:
    # the sanitizers' -O1 comes after -O3 and wins
    compile_args += SANITIZE[0]
    link_args += SANITIZE[1]
    print(f"cysoftmax: building with sanitizers ({' '.join(SANITIZE[1])})", file=sys.stderr)

extensions = [
    Extension(
        "cysoftmax._kernels",
        sources=["cysoftmax/_kernels.pyx", "cysoftmax/src/cysm_kernels.c"],
        depends=["cysoftmax/src/cysm_kernels.h", "cysoftmax/src/cysm_kernels_impl.h",
                 "cysoftmax/src/cysm_kernels_target.h",
                 "cysoftmax/src/cysm_exp_poly.h"],
        include_dirs=["cysoftmax", numpy.get_include()],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3},
        compile_time_env={},
    ),
)
