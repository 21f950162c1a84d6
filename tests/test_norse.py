"""Norse's current-based LIF and leaky integrator, fused (neuron_fwd / neuron_bwd models "norse_lif"
and "norse_li"): snn_cuda.norse_lif / norse_li against the plain reference loops (forward equal,
every gradient to 1e-12 in float64), gradcheck, opcheck, torch.compile, both CPU flavours, lower
precisions, the non-finite rule, bad arguments; and snn_cuda.norse.LIF / LIFCell / LI / LICell
against the installed Norse, as sequence modules and as per-step cells."""

from __future__ import annotations

import itertools

import pytest
import torch

import snn_cuda
import snn_cuda.norse as fused
from snn_cuda import reference

from helpers import (SURROGATES, assert_nonfinite_match, assert_spikes_and_resets, import_peer,
                     rel_err)

norse = import_peer("norse.torch")

INF = float("inf")
MODELS = {"lif": (snn_cuda.norse_lif, reference.norse_lif),
          "li": (snn_cuda.norse_li, reference.norse_li)}


def draw(shape, dtype, seed):
    """Input currents and constants in Norse's units (dt = 1 ms, tau_mem_inv ~ 100/s) drawn so
    that neurons fire and reset many times."""
    g = torch.Generator().manual_seed(seed)
    H = shape[-1]
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3.0 + 1.5).to(dtype)
    constants = dict(
        tau_syn_inv=torch.rand(H, generator=g, dtype=torch.float64) * 200 + 100,
        tau_mem_inv=torch.rand(H, generator=g, dtype=torch.float64) * 100 + 50,
        v_leak=torch.rand(H, generator=g, dtype=torch.float64) * 0.2 - 0.1,
        v_th=torch.rand(H, generator=g, dtype=torch.float64) * 0.4 + 0.3,
        v_reset=torch.rand(H, generator=g, dtype=torch.float64) * 0.2 - 0.1,
    )
    initial = tuple((torch.randn(shape[1:], generator=g, dtype=torch.float64) * 0.3).to(dtype)
                    for _ in range(2))
    weights = torch.randn((5, *shape), generator=g, dtype=torch.float64).to(dtype)
    return x, constants, initial, weights


def run(kind, fn, x, constants, initial, weights, use=None, **options):
    """Forward and the gradients of a weighted sum of the outputs (rows, then the last v and i)."""
    x = x.clone().requires_grad_()
    acc = snn_cuda.ops.accumulation_dtype(x.dtype)
    names = ("tau_syn_inv", "tau_mem_inv", "v_leak") + (("v_th", "v_reset") if kind == "lif" else ())
    consts = {n: constants[n].to(acc).clone().requires_grad_() for n in names}
    init = [None if s is None else s.clone().requires_grad_() for s in initial]
    *rows, last = fn(x, **consts, initial=tuple(init), return_state=True, **options)
    outputs = (*rows, *last)
    use = range(len(outputs)) if use is None else use
    loss = sum((outputs[k] * (weights[k] if k < len(rows) else weights[k][0])).sum() for k in use)
    wanted = [x, *consts.values(), *(s for s in init if s is not None)]
    return outputs, torch.autograd.grad(loss, wanted, allow_unused=True)


@pytest.mark.parametrize("kind", ["lif", "li"])
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("with_initial", [True, False])
def test_norse_matches_reference_float64(kind, surrogate, with_initial):
    if kind == "li" and surrogate != "super_spike":
        pytest.skip("the leaky integrator has no spike")
    x, constants, initial, weights = draw((37, 3, 11), torch.float64, 1)
    initial = initial if with_initial else (None, None)
    options = {"surrogate": surrogate} if kind == "lif" else {}
    (fwd, grads), (fwd_r, grads_r) = (run(kind, fn, x, constants, initial, weights, **options)
                                      for fn in MODELS[kind])
    for a, e in zip(fwd, fwd_r):
        assert a.dtype == e.dtype == torch.float64 and torch.equal(a, e)
    if kind == "lif":
        assert_spikes_and_resets(fwd[0], min_rate=0.02, min_resets=10)
    for k, (a, e) in enumerate(zip(grads, grads_r)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=f"gradient {k}")
        assert a.abs().max() > 0, k


