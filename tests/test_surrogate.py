import pytest
import torch

from ranvier import FastSigmoid, PiecewiseLinear, spike

SURROGATES = [PiecewiseLinear(), PiecewiseLinear(gamma=0.7, width=0.5), FastSigmoid(), FastSigmoid(slope=25.0)]


def test_forward_is_heaviside_with_h0_zero():
    x = torch.tensor([-1.0, -1e-6, 0.0, 1e-6, 2.0])
    assert spike(x, PiecewiseLinear()).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("surrogate", SURROGATES, ids=repr)
def test_backward_matches_autograd_of_primitive(surrogate):
    # the offset keeps every point off the triangle's kinks, where autograd would pick a side
    x = torch.linspace(-3, 3, 600, dtype=torch.float64) + 0.00037
    x1 = x.clone().requires_grad_(True)
    spike(x1, surrogate).sum().backward()
    x2 = x.clone().requires_grad_(True)
    surrogate.primitive(x2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)
    # and the pure function is what both compute
    torch.testing.assert_close(x1.grad, surrogate.derivative(x))


def test_piecewise_linear_values():
    s = PiecewiseLinear(gamma=0.3, width=1.0)
    d = s.derivative(torch.tensor([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0]))
    torch.testing.assert_close(d, torch.tensor([0.0, 0.15, 0.3, 0.15, 0.0, 0.0]))


def test_fast_sigmoid_values():
    d = FastSigmoid(slope=10.0).derivative(torch.tensor([0.0, 0.1, -0.3]))
    torch.testing.assert_close(d, torch.tensor([1.0, 0.25, 1 / 16]))


def test_surrogates_are_frozen_and_hashable():
    s = PiecewiseLinear()
    with pytest.raises(Exception):
        s.gamma = 1.0  # type: ignore[misc]
    assert hash(s) == hash(PiecewiseLinear())
