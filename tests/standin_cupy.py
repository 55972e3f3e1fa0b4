"""A stand-in for CuPy backed by NumPy, so that every 'cuda' line of minidl runs in CI without a GPU.

``install()`` puts this module into ``sys.modules['cupy']``; minidl then imports it
as CuPy when a 'cuda' device is asked for. Its arrays compute with NumPy but keep
CuPy's rules, the ones that break code written for NumPy only:

- no implicit conversion to NumPy: ``np.asarray(a)`` raises as CuPy's does, and
  ``float(a)``, ``bool(a)``, ``a.item()`` work only on one element;
- no NumPy arrays mixed into GPU computations (only ``asarray``/``array`` take them,
  and indices, which CuPy copies to the GPU); a CuPy function's array argument must
  be an array, not a Python scalar (``cupy.where(True, ...)`` fails);
- reductions and scalar indexing give 0-d arrays, never host scalars;
- arrays belong to the GPU that was current when they were made, and computing
  on an array while another GPU is current raises (CuPy's error without peer access).
  Two GPUs are simulated, so 'cuda:1' is testable.

It also counts what a GPU profile would show: ``counts.launches`` (every array
function, operator or computing method: one or more kernels on a GPU) and
``counts.host_waits`` (every copy to the host or scalar read, each a synchronisation
on a GPU, and every explicit ``synchronize()``, of a device, a stream or an event).

Streams other than the null stream run asynchronous copies (``ndarray.set(host,
stream=s)``) as a GPU would, later: the copy reads the host array when it runs, so
a host buffer changed before then shows in the copy. It runs at a host wait for it,
when an event after it is found ``done``, or when an array it writes is used on a
stream that waited for such an event (``wait_event``); using that array on a stream
that did not wait raises. ``gpu_behind()`` keeps events from being found done. A
copy from memory that is not pinned (``cuda.alloc_pinned_memory``) makes the host
wait, as CUDA's copies from pageable memory do.
"""
import collections
import contextlib
import functools
import sys
import types
import weakref

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

__version__ = "0.0-standin"
DEVICE_COUNT = 2


class counts:
    launches = 0
    host_waits = 0


# ------------------------------------------------------------------ devices, streams
class _Current:
    device = 0
    stream = None  # None: the null stream


class Device:
    def __init__(self, device=None):
        self.id = _Current.device if device is None else int(device)
        if not 0 <= self.id < DEVICE_COUNT:
            raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {self.id}")
        self._previous = []

    def __enter__(self):
        self._previous.append(_Current.device)
        _Current.device = self.id
        return self

    def __exit__(self, *exc):
        _Current.device = self._previous.pop()

    def use(self):
        _Current.device = self.id

    def synchronize(self):
        _device_synchronize()

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Stream:
    null = None

    def __init__(self, non_blocking=False):
        self.ptr = id(self)
        self._previous = []
        self._queued = collections.deque()  # (number, operation) of the work issued here and not yet run
        self._issued = self._finished = 0  # numbers of the last operation issued, and run
        self._waited = {}  # stream -> the number of its operation that this stream's later work comes after
        _STREAMS.add(self)

    def _enqueue(self, operation):
        self._issued += 1
        self._queued.append((self._issued, operation))
        return self._issued

    def _run_until(self, number):
        while self._queued and self._queued[0][0] <= number:
            self._finished, operation = self._queued.popleft()
            operation()

    def synchronize(self):
        counts.host_waits += 1
        self._run_until(self._issued)

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        """Order this stream's later work after ``event`` (on the GPU: not a host wait)."""
        if event._stream is not None:
            self._waited[event._stream] = max(self._waited.get(event._stream, 0), event._number)

    def __enter__(self):
        self._previous.append(_Current.stream)
        _Current.stream = self
        return self

    def __exit__(self, *exc):
        _Current.stream = self._previous.pop()


_STREAMS = weakref.WeakSet()
Stream.null = Stream()
Stream.null.ptr = 0


class _Behind:
    gpu = False  # True in ``gpu_behind()``: events are never found done


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self._stream, self._number = None, 0

    def record(self, stream=None):
        self._stream = _get_current_stream() if stream is None else stream
        self._number = self._stream._issued

    @property
    def done(self):
        """Whether the work before the event has run: at once (a GPU that keeps up), unless ``gpu_behind()``."""
        if self._stream is None:
            return True
        if not _Behind.gpu:
            self._stream._run_until(self._number)
        return self._stream._finished >= self._number

    def synchronize(self):
        counts.host_waits += 1
        if self._stream is not None:
            self._stream._run_until(self._number)


