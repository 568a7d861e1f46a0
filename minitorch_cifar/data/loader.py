"""Shuffled, augmented, normalised minibatches, prepared one batch ahead on a background thread.

Determinism: the order of epoch e is a permutation drawn from (seed, e), and batch b of that epoch is
augmented with a generator drawn from (seed, e, b). So a run resumed at epoch e sees exactly the
batches an uninterrupted run would, and the background thread changes nothing but the timing.
"""
from __future__ import annotations

import queue
import threading

import numpy as np

from minitorch_cifar import backend
from minitorch_cifar.data.transforms import normalize


class BatchLoader:
    def __init__(self, images, labels, batch_size, mean, std, shuffle=True, drop_last=True, seed=0,
                 augment=None, dtype=np.float32, prefetch=True, shard=None):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.on_device = backend.get_backend() == "cupy"  # upload the uint8 set once; augment on the GPU
        self.images = backend.asarray(images) if self.on_device else images
        self.labels = backend.asarray(labels) if self.on_device else labels
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.mean, self.std, self.augment, self.dtype = mean, std, augment, dtype
        self.prefetch = prefetch and not self.on_device
        self.shard = shard  # a slice of each batch (data-parallel ranks); augmentation still sees the whole batch
        self.epoch = 0

    def __len__(self):
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _batch(self, order, b):
        idx = order[b * self.batch_size:(b + 1) * self.batch_size]
        xp = backend.array_module(self.images)
        if self.on_device:
            idx = xp.asarray(idx)
        images = self.images[idx]
        if self.augment is not None:
            images = self.augment(images, np.random.default_rng([self.seed, self.epoch, b]),
                                  indices=backend.to_numpy(idx), epoch=self.epoch, seed=self.seed)
        labels = self.labels[idx]
        if self.shard is not None:
            images, labels = images[self.shard], labels[self.shard]
        x = normalize(images, self.mean, self.std, self.dtype)
        return backend.asarray(x), backend.asarray(labels)

    def __iter__(self):
        return self.batches()

    def batches(self, start=0):
        """The batches of the current epoch from number ``start`` on (a resumed run starts mid-epoch)."""
        n = len(self.labels)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        batches = range(start, len(self))
        if not self.prefetch:
            for b in batches:
                yield self._batch(order, b)
            self.epoch += 1
            return
        q = queue.Queue(maxsize=2)
        stop = threading.Event()

        def work():
            try:
                for b in batches:
                    if stop.is_set():
                        return
                    q.put(self._batch(order, b))
                q.put(None)
            except BaseException as e:  # surfaced in the consumer, not lost in the thread
                q.put(e)

        t = threading.Thread(target=work, daemon=True)
        t.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while t.is_alive():  # drain so the worker can finish its last put
                try:
                    q.get_nowait()
                except queue.Empty:
                    t.join(0.01)
        self.epoch += 1
