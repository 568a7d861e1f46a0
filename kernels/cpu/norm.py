"""Batch-norm forward/backward (training mode) as parallel Numba loops over channels
(twin: kernels/cuda/norm.cu). Sums are accumulated in float64 whatever the data type, and the variance
is taken in two passes, so float32 inputs with a large mean stay accurate.
"""
import numpy as np
from numba import njit, prange

# reassoc: lets the float64 sums below run as several vector accumulators instead of one chain of
# dependent additions (4 cycles each); no flag that assumes away NaN or inf.
OPTS = dict(parallel=True, cache=True, error_model="numpy", fastmath={"reassoc", "nsz", "contract"})


@njit(**OPTS)
def _forward(x, weight, bias, eps, y, mean, var):
    N, C, L = x.shape
    M = N * L
    for c in prange(C):
        s = 0.0
        for n in range(N):
            for l in range(L):
                s += x[n, c, l]
        mu = s / M
        s2 = 0.0
        for n in range(N):
            for l in range(L):
                d = x[n, c, l] - mu
                s2 += d * d
        v = s2 / M
        scale = weight[c] / np.sqrt(v + eps)
        shift = bias[c] - mu * scale
        for n in range(N):
            for l in range(L):
                y[n, c, l] = x[n, c, l] * scale + shift
        mean[c], var[c] = mu, v


@njit(**OPTS)
def _backward(dy, x, weight, mean, invstd, dx, dweight, dbias):
    N, C, L = x.shape
    M = N * L
    for c in prange(C):
        sdy = 0.0
        sdyx = 0.0
        mu, inv = mean[c], invstd[c]
        for n in range(N):
            for l in range(L):
                g = dy[n, c, l]
                sdy += g
                sdyx += g * (x[n, c, l] - mu) * inv
        k = weight[c] * inv / M
        for n in range(N):
            for l in range(L):
                xhat = (x[n, c, l] - mu) * inv
                dx[n, c, l] = k * (M * dy[n, c, l] - sdy - xhat * sdyx)
        dweight[c], dbias[c] = sdyx, sdy


def batchnorm_forward(x, weight, bias, eps):
    C = x.shape[1]
    y = np.empty_like(x)
    mean, var = np.empty(C, x.dtype), np.empty(C, x.dtype)
    _forward(np.ascontiguousarray(x), weight, bias, eps, y, mean, var)
    return y, mean, var


def batchnorm_backward(dy, x, weight, mean, invstd):
    C = x.shape[1]
    dx = np.empty_like(x)
    dweight, dbias = np.empty(C, x.dtype), np.empty(C, x.dtype)
    _backward(np.ascontiguousarray(dy), np.ascontiguousarray(x), weight, mean, invstd, dx, dweight, dbias)
    return dx, dweight, dbias
