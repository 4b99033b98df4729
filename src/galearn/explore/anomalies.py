"""The most unusual galaxies: anomaly scores in feature space (``galearn anomalies``).

Scores are computed in the space every galearn metric uses (features
standardised, then projected onto at most ``n_components`` principal
components, :mod:`galearn.maps.reduce`), with scikit-learn's
:class:`~sklearn.ensemble.IsolationForest` (Liu et al. 2008) or
:class:`~sklearn.neighbors.LocalOutlierFactor` (Breunig et al. 2000), the two
detectors of Astronomaly (Lochner & Bassett 2021). For large samples the
scaler, PCA and detector are fitted on a seeded random subsample of
``max_fit`` galaxies (``[compute] anomaly_fit_subsample``) and every galaxy is
scored in partitions of ``chunk_size`` rows (``[compute] anomaly_partition``)
through :func:`galearn.compute.map_partitions`: in this process or on a Dask
cluster (``--scheduler``), with the same scores either way.
"""

from __future__ import annotations

import os
import time

import numpy as np
from astropy.table import Table

from ..errors import BadValueError
from ..maps.reduce import check_features, make_reducer, pca_dimension
from ..runtime import as_seed, blas_threads
from ..store import Workspace, read_feature_block, update_metrics, write_table

__all__ = ["METHODS", "anomaly_scores", "reduce_for_scoring", "recall_at", "run_anomalies"]

#: Default rows the reducer and detector are fitted on (``[compute] anomaly_fit_subsample``).
DEFAULT_MAX_FIT = 20000
#: Default rows per scoring partition (``[compute] anomaly_partition``).
DEFAULT_PARTITION = 50000

METHODS = ("iforest", "lof")


def _fit_rows(n: int, max_fit: int, random_state) -> np.ndarray:
    """Sorted seeded subsample of ``max_fit`` rows of ``range(n)`` (all rows when n <= max_fit)."""
    rng = np.random.default_rng(as_seed(random_state))
    return np.sort(rng.choice(n, size=int(max_fit), replace=False)) if n > max_fit else np.arange(n)


def _fit_reducer(X: np.ndarray, fit_rows: np.ndarray, n_components: int | None, random_state):
    k = pca_dimension(X.shape[1], len(fit_rows), n_components) if n_components else None
    return make_reducer(k, as_seed(random_state)).fit(X[fit_rows])


def _n_out(reducer, dim: int) -> int:
    pca = reducer.named_steps.get("pca")
    return int(pca.n_components_) if pca is not None else int(dim)


def _score_task(part: dict, *, reducer, detector) -> dict:
    """Anomaly scores of rows ``part["start"]:part["stop"]`` (read from the feature file, or given in the part)."""
    block = np.asarray(part["X"]) if "X" in part else read_feature_block(part["path"], part["start"], part["stop"])
    with blas_threads(1):
        Z = reducer.transform(check_features(block, min_samples=1))
        return {"start": part["start"], "scores": np.asarray(-detector.score_samples(Z), dtype=np.float64),
                "pid": os.getpid()}


def reduce_for_scoring(X, *, n_components: int | None = 50, max_fit: int = 20000, chunk_size: int = 50000,
                       random_state=0) -> tuple[np.ndarray, np.ndarray]:
    """Standardise + PCA ``X`` (fitted on at most ``max_fit`` rows); return ``(Z, fit_rows)``.

    Parameters
    ----------
    X : array-like, shape (N, D)
    n_components : int or None
        At most this many principal components (None: standardise only).
    max_fit : int
        Rows used to fit the scaler and PCA (a seeded random subset beyond).
    chunk_size : int
        Rows transformed at a time.
    random_state : int, numpy.random.Generator or None
        Seed of the subsample and of the PCA solver.

    Returns
    -------
    Z : numpy.ndarray, shape (N, K), float64
    fit_rows : numpy.ndarray of int
        Sorted rows the reducer (and the detector) are fitted on.
    """
    X = check_features(X)
    n = len(X)
    fit_rows = _fit_rows(n, max_fit, random_state)
    reducer = _fit_reducer(X, fit_rows, n_components, random_state)
    k = _n_out(reducer, X.shape[1])
    Z = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, int(chunk_size)):
        Z[start:start + chunk_size] = reducer.transform(X[start:start + chunk_size])
    return Z, fit_rows


