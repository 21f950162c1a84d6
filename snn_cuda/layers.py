"""Drop-in spiking layers built on the fused recurrence."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from . import reference
from .neurons import check_step_mode
from ._constants import CheckedConstants
from .ops import (
    PROPORTIONAL_WHY,
    Param,
    check_flag,
    check_float_threshold,
    check_reset,
    spiking_recurrence,
)

BACKENDS = ("fused", "reference")


def check_sizes(layer: str, **sizes) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{layer}: {name} must be an int >= 1, got {type(value).__name__} {value!r}"
            )


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f'backend must be "fused" or "reference", got {backend!r}')


def _seed_constant_rules(reset: str):
    return {
        "decay_multiplier": (False, ""),
        "threshold": (reset == "proportional", PROPORTIONAL_WHY),
        "penalty_threshold": (False, ""),
    }


class SpikingNeuronLayer(CheckedConstants, nn.Module):
    """The seed's ``SpikingNeuronLayerRNN`` over a whole sequence in one call.

    ``forward(x)`` projects every time step with one matmul (``self.fc``, an ``nn.Linear``
    initialised like the seed: xavier-uniform weight, default bias) and runs the recurrence of
    :func:`snn_cuda.spiking_recurrence` over all steps. With ``delay=True`` (the default, as in the
    seed) the returned ``(states, outputs)`` at step ``t`` are the seed layer's per-step returns.

    Args:
        n_inputs, n_hidden: input and neuron counts.
        decay_multiplier, threshold, penalty_threshold: floats, or tensors broadcastable to
            ``[n_hidden]`` (one value per neuron).
        reset: ``"proportional"`` (the seed's code) or ``"subtract"`` (the seed's prose).
        delay: return the previous step's state and output, as the seed does.
        backend: ``"fused"`` (the kernel) or ``"reference"`` (the plain per-step loop).
        learn_decay, learn_threshold, learn_penalty: make that constant a learnable per-neuron
            ``nn.Parameter`` of shape ``[n_hidden]``, trained with the fused backward's gradient.
        device, dtype: of the parameters.

    Shapes:
        x: ``[T, *batch, n_inputs]`` -> states, outputs: ``[T, *batch, n_hidden]``.

    Example::

        >>> layer = SpikingNeuronLayer(784, 100, decay_multiplier=0.9, threshold=1.0,
        ...                            penalty_threshold=1.5, learn_threshold=True)
        >>> states, outputs = layer(torch.rand(128, 32, 784))
        >>> outputs.shape
        torch.Size([128, 32, 100])
    """

    def __init__(
        self,
        n_inputs: int,
        n_hidden: int,
        decay_multiplier: Param = 0.9,
        threshold: Param = 2.0,
        penalty_threshold: Param = 2.5,
        *,
        reset: str = "proportional",
        delay: bool = True,
        backend: str = "fused",
        learn_decay: bool = False,
        learn_threshold: bool = False,
        learn_penalty: bool = False,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        check_sizes("SpikingNeuronLayer", n_inputs=n_inputs, n_hidden=n_hidden)
        check_flag(delay, "delay", "SpikingNeuronLayer")
        check_reset(reset)
        check_backend(backend)
        check_float_threshold(threshold, reset)
        self.n_inputs = n_inputs
        self.n_hidden = n_hidden
        self.reset = reset
        self.delay = delay
        self.backend = backend
        self.fc = nn.Linear(n_inputs, n_hidden, device=device, dtype=dtype)
        nn.init.xavier_uniform_(self.fc.weight)
        self._set_constant("decay_multiplier", decay_multiplier, learn_decay, device, dtype)
        self._set_constant("threshold", threshold, learn_threshold, device, dtype)
        self._set_constant("penalty_threshold", penalty_threshold, learn_penalty, device, dtype)
        self._start_checking_constants()

    def _constant_rules(self):
        return _seed_constant_rules(self.reset)

    def _set_constant(self, name, value, learnable, device, dtype):
        """A float stays a float (no gradient, no tensor); a tensor becomes a buffer; a learnable
        constant becomes a per-neuron parameter."""
        if learnable:
            self._check_constant(name, value, False, "")
            init = torch.as_tensor(value, dtype=dtype or torch.get_default_dtype(), device=device)
            init = init.detach().reshape(-1).expand(self.n_hidden).clone()
            setattr(self, name, nn.Parameter(init))
        elif isinstance(value, torch.Tensor):
            self._check_constant(name, value, False, "")  # > 0 where needed: once all are set
            self.register_buffer(name, value.detach().clone().to(device=device))
        else:
            self._check_constant(name, value, False, "")
            setattr(self, name, float(value))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if x.dim() < 2 or x.shape[-1] != self.n_inputs:
            raise ValueError(
                f"SpikingNeuronLayer expects x of shape [T, *batch, {self.n_inputs}], "
                f"got {tuple(x.shape)}"
            )
        excitation = self.fc(x)
        recurrence = spiking_recurrence if self.backend == "fused" else reference.spiking_recurrence
        return recurrence(
            excitation,
            self.decay_multiplier,
            self.threshold,
            self.penalty_threshold,
            reset=self.reset,
            delay=self.delay,
        )

    def extra_repr(self) -> str:
        def show(value):
            if isinstance(value, torch.Tensor):
                kind = "learnable" if isinstance(value, nn.Parameter) else "tensor"
                return f"<{kind} {tuple(value.shape)}>"
            return repr(value)

        return (
            f"n_inputs={self.n_inputs}, n_hidden={self.n_hidden}, "
            f"decay_multiplier={show(self.decay_multiplier)}, threshold={show(self.threshold)}, "
            f"penalty_threshold={show(self.penalty_threshold)}, reset={self.reset!r}, "
            f"delay={self.delay}, backend={self.backend!r}"
        )


class SpikingNeuronLayerRNN(CheckedConstants, nn.Module):
    """The seed's ``SpikingNeuronLayerRNN``, same constructor and calls, fused.

    ``SpikingNeuronLayerRNN(device, n_inputs, n_hidden, decay_multiplier, threshold,
    penalty_threshold)``: ``reset_state()`` forgets the state; ``forward(x)`` with one step
    ``x: [batch, n_inputs]`` returns the *previous* step's ``(state, output)``, each
    ``[batch, n_hidden]`` (zeros after a reset), exactly as the seed's layer, whose notebook code runs
    unchanged with this class in its place. Each step is the layer's matmul and one fused kernel
    call (decay, threshold, relu, gate, reset) starting from the kept state.

    ``step_mode="m"`` (or :meth:`multi_step_forward`) takes a whole sequence ``[T, batch, n_inputs]``
    and returns ``(states, outputs)`` ``[T, batch, n_hidden]``, what calling the layer once per step
    and stacking the returns gives, continuing from (and updating) the kept state.

    ``reset="subtract"`` gives the seed's prose's rule instead of its code's (see
    :func:`snn_cuda.spiking_recurrence`). The constants may be floats or tensors broadcastable to
    ``[n_hidden]``.
    """

    def __init__(
        self,
        device=None,
        n_inputs: int = 28 * 28,
        n_hidden: int = 100,
        decay_multiplier: Param = 0.9,
        threshold: Param = 2.0,
        penalty_threshold: Param = 2.5,
        *,
        reset: str = "proportional",
        step_mode: str = "s",
        dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        check_sizes("SpikingNeuronLayerRNN", n_inputs=n_inputs, n_hidden=n_hidden)
        check_reset(reset)
        check_float_threshold(threshold, reset)
        check_step_mode("SpikingNeuronLayerRNN", step_mode)
        self.device = device
        self.n_inputs = n_inputs
        self.n_hidden = n_hidden
        self.decay_multiplier = decay_multiplier
        self.threshold = threshold
        self.penalty_threshold = penalty_threshold
        self.reset = reset
        self.step_mode = step_mode
        self.fc = nn.Linear(n_inputs, n_hidden, dtype=dtype)
        self.init_parameters()
        self.reset_state()
        self.to(self.device)
        self._start_checking_constants()

    def _constant_rules(self):
        return _seed_constant_rules(self.reset)

    def init_parameters(self) -> None:
        for param in self.parameters():
            if param.dim() >= 2:
                nn.init.xavier_uniform_(param)

    def reset_state(self) -> None:
        weight = self.fc.weight
        self.prev_inner = torch.zeros([self.n_hidden], dtype=weight.dtype, device=weight.device)
        self.prev_outer = torch.zeros([self.n_hidden], dtype=weight.dtype, device=weight.device)

    def forward(self, x: torch.Tensor):
        if self.step_mode == "m":
            return self.multi_step_forward(x)
        return self.single_step_forward(x)

    def _check(self, x, dims: str, n_dims: int):
        if not isinstance(x, torch.Tensor) or x.dim() != n_dims or x.shape[-1] != self.n_inputs:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"SpikingNeuronLayerRNN expects x of shape {dims}, got {got}")

    def _batched_state(self, batch: int):
        if self.prev_inner.dim() == 1:  # right after reset_state(), as the seed
            self.prev_inner = torch.stack(batch * [self.prev_inner])
            self.prev_outer = torch.stack(batch * [self.prev_outer])

    def _recurrence(self, excitation, initial):
        return spiking_recurrence(excitation, self.decay_multiplier, self.threshold,
                                  self.penalty_threshold, reset=self.reset, delay=False,
                                  initial=initial)

    def single_step_forward(self, x: torch.Tensor):
        """One step ``x: [batch, n_inputs]`` -> the previous step's ``(state, output)``."""
        self._check(x, f"[batch, {self.n_inputs}] (one time step; step_mode='m' takes sequences)", 2)
        self._batched_state(x.shape[0])
        states, outputs = self._recurrence(self.fc(x).unsqueeze(0), self.prev_inner)
        returned = (self.prev_inner, self.prev_outer)
        self.prev_inner, self.prev_outer = states[0], outputs[0]
        return returned

    def multi_step_forward(self, x: torch.Tensor):
        """A sequence ``[T, batch, n_inputs]`` -> ``(states, outputs)`` ``[T, batch, n_hidden]``."""
        self._check(x, f"[T, batch, {self.n_inputs}] (a sequence; step_mode='s' takes one step)", 3)
        if x.shape[0] == 0:
            empty = x.new_zeros(0, x.shape[1], self.n_hidden)
            return empty, empty.clone()
        self._batched_state(x.shape[1])
        states, outputs = self._recurrence(self.fc(x), self.prev_inner)
        returned_states = torch.cat([self.prev_inner.unsqueeze(0), states[:-1]])
        returned_outputs = torch.cat([self.prev_outer.unsqueeze(0), outputs[:-1]])
        self.prev_inner, self.prev_outer = states[-1], outputs[-1]
        return returned_states, returned_outputs

    def extra_repr(self) -> str:
        return (
            f"n_inputs={self.n_inputs}, n_hidden={self.n_hidden}, decay_multiplier="
            f"{self.decay_multiplier}, threshold={self.threshold}, penalty_threshold="
            f"{self.penalty_threshold}, reset={self.reset!r}, step_mode={self.step_mode!r}"
        )
