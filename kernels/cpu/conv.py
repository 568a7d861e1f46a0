"""The convolution on the CPU: a row-shift convolution for stride-1 "same" layers, im2col one image at a
time for the other layers with large images (both near the bottom of this file, both calling MKL's GEMM
from inside Numba loops), im2col + GEMM in cache-sized chunks for the rest, and im2col / col2im and the
GEMM-layout reorders as parallel Numba loops (twin: kernels/cuda/conv.cu).

Same layouts as the reference in minitorch_cifar/nn/conv.py: col is (C*kh*kw, N*OH*OW), row
r = (c*kh + i)*kw + j, column n*OH*OW + oh*OW + ow. Padding is never materialised: an index that falls
outside the image reads (or drops) a zero.
"""
import contextlib

import numba
import numpy as np
from numba import njit, prange

from minitorch_cifar import backend, machine

from . import bf16, blas, gemm
from .norm import channel_sums

OPTS = dict(parallel=True, cache=True, error_model="numpy", fastmath=False)


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


# --------------------------------------------------- 3x3 "same" layers in float32: Winograd F(4x4, 3x3)
# Lavin & Gray 2016 ("Fast Algorithms for Convolutional Neural Networks"): each 4x4 block of outputs is
# A^T [(G w G^T) * (B^T d B)] A, d the 6x6 input patch around it, w the 3x3 filter, * elementwise: 36
# multiplications per (input channel, output channel) pair instead of 144. Over a group of images the 36
# products become 36 GEMMs, U[k] (F, C) @ V[k] (C, tiles): 4x fewer GEMM FLOPs than im2col, less where H or
# W is not a multiple of 4 (the last tiles partly outside). The backward is the exact adjoint of the same steps:
#   dU[k] = sum over tiles dM[k] V[k]^T,  dM = A dY A^T per tile;   dw = G^T dU G
#   dV[k] = U[k]^T dM[k];                  dx = sum over tiles of B dV B^T, back where d came from.
# V is laid out (C, 36, tiles) and M (F, 36, tiles): a plane's 36 transformed rows sit together, and the GEMMs
# read V[:, k] with a row stride of 36 rows of WINOGRAD_COLUMNS + WINOGRAD_PAD tiles (the pad keeps that stride
# off powers of two, which slowed a first 16-row version's GEMMs in scratch timings; not re-measured at 36 rows).
# float32 and float64 only: under matmul precision "medium" the row-shift path's bfloat16 GEMMs run instead.
WINOGRAD = True
WINOGRAD_MIN_CHANNELS = 16  # at 24 (fast's first 3x3 layer) Winograd and the row-shift path are about level
# (benchmarks/results/conv_layers_fast_icelake.json); thinner layers were not timed
WINOGRAD_COLUMNS = 128  # tiles per GEMM group (whole images, at least one): of 64/128/256 in scratch timings, none
# clearly best; bigger groups make V and M outgrow the caches between transform and GEMM
WINOGRAD_PAD = 16  # unused tiles at the end of each row
_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])


def _winograd_applies(xg, kh, kw, stride, padding):
    return (WINOGRAD and xg.dtype in (np.float32, np.float64) and kh == kw == 3 and stride == 1 and padding == 1
            and xg.shape[1] >= WINOGRAD_MIN_CHANNELS and bf16.available())


# The transforms' integer coefficients as float32: an int64 constant would turn float32 arithmetic into float64
_2, _4, _5, _8 = np.float32(2), np.float32(4), np.float32(5), np.float32(8)


@njit(inline="always")
def _bt(d0, d1, d2, d3, d4, d5):
    """B^T (6x6) times a column (d0..d5)."""
    return (_4 * d0 - _5 * d2 + d4, d3 + d4 - _4 * (d1 + d2), _4 * (d1 - d2) - d3 + d4, _2 * (d3 - d1) - d2 + d4,
            _2 * (d1 - d3) - d2 + d4, _4 * d1 - _5 * d3 + d5)


