"""kernels/cpu/gemm.py, the float32 GEMM of our own, against float64 NumPy: every transpose, beta, leading
dimension and size around the micro-kernel's MR x NR block and the KC steps of k."""
import numba
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from minitorch_cifar import machine
from minitorch_cifar.kernels.cpu import gemm

NO_TRANS, TRANS = 111, 112


def _sgemm(a, b, c, trans_a, trans_b, beta, m, n, k):
    gemm.sgemm(TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS, m, n, k, a.ctypes.data, a.shape[1],
               b.ctypes.data, b.shape[1], np.float32(beta), c.ctypes.data, c.shape[1])


def _operands(rng, m, n, k, trans_a, trans_b, pad):
    """A, B and C with `pad` unused columns each (leading dimension > the row's length), and op(A), op(B)."""
    a = rng.standard_normal((k, m + pad) if trans_a else (m, k + pad)).astype(np.float32)
    b = rng.standard_normal((n, k + pad) if trans_b else (k, n + pad)).astype(np.float32)
    c = rng.standard_normal((m, n + pad)).astype(np.float32)
    op_a = a[:, :m].T if trans_a else a[:, :k]
    op_b = b[:, :k].T if trans_b else b[:, :n]
    return a, b, c, op_a, op_b


sizes = st.integers(1, 3 * gemm.NR + 1)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 3 * gemm.MR + 1), n=sizes, k=st.integers(0, 2 * gemm.KC + 3), trans_a=st.booleans(),
       trans_b=st.booleans(), beta=st.sampled_from([0.0, 1.0, 0.5]), pad=st.integers(0, 3), seed=st.integers(0, 9))
@example(m=gemm.MR, n=gemm.NR, k=gemm.KC, trans_a=False, trans_b=False, beta=1.0, pad=0, seed=0)  # one whole block
@example(m=gemm.MR + 1, n=gemm.NR + 1, k=gemm.KC + 1, trans_a=True, trans_b=True, beta=0.5, pad=1, seed=1)
def test_sgemm_equals_numpy(m, n, k, trans_a, trans_b, beta, pad, seed):
    a, b, c, op_a, op_b = _operands(np.random.default_rng(seed), m, n, k, trans_a, trans_b, pad)
    want = op_a.astype(np.float64) @ op_b + beta * c[:, :n]
    untouched = c[:, n:].copy()
    _sgemm(a, b, c, trans_a, trans_b, beta, m, n, k)
    np.testing.assert_allclose(c[:, :n], want, rtol=1e-5, atol=1e-5 * np.sqrt(max(k, 1)))
    np.testing.assert_array_equal(c[:, n:], untouched)  # the padding between rows is not C's


def test_beta_zero_overwrites_c_without_reading_it():
    """BLAS's rule: with beta = 0, C's old values (here NaN) do not reach the result, in whole blocks and edges."""
    rng = np.random.default_rng(0)
    m, n, k = 2 * gemm.MR + 3, 2 * gemm.NR + 5, 20
    a, b, c, op_a, op_b = _operands(rng, m, n, k, False, False, 0)
    c[:] = np.nan
    _sgemm(a, b, c, False, False, 0.0, m, n, k)
    np.testing.assert_allclose(c, op_a.astype(np.float64) @ op_b, rtol=1e-5, atol=1e-5)


def test_plain_python_micro_kernel_equals_the_llvm_one():
    """gemm._micro called from Python is the NumPy twin that NUMBA_DISABLE_JIT runs; from jitted code it is the
    LLVM vector kernel. One whole MR x NR block: A k-major (as sgemm reads op(A) = A.T), B's rows and C's
    rows further apart than NR, beta 0.5."""
    rng = np.random.default_rng(1)
    kc, ldb, ldc = 37, gemm.NR + 5, gemm.NR + 7
    a = rng.standard_normal((kc, gemm.MR)).astype(np.float32)
    b = rng.standard_normal((kc, ldb)).astype(np.float32)
    c0 = rng.standard_normal((gemm.MR, ldc)).astype(np.float32)
    by_python, by_llvm = c0.copy(), c0.copy()
    gemm._micro(kc, a.ctypes.data, 1, gemm.MR, b.ctypes.data, ldb, by_python.ctypes.data, ldc, np.float32(0.5))
    gemm.sgemm(TRANS, NO_TRANS, gemm.MR, gemm.NR, kc, a.ctypes.data, gemm.MR, b.ctypes.data, ldb,
               np.float32(0.5), by_llvm.ctypes.data, ldc)  # whole blocks, B in place: one _micro call
    want = a.T.astype(np.float64) @ b[:, :gemm.NR] + 0.5 * c0[:, :gemm.NR]
    np.testing.assert_allclose(by_python[:, :gemm.NR], want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(by_llvm[:, :gemm.NR], by_python[:, :gemm.NR], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(by_python[:, gemm.NR:], c0[:, gemm.NR:])


@pytest.mark.skipif(not machine.has("avx512f"), reason="the CPU has no AVX-512: LLVM splits the 16-lane vectors")
def test_micro_kernel_runs_on_512_bit_registers():
    """What the kernel is for: LLVM must keep the accumulators as zmm registers and multiply-add them there."""
    fresh = numba.njit(fastmath=True)(gemm.sgemm.py_func)  # compiled here: one loaded from Numba's cache has no assembly
    one, out = np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)
    fresh(NO_TRANS, NO_TRANS, 1, 1, 1, one.ctypes.data, 1, one.ctypes.data, 1, np.float32(0), out.ctypes.data, 1)
    assert out[0, 0] == 1
    asm = "\n".join(fresh.inspect_asm().values())
    fmas = [line for line in asm.splitlines() if "vfmadd" in line]
    assert fmas and sum("zmm" in line for line in fmas) >= gemm.MR * gemm.NR // gemm.LANES
