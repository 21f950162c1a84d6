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

