"""A float32 GEMM of our own, for the convolutions' Numba loops on CPUs where the BLAS at hand runs slower
than the hardware can: on the AMD EPYC Zen 5 here NumPy's OpenBLAS is held to its AVX2 (Haswell) kernels by
this machine's OPENBLAS_CORETYPE, and MKL takes its AVX2 path on AMD CPUs, so both stop at about 125
GFLOP/s a core where AVX-512 allows twice that.

The structure of Goto & van de Geijn (2008), as in BLIS: C in blocks of MR x NR, each summed in registers by
a micro-kernel over KC steps of k at a time, then added to C once.
The micro-kernel is written as LLVM vector IR (a Numba intrinsic), not as a Numba loop: LLVM keeps
the MR*NR/16 accumulators in 512-bit registers only when they are SSA values, and a loop over a NumPy
array of accumulators was not turned into that. With MR = 8 and NR = 32: 16 zmm accumulators, 2 loads of
B and 8 broadcasts of A per 16 FMAs. Of 4x96, 6x64, 8x48, 12x32 and 8x32, timed single-threaded on the
Zen 5 at the Winograd GEMMs' shapes (128 tiles a group, 64-512 channels), 8x32 was fastest or level:
its blocks tile those shapes without edges.

Only B is packed (copied into a contiguous kc x NR panel), and only where its rows are not contiguous
(op(B) = B.T) or its last block is not whole: the micro-kernel broadcasts A's elements straight from
memory (MR streams, one per row) and loads B's rows in place, which saved the copies that cost as much as
the arithmetic at these small GEMMs (first version: 0.7-1.4x OpenBLAS at 64-128 channels, now 0.9-1.7x).

Numba's cache does not see edits here in the kernels that call sgemm: conv.py's cached kernels keep the
old code until their cache files go (rm kernels/cpu/__pycache__/*.nb[ic]); touching conv.py was not enough.
Prefetching C's block at the micro-kernel's start was tried and gained nothing (forward passes 5-15% slower).

Called single-threaded from each thread of the convolutions' parallel loops (conv.py), with CBLAS's
conventions on addresses, like the MKL and OpenBLAS GEMMs it stands in for. Under NUMBA_DISABLE_JIT the
same code runs as plain Python with a NumPy micro-kernel (_micro below), slowly but readably.
"""
import ctypes

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

MR, NR, KC = 8, 32, 256  # rows and columns of C a micro-kernel call sums in registers; steps of k per call
LANES = 16  # float32 lanes of a 512-bit register
_NO_TRANS = 111  # CBLAS's op(a) = a; 112 is a.T


def _floats(addr, size):
    """The float32 array of `size` items at address `addr` (plain Python; the jitted twin is below)."""
    return np.ctypeslib.as_array(ctypes.cast(addr, ctypes.POINTER(ctypes.c_float)), (size,))


@intrinsic
def _float_pointer(typingctx, addr):
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.FloatType().as_pointer())
    return types.CPointer(types.float32)(types.intp), codegen


@overload(_floats)
def _floats_jit(addr, size):
    return lambda addr, size: carray(_float_pointer(addr), (size,))


def _micro(kc, a, a_rows, a_cols, b, ldb, c, ldc, beta):
    """C[:MR, :NR] (row stride ldc, at address c) = A @ B + beta*C for A (MR x kc) with element (i, p) at
    a + 4*(i*a_rows + p*a_cols) and B (kc x NR) with row p at b + 4*p*ldb. beta == 0 writes C without reading
    it, as BLAS does. A is read in place (no copy: each row is a stream the kernel broadcasts from), B in
    place too when its rows are contiguous (else sgemm packs it)."""
    av = _floats(a, (MR - 1) * a_rows + (kc - 1) * a_cols + 1)
    bv = _floats(b, (kc - 1) * ldb + NR)
    out = _floats(c, (MR - 1) * ldc + NR)
    rows_of_b = np.stack([bv[p * ldb: p * ldb + NR] for p in range(kc)]) if kc else np.zeros((0, NR), np.float32)
    for i in range(MR):
        row = out[i * ldc: i * ldc + NR]
        row[:] = av[i * a_rows: i * a_rows + (kc - 1) * a_cols + 1: a_cols][:kc] @ rows_of_b + (beta * row if beta != 0 else 0)


@intrinsic
def _micro_llvm(typingctx, kc, a, a_rows, a_cols, b, ldb, c, ldc, beta):
    """_micro with the accumulators as <16 x float> SSA values, updated by llvm.fma (vfmadd231ps on zmm)."""
    vectors = NR // LANES

    def codegen(context, builder, signature, args):
        kc, a, a_rows, a_cols, b, ldb, c, ldc, beta = args
        f32, i32, i64 = ir.FloatType(), ir.IntType(32), kc.type
        vec = ir.VectorType(f32, LANES)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), "llvm.fma.v16f32")
        pa, pb, pc = (builder.inttoptr(x, f32.as_pointer()) for x in (a, b, c))
        undef, lane0 = ir.Constant(vec, ir.Undefined), ir.Constant(i32, 0)
        all_lane0 = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)

        def broadcast(x):
            return builder.shuffle_vector(builder.insert_element(undef, x, lane0), undef, all_lane0)

        def vector_at(base, offset):
            return builder.bitcast(builder.gep(base, [offset]), vec.as_pointer())

        def const(i):
            return ir.Constant(i64, i)

        a_row_starts = [builder.gep(pa, [builder.mul(a_rows, const(i))]) for i in range(MR)]
        # allocas: LLVM's mem2reg turns them into the SSA registers the loop carries
        acc = [[cgutils.alloca_once_value(builder, ir.Constant(vec, [0.0] * LANES)) for _ in range(vectors)]
               for _ in range(MR)]
        with cgutils.for_range(builder, kc) as loop:
            p = loop.index
            b_row, a_col = builder.mul(p, ldb), builder.mul(p, a_cols)
            bs = [builder.load(vector_at(pb, builder.add(b_row, const(LANES * j))), align=4) for j in range(vectors)]
            for i in range(MR):
                a_ip = broadcast(builder.load(builder.gep(a_row_starts[i], [a_col])))
                for j in range(vectors):
                    builder.store(builder.call(fma, [a_ip, bs[j], builder.load(acc[i][j])]), acc[i][j])
        beta_zero = builder.fcmp_ordered("==", beta, ir.Constant(f32, 0.0))
        betas = broadcast(beta)
        with builder.if_else(beta_zero) as (overwrite, accumulate):
            for add_old in (False, True):
                with (accumulate if add_old else overwrite):
                    for i in range(MR):
                        row = builder.mul(ldc, const(i))
                        for j in range(vectors):
                            at = vector_at(pc, builder.add(row, const(LANES * j)))
                            total = builder.load(acc[i][j])
                            if add_old:
                                total = builder.call(fma, [betas, builder.load(at, align=4), total])
                            builder.store(total, at, align=4)
        return context.get_dummy_value()

    return types.void(*[types.intp] * 8, types.float32), codegen


