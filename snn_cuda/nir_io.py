"""Models in and out through NIR (the Neuromorphic Intermediate Representation, ``pip install
snn_cuda[nir]``): :func:`export_nir` writes a ``nir.NIRGraph`` for a model of our neurons and
standard layers (an ``nn.Sequential`` or a ``forward`` of one's own); :func:`import_nir` builds one, with fused neurons, from a NIR graph
(ours, snnTorch's, or anyone's within what it maps).

NIR describes neurons in continuous time, e.g. ``LIF``: ``tau dv/dt = (v_leak - v) + r I``, a spike
when ``v > v_threshold``, then ``v = v_reset``. Both directions use forward Euler with a step ``dt``
(default 1e-4 s, snnTorch's choice, so that graphs move between the two unchanged), the current
updated before the membrane in ``CubaLIF`` (as snnTorch's and Norse's importers run it):

    LIF:     v_t = beta v_{t-1} + s I_t,      beta = 1 - dt / tau,   s = r dt / tau
    CubaLIF: I_t = alpha I_{t-1} + a x_t,     alpha = 1 - dt / tau_syn,  a = w_in dt / tau_syn
             v_t = beta v_{t-1} + b I_t,      beta = 1 - dt / tau_mem,   b = r dt / tau_mem
    IF:      v_t = v_{t-1} + r dt I_t

then the spike and, in the same step, the reset to ``v_reset``. The export writes ``tau = dt / (1 -
beta)`` and the ``r`` (and ``w_in``) that make the input scale 1, as snnTorch does; the import
inverts that and runs spikes exactly (an input scale ``s != 1`` divides the threshold instead, which
gives the same spikes; the membrane is then ``v / s``).

A recurrent neuron (:class:`snn_cuda.RLeaky`, :class:`snn_cuda.RSynaptic`) is, as snnTorch writes
it, its neuron node ``"k.lif"`` and its recurrent weights ``"k.w_rec"`` in a cycle; the recurrent
edge carries the previous step's spikes, so ``I_t = x_t + w_rec(z_{t-1})``. The import also reads
the cycle grouped as a subgraph node (``Input -> neuron <-> w_rec -> Output``).

What NIR cannot hold is never changed silently: exporting a neuron whose reset NIR cannot express
(snnTorch's default ``reset_mechanism="subtract"``, ``"none"``, the delayed zero reset of
``Synaptic``, ``RLeaky`` and ``RSynaptic``, which also drops the input of the step after a spike, or
a threshold <= 0 with ``reset_delay=False``) raises a ``ValueError``; with
``approximate=True`` it is exported as NIR's reset to ``v_reset = 0`` with a ``UserWarning`` that
names the neuron and what changes. Surrogate gradients are training-only and not part of NIR.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import OrderedDict
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import nn

DEFAULT_DT = 1e-4

__all__ = ["export_nir", "import_nir", "MembraneReadout", "DEFAULT_DT"]

# Why a neuron we have cannot be exported exactly (it has no NIR primitive with its semantics).
_NOT_EXPRESSIBLE = {
    "LIFNode": "SpikingJelly's neurons fire at h >= threshold and charge before the reset; NIR's at "
               "v > threshold",
    "IFNode": "SpikingJelly's neurons fire at h >= threshold; NIR's IF fires at v > threshold",
    "ParametricLIFNode": "SpikingJelly's neurons fire at h >= threshold; NIR's at v > threshold",
    "ALIF": "NIR has no adaptive-threshold neuron",
    "SpikingNeuronLayerRNN": "the seed's graded neuron (a proportional reset, graded outputs) has "
                             "no NIR primitive",
    "SpikingNeuronLayer": "the seed's graded neuron (a proportional reset, graded outputs) has no "
                          "NIR primitive",
    "LIF": "Norse's LIF feeds the input into the current after the step (one step later than the "
           "Euler form of NIR's CubaLIF)",
    "LIFCell": "Norse's LIF feeds the input into the current after the step (one step later than "
               "the Euler form of NIR's CubaLIF)",
    "LI": "Norse's LI feeds the input into the current after the step (one step later than the "
          "Euler form of NIR's CubaLI); snn_cuda.nir_io.MembraneReadout exports as CubaLI",
    "LICell": "Norse's LI feeds the input into the current after the step (one step later than the "
              "Euler form of NIR's CubaLI); snn_cuda.nir_io.MembraneReadout exports as CubaLI",
    "LSNN": "NIR has no adaptive-threshold neuron",
    "LSNNCell": "NIR has no adaptive-threshold neuron",
}


def _nir():
    try:
        import nir
    except ImportError as error:  # pragma: no cover - nir is a test dependency
        raise ImportError("snn_cuda's NIR support needs the nir package: pip install "
                          "'snn_cuda[nir]' (or pip install nir h5py)") from error
    return nir


def _check_dt(dt, op: str) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"{op}: dt must be a finite float > 0, got {dt!r}")
    return float(dt)


class MembraneReadout(nn.Module):
    """A non-spiking readout: NIR's leaky integrators ``LI`` and ``CubaLI`` on our fused neurons.

    Wraps a :class:`snn_cuda.Leaky` (``LI``) or :class:`snn_cuda.Synaptic` (``CubaLI``) built with
    ``reset_mechanism="none"``, ``init_hidden=True`` and ``output=True`` and returns its membrane,
    ``output_scale * mem`` with the neuron fed ``input_scale * x``: per step ``v_t = beta v_{t-1} +
    s x_t`` (``LI``, ``s = input_scale * output_scale``), or ``I_t = alpha I_{t-1} + input_scale
    x_t``, ``v_t = output_scale * mem_t`` with ``mem_t = beta mem_{t-1} + I_t`` (``CubaLI``). Its
    spikes (never reset) are not returned. Called once per step like the neuron; reset with the
    neuron's class (``snn_cuda.Leaky.reset_hidden()``); :func:`snn_cuda.run_sequence` runs it fused
    over a whole sequence.
    """

    def __init__(self, neuron: nn.Module, input_scale=1.0, output_scale=1.0):
        super().__init__()
        from .neurons import Leaky, Synaptic

        if not isinstance(neuron, (Leaky, Synaptic)) or neuron.reset_mechanism != "none" or \
                not neuron.init_hidden or not neuron.output:
            raise ValueError("MembraneReadout: neuron must be an snn_cuda.Leaky or Synaptic with "
                             "reset_mechanism='none', init_hidden=True and output=True")
        self.neuron = neuron
        for name, value in (("input_scale", input_scale), ("output_scale", output_scale)):
            if isinstance(value, torch.Tensor):
                self.register_buffer(name, value)  # moves with .to(device)
            else:
                setattr(self, name, float(value))

    @staticmethod
    def _scaled(x, scale):
        return x if isinstance(scale, float) and scale == 1.0 else x * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._scaled(self.neuron(self._scaled(x, self.input_scale))[-1], self.output_scale)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        out = self.neuron.multi_step_forward(self._scaled(x_seq, self.input_scale))
        return self._scaled(out[-1], self.output_scale)


# ------------------------------------------------------------------------------------------------
# Export.

class _Layer:
    """One module of a traced model: its NIR node name, the module, the per-step shapes of its
    input and output (batch left out), and the node its input comes from."""

    def __init__(self, name, module, in_shape, out_shape, source):
        self.name, self.module = name, module
        self.in_shape, self.out_shape, self.source = in_shape, out_shape, source


def _is_layer(module: nn.Module) -> bool:
    """A module export treats as one node: a neuron (ours or one we can name), or a module without
    submodules. Containers are looked into."""
    from .neurons import _SnntorchNeuron  # Leaky, Synaptic, RLeaky, RSynaptic

    return (isinstance(module, (_SnntorchNeuron, MembraneReadout))
            or type(module).__name__ in _NOT_EXPRESSIBLE or not any(True for _ in module.children()))


def _is_step_of(x: torch.Tensor, sample: torch.Tensor) -> bool:
    """``x`` is the sample itself or one step ``sample[t]`` of it (a forward that loops over time)."""
    if x is sample:
        return True
    return (x._base is sample and x.dim() == sample.dim() - 1
            and tuple(x.shape) == tuple(sample.shape[1:]) and x.stride() == sample.stride()[1:]
            and x.storage_offset() % max(sample.stride(0), 1) == 0)


def _returned_layer(result, outputs: dict, produced: dict) -> str:
    """The layer whose output the model returns (a neuron's spikes), at the last call or stacked
    over all calls, or as the first element of a tuple: what the graph's output node gives.
    Anything else (a membrane, a spike count, a computation after the last layer) would be
    changed silently by the export."""
    first = result[0] if isinstance(result, (tuple, list)) and result else result
    if isinstance(first, torch.Tensor):
        if id(first) in produced:
            return produced[id(first)]
        for name, calls in outputs.items():
            if tuple(first.shape) == (len(calls), *calls[0].shape) and torch.equal(first, torch.stack(calls)):
                return name
    raise ValueError("export_nir: the model returns something other than a layer's output (the "
                     "last neuron's spikes, per step or stacked over the steps), e.g. a membrane, a "
                     "spike count or a computation after the last layer; NIR's output would be that "
                     "layer's output instead. Export a model whose forward returns it")


def _trace(model: nn.Module, sample_input: torch.Tensor) -> Tuple[List[_Layer], str]:
    """Runs ``model(sample_input)`` on a copy (the model's state is not touched) and reads which
    layer's output each layer takes, from the tensors passed: the wiring of a ``Sequential`` and of
    a ``forward`` of one's own (a loop over time steps included: each layer must take its input from
    the same place at every call). Neurons' further arguments (their states) are not wiring; a
    neuron's output is its spikes (the first element of what it returns). Returns the layers in
    the order of their first calls and the name of the layer whose output the model returns."""
    import copy

    # States left by earlier calls with autograd are not graph leaves, which deepcopy refuses:
    # their detached copies stand in for them.
    memo = {}
    for module in model.modules():
        for store in (module._buffers, module.__dict__, module.__dict__.get("_memories") or {}):
            for value in store.values():
                if isinstance(value, torch.Tensor) and not value.is_leaf:
                    memo[id(value)] = value.detach().clone()
    try:
        copied = copy.deepcopy(model, memo)
    except Exception as error:
        raise TypeError(f"export_nir: the model could not be copied to trace its wiring "
                        f"({type(error).__name__}: {error})") from error
    layers = []  # (node name, module) of the copy, in registration order

    def walk(module, prefix):
        for child_name, child in module.named_children():
            path = f"{prefix}{child_name}"
            if _is_layer(child):
                layers.append((path.replace(".", "_"), child))
            else:
                walk(child, path + ".")

    if _is_layer(copied):
        raise TypeError(f"export_nir: model must be a container of layers (an nn.Sequential or a "
                        f"module with its own forward), got the single layer {type(model).__name__}; "
                        "wrap it: nn.Sequential(layer)")
    walk(copied, "")
    produced, alive, seen, problems = {}, [], {}, []

    outputs = {}  # layer -> its output at every call

    def hook(name):
        def record(module, args, kwargs, output):
            x = args[0] if args else next(iter(kwargs.values()), None)
            out = output[0] if isinstance(output, (tuple, list)) and output else output
            if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor):
                problems.append(f"layer {name} ({type(module).__name__}) was called without a "
                                "tensor input or returned no tensor")
                return
            if id(x) in produced:
                source = produced[id(x)]
            elif _is_step_of(x, sample):
                source = "input"
            else:
                problems.append(
                    f"layer {name} ({type(module).__name__}) takes a tensor that is neither the "
                    "model's input (or one step of it) nor another layer's output: an operation "
                    "between modules (torch.relu, x + y, x.view, indexing, a neuron's membrane, ...) "
                    "has no NIR node here; write it as a module (nn.Flatten, ...) or leave it out")
                source = None
            alive.extend((x, out))  # keeps ids unique while tracing
            produced[id(out)] = name
            outputs.setdefault(name, []).append(out)
            if name not in seen:
                seen[name] = _Layer(name, module, tuple(x.shape[1:]), tuple(out.shape[1:]), source)
            elif seen[name].source != source:
                problems.append(f"layer {name} takes its input from {seen[name].source!r} at one "
                                f"call and from {source!r} at another: NIR wiring is fixed")
        return record

    sample = sample_input.detach().clone()  # its own storage: sample[t] are views of it alone
    handles = [module.register_forward_hook(hook(name), with_kwargs=True) for name, module in layers]
    try:
        with torch.no_grad():
            result = copied(sample)
    finally:
        for handle in handles:
            handle.remove()
    if problems:
        raise ValueError("export_nir: " + problems[0])
    returned = _returned_layer(result, outputs, produced)
    originals = dict((path.replace(".", "_"), module) for path, module in model.named_modules())
    traced = list(seen.values())  # the order of their first calls: each after its source
    for layer in traced:
        layer.module = originals[layer.name]  # constants are read from the model itself
    if not traced:
        raise ValueError("export_nir: the model called none of its layers on the sample input")
    return traced, returned


def _per_neuron(value, shape, name: str) -> np.ndarray:
    """A neuron constant as an array of the layer's neuron shape (float64)."""
    array = np.asarray(torch.as_tensor(value).detach().cpu().double().numpy())
    try:
        return np.broadcast_to(array, shape).astype(np.float64)
    except ValueError:
        raise ValueError(f"export_nir: {name} of shape {array.shape} does not broadcast to the "
                         f"layer's neurons {tuple(shape)}") from None


# The neurons whose delayed zero reset (reset_delay=True) is not NIR's: it zeroes the whole next
# membrane, the input of that step included. Leaky's (beta (1 - r) mem + x) is exactly NIR's.
_NEEDS_IMMEDIATE_RESET = ("Synaptic", "RLeaky", "RSynaptic")


def _reset_problem(module, kind: str, threshold: np.ndarray) -> Optional[str]:
    """What NIR's reset-to-v_reset changes for this neuron, or None if it is exact."""
    mechanism = module.reset_mechanism
    if mechanism == "subtract":
        return ("reset_mechanism='subtract' lowers the membrane by the threshold; NIR resets it to "
                "v_reset = 0")
    if mechanism == "none":
        return "reset_mechanism='none' never resets; NIR resets to v_reset = 0 after a spike"
    if kind in _NEEDS_IMMEDIATE_RESET and module.reset_delay:
        return (f"{kind}'s reset_mechanism='zero' with reset_delay=True zeroes the whole next "
                "membrane, input included; NIR resets to 0 at the spike and keeps the next input "
                "(reset_delay=False is exact)")
    if not module.reset_delay and np.any(threshold <= 0):
        return ("a threshold <= 0 with reset_delay=False: the membrane reset to 0 is then above the "
                "threshold, and snnTorch's delayed-reset term of the next step changes that step "
                f"(threshold values down to {threshold.min()})")
    return None


def _check_neuron(module, name: str, kind: str, threshold: np.ndarray, approximate: bool) -> None:
    factor = module.graded_spikes_factor
    if factor.numel() != 1 or float(factor) != 1.0:
        raise ValueError(f"export_nir: layer {name} ({kind}): graded_spikes_factor must be 1 (NIR "
                         f"spikes are 0/1), got {factor.detach().cpu().tolist()}")
    problem = _reset_problem(module, kind, threshold)
    if problem is None:
        return
    if not approximate:
        raise ValueError(f"export_nir: layer {name} ({kind}) has no exact NIR form: {problem}. "
                         "Pass approximate=True to export it as NIR's reset to v_reset = 0 (with a "
                         "warning), or use reset_mechanism='zero'"
                         + (" and reset_delay=False" if kind in _NEEDS_IMMEDIATE_RESET else "")
                         + " and a threshold > 0")
    warnings.warn(f"export_nir: layer {name} ({kind}) exported approximately: {problem}",
                  UserWarning, stacklevel=3)


def _decay_time(decay: np.ndarray, dt: float, name: str, what: str) -> np.ndarray:
    if np.any(decay >= 1.0) or np.any(decay < 0.0):
        raise ValueError(f"export_nir: layer {name}: {what} must be in [0, 1) to have a NIR time "
                         f"constant dt / (1 - {what}); got values in [{decay.min()}, {decay.max()}]")
    return dt / (1.0 - decay)


def _readout_node(module: MembraneReadout, name: str, shape, dt: float):
    from .neurons import Leaky

    nir = _nir()
    neuron = module.neuron
    zeros = np.zeros(shape)
    gain_in = _per_neuron(module.input_scale, shape, "input_scale")
    gain_out = _per_neuron(module.output_scale, shape, "output_scale")
    beta = np.clip(_per_neuron(neuron.beta, shape, "beta"), 0.0, 1.0)
    tau_mem = _decay_time(beta, dt, name, "beta")
    if isinstance(neuron, Leaky):
        return nir.LI(tau=tau_mem, r=gain_in * gain_out * tau_mem / dt, v_leak=zeros)
    alpha = np.clip(_per_neuron(neuron.alpha, shape, "alpha"), 0.0, 1.0)
    tau_syn = _decay_time(alpha, dt, name, "alpha")
    return nir.CubaLI(tau_syn=tau_syn, tau_mem=tau_mem, r=gain_out * tau_mem / dt, v_leak=zeros,
                      w_in=gain_in * tau_syn / dt)


def _neuron_node(module, name: str, shape, dt: float, approximate: bool):
    """The NIR node of a neuron module (LIF, IF, CubaLIF, LI, CubaLI), or None if it is not one of
    ours. The recurrent neurons give their neuron node here (see _recurrent_node)."""
    from .neurons import Leaky, RLeaky, RSynaptic, Synaptic

    nir = _nir()
    if isinstance(module, MembraneReadout):
        return _readout_node(module, name, shape, dt)
    if not isinstance(module, (Leaky, Synaptic, RLeaky)):
        return None
    zeros = np.zeros(shape)
    threshold = _per_neuron(module.threshold, shape, "threshold")
    kind = next(k.__name__ for k in (RSynaptic, RLeaky, Synaptic, Leaky) if isinstance(module, k))
    _check_neuron(module, name, kind, threshold, approximate)
    if not isinstance(module, (Synaptic, RSynaptic)):
        beta = np.clip(_per_neuron(module.beta, shape, "beta"), 0.0, 1.0)  # snnTorch clamps
        if np.all(beta == 1.0):  # no leak: NIR's integrator
            return nir.IF(r=np.full(shape, 1.0 / dt), v_threshold=threshold, v_reset=zeros)
        tau = _decay_time(beta, dt, name, "beta")
        return nir.LIF(tau=tau, r=tau / dt, v_leak=zeros, v_threshold=threshold, v_reset=zeros)
    alpha = np.clip(_per_neuron(module.alpha, shape, "alpha"), 0.0, 1.0)
    beta = np.clip(_per_neuron(module.beta, shape, "beta"), 0.0, 1.0)
    tau_syn = _decay_time(alpha, dt, name, "alpha")
    tau_mem = _decay_time(beta, dt, name, "beta")
    return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=zeros,
                       v_threshold=threshold, v_reset=zeros, w_in=tau_syn / dt)


