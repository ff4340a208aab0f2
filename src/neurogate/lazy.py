"""A package's names imported on first use (PEP 562), so importing the package loads none of its
submodules' heavy dependencies (torch, transformers) until a name from them is used."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """The package's ``__getattr__``: ``where`` maps each public name to the submodule of ``package`` that
    defines it. A name is imported on first use and kept on the package, so later lookups find it directly;
    any other name raises :class:`AttributeError` as usual."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
