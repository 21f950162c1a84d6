"""The fused spiking recurrence: the registered operators, their fake kernels, and autograd.

The operators live in the compiled library ``snn_cuda._C`` (schemas in csrc/spiking_recurrence.cpp):

- ``torch.ops.snn_cuda.spiking_recurrence_fwd(excitation, decay, threshold, penalty, reset, delay)``
  -> ``(states, outputs, gates)``
- ``torch.ops.snn_cuda.spiking_recurrence_bwd(grad_states, grad_outputs, gates, states, outputs,
  decay, threshold, penalty, shape, dtype, reset, delay, need_decay, need_threshold, need_penalty)``
  -> ``(grad_excitation, grad_decay, grad_threshold, grad_penalty)``

Most users want :func:`spiking_recurrence` (or the layer in :mod:`snn_cuda.layers`).
"""

from __future__ import annotations

import math
from typing import Tuple, Union

import torch

try:
    from . import _C  # noqa: F401  (loading the library registers the operators)
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "snn_cuda's compiled operators (snn_cuda._C) are missing or do not load: build them with "
        "`pip install --no-build-isolation -e .` in the repository (see README.md, 'Building'). "
        f"Original error: {error}"
    ) from error

Param = Union[float, torch.Tensor]

RESETS = ("proportional", "subtract")
_ACC_DTYPES = {
    torch.float64: torch.float64,
    torch.float32: torch.float32,
    torch.float16: torch.float32,
    torch.bfloat16: torch.float32,
}


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernel keeps its state and parameters in for inputs of ``dtype``."""
    if dtype not in _ACC_DTYPES:
        raise ValueError(
            "spiking_recurrence: excitation must be float64, float32, float16 or bfloat16, "
            f"got {dtype}"
        )
    return _ACC_DTYPES[dtype]


def check_reset(reset: str) -> None:
    if reset not in RESETS:
        raise ValueError(
            f'spiking_recurrence: reset must be "proportional" or "subtract", got {reset!r}'
        )


def check_excitation(excitation: torch.Tensor) -> None:
    if not isinstance(excitation, torch.Tensor):
        raise TypeError(
            f"spiking_recurrence: excitation must be a torch.Tensor, got {type(excitation).__name__}"
        )
    if excitation.dim() < 2:
        raise ValueError(
            "spiking_recurrence: excitation must have shape [T, *batch, H] (at least 2 dims), "
            f"got shape {tuple(excitation.shape)}"
        )
    accumulation_dtype(excitation.dtype)


def check_float_threshold(threshold: Param, reset: str) -> None:
    is_number = isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
    if reset == "proportional" and is_number and threshold <= 0:
        raise ValueError(
            'spiking_recurrence: reset="proportional" divides by the threshold, so a float '
            f"threshold must be > 0, got {threshold}"
        )


def neuron_param(value: Param, name: str, H: int, dtype: torch.dtype, device: torch.device):
    """``value`` (a float, or a tensor broadcastable to [H]) as a contiguous [H] tensor of ``dtype``.

    Differentiable: a tensor that requires grad gets its gradient back through the expand/cast.
    """
    if isinstance(value, torch.Tensor):
        if value.device != device:
            raise ValueError(
                f"spiking_recurrence: {name} must be on excitation's device {device}, "
                f"got {value.device}"
            )
        if value.is_complex() or value.dtype == torch.bool:
            raise ValueError(
                f"spiking_recurrence: {name} must be a real tensor, got dtype {value.dtype}"
            )
        if value.dim() > 1 or value.numel() not in (1, H):
            raise ValueError(
                f"spiking_recurrence: {name} must be a float or a tensor broadcastable to [H] = [{H}] "
                f"(shape [], [1] or [{H}]), got shape {tuple(value.shape)}"
            )
        return value.to(dtype).reshape(-1).expand(H).contiguous()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"spiking_recurrence: {name} must be a float or a tensor, got {type(value).__name__}"
        )
    return torch.full((H,), float(value), dtype=dtype, device=device)


@torch.library.register_fake("snn_cuda::spiking_recurrence_fwd")
def _spiking_recurrence_fwd_fake(excitation, decay, threshold, penalty, reset, delay):
    torch._check(excitation.dim() >= 2, lambda: "excitation must have at least 2 dims")
    H = excitation.shape[-1]
    for param in (decay, threshold, penalty):
        torch._check(param.dim() == 1 and param.shape[0] == H, lambda: "params must be [H]")
    T = excitation.shape[0]
    lanes = math.prod(excitation.shape[1:])
    states = excitation.new_empty(excitation.shape)
    outputs = excitation.new_empty(excitation.shape)
    gates = excitation.new_empty(((T + 7) // 8, lanes), dtype=torch.uint8)
    return states, outputs, gates


@torch.library.register_fake("snn_cuda::spiking_recurrence_bwd")
def _spiking_recurrence_bwd_fake(
    grad_states, grad_outputs, gates, states, outputs, decay, threshold, penalty,
    shape, dtype, reset, delay, need_decay, need_threshold, need_penalty,
):
    grad_excitation = gates.new_empty(shape, dtype=dtype)
    return grad_excitation, decay.new_empty(decay.shape), threshold.new_empty(
        threshold.shape
    ), penalty.new_empty(penalty.shape)


class SpikingRecurrenceFunction(torch.autograd.Function):
    """Autograd for the fused recurrence. Arguments as the ``spiking_recurrence_fwd`` operator.

    Saved for backward: the spike gates (one bit per element), plus ``states`` only when the decay
    needs a gradient and ``outputs`` only when the proportional reset's threshold or penalty does.
    Both are outputs of the forward, so saving them allocates nothing.
    """

    @staticmethod
    def forward(excitation, decay, threshold, penalty, reset: str, delay: bool):
        return torch.ops.snn_cuda.spiking_recurrence_fwd(
            excitation, decay, threshold, penalty, reset, delay
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        excitation, decay, threshold, penalty, reset, delay = inputs
        states, outputs, gates = output
        _, need_decay, need_threshold, need_penalty, _, _ = ctx.needs_input_grad
        keep_outputs = reset == "proportional" and (need_threshold or need_penalty)
        ctx.save_for_backward(
            gates,
            states if need_decay else None,
            outputs if keep_outputs else None,
            decay,
            threshold,
            penalty,
        )
        ctx.mark_non_differentiable(gates)
        ctx.set_materialize_grads(False)
        ctx.shape = excitation.shape
        ctx.dtype = excitation.dtype
        ctx.reset = reset
        ctx.delay = delay

    @staticmethod
    def backward(ctx, grad_states, grad_outputs, _grad_gates):
        gates, states, outputs, decay, threshold, penalty = ctx.saved_tensors
        need_excitation, need_decay, need_threshold, need_penalty, _, _ = ctx.needs_input_grad
        grad_excitation, grad_decay, grad_threshold, grad_penalty = (
            torch.ops.snn_cuda.spiking_recurrence_bwd(
                grad_states, grad_outputs, gates, states, outputs, decay, threshold, penalty,
                list(ctx.shape), ctx.dtype, ctx.reset, ctx.delay,
                need_decay, need_threshold, need_penalty,
            )
        )
        return (
            grad_excitation if need_excitation else None,
            grad_decay if need_decay else None,
            grad_threshold if need_threshold else None,
            grad_penalty if need_penalty else None,
            None,
            None,
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
    """Runs a layer of spiking neurons over all time steps in one fused kernel call.

    Per neuron lane, with ``v_{-1} = 0`` and ``I_t = excitation[t]``::

        u_t = I_t + decay_multiplier * v_{t-1}
        o_t = relu(u_t - threshold)                    g_t = [u_t > threshold]
        reset="proportional":  v_t = u_t - (penalty_threshold / threshold) * u_t * g_t
        reset="subtract":      v_t = u_t - (penalty_threshold + o_t) * g_t

    Gradients are exactly those of autograd through the plain loop (the gate ``g_t`` is a constant,
    ``relu'(0) = 0``).

    Args:
        excitation: ``[T, *batch, H]`` input excitation (the synaptic input at each step), float64,
            float32, float16 or bfloat16, on CPU or CUDA. Need not be contiguous. Half and
            bfloat16 keep the state in float32 inside the kernel.
        decay_multiplier, threshold, penalty_threshold: a Python float, or a tensor broadcastable to
            ``[H]`` (one value per neuron) on excitation's device. A tensor that requires grad gets
            its gradient; a float gets none.
        reset: ``"proportional"`` (the seed's code) or ``"subtract"`` (the seed's prose).
        delay: if True, row ``t`` of the results holds ``(v_{t-1}, o_{t-1})`` and row 0 zeros,
            exactly what the seed's ``SpikingNeuronLayerRNN`` returns at each step; if False,
            row ``t`` holds ``(v_t, o_t)``.

    Returns:
        ``(states, outputs)``: the inner states ``v`` and the outputs ``o``, each with
        excitation's shape and dtype.

    Example::

        >>> import torch, snn_cuda
        >>> x = torch.randn(128, 32, 100, requires_grad=True)   # [T, batch, neurons]
        >>> states, outputs = snn_cuda.spiking_recurrence(x, 0.9, 1.0, 1.5)
        >>> outputs.sum().backward()
        >>> x.grad.shape
        torch.Size([128, 32, 100])
    """
    check_excitation(excitation)
    check_reset(reset)
    check_float_threshold(threshold, reset)
    H = excitation.shape[-1]
    acc = accumulation_dtype(excitation.dtype)
    device = excitation.device
    decay = neuron_param(decay_multiplier, "decay_multiplier", H, acc, device)
    thresh = neuron_param(threshold, "threshold", H, acc, device)
    penalty = neuron_param(penalty_threshold, "penalty_threshold", H, acc, device)
    states, outputs, _ = SpikingRecurrenceFunction.apply(
        excitation, decay, thresh, penalty, reset, bool(delay)
    )
    return states, outputs
