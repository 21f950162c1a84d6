"""Property-based: hypothesis draws shapes, memory layouts, dtypes, parameter kinds, options and
non-finite values; the fused ops must agree with the reference loops on each draw.

Bounded: PROPERTY_EXAMPLES draws per test (default 60; raise it for a longer fuzzing run). Seeded
from the run's SNN_TEST_SEED (printed at the end of every run), so a failing run replays with
``SNN_TEST_SEED=<seed> pytest tests/test_properties.py``; hypothesis also prints the failing draw.

Half the draws run the fused op's CPU kernels in the GPU's one-lane flavour (gpu_lane_loops).

What "agree" means (docs/semantics.md): forwards equal to the dtype's tolerance with NaN in the
same places; every gradient too, except on the NaN lanes of spiking_recurrence (a lane whose state
turns NaN; its gradients there are documented to differ) -- parameter gradients, which sum over
lanes, are compared when no lane is NaN.
"""

import contextlib
import os

import pytest
import torch

import snn_cuda
from snn_cuda import reference, surrogate
from snn_cuda.ops import gpu_lane_loops

from conftest import SEED
from helpers import LIF_GRAD_TOL, SCALE_RANGE, SURROGATES, TOLERANCES

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "60"))
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = ["contiguous", "sliced", "transposed", "expanded"]
PARAM_KINDS = ["float", "scalar", "one", "neuron", "neuron_strided"]
SPECIALS = ["finite", "finite", "inf", "nan", "huge"]

PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def seeded(test):
    return hypothesis.seed(SEED)(test)


# ------------------------------------------------------------------------------------------------
# Drawing.


@st.composite
def common(draw, step_params=False):
    dtype = draw(st.sampled_from(DTYPES))
    T = draw(st.integers(0, 6))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    H = draw(st.integers(1, 5))
    kinds = PARAM_KINDS + (["step"] if step_params else [])
    return dict(
        dtype=dtype,
        shape=(T, *batch, H),
        layout=draw(st.sampled_from(LAYOUTS if batch else LAYOUTS[:3])),
        special=draw(st.sampled_from(SPECIALS)),
        param_kinds=[draw(st.sampled_from(kinds)) for _ in range(3)],
        learn=[draw(st.booleans()) for _ in range(3)],
        param_dtype=draw(st.sampled_from(["input", "accumulation"])),
        with_initial=draw(st.booleans()),
        used=draw(st.sampled_from([(True, False), (False, True), (True, True)])),
        seed=draw(st.integers(0, 2**31 - 1)),
        # The CPU kernels in the GPU's one-lane flavour (tests/test_lane_loops.py), or in blocks.
        lane_loops=draw(st.booleans()),
    )


def fused_flavour(case):
    return gpu_lane_loops() if case["lane_loops"] else contextlib.nullcontext()


def base_shape(shape, layout):
    if layout == "sliced":
        return (*shape[:-1], 2 * shape[-1])
    if layout == "transposed":
        return tuple(reversed(shape))
    if layout == "expanded":
        return (shape[0], 1, *shape[2:])
    return shape


def view_of(base, shape, layout):
    """The logical tensor ``shape`` as a view of ``base`` in the drawn memory layout."""
    if layout == "sliced":
        return base[..., ::2]
    if layout == "transposed":
        return base.permute(*reversed(range(base.dim())))
    if layout == "expanded":
        return base.expand(shape)
    return base


def input_values(case, gen, mean, scale):
    x = torch.randn(base_shape(case["shape"], case["layout"]), generator=gen, dtype=torch.float64)
    x = x * scale + mean
    special = case["special"]
    if special != "finite" and x.numel():
        mask = torch.rand(x.shape, generator=gen) < 0.15
        if special == "inf":
            signs = torch.where(torch.rand(x.shape, generator=gen) < 0.5, -1.0, 1.0).double()
            x[mask] = signs[mask] * float("inf")
        elif special == "nan":
            x[mask] = float("nan")
        else:  # beyond float16's range: overflows in the state (or at once in float16)
            x[mask] = 1e5
    return x.to(case["dtype"])


def param_value(kind, low, high, case, gen):
    H = case["shape"][-1]
    dtype = case["dtype"] if case["param_dtype"] == "input" else snn_cuda.ops.accumulation_dtype(case["dtype"])

    def uniform(shape):
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * (high - low) + low).to(dtype)

    if kind == "float":
        return float(uniform(()))
    if kind == "scalar":
        return uniform(())
    if kind == "one":
        return uniform((1,))
    if kind == "neuron":
        return uniform((H,))
    if kind == "neuron_strided":
        return uniform((2 * H,))[::2]
    return uniform(case["shape"][1:])  # "step": one value per lane (lif's flat path)


def initial_for(case, gen):
    """The drawn initial state (one step, in the input's dtype), or None."""
    if not case["with_initial"]:
        return None
    step_shape = case["shape"][1:]
    return (torch.randn(step_shape, generator=gen, dtype=torch.float64) * 0.5).to(case["dtype"])


