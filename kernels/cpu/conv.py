"""im2col / col2im and the GEMM-layout reorders as parallel Numba loops (twin: kernels/cuda/conv.cu).

Same layouts as the reference in minitorch_cifar/nn/conv.py: col is (C*kh*kw, N*OH*OW), row
r = (c*kh + i)*kw + j, column n*OH*OW + oh*OW + ow. Padding is never materialised: an index that falls
outside the image reads (or drops) a zero.
"""
import numpy as np
from numba import njit, prange

from minitorch_cifar import backend

from . import bf16, blas

OPTS = dict(parallel=True, cache=True, error_model="numpy", fastmath=False)


@njit(inline="always")
def _valid_range(j, stride, padding, OW, W):
    """The output columns ow whose input column ow*stride + j - padding lies inside [0, W)."""
    lo = max(0, (padding - j + stride - 1) // stride)
    hi = min(OW, (W - 1 + padding - j) // stride + 1)
    return lo, max(lo, hi)


@njit(**OPTS)
def _im2col(x, col, kh, kw, stride, padding, OH, OW):
    N, C, H, W = x.shape
    P = OH * OW
    for r in prange(C * kh * kw):  # each row is written by one thread only
        c, ij = r // (kh * kw), r % (kh * kw)
        i, j = ij // kw, ij % kw
        lo, hi = _valid_range(j, stride, padding, OW, W)
        shift = j - padding
        for n in range(N):
            for oh in range(OH):
                base = n * P + oh * OW
                h = oh * stride + i - padding
                if h < 0 or h >= H:
                    for ow in range(OW):
                        col[r, base + ow] = 0
                    continue
                for ow in range(lo):
                    col[r, base + ow] = 0
                for ow in range(lo, hi):  # branch-free: the compiler can vectorise it
                    col[r, base + ow] = x[n, c, h, ow * stride + shift]
                for ow in range(hi, OW):
                    col[r, base + ow] = 0


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


def _gemm(a, a_offset, lda, b, b_offset, ldb, c, c_offset, ldc, m, n, k, beta):
    (bf16.gemm if a.dtype == np.uint16 else blas.gemm)(a, a_offset, lda, b, b_offset, ldb, c, c_offset, ldc,
                                                       m, n, k, beta=beta)


@njit(**OPTS)
def _zero_and_col2im(col, dx, kh, kw, stride, padding, OH, OW):
    N, C, H, W = dx.shape
    P = OH * OW
    for nc in prange(N * C):  # each (n, c) plane is summed into by one thread only: no races
        n, c = nc // C, nc % C
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
                    base = n * P + oh * OW
                    for ow in range(lo, hi):
                        dx[n, c, h, ow * stride + shift] += col[r, base + ow]


# ------------------------------------------------------------ stride 1, odd kernel, "same" padding: row shifts
# Rather than nine (kh*kw) shifted copies of the input in a column matrix, keep kw column-shifted copies
# of the images stacked one under another, with `padding` zero rows between them, flattened row by row
# (width W). Shifting a kernel row i down is then just starting i*W elements later in that flat array,
# so the convolution is kh GEMMs over the same buffer, each summed into the output by BLAS (beta = 1):
#     y[f, q] = sum_i  w_i[f, (j, c)] @ xs[(j, c), q + i*W]       q = (n*(H + padding) + h)*W + w
# a third of im2col's memory traffic for 3x3, no column matrix, no col2im. The output also gets the rows
# between images (discarded); with `padding` shared zero rows that is padding/H extra work.
# The input gradient is the same convolution of dout with the flipped, transposed kernel: used when
# dout has no more channels than x (else its kw shifted copies outweigh the column matrix). The weight
# gradient stays im2col + one GEMM: as kh GEMMs with a long inner dimension it was no faster.
# Per layer, beside the im2col path and torch: python benchmarks/conv_layers.py --arch fast --batch 512.
# Where it pays (benchmarks/conv_layers.py): below 8 input channels the GEMMs' inner dimension kw*C is too
# short (RGB input: im2col wins); below 8 rows the shared zero rows cost more work (1/7 at 7x7) than the
# smaller buffer saves.
ROW_SHIFT_MIN_CHANNELS = 8
ROW_SHIFT_MIN_ROWS = 8


def _row_shift_applies(x, kh, kw, stride, padding):
    return (stride == 1 and kh == kw == 2 * padding + 1 and x.shape[1] >= ROW_SHIFT_MIN_CHANNELS
            and x.shape[2] >= ROW_SHIFT_MIN_ROWS and (x.dtype == np.uint16 or blas.available(x.dtype)))


@njit(**OPTS)
def _shifted_rows(x, xs, padding):
    """xs[j, c, (padding + n*(H + padding) + h)*W + w] = x[n, c, h, w + j - padding], zeros elsewhere."""
    N, C, H, W = x.shape
    kw = xs.shape[0]
    for jc in prange(kw * C):
        j, c = jc // C, jc % C
        shift = j - padding
        lo, hi = max(0, -shift), min(W, W - shift)
        dst = xs[j, c]
        dst[:padding * W] = 0
        for n in range(N):
            base = (padding + n * (H + padding)) * W
            for h in range(H):
                row = base + h * W
                for w in range(lo):
                    dst[row + w] = 0
                for w in range(lo, hi):
                    dst[row + w] = x[n, c, h, w + shift]
                for w in range(hi, W):
                    dst[row + w] = 0
            dst[base + H * W:base + (H + padding) * W] = 0


@njit(**OPTS)
def _rows_to_nchw(y, bias, out, padding):
    N, F, H, W = out.shape
    for nf in prange(N * F):
        n, f = nf // F, nf % F
        base, b = n * (H + padding) * W, bias[f]
        for h in range(H):
            for w in range(W):
                out[n, f, h, w] = y[f, base + h * W + w] + b


def _row_shift_conv(x, w_rows, bias, padding, out):
    """out (N, F, H, W) = conv of x with w_rows (kh, F, kw*C) laid out [i, f, j*C + c] (both float, or
    both bfloat16 for a float32 out)."""
    N, C, H, W = x.shape
    kh, F, kwC = w_rows.shape
    b = np.zeros(F, out.dtype) if bias is None else bias
    nb = _chunk(N, kwC, (H + padding) * W, x.itemsize)
    for n0 in range(0, N, nb):
        n1 = min(N, n0 + nb)
        L = (padding + (n1 - n0) * (H + padding)) * W
        M = L - 2 * padding * W
        xs = _workspace("xs", (kwC // C, C, L), x.dtype)
        y = _workspace("y", (F, M), out.dtype)
        _shifted_rows(x[n0:n1], xs, padding)
        for i in range(kh):
            _gemm(w_rows, i * F * kwC, kwC, xs, i * W, L, y, 0, M, F, M, kwC, float(i > 0))
        _rows_to_nchw(y, b, out[n0:n1], padding)
    return out


def _rows_of(weight):
    """[f, c, i, j] -> [i, f, j*C + c]: the kernel row i as one (F, kw*C) matrix over xs's rows."""
    F, C, kh, kw = weight.shape
    return np.ascontiguousarray(weight.transpose(2, 0, 3, 1)).reshape(kh, F, kw * C)


def conv2d_forward(x, weight, bias, stride, padding):
    N, C, H, W = x.shape
    F, _, kh, kw = weight.shape
    xg = _operand(x)  # what the GEMMs read, and all backward needs: x itself, or x in bfloat16
    out_dtype = x.dtype
    if _row_shift_applies(xg, kh, kw, stride, padding):
        out = np.empty((N, F, H, W), dtype=out_dtype)
        return _row_shift_conv(xg, _like(_rows_of(weight), xg), bias, padding, out), xg
    OH, OW = _out_size(H, kh, stride, padding), _out_size(W, kw, stride, padding)
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


def conv2d_backward(dout, saved, weight, stride, padding, need_dx=True):
    xg = saved  # x as the forward's GEMMs read it (bfloat16 under "medium"): backward follows the forward
    N, C, H, W = xg.shape
    F, _, kh, kw = weight.shape
    OH, OW = dout.shape[2:]
    P, K = OH * OW, C * kh * kw
    dtype = dout.dtype
    dout = np.ascontiguousarray(dout).reshape(N, F, P)
    doutg = _like(dout, xg)
    dx_by_rows = need_dx and F <= C and _row_shift_applies(xg, kh, kw, stride, padding)
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
        if need_dx and not dx_by_rows:
            dcol = _workspace("dcol", (K, cols), dtype)
            _matmul(w2, g, dcol, trans_a=True)
            _zero_and_col2im(dcol, dx[n0:n1], kh, kw, stride, padding, OH, OW)
    if dx_by_rows:  # the transposed convolution: dout convolved with the kernel flipped, in and out swapped
        flipped = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        _row_shift_conv(doutg.reshape(N, F, OH, OW), _like(_rows_of(flipped), xg), None, padding, dx)
    return dx, dw.reshape(weight.shape), dout.sum(axis=(0, 2))
