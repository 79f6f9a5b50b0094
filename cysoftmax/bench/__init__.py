"""Benchmark of cysoftmax against a memory floor, NumPy and the installed peers.

Usage::

    python -m cysoftmax.bench [--quick] [--json | --markdown]
                              [--shapes 300x3,4096x1000] [--dtypes float32,float64]
                              [--threads 1,all] [--targets avx2,baseline]
                              [--peers numpy,torch,sklearn,jax] [--casestudy-iters N]
                              [--jax-processes N] [--save-json FILE] [--no-cpu-probe]

Two operations are timed for every shape, dtype and thread setting:

``loss+grad``
    ``softmax_cross_entropy(scores, labels, out=grad, num_threads=t)`` -- mean
    loss and gradient, the gradient written into a preallocated array.
``loss``
    ``cross_entropy(scores, labels, num_threads=t)`` -- mean loss only.

Each is compared, in the same run, with

* the floor: ``np.copyto(dst, scores)`` into a preallocated array for
  loss+grad (a gradient has to be written, and the scores read, at least once),
  ``scores.sum()`` (one read-only pass) for the loss. With ``t > 1`` threads
  the floor is the faster of that call and the array split into ``t`` chunks
  copied (summed) at once on ``t`` threads, so that it is a floor for ``t``
  threads too (:mod:`cysoftmax.bench.floor`);
* ``numpy``: a plain vectorized NumPy implementation (:func:`numpy_loss_grad`,
  :func:`numpy_loss`);
* when installed (never required): PyTorch (``F.cross_entropy`` forward, plus
  ``torch.autograd.grad`` for the gradient; ``torch.set_num_threads(t)``),
  scikit-learn (``sklearn._loss.loss.HalfMultinomialLoss`` ``loss_gradient`` /
  ``loss``, which return per-sample losses and an unscaled gradient, with
  ``n_threads=t``) and JAX (a jitted ``value_and_grad`` of optax's
  ``softmax_cross_entropy_with_integer_labels(...).mean()``; run in a fresh
  child process per shape and dtype, pinned to ``t`` CPUs when ``t`` is not
  "all", because XLA's thread pool takes no thread count, and on the CPU:
  the child's environment has ``JAX_PLATFORMS=cpu``, so a GPU that JAX sees
  is not used).

Every time is the median over repeated samples; each sample times a
``perf_counter_ns`` loop over many calls, so the harness adds tens of
nanoseconds per call (the run reports how much). Ratios are ours / other: a
ratio below 1 means cysoftmax takes less time.

The case study entry times one training run of the CS231n two-layer network
(spiral data, 100 hidden units) with :class:`cysoftmax.TwoLayerNet` against
the notes' own NumPy loop (:func:`cysoftmax.casestudy.notes_two_layer_numpy`).

Child processes (JAX, the CPU probe) import the same cysoftmax as the process
that starts them (:mod:`cysoftmax.bench.children`).

``python -m cysoftmax.bench.load`` (:mod:`cysoftmax.bench.load`) times single
calls alone and beside busy processes.

``python -m cysoftmax.bench.torch_training`` (:mod:`cysoftmax.bench.torch_training`)
times a PyTorch training step of an MLP classifier with ``cysoftmax.torch``'s loss
against PyTorch's, with the peak memory of each, and the loss alone.

Modules: :mod:`~cysoftmax.bench.timing` (the harness),
:mod:`~cysoftmax.bench.inputs` (shapes, arrays), :mod:`~cysoftmax.bench.floor`,
:mod:`~cysoftmax.bench.peers` (the implementations and the JAX child),
:mod:`~cysoftmax.bench.machine` (CPU, versions, CPU probe),
:mod:`~cysoftmax.bench.runner` (:func:`run`), :mod:`~cysoftmax.bench.report`
(goals, text and markdown), :mod:`~cysoftmax.bench.cli`.
"""

from .cli import build_parser, main
from .floor import FLOOR_NAME, floor_loops
from .inputs import DEFAULT_SHAPES, DTYPES, KINDS, empty_apart, make_inputs, parse_shapes
from .machine import cpu_info, cpu_probe
from .peers import PEERS, numpy_loss, numpy_loss_grad, ours_loop, peer_missing, run_jax_child
from .report import evaluate_goals, format_markdown, format_text
from .runner import casestudy_entry, overhead_section, run
from .timing import Loop, Timing, loop_of, measure, measure_group, on_target, with_setting

__all__ = [
    "DEFAULT_SHAPES", "DTYPES", "FLOOR_NAME", "KINDS", "PEERS", "Loop", "Timing",
    "build_parser", "casestudy_entry", "cpu_info", "cpu_probe", "empty_apart",
    "evaluate_goals", "floor_loops", "format_markdown", "format_text", "loop_of", "main",
    "make_inputs", "measure", "measure_group", "numpy_loss", "numpy_loss_grad", "on_target",
    "ours_loop", "overhead_section", "parse_shapes", "peer_missing", "run", "run_jax_child",
    "with_setting",
]
