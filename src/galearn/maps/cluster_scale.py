"""Clusters of millions: fit on a seeded subsample, assign every other galaxy in partitions.

:func:`galearn.maps.default_clusters` standardises + PCA-reduces the features,
builds the clustering space (by default a 5-D UMAP of them) and clusters it,
all in one process and on every row. :func:`clusters_at_scale` does the same
steps on a seeded subsample of ``fit_subsample`` rows (the scaler + PCA, the
space's UMAP and the clusterer are fitted there), then places every other
galaxy with the fitted steps — ``reducer.transform``, ``UMAP.transform``,
:meth:`ClusterFit.predict` — in partitions of ``partition`` rows run through
:mod:`galearn.compute` (in-process or on a Dask cluster; each task reads its
rows of the feature file itself, the fitted steps are sent to each worker
once). Partitions are fixed by ``(N, partition)`` only, so the classes do not
depend on the scheduler or the number of workers.

With ``N <= fit_subsample`` it *is* :func:`default_clusters` (the default
run is unchanged). The bootstrap stability is measured on a seeded subsample
of at most ``stability_subsample`` rows of the fit sample (it re-fits the
space and the clusterer ``stability_resamples`` times).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ..compute import map_partitions, partition_bounds, subsample_indices
from ..errors import BadValueError
from ..features.fuse import append_block
from ..runtime import as_seed
from ..store import read_feature_block
from .clusters import (DEFAULT_K_RANGE, DEFAULT_STABILITY_RESAMPLES, UMAP_NEIGHBOURS, ClusterFit, cluster_space,
                       cluster_stability, default_clusters, fit_clusters, membership_probability)

__all__ = ["clusters_at_scale"]


def _space_model(Z: np.ndarray, space: str, seed: int):
    """Fit the clustering space on ``Z`` (the fit sample): ``(S_fit, model, graph)``; model None for ``pca``/``pca:N``.

    The UMAP has the settings of :func:`galearn.maps.clusters.cluster_space`
    (``UMAP_NEIGHBOURS`` neighbours, ``min_dist=0``, seeded), so ``S_fit`` equals
    ``cluster_space(Z, space)``; the fitted model places new rows with
    ``transform``; ``graph`` is its fuzzy neighbour graph (for ``method="graph"``).
    """
    kind, _, arg = str(space).partition(":")
    if kind == "umap" and arg:
        from umap import UMAP

        model = UMAP(n_components=int(arg), n_neighbors=min(UMAP_NEIGHBOURS, len(Z) - 1), min_dist=0.0,
                     random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(Z)
        return np.ascontiguousarray(model.embedding_, dtype=np.float64), model, model.graph_.tocsr()
    return cluster_space(Z, space, random_state=seed), None, None


def _space_of(Z: np.ndarray, space: str, model) -> np.ndarray:
    """Rows ``Z`` (reduced features) in the fitted clustering space."""
    if model is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.ascontiguousarray(model.transform(Z), dtype=np.float64)
    kind, _, arg = str(space).partition(":")
    return np.ascontiguousarray(Z if not arg else Z[:, : int(arg)], dtype=np.float64)


def _assign_task(part: dict, *, reducer, space: str, space_model, fit: ClusterFit) -> dict:
    """One partition (runs on a worker): rows -> reduced features -> clustering space -> cluster."""
    rows = np.asarray(part["rows"], dtype=np.int64)
    X = np.asarray(part["X"]) if "X" in part else read_feature_block(part["path"], part["start"], part["stop"], rows)
    if part.get("block") is not None:
        X = append_block(X, part["block"], part["block_repeats"])
    if space_model is not None and getattr(space_model, "n_jobs", None) not in (None, 1):
        space_model.n_jobs = 1  # one thread per worker process
    if part.get("xy") is not None:
        S = np.asarray(part["xy"], dtype=np.float64)
    else:
        S = _space_of(reducer.transform(np.asarray(X, dtype=np.float64)), space, space_model)
    return {"rows": rows, "S": S, "labels": fit.predict(S), "pid": os.getpid()}


def clusters_at_scale(
    X,
    *,
    fit_subsample: int | None = 50000,
    stability_subsample: int | None = 50000,
    feature_path: str | os.PathLike | None = None,
    partition: int = 20000,
    method: str | None = None,
    space: str | None = None,
    xy=None,
    select: str | None = None,
    n_clusters: int | None = None,
    k_max: int | None = None,
    min_cluster_size: int | None = None,
    stability_resamples: int = DEFAULT_STABILITY_RESAMPLES,
    max_components: int | None = 50,
    random_state=0,
    stage: str = "classify_assign",
    block=None,
    block_repeats: int = 1,
) -> tuple[ClusterFit, dict]:
    """:func:`default_clusters` of ``X`` fitted on a seeded subsample, every other row assigned in partitions.

    Parameters
    ----------
    X : array (N, D)
        Raw feature vectors (row i = row i of ``feature_path``).
    fit_subsample : int or None
        Rows the scaler + PCA, the space's UMAP and the clusterer are fitted on
        (seeded); None or >= N: all rows, exactly :func:`default_clusters`.
    stability_subsample : int or None
        Rows of the fit sample the bootstrap stability is measured on (None: all of it).
    feature_path : path-like or None
        The feature file ``X`` came from: each partition reads its own rows
        (None: the rows travel inside the task; small N only).
    partition : int
        Rows per assignment task (``[compute] transform_partition``).
    method, space, xy, select, n_clusters, k_max, min_cluster_size, stability_resamples, max_components
        As :func:`default_clusters` (None: its measured defaults).
    random_state : int
        Seed of the subsamples and of every fitted step.
    stage : str
        Name of the partitioned stage in the compute provenance.
    block, block_repeats : array (N, m) or None, int
        Extra columns appended ``block_repeats`` times to every row of ``X``
        before the clustering (the aperture colours of
        :func:`galearn.features.aperture.sample_colour_block`, standardised;
        :func:`galearn.features.fuse.append_block`); each partition appends its own rows.

    Returns
    -------
    fit : ClusterFit
        Labels, probabilities and points (the clustering space) of all N rows.
    info : dict
        Provenance: ``n_fit``, ``n_assigned``, ``subsample_seed``, ``n_partitions``,
        ``stability_rows``.
    """
    from .clusters import DEFAULT_CLUSTERER, DEFAULT_SPACE, _select_for
    from .reduce import reduce_features

    X = np.asarray(X)
    n = len(X)
    if block is not None:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or len(block) != n:
            raise BadValueError(f"the appended block is {block.shape} for {n} feature rows")
    seed = as_seed(random_state)
    method = DEFAULT_CLUSTERER if method is None else method
    space = DEFAULT_SPACE if space is None else space
    idx = subsample_indices(n, fit_subsample, seed)
    n_stab = n if stability_subsample is None else min(n, int(stability_subsample))
    if len(idx) == n and n_stab >= n:  # small enough: the in-process clustering, unchanged
        X_all = X if block is None else append_block(X, block, block_repeats)
        fit = default_clusters(X_all, method=method, space=space, xy=xy, select=select, n_clusters=n_clusters,
                               k_max=k_max, min_cluster_size=min_cluster_size,
                               stability_resamples=stability_resamples, max_components=max_components,
                               random_state=seed)
        return fit, {"n_fit": n, "n_assigned": 0, "stability_rows": n if stability_resamples else 0}
    if space == "map" and xy is None:
        raise BadValueError("cluster space 'map' needs the map: run `galearn embed` first")
    if len(idx) < n and feature_path is None and n > 200000:
        raise BadValueError("clusters_at_scale: pass feature_path for more than 200 000 rows "
                            "(the partitions read their rows from it)")

    select = _select_for(select, method, n_clusters, stability_resamples)
    k_range = (DEFAULT_K_RANGE[0], int(k_max) if k_max is not None else DEFAULT_K_RANGE[1])
    # ---- fit on the subsample: the same steps as default_clusters
    X_fit = X[idx] if block is None else append_block(X[idx], block[idx], block_repeats)
    Z_fit, reducer = reduce_features(X_fit, max_components=max_components, random_state=seed)
    if space == "map":
        xy = np.asarray(xy, dtype=np.float64)
        if len(xy) != n:
            raise BadValueError(f"the map has {len(xy)} rows for {n} galaxies: re-run `galearn embed`")
        S_fit, space_model, graph = np.ascontiguousarray(xy[idx]), None, None
    else:
        S_fit, space_model, graph = _space_model(Z_fit, space, seed)
    # a stability criterion of k measures its curve on the fit sample (fit_clusters' own max_fit rows)
    rebuild = ((lambda i, s: cluster_space(Z_fit[i], space, random_state=s,
                                                return_graph=method in ("graph", "spectral")))
               if space.startswith("umap") else None)
    fit = fit_clusters(S_fit, method=method, n_clusters=n_clusters, select=select, k_range=k_range,
                       min_cluster_size=min_cluster_size, graph=graph if method in ("graph", "spectral") else None,
                       n_resamples=int(stability_resamples or 0), rebuild=rebuild, random_state=seed)
    fit.space = space

    # ---- every other row, in partitions fixed by (n, partition)
    rest = np.ones(n, dtype=bool)
    rest[idx] = False
    parts = []
    for a, b in partition_bounds(n, partition):
        rows = np.flatnonzero(rest[a:b]) + a
        if not len(rows):
            continue
        part = {"start": a, "stop": b, "rows": rows}
        if space == "map":
            part["xy"] = xy[rows]
        elif feature_path is None:
            part["X"] = X[rows]
        else:
            part["path"] = str(feature_path)
        if block is not None and space != "map":
            part["block"], part["block_repeats"] = block[rows], int(block_repeats)
        parts.append(part)
    S_all = np.empty((n, S_fit.shape[1]), dtype=np.float64)
    labels = np.empty(n, dtype=np.int64)
    S_all[idx] = S_fit
    labels[idx] = fit.labels
    # the fitted steps travel once per worker; the fit's own arrays stay small (the fit sample only)
    shared = {"reducer": reducer, "space": space, "space_model": space_model,
              "fit": ClusterFit(labels=fit.labels, probability=fit.probability, n_clusters=fit.n_clusters,
                                method=fit.method, params=fit.params, model=fit.model,
                                fit_points=fit.fit_points, fit_labels=fit.fit_labels)}
    for _, res in (map_partitions(_assign_task, parts, desc="assign clusters", stage=stage,
                                  n_items=int(rest.sum()), shared=shared) if parts else ()):
        S_all[res["rows"]] = res["S"]
        labels[res["rows"]] = res["labels"]

    fit.labels = labels
    fit.points = S_all
    fit.probability = membership_probability(S_all, labels, fit, fit.model)
    fit.params = {**fit.params, "fit_subsample": int(len(idx))}

    # ---- stability on a seeded subsample of the fit sample
    stab_rows = 0
    if fit.stability is not None:  # measured with the choice of k
        stab_rows = int(fit.params.get("n_fit", len(idx)))
    elif stability_resamples and int(stability_resamples) > 0:
        sub = subsample_indices(len(idx), n_stab, seed + 1)
        stab_rows = int(len(sub))
        Z_sub = Z_fit[sub]
        rebuild = ((lambda i, s: cluster_space(Z_sub[i], space, random_state=s,
                                                return_graph=method in ("graph", "spectral")))
                   if space.startswith("umap") else None)
        fit.stability = cluster_stability(
            S_all[idx][sub], labels[idx][sub], method=method,
            n_clusters=None if method == "hdbscan" else fit.n_clusters, n_resamples=int(stability_resamples),
            random_state=seed, n_micro=fit.params.get("n_micro"),
            min_cluster_size=fit.params.get("min_cluster_size") if method == "hdbscan" else None, rebuild=rebuild)
    info = {"n_fit": int(len(idx)), "n_assigned": int(rest.sum()), "subsample_seed": int(seed),
            "n_partitions": len(parts), "partition_rows": int(partition), "stability_rows": stab_rows}
    return fit, info
