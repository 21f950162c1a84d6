"""The fused op against the reference loop: forward, every gradient, gradcheck, opcheck, errors."""

import math
import os

import pytest
import torch

import snn_cuda
from snn_cuda import reference
from snn_cuda.ops import RESETS, SpikingRecurrenceFunction

from helpers import (
    TOLERANCES,
    assert_close,
    assert_fires_and_resets,
    assert_param_grad_close,
    grads,
    rand_uniform,
    random_case,
    random_shape,
)

SHAPE_KINDS = ["T1", "nobatch", "batch", "multibatch", "wide"]


def case_for(rng, kind, dtype=torch.float64, device="cpu"):
    if kind == "wide":
        # Enough 64-lane blocks that at::parallel_for splits them over threads, plus a partial block.
        T = 2 * int(torch.randint(10, 30, (1,), generator=rng)) + 1
        shape = (T, (int(torch.randint(100, 200, (1,), generator=rng)),), 67)
    else:
        shape = random_shape(rng, kind)
    return random_case(rng, *shape, dtype=dtype, device=device)


def make_params(case, params: str):
    """The three neuron constants as floats, as 0-dim tensors, or as per-neuron [H] tensors; the
    tensors require grad."""
    if params == "floats":
        return [float(case.decay[0]), float(case.threshold[0]), float(case.penalty[0])]
    if params == "scalar_tensors":
        return [p[0].clone().requires_grad_() for p in (case.decay, case.threshold, case.penalty)]
    return [p.clone().requires_grad_() for p in (case.decay, case.threshold, case.penalty)]


def run_both(excitation, params, reset, delay, upstream_kinds, generator):
    """Runs fused and reference on the same inputs; returns their outputs and gradients."""
    results = []
    upstream = None
    for fn in (snn_cuda.spiking_recurrence, reference.spiking_recurrence):
        x = excitation.detach().clone().requires_grad_()
        ps = [p.detach().clone().requires_grad_() if isinstance(p, torch.Tensor) else p for p in params]
        states, outputs = fn(x, *ps, reset=reset, delay=delay)
        if upstream is None:
            upstream = [
                torch.randn(states.shape, generator=generator, dtype=torch.float64).to(states.dtype)
                if use else None
                for use in upstream_kinds
            ]
        g = grads((states, outputs), [x, *[p for p in ps if isinstance(p, torch.Tensor)]], upstream)
        results.append((states, outputs, g))
    return results


