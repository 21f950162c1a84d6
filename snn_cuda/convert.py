"""Existing models, fused without a rewrite.

- :func:`convert` replaces every snnTorch ``Leaky`` / ``Synaptic`` / ``RLeaky`` / ``RSynaptic``,
  SpikingJelly ``LIFNode``/``IFNode``/``ParametricLIFNode``, Norse ``LIF``/``LIFCell``/``LSNN``/
  ``LSNNCell``/``LI``/``LICell`` and the seed's ``SpikingNeuronLayerRNN`` in a model by the fused
  drop-in, in place, keeping their parameters
  (the same ``Parameter`` objects, so an optimizer built before still trains them), buffers,
  ``state_dict`` keys, state and hooks.
- :func:`run_sequence` runs a model written for one time step per call over a whole
  ``[T, batch, ...]`` input layer by layer: stateless layers once on the flattened ``T * batch``,
  neurons through the fused kernel over all ``T`` steps in one call. Same results as the per-step
  loop (spikes equal; membranes and gradients to the rounding of the layers' matmuls).
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Tuple, Type

import torch
from torch import nn

from . import _peers
from .layers import SpikingNeuronLayerRNN
from .neurons import IFNode, LIFNode, Leaky, ParametricLIFNode, RLeaky, RSynaptic, Synaptic
from .nir_io import MembraneReadout

_HOOK_DICTS = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
    "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
)


def _carry_over(old: nn.Module, new: nn.Module) -> nn.Module:
    """Gives ``new`` the very parameter and buffer objects of ``old`` (same names), its hooks and
    its train/eval mode."""
    for name, param in old._parameters.items():
        if name in new._parameters or hasattr(new, name):
            new._parameters.pop(name, None)
            new._buffers.pop(name, None)
            if name in new.__dict__:
                del new.__dict__[name]
            new._parameters[name] = param
    for name, buffer in old._buffers.items():
        if name in new._buffers:
            new._buffers[name] = buffer
            if name not in old._non_persistent_buffers_set:
                new._non_persistent_buffers_set.discard(name)
    for attr in _HOOK_DICTS:
        if hasattr(old, attr) and hasattr(new, attr):
            getattr(new, attr).update(getattr(old, attr))
    new.train(old.training)
    return new


def _snntorch_mechanism(m) -> str:
    """The reset mechanism an snnTorch Leaky really computes: the state function chosen when it
    was built (its ``reset_mechanism`` setter does not change that function)."""
    chosen = {"_base_sub": "subtract", "_base_zero": "zero", "_base_int": "none"}.get(
        getattr(getattr(m, "state_function", None), "__name__", ""), None)
    if chosen is None:
        raise ValueError(f"convert: cannot tell which reset {type(m).__name__} computes")
    if chosen != m.reset_mechanism:
        raise ValueError(
            f"convert: this snntorch.Leaky says reset_mechanism={m.reset_mechanism!r} but computes "
            f"{chosen!r} (snnTorch keeps the state function it was built with); rebuild it with the "
            "mechanism you want before converting"
        )
    return chosen


def _from_snntorch_leaky(m) -> Leaky:
    new = Leaky(
        beta=m.beta.detach(), threshold=m.threshold.detach(), spike_grad=m.spike_grad,
        surrogate_disable=m.surrogate_disable, init_hidden=m.init_hidden, inhibition=m.inhibition,
        learn_beta=isinstance(m.beta, nn.Parameter),
        learn_threshold=isinstance(m.threshold, nn.Parameter),
        reset_mechanism=_snntorch_mechanism(m), state_quant=m.state_quant, output=m.output,
        graded_spikes_factor=m.graded_spikes_factor.detach(),
        learn_graded_spikes_factor=isinstance(m.graded_spikes_factor, nn.Parameter),
        reset_delay=m.reset_delay,
    )
    _carry_over(m, new)
    return new


def _from_snntorch_synaptic(m) -> Synaptic:
    new = Synaptic(
        alpha=m.alpha.detach(), beta=m.beta.detach(), threshold=m.threshold.detach(),
        spike_grad=m.spike_grad, surrogate_disable=m.surrogate_disable, init_hidden=m.init_hidden,
        inhibition=m.inhibition, learn_alpha=isinstance(m.alpha, nn.Parameter),
        learn_beta=isinstance(m.beta, nn.Parameter),
        learn_threshold=isinstance(m.threshold, nn.Parameter),
        reset_mechanism=_snntorch_mechanism(m), state_quant=m.state_quant, output=m.output,
        reset_delay=m.reset_delay,
    )
    _carry_over(m, new)  # (graded_spikes_factor, syn and mem too)
    return new


def _from_snntorch_rleaky(m) -> RLeaky:
    options = dict(all_to_all=m.all_to_all, linear_features=m.linear_features,
                   conv2d_channels=m.conv2d_channels, kernel_size=m.kernel_size)
    if not m.all_to_all:
        options["V"] = m.V.detach()
    cls = RLeaky
    if hasattr(m, "alpha"):  # RSynaptic
        cls = RSynaptic
        options.update(alpha=m.alpha.detach(), learn_alpha=isinstance(m.alpha, nn.Parameter))
    new = cls(
        beta=m.beta.detach(), threshold=m.threshold.detach(), spike_grad=m.spike_grad,
        surrogate_disable=m.surrogate_disable, init_hidden=m.init_hidden, inhibition=m.inhibition,
        learn_beta=isinstance(m.beta, nn.Parameter),
        learn_threshold=isinstance(m.threshold, nn.Parameter), learn_recurrent=m.learn_recurrent,
        reset_mechanism=_snntorch_mechanism(m), state_quant=m.state_quant, output=m.output,
        reset_delay=m.reset_delay, **options,
    )
    _carry_over(m, new)
    new.recurrent = m.recurrent  # the same layer (all_to_all), or the module holding the same V
    return new


def _from_norse(m, cls):
    """Norse's LIF / LIFCell / LI / LICell as ours: the same ``p`` (read on every call), ``dt`` and
    ``record_states``."""
    options = {"record_states": m.record_states} if hasattr(m, "record_states") else {}
    new = cls(m.p, dt=m.dt, **options)
    _carry_over(m, new)
    return new


def _from_spikingjelly_node(m, cls, **constants):
    """SpikingJelly's LIFNode or IFNode as ours (``cls``), with its state and options."""
    if getattr(m, "_neuron_precision", None) is not None:
        raise ValueError(
            f"convert: this {type(m).__name__} has a neuron precision set (SpikingJelly's "
            f"reduced-precision modes, {m._neuron_precision!r}); the fused kernel computes in the "
            "input's dtype"
        )
    new = cls(
        v_threshold=m.v_threshold, v_reset=m.v_reset, surrogate_function=m.surrogate_function,
        detach_reset=m.detach_reset, step_mode=m.step_mode, store_v_seq=m.store_v_seq, **constants,
    )
    _carry_over(m, new)
    new.v = m.v
    new.v_seq = m.v_seq
    return new


