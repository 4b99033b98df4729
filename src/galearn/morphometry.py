"""Morphometry: a hand-built image-statistics space for realism metrics, and Holzschuh-style distributions.

Realism numbers (FID, KID, precision, recall, memorisation) computed in the
feature space of a pre-trained network can be lowered by a generator that was
trained against that same network without becoming more realistic
(Kynkäänniemi et al. 2023). :func:`morphometry_features` is a space no
discriminator looks through: per stamp, vectorised over the whole set (no
per-galaxy Python loop), on STRETCHED stamps ``(N, C, H, W)`` in 0..1:

* per band, the azimuthally averaged surface-brightness profile in 8 annuli
  around the stamp centre (radii 0-1-2-3-5-8-12-20-32 pixels, scaled by
  ``H / 64``) -- brightness, size and concentration;
* per band, the azimuthally averaged log power spectrum in 8 radial
  frequency bins -- texture, noise and sharpness;
* per band, the rotational asymmetry ``sum |I - I_180| / sum |I|`` inside
  ``H / 4`` pixels and the 50th / 90th / 99th pixel percentiles;
* flux-weighted second moments of the band sum inside ``H / 4``
  (size, ellipticity, centroid offset from the centre);
* colours of adjacent bands (differences of the mean stretched value within
  ``H / 16`` and ``H / 8`` pixels).

:func:`photometry_statistics` gives, on PHYSICAL stamps, the per-band flux
inside ``H / 8`` pixels, the colours of adjacent bands (``-2.5 log10`` of the
flux ratio) and the per-band log power spectrum in 8 bins, as a table whose
columns :func:`galearn.evaluate.morphology.morphology_wasserstein` compares
(Holzschuh et al. 2022: power spectrum, flux and colour distributions beside
the morphology statistics).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from .errors import BadValueError
from .morphology import scaled_wasserstein

__all__ = ["MORPHOMETRY", "morphometry_features", "morphometry_names", "morphometry_groups", "photometry_statistics",
           "power_spectrum", "power_bin_weights", "profile_annulus_weights", "radial_profile", "group_wasserstein", "shape_moments", "light_centroids",
           "orientation_isotropy",
           "MIN_ELLIPTICITY_FOR_ANGLE"]

#: Name of the space in metrics.json ``gan.realism_space``.
MORPHOMETRY = "morphometry"

_RADII = np.array([0, 1, 2, 3, 5, 8, 12, 20, 32], dtype="f8")  # at 64 pixels
_N_K = 8


def _check(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype="f4")
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise BadValueError(f"stamps must be (N, C, H, H), got shape {x.shape}")
    return np.nan_to_num(x)


def _radius(size: int) -> np.ndarray:
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[:size, :size]
    return np.hypot(yy - c, xx - c)


def _annulus_matrix(size: int, edges: np.ndarray) -> np.ndarray:
    """``(H*W, n_annuli)`` averaging weights of pixels in each annulus."""
    r = _radius(size).ravel()
    m = np.stack([(r >= a) & (r < b) for a, b in zip(edges[:-1], edges[1:])], axis=1).astype("f4")
    m[:, m.sum(0) == 0] = 0.0
    return m / np.maximum(m.sum(0, keepdims=True), 1.0)


def profile_annulus_weights(size: int) -> np.ndarray:
    """``(size*size, 8)`` weights averaging a flattened stamp in :func:`radial_profile`'s annuli (radii in pixels
    0-1-2-3-5-8-12-20-32 at 64 pixels, scaled to ``size``)."""
    return _annulus_matrix(size, _RADII * size / 64.0)


def radial_profile(x: np.ndarray) -> np.ndarray:
    """Mean value in the 8 annuli of :func:`profile_annulus_weights`: ``(N, C, 8)``."""
    x = _check(x)
    n, c, h, _ = x.shape
    return (x.reshape(n, c, h * h) @ profile_annulus_weights(h)).astype("f8")


def power_spectrum(x: np.ndarray, n_bins: int = _N_K) -> np.ndarray:
    """Azimuthally averaged log10 power spectrum (per stamp and band, mean removed): ``(N, C, n_bins)``.

    Bins are equal in radial frequency from 1/H to the Nyquist frequency.
    """
    x = _check(x).astype("f8")
    n, c, h, _ = x.shape
    f = np.fft.fft2(x - x.mean(axis=(2, 3), keepdims=True), axes=(2, 3))
    p = (f.real**2 + f.imag**2) / (h * h)
    return np.log10(p.reshape(n, c, h * h) @ power_bin_weights(h, n_bins) + 1e-12)


def power_bin_weights(size: int, n_bins: int = _N_K) -> np.ndarray:
    """``(size*size, n_bins)`` weights averaging an unshifted ``fft2`` power map in :func:`power_spectrum`'s radial bins."""
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")).ravel()
    edges = np.linspace(1.0 / size, 0.5, n_bins + 1)
    m = np.stack([(k >= a) & (k < b if i < n_bins - 1 else k <= b) for i, (a, b) in enumerate(zip(edges[:-1], edges[1:]))],
                 axis=1).astype("f8")
    return m / np.maximum(m.sum(0, keepdims=True), 1.0)


