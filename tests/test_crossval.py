"""The whole training run equals PyTorch's: float64, 10 steps, every architecture, on tiny synthetic data."""
import json

import numpy as np
import pytest

from minitorch_cifar.data import CIFAR10, Split


def synthetic(n_train=64, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    make = lambda n: Split(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n))  # noqa: E731
    return CIFAR10(make(n_train), make(n_test), source="synthetic")


@pytest.mark.parametrize("model", ["simple", "deeper", "resnet", "fast"])
def test_float64_training_equals_torch(torch, tmp_path, model):
    from minitorch_cifar import crossval
    result = crossval.run(model, steps=10, dtype="float64", data=synthetic(), batch_size=16, seed=0,
                          out=tmp_path, lr=0.05, log=None)
    assert len(result["losses_minitorch"]) == 10
    assert result["max_abs_loss_diff"] < 1e-9
    assert result["max_abs_param_diff"] < 1e-8
    assert result["losses_minitorch"][0] != result["losses_minitorch"][-1]  # it did train
    saved = json.loads((tmp_path / "crossval.json").read_text())
    for key in ("losses_minitorch", "losses_torch", "max_abs_loss_diff", "max_abs_param_diff",
                "test_accuracy_minitorch", "test_accuracy_torch"):
        assert key in saved
    assert (tmp_path / "crossval.png").stat().st_size > 1000


@pytest.mark.parametrize("control", ["shuffle", "im2col"])
def test_control_twin_trains_the_same_maths_rounded_otherwise(torch, tmp_path, control):
    """The control run sees each batch's rows in another order, or convolves without oneDNN: in float64 it
    must track torch to rounding, and in float32 it must not be a copy (else it would measure nothing)."""
    from minitorch_cifar import crossval
    f64 = crossval.run("simple", steps=6, dtype="float64", data=synthetic(), batch_size=16, out=tmp_path / "64",
                       lr=0.05, control=control, log=None)
    assert len(f64["losses_torch_control"]) == 6
    assert f64["max_abs_loss_diff_control"] < 1e-9
    f32 = crossval.run("simple", steps=6, dtype="float32", data=synthetic(), batch_size=16, out=tmp_path / "32",
                       lr=0.05, control=control, log=None)
    assert 0 < f32["max_abs_loss_diff_control"] < 1e-3
    saved = json.loads((tmp_path / "32" / "crossval.json").read_text())
    assert saved["control"] == control and "test_accuracy_torch_control" in saved
    summary = crossval.summarize([tmp_path / "*"], tmp_path / "summary")
    assert summary["runs"] == 2 and summary["control"] == control
    gaps = [r["test_accuracy_minitorch"] - r["test_accuracy_torch"] for r in (f32, f64)]  # folders "32", "64"
    assert summary["minitorch_minus_torch"]["gaps"] == pytest.approx(gaps, abs=1e-4)
    assert summary["control_minus_torch"]["mean"] == pytest.approx(
        np.mean([r["test_accuracy_torch_control"] - r["test_accuracy_torch"] for r in (f32, f64)]))
    assert (tmp_path / "summary" / "summary.png").is_file() and "| seed |" in (tmp_path / "summary" / "summary.md").read_text()


def test_unknown_control_is_refused(torch):
    from minitorch_cifar import crossval
    with pytest.raises(ValueError, match="control"):
        crossval.run("simple", steps=1, data=synthetic(), batch_size=16, control="mkl", log=None)


def test_summary_counts_a_gap_of_exactly_half_a_point_as_within(tmp_path):
    """Accuracies on 10,000 images are multiples of 0.01 but not exact in binary: 66.82 - 66.32 must count as 0.5."""
    from minitorch_cifar import crossval
    for seed, (ours, theirs, twin) in enumerate([(66.82000000000001, 66.32, 66.5), (65.85, 66.33, 66.87)]):
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "crossval.json").write_text(json.dumps(dict(
            seed=seed, control="im2col", test_accuracy_minitorch=ours, test_accuracy_torch=theirs,
            test_accuracy_torch_control=twin, max_abs_loss_diff=0.1, max_abs_loss_diff_control=0.1)))
    summary = crossval.summarize([tmp_path / "s*"], tmp_path / "out")
    assert summary["minitorch_minus_torch"]["within_half_point"] == 2
    assert summary["control_minus_torch"]["within_half_point"] == 1  # +0.18 and +0.54
    assert summary["minitorch_minus_torch"]["max_abs"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no crossval runs"):
        crossval.summarize([tmp_path / "nothing*"], tmp_path / "out")
