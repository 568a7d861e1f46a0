"""What the 2-hour target would cost (REPORT: "What stands between the recipes and 93%"): every committed
experiment of the `fast` network as a point, its mean test accuracy against its minutes a run, on a log2 time
axis, with the issue's targets marked; and, for two experiments whose recipes differ only in their epochs, the
accuracy gained per doubling of the time a run takes and the minutes that rate would need to reach a target.
That last figure is an extrapolation from two points, not a measurement: say so wherever it is quoted.
With --pool, the seeds of one recipe that ran under several experiment names (on other machines or
kernels: only the arithmetic differs) are pooled into one mean, and the rate is applied to that mean at the
speed of the last experiment named.

    python examples/14_budget.py long-w2-e20-cutout long-w2-e40-cutout --target 93 \
        --pool long-w2-e40-cutout long-w2-e40-cutout-f32 long-w2-e40-cutout-tiles

Writes docs/results/budget.json and budget.png; prints the table of points.
"""
import argparse
import dataclasses
import json
import math
import statistics
from pathlib import Path

from minitorch_cifar import plots
from minitorch_cifar.train import TrainConfig

TARGETS = ((30, 91), (120, 93))  # the issue's: `fast` >= 91% in <= 30 min a run, any recipe >= 93% in <= 2 h
ARITHMETIC = {"matmul_precision", "float_gemm"}  # how the sums are computed, not what is trained
SELECTION = {"select_keep", "proxy_widths", "proxy_every"}  # the proxy's settings are read only when select_keep < 1
# a recipe recorded before an option existed ran what the option's default does (new options default to the old way)
OPTION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def fast_experiments(results: Path) -> dict:
    """{experiment: its seeds.json} for each folder of results holding one for the `fast` network trained on
    the whole training set (the speed measurements on a subset are not runs of a recipe; the top-level
    seeds.json repeats the 30-minute recipe's, so it is not read)."""
    found = {}
    for f in sorted(results.glob("*/seeds.json")):
        s = json.loads(f.read_text())
        if s["recipe"]["model"] == "fast" and s.get("minutes_per_run") and not s["recipe"].get("train_subset"):
            found[f.parent.name] = s
    return found


def per_doubling(shorter: dict, longer: dict, target: float):
    """Accuracy gained per doubling of the minutes a run takes, from the seeds both experiments ran (so a
    seed's own luck counts on both sides), and the minutes that rate would need to reach target."""
    changed = {k for k in shorter["recipe"].keys() | longer["recipe"].keys()
               if shorter["recipe"].get(k) != longer["recipe"].get(k)}
    if changed != {"epochs"}:
        raise SystemExit(f"the two recipes must differ in their epochs only; they differ in {sorted(changed)}")
    a, b = (dict(zip(s["seeds"], s["test_accuracies"])) for s in (shorter, longer))
    common = sorted(a.keys() & b.keys())
    if not common:
        raise SystemExit("the two experiments have no seed in common")
    mean_a, mean_b = (statistics.fmean(x[s] for s in common) for x in (a, b))
    gain = (mean_b - mean_a) / math.log2(longer["minutes_per_run"] / shorter["minutes_per_run"])
    minutes = minutes_to(target, mean_b, longer["minutes_per_run"], gain) if gain > 0 else math.inf
    return {"seeds": common, "shorter_mean": mean_a, "longer_mean": mean_b, "gain_per_doubling": gain,
            "target": target, "minutes_to_target": minutes}


def minutes_to(target: float, mean: float, minutes: float, gain: float) -> float:
    """The minutes a run at `minutes` reaching `mean` would need for `target`, at `gain` points per doubling."""
    return minutes * 2 ** ((target - mean) / gain)


def what_is_trained(recipe: dict) -> dict:
    """The recipe, with the options it does not record at their defaults, without the settings that change
    only the arithmetic or that are switched off."""
    trained = {k: v for k, v in {**OPTION_DEFAULTS, **recipe}.items() if k not in ARITHMETIC}
    if trained["select_keep"] == 1.0:
        trained = {k: v for k, v in trained.items() if k not in SELECTION}
    return trained


