"""Optimizers (SGD, Adam) and learning-rate schedules (PolyLR, LambdaLR), with PyTorch's update rules.

An optimizer holds ``param_groups`` (lists of parameters with their own lr,
momentum, ...) and a ``state`` per parameter (momentum buffer, Adam's moments).
``step()`` reads each parameter's ``.grad`` and updates ``p.data`` in place; it
never writes into a gradient's array, which backward may share. Everything is
array code on ``xp = get_array_module(...)``, so it runs on NumPy and CuPy alike.

``state_dict()`` holds NumPy copies of the state, so training can be stopped,
saved and resumed to give exactly the parameters of an uninterrupted run.
The schedulers are here too; ``minidl.optim.lr_scheduler.PolyLR`` also works,
matching PyTorch's ``torch.optim.lr_scheduler``.
"""
import math
import sys
from collections import defaultdict

import numpy as np

from minidl import backend
from minidl.backend import fused, get_array_module
from minidl.nn.module import _zero_grad
from minidl.tensor import Tensor, enable_grad


class Optimizer:
    """Base class: subclasses set ``defaults`` and define ``_update(p, grad, state, group)``."""

    def __init__(self, params, defaults):
        self.defaults = defaults
        self.state = defaultdict(dict)  # parameter -> its state (keyed by identity)
        self._flat = {}  # id(param group) -> its buckets (see _Bucket)
        self.param_groups = []
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        for group in groups if isinstance(groups[0], dict) else [{"params": groups}]:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        """Add a group of parameters with its own options (the rest come from the defaults)."""
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append({**self.defaults, **param_group, "params": params})

    def zero_grad(self, set_to_none=True):
        _zero_grad((p for group in self.param_groups for p in group["params"]), set_to_none)

    def step(self, closure=None):
        """Update every parameter that has a gradient; ``closure`` recomputes and returns the loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            ready = [p for p in group["params"] if p.grad is not None]
            for bucket in self._buckets(group, ready):
                with backend.on_device_of(bucket.flat):
                    bucket.step(self, group)
        return loss

    def _buckets(self, group, ready):
        """The group's parameters that have gradients, as flat buckets (see _Bucket).

        A bucket holds the parameters of one device and dtype whose states are alike (all new, or all
        at the same step). It lives as long as its parameters keep the arrays it gave them and all of
        them have gradients; otherwise (a model moved to another device, a parameter without a
        gradient this step, a loaded state) the buckets are made again from the parameters as they are.
        """
        kept = self._flat.get(id(group), [])
        if {id(p) for b in kept for p in b.params} == {id(p) for p in ready} and all(b.holds() for b in kept):
            return kept
        alike = defaultdict(list)
        for p in ready:
            scalars = tuple(sorted((k, v) for k, v in self.state[p].items() if np.isscalar(v)))
            alike[(str(p.device), p.dtype, tuple(sorted(self.state[p])), scalars)].append(p)
        self._flat[id(group)] = [_Bucket(params, self.state) for params in alike.values()]
        return self._flat[id(group)]

    def _update(self, p, grad, state, group):
        raise NotImplementedError

    # ------------------------------------------------------------ saving and resuming
    def _all_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """{'state': {index: {name: value}}, 'param_groups': [...]}, parameters named by position as in PyTorch."""
        index = {id(p): i for i, p in enumerate(self._all_params())}
        groups = [{**group, "params": [index[id(p)] for p in group["params"]]} for group in self.param_groups]
        state = {
            index[id(p)]: {k: v if np.isscalar(v) else backend.to_numpy(v).copy() for k, v in s.items()}
            for p, s in self.state.items()
            if s  # plain SGD keeps no state, and lists none
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore options and state saved by ``state_dict()``; arrays go to each parameter's device and dtype."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, the optimizer {len(self.param_groups)}"
            )
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError(
                    f"loaded state dict has {len(saved['params'])} parameters in group {i}, "
                    f"the optimizer's group has {len(group['params'])}"
                )
        params = self._all_params()
        self.state, self._flat = defaultdict(dict), {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            self.state[p] = {k: _restored(k, v, p) for k, v in s.items()}
        self.param_groups = [{**saved, "params": group["params"]} for group, saved in zip(self.param_groups, saved_groups)]


class _Bucket:
    """Parameters of one group, device and dtype, kept as views into one flat array, stepped all at once.

    The update rule (``_update``) then runs once over the flat parameter, gradient and state arrays
    instead of once per parameter: on a GPU a dozen kernel launches for the whole model rather than a
    dozen per parameter. Every element goes through the same arithmetic, so the result is the same to
    the last bit. Each parameter's ``.data`` and its arrays in ``optimizer.state`` are views into the
    flat arrays, and the update rules change state arrays in place, so the views stay current.
    """

    def __init__(self, params, state):
        xp = get_array_module(params[0].data)
        self.params, self.state = params, state
        self.ends = np.cumsum([p.data.size for p in params]).tolist()
        with backend.on_device_of(params[0].data):
            self.flat = xp.concatenate([p.data.reshape(-1) for p in params])
            self.views = self._split(self.flat)
            for p, view in zip(params, self.views):
                p.data = view
            self.flat_state = self._joined_state(xp)

    def _split(self, flat):
        starts = [0] + self.ends[:-1]
        return [flat[a:b].reshape(p.shape) for p, a, b in zip(self.params, starts, self.ends)]

    def _joined_state(self, xp):
        """The parameters' states (alike: see Optimizer._buckets) joined into flat arrays."""
        states = [self.state[p] for p in self.params]
        joined = {k: v if np.isscalar(v) else xp.concatenate([s[k].reshape(-1) for s in states])
                  for k, v in states[0].items()}
        self._share(joined)
        return joined

    def _share(self, joined):
        """Point each parameter's state at its slices of the flat state arrays."""
        arrays = {k: self._split(v) for k, v in joined.items() if not np.isscalar(v)}
        for i, p in enumerate(self.params):
            self.state[p] = {k: arrays[k][i] if k in arrays else v for k, v in joined.items()}

    def _state_arrays(self):
        return {k: id(v) for k, v in self.flat_state.items() if not np.isscalar(v)}

    def holds(self):
        return all(p.data is view for p, view in zip(self.params, self.views))

    def step(self, optimizer, group):
        grad = get_array_module(self.flat).concatenate([p.grad.data.reshape(-1) for p in self.params])
        arrays_before = self._state_arrays()
        optimizer._update(Tensor(self.flat), grad, self.flat_state, group)
        if self._state_arrays() != arrays_before:
            self._share(self.flat_state)  # the first step made the state arrays
        else:
            for p in self.params:  # the scalars (Adam's step count) change every step
                self.state[p].update((k, v) for k, v in self.flat_state.items() if np.isscalar(v))


