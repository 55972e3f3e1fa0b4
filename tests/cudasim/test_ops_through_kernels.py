"""Ops on 'cuda' tensors through the CUDA kernels, end to end, under Numba's CUDA simulator.

The CuPy stand-in (tests/standin_cupy.py) holds the arrays; the kernels see them through
``__cuda_array_interface__``, as they see CuPy's on a GPU. Each op is compared with PyTorch,
forward and backward, and must have gone through its kernels rather than the array code.
"""
import numpy as np
import pytest
from helpers import check_op

from minidl import kernels

CASES = [
    ("conv", ["im2col", "col2im"], [(1, 2, 5, 4), (3, 2, 3, 3), (3,)],
     lambda lib, x, w, b: lib.nn.functional.conv2d(x, w, b, stride=2, padding=2, dilation=2)),
    ("depthwise", ["forward", "grad_input", "grad_weight"], [(1, 2, 5, 5), (2, 1, 3, 3)],
     lambda lib, x, w: lib.nn.functional.conv2d(x, w, padding=2, dilation=2, groups=2)),
    ("interpolate", ["bilinear_forward", "bilinear_backward"], [(1, 2, 3, 4)],
     lambda lib, x: lib.nn.functional.interpolate(x, size=(5, 7), mode="bilinear", align_corners=False)),
    ("pool", ["max_pool2d_forward", "scatter_to_planes"], [(1, 2, 5, 5)],
     lambda lib, x: lib.nn.functional.max_pool2d(x, 3, stride=2, padding=1)),
]


@pytest.mark.parametrize("topic, functions, inputs, fn", CASES, ids=[c[0] for c in CASES])
def test_op_on_cuda_runs_its_kernels_and_matches_torch(topic, functions, inputs, fn, monkeypatch):
    import importlib

    module = importlib.import_module(f"minidl.kernels.cuda.{topic}")
    called = []
    for name in functions:
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name, **k: called.append(_n) or _f(*a, **k))
    kernels._forget_cuda_failure()  # the wrappers above must be the ones looked up
    check_op(inputs, fn, device="cuda", gradcheck=False)
    assert kernels.cuda_failure() is None
    assert sorted(set(called)) == sorted(functions)
