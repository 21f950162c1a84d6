"""The adaptive LIF neuron in its common discrete form (neuron_fwd / neuron_bwd model "alif"):
snn_cuda.alif against the plain reference loop (no installed library ships this neuron, so the
reference is the oracle): forward equal, every gradient to 1e-12 in float64 with every surrogate,
each output alone, the non-finite rule, lower precisions, both CPU flavours, opcheck,
torch.compile, bad arguments, and the ALIF module (sequence vs steps, learnable constants,
state_dict)."""

from __future__ import annotations

import itertools

import pytest
import torch

import snn_cuda
from snn_cuda import reference

from helpers import SURROGATES, assert_nonfinite_match, assert_spikes_and_resets, rel_err

INF = float("inf")
ALIF = (snn_cuda.alif, reference.alif)
NAMES = ("alpha", "rho", "beta", "threshold")


def draw(shape, dtype, seed):
    """Inputs and constants under which neurons fire, adapt and fire again many times."""
    g = torch.Generator().manual_seed(seed)
    H = shape[-1]
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2.0 + 1.5).to(dtype)
    constants = dict(
        alpha=torch.rand(H, generator=g, dtype=torch.float64) * 0.3 + 0.6,
        rho=torch.rand(H, generator=g, dtype=torch.float64) * 0.2 + 0.75,
        beta=torch.rand(H, generator=g, dtype=torch.float64) * 1.5 + 0.2,
        threshold=torch.rand(H, generator=g, dtype=torch.float64) * 0.3 + 0.2,
    )
    initial = ((torch.randn(shape[1:], generator=g, dtype=torch.float64) * 0.3).to(dtype),
               torch.rand(shape[1:], generator=g, dtype=torch.float64).to(dtype),
               (torch.rand(shape[1:], generator=g) > 0.5).to(dtype))
    weights = torch.randn((6, *shape), generator=g, dtype=torch.float64).to(dtype)
    return x, constants, initial, weights


def run(fn, x, constants, initial, weights, use=None, **options):
    """Forward and the gradients of a weighted sum of the outputs (rows, then the last v, a, z)."""
    x = x.clone().requires_grad_()
    acc = snn_cuda.ops.accumulation_dtype(x.dtype)
    consts = {n: constants[n].to(acc).clone().requires_grad_() for n in NAMES}
    init = [None if s is None else s.clone().requires_grad_() for s in initial]
    spikes, v, a, last = fn(x, **consts, initial=tuple(init), return_state=True, **options)
    outputs = (spikes, v, a, *last)
    use = range(6) if use is None else use
    loss = sum((outputs[k] * (weights[k] if k < 3 else weights[k][0])).sum() for k in use)
    wanted = [x, *consts.values(), *(s for s in init if s is not None)]
    return outputs, torch.autograd.grad(loss, wanted, allow_unused=True)


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("with_initial", [False, True])
def test_alif_matches_reference_float64(surrogate, with_initial):
    x, constants, initial, weights = draw((41, 3, 11), torch.float64, 11)
    initial = initial if with_initial else (None, None, None)
    (fwd, grads), (fwd_r, grads_r) = (run(fn, x, constants, initial, weights, surrogate=surrogate)
                                      for fn in ALIF)
    for a, e in zip(fwd, fwd_r):
        assert a.dtype == e.dtype == torch.float64 and torch.equal(a, e)
    assert_spikes_and_resets(fwd[0], min_rate=0.02, min_resets=10)
    assert (fwd[2] > 0.2).any(), "the threshold must adapt"
    for k, (a, e) in enumerate(zip(grads, grads_r)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=f"gradient {k}")
        assert a.abs().max() > 0, k


