"""``minitorch-cifar selftest --backend cupy|numba``: every layer's forward and backward on the chosen
backend against the numpy reference, the worst relative error per layer, and a short training-step
throughput figure. Exit status 1 on any mismatch: the one command a first GPU user runs."""
from __future__ import annotations

import copy
import time

import numpy as np

from minitorch_cifar import backend, nn

LAYERS = [
    ("Conv2d 3x3 s1 p1", lambda: nn.Conv2d(5, 7, 3, padding=1), (4, 5, 9, 9)),
    ("Conv2d 3x3 s2 p0", lambda: nn.Conv2d(5, 7, 3, stride=2), (4, 5, 9, 9)),
    ("Conv2d 2x2 no bias", lambda: nn.Conv2d(3, 4, 2, bias=False), (3, 3, 8, 8)),
    ("MaxPool2d 2", lambda: nn.MaxPool2d(2), (4, 6, 9, 9)),
    ("MaxPool2d 3 s2 p1", lambda: nn.MaxPool2d(3, 2, 1), (4, 6, 9, 9)),
    ("AvgPool2d 3 s1", lambda: nn.AvgPool2d(3, 1), (4, 6, 9, 9)),
    ("GlobalAvgPool2d", nn.GlobalAvgPool2d, (4, 6, 5, 5)),
    ("GlobalMaxPool2d", nn.GlobalMaxPool2d, (4, 6, 5, 5)),
    ("BatchNorm2d", lambda: nn.BatchNorm2d(6), (4, 6, 5, 5)),
    ("BatchNorm1d", lambda: nn.BatchNorm1d(6), (8, 6)),
    ("Linear", lambda: nn.Linear(12, 5), (4, 12)),
    ("ReLU", nn.ReLU, (4, 6, 5, 5)),
    ("LeakyReLU", nn.LeakyReLU, (4, 6, 5, 5)),
    ("ELU", nn.ELU, (4, 6, 5, 5)),
    ("GELU", nn.GELU, (4, 6, 5, 5)),
    ("Tanh", nn.Tanh, (4, 6, 5, 5)),
    ("Sigmoid", nn.Sigmoid, (4, 6, 5, 5)),
    ("Dropout (eval)", lambda: nn.Dropout(0.5).eval(), (4, 6, 5, 5)),
]


def _step(layer, x, dout):
    y = layer.forward(x)
    layer.zero_grad()
    dx = layer.backward(dout)
    return [backend.to_numpy(y), backend.to_numpy(dx)] + [backend.to_numpy(p.grad) for p in layer.parameters()]


def _rel_error(a, b):
    return float(np.abs(a - b).max(initial=0) / max(1e-12, np.abs(b).max(initial=0)))


def check_layers(name, dtype=np.float32, tol=1e-4, print_fn=print):
    backend.set_default_dtype(dtype)
    worst_all, failed = 0.0, []
    print_fn(f"{'layer':<22}{'worst relative error':>22}  ({name} vs numpy, {np.dtype(dtype).name})")
    for label, make, shape in LAYERS:
        rng = np.random.default_rng(0)
        backend.set_backend("numpy")
        layer = make()
        twin = copy.deepcopy(layer)
        x = rng.standard_normal(shape).astype(dtype)
        y_shape = layer.forward(x).shape
        dout = rng.standard_normal(y_shape).astype(dtype)
        reference = _step(layer, x, dout)
        backend.set_backend(name)
        twin.to_backend()
        ours = _step(twin, backend.asarray(x), backend.asarray(dout))
        backend.set_backend("numpy")
        worst = max(_rel_error(o, r) for o, r in zip(ours, reference))
        worst_all = max(worst_all, worst)
        status = "ok" if worst <= tol else "MISMATCH"
        if worst > tol:
            failed.append(label)
        print_fn(f"{label:<22}{worst:>22.2e}  {status}")
    return failed


def throughput(name, model="simple", batch=128, steps=5, print_fn=print):
    from minitorch_cifar import models, optim
    backend.set_backend(name)
    backend.set_default_dtype(np.float32)
    net = models.build_model(model)
    opt = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x = backend.asarray(np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32))
    y = backend.asarray(np.random.default_rng(1).integers(0, 10, batch))

    def step():
        loss = loss_fn.forward(net.forward(x), y)
        opt.zero_grad()
        net.backward(loss_fn.backward())
        opt.step()
        return float(loss)  # a host read: the clock below stops only after the device has finished
    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    rate = steps * batch / (time.perf_counter() - t)
    print_fn(f"training step, {model}, batch {batch}: {rate:.0f} images/s on {name}")
    return rate


def run(name="cupy") -> int:
    backend.set_backend(name)  # a clear BackendUnavailable message when CuPy or the GPU is missing
    failed = check_layers(name, np.float32, 1e-4) + check_layers(name, np.float64, 1e-10)
    throughput(name)
    backend.set_backend("numpy")
    if failed:
        print(f"FAILED: {', '.join(sorted(set(failed)))}")
        return 1
    print("all layers match the numpy reference")
    return 0
