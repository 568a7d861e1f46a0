"""End to end on a tiny image folder written here: train, evaluate, plot, seeds, sweep, resume, NaN, bad options."""
import dataclasses
import json

import numpy as np
import pytest

import minitorch_cifar as mc
from minitorch_cifar import machine
from minitorch_cifar.cli import main
from minitorch_cifar.train import TrainConfig, load_checkpoint, train

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
    assert summary["machine"] == machine.describe() and summary["machine"]["cores"] >= 1
    assert "test accuracy" in capsys.readouterr().out

    assert main(["evaluate", str(out / "best.npz"), "--data", str(tiny_folder), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 100 and np.sum(metrics["confusion_matrix"]) == 60
    assert (tmp_path / "ev" / "confusion.png").is_file()
    assert main(["plot", str(out), str(out), "--out", str(tmp_path / "both.png")]) == 0
    assert (tmp_path / "both.png").stat().st_size > 1000


def test_evaluate_several_checkpoints_scores_the_mean_of_their_logits(tiny_folder, tmp_path, capsys):
    """An ensemble of runs: each member's accuracy alone, and the accuracy of the mean of their TTA logits."""
    from minitorch_cifar.data import load_cifar10
    from minitorch_cifar.train import model_from_checkpoint, predict
    runs = [tmp_path / f"seed{s}" for s in (0, 1)]
    for seed, out in enumerate(runs):
        assert main(["train", "--data", str(tiny_folder), "--epochs", "1", "--seed", str(seed), "--out", str(out)] + FAST) == 0
    checkpoints = [str(out / "best.npz") for out in runs]
    assert main(["evaluate", *checkpoints, "--tta", "1", "--data", str(tiny_folder), "--out", str(tmp_path / "ens")]) == 0
    metrics = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    test = load_cifar10(str(tiny_folder)).test
    member_logits = []
    for path in checkpoints:
        model, meta = model_from_checkpoint(path)
        member_logits.append(predict(model, test.images, meta["mean"], meta["std"], tta=1))
    alone = [100 * np.mean(logits.argmax(1) == test.labels) for logits in member_logits]
    ensemble = 100 * np.mean(np.mean(member_logits, axis=0).argmax(1) == test.labels)
    assert metrics["checkpoints"] == checkpoints and metrics["member_test_accuracies"] == pytest.approx(alone)
    assert metrics["test_accuracy"] == pytest.approx(ensemble) and np.sum(metrics["confusion_matrix"]) == 60
    assert "ensemble of 2" in capsys.readouterr().out


def test_evaluate_matmul_precision_medium_rounds_the_gemm_operands_to_bfloat16(tiny_folder, tmp_path):
    """evaluate --matmul-precision medium scores the logits of bfloat16 GEMMs, then leaves the switch as it found it."""
    from minitorch_cifar import backend
    from minitorch_cifar.data import load_cifar10
    from minitorch_cifar.train import model_from_checkpoint, predict, score
    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_folder), "--epochs", "1", "--out", str(out)] + FAST) == 0
    assert main(["evaluate", str(out / "best.npz"), "--backend", "numpy", "--matmul-precision", "medium",
                 "--data", str(tiny_folder), "--out", str(tmp_path / "ev")]) == 0
    assert backend.get_float32_matmul_precision() == "highest"
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    test = load_cifar10(str(tiny_folder)).test
    model, meta = model_from_checkpoint(out / "best.npz")
    losses = {}
    for precision in ("highest", "medium"):
        with backend.use_float32_matmul_precision(precision):
            losses[precision] = score(predict(model, test.images, meta["mean"], meta["std"]), test.labels)[0]
    assert metrics["matmul_precision"] == "medium" and metrics["test_loss"] == pytest.approx(losses["medium"], rel=1e-6)
    assert abs(losses["medium"] - losses["highest"]) > 1e-6 * losses["highest"]


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


