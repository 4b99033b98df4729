"""galearn.mock: the embedded default data set, a simulated HST GOODS-South field with known truth.

``simulate_field(out_dir, cfg)`` writes ``F435W.fits``, ``F850LP.fits``,
``F160W.fits`` and ``catalog.fits``; ``write_previews(out_dir)`` draws a
Lupton RGB of a patch and a grid of stamps per truth class. GalSim and
speclite are imported only when these are called.
"""

from __future__ import annotations

import importlib

__all__ = ["simulate_field", "build_truth", "render_source", "write_previews", "sample_population"]

_WHERE = {
    "simulate_field": "field",
    "build_truth": "field",
    "render_source": "field",
    "write_previews": "figures",
    "sample_population": "populations",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
