"""Argument handling shared by convolution and pooling: pairs, output sizes, clear errors."""


def pair(name, value, op, minimum=None):
    """An int or a pair of ints as (height, width), checked against ``minimum``."""
    if isinstance(value, int):
        value = (value, value)
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value)):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if minimum is not None and min(value) < minimum:
        raise ValueError(f"{op}: {name} must be at least {minimum}, got {tuple(value)}")
    return tuple(value)


def dilated_extent(kernel, dilation):
    """How many input pixels a kernel of ``kernel`` taps covers at rate ``dilation``: k + (k-1)(r-1)."""
    return dilation * (kernel - 1) + 1


def tap_positions(tap, dilation, stride, out):
    """The padded-input positions kernel tap ``tap`` reads along one axis: one per output position.

    Tap t of an output at position y reads y·stride + t·dilation, so over the
    ``out`` outputs it reads one strided slice: what im2col copies, and what
    the readable depthwise convolution multiplies, for each tap.
    """
    start = tap * dilation
    return slice(start, start + stride * (out - 1) + 1, stride)


def output_size(op, size, kernel, stride, padding, dilation, ceil_mode=False):
    """Output length along one axis; a ValueError naming the sizes when the kernel does not fit."""
    extent = dilated_extent(kernel, dilation)
    span = size + 2 * padding - extent
    if span < 0:
        raise ValueError(
            f"{op}: the kernel's dilated extent {extent} (kernel {kernel}, dilation {dilation}) is larger "
            f"than the padded input {size + 2 * padding} (size {size}, padding {padding})"
        )
    out = -(-span // stride) + 1 if ceil_mode else span // stride + 1
    # with ceil_mode the last window must start inside the input or its left padding (PyTorch's rule)
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out
