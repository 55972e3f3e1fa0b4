"""The depthwise CUDA kernels against the readable NumPy version, in Numba's CUDA simulator.

Run in its own process: ``NUMBA_ENABLE_CUDASIM=1 pytest tests/cudasim/test_depthwise_cuda.py``.
The simulator runs every GPU thread as a Python thread, so the shapes are tiny.
"""
import numpy as np
import pytest
from test_depthwise import check_kernels_match_readable

from minidl.kernels.cuda import depthwise as cuda_kernels

TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}

# (N, C, multiplier, H, W), kernel, (stride, padding, dilation), dtype (each dtype compiles its own kernels)
CASES = [
    ((1, 2, 1, 5, 5), (3, 3), ((1, 1), (1, 1), (1, 1)), np.float32),
    ((1, 1, 2, 6, 5), (3, 3), ((2, 2), (1, 1), (1, 1)), np.float64),  # stride 2, multiplier 2
    ((2, 1, 1, 6, 6), (3, 3), ((1, 1), (2, 2), (2, 2)), np.float32),  # atrous, two images
    ((1, 1, 2, 5, 7), (2, 3), ((2, 1), (0, 3), (2, 2)), np.float64),  # non-square, stride with dilation
    ((1, 1, 1, 3, 3), (3, 1), ((3, 1), (4, 0), (1, 1)), np.float32),  # padding beyond the reach, stride 3
    ((0, 1, 2, 3, 3), (3, 3), ((1, 1), (1, 1), (1, 1)), np.float64),  # an empty batch
]


@pytest.mark.parametrize("shape, kernel, geometry, dtype", CASES, ids=str)
def test_cuda_kernels_match_numpy(shape, kernel, geometry, dtype):
    check_kernels_match_readable(cuda_kernels, shape, kernel, geometry, dtype, TOLERANCE[dtype])
