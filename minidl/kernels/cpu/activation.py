"""ReLU's and ReLU6's passes as Numba loops, each one pass over memory on every core.

The compiled twins of the readable ones in ``minidl.functional.elementwise``: read the input (and the upstream
gradient), write the result. The readable NumPy expressions make a temporary per comparison and per product
(ReLU6's gradient: two masks, their ``&``, the product), each a pass of its own on one core.
"""
import numba
import numpy as np

from minidl.kernels.cpu import threads_for


@numba.njit(cache=True, parallel=True)
def _relu6(x, y):
    for k in numba.prange(x.size):
        v = x[k]
        y[k] = v if 0 <= v <= 6 or v != v else (0 if v < 0 else 6)  # v != v: NaN stays NaN


@numba.njit(cache=True, parallel=True)
def _grad_inside(g, y, dx):
    for k in numba.prange(y.size):
        dx[k] = g[k] if 0 < y[k] < 6 else 0


@numba.njit(cache=True, parallel=True)
def _grad_positive(g, y, dx):
    for k in numba.prange(y.size):
        dx[k] = g[k] if y[k] > 0 else 0


def _flat_apply(loop, *arrays):
    """Run ``loop`` on the arrays (of one shape) flattened, into a new array of their shape."""
    out = np.empty(arrays[0].shape, np.result_type(*arrays))
    with threads_for(out.size):
        loop(*(np.ascontiguousarray(a).reshape(-1) for a in arrays), out.reshape(-1))
    return out


def relu6(x):
    """min(max(x, 0), 6)."""
    return _flat_apply(_relu6, x)


def relu6_grad(g, y):
    """g where 0 < y < 6, else 0: ReLU6's input gradient from its output ``y``."""
    return _flat_apply(_grad_inside, g, y)


def relu_grad(g, y):
    """g where y > 0, else 0: ReLU's input gradient from its output ``y``."""
    return _flat_apply(_grad_positive, g, y)
