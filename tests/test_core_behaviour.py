"""BatchNorm statistics, dropout statistics, a whole small net against torch, and errors that name the layer."""
import numpy as np
import pytest

import minitorch_cifar as mc
from minitorch_cifar import nn
from minitorch_cifar.torch_mirror import to_torch


def test_batchnorm_running_statistics_match_torch(torch, f64):
    bn = nn.BatchNorm2d(3, momentum=0.2)
    mirror = to_torch(bn)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal((4, 3, 5, 5)) * 3 + 2
        bn.forward(x)
        mirror(torch.from_numpy(x))
    np.testing.assert_allclose(bn.running_mean, mirror.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, mirror.running_var.numpy(), rtol=1e-12)  # unbiased, as torch
    assert int(bn.num_batches_tracked) == int(mirror.num_batches_tracked) == 5
    bn.eval(), mirror.eval()
    x = rng.standard_normal((2, 3, 4, 4))
    np.testing.assert_allclose(bn.forward(x), mirror(torch.from_numpy(x)).detach().numpy(), rtol=1e-12)
    mc.gradcheck(bn, x)  # eval mode is an affine map: its backward must be right too


def test_batchnorm_float32_large_mean_stays_accurate():
    x = (np.random.default_rng(1).standard_normal((64, 2, 8, 8)) * 0.01 + 1000).astype(np.float32)
    for name in ("numpy", "numba"):
        with mc.use_backend(name):
            bn = nn.BatchNorm2d(2)
            y = bn.forward(x)
        assert np.all(np.isfinite(y))
        np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1, atol=0.05)


def test_dropout_keep_rate_scale_eval_and_seed():
    x = np.ones((200, 500), dtype=np.float32)
    drop = nn.Dropout(0.3, seed=7)
    y = drop.forward(x)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.005  # 100,000 draws: sd of the rate is 0.0014
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(drop.backward(x), y)  # same mask, same scale
    assert abs(y.mean() - 1) < 0.01  # inverted dropout keeps the expectation
    again = nn.Dropout(0.3, seed=7).forward(x)
    np.testing.assert_array_equal(again, y)
    assert not np.array_equal(nn.Dropout(0.3, seed=8).forward(x), y)
    drop.eval()
    assert drop.forward(x) is x


def _small_net():
    branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Residual(branch), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)), nn.Conv2d(8, 4, 1, bias=False)),
        nn.GlobalAvgPool2d(), nn.Linear(4, 5),
    )


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 2e-4)])
def test_small_network_equals_torch(torch, dtype, tol):
    mc.set_default_dtype(dtype)
    net = _small_net()
    mirror = to_torch(net)
    assert set(net.state_dict()) == set(mirror.state_dict())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 8, 8)).astype(dtype)
    assert_loss_and_gradients_match(torch, net, mirror, x, rng.integers(0, 5, 4), tol, tol * 10)


def assert_loss_and_gradients_match(torch, net, mirror, x, t, rtol, atol, smoothing=0.1):
    """One smoothed cross-entropy step through both: the same loss, and the same gradient for every
    parameter PyTorch computes one for (frozen ones it leaves at None)."""
    loss_fn = nn.CrossEntropyLoss(label_smoothing=smoothing)
    loss = loss_fn.forward(net.forward(x), t)
    net.zero_grad()
    net.backward(loss_fn.backward())
    tloss = torch.nn.functional.cross_entropy(mirror(torch.from_numpy(x)), torch.from_numpy(t), label_smoothing=smoothing)
    tloss.backward()
    assert abs(float(loss) - tloss.item()) < rtol
    ours = dict(net.named_parameters())
    for name, p in mirror.named_parameters():
        if p.requires_grad:
            np.testing.assert_allclose(ours[name].grad, p.grad.numpy(), rtol=rtol, atol=atol, err_msg=name)