def test_alif_each_output_alone_and_nonfinite_match_reference():
    x, constants, initial, weights = draw((23, 2, 7), torch.float64, 12)
    for use in [(k,) for k in range(6)]:
        (_, grads), (_, grads_r) = (run(fn, x, constants, initial, weights, use=use) for fn in ALIF)
        for k, (a, e) in enumerate(zip(grads, grads_r)):
            if e is None:
                assert a is None or not a.any(), (use, k)
            else:
                torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=f"{use} gradient {k}")
    # Every sequence of three inputs out of finite values and +-inf, each output the loss alone.
    values = torch.tensor([0.3, 1.7, INF, -INF], dtype=torch.float64)
    x = torch.stack([torch.stack(seq) for seq in itertools.product(values, repeat=3)], dim=1)
    H = x.shape[1]
    for use in range(6):
        results = []
        for fn in ALIF:
            xx = x.clone().requires_grad_()
            consts = [torch.full((H,), v, dtype=torch.float64, requires_grad=True)
                      for v in (0.8, 0.9, 1.5, 0.5)]
            *rows, last = fn(xx, *consts, return_state=True)
            outputs = (*rows, *last)
            results.append((outputs, torch.autograd.grad(outputs[use].sum(), (xx, *consts),
                                                         allow_unused=True)))
        assert_nonfinite_match(results, use)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_alif_lower_precisions_lane_loops_and_opcheck(dtype):
    x, constants, initial, weights = draw((29, 2, 9), dtype, 13)
    (fwd, grads), (fwd_r, grads_r) = (run(fn, x, constants, initial, weights) for fn in ALIF)
    for a, e in zip(fwd, fwd_r):
        assert a.dtype == dtype and torch.equal(a, e)
    for k, (a, e) in enumerate(zip(grads, grads_r)):
        assert rel_err(a, e) <= (1e-5 if dtype == torch.float32 else 1e-2), k
    if dtype != torch.float32:
        return
    with snn_cuda.ops.gpu_lane_loops():
        lanes = run(ALIF[0], x, constants, initial, weights)
    for a, e in zip(fwd + grads, lanes[0] + lanes[1]):
        assert torch.equal(a, e)
    x, c, initial, _ = draw((6, 2, 3), torch.float64, 14)
    constants = list(c.values())
    args = ("alif", "subtract", x, [initial[0], None, initial[2]], constants, 0)
    torch.library.opcheck(torch.ops.snn_cuda.neuron_fwd.default, args)
    rows, states = torch.ops.snn_cuda.neuron_fwd(*args)
    torch.library.opcheck(
        torch.ops.snn_cuda.neuron_bwd.default,
        ("alif", "subtract", [torch.ones_like(r) for r in rows], [None, None, torch.ones_like(states[2])],
         [rows[1], rows[2], rows[0]], [initial[0], None, initial[2]], x, constants, 0, "atan", 2.0, 15),
    )


def test_alif_compiles():
    x, c, _, _ = draw((12, 3, 5), torch.float32, 33)
    constants = [v.float() for v in c.values()]

    def f(x):
        return snn_cuda.alif(x, *constants, return_state=True)

    out, expected = torch.compile(f, fullgraph=True)(x), f(x)
    for a, e in zip(out[:3] + out[3], expected[:3] + expected[3]):
        assert torch.equal(a, e)
    assert out[0].any()


def test_alif_bad_arguments():
    x = torch.randn(3, 2, 4)
    with pytest.raises(TypeError, match=r"initial must be None or a tuple of 3 states \(v, a, z\)"):
        snn_cuda.alif(x, 0.9, 0.9, initial=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="rho must be finite"):
        snn_cuda.alif(x, 0.9, float("nan"))
    with pytest.raises(ValueError, match=r"beta of shape \(3,\) does not broadcast"):
        snn_cuda.alif(x, 0.9, 0.9, beta=torch.zeros(3))
    with pytest.raises(ValueError, match="unknown surrogate 'relu'"):
        snn_cuda.alif(x, 0.9, 0.9, surrogate="relu")
    with pytest.raises(RuntimeError, match='reset of model "alif" must be "subtract"'):
        torch.ops.snn_cuda.neuron_fwd("alif", "hard", x, [None] * 3, [torch.ones(4)] * 4, 0)
    with pytest.raises(RuntimeError, match="takes the option flags 0 at most, got 2"):
        torch.ops.snn_cuda.neuron_fwd("alif", "subtract", x, [None] * 3, [torch.ones(4)] * 4, 2)
    with pytest.raises(RuntimeError, match='model "alif" takes 4 constants, got 3'):
        torch.ops.snn_cuda.neuron_fwd("alif", "subtract", x, [None] * 3, [torch.ones(4)] * 3, 0)
    rows, _ = torch.ops.snn_cuda.neuron_fwd("alif", "subtract", x, [None] * 3, [torch.ones(4)] * 4, 0)
    with pytest.raises(RuntimeError, match="this gradient needs the forward's input"):
        torch.ops.snn_cuda.neuron_bwd("alif", "subtract", [rows[0], None, None], [None] * 3,
                                      [rows[1], rows[2], rows[0]], [None] * 3, None,
                                      [torch.ones(4)] * 4, 0, "atan", 1.0, 1)
    with pytest.raises(ValueError, match="alpha must be finite"):
        snn_cuda.ALIF(alpha=float("inf"))
    neuron = snn_cuda.ALIF()
    with pytest.raises(ValueError, match="threshold must be finite"):
        neuron.threshold = torch.tensor(float("nan"))
    with pytest.raises(TypeError, match="learn_beta must be True or False, got int 1"):
        snn_cuda.ALIF(learn_beta=1)


