"""The training loop: one epoch after another of forward, loss, backward and SGD step, with a history,
checkpoints that resume bit-for-bit, and a test evaluation at the end.

A run folder holds ``config.json``, ``history.json`` / ``history.csv`` (one row per epoch, written as it
goes), ``checkpoint.npz`` (the last completed step), ``best.npz`` (best validation accuracy),
``curves.png`` and, at the end, ``summary.json``.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minitorch_cifar import backend, machine, nn, optim
from minitorch_cifar.data import Augment, BatchLoader, channel_stats, load_cifar10, normalize, random_subset, train_val_split
from minitorch_cifar.data.cifar import atomic_save_npz
from minitorch_cifar.models import build_model, count_parameters, dirac_init, init_whitening


FLOAT_GEMMS = ("auto", "mkl", "openblas", "numba")  # numba: kernels/cpu/gemm.py, this package's own


@dataclass
class TrainConfig:
    data: str | None = None
    model: str = "simple"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_bias_bn: bool = False  # weight decay on biases and batch-norm parameters too
    bias_lr_scale: float = 1.0  # lr multiplier for batch-norm biases
    schedule: str = "onecycle"
    warmup: float = 0.2
    label_smoothing: float = 0.0
    activation: str | None = None  # None: the architecture's default
    dropout: float | None = None
    batchnorm: bool | None = None
    width: float = 1.0
    group_convs: int = 2  # fast: 3 adds airbench96's third conv a group, with a residual over the last two
    augment: str = "crop,flip"
    padding: int = 4
    pad_mode: str = "reflect"
    cutout_size: int = 8
    val_size: int = 5000
    seed: int = 0
    backend: str = "numba"
    dtype: str = "float32"
    matmul_precision: str = "highest"  # "medium": conv GEMMs on bfloat16 operands (backend.set_float32_matmul_precision)
    float_gemm: str = "auto"  # numba backend: whose float32 GEMMs the convolutions call (kernels/cpu/conv.py FLOAT_BLAS)
    tta: int = 0  # test-time augmentation: 1 = average with the mirror image, 2 = also 1-pixel shifts
    dirac_init: bool = False  # start 3x3 convs as partly the identity (models.dirac_init)
    lookahead: bool = False  # airbench's lookahead: every 5 steps pull the weights toward an EMA
    bn_momentum: float | None = None  # share of each batch in BN's running statistics (PyTorch's sense); None: the architecture's
    whiten_bias_epochs: int = 0  # fast: freeze the whitening stem's bias after this many epochs (airbench: 3); 0: never
    train_bn_scales: bool = False  # fast: train the batch-norm scales (the architecture freezes them at 1, as airbench)
    decay_bn_scales: bool = True  # with decay_bias_bn: False exempts the batch-norm scales from weight decay
    whiten: bool = True  # fast: the 2x2 stem is the data's patch whitening, frozen; False: a random stem that trains
    eval_batch_size: int = 500
    train_subset: int = 0  # > 0: train on only this many images (quick experiments and tests)
    distributed: bool = False  # data-parallel over MPI ranks (launch with mpiexec -n K)
    sync_bn: bool = False  # with distributed: batch-norm statistics over all ranks
    select_keep: float = 1.0  # < 1: train on this share of each batch, the hardest by a proxy's loss (ProxySelector)
    proxy_widths: str = "32,64,64"  # with select_keep < 1: the proxy, a `fast` network of these group widths
    proxy_every: int = 4  # with select_keep < 1: the proxy trains every this many steps
    out: str = "runs/latest"

    def validate(self):
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.dropout is None or 0 <= self.dropout < 1, f"--dropout must be in [0, 1), got {self.dropout}"),
            (self.width > 0, f"--width must be > 0, got {self.width}"),
            (self.group_convs in (2, 3), f"--group-convs must be 2 or 3, got {self.group_convs}"),
            (self.group_convs == 2 or self.model == "fast", "--group-convs 3 needs --model fast (airbench96's groups)"),
            (self.val_size >= 0, f"--val-size must be >= 0, got {self.val_size}"),
            (self.dtype in ("float32", "float64"), f"--dtype must be float32 or float64, got {self.dtype}"),
            (self.matmul_precision in backend.MATMUL_PRECISIONS,
             f"--matmul-precision must be one of {', '.join(backend.MATMUL_PRECISIONS)}, got {self.matmul_precision}"),
            (self.float_gemm in FLOAT_GEMMS, f"--float-gemm must be one of {', '.join(FLOAT_GEMMS)}, got {self.float_gemm}"),
            (0 <= self.warmup < 1, f"--warmup must be in [0, 1), got {self.warmup}"),
            (not (self.nesterov and self.momentum == 0), "--nesterov needs --momentum > 0"),
            (self.tta in (0, 1, 2), f"--tta must be 0, 1 or 2, got {self.tta}"),
            (self.bn_momentum is None or 0 < self.bn_momentum <= 1, f"--bn-momentum must be in (0, 1], got {self.bn_momentum}"),
            (self.whiten_bias_epochs >= 0, f"--whiten-bias-epochs must be >= 0, got {self.whiten_bias_epochs}"),
            (self.whiten_bias_epochs == 0 or self.model == "fast", "--whiten-bias-epochs needs --model fast (the whitening stem)"),
            (not self.train_bn_scales or self.model == "fast", "--train-bn-scales needs --model fast (the others train them anyway)"),
            (self.decay_bn_scales or self.decay_bias_bn, "--no-decay-bn-scales only matters with --decay-bias-bn (else no BN parameter is decayed)"),
            (self.decay_bn_scales or self.model != "fast" or self.train_bn_scales,
             "--no-decay-bn-scales needs --train-bn-scales with --model fast (its scales are frozen at 1)"),
            (self.whiten or self.model == "fast", "--no-whiten needs --model fast (the only one with a whitening stem)"),
            (self.whiten or not self.whiten_bias_epochs, "--whiten-bias-epochs freezes the whitening stem's bias; --no-whiten has none"),
            (0 < self.select_keep <= 1, f"--select-keep must be in (0, 1], got {self.select_keep}"),
            (self.select_keep == 1 or (self.model == "fast" and self.whiten),
             "--select-keep < 1 needs --model fast with its whitening stem (the proxy is a small `fast`)"),
            (self.proxy_every >= 1, f"--proxy-every must be >= 1, got {self.proxy_every}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.schedule not in optim.SCHEDULES:
            raise ValueError(f"--schedule must be one of {', '.join(optim.SCHEDULES)}, got {self.schedule}")
        Augment(self.augment)  # raises on unknown names
        self.proxy_group_widths()
        return self

    def proxy_group_widths(self):
        try:
            widths = tuple(int(w) for w in self.proxy_widths.split(","))
        except ValueError:
            widths = ()
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"--proxy-widths must be three positive channel counts like 32,64,64, got {self.proxy_widths!r}")
        return widths


def as_current_config(saved: dict) -> dict:
    """A TrainConfig dict saved by an earlier version: fields added since count at their defaults (the
    behaviour that run had), so a new option does not make finished runs and checkpoints look foreign."""
    return {**dataclasses.asdict(TrainConfig()), **saved}


class TrainingDiverged(RuntimeError):
    pass


# ----------------------------------------------------------------------------- evaluation
def predict(model, images, mean, std, batch_size=500, tta=0, dtype=np.float32):
    """Logits (on the host) for uint8 images. tta 1: the mean over each image and its mirror; tta 2: half
    that, and a quarter each for the image shifted by one pixel up-left and down-right (both mirrored too)."""
    model.eval()
    xp = backend.xp()

    def mirrored(x):
        logits = model.forward(x)
        return logits if tta == 0 else 0.5 * (logits + model.forward(xp.ascontiguousarray(x[..., ::-1])))

    out = []
    for i in range(0, len(images), batch_size):
        x = backend.asarray(normalize(images[i:i + batch_size], mean, std, dtype))
        logits = mirrored(x)
        if tta >= 2:
            padded = xp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
            H, W = x.shape[2:]
            shifted = mirrored(xp.ascontiguousarray(padded[:, :, :H, :W])) + mirrored(xp.ascontiguousarray(padded[:, :, 2:, 2:]))
            logits = 0.5 * logits + 0.25 * shifted
        out.append(backend.to_numpy(logits))
    model.train()
    return np.concatenate(out) if out else np.zeros((0, 10))


def evaluate(model, images, labels, mean, std, batch_size=500, tta=0, dtype=np.float32):
    """(mean loss, accuracy in percent, predicted labels) over a whole split."""
    if len(labels) == 0:
        return float("nan"), float("nan"), np.zeros(0, np.int64)
    return score(predict(model, images, mean, std, batch_size, tta, dtype), labels)


def score(logits, labels):
    """(mean cross-entropy, accuracy in percent, predicted labels) of host logits."""
    loss = nn.CrossEntropyLoss().forward(logits.astype(np.float64), np.asarray(labels))
    preds = logits.argmax(axis=1)
    return float(loss), 100.0 * float((preds == labels).mean()), preds


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, model, optimizer, meta: dict, extra=None):
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update(extra or {})
    for g, velocities in enumerate(optimizer.state_dict()["velocity"]):
        for i, v in enumerate(velocities):
            if v is not None:
                arrays[f"velocity/{g}/{i}"] = v
    meta = {**meta, "lr": [g["lr"] for g in optimizer.param_groups], "rng_states": model.rng_states()}
    atomic_save_npz(Path(path), meta=np.array(json.dumps(meta)), **arrays)


def load_checkpoint(path):
    """(model state dict, {(group, index): velocity}, meta) from a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            state = {k[len("model/"):]: z[k] for k in z.files if k.startswith("model/")}
            velocity = {tuple(int(p) for p in k.split("/")[1:]): z[k] for k in z.files if k.startswith("velocity/")}
            meta["_ema"] = [z[f"ema/{i}"] for i in range(sum(k.startswith("ema/") for k in z.files))]
            meta["_proxy"] = {k: z[k] for k in z.files if k.startswith("proxy")}
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not a readable minitorch-cifar checkpoint ({e})") from None
    return state, velocity, meta