@pytest.mark.parametrize("kind", ["lif", "li"])
def test_norse_each_output_alone_matches_reference(kind):
    x, constants, initial, weights = draw((23, 2, 7), torch.float64, 2)
    n = 5 if kind == "lif" else 4
    for use in [(k,) for k in range(n)]:
        (fwd, grads), (fwd_r, grads_r) = (run(kind, fn, x, constants, initial, weights, use=use)
                                          for fn in MODELS[kind])
        for k, (a, e) in enumerate(zip(grads, grads_r)):
            if e is None:
                assert a is None or not a.any(), (use, k)
            else:
                torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=f"{use} gradient {k}")


def test_norse_li_gradcheck():
    """The leaky integrator is differentiable everywhere: gradcheck on the kernel, float64."""
    x, c, (v0, i0), _ = draw((7, 2, 3), torch.float64, 3)
    inputs = [t.clone().requires_grad_() for t in (x, c["tau_syn_inv"], c["tau_mem_inv"],
                                                   c["v_leak"], v0, i0)]

    def f(x, tau_syn_inv, tau_mem_inv, v_leak, v0, i0):
        v, i, (v_last, i_last) = snn_cuda.norse_li(x, tau_syn_inv, tau_mem_inv, v_leak,
                                                   initial=(v0, i0), return_state=True)
        return v, i, v_last, i_last

    assert torch.autograd.gradcheck(f, inputs)


def test_norse_opcheck():
    x, c, (v0, i0), _ = draw((6, 2, 3), torch.float64, 4)
    a, b = 0.001 * c["tau_mem_inv"], -0.001 * c["tau_syn_inv"]
    for model, constants in (("norse_lif", [a, b, c["v_leak"], c["v_th"], c["v_reset"]]),
                             ("norse_li", [a, b, c["v_leak"]])):
        reset = "hard" if model == "norse_lif" else "none"
        args = (model, reset, x, [v0, None], constants, 0)
        torch.library.opcheck(torch.ops.snn_cuda.neuron_fwd.default, args)
        rows, states = torch.ops.snn_cuda.neuron_fwd(*args)
        grads = [torch.ones_like(r) for r in rows]
        torch.library.opcheck(
            torch.ops.snn_cuda.neuron_bwd.default,
            (model, reset, grads, [None, torch.ones_like(states[1])], list(rows[-2:]), [v0, None],
             x, constants, 0, "super_spike", 1.0, (1 << len(constants)) - 1),
        )


@pytest.mark.parametrize("kind", ["lif", "li"])
def test_norse_gpu_lane_loops_bitwise(kind):
    x, constants, initial, weights = draw((19, 2, 5), torch.float32, 5)
    fn = MODELS[kind][0]
    blocks = run(kind, fn, x, constants, initial, weights)
    with snn_cuda.ops.gpu_lane_loops():
        lanes = run(kind, fn, x, constants, initial, weights)
    for a, e in zip(blocks[0] + blocks[1], lanes[0] + lanes[1]):
        assert torch.equal(a, e)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["lif", "li"])
def test_norse_lower_precisions_match_reference(dtype, kind):
    x, constants, initial, weights = draw((29, 2, 9), dtype, 6)
    (fwd, grads), (fwd_r, grads_r) = (run(kind, fn, x, constants, initial, weights)
                                      for fn in MODELS[kind])
    for a, e in zip(fwd, fwd_r):
        assert a.dtype == dtype and torch.equal(a, e)
    for k, (a, e) in enumerate(zip(grads, grads_r)):
        assert rel_err(a, e) <= (1e-5 if dtype == torch.float32 else 1e-2), k


@pytest.mark.parametrize("kind", ["lif", "li"])
def test_norse_infinite_inputs_match_reference(kind):
    values = torch.tensor([0.3, 1.7, INF, -INF], dtype=torch.float64)
    x = torch.stack([torch.stack(seq) for seq in itertools.product(values, repeat=3)], dim=1) * 100
    H = x.shape[1]
    n = 5 if kind == "lif" else 4
    for use in range(n):
        results = []
        for fn in MODELS[kind]:
            xx = x.clone().requires_grad_()
            consts = [torch.full((H,), v, dtype=torch.float64, requires_grad=True)
                      for v in ((200.0, 100.0, 0.0, 1.0, 0.0) if kind == "lif" else (200.0, 100.0, 0.0))]
            *rows, last = fn(xx, *consts, return_state=True)
            outputs = (*rows, *last)
            grads = torch.autograd.grad(outputs[use].sum(), (xx, *consts), allow_unused=True)
            results.append((outputs, grads))
        assert_nonfinite_match(results, (kind, use))


