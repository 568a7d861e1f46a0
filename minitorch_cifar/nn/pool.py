"""Pooling: the max or the mean of each window, and the global versions over the whole image.

Windows are visited one kernel offset (i, j) at a time: ``xpad[:, :, i::stride, j::stride]`` (cut to
OH x OW) is, for every output position at once, the pixel at offset (i, j) of its window. Overlapping
windows (stride < kernel) need nothing special.

MaxPool backward: y = max over the window, so dy/dx is 1 for the winning pixel and 0 for the others;
dL/dx gets dL/dy at the argmax of each window (the *first* maximum in row-major order on ties, as
torch does) and zero elsewhere, summed where windows overlap. Cached: the argmax offset per output.

AvgPool backward: y = (1/k) * sum of k pixels, so each pixel of a window gets dL/dy / k.
"""
from __future__ import annotations

from minitorch_cifar import backend
from minitorch_cifar.backend import kernel
from minitorch_cifar.nn.conv import output_size
from minitorch_cifar.nn.module import Module


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _windows(xpad, kh, kw, stride, OH, OW):
    """Yield (offset index, i, j, view) for each kernel offset; the view is (N, C, OH, OW)."""
    for i in range(kh):
        for j in range(kw):
            yield i * kw + j, i, j, xpad[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride]


def _pad(x, padding, value):
    xp = backend.array_module(x)
    if not padding:
        return x
    return xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=value)


@kernel
def maxpool_forward(x, kh, kw, stride, padding):
    """Returns the pooled output and, per output, the offset (i*kw + j) of its window's first maximum."""
    xp = backend.array_module(x)
    N, C, H, W = x.shape
    OH, OW = output_size(H, kh, stride, padding), output_size(W, kw, stride, padding)
    xpad = _pad(x, padding, -xp.inf)
    out = None
    for k, i, j, view in _windows(xpad, kh, kw, stride, OH, OW):
        if out is None:
            out, arg = view.copy(), xp.zeros(view.shape, dtype=xp.uint8)
            continue
        better = view > out  # strictly greater: ties keep the earlier offset
        out = xp.where(better, view, out)
        arg[better] = k
    return out, arg


@kernel
def maxpool_backward(dout, arg, x_shape, kh, kw, stride, padding):
    xp = backend.array_module(dout)
    N, C, H, W = x_shape
    OH, OW = dout.shape[2:]
    dxpad = xp.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=dout.dtype)
    for k, i, j, view in _windows(dxpad, kh, kw, stride, OH, OW):
        view += xp.where(arg == k, dout, 0)
    return xp.ascontiguousarray(dxpad[:, :, padding:padding + H, padding:padding + W])


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size = _pair(kernel_size)
        self.stride = stride if stride is not None else self.kernel_size[0]
        self.padding = padding
        if padding > min(self.kernel_size) // 2:
            raise ValueError(f"MaxPool2d: padding {padding} must be at most half the kernel size {self.kernel_size}")
        self._cache = None

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def forward(self, x):
        self.check_input(x, 4)
        out, arg = maxpool_forward(x, *self.kernel_size, self.stride, self.padding)
        self._cache = (arg, x.shape)
        return out

    def backward(self, dout):
        arg, x_shape = self.cached()
        return maxpool_backward(dout, arg, x_shape, *self.kernel_size, self.stride, self.padding)


class AvgPool2d(Module):
    """Mean over each window; zero padding counts in the mean (torch's count_include_pad=True)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size = _pair(kernel_size)
        self.stride = stride if stride is not None else self.kernel_size[0]
        self.padding = padding
        self._cache = None

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def forward(self, x):
        self.check_input(x, 4)
        kh, kw = self.kernel_size
        N, C, H, W = x.shape
        OH, OW = output_size(H, kh, self.stride, self.padding), output_size(W, kw, self.stride, self.padding)
        out = None
        for _, _, _, view in _windows(_pad(x, self.padding, 0), kh, kw, self.stride, OH, OW):
            out = view.copy() if out is None else out + view
        self._cache = x.shape
        return out / (kh * kw)

    def backward(self, dout):
        N, C, H, W = self.cached()
        kh, kw = self.kernel_size
        p = self.padding
        xp = backend.array_module(dout)
        dxpad = xp.zeros((N, C, H + 2 * p, W + 2 * p), dtype=dout.dtype)
        share = dout / (kh * kw)
        for _, _, _, view in _windows(dxpad, kh, kw, self.stride, *dout.shape[2:]):
            view += share
        return xp.ascontiguousarray(dxpad[:, :, p:p + H, p:p + W])


class GlobalAvgPool2d(Module):
    """(N, C, H, W) -> (N, C): the mean of each feature map. Backward spreads dL/dy / (H*W) evenly."""

    def forward(self, x):
        self.check_input(x, 4)
        self._cache = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dout):
        N, C, H, W = self.cached()
        xp = backend.array_module(dout)
        return xp.broadcast_to((dout / (H * W))[:, :, None, None], (N, C, H, W)).copy()


class GlobalMaxPool2d(Module):
    """(N, C, H, W) -> (N, C): the max of each feature map. Backward: all of dL/dy to the (first) argmax."""

    def forward(self, x):
        self.check_input(x, 4)
        xp = backend.array_module(x)
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        arg = flat.argmax(axis=2)
        self._cache = (arg, x.shape)
        return xp.take_along_axis(flat, arg[:, :, None], axis=2)[:, :, 0]

    def backward(self, dout):
        arg, shape = self.cached()
        xp = backend.array_module(dout)
        planes = shape[0] * shape[1]
        dx = xp.zeros((planes, shape[2] * shape[3]), dtype=dout.dtype)
        dx[xp.arange(planes), arg.reshape(-1)] = dout.reshape(-1)
        return dx.reshape(shape)