@njit(inline="always")
def _b(v0, v1, v2, v3, v4, v5):
    """B times a column: the adjoint of _bt."""
    return (_4 * v0, _4 * (v2 - v1 + v5) + _2 * (v4 - v3), -_5 * v0 - _4 * (v1 + v2) - v3 - v4,
            v1 - v2 + _2 * (v3 - v4) - _5 * v5, v0 + v1 + v2 + v3 + v4, v5)


@njit(inline="always")
def _at(m0, m1, m2, m3, m4, m5):
    """A^T (4x6) times a column."""
    return m0 + m1 + m2 + m3 + m4, m1 - m2 + _2 * (m3 - m4), m1 + m2 + _4 * (m3 + m4), m1 - m2 + _8 * (m3 - m4) + m5


@njit(inline="always")
def _a(y0, y1, y2, y3):
    """A times a column: the adjoint of _at."""
    return (y0, y0 + y1 + y2 + y3, y0 - y1 + y2 - y3, y0 + _2 * y1 + _4 * y2 + _8 * y3, y0 - _2 * y1 + _4 * y2 - _8 * y3,
            y3)


@njit(inline="always")
def _input_tiles(x, n0, n1, V, pad, rows):
    """V[c, 6r + s, (n - n0)*TH*TW + i*TW + j] = (B^T d B)[r, s], d = x[n, c, 4i-1 : 4i+5, 4j-1 : 4j+5] (zeros
    outside the image). pad (4TH + 2, 4TW + 2) has a zero border; rows (6, TH, 4TW + 2) is scratch."""
    _, C, H, W = x.shape
    TH, PW = rows.shape[1], rows.shape[2]
    TW = (PW - 2) // 4
    for n in range(n0, n1):
        col = (n - n0) * TH * TW
        for c in range(C):
            plane = x[n, c]
            for h in range(H):
                for w in range(W):
                    pad[h + 1, w + 1] = plane[h, w]
            for i in range(TH):  # B^T d on whole padded rows at once
                for w in range(PW):
                    e = _bt(pad[4 * i, w], pad[4 * i + 1, w], pad[4 * i + 2, w], pad[4 * i + 3, w], pad[4 * i + 4, w],
                            pad[4 * i + 5, w])
                    rows[0, i, w], rows[1, i, w], rows[2, i, w], rows[3, i, w], rows[4, i, w], rows[5, i, w] = e
            Vc = V[c]
            for r in range(6):  # (B^T d) B: the same along each row, four columns apart per tile
                for i in range(TH):
                    row, at = rows[r, i], col + i * TW
                    for j in range(TW):
                        e = _bt(row[4 * j], row[4 * j + 1], row[4 * j + 2], row[4 * j + 3], row[4 * j + 4], row[4 * j + 5])
                        k = 6 * r
                        Vc[k, at + j], Vc[k + 1, at + j], Vc[k + 2, at + j], Vc[k + 3, at + j], Vc[k + 4, at + j], Vc[k + 5, at + j] = e


@njit(inline="always")
def _input_tiles_adjoint(dV, dx, n0, n1, pad, rows):
    """dx[n0:n1] = the sum over tiles of B dV B^T, each added where _input_tiles read its patch (pad, rows:
    scratch shaped as _input_tiles', not the same arrays)."""
    _, C, H, W = dx.shape
    TH, PW = rows.shape[1], rows.shape[2]
    TW = (PW - 2) // 4
    for n in range(n0, n1):
        col = (n - n0) * TH * TW
        for c in range(C):
            dVc = dV[c]
            rows[:] = 0
            for r in range(6):  # dV B^T along each row, overlapping tiles added
                for i in range(TH):
                    row, at = rows[r, i], col + i * TW
                    for j in range(TW):
                        e0, e1, e2, e3, e4, e5 = _b(dVc[6 * r, at + j], dVc[6 * r + 1, at + j], dVc[6 * r + 2, at + j],
                                                    dVc[6 * r + 3, at + j], dVc[6 * r + 4, at + j], dVc[6 * r + 5, at + j])
                        w = 4 * j
                        row[w] += e0
                        row[w + 1] += e1
                        row[w + 2] += e2
                        row[w + 3] += e3
                        row[w + 4] += e4
                        row[w + 5] += e5
            pad[:] = 0
            for i in range(TH):  # B (...) down the columns
                for w in range(PW):
                    e0, e1, e2, e3, e4, e5 = _b(rows[0, i, w], rows[1, i, w], rows[2, i, w], rows[3, i, w], rows[4, i, w],
                                                rows[5, i, w])
                    h = 4 * i
                    pad[h, w] += e0
                    pad[h + 1, w] += e1
                    pad[h + 2, w] += e2
                    pad[h + 3, w] += e3
                    pad[h + 4, w] += e4
                    pad[h + 5, w] += e5
            plane = dx[n, c]
            for h in range(H):
                for w in range(W):
                    plane[h, w] = pad[h + 1, w + 1]


