"""±inf inputs and overflowing intermediates: the fused ops give the reference's forward and the
reference's gradients, exhaustively over short sequences.

Every sequence of length T <= 3 over {0.3, 1.7, +inf, -inf} is one lane of a single call (each lane
its own neuron, so parameter gradients are per lane too). The two ways a kernel used to differ from
autograd through the reference:
  * terms of a step that the loss does not reach (the last step of a delayed layer, the state after
    the last step when it is not used, a spike whose output is not used): autograd never runs them,
    the kernel multiplied a zero gradient by an infinite value (NaN);
  * a NaN lane (a NaN input, or inf - inf when an infinite membrane is reset): from that step on
    the forward is NaN in both, and the graded op's gradients may differ (torch's relu backward
    passes the gradient where its output is NaN; the kernel's stored bit is the gate). The graded
    op is compared on lanes without NaN; the LIF op on every lane.
"""

import itertools

import pytest
import torch

import snn_cuda
from snn_cuda import reference

from helpers import CONVENTIONS, SURROGATES

INF = float("inf")
NAN = float("nan")
VALUES = (0.3, 1.7, INF, -INF)
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}


def all_sequences(T, dtype):
    """[T, 4^T]: every sequence of length T over VALUES, one per lane."""
    return torch.tensor(list(itertools.product(VALUES, repeat=T)), dtype=dtype).T.contiguous()


def weights(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) + 0.5).to(dtype)


