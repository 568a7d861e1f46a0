"""Batch norm as parallel Numba loops over channels: forward and backward in training mode (twin:
kernels/cuda/norm.cu), and the forward in evaluation mode. Sums are accumulated in float64 whatever the
data type, and the variance is taken in two passes, so float32 inputs with a large mean stay accurate.
The same per-channel sum gives a convolution its bias gradient (channel_sums, at the bottom).

Each pass over a channel is one inlined function. The per-rank kernels run them back to back for a
channel while it is warm in cache; the synchronised ones (--sync-bn) run each pass over all channels,
then sum its per-channel results over the ranks before the next pass needs them.
"""
import numpy as np
from numba import njit, prange

# reassoc: lets the float64 sums below run as several vector accumulators instead of one chain of
# dependent additions (4 cycles each); no flag that assumes away NaN or inf.
FAST = {"reassoc", "nsz", "contract"}
OPTS = dict(parallel=True, cache=True, error_model="numpy", fastmath=FAST)
PASS = dict(inline="always", cache=True, error_model="numpy", fastmath=FAST)


# ----------------------------------------------------------------------------- one channel, one pass
@njit(**PASS)
def _sum(x, c):
    s = 0.0
    for n in range(x.shape[0]):
        for l in range(x.shape[2]):
            s += x[n, c, l]
    return s


@njit(**PASS)
def _centred_square_sum(x, c, mu):
    s2 = 0.0
    for n in range(x.shape[0]):
        for l in range(x.shape[2]):
            d = x[n, c, l] - mu
            s2 += d * d
    return s2


@njit(**PASS)
def _scale_shift(x, c, scale, shift, y):
    for n in range(x.shape[0]):
        for l in range(x.shape[2]):
            y[n, c, l] = x[n, c, l] * scale + shift


@njit(**PASS)
def _grad_sums(dy, x, c, mu, inv):
    """sum(dy) and sum(dy * xhat): dL/dbias and dL/dweight of the channel."""
    sdy = 0.0
    sdyx = 0.0
    for n in range(x.shape[0]):
        for l in range(x.shape[2]):
            g = dy[n, c, l]
            sdy += g
            sdyx += g * (x[n, c, l] - mu) * inv
    return sdy, sdyx


@njit(**PASS)
def _input_grad(dy, x, c, mu, inv, k, M, sdy, sdyx, dx):
    for n in range(x.shape[0]):
        for l in range(x.shape[2]):
            xhat = (x[n, c, l] - mu) * inv
            dx[n, c, l] = k * (M * dy[n, c, l] - sdy - xhat * sdyx)


# ----------------------------------------------------------------------------- per rank: all passes of a channel
@njit(**OPTS)
def _forward(x, weight, bias, eps, y, mean, var):
    M = x.shape[0] * x.shape[2]
    for c in prange(x.shape[1]):
        mu = _sum(x, c) / M
        v = _centred_square_sum(x, c, mu) / M
        scale = weight[c] / np.sqrt(v + eps)
        _scale_shift(x, c, scale, bias[c] - mu * scale, y)
        mean[c], var[c] = mu, v


@njit(**OPTS)
def _backward(dy, x, weight, mean, invstd, dx, dweight, dbias):
    M = x.shape[0] * x.shape[2]
    for c in prange(x.shape[1]):
        sdy, sdyx = _grad_sums(dy, x, c, mean[c], invstd[c])
        _input_grad(dy, x, c, mean[c], invstd[c], weight[c] * invstd[c] / M, M, sdy, sdyx, dx)
        dweight[c], dbias[c] = sdyx, sdy


def batchnorm_forward(x, weight, bias, eps):
    C = x.shape[1]
    y = np.empty_like(x)
    mean, var = np.empty(C, x.dtype), np.empty(C, x.dtype)
    _forward(np.ascontiguousarray(x), weight, bias, eps, y, mean, var)
    return y, mean, var


def batchnorm_eval_forward(x, scale, shift):
    """One parallel pass: NumPy's x * scale + shift takes two, on one thread, with a temporary."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _scale_shift_all(x, scale.astype(x.dtype), shift.astype(x.dtype), y)
    return y


def batchnorm_backward(dy, x, weight, mean, invstd):
    C = x.shape[1]
    dx = np.empty_like(x)
    dweight, dbias = np.empty(C, x.dtype), np.empty(C, x.dtype)
    _backward(np.ascontiguousarray(dy), np.ascontiguousarray(x), weight, mean, invstd, dx, dweight, dbias)
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- over ranks: one pass at a time
@njit(**OPTS)
def _sums(x, out):
    for c in prange(x.shape[1]):
        out[c] = _sum(x, c)


@njit(**OPTS)
def _centred_square_sums(x, mean, out):
    for c in prange(x.shape[1]):
        out[c] = _centred_square_sum(x, c, mean[c])


@njit(**OPTS)
def _scale_shift_all(x, scale, shift, y):
    for c in prange(x.shape[1]):
        _scale_shift(x, c, scale[c], shift[c], y)


@njit(**OPTS)
def _all_grad_sums(dy, x, mean, invstd, sdy, sdyx):
    for c in prange(x.shape[1]):
        sdy[c], sdyx[c] = _grad_sums(dy, x, c, mean[c], invstd[c])


@njit(**OPTS)
def _input_grad_all(dy, x, weight, mean, invstd, M, sdy, sdyx, dx):
    for c in prange(x.shape[1]):
        _input_grad(dy, x, c, mean[c], invstd[c], weight[c] * invstd[c] / M, M, sdy[c], sdyx[c], dx)


def sync_batchnorm_forward(comm, x, weight, bias, eps):
    x = np.ascontiguousarray(x)
    N, C, L = x.shape
    sums = np.empty(C + 1)
    _sums(x, sums[:C])
    sums[C] = N * L
    sums = comm.sum(sums)
    M = sums[C]
    mean = sums[:C] / M
    square_sums = np.empty(C)
    _centred_square_sums(x, mean, square_sums)
    var = comm.sum(square_sums) / M
    scale = weight / np.sqrt(var + eps)
    y = np.empty_like(x)
    _scale_shift_all(x, scale, bias - mean * scale, y)
    return y, mean.astype(x.dtype), var.astype(x.dtype), int(M)


def sync_batchnorm_backward(comm, dy, x, weight, mean, invstd, M):
    dy, x = np.ascontiguousarray(dy), np.ascontiguousarray(x)
    C = x.shape[1]
    local = np.empty((2, C))  # sum(dy), sum(dy * xhat) on this rank
    _all_grad_sums(dy, x, mean, invstd, local[0], local[1])
    total = comm.sum(local)
    dx = np.empty_like(x)
    _input_grad_all(dy, x, weight, mean, invstd, M, total[0], total[1], dx)
    return dx, local[1].astype(x.dtype), local[0].astype(x.dtype)


# ----------------------------------------------------------------------------- for the convolution
def channel_sums(x):
    """x (N, C, ...) summed over all but the channel axis, in one parallel pass: a convolution's bias
    gradient. NumPy's x.sum(axis=(0, 2, 3)) takes one thread."""
    x = np.ascontiguousarray(x)
    sums = np.empty(x.shape[1])
    _sums(x.reshape(x.shape[0], x.shape[1], -1), sums)
    return sums.astype(x.dtype)
