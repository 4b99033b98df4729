"""Intensity stretches for learning and display.

The learning/display stretch is a per-band asinh whose softening is a fixed
number of noise sigmas of that band, and whose upper end is a robust bright
level of that band over the whole sample. The same transform is applied to
every galaxy, so band ratios (colours) stay comparable between galaxies --
unlike a min/max stretch per stamp, which is kept only as an option
(:func:`minmax_asinh`, what the science case's notebook did).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from astropy.stats import mad_std

from .errors import BadValueError

__all__ = [
    "AsinhStretch",
    "minmax_asinh",
    "robust_noise",
    "subtract_border_background",
    "stretch_noise_sigma",
    "band_wavelength_nm",
    "bands_blue_to_red",
    "rgb_order",
    "stamps_to_rgb",
    "lupton_rgb",
]

# Pivot wavelengths (nm) of common filters; others are parsed from the name.
_KNOWN_WAVELENGTHS_NM = {
    "F435W": 432.0, "F606W": 592.0, "F775W": 769.0, "F814W": 806.0, "F850LP": 903.0,
    "F105W": 1055.0, "F125W": 1249.0, "F140W": 1392.0, "F160W": 1537.0,
    "U": 365.0, "B": 445.0, "G": 530.0, "V": 551.0, "R": 640.0, "I": 806.0,
    "Z": 900.0, "Y": 1020.0, "J": 1220.0, "H": 1630.0, "K": 2190.0,
}


def band_wavelength_nm(band: str) -> float:
    """Approximate central wavelength (nm) of a band name such as ``F160W`` or ``R``."""
    key = band.upper()
    if key in _KNOWN_WAVELENGTHS_NM:
        return _KNOWN_WAVELENGTHS_NM[key]
    m = re.fullmatch(r"F(\d{3,4})[A-Z]+", key)
    if m:
        value = float(m.group(1))
        # HST names: 3 digits in nm for UVIS/ACS, F0xx-F1xx in 10 nm for the IR channel.
        return value * 10.0 if value < 200 else value
    raise BadValueError(f"unknown band {band!r}: cannot tell its wavelength; name bands like F435W or R/G/B")


def bands_blue_to_red(bands: list[str]) -> list[int]:
    """Band indices from the bluest to the reddest (:func:`band_wavelength_nm`); unknown names: the given order."""
    try:
        lam = [band_wavelength_nm(b) for b in bands]
    except BadValueError:
        return list(range(len(bands)))
    return [int(i) for i in np.argsort(lam, kind="stable")]


def rgb_order(bands: list[str]) -> list[int]:
    """Indices of the bands to show as (R, G, B): reddest to bluest of the last three.

    With fewer than three bands the reddest/bluest are repeated.
    """
    if [b.upper() for b in bands] == ["R", "G", "B"]:
        return [0, 1, 2]
    try:
        lam = [band_wavelength_nm(b) for b in bands]
        order = list(np.argsort(lam)[::-1])  # reddest first
    except BadValueError:
        order = list(range(len(bands)))[::-1]
    if len(order) >= 3:
        return [int(order[0]), int(order[len(order) // 2]), int(order[-1])]
    if len(order) == 2:
        return [int(order[0]), int(order[0]), int(order[1])]
    return [int(order[0])] * 3


def robust_noise(pixels: np.ndarray) -> float:
    """Robust standard deviation (median absolute deviation) of finite, non-zero pixels."""
    values = np.asarray(pixels, dtype="f8").ravel()
    values = values[np.isfinite(values) & (values != 0)]
    if values.size == 0:
        return float("nan")
    # Clip bright sources away before measuring the noise.
    med = np.median(values)
    sig = mad_std(values)
    keep = np.abs(values - med) < 5 * sig if sig > 0 else slice(None)
    return float(mad_std(values[keep]))


def subtract_border_background(stamps: np.ndarray, width: int | None = None) -> np.ndarray:
    """Subtract, per stamp and band, the median of the outer frame of ``width`` pixels.

    For display images (e.g. SDSS JPEGs) whose sky is not zero. ``width``
    defaults to ``max(2, side // 16)`` pixels.
    """
    x = np.asarray(stamps, dtype="f8")
    n, c, h, w = x.shape
    k = max(2, min(h, w) // 16) if width is None else int(width)
    if not 1 <= k < min(h, w) // 2:
        raise BadValueError(f"background frame width must be 1..{min(h, w) // 2 - 1} pixels, got {k}")
    frame = np.concatenate([x[..., :k, :].reshape(n, c, -1), x[..., -k:, :].reshape(n, c, -1),
                            x[..., k:-k, :k].reshape(n, c, -1), x[..., k:-k, -k:].reshape(n, c, -1)], axis=-1)
    return x - np.median(frame, axis=-1)[..., None, None]


@dataclass
class AsinhStretch:
    """Per-band asinh stretch with a noise-based softening.

    ``s = asinh(x / a_b) / asinh(m_b / a_b)``, clipped to ``[0, 1]``, where
    ``a_b`` (the softening, in the band's physical units per pixel) is
    ``softening_sigmas`` times the band's noise sigma and ``m_b`` is the bright
    level mapped to 1.

    Parameters
    ----------
    softening : array of shape (C,)
        ``a_b`` per band (physical units per pixel).
    maximum : array of shape (C,)
        ``m_b`` per band (physical units per pixel).
    """

    softening: np.ndarray
    maximum: np.ndarray

    def __post_init__(self) -> None:
        self.softening = np.asarray(self.softening, dtype="f8")
        self.maximum = np.asarray(self.maximum, dtype="f8")
        if np.any(~np.isfinite(self.softening)) or np.any(self.softening <= 0):
            raise BadValueError(f"asinh softening must be finite and > 0 per band, got {self.softening}")
        if np.any(self.maximum <= self.softening):
            self.maximum = np.maximum(self.maximum, 10 * self.softening)

    @classmethod
    def fit(
        cls,
        stamps: np.ndarray,
        *,
        noise_sigma: np.ndarray | None = None,
        softening_sigmas: float = 2.0,
        max_percentile: float = 99.9,
    ) -> "AsinhStretch":
        """Choose softening and maximum per band from physical stamps ``(N, C, H, W)``.

        ``noise_sigma`` (per band, physical units) is measured from the stamps'
        pixels with a clipped MAD when not given (prefer the mosaic's own).
        """
        stamps = np.asarray(stamps)
        if stamps.ndim != 4:
            raise BadValueError(f"stamps must be (N, C, H, W), got shape {stamps.shape}")
        n_bands = stamps.shape[1]
        if noise_sigma is None:
            noise_sigma = np.array([robust_noise(stamps[:, b]) for b in range(n_bands)])
        noise_sigma = np.asarray(noise_sigma, dtype="f8")
        bad = ~np.isfinite(noise_sigma) | (noise_sigma <= 0)
        if np.any(bad):
            # Noise-free inputs (e.g. simulations without noise): fall back to a
            # small fraction of the bright level.
            for b in np.flatnonzero(bad):
                finite = stamps[:, b][np.isfinite(stamps[:, b])]
                noise_sigma[b] = 1e-3 * max(np.percentile(np.abs(finite), 99.9), 1e-30) if finite.size else 1.0
        maximum = np.array(
            [np.nanpercentile(stamps[:, b], max_percentile) for b in range(n_bands)], dtype="f8"
        )
        return cls(softening=softening_sigmas * noise_sigma, maximum=maximum)

    def _shape(self, values: np.ndarray, ndim: int) -> np.ndarray:
        # Broadcast a per-band vector over (..., C, H, W).
        return values.reshape((-1, 1, 1)) if ndim >= 3 else values

    def forward(self, physical: np.ndarray) -> np.ndarray:
        """Physical stamps ``(..., C, H, W)`` -> stretched float32 in ``[0, 1]``; NaN -> 0.

        Computed in float32 as ``log(u + sqrt(1 + u^2))`` for ``u = max(x / a, 0)``
        (``asinh(u)`` to ~1e-7; several times faster than ``numpy.arcsinh``
        on large arrays; negative values map to 0 anyway).
        """
        x = np.asarray(physical)
        a = self._shape(self.softening, x.ndim).astype("f4")
        norm = self._shape(1.0 / np.arcsinh(self.maximum / self.softening), x.ndim).astype("f4")
        if x.ndim == 4 and x.shape[0] > 16:  # cache-sized blocks of stamps: several times faster
            out = np.empty(x.shape, dtype="f4")
            for start in range(0, x.shape[0], 16):
                out[start : start + 16] = self._forward_block(x[start : start + 16], a, norm)
            return out
        return self._forward_block(x, a, norm)

    @staticmethod
    def _forward_block(x: np.ndarray, a: np.ndarray, norm: np.ndarray) -> np.ndarray:
        u = np.divide(x, a, dtype="f4")
        np.nan_to_num(u, copy=False, nan=0.0)
        np.maximum(u, 0.0, out=u)
        s = _asinh_nonneg(u)
        s *= norm
        np.minimum(s, 1.0, out=s)
        return s

    def inverse(
        self,
        stretched: np.ndarray,
        *,
        censored_noise_sigma: np.ndarray | None = None,
        random_state: int | np.random.Generator | list | tuple | None = None,
        censored_smoothing_pixels: float = 1.5,
    ) -> np.ndarray:
        """Stretched values ``(..., C, H, W)`` -> physical units (float32).

        :meth:`forward` clips at 0, so a stretched value of exactly 0 only says
        "physical value <= 0" (censored): the plain inverse maps it to 0, and a
        stamp's sky loses the negative half of its noise (its mean becomes
        ~0.4 sigma, its spread 0.58 sigma), which biases statmorph's sky and
        asymmetry estimates. With ``censored_noise_sigma`` those pixels get
        seeded draws of the pixel's value conditioned on ``<= 0``: first
        ``-|N(0, sigma_b)|`` (pure sky: a negative half-normal, mean
        ``-sigma_b sqrt(2 / pi)``); then, with ``censored_smoothing_pixels > 0``,
        a draw from ``N(mu, sigma_b)`` truncated to ``<= 0``, where ``mu >= 0``
        is the local mean level (the first pass smoothed with a Gaussian of
        that many pixels), so censored pixels on a faint source's outskirts
        are not as negative as pure sky (on round-tripped real stamps this
        brings statmorph's Gini back to the real distribution; for
        ``mu = 0`` it is the half-normal). The draws are independent per pixel
        (correlated noise of resampled mosaics is not restored). Values at
        the upper clip (1) stay at ``maximum``.

        Parameters
        ----------
        stretched : ndarray, shape (..., C, H, W)
            Stretched values in ``[0, 1]``.
        censored_noise_sigma : array of shape (C,) or (N, C), optional
            Per-band pixel noise sigma (physical units per pixel, e.g.
            electrons/s), see :func:`stretch_noise_sigma`; ``(N, C)``: per
            stamp of ``stretched (N, C, H, W)`` (stamps of different depth). ``None``: censored
            pixels stay 0 (the plain inverse).
        random_state : int, sequence of int or numpy Generator, optional
            Seed of the draws (same seed and input: identical output).
        censored_smoothing_pixels : float
            Gaussian sigma (pixels) of the local mean level ``mu`` of the
            truncated draws; 0: pure-sky half-normal draws only.

        Returns
        -------
        ndarray, float32, the shape of ``stretched``
            Physical values per pixel.
        """
        s = np.asarray(stretched, dtype="f8")
        a = self._shape(self.softening, s.ndim)
        m = self._shape(self.maximum, s.ndim)
        out = (a * np.sinh(s * np.arcsinh(m / a))).astype("f4")
        if censored_noise_sigma is not None:
            sigma = np.asarray(censored_noise_sigma, dtype="f8")
            n_bands = self.softening.size
            per_stamp = sigma.ndim == 2 and s.ndim == 4 and sigma.shape == (s.shape[0], n_bands)
            if not per_stamp:
                sigma = sigma.ravel()
            if (not per_stamp and sigma.shape != self.softening.shape) or np.any(~np.isfinite(sigma)) or np.any(sigma <= 0):
                raise BadValueError(f"censored_noise_sigma must be finite and > 0 for each of the {n_bands} bands "
                                    f"(or each stamp and band), got {np.round(sigma, 6).tolist()[:8]}")
            censored = s <= 0
            n_censored = int(censored.sum())
            if n_censored:
                rng = (random_state if isinstance(random_state, np.random.Generator)
                       else np.random.default_rng(random_state))
                sigma_b = sigma[:, :, None, None] if per_stamp else self._shape(sigma, s.ndim)
                per_pixel = np.broadcast_to(sigma_b, s.shape)[censored]
                out[censored] = (-np.abs(rng.standard_normal(n_censored)) * per_pixel).astype("f4")
                if censored_smoothing_pixels > 0 and s.ndim >= 2:
                    from scipy import ndimage, special

                    width = (0,) * (s.ndim - 2) + (float(censored_smoothing_pixels),) * 2
                    mu = np.maximum(ndimage.gaussian_filter(out.astype("f8"), width), 0.0)[censored] / per_pixel
                    # inverse CDF of N(mu, 1) truncated to <= 0, in noise units
                    u = rng.uniform(size=n_censored) * special.ndtr(-mu)
                    z = mu + special.ndtri(np.maximum(u, 1e-300))
                    out[censored] = (np.minimum(z, 0.0) * per_pixel).astype("f4")
        return out

    def to_dict(self) -> dict:
        return {"method": "asinh", "softening": self.softening.tolist(), "maximum": self.maximum.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "AsinhStretch":
        if d.get("method") != "asinh":
            raise BadValueError(f"not an asinh stretch: {d.get('method')!r}")
        return cls(softening=d["softening"], maximum=d["maximum"])


def stretch_noise_sigma(stretch: dict) -> np.ndarray:
    """Per-band pixel noise sigma (physical units per pixel) behind a stretch's description.

    The stored ``noise_sigma`` (what ``cutouts`` measured on the mosaics) when
    present, else ``softening / softening_sigmas`` (default 2, as in
    :meth:`AsinhStretch.fit`).
    """
    if stretch.get("method") != "asinh":
        raise BadValueError(f"not an asinh stretch: {stretch.get('method')!r}")
    softening = np.asarray(stretch["softening"], dtype="f8")
    stored = stretch.get("noise_sigma")
    if stored is not None:
        sigma = np.asarray(stored, dtype="f8")
        if sigma.shape == softening.shape and np.all(np.isfinite(sigma)) and np.all(sigma > 0):
            return sigma
    return softening / float(stretch.get("softening_sigmas", 2.0))


def _asinh_nonneg(u: np.ndarray) -> np.ndarray:
    """``asinh(u)`` for ``u >= 0`` (float32, in place on a temporary)."""
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.square(u)
        q += np.float32(1.0)
        np.sqrt(q, out=q)
        q += u
        np.log(q, out=q)  # float32 log is SIMD-vectorised; absolute error ~1e-7
    # u**2 overflows above ~1.8e19: asinh(u) ~ log(2u) there.
    big = ~np.isfinite(q)
    if big.any():
        q[big] = np.log(np.float64(2.0) * u[big].astype("f8")).astype("f4")
    return q


def minmax_asinh(physical: np.ndarray) -> np.ndarray:
    """asinh then min/max scaling per stamp and band (the science notebook's stretch).

    Not invertible and not comparable between galaxies; kept as an option.
    """
    y = np.arcsinh(np.nan_to_num(np.asarray(physical, dtype="f8")))
    lo = y.min(axis=(-2, -1), keepdims=True)
    hi = y.max(axis=(-2, -1), keepdims=True)
    return ((y - lo) / np.where(hi > lo, hi - lo, 1.0)).astype("f4")


def stamps_to_rgb(stretched: np.ndarray, bands: list[str]) -> np.ndarray:
    """Stretched stamps ``(N, C, H, W)`` -> uint8 RGB ``(N, H, W, 3)``, reddest band as R."""
    idx = rgb_order(bands)
    rgb = np.asarray(stretched)[:, idx].transpose(0, 2, 3, 1)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def lupton_rgb(
    physical: np.ndarray,
    bands: list[str],
    *,
    stretch: float | None = None,
    Q: float = 8.0,
    minimum: float = 0.0,
) -> np.ndarray:
    """Lupton et al. (2004) colour composite of physical stamps ``(N, C, H, W)``.

    Bands are taken reddest -> R. Each band is first divided by its robust
    noise so that the composite does not depend on the units per band.
    ``stretch`` (in noise units) defaults to 20% of the 99.5th percentile.
    Returns uint8 ``(N, H, W, 3)``.
    """
    from astropy.visualization import make_lupton_rgb

    x = np.nan_to_num(np.asarray(physical, dtype="f8"))
    idx = rgb_order(bands)
    noise = np.array([robust_noise(x[:, b]) for b in idx])
    noise = np.where(np.isfinite(noise) & (noise > 0), noise, 1.0)
    chans = [x[:, b] / s for b, s in zip(idx, noise)]
    if stretch is None:
        stretch = max(0.2 * float(np.percentile(np.stack(chans), 99.5)), 1e-6)
    out = np.empty(x.shape[:1] + x.shape[2:] + (3,), dtype=np.uint8)
    for i in range(x.shape[0]):
        out[i] = make_lupton_rgb(chans[0][i], chans[1][i], chans[2][i], minimum=minimum, stretch=stretch, Q=Q)
    return out
