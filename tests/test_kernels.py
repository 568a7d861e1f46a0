"""Every Numba kernel equals its NumPy reference, over drawn shapes, strides, paddings and dtypes."""
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from minitorch_cifar.kernels import cpu
from minitorch_cifar.nn import activation, conv, norm, pool

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def geometry(draw):
    k = draw(st.integers(1, 4))
    s, p = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)),
             draw(st.integers(max(1, k - 2 * p), 9)), draw(st.integers(max(1, k - 2 * p), 9)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return shape, k, s, p, dtype


def _x(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@SETTINGS
@given(geometry())
def test_im2col_col2im(g):
    shape, k, s, p, dtype = g
    x = _x(shape, dtype)
    col = cpu.conv.im2col(x, k, k, s, p)
    np.testing.assert_array_equal(col, conv.im2col.reference(x, k, k, s, p))
    np.testing.assert_allclose(cpu.conv.col2im(col, shape, k, k, s, p), conv.col2im.reference(col, shape, k, k, s, p), rtol=1e-5, atol=1e-5)


@SETTINGS
@given(geometry(), st.integers(1, 4), st.booleans(), st.sampled_from([1, 600, 1 << 24]))
def test_chunked_convolution_equals_reference(g, f, bias, chunk_bytes):
    """The fused kernel runs the batch in chunks (down to one image at a time) and rebuilds columns in backward."""
    shape, k, s, p, dtype = g
    x = _x(shape, dtype)
    w = _x((f, shape[1], k, k), dtype, 1)
    b = _x((f,), dtype, 2) if bias else None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cpu.conv, "CHUNK_BYTES", chunk_bytes)
        mp.setattr(cpu.conv, "IMAGE_MIN_COLUMNS", 1 << 30)  # not the per-image path
        y, saved = cpu.conv.conv2d_forward(x, w, b, s, p)
        dout = _x(y.shape, dtype, 3)
        dx, dw, db = cpu.conv.conv2d_backward(dout, saved, w, s, p)
    ry, rsaved = conv.conv2d_forward.reference(x, w, b, s, p)
    rdx, rdw, rdb = conv.conv2d_backward.reference(dout, rsaved, w, s, p)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    for ours, ref in ((y, ry), (dx, rdx), (dw, rdw), (db, rdb)):
        np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * 10)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), c=st.integers(1, 6), f=st.integers(1, 6), h=st.integers(1, 8), w=st.integers(1, 8),
       half=st.integers(0, 2), dtype=st.sampled_from([np.float32, np.float64]), group_columns=st.sampled_from([1, 40, 10_000]),
       bias=st.booleans(), need_dx=st.booleans(), blas=st.sampled_from(["mkl", "openblas", "numba"]))
@example(n=2, c=2, f=3, h=3, w=1, half=2, dtype=np.float64, group_columns=1, bias=True, need_dx=True, blas="mkl")  # shifts wider than a row
@example(n=3, c=2, f=2, h=2, w=2, half=2, dtype=np.float32, group_columns=40, bias=False, need_dx=True, blas="openblas")
def test_row_shift_convolution_equals_reference(n, c, f, h, w, half, dtype, group_columns, bias, need_dx, blas):
    """Stride 1, kernel 2*half+1, padding half: the row-shift path (kw shifted copies, kh GEMMs from inside
    the Numba loop, dx folded back from the copies' gradient), one image per group or several, the float
    GEMMs from MKL or from NumPy's OpenBLAS."""
    if not cpu.bf16.available():
        pytest.skip(f"the row-shift path needs MKL: {cpu.bf16.why_unavailable()}")
    k = 2 * half + 1
    x, wt, b = _x((n, c, h, w), dtype), _x((f, c, k, k), dtype, 1), _x((f,), dtype, 2) if bias else None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cpu.conv, "ROW_SHIFT_MIN_CHANNELS", 1)
        mp.setattr(cpu.conv, "WINOGRAD", False)  # 3x3 layers of 16+ channels would go to Winograd
        mp.setattr(cpu.conv, "GROUP_COLUMNS", group_columns)
        mp.setattr(cpu.conv, "FLOAT_BLAS", blas)
        assert cpu.conv._row_shift_applies(x, k, k, 1, half)
        y, saved = cpu.conv.conv2d_forward(x, wt, b, 1, half)
        dout = _x(y.shape, dtype, 3)
        dx, dw, db = cpu.conv.conv2d_backward(dout, saved, wt, 1, half, need_dx, bias)
    ry, rsaved = conv.conv2d_forward.reference(x, wt, b, 1, half)
    rdx, rdw, rdb = conv.conv2d_backward.reference(dout, rsaved, wt, 1, half, need_dx, bias)
    assert (dx is None) == (not need_dx) and (db is None) == (not bias)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    for ours, ref in ((y, ry), (dx, rdx), (dw, rdw), (db, rdb)):
        if ref is not None:
            np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * 10)