def test_norse_compiles():
    x, c, _, _ = draw((12, 3, 5), torch.float32, 7)
    c = {k: v.float() for k, v in c.items()}

    def f(x):
        return snn_cuda.norse_lif(x, c["tau_syn_inv"], c["tau_mem_inv"], c["v_leak"], c["v_th"],
                                  c["v_reset"], return_state=True)

    compiled = torch.compile(f, fullgraph=True)
    out, expected = compiled(x), f(x)
    for a, e in zip(out[:3] + out[3], expected[:3] + expected[3]):
        assert torch.equal(a, e)
    li = torch.compile(fused.LI(), fullgraph=True)
    v, state = li(x)
    v2, state2 = fused.LI()(x)
    assert torch.equal(v, v2) and torch.equal(state.i, state2.i)


def test_norse_bad_arguments():
    x = torch.randn(3, 2, 4)
    with pytest.raises(ValueError, match="dt must be a finite float > 0, got 0"):
        snn_cuda.norse_lif(x, dt=0)
    with pytest.raises(TypeError, match=r"initial must be None or a tuple \(v, i\)"):
        snn_cuda.norse_li(x, initial=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="v_th must be finite"):
        snn_cuda.norse_lif(x, v_th=float("nan"))
    with pytest.raises(ValueError, match=r"v_leak of shape \(3,\) does not broadcast"):
        snn_cuda.norse_li(x, v_leak=torch.zeros(3))
    with pytest.raises(RuntimeError, match='reset of model "norse_lif" must be "hard"'):
        torch.ops.snn_cuda.neuron_fwd("norse_lif", "subtract", x, [None, None], [torch.ones(4)] * 5, 0)
    rows, _ = torch.ops.snn_cuda.neuron_fwd("norse_li", "none", x, [None, None], [torch.ones(4)] * 3, 0)
    with pytest.raises(RuntimeError, match="this gradient needs the forward's input"):
        torch.ops.snn_cuda.neuron_bwd("norse_li", "none", [rows[0], None], [None, None], list(rows),
                                      [None, None], None, [torch.ones(4)] * 3, 0, "atan", 1.0, 0)
    with pytest.raises(ValueError, match="p.method='adjoint' is not supported"):
        fused.LIF(fused.LIFParameters(method="adjoint"))
    with pytest.raises(ValueError, match="sparse inputs are not supported"):
        fused.LIFCell()(x[0].to_sparse())
    with pytest.raises(ValueError, match="input must be a sequence"):
        fused.LI()(torch.randn(4))


# ------------------------------------------------------------------------------------------------
# Against Norse itself.

def norse_parameters(kind, c, dtype, per_neuron):
    pick = (lambda t: t.to(dtype)) if per_neuron else (lambda t: t[0].to(dtype))
    if kind == "lif":
        return norse.LIFParameters(tau_syn_inv=pick(c["tau_syn_inv"]), tau_mem_inv=pick(c["tau_mem_inv"]),
                                   v_leak=pick(c["v_leak"]), v_th=pick(c["v_th"]),
                                   v_reset=pick(c["v_reset"]))
    return norse.LIParameters(tau_syn_inv=pick(c["tau_syn_inv"]), tau_mem_inv=pick(c["tau_mem_inv"]),
                              v_leak=pick(c["v_leak"]))


def learnable(p):
    return p._replace(**{k: v.clone().requires_grad_() for k, v in p._asdict().items()
                         if isinstance(v, torch.Tensor) and v.is_floating_point() and k != "alpha"})


def constants_of(p):
    return [v for k, v in p._asdict().items() if isinstance(v, torch.Tensor) and v.requires_grad]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("kind", ["lif", "li"])
