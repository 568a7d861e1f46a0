"""Module, Parameter, Sequential and Residual: the containers every layer lives in.

A layer is a :class:`Module` with two methods:

* ``forward(x)``  computes the output and keeps (caches) what its backward pass will need;
* ``backward(dout)``  takes dL/d(output), adds dL/d(parameter) into each ``Parameter.grad`` and
  returns dL/d(input).

Gradients *accumulate* (``+=``), as in PyTorch, so a layer used twice in one graph gets the sum of
both contributions; ``zero_grad()`` clears them between steps.

Parameter names and layouts follow PyTorch so ``state_dict()`` keys of a model equal those of the
torch module with the same structure, and weights copy across one-to-one.
"""
from __future__ import annotations

import numpy as np

from minitorch_cifar import backend

_init_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed the generator that initial weights are drawn from (drawn on the host, then uploaded)."""
    global _init_rng
    _init_rng = np.random.default_rng(seed)


def init_uniform(bound: float, shape) -> np.ndarray:
    """U(-bound, bound) in the default dtype, as an array of the active backend."""
    values = _init_rng.uniform(-bound, bound, size=shape)
    return backend.asarray(values, dtype=backend.get_default_dtype())


class Parameter:
    """A trainable array and the gradient accumulated for it."""

    def __init__(self, data, requires_grad: bool = True):
        self.data = data
        self.grad = backend.array_module(data).zeros_like(data)
        self.requires_grad = requires_grad

    def __repr__(self):
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


class Module:
    training = True
    buffer_names: tuple = ()  # non-trainable arrays saved in state_dict (e.g. BN running statistics)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -------------------------------------------------------------- tree walking
    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_parameters(self, prefix: str = ""):
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(f"{prefix}{name}.")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = ""):
        for name in self.buffer_names:
            yield prefix + name, getattr(self, name)
        for name, child in self.named_children():
            yield from child.named_buffers(f"{prefix}{name}.")

    def modules(self):
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    # -------------------------------------------------------------- modes and state
    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad[...] = 0

    def state_dict(self) -> dict:
        """Host (NumPy) copies of every parameter and buffer, keyed as torch would key them."""
        out = {}
        for name, p in self.named_parameters():
            out[name] = backend.to_numpy(p.data).copy()
        for name, b in self.named_buffers():
            out[name] = np.array(backend.to_numpy(b))
        return out

    def load_state_dict(self, state: dict, strict: bool = True):
        own = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        if strict:
            missing = sorted((set(own) | set(buffers)) - set(state))
            unexpected = sorted(set(state) - set(own) - set(buffers))
            if missing or unexpected:
                raise ValueError(f"{type(self).__name__}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, value in state.items():
            value = np.asarray(value)
            if name in own:
                p = own[name]
                if value.shape != tuple(p.data.shape):
                    raise ValueError(f"load_state_dict: {name} has shape {tuple(p.data.shape)} here, {value.shape} in the state dict")
                p.data[...] = backend.array_module(p.data).asarray(value, dtype=p.data.dtype)
            elif name in buffers:
                owner, attr = self._owner_of(name)
                current = getattr(owner, attr)
                setattr(owner, attr, backend.array_module(current).asarray(value, dtype=current.dtype))
        return self

    def _owner_of(self, dotted: str):
        *path, attr = dotted.split(".")
        owner = self
        for part in path:
            owner = dict(owner.named_children())[part]
        return owner, attr

    def astype(self, dtype):
        """Convert every parameter, gradient and floating buffer to ``dtype`` (in place; returns self)."""
        for p in self.parameters():
            p.data, p.grad = p.data.astype(dtype), p.grad.astype(dtype)
        for m in self.modules():
            for name in m.buffer_names:
                b = getattr(m, name)
                if b.dtype.kind == "f":
                    setattr(m, name, b.astype(dtype))
        return self

    def to_backend(self):
        """Move every array to the active backend (e.g. onto the GPU after ``mc.set_backend("cupy")``)."""
        for p in self.parameters():
            p.data, p.grad = backend.asarray(backend.to_numpy(p.data)), backend.asarray(backend.to_numpy(p.grad))
        for m in self.modules():
            for name in m.buffer_names:
                setattr(m, name, backend.asarray(backend.to_numpy(getattr(m, name))))
            if hasattr(m, "rng"):
                m.rng = backend.random_generator(m.seed)
        return self

    # -------------------------------------------------------------- random state (dropout masks)
    def rng_states(self) -> dict:
        """Generator states of every random layer (JSON-able; NumPy generators only)."""
        return {n: m.rng.bit_generator.state for n, m in self._random_modules() if hasattr(m.rng, "bit_generator")}

    def set_rng_states(self, states: dict):
        for n, m in self._random_modules():
            if n in states and hasattr(m.rng, "bit_generator"):
                m.rng.bit_generator.state = states[n]

    def _random_modules(self, prefix=""):
        if hasattr(self, "rng"):
            yield prefix or ".", self
        for name, child in self.named_children():
            yield from child._random_modules(f"{prefix}{name}.")

    # -------------------------------------------------------------- errors a learner can read
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({n}): " + repr(c).replace("\n", "\n  ") for n, c in children]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"

    def check_input(self, x, ndim, channels=None, what="(N, C, H, W)"):
        """Raise a ValueError naming this layer when ``x`` is not what it takes."""
        name = f"{type(self).__name__}({self.extra_repr()})"
        if not hasattr(x, "dtype") or not hasattr(x, "ndim"):
            raise ValueError(f"{name}: expected an array, got {type(x).__name__}")
        if x.dtype.kind != "f":
            raise ValueError(f"{name}: expected a floating-point input, got dtype {x.dtype}")
        if isinstance(ndim, int):
            ndim = (ndim,)
        if x.ndim not in ndim:
            raise ValueError(f"{name}: expected a {'- or '.join(map(str, ndim))}-D input {what}, got shape {tuple(x.shape)}")
        if channels is not None and x.shape[1] != channels:
            raise ValueError(f"{name}: expected {channels} channels (axis 1), got shape {tuple(x.shape)}")

    def cached(self):
        """What forward kept for backward; a RuntimeError when backward comes first."""
        cache = getattr(self, "_cache", None)
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}({self.extra_repr()}): backward called before forward")
        return cache


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse (the chain rule, one link per layer)."""

    def __init__(self, *layers: Module):
        self.layers = list(layers)

    def named_children(self):
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
            if dout is None:  # a layer with nothing trainable before it sent no input gradient: stop here
                return None
        return dout

    def skip_unneeded_input_grads(self):
        """Convolutions with no trainable parameter before them (the first layer; the one after a frozen
        stem) skip computing dL/dx: nobody needs it. Call again when requires_grad changes; returns the
        layers that skip."""
        from minitorch_cifar.nn.conv import Conv2d
        trainable_before, skipping = False, []
        for layer in self.layers:
            if isinstance(layer, Conv2d):
                layer.input_grad = trainable_before
                if not trainable_before:
                    skipping.append(layer)
            trainable_before = trainable_before or any(p.requires_grad for p in layer.parameters())
        return skipping


class Residual(Module):
    """y = branch(x) + shortcut(x), with the identity as the shortcut when none is given.

    Backward: both paths receive the same dL/dy (d(a+b)/da = 1), and x's gradient is the sum of what
    the two paths send back. That sum is why deep residual nets train: the identity path carries the
    gradient through unchanged.
    """

    def __init__(self, branch: Module, shortcut: Module | None = None):
        self.branch = branch
        self.shortcut = shortcut

    def forward(self, x):
        skip = x if self.shortcut is None else self.shortcut.forward(x)
        return self.branch.forward(x) + skip

    def backward(self, dout):
        dx = self.branch.backward(dout)
        return dx + (dout if self.shortcut is None else self.shortcut.backward(dout))


class Identity(Module):
    def forward(self, x):
        return x

    def backward(self, dout):
        return dout
