"""Training-step throughput on a GPU: minitorch (cupy backend) beside torch on the same GPU.

Times use a device synchronise before reading the clock. On a machine without a usable GPU (or without
CuPy / a CUDA build of torch) it says so and exits 0: no GPU figure is ever made up.

    python benchmarks/gpu.py --arch fast --batch 512
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from minitorch_cifar import machine


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="fast")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "gpu.json"))
    args = p.parse_args()

    import minitorch_cifar as mc
    from minitorch_cifar.backend import BackendUnavailable
    try:
        mc.set_backend("cupy")
    except BackendUnavailable as e:
        print(f"no GPU benchmark on this machine: {e}")
        return 0
    cp = mc.backend.xp()
    from minitorch_cifar import models, nn
    mc.set_default_dtype(np.float32)
    model = models.build_model(args.arch)
    opt = mc.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    y_host = rng.integers(0, 10, args.batch)
    x, y = cp.asarray(x_host), cp.asarray(y_host)

    def mc_step():
        loss_fn.forward(model.forward(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        cp.cuda.Device().synchronize()

    results = {}
    timings = {"minitorch-cupy": [], "torch-cuda": []}
    torch_step = None
    try:
        import torch
        if torch.cuda.is_available():
            from minitorch_cifar.torch_mirror import to_torch
            with mc.use_backend("numpy"):
                mc.manual_seed(0)
                tmodel = to_torch(models.build_model(args.arch)).cuda()
            topt = torch.optim.SGD([q for q in tmodel.parameters() if q.requires_grad], lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
            xt, yt = torch.from_numpy(x_host).cuda(), torch.from_numpy(y_host).cuda()

            def torch_step():
                topt.zero_grad()
                torch.nn.functional.cross_entropy(tmodel(xt), yt).backward()
                topt.step()
                torch.cuda.synchronize()
        else:
            print("torch has no CUDA here: timing minitorch only")
    except ImportError:
        print("torch is not installed: timing minitorch only")
    steps = [("minitorch-cupy", mc_step)] + ([("torch-cuda", torch_step)] if torch_step else [])
    for _, fn in steps:
        fn()
    for _ in range(args.reps):
        for name, fn in steps:
            t = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - t)
    for name, t in timings.items():
        if t:
            results[name] = args.batch / statistics.median(t)
            print(f"{name:<16}{results[name]:>10.0f} images/s (training step, {args.arch}, batch {args.batch})")
    if "torch-cuda" in results:
        print(f"ratio minitorch/torch: {results['minitorch-cupy'] / results['torch-cuda']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(machine=machine.describe(), arch=args.arch, batch=args.batch, images_per_s=results,
                                              gpu=cp.cuda.runtime.getDeviceProperties(0)["name"].decode()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
