"""Single-threaded float32 GEMMs at the Winograd convolutions' shapes: ours (kernels/cpu/gemm.py) beside NumPy's
OpenBLAS and MKL, as the convolutions call them (one thread each, from inside their parallel loops).

    python benchmarks/gemm.py --out benchmarks/results/gemm_zen5.json

For each channel count C (input = output channels), the three products of a group of 128 Winograd tiles
(conv.WINOGRAD_COLUMNS): forward M = U @ V (C x 128 x C, "NN"), weight gradient dU += dM @ V.T (C x C x 128,
"NT") and input gradient dV = U.T @ dM (C x 128 x C, "TN"), on contiguous operands. GFLOP/s = 2mnk / median
time; each call comes from Python (a few microseconds of call overhead, felt only at the smallest shapes).
Ratios are ours over OpenBLAS's, measured in the same process minutes apart: compare ratios, not GFLOP/s
across days (the machine is shared).
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from minitorch_cifar import machine
from minitorch_cifar.kernels import cpu
from minitorch_cifar.kernels.cpu import bf16, blas, gemm

NO_TRANS, TRANS = 111, 112


def gflops(fn, flops, seconds):
    fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return flops / statistics.median(times) / 1e9


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--channels", default="64,128,256,320,512")
    p.add_argument("--tiles", type=int, default=128)
    p.add_argument("--seconds", type=float, default=0.5, help="per GEMM and library")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    cpu.keep_freed_memory()  # as in training: the kernels' scratch comes from the heap, not fresh mmaps
    libraries = {"ours": gemm.sgemm}
    if blas.openblas_available():
        libraries["openblas"] = blas.nopython_gemms()[0]
    if bf16.available():
        libraries["mkl"] = bf16.nopython_gemms()[1]
    rng = np.random.default_rng(0)
    rows = []
    print(f"single-threaded float32 GEMMs, GFLOP/s (median over {args.seconds:g} s each); {machine.describe()['cpu']}")
    print(f"{'m x n x k':<18}{'op':<4}" + "".join(f"{name:>10}" for name in libraries) + f"{'ours/openblas':>15}")
    with blas.one_thread():
        for C in (int(c) for c in args.channels.split(",")):
            T = args.tiles
            for op, (m, n, k) in (("NN", (C, T, C)), ("NT", (C, C, T)), ("TN", (C, T, C))):
                ta, tb = (TRANS if op[0] == "T" else NO_TRANS), (TRANS if op[1] == "T" else NO_TRANS)
                a = rng.standard_normal((k, m) if ta == TRANS else (m, k)).astype(np.float32)
                b = rng.standard_normal((n, k) if tb == TRANS else (k, n)).astype(np.float32)
                c = np.zeros((m, n), np.float32)
                want = (a.T if ta == TRANS else a).astype(np.float64) @ (b.T if tb == TRANS else b)
                row = dict(m=m, n=n, k=k, op=op)
                for name, fn in libraries.items():
                    if name == "ours":
                        call = lambda: fn(ta, tb, m, n, k, a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1],  # noqa: E731
                                          np.float32(0), c.ctypes.data, n)
                    else:
                        call = lambda: fn(101, ta, tb, m, n, k, np.float32(1), a.ctypes.data, a.shape[1],  # noqa: E731
                                          b.ctypes.data, b.shape[1], np.float32(0), c.ctypes.data, n)
                    row[name] = gflops(call, 2 * m * n * k, args.seconds)
                    np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-3 * np.sqrt(k))  # each library computed it
                ratio = row["ours"] / row["openblas"] if "openblas" in row else float("nan")
                print(f"{f'{m} x {n} x {k}':<18}{op:<4}" + "".join(f"{row[name]:>10.1f}" for name in libraries)
                      + f"{ratio:>14.2f}x")
                rows.append(row)
    out = Path(args.out or Path(__file__).resolve().parent / "results" / "gemm.json")
    out.write_text(json.dumps(dict(machine=machine.describe(), tiles=args.tiles, micro_kernel=[gemm.MR, gemm.NR],
                                   kc=gemm.KC, gemms=rows), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
