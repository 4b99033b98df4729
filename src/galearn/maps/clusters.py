"""Unsupervised clusters of galaxies: k-means / Gaussian mixture in PCA space, HDBSCAN on the map.

``cluster_features`` works on standardised + PCA-reduced features (see
:func:`galearn.maps.reduce_features`); ``cluster_map`` on the 2-D map
coordinates, where density-based clustering finds the islands a t-SNE map
shows. ``match_clusters`` pairs clusters with classes one-to-one (Hungarian
algorithm) for the cluster accuracy.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadValueError
from ..runtime import as_seed
from .reduce import check_features

__all__ = ["CLUSTERERS", "cluster_features", "cluster_map", "match_clusters", "contingency"]

CLUSTERERS = ("kmeans", "gmm", "hdbscan")
NOISE = -1


def cluster_features(Z, n_clusters: int, *, method: str = "kmeans", random_state=0) -> np.ndarray:
    """Cluster label (0 .. n_clusters-1) per galaxy from reduced features.

    Parameters
    ----------
    Z : array-like, shape (N, K)
        Standardised + PCA-reduced features (:func:`galearn.maps.reduce_features`).
    n_clusters : int
        Number of clusters (>= 1, <= N).
    method : {"kmeans", "gmm"}
        ``KMeans(n_init=10)`` or a full-covariance ``GaussianMixture`` (3 starts).
    random_state : int, numpy.random.Generator or None
        Seed; same seed, same clusters.

    Returns
    -------
    numpy.ndarray of int, shape (N,)
    """
    Z = check_features(Z, name="reduced features", min_samples=1)
    n_clusters = int(n_clusters)
    if not 1 <= n_clusters <= len(Z):
        raise BadValueError(f"n_clusters must be between 1 and the number of galaxies ({len(Z)}), got {n_clusters}")
    seed = as_seed(random_state)
    if method == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(Z).astype(np.int64)
    if method == "gmm":
        from sklearn.mixture import GaussianMixture

        gmm = GaussianMixture(n_components=n_clusters, covariance_type="full", n_init=3, reg_covar=1e-4,
                              max_iter=300, random_state=seed)
        return gmm.fit(Z).predict(Z).astype(np.int64)
    if method == "hdbscan":
        raise BadValueError("hdbscan clusters the 2-D map: use cluster_map(xy) (galearn classify --clusterer hdbscan)")
    raise BadValueError(f"unknown clusterer {method!r} (option --clusterer); choose one of {', '.join(CLUSTERERS)}")


def cluster_map(xy, *, min_cluster_size: int | None = None) -> np.ndarray:
    """HDBSCAN clusters of 2-D map positions (``sklearn.cluster.HDBSCAN``).

    Parameters
    ----------
    xy : array-like, shape (N, 2)
        Map coordinates (map units).
    min_cluster_size : int or None
        Smallest cluster; None: 2 % of the galaxies, at least 5.

    Returns
    -------
    numpy.ndarray of int, shape (N,)
        Cluster label per galaxy; -1 marks noise (no cluster).
    """
    from sklearn.cluster import HDBSCAN

    xy = check_features(xy, name="map coordinates", min_samples=2)
    if min_cluster_size is None:
        min_cluster_size = max(5, int(round(0.02 * len(xy))))
    if int(min_cluster_size) < 2:
        raise BadValueError(f"min_cluster_size must be >= 2, got {min_cluster_size}")
    min_cluster_size = min(int(min_cluster_size), len(xy))
    return HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(xy).astype(np.int64)


def contingency(clusters, classes, n_clusters: int | None = None, n_classes: int | None = None) -> np.ndarray:
    """Counts ``C[i, j]`` of galaxies in cluster i and class j (int arrays; noise, -1, dropped)."""
    clusters = np.asarray(clusters, dtype=np.int64)
    classes = np.asarray(classes, dtype=np.int64)
    keep = clusters >= 0
    n_clusters = int(n_clusters if n_clusters is not None else (clusters.max(initial=-1) + 1))
    n_classes = int(n_classes if n_classes is not None else (classes.max(initial=-1) + 1))
    table = np.zeros((n_clusters, n_classes), dtype=np.int64)
    np.add.at(table, (clusters[keep], classes[keep]), 1)
    return table


def match_clusters(clusters, classes, n_clusters: int | None = None, n_classes: int | None = None):
    """Best one-to-one matching of clusters to classes.

    Parameters
    ----------
    clusters : array of int, shape (N,)
        Cluster per galaxy (-1: noise, never counted as correct).
    classes : array of int, shape (N,)
        Class index per galaxy.

    Returns
    -------
    accuracy : float
        Fraction of all N galaxies whose cluster is matched to their class.
    table : numpy.ndarray, shape (n_clusters, n_classes)
        The contingency matrix.
    mapping : dict
        cluster index -> class index for the matched pairs.
    """
    from scipy.optimize import linear_sum_assignment

    table = contingency(clusters, classes, n_clusters, n_classes)
    n = len(np.asarray(clusters))
    if n == 0 or table.size == 0:
        return 0.0, table, {}
    rows, cols = linear_sum_assignment(table, maximize=True)
    accuracy = float(table[rows, cols].sum() / n)
    return accuracy, table, {int(r): int(c) for r, c in zip(rows, cols)}
