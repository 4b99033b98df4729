"""Rare kinds in the mock field: what an anomaly search should find (``truth_rare``).

A few per cent of the catalogue's galaxies (``SimulateConfig.rare_fraction``,
default 4 %) get one rare feature each, drawn at the field level, so stamps
are cut from the mosaics exactly as for every other galaxy:

========  =====================================================================
kind      what is added around the catalogue galaxy
========  =====================================================================
lens      a singular-isothermal-sphere strong lens: a compact blue background
          galaxy (exponential, F160W 24-25.5 AB before lensing) behind one of
          the most massive ellipticals, lensed into arcs / an Einstein ring of
          radius 0.55-1.1"
ring      a star-forming ring (Gaussian annulus at 1.6-2.6 half-light radii,
          0.35-1.3", with clumps) around a disk galaxy, inclined like its disk
          (a collisional ring galaxy)
spikes    a bright star (F160W 16.5-18.5 AB, not in the catalogue) 0.9-1.7" away,
          with HST's four diffraction spikes (intensity ~ r^-2, length and
          width growing with wavelength)
trail     a satellite trail: a straight streak (Gaussian width 0.05-0.1",
          5-25 sky sigma) through the galaxy's surroundings, in one band
cosmic    3-10 unrejected cosmic-ray hits (single pixels, pairs and short
          tracks, 15-150 sky sigma, not blurred by the PSF) within 1.6", in one
          ACS band
edge      a detector edge crossing the stamp 0.3-1.2" from the galaxy: beyond
          it the data come from one short exposure (4x the sky noise, a
          +2 sigma bias step), in one band
========  =====================================================================

Lenses, rings and stars are sky signal: drawn noise-free, PSF-convolved, and
given their own Poisson noise. Trails, cosmic rays and edges are detector
artefacts added after the noise. Everything here draws from its own random
streams (``(seed, 41, ...)``), and the rare signal is *added* to the mosaics
after the ordinary noise (Poisson noise is additive), so every pixel away
from a rare galaxy -- and every catalogue column except ``truth_rare`` -- is
identical to a field simulated with ``rare_fraction = 0``. The catalogue's
magnitudes stay those of the galaxy itself (arcs, rings and stars excluded).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["RARE_KINDS", "NONE", "assign_rare", "draw_rare_sources", "draw_rare_artefacts", "apply_rare_to_band"]

RARE_KINDS = ("lens", "ring", "spikes", "trail", "cosmic", "edge")
NONE = "none"
_STREAM = 41


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _STREAM, *key])


def assign_rare(cat, n_galaxies: int, fraction: float, seed: int) -> dict:
    """Choose the rare galaxies and draw their parameters.

    Parameters
    ----------
    cat : astropy.table.Table
        The mock catalogue (galaxies first, then stars); read-only here.
    n_galaxies : int
        Number of galaxy rows (the first rows of ``cat``).
    fraction : float
        Fraction of the galaxies that get a rare feature (0 .. 0.2).
    seed : int

    Returns
    -------
    dict
        ``kinds`` (one string per catalogue row, ``"none"`` for ordinary
        sources) and ``items`` (one dict of parameters per rare galaxy).
    """
    rng = _rng(seed, 0)
    n = len(cat)
    kinds = np.full(n, NONE, dtype="U8")
    n_rare = int(round(fraction * n_galaxies))
    if n_rare == 0:
        return {"kinds": kinds, "items": []}
    per_kind = [n_rare // len(RARE_KINDS) + (1 if k < n_rare % len(RARE_KINDS) else 0) for k in range(len(RARE_KINDS))]
    cls = np.asarray(cat["truth_class"]).astype(str)[:n_galaxies]
    mass = np.asarray(cat["M_neb_med_lin"], dtype="f8")[:n_galaxies]
    inc = np.asarray(cat["inclination_deg"], dtype="f8")[:n_galaxies]
    free = np.ones(n_galaxies, dtype=bool)
    items = []
    for kind, count in zip(RARE_KINDS, per_kind):
        if count == 0:
            continue
        if kind == "lens":  # the most massive ellipticals (a lens needs a deep potential)
            cand = np.flatnonzero(free & (cls == "elliptical"))
            cand = cand[np.argsort(-mass[cand], kind="stable")][: max(count * 3, count)]
        elif kind == "ring":  # disks seen at most 65 degrees from face-on
            cand = np.flatnonzero(free & np.isin(cls, ["spiral", "irregular"]) & (np.nan_to_num(inc, nan=90.0) < 65))
        else:
            cand = np.flatnonzero(free & (cls != "merger"))
        if len(cand) == 0:
            continue
        rows = np.sort(rng.choice(cand, size=min(count, len(cand)), replace=False))
        free[rows] = False
        kinds[rows] = kind
        for row in rows:
            items.append(_params(kind, int(row), cat, rng))
    return {"kinds": kinds, "items": items}


def _params(kind: str, row: int, cat, rng: np.random.Generator) -> dict:
    p = {"kind": kind, "row": row, "x": float(cat["X_IMAGE"][row].value if hasattr(cat["X_IMAGE"][row], "value")
                                             else cat["X_IMAGE"][row]) - 1.0}
    y = cat["Y_IMAGE"][row]
    p["y"] = float(getattr(y, "value", y)) - 1.0  # 0-based pixels
    if kind == "lens":
        p.update(theta_e=rng.uniform(0.55, 1.1), beta_frac=rng.uniform(0.05, 0.45), beta_angle=rng.uniform(0, 2 * math.pi),
                 rs=rng.uniform(0.04, 0.09), q=rng.uniform(0.6, 1.0), pa=rng.uniform(0, math.pi),
                 mag=rng.uniform(24.0, 25.5))
    elif kind == "ring":
        hlr = cat["half_light_radius_arcsec"][row]
        hlr = float(getattr(hlr, "value", hlr))
        pa = cat["position_angle_deg"][row]
        inc = cat["inclination_deg"][row]
        hmag = cat["Hmag"][row]
        p.update(radius=float(np.clip(rng.uniform(1.6, 2.6) * hlr, 0.35, 1.3)), width=rng.uniform(0.1, 0.2),
                 pa=math.radians(float(getattr(pa, "value", pa))), cos_i=math.cos(math.radians(float(getattr(inc, "value", inc)))),
                 flux_ratio=rng.uniform(0.5, 1.0), hmag=float(getattr(hmag, "value", hmag)),
                 n_knots=int(rng.integers(4, 10)), knot_frac=rng.uniform(0.2, 0.5), phase=rng.uniform(0, 2 * math.pi),
                 knot_angles=rng.uniform(0, 2 * math.pi, 12))
    elif kind == "spikes":
        ang = rng.uniform(0, 2 * math.pi)
        sep = rng.uniform(0.9, 1.7)
        p.update(dx=sep * math.cos(ang), dy=sep * math.sin(ang), mag=rng.uniform(16.5, 18.5),
                 spike_angle=math.radians(45.0) + rng.normal(0, 0.02), spike_frac=rng.uniform(0.02, 0.04))
    elif kind == "trail":
        p.update(band=int(rng.integers(0, 3)), angle=rng.uniform(0, math.pi), offset=rng.uniform(-1.0, 1.0),
                 width=rng.uniform(0.05, 0.1), amp=rng.uniform(5.0, 25.0))
    elif kind == "cosmic":
        n_hits = int(rng.integers(3, 11))
        r = 1.6 * np.sqrt(rng.uniform(0, 1, n_hits))
        a = rng.uniform(0, 2 * math.pi, n_hits)
        p.update(band=int(rng.integers(0, 2)), hx=r * np.cos(a), hy=r * np.sin(a),
                 length=rng.choice([1, 2, 2, 4, 6, 9], n_hits), angle=rng.uniform(0, math.pi, n_hits),
                 amp=rng.uniform(15.0, 150.0, n_hits))
    elif kind == "edge":
        p.update(band=int(rng.integers(0, 3)), angle=rng.uniform(0, 2 * math.pi), dist=rng.uniform(0.3, 1.2),
                 noise_factor=4.0, step=2.0)
    return p


def _flux(mag: float, band: str) -> float:
    from .populations import ZERO_POINTS_AB

    return 10 ** (-0.4 * (mag - ZERO_POINTS_AB[band]))


def _grid(xc: float, yc: float, half_arcsec: float, scale: float, oversample: int = 3):
    """Pixel box around 0-based (xc, yc) and sub-pixel offsets (arcsec) from (xc, yc): (x0, y0, dx, dy)."""
    h = int(math.ceil(half_arcsec / scale))
    x0, y0 = int(round(xc)) - h, int(round(yc)) - h
    n = 2 * h + 1
    sub = (np.arange(n * oversample) + 0.5) / oversample - 0.5
    dx = (x0 + sub - xc) * scale
    dy = (y0 + sub - yc) * scale
    return x0, y0, np.meshgrid(dx, dy)


def _bin(img: np.ndarray, oversample: int) -> np.ndarray:
    n = img.shape[0] // oversample
    return img.reshape(n, oversample, n, oversample).mean(axis=(1, 3))


def _add(mosaic: np.ndarray, img: np.ndarray, x0: int, y0: int) -> tuple[slice, slice] | None:
    """Add ``img`` into ``mosaic`` with its lower-left pixel at 0-based (x0, y0), clipped; return the slices."""
    ny, nx = mosaic.shape
    h, w = img.shape
    tx0, ty0, tx1, ty1 = max(0, x0), max(0, y0), min(nx, x0 + w), min(ny, y0 + h)
    if tx1 <= tx0 or ty1 <= ty0:
        return None
    sl = (slice(ty0, ty1), slice(tx0, tx1))
    mosaic[sl] += img[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0].astype(mosaic.dtype)
    return sl


# Colours (AB mag offsets from F160W) of the added sky sources.
_BLUE_SOURCE = {"F435W": 0.25, "F850LP": 0.05, "F160W": 0.0}  # young star-forming galaxy (flat f_nu)
_RING = {"F435W": 0.35, "F850LP": 0.15, "F160W": 0.0}
_STAR = {"F435W": 1.6, "F850LP": 0.35, "F160W": 0.0}  # a K-type star


def _lens_image(p: dict, scale: float, os_: int = 3):
    """Surface brightness (per unit source central brightness) of the lensed source on an oversampled grid."""
    half = p["theta_e"] + 0.8
    x0, y0, (dx, dy) = _grid(p["x"], p["y"], half, scale, os_)
    r = np.hypot(dx, dy)
    r = np.maximum(r, 1e-6)
    bx = dx - p["theta_e"] * dx / r  # SIS deflection: beta = theta - theta_E theta/|theta|
    by = dy - p["theta_e"] * dy / r
    b = p["beta_frac"] * p["theta_e"]
    sx = bx - b * math.cos(p["beta_angle"])
    sy = by - b * math.sin(p["beta_angle"])
    c, s = math.cos(p["pa"]), math.sin(p["pa"])
    u, v = c * sx + s * sy, (-s * sx + c * sy) / p["q"]
    return x0, y0, np.exp(-np.hypot(u, v) / p["rs"])


def draw_rare_sources(truth: dict, rare: dict, bands, scale: float, kernels: dict) -> dict[str, np.ndarray]:
    """Noise-free sky signal of the rare kinds (lens arcs, rings, bright stars), one float32 mosaic per band.

    ``truth`` is the dict of :func:`galearn.mock.field.build_truth` (for the
    mosaic size); ``rare`` comes from :func:`assign_rare`; ``kernels`` maps each
    band to its pixelised PSF image (sum 1) on the mosaic grid. Pixels in electrons/s.
    """
    from scipy.signal import fftconvolve

    size = truth["size"]
    out = {b: np.zeros((size, size), "f4") for b in bands}
    os_ = 3
    for p in rare["items"]:
        if p["kind"] not in ("lens", "ring", "spikes"):
            continue
        if p["kind"] == "lens":
            x0, y0, sb = _lens_image(p, scale, os_)
            norm = 1.0 / (2 * math.pi * p["rs"] ** 2 * p["q"])  # unit unlensed flux
            img = _bin(sb, os_) * scale**2 * norm  # flux of a unit-flux source, magnified
            fluxes = {b: _flux(p["mag"] + _BLUE_SOURCE[b], b) for b in bands}
        elif p["kind"] == "ring":
            half = p["radius"] * 1.6 + 0.3
            x0, y0, (dx, dy) = _grid(p["x"], p["y"], half, scale, os_)
            c, s = math.cos(p["pa"]), math.sin(p["pa"])
            u, v = c * dx + s * dy, (-s * dx + c * dy) / max(p["cos_i"], 0.35)
            rr = np.hypot(u, v)
            ring = np.exp(-0.5 * ((rr - p["radius"]) / (p["width"] * p["radius"])) ** 2)
            phi = np.arctan2(v, u)
            knots = np.zeros_like(ring)
            for a in p["knot_angles"][: p["n_knots"]]:
                kx, ky = p["radius"] * math.cos(a), p["radius"] * math.sin(a)
                knots += np.exp(-0.5 * ((u - kx) ** 2 + (v - ky) ** 2) / (0.35 * p["width"] * p["radius"] + 0.02) ** 2)
            ring = ring * (1.0 + 0.3 * np.cos(phi - p["phase"])) / ring.sum()
            knots = knots / max(knots.sum(), 1e-30)
            img = _bin((1 - p["knot_frac"]) * ring + p["knot_frac"] * knots, os_) * os_**2
            fluxes = {b: _flux(p["hmag"] - 2.5 * math.log10(p["flux_ratio"]) + _RING[b], b) for b in bands}
        else:  # spikes: star + four diffraction spikes
            sx, sy = p["x"] + p["dx"] / scale, p["y"] + p["dy"] / scale
            x0, y0, (dx, dy) = _grid(sx, sy, 3.2, scale, os_)
            r = np.hypot(dx, dy)
            fluxes = {b: _flux(p["mag"] + _STAR[b], b) for b in bands}
        for band in bands:
            kernel = kernels[band]
            if p["kind"] == "spikes":
                lam = {"F435W": 0.6, "F850LP": 1.0, "F160W": 1.7}[band]  # spikes scale with wavelength
                width = 0.02 * lam
                spikes = np.zeros_like(r)
                for k in range(4):
                    a = p["spike_angle"] + k * math.pi / 2
                    along = dx * math.cos(a) + dy * math.sin(a)
                    across = -dx * math.sin(a) + dy * math.cos(a)
                    spikes += np.where(along > 0.05, np.exp(-0.5 * (across / width) ** 2)
                                       / np.maximum(along / (0.3 * lam), 1.0) ** 2, 0.0)
                spikes = _bin(spikes, os_)
                spikes *= p["spike_frac"] / max(spikes.sum(), 1e-30)
                core = np.zeros_like(spikes)
                c0 = core.shape[0] // 2
                # the star itself: a point at its sub-pixel position, split bilinearly
                fx, fy = sx - round(sx), sy - round(sy)
                for ddx, ddy, w in ((0, 0, (1 - abs(fx)) * (1 - abs(fy))), (np.sign(fx), 0, abs(fx) * (1 - abs(fy))),
                                    (0, np.sign(fy), (1 - abs(fx)) * abs(fy)), (np.sign(fx), np.sign(fy), abs(fx) * abs(fy))):
                    core[c0 + int(ddy), c0 + int(ddx)] += w
                unit = core * (1 - p["spike_frac"]) + spikes
            else:
                unit = img
            conv = fftconvolve(unit, kernel, mode="same")
            _add(out[band], np.clip(conv, 0, None) * fluxes[band], x0, y0)
    return out


def add_source_noise(signal: np.ndarray, coverage: np.ndarray, exposure_s: float, seed: int, band_index: int) -> np.ndarray:
    """Poisson noise of the rare sources' own photons (electrons/s), from the rare stream; 0 outside the footprint."""
    rng = _rng(seed, 1, band_index)
    out = signal.copy()
    src = signal > 0
    texp = exposure_s * np.maximum(coverage[src], 1)
    counts = signal[src].astype("f8") * texp
    out[src] += ((rng.poisson(counts) - counts) / texp).astype("f4")
    out[coverage == 0] = 0.0
    return out


