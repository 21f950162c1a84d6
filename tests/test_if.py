"""IF neurons (SpikingJelly's IFNode): ``lif(convention="spikingjelly_if")`` and ``snn_cuda.IFNode``
against the plain reference loop. Parity with SpikingJelly itself is in test_peers."""

from __future__ import annotations

import itertools

import pytest
import torch

import snn_cuda
from snn_cuda import reference

from helpers import SURROGATES, assert_nonfinite_match

IF = "spikingjelly_if"
RESETS = ["subtract", "hard"]
INF = float("inf")


def draw(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 0.8 + 0.3).to(dtype)
    threshold = (torch.rand(shape[-1], generator=g, dtype=torch.float64) * 0.6 + 0.7)
    initial = (torch.randn(shape[1:], generator=g, dtype=torch.float64) * 0.4).to(dtype)
    weights = torch.randn((3, *shape), generator=g, dtype=torch.float64).to(dtype)
    return x, threshold, initial, weights


def run(fn, x, threshold, initial, weights, **options):
    """Forward and the gradients of a weighted sum of all outputs (spikes, membrane, state)."""
    x = x.clone().requires_grad_()
    threshold = threshold.to(snn_cuda.ops.accumulation_dtype(x.dtype)).clone().requires_grad_()
    initial = initial.clone().requires_grad_()
    spikes, membrane, state = fn(x, None, threshold, convention=IF, initial=initial,
                                 return_state=True, **options)
    loss = (spikes * weights[0]).sum() + (membrane * weights[1]).sum() + (state * weights[2][0]).sum()
    return (spikes, membrane, state), torch.autograd.grad(loss, (x, threshold, initial))


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_if_matches_reference_float64(reset, detach_reset, surrogate):
    x, threshold, initial, weights = draw((37, 3, 11), torch.float64, 1)
    options = dict(reset=reset, detach_reset=detach_reset, surrogate=surrogate,
                   reset_value=0.15 if reset == "hard" else 0.0)
    (fwd, grads), (fwd_r, grads_r) = (run(fn, x, threshold, initial, weights, **options)
                                      for fn in (snn_cuda.lif, reference.lif))
    for a, e in zip(fwd, fwd_r):
        assert torch.equal(a, e)
    fired = fwd[0].reshape(fwd[0].shape[0], -1).sum(0)
    assert fired.max() >= 3 and 0.05 < fwd[0].mean() < 0.9, "the case must fire and reset"
    for name, a, e in zip(("input", "threshold", "initial"), grads, grads_r):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=name)
        assert a.abs().max() > 0, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reset", RESETS)
def test_if_lower_precisions_match_reference(dtype, reset):
    """Same rounding as the reference (membrane and state stored in the input dtype each step):
    the forward equal; gradients to float32 rounding (atol 1e-4 on gradients of order 1)."""
    x, threshold, initial, weights = draw((29, 2, 9), dtype, 2)
    options = dict(reset=reset, surrogate="atan")
    (fwd, grads), (fwd_r, grads_r) = (run(fn, x, threshold, initial, weights, **options)
                                      for fn in (snn_cuda.lif, reference.lif))
    for a, e in zip(fwd, fwd_r):
        assert torch.equal(a, e)
    for a, e in zip(grads, grads_r):
        torch.testing.assert_close(a.float(), e.float(), rtol=1e-2, atol=1e-2 if dtype != torch.float32 else 1e-4)


def test_if_opcheck():
    """(gradcheck cannot see the surrogate: the backward is checked against autograd through the
    reference above, which uses the same surrogate.)"""
    x, threshold, initial, _ = draw((6, 2, 3), torch.float64, 3)
    p = torch.ones(3, dtype=torch.float64)
    args = (x, initial, p, threshold, p * 0.1, IF, "hard", True)
    torch.library.opcheck(torch.ops.snn_cuda.lif_fwd.default, args)
    spikes, membrane, state = torch.ops.snn_cuda.lif_fwd(*args)
    torch.library.opcheck(
        torch.ops.snn_cuda.lif_bwd.default,
        (torch.ones_like(spikes), torch.ones_like(membrane), torch.ones_like(state), membrane,
         initial, None, p, threshold, p * 0.1, IF, "hard", True, False, "atan", 2.0,
         False, True),
    )


@pytest.mark.parametrize("reset", RESETS)
def test_if_gpu_lane_loops_bitwise(reset):
    x, threshold, initial, weights = draw((19, 2, 5), torch.float32, 4)
    blocks = run(snn_cuda.lif, x, threshold, initial, weights, reset=reset)
    with snn_cuda.ops.gpu_lane_loops():
        lanes = run(snn_cuda.lif, x, threshold, initial, weights, reset=reset)
    for a, e in zip(blocks[0] + blocks[1], lanes[0] + lanes[1]):
        assert torch.equal(a, e)


