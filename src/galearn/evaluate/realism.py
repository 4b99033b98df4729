"""Realism metrics of generated images in a feature space (arrays in, numbers out).

All functions take feature arrays ``(N, D)`` (one row per stamp, e.g. from
:func:`galearn.features.extract_features`), so they can be tested with any
cheap feature function.

* :func:`frechet_distance` -- FID (Heusel et al. 2017): ``|mu_a - mu_b|^2 +
  Tr(S_a + S_b - 2 (S_a S_b)^{1/2})``.
* :func:`kernel_distance` -- KID (Binkowski et al. 2018): unbiased MMD^2 with the
  polynomial kernel ``k(x, y) = (x.y / D + 1)^3``, averaged over random subsets.
* :func:`precision_recall` -- k-NN manifold precision and recall
  (Kynkäänniemi et al. 2019).
* :func:`memorised_fraction` -- generated samples nearer to a training sample
  than the 1st percentile of real galaxies' distances to their nearest
  training sample (held-out rows, and training rows leaving themselves out).
* :func:`data_copying_statistic` -- Meehan et al. 2020's ``C_T``: whether the
  generated samples lie nearer the training set than new real ones do, cell
  by cell (copying), or merely crowd where the real ones are dense.

FID and KID depend on the sample size (FID is biased upwards for small N), so
compare a generated set only with a real baseline of the same size.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import BadValueError

__all__ = [
    "frechet_distance",
    "kernel_distance",
    "precision_recall",
    "nearest_distances",
    "memorised_fraction",
    "memorised_fraction_from",
    "nearest_training_distances",
    "NearestTraining",
    "pixel_nearest_distances",
    "memorised_fraction_pixels",
    "data_copying_statistic",
]


def _check(x: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    x = np.asarray(x, dtype="f8")
    if x.ndim != 2:
        raise BadValueError(f"{name} must be a 2-D feature array (N, D), got shape {x.shape}")
    if len(x) < min_rows:
        raise BadValueError(f"{name} needs at least {min_rows} rows, got {len(x)}")
    if not np.all(np.isfinite(x)):
        raise BadValueError(f"{name} contains non-finite feature values")
    return x


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N_a, D)``, ``(N_b, D)``.

    ``Tr((S_a S_b)^{1/2})`` is computed as ``sum sqrt(eig(S_a^{1/2} S_b S_a^{1/2}))``,
    which is real and stable for singular (N < D) covariances. When a set has
    fewer rows than dimensions it is computed exactly, and much faster, from
    the centred data: with ``S_a = A^T A`` and ``S_b = B^T B``, the non-zero
    eigenvalues of ``S_a S_b`` are the squared singular values of ``B A^T``
    (``N_b x N_a``), so the trace is that matrix's nuclear norm (O(N^2 D)
    instead of O(D^3)).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 4))
    >>> round(frechet_distance(x, x), 6)
    0.0
    >>> frechet_distance(x, x + 3.0) > 35
    True
    """
    a, b = _check(a, "a"), _check(b, "b")
    if a.shape[1] != b.shape[1]:
        raise BadValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    if min(len(a), len(b)) < a.shape[1]:
        ca = (a - mu_a) / np.sqrt(len(a) - 1)
        cb = (b - mu_b) / np.sqrt(len(b) - 1)
        tr_sqrt = np.linalg.svd(cb @ ca.T, compute_uv=False).sum()
        value = float(((mu_a - mu_b) ** 2).sum() + (ca**2).sum() + (cb**2).sum() - 2.0 * tr_sqrt)
        return max(value, 0.0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    s = _sqrt_psd(cov_a)
    m = s @ cov_b @ s
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt)
    return max(value, 0.0)


_KID_WHOLE_KERNEL_MAX = 3000  # rows: three float64 kernels of at most 3000 x 3000 (216 MB) computed once


