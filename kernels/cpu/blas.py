"""NumPy's own BLAS (OpenBLAS, shipped in NumPy's wheels as ``numpy.libs/libscipy_openblas64_*``), reached
through ctypes for what NumPy cannot ask of it: to let its worker threads sleep between calls, and its GEMMs
called from Numba code on one thread each.
"""
import contextlib
import ctypes
import glob
import os

import numpy as np

_asleep = False  # set once sleep_when_idle has restarted the thread pool


def _library():
    here = os.path.dirname(np.__file__)
    for path in glob.glob(os.path.join(here, "..", "numpy.libs", "libscipy_openblas64_*")) + \
            glob.glob(os.path.join(here, ".libs", "libscipy_openblas64_*")):
        try:
            yield ctypes.CDLL(path)  # already loaded by numpy: the same library instance and thread pool
        except OSError:
            continue


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


# ----------------------------------------------------------------------------- GEMMs for Numba code
# The convolution's Numba loops call a GEMM per image group from each of their threads (conv.py). MKL's are
# the default (bf16.nopython_gemms); on CPUs where NumPy's OpenBLAS runs the float32 ones faster, conv.py calls
# these instead. Same calling convention as MKL's CBLAS but for the integer width: NumPy's wheels ship an
# ILP64 build (64-bit integers, symbols renamed scipy_*64_).
_openblas = {}


def _first(lib, *names):
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            return fn
    return None


def _openblas_functions():
    """{'sgemm', 'dgemm', 'get_threads', 'set_threads'} of NumPy's OpenBLAS, or {} where it is not found."""
    if "found" in _openblas:
        return _openblas["found"]
    found = {}
    for lib in _library():
        get_config = _first(lib, "scipy_openblas_get_config64_", "openblas_get_config64_", "openblas_get_config")
        sgemm = _first(lib, "scipy_cblas_sgemm64_", "cblas_sgemm64_", "cblas_sgemm")
        dgemm = _first(lib, "scipy_cblas_dgemm64_", "cblas_dgemm64_", "cblas_dgemm")
        get_threads = _first(lib, "scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads")
        set_threads = _first(lib, "scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")
        if None in (get_config, sgemm, dgemm, get_threads, set_threads):
            continue
        get_config.restype = ctypes.c_char_p
        blasint = ctypes.c_int64 if b"USE64BITINT" in get_config() else ctypes.c_int
        enum, addr = ctypes.c_int, ctypes.c_uint64  # pointers as integers: Numba code passes a.ctypes.data + offset
        for fn, scalar in ((sgemm, ctypes.c_float), (dgemm, ctypes.c_double)):
            fn.argtypes = [enum, enum, enum, blasint, blasint, blasint, scalar, addr, blasint, addr, blasint, scalar, addr, blasint]
            fn.restype = None
        get_threads.restype, set_threads.argtypes = ctypes.c_int, [ctypes.c_int]
        found = dict(sgemm=sgemm, dgemm=dgemm, get_threads=get_threads, set_threads=set_threads)
        break
    _openblas["found"] = found
    return found


def openblas_available():
    return bool(_openblas_functions())


def nopython_gemms():
    """NumPy's OpenBLAS ``cblas_sgemm`` and ``cblas_dgemm`` as ctypes functions for nopython code. Call them inside
    ``one_thread()`` only: from several Numba threads at once, each must run on its caller's thread."""
    found = _openblas_functions()
    if not found:
        raise RuntimeError("NumPy's OpenBLAS (numpy.libs/libscipy_openblas64_*) not found")
    return found["sgemm"], found["dgemm"]


@contextlib.contextmanager
def one_thread():
    """OpenBLAS runs every call on the calling thread meanwhile (its own pool would take the cores that the
    calling Numba threads already use). The setting is process-wide: what ran on more threads does again after."""
    found = _openblas_functions()
    before = found["get_threads"]() if found else 1
    if before != 1:
        found["set_threads"](1)
    try:
        yield
    finally:
        if before != 1:
            found["set_threads"](before)
