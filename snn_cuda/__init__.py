"""snn_cuda: spiking neuron recurrences fused into one CPU/CUDA kernel, with an exact backward.

- :func:`spiking_recurrence`: the fused op (``[T, *batch, H]`` in, ``(states, outputs)`` out).
- :mod:`snn_cuda.reference`: the same thing as a plain per-step loop, the oracle.
- :class:`SpikingNeuronLayer`: the seed's spiking layer over a whole sequence.
- :func:`lif`, :class:`Leaky`, :class:`LIFNode`: binary-spike LIF neurons with surrogate gradients,
  fused; ``Leaky`` and ``LIFNode`` are drop-in replacements for snnTorch's and SpikingJelly's.
"""

from . import reference, surrogate
from .layers import SpikingNeuronLayer
from .models import NonSpikingNet, SpikingNet
from .neurons import LIFNode, Leaky
from .ops import LIFFunction, SpikingRecurrenceFunction, lif, spiking_recurrence

__version__ = "0.1.0"

__all__ = [
    "LIFFunction",
    "LIFNode",
    "Leaky",
    "NonSpikingNet",
    "SpikingNet",
    "SpikingNeuronLayer",
    "SpikingRecurrenceFunction",
    "lif",
    "reference",
    "spiking_recurrence",
    "surrogate",
]
