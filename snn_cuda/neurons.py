"""Drop-in replacements for snnTorch's ``Leaky`` and SpikingJelly's ``LIFNode`` that run a whole
``[T, batch, ...]`` sequence in one fused kernel call (:func:`snn_cuda.lif`).

Both take the arguments of the module they replace, compute the same numbers (tests compare them
with the installed libraries), and raise a ``ValueError`` for any option they do not reproduce,
never silently computing something else.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import nn

from . import surrogate as _surrogate
from .ops import lif

Number = Union[float, int]


def _tensor_param(module: nn.Module, name: str, value, learn: bool) -> None:
    """Registers ``value`` as a Parameter (``learn``) or a buffer, as snnTorch does."""
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    if learn:
        setattr(module, name, nn.Parameter(tensor))
    else:
        module.register_buffer(name, tensor)


def _reject(cls: str, option: str, value, why: str) -> None:
    raise ValueError(f"snn_cuda.{cls}: {option}={value!r} is not supported ({why})")


class Leaky(nn.Module):
    """snnTorch's ``Leaky`` neuron over a whole sequence in one fused call.

    Arguments as ``snntorch.Leaky`` (snnTorch 1.0). Per step, with ``r_t`` the previous step's spike
    (snnTorch's delayed, detached reset)::

        reset_mechanism="subtract":  mem_t = beta * mem_{t-1} + x_t - r_t * threshold
        reset_mechanism="zero":      mem_t = beta * (1 - r_t) * mem_{t-1} + x_t
        spk_t = H(mem_t - threshold)   (backward: the ``spike_grad`` surrogate; default atan(2))

    ``beta`` is clamped to [0, 1] as snnTorch does; ``beta`` and ``threshold`` may be floats or
    tensors (one value per neuron, broadcastable to one step of the input) and are learnable with
    ``learn_beta`` / ``learn_threshold``. ``spike_grad`` accepts snnTorch's own
    ``surrogate.atan(...)``, ``surrogate.fast_sigmoid(...)`` and ``surrogate.sigmoid(...)`` as well as
    :mod:`snn_cuda.surrogate` objects. The parameter and buffer names are snnTorch's, so a
    ``Leaky``'s ``state_dict`` loads into this module and back.

    Differences from calling ``snntorch.Leaky`` once per step:

    - ``forward(input_, mem=None)`` takes the whole sequence ``[T, batch, ...]`` and returns
      ``(spk, mem)`` stacked over time (what a loop that appends each step's results builds), or
      with ``init_hidden=True`` only ``spk`` (``(spk, mem)`` with ``output=True``).
    - As in snnTorch, the membrane is kept in ``self.mem`` between calls: the next call starts from
      it when it has the right shape and no ``mem`` is passed. ``reset_mem()`` zeroes it.
    - Spikes have the input's dtype (snnTorch returns float32 spikes for any input).

    Not supported (a ``ValueError`` says so): ``reset_mechanism="none"``, ``reset_delay=False``,
    ``inhibition``, ``state_quant``, ``surrogate_disable``, ``graded_spikes_factor != 1`` or learnable,
    and surrogates other than atan / fast_sigmoid / sigmoid.
    """

    def __init__(
        self,
        beta,
        threshold=1.0,
        spike_grad=None,
        surrogate_disable: bool = False,
        init_hidden: bool = False,
        inhibition: bool = False,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        reset_mechanism: str = "subtract",
        state_quant=False,
        output: bool = False,
        graded_spikes_factor=1.0,
        learn_graded_spikes_factor: bool = False,
        reset_delay: bool = True,
    ):
        super().__init__()
        if reset_mechanism not in ("subtract", "zero", "none"):
            raise ValueError("reset_mechanism must be set to either 'subtract', 'zero', or 'none'.")
        if reset_mechanism == "none":
            _reject("Leaky", "reset_mechanism", reset_mechanism, "the fused kernel always resets")
        if not reset_delay:
            _reject("Leaky", "reset_delay", reset_delay,
                    "only snnTorch's default delayed reset is fused")
        if inhibition:
            _reject("Leaky", "inhibition", inhibition, "it couples the neurons of a layer")
        if state_quant:
            _reject("Leaky", "state_quant", state_quant, "quantised states are not fused")
        if surrogate_disable:
            _reject("Leaky", "surrogate_disable", surrogate_disable, "use a surrogate")
        if learn_graded_spikes_factor or not bool(torch.all(torch.as_tensor(graded_spikes_factor) == 1)):
            _reject("Leaky", "graded_spikes_factor", graded_spikes_factor,
                    "spikes are 0/1; scale the next layer instead")
        self.surrogate = _surrogate.resolve(
            spike_grad, _surrogate.SNNTORCH_DEFAULT, "snn_cuda.Leaky spike_grad"
        )
        self.init_hidden = init_hidden
        self.output = output
        self.reset_delay = reset_delay
        self._reset_mechanism = reset_mechanism
        # snnTorch's names and registration order, so that state_dicts load both ways.
        _tensor_param(self, "threshold", threshold, learn_threshold)
        self.register_buffer("graded_spikes_factor", torch.as_tensor(graded_spikes_factor))
        self.register_buffer(
            "reset_mechanism_val", torch.as_tensor({"subtract": 0, "zero": 1}[reset_mechanism])
        )
        _tensor_param(self, "beta", beta, learn_beta)
        self.register_buffer("mem", torch.zeros(0), persistent=False)

    @property
    def reset_mechanism(self) -> str:
        return self._reset_mechanism

    def reset_mem(self) -> torch.Tensor:
        self.mem = torch.zeros_like(self.mem, device=self.mem.device)
        return self.mem

    def init_leaky(self) -> torch.Tensor:
        """Deprecated in snnTorch; same as :meth:`reset_mem`."""
        return self.reset_mem()

    def forward(self, input_: torch.Tensor, mem: Optional[torch.Tensor] = None):
        if self.init_hidden and mem is not None:
            raise TypeError("`mem` should not be passed as an argument while `init_hidden=True`")
        if not isinstance(input_, torch.Tensor) or input_.dim() < 2:
            raise ValueError(
                "snn_cuda.Leaky: input_ must be the whole sequence, shape [T, batch, ...]; got "
                f"{tuple(input_.shape) if isinstance(input_, torch.Tensor) else type(input_).__name__}"
            )
        if mem is None and tuple(self.mem.shape) == tuple(input_.shape[1:]):
            mem = self.mem
        spk, mem_rec = lif(
            input_,
            self.beta.clamp(0, 1),
            self.threshold,
            convention="snntorch",
            reset="subtract" if self._reset_mechanism == "subtract" else "hard",
            reset_value=0.0,
            detach_reset=True,
            surrogate=self.surrogate,
            initial=mem,
        )
        if input_.shape[0] > 0:
            self.mem = mem_rec[-1]
        if self.init_hidden:
            return (spk, mem_rec) if self.output else spk
        return spk, mem_rec

    def extra_repr(self) -> str:
        return (
            f"reset_mechanism={self._reset_mechanism!r}, surrogate={self.surrogate.name}"
            f"(alpha={self.surrogate.alpha:g}), init_hidden={self.init_hidden}"
        )


class LIFNode(nn.Module):
    """SpikingJelly's ``LIFNode`` with the whole multi-step recurrence in one fused call.

    Arguments as ``spikingjelly.activation_based.neuron.LIFNode`` (SpikingJelly 2.0)::

        decay_input:  H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau
        otherwise:    H[t] = V[t-1] - (V[t-1] - V_reset) / tau + X[t]
        S[t] = H(H[t] - v_threshold)          (backward: ``surrogate_function``; default Sigmoid(4))
        v_reset=None (soft):  V[t] = H[t] - S[t] * v_threshold      (V_reset = 0 in the charge)
        v_reset=float (hard): V[t] = S[t] * v_reset + (1 - S[t]) * H[t]

    ``detach_reset`` stops the gradient through the reset's spike. ``step_mode="m"`` takes
    ``[T, N, ...]``; ``"s"`` (SpikingJelly's default) one step ``[N, ...]``. As in SpikingJelly the
    membrane ``self.v`` persists between calls until :meth:`reset` (which
    ``spikingjelly.activation_based.functional.reset_net`` calls); ``store_v_seq`` keeps
    ``self.v_seq``. ``surrogate_function`` accepts SpikingJelly's ``Sigmoid``, ``ATan`` and
    ``SuperSpike`` (and :mod:`snn_cuda.surrogate` objects).

    Beyond SpikingJelly's LIFNode: ``tau`` and ``v_threshold`` may be tensors (per neuron,
    broadcastable to one step) and are learnable with ``learn_tau`` / ``learn_threshold``.

    Not supported (``ValueError``): other surrogate functions, ``spiking=False`` surrogates.
    """

    def __init__(
        self,
        tau: Union[Number, torch.Tensor] = 2.0,
        decay_input: bool = True,
        v_threshold: Union[Number, torch.Tensor] = 1.0,
        v_reset: Optional[Number] = 0.0,
        surrogate_function=None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        learn_tau: bool = False,
        learn_threshold: bool = False,
    ):
        super().__init__()
        if not isinstance(tau, torch.Tensor):
            if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (
                math.isfinite(tau) and tau > 1.0
            ):
                raise ValueError(f"snn_cuda.LIFNode: tau must be a finite float > 1, got {tau!r}")
            tau = float(tau)
        if v_reset is not None and (isinstance(v_reset, bool) or not isinstance(v_reset, (int, float))):
            raise ValueError(f"snn_cuda.LIFNode: v_reset must be a float or None, got {v_reset!r}")
        if step_mode not in ("s", "m"):
            raise ValueError(f"snn_cuda.LIFNode: step_mode must be 's' or 'm', got {step_mode!r}")
        self.surrogate_function = _surrogate.resolve(
            surrogate_function, _surrogate.SPIKINGJELLY_DEFAULT, "snn_cuda.LIFNode surrogate_function"
        )
        self.decay_input = decay_input
        self.v_reset = None if v_reset is None else float(v_reset)
        self.detach_reset = detach_reset
        self.step_mode = step_mode
        self.store_v_seq = store_v_seq
        self._register_constant("tau", tau, learn_tau)
        self._register_constant("v_threshold", v_threshold, learn_threshold)
        self.reset()

    def _register_constant(self, name: str, value, learn: bool) -> None:
        """A float stays a float (as in SpikingJelly); a tensor becomes a buffer, or a Parameter
        when learnable, so that ``.to(device)`` moves it."""
        if learn:
            tensor = value.detach().clone() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            setattr(self, name, nn.Parameter(tensor))
        elif isinstance(value, torch.Tensor):
            self.register_buffer(name, value)
        else:
            setattr(self, name, float(value))

    def reset(self) -> None:
        """Back to the resting state: ``v = v_reset`` (0 for a soft reset), ``v_seq`` cleared."""
        self.v = 0.0 if self.v_reset is None else self.v_reset
        self.v_seq = None

    def _initial(self, step: torch.Tensor) -> Optional[torch.Tensor]:
        """The membrane before this call: ``self.v`` (a float at rest, else the last call's V)."""
        if isinstance(self.v, torch.Tensor):
            if tuple(self.v.shape) != tuple(step.shape):
                raise ValueError(
                    f"snn_cuda.LIFNode: the membrane kept from the previous call has shape "
                    f"{tuple(self.v.shape)} but one step of this input has shape {tuple(step.shape)}; "
                    "call reset() (or spikingjelly's functional.reset_net) between batches"
                )
            return self.v
        if float(self.v) == 0.0:
            return None  # the kernel's default
        return torch.full_like(step, float(self.v))

    def _after_reset(self, h: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        """V[t] from H[t] and S[t] (exactly the kernel's arithmetic)."""
        s = spikes.detach() if self.detach_reset else spikes
        threshold = self.v_threshold
        if isinstance(threshold, torch.Tensor):
            threshold = threshold.to(h.dtype)
        if self.v_reset is None:
            return h - s * threshold
        return s * self.v_reset + (1.0 - s) * h

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not isinstance(x_seq, torch.Tensor) or x_seq.dim() < 2:
            raise ValueError(
                "snn_cuda.LIFNode: multi-step input must have shape [T, N, ...]; got "
                f"{tuple(x_seq.shape) if isinstance(x_seq, torch.Tensor) else type(x_seq).__name__}"
            )
        if x_seq.shape[0] == 0:
            raise ValueError("snn_cuda.LIFNode: the sequence is empty (T = 0)")
        spikes, h = lif(
            x_seq,
            self.tau,
            self.v_threshold,
            convention="spikingjelly",
            reset="subtract" if self.v_reset is None else "hard",
            reset_value=0.0 if self.v_reset is None else self.v_reset,
            decay_input=self.decay_input,
            detach_reset=self.detach_reset,
            surrogate=self.surrogate_function,
            initial=self._initial(x_seq[0]),
        )
        if self.store_v_seq:
            self.v_seq = self._after_reset(h, spikes)
            self.v = self.v_seq[-1]
        else:
            self.v = self._after_reset(h[-1], spikes[-1])
        return spikes

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() < 1:
            raise ValueError("snn_cuda.LIFNode: single-step input must be a tensor [N, ...]")
        store, self.store_v_seq = self.store_v_seq, False
        try:
            spikes = self.multi_step_forward(x.unsqueeze(0))[0]
        finally:
            self.store_v_seq = store
        if store:
            v = self.v.unsqueeze(0)
            self.v_seq = v if self.v_seq is None else torch.cat([self.v_seq, v])
        return spikes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "m":
            return self.multi_step_forward(x)
        return self.single_step_forward(x)

    def extra_repr(self) -> str:
        tau = self.tau if not isinstance(self.tau, torch.Tensor) else f"tensor{tuple(self.tau.shape)}"
        return (
            f"tau={tau}, decay_input={self.decay_input}, v_threshold="
            f"{self.v_threshold if not isinstance(self.v_threshold, torch.Tensor) else 'tensor'}, "
            f"v_reset={self.v_reset}, detach_reset={self.detach_reset}, step_mode={self.step_mode}, "
            f"surrogate={self.surrogate_function.name}(alpha={self.surrogate_function.alpha:g})"
        )
