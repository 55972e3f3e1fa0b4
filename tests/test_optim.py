"""minidl.optim against torch.optim: the same parameters and gradients, step by step, must give
the same parameters (float64, 1e-10); and a run stopped, saved and resumed must give exactly
the parameters of an uninterrupted run."""
import pickle

import numpy as np
import pytest
import torch

import minidl
from minidl import nn, optim

SHAPES = [(3, 4), (4,), (2,)]


def make_params(lib):
    rng = np.random.default_rng(0)
    parameter = nn.Parameter if lib is minidl else torch.nn.Parameter
    return [parameter(lib.tensor(rng.standard_normal(s))) for s in SHAPES]


def values(p):
    return p.data.copy() if isinstance(p, minidl.Tensor) else p.detach().numpy().copy()


def set_grads(lib, params, step):
    """A gradient that depends on where the parameter is; the last parameter never gets one."""
    for p in params[:-1]:
        v = values(p)
        g = np.sin(3 * v) + 0.1 * step * v  # a CuPy array for parameters on the GPU
        p.grad = minidl.Tensor(g) if lib is minidl else torch.tensor(g)


def run(lib, params, opt, sched=None, steps=6, start=0):
    for k in range(start, start + steps):
        set_grads(lib, params, k)
        opt.step()
        if sched is not None:
            sched.step()
    return [values(p) for p in params]


OPTIMIZERS = {
    "sgd": lambda o, ps: o.SGD(ps, lr=0.1),
    "sgd-momentum": lambda o, ps: o.SGD(ps, lr=0.1, momentum=0.9),
    "sgd-dampening": lambda o, ps: o.SGD(ps, lr=0.1, momentum=0.8, dampening=0.3),
    "sgd-nesterov": lambda o, ps: o.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    "sgd-weight-decay": lambda o, ps: o.SGD(ps, lr=0.1, weight_decay=0.05),
    "sgd-deeplab": lambda o, ps: o.SGD(ps, lr=0.05, momentum=0.9, weight_decay=5e-4),
    "sgd-groups": lambda o, ps: o.SGD(
        [{"params": ps[:1]}, {"params": ps[1:], "lr": 0.01, "momentum": 0.5}], lr=0.1, momentum=0.9, nesterov=False
    ),
    "adam": lambda o, ps: o.Adam(ps, lr=0.05),
    "adam-weight-decay": lambda o, ps: o.Adam(ps, lr=0.05, betas=(0.8, 0.99), weight_decay=0.1),
    "adam-amsgrad": lambda o, ps: o.Adam(ps, lr=0.05, amsgrad=True),
    "adam-amsgrad-weight-decay": lambda o, ps: o.Adam(ps, lr=0.05, eps=1e-3, weight_decay=0.1, amsgrad=True),
    "adam-groups": lambda o, ps: o.Adam([{"params": ps[:2], "lr": 0.2}, {"params": ps[2:]}], lr=0.05),
}


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_optimizer_matches_torch(make):
    ours, theirs = make_params(minidl), make_params(torch)
    start = [values(p) for p in ours]
    result = run(minidl, ours, make(optim, ours))
    expected = run(torch, theirs, make(torch.optim, theirs))
    for r, e in zip(result, expected):
        np.testing.assert_allclose(r, e, atol=1e-10, rtol=0)
    np.testing.assert_array_equal(result[-1], start[-1])  # no gradient, no update
    assert not np.array_equal(result[0], start[0])


@pytest.mark.parametrize("name", ["sgd-deeplab", "adam-amsgrad-weight-decay"])
def test_a_parameter_whose_first_gradient_comes_later_matches_torch(name):
    """Its state starts later (Adam counts its own steps), so it cannot share a flat bucket with the rest
    until the states are alike: the buckets are rebuilt as the gradients come and go."""

    def late(lib, params, opt):
        for k in range(5):
            set_grads(lib, params, k)
            if k < 2:
                params[0].grad = None
            opt.step()
        return [values(p) for p in params]

    ours, theirs = make_params(minidl), make_params(torch)
    result = late(minidl, ours, OPTIMIZERS[name](optim, ours))
    expected = late(torch, theirs, OPTIMIZERS[name](torch.optim, theirs))
    for r, e in zip(result, expected):
        np.testing.assert_allclose(r, e, atol=1e-10, rtol=0)