def test_float_gemm_picks_the_convolutions_gemm_and_each_trains_alike(tiny_folder, tmp_path, monkeypatch):
    """--float-gemm reaches the kernels and the summary; ours and OpenBLAS's give the same run up to float32
    rounding (same seed, so the same batches and initial weights)."""
    from minitorch_cifar.kernels import cpu
    monkeypatch.setattr(cpu.conv, "FLOAT_BLAS", "auto")  # restored after the test: train sets it process-wide
    runs = {}
    for gemm in ("openblas", "numba"):
        out = tmp_path / gemm
        assert main(["train", "--data", str(tiny_folder), "--epochs", "2", "--out", str(out), "--float-gemm", gemm] + FAST) == 0
        assert cpu.conv.FLOAT_BLAS == gemm
        runs[gemm] = json.loads((out / "summary.json").read_text()), json.loads((out / "history.json").read_text())
        assert runs[gemm][0]["float_gemm"] == gemm and runs[gemm][0]["config"]["float_gemm"] == gemm
    losses = {gemm: [r["train_loss"] for r in history] for gemm, (_, history) in runs.items()}
    np.testing.assert_allclose(losses["numba"], losses["openblas"], rtol=1e-3)
    # the weights after 2 epochs: alike up to float32 rounding, and not bit for bit (else the option changed nothing).
    # 1e-3 of the largest weight: the GEMMs' different rounding grows over the steps, more through the larger
    # Winograd tiles' transforms (F(7x7, 3x3) at 7x7: 2.5e-4 here, where F(4x4, 3x3) stayed under 1e-4)
    weights = {gemm: load_checkpoint(tmp_path / gemm / "checkpoint.npz")[0] for gemm in runs}
    assert weights["numba"].keys() == weights["openblas"].keys()
    for name, ours in weights["numba"].items():
        theirs = weights["openblas"][name]
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-3 * max(1.0, float(np.abs(theirs).max())), err_msg=name)
    assert any(not np.array_equal(weights["numba"][k], weights["openblas"][k]) for k in weights["numba"])


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
    (["--float-gemm", "atlas"], "--float-gemm must be one of auto, mkl, openblas, numba"),
    (["--batch-size", "5000"], "larger than the"),
])
def test_bad_options_one_line(tiny_folder, tmp_path, capsys, argv, message):
    code = main(["train", "--data", str(tiny_folder), "--out", str(tmp_path / "x"), *FAST, *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err and "Traceback" not in err


def test_no_data_and_no_network_says_which_formats(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "empty_dir_missing"), "--epochs", "1"])
    assert code == 2 and "--data takes" in capsys.readouterr().err


def test_seed_summary_tells_machines_apart_by_family_as_well_as_name(tmp_path):
    from minitorch_cifar.experiments import _seed_summary
    from minitorch_cifar.train import TrainConfig
    zen4, zen5 = (dict(cpu="AMD EPYC", family=f, cores=2) for f in ("25/17", "26/2"))
    runs = [dict(test_accuracy=a, end_to_end_seconds=600, data="jpg", machine=m)
            for a, m in ((90.0, zen4), (91.0, zen5), (90.5, zen5))]
    s = _seed_summary(TrainConfig(out=str(tmp_path)), [0, 1, 2], runs, [], 1)
    assert s["machines"] == [zen4, zen5] and s["mean"] == 90.5 and s["minutes_per_run"] == 10