class PinnedMemory(bytearray):
    """Page-locked host memory, as ``cuda.alloc_pinned_memory`` gives it (NumPy views it with frombuffer)."""


def _is_pinned(array):
    while isinstance(array, np.ndarray):
        array = array.base
    return isinstance(array.obj if isinstance(array, memoryview) else array, PinnedMemory)


def _get_current_stream():
    return _Current.stream or Stream.null


def _device_synchronize():
    counts.host_waits += 1
    for stream in list(_STREAMS):
        stream._run_until(stream._issued)


cuda = types.SimpleNamespace(
    Device=Device,
    Stream=Stream,
    Event=Event,
    get_current_stream=_get_current_stream,
    alloc_pinned_memory=PinnedMemory,
    runtime=types.SimpleNamespace(
        getDeviceCount=lambda: DEVICE_COUNT,
        getDevice=lambda: _Current.device,
        setDevice=lambda i: Device(i).use(),
        deviceSynchronize=_device_synchronize,
    ),
)


# ------------------------------------------------------------------ wrapping and unwrapping
def _wrap(value, device=None):
    """NumPy results as stand-in arrays (scalars as 0-d arrays, as CuPy returns them)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return ndarray(np.asarray(value), _Current.device if device is None else device)
    if isinstance(value, tuple):
        return tuple(_wrap(v, device) for v in value)
    if isinstance(value, list):
        return [_wrap(v, device) for v in value]
    return value


def _check_device(array):
    if array._device != _Current.device:
        raise ValueError(
            f"The device where the array resides ({array._device}) is different from the current "
            f"device ({_Current.device}). Peer access is unavailable between these devices."
        )
    _check_copied(array)


def _check_copied(array):
    """An array written by a copy on another stream is usable on a stream that waited for that copy."""
    if array._pending is None:
        return
    stream, number = array._pending
    current = _get_current_stream()
    if stream._finished < number and current is not stream and current._waited.get(stream, 0) < number:
        raise RuntimeError("the CuPy stand-in: an array is used before the copy into it, issued on another "
                           "stream, is known to be done (wait_event on an event recorded after the copy)")
    stream._run_until(number)  # the GPU has run it by the time work ordered after it runs
    array._pending = None


def _unwrap(value, where, numpy_ok=False):
    """The NumPy array inside a stand-in array; refuses NumPy arrays as CuPy does."""
    if isinstance(value, ndarray):
        _check_device(value)
        return value._a
    if isinstance(value, np.ndarray) and not numpy_ok:
        raise TypeError(f"{where}: Unsupported type {type(value)} (a NumPy array given to CuPy)")
    if isinstance(value, (tuple, list)):
        return type(value)(_unwrap(v, where, numpy_ok) for v in value)
    return value


def _unwrap_all(args, kwargs, where, numpy_ok=False):
    return ([_unwrap(a, where, numpy_ok) for a in args],
            {k: _unwrap(v, where, numpy_ok) for k, v in kwargs.items()})


def _is_scalar(value):
    return isinstance(value, (bool, int, float, complex, np.generic))


class ufunc:
    """A NumPy ufunc on stand-in arrays; Python and NumPy scalars are accepted, NumPy arrays are not."""

    def __init__(self, np_ufunc):
        self._ufunc = np_ufunc
        self.__name__ = np_ufunc.__name__

    def __call__(self, *args, **kwargs):
        counts.launches += 1
        out = kwargs.pop("out", None)
        arrays, kwargs = _unwrap_all(args, kwargs, self.__name__)
        for a in arrays:
            if not (isinstance(a, np.ndarray) or _is_scalar(a)):
                raise TypeError(f"{self.__name__}: Unsupported type {type(a)}")
        if out is not None:
            outs = out if isinstance(out, tuple) else (out,)
            kwargs["out"] = tuple(_unwrap(o, self.__name__) for o in outs)
            self._ufunc(*arrays, **kwargs)
            return out[0] if isinstance(out, tuple) and len(out) == 1 else out
        return _wrap(self._ufunc(*arrays, **kwargs))

    def at(self, a, indices, b=None):
        counts.launches += 1
        if not isinstance(a, ndarray):
            raise TypeError(f"{self.__name__}.at: Unsupported type {type(a)}")
        args = (a._a, _unwrap(indices, "at", numpy_ok=True)) + (() if b is None else (_unwrap(b, "at"),))
        self._ufunc.at(*args)

    def reduce(self, a, *args, **kwargs):
        counts.launches += 1
        return _wrap(self._ufunc.reduce(_unwrap(a, self.__name__), *args, **kwargs))


# Functions that make arrays from Python values or shapes: their arguments need not be arrays.
_CREATION = {"arange", "zeros", "ones", "empty", "full", "eye", "identity", "linspace", "ix_", "indices",
             "array", "asarray", "asanyarray", "fromfunction", "tri"}
# Functions that only describe dtypes or shapes: pass straight through.
_DESCRIPTIVE = {"dtype", "issubdtype", "result_type", "promote_types", "can_cast", "finfo", "iinfo",
                "broadcast_shapes", "shape", "ndim", "size", "isscalar", "min_scalar_type"}


def _function(name, np_function):
    numpy_ok = name in ("array", "asarray", "asanyarray")  # the host-to-device copies

    @functools.wraps(np_function)
    def call(*args, **kwargs):
        counts.launches += 1
        if name not in _CREATION and args:
            first = args[0]
            sequence = isinstance(first, (list, tuple)) and first and all(isinstance(a, ndarray) for a in first)
            if not (isinstance(first, ndarray) or sequence):
                raise TypeError(f"cupy.{name}: expected a cupy.ndarray, got {type(first).__name__}")
        args, kwargs = _unwrap_all(args, kwargs, f"cupy.{name}", numpy_ok)
        return _wrap(np_function(*args, **kwargs))

    return call


def _descriptive(np_function):
    @functools.wraps(np_function)
    def call(*args, **kwargs):
        args = [a._a if isinstance(a, ndarray) else a for a in args]
        return np_function(*args, **kwargs)

    return call


def __getattr__(name):
    """cupy.<name>: NumPy's dtypes and constants as they are, its functions on stand-in arrays."""
    try:
        value = getattr(np, name)
    except AttributeError:
        raise AttributeError(f"the CuPy stand-in has no attribute {name!r}") from None
    if isinstance(value, types.ModuleType):  # numpy.random and the like would compute on the host
        raise AttributeError(f"the CuPy stand-in has no submodule {name!r}")
    if isinstance(value, np.ufunc):
        value = ufunc(value)
    elif name in _DESCRIPTIVE:
        value = _descriptive(value)
    elif callable(value) and not isinstance(value, type):
        value = _function(name, value)
    setattr(sys.modules[__name__], name, value)  # made once
    return value


