"""Aperture colours and concentration measured on the stamps themselves (no labels, no catalogue).

A small block of label-free quantities that :func:`galearn.maps.default_clusters`
(``galearn classify``) appends to the CNN features of the *clustering* (docs/maps.md,
"Choosing the clusters"), because the network features keep too little of the
galaxies' colour for the small red / quiescent population to form its own clusters:

* the colour of every pair of adjacent bands (blue to red), ``-2.5 log10`` of
  the flux ratio in a circular aperture of radius ``r_mid`` at the stamp centre;
* the concentration ``log10 F(r_in) / F(r_out)`` of the reddest band.

The radii are ``APERTURE_RADII_64`` pixels for a 64-pixel stamp, scaled with
the stamp side (the stamps of one sample share one size). Fluxes below one
aperture noise sigma are set to it (so faint or negative apertures give a
finite, bounded value). Everything is vectorised over the sample: the aperture
weights (the fraction of each pixel inside the circle, from an 8 x 8 sub-pixel
grid) are made once and each band's flux is one weighted sum per stamp.

Only stamps in *linear* units have colours: for samples of display images
(``galearn ingest-images``: already stretched JPEG / PNG, ``Sample.kind ==
"images"``) a pixel ratio is not a flux ratio, and :func:`sample_colour_block`
returns None (measured: fusing it lowered the clusters' agreement on the real
Galaxy Zoo images, docs/maps.md).
"""

from __future__ import annotations

import numpy as np

from ..errors import BadValueError
from ..imaging import bands_blue_to_red, robust_noise

__all__ = ["APERTURE_RADII_64", "aperture_weights", "aperture_fluxes", "colour_block", "sample_colour_block",
           "NOISE_STAMPS"]

#: Inner, middle and outer aperture radius (pixels) for a 64-pixel stamp; scaled with the side.
APERTURE_RADII_64 = (3.0, 6.0, 12.0)
#: Stamps the per-band noise sigma is measured on (the first ones: deterministic, cheap at any N).
NOISE_STAMPS = 2048
_SUPERSAMPLE = 8


def aperture_weights(height: int, width: int, radius: float, supersample: int = _SUPERSAMPLE) -> np.ndarray:
    """Fraction of each pixel of an ``(height, width)`` stamp inside a circle of ``radius`` pixels at its centre.

    The centre is the stamp centre ``((height - 1) / 2, (width - 1) / 2)`` in
    pixel-centre coordinates; each pixel is sampled on a ``supersample`` x
    ``supersample`` grid. Returns float64 ``(height, width)``; its sum is
    ``pi radius^2`` to ~1 % for ``radius >= 2``.
    """
    if not radius > 0:
        raise BadValueError(f"aperture radius must be > 0 pixels, got {radius}")
    s = int(supersample)
    off = (np.arange(s) + 0.5) / s - 0.5
    y = (np.arange(height)[:, None] + off[None, :]).ravel() - (height - 1) / 2.0
    x = (np.arange(width)[:, None] + off[None, :]).ravel() - (width - 1) / 2.0
    inside = (y[:, None] ** 2 + x[None, :] ** 2) <= float(radius) ** 2
    return inside.reshape(height, s, width, s).mean(axis=(1, 3))


def aperture_fluxes(stamps: np.ndarray, radii) -> np.ndarray:
    """Summed pixel values inside centred circular apertures: ``(N, C, H, W)`` -> ``(N, C, len(radii))``.

    NaN pixels count as 0. Units: the stamps' units times pixels.
    """
    x = np.asarray(stamps)
    if x.ndim != 4:
        raise BadValueError(f"stamps must be (N, C, H, W), got shape {x.shape}")
    h, w = x.shape[-2:]
    W = np.stack([aperture_weights(h, w, r) for r in radii], axis=-1)  # (H, W, R)
    n, c = x.shape[:2]
    x = np.nan_to_num(np.asarray(x, dtype=np.float64).reshape(n * c, h * w), nan=0.0, posinf=0.0, neginf=0.0)
    return (x @ W.reshape(h * w, len(radii))).reshape(n, c, len(radii))  # one matrix product (BLAS)


def _radii(side: int) -> tuple[float, float, float]:
    return tuple(r * side / 64.0 for r in APERTURE_RADII_64)


def colour_block(stamps: np.ndarray, bands: list[str], *, noise_sigma=None) -> tuple[np.ndarray, list[str]]:
    """Adjacent-band aperture colours and the reddest band's concentration of every stamp.

    Parameters
    ----------
    stamps : array (N, C, H, W)
        Stamps in linear (physical) units, sky-subtracted (the mosaic's sky is zero).
    bands : list of str
        Band names of axis C (ordered by pivot wavelength, :func:`galearn.imaging.band_wavelength_nm`).
    noise_sigma : array (C,) or None
        Per-pixel noise sigma per band (stamp units); None: measured on the first
        :data:`NOISE_STAMPS` stamps (:func:`galearn.imaging.robust_noise`).

    Returns
    -------
    values : numpy.ndarray, float64, shape (N, C)
        ``C - 1`` colours (mag) then the concentration (dex); all finite.
    names : list of str
        ``colour_<blue>-<red>`` ..., ``concentration_<reddest band>``.
    """
    x = np.asarray(stamps)
    if x.ndim != 4 or x.shape[1] != len(bands):
        raise BadValueError(f"stamps must be (N, {len(bands)}, H, W), got shape {x.shape}")
    if len(bands) < 1:
        raise BadValueError("colour_block needs at least one band")
    if noise_sigma is None:
        head = np.asarray(x[:NOISE_STAMPS], dtype=np.float64)
        noise_sigma = np.array([robust_noise(head[:, b]) for b in range(x.shape[1])])
    noise_sigma = np.asarray(noise_sigma, dtype=np.float64)
    noise_sigma = np.where(np.isfinite(noise_sigma) & (noise_sigma > 0), noise_sigma, 1e-12)
    radii = _radii(min(x.shape[-2:]))
    F = aperture_fluxes(x, radii)  # (N, C, 3)
    areas = np.array([aperture_weights(*x.shape[-2:], r).sum() for r in radii])
    floor = noise_sigma[:, None] * np.sqrt(areas)[None, :]  # (C, 3): 1 sigma of an aperture sum
    F = np.maximum(F, floor[None])
    order = bands_blue_to_red(list(bands))
    cols, names = [], []
    for a, b in zip(order[:-1], order[1:]):
        cols.append(-2.5 * np.log10(F[:, a, 1] / F[:, b, 1]))
        names.append(f"colour_{bands[a]}-{bands[b]}")
    red = order[-1]
    cols.append(np.log10(F[:, red, 0] / F[:, red, 2]))
    names.append(f"concentration_{bands[red]}")
    return np.stack(cols, axis=1), names


def sample_colour_block(sample, *, batch: int = 4096) -> tuple[np.ndarray, list[str]] | None:
    """:func:`colour_block` of a sample's physical stamps, read in batches; None for display images.

    None when the sample has no ``stamps/physical`` or holds display images
    (``Sample.display_images``): their pixel ratios are not colours.
    """
    if sample.display_images or not sample.has("physical") or sample.n == 0:
        return None
    bands = list(sample.bands)
    head = sample.read("physical", slice(0, min(sample.n, NOISE_STAMPS))).astype(np.float64)
    noise = np.array([robust_noise(head[:, b]) for b in range(head.shape[1])])
    parts, names = [], None
    for _, stamps in sample.iter_batches(batch, which="physical"):
        values, names = colour_block(stamps, bands, noise_sigma=noise)
        parts.append(values)
    return np.concatenate(parts, axis=0), names
