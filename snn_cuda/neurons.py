"""Drop-in replacements for snnTorch's ``Leaky`` and SpikingJelly's ``LIFNode``, fused.

Each takes the arguments of the module it replaces and is called the way that module is called:
one time step per call by default (``step_mode="s"``), with the original's state handling and
return conventions, so the original's own per-step code runs unchanged and computes the same
numbers (each step is one fused kernel call). The whole sequence in one kernel call is an explicit
mode, ``step_mode="m"`` (or :meth:`multi_step_forward`): a ``[T, batch, ...]`` input is never
guessed from its shape.

Options the fused kernel does not reproduce raise a ``ValueError`` naming the option; nothing is
silently computed differently. When snnTorch / SpikingJelly are installed, instances also derive
from ``snntorch.Leaky`` resp. SpikingJelly's ``base.MemoryModule`` (see :mod:`snn_cuda._peers`),
so that the peers' own utilities (``snntorch.utils.reset``, ``functional.reset_net``,
``detach_net``, ``set_step_mode``, ``base.named_memories``) find them.
"""

from __future__ import annotations

import copy
import math
import weakref
from typing import Optional, Union

import torch
from torch import nn

from . import _peers
from . import surrogate as _surrogate
from ._constants import CheckedConstants
from .neuron_ops import rleaky, rsynaptic, synaptic, synaptic_step
from .ops import TAU_WHY, check_flag, lif, lif_step

Number = Union[float, int]
STEP_MODES = ("s", "m")


def _tensor_param(module: CheckedConstants, name: str, value, learn: bool) -> None:
    """Registers ``value`` as a Parameter (``learn``) or a buffer, as snnTorch does."""
    module._check_constant(name, value, False, "")
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    if learn:
        setattr(module, name, nn.Parameter(value))
    else:
        module.register_buffer(name, value)


def _reject(cls: str, option: str, value, why: str) -> None:
    raise ValueError(f"snn_cuda.{cls}: {option}={value!r} is not supported ({why})")


def check_step_mode(cls: str, step_mode) -> str:
    if step_mode not in STEP_MODES:
        raise ValueError(
            f"snn_cuda.{cls}: step_mode must be 's' (one time step per call) or 'm' (a whole "
            f"[T, batch, ...] sequence per call), got {step_mode!r}"
        )
    return step_mode


def _describe(value) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


def _shown(value):
    """A constant in a module's repr: the float, or the tensor's shape."""
    return value if not isinstance(value, torch.Tensor) else f"tensor{tuple(value.shape)}"


class _PeerCompatible(nn.Module):
    """Instances derive from the peer's class when it is installed (see :mod:`snn_cuda._peers`)."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(_peers.with_peer_base(cls))


# ------------------------------------------------------------------------------------------------
# snnTorch


_RESET_CODES = {"subtract": 0, "zero": 1, "none": 2}


class _SnntorchNeuron(CheckedConstants, _PeerCompatible):
    """What the drop-ins for snnTorch's neurons share: snnTorch's ``LIF`` options and constants,
    the reset mechanism, the spike's ``graded_spikes_factor`` and ``surrogate_disable``,
    ``reset_delay=False``, the class-wide ``reset_hidden`` / ``detach_hidden`` and the step modes.
    Subclasses name their state buffers in ``_states`` and keep their instances in ``_live``."""

    _states = ()
    _live = weakref.WeakSet()

    def _init_snntorch(self, beta, threshold, spike_grad, surrogate_disable, init_hidden,
                       inhibition, learn_beta, learn_threshold, reset_mechanism, state_quant,
                       output, graded_spikes_factor, learn_graded_spikes_factor, reset_delay,
                       step_mode) -> None:
        """snnTorch's ``LIF`` set-up: the options, then threshold, graded_spikes_factor,
        reset_mechanism_val and beta."""
        name = type(self).__name__
        self._check_reset_mechanism(reset_mechanism)
        if inhibition:
            _reject(name, "inhibition", inhibition,
                    "it lets only the most excited neuron of a layer fire, which couples the neurons")
        if state_quant:
            _reject(name, "state_quant", state_quant,
                    "an arbitrary quantisation function cannot run inside the fused kernel")
        self.surrogate_disable = bool(surrogate_disable)
        self.surrogate = _surrogate.resolve(
            None if surrogate_disable else spike_grad, _surrogate.SNNTORCH_DEFAULT,
            f"snn_cuda.{name} spike_grad",
        )
        self.spike_grad = spike_grad
        self.init_hidden = init_hidden
        self.inhibition = False
        self.state_quant = False
        self.output = output
        self.reset_delay = reset_delay
        self.step_mode = check_step_mode(name, step_mode)
        # snnTorch's names and registration order, so that state_dicts load both ways.
        _tensor_param(self, "threshold", threshold, learn_threshold)
        _tensor_param(self, "graded_spikes_factor", graded_spikes_factor, learn_graded_spikes_factor)
        self.register_buffer("reset_mechanism_val", torch.as_tensor(_RESET_CODES[reset_mechanism]))
        self._reset_mechanism = reset_mechanism
        _tensor_param(self, "beta", beta, learn_beta)

    def _finish_init(self) -> None:
        """The state buffers (empty: "start from zeros"), the value checks, and the registries
        that the class-wide resets and snnTorch's utilities walk."""
        for name in self._states:
            self.register_buffer(name, torch.zeros(0), persistent=False)
        self._start_checking_constants()
        type(self)._live.add(self)
        snntorch = _peers.loaded("snntorch")
        if snntorch is not None and isinstance(self, snntorch.SpikingNeuron):
            snntorch.SpikingNeuron.instances.append(self)  # what snnTorch's reset_hidden walks

    @staticmethod
    def _check_reset_mechanism(reset_mechanism) -> None:
        if reset_mechanism not in _RESET_CODES:
            raise ValueError("reset_mechanism must be set to either 'subtract', 'zero', or 'none'.")

    @property
    def reset_mechanism(self) -> str:
        return self._reset_mechanism

    @reset_mechanism.setter
    def reset_mechanism(self, value: str) -> None:
        self._check_reset_mechanism(value)
        self.reset_mechanism_val = torch.as_tensor(_RESET_CODES[value], device=self.reset_mechanism_val.device)
        self._reset_mechanism = value

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # A loaded reset_mechanism_val decides the mechanism, as snnTorch intends.
        code = int(self.reset_mechanism_val)
        names = {v: k for k, v in _RESET_CODES.items()}
        if code not in names:
            raise ValueError(f"snn_cuda.{type(self).__name__}: the loaded reset_mechanism_val {code} is not 0, 1 or 2")
        self._reset_mechanism = names[code]

    @classmethod
    def reset_hidden(cls) -> None:
        """Zeroes the state of every neuron of this class (class-wide, as snnTorch's)."""
        for neuron in list(cls._live):
            if isinstance(neuron, cls):
                for name in neuron._states:
                    state = getattr(neuron, name)
                    setattr(neuron, name, torch.zeros_like(state, device=state.device))

    @classmethod
    def detach_hidden(cls) -> None:
        """Detaches the state of every neuron of this class from its graph (truncated BPTT)."""
        for neuron in list(cls._live):
            if isinstance(neuron, cls):
                for name in neuron._states:
                    getattr(neuron, name).detach_()

    def _graded(self, spk: torch.Tensor) -> torch.Tensor:
        if self.surrogate_disable:
            spk = spk.detach()
        factor = self.graded_spikes_factor
        # x * 1 == x exactly; skip the multiply only where reading the value costs no device sync
        # (and not while tracing, where the value is not known).
        if (factor.requires_grad or factor.device.type != "cpu" or factor.numel() != 1
                or torch.compiler.is_compiling() or float(factor) != 1.0):
            spk = spk * factor
        return spk

    def forward(self, input_: torch.Tensor, *states, **named_states):
        if self.step_mode == "m":
            return self.multi_step_forward(input_, *states, **named_states)
        return self.single_step_forward(input_, *states, **named_states)

    def _reset_now(self, spk, mem_t, initial, input_):
        """snnTorch's ``reset_delay=False``: after the kernel's step (whose charge applied the
        delayed reset r of the previous membrane), the spike of this step resets at once, less what
        r already did: ``mem - (spk - r) * threshold`` ("subtract") or ``mem - (spk - r) * mem``
        ("zero"); no change for "none". The spike's surrogate gradient flows through it, as there."""
        if self._reset_mechanism == "none":
            return mem_t
        if self.surrogate_disable:
            spk = spk.detach()
        previous = initial if initial is not None else torch.zeros_like(input_)
        r = (previous - self.threshold > 0).to(mem_t.dtype)
        do_reset = spk - r
        if self._reset_mechanism == "subtract":
            return mem_t - do_reset * self.threshold
        return mem_t - do_reset * mem_t

    def extra_repr(self) -> str:
        return (
            f"reset_mechanism={self._reset_mechanism!r}, surrogate={self.surrogate.name}"
            f"(alpha={self.surrogate.alpha:g}), init_hidden={self.init_hidden}, "
            f"output={self.output}, step_mode={self.step_mode!r}"
        )


