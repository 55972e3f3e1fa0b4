"""The CUDA max-pooling kernels against the readable version, under Numba's CUDA simulator."""
import numpy as np
import pytest

from minidl.functional import pool
from minidl.kernels.cuda import pool as cuda_pool

# (N, C, H, W), then the window's pairs flat: kernel, stride, padding, dilation (the output size is worked out)
CASES = [
    ((1, 2, 5, 5), (3, 3, 2, 2, 1, 1, 1, 1)),  # overlapping windows, padding
    ((2, 1, 6, 7), (2, 3, 2, 1, 0, 1, 1, 2)),  # uneven kernel, dilation
    ((1, 1, 4, 4), (3, 3, 3, 3, 2, 2, 1, 1)),  # windows wholly in the padding: their index points past the plane
    ((1, 1, 7, 6), (3, 2, 1, 2, 1, 0, 2, 1)),  # atrous windows, stride 1
]


def _window(shape, flat):
    kernel, stride, padding, dilation = (flat[k:k + 2] for k in range(0, 8, 2))
    out = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(shape[2:], kernel, stride, padding, dilation))
    return pool.Window(kernel, stride, padding, dilation, out)


@pytest.mark.parametrize("shape, flat", CASES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_kernels_match_the_readable_version(shape, flat, dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, shape).astype(dtype)  # small integers: many ties
    x.flat[::7] = -np.inf
    x.flat[5] = np.nan
    window = _window(shape, flat)
    values, index = cuda_pool.max_pool2d_forward(x, *sum(window, ()))
    expected_values, expected_index = pool._max_pool_search(x, window)
    np.testing.assert_array_equal(values, expected_values)
    np.testing.assert_array_equal(index, expected_index)
    assert values.dtype == dtype
    planes, plane_size = shape[0] * shape[1], shape[2] * shape[3]
    g = rng.standard_normal((planes, index[0, 0].size)).astype(dtype)
    flat_index = index.reshape(planes, -1)
    grad = cuda_pool.scatter_to_planes(g, flat_index, plane_size)
    np.testing.assert_allclose(grad, pool._scatter_to_planes_readable(g, flat_index, plane_size), rtol=1e-6, atol=1e-6)
