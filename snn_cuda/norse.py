"""Drop-in replacements for Norse's feed-forward ``LIF``, ``LIFCell``, ``LSNN``, ``LSNNCell``, ``LI``
and ``LICell``, fused.

Each takes the arguments of the Norse module it replaces (``p=LIFParameters(...)`` /
``LIParameters(...)``, ``dt``, ``record_states``) and is called the same way: the sequence modules
``LIF`` / ``LI`` take ``[T, batch, ...]`` and return ``(outputs, state)`` (the whole sequence in
one kernel call), the cells take one step and return ``(output, state)``. States are Norse's
``LIFFeedForwardState`` / ``LSNNFeedForwardState`` / ``LIState`` when Norse has been imported (so Norse code that reads
``state.v`` / ``state.i`` or passes them back works), namedtuples with the same fields otherwise.
Parameters are read from ``p`` on every call, as Norse does (tensors in ``p`` that require grad get
their gradients). Importing ``snn_cuda.norse`` does not import Norse.

    import snn_cuda.norse as fused
    lif = fused.LIF(norse.torch.LIFParameters(tau_mem_inv=torch.tensor(50.0)), dt=0.001)
    spikes, state = lif(currents)                    # currents: [T, batch, ...]

What Norse computes and these do not: its other surrogate methods (``p.method`` other than
``"super"``, which includes ``"adjoint"``), sparse inputs, the recurrent modules. Each raises a
``ValueError`` naming it. Norse's ``"super"`` backward is ``1 / (|z| + 1)^2`` whatever ``p.alpha``
says (Norse 1.1 does not read it); so is ours. Differences on purpose: outputs and states have the
input's dtype (Norse starts its states in float32, so a float16 input gives float32 results).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

from . import _peers
from .neuron_ops import NORSE_SURROGATE, norse_li, norse_lif, norse_lsnn


class LIFParameters(NamedTuple):
    """Norse's ``LIFParameters`` fields and defaults (Norse's own class works as well)."""

    tau_syn_inv: torch.Tensor = torch.as_tensor(1.0 / 5e-3)
    tau_mem_inv: torch.Tensor = torch.as_tensor(1.0 / 1e-2)
    v_leak: torch.Tensor = torch.as_tensor(0.0)
    v_th: torch.Tensor = torch.as_tensor(1.0)
    v_reset: torch.Tensor = torch.as_tensor(0.0)
    method: str = "super"
    alpha: float = torch.as_tensor(100.0)


class LIParameters(NamedTuple):
    """Norse's ``LIParameters`` fields and defaults (Norse's own class works as well)."""

    tau_syn_inv: torch.Tensor = torch.as_tensor(1.0 / 5e-3)
    tau_mem_inv: torch.Tensor = torch.as_tensor(1.0 / 1e-2)
    v_leak: torch.Tensor = torch.as_tensor(0.0)


class LIFFeedForwardState(NamedTuple):
    v: torch.Tensor
    i: torch.Tensor


class LIState(NamedTuple):
    v: torch.Tensor
    i: torch.Tensor


def _state_class(norse_module: str, name: str, ours):
    """Norse's state class if Norse is imported (never imports it), else ours."""
    module = _peers.loaded(norse_module)
    return getattr(module, name, ours) if module is not None else ours


def _check_method(cls: str, p) -> None:
    method = getattr(p, "method", "super")
    if method != "super":
        raise ValueError(
            f"snn_cuda.norse.{cls}: p.method={method!r} is not supported (the fused kernel "
            "computes Norse's SuperSpike surrogate, method='super', only)"
        )


def _check_input(cls: str, input_tensor) -> None:
    if not isinstance(input_tensor, torch.Tensor):
        raise TypeError(f"snn_cuda.norse.{cls}: input must be a tensor, got {type(input_tensor).__name__}")
    if input_tensor.is_sparse:
        raise ValueError(f"snn_cuda.norse.{cls}: sparse inputs are not supported; pass a dense tensor")


def _constants(p, names):
    return [torch.as_tensor(getattr(p, name)) for name in names]


class _NorseModule(nn.Module):
    """What the four share: ``p``, ``dt``, and Norse's repr."""

    _parameters_class = None

    def __init__(self, p=None, dt: float = 0.001, **kwargs):
        super().__init__()
        if kwargs:
            raise TypeError(f"snn_cuda.norse.{type(self).__name__}: unexpected arguments "
                            f"{sorted(kwargs)} (sparse activations are not supported)")
        if p is None:
            p = self._parameters_class()
        self.p = p
        self.dt = dt

    def extra_repr(self) -> str:
        return f"p={self.p}, dt={self.dt}"


