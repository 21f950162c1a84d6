"""The fused spiking recurrence: the registered operators, their fake kernels, and autograd.

The operators live in the compiled library ``snn_cuda._C`` (schemas in csrc/spiking_recurrence.cpp):

- ``torch.ops.snn_cuda.spiking_recurrence_fwd(excitation, decay, threshold, penalty, reset, delay,
  initial=None)`` -> ``(states, outputs, gates)``
- ``torch.ops.snn_cuda.spiking_recurrence_bwd(grad_states, grad_outputs, gates, states, outputs,
  decay, threshold, penalty, shape, dtype, reset, delay, need_decay, need_threshold, need_penalty,
  initial=None, need_initial=False)``
  -> ``(grad_excitation, grad_decay, grad_threshold, grad_penalty, grad_initial)``

Most users want :func:`spiking_recurrence` (or the layer in :mod:`snn_cuda.layers`).
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Optional, Tuple, Union

import torch
from torch.utils import _python_dispatch

try:
    from . import _C  # noqa: F401  (loading the library registers the operators)
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "snn_cuda's compiled operators (snn_cuda._C) are missing or do not load: build them with "
        "`pip install --no-build-isolation -e .` in the repository (see docs/development.md, 'Building'). "
        f"Original error: {error}"
    ) from error

from . import surrogate as _surrogate  # noqa: E402

Param = Union[float, torch.Tensor]

RESETS = ("proportional", "subtract")
_ACC_DTYPES = {
    torch.float64: torch.float64,
    torch.float32: torch.float32,
    torch.float16: torch.float32,
    torch.bfloat16: torch.float32,
}


def accumulation_dtype(dtype: torch.dtype, what: str = "spiking_recurrence: excitation") -> torch.dtype:
    """The dtype the kernel keeps its state and parameters in for inputs of ``dtype``."""
    if dtype not in _ACC_DTYPES:
        raise ValueError(f"{what} must be float64, float32, float16 or bfloat16, got {dtype}")
    return _ACC_DTYPES[dtype]


def check_flag(value, name: str, op: str, allow_none: bool = False) -> None:
    """A flag must be a bool: bool("no") is True, so coercing would silently flip a misspelt one."""
    if isinstance(value, bool) or (allow_none and value is None):
        return
    raise TypeError(
        f"{op}: {name} must be True or False{' (or None)' if allow_none else ''}, got "
        f"{type(value).__name__} {value!r}"
    )


def check_reset(reset: str) -> None:
    if reset not in RESETS:
        raise ValueError(
            f'spiking_recurrence: reset must be "proportional" or "subtract", got {reset!r}'
        )


def check_excitation(
    excitation: torch.Tensor, what: str = "spiking_recurrence: excitation", layout: str = "[T, *batch, H]"
) -> None:
    """A tensor of at least 2 dims, [T, ...], in a dtype the kernels take."""
    if not isinstance(excitation, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(excitation).__name__}")
    check_strided(excitation, what)
    if excitation.dim() < 2:
        raise ValueError(
            f"{what} must have shape {layout} (at least 2 dims), got shape {tuple(excitation.shape)}"
        )
    accumulation_dtype(excitation.dtype, what)


def check_strided(t: torch.Tensor, what: str) -> None:
    """Sparse, nested and other non-strided tensors would otherwise reach the dispatcher."""
    if t.layout != torch.strided or t.is_nested:
        raise TypeError(f"{what} must be a dense (strided) tensor, got layout {t.layout}"
                        f"{' (nested)' if t.is_nested else ''}")


# ------------------------------------------------------------------------------------------------
# The values of neuron constants. One rule everywhere: a constant must be a finite real number, and
# one the neuron divides by must be > 0 (the threshold of the proportional reset, SpikingJelly's
# tau). A Python float is checked on every call (that costs nothing). A tensor's values are checked
# where reading them costs nothing per step: when a module is built, when a constant is assigned to
# it, when a state_dict is loaded, and by ``module.check_constants()``. The ops check tensor values
# on every call only when asked -- ``set_validate_parameters(True)`` or ``with
# validate_parameters():`` -- because reading a CUDA tensor's values waits for the GPU (and breaks
# a torch.compile graph). Unchecked, an invalid value gives what the arithmetic gives: a NaN
# constant makes its neurons' results NaN; a zero threshold with the proportional reset, inf/NaN.

_validate = False

PROPORTIONAL_WHY = ' (reset="proportional" divides by the threshold)'
TAU_WHY = ' (with convention "spikingjelly" decay is tau, and the charge divides by it)'


def set_validate_parameters(mode: bool) -> None:
    """Checks the values of tensor neuron constants on every op call (off by default: on CUDA each
    check waits for the GPU). Useful while training learnable constants: an optimizer step can push
    a threshold through zero or make it NaN, and this turns that into an error at the next call."""
    check_flag(mode, "mode", "set_validate_parameters")
    global _validate
    _validate = mode


def is_validating_parameters() -> bool:
    return _validate


@contextlib.contextmanager
def validate_parameters(mode: bool = True):
    """``with snn_cuda.validate_parameters(): ...`` -- :func:`set_validate_parameters` for a block."""
    check_flag(mode, "mode", "validate_parameters")
    previous = _validate
    set_validate_parameters(mode)
    try:
        yield
    finally:
        set_validate_parameters(previous)


@contextlib.contextmanager
def gpu_lane_loops():
    """For tests: inside, the CPU kernels run the GPU's flavour of the lane loops (one lane at a
    time, each chunk's loads staged in values as a GPU thread stages them in registers), so CPU
    tests check the staging that otherwise only a GPU runs. Same results, bit for bit; slower."""
    previous = torch.ops.snn_cuda._set_gpu_lane_loops(True)
    try:
        yield
    finally:
        torch.ops.snn_cuda._set_gpu_lane_loops(previous)


def check_value(value, name: str, op: str, positive: bool = False, why: str = "") -> None:
    """Raises ValueError unless ``value`` (a number, or every value of a tensor) is finite, and
    > 0 if ``positive``. Reads a tensor's values: the callers decide when that is affordable."""
    need = "finite and > 0" + why if positive else "finite"
    if isinstance(value, torch.Tensor):
        v = value.detach()
        if v.numel() == 0 or v.is_complex() or v.dtype == torch.bool:
            return  # (the layout and dtype checks name those)
        bad = ~torch.isfinite(v)
        if positive:
            bad |= v <= 0
        if not bool(bad.any()):
            return
        first = v[bad].flatten()[0].item()
        raise ValueError(
            f"{op}: {name} must be {need}, got a tensor in which {int(bad.sum())} of "
            f"{v.numel()} values are not (the first: {first})"
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # Comparisons, not math.isfinite: under torch.compile(dynamic=True) a float is symbolic.
        if not (-math.inf < value < math.inf) or (positive and not value > 0):
            raise ValueError(f"{op}: {name} must be {need}, got {value}")


def check_tensor_values(op: str, *items) -> None:
    """Under :func:`validate_parameters`: :func:`check_value` on each ``(value, name, positive,
    why)`` that is a tensor (floats were checked already)."""
    if not _validate:
        return
    for value, name, positive, why in items:
        if isinstance(value, torch.Tensor):
            check_value(value, name, op, positive, why)


def check_float_threshold(threshold: Param, reset: str) -> None:
    if not isinstance(threshold, torch.Tensor):
        check_value(threshold, "threshold", "spiking_recurrence", reset == "proportional",
                    PROPORTIONAL_WHY)


def neuron_param(
    value: Param, name: str, H: int, dtype: torch.dtype, device: torch.device,
    op: str = "spiking_recurrence",
):
    """``value`` (a float, or a tensor broadcastable to [H]) as a contiguous [H] tensor of ``dtype``.

    Differentiable: a tensor that requires grad gets its gradient back through the expand/cast.
    """
    check_param_kind(value, name, op, device)
    if isinstance(value, torch.Tensor):
        if value.dim() > 1 or value.numel() not in (1, H):
            raise ValueError(
                f"{op}: {name} must be a float or a tensor broadcastable to [H] = [{H}] "
                f"(shape [], [1] or [{H}]), got shape {tuple(value.shape)}"
            )
        return value.to(dtype).reshape(-1).expand(H).contiguous()
    return constant_row(float(value), H, dtype, device)


def check_param_kind(value: Param, name: str, op: str, device: torch.device) -> None:
    """A neuron constant is a finite float, or a dense real tensor on the input's device."""
    if isinstance(value, torch.Tensor):
        check_strided(value, f"{op}: {name}")
        if value.device != device:
            source = "excitation" if op == "spiking_recurrence" else "the input"
            raise ValueError(f"{op}: {name} must be on {source}'s device {device}, got {value.device}")
        if value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{op}: {name} must be a real tensor, got dtype {value.dtype}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: {name} must be a float or a tensor, got {type(value).__name__}")
    check_value(value, name, op)


_CONSTANT_ROWS = {}


def constant_row(value: float, H: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.full((H,), value)``, cached: a module with float constants called once per time step
    would otherwise build three such tensors per call. Nothing writes to these tensors (the kernels
    only read their parameters). Not cached while tracing (torch.compile, fake tensors), under
    inference mode (an inference tensor cannot be saved for a later backward), or for NaN."""
    if (torch.compiler.is_compiling() or torch.is_inference_mode_enabled()
            or _python_dispatch._get_current_dispatch_mode() is not None or value != value):
        return torch.full((H,), value, dtype=dtype, device=device)
    key = (value.hex(), H, dtype, device)  # hex: -0.0 and 0.0 are different rows
    row = _CONSTANT_ROWS.get(key)
    if row is None:
        if len(_CONSTANT_ROWS) >= 512:
            _CONSTANT_ROWS.clear()
        row = _CONSTANT_ROWS[key] = torch.full((H,), value, dtype=dtype, device=device)
    return row


class _SecondDerivativeError(torch.autograd.Function):
    """Passes first derivatives through, linked to an incoming gradient, so that differentiating
    them again reaches this node and raises a clear error (instead of zeros, or autograd's "not
    used in the graph")."""

    @staticmethod
    def forward(ctx, link, *tensors):
        return tuple(t.clone() for t in tensors)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            "snn_cuda: the fused ops have a first derivative only (their backward is a hand-written "
            "kernel, not differentiable again); for higher derivatives differentiate through "
            "snn_cuda.reference instead"
        )


def first_derivative_only(backward):
    """Wraps an autograd.Function backward: runs it without recording, and under create_graph=True
    makes a second differentiation of its results raise (see _SecondDerivativeError)."""

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        with torch.no_grad():
            results = backward(ctx, *grads)
        links = [g for g in grads if isinstance(g, torch.Tensor) and g.requires_grad]
        if not links or not torch.is_grad_enabled():
            return results
        where = [i for i, r in enumerate(results) if isinstance(r, torch.Tensor)]
        linked = _SecondDerivativeError.apply(links[0], *[results[i] for i in where])
        results = list(results)
        for i, tensor in zip(where, linked):
            results[i] = tensor
        return tuple(results)

    return wrapper


def _same_device(op: str, reference: torch.Tensor, **tensors) -> None:
    """In the fake (meta) kernels: a real meta tensor among real CPU/CUDA ones dispatches here, and
    must fail as the real kernels do, not return uninitialised results."""
    for name, t in tensors.items():
        if t is not None:
            torch._check(t.device == reference.device,
                         lambda: f"{op}: {name} must be on the input's device {reference.device}, got {t.device}")


@torch.library.register_fake("snn_cuda::uniform_noise_")
def _uniform_noise_fake(out, seed, factor=None):
    return out


@torch.library.register_fake("snn_cuda::spiking_recurrence_fwd")
def _spiking_recurrence_fwd_fake(excitation, decay, threshold, penalty, reset, delay, initial=None):
    _same_device("spiking_recurrence_fwd", excitation, decay=decay, threshold=threshold,
                 penalty=penalty, initial=initial)
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
    shape, dtype, reset, delay, need_decay, need_threshold, need_penalty, initial=None,
    need_initial=False,
):
    _same_device("spiking_recurrence_bwd", gates, grad_states=grad_states, grad_outputs=grad_outputs,
                 states=states, outputs=outputs, decay=decay, threshold=threshold, penalty=penalty,
                 initial=initial)
    grad_excitation = gates.new_empty(shape, dtype=dtype)
    grad_initial = gates.new_empty(list(shape[1:]) if need_initial else [0], dtype=dtype)
    return grad_excitation, decay.new_empty(decay.shape), threshold.new_empty(
        threshold.shape
    ), penalty.new_empty(penalty.shape), grad_initial


class SpikingRecurrenceFunction(torch.autograd.Function):
    """Autograd for the fused recurrence. Arguments as the ``spiking_recurrence_fwd`` operator.

    Saved for backward: the spike gates (one bit per element), plus ``states`` only when the decay
    needs a gradient and ``outputs`` only when the proportional reset's threshold or penalty does.
    Both are outputs of the forward, so saving them allocates nothing.
    """

    # forward takes ctx (no setup_context): with a separate setup_context, Function.apply binds the
    # arguments to forward's signature through inspect on every call, ~40 us, more than a small
    # call's whole kernel (see docs/performance.md, "Short sequences").
    @staticmethod
    def forward(ctx, *inputs):
        output = torch.ops.snn_cuda.spiking_recurrence_fwd(*inputs)
        SpikingRecurrenceFunction.save_context(ctx, inputs, output)
        return output

    @staticmethod
    def save_context(ctx, inputs, output):
        """What a separate ``setup_context`` would do; ``inputs`` as passed to ``apply``:
        ``(excitation, decay, threshold, penalty, reset, delay[, initial])``."""
        excitation, decay, threshold, penalty, reset, delay = inputs[:6]
        initial = inputs[6] if len(inputs) > 6 else None
        states, outputs, gates = output
        _, need_decay, need_threshold, need_penalty = ctx.needs_input_grad[:4]
        keep_outputs = reset == "proportional" and (need_threshold or need_penalty)
        ctx.save_for_backward(
            gates,
            states if need_decay else None,
            outputs if keep_outputs else None,
            decay,
            threshold,
            penalty,
            initial if need_decay else None,
        )
        ctx.need_initial = initial is not None and len(ctx.needs_input_grad) > 6 and ctx.needs_input_grad[6]
        ctx.mark_non_differentiable(gates)
        ctx.set_materialize_grads(False)
        ctx.shape = excitation.shape
        ctx.dtype = excitation.dtype
        ctx.reset = reset
        ctx.delay = delay

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_states, grad_outputs, _grad_gates):
        gates, states, outputs, decay, threshold, penalty, initial = ctx.saved_tensors
        need_excitation, need_decay, need_threshold, need_penalty = ctx.needs_input_grad[:4]
        grad_excitation, grad_decay, grad_threshold, grad_penalty, grad_initial = (
            torch.ops.snn_cuda.spiking_recurrence_bwd(
                grad_states, grad_outputs, gates, states, outputs, decay, threshold, penalty,
                list(ctx.shape), ctx.dtype, ctx.reset, ctx.delay,
                need_decay, need_threshold, need_penalty, initial, ctx.need_initial,
            )
        )
        grads = (
            grad_excitation if need_excitation else None,
            grad_decay if need_decay else None,
            grad_threshold if need_threshold else None,
            grad_penalty if need_penalty else None,
            None,
            None,
        )
        if len(ctx.needs_input_grad) > 6:
            grads += (grad_initial if ctx.need_initial else None,)
        return grads


