"""The generic neuron ops ``torch.ops.snn_cuda.neuron_fwd`` / ``neuron_bwd`` and what every model
of the neuron interface shares on the Python side: the table of models (for the fake kernels and
the autograd Function), the autograd Function, the argument preparation; and the functional form
of each model that runs on them (:func:`synaptic`). See docs/design-neuron-interface.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

from . import surrogate as _surrogate
from .ops import (
    Param,
    accumulation_dtype,
    check_excitation,
    check_flag,
    check_strided,
    check_tensor_values,
    check_value,
    first_derivative_only,
    initial_step,
    lif_param,
    _per_last_dim,
    _same_device,
)


@dataclass(frozen=True)
class NeuronModel:
    """A model of the C++ interface, as the Python side needs to know it."""

    name: str
    resets: Tuple[str, ...]
    states: Tuple[str, ...]      # carried between steps; the op returns them after the last step
    rows: Tuple[str, ...]        # written per step, [T, *batch, H] each
    constants: Tuple[str, ...]   # per neuron, [H] each in the accumulation dtype
    saved_rows: Tuple[int, ...]  # per state, the row the backward reads back
    needs_input: bool = False    # the backward reads the forward's input


MODELS = {
    "snntorch_synaptic": NeuronModel(
        name="snntorch_synaptic",
        resets=("subtract", "zero", "none"),
        states=("syn", "mem"),
        rows=("spikes", "syn", "mem"),
        constants=("alpha", "beta", "threshold"),
        saved_rows=(1, 2),
    ),
    "snntorch_rleaky": NeuronModel(
        name="snntorch_rleaky",
        resets=("subtract", "zero", "none"),
        states=("spk", "mem"),
        rows=("spikes", "mem"),
        constants=("beta", "V", "threshold"),
        saved_rows=(0, 1),
    ),
    "snntorch_rsynaptic": NeuronModel(
        name="snntorch_rsynaptic",
        resets=("subtract", "zero", "none"),
        states=("spk", "syn", "mem"),
        rows=("spikes", "syn", "mem"),
        constants=("alpha", "beta", "V", "threshold"),
        saved_rows=(0, 1, 2),
    ),
    "norse_lif": NeuronModel(
        name="norse_lif",
        resets=("hard",),
        states=("v", "i"),
        rows=("spikes", "v", "i"),
        constants=("dt * tau_mem_inv", "-dt * tau_syn_inv", "v_leak", "v_th", "v_reset"),
        saved_rows=(1, 2),
        needs_input=True,
    ),
    "norse_lsnn": NeuronModel(
        name="norse_lsnn",
        resets=("hard",),
        states=("v", "i", "b"),
        rows=("spikes", "v", "i", "b"),
        constants=("dt * tau_mem_inv", "-dt * tau_syn_inv", "dt * tau_adapt_inv", "v_leak", "v_th",
                   "v_reset", "beta"),
        saved_rows=(1, 2, 3),
    ),
    "alif": NeuronModel(
        name="alif",
        resets=("subtract",),
        states=("v", "a", "z"),
        rows=("spikes", "v", "a"),
        constants=("alpha", "rho", "beta", "threshold"),
        saved_rows=(1, 2, 0),
        needs_input=True,
    ),
    "norse_li": NeuronModel(
        name="norse_li",
        resets=("none",),
        states=("v", "i"),
        rows=("v", "i"),
        constants=("dt * tau_mem_inv", "-dt * tau_syn_inv", "v_leak"),
        saved_rows=(0, 1),
        needs_input=True,
    ),
}


def model_of(name: str) -> NeuronModel:
    model = MODELS.get(name)
    if model is None:
        raise ValueError(f"neuron: model must be one of {sorted(MODELS)}, got {name!r}")
    return model


@torch.library.register_fake("snn_cuda::neuron_fwd")
def _neuron_fwd_fake(model, reset, input, initial, constants, flags):
    spec = model_of(model)
    _same_device("neuron_fwd", input, **{f"initial[{i}]": t for i, t in enumerate(initial)},
                 **{f"constants[{i}]": t for i, t in enumerate(constants)})
    torch._check(input.dim() >= 2, lambda: "neuron_fwd: input must have at least 2 dims")
    torch._check(len(initial) == len(spec.states), lambda: "neuron_fwd: one initial per state")
    torch._check(len(constants) == len(spec.constants), lambda: "neuron_fwd: wrong constant count")
    H = input.shape[-1]
    for c in constants:
        torch._check(c.dim() == 1 and c.shape[0] == H, lambda: "neuron_fwd: constants must be [H]")
    return ([input.new_empty(input.shape) for _ in spec.rows],
            [input.new_empty(input.shape[1:]) for _ in spec.states])


@torch.library.register_fake("snn_cuda::neuron_bwd")
def _neuron_bwd_fake(model, reset, grad_rows, grad_state, saved, initial, input, constants, flags,
                     surrogate, alpha, need_constants):
    spec = model_of(model)
    like = saved[0]
    _same_device("neuron_bwd", like, input=input,
                 **{f"grad_rows[{i}]": t for i, t in enumerate(grad_rows)},
                 **{f"grad_state[{i}]": t for i, t in enumerate(grad_state)},
                 **{f"saved[{i}]": t for i, t in enumerate(saved)},
                 **{f"initial[{i}]": t for i, t in enumerate(initial)},
                 **{f"constants[{i}]": t for i, t in enumerate(constants)})
    return (like.new_empty(like.shape), [like.new_empty(like.shape[1:]) for _ in spec.states],
            [c.new_empty(c.shape) for c in constants])


class NeuronFunction(torch.autograd.Function):
    """Autograd for any model of ``neuron_fwd`` / ``neuron_bwd``.

    ``apply(model, reset, flags, surrogate, alpha, input, *initial, *constants)`` with one initial
    (or None) per state and the model's constants as [H] tensors; returns the rows, then the states
    after the last step, each differentiable. Saved for the backward: the model's saved rows (one
    input-sized tensor per state), the initial states given, the constants.
    """

    @staticmethod
    def forward(ctx, model: str, reset: str, flags: int, surrogate: str, alpha: float, input,
                *tensors):
        # ctx-style (a separate setup_context costs ~40 us per call; docs/performance.md).
        spec = model_of(model)
        S = len(spec.states)
        initial, constants = list(tensors[:S]), list(tensors[S:])
        rows, states = torch.ops.snn_cuda.neuron_fwd(model, reset, input, initial, constants, flags)
        ctx.save_for_backward(*(rows[i] for i in spec.saved_rows), *initial, *constants,
                              input if spec.needs_input else None)
        ctx.set_materialize_grads(False)
        ctx.config = (model, reset, flags, surrogate, alpha)
        return (*rows, *states)

    @staticmethod
    @first_derivative_only
    def backward(ctx, *grads):
        model, reset, flags, surrogate, alpha = ctx.config
        spec = model_of(model)
        S, R = len(spec.states), len(spec.rows)
        saved = ctx.saved_tensors
        kept, initial, constants, input = saved[:S], saved[S:2 * S], saved[2 * S:-1], saved[-1]
        need = ctx.needs_input_grad
        need_input, need_initial, need_constants = need[5], need[6:6 + S], need[6 + S:]
        mask = sum(1 << q for q, wanted in enumerate(need_constants) if wanted)
        grad_input, grad_initial, grad_constants = torch.ops.snn_cuda.neuron_bwd(
            model, reset, list(grads[:R]), list(grads[R:]), list(kept), list(initial), input,
            list(constants), flags, surrogate, alpha, mask,
        )
        return (
            (None,) * 5
            + (grad_input if need_input else None,)
            + tuple(g if wanted else None for g, wanted in zip(grad_initial, need_initial))
            + tuple(g if wanted else None for g, wanted in zip(grad_constants, need_constants))
        )


def prepare_neuron(op: str, input: torch.Tensor, initial, params: Sequence[Param],
                   names: Sequence[str], states: Sequence[str]):
    """Validates and lays out a model's arguments (as :func:`snn_cuda.ops.prepare_lif` for one
    state). ``initial``: None, or one entry (None or a tensor shaped like one step) per state.
    Returns (input, initial list, constants, restore): input possibly flattened to [T, L] (when a
    constant varies over more than the last dim), the constants as [H] (or [L]) tensors in the
    accumulation dtype, differentiable, and restore(t) giving a result back the input's shape."""
    check_excitation(input, f"{op}: input", "[T, *batch, *features]")
    acc = accumulation_dtype(input.dtype, f"{op}: input")
    step_shape = input.shape[1:]
    if initial is None:
        initial = (None,) * len(states)
    if not isinstance(initial, (tuple, list)) or len(initial) != len(states):
        raise TypeError(f"{op}: initial must be None or a tuple of {len(states)} states "
                        f"({', '.join(states)}), each a tensor or None; got {initial!r:.80}")
    initial = [None if t is None else initial_step(t, input, f"{op} ({name})", "input")
               for t, name in zip(initial, states)]
    flat = not all(_per_last_dim(v, step_shape[-1]) for v in params)
    constants = [lif_param(v, name, step_shape, flat, acc, input.device, op)
                 for v, name in zip(params, names)]
    if not flat:
        return input, initial, constants, lambda t: t
    shape = input.shape
    input = input.reshape(shape[0], math.prod(shape[1:]))
    initial = [None if t is None else t.reshape(-1) for t in initial]
    return input, initial, constants, lambda t: t.reshape(shape)