def _recurrent_node(module, name: str, shape):
    """The NIR node of a recurrent neuron's connection from its spikes back to its input: one-to-one
    ``V`` as ``Linear(diag(V))`` for a vector of neurons (what snnTorch writes and reads) or
    ``Scale(V)`` for other shapes; all-to-all ``nn.Linear`` as ``Affine``, ``nn.Conv2d`` as
    ``Conv2d``."""
    nir = _nir()
    if not module.all_to_all:
        V = _per_neuron(module.V, shape, "V")
        return nir.Linear(weight=np.diag(V)) if len(shape) == 1 else nir.Scale(scale=V)
    recurrent = module.recurrent
    if isinstance(recurrent, nn.Linear):
        return nir.Affine(weight=_array(recurrent.weight), bias=_array(recurrent.bias))
    return nir.Conv2d(input_shape=tuple(int(s) for s in shape[-2:]), weight=_array(recurrent.weight),
                      stride=recurrent.stride, padding=recurrent.padding,
                      dilation=recurrent.dilation, groups=recurrent.groups,
                      bias=_array(recurrent.bias))


def _array(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if t is None else t.detach().cpu().numpy()


def _layer_node(module: nn.Module, name: str, in_shape):
    """The NIR node of a stateless layer, or None if it is not one we export."""
    nir = _nir()
    if type(module) is nn.Linear:
        if module.bias is None:
            return nir.Linear(weight=_array(module.weight))
        return nir.Affine(weight=_array(module.weight), bias=_array(module.bias))
    if type(module) in (nn.Conv1d, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise ValueError(f"export_nir: layer {name}: padding_mode={module.padding_mode!r} has no "
                             "NIR form (NIR pads with zeros)")
        bias = module.bias if module.bias is not None else torch.zeros(module.out_channels)
        if type(module) is nn.Conv1d:
            padding = module.padding if isinstance(module.padding, str) else module.padding[0]
            return nir.Conv1d(input_shape=int(in_shape[-1]), weight=_array(module.weight),
                              stride=module.stride[0], padding=padding,
                              dilation=module.dilation[0], groups=module.groups, bias=_array(bias))
        return nir.Conv2d(input_shape=tuple(int(s) for s in in_shape[-2:]),
                          weight=_array(module.weight), stride=module.stride,
                          padding=module.padding, dilation=module.dilation,
                          groups=module.groups, bias=_array(bias))
    if type(module) is nn.Flatten:
        if module.start_dim == 0 or module.end_dim == 0:
            raise ValueError(f"export_nir: layer {name}: a Flatten over the batch dim (dim 0) has "
                             "no NIR form")
        shift = lambda d: d - 1 if d > 0 else d  # NIR's dims leave out the batch  # noqa: E731
        return nir.Flatten(input_type={"input": np.array(in_shape)},
                           start_dim=shift(module.start_dim), end_dim=shift(module.end_dim))
    if type(module) is nn.AvgPool2d:
        pair = lambda v: np.array(v if isinstance(v, tuple) else (v, v))  # noqa: E731
        if module.ceil_mode or (module.padding not in (0, (0, 0))):
            raise ValueError(f"export_nir: layer {name}: AvgPool2d with ceil_mode or padding has "
                             "no exact NIR form")
        stride = module.stride if module.stride is not None else module.kernel_size
        if module.divisor_override == 1:
            return nir.SumPool2d(kernel_size=pair(module.kernel_size), stride=pair(stride),
                                 padding=np.array((0, 0)))
        if module.divisor_override is not None:
            raise ValueError(f"export_nir: layer {name}: AvgPool2d(divisor_override="
                             f"{module.divisor_override}) has no NIR form")
        return nir.AvgPool2d(kernel_size=pair(module.kernel_size), stride=pair(stride),
                             padding=np.array((0, 0)))
    return None


def _scale_outputs(node, r: np.ndarray, name: str, node_name: str) -> None:
    """Multiplies the outputs of a weight node (per output neuron or channel) by ``r``, the input
    scale of the LIF node ``name`` it feeds (see export_nir's fold_input_scale)."""
    nir = _nir()
    if isinstance(node, nir.Scale):
        node.scale = np.asarray(node.scale, dtype=np.float64) * r
        return
    if isinstance(node, (nir.Affine, nir.Linear)):
        scale = r.reshape(-1)
    elif isinstance(node, (nir.Conv1d, nir.Conv2d)):
        per_channel = r.reshape(r.shape[0], -1)
        if np.any(per_channel != per_channel[:, :1]):
            raise ValueError(f"export_nir: fold_input_scale: layer {name}'s time constants vary "
                             f"within a channel of the convolution {node_name} that feeds it")
        scale = per_channel[:, 0]
    else:
        raise ValueError(f"export_nir: fold_input_scale: layer {name} (LIF) must follow a weight "
                         f"layer (Linear, Conv1d, Conv2d), it follows {node_name} "
                         f"({type(node).__name__})")
    expand = (slice(None),) + (None,) * (np.asarray(node.weight).ndim - 1)
    node.weight = np.asarray(node.weight, dtype=np.float64) * scale[expand]
    if getattr(node, "bias", None) is not None:
        node.bias = np.asarray(node.bias, dtype=np.float64) * scale


def _fold_scale(nodes, previous: str, name: str, node, recurrent) -> None:
    """Moves a LIF node's input scale r into the weights of the node before it and of its
    recurrent connection (see export_nir's fold_input_scale)."""
    r = np.asarray(node.r, dtype=np.float64)
    _scale_outputs(nodes[previous], r, name, previous)
    if recurrent is not None:
        _scale_outputs(recurrent, r, name, f"{name}.w_rec")
    node.r = np.ones_like(r)


def export_nir(model: nn.Module, sample_input: torch.Tensor, *, dt: float = DEFAULT_DT,
               approximate: bool = False, fold_input_scale: bool = False,
               model_name: str = "snn_cuda"):
    """A ``nir.NIRGraph`` of ``model``: an ``nn.Sequential`` (nested ones too) called once per time
    step (snnTorch's ``init_hidden=True`` pattern), or a module with its own ``forward`` (a loop over
    the time steps inside included, snnTorch's tutorial networks), of our neurons and stateless
    layers.

    The wiring is read from one call ``model(sample_input)`` on a copy of the model (its state is
    not touched): which layer's output (or the model's input, or one step ``x[t]`` of it) each
    layer takes. A neuron's further arguments are its states, not wiring, and its output is its
    spikes. Every layer must take its input from the same place at every call; the model must
    return the last layer's output (per step, stacked over the steps, or first in a tuple, as
    snnTorch's tutorials return ``(spikes, membranes)``); anything computed between modules
    (``torch.relu``, ``x + y``, ``x.view``, a neuron's membrane) or returned instead (a membrane,
    a spike count) raises a ``ValueError``: it has no node in the graph.

    Exported: :class:`snn_cuda.Leaky` (``LIF``; ``IF`` when ``beta == 1``),
    :class:`snn_cuda.Synaptic` (``CubaLIF``) and the recurrent :class:`snn_cuda.RLeaky` /
    :class:`snn_cuda.RSynaptic` (the neuron node and its recurrent weights in a cycle: ``Affine``,
    ``Conv2d``, ``Linear(diag(V))`` or ``Scale(V)``) with ``reset_mechanism="zero"`` (all but
    ``Leaky`` also ``reset_delay=False``) and a threshold > 0: exact, see the module's docstring
    for the conversion; :class:`MembraneReadout` (``LI`` / ``CubaLI``); ``nn.Linear`` (``Affine``,
    or ``Linear`` without bias), ``nn.Conv1d`` / ``nn.Conv2d``, ``nn.Flatten``, ``nn.AvgPool2d``
    (``SumPool2d`` with ``divisor_override=1``). Anything else raises (a ``ValueError`` saying why,
    a ``TypeError`` for modules we do not know). Node names are the module paths, ``.`` -> ``_``.

    Args:
        sample_input: what ``model`` takes, ``[batch, *features]`` per step (or ``[T, batch,
            *features]`` for a forward that feeds ``x[t]`` to its first layer): gives the graph's
            input shape (``features``) and every layer's shape.
        dt: the Euler step the conversion assumes (1e-4 s, as snnTorch).
        fold_input_scale: write ``LIF`` nodes with ``r = 1`` and their input scale ``tau / dt``
            multiplied into the weights and bias of the layer before them (``Affine``, ``Linear``,
            ``Conv1d``, ``Conv2d``; per output neuron or channel) and of their recurrent weights:
            the same network in the form Norse's importer needs (Norse 1.1 ignores ``r`` of
            ``LIF`` nodes; its ``IF`` adds the input unscaled, which our ``IF`` nodes' ``r = 1 /
            dt`` already says). The products round, so spikes agree to that rounding, not bit for
            bit.
        approximate: export neurons whose reset NIR cannot express as NIR's reset to 0, with a
            warning each, instead of raising.
    """
    nir = _nir()
    dt = _check_dt(dt, "export_nir")
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_nir: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(sample_input, torch.Tensor) or sample_input.dim() < 2:
        raise ValueError("export_nir: sample_input must be what the model takes, at least [batch, "
                         "*features], got "
                         + (f"shape {tuple(sample_input.shape)}" if isinstance(sample_input, torch.Tensor)
                            else type(sample_input).__name__))
    from .neurons import RLeaky

    layers, returned = _trace(model, sample_input)
    consumers = {}
    for layer in layers:
        consumers.setdefault(layer.source, []).append(layer.name)
    sinks = [layer for layer in layers if layer.name not in consumers]
    if len(sinks) != 1:
        raise ValueError("export_nir: the model's output must be one layer's output; the outputs of "
                         f"{[layer.name for layer in sinks]} go to no other layer")
    if returned != sinks[0].name:
        raise ValueError(f"export_nir: the model returns the output of layer {returned}, which "
                         f"feeds other layers; the graph's output would be layer {sinks[0].name}'s")
    inputs = {layer.in_shape for layer in layers if layer.source == "input"}
    if len(inputs) != 1:
        raise ValueError(f"export_nir: the layers that take the model's input take shapes {inputs}")
    nodes, edges = OrderedDict(), []
    nodes["input"] = nir.Input(input_type={"input": np.array(next(iter(inputs)))})
    ends = {"input": "input"}  # layer -> the node whose output is the layer's output
    for layer in layers:
        name, module, shape = layer.name, layer.module, layer.in_shape
        node = _neuron_node(module, name, shape, dt, approximate)
        recurrent = _recurrent_node(module, name, shape) if isinstance(module, RLeaky) else None
        if node is None:
            node = _layer_node(module, name, shape)
            if node is None:
                kind = type(module).__name__
                if kind in _NOT_EXPRESSIBLE:
                    raise ValueError(f"export_nir: layer {name} ({kind}) has no NIR form: "
                                     f"{_NOT_EXPRESSIBLE[kind]}")
                raise TypeError(f"export_nir: layer {name} ({type(module).__module__}.{kind}) is not "
                                "supported; supported: snn_cuda.Leaky, snn_cuda.Synaptic, "
                                "snn_cuda.RLeaky, snn_cuda.RSynaptic, "
                                "snn_cuda.nir_io.MembraneReadout, nn.Linear, nn.Conv1d, nn.Conv2d, "
                                "nn.Flatten, nn.AvgPool2d")
        source = ends[layer.source]
        if fold_input_scale and isinstance(node, nir.LIF):
            if len(consumers[layer.source]) != 1:
                raise ValueError(f"export_nir: fold_input_scale: layer {name} shares its input "
                                 f"with {consumers[layer.source]}; folding its scale into the "
                                 "layer before would change theirs")
            _fold_scale(nodes, source, name, node, recurrent)
        if recurrent is None:
            nodes[name] = node
            edges.append((source, name))
            ends[name] = name
        else:  # snnTorch's form: the neuron and its recurrent weights in a cycle
            neuron, weights = f"{name}.lif", f"{name}.w_rec"
            nodes[neuron], nodes[weights] = node, recurrent
            edges += [(source, neuron), (neuron, weights), (weights, neuron)]
            ends[name] = neuron
    nodes["output"] = nir.Output(output_type={"output": np.array(sinks[0].out_shape)})
    edges.append((ends[sinks[0].name], "output"))
    graph = nir.NIRGraph(nodes=dict(nodes), edges=edges,
                         metadata={"exported_by": model_name, "dt": dt})
    graph.infer_types()
    return graph


# ------------------------------------------------------------------------------------------------
# Import.

_RECURRENT_WEIGHTS = ("Affine", "Linear", "Scale", "Conv2d")


def _recurrent_pairs(graph) -> dict:
    """The recurrent neurons of a graph, snnTorch's form: a spiking node ``n`` and a weight node
    ``w`` (Affine, Linear, Scale, Conv2d) with edges ``n -> w -> n`` and no other edge at ``w``.
    Returns ``{n: w}``; any other cycle is left for the chain walk to refuse."""
    nir = _nir()
    edges = set(map(tuple, graph.edges))
    degree_in, degree_out = {}, {}
    for source, target in edges:
        degree_out[source] = degree_out.get(source, 0) + 1
        degree_in[target] = degree_in.get(target, 0) + 1
    pairs = {}
    for neuron, weights in sorted(edges):
        node, back = graph.nodes.get(neuron), graph.nodes.get(weights)
        if ((weights, neuron) in edges and isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF))
                and type(back).__name__ in _RECURRENT_WEIGHTS
                and degree_in[weights] == 1 and degree_out[weights] == 1):
            pairs[neuron] = weights
    return pairs


