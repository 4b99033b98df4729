"""galearn.features: backbone registry (pre-trained CNNs) and batched feature extraction.

Public names are imported lazily so that ``import galearn.features`` stays
cheap (torch is imported on first use)::

    from galearn.features import load_backbone, extract_features
    bb = load_backbone("efficientnet-lite0")
    feats = extract_features(stretched_stamps, ["F435W", "F850LP", "F160W"], bb)
"""

from __future__ import annotations

from .._lazy import lazy_exports


__all__ = [
    "Backbone",
    "BackboneSpec",
    "get_spec",
    "load_backbone",
    "build_architecture",
    "register_backbone",
    "list_backbones",
    "prepare_batch",
    "band_mapping",
    "extract_features",
    "run_features",
    "run_adapt",
    "load_adapted",
]

_WHERE = {
    "Backbone": ".backbones",
    "BackboneSpec": ".backbones",
    "get_spec": ".backbones",
    "load_backbone": ".backbones",
    "build_architecture": ".backbones",
    "register_backbone": ".backbones",
    "list_backbones": ".backbones",
    "prepare_batch": ".preprocess",
    "band_mapping": ".preprocess",
    "extract_features": ".extract",
    "run_features": ".extract",
    "run_adapt": ".adapt",
    "load_adapted": ".adapt",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