def test_seeds_and_sweep(tiny_folder, tmp_path):
    common = ["--data", str(tiny_folder), "--epochs", "1", *FAST]
    assert main(["seeds", "--seeds", "0", "1", "--out", str(tmp_path / "seeds"), *common]) == 0
    s = json.loads((tmp_path / "seeds" / "seeds.json").read_text())
    assert len(s["test_accuracies"]) == 2 and s["min"] <= s["mean"] <= s["max"] and s["data"]
    assert s["machines"] == [machine.describe()]  # both seeds ran here: one machine, listed once
    assert (tmp_path / "seeds" / "seeds.png").is_file() and (tmp_path / "seeds" / "seed1" / "summary.json").is_file()
    assert main(["sweep", "--grid", "lr=0.02,0.05", "--out", str(tmp_path / "sweep"), *common]) == 0
    sw = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [r["lr"] for r in sw["rows"]] == [0.02, 0.05]
    assert "| lr |" in (tmp_path / "sweep" / "sweep.md").read_text()
    with pytest.raises(ValueError, match="not a train option"):
        mc.experiments.parse_grid(["colour=1,2"])
    # a point that fails is named in sweep.md, not only in the JSON (and the exit code says so)
    assert main(["sweep", "--grid", "lr=0.05,1e6", "--out", str(tmp_path / "diverges"), *common]) == 1
    assert "failed: lr=1000000.0: TrainingDiverged" in (tmp_path / "diverges" / "sweep.md").read_text()
    # options that default to None ("the model's") are read as their type, "none" as None
    assert mc.experiments.parse_grid(["dropout=0,0.5", "bn_momentum=0.4,none"]) == {"dropout": [0.0, 0.5], "bn_momentum": [0.4, None]}