def _from_spikingjelly_lifnode(m) -> LIFNode:
    return _from_spikingjelly_node(m, LIFNode, tau=m.tau, decay_input=m.decay_input)


def _from_spikingjelly_ifnode(m) -> IFNode:
    return _from_spikingjelly_node(m, IFNode)


def _from_spikingjelly_plif(m) -> ParametricLIFNode:
    # init_tau only sizes w here: _carry_over then hands over m's own w (the same Parameter).
    w = m.w.detach()
    new = _from_spikingjelly_node(m, ParametricLIFNode, decay_input=m.decay_input,
                                  num_neurons=None if w.dim() == 0 else w.shape[0])
    return new


def _is_seed_layer(m) -> bool:
    return (type(m).__name__ == "SpikingNeuronLayerRNN" and not isinstance(m, SpikingNeuronLayerRNN)
            and isinstance(getattr(m, "fc", None), nn.Linear)
            and all(hasattr(m, a) for a in ("decay_multiplier", "threshold", "penalty_threshold",
                                             "prev_inner", "prev_outer", "reset_state")))


def _from_seed_layer(m) -> SpikingNeuronLayerRNN:
    new = SpikingNeuronLayerRNN(
        None, m.fc.in_features, m.fc.out_features, m.decay_multiplier, m.threshold,
        m.penalty_threshold, dtype=m.fc.weight.dtype,
    )
    new.device = getattr(m, "device", None)
    new.fc = m.fc
    _carry_over(m, new)
    new.prev_inner, new.prev_outer = m.prev_inner, m.prev_outer
    return new


