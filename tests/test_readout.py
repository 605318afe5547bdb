import math

import pytest
import torch

from ranvier import LeakyReadout, exp_filter, firing_rate_loss


def test_exp_filter_matches_the_recurrence():
    x = torch.randn(30, 2, 3, dtype=torch.float64)
    d = 0.8
    ref, s = [], torch.zeros(2, 3, dtype=torch.float64)
    for x_t in x:
        s = d * s + (1 - d) * x_t
        ref.append(s)
    torch.testing.assert_close(exp_filter(x, d), torch.stack(ref))


def test_leaky_readout_is_filtered_linear_and_batch_first():
    torch.manual_seed(0)
    ro = LeakyReadout(5, 3, tau_out=10.0).double()
    z = (torch.rand(25, 4, 5) < 0.3).double()
    kappa = math.exp(-1 / 10.0)
    # the leaky integrator y_t = κ y_{t−1} + (1 − κ) W z_t, plus the bias
    y, ref = torch.zeros(4, 3, dtype=torch.float64), []
    for z_t in z:
        y = kappa * y + (1 - kappa) * z_t @ ro.linear.weight.t()
        ref.append(y + ro.linear.bias)
    torch.testing.assert_close(ro(z), torch.stack(ref))
    bf = LeakyReadout(5, 3, tau_out=10.0, batch_first=True).double()
    bf.load_state_dict(ro.state_dict())
    torch.testing.assert_close(bf(z.transpose(0, 1)).transpose(0, 1), ro(z))
    plain = LeakyReadout(5, 3, tau_out=0.0).double()
    torch.testing.assert_close(plain(z), plain.linear(z))
    with pytest.raises(ValueError, match="tau_out"):
        LeakyReadout(5, 3, tau_out=-1.0)


def test_firing_rate_loss():
    z = torch.zeros(10, 2, 3)
    z[:, :, 0] = 1.0  # unit 0 fires every step, units 1 and 2 never
    expected = (1 - 0.01) ** 2 + 2 * 0.01 ** 2
    assert firing_rate_loss(z, target_rate=0.01).item() == pytest.approx(expected)
