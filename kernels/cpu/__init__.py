"""Numba CPU kernels. ``KERNELS`` maps the name of a reference function (decorated with
``backend.kernel`` in minitorch_cifar/nn) to its fast twin here, with the same signature and result."""
import numba

# Numba's OpenMP layer keeps its threads busy-waiting after each parallel loop; on a 2-core machine they
# then fight OpenBLAS's (also spinning) threads for the cores, and a conv layer alternating the two got
# 10x slower (measured: 1.7 s vs 0.16 s). The workqueue layer sleeps between loops. An explicit
# NUMBA_THREADING_LAYER from the user wins.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

from . import activation, blas, conv, norm, pool  # noqa: E402

KERNELS = {
    "conv2d_forward": conv.conv2d_forward,
    "conv2d_backward": conv.conv2d_backward,
    "im2col": conv.im2col,
    "col2im": conv.col2im,
    "maxpool_forward": pool.maxpool_forward,
    "maxpool_backward": pool.maxpool_backward,
    "batchnorm_forward": norm.batchnorm_forward,
    "batchnorm_backward": norm.batchnorm_backward,
    "batchnorm_eval_forward": norm.batchnorm_eval_forward,
    "sync_batchnorm_forward": norm.sync_batchnorm_forward,
    "sync_batchnorm_backward": norm.sync_batchnorm_backward,
    "relu_forward": activation.relu_forward,
    "relu_backward": activation.relu_backward,
    "gelu_forward": activation.gelu_forward,
    "gelu_backward": activation.gelu_backward,
}


def keep_freed_memory():
    """Ask glibc to serve large arrays from its heap and keep freed memory for reuse.

    By default every array over 32 MB is a fresh mmap, returned to the OS when freed; the next step's
    array of the same size then page-faults all of its pages in again. On this machine that cost more
    than the arithmetic: allocating and touching a 126 MB activation took 100-290 ms, computing GELU into
    it 10-16 ms. With mmap off for malloc and trimming off, a training step reuses the previous step's
    memory (the peak stays the same; it is just not handed back between steps). Linux/glibc only; a
    no-op elsewhere.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    except (OSError, AttributeError):
        pass
