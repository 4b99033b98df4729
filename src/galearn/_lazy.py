"""Lazy re-exports for subpackages, so ``import galearn.<pkg>`` stays cheap.

A subpackage lists where each public name lives and gets ``__getattr__`` /
``__dir__`` that import the submodule on first use (PEP 562)::

    __getattr__, __dir__ = lazy_exports(__name__, {"run_embed": ".embed"}, __all__)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str,
    where: dict[str, str],
    public: list[str],
    *,
    before_import: Callable[[], Any] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``.

    Parameters
    ----------
    package : str
        The subpackage's ``__name__``.
    where : dict
        Public name -> module, relative to ``package`` (e.g. ``".embed"``, ``"..maps.clusters"``).
    public : list of str
        The subpackage's ``__all__``.
    before_import : callable, optional
        Called before the first submodule import (e.g. to check an optional dependency).
    """

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if before_import is not None:
            before_import()
        value = getattr(importlib.import_module(where[name], package), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(public))

    return __getattr__, __dir__
