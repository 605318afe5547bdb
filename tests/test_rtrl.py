"""Exact RTRL (ranvier.learning.rtrl): dense and sparse both equal BPTT, and what the sparse
version skips is exactly zero in the dense one (SCIENCE.md §5.3)."""
import pytest
import torch

from ranvier import ALIF, EGRU, EPROP_CONVENTION, LIF, LSNN_CONVENTION
from ranvier.learning.rtrl import ALIFRTRL, EGRURTRL
from ranvier.sparse.masks import set_mask


def egru_layer(masked):
    layer = EGRU(3, 6, epsilon=3.0, threshold_mean=-1.0).double()  # window |ĉ − ϑ| < 1/3: some units outside
    if masked:
        set_mask(layer, "weight_hh_l0", (torch.rand(18, 6) < 0.5).double())
        set_mask(layer, "weight_ih_l0", (torch.rand(18, 3) < 0.7).double())
    return layer


def alif_layer(kind, convention, masked):
    common = dict(tau_mem=torch.linspace(3.0, 20.0, 6, dtype=torch.float64), threshold=0.3, n_refractory=1,
                  convention=convention)
    if kind == "lif":
        layer = LIF(3, 6, **common)
    else:
        layer = ALIF(3, 6, tau_adapt=torch.linspace(5.0, 50.0, 6, dtype=torch.float64), beta=0.4, **common)
    layer.double()
    with torch.no_grad():
        layer.input_weight.mul_(10.0 if convention.scale_input else 1.5)
    if masked:
        set_mask(layer, "recurrent_weight", (torch.rand(6, 6) < 0.5).double() * layer.recurrent_mask)
        set_mask(layer, "input_weight", (torch.rand(6, 3) < 0.7).double())
    return layer


def bptt(layer, x, readout):
    """Autograd through the layer's own forward: ``L = Σ_t Σ readout_t ⊙ y_t``."""
    y, _ = layer(x)
    loss = (readout * y).sum()
    names = RTRL_FOR[type(layer)].weight_names
    return dict(zip(names, torch.autograd.grad(loss, [getattr(layer, n) for n in names]))), y.detach()


RTRL_FOR = {EGRU: EGRURTRL, ALIF: ALIFRTRL, LIF: ALIFRTRL}


def run_rtrl(layer, x, readout, sparse):
    rtrl = RTRL_FOR[type(layer)](layer, sparse=sparse)
    state = rtrl.initial_state(x.shape[1])
    ys, states = [], []
    for x_t, r_t in zip(x.unbind(0), readout.unbind(0)):
        y, state = rtrl.step(x_t, state, measure=True)
        state = rtrl.accumulate(state, r_t)
        ys.append(y)
        states.append(state)
    return rtrl, rtrl.gradients(state), torch.stack(ys), states


def check_exact(layer, steps=25, batch=3):
    x = torch.randn(steps, batch, 3, dtype=torch.float64)
    readout = torch.randn(steps, batch, 6, dtype=torch.float64)
    want, y_bptt = bptt(layer, x, readout)
    results = {}
    for sparse in (False, True):
        rtrl, got, y, states = run_rtrl(layer, x, readout, sparse)
        torch.testing.assert_close(y, y_bptt, rtol=0, atol=1e-12)
        for name, g in want.items():
            assert g.abs().max() > 1e-3, name
            torch.testing.assert_close(got[name], g, rtol=0, atol=1e-6, msg=f"{name} sparse={sparse}")
        results[sparse] = (rtrl, states, y)
    return results


@pytest.mark.parametrize("masked", [False, True], ids=["dense-weights", "masked"])
def test_egru_rtrl_equals_bptt(masked):
    results = check_exact(egru_layer(masked))
    rtrl_sparse, _, y = results[True]
    rtrl_dense = results[False][0]
    assert 0 < (y != 0).double().mean() < 0.9  # events are sparse but present
    assert sum(rtrl_sparse.stats.active) < sum(rtrl_dense.stats.active)  # some units skipped
    assert sum(rtrl_sparse.stats.ops()) < sum(rtrl_dense.stats.ops())


@pytest.mark.parametrize("masked", [False, True], ids=["dense-weights", "masked"])
@pytest.mark.parametrize("kind,convention", [("alif", EPROP_CONVENTION), ("alif", LSNN_CONVENTION),
                                             ("lif", EPROP_CONVENTION)], ids=["alif-eprop", "alif-lsnn", "lif"])
def test_alif_rtrl_equals_bptt(kind, convention, masked):
    results = check_exact(alif_layer(kind, convention, masked))
    _, _, z = results[True]
    assert 0.02 < (z != 0).double().mean() < 0.6


@pytest.mark.parametrize("model", ["egru", "alif"])
def test_skipped_rows_and_columns_are_zero_in_the_dense_computation(model):
    layer = egru_layer(True) if model == "egru" else alif_layer("alif", EPROP_CONVENTION, True)
    rtrl = RTRL_FOR[type(layer)](layer, sparse=False)
    masks = [getattr(layer, n.replace("weight", "mask")).reshape(-1) for n in rtrl.weight_names]
    masked_columns = torch.cat(masks)[rtrl.columns] == 0
    assert masked_columns.any()
    state = rtrl.initial_state(2)
    skipped_rows = 0
    for x_t in torch.randn(20, 2, 3, dtype=torch.float64):
        # rows: the event influence ∂y/∂θ = D ⊙ M of a unit with D = 0 (the rows the sparse product skips)
        all_units = torch.arange(6)
        event = rtrl._event_rows(state, all_units)
        inactive = (state.event_derivative == 0)
        skipped_rows += int(inactive.sum())
        assert (event[inactive] == 0).all()
        # columns: masked weights have no influence anywhere
        for m in state.influence:
            assert (m[..., masked_columns] == 0).all()
        _, state = rtrl.step(x_t, state)
    assert skipped_rows > 0


def test_memory_is_independent_of_sequence_length():
    layer = egru_layer(True)
    rtrl = EGRURTRL(layer)
    sizes = []
    for steps in (5, 40):
        state = rtrl.initial_state(2)
        for x_t in torch.randn(steps, 2, 3, dtype=torch.float64):
            _, state = rtrl.step(x_t, state)
        sizes.append(rtrl.state_bytes(state))
    assert sizes[0] == sizes[1]
    # the sparse version keeps only the unmasked columns
    assert EGRURTRL(layer).n_params == int(layer.mask_hh_l0.sum() + layer.mask_ih_l0.sum())
    assert EGRURTRL(layer, sparse=False).n_params == 18 * 9


def test_unsupported_layers_raise():
    with pytest.raises(ValueError, match="one EGRU layer"):
        EGRURTRL(EGRU(3, 4, num_layers=2))
    with pytest.raises(ValueError, match="code form"):
        EGRURTRL(EGRU(3, 4, reset="event"))
    with pytest.raises(ValueError, match="zoneout"):
        EGRURTRL(EGRU(3, 4, zoneout=0.1))
    with pytest.raises(TypeError, match="ALIF or LIF"):
        ALIFRTRL(EGRU(3, 4))
