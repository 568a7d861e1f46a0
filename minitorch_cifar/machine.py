"""What a figure was measured on: the CPU's model, its cores and the instruction sets that decide its speed.

This project's sessions have run on different 2-core machines (an Intel Xeon with AVX-512 and AMX, an AMD
EPYC with AVX2 only), and a training step's time differs between them by 2-4x, more with bfloat16. So every
timing the repo writes (training summaries, benchmark JSON) carries this record beside it. The model name
alone does not tell them apart (every EPYC here called itself "AMD EPYC", Zen 3 to Zen 5), so the record
keeps the CPU's family and model numbers too (Zen 4 is family 25, Zen 5 family 26).
"""
from __future__ import annotations

import functools
import os
import platform

# the ones that matter here: AVX2/AVX-512 for float32 GEMMs and Numba's vectorised loops, the last two for
# bfloat16 arithmetic in hardware (only with AMX was MKL's bfloat16 GEMM measured faster than float32 here)
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> tuple[str | None, frozenset | None, str | None, str | None]:
    """(model name, flags, vendor, "family/model") from /proc/cpuinfo; all None where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return None, None, None, None


def parse_cpuinfo(text: str) -> tuple[str | None, frozenset | None, str | None, str | None]:
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = fields.get("flags")
    family, model = fields.get("cpu family"), fields.get("model")
    return (fields.get("model name"), frozenset(flags.split()) if flags is not None else None, fields.get("vendor_id"),
            f"{family}/{model}" if family is not None and model is not None else None)


def vendor() -> str | None:
    """The CPU's vendor string ("GenuineIntel", "AuthenticAMD", ...); None where it cannot be told."""
    return _cpuinfo()[2]


def blas() -> list[str]:
    """The BLAS libraries loaded in this process, as "openblas 0.3.31.188.0 (SkylakeX)": whose GEMM kernels
    ran. They set the float32 summation order as well as the speed: the same seed of `fast` read 89.80% on a
    Xeon with MKL and 90.21% on a Zen 4 with OpenBLAS (REPORT, "airbench's tricks taken out one at a time")."""
    from threadpoolctl import threadpool_info
    return [f"{lib['internal_api']} {lib.get('version') or '(version unknown)'}"
            + (f" ({lib['architecture']})" if lib.get("architecture") else "")
            for lib in threadpool_info() if lib["user_api"] == "blas"]


def describe() -> dict:
    """{"cpu": model name, "vendor", "family": "family/model" numbers, "cores": logical CPUs, "isa": the
    ISA_FLAGS it has, "blas": blas()} (vendor, family, isa None where unknown)."""
    model, flags, vendor_id, family = _cpuinfo()
    return dict(cpu=model or platform.processor() or platform.machine(), vendor=vendor_id, family=family,
                cores=os.cpu_count(),
                isa=None if flags is None else [f for f in ISA_FLAGS if f in flags], blas=blas())


def has(flag: str) -> bool:
    """Whether /proc/cpuinfo lists the instruction-set flag (False where it cannot be told)."""
    flags = _cpuinfo()[1]
    return flags is not None and flag in flags


def amx_bf16() -> bool | None:
    """Whether the CPU has AMX's bfloat16 tile multiply; None where it cannot be told. It, not AVX512_BF16,
    is what made `--matmul-precision medium` pay: on a Zen 4 EPYC with AVX512_BF16 and no AMX the bfloat16
    `fast` step ran at 0.80x the float32 one (benchmarks/results/throughput_zen4_bf16.json), and on a Zen 5
    width 2's convolutions took 8.43 s with bfloat16 operands against 2.85 s in float32 (conv_layers_fast_zen5_w2*)."""
    flags = _cpuinfo()[1]
    return None if flags is None else "amx_bf16" in flags
