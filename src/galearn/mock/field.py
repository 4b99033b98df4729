"""Render the mock HST GOODS-South field with GalSim and write mosaics + catalogue.

:func:`simulate_field` is the entry point of ``galearn simulate``. The steps:

1. geometry: a 0.06"/pixel TAN WCS centred on (RA, Dec) = (53.12, -27.81) deg,
   an irregular survey footprint made of rotated, jittered HST tiles (ACS tiles
   for F435W/F850LP, smaller WFC3/IR tiles for F160W, some tiles missing),
   with depth rising where tiles overlap;
2. populations (:mod:`galearn.mock.populations`): galaxies, pairs and stars;
3. rendering: each source is drawn per band into its own postage stamp
   (``galsim.ImageF`` with bounds) with the band's fixed PSF
   (:mod:`galearn.mock.psf`) and added into the mosaic in source order. A body's
   components (bulge, disk, arms, tail, knots) each carry their own flux per
   band, the integral of their own redshifted SED through the band
   (:mod:`galearn.mock.seds`); because each component's SED is separable from
   its shape and the PSF is fixed per band, this is exactly what GalSim's
   chromatic ``drawImage`` computes, at a fraction of the cost;
4. noise: Gaussian sky at GOODS-S-like depth plus the sources' own Poisson
   noise, zero outside the footprint;
5. files: ``F435W.fits``, ``F850LP.fits``, ``F160W.fits`` (primary HDU: science
   image in electrons/s; HDU ``WHT``: inverse-variance weight, 0 outside the
   footprint) and ``catalog.fits``.

Randomness: population parameters come from ``numpy.random.default_rng`` seeded
with ``(seed, stream)``; each source's sub-structure (knots, arms, blobs) from
a generator seeded with ``(seed, source index)``; the noise of each band from
``(seed, band)``. The result does not depend on the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import SimulateConfig
from ..errors import BadValueError
from .populations import MORPH_OF_CLASS, ZERO_POINTS_AB, sample_population, sample_stars
from .psf import PSF_SPEC, band_psf, psf_fwhm_arcsec

__all__ = [
    "BANDS",
    "DEPTH_5SIGMA_AB",
    "EXPOSURE_S",
    "simulate_field",
    "make_wcs",
    "make_footprints",
    "field_size_pix",
    "render_source",
    "build_truth",
]

BANDS = ("F435W", "F850LP", "F160W")
#: 5-sigma point-source depth (AB) in a 0.2"-radius aperture where one tile covers the sky (GOODS-S-like).
DEPTH_5SIGMA_AB = {"F435W": 28.0, "F850LP": 27.3, "F160W": 27.3}
DEPTH_APERTURE_RADIUS_ARCSEC = 0.2
#: Exposure time (s) of one tile, for the sources' Poisson noise.
EXPOSURE_S = {"F435W": 7200.0, "F850LP": 18000.0, "F160W": 6000.0}
_FOOTPRINT_FILL = 0.72
#: Margin (arcsec) around a source's own extent in its stamp, for the PSF wings (>= 98 % of a star's flux).
STAMP_PAD_ARCSEC = {"F435W": 1.0, "F850LP": 1.5, "F160W": 2.0}  # expected fraction of the mosaic inside the F160W footprint


# ----------------------------------------------------------------------------- geometry


def field_size_pix(cfg: SimulateConfig) -> int:
    """Side (pixels) of the square mosaic: ``cfg.field_size_pix`` or sized from the source density."""
    if cfg.field_size_pix is not None:
        return int(cfg.field_size_pix)
    area_arcmin2 = cfg.n_galaxies / cfg.density_per_arcmin2 / _FOOTPRINT_FILL
    side = math.sqrt(area_arcmin2) * 60.0 / cfg.pixel_scale_arcsec
    return int(max(256, math.ceil(side / 16.0) * 16))


def make_wcs(cfg: SimulateConfig, size: int):
    """The TAN WCS (astropy) of the mosaics: north up, east left, ``cfg.pixel_scale_arcsec`` per pixel."""
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [cfg.ra_center_deg, cfg.dec_center_deg]
    wcs.wcs.crpix = [(size + 1) / 2.0, (size + 1) / 2.0]
    scale = cfg.pixel_scale_arcsec / 3600.0
    wcs.wcs.cd = np.array([[-scale, 0.0], [0.0, scale]])
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.equinox = 2000.0
    return wcs


def _tiles(rng: np.random.Generator, size: int, k: int, tile_frac: float, angle_deg: float,
           drop: int) -> list[tuple[float, float, float]]:
    """Centres (x, y, 0-based pixels) and half-side of a k x k rotated grid of tiles, some dropped."""
    half = 0.5 * tile_frac * size / k * 1.0
    step = 2 * half * 0.93  # tiles overlap a little
    theta = np.radians(angle_deg)
    c, s = np.cos(theta), np.sin(theta)
    out = []
    centre = (size - 1) / 2.0
    for i in range(k):
        for j in range(k):
            u = (i - (k - 1) / 2.0) * step + rng.normal(0, 0.04 * half)
            v = (j - (k - 1) / 2.0) * step + rng.normal(0, 0.04 * half)
            out.append((centre + c * u - s * v, centre + s * u + c * v, half))
    if drop and k > 2:
        corners = [0, k - 1, k * (k - 1), k * k - 1]
        for idx in sorted(rng.choice(corners, size=drop, replace=False), reverse=True):
            out.pop(idx)
    return out


def make_footprints(cfg: SimulateConfig, size: int) -> dict[str, np.ndarray]:
    """Coverage maps (number of tiles per pixel, uint8, shape (ny, nx)) per band; 0 = outside the survey."""
    rng = np.random.default_rng([cfg.random_state, 3])
    k = 3 if size >= 1500 else 2
    angle = rng.uniform(-25.0, 25.0)
    drop = int(rng.integers(1, 3)) if k > 2 else 0
    acs = _tiles(rng, size, k, 1.0, angle, drop)
    ir = _tiles(rng, size, k, 0.86, angle + rng.uniform(-4, 4), drop)
    yy, xx = np.mgrid[0:size, 0:size].astype("f4")
    theta = np.radians(angle)
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))

    def coverage(tiles):
        cov = np.zeros((size, size), "u1")
        for cx, cy, half in tiles:
            dx, dy = xx - np.float32(cx), yy - np.float32(cy)
            u = c * dx + s * dy
            v = -s * dx + c * dy
            cov += ((np.abs(u) < half) & (np.abs(v) < half)).astype("u1")
        return cov

    cov_acs, cov_ir = coverage(acs), coverage(ir)
    return {"F435W": cov_acs, "F850LP": cov_acs, "F160W": cov_ir}


def _positions_in(mask: np.ndarray, n: int, rng: np.random.Generator, margin: int) -> np.ndarray:
    """n uniform (x, y) positions (0-based pixels) inside ``mask``, at least ``margin`` pixels from the mosaic edge."""
    size = mask.shape[0]
    out = np.empty((0, 2))
    while len(out) < n:
        xy = rng.uniform(margin, size - 1 - margin, size=(4 * n + 16, 2))
        ok = mask[np.round(xy[:, 1]).astype(int), np.round(xy[:, 0]).astype(int)] > 0
        out = np.concatenate([out, xy[ok]])
    return out[:n]


# ----------------------------------------------------------------------------- galaxy shapes


def spiral_arm_image(scale_radius: float, n_arms: int, pitch_deg: float, phase: float, *,
                     sharpness: float = 4.0, extent: float = 6.0, npix: int = 97,
                     inner_cut: float = 0.7, one_sided: bool = False) -> tuple[np.ndarray, float]:
    """Face-on surface brightness of logarithmic spiral arms on an exponential disk.

    ``I(r, phi) = exp(-r / r_s) * [(1 + cos(m (phi - ln(r / r_s) / tan(pitch) - phase))) / 2]^sharpness
    * (1 - exp(-(r / (inner_cut r_s))^2))``.

    Parameters
    ----------
    scale_radius : float
        Disk scale radius r_s (arcsec).
    n_arms : int
        Number of arms m.
    pitch_deg : float
        Pitch angle (degrees).
    phase : float
        Rotation of the pattern (radians).
    sharpness : float
        Power that makes the arms narrow.
    extent : float
        Half-width of the image in units of r_s.
    npix : int
        Image side (pixels, odd).
    inner_cut : float
        Radius (units of r_s) inside which the arms fade (the bulge region).
    one_sided : bool
        Keep only one arm and let it extend further (a tidal tail).

    Returns
    -------
    image : ndarray (npix, npix)
        Normalised to a sum of 1.
    scale : float
        Pixel scale of the image (arcsec).
    """
    scale = 2.0 * extent * scale_radius / (npix - 1)
    ax = (np.arange(npix) - (npix - 1) / 2.0) * scale
    xx, yy = np.meshgrid(ax, ax)
    r = np.hypot(xx, yy) / scale_radius
    phi = np.arctan2(yy, xx)
    wind = np.log(np.maximum(r, 1e-3)) / np.tan(np.radians(pitch_deg))
    pattern = (0.5 * (1.0 + np.cos(n_arms * (phi - wind - phase)))) ** sharpness
    radial = np.exp(-r / (1.8 if one_sided else 1.0)) * (1.0 - np.exp(-(r / inner_cut) ** 2))
    img = pattern * radial
    if one_sided:
        img *= 0.5 * (1.0 + np.cos(phi - phase)) ** 2
    img = np.clip(img, 0.0, None)
    return img / img.sum(), scale


def _body_objects(body: dict, gsrng, nrng: np.random.Generator) -> list:
    """Unit-flux GalSim profiles of a body's components: [(component, weight within component, GSObject)].

    component 0 = bulge SED, 1 = disk SED, 2 = knots SED (see populations.COMPONENTS).
    """
    import galsim

    gsp = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=2e-3, maximum_fft_size=4096)
    out = []
    btype = int(body["body_type"])
    pa = galsim.Angle(float(body["position_angle_deg"]), galsim.degrees)
    inc = math.radians(float(body["inclination_deg"]))
    cos_i = max(math.cos(inc), float(body["h_over_r"]))
    bt = float(body["bulge_fraction"])
    re_b, re_d = float(body["re_bulge_arcsec"]), float(body["re_disk_arcsec"])
    scale_r = re_d / 1.6783469900166608  # exponential: hlr = 1.678 r_s

    if bt > 0:
        bulge = galsim.Sersic(n=float(body["sersic_n_bulge"]), half_light_radius=re_b, trunc=6.0 * re_b,
                              flux_untruncated=False, gsparams=gsp)
        bulge = bulge.shear(q=float(body["bulge_q"]), beta=pa)
        out.append((0, 1.0, bulge))

    if btype == 2:  # irregular: offset exponential blobs
        nb = int(body["n_blobs"])
        w = nrng.dirichlet(np.full(nb, 1.5))
        for i in range(nb):
            blob = galsim.Exponential(half_light_radius=re_d * nrng.uniform(0.3, 0.7), gsparams=gsp)
            blob = blob.shear(g=nrng.uniform(0.0, 0.4), beta=nrng.uniform(0, math.pi) * galsim.radians)
            blob = blob.shift(*(nrng.normal(0.0, 0.45 * re_d, 2)))
            out.append((1, float(w[i]), blob))
        smooth_profile = galsim.Add([o for c, _, o in out if c == 1])
        knot_profile = smooth_profile
    else:
        arm_frac = float(body["arm_fraction"])
        tail_frac = 0.12 if bool(body.get("tidal_tail", False)) else 0.0
        disk_w = 1.0 - arm_frac - tail_frac
        if btype == 0:
            disk = galsim.Exponential(scale_radius=scale_r, gsparams=gsp).shear(q=max(cos_i, 0.25), beta=pa)
        else:
            disk = galsim.InclinedExponential(
                inclination=inc * galsim.radians, scale_radius=scale_r,
                scale_h_over_r=float(body["h_over_r"]), gsparams=gsp).rotate(pa)
        out.append((1, disk_w, disk))
        knot_profile = galsim.Exponential(scale_radius=scale_r, gsparams=gsp)
        if arm_frac > 0:
            img, sc = spiral_arm_image(scale_r, int(body["n_arms"]), float(body["pitch_deg"]),
                                       nrng.uniform(0, 2 * math.pi), sharpness=nrng.uniform(3.0, 6.0))
            arms = galsim.InterpolatedImage(galsim.ImageF(img.astype("f4"), scale=sc), flux=1.0,
                                            gsparams=gsp, calculate_stepk=False, calculate_maxk=False)
            knot_profile = arms
            # transform() keeps surface brightness (flux x cos i): restore unit flux.
            out.append((1, arm_frac, arms.transform(1.0, 0.0, 0.0, cos_i).rotate(pa).withFlux(1.0)))
        if tail_frac > 0:
            img, sc = spiral_arm_image(2.5 * scale_r, 1, nrng.uniform(15.0, 35.0), nrng.uniform(0, 2 * math.pi),
                                       sharpness=2.0, extent=5.0, one_sided=True, inner_cut=1.2)
            tail = galsim.InterpolatedImage(galsim.ImageF(img.astype("f4"), scale=sc), flux=1.0, gsparams=gsp,
                                            calculate_stepk=False, calculate_maxk=False)
            out.append((1, tail_frac, tail.rotate(nrng.uniform(0, 2 * math.pi) * galsim.radians)))
    if float(body["knot_fraction"]) > 0 and int(body["n_knots"]) > 0:
        # Star-forming clumps: galsim.RandomKnots positions drawn from the disk / arm / blob profile.
        # They are point sources, drawn below as PSF copies (an FFT of tens of delta functions is slow).
        knots = galsim.RandomKnots(int(body["n_knots"]), profile=knot_profile, rng=gsrng, gsparams=gsp)
        xy = np.asarray(knots.points, dtype="f8")
        if btype != 2:
            xy[:, 1] *= cos_i
            c, s = math.cos(pa.rad), math.sin(pa.rad)
            xy = xy @ np.array([[c, s], [-s, c]])
        out.append((2, 1.0, xy))
    return out


@functools.lru_cache(maxsize=None)
def _psf_kernel(band: str, scale: float, radius_arcsec: float = 1.5) -> np.ndarray:
    """Pixel-integrated PSF image on the mosaic grid, centred, normalised to a sum of 1 (for point-like knots)."""
    half = int(math.ceil(radius_arcsec / scale))
    img = band_psf(band).drawImage(nx=2 * half + 1, ny=2 * half + 1, scale=scale).array.astype("f8")
    return img / img.sum()


def _splat(points_pix: np.ndarray, weights: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear deposit of point fluxes at (col, row) array positions onto a (ny, nx) grid."""
    out = np.zeros(shape)
    c0 = np.floor(points_pix[:, 0]).astype(int)
    r0 = np.floor(points_pix[:, 1]).astype(int)
    fc = points_pix[:, 0] - c0
    fr = points_pix[:, 1] - r0
    for dc, dr, w in ((0, 0, (1 - fc) * (1 - fr)), (1, 0, fc * (1 - fr)), (0, 1, (1 - fc) * fr), (1, 1, fc * fr)):
        cc, rr = c0 + dc, r0 + dr
        ok = (cc >= 0) & (cc < shape[1]) & (rr >= 0) & (rr < shape[0])
        np.add.at(out, (rr[ok], cc[ok]), (weights * w)[ok])
    return out


