"""NumPy's own BLAS, called directly for what ``np.matmul`` cannot say: accumulate into the output
(beta = 1) and read a matrix that starts mid-array with its own row stride (lda/ldb). The row-shift
convolution in conv.py needs both. NumPy's wheels ship OpenBLAS as ``numpy.libs/libscipy_openblas64_*``
(64-bit integers, symbols prefixed ``scipy_``); where that library is not found, ``available`` says so
and conv.py keeps its im2col path.
"""
import ctypes
import glob
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_asleep = False  # set once sleep_when_idle has restarted the thread pool


def _library():
    here = os.path.dirname(np.__file__)
    for path in glob.glob(os.path.join(here, "..", "numpy.libs", "libscipy_openblas64_*")) + \
            glob.glob(os.path.join(here, ".libs", "libscipy_openblas64_*")):
        try:
            yield ctypes.CDLL(path)  # already loaded by numpy: the same library instance and thread pool
        except OSError:
            continue


def _load():
    for lib in _library():
        found = {}
        for dtype, name, scalar in ((np.float32, "scipy_cblas_sgemm64_", ctypes.c_float),
                                    (np.float64, "scipy_cblas_dgemm64_", ctypes.c_double)):
            fn = getattr(lib, name, None)
            if fn is not None:
                i64, ptr, enum = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
                fn.argtypes = [enum, enum, enum, i64, i64, i64, scalar, ptr, i64, ptr, i64, scalar, ptr, i64]
                fn.restype = None
                found[np.dtype(dtype)] = fn
        if found:
            return found
    return {}


_GEMM = _load()


def available(dtype):
    return np.dtype(dtype) in _GEMM


def gemm(a, a_offset, lda, b, b_offset, ldb, c, c_offset, ldc, m, n, k, beta=0.0, trans_b=False):
    """c[m x n] = a[m x k] @ op(b) + beta * c, all row-major; ``op(b)`` is b[k x n], or b[n x k]
    transposed. Each matrix is given as a contiguous array, an element offset and a row stride;
    the bounds are checked here because BLAS would not."""
    for arr, off, ld, rows, cols in ((a, a_offset, lda, m, k), (b, b_offset, ldb, *((n, k) if trans_b else (k, n))),
                                     (c, c_offset, ldc, m, n)):
        if not arr.flags.c_contiguous or arr.dtype != c.dtype or cols > ld or off + (rows - 1) * ld + cols > arr.size:
            raise ValueError("gemm operand out of bounds or not contiguous")
    item = c.itemsize
    _GEMM[c.dtype](_ROW_MAJOR, _NO_TRANS, _TRANS if trans_b else _NO_TRANS, m, n, k, 1.0,
                   a.ctypes.data + item * a_offset, lda, b.ctypes.data + item * b_offset, ldb,
                   beta, c.ctypes.data + item * c_offset, ldc)


def sleep_when_idle(exponent=4):
    """Make OpenBLAS's worker threads sleep as soon as a BLAS call ends.

    By default they spin for 2**28 cycles (about 0.1 s) waiting for the next call. Between two GEMMs a
    training step runs Numba kernels on both cores, and the spinning thread takes one of them: on this
    2-core machine the whole `fast` step ran at 172 images/s with spinning and 204 without
    (`benchmarks/throughput.py --profile fast`). OpenBLAS reads OPENBLAS_THREAD_TIMEOUT (2**value
    cycles, 4..30) when it starts its threads, so: set it (unless the user has), re-read the environment
    and restart the thread pool. Returns whether it could.
    """
    global _asleep
    if _asleep:
        return True
    if "OPENBLAS_THREAD_TIMEOUT" not in os.environ:
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(exponent)
    for lib in _library():
        read_env, shutdown = getattr(lib, "openblas_read_env", None), getattr(lib, "blas_thread_shutdown_", None)
        if read_env is not None and shutdown is not None:
            read_env()
            shutdown()  # the next call starts the threads again, with the timeout just read
            _asleep = True
            break
    return _asleep
