"""The autograd engine: Tensor, Function and backward().

A Tensor wraps an array (NumPy on 'cpu', CuPy on 'cuda'). Every differentiable
operation is a Function with ``forward`` and ``backward`` written side by side
on raw arrays. Calling ``SomeFunction.apply(*inputs)`` runs ``forward`` and, when
any input requires a gradient, records a Node (the function, its saved context
and its inputs) on the output. ``Tensor.backward()`` visits those nodes once,
in reverse topological order, and hands each one the gradient of its output.
"""
import contextlib
import functools
import math
import weakref

import numpy as np

from minidl import backend
from minidl.backend import Device, get_array_module


# ---------------------------------------------------------------- global modes
class _Modes:
    grad_enabled = True
    detect_anomaly = False


class _SwitchMode(contextlib.ContextDecorator):
    """Set one of the global modes for a ``with`` block (or a decorated function)."""

    def __init__(self, name, value):
        self.name, self.value = name, value

    def __enter__(self):
        self.previous = getattr(_Modes, self.name)
        setattr(_Modes, self.name, self.value)

    def __exit__(self, *exc):
        setattr(_Modes, self.name, self.previous)


def no_grad():
    """Run without recording the graph: ``with minidl.no_grad(): ...`` or ``@minidl.no_grad()``."""
    return _SwitchMode("grad_enabled", False)


def enable_grad():
    return _SwitchMode("grad_enabled", True)


def is_grad_enabled():
    return _Modes.grad_enabled


def detect_anomaly():
    """Raise as soon as a forward or backward produces NaN or infinity, naming the op.

    Without it NaNs propagate (they are never replaced), exactly as in PyTorch;
    this mode finds the op where they first appear.
    """
    return _SwitchMode("detect_anomaly", True)


def _check_finite(array, what):
    xp = get_array_module(array)
    if xp.issubdtype(array.dtype, xp.floating) and not bool(xp.isfinite(array).all()):
        raise FloatingPointError(f"{what} produced non-finite values (NaN or infinity)")


# ---------------------------------------------------------------- Function
class Context:
    """What a Function's forward leaves for its backward."""

    def save_for_backward(self, *arrays):
        self.saved = arrays


class Node:
    """One recorded call of a Function: the graph is made of these."""

    __slots__ = ("function", "ctx", "inputs", "__weakref__")

    def __init__(self, function, ctx, inputs):
        self.function, self.ctx, self.inputs = function, ctx, inputs

    @property
    def name(self):
        return f"{self.function.__name__}Backward"

    def __repr__(self):
        return f"<{self.name}>"


class Function:
    """An operation with its derivative.

    Subclasses define two static methods on raw arrays::

        forward(ctx, *arrays, **params) -> array
        backward(ctx, grad_output) -> one gradient per positional input (None where not needed)

    ``ctx.needs_input_grad[i]`` says whether input i wants a gradient, so a
    backward can skip work nobody asked for.
    """

    @staticmethod
    def forward(ctx, *arrays, **params):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad_output):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        inputs = tuple(_as_input(x) for x in inputs)
        tensors = [x for x in inputs if isinstance(x, Tensor)]
        _check_same_device(cls.__name__, tensors)
        ctx = Context()
        ctx.needs_input_grad = tuple(isinstance(x, Tensor) and x.requires_grad for x in inputs)
        with backend.on_device_of(tensors[0].data if tensors else None):
            out = cls.forward(ctx, *(x.data if isinstance(x, Tensor) else x for x in inputs), **params)
        if _Modes.detect_anomaly:
            _check_finite(out, f"{cls.__name__} (forward)")
        result = Tensor(out)
        if _Modes.grad_enabled and any(ctx.needs_input_grad):
            result.requires_grad = True
            parents = tuple(x if needs else None for x, needs in zip(inputs, ctx.needs_input_grad))
            result.grad_fn = Node(cls, ctx, parents)
        return result


def _as_input(x):
    # NumPy/CuPy arrays become constant tensors, so device checks see them;
    # Python numbers stay numbers and broadcast as weak scalars (NumPy's rules).
    if isinstance(x, Tensor) or not hasattr(x, "__array__"):
        return x
    return Tensor(x if backend.is_cupy_array(x) else np.asarray(x))