def test_seeds_continue_a_run_stopped_part_way(tiny_folder, tmp_path, capsys):
    """A seed killed mid-run (here: stopped at step 3) is continued from its checkpoint by rerunning the same
    seeds command, and ends where an uninterrupted run ends; a checkpoint of another recipe is not continued."""
    common = ["--data", str(tiny_folder), "--epochs", "2", "--seeds", "0", *FAST]
    assert main(["seeds", "--out", str(tmp_path / "a"), *common]) == 0
    config = json.loads((tmp_path / "a" / "seed0" / "config.json").read_text())
    part = TrainConfig(**{**config, "out": str(tmp_path / "b" / "seed0")})
    assert train(part, progress=False, on_step=lambda epoch, b: epoch == 0 and b == 3, log=lambda *a: None) is None
    assert mc.experiments.stopped_part_way(dataclasses.asdict(part))
    assert not mc.experiments.stopped_part_way({**dataclasses.asdict(part), "lr": 0.1})
    capsys.readouterr()
    assert main(["seeds", "--out", str(tmp_path / "b"), *common]) == 0
    assert "continuing from its checkpoint" in capsys.readouterr().out
    a, b = _weights(tmp_path / "a" / "seed0" / "checkpoint.npz"), _weights(tmp_path / "b" / "seed0" / "checkpoint.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    summary = json.loads((tmp_path / "b" / "seed0" / "summary.json").read_text())
    assert summary["resumed"] and mc.experiments.run_minutes(summary) == summary["train_seconds"] / 60
    sa, sb = (json.loads((tmp_path / d / "seeds.json").read_text()) for d in "ab")
    assert sa["test_accuracies"] == sb["test_accuracies"]


@pytest.mark.parametrize("group_convs", [2, 3])
def test_resume_equals_uninterrupted_with_recipe_tricks(tiny_folder, tmp_path, group_convs):
    """Lookahead EMA, alternating flips, dirac init, the airbench schedule and bias lr scaling also resume exactly,
    with either group depth (a 2-hour run of the 3-conv groups is continued across sessions)."""
    data = mc.data.load_cifar10(tiny_folder)
    base = dict(model="fast", width=0.125, batch_size=50, epochs=2, val_size=50, augment="crop,altflip", padding=2,
                lookahead=True, dirac_init=True, schedule="airbench", bias_lr_scale=4.0, decay_bias_bn=True,
                label_smoothing=0.2, tta=2, seed=3, bn_momentum=0.4, whiten_bias_epochs=1, group_convs=group_convs)
    a = train(TrainConfig(**base, out=str(tmp_path / "a")), data=data, progress=False, log=lambda *a: None)
    cfg = TrainConfig(**base, out=str(tmp_path / "b"))
    train(cfg, data=data, progress=False, on_step=lambda epoch, b: epoch == 1 and b == 1, log=lambda *a: None)
    b = train(cfg, data=data, progress=False, resume=True, log=lambda *a: None)
    assert a["test_loss"] == b["test_loss"] and a["test_accuracy"] == b["test_accuracy"]


def test_checkpoint_of_a_finished_lookahead_run_holds_the_tested_weights(tiny_folder, tmp_path):
    """Lookahead ends by setting the weights to its EMA; checkpoint.npz, which `evaluate` reads, must be saved after."""
    data = mc.data.load_cifar10(tiny_folder)
    cfg = TrainConfig(model="fast", width=0.125, batch_size=50, epochs=2, val_size=0, augment="crop", padding=2,
                      lookahead=True, seed=2, out=str(tmp_path / "run"))
    train(cfg, data=data, progress=False, log=lambda *a: None)
    last, _, _ = mc.train.load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    tested, _, _ = mc.train.load_checkpoint(tmp_path / "run" / "best.npz")  # saved after the EMA step (no val split)
    assert last.keys() == tested.keys() and all(np.array_equal(last[k], tested[k]) for k in last)


def bn_scales_in(checkpoint):
    """The batch-norm scales saved in a checkpoint (the weights beside a running_var)."""
    state, _, _ = mc.train.load_checkpoint(checkpoint)
    return [state[k] for k in state if k.endswith(".weight") and k.replace(".weight", ".running_var") in state]


def test_fast_trains_its_bn_scales_only_when_asked(tiny_folder, tmp_path):
    data = mc.data.load_cifar10(tiny_folder)
    base = dict(model="fast", width=0.125, batch_size=50, epochs=1, val_size=0, augment="crop", padding=2, seed=1)

    def bn_scales(**options):
        train(TrainConfig(**base, **options, out=str(tmp_path / str(options))), data=data, progress=False, log=lambda *a: None)
        scales = bn_scales_in(tmp_path / str(options) / "checkpoint.npz")
        assert len(scales) == 6  # two batch norms per group
        return scales

    assert all(np.all(s == 1) for s in bn_scales())
    assert all(not np.allclose(s, 1) for s in bn_scales(train_bn_scales=True))
    # bias_lr_scale is for the BN biases only: trained scales keep the base lr
    model = mc.models.build_model("fast", width=0.125)
    groups = mc.train._param_groups(model, TrainConfig(model="fast", lr=0.5, bias_lr_scale=64))
    lr_of = {id(p): g.get("lr", 0.5) for g in groups for p in g["params"]}
    norms = [m for m in model.modules() if isinstance(m, mc.nn.norm._BatchNorm)]
    assert {lr_of[id(m.bias)] for m in norms} == {32.0} and {lr_of[id(m.weight)] for m in norms} == {0.5}
    with pytest.raises(ValueError, match="train-bn-scales needs --model fast"):
        TrainConfig(model="deeper", train_bn_scales=True).validate()


def test_fast_trains_and_reloads_with_three_convs_a_group(tiny_folder, tmp_path):
    data = mc.data.load_cifar10(tiny_folder)
    config = TrainConfig(model="fast", width=0.125, group_convs=3, batch_size=50, epochs=1, val_size=0,
                         augment="crop", padding=2, seed=1, out=str(tmp_path / "g3"))
    train(config, data=data, progress=False, log=lambda *a: None)
    assert len(bn_scales_in(tmp_path / "g3" / "checkpoint.npz")) == 9  # three batch norms per group
    model, meta = mc.train.model_from_checkpoint(tmp_path / "g3" / "checkpoint.npz")
    assert meta["config"]["group_convs"] == 3 and sum(isinstance(m, mc.nn.Residual) for m in model.modules()) == 3
    with pytest.raises(ValueError, match="group-convs 3 needs --model fast"):
        TrainConfig(model="deeper", group_convs=3).validate()
    with pytest.raises(ValueError, match="group_convs must be 2"):
        mc.models.build_model("simple", group_convs=3)


def test_no_decay_bn_scales_exempts_only_the_scales_from_weight_decay(tiny_folder, tmp_path):
    data = mc.data.load_cifar10(tiny_folder)
    base = dict(model="fast", width=0.125, batch_size=50, epochs=1, val_size=0, augment="crop", padding=2, seed=1,
                train_bn_scales=True, decay_bias_bn=True, weight_decay=0.5, lr=0.2)

    def bn_scale_mean(**options):
        train(TrainConfig(**base, **options, out=str(tmp_path / str(options))), data=data, progress=False, log=lambda *a: None)
        return np.mean([s.mean() for s in bn_scales_in(tmp_path / str(options) / "checkpoint.npz")])

    assert bn_scale_mean(decay_bn_scales=False) > bn_scale_mean() + 0.01  # decay shrinks the scales; exempt, they stay near 1
    model = mc.models.build_model("fast", width=0.125)
    groups = mc.train._param_groups(model, TrainConfig(**base, bias_lr_scale=4, decay_bn_scales=False))
    decay_of = {id(p): g.get("weight_decay", 0.5) for g in groups for p in g["params"]}
    norms = [m for m in model.modules() if isinstance(m, mc.nn.norm._BatchNorm)]
    assert {decay_of[id(m.weight)] for m in norms} == {0.0} and {decay_of[id(m.bias)] for m in norms} == {0.125}
    assert sorted(map(id, model.parameters())) == sorted(id(p) for g in groups for p in g["params"])  # each once
    for bad, message in [(dict(decay_bias_bn=False), "only matters with --decay-bias-bn"),
                         (dict(train_bn_scales=False), "needs --train-bn-scales")]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**{**base, **bad}, decay_bn_scales=False).validate()