def pool(experiments: dict, names: list) -> dict:
    """One recipe's seeds gathered from the experiments it ran under. The std is the population std, as in
    each seeds.json; a seed met twice or a recipe that trains something else is refused."""
    first = what_is_trained(experiments[names[0]]["recipe"])
    by_seed = {}
    for name in names:
        s = experiments[name]
        other = what_is_trained(s["recipe"])
        changed = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        if changed:
            raise SystemExit(f"{name} trains another recipe than {names[0]}: they differ in {changed}")
        for seed, accuracy in zip(s["seeds"], s["test_accuracies"]):
            if seed in by_seed:
                raise SystemExit(f"seed {seed} is in more than one of {names}")
            by_seed[seed] = (accuracy, name)
    seeds = sorted(by_seed)
    accuracies = [by_seed[seed][0] for seed in seeds]
    return {"experiments": names, "seeds": seeds, "test_accuracies": accuracies,
            "from": [by_seed[seed][1] for seed in seeds], "mean": statistics.fmean(accuracies),
            "std": statistics.pstdev(accuracies), "min": min(accuracies), "max": max(accuracies),
            "minutes_per_run": experiments[names[-1]]["minutes_per_run"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shorter", nargs="?", help="with longer: two experiments whose recipes differ only in epochs")
    p.add_argument("longer", nargs="?")
    p.add_argument("--target", type=float, default=93.0)
    p.add_argument("--pool", nargs="+", metavar="EXPERIMENT",
                   help="experiments that ran one recipe: pool their seeds; minutes a run from the last named")
    p.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "results")
    args = p.parse_args(argv)
    experiments = fast_experiments(args.results)
    points = [{"name": name, "minutes": s["minutes_per_run"], "mean": s["mean"], "min": s["min"], "max": s["max"],
               "seeds": len(s["test_accuracies"]), "width": s["recipe"].get("width", 1.0), "epochs": s["recipe"]["epochs"]}
              for name, s in experiments.items()]
    for q in points:  # the frontier: nothing else is both as fast and more accurate
        q["named"] = not any(o["minutes"] <= q["minutes"] and o["mean"] > q["mean"] for o in points)
    print("| experiment | width | epochs | seeds | mean test accuracy | minutes a run | on the frontier |\n"
          "|---|---|---|---|---|---|---|")
    for q in sorted(points, key=lambda q: q["minutes"]):
        print(f"| `{q['name']}` | {q['width']:g} | {q['epochs']} | {q['seeds']} | {q['mean']:.2f}% | {q['minutes']:.1f} "
              f"| {'yes' if q['named'] else ''} |")
    summary = {"points": points, "targets": TARGETS, "data": sorted({s["data"] for s in experiments.values()})}
    line = None
    if args.shorter and args.longer:
        fit = per_doubling(experiments[args.shorter], experiments[args.longer], args.target)
        summary["extrapolation"] = {"shorter": args.shorter, "longer": args.longer, **fit}
        print(f"\n{args.shorter} -> {args.longer} (seeds {fit['seeds']}): {fit['shorter_mean']:.2f}% -> "
              f"{fit['longer_mean']:.2f}%, {fit['gain_per_doubling']:+.2f} points per doubling of the minutes; "
              f"{args.target:g}% would need about {fit['minutes_to_target']:.0f} min a run (extrapolated)")
        if math.isfinite(fit["minutes_to_target"]):
            line = ((experiments[args.longer]["minutes_per_run"], fit["longer_mean"]), (fit["minutes_to_target"], args.target))
    if args.pool:
        pooled = summary["pooled"] = pool(experiments, args.pool)
        print(f"\npooled {', '.join(args.pool)}: seeds {pooled['seeds']}, {pooled['test_accuracies']}: mean "
              f"{pooled['mean']:.2f}% (std {pooled['std']:.2f}, min {pooled['min']:.2f}, max {pooled['max']:.2f})")
        if "extrapolation" in summary and summary["extrapolation"]["gain_per_doubling"] > 0:
            gain = summary["extrapolation"]["gain_per_doubling"]
            pooled["minutes_to_target"] = minutes_to(args.target, pooled["mean"], pooled["minutes_per_run"], gain)
            print(f"at {pooled['minutes_per_run']:.1f} min a run ({args.pool[-1]}) and {gain:+.2f} points per doubling, "
                  f"{args.target:g}% would need about {pooled['minutes_to_target']:.0f} min a run (extrapolated)")
    (args.results / "budget.json").write_text(json.dumps(summary, indent=2) + "\n")
    plots.budget(points, args.results / "budget.png", TARGETS, line)
    print(f"wrote {args.results / 'budget.json'} and budget.png")
    return summary


if __name__ == "__main__":
    main()
