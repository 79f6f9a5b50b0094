"""Softmax classifiers after the CS231n case study: losses, gradients and estimators.

* :func:`linear_softmax_loss` -- loss and gradients of ``scores = X @ W + b``
  with L2 regularisation, the building block of a linear softmax classifier.
* :func:`two_layer_softmax_loss` -- the same for
  ``scores = relu(X @ W1 + b1) @ W2 + b2``.
* :class:`SoftmaxClassifier` and :class:`TwoLayerNet` -- estimators with
  scikit-learn's conventions (``fit``/``predict``/``predict_proba``/
  ``decision_function``/``score``, ``get_params``/``set_params``, its input
  checks and messages) that pass ``sklearn.utils.estimator_checks.
  check_estimator``. They train with L-BFGS (``solver="lbfgs"``, the default;
  needs SciPy) or with the notes' (minibatch) gradient descent
  (``solver="sgd"``). scikit-learn is not a dependency: when installed, it
  recognises them as classifiers (``is_classifier``, ``cross_val_score``,
  ``clone``).

In every case the loss of the output layer and its gradient with respect to
the scores come from the compiled kernel
:func:`cysoftmax.softmax_cross_entropy`; the layers around it are NumPy (BLAS)
matrix products. The training loops work in float64 on preallocated buffers:
the kernel writes the gradient over the score buffer (``out=``), the products
write into their outputs (``np.dot(..., out=...)``) and the ReLU mask is
applied in place, so an iteration allocates almost nothing.

Regularisation follows the notes: the loss gets ``0.5 * reg * sum(W**2)`` for
each weight matrix (biases are not regularised) and the gradient ``reg * W``.

This module is the public home of these names; the code lives in
``_losses`` (the loss functions and their argument checks), ``_workspaces``
(the forward/backward passes on preallocated buffers), ``_estimators`` (the
estimators), ``_solvers`` (gradient descent and L-BFGS) and
``_estimator_checks`` (the estimators' input and parameter checks, exceptions
and warnings).
"""

from __future__ import annotations

from cysoftmax._estimator_checks import ConvergenceWarning, DataConversionWarning, NotFittedError
from cysoftmax._estimators import SoftmaxClassifier, TwoLayerNet
from cysoftmax._losses import linear_softmax_loss, two_layer_softmax_loss

__all__ = [
    "ConvergenceWarning",
    "DataConversionWarning",
    "NotFittedError",
    "SoftmaxClassifier",
    "TwoLayerNet",
    "linear_softmax_loss",
    "two_layer_softmax_loss",
]

# Pickles, reprs and help() name the public module, not where the code lives.
for _public in (SoftmaxClassifier, TwoLayerNet, linear_softmax_loss, two_layer_softmax_loss):
    _public.__module__ = __name__
del _public