@pytest.mark.parametrize("form", ["sequence", "cell"])
@pytest.mark.parametrize("per_neuron", [False, True])
def test_norse_modules_match_norse(dtype, kind, form, per_neuron):
    """Outputs and states equal, gradients (input, every constant) to rounding. In float32 both
    start from their default state (but Norse's sequence modules cannot build it from a per-neuron
    v_leak). In float64 both start from a given float64 state: Norse's
    default state is float32, and its first step's ``v_leak - v`` then runs in float32 (a 0-dim
    float64 tensor does not promote a float32 one), which rounds v_leak's gradient to ~1e-8."""
    T, B, H = 50, 3, 10
    x, c, initial, weights = draw((T, B, H), dtype, 8)
    names = {("lif", "sequence"): "LIF", ("lif", "cell"): "LIFCell", ("li", "sequence"): "LI",
             ("li", "cell"): "LICell"}[(kind, form)]
    results = []
    for lib in (norse, fused):
        p = learnable(norse_parameters(kind, c, dtype, per_neuron))
        module = getattr(lib, names)(p, dt=0.001)
        xx = x.clone().requires_grad_()
        start = None
        if dtype == torch.float64 or (per_neuron and form == "sequence"):
            # (Norse's LIF / LI cannot build their default state from a per-neuron v_leak.)
            start = (norse.LIFFeedForwardState if kind == "lif" else norse.LIState)(*initial)
        if form == "sequence":
            out, state = module(xx, start)
        else:
            outs, state = [], start
            for t in range(T):
                o, state = module(xx[t], state)
                outs.append(o)
            out = torch.stack(outs)
        loss = (out * weights[0]).sum() + (state.v * weights[1][0]).sum() + (state.i * weights[2][0]).sum()
        results.append((out, state, torch.autograd.grad(loss, [xx, *constants_of(p)])))
    (p_out, p_state, p_grads), (out, state, grads) = results
    assert torch.equal(out, p_out.to(out.dtype)), "outputs differ"
    assert torch.equal(state.v, p_state.v.to(dtype)) and torch.equal(state.i, p_state.i.to(dtype))
    if kind == "lif":
        assert_spikes_and_resets(out, min_rate=0.02, min_resets=10)
    tol = {torch.float64: 1e-10, torch.float32: 1e-4}[dtype]
    for k, (g, pg) in enumerate(zip(grads, p_grads)):
        assert g.shape == pg.shape, k
        assert rel_err(g, pg) <= tol, f"gradient {k}: {rel_err(g, pg):.3e}"
        assert pg.abs().max() > 0, f"gradient {k} is zero: the comparison is vacuous"


def test_norse_record_states_and_state_passing():
    x, c, _, _ = draw((30, 2, 6), torch.float32, 9)
    p = norse_parameters("lif", c, torch.float32, False)
    spikes, states = norse.LIF(p, record_states=True)(x)
    ours, our_states = fused.LIF(p, record_states=True)(x)
    assert torch.equal(spikes, ours) and torch.equal(states.v, our_states.v) and torch.equal(states.i, our_states.i)
    assert type(our_states).__name__ == "LIFFeedForwardState"
    # A sequence continued from a state equals the whole sequence.
    half_spikes, half_state = fused.LIF(p)(x[:15])
    rest, _ = fused.LIF(p)(x[15:], half_state)
    assert torch.equal(torch.cat([half_spikes, rest]), ours)
    # Norse's own state object goes into ours, and ours into Norse's.
    _, norse_state = norse.LIF(p)(x[:15])
    a, _ = fused.LIF(p)(x[15:], norse_state)
    b, _ = norse.LIF(p)(x[15:], half_state)
    assert torch.equal(a, b) and torch.equal(a, rest)


def test_norse_convert_swaps_norse_modules():
    torch.manual_seed(4)
    x = torch.rand(20, 3, 5) * 4
    p = norse.LIFParameters(tau_mem_inv=torch.tensor(80.0), v_th=torch.tensor(0.4))
    model = torch.nn.ModuleList([norse.LIF(p, record_states=True), norse.LIFCell(p), norse.LI(),
                                 norse.LICell()])
    expected = [model[0](x), model[1](x[0]), model[2](x), model[3](x[0])]
    parameters = model[0].p
    converted = snn_cuda.convert(model)
    assert [type(m) for m in converted] == [fused.LIF, fused.LIFCell, fused.LI, fused.LICell]
    assert converted[0].record_states and converted[0].p is parameters
    got = [converted[0](x), converted[1](x[0]), converted[2](x), converted[3](x[0])]
    for (a, sa), (e, se) in zip(got, expected):
        assert torch.equal(a, e) and torch.equal(sa.v, se.v) and torch.equal(sa.i, se.i)
    assert expected[0][0].any(), "the case must spike"
    with pytest.raises(ValueError, match="p.method='heaviside' is not supported"):
        snn_cuda.convert(torch.nn.Sequential(norse.LIF(norse.LIFParameters(method="heaviside"))))


