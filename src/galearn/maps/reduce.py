"""Feature validation and the standardise + PCA pre-reduction shared by maps and evaluation.

Every map, clustering and agreement metric in galearn works in the same space:
each feature standardised to zero mean and unit variance, then projected onto
at most 50 principal components (fewer when there are fewer features or
galaxies). The reducer is fitted once and kept, so new galaxies (e.g. the GAN
library) are projected with the *same* scaler and components.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadValueError
from ..runtime import as_seed

MAX_COMPONENTS_DEFAULT = 50

__all__ = ["MAX_COMPONENTS_DEFAULT", "check_features", "pca_dimension", "make_reducer", "reduce_features"]


def check_features(X, *, name: str = "features", min_samples: int = 2) -> np.ndarray:
    """Validate a feature matrix and return it as a C-contiguous float64 array.

    Parameters
    ----------
    X : array-like, shape (N, D)
        One feature vector per galaxy.
    name : str
        Name used in error messages.
    min_samples : int
        Smallest acceptable N.

    Returns
    -------
    numpy.ndarray, shape (N, D), float64

    Raises
    ------
    BadValueError
        Not two-dimensional, too few rows, or non-finite values (the message
        gives the first offending row).
    """
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise BadValueError(f"{name} must be a 2-D array (N galaxies, D features), got shape {arr.shape}")
    if arr.shape[0] < min_samples:
        raise BadValueError(f"{name} has {arr.shape[0]} rows; at least {min_samples} are needed")
    if arr.shape[1] < 1:
        raise BadValueError(f"{name} has no feature columns (shape {arr.shape})")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise BadValueError(
            f"{name} has non-finite values in {len(bad)} rows (first: row {bad[0]}); "
            "re-run `galearn features` or drop those galaxies"
        )
    return np.ascontiguousarray(arr)


def pca_dimension(n_features: int, n_samples: int, max_components: int | None = 50) -> int:
    """Number of principal components kept: ``min(max_components, n_features, n_samples - 1)`` (>= 1)."""
    limit = min(int(n_features), int(n_samples) - 1)
    if max_components is not None:
        limit = min(limit, int(max_components))
    return max(1, limit)


def make_reducer(n_components: int | None, random_state=None):
    """An unfitted ``Pipeline(StandardScaler(), PCA(n_components))``.

    ``n_components=None`` (or 0) gives standardisation only.
    """
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [("scale", StandardScaler())]
    if n_components:
        steps.append(("pca", PCA(n_components=int(n_components), random_state=as_seed(random_state))))
    return Pipeline(steps)


def reduce_features(X, *, max_components: int | None = 50, random_state=None):
    """Standardise and PCA-reduce ``X``; return ``(Z, fitted_reducer)``.

    Parameters
    ----------
    X : array-like, shape (N, D)
    max_components : int or None
        At most this many components (None: standardise only).
    random_state : int, numpy.random.Generator or None
        Seed of the (randomised) PCA solver.

    Returns
    -------
    Z : numpy.ndarray, shape (N, K)
    reducer : sklearn.pipeline.Pipeline
        Fitted; ``reducer.transform(X_new)`` projects new galaxies the same way.
    """
    X = check_features(X)
    n_comp = pca_dimension(X.shape[1], X.shape[0], max_components) if max_components else None
    reducer = make_reducer(n_comp, random_state)
    Z = reducer.fit_transform(X)
    return np.ascontiguousarray(Z, dtype=np.float64), reducer