@pytest.mark.parametrize("kind", SHAPE_KINDS)
@pytest.mark.parametrize("used", ["both", "states", "outputs"])
@pytest.mark.parametrize("params", ["floats", "scalar_tensors", "tensors"])
@pytest.mark.parametrize("delay", [True, False], ids=["delay", "nodelay"])
@pytest.mark.parametrize("reset", RESETS)
def test_parity_float64(rng, reset, delay, params, used, kind):
    case = case_for(rng, kind)
    upstream_kinds = {"both": (True, True), "states": (True, False), "outputs": (False, True)}[used]
    ps = make_params(case, params)
    (s_f, o_f, g_f), (s_r, o_r, g_r) = run_both(
        case.excitation, ps, reset, delay, upstream_kinds, rng
    )
    if case.excitation.shape[0] >= 3:
        assert_fires_and_resets(o_r, delay)
    dtype = torch.float64
    assert_close(s_f, s_r, dtype, "states")
    assert_close(o_f, o_r, dtype, "outputs")
    assert_close(g_f[0], g_r[0], dtype, "grad excitation")
    names = ["decay", "threshold", "penalty"]
    assert len(g_f) == len(g_r)
    for name, a, e in zip(names, g_f[1:], g_r[1:]):
        assert_param_grad_close(a, e, dtype, f"grad {name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("delay", [True, False], ids=["delay", "nodelay"])
@pytest.mark.parametrize("reset", RESETS)
def test_parity_low_precision(rng, reset, delay, dtype):
    """Against the reference in the same dtype (per-dtype tolerance), and against float64 truth: the
    fused error may be at most 2x the reference's own error in that dtype (earned, not guessed)."""
    case = case_for(rng, "batch", dtype=dtype)
    ps = make_params(case, "tensors")
    (s_f, o_f, g_f), (s_r, o_r, g_r) = run_both(case.excitation, ps, reset, delay, (True, True), rng)
    assert_fires_and_resets(o_r, delay)
    assert s_f.dtype == dtype and o_f.dtype == dtype and g_f[0].dtype == dtype
    assert_close(s_f, s_r, dtype, "states")
    assert_close(o_f, o_r, dtype, "outputs")
    assert_close(g_f[0], g_r[0], dtype, "grad excitation")
    for name, a, e in zip(["decay", "threshold", "penalty"], g_f[1:], g_r[1:]):
        assert a.dtype == torch.float64  # the parameters' own dtype
        assert_param_grad_close(a, e, dtype, f"grad {name}")

    # Truth: the reference in float64 on the same (rounded) inputs.
    x64 = case.excitation.double()
    s_t, o_t = reference.spiking_recurrence(x64, *[p.detach() for p in ps], reset=reset, delay=delay)
    for what, fused, ref, truth in (("states", s_f, s_r, s_t), ("outputs", o_f, o_r, o_t)):
        err_fused = (fused.double() - truth).norm().item()
        err_ref = (ref.double() - truth).norm().item()
        assert err_fused <= 2 * err_ref + 1e-6 * truth.norm().item(), (
            f"{what}: fused error vs float64 {err_fused:.3e} > 2x the reference's {err_ref:.3e}"
        )


def kink_margin(case, reset, delay):
    """The smallest |u_t - threshold| over the case: how far every element is from the gate."""
    states, _ = reference.spiking_recurrence(
        case.excitation, case.decay, case.threshold, case.penalty, reset=reset, delay=False
    )
    prev = torch.cat([torch.zeros_like(states[:1]), states[:-1]])
    u = case.excitation + case.decay * prev
    return (u - case.threshold).abs().min().item()


@pytest.mark.parametrize("delay", [True, False], ids=["delay", "nodelay"])
@pytest.mark.parametrize("reset", RESETS)
def test_gradcheck(rng, reset, delay):
    """Finite differences through the fused op itself, in float64, inputs away from the gate's kink."""
    for _ in range(100):
        case = random_case(rng, 9, (2,), 3)
        if kink_margin(case, reset, delay) > 1e-3 and (case.excitation > case.threshold).any():
            break
    else:
        pytest.fail("could not draw a case away from the threshold kink")
    inputs = [
        t.clone().requires_grad_()
        for t in (case.excitation, case.decay, case.threshold, case.penalty)
    ]

    def fn(x, d, th, p):
        return snn_cuda.spiking_recurrence(x, d, th, p, reset=reset, delay=delay)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def op_samples(rng, dtype=torch.float64, device="cpu"):
    for reset in RESETS:
        for delay in (True, False):
            case = random_case(rng, 11, (3,), 5, dtype=dtype, device=device)
            acc = torch.float64 if dtype == torch.float64 else torch.float32
            params = [p.to(acc) for p in (case.decay, case.threshold, case.penalty)]
            yield case.excitation, params, reset, delay


def test_opcheck(rng):
    """The registered ops pass torch.library's schema, fake-tensor and AOT-dispatch checks."""
    for x, params, reset, delay in op_samples(rng):
        fwd_args = (x, *params, reset, delay)
        torch.library.opcheck(torch.ops.snn_cuda.spiking_recurrence_fwd.default, fwd_args)
        states, outputs, gates = torch.ops.snn_cuda.spiking_recurrence_fwd(*fwd_args)
        g = torch.randn(states.shape, generator=rng, dtype=x.dtype)
        for gs, go, st, out, needs in (
            (g, g.flip(0), states, outputs, (True, True, True)),
            (None, g, None, outputs, (False, True, False)),
            (g, None, states, None, (True, False, False)),
            (None, None, None, None, (False, False, False)),
        ):
            if reset == "subtract" or not (needs[1] or needs[2]) or out is not None:
                bwd_args = (gs, go, gates, st, out, *params, list(x.shape), x.dtype, reset, delay,
                            *needs)
                torch.library.opcheck(torch.ops.snn_cuda.spiking_recurrence_bwd.default, bwd_args)


def test_gates_are_bit_packed(rng):
    """gates[t // 8, lane] bit t % 8 is [u_t > threshold]; with delay=False, exactly [o_t > 0]."""
    case = random_case(rng, 21, (4,), 6)
    states, outputs, gates = torch.ops.snn_cuda.spiking_recurrence_fwd(
        case.excitation, case.decay, case.threshold, case.penalty, "subtract", False
    )
    assert gates.dtype == torch.uint8 and gates.shape == (3, 24)
    bits = torch.stack([(gates[t // 8].long() >> (t % 8)) & 1 for t in range(21)])
    assert torch.equal(bits.bool(), (outputs > 0).reshape(21, 24))


def test_backward_saves_only_what_it_needs(rng):
    """The backward keeps the 1-bit gates (and the [H] constants); a full [T, lanes] state tensor only
    when the decay needs a gradient, outputs only for the proportional reset's threshold/penalty."""
    T, B, H = 64, 8, 16
    case = random_case(rng, T, (B,), H, dtype=torch.float32)
    itemsize = 4
    gate_bytes = math.ceil(T / 8) * B * H
    const_bytes = 3 * H * itemsize
    full = T * B * H * itemsize

    def saved_bytes(decay, threshold, reset):
        saved = []

        def pack(t):
            saved.append(t.numel() * t.element_size())
            return t

        x = case.excitation.clone().requires_grad_()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            snn_cuda.spiking_recurrence(x, decay, threshold, 1.5, reset=reset)
        return sum(saved)

    learn = case.decay.float().requires_grad_()
    thr = case.threshold.float().requires_grad_()
    assert saved_bytes(0.9, 1.0, "proportional") == gate_bytes + const_bytes
    assert saved_bytes(learn, 1.0, "proportional") == gate_bytes + const_bytes + full
    assert saved_bytes(0.9, thr, "subtract") == gate_bytes + const_bytes
    assert saved_bytes(0.9, thr, "proportional") == gate_bytes + const_bytes + full


@pytest.mark.parametrize("reset", RESETS)
def test_non_contiguous_input(rng, reset):
    case = random_case(rng, 17, (5,), 6)
    x = case.excitation.transpose(0, 1).contiguous().transpose(0, 1)  # [T, B, H], not contiguous
    assert not x.is_contiguous()
    s_f, o_f = snn_cuda.spiking_recurrence(x, case.decay, case.threshold, case.penalty, reset=reset)
    s_r, o_r = reference.spiking_recurrence(x, case.decay, case.threshold, case.penalty, reset=reset)
    assert_close(s_f, s_r, torch.float64, "states")
    assert_close(o_f, o_r, torch.float64, "outputs")


@pytest.mark.parametrize("shape", [(0, 3, 4), (5, 0, 4), (5, 3, 0), (0, 0)])
def test_empty(shape):
    x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    H = shape[-1]
    d = torch.full((H,), 0.9, dtype=torch.float64, requires_grad=True)
    states, outputs = snn_cuda.spiking_recurrence(x, d)
    assert states.shape == shape and outputs.shape == shape
    (states.sum() + outputs.sum()).backward()
    assert x.grad.shape == shape
    assert d.grad.shape == (H,) and torch.all(d.grad == 0)


@pytest.mark.parametrize("delay", [True, False], ids=["delay", "nodelay"])
@pytest.mark.parametrize("reset", RESETS)
def test_nan_propagates_like_the_reference(rng, reset, delay):
    """A NaN in the input gives the reference's forward (same NaNs, same values elsewhere) and a
    backward that runs. Gradients agree on every lane that never saw the NaN; on the NaN lane they
    differ by design: torch's relu backward passes the gradient where its output is NaN
    (relu'(NaN) = 1), while the kernel's one stored bit per step is the gate [u > threshold]."""
    case = random_case(rng, 12, (3,), 4)
    x = case.excitation.clone()
    x[4, 1, 2] = float("nan")
    results = []
    for fn in (snn_cuda.spiking_recurrence, reference.spiking_recurrence):
        xi = x.clone().requires_grad_()
        states, outputs = fn(xi, case.decay, case.threshold, case.penalty, reset=reset, delay=delay)
        (states.sum() + outputs.sum()).backward()
        results.append((states, outputs, xi.grad))
    (s_f, o_f, g_f), (s_r, o_r, g_r) = results
    for what, a, e in (("states", s_f, s_r), ("outputs", o_f, o_r)):
        assert torch.equal(torch.isnan(a), torch.isnan(e)), what
        assert_close(a, e, torch.float64, f"{what} with a NaN input")
    assert torch.isnan(s_f[5:, 1, 2]).all() and not torch.isnan(s_f[:4]).any()
    clean = torch.ones(3, 4, dtype=torch.bool)
    clean[1, 2] = False
    assert torch.isfinite(g_f).all()
    assert_close(g_f[:, clean], g_r[:, clean], torch.float64, "grad on lanes without NaN")


class TestBadInputs:
    def x(self, *shape, dtype=torch.float32):
        return torch.randn(shape or (4, 2, 3)).to(dtype)

    def test_rank(self):
        with pytest.raises(ValueError, match=r"excitation must have shape \[T, \*batch, H\].*got shape \(5,\)"):
            snn_cuda.spiking_recurrence(torch.randn(5))
        # The operator itself checks too, for callers that bypass the Python wrapper.
        p = torch.ones(5)
        with pytest.raises(RuntimeError, match=r"at least 2 dims.*got shape \[5\]"):
            torch.ops.snn_cuda.spiking_recurrence_fwd(torch.randn(5), p, p, p, "subtract", True)

    @pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.complex64, torch.bool])
    def test_dtype(self, dtype):
        with pytest.raises(ValueError, match=f"float64, float32, float16 or bfloat16, got {dtype}"):
            snn_cuda.spiking_recurrence(torch.zeros(4, 2, 3, dtype=dtype))
        p = torch.ones(3)
        with pytest.raises(RuntimeError, match="float64, float32, float16 or bfloat16"):
            torch.ops.snn_cuda.spiking_recurrence_fwd(
                torch.zeros(4, 2, 3, dtype=dtype), p, p, p, "subtract", True
            )

    def test_param_shape(self):
        with pytest.raises(ValueError, match=r"threshold must be a float or a tensor broadcastable to \[H\] = \[3\].*got shape \(4,\)"):
            snn_cuda.spiking_recurrence(self.x(), 0.9, torch.ones(4))
        with pytest.raises(ValueError, match=r"decay_multiplier .*got shape \(1, 3\)"):
            snn_cuda.spiking_recurrence(self.x(), torch.ones(1, 3))
        with pytest.raises(RuntimeError, match=r"penalty_threshold must have shape \[H\] = \[3\].*got shape \[2\]"):
            torch.ops.snn_cuda.spiking_recurrence_fwd(
                self.x(), torch.ones(3), torch.ones(3), torch.ones(2), "subtract", True
            )

    def test_param_device(self):
        with pytest.raises(ValueError, match="decay_multiplier must be on excitation's device cpu, got meta"):
            snn_cuda.spiking_recurrence(self.x(), torch.ones(3, device="meta"))

    def test_param_dtype_at_op_level(self):
        p = torch.ones(3)
        with pytest.raises(RuntimeError, match="decay_multiplier must have dtype Double.*got Float"):
            torch.ops.snn_cuda.spiking_recurrence_fwd(
                self.x(dtype=torch.float64), p, p.double(), p.double(), "subtract", True
            )

    def test_param_type(self):
        with pytest.raises(TypeError, match="threshold must be a float or a tensor, got str"):
            snn_cuda.spiking_recurrence(self.x(), 0.9, "1.0")

    def test_reset(self):
        with pytest.raises(ValueError, match='reset must be "proportional" or "subtract", got \'hard\''):
            snn_cuda.spiking_recurrence(self.x(), reset="hard")
        p = torch.ones(3)
        with pytest.raises(RuntimeError, match='reset must be "proportional" or "subtract", got "hard"'):
            torch.ops.snn_cuda.spiking_recurrence_fwd(self.x(), p, p, p, "hard", True)

    @pytest.mark.parametrize("threshold", [0.0, -1.0])
    def test_proportional_threshold(self, threshold):
        with pytest.raises(ValueError, match=f"threshold must be finite and > 0 .*divides by the threshold.*, got {threshold}"):
            snn_cuda.spiking_recurrence(self.x(), 0.9, threshold, reset="proportional")
        # Subtract does not divide by it: allowed, and equal to the reference.
        s, o = snn_cuda.spiking_recurrence(self.x(), 0.9, threshold, reset="subtract")
        assert torch.isfinite(s).all()

    def test_backward_op_checks(self):
        x = self.x(dtype=torch.float64)
        p = torch.ones(3, dtype=torch.float64)
        _, _, gates = torch.ops.snn_cuda.spiking_recurrence_fwd(x, p, p, p, "subtract", True)
        with pytest.raises(RuntimeError, match=r"gates must be uint8 of shape \[ceil\(T / 8\), lanes\] = \[1, 6\]"):
            torch.ops.snn_cuda.spiking_recurrence_bwd(
                None, x, gates[:, :5], None, None, p, p, p, list(x.shape), x.dtype, "subtract",
                True, False, False, False,
            )
        with pytest.raises(RuntimeError, match="the decay gradient needs the forward's states"):
            torch.ops.snn_cuda.spiking_recurrence_bwd(
                None, x, gates, None, None, p, p, p, list(x.shape), x.dtype, "subtract",
                True, True, False, False,
            )
        with pytest.raises(RuntimeError, match=r"grad_outputs must have shape \[4, 2, 3\], got \[4, 2, 2\]"):
            torch.ops.snn_cuda.spiking_recurrence_bwd(
                None, x[..., :2], gates, None, None, p, p, p, list(x.shape), x.dtype, "subtract",
                True, False, False, False,
            )


def test_function_is_the_registered_op():
    """The autograd Function calls only the registered operators (what torch.compile traces): its
    forward is exactly one spiking_recurrence_fwd, its backward one spiking_recurrence_bwd."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    p = torch.full((3,), 1.0, dtype=torch.float64)
    with Record() as forward:
        states, outputs, gates = SpikingRecurrenceFunction.apply(x, p * 0.9, p, p * 1.5, "proportional", True)
    assert forward.ops[-1] == "snn_cuda.spiking_recurrence_fwd"
    assert forward.ops.count("snn_cuda.spiking_recurrence_fwd") == 1
    assert gates.dtype == torch.uint8 and not gates.requires_grad
    with Record() as backward:
        outputs.sum().backward()
    assert backward.ops.count("snn_cuda.spiking_recurrence_bwd") == 1
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.skipif(
    os.environ.get("SNN_CUDA_EXPECT_CUDA_KERNEL") != "1",
    reason="SNN_CUDA_EXPECT_CUDA_KERNEL is not 1 (set by .ci/run, which builds the CUDA kernels)",
)
def test_cuda_kernels_were_compiled_and_registered():
    """CI builds with SNN_CUDA_BUILD_CUDA=1: the CUDA kernels must be in the library even without a
    GPU to run them."""
    for op in ("spiking_recurrence_fwd", "spiking_recurrence_bwd"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"snn_cuda::{op}", "CUDA"), op


@pytest.mark.skipif(
    os.environ.get("SNN_TEST_BIG") != "1",
    reason="needs ~15 GB of RAM and a minute: set SNN_TEST_BIG=1 to run (64-bit offsets on the CPU)",
)
def test_more_than_2_to_the_31_elements_on_cpu():
    """64-bit offsets in the shared lane loops: T * lanes > 2**31, checked at both ends of the lanes."""
    T, lanes = 3, (2**31) // 3 + 4099
    x = torch.empty(T, lanes, dtype=torch.float16).uniform_(-1, 3)
    states, outputs = snn_cuda.spiking_recurrence(x, 0.9, 1.0, 1.5, delay=False)
    for sl in (slice(0, 1000), slice(lanes - 1000, lanes)):
        s_r, o_r = reference.spiking_recurrence(x[:, sl], 0.9, 1.0, 1.5, delay=False)
        assert_close(states[:, sl], s_r, torch.float16, "states")
        assert_close(outputs[:, sl], o_r, torch.float16, "outputs")
        assert (o_r > 0).any()


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("params", ["floats", "tensors"])
def test_initial_state_matches_reference(rng, reset, params):
    """spiking_recurrence(..., delay=False, initial=v): forward and every gradient (the initial
    state's included) against the reference loop started from v, float64 to 1e-12; and running
    two halves, the second from the first's last state, gives the whole sequence."""
    case = case_for(rng, "batch")
    ps = make_params(case, params)
    v0 = torch.randn(case.excitation.shape[1:], generator=rng, dtype=torch.float64)
    results = []
    for fn in (snn_cuda.spiking_recurrence, reference.spiking_recurrence):
        x = case.excitation.detach().clone().requires_grad_()
        init = v0.clone().requires_grad_()
        qs = [p.detach().clone().requires_grad_() if isinstance(p, torch.Tensor) else p for p in ps]
        states, outputs = fn(x, *qs, reset=reset, delay=False, initial=init)
        leaves = [x, init, *[q for q in qs if isinstance(q, torch.Tensor)]]
        up = torch.linspace(-1, 1, states.numel(), dtype=torch.float64).reshape(states.shape)
        g = torch.autograd.grad((states * up).sum() + (outputs * up.flip(0)).sum(), leaves)
        results.append((states, outputs, g))
    (s, o, g), (rs, ro, rg) = results
    assert_close(s, rs, torch.float64, "states")
    assert_close(o, ro, torch.float64, "outputs")
    assert_fires_and_resets(o, delay=False)
    for name, a, b in zip(["excitation", "initial", "decay", "threshold", "penalty"], g, rg):
        assert_param_grad_close(a, b, torch.float64, f"grad {name}")
        assert b.abs().max() > 0, name
    k = case.excitation.shape[0] // 2
    first = snn_cuda.spiking_recurrence(case.excitation[:k], *ps, reset=reset, delay=False, initial=v0)
    second = snn_cuda.spiking_recurrence(case.excitation[k:], *ps, reset=reset, delay=False,
                                         initial=first[0][-1])
    assert torch.equal(torch.cat([first[0], second[0]]), s.detach())
    assert torch.equal(torch.cat([first[1], second[1]]), o.detach())


def test_initial_state_gradcheck_and_opcheck(rng):
    case = random_case(rng, 9, (2,), 4)
    x = case.excitation.clone().requires_grad_()
    init = torch.randn(2, 4, generator=rng, dtype=torch.float64, requires_grad=True)
    decay = case.decay.clone().requires_grad_()
    for reset in RESETS:
        assert torch.autograd.gradcheck(
            lambda x, init, decay: snn_cuda.spiking_recurrence(
                x, decay, case.threshold, case.penalty, reset=reset, delay=False, initial=init),
            (x, init, decay))
        fwd = (case.excitation, case.decay, case.threshold, case.penalty, reset, False, init.detach())
        torch.library.opcheck(torch.ops.snn_cuda.spiking_recurrence_fwd.default, fwd)
        states, outputs, gates = torch.ops.snn_cuda.spiking_recurrence_fwd(*fwd)
        g = torch.randn_like(states)
        bwd = (g, g, gates, states, outputs, case.decay, case.threshold, case.penalty,
               list(states.shape), states.dtype, reset, False, True, True, True, init.detach(), True)
        torch.library.opcheck(torch.ops.snn_cuda.spiking_recurrence_bwd.default, bwd)
    with pytest.raises(ValueError, match="an initial state needs delay=False"):
        snn_cuda.spiking_recurrence(x, 0.9, 1.0, 1.5, initial=init)
    with pytest.raises(ValueError, match=r"initial must have the shape of one excitation step \(2, 4\)"):
        snn_cuda.spiking_recurrence(x, 0.9, 1.0, 1.5, delay=False, initial=init[0])
    p = torch.ones(4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="an initial state needs delay=False"):
        torch.ops.snn_cuda.spiking_recurrence_fwd(case.excitation, p, p, p, "subtract", True, init.detach())
    with pytest.raises(RuntimeError, match=r"initial \(one step of excitation\) must have shape"):
        torch.ops.snn_cuda.spiking_recurrence_fwd(case.excitation, p, p, p, "subtract", False, init[0].detach())


def test_second_derivative_raises_instead_of_returning_zeros(rng):
    """The backward kernels have no derivative of their own: differentiating the first derivative
    again raises a clear error (it used to give zeros silently), for every fused entry point."""
    x = torch.randn(6, 2, 3, generator=rng, dtype=torch.float64, requires_grad=True)
    entry_points = {
        "spiking_recurrence": lambda x: snn_cuda.spiking_recurrence(x, 0.9, 1.0, 1.5)[0],
        "lif": lambda x: snn_cuda.lif(x, 0.9)[1],
        "lif_step": lambda x: snn_cuda.lif_step(x[0], 0.9, initial=x[1])[1],
    }
    for name, f in entry_points.items():
        (g,) = torch.autograd.grad(f(x).pow(2).sum(), x, create_graph=True)
        (plain,) = torch.autograd.grad(f(x).pow(2).sum(), x)
        assert torch.equal(g.detach(), plain), name  # create_graph changes no first derivative
        with pytest.raises(RuntimeError, match="fused ops have a first derivative only"):
            torch.autograd.grad(g.sum(), x)
        with pytest.raises(RuntimeError, match="fused ops have a first derivative only"):
            g.sum().backward()
