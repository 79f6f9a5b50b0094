"""Shared fixtures: every SIMD target this CPU runs, both precisions, seeded generators."""

import os

# scikit-learn's check_estimator runs its array-API check only when SciPy is in array-API
# mode, which SciPy reads once, at import: set it before any test imports SciPy.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import cysoftmax  # noqa: E402
from cysoftmax import _kernels  # noqa: E402


@pytest.fixture(params=_kernels.supported_targets())
def simd_target(request):
    """Run the test once per instruction-set target the CPU supports."""
    before = _kernels.current_target()
    _kernels.set_target(request.param)
    yield request.param
    _kernels.set_target(before)


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    """The two precisions of the kernels."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(20261129)


def pytest_report_header(config):
    return f"cysoftmax build: {cysoftmax.build_info()}"
