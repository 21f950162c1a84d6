"""How the drop-in modules become visible to the peers' own utilities.

snnTorch finds neurons with ``isinstance`` checks against its own classes (``snntorch.utils.reset``
looks for ``snntorch.Leaky`` among a net's children, then ``snntorch.Leaky.reset_hidden()`` walks
``snntorch.SpikingNeuron.instances``); SpikingJelly's ``functional.reset_net`` / ``detach_net`` call
``reset()`` / ``detach()`` on anything that has them but log a warning for modules that are not a
``base.MemoryModule``, and ``base.named_memories`` only lists ``MemoryModule`` s. So a drop-in has to
*be* an instance of the peer's class.

Importing snn_cuda must not import the peers. So the classes in :mod:`snn_cuda.neurons` are plain
``nn.Module`` s, and constructing one returns an instance of a subclass that also derives from the
peer's class when that peer is installed (:func:`with_peer_base`; built once per class and cached).
Our class comes first in the method resolution order, so every method we define wins; the peer's
``__init__`` is never run (ours sets up what the peer's utilities read). The subclass has a stable,
importable name in this module, so pickled modules load again.
"""

from __future__ import annotations

import importlib
import re
import importlib.util
import sys
from typing import Dict, Optional, Tuple

_BUILT: Dict[type, type] = {}  # a class -> the class its instances get


def peer_compatible(module: str, attr: str):
    """Class decorator: instances of the class (and of its subclasses) also derive from
    ``module.attr`` when that library is installed."""

    def decorate(cls):
        cls._peer_base = (module, attr)
        return cls

    return decorate


def _escape(text: str) -> str:
    return text.replace(".", "_dot_")


def _compat_name(cls: type, peer: str) -> str:
    # Encodes where ``cls`` lives, so that unpickling can rebuild the class from its name alone.
    return f"_{_escape(cls.__module__)}_cls_{_escape(cls.__qualname__)}_with_{peer}"


def peer_class(module: str, attr: str) -> Optional[type]:
    """``module.attr`` if that library is installed and imports, else None."""
    top = module.split(".")[0]
    if top not in sys.modules and importlib.util.find_spec(top) is None:
        return None
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception:  # a broken install of an optional peer: behave as if it were absent
        return None


def with_peer_base(cls: type) -> type:
    """The class that an instance of ``cls`` gets: ``cls`` itself, or a subclass of ``cls`` and of
    the peer's class named by :func:`peer_compatible`."""
    if cls in _BUILT:
        return _BUILT[cls]
    spec: Optional[Tuple[str, str]] = getattr(cls, "_peer_base", None)
    base = peer_class(*spec) if spec is not None else None
    if base is None or issubclass(cls, base):
        result = cls
    else:
        name = _compat_name(cls, spec[0].split(".")[0])
        result = type(cls.__name__, (cls, base), {
            "__module__": __name__, "__qualname__": name, "__doc__": cls.__doc__,
        })
        globals()[name] = result
        _BUILT[result] = result
    _BUILT[cls] = result
    return result


def __getattr__(name: str):
    """Unpickling a module that was saved with the peer installed rebuilds its class here."""
    match = re.fullmatch(r"_(.+)_cls_(.+)_with_([A-Za-z0-9]+)", name)
    if match is not None:
        module, qualname = (part.replace("_dot_", ".") for part in match.group(1, 2))
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        built = with_peer_base(cls)
        if built.__qualname__ == name:
            return built
        raise AttributeError(
            f"{name}: this module was saved with the peer library {match.group(3)!r} installed; "
            "install it to load the module"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def loaded(module: str):
    """The module if it has been imported already (by the user), else None; imports nothing."""
    return sys.modules.get(module)
