import numpy as np
import pytest

import minitorch_cifar as mc


@pytest.fixture(autouse=True)
def _reset_backend():
    """Every test starts on the numpy backend with float32 defaults, whatever the last one did."""
    mc.set_backend("numpy")
    mc.set_default_dtype(np.float32)
    mc.manual_seed(0)
    yield
    mc.set_backend("numpy")
    mc.set_default_dtype(np.float32)


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="torch comes with the dev extra: pip install -e '.[dev]'")


@pytest.fixture
def f64():
    mc.set_default_dtype(np.float64)
    yield np.float64
