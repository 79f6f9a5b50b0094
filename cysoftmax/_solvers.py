"""The estimators' training loops: gradient descent and L-BFGS.

Both minimise the same objective -- the mean softmax cross-entropy from the
compiled kernel plus the L2 penalty -- through callables that the estimators
build on their preallocated workspaces (:mod:`cysoftmax._workspaces`):

* :func:`gradient_descent` (``solver="sgd"``) calls ``step(X, y)``, which
  updates the weights in place, for ``max_iter`` full-batch iterations or
  minibatch epochs;
* :func:`lbfgs` (``solver="lbfgs"``) hands ``loss_grad(theta)`` on the flat
  parameter vector to ``scipy.optimize.minimize(method="L-BFGS-B")``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._estimator_checks import ConvergenceWarning, sklearn_compatible


def gradient_descent(step, X, y, params, rng, name):
    """Run ``max_iter`` iterations (full batch) or epochs (minibatch).

    Parameters
    ----------
    step : callable
        ``step(Xb, yb)`` performs one update and returns the loss before it.
    X, y : ndarray
        Training rows and class indices.
    params : dict
        ``max_iter``, ``batch_size`` (None for full batch) and ``verbose``.
    rng : numpy.random.Generator or numpy.random.RandomState
        Draws the order of the rows in each minibatch epoch.
    name : str
        Estimator name for the progress lines.

    Returns
    -------
    history : ndarray of shape (max_iter,)
        The loss before each update for full-batch training; the row-weighted
        mean of the minibatch losses of each epoch otherwise.

    Warns
    -----
    RuntimeWarning
        When the last loss is not finite: training diverged.
    """
    n = X.shape[0]
    max_iter, verbose = params["max_iter"], params["verbose"]
    batch = params["batch_size"]
    history = np.empty(max_iter, dtype=np.float64)
    if batch is None or batch >= n:
        for it in range(max_iter):
            history[it] = step(X, y)
            if verbose and it % verbose == 0:
                print(f"{name} iteration {it}: loss {history[it]:.6f}", flush=True)
    else:
        Xb = np.empty((batch, X.shape[1]), dtype=X.dtype)
        yb = np.empty(batch, dtype=y.dtype)
        for epoch in range(max_iter):
            order = rng.permutation(n)
            total = 0.0
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                m = idx.shape[0]
                np.take(X, idx, axis=0, out=Xb[:m])
                np.take(y, idx, out=yb[:m])
                total += step(Xb[:m], yb[:m]) * m
            history[epoch] = total / n
            if verbose and epoch % verbose == 0:
                print(f"{name} epoch {epoch}: loss {history[epoch]:.6f}", flush=True)
    if not np.isfinite(history[-1]):
        warnings.warn(
            f"{name} training diverged (the loss is {history[-1]}); "
            "try a smaller learning_rate",
            RuntimeWarning,
            stacklevel=3,
        )
    return history


_NO_SCIPY = ("solver='lbfgs' needs SciPy, which is not installed; install it with "
             "'pip install scipy', or pass solver='sgd' (gradient descent, NumPy only)")


#: L-BFGS-B's ``ftol``: scikit-learn's (64 machine epsilons).  SciPy's default, 2.2e-9,
#: stops while the coefficients may still be 1e-5 (relative) or more from the minimiser.
LBFGS_FTOL = 64 * np.finfo(np.float64).eps


def lbfgs(loss_grad, theta0, params, name):
    """Minimise ``loss_grad`` from ``theta0`` with SciPy's L-BFGS-B.

    Parameters
    ----------
    loss_grad : callable
        ``loss_grad(theta) -> (loss, gradient)`` for a flat float64 vector.
    theta0 : ndarray of shape (n_parameters,)
        Starting point (not modified).
    params : dict
        ``max_iter`` (the most L-BFGS iterations), ``tol`` (stop when the
        largest gradient component is at most ``tol``; L-BFGS-B also stops
        when an iteration lowers the loss by a relative :data:`LBFGS_FTOL` or
        less) and ``verbose``.
    name : str
        Estimator name for the progress lines and the warnings.

    Returns
    -------
    theta : ndarray of shape (n_parameters,)
        The last iterate.
    history : ndarray of shape (n_iter,)
        The loss before each iteration.

    Warns
    -----
    ConvergenceWarning
        When L-BFGS stops before the gradient criterion is met (``max_iter``
        reached, or a line search failed, e.g. on a non-finite loss).
    """
    try:
        from scipy.optimize import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            minimize,
        )
    except ImportError:
        raise ImportError(_NO_SCIPY) from None

    verbose = params["verbose"]
    losses = []  # the loss at theta0, then after each iteration
    last = {"x": None, "loss": None}

    def record(loss):
        if verbose and len(losses) % verbose == 0:
            print(f"{name} iteration {len(losses)}: loss {loss:.6f}", flush=True)
        losses.append(loss)

    def fun(theta):
        loss, grad = loss_grad(theta)
        last["x"], last["loss"] = theta.copy(), loss
        if not losses:  # SciPy's first evaluation is at theta0
            record(loss)
        return loss, grad

    def callback(theta):
        # the accepted iterate is the last point the line search evaluated
        if last["x"] is not None and np.array_equal(theta, last["x"]):
            record(last["loss"])
        else:
            record(loss_grad(theta)[0])

    result = minimize(fun, np.array(theta0, dtype=np.float64), method="L-BFGS-B", jac=True,
                      callback=callback,
                      options={"maxiter": params["max_iter"], "gtol": params["tol"],
                               "ftol": LBFGS_FTOL})
    n_iter = int(result.nit)
    if result.status != 0:
        warnings.warn(
            sklearn_compatible(ConvergenceWarning)(
                f"{name}: L-BFGS stopped after {n_iter} iteration(s) without converging "
                f"({result.message}); increase max_iter, scale the data, or raise tol"
            ),
            stacklevel=3,
        )
    return np.asarray(result.x, dtype=np.float64), np.asarray(losses[:n_iter], dtype=np.float64)