def test_parameters_trading_gradients_between_steps_match_torch():
    """The same number of parameters with gradients each step, but not the same ones: the buckets follow."""

    def trading(lib, params, opt):
        for k in range(4):
            set_grads(lib, params, k)
            params[k % 2].grad = None
            opt.step()
        return [values(p) for p in params]

    ours, theirs = make_params(minidl), make_params(torch)
    result = trading(minidl, ours, OPTIMIZERS["adam"](optim, ours))
    expected = trading(torch, theirs, OPTIMIZERS["adam"](torch.optim, theirs))
    for r, e in zip(result, expected):
        np.testing.assert_allclose(r, e, atol=1e-10, rtol=0)


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_state_dict_layout_and_values_match_torch(make):
    ours, theirs = make_params(minidl), make_params(torch)
    opt, t_opt = make(optim, ours), make(torch.optim, theirs)
    run(minidl, ours, opt, steps=3)
    run(torch, theirs, t_opt, steps=3)
    state, t_state = opt.state_dict(), t_opt.state_dict()
    assert [g["params"] for g in state["param_groups"]] == [g["params"] for g in t_state["param_groups"]]
    assert [g["lr"] for g in state["param_groups"]] == [g["lr"] for g in t_state["param_groups"]]
    assert list(state["state"]) == list(t_state["state"])
    for i, s in state["state"].items():
        assert sorted(s) == sorted(t_state["state"][i])
        for name, value in s.items():
            np.testing.assert_allclose(value, t_state["state"][i][name].numpy(), atol=1e-10, rtol=0, err_msg=name)


def test_step_never_writes_into_gradients():
    params = make_params(minidl)
    opt = optim.Adam(params, weight_decay=0.1)
    sgd = optim.SGD(params, lr=0.1, momentum=0.9)
    set_grads(minidl, params, 0)
    grads = [p.grad.data for p in params[:-1]]
    copies = [g.copy() for g in grads]
    for _ in range(2):
        opt.step()
        sgd.step()
    for p, g, c in zip(params, grads, copies):
        assert p.grad.data is g
        np.testing.assert_array_equal(g, c)


# ---------------------------------------------------------------- schedules
SCHEDULES = {
    "poly": (
        lambda s, o: s.PolyLR(o, max_iters=5, power=0.9),
        lambda s, o: s.PolynomialLR(o, total_iters=5, power=0.9),
    ),
    "poly-linear": (
        lambda s, o: s.PolyLR(o, max_iters=4, power=1.0),
        lambda s, o: s.PolynomialLR(o, total_iters=4, power=1.0),
    ),
    "lambda": (lambda s, o: s.LambdaLR(o, lambda k: 0.8**k), lambda s, o: s.LambdaLR(o, lambda k: 0.8**k)),
    "lambda-per-group": (
        lambda s, o: s.LambdaLR(o, [lambda k: 1 / (k + 1), lambda k: 0.5 + k]),
        lambda s, o: s.LambdaLR(o, [lambda k: 1 / (k + 1), lambda k: 0.5 + k]),
    ),
}


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_schedule_matches_torch(schedule):
    make_ours, make_theirs = schedule
    ours, theirs = make_params(minidl), make_params(torch)
    opt, t_opt = OPTIMIZERS["sgd-groups"](optim, ours), OPTIMIZERS["sgd-groups"](torch.optim, theirs)
    sched, t_sched = make_ours(optim.lr_scheduler, opt), make_theirs(torch.optim.lr_scheduler, t_opt)
    for k in range(7):  # past max_iters, where the rate stays at 0
        np.testing.assert_allclose(sched.get_last_lr(), t_sched.get_last_lr(), atol=1e-15, rtol=1e-12)
        for r, e in zip(run(minidl, ours, opt, sched, 1, k), run(torch, theirs, t_opt, t_sched, 1, k)):
            np.testing.assert_allclose(r, e, atol=1e-10, rtol=0)


def test_poly_formula_and_min_lr_by_hand():
    opt = optim.SGD(make_params(minidl), lr=0.1)
    sched = optim.PolyLR(opt, max_iters=4, power=2, min_lr=0.01)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(5):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    # 0.1 * (1 - it/4)**2, floored at 0.01
    np.testing.assert_allclose(lrs, [0.1, 0.05625, 0.025, 0.01, 0.01, 0.01], rtol=1e-14)


def test_lambda_lr_needs_one_function_per_group():
    opt = OPTIMIZERS["sgd-groups"](optim, make_params(minidl))
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas"):
        optim.LambdaLR(opt, [lambda k: 1.0])


