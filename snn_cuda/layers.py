"""Drop-in spiking layers built on the fused recurrence."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from . import reference
from .ops import Param, check_float_threshold, check_reset, spiking_recurrence

BACKENDS = ("fused", "reference")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f'backend must be "fused" or "reference", got {backend!r}')


class SpikingNeuronLayer(nn.Module):
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
        if n_inputs < 1 or n_hidden < 1:
            raise ValueError(
                f"n_inputs and n_hidden must be >= 1, got n_inputs={n_inputs}, n_hidden={n_hidden}"
            )
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

    def _set_constant(self, name, value, learnable, device, dtype):
        """A float stays a float (no gradient, no tensor); a tensor becomes a buffer; a learnable
        constant becomes a per-neuron parameter."""
        if learnable:
            init = torch.as_tensor(value, dtype=dtype or torch.get_default_dtype(), device=device)
            init = init.detach().reshape(-1).expand(self.n_hidden).clone()
            setattr(self, name, nn.Parameter(init))
        elif isinstance(value, torch.Tensor):
            self.register_buffer(name, value.detach().clone().to(device=device))
        else:
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
