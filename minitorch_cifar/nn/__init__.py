"""The layers, one file per family; read them in the order of the README's reading list."""
from minitorch_cifar.nn.module import Module, Parameter, Sequential, Residual, Identity
from minitorch_cifar.nn.linear import Linear, Flatten, Scale
from minitorch_cifar.nn.activation import ReLU, LeakyReLU, ELU, GELU, Tanh, Sigmoid, ACTIVATIONS
from minitorch_cifar.nn.loss import CrossEntropyLoss
from minitorch_cifar.nn.conv import Conv2d
from minitorch_cifar.nn.pool import MaxPool2d, AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d
from minitorch_cifar.nn.norm import BatchNorm1d, BatchNorm2d
from minitorch_cifar.nn.dropout import Dropout

__all__ = [
    "Module", "Parameter", "Sequential", "Residual", "Identity", "Linear", "Flatten", "Scale",
    "ReLU", "LeakyReLU", "ELU", "GELU", "Tanh", "Sigmoid", "ACTIVATIONS", "CrossEntropyLoss",
    "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "GlobalMaxPool2d",
    "BatchNorm1d", "BatchNorm2d", "Dropout",
]
