"""Parameter and Module: how a network keeps track of its tensors.

A Module finds its parameters, buffers and submodules by watching attribute
assignment (``self.fc = Linear(...)`` registers a submodule), as PyTorch does.
Everything else (``parameters()``, ``state_dict()``, ``to('cuda')``, ``train()``)
is a walk over that tree, so the names come out exactly as PyTorch's:
``body.0.weight`` is the weight of the first module of the Sequential ``body``.
"""
from collections import OrderedDict, namedtuple

import numpy as np

from minidl import backend
from minidl.backend import Device, get_array_module
from minidl.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module registers as something to train (requires_grad by default).

    ``Parameter(t)`` shares ``t``'s array, as in PyTorch.
    """

    def __init__(self, data=None, requires_grad=True):
        super().__init__(np.empty(0, np.float32) if data is None else data, requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What ``load_state_dict(strict=False)`` returns."""

    def __repr__(self):
        return "<All keys matched successfully>" if not (self.missing_keys or self.unexpected_keys) else super().__repr__()


def _zero_grad(parameters, set_to_none):
    """Forget gradients: drop them, or replace them by fresh zeros.

    The zeros are a new array, never written into the old one, which backward
    may share with other tensors.
    """
    for p in parameters:
        if p.grad is not None:
            if set_to_none:
                p.grad = None
            else:
                p.grad.data = get_array_module(p.grad.data).zeros_like(p.grad.data)


def _as_array(value):
    """A state_dict value (minidl Tensor, NumPy/CuPy array, torch tensor, list) as an array."""
    if isinstance(value, Tensor):
        return value.data
    return value if backend.is_cupy_array(value) else np.asarray(value)


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _indent(text, spaces):
    """Indent every line but the first, to nest a child's repr inside its parent's."""
    first, *rest = text.split("\n")
    return "\n".join([first] + [" " * spaces + line for line in rest])


