"""Elementwise activations over the flattened array, split across threads (NumPy runs these on one core
and allocates a temporary per operation; one fused loop does neither)."""
import math

import numpy as np
from numba import njit, prange

OPTS = dict(parallel=True, cache=True, error_model="numpy", fastmath=True)


@njit(**OPTS)
def _relu(x, y):
    for i in prange(x.size):
        y[i] = x[i] if x[i] > 0 else 0


@njit(**OPTS)
def _relu_backward(dout, y, dx):
    for i in prange(y.size):
        dx[i] = dout[i] if y[i] > 0 else 0


@njit(**OPTS)
def _gelu(x, y):
    for i in prange(x.size):
        v = x[i]
        y[i] = 0.5 * v * (1.0 + math.erf(v * 0.7071067811865476))


@njit(**OPTS)
def _gelu_backward(dout, x, dx):
    for i in prange(x.size):
        v = x[i]
        cdf = 0.5 * (1.0 + math.erf(v * 0.7071067811865476))
        pdf = math.exp(-0.5 * v * v) * 0.3989422804014327
        dx[i] = dout[i] * (cdf + v * pdf)


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def _unary(kernel, x):
    y = np.empty(x.shape, dtype=x.dtype)
    kernel(_flat(x), y.reshape(-1))
    return y


def _binary(kernel, dout, saved):
    dx = np.empty(saved.shape, dtype=dout.dtype)
    kernel(_flat(dout), _flat(saved), dx.reshape(-1))
    return dx


def relu_forward(x):
    return _unary(_relu, x)


def relu_backward(dout, y):
    return _binary(_relu_backward, dout, y)


def gelu_forward(x):
    return _unary(_gelu, x)


def gelu_backward(dout, x):
    return _binary(_gelu_backward, dout, x)