def assert_same(actual, expected, dtype, what, lanes=None):
    if expected is None:  # autograd: the loss does not depend on it
        expected = torch.zeros_like(actual)
    if lanes is not None:
        actual, expected = actual[..., lanes], expected[..., lanes]
    torch.testing.assert_close(actual, expected, equal_nan=True, msg=what, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("reset", ["proportional", "subtract"])
def test_recurrence_on_infinite_inputs(reset, dtype):
    checked_lanes = 0
    for T, delay, use, with_initial in itertools.product(
        (1, 2, 3), (True, False), ("states", "outputs", "both"), (False, True)
    ):
        if with_initial and delay:
            continue
        x0 = all_sequences(T, dtype)
        N = x0.shape[1]
        init0 = torch.full((N,), 0.4, dtype=dtype) if with_initial else None
        w = weights((2, T, N), dtype, T)
        results = []
        for fn in (snn_cuda.spiking_recurrence, reference.spiking_recurrence):
            x = x0.clone().requires_grad_()
            params = [torch.full((N,), v, dtype=dtype, requires_grad=True) for v in (0.9, 1.0, 1.5)]
            initial = None if init0 is None else init0.clone().requires_grad_()
            states, outputs = fn(x, *params, reset=reset, delay=delay, initial=initial)
            loss = 0
            if use != "outputs":
                loss = loss + (states * w[0]).sum()
            if use != "states":
                loss = loss + (outputs * w[1]).sum()
            inputs = [x, *params] + ([initial] if initial is not None else [])
            if not loss.requires_grad:  # the reference of a delayed T = 1 layer returns only zeros
                results.append(((states, outputs), None))
                continue
            results.append(((states, outputs), torch.autograd.grad(loss, inputs, allow_unused=True)))
        (fwd_f, grads_f), (fwd_r, grads_r) = results
        label = f"T={T} delay={delay} use={use} initial={with_initial}"
        for a, e, name in zip(fwd_f, fwd_r, ("states", "outputs")):
            torch.testing.assert_close(a, e, rtol=0, atol=0, equal_nan=True, msg=f"{name} {label}")
        if grads_r is None:
            continue
        # Lanes whose state never turns NaN (the undelayed run shows every step's state).
        s, o = reference.spiking_recurrence(x0, 0.9, 1.0, 1.5, reset=reset, delay=False, initial=init0)
        clean = ~(torch.isnan(s) | torch.isnan(o)).any(0)
        checked_lanes += int((clean & torch.isinf(x0).any(0)).sum())
        for i, (a, e) in enumerate(zip(grads_f, grads_r)):
            assert_same(a, e, dtype, f"gradient {i} {label}", clean)
    if reset == "subtract":
        # Many lanes hold an infinity and stay NaN-free: the comparison is not vacuous.
        assert checked_lanes > 50, checked_lanes
    else:
        # v = u - (ratio * u) * g is NaN for u = ±inf whether the gate is 0 or 1 (inf * 0, inf - inf),
        # in the reference as in the kernel: every lane that sees an infinity is a NaN lane.
        assert checked_lanes == 0, checked_lanes


def test_recurrence_examples_from_the_fuzzing_report():
    """grad decay through a -inf first input: 0, as the reference (was NaN)."""
    x = torch.tensor([[-INF], [0.3]], dtype=torch.float64)
    for fn in (snn_cuda.spiking_recurrence, reference.spiking_recurrence):
        d = torch.tensor([0.9], dtype=torch.float64, requires_grad=True)
        states, outputs = fn(x, d, 1.0, 1.5, reset="subtract")
        (g,) = torch.autograd.grad(states.sum() + outputs.sum(), d)
        assert g.item() == 0.0, fn


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_lif_on_infinite_inputs(convention, dtype):
    resets = ["subtract", "hard"] + (["none"] if convention.startswith("snntorch") else [])
    flags = {"snntorch": [(True, True)], "snntorch_now": [(True, True), (True, False)]}.get(
        convention, list(itertools.product((True, False), repeat=2)))
    for T, reset, (decay_input, detach), surrogate, return_state, use, with_initial in itertools.product(
        (1, 2, 3), resets, flags, SURROGATES, (False, True),
        ("spikes", "membrane", "both", "state"), (False, True),
    ):
        if use == "state" and not return_state:
            continue
        x0 = all_sequences(T, dtype)
        N = x0.shape[1]
        w = weights((3, T, N), dtype, T)
        options = dict(convention=convention, reset=reset, surrogate=surrogate, return_state=return_state)
        if convention == "spikingjelly":
            options.update(decay_input=decay_input, detach_reset=detach)
        elif convention == "snntorch_now":
            options.update(detach_reset=detach)
        results = []
        for fn in (snn_cuda.lif, reference.lif):
            x = x0.clone().requires_grad_()
            decay = torch.full((N,), 0.9 if convention.startswith("snntorch") else 2.0, dtype=dtype,
                               requires_grad=True)
            threshold = torch.full((N,), 1.0, dtype=dtype, requires_grad=True)
            initial = torch.full((N,), 0.4, dtype=dtype, requires_grad=True) if with_initial else None
            out = fn(x, decay, threshold, initial=initial, **options)
            loss = {
                "spikes": (out[0] * w[0]).sum(),
                "membrane": (out[1] * w[1]).sum(),
                "both": (out[0] * w[0]).sum() + (out[1] * w[1]).sum(),
                "state": (out[-1] * w[2][0]).sum(),
            }[use]
            inputs = [x, decay, threshold] + ([initial] if initial is not None else [])
            results.append((out, torch.autograd.grad(loss, inputs, allow_unused=True)))
        (fwd_f, grads_f), (fwd_r, grads_r) = results
        label = f"T={T} {reset} {surrogate} di={decay_input} detach={detach} state={return_state} use={use}"
        for a, e in zip(fwd_f, fwd_r):
            torch.testing.assert_close(a, e, rtol=0, atol=0, equal_nan=True, msg=f"forward {label}")
        for i, (a, e) in enumerate(zip(grads_f, grads_r)):
            assert_same(a, e, dtype, f"gradient {i} {label}")


def test_lif_example_from_the_fuzzing_report():
    """SpikingJelly hard reset, a -inf second input: grad x [0.0625, 0] as the reference (was NaN)."""
    for fn in (snn_cuda.lif, reference.lif):
        x = torch.tensor([[0.3], [-INF]], requires_grad=True)
        spikes, _ = fn(x, 2.0, 1.0, convention="spikingjelly", reset="hard")
        (g,) = torch.autograd.grad(spikes.sum(), x)
        torch.testing.assert_close(g, torch.tensor([[0.0625], [0.0]]), rtol=1e-3, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_parameter_gradients_accumulate_in_float32(dtype):
    """A float32 penalty learnt on float16 input whose state overflows float16 (not float32): its
    gradient is the float32-accumulating reference's, finite (it was -inf: the backward read the
    float16-rounded outputs back)."""
    x = torch.tensor([[0.5], [0.2], [0.9]], dtype=dtype)
    results = []
    for fn in (snn_cuda.spiking_recurrence, reference.spiking_recurrence):
        p = torch.tensor([-1.0], requires_grad=True)
        states, outputs = fn(x, 1.05, 1e-3, p, delay=False)
        (g,) = torch.autograd.grad(states.float().sum() + outputs.float().sum(), p)
        results.append((states, outputs, g))
    (s_f, o_f, g_f), (s_r, o_r, g_r) = results
    if dtype == torch.float16:
        assert torch.isinf(s_f[1:]).all(), "the case must overflow float16"
    assert torch.isfinite(g_f).all()
    torch.testing.assert_close(g_f, g_r, rtol=1e-6, atol=0)
    torch.testing.assert_close(s_f, s_r, rtol=0, atol=0)
    torch.testing.assert_close(o_f, o_r, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_forward_is_the_same_with_and_without_learnable_parameters(dtype):
    """The float32 detour taken for parameter gradients rounds each result once, as the half kernel
    does: the forward is bit for bit the same either way, and so is the input's gradient."""
    g = torch.Generator().manual_seed(3)
    x0 = (torch.randn(16, 4, 32, generator=g) * 1.5).to(dtype)
    w = torch.randn(16, 4, 32, generator=g).to(dtype)
    results = []
    for learn in (False, True):
        x = x0.clone().requires_grad_()
        threshold = torch.full((32,), 1.0, requires_grad=learn)
        states, outputs = snn_cuda.spiking_recurrence(x, 0.9, threshold, 1.5, delay=False)
        (outputs * w).sum().backward()
        results.append((states, outputs, x.grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_lif_backward_with_no_gradient_given_is_zero(convention):
    """The registered backward called with no upstream gradient at all (autograd never does; a
    direct caller may): every gradient is 0, also on infinite and NaN membranes, where forming the
    terms would give 0 * inf = NaN."""
    x = torch.tensor([[0.3, INF, -INF, NAN], [1.7, 0.3, INF, 0.2]], dtype=torch.float64)
    membrane = x.clone()
    p = torch.ones(4, dtype=torch.float64)
    tau = p * 2
    for decay_input in (True, False):
        grads = torch.ops.snn_cuda.lif_bwd(
            None, None, None, membrane, x[0], x, tau if convention == "spikingjelly" else p * 0.9,
            p, p * 0, convention, "hard", decay_input, False, "atan", 2.0, True, True,
        )
        for g in grads:
            assert torch.equal(g, torch.zeros_like(g)), (convention, decay_input, grads)
