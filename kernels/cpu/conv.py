"""The convolution on the CPU: a row-shift convolution for stride-1 "same" layers, im2col one image at a
time for the other layers with large images (both near the bottom of this file, both calling MKL's GEMM
from inside Numba loops), im2col + GEMM in cache-sized chunks for the rest, and im2col / col2im and the
GEMM-layout reorders as parallel Numba loops (twin: kernels/cuda/conv.cu).

Same layouts as the reference in minitorch_cifar/nn/conv.py: col is (C*kh*kw, N*OH*OW), row
r = (c*kh + i)*kw + j, column n*OH*OW + oh*OW + ow. Padding is never materialised: an index that falls
outside the image reads (or drops) a zero.
"""
import contextlib
import functools
import math

import numba
import numpy as np
from numba import njit, prange

from minitorch_cifar import backend, machine

from . import bf16, blas, gemm
from .norm import channel_sums

OPTS = dict(parallel=True, cache=True, error_model="numpy", fastmath=False)
SERIAL = dict(cache=True, error_model="numpy", fastmath=False)  # helpers the parallel kernels call: compiled once,
# not inlined into each kernel (inlined, the Winograd kernels took 2.4x as long to compile, 122 s against 52
# in a scratch timing of a cold cache)


@njit(inline="always")
def _valid_range(j, stride, padding, OW, W):
    """The output columns ow whose input column ow*stride + j - padding lies inside [0, W)."""
    lo = max(0, (padding - j + stride - 1) // stride)
    hi = min(OW, (W - 1 + padding - j) // stride + 1)
    return lo, max(lo, hi)


@njit(inline="always")
def _im2col_row(x, n0, n1, r, row, kh, kw, stride, padding, OH, OW):
    """Row r of the column matrix for images [n0, n1): row[(n - n0)*OH*OW + oh*OW + ow]."""
    C, H, W = x.shape[1:]
    c, ij = r // (kh * kw), r % (kh * kw)
    i, j = ij // kw, ij % kw
    lo, hi = _valid_range(j, stride, padding, OW, W)
    shift = j - padding
    for n in range(n0, n1):
        for oh in range(OH):
            base = (n - n0) * OH * OW + oh * OW
            h = oh * stride + i - padding
            if h < 0 or h >= H:
                for ow in range(OW):
                    row[base + ow] = 0
                continue
            for ow in range(lo):
                row[base + ow] = 0
            for ow in range(lo, hi):  # branch-free: the compiler can vectorise it
                row[base + ow] = x[n, c, h, ow * stride + shift]
            for ow in range(hi, OW):
                row[base + ow] = 0


@njit(**OPTS)
def _im2col(x, col, kh, kw, stride, padding, OH, OW):
    for r in prange(col.shape[0]):  # each row is written by one thread only
        _im2col_row(x, 0, x.shape[0], r, col[r], kh, kw, stride, padding, OH, OW)


@njit(**OPTS)
def _gemm_to_nchw(y, bias, out):
    N, F, P = out.shape
    for nf in prange(N * F):
        n, f = nf // F, nf % F
        b = bias[f]
        for p in range(P):
            out[n, f, p] = y[f, n * P + p] + b


@njit(**OPTS)
def _nchw_to_gemm(dout, out):
    N, F, P = dout.shape
    for nf in prange(N * F):
        n, f = nf // F, nf % F
        for p in range(P):
            out[f, n * P + p] = dout[n, f, p]


def _out_size(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


def im2col(x, kh, kw, stride, padding):
    N, C, H, W = x.shape
    OH, OW = _out_size(H, kh, stride, padding), _out_size(W, kw, stride, padding)
    col = np.empty((C * kh * kw, N * OH * OW), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x), col, kh, kw, stride, padding, OH, OW)
    return col


def col2im(col, x_shape, kh, kw, stride, padding):
    N, C, H, W = x_shape
    dx = np.empty(x_shape, dtype=col.dtype)
    _zero_and_col2im(np.ascontiguousarray(col), dx, kh, kw, stride, padding,
            _out_size(H, kh, stride, padding), _out_size(W, kw, stride, padding))
    return dx


# ----------------------------------------------------------------------------- the whole convolution
# The reference (minitorch_cifar/nn/conv.py) builds one column matrix for the whole batch and keeps it
# for backward: at batch 512 and 32x32 that is hundreds of MB written, faulted in and read back. Here the
# batch goes through in chunks of a few images, whose column matrix stays a few MB (in cache, in a
# workspace reused by every layer and step), and backward rebuilds the columns instead of storing them:
# only x is kept.
_WORKSPACE = {}
CHUNK_BYTES = 16 << 20  # column-matrix bytes per chunk: measured best of 1-16 MB at batch 512 on 2 cores


def _workspace(name, shape, dtype):
    size = int(np.prod(shape))
    buf = _WORKSPACE.get((name, np.dtype(dtype)))
    if buf is None or buf.size < size:
        buf = _WORKSPACE[(name, np.dtype(dtype))] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def _chunk(N, K, P, itemsize):
    return int(max(1, min(N, CHUNK_BYTES // max(1, K * P * itemsize))))


# With backend.set_float32_matmul_precision("medium") both operands of every GEMM below are bfloat16
# (uint16 arrays: x, dout and the weights are rounded once, before im2col / the shifted copies, which then
# move half the bytes) and the products are summed in float32 by MKL (kernels/cpu/bf16.py). The forward
# keeps the rounded x for backward: half the memory, and no second rounding pass.
def _operand(a):
    """x as the GEMMs of this layer take it: float32/64 as is, or rounded to bfloat16."""
    if a.dtype == np.float32 and backend.get_float32_matmul_precision() == "medium":
        return bf16.to_bf16(a)
    return np.ascontiguousarray(a)


def _like(a, xg):
    """Another GEMM operand (weights, dout) in the form xg took."""
    return bf16.to_bf16(a) if xg.dtype == np.uint16 else np.ascontiguousarray(a)


def _matmul(a, b, out, trans_a=False, trans_b=False):
    if a.dtype == np.uint16:
        return bf16.matmul(a, b, out, trans_a, trans_b)
    return np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)


@njit(inline="always")
def _zero_and_col2im_plane(col, dx, n, c, n_col, kh, kw, stride, padding, OH, OW):
    """dx[n, c] = the sum of its entries in col, whose image n_col holds that plane."""
    H, W = dx.shape[2:]
    P = OH * OW
    for h in range(H):
        for w in range(W):
            dx[n, c, h, w] = 0
    for i in range(kh):
        for j in range(kw):
            r = (c * kh + i) * kw + j
            lo, hi = _valid_range(j, stride, padding, OW, W)
            shift = j - padding
            for oh in range(OH):
                h = oh * stride + i - padding
                if h < 0 or h >= H:
                    continue
                base = n_col * P + oh * OW
                for ow in range(lo, hi):
                    dx[n, c, h, ow * stride + shift] += col[r, base + ow]


@njit(**OPTS)
def _zero_and_col2im(col, dx, kh, kw, stride, padding, OH, OW):
    N, C = dx.shape[:2]
    for nc in prange(N * C):  # each (n, c) plane is summed into by one thread only: no races
        _zero_and_col2im_plane(col, dx, nc // C, nc % C, nc // C, kh, kw, stride, padding, OH, OW)


# ------------------------------------------------------------ stride 1, odd kernel, "same" padding: row shifts
# Rather than nine (kh*kw) shifted copies of the input in a column matrix, keep kw column-shifted copies
# of a group of G images stacked one under another, with p = padding zero rows between them, flattened
# row by row (width W). Shifting a kernel row i down is then just starting i*W elements later in that
# flat array, so the convolution is kh GEMMs over the same buffer, summed into the output (beta = 1):
#     y[f, q] = sum_i W_i[f, (j, c)] @ xs[(j, c), q + i*W]          q = (g*(H + p) + h)*W + w
# a third of im2col's memory traffic for 3x3, no column matrix. In backward, with dout laid out like y
# (zeros in the rows between images):
#     dW_i += dout @ xs[:, i*W : i*W + M].T
#     dxs[:, i*W : i*W + M] += W_i.T @ dout             (the gradient of each shifted copy)
#     dx[g, c, h, w] = sum_j dxs[j, c, (p + g*(H + p) + h)*W + w - (j - p)]    (the adjoint of the copy)
# whatever F and C: no column matrix, no col2im.
# Each group is done whole while its pieces sit in the core's L2 cache (a few hundred KB), one thread per
# block of groups, each with its own scratch: memory sees x, dout, out and dx once. A group is one image
# when an image alone gives the GEMMs enough columns (then out[n] and dout[n] are already the (F, H*W)
# matrices the GEMMs write and read: no reorder at all), several small images otherwise.
# The GEMMs are MKL's (bfloat16, float32, float64), called from inside the Numba loop through a ctypes
# pointer (bf16.nopython_gemms; the float32 ones may be OpenBLAS's: FLOAT_BLAS below); without MKL this
# path is off and im2col does everything.
# Below 8 input channels the GEMMs' inner dimension kw*C is too short (RGB input): im2col there.
# Per layer, beside im2col and torch: python benchmarks/conv_layers.py --arch fast --batch 512 [--bf16].
ROW_SHIFT_MIN_CHANNELS = 8
GROUP_COLUMNS = 448  # images per group: as many as give the GEMMs this many columns (at least one image)
# (groups of 1 to 6 images, tried per layer on simple's 16x16 and 8x8 layers at batch 128 on 2026-12-01 with a
# scratch script, not kept, differed by less than the machine's noise: one size for all layers)
_NO_TRANS, _TRANS = 111, 112  # CBLAS's names for op(a) = a and a.T
# bfloat16 GEMMs take an operand that several of them share (the weights, a group's dout) in MKL's packed
# form, reordered once (bf16.nopython_packed). Off: each GEMM reorders it itself (A/B in conv_layers.py).
PACK_BF16 = True


def _row_shift_applies(x, kh, kw, stride, padding):
    return stride == 1 and kh == kw == 2 * padding + 1 and x.shape[1] >= ROW_SHIFT_MIN_CHANNELS and bf16.available()


@njit(cache=True, error_model="numpy")
def _shift_copies(x, xs, p):
    """Images x (G, C, H, W) -> xs[j, c, (p + g*(H + p) + h)*W + w] = x[g, c, h, w + j - p], and zero where
    that falls outside an image: the p rows above each image and below the last, the columns shifted in.
    The unshifted copy (j = p) is laid down image by image; every other one is that copy read s = j - p
    places on, in one long loop (loops along rows only W long ran up to 3x slower), and then the
    |s| columns of each row that came round from the neighbouring row are zeroed."""
    G, C, H, W = x.shape
    HW, L = H * W, xs.shape[2]
    flat = x.reshape(G * C * HW)  # one reshape: per plane, Numba's reshape would cost a call each
    for c in range(C):
        mid = xs[p, c]
        mid[:p * W] = 0
        for g in range(G):
            base, at = (p + g * (H + p)) * W, (g * C + c) * HW
            for q in range(HW):
                mid[base + q] = flat[at + q]
            mid[base + HW:base + HW + p * W] = 0
        for j in range(xs.shape[0]):
            s = j - p
            if s == 0:
                continue
            row = xs[j, c]
            for q in range(max(0, -s), min(L, L - s)):
                row[q] = mid[q + s]
            _zero_wrapped_columns(row, W, s)  # also the |s| ends the loop leaves: they are wrapped columns


@njit(inline="always")
def _zero_wrapped_columns(row, W, s):
    """In each W-long row of a copy shifted by s, the columns w + s outside [0, W) (all of them if |s| >= W)."""
    w0, w1 = (0, min(W, -s)) if s < 0 else (max(0, W - s), W)
    for r in range(0, row.size, W):
        for w in range(w0, w1):
            row[r + w] = 0


@njit(cache=True, error_model="numpy")
def _fold_shift_copies(dxs, dx, p):
    """The adjoint of _shift_copies: x[g, c, h, w] went to xs[j, c, (p + g*(H + p) + h)*W + w - s]
    (s = j - p), so its gradient is the sum of those entries of dxs over j. Zeroing the entries of each
    copy that held a wrapped-round zero first (dxs is scratch) lets each image be a sum of long loops."""
    G, C, H, W = dx.shape
    HW = H * W
    flat = dx.reshape(G * C * HW)
    for c in range(C):
        for j in range(dxs.shape[0]):
            if j != p:
                _zero_wrapped_columns(dxs[j, c], W, j - p)
        for g in range(G):
            base, at = (p + g * (H + p)) * W, (g * C + c) * HW
            for q in range(HW):
                flat[at + q] = dxs[0, c, base + q + p]
            for j in range(1, dxs.shape[0]):
                for q in range(HW):
                    flat[at + q] += dxs[j, c, base + q + p - j]


@njit(cache=True, error_model="numpy")
def _rows_to_images(y, out, p, bias):
    """y (F, G*(H + p)*W - p*W), image g's rows from g*(H + p) on -> out (G, F, H, W), + bias."""
    G, F, H, W = out.shape
    HW = H * W
    flat = out.reshape(G * F * HW)
    for g in range(G):
        base = g * (H + p) * W
        for f in range(F):
            b = bias[f] if bias.size else 0
            at = (g * F + f) * HW
            for q in range(HW):
                flat[at + q] = y[f, base + q] + b


@njit(cache=True, error_model="numpy")
def _images_to_rows(dout, y, p):
    """The other way, zeros in the p rows between images: dout laid out as y."""
    G, F, H, W = dout.shape
    HW = H * W
    flat = dout.reshape(G * F * HW)
    for f in range(F):
        for g in range(G):
            base, at = g * (H + p) * W, (g * F + f) * HW
            for q in range(HW):
                y[f, base + q] = flat[at + q]
            if g < G - 1:
                y[f, base + HW:base + (H + p) * W] = 0


@njit(inline="always")
def _gemm(gemms, itemsize, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """Row-major c = op(a) @ op(b) + beta*c on addresses; the operands' item size picks the bfloat16,
    float32 or float64 GEMM from gemms (_gemms(): three GEMMs and whether float32 goes to gemm.sgemm instead; passed in so that Numba can cache the kernels: the
    functions' addresses change from process to process)."""
    if itemsize == 2:
        gemms[0](101, trans_a, trans_b, m, n, k, np.float32(1), a, lda, b, ldb, np.float32(beta), c, ldc)
    elif itemsize == 4 and gemms[3]:
        gemm.sgemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, np.float32(beta), c, ldc)
    elif itemsize == 4:
        gemms[1](101, trans_a, trans_b, m, n, k, np.float32(1), a, lda, b, ldb, np.float32(beta), c, ldc)
    else:
        gemms[2](101, trans_a, trans_b, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)


# Whose float32/float64 GEMMs the loops call: "mkl", "openblas" (NumPy's own), "numba" (float32 from
# gemm.sgemm, this package's own AVX-512 GEMM; float64 then OpenBLAS's), or "auto": MKL on Intel CPUs,
# ours on the other CPUs with AVX-512, OpenBLAS on the rest. Single-threaded, at this file's GEMM shapes,
# OpenBLAS was 2-11% faster than MKL on an AMD EPYC (Zen 3, AVX2); on the Intel Xeon (AVX-512, AMX) of the
# earlier sessions MKL ran near its peak; on the AMD EPYC Zen 5 (AVX-512; OpenBLAS held to AVX2 there by
# OPENBLAS_CORETYPE, MKL on its AVX2 path) ours ran 1.2-2.0x OpenBLAS's GFLOP/s at the Winograd GEMMs'
# shapes (benchmarks/results/gemm_zen5.json), width 2's convolutions 1.28x faster (2.17 s against 2.77 s,
# benchmarks/results/conv_layers_fast_zen5_w2_ours.json).
# On Zen 4 (AVX-512 on 256-bit units) and on Intel CPUs ours was not timed. python benchmarks/conv_layers.py
# --blas times the layers with each. bfloat16 is always MKL's.
FLOAT_BLAS = "auto"


def float_blas():
    """The library FLOAT_BLAS picks on this machine."""
    if FLOAT_BLAS == "auto":
        if machine.vendor() in ("GenuineIntel", None) or not blas.openblas_available():
            return "mkl"
        return "numba" if machine.has("avx512f") else "openblas"
    if FLOAT_BLAS not in ("mkl", "openblas", "numba"):
        raise ValueError(f"conv.FLOAT_BLAS must be 'auto', 'mkl', 'openblas' or 'numba', not {FLOAT_BLAS!r}")
    return FLOAT_BLAS


@contextlib.contextmanager
def _gemms():
    """The (bfloat16, float32, float64) GEMMs for a kernel call and whether float32 is gemm.sgemm's instead;
    OpenBLAS's are held at one thread meanwhile."""
    mkl, chosen = bf16.nopython_gemms(), float_blas()
    if chosen == "mkl" or (chosen == "numba" and not blas.openblas_available()):  # then float64 is MKL's
        yield (*mkl, chosen == "numba")
        return
    with blas.one_thread():
        yield (mkl[0], *blas.nopython_gemms(), chosen == "numba")


@njit(inline="always")
def _thread_share(t, T, count):
    """Thread t of T: the first and past-the-end index of its block of the count groups or images."""
    return t * count // T, (t + 1) * count // T


@njit(inline="always")
def _group(gr, G, N, H, W, p):
    """Images [n0, n1) of group gr, and m: the columns their rows span, without the p rows after the last."""
    n0, n1 = gr * G, min(N, gr * G + G)
    return n0, n1, (n1 - n0) * (H + p) * W - p * W


@njit(inline="always")
def _gemm_packed_a(packed, trans_b, m, n, k, a_packed, b, ldb, beta, c, ldc):
    """_gemm for bfloat16 with op(a) already in MKL's packed form (bf16.nopython_packed)."""
    packed[1](101, bf16.PACKED, trans_b, m, n, k, np.float32(1), a_packed, k, b, ldb, np.float32(beta), c, ldc)


@njit(**OPTS)
def _row_shift_forward_kernel(xg, w_rows, w_packed, bias, out, xs_all, y_all, G, p, gemms, packed):
    N, C, H, W = xg.shape
    kh, F, kwC = w_rows.shape
    T, L, M = xs_all.shape[0], xs_all.shape[3], y_all.shape[2]
    size, csize, groups = xg.itemsize, out.itemsize, (N + G - 1) // G
    for t in prange(T):
        xs, y = xs_all[t], y_all[t]
        for gr in range(*_thread_share(t, T, groups)):
            n0, n1, m = _group(gr, G, N, H, W, p)
            direct = n1 - n0 == 1  # one image: its rows are out[n0] itself
            _shift_copies(xg[n0:n1], xs, p)
            c_at = out.ctypes.data + csize * n0 * F * H * W if direct else y.ctypes.data
            for i in range(kh):  # y (F, m) (+)= W_i (F, kw*C) @ xs[:, i*W : i*W + m]
                b_at, beta, ldc = xs.ctypes.data + size * i * W, 1.0 if i > 0 else 0.0, m if direct else M
                if w_packed.shape[1]:
                    _gemm_packed_a(packed, _NO_TRANS, F, m, kwC, w_packed[i].ctypes.data, b_at, L, beta, c_at, ldc)
                else:
                    _gemm(gemms, size, _NO_TRANS, _NO_TRANS, F, m, kwC, w_rows.ctypes.data + size * i * F * kwC, kwC,
                          b_at, L, beta, c_at, ldc)
            if direct:
                for f in range(bias.size):
                    out[n0, f] += bias[f]
            else:
                _rows_to_images(y, out[n0:n1], p, bias)


@njit(**OPTS)
def _row_shift_backward_kernel(xg, doutg, w_rows, wt_packed, dx, dw_all, xs_all, g_all, dxs_all, g_packed_all, G, p,
                               need_dx, gemms, packed):
    N, C, H, W = xg.shape
    kh, F, kwC = w_rows.shape
    T, L, M = xs_all.shape[0], xs_all.shape[3], g_all.shape[2]
    size, csize, groups = xg.itemsize, dw_all.itemsize, (N + G - 1) // G
    for t in prange(T):
        xs, g, dxs, dw = xs_all[t], g_all[t], dxs_all[t], dw_all[t]
        dw[:] = 0
        for gr in range(*_thread_share(t, T, groups)):
            n0, n1, m = _group(gr, G, N, H, W, p)
            direct = n1 - n0 == 1  # one image: dout[n0] is already the (F, H*W) operand
            _shift_copies(xg[n0:n1], xs, p)
            if direct:
                g_at, ldg = doutg.ctypes.data + size * n0 * F * H * W, m
            else:
                _images_to_rows(doutg[n0:n1], g, p)
                g_at, ldg = g.ctypes.data, M
            if g_packed_all.shape[1]:  # dout is the same operand of all kh GEMMs: reordered once for them
                packed[0](101, bf16.PACK_A, _NO_TRANS, F, kwC, m, g_at, ldg, g_packed_all[t].ctypes.data)
            for i in range(kh):  # dW_i (F, kw*C) += dout @ xs[:, i*W : i*W + m].T
                b_at, c_at = xs.ctypes.data + size * i * W, dw.ctypes.data + csize * i * F * kwC
                if g_packed_all.shape[1]:
                    _gemm_packed_a(packed, _TRANS, F, kwC, m, g_packed_all[t].ctypes.data, b_at, L, 1.0, c_at, kwC)
                else:
                    _gemm(gemms, size, _NO_TRANS, _TRANS, F, kwC, m, g_at, ldg, b_at, L, 1.0, c_at, kwC)
            if need_dx:
                dxs[:, :, m:] = 0  # columns the first GEMM does not write but the next ones add to
                for i in range(kh):  # dxs[:, i*W : i*W + m] (+)= W_i.T @ dout
                    beta, c_at = 1.0 if i > 0 else 0.0, dxs.ctypes.data + csize * i * W
                    if wt_packed.shape[1]:
                        _gemm_packed_a(packed, _NO_TRANS, kwC, m, F, wt_packed[i].ctypes.data, g_at, ldg, beta, c_at, L)
                    else:
                        _gemm(gemms, size, _TRANS, _NO_TRANS, kwC, m, F, w_rows.ctypes.data + size * i * F * kwC, kwC,
                              g_at, ldg, beta, c_at, L)
                _fold_shift_copies(dxs, dx[n0:n1], p)


def _group_scratch(xg, F, kw, padding, sum_dtype):
    """G, images per group, and per thread: the shifted copies of a group (kw, C, L) and a (F, M) matrix
    for y or dout."""
    N, C, H, W = xg.shape
    G = max(1, min(N, GROUP_COLUMNS // (H * W)))
    L = (padding + G * (H + padding)) * W
    T = numba.get_num_threads()
    return G, _workspace("xs", (T, kw, C, L), xg.dtype), _workspace("y", (T, F, L - 2 * padding * W), sum_dtype)


def _bias_or_empty(bias, dtype):
    """The bias as the kernels take it: an empty array stands for no bias (Numba has no optional arrays)."""
    return np.zeros(0, dtype) if bias is None else np.ascontiguousarray(bias, dtype)


def _rows_of(weight):
    """[f, c, i, j] -> [i, f, j*C + c]: the kernel row i as one (F, kw*C) matrix over xs's rows."""
    F, C, kh, kw = weight.shape
    return np.ascontiguousarray(weight.transpose(2, 0, 3, 1)).reshape(kh, F, kw * C)


def _packed(name, count, m, n, k, dtype):
    """Scratch for count operands in MKL's packed form, an empty (count, 0) array where nothing is packed (the
    kernels then call the plain GEMMs): bfloat16 only, since the float32 GEMMs do not gain from packing here.
    Each starts on a 64-byte boundary (what MKL's own allocator gives)."""
    if not PACK_BF16 or dtype != np.uint16 or m * n * k == 0:
        return np.empty((count, 0), np.uint8)
    size = (bf16.packed_size(m, n, k) + 63) // 64 * 64
    buf = _workspace(name, (count * size + 64,), np.uint8)
    skip = -buf.ctypes.data % 64
    return buf[skip:skip + count * size].reshape(count, size)


def _packed_rows(w_rows, trans, n):
    """Each kernel row's weight matrix w_rows[i] (F, kw*C), or its transpose, packed as a GEMM's first operand
    for n columns: once a step, and every image group's GEMMs read it."""
    kh, F, kwC = w_rows.shape
    m, k = (kwC, F) if trans else (F, kwC)
    packed = _packed("w_packed", kh, m, n, k, w_rows.dtype)
    if packed.shape[1]:
        pack = bf16.nopython_packed()[0]
        for i in range(kh):
            pack(101, bf16.PACK_A, _TRANS if trans else _NO_TRANS, m, n, k, w_rows[i].ctypes.data, kwC, packed[i].ctypes.data)
    return packed


def _row_shift_forward(xg, weight, bias, padding, out_dtype):
    F, _, kh, kw = weight.shape
    out = np.empty((xg.shape[0], F, *xg.shape[2:]), out_dtype)
    b = _bias_or_empty(bias, out_dtype)
    G, xs, y = _group_scratch(xg, F, kw, padding, out_dtype)
    w_rows = _like(_rows_of(weight), xg)
    with _gemms() as gemms:
        _row_shift_forward_kernel(xg, w_rows, _packed_rows(w_rows, False, y.shape[2]), b, out, xs, y, G, padding,
                                  gemms, bf16.nopython_packed())
    return out


def _row_shift_backward(dout, xg, weight, padding, need_dx):
    N, C, H, W = xg.shape
    F, _, kh, kw = weight.shape
    dtype = dout.dtype
    G, xs, g = _group_scratch(xg, F, kw, padding, xg.dtype)
    dw_all = _workspace("dw", (xs.shape[0], kh, F, kw * C), dtype)
    dx = np.empty((N, C, H, W) if need_dx else (0, C, H, W), dtype)
    dxs = _workspace("dxs", xs.shape, dtype) if need_dx else np.empty((xs.shape[0], 0, 0, 0), dtype)
    w_rows, T, M = _like(_rows_of(weight), xg), xs.shape[0], g.shape[2]
    wt_packed = _packed_rows(w_rows, True, M) if need_dx else np.empty((kh, 0), np.uint8)
    g_packed = _packed("g_packed", T, F, kw * C, M, xg.dtype)
    with _gemms() as gemms:
        _row_shift_backward_kernel(xg, _like(dout, xg), w_rows, wt_packed, dx, dw_all, xs, g, dxs, g_packed, G, padding,
                                   need_dx, gemms, bf16.nopython_packed())
    dw = dw_all.sum(axis=0).reshape(kh, F, kw, C).transpose(1, 3, 0, 2)  # [i, f, j*C + c] -> [f, c, i, j]
    return (dx if need_dx else None), np.ascontiguousarray(dw)


# ------------------------------------------------------------ any other layer with big images: im2col per image
# What the row-shift path does not take (RGB input, strides, even kernels) runs im2col one image at a time
# inside the Numba loop: the image's column matrix (C*kh*kw, OH*OW) is built in the thread's scratch, in
# cache, and the GEMM reading it writes out[n] directly, already (F, OH*OW): no batch-sized column matrix,
# no reorder. Backward rebuilds the columns the same way, dW += dout[n] @ col.T per thread, and (when
# needed) dcol = W.T @ dout[n], folded onto dx[n] by col2im. Outputs smaller than IMAGE_MIN_COLUMNS make
# the GEMMs too thin for this: they go through the chunked im2col below, as everything does without MKL.
IMAGE_MIN_COLUMNS = 256


def _image_im2col_applies(OH, OW):
    return OH * OW >= IMAGE_MIN_COLUMNS and bf16.available()


@njit(**OPTS)
def _image_im2col_forward_kernel(xg, w2, bias, out, col_all, kh, kw, stride, padding, OH, OW, gemms):
    N, F, P = out.shape
    T, K = col_all.shape[0], w2.shape[1]
    for t in prange(T):
        col = col_all[t]
        for n in range(*_thread_share(t, T, N)):
            for r in range(K):
                _im2col_row(xg, n, n + 1, r, col[r], kh, kw, stride, padding, OH, OW)
            # out[n] (F, P) = W (F, K) @ col (K, P)
            _gemm(gemms, xg.itemsize, _NO_TRANS, _NO_TRANS, F, P, K, w2.ctypes.data, K, col.ctypes.data, P, 0.0,
                  out.ctypes.data + out.itemsize * n * F * P, P)
            for f in range(bias.size):
                out[n, f] += bias[f]


@njit(**OPTS)
def _image_im2col_backward_kernel(xg, doutg, w2, dx, dw_all, col_all, dcol_all, kh, kw, stride, padding, OH, OW,
                                  need_dx, gemms):
    N, F, P = doutg.shape
    T, K, C = col_all.shape[0], w2.shape[1], xg.shape[1]
    size = xg.itemsize
    for t in prange(T):
        col, dcol, dw = col_all[t], dcol_all[t], dw_all[t]
        dw[:] = 0
        for n in range(*_thread_share(t, T, N)):
            for r in range(K):
                _im2col_row(xg, n, n + 1, r, col[r], kh, kw, stride, padding, OH, OW)
            g_at = doutg.ctypes.data + size * n * F * P  # dout[n]: (F, P) as it is
            # dW (F, K) += dout[n] (F, P) @ col.T (P, K)
            _gemm(gemms, size, _NO_TRANS, _TRANS, F, K, P, g_at, P, col.ctypes.data, P, 1.0, dw.ctypes.data, K)
            if need_dx:  # dcol (K, P) = W.T (K, F) @ dout[n] (F, P)
                _gemm(gemms, size, _TRANS, _NO_TRANS, K, P, F, w2.ctypes.data, K, g_at, P, 0.0, dcol.ctypes.data, P)
                for c in range(C):
                    _zero_and_col2im_plane(dcol, dx, n, c, 0, kh, kw, stride, padding, OH, OW)


def _image_im2col_forward(xg, weight, bias, stride, padding, OH, OW, out_dtype):
    F, C, kh, kw = weight.shape
    out = np.empty((xg.shape[0], F, OH * OW), out_dtype)
    b = _bias_or_empty(bias, out_dtype)
    col = _workspace("col", (numba.get_num_threads(), C * kh * kw, OH * OW), xg.dtype)
    with _gemms() as gemms:
        _image_im2col_forward_kernel(xg, _like(weight.reshape(F, -1), xg), b, out, col, kh, kw, stride, padding, OH, OW,
                                     gemms)
    return out.reshape(xg.shape[0], F, OH, OW)


def _image_im2col_backward(dout, xg, weight, stride, padding, need_dx):
    F, C, kh, kw = weight.shape
    N, _, OH, OW = dout.shape
    dtype, T, K = dout.dtype, numba.get_num_threads(), C * kh * kw
    col = _workspace("col", (T, K, OH * OW), xg.dtype)
    dw_all = _workspace("dw", (T, F, K), dtype)
    dx = np.empty(xg.shape if need_dx else (0, *xg.shape[1:]), dtype)
    dcol = _workspace("dcol", (T, K, OH * OW), dtype) if need_dx else np.empty((T, 0, 0), dtype)
    doutg = _like(np.ascontiguousarray(dout).reshape(N, F, OH * OW), xg)
    with _gemms() as gemms:
        _image_im2col_backward_kernel(xg, doutg, _like(weight.reshape(F, K), xg), dx, dw_all, col, dcol, kh, kw, stride,
                                      padding, OH, OW, need_dx, gemms)
    return (dx if need_dx else None), dw_all.sum(axis=0).reshape(weight.shape)


# --------------------------------------------------- 3x3 "same" layers in float32: Winograd F(m x m, 3x3)
# Lavin & Gray 2016 ("Fast Algorithms for Convolutional Neural Networks"): each m x m block of outputs is
# A^T [(G w G^T) * (B^T d B)] A, d the n x n input patch around it (n = m + 2), w the 3x3 filter, *
# elementwise: n^2 multiplications per (input channel, output channel) pair instead of 9 m^2. Over a group of
# images the n^2 products become n^2 GEMMs, U[k] (F, C) @ V[:, k] (C, tiles). A bigger m multiplies less per
# output but wastes more where H or W is not a multiple of m, and its transforms cost more per tile, so each
# layer takes the m of least estimated time (winograd_tile): fast's 31x31, 15x15, 7x7 and 3x3 layers take
# m = 4, 5, 7, 3, where F(4x4, 3x3) everywhere (before 2026-12-07) did 1.5x the GEMM work at width 2. The
# backward is the exact adjoint of the same steps:
#   dU[k] = sum over tiles dM[:, k] V[:, k]^T,  dM = A dY A^T per tile;   dw = G^T dU G
#   dV[:, k] = U[k]^T dM[:, k];                  dx = sum over tiles of B dV B^T, back where d came from.
# V is laid out (C, n, n, tiles) and M (F, n, n, tiles): a plane's n^2 transformed rows sit together, and the
# GEMMs read V[:, k] with a row stride of n^2 rows of WINOGRAD_COLUMNS + WINOGRAD_PAD tiles (the pad keeps that
# stride off powers of two, which slowed a first version's GEMMs in scratch timings). Every transform is two
# passes of a small matrix along the tiles (contiguous: the loops vectorise), skipping zero coefficients.
# float32 and float64 only: under matmul precision "medium" the row-shift path's bfloat16 GEMMs run instead.
WINOGRAD = True
WINOGRAD_MIN_CHANNELS = 16  # at 24 (fast's first 3x3 layer) Winograd and the row-shift path are about level
# (benchmarks/results/conv_layers_fast_icelake.json); thinner layers were not timed
WINOGRAD_COLUMNS = 128  # tiles per GEMM group, about (_group_images): of 64/128/256 in scratch timings, none
# clearly best; bigger groups make V and M outgrow the caches between transform and GEMM
WINOGRAD_PAD = 16  # unused tiles at the end of each row
# F(m, 3) interpolates at the first m + 1 of these points and at infinity. In float32 the convolution's relative
# RMS error against float64 is 2e-7 to 2.5e-6 for m <= 6 and 2-3e-5 for m = 7, the ninth point (3) costing the
# most (benchmarks/winograd_tiles.py, a 64 -> 32 channel 14x14 layer); bfloat16 operands: 2.5e-3.
WINOGRAD_POINTS = (0, 1, -1, 2, -2, 0.5, -0.5, 3)
WINOGRAD_TILES = (2, 3, 4, 5, 6, 7)  # the m a layer may take: (4,) is F(4x4, 3x3) everywhere


def winograd_matrices(m, r=3, points=None):
    """A^T (m x n), G (n x r), B^T (n x n) of F(m, r), n = m + r - 1, from n - 1 finite points (the first of
    WINOGRAD_POINTS unless given) and infinity (Toom-Cook): y = A^T [(G g) * (B^T d)] is the correlation of d
    (length n) with g (length r)."""
    n = m + r - 1
    points = WINOGRAD_POINTS[:n - 1] if points is None else points
    AT, G, BT = np.zeros((m, n)), np.zeros((n, r)), np.zeros((n, n))
    for j, p in enumerate(points):
        others = [q for q in points if q != p]
        AT[:, j] = [p ** i for i in range(m)]
        G[j] = [p ** k / np.prod([p - q for q in others]) for k in range(r)]
        coefficients = np.polynomial.polynomial.polyfromroots(others)
        BT[j, :len(coefficients)] = coefficients
    AT[m - 1, n - 1], G[n - 1, r - 1] = 1, 1
    BT[n - 1] = np.polynomial.polynomial.polyfromroots(points)
    return AT, G, BT


WINOGRAD_TRANSFORM_COST = 6  # a transform's time per tile against one GEMM's, below (fit on the Zen 5)


def winograd_tile(H, W, C, F):
    """The m of least estimated time for an H x W layer of C -> F channels: per tile, n^2 GEMMs of C x F and
    transforms of about n^3 operations per channel (n = m + 2), weighted by WINOGRAD_TRANSFORM_COST (fit to
    scratch timings of fast's layers on the Zen 5: with it, 24 -> 128 channels at 31x31 keeps m = 4, 19 ms
    per 256 images faster than m = 7, where GEMM work alone picked m = 7)."""
    def cost(m):
        n = m + 2
        return -(-H // m) * -(-W // m) * n * n * (C * F + WINOGRAD_TRANSFORM_COST * n * (C + F))
    return min(WINOGRAD_TILES, key=lambda m: (cost(m), m))


def _winograd_applies(xg, kh, kw, stride, padding):
    return (WINOGRAD and xg.dtype in (np.float32, np.float64) and kh == kw == 3 and stride == 1 and padding == 1
            and xg.shape[1] >= WINOGRAD_MIN_CHANNELS and bf16.available())


@njit(inline="always")
def _rows_times(matrix, X, Y, length):
    """Y[a, :length] = sum_k matrix[a, k] X[k, :length] for matrix in _sparse() form: row a's nonzeros four at
    a time (after the one to three left over), so that a row of Y is written once per four terms."""
    index, coef, counts, _ = matrix
    for a in range(counts.shape[0]):
        y, count = Y[a], counts[a]
        rest = count % 4
        if count == 0:
            y[:length] = 0
        elif rest == 1:
            x0, c0 = X[index[a, 0]], coef[a, 0]
            for t in range(length):
                y[t] = c0 * x0[t]
        elif rest == 2:
            x0, x1, c0, c1 = X[index[a, 0]], X[index[a, 1]], coef[a, 0], coef[a, 1]
            for t in range(length):
                y[t] = c0 * x0[t] + c1 * x1[t]
        elif rest == 3:
            x0, x1, x2 = X[index[a, 0]], X[index[a, 1]], X[index[a, 2]]
            c0, c1, c2 = coef[a, 0], coef[a, 1], coef[a, 2]
            for t in range(length):
                y[t] = c0 * x0[t] + c1 * x1[t] + c2 * x2[t]
        for s in range(rest, count, 4):
            x0, x1, x2, x3 = X[index[a, s]], X[index[a, s + 1]], X[index[a, s + 2]], X[index[a, s + 3]]
            c0, c1, c2, c3 = coef[a, s], coef[a, s + 1], coef[a, s + 2], coef[a, s + 3]
            if s == 0:
                for t in range(length):
                    y[t] = c0 * x0[t] + c1 * x1[t] + c2 * x2[t] + c3 * x3[t]
            else:
                for t in range(length):
                    y[t] += c0 * x0[t] + c1 * x1[t] + c2 * x2[t] + c3 * x3[t]


@njit(**SERIAL)
def _sandwich(left, right, P, Q, Z, T):
    """Z[a, b, :T] = sum_kl left[a, k] right[b, l] P[k, l, :T] (P, Q, Z: (n, n, L), C-contiguous), through
    Q[a, l] = sum_k left[a, k] P[k, l]: that pass runs along whole (l, tile) planes, the second along tiles."""
    n, L = P.shape[1], P.shape[2]
    _rows_times(left, P.reshape((n, n * L)), Q.reshape((n, n * L)), right[3] * L)
    for a in range(left[2].shape[0]):
        _rows_times(right, Q[a], Z[a], T)


def _sparse(matrix, dtype):
    """matrix (R x K) as _rows_times takes it: (index, coef, counts, K), row a's counts[a] nonzeros in
    columns index[a, :counts[a]], values coef[a, :counts[a]]."""
    nonzero = [np.flatnonzero(row) for row in matrix]
    counts = np.array([len(k) for k in nonzero], np.int64)
    index, coef = np.zeros((len(matrix), max(1, counts.max())), np.int64), np.zeros((len(matrix), max(1, counts.max())), dtype)
    for a, k in enumerate(nonzero):
        index[a, :len(k)], coef[a, :len(k)] = k, matrix[a, k]
    return index, coef, counts, matrix.shape[1]


# The tiles' patches overlap (input) or are cut off at the image's edge (output), so the transforms move data
# through a stack of zero-bordered planes, one per image of the group: tile t's patch starts at offsets[t] in
# that stack, and element (k, l) of every patch is a flat loop over the tiles (no bounds, no branches). Writing
# the output tiles straight into out (where m divides the sides) was 2-6x slower than through the planes: each
# pass over the tiles then strides across the images' planes of all F channels instead of one small stack.
@njit(inline="always")
def _gather(flat, base, width, P, size, offsets, cols):
    """P[k, l, t] = flat[base + offsets[t] + k*width + l] for k, l < size, t < cols."""
    for k in range(size):
        for l in range(size):
            Pkl, at = P[k, l], base + k * width + l
            for t in range(cols):
                Pkl[t] = flat[at + offsets[t]]


@njit(inline="always")
def _scatter(P, flat, base, width, size, offsets, cols, shift):
    """flat[base + offsets[t] + k*width + l] = P[k, l, t] + shift: _gather's inverse, for patches that do not
    overlap."""
    for k in range(size):
        for l in range(size):
            Pkl, at = P[k, l], base + k * width + l
            for t in range(cols):
                flat[at + offsets[t]] = Pkl[t] + shift


@njit(inline="always")
def _scatter_add(P, flat, base, width, size, offsets, cols):
    """flat[base + offsets[t] + k*width + l] += P[k, l, t]: _gather's adjoint, for overlapping patches."""
    for k in range(size):
        for l in range(size):
            Pkl, at = P[k, l], base + k * width + l
            for t in range(cols):
                flat[at + offsets[t]] += Pkl[t]


@njit(**SERIAL)
def _input_tiles(x, n0, n1, V, BT, P, Q, pads, offsets, m, TH, TW):
    """V[c, a, b, (n - n0)*TH*TW + i*TW + j] = (B^T d B)[a, b], d = x[n, c, m*i-1 : m*i+m+1, m*j-1 : m*j+m+1]
    (zeros outside the image). pads (images, m*TH + 2, m*TW + 2): zero-bordered planes; P, Q (n, n, tiles)."""
    _, C, H, W = x.shape
    cols = (n1 - n0) * TH * TW
    for c in range(C):
        for im in range(n0, n1):
            _copy_block(x[im, c], 0, 0, pads[im - n0], 1, 1, H, W)
        _gather(pads.reshape(pads.size), 0, pads.shape[2], P, m + 2, offsets, cols)
        _sandwich(BT, BT, P, Q, V[c], cols)


@njit(**SERIAL)
def _input_tiles_adjoint(dV, dx, n0, n1, B, P, Q, pads, offsets, m, TH, TW):
    """dx[n0:n1] = the sum over tiles of B dV B^T, each added where _input_tiles read its patch (pads: planes
    shaped as _input_tiles', not the same ones)."""
    _, C, H, W = dx.shape
    cols = (n1 - n0) * TH * TW
    for c in range(C):
        _sandwich(B, B, dV[c], Q, P, cols)
        pads[:] = 0
        _scatter_add(P, pads.reshape(pads.size), 0, pads.shape[2], m + 2, offsets, cols)
        for im in range(n0, n1):
            _copy_block(pads[im - n0], 1, 1, dx[im, c], 0, 0, H, W)


@njit(inline="always")
def _copy_block(src, src_row, src_col, dst, dst_row, dst_col, H, W):
    """dst[dst_row:+H, dst_col:+W] = src[src_row:+H, src_col:+W], element by element: 2-7x faster than slice
    assignments of these short rows (and a flat loop over exactly-fitting planes was 1.6x slower; scratch timings)."""
    for h in range(H):
        for w in range(W):
            dst[dst_row + h, dst_col + w] = src[src_row + h, src_col + w]


@njit(**SERIAL)
def _output_tiles(M, out, n0, n1, bias, AT, P, Q, planes, offsets, m, TH, TW):
    """out[n, f, m*i : m*i+m, m*j : m*j+m] = A^T M[f, :, :, tile] A + bias[f], the parts of edge tiles outside
    the image dropped (planes (images, m*TH, m*TW): scratch)."""
    _, F, H, W = out.shape
    cols = (n1 - n0) * TH * TW
    for f in range(F):
        _sandwich(AT, AT, M[f], Q, P, cols)
        _scatter(P, planes.reshape(planes.size), 0, planes.shape[2], m, offsets, cols, bias[f])
        for im in range(n0, n1):
            _copy_block(planes[im - n0], 0, 0, out[im, f], 0, 0, H, W)


@njit(**SERIAL)
def _output_tiles_adjoint(dout, dM, n0, n1, A, P, Q, planes, offsets, m, TH, TW):
    """dM[f, :, :, tile] = A dy A^T, dy = dout[n, f, m*i : m*i+m, m*j : m*j+m] (zeros outside the image: planes
    (images, m*TH, m*TW) must be zero outside [:H, :W])."""
    _, F, H, W = dout.shape
    cols = (n1 - n0) * TH * TW
    for f in range(F):
        for im in range(n0, n1):  # the planes outside [:H, :W] stay zero
            _copy_block(dout[im, f], 0, 0, planes[im - n0], 0, 0, H, W)
        _gather(planes.reshape(planes.size), 0, planes.shape[2], P, m, offsets, cols)
        _sandwich(A, A, P, Q, dM[f], cols)


@njit(**OPTS)
def _winograd_forward_kernel(x, U, bias, out, BT, AT, V_all, M_all, P_all, Q_all, pads_all, planes_all, offsets,
                             out_offsets, G, gemms):
    N, C, H, W = x.shape
    F, n = U.shape[1], P_all.shape[1]
    m = n - 2
    TH, TW = (H + m - 1) // m, (W + m - 1) // m
    T, L = V_all.shape[0], V_all.shape[4]
    size, groups, stride = x.itemsize, (N + G - 1) // G, n * n * L
    for t in prange(T):
        V, M, P, Q = V_all[t], M_all[t], P_all[t], Q_all[t]
        for gr in range(*_thread_share(t, T, groups)):
            n0, n1 = gr * G, min(N, gr * G + G)
            _input_tiles(x, n0, n1, V, BT, P, Q, pads_all[t], offsets, m, TH, TW)
            for k in range(n * n):  # M[:, k] (F, tiles) = U[k] (F, C) @ V[:, k] (C, tiles)
                _gemm(gemms, size, _NO_TRANS, _NO_TRANS, F, (n1 - n0) * TH * TW, C, U[k].ctypes.data, C,
                      V.ctypes.data + size * k * L, stride, 0.0, M.ctypes.data + size * k * L, stride)
            _output_tiles(M, out, n0, n1, bias, AT, P, Q, planes_all[t], out_offsets, m, TH, TW)


@njit(**OPTS)
def _winograd_backward_kernel(x, dout, U, dx, BT, B, A, dU_all, V_all, dM_all, dV_all, P_all, Q_all, pads_all,
                              dpads_all, planes_all, offsets, out_offsets, G, need_dx, gemms):
    N, C, H, W = x.shape
    F, n = U.shape[1], P_all.shape[1]
    m = n - 2
    TH, TW = (H + m - 1) // m, (W + m - 1) // m
    T, L = V_all.shape[0], V_all.shape[4]
    size, groups, stride = x.itemsize, (N + G - 1) // G, n * n * L
    for t in prange(T):
        V, dM, dV, dU, P, Q = V_all[t], dM_all[t], dV_all[t], dU_all[t], P_all[t], Q_all[t]
        dU[:] = 0
        planes_all[t][:] = 0
        for gr in range(*_thread_share(t, T, groups)):
            n0, n1 = gr * G, min(N, gr * G + G)
            cols = (n1 - n0) * TH * TW
            _input_tiles(x, n0, n1, V, BT, P, Q, pads_all[t], offsets, m, TH, TW)  # recomputed: cheaper than keeping V
            _output_tiles_adjoint(dout, dM, n0, n1, A, P, Q, planes_all[t], out_offsets, m, TH, TW)
            for k in range(n * n):  # dU[k] (F, C) += dM[:, k] (F, tiles) @ V[:, k].T (tiles, C)
                _gemm(gemms, size, _NO_TRANS, _TRANS, F, C, cols, dM.ctypes.data + size * k * L, stride,
                      V.ctypes.data + size * k * L, stride, 1.0, dU[k].ctypes.data, C)
            if need_dx:
                for k in range(n * n):  # dV[:, k] (C, tiles) = U[k].T (C, F) @ dM[:, k] (F, tiles)
                    _gemm(gemms, size, _TRANS, _NO_TRANS, C, cols, F, U[k].ctypes.data, C, dM.ctypes.data + size * k * L,
                          stride, 0.0, dV.ctypes.data + size * k * L, stride)
                _input_tiles_adjoint(dV, dx, n0, n1, B, P, Q, dpads_all[t], offsets, m, TH, TW)


def _group_images(tiles):
    """Images per GEMM group: whole images, about WINOGRAD_COLUMNS tiles, and a multiple of 16 tiles where that
    takes at most twice as many (the float32 GEMM's column blocks: 126 columns ran 20-40% slower than 144)."""
    whole = 16 // math.gcd(tiles, 16)  # images whose tiles make a multiple of 16
    if whole * tiles <= 2 * WINOGRAD_COLUMNS:
        return whole * max(1, round(WINOGRAD_COLUMNS / (whole * tiles)))
    return max(1, WINOGRAD_COLUMNS // tiles)


def _winograd_scratch(x, F, m):
    """Images per group G and per thread: the group's V (C, n, n, tiles) and M (F, n, n, tiles), two (n, n,
    tiles) arrays for the transforms, and the zero-bordered input planes (G, m*TH + 2, m*TW + 2)."""
    N, C, H, W = x.shape
    n, TH, TW = m + 2, -(-H // m), -(-W // m)
    G = max(1, min(N, _group_images(TH * TW)))
    T = numba.get_num_threads()
    L = G * TH * TW + WINOGRAD_PAD
    pads = _workspace("wino_pad", (T, G, m * TH + 2, m * TW + 2), x.dtype)
    pads[:] = 0
    return (G, _workspace("wino_v", (T, C, n, n, L), x.dtype), _workspace("wino_m", (T, F, n, n, L), x.dtype),
            _workspace("wino_p", (T, n, n, L), x.dtype), _workspace("wino_q", (T, n, n, L), x.dtype), pads)


@functools.lru_cache(maxsize=None)
def _tile_offsets(G, TH, TW, m, width, image_stride):
    """Where tile (image g, row i, column j) starts, (m*i, m*j), in G planes of rows of width, image_stride apart
    (cached: a layer's geometry is the same every step; the kernels only read it)."""
    g, i, j = np.meshgrid(np.arange(G), np.arange(TH), np.arange(TW), indexing="ij")
    return np.ascontiguousarray((g * image_stride + m * i * width + m * j).ravel(), np.int64)


def _winograd_offsets(x, G, m):
    """_tile_offsets in the zero-bordered input planes and in the output planes."""
    H, W = x.shape[2:]
    TH, TW = -(-H // m), -(-W // m)
    PH, PW = m * TH + 2, m * TW + 2
    return _tile_offsets(G, TH, TW, m, PW, PH * PW), _tile_offsets(G, TH, TW, m, m * TW, m * TH * m * TW)


@functools.lru_cache(maxsize=None)
def _winograd_transforms(m, dtype):
    """G, and B^T, A^T and the adjoints' B and A in _sparse form, in the arrays' dtype (float64 coefficients
    would turn float32 arithmetic into float64)."""
    AT, G, BT = winograd_matrices(m)
    return dict(G=np.ascontiguousarray(G, dtype),
                **{name: _sparse(a, dtype) for name, a in dict(BT=BT, AT=AT, B=BT.T, A=AT.T).items()})


@njit(**OPTS)
def _winograd_weights_kernel(w, g, U):
    """U[n*a + b, f, c] = sum_ij g[a, i] w[f, c, i, j] g[b, j], the inner loops along c (contiguous in U)."""
    F, C = w.shape[:2]
    n = g.shape[0]
    for f in prange(F):
        wg = np.zeros((3, n, C), w.dtype)  # [i, b, c] = (w G^T)[i, b]
        for i in range(3):
            for b in range(n):
                for j in range(3):
                    if g[b, j] != 0:
                        for c in range(C):
                            wg[i, b, c] += g[b, j] * w[f, c, i, j]
        for a in range(n):
            for b in range(n):
                u = U[n * a + b, f]
                u[:] = 0
                for i in range(3):
                    if g[a, i] != 0:
                        for c in range(C):
                            u[c] += g[a, i] * wg[i, b, c]


@njit(**OPTS)
def _winograd_weight_grad_kernel(dU, g, dw):
    """The adjoint: dw[f, c, i, j] = sum_ab g[a, i] dU[n*a + b, f, c] g[b, j]."""
    F, C = dw.shape[:2]
    n = g.shape[0]
    for f in prange(F):
        gu = np.zeros((3, n, C), dw.dtype)  # [i, b, c] = (G^T dU)[i, b]
        for i in range(3):
            for b in range(n):
                for a in range(n):
                    if g[a, i] != 0:
                        for c in range(C):
                            gu[i, b, c] += g[a, i] * dU[n * a + b, f, c]
        for i in range(3):
            for j in range(3):
                for c in range(C):
                    total = gu[i, 0, c] * g[0, j]
                    for b in range(1, n):
                        total += gu[i, b, c] * g[b, j]
                    dw[f, c, i, j] = total


def _winograd_weights(weight, m):
    F, C = weight.shape[:2]
    U = _workspace("wino_u", ((m + 2) ** 2, F, C), weight.dtype)  # reused: a fresh 9 MB array cost 10 ms of page faults
    _winograd_weights_kernel(np.ascontiguousarray(weight), _winograd_transforms(m, weight.dtype)["G"], U)
    return U


def _winograd_weight_grad(dU, F, C, m):
    dw = np.empty((F, C, 3, 3), dU.dtype)
    _winograd_weight_grad_kernel(dU, _winograd_transforms(m, dU.dtype)["G"], dw)
    return dw


def _winograd_forward(x, weight, bias):
    N, C, H, W = x.shape
    F, m = weight.shape[0], winograd_tile(H, W, C, weight.shape[0])
    out = np.empty((N, F, H, W), x.dtype)
    G, V, M, P, Q, pads = _winograd_scratch(x, F, m)
    T, _, PH, PW = pads.shape[:4]
    mats = _winograd_transforms(m, x.dtype)
    with _gemms() as gemms:
        _winograd_forward_kernel(x, _winograd_weights(weight, m), np.zeros(F, x.dtype) if bias is None else
                                 np.ascontiguousarray(bias, x.dtype), out, mats["BT"], mats["AT"], V, M, P, Q, pads,
                                 _workspace("wino_planes", (T, G, PH - 2, PW - 2), x.dtype),
                                 *_winograd_offsets(x, G, m), G, gemms)
    return out


def _winograd_backward(dout, x, weight, need_dx):
    N, C, H, W = x.shape
    F, m = weight.shape[0], winograd_tile(H, W, C, weight.shape[0])
    G, V, dM, P, Q, pads = _winograd_scratch(x, F, m)
    T, _, PH, PW = pads.shape
    n = m + 2
    dU_all = _workspace("dw", (T, n * n, F, C), x.dtype)
    dV = _workspace("wino_dv", V.shape if need_dx else (T, 0, *V.shape[2:]), x.dtype)
    dx = np.empty(x.shape if need_dx else (0, C, H, W), x.dtype)
    mats = _winograd_transforms(m, x.dtype)
    with _gemms() as gemms:
        _winograd_backward_kernel(x, np.ascontiguousarray(dout, x.dtype), _winograd_weights(weight, m), dx, mats["BT"],
                                  mats["B"], mats["A"], dU_all, V, dM, dV, P, Q, pads,
                                  _workspace("wino_dpad", pads.shape, x.dtype),
                                  _workspace("wino_dplanes", (T, G, PH - 2, PW - 2), x.dtype),
                                  *_winograd_offsets(x, G, m), G, need_dx, gemms)
    dU = dU_all[0]
    for part in dU_all[1:]:  # the threads' sums added in place: .sum(axis=0) would page-fault a fresh (n^2, F, C) array
        dU += part
    return (dx if need_dx else None), _winograd_weight_grad(dU, F, C, m)


def conv2d_forward(x, weight, bias, stride, padding):
    N, C, H, W = x.shape
    F, _, kh, kw = weight.shape
    xg = _operand(x)  # what the GEMMs read, and all backward needs: x itself, or x in bfloat16
    out_dtype = x.dtype
    if _winograd_applies(xg, kh, kw, stride, padding):
        return _winograd_forward(xg, weight, bias), xg
    if _row_shift_applies(xg, kh, kw, stride, padding):
        return _row_shift_forward(xg, weight, bias, padding, out_dtype), xg
    OH, OW = _out_size(H, kh, stride, padding), _out_size(W, kw, stride, padding)
    if _image_im2col_applies(OH, OW):
        return _image_im2col_forward(xg, weight, bias, stride, padding, OH, OW, out_dtype), xg
    P, K = OH * OW, C * kh * kw
    w2 = _like(weight.reshape(F, K), xg)
    b = np.zeros(F, out_dtype) if bias is None else bias
    out = np.empty((N, F, P), dtype=out_dtype)
    nb = _chunk(N, K, P, xg.itemsize)
    for n0 in range(0, N, nb):
        n1 = min(N, n0 + nb)
        col = _workspace("col", (K, (n1 - n0) * P), xg.dtype)
        y = _workspace("y", (F, (n1 - n0) * P), out_dtype)
        _im2col(xg[n0:n1], col, kh, kw, stride, padding, OH, OW)
        _matmul(w2, col, y)
        _gemm_to_nchw(y, b, out[n0:n1])
    return out.reshape(N, F, OH, OW), xg


def conv2d_backward(dout, saved, weight, stride, padding, need_dx=True, need_db=True):
    xg = saved  # x as the forward's GEMMs read it (bfloat16 under "medium"): backward follows the forward
    N, C, H, W = xg.shape
    F, _, kh, kw = weight.shape
    db = channel_sums(dout) if need_db else None
    if _winograd_applies(xg, kh, kw, stride, padding):
        return (*_winograd_backward(dout, xg, weight, need_dx), db)
    if _row_shift_applies(xg, kh, kw, stride, padding):
        return (*_row_shift_backward(np.ascontiguousarray(dout), xg, weight, padding, need_dx), db)
    OH, OW = dout.shape[2:]
    if _image_im2col_applies(OH, OW):
        return (*_image_im2col_backward(dout, xg, weight, stride, padding, need_dx), db)
    P, K = OH * OW, C * kh * kw
    dtype = dout.dtype
    dout = np.ascontiguousarray(dout).reshape(N, F, P)
    doutg = _like(dout, xg)
    w2 = _like(weight.reshape(F, K), xg)
    dw = np.zeros((F, K), dtype=dtype)
    dw_part = np.empty((F, K), dtype=dtype)
    dx = np.empty((N, C, H, W), dtype=dtype) if need_dx else None
    nb = _chunk(N, K, P, xg.itemsize)
    for n0 in range(0, N, nb):
        n1 = min(N, n0 + nb)
        cols = (n1 - n0) * P
        col = _workspace("col", (K, cols), xg.dtype)
        g = _workspace("y", (F, cols), xg.dtype)
        _im2col(xg[n0:n1], col, kh, kw, stride, padding, OH, OW)
        _nchw_to_gemm(doutg[n0:n1], g)
        _matmul(g, col, dw_part, trans_b=True)
        dw += dw_part
        if need_dx:
            dcol = _workspace("dcol", (K, cols), dtype)
            _matmul(w2, g, dcol, trans_a=True)
            _zero_and_col2im(dcol, dx[n0:n1], kh, kw, stride, padding, OH, OW)
    return dx, dw.reshape(weight.shape), db