@_peers.peer_compatible("snntorch", "Leaky")
class Leaky(_SnntorchNeuron):
    """snnTorch's ``Leaky`` neuron, fused.

    Arguments, calls, return values and state handling as ``snntorch.Leaky`` (snnTorch 1.0): per
    step, with ``r_t`` the previous step's detached spike (snnTorch's delayed reset)::

        reset_mechanism="subtract":  mem_t = beta * mem_{t-1} + x_t - r_t * threshold
        reset_mechanism="zero":      mem_t = beta * (1 - r_t) * mem_{t-1} + x_t
        reset_mechanism="none":      mem_t = beta * mem_{t-1} + x_t
        spk_t = H(mem_t - threshold) * graded_spikes_factor   (backward: the spike_grad surrogate)

    Called per step (the default, ``step_mode="s"``)::

        lif = snn_cuda.Leaky(beta=0.9)
        mem = lif.init_leaky()
        for step in range(T):
            spk, mem = lif(cur[step], mem)          # one fused kernel call per step

    or, with ``init_hidden=True``, inside an ``nn.Sequential`` that is called once per step (returns
    ``spk``, or ``(spk, mem)`` with ``output=True``); ``snntorch.utils.reset(net)``,
    ``reset_mem()``, ``Leaky.reset_hidden()`` and ``Leaky.detach_hidden()`` work as in snnTorch.

    The whole sequence in one kernel call: ``step_mode="m"`` (or :meth:`multi_step_forward`), which
    takes ``[T, batch, ...]`` and returns ``(spk, mem)`` stacked over time (``spk`` alone with
    ``init_hidden=True`` and not ``output``), continuing from ``self.mem``. A sequence is never
    inferred from the input's shape.

    ``beta`` (clamped to [0, 1] as in snnTorch), ``threshold`` and ``graded_spikes_factor`` may be
    floats or tensors broadcastable to one step, learnable with ``learn_beta`` /
    ``learn_threshold`` / ``learn_graded_spikes_factor``. ``spike_grad`` accepts snnTorch's
    ``surrogate.atan(...)``, ``fast_sigmoid(...)`` and ``sigmoid(...)`` and :mod:`snn_cuda.surrogate`
    objects; ``surrogate_disable=True`` passes no gradient through the spikes, as there. Parameter and
    buffer names are snnTorch's, so ``state_dict`` s load both ways.

    Differences: spikes have the input's dtype (snnTorch's are float32 for any input); setting
    ``reset_mechanism`` after construction takes effect (snnTorch keeps computing the mechanism it
    was built with unless ``reset_delay=False``). ``reset_delay=False`` (a spike resets the membrane
    in its own step, ``mem_t - (s_t - r_t) * threshold`` resp. ``mem_t - (s_t - r_t) * mem_t`` as
    snnTorch computes it, the spike's surrogate gradient flowing through it) is fused too, over a
    whole sequence in ``step_mode="m"`` (convention ``"snntorch_now"`` of :func:`snn_cuda.lif`).
    Not supported (``ValueError`` naming the option): ``inhibition`` (only the
    most excited neuron of a layer may fire, which couples the neurons), ``state_quant`` (an
    arbitrary quantisation function), surrogates other than atan / fast_sigmoid / sigmoid.
    """

    _live = weakref.WeakSet()  # every Leaky, for the class-wide reset_hidden / detach_hidden
    _states = ("mem",)

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
        *,
        step_mode: str = "s",
    ):
        nn.Module.__init__(self)  # not super(): with snnTorch installed the next base is its Leaky
        self._init_snntorch(beta, threshold, spike_grad, surrogate_disable, init_hidden, inhibition,
                            learn_beta, learn_threshold, reset_mechanism, state_quant, output,
                            graded_spikes_factor, learn_graded_spikes_factor, reset_delay, step_mode)
        self._finish_init()

    def _constant_rules(self):
        return {"beta": (False, ""), "threshold": (False, ""), "graded_spikes_factor": (False, "")}

    # State, as snnTorch: self.mem holds the membrane; a shape that does not fit the input means
    # "start from zeros" (init_leaky() and reset_mem() return an empty tensor for that).
    def reset_mem(self) -> torch.Tensor:
        self.mem = torch.zeros_like(self.mem, device=self.mem.device)
        return self.mem

    def init_leaky(self) -> torch.Tensor:
        """Deprecated in snnTorch; same as :meth:`reset_mem`."""
        return self.reset_mem()

    def _kernel_args(self):
        # reset_delay=False: the spike also resets the membrane in its own step ("snntorch_now",
        # fused over a whole sequence too); its gradient flows through that reset unless
        # surrogate_disable. The delayed reset is always detached, as in snnTorch.
        return dict(
            convention="snntorch" if self.reset_delay else "snntorch_now",
            reset={"subtract": "subtract", "zero": "hard", "none": "none"}[self._reset_mechanism],
            reset_value=0.0,
            detach_reset=True if self.reset_delay else self.surrogate_disable,
            surrogate=self.surrogate,
        )

    def _returns(self, spk, mem):
        if self.output:
            return spk, mem
        if self.init_hidden:
            return spk
        return spk, mem

    def _take_mem(self, mem, step_shape):
        if self.init_hidden and mem is not None:
            raise TypeError("`mem` should not be passed as an argument while `init_hidden=True`")
        if mem is not None:
            if not isinstance(mem, torch.Tensor):
                raise TypeError(f"snn_cuda.Leaky: mem must be a tensor or None, got {type(mem).__name__}")
            self.mem = mem
        if tuple(self.mem.shape) != tuple(step_shape):
            return None  # snnTorch starts from zeros (the kernel's default)
        return self.mem

    def single_step_forward(self, input_: torch.Tensor, mem: Optional[torch.Tensor] = None):
        """One time step, exactly as ``snntorch.Leaky.forward(input_, mem)``."""
        if not isinstance(input_, torch.Tensor):
            raise TypeError(f"snn_cuda.Leaky: input_ must be a tensor, got {type(input_).__name__}")
        initial = self._take_mem(mem, input_.shape)
        spk, mem_t = lif_step(input_, self.beta.clamp(0, 1), self.threshold, initial=initial,
                              **self._kernel_args())
        self.mem = mem_t
        return self._returns(self._graded(spk), mem_t)

    def multi_step_forward(self, input_: torch.Tensor, mem: Optional[torch.Tensor] = None):
        """The whole sequence ``[T, batch, ...]`` in one kernel call: what calling the module once
        per step and stacking the results gives, and the same state afterwards."""
        if not isinstance(input_, torch.Tensor) or input_.dim() < 2:
            raise ValueError(
                "snn_cuda.Leaky: a multi-step input must be a whole sequence [T, batch, ...] "
                f"(at least 2 dims); got {_describe(input_)}. For one step, use step_mode='s'."
            )
        initial = self._take_mem(mem, input_.shape[1:])
        spk, mem_rec, last = lif(input_, self.beta.clamp(0, 1), self.threshold, initial=initial,
                                 return_state=True, **self._kernel_args())
        if input_.shape[0] > 0:
            self.mem = last  # a tensor of its own (not a view): detach_hidden() detaches it in place
        return self._returns(self._graded(spk), mem_rec)