def _extent_arcsec(body: dict) -> float:
    """Radius (arcsec) that holds essentially all of a body's light."""
    ext = max(6.0 * float(body["re_bulge_arcsec"]) if float(body["bulge_fraction"]) > 0 else 0.0,
              5.0 * float(body["re_disk_arcsec"]))
    if bool(body.get("tidal_tail", False)):
        ext = max(ext, 5.0 * 2.5 * float(body["re_disk_arcsec"]) / 1.678)
    return ext + float(np.hypot(*body["offset_arcsec"]))


def render_source(task: dict) -> dict:
    """Draw one source in every band into postage stamps (noise-free).

    Parameters
    ----------
    task : dict
        ``x``, ``y`` (1-based FITS pixel position of the source), ``kind``
        (``"galaxy"`` or ``"star"``), ``flux`` (per band, electrons/s, stars),
        ``bodies`` (list of body dicts, galaxies), ``seed``, ``index``,
        ``pixel_scale``, ``iso_threshold`` (F160W, electrons/s per pixel).

    Returns
    -------
    dict
        ``stamps``: {band: (xmin, ymin, array (ny, nx) float32)} with 1-based
        lower-left pixel of the stamp; ``isoarea``: pixels above the F160W
        isophote in the noise-free stamp.
    """
    import galsim

    scale = task["pixel_scale"]
    seq = np.random.SeedSequence([task["seed"], 1000 + task["index"]])
    nrng = np.random.default_rng(seq)
    gsrng = galsim.BaseDeviate(int(seq.generate_state(1)[0]) + 1)
    if task["kind"] == "star":
        comps = None
        extent = 0.4 * max(0.0, 22.0 - task["hmag"])
    else:
        comps = []
        extent = 0.0
        for body in task["bodies"]:
            objs = _body_objects(body, gsrng, nrng)
            dx, dy = body["offset_arcsec"]
            comps.append((body, [(c, w, o + np.array([dx, dy]) if c == 2 else o.shift(dx, dy)) for c, w, o in objs]))
            extent = max(extent, _extent_arcsec(body))
    x, y = task["x"], task["y"]
    ix, iy = int(round(x)), int(round(y))
    centre = galsim.PositionD(x - ix, y - iy)
    out = {}
    for j, band in enumerate(BANDS):
        # Each band's stamp holds the galaxy plus the PSF's wings (STAMP_PAD_ARCSEC, >= 98 % of a point source).
        half = int(min(max(math.ceil((extent + STAMP_PAD_ARCSEC[band]) / scale), 16), 500))
        # Stamps are drawn with bounds centred on 0: GalSim sizes its FFT from the absolute bounds.
        local = galsim.BoundsI(-half, half, -half, half)
        x0, y0 = ix - half, iy - half  # 1-based mosaic pixel of the stamp's lower-left corner
        psf = band_psf(band)
        stamp = galsim.ImageF(local, scale=scale)
        if comps is None:
            psf.withFlux(float(task["flux"][j])).drawImage(image=stamp, center=centre)
            out[band] = (x0, y0, stamp.array.astype("f4", copy=False))
            continue
        parts, pts, wts = [], [], []
        for body, objs in comps:
            flux = body["flux"][:, j]
            for c, w, o in objs:
                if c == 2:
                    pts.append(o)
                    wts.append(np.full(len(o), flux[c] / len(o)))
                elif flux[c] * w > 0:
                    parts.append(o * float(flux[c] * w))
        if parts:
            galsim.Convolve(galsim.Add(parts), psf).drawImage(image=stamp, center=centre)
        arr = stamp.array.astype("f8")
        if pts:
            from scipy.signal import fftconvolve

            p = np.concatenate(pts) / scale + np.array([x - x0, y - y0])
            grid = _splat(p, np.concatenate(wts), arr.shape)
            arr += fftconvolve(grid, _psf_kernel(band, scale, STAMP_PAD_ARCSEC[band]), mode="same")
        out[band] = (x0, y0, arr.astype("f4"))
    # Catalogue position = F160W light centroid of the noise-free source (what a detection code measures).
    x0, y0, arr = out["F160W"]
    w = np.clip(arr.astype("f8"), 0.0, None)
    tot = w.sum()
    if tot > 0:
        cx = x0 + float((w.sum(axis=0) * np.arange(w.shape[1])).sum() / tot)
        cy = y0 + float((w.sum(axis=1) * np.arange(w.shape[0])).sum() / tot)
    else:
        cx, cy = x, y
    iso = int(np.count_nonzero(out["F160W"][2] > task["iso_threshold"]))
    return {"stamps": out, "isoarea": iso, "centroid": (cx, cy)}