def _check_same_device(op, tensors):
    if len(tensors) > 1:
        first = tensors[0].device
        for t in tensors[1:]:
            if t.device != first:
                raise RuntimeError(
                    f"{op}: expected all tensors on the same device, got {first} and {t.device}; "
                    f"move them with .to('{first}') or .to('{t.device}')"
                )


# ---------------------------------------------------------------- backward
def _topological_order(root):
    """Nodes reachable from ``root``, each before the nodes that made its inputs.

    Iterative depth-first search, so a graph thousands of ops deep (a
    ResNet-101 unrolled) never meets Python's recursion limit.
    """
    postorder, visited, stack = [], set(), [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            postorder.append(node)
            continue
        if node in visited:
            continue
        visited.add(node)
        stack.append((node, True))
        for parent in node.inputs:
            if parent is not None and parent.grad_fn is not None and parent.grad_fn not in visited:
                stack.append((parent.grad_fn, False))
    return postorder[::-1]


def _run_backward(root, grad, retain_graph):
    grads = {root.grad_fn: grad}
    for node in _topological_order(root.grad_fn):
        grad = grads.pop(node)
        retained = _retained_grads.get(node, lambda: None)()
        if retained is not None:
            retained._accumulate_grad(grad)
        if node.ctx is None:
            raise RuntimeError(
                f"{node.name}: trying to backward through the graph a second time; its saved "
                "values were freed by the first backward(). Use backward(retain_graph=True) "
                "the first time if you need to call it twice."
            )
        with backend.on_device_of(grad):
            input_grads = node.function.backward(node.ctx, grad)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(node.inputs):
            raise RuntimeError(
                f"{node.name} returned {len(input_grads)} gradients for {len(node.inputs)} inputs"
            )
        for parent, g in zip(node.inputs, input_grads):
            if parent is None or g is None:
                continue
            if g.shape != parent.shape:
                raise RuntimeError(
                    f"{node.name} returned a gradient of shape {g.shape} "
                    f"for an input of shape {parent.shape}"
                )
            if _Modes.detect_anomaly:
                _check_finite(g, f"{node.name} (backward)")
            if parent.grad_fn is None:
                parent._accumulate_grad(g)
            elif parent.grad_fn in grads:
                grads[parent.grad_fn] = grads[parent.grad_fn] + g  # never in place: g may be shared
            else:
                grads[parent.grad_fn] = g
        if not retain_graph:  # as PyTorch frees saved tensors: the activations go as soon as backward has used them
            node.ctx = None
            node.inputs = tuple(_released(parent) for parent in node.inputs)


class _Released:
    """What a node keeps of an intermediate input once backward has used it: where it came from, not its values."""

    __slots__ = ("grad_fn", "shape", "dtype")

    def __init__(self, tensor):
        self.grad_fn, self.shape, self.dtype = tensor.grad_fn, tensor.shape, tensor.dtype

    def __repr__(self):
        return f"<released input of shape {self.shape}, from {self.grad_fn}>"


def _released(parent):
    # leaves (parameters, inputs) are the user's and stay; an intermediate's array is let go
    return parent if parent is None or parent.grad_fn is None else _Released(parent)


# Non-leaf tensors that asked for ``retain_grad()`` (weakly), keyed by the node that made them.
_retained_grads = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------- Tensor
def _default_dtype(array):
    # PyTorch's defaults: Python floats become float32, Python ints int64.
    if array.dtype == np.float64:
        return np.float32
    if array.dtype.kind in "iu":
        return np.int64
    return array.dtype


class Tensor:
    """An array with an optional gradient and a link to the Function that made it.

    ``data`` is the raw array (numpy.ndarray or cupy.ndarray); ``grad`` is a
    Tensor of the same shape once ``backward()`` has reached it.
    """

    # Makes ``ndarray * tensor`` call Tensor.__rmul__ instead of NumPy's broadcasting.
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        if not (isinstance(data, np.ndarray) or backend.is_cupy_array(data)):
            data = np.asarray(data)
        self.data = data
        self.grad = None
        self.grad_fn = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # -- what it is
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self):
        return self.ndim

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self):
        body = np.array2string(backend.to_numpy(self.data), separator=", ", prefix="tensor(")
        extras = []
        if self.device.type != "cpu":
            extras.append(f"device='{self.device}'")
        if self.dtype not in (np.float32, np.int64, np.bool_):
            extras.append(f"dtype={self.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn={self.grad_fn}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extras) + ")"

    # -- getting the values out
    def numpy(self):
        """The values as a NumPy array (copied from the GPU for 'cuda' tensors)."""
        if self.requires_grad:
            raise RuntimeError("numpy() on a tensor that requires grad: call .detach().numpy()")
        return backend.to_numpy(self.data)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        if backend.is_cupy_array(self.data):
            backend.raise_deferred_errors()
        return self.data.item()

    def tolist(self):
        return backend.to_numpy(self.data).tolist()

    def __bool__(self):
        return bool(self.item())

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    # -- graph handling
    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.dtype.kind not in "fc":
            raise RuntimeError(f"only floating-point tensors can require gradients, got dtype {self.dtype}")
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError("requires_grad_(False) on a non-leaf tensor: use .detach() instead")
        self.requires_grad = requires_grad
        return self

    def detach(self):
        """The same values, cut from the graph (shares the array, as in PyTorch)."""
        return Tensor(self.data)

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward()."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a tensor that does not require grad")
        if self.grad_fn is not None:
            _retained_grads[self.grad_fn] = weakref.ref(self)

    def _accumulate_grad(self, g):
        g = g.astype(self.dtype, copy=False)
        # The first gradient is copied: backward functions share arrays between inputs.
        self.grad = Tensor(g.copy()) if self.grad is None else Tensor(self.grad.data + g)

    def backward(self, gradient=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``gradient`` is d(loss)/d(self); it may be left out only for a tensor with
        one element, where it is 1.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of the computation "
                "had requires_grad=True (or it ran under no_grad())"
            )
        with backend.on_device_of(self.data):
            grad = self._initial_gradient(gradient)
            if self.grad_fn is None:
                self._accumulate_grad(grad)
            else:
                _run_backward(self, grad, retain_graph)

    def _initial_gradient(self, gradient):
        xp = get_array_module(self.data)
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() on a tensor of shape {self.shape}: a gradient can be created "
                    "implicitly only for a tensor with one element; pass backward(gradient) "
                    "with d(loss)/d(this tensor), of the same shape"
                )
            return xp.ones_like(self.data)
        if isinstance(gradient, Tensor) and gradient.device != self.device:
            raise RuntimeError(f"backward(gradient): gradient is on {gradient.device}, the tensor on {self.device}")
        grad = gradient.data if isinstance(gradient, Tensor) else xp.asarray(gradient)
        if grad.shape != self.data.shape:
            raise ValueError(
                f"backward(gradient): gradient has shape {tuple(grad.shape)}, "
                f"but the tensor has shape {self.shape}"
            )
        return grad.astype(self.dtype, copy=False)

    # -- moving between devices and dtypes
    def to(self, *args, device=None, dtype=None):
        """``to('cuda')``, ``to(minidl.float64)``, ``to('cpu', minidl.float32)``, as in PyTorch."""
        for a in args:
            if isinstance(a, (str, Device)):
                device = a
            else:
                dtype = a
        out = self
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = _F.cast(out, np.dtype(dtype))
        if device is not None and Device(device) != self.device:
            out = _F.to_device(out, Device(device))
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    def long(self):
        return self.to(np.int64)

    # -- arithmetic (each one a Function in minidl.functional)
    def __add__(self, other):
        return _F.add(self, other)

    def __radd__(self, other):
        return _F.add(other, self)

    def __sub__(self, other):
        return _F.sub(self, other)

    def __rsub__(self, other):
        return _F.sub(other, self)

    def __mul__(self, other):
        return _F.mul(self, other)

    def __rmul__(self, other):
        return _F.mul(other, self)

    def __truediv__(self, other):
        return _F.div(self, other)

    def __rtruediv__(self, other):
        return _F.div(other, self)

    def __neg__(self):
        return _F.neg(self)

    def __pow__(self, exponent):
        return _F.pow(self, exponent)

    def __rpow__(self, base):
        return _F.pow(base, self)

    def __matmul__(self, other):
        return _F.matmul(self, other)

    def __rmatmul__(self, other):
        return _F.matmul(other, self)

    def __getitem__(self, index):
        return _F.getitem(self, index)

    # comparisons give boolean tensors, outside the graph
    def __eq__(self, other):
        return _F.eq(self, other)

    def __ne__(self, other):
        return _F.ne(self, other)

    def __lt__(self, other):
        return _F.lt(self, other)

    def __le__(self, other):
        return _F.le(self, other)

    def __gt__(self, other):
        return _F.gt(self, other)

    def __ge__(self, other):
        return _F.ge(self, other)

    __hash__ = object.__hash__

    def add(self, other):
        return _F.add(self, other)

    def sub(self, other):
        return _F.sub(self, other)

    def mul(self, other):
        return _F.mul(self, other)

    def div(self, other):
        return _F.div(self, other)

    def neg(self):
        return _F.neg(self)

    def pow(self, exponent):
        return _F.pow(self, exponent)

    def matmul(self, other):
        return _F.matmul(self, other)

    def exp(self):
        return _F.exp(self)

    def log(self):
        return _F.log(self)

    def sqrt(self):
        return _F.sqrt(self)

    def abs(self):
        return _F.abs(self)

    def relu(self):
        return _F.relu(self)

    def sigmoid(self):
        return _F.sigmoid(self)

    def tanh(self):
        return _F.tanh(self)

    def clamp(self, min=None, max=None):
        return _F.clamp(self, min, max)

    # -- reductions
    def sum(self, dim=None, keepdim=False, *, axis=None):
        return _F.sum(self, dim, keepdim, axis=axis)

    def mean(self, dim=None, keepdim=False, *, axis=None):
        return _F.mean(self, dim, keepdim, axis=axis)

    def max(self, dim=None, keepdim=False, *, axis=None):
        return _F.max(self, dim, keepdim, axis=axis)

    def min(self, dim=None, keepdim=False, *, axis=None):
        return _F.min(self, dim, keepdim, axis=axis)

    def amax(self, dim=None, keepdim=False):
        return _F.amax(self, dim, keepdim)

    def amin(self, dim=None, keepdim=False):
        return _F.amin(self, dim, keepdim)

    def argmax(self, dim=None, keepdim=False):
        return _F.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return _F.argmin(self, dim, keepdim)

    def softmax(self, dim):
        return _F.softmax(self, dim)

    def log_softmax(self, dim):
        return _F.log_softmax(self, dim)

    # -- shapes
    def reshape(self, *shape):
        return _F.reshape(self, *shape)

    def view(self, *shape):
        return _F.reshape(self, *shape)

    def flatten(self, start_dim=0, end_dim=-1):
        return _F.flatten(self, start_dim, end_dim)

    def transpose(self, dim0, dim1):
        return _F.transpose(self, dim0, dim1)

    def permute(self, *dims):
        return _F.permute(self, *dims)

    @property
    def T(self):
        return _F.permute(self, *reversed(range(self.ndim)))

    def squeeze(self, dim=None):
        return _F.squeeze(self, dim)

    def unsqueeze(self, dim):
        return _F.unsqueeze(self, dim)

    def expand(self, *shape):
        return _F.expand(self, *shape)

    def gather(self, dim, index):
        return _F.gather(self, dim, index)