@njit(inline="always")
def _output_tiles(M, out, n0, n1, bias, TH, TW, acc):
    """out[n, f, 4i : 4i+4, 4j : 4j+4] = A^T m A + bias, m[r, s] = M[f, 6r + s, tile]; the parts of edge tiles
    outside the image dropped. acc (6, 4, tiles): A^T m, computed for all the group's tiles at once along M's
    contiguous rows (the loop that vectorises), before the short per-tile loops that place the results."""
    _, F, H, W = out.shape
    m = (n1 - n0) * TH * TW
    for f in range(F):
        b = bias[f] if bias.size else 0
        Mf = M[f]
        for s in range(6):  # A^T m, column s of every tile
            m0, m1, m2, m3, m4, m5 = Mf[s], Mf[6 + s], Mf[12 + s], Mf[18 + s], Mf[24 + s], Mf[30 + s]
            a0, a1, a2, a3 = acc[s, 0], acc[s, 1], acc[s, 2], acc[s, 3]
            for t in range(m):
                a0[t], a1[t], a2[t], a3[t] = _at(m0[t], m1[t], m2[t], m3[t], m4[t], m5[t])
        t = 0
        for n in range(n0, n1):
            plane = out[n, f]
            for i in range(TH):
                for j in range(TW):
                    w = 4 * j
                    for a in range(4):  # (A^T m) A, row by row
                        h = 4 * i + a
                        if h < H:
                            e0, e1, e2, e3 = _at(acc[0, a, t], acc[1, a, t], acc[2, a, t], acc[3, a, t], acc[4, a, t],
                                                 acc[5, a, t])
                            if w + 3 < W:
                                plane[h, w], plane[h, w + 1], plane[h, w + 2], plane[h, w + 3] = e0 + b, e1 + b, e2 + b, e3 + b
                            else:
                                plane[h, w] = e0 + b
                                if w + 1 < W:
                                    plane[h, w + 1] = e1 + b
                                if w + 2 < W:
                                    plane[h, w + 2] = e2 + b
                    t += 1


@njit(inline="always")
def _output_tiles_adjoint(dout, dM, n0, n1, TH, TW, acc):
    """dM[f, 6r + s, tile] = (A dy A^T)[r, s], dy = dout[n, f, 4i : 4i+4, 4j : 4j+4] (zeros outside the image).
    acc (6, 4, tiles): A dy per tile, then (A dy) A^T for all tiles at once along dM's contiguous rows."""
    _, F, H, W = dout.shape
    acc[0, 0, 0] = 0
    zero = acc[0, 0, 0]  # of the arrays' type
    m = (n1 - n0) * TH * TW
    for f in range(F):
        t = 0
        for n in range(n0, n1):
            plane = dout[n, f]
            for i in range(TH):
                h = 4 * i
                for j in range(TW):
                    for c in range(4):  # A dy, column by column (zeros outside the image)
                        w = 4 * j + c
                        if w < W and h + 3 < H:
                            e = _a(plane[h, w], plane[h + 1, w], plane[h + 2, w], plane[h + 3, w])
                        elif w < W:
                            e = _a(plane[h, w], plane[h + 1, w] if h + 1 < H else zero,
                                   plane[h + 2, w] if h + 2 < H else zero, zero)
                        else:
                            e = _a(zero, zero, zero, zero)
                        acc[0, c, t], acc[1, c, t], acc[2, c, t], acc[3, c, t], acc[4, c, t], acc[5, c, t] = e
                    t += 1
        dMf = dM[f]
        for r in range(6):  # (A dy) A^T, row r of every tile
            y0, y1, y2, y3 = acc[r, 0], acc[r, 1], acc[r, 2], acc[r, 3]
            d0, d1, d2, d3, d4, d5 = dMf[6 * r], dMf[6 * r + 1], dMf[6 * r + 2], dMf[6 * r + 3], dMf[6 * r + 4], dMf[6 * r + 5]
            for t in range(m):
                d0[t], d1[t], d2[t], d3[t], d4[t], d5[t] = _a(y0[t], y1[t], y2[t], y3[t])