def _fresh(t: torch.Tensor, shape) -> torch.Tensor:
    """``t`` with ``shape``, not as a view (a module's state must be detachable in place)."""
    return t if tuple(t.shape) == tuple(shape) else torch.ops.aten._unsafe_view(t, tuple(shape))


def _check_values(op: str, items) -> None:
    for value, name in items:
        if not isinstance(value, torch.Tensor):
            check_value(value, name, op)
    check_tensor_values(op, *((value, name, False, "") for value, name in items))


def check_model_options(model: str, reset: str, surrogate, default, op: str):
    """The reset (one of the model's) and the surrogate (default: ``default``), as the fused
    function and its reference loop both take them. Returns the surrogate."""
    resets = MODELS[model].resets
    if reset not in resets:
        named = [f'"{r}"' for r in resets]
        listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " or " + named[-1]
        raise ValueError(f"{op}: reset must be {listed}, got {reset!r}")
    return _surrogate.resolve(surrogate, default, op)


def run_model(op: str, model: str, reset: str, input: torch.Tensor, constants, names, initial,
              surrogate, default_surrogate, return_state: bool):
    """What every functional form does: check its options and constants, lay out its arguments
    (:func:`prepare_neuron`), run :class:`NeuronFunction` once, and return the rows in the input's
    shape, plus with ``return_state`` the states after the last step as a tuple (fresh tensors)."""
    check_flag(return_state, "return_state", op)
    spec = check_model_options(model, reset, surrogate, default_surrogate, op)
    _check_values(op, list(zip(constants, names)))
    info = MODELS[model]
    x, initial, kernel_constants, restore = prepare_neuron(op, input, initial, constants, names,
                                                           info.states)
    outputs = NeuronFunction.apply(model, reset, 0, spec.name, spec.alpha, x, *initial,
                                   *kernel_constants)
    R = len(info.rows)
    rows = tuple(restore(r) for r in outputs[:R])
    if return_state:
        step_shape = input.shape[1:]
        return (*rows, tuple(_fresh(t, step_shape) for t in outputs[R:]))
    return rows


