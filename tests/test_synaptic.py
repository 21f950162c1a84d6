"""snnTorch's Synaptic neuron, fused (the generic neuron_fwd / neuron_bwd ops): snn_cuda.synaptic
against the plain reference loop (forward equal, every gradient to 1e-12 in float64), gradcheck,
opcheck, torch.compile, both CPU flavours, lower precisions, the non-finite rule, bad arguments; and
snn_cuda.Synaptic against the installed snnTorch in both call forms, with its state protocol."""

from __future__ import annotations

import itertools

import pytest
import torch

import snn_cuda
from snn_cuda import reference

from helpers import (SURROGATES, assert_nonfinite_match, assert_spikes_and_resets, import_peer,
                     rel_err)

snn = import_peer("snntorch")
ssur = import_peer("snntorch.surrogate")
snn_utils = import_peer("snntorch.utils")

RESETS = ["subtract", "zero", "none"]
INF = float("inf")


def draw(shape, dtype, seed, reset="subtract"):
    g = torch.Generator().manual_seed(seed)
    H = shape[-1]
    # Without a reset the membrane sums syn up to x / ((1 - alpha)(1 - beta)): a smaller input.
    scale, offset = (0.15, 0.0) if reset == "none" else (0.6, 0.12)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset).to(dtype)
    alpha = torch.rand(H, generator=g, dtype=torch.float64) * 0.5 + 0.4
    beta = torch.rand(H, generator=g, dtype=torch.float64) * 0.5 + 0.4
    threshold = torch.rand(H, generator=g, dtype=torch.float64) * 0.6 + 0.7
    initial = tuple((torch.randn(shape[1:], generator=g, dtype=torch.float64) * 0.4).to(dtype)
                    for _ in range(2))
    weights = torch.randn((5, *shape), generator=g, dtype=torch.float64).to(dtype)
    return x, (alpha, beta, threshold), initial, weights


def run(fn, x, constants, initial, weights, use=(0, 1, 2, 3, 4), **options):
    """Forward and the gradients of a weighted sum of the outputs named in ``use`` (spikes, syn,
    mem, the last syn, the last mem) with respect to the input, the constants and both initial
    states."""
    x = x.clone().requires_grad_()
    acc = snn_cuda.ops.accumulation_dtype(x.dtype)
    constants = [c.to(acc).clone().requires_grad_() for c in constants]
    initial = [s.clone().requires_grad_() for s in initial]
    spikes, syn, mem, (syn_last, mem_last) = fn(x, *constants, initial=tuple(initial),
                                                return_state=True, **options)
    outputs = (spikes, syn, mem, syn_last, mem_last)
    loss = sum((outputs[i] * (weights[i] if i < 3 else weights[i][0])).sum() for i in use)
    grads = torch.autograd.grad(loss, (x, *constants, *initial), allow_unused=True)
    return outputs, grads


GRAD_NAMES = ("input", "alpha", "beta", "threshold", "syn0", "mem0")


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_synaptic_matches_reference_float64(reset, surrogate):
    x, constants, initial, weights = draw((41, 3, 13), torch.float64, 1, reset)
    (fwd, grads), (fwd_r, grads_r) = (run(fn, x, constants, initial, weights, reset=reset,
                                          surrogate=surrogate)
                                      for fn in (snn_cuda.synaptic, reference.synaptic))
    for a, e in zip(fwd, fwd_r):
        assert a.dtype == e.dtype == torch.float64 and a.shape == e.shape
        assert torch.equal(a, e)
    assert_spikes_and_resets(fwd[0], min_rate=0.02, min_resets=10)
    for name, a, e in zip(GRAD_NAMES, grads, grads_r):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=name)
        assert a.abs().max() > 0, name