@pytest.mark.parametrize("per_neuron", [False, True])
def test_alif_module_sequence_equals_steps_and_reference(per_neuron):
    x, c, _, _ = draw((17, 4, 6), torch.float64, 21)
    pick = (lambda t: t) if per_neuron else (lambda t: float(t[0]))
    neuron = snn_cuda.ALIF(*(pick(c[n]) for n in NAMES), learn_alpha=True, learn_rho=True,
                           learn_beta=True, learn_threshold=True, surrogate="atan").double()
    assert {n for n, _ in neuron.named_parameters()} == set(NAMES)
    spikes, state = neuron(x)
    expected = reference.alif(x, *(getattr(neuron, n) for n in NAMES), surrogate="atan",
                              return_state=True)
    assert torch.equal(spikes, expected[0])
    assert all(torch.equal(s, e) for s, e in zip(state, expected[3]))
    assert spikes.any()
    # Per step, chaining the state, and a sequence split in two, give the same numbers.
    steps, s = [], None
    for x_t in x:
        out, s = neuron.step(x_t, s)
        steps.append(out)
    assert torch.equal(torch.stack(steps), spikes)
    first, mid = neuron(x[:7])
    second, end = neuron(x[7:], mid)
    assert torch.equal(torch.cat([first, second]), spikes)
    assert all(torch.equal(a, b) for a, b in zip(end, state))
    # Gradients reach every constant, also across the split (the state keeps its graph).
    (second.sum() + first.sum() + end[0].sum()).backward()
    assert all(getattr(neuron, n).grad.abs().sum() > 0 for n in NAMES)
    # state_dict round trip (spikes do not depend on the surrogate); a non-finite value is refused.
    other = snn_cuda.ALIF(*(pick(torch.zeros(6)) for _ in NAMES), learn_alpha=True, learn_rho=True,
                          learn_beta=True, learn_threshold=True).double()
    other.load_state_dict(neuron.state_dict())
    with torch.no_grad():
        assert torch.equal(other(x)[0], spikes)
    bad = {k: v.detach().clone() for k, v in neuron.state_dict().items()}
    bad["rho"].fill_(float("nan"))
    with pytest.raises(ValueError, match="rho in the loaded state_dict must be finite"):
        other.load_state_dict(bad)


def test_alif_device_comparison_runs_on_cpu():
    compare_devices("cpu", torch.float32)


def compare_devices(device, dtype):
    x, constants, initial, weights = draw((45, 3, 33), dtype, 34)
    on_cpu = run(ALIF[0], x, constants, initial, weights)
    on_device = run(ALIF[0], x.to(device), {k: v.to(device) for k, v in constants.items()},
                    tuple(s.to(device) for s in initial), weights.to(device))
    for a, e in zip(on_device[0], on_cpu[0]):
        assert torch.equal(a.cpu(), e), dtype
    tol = {torch.float64: 1e-9, torch.float32: 1e-5}.get(dtype, 1e-2)
    for a, e in zip(on_device[1], on_cpu[1]):
        torch.testing.assert_close(a.cpu().double(), e.double(), rtol=tol, atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible: the CUDA kernel cannot run here")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_alif_cuda_matches_cpu(dtype):
    compare_devices("cuda", dtype)