@njit(**OPTS)
def _winograd_forward_kernel(x, U, bias, out, V_all, M_all, pad_all, rows_all, acc_all, G, gemms):
    N, C, H, W = x.shape
    F, TH, TW = U.shape[1], (H + 3) // 4, (W + 3) // 4
    T, L = V_all.shape[0], V_all.shape[3]
    size, groups = x.itemsize, (N + G - 1) // G
    for t in prange(T):
        V, M = V_all[t], M_all[t]
        for gr in range(*_thread_share(t, T, groups)):
            n0, n1 = gr * G, min(N, gr * G + G)
            _input_tiles(x, n0, n1, V, pad_all[t], rows_all[t])
            for k in range(36):  # M[:, k] (F, tiles) = U[k] (F, C) @ V[:, k] (C, tiles)
                _gemm(gemms, size, _NO_TRANS, _NO_TRANS, F, (n1 - n0) * TH * TW, C, U[k].ctypes.data, C,
                      V.ctypes.data + size * k * L, 36 * L, 0.0, M.ctypes.data + size * k * L, 36 * L)
            _output_tiles(M, out, n0, n1, bias, TH, TW, acc_all[t])


@njit(**OPTS)
def _winograd_backward_kernel(x, dout, U, dx, dU_all, V_all, dM_all, dV_all, pad_all, dpad_all, rows_all, acc_all, G,
                              need_dx, gemms):
    N, C, H, W = x.shape
    F, TH, TW = U.shape[1], (H + 3) // 4, (W + 3) // 4
    T, L = V_all.shape[0], V_all.shape[3]
    size, groups = x.itemsize, (N + G - 1) // G
    for t in prange(T):
        V, dM, dV, dU = V_all[t], dM_all[t], dV_all[t], dU_all[t]
        dU[:] = 0
        for gr in range(*_thread_share(t, T, groups)):
            n0, n1 = gr * G, min(N, gr * G + G)
            m = (n1 - n0) * TH * TW
            _input_tiles(x, n0, n1, V, pad_all[t], rows_all[t])  # recomputed: cheaper than keeping 4x the input
            _output_tiles_adjoint(dout, dM, n0, n1, TH, TW, acc_all[t])
            for k in range(36):  # dU[k] (F, C) += dM[:, k] (F, tiles) @ V[:, k].T (tiles, C)
                _gemm(gemms, size, _NO_TRANS, _TRANS, F, C, m, dM.ctypes.data + size * k * L, 36 * L,
                      V.ctypes.data + size * k * L, 36 * L, 1.0, dU[k].ctypes.data, C)
            if need_dx:
                for k in range(36):  # dV[:, k] (C, tiles) = U[k].T (C, F) @ dM[:, k] (F, tiles)
                    _gemm(gemms, size, _TRANS, _NO_TRANS, C, m, F, U[k].ctypes.data, C, dM.ctypes.data + size * k * L,
                          36 * L, 0.0, dV.ctypes.data + size * k * L, 36 * L)
                _input_tiles_adjoint(dV, dx, n0, n1, dpad_all[t], rows_all[t])