# ----------------------------------------------------------------------------- truth + catalogue


def _sky_sigma(band: str, scale: float) -> float:
    """Per-pixel sky sigma (electrons/s) at one-tile depth."""
    f_lim = 10 ** (-0.4 * (DEPTH_5SIGMA_AB[band] - ZERO_POINTS_AB[band]))
    n_pix = math.pi * (DEPTH_APERTURE_RADIUS_ARCSEC / scale) ** 2
    return f_lim / (5.0 * math.sqrt(n_pix))


def build_truth(cfg: SimulateConfig) -> dict:
    """Draw the population and the geometry (no rendering): positions, catalogue columns, render tasks.

    Returns a dict with ``size`` (pixels), ``wcs``, ``footprints``, ``catalog``
    (astropy Table) and ``tasks`` (one per catalogue row, for
    :func:`render_source`).
    """
    from astropy import units as u
    from astropy.table import Table

    _validate(cfg)
    size = field_size_pix(cfg)
    wcs = make_wcs(cfg, size)
    footprints = make_footprints(cfg, size)
    n_stars = cfg.n_stars if cfg.n_stars is not None else max(2, int(round(0.03 * cfg.n_galaxies)))
    pop = sample_population(cfg.n_galaxies, cfg.random_state, mag_limit=cfg.mag_limit,
                            merger_fraction=cfg.merger_fraction)
    stars = sample_stars(n_stars, cfg.random_state)
    src, bodies = pop["sources"], pop["bodies"]
    n_gal = cfg.n_galaxies
    n = n_gal + n_stars
    rng = np.random.default_rng([cfg.random_state, 5])
    xy0 = _positions_in(footprints["F160W"], n, rng, margin=16)  # 0-based
    x, y = xy0[:, 0] + 1.0, xy0[:, 1] + 1.0  # 1-based FITS pixels
    ra, dec = wcs.all_pix2world(x, y, 1)

    flux = np.concatenate([src["flux"], stars["flux"]])
    mags = {b: ZERO_POINTS_AB[b] - 2.5 * np.log10(flux[:, j]) for j, b in enumerate(BANDS)}
    is_star = np.arange(n) >= n_gal
    nan_g = np.full(n_stars, np.nan)
    cls = np.concatenate([src["truth_class"], np.full(n_stars, "star")]).astype("U10")
    class_star = np.clip(np.where(is_star, 0.98, 0.02) + rng.normal(0, 0.01, n), 0.0, 1.0)

    def gal(col, fill=np.nan):
        return np.concatenate([np.asarray(src[col], dtype="f8"), np.full(n_stars, fill)])

    cat = Table()
    cat["ID"] = np.arange(1, n + 1, dtype="i8")
    cat["RA_1"] = ra * u.deg
    cat["DEC_1"] = dec * u.deg
    cat["X_IMAGE"] = x * u.pix
    cat["Y_IMAGE"] = y * u.pix
    cat["zbest"] = np.concatenate([src["z"], np.zeros(n_stars)])
    cat["CLASS_STAR"] = class_star
    cat["Hmag"] = mags["F160W"] * u.mag
    cat["ISOAREA_IMAGE_F160W"] = np.zeros(n) * u.pix**2  # filled after rendering
    cat["M_neb_med_lin"] = gal("mass") * u.Msun
    cat["SFR_13a_tau"] = gal("sfr") * u.Msun / u.yr
    cat["restUXbessel"] = np.concatenate([src["abs_u"], nan_g]) * u.mag
    cat["restVbessel"] = np.concatenate([src["abs_v"], nan_g]) * u.mag
    cat["restJpalomar"] = np.concatenate([src["abs_j"], nan_g]) * u.mag
    for b in BANDS:
        cat[f"mag_{b}"] = mags[b] * u.mag
    cat["truth_class"] = cls
    cat["truth_morph"] = np.array([MORPH_OF_CLASS[c] for c in cls], dtype="U10")
    cat["truth_activity"] = np.concatenate([src["truth_activity"], np.full(n_stars, "")]).astype("U12")
    cat["bulge_fraction"] = gal("bulge_fraction")
    cat["half_light_radius_arcsec"] = gal("half_light_radius_arcsec", 0.0) * u.arcsec
    cat["sersic_index"] = gal("sersic_index")
    cat["inclination_deg"] = gal("inclination_deg") * u.deg
    cat["position_angle_deg"] = gal("position_angle_deg") * u.deg
    cat["av_disk"] = gal("av_disk") * u.mag
    cat["has_arms"] = np.concatenate([src["has_arms"], np.zeros(n_stars, bool)])
    cat["n_knots"] = np.concatenate([src["n_knots"], np.zeros(n_stars, int)]).astype("i4")
    cat["pair_separation_arcsec"] = gal("pair_separation_arcsec", 0.0) * u.arcsec
    cat["star_temperature_K"] = np.concatenate([np.full(n_gal, np.nan), stars["temperature_k"]]) * u.K

    iso_threshold = 1.5 * _sky_sigma("F160W", cfg.pixel_scale_arcsec)
    body_keys = [k for k in bodies if k not in ("source",)]
    per_source: list[list[dict]] = [[] for _ in range(n_gal)]
    for i, s in enumerate(bodies["source"]):
        per_source[s].append({k: bodies[k][i] for k in body_keys})
    tasks = []
    for i in range(n):
        task = dict(x=float(x[i]), y=float(y[i]), seed=int(cfg.random_state), index=i,
                    pixel_scale=cfg.pixel_scale_arcsec, iso_threshold=iso_threshold)
        if i < n_gal:
            task.update(kind="galaxy", bodies=per_source[i])
        else:
            task.update(kind="star", flux=flux[i], hmag=float(mags["F160W"][i]))
        tasks.append(task)
    return dict(size=size, wcs=wcs, footprints=footprints, catalog=cat, tasks=tasks)


