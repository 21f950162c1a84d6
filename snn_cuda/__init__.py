"""snn_cuda: spiking neuron recurrences fused into one CPU/CUDA kernel, with an exact backward.

- :func:`spiking_recurrence`: the fused op (``[T, *batch, H]`` in, ``(states, outputs)`` out).
- :mod:`snn_cuda.reference`: the same thing as a plain per-step loop, the oracle.
- :class:`SpikingNeuronLayer`: the seed's spiking layer over a whole sequence.
- :func:`lif`, :func:`lif_step`, :class:`Leaky`, :class:`LIFNode`, :class:`IFNode`: binary-spike
  LIF (and IF) neurons with surrogate gradients, fused; ``Leaky``, ``LIFNode`` and ``IFNode`` are
  drop-in replacements for snnTorch's and SpikingJelly's, :class:`SpikingNeuronLayerRNN` for the seed's layer (called per step, or a whole
  sequence with ``step_mode="m"``).
- :func:`synaptic`, :func:`synaptic_step`, :class:`Synaptic`: snnTorch's current-based
  ``Synaptic`` neuron, fused; :func:`rleaky`, :class:`RLeaky`, :func:`rsynaptic`,
  :class:`RSynaptic`: its recurrent ``RLeaky`` and ``RSynaptic`` (the generic neuron ops ``neuron_fwd`` / ``neuron_bwd``,
  :class:`NeuronFunction`).
- :func:`norse_lif`, :func:`norse_lsnn`, :func:`norse_li` and :mod:`snn_cuda.norse` (``LIF``,
  ``LIFCell``, ``LSNN``, ``LSNNCell``, ``LI``, ``LICell``): Norse's current-based LIF, adaptive LIF
  and leaky integrator, fused.
- :func:`alif`, :class:`ALIF`: the adaptive LIF neuron in its common discrete form (Bellec et al.
  2018), fused.
- :func:`convert` swaps those originals in a model for the fused ones; :func:`run_sequence` runs a
  per-step model over a whole sequence layer by layer.
- :func:`export_nir`, :func:`import_nir`: models out to and in from NIR graphs (needs ``nir``).
- :func:`validate_parameters`: check the values of tensor neuron constants on every call.
"""

from . import reference, surrogate
from .convert import convert, run_sequence
from .layers import SpikingNeuronLayer, SpikingNeuronLayerRNN
from .models import NonSpikingNet, SpikingNet
from .neuron_ops import (
    NeuronFunction,
    alif,
    norse_li,
    norse_lif,
    norse_lsnn,
    rleaky,
    rsynaptic,
    synaptic,
    synaptic_step,
)
from .nir_io import export_nir, import_nir
from .neurons import ALIF, IFNode, LIFNode, Leaky, ParametricLIFNode, RLeaky, RSynaptic, Synaptic
from .ops import (
    LIFFunction,
    SpikingRecurrenceFunction,
    is_validating_parameters,
    lif,
    lif_step,
    set_validate_parameters,
    spiking_recurrence,
    validate_parameters,
)

__version__ = "0.6.0"

__all__ = [
    "ALIF",
    "LIFFunction",
    "IFNode",
    "LIFNode",
    "Leaky",
    "NeuronFunction",
    "NonSpikingNet",
    "ParametricLIFNode",
    "RLeaky",
    "RSynaptic",
    "SpikingNet",
    "SpikingNeuronLayer",
    "SpikingNeuronLayerRNN",
    "SpikingRecurrenceFunction",
    "Synaptic",
    "alif",
    "convert",
    "export_nir",
    "import_nir",
    "is_validating_parameters",
    "lif",
    "lif_step",
    "norse_li",
    "norse_lif",
    "norse_lsnn",
    "reference",
    "rleaky",
    "rsynaptic",
    "run_sequence",
    "set_validate_parameters",
    "spiking_recurrence",
    "surrogate",
    "synaptic",
    "synaptic_step",
    "validate_parameters",
]
