"""snn_cuda: spiking neuron recurrences fused into one CPU/CUDA kernel, with an exact backward.

- :func:`spiking_recurrence`: the fused op (``[T, *batch, H]`` in, ``(states, outputs)`` out).
- :mod:`snn_cuda.reference`: the same thing as a plain per-step loop, the oracle.
- :class:`SpikingNeuronLayer`: the seed's spiking layer over a whole sequence.
"""

from . import reference
from .layers import SpikingNeuronLayer
from .models import NonSpikingNet, SpikingNet
from .ops import SpikingRecurrenceFunction, spiking_recurrence

__version__ = "0.1.0"

__all__ = [
    "NonSpikingNet",
    "SpikingNet",
    "SpikingNeuronLayer",
    "SpikingRecurrenceFunction",
    "reference",
    "spiking_recurrence",
]
