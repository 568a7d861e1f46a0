"""Images/s of data-parallel training on 1 rank vs 2 ranks on this machine, one core per rank.

Each rank gets 1 thread for BLAS, OpenMP and Numba (so 2 ranks use the 2 cores and 1 rank uses one), the
global batch stays the same, and the figure is global images per second over timed steps after a
warm-up. Synthetic data: the point is the scaling of compute plus the gradient Allreduce.

    python benchmarks/distributed.py --model simple --batch 256
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from minitorch_cifar import machine
from minitorch_cifar.experiments import ONE_CORE_PER_RANK

CHILD = r'''
import sys, time, json, numpy as np
import minitorch_cifar as mc
from minitorch_cifar import models, nn, optim
from minitorch_cifar.distributed import Communicator
comm = Communicator()
model_name, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
mc.set_backend("numba")
net = models.build_model(model_name)
comm.broadcast_model(net)
opt = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
rng = np.random.default_rng(comm.rank)
x = rng.standard_normal((batch // comm.size, 3, 32, 32)).astype(np.float32)
y = rng.integers(0, 10, batch // comm.size)
def step():
    loss_fn.forward(net.forward(x), y); opt.zero_grad(); net.backward(loss_fn.backward())
    comm.average_gradients(net.parameters()); opt.step()
step(); comm.comm.Barrier()
t = time.perf_counter()
for _ in range(steps):
    step()
comm.comm.Barrier()
if comm.is_root:
    print(json.dumps({"ranks": comm.size, "images_per_s": steps * batch / (time.perf_counter() - t)}))
'''


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="simple")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--mpiexec-args", default="-bind-to core", help="extra mpiexec options (one core per rank)")
    p.add_argument("--out", default=None, help="default: benchmarks/results/distributed_<model>.json")
    args = p.parse_args()
    args.out = args.out or str(Path(__file__).resolve().parent / "results" / f"distributed_{args.model}.json")
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        print('no mpiexec: pip install -e ".[mpi]"')
        return 0
    env = {**os.environ, **ONE_CORE_PER_RANK}
    results = []
    for ranks in (1, 2):
        out = subprocess.run([mpiexec, "-n", str(ranks), *args.mpiexec_args.split(), sys.executable, "-c", CHILD, args.model, str(args.batch), str(args.steps)],
                             capture_output=True, text=True, env=env, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{ranks} rank(s), 1 core each: {r['images_per_s']:.0f} images/s ({args.model}, global batch {args.batch})")
    print(f"speed-up with 2 ranks: {results[1]['images_per_s'] / results[0]['images_per_s']:.2f}x")
    print(f"wrote {args.out}")
    Path(args.out).write_text(json.dumps(dict(machine=machine.describe(), model=args.model, batch=args.batch, threads_per_rank=1, results=results,
                                              date=time.strftime("%Y-%m-%d %H:%M")), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