def _converters() -> Dict[type, Callable]:
    """The originals that are installed (and imported) and how to replace each."""
    table = {}
    snntorch = _peers.peer_class("snntorch", "Leaky")
    if snntorch is not None:
        table[snntorch] = _from_snntorch_leaky
    synaptic = _peers.peer_class("snntorch", "Synaptic")
    if synaptic is not None:
        table[synaptic] = _from_snntorch_synaptic
    for name in ("RLeaky", "RSynaptic"):
        recurrent = _peers.peer_class("snntorch", name)
        if recurrent is not None:
            table[recurrent] = _from_snntorch_rleaky
    lifnode = _peers.peer_class("spikingjelly.activation_based.neuron", "LIFNode")
    if lifnode is not None:
        table[lifnode] = _from_spikingjelly_lifnode
    ifnode = _peers.peer_class("spikingjelly.activation_based.neuron", "IFNode")
    if ifnode is not None:
        table[ifnode] = _from_spikingjelly_ifnode
    plif = _peers.peer_class("spikingjelly.activation_based.neuron", "ParametricLIFNode")
    if plif is not None:
        table[plif] = _from_spikingjelly_plif
    if _peers.loaded("norse.torch") is not None:  # (a model holding Norse modules imported it)
        from . import norse as fused_norse

        for module, names in (("norse.torch.module.lif", ("LIF", "LIFCell")),
                              ("norse.torch.module.lsnn", ("LSNN", "LSNNCell")),
                              ("norse.torch.module.leaky_integrator", ("LI", "LICell"))):
            for name in names:
                original = _peers.peer_class(module, name)
                if original is not None:
                    table[original] = (lambda m, cls=getattr(fused_norse, name): _from_norse(m, cls))
    return table