def _chain(graph) -> List[Tuple[str, object, Optional[Tuple[str, object]]]]:
    """The nodes of a chain graph from its Input to its Output (both left out), in order, each
    with its recurrent weight node ``(name, node)`` (or None; see _recurrent_pairs)."""
    nir = _nir()
    pairs = _recurrent_pairs(graph)
    loops = {(n, w) for n, w in pairs.items()} | {(w, n) for n, w in pairs.items()}
    successors, predecessors = {}, {}
    for source, target in graph.edges:
        if (source, target) in loops:
            continue
        successors.setdefault(source, []).append(target)
        predecessors.setdefault(target, []).append(source)
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise ValueError(f"import_nir: the graph must have one Input node, it has {len(inputs)}")
    order, name, seen = [], inputs[0], set(pairs.values())
    while True:
        seen.add(name)
        following = successors.get(name, [])
        if len(following) != 1:
            if not following and isinstance(graph.nodes[name], nir.Output):
                break
            raise ValueError(
                f"import_nir: only chain graphs (each node feeds the next; a spiking node may also "
                f"feed itself through one weight node) are supported; node {name!r} has "
                f"{len(following)} outgoing edges ({following})")
        name = following[0]
        if name in seen:
            raise ValueError(f"import_nir: the graph has a cycle through node {name!r} that is not "
                             "a recurrent neuron (LIF, IF or CubaLIF -> Affine, Linear, Scale or "
                             "Conv2d -> back)")
        if len(predecessors.get(name, [])) != 1:
            raise ValueError(f"import_nir: only chain graphs are supported; node {name!r} has "
                             f"{len(predecessors.get(name, []))} incoming edges")
        if not isinstance(graph.nodes[name], nir.Output):
            weights = pairs.get(name)
            order.append((name, graph.nodes[name],
                          None if weights is None else (weights, graph.nodes[weights])))
    if len(seen) != len(graph.nodes):
        missing = sorted(set(graph.nodes) - seen)
        raise ValueError(f"import_nir: nodes {missing} are not on the path from Input to Output")
    return order


