import numpy as np
import pytest
from PIL import Image

import minitorch_cifar as mc
from minitorch_cifar.data import CLASSES


@pytest.fixture(autouse=True)
def _reset_backend():
    """Every test starts on the numpy backend with float32 defaults, whatever the last one did."""
    def reset():
        mc.set_float32_matmul_precision("highest")
        mc.set_backend("numpy")
        mc.set_default_dtype(np.float32)
    reset()
    mc.manual_seed(0)
    yield
    reset()


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="torch comes with the dev extra: pip install -e '.[dev]'")


@pytest.fixture
def f64():
    mc.set_default_dtype(np.float64)
    yield np.float64


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """30 train + 6 test PNGs per class; class k is a colour and a stripe position, with noise."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 216, (10, 3))
    for split, n in (("train", 30), ("test", 6)):
        for k, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = np.clip(colours[k] + rng.normal(0, 25, (32, 32, 3)), 0, 255)
                img[3 * k:3 * k + 3, :] = 255 - img[3 * k:3 * k + 3, :]
                Image.fromarray(img.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root