def anomaly_scores(X, *, method: str = "lof", n_components: int | None = 50, n_estimators: int = 300,
                   n_neighbors: int = 20, max_fit: int = DEFAULT_MAX_FIT, chunk_size: int = DEFAULT_PARTITION,
                   feature_path: str | os.PathLike | None = None, random_state=0,
                   info: dict | None = None) -> np.ndarray:
    """Anomaly score of every galaxy: higher means more unusual (dimensionless).

    The scaler, PCA and detector are fitted in this process on a seeded
    subsample of ``max_fit`` rows; when that is every row and the method is
    LOF, the scores are the fitted LOF of every galaxy (each without itself as
    a neighbour). Otherwise every row is scored in partitions of
    ``chunk_size`` rows by :func:`galearn.compute.map_partitions` (the fitted
    reducer and detector are sent to each worker once); the scores do not
    depend on the scheduler or the number of workers.

    Parameters
    ----------
    X : array-like, shape (N, D)
        Feature vectors (one per galaxy).
    method : {"lof", "iforest"}
        Default ``lof``: it found more of the mock's rare kinds than the
        isolation forest (``benchmarks/bench_explore.py``). Isolation forest (score: minus scikit-learn's ``score_samples``, i.e.
        the mean path length turned into the Liu et al. anomaly score) or
        local outlier factor (score: the LOF, ~1 for inliers).
    n_components : int or None
        Principal components of the space the detector works in.
    n_estimators : int
        Trees of the isolation forest.
    n_neighbors : int
        Neighbours of the local outlier factor.
    max_fit, chunk_size : int
        Subsample the reducer and detector are fitted on; rows per scoring partition.
    feature_path : path-like or None
        The feature file ``X`` is row for row (partitions then read their rows
        from it instead of carrying them); None: rows travel in the tasks.
    random_state : int, numpy.random.Generator or None
        Seed of the subsample, PCA and isolation forest.
    info : dict, optional
        Filled with the provenance: ``n_fit``, ``n_partitions``, ``partition_size``.

    Returns
    -------
    numpy.ndarray, shape (N,), float64

    Raises
    ------
    BadValueError
        Unknown method, fewer than 3 galaxies, options out of range.
    """
    from ..compute import map_partitions, partition_bounds

    if method not in METHODS:
        raise BadValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if int(max_fit) < 3 or int(chunk_size) < 1 or int(n_estimators) < 1 or int(n_neighbors) < 1:
        raise BadValueError("anomalies: max_fit (anomaly_fit_subsample) >= 3, chunk_size (anomaly_partition), "
                            f"n_estimators and n_neighbors >= 1 are needed; got max_fit={max_fit}, "
                            f"chunk_size={chunk_size}, n_estimators={n_estimators}, n_neighbors={n_neighbors}")
    X = check_features(X, min_samples=3)
    seed = as_seed(random_state)
    n = len(X)
    info = {} if info is None else info
    with blas_threads(1):
        fit_rows = _fit_rows(n, int(max_fit), seed)
        reducer = _fit_reducer(X, fit_rows, n_components, seed)
        Zfit = reducer.transform(X[fit_rows])
        info.update(n_fit=int(len(fit_rows)), n_partitions=0, partition_size=int(chunk_size))
        if method == "iforest":
            from sklearn.ensemble import IsolationForest

            det = IsolationForest(n_estimators=int(n_estimators), random_state=seed, n_jobs=1).fit(Zfit)
        else:
            from sklearn.neighbors import LocalOutlierFactor

            k = min(int(n_neighbors), len(fit_rows) - 1)
            if len(fit_rows) == n:  # every galaxy is in the fit: its own LOF, without itself as a neighbour
                return -LocalOutlierFactor(n_neighbors=k).fit(Zfit).negative_outlier_factor_.astype(np.float64)
            det = LocalOutlierFactor(n_neighbors=k, novelty=True).fit(Zfit)
    parts = []
    for a, b in partition_bounds(n, int(chunk_size)):
        part = {"start": a, "stop": b}
        if feature_path is None:
            part["X"] = X[a:b]
        else:
            part["path"] = os.fspath(feature_path)
        parts.append(part)
    scores = np.full(n, np.nan)
    for _, res in map_partitions(_score_task, parts, desc=f"anomalies {method}", stage="anomalies", n_items=n,
                                 shared={"reducer": reducer, "detector": det}):
        scores[res["start"]:res["start"] + len(res["scores"])] = res["scores"]
    info["n_partitions"] = len(parts)
    return scores


