"""Cross-entropy on logits, with optional label smoothing.

With p = softmax(z) and the target distribution q = (1 - eps) * onehot(t) + eps / K:

    L = -(1/N) * sum_n sum_k q[n, k] * log p[n, k]
    dL/dz = (p - q) / N          (softmax and log cancel: the gradient is "predicted minus wanted")

log p is computed as z - max(z) - log(sum(exp(z - max(z)))): subtracting the row maximum keeps exp
from overflowing and changes nothing, since softmax is shift-invariant. Cached: p and q.
"""
from __future__ import annotations

from minitorch_cifar import backend
from minitorch_cifar.nn.module import Module


def log_softmax(z):
    xp = backend.array_module(z)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


class CrossEntropyLoss(Module):
    def __init__(self, label_smoothing=0.0):
        if not 0 <= label_smoothing <= 1:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self._cache = None

    def extra_repr(self):
        return f"label_smoothing={self.label_smoothing}"

    def forward(self, logits, targets):
        return self.per_example(logits, targets).sum() / logits.shape[0]

    def per_example(self, logits, targets):
        """Each example's loss, (N,); caches for ``backward`` as ``forward`` (their mean) does."""
        self.check_input(logits, 2, what="(N, classes) of logits")
        xp = backend.array_module(logits)
        targets = xp.asarray(targets)
        N, K = logits.shape
        if targets.shape != (N,) or targets.dtype.kind not in "iu":
            raise ValueError(f"CrossEntropyLoss: expected integer targets of shape ({N},), got {targets.dtype} {tuple(targets.shape)}")
        if N and (int(targets.min()) < 0 or int(targets.max()) >= K):
            raise ValueError(f"CrossEntropyLoss: targets must be in [0, {K - 1}], got values in [{int(targets.min())}, {int(targets.max())}]")
        logp = log_softmax(logits)
        eps = self.label_smoothing
        q = xp.full_like(logits, eps / K)
        q[xp.arange(N), targets] += 1 - eps
        self._cache = (xp.exp(logp), q)
        return -(q * logp).sum(axis=1)

    def backward(self, dout=1.0):
        p, q = self.cached()
        return (p - q) * (dout / p.shape[0])
