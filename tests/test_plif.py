"""Parametric LIF (SpikingJelly's ParametricLIFNode): ``lif(convention="spikingjelly_plif")`` against
the plain reference loop, and ``snn_cuda.ParametricLIFNode`` against the installed SpikingJelly in
both call forms, with w's gradient."""

from __future__ import annotations

import itertools

import pytest
import torch

import snn_cuda
from snn_cuda import reference

from helpers import (SURROGATES, assert_nonfinite_match, assert_spikes_and_resets, import_peer,
                     rel_err)

sj_neuron = import_peer("spikingjelly.activation_based.neuron")
sj_sur = import_peer("spikingjelly.activation_based.surrogate")
sj_functional = import_peer("spikingjelly.activation_based.functional")

PLIF = "spikingjelly_plif"
RESETS = ["subtract", "hard"]
INF = float("inf")


def draw(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    H = shape[-1]
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 1.0 + 1.0).to(dtype)
    rate = torch.rand(H, generator=g, dtype=torch.float64) * 0.5 + 0.2  # q = 1 / tau
    threshold = torch.rand(H, generator=g, dtype=torch.float64) * 0.6 + 0.7
    initial = (torch.randn(shape[1:], generator=g, dtype=torch.float64) * 0.4).to(dtype)
    weights = torch.randn((3, *shape), generator=g, dtype=torch.float64).to(dtype)
    return x, rate, threshold, initial, weights


def run(fn, x, rate, threshold, initial, weights, **options):
    x = x.clone().requires_grad_()
    acc = snn_cuda.ops.accumulation_dtype(x.dtype)
    rate = rate.to(acc).clone().requires_grad_()
    threshold = threshold.to(acc).clone().requires_grad_()
    initial = initial.clone().requires_grad_()
    spikes, membrane, state = fn(x, rate, threshold, convention=PLIF, initial=initial,
                                 return_state=True, **options)
    loss = (spikes * weights[0]).sum() + (membrane * weights[1]).sum() + (state * weights[2][0]).sum()
    return (spikes, membrane, state), torch.autograd.grad(loss, (x, rate, threshold, initial))


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_plif_matches_reference_float64(reset, decay_input, detach_reset, surrogate):
    x, rate, threshold, initial, weights = draw((37, 3, 11), torch.float64, 1)
    if not decay_input:
        x = x * 0.4
    options = dict(reset=reset, decay_input=decay_input, detach_reset=detach_reset,
                   surrogate=surrogate, reset_value=0.15 if reset == "hard" else 0.0)
    (fwd, grads), (fwd_r, grads_r) = (run(fn, x, rate, threshold, initial, weights, **options)
                                      for fn in (snn_cuda.lif, reference.lif))
    for a, e in zip(fwd, fwd_r):
        assert torch.equal(a, e)
    assert_spikes_and_resets(fwd[0], min_rate=0.02, min_resets=10)
    for name, a, e in zip(("input", "rate", "threshold", "initial"), grads, grads_r):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=name)
        assert a.abs().max() > 0, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reset", RESETS)
def test_plif_lower_precisions_match_reference(dtype, reset):
    x, rate, threshold, initial, weights = draw((29, 2, 9), dtype, 2)
    (fwd, grads), (fwd_r, grads_r) = (run(fn, x, rate, threshold, initial, weights, reset=reset)
                                      for fn in (snn_cuda.lif, reference.lif))
    for a, e in zip(fwd, fwd_r):
        assert torch.equal(a, e)
    for a, e in zip(grads, grads_r):
        assert rel_err(a, e) <= (1e-5 if dtype == torch.float32 else 1e-2)


