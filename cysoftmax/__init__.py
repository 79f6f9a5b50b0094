"""cysoftmax: a compiled, fused softmax cross-entropy loss and gradient for NumPy.

The loss of a row of scores ``f`` with target ``y`` is ``L = -f_y + log sum_j e^{f_j}``
and its gradient is ``dL/df_k = P_k - 1(y = k)`` with ``P = softmax(f)``.  The
kernels are Cython over vectorized C, run on OpenMP threads without the GIL, and
are cross-checked against a SymPy derivation (``python -m symbolic``).

Main functions
--------------
softmax_cross_entropy  loss and gradient in one pass
cross_entropy          loss only
softmax, log_softmax   row-wise (log-)probabilities
linear_softmax_cross_entropy, linear_cross_entropy
                       a linear layer and the loss fused, in chunks of rows

Built on them
-------------
linear_softmax_loss, two_layer_softmax_loss   model losses and gradients
SoftmaxClassifier, TwoLayerNet                estimators (L-BFGS or gradient descent)
datasets.spiral                               the case study's 2-D spiral
(``python -m cysoftmax.casestudy`` reruns the case study; ``python -m cysoftmax.bench`` times it all)
"""

import importlib
import importlib.machinery
import os
import sys

from . import _openmp_env


def _has_build(directory):
    """Whether ``directory`` holds a compiled ``_kernels`` module."""
    return any(os.path.exists(os.path.join(directory, "_kernels" + suffix))
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _import_kernels():
    """The compiled module.  A source tree without its build (the repository's root is
    the current directory, so ``import cysoftmax`` finds the sources before the
    installed package) borrows the installed package's build of the same name."""
    try:
        return importlib.import_module(__name__ + "._kernels")
    except ImportError as exc:
        here = os.path.dirname(os.path.abspath(__file__))
        if _has_build(here):  # built here but not importable: that error is the news
            raise
        for entry in sys.path:
            candidate = os.path.join(os.path.abspath(entry or "."), __name__)
            if candidate != here and os.path.isdir(candidate) and _has_build(candidate):
                __path__.append(candidate)
                return importlib.import_module(__name__ + "._kernels")
        raise ImportError(
            f"cysoftmax's compiled extension is neither built in {here} nor installed "
            f"elsewhere on sys.path ({exc}). Install the package (pip install .), or build "
            f"it in place with: python setup.py build_ext --inplace") from exc


with _openmp_env.passive_wait_unless_configured():
    _kernels = _import_kernels()  # loads the OpenMP runtime, which reads the setting once
from . import datasets
from ._api import cross_entropy, log_softmax, softmax, softmax_cross_entropy
from ._linear import linear_cross_entropy, linear_softmax_cross_entropy
from .models import (
    ConvergenceWarning,
    DataConversionWarning,
    NotFittedError,
    SoftmaxClassifier,
    TwoLayerNet,
    linear_softmax_loss,
    two_layer_softmax_loss,
)

__version__ = "0.1.0"


def simd_target() -> str:
    """The instruction-set target the kernels run on.

    One of ``build_info()["supported_targets"]``: "baseline", "avx2", "avx512" or the
    test-only "avx2-w64".  Chosen at import as the widest of "avx512", "avx2" and
    "baseline" the CPU supports; the environment variable ``CYSOFTMAX_TARGET`` forces one.
    """
    return _kernels.current_target()


def build_info() -> dict:
    """How this build runs: OpenMP, default thread count, compiled and usable SIMD targets.

    ``forked_child`` is True in a process created by ``fork()`` after import; kernels
    then run on one thread (see the README's "Threads").  ``openmp_wait_policy`` says
    how idle OpenMP threads wait: "passive" (they sleep; set by cysoftmax), the
    user's ``OMP_WAIT_POLICY``/``GOMP_SPINCOUNT``, or that the runtime was loaded
    before cysoftmax with its own default.
    """
    return {
        "version": __version__,
        "openmp": _kernels.openmp_enabled(),
        "default_num_threads": _kernels.default_num_threads(),
        "openmp_wait_policy": _openmp_env.wait_policy() if _kernels.openmp_enabled() else None,
        "forked_child": _kernels.forked_child(),
        "targets": _kernels.targets(),
        "supported_targets": _kernels.supported_targets(),
        "target": _kernels.current_target(),
    }


__all__ = [
    "softmax_cross_entropy",
    "cross_entropy",
    "softmax",
    "log_softmax",
    "linear_softmax_cross_entropy",
    "linear_cross_entropy",
    "linear_softmax_loss",
    "two_layer_softmax_loss",
    "SoftmaxClassifier",
    "TwoLayerNet",
    "NotFittedError",
    "ConvergenceWarning",
    "DataConversionWarning",
    "datasets",
    "simd_target",
    "build_info",
]
