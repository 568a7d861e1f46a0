"""End to end on a tiny image folder written here: train, evaluate, plot, seeds, sweep, resume, NaN, bad options."""
import json

import numpy as np
import pytest

import minitorch_cifar as mc
from minitorch_cifar.cli import main
from minitorch_cifar.train import TrainConfig, train

FAST = ["--model", "simple", "--width", "0.25", "--batch-size", "25", "--lr", "0.05", "--val-size", "50",
        "--augment", "flip", "--backend", "numba", "--no-progress"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINITORCH_CIFAR_DATA", str(tmp_path / "cache"))


def test_train_learns_evaluate_and_plot(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_folder), "--epochs", "3", "--out", str(out), "--bn"] + FAST) == 0
    for name in ("history.json", "history.csv", "checkpoint.npz", "best.npz", "config.json", "curves.png", "summary.json"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_s", "elapsed_seconds"} <= set(history[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] > 50  # chance is 10%
    assert "test accuracy" in capsys.readouterr().out

    assert main(["evaluate", str(out / "best.npz"), "--data", str(tiny_folder), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 100 and np.sum(metrics["confusion_matrix"]) == 60
    assert (tmp_path / "ev" / "confusion.png").is_file()
    assert main(["plot", str(out), str(out), "--out", str(tmp_path / "both.png")]) == 0
    assert (tmp_path / "both.png").stat().st_size > 1000


def _weights(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k.startswith(("model/", "velocity/"))}


def test_resume_equals_uninterrupted(tiny_folder, tmp_path):
    data = mc.data.load_cifar10(tiny_folder)
    base = dict(model="simple", width=0.25, batch_size=25, epochs=2, val_size=50, augment="crop,flip", dropout=0.3, seed=1)
    train(TrainConfig(**base, out=str(tmp_path / "a")), data=data, progress=False, log=lambda *a: None)
    cfg = TrainConfig(**base, out=str(tmp_path / "b"))
    stopped = train(cfg, data=data, progress=False, on_step=lambda epoch, b: epoch == 0 and b == 3, log=lambda *a: None)
    assert stopped is None and (tmp_path / "b" / "checkpoint.npz").is_file()
    train(cfg, data=data, progress=False, resume=True, log=lambda *a: None)
    a, b = _weights(tmp_path / "a" / "checkpoint.npz"), _weights(tmp_path / "b" / "checkpoint.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ha = json.loads((tmp_path / "a" / "history.json").read_text())
    hb = json.loads((tmp_path / "b" / "history.json").read_text())
    assert [r["train_loss"] for r in ha] == [r["train_loss"] for r in hb]


def test_nan_loss_stops_with_a_clear_message(tiny_folder, tmp_path, capsys):
    out = tmp_path / "nan"
    code = main(["train", "--data", str(tiny_folder), "--epochs", "3", "--out", str(out), *FAST, "--lr", "1e6", "--no-nesterov", "--momentum", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "loss became" in err and "Try a lower --lr" in err
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize("argv,message", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--augment", "rotate"], "unknown augmentation"),
    (["--schedule", "exp"], "--schedule must be one of"),
    (["--batch-size", "5000"], "larger than the"),
])
def test_bad_options_one_line(tiny_folder, tmp_path, capsys, argv, message):
    code = main(["train", "--data", str(tiny_folder), "--out", str(tmp_path / "x"), *FAST, *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err and "Traceback" not in err


def test_no_data_and_no_network_says_which_formats(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "empty_dir_missing"), "--epochs", "1"])
    assert code == 2 and "--data takes" in capsys.readouterr().err


def test_seeds_and_sweep(tiny_folder, tmp_path):
    common = ["--data", str(tiny_folder), "--epochs", "1", *FAST]
    assert main(["seeds", "--seeds", "0", "1", "--out", str(tmp_path / "seeds"), *common]) == 0
    s = json.loads((tmp_path / "seeds" / "seeds.json").read_text())
    assert len(s["test_accuracies"]) == 2 and s["min"] <= s["mean"] <= s["max"] and s["data"]
    assert (tmp_path / "seeds" / "seeds.png").is_file() and (tmp_path / "seeds" / "seed1" / "summary.json").is_file()
    assert main(["sweep", "--grid", "lr=0.02,0.05", "--out", str(tmp_path / "sweep"), *common]) == 0
    sw = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [r["lr"] for r in sw["rows"]] == [0.02, 0.05]
    assert "| lr |" in (tmp_path / "sweep" / "sweep.md").read_text()
    with pytest.raises(ValueError, match="not a train option"):
        mc.experiments.parse_grid(["colour=1,2"])
