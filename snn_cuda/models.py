"""The seed's networks: the two-layer SpikingNet and its non-spiking comparison."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SpikingNeuronLayer, check_backend

REDUCTIONS = ("mean", "sum")


MASK_STREAMS = ("parallel", "single")


def parallel_uniform(shape, generator: Optional[torch.Generator], device, dtype,
                     factor: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Uniform [0, 1) numbers of ``shape``, deterministic given ``generator``'s state (the global
    generator if None), whatever the thread count. On the CPU: a counter-based stream (SplitMix64 of
    one seed drawn from ``generator`` and each element's index; ``torch.ops.snn_cuda.uniform_noise_``)
    drawn on all intra-op threads. Elsewhere: slice ``t`` of the first dim from a torch generator of
    its own, seeded with the ``t``-th of ``shape[0]`` seeds drawn from ``generator``. With
    ``factor`` (shaped ``shape[1:]``), the numbers times it: ``masks * factor``, in the same pass on
    the CPU (the same values as multiplying afterwards)."""
    out = torch.empty(shape, device=device, dtype=dtype)
    if out.numel() == 0:
        return out
    seed_device = generator.device if generator is not None else "cpu"
    if out.device.type == "cpu":
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=seed_device))
        return torch.ops.snn_cuda.uniform_noise_(out, seed, factor)
    seeds = torch.randint(0, 2**62, (shape[0],), generator=generator, device=seed_device).tolist()

    def fill(t: int) -> None:
        g = torch.Generator(device=device).manual_seed(seeds[t])
        torch.rand(out[t].shape, generator=g, device=device, dtype=dtype, out=out[t])

    for t in range(shape[0]):
        fill(t)
    return out if factor is None else out.mul_(factor)


