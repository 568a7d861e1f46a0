"""Inverted dropout: in training, zero each value with probability p and scale the survivors by 1/(1-p),
so the expected output equals the input and evaluation needs no rescaling (it is the identity).

Backward: y = x * mask / (1 - p), so dL/dx = dL/dy * mask / (1 - p). Cached: the scaled mask.
The layer owns a seeded generator, so the same seed gives the same masks.
"""
from __future__ import annotations

from minitorch_cifar import backend
from minitorch_cifar.nn.module import Module


class Dropout(Module):
    def __init__(self, p=0.5, seed=None):
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p, self.seed = p, seed
        self.rng = backend.random_generator(seed)
        self._cache = None

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x):
        self.check_input(x, range(1, 9), what="of any shape")
        if not self.training or self.p == 0:
            self._cache = 1
            return x
        keep = self.rng.random(x.shape, dtype=x.dtype) >= self.p
        self._cache = keep * x.dtype.type(1 / (1 - self.p))
        return x * self._cache

    def backward(self, dout):
        return dout * self.cached()