def convert(model: nn.Module, *, strict: bool = True) -> nn.Module:
    """Replaces, in place, every ``snntorch.Leaky`` / ``Synaptic`` / ``RLeaky`` / ``RSynaptic``,
    SpikingJelly ``LIFNode`` /
    ``IFNode`` / ``ParametricLIFNode``, Norse ``LIF`` / ``LIFCell`` / ``LSNN`` / ``LSNNCell`` / ``LI`` /
    ``LICell`` (:mod:`snn_cuda.norse`)
    and the seed's ``SpikingNeuronLayerRNN`` (a class of that name with ``fc``, ``decay_multiplier``,
    ``threshold``, ``penalty_threshold`` and ``reset_state``) in ``model`` by the fused drop-in
    (:class:`snn_cuda.Leaky`, :class:`snn_cuda.Synaptic`, :class:`snn_cuda.LIFNode`,
    :class:`snn_cuda.IFNode`, :class:`snn_cuda.SpikingNeuronLayerRNN`)
    with the same options, parameters (the same objects), buffers, ``state_dict`` keys, state,
    hooks and train/eval mode. Returns the model (or its replacement if the model itself is one).

    Options the fused modules cannot reproduce raise their ``ValueError``. A *subclass* of one of
    the originals may compute something else, so it raises a ``TypeError`` unless ``strict=False``,
    which leaves it as it is.

    Example::

        >>> net = nn.Sequential(nn.Linear(784, 1000), snntorch.Leaky(beta=0.95, init_hidden=True))
        >>> snn_cuda.convert(net)      # net[1] is now an snn_cuda.Leaky; the per-step loop runs as is
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: model must be an nn.Module, got {type(model).__name__}")
    table = _converters()

    def replacement(module):
        for original, make in table.items():
            if type(module) is original:
                return make(module)
            if isinstance(module, original) and not isinstance(module, (Leaky, Synaptic, RLeaky, LIFNode)):
                if strict:
                    raise TypeError(
                        f"convert: {type(module).__qualname__} subclasses {original.__qualname__} and "
                        "may change what it computes; convert its instances yourself, or pass "
                        "strict=False to leave them as they are"
                    )
                return None
        if _is_seed_layer(module):
            return _from_seed_layer(module)
        return None

    root = replacement(model)
    if root is not None:
        return root
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            new = replacement(child)
            if new is not None:
                parent._modules[name] = new
    functional = _peers.loaded("spikingjelly.activation_based.functional")
    if functional is not None and hasattr(functional, "invalidate_reset_cache"):
        functional.invalidate_reset_cache(model)  # reset_net caches the modules it found
    return model


# ------------------------------------------------------------------------------------------------
# run_sequence

_PER_SAMPLE: Tuple[type, ...] = (
    nn.Identity, nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
    nn.ConvTranspose2d, nn.ConvTranspose3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.LPPool1d, nn.LPPool2d, nn.Upsample, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
    nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d, nn.PixelShuffle,
    nn.PixelUnshuffle, nn.LayerNorm, nn.GroupNorm, nn.Embedding,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Softplus, nn.Softsign,
    nn.Tanhshrink, nn.Threshold, nn.LogSigmoid,
    # Per sample unless they work on dim 0 (see _sample_dims_only):
    nn.Flatten, nn.Unflatten, nn.Softmax, nn.LogSoftmax, nn.Softmin,
)
_NORMS_WITH_BATCH_STATISTICS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
                                nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)


def _flattened(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module`` once on ``[T * batch, ...]``, reshaped back to ``[T, batch, ...]``."""
    T, batch = x.shape[0], x.shape[1]
    y = module(x.reshape(T * batch, *x.shape[2:]))
    return y.reshape(T, batch, *y.shape[1:])