def _winograd_scratch(x, F):
    """Images per group; per thread the group's V (C, 36, tiles) and M (F, 36, tiles), a zero-bordered padded
    plane, six rows of partial sums, and (6, 4, tiles) for the output transform's first half."""
    N, C, H, W = x.shape
    TH, TW = (H + 3) // 4, (W + 3) // 4
    G = max(1, min(N, WINOGRAD_COLUMNS // (TH * TW)))
    T = numba.get_num_threads()
    pad = _workspace("wino_pad", (T, 4 * TH + 2, 4 * TW + 2), x.dtype)
    pad[:] = 0
    L = G * TH * TW + WINOGRAD_PAD
    return (G, _workspace("wino_v", (T, C, 36, L), x.dtype), _workspace("wino_m", (T, F, 36, L), x.dtype), pad,
            _workspace("wino_rows", (T, 6, TH, 4 * TW + 2), x.dtype), _workspace("wino_acc", (T, 6, 4, L), x.dtype))


@njit(**OPTS)
def _winograd_weights_kernel(w, g, U):
    """U[6a + b, f, c] = sum_ij g[a, i] w[f, c, i, j] g[b, j], the inner loops along c (contiguous in U)."""
    F, C = w.shape[:2]
    for f in prange(F):
        wg = np.zeros((3, 6, C), w.dtype)  # [i, b, c] = (w G^T)[i, b]
        for i in range(3):
            for b in range(6):
                for j in range(3):
                    if g[b, j] != 0:
                        for c in range(C):
                            wg[i, b, c] += g[b, j] * w[f, c, i, j]
        for a in range(6):
            for b in range(6):
                u = U[6 * a + b, f]
                u[:] = 0
                for i in range(3):
                    if g[a, i] != 0:
                        for c in range(C):
                            u[c] += g[a, i] * wg[i, b, c]


@njit(**OPTS)
def _winograd_weight_grad_kernel(dU, g, dw):
    """The adjoint: dw[f, c, i, j] = sum_ab g[a, i] dU[6a + b, f, c] g[b, j]."""
    F, C = dw.shape[:2]
    for f in prange(F):
        gu = np.zeros((3, 6, C), dw.dtype)  # [i, b, c] = (G^T dU)[i, b]
        for i in range(3):
            for b in range(6):
                for a in range(6):
                    if g[a, i] != 0:
                        for c in range(C):
                            gu[i, b, c] += g[a, i] * dU[6 * a + b, f, c]
        for i in range(3):
            for j in range(3):
                for c in range(C):
                    total = gu[i, 0, c] * g[0, j]
                    for b in range(1, 6):
                        total += gu[i, b, c] * g[b, j]
                    dw[f, c, i, j] = total


def _winograd_weights(weight):
    F, C = weight.shape[:2]
    U = _workspace("wino_u", (36, F, C), weight.dtype)  # reused: a fresh 9 MB array cost 10 ms of page faults
    _winograd_weights_kernel(np.ascontiguousarray(weight), _G.astype(weight.dtype), U)
    return U


def _winograd_weight_grad(dU, F, C):
    dw = np.empty((F, C, 3, 3), dU.dtype)
    _winograd_weight_grad_kernel(dU, _G.astype(dU.dtype), dw)
    return dw


def _winograd_forward(x, weight, bias):
    N, C, H, W = x.shape
    F = weight.shape[0]
    out = np.empty((N, F, H, W), x.dtype)
    G, V, M, pad, rows, acc = _winograd_scratch(x, F)
    with _gemms() as gemms:
        _winograd_forward_kernel(x, _winograd_weights(weight), _bias_or_empty(bias, x.dtype), out, V, M, pad, rows, acc,
                                 G, gemms)
    return out


def _winograd_backward(dout, x, weight, need_dx):
    N, C, H, W = x.shape
    F = weight.shape[0]
    G, V, dM, pad, rows, acc = _winograd_scratch(x, F)
    dU_all = _workspace("dw", (V.shape[0], 36, F, C), x.dtype)
    dV = _workspace("wino_dv", V.shape, x.dtype) if need_dx else V[:, :0]
    dx = np.empty(x.shape if need_dx else (0, C, H, W), x.dtype)
    with _gemms() as gemms:
        _winograd_backward_kernel(x, np.ascontiguousarray(dout, x.dtype), _winograd_weights(weight), dx, dU_all, V, dM,
                                  dV, pad, _workspace("wino_dpad", pad.shape, x.dtype), rows, acc, G, need_dx, gemms)
    dU = dU_all[0]
    for part in dU_all[1:]:  # the threads' sums added in place: .sum(axis=0) would page-fault a fresh 36*F*C array
        dU += part
    return (dx if need_dx else None), _winograd_weight_grad(dU, F, C)

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
