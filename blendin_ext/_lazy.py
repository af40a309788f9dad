"""Lazy re-exports for package faces (PEP 562), so that importing a pure
submodule (the reference, the vocab map, scoring) does not load the
compiled extension or transformers through its package's __init__."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, table: dict):
    """(__getattr__, __dir__) for a package whose public names live in
    submodules: table maps name -> submodule (relative to the package)."""

    def __getattr__(name: str):
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__():
        return sorted(table)

    return __getattr__, __dir__
