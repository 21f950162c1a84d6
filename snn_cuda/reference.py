"""The oracle: the spiking recurrence as a plain per-step PyTorch loop, written the way the seed's
``SpikingNeuronLayerRNN`` writes it. Readable, never optimised; autograd differentiates it.

The fused op (:func:`snn_cuda.spiking_recurrence`) must give the same results and gradients.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .ops import (
    Param,
    accumulation_dtype,
    check_excitation,
    check_flag,
    check_float_threshold,
    check_initial_state,
    check_reset,
    neuron_param,
)


def spiking_recurrence(
    excitation: torch.Tensor,
    decay_multiplier: Param = 0.9,
    threshold: Param = 1.0,
    penalty_threshold: Param = 1.5,
    *,
    reset: str = "proportional",
    delay: bool = True,
    initial=None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Same signature, semantics and results as :func:`snn_cuda.spiking_recurrence`.

    Args:
        excitation: ``[T, *batch, H]``. Half and bfloat16 are computed in float32 and the results
            cast back, as the fused kernel does.
        decay_multiplier, threshold, penalty_threshold: floats or tensors broadcastable to ``[H]``.
        reset: ``"proportional"`` or ``"subtract"``.
        delay: return ``(v_{t-1}, o_{t-1})`` at step ``t`` (True) or ``(v_t, o_t)`` (False).

    Returns:
        ``(states, outputs)``, each shaped and typed like ``excitation``.
    """
    check_excitation(excitation)
    check_reset(reset)
    check_flag(delay, "delay", "spiking_recurrence")
    check_float_threshold(threshold, reset)
    compute_dtype = accumulation_dtype(excitation.dtype)
    H = excitation.shape[-1]
    x = excitation.to(compute_dtype)
    decay = neuron_param(decay_multiplier, "decay_multiplier", H, compute_dtype, x.device)
    threshold = neuron_param(threshold, "threshold", H, compute_dtype, x.device)
    penalty = neuron_param(penalty_threshold, "penalty_threshold", H, compute_dtype, x.device)

    if initial is None:
        prev_inner = torch.zeros(x.shape[1:], dtype=compute_dtype, device=x.device)
    else:
        prev_inner = check_initial_state(initial, excitation, delay).to(compute_dtype)
    prev_outer = torch.zeros(x.shape[1:], dtype=compute_dtype, device=x.device)
    all_states = []
    all_outputs = []
    # unbind, not x[t]: indexing's backward writes a whole [T, ...] zero tensor per step (O(T^2)
    # memory traffic, which made the oracle ~15x slower than a user's loop; the numbers are the same).
    for input_excitation in x.unbind(0):
        # Decay what the neuron held, add the new input.
        inner_excitation = input_excitation + prev_inner * decay
        # Fire past the threshold.
        outer_excitation = F.relu(inner_excitation - threshold)
        # The gate is a constant for autograd, as in the seed.
        do_penalize_gate = (outer_excitation > 0).to(compute_dtype)
        if reset == "proportional":
            inner_excitation = inner_excitation - (penalty / threshold * inner_excitation) * do_penalize_gate
        else:
            inner_excitation = inner_excitation - (penalty + outer_excitation) * do_penalize_gate
        if delay:
            all_states.append(prev_inner)
            all_outputs.append(prev_outer)
        else:
            all_states.append(inner_excitation)
            all_outputs.append(outer_excitation)
        prev_inner = inner_excitation
        prev_outer = outer_excitation

    if not all_states:  # T = 0
        empty = excitation.new_empty(excitation.shape)
        return empty, empty.clone()
    states = torch.stack(all_states).to(excitation.dtype)
    outputs = torch.stack(all_outputs).to(excitation.dtype)
    return states, outputs


# ================================================================================================
# Binary spikes: the oracle of snn_cuda.lif.


class SurrogateSpike(torch.autograd.Function):
    """Heaviside forward (``z > 0``, or ``z >= 0`` with ``inclusive``), surrogate backward."""

    @staticmethod
    def forward(ctx, z, surrogate, inclusive):
        ctx.save_for_backward(z)
        ctx.surrogate = surrogate
        fired = z >= 0 if inclusive else z > 0
        return fired.to(z.dtype)

    @staticmethod
    def backward(ctx, grad_spike):
        (z,) = ctx.saved_tensors
        return grad_spike * ctx.surrogate.derivative(z), None, None