def synaptic(
    input: torch.Tensor,
    alpha: Param,
    beta: Param,
    threshold: Param = 1.0,
    *,
    reset: str = "subtract",
    surrogate=None,
    initial: Optional[Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]] = None,
    return_state: bool = False,
):
    """snnTorch's ``Synaptic`` neuron (current-based, second-order LIF), all time steps in one
    fused kernel call. Per step, with ``r_t`` the previous membrane's spike (detached, snnTorch's
    delayed reset)::

        syn_t = alpha * syn_{t-1} + x_t
        mem_t = beta * mem_{t-1} + syn_t - r_t * threshold     (reset="subtract")
        mem_t = (beta * mem_{t-1} + syn_t) * (1 - r_t)         (reset="zero", computed b - b * r_t)
        mem_t = beta * mem_{t-1} + syn_t                       (reset="none")
        spk_t = H(mem_t - threshold)     (backward: the surrogate's derivative; default atan(2))

    ``alpha``, ``beta`` are used as given (``snn_cuda.Synaptic`` clamps them to [0, 1], as
    snnTorch does); they, ``threshold`` and the initial states get gradients when they require
    them. Constants are floats or tensors broadcastable to one step (usually ``[]`` or per neuron).

    Args:
        input: ``[T, *batch, *features]``, float64/32/16 or bfloat16, CPU or CUDA.
        initial: None (zeros), or ``(syn, mem)`` before step 0, each a tensor shaped like one step
            or None (zeros).
        return_state: also return ``(syn, mem)`` after the last step (the next call's ``initial``).

    Returns:
        ``(spikes, syn, mem)`` shaped and typed like ``input``; with ``return_state``,
        ``(spikes, syn, mem, (syn_last, mem_last))``.
    """
    return run_model("synaptic", "snntorch_synaptic", reset, input, (alpha, beta, threshold),
                     ("alpha", "beta", "threshold"), initial, surrogate,
                     _surrogate.SNNTORCH_DEFAULT, return_state)


