"""Surrogate derivatives for binary spikes.

A binary spike ``s = H(z)`` (``z`` = membrane - threshold) has derivative zero almost everywhere;
training replaces ``ds/dz`` in the backward pass with a smooth bump ``sigma'(z)``. The fused kernel
knows four, chosen by name with one scale ``alpha``:

==================  ==========================================  ===================================
name                ``sigma'(z)``                               as in
==================  ==========================================  ===================================
``fast_sigmoid``    ``1 / (alpha * |z| + 1)^2``                 snnTorch ``fast_sigmoid(slope)``
                                                                (SuperSpike, Zenke & Ganguli 2018)
``super_spike``     ``alpha / (|z| + 1)^2``                     SpikingJelly ``SuperSpike(alpha)``
``atan``            ``(alpha / 2) / (1 + (pi / 2 * alpha * z)^2)``  snnTorch ``atan(alpha)``,
                                                                SpikingJelly ``ATan(alpha)``
``sigmoid``         ``alpha * sig(alpha z) * (1 - sig(alpha z))``   snnTorch ``sigmoid(slope)``,
                                                                SpikingJelly ``Sigmoid(alpha)``
==================  ==========================================  ===================================

:func:`resolve` also accepts snnTorch's surrogate functions (``snntorch.surrogate.atan(alpha=2)``
and friends) and SpikingJelly's surrogate modules (``surrogate.Sigmoid(alpha=4.)`` ...), reading
their scale, so a model's existing ``spike_grad=`` / ``surrogate_function=`` argument works as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import torch

NAMES = ("fast_sigmoid", "super_spike", "atan", "sigmoid")


@dataclass(frozen=True)
class Surrogate:
    """A named surrogate derivative and its scale. Build one with :func:`fast_sigmoid`,
    :func:`super_spike`, :func:`atan` or :func:`sigmoid`."""

    name: str
    alpha: float

    def __post_init__(self):
        if self.name not in NAMES:
            raise ValueError(f"surrogate must be one of {NAMES}, got {self.name!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise TypeError(
                f"surrogate {self.name}: the scale must be a float, got {type(self.alpha).__name__}"
            )
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"surrogate {self.name}: the scale must be finite and > 0, got {self.alpha}")
        object.__setattr__(self, "alpha", float(self.alpha))

    def derivative(self, z: torch.Tensor) -> torch.Tensor:
        """``sigma'(z)`` in plain PyTorch (what the reference loop uses; the kernel has its own copy)."""
        a = self.alpha
        if self.name == "fast_sigmoid":
            return 1.0 / (a * z.abs() + 1.0) ** 2
        if self.name == "super_spike":
            return a / (z.abs() + 1.0) ** 2
        if self.name == "atan":
            return a / 2 / (1 + (math.pi / 2 * a * z) ** 2)
        # sig(az) (1 - sig(az)) written as e / (1 + e)^2, e = exp(-a|z|): exact in the tails.
        e = torch.exp(-(a * z.abs()))
        return a * e / ((1 + e) * (1 + e))


def fast_sigmoid(slope: float = 25.0) -> Surrogate:
    """SuperSpike's fast sigmoid, snnTorch's ``fast_sigmoid``: ``1 / (slope * |z| + 1)^2``."""
    return Surrogate("fast_sigmoid", slope)


def super_spike(alpha: float = 1.0) -> Surrogate:
    """SpikingJelly's ``SuperSpike``: ``alpha / (|z| + 1)^2``."""
    return Surrogate("super_spike", alpha)


def atan(alpha: float = 2.0) -> Surrogate:
    """Arctangent: ``(alpha / 2) / (1 + (pi / 2 * alpha * z)^2)`` (snnTorch's default)."""
    return Surrogate("atan", alpha)


def sigmoid(slope: float = 25.0) -> Surrogate:
    """Sigmoid: ``slope * sig(slope z) * (1 - sig(slope z))`` (snnTorch's default slope is 25,
    SpikingJelly's ``Sigmoid`` default alpha is 4)."""
    return Surrogate("sigmoid", slope)


# Built once, so that resolving a name or a default under torch.compile constructs nothing.
_BY_NAME = {name: Surrogate(name, scale) for name, scale in
            (("fast_sigmoid", 25.0), ("super_spike", 1.0), ("atan", 2.0), ("sigmoid", 25.0))}
SNNTORCH_DEFAULT = Surrogate("atan", 2.0)  # snntorch.Leaky's spike_grad=None
SPIKINGJELLY_DEFAULT = Surrogate("sigmoid", 4.0)  # spikingjelly's surrogate.Sigmoid()

_SNNTORCH = {"fast_sigmoid": "fast_sigmoid", "atan": "atan", "sigmoid": "sigmoid"}
_SPIKINGJELLY = {"Sigmoid": "sigmoid", "ATan": "atan", "SuperSpike": "super_spike"}

SurrogateLike = Union[Surrogate, str, object, None]


def resolve(spec: SurrogateLike, default: Surrogate, what: str = "surrogate") -> Surrogate:
    """A :class:`Surrogate` from ``spec``: None (-> ``default``), a Surrogate, a name (its default
    scale), an snnTorch surrogate function, or a SpikingJelly surrogate module. Anything else is a
    TypeError naming what is supported; never a silent substitute."""
    if spec is None:
        return default
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, str):
        if spec not in NAMES:
            raise ValueError(f"{what}: unknown surrogate {spec!r}; supported: {NAMES}")
        return _BY_NAME[spec]
    module = getattr(spec, "__module__", "") or ""
    qualname = getattr(spec, "__qualname__", "") or ""
    if module == "snntorch.surrogate" and qualname.endswith(".<locals>.inner"):
        factory = qualname.split(".")[0]
        if factory in _SNNTORCH:
            cells = dict(zip(spec.__code__.co_freevars, (c.cell_contents for c in spec.__closure__)))
            scale = cells.get("alpha", cells.get("slope"))
            return Surrogate(_SNNTORCH[factory], scale)
        raise ValueError(
            f"{what}: snntorch.surrogate.{factory} is not supported by the fused kernel; "
            f"supported: snntorch.surrogate.{{fast_sigmoid, atan, sigmoid}}"
        )
    cls = type(spec)
    if cls.__module__ == "spikingjelly.activation_based.surrogate":
        if cls.__name__ in _SPIKINGJELLY:
            if not getattr(spec, "spiking", True):
                raise ValueError(
                    f"{what}: a SpikingJelly surrogate with spiking=False (a smooth forward) is "
                    "not supported; the fused kernel emits binary spikes"
                )
            return Surrogate(_SPIKINGJELLY[cls.__name__], spec.alpha)
        raise ValueError(
            f"{what}: spikingjelly surrogate.{cls.__name__} is not supported by the fused kernel; "
            "supported: surrogate.Sigmoid, surrogate.ATan, surrogate.SuperSpike"
        )
    raise TypeError(
        f"{what}: expected an snn_cuda.surrogate.Surrogate, one of the names {NAMES}, an snnTorch "
        "surrogate (snntorch.surrogate.atan(...), fast_sigmoid(...), sigmoid(...)) or a "
        f"SpikingJelly surrogate module (Sigmoid, ATan, SuperSpike); got {spec!r}"
    )
