"""Devices: 'cpu' arrays are NumPy, 'cuda' arrays are CuPy.

This module is the only place that knows about CuPy. Op code asks
``xp = get_array_module(x)`` and then writes NumPy-style code that runs on
either backend. CuPy is imported only when a 'cuda' device is asked for, so a
machine without it never pays for (or fails on) the import.
"""
import contextlib
import sys

import numpy as np

from minidl import kernels

_INSTALL_HINT = (
    "install CuPy for your CUDA version, e.g. `pip install cupy-cuda12x` "
    "(or `pip install 'minidl[gpu]'`)"
)


class Device:
    """A device name as PyTorch spells it: 'cpu', 'cuda' or 'cuda:N'."""

    __slots__ = ("type", "index")

    def __init__(self, spec="cpu"):
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise TypeError(f"device must be a string such as 'cpu' or 'cuda', got {spec!r}")
        kind, _, index = spec.partition(":")
        if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
            raise ValueError(f"unknown device {spec!r}: expected 'cpu', 'cuda' or 'cuda:N'")
        self.type = kind
        self.index = int(index) if index else None

    def __eq__(self, other):
        try:
            other = Device(other)
        except (TypeError, ValueError):
            return NotImplemented
        # 'cuda' means the current GPU, so it equals any 'cuda:N' we are on.
        return self.type == other.type and (
            self.index is None or other.index is None or self.index == other.index
        )

    def __hash__(self):
        return hash(self.type)

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        return f"device('{self}')"


def cupy():
    """Import CuPy on first use, with an error that says what to do when it cannot work."""
    try:
        import cupy as cp
    except ImportError as e:
        raise RuntimeError(f"device 'cuda' needs CuPy, which is not installed: {_INSTALL_HINT}") from e
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken: CuPy raises its own runtime errors
        raise RuntimeError(f"device 'cuda' was asked for, but CuPy finds no usable GPU ({e})") from e
    if count == 0:
        raise RuntimeError("device 'cuda' was asked for, but CuPy finds no GPU on this machine")
    return cp


def loaded_cupy():
    """CuPy if something already imported it, else None (never imports it)."""
    return sys.modules.get("cupy")


def is_cupy_array(a):
    cp = loaded_cupy()
    return cp is not None and isinstance(a, cp.ndarray)


def get_array_module(*arrays):
    """numpy or cupy, whichever the arrays live in (as ``cupy.get_array_module``)."""
    for a in arrays:
        if is_cupy_array(a):
            return sys.modules["cupy"]
    return np


def device_of(array):
    if is_cupy_array(array):
        return Device(f"cuda:{array.device.id}")
    return Device("cpu")


_STAY = contextlib.nullcontext()


def on_device_of(array):
    """A ``with`` block in which the array's GPU is the current one (a no-op for NumPy arrays).

    CuPy allocates and launches on the current GPU, whatever GPU the arguments
    live on; ops on 'cuda:1' tensors run inside this, so their work lands there.
    """
    return array.device if is_cupy_array(array) else _STAY


def to_device(array, device):
    """Move an array to ``device`` (a copy only when it has to move)."""
    device = Device(device)
    if device.type == "cpu":
        return array.get() if is_cupy_array(array) else np.asarray(array)
    cp = cupy()
    if device.index is None:
        return cp.asarray(array)
    with cp.cuda.Device(device.index):
        return cp.asarray(array)


def to_numpy(array):
    """The array on the host. From a GPU this waits for it, so the checks left for then run first."""
    if is_cupy_array(array):
        raise_deferred_errors()
        return array.get()
    return np.asarray(array)


def fused(make):
    """Elementwise code that runs as one kernel on a GPU: ``fused(make)(*arrays)``.

    ``make(xp)`` returns a function of arrays and numbers written with operators
    (in-place ones too) and ``xp``'s ufuncs. On NumPy it runs as written; on CuPy
    as ``cupy.fuse`` of it, one launch instead of one per operation. Each
    operation is the same, so are the results, element by element. Where the
    GPU's kernels are switched off (``minidl.kernels``), or CuPy cannot fuse the
    code, it runs as written there too (the latter said once, with a warning).
    """
    plain, fusion = {}, {}

    def run(*args):
        xp = get_array_module(*args)
        if xp not in plain:
            plain[xp] = make(xp)
        if xp is np or not kernels.fusion_allowed():
            return plain[xp](*args)
        try:
            if xp not in fusion:
                fusion[xp] = xp.fuse(plain[xp])
            return fusion[xp](*args)
        except Exception as error:  # tracing or compiling failed before anything ran: run it as written
            fusion.pop(xp, None)
            kernels.give_up_on_fusion(error)
            return plain[xp](*args)

    return run


def scalars_like(array, *numbers):
    """Numbers in the array's dtype, for ``fused`` code: a Python float there could be taken as float64."""
    return tuple(array.dtype.type(n) for n in numbers)


# ---------------------------------------------------------------- checks that wait for the next host read
class _Deferred:
    checks = []  # (flag, describe): a 0-d boolean array on a GPU, and a function giving the error


def check_later(flag, describe):
    """Raise ``describe()`` (an exception) if the GPU flag is true — at the next read back to the host.

    A check of values on the GPU (class ids in range, say) would otherwise stop the host until the GPU
    has caught up, once per call. PyTorch's CUDA ops report such errors the same way: asynchronously, at
    the next synchronisation.
    """
    _Deferred.checks.append((flag, describe))


def raise_deferred_errors():
    """Run the checks left by ``check_later`` (one read of their flags), raising the first that fails."""
    if _Deferred.checks:
        checks, _Deferred.checks = _Deferred.checks, []
        for flag, describe in checks:
            if bool(flag):
                raise describe()


def scatter_add(target, index, values):
    """``target[index] += values`` where repeated indices all add up (NumPy's ``add.at``).

    CuPy 13+ has ``cupy.add.at`` too; older releases only ``cupyx.scatter_add``.
    """
    add = get_array_module(target).add
    if hasattr(add, "at"):
        add.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_add(target, index, values)
    return target
