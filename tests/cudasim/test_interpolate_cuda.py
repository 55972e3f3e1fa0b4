"""The CUDA bilinear kernels against the readable NumPy version, under Numba's CUDA simulator."""
import numpy as np
import pytest

import minidl
from minidl.functional.interpolate import _linear_taps
from minidl.kernels.cuda import interpolate as cuda_interpolate
from minidl.nn.functional import interpolate

CASES = [
    ((1, 2, 3, 4), (5, 7)),  # up, odd sizes
    ((2, 1, 5, 6), (3, 2)),  # down
    ((1, 1, 1, 1), (3, 2)),  # from one pixel
    ((1, 2, 4, 3), (1, 1)),  # to one pixel
    ((1, 1, 3, 4), (3, 9)),  # one axis unchanged
]


def _taps(in_hw, out_hw, align_corners, dtype):
    return [_linear_taps(i, o, align_corners, None, np.dtype(dtype)) for i, o in zip(in_hw, out_hw)]


def _readable(x, g, out_hw, align_corners):
    """Output and input gradient of the NumPy version."""
    with minidl.kernels.disabled():
        t = minidl.tensor(x, requires_grad=True)
        y = interpolate(t, size=out_hw, mode="bilinear", align_corners=align_corners)
        y.backward(minidl.tensor(g))
    return y.data, t.grad.data


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape, out_hw", CASES, ids=str)
def test_bilinear_kernels_match_numpy(shape, out_hw, align_corners, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape[:2] + out_hw).astype(dtype)
    h_taps, w_taps = _taps(shape[2:], out_hw, align_corners, dtype)
    out = cuda_interpolate.bilinear_forward(x, h_taps, w_taps)
    gx = cuda_interpolate.bilinear_backward(g, h_taps, w_taps, shape[2:])
    expected_out, expected_gx = _readable(x, g, out_hw, align_corners)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    assert out.dtype == dtype and gx.dtype == dtype
    np.testing.assert_allclose(out, expected_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(gx, expected_gx, rtol=tol, atol=tol)
