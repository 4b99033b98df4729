"""galearn.mock: the embedded default data set, a simulated HST GOODS-South field with known truth.

``simulate_field(out_dir, cfg)`` writes ``F435W.fits``, ``F850LP.fits``,
``F160W.fits`` and ``catalog.fits``; ``write_previews(out_dir)`` draws a
Lupton RGB of a patch and a grid of stamps per truth class. GalSim and
speclite are imported only when these are called.
"""

from __future__ import annotations

from .._lazy import lazy_exports


__all__ = ["simulate_field", "build_truth", "render_source", "write_previews", "sample_population"]

_WHERE = {
    "simulate_field": ".field",
    "build_truth": ".field",
    "render_source": ".field",
    "write_previews": ".figures",
    "sample_population": ".populations",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
