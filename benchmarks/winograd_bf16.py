"""Would Winograd convolutions on bfloat16 operands pay? Two measurements:

1. Accuracy: a 3x3 convolution computed as Winograd F(4x4, 3x3), with the transformed weights U and inputs V
   rounded to bfloat16 (as a bfloat16 GEMM would read them), against the same convolution computed directly
   with bfloat16 operands (what `--matmul-precision medium` does today), both against float64. For several
   choices of F(4, 3)'s interpolation points (conv.py uses 0, 1, -1, 2, -2 and infinity), the matrices built
   from the points by the Toom-Cook construction.
2. Speed (AVX512_BF16 CPUs only): the peak rate of vdpbf16ps (two bfloat16 products summed into each float32
   lane) against vfmadd231ps, on registers, one thread.

    python benchmarks/winograd_bf16.py --out benchmarks/results/winograd_bf16_zen5.json
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from minitorch_cifar import machine
from minitorch_cifar.kernels.cpu import bf16, conv

POINT_SETS = [(0, 1, -1, 2, -2), (0, 1, -1, 0.5, -0.5), (0, 1, -1, 0.5, -2), (0, 1, -1, 0.5, 2)]


def bfloat16(a):
    """a rounded to bfloat16 as the convolutions round it (bf16.to_bf16), returned as float64."""
    return bf16.to_float32(bf16.to_bf16(a)).astype(np.float64)


def relative_rms(a, ref):
    return float(np.sqrt(((a - ref) ** 2).mean() / (ref ** 2).mean()))


def errors(N=4, C=128, F=64, H=16, seed=0):
    """Relative RMS errors against float64 of a conv on post-GELU-like inputs (H a multiple of 4)."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((N, C, H, H)), 0)
    w = rng.standard_normal((F, C, 3, 3)) / np.sqrt(9 * C)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))

    def direct(xp, w):
        return sum(np.einsum("nchw,fc->nfhw", xp[:, :, i:i + H, j:j + H], w[:, :, i, j]) for i in range(3) for j in range(3))
    ref = direct(xp, w)
    result = {"direct, bfloat16 operands": relative_rms(direct(bfloat16(xp), bfloat16(w)), ref)}
    T = H // 4
    d = np.stack([np.stack([xp[:, :, 4 * i:4 * i + 6, 4 * j:4 * j + 6] for j in range(T)], 2) for i in range(T)], 2)
    for points in POINT_SETS:
        AT, G, BT = conv.winograd_matrices(4, points=points)
        V = np.einsum("ab,nctsbe,fe->nctsaf", BT, d, BT)
        U = np.einsum("ai,fcij,bj->fcab", G, w, G)

        def winograd(U, V):
            Y = np.einsum("ia,nftsab,jb->nftsij", AT, np.einsum("fcab,nctsab->nftsab", U, V), AT)
            return Y.transpose(0, 1, 2, 4, 3, 5).reshape(N, F, H, H)
        name = "Winograd F(4,3), points " + ", ".join(f"{p:g}" for p in points) + ", inf"
        result[name + ", float64"] = relative_rms(winograd(U, V), ref)
        result[name + ", U and V in bfloat16"] = relative_rms(winograd(bfloat16(U), bfloat16(V)), ref)
    return result


def _peak_loop(kind):
    @intrinsic
    def loop(typingctx, n):
        def codegen(context, builder, signature, args):
            vec = ir.VectorType(ir.FloatType(), 16)
            if kind == "fma":
                operand = vec
                fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), "llvm.fma.v16f32")
            else:  # 32 bfloat16 values as i16 lanes, the intrinsic's operand type in Numba's LLVM
                operand = ir.VectorType(ir.IntType(16), 32)
                fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, operand, operand]),
                                                    "llvm.x86.avx512bf16.dpbf16ps.512")
            accs = [cgutils.alloca_once_value(builder, ir.Constant(vec, [0.0] * 16)) for _ in range(12)]
            one = ir.Constant(operand, [1e-3] * 16 if kind == "fma" else [0x3A83] * 32)
            x = builder.load(cgutils.alloca_once_value(builder, one))
            with cgutils.for_range(builder, args[0]):
                for acc in accs:
                    call = [x, x, builder.load(acc)] if kind == "fma" else [builder.load(acc), x, x]
                    builder.store(builder.call(fn, call), acc)
            total = builder.load(accs[0])
            for acc in accs[1:]:
                total = builder.fadd(total, builder.load(acc))
            return builder.extract_element(total, ir.Constant(ir.IntType(32), 0))
        return types.float32(types.intp), codegen

    @njit
    def run(n):
        return loop(n)
    return run


def peaks(iterations=20_000_000, kinds=("fma", "dpbf16")):
    """GFLOP/s of 12 independent chains of vfmadd231ps and (with AVX512_BF16) vdpbf16ps on zmm registers:
    a ceiling no GEMM reaches (no memory traffic)."""
    result = {}
    for kind, flops in (("fma", 32), ("dpbf16", 64)):
        if kind not in kinds or (kind == "dpbf16" and not machine.has("avx512_bf16")):
            continue
        run = _peak_loop(kind)
        run(10)
        t = time.perf_counter()
        run(iterations)
        result[kind] = iterations * 12 * flops / (time.perf_counter() - t) / 1e9
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "winograd_bf16.json"))
    args = p.parse_args()
    errs, rates = errors(), peaks()
    for name, e in errs.items():
        print(f"{name:<60} relative RMS error {e:.2e}")
    for kind, rate in rates.items():
        print(f"peak of {kind} on zmm registers, one thread: {rate:.0f} GFLOP/s")
    Path(args.out).write_text(json.dumps({"machine": machine.describe(), "errors": errs, "peak_gflops": rates}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