@pytest.mark.parametrize("use", [(0,), (1,), (2,), (3,), (4,), (1, 3)], ids=str)
def test_synaptic_each_output_alone_matches_reference(use):
    """Gradients of each output alone: the reach rules (syn reaches the loss at every step, mem
    only through the spikes, the mem rows or the last mem) against autograd's."""
    x, constants, initial, weights = draw((23, 2, 7), torch.float64, 2)
    (fwd, grads), (fwd_r, grads_r) = (run(fn, x, constants, initial, weights, use=use)
                                      for fn in (snn_cuda.synaptic, reference.synaptic))
    for name, a, e in zip(GRAD_NAMES, grads, grads_r):
        if e is None:  # not reached in the reference: ours is zero
            assert a is None or not a.any(), name
        else:
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=f"{name} {use}")


@pytest.mark.parametrize("reset", RESETS)
def test_synaptic_gradcheck(reset):
    """The rows syn and mem and the last states are differentiable away from the threshold's jumps
    (the reset is detached): gradcheck on the kernel itself, float64."""
    x, (alpha, beta, threshold), (syn0, mem0), _ = draw((6, 2, 3), torch.float64, 3, reset)
    inputs = [t.clone().requires_grad_() for t in (x, alpha, beta, threshold, syn0, mem0)]

    def f(x, alpha, beta, threshold, syn0, mem0):
        _, syn, mem, (s, m) = snn_cuda.synaptic(x, alpha, beta, threshold, reset=reset,
                                                initial=(syn0, mem0), return_state=True)
        return syn, mem, s, m

    assert torch.autograd.gradcheck(f, inputs)


def test_synaptic_opcheck():
    x, (alpha, beta, threshold), (syn0, mem0), _ = draw((6, 2, 3), torch.float64, 4)
    for reset in RESETS:
        args = ("snntorch_synaptic", reset, x, [syn0, None], [alpha, beta, threshold], 0)
        torch.library.opcheck(torch.ops.snn_cuda.neuron_fwd.default, args)
        rows, states = torch.ops.snn_cuda.neuron_fwd(*args)
        torch.library.opcheck(
            torch.ops.snn_cuda.neuron_bwd.default,
            ("snntorch_synaptic", reset, [torch.ones_like(rows[0]), None, rows[2] * 0.5],
             [None, torch.ones_like(states[1])], [rows[1], rows[2]], [syn0, None], None,
             [alpha, beta, threshold], 0, "atan", 2.0, 0b101),
        )


@pytest.mark.parametrize("reset", RESETS)
def test_synaptic_gpu_lane_loops_bitwise(reset):
    x, constants, initial, weights = draw((19, 2, 5), torch.float32, 5, reset)
    blocks = run(snn_cuda.synaptic, x, constants, initial, weights, reset=reset)
    with snn_cuda.ops.gpu_lane_loops():
        lanes = run(snn_cuda.synaptic, x, constants, initial, weights, reset=reset)
    for a, e in zip(blocks[0] + blocks[1], lanes[0] + lanes[1]):
        assert torch.equal(a, e)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reset", RESETS)
def test_synaptic_lower_precisions_match_reference(dtype, reset):
    """Same rounding as the reference (syn and mem stored in the input dtype each step): the forward
    equal; gradients to float32 rounding."""
    x, constants, initial, weights = draw((29, 2, 9), dtype, 6, reset)
    (fwd, grads), (fwd_r, grads_r) = (run(fn, x, constants, initial, weights, reset=reset)
                                      for fn in (snn_cuda.synaptic, reference.synaptic))
    for a, e in zip(fwd, fwd_r):
        assert a.dtype == dtype and torch.equal(a, e)
    for name, a, e in zip(GRAD_NAMES, grads, grads_r):
        assert rel_err(a, e) <= (1e-5 if dtype == torch.float32 else 1e-2), name


