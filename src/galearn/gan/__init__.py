"""galearn.gan: class-conditional GAN for multi-band galaxy stamps.

* :func:`run_train` (``galearn gan train``): train G / projection D, write ``WS/gan/``.
* :func:`run_sample` (``galearn gan sample``): write the generated library ``WS/library.h5``.
* :func:`run_evaluate` (``galearn gan evaluate``): realism + balancing metrics (metrics.json ``gan``).

Submodules: :mod:`.networks`, :mod:`.augment`, :mod:`.loss`, :mod:`.loop`,
:mod:`.checkpoint`, :mod:`.data`, :mod:`.sample`, :mod:`.evaluate`. torch is
imported lazily, on first use of a name below, so ``import galearn.gan`` stays cheap.
"""

from __future__ import annotations

from .._lazy import lazy_exports


__all__ = [
    "run_train",
    "run_sample",
    "run_evaluate",
    "Generator",
    "Discriminator",
    "GanLoss",
    "diff_augment",
    "load_generator",
    "library_counts",
    "condition_labels",
    "gan_condition",
    "redshift_bin_edges",
    "make_split",
    "read_split",
    "measure_sky",
    "sky_per_stamp",
    "SkyNoise",
]

_WHERE = {
    "run_train": ".loop",
    "run_sample": ".sample",
    "run_evaluate": ".evaluate",
    "Generator": ".networks",
    "Discriminator": ".networks",
    "GanLoss": ".loss",
    "diff_augment": ".augment",
    "load_generator": ".sample",
    "library_counts": ".sample",
    "condition_labels": ".data",
    "gan_condition": ".data",
    "redshift_bin_edges": ".data",
    "make_split": ".data",
    "read_split": ".data",
    "measure_sky": ".sky",
    "sky_per_stamp": ".sky",
    "SkyNoise": ".sky",
}


def _require_torch() -> None:
    from .._optional import require

    require("torch", "torch")


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__, before_import=_require_torch)
