"""matmul precision "medium": bfloat16 rounding equal to torch's, MKL's bfloat16 GEMM equal to a float32 GEMM of
the rounded operands, and the numba convolution under it equal to the reference under it."""
import json

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

import minitorch_cifar as mc
from minitorch_cifar import backend
from minitorch_cifar.kernels.cpu import bf16
from minitorch_cifar.kernels import cpu
from minitorch_cifar.nn import conv

needs_mkl = pytest.mark.skipif(not bf16.available(), reason=f"no bfloat16 GEMM here: {bf16.why_unavailable()}")


def _special_values():
    one_ulp = np.float32(1 + 2 ** -8)  # halfway between two bfloat16s around 1: the tie goes to the even one
    return np.array([0, -0.0, 1, -1, one_ulp, np.float32(1 + 3 * 2 ** -8), 3.4e38, -3.4e38, np.inf, -np.inf,
                     1e-40, np.pi, -np.e, 65504, 2 ** -126], np.float32)


def test_rounding_matches_torch_bit_for_bit(torch):
    x = np.concatenate([_special_values(), np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 1e3])
    want = torch.from_numpy(x).bfloat16().view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(bf16.to_bf16(x), want)
    mc.set_float32_matmul_precision("medium")
    np.testing.assert_array_equal(backend.gemm_operand(x), bf16.to_float32(want))  # the reference rounds alike
    nans = np.array([np.nan, -np.nan], np.float32)
    assert np.isnan(bf16.to_float32(bf16.to_bf16(nans))).all() and np.isnan(backend.gemm_operand(nans)).all()


def test_float64_and_highest_precision_are_left_alone():
    x = np.random.default_rng(0).standard_normal(100)
    mc.set_float32_matmul_precision("medium")
    assert backend.gemm_operand(x) is x
    mc.set_float32_matmul_precision("highest")
    x32 = x.astype(np.float32)
    assert backend.gemm_operand(x32) is x32


@needs_mkl
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("threads", [1, 2])
def test_gemm_equals_float32_gemm_of_rounded_operands(torch, trans_a, trans_b, threads):
    """Large enough to be split over threads (with torch imported, which once broke MKL's own threading)."""
    import numba
    rng = np.random.default_rng(1)
    m, k, n = 48, 300, 1500
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    a16, b16 = bf16.to_bf16(a), bf16.to_bf16(b)
    af, bfl = bf16.to_float32(a16), bf16.to_float32(b16)
    want = (af.T if trans_a else af).astype(np.float64) @ (bfl.T if trans_b else bfl).astype(np.float64)
    out = np.empty((m, n), np.float32)
    old = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        assert 2 * m * n * k > bf16.SPLIT_FLOPS
        bf16.matmul(a16, b16, out, trans_a, trans_b)
    finally:
        numba.set_num_threads(old)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4 * np.abs(want).max())


@needs_mkl
def test_gemm_offsets_row_strides_and_accumulation():
    rng = np.random.default_rng(2)
    a, b = bf16.to_bf16(rng.standard_normal(200).astype(np.float32)), bf16.to_bf16(rng.standard_normal(300).astype(np.float32))
    c = rng.standard_normal(100).astype(np.float32)
    c0 = c.copy()
    # c[3:3+4*10 by rows of 10][:, :5] += a[7: 4 rows of 20][:, :6] @ b[11: 6 rows of 30][:, :5]
    bf16.gemm(a, 7, 20, b, 11, 30, c, 3, 10, 4, 5, 6, beta=1.0)
    A = bf16.to_float32(a)[7:7 + 4 * 20].reshape(4, 20)[:, :6]
    B = bf16.to_float32(b)[11:11 + 6 * 30].reshape(6, 30)[:, :5]
    want = c0.copy()
    want[3:43].reshape(4, 10)[:, :5] += A @ B
    np.testing.assert_allclose(c, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="out of bounds"):
        bf16.gemm(a, 190, 20, b, 0, 30, c, 0, 10, 4, 5, 6)


@needs_mkl
@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 12), f=st.integers(1, 12), h=st.integers(3, 10),
       k_pad_stride=st.sampled_from([(3, 1, 1), (3, 1, 2), (2, 0, 1), (1, 0, 1), (3, 0, 1)]),
       chunk_bytes=st.sampled_from([500, 1 << 24]), image_min_columns=st.sampled_from([1, 1 << 30]),
       group_columns=st.sampled_from([1, 40, 10_000]), pack=st.booleans(), need_dx=st.booleans())
@example(n=3, c=9, f=5, h=4, k_pad_stride=(3, 1, 1), chunk_bytes=500, image_min_columns=1, group_columns=40, pack=True,
         need_dx=True)
def test_numba_convolution_at_medium_equals_the_reference_at_medium(n, c, f, h, k_pad_stride, chunk_bytes, image_min_columns,
                                                                    group_columns, pack, need_dx):
    """All three GEMM paths (row shifts from 8 channels, stride 1 and "same" padding, with the shared operands
    in MKL's packed form or not, one image per group or several; otherwise im2col per image, or in chunks of
    images), forward and backward."""
    k, p, s = k_pad_stride
    rng = np.random.default_rng(n * 1000 + c * 100 + f * 10 + h)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((f, c, k, k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    mc.set_backend("numba")
    mc.set_float32_matmul_precision("medium")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cpu.conv, "CHUNK_BYTES", chunk_bytes)
        mp.setattr(cpu.conv, "IMAGE_MIN_COLUMNS", image_min_columns)
        mp.setattr(cpu.conv, "GROUP_COLUMNS", group_columns)
        mp.setattr(cpu.conv, "PACK_BF16", pack)
        y, saved = cpu.conv.conv2d_forward(x, w, b, s, p)
        dout = rng.standard_normal(y.shape).astype(np.float32)
        ours = (y, *cpu.conv.conv2d_backward(dout, saved, w, s, p, need_dx))
    ry, rsaved = conv.conv2d_forward.reference(x, w, b, s, p)
    ref = (ry, *conv.conv2d_backward.reference(dout, rsaved, w, s, p, need_dx))
    assert (ours[1] is None) == (not need_dx)
    for a, r in zip(ours, ref):
        if r is None:
            continue
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(r).max()))


