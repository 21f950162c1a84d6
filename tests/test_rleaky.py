"""snnTorch's RLeaky, fused: ``snn_cuda.rleaky`` (one-to-one recurrence, model "snntorch_rleaky")
against the plain reference loop, and ``snn_cuda.RLeaky`` against the installed snnTorch, with
one-to-one (V) and all-to-all (Linear, Conv2d) recurrence, per step and as one sequence."""

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
    scale, offset = (0.4, 0.03) if reset == "none" else (0.7, 0.2)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset).to(dtype)
    beta = torch.rand(H, generator=g, dtype=torch.float64) * 0.4 + 0.5
    V = torch.rand(H, generator=g, dtype=torch.float64) * 0.8 - 0.4
    threshold = torch.rand(H, generator=g, dtype=torch.float64) * 0.6 + 0.7
    initial = ((torch.rand(shape[1:], generator=g, dtype=torch.float64) > 0.5).to(dtype),
               (torch.randn(shape[1:], generator=g, dtype=torch.float64) * 0.4).to(dtype))
    weights = torch.randn((4, *shape), generator=g, dtype=torch.float64).to(dtype)
    return x, (beta, V, threshold), initial, weights


def run(fn, x, constants, initial, weights, use=(0, 1, 2, 3), **options):
    x = x.clone().requires_grad_()
    acc = snn_cuda.ops.accumulation_dtype(x.dtype)
    constants = [c.to(acc).clone().requires_grad_() for c in constants]
    initial = [s.clone().requires_grad_() for s in initial]
    spikes, mem, (spk_last, mem_last) = fn(x, *constants, initial=tuple(initial), return_state=True,
                                           **options)
    outputs = (spikes, mem, spk_last, mem_last)
    loss = sum((outputs[k] * (weights[k] if k < 2 else weights[k][0])).sum() for k in use)
    return outputs, torch.autograd.grad(loss, (x, *constants, *initial), allow_unused=True)


NAMES = ("input", "beta", "V", "threshold", "spk0", "mem0")


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_rleaky_matches_reference_float64(reset, surrogate):
    x, constants, initial, weights = draw((41, 3, 13), torch.float64, 1, reset)
    (fwd, grads), (fwd_r, grads_r) = (run(fn, x, constants, initial, weights, reset=reset,
                                          surrogate=surrogate)
                                      for fn in (snn_cuda.rleaky, reference.rleaky))
    for a, e in zip(fwd, fwd_r):
        assert torch.equal(a, e)
    assert_spikes_and_resets(fwd[0], min_rate=0.02, min_resets=10)
    for name, a, e in zip(NAMES, grads, grads_r):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=name)
        assert a.abs().max() > 0, name


def test_rleaky_each_output_alone_and_nonfinite_match_reference():
    x, constants, initial, weights = draw((23, 2, 7), torch.float64, 2)
    for use in [(k,) for k in range(4)]:
        (_, grads), (_, grads_r) = (run(fn, x, constants, initial, weights, use=use)
                                    for fn in (snn_cuda.rleaky, reference.rleaky))
        for name, a, e in zip(NAMES, grads, grads_r):
            if e is None:
                assert a is None or not a.any(), (use, name)
            else:
                torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=f"{use} {name}")
    values = torch.tensor([0.3, 1.7, INF, -INF], dtype=torch.float64)
    x = torch.stack([torch.stack(seq) for seq in itertools.product(values, repeat=3)], dim=1)
    H = x.shape[1]
    for reset, use in itertools.product(RESETS, range(4)):
        results = []
        for fn in (snn_cuda.rleaky, reference.rleaky):
            xx = x.clone().requires_grad_()
            consts = [torch.full((H,), v, dtype=torch.float64, requires_grad=True) for v in (0.8, 0.5, 1.0)]
            spikes, mem, last = fn(xx, *consts, reset=reset, return_state=True)
            outputs = (spikes, mem, *last)
            results.append((outputs, torch.autograd.grad(outputs[use].sum(), (xx, *consts),
                                                         allow_unused=True)))
        assert_nonfinite_match(results, (reset, use))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_rleaky_lower_precisions_lane_loops_opcheck(dtype):
    x, constants, initial, weights = draw((29, 2, 9), dtype, 3)
    (fwd, grads), (fwd_r, grads_r) = (run(fn, x, constants, initial, weights)
                                      for fn in (snn_cuda.rleaky, reference.rleaky))
    for a, e in zip(fwd, fwd_r):
        assert a.dtype == dtype and torch.equal(a, e)
    for name, a, e in zip(NAMES, grads, grads_r):
        assert rel_err(a, e) <= (1e-5 if dtype == torch.float32 else 1e-2), name
    if dtype != torch.float32:
        return
    with snn_cuda.ops.gpu_lane_loops():
        lanes = run(snn_cuda.rleaky, x, constants, initial, weights)
    for a, e in zip(fwd + grads, lanes[0] + lanes[1]):
        assert torch.equal(a, e)
    x, (beta, V, threshold), (spk0, mem0), _ = draw((6, 2, 3), torch.float64, 4)
    for reset in RESETS:
        args = ("snntorch_rleaky", reset, x, [spk0, mem0], [beta, V, threshold], 0)
        torch.library.opcheck(torch.ops.snn_cuda.neuron_fwd.default, args)
        rows, states = torch.ops.snn_cuda.neuron_fwd(*args)
        torch.library.opcheck(
            torch.ops.snn_cuda.neuron_bwd.default,
            ("snntorch_rleaky", reset, [torch.ones_like(rows[0]), None], [None, torch.ones_like(states[1])],
             list(rows), [spk0, mem0], None, [beta, V, threshold], 0, "atan", 2.0, 7),
        )


