"""Cross-validation against PyTorch: the same network, weights, batches, optimizer and schedule in both
frameworks, step by step, and the two loss curves compared.

The torch network is ``torch_mirror.to_torch(model)``: one explicit rule per layer type, weights copied
through ``state_dict``. Batches are drawn and augmented once (numpy) and fed to both. Dropout is off
(a mask drawn by one framework's generator cannot be drawn by the other's). The SGD update (Nesterov
momentum, weight decay on conv/linear weights only) and the warmup-linear schedule are the same
formulas in both; torch's lr is set from the same schedule function at every step.
"""
from __future__ import annotations

import glob
import json
import os
import time
from pathlib import Path

import numpy as np

from minitorch_cifar import backend, nn, optim
from minitorch_cifar.data import Augment, BatchLoader, channel_stats, load_cifar10, normalize, random_subset
from minitorch_cifar.models import build_model, init_whitening
from minitorch_cifar.torch_mirror import to_torch


CONTROL_LABELS = {"shuffle": "torch vs torch, rows shuffled", "im2col": "torch vs torch, oneDNN off (im2col + GEMM)"}


def run(model_name="simple", steps=30, dtype="float64", data=None, batch_size=64, seed=0, out="runs/crossval",
        lr=0.02, epochs=0, train_subset=0, momentum=0.9, weight_decay=5e-4, label_smoothing=0.1,
        backend_name="numba", control=None, log=print):
    """``control``: also train a second torch copy, the same maths rounded differently, as the yardstick for
    how far minitorch may drift from torch: how far two torch runs drift apart.
    "shuffle": the same batches with each batch's rows shuffled (BN statistics and the mean loss do not
    depend on row order, so only the order of the sums changes).
    "im2col": the same batches with oneDNN (mkldnn) off, so torch convolves by im2col + GEMM as minitorch
    does: every convolution and its gradients rounded differently, as minitorch's are."""
    import contextlib
    import copy
    import torch
    import warnings

    control = "shuffle" if control is True else control or None
    if control not in (None, "shuffle", "im2col"):
        raise ValueError(f"control must be 'shuffle' or 'im2col', got {control!r}")

    torch.set_num_threads(os.cpu_count() or 1)
    backend.set_backend(backend_name)
    np_dtype = np.dtype(dtype)
    backend.set_default_dtype(np_dtype)
    torch_dtype = torch.float64 if np_dtype == np.float64 else torch.float32
    if data is None or isinstance(data, (str, Path)):
        data = load_cifar10(data)
    train = random_subset(data.train, train_subset, seed) if train_subset else data.train
    images, labels = train.images, train.labels
    mean, std = channel_stats(images)
    steps_per_epoch = len(labels) // batch_size
    if epochs:
        steps = epochs * steps_per_epoch
    if steps < 1 or steps_per_epoch < 1:
        raise ValueError(f"crossval needs at least one full batch: {len(labels)} images, batch size {batch_size}")

    nn.module.manual_seed(seed)
    model = build_model(model_name, dropout=0.0)
    if model_name == "fast":
        init_whitening(model[0], normalize(images[:5000], mean, std, np.float64))
    mirror = to_torch(model)

    # the same SGD in both: weight decay on conv/linear weights only, frozen parameters left out
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [n for n, p in named if p.data.ndim > 1]
    other = [n for n, p in named if p.data.ndim <= 1]

    def groups(params: dict):
        return [{"params": [params[n] for n in decay]}, {"params": [params[n] for n in other], "weight_decay": 0.0}]

    def torch_sgd(net):
        return torch.optim.SGD(groups(dict(net.named_parameters())), lr=lr, momentum=momentum, nesterov=True,
                               weight_decay=weight_decay)
    opt = optim.SGD(groups(dict(model.named_parameters())), lr=lr, momentum=momentum, nesterov=True,
                    weight_decay=weight_decay)
    topt = torch_sgd(mirror)
    factor = optim.warmup_linear(steps, warmup=0.2)
    loss_fn = nn.CrossEntropyLoss(label_smoothing)
    loader = BatchLoader(images, labels, batch_size, mean, std, seed=seed, augment=Augment("crop,flip", padding=2),
                         dtype=np_dtype, prefetch=False)  # host arrays, augmented once, fed to both frameworks

    @contextlib.contextmanager
    def no_mkldnn():
        with warnings.catch_warnings():  # torch warns about TF32 on Intel GPUs whenever the flags change
            warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
            with torch.backends.mkldnn.flags(enabled=False):
                yield

    if control:  # the twin: the same batches with rows shuffled, or convolved with oneDNN off
        twin = copy.deepcopy(mirror)
        twin_opt = torch_sgd(twin)
        twin_conv = no_mkldnn if control == "im2col" else contextlib.nullcontext
        shuffle = np.random.default_rng(seed + 1) if control == "shuffle" else None

    def torch_step(net, optimizer, x, y, step_lr, conv_mode=contextlib.nullcontext):
        for g in optimizer.param_groups:
            g["lr"] = step_lr
        optimizer.zero_grad()
        with conv_mode():
            loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x).to(torch_dtype)), torch.from_numpy(y),
                                                     label_smoothing=label_smoothing)
            loss.backward()
        optimizer.step()
        return loss.item()

    def batches():
        for epoch in range(-(-steps // steps_per_epoch)):
            loader.set_epoch(epoch)
            yield from loader.batches()

    losses_mc, losses_torch, losses_control = [], [], []
    t_mc = t_torch = 0.0
    started = time.time()
    for step, (x, y) in zip(range(steps), batches()):
        opt.set_lr_factor(factor(step))

        t = time.perf_counter()
        loss = loss_fn.forward(model.forward(backend.asarray(x)), backend.asarray(y))
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        t_mc += time.perf_counter() - t
        losses_mc.append(float(loss))

        t = time.perf_counter()
        losses_torch.append(torch_step(mirror, topt, x, y, lr * factor(step)))
        t_torch += time.perf_counter() - t
        if control:
            rows = shuffle.permutation(len(y)) if shuffle is not None else slice(None)  # slice(None): views, no copy
            losses_control.append(torch_step(twin, twin_opt, x[rows], y[rows], lr * factor(step), twin_conv))
        if log and (step % max(1, steps // 10) == 0 or step == steps - 1):
            log(f"step {step + 1}/{steps}: loss minitorch {losses_mc[-1]:.6f} torch {losses_torch[-1]:.6f} "
                f"|diff| {abs(losses_mc[-1] - losses_torch[-1]):.2e}")

    ours_state, their_state = model.state_dict(), {k: v.detach().numpy() for k, v in mirror.state_dict().items()}
    param_diff = max(float(np.abs(ours_state[k].astype(np.float64) - their_state[k].astype(np.float64)).max())
                     for k in ours_state if ours_state[k].dtype.kind == "f")

    from minitorch_cifar.train import evaluate
    _, acc_mc, _ = evaluate(model, data.test.images, data.test.labels, mean, std, dtype=np_dtype)

    def torch_accuracy(net, conv_mode=contextlib.nullcontext):
        net.eval()
        correct = 0
        with torch.no_grad(), conv_mode():
            for i in range(0, len(data.test.labels), 500):
                xt = torch.from_numpy(normalize(data.test.images[i:i + 500], mean, std, np_dtype))
                correct += int((net(xt).argmax(1).numpy() == data.test.labels[i:i + 500]).sum())
        return 100.0 * correct / max(1, len(data.test.labels))
    acc_torch = torch_accuracy(mirror)

    diffs = np.abs(np.array(losses_mc) - np.array(losses_torch))
    result = dict(
        model=model_name, dtype=dtype, steps=steps, batch_size=batch_size, seed=seed, lr=lr, momentum=momentum,
        weight_decay=weight_decay, label_smoothing=label_smoothing, schedule="warmup_linear(0.2)", augment="crop(2, reflect),flip",
        data=getattr(data, "source", ""), train_images=int(len(labels)), backend=backend_name,
        losses_minitorch=losses_mc, losses_torch=losses_torch, max_abs_loss_diff=float(diffs.max()),
        max_abs_param_diff=param_diff, test_accuracy_minitorch=acc_mc, test_accuracy_torch=acc_torch,
        seconds_minitorch=t_mc, seconds_torch=t_torch, wall_seconds=time.time() - started)
    if control:
        result.update(control=control, losses_torch_control=losses_control, test_accuracy_torch_control=torch_accuracy(twin, twin_conv),
                      max_abs_loss_diff_control=float(np.abs(np.array(losses_torch) - np.array(losses_control)).max()))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "crossval.json").write_text(json.dumps(result, indent=2))
    _plot(result, out / "crossval.png")
    return result


def _plot(result, path):
    from minitorch_cifar.plots import plt, _save
    steps = np.arange(1, len(result["losses_minitorch"]) + 1)
    fig, (ax, ax_diff) = plt.subplots(1, 2, figsize=(10, 4))
    ax.plot(steps, result["losses_torch"], "-", lw=3, alpha=0.5, label="PyTorch")
    ax.plot(steps, result["losses_minitorch"], "--", lw=1, label="minitorch")
    ax.set(xlabel="step", ylabel="training loss", title=f"{result['model']}, {result['dtype']}: same weights, batches, SGD")
    ax.legend()
    diff = np.abs(np.array(result["losses_minitorch"]) - np.array(result["losses_torch"]))
    ax_diff.semilogy(steps, np.maximum(diff, 1e-20), label="minitorch vs torch")
    if "losses_torch_control" in result:
        control = np.abs(np.array(result["losses_torch_control"]) - np.array(result["losses_torch"]))
        ax_diff.semilogy(steps, np.maximum(control, 1e-20), alpha=0.6, label=CONTROL_LABELS[result["control"]])
        ax_diff.legend()
    ax_diff.set(xlabel="step", ylabel="|loss difference|", title=f"max {diff.max():.2e}")
    for a in (ax, ax_diff):
        a.grid(alpha=0.3)
    return _save(fig, path)


def summarize(runs, out):
    """Across float32 crossval runs with a control (one per seed): the test-accuracy gap minitorch - torch
    next to the gap control - torch. If minitorch only rounds differently, the two gaps are alike in size;
    writes ``out/summary.json``, ``summary.md`` and ``summary.png``. ``runs``: run folders or glob patterns."""
    def expand(run):
        if not any(c in str(run) for c in "*?["):
            return [Path(run)]
        return [Path(f) for f in glob.glob(str(run)) if (Path(f) / "crossval.json").is_file()]
    folders = sorted({f for r in runs for f in expand(r)})
    rows = []
    for folder in folders:
        r = json.loads((Path(folder) / "crossval.json").read_text())
        if "test_accuracy_torch_control" not in r:
            raise ValueError(f"{folder}/crossval.json has no control run (crossval --control)")
        rows.append(dict(run=str(folder), seed=r["seed"], control=r.get("control", "shuffle"), minitorch=r["test_accuracy_minitorch"],
                         torch=r["test_accuracy_torch"], torch_control=r["test_accuracy_torch_control"],
                         max_loss_diff=r["max_abs_loss_diff"], max_loss_diff_control=r["max_abs_loss_diff_control"]))
    rows.sort(key=lambda r: r["seed"])  # seed10 after seed9, not after seed1
    if not rows:
        raise ValueError(f"no crossval runs in {', '.join(map(str, runs))}")
    if len({r["control"] for r in rows}) > 1:
        raise ValueError("these runs use different controls; summarize one kind at a time")

    def stats(gaps):
        gaps = np.round(gaps, 6)  # accuracies are multiples of 1/len(test): 0.5 must compare as 0.5
        return dict(mean=float(gaps.mean()), mean_abs=float(np.abs(gaps).mean()), sd=float(gaps.std(ddof=1)) if len(gaps) > 1 else 0.0,
                    max_abs=float(np.abs(gaps).max()), within_half_point=int((np.abs(gaps) <= 0.5).sum()), gaps=gaps.round(4).tolist())
    summary = dict(runs=len(rows), control=rows[0]["control"], rows=rows,
                   minitorch_minus_torch=stats([r["minitorch"] - r["torch"] for r in rows]),
                   control_minus_torch=stats([r["torch_control"] - r["torch"] for r in rows]),
                   max_loss_diff=float(max(r["max_loss_diff"] for r in rows)),
                   max_loss_diff_control=float(max(r["max_loss_diff_control"] for r in rows)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = ["| seed | minitorch | torch | control | minitorch - torch | control - torch |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['minitorch']:.2f} | {r['torch']:.2f} | {r['torch_control']:.2f} | {r['minitorch'] - r['torch']:+.2f} "
              f"| {r['torch_control'] - r['torch']:+.2f} |" for r in rows]
    for name, key in (("minitorch - torch", "minitorch_minus_torch"), ("control - torch", "control_minus_torch")):
        s = summary[key]
        lines.append(f"\n{name}: mean {s['mean']:+.2f}, mean abs {s['mean_abs']:.2f}, sd {s['sd']:.2f}, max abs {s['max_abs']:.2f} "
                     f"points; within 0.5 points in {s['within_half_point']} of {len(rows)} seeds")
    summary["markdown"] = "\n".join(lines)
    (out / "summary.md").write_text(f"Control: {CONTROL_LABELS[summary['control']]}\n\n{summary['markdown']}\n")

    from minitorch_cifar.plots import plt, _save
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, key in enumerate(("minitorch_minus_torch", "control_minus_torch")):
        gaps = summary[key]["gaps"]
        ax.plot(np.full(len(gaps), i) + np.linspace(-0.15, 0.15, len(gaps)), gaps, "o", alpha=0.7)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks([0, 1], ["minitorch - torch", CONTROL_LABELS[summary["control"]].replace("torch vs torch, ", "control: ") + " - torch"])
    ax.set(ylabel="test accuracy gap (points)", title=f"float32, {len(rows)} seeds: same start, same batches")
    ax.grid(alpha=0.3)
    _save(fig, out / "summary.png")
    return summary