@_peers.peer_compatible("snntorch", "Synaptic")
class Synaptic(_SnntorchNeuron):
    """snnTorch's ``Synaptic`` neuron (current-based, second-order LIF), fused.

    Arguments, calls, return values and state handling as ``snntorch.Synaptic`` (snnTorch 1.0): per
    step, with ``r_t`` the previous membrane's detached spike (snnTorch's delayed reset)::

        syn_t = alpha * syn_{t-1} + x_t
        reset_mechanism="subtract":  mem_t = beta * mem_{t-1} + syn_t - r_t * threshold
        reset_mechanism="zero":      mem_t = (beta * mem_{t-1} + syn_t) * (1 - r_t)
        reset_mechanism="none":      mem_t = beta * mem_{t-1} + syn_t
        spk_t = H(mem_t - threshold)   (backward: the spike_grad surrogate)

    Called per step (the default, ``step_mode="s"``)::

        lif = snn_cuda.Synaptic(alpha=0.9, beta=0.8)
        syn, mem = lif.reset_mem()
        for step in range(T):
            spk, syn, mem = lif(cur[step], syn, mem)     # one fused kernel call per step

    or with ``init_hidden=True`` inside an ``nn.Sequential`` called once per step (returns ``spk``,
    or ``(spk, syn, mem)`` with ``output=True``); ``snntorch.utils.reset(net)``, ``reset_mem()``,
    ``Synaptic.reset_hidden()`` and ``Synaptic.detach_hidden()`` work as in snnTorch. The whole
    sequence in one kernel call: ``step_mode="m"`` (or :meth:`multi_step_forward`), which takes
    ``[T, batch, ...]`` and returns ``(spk, syn, mem)`` stacked over time (``spk`` alone with
    ``init_hidden=True`` and not ``output``), continuing from ``self.syn`` / ``self.mem``.

    ``alpha`` and ``beta`` (clamped to [0, 1] in the forward, as in snnTorch) and ``threshold`` may
    be floats or tensors broadcastable to one step, learnable with ``learn_alpha`` /
    ``learn_beta`` / ``learn_threshold``. ``reset_delay=False`` runs one fused kernel call per step
    plus the immediate reset (not fused over time, unlike :class:`Leaky`). Parameter and buffer
    names are snnTorch's, so ``state_dict`` s load both ways. Not supported (``ValueError`` naming the option):
    ``inhibition``, ``state_quant``, surrogates other than atan / fast_sigmoid / sigmoid. Spikes,
    ``syn`` and ``mem`` have the input's dtype (snnTorch's membrane becomes float32 for float16
    input).
    """

    _live = weakref.WeakSet()  # every Synaptic, for the class-wide reset_hidden / detach_hidden
    _states = ("syn", "mem")

    def __init__(
        self,
        alpha,
        beta,
        threshold=1.0,
        spike_grad=None,
        surrogate_disable: bool = False,
        init_hidden: bool = False,
        inhibition: bool = False,
        learn_alpha: bool = False,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        reset_mechanism: str = "subtract",
        state_quant=False,
        output: bool = False,
        reset_delay: bool = True,
        *,
        step_mode: str = "s",
    ):
        nn.Module.__init__(self)  # not super(): with snnTorch installed the next base is its own
        self._init_snntorch(beta, threshold, spike_grad, surrogate_disable, init_hidden, inhibition,
                            learn_beta, learn_threshold, reset_mechanism, state_quant, output,
                            1.0, False, reset_delay, step_mode)
        _tensor_param(self, "alpha", alpha, learn_alpha)
        self._finish_init()

    def _constant_rules(self):
        return {"alpha": (False, ""), "beta": (False, ""), "threshold": (False, ""),
                "graded_spikes_factor": (False, "")}

    # State, as snnTorch: self.syn and self.mem; a shape that does not fit the input means "start
    # from zeros" (reset_mem() returns empty tensors for that), for each on its own.
    def reset_mem(self):
        self.syn = torch.zeros_like(self.syn, device=self.syn.device)
        self.mem = torch.zeros_like(self.mem, device=self.mem.device)
        return self.syn, self.mem

    def init_synaptic(self):
        """Deprecated in snnTorch; same as :meth:`reset_mem`."""
        return self.reset_mem()

    def _returns(self, spk, syn, mem):
        if self.output:
            return spk, syn, mem
        if self.init_hidden:
            return spk
        return spk, syn, mem

    def _take_states(self, syn, mem, step_shape):
        if self.init_hidden and (syn is not None or mem is not None):
            raise TypeError("`mem` or `syn` should not be passed as an argument while `init_hidden=True`")
        for name, value in (("syn", syn), ("mem", mem)):
            if value is not None:
                if not isinstance(value, torch.Tensor):
                    raise TypeError(f"snn_cuda.Synaptic: {name} must be a tensor or None, got "
                                    f"{type(value).__name__}")
                setattr(self, name, value)
        return tuple(None if tuple(state.shape) != tuple(step_shape) else state  # zeros
                     for state in (self.syn, self.mem))

    def _constants(self):
        return self.alpha.clamp(0, 1), self.beta.clamp(0, 1), self.threshold

    def single_step_forward(self, input_: torch.Tensor, syn: Optional[torch.Tensor] = None,
                            mem: Optional[torch.Tensor] = None):
        """One time step, exactly as ``snntorch.Synaptic.forward(input_, syn, mem)``."""
        if not isinstance(input_, torch.Tensor):
            raise TypeError(f"snn_cuda.Synaptic: input_ must be a tensor, got {type(input_).__name__}")
        initial = self._take_states(syn, mem, input_.shape)
        spk, syn_t, mem_t = synaptic_step(input_, *self._constants(), reset=self._reset_mechanism,
                                          surrogate=self.surrogate, initial=initial)
        if not self.reset_delay:
            mem_t = self._reset_now(spk, mem_t, initial[1], input_)
        self.syn, self.mem = syn_t, mem_t
        return self._returns(self._graded(spk), syn_t, mem_t)

    def multi_step_forward(self, input_: torch.Tensor, syn: Optional[torch.Tensor] = None,
                           mem: Optional[torch.Tensor] = None):
        """The whole sequence ``[T, batch, ...]`` in one kernel call: what calling the module once
        per step and stacking the results gives, and the same state afterwards."""
        if not isinstance(input_, torch.Tensor) or input_.dim() < 2:
            raise ValueError(
                "snn_cuda.Synaptic: a multi-step input must be a whole sequence [T, batch, ...] "
                f"(at least 2 dims); got {_describe(input_)}. For one step, use step_mode='s'."
            )
        initial = self._take_states(syn, mem, input_.shape[1:])
        if not self.reset_delay:
            # The immediate reset feeds the next step's charge: one fused kernel call per step.
            return self._steps_immediate_reset(input_, initial)
        spk, syn_rec, mem_rec, (syn_last, mem_last) = synaptic(
            input_, *self._constants(), reset=self._reset_mechanism, surrogate=self.surrogate,
            initial=initial, return_state=True,
        )
        if input_.shape[0] > 0:
            self.syn, self.mem = syn_last, mem_last  # tensors of their own: detach_hidden() works
        return self._returns(self._graded(spk), syn_rec, mem_rec)

    def _steps_immediate_reset(self, input_, initial):
        rows = ([], [], [])
        constants = self._constants()
        syn, mem = initial
        for step in input_.unbind(0):
            spk, syn_t, mem_t = synaptic_step(step, *constants, reset=self._reset_mechanism,
                                              surrogate=self.surrogate, initial=(syn, mem))
            mem_t = self._reset_now(spk, mem_t, mem, step)
            for row, value in zip(rows, (spk, syn_t, mem_t)):
                row.append(value)
            syn, mem = syn_t, mem_t
        if not rows[0]:
            return self._returns(*(input_.new_empty(input_.shape) for _ in range(3)))
        self.syn, self.mem = syn, mem
        spikes, syns, mems = (torch.stack(row) for row in rows)
        return self._returns(self._graded(spikes), syns, mems)