def compare_devices(device, dtype, kind):
    x, constants, initial, weights = draw((45, 3, 33), dtype, 10)
    fn = MODELS[kind][0]
    on_cpu = run(kind, fn, x, constants, initial, weights)
    on_device = run(kind, fn, x.to(device), {k: v.to(device) for k, v in constants.items()},
                    tuple(s.to(device) for s in initial), weights.to(device))
    for a, e in zip(on_device[0], on_cpu[0]):
        assert torch.equal(a.cpu(), e), (dtype, kind)
    tol = {torch.float64: 1e-9, torch.float32: 1e-5}.get(dtype, 1e-2)
    for a, e in zip(on_device[1], on_cpu[1]):
        torch.testing.assert_close(a.cpu().double(), e.double(), rtol=tol, atol=tol)


def test_norse_device_comparison_runs_on_cpu():
    compare_devices("cpu", torch.float32, "lif")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible: the CUDA kernel cannot run here")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["lif", "li"])
def test_norse_cuda_matches_cpu(dtype, kind):
    compare_devices("cuda", dtype, kind)


# ------------------------------------------------------------------------------------------------
# LSNN: the adaptive threshold (three states).

def draw_lsnn(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    H = shape[-1]
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 4.0 + 2.5).to(dtype)
    constants = dict(
        tau_syn_inv=torch.rand(H, generator=g, dtype=torch.float64) * 200 + 100,
        tau_mem_inv=torch.rand(H, generator=g, dtype=torch.float64) * 100 + 50,
        tau_adapt_inv=torch.rand(H, generator=g, dtype=torch.float64) * 40 + 10,
        v_leak=torch.rand(H, generator=g, dtype=torch.float64) * 0.2 - 0.1,
        v_th=torch.rand(H, generator=g, dtype=torch.float64) * 0.4 + 0.3,
        v_reset=torch.rand(H, generator=g, dtype=torch.float64) * 0.2 - 0.1,
        beta=torch.rand(H, generator=g, dtype=torch.float64) * 0.3 + 0.05,
    )
    initial = tuple((torch.randn(shape[1:], generator=g, dtype=torch.float64) * 0.3 + offset).to(dtype)
                    for offset in (0.0, 0.5, 0.5))
    weights = torch.randn((7, *shape), generator=g, dtype=torch.float64).to(dtype)
    return x, constants, initial, weights


def run_lsnn(fn, x, constants, initial, weights, use=None, **options):
    x = x.clone().requires_grad_()
    acc = snn_cuda.ops.accumulation_dtype(x.dtype)
    consts = {n: c.to(acc).clone().requires_grad_() for n, c in constants.items()}
    init = [None if s is None else s.clone().requires_grad_() for s in initial]
    spikes, v, i, b, last = fn(x, **consts, initial=tuple(init), return_state=True, **options)
    outputs = (spikes, v, i, b, *last)
    use = range(7) if use is None else use
    loss = sum((outputs[k] * (weights[k] if k < 4 else weights[k][0])).sum() for k in use)
    wanted = [x, *consts.values(), *(s for s in init if s is not None)]
    return outputs, torch.autograd.grad(loss, wanted, allow_unused=True)


LSNN = (snn_cuda.norse_lsnn, reference.norse_lsnn)


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_lsnn_matches_reference_float64(surrogate):
    x, constants, initial, weights = draw_lsnn((41, 3, 11), torch.float64, 11)
    (fwd, grads), (fwd_r, grads_r) = (run_lsnn(fn, x, constants, initial, weights, surrogate=surrogate)
                                      for fn in LSNN)
    for a, e in zip(fwd, fwd_r):
        assert a.dtype == e.dtype == torch.float64 and torch.equal(a, e)
    assert_spikes_and_resets(fwd[0], min_rate=0.02, min_resets=10)
    assert (fwd[3] > constants["v_th"]).any(), "the threshold must adapt"
    for k, (a, e) in enumerate(zip(grads, grads_r)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=f"gradient {k}")
        assert a.abs().max() > 0, k