@settings(max_examples=30, deadline=None)
@given(g=geometry(), f=st.integers(1, 5), bias=st.booleans(), need_dx=st.booleans(), blas=st.sampled_from(["mkl", "openblas", "numba"]))
def test_per_image_im2col_convolution_equals_reference(g, f, bias, need_dx, blas):
    """Any stride, padding and kernel: columns built one image at a time in a thread's scratch, the GEMMs
    called from inside the Numba loop writing out[n] and reading dout[n] in place, dx by per-image col2im."""
    if not cpu.bf16.available():
        pytest.skip(f"the per-image path needs MKL: {cpu.bf16.why_unavailable()}")
    shape, k, s, p, dtype = g
    x, wt, b = _x(shape, dtype), _x((f, shape[1], k, k), dtype, 1), _x((f,), dtype, 2) if bias else None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cpu.conv, "IMAGE_MIN_COLUMNS", 1)
        mp.setattr(cpu.conv, "ROW_SHIFT_MIN_CHANNELS", 1 << 30)  # not the row-shift path
        mp.setattr(cpu.conv, "FLOAT_BLAS", blas)
        y, saved = cpu.conv.conv2d_forward(x, wt, b, s, p)
        assert cpu.conv._image_im2col_applies(*y.shape[2:])
        dout = _x(y.shape, dtype, 3)
        dx, dw, db = cpu.conv.conv2d_backward(dout, saved, wt, s, p, need_dx, bias)
    ry, rsaved = conv.conv2d_forward.reference(x, wt, b, s, p)
    rdx, rdw, rdb = conv.conv2d_backward.reference(dout, rsaved, wt, s, p, need_dx, bias)
    assert (dx is None) == (not need_dx) and (db is None) == (not bias)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    for ours, ref in ((y, ry), (dx, rdx), (dw, rdw), (db, rdb)):
        if ref is not None:
            np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * 10)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5), c=st.integers(1, 20), f=st.integers(1, 6), h=st.integers(1, 11), w=st.integers(1, 11),
       dtype=st.sampled_from([np.float32, np.float64]), tile=st.sampled_from([None, 2, 3, 4, 5, 6, 7]),
       columns=st.sampled_from([1, 20, 10_000]), bias=st.booleans(), need_dx=st.booleans(),
       blas=st.sampled_from(["mkl", "openblas", "numba"]))
