import numpy as np
import pytest

from minitorch_cifar import nn, optim


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 5e-4), (0.9, True, 5e-4)])
def test_sgd_matches_torch(torch, f64, momentum, nesterov, wd):
    lin = nn.Linear(4, 3)
    tlin = torch.nn.Linear(4, 3).double()
    tlin.load_state_dict({k: torch.from_numpy(v) for k, v in lin.state_dict().items()})
    opt = optim.SGD(lin.parameters(), lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    topt = torch.optim.SGD(tlin.parameters(), lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    rng = np.random.default_rng(0)
    for _ in range(4):
        x, g = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
        opt.zero_grad()
        lin.forward(x)
        lin.backward(g)
        opt.step()
        topt.zero_grad()
        tlin(torch.from_numpy(x)).backward(torch.from_numpy(g))
        topt.step()
    for k, v in tlin.state_dict().items():
        np.testing.assert_allclose(lin.state_dict()[k], v.numpy(), rtol=1e-13)


def test_param_groups_and_frozen_parameters(f64):
    bn = nn.BatchNorm1d(2)
    bn.weight.requires_grad = False
    opt = optim.SGD([{"params": [bn.weight]}, {"params": [bn.bias], "lr": 1.0, "weight_decay": 0.0}], lr=0.1, weight_decay=0.1)
    bn.weight.grad[:] = 1
    bn.bias.grad[:] = 1
    opt.step()
    np.testing.assert_array_equal(bn.weight.data, [1, 1])
    np.testing.assert_array_equal(bn.bias.data, [-1, -1])


def test_optimizer_state_of_another_grouping_is_refused():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(3))
    state = optim.SGD([{"params": [a, b]}, {"params": []}], lr=0.1).state_dict()
    optim.SGD([{"params": [a, b]}, {"params": []}], lr=0.1).load_state_dict(state)
    with pytest.raises(ValueError, match="sizes \\[2, 0\\], this optimizer's are \\[1, 1\\]"):
        optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1).load_state_dict(state)


def test_schedules_shape():
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    s = optim.Schedule(opt, "warmup_linear", 10, warmup=0.2)
    lrs = [s.lr]
    for _ in range(10):
        s.step()
        lrs.append(s.lr)
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[-1] == 0.0
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    cos = optim.cosine(100)
    assert cos(0) == 1.0 and abs(cos(50) - 0.5) < 1e-12 and cos(100) == 0.0
    step = optim.step_decay(100, (0.5,), 0.1)
    assert step(49) == 1.0 and abs(step(50) - 0.1) < 1e-12
    with pytest.raises(ValueError, match="unknown schedule"):
        optim.Schedule(opt, "exp", 10)
