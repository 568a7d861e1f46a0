"""A CNN layer by layer: shapes, parameter counts, im2col as numbers, gradient checks, one step by hand.

    python examples/01_layer_by_layer.py
"""
import numpy as np

import minitorch_cifar as mc
from minitorch_cifar import nn
from minitorch_cifar.nn.conv import im2col

np.set_printoptions(precision=3, suppress=True, linewidth=120)
rng = np.random.default_rng(0)

# 1. Build a small network one layer at a time and watch the shape of a batch change.
print("1. A small CNN, one layer at a time (a batch of 2 RGB 8x8 images)")
layers = [nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
          nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.GlobalAvgPool2d(), nn.Linear(8, 3)]
x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
print(f"   {'input':<56} -> {x.shape}")
for layer in layers:
    x = layer.forward(x)
    n_params = sum(p.data.size for p in layer.parameters())
    print(f"   {repr(layer):<56} -> {str(x.shape):<14} {n_params:>4} parameters")

# 2. im2col: the trick that turns a convolution into one matrix product.
print("\n2. im2col on one 1-channel 4x4 image, 2x2 kernel, stride 1: each column is one receptive field")
image = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
print(image[0, 0])
col = im2col(image, 2, 2, 1, 0)
print(f"   columns (rows = kernel offsets (0,0) (0,1) (1,0) (1,1); {col.shape[1]} output positions):")
print(col)
kernel = np.array([[1, 2], [0, -1]], dtype=np.float32)
print("   kernel [[1, 2], [0, -1]] as a row vector times the columns = the 3x3 output:")
print((kernel.reshape(1, -1) @ col).reshape(3, 3))

# 3. Every layer's backward pass against central differences, in float64.
print("\n3. Gradient checks (max |backward - numeric| per tensor)")
mc.set_default_dtype(np.float64)
checks = [(nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 5, 5)), (nn.MaxPool2d(2), (2, 2, 4, 4)),
          (nn.AvgPool2d(3, 1), (2, 2, 5, 5)), (nn.BatchNorm2d(2), (3, 2, 3, 3)), (nn.Linear(5, 3), (4, 5)),
          (nn.ReLU(), (3, 4)), (nn.GELU(), (3, 4)), (nn.Tanh(), (3, 4)), (nn.Sigmoid(), (3, 4)), (nn.ELU(), (3, 4)),
          (nn.GlobalMaxPool2d(), (2, 3, 3, 3))]
for layer, shape in checks:
    report = mc.gradcheck(layer, rng.standard_normal(shape))
    print(f"   {type(layer).__name__:<16} " + ", ".join(f"{k} {v:.1e}" for k, v in report.items()))
loss = nn.CrossEntropyLoss(label_smoothing=0.1)
report = mc.gradcheck(loss, (rng.standard_normal((4, 3)), np.array([0, 2, 1, 2])))
print(f"   {'CrossEntropyLoss':<16} " + ", ".join(f"{k} {v:.1e}" for k, v in report.items()))

# 4. One training step by hand: forward, loss, backward, update.
print("\n4. One SGD step by hand on a batch of 8 (float64)")
net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
x, y = rng.standard_normal((8, 3, 8, 8)), rng.integers(0, 3, 8)
loss_fn = nn.CrossEntropyLoss()
before = loss_fn.forward(net.forward(x), y)
net.zero_grad()
net.backward(loss_fn.backward())  # the chain rule, layer by layer, last to first
for name, p in net.named_parameters():
    print(f"   |dL/d{name}| = {np.linalg.norm(p.grad):.4f}")
opt = mc.optim.SGD(net.parameters(), lr=0.1)
opt.step()  # p <- p - lr * dL/dp
after = loss_fn.forward(net.forward(x), y)
print(f"   loss before {before:.4f}, after one step {after:.4f} (lower: the step went downhill)")
