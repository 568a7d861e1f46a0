"""The ablations' summary table (REPORT: "airbench's tricks taken out one at a time"): each experiment's seeds
against the reference recipe's, from their committed seeds.json, as markdown rows: the accuracies, their mean,
the difference from the reference's mean (also in units of its seed standard deviation) and from the
reference's run of the same seed (with two or more such pairs, also their mean and its standard error: the
paired comparison, which takes out what a seed does to both runs).

    python examples/13_ablations.py fast8-seeds fast8-no-lookahead fast8-no-dirac
"""
import argparse
import json
import statistics
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("reference", help="the experiment the others are compared with")
parser.add_argument("experiments", nargs="+")
parser.add_argument("--results", default=Path(__file__).resolve().parents[1] / "docs" / "results", type=Path)
args = parser.parse_args()


def seeds(name):
    s = json.loads((args.results / name / "seeds.json").read_text())
    return dict(zip(s["seeds"], s["test_accuracies"])), s["mean"], s["std"]


def two_places(x):  # 88.565 -> 88.57, as written by hand (the float is 88.56499...)
    return Decimal(str(x)).quantize(Decimal("0.01"), ROUND_HALF_UP)


ref, ref_mean, ref_std = seeds(args.reference)
spread = f" (std {ref_std:.2f})" if len(ref) > 1 else " (one seed: no std)"
print(f"| experiment | seeds | test accuracy | mean | against {args.reference}'s mean {ref_mean:.2f}{spread} "
      "| against the same seed |")
print("|---|---|---|---|---|---|")
for name in args.experiments:
    runs, mean, _ = seeds(name)
    diffs = [acc - ref[seed] for seed, acc in runs.items() if seed in ref]
    paired = ", ".join(f"{d:+.2f}" for d in diffs)
    if len(diffs) > 1:
        standard_error = statistics.stdev(diffs) / len(diffs) ** 0.5
        paired += f" (mean {two_places(statistics.fmean(diffs)):+}, s.e. {two_places(standard_error)})"
    in_stds = f" ({(mean - ref_mean) / ref_std:+.1f} std)" if len(ref) > 1 else ""
    print(f"| `{name}` | {' '.join(map(str, runs))} | {' / '.join(f'{a:.2f}' for a in runs.values())} | {two_places(mean)} "
          f"| {mean - ref_mean:+.2f}{in_stds} | {paired} |")