def synaptic_step(
    input: torch.Tensor,
    alpha: Param,
    beta: Param,
    threshold: Param = 1.0,
    *,
    reset: str = "subtract",
    surrogate=None,
    initial: Optional[Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]] = None,
):
    """One time step of :func:`synaptic`: ``input`` is one step ``[*batch, *features]``;
    returns ``(spk, syn, mem)`` of the input's shape, where ``syn`` and ``mem`` are fresh tensors
    (the next step's ``initial``; they may be detached in place). The same kernel and numbers as
    ``synaptic(input[None], ..., initial=initial)``."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"synaptic_step: input must be a torch.Tensor, got {type(input).__name__}")
    check_strided(input, "synaptic_step: input")
    step_shape = tuple(input.shape)
    sequence = input.reshape(1, *step_shape) if input.dim() > 0 else input.reshape(1, 1)
    if initial is not None and input.dim() == 0 and isinstance(initial, (tuple, list)):
        initial = tuple(t.reshape(1) if isinstance(t, torch.Tensor) else t for t in initial)
    spikes, _, _, (syn, mem) = synaptic(sequence, alpha, beta, threshold, reset=reset,
                                        surrogate=surrogate, initial=initial, return_state=True)
    return spikes.reshape(step_shape), _fresh(syn, step_shape), _fresh(mem, step_shape)


# ------------------------------------------------------------------------------------------------
# Norse's current-based LIF and leaky integrator.

NORSE_SURROGATE = _surrogate.Surrogate("super_spike", 1.0)  # Norse's method="super" (see norse.py)


def norse_constants(dt, tau_syn_inv, tau_mem_inv, acc: torch.dtype):
    """The kernel's a = dt * tau_mem_inv and b = -dt * tau_syn_inv, computed as Norse computes
    ``dt * p.tau_mem_inv`` and ``-dt * p.tau_syn_inv`` (tensor ops in the constants' own dtype;
    floats become tensors of the accumulation dtype), differentiable."""
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not 0 < dt < math.inf:
        raise ValueError(f"norse: dt must be a finite float > 0, got {dt!r}")

    return dt * _norse_tensor(tau_mem_inv, acc), -dt * _norse_tensor(tau_syn_inv, acc)


def _norse_tensor(value, acc: torch.dtype) -> torch.Tensor:
    """A Norse parameter as the tensor ``dt * value`` is computed on: itself, or a float as a
    tensor of the accumulation dtype."""
    return value if isinstance(value, torch.Tensor) else torch.tensor(float(value), dtype=acc)


def _norse_args(op, input, dt, tau_syn_inv, tau_mem_inv):
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: input must be a torch.Tensor, got {type(input).__name__}")
    _check_values(op, [(tau_syn_inv, "tau_syn_inv"), (tau_mem_inv, "tau_mem_inv")])
    return norse_constants(dt, tau_syn_inv, tau_mem_inv, accumulation_dtype(input.dtype, f"{op}: input"))


def norse_lif(
    input: torch.Tensor,
    tau_syn_inv: Param = 200.0,
    tau_mem_inv: Param = 100.0,
    v_leak: Param = 0.0,
    v_th: Param = 1.0,
    v_reset: Param = 0.0,
    *,
    dt: float = 0.001,
    surrogate=None,
    initial=None,
    return_state: bool = False,
):
    """Norse's current-based LIF (``norse.torch.LIF`` / ``lif_feed_forward_step``), all time steps
    in one fused kernel call. Per step (Euler, ``dt``)::

        i_new = i + x_t
        v_dec = v + dt * tau_mem_inv * ((v_leak - v) + i_new)
        i_t   = i_new - dt * tau_syn_inv * i_new
        z_t   = H(v_dec - v_th)          (backward: Norse's SuperSpike, 1 / (|z| + 1)^2)
        v_t   = (1 - z_t) * v_dec + z_t * v_reset      (the reset passes the surrogate gradient)

    Defaults are Norse's ``LIFParameters()``. Constants are floats or tensors broadcastable to one
    step; tensors that require grad get their gradient. ``initial``: None, or ``(v, i)`` (each a
    tensor shaped like one step, or None): ``v`` defaults to ``v_leak`` (detached, as Norse's
    ``LIF`` starts), ``i`` to zeros.

    Returns ``(spikes, v, i)`` shaped like ``input``; with ``return_state`` also ``(v, i)`` after the
    last step.
    """
    a, b = _norse_args("norse_lif", input, dt, tau_syn_inv, tau_mem_inv)
    initial = _norse_initial("norse_lif", input, initial, ("v", "i"), {"v": v_leak})
    return run_model("norse_lif", "norse_lif", "hard", input, (a, b, v_leak, v_th, v_reset),
                     LIF_NAMES, initial, surrogate, NORSE_SURROGATE, return_state)


def norse_li(
    input: torch.Tensor,
    tau_syn_inv: Param = 200.0,
    tau_mem_inv: Param = 100.0,
    v_leak: Param = 0.0,
    *,
    dt: float = 0.001,
    initial=None,
    return_state: bool = False,
):
    """Norse's leaky integrator (``norse.torch.LI`` / ``li_feed_forward_step``): :func:`norse_lif`
    without spike and reset (``v_t = v_dec``), the usual readout layer. Returns ``(v, i)`` shaped
    like ``input``; with ``return_state`` also ``(v, i)`` after the last step."""
    a, b = _norse_args("norse_li", input, dt, tau_syn_inv, tau_mem_inv)
    initial = _norse_initial("norse_li", input, initial, ("v", "i"), {"v": v_leak})
    return run_model("norse_li", "norse_li", "none", input, (a, b, v_leak), LIF_NAMES[:3],
                     initial, None, NORSE_SURROGATE, return_state)


def _norse_initial(op, input, initial, states, defaults):
    """``initial`` as a tuple of the model's ``states``; a state left None that ``defaults`` names
    starts from that constant (detached, in the input's dtype, as Norse's modules start), the others
    from zeros."""
    if initial is None:
        initial = (None,) * len(states)
    if not isinstance(initial, (tuple, list)) or len(initial) != len(states):
        raise TypeError(f"{op}: initial must be None or a tuple ({', '.join(states)}), each a tensor "
                        f"or None; got {initial!r:.80}")
    return tuple(_default_state(op, input, defaults[name], _DEFAULT_NAMES[name])
                 if value is None and name in defaults else value
                 for value, name in zip(initial, states))


_DEFAULT_NAMES = {"v": "v_leak", "b": "v_th"}  # the constants Norse's states start from


def _default_state(op, input, value, name):
    """A state starting from a constant: detached, in the input's dtype, one step's shape."""
    leak = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
    if isinstance(value, torch.Tensor) and value.device != input.device:
        raise ValueError(f"{op}: {name} must be on the input's device {input.device}, got {value.device}")
    try:
        return torch.broadcast_to(leak.to(device=input.device, dtype=input.dtype),
                                  tuple(input.shape[1:])).contiguous()
    except RuntimeError:
        raise ValueError(f"{op}: {name} of shape {tuple(leak.shape)} does not broadcast to one "
                         f"step of the input, shape {tuple(input.shape[1:])}") from None


def _lsnn_args(op, input, dt, tau_syn_inv, tau_mem_inv, tau_adapt_inv, v_leak, v_th, initial):
    a, s = _norse_args(op, input, dt, tau_syn_inv, tau_mem_inv)
    _check_values(op, [(tau_adapt_inv, "tau_adapt_inv")])
    c = dt * _norse_tensor(tau_adapt_inv, accumulation_dtype(input.dtype, f"{op}: input"))
    initial = _norse_initial(op, input, initial, ("v", "i", "b"), {"v": v_leak, "b": v_th})
    return (a, s, c), initial


LIF_NAMES = ("tau_mem_inv", "tau_syn_inv", "v_leak", "v_th", "v_reset")
LSNN_NAMES = ("tau_mem_inv", "tau_syn_inv", "tau_adapt_inv", "v_leak", "v_th", "v_reset", "beta")


def norse_lsnn(
    input: torch.Tensor,
    tau_syn_inv: Param = 200.0,
    tau_mem_inv: Param = 100.0,
    tau_adapt_inv: Param = 1.0 / 800,
    v_leak: Param = 0.0,
    v_th: Param = 1.0,
    v_reset: Param = 0.0,
    beta: Param = 1.8,
    *,
    dt: float = 0.001,
    surrogate=None,
    initial=None,
    return_state: bool = False,
):
    """Norse's adaptive LIF without recurrence (``norse.torch.LSNN`` / ``lsnn_feed_forward_step``,
    Bellec et al. 2018), all time steps in one fused kernel call. Per step (Euler, ``dt``)::

        v_dec = v + dt * tau_mem_inv * ((v_leak - v) + i)
        i_dec = i - dt * tau_syn_inv * i
        b_dec = b + dt * tau_adapt_inv * (v_th - b)          (the adaptive threshold)
        z_t   = H(v_dec - b_dec)            (backward: Norse's SuperSpike, 1 / (|z| + 1)^2)
        v_t   = (1 - z_t) * v_dec + z_t * v_reset
        b_t   = b_dec + z_t * beta
        i_t   = i_dec + x_t                 (the input reaches v one step later, as in Norse)

    Defaults are Norse's ``LSNNParameters()``. ``initial``: None or ``(v, i, b)`` (each a tensor or
    None): ``v`` defaults to ``v_leak``, ``i`` to zeros, ``b`` to ``v_th`` (detached, as Norse's).
    Returns ``(spikes, v, i, b)`` shaped like ``input``; with ``return_state`` also ``(v, i, b)``
    after the last step.
    """
    op = "norse_lsnn"
    (a, s, c), initial = _lsnn_args(op, input, dt, tau_syn_inv, tau_mem_inv, tau_adapt_inv, v_leak,
                                    v_th, initial)
    return run_model(op, op, "hard", input, (a, s, c, v_leak, v_th, v_reset, beta), LSNN_NAMES,
                     initial, surrogate, NORSE_SURROGATE, return_state)


# ------------------------------------------------------------------------------------------------
# snnTorch's RLeaky with one-to-one recurrence.


def rleaky(
    input: torch.Tensor,
    beta: Param,
    V: Param = 1.0,
    threshold: Param = 1.0,
    *,
    reset: str = "subtract",
    surrogate=None,
    initial=None,
    return_state: bool = False,
):
    """snnTorch's ``RLeaky`` with one-to-one recurrence (``all_to_all=False``), all time steps in
    one fused kernel call. Per step, with ``r_t`` the previous membrane's spike (detached) and
    ``s_{t-1}`` the previous spike (with its surrogate gradient)::

        b_t   = (beta * mem_{t-1} + x_t) + V * s_{t-1}
        mem_t = b_t - r_t * threshold   ("subtract"),  b_t - r_t * b_t  ("zero"),  b_t  ("none")
        s_t   = H(mem_t - threshold)

    ``beta`` is used as given (``snn_cuda.RLeaky`` clamps it to [0, 1] as snnTorch does).
    ``initial``: None or ``(spk, mem)`` before step 0 (each a tensor or None: zeros).
    Returns ``(spikes, mem)`` shaped like ``input``; with ``return_state`` also ``(spk, mem)``
    after the last step.
    """
    return run_model("rleaky", "snntorch_rleaky", reset, input, (beta, V, threshold),
                     ("beta", "V", "threshold"), initial, surrogate, _surrogate.SNNTORCH_DEFAULT,
                     return_state)


def rsynaptic(
    input: torch.Tensor,
    alpha: Param,
    beta: Param,
    V: Param = 1.0,
    threshold: Param = 1.0,
    *,
    reset: str = "subtract",
    surrogate=None,
    initial=None,
    return_state: bool = False,
):
    """snnTorch's ``RSynaptic`` with one-to-one recurrence (``all_to_all=False``), all time steps
    in one fused kernel call: :func:`synaptic` with the previous spike fed back into the current,
    ``syn_t = ((alpha * syn_{t-1}) + x_t) + V * s_{t-1}`` (``s_{t-1}`` with its surrogate
    gradient). ``initial``: None or ``(spk, syn, mem)`` (each a tensor or None: zeros). Returns
    ``(spikes, syn, mem)``; with ``return_state`` also ``(spk, syn, mem)`` after the last step."""
    return run_model("rsynaptic", "snntorch_rsynaptic", reset, input, (alpha, beta, V, threshold),
                     ("alpha", "beta", "V", "threshold"), initial, surrogate,
                     _surrogate.SNNTORCH_DEFAULT, return_state)


# ------------------------------------------------------------------------------------------------
# The adaptive LIF neuron in its common discrete form (no installed original).

ALIF_NAMES = ("alpha", "rho", "beta", "threshold")
ALIF_SURROGATE = _surrogate.Surrogate("fast_sigmoid", 25.0)


def alif(
    input: torch.Tensor,
    alpha: Param,
    rho: Param,
    beta: Param = 1.8,
    threshold: Param = 1.0,
    *,
    surrogate=None,
    initial=None,
    return_state: bool = False,
):
    """The adaptive LIF neuron (ALIF) in its common discrete form -- Bellec et al. 2018 (the LSNN
    paper's ALIF, without refractoriness) as Yin et al. 2021 and many since write it -- all time
    steps in one fused kernel call. Per step, ``z_{t-1}`` the previous spike (with its surrogate
    gradient, in both the reset and the adaptation)::

        a_t = rho * a_{t-1} + (1 - rho) * z_{t-1}             (threshold adaptation)
        A_t = threshold + beta * a_t                          (the adaptive threshold)
        v_t = (alpha * v_{t-1} + (1 - alpha) * x_t) - A_t * z_{t-1}   (reset by subtraction)
        z_t = H(v_t - A_t)          (backward: the surrogate's derivative; default fast_sigmoid(25))

    ``alpha = exp(-dt / tau_m)`` and ``rho = exp(-dt / tau_adp)`` are used as given; they, ``beta``
    and ``threshold`` (constants: floats or tensors broadcastable to one step, usually per neuron)
    and the initial states get gradients when they require them. No library we test against ships
    this neuron, so the plain loop :func:`snn_cuda.reference.alif` is its oracle. Norse's adaptive
    neuron (reset to ``v_reset``, threshold as a state) is :func:`norse_lsnn`.

    Args:
        input: ``[T, *batch, *features]``, float64/32/16 or bfloat16, CPU or CUDA.
        initial: None (zeros), or ``(v, a, z)`` before step 0, each a tensor shaped like one step
            or None (zeros).
        return_state: also return ``(v, a, z)`` after the last step (the next call's ``initial``).

    Returns ``(spikes, v, a)`` shaped like ``input``; with ``return_state`` also the state tuple.
    """
    return run_model("alif", "alif", "subtract", input, (alpha, rho, beta, threshold), ALIF_NAMES,
                     initial, surrogate, ALIF_SURROGATE, return_state)
