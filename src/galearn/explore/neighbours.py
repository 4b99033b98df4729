"""Nearest neighbours of every galaxy in feature space, for the HTML page's "galaxies like this one"."""

from __future__ import annotations

import numpy as np

from ..errors import BadValueError
from ..runtime import blas_threads
from .anomalies import reduce_for_scoring

__all__ = ["neighbour_indices"]


def neighbour_indices(X, k: int = 12, *, n_components: int | None = 50, random_state=0) -> np.ndarray:
    """The ``k`` nearest other galaxies of every galaxy, nearest first.

    Distances are Euclidean in the standardised, PCA-reduced feature space
    (the space of ``galearn similar``); the neighbours are found with
    scikit-learn's :class:`~sklearn.neighbors.NearestNeighbors` (a tree or
    brute force, whichever it picks), not a Python loop.

    Parameters
    ----------
    X : array-like, shape (N, D)
        Feature vectors.
    k : int
        Neighbours per galaxy (at most N - 1).

    Returns
    -------
    numpy.ndarray, shape (N, k), int64
        Row indices into ``X``.
    """
    from sklearn.neighbors import NearestNeighbors

    X = np.asarray(X)
    if X.ndim != 2 or len(X) < 2:
        raise BadValueError(f"neighbours need at least 2 feature vectors, got shape {X.shape}")
    k = int(min(k, len(X) - 1))
    if k < 1:
        raise BadValueError(f"k must be >= 1, got {k}")
    with blas_threads(1):
        Z, _ = reduce_for_scoring(X, n_components=n_components, random_state=random_state)
        _, idx = NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors(Z)
    # Drop each galaxy itself (normally column 0; duplicates may put it elsewhere).
    rows = np.arange(len(Z))[:, None]
    not_self = idx != rows
    keep = np.cumsum(not_self, axis=1) <= k
    out = idx[not_self & keep].reshape(len(Z), k)
    return out.astype(np.int64)