def test_no_whiten_trains_a_random_stem_and_whiten_keeps_the_datas_whitening(tiny_folder, tmp_path):
    data = mc.data.load_cifar10(tiny_folder)
    base = dict(model="fast", width=0.125, batch_size=50, epochs=1, val_size=0, augment="crop", padding=2, seed=1)

    def stem_weights(**options):
        out = tmp_path / str(options)
        train(TrainConfig(**base, **options, out=str(out)), data=data, progress=False, log=lambda *a: None)
        return mc.train.load_checkpoint(out / "checkpoint.npz")[0]["0.weight"]

    whitened, learned = stem_weights(), stem_weights(whiten=False)
    mc.nn.module.manual_seed(base["seed"])  # the init train() starts from
    model = mc.models.build_model("fast", width=0.125)
    random_init = model[0].weight.data.copy()
    mean, std = mc.data.channel_stats(data.train.images)
    mc.models.init_whitening(model[0], mc.data.normalize(data.train.images[:5000], mean, std, np.float64))
    np.testing.assert_allclose(whitened, model[0].weight.data, rtol=1e-6)  # frozen at the whitening
    assert not np.allclose(learned, random_init) and not np.allclose(learned, whitened, atol=0.05)
    for bad, message in [(dict(model="deeper", whiten=False), "--no-whiten needs --model fast"),
                         (dict(model="fast", whiten=False, whiten_bias_epochs=3), "--no-whiten has none")]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad).validate()


def test_whitening_bias_freezes_after_its_epochs_and_bn_momentum_reaches_the_layers(tiny_folder, tmp_path):
    data = mc.data.load_cifar10(tiny_folder)
    base = dict(model="fast", width=0.125, batch_size=50, epochs=2, val_size=50, augment="crop", padding=2, seed=1)

    def stem_bias_moves_in_epoch_2(**options):
        cfg = TrainConfig(**base, **options, out=str(tmp_path / str(options)))
        train(cfg, data=data, progress=False, on_step=lambda epoch, b: epoch == 1 and b == 0, log=lambda *a: None)
        mid, _, _ = mc.train.load_checkpoint(tmp_path / str(options) / "checkpoint.npz")
        train(cfg, data=data, progress=False, resume=True, log=lambda *a: None)
        end, _, _ = mc.train.load_checkpoint(tmp_path / str(options) / "checkpoint.npz")
        return not np.array_equal(mid["0.bias"], end["0.bias"]), end

    moves, default = stem_bias_moves_in_epoch_2()
    assert moves
    moves, frozen = stem_bias_moves_in_epoch_2(whiten_bias_epochs=1)
    assert not moves
    # the momentum changes only the running statistics: same training, other running mean
    _, other = stem_bias_moves_in_epoch_2(bn_momentum=0.1)
    running = [k for k in default if k.endswith("running_mean")]
    assert running and all(np.array_equal(default[k], other[k]) for k in default if k.endswith("weight"))
    assert not np.allclose(default[running[0]], other[running[0]])
    with pytest.raises(ValueError, match="whiten-bias-epochs needs --model fast"):
        TrainConfig(model="simple", whiten_bias_epochs=3).validate()
    with pytest.raises(ValueError, match="bn-momentum"):
        TrainConfig(bn_momentum=0.0).validate()