def leaves_for(case, values, initial):
    """Fresh leaves (requiring grad where drawn) for one run, and the logical arguments."""
    x_base = values["x"].clone().requires_grad_()
    params, leaves = [], {"x": x_base}
    for i, value in enumerate(values["params"]):
        if isinstance(value, torch.Tensor):
            value = value.clone()
            if case["learn"][i]:
                value.requires_grad_()
                leaves[f"param{i}"] = value
        params.append(value)
    init = None
    if initial is not None:
        init = initial.clone().requires_grad_()
        leaves["initial"] = init
    return view_of(x_base, case["shape"], case["layout"]), params, init, leaves


def gradients(outputs, weights, used, leaves):
    loss = sum((o.double() * w).sum() for o, w, u in zip(outputs, weights, used) if u)
    if not (isinstance(loss, torch.Tensor) and loss.requires_grad):
        return {name: torch.zeros_like(t) for name, t in leaves.items()}
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return {n: torch.zeros_like(t) if g is None else g for (n, t), g in zip(leaves.items(), grads)}


# ------------------------------------------------------------------------------------------------
# Comparing.


def assert_agree(actual, expected, tol, what, rel_to_scale=False):
    """Same NaN and same infinity positions; the finite rest within tolerance: elementwise
    atol + rtol * |e| (``tol`` a dict), or relative to the tensor's scale (``tol`` a float)."""
    a, e = actual.double(), expected.double()
    assert a.shape == e.shape, f"{what}: shapes {tuple(a.shape)} vs {tuple(e.shape)}"
    assert torch.equal(torch.isnan(a), torch.isnan(e)), f"{what}: NaN in different places"
    inf_a, inf_e = torch.isinf(a), torch.isinf(e)
    assert torch.equal(inf_a, inf_e) and torch.equal(a[inf_a], e[inf_e]), f"{what}: infinities differ"
    finite = torch.isfinite(e)
    a, e = a[finite], e[finite]
    if not e.numel():
        return
    diff = (a - e).abs()
    if rel_to_scale:
        err = diff.max().item() / max(e.abs().max().item(), 1.0)
        assert err <= tol, f"{what}: relative error {err:.3e} > {tol}"
    else:
        bound = tol["atol"] + tol["rtol"] * e.abs()
        assert bool((diff <= bound).all()), f"{what}: max abs diff {diff.max().item():.3e}"


def param_tol(dtype):
    return TOLERANCES[dtype]["param"]


# ------------------------------------------------------------------------------------------------
# spiking_recurrence


@st.composite
def recurrence_cases(draw):
    case = draw(common())
    case["reset"] = draw(st.sampled_from(["proportional", "subtract"]))
    case["delay"] = draw(st.booleans())
    case["with_initial"] = case["with_initial"] and not case["delay"]
    return case


@seeded
@PROPERTY
@given(case=recurrence_cases())
def test_spiking_recurrence_matches_reference(case):
    gen = torch.Generator().manual_seed(case["seed"])
    dtype, shape = case["dtype"], case["shape"]
    values = dict(
        x=input_values(case, gen, 0.5, 1.0),
        params=[param_value(kind, low, high, case, gen) for kind, (low, high) in
                zip(case["param_kinds"], [(0.5, 1.0), (0.5, 1.5), (0.5, 2.0)])],
    )
    initial = initial_for(case, gen)
    weights = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(2)]
    results = []
    for fn in (snn_cuda.spiking_recurrence, reference.spiking_recurrence):
        x, params, init, leaves = leaves_for(case, values, initial)
        with fused_flavour(case) if fn is snn_cuda.spiking_recurrence else contextlib.nullcontext():
            states, outputs = fn(x, *params, reset=case["reset"], delay=case["delay"], initial=init)
            grads = gradients((states, outputs), weights, case["used"], leaves)
        results.append(((states, outputs), grads))
    (fwd_f, grads_f), (fwd_r, grads_r) = results
    tol = TOLERANCES[dtype]
    for name, a, e in zip(("states", "outputs"), fwd_f, fwd_r):
        assert a.dtype == dtype and a.shape == shape
        assert_agree(a, e, tol, name)

    # NaN lanes: where the state turns NaN (the undelayed reference shows every step's state).
    x_logical = view_of(values["x"], shape, case["layout"])
    s, o = reference.spiking_recurrence(x_logical, *[p.detach() if isinstance(p, torch.Tensor) else p
                                                     for p in values["params"]],
                                        reset=case["reset"], delay=False, initial=initial)
    nan_lanes = (torch.isnan(s) | torch.isnan(o)).any(0) if shape[0] else torch.zeros(shape[1:], dtype=torch.bool)
    clean = ~nan_lanes
    gx_f = view_of(grads_f["x"], shape, case["layout"]) if case["layout"] != "expanded" else grads_f["x"]
    gx_r = view_of(grads_r["x"], shape, case["layout"]) if case["layout"] != "expanded" else grads_r["x"]
    lanes = clean if case["layout"] != "expanded" else clean.all(0, keepdim=True)
    assert_agree(gx_f[:, lanes], gx_r[:, lanes], tol, "grad excitation (lanes without NaN)")
    if "initial" in grads_f:
        assert_agree(grads_f["initial"][clean], grads_r["initial"][clean], tol, "grad initial")
    if not nan_lanes.any():
        for name in grads_f:
            if name.startswith("param"):
                a, e = grads_f[name], grads_r[name]
                if torch.isfinite(e).all() and torch.isfinite(a).all():
                    scale = max(e.double().norm().item(), 1e-30)
                    err = (a.double() - e.double()).norm().item() / scale
                    assert err <= param_tol(dtype) or (a - e).abs().max() <= tol["atol"], \
                        f"{name}: relative error {err:.3e}"
                else:
                    assert_agree(a, e, tol, name)


