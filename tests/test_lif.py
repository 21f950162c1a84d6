"""The fused binary-spike LIF op (snn_cuda.lif) against its reference loop: forward, every
gradient, every option, dtypes, opcheck, torch.compile, errors.

gradcheck cannot see a surrogate (the true derivative of a spike is zero), so the fused backward
is checked against autograd through the reference loop, which uses the same surrogate."""

import itertools

import pytest
import torch

import snn_cuda
from snn_cuda import reference, surrogate
from snn_cuda.ops import LIFFunction

from helpers import (
    CONVENTIONS,
    LIF_GRAD_TOL,
    LIF_MODES,
    LIF_RESETS as RESETS,
    SURROGATES,
    assert_rel_close,
    assert_spikes_and_resets,
    lif_case,
    rand_uniform,
    random_surrogate,
    randint,
    run_lif,
)

def compare(case, options, dtype, rng, grad_names=("input", "decay", "threshold", "initial")):
    upstream = [
        torch.randn(case["input"].shape, generator=rng, dtype=torch.float64).to(dtype)
        for _ in range(2)
    ]
    fused = run_lif(snn_cuda.lif, case, options, grad_names, upstream)
    ref = run_lif(reference.lif, case, options, grad_names, upstream)
    label = f"{options} {dtype}"
    assert fused[0].dtype == dtype and fused[1].dtype == dtype
    assert torch.equal(fused[0], ref[0]), f"spikes differ: {label}"
    assert torch.equal(fused[1], ref[1]), f"membranes differ: {label}"
    assert_spikes_and_resets(fused[0])
    assert set(fused[2]) == set(grad_names)
    for name in grad_names:
        assert_rel_close(fused[2][name], ref[2][name], LIF_GRAD_TOL[dtype], f"grad {name} ({label})")
        assert fused[2][name].abs().max() > 0, f"grad {name} is zero: the comparison is vacuous"


@pytest.mark.parametrize("convention,reset,surrogate_name",
                         [(c, r, s) for (c, r), s in itertools.product(LIF_MODES, SURROGATES)])
@pytest.mark.parametrize("detach_reset", [True, False])
def test_fused_matches_reference_float64(rng, convention, reset, surrogate_name, detach_reset):
    case = lif_case(rng, convention, reset=reset)
    for decay_input in ([True, False] if convention == "spikingjelly" else [True]):
        options = dict(
            convention=convention, reset=reset, detach_reset=detach_reset,
            decay_input=decay_input, surrogate=random_surrogate(rng, surrogate_name),
        )
        compare(case, options, torch.float64, rng)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_fused_matches_reference_lower_precision(rng, dtype, convention):
    resets = [r for c, r in LIF_MODES if c == convention]
    for reset, surrogate_name in itertools.product(resets, SURROGATES):
        case = lif_case(rng, convention, dtype, reset=reset)
        options = dict(
            convention=convention, reset=reset, detach_reset=bool(randint(rng, 0, 1)),
            decay_input=bool(randint(rng, 0, 1)), surrogate=random_surrogate(rng, surrogate_name),
        )
        compare(case, options, dtype, rng)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_subsets_of_gradients(rng, convention):
    """Each gradient alone (the backward skips the others' work and saves less)."""
    case = lif_case(rng, convention)
    options = dict(convention=convention, reset="hard", surrogate="atan")
    for names in [("input",), ("decay",), ("threshold",), ("initial",), ("decay", "threshold")]:
        compare(case, options, torch.float64, rng, grad_names=names)


def test_saved_tensors(rng):
    """The backward keeps the membrane (plus the input only for tau's gradient with decay_input)."""
    case = lif_case(rng, "spikingjelly")
    x = case["input"].clone().requires_grad_()
    tau = case["decay"].clone().requires_grad_()
    for need_tau, decay_input, expect_input in [(True, True, True), (True, False, False), (False, True, False)]:
        spikes, membrane = snn_cuda.lif(
            x, tau if need_tau else case["decay"], 1.0, convention="spikingjelly",
            decay_input=decay_input,
        )
        saved = spikes.grad_fn.saved_tensors
        assert any(t is not None and t.data_ptr() == membrane.data_ptr() for t in saved)
        has_input = any(t is not None and t.data_ptr() == x.data_ptr() for t in saved)
        assert has_input == expect_input, (need_tau, decay_input)