def _set_positions(cat, wcs, centroid: np.ndarray) -> None:
    """Catalogue X_IMAGE, Y_IMAGE (1-based pixels) and RA_1, DEC_1 (deg) from measured centroids."""
    ra, dec = wcs.all_pix2world(centroid[:, 0], centroid[:, 1], 1)
    cat["X_IMAGE"] = centroid[:, 0] * cat["X_IMAGE"].unit
    cat["Y_IMAGE"] = centroid[:, 1] * cat["Y_IMAGE"].unit
    cat["RA_1"] = ra * cat["RA_1"].unit
    cat["DEC_1"] = dec * cat["DEC_1"].unit


def _validate(cfg: SimulateConfig) -> None:
    if not isinstance(cfg.n_galaxies, int) or not 1 <= cfg.n_galaxies <= 20000:
        raise BadValueError(f"--n-galaxies must be an integer from 1 to 20000, got {cfg.n_galaxies!r}")
    if cfg.n_stars is not None and not 0 <= cfg.n_stars <= 5000:
        raise BadValueError(f"simulate.n_stars must be 0 .. 5000, got {cfg.n_stars!r}")
    if not 0.01 <= cfg.pixel_scale_arcsec <= 0.2:
        raise BadValueError(f"simulate.pixel_scale_arcsec must be 0.01 .. 0.2, got {cfg.pixel_scale_arcsec!r}")
    if cfg.field_size_pix is not None and not 128 <= cfg.field_size_pix <= 40000:
        raise BadValueError(f"simulate.field_size_pix must be 128 .. 40000, got {cfg.field_size_pix!r}")
    if not 1.0 <= cfg.density_per_arcmin2 <= 1000.0:
        raise BadValueError(f"simulate.density_per_arcmin2 must be 1 .. 1000, got {cfg.density_per_arcmin2!r}")
    if not 18.0 <= cfg.mag_limit <= 28.0:
        raise BadValueError(f"simulate.mag_limit must be 18 .. 28 (F160W AB), got {cfg.mag_limit!r}")
    if not 0.0 <= cfg.rare_fraction <= 0.2:
        raise BadValueError(f"simulate.rare_fraction must be 0 .. 0.2, got {cfg.rare_fraction!r}")
    if not 0.0 <= cfg.merger_fraction <= 0.5:
        raise BadValueError(f"simulate.merger_fraction must be 0 .. 0.5, got {cfg.merger_fraction!r}")
    if not -90.0 <= cfg.dec_center_deg <= 90.0:
        raise BadValueError(f"simulate.dec_center_deg must be -90 .. 90, got {cfg.dec_center_deg!r}")