# ---------------------------------------------------------------- creating tensors
def tensor(data, requires_grad=False, dtype=None, device="cpu"):
    """A new tensor from a list, a number or an array, as ``torch.tensor``.

    Python floats become float32 and ints int64 unless ``dtype`` says otherwise;
    a NumPy array keeps its dtype.
    """
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.ndarray) or backend.is_cupy_array(data):
        array = backend.to_numpy(data) if Device(device).type == "cpu" else data
        array = array.astype(dtype if dtype is not None else array.dtype, copy=True)
    else:
        array = np.asarray(data)
        array = array.astype(dtype if dtype is not None else _default_dtype(array))
    return Tensor(backend.to_device(array, device), requires_grad=requires_grad)


def from_numpy(array):
    """A tensor sharing memory with a NumPy array (no copy, dtype kept)."""
    return Tensor(np.asarray(array))


def _shape_arg(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def _creator(fill):
    @functools.wraps(fill)
    def make(*shape, dtype=np.float32, device="cpu", requires_grad=False):
        array = fill(_shape_arg(shape), np.dtype(dtype))
        return Tensor(backend.to_device(array, device), requires_grad=requires_grad)

    return make


zeros = _creator(lambda shape, dtype: np.zeros(shape, dtype))
ones = _creator(lambda shape, dtype: np.ones(shape, dtype))
empty = _creator(lambda shape, dtype: np.empty(shape, dtype))


def full(size, fill_value, dtype=np.float32, device="cpu", requires_grad=False):
    array = np.full(tuple(size), fill_value, dtype=dtype)
    return Tensor(backend.to_device(array, device), requires_grad=requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    xp = get_array_module(t.data)
    return Tensor(xp.zeros_like(t.data, dtype=dtype), requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    xp = get_array_module(t.data)
    return Tensor(xp.ones_like(t.data, dtype=dtype), requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device="cpu", requires_grad=False):
    if end is None:
        start, end = 0, start
    array = np.arange(start, end, step)
    array = array.astype(dtype if dtype is not None else _default_dtype(array))
    return Tensor(backend.to_device(array, device), requires_grad=requires_grad)


# -- random numbers: NumPy's generator on the CPU, a counter-based one on the GPU; manual_seed resets both
class CounterGenerator:
    """Random numbers for CuPy arrays whose whole state is two integers: the seed and how many were drawn.

    Number k of the stream is a hash of (seed, k), SplitMix64's finaliser, so a
    draw is a few elementwise operations on the GPU and a checkpoint restores the
    stream exactly from (seed, offset). CuPy's own generators keep their state on
    the GPU with no way to save it, and only exist once CuPy is imported.
    """

    _GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB

    def __init__(self, seed=0, offset=0):
        self.seed, self.offset = int(seed), int(offset)

    @property
    def state(self):
        return {"seed": self.seed, "offset": self.offset}

    def _mix(self, z, xp):
        z = (z ^ (z >> xp.uint64(30))) * xp.uint64(self._MIX1)
        z = (z ^ (z >> xp.uint64(27))) * xp.uint64(self._MIX2)
        return z ^ (z >> xp.uint64(31))

    def random(self, shape):
        """Uniform float64 in [0, 1) of ``shape``, on the current GPU."""
        xp = backend.loaded_cupy()
        count = math.prod(shape)
        start = (self.seed * self._GOLDEN + self.offset) % 2**64
        self.offset += count
        z = xp.arange(count, dtype=xp.uint64) + xp.uint64(start)
        bits = self._mix(z * xp.uint64(self._GOLDEN), xp)
        return ((bits >> xp.uint64(11)).astype(xp.float64) * 2.0**-53).reshape(shape)

    def uniform(self, low, high, shape):
        return low + (high - low) * self.random(shape)

    def normal(self, mean, std, shape):
        """Box-Muller on two uniform draws."""
        xp = backend.loaded_cupy()
        radius = xp.sqrt(-2.0 * xp.log(1.0 - self.random(shape)))
        return mean + std * radius * xp.cos(2 * math.pi * self.random(shape))


class _Random:
    numpy = np.random.default_rng(0)
    cuda = CounterGenerator(0)


def manual_seed(seed):
    """Seed every random number minidl draws, on every device (CuPy need not be imported yet)."""
    _Random.numpy = np.random.default_rng(seed)
    _Random.cuda = CounterGenerator(seed)


def get_rng_state():
    """The state of minidl's generators (dropout masks, randn, init), to save in a checkpoint."""
    return {"numpy": _Random.numpy.bit_generator.state, "cuda": _Random.cuda.state}


def set_rng_state(state):
    """Restore a state from ``get_rng_state()``: the random numbers continue exactly from there.

    A NumPy generator state alone (what checkpoints held before the GPU generator) restores the CPU's.
    """
    if "bit_generator" in state:
        state = {"numpy": state, "cuda": _Random.cuda.state}
    _Random.numpy.bit_generator.state = state["numpy"]
    _Random.cuda = CounterGenerator(**state["cuda"])


def random_module(xp):
    """The generator to draw from for arrays of module ``xp`` (numpy or cupy)."""
    return _Random.numpy if xp is np else _Random.cuda


def randn(*shape, dtype=np.float32, device="cpu", requires_grad=False):
    array = _Random.numpy.standard_normal(_shape_arg(shape)).astype(dtype)
    return Tensor(backend.to_device(array, device), requires_grad=requires_grad)


def rand(*shape, dtype=np.float32, device="cpu", requires_grad=False):
    array = _Random.numpy.random(_shape_arg(shape)).astype(dtype)
    return Tensor(backend.to_device(array, device), requires_grad=requires_grad)


def randint(low, high=None, size=(), dtype=np.int64, device="cpu"):
    if high is None:
        low, high = 0, low
    array = _Random.numpy.integers(low, high, size=tuple(size)).astype(dtype)
    return Tensor(backend.to_device(array, device))


from minidl import functional as _F  # noqa: E402  (the ops need Tensor and Function defined first)