def test_scalar_and_per_feature_parameters(rng):
    """Floats, 0-dim tensors and parameters that vary over more than the last dim (a conv layer's
    per-channel [C, 1, 1]) all give the reference's results and gradients."""
    T, B, C, Hh, W = randint(rng, 30, 60), 2, 3, 4, 5
    x = torch.randn(T, B, C, Hh, W, generator=rng, dtype=torch.float64) * 0.8 + 0.5
    for decay, threshold in [
        (0.9, 1.0),
        (torch.tensor(0.8, dtype=torch.float64), torch.tensor(0.9, dtype=torch.float64)),
        (rand_uniform((C, 1, 1), 0.5, 0.95, rng), rand_uniform((C, 1, W), 0.7, 1.2, rng)),
    ]:
        results = []
        for fn in (snn_cuda.lif, reference.lif):
            xx = x.clone().requires_grad_()
            params = [p.clone().requires_grad_() if isinstance(p, torch.Tensor) else p for p in (decay, threshold)]
            spikes, membrane = fn(xx, *params, reset="hard", surrogate="sigmoid")
            loss = spikes.sum() + (membrane ** 2).sum()
            wanted = [xx] + [p for p in params if isinstance(p, torch.Tensor)]
            results.append((spikes, membrane, *torch.autograd.grad(loss, wanted)))
        for a, e in zip(*results):
            assert a.shape == e.shape
            assert_rel_close(a, e, 1e-12, "per-feature parameters")
        assert_spikes_and_resets(results[0][0])


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_initial_state_continues_a_sequence(rng, convention):
    """Running [0, k) then [k, T) from the first part's final state equals running [0, T)."""
    case = lif_case(rng, convention)
    x = case["input"]
    k = x.shape[0] // 3
    options = dict(convention=convention, reset="subtract", decay_input=True)
    spikes, membrane = snn_cuda.lif(x, case["decay"], case["threshold"], **options)
    s1, m1 = snn_cuda.lif(x[:k], case["decay"], case["threshold"], **options)
    if convention in ("snntorch", "snntorch_now"):  # the membrane returned is the state
        state = m1[-1]
    else:  # SpikingJelly carries V, the potential after the reset
        state = m1[-1] - s1[-1] * case["threshold"]
    s2, m2 = snn_cuda.lif(x[k:], case["decay"], case["threshold"], initial=state, **options)
    assert torch.equal(torch.cat([s1, s2]), spikes)
    assert torch.equal(torch.cat([m1, m2]), membrane)


