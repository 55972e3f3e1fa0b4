"""The engine itself: tensors, the graph, backward(), modes, devices, and the errors a user can cause."""
import sys

import numpy as np
import pytest
import standin_cupy
import torch
from helpers import check_op

import minidl
import minidl.functional.elementwise as elementwise
from minidl.backend import Device
from minidl.tensor import _topological_order


# ---------------------------------------------------------------- making tensors
def test_tensor_dtypes_follow_torch():
    for data in ([1.0, 2.0], [1, 2], [True, False], 3.5, 7, np.zeros(3), np.zeros(3, np.float32), np.arange(3)):
        assert minidl.tensor(data).dtype == np.dtype(str(torch.tensor(data).dtype).removeprefix("torch."))
    assert minidl.tensor([1, 2], dtype=minidl.float64).dtype == np.float64


def test_tensor_copies_its_data():
    a = np.zeros(3)
    t = minidl.tensor(a)
    a[0] = 5
    assert t.numpy()[0] == 0
    shared = minidl.from_numpy(a)
    a[1] = 7
    assert shared.numpy()[1] == 7


def test_factories_match_torch_shapes_and_values():
    assert minidl.zeros(2, 3).shape == (2, 3) and minidl.zeros((2, 3)).dtype == np.float32
    assert minidl.ones(4).numpy().sum() == 4
    assert minidl.full((2, 2), 1.5).numpy().tolist() == [[1.5, 1.5], [1.5, 1.5]]
    for args in [(5,), (2, 7), (1, 2, 0.25), (0.5, 2.5, 0.5)]:
        np.testing.assert_allclose(minidl.arange(*args).numpy(), torch.arange(*args).numpy())
        assert minidl.arange(*args).dtype == np.dtype(str(torch.arange(*args).dtype).removeprefix("torch."))
    x = minidl.randn(3, 4, requires_grad=True)
    assert x.requires_grad and x.is_leaf
    assert minidl.zeros_like(x).shape == (3, 4) and minidl.ones_like(x).numpy().all()
    assert minidl.randint(0, 5, (100,)).numpy().max() < 5


def test_manual_seed_reproduces_random_numbers():
    minidl.manual_seed(3)
    a = minidl.randn(5).numpy()
    minidl.manual_seed(3)
    np.testing.assert_array_equal(a, minidl.randn(5).numpy())
    assert not np.array_equal(a, minidl.randn(5).numpy())


def test_only_floating_tensors_require_grad():
    with pytest.raises(RuntimeError, match="floating-point"):
        minidl.tensor([1, 2], requires_grad=True)


def test_item_numpy_detach():
    x = minidl.tensor([[2.5]], requires_grad=True)
    assert x.item() == 2.5 and float(x) == 2.5
    with pytest.raises(RuntimeError, match="detach"):
        x.numpy()
    d = (x * 2).detach()
    assert not d.requires_grad and d.grad_fn is None and d.numpy()[0, 0] == 5
    with pytest.raises(ValueError, match="one element"):
        minidl.ones(2).item()


def test_repr_names_the_function_that_made_it():
    x = minidl.ones(2, requires_grad=True)
    assert "grad_fn=<MulBackward>" in repr(x * 2)
    assert "requires_grad=True" in repr(x)


def test_float32_stays_float32():
    x = minidl.randn(3, requires_grad=True)
    y = (x * 2.5 + 1) / 3 - x**2
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32
    assert x.double().dtype == np.float64 and x.double().long().dtype == np.int64


# ---------------------------------------------------------------- backward
def test_gradients_accumulate_over_backward_calls_like_torch():
    results = []
    for lib in (minidl, torch):
        x = lib.tensor([1.0, -2.0, 3.0], requires_grad=True)
        (x * x).sum().backward()
        (x * 3).sum().backward()
        results.append(x.grad.numpy())
    np.testing.assert_allclose(*results)


def test_a_tensor_used_many_times_gets_all_its_gradients():
    # x feeds four paths that meet again (a diamond): every path must add in
    check_op([(3,)], lambda lib, x: (x * x + x.exp() * x) / (x.sigmoid() + 2) + x)


def test_deep_graph_does_not_hit_recursion_limit():
    x = minidl.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(sys.getrecursionlimit() * 3):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** (sys.getrecursionlimit() * 3)], rtol=1e-4)


def test_backward_on_non_scalar_needs_a_gradient():
    y = minidl.ones(2, 3, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\).*pass backward\(gradient\)"):
        y.backward()
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        y.backward(np.ones((3, 2)))


def test_backward_with_a_gradient_matches_torch():
    g = np.arange(6.0).reshape(2, 3)
    grads = []
    for lib in (minidl, torch):
        x = lib.tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
        x.tanh().backward(lib.tensor(g))
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(*grads)


def test_backward_twice_needs_retain_graph():
    x = minidl.tensor([2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.item() == 8.0
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_backward_without_any_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (minidl.ones(1) * 2).backward()


def test_retain_grad_keeps_a_non_leaf_gradient():
    x = minidl.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), [6.0, 12.0])


def test_leaf_gradients_are_independent_arrays():
    a = minidl.ones(2, requires_grad=True)
    b = minidl.ones(2, requires_grad=True)
    (a + b).sum().backward()
    a.grad.data[0] = 100  # must not leak into b's gradient
    assert b.grad.numpy().tolist() == [1.0, 1.0]


def test_no_grad_records_nothing():
    x = minidl.ones(2, requires_grad=True)
    with minidl.no_grad():
        y = x * 2
        assert not minidl.is_grad_enabled()
    assert minidl.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None

    @minidl.no_grad()
    def double(t):
        return t * 2

    assert double(x).grad_fn is None
    with minidl.no_grad(), minidl.enable_grad():
        assert (x * 2).requires_grad


