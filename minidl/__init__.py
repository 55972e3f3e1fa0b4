"""minidl: DeepLab v2 → v3 → v3+ from scratch, on a small autograd engine over NumPy and CuPy."""
import os as _os
import sys as _sys

# OpenBLAS reads how long its idle threads spin when NumPy loads it, so this must come first; why the spin is
# kept short, and what minidl does when NumPy was loaded before it: minidl/kernels/cpu/__init__.py.
if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "14")

import numpy as _np  # noqa: E402

from minidl.backend import Device as device  # noqa: F401
from minidl.backend import get_array_module  # noqa: F401
from minidl.functional import (  # noqa: F401
    abs,
    amax,
    amin,
    argmax,
    argmin,
    cat,
    clamp,
    concat,
    exp,
    flatten,
    gather,
    log,
    log_softmax,
    matmul,
    max,
    mean,
    min,
    permute,
    relu,
    reshape,
    sigmoid,
    softmax,
    sqrt,
    squeeze,
    stack,
    sum,
    tanh,
    transpose,
    unsqueeze,
    where,
)
from minidl.gradcheck import GradcheckError, gradcheck  # noqa: F401
from minidl.tensor import (  # noqa: F401
    Function,
    Tensor,
    arange,
    detect_anomaly,
    empty,
    enable_grad,
    from_numpy,
    full,
    get_rng_state,
    is_grad_enabled,
    manual_seed,
    no_grad,
    ones,
    ones_like,
    rand,
    randint,
    randn,
    set_rng_state,
    tensor,
    zeros,
    zeros_like,
)

float16, float32, float64 = _np.float16, _np.float32, _np.float64
int32, int64, bool_ = _np.int32, _np.int64, _np.bool_
bool = _np.bool_  # noqa: A001  (PyTorch's name: minidl.bool)

from minidl import data, nn, optim  # noqa: E402,F401

__version__ = "0.1.0"
