"""Data-parallel SGD over MPI (as ChainerMN did for Chainer): every rank holds the whole model, takes its
shard of each global batch, and the gradients are averaged before each (identical) update.

    mpiexec -n K minitorch-cifar train ... --distributed [--sync-bn]

* Rank 0's initial parameters and buffers are broadcast, so every rank starts from the same weights.
* Every rank walks the same seeded permutation; rank r takes images [r*B/K, (r+1)*B/K) of each global
  batch of B (B must divide by K), so all ranks take the same number of steps.
* After backward, all gradients are packed into one flat buffer and averaged with one in-place
  ``Allreduce``; every rank then applies the same update and the models stay identical.
* Batch-norm statistics are per rank (each normalises its own shard), unless ``--sync-bn``: then the
  mean and variance, and in backward the two gradient sums, are reduced over all ranks, and a K-rank step
  equals a 1-process step on the whole batch. The numba backend runs those passes as its batch-norm kernels
  do (kernels/cpu/norm.py), with an all-reduce between them.
* Only rank 0 logs, evaluates and writes files. An exception on any rank aborts the whole job
  (``MPI.COMM_WORLD.Abort``) instead of leaving the others blocked in a collective.

On the GPU backend the same wrapper would use CuPy's NCCL communicator (``cupyx.distributed``); that
cannot be tested on this machine and is not implemented yet: ``--distributed`` runs on CPU backends.
"""
from __future__ import annotations

import sys
import time
import traceback

import numpy as np

from minitorch_cifar import backend
from minitorch_cifar.backend import kernel


class Communicator:
    """The few collectives data-parallel SGD needs, over an mpi4py communicator."""

    def __init__(self, comm=None):
        if comm is None:
            try:
                from mpi4py import MPI
            except ImportError:
                raise ValueError('--distributed needs mpi4py: pip install -e ".[mpi]" and launch with mpiexec -n K') from None
            comm = MPI.COMM_WORLD
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._flats = {}  # one packing buffer per gradient layout (two models may train: see train.ProxySelector)

    @property
    def is_root(self):
        return self.rank == 0

    def broadcast_model(self, model):
        """Every rank gets rank 0's parameters and buffers (in place)."""
        for p in model.parameters():
            self.comm.Bcast(p.data, root=0)
        for m in model.modules():
            for name in m.buffer_names:
                value = np.ascontiguousarray(getattr(m, name))
                self.comm.Bcast(value, root=0)
                setattr(m, name, value)

    def average_gradients(self, params):
        """One in-place Allreduce over all gradients packed into a single buffer, then divide by K."""
        from mpi4py import MPI
        grads = [p.grad for p in params]
        total = sum(g.size for g in grads)
        flat = self._flats.get((total, grads[0].dtype))
        if flat is None:
            flat = self._flats[total, grads[0].dtype] = np.empty(total, dtype=grads[0].dtype)
        offset = 0
        for g in grads:
            flat[offset:offset + g.size] = g.reshape(-1)
            offset += g.size
        self.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        flat /= self.size
        offset = 0
        for g in grads:
            g.reshape(-1)[...] = flat[offset:offset + g.size]
            offset += g.size

    def sum(self, values):
        """Elementwise sum over ranks of a small array (statistics, counters)."""
        from mpi4py import MPI
        out = np.array(values, dtype=np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, out, op=MPI.SUM)
        return out

    def shard(self, batch_size):
        if batch_size % self.size:
            raise ValueError(f"--batch-size {batch_size} must divide by the {self.size} ranks")
        per_rank = batch_size // self.size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def abort(self, message):
        traceback.print_exc()
        print(f"rank {self.rank}: {message}; aborting all ranks", file=sys.stderr, flush=True)
        # mpiexec forwards our stderr through its proxy; Abort kills that pipe at once, and under load the
        # message was lost (seen once in CI). A moment's wait lets it reach the user first.
        time.sleep(1.0)
        self.comm.Abort(1)


def enable_sync_bn(model, comm: Communicator):
    """Make every BatchNorm of ``model`` reduce its statistics over all ranks."""
    from minitorch_cifar.nn.norm import _BatchNorm
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.sync = comm


@kernel
def sync_batchnorm_forward(comm, x, weight, bias, eps):
    """x: (N, C, L) on this rank. The mean and (biased) variance over all ranks' values, two passes."""
    n_local = x.shape[0] * x.shape[2]
    sums = comm.sum(np.concatenate([backend.to_numpy(x.sum(axis=(0, 2))).astype(np.float64), [n_local]]))
    M = sums[-1]
    mean = (sums[:-1] / M).astype(x.dtype)
    centred = x - mean[None, :, None]
    var = (comm.sum(backend.to_numpy((centred * centred).sum(axis=(0, 2)))) / M).astype(x.dtype)
    scale = weight / np.sqrt(var + eps)
    return centred * scale[None, :, None] + bias[None, :, None], mean, var, int(M)


@kernel
def sync_batchnorm_backward(comm, dy, x, weight, mean, invstd, M):
    """dL/dx from the sums over all ranks; dL/dweight, dL/dbias as this rank's own sums.

    Each rank's loss is the mean over its own shard, so its dy is K times its share of the global dy;
    the global sums in dx's formula are then exactly the sums of the ranks' sums. The parameter
    gradients stay local: ``average_gradients`` averages them over ranks like every other gradient.
    """
    xhat = (x - mean[None, :, None]) * invstd[None, :, None]
    C = x.shape[1]
    local = np.concatenate([dy.sum(axis=(0, 2)), (dy * xhat).sum(axis=(0, 2))])
    total = comm.sum(local).astype(x.dtype)
    dx = (weight * invstd / M)[None, :, None] * (M * dy - total[None, :C, None] - xhat * total[None, C:, None])
    return dx, local[C:].astype(x.dtype), local[:C].astype(x.dtype)
