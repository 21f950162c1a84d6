"""Random cases and comparisons shared by the tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

# Per-dtype tolerances of the fused op against the reference loop run in the same dtype (both
# compute in float64 resp. float32 inside, so forward results agree to rounding):
#   elementwise (atol, rtol) for states, outputs and the excitation gradient;
#   relative L2 error for the parameter gradients (sums over time and batch). In float16 and
#   bfloat16 the fused backward reads the states/outputs it returned (rounded to that dtype) where
#   the reference keeps float32 intermediates, hence the looser parameter bounds.
TOLERANCES = {
    torch.float64: dict(atol=1e-12, rtol=1e-12, param=1e-12),
    torch.float32: dict(atol=1e-5, rtol=1e-5, param=1e-5),
    torch.float16: dict(atol=1e-3, rtol=1e-2, param=2e-2),
    torch.bfloat16: dict(atol=1e-2, rtol=5e-2, param=5e-2),
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