def _tensor(array, dtype) -> torch.Tensor:
    # A copy: NIR's arrays may be read-only views (np.diag), which torch does not take.
    return torch.as_tensor(np.asarray(array, dtype=np.float64).copy()).to(dtype)


def _constant(array: np.ndarray, dtype):
    """A neuron constant in ``dtype``: one value (0-dim) where every neuron has the same, else
    one per neuron. (A Python float would become a float32 constant in the module.)"""
    array = np.asarray(array, dtype=np.float64)
    if array.size and np.all(array == array.flat[0]):
        return torch.tensor(float(array.flat[0]), dtype=dtype)
    return _tensor(array, dtype)


def _require_zero(node, field: str, name: str) -> None:
    value = np.asarray(getattr(node, field), dtype=np.float64)
    if np.any(value != 0):
        raise ValueError(f"import_nir: node {name!r} ({type(node).__name__}) has {field} != 0 "
                         f"(values in [{value.min()}, {value.max()}]); our fused neurons reset and "
                         "rest at 0")


def _decay(tau, dt: float, name: str, field: str) -> np.ndarray:
    tau = np.asarray(tau, dtype=np.float64)
    if np.any(~np.isfinite(tau)) or np.any(tau < dt):
        raise ValueError(f"import_nir: node {name!r}: {field} must be finite and >= dt = {dt} (the "
                         f"Euler decay 1 - dt / {field} must lie in [0, 1)); got values in "
                         f"[{tau.min()}, {tau.max()}]. Pass the dt the graph was made for (a graph "
                         "from Norse 1.1's to_nir holds dt * tau: convention='norse')")
    return 1.0 - dt / tau


