"""Batched feature extraction: stretched stamps -> RGB network input -> pooled CNN features.

The hot path is batched: stamps are read, mapped to RGB, resized and
normalised a batch at a time, run through the backbone under
``torch.inference_mode`` in channels-last memory layout (CUDA when present),
and written to the feature file in chunks so that an interrupted run resumes
where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import BadValueError
from ..compute import current_session, file_key, map_partitions, partition_bounds, setting, worker_cached
from ..config import FeatureConfig
from ..imaging import rgb_order
from ..store import (Workspace, check_shard, open_sample, relative_to_workspace, remove_stale_shards, shard_path,
                     update_manifest, update_metrics, write_shard, write_sharded_features, record_compute)
from . import adapt as _adapt  # noqa: F401 - registers the "adapted" backbone
from .backbones import Backbone, inference_copy, load_backbone
from .preprocess import band_mapping, prepare_batch
from .fuse import check_fuse, write_fused_features

__all__ = [
    "extract_features",
    "features_of_rows",
    "run_features",
    "dihedral",
    "tta_count",
    "DEFAULT_INPUT_SIZE",
    "DEFAULT_TTA",
    "DEFAULT_SCALES",
    "check_scales",
]

log = logging.getLogger("galearn.features")

# Measured defaults (benchmarks/bench_feature_choices.py, docs/features.md).
DEFAULT_INPUT_SIZE = 128  # pixels; 64 px stamps are upsampled 2x (beat native 64 and 224 on real images)
DEFAULT_TTA = 4  # transforms averaged when tta is True (the 4 quarter turns)
# Central fractions of the stamp, each resized to the input size; their features are
# concatenated. The whole stamp + its central quarter (a 4x zoom on the core) beat
# the whole stamp alone on the mock field and in cluster accuracy on real images
# (docs/features.md, "Two scales").
DEFAULT_SCALES = (1.0, 0.25)


def check_scales(scales) -> tuple[float, ...]:
    """Validate ``scales`` (central fractions of the stamp side, each in (0, 1], no repeats).

    None or empty -> :data:`DEFAULT_SCALES`; a comma-separated string is accepted (CLI).
    """
    if scales is None or (not isinstance(scales, str) and len(scales) == 0):
        return DEFAULT_SCALES
    if isinstance(scales, str):
        scales = [p for p in scales.replace(" ", "").split(",") if p]
    what = f"features scales must be distinct numbers in (0, 1] (central fractions of the stamp), got {scales!r}"
    try:
        out = tuple(float(v) for v in (scales if isinstance(scales, (list, tuple)) else [scales]))
    except (TypeError, ValueError):
        raise BadValueError(what) from None
    if not out or any(not 0 < v <= 1 for v in out) or len(set(out)) != len(out):
        raise BadValueError(what)
    return out


def tta_count(tta: bool | int | None) -> int:
    """Number of dihedral transforms averaged: None/False/0/1 -> 1, True -> 4, 2/4/8 as given."""
    if tta is None or tta is False:
        return 1
    if tta is True:
        return DEFAULT_TTA
    n = int(tta)
    if n not in (0, 1, 2, 4, 8):
        raise BadValueError(f"tta must be a bool or one of 1, 2, 4, 8 (transforms averaged), got {tta!r}")
    return max(n, 1)


def dihedral(x: torch.Tensor, j: int) -> torch.Tensor:
    """The j-th (0..7) dihedral transform of ``x`` (..., H, W): ``j % 4`` quarter turns, then a left-right flip if ``j >= 4``."""
    if not 0 <= int(j) < 8:
        raise BadValueError(f"dihedral transform index must be 0..7, got {j}")
    rot, flip = int(j) % 4, int(j) >= 4
    y = torch.rot90(x, rot, dims=(-2, -1)) if rot else x
    return torch.flip(y, dims=(-1,)) if flip else y


def _transform_ids(n: int) -> list[int]:
    # n=2: identity + flip; n=4: the 4 rotations; n=8: the whole dihedral group
    return {1: [0], 2: [0, 4], 4: [0, 1, 2, 3], 8: list(range(8))}[n]


def _features_of_batch(
    stamps: np.ndarray, bands: list[str], backbone: Backbone, input_size: int | None, n_tta: int,
    scales: tuple[float, ...] = (1.0,),
) -> np.ndarray:
    """Features of one batch: per scale, averaged over ``n_tta`` dihedral transforms; scales concatenated.

    Every (scale, transform) copy of the batch goes through the network in one
    forward pass when the scales share an input size.
    """
    ids = _transform_ids(n_tta)
    xs = [prepare_batch(stamps, bands, backbone, input_size=input_size, crop=s) for s in scales]
    model = _inference_model(backbone)
    views = [dihedral(x, j) for x in xs for j in ids]
    with torch.inference_mode():
        if all(v.shape == views[0].shape for v in views):
            x = torch.cat(views, dim=0).contiguous(memory_format=torch.channels_last) if len(views) > 1 else views[0]
            f = model(x).float()
        else:  # native sizes differ between scales: one pass per scale
            f = torch.cat([model(torch.cat(views[k * len(ids):(k + 1) * len(ids)], dim=0)
                                 .contiguous(memory_format=torch.channels_last)).float()
                           for k in range(len(scales))], dim=0)
    n = len(stamps)
    f = f.view(len(scales), len(ids), n, f.shape[1]).mean(dim=1)  # (scales, N, D)
    f = f.permute(1, 0, 2).reshape(n, -1)
    return f.cpu().numpy().astype(np.float32, copy=False)


_FAST: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _inference_model(backbone: Backbone) -> torch.nn.Module:
    """A cached fast inference copy of ``backbone.model`` (BN folded, channels-last).

    The cache key includes every parameter's and buffer's in-place version
    counter, so a model that was trained further (e.g. fine-tuned) since is
    copied again; the original module is never modified.
    """
    model = backbone.model
    key = (
        str(backbone.device),
        tuple(p._version for p in model.parameters()),
        tuple(b._version for b in model.buffers()),
        tuple(id(p) for p in model.parameters()),
    )
    hit = _FAST.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    size = int(backbone.native_size) if getattr(backbone, "fixed_input_size", False) else 32
    fast = inference_copy(model, device=backbone.device, check_size=size,
                          in_chans=int(getattr(backbone, "in_chans", 3))).to(backbone.device)
    _FAST[model] = (key, fast)
    return fast


def _batches(n: int, batch_size: int, start: int = 0) -> Iterator[slice]:
    for s in range(start, n, batch_size):
        yield slice(s, min(s + batch_size, n))


def _tta_batch(batch_size: int, n_tta: int, n_scales: int = 1) -> int:
    # keep the images per forward pass near batch_size
    return max(1, int(batch_size) // (n_tta * n_scales))


def extract_features(
    stamps: np.ndarray,
    bands: list[str],
    backbone: Backbone,
    *,
    batch_size: int = 64,
    tta: bool | int | None = None,
    input_size: int | None = None,
    scales: tuple[float, ...] | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Pooled CNN features of stretched stamps.

    Parameters
    ----------
    stamps : array (N, C, H, W)
        Stretched stamps in 0..1 (any number of bands C, see :func:`prepare_batch`).
    bands : list of str
        Band names of axis C.
    backbone : Backbone
        From :func:`galearn.features.load_backbone`.
    batch_size : int
        Images per forward pass (with TTA, transformed copies count).
    tta : bool or int or None
        Average the features over dihedral transforms of each stamp (flips and
        quarter turns are symmetries of galaxy images): None/False -> none,
        True -> 4 (quarter turns), or 2 (identity + flip) / 4 / 8 (all).
    input_size : int or None
        Resize stamps to this side (pixels) before the network; None: native.
    scales : tuple of float or None
        Central fractions of the stamp side, each cropped, resized to
        ``input_size`` and run through the network; their features are
        concatenated in this order. None: the whole stamp only (``galearn
        features`` uses :data:`DEFAULT_SCALES`).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    numpy.ndarray
        ``(N, backbone.dim * len(scales))`` float32.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise BadValueError(f"batch_size must be >= 1, got {batch_size}")
    stamps = np.asarray(stamps)
    if stamps.ndim != 4:
        raise BadValueError(f"stamps must be (N, C, H, W), got shape {stamps.shape}")
    n_tta = tta_count(tta)
    scales = (1.0,) if scales is None else check_scales(scales)
    out = np.empty((len(stamps), backbone.dim * len(scales)), dtype=np.float32)
    step = _tta_batch(batch_size, n_tta, len(scales))
    with tqdm(total=len(stamps), desc=f"features {backbone.name}", unit="img", disable=None if progress else True) as bar:
        for sl in _batches(len(stamps), step):
            out[sl] = _features_of_batch(stamps[sl], bands, backbone, input_size, n_tta, scales)
            bar.update(sl.stop - sl.start)
    return out


def cached_backbone(spec: dict) -> Backbone:
    """:func:`load_backbone` of ``spec`` (name, weights, workspace, device, layers, random_state), once per process.

    The key includes the weights file's size and modification time (and the
    adapted backbone's), so a changed file is loaded again.
    """
    adapted = Workspace(spec["workspace"]).adapted_backbone if spec.get("workspace") else None
    key = ("backbone", spec["name"], file_key(spec.get("weights")), file_key(adapted), spec.get("device"),
           spec.get("layers"), spec.get("random_state"), spec.get("workspace"), spec.get("allow_download"))

    def build() -> Backbone:
        torch.manual_seed(int(spec.get("random_state") or 0))
        return load_backbone(spec["name"], weights=spec.get("weights"), workspace=spec.get("workspace"),
                             device=spec.get("device"), layers=spec.get("layers"),
                             random_state=int(spec.get("random_state") or 0),
                             allow_download=bool(spec.get("allow_download", False)))

    return worker_cached(key, build)


def _rows_feature_task(part: dict, *, backbone_spec: dict, settings: dict) -> dict:
    """One partition of :func:`features_of_rows` (runs on a worker): features of rows ``part["rows"]``."""
    backbone = cached_backbone(backbone_spec)
    sample = open_sample(part["sample"])
    rows = np.asarray(part["rows"], dtype=np.int64)
    n_tta, scales = int(settings["n_tta"]), tuple(settings["scales"])
    step = _tta_batch(int(settings["batch_size"]), n_tta, len(scales))
    out = np.empty((len(rows), backbone.dim * len(scales)), dtype=np.float32)
    for sl in _batches(len(rows), step):
        out[sl] = _features_of_batch(sample.read("stretched", rows[sl]), sample.bands, backbone,
                                     settings["input_size"], n_tta, scales)
    return {"rows": rows, "features": out}


def features_of_rows(sample_path: str | os.PathLike, rows, backbone_spec: dict, *, tta=True,
                     input_size: int | None = DEFAULT_INPUT_SIZE, scales=None, batch_size: int = 64,
                     partition: int | None = None, stage: str = "features_of_rows") -> np.ndarray:
    """Features of some stamps of a sample (or library) file, in partitions through :mod:`galearn.compute`.

    The feature pass of ``galearn gan evaluate`` when no matching feature
    file exists: rows ``rows`` (sorted unique indices into ``sample_path``)
    are split into runs of ``partition`` stamps (``[compute] feature_partition``),
    each task reads its stamps itself and uses the backbone loaded once per
    worker (:func:`cached_backbone` of ``backbone_spec``: name, weights,
    workspace, device, layers, random_state). Settings as :func:`extract_features`.

    Returns
    -------
    numpy.ndarray
        ``(len(rows), dim * len(scales))`` float32, in the order of ``rows``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    scales = (1.0,) if scales is None else check_scales(scales)
    settings = {"n_tta": tta_count(tta), "scales": list(scales), "input_size": input_size,
                "batch_size": int(batch_size)}
    size = int(partition or setting("feature_partition", 1024))
    parts = [{"sample": str(sample_path), "rows": rows[a:b]} for a, b in partition_bounds(len(rows), size)]
    out: np.ndarray | None = None
    for _, res in map_partitions(_rows_feature_task, parts, desc="features", stage=stage, n_items=len(rows),
                                 shared={"backbone_spec": backbone_spec, "settings": settings}):
        if out is None:
            out = np.empty((len(rows), res["features"].shape[1]), dtype=np.float32)
        out[np.searchsorted(rows, res["rows"])] = res["features"]
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def _feature_fingerprint(attrs: dict, start: int, stop: int) -> str:
    import hashlib
    import json

    text = json.dumps({k: attrs[k] for k in sorted(attrs)}, default=str) + f"|{start}:{stop}"
    return hashlib.sha256(text.encode()).hexdigest()