# ------------------------------------------------------------------------------------------------
# Against snnTorch's RLeaky. Its spikes are float32 (its spike functions return float32), and the
# recurrence sends the gradient back through them: in float64 the input's gradient is rounded to
# float32 on that path, so float64 is bounded by 1e-6 here (measured ~1e-8), float32 by 1e-5 (1e-3
# for the constants, sums added in another order).


def snntorch_surrogate(name):
    return {"atan": ssur.atan(alpha=2.0), "fast_sigmoid": ssur.fast_sigmoid(slope=6.0),
            "sigmoid": ssur.sigmoid(slope=4.0)}[name]


def make(cls, kind, reset_mechanism, surrogate_name, H, dtype, seed, **extra):
    torch.manual_seed(seed)
    if kind == "one_to_one":
        options = dict(all_to_all=False, V=torch.linspace(-0.4, 0.4, H))
    elif kind == "linear":
        options = dict(linear_features=H)
    else:
        options = dict(conv2d_channels=2, kernel_size=3)
    module = cls(beta=torch.linspace(0.6, 0.9, H) if kind != "conv" else 0.8, threshold=0.8,
                 spike_grad=snntorch_surrogate(surrogate_name), learn_beta=True,
                 learn_threshold=True, reset_mechanism=reset_mechanism, **options, **extra)
    return module.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("kind", ["one_to_one", "linear", "conv"])