def test_plif_opcheck_and_lane_loops():
    x, rate, threshold, initial, weights = draw((6, 2, 3), torch.float64, 3)
    args = (x, initial, rate, threshold, rate * 0 + 0.1, PLIF, "hard", True)
    torch.library.opcheck(torch.ops.snn_cuda.lif_fwd.default, args)
    spikes, membrane, state = torch.ops.snn_cuda.lif_fwd(*args)
    torch.library.opcheck(
        torch.ops.snn_cuda.lif_bwd.default,
        (torch.ones_like(spikes), torch.ones_like(membrane), torch.ones_like(state), membrane,
         initial, x, rate, threshold, rate * 0 + 0.1, PLIF, "hard", True, False, "atan", 2.0,
         True, True),
    )
    x, rate, threshold, initial, weights = draw((19, 2, 5), torch.float32, 4)
    blocks = run(snn_cuda.lif, x, rate, threshold, initial, weights, reset="subtract")
    with snn_cuda.ops.gpu_lane_loops():
        lanes = run(snn_cuda.lif, x, rate, threshold, initial, weights, reset="subtract")
    for a, e in zip(blocks[0] + blocks[1], lanes[0] + lanes[1]):
        assert torch.equal(a, e)


def test_plif_infinite_inputs_match_reference():
    values = torch.tensor([0.3, 1.7, INF, -INF], dtype=torch.float64)
    x = torch.stack([torch.stack(seq) for seq in itertools.product(values, repeat=3)], dim=1)
    for reset, decay_input, use in itertools.product(RESETS, (True, False), ("spikes", "membrane", "state")):
        results = []
        for fn in (snn_cuda.lif, reference.lif):
            xx = x.clone().requires_grad_()
            rate = torch.full((x.shape[1],), 0.5, dtype=torch.float64, requires_grad=True)
            spikes, membrane, state = fn(xx, rate, 1.0, convention=PLIF, reset=reset,
                                         decay_input=decay_input, return_state=True)
            loss = {"spikes": spikes.sum(), "membrane": membrane.sum(), "state": state.sum()}[use]
            results.append(((spikes, membrane, state), torch.autograd.grad(loss, (xx, rate))))
        assert_nonfinite_match(results, (reset, use))


def test_plif_module_compiles_and_steps_match_sequence():
    x = torch.randn(12, 4, 7) * 0.8 + 0.6
    node = snn_cuda.ParametricLIFNode(init_tau=3.0, step_mode="m", v_reset=None)
    whole = torch.compile(node, fullgraph=True)(x)
    stepper = snn_cuda.ParametricLIFNode(init_tau=3.0, v_reset=None)
    steps = torch.stack([stepper(x[t]) for t in range(x.shape[0])])
    assert torch.equal(whole, steps) and torch.equal(node.v, stepper.v) and 0 < whole.mean() < 1


def test_plif_bad_arguments():
    with pytest.raises(ValueError, match="init_tau must be a finite float > 1, got 1.0"):
        snn_cuda.ParametricLIFNode(init_tau=1.0)
    with pytest.raises(ValueError, match="num_neurons must be None"):
        snn_cuda.ParametricLIFNode(num_neurons=0)
    with pytest.raises(TypeError, match="decay_input must be True or False"):
        snn_cuda.ParametricLIFNode(decay_input="yes")
    node = snn_cuda.ParametricLIFNode(num_neurons=5, step_mode="m")
    with pytest.raises(ValueError, match=r"decay of shape \(5,\) does not broadcast"):
        node(torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="w must be finite"):
        node.w = torch.nn.Parameter(torch.full((5,), float("nan")))


# ------------------------------------------------------------------------------------------------
# Against SpikingJelly's ParametricLIFNode.

