"""Hard-example selection (--select-keep): per-example losses, which examples the proxy keeps, when it trains,
that a run with it resumes exactly, and the options' errors."""
import json

import numpy as np
import pytest

import minitorch_cifar as mc
from minitorch_cifar import nn
from minitorch_cifar.train import ProxySelector, TrainConfig, load_checkpoint, train


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINITORCH_CIFAR_DATA", str(tmp_path / "cache"))


def test_per_example_losses_match_torch_and_average_to_the_loss():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits, targets = rng.standard_normal((7, 10)) * 3, rng.integers(0, 10, 7)
    loss_fn = nn.CrossEntropyLoss(0.2)
    losses = loss_fn.per_example(logits, targets)
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(targets), label_smoothing=0.2,
                                                 reduction="none").numpy()
    np.testing.assert_allclose(losses, expected, rtol=1e-12)
    assert loss_fn.forward(logits, targets) == pytest.approx(losses.mean(), rel=1e-14)
    with pytest.raises(ValueError, match="targets must be in"):
        loss_fn.per_example(logits, np.full(7, 10))


def _selector(keep=0.25, every=3, seed=0):
    mc.manual_seed(seed)
    config = TrainConfig(model="fast", select_keep=keep, proxy_widths="4,8,8", proxy_every=every, lr=0.5,
                         label_smoothing=0.2, dirac_init=True).validate()
    images = np.random.default_rng(seed).standard_normal((64, 3, 32, 32))
    return ProxySelector(config, images, total_steps=10, comm=None)


def test_selector_keeps_the_hardest_share_by_the_proxys_loss():
    selector = _selector(keep=0.25)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((16, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 16)
    for _ in range(4):  # several steps, so the proxy has trained in between (its train-mode output depends on this batch only)
        losses = selector.loss_fn.per_example(selector.model.forward(x), y)
        hardest = selector.select(x, y)
        assert len(hardest) == 4 and list(hardest) == sorted(hardest)
        assert set(hardest) == set(np.argsort(losses)[-4:])
        assert losses[hardest].min() >= np.delete(losses, hardest).max()


def test_proxy_takes_a_step_every_kth_batch_only():
    selector = _selector(every=3)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((12, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 12)
    changed = []
    for _ in range(7):
        before = [p.data.copy() for p in selector.model.parameters()]
        selector.select(x, y)
        changed.append(any(not np.array_equal(b, p.data) for b, p in zip(before, selector.model.parameters())))
    assert changed == [True, False, False, True, False, False, True]
    assert selector.schedule.position == 7


def test_a_run_with_selection_resumes_exactly_and_checkpoints_its_proxy(tiny_folder, tmp_path):
    data = mc.data.load_cifar10(tiny_folder)
    base = dict(model="fast", width=0.125, batch_size=50, epochs=2, val_size=50, augment="crop,altflip", padding=2,
                lookahead=True, dirac_init=True, schedule="airbench", label_smoothing=0.2, seed=3,
                select_keep=0.5, proxy_widths="4,8,8", proxy_every=2)
    a = train(TrainConfig(**base, out=str(tmp_path / "a")), data=data, progress=False, log=lambda *a: None)
    cfg = TrainConfig(**base, out=str(tmp_path / "b"))
    train(cfg, data=data, progress=False, on_step=lambda epoch, b: epoch == 0 and b == 2, log=lambda *a: None)
    b = train(cfg, data=data, progress=False, resume=True, log=lambda *a: None)
    assert a["test_loss"] == b["test_loss"] and a["test_accuracy"] == b["test_accuracy"]
    _, _, meta = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert any(k.startswith("proxy/") for k in meta["_proxy"]) and any(k.startswith("proxy_velocity/") for k in meta["_proxy"])
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    for row in history:  # the throughput counts every image drawn (250 an epoch), not only the half trained on
        assert row["images_per_s"] * row["epoch_seconds"] == pytest.approx(250)
    full = train(TrainConfig(**{**base, "select_keep": 1.0}, out=str(tmp_path / "c")), data=data, progress=False,
                 log=lambda *a: None)
    assert full["test_loss"] != a["test_loss"]  # the selection reached the training


@pytest.mark.parametrize("options, message", [
    (dict(model="fast", select_keep=0.0), "--select-keep must be in"),
    (dict(model="simple", select_keep=0.5), "needs --model fast"),
    (dict(model="fast", select_keep=0.5, whiten=False), "needs --model fast"),
    (dict(model="fast", select_keep=0.5, proxy_widths="32,64"), "--proxy-widths must be three"),
    (dict(model="fast", select_keep=0.5, proxy_every=0), "--proxy-every must be"),
])
def test_bad_selection_options_say_what_is_wrong(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**options).validate()