@pytest.mark.parametrize("reset_mechanism", RESETS)
@pytest.mark.parametrize("form", ["per_step", "sequence"])
@pytest.mark.parametrize("reset_delay", [True, False], ids=["delayed", "immediate"])
def test_rleaky_matches_snntorch(dtype, kind, reset_mechanism, form, reset_delay):
    if dtype == torch.float64 and kind != "one_to_one":
        pytest.skip("snnTorch's RLeaky cannot run all-to-all in float64: its spikes are float32 and "
                    "its recurrent layer then gets a float32 input and float64 weights")
    T, B = 40, 3
    shape = (T, B, 2, 5, 5) if kind == "conv" else (T, B, 8)
    H = shape[-1] if kind != "conv" else None
    g = torch.Generator().manual_seed(7)
    offset = -0.05 if reset_mechanism == "none" else 0.25
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 0.6 + offset).to(dtype)
    up = [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(2)]
    results = []
    for cls in (snn.RLeaky, snn_cuda.RLeaky):
        extra = {"step_mode": "m"} if cls is snn_cuda.RLeaky and form == "sequence" else {}
        module = make(cls, kind, reset_mechanism, "atan" if kind != "linear" else "fast_sigmoid",
                      H, dtype, seed=3, reset_delay=reset_delay, **extra)
        xx = x.clone().requires_grad_()
        spk, mem = module.reset_mem()
        if cls is snn.RLeaky or form == "per_step":
            rows = []
            for t in range(T):
                spk, mem = module(xx[t], spk, mem)
                rows.append((spk, mem))
            spikes, mems = (torch.stack(r) for r in zip(*rows))
        else:
            spikes, mems = module(xx)
        loss = (spikes * up[0]).sum() + (mems * up[1]).sum()
        params = [p for _, p in sorted(module.named_parameters())]  # V first with one-to-one
        results.append((spikes, mems, torch.autograd.grad(loss, [xx, *params])))
    (p_spk, p_mem, p_grads), (spk, mem, grads) = results
    assert torch.equal(spk, p_spk.to(dtype)), "spikes differ"
    assert torch.equal(mem, p_mem), "membranes differ"
    assert_spikes_and_resets(spk, min_rate=0.02, min_resets=5)
    tol = {torch.float64: 1e-6, torch.float32: 1e-5}[dtype]
    assert len(grads) == len(p_grads)
    for k, (a, e) in enumerate(zip(grads, p_grads)):
        bound = tol if k == 0 else max(tol, 1e-3 if dtype == torch.float32 else tol)
        assert rel_err(a, e) <= bound, f"gradient {k}: {rel_err(a, e):.3e}"
        if kind == "one_to_one" and reset_mechanism == "zero" and reset_delay and k == 1:
            # V's gradient is zero: s_{t-1} = r_t (the same spike), so V * s_{t-1} is only added
            # where the zero reset then removes the whole membrane (b - r * b).
            assert not a.any()
            continue
        assert e.abs().max() > 0, f"gradient {k} is zero: the comparison is vacuous"


def test_rleaky_state_protocol_and_convert():
    torch.manual_seed(2)
    x = torch.rand(20, 3, 6)

    def net(cls):
        torch.manual_seed(5)
        return torch.nn.Sequential(torch.nn.Linear(6, 6),
                                   cls(beta=0.9, all_to_all=False, V=0.5, init_hidden=True))

    peer, ours = net(snn.RLeaky), net(snn_cuda.RLeaky)
    assert isinstance(ours[1], snn.RLeaky)
    assert list(ours.state_dict()) == list(peer.state_dict())
    ours.load_state_dict(peer.state_dict())
    outs, states = [], []
    for model in (peer, ours):
        snn_utils.reset(model)
        outs.append(torch.stack([model(x[t]) for t in range(x.shape[0])]))
        states.append((model[1].spk.clone(), model[1].mem.clone()))
    assert torch.equal(outs[0], outs[1]) and 0 < outs[0].mean() < 1
    assert all(torch.equal(a, e) for a, e in zip(*states))
    snn_cuda.RLeaky.detach_hidden()
    assert not ours[1].mem.requires_grad
    snn_utils.reset(ours)
    assert torch.equal(snn_cuda.run_sequence(ours, x), outs[1])
    converted = snn_cuda.convert(net(snn.RLeaky))
    assert type(converted[1]).__name__ == "RLeaky" and isinstance(converted[1], snn_cuda.RLeaky)
    linear = snn.RLeaky(beta=0.9, linear_features=6)
    converted = snn_cuda.convert(torch.nn.Sequential(linear))[0]
    assert converted.recurrent is linear.recurrent
    spk, mem = linear.reset_mem()
    spk2, mem2 = converted.reset_mem()
    for t in range(5):
        spk, mem = linear(x[t] * 3, spk, mem)
        spk2, mem2 = converted(x[t] * 3, spk2, mem2)
        assert torch.equal(spk, spk2) and torch.equal(mem, mem2)


