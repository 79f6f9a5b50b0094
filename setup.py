"""Build script for the compiled part of cysoftmax.

The extension ``cysoftmax._kernels`` is Cython (``_kernels.pyx``) over C
(``src/cysm_kernels.c``).  The compile flags are chosen in ``build_ext`` by the
type of the compiler setuptools uses, and OpenMP is used when that same compiler
can build and run a small OpenMP program; otherwise the build goes on without it
(the kernels then run on one thread) and says so (``pip install -v`` shows it).
No ``-march=native``: the C file compiles its hot kernels for several instruction
sets itself and picks one at import.

Environment variables:

``CYSOFTMAX_OPENMP=0`` or ``=1``
    forces the OpenMP choice.
``CYSOFTMAX_WERROR=1``
    makes every compiler warning an error (the code builds warning-free at
    ``-Wall -Wextra`` with GCC; tests/test_sanitizers.py builds this way).
``CYSOFTMAX_SANITIZE=address,undefined``
    (any comma-separated ``-fsanitize=`` list) builds an instrumented extension for
    tests/test_sanitizers.py: the sanitizers on, -O1 -g, frame pointers kept, the
    first undefined-behaviour report fatal.  Such a build needs the sanitizer
    runtime preloaded to import (``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``).
    Make it in a copy of the sources (as the test does) or with ``--force``:
    setuptools does not rebuild when only the flags change.
"""

import os
import re
import subprocess
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

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

# Flags by compiler type: (optimization and warnings, OpenMP, warnings as errors).
UNIX_FLAGS = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-Wno-psabi", "-Wall", "-Wextra"]
FLAGS = {
    "unix": (UNIX_FLAGS, ["-fopenmp"], ["-Werror"]),
    "mingw32": (UNIX_FLAGS, ["-fopenmp"], ["-Werror"]),
    "msvc": (["/O2", "/W3"], ["/openmp"], ["/WX"]),
}


def openmp_works(compiler, flag):
    """Compile, link and run a tiny OpenMP program with ``compiler`` and ``flag``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as fh:
            fh.write(OPENMP_TEST)
        try:
            objects = compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
            exe = os.path.join(tmp, "omp_probe")
            compiler.link_executable(objects, exe, extra_postargs=[flag])
            out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
        except Exception:  # a CompileError, LinkError or failed run: no OpenMP
            return False
        return out.strip() == "1"


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
    return flags + ["-O1", "-g"], flags  # the sanitizers' -O1 comes after -O3 and wins


class BuildExt(build_ext):
    """build_ext that picks flags for the compiler it is about to use."""

    def build_extensions(self):
        kind = self.compiler.compiler_type
        base, openmp_flag, werror = FLAGS.get(kind, ([], [], []))
        forced = os.environ.get("CYSOFTMAX_OPENMP", "").strip()
        if forced in ("0", "1"):
            use_openmp = forced == "1" and bool(openmp_flag)
        else:
            use_openmp = bool(openmp_flag) and openmp_works(self.compiler, openmp_flag[0])
        print(f"cysoftmax: building {'with' if use_openmp else 'WITHOUT'} OpenMP"
              + ("" if use_openmp else " (kernels will run on one thread)")
              + f" ({kind} compiler)", file=sys.stderr)
        compile_args = base + (openmp_flag if use_openmp else [])
        link_args = list(openmp_flag if use_openmp and kind != "msvc" else [])
        if os.environ.get("CYSOFTMAX_WERROR", "").strip() == "1":
            compile_args += werror
        sanitize = sanitizer_flags()
        if sanitize:
            compile_args += sanitize[0]
            link_args += sanitize[1]
            print(f"cysoftmax: building with sanitizers ({' '.join(sanitize[1])})",
                  file=sys.stderr)
        for ext in self.extensions:
            ext.extra_compile_args = compile_args + list(ext.extra_compile_args)
            ext.extra_link_args = link_args + list(ext.extra_link_args)
        super().build_extensions()


extensions = [
    Extension(
        "cysoftmax._kernels",
        sources=["cysoftmax/_kernels.pyx", "cysoftmax/src/cysm_kernels.c"],
        depends=["cysoftmax/src/cysm_kernels.h", "cysoftmax/src/cysm_kernels_impl.h",
                 "cysoftmax/src/cysm_kernels_target.h",
                 "cysoftmax/src/cysm_exp_poly.h"],
        include_dirs=["cysoftmax", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3},
        compile_time_env={},
    ),
    cmdclass={"build_ext": BuildExt},
)
