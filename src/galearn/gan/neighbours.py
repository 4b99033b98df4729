"""Neighbouring sources drawn into generated stamps (``gan.g_neighbours``).

A real stamp holds more than its galaxy: stars and other galaxies fall in
its outskirts (on the 600 galaxy-zoo-dev stamps about half of the outer
strips hold a source 6 sky sigma above the sky; docs/gan-experiments.md, round 43).
They move the light centroid off the peak, raise the asymmetry and add
pixel-scale power that has nothing to do with the galaxy's own light. A
generator without them paints smooth structure on the sky instead.

* :func:`measure_neighbours` -- the compact sources of the real training
  stamps away from their centre: how many per stamp, and each one's flux
  per band, size and offset from the centre (connected pixels above a
  threshold in the band-summed significance map, ``scipy.ndimage.label``).
* :func:`render_neighbours` -- draws, per generated stamp, the number of
  one real stamp and as many real sources, each turned to a seeded random
  angle about the stamp centre, and renders them as circular Gaussians of
  their measured flux and size (linear units), to be added to the noiseless
  stamp before the sky noise (:class:`~galearn.gan.sky.SkyNoise`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .rng import seeded_draw

__all__ = ["measure_neighbours", "render_neighbours", "NEIGHBOUR_COUNT_ROWS", "NEIGHBOUR_SOURCE_ROWS",
           "NEIGHBOURS_MAX"]

#: Rows of real per-stamp neighbour counts a generator keeps (a fixed buffer shape).
NEIGHBOUR_COUNT_ROWS = 256
#: Rows of real neighbour sources a generator keeps (a fixed buffer shape).
NEIGHBOUR_SOURCE_ROWS = 512
#: At most this many neighbours are drawn into one stamp.
NEIGHBOURS_MAX = 8
#: The smallest Gaussian sigma a neighbour is drawn with (pixels): a point source's light over about 2 pixels.
MIN_NEIGHBOUR_SIGMA = 0.6


def measure_neighbours(linear: np.ndarray, level: np.ndarray, sigma: np.ndarray, *, threshold: float = 5.0,
                       min_pixels: int = 4, core: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The compact sources of real stamps away from their centre.

    Parameters
    ----------
    linear : array (N, C, H, W)
        Real stamps in the stretch's linear units (:func:`galearn.gan.sky.linearise`).
    level, sigma : arrays (C,)
        The sky's level and noise per band (:func:`galearn.gan.sky.measure_sky`).
    threshold : float
        Detection threshold on the band-summed excess ``sum_b (x_b - level_b) / sigma_b`` averaged over
        3x3 pixels, in units of that map's own robust spread on the real stamps' outer rings (median and
        MAD; the rings' neighbours are a tail the MAD ignores).
    min_pixels : int
        Fewest connected pixels above the threshold that make a source.
    core : float, optional
        A source with a pixel within this radius (pixels) of the stamp centre is the galaxy itself
        and not counted; default ``H / 8``.

    Returns
    -------
    counts : array (N,) int
        Each stamp's number of neighbours.
    sources : array (M, C + 3) float32
        Each neighbour's flux per band above the sky (linear units, summed over its pixels), its
        Gaussian sigma (pixels, from its light's second moments, at least ``MIN_NEIGHBOUR_SIGMA``)
        and its offset from the stamp centre ``(dx, dy)`` (pixels).
    """
    from scipy import ndimage

    x = np.asarray(linear, dtype="f8")
    n, c, h, w = x.shape
    above = (x - np.asarray(level, "f8")[None, :, None, None]) / np.maximum(np.asarray(sigma, "f8"), 1e-12)[None, :, None, None]
    box = ndimage.uniform_filter(above.sum(axis=1), size=(1, 3, 3), mode="nearest")
    # In units of its own spread on the sky: the bands' noise may be correlated (a colour JPEG's is grey) and so
    # may neighbouring pixels', so the spread is measured (outer ring, median and MAD), not assumed.
    ring = np.ones((h, w), dtype=bool)
    ring[h // 8:h - h // 8, w // 8:w - w // 8] = False
    sky_box = box[:, ring]
    centre = np.median(sky_box)
    spread = 1.4826 * np.median(np.abs(sky_box - centre))
    significance = (box - centre) / max(spread, 1e-12)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)  # no connection between stamps
    labels, n_labels = ndimage.label(significance > threshold, structure=structure)
    if n_labels == 0:
        return np.zeros(n, dtype=np.int64), np.zeros((0, c + 3), dtype="f4")
    yy, xx = np.mgrid[:h, :w].astype("f8")
    cy, cx = (h - 1) / 2, (w - 1) / 2
    radius = np.hypot(yy - cy, xx - cx)
    core = h / 8 if core is None else float(core)
    flat = labels.ravel()
    size = n_labels + 1
    area = np.bincount(flat, minlength=size)
    central = np.zeros(size, dtype=bool)
    central[np.unique(labels[:, radius <= core])] = True
    stamp = np.zeros(size, dtype=np.int64)
    stamp[flat] = np.repeat(np.arange(n), h * w)
    excess = x - np.asarray(level, "f8")[None, :, None, None]
    flux = np.stack([np.bincount(flat, weights=excess[:, b].ravel(), minlength=size) for b in range(c)], axis=1)
    weight = np.clip(above.sum(axis=1), 0.0, None).ravel()  # the band-summed significance, for the moments
    wsum = np.bincount(flat, weights=weight, minlength=size)
    gx = np.broadcast_to(xx, (n, h, w)).ravel()
    gy = np.broadcast_to(yy, (n, h, w)).ravel()
    mx = np.bincount(flat, weights=weight * gx, minlength=size) / np.maximum(wsum, 1e-12)
    my = np.bincount(flat, weights=weight * gy, minlength=size) / np.maximum(wsum, 1e-12)
    r2 = np.bincount(flat, weights=weight * (gx**2 + gy**2), minlength=size) / np.maximum(wsum, 1e-12) - mx**2 - my**2
    s = np.sqrt(np.clip(r2, 0.0, None) / 2.0)  # a circular Gaussian's <x^2> + <y^2> = 2 sigma^2
    keep = (~central) & (area >= min_pixels) & (flux.sum(axis=1) > 0) & (wsum > 0)
    keep[0] = False  # the background
    counts = np.bincount(stamp[keep], minlength=n).astype(np.int64)
    sources = np.concatenate([flux[keep], np.maximum(s[keep], MIN_NEIGHBOUR_SIGMA)[:, None],
                              (mx[keep] - cx)[:, None], (my[keep] - cy)[:, None]], axis=1)
    return counts, sources.astype("f4")