def _kid_kernel(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """KID's polynomial kernel ``(u.v / D + 1)^3`` between the rows of ``u`` and ``v``."""
    return (u @ v.T / u.shape[1] + 1) ** 3


def kernel_distance(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_subsets: int = 100,
    subset_size: int = 1000,
    random_state: int | np.random.Generator | None = 0,
) -> tuple[float, float]:
    """Kernel distance (KID): mean and standard deviation of the unbiased MMD^2 over subsets.

    Polynomial kernel ``k(x, y) = (x.y / D + 1)^3``. Each subset draws
    ``m = min(subset_size, N_a // 2, N_b // 2)`` rows of each set without
    replacement (at most half of each set, so that the subsets differ and the
    standard deviation measures the sampling spread even for small sets; the
    estimate is unbiased for any ``m``).

    Returns
    -------
    (mean, std) : tuple of float
    """
    a, b = _check(a, "a"), _check(b, "b")
    if a.shape[1] != b.shape[1]:
        raise BadValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    rng = np.random.default_rng(random_state)
    m = max(2, min(int(subset_size), len(a) // 2, len(b) // 2))
    values = np.empty(int(n_subsets))
    # Sets of up to ~3000 rows: each kernel once, the subsets index into it (the same numbers, ~25x faster at
    # 120 rows of 1280 features); larger sets: per subset, in memory bounded by the subset size.
    whole = max(len(a), len(b)) <= _KID_WHOLE_KERNEL_MAX
    if whole:
        kaa, kbb, kab = _kid_kernel(a, a), _kid_kernel(b, b), _kid_kernel(a, b)
    for i in range(int(n_subsets)):
        ia, ib = rng.choice(len(a), m, replace=False), rng.choice(len(b), m, replace=False)
        if whole:
            kxx, kyy, kxy = kaa[np.ix_(ia, ia)], kbb[np.ix_(ib, ib)], kab[np.ix_(ia, ib)]
        else:
            x, y = a[ia], b[ib]
            kxx, kyy, kxy = _kid_kernel(x, x), _kid_kernel(y, y), _kid_kernel(x, y)
        sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values[i] = sxx + syy - 2.0 * kxy.mean()
    return float(values.mean()), float(values.std())


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(d2, 0.0, None))


def nearest_distances(query: np.ndarray, reference: np.ndarray, *, k: int = 1, exclude_self: bool = False,
                      batch: int = 2048) -> np.ndarray:
    """Euclidean distance from each query row to its ``k``-th nearest reference row.

    With ``exclude_self`` the query IS the reference and the zero self-distance
    is skipped.
    """
    query, reference = np.asarray(query, dtype="f8"), np.asarray(reference, dtype="f8")
    kk = k + 1 if exclude_self else k
    if kk > len(reference):
        raise BadValueError(f"k={k} nearest neighbours need more than {len(reference)} reference rows")
    out = np.empty(len(query))
    for start in range(0, len(query), batch):
        d = _pairwise(query[start : start + batch], reference)
        out[start : start + batch] = np.partition(d, kk - 1, axis=1)[:, kk - 1]
    return out


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3) -> tuple[float, float]:
    """k-NN manifold precision and recall (Kynkäänniemi et al. 2019).

    Each sample of a set defines a ball whose radius is the distance to its
    ``k``-th nearest neighbour within the same set. Precision: fraction of
    ``fake`` rows inside at least one ball of ``real``; recall: fraction of
    ``real`` rows inside at least one ball of ``fake``.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x, y = rng.normal(size=(300, 3)), rng.normal(size=(300, 3))
    >>> p, r = precision_recall(x, y)
    >>> p > 0.8 and r > 0.8
    True
    >>> p, r = precision_recall(x, y + 10)
    >>> p == 0.0 and r == 0.0
    True
    """
    real, fake = _check(real, "real", k + 1), _check(fake, "fake", k + 1)
    r_real = nearest_distances(real, real, k=k, exclude_self=True)
    r_fake = nearest_distances(fake, fake, k=k, exclude_self=True)
    d = _pairwise(fake, real)  # (N_fake, N_real)
    precision = float(np.mean((d <= r_real[None, :]).any(axis=1)))
    recall = float(np.mean((d.T <= r_fake[None, :]).any(axis=1)))
    return precision, recall


class NearestTraining(NamedTuple):
    """Distances to the nearest training row (:func:`nearest_training_distances`), in the features' units."""

    generated: np.ndarray  #: each generated row's
    heldout: np.ndarray  #: each held-out real row's
    train: np.ndarray  #: leave-one-out: each of ``train_index``'s training rows' to the nearest OTHER training row
    train_index: np.ndarray  #: the training rows of ``train`` (all, or a seeded draw of ``train_rows``)


def memorised_fraction(generated: np.ndarray, train: np.ndarray, heldout: np.ndarray, *,
                       percentile: float = 1.0, nearest: NearestTraining | None = None) -> tuple[float, float]:
    """Fraction of generated rows nearer to a training row than real rows usually are.

    The threshold is the ``percentile``-th percentile of real galaxies'
    distances to the training set that they are not part of: the ``heldout``
    rows' (the generator never saw them) and each training row's to the
    nearest other training row (leave-one-out; a fresh real galaxy against
    the rest, which involves no generator). It is taken with the Weibull
    plotting position (``np.percentile(..., method="weibull")``), whose
    order statistic is unbiased for the quantile: numpy's default
    (``"linear"``) on 120 held-out rows reads between the 2nd and 3rd
    nearest, about the 1.8th percentile, so that a generator drawing new
    real galaxies scored 1.7 % on average (``benchmarks/bench_memorised_threshold.py``,
    docs/gan-experiments.md round 36). A generator that does not copy its training set
    therefore scores about ``percentile / 100`` (0.01); copies score higher.
    ``nearest``: :func:`nearest_training_distances`, when already at hand.

    Returns
    -------
    (fraction, threshold) : tuple of float
    """
    return memorised_fraction_from(nearest or nearest_training_distances(generated, train, heldout), percentile)


def memorised_fraction_from(nearest: NearestTraining, percentile: float = 1.0) -> tuple[float, float]:
    """:func:`memorised_fraction` from distances already searched (:func:`nearest_training_distances`, or some of
    its rows, e.g. one class's): ``(fraction, threshold)``."""
    real = np.concatenate([nearest.heldout, nearest.train])
    threshold = float(np.percentile(real, percentile, method="weibull"))
    return float(np.mean(nearest.generated < threshold)), threshold


def nearest_training_distances(generated: np.ndarray, train: np.ndarray, heldout: np.ndarray, *,
                               train_rows: int = 5000, random_state: int = 0) -> NearestTraining:
    """Each generated and each held-out row's distance to its nearest training row, and each training row's to its
    nearest other training row (at most ``train_rows`` of them, a seeded draw, so that a survey's training set is
    not searched against itself in full): the input of :func:`memorised_fraction` and :func:`data_copying_statistic`."""
    generated, train, heldout = _check(generated, "generated", 1), _check(train, "train", 2), _check(heldout, "heldout", 1)
    index = (np.arange(len(train)) if len(train) <= train_rows else
             np.sort(np.random.default_rng(random_state).choice(len(train), train_rows, replace=False)))
    return NearestTraining(nearest_distances(generated, train), nearest_distances(heldout, train),
                           _nearest_other(train, index), index)


def _nearest_other(train: np.ndarray, index: np.ndarray, batch: int = 2048) -> np.ndarray:
    """Each ``train[index]`` row's distance to its nearest other row of ``train`` (itself left out by position, so a
    duplicate row elsewhere reads 0)."""
    out = np.empty(len(index))
    for start in range(0, len(index), batch):
        rows = index[start:start + batch]
        d = _pairwise(train[rows], train)
        d[np.arange(len(rows)), rows] = np.inf
        out[start:start + batch] = d.min(axis=1)
    return out


def pixel_nearest_distances(stamps: np.ndarray, reference_chunks, exclude: np.ndarray | None = None) -> np.ndarray:
    """RMS pixel difference from each stamp to its nearest reference stamp, over the stamp's 8 rotations and flips.

    ``stamps``: ``(N, C, H, W)``; ``reference_chunks``: an iterable of
    ``(M_i, C, H, W)`` arrays (the reference set streamed in chunks, so a
    large training set need not be in memory at once). A copy of a reference
    stamp, turned or mirrored, scores ~0. In the stamps' own units.
    ``exclude``: ``(N,)`` positions in the streamed reference that each stamp
    must not be compared with, all 8 turns of it (a leave-one-out of a
    reference stamp itself); -1: none.
    """
    x = np.asarray(stamps, dtype="f4")
    n, npix = len(x), int(np.prod(x.shape[1:]))
    exclude = np.full(n, -1) if exclude is None else np.asarray(exclude, dtype=np.int64)
    q = x.reshape(n, npix)
    qn = (q * q).sum(1)
    best = np.full(n, np.inf, dtype="f8")
    seen = 0
    for chunk in reference_chunks:  # turning the reference instead of the query: the same distances, one query copy
        chunk = np.asarray(chunk, dtype="f4")
        if not len(chunk):
            continue
        ref = np.concatenate([np.rot90(chunk, k, axes=(2, 3))[..., ::-1] if flip else np.rot90(chunk, k, axes=(2, 3))
                              for k in range(4) for flip in (False, True)]).reshape(-1, npix)
        d2 = qn[:, None] + (ref * ref).sum(1)[None, :] - 2.0 * (q @ ref.T)  # (n, 8 * m): turn-major
        own = np.flatnonzero((exclude >= seen) & (exclude < seen + len(chunk)))
        if len(own):
            d2[own[:, None], (exclude[own] - seen)[:, None] + len(chunk) * np.arange(8)[None, :]] = np.inf
        best = np.minimum(best, d2.min(axis=1))
        seen += len(chunk)
    if not seen:
        raise BadValueError("pixel_nearest_distances: the reference set is empty")
    return np.sqrt(np.clip(best, 0.0, None) / npix)


def memorised_fraction_pixels(generated: np.ndarray, heldout: np.ndarray, train_chunks, *,
                              percentile: float = 1.0,
                              train_left_out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, float]:
    """:func:`memorised_fraction` in pixel space, where no feature space can hide a copy.

    Fraction of ``generated`` stamps whose RMS pixel difference to the nearest
    training stamp (any of 8 rotations / flips; :func:`pixel_nearest_distances`)
    is below the ``percentile``-th percentile (Weibull plotting position, as
    :func:`memorised_fraction`) of the same distance for real stamps: the
    ``heldout`` ones, and with ``train_left_out = (stamps, positions)`` also
    those training stamps (at their ``positions`` in ``train_chunks``), each
    to its nearest OTHER training stamp (its own 8 turns left out).
    ``train_chunks``: an iterable of training-stamp chunks, read once for all
    sets. About ``percentile / 100`` for a generator that neither copies nor
    crowds into the densest part of the training set (both score higher; look
    at the flagged stamps beside their nearest training stamps to tell which).

    Returns
    -------
    (fraction, threshold) : tuple of float
        The threshold in RMS pixel units of the stamps.
    """
    heldout, generated = np.asarray(heldout, "f4"), np.asarray(generated, "f4")
    left_out, positions = (np.zeros((0, *heldout.shape[1:]), "f4"), np.zeros(0, np.int64)) \
        if train_left_out is None else (np.asarray(train_left_out[0], "f4"), np.asarray(train_left_out[1]))
    exclude = np.concatenate([np.full(len(heldout) + len(generated), -1), positions])
    d = pixel_nearest_distances(np.concatenate([heldout, generated, left_out]), train_chunks, exclude)
    real = np.concatenate([d[:len(heldout)], d[len(heldout) + len(generated):]])
    threshold = float(np.percentile(real, percentile, method="weibull"))
    return float(np.mean(d[len(heldout):len(heldout) + len(generated)] < threshold)), threshold


def data_copying_statistic(generated: np.ndarray, train: np.ndarray, heldout: np.ndarray, *,
                           n_cells: int | None = None, min_generated: int = 20, fit_max: int = 20000,
                           random_state: int = 0, nearest: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """The data-copying test of Meehan, Chaudhuri & Dasgupta 2020 (AISTATS), ``C_T``.

    :func:`memorised_fraction` flags a generated sample near a training one,
    which a copy is, but so is a sample in the densest part of the real
    distribution. This test compares like with like, as far as its cells
    resolve the density: the feature space is cut into
    ``n_cells`` cells by k-means on ``train`` (default: one per 20 held-out
    rows, 1-10), and in each cell the nearest-training distances of the
    generated rows are compared with those of the held-out real rows by the
    Mann-Whitney U test, as a z-score (negative: the generated rows lie
    nearer the training rows than new real galaxies of that cell do). ``C_T``
    averages the cells' z-scores weighted by their share of the held-out rows,
    over the cells holding at least ``min_generated`` generated rows (the
    cells are fitted to at most ``fit_max`` training rows, a seeded draw). About 0
    for a generator that neither copies nor under-fits; clearly negative
    (below about -3) for copying, in any cell; positive where the generated
    rows lie farther from the real ones than real galaxies do. ``nearest``: as
    in :func:`memorised_fraction`.

    Returns
    -------
    dict
        ``ct``, ``n_cells``, ``cells_used``, ``heldout_share_used`` (the
        held-out share of the cells used), ``cell_z`` (one z-score per cell,
        None where too few generated rows fell) and ``cell_heldout_share``.
    """
    from scipy.stats import mannwhitneyu
    from sklearn.cluster import KMeans

    generated, train, heldout = _check(generated, "generated", 1), _check(train, "train", 2), _check(heldout, "heldout", 1)
    nearest = nearest or nearest_training_distances(generated, train, heldout)
    d_g, d_h = nearest.generated, nearest.heldout
    if n_cells is None:
        n_cells = int(np.clip(len(heldout) // 20, 1, 10))
    n_cells = int(min(n_cells, len(train)))
    fit_rows = train if len(train) <= fit_max else train[
        np.random.default_rng(random_state).choice(len(train), fit_max, replace=False)]
    cells = KMeans(n_clusters=n_cells, n_init=10, random_state=random_state).fit(fit_rows)
    cell_g, cell_h = cells.predict(generated), cells.predict(heldout)
    z = np.full(n_cells, np.nan)
    share = np.bincount(cell_h, minlength=n_cells) / len(heldout)
    for c in range(n_cells):
        g, h = d_g[cell_g == c], d_h[cell_h == c]
        if len(g) < min_generated or not len(h):
            continue
        u = mannwhitneyu(g, h).statistic  # pairs with the generated row's distance the larger
        m, n = len(g), len(h)
        z[c] = (u - m * n / 2.0) / np.sqrt(m * n * (m + n + 1) / 12.0)
    used = np.isfinite(z)
    ct = float(np.sum(share[used] * z[used]) / share[used].sum()) if used.any() and share[used].sum() > 0 else float("nan")
    return {"ct": ct, "n_cells": n_cells, "cells_used": int(used.sum()), "heldout_share_used": float(share[used].sum()),
            "cell_z": [None if not np.isfinite(v) else float(v) for v in z], "cell_heldout_share": share.tolist()}