# ---------------------------------------------------------------- stopping and resuming
def make_model(seed):
    minidl.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()


def train(model, opt, sched, start, stop):
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((4, 3)), rng.standard_normal((4, 2))) for _ in range(stop)]
    for x, y in batches[start:stop]:
        opt.zero_grad()
        loss = ((model(minidl.tensor(x)) - minidl.tensor(y)) ** 2).mean()
        loss.backward()
        opt.step()
        sched.step()


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_resume_gives_exactly_the_uninterrupted_run(make):
    def fresh(seed):
        model = make_model(seed)
        params = list(model.parameters())
        opt = make(optim, params)
        return model, opt, optim.PolyLR(opt, max_iters=8, power=0.9)

    model, opt, sched = fresh(0)
    train(model, opt, sched, 0, 3)
    checkpoint = pickle.dumps(
        {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    )
    train(model, opt, sched, 3, 4)  # training on after saving must not change the checkpoint
    resumed, opt2, sched2 = fresh(1)
    saved = pickle.loads(checkpoint)
    resumed.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["optimizer"])
    sched2.load_state_dict(saved["scheduler"])
    train(resumed, opt2, sched2, 3, 6)

    model_ref, opt_ref, sched_ref = fresh(0)
    train(model_ref, opt_ref, sched_ref, 0, 6)
    for (name, a), b in zip(resumed.state_dict().items(), model_ref.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert sched2.get_last_lr() == sched_ref.get_last_lr()
    assert opt2.param_groups[0]["lr"] == opt_ref.param_groups[0]["lr"]


# ---------------------------------------------------------------- the rest of the API
def test_zero_grad_and_closure():
    params = make_params(minidl)
    opt = optim.SGD(params, lr=0.1)
    set_grads(minidl, params, 0)
    opt.zero_grad(set_to_none=False)
    assert all((p.grad.data == 0).all() for p in params[:-1])
    opt.zero_grad()
    assert all(p.grad is None for p in params)

    def closure():
        opt.zero_grad()
        loss = (params[0] ** 2).sum()
        loss.backward()
        return loss

    before = values(params[0])
    loss = opt.step(closure)
    np.testing.assert_allclose(loss.item(), (before**2).sum())
    np.testing.assert_allclose(values(params[0]), before - 0.1 * 2 * before)


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda ps: optim.SGD([], lr=0.1), "empty parameter list"),
        (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "Nesterov momentum requires"),
        (lambda ps: optim.SGD(ps, lr=-1), "Invalid lr"),
        (lambda ps: optim.Adam(ps, betas=(0.9, 1.0)), "Invalid betas"),
        (lambda ps: optim.SGD([{"params": ps}, {"params": ps[:1]}], lr=0.1), "more than one parameter group"),
        (lambda ps: optim.SGD([ps[0] * 2], lr=0.1), "non-leaf"),
        (lambda ps: optim.PolyLR(optim.SGD(ps), max_iters=0), "max_iters"),
    ],
)
def test_bad_settings_are_refused(build, words):
    params = make_params(minidl)
    with pytest.raises(ValueError, match=words):
        build(params)


def test_load_state_dict_checks_the_groups():
    params = make_params(minidl)
    saved = OPTIMIZERS["sgd-groups"](optim, params).state_dict()
    with pytest.raises(ValueError, match="parameter groups"):
        optim.SGD(params, lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="in group 0"):
        optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1).load_state_dict(saved)


@pytest.mark.parametrize("make", [OPTIMIZERS["sgd-deeplab"], OPTIMIZERS["adam-amsgrad-weight-decay"]])
def test_cuda_matches_torch_and_resumes(make):
    ours, theirs = make_params(minidl), make_params(torch)
    for p in ours:
        p.data = minidl.backend.to_device(p.data, "cuda")
    opt = make(optim, ours)
    result = [minidl.backend.to_numpy(r) for r in run(minidl, ours, opt, steps=3)]
    expected = run(torch, theirs, make(torch.optim, theirs), steps=3)
    for r, e in zip(result, expected):
        np.testing.assert_allclose(r, e, atol=1e-10, rtol=0)
    restored = make(optim, ours)
    restored.load_state_dict(opt.state_dict())
    assert all(minidl.backend.is_cupy_array(v) for s in restored.state.values() for v in s.values() if not np.isscalar(v))
