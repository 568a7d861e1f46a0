"""Numerical gradient checking: compare a layer's backward pass with central differences.

For a random direction R shaped like the output, L(x) = sum(forward(x) * R) is a scalar whose gradient
is exactly what ``backward(R)`` must return. Each input and parameter element is nudged by +-eps and

    dL/dtheta ~ (L(theta + eps) - L(theta - eps)) / (2 eps)      (error O(eps^2), so float64 is needed)

is compared with the analytic value: |analytic - numeric| <= atol + rtol * |numeric| element by element.
"""
from __future__ import annotations

import numpy as np

from minitorch_cifar import backend


class GradcheckError(AssertionError):
    pass


def _numeric_grad(loss, array, eps):
    grad = np.zeros(array.shape, dtype=np.float64)
    flat = array.reshape(-1)  # a view: writes go into the array the forward pass reads
    for i in range(flat.size):
        original = flat[i].item()
        flat[i] = original + eps
        plus = loss()
        flat[i] = original - eps
        minus = loss()
        flat[i] = original
        grad.reshape(-1)[i] = (plus - minus) / (2 * eps)
    return grad


def gradcheck(module_or_fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0, check_params=True):
    """Check the gradient of the first input and of every parameter; raise GradcheckError on a mismatch.

    ``module_or_fn`` is a Module (or any object with ``forward``/``backward``), or a pair of functions
    ``(forward, backward)``. ``inputs`` is one array or a tuple whose first element is differentiated and
    whose other elements are passed along unchanged (e.g. the targets of a loss). Everything must be
    float64. Returns ``{name: max |analytic - numeric|}`` for a report.
    """
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    x, rest = inputs[0], inputs[1:]
    if isinstance(module_or_fn, tuple):
        forward, backward = module_or_fn
        module = None
    else:
        module = module_or_fn
        forward, backward = module.forward, module.backward
    params = list(module.named_parameters()) if check_params and hasattr(module, "named_parameters") else []
    for name, arr in [("input", x)] + [(n, p.data) for n, p in params]:
        if arr.dtype != np.float64:
            raise ValueError(f"gradcheck needs float64 for {name}, got {arr.dtype}: use model.astype(np.float64)")
    states = module.rng_states() if hasattr(module, "rng_states") else {}

    def run():
        if states:
            module.set_rng_states(states)  # the same dropout mask on every evaluation
        return forward(x, *rest)

    out = run()
    direction = backend.asarray(np.random.default_rng(seed).standard_normal(np.shape(out)))

    def loss():
        return float((run() * direction).sum())

    if module is not None and hasattr(module, "zero_grad"):
        module.zero_grad()
    analytic = {"input": backward(direction if np.ndim(out) else float(direction))}
    analytic.update({n: p.grad.copy() for n, p in params})
    report = {}
    for name, arr in [("input", x)] + [(n, p.data) for n, p in params]:
        a = backend.to_numpy(analytic[name]).astype(np.float64)
        numeric = _numeric_grad(loss, arr, eps)
        if a.shape != numeric.shape:
            raise GradcheckError(f"gradient of {name}: backward returned shape {a.shape}, expected {numeric.shape}")
        excess = np.abs(a - numeric) - (atol + rtol * np.abs(numeric))
        report[name] = float(np.abs(a - numeric).max(initial=0))
        if excess.size and excess.max() > 0:
            i = np.unravel_index(excess.argmax(), excess.shape)
            raise GradcheckError(
                f"gradient of {name} is wrong at index {tuple(int(v) for v in i)}: backward gives {a[i]:.10g}, "
                f"central differences give {numeric[i]:.10g} (|diff| {abs(a[i] - numeric[i]):.3g}, "
                f"atol {atol}, rtol {rtol}); {int((excess > 0).sum())} of {excess.size} elements fail"
            )
    return report