def test_lsnn_each_output_alone_and_nonfinite_match_reference():
    x, constants, initial, weights = draw_lsnn((23, 2, 7), torch.float64, 12)
    for use in [(k,) for k in range(7)]:
        (_, grads), (_, grads_r) = (run_lsnn(fn, x, constants, initial, weights, use=use) for fn in LSNN)
        for k, (a, e) in enumerate(zip(grads, grads_r)):
            if e is None:
                assert a is None or not a.any(), (use, k)
            else:
                torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=f"{use} gradient {k}")
    values = torch.tensor([0.3, 1.7, INF, -INF], dtype=torch.float64)
    x = torch.stack([torch.stack(seq) for seq in itertools.product(values, repeat=3)], dim=1) * 300
    H = x.shape[1]
    for use in range(7):
        results = []
        for fn in LSNN:
            xx = x.clone().requires_grad_()
            consts = [torch.full((H,), v, dtype=torch.float64, requires_grad=True)
                      for v in (200.0, 100.0, 20.0, 0.0, 1.0, 0.0, 0.5)]
            *rows, last = fn(xx, *consts, return_state=True)
            outputs = (*rows, *last)
            results.append((outputs, torch.autograd.grad(outputs[use].sum(), (xx, *consts),
                                                         allow_unused=True)))
        assert_nonfinite_match(results, use)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_lsnn_lower_precisions_lane_loops_and_opcheck(dtype):
    x, constants, initial, weights = draw_lsnn((29, 2, 9), dtype, 13)
    (fwd, grads), (fwd_r, grads_r) = (run_lsnn(fn, x, constants, initial, weights) for fn in LSNN)
    for a, e in zip(fwd, fwd_r):
        assert a.dtype == dtype and torch.equal(a, e)
    for k, (a, e) in enumerate(zip(grads, grads_r)):
        assert rel_err(a, e) <= (1e-5 if dtype == torch.float32 else 1e-2), k
    if dtype != torch.float32:
        return
    with snn_cuda.ops.gpu_lane_loops():
        lanes = run_lsnn(LSNN[0], x, constants, initial, weights)
    for a, e in zip(fwd + grads, lanes[0] + lanes[1]):
        assert torch.equal(a, e)
    x, c, initial, _ = draw_lsnn((6, 2, 3), torch.float64, 14)
    constants = [0.001 * c["tau_mem_inv"], -0.001 * c["tau_syn_inv"], 0.001 * c["tau_adapt_inv"],
                 c["v_leak"], c["v_th"], c["v_reset"], c["beta"]]
    args = ("norse_lsnn", "hard", x, [initial[0], None, initial[2]], constants, 0)
    torch.library.opcheck(torch.ops.snn_cuda.neuron_fwd.default, args)
    rows, states = torch.ops.snn_cuda.neuron_fwd(*args)
    torch.library.opcheck(
        torch.ops.snn_cuda.neuron_bwd.default,
        ("norse_lsnn", "hard", [torch.ones_like(r) for r in rows], [None, None, torch.ones_like(states[2])],
         list(rows[1:]), [initial[0], None, initial[2]], None, constants, 0, "super_spike", 1.0, 127),
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("form", ["sequence", "cell"])
@pytest.mark.parametrize("per_neuron", [False, True])
def test_lsnn_modules_match_norse(dtype, form, per_neuron):
    """Spikes and (v, i, b) equal; gradients of the input and every parameter to rounding. Norse's
    LSNN starts its state in the input's dtype (unlike its LIF), so the default start is compared."""
    T, B, H = 60, 3, 10
    x, c, _, weights = draw_lsnn((T, B, H), dtype, 15)
    results = []
    for lib in (norse, fused):
        pick = (lambda t: t.to(dtype)) if per_neuron else (lambda t: t[0].to(dtype))
        p = norse.LSNNParameters(**{k: pick(v).clone().requires_grad_() for k, v in c.items()})
        xx = x.clone().requires_grad_()
        start = None
        if per_neuron:  # (Norse's LSNN / LSNNCell cannot build it from [H] tensors)
            start = norse.LSNNFeedForwardState(*(torch.broadcast_to(t.detach(), (B, H)).clone()
                                                 for t in (p.v_leak, torch.zeros(H, dtype=dtype), p.v_th)))
        if form == "sequence":
            out, state = getattr(lib, "LSNN")(p, dt=0.001)(xx, start)
        else:
            cell, outs, state = getattr(lib, "LSNNCell")(p, dt=0.001), [], start
            for t in range(T):
                o, state = cell(xx[t], state)
                outs.append(o)
            out = torch.stack(outs)
        loss = (out * weights[0]).sum() + sum((s * w[0]).sum() for s, w in zip(state, weights[1:4]))
        wanted = [xx] + [getattr(p, k) for k in c]
        results.append((out, state, torch.autograd.grad(loss, wanted)))
    (p_out, p_state, p_grads), (out, state, grads) = results
    assert torch.equal(out, p_out.to(out.dtype)), "spikes differ"
    for name in ("v", "i", "b"):
        assert torch.equal(getattr(state, name), getattr(p_state, name)), name
    assert_spikes_and_resets(out, min_rate=0.02, min_resets=10)
    tol = {torch.float64: 1e-10, torch.float32: 1e-4}[dtype]
    for k, (g, pg) in enumerate(zip(grads, p_grads)):
        assert rel_err(g, pg) <= tol, f"gradient {k}: {rel_err(g, pg):.3e}"
        assert pg.abs().max() > 0, f"gradient {k} is zero: the comparison is vacuous"


def test_lsnn_bad_arguments_and_convert():
    x = torch.randn(3, 2, 4)
    with pytest.raises(TypeError, match=r"initial must be None or a tuple \(v, i, b\)"):
        snn_cuda.norse_lsnn(x, initial=(None, None))
    with pytest.raises(ValueError, match="beta must be finite"):
        snn_cuda.norse_lsnn(x, beta=float("inf"))
    with pytest.raises(RuntimeError, match='model "norse_lsnn" takes 7 constants, got 5'):
        torch.ops.snn_cuda.neuron_fwd("norse_lsnn", "hard", x, [None] * 3, [torch.ones(4)] * 5, 0)
    with pytest.raises(ValueError, match="p.method='tanh' is not supported"):
        fused.LSNN(fused.LSNNParameters(method="tanh"))
    model = torch.nn.ModuleList([norse.LSNN(), norse.LSNNCell()])
    x = torch.rand(30, 2, 5) * 8
    expected = [model[0](x), model[1](x[0])]
    converted = snn_cuda.convert(model)
    assert [type(m) for m in converted] == [fused.LSNN, fused.LSNNCell]
    for (a, sa), (e, se) in zip([converted[0](x), converted[1](x[0])], expected):
        assert torch.equal(a, e) and all(torch.equal(p, q) for p, q in zip(sa, se))
    assert expected[0][0].any()


def test_lsnn_compiles():
    x, c, _, _ = draw_lsnn((12, 3, 5), torch.float32, 33)
    constants = [v.float() for v in c.values()]

    def f(x):
        return snn_cuda.norse_lsnn(x, *constants, return_state=True)

    out, expected = torch.compile(f, fullgraph=True)(x), f(x)
    for a, e in zip(out[:4] + out[4], expected[:4] + expected[4]):
        assert torch.equal(a, e)
    assert out[0].any()


def test_lsnn_device_comparison_runs_on_cpu():
    compare_lsnn_devices("cpu", torch.float32)


def compare_lsnn_devices(device, dtype):
    x, constants, initial, weights = draw_lsnn((45, 3, 33), dtype, 34)
    on_cpu = run_lsnn(LSNN[0], x, constants, initial, weights)
    on_device = run_lsnn(LSNN[0], x.to(device), {k: v.to(device) for k, v in constants.items()},
                         tuple(s.to(device) for s in initial), weights.to(device))
    for a, e in zip(on_device[0], on_cpu[0]):
        assert torch.equal(a.cpu(), e), dtype
    tol = {torch.float64: 1e-9, torch.float32: 1e-5}.get(dtype, 1e-2)
    for a, e in zip(on_device[1], on_cpu[1]):
        torch.testing.assert_close(a.cpu().double(), e.double(), rtol=tol, atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible: the CUDA kernel cannot run here")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_lsnn_cuda_matches_cpu(dtype):
    compare_lsnn_devices("cuda", dtype)


def test_every_module_builds_with_norse_defaults():
    """Norse's modules all default ``p`` (LICell() was an error here: its p had no default)."""
    x = torch.rand(6, 2, 3) * 40
    for name in ("LIF", "LIFCell", "LI", "LICell", "LSNN", "LSNNCell"):
        ours, theirs = getattr(fused, name)(), getattr(norse, name)()
        cell = name.endswith("Cell")
        a, e = (m(x[0] if cell else x) for m in (ours, theirs))
        assert torch.equal(a[0], e[0]), name