def test_non_contiguous_and_empty(rng):
    case = lif_case(rng, "snntorch", shape=(50, 4, 6))
    x = case["input"].transpose(1, 2)  # [T, H=6... ] non-contiguous view of shape [50, 6, 4]
    assert not x.is_contiguous()
    a = snn_cuda.lif(x, 0.9, 1.0)
    b = snn_cuda.lif(x.contiguous(), 0.9, 1.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for shape in [(0, 3, 4), (5, 0, 4)]:
        x = torch.zeros(shape, requires_grad=True)
        spikes, membrane = snn_cuda.lif(x, 0.9, 1.0)
        assert spikes.shape == shape and membrane.shape == shape
        (spikes.sum() + membrane.sum()).backward()
        assert x.grad.shape == shape


def test_nan_input_gives_no_spike_and_nan_membrane():
    x = torch.full((5, 1, 2), 2.0, dtype=torch.float64)
    x[2, 0, 0] = float("nan")
    for fn in (snn_cuda.lif, reference.lif):
        spikes, membrane = fn(x, 0.9, 1.0)
        assert spikes[2, 0, 0] == 0 and torch.isnan(membrane[2, 0, 0])
        assert spikes[2, 0, 1] == 1


def test_forward_under_no_grad_and_inference_mode(rng):
    case = lif_case(rng, "spikingjelly")
    expected = snn_cuda.lif(case["input"], 2.0, 1.0, convention="spikingjelly")
    with torch.no_grad():
        a = snn_cuda.lif(case["input"], 2.0, 1.0, convention="spikingjelly")
    with torch.inference_mode():
        b = snn_cuda.lif(case["input"], 2.0, 1.0, convention="spikingjelly")
    for got in (a, b):
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("convention,reset", LIF_MODES)
def test_final_state_is_the_next_calls_initial(rng, convention, reset):
    """The state output is what the recurrence carries past the last step: running the two halves
    of a sequence, the second from the first's state, gives the whole sequence's results, and the
    reference computes the same state."""
    case = lif_case(rng, convention, reset=reset)
    x, T = case["input"], case["input"].shape[0]
    opts = dict(convention=convention, reset=reset, reset_value=case["reset_value"],
                surrogate="atan")
    params = (case["decay"], case["threshold"])
    spikes, membrane, state = snn_cuda.lif(x, *params, initial=case["initial"], return_state=True, **opts)
    k = T // 2
    s1, m1, mid = snn_cuda.lif(x[:k], *params, initial=case["initial"], return_state=True, **opts)
    s2, m2, end = snn_cuda.lif(x[k:], *params, initial=mid, return_state=True, **opts)
    assert torch.equal(torch.cat([s1, s2]), spikes) and torch.equal(torch.cat([m1, m2]), membrane)
    assert torch.equal(end, state)
    ref = reference.lif(x, *params, initial=case["initial"], return_state=True, **opts)
    assert torch.equal(ref[2], state)
    if convention in ("snntorch", "snntorch_now"):
        assert torch.equal(state, membrane[-1])
    # T = 0: the state is the initial one, and its gradient goes back to it.
    init = case["initial"].clone().requires_grad_()
    _, _, same = snn_cuda.lif(x[:0], *params, initial=init, return_state=True, **opts)
    assert torch.equal(same, init)
    (g,) = torch.autograd.grad(same.sum(), init)
    assert torch.equal(g, torch.ones_like(g))
    # lif_step's state is the same.
    _, _, step_state = snn_cuda.lif_step(x[0], *params, initial=case["initial"], return_state=True, **opts)
    assert torch.equal(step_state, snn_cuda.lif(x[:1], *params, initial=case["initial"],
                                                 return_state=True, **opts)[2])


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_opcheck(rng, convention):
    case = lif_case(rng, convention, shape=(12, 2, 5))
    args = (case["input"], case["initial"], case["decay"], case["threshold"], case["reset_value"],
            convention, "hard", True)
    torch.library.opcheck(torch.ops.snn_cuda.lif_fwd.default, args)
    torch.library.opcheck(torch.ops.snn_cuda.lif_fwd.default, (case["input"], None, *args[2:]))
    spikes, membrane, state = torch.ops.snn_cuda.lif_fwd(*args)
    g = torch.randn_like(spikes)
    bwd_args = (g, g.clone(), torch.randn_like(state), membrane, case["initial"], case["input"],
                case["decay"], case["threshold"], case["reset_value"], convention, "hard", True, False,
                "atan", 2.0, True, True)
    torch.library.opcheck(torch.ops.snn_cuda.lif_bwd.default, bwd_args)
    torch.library.opcheck(
        torch.ops.snn_cuda.lif_bwd.default,
        # snntorch_now's backward recomputes the charge from the input: it always takes it.
        (None, g, None, membrane, None, case["input"] if convention == "snntorch_now" else None,
         *bwd_args[6:15], False, False),
    )


def test_autograd_calls_only_the_registered_ops(rng):
    case = lif_case(rng, "snntorch", shape=(10, 2, 3))
    x = case["input"].clone().requires_grad_()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        spikes, membrane = snn_cuda.lif(x, case["decay"], case["threshold"])
        (spikes.sum() + membrane.sum()).backward()
    names = {e.name for e in prof.events()}
    assert "snn_cuda::lif_fwd" in names and "snn_cuda::lif_bwd" in names


@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_fullgraph(rng, dynamic):
    torch._dynamo.reset()
    case = lif_case(rng, "spikingjelly", dtype=torch.float32, shape=(20, 3, 8))
    tau = case["decay"].float().requires_grad_()

    def f(x, tau):
        spikes, h = snn_cuda.lif(x, tau, 1.0, convention="spikingjelly", reset="hard",
                                 surrogate="atan")
        return spikes.sum() + (h * h).mean()

    compiled = torch.compile(f, fullgraph=True, dynamic=dynamic)
    x = case["input"].clone().requires_grad_()
    loss = compiled(x, tau)
    gx, gtau = torch.autograd.grad(loss, [x, tau])
    x2 = case["input"].clone().requires_grad_()
    tau2 = tau.detach().clone().requires_grad_()
    loss2 = f(x2, tau2)
    ex, etau = torch.autograd.grad(loss2, [x2, tau2])
    assert torch.allclose(loss, loss2)
    assert torch.allclose(gx, ex) and torch.allclose(gtau, etau)


def test_surrogate_formulas():
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)
    cases = {
        surrogate.fast_sigmoid(10.0): 1 / (10 * z.abs() + 1) ** 2,
        surrogate.super_spike(0.5): 0.5 / (z.abs() + 1) ** 2,
        surrogate.atan(2.0): 1 / (1 + (torch.pi * z) ** 2),
        # sig(4z) * sig(-4z): the same value as sig * (1 - sig), without its cancellation in the tails.
        surrogate.sigmoid(4.0): 4 * torch.sigmoid(4 * z) * torch.sigmoid(-4 * z),
    }
    for spec, expected in cases.items():
        assert torch.allclose(spec.derivative(z), expected, rtol=1e-12, atol=0), spec
        # And the kernel's copy, through the op: the gradient of spikes w.r.t. the input at T = 1
        # is sigma'(x - threshold) (the membrane is x itself at the first step).
        x = z.reshape(1, 1, -1).clone().requires_grad_()
        spikes, _ = snn_cuda.lif(x, 0.9, 0.0, surrogate=spec)
        (grad,) = torch.autograd.grad(spikes.sum(), x)
        assert torch.allclose(grad.flatten(), expected, rtol=1e-12, atol=1e-300), spec


