"""Lazy package names (PEP 562): a package's top-level names are imported from their modules at their first use.

`import dc_ae_hf.training.arguments` (all that a script's ``--help`` needs) then imports neither torch nor
diffusers, while ``from dc_ae_hf import DCAE15Pipeline`` imports what that name needs. Torch-free itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterable, Mapping

__all__ = ["defer_modules", "lazy_names"]


def lazy_names(package: str, homes: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of `package`, whose names `homes` maps to the module that defines
    each (relative to the package, e.g. ``".models.autoencoder_dc15"``)."""

    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(homes[name], package), name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *homes})

    return __getattr__, __dir__


def defer_modules(names: Iterable[str]) -> None:
    """Put each module (absolute name) in ``sys.modules`` now, to run at the first look-up of a name it defines
    (``_DeferredModule``); one that is there already is left alone."""
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        module = importlib.util.module_from_spec(spec)  # __spec__, __file__, __name__ ... are set; no code runs
        module.__class__ = _DeferredModule
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, module)  # as an import sets it: `import a.b` then `a.b` works


class _DeferredModule(types.ModuleType):
    """A module in ``sys.modules`` whose code has not run yet; it runs, in this module object, at the first look-up
    of a name the module would define. Looking up a missing dunder (``__path__``, ``__warningregistry__``, what
    ``inspect`` and other tools probe on every module in ``sys.modules``) runs nothing: running a module that
    imports torch from inside another import (torch's own) would break that import."""

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__") and name != "__all__":
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        self.__class__ = types.ModuleType  # from here on an ordinary module
        try:
            self.__spec__.loader.exec_module(self)
        except BaseException:
            sys.modules.pop(self.__name__, None)  # the next import tries again and reports the error itself
            raise
        return getattr(self, name)
