"""Seeds and sweeps: many training runs of one recipe, submitted to a concurrent.futures executor
(serial in this process by default, local processes with jobs > 1, a Dask cluster with a scheduler
address), summarised as JSON, markdown and plots. A failed run is reported with its configuration and
does not lose the finished ones.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from minitorch_cifar.train import TrainConfig, as_current_config


def _pin_threads(threads: int):
    """Cap BLAS, OpenMP and Numba threads in a worker so N parallel runs do not oversubscribe the cores."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        pass
    import numba
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


ONE_CORE_PER_RANK = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}  # MPI ranks' env
_NOT_RECIPE = ("out", "distributed")  # where a run is written and how it is launched do not change what it trains


def finished_summary(config_dict: dict):
    """The summary of a run of exactly this recipe already finished in its folder, or None: seeds and
    sweeps pick up where they stopped (a 5-seed result may take several sessions)."""
    path = Path(config_dict["out"]) / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if _recipe(as_current_config(summary.get("config", {}))) == _recipe(config_dict) else None


def stopped_part_way(config_dict: dict) -> bool:
    """Whether the run's folder holds a checkpoint of exactly this recipe not yet finished (killed, or out of
    session time): seeds and sweeps then continue it from there instead of starting it over."""
    path = Path(config_dict["out"]) / "checkpoint.npz"
    if not path.is_file():
        return False
    try:
        with np.load(path) as z:
            saved = json.loads(str(z["meta"]))["config"]
    except (OSError, ValueError, KeyError):
        return False  # unreadable (e.g. cut off mid-write by an old version): start over, as before
    return _recipe(as_current_config(saved)) == _recipe(config_dict)


def _recipe(config_dict: dict) -> dict:
    return {k: v for k, v in config_dict.items() if k not in _NOT_RECIPE}


def run_one(config_dict: dict, threads: int = 0, progress: bool = False, ranks: int = 1) -> dict:
    """Train one configuration (a plain dict, so it pickles to any worker); returns its summary.

    ``ranks`` > 1: launch it as ``mpiexec -n ranks minitorch-cifar train --distributed`` (one core per
    rank: on this 2-core machine two single-threaded ranks train `fast` 1.2x faster than one process on
    two threads; see benchmarks/distributed.py). A run whose summary.json (same recipe) exists is reused."""
    done = finished_summary(config_dict)
    if done is not None:
        print(f"{config_dict['out']}: finished before ({done['test_accuracy']:.2f}%), reused")
        return done
    resume = stopped_part_way(config_dict)
    if resume:
        print(f"{config_dict['out']}: stopped part-way before, continuing from its checkpoint")
    if ranks > 1:
        return _run_mpi(config_dict, ranks, progress, resume)
    if threads:
        _pin_threads(threads)
    from minitorch_cifar.train import train
    config = TrainConfig(**config_dict)
    summary = train(config, progress=progress, resume=resume, log=print if progress else (lambda *a: None))
    if resume and summary is not None:
        summary["resumed"] = True
        _write(Path(config.out) / "summary.json", summary)
    return summary


def _run_mpi(config_dict: dict, ranks: int, progress: bool, resume: bool = False) -> dict:
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        raise RuntimeError('--ranks needs mpiexec on PATH: pip install -e ".[mpi]"')
    out = Path(config_dict["out"])
    out.mkdir(parents=True, exist_ok=True)
    request = out / "request.json"
    request.write_text(json.dumps({**config_dict, "distributed": True}, indent=2))
    env = {**os.environ, **ONE_CORE_PER_RANK}
    started = time.time()
    argv = [mpiexec, "-n", str(ranks), "-bind-to", "core", sys.executable, "-m", "minitorch_cifar", "train", "--config-json", str(request)]
    code = subprocess.call(argv + ([] if progress else ["--no-progress"]) + (["--resume"] if resume else []), env=env)
    if code != 0 or not (out / "summary.json").is_file():
        raise RuntimeError(f"mpiexec -n {ranks} training exited with code {code}")
    summary = json.loads((out / "summary.json").read_text())
    if resume:  # this launch ran only the rest of it; train_seconds still counts every epoch
        summary["resumed"] = True
    else:
        summary["end_to_end_seconds"] = time.time() - started  # process start, imports and data loading included
    _write(out / "summary.json", summary)
    return summary


def run_minutes(summary: dict) -> float:
    """A run's time: end to end where it ran in one go, else (resumed) the sum of its epochs' training time."""
    if "end_to_end_seconds" in summary:
        return summary["end_to_end_seconds"] / 60
    return summary["train_seconds" if summary.get("resumed") else "wall_seconds"] / 60


class _Serial(cf.Executor):
    """Runs each submission at once in this process (the default: what a single machine wants)."""

    def submit(self, fn, *args, **kwargs):
        future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - reported per run, like a worker would
            future.set_exception(e)
        return future


