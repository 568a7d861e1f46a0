"""The structurally identical PyTorch module of a minitorch model, with the same weights.

One explicit rule per layer type (no magic): used by the cross-validation command and the tests.
Torch is imported here only, and only when called (it is a dev/test dependency, not a runtime one).
"""
from __future__ import annotations

import functools

import numpy as np

from minitorch_cifar import nn


@functools.lru_cache(maxsize=1)
def _torch_helpers():
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F

    class Residual(tnn.Module):
        def __init__(self, branch, shortcut=None):
            super().__init__()
            self.branch, self.shortcut = branch, shortcut

        def forward(self, x):
            return self.branch(x) + (x if self.shortcut is None else self.shortcut(x))

    class GlobalAvgPool2d(tnn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    class GlobalMaxPool2d(tnn.Module):
        def forward(self, x):  # routes the gradient to one maximum, like ours (amax would split ties)
            return F.adaptive_max_pool2d(x, 1).flatten(1)

    class Scale(tnn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    return torch, tnn, Residual, GlobalAvgPool2d, GlobalMaxPool2d, Scale


def _build(m):
    torch, tnn, Residual, GlobalAvgPool2d, GlobalMaxPool2d, Scale = _torch_helpers()
    if isinstance(m, nn.Sequential):
        return tnn.Sequential(*[_build(c) for c in m])
    if isinstance(m, nn.Residual):
        return Residual(_build(m.branch), None if m.shortcut is None else _build(m.shortcut))
    if isinstance(m, nn.Conv2d):
        return tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=m.bias is not None)
    if isinstance(m, nn.Linear):
        return tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    if isinstance(m, nn.BatchNorm2d):
        return tnn.BatchNorm2d(m.num_features, eps=m.eps, momentum=m.momentum)
    if isinstance(m, nn.BatchNorm1d):
        return tnn.BatchNorm1d(m.num_features, eps=m.eps, momentum=m.momentum)
    if isinstance(m, nn.MaxPool2d):
        return tnn.MaxPool2d(m.kernel_size, m.stride, m.padding)
    if isinstance(m, nn.AvgPool2d):
        return tnn.AvgPool2d(m.kernel_size, m.stride, m.padding)
    simple = {nn.ReLU: tnn.ReLU, nn.GELU: tnn.GELU, nn.Tanh: tnn.Tanh, nn.Sigmoid: tnn.Sigmoid,
              nn.Flatten: tnn.Flatten, nn.Identity: tnn.Identity, nn.GlobalAvgPool2d: GlobalAvgPool2d,
              nn.GlobalMaxPool2d: GlobalMaxPool2d}
    if type(m) in simple:
        return simple[type(m)]()
    if isinstance(m, nn.LeakyReLU):
        return tnn.LeakyReLU(m.negative_slope)
    if isinstance(m, nn.ELU):
        return tnn.ELU(m.alpha)
    if isinstance(m, nn.Dropout):
        return tnn.Dropout(m.p)
    if isinstance(m, nn.Scale):
        return Scale(m.factor)
    raise TypeError(f"no torch mirror for {type(m).__name__}")


def to_torch(model: nn.Module):
    """A torch.nn.Module with model's structure, dtype, weights, buffers, train/eval mode and frozen flags."""
    torch = _torch_helpers()[0]
    state = model.state_dict()
    dtype = next((v.dtype for v in state.values() if v.dtype.kind == "f"), np.dtype(np.float32))
    mirror = _build(model).to(torch.float64 if dtype == np.float64 else torch.float32)
    mirror.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    for (name, p), (tname, tp) in zip(model.named_parameters(), mirror.named_parameters()):
        assert name == tname, (name, tname)
        tp.requires_grad_(p.requires_grad)
    mirror.train(model.training)
    return mirror
