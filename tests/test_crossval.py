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


def test_control_twin_trains_the_same_maths_on_shuffled_rows(torch, tmp_path):
    """The control run sees each batch's rows in another order: in float64 it must track torch to rounding,
    and in float32 it must not be a copy (else it would measure nothing)."""
    from minitorch_cifar import crossval
    f64 = crossval.run("simple", steps=6, dtype="float64", data=synthetic(), batch_size=16, out=tmp_path / "64",
                       lr=0.05, control=True, log=None)
    assert len(f64["losses_torch_control"]) == 6
    assert f64["max_abs_loss_diff_control"] < 1e-9
    f32 = crossval.run("simple", steps=6, dtype="float32", data=synthetic(), batch_size=16, out=tmp_path / "32",
                       lr=0.05, control=True, log=None)
    assert 0 < f32["max_abs_loss_diff_control"] < 1e-3
    assert "test_accuracy_torch_control" in json.loads((tmp_path / "32" / "crossval.json").read_text())