def ranks_of(scores: np.ndarray) -> np.ndarray:
    """Rank of every score (1 = highest; ties by row), as int64."""
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores)))
    rank = np.empty(len(scores), dtype=np.int64)
    rank[order] = np.arange(1, len(scores) + 1)
    return rank


def recall_at(order: np.ndarray, is_target: np.ndarray, n: int) -> float:
    """Fraction of the targets among the first ``n`` rows of ``order`` (NaN when there is no target)."""
    total = int(np.count_nonzero(is_target))
    if total == 0:
        return float("nan")
    return float(np.count_nonzero(is_target[np.asarray(order)[:n]]) / total)


def run_anomalies(ws: Workspace, *, method: str = "lof", backbone: str | None = None,
                  n_components: int | None = 50, max_fit: int | None = None, chunk_size: int | None = None,
                  random_state=0, truth_column: str = "truth_rare", none_value: str = "none") -> dict:
    """``galearn anomalies``: write ``WS/anomalies.ecsv`` (id, score, rank) and metrics.json ``anomalies``.

    ``max_fit`` / ``chunk_size`` default to ``[compute] anomaly_fit_subsample``
    (20 000) / ``anomaly_partition`` (50 000) of the current compute session;
    the scoring partitions run where the session says (``--scheduler``), and
    the entry's ``compute`` key records the scheduler, workers and partitions.
    When the catalogue has ``truth_column`` (the mock's ``truth_rare``), the
    metrics also give the recall of its rare galaxies (value != ``none_value``)
    in the top 50 and 100 and what a random ranking gives on average.

    Returns
    -------
    dict
        The ``anomalies`` metrics entry.
    """
    from ..compute import current_session, setting
    from ..store import load_features, require_sample, resolve_backbone

    max_fit = int(setting("anomaly_fit_subsample", DEFAULT_MAX_FIT) if max_fit is None else max_fit)
    chunk_size = int(setting("anomaly_partition", DEFAULT_PARTITION) if chunk_size is None else chunk_size)
    if max_fit < 3:
        raise BadValueError(f"anomalies: the fit subsample (--max-fit / [compute] anomaly_fit_subsample) must be "
                            f">= 3, got {max_fit}")
    if chunk_size < 1:
        raise BadValueError(f"anomalies: [compute] anomaly_partition must be >= 1 row, got {chunk_size}")
    sample = require_sample(ws)
    backbone = resolve_backbone(ws, backbone)
    feats = load_features(ws, backbone, sample=sample)
    t0 = time.perf_counter()
    info: dict = {}
    session = current_session()
    scores = anomaly_scores(feats.values, method=method, n_components=n_components, max_fit=max_fit,
                            chunk_size=chunk_size, feature_path=ws.features(backbone), random_state=random_state,
                            info=info)
    seconds = time.perf_counter() - t0
    ran = session.stages.get("anomalies", {}) if info["n_partitions"] else {}
    compute = {"scheduler": ran.get("scheduler", session.spec.describe()), "n_workers": ran.get("n_workers", 1),
               "address": ran.get("address", "in-process"), "n_partitions": info["n_partitions"], "partition_size": info["partition_size"],
               "fit_subsample": max_fit}
    rank = ranks_of(scores)
    table = Table()
    table["id"] = np.asarray(feats.ids).astype(str)
    table["score"] = scores
    table["rank"] = rank
    table.meta.update({"method": method, "backbone": backbone, "n_components": n_components,
                       "max_fit": int(max_fit), "random_state": random_state, "compute": compute,
                       "score": "higher = more unusual"})
    write_table(ws.anomalies, table)
    if ran:
        from ..store import record_compute

        record_compute(ws, {"anomalies": dict(ran, **compute)})
    n = len(scores)
    entry = {"method": method, "backbone": backbone, "n_galaxies": n, "n_fit": info["n_fit"],
             "n_components": n_components, "seconds": round(seconds, 3), "compute": compute}
    cat = sample.catalog
    if truth_column in cat.colnames:
        truth = np.asarray(cat[truth_column]).astype(str)
        rare = (truth != none_value) & (truth != "")
        order = np.argsort(rank)
        entry["truth"] = {"column": truth_column, "n_rare": int(rare.sum())}
        for top in (50, 100):
            entry["truth"][f"recall_top{top}"] = recall_at(order, rare, top)
            entry["truth"][f"recall_top{top}_random"] = min(top, n) / n
    update_metrics(ws.metrics, {"anomalies": entry}, replace=("anomalies",))
    return entry