@example(n=3, c=17, f=4, h=7, w=7, dtype=np.float64, tile=7, columns=20, bias=True, need_dx=True, blas="mkl")  # fast's 7x7
@example(n=2, c=2, f=3, h=1, w=6, dtype=np.float32, tile=4, columns=1, bias=False, need_dx=True, blas="openblas")
@example(n=4, c=3, f=2, h=15, w=15, dtype=np.float32, tile=5, columns=20, bias=True, need_dx=True, blas="numba")
def test_winograd_convolution_equals_reference(n, c, f, h, w, dtype, tile, columns, bias, need_dx, blas):
    """3x3, stride 1, padding 1: Winograd F(m x m, 3x3) for every tile size m (None: the one winograd_tile
    picks), sizes that are not multiples of m (the last tiles partly outside), one image per group of GEMMs
    or several. float64 to 1e-12 checks that the transforms and their adjoints are exact; float32 to 1e-4
    bounds the transforms' extra rounding (m = 7's is the largest: about 1e-4 of a result's largest element)."""
    if not cpu.bf16.available():
        pytest.skip(f"the Winograd path needs MKL: {cpu.bf16.why_unavailable()}")
    x, wt, b = _x((n, c, h, w), dtype), _x((f, c, 3, 3), dtype, 1), _x((f,), dtype, 2) if bias else None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cpu.conv, "WINOGRAD_MIN_CHANNELS", 1)
        mp.setattr(cpu.conv, "WINOGRAD_COLUMNS", columns)
        mp.setattr(cpu.conv, "FLOAT_BLAS", blas)
        if tile is not None:
            mp.setattr(cpu.conv, "WINOGRAD_TILES", (tile,))
        assert cpu.conv._winograd_applies(x, 3, 3, 1, 1)
        y, saved = cpu.conv.conv2d_forward(x, wt, b, 1, 1)
        dout = _x(y.shape, dtype, 3)
        dx, dw, db = cpu.conv.conv2d_backward(dout, saved, wt, 1, 1, need_dx, bias)
    ry, rsaved = conv.conv2d_forward.reference(x, wt, b, 1, 1)
    rdx, rdw, rdb = conv.conv2d_backward.reference(dout, rsaved, wt, 1, 1, need_dx, bias)
    assert (dx is None) == (not need_dx) and (db is None) == (not bias)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    for ours, ref in ((y, ry), (dx, rdx), (dw, rdw), (db, rdb)):
        if ref is not None:  # errors relative to each result's scale: dw sums over whole images
            np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * 10 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("m", [2, 3, 4, 5, 6, 7])
def test_winograd_matrices_compute_the_correlation(m):
    """A^T [(G g) * (B^T d)] is the correlation of d (length m + 2) with g (length 3), for each tile size, and
    the same in two dimensions (the form the kernels use)."""
    AT, G, BT = cpu.conv.winograd_matrices(m)
    rng = np.random.default_rng(m)
    d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
    np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), [d[i:i + 3] @ g for i in range(m)], atol=1e-12)
    d2, g2 = rng.standard_normal((m + 2, m + 2)), rng.standard_normal((3, 3))
    y = AT @ ((G @ g2 @ G.T) * (BT @ d2 @ BT.T)) @ AT.T
    np.testing.assert_allclose(y, [[np.sum(d2[i:i + 3, j:j + 3] * g2) for j in range(m)] for i in range(m)], atol=1e-11)


def test_winograd_tiles_of_the_fast_network_and_whole_16_tile_groups():
    """The tile sizes the cost model picks for fast's layers at width 2 (31x31 keeps m = 4: its transforms, on
    24 and 128 channels, would cost more than m = 7 saves in GEMMs), and GEMM groups of whole images whose
    tiles make a multiple of 16 columns where that stays within twice WINOGRAD_COLUMNS."""
    tile = cpu.conv.winograd_tile
    assert [tile(h, h, c, f) for c, f, h in [(24, 128, 31), (128, 128, 15), (128, 512, 15), (512, 512, 7),
                                               (512, 512, 3)]] == [4, 5, 5, 7, 3]
    group = cpu.conv._group_images
    assert [group(t) * t for t in (1, 4, 9, 16, 36, 64)] == [128, 128, 144, 128, 144, 128]
    assert group(25) == 128 // 25 and group(200) == 1  # 16 images of 25 tiles: 400 columns, too many