class LIF(_NorseModule):
    """Norse's ``LIF`` (feed-forward, over time): ``forward(input [T, ...], state=None)`` returns
    ``(spikes [T, ...], LIFFeedForwardState(v, i))`` after the last step, or with
    ``record_states=True`` the states of every step stacked. Without a state it starts from
    ``v = v_leak`` (detached, float32 as Norse's, then the input's dtype) and ``i = 0``; a
    per-neuron ``v_leak`` works too (Norse's own ``LIF`` needs a state then)."""

    _parameters_class = LIFParameters

    def __init__(self, p=None, dt: float = 0.001, record_states: bool = False, **kwargs):
        super().__init__(p, dt, **kwargs)
        _check_method("LIF", self.p)
        self.record_states = record_states

    def forward(self, input_tensor: torch.Tensor, state=None):
        _check_input("LIF", input_tensor)
        _check_method("LIF", self.p)
        if input_tensor.dim() < 2:
            raise ValueError("snn_cuda.norse.LIF: input must be a sequence [T, ...] (at least 2 "
                             f"dims), got shape {tuple(input_tensor.shape)}; use LIFCell for one step")
        tau_syn_inv, tau_mem_inv, v_leak, v_th, v_reset = _constants(
            self.p, ("tau_syn_inv", "tau_mem_inv", "v_leak", "v_th", "v_reset"))
        if state is None:
            initial = (torch.broadcast_to(v_leak.detach().float(), input_tensor.shape[1:]), None)
        else:
            initial = (state.v, state.i)
        spikes, v, i, last = norse_lif(input_tensor, tau_syn_inv, tau_mem_inv, v_leak, v_th, v_reset,
                                       dt=self.dt, surrogate=NORSE_SURROGATE,
                                       initial=_as_input_dtype(initial, input_tensor),
                                       return_state=True)
        state_class = _state_class("norse.torch.functional.lif", "LIFFeedForwardState",
                                   LIFFeedForwardState)
        return spikes, state_class(v, i) if self.record_states else state_class(*last)


class LIFCell(_NorseModule):
    """Norse's ``LIFCell``: one step, ``forward(input, state=None)`` returns
    ``(spikes, LIFFeedForwardState(v, i))``. Without a state it starts from ``v = v_leak``
    (detached, as Norse's) and ``i = 0``."""

    _parameters_class = LIFParameters

    def __init__(self, p=None, dt: float = 0.001, **kwargs):
        super().__init__(p, dt, **kwargs)
        _check_method("LIFCell", self.p)

    def forward(self, input_tensor: torch.Tensor, state=None):
        _check_input("LIFCell", input_tensor)
        _check_method("LIFCell", self.p)
        constants = _constants(self.p, ("tau_syn_inv", "tau_mem_inv", "v_leak", "v_th", "v_reset"))
        initial = (constants[2].detach(), None) if state is None else (state.v, state.i)
        spikes, last = _cell_step(norse_lif, input_tensor, initial, constants, dt=self.dt,
                                  surrogate=NORSE_SURROGATE)
        state_class = _state_class("norse.torch.functional.lif", "LIFFeedForwardState",
                                   LIFFeedForwardState)
        return spikes, state_class(*last)


class LI(_NorseModule):
    """Norse's ``LI`` (leaky integrator over time, no spikes): ``forward(input [T, ...],
    state=None)`` returns ``(v [T, ...], LIState(v, i))``; starts from ``v = v_leak`` (detached,
    float32 as Norse's, then the input's dtype) and ``i = 0``."""

    _parameters_class = LIParameters

    def __init__(self, p=None, dt: float = 0.001, record_states: bool = False, **kwargs):
        super().__init__(p, dt, **kwargs)
        self.record_states = record_states

    def forward(self, input_tensor: torch.Tensor, state=None):
        _check_input("LI", input_tensor)
        if input_tensor.dim() < 2:
            raise ValueError("snn_cuda.norse.LI: input must be a sequence [T, ...] (at least 2 "
                             f"dims), got shape {tuple(input_tensor.shape)}; use LICell for one step")
        tau_syn_inv, tau_mem_inv, v_leak = _constants(self.p, ("tau_syn_inv", "tau_mem_inv", "v_leak"))
        if state is None:
            initial = (torch.broadcast_to(v_leak.detach().float(), input_tensor.shape[1:]), None)
        else:
            initial = (state.v, state.i)
        v, i, last = norse_li(input_tensor, tau_syn_inv, tau_mem_inv, v_leak, dt=self.dt,
                              initial=_as_input_dtype(initial, input_tensor), return_state=True)
        state_class = _state_class("norse.torch.functional.leaky_integrator", "LIState", LIState)
        return v, state_class(v, i) if self.record_states else state_class(*last)


class LICell(_NorseModule):
    """Norse's ``LICell``: one step, ``forward(input, state=None)`` returns ``(v, LIState(v, i))``;
    starts from ``v = v_leak`` (detached, as Norse's) and ``i = 0``."""

    _parameters_class = LIParameters

    def forward(self, input_tensor: torch.Tensor, state=None):
        _check_input("LICell", input_tensor)
        constants = _constants(self.p, ("tau_syn_inv", "tau_mem_inv", "v_leak"))
        initial = (constants[2].detach(), None) if state is None else (state.v, state.i)
        _, (v, i) = _cell_step(norse_li, input_tensor, initial, constants, dt=self.dt)
        state_class = _state_class("norse.torch.functional.leaky_integrator", "LIState", LIState)
        return v, state_class(v, i)


