"""Where a training step's time goes on one core, and how much faster it could get: the float32 Winograd
convolutions (kernels/cpu/conv.py) split into their transforms and GEMMs, layer by layer, beside this core's
measured peak rate of 512-bit FMAs and the whole training step.

    python benchmarks/winograd_parts.py --width 2 --out benchmarks/results/winograd_parts_zen5_w2.json

One thread, as each of a 2-rank run's processes trains: every part is a kernel of its own here, timed over all
the batch's tile groups (best of --reps), so the parts' sum can differ from the fused convolution's time. The
GEMMs are the float32 GEMM conv.FLOAT_BLAS picks ("auto"). The peak is a loop of independent FMAs on registers
(no memory), a ceiling no GEMM reaches. The bound at the end is arithmetic on these measurements: the step's
time if the GEMMs ran at --gemm-efficiency of that peak and everything else in the convolutions took no time.
"""
import argparse
import json
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit

import minitorch_cifar as mc
from minitorch_cifar import machine, models, nn
from minitorch_cifar.kernels.cpu import conv
from minitorch_cifar.kernels.cpu.conv import (_NO_TRANS, _TRANS, _gemm, _input_tiles, _input_tiles_adjoint,
                                              _output_tiles, _output_tiles_adjoint)
from winograd_bf16 import peaks  # the FMA peak loop, shared (run as a script, benchmarks/ is on sys.path)


@njit
def _input_transforms(N, G, x, V, BT, P, Q, pads, offsets, m, TH, TW):
    for n0 in range(0, N, G):
        _input_tiles(x, n0, min(N, n0 + G), V, BT, P, Q, pads, offsets, m, TH, TW)


@njit
def _output_transforms(N, G, M, out, bias, AT, P, Q, planes, offsets, m, TH, TW):
    for n0 in range(0, N, G):
        _output_tiles(M, out, n0, min(N, n0 + G), bias, AT, P, Q, planes, offsets, m, TH, TW)


@njit
def _output_transforms_adjoint(N, G, dout, dM, A, P, Q, planes, offsets, m, TH, TW):
    for n0 in range(0, N, G):
        _output_tiles_adjoint(dout, dM, n0, min(N, n0 + G), A, P, Q, planes, offsets, m, TH, TW)


@njit
def _input_transforms_adjoint(N, G, dV, dx, B, P, Q, pads, offsets, m, TH, TW):
    for n0 in range(0, N, G):
        _input_tiles_adjoint(dV, dx, n0, min(N, n0 + G), B, P, Q, pads, offsets, m, TH, TW)