def make_executor(jobs=1, scheduler=None):
    if scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise ValueError('--scheduler needs Dask: pip install -e ".[cluster]"') from None
        return Client(scheduler).get_executor(), 1
    if jobs <= 1:
        return _Serial(), 0
    return cf.ProcessPoolExecutor(jobs), max(1, (os.cpu_count() or 1) // jobs)


def _run_all(configs: list[TrainConfig], jobs, scheduler, progress, executor=None, ranks=1):
    own = executor is None
    if own:
        executor, threads = make_executor(jobs, scheduler)
    else:
        threads = 1
    futures = [executor.submit(run_one, dataclasses.asdict(c), threads, progress and jobs <= 1, ranks) for c in configs]
    results, failed = [], []
    for config, future in zip(configs, futures):
        try:
            results.append(future.result())
        except Exception as e:  # noqa: BLE001
            failed.append({"config": dataclasses.asdict(config), "error": f"{type(e).__name__}: {e}"})
            print(f"run {config.out} failed: {type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
            results.append(None)
    if own:
        executor.shutdown()
    return results, failed


def _write(path: Path, obj):
    from minitorch_cifar.train import _write_json
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, obj)


def run_seeds(config: TrainConfig, seeds, jobs=1, scheduler=None, progress=True, executor=None, ranks=1) -> dict:
    """Train the recipe once per seed; ``out/seeds.json`` (+ seeds.png) is rewritten as each run finishes
    when runs go one after another, so a queue stopped half way keeps what it measured."""
    out = Path(config.out)
    configs = [dataclasses.replace(config, seed=s, out=str(out / f"seed{s}")) for s in seeds]
    one_by_one = jobs <= 1 and scheduler is None and executor is None
    groups = ([[c] for c in configs] if one_by_one else [configs]) or [[]]
    results, failed = [], []
    for group in groups:
        r, f = _run_all(group, jobs, scheduler, progress, executor, ranks)
        results += r
        failed += f
        summary = _seed_summary(config, seeds[:len(results)], results, failed, ranks)
    return summary


def _seed_summary(config, seeds, results, failed, ranks):
    from minitorch_cifar import plots
    out = Path(config.out)
    done = [(s, r) for s, r in zip(seeds, results) if r is not None]
    accs = [r["test_accuracy"] for _, r in done]
    recipe = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("seed", "out")}
    summary = dict(
        test_accuracies=accs, seeds=[s for s, _ in done],
        mean=float(np.mean(accs)) if accs else None, std=float(np.std(accs)) if accs else None,
        min=float(np.min(accs)) if accs else None, max=float(np.max(accs)) if accs else None,
        minutes_per_run=float(np.mean([run_minutes(r) for _, r in done])) if done else None,
        ranks=ranks, recipe=recipe, data=done[0][1]["data"] if done else None, failed=failed,
        # seeds can accumulate over sessions, and sessions have run on different CPUs: say which ran them
        # (by model name and family numbers: "AMD EPYC" alone has been a Zen 3, a Zen 4 and a Zen 5)
        machines=list({(r["machine"]["cpu"], r["machine"].get("family")): r["machine"]
                       for _, r in done if r.get("machine")}.values()))
    _write(out / "seeds.json", summary)
    if accs:
        plots.spread(accs, [str(s) for s, _ in done], out / "seeds.png", title=f"{config.model}: test accuracy per seed")
    return summary


def _caster(annotation):
    """str -> value for a TrainConfig field typed e.g. 'float | None' ('none' gives None)."""
    kinds = [k.strip() for k in annotation.split("|")]  # train.py's annotations are strings (postponed)
    read = {"bool": lambda v: v.lower() in ("1", "true", "yes", "on"), "int": int, "float": float}.get(kinds[0], str)
    return (lambda v: None if v.lower() == "none" else read(v)) if "None" in kinds else read


def parse_grid(specs) -> dict:
    """['lr=0.05,0.1', 'batch_size=128,256'] -> {'lr': [0.05, 0.1], 'batch_size': [128, 256]}, typed as TrainConfig's fields."""
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    grid = {}
    for spec in specs:
        if "=" not in spec:
            raise ValueError(f"--grid takes option=v1,v2,..., got {spec!r}")
        name, values = spec.split("=", 1)
        name = name.strip().lstrip("-").replace("-", "_")
        if name not in types or name in ("out",):
            raise ValueError(f"--grid: {name!r} is not a train option")
        caster = _caster(types[name])
        try:
            grid[name] = [caster(v) for v in values.split(",") if v != ""]
        except ValueError:
            raise ValueError(f"--grid {name}: cannot read values {values!r}") from None
    return grid


def run_sweep(config: TrainConfig, grid: dict, jobs=1, scheduler=None, progress=True, executor=None, ranks=1) -> dict:
    from minitorch_cifar import plots
    out = Path(config.out)
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    names = [",".join(f"{k}={v}" for k, v in p.items()) for p in points]
    configs = [dataclasses.replace(config, **p, out=str(out / n)).validate() for p, n in zip(points, names)]
    results, failed = _run_all(configs, jobs, scheduler, progress, executor, ranks)
    rows = []
    for p, n, r in zip(points, names, results):
        if r is not None:
            rows.append(dict(**p, name=n, test_accuracy=r["test_accuracy"], best_val_accuracy=r["best_val_accuracy"],
                             final_train_accuracy=r["final_train_accuracy"], minutes=run_minutes(r)))
    header = list(grid) + ["test acc (%)", "best val acc (%)", "train acc (%)", "minutes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        val = "-" if r["best_val_accuracy"] is None else f"{r['best_val_accuracy']:.2f}"
        lines.append("| " + " | ".join(str(r[k]) for k in grid) +
                     f" | {r['test_accuracy']:.2f} | {val} | {r['final_train_accuracy']:.2f} | {r['minutes']:.1f} |")
    lines += [f"\nfailed: {Path(f['config']['out']).name}: {f['error'].splitlines()[0]}" for f in failed]
    markdown = "\n".join(lines)
    result = dict(grid=grid, rows=rows, failed=failed, markdown=markdown,
                  recipe={k: v for k, v in dataclasses.asdict(config).items() if k != "out"})
    _write(out / "sweep.json", result)
    (out / "sweep.md").write_text(markdown + "\n")
    if rows:
        plots.bars([r["name"] for r in rows], [r["test_accuracy"] for r in rows], out / "sweep.png",
                   title=f"{config.model}: test accuracy by {', '.join(grid)}" + (f" ({len(failed)} failed)" if failed else ""))
    return result