def test_winograd_only_where_it_applies(monkeypatch):
    """3x3 stride-1 "same" layers of 16+ channels in float32/64; bfloat16 operands keep the row-shift path."""
    if not cpu.bf16.available():
        pytest.skip(f"needs MKL: {cpu.bf16.why_unavailable()}")
    applies = cpu.conv._winograd_applies
    x = _x((2, 16, 8, 8), np.float32)
    assert applies(x, 3, 3, 1, 1) and applies(x.astype(np.float64), 3, 3, 1, 1)
    assert not applies(x[:, :15], 3, 3, 1, 1) and not applies(x, 3, 3, 2, 1) and not applies(x, 5, 5, 1, 2)
    assert not applies(cpu.bf16.to_bf16(x), 3, 3, 1, 1)
    monkeypatch.setattr(cpu.conv, "WINOGRAD", False)
    assert not applies(x, 3, 3, 1, 1)


@pytest.mark.parametrize("vendor, avx512, picked", [("GenuineIntel", True, "mkl"), ("AuthenticAMD", False, "openblas"),
                                                     ("AuthenticAMD", True, "numba"), (None, False, "mkl")])
def test_float_gemms_are_mkls_on_intel_ours_with_avx512_elsewhere_else_openblas(monkeypatch, vendor, avx512, picked):
    if not cpu.blas.openblas_available():
        pytest.skip("NumPy's OpenBLAS not found (a NumPy built on another BLAS)")
    monkeypatch.setattr(cpu.conv.machine, "vendor", lambda: vendor)
    monkeypatch.setattr(cpu.conv.machine, "has", lambda flag: avx512 and flag == "avx512f")
    assert cpu.conv.float_blas() == picked
    monkeypatch.setattr(cpu.conv, "FLOAT_BLAS", "mkl")
    assert cpu.conv.float_blas() == "mkl"
    monkeypatch.setattr(cpu.conv, "FLOAT_BLAS", "atlas")
    with pytest.raises(ValueError, match="FLOAT_BLAS must be"):
        cpu.conv.float_blas()


def test_openblas_is_one_threaded_only_while_the_kernels_call_it():
    if not (cpu.blas.openblas_available() and cpu.bf16.available()):
        pytest.skip("needs NumPy's OpenBLAS and MKL")
    from threadpoolctl import threadpool_limits
    threads = cpu.blas._openblas_functions()["get_threads"]
    with threadpool_limits(2, user_api="blas"), pytest.MonkeyPatch.context() as mp:
        mp.setattr(cpu.conv, "FLOAT_BLAS", "openblas")
        before = threads()
        if before == 1:
            pytest.skip("OpenBLAS runs one thread here already: nothing for the kernels to hold down")
        with cpu.conv._gemms() as gemms:
            during = threads()
        after = threads()
    assert during == 1 and after == before and gemms[1] is cpu.blas.nopython_gemms()[0]


def test_without_mkl_every_convolution_takes_im2col(monkeypatch):
    monkeypatch.setattr(cpu.bf16, "available", lambda: False)
    x, wt = _x((2, 8, 6, 6), np.float32), _x((4, 8, 3, 3), np.float32, 1)
    assert not cpu.conv._row_shift_applies(x, 3, 3, 1, 1)
    assert not cpu.conv._winograd_applies(_x((2, 16, 6, 6), np.float32), 3, 3, 1, 1)
    assert not cpu.conv._image_im2col_applies(32, 32)
    y, saved = cpu.conv.conv2d_forward(x, wt, None, 1, 1)
    np.testing.assert_allclose(y, conv.conv2d_forward.reference(x, wt, None, 1, 1)[0], rtol=1e-4, atol=1e-4)


