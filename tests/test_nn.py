"""minidl.nn against torch.nn: the same model code in both frameworks gets the same names,
shapes, outputs and gradients; plus the Module machinery, containers, layers and init."""
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from helpers import Const, check_op

import minidl
from minidl import nn
from minidl.nn import init


def make_net(lib):
    """One model definition for both frameworks (minidl mirrors torch.nn's names)."""

    class Net(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = lib.nn.Sequential(
                lib.nn.Linear(4, 8), lib.nn.Tanh(), lib.nn.Dropout(0.5), lib.nn.Linear(8, 8, bias=False), lib.nn.ReLU()
            )
            self.heads = lib.nn.ModuleDict({"seg": lib.nn.Linear(8, 3), "aux": lib.nn.Linear(8, 2)})
            self.extra = lib.nn.ModuleList([lib.nn.Identity(), lib.nn.Flatten()])
            self.scale = lib.nn.Parameter(lib.ones(1))
            self.register_buffer("count", lib.zeros(2))
            self.register_buffer("cache", lib.zeros(3), persistent=False)

        def forward(self, x):
            h = self.extra[1](self.extra[0](self.body(x))) * self.scale
            return self.heads["seg"](h), self.heads["aux"](h)

    return Net()


def torch_weights(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.fixture
def nets():
    """The same network in minidl and torch, float64, minidl loaded with torch's weights."""
    torch.manual_seed(0)
    ours, theirs = make_net(minidl).double(), make_net(torch).double()
    ours.load_state_dict(torch_weights(theirs))
    return ours, theirs


# ---------------------------------------------------------------- parity with torch.nn
def test_same_state_dict_keys_and_shapes():
    ours, theirs = make_net(minidl), make_net(torch)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in theirs.state_dict().items()
    ]
    assert all(isinstance(v, np.ndarray) for v in ours.state_dict().values())


@pytest.mark.parametrize(
    "listing",
    [
        lambda m: [n for n, _ in m.named_parameters()],
        lambda m: [n for n, _ in m.named_buffers()],
        lambda m: [n for n, _ in m.named_modules()],
        lambda m: [n for n, _ in m.named_children()],
        lambda m: [n for n, _ in m.body.named_parameters(prefix="body")],
        lambda m: [n for n, _ in m.named_parameters(recurse=False)],
        lambda m: [type(c).__name__ for c in m.modules()],
        lambda m: [tuple(p.shape) for p in m.parameters()],
    ],
)
def test_walks_the_tree_in_torch_order(listing):
    assert listing(make_net(minidl)) == listing(make_net(torch))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_forward_and_parameter_gradients_match_torch(nets, mode):
    ours, theirs = nets
    if mode == "eval":  # in train mode Dropout draws different masks, so drop it by p=0
        ours.eval()
        theirs.eval()
    else:
        ours.body[2].p = theirs.body[2].p = 0.0
    x = np.random.default_rng(1).standard_normal((5, 4))
    w = [np.random.default_rng(2).standard_normal((5, n)) for n in (3, 2)]
    out, t_out = ours(minidl.tensor(x)), theirs(torch.tensor(x))
    for o, t in zip(out, t_out):
        np.testing.assert_allclose(o.data, t.detach().numpy(), rtol=1e-12, atol=1e-12)
    sum((o * minidl.tensor(wi)).sum() for o, wi in zip(out, w)).backward()
    sum((t * torch.tensor(wi)).sum() for t, wi in zip(t_out, w)).backward()
    t_grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.data, t_grads[name].grad.numpy(), rtol=1e-12, atol=1e-12, err_msg=name)


def test_repr_matches_torch():
    def build(lib):
        n = lib.nn
        return n.Sequential(
            n.Linear(4, 8), n.ReLU(), n.Dropout(0.25), n.Flatten(), n.Sequential(n.Linear(8, 2, bias=False), n.LogSoftmax(1))
        )

    assert repr(build(minidl)) == repr(build(torch))
    assert repr(make_net(minidl)).startswith("Net(\n  (body): Sequential(\n    (0): Linear(in_features=4,")
    assert repr(nn.Parameter(minidl.zeros(2))).startswith("Parameter containing:\ntensor(")