def render_neighbours(counts: torch.Tensor, sources: torch.Tensor, n_sources: int, shape: tuple[int, int, int, int],
                      gen: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Neighbours for ``shape[0]`` generated stamps, linear units ``(N, C, H, W)``.

    ``counts`` ``(R,)``: real stamps' neighbour counts, one drawn per stamp (at most ``NEIGHBOURS_MAX``);
    ``sources`` ``(S, C + 3)``: real neighbours (:func:`measure_neighbours`), the first ``n_sources`` of
    which are drawn from; each turned about the stamp centre by a uniform angle. All draws from ``gen``.
    """
    n, c, h, w = shape
    k = NEIGHBOURS_MAX
    row = seeded_draw(torch.randint, len(counts), (n,), gen=gen, device=device)
    pick = seeded_draw(torch.randint, max(int(n_sources), 1), (n, k), gen=gen, device=device)
    angle = seeded_draw(torch.rand, (n, k), gen=gen, device=device) * (2 * math.pi)
    if n_sources <= 0:
        return torch.zeros(shape, device=device, dtype=dtype)
    active = (torch.arange(k, device=device)[None] < counts.to(device)[row][:, None]).to(torch.float32)  # (n, k)
    src = sources.to(device)[pick]  # (n, k, C + 3)
    flux, sig, dx, dy = src[..., :c], src[..., c], src[..., c + 1], src[..., c + 2]
    cos, sin = torch.cos(angle), torch.sin(angle)
    px, py = cos * dx - sin * dy, sin * dx + cos * dy
    yy = torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2
    xx = torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2
    gy = torch.exp(-(yy[None, None] - py[..., None]) ** 2 / (2 * sig[..., None] ** 2))  # (n, k, H)
    gx = torch.exp(-(xx[None, None] - px[..., None]) ** 2 / (2 * sig[..., None] ** 2))  # (n, k, W)
    norm = active / (2 * math.pi * sig**2)
    image = torch.einsum("nkh,nkw,nk,nkc->nchw", gy, gx, norm, flux)
    return image.to(dtype)