@overload(_micro)
def _micro_jit(kc, a, a_rows, a_cols, b, ldb, c, ldc, beta):
    return lambda kc, a, a_rows, a_cols, b, ldb, c, ldc, beta: _micro_llvm(kc, a, a_rows, a_cols, b, ldb, c, ldc, beta)


@njit(inline="always")
def _pack_a_edge(a, a_rows, a_cols, rows, kc, panel):
    """The last rows (< MR) of op(A)'s block as an MR x kc panel, k-major (element (i, p) at p*MR + i), zero rows below."""
    panel[:] = 0
    for p in range(kc):
        for i in range(rows):
            panel[p * MR + i] = a[i * a_rows + p * a_cols]


@njit(inline="always")
def _pack_b(b, ldb, trans_b, k0, kc, j0, nc, panel):
    """op(B)[k0:k0+kc, j0:j0+nc] as kc x NR; columns past nc are zeros."""
    for p in range(kc):
        for j in range(nc, NR):
            panel[p * NR + j] = 0
    if trans_b == _NO_TRANS:
        for p in range(kc):
            for j in range(nc):
                panel[p * NR + j] = b[(k0 + p) * ldb + j0 + j]
    else:  # stores along the panel, reads across B's rows: 5x faster than the other order (scratch timing, Zen 5)
        for p in range(kc):
            for j in range(nc):
                panel[p * NR + j] = b[(j0 + j) * ldb + k0 + p]


@njit(fastmath=True, cache=True)
def sgemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """Row-major C = op(A) @ op(B) + beta*C on float32 data at addresses a, b, c (CBLAS's arguments without
    the layout and alpha; trans 111 = as is, 112 = transposed). Single-threaded."""
    cv = _floats(c, (m - 1) * ldc + n)
    if k == 0:  # C = beta*C, and A and B are not read at all
        for i in range(m):
            for j in range(n):
                cv[i * ldc + j] = beta * cv[i * ldc + j] if beta != 0 else np.float32(0)
        return
    av = _floats(a, (m - 1) * lda + k if trans_a == _NO_TRANS else (k - 1) * lda + m)
    bv = _floats(b, (k - 1) * ldb + n if trans_b == _NO_TRANS else (n - 1) * ldb + k)
    # op(A)'s element (i, p) is at a + 4*(i*a_rows + p*a_cols)
    a_rows, a_cols = (lda, 1) if trans_a == _NO_TRANS else (1, lda)
    kc_max = min(k, KC)
    scratch = np.empty((NR + MR) * kc_max + MR * NR, np.float32)  # one allocation a call, not three
    b_panel = scratch[:kc_max * NR]  # B's packed rows, 64 bytes apart
    edge = scratch[kc_max * NR:kc_max * NR + MR * NR]  # C's blocks that are not whole go through here
    a_edge = scratch[kc_max * NR + MR * NR:]
    for k0 in range(0, k, KC):
        kc = min(KC, k - k0)
        beta_k = beta if k0 == 0 else np.float32(1)
        if m % MR:
            i0 = m - m % MR
            _pack_a_edge(av[i0 * a_rows + k0 * a_cols:], a_rows, a_cols, m % MR, kc, a_edge)
        for j0 in range(0, n, NR):
            nc = min(NR, n - j0)
            if trans_b == _NO_TRANS and nc == NR:  # B's block read in place
                b_at, b_ld = b + 4 * (k0 * ldb + j0), ldb
            else:
                _pack_b(bv, ldb, trans_b, k0, kc, j0, nc, b_panel)
                b_at, b_ld = b_panel.ctypes.data, NR
            for i0 in range(0, m, MR):
                if i0 + MR <= m:
                    a_at, a_r, a_c = a + 4 * (i0 * a_rows + k0 * a_cols), a_rows, a_cols
                else:
                    a_at, a_r, a_c = a_edge.ctypes.data, 1, MR
                if nc == NR and i0 + MR <= m:
                    _micro(kc, a_at, a_r, a_c, b_at, b_ld, c + 4 * (i0 * ldc + j0), ldc, beta_k)
                else:
                    _micro(kc, a_at, a_r, a_c, b_at, b_ld, edge.ctypes.data, NR, np.float32(0))
                    for i in range(min(MR, m - i0)):
                        for j in range(nc):
                            o = (i0 + i) * ldc + j0 + j
                            cv[o] = edge[i * NR + j] + (beta_k * cv[o] if beta_k != 0 else np.float32(0))
