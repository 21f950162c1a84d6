"""Modules validate the values of their neuron constants when built, when a constant is assigned,
and when a state_dict is loaded (the rule: :func:`snn_cuda.ops.check_value`)."""

from __future__ import annotations

from typing import Dict, Tuple

import torch

from .ops import check_value


class CheckedConstants:
    """Mixin for an ``nn.Module`` (before it in the bases). Subclasses name their constants in
    :meth:`_constant_rules` and call :meth:`_start_checking_constants` at the end of ``__init__``."""

    def _constant_rules(self) -> Dict[str, Tuple[bool, str]]:
        """``{attribute name: (must be > 0, why)}``; every constant must be finite."""
        raise NotImplementedError

    _optional_constants = ()  # names that may also be None (SpikingJelly's v_reset)

    def _check_constant(self, name: str, value, positive: bool, why: str, what: str = "") -> None:
        if value is None and name in self._optional_constants:
            return
        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided or value.is_complex() or value.dtype == torch.bool:
                raise TypeError(f"{self._owner()}: {name}{what} must be a real tensor (strided), got "
                                f"dtype {value.dtype}, layout {value.layout}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{self._owner()}: {name}{what} must be a float or a tensor, got "
                            f"{type(value).__name__} {value!r}")
        check_value(value, name + what, self._owner(), positive, why)

    def _owner(self) -> str:
        return f"snn_cuda.{type(self).__name__}"

    def check_constants(self) -> None:
        """Raises ValueError if a constant is not finite (or not > 0 where the neuron divides by
        it). Reads tensor values (on CUDA: waits for the GPU). Call it after an optimizer step to
        catch a learnable threshold pushed through zero, or see ``snn_cuda.validate_parameters``."""
        for name, (positive, why) in self._constant_rules().items():
            self._check_constant(name, getattr(self, name), positive, why)

    def _start_checking_constants(self) -> None:
        self.check_constants()
        self.__dict__["_checking_constants"] = True

    def __setattr__(self, name: str, value) -> None:
        if self.__dict__.get("_checking_constants"):
            rule = self._constant_rules().get(name)
            if rule is not None:
                self._check_constant(name, value, *rule)
        super().__setattr__(name, value)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checked before anything is copied, so a bad file leaves the module as it was.
        for name, (positive, why) in self._constant_rules().items():
            value = state_dict.get(prefix + name)
            if isinstance(value, torch.Tensor):
                self._check_constant(name, value, positive, why, " in the loaded state_dict")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