class LSNNParameters(NamedTuple):
    """Norse's ``LSNNParameters`` fields and defaults (Norse's own class works as well)."""

    tau_syn_inv: torch.Tensor = torch.as_tensor(1.0 / 5e-3)
    tau_mem_inv: torch.Tensor = torch.as_tensor(1.0 / 1e-2)
    tau_adapt_inv: torch.Tensor = torch.as_tensor(1.0 / 800)
    v_leak: torch.Tensor = torch.as_tensor(0.0)
    v_th: torch.Tensor = torch.as_tensor(1.0)
    v_reset: torch.Tensor = torch.as_tensor(0.0)
    beta: torch.Tensor = torch.as_tensor(1.8)
    method: str = "super"
    alpha: float = 100.0


class LSNNFeedForwardState(NamedTuple):
    v: torch.Tensor
    i: torch.Tensor
    b: torch.Tensor


_LSNN_FIELDS = ("tau_syn_inv", "tau_mem_inv", "tau_adapt_inv", "v_leak", "v_th", "v_reset", "beta")


def _lsnn_state_class():
    return _state_class("norse.torch.functional.lsnn", "LSNNFeedForwardState", LSNNFeedForwardState)


class LSNN(_NorseModule):
    """Norse's ``LSNN`` (adaptive LIF without recurrence, over time): ``forward(input [T, ...],
    state=None)`` returns ``(spikes [T, ...], LSNNFeedForwardState(v, i, b))`` after the last step,
    or with ``record_states=True`` the states of every step stacked. Without a state it starts from
    ``v = v_leak``, ``i = 0``, ``b = v_th`` (detached, in the input's dtype, as Norse's)."""

    _parameters_class = LSNNParameters

    def __init__(self, p=None, dt: float = 0.001, record_states: bool = False, **kwargs):
        super().__init__(p, dt, **kwargs)
        _check_method("LSNN", self.p)
        self.record_states = record_states

    def forward(self, input_tensor: torch.Tensor, state=None):
        _check_input("LSNN", input_tensor)
        _check_method("LSNN", self.p)
        if input_tensor.dim() < 2:
            raise ValueError("snn_cuda.norse.LSNN: input must be a sequence [T, ...] (at least 2 "
                             f"dims), got shape {tuple(input_tensor.shape)}; use LSNNCell for one step")
        constants = _constants(self.p, _LSNN_FIELDS)
        initial = None if state is None else _as_input_dtype((state.v, state.i, state.b), input_tensor)
        spikes, v, i, b, last = norse_lsnn(input_tensor, *constants, dt=self.dt,
                                           surrogate=NORSE_SURROGATE, initial=initial,
                                           return_state=True)
        state_class = _lsnn_state_class()
        return spikes, state_class(v, i, b) if self.record_states else state_class(*last)


class LSNNCell(_NorseModule):
    """Norse's ``LSNNCell``: one step, ``forward(input, state=None)`` returns
    ``(spikes, LSNNFeedForwardState(v, i, b))``; starts as :class:`LSNN` does."""

    _parameters_class = LSNNParameters

    def __init__(self, p=None, dt: float = 0.001, **kwargs):
        super().__init__(p, dt, **kwargs)
        _check_method("LSNNCell", self.p)

    def forward(self, input_tensor: torch.Tensor, state=None):
        _check_input("LSNNCell", input_tensor)
        _check_method("LSNNCell", self.p)
        constants = _constants(self.p, _LSNN_FIELDS)
        initial = None if state is None else (state.v, state.i, state.b)
        spikes, last = _cell_step(norse_lsnn, input_tensor, initial, constants, dt=self.dt,
                                  surrogate=NORSE_SURROGATE)
        return spikes, _lsnn_state_class()(*last)


def _cell_step(functional, input_tensor: torch.Tensor, initial, constants, **options):
    """One step of a sequence function (norse_lif, norse_li, norse_lsnn) on a step input: the
    initial states (None: the function's defaults) broadcast to the step's shape, as Norse's cells
    take 0-dim states. Returns the first row of that step and the states after it, in the input's
    shape (fresh tensors: a state may be detached in place)."""
    step_shape = tuple(input_tensor.shape)
    x = input_tensor.reshape(1, *step_shape) if input_tensor.dim() > 0 else input_tensor.reshape(1, 1)
    if initial is not None:
        initial = tuple(None if t is None else torch.broadcast_to(t, step_shape).reshape(x.shape[1:])
                        for t in _as_input_dtype(initial, input_tensor))
    *rows, last = functional(x, *constants, initial=initial, return_state=True, **options)
    return rows[0].reshape(step_shape), tuple(_shaped(t, step_shape) for t in last)


def _as_input_dtype(initial, like: torch.Tensor):
    return tuple(None if t is None else t.to(like.dtype) for t in initial)


def _shaped(t: torch.Tensor, shape) -> torch.Tensor:
    return t if tuple(t.shape) == tuple(shape) else torch.ops.aten._unsafe_view(t, tuple(shape))
