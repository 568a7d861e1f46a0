"""im2col / col2im and the GEMM-layout reorders as parallel Numba loops (twin: kernels/cuda/conv.cu).

Same layouts as the reference in minitorch_cifar/nn/conv.py: col is (C*kh*kw, N*OH*OW), row
r = (c*kh + i)*kw + j, column n*OH*OW + oh*OW + ow. Padding is never materialised: an index that falls
outside the image reads (or drops) a zero.
"""
import numpy as np
from numba import njit, prange

OPTS = dict(parallel=True, cache=True, error_model="numpy", fastmath=False)


@njit(**OPTS)
def _im2col(x, col, kh, kw, stride, padding, OH, OW):
    N, C, H, W = x.shape
    P = OH * OW
    for r in prange(C * kh * kw):  # each row is written by one thread only
        c, ij = r // (kh * kw), r % (kh * kw)
        i, j = ij // kw, ij % kw
        for n in range(N):
            base = n * P
            for oh in range(OH):
                h = oh * stride + i - padding
                row_off = base + oh * OW
                if h < 0 or h >= H:
                    for ow in range(OW):
                        col[r, row_off + ow] = 0
                    continue
                for ow in range(OW):
                    w = ow * stride + j - padding
                    col[r, row_off + ow] = x[n, c, h, w] if 0 <= w < W else 0


@njit(**OPTS)
def _col2im(col, dx, kh, kw, stride, padding, OH, OW):
    N, C, H, W = dx.shape
    P = OH * OW
    for nc in prange(N * C):  # each (n, c) plane is summed into by one thread only: no races
        n, c = nc // C, nc % C
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for oh in range(OH):
                    h = oh * stride + i - padding
                    if h < 0 or h >= H:
                        continue
                    for ow in range(OW):
                        w = ow * stride + j - padding
                        if 0 <= w < W:
                            dx[n, c, h, w] += col[r, n * P + oh * OW + ow]


@njit(**OPTS)
def _gemm_to_nchw(y, bias, out):
    N, F, P = out.shape
    for nf in prange(N * F):
        n, f = nf // F, nf % F
        b = bias[f]
        for p in range(P):
            out[n, f, p] = y[f, n * P + p] + b


@njit(**OPTS)
def _nchw_to_gemm(dout, out):
    N, F, P = dout.shape
    for nf in prange(N * F):
        n, f = nf // F, nf % F
        for p in range(P):
            out[f, n * P + p] = dout[n, f, p]


def _out_size(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


def im2col(x, kh, kw, stride, padding):
    N, C, H, W = x.shape
    OH, OW = _out_size(H, kh, stride, padding), _out_size(W, kw, stride, padding)
    col = np.empty((C * kh * kw, N * OH * OW), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x), col, kh, kw, stride, padding, OH, OW)
    return col


def col2im(col, x_shape, kh, kw, stride, padding):
    N, C, H, W = x_shape
    dx = np.zeros(x_shape, dtype=col.dtype)
    _col2im(np.ascontiguousarray(col), dx, kh, kw, stride, padding,
            _out_size(H, kh, stride, padding), _out_size(W, kw, stride, padding))
    return dx


def gemm_to_nchw(y, bias, N):
    F = y.shape[0]
    out = np.empty((N, F, y.shape[1] // N), dtype=y.dtype)
    _gemm_to_nchw(y, np.zeros(F, y.dtype) if bias is None else bias, out)
    return out


def nchw_to_gemm(dout):
    N, F = dout.shape[:2]
    out = np.empty((F, dout.size // F), dtype=dout.dtype)
    _nchw_to_gemm(np.ascontiguousarray(dout).reshape(N, F, -1), out)
    return out