@njit
def _each_gemm(which, N, G, TT, U, V, M, dU, gemms):
    """The n^2 GEMMs of every tile group: forward (which 0), weight gradient (1) or input gradient (2)."""
    F, C, size = U.shape[1], U.shape[2], 4
    n, L = V.shape[1], V.shape[3]
    stride = n * n * L
    for gr in range((N + G - 1) // G):
        cols = (min(N, gr * G + G) - gr * G) * TT
        for k in range(n * n):
            v, mk = V.ctypes.data + size * k * L, M.ctypes.data + size * k * L
            if which == 0:
                _gemm(gemms, size, _NO_TRANS, _NO_TRANS, F, cols, C, U[k].ctypes.data, C, v, stride, 0.0, mk, stride)
            elif which == 1:
                _gemm(gemms, size, _NO_TRANS, _TRANS, F, C, cols, mk, stride, v, stride, 1.0, dU[k].ctypes.data, C)
            else:
                _gemm(gemms, size, _TRANS, _NO_TRANS, C, cols, F, U[k].ctypes.data, C, mk, stride, 0.0, v, stride)


class Scratch:
    """One thread's share of what conv.py's Winograd kernels allocate for a layer: the arguments of the parts."""
    def __init__(self, x, F):
        N, C, H, W = x.shape
        self.m = m = conv.winograd_tile(H, W, C, F)
        self.TH, self.TW = -(-H // m), -(-W // m)
        G, V, M, P, Q, pads = conv._winograd_scratch(x, F, m)
        self.G, self.V, self.M, self.P, self.Q, self.pads = G, V[0], M[0], P[0], Q[0], pads[0]
        self.dpads = np.zeros_like(self.pads)  # the adjoint adds into its border: the input's pads must stay zero there
        self.planes = np.zeros((G, m * self.TH, m * self.TW), x.dtype)
        self.dplanes = np.zeros_like(self.planes)  # the output's adjoint reads them: zero outside the image
        self.offsets, self.out_offsets = conv._winograd_offsets(x, G, m)
        self.mats = conv._winograd_transforms(m, x.dtype)


def best_ms(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def conv_shapes(arch, width):
    """(C, F, H, W, kernel, padding) of each conv layer, in order, from a forward pass of two images."""
    model = models.build_model(arch, width=width)
    shapes = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            forward = m.forward

            def record(x, m=m, forward=forward):
                shapes.append((m.in_channels, m.out_channels, *x.shape[2:], m.kernel_size[0], m.padding))
                return forward(x)
            m.forward = record
    with mc.use_backend("numba"):
        model.forward(np.zeros((2, 3, 32, 32), np.float32))
    return shapes


def layer_parts(C, F, H, W, N, reps, rng):
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((F, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
    s = Scratch(x, F)
    m, G, TT, mats = s.m, s.G, s.TH * s.TW, s.mats
    out, dx, dV = np.empty((N, F, H, W), np.float32), np.empty_like(x), np.empty_like(s.V)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    U = conv._winograd_weights(w, m).copy()
    dU, bias = np.zeros_like(U), np.zeros(F, np.float32)
    s.M[:] = rng.standard_normal(s.M.shape)
    gemm_gflop = 2 * (m + 2) ** 2 * F * C * N * TT / 1e9
    with conv._gemms() as gemms:
        ms = {
            "input transform": best_ms(lambda: _input_transforms(N, G, x, s.V, mats["BT"], s.P, s.Q, s.pads, s.offsets, m,
                                                                 s.TH, s.TW), reps),
            "GEMMs forward": best_ms(lambda: _each_gemm(0, N, G, TT, U, s.V, s.M, dU, gemms), reps),
            "output transform": best_ms(lambda: _output_transforms(N, G, s.M, out, bias, mats["AT"], s.P, s.Q, s.planes,
                                                                   s.out_offsets, m, s.TH, s.TW), reps),
            "output transform adjoint": best_ms(lambda: _output_transforms_adjoint(
                N, G, dout, s.M, mats["A"], s.P, s.Q, s.dplanes, s.out_offsets, m, s.TH, s.TW), reps),
            "GEMMs weight gradient": best_ms(lambda: _each_gemm(1, N, G, TT, U, s.V, s.M, dU, gemms), reps),
            "GEMMs input gradient": best_ms(lambda: _each_gemm(2, N, G, TT, U, s.V, s.M, dU, gemms), reps),
            "input transform adjoint": best_ms(lambda: _input_transforms_adjoint(
                N, G, dV, dx, mats["B"], s.P, s.Q, s.dpads, s.offsets, m, s.TH, s.TW), reps),
        }
        saved = conv.conv2d_forward(x, w, None, 1, 1)[1]
        ms["whole forward"] = best_ms(lambda: conv.conv2d_forward(x, w, None, 1, 1), reps)
        ms["whole backward"] = best_ms(lambda: conv.conv2d_backward(dout, saved, w, 1, 1, True, True), reps)
    return ms, gemm_gflop, m


def training_step(arch, width, N, reps, rng):
    """ms of one training step (forward, loss, backward, SGD) and of its convolutions alone."""
    mc.set_default_dtype(np.float32)
    mc.manual_seed(0)
    model = models.build_model(arch, width=width)
    conv_seconds = [0.0]
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            for kind in ("forward", "backward"):
                fn = getattr(m, kind)

                def timed(*a, fn=fn):
                    t = time.perf_counter()
                    r = fn(*a)
                    conv_seconds[0] += time.perf_counter() - t
                    return r
                setattr(m, kind, timed)
    opt = mc.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    x = rng.standard_normal((N, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, N)
    steps, convs = [], []
    with mc.use_backend("numba"):
        for i in range(reps + 1):
            conv_seconds[0] = 0.0
            t = time.perf_counter()
            loss_fn.forward(model.forward(x), y)
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
            if i:  # the first step warms up
                steps.append(time.perf_counter() - t)
                convs.append(conv_seconds[0])
    best = int(np.argmin(steps))
    return 1000 * steps[best], 1000 * convs[best]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="fast")
    p.add_argument("--width", type=float, default=2.0)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--gemm-efficiency", type=float, default=0.9)
    p.add_argument("--tiles", default=None, help="the tile sizes m the layers may take, comma-separated (default: "
                   "conv.WINOGRAD_TILES); 4: F(4x4, 3x3) everywhere, the only tile before 2026-12-07")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.tiles:
        conv.WINOGRAD_TILES = tuple(int(m) for m in args.tiles.split(","))
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    peak = peaks(kinds=("fma",))["fma"]
    print(f"one thread on {machine.describe()['cpu']}; float32 GEMM: {conv.float_blas()}; "
          f"peak of 512-bit FMAs on registers: {peak:.0f} GFLOP/s")
    layers, totals, gemm_ms, gemm_gflop = [], {}, 0.0, 0.0
    for C, F, H, W, k, padding in conv_shapes(args.arch, args.width):
        if not conv._winograd_applies(np.empty((1, C, 1, 1), np.float32), k, k, 1, padding):
            continue
        ms, gflop, m = layer_parts(C, F, H, W, args.batch, args.reps, rng)
        g = sum(v for name, v in ms.items() if name.startswith("GEMMs"))
        layers.append({"in": C, "out": F, "size": [H, W], "tile": m, "ms": ms, "gemm_gflop_per_pass": gflop,
                       "gemm_gflops": 3 * gflop / g * 1000})
        print(f"{C:>4} -> {F:<4} {H}x{W}, F({m}x{m}, 3x3): " + ", ".join(f"{name} {v:.0f}" for name, v in ms.items())
              + f" ms; GEMMs at {3 * gflop / g * 1000:.0f} GFLOP/s", flush=True)
        for name, v in ms.items():
            totals[name] = totals.get(name, 0.0) + v
        gemm_ms, gemm_gflop = gemm_ms + g, gemm_gflop + 3 * gflop
    step_ms, conv_ms = training_step(args.arch, args.width, args.batch, args.reps, rng)
    transforms_ms = sum(v for name, v in totals.items() if "transform" in name)
    gemm_rate = gemm_gflop / gemm_ms * 1000
    ideal_gemm_ms = gemm_gflop / (args.gemm_efficiency * peak) * 1000
    bound_ms = step_ms - conv_ms + ideal_gemm_ms
    summary = {
        "machine": machine.describe(), "float_gemm": conv.float_blas(), "arch": args.arch, "width": args.width,
        "tiles_allowed": list(conv.WINOGRAD_TILES),
        "batch": args.batch, "threads": 1, "fma_peak_gflops": peak, "layers": layers, "totals_ms": totals,
        "gemm_ms": gemm_ms, "gemm_gflop": gemm_gflop, "gemm_gflops": gemm_rate, "transforms_ms": transforms_ms,
        "training_step_ms": step_ms, "convolutions_ms": conv_ms,
        "bound": {"gemm_efficiency": args.gemm_efficiency, "step_ms": bound_ms, "speedup": step_ms / bound_ms},
    }
    print(f"\nall Winograd layers: GEMMs {gemm_ms:.0f} ms ({gemm_gflop:.0f} GFLOP at {gemm_rate:.0f} GFLOP/s, "
          f"{100 * gemm_rate / peak:.0f}% of the peak), transforms {transforms_ms:.0f} ms")
    print(f"training step of {args.batch} images: {step_ms:.0f} ms, of which convolutions {conv_ms:.0f} ms "
          f"({100 * conv_ms / step_ms:.0f}%), the rest {step_ms - conv_ms:.0f} ms")
    print(f"bound: GEMMs at {100 * args.gemm_efficiency:.0f}% of the peak ({ideal_gemm_ms:.0f} ms) and the rest of "
          f"the convolutions free: a step of {bound_ms:.0f} ms, {step_ms / bound_ms:.2f}x faster than now")
    out = Path(args.out or Path(__file__).resolve().parent / "results" / "winograd_parts.json")
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
