"""Which array module and which kernel set are active.

Three backends run the same layer code:

* ``"numpy"``  the reference: plain vectorised NumPy, no Numba, easy to read and to trust;
* ``"numba"``  NumPy arrays, but the few loops array code cannot express fast (im2col/col2im,
  pooling windows, batch norm, activations) are swapped for parallel Numba kernels from
  ``minitorch_cifar.kernels.cpu``;
* ``"cupy"``   CuPy arrays on a GPU; im2col/col2im, max-pool and batch norm run CUDA kernels from
  ``minitorch_cifar.kernels.cuda``.

A layer never asks which backend is active. It writes array code against ``xp()`` and calls the
functions decorated with :func:`kernel`; the decorator runs the active backend's version when there is
one and the layer's own reference code otherwise.

This module is the only place in the package that imports CuPy.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import warnings
from pathlib import Path

import numpy as np

BACKENDS = ("numpy", "numba", "cupy")


class _State:
    name = "numpy"
    xp = np
    kernels: dict = {}
    dtype = np.dtype(np.float32)
    matmul_precision = "highest"
    warned_slow_bf16 = False


_state = _State()


# ----------------------------------------------------------------------------- selection
def set_backend(name: str) -> None:
    """Make ``name`` ("numpy", "numba" or "cupy") the active backend for arrays created from now on."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "numpy":
        xp, kernels = np, {}
    elif name == "numba":
        cpu = kernels_module("cpu")
        cpu.keep_freed_memory()
        cpu.blas.sleep_when_idle()
        if _state.matmul_precision == "medium":
            _require_bf16_gemm()
        xp, kernels = np, cpu.KERNELS
    else:
        xp = _import_cupy()
        kernels = _cuda_kernels(xp)
    _state.name, _state.xp, _state.kernels = name, xp, kernels


def get_backend() -> str:
    return _state.name


@contextlib.contextmanager
def use_backend(name: str):
    """``with mc.use_backend("numba"): ...`` switches the backend for the block only."""
    previous = _state.name
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def xp():
    """The active array module: ``numpy`` or ``cupy``."""
    return _state.xp


def set_default_dtype(dtype) -> None:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"default dtype must be float32 or float64, got {dtype}")
    _state.dtype = dtype


def get_default_dtype() -> np.dtype:
    return _state.dtype


MATMUL_PRECISIONS = ("highest", "medium")


def set_float32_matmul_precision(precision: str) -> None:
    """torch's switch, for the convolutions' GEMMs on float32 data. "highest": float32 operands.
    "medium": both operands rounded to bfloat16 (7 stored mantissa bits), products summed in float32, the rest
    of the network (activations, weights, gradients, optimizer) still float32. Under numba it runs on
    Intel MKL's AMX bfloat16 GEMM (kernels/cpu/bf16.py); under
    numpy and cupy the operands are rounded the same way and multiplied in float32: the same numbers,
    up to summation order, which is what the tests compare the fast path against."""
    if precision not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul precision must be one of {', '.join(MATMUL_PRECISIONS)}, got {precision!r}")
    if precision == "medium" and _state.name == "numba":
        _require_bf16_gemm()
    _state.matmul_precision = precision


def get_float32_matmul_precision() -> str:
    return _state.matmul_precision


@contextlib.contextmanager
def use_float32_matmul_precision(precision: str):
    """``with mc.use_float32_matmul_precision("medium"): ...`` switches the GEMM precision for the block only."""
    previous = _state.matmul_precision
    set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        _state.matmul_precision = previous  # already checked when it was set


def _require_bf16_gemm():
    from minitorch_cifar import machine
    from minitorch_cifar.kernels.cpu import bf16
    if not bf16.available():
        raise RuntimeError(f"matmul precision 'medium' on the numba backend needs a bfloat16 GEMM: {bf16.why_unavailable()}")
    if machine.amx_bf16() is False and not _state.warned_slow_bf16:
        # it runs and gives the same numbers, only slower (machine.amx_bf16 says where that was measured)
        _state.warned_slow_bf16 = True
        warnings.warn(f"matmul precision 'medium': this CPU ({machine.describe()['cpu']}) has no AMX, and without it "
                      "MKL's bfloat16 GEMM was measured slower than float32 (AMD EPYC Zen 3, Zen 4 and Zen 5); "
                      "expect it no faster than 'highest' here",
                      RuntimeWarning, stacklevel=3)