def _threshold_over(node, scale: np.ndarray, name: str) -> np.ndarray:
    """The spiking node's threshold in units of v / scale. Only for a scale > 0: with a negative
    one the spike condition v > threshold would turn into mem < threshold / scale."""
    if np.any(~np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(f"import_nir: node {name!r} ({type(node).__name__}): its input scale (r, "
                         f"w_in with dt and the time constants) must be finite and > 0, got values in "
                         f"[{np.min(scale)}, {np.max(scale)}]")
    return np.asarray(node.v_threshold, dtype=np.float64) / scale


def _recurrent_options(weights, name: str, shape, dtype) -> dict:
    """RLeaky / RSynaptic's arguments for a recurrent weight node (see _recurrent_pairs): a
    ``Linear`` with a diagonal weight or a ``Scale`` -> one-to-one ``V`` (fused over the whole
    sequence); ``Affine`` / ``Linear`` -> ``linear_features``; ``Conv2d`` -> ``conv2d_channels``,
    ``kernel_size`` (stride 1, no dilation or groups, padding ``kernel_size // 2``: RLeaky's)."""
    nir = _nir()
    weights_name, weights = weights
    where = f"import_nir: node {name!r}'s recurrent weights {weights_name!r} ({type(weights).__name__})"
    if isinstance(weights, nir.Scale):
        return dict(all_to_all=False, V=_constant(weights.scale, dtype))
    if isinstance(weights, (nir.Affine, nir.Linear)):
        w = np.asarray(weights.weight, dtype=np.float64)
        if w.ndim != 2 or w.shape[0] != w.shape[1] or (shape is not None and shape != w.shape[:1]):
            raise ValueError(f"{where}: weight of shape {w.shape} does not map the node's "
                             f"{shape if shape is not None else ''} neurons onto themselves")
        bias = np.asarray(weights.bias, dtype=np.float64) if isinstance(weights, nir.Affine) else None
        if np.array_equal(w, np.diag(np.diag(w))) and (bias is None or not np.any(bias)):
            return dict(all_to_all=False, V=_constant(np.diag(w), dtype))
        return dict(linear_features=w.shape[0], _weights=(w, bias))
    if isinstance(weights, nir.Conv2d):
        w = np.asarray(weights.weight, dtype=np.float64)
        k = w.shape[2:]
        pad = tuple(int(p) for p in np.broadcast_to(weights.padding, (2,))) \
            if not isinstance(weights.padding, str) else weights.padding
        if (w.shape[0] != w.shape[1] or (shape is not None and (len(shape) != 3 or w.shape[0] != shape[0]))
                or any(size % 2 == 0 for size in k) or pad != (k[0] // 2, k[1] // 2)
                or np.any(np.asarray(weights.stride) != 1) or np.any(np.asarray(weights.dilation) != 1)
                or weights.groups != 1):
            raise ValueError(f"{where}: only a convolution of the node's channels onto themselves "
                             "with an odd kernel, stride 1, no dilation or groups and padding "
                             f"kernel_size // 2 runs here (snnTorch's recurrent Conv2d); got weight "
                             f"{w.shape}, padding {weights.padding}, stride {weights.stride} for "
                             f"neurons {shape}")
        bias = np.asarray(weights.bias, dtype=np.float64)
        return dict(conv2d_channels=int(w.shape[0]), kernel_size=tuple(int(size) for size in k),
                    _weights=(w, bias))
    raise ValueError(f"{where} is not supported")  # pragma: no cover - _recurrent_pairs filters


def _spiking_module(kind: str, constants: dict, recurrent, name: str, shape, dtype):
    """A fused spiking neuron (NIR's reset: to 0 at the spike), recurrent if ``recurrent`` is a
    weight node: Leaky / RLeaky (``kind="leaky"``), Synaptic / RSynaptic."""
    from .neurons import Leaky, RLeaky, RSynaptic, Synaptic

    threshold = constants["threshold"]
    if np.any(threshold <= 0):
        raise ValueError(f"import_nir: node {name!r}: v_threshold must be > 0 (at or below the reset "
                         "value 0 a neuron would fire again from rest, which the fused immediate "
                         f"reset does not model); got values down to {np.min(threshold)}")
    constants = {key: _constant(value, dtype) for key, value in constants.items()}
    common = dict(reset_mechanism="zero", init_hidden=True, reset_delay=False)
    if recurrent is None:
        return (Leaky if kind == "leaky" else Synaptic)(**constants, **common)
    options = _recurrent_options(recurrent, name, shape, dtype)
    weights = options.pop("_weights", None)
    module = (RLeaky if kind == "leaky" else RSynaptic)(**constants, **options, **common)
    if weights is not None:
        w, bias = weights
        module.recurrent.to(dtype)
        with torch.no_grad():
            module.recurrent.weight.copy_(_tensor(w, dtype))
            module.recurrent.bias.copy_(_tensor(bias if bias is not None else np.zeros(w.shape[0]),
                                                dtype))
    return module


def _shape_of(node):
    """The neuron shape of a node from its inferred input type, or None where it has none."""
    shape = (getattr(node, "input_type", None) or {}).get("input")
    if shape is None or np.asarray(shape).size == 0:
        return None
    return tuple(int(size) for size in np.asarray(shape).reshape(-1))


# Norse 1.1's to_nir writes its cells' time constants as tau = dt / tau_mem_inv (dt times the
# time constant) and its IAFCell (v += x, no dt) as IF with r = 1; convention="norse" reads them so.
_CONVENTIONS = ("nir", "norse")


def _neuron_module(node, name: str, dt: float, dtype, recurrent=None, convention: str = "nir"):
    from .neurons import Leaky, Synaptic

    nir = _nir()
    if recurrent is not None and not isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF)):
        raise ValueError(f"import_nir: node {name!r} ({type(node).__name__}) has a recurrent "
                         "connection; only LIF, IF and CubaLIF nodes may have one here")
    norse = convention == "norse"
    if norse and isinstance(node, (nir.CubaLIF, nir.CubaLI)):
        raise ValueError(f"import_nir: node {name!r} ({type(node).__name__}) with convention='norse': "
                         "Norse writes its LIFCell as CubaLIF, but that cell feeds the input into the "
                         "current after the step, a step later than NIR's CubaLIF, so the node does "
                         "not describe it; run Norse's cell fused with snn_cuda.norse.LIFCell")

    def tau(value):
        """A time constant in seconds: Norse's are written as dt * tau."""
        value = np.asarray(value, dtype=np.float64)
        return value / dt if norse else value

    if isinstance(node, nir.LIF):
        _require_zero(node, "v_leak", name)
        _require_zero(node, "v_reset", name)
        beta = _decay(tau(node.tau), dt, name, "tau")
        scale = np.asarray(node.r, dtype=np.float64) * dt / tau(node.tau)
        threshold = _threshold_over(node, scale, name)
        return _spiking_module("leaky", dict(beta=beta, threshold=threshold), recurrent, name,
                               _shape_of(node), dtype)
    if isinstance(node, nir.IF):
        _require_zero(node, "v_reset", name)
        scale = np.asarray(node.r, dtype=np.float64) * (1.0 if norse else dt)
        threshold = _threshold_over(node, scale, name)
        return _spiking_module("leaky", dict(beta=np.ones(1), threshold=threshold), recurrent, name,
                               _shape_of(node), dtype)
    readout = dict(reset_mechanism="none", init_hidden=True, output=True)
    if isinstance(node, nir.LI):
        _require_zero(node, "v_leak", name)
        beta = _decay(tau(node.tau), dt, name, "tau")
        scale = np.asarray(node.r, dtype=np.float64) * dt / tau(node.tau)
        return MembraneReadout(Leaky(beta=_constant(beta, dtype), **readout),
                               input_scale=_constant(scale, dtype))
    if isinstance(node, nir.CubaLI):
        _require_zero(node, "v_leak", name)
        alpha = _decay(node.tau_syn, dt, name, "tau_syn")
        beta = _decay(node.tau_mem, dt, name, "tau_mem")
        a = np.asarray(node.w_in, dtype=np.float64) * dt / np.asarray(node.tau_syn, dtype=np.float64)
        b = np.asarray(node.r, dtype=np.float64) * dt / np.asarray(node.tau_mem, dtype=np.float64)
        return MembraneReadout(Synaptic(alpha=_constant(alpha, dtype), beta=_constant(beta, dtype),
                                        **readout),
                               input_scale=_constant(a, dtype), output_scale=_constant(b, dtype))
    if isinstance(node, nir.CubaLIF):
        _require_zero(node, "v_leak", name)
        _require_zero(node, "v_reset", name)
        alpha = _decay(node.tau_syn, dt, name, "tau_syn")
        beta = _decay(node.tau_mem, dt, name, "tau_mem")
        a = np.asarray(node.w_in, dtype=np.float64) * dt / np.asarray(node.tau_syn, dtype=np.float64)
        b = np.asarray(node.r, dtype=np.float64) * dt / np.asarray(node.tau_mem, dtype=np.float64)
        threshold = _threshold_over(node, a * b, name)
        return _spiking_module("synaptic", dict(alpha=alpha, beta=beta, threshold=threshold),
                               recurrent, name, _shape_of(node), dtype)
    return None


