"""The depthwise CUDA kernels against the readable NumPy version, in Numba's CUDA simulator.

Run in its own process: ``NUMBA_ENABLE_CUDASIM=1 pytest tests/cudasim/test_depthwise_cuda.py``.
The simulator runs every GPU thread as a Python thread, so the shapes are tiny.
"""
import numpy as np
import pytest

from minidl.functional import depthwise as dw
from minidl.functional.convutils import output_size
from minidl.kernels.cuda import depthwise as cuda_kernels

TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}

# (N, C, multiplier, H, W), kernel, stride, padding, dilation, dtype (each dtype compiles its own kernels)
CASES = [
    ((1, 2, 1, 5, 5), (3, 3), (1, 1), (1, 1), (1, 1), np.float32),
    ((1, 1, 2, 6, 5), (3, 3), (2, 2), (1, 1), (1, 1), np.float64),  # stride 2, multiplier 2
    ((2, 1, 1, 6, 6), (3, 3), (1, 1), (2, 2), (2, 2), np.float32),  # atrous, two images
    ((1, 1, 2, 5, 7), (2, 3), (2, 1), (0, 3), (2, 2), np.float64),  # non-square, stride with dilation
    ((1, 1, 1, 3, 3), (3, 1), (3, 1), (4, 0), (1, 1), np.float32),  # padding beyond the reach, stride 3
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_cuda_kernels_match_numpy(case):
    (n, c, m, h, w), kernel, stride, padding, dilation, dtype = case
    tol = TOLERANCE[dtype]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((c * m, 1) + kernel).astype(dtype)
    bias = rng.standard_normal(c * m).astype(dtype)
    geometry = stride, padding, dilation
    out_hw = tuple(output_size("test", *sizes) for sizes in zip((h, w), kernel, *geometry))
    grad = rng.standard_normal((n, c * m) + out_hw).astype(dtype)
    pairs = [
        (cuda_kernels.forward(x, weight, bias, *geometry, out_hw), dw._forward_numpy(x, weight, bias, *geometry, out_hw)),
        (cuda_kernels.forward(x, weight, None, *geometry, out_hw), dw._forward_numpy(x, weight, None, *geometry, out_hw)),
        (cuda_kernels.grad_input(grad, weight, x.shape, *geometry), dw._grad_input_numpy(grad, weight, x.shape, *geometry)),
        (cuda_kernels.grad_weight(x, grad, weight.shape, *geometry), dw._grad_weight_numpy(x, grad, weight.shape, *geometry)),
    ]
    for compiled, readable in pairs:
        assert compiled.dtype == dtype and compiled.shape == readable.shape
        np.testing.assert_allclose(compiled, readable, rtol=tol, atol=tol)
