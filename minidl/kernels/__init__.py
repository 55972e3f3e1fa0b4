"""Compiled versions of the hot loops: ``cpu/`` with ``numba.njit``, ``cuda/`` with ``numba.cuda.jit``.

Every kernel has a readable twin in ``minidl.functional``, array code that runs
on NumPy and CuPy alike and computes the same thing. An op asks
``for_array(x, topic, readable)`` and gets the kernels for x's device, or the
readable twin where there are none, inside ``with minidl.kernels.disabled():``,
or when the environment variable ``MINIDL_KERNELS`` leaves that device out
(``off``, ``cpu`` or ``cuda``; the default ``on`` uses both). Tests run both and
compare them.

The CUDA kernels take CuPy arrays (Numba reads them through
``__cuda_array_interface__``) and, under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``), run on the CPU. They depend on Numba's CUDA target
(the ``numba-cuda`` package), its CUDA libraries and the NumPy it supports, any
of which can be missing or mismatched on a machine where CuPy itself works. So
on 'cuda' a failure of Numba — to import, to find the GPU, to compile or to
launch — is never the op's failure: the op computes with the readable CuPy code
instead, and minidl says so once, with a ``KernelsUnavailableWarning``.

Which GPU code is written how: a chain of elementwise operations (with at most
one reduction) is Python array code run through ``minidl.backend.fused``, one
``cupy.fuse`` kernel on a GPU and the same code on NumPy, so it is its own
readable twin; a loop that reads neighbours (im2col/col2im, depthwise,
bilinear) is a Numba CUDA kernel here, with its readable twin in
``minidl.functional`` and its tests under Numba's simulator.
"""
import contextlib
import importlib
import importlib.metadata
import os
import warnings

_SWITCH = "MINIDL_KERNELS"
_CHOICES = {"on": ("cpu", "cuda"), "1": ("cpu", "cuda"), "off": (), "0": (), "cpu": ("cpu",), "cuda": ("cuda",)}


class KernelsUnavailableWarning(RuntimeWarning):
    """minidl's GPU kernels (Numba's CUDA kernels, or CuPy's fusion of elementwise code) cannot run here;
    ops on 'cuda' use their CuPy array code instead."""


def _devices_from_environment():
    value = os.environ.get(_SWITCH, "on").strip().lower()
    if value not in _CHOICES:
        raise ValueError(f"{_SWITCH} must be one of {', '.join(_CHOICES)}, got {value!r}")
    return _CHOICES[value]


class _State:
    enabled = True
    devices = _devices_from_environment()
    cuda_failure = None  # why the CUDA kernels cannot run, once they have failed
    fusion_failure = None  # why cupy.fuse could not fuse, once it has failed
    guarded = {}  # topic -> the CUDA kernel module wrapped by _Guarded


def enabled():
    """Whether ops may use compiled kernels (True unless inside ``disabled()``)."""
    return _State.enabled


@contextlib.contextmanager
def disabled():
    """Run the readable array versions of the ops instead of the compiled kernels."""
    previous, _State.enabled = _State.enabled, False
    try:
        yield
    finally:
        _State.enabled = previous


def fusion_allowed():
    """Whether elementwise code on a GPU may run as ``cupy.fuse`` kernels (see ``minidl.backend.fused``)."""
    return _State.enabled and "cuda" in _State.devices and _State.fusion_failure is None


def give_up_on_fusion(error):
    """Run fused code as written from now on, and say why once."""
    _State.fusion_failure = error
    cupy = _cupy_distribution()
    warnings.warn(
        f"CuPy could not fuse minidl's elementwise code ({type(error).__name__}: {error}) "
        f"[{cupy} {_version(cupy)}], so it runs as separate CuPy operations "
        f"(the same results, more launches). To run the array code without this warning, set {_SWITCH}=cpu.",
        KernelsUnavailableWarning,
        stacklevel=3,
    )


def cuda_failure():
    """Why the CUDA kernels cannot run in this process (an exception), or None while they can."""
    return _State.cuda_failure


def for_array(array, topic, readable=None):
    """The kernels of ``topic`` for the array's device, or ``readable`` (the array code) where there are none.

    ``readable`` has the kernel module's function names, so the op calls either
    alike. On 'cuda' the kernels come wrapped: a call that Numba cannot compile or
    launch runs the readable function instead (see the module's docstring).
    """
    device = "cpu" if type(array).__module__.startswith("numpy") else "cuda"
    if not _State.enabled or device not in _State.devices:
        return readable
    if device == "cuda":
        return _cuda_kernels(topic, readable)
    return _module(device, topic) or readable


def for_float_array(array, topic, readable):
    """As ``for_array``, for kernels compiled for float32 and float64 only: an array of any other dtype gets
    ``readable``."""
    if array.dtype.name not in ("float32", "float64"):
        return readable
    return for_array(array, topic, readable)


def _module(device, topic):
    try:
        return importlib.import_module(f"minidl.kernels.{device}.{topic}")
    except ModuleNotFoundError as e:
        if e.name != f"minidl.kernels.{device}.{topic}":
            raise
        return None


def _cuda_kernels(topic, readable):
    if _State.cuda_failure is not None:
        return readable
    if topic not in _State.guarded:
        try:
            module = _module("cuda", topic)
        except Exception as e:  # Numba's CUDA target itself failed to import
            _give_up_on_cuda(e)
            return readable
        _State.guarded[topic] = module and _Guarded(module, readable)
    return _State.guarded[topic] or readable


class _Guarded:
    """A CUDA kernel module whose functions fall back to their readable twins when Numba fails."""

    def __init__(self, module, readable):
        self._module, self._readable = module, readable

    def __getattr__(self, name):
        compiled, readable = getattr(self._module, name), getattr(self._readable, name)

        def run(*args, **kwargs):
            if _State.cuda_failure is None:
                try:
                    return compiled(*args, **kwargs)
                except Exception as e:
                    if not type(e).__module__.startswith("numba"):
                        raise  # our own error, or CuPy's: not a packaging problem
                    _give_up_on_cuda(e)
            return readable(*args, **kwargs)

        setattr(self, name, run)  # looked up once per name
        return run


def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cupy_distribution():
    names = {d.metadata["Name"] for d in importlib.metadata.distributions() if d.metadata["Name"]}
    found = sorted(n for n in names if n.lower().startswith("cupy"))
    return found[0] if found else "cupy"


def _give_up_on_cuda(error):
    """Remember why the CUDA kernels failed, and say so once."""
    _State.cuda_failure = error
    versions = ", ".join(f"{name} {_version(name)}" for name in ("numba", "numba-cuda", "numpy", _cupy_distribution()))
    warnings.warn(
        f"minidl's Numba CUDA kernels cannot run here, so ops on 'cuda' use their CuPy array code "
        f"instead (the same results, more launches). Numba failed with {type(error).__name__}: {error} "
        f"[{versions}]. To use the kernels, install Numba's CUDA target for your CUDA version and a "
        f"NumPy it supports: `pip install 'numba-cuda[cu12]'` (CUDA 12) or `pip install 'numba-cuda[cu13]'` "
        f"(CUDA 13), as `pip install 'minidl[gpu]'` does for CUDA 12. To use the array code without this "
        f"warning, set {_SWITCH}=cpu.",
        KernelsUnavailableWarning,
        stacklevel=4,
    )


def _forget_cuda_failure():
    """Try the CUDA kernels and fusion again (tests that break and mend them on purpose)."""
    _State.cuda_failure = _State.fusion_failure = None
    _State.guarded.clear()
