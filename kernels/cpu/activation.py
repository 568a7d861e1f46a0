"""Elementwise activations over the flattened array, split across threads (NumPy runs these on one core
and allocates a temporary per operation; one fused loop does neither).

GELU needs erf. In float64 it calls libm's erf (exact to the last bit, as the reference). In float32
it uses a rational approximation (the one Eigen and XLA use for float erf: |error| < 1e-7 on [-4, 4],
and erf(+-4) = +-1 to float32 precision beyond), which the compiler can vectorise: libm's erf is a
scalar call per element and made GELU 10% of a training step.
"""
import math

import numpy as np
from numba import njit, prange

OPTS = dict(parallel=True, cache=True, error_model="numpy", fastmath=True)
f32 = np.float32
A1, A3, A5, A7 = f32(-1.60960333262415e-02), f32(-2.95459980854025e-03), f32(-7.34990630326855e-04), f32(-5.69250639462346e-05)
A9, A11, A13 = f32(-2.10102402082508e-06), f32(2.77068142495902e-08), f32(-2.72614225801306e-10)
B0, B2, B4, B6, B8 = f32(-1.42647390514189e-02), f32(-7.37332916720468e-03), f32(-1.68282697438203e-03), f32(-2.13374055278905e-04), f32(-1.45660718464996e-05)
SQRT_HALF, INV_SQRT_2PI = f32(0.7071067811865476), f32(0.3989422804014327)
HALF, ONE, FOUR = f32(0.5), f32(1.0), f32(4.0)


@njit(inline="always", fastmath=True, error_model="numpy")
def _erf32(x):
    x = min(max(x, -FOUR), FOUR)
    x2 = x * x
    p = ((((((A13 * x2 + A11) * x2 + A9) * x2 + A7) * x2 + A5) * x2 + A3) * x2 + A1) * x
    q = (((B8 * x2 + B6) * x2 + B4) * x2 + B2) * x2 + B0
    return p / q


# exp for GELU's derivative, vectorisable (libm's expf is a scalar call per element): 2^y with y = x*log2(e),
# split as 2^k * 2^f, k = round(y), |f| <= 1/2: 2^k from a table, 2^f by its Taylor series to degree 7
# (relative error below 1e-8 for |f| <= 1/2). Only x <= 0 is needed (x = -v*v/2); below 2^-126 it returns 0.
LOG2E, LN2 = f32(1.4426950408889634), f32(0.6931471805599453)
TWO_TO_K = np.array([2.0 ** k for k in range(-126, 1)], np.float32)  # 2^k at index k + 126
EXP2_TAYLOR = tuple(f32(0.6931471805599453 ** n / math.factorial(n)) for n in range(8))


@njit(inline="always", fastmath=True, error_model="numpy")
def _exp_nonpositive32(x):
    y = max(x * LOG2E, f32(-126))
    k = np.floor(y + HALF)
    f = y - k
    c0, c1, c2, c3, c4, c5, c6, c7 = EXP2_TAYLOR
    p = ((((((c7 * f + c6) * f + c5) * f + c4) * f + c3) * f + c2) * f + c1) * f + c0
    return TWO_TO_K[np.int32(k) + 126] * p


@njit(**OPTS)
def _relu(x, y):
    for i in prange(x.size):
        y[i] = x[i] if x[i] > 0 else 0


@njit(**OPTS)
def _relu_backward(dout, y, dx):
    for i in prange(y.size):
        dx[i] = dout[i] if y[i] > 0 else 0


@njit(**OPTS)
def _gelu32(x, y):
    for i in prange(x.size):
        v = x[i]
        y[i] = HALF * v * (ONE + _erf32(v * SQRT_HALF))


@njit(**OPTS)
def _gelu32_backward(dout, x, dx):
    for i in prange(x.size):
        v = x[i]
        cdf = HALF * (ONE + _erf32(v * SQRT_HALF))
        pdf = _exp_nonpositive32(-HALF * v * v) * INV_SQRT_2PI
        dx[i] = dout[i] * (cdf + v * pdf)


@njit(**OPTS)
def _gelu64(x, y):
    for i in prange(x.size):
        v = x[i]
        y[i] = 0.5 * v * (1.0 + math.erf(v * 0.7071067811865476))


@njit(**OPTS)
def _gelu64_backward(dout, x, dx):
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
    kernel(_flat(dout).astype(saved.dtype, copy=False), _flat(saved), dx.reshape(-1))
    return dx


def relu_forward(x):
    return _unary(_relu, x)


def relu_backward(dout, y):
    return _binary(_relu_backward, dout, y)


def gelu_forward(x):
    return _unary(_gelu32 if x.dtype == np.float32 else _gelu64, x)


def gelu_backward(dout, x):
    return _binary(_gelu32_backward if x.dtype == np.float32 else _gelu64_backward, dout, x)
