"""The CUDA kernel against the CPU kernel and the reference. Skipped (with the reason) without a GPU.

The arithmetic the GPU runs is the CPU's (one shared header), so these tests check the launch:
indexing by thread, the device guard, streams, dtypes, and 64-bit offsets.
"""

import itertools

import pytest
import torch

import snn_cuda
from snn_cuda import SpikingNeuronLayer, reference
from snn_cuda.ops import RESETS

from helpers import (
    CONVENTIONS,
    LIF_GRAD_TOL,
    LIF_MODES,
    SURROGATES,
    assert_close,
    assert_fires_and_resets,
    assert_param_grad_close,
    assert_rel_close,
    assert_spikes_and_resets,
    grads,
    lif_case,
    random_case,
    random_surrogate,
    run_lif,
)

pytestmark = pytest.mark.cuda


def has_cuda_kernel():
    return torch.cuda.is_available() and torch._C._dispatch_has_kernel_for_dispatch_key(
        "snn_cuda::spiking_recurrence_fwd", "CUDA"
    )


def test_cuda_kernel_is_built():
    assert has_cuda_kernel(), "snn_cuda was built without its CUDA kernels (SNN_CUDA_BUILD_CUDA=0?)"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("delay", [True, False], ids=["delay", "nodelay"])
@pytest.mark.parametrize("reset", RESETS)
def test_cuda_matches_cpu_and_reference(rng, reset, delay, dtype):
    T = 2 * int(torch.randint(20, 150, (1,), generator=rng)) + 1
    case = random_case(rng, T, (int(torch.randint(1, 40, (1,), generator=rng)),), 67, dtype=dtype)
    upstream = [torch.randn(case.excitation.shape, generator=rng).to(dtype) for _ in range(2)]
    results = {}
    for name, device, fn in (
        ("cpu", "cpu", snn_cuda.spiking_recurrence),
        ("cuda", "cuda", snn_cuda.spiking_recurrence),
        ("reference", "cuda", reference.spiking_recurrence),
    ):
        x = case.excitation.to(device).requires_grad_()
        ps = [p.to(device).requires_grad_() for p in (case.decay, case.threshold, case.penalty)]
        states, outputs = fn(x, *ps, reset=reset, delay=delay)
        g = grads((states, outputs), [x, *ps], [u.to(device) for u in upstream])
        results[name] = [t.cpu() for t in (states, outputs, *g)]
    assert_fires_and_resets(results["reference"][1], delay)
    names = ["states", "outputs", "grad excitation"]
    for other in ("cpu", "reference"):
        for i, what in enumerate(names):
            assert_close(results["cuda"][i], results[other][i], dtype, f"cuda vs {other}: {what}")
        for i, what in enumerate(["decay", "threshold", "penalty"], start=3):
            assert_param_grad_close(results["cuda"][i], results[other][i], dtype, f"cuda vs {other}: grad {what}")


def test_cuda_layer_and_compile(rng):
    layer = SpikingNeuronLayer(20, 16, 0.9, 1.0, 1.5, learn_threshold=True).cuda()
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.rand(64, 8, 20, generator=rng).cuda() * 1.5
    eager = layer(x)
    out = compiled(x)
    for a, b in zip(eager, out):
        assert_close(b, a, torch.float32, "compiled vs eager on CUDA")


def test_cuda_on_a_second_device_and_side_stream(rng):
    """Runs on the tensor's device and on the current stream, whatever the current device is."""
    device = torch.device("cuda", torch.cuda.device_count() - 1)
    case = random_case(rng, 40, (6,), 9, dtype=torch.float32)
    expected = snn_cuda.spiking_recurrence(case.excitation, 0.9, 1.0, 1.5)
    stream = torch.cuda.Stream(device)
    with torch.cuda.device(device), torch.cuda.stream(stream):
        got = snn_cuda.spiking_recurrence(case.excitation.to(device), 0.9, 1.0, 1.5)
    stream.synchronize()
    for a, b in zip(got, expected):
        assert_close(a.cpu(), b, torch.float32, "on a side stream")


def test_cuda_param_on_wrong_device():
    x = torch.randn(4, 2, 3, device="cuda")
    with pytest.raises(ValueError, match="threshold must be on excitation's device cuda:0, got cpu"):
        snn_cuda.spiking_recurrence(x, 0.9, torch.ones(3))


