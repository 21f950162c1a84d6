"""Random cases and comparisons shared by the tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

# Per-dtype tolerances of the fused op against the reference loop run in the same dtype (both
# compute in float64 resp. float32 inside, so forward results agree to rounding):
#   elementwise (atol, rtol) for states, outputs and the excitation gradient;
#   relative L2 error for the parameter gradients (sums over time and batch). In float16 and
#   bfloat16 a learnable parameter makes the fused op keep its float32 states for the backward, as
#   the reference keeps float32 intermediates, so parameter gradients agree to float32 rounding
#   (they were 2e-2 / 5e-2 apart while the backward read the rounded states back).
TOLERANCES = {
    torch.float64: dict(atol=1e-12, rtol=1e-12, param=1e-12),
    torch.float32: dict(atol=1e-5, rtol=1e-5, param=1e-5),
    torch.float16: dict(atol=1e-3, rtol=1e-2, param=1e-4),
    torch.bfloat16: dict(atol=1e-2, rtol=5e-2, param=1e-4),
}


@dataclass
class Case:
    excitation: torch.Tensor
    decay: torch.Tensor
    threshold: torch.Tensor
    penalty: torch.Tensor


def rand_uniform(shape, low, high, generator, dtype=torch.float64):
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=dtype)


def random_case(
    generator: torch.Generator,
    T: int,
    batch: Sequence[int],
    H: int,
    dtype=torch.float64,
    device="cpu",
) -> Case:
    """Excitation and per-neuron parameters drawn so that neurons fire, reset and fire again."""
    shape = (T, *batch, H)
    excitation = torch.randn(shape, generator=generator, dtype=torch.float64) * 1.2 + 0.5
    decay = rand_uniform((H,), 0.5, 0.98, generator)
    threshold = rand_uniform((H,), 0.5, 1.5, generator)
    # penalty / threshold in [0.2, 1.9] (the seed's is 1.5): the proportional reset multiplies the
    # gradient by (1 - penalty / threshold) at each spike, which then stays within [-0.9, 0.8].
    penalty = threshold * rand_uniform((H,), 0.2, 1.9, generator)
    to = dict(device=device)
    return Case(
        excitation.to(dtype=dtype, **to),
        decay.to(**to),
        threshold.to(**to),
        penalty.to(**to),
    )


def random_shape(generator: torch.Generator, kind: str):
    """(T, batch, H) for a named kind of case; T, batch and H are drawn fresh."""
    def randint(low, high):
        return int(torch.randint(low, high + 1, (1,), generator=generator))

    if kind == "T1":
        return 1, (randint(1, 6),), randint(1, 9)
    # Long enough, and with enough lanes, that some lane fires at least twice (the reset is tested)
    # with overwhelming probability: a lane fires about once in five steps here.
    if kind == "nobatch":
        return 2 * randint(15, 60) + 1, (), randint(4, 40)
    if kind == "batch":
        return 2 * randint(15, 150) + 1, (randint(2, 9),), randint(3, 37)
    if kind == "multibatch":
        return randint(30, 80), (randint(2, 4), randint(1, 5)), randint(2, 13)
    raise ValueError(kind)


def assert_fires_and_resets(outputs: torch.Tensor, delay: bool) -> None:
    """The case is only a test of the reset if neurons fire, and some fire more than once."""
    fired = (outputs.double() > 0)
    fraction = fired.float().mean().item()
    assert 0.0 < fraction < 1.0, f"degenerate case: fraction of (step, lane) that fired = {fraction}"
    if outputs.shape[0] >= 3 + int(delay):
        spikes_per_lane = fired.reshape(outputs.shape[0], -1).sum(0)
        assert spikes_per_lane.max().item() >= 2, "no lane fired twice: the reset went untested"


def assert_close(actual, expected, dtype, what: str, atol=None, rtol=None):
    tol = TOLERANCES[dtype]
    atol = tol["atol"] if atol is None else atol
    rtol = tol["rtol"] if rtol is None else rtol
    a, e = actual.double(), expected.double()
    diff = (a - e).abs()
    bound = atol + rtol * e.abs()
    bad = ~((diff <= bound) | (a == e) | (torch.isnan(a) & torch.isnan(e)))
    if bad.any():
        raise AssertionError(
            f"{what} ({dtype}): {int(bad.sum())} of {a.numel()} elements differ beyond "
            f"atol={atol}, rtol={rtol}; max abs diff {diff[bad].max().item():.3e}, "
            f"mean abs diff {diff.mean().item():.3e}, at index {bad.nonzero()[0].tolist()}"
        )


def assert_param_grad_close(actual, expected, dtype, what: str):
    tol = TOLERANCES[dtype]["param"]
    a, e = actual.double(), expected.double()
    if dtype == torch.float64:
        # Relative to the gradient's size, with an absolute floor for gradients that are ~0.
        err = (a - e).abs().max().item() / max(e.abs().max().item(), 1.0)
    else:
        err = (a - e).norm().item() / max(e.norm().item(), 1e-30)
    assert err <= tol, (
        f"{what} ({dtype}): relative error {err:.3e} > {tol}; max abs diff "
        f"{(a - e).abs().max().item():.3e}"
    )


def grads(outputs, inputs: Sequence[Optional[torch.Tensor]], upstream):
    """Gradients of sum(out * upstream) with respect to the inputs that require grad."""
    loss = sum((o * u).sum() for o, u in zip(outputs, upstream) if u is not None)
    wanted = [x for x in inputs if x is not None and x.requires_grad]
    if not loss.requires_grad:  # e.g. the reference's delayed outputs at T = 1: constant zeros
        return tuple(torch.zeros_like(x) for x in wanted)
    result = torch.autograd.grad(loss, wanted, allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(wanted, result))


# ------------------------------------------------------------------------------------------------
# Binary-spike LIF (snn_cuda.lif)

# snntorch_now: snnTorch's Leaky with reset_delay=False (the spike resets in its own step).
CONVENTIONS = ["snntorch", "snntorch_now", "spikingjelly"]
LIF_RESETS = ["subtract", "hard"]
# (convention, reset) pairs the op has: "none" (no reset) is snnTorch's, for its conventions only.
LIF_MODES = ([(c, r) for c in CONVENTIONS for r in LIF_RESETS]
             + [("snntorch", "none"), ("snntorch_now", "none")])
SURROGATES = ["fast_sigmoid", "super_spike", "atan", "sigmoid"]
# Scales drawn so that each surrogate's peak stays <= 1: a non-detached soft reset multiplies the
# gradient by (1 - threshold * sigma'(z)) per spike, which then stays in [-0.4, 1] (no blow-up).
SCALE_RANGE = {
    "fast_sigmoid": (1.0, 25.0),
    "super_spike": (0.3, 1.0),
    "atan": (0.5, 2.0),
    "sigmoid": (1.0, 4.0),
}
# Relative error bounds (max abs diff / max(max |expected|, 1)) of the fused gradients against the
# reference's in the same dtype. The forward must agree exactly in every dtype: both run the same
# float32/float64 operations in the same order and round the membrane to the input dtype each step.
LIF_GRAD_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def randint(rng, low, high):
    return int(torch.randint(low, high + 1, (1,), generator=rng))


def lif_case(rng, convention, dtype=torch.float64, shape=None, device="cpu", reset=None):
    """Inputs and per-neuron parameters under which neurons fire, reset and fire again (with
    reset="none", a small input mean: the membrane sums the input up to x / (1 - beta))."""
    if shape is None:
        shape = (randint(rng, 60, 150), randint(rng, 1, 5), randint(rng, 4, 40))
    T, B, H = shape
    if convention in ("snntorch", "snntorch_now"):
        x = torch.randn(shape, generator=rng, dtype=torch.float64) * 0.8 + (0.03 if reset == "none" else 0.4)
        decay = rand_uniform((H,), 0.5, 0.98, rng)  # beta
    else:
        x = torch.randn(shape, generator=rng, dtype=torch.float64) * 1.2 + 1.0
        decay = rand_uniform((H,), 1.5, 4.0, rng)  # tau
    case = dict(
        input=x.to(dtype),
        decay=decay,
        threshold=rand_uniform((H,), 0.6, 1.4, rng),
        reset_value=rand_uniform((H,), -0.3, 0.3, rng),
        initial=(torch.randn((B, H), generator=rng, dtype=torch.float64) * 0.5).to(dtype),
    )
    return {k: v.to(device) for k, v in case.items()}


def random_surrogate(rng, name):
    from snn_cuda import surrogate

    low, high = SCALE_RANGE[name]
    return surrogate.Surrogate(name, float(rand_uniform((), low, high, rng)))


def run_lif(fn, case, options, grad_names, upstream):
    """fn's (spikes, membrane) and the gradients of sum(spikes * u_s + membrane * u_m) + the final
    state's sum weighted by u_s's first row (so the state output's gradient path is checked too)."""
    leaves = {}
    kwargs = {}
    for name in ("input", "decay", "threshold", "initial"):
        value = case[name].detach().clone()
        if name in grad_names:
            value.requires_grad_()
            leaves[name] = value
        kwargs[name] = value
    spikes, membrane, state = fn(
        kwargs["input"], kwargs["decay"], kwargs["threshold"], initial=kwargs["initial"],
        reset_value=case["reset_value"], return_state=True, **options,
    )
    loss = (spikes * upstream[0]).sum() + (membrane * upstream[1]).sum()
    if spikes.shape[0] > 0:
        loss = loss + (state * upstream[0][0]).sum()
    grads = torch.autograd.grad(loss, list(leaves.values())) if leaves else ()
    return spikes, membrane, dict(zip(leaves, grads))


def rel_err(actual, expected) -> float:
    """max |actual - expected| / max(max |expected|, 1): an error relative to the tensor's scale."""
    a, e = actual.double(), expected.double()
    if e.numel() == 0:
        return 0.0
    return (a - e).abs().max().item() / max(e.abs().max().item(), 1.0)


def assert_rel_close(actual, expected, tol, what):
    err = rel_err(actual, expected)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol}"


