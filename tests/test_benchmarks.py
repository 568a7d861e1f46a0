"""The benchmarks time the computations they name: benchmarks/winograd_parts.py's separately timed parts,
chained, give the convolution's own output and gradients."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import minitorch_cifar  # noqa: F401  (maps minitorch_cifar.kernels)
from minitorch_cifar.kernels.cpu import conv

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("N,C,F,H,tile", [(3, 16, 8, 7, 7), (2, 24, 16, 9, 4), (5, 16, 8, 15, 5)])
def test_winograd_parts_chained_are_the_convolution(N, C, F, H, tile, monkeypatch):
    monkeypatch.setattr(conv, "WINOGRAD_COLUMNS", 4)  # several tile groups, the last one partial
    monkeypatch.setattr(conv, "WINOGRAD_TILES", (tile,))
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when run as a script: it imports winograd_bf16's peak loop
    parts = load("winograd_parts")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    w = rng.standard_normal((F, C, 3, 3)).astype(np.float32) / np.float32(np.sqrt(9 * C))
    dout = rng.standard_normal((N, F, H, H)).astype(np.float32)
    s = parts.Scratch(x, F)
    m, G, TT, mats = s.m, s.G, s.TH * s.TW, s.mats
    assert m == tile
    U = conv._winograd_weights(w, m).copy()
    out, dx, dV, dU = np.empty_like(dout), np.empty_like(x), np.empty_like(s.V), np.zeros_like(U)
    ours, ours_saved = conv.conv2d_forward(x, w, None, 1, 1)
    ours_dx, ours_dw, _ = conv.conv2d_backward(dout, ours_saved, w, 1, 1, True, False)
    with conv._gemms() as gemms:
        for n0 in range(0, N, G):  # the benchmark runs each part over every group; chained, one group at a time
            xs, outs, douts, dxs = x[n0:n0 + G], out[n0:n0 + G], dout[n0:n0 + G], dx[n0:n0 + G]
            n = len(xs)
            parts._input_transforms(n, G, xs, s.V, mats["BT"], s.P, s.Q, s.pads, s.offsets, m, s.TH, s.TW)
            parts._each_gemm(0, n, G, TT, U, s.V, s.M, dU, gemms)
            parts._output_transforms(n, G, s.M, outs, np.zeros(F, np.float32), mats["AT"], s.P, s.Q, s.planes,
                                     s.out_offsets, m, s.TH, s.TW)
            parts._output_transforms_adjoint(n, G, douts, s.M, mats["A"], s.P, s.Q, s.dplanes, s.out_offsets, m, s.TH,
                                             s.TW)
            parts._each_gemm(1, n, G, TT, U, s.V, s.M, dU, gemms)
            parts._each_gemm(2, n, G, TT, U, dV, s.M, dU, gemms)
            parts._input_transforms_adjoint(n, G, dV, dxs, mats["B"], s.P, s.Q, s.dpads, s.offsets, m, s.TH, s.TW)
    np.testing.assert_allclose(out, ours, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, ours_dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv._winograd_weight_grad(dU, F, C, m), ours_dw, rtol=1e-4, atol=1e-3)
    assert parts.conv_shapes("fast", 0.5)[1] == (24, 32, 31, 31, 3, 1)  # the layers it times: fast's, in order


def test_winograd_bf16_matrices_compute_the_correlation_and_bfloat16_rounds_to_nearest():
    bench = load("winograd_bf16")
    rng = np.random.default_rng(1)
    d, g = rng.standard_normal(6), rng.standard_normal(3)
    for points in bench.POINT_SETS:
        AT, G, BT = conv.winograd_matrices(4, points=points)
        np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), [d[i:i + 3] @ g for i in range(4)], atol=1e-12)
    for ours, first in zip(conv.winograd_matrices(4), conv.winograd_matrices(4, points=bench.POINT_SETS[0])):
        np.testing.assert_allclose(ours, first, atol=1e-12)  # the first set is the one conv.py uses
    assert bench.bfloat16(np.float32(1 + 2 ** -8)) == 1.0 and bench.bfloat16(np.float32(1 + 3 * 2 ** -9)) == 1 + 2 ** -7


def test_winograd_tiles_benchmark_measures_every_tile_and_the_work_saved(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when run as a script: it imports winograd_parts
    bench = load("winograd_tiles")
    errors = bench.tile_errors(N=2, C=16, F=8, H=7)
    assert sorted(errors) == list(conv.WINOGRAD_TILES)
    assert all(0 < e < 1e-4 for m in errors.values() for e in m.values())
    assert errors[7]["output"] > errors[4]["output"]  # the ninth point rounds more
    rows = bench.gemm_work(2.0)
    assert [r["tile"] for r in rows] == [4, 5, 5, 7, 7, 3]
    assert 1.4 < sum(r["gemm_macs_f4"] for r in rows) / sum(r["gemm_macs"] for r in rows) < 1.6