def draw_rare_artefacts(sci: np.ndarray, weight: np.ndarray, band: str, band_index: int, rare: dict,
                        sky_sigma: float, scale: float, seed: int) -> None:
    """Add the detector artefacts (trails, cosmic rays, edges) of one band in place (after the noise).

    ``sky_sigma`` is the one-tile sky noise (electrons/s per pixel); pixels
    outside the footprint (``weight == 0``) stay 0.
    """
    inside = weight > 0
    for i, p in enumerate(rare["items"]):
        if p["kind"] not in ("trail", "cosmic", "edge") or p["band"] != band_index:
            continue
        rng = _rng(seed, 2, i)
        if p["kind"] == "trail":
            half = 3.0
            x0, y0, (dx, dy) = _grid(p["x"], p["y"], half, scale, 1)
            across = -dx * math.sin(p["angle"]) + dy * math.cos(p["angle"]) - p["offset"]
            img = p["amp"] * sky_sigma * np.exp(-0.5 * (across / p["width"]) ** 2)
            sl = _add(sci, img, x0, y0)
        elif p["kind"] == "cosmic":
            h = int(math.ceil(2.2 / scale))
            x0, y0 = int(round(p["x"])) - h, int(round(p["y"])) - h
            img = np.zeros((2 * h + 1, 2 * h + 1), "f4")
            for hx, hy, length, ang, amp in zip(p["hx"], p["hy"], p["length"], p["angle"], p["amp"]):
                t = np.arange(int(length))
                cx = np.round(p["x"] + hx / scale + t * math.cos(ang)).astype(int) - x0
                cy = np.round(p["y"] + hy / scale + t * math.sin(ang)).astype(int) - y0
                ok = (cx >= 0) & (cx < img.shape[1]) & (cy >= 0) & (cy < img.shape[0])
                img[cy[ok], cx[ok]] += amp * sky_sigma * rng.uniform(0.5, 1.0, ok.sum())
            sl = _add(sci, img, x0, y0)
        else:  # edge: beyond a line, one short exposure (more noise, a bias step) and less weight
            half = 2.6
            x0, y0, (dx, dy) = _grid(p["x"], p["y"], half, scale, 1)
            beyond = (dx * math.cos(p["angle"]) + dy * math.sin(p["angle"])) > p["dist"]
            extra = rng.standard_normal(beyond.shape) * p["noise_factor"] * sky_sigma + p["step"] * sky_sigma
            sl = _add(sci, np.where(beyond, extra, 0.0), x0, y0)
            if sl is not None:
                wsub = weight[sl]
                bsub = beyond[sl[0].start - y0:sl[0].stop - y0, sl[1].start - x0:sl[1].stop - x0]
                total_var = np.where(wsub > 0, 1.0 / np.maximum(wsub, 1e-30), 0.0) + (p["noise_factor"] * sky_sigma) ** 2
                wsub[bsub & (wsub > 0)] = (1.0 / total_var)[bsub & (wsub > 0)]
        if sl is not None:
            sci[sl][~inside[sl]] = 0.0


def apply_rare_to_band(sci: np.ndarray, weight: np.ndarray, band: str, rare: dict, *, truth: dict, bands,
                       scale: float, psf_kernel: np.ndarray, sky_sigma: float, exposure_s: float, seed: int,
                       noise: bool = True) -> None:
    """Add one band's rare signal (with its own Poisson noise) and detector artefacts to ``sci`` in place.

    Called by :func:`galearn.mock.field.simulate_field` after the ordinary
    noise, so nothing else in the field changes.
    """
    if not rare["items"]:
        return
    j = list(bands).index(band)
    signal = draw_rare_sources(truth, rare, [band], scale, {band: psf_kernel})[band]
    if noise:
        signal = add_source_noise(signal, truth["footprints"][band], exposure_s, seed, j)
    signal[truth["footprints"][band] == 0] = 0.0
    sci += signal
    if noise:
        draw_rare_artefacts(sci, weight, band, j, rare, sky_sigma, scale, seed)
