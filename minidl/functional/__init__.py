"""Every differentiable op, grouped by topic; each is a Function with its backward beside its forward.

``minidl.nn.functional`` re-exports the ones PyTorch keeps there.
"""
from minidl.functional.elementwise import (  # noqa: F401
    abs,
    add,
    cast,
    clamp,
    div,
    dropout,
    eq,
    exp,
    ge,
    gt,
    le,
    log,
    lt,
    mul,
    ne,
    neg,
    pow,
    relu,
    relu6,
    sigmoid,
    sqrt,
    sub,
    tanh,
    to_device,
    unbroadcast,
    where,
)
from minidl.functional.linalg import linear, matmul  # noqa: F401
from minidl.functional.loss import cross_entropy, log_softmax, nll_loss, softmax  # noqa: F401
from minidl.functional.reduce import amax, amin, argmax, argmin, max, mean, min, sum  # noqa: F401
from minidl.functional.shape import (  # noqa: F401
    cat,
    concat,
    expand,
    flatten,
    gather,
    getitem,
    pad,
    permute,
    reshape,
    squeeze,
    stack,
    transpose,
    unsqueeze,
    view,
)

# The DeepLab ops: each module lists its public functions in __all__.
from minidl.functional.conv import *  # noqa: E402,F401,F403
from minidl.functional.depthwise import *  # noqa: E402,F401,F403
from minidl.functional.interpolate import *  # noqa: E402,F401,F403
from minidl.functional.norm import *  # noqa: E402,F401,F403
from minidl.functional.pool import *  # noqa: E402,F401,F403
