"""Conv2d: a convolution turned into one matrix product by im2col.

im2col copies every receptive field of the input into a column of a matrix. For an input with C
channels, a kh x kw kernel and an output of OH x OW positions per image::

            n=0, all OH*OW positions    n=1 ...        (columns: N*OH*OW, image-major)
    c=0,i=0,j=0 [ x[0,0,p0+0,q0+0]  ...  | ...  ]
    c=0,i=0,j=1 [ x[0,0,p0+0,q0+1]  ...  | ...  ]
      ...                                              (rows: C*kh*kw, channel-major, then kernel
    c=C-1,i,j   [ ...                    | ...  ]       row i, then kernel column j)

Row order (c, i, j) is the order of ``weight.reshape(F, C*kh*kw)`` for a torch-layout weight (F, C, kh,
kw), so the whole convolution is ``W2 @ col``: a (F, C*kh*kw) @ (C*kh*kw, N*OH*OW) GEMM, which BLAS
runs near the machine's peak. Its (F, N*OH*OW) result is reordered to (N, F, OH, OW).

Backward, with Y = W2 @ col + b and G = dL/dY laid out as (F, N*OH*OW):

    dL/dW2  = G @ col.T                (each weight meets every column it multiplied)
    dL/db   = G summed over columns
    dL/dcol = W2.T @ G
    dL/dx   = col2im(dL/dcol)          (a pixel inside several windows sums their gradients)

Cached: the column matrix (to form dL/dW without redoing im2col) and the input shape.

Precision: after ``mc.set_float32_matmul_precision("medium")`` (torch's switch of the same name) both
operands of each product are rounded to bfloat16 first (``backend.gemm_operand``), the sums stay float32.
The numba backend then runs them on Intel MKL's bfloat16 GEMM (kernels/cpu/bf16.py), several times faster
on CPUs with AMX; here they are float32 products of the rounded numbers, the reference for that path.

This file is the reference. The numba backend swaps in kernels/cpu/conv.py's ``conv2d_forward`` and
``conv2d_backward`` whole: for stride-1 "same" convolutions, kw shifted copies of each image and kh GEMMs
(no column matrix, no col2im, no reorders: read its comments after this file); otherwise the products
above over chunks of a few images whose columns stay in cache, rebuilt in backward instead of stored
(memory: x instead of col).
"""
from __future__ import annotations

import math

from minitorch_cifar import backend
from minitorch_cifar.backend import kernel
from minitorch_cifar.nn.module import Module, Parameter, init_uniform


