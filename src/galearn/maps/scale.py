"""Maps of millions: fit on a seeded subsample, place the rest with the fitted map's ``transform``.

t-SNE and UMAP cost grows faster than linearly and needs every point in one
process; a survey of millions is mapped by fitting the map (and the PCA before
it) on a seeded subsample of ``[compute] map_fit_subsample`` rows (50 000 by
default) and placing every other galaxy with ``transform`` (openTSNE's
``TSNEEmbedding.transform``, umap-learn's ``UMAP.transform``, PCA's projection),
in partitions of ``[compute] transform_partition`` rows that run on the Dask
cluster (:mod:`galearn.compute`). Each partition reads its rows of the feature
file itself; the fitted map is scattered to the workers once. Placed points do
not interact, so the result does not depend on the partitioning or the number
of workers.
"""

from __future__ import annotations

import os
import numpy as np

from ..compute import map_partitions, partition_bounds, subsample_indices
from ..store import read_feature_block

__all__ = ["fit_on_subsample", "fit_predict_on_subsample", "place_rows"]


def _transform_task(part: dict, *, model) -> dict:
    """Place rows ``part["rows"]`` (indices into the feature file, sorted) with ``model.transform``."""
    rows = np.asarray(part["rows"], dtype=np.int64)
    X = np.asarray(part["X"]) if "X" in part else read_feature_block(part["path"], part["start"], part["stop"], rows)
    n_jobs = getattr(model, "n_jobs", None)
    if n_jobs is not None and part.get("single_thread"):
        model.n_jobs = 1  # one thread per worker process
    return {"rows": rows, "xy": np.asarray(model.transform(X), dtype=np.float64), "pid": os.getpid()}


def fit_on_subsample(estimator, X: np.ndarray, *, feature_path: str | os.PathLike | None, subsample: int | None,
                     partition: int = 20000, random_state: int = 0) -> tuple[np.ndarray, dict]:
    """Fit ``estimator`` (a galearn map) on a seeded subsample of ``X``; place the rest with ``transform``.

    Parameters
    ----------
    estimator : TSNEMap, UMAPMap or PCAMap
    X : array (N, D)
        Features, row i = feature file row i.
    feature_path : path-like or None
        The feature file ``X`` came from (partitions read their rows from it);
        None: partitions get their rows in the task (small N only).
    subsample : int or None
        Rows the map is fitted on (None or >= N: all rows, a plain fit).
    partition : int
        Rows per ``transform`` partition.
    random_state : int
        Seed of the subsample.

    Returns
    -------
    embedding : array (N, 2)
    info : dict
        ``n_fit``, ``n_placed``, ``subsample_seed``, ``n_partitions`` (provenance).
    """
    n = len(X)
    idx = subsample_indices(n, subsample, random_state)
    if len(idx) < n and feature_path is None:
        raise ValueError("fit_on_subsample: pass feature_path (the transform partitions read their rows from it)")
    if len(idx) == n:
        estimator.fit(X)
        return np.asarray(estimator.embedding_, dtype=np.float64), {"n_fit": n, "n_placed": 0}
    estimator.fit(X[idx])
    out = np.full((n, 2), np.nan)
    out[idx] = estimator.embedding_
    rest_mask = np.ones(n, dtype=bool)
    rest_mask[idx] = False
    placed, n_parts = place_rows(estimator, n, rest_mask, feature_path=feature_path, partition=partition,
                                 stage="embed_transform")
    out[rest_mask] = placed
    return out, {"n_fit": int(len(idx)), "n_placed": int(rest_mask.sum()), "subsample_seed": int(random_state),
                 "n_partitions": n_parts}


def place_rows(model, n: int, mask: np.ndarray | None = None, *, feature_path: str | os.PathLike | None = None,
               X: np.ndarray | None = None, partition: int = 20000,
               stage: str = "embed_transform") -> tuple[np.ndarray, int]:
    """``model.transform`` of rows ``mask`` (all N when None) of a feature file, in partitions via galearn.compute.

    Partitions are runs of ``partition`` file rows (fixed by ``n`` and
    ``partition`` only); each reads its rows of ``feature_path`` itself (or
    gets them from ``X`` when no file is given). The fitted model is sent to
    each worker once. Returns ``(xy (n_rows, 2) in row order, n_partitions)``.
    """
    mask = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if feature_path is None and X is None:
        raise ValueError("place_rows: pass feature_path or X")
    parts = []
    for a, b in partition_bounds(n, partition):
        rows = np.flatnonzero(mask[a:b]) + a
        if len(rows):
            part = {"start": a, "stop": b, "rows": rows, "single_thread": True}
            if feature_path is not None:
                part["path"] = str(feature_path)
            else:
                part["X"] = np.asarray(X)[rows]
            parts.append(part)
    out = np.full((n, 2), np.nan)
    for _, res in (map_partitions(_transform_task, parts, desc="map transform", stage=stage,
                                  n_items=int(mask.sum()), shared={"model": model}) if parts else ()):
        out[res["rows"]] = res["xy"]
    return out[mask], len(parts)


def fit_predict_on_subsample(estimator, Z: np.ndarray, *, subsample: int | None, random_state: int = 0,
                             chunk: int = 100000) -> tuple[np.ndarray, dict]:
    """``estimator.fit`` on a seeded subsample of ``Z``, then ``predict`` every row in chunks.

    For clusterers with ``predict`` (k-means, mini-batch k-means, Gaussian
    mixtures); returns ``(labels (N,), info)``.
    """
    n = len(Z)
    idx = subsample_indices(n, subsample, random_state)
    if len(idx) == n:
        return np.asarray(estimator.fit_predict(Z), dtype=np.int64), {"n_fit": n}
    estimator.fit(Z[idx])
    labels = np.concatenate([estimator.predict(Z[s : s + chunk]) for s in range(0, n, chunk)])
    return labels.astype(np.int64), {"n_fit": int(len(idx)), "n_assigned": int(n - len(idx)),
                                     "subsample_seed": int(random_state)}
