"""Each convolution of a network, forward and backward, numba kernels beside torch: which layer costs what.

    python benchmarks/conv_layers.py --arch fast --batch 512     # writes benchmarks/results/conv_layers_fast.json
    python benchmarks/conv_layers.py --arch fast --batch 512 --bf16   # both on bfloat16 operands: ..._fast_bf16.json
    python benchmarks/conv_layers.py --arch fast --batch 512 --blas   # + the kernels on the other float32 GEMMs
                                                                      # (MKL's, OpenBLAS's, ours: conv.FLOAT_BLAS)
    python benchmarks/conv_layers.py --arch fast --batch 512 --bf16 --width 2   # the network at twice the channels:
                                                                      # ..._fast_bf16_w2.json

For every Conv2d of the architecture (shapes taken from the model itself): the numba kernel as it runs
(Winograd, the row-shift path or im2col per image where they apply, see kernels/cpu/conv.py), in float32
also with Winograd off (what those layers ran before it), and with im2col in
chunks of images + one GEMM per chunk forced (what runs where MKL cannot be called from Numba), and torch.nn.functional.conv2d, float32, same threads, medians of repetitions.
Also, in GFLOP/s: NumPy's sgemm alone on the layer's forward product (what bounds any convolution
built on it) and torch's whole forward convolution. Backward = weight, bias and (but for the first layer) input gradients.
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

import minitorch_cifar as mc
from minitorch_cifar import machine, models, nn


def conv_shapes(arch, batch, width=1.0):
    """(in, out, kernel, padding, stride, H, W) of every Conv2d, in order, by running a forward pass."""
    model, shapes = models.build_model(arch, width=width), []
    x = np.zeros((batch, 3, 32, 32), np.float32)
    for layer in model.layers:
        if isinstance(layer, nn.Conv2d):
            shapes.append((layer.in_channels, layer.out_channels, layer.kernel_size[0], layer.padding, layer.stride, *x.shape[2:]))
        x = layer.forward(x)
    return shapes


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="fast", choices=["simple", "deeper", "fast"])  # flat Sequentials
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--width", type=float, default=1.0, help="the models' channel multiplier (train --width)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--bf16", action="store_true", help="both frameworks' convolutions on bfloat16 operands "
                   "(minitorch: matmul precision medium; torch: oneDNN conv fp32_precision bf16)")
    p.add_argument("--blas", action="store_true", help="add columns: the numba kernels calling the float32 GEMMs of the "
                   "libraries conv.FLOAT_BLAS does not pick here (of MKL, NumPy's OpenBLAS and kernels/cpu/gemm.py)")
    p.add_argument("--out", default=None, help="the JSON to write (default: benchmarks/results/conv_layers_ARCH[_bf16].json)")
    args = p.parse_args()
    import numba
    import torch
    from threadpoolctl import threadpool_limits
    mc.set_backend("numba")
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(args.threads)
    torch.set_num_threads(args.threads)
    if args.bf16:
        mc.set_float32_matmul_precision("medium")
        torch.backends.mkldnn.conv.fp32_precision = "bf16"
    from minitorch_cifar.kernels.cpu import conv as K

    def median_ms(fn):
        fn()
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return 1e3 * statistics.median(times)

    rng = np.random.default_rng(0)
    rows = []
    chosen = K.float_blas()
    others = [lib for lib in ("mkl", "openblas", "numba") if lib != chosen] if args.blas else []
    paths = ("default", *(("unpacked",) if args.bf16 else ("row-shift",)), *others, "im2col")
    extra = (f"{'not packed':>16}" if args.bf16 else f"{'no winograd':>16}") + "".join(f"{'with ' + lib:>16}" for lib in others)
    print(f"{args.arch} at width {args.width:g}, batch {args.batch}, {args.threads} threads{', bfloat16 operands' if args.bf16 else ''}; "
          f"float32 GEMMs in the kernels: {chosen}; ms per call (forward / backward)")
    print(f"{'layer':<22}{'numba (path)':>24}{extra}{'im2col forced':>16}{'torch':>16}{'sgemm':>9}{'torch':>9}  (GFLOP/s: NumPy's"
          f" GEMM on the layer's forward product; torch's forward conv)")
    for c, f, k, pad, stride, h, w in conv_shapes(args.arch, args.batch, args.width):
        x = rng.standard_normal((args.batch, c, h, w)).astype(np.float32)
        wt = (0.1 * rng.standard_normal((f, c, k, k))).astype(np.float32)
        b = np.zeros(f, np.float32)
        need_dx = c != 3
        y, saved = K.conv2d_forward(x, wt, b, stride, pad)
        dout = rng.standard_normal(y.shape).astype(np.float32)
        ours = {}
        for path in paths:
            old = K.ROW_SHIFT_MIN_CHANNELS, K.IMAGE_MIN_COLUMNS, K.PACK_BF16, K.FLOAT_BLAS, K.WINOGRAD
            if path == "im2col":
                K.ROW_SHIFT_MIN_CHANNELS = K.IMAGE_MIN_COLUMNS = 1 << 30
            K.WINOGRAD = path not in ("row-shift", "im2col")  # float32: what the layer runs without Winograd
            K.PACK_BF16 = path != "unpacked"  # bfloat16 GEMMs' shared operands packed once, or by each GEMM
            K.FLOAT_BLAS = path if path in others else chosen
            try:
                ours[path] = (median_ms(lambda: K.conv2d_forward(x, wt, b, stride, pad)),
                              median_ms(lambda: K.conv2d_backward(dout, saved, wt, stride, pad, need_dx)))
            finally:
                K.ROW_SHIFT_MIN_CHANNELS, K.IMAGE_MIN_COLUMNS, K.PACK_BF16, K.FLOAT_BLAS, K.WINOGRAD = old
        xt = torch.from_numpy(x).requires_grad_(need_dx)
        wtt, bt, dt = torch.from_numpy(wt).requires_grad_(), torch.from_numpy(b).requires_grad_(), torch.from_numpy(dout)

        def t_forward():
            with torch.no_grad():
                torch.nn.functional.conv2d(xt, wtt, bt, stride, pad)

        def t_both():
            out = torch.nn.functional.conv2d(xt, wtt, bt, stride, pad)
            torch.autograd.grad(out, [wtt, bt] + ([xt] if need_dx else []), dt)
        fwd = median_ms(t_forward)
        theirs = (fwd, median_ms(t_both) - fwd)
        # the ceiling of any GEMM-based convolution: NumPy's sgemm alone on this layer's forward product, one
        # chunk of columns as the im2col path feeds it, beside torch's whole forward convolution
        oh, ow = y.shape[2:]
        gemm_k, cols = c * k * k, K._chunk(args.batch, c * k * k, oh * ow, 4) * oh * ow
        a, bm, cm = (rng.standard_normal(s).astype(np.float32) for s in ((f, gemm_k), (gemm_k, cols), (f, cols)))
        sgemm_gflops = 2 * f * gemm_k * cols / median_ms(lambda: np.matmul(a, bm, out=cm)) / 1e6
        torch_gflops = 2 * args.batch * oh * ow * f * gemm_k / fwd / 1e6
        name = f"{c}->{f} k{k} {h}x{w}"
        used = ("winograd" if K._winograd_applies(K._operand(x), k, k, stride, pad)
                else "row-shift" if K._row_shift_applies(x, k, k, stride, pad)
                else "per-image" if K._image_im2col_applies(*y.shape[2:]) else "im2col")
        print(f"{name:<22}{used:>9}" + "".join(f"{a_:>8.1f}/{b_:<7.1f}" for a_, b_ in (*(ours[p_] for p_ in paths), theirs))
              + f"{sgemm_gflops:>9.0f}{torch_gflops:>9.0f}")
        rows.append(dict(layer=name, path=used, numba_ms=ours["default"], im2col_forced_ms=ours["im2col"], torch_ms=theirs,
                         numpy_sgemm_gflops=sgemm_gflops, torch_forward_gflops=torch_gflops,
                         **({"not_packed_ms": ours["unpacked"]} if args.bf16 else {"no_winograd_ms": ours["row-shift"]}),
                         **{f"numba_{lib}_ms": ours[lib] for lib in others}))
    total = lambda key: sum(sum(r[key]) for r in rows)  # noqa: E731
    print(f"{'total (fwd+bwd)':<29}" + "".join(f"{total(key):>{16 if i else 15}.1f}" for i, key in enumerate(
        ("numba_ms", "not_packed_ms" if args.bf16 else "no_winograd_ms", *(f"numba_{lib}_ms" for lib in others),
         "im2col_forced_ms", "torch_ms"))))
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"conv_layers_{args.arch}{'_bf16' if args.bf16 else ''}{f'_w{args.width:g}' if args.width != 1 else ''}.json")
    out.write_text(json.dumps(dict(machine=machine.describe(), arch=args.arch, width=args.width, batch=args.batch, threads=args.threads, bf16=args.bf16,
                                   float_blas=chosen, layers=rows), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
