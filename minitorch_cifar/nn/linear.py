"""Linear (fully connected) layer and Flatten.

Linear: y = x @ W.T + b with W of shape (out, in), as torch stores it. For a batch x (N, in):

    dL/dW = dL/dy.T @ x       (out, in): each weight W[o, i] meets x[:, i] on output o
    dL/db = sum over the batch of dL/dy
    dL/dx = dL/dy @ W         (N, in)

Cached: x.
"""
from __future__ import annotations

import math

from minitorch_cifar.nn.module import Module, Parameter, init_uniform


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True):
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)  # torch's default initialisation
        self.weight = Parameter(init_uniform(bound, (out_features, in_features)))
        self.bias = Parameter(init_uniform(bound, (out_features,))) if bias else None
        self._cache = None

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def forward(self, x):
        self.check_input(x, 2, self.in_features, "(N, in_features)")
        self._cache = x
        y = x @ self.weight.data.T
        return y if self.bias is None else y + self.bias.data

    def backward(self, dout):
        x = self.cached()
        self.weight.grad += dout.T @ x
        if self.bias is not None:
            self.bias.grad += dout.sum(axis=0)
        return dout @ self.weight.data


class Flatten(Module):
    """(N, ...) -> (N, prod(...)); backward reshapes the gradient back."""

    _cache = None

    def forward(self, x):
        self.check_input(x, range(2, 9), what="(N, ...)")
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self.cached())


class Scale(Module):
    """y = factor * x, a fixed multiplier (e.g. the 1/9 on the logits of the fast recipe)."""

    _cache = None

    def __init__(self, factor):
        self.factor = factor

    def extra_repr(self):
        return f"{self.factor}"

    def forward(self, x):
        self._cache = True
        return x * x.dtype.type(self.factor)

    def backward(self, dout):
        self.cached()
        return dout * dout.dtype.type(self.factor)