def output_size(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


@kernel
def im2col(x, kh, kw, stride, padding):
    """(N, C, H, W) -> (C*kh*kw, N*OH*OW): one kernel offset (i, j) at a time, all pixels at once."""
    xp = backend.array_module(x)
    N, C, H, W = x.shape
    OH, OW = output_size(H, kh, stride, padding), output_size(W, kw, stride, padding)
    xpad = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else x
    col = xp.empty((C, kh, kw, N, OH, OW), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = xpad[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride]  # (N, C, OH, OW)
            col[:, i, j] = window.transpose(1, 0, 2, 3)
    return col.reshape(C * kh * kw, N * OH * OW)


@kernel
def col2im(col, x_shape, kh, kw, stride, padding):
    """The adjoint of im2col: scatter-add every column entry back to the pixel it was copied from."""
    xp = backend.array_module(col)
    N, C, H, W = x_shape
    OH, OW = output_size(H, kh, stride, padding), output_size(W, kw, stride, padding)
    col = col.reshape(C, kh, kw, N, OH, OW)
    dxpad = xp.zeros((C, N, H + 2 * padding, W + 2 * padding), dtype=col.dtype)
    for i in range(kh):
        for j in range(kw):
            dxpad[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] += col[:, i, j]
    dx = dxpad[:, :, padding:padding + H, padding:padding + W]
    return xp.ascontiguousarray(dx.transpose(1, 0, 2, 3))


@kernel
def gemm_to_nchw(y, bias, N):
    """(F, N*OH*OW) GEMM output + bias -> (N, F, OH, OW), in one pass."""
    xp = backend.array_module(y)
    F = y.shape[0]
    out = xp.empty((N, F, y.shape[1] // N), dtype=y.dtype)
    y = y.reshape(F, N, -1).transpose(1, 0, 2)
    if bias is None:
        out[...] = y
    else:
        xp.add(y, bias[None, :, None], out=out)
    return out


@kernel
def nchw_to_gemm(dout):
    """(N, F, OH, OW) -> (F, N*OH*OW): the layout of the GEMM output, for the backward products."""
    xp = backend.array_module(dout)
    N, F = dout.shape[:2]
    return xp.ascontiguousarray(dout.reshape(N, F, -1).transpose(1, 0, 2)).reshape(F, -1)


@kernel
def conv2d_forward(x, weight, bias, stride, padding):
    """The whole convolution: im2col, one GEMM, reorder (+ bias). Returns (output, what backward needs)."""
    N = x.shape[0]
    F, C, kh, kw = weight.shape
    OH, OW = output_size(x.shape[2], kh, stride, padding), output_size(x.shape[3], kw, stride, padding)
    col = im2col(x, kh, kw, stride, padding)
    y = backend.gemm_operand(weight.reshape(F, -1)) @ backend.gemm_operand(col)
    return gemm_to_nchw(y, bias, N).reshape(N, F, OH, OW), (col, x.shape)


@kernel
def conv2d_backward(dout, saved, weight, stride, padding, need_dx=True, need_db=True):
    """Returns (dL/dx or None, dL/dweight, dL/dbias or None)."""
    col, x_shape = saved
    F, C, kh, kw = weight.shape
    grad = nchw_to_gemm(dout)  # (F, N*OH*OW)
    grad_g, col_g = backend.gemm_operand(grad), backend.gemm_operand(col)  # (bfloat16-rounded under "medium")
    dweight = (grad_g @ col_g.T).reshape(weight.shape)
    dx = col2im(backend.gemm_operand(weight.reshape(F, -1)).T @ grad_g, x_shape, kh, kw, stride, padding) if need_dx else None
    return dx, dweight, grad.sum(axis=1) if need_db else None


class Conv2d(Module):
    input_grad = True  # False: backward returns None instead of dL/dx (nothing before it trains; see Sequential)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if min(in_channels, out_channels, kh, kw, stride) < 1 or padding < 0:
            raise ValueError("Conv2d: channels, kernel size and stride must be >= 1 and padding >= 0")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        bound = 1 / math.sqrt(in_channels * kh * kw)  # torch's default (kaiming_uniform, a=sqrt(5))
        self.weight = Parameter(init_uniform(bound, (out_channels, in_channels, kh, kw)))
        self.bias = Parameter(init_uniform(bound, (out_channels,))) if bias else None
        self._cache = None

    def extra_repr(self):
        kh, kw = self.kernel_size
        return f"{self.in_channels}, {self.out_channels}, kernel_size=({kh}, {kw}), stride={self.stride}, padding={self.padding}"

    def forward(self, x):
        self.check_input(x, 4, self.in_channels)
        H, W = x.shape[2:]
        kh, kw = self.kernel_size
        if output_size(H, kh, self.stride, self.padding) < 1 or output_size(W, kw, self.stride, self.padding) < 1:
            raise ValueError(f"Conv2d({self.extra_repr()}): input {H}x{W} is smaller than the kernel")
        out, self._cache = conv2d_forward(x, self.weight.data, None if self.bias is None else self.bias.data,
                                          self.stride, self.padding)
        return out

    def backward(self, dout):
        dx, dweight, dbias = conv2d_backward(dout, self.cached(), self.weight.data, self.stride, self.padding,
                                             self.input_grad, self.bias is not None)
        self.weight.grad += dweight
        if self.bias is not None:
            self.bias.grad += dbias
        return dx
