"""NumPy's own BLAS (OpenBLAS, shipped in NumPy's wheels as ``numpy.libs/libscipy_openblas64_*``), reached
through ctypes for one thing NumPy cannot ask of it: to let its worker threads sleep between calls.
"""
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
