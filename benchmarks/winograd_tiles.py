"""What each Winograd tile size F(m x m, 3x3) costs in accuracy and saves in GEMM work (kernels/cpu/conv.py):

1. float32 error: the library's own float32 convolution (forward, and both gradients) with the layers held to
   one m, against the float64 reference (minitorch_cifar/nn/conv.py), as relative RMS errors, on ReLU'd normal
   inputs and weights scaled as He initialisation scales them.
2. GEMM work: per image, the multiplications of each of fast's 3x3 layers at --width, with F(4x4, 3x3)
   everywhere and with the m winograd_tile picks.

    python benchmarks/winograd_tiles.py --out benchmarks/results/winograd_tiles.json
"""
import argparse
import json
from pathlib import Path

import numpy as np

import minitorch_cifar  # noqa: F401  (maps minitorch_cifar.kernels)
from minitorch_cifar import machine
from minitorch_cifar.kernels.cpu import conv
from minitorch_cifar.nn import conv as reference


def relative_rms(a, ref):
    return float(np.sqrt(((a - ref) ** 2).mean() / (ref ** 2).mean()))


def tile_errors(N=4, C=64, F=32, H=14, seed=0):
    """Relative RMS error of the float32 output, input gradient and weight gradient for each m."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((N, C, H, H)), 0)
    w = rng.standard_normal((F, C, 3, 3)) * np.sqrt(2 / (9 * C))
    dout = rng.standard_normal((N, F, H, H))
    y, saved = reference.conv2d_forward.reference(x, w, None, 1, 1)
    dx, dw, _ = reference.conv2d_backward.reference(dout, saved, w, 1, 1, True, False)
    old = conv.WINOGRAD_TILES
    result = {}
    try:
        for m in old:
            conv.WINOGRAD_TILES = (m,)
            x32, w32 = x.astype(np.float32), w.astype(np.float32)
            y32, saved32 = conv.conv2d_forward(x32, w32, None, 1, 1)
            dx32, dw32, _ = conv.conv2d_backward(dout.astype(np.float32), saved32, w32, 1, 1, True, False)
            result[m] = {"output": relative_rms(y32, y), "input_gradient": relative_rms(dx32, dx),
                         "weight_gradient": relative_rms(dw32, dw)}
    finally:
        conv.WINOGRAD_TILES = old
    return result


def gemm_work(width):
    """Per image, each 3x3 layer of fast: (C, F, H, multiplications with F(4x4), m picked, with it)."""
    import winograd_parts  # benchmarks/ is on sys.path when run as a script
    rows = []
    for C, F, H, W, k, padding in winograd_parts.conv_shapes("fast", width):
        if k != 3 or C < conv.WINOGRAD_MIN_CHANNELS:
            continue
        m = conv.winograd_tile(H, W, C, F)
        work = lambda tile: -(-H // tile) * -(-W // tile) * (tile + 2) ** 2 * C * F  # tiles x (tile+2)^2 x C x F
        rows.append({"in": C, "out": F, "size": [H, W], "tile": m, "gemm_macs_f4": work(4), "gemm_macs": work(m)})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=float, default=2.0)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "winograd_tiles.json"))
    args = p.parse_args()
    errors, rows = tile_errors(), gemm_work(args.width)
    for m, e in errors.items():
        print(f"F({m}x{m}, 3x3) in float32: relative RMS error " + ", ".join(f"{k} {v:.1e}" for k, v in e.items()))
    for r in rows:
        print(f"{r['in']:>4} -> {r['out']:<4} {r['size'][0]}x{r['size'][1]}: m = {r['tile']}, "
              f"{r['gemm_macs'] / 1e6:.1f}M GEMM multiply-adds an image (F(4x4): {r['gemm_macs_f4'] / 1e6:.1f}M)")
    total, total_f4 = sum(r["gemm_macs"] for r in rows), sum(r["gemm_macs_f4"] for r in rows)
    print(f"all: {total / 1e6:.1f}M against {total_f4 / 1e6:.1f}M, {total_f4 / total:.2f}x less GEMM work")
    Path(args.out).write_text(json.dumps({"machine": machine.describe(), "width": args.width, "float32_errors": errors,
                                          "layers": rows, "gemm_work_ratio_f4": total_f4 / total}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
