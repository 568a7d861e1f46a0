"""The GPU path without a GPU: CUDA sources compile with nvcc, CuPy is imported in one module only,
asking for cupy without it is one clear error, and each kernel's per-thread index arithmetic, replayed
in NumPy thread by thread (grid-stride loops, odd sizes, several grid passes), equals the reference."""
import ast
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minitorch_cifar as mc
from minitorch_cifar.backend import BackendUnavailable
from minitorch_cifar.kernels.cuda import launch
from minitorch_cifar.nn import conv, norm, pool

PACKAGE = Path(mc.__file__).resolve().parent
CUDA = Path(launch.__file__).resolve().parent


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (the CUDA compiler) is not on this machine")
@pytest.mark.parametrize("source", sorted(p.name for p in CUDA.glob("*.cu")))
def test_cuda_sources_compile(source, tmp_path):
    out = tmp_path / (source + ".ptx")
    result = subprocess.run(["nvcc", "--ptx", "-arch=sm_80", "-std=c++17", str(CUDA / source), "-o", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ptx = out.read_text()
    stem = source[:-3]
    for name in {"conv": ["im2col", "col2im"], "pool": ["maxpool_forward", "maxpool_backward"],
                 "norm": ["batchnorm_forward", "batchnorm_backward"]}[stem]:
        for suffix in ("f32", "f64"):
            assert f".entry {name}_{suffix}" in ptx


def test_cupy_is_imported_only_by_the_backend_module():
    importers = []
    for path in list(PACKAGE.rglob("*.py")) + list(CUDA.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "cupy" or n.startswith(("cupy.", "cupyx")) for n in names):
                importers.append(path.name)
    assert set(importers) == {"backend.py"}


def test_cupy_backend_without_cupy_is_one_clear_error():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here; the message is for machines without it")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailable, match=r"needs CuPy, which is not installed: install CuPy .*\.\[gpu\]"):
        mc.set_backend("cupy")
    assert mc.get_backend() == "numpy"
    from minitorch_cifar.cli import main
    assert main(["selftest", "--backend", "cupy"]) == 2


# ---------------------------------------------------------------- the kernels' arithmetic, thread by thread
def threads(total, max_blocks):
    """Every (idx) a grid-stride loop visits, in launch order: thread t takes t, t + stride, ..."""
    blocks = min(max_blocks, max(1, (total + launch.BLOCK - 1) // launch.BLOCK))
    stride = blocks * launch.BLOCK
    tid = np.arange(stride)
    visits = [tid + k * stride for k in range((total + stride - 1) // stride)]
    idx = np.concatenate(visits) if visits else np.zeros(0, int)
    return idx[idx < total]


def emulate_im2col(x, kh, kw, s, p, max_blocks):
    N, C, H, W = x.shape
    OH, OW = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    P, cols = OH * OW, N * OH * OW
    col = np.full(C * kh * kw * cols, np.nan, x.dtype)
    idx = threads(col.size, max_blocks)
    r, q = idx // cols, idx % cols
    c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
    n, oh, ow = q // P, (q % P) // OW, q % OW
    h, w = oh * s + i - p, ow * s + j - p
    inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)
    flat = x.reshape(-1)
    col[idx] = np.where(inside, flat[np.where(inside, ((n * C + c) * H + h) * W + w, 0)], 0)
    return col.reshape(C * kh * kw, cols)


def emulate_col2im(col, shape, kh, kw, s, p, max_blocks):
    N, C, H, W = shape
    OH, OW = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    P = OH * OW
    dx = np.full(N * C * H * W, np.nan, col.dtype)
    idx = threads(dx.size, max_blocks)
    w, h, c, n = idx % W, (idx // W) % H, (idx // (H * W)) % C, idx // (C * H * W)
    total = np.zeros(len(idx), col.dtype)
    flat = col.reshape(-1)
    for i in range(kh):
        hh = h + p - i
        for j in range(kw):
            ww = w + p - j
            ok = (hh >= 0) & (hh % s == 0) & (hh // s < OH) & (ww >= 0) & (ww % s == 0) & (ww // s < OW)
            k = ((c * kh + i) * kw + j) * (N * P) + n * P + (hh // s) * OW + ww // s
            total += np.where(ok, flat[np.where(ok, k, 0)], 0)
    dx[idx] = total
    return dx.reshape(shape)


def emulate_maxpool_forward(x, kh, kw, s, p, max_blocks):
    N, C, H, W = x.shape
    OH, OW = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    out, arg = np.full(N * C * OH * OW, np.nan, x.dtype), np.full(N * C * OH * OW, 255, np.uint8)
    idx = threads(out.size, max_blocks)
    ow, oh, nc = idx % OW, (idx // OW) % OH, idx // (OH * OW)
    best, best_k = np.full(len(idx), -np.inf, x.dtype), np.zeros(len(idx), np.uint8)
    flat = x.reshape(-1)
    for i in range(kh):
        h = oh * s + i - p
        for j in range(kw):
            w = ow * s + j - p
            ok = (h >= 0) & (h < H) & (w >= 0) & (w < W)
            v = np.where(ok, flat[np.where(ok, nc * H * W + h * W + w, 0)], -np.inf)
            better = ok & (v > best)
            best, best_k = np.where(better, v, best), np.where(better, i * kw + j, best_k)
    out[idx], arg[idx] = best, best_k
    return out.reshape(N, C, OH, OW), arg.reshape(N, C, OH, OW)


def emulate_maxpool_backward(dout, arg, shape, kh, kw, s, p, max_blocks):
    N, C, H, W = shape
    OH, OW = dout.shape[2:]
    dx = np.full(N * C * H * W, np.nan, dout.dtype)
    idx = threads(dx.size, max_blocks)
    w, h, nc = idx % W, (idx // W) % H, idx // (H * W)
    total = np.zeros(len(idx), dout.dtype)
    for i in range(kh):
        hh = h + p - i
        for j in range(kw):
            ww = w + p - j
            ok = (hh >= 0) & (hh % s == 0) & (hh // s < OH) & (ww >= 0) & (ww % s == 0) & (ww // s < OW)
            o = np.where(ok, (nc * OH + hh // s) * OW + ww // s, 0)
            total += np.where(ok & (arg.reshape(-1)[o] == i * kw + j), dout.reshape(-1)[o], 0)
    dx[idx] = total
    return dx.reshape(shape)


def emulate_block_sum(values_per_thread):
    """The shared-memory tree of norm.cu's block_sum, half by half."""
    shared = values_per_thread.copy()
    half = len(shared) // 2
    while half > 0:
        shared[:half] += shared[half:2 * half]
        half //= 2
    return shared[0]


def emulate_batchnorm_forward(x, weight, bias, eps):
    N, C, L = x.shape
    M = N * L
    y, mean, var = np.full_like(x, np.nan), np.zeros(C, x.dtype), np.zeros(C, x.dtype)
    t = np.arange(launch.BLOCK)
    for c in range(C):  # one block per channel
        m = np.arange(M)
        values = x[m // L, c, m % L].astype(np.float64)
        part = np.array([values[k::launch.BLOCK].sum() for k in t])  # thread k sums m = k, k + BLOCK, ...
        mu = emulate_block_sum(part) / M
        v = emulate_block_sum(np.array([((values[k::launch.BLOCK] - mu) ** 2).sum() for k in t])) / M
        scale = weight[c] / np.sqrt(v + eps)
        y[m // L, c, m % L] = values * scale + (bias[c] - mu * scale)
        mean[c], var[c] = mu, v
    return y, mean, var


@st.composite
def geometry(draw):
    k = draw(st.integers(1, 4))
    s, p = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 5)),
             draw(st.integers(max(1, k - 2 * p), 11)), draw(st.integers(max(1, k - 2 * p), 11)))
    return shape, k, s, p, draw(st.sampled_from([1, 2, 65535]))  # few blocks: several grid-stride passes


@settings(max_examples=30, deadline=None)
@given(geometry())
def test_conv_kernel_indexing(g):
    shape, k, s, p, max_blocks = g
    x = np.random.default_rng(0).standard_normal(shape)
    col = emulate_im2col(x, k, k, s, p, max_blocks)
    np.testing.assert_array_equal(col, conv.im2col.reference(x, k, k, s, p))
    np.testing.assert_allclose(emulate_col2im(col, shape, k, k, s, p, max_blocks), conv.col2im.reference(col, shape, k, k, s, p), rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(geometry())
def test_pool_kernel_indexing(g):
    shape, k, s, p, max_blocks = g
    p = min(p, k // 2)
    x = np.random.default_rng(1).standard_normal(shape)
    x[..., ::2, ::2] = 0.5  # ties: the first maximum must win
    out, arg = emulate_maxpool_forward(x, k, k, s, p, max_blocks)
    rout, rarg = pool.maxpool_forward.reference(x, k, k, s, p)
    np.testing.assert_array_equal(out, rout)
    np.testing.assert_array_equal(arg, rarg)
    dout = np.random.default_rng(2).standard_normal(out.shape)
    np.testing.assert_allclose(emulate_maxpool_backward(dout, arg, shape, k, k, s, p, max_blocks),
                               pool.maxpool_backward.reference(dout, arg, shape, k, k, s, p), rtol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 7), (5, 2, 100), (1, 1, 2), (3, 4, 300)])
def test_batchnorm_kernel_reduction(shape):
    x = np.random.default_rng(3).standard_normal(shape) * 2 + 7
    w, b = np.array([1.5] * shape[1]), np.array([-0.5] * shape[1])
    for ours, ref in zip(emulate_batchnorm_forward(x, w, b, 1e-5), norm.batchnorm_forward.reference(x, w, b, 1e-5)):
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_selftest_command_on_numba(capsys):
    from minitorch_cifar import selftest
    assert selftest.run("numba") == 0
    out = capsys.readouterr().out
    assert "Conv2d 3x3 s1 p1" in out and "images/s on numba" in out and "all layers match" in out