def test_apply_visits_children_before_parents_as_torch():
    def order(m):
        seen = []
        m.apply(lambda mod: seen.append(type(mod).__name__))
        return seen

    assert order(make_net(minidl)) == order(make_net(torch))


def test_shared_parameters_listed_once_but_saved_under_both_names():
    def tied(lib):
        m = lib.nn.Sequential(lib.nn.Linear(3, 3), lib.nn.Linear(3, 3))
        m[1].weight = m[0].weight
        return m

    ours, theirs = tied(minidl), tied(torch)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())


# ---------------------------------------------------------------- load_state_dict
def test_load_accepts_numpy_torch_and_minidl_values(nets):
    ours, theirs = nets
    weight = ours.heads.seg.weight
    for value in (np.full((3, 8), 2.0), torch.full((3, 8), 3.0), minidl.full((3, 8), 4.0)):
        state = ours.state_dict()
        state["heads.seg.weight"] = value
        assert ours.load_state_dict(state) == ([], [])
        assert ours.heads.seg.weight is weight and weight.dtype == np.float64
        np.testing.assert_array_equal(weight.data, np.asarray(value.tolist()))


def test_load_into_float32_keeps_the_parameter_dtype():
    model = nn.Linear(2, 2)
    model.load_state_dict({"weight": np.ones((2, 2)), "bias": [1, 2]})
    assert model.weight.dtype == np.float32 and model.bias.dtype == np.float32
    np.testing.assert_array_equal(model.bias.data, [1, 2])


def test_load_error_lists_every_bad_key_and_loads_nothing(nets):
    ours, theirs = nets
    state = torch_weights(theirs)
    del state["body.0.bias"], state["heads.aux.weight"]
    state["body.9.weight"] = np.zeros(3)
    state["stray"] = np.zeros(1)
    state["heads.seg.bias"] = np.zeros(7)
    state["body.3.weight"] = np.zeros((8, 9))
    before = {k: v.copy() for k, v in ours.state_dict().items()}
    with pytest.raises(RuntimeError) as err:
        ours.load_state_dict(state)
    message = str(err.value)
    for name in ["body.0.bias", "heads.aux.weight", "body.9.weight", "stray", "heads.seg.bias", "body.3.weight"]:
        assert name in message
    assert "(7,)" in message and "(3,)" in message  # both shapes of a mis-shaped key
    assert "(8, 9)" in message and "(8, 8)" in message
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_non_strict_reports_keys_as_torch(nets):
    ours, theirs = nets
    state = torch_weights(theirs)
    del state["scale"], state["count"]
    state["unknown.weight"] = np.zeros(2)
    result = ours.load_state_dict(state, strict=False)
    expected = theirs.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, strict=False)
    assert result.missing_keys == expected.missing_keys == ["scale", "count"]
    assert result.unexpected_keys == expected.unexpected_keys
    assert repr(ours.load_state_dict(torch_weights(theirs))) == "<All keys matched successfully>"
    state["body.0.weight"] = np.zeros((1, 1))
    with pytest.raises(RuntimeError, match=r"size mismatch for body\.0\.weight"):
        ours.load_state_dict(state, strict=False)


def test_state_dict_is_a_snapshot():
    model = nn.Linear(2, 2)
    saved = model.state_dict()
    model.weight.data += 1
    assert not np.array_equal(saved["weight"], model.weight.data)


# ---------------------------------------------------------------- registration
class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(minidl.ones(2))
        self.register_buffer("b", minidl.zeros(2))
        self.child = nn.Linear(2, 2)


def test_assignment_registers_and_deletion_unregisters():
    m = Plain()
    m.not_a_param = minidl.ones(2)  # a plain Tensor stays a plain attribute, as in PyTorch
    assert [n for n, _ in m.named_parameters()] == ["w", "child.weight", "child.bias"]
    assert [n for n, _ in m.named_buffers()] == ["b"]
    assert m.w is m._parameters["w"] and m.child is m._modules["child"]
    del m.w, m.b
    assert "w" not in dict(m.named_parameters()) and "b" not in m.state_dict()
    with pytest.raises(AttributeError, match="has no attribute 'w'"):
        m.w
    m.child = None
    assert list(m.children()) == [] and "child.weight" not in m.state_dict()