def test_tta_levels_follow_their_formula(f64):
    model = mc.models.build_model("simple", width=0.25).astype(np.float64)
    images = np.random.default_rng(0).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    mean, std = (0.5,) * 3, (0.25,) * 3
    x = mc.data.normalize(images, mean, std, np.float64)
    from minitorch_cifar.train import predict
    model.eval()
    f = lambda v: model.forward(np.ascontiguousarray(v))  # noqa: E731
    mirror = lambda v: 0.5 * (f(v) + f(v[..., ::-1]))  # noqa: E731
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    np.testing.assert_allclose(predict(model, images, mean, std, tta=0, dtype=np.float64), f(x), rtol=1e-12)
    np.testing.assert_allclose(predict(model, images, mean, std, tta=1, dtype=np.float64), mirror(x), rtol=1e-12)
    expected = 0.5 * mirror(x) + 0.25 * (mirror(padded[:, :, :32, :32]) + mirror(padded[:, :, 2:, 2:]))
    np.testing.assert_allclose(predict(model, images, mean, std, tta=2, dtype=np.float64), expected, rtol=1e-12)


def test_alternating_flip_alternates_and_dirac_init_is_identity():
    images = np.random.default_rng(0).integers(0, 256, (40, 3, 4, 4), dtype=np.uint8)
    idx = np.arange(100, 140)
    e0 = mc.data.transforms.alternating_flip(images, idx, epoch=0)
    e1 = mc.data.transforms.alternating_flip(images, idx, epoch=1)
    flipped0 = np.all(e0 == images[..., ::-1], axis=(1, 2, 3)) & ~np.all(images == images[..., ::-1], axis=(1, 2, 3))
    flipped1 = np.all(e1 == images[..., ::-1], axis=(1, 2, 3)) & ~np.all(images == images[..., ::-1], axis=(1, 2, 3))
    assert np.all(flipped0 != flipped1) and 8 < flipped0.sum() < 32
    np.testing.assert_array_equal(mc.data.transforms.alternating_flip(images, idx, epoch=2), e0)
    conv = mc.nn.Conv2d(3, 5, 3, padding=1, bias=False)
    mc.models.dirac_init(conv)
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(conv.forward(x)[:, :3], x, rtol=1e-6)


def test_airbench_schedule_shape():
    f = mc.optim.airbench(100, warmup=0.2, start=0.2, end=0.07)
    assert abs(f(0) - 0.2) < 1e-12 and abs(f(20) - 1) < 1e-12 and abs(f(100) - 0.07) < 1e-12
    assert f(10) > f(0) and f(60) < f(20)


def test_default_data_folder_empty_and_offline(tmp_path, monkeypatch, capsys):
    """No --data: the standard cache folder is searched, a download is tried, and the error says what --data takes."""
    monkeypatch.setenv("MINITORCH_CIFAR_DATA", str(tmp_path / "standard"))
    monkeypatch.setenv("MINITORCH_CIFAR_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")  # nothing listens there
    code = main(["train", "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot download CIFAR-10" in err and "--data takes" in err
    assert not [p for p in (tmp_path / "standard").iterdir() if p.name != "decoded"]  # no partial download left