def _layer_module(node, name: str, dtype):
    nir = _nir()
    if isinstance(node, (nir.Affine, nir.Linear)):
        weight = _tensor(node.weight, dtype)
        bias = isinstance(node, nir.Affine) and node.bias is not None
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias, dtype=dtype)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if bias:
                layer.bias.copy_(_tensor(node.bias, dtype))
        return layer
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        weight = _tensor(node.weight, dtype)
        conv = nn.Conv1d if isinstance(node, nir.Conv1d) else nn.Conv2d
        layer = conv(weight.shape[1] * node.groups, weight.shape[0], tuple(weight.shape[2:]),
                     stride=node.stride, padding=node.padding, dilation=node.dilation,
                     groups=node.groups, bias=True, dtype=dtype)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(_tensor(node.bias, dtype))
        return layer
    if isinstance(node, nir.Flatten):
        shift = lambda d: d + 1 if d >= 0 else d  # our dims count the batch  # noqa: E731
        return nn.Flatten(shift(int(node.start_dim)), shift(int(node.end_dim)))
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        if np.any(np.asarray(node.padding) != 0):
            raise ValueError(f"import_nir: node {name!r}: pooling with padding is not supported")
        kernel = tuple(int(k) for k in np.broadcast_to(node.kernel_size, (2,)))
        stride = tuple(int(s) for s in np.broadcast_to(node.stride, (2,)))
        return nn.AvgPool2d(kernel, stride, divisor_override=1 if isinstance(node, nir.SumPool2d) else None)
    return None


