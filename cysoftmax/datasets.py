"""Small synthetic data sets for examples and tests.

Only :func:`spiral` for now: the toy data of the CS231n "minimal neural
network case study", which a linear classifier cannot separate but a
two-layer network can.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_scalar

__all__ = ["spiral"]


def spiral(n_per_class=100, n_classes=3, noise=0.2, seed=None):
    """Points on ``n_classes`` interleaved spiral arms in the plane.

    This is the generator of the CS231n case study. For class ``j``::

        r = linspace(0, 1, N)                                   # radius
        t = linspace(4 j, 4 (j + 1), N) + noise * randn(N)      # angle
        X[class j] = c_[r * sin(t), r * cos(t)]

    with ``N = n_per_class``. Rows are grouped by class (class 0 first).

    Parameters
    ----------
    n_per_class : int, default 100
        Points per class (``N`` above), at least 1.
    n_classes : int, default 3
        Number of arms / classes (``K``), at least 1.
    noise : float, default 0.2
        Standard deviation of the Gaussian noise added to the angle, in
        radians. ``0`` gives noiseless arms.
    seed : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Passed to :func:`numpy.random.default_rng`. ``None`` draws fresh
        entropy from the operating system, so every call differs; an int
        makes the result reproducible. A ``Generator`` is used (and
        advanced) as is.

    Returns
    -------
    X : ndarray of shape (n_per_class * n_classes, 2), float64
        Coordinates, within the unit disc up to the noise-free radius.
    y : ndarray of shape (n_per_class * n_classes,), intp
        Class labels ``0 .. n_classes - 1``.

    Examples
    --------
    >>> X, y = spiral(n_per_class=100, n_classes=3, seed=0)
    >>> X.shape, y.shape, sorted(set(y.tolist()))
    ((300, 2), (300,), [0, 1, 2])
    """
    n_per_class = check_scalar(n_per_class, "n_per_class", "int", low=1)
    n_classes = check_scalar(n_classes, "n_classes", "int", low=1)
    noise = check_scalar(noise, "noise", "real", low=0, finite=True)
    rng = np.random.default_rng(seed)

    n = n_per_class
    X = np.empty((n * n_classes, 2), dtype=np.float64)
    y = np.empty(n * n_classes, dtype=np.intp)
    r = np.linspace(0.0, 1.0, n)
    for j in range(n_classes):
        rows = slice(n * j, n * (j + 1))
        t = np.linspace(j * 4, (j + 1) * 4, n) + rng.standard_normal(n) * noise
        X[rows, 0] = r * np.sin(t)
        X[rows, 1] = r * np.cos(t)
        y[rows] = j
    return X, y

