"""``galearn classify``: UVJ classes, clusters, and agreement for every compared column.

Reads the sample (catalogue), the feature file(s) and, when present, the map;
writes

* ``metrics.json`` key ``agreement``: ``{column: {...}}`` for the primary
  backbone (:func:`galearn.evaluate.agreement_metrics` per column);
* ``agreement_by_backbone``: ``{backbone: {column: {...}}}`` for every other
  feature file of the same sample (e.g. ``random-resnet18`` next to
  ``efficientnet-lite0``);
* ``clusters``: the workspace-wide clustering used by the report (method,
  number, sizes, and its ARI / NMI / cluster accuracy against each column);
* ``WS/classes.ecsv``: one row per galaxy: ``id``, ``uvj_class``, ``cluster``,
  ``map_x``, ``map_y``, every compared column and its cross-validated kNN
  prediction (``knn_<column>``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings

import numpy as np
from astropy.table import Table

from ..config import ClassifyConfig
from ..errors import BadValueError, EmptySelectionError, GalearnInputError, MissingInputError
from ..compute import current_session, setting, subsample_indices
from ..maps.cluster_scale import clusters_at_scale
from ..maps.clusters import CLUSTERERS, DEFAULT_SPACE, default_method
from ..runtime import blas_threads
from ..store import (Sample, Workspace, check_made_from, load_features, read_map, record_compute, require_sample,
                     resolve_backbone, update_metrics, write_table)
from .agreement import compare_labels, label_array
from .summary import cluster_summary
from ..survey.uvj import UVJ_COLUMN, uvj_class_of_catalog

__all__ = ["run_classify", "comparison_columns", "TRUTH_PREFIX"]

log = logging.getLogger(__name__)

TRUTH_PREFIX = "truth_"
#: Stamps per cluster in ``clusters.typical_ids`` (the report's cluster gallery): nearest the cluster centre.
TYPICAL_PER_CLUSTER = 8
#: truth columns not compared by default: the mock's rare kinds (a few per cent; `galearn anomalies` measures them).
NOT_COMPARED_BY_DEFAULT = ("truth_rare",)


def comparison_columns(sample: Sample, compare=()) -> dict[str, np.ndarray]:
    """The classifications to compare with, as ``{column: labels}`` (``""`` = no label).

    Parameters
    ----------
    sample : Sample
    compare : sequence of str
        Column names; ``uvj_class`` means the UVJ class computed from the
        catalogue's rest-frame U, V, J and redshift. Empty: the UVJ class
        (where U, V, J and z exist) and every string column whose name starts
        with ``truth_``.

    Raises
    ------
    BadValueError
        A named column does not exist or is not categorical.
    EmptySelectionError
        Nothing to compare (no UVJ columns, no truth columns, none named).
    """
    catalog = sample.catalog
    uvj = uvj_class_of_catalog(catalog, sample.columns)
    out: dict[str, np.ndarray] = {}
    if compare:
        for name in compare:
            if name in out:
                continue
            if name == UVJ_COLUMN and name not in catalog.colnames:
                if uvj is None:
                    raise BadValueError(
                        f"--compare {name}: {sample.path} has no rest-frame U, V, J and redshift columns "
                        "(roles u_mag, v_mag, j_mag, z), so there is no UVJ class"
                    )
                out[name] = uvj
            elif name in catalog.colnames:
                out[name] = label_array(catalog[name], name=f"column {name!r} of {sample.path}")
            else:
                raise BadValueError(
                    f"--compare {name}: no column {name!r} in the catalogue of {sample.path} "
                    f"(columns: {', '.join(catalog.colnames)}; or {UVJ_COLUMN})"
                )
        return out
    if uvj is not None:
        out[UVJ_COLUMN] = uvj
    for name in catalog.colnames:
        col = catalog[name]
        if name in NOT_COMPARED_BY_DEFAULT:
            continue
        if name.startswith(TRUTH_PREFIX) and col.ndim == 1 and col.dtype.kind in "USO":
            out[name] = label_array(col, name=f"column {name!r} of {sample.path}")
    if not out:
        raise EmptySelectionError(
            f"nothing to compare in {sample.path}: no rest-frame U, V, J + redshift columns and no "
            f"{TRUTH_PREFIX}* columns; name a label column with --compare COLUMN "
            f"(columns: {', '.join(catalog.colnames)})"
        )
    return out


def _agreement_for(features: np.ndarray, columns: dict, cfg: ClassifyConfig, backbone: str,
                   explicit: bool, skipped: dict, fit, rows: np.ndarray | None = None):
    """Agreement per column on ``rows`` (a seeded subsample at scale; None: every galaxy).

    Per-galaxy outputs (kNN prediction, included) are returned at full length,
    empty / False outside ``rows``.
    """
    n = len(features)
    sub = rows is not None and len(rows) < n
    X = features[rows] if sub else features
    results = {}
    for column, labels in columns.items():
        try:
            res = compare_labels(X, labels[rows] if sub else labels, random_state=cfg.random_state,
                                 clusterer=fit.method, clusters=fit.labels[rows] if sub else fit.labels,
                                 stability=fit.stability, name=f"column {column!r}")
        except EmptySelectionError as exc:
            if explicit:
                raise
            skipped[column] = str(exc)
            warnings.warn(f"classify: skipping {column}: {exc}", stacklevel=3)
            continue
        res.metrics["backbone"] = backbone
        res.metrics["cluster_space"] = fit.space
        res.metrics["cluster_select"] = fit.select
        if sub:
            res.metrics["agreement_subsample"] = {"rows": int(len(rows)), "of": int(n),
                                                  "seed": int(cfg.random_state)}
            knn = np.full(n, "", dtype=res.knn_prediction.dtype)
            knn[rows] = res.knn_prediction
            included = np.zeros(n, dtype=bool)
            included[rows] = res.included
            clusters = np.full(n, -1, dtype=np.int64)
            clusters[rows] = res.clusters
            res.knn_prediction, res.included, res.clusters = knn, included, clusters
        results[column] = res
    return results


def colour_block_for(sample: Sample, cfg: ClassifyConfig, space: str) -> tuple[dict | None, dict]:
    """The label-free aperture-colour block appended to the clustering features, and its record.

    Returns ``(block, record)``: ``block`` is None or ``{"values": (N, m)
    robust-standardised, "names": [...], "raw": (N, m)}``; ``record`` (for
    ``metrics.json`` ``clusters.colours``) says whether it was fused and why
    (``cfg.colours``: ``auto`` fuses it when the stamps are in linear units,
    never for display images; ``on`` requires it; ``off``).
    """
    from ..features.aperture import APERTURE_RADII_64, sample_colour_block
    from ..features.fuse import robust_standardise

    setting_ = cfg.colours
    if setting_ not in ("auto", "on", "off"):
        raise BadValueError(f"classify.colours must be auto, on or off, got {setting_!r}")
    record = {"setting": setting_, "fused": False}
    if setting_ == "off":
        record["reason"] = "classify.colours = off"
        return None, record
    if space.startswith("map"):
        if setting_ == "on":
            raise BadValueError("classify.colours = on: the clusters of the 2-D map (--cluster-space map) "
                                "use the map alone; choose another space or colours=off")
        record["reason"] = "the clustering space is the 2-D map"
        return None, record
    found = sample_colour_block(sample)
    if found is None:
        why = ("display images (ingest-images): pixel ratios of stretched images are not colours"
               if sample.display_images else "the sample has no physical stamps")
        if setting_ == "on":
            raise BadValueError(f"classify.colours = on: {sample.path} cannot give aperture colours: {why}")
        record["reason"] = why
        return None, record
    raw, names = found
    record.update(fused=True, columns=names, weight=float(cfg.colour_weight),
                  radii_pixels_64=list(APERTURE_RADII_64), stamps="physical")
    return {"values": robust_standardise(raw)[0], "names": names, "raw": raw}, record


def _cluster(features: np.ndarray, cfg: ClassifyConfig, space: str, xy, feature_path=None, stage="classify_assign",
             colours: dict | None = None):
    """The workspace-wide, label-free clustering (``cfg``'s method, ``space``) with its stability.

    Fitted on a seeded subsample of ``cfg.fit_subsample`` rows and the rest
    assigned in partitions through :mod:`galearn.compute` when there are more
    (:func:`galearn.maps.cluster_scale.clusters_at_scale`); returns ``(fit, info)``.
    ``colours`` (:func:`colour_block_for`) is appended to the features, weighted
    to ``cfg.colour_weight`` of the standardised variance (``info["colour_repeats"]``).
    """
    from ..features.fuse import fuse_repeats

    block, repeats = None, 1
    if colours is not None:
        block = colours["values"]
        repeats = fuse_repeats(features.shape[1], block.shape[1], cfg.colour_weight)
    with blas_threads(1):
        fit, info = clusters_at_scale(
            features, method=cfg.clusterer, space=space, xy=xy, select=cfg.select, n_clusters=cfg.n_clusters,
            k_max=cfg.k_max, min_cluster_size=cfg.min_cluster_size, stability_resamples=cfg.stability_resamples,
            fit_subsample=cfg.fit_subsample, stability_subsample=cfg.agreement_subsample,
            feature_path=feature_path, partition=int(setting("transform_partition", 20000)),
            random_state=cfg.random_state, stage=stage, block=block, block_repeats=repeats)
    if block is not None:
        info["colour_repeats"] = int(repeats)
    return fit, info


def _read_map_for(ws: Workspace, method: str, sample: Sample):
    path = ws.map(method)
    if not path.exists():
        return None, None
    xy, ids, attrs = read_map(path)
    check_made_from(path, attrs.get("sample_checksum"), sample, f"galearn embed --workspace {ws.root} --method {method}")
    if len(ids) != sample.n or not np.array_equal(ids, sample.ids()):
        raise BadValueError(f"{path} does not match the stamps of {sample.path}: re-run `galearn embed`")
    return np.asarray(xy, dtype=np.float64), attrs


def _summary_quantities(sample: Sample) -> dict:
    """Redshift, stellar mass and SFR columns of the catalogue (catalogue units) for the cluster summary."""
    out = {}
    for role in ("z", "mass", "sfr"):
        name = sample.columns.get(role)
        if name and name in sample.catalog.colnames:
            col = sample.catalog[name]
            try:
                out[role] = np.ma.filled(np.ma.asarray(col, dtype=np.float64), np.nan)
            except (TypeError, ValueError):
                continue
    return out


def run_classify(ws: Workspace, cfg: ClassifyConfig) -> dict:
    """``galearn classify``: agreement of the features (and map) with each compared column.

    Parameters
    ----------
    ws : Workspace
        Needs ``sample.h5`` and at least one feature file; the map
        ``maps/<cfg.method>.h5`` is used when present (required for
        ``clusterer="hdbscan"``).
    cfg : ClassifyConfig
        ``compare`` (columns; empty = UVJ class + ``truth_*`` columns),
        ``backbone`` (primary feature file; None = the one ``features``
        recorded), ``method`` (map), ``clusterer`` / ``cluster_space`` /
        ``select`` / ``n_clusters`` / ``k_max`` / ``min_cluster_size`` (the
        label-free clustering, :func:`galearn.maps.default_clusters`; made
        once, compared with every column), ``stability_resamples``,
        ``random_state``.

    Returns
    -------
    dict
        The metrics merged into metrics.json: ``agreement``, ``clusters``,
        ``timing`` and, with several feature files, ``agreement_by_backbone``.

    Raises
    ------
    MissingInputError, BadValueError, EmptySelectionError
        Missing inputs, unknown columns or options, nothing to compare.
    """
    t0 = time.perf_counter()
    if cfg.clusterer != "auto" and cfg.clusterer not in CLUSTERERS:
        raise BadValueError(f"unknown clusterer {cfg.clusterer!r} (option --clusterer); "
                            f"choose auto or one of {', '.join(CLUSTERERS)}")
    if cfg.n_clusters is not None and int(cfg.n_clusters) < 1:
        raise BadValueError(f"--n-clusters must be >= 1, got {cfg.n_clusters}")
    if cfg.n_clusters is not None and cfg.clusterer == "hdbscan":
        raise BadValueError("--n-clusters: hdbscan chooses its own number of clusters; leave it unset")
    space = cfg.cluster_space or ("map" if cfg.clusterer == "hdbscan" else DEFAULT_SPACE)
    sample = require_sample(ws)
    explicit = bool(cfg.compare)
    columns = comparison_columns(sample, tuple(cfg.compare or ()))
    primary = resolve_backbone(ws, cfg.backbone)
    feats = load_features(ws, primary, sample=sample)
    xy, map_attrs = _read_map_for(ws, cfg.method, sample)
    if map_attrs is not None and map_attrs.get("backbone") not in (None, primary):
        warnings.warn(f"classify: {ws.map(cfg.method)} was made from {map_attrs.get('backbone')} features, "
                      f"the agreement uses {primary}", stacklevel=2)
    if space == "map" and xy is None:
        raise MissingInputError(f"{ws.map(cfg.method)} does not exist: clustering the map (--clusterer hdbscan / "
                                f"--cluster-space map) needs it; run `galearn embed --workspace {ws.root} "
                                f"--method {cfg.method}` first")

    # ------------------------------------------------------------ workspace-wide clusters (no labels)
    colours, colour_record = colour_block_for(sample, cfg, space)
    if cfg.clusterer == "auto":  # the measured default for this kind of stamps (docs/maps.md, round 4)
        clusterer, auto_space = default_method(colours is not None)
        if cfg.cluster_space is None:
            space = auto_space
        cfg = dataclasses.replace(cfg, clusterer=clusterer)
    fit, scale_info = _cluster(feats.values, cfg, space, xy, ws.features(primary), colours=colours)
    if colours is not None:
        colour_record["repeats"] = scale_info.pop("colour_repeats")
    if space == "map":
        fit.space = f"map:{cfg.method}"
    # agreement (kNN / linear cross-validation, cluster scores) on a stated, seeded subsample at scale
    agree_rows = subsample_indices(sample.n, cfg.agreement_subsample, cfg.random_state)
    scale_info["agreement_rows"] = int(len(agree_rows))

    skipped: dict[str, str] = {}
    results = _agreement_for(feats.values, columns, cfg, primary, explicit, skipped, fit, agree_rows)
    if not results:
        raise EmptySelectionError(f"no column could be compared: {'; '.join(skipped.values())}")

    by_backbone: dict[str, dict] = {}
    for other in ws.feature_backbones():
        if other == primary:
            continue
        try:
            other_feats = load_features(ws, other, sample=sample)
        except GalearnInputError as exc:
            warnings.warn(f"classify: not comparing backbone {other}: {exc}", stacklevel=2)
            continue
        # the map belongs to the primary features: another backbone is clustered in its own PCA space
        other_fit, _ = _cluster(other_feats.values, cfg, DEFAULT_SPACE if space == "map" else space, None,
                                ws.features(other), stage=f"classify_assign_{other}", colours=colours)
        other_results = _agreement_for(other_feats.values, {c: columns[c] for c in results}, cfg, other,
                                       explicit, {}, other_fit, agree_rows)
        by_backbone[other] = {c: r.metrics for c, r in other_results.items()}

    uvj = uvj_class_of_catalog(sample.catalog, sample.columns)
    cluster = fit.labels
    clusters_metrics = {
        "backbone": primary,
        "sample_checksum": sample.checksum,  # the report refuses metrics of another sample
        "clusterer": fit.method,
        **fit.summary(),
        "n_noise": int((cluster < 0).sum()),
        "scale": scale_info,  # rows fitted / assigned in partitions, agreement and stability rows (seeded)
        "colours": colour_record,  # the label-free aperture colours appended to the clustering features, or why not
        "agreement": {},
    }
    for column, res in results.items():
        m = res.metrics
        clusters_metrics["agreement"][column] = {
            k: m[k] for k in ("cluster_majority_balanced_accuracy", "majority_rate", "ari", "nmi", "ami",
                              "cluster_accuracy", "cluster_balanced_accuracy")
        } | {"contingency": m["confusion"]["clusters"]}
    summary_labels = {}
    if uvj is not None:
        summary_labels[UVJ_COLUMN] = uvj
    summary_labels.update({c: columns[c] for c in columns if c != UVJ_COLUMN})
    clusters_metrics["summary"] = cluster_summary(cluster, probability=fit.probability,
                                                  quantities=_summary_quantities(sample),
                                                  labels=summary_labels)
    ids = sample.ids()
    clusters_metrics["typical_ids"] = {str(c): [str(ids[i]) for i in idx]
                                       for c, idx in fit.typical(fit.points, TYPICAL_PER_CLUSTER).items()}
    if skipped:
        clusters_metrics["skipped_columns"] = skipped

    # ------------------------------------------------------------ per-galaxy table
    table = Table()
    table["id"] = sample.ids()
    table["uvj_class"] = uvj if uvj is not None else np.full(sample.n, "", dtype="U1")
    table["cluster"] = cluster
    table["cluster_probability"] = fit.probability
    table["cluster_outlier"] = fit.outlier
    table["map_x"] = xy[:, 0] if xy is not None else np.full(sample.n, np.nan)
    table["map_y"] = xy[:, 1] if xy is not None else np.full(sample.n, np.nan)
    if colours is not None:  # the measured colours (mag) / concentration (dex) the clustering saw
        for j, name in enumerate(colours["names"]):
            table[f"aperture_{name}"] = colours["raw"][:, j]
    for column in columns:
        if column != UVJ_COLUMN:
            table[column] = columns[column]
        if column in results:
            table[f"knn_{column}"] = results[column].knn_prediction
    table.meta.update(
        sample_checksum=sample.checksum,
        backbone=primary,
        map=cfg.method if xy is not None else None,
        clusterer=fit.method,
        cluster_space=fit.space,
        description="One row per stamp of sample.h5 (same order). Empty class strings (read back from ECSV as masked) mean no class; "
                    "cluster -1 / cluster_outlier true means in no cluster (hdbscan); cluster_probability is the "
                    "membership probability of the galaxy's own cluster (docs/maps.md); knn_<column> is the 5-fold cross-validated "
                    "kNN prediction (empty where the galaxy was not compared).",
    )
    write_table(ws.classes, table)

    agreement = {c: r.metrics for c, r in results.items()}
    new = {"agreement": agreement, "clusters": clusters_metrics,
           "timing": {"classify": round(time.perf_counter() - t0, 3)}}
    if by_backbone:
        new["agreement_by_backbone"] = by_backbone
    update_metrics(ws.metrics, new, replace=("agreement", "agreement_by_backbone", "clusters"))
    record_compute(ws, current_session().provenance(prefix="classify_assign"))
    log.info("classify: %s", ", ".join(f"{c} kNN {m['knn_balanced_accuracy']:.3f}" for c, m in agreement.items()))
    return new

