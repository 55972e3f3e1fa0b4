"""Matrix product, with NumPy's (and PyTorch's) rules for 1-D and batched operands."""
from minidl.functional.elementwise import unbroadcast
from minidl.tensor import Function


def _as_matrices(a, b):
    """Vectors become a 1-row / 1-column matrix, so one formula serves every case."""
    return (a[None, :] if a.ndim == 1 else a), (b[:, None] if b.ndim == 1 else b)


class Matmul(Function):
    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: both operands need at least one dimension, got shapes {a.shape} and {b.shape}")
        a2, b2 = _as_matrices(a, b)
        if a2.shape[-1] != b2.shape[-2]:
            raise ValueError(
                f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not match "
                f"({a2.shape[-1]} columns against {b2.shape[-2]} rows)"
            )
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        a2, b2 = _as_matrices(a, b)
        # put back the axes that a vector operand removed from the product
        g2 = g.reshape(g.shape[:-1] + (1,) + g.shape[-1:]) if a.ndim == 1 else g
        g2 = g2[..., None] if b.ndim == 1 else g2
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = unbroadcast(g2 @ b2.swapaxes(-1, -2), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            gb = unbroadcast(a2.swapaxes(-1, -2) @ g2, b2.shape).reshape(b.shape)
        return ga, gb


def matmul(input, other):
    return Matmul.apply(input, other)


def linear(input, weight, bias=None):
    """input @ weight.T + bias, as ``torch.nn.functional.linear``."""
    out = matmul(input, weight.T)
    return out if bias is None else out + bias
