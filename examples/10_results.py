"""Reproduce the results in docs/results/: each experiment is a list of `minitorch-cifar` commands; their
run folders go to runs/, and the small outputs (JSON, CSV, PNG; never checkpoints) are copied into
docs/results/<experiment>/ as each run finishes, so a long queue commits result by result; on a fresh checkout
the finished runs committed there are put back into runs/ first, so seeds and sweeps reuse them.

    python examples/10_results.py --list
    python examples/10_results.py simple crossval fast      # run these experiments in order
"""
import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = "../shared/data/cifar10-jpg.tar.gz"
SMALL = ("*.json", "*.csv", "*.png", "*.md")
POLL_SECONDS = 60  # how often a running command's finished runs are copied into docs/results

# The PyTorch baseline recipe (88.7% in torch on this machine), as is:
BASELINE = (f"train --data {DATA} --model fast --epochs 10 --batch-size 512 --lr 0.2 --momentum 0.9 --nesterov "
            f"--weight-decay 5e-4 --schedule onecycle --warmup 0.2 --label-smoothing 0.2 --augment crop,flip --padding 2 "
            f"--pad-mode reflect --tta 1 --val-size 0")
# airbench94's recipe (Keller Jordan, 2024) in this library's units: its loss is summed over the batch of
# 1024 and its lr 11.5 is per 1024*(1 + 1/(1 - momentum)) examples, so lr = 11.5 / 7851 * 1024 = 1.5 for a
# mean loss, weight decay 0.0153 * 1024 / 7851 / 1.5 = 0.00133, BN biases at 64x the lr.
FAST = (f"train --data {DATA} --model fast --epochs {{epochs}} --batch-size 1024 --lr 1.5 --momentum 0.85 --nesterov "
        f"--weight-decay 0.00133 --decay-bias-bn --bias-lr-scale 64 --schedule airbench --warmup 0.23 "
        f"--label-smoothing 0.2 --augment crop,altflip --padding 2 --pad-mode reflect --tta 2 --lookahead --dirac-init --val-size 0")


def fast_options(epochs):
    """FAST's options without the `train` subcommand, for `seeds`."""
    return FAST.format(epochs=epochs)[len("train "):]


def changed(options, old, new=""):
    """``options`` with ``old`` replaced by ``new``; an ablation whose ``old`` is not there would silently rerun the recipe."""
    if old not in options:
        raise ValueError(f"{old!r} is not in the options {options!r}")
    return options.replace(old, new)

def long_w2_options(epochs):
    """`fast` at width 2 with airbench96's augmentation (cutout 12, 4-pixel translations): the 2-hour recipes."""
    return (f"{changed(fast_options(epochs), '--augment crop,altflip --padding 2', '--augment crop,altflip,cutout --padding 4 --cutout-size 12')} "
            f"--width 2 --matmul-precision medium --bn-momentum 0.4 --whiten-bias-epochs 3 --sync-bn")


def long_w2_g3_options(epochs, precision="highest"):
    """The 2-hour recipe on airbench96's 3-conv groups: lr 1.0 (1.5 did not train them), float32 unless told."""
    options = changed(long_w2_options(epochs), '--lr 1.5', '--lr 1.0')
    return f"{changed(options, '--matmul-precision medium', f'--matmul-precision {precision}')} --group-convs 3"


# the `deeper` recipe: the baseline at batch 512 (lr 0.4) with alternating flips, TTA level 2, sync BN
DEEPER = (f"--data {DATA} --model deeper --epochs {{epochs}} --batch-size 512 --lr 0.4 --momentum 0.9 --nesterov "
          f"--weight-decay 5e-4 --schedule onecycle --warmup 0.2 --label-smoothing 0.2 --augment crop,altflip --padding 2 "
          f"--pad-mode reflect --tta 2 --val-size 0 --sync-bn")