def test_rleaky_bad_arguments():
    with pytest.raises(TypeError, match="requires either `linear_features`"):
        snn_cuda.RLeaky(beta=0.9)
    with pytest.raises(TypeError, match="none of `linear_features`"):
        snn_cuda.RLeaky(beta=0.9, all_to_all=False, linear_features=4)
    with pytest.raises(ValueError, match="surrogate_disable"):
        snn_cuda.RLeaky(beta=0.9, all_to_all=False, surrogate_disable=True)
    module = snn_cuda.RLeaky(beta=0.9, all_to_all=False)
    with pytest.raises(ValueError, match="graded_spikes_factor must stay 1"):
        module.graded_spikes_factor = torch.tensor(2.0)
    module(torch.randn(2, 4))
    with torch.no_grad():
        module.graded_spikes_factor.fill_(2.0)  # in place: caught at the next call
    for mode in ("s", "m"):
        module.step_mode = mode
        with pytest.raises(ValueError, match="graded_spikes_factor must stay 1"):
            module(torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="V must be finite"):
        snn_cuda.RLeaky(beta=0.9, all_to_all=False, V=float("nan"))
    for fn in (snn_cuda.rleaky, reference.rleaky):  # the oracle checks its options too
        with pytest.raises(ValueError, match='reset must be "subtract", "zero" or "none"'):
            fn(torch.randn(3, 2, 4), 0.9, reset="hard")


# ------------------------------------------------------------------------------------------------
# RSynaptic: Synaptic with the spike fed back into the current (three states).

def draw_rsyn(shape, dtype, seed, reset="subtract"):
    g = torch.Generator().manual_seed(seed)
    H = shape[-1]
    scale, offset = (0.2, 0.01) if reset == "none" else (0.5, 0.08)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset).to(dtype)
    constants = (torch.rand(H, generator=g, dtype=torch.float64) * 0.4 + 0.4,   # alpha
                 torch.rand(H, generator=g, dtype=torch.float64) * 0.4 + 0.5,   # beta
                 torch.rand(H, generator=g, dtype=torch.float64) * 0.6 - 0.3,   # V
                 torch.rand(H, generator=g, dtype=torch.float64) * 0.6 + 0.7)   # threshold
    initial = ((torch.rand(shape[1:], generator=g, dtype=torch.float64) > 0.5).to(dtype),
               (torch.randn(shape[1:], generator=g, dtype=torch.float64) * 0.3).to(dtype),
               (torch.randn(shape[1:], generator=g, dtype=torch.float64) * 0.4).to(dtype))
    weights = torch.randn((6, *shape), generator=g, dtype=torch.float64).to(dtype)
    return x, constants, initial, weights


def run_rsyn(fn, x, constants, initial, weights, use=range(6), **options):
    x = x.clone().requires_grad_()
    acc = snn_cuda.ops.accumulation_dtype(x.dtype)
    constants = [c.to(acc).clone().requires_grad_() for c in constants]
    initial = [s.clone().requires_grad_() for s in initial]
    *rows, last = fn(x, *constants, initial=tuple(initial), return_state=True, **options)
    outputs = (*rows, *last)
    loss = sum((outputs[k] * (weights[k] if k < 3 else weights[k][0])).sum() for k in use)
    return outputs, torch.autograd.grad(loss, (x, *constants, *initial), allow_unused=True)


RSYN = (snn_cuda.rsynaptic, reference.rsynaptic)


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_rsynaptic_matches_reference_float64(reset, surrogate):
    x, constants, initial, weights = draw_rsyn((41, 3, 13), torch.float64, 21, reset)
    (fwd, grads), (fwd_r, grads_r) = (run_rsyn(fn, x, constants, initial, weights, reset=reset,
                                               surrogate=surrogate) for fn in RSYN)
    for a, e in zip(fwd, fwd_r):
        assert torch.equal(a, e)
    assert_spikes_and_resets(fwd[0], min_rate=0.02, min_resets=10)
    for k, (a, e) in enumerate(zip(grads, grads_r)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=f"gradient {k}")
        assert a.abs().max() > 0, k