def test_if_infinite_inputs_match_reference():
    """Every length-3 sequence over {0.3, 1.7, +inf, -inf} as lanes: as the reference, NaN included."""
    values = torch.tensor([0.3, 1.7, INF, -INF], dtype=torch.float64)
    x = torch.stack([torch.stack(seq) for seq in itertools.product(values, repeat=3)], dim=1)
    for reset, use in itertools.product(RESETS, ("spikes", "membrane", "state")):
        results = []
        for fn in (snn_cuda.lif, reference.lif):
            xx = x.clone().requires_grad_()
            threshold = torch.ones(x.shape[1], dtype=torch.float64, requires_grad=True)
            spikes, membrane, state = fn(xx, None, threshold, convention=IF, reset=reset,
                                         return_state=True)
            loss = {"spikes": spikes.sum(), "membrane": membrane.sum(), "state": state.sum()}[use]
            results.append(((spikes, membrane, state), torch.autograd.grad(loss, (xx, threshold))))
        assert_nonfinite_match(results, (reset, use))


def test_ifnode_module_compiles_and_steps_match_sequence():
    x = torch.randn(12, 4, 7, dtype=torch.float32) * 0.8 + 0.3
    node = snn_cuda.IFNode(step_mode="m", v_reset=None)
    compiled = torch.compile(node, fullgraph=True)
    whole = compiled(x)
    stepper = snn_cuda.IFNode(v_reset=None)
    steps = torch.stack([stepper(x[t]) for t in range(x.shape[0])])
    assert torch.equal(whole, steps)
    assert torch.equal(node.v, stepper.v)


def test_if_bad_arguments():
    x = torch.randn(3, 2, 4)
    with pytest.raises(ValueError, match='"spikingjelly_if" .IFNode. has no decay; pass decay=None'):
        snn_cuda.lif(x, 0.5, 1.0, convention=IF)
    with pytest.raises(ValueError, match="has no decay_input"):
        snn_cuda.lif(x, None, 1.0, convention=IF, decay_input=False)
    with pytest.raises(ValueError, match="has no decay; pass decay=None"):
        snn_cuda.lif_step(x[0], 2.0, 1.0, convention=IF)
    with pytest.raises(ValueError, match='reset="none"'):
        snn_cuda.lif(x, None, 1.0, convention=IF, reset="none")
    with pytest.raises(TypeError):
        snn_cuda.IFNode(tau=2.0)
    with pytest.raises(ValueError, match="v_reset must be a float or None"):
        snn_cuda.IFNode(v_reset="0")
    with pytest.raises(ValueError, match="v_threshold must be finite"):
        snn_cuda.IFNode(v_threshold=float("nan"))


def test_ifnode_in_run_sequence_equals_the_per_step_loop():
    torch.manual_seed(5)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), snn_cuda.IFNode(v_reset=None))
    x = torch.rand(15, 3, 6) * 0.8
    loop = torch.stack([net(x[t]) for t in range(x.shape[0])])
    net[1].reset()
    whole = snn_cuda.run_sequence(net, x)
    assert torch.equal(whole, loop)
    assert 0 < loop.mean() < 1


def compare_devices(device, dtype, reset, surrogate):
    """The kernel on ``device`` against the CPU kernel: forward bit for bit (no FMA contraction,
    IEEE division on both), gradients to rounding (the sigmoid surrogate's exp differs by an ulp or
    two between libm and CUDA)."""
    x, threshold, initial, weights = draw((45, 3, 33), dtype, 6)
    options = dict(reset=reset, surrogate=surrogate, reset_value=0.1 if reset == "hard" else 0.0)
    on_cpu = run(snn_cuda.lif, x, threshold, initial, weights, **options)
    on_device = run(snn_cuda.lif, *(t.to(device) for t in (x, threshold, initial, weights)), **options)
    for a, e in zip(on_device[0], on_cpu[0]):
        assert torch.equal(a.cpu(), e), (dtype, reset, surrogate)
    tol = {torch.float64: 1e-9, torch.float32: 1e-5}.get(dtype, 1e-2)
    for a, e in zip(on_device[1], on_cpu[1]):
        torch.testing.assert_close(a.cpu().double(), e.double(), rtol=tol, atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible: the CUDA kernel cannot run here")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reset", RESETS)
def test_if_cuda_matches_cpu(dtype, reset):
    for surrogate in SURROGATES:
        compare_devices("cuda", dtype, reset, surrogate)
