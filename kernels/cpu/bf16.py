"""bfloat16 GEMMs with float32 accumulation: what ``torch.set_float32_matmul_precision("medium")`` allows.

A bfloat16 is the top half of a float32: same exponent range, 7 stored mantissa bits (relative rounding
error at most 2^-8). Products of two of them are exact in float32 and summed there, so a GEMM loses only the
rounding of its inputs. On CPUs with AMX (Intel Sapphire Rapids and later), Intel's MKL runs such GEMMs
several times faster than float32 ones (the whole training step: benchmarks/throughput.py --bf16). This module
also hands MKL's GEMMs to Numba code (``nopython_gemms``: the row-shift convolution in conv.py). OpenBLAS as NumPy ships it has no bfloat16 GEMM, so this module loads
MKL's ``cblas_gemm_bf16bf16f32`` from the ``mkl`` wheel (the ``mkl`` extra) and says when it cannot.

Everything else stays float32: activations, weights, gradients, the optimizer. Only the two operands of
each convolution GEMM are rounded, right before it (conv.py); bfloat16 arrays are uint16 here.
"""
import concurrent.futures
import ctypes
import importlib.metadata
import os

import numpy as np
import numba
from numba import njit, prange

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
PACKED, PACK_A = 151, 161  # MKL's CBLAS_STORAGE value and CBLAS_IDENTIFIER for the first operand
_MKL_THREADING_SEQUENTIAL = 1
SPLIT_FLOPS = 1 << 24  # a GEMM smaller than this runs on one thread: not worth a hand-off
_state = {"lib": None, "tried": False, "why": "", "pool": None}


def _find(dist, stem):
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if os.path.basename(str(f)).startswith(stem):
            return str(importlib.metadata.distribution(dist).locate_file(f))
    return None


def _load():
    _state["tried"] = True
    path = _find("mkl", "libmkl_rt.so")
    if path is None:
        _state["why"] = "Intel MKL not installed (pip install mkl, or the package's [mkl] extra)"
        return None
    # MKL's own threading (Intel or GNU OpenMP, TBB) gave wrong threaded results in a process that had
    # imported torch first (relative error 0.7 at 256x2304x3920; torch brings its GNU OpenMP and MKL
    # symbols). So MKL runs sequential, and gemm() below splits the columns over Python threads itself
    # (ctypes lets go of the GIL during the call); one thread per MPI rank needs no split at all. The
    # layer is set by a call on this library instance, not MKL_THREADING_LAYER, which torch's MKL would read too.
    try:
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL | getattr(os, "RTLD_DEEPBIND", 0))
        fn = lib.cblas_gemm_bf16bf16f32
        for name in ("cblas_gemm_bf16bf16f32_pack", "cblas_gemm_bf16bf16f32_compute", "cblas_gemm_bf16bf16f32_pack_get_size"):
            getattr(lib, name)  # nopython_packed's: checked here, so that an MKL without them is not used at all
    except (OSError, AttributeError) as e:
        _state["why"] = f"could not load MKL's bfloat16 GEMM: {e}"
        return None
    i32, ptr = ctypes.c_int, ctypes.c_void_p
    fn.argtypes = [i32, i32, i32, i32, i32, i32, ctypes.c_float, ptr, i32, ptr, i32, ctypes.c_float, ptr, i32]
    fn.restype = None
    lib.cblas_gemm_bf16bf16f32_pack_get_size.argtypes = [i32] * 4
    lib.cblas_gemm_bf16bf16f32_pack_get_size.restype = ctypes.c_size_t
    lib.MKL_Set_Threading_Layer.argtypes = [i32]
    lib.MKL_Set_Threading_Layer(_MKL_THREADING_SEQUENTIAL)
    _state["lib"] = lib
    return lib


def nopython_gemms():
    """MKL's ``cblas_gemm_bf16bf16f32``, ``cblas_sgemm`` and ``cblas_dgemm`` as ctypes functions that Numba's
    nopython code can call (kernels/cpu/conv.py calls them per image group from inside a parallel loop).
    Their pointer arguments are declared as 64-bit integers (the same register on x86-64), so a kernel
    passes ``a.ctypes.data + offset``. MKL runs sequential here: calls from several Numba threads at once
    are independent."""
    if not available():
        raise RuntimeError(why_unavailable())
    if "nopython" not in _state:
        i32, addr = ctypes.c_int, ctypes.c_uint64
        fns = []
        for name, scalar in (("cblas_gemm_bf16bf16f32", ctypes.c_float), ("cblas_sgemm", ctypes.c_float),
                             ("cblas_dgemm", ctypes.c_double)):
            fn = _state["lib"][name]  # indexing makes a new function object: its own argtypes
            fn.argtypes = [i32, i32, i32, i32, i32, i32, scalar, addr, i32, addr, i32, scalar, addr, i32]
            fn.restype = None
            fns.append(fn)
        _state["nopython"] = tuple(fns)
    return _state["nopython"]


