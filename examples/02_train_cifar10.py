"""The shortest complete training script using the library API (the CLI does the same, with more options).

    python examples/02_train_cifar10.py --data ../shared/data/cifar10-jpg.tar.gz --epochs 5
"""
import argparse

import numpy as np

import minitorch_cifar as mc
from minitorch_cifar import data, models, nn, optim
from minitorch_cifar.train import evaluate

parser = argparse.ArgumentParser()
parser.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--subset", type=int, default=0, help="use only this many training images")
args = parser.parse_args()

mc.set_backend("numba")
cifar = data.load_cifar10(args.data)
train, val = data.train_val_split(cifar.train, val_size=min(5000, len(cifar.train) // 10), seed=0)
if args.subset:  # a random subset: image folders are stored class by class
    train = data.random_subset(train, args.subset, seed=0)
mean, std = data.channel_stats(train.images)  # from the training split only

model = models.build_model("simple")
optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
loader = data.BatchLoader(train.images, train.labels, args.batch_size, mean, std, seed=0, augment=data.Augment("crop,flip"))
schedule = optim.Schedule(optimizer, "onecycle", args.epochs * len(loader))
loss_fn = nn.CrossEntropyLoss()

for epoch in range(args.epochs):
    total, correct, seen = 0.0, 0, 0
    for x, y in loader:
        logits = model.forward(x)
        loss = loss_fn.forward(logits, y)
        optimizer.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()
        schedule.step()
        total, correct, seen = total + float(loss) * len(y), correct + int((logits.argmax(1) == y).sum()), seen + len(y)
    _, val_acc, _ = evaluate(model, val.images, val.labels, mean, std)
    print(f"epoch {epoch + 1}: train loss {total / seen:.3f}, train acc {100 * correct / seen:.1f}%, val acc {val_acc:.1f}%")

_, test_acc, _ = evaluate(model, cifar.test.images, cifar.test.labels, mean, std)
print(f"test accuracy {test_acc:.2f}%")
np.savez("example_model.npz", mean=mean, std=std, **model.state_dict())
