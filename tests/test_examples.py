"""The learner's examples run on tiny data in seconds, so they cannot rot."""
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from minitorch_cifar.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script, *args, cwd, env_root):
    env = {**__import__("os").environ, "MINITORCH_CIFAR_DATA": str(env_root), "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_01_layer_by_layer(tmp_path):
    out = run("01_layer_by_layer.py", cwd=tmp_path, env_root=tmp_path)
    assert "im2col" in out and "Gradient checks" in out
    assert "loss before" in out and "after one step" in out
    errors = [float(tok.rstrip(",")) for line in out.splitlines() if line.strip().startswith(("Conv2d ", "BatchNorm2d "))
              for tok in line.split()[2::2]]
    assert errors and max(errors) < 1e-6  # computed live, and small


def test_02_train_and_03_what_did_it_learn(tiny_folder, tmp_path, monkeypatch):
    out = run("02_train_cifar10.py", "--data", tiny_folder, "--epochs", "2", "--batch-size", "25", cwd=tmp_path, env_root=tmp_path / "cache")
    assert "test accuracy" in out and (tmp_path / "example_model.npz").is_file()
    monkeypatch.setenv("MINITORCH_CIFAR_DATA", str(tmp_path / "cache"))
    assert main(["train", "--data", str(tiny_folder), "--epochs", "1", "--width", "0.25", "--batch-size", "25",
                 "--val-size", "50", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = run("03_what_did_it_learn.py", tmp_path / "run" / "best.npz", "--data", tiny_folder, "--out", tmp_path / "pics",
              cwd=tmp_path, env_root=tmp_path / "cache")
    for name in ("filters.png", "feature_maps.png", "confusion.png", "confidently_wrong.png"):
        assert (tmp_path / "pics" / name).stat().st_size > 2000, name
    assert "test accuracy" in out


def test_12_bn_scales(tiny_folder, tmp_path):
    assert main(["train", "--data", str(tiny_folder), "--model", "fast", "--width", "0.125", "--epochs", "1", "--batch-size", "50",
                 "--val-size", "0", "--train-bn-scales", "--weight-decay", "0.01", "--decay-bias-bn", "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    out = run("12_bn_scales.py", tmp_path / "run" / "best.npz", cwd=tmp_path, env_root=tmp_path / "cache")
    means = [float(line.split("mean ")[1].split(",")[0]) for line in out.splitlines() if line.startswith("batch norm")]
    assert len(means) == 6 and all(m != 1.0 for m in means)  # six batch norms, scales moved off their init
    steps, decay = out.split("weight decay alone over ")[1].split(" steps: x")
    assert int(steps) > 0 and 0 < float(decay) <= 1


def write_seeds(results, name, seeds, accs, **fields):
    """An experiment's seeds.json with the fields 13_ablations reads (std: the population std, as `seeds` writes),
    min, max and any others given (14_budget reads minutes_per_run, data and recipe)."""
    (results / name).mkdir()
    (results / name / "seeds.json").write_text(json.dumps({
        "seeds": seeds, "test_accuracies": accs, "mean": statistics.fmean(accs), "std": statistics.pstdev(accs),
        "min": min(accs), "max": max(accs), **fields}))


def test_13_ablations_compares_each_experiment_with_the_reference_mean_and_the_same_seed(tmp_path):
    write_seeds(tmp_path, "ref", [0, 1, 2], [90.1, 90.33, 89.7])
    write_seeds(tmp_path, "abl", [0, 1], [89.71, 89.42])
    row = run("13_ablations.py", "ref", "abl", "--results", tmp_path, cwd=tmp_path, env_root=tmp_path).splitlines()[-1]
    # mean 89.565 rounds up; -0.478 from 90.043 is -1.8 of the reference's std 0.260; paired: 89.71 - 90.1,
    # 89.42 - 90.33, whose mean is -0.65 and whose standard error is their sample std 0.52 / sqrt(2) over sqrt(2)
    assert row == "| `abl` | 0 1 | 89.71 / 89.42 | 89.57 | -0.48 (-1.8 std) | -0.39, -0.91 (mean -0.65, s.e. 0.26) |"


def test_13_ablations_against_a_one_seed_reference_gives_no_std(tmp_path):
    write_seeds(tmp_path, "ref", [0], [90.21])
    write_seeds(tmp_path, "abl", [0, 1], [89.30, 89.64])
    header, _, row = run("13_ablations.py", "ref", "abl", "--results", tmp_path, cwd=tmp_path, env_root=tmp_path).splitlines()
    assert "mean 90.21 (one seed: no std)" in header
    assert row == "| `abl` | 0 1 | 89.30 / 89.64 | 89.47 | -0.74 | -0.91 |"  # only seed 0 is paired


def test_11_torch_airbench(tiny_folder, tmp_path):
    out = run("11_torch_airbench.py", "--data", tiny_folder, "--epochs", "1.5", "--batch-size", "50", "--out", tmp_path / "r",
              cwd=tmp_path, env_root=tmp_path / "cache")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["steps"] == 9  # ceil(6 steps an epoch x 1.5 epochs): the run stops mid-epoch
    assert len(summary["history"]) == 2 and 0 <= summary["test_accuracy"] <= 100
    assert "test accuracy" in out


def test_11_torch_airbench_whitening_decorrelates_patches(torch):
    sys.path.insert(0, str(EXAMPLES))
    try:
        airbench = __import__("11_torch_airbench")
    finally:
        sys.path.remove(str(EXAMPLES))
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(3, 3, generator=gen)  # correlated colour channels
    images = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(200, 3, 16, 16, generator=gen))
    stem = torch.nn.Conv2d(3, 24, 2)
    airbench.whiten(stem, images, eps=0)
    with torch.no_grad():
        z = stem(images)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()  # minus the bias; half with each sign
        z = z - stem.bias[:12].double()
    assert torch.allclose(z.T @ z / len(z), torch.eye(12, dtype=torch.float64), atol=1e-3)


def example_script(filename):
    """An examples/ script as a module (they are scripts, not part of the package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"example_{Path(filename).stem}", EXAMPLES / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_10_results_puts_each_run_in_its_own_folder():
    import shlex
    results = example_script("10_results.py")
    docs = results.ROOT / "docs" / "results"
    assert results.results_folder("deeper-e12", Path("runs/deeper-e12")) == docs / "deeper-e12"  # not deeper-e12/deeper-e12
    assert results.results_folder("crossval", Path("runs/crossval-f64-simple")) == docs / "crossval" / "crossval-f64-simple"
    from minitorch_cifar.cli import build_parser
    for name, commands in results.EXPERIMENTS.items():
        outs = [results.results_folder(name, Path(argv[argv.index("--out") + 1])) for argv in map(shlex.split, commands)]
        assert len(set(outs)) == len(outs), name  # no run overwrites another's outputs
        for command in commands:
            build_parser().parse_args(shlex.split(command))  # a typo'd option exits here, not hours into a queue


def test_10_results_restores_committed_runs_so_seeds_accumulate_on_a_new_checkout(tiny_folder, tmp_path, monkeypatch, capfd):
    """A fresh checkout has only docs/results: a finished seed restored from there is reused, not retrained."""
    import shutil
    from minitorch_cifar import experiments
    from minitorch_cifar.train import TrainConfig
    results = example_script("10_results.py")
    monkeypatch.setenv("MINITORCH_CIFAR_DATA", str(tmp_path / "cache"))
    runs, docs = tmp_path / "runs" / "exp", tmp_path / "docs" / "exp"
    config = TrainConfig(data=str(tiny_folder), model="simple", width=0.25, epochs=1, batch_size=50, val_size=0,
                         tta=0, out=str(runs))
    experiments.run_seeds(config, [0], progress=False)
    results.copy_small(runs, docs)
    assert not list(docs.rglob("*.npz"))  # checkpoints stay out of docs/results
    shutil.rmtree(runs)
    results.restore_finished(docs, runs)
    committed = (docs / "seed0" / "summary.json").read_text()
    capfd.readouterr()
    again = experiments.run_seeds(config, [0, 1], progress=False)
    assert capfd.readouterr().out.count("reused") == 1  # seed 0 from the restored summary; seed 1 trained
    assert (runs / "seed0" / "summary.json").read_text() == committed and again["seeds"] == [0, 1]
    results.copy_small(runs, docs)
    (runs / "seed1" / "summary.json").write_text("changed")
    results.restore_finished(docs, runs)  # never overwrites what a run folder already has
    assert (runs / "seed1" / "summary.json").read_text() == "changed"


def test_10_results_copies_each_finished_run_while_the_command_still_runs(tmp_path):
    """A seeds command of several 2-hour runs: seed 0 reaches docs/results as it ends; seed 1, still training,
    does not (its history is partial), and a checkpoint never does."""
    results = example_script("10_results.py")
    runs, docs = tmp_path / "runs" / "exp", tmp_path / "docs" / "exp"
    for name in ("config.json", "history.json", "summary.json", "checkpoint.npz"):
        (runs / "seed0" / name).parent.mkdir(parents=True, exist_ok=True)
        (runs / "seed0" / name).write_text(name)
    for name in ("config.json", "history.json", "checkpoint.npz"):
        (runs / "seed1").mkdir(exist_ok=True)
        (runs / "seed1" / name).write_text(name)
    (runs / "seeds.json").write_text("{}")
    results.copy_finished(runs, docs)
    assert sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*")) == [
        "seed0", "seed0/config.json", "seed0/history.json", "seed0/summary.json", "seeds.json"]
    one_run, its_docs = tmp_path / "runs" / "train", tmp_path / "docs" / "train"
    one_run.mkdir()
    (one_run / "config.json").write_text("{}")
    (one_run / "history.json").write_text("[]")
    results.copy_finished(one_run, its_docs)  # a single train command still running: nothing to copy yet
    assert not its_docs.exists()
    (one_run / "summary.json").write_text("{}")
    results.copy_finished(one_run, its_docs)
    assert sorted(p.name for p in its_docs.iterdir()) == ["config.json", "history.json", "summary.json"]


def test_14_budget_extrapolates_from_the_seeds_two_epoch_budgets_share(tmp_path):
    """Accuracy per doubling of the minutes, from the seeds both experiments ran: seed 1 of the shorter one has
    no partner and must not move the figure; recipes that differ in more than epochs are refused."""
    budget = example_script("14_budget.py")

    def write(name, model, epochs, accuracies, minutes, width=2.0, train_subset=0):
        write_seeds(tmp_path, name, list(range(len(accuracies))), accuracies, minutes_per_run=minutes, data="jpeg",
                    recipe={"model": model, "epochs": epochs, "width": width, "train_subset": train_subset})

    write("short", "fast", 20, [92.0, 95.0], 50.0)  # seed 1 alone would lift the shorter mean to 93.5
    write("long", "fast", 40, [92.5], 100.0)
    write("slow-and-worse", "fast", 10, [91.0], 200.0)
    write("vgg", "deeper", 30, [90.0], 200.0)  # not the fast network: not a point
    write("speed", "fast", 2, [40.0], 2.0, train_subset=10240)  # a speed measurement on a subset: not a point
    summary = budget.main(["short", "long", "--target", "93", "--results", str(tmp_path)])
    fit = summary["extrapolation"]
    assert fit["seeds"] == [0] and fit["gain_per_doubling"] == pytest.approx(0.5)
    assert fit["minutes_to_target"] == pytest.approx(200.0)  # one more doubling for the next 0.5 points
    frontier = {p["name"]: p["named"] for p in summary["points"]}
    assert frontier == {"short": True, "long": False, "slow-and-worse": False}  # short: mean 93.5 in 50 min
    assert json.loads((tmp_path / "budget.json").read_text())["extrapolation"]["minutes_to_target"] == pytest.approx(200.0)
    assert (tmp_path / "budget.png").stat().st_size > 0
    write("wider", "fast", 40, [92.9], 120.0, width=3.0)
    with pytest.raises(SystemExit, match="width"):
        budget.main(["short", "wider", "--results", str(tmp_path)])


def test_14_budget_pools_one_recipe_run_under_several_names(tmp_path):
    """--pool: seeds of one recipe run on other kernels (only the arithmetic differs, or a switched-off
    option is spelled out, its unread settings changed) join one mean with seeds.json's population std; another
    recipe or a seed met twice is refused; the rate per doubling is applied at the last-named experiment's minutes."""
    budget = example_script("14_budget.py")

    def write(name, epochs, seeds, accuracies, minutes, **recipe):
        write_seeds(tmp_path, name, seeds, accuracies, minutes_per_run=minutes, data="jpeg",
                    recipe={"model": "fast", "epochs": epochs, "width": 2.0, **recipe})

    write("e20", 20, [0, 1], [92.0, 92.0], 50.0, matmul_precision="medium")
    write("e40", 40, [0, 1], [92.5, 92.5], 100.0, matmul_precision="medium")
    write("e40-f32", 40, [2], [93.0], 150.0, matmul_precision="highest", float_gemm="auto")
    write("e40-new", 40, [3], [92.0], 80.0, matmul_precision="highest", float_gemm="auto", select_keep=1.0,
          proxy_every=2, proxy_widths="16,32,32")
    summary = budget.main(["e20", "e40", "--pool", "e40", "e40-f32", "e40-new", "--results", str(tmp_path)])
    pooled = summary["pooled"]
    assert pooled["seeds"] == [0, 1, 2, 3] and pooled["from"] == ["e40", "e40", "e40-f32", "e40-new"]
    assert pooled["mean"] == pytest.approx(92.5) and pooled["std"] == pytest.approx(statistics.pstdev([92.5, 92.5, 93, 92]))
    assert pooled["minutes_per_run"] == 80.0
    assert pooled["minutes_to_target"] == pytest.approx(80.0 * 2)  # +0.5 a doubling, 0.5 short of 93
    write("e40-select", 40, [4], [92.4], 70.0, select_keep=0.5)
    with pytest.raises(SystemExit, match="select_keep"):
        budget.main(["--pool", "e40", "e40-select", "--results", str(tmp_path)])
    write("e40-said", 40, [5], [92.6], 90.0, group_convs=2)  # an option recorded at its default: the same recipe
    assert budget.main(["--pool", "e40", "e40-said", "--results", str(tmp_path)])["pooled"]["seeds"] == [0, 1, 5]
    write("e40-deeper", 40, [6], [92.6], 90.0, group_convs=3)
    with pytest.raises(SystemExit, match="group_convs"):
        budget.main(["--pool", "e40", "e40-deeper", "--results", str(tmp_path)])
    write("e40-again", 40, [1], [92.9], 90.0)
    with pytest.raises(SystemExit, match="seed 1"):
        budget.main(["--pool", "e40", "e40-again", "--results", str(tmp_path)])
