"""Modules that hold other modules: Sequential, ModuleList, ModuleDict.

A plain Python list of layers would hide them from ``parameters()`` and the
state_dict; these containers register each one under its key ("0", "1", ... or
the dict's keys), which is where names like ``layer1.0.conv1.weight`` come from.
"""
from collections import OrderedDict

from minidl.nn.module import Module


class _Indexed(Module):
    """What Sequential and ModuleList share: modules kept in order and reached by position."""

    def _key(self, index):
        keys = list(self._modules)
        if not -len(keys) <= index < len(keys):
            raise IndexError(f"index {index} is out of range for {type(self).__name__} of length {len(keys)}")
        return keys[index]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._sliced(list(self._modules.items())[index])
        return self._modules[self._key(index)]

    def __setitem__(self, index, module):
        setattr(self, self._key(index), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self


class Sequential(_Indexed):
    """Modules called one after another: ``Sequential(Linear(4, 8), ReLU())`` or from an OrderedDict of names."""

    def __init__(self, *args):
        super().__init__()
        items = args[0].items() if len(args) == 1 and isinstance(args[0], OrderedDict) else enumerate(args)
        for key, module in items:
            self.add_module(str(key), module)

    def _sliced(self, items):
        return Sequential(OrderedDict(items))  # a slice keeps the names, as in PyTorch

    def forward(self, input):
        for module in self:
            input = module(input)
        return input


class ModuleList(_Indexed):
    """A list of modules, registered so their parameters are found; it has no forward of its own."""

    def __init__(self, modules=None):
        super().__init__()
        self.extend(modules or [])

    def _sliced(self, items):
        return ModuleList(module for _, module in items)

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def insert(self, index, module):
        """Insert before ``index``; the keys are renumbered so they stay "0", "1", ..."""
        modules = list(self)
        modules.insert(index, module)
        self._modules.clear()
        self.extend(modules)


class ModuleDict(Module):
    """A dict of modules (insertion-ordered), registered under their keys."""

    def __init__(self, modules=None):
        super().__init__()
        self.update(modules or {})

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def pop(self, key):
        module = self[key]
        del self[key]
        return module

    def update(self, modules):
        """Add from a dict or from (key, module) pairs."""
        for key, module in modules.items() if hasattr(modules, "items") else modules:
            self[key] = module