def sj_surrogate(name):
    return {"Sigmoid": sj_sur.Sigmoid(alpha=3.0), "ATan": sj_sur.ATan(alpha=1.5),
            "SuperSpike": sj_sur.SuperSpike(alpha=0.8)}[name]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("v_reset", [None, 0.1])
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("form", ["m", "s"])
def test_plif_matches_spikingjelly(dtype, v_reset, decay_input, detach_reset, form):
    """Spikes, v_seq and v equal; the input's and w's gradients to rounding (float64 1e-10; float32
    1e-5 for the input, 1e-3 for w: a sum over every step and lane, added in another order, and
    SpikingJelly's CPU op forms w's gradient as sum * q * (1 - q), autograd's sigmoid as
    grad * (1 - q) * q)."""
    T, N, H = 120, 3, 10
    for surrogate_name in ("Sigmoid", "ATan", "SuperSpike"):
        g = torch.Generator().manual_seed(hash((surrogate_name, decay_input)) % 2**31)
        x = (torch.randn(T, N, H, generator=g, dtype=torch.float64) * 1.0
             + (1.2 if decay_input else 0.5)).to(dtype)
        up_spk = torch.randn(T, N, H, generator=g, dtype=torch.float64).to(dtype)
        results = []
        for cls in (sj_neuron.ParametricLIFNode, snn_cuda.ParametricLIFNode):
            node = cls(init_tau=2.5, decay_input=decay_input, v_threshold=0.9, v_reset=v_reset,
                       surrogate_function=sj_surrogate(surrogate_name), detach_reset=detach_reset,
                       step_mode=form, store_v_seq=True).to(dtype)
            xx = x.clone().requires_grad_()
            if form == "m":
                spikes = torch.cat([node(xx[:40]), node(xx[40:])])
            else:
                spikes = torch.stack([node(xx[t]) for t in range(T)])
            v_seq = node.v_seq
            loss = (spikes * up_spk).sum() + node.v.sum()
            results.append((spikes, v_seq, node.v, torch.autograd.grad(loss, (xx, node.w))))
        (p_spk, p_vseq, p_v, p_grads), (spk, vseq, v, grads) = results
        label = f"{surrogate_name} {dtype}"
        assert torch.equal(spk, p_spk) and torch.equal(vseq, p_vseq) and torch.equal(v, p_v), label
        assert_spikes_and_resets(spk, min_rate=0.02, min_resets=10)
        for name, a, e in zip(("input", "w"), grads, p_grads):
            tol = 1e-10 if dtype == torch.float64 else (1e-5 if name == "input" else 1e-3)
            assert rel_err(a, e) <= tol, f"grad {name}: {rel_err(a, e):.3e} ({label})"
            assert e.abs().max() > 0, name


def test_plif_per_neuron_w_and_convert():
    """num_neurons: one w per neuron (SpikingJelly's reference path broadcasts a [H] w the same
    way); convert() hands over SpikingJelly's w itself."""
    torch.manual_seed(6)
    x = torch.randn(60, 3, 5, dtype=torch.float64) + 1.0
    peer = sj_neuron.ParametricLIFNode(v_reset=None, step_mode="m").double()
    peer.w = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 5, dtype=torch.float64))
    ours = snn_cuda.ParametricLIFNode(v_reset=None, step_mode="m", num_neurons=5).double()
    with torch.no_grad():
        ours.w.copy_(peer.w)
    outs = [node(x) for node in (peer, ours)]
    grads = [torch.autograd.grad(o.sum() + node.v.sum(), node.w)[0] for o, node in zip(outs, (peer, ours))]
    assert torch.equal(outs[0], outs[1]) and rel_err(grads[1], grads[0]) <= 1e-10
    sj_functional.reset_net(peer)
    converted = snn_cuda.convert(torch.nn.Sequential(peer))[0]
    assert isinstance(converted, snn_cuda.ParametricLIFNode) and converted.w is peer.w
    assert torch.equal(converted(x), outs[0])


def compare_devices(device, dtype, reset, surrogate):
    x, rate, threshold, initial, weights = draw((45, 3, 33), dtype, 40)
    options = dict(reset=reset, surrogate=surrogate, reset_value=0.1 if reset == "hard" else 0.0)
    on_cpu = run(snn_cuda.lif, x, rate, threshold, initial, weights, **options)
    on_device = run(snn_cuda.lif, *(t.to(device) for t in (x, rate, threshold, initial, weights)),
                    **options)
    for a, e in zip(on_device[0], on_cpu[0]):
        assert torch.equal(a.cpu(), e), (dtype, reset, surrogate)
    tol = {torch.float64: 1e-9, torch.float32: 1e-5}.get(dtype, 1e-2)
    for a, e in zip(on_device[1], on_cpu[1]):
        torch.testing.assert_close(a.cpu().double(), e.double(), rtol=tol, atol=tol)


def test_plif_device_comparison_runs_on_cpu():
    compare_devices("cpu", torch.float32, "hard", "sigmoid")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible: the CUDA kernel cannot run here")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reset", RESETS)
def test_plif_cuda_matches_cpu(dtype, reset):
    for surrogate in SURROGATES:
        compare_devices("cuda", dtype, reset, surrogate)