@pytest.mark.parametrize(
    "assign, error, words",
    [
        (lambda m: setattr(m, "w", minidl.ones(2)), TypeError, "as parameter 'w'"),
        (lambda m: setattr(m, "w", np.ones(2)), TypeError, "as parameter 'w'"),
        (lambda m: setattr(m, "child", 3), TypeError, "as child module 'child'"),
        (lambda m: setattr(m, "b", [1.0]), TypeError, "as buffer 'b'"),
        (lambda m: m.register_buffer("x.y", minidl.ones(1)), KeyError, "contain"),
        (lambda m: m.register_buffer("w", minidl.ones(1)), KeyError, "attribute 'w' already exists"),
        (lambda m: m.register_buffer("z", np.ones(1)), TypeError, "buffer 'z'"),
        (lambda m: m.register_parameter("z", minidl.ones(1)), TypeError, "parameter 'z'"),
        (lambda m: m.add_module("z", "not a module"), TypeError, "not a Module subclass"),
        (lambda m: m.add_module("", nn.ReLU()), KeyError, "empty"),
    ],
)
def test_bad_assignments_are_refused_clearly(assign, error, words):
    with pytest.raises(error, match=words):
        assign(Plain())


def test_assigning_before_init_says_what_to_do():
    class Forgot(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(minidl.ones(1))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Forgot()


def test_train_eval_reach_every_submodule():
    m = make_net(minidl)
    assert m.eval() is m
    assert not any(mod.training for mod in m.modules())
    m.train()
    assert all(mod.training for mod in m.modules())
    with pytest.raises(ValueError):
        m.train("no")


def test_zero_grad_and_requires_grad():
    m = Plain()
    m.w.sum().backward()
    old = m.w.grad.data
    m.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(m.w.grad.data, [0, 0])
    np.testing.assert_array_equal(old, [1, 1])  # the old gradient array was not written into
    m.zero_grad()
    assert m.w.grad is None and m.child.weight.grad is None
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())


def test_to_float64_converts_in_place():
    m = Plain()
    m.register_buffer("steps", minidl.zeros(1, dtype=minidl.int64))
    params = list(m.parameters())
    m.w.sum().backward()
    assert m.to(minidl.float64) is m
    assert all(a is b for a, b in zip(m.parameters(), params))  # the same Parameter objects
    assert all(p.dtype == np.float64 for p in m.parameters()) and m.b.dtype == np.float64
    assert m.w.grad.dtype == np.float64 and m.steps.dtype == np.int64  # integers keep their dtype, as in torch
    assert m.float().w.dtype == np.float32 and m.double().w.dtype == np.float64
    assert m.cpu().w.device == "cpu"
    with pytest.raises(TypeError, match="floating point"):
        m.to(minidl.int64)


def test_forward_missing_and_linear_input_checked():
    with pytest.raises(NotImplementedError, match="forward"):
        nn.ModuleList([nn.ReLU()])(minidl.ones(1))
    with pytest.raises(ValueError, match="last dimension is 4, got shape \\(2, 3\\)"):
        nn.Linear(4, 2)(minidl.ones(2, 3))


