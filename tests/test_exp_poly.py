"""The kernels' exp coefficients are exactly what their generator writes."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATOR = os.path.join(ROOT, "cysoftmax", "src", "gen_exp_poly.py")


@pytest.mark.skipif(not os.path.exists(GENERATOR), reason="needs the source tree")
def test_exp_coefficients_regenerate_identically():
    proc = subprocess.run([sys.executable, GENERATOR, "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, (
        proc.stdout + proc.stderr
        + "\ncysoftmax/src/cysm_exp_poly.h is stale: regenerate with "
        "`python cysoftmax/src/gen_exp_poly.py` and rebuild"
    )