def gemm_operand(a):
    """``a`` as a convolution GEMM reads it: itself, or (float32 under "medium" precision) rounded to the
    nearest bfloat16, ties to even, kept in a float32 array."""
    if _state.matmul_precision == "highest" or a.dtype != np.float32:
        return a
    xp = array_module(a)
    bits = xp.ascontiguousarray(a).view(xp.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(xp.uint32).view(xp.float32)
    return xp.where(xp.isnan(a), a, rounded)  # a NaN's bits would carry into the sign: keep it a NaN


def kernel(reference):
    """Route a function to the active backend's fast version of the same name, if it has one.

    The decorated function *is* the reference implementation; ``fn.reference`` always reaches it,
    which is what the tests compare every fast kernel against.
    """
    name = reference.__name__

    @functools.wraps(reference)
    def dispatch(*args, **kwargs):
        return _state.kernels.get(name, reference)(*args, **kwargs)

    dispatch.reference = reference
    return dispatch


# ----------------------------------------------------------------------------- arrays
def asarray(a, dtype=None):
    """``a`` as an array of the active backend (uploads NumPy arrays to the GPU under cupy)."""
    return _state.xp.asarray(a, dtype=dtype)


def to_numpy(a):
    """A NumPy copy (or the array itself) of a backend array or scalar, for saving and printing."""
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)  # cupy.ndarray.get() copies to the host
    return get() if callable(get) else np.asarray(a)


def array_module(a):
    """The module that owns array ``a`` (numpy for NumPy arrays, cupy for CuPy arrays)."""
    return np if isinstance(a, np.ndarray) else _state.xp


def erf(x):
    """Elementwise erf (NumPy has none): SciPy on the CPU, cupyx on the GPU."""
    if isinstance(x, np.ndarray):
        from scipy.special import erf as scipy_erf
        return scipy_erf(x)
    import cupyx.scipy.special
    return cupyx.scipy.special.erf(x)


def random_generator(seed=None):
    """A seeded random generator that makes arrays of the active backend."""
    if _state.name == "cupy":
        return _state.xp.random.default_rng(seed)
    return np.random.default_rng(seed)


def kernels_module(family: str):
    """``minitorch_cifar.kernels.<family>``: the checkout's ``kernels/`` folder, which only an install maps in."""
    try:
        return importlib.import_module(f"minitorch_cifar.kernels.{family}")
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("minitorch_cifar.kernels"):
            raise  # something the kernels import (numba, say) is missing: that error says so itself
        raise BackendUnavailable(
            f"cannot import minitorch_cifar.kernels.{family}: the package's kernels live in the checkout's kernels/ "
            f"folder, which pip maps in at install time, and this copy of minitorch_cifar ({Path(__file__).parent}) "
            "is not installed from its checkout (or its editable install points at another one): run "
            "pip install -e . in the checkout") from e


# ----------------------------------------------------------------------------- CuPy only
_INSTALL_HINT = (
    'install CuPy for your CUDA version: pip install -e ".[gpu]" (cupy-cuda12x), or '
    "pip install cupy-cuda13x for CUDA 13"
)


class BackendUnavailable(RuntimeError):
    pass


def _import_cupy():
    try:
        import cupy
    except ImportError:
        raise BackendUnavailable(f"the cupy backend needs CuPy, which is not installed: {_INSTALL_HINT}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        raise BackendUnavailable(f"the cupy backend needs a working CUDA GPU; CuPy reports: {e}") from None
    if count == 0:
        raise BackendUnavailable("the cupy backend needs a CUDA GPU, and none is visible")
    return cupy


def cuda_source_dir() -> Path:
    return Path(kernels_module("cuda").__file__).parent


@functools.lru_cache(maxsize=1)
def _cuda_kernels(cupy):
    """Compile the .cu files once and wrap each kernel as a function with the reference's signature."""
    launch = kernels_module("cuda.launch")

    src = cuda_source_dir()
    modules = {f.stem: cupy.RawModule(code=f.read_text(), options=("-std=c++17",)) for f in src.glob("*.cu")}

    def raw(module, name):
        return modules[module].get_function(name)

    return launch.make_kernels(cupy, raw)
