"""The GPU's flavour of the lane loops, run on the CPU (snn_cuda.ops.gpu_lane_loops): one lane per
call, each chunk of 8 steps loaded into values before its dependent chain, as a GPU thread does.
It must give the block loops' results bit for bit -- forward, every gradient, at every chunk
boundary (T around multiples of 8), every option -- so that the CPU suite covers the staging a GPU
would run. (tests/test_properties.py also draws the flavour.)"""

import itertools

import pytest
import torch

import snn_cuda
from snn_cuda.ops import gpu_lane_loops

from helpers import CONVENTIONS, SURROGATES

LENGTHS = [0, 1, 7, 8, 9, 16, 17, 23]


def run_recurrence(x, w, reset, delay, with_initial):
    x = x.clone().requires_grad_()
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    params = [torch.full((x.shape[-1],), v, dtype=acc, requires_grad=True) for v in (0.9, 1.0, 1.5)]
    initial = (torch.full(x.shape[1:], 0.3, dtype=x.dtype, requires_grad=True)
               if with_initial else None)
    states, outputs = snn_cuda.spiking_recurrence(x, *params, reset=reset, delay=delay, initial=initial)
    leaves = [x, *params] + ([initial] if initial is not None else [])
    if x.shape[0] == 0:
        return [states, outputs]
    grads = torch.autograd.grad((states * w).sum() + (outputs * w).sum(), leaves)
    return [states, outputs, *grads]


def run_lif(x, w, convention, reset, detach_reset, surrogate):
    x = x.clone().requires_grad_()
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    H = x.shape[-1]
    decay = torch.full((H,), 0.9 if convention.startswith("snntorch") else 2.0, dtype=acc, requires_grad=True)
    threshold = torch.full((H,), 1.0, dtype=acc, requires_grad=True)
    initial = torch.full(x.shape[1:], 0.3, dtype=x.dtype, requires_grad=True)
    spikes, membrane, state = snn_cuda.lif(
        x, decay, threshold, convention=convention, reset=reset, reset_value=0.1,
        detach_reset=detach_reset, surrogate=surrogate, initial=initial, return_state=True)
    if x.shape[0] == 0:
        return [spikes, membrane, state]
    loss = (spikes * w).sum() + (membrane * w).sum() + state.sum()
    return [spikes, membrane, state, *torch.autograd.grad(loss, [x, decay, threshold, initial])]


def assert_bitwise(blocks, lanes, label):
    assert len(blocks) == len(lanes)
    for i, (a, b) in enumerate(zip(blocks, lanes)):
        assert torch.equal(a, b), f"{label}: result {i} differs"


def inputs(rng, T, dtype):
    x = (torch.randn(T, 3, 37, generator=rng, dtype=torch.float64) * 0.9 + 0.5).to(dtype)
    w = torch.randn(T, 3, 37, generator=rng, dtype=torch.float64).to(dtype)
    return x, w


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
def test_recurrence_lane_loops_equal_block_loops(rng, dtype):
    for T, reset, delay, with_initial in itertools.product(
        LENGTHS, ("proportional", "subtract"), (True, False), (False, True)
    ):
        if with_initial and delay:
            continue
        x, w = inputs(rng, T, dtype)
        blocks = run_recurrence(x, w, reset, delay, with_initial)
        with gpu_lane_loops():
            lanes = run_recurrence(x, w, reset, delay, with_initial)
        assert_bitwise(blocks, lanes, f"T={T} {reset} delay={delay} initial={with_initial}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_lif_lane_loops_equal_block_loops(rng, dtype, convention):
    resets = ["subtract", "hard"] + (["none"] if convention.startswith("snntorch") else [])
    for T, reset, detach_reset, surrogate in itertools.product(LENGTHS, resets, (True, False), SURROGATES):
        x, w = inputs(rng, T, dtype)
        blocks = run_lif(x, w, convention, reset, detach_reset, surrogate)
        with gpu_lane_loops():
            lanes = run_lif(x, w, convention, reset, detach_reset, surrogate)
        assert_bitwise(blocks, lanes, f"T={T} {reset} detach={detach_reset} {surrogate}")


def test_the_switch_is_scoped():
    assert torch.ops.snn_cuda._set_gpu_lane_loops(False) is False
    with gpu_lane_loops():
        assert torch.ops.snn_cuda._set_gpu_lane_loops(True) is True
    assert torch.ops.snn_cuda._set_gpu_lane_loops(False) is False