EXPERIMENTS = {
    "simple": [f"train --data {DATA} --model simple --epochs 15 --batch-size 128 --lr 0.05 --augment crop,flip --out runs/simple-15ep"],
    # experiment 5's baseline half: `simple` over 5 seeds at a 5-epoch budget (all 50,000 images)
    "simple-seeds": [f"seeds --seeds 0 1 2 3 4 --data {DATA} --model simple --epochs 5 --batch-size 128 --lr 0.05 "
                     f"--augment crop,flip --val-size 0 --out runs/simple-seeds"],
    "crossval": [
        f"crossval --model simple --steps 40 --dtype float64 --data {DATA} --batch-size 64 --out runs/crossval-f64-simple",
        f"crossval --model fast --steps 30 --dtype float64 --data {DATA} --batch-size 32 --out runs/crossval-f64-fast",
        f"crossval --model simple --epochs 1 --dtype float32 --data {DATA} --batch-size 64 --lr 0.05 --out runs/crossval-f32-simple-1epoch",
    ],
    # float32 over five seeds, each with a torch control run (rows shuffled: only rounding differs)
    "crossval-f32-seeds": [
        f"crossval --model simple --epochs 1 --dtype float32 --data {DATA} --batch-size 64 --lr 0.05 --seed {seed} --control "
        f"--out runs/crossval-f32-control-seed{seed}" for seed in (0, 1, 2, 3, 4)]
        + ["crossval-summary 'runs/crossval-f32-control-seed*' --out runs/crossval-f32-control-summary"],
    # the control that rounds as minitorch does: torch with oneDNN off convolves by im2col + GEMM
    "crossval-f32-im2col": [
        f"crossval --model simple --epochs 1 --dtype float32 --data {DATA} --batch-size 64 --lr 0.05 --seed {seed} --control im2col "
        f"--out runs/crossval-f32-im2col-seed{seed}" for seed in range(10)]
        + ["crossval-summary 'runs/crossval-f32-im2col-seed*' --out runs/crossval-f32-im2col-summary"],
    "fast-baseline": [f"{BASELINE} --seed 0 --out runs/fast-baseline-seed0"],
    "fast": [f"{FAST.format(epochs=10)} --seed 0 --out runs/fast-10ep-seed0"],
    "fast-seeds": [f"seeds --seeds 0 1 2 3 4 {fast_options(10)} --out runs/fast-seeds"],
    # the main recipe within the 30-minute budget: 8 epochs, two single-threaded MPI ranks (1.2x one
    # two-threaded process here); seeds already finished in runs/fast8-seeds are reused
    "fast8-seeds": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(8)} --out runs/fast8-seeds"],
    # the reference's seed 0 again on the machine the ablations below ran on (AMD EPYC Zen 4, OpenBLAS), so the machine's
    # own share of their differences from fast8-seeds (Intel Xeon, MKL) is measured, not assumed; seeds 0-2 pair
    # with the ablations' three seeds, 3-4 give this machine's own 5-seed spread
    "fast8-seeds-zen4": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(8)} --out runs/fast8-seeds-zen4"],
    # airbench's own BN momentum (0.4 of each batch) and whitening bias frozen after 3 epochs, against fast8-seeds
    "fast8-airbench-bn": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(8)} --bn-momentum 0.4 "
                          f"--whiten-bias-epochs 3 --out runs/fast8-airbench-bn"],
    # airbench's tricks taken out of fast8-seeds one at a time (add seeds to --seeds to extend; finished ones are
    # reused): the Dirac init, lookahead, alternating flips (replaced by random flips), BN biases at 64x the lr, BN scales frozen
    "fast8-no-dirac": [f"seeds --seeds 0 1 2 --ranks 2 {changed(fast_options(8), ' --dirac-init')} "
                       f"--out runs/fast8-no-dirac"],
    "fast8-no-lookahead": [f"seeds --seeds 0 1 2 --ranks 2 {changed(fast_options(8), ' --lookahead')} "
                           f"--out runs/fast8-no-lookahead"],
    "fast8-flip": [f"seeds --seeds 0 1 2 --ranks 2 {changed(fast_options(8), 'crop,altflip', 'crop,flip')} "
                   f"--out runs/fast8-flip"],
    "fast8-bias-lr1": [f"seeds --seeds 0 1 2 --ranks 2 {changed(fast_options(8), ' --bias-lr-scale 64')} "
                       f"--out runs/fast8-bias-lr1"],
    "fast8-bn-scales": [f"seeds --seeds 0 1 2 --ranks 2 {fast_options(8)} --train-bn-scales --out runs/fast8-bn-scales"],
    # trained BN scales but exempt from weight decay: does the decay (which shrank them to 0.24-0.47) cost the accuracy?
    "fast8-bn-scales-no-decay": [f"seeds --seeds 0 1 2 --ranks 2 {fast_options(8)} --train-bn-scales --no-decay-bn-scales "
                                 f"--out runs/fast8-bn-scales-no-decay"],
    # the 2x2 stem from a random init, trained like the other convs, instead of the frozen patch whitening
    "fast8-no-whiten": [f"seeds --seeds 0 1 2 --ranks 2 {fast_options(8)} --no-whiten --out runs/fast8-no-whiten"],
    # hard targets: no label smoothing (the recipe's is 0.2, as airbench's)
    "fast8-no-ls": [f"seeds --seeds 0 1 2 --ranks 2 {changed(fast_options(8), ' --label-smoothing 0.2')} "
                    f"--out runs/fast8-no-ls"],
    # schedule shape: cosine decay to 0 after the same 23% linear warmup (from 0) instead of airbench's linear 0.2 -> 1 -> 0.07
    "fast8-cosine": [f"seeds --seeds 0 1 2 --ranks 2 {changed(fast_options(8), '--schedule airbench', '--schedule cosine')} "
                     f"--out runs/fast8-cosine"],
    # test-time augmentation's share: the three ablations' final weights (best.npz) without TTA and with mirroring only (their
    # summaries hold level 2). Needs those checkpoints in this checkout's runs/: run the three experiments first
    # (on a fresh checkout they are reused from their committed summaries, so delete runs/fast8-*/seed0 first)
    "fast8-ablation-tta": [f"evaluate runs/{run}/seed0/best.npz --data {DATA} --tta {level} --out runs/fast8-ablation-tta/{run}-tta{level}"
                           for run in ("fast8-no-dirac", "fast8-no-lookahead", "fast8-flip") for level in (0, 1)],
    # the same recipe with the convolutions' GEMMs on bfloat16 operands (Intel MKL's AMX GEMM), 8 epochs: same accuracy, less time?
    "fast8-bf16": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(8)} --matmul-precision medium "
                   f"--out runs/fast8-bf16"],
    # the 30-minute recipe since bfloat16 GEMMs: airbench's BN momentum and whitening-bias freeze (the frozen stem
    # then lets the first 3x3 conv skip its input gradient) and 11 epochs in the time 8 took in float32
    "fast11-bf16-seeds": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(11)} --matmul-precision medium "
                          f"--bn-momentum 0.4 --whiten-bias-epochs 3 --out runs/fast11-bf16-seeds"],
    # one epoch more than fast11-bf16-seeds: seed 0 gave 90.76% (90.84% at 11 epochs), 27.9 min; seeds 1-4 not run
    "fast12-bf16-seeds": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(12)} --matmul-precision medium "
                          f"--bn-momentum 0.4 --whiten-bias-epochs 3 --out runs/fast12-bf16-seeds"],
    # batch 512 instead of 1024 (twice the steps; lr 0.75 is airbench's same lr per example, weight decay unchanged)
    "fast11-bf16-b512": [f"seeds --seeds 0 1 2 3 4 --ranks 2 "
                         f"{changed(fast_options(11), '--batch-size 1024 --lr 1.5', '--batch-size 512 --lr 0.75')} "
                         f"--matmul-precision medium --bn-momentum 0.4 --whiten-bias-epochs 3 --out runs/fast11-bf16-b512"],
    # batch norm over the whole 1024-image batch (statistics reduced over both ranks), as airbench on one GPU:
    # 90.77, 90.58, 91.00, 91.02, 91.23 (mean 90.92%; per rank 90.81%) in 17.7-22.2 min a run with the Numba
    # sync BN (seed 0 first ran with the NumPy one: 91.02% in 32.6 min, kept as seed0-numpy-syncbn)
    "fast11-bf16-syncbn": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(11)} --matmul-precision medium "
                           f"--bn-momentum 0.4 --whiten-bias-epochs 3 --sync-bn --out runs/fast11-bf16-syncbn"],
    # a wider network (the groups' channel counts x1.25: about 1.5x the convolution work) for one epoch less: seed 0 gave
    # 91.00% (width 1, 11 epochs: 90.84%) in 23.5 min
    "fast10-bf16-w125": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(10)} --width 1.25 "
                         f"--matmul-precision medium --bn-momentum 0.4 --whiten-bias-epochs 3 --out runs/fast10-bf16-w125"],
    # both: the wider network with batch norm synchronised over the two ranks: seeds 0-1 gave 90.92, 90.78 in 25-27 min
    "fast10-bf16-w125-syncbn": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(10)} --width 1.25 "
                                f"--matmul-precision medium --bn-momentum 0.4 --whiten-bias-epochs 3 --sync-bn "
                                f"--out runs/fast10-bf16-w125-syncbn"],
    # the five-seed 90.92% of fast11-bf16-syncbn took 19.3 min a run: two more epochs in the budget; seed 0 gave
    # 90.80% (11 epochs: 90.77%) in 25.4 min, seeds 1-4 not run
    "fast13-bf16-syncbn": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(13)} --matmul-precision medium "
                           f"--bn-momentum 0.4 --whiten-bias-epochs 3 --sync-bn --out runs/fast13-bf16-syncbn"],
    # with the packed bfloat16 GEMMs the step is faster (session 9), so the 30-minute budget holds the wider
    # network (width 1.25, sync BN) for 11 epochs (the 10-epoch version gave 90.92, 90.78 in 25-27 min):
    # 91.35, 91.10, 91.25, 91.09, 91.37, mean 91.23% in 25.4 min a run; the main recipe since (docs/results/seeds.json)
    "fast11-bf16-w125-syncbn": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(11)} --width 1.25 "
                                f"--matmul-precision medium --bn-momentum 0.4 --whiten-bias-epochs 3 --sync-bn "
                                f"--out runs/fast11-bf16-w125-syncbn"],
    # fast11-bf16-syncbn's recipe with float32 GEMMs, for CPUs without AMX (where the bfloat16 GEMMs were
    # slower than float32): there the 3x3 layers run on the Winograd F(4x4, 3x3) kernels (kernels/cpu/conv.py).
    # Seeds 0-2 on an Ice Lake Xeon, 3-4 on an AMD EPYC Zen 5: 91.02, 90.57, 90.96, 90.86, 90.98, mean 90.88%
    "fast11-f32-syncbn": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(11)} --matmul-precision highest "
                          f"--bn-momentum 0.4 --whiten-bias-epochs 3 --sync-bn --out runs/fast11-f32-syncbn"],
    # the main recipe (fast11-bf16-w125-syncbn) with float32 GEMMs, for CPUs without AMX: does the 30-minute
    # target hold there? On a 2-core AMD EPYC Zen 5 (bfloat16 GEMMs 3x slower than float32 there): 91.09, 91.09,
    # 91.23, 91.01, 91.03, mean 91.09% in 22.6-24.3 min a run: yes
    "fast11-f32-w125-syncbn": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(11)} --width 1.25 "
                               f"--matmul-precision highest --bn-momentum 0.4 --whiten-bias-epochs 3 --sync-bn "
                               f"--out runs/fast11-f32-w125-syncbn"],
    # the same with this package's own AVX-512 GEMM (kernels/cpu/gemm.py; the runs above used NumPy's OpenBLAS,
    # auto's choice on that CPU then): the same recipe, faster on the Zen 5: 90.98, 91.14, 91.08, 91.24, 91.39, mean 91.17%
    # in 18.0-18.8 min a run (with OpenBLAS: 91.09% in 22.6-24.3 min)
    "fast11-f32-w125-syncbn-ours": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(11)} --width 1.25 "
                                    f"--matmul-precision highest --float-gemm numba --bn-momentum 0.4 "
                                    f"--whiten-bias-epochs 3 --sync-bn --out runs/fast11-f32-w125-syncbn-ours"],
    # does the hard-example selection (--select-keep 0.5, below) cost accuracy at the same epochs? The 30-minute
    # recipe as fast11-f32-w125-syncbn-ours (91.17% mean of 5 seeds, 18.0-18.8 min a run) with it, paired seeds:
    # seeds 0-1 gave 90.46, 90.14 (without: 90.98, 91.14) in 11.6 and 10.9 min; seeds 2-4 not run
    # the same recipe after the Winograd convolutions took a tile size per layer (2026-12-07): paired seeds
    # 91.36, 91.09, 91.39, 91.08, 91.37, mean 91.26% in 16.1 min a run (14.9-17.6; Zen 5)
    "fast11-f32-w125-tiles": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(11)} --width 1.25 "
                              f"--matmul-precision highest --float-gemm numba --bn-momentum 0.4 "
                              f"--whiten-bias-epochs 3 --sync-bn --out runs/fast11-f32-w125-tiles"],
    # the same with airbench96's groups (--group-convs 3), equal epochs: does the third conv a group learn more
    # per epoch on this data, and what does it cost in minutes? Paired with the seeds above. Seed 0 (Zen 5, alone):
    # 91.43% in 19.4 min (two convs: 91.36 in 17.6, on a slower day); seeds 1-4 not run. lr 1.0, not 1.5:
    # airbench96 lowers it too, and in 3 epochs on 10,240 images 1.5 did not train at width 2 (18.56%,
    # long-w2-g3-speed) and trailed 0.75 at width 1 (49.90% against 57.46%; the two-conv groups: 57.85, 56.03)
    "fast11-f32-w125-tiles-g3": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {changed(fast_options(11), '--lr 1.5', '--lr 1.0')} --width 1.25 "
                                 f"--matmul-precision highest --float-gemm numba --bn-momentum 0.4 "
                                 f"--whiten-bias-epochs 3 --sync-bn --group-convs 3 --out runs/fast11-f32-w125-tiles-g3"],
    "fast11-f32-w125-select": [f"seeds --seeds 0 1 2 3 4 --ranks 2 {fast_options(11)} --width 1.25 "
                               f"--matmul-precision highest --float-gemm numba --bn-momentum 0.4 "
                               f"--whiten-bias-epochs 3 --sync-bn --select-keep 0.5 --out runs/fast11-f32-w125-select"],
    # the 2-hour target (experiment: best accuracy with any recipe of at most 2 hours a run): airbench95's shape
    # of change over airbench94 (wider groups, more epochs; here width 1.5 = 96/384/384 and 18 epochs), the
    # rest of the 30-minute recipe unchanged
    "long-w15-e18": [f"seeds --seeds 0 1 --ranks 2 {fast_options(18)} --width 1.5 "
                     f"--matmul-precision medium --bn-momentum 0.4 --whiten-bias-epochs 3 --sync-bn --out runs/long-w15-e18"],
    # the next step towards 93%: airbench96's augmentation (12-pixel cutout, 4-pixel translations) on the wider
    # network for 24 epochs: 92.21, 92.20 (mean 92.21%; long-w15-e18: 92.02%) in 67.1 and 63.1 min
    "long-w15-e24-cutout": [f"seeds --seeds 0 1 --ranks 2 "
                            f"{changed(fast_options(24), '--augment crop,altflip --padding 2', '--augment crop,altflip,cutout --padding 4 --cutout-size 12')} "
                            f"--width 1.5 --matmul-precision medium --bn-momentum 0.4 --whiten-bias-epochs 3 --sync-bn "
                            f"--out runs/long-w15-e24-cutout"],
    # width 2 (groups of 128/512/512, airbench95's first group) with the cutout augmentation, 20 epochs so that
    # a run stays inside the 2-hour budget (about 1.8x long-w15-e24-cutout's convolution work per epoch).
    # 92.08, 92.42 (mean 92.25%) in 56.0 and 53.4 min on the Intel Xeon with AMX (an AVX2-only AMD EPYC had
    # not finished one epoch in 16 minutes)
    "long-w2-e20-cutout": [f"seeds --seeds 0 1 --ranks 2 {long_w2_options(20)} --out runs/long-w2-e20-cutout"],
    # the same network trained twice as long (its train accuracy was still 95.6% at the end of 20 epochs): one
    # run of ~110 minutes on the Xeon with AMX, inside the 2-hour budget as a single network
    "long-w2-e40-cutout": [f"seeds --seeds 0 1 --ranks 2 {long_w2_options(40)} --out runs/long-w2-e40-cutout"],
    # the same recipe in float32 on a CPU without AMX (our AVX-512 GEMM, auto's choice on the AMD EPYC Zen 5):
    # seed 2, a third seed of the 2-hour recipe and its time measured there rather than estimated: 93.12% in
    # 148.2 min (shared cores); seed 3 (2026-12-07, alone on the machine): 92.58% in 127.2 min
    "long-w2-e40-cutout-f32": [f"seeds --seeds 2 3 --ranks 2 "
                               f"{changed(long_w2_options(40), '--matmul-precision medium', '--matmul-precision highest')} "
                               f"--out runs/long-w2-e40-cutout-f32"],
    # the same recipe after the Winograd convolutions took a tile size per layer (2026-12-07): does the 2-hour
    # budget hold, measured rather than estimated from the 1.20x faster step? New seeds, so that the recipe's
    # accuracy gathers more samples. Seed 4 (Zen 5, alone on the machine): 92.93% in 102.7 min of training, 104.3
    # end to end (seed 3 on the old kernels: 125.5, 127.2): yes. Seed 5 (next session, alone): 92.52% in 95.8 min
    "long-w2-e40-cutout-tiles": [f"seeds --seeds 4 5 --ranks 2 "
                                 f"{changed(long_w2_options(40), '--matmul-precision medium', '--matmul-precision highest')} "
                                 f"--out runs/long-w2-e40-cutout-tiles"],
    # the 2-hour recipe on airbench96's groups (--group-convs 3, lr 1.0 as fast11-f32-w125-tiles-g3): a 3-conv
    # epoch costs 1.37x a 2-conv one at width 2 (long-w2-g3-speed), so 32 epochs take about 106-115 min on the Zen 5
    # at the 2-conv recipe's 2.36-2.57 min an epoch (airbench96 trains 31). Seed 0 (2026-12-07, Zen 5, alone on
    # the machine): 93.33% in 112.1 min end to end (epochs 200-216 s, median 206). Seed 1: stopped at epoch 15 by
    # that session's end; the next session's machine was the AMX Xeon, without the checkpoint, where float32 ran at
    # 130 images/s (about 200 min for 32 epochs), so there it runs in bfloat16 (long-w2-e32-cutout-g3-bf16)
    "long-w2-e32-cutout-g3": [f"seeds --seeds 0 1 --ranks 2 "
                              f"{long_w2_g3_options(32)} --out runs/long-w2-e32-cutout-g3"],
    # the same recipe in bfloat16 on AMX, for a machine where float32 cannot hold it: on the 2-core Xeon with AMX
    # (2026-12-07) a 3-conv width-2 epoch ran at 117 images/s with our float32 GEMM, 140 with MKL's and 192 in
    # bfloat16 (long-w2-g3-speed-xeon), so 32 epochs take about 190 min in float32 there and about 140 in bfloat16.
    # Seed 1 (2026-12-07, Xeon): 93.42% in 126.0 min end to end (122.0 without a 236 s pause for the test suite;
    # full epochs at 219 images/s): with seed 0 a mean of 93.38%, but 2 min over the 2 hours
    "long-w2-e32-cutout-g3-bf16": [f"seeds --seeds 1 --ranks 2 {long_w2_g3_options(32, 'medium')} "
                                   f"--out runs/long-w2-e32-cutout-g3-bf16"],
    # the bfloat16 3-conv recipe cut to 30 epochs so that it fits the 2 hours on the AMX Xeon: at seed 1's 225 s
    # an epoch (32 epochs: 122 min without the pause) plus 2 min for loading and the TTA evaluation, about 115 min.
    # Its own seeds, one per session. Seed 0 (2026-12-07, Xeon, alone on the machine): 93.18% in 114.5 min end to
    # end (epochs 218-236 s, median 224; 112.3 min of training). Seed 1 (2026-12-07, same Xeon, alone on it, a slower
    # day for the shared host): 93.37% in 131.9 min end to end (epochs 244-273 s, median 259; 190 images/s against
    # 219): a mean of 93.28%, but seed 1 over the 2 hours
    "long-w2-e30-cutout-g3-bf16": [f"seeds --seeds 0 1 --ranks 2 {long_w2_g3_options(30, 'medium')} "
                                   f"--out runs/long-w2-e30-cutout-g3-bf16"],
    # cut again to 22 epochs, so that 2 hours hold even the slow days of the shared host: the fifteenth session's
    # epochs took 280-289 s (a 30-epoch seed 2 and a 24-epoch seed 0, both stopped after two epochs), and 22 x 289 s
    # + 2.6 min of loading and evaluation is about 109 min. By 0.42 points per doubling of epochs (the 2-conv
    # recipe's rate, above), 30 -> 22 costs about 0.19 points: about 93.1% expected from the 30-epoch seeds' 93.28
    # Seeds 0-1 (2026-12-08, Xeon, alone on it): 93.04% in 98.8 min and 92.92% in 92.8 min end to end (epochs 250-286
    # and 236-270 s): both inside 2 hours, mean 92.98%, 0.02 points short; -0.14 and -0.45 against the 30-epoch seeds
    "long-w2-e22-cutout-g3-bf16": [f"seeds --seeds 0 1 --ranks 2 {long_w2_g3_options(22, 'medium')} "
                                   f"--out runs/long-w2-e22-cutout-g3-bf16"],
    # airbench96_faster's hard-example selection (--select-keep 0.5: a 32/64/64 proxy scores each batch and the
    # network trains on the hardest half, at the same lr per example), so that the 2-hour budget holds 60 epochs,
    # not 40. Seed 0 trained at 443 images/s against 262 for long-w2-e40-cutout-f32's seed 3 (1.69x; Zen 5).
    # Seed 0: 92.54% in 115.9 min (443 images/s), below all four 40-epoch seeds without selection; seed 1 not run
    "long-w2-e60-select": [f"seeds --seeds 0 1 --ranks 2 "
                           f"{changed(long_w2_options(60), '--matmul-precision medium', '--matmul-precision highest')} "
                           f"--select-keep 0.5 --out runs/long-w2-e60-select"],
    # how fast width 2 trains in float32 where there is no AMX (2 epochs on 10,240 images, not a run of the recipe):
    # 152 and 167 images/s on the AMD EPYC Zen 5, so long-w2-e40-cutout would take about 200 min there
    # (NumPy's OpenBLAS GEMMs, auto's choice there until kernels/cpu/gemm.py; pinned here to keep the figure's meaning)
    "long-w2-f32-speed": [f"seeds --seeds 0 --ranks 2 "
                          f"{changed(long_w2_options(2), '--matmul-precision medium', '--matmul-precision highest')} "
                          f"--float-gemm openblas --train-subset 10240 --out runs/long-w2-f32-speed"],
    # the same with this package's own AVX-512 GEMM (kernels/cpu/gemm.py), auto's choice on the Zen 5 since
    "long-w2-f32-speed-ours": [f"seeds --seeds 0 --ranks 2 "
                               f"{changed(long_w2_options(2), '--matmul-precision medium', '--matmul-precision highest')} "
                               f"--float-gemm numba --train-subset 10240 --out runs/long-w2-f32-speed-ours"],
    # the same 2 epochs after the Winograd convolutions took a tile size per layer (F(m x m, 3x3), m = 4/5/7/3 on
    # fast's 31/15/7/3-pixel layers, 2026-12-07; before: F(4x4, 3x3) everywhere)
    "long-w2-f32-speed-tiles": [f"seeds --seeds 0 --ranks 2 "
                                f"{changed(long_w2_options(2), '--matmul-precision medium', '--matmul-precision highest')} "
                                f"--float-gemm numba --train-subset 10240 --out runs/long-w2-f32-speed-tiles"],
    # airbench96's groups (--group-convs 3: a third conv a group, a residual over the last two) against the two-conv
    # groups, back to back in one command, 3 epochs on 10,240 images each: what a 3-conv epoch costs at width 2, so
    # how many epochs of it the 2-hour budget holds (airbench96 trains it 31 epochs, the 2-conv recipe here 40)
    "long-w2-g3-speed": [f"seeds --seeds 0 --ranks 2 "
                         f"{changed(long_w2_options(3), '--matmul-precision medium', '--matmul-precision highest')} "
                         f"--float-gemm numba --train-subset 10240{extra} --out runs/long-w2-g3-speed/{name}"
                         for extra, name in (("", "two-convs"), (" --group-convs 3", "three-convs"))],
    # why seed 1 of long-w2-e32-cutout-g3 did not run in float32 on the 2-core Xeon with AMX (2026-12-07): 2 epochs
    # on 6,144 images of the 3-conv recipe, no TTA, by GEMM; second epochs: our float32 GEMM 117 images/s, MKL's
    # float32 140, bfloat16 on AMX 192 (against 239 in float32 for seed 0's full epochs on the Zen 5)
    "long-w2-g3-speed-xeon": [f"seeds --seeds 0 --ranks 2 "
                              f"{changed(long_w2_g3_options(2, precision), '--tta 2', '--tta 0')} "
                              f"--train-subset 6144 --float-gemm {gemm} --out runs/long-w2-g3-speed-xeon/{precision}-{gemm}"
                              for precision, gemm in (("highest", "numba"), ("highest", "mkl"), ("medium", "auto"))],
    # does --group-convs 3 want a lower lr? The 2026-12-07 probe: 3 epochs on 10,240 images at width 1, one process,
    # no TTA, lr 1.5 and 0.75 for each group depth: 57.85 / 56.03% with two convs, 49.90 / 57.46% with three
    "g3-lr-probe": [f"train {changed(changed(fast_options(3), '--lr 1.5', f'--lr {lr}'), '--tta 2', '--tta 0')} "
                    f"--matmul-precision highest --float-gemm numba --bn-momentum 0.4 --whiten-bias-epochs 3 "
                    f"--train-subset 10240 --group-convs {g} --out runs/g3-lr-probe/g{g}-lr{lr}"
                    for g in (2, 3) for lr in (1.5, 0.75)],
    # two of those runs as one classifier (the mean of their TTA logits; needs both runs' best.npz): a recipe of
    # two 55-minute runs one after the other, inside the 2-hour budget
    "long-w2-e20-ensemble": [f"evaluate runs/long-w2-e20-cutout/seed0/best.npz runs/long-w2-e20-cutout/seed1/best.npz "
                             f"--data {DATA} --tta 2 --out runs/long-w2-e20-ensemble/seeds01"],
    # the `deeper` target (>= 90%, no time limit): the VGG-style network with the PyTorch baseline
    # recipe at batch 512 (lr 0.4, onecycle, label smoothing) plus alternating flips, TTA level 2, sync BN.
    # Seed 0: 86.81% (AMD EPYC, 89 min of training; 87.5% train accuracy at the end: too few epochs)
    "deeper-e12": [f"seeds --seeds 0 1 --ranks 2 {DEEPER.format(epochs=12)} --out runs/deeper-e12"],
    # the same recipe for 30 epochs (the one change: deeper-e12 underfit): seed 0 gave 90.17% in 228 min of
    # training on the AMD EPYC, over two sessions (rerunning this command in the same checkout continues a seed
    # from its checkpoint). The evaluations need seed 0's checkpoint: on a fresh checkout seed 0 is reused from
    # its committed summary and they fail for want of it; delete runs/deeper-e30/seed0 to train it again first.
    # The evaluations give the same weights' test accuracy without TTA, with mirroring, and with mirror and shifts.
    "deeper-e30": [f"seeds --seeds 0 --ranks 2 {DEEPER.format(epochs=30)} --out runs/deeper-e30",
                   *(f"evaluate runs/deeper-e30/seed0/checkpoint.npz --data {DATA} --tta {level} "
                     f"--out runs/deeper-e30/evaluate-tta{level}" for level in (0, 1, 2))],
    # two of `fast`'s tricks on deeper-e12's recipe, the network unchanged: lookahead (an EMA of the weights) and
    # Dirac init (each 3x3 conv starts as partly the identity); seed 0: 85.28% against deeper-e12's 86.81%
    "deeper-e12-tricks": [f"seeds --seeds 0 1 --ranks 2 {DEEPER.format(epochs=12)} --lookahead --dirac-init "
                          f"--out runs/deeper-e12-tricks"],
    # the Dirac init alone, to tell which of the two costs the accuracy: seed 0 85.37%, so the Dirac init
    "deeper-e12-dirac": [f"seeds --seeds 0 1 --ranks 2 {DEEPER.format(epochs=12)} --dirac-init --out runs/deeper-e12-dirac"],
    "architectures": [f"sweep --grid model=simple,deeper,resnet,fast --data {DATA} --epochs 2 --train-subset 10000 "
                      f"--batch-size 128 --lr 0.05 --augment crop,flip --out runs/architectures"],
    "activations": [f"sweep --grid activation=relu,leaky_relu,elu,gelu,tanh --data {DATA} --model simple --bn --epochs 3 "
                    f"--train-subset 20000 --batch-size 128 --lr 0.05 --augment crop,flip --out runs/activations"],
    # experiment 4 on `simple` with 10,000 training images, so that a sweep takes minutes: lr and batch size
    # at 3 epochs, the number of epochs at lr 0.05 (onecycle: each run anneals to 0 at its own end)
    "hyperparameters": [
        f"sweep --grid {grid} --data {DATA} --model simple --train-subset 10000 --batch-size 128 --lr 0.05 "
        f"--epochs 3 --augment crop,flip --out runs/hyper-{name}"
        for name, grid in (("lr", "lr=0.01,0.02,0.05,0.1,0.2,0.4"), ("batch", "batch_size=32,64,128,256,512"),
                           ("epochs", "epochs=1,2,4,8"))],
    # regularisation on 10,000 training images, so that overfitting shows within minutes
    "regularisation": [
        f"train --data {DATA} --model simple --epochs 12 --train-subset 10000 --batch-size 128 --lr 0.05 {flags} --out runs/reg/{name}"
        for name, flags in (("none", "--augment none --dropout 0 --no-bn"), ("dropout", "--augment none --dropout 0.5 --no-bn"),
                            ("batchnorm", "--augment none --dropout 0 --bn"), ("augmentation", "--augment crop,flip --dropout 0 --no-bn"),
                            ("all", "--augment crop,flip --dropout 0.5 --bn"))],
}


