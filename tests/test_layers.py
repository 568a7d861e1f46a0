"""Every layer: float64 gradient check, forward and backward equal to torch, numba equal to numpy."""
import copy

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import minitorch_cifar as mc
from minitorch_cifar.torch_mirror import to_torch
from layer_cases import CASES

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _inputs(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    return x.astype(dtype), rng.standard_normal  # the second draws output-shaped directions


@pytest.mark.parametrize("name", CASES)
@SETTINGS
@given(data=st.data())
def test_gradcheck_float64(name, data, f64):
    make, shape = data.draw(CASES[name])
    layer = make()
    x, _ = _inputs(shape, np.float64, data.draw(st.integers(0, 999)))
    mc.gradcheck(layer, x, eps=1e-6, atol=1e-6, rtol=1e-5)


def _run(layer, x, dout_seed):
    y = layer.forward(x)
    dout = np.random.default_rng(dout_seed).standard_normal(y.shape).astype(x.dtype)
    layer.zero_grad()
    dx = layer.backward(dout)
    return y, dout, dx, {n: p.grad.copy() for n, p in layer.named_parameters()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", CASES)
@SETTINGS
@given(data=st.data())
def test_matches_torch(name, dtype, data, torch):
    mc.set_default_dtype(dtype)
    make, shape = data.draw(CASES[name])
    layer = make()
    x, _ = _inputs(shape, dtype, data.draw(st.integers(0, 999)))
    mirror = to_torch(layer)
    y, dout, dx, grads = _run(layer, x, 1)

    xt = torch.tensor(x, requires_grad=True)
    yt = mirror(xt)
    yt.backward(torch.from_numpy(dout))
    rtol = 1e-10 if dtype == np.float64 else 1e-4

    def close(ours, theirs, what):
        theirs = theirs.detach().numpy()
        scale = max(1.0, float(np.abs(theirs).max(initial=0)))
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * scale, err_msg=f"{name} {what}")

    close(y, yt, "forward")
    close(dx, xt.grad, "dL/dx")
    for (n, p) in mirror.named_parameters():
        close(grads[n], p.grad, f"dL/d{n}")
    for n, b in mirror.named_buffers():
        if b.dtype.is_floating_point:
            close(dict(layer.named_buffers())[n], b, n)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", CASES)
@SETTINGS
@given(data=st.data())
def test_numba_equals_numpy(name, dtype, data):
    mc.set_default_dtype(dtype)
    make, shape = data.draw(CASES[name])
    layer = make()
    twin = copy.deepcopy(layer)
    x, _ = _inputs(shape, dtype, data.draw(st.integers(0, 999)))
    reference = _run(layer, x, 1)
    with mc.use_backend("numba"):
        fast = _run(twin, x, 1)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    for ours, ref in zip(fast[2:3] + tuple([fast[0]]), reference[2:3] + tuple([reference[0]])):
        np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * 10)
    for n in reference[3]:
        np.testing.assert_allclose(fast[3][n], reference[3][n], rtol=rtol, atol=rtol * 10 * max(1, x.size))
