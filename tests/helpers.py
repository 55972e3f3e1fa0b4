"""One helper runs the same expression in minidl and in PyTorch and compares everything.

``check_op(inputs, fn)`` builds the inputs in both frameworks, calls
``fn(lib, *tensors)`` with ``lib`` = ``minidl`` and then ``torch``, compares the
forward outputs, backpropagates the same random upstream gradient through
both, compares every input's gradient, and finally runs minidl's
finite-difference ``gradcheck`` on the same expression. Because minidl mirrors
PyTorch's names, one lambda serves both: ``lambda lib, x: lib.nn.functional.softmax(x, 1)``.
"""
import functools

import numpy as np
import torch

import minidl
from minidl.models.backbones import build_backbone


class Const:
    """An input passed to both frameworks as a constant (no gradient), e.g. integer targets."""

    def __init__(self, array):
        self.array = np.asarray(array)


class Values:
    """A differentiable input with given values instead of random ones."""

    def __init__(self, array):
        self.array = np.asarray(array, dtype=np.float64)


def make_arrays(inputs, low, high, seed):
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in inputs:
        if isinstance(spec, (Const, Values)):
            arrays.append((spec.array, isinstance(spec, Values)))
        else:
            arrays.append((rng.uniform(low, high, size=spec), True))
    return arrays


def _floats(result):
    outs = result if isinstance(result, (tuple, list)) else (result,)
    return [o for o in outs if o.dtype in (minidl.float32, minidl.float64, torch.float32, torch.float64)]


def _to_numpy(t):
    return t.detach().numpy()


def run_both(inputs, fn, low=-2.0, high=2.0, seed=0, device="cpu"):
    """Outputs and input gradients of ``fn`` in minidl (on ``device``) and torch (on the CPU), as NumPy arrays."""
    arrays = make_arrays(inputs, low, high, seed)
    results = {}
    on_device = functools.partial(minidl.tensor, device=device)
    for lib, make in ((minidl, on_device), (torch, torch.tensor)):
        tensors = [make(a.copy(), requires_grad=bool(grad)) for a, grad in arrays]
        outs = _floats(fn(lib, *tensors))
        rng = np.random.default_rng(seed + 1)
        upstream = [rng.standard_normal(tuple(o.shape)) for o in outs]
        total = None
        for o, w in zip(outs, upstream):
            if o.requires_grad:
                term = (o * make(w.astype(_to_numpy(o).dtype))).sum()
                total = term if total is None else total + term
        if total is not None:
            total.backward()
        grads = [None if t.grad is None else _to_numpy(t.grad) for t in tensors]
        results[lib.__name__] = ([_to_numpy(o) for o in outs], grads)
    return results["minidl"], results["torch"]


def check_op(inputs, fn, atol=1e-7, rtol=1e-6, low=-2.0, high=2.0, gradcheck=True, seed=0, device="cpu"):
    """Assert that minidl on ``device`` and PyTorch agree on ``fn``'s outputs and gradients, and gradcheck it."""
    (outs, grads), (t_outs, t_grads) = run_both(inputs, fn, low, high, seed, device)
    assert len(outs) == len(t_outs), f"minidl gave {len(outs)} float outputs, torch {len(t_outs)}"
    for k, (o, t) in enumerate(zip(outs, t_outs)):
        assert o.shape == t.shape, f"output {k}: minidl shape {o.shape}, torch shape {t.shape}"
        np.testing.assert_allclose(o, t, atol=atol, rtol=rtol, err_msg=f"output {k} differs from torch")
    for k, (g, t) in enumerate(zip(grads, t_grads)):
        if t is None or g is None:
            assert g is None and t is None or np.all((g if t is None else t) == 0), (
                f"input {k}: minidl grad is {'None' if g is None else 'set'}, torch grad is "
                f"{'None' if t is None else 'set'}"
            )
            continue
        assert g.shape == t.shape, f"input {k}: grad shape {g.shape}, torch {t.shape}"
        np.testing.assert_allclose(g, t, atol=atol, rtol=rtol, err_msg=f"gradient of input {k} differs from torch")
    if gradcheck:
        arrays = make_arrays(inputs, low, high, seed)
        tensors = [minidl.tensor(a, requires_grad=bool(grad), device=device) for a, grad in arrays]
        minidl.gradcheck(lambda *xs: fn(minidl, *xs), tensors)


def check_module(make, input_shape, modes=("train", "eval"), steps=2, atol=1e-9, rtol=1e-7, seed=0, device="cpu"):
    """Assert that a module built by ``make(lib)`` behaves the same in minidl (on ``device``) and torch.

    Both are float64 and minidl loads torch's weights; then, in each mode, for
    ``steps`` calls: the same state_dict keys and shapes, the same outputs, the
    same input and parameter gradients, and the same buffers afterwards
    (running statistics and batch counters included).
    """
    torch.manual_seed(seed)
    ours, theirs = make(minidl).double(), make(torch).double()
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in theirs.state_dict().items()
    ], "state_dict keys or shapes differ from torch"
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ours.to(device)
    rng = np.random.default_rng(seed)
    for mode in modes:
        ours.train(mode == "train")
        theirs.train(mode == "train")
        for step in range(steps):
            x = rng.standard_normal(input_shape)
            x_ours, x_theirs = minidl.tensor(x, requires_grad=True, device=device), torch.tensor(x, requires_grad=True)
            out, t_out = ours(x_ours), theirs(x_theirs)
            where = f"{mode} step {step}"
            np.testing.assert_allclose(out.detach().numpy(), t_out.detach().numpy(), atol=atol, rtol=rtol, err_msg=f"output, {where}")
            upstream = rng.standard_normal(tuple(out.shape))
            ours.zero_grad()
            theirs.zero_grad()
            out.backward(upstream)
            t_out.backward(torch.tensor(upstream))
            np.testing.assert_allclose(x_ours.grad.numpy(), x_theirs.grad.numpy(), atol=atol, rtol=rtol,
                                       err_msg=f"input gradient, {where}")
            t_params = dict(theirs.named_parameters())
            for name, p in ours.named_parameters():
                np.testing.assert_allclose(p.grad.numpy(), t_params[name].grad.numpy(), atol=atol, rtol=rtol,
                                           err_msg=f"gradient of {name}, {where}")
            t_buffers = dict(theirs.named_buffers())
            for name, b in ours.named_buffers():
                np.testing.assert_allclose(b.numpy(), t_buffers[name].numpy(), atol=atol, rtol=rtol,
                                           err_msg=f"buffer {name}, {where}")


def package(lib):
    return "minidl" if lib is minidl else "reference"


def both_features(name, **options):
    """``make(lib)`` for check_module: the backbone, its two outputs flattened into one tensor.

    check_module compares one tensor; joining "low_level" and "out" checks both,
    and backpropagates into both, in a single pass.
    """
    def make(lib):
        class BothFeatures(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = build_backbone(name, package=package(lib), **options)

            def forward(self, x):
                features = self.backbone(x)
                return lib.cat([features["low_level"].flatten(1), features["out"].flatten(1)], 1)

        return BothFeatures()

    return make
