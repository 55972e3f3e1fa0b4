"""The functional ops under PyTorch's names: ``import minidl.nn.functional as F``."""
from minidl.functional import (  # noqa: F401
    cross_entropy,
    dropout,
    linear,
    log_softmax,
    nll_loss,
    pad,
    relu,
    relu6,
    sigmoid,
    softmax,
    tanh,
)
from minidl.functional.conv import *  # noqa: E402,F401,F403
from minidl.functional.depthwise import *  # noqa: E402,F401,F403
from minidl.functional.interpolate import *  # noqa: E402,F401,F403
from minidl.functional.norm import *  # noqa: E402,F401,F403
from minidl.functional.pool import *  # noqa: E402,F401,F403
