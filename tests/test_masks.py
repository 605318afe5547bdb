"""The weight-mask convention: masked entries act nowhere and get no gradient."""
import pytest
import torch

from ranvier import ALIF, EGRU
from ranvier.neurons.readout import LeakyReadout
from ranvier.sparse import effective_weight, get_mask, mask_name, set_mask


def test_mask_names():
    assert mask_name("weight") == "mask"
    assert mask_name("recurrent_weight") == "recurrent_mask"
    assert mask_name("weight_hh_l1") == "mask_hh_l1"
    with pytest.raises(ValueError, match="only weights"):
        mask_name("bias")


@pytest.mark.parametrize("make, names", [
    (lambda: ALIF(3, 5), ["input_weight", "recurrent_weight"]),
    (lambda: EGRU(3, 5, num_layers=2), ["weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1"]),
])
def test_masked_layers_compute_with_and_train_only_active_weights(make, names):
    torch.manual_seed(0)
    layer = make()
    for name in names:
        set_mask(layer, name, torch.rand_like(getattr(layer, name)) < 0.5)
    x = torch.randn(7, 2, 3)
    out, _ = layer(x)
    # The same layer with the masked entries set to large values computes the same output.
    with torch.no_grad():
        for name in names:
            getattr(layer, name).add_(100.0 * (1 - get_mask(layer, name)))
    out2, _ = layer(x)
    torch.testing.assert_close(out, out2)
    out2.float().sum().backward()
    for name in names:
        grad = getattr(layer, name).grad
        if grad is not None:
            assert torch.all(grad[get_mask(layer, name) == 0] == 0)
    assert set(n for n, _ in layer.named_buffers()) >= {mask_name(n) for n in names}


def test_readout_mask_and_shape_check():
    readout = LeakyReadout(4, 2)
    set_mask(readout.linear, "weight", torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1]]))
    assert torch.count_nonzero(effective_weight(readout.linear, "weight")) <= 2
    assert torch.count_nonzero(readout.linear.weight) <= 2  # the stored weight is zeroed too
    with pytest.raises(ValueError, match="does not match"):
        set_mask(readout.linear, "weight", torch.ones(3, 3))
