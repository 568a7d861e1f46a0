"""Stochastic gradient descent and learning-rate schedules, with torch's update rule.

For each parameter p with gradient g, weight decay wd, momentum m and velocity buffer v (zero at
first):

    g = g + wd * p           (L2 weight decay, folded into the gradient)
    v = m * v + g
    p = p - lr * (g + m * v)  with Nesterov,  p - lr * v  without

Parameters can be split into groups with their own lr / weight_decay (e.g. no decay on biases and
batch-norm parameters) by passing a list of dicts, as in torch.
"""
from __future__ import annotations

import math

from minitorch_cifar import backend


class SGD:
    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum and weight_decay must be >= 0 (got {lr}, {momentum}, {weight_decay})")
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        self.param_groups = [{**defaults, **g, "params": list(g["params"])} for g in groups]
        for g in self.param_groups:
            g.setdefault("base_lr", g["lr"])
        self.velocity = [[None] * len(g["params"]) for g in self.param_groups]

    def zero_grad(self):
        for g in self.param_groups:
            for p in g["params"]:
                p.grad[...] = 0

    def set_lr_factor(self, factor):
        for g in self.param_groups:
            g["lr"] = g["base_lr"] * factor

    def step(self):
        for g, velocities in zip(self.param_groups, self.velocity):
            lr, m, wd = g["lr"], g["momentum"], g["weight_decay"]
            for i, p in enumerate(g["params"]):
                if not getattr(p, "requires_grad", True):
                    continue
                grad = p.grad + wd * p.data if wd else p.grad
                if m:
                    v = velocities[i]
                    if v is None:
                        v = velocities[i] = backend.array_module(p.data).zeros_like(p.data)
                    v *= m
                    v += grad
                    grad = grad + m * v if g["nesterov"] else v
                p.data -= lr * grad

    def state_dict(self):
        return {
            "lr": [g["lr"] for g in self.param_groups],
            "velocity": [[None if v is None else backend.to_numpy(v).copy() for v in vs] for vs in self.velocity],
        }

    def load_state_dict(self, state):
        sizes, saved = [len(g["params"]) for g in self.param_groups], [len(vs) for vs in state["velocity"]]
        if sizes != saved:
            raise ValueError(f"optimizer state for parameter groups of sizes {saved}, this optimizer's are {sizes} "
                             "(saved by a version that grouped the parameters otherwise?)")
        for g, lr in zip(self.param_groups, state["lr"]):
            g["lr"] = lr
        self.velocity = [[None if v is None else backend.asarray(v) for v in vs] for vs in state["velocity"]]


# ------------------------------------------------------------------------- schedules
# A schedule maps the step number (0-based, counted in optimizer steps) to a factor on each group's
# base lr; ``Schedule.step()`` is called once per optimizer step.
def constant(total_steps):
    return lambda step: 1.0


def step_decay(total_steps, milestones=(0.5, 0.75), gamma=0.1):
    """Multiply by gamma at each milestone (given as fractions of the run)."""
    marks = [int(f * total_steps) for f in milestones]
    return lambda step: gamma ** sum(step >= m for m in marks)


def cosine(total_steps, warmup=0.0):
    warm = int(warmup * total_steps)

    def factor(step):
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))
    return factor


def warmup_linear(total_steps, warmup=0.2):
    """Linear rise over the first ``warmup`` fraction of steps, then linear decay to 0 (one-cycle shape)."""
    warm = max(1, int(warmup * total_steps))

    def factor(step):
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))
    return factor


def airbench(total_steps, warmup=0.23, start=0.2, end=0.07):
    """Linear from ``start`` up to 1 over the first ``warmup`` of the run, then linearly down to ``end``
    (the shape of airbench94's schedule)."""
    warm = max(1, int(warmup * total_steps))

    def factor(step):
        if step < warm:
            return start + (1 - start) * step / warm
        return 1 + (end - 1) * min(1.0, (step - warm) / max(1, total_steps - warm))
    return factor


SCHEDULES = {"airbench": airbench, "constant": constant, "step": step_decay, "cosine": cosine, "onecycle": warmup_linear,
             "warmup_linear": warmup_linear}


class Schedule:
    def __init__(self, optimizer, name, total_steps, **kwargs):
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
        self.optimizer, self.factor, self.position = optimizer, SCHEDULES[name](total_steps, **kwargs), 0
        optimizer.set_lr_factor(self.factor(0))

    def step(self):
        self.position += 1
        self.optimizer.set_lr_factor(self.factor(self.position))

    @property
    def lr(self):
        return self.optimizer.param_groups[0]["lr"]
