"""Where a run's batch-norm scales ended (REPORT: "The BN scales frozen at 1, taken out"): mean, min and max of
each batch norm's scale in a checkpoint, beside what weight decay alone would leave of a scale that started at 1
(the product of 1 - lr x weight_decay over the run's schedule, the gradient left out). For a finished run.

    python examples/12_bn_scales.py runs/fast8-bn-scales/seed0/best.npz
"""
import argparse

import numpy as np

from minitorch_cifar import nn, optim
from minitorch_cifar.train import TrainConfig, model_from_checkpoint, schedule_options

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint")
args = parser.parse_args()

model, meta = model_from_checkpoint(args.checkpoint)
config = TrainConfig(**meta["config"])
for i, m in enumerate(model.modules()):
    if isinstance(m, nn.norm._BatchNorm):
        s = m.weight.data
        print(f"batch norm {i}: {len(s)} scales, mean {s.mean():.3f}, min {s.min():.3f}, max {s.max():.3f}")

steps = meta["schedule_position"]  # the steps taken: for a finished run, the schedule's length
factor = optim.SCHEDULES[config.schedule](steps, **schedule_options(config))
lrs = config.lr * np.array([factor(t) for t in range(steps)])
print(f"weight decay alone over {steps} steps: x{np.prod(1 - lrs * config.weight_decay):.2f}")
