"""Run under `mpiexec -n 2` by tests/test_distributed.py (not collected by pytest itself).

    mpi_job.py equal OUT [BACKEND]   a 2-rank step (B/2 each) equals a 1-process step (B), float64, BN off and sync-BN
    mpi_job.py raise OUT    rank 1 raises inside train(): the whole job must end, non-zero, within seconds
"""
import json
import sys

import numpy as np

import minitorch_cifar as mc
from minitorch_cifar import nn, optim
from minitorch_cifar.distributed import Communicator, enable_sync_bn


def make_net(bn):
    mc.manual_seed(0)
    layers = [nn.Conv2d(3, 4, 3, padding=1)] + ([nn.BatchNorm2d(4)] if bn else []) + [
        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)]
    return nn.Sequential(*layers)


def step(net, opt, x, y, comm=None):
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn.forward(net.forward(x), y)
    opt.zero_grad()
    net.backward(loss_fn.backward())
    if comm is not None:
        comm.average_gradients(net.parameters())
    opt.step()
    return float(loss)


def equal(out, backend="numpy"):
    comm = Communicator()
    mc.set_backend(backend)
    mc.set_default_dtype(np.float64)
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((8, 3, 8, 8)), rng.integers(0, 3, 8)) for _ in range(5)]
    report = {}
    for bn in (False, True):
        net = make_net(bn)
        if comm.rank == 1:  # different starting weights: the broadcast must fix them
            for p in net.parameters():
                p.data += 1.0
        comm.broadcast_model(net)
        if bn:
            enable_sync_bn(net, comm)
        opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
        shard = comm.shard(8)
        reference = make_net(bn)
        ref_opt = optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
        diffs = []
        for x, y in batches:
            step(net, opt, x[shard], y[shard], comm)
            step(reference, ref_opt, x, y)
            diffs.append(max(float(np.abs(a - b).max()) for a, b in zip(net.state_dict().values(), reference.state_dict().values())))
        flat = np.concatenate([v.reshape(-1).astype(np.float64) for v in net.state_dict().values()])
        gathered = comm.comm.gather(flat, root=0)
        if comm.is_root:
            report["sync_bn" if bn else "no_bn"] = dict(
                max_diff_vs_single_process=max(diffs),
                identical_on_all_ranks=all(np.array_equal(g, gathered[0]) for g in gathered))
    if comm.is_root:
        with open(out, "w") as f:
            json.dump(report, f)


def fail(out):
    from minitorch_cifar.train import TrainConfig, train
    from minitorch_cifar.data import CIFAR10, Split
    rng = np.random.default_rng(0)
    split = lambda n: Split(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n))  # noqa: E731
    data = CIFAR10(split(64), split(16))
    comm = Communicator()

    def boom(epoch, b):
        if comm.rank == 1 and b == 1:
            raise RuntimeError("rank 1 fails on purpose")
    train(TrainConfig(model="simple", width=0.25, batch_size=8, epochs=50, val_size=0, distributed=True, out=out),
          data=data, progress=False, on_step=boom, log=lambda *a: None)


if __name__ == "__main__":
    {"equal": equal, "raise": fail}[sys.argv[1]](*sys.argv[2:])