def import_nir(graph, *, dt: float = DEFAULT_DT, dtype: Optional[torch.dtype] = None,
               convention: str = "nir") -> nn.Sequential:
    """An ``nn.Sequential`` of fused neurons and torch layers that runs ``graph`` (a
    ``nir.NIRGraph`` or the path of a file ``nir.write`` wrote) one time step per call.

    Mapped: ``LIF`` -> :class:`snn_cuda.Leaky`, ``IF`` -> :class:`snn_cuda.Leaky` with ``beta=1``,
    ``CubaLIF`` -> :class:`snn_cuda.Synaptic` (all ``reset_mechanism="zero"``, ``reset_delay=False``,
    ``init_hidden=True``: call the model once per step, reset with ``snntorch.utils.reset(model)``
    or ``snn_cuda.Leaky.reset_hidden()``, or run a whole sequence fused with
    :func:`snn_cuda.run_sequence`); ``Affine`` / ``Linear`` -> ``nn.Linear``, ``Conv1d`` / ``Conv2d``,
    ``Flatten``, ``AvgPool2d``, ``SumPool2d`` (``AvgPool2d(divisor_override=1)``); ``LI`` /
    ``CubaLI`` -> :class:`MembraneReadout`. A ``LIF`` / ``IF`` / ``CubaLIF`` node fed back through
    one ``Affine``, ``Linear``, ``Scale`` or ``Conv2d`` node (a cycle ``n -> w -> n``, snnTorch's
    form, or a subgraph node holding it) -> :class:`snn_cuda.RLeaky` / :class:`snn_cuda.RSynaptic`
    (``reset_delay=False``; a diagonal ``Linear`` or a ``Scale`` as one-to-one ``V``, fused over a
    whole sequence; a ``Conv2d`` needs stride 1 and padding ``kernel_size // 2``). A subgraph node
    (a ``nir.NIRGraph`` inside the graph) that is a chain becomes a nested ``nn.Sequential`` (one
    holding a single recurrent neuron: that neuron). Neurons need
    ``v_leak = 0``, ``v_reset = 0`` and ``v_threshold > 0``; other nodes (``Threshold``,
    ``Delay``, ...), graphs that are not a chain (branches, other cycles) and anything else raise
    a ``ValueError`` that names the node. ``dt``: the Euler step the graph was made for (1e-4 s: snnTorch's and our
    export's). ``dtype``: of the parameters (default: torch's default dtype).

    ``convention="norse"`` reads a graph as Norse 1.1's ``to_nir`` writes it (pass its ``dt``,
    1e-3 by default there): time constants as ``dt * tau`` (it writes ``dt / tau_mem_inv``) and
    ``IF``'s ``r`` without ``dt`` (its ``IAFCell`` adds the input unscaled), so that its
    ``LIFBoxCell``, ``LIBoxCell`` and ``IAFCell`` graphs run here to Norse's own outputs. Its
    ``LIFCell`` (written as ``CubaLIF``) raises: that cell feeds the input a step later than NIR's
    ``CubaLIF`` says.
    """
    nir = _nir()
    dt = _check_dt(dt, "import_nir")
    if convention not in _CONVENTIONS:
        raise ValueError(f"import_nir: convention must be one of {_CONVENTIONS}, got {convention!r}")
    dtype = dtype or torch.get_default_dtype()
    if isinstance(graph, (str, os.PathLike)):
        graph = nir.read(graph)
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"import_nir: graph must be a nir.NIRGraph or a file path, got {type(graph).__name__}")
    return _import_chain(graph, dt, dtype, convention, "")


