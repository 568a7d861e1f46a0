"""Batch normalisation: standardise each channel over the batch, then scale and shift it.

Training, per channel over the M = N*H*W values it has in the batch (N for BatchNorm1d):

    mu = mean(x),  var = mean((x - mu)^2),  xhat = (x - mu) / sqrt(var + eps),  y = gamma*xhat + beta

Backward. dL/dbeta = sum(dy) and dL/dgamma = sum(dy * xhat) come straight from y. For x, mu and var
depend on every x of the channel, so the chain rule through them gives (with g = gamma * dy):

    dL/dx = (1 / sqrt(var + eps)) * (g - mean(g) - xhat * mean(g * xhat))
          = gamma / (M*sqrt(var+eps)) * (M*dy - dL/dbeta - xhat * dL/dgamma)

Cached: x, the batch mean and 1/sqrt(var + eps) (xhat is recomputed rather than stored: one
activation-sized array less to keep per layer).

The running statistics follow torch: running = (1 - momentum) * running + momentum * batch, with the
*unbiased* batch variance var * M / (M - 1) for running_var; evaluation uses them instead of the batch.
The variance is computed in two passes (centre, then square), which stays non-negative in float32
where E[x^2] - E[x]^2 may not.
"""
from __future__ import annotations

from minitorch_cifar import backend
from minitorch_cifar.backend import kernel
from minitorch_cifar.nn.module import Module, Parameter


@kernel
def batchnorm_forward(x, weight, bias, eps):
    """x: (N, C, L). Returns y, the batch mean (C,) and the biased batch variance (C,)."""
    xp = backend.array_module(x)
    mean = x.mean(axis=(0, 2))
    centred = x - mean[None, :, None]
    var = (centred * centred).mean(axis=(0, 2))
    scale = weight / xp.sqrt(var + eps)
    return centred * scale[None, :, None] + bias[None, :, None], mean, var


@kernel
def batchnorm_backward(dy, x, weight, mean, invstd):
    """Returns dL/dx, dL/dweight, dL/dbias for the training-mode forward above."""
    M = x.shape[0] * x.shape[2]
    xhat = (x - mean[None, :, None]) * invstd[None, :, None]
    dbias = dy.sum(axis=(0, 2))
    dweight = (dy * xhat).sum(axis=(0, 2))
    dx = (weight * invstd / M)[None, :, None] * (M * dy - dbias[None, :, None] - xhat * dweight[None, :, None])
    return dx, dweight, dbias


@kernel
def batchnorm_eval_forward(x, scale, shift):
    """Evaluation: x (N, C, L) * scale + shift per channel (the running statistics folded into both)."""
    return x * scale[None, :, None] + shift[None, :, None]


class _BatchNorm(Module):
    buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    sync = None  # a distributed.Communicator: statistics over all ranks (--sync-bn)
    input_ndim = 4
    input_desc = "(N, C, H, W)"

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        xp, dtype = backend.xp(), backend.get_default_dtype()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(xp.ones(num_features, dtype=dtype))
        self.bias = Parameter(xp.zeros(num_features, dtype=dtype))
        self.running_mean = xp.zeros(num_features, dtype=dtype)
        self.running_var = xp.ones(num_features, dtype=dtype)
        self.num_batches_tracked = xp.zeros((), dtype=xp.int64)
        self._cache = None

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, x):
        self.check_input(x, self.input_ndim, self.num_features, self.input_desc)
        shape = x.shape
        x3 = x.reshape(shape[0], shape[1], -1)  # (N, C, L) covers both 1d and 2d
        xp = backend.array_module(x)
        if self.training:
            M = x3.shape[0] * x3.shape[2]
            if self.sync is not None:
                from minitorch_cifar.distributed import sync_batchnorm_forward
                y, mean, var, M = sync_batchnorm_forward(self.sync, x3, self.weight.data, self.bias.data, self.eps)
            elif M < 2:
                raise ValueError(f"{type(self).__name__}: training needs more than 1 value per channel, got shape {tuple(shape)}")
            else:
                y, mean, var = batchnorm_forward(x3, self.weight.data, self.bias.data, self.eps)
            m = self.momentum
            self.running_mean = (1 - m) * self.running_mean + m * mean.astype(self.running_mean.dtype)
            self.running_var = (1 - m) * self.running_var + m * (var * (M / (M - 1))).astype(self.running_var.dtype)
            self.num_batches_tracked = self.num_batches_tracked + 1
            invstd = 1 / xp.sqrt(var + self.eps)
            self._cache = ("train", x3, mean, invstd, shape, M)
        else:
            mean, invstd = self.running_mean.astype(x.dtype), 1 / xp.sqrt(self.running_var.astype(x.dtype) + self.eps)
            scale = self.weight.data * invstd
            y = batchnorm_eval_forward(x3, scale, self.bias.data - mean * scale)
            self._cache = ("eval", x3, mean, invstd, shape, None)
        return y.reshape(shape)

    def backward(self, dout):
        mode, x3, mean, invstd, shape, M = self.cached()
        dy = dout.reshape(x3.shape)
        if mode == "train" and self.sync is not None:
            from minitorch_cifar.distributed import sync_batchnorm_backward
            dx, dweight, dbias = sync_batchnorm_backward(self.sync, dy, x3, self.weight.data, mean, invstd, M)
        elif mode == "train":
            dx, dweight, dbias = batchnorm_backward(dy, x3, self.weight.data, mean, invstd)
        else:  # running statistics are constants: y is an affine function of x
            xhat = (x3 - mean[None, :, None]) * invstd[None, :, None]
            dweight, dbias = (dy * xhat).sum(axis=(0, 2)), dy.sum(axis=(0, 2))
            dx = dy * (self.weight.data * invstd)[None, :, None]
        self.weight.grad += dweight
        self.bias.grad += dbias
        return dx.reshape(shape)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, H, W) for each channel of an (N, C, H, W) input."""


class BatchNorm1d(_BatchNorm):
    """Batch norm over N for each feature of an (N, C) input (or over (N, L) of an (N, C, L) input)."""
    input_ndim = (2, 3)
    input_desc = "(N, C) or (N, C, L)"