# ---------------------------------------------------------------- containers
def test_sequential():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b)
    assert len(seq) == 2 and seq[0] is a and seq[-1] is b and list(seq) == [a, b]
    seq.append(c)
    assert seq[2] is c and [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    x = minidl.randn(4, 2)
    np.testing.assert_array_equal(seq(x).data, c(b(a(x))).data)
    named = nn.Sequential(OrderedDict([("conv", a), ("act", b)]))
    assert named.conv is a and named[1] is b and list(named.state_dict()) == ["conv.weight", "conv.bias"]
    tail = nn.Sequential(a, b, c)[1:]
    assert isinstance(tail, nn.Sequential) and [n for n, _ in tail.named_children()] == ["1", "2"]
    with pytest.raises(IndexError, match="out of range"):
        seq[3]


def test_module_list():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(2)])
    layers.append(nn.ReLU()).extend([nn.Tanh()])
    layers.insert(1, nn.Sigmoid())
    assert [type(m).__name__ for m in layers] == ["Linear", "Sigmoid", "Linear", "ReLU", "Tanh"]
    assert [n for n, _ in layers.named_children()] == ["0", "1", "2", "3", "4"]
    assert len(layers) == 5 and isinstance(layers[1:3], nn.ModuleList) and len(layers[1:3]) == 2
    assert [n for n, _ in layers[2:].named_children()] == ["0", "1", "2"]  # renumbered, as in torch
    layers[0] = nn.Identity()
    assert isinstance(layers[0], nn.Identity) and len(list(layers.parameters())) == 2


def test_module_dict():
    d = nn.ModuleDict({"a": nn.Linear(1, 1)})
    d["b"] = nn.ReLU()
    d.update([("c", nn.Tanh())])
    assert list(d) == ["a", "b", "c"] and list(d.keys()) == ["a", "b", "c"] and "b" in d and len(d) == 3
    assert isinstance(d.pop("b"), nn.ReLU) and "b" not in d
    del d["c"]
    assert [k for k, _ in d.items()] == ["a"] and list(d.state_dict()) == ["a.weight", "a.bias"]


# ---------------------------------------------------------------- layers
@pytest.mark.parametrize(
    "make",
    [
        lambda nn: nn.ReLU(),
        lambda nn: nn.Sigmoid(),
        lambda nn: nn.Tanh(),
        lambda nn: nn.Identity(54, unused=1),
        lambda nn: nn.Flatten(),
        lambda nn: nn.Flatten(0, 1),
        lambda nn: nn.Softmax(dim=1),
        lambda nn: nn.LogSoftmax(dim=-1),
    ],
)
def test_layers_match_torch(make, device):
    check_op([(2, 3, 4)], lambda lib, x: make(lib.nn)(x), device=device)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_loss_matches_torch(reduction, device):
    target = Const([[0, 2, 1], [1, 1, 2]])
    check_op(
        [(2, 3, 3), target],
        lambda lib, x, t: lib.nn.CrossEntropyLoss(
            lib.tensor([0.5, 2.0, 1.0], dtype=lib.float64), ignore_index=1, reduction=reduction
        ).to(x.device)(x, t), device=device)


def test_cross_entropy_weight_is_a_buffer_like_torch():
    assert list(nn.CrossEntropyLoss(minidl.ones(3)).state_dict()) == list(
        torch.nn.CrossEntropyLoss(torch.ones(3)).state_dict()
    )


def test_dropout_train_and_eval():
    drop = nn.Dropout(p=0.25)
    x = minidl.ones(200, 100)
    y = drop(x).data
    assert abs((y == 0).mean() - 0.25) < 0.02
    np.testing.assert_allclose(y[y != 0], 1 / 0.75, rtol=1e-6)  # survivors scaled by 1/(1-p)
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_linear_default_init_bounds():
    layer = nn.Linear(50, 400)
    bound = 1 / math.sqrt(50)  # torch: kaiming_uniform_(a=sqrt(5)) and uniform(±1/sqrt(fan_in))
    for p in (layer.weight, layer.bias):
        assert p.dtype == np.float32 and np.abs(p.data).max() <= bound
        assert np.abs(p.data).max() > 0.9 * bound
    assert layer.weight.shape == (400, 50) and layer.bias.shape == (400,)
    np.testing.assert_allclose(layer.weight.data.std(), bound / math.sqrt(3), rtol=0.02)
    assert nn.Linear(3, 2, bias=False).bias is None


def test_init_is_seeded():
    minidl.manual_seed(5)
    a = nn.Linear(3, 3).weight.data.copy()
    minidl.manual_seed(5)
    np.testing.assert_array_equal(nn.Linear(3, 3).weight.data, a)