def test_synaptic_infinite_inputs_match_reference():
    """Every length-3 sequence over {0.3, 1.7, +inf, -inf} as lanes: as the reference, NaN included,
    for each output alone (a value the loss does not reach must not turn 0 * inf into NaN)."""
    values = torch.tensor([0.3, 1.7, INF, -INF], dtype=torch.float64)
    x = torch.stack([torch.stack(seq) for seq in itertools.product(values, repeat=3)], dim=1)
    H = x.shape[1]
    for reset, use in itertools.product(RESETS, range(5)):
        results = []
        for fn in (snn_cuda.synaptic, reference.synaptic):
            xx = x.clone().requires_grad_()
            alpha, beta, threshold = (torch.full((H,), v, dtype=torch.float64, requires_grad=True)
                                      for v in (0.5, 0.8, 1.0))
            spikes, syn, mem, last = fn(xx, alpha, beta, threshold, reset=reset, return_state=True)
            outputs = (spikes, syn, mem) + last
            grads = torch.autograd.grad(outputs[use].sum(), (xx, alpha, beta, threshold),
                                        allow_unused=True)
            results.append((outputs, grads))
        assert_nonfinite_match(results, (reset, use))


def test_synaptic_no_gradient_and_empty_sequences():
    x = torch.randn(0, 2, 3, dtype=torch.float64, requires_grad=True)
    s0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    spikes, syn, mem, (s, m) = snn_cuda.synaptic(x, 0.5, 0.9, initial=(s0, None), return_state=True)
    assert spikes.shape == (0, 2, 3) and torch.equal(s, s0) and not m.any()
    (g,) = torch.autograd.grad(s.sum(), s0)
    assert torch.equal(g, torch.ones_like(s0))
    # Nothing reaches the loss through an output: zero gradients, no NaN from infinite states.
    x = torch.full((4, 1, 2), INF, dtype=torch.float64, requires_grad=True)
    spikes, syn, mem = snn_cuda.synaptic(x, 0.5, 0.9)
    (g,) = torch.autograd.grad((spikes * 0).sum() + syn[:0].sum(), x)
    assert not g.isnan().any()


def test_synaptic_compiles():
    x, (alpha, beta, threshold), (syn0, mem0), _ = draw((12, 3, 5), torch.float32, 7)
    alpha, beta, threshold = (c.float() for c in (alpha, beta, threshold))

    def f(x, syn0, mem0):
        return snn_cuda.synaptic(x, alpha, beta, threshold, initial=(syn0, mem0), return_state=True)

    compiled = torch.compile(f, fullgraph=True)
    xx = x.clone().requires_grad_()
    out, expected = compiled(xx, syn0, mem0), f(x, syn0, mem0)
    for a, e in zip(out[:3] + out[3], expected[:3] + expected[3]):
        assert torch.equal(a, e)
    (g,) = torch.autograd.grad(out[2].sum() + out[0].sum(), xx)
    xx2 = x.clone().requires_grad_()
    again = f(xx2, syn0, mem0)
    (g2,) = torch.autograd.grad(again[2].sum() + again[0].sum(), xx2)
    assert torch.equal(g, g2)
    module = snn_cuda.Synaptic(alpha=0.8, beta=0.9, step_mode="m")
    whole = torch.compile(module, fullgraph=True)(x)
    steps = snn_cuda.Synaptic(alpha=0.8, beta=0.9)
    per_step = [torch.stack(o) for o in zip(*(steps(x[t]) for t in range(x.shape[0])))]
    for a, e in zip(whole, per_step):
        assert torch.equal(a, e)


