"""The most unusual galaxies: anomaly scores in feature space (``galearn anomalies``).

Scores are computed in the space every galearn metric uses (features
standardised, then projected onto at most ``n_components`` principal
components, :mod:`galearn.maps.reduce`), with scikit-learn's
:class:`~sklearn.ensemble.IsolationForest` (Liu et al. 2008) or
:class:`~sklearn.neighbors.LocalOutlierFactor` (Breunig et al. 2000), the two
detectors of Astronomaly (Lochner & Bassett 2021). For large samples the
scaler, PCA and detector are fitted on a seeded random subsample of
``max_fit`` galaxies and every galaxy is scored in chunks of ``chunk_size``, so
memory stays bounded.
"""

from __future__ import annotations

import time

import numpy as np
from astropy.table import Table

from ..errors import BadValueError
from ..maps.reduce import check_features, make_reducer, pca_dimension
from ..runtime import as_seed, blas_threads
from ..store import Workspace, update_metrics, write_table

__all__ = ["METHODS", "anomaly_scores", "reduce_for_scoring", "recall_at", "run_anomalies"]

METHODS = ("iforest", "lof")


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
    rng = np.random.default_rng(as_seed(random_state))
    fit_rows = np.sort(rng.choice(n, size=max_fit, replace=False)) if n > max_fit else np.arange(n)
    k = pca_dimension(X.shape[1], len(fit_rows), n_components) if n_components else None
    reducer = make_reducer(k, as_seed(random_state)).fit(X[fit_rows])
    Z = np.empty((n, k or X.shape[1]), dtype=np.float64)
    for start in range(0, n, int(chunk_size)):
        Z[start:start + chunk_size] = reducer.transform(X[start:start + chunk_size])
    return Z, fit_rows


def anomaly_scores(X, *, method: str = "lof", n_components: int | None = 50, n_estimators: int = 300,
                   n_neighbors: int = 20, max_fit: int = 20000, chunk_size: int = 50000,
                   random_state=0) -> np.ndarray:
    """Anomaly score of every galaxy: higher means more unusual (dimensionless).

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
        Subsample the reducer and detector are fitted on; rows scored at a time.
    random_state : int, numpy.random.Generator or None
        Seed of the subsample, PCA and isolation forest.

    Returns
    -------
    numpy.ndarray, shape (N,), float64

    Raises
    ------
    BadValueError
        Unknown method, fewer than 3 galaxies, options out of range.
    """
    if method not in METHODS:
        raise BadValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if int(max_fit) < 3 or int(chunk_size) < 1 or int(n_estimators) < 1 or int(n_neighbors) < 1:
        raise BadValueError("anomalies: max_fit >= 3, chunk_size, n_estimators and n_neighbors >= 1 are needed")
    X = check_features(X, min_samples=3)
    seed = as_seed(random_state)
    with blas_threads(1):
        Z, fit_rows = reduce_for_scoring(X, n_components=n_components, max_fit=max_fit, chunk_size=chunk_size,
                                         random_state=seed)
        n = len(Z)
        scores = np.empty(n, dtype=np.float64)
        if method == "iforest":
            from sklearn.ensemble import IsolationForest

            det = IsolationForest(n_estimators=int(n_estimators), random_state=seed, n_jobs=1).fit(Z[fit_rows])
            for start in range(0, n, int(chunk_size)):
                scores[start:start + chunk_size] = -det.score_samples(Z[start:start + chunk_size])
        else:
            from sklearn.neighbors import LocalOutlierFactor

            k = min(int(n_neighbors), len(fit_rows) - 1)
            if len(fit_rows) == n:  # every galaxy is in the fit: its own LOF, without itself as a neighbour
                det = LocalOutlierFactor(n_neighbors=k).fit(Z)
                scores[:] = -det.negative_outlier_factor_
            else:
                det = LocalOutlierFactor(n_neighbors=k, novelty=True).fit(Z[fit_rows])
                for start in range(0, n, int(chunk_size)):
                    scores[start:start + chunk_size] = -det.score_samples(Z[start:start + chunk_size])
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
                  n_components: int | None = 50, max_fit: int = 20000, chunk_size: int = 50000,
                  random_state=0, truth_column: str = "truth_rare", none_value: str = "none") -> dict:
    """``galearn anomalies``: write ``WS/anomalies.ecsv`` (id, score, rank) and metrics.json ``anomalies``.

    When the catalogue has ``truth_column`` (the mock's ``truth_rare``), the
    metrics also give the recall of its rare galaxies (value != ``none_value``)
    in the top 50 and 100 and what a random ranking gives on average.

    Returns
    -------
    dict
        The ``anomalies`` metrics entry.
    """
    from ..store import load_features, require_sample, resolve_backbone

    sample = require_sample(ws)
    backbone = resolve_backbone(ws, backbone)
    feats = load_features(ws, backbone, sample=sample)
    t0 = time.perf_counter()
    scores = anomaly_scores(feats.values, method=method, n_components=n_components, max_fit=max_fit,
                            chunk_size=chunk_size, random_state=random_state)
    seconds = time.perf_counter() - t0
    rank = ranks_of(scores)
    table = Table()
    table["id"] = np.asarray(feats.ids).astype(str)
    table["score"] = scores
    table["rank"] = rank
    table.meta.update({"method": method, "backbone": backbone, "n_components": n_components,
                       "max_fit": int(max_fit), "random_state": random_state,
                       "score": "higher = more unusual"})
    write_table(ws.anomalies, table)
    n = len(scores)
    entry = {"method": method, "backbone": backbone, "n_galaxies": n, "n_fit": int(min(n, max_fit)),
             "n_components": n_components, "seconds": round(seconds, 3)}
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