def model_from_checkpoint(path):
    """Rebuild the model of a checkpoint with its weights; returns (model, meta)."""
    state, _, meta = load_checkpoint(path)
    c = meta["config"]
    if c["dtype"] == "float64":
        backend.set_default_dtype(np.float64)
    model = build_model(c["model"], c["activation"], c["batchnorm"], c["dropout"], c["width"],
                        group_convs=c.get("group_convs", 2))  # checkpoints from before the option had 2
    model.load_state_dict(state)
    return model, meta


# ----------------------------------------------------------------------------- history
def _write_json(path, obj):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _write_history(out: Path, history: list):
    _write_json(out / "history.json", history)
    if history:
        with open(out / "history.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(history[0]))
            w.writeheader()
            w.writerows(history)


def schedule_options(config):
    """The keyword arguments of config's lr schedule (only the warmup ones take --warmup)."""
    return {"warmup": config.warmup} if config.schedule in ("cosine", "onecycle", "warmup_linear", "airbench") else {}


def _param_groups(model, config):
    """Four groups: conv/linear weights (decayed); their biases; batch-norm scales; batch-norm biases
    (lr x bias_lr_scale: airbench's rule, made for BN scales frozen at 1, so the scales, where they
    train, keep the base lr). Without --decay-bias-bn (the default) only the weights are decayed; with
    it, BN biases get weight_decay / bias_lr_scale, so lr * weight_decay, the shrink per step, is the
    same for every parameter (as airbench does), and --no-decay-bn-scales exempts the scales."""
    norms = [m for m in model.modules() if isinstance(m, nn.norm._BatchNorm)]
    in_norms = {id(p) for m in norms for p in (m.weight, m.bias)}
    others = [p for p in model.parameters() if id(p) not in in_norms]
    off = not config.decay_bias_bn
    return [{"params": [p for p in others if p.data.ndim > 1]},
            {"params": [p for p in others if p.data.ndim <= 1],
             "weight_decay": 0.0 if off else config.weight_decay},
            {"params": [m.weight for m in norms],
             "weight_decay": 0.0 if off or not config.decay_bn_scales else config.weight_decay},
            {"params": [m.bias for m in norms], "lr": config.lr * config.bias_lr_scale,
             "weight_decay": 0.0 if off else config.weight_decay / config.bias_lr_scale}]


def _sgd_and_schedule(model, config, total_steps):
    """The run's SGD over ``model``'s parameter groups, and its lr schedule (the network's and the proxy's alike)."""
    optimizer = optim.SGD(_param_groups(model, config), lr=config.lr, momentum=config.momentum,
                          nesterov=config.nesterov, weight_decay=config.weight_decay)
    return optimizer, optim.Schedule(optimizer, config.schedule, total_steps, **schedule_options(config))


class Lookahead:
    """airbench's lookahead: every ``every`` steps the EMA moves toward the weights (decay growing as
    0.95^5 * (t/T)^3) and the weights jump back to the EMA; at the end the weights are the EMA."""

    def __init__(self, model, total_steps, every=5):
        self.model, self.total, self.every = model, total_steps, every
        self.ema = [a.copy() for a in self._arrays()]

    def _arrays(self):
        arrays = [p.data for p in self.model.parameters()]
        for m in self.model.modules():
            arrays += [getattr(m, n) for n in m.buffer_names if getattr(m, n).dtype.kind == "f"]
        return arrays

    def _update(self, decay):
        current = self._arrays()
        for ema, a in zip(self.ema, current):  # current arrays: BN replaces its buffers every step
            ema += (1 - decay) * (a - ema)
            a[...] = ema

    def step(self, step):
        if step % self.every == 0:
            self._update(0.95 ** 5 * (step / self.total) ** 3)

    def finish(self):
        self._update(1.0)


class ProxySelector:
    """Hard-example selection (airbench96_faster, Keller Jordan 2024): a small `fast` network, the proxy,
    scores every batch, and the main network trains only on the ``keep`` share with the highest proxy loss,
    so each of its steps costs about ``keep`` as much. The main network's loss gradient is scaled by
    ``keep``, which keeps its lr per example (airbench sums the loss; this library averages it). The proxy
    trains too, on those hardest examples every ``every``-th step, with the run's optimiser settings and
    schedule; it needs no lookahead or test. Data-parallel, each rank keeps the hardest of its own shard."""

    def __init__(self, config, whiten_images, total_steps, comm):
        self.keep, self.every, self.comm = config.select_keep, config.proxy_every, comm
        self.model = build_model("fast", config.activation, True, 0.0, config.proxy_group_widths())
        if config.bn_momentum is not None:
            for m in self.model.modules():
                if isinstance(m, nn.norm._BatchNorm):
                    m.momentum = config.bn_momentum
        if config.dirac_init:
            dirac_init(self.model)
        init_whitening(self.model[0], whiten_images)
        self.model[0].bias.requires_grad = False  # airbench96_faster freezes the proxy's whole stem
        self.model.skip_unneeded_input_grads()
        if comm is not None:
            comm.broadcast_model(self.model)
        self.optimizer, self.schedule = _sgd_and_schedule(self.model, config, total_steps)
        self.loss_fn = nn.CrossEntropyLoss(config.label_smoothing)

    def select(self, x, y):
        """The indices (ascending) of the examples of (x, y) to train the main network on."""
        xp = backend.array_module(x)
        losses = self.loss_fn.per_example(self.model.forward(x), y)
        k = max(1, round(self.keep * len(y)))
        hardest = xp.sort(xp.argpartition(losses, len(y) - k)[len(y) - k:])
        if self.schedule.position % self.every == 0:
            mask = xp.zeros((len(y), 1), dtype=losses.dtype)
            mask[hardest] = 1
            self.optimizer.zero_grad()
            self.model.backward(self.loss_fn.backward() * mask)  # the loss summed over the hardest only
            if self.comm is not None:
                self.comm.average_gradients(self.model.parameters())
            self.optimizer.step()
        self.schedule.step()
        return hardest

    def arrays(self):
        """The proxy's weights and momenta, for a checkpoint."""
        arrays = {f"proxy/{k}": v for k, v in self.model.state_dict().items()}
        for g, velocities in enumerate(self.optimizer.state_dict()["velocity"]):
            arrays.update({f"proxy_velocity/{g}/{i}": v for i, v in enumerate(velocities) if v is not None})
        return arrays

    def load(self, arrays, position):
        self.model.load_state_dict({k[len("proxy/"):]: v for k, v in arrays.items() if k.startswith("proxy/")})
        for k, v in arrays.items():
            if k.startswith("proxy_velocity/"):
                g, i = (int(p) for p in k.split("/")[1:])
                self.optimizer.velocity[g][i] = backend.asarray(v)
        self.schedule.position = position
        self.optimizer.set_lr_factor(self.schedule.factor(position))


class _StopFlag:
    """First Ctrl-C asks the loop to stop after the current step (a consistent checkpoint); a second one aborts."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# ----------------------------------------------------------------------------- the loop
def train(config: TrainConfig, data=None, progress=True, resume=False, on_step=None, log=print, comm=None):
    """Train as ``config`` says; returns the summary dict (also written to ``out/summary.json``).

    ``on_step(epoch, batch)`` is called after every completed step; returning True stops the run there
    as Ctrl-C would (a checkpoint that ``resume=True`` continues from). With ``config.distributed``, every
    MPI rank calls this; an exception on any of them aborts them all.
    """
    config.validate()
    if config.distributed and comm is None:
        from minitorch_cifar.distributed import Communicator
        comm = Communicator()
    if comm is None:
        return _train(config, data, progress, resume, on_step, log, None)
    if not comm.is_root:
        progress, log = False, (lambda *a, **k: None)
    try:
        return _train(config, data, progress, resume, on_step, log, comm)
    except BaseException as e:  # noqa: BLE001 - one rank failing must not leave the others waiting forever
        comm.abort(f"{type(e).__name__}: {e}")


def _train(config, data, progress, resume, on_step, log, comm):
    from tqdm import tqdm
    from minitorch_cifar import plots

    root = comm is None or comm.is_root
    # precision first: one left by an earlier run in this process must not make set_backend refuse
    backend.set_float32_matmul_precision(config.matmul_precision)
    backend.set_backend(config.backend)  # raises, saying why, if "medium" cannot run on this backend here
    float_gemm = None
    if config.backend == "numba":
        from minitorch_cifar.kernels.cpu import conv as cpu_conv
        cpu_conv.FLOAT_BLAS = config.float_gemm  # like the precision: the process's setting from here on
        float_gemm = cpu_conv.float_blas()
    dtype = np.dtype(config.dtype)
    backend.set_default_dtype(dtype)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    data = data if data is not None else load_cifar10(config.data, download=config.data is None)
    train_split, val_split = train_val_split(data.train, config.val_size, config.seed)
    if config.train_subset:
        train_split = random_subset(train_split, config.train_subset, config.seed)
    mean, std = channel_stats(train_split.images)

    nn.module.manual_seed(config.seed)
    model = build_model(config.model, config.activation, config.batchnorm, config.dropout, config.width,
                        group_convs=config.group_convs)
    for i, m in enumerate(model.modules()):
        if isinstance(m, nn.Dropout):
            m.seed = [config.seed, i]
            m.rng = backend.random_generator(m.seed)
    for m in model.modules():
        if isinstance(m, nn.norm._BatchNorm):
            if config.bn_momentum is not None:
                m.momentum = config.bn_momentum
            if config.train_bn_scales:
                m.weight.requires_grad = True
    if config.dirac_init:
        dirac_init(model)
    whiten_images = normalize(train_split.images[:5000], mean, std, np.float64) if config.model == "fast" and config.whiten else None
    if whiten_images is not None:
        init_whitening(model[0], whiten_images)
    elif config.model == "fast":  # --no-whiten
        model[0].weight.requires_grad = True  # the stem keeps its random init and learns like the other convs
    if comm is not None:
        comm.broadcast_model(model)
        if config.sync_bn:
            from minitorch_cifar.distributed import enable_sync_bn
            enable_sync_bn(model, comm)
    loader = BatchLoader(train_split.images, train_split.labels, config.batch_size, mean, std, seed=config.seed,
                         augment=Augment(config.augment, config.padding, config.pad_mode, config.cutout_size), dtype=dtype,
                         shard=comm.shard(config.batch_size) if comm else None)
    steps = len(loader)
    if steps == 0:
        raise ValueError(f"--batch-size {config.batch_size} is larger than the {len(train_split)} training images")
    optimizer, schedule = _sgd_and_schedule(model, config, config.epochs * steps)
    lookahead = Lookahead(model, config.epochs * steps) if config.lookahead else None
    loss_fn = nn.CrossEntropyLoss(config.label_smoothing)
    selector = None
    if config.select_keep < 1:
        selector = ProxySelector(config, whiten_images, config.epochs * steps, comm)
    del whiten_images  # 5000 float64 images (123 MB): not to be held through the run

    state = dict(epoch=0, batch=0, history=[], best_val_accuracy=-1.0, sums=[0.0, 0, 0], epoch_seconds=0.0)
    if resume and (out / "checkpoint.npz").is_file():
        weights, velocity, meta = load_checkpoint(out / "checkpoint.npz")
        if as_current_config(meta["config"]) != {**dataclasses.asdict(config), "out": meta["config"]["out"]}:
            raise ValueError(f"{out}/checkpoint.npz was written with another configuration; resume with the same options")
        model.load_state_dict(weights)
        for (g, i), v in velocity.items():
            optimizer.velocity[g][i] = backend.asarray(v)
        model.set_rng_states(meta["rng_states"])
        if lookahead is not None:
            lookahead.ema = [backend.asarray(a) for a in meta["_ema"]]
        if selector is not None:
            selector.load(meta["_proxy"], meta["schedule_position"])
        schedule.position = meta["schedule_position"]
        optimizer.set_lr_factor(schedule.factor(schedule.position))
        state.update({k: meta[k] for k in state})
        log(f"resuming {out} at epoch {state['epoch'] + 1}, step {state['batch']}")
    if root:
        _write_json(out / "config.json", dataclasses.asdict(config))

    def extra_arrays():  # the lookahead EMA's and the proxy's
        arrays = {f"ema/{i}": backend.to_numpy(a) for i, a in enumerate(lookahead.ema)} if lookahead else {}
        return {**arrays, **({k: backend.to_numpy(v) for k, v in selector.arrays().items()} if selector else {})}

    def checkpoint_meta():
        return dict(state, config=dataclasses.asdict(config), schedule_position=schedule.position,
                    mean=list(mean), std=list(std), classes=list(data.classes))

    log(f"{config.model}: {count_parameters(model):,} parameters; {len(train_split)} train / {len(val_split)} val images; "
        f"{steps} steps per epoch; backend {config.backend}")
    stopped = False
    sync_every, pending = (10 if config.backend == "cupy" else 1), []

    def flush(epoch, b):
        """Add the pending steps' losses and correct counts to the epoch sums; stop on a NaN or inf loss."""
        for dev_loss, dev_correct, n in pending:
            value = float(dev_loss) if comm is None else float(comm.sum([float(dev_loss)])[0]) / comm.size
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"loss became {value} at epoch {epoch + 1}, step {b + 1} (lr {schedule.lr:.4g}); stopped. The last "
                    f"good checkpoint is {out / 'checkpoint.npz'} (epoch {state['epoch']}). Try a lower --lr.")
            k = 1 if comm is None else comm.size
            s = state["sums"]
            s[0], s[1], s[2] = s[0] + value * n * k, s[1] + int(dev_correct), s[2] + n * k
        pending.clear()
    with _StopFlag() as stop, np.errstate(over="ignore", invalid="ignore"):  # a NaN loss is caught below
        for epoch in range(state["epoch"], config.epochs):
            loader.set_epoch(epoch)
            model.train()
            if config.whiten_bias_epochs and epoch >= config.whiten_bias_epochs:
                model[0].bias.requires_grad = False  # SGD skips it from here on (and so on resume)
            if isinstance(model, nn.Sequential):
                model.skip_unneeded_input_grads()  # the image's gradient, and the frozen stem's
            t0 = time.time() - state["epoch_seconds"]
            bar = tqdm(total=steps, initial=state["batch"], desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                       disable=not progress, leave=False, mininterval=2, dynamic_ncols=True)
            for b, (x, y) in enumerate(loader.batches(start=state["batch"]), start=state["batch"]):
                share = 1.0
                if selector is not None:
                    hardest = selector.select(x, y)
                    x, y, share = x[hardest], y[hardest], len(hardest) / len(y)
                logits = model.forward(x)
                loss = loss_fn.forward(logits, y)
                # device scalars; read on the host every `sync_every` steps (1 on the CPU, 10 on a GPU)
                pending.append((loss, (logits.argmax(axis=1) == y).sum(), len(y)))
                if len(pending) >= sync_every or b == steps - 1:
                    flush(epoch, b)
                optimizer.zero_grad()
                model.backward(loss_fn.backward(share))
                if comm is not None:
                    comm.average_gradients(model.parameters())
                optimizer.step()
                schedule.step()
                if lookahead is not None:
                    lookahead.step(schedule.position)
                state["batch"] = b + 1
                bar.update(1)
                if b % 10 == 0 and state["sums"][2]:
                    s = state["sums"]
                    bar.set_postfix(loss=f"{s[0] / s[2]:.3f}", acc=f"{100 * s[1] / s[2]:.1f}%", lr=f"{schedule.lr:.3g}")
                wants_stop = bool(on_step and on_step(epoch, b)) or stop.requested
                if comm is not None:
                    wants_stop = comm.sum([wants_stop])[0] > 0  # all ranks stop at the same step
                if wants_stop:
                    flush(epoch, b)
                    stopped = True
                    break
            bar.close()
            state["epoch_seconds"] = time.time() - t0
            if stopped:
                if root:
                    save_checkpoint(out / "checkpoint.npz", model, optimizer, checkpoint_meta(), extra_arrays())
                log(f"stopped at epoch {epoch + 1}, step {state['batch']}: saved {out / 'checkpoint.npz'}; continue with --resume")
                return None
            if comm is not None:
                state["sums"][1] = int(comm.sum([state["sums"][1]])[0])  # correct answers of all ranks
            if not root:  # rank 0 alone evaluates and writes; the others go on to the next epoch
                state.update(epoch=epoch + 1, batch=0, sums=[0.0, 0, 0], epoch_seconds=0.0)
                continue
            val_loss, val_acc, _ = evaluate(model, val_split.images, val_split.labels, mean, std, config.eval_batch_size, dtype=dtype)
            s = state["sums"]
            row = dict(epoch=epoch + 1, train_loss=s[0] / s[2], train_accuracy=100 * s[1] / s[2], val_loss=val_loss,
                       val_accuracy=val_acc, lr=schedule.lr, images_per_s=steps * config.batch_size / state["epoch_seconds"],
                       epoch_seconds=state["epoch_seconds"], elapsed_seconds=time.time() - started)
            state["history"].append(row)
            state.update(epoch=epoch + 1, batch=0, sums=[0.0, 0, 0], epoch_seconds=0.0)
            _write_history(out, state["history"])
            save_checkpoint(out / "checkpoint.npz", model, optimizer, checkpoint_meta(), extra_arrays())
            if len(val_split) and val_acc > state["best_val_accuracy"]:
                state["best_val_accuracy"] = val_acc
                save_checkpoint(out / "best.npz", model, optimizer, checkpoint_meta())
            plots.curves(state["history"], out / "curves.png", title=f"{config.model} ({out.name})")
            val = f"val loss {val_loss:.4f} acc {val_acc:.2f}%" if len(val_split) else "no validation split"
            log(f"epoch {epoch + 1}/{config.epochs}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.2f}% | "
                f"{val} | {row['images_per_s']:.0f} img/s, {row['epoch_seconds']:.0f} s")

    if lookahead is not None:
        lookahead.finish()
        if root:  # the weights tested below are now the EMA: checkpoint.npz must hold them, for `evaluate`
            save_checkpoint(out / "checkpoint.npz", model, optimizer, checkpoint_meta(), extra_arrays())
    if root and not len(val_split):  # no validation: the last model is the best we know
        save_checkpoint(out / "best.npz", model, optimizer, checkpoint_meta())
    test = data.test
    if comm is None:
        test_loss, test_acc, _ = evaluate(model, test.images, test.labels, mean, std, config.eval_batch_size, config.tta, dtype)
    else:  # rank 0's model (its BN statistics too) on every rank, each testing its share of the test set
        comm.broadcast_model(model)
        share = slice(comm.rank * len(test.labels) // comm.size, (comm.rank + 1) * len(test.labels) // comm.size)
        n = share.stop - share.start
        loss, acc, _ = evaluate(model, test.images[share], test.labels[share], mean, std, config.eval_batch_size, config.tta, dtype) \
            if n else (0.0, 0.0, None)
        loss_sum, correct, count = comm.sum([loss * n, acc * n / 100, n])
        test_loss, test_acc = float(loss_sum / count), float(100 * round(correct) / count)
    if not root:
        return None
    history = state["history"]
    summary = dict(
        test_accuracy=test_acc, test_loss=test_loss, tta=config.tta,
        best_val_accuracy=state["best_val_accuracy"] if len(val_split) else None,
        final_train_accuracy=history[-1]["train_accuracy"], epochs=config.epochs,
        train_seconds=sum(r["epoch_seconds"] for r in history), wall_seconds=time.time() - started,
        images_per_s=float(np.median([r["images_per_s"] for r in history])), parameters=count_parameters(model),
        data=data.source, backend=config.backend, float_gemm=float_gemm, machine=machine.describe(),
        config=dataclasses.asdict(config))
    _write_json(out / "summary.json", summary)
    tta = {0: "", 1: ", TTA: mirror", 2: ", TTA: mirror and 1-pixel shifts"}[config.tta]
    log(f"test accuracy {test_acc:.2f}% (loss {test_loss:.4f}{tta}); run folder {out}")
    return summary