def spiking_recurrence(
    excitation: torch.Tensor,
    decay_multiplier: Param = 0.9,
    threshold: Param = 1.0,
    penalty_threshold: Param = 1.5,
    *,
    reset: str = "proportional",
    delay: bool = True,
    initial: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Runs a layer of spiking neurons over all time steps in one fused kernel call.

    Per neuron lane, with ``v_{-1} = initial`` (zeros by default) and ``I_t = excitation[t]``::

        u_t = I_t + decay_multiplier * v_{t-1}
        o_t = relu(u_t - threshold)                    g_t = [u_t > threshold]
        reset="proportional":  v_t = u_t - (penalty_threshold / threshold) * u_t * g_t
        reset="subtract":      v_t = u_t - (penalty_threshold + o_t) * g_t

    Gradients are exactly those of autograd through the plain loop (the gate ``g_t`` is a constant,
    ``relu'(0) = 0``).

    Args:
        excitation: ``[T, *batch, H]`` input excitation (the synaptic input at each step), float64,
            float32, float16 or bfloat16, on CPU or CUDA. Need not be contiguous. Half and
            bfloat16 keep the state in float32 inside the kernel; when a parameter needs a
            gradient they run the float32 kernel (same results, rounded once) and keep its
            float32 states for the backward, so parameter gradients are accumulated in float32
            all the way (at the cost of float32 copies of the input and results).
        decay_multiplier, threshold, penalty_threshold: a Python float, or a tensor broadcastable to
            ``[H]`` (one value per neuron) on excitation's device. A tensor that requires grad gets
            its gradient; a float gets none.
        reset: ``"proportional"`` (the seed's code) or ``"subtract"`` (the seed's prose).
        delay: if True, row ``t`` of the results holds ``(v_{t-1}, o_{t-1})`` and row 0 zeros,
            exactly what the seed's ``SpikingNeuronLayerRNN`` returns at each step; if False,
            row ``t`` holds ``(v_t, o_t)``.
        initial: the state ``v_{-1}`` before step 0, shaped like one step ``[*batch, H]`` (what a
            previous call's last ``states`` row was), or None for zeros; gets a gradient if it
            requires one. Only with ``delay=False`` (row 0 of a delayed call would be the unknown
            previous output).

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
    check_flag(delay, "delay", "spiking_recurrence")
    check_float_threshold(threshold, reset)
    check_tensor_values(
        "spiking_recurrence", (decay_multiplier, "decay_multiplier", False, ""),
        (threshold, "threshold", reset == "proportional", PROPORTIONAL_WHY),
        (penalty_threshold, "penalty_threshold", False, ""),
    )
    H = excitation.shape[-1]
    acc = accumulation_dtype(excitation.dtype)
    device = excitation.device
    decay = neuron_param(decay_multiplier, "decay_multiplier", H, acc, device)
    thresh = neuron_param(threshold, "threshold", H, acc, device)
    penalty = neuron_param(penalty_threshold, "penalty_threshold", H, acc, device)
    if initial is not None:
        initial = check_initial_state(initial, excitation, delay)
    if acc != excitation.dtype and torch.is_grad_enabled() and (
        decay.requires_grad or thresh.requires_grad or penalty.requires_grad
    ):
        # The parameter gradients read the states and outputs back. Rounded to float16/bfloat16 they
        # are not what the kernel's float32 state held (and may overflow to inf where it did not),
        # so the float32 kernel runs and keeps its results for the backward: rounded to the input
        # dtype they are the half kernel's bit for bit (it too computes in float32 and rounds each
        # result once), and the gradients match the float32-accumulating reference.
        states, outputs, _ = SpikingRecurrenceFunction.apply(
            excitation.to(acc), decay, thresh, penalty, reset, bool(delay),
            None if initial is None else initial.to(acc),
        )
        return states.to(excitation.dtype), outputs.to(excitation.dtype)
    states, outputs, _ = SpikingRecurrenceFunction.apply(
        excitation, decay, thresh, penalty, reset, bool(delay), initial
    )
    return states, outputs


def check_initial_state(initial, excitation: torch.Tensor, delay: bool) -> torch.Tensor:
    """``initial`` as the graded op takes it (only without delay; see :func:`initial_step`)."""
    if delay:
        raise ValueError(
            "spiking_recurrence: an initial state needs delay=False (a delayed call's row 0 would be "
            "the previous step's output, which the state does not give)"
        )
    return initial_step(initial, excitation, "spiking_recurrence", "excitation")


def initial_step(initial, like: torch.Tensor, op: str, source: str) -> torch.Tensor:
    """An initial state as the ops take it: a dense real tensor shaped like one step of ``like``
    (the sequence, named ``source``), on its device, cast to its dtype; an inference tensor is
    used through a copy (see :func:`outside_inference`)."""
    if not isinstance(initial, torch.Tensor):
        raise TypeError(f"{op}: initial must be a tensor or None, got {type(initial).__name__}")
    check_strided(initial, f"{op}: initial")
    if tuple(initial.shape) != tuple(like.shape[1:]):
        raise ValueError(
            f"{op}: initial must have the shape of one {source} step {tuple(like.shape[1:])}, got "
            f"{tuple(initial.shape)}"
        )
    if initial.device != like.device:
        raise ValueError(f"{op}: initial must be on the {source}'s device {like.device}, got {initial.device}")
    if initial.is_complex() or not initial.is_floating_point():
        raise TypeError(f"{op}: initial must be a real floating tensor, got dtype {initial.dtype}")
    return outside_inference(initial.to(like.dtype))


def outside_inference(state: torch.Tensor) -> torch.Tensor:
    """A state kept from a call under torch.inference_mode() is an inference tensor, which autograd
    may not save; outside inference mode it is used through a copy (what a module's next training
    call needs), so one evaluation call does not break the training that follows."""
    if torch.compiler.is_compiling():  # (tracing cannot ask; compiled code has no inference tensors)
        return state
    if state.is_inference() and not torch.is_inference_mode_enabled():
        return state.clone()
    return state


# ================================================================================================
# Binary spikes with surrogate gradients: torch.ops.snn_cuda.lif_fwd / lif_bwd.

CONVENTIONS = ("snntorch", "snntorch_now", "spikingjelly", "spikingjelly_if", "spikingjelly_plif")
SNNTORCH_CONVENTIONS = ("snntorch", "snntorch_now")  # snnTorch's Leaky, reset_delay=True / False
LIF_RESETS = ("subtract", "hard", "none")  # "none": the snntorch convention only


@torch.library.register_fake("snn_cuda::lif_fwd")
def _lif_fwd_fake(input, initial, decay, threshold, reset_value, convention, reset, decay_input):
    _same_device("lif_fwd", input, initial=initial, decay=decay, threshold=threshold,
                 reset_value=reset_value)
    torch._check(input.dim() >= 2, lambda: "input must have at least 2 dims")
    H = input.shape[-1]
    for param in (decay, threshold, reset_value):
        torch._check(param.dim() == 1 and param.shape[0] == H, lambda: "params must be [H]")
    return input.new_empty(input.shape), input.new_empty(input.shape), input.new_empty(input.shape[1:])


@torch.library.register_fake("snn_cuda::lif_bwd")
def _lif_bwd_fake(
    grad_spikes, grad_membrane, grad_state, membrane, initial, input, decay, threshold, reset_value,
    convention, reset, decay_input, detach_reset, surrogate, alpha, need_decay, need_threshold,
):
    _same_device("lif_bwd", membrane, grad_spikes=grad_spikes, grad_membrane=grad_membrane,
                 grad_state=grad_state, initial=initial, input=input, decay=decay,
                 threshold=threshold, reset_value=reset_value)
    return (
        membrane.new_empty(membrane.shape),
        membrane.new_empty(membrane.shape[1:]),
        decay.new_empty(decay.shape),
        threshold.new_empty(threshold.shape),
    )


class LIFFunction(torch.autograd.Function):
    """Autograd for the fused binary-spike LIF (arguments as ``lif_fwd`` plus the backward-only
    ``detach_reset``, ``surrogate`` and ``alpha``).

    Saved for backward: the membrane the forward returned (one tensor of the input's size), the
    initial state if one was given, and the input only for tau's gradient under the
    SpikingJelly convention with ``decay_input``. Outputs: spikes, membrane, and the state carried
    past the last step (snnTorch's m, SpikingJelly's v after its reset), each differentiable.
    """

    @staticmethod
    def forward(ctx, input, initial, decay, threshold, reset_value, convention: str, reset: str,
                decay_input: bool, detach_reset: bool, surrogate: str, alpha: float):
        # ctx-style, as SpikingRecurrenceFunction (a setup_context costs ~40 us per call).
        output = torch.ops.snn_cuda.lif_fwd(
            input, initial, decay, threshold, reset_value, convention, reset, decay_input
        )
        LIFFunction.save_context(
            ctx, (input, initial, decay, threshold, reset_value, convention, reset, decay_input,
                  detach_reset, surrogate, alpha), output,
        )
        return output

    @staticmethod
    def save_context(ctx, inputs, output):
        (input, initial, decay, threshold, reset_value, convention, reset, decay_input,
         detach_reset, surrogate, alpha) = inputs
        membrane = output[1]
        need_decay = ctx.needs_input_grad[2]
        keep_input = convention == "snntorch_now" or (  # its backward recomputes the charge
            convention in ("spikingjelly", "spikingjelly_plif") and decay_input and need_decay)
        ctx.save_for_backward(
            membrane, initial, input if keep_input else None, decay, threshold, reset_value
        )
        ctx.set_materialize_grads(False)
        ctx.config = (convention, reset, decay_input, detach_reset, surrogate, alpha)

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_spikes, grad_membrane, grad_state):
        return LIFFunction.backward_with(ctx, grad_spikes, grad_membrane, grad_state, lambda t: t)

    @staticmethod
    def backward_with(ctx, grad_spikes, grad_membrane, grad_state, as_input_shape):
        membrane, initial, input, decay, threshold, reset_value = ctx.saved_tensors
        membrane = as_input_shape(membrane)
        need_input, need_initial, need_decay, need_threshold = ctx.needs_input_grad[:4]
        convention, reset, decay_input, detach_reset, surrogate, alpha = ctx.config
        grad_input, grad_initial, grad_decay, grad_threshold = torch.ops.snn_cuda.lif_bwd(
            grad_spikes, grad_membrane, grad_state, membrane, initial, input, decay, threshold,
            reset_value,
            convention, reset, decay_input, detach_reset, surrogate, alpha,
            need_decay, need_threshold,
        )
        return (
            grad_input if need_input else None,
            grad_initial if need_initial else None,
            grad_decay if need_decay else None,
            grad_threshold if need_threshold else None,
            None, None, None, None, None, None, None,
        )


def check_lif_values(convention: str, decay, threshold, reset_value, op: str) -> None:
    """The values rule (see :func:`check_value`): floats now, tensors under
    :func:`validate_parameters`."""
    if isinstance(reset_value, torch.Tensor) and reset_value.requires_grad:
        raise ValueError(f"{op}: reset_value gets no gradient; pass a float or a tensor that does not require grad")
    tau = convention == "spikingjelly"
    items = ((decay, "decay", tau, TAU_WHY if tau else ""), (threshold, "threshold", False, ""),
             (reset_value, "reset_value", False, ""))
    for value, name, positive, why in items:
        if not isinstance(value, torch.Tensor):
            check_value(value, name, op, positive, why)
    check_tensor_values(op, *items)


def if_decay(convention: str, decay, decay_input, op: str):
    """``convention="spikingjelly_if"`` (SpikingJelly's IFNode) has no leak: ``decay`` must be None
    and ``decay_input`` left at its default; returns the constant the kernel is given (it does not
    read it). Other conventions: ``decay`` unchanged."""
    if convention != "spikingjelly_if":
        return decay
    if decay is not None:
        raise ValueError(f'{op}: convention "spikingjelly_if" (IFNode) has no decay; pass decay=None, '
                         f"got {decay!r}")
    if decay_input is not True:
        raise ValueError(f'{op}: convention "spikingjelly_if" (IFNode) has no decay_input; leave it at '
                         f"True, got {decay_input!r}")
    return 1.0


def resolve_lif_options(convention: str, reset: str, detach_reset: Optional[bool], surrogate,
                        decay_input: bool = True):
    """Checks the options and fills in the convention's defaults: (detach_reset, Surrogate)."""
    check_flag(detach_reset, "detach_reset", "lif", allow_none=True)
    check_flag(decay_input, "decay_input", "lif")
    if convention not in CONVENTIONS:
        raise ValueError('lif: convention must be "snntorch", "snntorch_now", "spikingjelly", '
                         f'"spikingjelly_if" or "spikingjelly_plif", got {convention!r}')
    if reset not in LIF_RESETS:
        raise ValueError(f'lif: reset must be "subtract", "hard" or "none", got {reset!r}')
    if reset == "none" and convention not in SNNTORCH_CONVENTIONS:
        raise ValueError('lif: reset="none" (no reset, as snnTorch\'s reset_mechanism="none") exists '
                         'for convention="snntorch" and "snntorch_now" only')
    if detach_reset is None:
        # snnTorch's Leaky detaches its delayed reset; its immediate one (reset_delay=False) passes
        # the spike's surrogate gradient.
        detach_reset = convention == "snntorch"
    default = (_surrogate.SNNTORCH_DEFAULT if convention in SNNTORCH_CONVENTIONS
               else _surrogate.SPIKINGJELLY_DEFAULT)
    return bool(detach_reset), _surrogate.resolve(surrogate, default, "lif")


def lif_param(value: Param, name: str, step_shape, flat: bool, dtype: torch.dtype,
              device: torch.device, op: str = "lif") -> torch.Tensor:
    """``value`` as the kernel's per-lane parameter: [H] (``flat`` False, H = step_shape[-1]) or,
    for values that vary over more than the last dim, [prod(step_shape)] (``flat`` True).
    Differentiable through the broadcast and the cast."""
    if not flat:
        return neuron_param(value, name, step_shape[-1], dtype, device, op=op)
    check_param_kind(value, name, op, device)
    if not isinstance(value, torch.Tensor):
        value = constant_row(float(value), 1, dtype, device)
    try:
        expanded = torch.broadcast_to(value.to(dtype), tuple(step_shape))
    except RuntimeError:
        raise ValueError(
            f"{op}: {name} of shape {tuple(value.shape)} does not broadcast to one step of the "
            f"input, shape {tuple(step_shape)}"
        ) from None
    return expanded.reshape(-1).contiguous()


def _per_last_dim(value: Param, H: int) -> bool:
    """True if ``value`` broadcasts as a per-neuron [H] vector (a float, [], [1] or [H])."""
    return not isinstance(value, torch.Tensor) or (value.dim() <= 1 and value.numel() in (1, H))


def prepare_lif(input: torch.Tensor, initial, params, names):
    """Validates and lays out the op's arguments. Returns (input, initial, params, restore): input
    possibly flattened to [T, L] (when a parameter varies over more than the last dim), the params
    as kernel tensors, and restore(t) giving a result back the input's shape."""
    check_excitation(input, "lif: input", "[T, *batch, *features]")
    acc = accumulation_dtype(input.dtype, "lif: input")
    step_shape = input.shape[1:]
    flat = not all(_per_last_dim(v, step_shape[-1]) for v in params)
    kernel_params = [
        lif_param(v, name, step_shape, flat, acc, input.device) for v, name in zip(params, names)
    ]
    if initial is not None:
        initial = initial_step(initial, input, "lif", "input")
    if not flat:
        return input, initial, kernel_params, lambda t: t
    T = input.shape[0]
    shape = input.shape
    input = input.reshape(T, math.prod(input.shape[1:]))  # (-1 is ambiguous when T = 0)
    if initial is not None:
        initial = initial.reshape(-1)
    return input, initial, kernel_params, lambda t: t.reshape(shape)


def lif(
    input: torch.Tensor,
    decay: Optional[Param],
    threshold: Param = 1.0,
    *,
    convention: str = "snntorch",
    reset: str = "subtract",
    reset_value: Param = 0.0,
    decay_input: bool = True,
    detach_reset: Optional[bool] = None,
    surrogate=None,
    initial: Optional[torch.Tensor] = None,
    return_state: bool = False,
):
    """Leaky integrate-and-fire neurons with binary spikes, all time steps in one fused kernel call.

    ``convention="snntorch"`` computes snnTorch's ``Leaky`` (``decay`` is beta; the reset at step t
    uses the spike of step t - 1), ``convention="snntorch_now"`` its ``Leaky(reset_delay=False)``
    (the spike also resets the membrane in its own step, less what the delayed reset did: by the
    threshold, or to ``reset_value`` with ``reset="hard"``; the membrane returned is the one after
    that reset; ``detach_reset`` stops the gradient through that reset's spike, default False as
    in snnTorch), ``convention="spikingjelly"`` SpikingJelly's ``LIFNode``
    (``decay`` is tau; charge, fire and reset in one step), ``convention="spikingjelly_plif"``
    SpikingJelly's ``ParametricLIFNode`` (``decay`` is the rate ``q = sigmoid(w)``, which multiplies
    the charge), ``convention="spikingjelly_if"``
    SpikingJelly's ``IFNode`` (no leak: ``H[t] = V[t-1] + X[t]``; pass ``decay=None``), each
    operation for operation; the
    equations are in ``csrc/spiking_recurrence.h`` and docs/semantics.md. ``reset="subtract"`` subtracts the
    threshold after a spike (soft reset); ``reset="hard"`` sets the membrane to ``reset_value``
    (snnTorch's ``"zero"`` is ``reset_value=0``); ``reset="none"`` (snntorch convention only) never
    resets: the membrane only leaks, as snnTorch's ``reset_mechanism="none"``.

    The backward is exact for the forward's arithmetic with ``dH(z)/dz`` replaced by the
    ``surrogate`` derivative (see :mod:`snn_cuda.surrogate`; default: snnTorch's ``atan(2)``
    resp. SpikingJelly's ``Sigmoid(4)``). ``detach_reset`` stops the gradient through the reset's
    dependence on the spike (default: True for snntorch, whose Leaky always detaches; False for
    spikingjelly, its default).

    Args:
        input: ``[T, *batch, *features]``, float64/32/16 or bfloat16, CPU or CUDA.
        decay, threshold: floats, or tensors broadcastable to one step ``[*batch, *features]``
            (usually ``[]`` or per neuron); a tensor that requires grad gets its gradient.
        reset_value: float or tensor (no gradient), used by ``reset="hard"``.
        decay_input: spikingjelly only: whether the input is divided by tau too.
        initial: the membrane before step 0 (snnTorch's ``mem``, SpikingJelly's ``v``), shaped like
            one step; default zeros. Gets a gradient if it requires one.
        return_state: also return the state carried past the last step, shaped like one step.

    Returns:
        ``(spikes, membrane)``, each shaped and typed like ``input``: spikes are 0/1; the membrane
        is snnTorch's ``mem`` (before the delayed reset), resp. SpikingJelly's charged potential
        ``H[t]`` before the reset (``V[t] = H[t] - s[t] * threshold`` or ``where(s, v_reset, H)``).
        With ``return_state``, ``(spikes, membrane, state)``: the state the next call would start
        from (``initial``), snnTorch's last ``mem`` resp. SpikingJelly's last ``V`` after its reset
        (the initial state, or zeros, when T = 0); differentiable like the others.

    Example::

        >>> x = torch.randn(100, 16, 256, requires_grad=True)
        >>> spikes, mem = snn_cuda.lif(x, 0.9, 1.0)                    # snnTorch Leaky semantics
        >>> spikes.sum().backward()
    """
    check_flag(return_state, "return_state", "lif")
    detach_reset, spec = resolve_lif_options(convention, reset, detach_reset, surrogate, decay_input)
    decay = if_decay(convention, decay, decay_input, "lif")
    check_lif_values(convention, decay, threshold, reset_value, "lif")
    flat_input, initial, (dec, thr, rv), restore = prepare_lif(
        input, initial, (decay, threshold, reset_value), ("decay", "threshold", "reset_value")
    )
    step_shape = input.shape[1:]
    spikes, membrane, state = LIFFunction.apply(
        flat_input, initial, dec, thr, rv.detach(), convention, reset, bool(decay_input),
        detach_reset, spec.name, spec.alpha,
    )
    if return_state:
        return restore(spikes), restore(membrane), state.reshape(step_shape)
    return restore(spikes), restore(membrane)


# ------------------------------------------------------------------------------------------------
# One time step: the T = 1 case of the same ops, for the per-step drop-in modules.


class LIFStepFunction(LIFFunction):
    """:class:`LIFFunction` for one time step: takes ``input`` as ``[1, ...]`` (the kernel's layout)
    and returns ``(spikes, membrane)`` shaped ``step_shape``, as fresh tensors rather than views (so
    that a module's state can be detached in place, as snnTorch's ``detach_hidden`` does)."""

    @staticmethod
    def forward(ctx, input, initial, decay, threshold, reset_value, convention: str, reset: str,
                decay_input: bool, detach_reset: bool, surrogate: str, alpha: float, step_shape):
        spikes, membrane, state = LIFFunction.forward(
            ctx, input, initial, decay, threshold, reset_value, convention, reset, decay_input,
            detach_reset, surrogate, alpha,
        )
        ctx.input_shape = input.shape
        return (torch.ops.aten._unsafe_view(spikes, step_shape),
                torch.ops.aten._unsafe_view(membrane, step_shape),
                torch.ops.aten._unsafe_view(state, step_shape))

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_spikes, grad_membrane, grad_state):
        def as_input_shape(t):
            return None if t is None else t.reshape(ctx.input_shape)

        grads = LIFFunction.backward_with(
            ctx, as_input_shape(grad_spikes), as_input_shape(grad_membrane),
            None if grad_state is None else grad_state.reshape(ctx.input_shape[1:]), as_input_shape,
        )
        return grads + (None,)


def lif_step(
    input: torch.Tensor,
    decay: Optional[Param],
    threshold: Param = 1.0,
    *,
    convention: str = "snntorch",
    reset: str = "subtract",
    reset_value: Param = 0.0,
    decay_input: bool = True,
    detach_reset: Optional[bool] = None,
    surrogate=None,
    initial: Optional[torch.Tensor] = None,
    return_state: bool = False,
):
    """One time step of :func:`lif`: ``input`` is one step ``[*batch, *features]`` (no time dim),
    ``initial`` the state before it; returns ``(spikes, membrane)`` of the input's shape, and with
    ``return_state`` the state after this step (what the next step's ``initial`` is). The same
    fused kernel (one forward and one backward launch per step) and the same numbers as
    ``lif(input[None], ..., initial=initial)``; the results are fresh tensors, not views."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"lif_step: input must be a torch.Tensor, got {type(input).__name__}")
    check_strided(input, "lif_step: input")
    check_flag(return_state, "return_state", "lif_step")
    detach_reset, spec = resolve_lif_options(convention, reset, detach_reset, surrogate, decay_input)
    decay = if_decay(convention, decay, decay_input, "lif_step")
    check_lif_values(convention, decay, threshold, reset_value, "lif_step")
    step_shape = tuple(input.shape)
    sequence = input.reshape(1, *step_shape) if input.dim() > 0 else input.reshape(1, 1)
    if initial is not None and isinstance(initial, torch.Tensor) and input.dim() == 0:
        initial = initial.reshape(1)
    x, initial, (dec, thr, rv), _ = prepare_lif(
        sequence, initial, (decay, threshold, reset_value), ("decay", "threshold", "reset_value")
    )
    spikes, membrane, state = LIFStepFunction.apply(
        x, initial, dec, thr, rv.detach(), convention, reset, bool(decay_input),
        detach_reset, spec.name, spec.alpha, step_shape,
    )
    return (spikes, membrane, state) if return_state else (spikes, membrane)
