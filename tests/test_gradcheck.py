"""minidl.gradcheck: passes a correct backward, and explains a wrong one element by element."""
import re

import numpy as np
import pytest

import minidl
from minidl import Function


class HalfSquare(Function):
    """x**2 with a backward that forgets the factor 2: d/dx is reported as x instead of 2x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * x


def test_passes_a_correct_backward():
    x = minidl.randn(3, 4, requires_grad=True)
    w = minidl.randn(4, 2, requires_grad=True)
    assert minidl.gradcheck(lambda x, w: (x @ w).tanh(), [x, w])


def test_checks_every_output_of_a_tuple():
    x = minidl.randn(5, requires_grad=True)
    assert minidl.gradcheck(lambda x: (x.exp(), x.sigmoid().sum()), [x])
    with pytest.raises(minidl.GradcheckError):
        minidl.gradcheck(lambda x: (x.exp(), HalfSquare.apply(x)), [x])


def test_runs_in_float64_even_for_float32_inputs():
    x = minidl.randn(4, requires_grad=True)  # float32: finite differences would be too coarse
    assert minidl.gradcheck(lambda x: (x * x).log(), [x])


def test_report_names_input_element_numeric_and_analytic():
    x = minidl.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    with pytest.raises(minidl.GradcheckError) as info:
        minidl.gradcheck(lambda c, x: HalfSquare.apply(x) * c, [3.0, x])
    report = str(info.value)
    assert "input 1 (shape (1, 3)): 3 of 3 elements differ" in report
    rows = re.findall(r"\((\d+), (\d+)\)\s+(\S+)\s+(\S+)\s+(\S+)", report)
    assert sorted((int(i), int(j)) for i, j, *_ in rows) == [(0, 0), (0, 1), (0, 2)]
    for _, _, numeric, analytic, _ in rows:  # the true derivative is twice the reported one
        np.testing.assert_allclose(float(numeric), 2 * float(analytic), rtol=1e-6)


def test_can_return_false_instead_of_raising():
    x = minidl.randn(3, requires_grad=True)
    assert minidl.gradcheck(HalfSquare.apply, [x], raise_exception=False) is False


def test_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="no input has requires_grad=True"):
        minidl.gradcheck(lambda x: x * 2, [minidl.randn(3)])