def test_synaptic_bad_arguments():
    x = torch.randn(3, 2, 4)
    with pytest.raises(ValueError, match='reset must be "subtract", "zero" or "none", got .hard.'):
        snn_cuda.synaptic(x, 0.5, 0.9, reset="hard")
    with pytest.raises(TypeError, match=r"initial must be None or a tuple of 2 states \(syn, mem\)"):
        snn_cuda.synaptic(x, 0.5, 0.9, initial=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"initial must have the shape of one input step"):
        snn_cuda.synaptic(x, 0.5, 0.9, initial=(torch.zeros(2, 5), None))
    with pytest.raises(ValueError, match="alpha must be finite"):
        snn_cuda.synaptic(x, float("nan"), 0.9)
    with pytest.raises(ValueError, match=r"synaptic: beta of shape \(3, 3, 3\) does not broadcast to one step"):
        snn_cuda.synaptic(x, 0.5, torch.ones(3, 3, 3))
    with pytest.raises(RuntimeError, match='model must be "snntorch_synaptic", "snntorch_rleaky", "snntorch_rsynaptic", "norse_lif", "norse_li", "norse_lsnn" or "alif", got "leaky"'):
        torch.ops.snn_cuda.neuron_fwd("leaky", "subtract", x, [None, None], [], 0)
    with pytest.raises(ValueError, match=r"neuron: model must be one of \[.*\], got 'leaky'"):
        snn_cuda.NeuronFunction.apply("leaky", "subtract", 0, "atan", 2.0, x, None, None)
    p = torch.ones(4)
    with pytest.raises(RuntimeError, match='model "snntorch_synaptic" takes 3 constants, got 2'):
        torch.ops.snn_cuda.neuron_fwd("snntorch_synaptic", "subtract", x, [None, None], [p, p], 0)
    with pytest.raises(RuntimeError, match='model "snntorch_synaptic" takes the option flags 0 at most, got 2'):
        torch.ops.snn_cuda.neuron_fwd("snntorch_synaptic", "subtract", x, [None, None], [p, p, p], 2)
    with pytest.raises(RuntimeError, match="takes 2 initial states"):
        torch.ops.snn_cuda.neuron_fwd("snntorch_synaptic", "subtract", x, [None], [p, p, p], 0)
    with pytest.raises(RuntimeError, match=r"must have shape \[H\] = \[4\]"):
        torch.ops.snn_cuda.neuron_fwd("snntorch_synaptic", "zero", x, [None, None],
                                      [p, p, torch.ones(3)], 0)
    rows, _ = torch.ops.snn_cuda.neuron_fwd("snntorch_synaptic", "none", x, [None, None], [p, p, p], 0)
    with pytest.raises(RuntimeError, match="need_constants must be a bit mask of the model's 3"):
        torch.ops.snn_cuda.neuron_bwd("snntorch_synaptic", "none", [None] * 3, [None] * 2,
                                      rows[1:], [None] * 2, None, [p, p, p], 0, "atan", 2.0, 8)
    with pytest.raises(RuntimeError, match="neuron_bwd: model .* takes the option flags 0 at most, got 1"):
        torch.ops.snn_cuda.neuron_bwd("snntorch_synaptic", "none", [None] * 3, [None] * 2,
                                      rows[1:], [None] * 2, None, [p, p, p], 1, "atan", 2.0, 0)
    with pytest.raises(RuntimeError, match="saved rows .one per state., got 1"):
        torch.ops.snn_cuda.neuron_bwd("snntorch_synaptic", "none", [None] * 3, [None] * 2,
                                      rows[1:2], [None] * 2, None, [p, p, p], 0, "atan", 2.0, 0)
    with pytest.raises(ValueError, match="inhibition"):
        snn_cuda.Synaptic(alpha=0.5, beta=0.9, inhibition=True)
    with pytest.raises(ValueError, match="reset_mechanism must be set to either"):
        snn_cuda.Synaptic(alpha=0.5, beta=0.9, reset_mechanism="hard")
    with pytest.raises(ValueError, match="alpha must be finite"):
        snn_cuda.Synaptic(alpha=float("inf"), beta=0.9)
    with pytest.raises(TypeError, match="should not be passed as an argument while `init_hidden=True`"):
        snn_cuda.Synaptic(alpha=0.5, beta=0.9, init_hidden=True)(x[0], torch.zeros(2, 4))


# ------------------------------------------------------------------------------------------------
# Against snnTorch's Synaptic.

# snnTorch's spike functions return float32, so the gradient arriving at a spike is rounded to
# float32: upstream gradients exact in float32 keep its float64 gradients float64-exact (as in
# test_peers). Bounds as there: float64 1e-10 (measured ~1e-15); float32 1e-5, and 1e-3 for a
# constant's gradient (a sum over T x batch terms added in another order).
GRAD_TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def snntorch_surrogate(name):
    return {"atan": ssur.atan(alpha=2.5), "fast_sigmoid": ssur.fast_sigmoid(slope=7.0),
            "sigmoid": ssur.sigmoid(slope=4.0)}[name]


