"""The data loader alone (shuffle, gather, augment, normalise, on its background thread) in images/s, beside
what training consumes, to show the loader is not the bottleneck.

    python benchmarks/loader.py --data ../shared/data/cifar10-jpg.tar.gz
"""
import argparse
import json
import time
from pathlib import Path


from minitorch_cifar import machine
from minitorch_cifar.data import Augment, BatchLoader, channel_stats, load_cifar10


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--batches", default="128,512,1024")
    p.add_argument("--augment", default="crop,flip")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "loader.json"))
    args = p.parse_args()
    data = load_cifar10(args.data)
    mean, std = channel_stats(data.train.images)
    training = {}
    tp = Path(__file__).resolve().parent / "results" / "throughput.json"
    if tp.is_file():  # what a training step consumes, from the throughput benchmark's last run
        for r in json.loads(tp.read_text())["results"]:
            training[(r["arch"], r["batch"])] = r["frameworks"]["minitorch-numba"]["train_images_per_s"]
    rows = []
    for batch in map(int, args.batches.split(",")):
        for augment in (args.augment, "crop,altflip,cutout"):
            loader = BatchLoader(data.train.images, data.train.labels, batch, mean, std, seed=0, augment=Augment(augment, padding=4))
            t = time.perf_counter()
            n = sum(len(y) for _, y in loader)
            rate = n / (time.perf_counter() - t)
            fastest = max([v for (a, b), v in training.items() if b == batch] or [float("nan")])
            rows.append(dict(batch=batch, augment=augment, loader_images_per_s=rate, fastest_training_images_per_s=fastest,
                             ratio=rate / fastest))
            print(f"batch {batch:>5}  {augment:<20} loader {rate:>8.0f} images/s; fastest training step measured at this batch "
                  f"{fastest:>6.0f} images/s: {rate / fastest:.1f}x")
    Path(args.out).write_text(json.dumps(dict(machine=machine.describe(), data=data.source, rows=rows), indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
