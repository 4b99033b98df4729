"""Which feature file a stage uses, and checks that it belongs to the workspace's sample."""

from __future__ import annotations

import numpy as np

from ..errors import BadValueError, MissingInputError
from ..store import Features, Sample, Workspace, read_features, read_metrics

__all__ = ["resolve_backbone", "load_features", "check_aligned"]


def resolve_backbone(ws: Workspace, backbone: str | None = None) -> str:
    """The backbone whose feature file a stage reads.

    ``backbone`` when given; else the one ``galearn features`` recorded in
    metrics.json (``features.backbone``); else the only feature file present.

    Raises
    ------
    MissingInputError
        No such feature file, or none at all.
    BadValueError
        Several feature files and nothing says which one to use.
    """
    available = ws.feature_backbones()
    folder = ws.features("x").parent
    if backbone:
        path = ws.features(backbone)
        if not path.exists():
            have = f" (available: {', '.join(available)})" if available else ""
            raise MissingInputError(
                f"{path} does not exist: run `galearn features --workspace {ws.root} --backbone {backbone}` "
                f"first{have}"
            )
        return backbone
    if not available:
        raise MissingInputError(f"no feature file in {folder}: run `galearn features --workspace {ws.root}` first")
    named = read_metrics(ws.metrics).get("features", {}).get("backbone")
    if named in available:
        return named
    if len(available) == 1:
        return available[0]
    raise BadValueError(
        f"{folder} holds several feature files ({', '.join(available)}) and metrics.json names none of them; "
        "choose one with --backbone"
    )


def load_features(ws: Workspace, backbone: str, *, library: bool = False, sample: Sample | None = None) -> Features:
    """Read a feature file; with ``sample``, check that it was computed from that sample."""
    feats = read_features(ws.features(backbone, library=library))
    if feats.values.ndim != 2 or len(feats.values) != len(feats.ids):
        raise BadValueError(f"{ws.features(backbone, library=library)}: malformed feature file "
                            f"(features {feats.values.shape}, {len(feats.ids)} ids)")
    if sample is not None:
        check_aligned(feats, sample, ws.features(backbone, library=library))
    return feats


def check_aligned(feats: Features, sample: Sample, where) -> None:
    """Raise if ``feats`` does not hold one row per stamp of ``sample``, in order."""
    made_for = feats.attrs.get("sample_checksum")
    if made_for is not None and made_for != sample.checksum:
        raise BadValueError(
            f"{where} was computed from another version of {sample.path}: re-run `galearn features`"
        )
    if len(feats.ids) != sample.n or not np.array_equal(np.asarray(feats.ids, dtype=str), sample.ids()):
        raise BadValueError(
            f"{where} has {len(feats.ids)} rows that do not match the {sample.n} stamps of {sample.path}: "
            "re-run `galearn features`"
        )


def require_sample(ws: Workspace) -> Sample:
    """Open ``WS/sample.h5`` or say which command makes it."""
    from ..store import open_sample

    if not ws.sample.exists():
        raise MissingInputError(
            f"{ws.sample} does not exist: run `galearn cutouts` or `galearn ingest-images` first"
        )
    return open_sample(ws.sample)