def run_module(module, x, per_step, initial):
    """The module over x: per step (snnTorch's own loop) or as one sequence."""
    syn, mem = initial
    if per_step:
        rows = []
        for t in range(x.shape[0]):
            spk, syn, mem = module(x[t], syn, mem)
            rows.append((spk, syn, mem))
        return [torch.stack(r) for r in zip(*rows)]
    return list(module(x, syn, mem))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("reset_mechanism", RESETS)
@pytest.mark.parametrize("surrogate_name", ["atan", "fast_sigmoid", "sigmoid"])
@pytest.mark.parametrize("form", ["per_step", "sequence", "reset_delay_false"])
def test_synaptic_matches_snntorch(dtype, reset_mechanism, surrogate_name, form):
    T, B, H = 60, 3, 11
    x, (alpha, beta, threshold), initial, weights = draw((T, B, H), dtype, 8, reset_mechanism)
    weights = weights.float().to(dtype)  # float32-exact upstream gradients (see GRAD_TOL)
    results = []
    for cls in (snn.Synaptic, snn_cuda.Synaptic):
        extra = {} if cls is snn.Synaptic or form == "per_step" else {"step_mode": "m"}
        module = cls(alpha=alpha.clone(), beta=beta.clone(), threshold=threshold.clone(),
                     spike_grad=snntorch_surrogate(surrogate_name), learn_alpha=True,
                     learn_beta=True, learn_threshold=True, reset_mechanism=reset_mechanism,
                     reset_delay=form != "reset_delay_false", **extra)
        module = module.to(dtype)
        xx = x.clone().requires_grad_()
        states = [s.clone().requires_grad_() for s in initial]
        per_step = cls is snn.Synaptic or form == "per_step"
        rows = run_module(module, xx, per_step, states)
        loss = sum((r * w).sum() for r, w in zip(rows, weights))
        wanted = [xx, module.alpha, module.beta, module.threshold, *states]
        results.append((rows, torch.autograd.grad(loss, wanted), (module.syn, module.mem)))
    (peer_rows, peer_grads, peer_state), (rows, grads, state) = results
    assert torch.equal(rows[0], peer_rows[0].to(dtype)), "spikes differ"
    for name, a, e in zip(("syn", "mem"), rows[1:], peer_rows[1:]):
        assert a.dtype == e.dtype == dtype and torch.equal(a, e), name
    for a, e in zip(state, peer_state):
        assert torch.equal(a, e), "the state after the sequence differs"
    assert_spikes_and_resets(rows[0], min_rate=0.02, min_resets=10)
    for name, g, pg in zip(GRAD_NAMES, grads, peer_grads):
        tol = GRAD_TOL[dtype]
        if dtype == torch.float32 and name in ("alpha", "beta", "threshold"):
            tol = 1e-3
        if form == "reset_delay_false" and dtype == torch.float64:
            # The immediate reset sends the mem gradient back into snnTorch's float32 spike, which
            # rounds it to float32 (test_dropin's bound for Leaky, 1e-5).
            tol = 1e-5
        assert rel_err(g, pg) <= tol, f"grad {name}: {rel_err(g, pg):.3e}"
        assert pg.abs().max() > 0, f"grad {name} is zero: the comparison is vacuous"


