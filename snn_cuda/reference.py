"""The oracle: the spiking recurrence as a plain per-step PyTorch loop, written the way the seed's
``SpikingNeuronLayerRNN`` writes it. Readable, never optimised; autograd differentiates it.

The fused op (:func:`snn_cuda.spiking_recurrence`) must give the same results and gradients.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from .ops import (
    Param,
    accumulation_dtype,
    check_excitation,
    check_float_threshold,
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
    check_float_threshold(threshold, reset)
    compute_dtype = accumulation_dtype(excitation.dtype)
    H = excitation.shape[-1]
    x = excitation.to(compute_dtype)
    decay = neuron_param(decay_multiplier, "decay_multiplier", H, compute_dtype, x.device)
    threshold = neuron_param(threshold, "threshold", H, compute_dtype, x.device)
    penalty = neuron_param(penalty_threshold, "penalty_threshold", H, compute_dtype, x.device)

    prev_inner = torch.zeros(x.shape[1:], dtype=compute_dtype, device=x.device)
    prev_outer = torch.zeros(x.shape[1:], dtype=compute_dtype, device=x.device)
    all_states = []
    all_outputs = []
    for t in range(x.shape[0]):
        input_excitation = x[t]
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
