"""Non-parametric morphology (statmorph) and colours of stamps, and their distances.

:func:`measure_morphology` measures, for every stamp ``(C, H, W)`` in physical
units, the central source's Gini, M20, concentration, asymmetry, half-light
radius (pixels) and ellipticity (statmorph, Rodriguez-Gomez et al. 2019) in
the measurement band (default: the reddest), plus the colour of every pair of
adjacent bands (bluer minus redder, ``-2.5 log10`` of the flux ratio inside
the source's segment; an instrumental colour, the zero points cancel in the
distances below).

The central source's segment comes from :func:`photutils.segmentation.detect_sources`
on the measurement band smoothed with a Gaussian of 1 pixel sigma, at
``n_sigma`` times the band's noise (the same noise level for all sets compared,
measured on the real stamps), keeping the segment under the centre pixel (or
the nearest one within a quarter of the stamp). Other segments are masked.

:func:`morphology_wasserstein` is the realism distance of Holzschuh et al.
(2022): per statistic the 1-D Wasserstein distance between two sets, divided
by the interquartile range of the reference (real) set, then the mean over
statistics.

statmorph costs ~0.1-0.2 s per stamp: subsample large sets.
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy.table import Table

from .errors import BadValueError
from .imaging import bands_blue_to_red

__all__ = [
    "MORPHOLOGY_STATISTICS",
    "colour_names",
    "measure_morphology",
    "measure_morphology_parallel",
    "morphology_wasserstein",
    "scaled_wasserstein",
    "statistic_histograms",
]

#: statmorph attribute per statistic name.
MORPHOLOGY_STATISTICS = {
    "gini": "gini",
    "m20": "m20",
    "concentration": "concentration",
    "asymmetry": "asymmetry",
    "half_light_radius": "r50",
    "ellipticity": "ellipticity_asymmetry",
}


def colour_names(bands: list[str]) -> list[tuple[str, int, int]]:
    """``(name, blue_index, red_index)`` for every pair of adjacent bands in wavelength order."""
    order = bands_blue_to_red(bands)
    return [(f"colour_{bands[a]}-{bands[b]}", a, b) for a, b in zip(order[:-1], order[1:])]


def _fast_morphology_class():
    """statmorph's SourceMorphology computing only the statistics used here.

    statmorph evaluates every lazy property in ``__init__`` (MID statistics and
    a Sersic fit included, ~70 % of the time); this subclass evaluates only ours.
    It relies on the private ``_calculate_morphology`` hook (statmorph 0.5-0.7);
    without it, the full computation runs and the results are the same.
    """
    import statmorph

    class _Morphology(statmorph.SourceMorphology):
        def _calculate_morphology(self):
            for attr in MORPHOLOGY_STATISTICS.values():
                _ = self[attr]
            for attr in ("sky_mean", "sky_sigma"):  # used by the background check in __init__
                _ = self[attr]

    return _Morphology


def _central_segment(image: np.ndarray, threshold: float, n_pixels: int):
    from photutils.segmentation import detect_sources
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(image, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NoDetectionsWarning: a stamp without a source is a failed measurement
        segm = detect_sources(smooth, threshold, n_pixels=n_pixels)
    if segm is None:
        return None
    data = segm.data
    h, w = data.shape
    cy, cx = h // 2, w // 2
    label = int(data[cy, cx])
    if label == 0:
        yy, xx = np.nonzero(data)
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        best = int(np.argmin(r2))
        if r2[best] > (min(h, w) / 4) ** 2:
            return None
        label = int(data[yy[best], xx[best]])
    return data, label


def measure_morphology(
    physical: np.ndarray,
    bands: list[str],
    *,
    noise_sigma: np.ndarray | None = None,
    band: int | str | None = None,
    n_sigma: float = 1.5,
    n_pixels: int = 5,
    progress: bool | None = None,
) -> Table:
    """statmorph statistics and colours of the central source of every stamp.

    Parameters
    ----------
    physical : ndarray, shape (N, C, H, W)
        Stamps in physical units (background-subtracted, e.g. electrons/s per pixel).
    bands : list of str
        Band names of axis C.
    noise_sigma : array of shape (C,), optional
        Per-band pixel noise (physical units). Default: a clipped MAD of the
        given stamps' pixels (:func:`galearn.imaging.robust_noise`). Pass
        the REAL sample's noise when measuring generated stamps, so both sets
        are segmented at the same surface-brightness level.
    band : int or str, optional
        Measurement band (index or name); default the reddest.
    n_sigma : float
        Detection threshold in noise sigmas (on the 1-pixel-smoothed image).
    n_pixels : int
        Minimum segment size (pixels).

    Returns
    -------
    astropy.table.Table
        One row per stamp: the statistics of :data:`MORPHOLOGY_STATISTICS`
        (``half_light_radius`` in pixels), the colours of :func:`colour_names`
        (mag), ``flag`` (statmorph flag; -1: no central source) and ``ok``
        (flag <= 1). Statistics are NaN where not ``ok``.
    """
    from tqdm.auto import tqdm

    from .imaging import robust_noise

    x = np.nan_to_num(np.asarray(physical, dtype="f8"))
    if x.ndim != 4 or x.shape[1] != len(bands):
        raise BadValueError(f"physical stamps must be (N, {len(bands)}, H, W), got shape {x.shape}")
    if noise_sigma is None:
        noise_sigma = np.array([robust_noise(x[:, b]) for b in range(x.shape[1])])
    noise_sigma = np.asarray(noise_sigma, dtype="f8")
    noise_sigma = np.where(np.isfinite(noise_sigma) & (noise_sigma > 0), noise_sigma, 1e-3 * np.abs(x).max() + 1e-30)
    if band is None:
        b_meas = bands_blue_to_red(bands)[-1]
    elif isinstance(band, str):
        if band not in bands:
            raise BadValueError(f"measurement band {band!r} not in {bands}")
        b_meas = bands.index(band)
    else:
        b_meas = int(band)
    colours = colour_names(bands)
    n = len(x)
    values = {name: np.full(n, np.nan) for name in MORPHOLOGY_STATISTICS}
    values.update({name: np.full(n, np.nan) for name, _, _ in colours})
    flags = np.full(n, -1, dtype=np.int64)
    weight = None
    morphology_class = _fast_morphology_class()
    for i in tqdm(range(n), desc="statmorph", disable=progress is False if progress is not None else None):
        image = x[i, b_meas]
        found = _central_segment(image, n_sigma * noise_sigma[b_meas], n_pixels)
        if found is None:
            continue
        segm, label = found
        inside = segm == label
        for name, a, b in colours:
            fa, fb = x[i, a][inside].sum(), x[i, b][inside].sum()
            if fa > 0 and fb > 0:
                values[name][i] = -2.5 * np.log10(fa / fb)
        if weight is None or weight.shape != image.shape:
            weight = np.full(image.shape, noise_sigma[b_meas])
        segmap = inside.astype(np.int32)
        mask = (segm > 0) & ~inside
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                morph = morphology_class(image, segmap, 1, mask=mask, weightmap=weight, sersic_maxiter=1)
            except Exception:  # statmorph raises on degenerate segments; the stamp counts as failed
                flags[i] = 4
                continue
        flags[i] = int(morph.flag)
        if morph.flag <= 1:
            for name, attr in MORPHOLOGY_STATISTICS.items():
                v = float(getattr(morph, attr))
                values[name][i] = v if np.isfinite(v) and v != -99.0 else np.nan
    table = Table({**values, "flag": flags, "ok": (flags >= 0) & (flags <= 1)})
    table["half_light_radius"].unit = "pix"
    for name, _, _ in colours:
        table[name].unit = "mag"
    table.meta.update({"bands": list(bands), "measurement_band": bands[b_meas],
                       "noise_sigma": noise_sigma.tolist(), "n_sigma": n_sigma, "n_pixels": n_pixels})
    return table


def _statistic_columns(table: Table) -> list[str]:
    return [c for c in table.colnames if c in MORPHOLOGY_STATISTICS or c.startswith("colour_")]


def morphology_wasserstein(reference: Table, other: Table, *, min_values: int = 5) -> tuple[float, dict]:
    """Mean over statistics of the IQR-scaled 1-D Wasserstein distance.

    Parameters
    ----------
    reference : Table
        Real measurements (:func:`measure_morphology`); its interquartile range scales
        each statistic.
    other : Table
        Measurements to compare (generated, or another real half).
    min_values : int
        Statistics with fewer finite values in either set are skipped.

    Returns
    -------
    mean : float
        Mean of the scaled distances; NaN when no statistic could be compared,
        or when a statistic measurable on ``reference`` could not be measured
        on ``other`` (e.g. statmorph failed on most of its stamps).
    per_statistic : dict
        ``{statistic: scaled distance}`` (NaN: not measurable on ``other``).
    """
    return scaled_wasserstein(reference, other, _statistic_columns(reference), min_values=min_values)


def scaled_wasserstein(reference: Table, other: Table, names, *, min_values: int = 5) -> tuple[float, dict]:
    """Mean over columns ``names`` of the 1-D Wasserstein distance scaled by ``reference``'s IQR.

    A column with fewer than ``min_values`` finite values in ``reference`` is
    skipped; one measurable on ``reference`` but not on ``other`` gives NaN
    (which propagates to the mean). Scale: interquartile range, else the
    standard deviation; a constant column is skipped.
    """
    from scipy.stats import wasserstein_distance

    per: dict[str, float] = {}
    for name in names:
        if name not in other.colnames:
            continue
        a = np.asarray(reference[name], dtype="f8")
        b = np.asarray(other[name], dtype="f8")
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if len(a) < min_values:
            continue
        if len(b) < min_values:  # the reference has it, ``other`` cannot be measured: no distance
            per[name] = float("nan")
            continue
        q75, q25 = np.percentile(a, [75, 25])
        scale = q75 - q25
        if not scale > 0:
            scale = a.std()
        if not scale > 0:
            continue
        per[name] = float(wasserstein_distance(a, b) / scale)
    mean = float(np.mean(list(per.values()))) if per else float("nan")  # NaN propagates
    return mean, per


def statistic_histograms(sets: dict[str, Table], *, reference: str, n_bins: int = 20) -> dict:
    """Per statistic: shared bin edges (1st-99th percentile of ``reference``) and counts per set.

    Returns ``{statistic: {"edges": [...], "<set>": {"counts": [...], "median": m, "iqr": q, "n": k}}}``
    (JSON-ready), for the report's real-versus-generated histograms.
    """
    out: dict = {}
    ref = sets[reference]
    for name in _statistic_columns(ref):
        r = np.asarray(ref[name], dtype="f8")
        r = r[np.isfinite(r)]
        if len(r) < 2:
            continue
        lo, hi = np.percentile(r, [1, 99])
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, n_bins + 1)
        entry: dict = {"edges": edges.tolist()}
        for key, table in sets.items():
            v = np.asarray(table[name], dtype="f8") if name in table.colnames else np.zeros(0)
            v = v[np.isfinite(v)]
            counts, _ = np.histogram(np.clip(v, lo, hi), edges)
            q = np.percentile(v, [25, 50, 75]) if len(v) else [np.nan] * 3
            entry[key] = {"counts": counts.tolist(), "median": float(q[1]), "iqr": float(q[2] - q[0]), "n": int(len(v))}
        out[name] = entry
    return out


def _morphology_task(stamps: np.ndarray, *, bands: list[str], noise_sigma: np.ndarray):
    """One statmorph partition (runs on a Dask worker)."""
    return measure_morphology(stamps, bands, noise_sigma=noise_sigma, progress=False)


def measure_morphology_parallel(physical: np.ndarray, bands: list[str], *, noise_sigma: np.ndarray,
                                n_jobs: int | None = None, min_chunk: int = 16, progress: bool | None = None):
    """:func:`galearn.morphology.measure_morphology` over chunks of stamps in worker processes.

    statmorph runs one stamp at a time in Python (~0.1-0.5 s per 64x64 stamp);
    the stamps are independent, so chunks go to ``n_jobs`` processes
    (joblib / loky; default: every core this process may use) and the tables
    are stacked back in order. ``noise_sigma`` must be given (the same
    segmentation level for every chunk), so the result equals the serial one.
    """
    import os

    from astropy.table import vstack

    n = len(physical)
    if n_jobs is None:
        try:
            n_jobs = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            n_jobs = os.cpu_count() or 1
    from .compute import current_session, map_partitions, partition_bounds, setting

    if current_session().get_client(n) is not None:  # a Dask cluster: partitions of stamps, tables in order
        from astropy.table import vstack as _vstack

        size = int(setting("morphology_partition", 128))
        tasks = [physical[a:b] for a, b in partition_bounds(n, size)]
        results: dict = {}
        for i, table in map_partitions(_morphology_task, tasks, desc="statmorph", stage="morphology", n_items=n,
                                       shared={"bands": list(bands), "noise_sigma": np.asarray(noise_sigma)},
                                       progress=progress):
            results[i] = table
        parts = [results[i] for i in range(len(tasks))]
        table = _vstack(parts, metadata_conflicts="silent")
        table.meta.update(parts[0].meta)
        return table
    n_chunks = max(1, min(int(n_jobs), n // max(1, min_chunk)))
    if n_chunks <= 1:
        return measure_morphology(physical, bands, noise_sigma=noise_sigma, progress=progress)
    from joblib import Parallel, delayed

    bounds = np.linspace(0, n, 2 * n_chunks + 1).round().astype(int)  # 2 chunks per worker: load balance
    parts = Parallel(n_jobs=n_chunks, backend="loky")(
        delayed(measure_morphology)(physical[a:b], bands, noise_sigma=noise_sigma, progress=False)
        for a, b in zip(bounds[:-1], bounds[1:]) if b > a
    )
    table = vstack(parts, metadata_conflicts="silent")
    table.meta.update(parts[0].meta)
    return table
