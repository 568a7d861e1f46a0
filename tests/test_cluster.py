"""Seeds and sweeps on a Dask cluster give the same summaries as the serial runs (float64: to the last bits)."""
import dataclasses

import pytest

distributed = pytest.importorskip("distributed", reason="cluster tests need the [cluster] extra (dask[distributed])")

from minitorch_cifar import experiments  # noqa: E402
from minitorch_cifar.train import TrainConfig  # noqa: E402


def test_seeds_and_sweep_on_local_cluster_equal_serial(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MINITORCH_CIFAR_DATA", str(tmp_path / "cache"))
    base = TrainConfig(data=str(tiny_folder), model="simple", width=0.25, batch_size=25, epochs=1, val_size=50,
                       augment="crop,flip", dtype="float64", backend="numba")
    serial_seeds = experiments.run_seeds(dataclasses.replace(base, out=str(tmp_path / "s1")), [0, 1], progress=False)
    serial_sweep = experiments.run_sweep(dataclasses.replace(base, out=str(tmp_path / "w1")), {"lr": [0.02, 0.05]}, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        executor = client.get_executor()
        dask_seeds = experiments.run_seeds(dataclasses.replace(base, out=str(tmp_path / "s2")), [0, 1], progress=False, executor=executor)
        dask_sweep = experiments.run_sweep(dataclasses.replace(base, out=str(tmp_path / "w2")), {"lr": [0.02, 0.05]}, progress=False, executor=executor)
    assert serial_seeds["test_accuracies"] == dask_seeds["test_accuracies"]
    for a, b in zip(serial_sweep["rows"], dask_sweep["rows"]):
        assert (a["test_accuracy"], a["best_val_accuracy"], a["final_train_accuracy"]) == \
               (b["test_accuracy"], b["best_val_accuracy"], b["final_train_accuracy"])
    # the test losses are float64 sums over every prediction: equal to the last bits only if every weight is.
    # The last bits themselves may differ: the serial runs use both cores, each worker one, and OpenBLAS's
    # float64 GEMMs (the convolutions' on non-Intel CPUs, kernels/cpu/conv.py FLOAT_BLAS) rounded one seed's
    # loss 4e-16 apart between the two set-ups on an AMD EPYC (MKL's agreed to the bit there)
    import json
    for name in ("seed0", "seed1"):
        s1 = json.loads((tmp_path / "s1" / name / "summary.json").read_text())
        s2 = json.loads((tmp_path / "s2" / name / "summary.json").read_text())
        assert s1["test_loss"] == pytest.approx(s2["test_loss"], rel=1e-13, abs=0)


def test_a_failing_run_is_reported_and_the_others_kept(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MINITORCH_CIFAR_DATA", str(tmp_path / "cache"))
    base = TrainConfig(data=str(tiny_folder), model="simple", width=0.25, batch_size=25, epochs=1, val_size=50, out=str(tmp_path / "sw"))
    result = experiments.run_sweep(base, {"lr": [0.05, 1e9]}, progress=False)
    assert len(result["rows"]) == 1 and result["rows"][0]["lr"] == 0.05
    assert len(result["failed"]) == 1 and result["failed"][0]["config"]["lr"] == 1e9
    assert "loss became" in result["failed"][0]["error"]