def test_medium_really_rounds_the_operands():
    """The reference under "medium" differs from "highest" by bfloat16's rounding, not more, not zero."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 16, 8, 8)).astype(np.float32), rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    exact, _ = conv.conv2d_forward.reference(x, w, None, 1, 1)
    mc.set_float32_matmul_precision("medium")
    rounded, _ = conv.conv2d_forward.reference(x, w, None, 1, 1)
    rel = np.abs(rounded - exact).max() / np.abs(exact).max()
    assert 1e-4 < rel < 2e-2


def test_precision_errors_say_what_is_wrong(monkeypatch):
    with pytest.raises(ValueError, match="highest, medium"):
        mc.set_float32_matmul_precision("low")
    monkeypatch.setitem(bf16._state, "tried", True)
    monkeypatch.setitem(bf16._state, "lib", None)
    monkeypatch.setitem(bf16._state, "why", "Intel MKL not installed")
    mc.set_backend("numba")
    with pytest.raises(RuntimeError, match="MKL not installed"):
        mc.set_float32_matmul_precision("medium")
    assert mc.get_float32_matmul_precision() == "highest"
    mc.set_backend("numpy")
    mc.set_float32_matmul_precision("medium")  # emulated: runs anywhere
    with pytest.raises(RuntimeError, match="MKL not installed"):
        mc.set_backend("numba")


@needs_mkl
def test_training_at_medium_learns_and_records_the_precision(tiny_folder, tmp_path):
    from minitorch_cifar.train import TrainConfig, train
    config = TrainConfig(data=str(tiny_folder), model="simple", epochs=3, batch_size=32, lr=0.05, val_size=0,
                         matmul_precision="medium", out=str(tmp_path / "run"))
    summary = train(config, progress=False)
    assert summary["config"]["matmul_precision"] == "medium"
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    with pytest.raises(ValueError, match="--matmul-precision must be one of"):
        TrainConfig(matmul_precision="bf16").validate()



INTEL_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: INTEL(R) XEON(R) PLATINUM 8581C CPU @ 2.30GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile
"""
AMD_ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16
"""
AMD_ZEN5 = AMD_ZEN4.replace("cpu family\t: 25\nmodel\t\t: 17", "cpu family\t: 26\nmodel\t\t: 2")
AMD_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma
"""


@pytest.mark.parametrize("text, isa, amx, vendor, family", [
    (INTEL_AMX, ["avx2", "avx512f", "avx512_bf16", "amx_bf16"], True, "GenuineIntel", None),
    (AMD_ZEN4, ["avx2", "avx512f", "avx512_bf16"], False, "AuthenticAMD", "25/17"),
    (AMD_ZEN5, ["avx2", "avx512f", "avx512_bf16"], False, "AuthenticAMD", "26/2"),
    (AMD_AVX2, ["avx2"], False, "AuthenticAMD", None), ("", None, None, None, None)])
def test_machine_record_reads_model_and_instruction_sets(monkeypatch, text, isa, amx, vendor, family):
    from minitorch_cifar import machine
    monkeypatch.setattr(machine, "_cpuinfo", lambda: machine.parse_cpuinfo(text))
    described = machine.describe()
    assert described["isa"] == isa and machine.amx_bf16() is amx
    assert described["vendor"] == machine.vendor() == vendor and described["family"] == family
    assert described["cpu"] == (text.split("model name\t: ")[1].splitlines()[0] if text else described["cpu"]) and described["cpu"]


def test_machine_record_names_the_blas_numpy_multiplies_with():
    from minitorch_cifar import machine
    numpy_blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    loaded = machine.describe()["blas"]
    assert any(numpy_blas["version"] in entry for entry in loaded), loaded


@needs_mkl
@pytest.mark.parametrize("cpuinfo, warns", [(AMD_AVX2, True), (AMD_ZEN4, True), (INTEL_AMX, False)])
def test_medium_on_a_cpu_without_amx_warns_once(monkeypatch, recwarn, cpuinfo, warns):
    from minitorch_cifar import machine
    monkeypatch.setattr(machine, "_cpuinfo", lambda: machine.parse_cpuinfo(cpuinfo))
    monkeypatch.setattr(backend._state, "warned_slow_bf16", False)
    mc.set_backend("numba")
    try:
        for _ in range(2):
            mc.set_float32_matmul_precision("medium")
            mc.set_float32_matmul_precision("highest")
    finally:
        mc.set_float32_matmul_precision("highest")
        mc.set_backend("numpy")
    slow = [w for w in recwarn.list if "has no AMX" in str(w.message)]
    assert len(slow) == (1 if warns else 0)
    if warns:
        assert "AMD EPYC" in str(slow[0].message) and slow[0].category is RuntimeWarning