def test_fast_with_airbench96_groups_equals_torch(torch, f64):
    """group_convs=3: a third conv a group and a residual over the last two; the loss and every trainable
    gradient (the residual's summed one included) match the PyTorch mirror's; the BN scales stay frozen."""
    from minitorch_cifar import models
    net = models.build_model("fast", width=0.125, group_convs=3).astype(np.float64)
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 1 + 3 * 3
    assert sum(isinstance(m, nn.Residual) for m in net.modules()) == 3
    assert not any(m.weight.requires_grad for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    mirror = to_torch(net)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 16, 16))
    assert_loss_and_gradients_match(torch, net, mirror, x, rng.integers(0, 10, 4), 1e-8, 1e-9, smoothing=0.2)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_gradcheck_and_torch(torch, f64, smoothing):
    rng = np.random.default_rng(3)
    logits, targets = rng.standard_normal((6, 4)) * 5, rng.integers(0, 4, 6)
    loss = nn.CrossEntropyLoss(label_smoothing=smoothing)
    mc.gradcheck(loss, (logits, targets))
    value = loss.forward(logits, targets)
    lt = torch.tensor(logits, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(lt, torch.from_numpy(targets), label_smoothing=smoothing)
    tl.backward()
    assert abs(value - tl.item()) < 1e-12
    np.testing.assert_allclose(loss.backward(), lt.grad.numpy(), atol=1e-14)
    # huge logits stay finite: log-softmax subtracts the row max
    assert np.isfinite(loss.forward(logits * 1e4, targets))


def test_gradcheck_reports_the_worst_element(f64):
    class Wrong(nn.Module):
        def forward(self, x):
            self._cache = x
            return x * x

        def backward(self, dout):
            return dout * self.cached()  # should be 2x
    with pytest.raises(mc.GradcheckError, match="gradient of input is wrong at index"):
        mc.gradcheck(Wrong(), np.random.default_rng(0).standard_normal((2, 3)))


@pytest.mark.parametrize("layer,x,match", [
    (lambda: nn.Conv2d(3, 4, 3), np.zeros((3, 8, 8), np.float32), "Conv2d.*4-D input.*got shape \\(3, 8, 8\\)"),
    (lambda: nn.Conv2d(3, 4, 3), np.zeros((1, 2, 8, 8), np.float32), "Conv2d.*expected 3 channels"),
    (lambda: nn.Conv2d(3, 4, 3), np.zeros((1, 3, 8, 8), np.int64), "Conv2d.*floating-point.*int64"),
    (lambda: nn.Conv2d(3, 4, 5), np.zeros((1, 3, 2, 2), np.float32), "smaller than the kernel"),
    (lambda: nn.Linear(4, 2), np.zeros((2, 5), np.float32), "Linear.*expected 4 channels"),
    (lambda: nn.BatchNorm2d(3), np.zeros((1, 3, 1, 1), np.float32), "more than 1 value per channel"),
    (lambda: nn.MaxPool2d(2), np.zeros((2, 2), np.float32), "MaxPool2d.*4-D"),
    (lambda: nn.ReLU(), [1.0, 2.0], "ReLU.*expected an array"),
])
def test_bad_input_names_the_layer(layer, x, match):
    with pytest.raises(ValueError, match=match):
        layer().forward(x)


@pytest.mark.parametrize("layer", [nn.Conv2d(1, 1, 1), nn.ReLU(), nn.BatchNorm2d(1), nn.MaxPool2d(2), nn.Linear(1, 1), nn.Dropout()])
def test_backward_before_forward(layer):
    with pytest.raises(RuntimeError, match=f"{type(layer).__name__}.*backward called before forward"):
        layer.backward(np.zeros((1, 1, 2, 2), np.float32))


def test_loss_rejects_labels_out_of_range():
    loss = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="targets must be in \\[0, 2\\].*\\[0, 3\\]"):
        loss.forward(np.zeros((2, 3), np.float32), np.array([0, 3]))
    with pytest.raises(ValueError, match="integer targets"):
        loss.forward(np.zeros((2, 3), np.float32), np.array([0.0, 1.0]))


def test_state_dict_roundtrip_astype_and_errors():
    net = _small_net()
    state = net.state_dict()
    other = _small_net()
    mc.manual_seed(5)
    other = _small_net()
    other.load_state_dict(state)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    net.astype(np.float64)
    assert all(p.data.dtype == np.float64 and p.grad.dtype == np.float64 for p in net.parameters())
    assert net[1].running_mean.dtype == np.float64
    bad = dict(state)
    bad["0.weight"] = np.zeros((1, 1, 1, 1))
    with pytest.raises(ValueError, match="0.weight has shape"):
        other.load_state_dict(bad)
    with pytest.raises(ValueError, match="missing keys \\['0.bias'\\]"):
        other.load_state_dict({k: v for k, v in state.items() if k != "0.bias"})


def test_use_backend_restores_and_rejects_unknown():
    with mc.use_backend("numba"):
        assert mc.get_backend() == "numba"
    assert mc.get_backend() == "numpy"
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        mc.set_backend("jax")


def test_numba_backend_says_how_to_install_when_the_kernels_are_not_mapped_in(monkeypatch):
    """kernels/ sits beside the package and only an install maps it in as minitorch_cifar.kernels; importing the
    package from a checkout whose editable install points elsewhere used to fail with a bare ModuleNotFoundError."""
    import sys
    from minitorch_cifar.backend import BackendUnavailable
    for name in ("minitorch_cifar.kernels", "minitorch_cifar.kernels.cpu"):
        monkeypatch.setitem(sys.modules, name, None)  # what the import system does for a module it cannot find
    with pytest.raises(BackendUnavailable, match=r"kernels\.cpu.*kernels/ folder.*pip install -e \."):
        mc.set_backend("numba")
    assert mc.get_backend() == "numpy"


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_skipping_unneeded_input_gradients_keeps_every_parameter_gradient(backend):
    """The first conv (and one after a frozen stem) skips dL/dx; every trainable gradient stays the same."""
    from minitorch_cifar import models
    mc.set_backend(backend)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 4)
    model = models.build_model("fast", width=0.25)
    loss_fn = nn.CrossEntropyLoss()

    def grads():
        for p in model.parameters():
            p.grad[...] = 0
        loss_fn.forward(model.forward(x), y)
        dx = model.backward(loss_fn.backward())
        return dx, [p.grad.copy() for p in model.parameters() if p.requires_grad]

    dx_full, full = grads()
    assert dx_full is not None and dx_full.shape == x.shape
    stem, conv1 = model[0], model[2]
    assert model.skip_unneeded_input_grads() == [stem]  # the stem's bias still trains: conv1 must send dx
    dx, skipped = grads()
    assert dx is None and conv1.input_grad
    for a, b in zip(skipped, full, strict=True):
        np.testing.assert_array_equal(a, b)
    stem.bias.requires_grad = False  # as --whiten-bias-epochs does
    assert model.skip_unneeded_input_grads() == [stem, conv1]
    _, frozen = grads()
    for a, b in zip(frozen, full[1:], strict=True):
        np.testing.assert_array_equal(a, b)
