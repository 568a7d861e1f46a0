"""Training-step and inference throughput of minitorch (numpy and numba backends) beside PyTorch.

Same architecture (torch's copy is built by minitorch_cifar.torch_mirror with the same weights),
float32, the same number of threads for everyone, repetitions alternated between the frameworks inside
one process, medians reported; each ratio to torch is the median of ratios paired within a repetition,
with its quartiles (inference, cheap and the noisiest, is timed three times a repetition). Peak memory of
a training step is measured separately, each framework in a fresh subprocess (growth of the peak RSS over
the step, after a warm-up step).

    python benchmarks/throughput.py                     # table + benchmarks/results/throughput.json
    python benchmarks/throughput.py --profile fast      # share of time per layer type: training step, inference
    python benchmarks/throughput.py --profile fast --width 2 --group-convs 3 --batches 512 --threads 1 --bf16
                                                        # the 93% recipe's step, as one rank of two runs it
    python benchmarks/throughput.py --bf16 --out benchmarks/results/throughput_bf16.json
                                                        # + rows with bfloat16 conv GEMMs, both frameworks
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import minitorch_cifar as mc
from minitorch_cifar import machine, models, nn
from minitorch_cifar.torch_mirror import to_torch

HERE = Path(__file__).resolve().parent


def make_model(arch, width=1.0, group_convs=2, seed=0):
    """minitorch's model alone (--profile needs no torch): any width and, for `fast`, airbench96's 3-conv groups."""
    mc.set_default_dtype(np.float32)
    mc.manual_seed(seed)
    return models.build_model(arch, width=width, group_convs=group_convs)


def make_models(arch, seed=0):
    model = make_model(arch, seed=seed)
    return model, to_torch(model)


def mc_train_step(model, opt, loss_fn, x, y):
    loss = loss_fn.forward(model.forward(x), y)
    opt.zero_grad()
    model.backward(loss_fn.backward())
    opt.step()
    return float(loss)


def torch_train_step(torch, model, opt, x, y):
    opt.zero_grad(set_to_none=False)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


@contextlib.contextmanager
def precision(bf16, torch=None):
    """Convolution GEMMs on bfloat16 operands (bf16=True) or float32, for minitorch or (given) torch."""
    def use(half):
        if torch is None:
            mc.set_float32_matmul_precision("medium" if half else "highest")
        else:
            torch.backends.mkldnn.conv.fp32_precision = "bf16" if half else "none"
    use(bf16)
    try:
        yield
    finally:
        use(False)


def bench(arch, batch, backends, reps, threads, bf16=False, infer_repeat=3):
    import torch
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    model, tmodel = make_models(arch)
    opt = mc.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    topt = torch.optim.SGD([p for p in tmodel.parameters() if p.requires_grad], lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    runners = {}
    for b, half in [(b, False) for b in backends] + ([("numba", True)] if bf16 else []):
        def train(b=b, half=half):
            with mc.use_backend(b), precision(half):
                return mc_train_step(model, opt, loss_fn, x, y)

        def infer(b=b, half=half):
            with mc.use_backend(b), precision(half):
                model.eval()
                model.forward(x)
                model.train()
        runners[f"minitorch-{b}" + ("-bf16" if half else "")] = (train, infer)

    for half in (False, True) if bf16 else (False,):
        def ttrain(half=half):
            with precision(half, torch):
                return torch_train_step(torch, tmodel, topt, xt, yt)

        def tinfer(half=half):
            with precision(half, torch):
                tmodel.eval()
                with torch.no_grad():
                    tmodel(xt)
                tmodel.train()
        runners["torch-bf16" if half else "torch"] = (ttrain, tinfer)

    times = {name: {"train": [], "infer": []} for name in runners}
    for name, (tr, inf) in runners.items():  # warm-up: compile kernels, allocate pools
        tr(), inf()
    for rep in range(reps):
        for name, (tr, inf) in runners.items():
            if name == "minitorch-numpy" and rep >= max(2, reps // 3):
                continue  # the reference is slow: a few repetitions are enough for its order of magnitude
            for kind, fn, repeat in (("train", tr, 1), ("infer", inf, infer_repeat)):
                for _ in range(repeat):
                    t = time.perf_counter()
                    fn()
                    times[name][kind].append(time.perf_counter() - t)
    result = {}
    for name, t in times.items():
        result[name] = {f"{k}_images_per_s": batch / statistics.median(v) for k, v in t.items()}
        for k, v in t.items():
            # ratios paired within a repetition (timed seconds apart) cancel the machine's slow drifts,
            # which move both frameworks alike; their median and quartiles are the reported figure
            paired = [tt / tm for tt, tm in zip(times["torch"][k], v)]
            q1, median, q3 = np.percentile(paired, [25, 50, 75])
            result[name][f"{k}_ratio_vs_torch"] = float(median)
            result[name][f"{k}_ratio_quartiles"] = [float(q1), float(q3)]
    return result


def _peak_rss_mib():
    """VmHWM of this process. (ru_maxrss would do, but Linux carries it over from the parent across exec.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_child(framework, arch, batch, threads):
    """Run in a fresh process: the growth of peak RSS (MiB) over one training step after a warm-up step."""
    import torch
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    model, tmodel = make_models(arch)
    half = framework.endswith("-bf16")
    framework = framework.removesuffix("-bf16")
    if framework == "torch":
        torch.backends.mkldnn.conv.fp32_precision = "bf16" if half else "none"
        del model
        opt = torch.optim.SGD([p for p in tmodel.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        step = lambda: torch_train_step(torch, tmodel, opt, xt, yt)  # noqa: E731
    else:
        del tmodel
        mc.set_backend(framework.split("-")[1])
        mc.set_float32_matmul_precision("medium" if half else "highest")
        opt = mc.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        step = lambda: mc_train_step(model, opt, loss_fn, x, y)  # noqa: E731
        # the first step allocates momentum buffers; compile kernels on a tiny batch so they do not count
        mc_train_step(model, opt, loss_fn, x[:2], y[:2])
    base = _peak_rss_mib()
    step()
    step()
    return _peak_rss_mib() - base


def peak_memory(framework, arch, batch, threads):
    out = subprocess.run([sys.executable, __file__, "--memory-child", framework, arch, str(batch), str(threads)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def profile(arch, batch, backend_name, reps=3, width=1.0, group_convs=2):
    """Share of a training step's time per layer type, forward and backward; then of inference."""
    model = make_model(arch, width, group_convs)
    groups = f", {group_convs} convs a group" if arch == "fast" else ""
    name = f"{arch} (width {width:g}{groups}), batch {batch}, {backend_name}"
    timings = {}

    def wrap(m, kind):
        fn = getattr(m, kind)
        key = (type(m).__name__, kind)

        def timed(*a, **k):
            t = time.perf_counter()
            r = fn(*a, **k)
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - t
            return r
        setattr(m, kind, timed)

    for m in model.modules():
        if not isinstance(m, (nn.Sequential, nn.Residual)):
            wrap(m, "forward"), wrap(m, "backward")
    opt = mc.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    loss_fn = nn.CrossEntropyLoss()
    with mc.use_backend(backend_name):
        mc_train_step(model, opt, loss_fn, x, y)
        timings.clear()
        total = time.perf_counter()
        opt_time = 0.0
        for _ in range(reps):
            loss_fn.forward(model.forward(x), y)
            opt.zero_grad()
            model.backward(loss_fn.backward())
            t = time.perf_counter()
            opt.step()
            opt_time += time.perf_counter() - t
        total = time.perf_counter() - total
    timings[("SGD", "step")] = opt_time
    _print_shares(f"{name}: {reps * batch / total:.0f} images/s (training step)", timings, total, reps)
    model.eval()  # the same wrappers on inference: a forward pass in evaluation mode
    with mc.use_backend(backend_name):
        model.forward(x)
        timings.clear()
        total = time.perf_counter()
        for _ in range(reps):
            model.forward(x)
        total = time.perf_counter() - total
    model.train()
    _print_shares(f"{name}: {reps * batch / total:.0f} images/s (inference)", timings, total, reps)


def _print_shares(title, timings, total, reps):
    print(f"\n{title}")
    print(f"{'layer':<18}{'pass':<10}{'share':>8}{'ms/step':>10}")
    for (name, kind), t in sorted(timings.items(), key=lambda kv: -kv[1]):
        print(f"{name:<18}{kind:<10}{100 * t / total:>7.1f}%{1000 * t / reps:>10.1f}")
    print(f"{'(other)':<28}{100 * (1 - sum(timings.values()) / total):>7.1f}%")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--archs", default="simple,fast")
    p.add_argument("--batches", default="128,512")
    p.add_argument("--backends", default="numba,numpy")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--profile", default=None, help="an architecture to profile instead of benchmarking")
    p.add_argument("--profile-backend", default="numba")
    p.add_argument("--width", type=float, default=1.0, help="with --profile: the model's channel multiplier")
    p.add_argument("--group-convs", type=int, default=2, choices=[2, 3], help="with --profile: convs per group of `fast`")
    p.add_argument("--bf16", action="store_true",
                   help="add rows with the convolutions' GEMMs on bfloat16 operands: minitorch-numba-bf16 (matmul "
                        "precision medium) and torch-bf16 (oneDNN conv fp32_precision bf16); with --profile: profile that")
    p.add_argument("--out", default=str(HERE / "results" / "throughput.json"))
    p.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        framework, arch, batch, threads = args.memory_child
        print(peak_memory_child(framework, arch, int(batch), int(threads)))
        return
    import numba
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    if args.profile:
        mc.set_float32_matmul_precision("medium" if args.bf16 else "highest")
        for batch in map(int, args.batches.split(",")):
            profile(args.profile, batch, args.profile_backend, width=args.width, group_convs=args.group_convs)
        return
    import torch
    from minitorch_cifar.kernels.cpu import conv
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    report = dict(machine=dict(**machine.describe(), threads=args.threads, python=platform.python_version(),
                               numpy=np.__version__, numba=numba.__version__,
                               torch=torch.__version__, openblas_env=env, kernels_float_blas=conv.float_blas()),
                  date=time.strftime("%Y-%m-%d %H:%M"), results=[])
    lines = []

    def say(line):  # the table goes to the terminal and, beside the JSON, to a .txt
        print(line)
        lines.append(line)
    m = report["machine"]
    say(f"{m['cpu']}, {m['cores']} cores, {'/'.join(m['isa'] or ['ISA unknown'])}; "
        f"threads {args.threads}; conv GEMMs (float32): {m['kernels_float_blas']}; "
        f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}  ({report['date']})")
    say("ratio: images/s over torch's, median of the repetitions' paired ratios [quartiles]")
    say(f"{'arch':<7}{'batch':>6}  {'framework':<21}{'train img/s':>12}{'ratio':>18}{'infer img/s':>12}{'ratio':>18}"
        f"{'peak MiB':>10}{'ratio':>7}")

    def ratio(v, kind):
        q1, q3 = v[f"{kind}_ratio_quartiles"]
        return f"{v[f'{kind}_ratio_vs_torch']:>7.2f} [{q1:.2f}-{q3:.2f}]"

    for arch in args.archs.split(","):
        for batch in map(int, args.batches.split(",")):
            r = bench(arch, batch, args.backends.split(","), args.reps, args.threads, args.bf16)
            if not args.no_memory:
                for name in r:
                    r[name]["train_peak_mib"] = peak_memory(name, arch, batch, args.threads)
                for name in r:
                    r[name]["memory_ratio_vs_torch"] = r[name]["train_peak_mib"] / max(1e-9, r["torch"]["train_peak_mib"])
            for name, v in r.items():
                mem = f"{v['train_peak_mib']:>10.0f}{v['memory_ratio_vs_torch']:>7.2f}" if "train_peak_mib" in v else ""
                say(f"{arch:<7}{batch:>6}  {name:<21}{v['train_images_per_s']:>12.0f}{ratio(v, 'train'):>18}"
                    f"{v['infer_images_per_s']:>12.0f}{ratio(v, 'infer'):>18}{mem}")
            report["results"].append(dict(arch=arch, batch=batch, frameworks=r))
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=2))
            Path(args.out).with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