@SETTINGS
@given(geometry())
def test_maxpool(g):
    shape, k, s, p, dtype = g
    p = min(p, k // 2)
    x = _x(shape, dtype)
    x[..., ::2, ::2] = x[..., :1, :1].copy()  # plant ties: the first maximum must win in both
    out, arg = cpu.pool.maxpool_forward(x, k, k, s, p)
    rout, rarg = pool.maxpool_forward.reference(x, k, k, s, p)
    np.testing.assert_array_equal(out, rout)
    np.testing.assert_array_equal(arg, rarg)
    dout = _x(out.shape, dtype, 1)
    np.testing.assert_allclose(cpu.pool.maxpool_backward(dout, arg, shape, k, k, s, p),
                               pool.maxpool_backward.reference(dout, arg, shape, k, k, s, p), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("h,w", [(31, 31), (8, 9), (3, 2)])
def test_maxpool_2x2_stride_2_fast_path(h, w):
    """The branch-free 2x2/stride-2 kernels: the first maximum of each window wins ties, as the reference, and
    backward writes every pixel of dx (odd sizes: the last row and column, outside every window, get 0)."""
    x = np.round(_x((2, 3, h, w), np.float32))  # rounded: many ties
    out, arg = cpu.pool.maxpool_forward(x, 2, 2, 2, 0)
    rout, rarg = pool.maxpool_forward.reference(x, 2, 2, 2, 0)
    np.testing.assert_array_equal(out, rout)
    np.testing.assert_array_equal(arg, rarg)
    assert len(np.unique(arg)) == 4
    dout = _x(out.shape, np.float32, 1)
    np.testing.assert_array_equal(cpu.pool.maxpool_backward(dout, arg, x.shape, 2, 2, 2, 0),
                                  pool.maxpool_backward.reference(dout, arg, x.shape, 2, 2, 2, 0))


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 4), st.integers(1, 20), st.sampled_from([np.float32, np.float64]))
def test_batchnorm(n, c, l, dtype):
    if n * l < 2:
        n = 2
    x = _x((n, c, l), dtype) * 3 + 5
    w, b = _x((c,), dtype, 1), _x((c,), dtype, 2)
    y, mean, var = cpu.norm.batchnorm_forward(x, w, b, 1e-5)
    ry, rmean, rvar = norm.batchnorm_forward.reference(x, w, b, 1e-5)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    for ours, ref in ((y, ry), (mean, rmean), (var, rvar)):
        np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol)
    invstd = (1 / np.sqrt(var + 1e-5)).astype(dtype)
    dy = _x(x.shape, dtype, 3)
    for ours, ref in zip(cpu.norm.batchnorm_backward(dy, x, w, mean, invstd), norm.batchnorm_backward.reference(dy, x, w, mean, invstd)):
        np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * 10)
    y = cpu.norm.batchnorm_eval_forward(x, w, b)  # evaluation: the running statistics folded into scale, shift
    assert y.dtype == dtype
    np.testing.assert_allclose(y, norm.batchnorm_eval_forward.reference(x, w, b), rtol=tol, atol=tol)


class _MirrorRanks:
    """A communicator of K ranks that all hold this rank's data: an all-reduce multiplies by K."""
    def __init__(self, k):
        self.k = k

    def sum(self, values):
        return self.k * np.array(values, dtype=np.float64)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 12), st.integers(1, 3), st.sampled_from([np.float32, np.float64]))
