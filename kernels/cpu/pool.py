"""Max-pool forward/backward as parallel Numba loops, one (n, c) plane per iteration (twin: kernels/cuda/pool.cu).

The argmax is the offset i*kw + j of the first maximum in the window, as in the reference; padding
reads as -inf and is never materialised.
"""
import numpy as np
from numba import njit, prange

OPTS = dict(parallel=True, cache=True, error_model="numpy")


@njit(**OPTS)
def _maxpool_forward(x, out, arg, kh, kw, stride, padding):
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for oh in range(OH):
            for ow in range(OW):
                best, best_k = -np.inf, 0
                for i in range(kh):
                    h = oh * stride + i - padding
                    if h < 0 or h >= H:
                        continue
                    for j in range(kw):
                        w = ow * stride + j - padding
                        if 0 <= w < W and x[n, c, h, w] > best:
                            best, best_k = x[n, c, h, w], i * kw + j
                out[n, c, oh, ow] = best
                arg[n, c, oh, ow] = best_k


@njit(**OPTS)
def _maxpool_backward(dout, arg, dx, kw, stride, padding):
    N, C, OH, OW = dout.shape
    for nc in prange(N * C):  # windows of one plane overlap only within that plane: no races
        n, c = nc // C, nc % C
        for oh in range(OH):
            for ow in range(OW):
                k = arg[n, c, oh, ow]
                i, j = k // kw, k % kw
                dx[n, c, oh * stride + i - padding, ow * stride + j - padding] += dout[n, c, oh, ow]


@njit(**OPTS)
def _maxpool_forward_unpadded(x, out, arg, kh, kw, stride):
    """No padding: no bounds checks, and the inner loop runs along a row of outputs (vectorisable)."""
    N, C = x.shape[0], x.shape[1]
    OH, OW = out.shape[2], out.shape[3]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        xs, o, a = x[n, c], out[n, c], arg[n, c]
        for oh in range(OH):
            h0 = oh * stride
            for ow in range(OW):
                o[oh, ow] = xs[h0, ow * stride]
                a[oh, ow] = 0
            for i in range(kh):
                for j in range(kw):
                    if i == 0 and j == 0:
                        continue
                    k = i * kw + j
                    for ow in range(OW):
                        v = xs[h0 + i, ow * stride + j]
                        if v > o[oh, ow]:  # strictly greater: the first maximum wins ties
                            o[oh, ow] = v
                            a[oh, ow] = k


@njit(**OPTS)
def _maxpool2x2_forward(x, out, arg):
    """The common case (2x2 windows, stride 2, no padding) in one pass per row of outputs, the four
    candidates compared in the order the general loop visits them, without branches: vectorisable."""
    N, C = x.shape[0], x.shape[1]
    OH, OW = out.shape[2], out.shape[3]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        xs, o, a = x[n, c], out[n, c], arg[n, c]
        for oh in range(OH):
            top, bottom = xs[2 * oh], xs[2 * oh + 1]
            for ow in range(OW):
                best, k = top[2 * ow], np.uint8(0)
                for v, kv in ((top[2 * ow + 1], np.uint8(1)), (bottom[2 * ow], np.uint8(2)), (bottom[2 * ow + 1], np.uint8(3))):
                    k = kv if v > best else k  # strictly greater: the first maximum wins ties
                    best = v if v > best else best
                o[oh, ow] = best
                a[oh, ow] = k


@njit(**OPTS)
def _maxpool2x2_backward(dout, arg, dx):
    """2x2 windows, stride 2, no padding: they tile the image, so each input pixel is written exactly once
    (dout at the window's argmax, 0 elsewhere; 0 in a last odd row or column) and dx needs no zeroing first."""
    N, C, OH, OW = dout.shape
    H, W = dx.shape[2], dx.shape[3]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        d, a, g = dout[n, c], arg[n, c], dx[n, c]
        for oh in range(OH):
            top, bottom = g[2 * oh], g[2 * oh + 1]
            for ow in range(OW):
                k, v = a[oh, ow], d[oh, ow]
                top[2 * ow] = v if k == 0 else 0
                top[2 * ow + 1] = v if k == 1 else 0
                bottom[2 * ow] = v if k == 2 else 0
                bottom[2 * ow + 1] = v if k == 3 else 0
            for w in range(2 * OW, W):
                top[w] = 0
                bottom[w] = 0
        for h in range(2 * OH, H):
            g[h, :] = 0


def maxpool_forward(x, kh, kw, stride, padding):
    N, C, H, W = x.shape
    OH, OW = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    arg = np.empty((N, C, OH, OW), dtype=np.uint8)
    if (kh, kw, stride, padding) == (2, 2, 2, 0):
        _maxpool2x2_forward(np.ascontiguousarray(x), out, arg)
    elif padding == 0:
        _maxpool_forward_unpadded(np.ascontiguousarray(x), out, arg, kh, kw, stride)
    else:
        _maxpool_forward(np.ascontiguousarray(x), out, arg, kh, kw, stride, padding)
    return out, arg


def maxpool_backward(dout, arg, x_shape, kh, kw, stride, padding):
    if (kh, kw, stride, padding) == (2, 2, 2, 0):
        dx = np.empty(x_shape, dtype=dout.dtype)
        _maxpool2x2_backward(np.ascontiguousarray(dout), arg, dx)
        return dx
    dx = np.zeros(x_shape, dtype=dout.dtype)
    _maxpool_backward(np.ascontiguousarray(dout), arg, dx, kw, stride, padding)
    return dx
