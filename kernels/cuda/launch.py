"""Launchers for the CUDA kernels in this folder, with the signatures of the reference functions they
replace (minitorch_cifar/nn/conv.py, pool.py, norm.py). CuPy is handed in by minitorch_cifar.backend
(the one module that imports it); nothing here imports it.

Kernels are named ``<name>_f32`` / ``<name>_f64``; elementwise ones use grid-stride loops, so the grid is
capped and any problem size is covered.
"""
import numpy as np

BLOCK = 256
MAX_BLOCKS = 65535


def grid_for(total):
    return (max(1, min(MAX_BLOCKS, (total + BLOCK - 1) // BLOCK)),)


def _size(h, k, stride, padding):
    return (h + 2 * padding - k) // stride + 1


def make_kernels(cp, raw):
    """raw(module, name) -> a compiled cupy RawKernel; returns {reference name: launcher}."""

    def kernel(module, name, dtype):
        return raw(module, f"{name}_{'f32' if np.dtype(dtype) == np.float32 else 'f64'}")

    def geometry(N, C, H, W, kh, kw, stride, padding):
        OH, OW = _size(H, kh, stride, padding), _size(W, kw, stride, padding)
        return OH, OW, tuple(np.int64(v) for v in (N, C, H, W, kh, kw, stride, padding, OH, OW))

    def im2col(x, kh, kw, stride, padding):
        x = cp.ascontiguousarray(x)
        N, C, H, W = x.shape
        OH, OW, g = geometry(N, C, H, W, kh, kw, stride, padding)
        col = cp.empty((C * kh * kw, N * OH * OW), dtype=x.dtype)
        kernel("conv", "im2col", x.dtype)(grid_for(col.size), (BLOCK,), (x, col) + g)
        return col

    def col2im(col, x_shape, kh, kw, stride, padding):
        col = cp.ascontiguousarray(col)
        N, C, H, W = x_shape
        _, _, g = geometry(N, C, H, W, kh, kw, stride, padding)
        dx = cp.empty(x_shape, dtype=col.dtype)
        kernel("conv", "col2im", col.dtype)(grid_for(dx.size), (BLOCK,), (col, dx) + g)
        return dx

    def maxpool_forward(x, kh, kw, stride, padding):
        x = cp.ascontiguousarray(x)
        N, C, H, W = x.shape
        OH, OW, g = geometry(N, C, H, W, kh, kw, stride, padding)
        out = cp.empty((N, C, OH, OW), dtype=x.dtype)
        arg = cp.empty((N, C, OH, OW), dtype=cp.uint8)
        kernel("pool", "maxpool_forward", x.dtype)(grid_for(out.size), (BLOCK,), (x, out, arg) + g)
        return out, arg

    def maxpool_backward(dout, arg, x_shape, kh, kw, stride, padding):
        dout = cp.ascontiguousarray(dout)
        N, C, H, W = x_shape
        _, _, g = geometry(N, C, H, W, kh, kw, stride, padding)
        dx = cp.empty(x_shape, dtype=dout.dtype)
        kernel("pool", "maxpool_backward", dout.dtype)(grid_for(dx.size), (BLOCK,), (dout, arg, dx) + g)
        return dx

    def batchnorm_forward(x, weight, bias, eps):
        x = cp.ascontiguousarray(x)
        N, C, L = x.shape
        y, mean, var = cp.empty_like(x), cp.empty(C, x.dtype), cp.empty(C, x.dtype)
        kernel("norm", "batchnorm_forward", x.dtype)((C,), (BLOCK,), (x, weight, bias, np.float64(eps), y, mean, var,
                                                                    np.int64(N), np.int64(C), np.int64(L)))
        return y, mean, var

    def batchnorm_backward(dy, x, weight, mean, invstd):
        dy, x = cp.ascontiguousarray(dy), cp.ascontiguousarray(x)
        N, C, L = x.shape
        dx, dw, db = cp.empty_like(x), cp.empty(C, x.dtype), cp.empty(C, x.dtype)
        kernel("norm", "batchnorm_backward", x.dtype)((C,), (BLOCK,), (dy, x, weight, mean, invstd.astype(x.dtype), dx, dw, db,
                                                                     np.int64(N), np.int64(C), np.int64(L)))
        return dx, dw, db

    return {"im2col": im2col, "col2im": col2im, "maxpool_forward": maxpool_forward,
            "maxpool_backward": maxpool_backward, "batchnorm_forward": batchnorm_forward,
            "batchnorm_backward": batchnorm_backward}
