"""Hypothesis strategies that draw a layer and an input shape: one entry per layer family.

Each draw returns ``(make_layer, input_shape)``; ``make_layer()`` builds the layer under whatever
default dtype and backend the test has set.
"""
from hypothesis import strategies as st

from minitorch_cifar import nn


@st.composite
def conv(draw):
    k = draw(st.integers(1, 4))
    s, p = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    h = draw(st.integers(max(1, k - 2 * p), 7))
    w = draw(st.integers(max(1, k - 2 * p), 7))
    bias = draw(st.booleans())
    return (lambda: nn.Conv2d(c, f, k, stride=s, padding=p, bias=bias)), (n, c, h, w)


def _pool(cls, max_padding_half):
    @st.composite
    def strategy(draw):
        k = draw(st.integers(1, 4))
        s = draw(st.integers(1, 3))
        p = draw(st.integers(0, k // 2)) if max_padding_half else 0
        n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        h, w = draw(st.integers(max(1, k - 2 * p), 7)), draw(st.integers(max(1, k - 2 * p), 7))
        return (lambda: cls(k, stride=s, padding=p)), (n, c, h, w)
    return strategy()


@st.composite
def batchnorm2d(draw):
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if n * h * w < 2:
        n = 2
    return (lambda: nn.BatchNorm2d(c)), (n, c, h, w)


@st.composite
def batchnorm1d(draw):
    n, c = draw(st.integers(2, 6)), draw(st.integers(1, 4))
    return (lambda: nn.BatchNorm1d(c)), (n, c)


@st.composite
def linear(draw):
    n, i, o = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 5))
    bias = draw(st.booleans())
    return (lambda: nn.Linear(i, o, bias=bias)), (n, i)


@st.composite
def image_shape(draw):
    return tuple(draw(st.integers(1, 4)) for _ in range(4))


def _plain(make):
    return image_shape().map(lambda shape: (make, shape))


CASES = {
    "Conv2d": conv(),
    "MaxPool2d": _pool(nn.MaxPool2d, True),
    "AvgPool2d": _pool(nn.AvgPool2d, True),
    "GlobalAvgPool2d": _plain(nn.GlobalAvgPool2d),
    "GlobalMaxPool2d": _plain(nn.GlobalMaxPool2d),
    "BatchNorm2d": batchnorm2d(),
    "BatchNorm1d": batchnorm1d(),
    "Linear": linear(),
    "Flatten": _plain(nn.Flatten),
    "ReLU": _plain(nn.ReLU),
    "LeakyReLU": _plain(lambda: nn.LeakyReLU(0.1)),
    "ELU": _plain(lambda: nn.ELU(0.7)),
    "GELU": _plain(nn.GELU),
    "Tanh": _plain(nn.Tanh),
    "Sigmoid": _plain(nn.Sigmoid),
    "Dropout(eval)": _plain(lambda: nn.Dropout(0.3).eval()),
}