@pytest.mark.parametrize("dtype,rtol,smallest", [(torch.float64, 1e-14, 1e-300), (torch.float32, 1e-6, 1e-36)])
def test_sigmoid_surrogate_exp_over_its_range(dtype, rtol, smallest):
    """The CPU kernel's own vectorisable exp, across the whole range: within a few ulp of
    alpha * sig(alpha z) * sig(-alpha z) computed in float64, exactly 0 only where that is below the
    smallest normal number."""
    alpha = 4.0
    z = torch.cat([torch.linspace(-200, 200, 40001, dtype=torch.float64), torch.tensor([0.0])]).to(dtype)
    x = z.reshape(1, 1, -1).clone().requires_grad_()
    spikes, _ = snn_cuda.lif(x, 0.9, 0.0, surrogate=surrogate.sigmoid(alpha))
    (grad,) = torch.autograd.grad(spikes.sum(), x)
    z64 = z.double()
    expected = alpha * torch.sigmoid(alpha * z64) * torch.sigmoid(-alpha * z64)
    grad = grad.flatten().double()
    normal = expected > smallest
    rel = ((grad[normal] - expected[normal]).abs() / expected[normal]).max().item()
    assert rel <= rtol, rel
    assert (grad[~normal].abs() <= smallest).all()


def test_sigmoid_surrogate_tails_are_finite_in_float32():
    x = torch.tensor([[[-200.0, -20.0, 0.0, 20.0, 200.0]]], requires_grad=True)
    spikes, _ = snn_cuda.lif(x, 0.9, 0.0, surrogate=surrogate.sigmoid(25.0))
    (grad,) = torch.autograd.grad(spikes.sum(), x)
    assert torch.isfinite(grad).all() and grad[0, 0, 2] == 25.0 / 4


