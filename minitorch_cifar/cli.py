"""The ``minitorch-cifar`` command: train, evaluate, plot, seeds, sweep, crossval, selftest."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from minitorch_cifar.train import FLOAT_GEMMS, TrainConfig


def _bool_flag(parser, name, default, help):
    parser.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction, default=default, help=help)


def add_train_options(p):
    d = TrainConfig()
    p.add_argument("--data", default=None, help="folder or archive with CIFAR-10 (default: the standard cache folder)")
    p.add_argument("--model", default=d.model, choices=["simple", "deeper", "resnet", "fast"])
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--momentum", type=float, default=d.momentum)
    _bool_flag(p, "nesterov", d.nesterov, "Nesterov momentum")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    _bool_flag(p, "decay-bias-bn", d.decay_bias_bn, "weight decay on biases and batch-norm parameters too (default: off)")
    p.add_argument("--bias-lr-scale", type=float, default=d.bias_lr_scale, help="lr multiplier for batch-norm biases")
    p.add_argument("--schedule", default=d.schedule, help="constant, step, cosine, onecycle (linear warmup then linear decay), warmup_linear, airbench")
    p.add_argument("--warmup", type=float, default=d.warmup, help="fraction of steps of linear warmup")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--activation", default=None, help="relu, leaky_relu, elu, gelu, tanh (default: the model's)")
    p.add_argument("--dropout", type=float, default=None, help="dropout rate (default: the model's)")
    p.add_argument("--no-bn", dest="batchnorm", action="store_const", const=False, default=None, help="no batch norm")
    p.add_argument("--bn", dest="batchnorm", action="store_const", const=True, help="force batch norm on")
    p.add_argument("--width", type=float, default=d.width, help="channel width multiplier")
    p.add_argument("--group-convs", type=int, default=d.group_convs, choices=[2, 3],
                   help="fast: convs a group; 3 adds airbench96's third, with a residual over the last two")
    p.add_argument("--augment", default=d.augment, help="comma list of crop, flip, altflip, cutout; or none")
    p.add_argument("--padding", type=int, default=d.padding, help="random-crop padding in pixels")
    p.add_argument("--pad-mode", default=d.pad_mode, choices=["reflect", "zero"])
    p.add_argument("--cutout-size", type=int, default=d.cutout_size)
    p.add_argument("--val-size", type=int, default=d.val_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--backend", default=d.backend, choices=["numpy", "numba", "cupy"])
    p.add_argument("--dtype", default=d.dtype, choices=["float32", "float64"])
    p.add_argument("--matmul-precision", default=d.matmul_precision, choices=["highest", "medium"],
                   help="medium: convolution GEMMs on bfloat16 operands summed in float32 (numba: Intel MKL's AMX GEMM)")
    p.add_argument("--float-gemm", default=d.float_gemm, metavar="{" + ",".join(FLOAT_GEMMS) + "}",
                   help="numba backend: the convolutions' float32 GEMMs from MKL, NumPy's OpenBLAS or this package's own "
                        "AVX-512 kernel (auto: MKL on Intel, ours elsewhere with AVX-512, else OpenBLAS)")
    p.add_argument("--tta", type=int, nargs="?", const=1, default=d.tta, choices=[0, 1, 2],
                   help="test-time augmentation for the final test: 1 mirror, 2 mirror and 1-pixel shifts (--tta alone: 1)")
    _bool_flag(p, "dirac-init", d.dirac_init, "start 3x3 convs as partly the identity")
    _bool_flag(p, "lookahead", d.lookahead, "airbench's lookahead EMA of the weights every 5 steps")
    p.add_argument("--bn-momentum", type=float, default=d.bn_momentum,
                   help="share of each batch in batch norm's running statistics, as in PyTorch (default: the model's)")
    p.add_argument("--whiten-bias-epochs", type=int, default=d.whiten_bias_epochs,
                   help="fast: freeze the whitening stem's bias after this many epochs (airbench: 3; default 0: never)")
    _bool_flag(p, "train-bn-scales", d.train_bn_scales, "fast: train the batch-norm scales (default: frozen at 1, as airbench)")
    _bool_flag(p, "decay-bn-scales", d.decay_bn_scales, "with --decay-bias-bn, decay the batch-norm scales too "
               "(default; --no-decay-bn-scales exempts them)")
    _bool_flag(p, "whiten", d.whiten, "fast: set the 2x2 stem to the data's patch whitening and freeze its weights "
               "(default; --no-whiten: a randomly initialised stem that trains)")
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--train-subset", type=int, default=d.train_subset, help="train on only the first N images (quick checks)")
    p.add_argument("--out", default=d.out, help="run folder")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--distributed", action="store_true", help="data-parallel over MPI ranks: mpiexec -n K minitorch-cifar train ...")
    p.add_argument("--sync-bn", action="store_true", help="with --distributed: batch-norm statistics over all ranks")
    p.add_argument("--select-keep", type=float, default=d.select_keep,
                   help="fast: train on this share of each batch, the examples a small proxy network finds hardest "
                        "(airbench96_faster's selection: 0.5; default 1: all)")
    p.add_argument("--proxy-widths", default=d.proxy_widths, help="with --select-keep: the proxy's group widths")
    p.add_argument("--proxy-every", type=int, default=d.proxy_every,
                   help="with --select-keep: the proxy takes an SGD step every this many steps")


def config_from_args(args) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def cmd_train(args):
    from minitorch_cifar.train import train
    config = TrainConfig(**json.loads(Path(args.config_json).read_text())) if args.config_json else config_from_args(args)
    summary = train(config, progress=args.progress, resume=args.resume)
    if config.distributed:
        return 0
    return 0 if summary is not None else 130


def cmd_evaluate(args):
    import numpy as np
    from minitorch_cifar import backend, plots
    from minitorch_cifar.data import load_cifar10
    from minitorch_cifar.train import model_from_checkpoint, predict, score
    backend.set_backend(args.backend)
    data, logits, members = None, 0.0, []
    with backend.use_float32_matmul_precision(args.matmul_precision):
        for path in args.checkpoints:  # several: an ensemble, the mean of the models' logits (each its own normalisation)
            model, meta = model_from_checkpoint(path)
            if data is None:
                data = load_cifar10(args.data or meta["config"]["data"])
            member = predict(model, data.test.images, meta["mean"], meta["std"], tta=args.tta,
                             dtype=np.dtype(meta["config"]["dtype"]))
            members.append(score(member, data.test.labels)[1])
            logits = logits + member / len(args.checkpoints)
    loss, acc, preds = score(logits, data.test.labels)
    labels = data.test.labels
    matrix = np.zeros((10, 10), np.int64)
    np.add.at(matrix, (labels, preds), 1)
    per_class = {c: 100.0 * matrix[i, i] / max(1, matrix[i].sum()) for i, c in enumerate(data.classes)}
    out = Path(args.out or Path(args.checkpoints[0]).parent)
    out.mkdir(parents=True, exist_ok=True)
    metrics = dict(test_accuracy=acc, test_loss=loss, tta=args.tta, matmul_precision=args.matmul_precision,
                   per_class_accuracy=per_class,
                   confusion_matrix=matrix.tolist(), classes=list(data.classes), data=data.source,
                   **({"checkpoint": str(args.checkpoints[0])} if len(members) == 1 else
                      {"checkpoints": list(map(str, args.checkpoints)), "member_test_accuracies": members}))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plots.confusion(matrix, data.classes, out / "confusion.png")
    if len(members) > 1:
        print(f"ensemble of {len(members)}: members " + ", ".join(f"{a:.2f}%" for a in members))
    print(f"test accuracy {acc:.2f}% (loss {loss:.4f}); per class: " + ", ".join(f"{c} {a:.1f}" for c, a in per_class.items()))
    print(f"wrote {out / 'metrics.json'} and {out / 'confusion.png'}")
    return 0


def cmd_plot(args):
    from minitorch_cifar import plots
    for d in args.run_dirs:
        if not (Path(d) / "history.json").is_file():
            raise ValueError(f"{d}: no history.json (is it a run folder?)")
    out = args.out or (Path(args.run_dirs[0]) / "curves.png" if len(args.run_dirs) == 1 else "curves.png")
    print(f"wrote {plots.plot_runs(args.run_dirs, out)}")
    return 0


def cmd_seeds(args):
    from minitorch_cifar import experiments
    summary = experiments.run_seeds(config_from_args(args), args.seeds, jobs=args.jobs, scheduler=args.scheduler,
                                    progress=args.progress, ranks=args.ranks)
    print(json.dumps({k: summary[k] for k in ("test_accuracies", "mean", "std", "min", "max")}, indent=2))
    return 0 if not summary["failed"] else 1


def cmd_sweep(args):
    from minitorch_cifar import experiments
    grid = experiments.parse_grid(args.grid)
    result = experiments.run_sweep(config_from_args(args), grid, jobs=args.jobs, scheduler=args.scheduler,
                                   progress=args.progress, ranks=args.ranks)
    print(result["markdown"])
    return 0 if not result["failed"] else 1


def cmd_crossval_summary(args):
    from minitorch_cifar import crossval
    summary = crossval.summarize(args.runs, args.out)
    print(f"{summary['runs']} runs, control: {crossval.CONTROL_LABELS[summary['control']]}\n{summary['markdown']}")
    return 0


def cmd_crossval(args):
    from minitorch_cifar import crossval
    result = crossval.run(args.model, args.steps, args.dtype, args.data, args.batch_size, args.seed, args.out,
                          lr=args.lr, epochs=args.epochs, train_subset=args.train_subset, control=args.control)
    print(f"max |loss difference| {result['max_abs_loss_diff']:.3g}, max |parameter difference| "
          f"{result['max_abs_param_diff']:.3g}; test accuracy minitorch {result['test_accuracy_minitorch']:.2f}% "
          f"torch {result['test_accuracy_torch']:.2f}%; wrote {args.out}/crossval.json and crossval.png")
    if args.control:
        print(f"control ({crossval.CONTROL_LABELS[args.control]}: only rounding differs): test accuracy "
              f"{result['test_accuracy_torch_control']:.2f}%, max |loss difference| to torch {result['max_abs_loss_diff_control']:.3g}")
    return 0


def cmd_selftest(args):
    from minitorch_cifar import selftest
    return selftest.run(args.backend)


def build_parser():
    parser = argparse.ArgumentParser(prog="minitorch-cifar", description="Train and check CNNs on CIFAR-10 with minitorch_cifar.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model; writes a run folder")
    add_train_options(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--config-json", default=None, help="train exactly the TrainConfig in this JSON file (other options ignored)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test accuracy, per-class accuracy and confusion matrix of a checkpoint "
                                         "(of several: their ensemble, the mean of their logits)")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--backend", default="numba", choices=["numpy", "numba", "cupy"])
    p.add_argument("--tta", type=int, nargs="?", const=1, default=0, choices=[0, 1, 2])
    p.add_argument("--matmul-precision", default="highest", choices=["highest", "medium"],
                   help="medium: the convolutions' GEMMs on bfloat16 operands, as the runs trained with it evaluate "
                        "at their end (faster where there is AMX; the default is float32)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("plot", help="curves of one run, or several overlaid")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_plot)

    for name, helptext in (("seeds", "one recipe over several seeds: mean, std, min, max"),
                           ("sweep", "a grid over train options: a table and a plot")):
        p = sub.add_parser(name, help=helptext)
        add_train_options(p)
        if name == "seeds":
            p.add_argument("--seeds", type=int, nargs="+", required=True)
            p.set_defaults(func=cmd_seeds)
        else:
            p.add_argument("--grid", action="append", required=True, help="option=v1,v2,... (repeatable)")
            p.set_defaults(func=cmd_sweep)
        p.add_argument("--jobs", type=int, default=1, help="runs at once in local processes")
        p.add_argument("--scheduler", default=None, help="a Dask scheduler address: run on that cluster")
        p.add_argument("--ranks", type=int, default=1, help="run each training as mpiexec -n RANKS (one core per rank)")

    p = sub.add_parser("crossval", help="train the same network in minitorch and torch side by side")
    p.add_argument("--model", default="simple", choices=["simple", "deeper", "resnet", "fast"])
    p.add_argument("--steps", type=int, default=30, help="training steps (0 with --epochs: whole epochs)")
    p.add_argument("--epochs", type=int, default=0)
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--data", default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-subset", type=int, default=0)
    p.add_argument("--out", default="runs/crossval")
    p.add_argument("--control", nargs="?", const="shuffle", default=None, choices=["shuffle", "im2col"],
                   help="also train a second torch copy whose sums are rounded differently, the yardstick for minitorch "
                        "vs torch: 'shuffle' (the default) shuffles each batch's rows; 'im2col' turns oneDNN off, so "
                        "torch convolves by im2col + GEMM as minitorch does")
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser("crossval-summary", help="the accuracy gaps of several float32 crossval --control runs, side by side")
    p.add_argument("runs", nargs="+", help="crossval run folders or glob patterns (quote them)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_crossval_summary)

    p = sub.add_parser("selftest", help="every layer on a backend against the numpy reference")
    p.add_argument("--backend", default="numba", choices=["numba", "cupy"])
    p.set_defaults(func=cmd_selftest)
    return parser


def main(argv=None):
    from minitorch_cifar.backend import BackendUnavailable
    from minitorch_cifar.data import DataError
    from minitorch_cifar.train import TrainingDiverged
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DataError as e:
        print(f"minitorch-cifar: data error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"minitorch-cifar: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, BackendUnavailable) as e:
        print(f"minitorch-cifar: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minitorch-cifar: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