def _restored(name, value, p):
    if np.isscalar(value):
        return value
    array = backend.to_numpy(value)
    if array.shape != p.shape:
        raise ValueError(f"optimizer state '{name}' has shape {array.shape}, but its parameter has shape {p.shape}")
    return backend.to_device(array.astype(p.dtype), p.device)  # astype copies: not shared with the dict


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay.

    As in PyTorch: g += wd*p; buf = g on the first step, then momentum*buf + (1-dampening)*g;
    the step is g + momentum*buf with Nesterov, buf without; p -= lr*step.
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"Invalid lr={lr}, momentum={momentum} or weight_decay={weight_decay}: must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def _update(self, p, grad, state, group):
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * p.data
        momentum = group["momentum"]
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:  # in place: each parameter's state is a view into its bucket's (see _Bucket)
                buf *= momentum
                buf += (1 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        p.data -= group["lr"] * grad


class Adam(Optimizer):
    """Adam (with L2 weight decay added to the gradient, and optionally AMSGrad), as in PyTorch.

    m = beta1*m + (1-beta1)*g, v = beta2*v + (1-beta2)*g*g, both bias-corrected by
    1 - beta**step; p -= lr/(1-beta1**step) * m / (sqrt(v)/sqrt(1-beta2**step) + eps).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"Invalid lr={lr}, eps={eps} or weight_decay={weight_decay}: must be >= 0")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Invalid betas {betas}: each must be in [0, 1)")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
        super().__init__(params, defaults)

    def _update(self, p, grad, state, group):
        xp = get_array_module(p.data)
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * p.data
        # in place: each parameter's state is a view into its bucket's (see _Bucket); state_dict() copies
        moments = backend.scalars_like(p.data, 1 - beta1, beta2, 1 - beta2)
        step = backend.scalars_like(p.data, group["lr"] / (1 - beta1 ** state["step"]),
                                    math.sqrt(1 - beta2 ** state["step"]), group["eps"])
        if group["amsgrad"]:
            _adam_moments(state["exp_avg"], state["exp_avg_sq"], grad, *moments)
            largest = xp.maximum(state["max_exp_avg_sq"], state["exp_avg_sq"], out=state["max_exp_avg_sq"])
            _adam_update(p.data, state["exp_avg"], largest, *step)
        else:
            _adam(p.data, state["exp_avg"], state["exp_avg_sq"], grad, *moments, *step)


# Adam's arithmetic, in place, as one kernel on a GPU (backend.fused): with the flat buckets, one launch
# updates every parameter of a group.
def _moments(exp_avg, exp_avg_sq, grad, one_minus_beta1, beta2, one_minus_beta2):
    exp_avg += one_minus_beta1 * (grad - exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += one_minus_beta2 * grad * grad


def _update_with(xp):
    def update(param, exp_avg, exp_avg_sq, step_size, bias_correction2_sqrt, eps):
        param -= step_size * (exp_avg / (xp.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps))
    return update


_adam_moments = fused(lambda xp: _moments)
_adam_update = fused(_update_with)


@fused
def _adam(xp):
    update = _update_with(xp)

    def moments_then_update(param, exp_avg, exp_avg_sq, grad, one_minus_beta1, beta2, one_minus_beta2,
                            step_size, bias_correction2_sqrt, eps):
        _moments(exp_avg, exp_avg_sq, grad, one_minus_beta1, beta2, one_minus_beta2)
        update(param, exp_avg, exp_avg_sq, step_size, bias_correction2_sqrt, eps)
    return moments_then_update


# ---------------------------------------------------------------- learning-rate schedules
class LRScheduler:
    """Sets each group's lr from ``get_lr()`` at every ``step()``; the constructor takes the first step.

    ``last_epoch`` counts the steps taken (iterations for PolyLR). The base lr of
    each group is kept in the group as ``initial_lr``, as in PyTorch.
    """

    _not_saved = ("optimizer",)

    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when resuming an optimizer")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self):
        raise NotImplementedError

    def step(self):
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return self._last_lr

    def state_dict(self):
        return {k: list(v) if isinstance(v, list) else v for k, v in self.__dict__.items() if k not in self._not_saved}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)


class PolyLR(LRScheduler):
    """DeepLab's "poly" policy: lr = base_lr * (1 - it/max_iters)**power, never below ``min_lr``.

    Call ``step()`` once per iteration; after ``max_iters`` the rate stays at ``min_lr``.
    """

    def __init__(self, optimizer, max_iters, power=0.9, min_lr=0, last_epoch=-1):
        if max_iters <= 0:
            raise ValueError(f"PolyLR: max_iters must be positive, got {max_iters}")
        self.max_iters, self.power, self.min_lr = max_iters, power, min_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        done = min(self.last_epoch, self.max_iters) / self.max_iters
        return [max(base * (1 - done) ** self.power, self.min_lr) for base in self.base_lrs]


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(step), with one function for all groups or one per group.

    The functions are not part of the state_dict: build the scheduler with the same ones.
    """

    _not_saved = ("optimizer", "lr_lambdas")

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        groups = optimizer.param_groups
        self.lr_lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * len(groups)
        if len(self.lr_lambdas) != len(groups):
            raise ValueError(f"Expected {len(groups)} lr_lambdas, but got {len(self.lr_lambdas)}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]


# ``minidl.optim.lr_scheduler.PolyLR`` reads as PyTorch's ``torch.optim.lr_scheduler``
lr_scheduler = sys.modules[__name__]
sys.modules[__name__ + ".lr_scheduler"] = lr_scheduler