def test_synaptic_state_protocol_matches_snntorch():
    """init_hidden nets called per step, snntorch.utils.reset, detach_hidden, state_dict both ways,
    output=True, and convert()."""
    torch.manual_seed(11)
    x = torch.rand(25, 4, 6)

    def net(cls, **kw):
        torch.manual_seed(3)
        return torch.nn.Sequential(torch.nn.Linear(6, 8), cls(alpha=0.85, beta=0.9, init_hidden=True,
                                                              **kw))

    peer, ours = net(snn.Synaptic), net(snn_cuda.Synaptic)
    assert isinstance(ours[1], snn.Synaptic)
    assert list(ours.state_dict()) == list(peer.state_dict())
    ours.load_state_dict(peer.state_dict())
    peer.load_state_dict(ours.state_dict())
    for rounds in range(2):
        outs, states = [], []
        for model in (peer, ours):
            snn_utils.reset(model)  # (class-wide, as snnTorch's: it zeroes every Synaptic)
            outs.append(torch.stack([model(x[t]) for t in range(x.shape[0])]))
            states.append((model[1].syn.clone(), model[1].mem.clone()))
        assert torch.equal(outs[0], outs[1]) and 0 < outs[0].mean() < 1
        assert all(torch.equal(a, e) for a, e in zip(*states)) and states[0][1].abs().sum() > 0
    snn_utils.reset(peer)
    assert not ours[1].mem.any(), "snnTorch's reset reaches our Synaptic too"
    ours(x[0])
    snn_cuda.Synaptic.detach_hidden()
    assert not ours[1].mem.requires_grad and not ours[1].syn.requires_grad
    # run_sequence continues from the state the loop would use.
    snn_utils.reset(ours)
    whole = snn_cuda.run_sequence(ours, x)
    assert torch.equal(whole, outs[1])
    # output=True returns (spk, syn, mem); convert() swaps snnTorch's for ours with the same numbers.
    peer_out = net(snn.Synaptic, output=True, reset_mechanism="zero")
    converted = snn_cuda.convert(net(snn.Synaptic, output=True, reset_mechanism="zero"))
    assert type(converted[1]).__name__ == "Synaptic" and isinstance(converted[1], snn_cuda.Synaptic)
    snn_utils.reset(peer_out)
    snn_utils.reset(converted)
    for t in range(x.shape[0]):
        for a, e in zip(converted(x[t]), peer_out(x[t])):
            assert torch.equal(a, e.to(a.dtype))
    with pytest.warns(UserWarning, match="Inhibition is an unstable feature"):  # snnTorch's
        inhibiting = snn.Synaptic(alpha=0.5, beta=0.5, inhibition=True)
    with pytest.raises(ValueError, match="inhibition"):
        snn_cuda.convert(torch.nn.Sequential(inhibiting))


def compare_devices(device, dtype, reset, surrogate):
    """The kernel on ``device`` against the CPU kernel: forward bit for bit (no FMA contraction on
    either), gradients to rounding (the sigmoid surrogate's exp differs by an ulp or two)."""
    x, constants, initial, weights = draw((45, 3, 33), dtype, 9, reset)
    on_cpu = run(snn_cuda.synaptic, x, constants, initial, weights, reset=reset, surrogate=surrogate)
    moved = (t.to(device) for t in (x, *constants, *initial, weights))
    x_d, a_d, b_d, t_d, s_d, m_d, w_d = moved
    on_device = run(snn_cuda.synaptic, x_d, (a_d, b_d, t_d), (s_d, m_d), w_d, reset=reset,
                    surrogate=surrogate)
    for a, e in zip(on_device[0], on_cpu[0]):
        assert torch.equal(a.cpu(), e), (dtype, reset, surrogate)
    tol = {torch.float64: 1e-9, torch.float32: 1e-5}.get(dtype, 1e-2)
    for a, e in zip(on_device[1], on_cpu[1]):
        torch.testing.assert_close(a.cpu().double(), e.double(), rtol=tol, atol=tol)


def test_synaptic_device_comparison_runs_on_cpu():
    """The comparison the CUDA test makes, CPU against CPU (so that it is known to run)."""
    compare_devices("cpu", torch.float32, "zero", "sigmoid")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible: the CUDA kernel cannot run here")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reset", RESETS)
def test_synaptic_cuda_matches_cpu(dtype, reset):
    for surrogate in SURROGATES:
        compare_devices("cuda", dtype, reset, surrogate)
