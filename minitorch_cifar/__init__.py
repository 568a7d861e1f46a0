"""minitorch_cifar: a from-scratch CNN framework on NumPy, Numba and CuPy."""
import os

# Numba's default OpenMP threads busy-wait between parallel loops and fight OpenBLAS's threads for the
# cores (a conv layer measured 10x slower on 2 cores); see kernels/cpu/__init__.py. Set before numba loads.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

from minitorch_cifar import backend, nn, optim
from minitorch_cifar.backend import (get_backend, get_default_dtype, get_float32_matmul_precision, set_backend,
                                     set_default_dtype, set_float32_matmul_precision,
                                     to_numpy, use_backend, use_float32_matmul_precision)
from minitorch_cifar.gradcheck import GradcheckError, gradcheck
from minitorch_cifar.nn.module import manual_seed

__version__ = "0.1.0"


def __getattr__(name):  # data, models and train pull in more; load them on first use
    import importlib
    if name in ("data", "models", "train", "experiments", "plots"):
        return importlib.import_module(f"minitorch_cifar.{name}")
    raise AttributeError(name)
