from typing import NamedTuple

import pytest
import torch

from ranvier import apply_reset, detach_state, scan


class S(NamedTuple):
    a: torch.Tensor
    b: torch.Tensor


def cumulative(x, s):
    s = S(s.a + x, s.b * 2)
    return s.a, s


def test_scan_is_a_loop():
    xs = torch.randn(6, 3)
    out, final = scan(cumulative, xs, S(torch.zeros(3), torch.ones(3)))
    torch.testing.assert_close(out, xs.cumsum(0))
    torch.testing.assert_close(final.b, torch.full((3,), 64.0))


def test_scan_record_keeps_the_number_of_values():
    xs = torch.randn(4, 2)
    result = scan(cumulative, xs, S(torch.zeros(2), torch.ones(2)), record=True)
    assert len(result) == 2
    (out, states), final = result
    assert isinstance(states, S) and states.a.shape == (4, 2)
    torch.testing.assert_close(states.b[-1], final.b)


def test_scan_rejects_empty_sequence():
    with pytest.raises(ValueError, match="empty"):
        scan(cumulative, torch.zeros(0, 3), S(torch.zeros(3), torch.ones(3)))


def test_detach_state():
    s = S(torch.ones(2, requires_grad=True) * 2, torch.ones(2))
    d = detach_state(s)
    assert isinstance(d, S) and not d.a.requires_grad


def test_apply_reset_modes():
    v = torch.tensor([1.0, 2.0])
    z = torch.tensor([1.0, 0.0])
    torch.testing.assert_close(apply_reset(v, z, 0.5), torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(apply_reset(v, z, 0.5, mode="zero"), torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match="unknown reset mode"):
        apply_reset(v, z, 0.5, mode="bogus")


def test_apply_reset_detach_blocks_gradient_through_spike():
    z = torch.tensor([1.0], requires_grad=True)
    v = torch.tensor([1.0], requires_grad=True)
    apply_reset(v, z, 0.5, detach=True).sum().backward()
    assert z.grad is None and v.grad is not None
    z2 = torch.tensor([1.0], requires_grad=True)
    apply_reset(torch.tensor([1.0]), z2, 0.5).sum().backward()
    torch.testing.assert_close(z2.grad, torch.tensor([-0.5]))