def test_errors():
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match='convention must be "snntorch", "snntorch_now", "spikingjelly", "spikingjelly_if" or "spikingjelly_plif", got \'norse\''):
        snn_cuda.lif(x, 0.9, convention="norse")
    with pytest.raises(ValueError, match='reset must be "subtract", "hard" or "none", got \'zero\''):
        snn_cuda.lif(x, 0.9, reset="zero")
    with pytest.raises(ValueError, match='reset="none".*convention="snntorch" and "snntorch_now" only'):
        snn_cuda.lif(x, 2.0, convention="spikingjelly", reset="none")
    p = torch.ones(3)
    with pytest.raises(RuntimeError, match='reset "none" exists for the "snntorch" and "snntorch_now" conventions only'):
        torch.ops.snn_cuda.lif_fwd(x, None, p, p, p, "spikingjelly", "none", True)
    with pytest.raises(TypeError, match="lif: detach_reset must be True or False \\(or None\\), got str 'no'"):
        snn_cuda.lif(x, 0.9, detach_reset="no")
    with pytest.raises(TypeError, match="lif: decay_input must be True or False, got NoneType None"):
        snn_cuda.lif(x, 2.0, convention="spikingjelly", decay_input=None)
    with pytest.raises(TypeError, match="spiking_recurrence: delay must be True or False, got str 'no'"):
        snn_cuda.spiking_recurrence(x, delay="no")
    with pytest.raises(TypeError, match="spiking_recurrence: delay must be True or False, got NoneType"):
        snn_cuda.reference.spiking_recurrence(x, delay=None)
    # Per-feature parameters (which flatten the lanes) are checked like per-neuron ones.
    per_feature = torch.full((2, 1), 0.9)
    for bad, error, match in ((torch.ones(2, 1, dtype=torch.bool), ValueError, "threshold must be a real tensor"),
                              (torch.ones(2, 1, dtype=torch.complex64), ValueError, "threshold must be a real tensor"),
                              ("0.9", TypeError, "threshold must be a float or a tensor, got str")):
        with pytest.raises(error, match=match):
            snn_cuda.lif(torch.randn(4, 2, 3), per_feature, bad)
    with pytest.raises(TypeError, match="initial must be a real floating tensor, got dtype torch.complex64"):
        snn_cuda.lif(torch.randn(4, 2, 3), 0.9, initial=torch.zeros(2, 3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="unknown surrogate 'triangle'"):
        snn_cuda.lif(x, 0.9, surrogate="triangle")
    with pytest.raises(TypeError, match="expected an snn_cuda.surrogate.Surrogate"):
        snn_cuda.lif(x, 0.9, surrogate=lambda z: z)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        surrogate.atan(-1.0)
    with pytest.raises(ValueError, match=r"at least 2 dims\), got shape \(5,\)"):
        snn_cuda.lif(torch.randn(5), 0.9)
    with pytest.raises(ValueError, match=r"initial must have the shape of one input step \(2, 3\)"):
        snn_cuda.lif(x, 0.9, initial=torch.zeros(3))
    with pytest.raises(ValueError, match="does not broadcast to one step of the input"):
        snn_cuda.lif(x, torch.rand(4, 1), 1.0)
    with pytest.raises(ValueError, match="reset_value gets no gradient"):
        snn_cuda.lif(x, 0.9, reset="hard", reset_value=torch.zeros(3, requires_grad=True))
    with pytest.raises(ValueError, match=r"decay must be finite and > 0 \(with convention .spikingjelly. decay is tau"):
        snn_cuda.lif(x, 0.0, convention="spikingjelly")
    with pytest.raises(ValueError, match="must be float64, float32, float16 or bfloat16"):
        snn_cuda.lif(x.to(torch.int32), 0.9)
    # The registered op checks its own inputs (what a caller of torch.ops gets).
    p = torch.ones(3)
    with pytest.raises(RuntimeError, match=r"lif: decay must have shape \[H\] = \[3\]"):
        torch.ops.snn_cuda.lif_fwd(x, None, torch.ones(4), p, p, "snntorch", "hard", True)
    with pytest.raises(RuntimeError, match=r"lif: threshold must have dtype Float .* got Double"):
        torch.ops.snn_cuda.lif_fwd(x, None, p, p.double(), p, "snntorch", "hard", True)
    with pytest.raises(RuntimeError, match='lif: surrogate must be "fast_sigmoid", "super_spike", "atan" or "sigmoid", got "erf"'):
        torch.ops.snn_cuda.lif_bwd(None, None, None, x, None, None, p, p, p, "snntorch", "hard", True,
                                   True, "erf", 1.0, False, False)
    with pytest.raises(RuntimeError, match='the backward of convention "snntorch_now" .* need the '
                                           "forward's input"):
        torch.ops.snn_cuda.lif_bwd(None, None, None, x, None, None, p, p, p, "snntorch_now", "hard",
                                   True, False, "atan", 2.0, False, False)
    with pytest.raises(RuntimeError, match="tau's gradient with decay_input .* need the forward's input"):
        torch.ops.snn_cuda.lif_bwd(None, None, None, x, None, None, p, p, p, "spikingjelly", "hard",
                                   True, True, "atan", 1.0, True, False)


def test_lif_function_is_exported():
    assert snn_cuda.LIFFunction is LIFFunction



def test_empty_sequence_with_per_feature_parameters(rng):
    """T = 0 with parameters that vary over more than the last dim (the flattened layout) returns
    empty results like any other T = 0 call (it used to fail reshaping 0 elements)."""
    x = torch.randn(0, 2, 3, dtype=torch.float64)
    init = torch.randn(2, 3, dtype=torch.float64)
    for fn in (snn_cuda.lif, reference.lif):
        spikes, membrane, state = fn(x, torch.full((2, 1), 0.9, dtype=torch.float64), initial=init,
                                     return_state=True)
        assert spikes.shape == membrane.shape == (0, 2, 3) and torch.equal(state, init)


def test_operators_check_devices_alpha_and_layouts():
    """The registered operators are public: a meta tensor among CPU ones (which dispatches to the
    fake kernel) fails instead of returning uninitialised results; alpha must be finite and > 0;
    sparse tensors are refused with the argument's name by the Python entry points."""
    x = torch.randn(4, 2, 3)
    p = torch.ones(3)
    meta = torch.ones(3, device="meta")
    with pytest.raises(RuntimeError, match="spiking_recurrence_fwd: decay must be on the input's device cpu, got meta"):
        torch.ops.snn_cuda.spiking_recurrence_fwd(x, meta, p, p, "subtract", True)
    with pytest.raises(RuntimeError, match="decay must be on the input's device meta, got cpu"):
        torch.ops.snn_cuda.spiking_recurrence_fwd(x.to("meta"), p, p, p, "subtract", True)
    with pytest.raises(RuntimeError, match="lif_fwd: decay must be on the input's device cpu, got meta"):
        torch.ops.snn_cuda.lif_fwd(x, None, meta, p, p, "snntorch", "subtract", True)
    for alpha in (-1.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(RuntimeError, match="alpha .* must be finite and > 0"):
            torch.ops.snn_cuda.lif_bwd(x, None, None, x, None, None, p, p, p, "snntorch", "subtract",
                                       True, True, "atan", alpha, False, False)
    with pytest.raises(TypeError, match="lif: input must be a dense \\(strided\\) tensor, got layout torch.sparse_coo"):
        snn_cuda.lif(x.to_sparse(), 0.9)
    with pytest.raises(TypeError, match="decay_multiplier must be a dense \\(strided\\) tensor"):
        snn_cuda.spiking_recurrence(x, torch.ones(3).to_sparse())
    with pytest.raises(TypeError, match="lif: initial must be a dense \\(strided\\) tensor"):
        snn_cuda.lif(x, 0.9, initial=torch.zeros(2, 3).to_sparse())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_reference_matches_fused_on_infinite_inputs(dtype, convention):
    """±inf inputs: the oracle's forward equals the fused op's in every dtype (its float16/bfloat16
    rounding step once turned an infinite membrane into NaN: inf - inf)."""
    x = torch.tensor([[float("inf"), 1.0, float("-inf"), 0.3],
                      [0.2, float("inf"), 0.5, float("-inf")]], dtype=dtype)
    decay = 0.9 if convention.startswith("snntorch") else 2.0
    fused = snn_cuda.lif(x, decay, 1.0, convention=convention)
    ref = reference.lif(x, decay, 1.0, convention=convention)
    for name, a, b in zip(("spikes", "membrane"), fused, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=name)
    assert fused[0][0, 0] == 1 and torch.isinf(fused[1][0, 0])