class _RecurrentOneToOne(nn.Module):
    """snnTorch's ``RecurrentOneToOne``: the previous spike times ``V`` (its ``recurrent``
    submodule with ``all_to_all=False``, so that state_dict keys match)."""

    def __init__(self, V):
        super().__init__()
        self.V = V

    def forward(self, x):
        return x * self.V


@_peers.peer_compatible("snntorch", "RLeaky")
class RLeaky(_SnntorchNeuron):
    """snnTorch's ``RLeaky`` (Leaky with recurrent feedback of its own spikes), fused.

    Arguments, calls, return values and state handling as ``snntorch.RLeaky`` (snnTorch 1.0): per
    step, with ``r_t`` the previous membrane's detached spike and ``s_{t-1}`` the previous spike
    (with its surrogate gradient)::

        mem_t = (beta * mem_{t-1} + x_t) + recurrent(s_{t-1}) - r_t * threshold    ("subtract";
                "zero" multiplies by (1 - r_t) as b - r_t * b, "none" leaves it out)
        s_t   = H(mem_t - threshold)

    ``all_to_all=False``: ``recurrent(s) = V * s`` elementwise (``V`` per layer or per neuron,
    learnable with ``learn_recurrent``), fused over the whole sequence in one kernel call with
    ``step_mode="m"``. ``all_to_all=True``: ``recurrent`` is an ``nn.Linear(linear_features,
    linear_features)`` or ``nn.Conv2d(conv2d_channels, conv2d_channels, kernel_size)``; each step
    is one call of that layer plus one fused step (also in ``step_mode="m"``: the matrix product
    needs the previous step's spikes).

    ``reset_delay=False`` (what snnTorch's NIR importer builds): the spike also resets the membrane
    in its own step, ``mem_t - (s_t - r_t) * threshold`` ("subtract") or ``mem_t - (s_t - r_t) *
    mem_t`` ("zero"), as snnTorch; one fused step per step, also in ``step_mode="m"``.

    Called per step: ``spk, mem = rlif(cur, spk, mem)`` (``spk, mem = rlif.reset_mem()`` first), or
    with ``init_hidden=True`` inside an ``nn.Sequential``. ``snntorch.utils.reset``,
    ``RLeaky.reset_hidden()`` / ``detach_hidden()`` and state_dict keys work as in snnTorch. Not
    supported (``ValueError``): ``inhibition``, ``state_quant``, ``surrogate_disable`` (the
    recurrent spike carries the surrogate gradient), a ``graded_spikes_factor`` other than 1
    (RLeaky takes none as an argument).
    """

    _live = weakref.WeakSet()
    _states = ("spk", "mem")

    def __init__(self, beta, V=1.0, all_to_all: bool = True, linear_features=None,
                 conv2d_channels=None, kernel_size=None, threshold=1.0, spike_grad=None,
                 surrogate_disable: bool = False, init_hidden: bool = False,
                 inhibition: bool = False, learn_beta: bool = False, learn_threshold: bool = False,
                 learn_recurrent: bool = True, reset_mechanism: str = "subtract", state_quant=False,
                 output: bool = False, reset_delay: bool = True, *, step_mode: str = "s"):
        nn.Module.__init__(self)  # not super(): with snnTorch installed the next base is its own
        if surrogate_disable:
            _reject("RLeaky", "surrogate_disable", surrogate_disable,
                    "the recurrent spike carries the surrogate gradient into the next step")
        self._check_recurrent_options(all_to_all, linear_features, conv2d_channels, kernel_size)
        self._init_snntorch(beta, threshold, spike_grad, surrogate_disable, init_hidden, inhibition,
                            learn_beta, learn_threshold, reset_mechanism, state_quant, output,
                            1.0, False, reset_delay, step_mode)
        self._init_recurrent(V, all_to_all, linear_features, conv2d_channels, kernel_size,
                             learn_recurrent)
        self._finish_init()

    def _init_recurrent(self, V, all_to_all, linear_features, conv2d_channels, kernel_size,
                        learn_recurrent) -> None:
        """snnTorch's recurrent connection: ``recurrent`` (and ``V`` with one-to-one)."""
        self.all_to_all = all_to_all
        self.learn_recurrent = learn_recurrent
        self.linear_features = linear_features
        self.conv2d_channels = conv2d_channels
        self.kernel_size = kernel_size
        if all_to_all:
            if linear_features:
                self.recurrent = nn.Linear(linear_features, linear_features)
            else:
                k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
                self.recurrent = nn.Conv2d(conv2d_channels, conv2d_channels, kernel_size,
                                           padding=(k[0] // 2, k[1] // 2))
        else:
            _tensor_param(self, "V", V, learn_recurrent)
            self.recurrent = _RecurrentOneToOne(self.V)
        if not learn_recurrent:
            for param in self.recurrent.parameters():
                param.requires_grad = False

    @staticmethod
    def _check_recurrent_options(all_to_all, linear_features, conv2d_channels, kernel_size):
        if all_to_all:
            if not linear_features and not (conv2d_channels and kernel_size):
                raise TypeError("When `all_to_all=True`, RLeaky requires either `linear_features` "
                                "or (`conv2d_channels` and `kernel_size`) to be specified.")
            if linear_features and (conv2d_channels or kernel_size):
                raise TypeError("`linear_features` cannot be specified at the same time as "
                                "`conv2d_channels` or `kernel_size`.")
        elif linear_features or conv2d_channels or kernel_size:
            raise TypeError("When `all_to_all`=False, none of `linear_features`, `conv2d_channels`, "
                            "or `kernel_size` should be specified. The weight `V` is used instead.")

    def _constant_rules(self):
        rules = {"beta": (False, ""), "threshold": (False, ""), "graded_spikes_factor": (False, "")}
        if not self.__dict__.get("all_to_all", True):  # V exists with one-to-one recurrence only
            rules["V"] = (False, "")
        return rules

    def _check_constant(self, name, value, positive, why, what=""):
        super()._check_constant(name, value, positive, why, what)
        if name == "graded_spikes_factor" and isinstance(value, torch.Tensor) and not (
            value.numel() == 1 and not value.requires_grad and float(value) == 1.0
        ):
            raise ValueError("snn_cuda.RLeaky: graded_spikes_factor must stay 1 (the recurrent "
                             "spike would be scaled by it; not supported)")

    def reset_mem(self):
        for name in self._states:
            state = getattr(self, name)
            setattr(self, name, torch.zeros_like(state, device=state.device))
        return tuple(getattr(self, name) for name in self._states)

    def init_rleaky(self):
        """Deprecated in snnTorch; same as :meth:`reset_mem`."""
        return self.reset_mem()

    def _returns(self, *values):
        """snnTorch's return convention: all of (spk, [syn,] mem), or spk alone with init_hidden
        (unless output)."""
        if self.init_hidden and not self.output:
            return values[0]
        return values

    # snnTorch's message (its spacing) when init_hidden=True and states are passed.
    _init_hidden_error = "When `init_hidden=True`,RLeaky expects 1 input argument."

    def _take_states(self, given, step_shape):
        """The states given to a call (stored, as snnTorch stores them) and what the kernel starts
        from: each stored state, or None (zeros) where its shape does not fit one step."""
        if self.init_hidden and any(value is not None for value in given):
            raise TypeError(self._init_hidden_error)
        for name, value in zip(self._states, given):
            if value is not None:
                if not isinstance(value, torch.Tensor):
                    raise TypeError(f"snn_cuda.{type(self).__name__}: {name} must be a tensor or "
                                    f"None, got {type(value).__name__}")
                setattr(self, name, value)
        return [None if tuple(getattr(self, name).shape) != tuple(step_shape) else getattr(self, name)
                for name in self._states]

    def _run(self, input_, initial):
        """The fused call over ``input_`` [T, ...] from ``initial`` (one per state): the rows and
        the states after the last step. With all_to_all only one step (T = 1): the recurrent layer
        turns the previous spikes into the input of ``V = 1``."""
        beta = self.beta.clamp(0, 1)
        if self.all_to_all:
            spk = initial[0] if initial[0] is not None else torch.zeros_like(input_[0])
            return rleaky(input_, beta, 1.0, self.threshold, reset=self._reset_mechanism,
                          surrogate=self.surrogate, initial=(self.recurrent(spk), *initial[1:]),
                          return_state=True)
        return rleaky(input_, beta, self.V, self.threshold, reset=self._reset_mechanism,
                      surrogate=self.surrogate, initial=tuple(initial), return_state=True)

    def _check_factor_unchanged(self) -> None:
        """graded_spikes_factor is checked when assigned or loaded; an in-place change (which
        bumps the tensor's version counter) is checked here, once per change, before a call."""
        if torch.compiler.is_compiling():
            return
        factor = self.graded_spikes_factor
        if self.__dict__.get("_factor_version") != (id(factor), factor._version):
            self._check_constant("graded_spikes_factor", factor, False, "")
            self.__dict__["_factor_version"] = (id(factor), factor._version)

    def _one_step(self, input_, initial):
        """One step on ``input_`` [*batch, ...]: the states after it, fresh tensors of its shape."""
        step_shape = tuple(input_.shape)
        sequence = input_.reshape(1, *step_shape) if input_.dim() > 0 else input_.reshape(1, 1)
        *_, last = self._run(sequence, [t.reshape(sequence.shape[1:]) if isinstance(t, torch.Tensor)
                                        else t for t in initial])
        fresh = torch.ops.aten._unsafe_view
        last = [t if tuple(t.shape) == step_shape else fresh(t, step_shape) for t in last]
        if not self.reset_delay:  # the spike resets the membrane in its own step
            last[-1] = self._reset_now(last[0], last[-1], initial[-1], input_)
        return last

    def _single(self, input_, given):
        if not isinstance(input_, torch.Tensor):
            raise TypeError(f"snn_cuda.{type(self).__name__}: input_ must be a tensor, got "
                            f"{type(input_).__name__}")
        self._check_factor_unchanged()
        states = self._one_step(input_, self._take_states(given, input_.shape))
        for name, value in zip(self._states, states):
            setattr(self, name, value)
        return self._returns(*states)

    def _multi(self, input_, given):
        if not isinstance(input_, torch.Tensor) or input_.dim() < 2:
            raise ValueError(
                f"snn_cuda.{type(self).__name__}: a multi-step input must be a whole sequence "
                f"[T, batch, ...] (at least 2 dims); got {_describe(input_)}. For one step, use "
                "step_mode='s'."
            )
        self._check_factor_unchanged()
        states = self._take_states(given, input_.shape[1:])
        if not self.all_to_all and self.reset_delay:
            *rows, last = self._run(input_, states)
            if input_.shape[0] > 0:
                for name, value in zip(self._states, last):
                    setattr(self, name, value)
            return self._returns(*rows)
        rows = tuple([] for _ in self._states)  # the rows of these models are their states
        for step in input_.unbind(0):
            states = self._one_step(step, states)
            for row, value in zip(rows, states):
                row.append(value)
        if not rows[0]:
            return self._returns(*(input_.new_empty(input_.shape) for _ in rows))
        for name, value in zip(self._states, states):
            setattr(self, name, value)
        return self._returns(*(torch.stack(row) for row in rows))

    def single_step_forward(self, input_: torch.Tensor, spk: Optional[torch.Tensor] = None,
                            mem: Optional[torch.Tensor] = None):
        """One time step, exactly as ``snntorch.RLeaky.forward(input_, spk, mem)``."""
        return self._single(input_, (spk, mem))

    def multi_step_forward(self, input_: torch.Tensor, spk: Optional[torch.Tensor] = None,
                           mem: Optional[torch.Tensor] = None):
        """The whole sequence ``[T, batch, ...]``: one kernel call (``all_to_all=False``) or one
        recurrent layer call and one fused step per step (``all_to_all=True``); what calling the
        module once per step and stacking the results gives, and the same state afterwards."""
        return self._multi(input_, (spk, mem))


@_peers.peer_compatible("snntorch", "RSynaptic")
class RSynaptic(RLeaky):
    """snnTorch's ``RSynaptic`` (Synaptic with recurrent feedback of its spikes into the synaptic
    current), fused. Arguments, calls (``spk, syn, mem = rsyn(cur, spk, syn, mem)``), state handling
    and options as ``snntorch.RSynaptic`` and :class:`RLeaky`; per step::

        syn_t = ((alpha * syn_{t-1}) + x_t) + recurrent(s_{t-1})
        mem_t = beta * mem_{t-1} + syn_t - r_t * threshold   (or "zero" / "none", as Synaptic)
        s_t   = H(mem_t - threshold)

    ``all_to_all=False`` is fused over the whole sequence (``step_mode="m"``); ``all_to_all=True``
    runs one recurrent layer call and one fused step per step. ``reset_delay=False``: the spike
    also resets ``mem`` in its own step, as :class:`RLeaky` and :class:`Synaptic` do (one fused
    step per step). snnTorch 1.0's own ``RSynaptic(reset_delay=False)`` cannot run: its reset
    divides the ``spk`` argument (``None`` with ``init_hidden``: a ``TypeError``; the empty state
    of ``reset_mem()``: a shape error) and, given a spike, writes the reset into a local variable it
    does not return; ours computes what its code means to (the reset of ``Synaptic``). Not
    supported, as for :class:`RLeaky`: ``inhibition``, ``state_quant``, ``surrogate_disable``.
    """

    _live = weakref.WeakSet()
    _states = ("spk", "syn", "mem")

    def __init__(self, alpha, beta, V=1.0, all_to_all: bool = True, linear_features=None,
                 conv2d_channels=None, kernel_size=None, threshold=1.0, spike_grad=None,
                 surrogate_disable: bool = False, init_hidden: bool = False,
                 inhibition: bool = False, learn_alpha: bool = False, learn_beta: bool = False,
                 learn_threshold: bool = False, learn_recurrent: bool = True,
                 reset_mechanism: str = "subtract", state_quant=False, output: bool = False,
                 reset_delay: bool = True, *, step_mode: str = "s"):
        nn.Module.__init__(self)  # not super(): with snnTorch installed the next base is its own
        if surrogate_disable:
            _reject("RSynaptic", "surrogate_disable", surrogate_disable,
                    "the recurrent spike carries the surrogate gradient into the next step")
        self._check_recurrent_options(all_to_all, linear_features, conv2d_channels, kernel_size)
        self._init_snntorch(beta, threshold, spike_grad, surrogate_disable, init_hidden, inhibition,
                            learn_beta, learn_threshold, reset_mechanism, state_quant, output,
                            1.0, False, reset_delay, step_mode)
        _tensor_param(self, "alpha", alpha, learn_alpha)
        self._init_recurrent(V, all_to_all, linear_features, conv2d_channels, kernel_size,
                             learn_recurrent)
        self._finish_init()

    def _constant_rules(self):
        rules = super()._constant_rules()
        rules["alpha"] = (False, "")
        return rules

    def init_rsynaptic(self):
        """Deprecated in snnTorch; same as :meth:`reset_mem`."""
        return self.reset_mem()

    _init_hidden_error = "When `init_hidden=True`, RSynaptic expects 1 input argument."

    def _run(self, input_, initial):
        """As :meth:`RLeaky._run`, with (spk, syn, mem)."""
        alpha, beta = self.alpha.clamp(0, 1), self.beta.clamp(0, 1)
        if self.all_to_all:
            spk = initial[0] if initial[0] is not None else torch.zeros_like(input_[0])
            return rsynaptic(input_, alpha, beta, 1.0, self.threshold, reset=self._reset_mechanism,
                             surrogate=self.surrogate, initial=(self.recurrent(spk), *initial[1:]),
                             return_state=True)
        return rsynaptic(input_, alpha, beta, self.V, self.threshold, reset=self._reset_mechanism,
                         surrogate=self.surrogate, initial=tuple(initial), return_state=True)

    def single_step_forward(self, input_: torch.Tensor, spk: Optional[torch.Tensor] = None,
                            syn: Optional[torch.Tensor] = None, mem: Optional[torch.Tensor] = None):
        """One time step, exactly as ``snntorch.RSynaptic.forward(input_, spk, syn, mem)``."""
        return self._single(input_, (spk, syn, mem))

    def multi_step_forward(self, input_: torch.Tensor, spk: Optional[torch.Tensor] = None,
                           syn: Optional[torch.Tensor] = None, mem: Optional[torch.Tensor] = None):
        """The whole sequence ``[T, batch, ...]``: one kernel call (``all_to_all=False``) or one
        recurrent layer call and one fused step per step (``all_to_all=True``)."""
        return self._multi(input_, (spk, syn, mem))


# ------------------------------------------------------------------------------------------------
# SpikingJelly


@_peers.peer_compatible("spikingjelly.activation_based.base", "MemoryModule")
class MemoryModule(_PeerCompatible):
    """SpikingJelly's memory-module protocol: state declared with :meth:`register_memory` lives in
    ``_memories``, reads and writes as an attribute, and is reset / detached by :meth:`reset` /
    :meth:`detach` (which ``functional.reset_net`` / ``detach_net`` call); ``step_mode`` chooses
    between :meth:`single_step_forward` and :meth:`multi_step_forward`. With SpikingJelly
    installed, instances are also ``spikingjelly.activation_based.base.MemoryModule`` s."""

    def __init__(self):
        nn.Module.__init__(self)  # not super(): with SpikingJelly installed the next base is its own
        self._memories = {}
        self._memories_rv = {}
        self._step_mode = "s"

    def supported_step_mode(self):
        return STEP_MODES

    @property
    def step_mode(self) -> str:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        if value not in self.supported_step_mode():
            raise ValueError(
                f"snn_cuda.{type(self).__name__}: step_mode must be one of "
                f"{self.supported_step_mode()} ('s': one step [N, ...] per call, 'm': a sequence "
                f"[T, N, ...] per call), got {value!r}"
            )
        self._step_mode = value

    def forward(self, *args, **kwargs):
        if self._step_mode == "s":
            return self.single_step_forward(*args, **kwargs)
        return self.multi_step_forward(*args, **kwargs)

    def register_memory(self, name: str, value) -> None:
        if hasattr(self, name):
            raise AttributeError(f"{name} is already an attribute of {type(self).__name__}")
        self._memories[name] = value
        self.set_reset_value(name, value)

    def set_reset_value(self, name: str, value) -> None:
        self._memories_rv[name] = copy.deepcopy(value)

    def get_reset_value(self, name: str):
        if name not in self._memories:
            raise KeyError(f"{name} is not a registered memory")
        return self._memories_rv[name]

    def reset(self) -> None:
        """Every memory back to its reset value (a float reset value replaces a tensor state)."""
        for name, rv in self._memories_rv.items():
            self._memories[name] = rv if isinstance(rv, (int, float)) else copy.deepcopy(rv)

    def detach(self) -> None:
        """Cuts every tensor memory from the graph of earlier steps (truncated BPTT)."""
        for name, value in self._memories.items():
            if isinstance(value, torch.Tensor):
                self._memories[name] = value.detach()

    def memories(self):
        yield from self._memories.values()

    def named_memories(self):
        yield from self._memories.items()

    def __getattr__(self, name: str):
        memories = self.__dict__.get("_memories")
        if memories is not None and name in memories:
            return memories[name]
        return super().__getattr__(name)

    def __setattr__(self, name: str, value) -> None:
        memories = self.__dict__.get("_memories")
        if memories is not None and name in memories:
            memories[name] = value
        else:
            super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if name in self.__dict__.get("_memories", {}):
            del self._memories[name]
            del self._memories_rv[name]
        else:
            super().__delattr__(name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._memories))

    def _apply(self, fn, *args, **kwargs):
        for store in (self._memories, self._memories_rv):
            for name, value in store.items():
                if isinstance(value, torch.Tensor):
                    store[name] = fn(value)
        return super()._apply(fn, *args, **kwargs)

    def _replicate_for_data_parallel(self):
        replica = super()._replicate_for_data_parallel()
        replica._memories = self._memories.copy()
        return replica


class LIFNode(CheckedConstants, MemoryModule):
    """SpikingJelly's ``LIFNode``, fused.

    Arguments as ``spikingjelly.activation_based.neuron.LIFNode`` (SpikingJelly 2.0)::

        decay_input:  H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau
        otherwise:    H[t] = V[t-1] - (V[t-1] - V_reset) / tau + X[t]
        S[t] = H(H[t] - v_threshold)          (backward: ``surrogate_function``; default Sigmoid(4))
        v_reset=None (soft):  V[t] = H[t] - S[t] * v_threshold      (V_reset = 0 in the charge)
        v_reset=float (hard): V[t] = S[t] * v_reset + (1 - S[t]) * H[t]

    A SpikingJelly memory module: ``step_mode="s"`` (the default) takes one step ``[N, ...]`` per
    call, ``"m"`` a sequence ``[T, N, ...]`` in one kernel call; the membrane ``v`` is a registered
    memory that persists between calls until :meth:`reset` (``functional.reset_net``), is cut from
    the graph by :meth:`detach` (``functional.detach_net``, for truncated BPTT), and a state that
    does not fit the next input restarts from rest, as there. ``store_v_seq`` keeps ``v_seq`` (the
    V of every step of the last multi-step call, or of every single-step call since the last reset).
    ``surrogate_function`` accepts SpikingJelly's ``Sigmoid``, ``ATan`` and ``SuperSpike`` (and
    :mod:`snn_cuda.surrogate` objects).

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
        check_flag(decay_input, "decay_input", "snn_cuda.LIFNode")
        self.decay_input = decay_input
        self._register_constant("tau", tau, learn_tau)
        self._init_node(v_threshold, v_reset, surrogate_function, detach_reset, step_mode,
                        store_v_seq, learn_threshold)

    def _init_node(self, v_threshold, v_reset, surrogate_function, detach_reset, step_mode,
                   store_v_seq, learn_threshold) -> None:
        """What LIFNode and IFNode set up alike."""
        name = f"snn_cuda.{type(self).__name__}"
        if v_reset is not None and (isinstance(v_reset, bool) or not isinstance(v_reset, (int, float))):
            raise ValueError(f"{name}: v_reset must be a float or None, got {v_reset!r}")
        self.step_mode = step_mode
        self.surrogate_function = _surrogate.resolve(
            surrogate_function, _surrogate.SPIKINGJELLY_DEFAULT, f"{name} surrogate_function"
        )
        check_flag(detach_reset, "detach_reset", name)
        check_flag(store_v_seq, "store_v_seq", name)
        self.v_reset = None if v_reset is None else float(v_reset)
        self.detach_reset = detach_reset
        self._register_constant("v_threshold", v_threshold, learn_threshold)
        self.register_memory("v", 0.0 if self.v_reset is None else self.v_reset)
        self.store_v_seq = store_v_seq
        self._start_checking_constants()

    _optional_constants = ("v_reset",)

    def _constant_rules(self):
        return {"tau": (True, TAU_WHY.replace('with convention "spikingjelly" decay is tau, and ', "")),
                "v_threshold": (False, ""), "v_reset": (False, "")}

    def _register_constant(self, name: str, value, learn: bool) -> None:
        """A float stays a float (as in SpikingJelly); a tensor becomes a buffer, or a Parameter
        when learnable, so that ``.to(device)`` moves it."""
        self._check_constant(name, value, False, "")
        if learn:
            tensor = value.detach().clone() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            setattr(self, name, nn.Parameter(tensor))
        elif isinstance(value, torch.Tensor):
            self.register_buffer(name, value)
        else:
            setattr(self, name, float(value))

    @property
    def store_v_seq(self) -> bool:
        return self._store_v_seq

    @store_v_seq.setter
    def store_v_seq(self, value: bool) -> None:
        self._store_v_seq = bool(value)
        self.v_seq = None

    def reset(self) -> None:
        """Back to rest: ``v = v_reset`` (0 for a soft reset), ``v_seq`` cleared."""
        super().reset()
        self.v_seq = None

    def detach(self) -> None:
        super().detach()
        if isinstance(self.v_seq, torch.Tensor):
            self.v_seq = self.v_seq.detach()

    def _initial(self, step: torch.Tensor) -> Optional[torch.Tensor]:
        """The membrane before this call: ``self.v`` (a float at rest, else the last call's V); a
        tensor that does not fit this input's step restarts from rest, as in SpikingJelly."""
        v = self.v
        if isinstance(v, torch.Tensor) and tuple(v.shape) == tuple(step.shape):
            return v
        if isinstance(v, torch.Tensor):
            v = 0.0 if self.v_reset is None else self.v_reset
        if float(v) == 0.0:
            return None  # the kernel's default
        return torch.full_like(step, float(v))

    def _after_reset(self, h: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        """V[t] from H[t] and S[t] (exactly the kernel's arithmetic)."""
        s = spikes.detach() if self.detach_reset else spikes
        threshold = self.v_threshold
        if isinstance(threshold, torch.Tensor):
            threshold = threshold.to(h.dtype)
        if self.v_reset is None:
            return h - s * threshold
        return s * self.v_reset + (1.0 - s) * h

    def _kernel_args(self, step: torch.Tensor):
        return dict(
            reset="subtract" if self.v_reset is None else "hard",
            reset_value=0.0 if self.v_reset is None else self.v_reset,
            detach_reset=self.detach_reset,
            surrogate=self.surrogate_function,
            initial=self._initial(step),
            **self._charge_args(),
        )

    def _charge_args(self):
        return dict(convention="spikingjelly", decay_input=self.decay_input)

    def _decay(self):
        return self.tau

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not isinstance(x_seq, torch.Tensor) or x_seq.dim() < 2:
            raise ValueError(
                f"snn_cuda.{type(self).__name__}: a multi-step input must be a sequence [T, N, ...] (at least 2 "
                f"dims); got {_describe(x_seq)}. For one step, use step_mode='s'."
            )
        if x_seq.shape[0] == 0:
            raise ValueError(f"snn_cuda.{type(self).__name__}: the sequence is empty (T = 0)")
        spikes, h, v = lif(x_seq, self._decay(), self.v_threshold, return_state=True,
                           **self._kernel_args(x_seq[0]))
        self.v = v  # V after the last step's reset, from the kernel
        self.v_seq = self._after_reset(h, spikes) if self.store_v_seq else None
        return spikes

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"snn_cuda.{type(self).__name__}: the input must be a tensor [N, ...], "
                            f"got {type(x).__name__}")
        spikes, _, self.v = lif_step(x, self._decay(), self.v_threshold, return_state=True,
                                     **self._kernel_args(x))
        if self.store_v_seq:
            step = self.v.unsqueeze(0)
            seq = self.v_seq
            if seq is None or seq.shape[1:] != step.shape[1:] or seq.dtype != step.dtype or seq.device != step.device:
                self.v_seq = step.clone()
            else:
                self.v_seq = torch.cat((seq, step))
        return spikes

    def extra_repr(self) -> str:
        return self._charge_repr() + (
            f"v_threshold={_shown(self.v_threshold)}, v_reset={self.v_reset}, "
            f"detach_reset={self.detach_reset}, step_mode={self.step_mode}, "
            f"surrogate={self.surrogate_function.name}(alpha={self.surrogate_function.alpha:g})"
        )

    def _charge_repr(self) -> str:
        return f"tau={_shown(self.tau)}, decay_input={self.decay_input}, "


class IFNode(LIFNode):
    """SpikingJelly's ``IFNode``, fused: :class:`LIFNode` without the leak.

    Arguments as ``spikingjelly.activation_based.neuron.IFNode`` (SpikingJelly 2.0)::

        H[t] = V[t-1] + X[t]
        S[t] = H(H[t] - v_threshold)          (backward: ``surrogate_function``; default Sigmoid(4))
        v_reset=None (soft):  V[t] = H[t] - S[t] * v_threshold
        v_reset=float (hard): V[t] = S[t] * v_reset + (1 - S[t]) * H[t]

    The same memory-module behaviour as :class:`LIFNode` (step modes, ``reset``/``detach``,
    ``store_v_seq``); ``v_threshold`` may be a tensor and learnable with ``learn_threshold``. One
    fused kernel call per call (``lif`` with ``convention="spikingjelly_if"``).
    """

    def __init__(self, v_threshold: Union[Number, torch.Tensor] = 1.0, v_reset: Optional[Number] = 0.0,
                 surrogate_function=None, detach_reset: bool = False, step_mode: str = "s",
                 store_v_seq: bool = False, *, learn_threshold: bool = False):
        super(LIFNode, self).__init__()  # what LIFNode's own super().__init__() runs
        self._init_node(v_threshold, v_reset, surrogate_function, detach_reset, step_mode,
                        store_v_seq, learn_threshold)

    def _constant_rules(self):
        return {"v_threshold": (False, ""), "v_reset": (False, "")}

    def _charge_args(self):
        return dict(convention="spikingjelly_if")

    def _decay(self):
        return None

    def _charge_repr(self) -> str:
        return ""


class ParametricLIFNode(LIFNode):
    """SpikingJelly's ``ParametricLIFNode`` (PLIF), fused: :class:`LIFNode` with a learnable rate.

    Arguments as ``spikingjelly.activation_based.neuron.ParametricLIFNode`` (SpikingJelly 2.0)::

        q = sigmoid(w)                        (w = -log(init_tau - 1), a Parameter: 1/tau = q)
        decay_input:  H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) * q
        otherwise:    H[t] = V[t-1] - (V[t-1] - V_reset) * q + X[t]
        fire and reset as LIFNode's

    The charge multiplies by ``q`` (it does not divide by ``tau``), as SpikingJelly's does, so the
    numbers are SpikingJelly's exactly. One ``w`` per layer, as there; ``num_neurons=H`` gives one
    per neuron instead (``w`` of shape ``[H]``, the input's last dim). The same memory-module
    behaviour as :class:`LIFNode`; ``v_threshold`` may be a tensor and learnable with
    ``learn_threshold``. One fused kernel call per call (``lif`` with
    ``convention="spikingjelly_plif"``; ``w``'s gradient comes back through ``sigmoid``).
    """

    def __init__(self, init_tau: float = 2.0, decay_input: bool = True,
                 v_threshold: Union[Number, torch.Tensor] = 1.0, v_reset: Optional[Number] = 0.0,
                 surrogate_function=None, detach_reset: bool = False, step_mode: str = "s",
                 store_v_seq: bool = False, *, num_neurons: Optional[int] = None,
                 learn_threshold: bool = False):
        super(LIFNode, self).__init__()  # what LIFNode's own super().__init__() runs
        if isinstance(init_tau, bool) or not isinstance(init_tau, (int, float)) or not (
            math.isfinite(init_tau) and init_tau > 1.0
        ):
            raise ValueError(f"snn_cuda.ParametricLIFNode: init_tau must be a finite float > 1, got "
                             f"{init_tau!r}")
        if num_neurons is not None and (isinstance(num_neurons, bool) or not isinstance(num_neurons, int)
                                        or num_neurons < 1):
            raise ValueError(f"snn_cuda.ParametricLIFNode: num_neurons must be None (one w per layer) "
                             f"or a positive int (one w per neuron), got {num_neurons!r}")
        check_flag(decay_input, "decay_input", "snn_cuda.ParametricLIFNode")
        self.decay_input = decay_input
        init_w = -math.log(float(init_tau) - 1.0)
        shape = () if num_neurons is None else (num_neurons,)
        self.w = nn.Parameter(torch.full(shape, init_w))
        self._init_node(v_threshold, v_reset, surrogate_function, detach_reset, step_mode,
                        store_v_seq, learn_threshold)

    def _constant_rules(self):
        return {"w": (False, ""), "v_threshold": (False, ""), "v_reset": (False, "")}

    def _charge_args(self):
        return dict(convention="spikingjelly_plif", decay_input=self.decay_input)

    def _decay(self):
        return self.w.sigmoid()

    def _charge_repr(self) -> str:
        with torch.no_grad():
            tau = 1.0 / self.w.sigmoid()
        shown = f"{float(tau):g}" if tau.numel() == 1 else f"tensor{tuple(tau.shape)}"
        return f"tau={shown}, decay_input={self.decay_input}, "


class ALIF(CheckedConstants, nn.Module):
    """The adaptive LIF neuron (ALIF) in its common discrete form (Bellec et al. 2018; Yin et al.
    2021), fused: see :func:`snn_cuda.alif` for the equations. No installed library ships this
    neuron (snnTorch has none; Norse's adaptive neuron, with a reset to ``v_reset``, is
    :class:`snn_cuda.norse.LSNN`), so it has its own interface, in the style of Norse's modules:

    - ``forward(input, state=None) -> (spikes, state)``: ``input`` is a whole sequence
      ``[T, *batch, *features]``, one fused kernel call; ``state`` is None (zeros) or the
      ``(v, a, z)`` a previous call returned (each shaped like one step).
    - ``step(input, state=None) -> (spikes, state)``: one time step, ``input`` shaped like a step.

    The returned state keeps its graph (backpropagation through time across calls); detach it to
    cut. ``alpha``, ``rho``, ``beta``, ``threshold``: floats or tensors broadcastable to one step
    (usually per neuron), learnable with ``learn_*=True`` (Parameters; otherwise buffers), all in
    ``state_dict``. ``surrogate``: a name, ``snn_cuda.surrogate.Surrogate``, or an snnTorch /
    SpikingJelly surrogate; default ``fast_sigmoid`` with slope 25.
    """

    def __init__(self, alpha=0.9, rho=0.97, beta=1.8, threshold=1.0, *, learn_alpha=False,
                 learn_rho=False, learn_beta=False, learn_threshold=False, surrogate=None):
        super().__init__()
        from .neuron_ops import ALIF_SURROGATE

        self.surrogate = _surrogate.resolve(surrogate, ALIF_SURROGATE, "snn_cuda.ALIF")
        for name, value, learn in (("alpha", alpha, learn_alpha), ("rho", rho, learn_rho),
                                   ("beta", beta, learn_beta), ("threshold", threshold, learn_threshold)):
            check_flag(learn, f"learn_{name}", "snn_cuda.ALIF")
            _tensor_param(self, name, value, learn)
        self._start_checking_constants()

    def _constant_rules(self):
        return {"alpha": (False, ""), "rho": (False, ""), "beta": (False, ""),
                "threshold": (False, "")}

    def forward(self, input: torch.Tensor, state=None):
        from .neuron_ops import alif

        spikes, _, _, last = alif(input, self.alpha, self.rho, self.beta, self.threshold,
                                  surrogate=self.surrogate, initial=state, return_state=True)
        return spikes, last

    def step(self, input: torch.Tensor, state=None):
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"snn_cuda.ALIF.step: input must be a tensor, got {type(input).__name__}")
        spikes, last = self.forward(input.unsqueeze(0), state)
        return spikes[0], last

    def extra_repr(self) -> str:
        return f"surrogate={self.surrogate}"
