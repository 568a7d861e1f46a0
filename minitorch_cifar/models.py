"""The architectures, by name: ``build_model("simple" | "deeper" | "resnet" | "fast", ...)``.

Every architecture takes the same knobs: ``activation`` (relu, leaky_relu, elu, gelu, tanh),
``batchnorm`` on/off, a ``dropout`` rate and a ``width`` multiplier on every channel count.
"""
from __future__ import annotations

import numpy as np

from minitorch_cifar import backend, nn

DEFAULTS = {  # what each architecture uses when an option is not given
    "simple": dict(activation="relu", batchnorm=False, dropout=0.0),
    "deeper": dict(activation="relu", batchnorm=True, dropout=0.2),
    "resnet": dict(activation="relu", batchnorm=True, dropout=0.0),
    "fast": dict(activation="gelu", batchnorm=True, dropout=0.0),
}


def _act(name):
    if name not in nn.ACTIVATIONS or name == "sigmoid":
        raise ValueError(f"unknown activation {name!r}; choose from relu, leaky_relu, elu, gelu, tanh")
    return nn.ACTIVATIONS[name]()


def _bn(channels, on, **kw):
    return [nn.BatchNorm2d(channels, **kw)] if on else []


def simple(activation, batchnorm, dropout, width, num_classes):
    """Conv-Pool x3 (32/64/128 channels) and a 256-unit fully connected head: the classic baseline."""
    c1, c2, c3 = (max(1, round(c * width)) for c in (32, 64, 128))
    layers = []
    for cin, cout in ((3, c1), (c1, c2), (c2, c3)):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), *_bn(cout, batchnorm), _act(activation), nn.MaxPool2d(2)]
    layers += [nn.Flatten(), nn.Linear(c3 * 16, 256), _act(activation)]
    layers += [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers, nn.Linear(256, num_classes))


def deeper(activation, batchnorm, dropout, width, num_classes):
    """VGG-style: three blocks of two 3x3 convs (64/128/256 channels), each block pooled and dropped out."""
    widths = [max(1, round(c * width)) for c in (64, 128, 256)]
    layers, cin = [], 3
    for cout in widths:
        for _ in range(2):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=not batchnorm), *_bn(cout, batchnorm), _act(activation)]
            cin = cout
        layers += [nn.MaxPool2d(2)] + ([nn.Dropout(dropout)] if dropout else [])
    return nn.Sequential(*layers, nn.GlobalMaxPool2d(), nn.Linear(cin, num_classes))


def _basic_block(cin, cout, stride, activation, batchnorm):
    branch = nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not batchnorm), *_bn(cout, batchnorm), _act(activation),
        nn.Conv2d(cout, cout, 3, padding=1, bias=not batchnorm), *_bn(cout, batchnorm))
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=not batchnorm), *_bn(cout, batchnorm))
    return [nn.Residual(branch, shortcut), _act(activation)]


def resnet(activation, batchnorm, dropout, width, num_classes, blocks_per_stage=3):
    """ResNet-20 (He et al. 2016, CIFAR variant): 3 stages x 3 basic blocks, 16/32/64 channels."""
    widths = [max(1, round(c * width)) for c in (16, 32, 64)]
    layers = [nn.Conv2d(3, widths[0], 3, padding=1, bias=not batchnorm), *_bn(widths[0], batchnorm), _act(activation)]
    cin = widths[0]
    for stage, cout in enumerate(widths):
        for block in range(blocks_per_stage):
            layers += _basic_block(cin, cout, 2 if stage and not block else 1, activation, batchnorm)
            cin = cout
    layers += [nn.GlobalAvgPool2d()] + ([nn.Dropout(dropout)] if dropout else [])
    return nn.Sequential(*layers, nn.Linear(cin, num_classes))