def results_folder(experiment: str, run_dir: Path) -> Path:
    """Where a run's small outputs go: docs/results/<experiment>/<run folder>/, or docs/results/<experiment>/
    itself for a run folder named as the experiment (a seeds or sweep command that is the whole experiment)."""
    folder = ROOT / "docs" / "results" / experiment
    return folder if run_dir.name == experiment else folder / run_dir.name


def copy_small(run_dir: Path, dest: Path):
    dest.mkdir(parents=True, exist_ok=True)
    for pattern in SMALL:
        for f in run_dir.rglob(pattern):
            target = dest / f.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)


def copy_finished(run_dir: Path, dest: Path):
    """Copy what has finished so far under a command's run folder: each run with a summary.json, and a seeds or
    sweep folder's own summaries (rewritten after each run). Called while a long command runs, so that seed 0
    of a multi-hour seeds command lands in docs/results when it ends, not when the last seed does."""
    if not run_dir.is_dir():
        return
    for summary in run_dir.rglob("summary.json"):
        copy_small(summary.parent, dest / summary.parent.relative_to(run_dir))
    if not (run_dir / "config.json").exists():  # a run's own folder has config.json from its start: not finished
        for pattern in SMALL:
            for f in run_dir.glob(pattern):
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest / f.name)


def restore_finished(dest: Path, run_dir: Path):
    """Put the committed outputs of each finished run (a folder with summary.json) under dest back into
    run_dir where it lacks them: a fresh checkout has no runs/, and seeds and sweeps reuse a finished run
    only from its run folder. Without this, a 5-seed result could not accumulate over sessions on new
    checkouts. Checkpoints are never committed, so a run stopped part-way still starts over."""
    for summary in dest.rglob("summary.json"):
        folder = run_dir / summary.parent.relative_to(dest)
        if (folder / "summary.json").exists():
            continue
        copy_small(summary.parent, folder)
        print(f"restored {folder} from {summary.parent}", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("experiments", nargs="*")
    p.add_argument("--list", action="store_true")
    args = p.parse_args()
    if args.list or not args.experiments:
        for name, commands in EXPERIMENTS.items():
            print(f"{name}:")
            for c in commands:
                print(f"    minitorch-cifar {c}")
        return 0
    for name in args.experiments:
        for command in EXPERIMENTS[name]:
            argv = shlex.split(command)
            out = Path(argv[argv.index("--out") + 1])
            print(f"$ minitorch-cifar {command}", flush=True)
            dest = results_folder(name, out)
            if argv[0] in ("seeds", "sweep"):
                restore_finished(dest, ROOT / out)
            dest.mkdir(parents=True, exist_ok=True)
            (dest / "command.txt").write_text(f"minitorch-cifar {command}\n")
            process = subprocess.Popen([sys.executable, "-m", "minitorch_cifar", *argv, "--no-progress"]
                                       if argv[0] in ("train", "seeds", "sweep") else [sys.executable, "-m", "minitorch_cifar", *argv], cwd=ROOT)
            while True:
                try:
                    code = process.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    copy_finished(ROOT / out, dest)
            copy_small(ROOT / out, dest)
            print(f"exit {code}; copied {out} -> {dest.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