def _feature_task(part: dict, *, backbone_spec: dict, attrs: dict) -> dict:
    """One partition of ``run_features`` (runs on a worker): stamps ``start:stop`` -> one shard file."""
    t0 = time.perf_counter()
    start, stop = part["start"], part["stop"]
    backbone = cached_backbone(backbone_spec)
    sample = open_sample(part["sample"])
    dim = int(attrs["dim"])
    values = np.empty((stop - start, dim), dtype=np.float32)
    for sl in _batches(stop, part["step"], start):
        values[sl.start - start : sl.stop - start] = _features_of_batch(
            sample.read("stretched", sl), sample.bands, backbone, part["input_size"], part["n_tta"],
            tuple(part["scales"]))
    checksum = write_shard(part["shard"], {"features": values}, n_rows=stop - start,
                           fingerprint=part["fingerprint"], attrs={"start": start, "stop": stop})
    return {"n": stop - start, "checksum": checksum, "seconds": time.perf_counter() - t0, "pid": os.getpid()}


def _write_feature_shards(path: Path, sample_path: Path, n: int, dim: int, attrs: dict, backbone_spec: dict, *,
                          step: int, part_size: int, input_size, n_tta: int, scales, library: bool) -> tuple[int, dict]:
    """Run the feature partitions not already complete; return (rows computed, provenance)."""
    bounds = partition_bounds(n, part_size, multiple=step)
    todo, skipped = [], 0
    for i, (a, b) in enumerate(bounds):
        fp = _feature_fingerprint(attrs, a, b)
        if check_shard(shard_path(path, i), fp, b - a) is not None:
            skipped += 1
            continue
        todo.append({"index": i, "start": a, "stop": b, "shard": str(shard_path(path, i)), "fingerprint": fp,
                     "sample": str(sample_path), "step": step, "input_size": input_size, "n_tta": n_tta,
                     "scales": list(scales)})
    if skipped:
        log.warning("resuming %s: %d of %d partitions already complete", path, skipped, len(bounds))
    n_new = 0
    stage = "library_features" if library else "features"
    for _, result in map_partitions(_feature_task, todo, desc=f"features {attrs['backbone']}", stage=stage,
                                    n_items=sum(t["stop"] - t["start"] for t in todo),
                                    shared={"backbone_spec": backbone_spec, "attrs": attrs}):
        n_new += result["n"]
    session = current_session()
    info = dict(session.stages.get(stage, {}), n_partitions=len(bounds), n_partitions_run=len(todo),
                n_partitions_skipped=skipped, partition_size=bounds[0][1] - bounds[0][0] if bounds else 0,
                bounds=bounds)
    info.setdefault("scheduler", session.spec.describe())
    return n_new, info