def _second_moments(total: np.ndarray, inner: np.ndarray) -> tuple[np.ndarray, ...]:
    """Centroid and second moments (pixels, pixels^2) of ``(N, H, H)`` images, weighted by the flux above each image's median inside ``inner``.

    Returns ``mx, my, qxx, qyy, qxy``: x runs along columns, y along rows, both from the stamp centre.
    """
    n, h = len(total), total.shape[-1]
    yy, xx = np.mgrid[:h, :h] - (h - 1) / 2.0
    wgt = np.clip(total - np.median(total.reshape(n, -1), axis=1)[:, None, None], 0, None) * inner
    f = np.maximum(wgt.sum((1, 2)), 1e-6)
    mx, my = (wgt * xx).sum((1, 2)) / f, (wgt * yy).sum((1, 2)) / f
    dx, dy = xx[None] - mx[:, None, None], yy[None] - my[:, None, None]
    return mx, my, (wgt * dx * dx).sum((1, 2)) / f, (wgt * dy * dy).sum((1, 2)) / f, (wgt * dx * dy).sum((1, 2)) / f


def _band_sum_moments(x: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`_second_moments` of the band sum of stamps ``(N, C, H, H)`` inside ``H / 4`` pixels of the centre."""
    return _second_moments(x.sum(1), (_radius(x.shape[-1]) < x.shape[-1] / 4.0).astype("f4"))


def shape_moments(stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ellipticity and position angle of each stamp ``(N, C, H, H)`` from the band sum's second moments inside ``H / 4`` pixels.

    Ellipticity ``|Q_xx - Q_yy, 2 Q_xy| / (Q_xx + Q_yy)`` (0 round, 1 a line);
    position angle of the major axis in degrees, ``[0, 180)``, from the +x
    (column) axis towards +y (rows), as an image shows with ``origin="lower"``.
    """
    x = _check(stamps)
    _, _, qxx, qyy, qxy = _band_sum_moments(x)
    ell = np.hypot(qxx - qyy, 2 * qxy) / np.maximum(qxx + qyy, 1e-6)
    angle = np.degrees(0.5 * np.arctan2(2 * qxy, qxx - qyy)) % 180.0
    return ell.astype("f8"), angle.astype("f8")


def light_centroids(stamps: np.ndarray) -> np.ndarray:
    """Light-weighted centroid of each stamp ``(N, C, H, H)``, in pixels from the stamp centre: ``(N, 2)`` (x along columns, y along rows).

    The band sum weighted by its flux above the stamp's median, inside ``H / 4``
    pixels of the centre: the centroid whose distance from the centre is the
    morphometry vector's ``offset``.
    """
    x = _check(stamps)
    mx, my, *_ = _band_sum_moments(x)
    return np.stack([mx, my], axis=1).astype("f8")


#: Stamps rounder than this carry no position angle worth counting (moment ellipticity, 0 round .. 1 a line).
MIN_ELLIPTICITY_FOR_ANGLE = 0.2


def orientation_isotropy(angle_deg: np.ndarray, ellipticity: np.ndarray, *,
                         min_ellipticity: float = MIN_ELLIPTICITY_FOR_ANGLE) -> dict:
    """How far position angles are from isotropic, on the stamps with ``ellipticity >= min_ellipticity``.

    Axial statistics (angles doubled; astropy.stats): ``resultant`` is the mean
    resultant length, 0 for orientations spread evenly, 1 when all are parallel
    (isotropic samples of ``n`` give about ``sqrt(pi / (4 n))``); ``rayleigh_p``
    the Rayleigh test's p-value of isotropy; ``n`` the stamps used.
    """
    from astropy.stats import circvar, rayleightest

    a = np.radians(2.0 * np.asarray(angle_deg, dtype="f8")[np.asarray(ellipticity) >= min_ellipticity])
    a = a[np.isfinite(a)]
    if len(a) < 2:
        return {"resultant": None, "rayleigh_p": None, "n": int(len(a))}
    return {"resultant": float(1.0 - circvar(a)), "rayleigh_p": float(rayleightest(a)), "n": int(len(a))}


def _adjacent_pairs(bands: list[str] | None, n_bands: int) -> list[tuple[int, int]]:
    if bands is not None and len(bands) == n_bands:
        from .morphology import colour_names

        return [(a, b) for _, a, b in colour_names(list(bands))]
    return [(i, i + 1) for i in range(n_bands - 1)]


def morphometry_names(n_bands: int, bands: list[str] | None = None) -> list[str]:
    """Column names of :func:`morphometry_features`."""
    tags = list(bands) if bands is not None and len(bands) == n_bands else [f"b{i}" for i in range(n_bands)]
    names = []
    for t in tags:
        names += [f"profile_{t}_{i}" for i in range(len(_RADII) - 1)]
        names += [f"power_{t}_{i}" for i in range(_N_K)]
        names += [f"asymmetry_{t}", f"p50_{t}", f"p90_{t}", f"p99_{t}"]
    names += ["size", "ellipticity", "offset"]
    for a, b in _adjacent_pairs(bands, n_bands):
        names += [f"colour_{tags[a]}-{tags[b]}_inner", f"colour_{tags[a]}-{tags[b]}_outer"]
    return names


#: Groups of :func:`morphometry_names` by what they describe (name prefix -> group).
MORPHOMETRY_GROUPS = {"profile": ("profile_",), "power spectrum": ("power_",), "asymmetry": ("asymmetry_",),
                      "pixel percentiles": ("p50_", "p90_", "p99_"), "shape": ("size", "ellipticity", "offset"),
                      "colour": ("colour_",)}


def morphometry_groups(names: list[str]) -> dict[str, np.ndarray]:
    """Boolean column masks of ``names`` (from :func:`morphometry_names`) per group of :data:`MORPHOMETRY_GROUPS`."""
    names = [str(n) for n in names]
    return {group: np.array([n.startswith(prefixes) for n in names]) for group, prefixes in MORPHOMETRY_GROUPS.items()}


def morphometry_features(stretched: np.ndarray, bands: list[str] | None = None, *, batch: int = 512) -> np.ndarray:
    """The morphometry vector of every stretched stamp ``(N, C, H, H)`` -> ``(N, D)`` (see the module docstring).

    Unscaled: standardise with a REAL set's mean and standard deviation before
    distances (``galearn gan evaluate`` uses the real training stamps').
    """
    x = _check(stretched)
    n, c, h, _ = x.shape
    if n == 0:
        return np.zeros((0, len(morphometry_names(c, bands))))
    r = _radius(h)
    inner = (r < h / 4.0).astype("f4")
    w_in, w_out = (r < h / 16.0).ravel(), (r < h / 8.0).ravel()
    pairs = _adjacent_pairs(bands, c)
    out = []
    for s in range(0, n, batch):
        xb = x[s: s + batch]
        m = len(xb)
        prof = radial_profile(xb)
        power = power_spectrum(xb)
        rot = xb[:, :, ::-1, ::-1]
        asym = (np.abs(xb - rot) * inner).sum((2, 3)) / np.maximum((np.abs(xb) * inner).sum((2, 3)), 1e-6)
        q = np.percentile(xb.reshape(m, c, -1), [50, 90, 99], axis=2).transpose(1, 2, 0)  # (m, c, 3)
        per_band = np.concatenate([prof, power, asym[:, :, None], q], axis=2).reshape(m, -1)
        mx, my, qxx, qyy, qxy = _second_moments(xb.sum(1), inner)
        tr = np.maximum(qxx + qyy, 1e-6)
        ell = np.hypot(qxx - qyy, 2 * qxy) / tr
        shape = np.stack([np.sqrt(tr), ell, np.hypot(mx, my)], axis=1)
        flat = xb.reshape(m, c, -1)
        a_in, a_out = flat[:, :, w_in].mean(2), flat[:, :, w_out].mean(2)
        cols = [np.stack([a_in[:, a] - a_in[:, b], a_out[:, a] - a_out[:, b]], axis=1) for a, b in pairs]
        out.append(np.concatenate([per_band, shape, *cols], axis=1))
    return np.concatenate(out).astype("f8")


def photometry_statistics(physical: np.ndarray, bands: list[str]) -> Table:
    """Per-band flux, adjacent-band colours and per-band log power spectrum of PHYSICAL stamps.

    Columns: ``flux_<band>`` (sum inside ``H / 8`` pixels of the centre),
    ``colour_<blue>-<red>`` (``-2.5 log10`` of their flux ratio; NaN unless
    both fluxes are positive) and ``power_<band>_<k>`` (:func:`power_spectrum`,
    8 bins), ``ellipticity`` and ``position_angle`` (deg; :func:`shape_moments`).
    One row per stamp, vectorised.
    """
    x = _check(physical)
    n, c, h, _ = x.shape
    if c != len(bands):
        raise BadValueError(f"physical stamps have {c} bands, bands lists {len(bands)}")
    aperture = (_radius(h) < h / 8.0)
    flux = x[:, :, aperture].sum(2).astype("f8")
    table = Table()
    for b, name in enumerate(bands):
        table[f"flux_{name}"] = flux[:, b]
    for a, b in _adjacent_pairs(bands, c):
        with np.errstate(divide="ignore", invalid="ignore"):
            col = np.where((flux[:, a] > 0) & (flux[:, b] > 0), -2.5 * np.log10(flux[:, a] / flux[:, b]), np.nan)
        table[f"colour_{bands[a]}-{bands[b]}"] = col
    power = power_spectrum(x)
    for b, name in enumerate(bands):
        for k in range(power.shape[2]):
            table[f"power_{name}_{k}"] = power[:, b, k]
    table["ellipticity"], table["position_angle"] = shape_moments(x)
    table["position_angle"].unit = "deg"
    return table


def group_wasserstein(reference: Table, other: Table, prefix: str, *, min_values: int = 5) -> tuple[float, dict]:
    """IQR-scaled 1-D Wasserstein distance (Holzschuh et al. 2022) averaged over the columns starting with ``prefix``."""
    return scaled_wasserstein(reference, other, [n for n in reference.colnames if n.startswith(prefix)],
                              min_values=min_values)