def test_cuda_more_than_2_to_the_31_elements():
    """64-bit offsets: T * lanes > 2**31. Needs ~13 GB of GPU memory (float16)."""
    free, _ = torch.cuda.mem_get_info()
    T, lanes = 3, (2**31) // 3 + 4099
    if free < 16 * 2**30:
        pytest.skip(f"needs ~16 GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    x = torch.empty(T, lanes, dtype=torch.float16, device="cuda").uniform_(-1, 3)
    states, outputs = snn_cuda.spiking_recurrence(x, 0.9, 1.0, 1.5, delay=False)
    # Check the lanes at both ends of the range against the reference.
    for sl in (slice(0, 1000), slice(lanes - 1000, lanes)):
        s_r, o_r = reference.spiking_recurrence(x[:, sl], 0.9, 1.0, 1.5, delay=False)
        assert_close(states[:, sl], s_r, torch.float16, "states at the far end")
        assert_close(outputs[:, sl], o_r, torch.float16, "outputs at the far end")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_cuda_lif_matches_cpu_and_reference(rng, convention, dtype):
    """Binary spikes: the CUDA kernel's spikes and membranes equal the CPU kernel's and the
    reference's bit for bit (no FMA contraction, IEEE division on both); gradients to rounding
    (the sigmoid surrogate's exp differs by an ulp or two between libm and CUDA)."""
    resets = [r for c, r in LIF_MODES if c == convention]
    for reset, surrogate_name in itertools.product(resets, SURROGATES):
        T = int(torch.randint(40, 200, (1,), generator=rng))
        case = lif_case(rng, convention, dtype, shape=(T, int(torch.randint(1, 40, (1,), generator=rng)), 67),
                        reset=reset)
        options = dict(convention=convention, reset=reset, surrogate=random_surrogate(rng, surrogate_name),
                       detach_reset=bool(torch.randint(0, 2, (1,), generator=rng)),
                       decay_input=bool(torch.randint(0, 2, (1,), generator=rng)))
        upstream = [torch.randn(case["input"].shape, generator=rng).to(dtype) for _ in range(2)]
        names = ("input", "decay", "threshold", "initial")
        results = {}
        for name, device, fn in (("cpu", "cpu", snn_cuda.lif), ("cuda", "cuda", snn_cuda.lif),
                                 ("reference", "cuda", reference.lif)):
            on_device = {k: v.to(device) for k, v in case.items()}
            spikes, membrane, g = run_lif(fn, on_device, options, names, [u.to(device) for u in upstream])
            results[name] = (spikes.cpu(), membrane.cpu(), {k: v.cpu() for k, v in g.items()})
        assert_spikes_and_resets(results["cuda"][0])
        for other in ("cpu", "reference"):
            assert torch.equal(results["cuda"][0], results[other][0]), f"spikes: cuda vs {other} {options}"
            assert torch.equal(results["cuda"][1], results[other][1]), f"membrane: cuda vs {other} {options}"
            for k in names:
                assert_rel_close(results["cuda"][2][k], results[other][2][k],
                                 max(LIF_GRAD_TOL[dtype], 1e-9 if dtype == torch.float64 else 0),
                                 f"grad {k}: cuda vs {other} {options}")


def test_cuda_neurons_match_cpu(rng):
    x = torch.randn(100, 8, 32, generator=rng) * 0.8 + 0.6
    for make in (lambda: snn_cuda.Leaky(beta=torch.full((32,), 0.9), learn_beta=True, step_mode="m"),
                 lambda: snn_cuda.LIFNode(step_mode="m", v_reset=None)):
        outs = []
        for device in ("cpu", "cuda"):
            module = make().to(device)
            xx = x.to(device).requires_grad_()
            out = module(xx)
            spikes = out[0] if isinstance(out, tuple) else out
            (g,) = torch.autograd.grad(spikes.sum(), xx)
            outs.append((spikes.cpu(), g.cpu()))
        assert torch.equal(outs[0][0], outs[1][0])
        assert_rel_close(outs[1][1], outs[0][1], 1e-5, "grad input, cuda vs cpu")



# ------------------------------------------------------------------------------------------------
# What a GPU breaks that a CPU cannot show: devices, streams, 64-bit offsets past 2^31 in every
# kernel, the chunked (software-pipelined) time loop at its chunk boundaries, many waves of blocks,
# run-to-run determinism, the registered ops' fake kernels and torch.compile on CUDA.


def _needs_free_memory(gib):
    free, _ = torch.cuda.mem_get_info()
    if free < gib * 2**30:
        pytest.skip(f"needs ~{gib} GiB of free GPU memory, {free / 2**30:.1f} GiB free")


def _rec_results(x, reset="proportional", delay=True, initial=None):
    """Forward and every gradient of the graded op on x's device, as CPU tensors."""
    gen = torch.Generator().manual_seed(5)
    x = x.detach().clone().requires_grad_()
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    params = [torch.full((x.shape[-1],), v, dtype=acc, device=x.device, requires_grad=True)
              for v in (0.9, 1.0, 1.5)]
    if initial is not None:
        initial = initial.detach().clone().requires_grad_()
    states, outputs = snn_cuda.spiking_recurrence(x, *params, reset=reset, delay=delay, initial=initial)
    w = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype).to(x.device)
    leaves = [x, *params] + ([initial] if initial is not None else [])
    if x.numel() == 0:
        return [states.cpu(), outputs.cpu()]
    grads = torch.autograd.grad((states * w).sum() + (outputs * w).sum(), leaves)
    return [t.cpu() for t in (states, outputs, *grads)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_cuda_equals_cpu_bitwise_at_chunk_boundaries(rng, dtype):
    """The time loop runs in chunks of 8 steps whose loads are issued before their chain: every T
    around a chunk boundary, both flavours of the CPU loops and the GPU give the same bits (no FMA
    contraction on either side, the same operations in the same order)."""
    from snn_cuda.ops import gpu_lane_loops

    for T, reset, delay in itertools.product((1, 7, 8, 9, 15, 16, 17, 33), RESETS, (True, False)):
        x = (torch.randn(T, 5, 67, generator=rng, dtype=torch.float64) * 0.9 + 0.5).to(dtype)
        cpu = _rec_results(x, reset, delay)
        with gpu_lane_loops():
            lanes = _rec_results(x, reset, delay)
        cuda = _rec_results(x.cuda(), reset, delay)
        label = f"T={T} {reset} delay={delay}"
        for i, (a, b, c) in enumerate(zip(cpu, lanes, cuda)):
            assert torch.equal(a, b), f"{label}: result {i}, CPU lane loops"
            if i < 3:  # states, outputs, grad x: elementwise, the same bits
                assert torch.equal(a, c), f"{label}: result {i}, CUDA"
            else:  # parameter gradients: summed over the batch by torch, in its own order per device
                assert_param_grad_close(c, a, dtype, f"{label}: result {i}, CUDA")
    for T, (convention, reset) in itertools.product((1, 7, 8, 9, 17), LIF_MODES):
        x = (torch.randn(T, 5, 67, generator=rng, dtype=torch.float64) * 0.9 + 0.6).to(dtype)
        results = []
        for device in ("cpu", "cuda"):
            xx = x.to(device).requires_grad_()
            spikes, membrane, state = snn_cuda.lif(xx, 0.9 if convention.startswith("snntorch") else 2.0, 1.0,
                                                   convention=convention, reset=reset,
                                                   surrogate="atan", return_state=True)
            (g,) = torch.autograd.grad(spikes.sum() + membrane.sum() + state.sum(), xx)
            results.append([t.cpu() for t in (spikes, membrane, state, g)])
        for i, (a, b) in enumerate(zip(*results)):
            assert torch.equal(a, b), f"lif T={T} {convention} {reset}: result {i}"


def test_cuda_tensors_on_a_device_that_is_not_current(rng):
    """Tensors on cuda:1 while cuda:0 is current: the kernels run on cuda:1 (the launch object's
    device guard), forward and backward, graded and binary."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices (tensors on cuda:1 while cuda:0 is current)")
    x = torch.randn(20, 4, 33, generator=rng) * 0.9 + 0.5
    expected = _rec_results(x)
    with torch.cuda.device(0):
        got = _rec_results(x.to("cuda:1"))
        spikes, membrane = snn_cuda.lif(x.to("cuda:1"), 0.9)
    for a, b in zip(got, expected):
        assert_close(a, b, torch.float32, "on cuda:1 while cuda:0 is current")
    cpu_spikes, cpu_membrane = snn_cuda.lif(x, 0.9)
    assert torch.equal(spikes.cpu(), cpu_spikes) and torch.equal(membrane.cpu(), cpu_membrane)


def test_cuda_runs_on_the_current_stream(rng):
    """A producer on a side stream, delayed by a spin of ~50 ms, writes the input; the op called on
    that stream must wait for it. A kernel launched on the default stream would read the zeros the
    input held before (and a backward on the wrong stream the gradients' old values)."""
    src = torch.randn(64, 8, 129, generator=rng) * 0.9 + 0.5
    expected = _rec_results(src)
    x = torch.zeros(src.shape, device="cuda")
    host = src.pin_memory()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        torch.cuda._sleep(100_000_000)  # GPU clock cycles: ~50-70 ms at 1.5-2 GHz
        x.copy_(host, non_blocking=True)
        got = _rec_results(x)  # the .cpu() at the end synchronises with this stream
    for a, b in zip(got, expected):
        assert_close(a, b, torch.float32, "op on the producer's side stream")
    with torch.cuda.stream(stream):
        torch.cuda._sleep(100_000_000)
        y = torch.zeros(src.shape, device="cuda")
        y.copy_(host, non_blocking=True)
        spikes, membrane = snn_cuda.lif(y, 0.9)
        spikes_cpu = spikes.cpu()
    assert torch.equal(spikes_cpu, snn_cuda.lif(src, 0.9)[0])


def test_cuda_backward_and_lif_past_2_to_the_31_elements():
    """64-bit offsets in the backward and in both LIF kernels: T * lanes > 2^31 (float16)."""
    _needs_free_memory(48)
    T, lanes = 3, (2**31) // 3 + 4099
    x = torch.empty(T, lanes, dtype=torch.float16, device="cuda").uniform_(-1, 3).requires_grad_()
    states, outputs = snn_cuda.spiking_recurrence(x, 0.9, 1.0, 1.5, delay=False)
    (g,) = torch.autograd.grad(outputs.sum(), x)
    del states, outputs
    far = [slice(0, 1000), slice(lanes - 1000, lanes)]
    for sl in far:
        xs = x[:, sl].detach().clone().requires_grad_()
        _, o_r = reference.spiking_recurrence(xs, 0.9, 1.0, 1.5, delay=False)
        (g_r,) = torch.autograd.grad(o_r.sum(), xs)
        assert_close(g[:, sl], g_r, torch.float16, "grad at the far end")
    del g
    spikes, membrane = snn_cuda.lif(x, 0.9)
    (g,) = torch.autograd.grad(spikes.sum() + membrane.sum(), x)
    for sl in far:
        xs = x[:, sl].detach().clone().requires_grad_()
        s_r, m_r = reference.lif(xs, 0.9)
        (g_r,) = torch.autograd.grad(s_r.sum() + m_r.sum(), xs)
        assert torch.equal(spikes[:, sl], s_r) and torch.equal(membrane[:, sl], m_r)
        assert_rel_close(g[:, sl], g_r, LIF_GRAD_TOL[torch.float16], "lif grad at the far end")


def test_cuda_opcheck():
    """The registered ops' fake kernels, schemas and autograd registrations on CUDA tensors."""
    x = torch.randn(9, 3, 5, device="cuda") * 0.9 + 0.5
    p = torch.ones(5, device="cuda")
    torch.library.opcheck(torch.ops.snn_cuda.spiking_recurrence_fwd.default,
                          (x, p * 0.9, p, p * 1.5, "subtract", False, torch.zeros(3, 5, device="cuda")))
    states, outputs, gates = torch.ops.snn_cuda.spiking_recurrence_fwd(x, p * 0.9, p, p * 1.5, "proportional", True)
    torch.library.opcheck(torch.ops.snn_cuda.spiking_recurrence_bwd.default,
                          (outputs, outputs, gates, states, outputs, p * 0.9, p, p * 1.5, [9, 3, 5],
                           torch.float32, "proportional", True, True, True, True))
    torch.library.opcheck(torch.ops.snn_cuda.lif_fwd.default,
                          (x, None, p * 0.9, p, p * 0, "snntorch", "subtract", True))
    spikes, membrane, state = torch.ops.snn_cuda.lif_fwd(x, None, p * 2, p, p * 0, "spikingjelly", "hard", True)
    torch.library.opcheck(torch.ops.snn_cuda.lif_bwd.default,
                          (spikes, membrane, state, membrane, None, x, p * 2, p, p * 0, "spikingjelly",
                           "hard", True, False, "sigmoid", 4.0, True, True))


@pytest.mark.parametrize("shape", [(0, 3, 5), (4, 0, 5), (4, 3, 0)], ids=["T0", "no_batch", "no_neurons"])
def test_cuda_empty(shape):
    x = torch.randn(shape, device="cuda", requires_grad=True)
    states, outputs = snn_cuda.spiking_recurrence(x, 0.9, 1.0, 1.5)
    spikes, membrane, state = snn_cuda.lif(x, 0.9, return_state=True)
    assert states.shape == shape and spikes.shape == shape and state.shape == shape[1:]
    (states.sum() + outputs.sum() + spikes.sum() + membrane.sum()).backward()
    assert x.grad.shape == shape


def test_cuda_non_contiguous_inputs(rng):
    base = torch.randn(33, 5, 2 * 67, generator=rng) * 0.9 + 0.5
    for view in (lambda t: t[..., ::2], lambda t: t.transpose(1, 2)[:, ::2].transpose(1, 2)):
        expected = _rec_results(view(base).contiguous())
        got = _rec_results(view(base.cuda()))
        for a, b in zip(got, expected):
            assert_close(a, b, torch.float32, "non-contiguous on CUDA")
        s_cpu, m_cpu = snn_cuda.lif(view(base), 0.9)
        s_gpu, m_gpu = snn_cuda.lif(view(base.cuda()), 0.9)
        assert torch.equal(s_gpu.cpu(), s_cpu) and torch.equal(m_gpu.cpu(), m_cpu)


def test_cuda_compile_lif(rng):
    x = (torch.randn(40, 8, 32, generator=rng) * 0.9 + 0.5).cuda()

    def f(x, beta):
        spikes, membrane = snn_cuda.lif(x, beta, 1.0)
        return spikes.sum() + membrane.sum()

    beta = torch.full((32,), 0.9, device="cuda", requires_grad=True)
    xx = x.clone().requires_grad_()
    eager = f(xx, beta)
    eager_grads = torch.autograd.grad(eager, (xx, beta))
    compiled = torch.compile(f, fullgraph=True)
    xx2 = x.clone().requires_grad_()
    beta2 = beta.detach().clone().requires_grad_()
    out = compiled(xx2, beta2)
    grads = torch.autograd.grad(out, (xx2, beta2))
    assert torch.equal(out, eager)
    for a, b in zip(grads, eager_grads):
        assert torch.equal(a, b)


def test_cuda_parameter_gradients_are_deterministic(rng):
    """Per-lane partial sums and a fixed-order reduction: the same bits on every run."""
    x = (torch.randn(64, 32, 200, generator=rng) * 0.9 + 0.5).cuda()
    runs = [_rec_results(x) for _ in range(3)]
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            assert torch.equal(a, b)
    lif_runs = []
    for _ in range(3):
        beta = torch.full((200,), 0.9, device="cuda", requires_grad=True)
        threshold = torch.full((200,), 1.0, device="cuda", requires_grad=True)
        spikes, membrane = snn_cuda.lif(x, beta, threshold)
        lif_runs.append(torch.autograd.grad(spikes.sum() + membrane.sum(), (beta, threshold)))
    for run in lif_runs[1:]:
        for a, b in zip(run, lif_runs[0]):
            assert torch.equal(a, b)


def test_cuda_many_waves(rng):
    """~2 * 10^6 lanes: many waves of thread blocks, the last one partial."""
    _needs_free_memory(4)
    x = torch.randn(12, 2_000_003, generator=rng) * 0.9 + 0.5
    expected = _rec_results(x)
    got = _rec_results(x.cuda())
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    s_cpu, m_cpu = snn_cuda.lif(x, 0.9)
    s_gpu, m_gpu = snn_cuda.lif(x.cuda(), 0.9)
    assert torch.equal(s_gpu.cpu(), s_cpu) and torch.equal(m_gpu.cpu(), m_cpu)