class Module:
    """Base class of every layer and model: subclass it, assign layers in __init__, write forward()."""

    def __init__(self):
        # object.__setattr__, because our own __setattr__ needs these dictionaries to exist
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "_modules", OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        # a forward's own array work (a batch counter, say) runs on its input's GPU, as its ops do
        first = next((a.data for a in args if isinstance(a, Tensor)), None)
        with backend.on_device_of(first):
            return self.forward(*args, **kwargs)

    # ------------------------------------------------------------ registration
    def _registry(self, what):
        registry = self.__dict__.get(what)
        if registry is None:
            raise AttributeError(
                f"cannot assign {what.strip('_')} before Module.__init__() call: "
                f"call super().__init__() first in {type(self).__name__}.__init__"
            )
        return registry

    def _check_name(self, kind, name, registry):
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if "." in name:
            raise KeyError(f'{kind} name can\'t contain ".", got: {name}')
        if name == "":
            raise KeyError(f'{kind} name can\'t be empty string ""')
        if hasattr(self, name) and name not in registry:
            raise KeyError(f"attribute '{name}' already exists")

    def register_parameter(self, name, param):
        """Add a Parameter (or None, a declared but absent one such as a missing bias) under ``name``."""
        registry = self._registry("_parameters")
        self._check_name("parameter", name, registry)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                "(minidl.nn.Parameter or None required)"
            )
        registry[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Add a Tensor that is state but not trained (BatchNorm's running mean).

        Persistent buffers go into the state_dict; non-persistent ones only move with ``to()``.
        """
        registry = self._registry("_buffers")
        self._check_name("buffer", name, registry)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' (Tensor or None required)")
        registry[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def add_module(self, name, module):
        registry = self._registry("_modules")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_name("module", name, registry)
        registry[name] = module

    def _forget(self, name, keep=None):
        # ``keep``: the registry being assigned to, where the name keeps its place in the order
        for what in ("_parameters", "_buffers", "_modules"):
            if what != keep:
                self.__dict__.get(what, {}).pop(name, None)
        self.__dict__.pop(name, None)
        self.__dict__.get("_non_persistent_buffers_set", set()).discard(name)

    def __setattr__(self, name, value):
        params, buffers, modules = (self.__dict__.get(k) for k in ("_parameters", "_buffers", "_modules"))
        if isinstance(value, Parameter):
            self._registry("_parameters")
            self._forget(name, keep="_parameters")
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                    "(minidl.nn.Parameter or None expected)"
                )
            params[name] = None
        elif isinstance(value, Module):
            self._registry("_modules")
            self._forget(name, keep="_modules")
            modules[name] = value
        elif modules is not None and name in modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}' (Module or None expected)")
            modules[name] = None
        elif buffers is not None and name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' (Tensor or None expected)")
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # called only when ordinary lookup fails: look in the three registries
        for what in ("_parameters", "_buffers", "_modules"):
            registry = self.__dict__.get(what)
            if registry is not None and name in registry:
                return registry[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        if any(name in self.__dict__.get(k, {}) for k in ("_parameters", "_buffers", "_modules")):
            self._forget(name)
        else:
            object.__delattr__(self, name)

    # ------------------------------------------------------------ walking the tree
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(dotted name, module) for this module and all below it, depth first; a shared module once."""
        memo = set() if memo is None else memo
        if self in memo:
            return
        if remove_duplicate:
            memo.add(self)
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, _join(prefix, name), remove_duplicate)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and module not in seen:
                seen.add(module)
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry, prefix, recurse):
        # a tensor shared by two modules (tied weights) is listed once, under its first name
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, tensor in getattr(module, registry).items():
                if tensor is not None and id(tensor) not in seen:
                    seen.add(id(tensor))
                    yield _join(module_prefix, name), tensor

    def named_parameters(self, prefix="", recurse=True):
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # ------------------------------------------------------------ modes and gradients
    def train(self, mode=True):
        """Set training mode here and in every submodule (Dropout and BatchNorm behave differently)."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for module in self.children():
            module.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        _zero_grad(self.parameters(), set_to_none)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def apply(self, fn):
        """Call ``fn`` on every submodule, children before parents (e.g. a custom initialisation)."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------ devices and dtypes
    def to(self, *args, device=None, dtype=None):
        """``to('cuda')``, ``to(minidl.float64)``: convert parameters and buffers in place.

        The Parameter objects stay the same (an optimizer built before still holds
        them); only their arrays, and their gradients', are replaced. A dtype
        applies to floating-point tensors only, so integer buffers keep theirs.
        """
        for a in args:
            if isinstance(a, (str, Device)):
                device = a
            else:
                dtype = a
        if dtype is not None and np.dtype(dtype).kind != "f":
            raise TypeError(f"Module.to only accepts floating point dtypes, but got desired dtype={np.dtype(dtype)}")

        def convert(array):
            if dtype is not None and array.dtype.kind == "f":
                array = array.astype(dtype, copy=False)
            return array if device is None else backend.to_device(array, device)

        for t in [*self.parameters(), *self.buffers()]:
            t.data = convert(t.data)
            if t.grad is not None:
                t.grad.data = convert(t.grad.data)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{device}")

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    # ------------------------------------------------------------ state_dict
    def _named_state(self, prefix=""):
        """The state_dict's entries in PyTorch's order: own parameters, own persistent
        buffers, then each child's. A shared module appears under each of its names."""
        for name, p in self._parameters.items():
            if p is not None:
                yield prefix + name, p
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers_set:
                yield prefix + name, b
        for name, module in self._modules.items():
            if module is not None:
                yield from module._named_state(prefix + name + ".")

    def state_dict(self, *, prefix=""):
        """OrderedDict of dotted name -> NumPy array, with PyTorch's keys.

        The arrays are copies (from the GPU too), so a saved state_dict is a
        snapshot that further training does not change (PyTorch's share memory).
        """
        return OrderedDict((name, backend.to_numpy(t.data).copy()) for name, t in self._named_state(prefix))

    def load_state_dict(self, state_dict, strict=True):
        """Copy values into the existing parameters and buffers, keeping their dtype and device.

        Every missing, unexpected (only when ``strict``) and mis-shaped key is
        reported in one RuntimeError; when there is any error nothing is loaded.
        Returns (missing_keys, unexpected_keys).
        """
        own = OrderedDict(self._named_state())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        values, errors = {}, []
        for name, tensor in own.items():
            if name in state_dict:
                values[name] = _as_array(state_dict[name])
                if tuple(values[name].shape) != tensor.shape:
                    errors.append(
                        f"size mismatch for {name}: copying a param with shape {tuple(values[name].shape)} "
                        f"from checkpoint, the shape in current model is {tensor.shape}."
                    )
        if strict and unexpected:
            errors.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
        if strict and missing:
            errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        for name, value in values.items():
            own[name].data[...] = backend.to_device(value, own[name].device)
        return _IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------ printing
    def extra_repr(self):
        """The layer's own settings, shown inside its repr (``in_features=4, ...``)."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): {_indent(repr(m), 2)}" for name, m in self._modules.items()]
        lines = extra_lines + child_lines
        body = ""
        if len(extra_lines) == 1 and not child_lines:
            body = extra_lines[0]
        elif lines:
            body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{type(self).__name__}({body})"