# ----------------------------------------------------------------------------- rendering + files


def _n_workers(n_jobs: int | None, n_tasks: int) -> int:
    cpus = os.cpu_count() or 1
    if n_jobs is None or n_jobs == 0:
        n_jobs = 1
    if n_jobs < 0:
        n_jobs = max(1, cpus + 1 + n_jobs)
    return max(1, min(n_jobs, cpus, max(1, n_tasks // 20)))


def render_mosaics(truth: dict, cfg: SimulateConfig, *,
                   progress: bool | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Noise-free mosaics {band: float32 (ny, nx)} in electrons/s, isophotal area (pixels) and F160W centroid
    ((x, y), 1-based pixels) per source."""
    from tqdm.auto import tqdm

    size = truth["size"]
    mosaics = {b: np.zeros((size, size), "f4") for b in BANDS}
    tasks = truth["tasks"]
    iso = np.zeros(len(tasks), "i8")
    centroid = np.zeros((len(tasks), 2))
    workers = _n_workers(cfg.n_jobs, len(tasks))
    bar = tqdm(total=len(tasks), desc="simulate: rendering", unit="src", disable=None if progress is None else not progress)

    def add(i: int, res: dict) -> None:
        iso[i] = res["isoarea"]
        centroid[i] = res["centroid"]
        for band, (x0, y0, arr) in res["stamps"].items():
            ny, nx = arr.shape
            xa, ya = x0 - 1, y0 - 1  # 0-based
            sx0, sy0 = max(0, -xa), max(0, -ya)
            tx0, ty0 = max(0, xa), max(0, ya)
            tx1, ty1 = min(size, xa + nx), min(size, ya + ny)
            if tx1 <= tx0 or ty1 <= ty0:
                continue
            mosaics[band][ty0:ty1, tx0:tx1] += arr[sy0:sy0 + ty1 - ty0, sx0:sx0 + tx1 - tx0]
        bar.update(1)

    try:
        if workers == 1:
            for i, task in enumerate(tasks):
                add(i, render_source(task))
        else:
            import multiprocessing as mp

            # "spawn": forking a process whose thread pools (FFT, OpenMP) hold locks can deadlock.
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers) as pool:
                # imap keeps the order, so the sum into the mosaic is the same for any number of workers.
                for i, res in enumerate(pool.imap(render_source, tasks, chunksize=4)):
                    add(i, res)
    finally:
        bar.close()
    return mosaics, iso, centroid


def _add_noise(image: np.ndarray, coverage: np.ndarray, band: str, cfg: SimulateConfig) -> tuple[np.ndarray, np.ndarray]:
    """Noisy science image and inverse-variance weight of one band (0 outside the footprint)."""
    rng = np.random.default_rng([cfg.random_state, 17, BANDS.index(band)])
    inside = coverage > 0
    cov = np.maximum(coverage, 1).astype("f4")
    sigma = (_sky_sigma(band, cfg.pixel_scale_arcsec) / np.sqrt(cov)).astype("f4")
    out = image.copy()
    if cfg.noise:
        out += rng.standard_normal(image.shape, dtype="f4") * sigma
        src = image > 0
        texp = EXPOSURE_S[band] * cov[src]
        counts = image[src].astype("f8") * texp
        out[src] += ((rng.poisson(counts) - counts) / texp).astype("f4")
    out[~inside] = 0.0
    weight = np.where(inside, 1.0 / sigma**2, 0.0).astype("f4")
    return out, weight


def _header_params(cfg: SimulateConfig) -> dict:
    return {f"HIERARCH GALEARN {k.upper()}": (v if v is not None else "auto") for k, v in dataclasses.asdict(cfg).items()}


def _write_mosaic(path: Path, sci: np.ndarray, weight: np.ndarray, band: str, cfg: SimulateConfig, wcs,
                  truth_meta: dict) -> None:
    from astropy.io import fits

    from ..store import atomic_path

    hdr = wcs.to_header()
    hdr["BUNIT"] = ("ELECTRONS/S", "surface brightness unit of the science image")
    hdr["TELESCOP"] = "HST (mock)"
    hdr["INSTRUME"] = "WFC3/IR" if band == "F160W" else "ACS/WFC"
    hdr["FILTER"] = band
    hdr["PHOTZP"] = (ZERO_POINTS_AB[band], "AB mag of 1 electron/s")
    hdr["MAGZERO"] = (ZERO_POINTS_AB[band], "AB mag of 1 electron/s")
    hdr["EXPTIME"] = (EXPOSURE_S[band], "s, per tile (deeper where tiles overlap)")
    hdr["PSF_FWHM"] = (round(psf_fwhm_arcsec(band, cfg.pixel_scale_arcsec), 4), "arcsec, PSF on this grid")
    lam, pix, jit = PSF_SPEC[band]
    hdr["PSF_MODL"] = (f"Airy({lam:g}nm,D=2.4m,obs=0.33)*Box({pix:g}\")*Gauss({jit:g}\")", "GalSim PSF")
    hdr["DEPTH5S"] = (DEPTH_5SIGMA_AB[band], "AB, 5 sigma, r=0.2\" aperture, one tile")
    hdr["SKYSIG"] = (_sky_sigma(band, cfg.pixel_scale_arcsec), "electrons/s per pixel, one tile")
    hdr["NOISE"] = (bool(cfg.noise), "sky + source Poisson noise added")
    hdr["SEED"] = (int(cfg.random_state), "galearn simulate random seed")
    hdr["NGAL"] = cfg.n_galaxies
    for k, v in _header_params(cfg).items():
        hdr[k] = v
    hdr["GALEARN"] = (__version__, "galearn version")
    hdr["COMMENT"] = "galearn mock GOODS-S field (GalSim). Primary: science; HDU WHT: inverse variance."
    hdr["COMMENT"] = "Truth parameters: " + json.dumps(truth_meta, sort_keys=True)
    primary = fits.PrimaryHDU(sci, header=hdr)
    whdr = wcs.to_header()
    whdr["BUNIT"] = ("(ELECTRONS/S)**-2", "inverse variance of the sky noise")
    # The weight takes a few values (tile overlaps): 16-bit integers with BSCALE keep the file small
    # (relative precision ~3e-5) and, unlike gzip tile compression, the bytes carry no time stamp.
    wht = fits.ImageHDU(weight, header=whdr, name="WHT")
    wmax = float(weight.max()) if weight.size and weight.max() > 0 else 1.0
    wht.scale("int16", bscale=wmax / 30000.0, bzero=0.0)
    with atomic_path(path, suffix=".fits") as tmp:
        fits.HDUList([primary, wht]).writeto(tmp, overwrite=True)


def simulate_field(out_dir: Path, cfg: SimulateConfig, *, progress: bool | None = None) -> dict[str, Path]:
    """Simulate the mock HST GOODS-South field and write it to ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Folder for ``F435W.fits``, ``F850LP.fits``, ``F160W.fits`` and ``catalog.fits``.
    cfg : SimulateConfig
        Number of galaxies, seed, geometry, depth switches; see :class:`galearn.config.SimulateConfig`.
    progress : bool or None
        Show a tqdm progress bar (None: only on a terminal).

    Returns
    -------
    dict[str, Path]
        Keys ``F435W``, ``F850LP``, ``F160W``, ``catalog``.

    Raises
    ------
    BadValueError
        A configuration value is out of range.
    """
    from astropy.io import fits

    from ..store import atomic_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = build_truth(cfg)
    mosaics, iso, centroid = render_mosaics(truth, cfg, progress=progress)
    cat = truth["catalog"]
    cat["ISOAREA_IMAGE_F160W"] = iso.astype("f8") * cat["ISOAREA_IMAGE_F160W"].unit
    _set_positions(cat, truth["wcs"], centroid)
    from .rare import apply_rare_to_band, assign_rare  # rare kinds: own random streams, added after the noise

    rare = assign_rare(cat, cfg.n_galaxies, cfg.rare_fraction, cfg.random_state)
    cat["truth_rare"] = rare["kinds"]
    meta = {
        "seed": int(cfg.random_state),
        "config": dataclasses.asdict(cfg),
        "size_pix": int(truth["size"]),
        "zero_points_ab": ZERO_POINTS_AB,
        "psf_fwhm_arcsec": {b: psf_fwhm_arcsec(b, cfg.pixel_scale_arcsec) for b in BANDS},
        "depth_5sigma_ab_r0.2arcsec": DEPTH_5SIGMA_AB,
        "exposure_s": EXPOSURE_S,
        "galearn_version": __version__,
    }
    paths: dict[str, Path] = {}
    for band in BANDS:
        sci, wht = _add_noise(mosaics[band], truth["footprints"][band], band, cfg)
        apply_rare_to_band(sci, wht, band, rare, truth=truth, bands=BANDS, scale=cfg.pixel_scale_arcsec,
                           psf_kernel=_psf_kernel(band, cfg.pixel_scale_arcsec, STAMP_PAD_ARCSEC[band]),
                           sky_sigma=_sky_sigma(band, cfg.pixel_scale_arcsec), exposure_s=EXPOSURE_S[band],
                           seed=cfg.random_state, noise=cfg.noise)
        paths[band] = out_dir / f"{band}.fits"
        _write_mosaic(paths[band], sci, wht, band, cfg, truth["wcs"], {"seed": cfg.random_state})
        del sci, wht
    cat.meta["GALEARN"] = __version__
    cat.meta["SEED"] = int(cfg.random_state)
    cat.meta["SIMCFG"] = json.dumps(meta, sort_keys=True)
    cat.meta["COMMENT"] = [
        "galearn mock GOODS-S catalogue; magnitudes AB; rest-frame U,V,J absolute AB mags "
        "(Bessell U, Bessell V, 2MASS J from speclite); X_IMAGE/Y_IMAGE 1-based pixels.",
        "truth_morph: elliptical -> early-type; spiral, edge-on, irregular -> disk; merger, star -> ''.",
    ]
    paths["catalog"] = out_dir / "catalog.fits"
    with atomic_path(paths["catalog"], suffix=".fits") as tmp:
        hdul = fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(cat)])
        for k, v in _header_params(cfg).items():
            hdul[1].header[k] = v
        hdul.writeto(tmp, overwrite=True)
    return paths