# ---------------------------------------------------------------- init
CONV_SHAPE = (64, 32, 3, 3)  # (out, in/groups, kh, kw): fan_in = 32*9, fan_out = 64*9


@pytest.mark.parametrize("shape", [(7, 5), CONV_SHAPE, (6, 1, 3, 3), (4, 3, 2)])
def test_fans_match_torch(shape):
    expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert init._calculate_fan_in_and_fan_out(minidl.empty(*shape)) == expected


@pytest.mark.parametrize(
    "nonlinearity, param",
    [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None), ("leaky_relu", None),
     ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("selu", None)],
)
def test_calculate_gain_matches_torch(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == torch.nn.init.calculate_gain(nonlinearity, param)


def _gain_std(a, mode, nonlinearity):
    fan_in, fan_out = 32 * 9, 64 * 9
    gain = torch.nn.init.calculate_gain(nonlinearity, a)
    return gain / math.sqrt(fan_in if mode == "fan_in" else fan_out)


@pytest.mark.parametrize("a, mode, nonlinearity", [(0, "fan_in", "relu"), (math.sqrt(5), "fan_in", "leaky_relu"),
                                                   (0, "fan_out", "relu"), (0.1, "fan_out", "leaky_relu")])
def test_kaiming(a, mode, nonlinearity):
    std = _gain_std(a, mode, nonlinearity)
    w = init.kaiming_uniform_(minidl.empty(*CONV_SHAPE), a=a, mode=mode, nonlinearity=nonlinearity).data
    bound = math.sqrt(3) * std
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    np.testing.assert_allclose(w.std(), std, rtol=0.02)
    w = init.kaiming_normal_(minidl.empty(*CONV_SHAPE), a=a, mode=mode, nonlinearity=nonlinearity).data
    np.testing.assert_allclose(w.std(), std, rtol=0.02)
    assert abs(w.mean()) < 0.02 * std


@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_xavier(gain):
    std = gain * math.sqrt(2 / (32 * 9 + 64 * 9))
    w = init.xavier_uniform_(minidl.empty(*CONV_SHAPE), gain=gain).data
    assert np.abs(w).max() <= math.sqrt(3) * std
    np.testing.assert_allclose(w.std(), std, rtol=0.02)
    np.testing.assert_allclose(init.xavier_normal_(minidl.empty(*CONV_SHAPE), gain=gain).data.std(), std, rtol=0.02)


def test_simple_fills():
    t = minidl.empty(100, 100, dtype=minidl.float64)
    w = init.uniform_(t, -2.0, 3.0).data
    assert w is t.data and w.min() >= -2 and w.max() < 3
    np.testing.assert_allclose([w.mean(), w.std()], [0.5, 5 / math.sqrt(12)], rtol=0.02)
    w = init.normal_(t, 1.0, 0.5).data
    np.testing.assert_allclose([w.mean(), w.std()], [1.0, 0.5], rtol=0.02)
    assert (init.constant_(t, 0.3).data == 0.3).all()
    assert (init.zeros_(t).data == 0).all() and (init.ones_(t).data == 1).all()


def test_init_errors():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.kaiming_uniform_(minidl.empty(3))
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("softplus")
    with pytest.raises(ValueError, match="fan_avg"):
        init.kaiming_normal_(minidl.empty(2, 2), mode="fan_avg")


# ---------------------------------------------------------------- GPU (CuPy), where there is one
def test_cuda_round_trip(nets):
    ours, theirs = nets
    weight = ours.body[0].weight
    ours.cuda()
    assert ours.body[0].weight is weight and weight.device == "cuda" and ours.count.device == "cuda"
    assert isinstance(ours.state_dict()["body.0.weight"], np.ndarray)
    ours.load_state_dict(torch_weights(theirs))
    x = np.random.default_rng(1).standard_normal((5, 4))
    out = ours.eval()(minidl.tensor(x, device="cuda"))[0]
    np.testing.assert_allclose(out.cpu().data, theirs.eval()(torch.tensor(x))[0].detach().numpy(), rtol=1e-10)
    assert ours.cpu().body[0].weight.device == "cpu"