def test_rsynaptic_each_output_nonfinite_dtypes_opcheck():
    x, constants, initial, weights = draw_rsyn((23, 2, 7), torch.float64, 22)
    for use in [(k,) for k in range(6)]:
        (_, grads), (_, grads_r) = (run_rsyn(fn, x, constants, initial, weights, use=use) for fn in RSYN)
        for k, (a, e) in enumerate(zip(grads, grads_r)):
            if e is None:
                assert a is None or not a.any(), (use, k)
            else:
                torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=f"{use} gradient {k}")
    values = torch.tensor([0.3, 1.7, INF, -INF], dtype=torch.float64)
    xs = torch.stack([torch.stack(seq) for seq in itertools.product(values, repeat=3)], dim=1)
    H = xs.shape[1]
    for reset, use in itertools.product(RESETS, range(6)):
        results = []
        for fn in RSYN:
            xx = xs.clone().requires_grad_()
            consts = [torch.full((H,), v, dtype=torch.float64, requires_grad=True)
                      for v in (0.5, 0.8, 0.5, 1.0)]
            *rows, last = fn(xx, *consts, reset=reset, return_state=True)
            outputs = (*rows, *last)
            results.append((outputs, torch.autograd.grad(outputs[use].sum(), (xx, *consts),
                                                         allow_unused=True)))
        assert_nonfinite_match(results, (reset, use))
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x, constants, initial, weights = draw_rsyn((29, 2, 9), dtype, 23)
        (fwd, grads), (fwd_r, grads_r) = (run_rsyn(fn, x, constants, initial, weights) for fn in RSYN)
        for a, e in zip(fwd, fwd_r):
            assert a.dtype == dtype and torch.equal(a, e)
        for a, e in zip(grads, grads_r):
            assert rel_err(a, e) <= (1e-5 if dtype == torch.float32 else 1e-2)
    with snn_cuda.ops.gpu_lane_loops():
        lanes = run_rsyn(RSYN[0], x, constants, initial, weights)
    blocks = run_rsyn(RSYN[0], x, constants, initial, weights)
    for a, e in zip(blocks[0] + blocks[1], lanes[0] + lanes[1]):
        assert torch.equal(a, e)
    x, constants, initial, _ = draw_rsyn((6, 2, 3), torch.float64, 24)
    args = ("snntorch_rsynaptic", "zero", x, list(initial), list(constants), 0)
    torch.library.opcheck(torch.ops.snn_cuda.neuron_fwd.default, args)
    rows, states = torch.ops.snn_cuda.neuron_fwd(*args)
    torch.library.opcheck(
        torch.ops.snn_cuda.neuron_bwd.default,
        ("snntorch_rsynaptic", "zero", [torch.ones_like(rows[0]), None, rows[2]], [None, None, states[2]],
         list(rows), list(initial), None, list(constants), 0, "atan", 2.0, 15),
    )


