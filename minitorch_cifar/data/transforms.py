"""Augmentation on whole batches, vectorised: one random draw per image, no Python loop over images.

Each takes a batch (N, C, H, W) of any dtype (uint8 or float) and a NumPy ``Generator`` for the
per-image random choices (a few numbers per image, drawn on the host even when the images live on
the GPU, so the same seed gives the same augmentation on every backend).
"""
from __future__ import annotations

import numpy as np

from minitorch_cifar import backend


def random_crop(images, padding, rng, mode="reflect"):
    """Pad by ``padding`` (reflect or zero), then cut a random HxW window per image (a random translation)."""
    if mode not in ("reflect", "constant", "zero"):
        raise ValueError(f"random_crop: mode must be 'reflect' or 'zero', got {mode!r}")
    if padding == 0:
        return images
    xp = backend.array_module(images)
    N, C, H, W = images.shape
    padded = xp.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                    mode="reflect" if mode == "reflect" else "constant")
    dy = xp.asarray(rng.integers(0, 2 * padding + 1, N))
    dx = xp.asarray(rng.integers(0, 2 * padding + 1, N))
    rows = (dy[:, None] + xp.arange(H))[:, None, :, None]
    cols = (dx[:, None] + xp.arange(W))[:, None, None, :]
    return padded[xp.arange(N)[:, None, None, None], xp.arange(C)[None, :, None, None], rows, cols]


def random_flip(images, rng, p=0.5):
    """Mirror each image left-right with probability p."""
    xp = backend.array_module(images)
    flip = xp.asarray(rng.random(len(images)) < p)[:, None, None, None]
    return xp.where(flip, images[..., ::-1], images)


def alternating_flip(images, indices, epoch, seed=0):
    """Flip image i when (its own fixed random bit) xor (epoch is odd): every image is seen both ways in
    every pair of epochs, instead of by chance (airbench's alternating flip)."""
    xp = backend.array_module(images)
    bits = ((np.asarray(indices, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(seed * 97 + 13)) >> np.uint64(11)) & np.uint64(1)
    flip = xp.asarray((bits.astype(np.int64) ^ (epoch & 1)).astype(bool))[:, None, None, None]
    return xp.where(flip, images[..., ::-1], images)


def cutout(images, size, rng):
    """Zero a size x size square at a random centre per image (clipped at the border), as DeVries & Taylor."""
    xp = backend.array_module(images)
    N, C, H, W = images.shape
    cy, cx = xp.asarray(rng.integers(0, H, N)), xp.asarray(rng.integers(0, W, N))
    ys, xs = xp.arange(H)[None, :], xp.arange(W)[None, :]
    inside_y = (ys >= (cy - size // 2)[:, None]) & (ys < (cy - size // 2 + size)[:, None])
    inside_x = (xs >= (cx - size // 2)[:, None]) & (xs < (cx - size // 2 + size)[:, None])
    hole = inside_y[:, None, :, None] & inside_x[:, None, None, :]
    return xp.where(hole, xp.zeros((), images.dtype), images)


def normalize(images, mean, std, dtype=np.float32):
    """uint8 (N, 3, H, W) -> float: (x/255 - mean) / std per channel, in one fused scale-and-shift."""
    xp = backend.array_module(images)
    scale = xp.asarray(1 / (255 * np.asarray(std)), dtype=dtype)[None, :, None, None]
    shift = xp.asarray(-np.asarray(mean) / np.asarray(std), dtype=dtype)[None, :, None, None]
    return images.astype(dtype) * scale + shift


class Augment:
    """A chain of named augmentations: ``Augment("crop,flip,cutout", padding=4)``."""

    NAMES = ("crop", "flip", "altflip", "cutout")

    def __init__(self, spec="crop,flip", padding=4, pad_mode="reflect", cutout_size=8):
        self.names = [s for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s != "none"]
        bad = [n for n in self.names if n not in self.NAMES]
        if bad:
            raise ValueError(f"unknown augmentation(s) {bad}; choose from {', '.join(self.NAMES)} (or none)")
        self.padding, self.pad_mode, self.cutout_size = padding, pad_mode, cutout_size

    def __call__(self, images, rng, indices=None, epoch=0, seed=0):
        for name in self.names:
            if name == "crop":
                images = random_crop(images, self.padding, rng, self.pad_mode)
            elif name == "flip":
                images = random_flip(images, rng)
            elif name == "altflip":
                if indices is None:
                    raise ValueError("altflip needs the images' dataset indices (the loader passes them)")
                images = alternating_flip(images, indices, epoch, seed)
            else:
                images = cutout(images, self.cutout_size, rng)
        return images

    def __repr__(self):
        return ",".join(self.names) or "none"
