"""Independent SymPy re-derivation of the softmax cross-entropy loss and gradient.

The package checks the mathematics behind the compiled kernels of
``cysoftmax`` without sharing any code with them:

``symbolic.expressions``
    the definitions (loss, class weights, label smoothing, ignore_index, batch
    reductions, probability targets, z-loss, soft-capping, the linear layer and
    the classifier) and the closed forms the kernels implement, as SymPy
    expressions;
``symbolic.derivation``
    ``python -m symbolic``: proves each step of the lecture notes'
    derivation and every closed form against ``sympy.diff`` of its
    definition, the kernels' rewrites and convexity, for a general number of
    classes and exhaustively for small ones, and the chain rule through the
    fused linear layer and the case study's classifier (general sizes and every
    size up to 3);
``symbolic.evaluate``
    evaluates the closed forms with mpmath at high precision;
``symbolic.cases``
    ``python -m symbolic.cases``: writes the reference cases
    ``tests/data/reference_cases.json`` used by the cross-check tests;
``symbolic.cases_options``
    ``python -m symbolic.cases_options``: the same for the further options,
    ``tests/data/reference_cases_options.json``;
``symbolic.cases_linear``
    ``python -m symbolic.cases_linear``: the same for the fused linear layer
    (``linear_softmax_cross_entropy``) and the classifier's regularised loss
    (``linear_softmax_loss``), ``tests/data/reference_cases_linear.json``.
"""