def fuse(function=None, **options):
    """``cupy.fuse``: the function runs as one kernel, so the stand-in counts its operations as one launch."""
    def fused(*args):
        with one_launch():
            return function(*args)

    return fused if function is not None else (lambda f: fuse(f))


def asnumpy(a):
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def get_array_module(*arrays):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in arrays) else np


# ------------------------------------------------------------------ the array
# Methods that only re-describe memory (no kernel, so no device check on a GPU).
_VIEWS = {"reshape", "view", "transpose", "swapaxes", "squeeze"}


class ndarray(NDArrayOperatorsMixin):
    __slots__ = ("_a", "_device", "_pending")
    __array_priority__ = 100  # minidl's Tensor (1000) wins, as it does against CuPy

    def __init__(self, array, device=None):
        self._a = array
        self._device = _Current.device if device is None else device
        self._pending = None  # (stream, number) of an asynchronous copy into the array, until it has run

    # -- what CuPy refuses
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def _read_host(self):
        counts.host_waits += 1
        _check_copied(self)
        return self._a

    def _one_element(self, what):
        if self._a.size != 1:
            raise TypeError(f"only size-1 arrays can be converted to Python scalars ({what} of shape {self.shape})")
        return self._read_host().reshape(()).item()

    def __float__(self):
        return float(self._one_element("float()"))

    def __int__(self):
        return int(self._one_element("int()"))

    def __bool__(self):
        if self._a.size != 1:
            raise ValueError("The truth value of an array with more than one element is ambiguous.")
        return bool(self._one_element("bool()"))

    def __index__(self):
        raise TypeError("a cupy.ndarray cannot be used as a Python index")

    def item(self):
        return self._one_element("item()")

    def tolist(self):
        return self._read_host().tolist()

    def get(self, stream=None, order="C", out=None):
        return np.array(self._read_host(), order=order)

    def set(self, arr, stream=None):
        """Copy host array ``arr`` in: now on the null stream, later on another (see the module docstring)."""
        counts.launches += 1
        _check_device(self)
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.dtype != self.dtype or arr.shape != self.shape:
            raise ValueError(f"{arr.dtype}{arr.shape} cannot be set to a {self.dtype}{self.shape} array")
        stream = _get_current_stream() if stream is None else stream
        target = self._a

        def copy():
            np.copyto(target, arr)

        if stream is Stream.null:
            copy()
            return
        if not _is_pinned(arr):
            counts.host_waits += 1  # CUDA copies pageable memory through a buffer of its own, host waiting
        self._pending = (stream, stream._enqueue(copy))

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __repr__(self):
        return f"array({np.array2string(self._a, separator=', ')}, device={self._device})"

    # -- what every array has
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T, self._device))
    device = property(lambda self: Device(self._device))

    @property
    def __cuda_array_interface__(self):
        """The array's memory, as CuPy describes it; here host memory (what Numba's simulator reads)."""
        face = self._a.__array_interface__
        contiguous = self._a.flags.c_contiguous
        return {"version": 3, "shape": face["shape"], "typestr": face["typestr"], "descr": face["descr"],
                "data": face["data"], "strides": None if contiguous else face["strides"],
                "stream": _get_current_stream().ptr or 1}

    def __getattr__(self, name):
        """The computing methods (sum, astype, copy, ...): NumPy's, on the current device only."""
        method = getattr(self._a, name)
        if not callable(method):
            return _wrap(method, self._device)

        def call(*args, **kwargs):
            if name not in _VIEWS:
                counts.launches += 1
                _check_device(self)
            args, kwargs = _unwrap_all(args, kwargs, f"ndarray.{name}")
            result = _wrap(method(*args, **kwargs), self._device)
            if name in _VIEWS and isinstance(result, ndarray):
                result._pending = self._pending  # the same memory, copied into as the array is
            return result

        return call

    def __getitem__(self, index):
        counts.launches += 1
        _check_device(self)
        return _wrap(self._a[_unwrap(index, "index", numpy_ok=True)], self._device)

    def __setitem__(self, index, value):
        counts.launches += 1
        _check_device(self)
        if isinstance(value, np.ndarray) and value.ndim:
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        if isinstance(value, (list, tuple)):
            raise TypeError(f"Unsupported type {type(value)} assigned into a cupy.ndarray")
        self._a[_unwrap(index, "index", numpy_ok=True)] = _unwrap(value, "setitem", numpy_ok=True)

    # -- NumPy's protocols: np.exp(a), np.sum(a) and the operators run here, as they do with CuPy
    def __array_ufunc__(self, np_ufunc, method, *inputs, **kwargs):
        known = (ndarray, bool, int, float, complex, np.generic)
        if not all(isinstance(x, known) for x in inputs):
            return NotImplemented  # e.g. a minidl Tensor: its reflected operator takes over
        wrapped = ufunc(np_ufunc)
        return wrapped(*inputs, **kwargs) if method == "__call__" else getattr(wrapped, method)(*inputs, **kwargs)

    def __array_function__(self, np_function, types_, args, kwargs):
        name = np_function.__name__
        if name in _DESCRIPTIVE:
            return _descriptive(np_function)(*args, **kwargs)
        return _function(name, np_function)(*args, **kwargs)


# ------------------------------------------------------------------ installing
def install():
    """Make ``import cupy`` give this module (for the rest of the process)."""
    sys.modules["cupy"] = sys.modules[__name__]


@contextlib.contextmanager
def gpu_behind():
    """A GPU that lags behind the host: no event is found done; work waited for on the host still runs."""
    before, _Behind.gpu = _Behind.gpu, True
    try:
        yield
    finally:
        _Behind.gpu = before


@contextlib.contextmanager
def one_launch():
    """Count the block as a single launch: what a fused or compiled kernel computing it would cost."""
    before = counts.launches, counts.host_waits
    try:
        yield
    finally:
        counts.launches, counts.host_waits = before[0] + 1, before[1]


@contextlib.contextmanager
def counting():
    """``with counting() as c:`` — the launches and host waits of the block, in ``c.launches``/``c.host_waits``."""
    before = counts.launches, counts.host_waits
    result = types.SimpleNamespace()
    try:
        yield result
    finally:
        result.launches = counts.launches - before[0]
        result.host_waits = counts.host_waits - before[1]
