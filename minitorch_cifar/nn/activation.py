"""Elementwise nonlinearities. Each backward is dL/dx = dL/dy * f'(x), with f' written out below.

What each caches is the cheaper of x and y to rebuild f' from: ReLU, Tanh and Sigmoid keep y
(f' is a function of y alone), the others keep x.
"""
from __future__ import annotations

import math

from minitorch_cifar import backend
from minitorch_cifar.backend import kernel
from minitorch_cifar.nn.module import Module


@kernel
def relu_forward(x):
    return backend.array_module(x).maximum(x, 0)


@kernel
def relu_backward(dout, y):
    return dout * (y > 0)


@kernel
def gelu_forward(x):
    return 0.5 * x * (1 + backend.erf(x * (1 / math.sqrt(2))))


@kernel
def gelu_backward(dout, x):
    xp = backend.array_module(x)
    cdf = 0.5 * (1 + backend.erf(x * (1 / math.sqrt(2))))
    pdf = xp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
    return dout * (cdf + x * pdf)


class _Elementwise(Module):
    _cache = None

    def forward(self, x):
        self.check_input(x, range(1, 9), what="of any shape")
        y = self.f(x)
        self._cache = (x, y)
        return y

    def backward(self, dout):
        x, y = self.cached()
        return self.df(dout, x, y)


class ReLU(_Elementwise):
    """y = max(x, 0);  dy/dx = 1 where y > 0, else 0."""

    def f(self, x):
        return relu_forward(x)

    def df(self, dout, x, y):
        return relu_backward(dout, y)

    def forward(self, x):  # keeps only y: x is not needed, which saves one activation of memory
        y = super().forward(x)
        self._cache = (None, y)
        return y


class LeakyReLU(_Elementwise):
    """y = x if x > 0 else a*x;  dy/dx = 1 or a."""

    def __init__(self, negative_slope=0.01):
        self.negative_slope = negative_slope

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"

    def f(self, x):
        return backend.array_module(x).where(x > 0, x, x * self.negative_slope)

    def df(self, dout, x, y):
        return backend.array_module(x).where(x > 0, dout, dout * self.negative_slope)


class ELU(_Elementwise):
    """y = x if x > 0 else alpha*(exp(x) - 1);  dy/dx = 1, or alpha*exp(x) = y + alpha."""

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def extra_repr(self):
        return f"alpha={self.alpha}"

    def f(self, x):
        xp = backend.array_module(x)
        return xp.where(x > 0, x, self.alpha * xp.expm1(xp.minimum(x, 0)))

    def df(self, dout, x, y):
        return backend.array_module(x).where(x > 0, dout, dout * (y + self.alpha))


class GELU(_Elementwise):
    """y = x * Phi(x), Phi the standard normal CDF (the exact erf form, torch's default);
    dy/dx = Phi(x) + x * phi(x), phi the standard normal density."""

    def f(self, x):
        return gelu_forward(x)

    def df(self, dout, x, y):
        return gelu_backward(dout, x)

    def forward(self, x):
        y = super().forward(x)
        self._cache = (x, None)
        return y


class Tanh(_Elementwise):
    """y = tanh(x);  dy/dx = 1 - y^2."""

    def f(self, x):
        return backend.array_module(x).tanh(x)

    def df(self, dout, x, y):
        return dout * (1 - y * y)


class Sigmoid(_Elementwise):
    """y = 1 / (1 + exp(-x)) = (1 + tanh(x/2)) / 2 (the tanh form never overflows);  dy/dx = y(1 - y)."""

    def f(self, x):
        return 0.5 * (1 + backend.array_module(x).tanh(0.5 * x))

    def df(self, dout, x, y):
        return dout * y * (1 - y)


ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "elu": ELU, "gelu": GELU, "tanh": Tanh, "sigmoid": Sigmoid}
