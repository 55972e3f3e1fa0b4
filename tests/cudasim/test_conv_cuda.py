"""The CUDA im2col/col2im kernels against the readable NumPy versions, under Numba's CUDA simulator."""
import numpy as np
import pytest

from minidl.functional.conv import col2im, im2col
from minidl.kernels.cuda import conv as cuda_conv

# (input shape, kernel, stride, padding, dilation): tiny, since the simulator runs one Python thread per entry
GEOMETRIES = [
    ((1, 1, 4, 4), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 2, 5, 6), (3, 2), (2, 1), (1, 0), (2, 3)),  # non-square kernel, stride and dilation
    ((1, 2, 6, 5), (1, 3), (3, 2), (2, 3), (1, 2)),  # padding beyond the kernel's reach
    ((2, 1, 7, 7), (2, 2), (2, 3), (0, 1), (4, 2)),
    ((2, 3, 9, 8), (3, 3), (2, 2), (3, 3), (3, 3)),  # an atrous 3×3 with stride
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0), (1, 1)),  # a 1×1 image
]


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", GEOMETRIES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_matches_numpy(shape, kernel, stride, padding, dilation, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    cols = cuda_conv.im2col(x, kernel, stride, padding, dilation)
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, im2col(x, kernel, stride, padding, dilation))


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", GEOMETRIES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_col2im_matches_numpy(shape, kernel, stride, padding, dilation, dtype):
    rows = im2col(np.zeros(shape), kernel, stride, padding, dilation).shape
    cols = np.random.default_rng(1).standard_normal(rows).astype(dtype)
    image = cuda_conv.col2im(cols, shape, kernel, stride, padding, dilation)
    assert image.dtype == dtype and image.shape == shape
    expected = col2im(cols, shape, kernel, stride, padding, dilation)
    np.testing.assert_allclose(image, expected, rtol=1e-6, atol=1e-6)