def _per_step(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([module(step) for step in x.unbind(0)])


def _sample_dims_only(module: nn.Module) -> bool:
    """Whether a module of the per-sample list treats dim 0 as the batch (so T * batch may stand
    there): a Flatten/Unflatten/Softmax that works on dim 0 does not."""
    if isinstance(module, nn.Flatten):
        return module.start_dim != 0
    if isinstance(module, nn.Unflatten):
        return isinstance(module.dim, int) and module.dim != 0
    if isinstance(module, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
        return module.dim is not None and module.dim != 0
    return True


def _why_not(module: nn.Module) -> str:
    for original in _converters():
        if isinstance(module, original):
            return (f"it is the original {original.__module__}.{original.__qualname__}; call "
                    "snn_cuda.convert(model) first to fuse it")
    if _is_seed_layer(module):
        return "it is the seed's original layer; call snn_cuda.convert(model) first to fuse it"
    if isinstance(module, _DROPOUTS):
        return ("in training mode it draws its random masks in a different order than the per-step "
                "loop, so the results would differ; call model.eval(), or name it in per_sample=(...) "
                "to accept masks drawn once over T * batch")
    if isinstance(module, nn.Module) and type(module).forward is not nn.Module.forward and list(module.children()):
        return ("it is a container with its own forward, whose wiring over time cannot be known; set "
                "step_mode='m' on its neurons and call it on the sequence, or name it in per_step=(...)")
    return ("it is not known to be stateless per sample; name its class in per_sample=(...) if it "
            "treats each sample of dim 0 on its own, or in per_step=(...) to run it once per step")


def run_sequence(model: nn.Module, x_seq: torch.Tensor, *,
                 per_sample: Iterable[Type[nn.Module]] = (),
                 per_step: Iterable[Type[nn.Module]] = ()):
    """Runs a model written for one time step per call over a whole sequence, layer by layer.

    ``model`` is what a per-step loop ``for t in range(T): out = model(x_seq[t])`` calls: an
    ``nn.Sequential`` (nested ones too) of stateless layers and neurons, as in snnTorch's
    ``init_hidden=True`` pattern and SpikingJelly's single-step nets. Each layer gets the whole
    sequence at once:

    - fused neurons (:class:`snn_cuda.Leaky`, :class:`snn_cuda.Synaptic`, :class:`snn_cuda.LIFNode`,
      :class:`snn_cuda.SpikingNeuronLayerRNN`): one kernel call over all ``T`` steps, continuing
      from and updating the state the per-step loop would have used and left (so
      ``snntorch.utils.reset`` / ``functional.reset_net`` before the call work as they do there);
    - layers that treat each sample on its own (``Linear``, ``Conv*d``, pooling, ``Flatten``,
      activations, ``LayerNorm``, ``Dropout`` and ``BatchNorm`` in eval mode, ...): once on the
      flattened ``[T * batch, ...]``;
    - ``BatchNorm`` / ``InstanceNorm`` in training mode (statistics of each step's batch, running
      statistics updated once per step): once per step, as in the loop;
    - modules whose ``step_mode`` is ``"m"`` (SpikingJelly's multi-step layers and containers):
      called on the sequence, as they expect.

    Returns what the last layer returns, stacked over time: ``[T, batch, ...]``, or a tuple of such
    (e.g. ``(spk, mem)`` from a final ``Leaky(output=True)``).

    Raises a ``TypeError`` for anything it cannot run this way with the loop's results (naming the
    module and what to do): the original, unconverted neurons (call :func:`convert` first),
    ``Dropout`` in training mode (its masks would be drawn in another order), containers with their
    own ``forward`` (their wiring over time is unknown; recurrent connections between layers cannot
    be run layer by layer) and unknown modules. Declare your own layers with
    ``per_sample=(MyLayer,)`` (treats each sample of dim 0 on its own) or ``per_step=(MyLayer,)``
    (run once per step, exact for any feed-forward layer).
    """
    if not isinstance(x_seq, torch.Tensor) or x_seq.dim() < 2:
        raise ValueError(
            "run_sequence: x_seq must be a sequence [T, batch, ...] (at least 2 dims), got "
            f"{tuple(x_seq.shape) if isinstance(x_seq, torch.Tensor) else type(x_seq).__name__}"
        )
    return _run(model, x_seq, tuple(per_sample), tuple(per_step), "model")


def _run(module, x, per_sample, per_step, where):
    if isinstance(x, tuple):
        raise TypeError(
            f"run_sequence: {where} ({type(module).__name__}) receives a tuple from the layer before "
            "it, as it would in the per-step loop, where that fails too (a neuron in the middle of a "
            "Sequential must return spikes only: snnTorch's init_hidden=True, output=False)"
        )
    if isinstance(module, (Leaky, Synaptic, RLeaky, LIFNode, SpikingNeuronLayerRNN,
                           MembraneReadout)):
        return module.multi_step_forward(x)
    if type(module) is nn.Sequential or (isinstance(module, nn.Sequential)
                                         and type(module).forward is nn.Sequential.forward):
        for name, child in module._modules.items():
            x = _run(child, x, per_sample, per_step, f"{where}.{name}")
        return x
    if getattr(module, "step_mode", None) == "m":
        return module(x)
    if per_step and isinstance(module, per_step):
        return _per_step(module, x)
    if per_sample and isinstance(module, per_sample):
        return _flattened(module, x)
    if isinstance(module, _NORMS_WITH_BATCH_STATISTICS):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            # Batch statistics (training, or no running statistics) are each step's own.
            batch_stats = module.training or not module.track_running_stats
        else:  # InstanceNorm: per sample, but training updates running statistics once per call
            batch_stats = module.training and module.track_running_stats
        return _per_step(module, x) if batch_stats else _flattened(module, x)
    if isinstance(module, _DROPOUTS) and not module.training:
        return _flattened(module, x)
    if isinstance(module, _PER_SAMPLE) and _sample_dims_only(module):
        return _flattened(module, x)
    raise TypeError(
        f"run_sequence: cannot run {where} ({type(module).__qualname__}) over the whole sequence: "
        f"{_why_not(module)}"
    )
