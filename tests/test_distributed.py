"""Data-parallel training over MPI, run as real 2-rank jobs under mpiexec."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="MPI tests need the [mpi] extra (mpi4py and the mpich wheel)")
MPIEXEC = shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH (the mpich wheel ships one)")
JOB = Path(__file__).with_name("mpi_job.py")


def mpirun(*args, timeout=300, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([MPIEXEC, "-n", "2", *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_two_ranks_equal_one_process_and_stay_identical(tmp_path, backend):
    out = tmp_path / "report.json"
    result = mpirun(sys.executable, str(JOB), "equal", str(out), backend)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    for case in ("no_bn", "sync_bn"):
        assert report[case]["max_diff_vs_single_process"] < 1e-12, report
        assert report[case]["identical_on_all_ranks"], report


def test_a_failing_rank_ends_the_whole_job(tmp_path):
    t = time.perf_counter()
    result = mpirun(sys.executable, str(JOB), "raise", str(tmp_path / "run"), timeout=120)
    elapsed = time.perf_counter() - t
    assert result.returncode != 0
    assert "rank 1 fails on purpose" in result.stderr and "aborting all ranks" in result.stderr
    assert elapsed < 60


def test_distributed_cli_run(tiny_folder, tmp_path):
    out = tmp_path / "run"
    cli = [sys.executable, "-m", "minitorch_cifar", "train", "--data", str(tiny_folder), "--epochs", "2", "--model", "simple",
           "--width", "0.25", "--batch-size", "50", "--val-size", "50", "--distributed", "--out", str(out), "--no-progress"]
    result = mpirun(*cli, env={"MINITORCH_CIFAR_DATA": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2 and history[-1]["train_accuracy"] > 10
    assert (out / "summary.json").is_file() and (out / "best.npz").is_file()
    assert result.stdout.count("epoch 1/2") == 1  # only rank 0 logs


def test_distributed_run_with_hard_example_selection(tiny_folder, tmp_path):
    """--select-keep over 2 ranks with sync BN: each rank keeps the hardest of its shard, the proxy's gradients
    are averaged like the network's, and the checkpoint holds the proxy."""
    out = tmp_path / "run"
    cli = [sys.executable, "-m", "minitorch_cifar", "train", "--data", str(tiny_folder), "--epochs", "2", "--model", "fast",
           "--width", "0.125", "--batch-size", "50", "--val-size", "50", "--augment", "crop", "--padding", "2",
           "--select-keep", "0.5", "--proxy-widths", "4,8,8", "--proxy-every", "2", "--distributed", "--sync-bn",
           "--out", str(out), "--no-progress"]
    result = mpirun(*cli, env={"MINITORCH_CIFAR_DATA": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2 and all(r["images_per_s"] * r["epoch_seconds"] == pytest.approx(250) for r in history)
    with np.load(out / "checkpoint.npz") as z:
        assert any(k.startswith("proxy/") for k in z.files)


def test_seeds_over_mpi_ranks_then_reused(tiny_folder, tmp_path, monkeypatch, capfd):
    """`seeds --ranks 2`: each seed trains as a 2-rank mpiexec job; run again, finished seeds are reused,
    a changed recipe is not."""
    from minitorch_cifar import experiments
    from minitorch_cifar.train import TrainConfig
    monkeypatch.setenv("MINITORCH_CIFAR_DATA", str(tmp_path / "cache"))
    config = TrainConfig(data=str(tiny_folder), model="simple", width=0.25, epochs=1, batch_size=50, val_size=0,
                         tta=1, out=str(tmp_path / "seeds"))
    first = experiments.run_seeds(config, [0, 1], progress=False, ranks=2)
    assert not first["failed"] and len(first["test_accuracies"]) == 2 and first["ranks"] == 2
    summary0 = json.loads((tmp_path / "seeds" / "seed0" / "summary.json").read_text())
    assert summary0["config"]["distributed"] and summary0["end_to_end_seconds"] >= summary0["wall_seconds"]
    # the two ranks tested half the test set each: together they must score rank 0's final model exactly
    from minitorch_cifar.data import load_cifar10
    from minitorch_cifar.train import evaluate, model_from_checkpoint
    model, meta = model_from_checkpoint(tmp_path / "seeds" / "seed0" / "best.npz")
    test = load_cifar10(str(tiny_folder)).test
    loss, acc, _ = evaluate(model, test.images, test.labels, meta["mean"], meta["std"], tta=1)
    assert acc == pytest.approx(summary0["test_accuracy"], abs=1e-9) and loss == pytest.approx(summary0["test_loss"], rel=1e-5)
    capfd.readouterr()
    again = experiments.run_seeds(config, [0, 1], progress=False, ranks=2)
    assert again["test_accuracies"] == first["test_accuracies"]
    assert capfd.readouterr().out.count("reused") == 2
    seed0 = dataclasses.asdict(dataclasses.replace(config, seed=0, out=str(tmp_path / "seeds" / "seed0")))
    assert experiments.finished_summary({**seed0, "lr": 0.5}) is None
    # a run written before a TrainConfig field existed is the recipe with that field at its default
    del summary0["config"]["whiten_bias_epochs"]
    (tmp_path / "seeds" / "seed0" / "summary.json").write_text(json.dumps(summary0))
    assert experiments.finished_summary(seed0) is not None
    assert experiments.finished_summary({**seed0, "whiten_bias_epochs": 3}) is None
    # a seed whose summary is missing (killed after its last checkpoint) is continued under mpiexec with --resume
    (tmp_path / "seeds" / "seed1" / "summary.json").unlink()
    capfd.readouterr()
    third = experiments.run_seeds(config, [0, 1], progress=False, ranks=2)
    assert third["test_accuracies"] == first["test_accuracies"]
    printed = capfd.readouterr().out  # mpiexec's ranks print straight to the file descriptor
    assert "continuing from its checkpoint" in printed and "resuming" in printed
    summary1 = json.loads((tmp_path / "seeds" / "seed1" / "summary.json").read_text())
    assert summary1["resumed"] and "end_to_end_seconds" not in summary1