def run_rsynaptic(module, x, per_step):
    """(spikes, syn, mem) over x [T, ...]: called once per step with the states passed along
    (snnTorch's protocol) or, for ours in step_mode="m", once on the sequence."""
    if not per_step:
        return list(module(x))
    spk, syn, mem = module.reset_mem()
    rows = []
    for x_t in x:
        spk, syn, mem = module(x_t, spk, syn, mem)
        rows.append((spk, syn, mem))
    return [torch.stack(r) for r in zip(*rows)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("kind", ["one_to_one", "linear"])
@pytest.mark.parametrize("reset_mechanism", RESETS)
@pytest.mark.parametrize("form", ["per_step", "sequence"])
def test_rsynaptic_matches_snntorch(dtype, kind, reset_mechanism, form):
    if dtype == torch.float64 and kind != "one_to_one":
        pytest.skip("snnTorch's RSynaptic cannot run all-to-all in float64 (float32 spikes meet "
                    "float64 weights)")
    T, B, H = 40, 3, 8
    g = torch.Generator().manual_seed(9)
    offset = 0.0 if reset_mechanism == "none" else 0.1
    x = (torch.randn(T, B, H, generator=g, dtype=torch.float64) * 0.4 + offset).to(dtype)
    up = [torch.randn(T, B, H, generator=g, dtype=torch.float64).to(dtype) for _ in range(3)]
    results = []
    for cls in (snn.RSynaptic, snn_cuda.RSynaptic):
        torch.manual_seed(3)
        options = (dict(all_to_all=False, V=torch.linspace(-0.3, 0.3, H)) if kind == "one_to_one"
                   else dict(linear_features=H))
        extra = {"step_mode": "m"} if cls is snn_cuda.RSynaptic and form == "sequence" else {}
        module = cls(alpha=torch.linspace(0.5, 0.8, H), beta=torch.linspace(0.6, 0.9, H),
                     threshold=0.8, learn_alpha=True, learn_beta=True, learn_threshold=True,
                     reset_mechanism=reset_mechanism, **options, **extra).to(dtype)
        xx = x.clone().requires_grad_()
        outs = run_rsynaptic(module, xx, cls is snn.RSynaptic or form == "per_step")
        loss = sum((o * u).sum() for o, u in zip(outs, up))
        params = [p for _, p in sorted(module.named_parameters())]
        results.append((outs, torch.autograd.grad(loss, [xx, *params])))
    (p_outs, p_grads), (outs, grads) = results
    assert torch.equal(outs[0], p_outs[0].to(dtype)), "spikes differ"
    for a, e in zip(outs[1:], p_outs[1:]):
        assert torch.equal(a, e)
    assert_spikes_and_resets(outs[0], min_rate=0.02, min_resets=5)
    tol = {torch.float64: 1e-6, torch.float32: 1e-5}[dtype]
    for k, (a, e) in enumerate(zip(grads, p_grads)):
        bound = tol if k == 0 else max(tol, 1e-3 if dtype == torch.float32 else tol)
        assert rel_err(a, e) <= bound, f"gradient {k}: {rel_err(a, e):.3e}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("kind", ["one_to_one", "linear"])
@pytest.mark.parametrize("reset_mechanism", RESETS)
@pytest.mark.parametrize("form", ["per_step", "sequence"])
def test_rsynaptic_immediate_reset_matches_snntorch_synaptic(dtype, kind, reset_mechanism, form):
    """RSynaptic(reset_delay=False). snnTorch 1.0's own cannot run (see the class's docstring), so
    the oracle is snnTorch's pieces: its Synaptic(reset_delay=False) fed x_t + recurrent(s_{t-1}),
    with the same recurrent layer (RSynaptic's state function is Synaptic's with that input)."""
    if dtype == torch.float64 and kind != "one_to_one":
        pytest.skip("snnTorch's spikes are float32; an all-to-all layer in float64 cannot take them")
    T, B, H = 40, 3, 8
    g = torch.Generator().manual_seed(19)
    offset = 0.0 if reset_mechanism == "none" else 0.1
    x = (torch.randn(T, B, H, generator=g, dtype=torch.float64) * 0.4 + offset).to(dtype)
    up = [torch.randn(T, B, H, generator=g, dtype=torch.float64).to(dtype) for _ in range(3)]
    constants = dict(alpha=torch.linspace(0.5, 0.8, H), beta=torch.linspace(0.6, 0.9, H),
                     threshold=0.8, learn_alpha=True, learn_beta=True, learn_threshold=True,
                     reset_mechanism=reset_mechanism, reset_delay=False)
    options = (dict(all_to_all=False, V=torch.linspace(-0.3, 0.3, H)) if kind == "one_to_one"
               else dict(linear_features=H))
    torch.manual_seed(3)
    extra = {"step_mode": "m"} if form == "sequence" else {}
    ours = snn_cuda.RSynaptic(**constants, **options, **extra).to(dtype)
    peer = snn.Synaptic(**constants).to(dtype)
    recurrent = ours.recurrent  # the same layer (and weights) in both runs
    results = []
    for run in ("peer", "ours"):
        xx = x.clone().requires_grad_()
        if run == "peer":
            spk = torch.zeros(B, H, dtype=dtype)
            syn, mem = peer.reset_mem()
            rows = []
            for t in range(T):
                spk, syn, mem = peer(xx[t] + recurrent(spk.to(dtype)), syn, mem)
                rows.append((spk.to(dtype), syn, mem))
            outs = [torch.stack(r) for r in zip(*rows)]
            params = [peer.alpha, peer.beta, peer.threshold]
        else:
            outs = run_rsynaptic(ours, xx, form == "per_step")
            params = [ours.alpha, ours.beta, ours.threshold]
        loss = sum((o * u).sum() for o, u in zip(outs, up))
        results.append((outs, torch.autograd.grad(loss, [xx, *params, *recurrent.parameters()])))
    (p_outs, p_grads), (outs, grads) = results
    # The input and the recurrent term are added in another order here ((alpha syn + x) + V s
    # against alpha syn + (x + V s)): states agree to rounding, spikes exactly.
    assert torch.equal(outs[0], p_outs[0]), "spikes differ"
    state_tol = {torch.float64: 1e-12, torch.float32: 1e-5}[dtype]
    for a, e in zip(outs[1:], p_outs[1:]):
        assert rel_err(a, e) <= state_tol
    assert_spikes_and_resets(outs[0], min_rate=0.02, min_resets=5)
    tol = {torch.float64: 1e-6, torch.float32: 1e-5}[dtype]
    for k, (a, e) in enumerate(zip(grads, p_grads)):
        bound = tol if k == 0 else max(tol, 1e-3 if dtype == torch.float32 else tol)
        assert rel_err(a, e) <= bound, f"gradient {k}: {rel_err(a, e):.3e}"
        assert e.abs().max() > 0, f"gradient {k} is zero: the comparison is vacuous"
    # The immediate reset is what this case tests: the delayed one gives other membranes.
    if reset_mechanism != "none":
        ours.reset_delay = True
        ours.reset_mem()
        assert not torch.equal(torch.stack([ours(x[t])[2] for t in range(T)]), outs[2])


def test_rsynaptic_state_dict_convert_and_bad_arguments():
    peer = snn.RSynaptic(alpha=0.8, beta=0.9, all_to_all=False, V=0.5)
    ours = snn_cuda.RSynaptic(alpha=0.8, beta=0.9, all_to_all=False, V=0.5)
    assert list(ours.state_dict()) == list(peer.state_dict())
    converted = snn_cuda.convert(torch.nn.Sequential(snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=4)))[0]
    assert type(converted).__name__ == "RSynaptic" and isinstance(converted, snn_cuda.RSynaptic)
    with pytest.raises(TypeError, match="RSynaptic expects 1 input argument"):
        snn_cuda.RSynaptic(alpha=0.8, beta=0.9, all_to_all=False, init_hidden=True)(
            torch.randn(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="alpha must be finite"):
        snn_cuda.RSynaptic(alpha=float("nan"), beta=0.9, all_to_all=False)


def test_rleaky_and_rsynaptic_compile():
    x, constants, initial, _ = draw((12, 3, 5), torch.float32, 31)
    beta, V, threshold = (c.float() for c in constants)

    def f(x, spk0, mem0):
        return snn_cuda.rleaky(x, beta, V, threshold, initial=(spk0, mem0), return_state=True)

    out, expected = torch.compile(f, fullgraph=True)(x, *initial), f(x, *initial)
    for a, e in zip(out[:2] + out[2], expected[:2] + expected[2]):
        assert torch.equal(a, e)
    module = snn_cuda.RSynaptic(alpha=0.8, beta=0.9, all_to_all=False, V=0.3, step_mode="m")
    whole = torch.compile(module, fullgraph=True)(x * 2)
    stepper = snn_cuda.RSynaptic(alpha=0.8, beta=0.9, all_to_all=False, V=0.3)
    per_step = [torch.stack(o) for o in zip(*(stepper(x[t] * 2) for t in range(x.shape[0])))]
    for a, e in zip(whole, per_step):
        assert torch.equal(a, e)
    assert whole[0].any()


def compare_devices(device, dtype, model):
    fns = {"rleaky": (snn_cuda.rleaky, draw, run), "rsynaptic": (snn_cuda.rsynaptic, draw_rsyn, run_rsyn)}
    fn, drawer, runner = fns[model]
    x, constants, initial, weights = drawer((45, 3, 33), dtype, 32)
    on_cpu = runner(fn, x, constants, initial, weights)
    on_device = runner(fn, x.to(device), [c.to(device) for c in constants],
                       [s.to(device) for s in initial], weights.to(device))
    for a, e in zip(on_device[0], on_cpu[0]):
        assert torch.equal(a.cpu(), e), (dtype, model)
    tol = {torch.float64: 1e-9, torch.float32: 1e-5}.get(dtype, 1e-2)
    for a, e in zip(on_device[1], on_cpu[1]):
        torch.testing.assert_close(a.cpu().double(), e.double(), rtol=tol, atol=tol)


def test_rleaky_device_comparison_runs_on_cpu():
    compare_devices("cpu", torch.float32, "rleaky")
    compare_devices("cpu", torch.float32, "rsynaptic")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible: the CUDA kernel cannot run here")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("model", ["rleaky", "rsynaptic"])
def test_rleaky_cuda_matches_cpu(dtype, model):
    compare_devices("cuda", dtype, model)