def assert_nonfinite_match(results, label):
    """The fused op and the oracle on non-finite inputs: ``results`` is ``[(outputs, grads)]`` of
    the two. Forward values equal (NaN where the oracle has NaN); each gradient with the same NaN
    and inf places and the rest to 1e-12; a gradient the oracle does not form (None) is absent or
    zero in the fused op too."""
    (fwd, grads), (fwd_r, grads_r) = results
    for a, e in zip(fwd, fwd_r):
        torch.testing.assert_close(a, e, rtol=0, atol=0, equal_nan=True, msg=f"{label}")
    for a, e in zip(grads, grads_r):
        if e is None:
            assert a is None or not a.any(), label
            continue
        assert torch.equal(a.isnan(), e.isnan()) and torch.equal(a.isinf(), e.isinf()), label
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, equal_nan=True, msg=f"{label}")


def assert_spikes_and_resets(spikes, min_rate=0.02, min_resets=20):
    """The case only tests the reset if neurons fire, and fire again after resets, many times."""
    rate = spikes.double().mean().item()
    assert min_rate < rate < 0.9, f"degenerate case: spike rate {rate}"
    per_lane = spikes.double().reshape(spikes.shape[0], -1).sum(0)
    assert per_lane.max().item() >= 3, "no lane fired three times: the reset went untested"
    # Every spike but a lane's last is followed by a reset and then more input.
    resets = (per_lane - 1).clamp_min(0).sum().item()
    assert resets >= min_resets, f"only {resets} resets were followed by another spike"


def import_peer(name):
    """A peer library (test dependency) module: skips the test module without it, except where
    SNN_CUDA_REQUIRE_PEERS=1 (CI), where a missing peer is an error."""
    import os

    import pytest

    if os.environ.get("SNN_CUDA_REQUIRE_PEERS") == "1":
        return __import__(name, fromlist=["_"])
    return pytest.importorskip(name)