def fast(activation, batchnorm, dropout, width, num_classes, group_convs=2):
    """The airbench-style fast recipe (Keller Jordan's CIFAR-10 speedruns, simplified):

    a frozen 2x2 patch-whitening stem to 24 channels (set from the data by ``init_whitening``), then three
    groups conv3x3 - maxpool - BN - act - conv3x3 - BN - act of widths 64/256/256, a global max pool and
    a bias-free linear head whose logits are scaled by 1/9. ``width``: a multiplier of those widths, or the
    three widths themselves (a tuple: the hard-example proxy's 32/64/64 is no multiple of them).
    ``group_convs=3``: airbench96's groups, a third conv in each and a residual around the last two
    (conv - BN - act - conv - BN, plus the group's input, then act).
    """
    widths = list(width) if isinstance(width, (tuple, list)) else [max(1, round(c * width)) for c in (64, 256, 256)]
    stem = nn.Conv2d(3, 24, 2, padding=0)
    stem.weight.requires_grad = False  # whitening: fixed from the data, only its bias trains
    layers, cin = [stem, _act(activation)], 24

    def bn(channels):
        return _bn(channels, batchnorm, momentum=0.6, eps=1e-12)

    def conv_bn(channels):
        return [nn.Conv2d(channels, channels, 3, padding=1, bias=False), *bn(channels)]

    for cout in widths:
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), *bn(cout), _act(activation)]
        if group_convs == 2:
            layers += [*conv_bn(cout), _act(activation)]
        else:
            layers += [nn.Residual(nn.Sequential(*conv_bn(cout), _act(activation), *conv_bn(cout))), _act(activation)]
        cin = cout
    layers += [nn.GlobalMaxPool2d()] + ([nn.Dropout(dropout)] if dropout else [])
    model = nn.Sequential(*layers, nn.Linear(cin, num_classes, bias=False), nn.Scale(1 / 9))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.requires_grad = False  # BN scales frozen at 1: the following conv can scale instead
    return model


ARCHITECTURES = {"simple": simple, "deeper": deeper, "resnet": resnet, "fast": fast}


def build_model(name, activation=None, batchnorm=None, dropout=None, width=1.0, num_classes=10, group_convs=2):
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(ARCHITECTURES)}")
    if group_convs not in (2, 3) or (group_convs != 2 and name != "fast"):
        raise ValueError(f"group_convs must be 2, or 3 with the fast model; got {group_convs} with {name!r}")
    d = DEFAULTS[name]
    extra = {"group_convs": group_convs} if name == "fast" else {}
    return ARCHITECTURES[name](activation or d["activation"], d["batchnorm"] if batchnorm is None else batchnorm,
                               d["dropout"] if dropout is None else dropout, width, num_classes, **extra)


def init_whitening(conv: nn.Conv2d, images, eps=5e-4):
    """Set a 2x2 conv to whiten image patches: the eigenvectors of the patch covariance, scaled by
    1/sqrt(eigenvalue + eps), each used with both signs (so the following activation keeps both halves).

    ``images``: normalised float images (N, 3, H, W) on the host, a few thousand are plenty.
    """
    kh, kw = conv.kernel_size
    x = np.asarray(images, dtype=np.float64)
    N, C, H, W = x.shape
    patches = np.stack([x[:, :, i:H - kh + 1 + i, j:W - kw + 1 + j] for i in range(kh) for j in range(kw)], axis=2)
    patches = patches.transpose(0, 3, 4, 1, 2).reshape(-1, C * kh * kw)  # rows: (c, i, j) as the weight layout
    cov = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = eigenvalues.argsort()[::-1]
    filters = (eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)).T.reshape(-1, C, kh, kw)
    if 2 * len(filters) != conv.out_channels:
        raise ValueError(f"whitening a {C}x{kh}x{kw} patch gives {2 * len(filters)} filters; the conv has {conv.out_channels}")
    weight = np.concatenate([filters, -filters])
    conv.weight.data[...] = backend.array_module(conv.weight.data).asarray(weight, dtype=conv.weight.data.dtype)


def dirac_init(model):
    """Start each trainable odd-kernel conv with out >= in channels as (partly) the identity: filter k copies
    input channel k unchanged (a 1 at the kernel centre), the other filters keep their random init. A deep
    net then starts close to a shallow one, and trains faster early on (airbench's identity init)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.requires_grad and m.in_channels <= m.out_channels:
            kh, kw = m.kernel_size
            if kh % 2 and kw % 2:
                w = m.weight.data
                w[:m.in_channels] = 0
                idx = backend.array_module(w).arange(m.in_channels)
                w[idx, idx, kh // 2, kw // 2] = 1
    return model


def count_parameters(model) -> int:
    return int(sum(p.data.size for p in model.parameters()))