# ---------------------------------------------------------------- NaN: never hidden, found on request
def test_nan_in_forward_is_not_hidden():
    x = minidl.tensor([-1.0, 4.0], requires_grad=True)
    with np.errstate(invalid="ignore"):
        y = x.log().relu().sum()
    assert np.isnan(y.item())


def test_detect_anomaly_names_the_op():
    x = minidl.tensor([-1.0, 4.0], requires_grad=True)
    with minidl.detect_anomaly(), np.errstate(invalid="ignore", divide="ignore"):
        with pytest.raises(FloatingPointError, match="Log"):
            x.log()
        y = (x * 0).sqrt().sum()  # fine forward, infinite gradient at 0
        with pytest.raises(FloatingPointError, match="SqrtBackward"):
            y.backward()


# ---------------------------------------------------------------- errors that name what is wrong
def test_shape_mismatch_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"add: shapes \(3, 4\) and \(5,\)"):
        minidl.ones(3, 4) + minidl.ones(5)
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(5, 2\)"):
        minidl.ones(3, 4) @ minidl.ones(5, 2)
    with pytest.raises(ValueError, match=r"reshape: a tensor of shape \(2, 3\)"):
        minidl.ones(2, 3).reshape(4, 2)
    with pytest.raises(ValueError, match=r"cat: tensor 1 has shape \(2, 4\)"):
        minidl.cat([minidl.ones(2, 3), minidl.ones(2, 4)], 0)
    with pytest.raises(IndexError, match="dim 3 is out of range"):
        minidl.ones(2, 3).sum(3)


def test_cross_entropy_rejects_bad_targets():
    F = minidl.nn.functional
    logits = minidl.randn(2, 5, 3, 3)
    bad = np.zeros((2, 3, 3), np.int64)
    bad[0, 1, 1], bad[1, 2, 0] = 7, -3
    with pytest.raises(ValueError, match=r"outside \[0, 5\).*ignore_index=255.*\[-3, 7\]"):
        F.cross_entropy(logits, bad, ignore_index=255)
    bad[0, 1, 1], bad[1, 2, 0] = 255, 255
    F.cross_entropy(logits, bad, ignore_index=255)  # 255 is ignored, so this is fine
    with pytest.raises(ValueError, match=r"target of shape \(2, 3, 3\), got \(2, 3\)"):
        F.cross_entropy(logits, np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(logits, bad, reduction="avg")


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        minidl.ones(2).to("tpu")


def test_cuda_without_cupy_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    with pytest.raises(RuntimeError, match=r"needs CuPy, which is not installed: install CuPy .*cupy-cuda12x"):
        minidl.ones(2).to("cuda")


def test_cuda_without_a_gpu_says_so(monkeypatch):
    if sys.modules.get("cupy") is not standin_cupy:
        pytest.skip("needs the CuPy stand-in, which can pretend to have no GPU")
    monkeypatch.setattr(standin_cupy, "DEVICE_COUNT", 0)
    with pytest.raises(RuntimeError, match="CuPy finds no GPU on this machine"):
        minidl.ones(2).to("cuda")


class _PretendCuda(minidl.Tensor):
    """A CPU tensor that reports device 'cuda:0', to test the device check without a GPU."""

    @property
    def device(self):
        return Device("cuda:0")


def test_mixing_devices_names_both():
    with pytest.raises(RuntimeError, match=r"Mul: expected all tensors on the same device, got cpu and cuda:0"):
        minidl.ones(2) * _PretendCuda(np.ones(2))


# ---------------------------------------------------------------- the checks catch a broken backward
def test_a_broken_backward_fails_both_checks(monkeypatch):
    def wrong(ctx, g):  # forgets the factor of the other operand
        return g, g

    monkeypatch.setattr(elementwise.Mul, "backward", staticmethod(wrong))
    with pytest.raises(AssertionError, match="gradient of input 0 differs from torch"):
        check_op([(3, 4), (3, 4)], lambda lib, a, b: a * b, gradcheck=False)
    with pytest.raises(minidl.GradcheckError, match=r"input 0 \(shape \(3, 4\)\)"):
        minidl.gradcheck(lambda a, b: a * b, [minidl.randn(3, 4, requires_grad=True), minidl.randn(3, 4)])


def test_rng_state_round_trip_continues_the_same_numbers():
    minidl.randn(3)
    state = minidl.get_rng_state()
    expected = minidl.randn(4).numpy()
    minidl.randn(10)
    minidl.set_rng_state(state)
    np.testing.assert_array_equal(minidl.randn(4).numpy(), expected)


def _node_names(tensor):
    return [node.name for node in _topological_order(tensor.grad_fn)]


@pytest.mark.parametrize("retain_graph", [False, True])
def test_backward_lets_go_of_intermediate_values_unless_the_graph_is_retained(retain_graph):
    """As PyTorch frees saved tensors: after backward the graph keeps its shape and its leaves, not the activations
    (a loss kept for logging would otherwise hold every activation of the step)."""
    import gc
    import weakref

    x = minidl.tensor(np.arange(3.0), requires_grad=True)
    hidden = x * 2
    activation = weakref.ref(hidden.data)
    y = (hidden * hidden).sum()
    del hidden
    y.backward(retain_graph=retain_graph)
    gc.collect()
    assert (activation() is not None) == retain_graph
    assert _node_names(y) == ["SumBackward", "MulBackward", "MulBackward"]
    assert y.grad_fn.inputs[0].grad_fn.inputs[0].grad_fn.inputs[0] is x  # the leaf itself stays
    np.testing.assert_array_equal(x.grad.numpy(), 8 * np.arange(3.0))