class _RoundToStorage(torch.autograd.Function):
    """The value rounded to the storage dtype (and back), with an identity gradient: what the
    kernel does to a float16/bfloat16 membrane each step. (Written as value + (rounded - value)
    it turned an infinite membrane into NaN: inf - inf.)"""

    @staticmethod
    def forward(ctx, value, dtype):
        return value.to(dtype).to(value.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _stored(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``value`` as the kernel keeps it: rounded to the input's dtype each step, gradient unchanged.
    The kernel computes half and bfloat16 in float32 but keeps float16/bfloat16 membranes at the
    input's precision between steps."""
    if value.dtype == dtype:
        return value
    return _RoundToStorage.apply(value, dtype)


def _start(x: torch.Tensor, dtype: torch.dtype, initial):
    """The layout every model loop starts from: the input and the initial states (None: zeros) in
    the accumulation dtype of ``dtype``."""
    compute_dtype = accumulation_dtype(dtype)
    x = x.to(compute_dtype)
    zeros = torch.zeros(x.shape[1:], dtype=compute_dtype, device=x.device)
    return x, [zeros if t is None else t.to(compute_dtype) for t in initial]


def _finish(input: torch.Tensor, rows, last, restore):
    """What every model loop returns: its rows stacked over time in the input's dtype and shape
    (uninitialised tensors of the input's shape when T = 0), and the states after the last step
    shaped like one step."""
    dtype = input.dtype
    if not rows[0]:  # T = 0
        out = tuple(input.new_empty(input.shape) for _ in rows)
    else:
        out = tuple(restore(torch.stack(r).to(dtype)) for r in rows)
    return out, tuple(t.to(dtype).reshape(input.shape[1:]) for t in last)


def lif(
    input: torch.Tensor,
    decay: Optional[Param],
    threshold: Param = 1.0,
    *,
    convention: str = "snntorch",
    reset: str = "subtract",
    reset_value: Param = 0.0,
    decay_input: bool = True,
    detach_reset=None,
    surrogate=None,
    initial=None,
    return_state: bool = False,
):
    """Same signature, semantics and results as :func:`snn_cuda.lif`, as a plain loop."""
    from .ops import if_decay, prepare_lif, resolve_lif_options

    detach_reset, spec = resolve_lif_options(convention, reset, detach_reset, surrogate, decay_input)
    decay = if_decay(convention, decay, decay_input, "lif")
    x, initial, (decay, threshold, reset_value), restore = prepare_lif(
        input, initial, (decay, threshold, reset_value), ("decay", "threshold", "reset_value")
    )
    dtype = input.dtype
    compute_dtype = accumulation_dtype(dtype)
    x = x.to(compute_dtype)
    reset_value = reset_value.detach()
    # SpikingJelly's charge uses v_reset for a hard reset and 0 for a soft one.
    rest = reset_value if reset == "hard" else torch.zeros_like(reset_value)

    def spike(z, inclusive):
        return SurrogateSpike.apply(z, spec, inclusive)

    def snntorch_charge(mem, x_t, do_reset):
        """snnTorch's Leaky: this step's membrane from the last, with the delayed reset do_reset."""
        if reset == "none":
            return decay * mem + x_t
        if reset == "subtract":
            return (decay * mem + x_t) - do_reset * threshold
        mem = (1 - do_reset) * mem + do_reset * reset_value
        return decay * mem + x_t

    if initial is None:
        state = torch.zeros(x.shape[1:], dtype=compute_dtype, device=x.device)
    else:
        state = initial.to(compute_dtype)
    all_spikes = []
    all_membranes = []
    for x_t in x.unbind(0):  # (not indexing: see spiking_recurrence)
        if convention == "snntorch":
            # The reset is the spike of the previous step.
            do_reset = spike(state - threshold, False)
            if detach_reset:
                do_reset = do_reset.detach()
            mem = _stored(snntorch_charge(state, x_t, do_reset), dtype)
            spk = spike(mem - threshold, False)
            all_spikes.append(spk)
            all_membranes.append(mem)
            state = mem
        elif convention == "snntorch_now":  # Leaky(reset_delay=False)
            # The charge as above, from the membrane after the previous reset; its reset is the
            # previous membrane's spike, always detached.
            do_reset = spike(state - threshold, False).detach()
            charged = _stored(snntorch_charge(state, x_t, do_reset), dtype)
            spk = spike(charged - threshold, False)
            # The spike resets the membrane in its own step, less what do_reset already did.
            now = (spk.detach() if detach_reset else spk) - do_reset
            if reset == "none":
                mem = charged
            elif reset == "subtract":
                mem = charged - now * threshold
            else:  # to reset_value (snnTorch's "zero": 0, charged - now * charged)
                mem = charged - now * (charged - reset_value)
            mem = _stored(mem, dtype)
            all_spikes.append(spk)
            all_membranes.append(mem)
            state = mem
        else:
            v = state
            tau = decay
            # Charge.
            if convention == "spikingjelly_if":  # IFNode: no leak
                h = v + x_t
            elif convention == "spikingjelly_plif":  # ParametricLIFNode: decay is the rate q
                q = decay
                h = v + (x_t - (v - rest)) * q if decay_input else v - (v - rest) * q + x_t
            elif decay_input:
                h = v + (x_t - (v - rest)) / tau
            else:
                h = v - (v - rest) / tau + x_t
            h = _stored(h, dtype)
            # Fire.
            spk = spike(h - threshold, True)
            # Reset.
            spk_reset = spk.detach() if detach_reset else spk
            if reset == "subtract":
                v = h - spk_reset * threshold
            else:
                v = spk_reset * reset_value + (1 - spk_reset) * h
            all_spikes.append(spk)
            all_membranes.append(h)
            state = _stored(v, dtype)

    final_state = state.to(dtype).reshape(input.shape[1:])
    if not all_spikes:  # T = 0
        empty = input.new_empty(input.shape)
        return (empty, empty.clone(), final_state) if return_state else (empty, empty.clone())
    spikes = torch.stack(all_spikes).to(dtype)
    membranes = torch.stack(all_membranes).to(dtype)
    if return_state:
        return restore(spikes), restore(membranes), final_state
    return restore(spikes), restore(membranes)


def synaptic(
    input: torch.Tensor,
    alpha: Param,
    beta: Param,
    threshold: Param = 1.0,
    *,
    reset: str = "subtract",
    surrogate=None,
    initial=None,
    return_state: bool = False,
):
    """Same signature, semantics and results as :func:`snn_cuda.synaptic`, as a plain loop."""
    from . import surrogate as _surrogate
    from .neuron_ops import check_model_options, prepare_neuron

    spec = check_model_options("snntorch_synaptic", reset, surrogate, _surrogate.SNNTORCH_DEFAULT,
                               "synaptic")
    x, (syn0, mem0), (alpha, beta, threshold), restore = prepare_neuron(
        "synaptic", input, initial, (alpha, beta, threshold), ("alpha", "beta", "threshold"),
        ("syn", "mem"),
    )
    dtype = input.dtype
    x, (syn, mem) = _start(x, dtype, (syn0, mem0))
    all_spikes, all_syn, all_mem = [], [], []
    for x_t in x.unbind(0):
        # The reset is the spike of the previous membrane, detached (as snnTorch's).
        r = SurrogateSpike.apply(mem - threshold, spec, False).detach()
        syn = _stored(alpha * syn + x_t, dtype)
        base = beta * mem + syn
        if reset == "subtract":
            mem = base - r * threshold
        elif reset == "zero":
            mem = base - base * r
        else:
            mem = base
        mem = _stored(mem, dtype)
        all_spikes.append(SurrogateSpike.apply(mem - threshold, spec, False))
        all_syn.append(syn)
        all_mem.append(mem)
    rows, last = _finish(input, (all_spikes, all_syn, all_mem), (syn, mem), restore)
    return (*rows, last) if return_state else rows


def _norse(input, constants, names, initial, surrogate, spiking, op):
    """The loop of Norse's lif_feed_forward_step (spiking) / li_feed_forward_step, step by step."""
    from .neuron_ops import NORSE_SURROGATE, prepare_neuron
    from . import surrogate as _surrogate

    spec = _surrogate.resolve(surrogate, NORSE_SURROGATE, op)
    x, (v0, i0), constants, restore = prepare_neuron(op, input, initial, constants, names, ("v", "i"))
    dtype = input.dtype
    x, (v, i) = _start(x, dtype, (v0, i0))
    a, b, v_leak = constants[:3]
    rows = ([], [], []) if spiking else ([], [])
    for x_t in x.unbind(0):
        i_new = i + x_t
        dv = a * ((v_leak - v) + i_new)
        v_decayed = v + dv
        di = b * i_new
        i = _stored(i_new + di, dtype)
        if spiking:
            v_th, v_reset = constants[3:]
            z = SurrogateSpike.apply(v_decayed - v_th, spec, False)
            v = _stored((1 - z) * v_decayed + z * v_reset, dtype)
            rows[0].append(z)
        else:
            v = _stored(v_decayed, dtype)
        rows[-2].append(v)
        rows[-1].append(i)
    return _finish(input, rows, (v, i), restore)


def norse_lif(input, tau_syn_inv=200.0, tau_mem_inv=100.0, v_leak=0.0, v_th=1.0, v_reset=0.0, *,
              dt=0.001, surrogate=None, initial=None, return_state=False):
    """Same signature, semantics and results as :func:`snn_cuda.norse_lif`, as a plain loop."""
    from .neuron_ops import LIF_NAMES, _norse_args, _norse_initial

    a, b = _norse_args("norse_lif", input, dt, tau_syn_inv, tau_mem_inv)
    initial = _norse_initial("norse_lif", input, initial, ("v", "i"), {"v": v_leak})
    rows, last = _norse(input, (a, b, v_leak, v_th, v_reset), LIF_NAMES, initial, surrogate, True,
                        "norse_lif")
    return (*rows, last) if return_state else rows


def norse_li(input, tau_syn_inv=200.0, tau_mem_inv=100.0, v_leak=0.0, *, dt=0.001, initial=None,
             return_state=False):
    """Same signature, semantics and results as :func:`snn_cuda.norse_li`, as a plain loop."""
    from .neuron_ops import LIF_NAMES, _norse_args, _norse_initial

    a, b = _norse_args("norse_li", input, dt, tau_syn_inv, tau_mem_inv)
    initial = _norse_initial("norse_li", input, initial, ("v", "i"), {"v": v_leak})
    rows, last = _norse(input, (a, b, v_leak), LIF_NAMES[:3], initial, None, False, "norse_li")
    return (*rows, last) if return_state else rows


def norse_lsnn(input, tau_syn_inv=200.0, tau_mem_inv=100.0, tau_adapt_inv=1.0 / 800, v_leak=0.0,
               v_th=1.0, v_reset=0.0, beta=1.8, *, dt=0.001, surrogate=None, initial=None,
               return_state=False):
    """Same signature, semantics and results as :func:`snn_cuda.norse_lsnn`, as a plain loop."""
    from . import surrogate as _surrogate
    from .neuron_ops import LSNN_NAMES, NORSE_SURROGATE, _lsnn_args, prepare_neuron

    op = "norse_lsnn"
    (a, s, c), initial = _lsnn_args(op, input, dt, tau_syn_inv, tau_mem_inv, tau_adapt_inv, v_leak,
                                    v_th, initial)
    spec = _surrogate.resolve(surrogate, NORSE_SURROGATE, op)
    x, (v0, i0, b0), constants, restore = prepare_neuron(
        op, input, initial, (a, s, c, v_leak, v_th, v_reset, beta), LSNN_NAMES, ("v", "i", "b"))
    a, s, c, v_leak, v_th, v_reset, beta = constants
    dtype = input.dtype
    x, (v, i, b) = _start(x, dtype, (v0, i0, b0))
    rows = ([], [], [], [])
    for x_t in x.unbind(0):
        dv = a * ((v_leak - v) + i)
        v_decayed = v + dv
        di = s * i
        i_decayed = i + di
        db = c * (v_th - b)
        b_decayed = b + db
        z = SurrogateSpike.apply(v_decayed - b_decayed, spec, False)
        v = _stored((1 - z) * v_decayed + z * v_reset, dtype)
        b = _stored(b_decayed + z * beta, dtype)
        i = _stored(i_decayed + x_t, dtype)
        for row, value in zip(rows, (z, v, i, b)):
            row.append(value)
    out, last = _finish(input, rows, (v, i, b), restore)
    return (*out, last) if return_state else out


def rleaky(input, beta, V=1.0, threshold=1.0, *, reset="subtract", surrogate=None, initial=None,
           return_state=False):
    """Same signature, semantics and results as :func:`snn_cuda.rleaky`, as a plain loop."""
    from . import surrogate as _surrogate
    from .neuron_ops import check_model_options, prepare_neuron

    spec = check_model_options("snntorch_rleaky", reset, surrogate, _surrogate.SNNTORCH_DEFAULT,
                               "rleaky")
    x, (spk0, mem0), (beta, V, threshold), restore = prepare_neuron(
        "rleaky", input, initial, (beta, V, threshold), ("beta", "V", "threshold"), ("spk", "mem"))
    dtype = input.dtype
    x, (spk, mem) = _start(x, dtype, (spk0, mem0))
    all_spikes, all_mem = [], []
    for x_t in x.unbind(0):
        r = SurrogateSpike.apply(mem - threshold, spec, False).detach()
        base = (beta * mem + x_t) + V * spk
        if reset == "subtract":
            mem = base - r * threshold
        elif reset == "zero":
            mem = base - r * base
        else:
            mem = base
        mem = _stored(mem, dtype)
        spk = SurrogateSpike.apply(mem - threshold, spec, False)
        all_spikes.append(spk)
        all_mem.append(mem)
    rows, last = _finish(input, (all_spikes, all_mem), (spk, mem), restore)
    return (*rows, last) if return_state else rows


def rsynaptic(input, alpha, beta, V=1.0, threshold=1.0, *, reset="subtract", surrogate=None,
              initial=None, return_state=False):
    """Same signature, semantics and results as :func:`snn_cuda.rsynaptic`, as a plain loop."""
    from . import surrogate as _surrogate
    from .neuron_ops import check_model_options, prepare_neuron

    spec = check_model_options("snntorch_rsynaptic", reset, surrogate, _surrogate.SNNTORCH_DEFAULT,
                               "rsynaptic")
    x, (spk0, syn0, mem0), (alpha, beta, V, threshold), restore = prepare_neuron(
        "rsynaptic", input, initial, (alpha, beta, V, threshold), ("alpha", "beta", "V", "threshold"),
        ("spk", "syn", "mem"))
    dtype = input.dtype
    x, (spk, syn, mem) = _start(x, dtype, (spk0, syn0, mem0))
    rows = ([], [], [])
    for x_t in x.unbind(0):
        r = SurrogateSpike.apply(mem - threshold, spec, False).detach()
        syn = _stored((alpha * syn + x_t) + V * spk, dtype)
        base = beta * mem + syn
        if reset == "subtract":
            mem = base - r * threshold
        elif reset == "zero":
            mem = base - base * r
        else:
            mem = base
        mem = _stored(mem, dtype)
        spk = SurrogateSpike.apply(mem - threshold, spec, False)
        for row, value in zip(rows, (spk, syn, mem)):
            row.append(value)
    out, last = _finish(input, rows, (spk, syn, mem), restore)
    return (*out, last) if return_state else out


def alif(input, alpha, rho, beta=1.8, threshold=1.0, *, surrogate=None, initial=None,
         return_state=False):
    """Same signature, semantics and results as :func:`snn_cuda.alif`, as a plain loop."""
    from .neuron_ops import ALIF_NAMES, ALIF_SURROGATE, check_model_options, prepare_neuron

    spec = check_model_options("alif", "subtract", surrogate, ALIF_SURROGATE, "alif")
    x, (v0, a0, z0), (alpha, rho, beta, threshold), restore = prepare_neuron(
        "alif", input, initial, (alpha, rho, beta, threshold), ALIF_NAMES, ("v", "a", "z"))
    dtype = input.dtype
    x, (v, a, z) = _start(x, dtype, (v0, a0, z0))
    rows = ([], [], [])
    for x_t in x.unbind(0):
        a = _stored(rho * a + (1 - rho) * z, dtype)
        adaptive = threshold + beta * a
        v = _stored((alpha * v + (1 - alpha) * x_t) - adaptive * z, dtype)
        z = SurrogateSpike.apply(v - adaptive, spec, False)
        for row, value in zip(rows, (z, v, a)):
            row.append(value)
    out, last = _finish(input, rows, (v, a, z), restore)
    return (*out, last) if return_state else out