def nopython_packed():
    """MKL's bfloat16 GEMM with a pre-packed operand, for Numba code: ``cblas_gemm_bf16bf16f32_pack`` (op(src)
    into MKL's internal blocked layout, in a buffer of ``packed_size`` bytes) and
    ``cblas_gemm_bf16bf16f32_compute`` (a GEMM whose operand marked PACKED is such a buffer). An operand used in
    several GEMMs is then reordered once instead of in each: the row-shift convolution's weights over all of a
    step's image groups, an image group's dout over the kernel's rows. Only the bfloat16 GEMMs use it: the
    float32 ones, single-threaded, already run at about the same rate either way on this machine, the bfloat16
    ones faster packed (``python benchmarks/conv_layers.py --bf16`` times the layers both ways)."""
    if not available():
        raise RuntimeError(why_unavailable())
    if "packed" not in _state:
        i32, addr = ctypes.c_int, ctypes.c_uint64
        pack, compute = _state["lib"]["cblas_gemm_bf16bf16f32_pack"], _state["lib"]["cblas_gemm_bf16bf16f32_compute"]
        pack.argtypes, pack.restype = [i32] * 6 + [addr, i32, addr], None
        compute.argtypes = [i32] * 6 + [ctypes.c_float, addr, i32, addr, i32, ctypes.c_float, addr, i32]
        compute.restype = None
        _state["packed"] = (pack, compute)
    return _state["packed"]


def packed_size(m, n, k):
    """Bytes of MKL's packed form of the first operand of an (m x k) @ (k x n) bfloat16 GEMM."""
    if not available():
        raise RuntimeError(why_unavailable())
    return _state["lib"].cblas_gemm_bf16bf16f32_pack_get_size(PACK_A, m, n, k)


def available():
    if not _state["tried"]:
        _load()
    return _state["lib"] is not None


def why_unavailable():
    return "" if available() else _state["why"]


def gemm(a, a_offset, lda, b, b_offset, ldb, c, c_offset, ldc, m, n, k, beta=0.0, trans_a=False, trans_b=False):
    """c[m x n] (float32) = op(a) @ op(b) + beta * c with a, b bfloat16 (uint16 arrays), row-major, given
    as contiguous arrays, element offsets and row strides; op(a) is a[m x k] or a[k x m] transposed."""
    if not available():
        raise RuntimeError(why_unavailable())
    for arr, off, ld, (rows, cols), dtype in ((a, a_offset, lda, (k, m) if trans_a else (m, k), np.uint16),
                                               (b, b_offset, ldb, (n, k) if trans_b else (k, n), np.uint16),
                                               (c, c_offset, ldc, (m, n), np.float32)):
        if not arr.flags.c_contiguous or arr.dtype != dtype or cols > ld or off + (rows - 1) * ld + cols > arr.size:
            raise ValueError("bf16 gemm operand out of bounds, not contiguous or of the wrong type")
    if max(m, n, k, lda, ldb, ldc) >= 2**31:
        raise ValueError("bf16 gemm: dimensions over 32-bit MKL_INT")
    fn, ta, tb = _state["lib"].cblas_gemm_bf16bf16f32, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS

    def columns(j0, j1):  # c[:, j0:j1] = op(a) @ op(b)[:, j0:j1]
        b_at = b_offset + (j0 * ldb if trans_b else j0)
        fn(_ROW_MAJOR, ta, tb, m, j1 - j0, k, 1.0, a.ctypes.data + 2 * a_offset, lda,
           b.ctypes.data + 2 * b_at, ldb, beta, c.ctypes.data + 4 * (c_offset + j0), ldc)

    threads = min(numba.get_num_threads(), max(1, n // 64))
    if threads <= 1 or 2 * m * n * k < SPLIT_FLOPS:
        return columns(0, n)
    if _state["pool"] is None:  # as many workers as Numba may ever use (its thread count can only go down)
        _state["pool"] = concurrent.futures.ThreadPoolExecutor(numba.config.NUMBA_NUM_THREADS, thread_name_prefix="bf16-gemm")
    bounds = [n * t // threads // 16 * 16 for t in range(threads)] + [n]  # 16-column aligned parts
    for part in [_state["pool"].submit(columns, j0, j1) for j0, j1 in zip(bounds, bounds[1:])]:
        part.result()


def matmul(a, b, out, trans_a=False, trans_b=False):
    """out = op(a) @ op(b) for whole 2-D bfloat16 arrays."""
    m, k = a.shape[::-1] if trans_a else a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    gemm(a, 0, a.shape[1], b, 0, b.shape[1], out, 0, out.shape[1], m, n, k, trans_a=trans_a, trans_b=trans_b)
    return out


@njit(parallel=True, cache=True)
def _round(bits, out):
    for i in prange(bits.size):  # round to nearest, ties to even (as torch's .bfloat16()); NaN stays NaN
        u = bits[i]
        if (u & 0x7FFFFFFF) > 0x7F800000:
            out[i] = np.uint16((u >> 16) | 0x40)
        else:
            out[i] = np.uint16((u + 0x7FFF + ((u >> 16) & 1)) >> 16)


def to_bf16(x, out=None):
    """float32 array -> bfloat16 (uint16) array of the same shape."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape, np.uint16) if out is None else out
    _round(x.reshape(-1).view(np.uint32), out.reshape(-1))
    return out


def to_float32(h):
    """bfloat16 (uint16) -> float32, exactly."""
    return (h.astype(np.uint32) << 16).view(np.float32)
