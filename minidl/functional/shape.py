"""Ops that move values around without changing them.

Their backward moves the gradient the opposite way: reshape it back, permute
it back, or put it into a zero array at the places forward read from (adding
up where forward read one place twice).
"""
import numpy as np

from minidl.backend import get_array_module, scatter_add
from minidl.tensor import Function, Tensor


def normalize_dim(op, dim, ndim):
    """``dim`` as a non-negative axis, or an IndexError naming the op and the valid range."""
    if not -ndim <= dim < max(ndim, 1):
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dimensions")
    return dim % max(ndim, 1)


class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(
                f"reshape: a tensor of shape {tuple(x.shape)} ({x.size} elements) "
                f"cannot be viewed as shape {tuple(shape)}"
            ) from None

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None


class Permute(Function):
    @staticmethod
    def forward(ctx, x, dims):
        ctx.dims = dims
        return x.transpose(dims)

    @staticmethod
    def backward(ctx, g):
        return g.transpose(np.argsort(ctx.dims).tolist()), None  # axes as Python ints, as CuPy takes them


class Expand(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return get_array_module(x).broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, g):
        from minidl.functional.elementwise import unbroadcast

        return unbroadcast(g, ctx.shape), None


def _raw_index(index):
    """The index with Tensors replaced by their arrays (lists of ints become arrays too)."""
    if isinstance(index, tuple):
        return tuple(_raw_index(i) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        return np.asarray(index)
    return index


def _is_basic(index):
    """True when the index has only ints, slices, None and Ellipsis (no repeats possible)."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice, np.integer)) for p in parts)


class GetItem(Function):
    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.dtype, ctx.index = x.shape, x.dtype, index
        return x[index]

    @staticmethod
    def backward(ctx, g):
        xp = get_array_module(g)
        grad = xp.zeros(ctx.shape, ctx.dtype)
        if _is_basic(ctx.index):
            grad[ctx.index] = g
        else:  # integer arrays may name an element twice: its gradients add up
            scatter_add(grad, ctx.index, g)
        return grad, None


class Cat(Function):
    @staticmethod
    def forward(ctx, *arrays, axis):
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        return get_array_module(*arrays).concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        xp = get_array_module(g)
        return tuple(xp.split(g, np.cumsum(ctx.sizes)[:-1].tolist(), axis=ctx.axis))


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, axis):
        ctx.axis = axis
        return get_array_module(*arrays).stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        return tuple(g.take(i, axis=ctx.axis) for i in range(g.shape[ctx.axis]))


class Gather(Function):
    """out[..., i, ...] = x[..., index[..., i, ...], ...] along one axis (torch.gather)."""

    @staticmethod
    def forward(ctx, x, index, axis):
        xp = get_array_module(x)
        # every other axis runs over 0..index.shape[d]-1; ``axis`` takes the index itself
        grid = list(xp.ix_(*(xp.arange(n) for n in index.shape)))
        grid[axis] = index
        ctx.shape, ctx.dtype, ctx.grid = x.shape, x.dtype, tuple(grid)
        return x[ctx.grid]

    @staticmethod
    def backward(ctx, g):
        grad = get_array_module(g).zeros(ctx.shape, ctx.dtype)
        return scatter_add(grad, ctx.grid, g), None, None


_PAD_MODES = ("constant", "reflect", "replicate", "circular")


def _pad_source_index(n, before, after, mode):
    """For each output position along one axis, the input position it copies (non-constant modes)."""
    p = np.arange(-before, n + after)
    if mode == "replicate":
        return np.clip(p, 0, n - 1)
    if mode == "circular":
        return p % n
    period = 2 * (n - 1)  # reflect about the edges without repeating them
    p = np.abs(p) % period if period else np.zeros_like(p)
    return np.where(p >= n, period - p, p)


class Pad(Function):
    @staticmethod
    def forward(ctx, x, widths, mode, value):
        xp = get_array_module(x)
        ctx.shape, ctx.dtype, ctx.widths, ctx.mode = x.shape, x.dtype, widths, mode
        if mode == "constant":
            src, dst, out_shape = _constant_pad_slices(x.shape, widths)
            out = xp.full(out_shape, value, dtype=x.dtype)
            out[dst] = x[src]
            ctx.slices = src, dst
            return out
        ctx.sources = [xp.asarray(_pad_source_index(n, b, a, mode)) for n, (b, a) in zip(x.shape, widths)]
        for axis, source in enumerate(ctx.sources):
            x = x.take(source, axis=axis)
        return x

    @staticmethod
    def backward(ctx, g):
        xp = get_array_module(g)
        if ctx.mode == "constant":
            src, dst = ctx.slices
            grad = xp.zeros(ctx.shape, ctx.dtype)
            grad[src] = g[dst]
            return grad, None, None, None
        for axis in reversed(range(g.ndim)):  # undo the takes, last axis first
            shape = list(g.shape)
            shape[axis] = ctx.shape[axis]
            moved = xp.zeros(shape, g.dtype)
            index = [slice(None)] * g.ndim
            index[axis] = ctx.sources[axis]
            g = scatter_add(moved, tuple(index), g)
        return g, None, None, None


def _constant_pad_slices(shape, widths):
    """Where the input lands in the output; negative widths crop instead of pad."""
    src, dst, out_shape = [], [], []
    for n, (before, after) in zip(shape, widths):
        start, stop = max(-before, 0), n - max(-after, 0)
        length = max(stop - start, 0)
        src.append(slice(start, start + length))
        dst.append(slice(max(before, 0), max(before, 0) + length))
        out_shape.append(n + before + after)
    return tuple(src), tuple(dst), tuple(out_shape)


# ------------------------------------------------------------ the public functions
def _shape_args(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def reshape(input, *shape):
    return Reshape.apply(input, _shape_args(shape))


view = reshape


def flatten(input, start_dim=0, end_dim=-1):
    if input.ndim == 0:
        return reshape(input, 1)
    start = normalize_dim("flatten", start_dim, input.ndim)
    end = normalize_dim("flatten", end_dim, input.ndim)
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    shape = input.shape
    return reshape(input, shape[:start] + (int(np.prod(shape[start : end + 1])),) + shape[end + 1 :])


def permute(input, *dims):
    dims = _shape_args(dims)
    axes = tuple(normalize_dim("permute", d, input.ndim) for d in dims)
    if sorted(axes) != list(range(input.ndim)):
        raise ValueError(f"permute: dims {dims} are not a permutation of the {input.ndim} dimensions of {input.shape}")
    return Permute.apply(input, axes)


def transpose(input, dim0, dim1):
    dims = list(range(input.ndim))
    a, b = normalize_dim("transpose", dim0, input.ndim), normalize_dim("transpose", dim1, input.ndim)
    dims[a], dims[b] = dims[b], dims[a]
    return Permute.apply(input, tuple(dims))


def squeeze(input, dim=None):
    if dim is None:
        return reshape(input, tuple(n for n in input.shape if n != 1))
    dims = (dim,) if isinstance(dim, int) else dim
    axes = {normalize_dim("squeeze", d, input.ndim) for d in dims}
    return reshape(input, tuple(n for i, n in enumerate(input.shape) if not (i in axes and n == 1)))


def unsqueeze(input, dim):
    axis = normalize_dim("unsqueeze", dim, input.ndim + 1)
    return reshape(input, input.shape[:axis] + (1,) + input.shape[axis:])


def expand(input, *shape):
    shape = _shape_args(shape)
    lead = len(shape) - input.ndim
    if lead < 0:
        raise ValueError(f"expand: cannot expand shape {input.shape} to fewer dimensions {shape}")
    # -1 keeps the existing size, as in PyTorch
    target = tuple(input.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
    try:
        np.broadcast_shapes(input.shape, target)
    except ValueError:
        raise ValueError(f"expand: shape {input.shape} cannot be expanded to {shape}") from None
    return Expand.apply(input, target)


def getitem(input, index):
    return GetItem.apply(input, _raw_index(index))


def _check_tensors(op, tensors):
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise ValueError(f"{op}: expected a non-empty list of tensors, got {tensors!r}")


def cat(tensors, dim=0):
    """Join tensors along an existing dimension (their other sizes must match)."""
    _check_tensors("cat", tensors)
    first = tensors[0]
    axis = normalize_dim("cat", dim, first.ndim)
    for i, t in enumerate(tensors[1:], 1):
        if t.ndim != first.ndim or any(a != b for d, (a, b) in enumerate(zip(t.shape, first.shape)) if d != axis):
            raise ValueError(
                f"cat: tensor {i} has shape {t.shape}, which does not match tensor 0's shape "
                f"{first.shape} outside dim {dim}"
            )
    return Cat.apply(*tensors, axis=axis)


concat = concatenate = cat


def stack(tensors, dim=0):
    """Join same-shaped tensors along a new dimension."""
    _check_tensors("stack", tensors)
    for i, t in enumerate(tensors[1:], 1):
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: tensor {i} has shape {t.shape}, but tensor 0 has shape {tensors[0].shape}")
    axis = normalize_dim("stack", dim, tensors[0].ndim + 1)
    return Stack.apply(*tensors, axis=axis)


def gather(input, dim, index):
    index = index.data if isinstance(index, Tensor) else np.asarray(index)
    axis = normalize_dim("gather", dim, input.ndim)
    if index.ndim != input.ndim or any(
        index.shape[d] > input.shape[d] for d in range(input.ndim) if d != axis
    ):
        raise ValueError(
            f"gather: index of shape {tuple(index.shape)} does not fit input of shape {input.shape} "
            f"(same number of dimensions, no larger outside dim {dim})"
        )
    return Gather.apply(input, index, axis)


def pad(input, pad, mode="constant", value=None):  # noqa: A002  (PyTorch's names)
    """Pad (or crop, with negative widths) the last dimensions, as ``torch.nn.functional.pad``.

    ``pad`` lists (before, after) pairs starting from the last dimension:
    ``(left, right, top, bottom)`` pads width then height.
    """
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(
            f"pad: expected an even number of widths, at most 2 per dimension of a tensor with "
            f"{input.ndim} dimensions, got pad={tuple(pad)}"
        )
    if mode not in _PAD_MODES:
        raise ValueError(f"pad: mode must be one of {_PAD_MODES}, got {mode!r}")
    widths = [(0, 0)] * input.ndim
    for i in range(len(pad) // 2):
        widths[input.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
    if mode != "constant":
        for n, (before, after) in zip(input.shape, widths):
            if before < 0 or after < 0:
                raise ValueError(f"pad: negative widths crop only in 'constant' mode, got pad={tuple(pad)}")
            if mode == "reflect" and max(before, after) >= n and (before or after):
                raise ValueError(f"pad: reflect padding {max(before, after)} must be smaller than the size {n} it reflects")
            if mode == "circular" and max(before, after) > n:
                raise ValueError(f"pad: circular padding {max(before, after)} must not exceed the size {n} it wraps")
    return Pad.apply(input, widths, mode, 0 if value is None else value)