def _import_chain(graph, dt: float, dtype, convention: str, where: str) -> nn.Module:
    """The modules of a chain graph, in an ``nn.Sequential``; a subgraph node becomes its own
    ``nn.Sequential`` (or, holding one recurrent neuron, that neuron's module)."""
    from .neurons import RLeaky

    nir = _nir()
    try:
        chain = _chain(graph)
    except ValueError as error:
        if not where:
            raise
        raise ValueError(f"import_nir: subgraph node {where!r}: "
                         f"{str(error).removeprefix('import_nir: ')}") from None
    layers = OrderedDict()
    for name, node, recurrent in chain:
        path = f"{where}.{name}" if where else name
        if isinstance(node, nir.NIRGraph):
            module = _import_chain(node, dt, dtype, convention, path)
            if len(module) == 1 and isinstance(module[0], RLeaky):  # RSynaptic derives from it
                module = module[0]  # Input -> neuron <-> weights -> Output: snnTorch's grouping
        else:
            module = _neuron_module(node, path, dt, dtype, recurrent, convention)
            if module is None:
                module = _layer_module(node, path, dtype)
        if module is None:
            raise ValueError(f"import_nir: node {path!r} ({type(node).__name__}) is not supported; "
                             "supported: LIF, IF, CubaLIF, LI, CubaLI, Affine, Linear, Conv1d, "
                             "Conv2d, Flatten, AvgPool2d, SumPool2d, Scale (as recurrent weights) "
                             "and subgraphs of those")
        key = name.replace(".", "_")  # module names cannot hold dots
        while key in layers:  # two node names that differ only there keep both layers
            key += "_"
        layers[key] = module
    return nn.Sequential(layers)