def run_features(ws: Workspace, cfg: FeatureConfig, *, library: bool = False, baseline: bool = False) -> Path:
    """``galearn features``: one feature vector per stamp of the sample (or GAN library).

    Reads ``WS/sample.h5`` (``library=True``: ``WS/library.h5``), writes
    ``WS/features/<backbone>.h5`` (``library_<backbone>.h5``) in chunks; an
    interrupted run resumes from the rows already written. For the sample,
    the workspace manifest's ``features`` entry names the file as the active
    one (what embed, classify and gan evaluate read) with the settings that
    made it, and metrics.json ``features`` reports the backbone, weights,
    dimension, throughput, input size, TTA and layers.

    Parameters
    ----------
    ws : Workspace
    cfg : FeatureConfig
    library : bool
        Features of the generated library instead of the sample.
    baseline : bool
        A comparison (baseline) backbone: recorded as manifest
        ``features_baseline`` and metrics.json ``baseline``, leaving the active
        feature file as it was.

    Returns
    -------
    Path
        The feature file.
    """

    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    src = ws.require(ws.library, "gan sample") if library else ws.require(ws.sample, "cutouts` or `galearn ingest-images")
    sample = open_sample(src)
    if cfg.batch_size < 1:
        raise BadValueError(f"features.batch_size must be >= 1, got {cfg.batch_size}")
    # checked before the slow part, so a bad option fails at once
    fuse, fuse_weight = check_fuse(cfg.fuse, cfg.fuse_weight)
    scales = check_scales(cfg.scales)
    backbone_spec = {
        "name": str(cfg.backbone), "weights": None if cfg.weights is None else str(cfg.weights),
        "workspace": str(ws.root), "device": cfg.device,
        "layers": tuple(cfg.layers or ()) or None, "random_state": int(cfg.random_state),
        "allow_download": bool(getattr(cfg, "allow_download", False)),
    }
    backbone = cached_backbone(backbone_spec)
    if str(cfg.backbone).lower() == "auto":
        log.warning("backbone auto -> %s (weights: %s)", backbone.name, backbone.weights)
    if cfg.input_size is not None:
        input_size = int(cfg.input_size)
    elif backbone.base is not None:
        input_size = int(backbone.native_size)  # an adapted backbone: the size it was trained at
    elif backbone.default_input_size is not None:
        input_size = int(backbone.default_input_size)  # e.g. a timm encoder: its pretrained_cfg input size
    else:
        input_size = DEFAULT_INPUT_SIZE
    if input_size <= 0:
        input_size = None  # 0: native size
    if backbone.fixed_input_size and (input_size or sample.stamp_size) != backbone.native_size:
        raise BadValueError(
            f"--input-size {input_size or 0}: {backbone.name} takes only {backbone.native_size}-pixel inputs "
            f"(use --input-size {backbone.native_size})"
        )
    mapping = band_mapping(list(sample.bands), backbone.in_chans)
    n_tta = tta_count(cfg.tta)
    path = ws.features(backbone.name, library=library)
    info = backbone.describe()
    attrs = {
        **info,
        "requested": str(cfg.backbone),
        "input_size": input_size if input_size is not None else sample.stamp_size,
        "tta": n_tta,
        "scales": list(scales),
        "bands": list(sample.bands),
        "rgb_order": [sample.bands[i] for i in rgb_order(list(sample.bands))],
        "band_mapping": mapping,
        "mean": list(backbone.mean),
        "std": list(backbone.std),
        "sample_checksum": sample.checksum,
        "source": "library" if library else "sample",
        "random_state": int(cfg.random_state),
        "galearn_version": __version__,
    }
    dim = backbone.dim * len(scales)
    attrs["dim"] = dim
    step = _tta_batch(cfg.batch_size, n_tta, len(scales))
    part_size = int(setting("feature_partition", 1024))
    t0 = time.perf_counter()
    n_new, partitions = _write_feature_shards(path, src, sample.n, dim, attrs, backbone_spec, step=step,
                                              part_size=part_size, input_size=input_size, n_tta=n_tta,
                                              scales=scales, library=library)
    seconds = time.perf_counter() - t0
    rate = n_new / seconds if seconds > 0 and n_new else 0.0
    attrs.update({"images_per_second": round(rate, 2), "seconds": round(seconds, 2),
                  "compute": partitions})
    shards = [shard_path(path, i) for i in range(len(partitions["bounds"]))]
    write_sharded_features(path, shards, [b - a for a, b in partitions["bounds"]], dim, sample.ids(), attrs)
    remove_stale_shards(path, shards)
    record_compute(ws, {"library_features" if library else ("features_baseline" if baseline else "features"):
                        partitions})
    fused_info = None
    if fuse != "none":
        path, fused_info = write_fused_features(
            ws, sample, path, fuse=fuse, weight=fuse_weight, library=library,
            n_jobs=int(cfg.fuse_jobs or 1),
        )
    if not library:
        entry = {
            "backbone": backbone.name,
            "pretrained": bool(backbone.pretrained),
            "weights": backbone.weights,
            "dim": int(dim),
            "images_per_second": round(rate, 2),
            "input_size": attrs["input_size"],
            "tta": n_tta,
            "scales": list(scales),
            "layers": list(backbone.layers),
            "device": backbone.device,
            "n_images": int(sample.n),
            "architecture": backbone.architecture,
            "weights_sha256": backbone.weights_sha256,
            "in_chans": int(backbone.in_chans),
            "band_mapping": mapping,
        }
        if backbone.base:
            entry["base"] = backbone.base
        if fused_info is not None:
            # the fused file is what embed / classify read: name it, and say what was fused
            entry["backbone"] = path.stem
            entry["cnn_backbone"] = backbone.name
            entry["dim"] = int(fused_info["cnn_dim"] + fused_info["block_dim"] * fused_info["repeats"])
            entry["fused"] = {k: v for k, v in fused_info.items() if k not in ("center", "scale")}
        update_manifest(ws, {"features_baseline" if baseline else "features": {
            "backbone": path.stem, "cnn_backbone": backbone.name, "path": relative_to_workspace(ws, path),
            "sample_checksum": sample.checksum, "settings": dataclasses.asdict(cfg),
            "compute": {k: v for k, v in partitions.items() if k != "bounds"}}})
        if baseline:
            update_metrics(ws.metrics, {"baseline": {"backbone": path.stem, "features": entry}}, replace=("baseline",))
        else:
            update_metrics(ws.metrics, {"features": entry}, replace=("features",))
    return path