# ------------------------------------------------------------------------------------------------
# lif (and lif_step, one step at a time)


@st.composite
def lif_cases(draw):
    case = draw(common(step_params=True))
    convention = draw(st.sampled_from(["snntorch", "spikingjelly"]))
    resets = ["subtract", "hard"] + (["none"] if convention.startswith("snntorch") else [])
    name = draw(st.sampled_from(SURROGATES))
    low, high = SCALE_RANGE[name]
    case.update(
        convention=convention,
        reset=draw(st.sampled_from(resets)),
        decay_input=draw(st.booleans()),
        detach_reset=draw(st.sampled_from([None, True, False])),
        surrogate=surrogate.Surrogate(name, draw(st.floats(low, high))),
        return_state=draw(st.booleans()),
    )
    return case


def lif_values(case, gen):
    snntorch = case["convention"] == "snntorch"
    decay_range = (0.5, 0.98) if snntorch else (1.5, 4.0)
    return dict(
        x=input_values(case, gen, 0.4 if snntorch else 1.0, 0.8 if snntorch else 1.2),
        params=[param_value(kind, low, high, case, gen) for kind, (low, high) in
                zip(case["param_kinds"], [decay_range, (0.6, 1.4), (-0.3, 0.3)])],
    )


def run_lif(fn, case, values, initial, weights):
    x, (decay, threshold, reset_value), init, leaves = leaves_for(
        dict(case, learn=case["learn"][:2] + [False]), values, initial)
    with fused_flavour(case) if fn is snn_cuda.lif else contextlib.nullcontext():
        out = fn(x, decay, threshold, convention=case["convention"], reset=case["reset"],
                 reset_value=reset_value, decay_input=case["decay_input"],
                 detach_reset=case["detach_reset"], surrogate=case["surrogate"], initial=init,
                 return_state=True)
        used = case["used"] + (case["return_state"],)
        return out, gradients(out, weights, used, leaves)


@seeded
@PROPERTY
@given(case=lif_cases())
def test_lif_matches_reference(case):
    gen = torch.Generator().manual_seed(case["seed"])
    dtype, shape = case["dtype"], case["shape"]
    values = lif_values(case, gen)
    initial = initial_for(case, gen)
    weights = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(2)]
    weights.append(torch.randn(shape[1:], generator=gen, dtype=torch.float64))
    (fwd_f, grads_f), (fwd_r, grads_r) = (run_lif(fn, case, values, initial, weights)
                                          for fn in (snn_cuda.lif, reference.lif))
    for name, a, e in zip(("spikes", "membrane", "state"), fwd_f, fwd_r):
        assert a.dtype == dtype
        assert_agree(a, e, dict(atol=0.0, rtol=0.0), name)  # the same operations, in order
    for name in grads_f:
        assert_agree(grads_f[name], grads_r[name], LIF_GRAD_TOL[dtype], f"grad {name}", rel_to_scale=True)


@seeded
@PROPERTY
@given(case=lif_cases())
def test_lif_step_by_step_is_lif(case):
    """The per-step op chained through its returned state gives the sequence op's results."""
    gen = torch.Generator().manual_seed(case["seed"])
    dtype, shape = case["dtype"], case["shape"]
    values = lif_values(case, gen)
    initial = initial_for(case, gen)
    x = view_of(values["x"], shape, case["layout"])
    decay, threshold, reset_value = values["params"]
    options = dict(convention=case["convention"], reset=case["reset"], reset_value=reset_value,
                   decay_input=case["decay_input"], detach_reset=case["detach_reset"],
                   surrogate=case["surrogate"])
    spikes, membrane, state = snn_cuda.lif(x, decay, threshold, initial=initial, return_state=True, **options)
    steps, current = [], initial
    with fused_flavour(case):  # the steps in the other flavour, if drawn
        for t in range(shape[0]):
            s, m, current = snn_cuda.lif_step(x[t], decay, threshold, initial=current,
                                              return_state=True, **options)
            steps.append((s, m))
    for t, (s, m) in enumerate(steps):
        assert_agree(s, spikes[t], dict(atol=0.0, rtol=0.0), f"spikes[{t}]")
        assert_agree(m, membrane[t], dict(atol=0.0, rtol=0.0), f"membrane[{t}]")
    if shape[0]:
        assert_agree(current, state, dict(atol=0.0, rtol=0.0), "state")