def test_sync_batchnorm(n, c, l, ranks, dtype):
    """Synchronised BN over K ranks holding the same shard equals per-rank BN on K copies of it, stacked:
    the Numba passes, the NumPy reference and the plain formula agree (one rank may hold a single value)."""
    from minitorch_cifar import distributed
    if n * l * ranks < 2:
        l = 2
    x = _x((n, c, l), dtype) * 3 + 5
    w, b, dy = _x((c,), dtype, 1), _x((c,), dtype, 2), _x(x.shape, dtype, 3)
    comm = _MirrorRanks(ranks)
    stacked = np.concatenate([x] * ranks)
    ry, rmean, rvar = norm.batchnorm_forward.reference(stacked, w, b, 1e-5)
    invstd = (1 / np.sqrt(rvar + 1e-5)).astype(dtype)
    rdx, rdw, rdb = norm.batchnorm_backward.reference(np.concatenate([dy] * ranks), stacked, w, rmean, invstd)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    for forward, backward in ((cpu.norm.sync_batchnorm_forward, cpu.norm.sync_batchnorm_backward),
                              (distributed.sync_batchnorm_forward.reference, distributed.sync_batchnorm_backward.reference)):
        y, mean, var, M = forward(comm, x, w, b, 1e-5)
        assert M == n * l * ranks and y.dtype == mean.dtype == var.dtype == dtype
        for ours, ref in ((y, ry[:n]), (mean, rmean), (var, rvar)):
            np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol)
        dx, dw, db = backward(comm, dy * ranks, x, w, mean, invstd, M)  # each rank's loss is its own shard's mean
        np.testing.assert_allclose(dx, rdx[:n] * ranks, rtol=tol, atol=tol * 10)
        # parameter gradients stay this rank's own; averaging them over ranks gives the whole batch's
        np.testing.assert_allclose(dw, rdw, rtol=tol, atol=tol * 10)
        np.testing.assert_allclose(db, rdb, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-14), (np.float32, 1e-6)])
def test_activations_including_float32_erf(dtype, tol):
    x = np.concatenate([np.linspace(-8, 8, 4001), _x((2000,), np.float64) * 3]).astype(dtype)
    dout = _x(x.shape, dtype, 1)
    np.testing.assert_allclose(cpu.activation.gelu_forward(x), activation.gelu_forward.reference(x.astype(np.float64)), atol=tol * 4)
    np.testing.assert_allclose(cpu.activation.gelu_backward(dout, x), activation.gelu_backward.reference(dout.astype(np.float64), x.astype(np.float64)), atol=tol * 16)
    y = cpu.activation.relu_forward(x)
    np.testing.assert_array_equal(y, activation.relu_forward.reference(x))
    np.testing.assert_array_equal(cpu.activation.relu_backward(dout, y), activation.relu_backward.reference(dout, y))


def test_every_kernel_has_a_reference_of_the_same_name():
    import minitorch_cifar.nn as nn_pkg  # noqa: F401 - registers every reference
    from minitorch_cifar import distributed
    references = {name for mod in (conv, pool, norm, activation, distributed) for name, f in vars(mod).items() if hasattr(f, "reference")}
    assert set(cpu.KERNELS) <= references


SPIN_PROBE = """
import sys, time
import numpy as np
import minitorch_cifar as mc
if sys.argv[1] == "numba":
    mc.set_backend("numba")
a = np.ones((1500, 1500), np.float32)
assert (a @ a)[0, 0] == 1500  # BLAS still works after its thread pool was restarted
c0 = time.process_time(); time.sleep(0.1); print(time.process_time() - c0)
"""


def test_numba_backend_stops_openblas_threads_spinning_between_calls(tmp_path):
    """CPU time this process burns while it sleeps right after a GEMM: OpenBLAS's idle workers spin
    (about 0.1 s by default) unless the numba backend has told them to sleep."""
    import os
    import subprocess
    import sys
    probe = tmp_path / "probe.py"
    probe.write_text(SPIN_PROBE)
    # two BLAS threads whatever earlier tests pinned in this process's environment (OMP_NUM_THREADS=1 makes
    # OpenBLAS single-threaded: nothing would spin and the test would show nothing)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS")}
    env["OPENBLAS_NUM_THREADS"] = "2"
    burnt = lambda backend: float(subprocess.check_output([sys.executable, str(probe), backend], env=env))  # noqa: E731
    if burnt("numpy") < 0.03:
        pytest.skip("this OpenBLAS does not spin after a call (single-threaded or already told not to)")
    assert burnt("numba") < 0.03
