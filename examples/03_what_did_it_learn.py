"""What did the network learn? From a checkpoint of `minitorch-cifar train`, save as PNGs: the first-layer
filters, the feature maps of one test image layer by layer, the confusion matrix, and the test images it
got most confidently wrong.

    python examples/03_what_did_it_learn.py runs/latest/best.npz --data ../shared/data/cifar10-jpg.tar.gz
"""
import argparse
from pathlib import Path

import numpy as np

import minitorch_cifar as mc
from minitorch_cifar import nn, plots
from minitorch_cifar.data import load_cifar10, normalize
from minitorch_cifar.plots import plt
from minitorch_cifar.train import model_from_checkpoint, predict

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint")
parser.add_argument("--data", default=None)
parser.add_argument("--out", default="what_it_learned")
args = parser.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

mc.set_backend("numba")
model, meta = model_from_checkpoint(args.checkpoint)
cifar = load_cifar10(args.data or meta["config"]["data"])
mean, std, classes = meta["mean"], meta["std"], meta["classes"]

# 1. First-layer filters, each scaled to [0, 1] as an RGB patch.
first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
w = first.weight.data.transpose(0, 2, 3, 1)
w = (w - w.min(axis=(1, 2, 3), keepdims=True)) / (np.ptp(w, axis=(1, 2, 3), keepdims=True) + 1e-8)
cols = 8
fig, axes = plt.subplots(-(-len(w) // cols), cols, figsize=(cols, -(-len(w) // cols)), squeeze=False)
for ax, f in zip(axes.flat, list(w) + [None] * (axes.size - len(w))):
    ax.axis("off")
    if f is not None:
        ax.imshow(f, interpolation="nearest")
fig.suptitle(f"first-layer filters ({first.kernel_size[0]}x{first.kernel_size[1]}x3)")
plots._save(fig, out / "filters.png")

# 2. Feature maps of one test image after each layer that keeps the image shape (first 8 channels).
image = cifar.test.images[:1]
x = normalize(image, mean, std)
maps = []
model.eval()
for i, layer in enumerate(model):
    x = layer.forward(x)
    if x.ndim == 4 and isinstance(layer, (nn.ReLU, nn.GELU, nn.ELU, nn.LeakyReLU, nn.Tanh, nn.MaxPool2d)):
        maps.append((f"{i}: {type(layer).__name__} {x.shape[1]}x{x.shape[2]}x{x.shape[3]}", x[0, :8]))
fig, axes = plt.subplots(len(maps) + 1, 8, figsize=(12, 1.6 * (len(maps) + 1)), squeeze=False)
for ax in axes.flat:
    ax.axis("off")
axes[0, 0].imshow(image[0].transpose(1, 2, 0))
axes[0, 0].set_title(f"input: {classes[cifar.test.labels[0]]}", fontsize=8)
for row, (title, fm) in enumerate(maps, start=1):
    axes[row, 0].set_title(title, fontsize=7, loc="left")
    for j, channel in enumerate(fm):
        axes[row, j].imshow(channel, cmap="viridis")
plots._save(fig, out / "feature_maps.png")

# 3. Confusion matrix and 4. the most confidently wrong test images.
logits = predict(model, cifar.test.images, mean, std)
probs = np.exp(logits - logits.max(1, keepdims=True))
probs /= probs.sum(1, keepdims=True)
preds, labels = probs.argmax(1), cifar.test.labels
matrix = np.zeros((10, 10), np.int64)
np.add.at(matrix, (labels, preds), 1)
plots.confusion(matrix, classes, out / "confusion.png")
wrong = np.flatnonzero(preds != labels)
worst = wrong[np.argsort(-probs[wrong, preds[wrong]])][:16]
fig, axes = plt.subplots(2, 8, figsize=(12, 3.6), squeeze=False)
for ax in axes.flat:
    ax.axis("off")
for ax, i in zip(axes.flat, worst):
    ax.imshow(cifar.test.images[i].transpose(1, 2, 0))
    ax.set_title(f"{classes[preds[i]]} {100 * probs[i, preds[i]]:.0f}%\n(is {classes[labels[i]]})", fontsize=7)
fig.suptitle("most confidently wrong: predicted (confidence), true")
plots._save(fig, out / "confidently_wrong.png")
accuracy = 100 * float((preds == labels).mean())
print(f"test accuracy {accuracy:.2f}%; wrote filters.png, feature_maps.png, confusion.png, confidently_wrong.png to {out}")
