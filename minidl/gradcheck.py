"""Finite-difference gradient checking.

For each input that requires a gradient, every element is nudged by ±eps and
the change of the output is compared with what backward() says. To check all
outputs at once without a full Jacobian, the output is first projected onto a
fixed random direction w: we compare d(sum(w * f(x)))/dx, computed both ways.
A wrong backward is caught unless its error happens to be orthogonal to a
random w, which does not happen in practice.
"""
import numpy as np

from minidl import backend
from minidl.tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic gradient of some input disagrees with the numeric one."""


def _outputs(result):
    outs = result if isinstance(result, (tuple, list)) else (result,)
    outs = tuple(o for o in outs if isinstance(o, Tensor) and o.dtype.kind == "f")
    if not outs:
        raise TypeError("gradcheck: fn must return a floating-point Tensor (or a tuple of them)")
    return outs


def _projection(fn, inputs, weights):
    with no_grad():
        return sum(float((o.data * w).sum()) for o, w in zip(_outputs(fn(*inputs)), weights))


def _report(index, x, numeric, analytic, atol, rtol, shown=8):
    diff = np.abs(numeric - analytic)
    bad = np.flatnonzero(diff > atol + rtol * np.abs(numeric))
    worst = bad[np.argsort(-diff.ravel()[bad])][:shown]
    lines = [
        f"gradcheck failed for input {index} (shape {x.shape}): "
        f"{bad.size} of {x.numel()} elements differ beyond atol={atol} + rtol={rtol} * |numeric|",
        f"  {'element':<16}{'numeric':>16}{'analytic':>16}{'difference':>16}",
    ]
    for flat in worst:
        where = str(tuple(int(i) for i in np.unravel_index(flat, x.shape)))
        n, a = numeric.ravel()[flat], analytic.ravel()[flat]
        lines.append(f"  {where:<16}{n:>16.8g}{a:>16.8g}{abs(n - a):>16.3g}")
    if bad.size > shown:
        lines.append(f"  ... and {bad.size - shown} more")
    return "\n".join(lines)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, seed=0):
    """Compare backward() with central finite differences, in float64.

    ``fn`` takes the ``inputs`` (Tensors or other values, passed in order) and
    returns a Tensor. Inputs with ``requires_grad`` are checked; they are
    copied to float64 first, because float32 finite differences cannot reach
    useful precision. Returns True, or raises GradcheckError with a table of
    the worst elements: which input, which element, numeric and analytic value.
    """
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    inputs = tuple(
        Tensor(x.data.astype(np.float64), requires_grad=True) if isinstance(x, Tensor) and x.requires_grad else x
        for x in inputs
    )
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")

    outputs = _outputs(fn(*inputs))
    rng = np.random.default_rng(seed)
    weights = [backend.to_device(rng.standard_normal(o.shape), o.device) for o in outputs]
    total = sum((o * w).sum() for o, w in zip(outputs, weights) if o.requires_grad)
    if isinstance(total, Tensor):
        total.backward()

    messages = []
    for i in checked:
        x = inputs[i]
        analytic = np.zeros(x.shape) if x.grad is None else backend.to_numpy(x.grad.data)
        numeric = np.empty(x.shape)
        flat = x.data.reshape(-1)  # a view: nudging it nudges x
        for k in range(flat.size):
            original = float(flat[k])
            flat[k] = original + eps
            plus = _projection(fn, inputs, weights)
            flat[k] = original - eps
            minus = _projection(fn, inputs, weights)
            flat[k] = original
            numeric.reshape(-1)[k] = (plus - minus) / (2 * eps)
        if not np.allclose(analytic, numeric, atol=atol, rtol=rtol, equal_nan=False):
            messages.append(_report(i, x, numeric, analytic, atol, rtol))
    if messages:
        if raise_exception:
            raise GradcheckError("\n".join(messages))
        return False
    return True