class SpikingNet(nn.Module):
    """The seed's ``SpikingNet``: a noisy input encoding, two spiking layers, time-averaged logits.

    At every step ``t`` the flattened image is multiplied by a fresh uniform [0, 1) noise mask;
    layer 1 (``n_inputs -> n_hidden``) and layer 2 (``n_hidden -> n_classes``) are
    :class:`SpikingNeuronLayer` s with decay 0.9, threshold 1.0 and penalty 1.5 (the seed's values);
    layer 2 reads layer 1's returned outputs; the logits are layer 2's returned *states* reduced over
    steps ``begin_eval .. T-1``. ``forward`` returns log-probabilities.

    The seed reduces with the mean: its ``OutputDataToSpikingPerceptronLayer(average_output=False)``
    maps to ``mean`` (its flag's name and comment say sum). ``reduction="sum"`` is the other choice.

    Args:
        n_time_steps: T. begin_eval: the first step that counts towards the logits.
        n_inputs, n_hidden, n_classes: layer sizes (784, 100, 10 in the seed).
        backend: ``"fused"`` or ``"reference"`` (the per-step loop).
        reduction: ``"mean"`` (the seed's) or ``"sum"``.
        reset: the reset rule of both layers (the seed's code: ``"proportional"``).
        mask_stream: how the noise masks are drawn (both uniform [0, 1), deterministic given the
            generator's state). ``"parallel"`` (default): see :func:`parallel_uniform` -- on the
            CPU a counter-based stream drawn on all threads (drawing ``T x B x n_inputs`` numbers
            with ``torch.rand`` on one thread was most of a training step at the seed's shape); the
            numbers do not depend on the thread count. ``"single"``: one ``torch.rand`` call on the
            caller's generator, the stream of snn_cuda 0.2.0 and before.

    Shapes:
        x: ``[B, ...]`` with ``n_inputs`` values per example (an image ``[B, 1, 28, 28]`` is flattened);
        masks (optional): ``[T, B, n_inputs]``; returns ``[B, n_classes]`` log-probabilities.

    Example::

        >>> net = SpikingNet(n_time_steps=32, n_inputs=64)
        >>> net(torch.rand(5, 1, 8, 8)).shape
        torch.Size([5, 10])
    """

    def __init__(
        self,
        n_time_steps: int = 128,
        begin_eval: int = 0,
        n_inputs: int = 784,
        n_hidden: int = 100,
        n_classes: int = 10,
        backend: str = "fused",
        reduction: str = "mean",
        reset: str = "proportional",
        mask_stream: str = "parallel",
    ):
        super().__init__()
        if mask_stream not in MASK_STREAMS:
            raise ValueError(f'mask_stream must be "parallel" or "single", got {mask_stream!r}')
        if not 0 <= begin_eval < n_time_steps:
            raise ValueError(
                f"need 0 <= begin_eval < n_time_steps, got begin_eval={begin_eval}, "
                f"n_time_steps={n_time_steps}"
            )
        if reduction not in REDUCTIONS:
            raise ValueError(f'reduction must be "mean" or "sum", got {reduction!r}')
        check_backend(backend)
        self.n_time_steps = n_time_steps
        self.begin_eval = begin_eval
        self.n_inputs = n_inputs
        self.reduction = reduction
        self.mask_stream = mask_stream
        constants = dict(decay_multiplier=0.9, threshold=1.0, penalty_threshold=1.5, reset=reset,
                         backend=backend)
        self.layer1 = SpikingNeuronLayer(n_inputs, n_hidden, **constants)
        self.layer2 = SpikingNeuronLayer(n_hidden, n_classes, **constants)

    @property
    def backend(self) -> str:
        return self.layer1.backend

    def noise_masks(self, batch: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """All T input masks at once, uniform [0, 1), on the model's device: ``[T, batch, n_inputs]``
        (drawn as ``mask_stream`` says)."""
        weight = self.layer1.fc.weight
        shape = (self.n_time_steps, batch, self.n_inputs)
        if self.mask_stream == "single":
            return torch.rand(shape, generator=generator, device=weight.device, dtype=weight.dtype)
        return parallel_uniform(shape, generator, weight.device, weight.dtype)

    def forward_through_time(
        self,
        x: torch.Tensor,
        masks: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Logits ``[B, n_classes]`` and every layer's ``(states, outputs)`` over time, as the seed's
        method of the same name: ``(layer1_states, layer1_outputs, layer2_states, layer2_outputs)``,
        each ``[T, B, n]``."""
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.n_inputs:
            raise ValueError(
                f"SpikingNet expects {self.n_inputs} input values per example, got {x.shape[1]}"
            )
        if masks is None and self.mask_stream == "parallel" and not x.requires_grad:
            # The masks times x in one pass: the [T, B, n_inputs] product is the largest tensor of
            # the step, and only it is needed (layer 1 keeps it for its weight gradient).
            weight = self.layer1.fc.weight
            spikes_in = parallel_uniform((self.n_time_steps, *x.shape), generator, weight.device,
                                         weight.dtype, x.to(weight.dtype).contiguous())
        elif masks is None:
            # In place where x needs no gradient: only the product is needed.
            masks = self.noise_masks(x.shape[0], generator)
            spikes_in = masks.mul_(x) if not x.requires_grad else masks * x
        elif masks.shape != (self.n_time_steps, x.shape[0], self.n_inputs):
            raise ValueError(
                f"masks must have shape [T, B, n_inputs] = "
                f"{[self.n_time_steps, x.shape[0], self.n_inputs]}, got {list(masks.shape)}"
            )
        else:
            spikes_in = masks * x
        states1, outputs1 = self.layer1(spikes_in)
        states2, outputs2 = self.layer2(outputs1)
        window = states2[self.begin_eval:]
        logits = window.mean(0) if self.reduction == "mean" else window.sum(0)
        return logits, (states1, outputs1, states2, outputs2)

    def forward(
        self,
        x: torch.Tensor,
        masks: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        logits, _ = self.forward_through_time(x, masks, generator)
        return F.log_softmax(logits, dim=-1)


class NonSpikingNet(nn.Module):
    """The seed's comparison network: Linear, ReLU, Linear, log-softmax."""

    def __init__(self, n_inputs: int = 784, n_hidden: int = 100, n_classes: int = 10):
        super().__init__()
        self.n_inputs = n_inputs
        self.layer1 = nn.Linear(n_inputs, n_hidden)
        self.layer2 = nn.Linear(n_hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        x = F.relu(self.layer1(x))
        x = self.layer2(x)
        return F.log_softmax(x, dim=-1)
