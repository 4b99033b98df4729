"""The galaxy and star populations of the mock field (vectorised, no rendering).

A catalogue *source* is one row of the mock catalogue: a galaxy, a close pair /
merger (two *bodies* sharing one row) or a star. A *body* is one galaxy with
four light components, each with its own SED:

============  ===========================  ==================================
component     profile (see ``field.py``)   SED
============  ===========================  ==================================
bulge         Sersic n ~ 3-5 (truncated)   CWW E, A_V 0-0.2
disk          inclined exponential,        CWW Sbc / Scd / Im (star-forming,
              spiral arms, tidal tail      Calzetti dust A_V) or E (S0 disk)
knots         ``galsim.RandomKnots``       CWW Im, half the disk's A_V
============  ===========================  ==================================

Published relations used (all in :func:`sample_population`):

* redshifts 0.1-2 weighted by comoving volume (flat LCDM, H0 = 70, Om = 0.3),
  stellar masses from a Schechter function (alpha = -1.35, log M* = 10.85;
  cf. Tomczak et al. 2014, ApJ 783, 85), then a magnitude limit in F160W;
* quiescent fraction versus mass and redshift (cf. Muzzin et al. 2013, ApJ 777, 18);
* star-forming main sequence of Speagle et al. (2014, ApJS 214, 15), 0.25 dex
  scatter; quiescent galaxies at sSFR ~ 10^-12 / yr;
* dust A_V rising with stellar mass (cf. Garn & Best 2010, MNRAS 409, 421);
* half-light radius versus mass and redshift for early- and late-type
  galaxies, van der Wel et al. (2014, ApJ 788, 28, Table 1), with their
  intrinsic scatter; their early-type fit holds above 2e10 Msun, below which
  the relation flattens (their Sect. 5; cf. Mowla et al. 2019, ApJ 872, L13),
  so there the early-type slope is 0.15;
* clumpy (knot) light fractions rising with redshift (cf. Shibuya et al.
  2016, ApJ 821, 72; Guo et al. 2015, ApJ 800, 39);
* mass-to-light ratio from rest-frame B-V colour, Bell et al. (2003, ApJS
  149, 289, Table 7, V band), shifted by -0.1 dex to a Chabrier IMF;
* close-pair / merger fraction ~6 % (cf. Lotz et al. 2011, ApJ 742, 103).
"""

from __future__ import annotations

import functools

import numpy as np
from astropy.cosmology import FlatLambdaCDM

from .seds import HST_BANDS, TEMPLATE_NAMES, photometry_grid

__all__ = [
    "COSMOLOGY",
    "TRUTH_CLASSES",
    "MORPH_OF_CLASS",
    "ZERO_POINTS_AB",
    "sample_population",
    "sample_stars",
    "van_der_wel_radius_kpc",
]

COSMOLOGY = FlatLambdaCDM(H0=70.0, Om0=0.3)

#: AB zero points of the mosaics (electrons/s), those of the real instruments.
ZERO_POINTS_AB = {"F435W": 25.68, "F850LP": 24.87, "F160W": 25.95}

TRUTH_CLASSES = ("elliptical", "spiral", "edge-on", "irregular", "merger", "star")
#: Binary morphology of each truth class ("" = not part of the early-type / disk split).
MORPH_OF_CLASS = {
    "elliptical": "early-type",
    "spiral": "disk",
    "edge-on": "disk",
    "irregular": "disk",
    "merger": "",
    "star": "",
}

BODY_TYPES = ("early", "disk", "irregular")
COMPONENTS = ("bulge", "disk", "knots")
_E, _SBC, _SCD, _IM = (TEMPLATE_NAMES.index(n) for n in ("E", "Sbc", "Scd", "Im"))
_MV_SUN_AB = 4.81  # absolute AB magnitude of the Sun in V (Willmer 2018)
EDGE_ON_INCLINATION_DEG = 75.0

# van der Wel et al. (2014) Table 1: z, log10 A (kpc), alpha, sigma(log R) at M = 5e10 Msun.
_VDW_Z = np.array([0.25, 0.75, 1.25, 1.75, 2.25])
_VDW_EARLY = np.array([[0.60, 0.75, 0.10], [0.42, 0.71, 0.11], [0.22, 0.76, 0.12],
                       [0.09, 0.76, 0.14], [-0.05, 0.76, 0.14]])
_VDW_LATE = np.array([[0.86, 0.25, 0.16], [0.78, 0.22, 0.16], [0.70, 0.22, 0.17],
                      [0.65, 0.23, 0.18], [0.55, 0.22, 0.19]])
# The early-type fits hold above 2e10 Msun; below it the relation flattens.
_EARLY_PIVOT_LOG_MASS = np.log10(2e10)
_EARLY_LOW_MASS_SLOPE = 0.15


def van_der_wel_radius_kpc(log_mass: np.ndarray, z: np.ndarray, early: np.ndarray,
                           rng: np.random.Generator | None = None) -> np.ndarray:
    """Semi-major-axis half-light radius (kpc), van der Wel et al. (2014): R = A (M / 5e10)^alpha.

    Parameters are interpolated linearly in redshift between the paper's bins;
    with ``rng`` the intrinsic log-normal scatter is added. Early types below
    2e10 Msun, where the paper's fit does not reach, follow a flatter slope
    (0.15) from the fit's value at 2e10 Msun instead of its steep extrapolation
    (which made 1e9 Msun ellipticals ~0.2 kpc, unresolved by HST).
    """
    log_mass, z, early = np.broadcast_arrays(np.asarray(log_mass, "f8"), np.asarray(z, "f8"), np.asarray(early, bool))
    out = np.empty(log_mass.shape)
    for table, sel in ((_VDW_EARLY, early), (_VDW_LATE, ~early)):
        log_a = np.interp(z[sel], _VDW_Z, table[:, 0])
        alpha = np.interp(z[sel], _VDW_Z, table[:, 1])
        sigma = np.interp(z[sel], _VDW_Z, table[:, 2])
        log_r = log_a + alpha * (log_mass[sel] - np.log10(5e10))
        if table is _VDW_EARLY:
            below = log_mass[sel] - _EARLY_PIVOT_LOG_MASS
            log_r = log_r + np.where(below < 0, (_EARLY_LOW_MASS_SLOPE - alpha) * below, 0.0)
        if rng is not None:
            log_r = log_r + rng.normal(0.0, 1.0, sel.sum()) * sigma
        out[sel] = 10.0**log_r
    return out


@functools.lru_cache(maxsize=1)
def _cosmology_table() -> dict:
    """Distance modulus, age (Gyr), kpc per arcsec and dV/dz on a fine redshift grid (interpolated later)."""
    z = np.linspace(0.0, 3.0, 601)
    z[0] = 1e-4
    return dict(
        z=z,
        distmod=COSMOLOGY.distmod(z).value,
        age=COSMOLOGY.age(z).value,
        kpc_per_arcsec=COSMOLOGY.kpc_proper_per_arcmin(z).value / 60.0,
        dvdz=COSMOLOGY.differential_comoving_volume(z).value,
    )


def _cosmo(name: str, z: np.ndarray) -> np.ndarray:
    tab = _cosmology_table()
    return np.interp(z, tab["z"], tab[name])


def _volume_weighted_z(rng: np.random.Generator, n: int, z_min: float, z_max: float) -> np.ndarray:
    grid = np.linspace(z_min, z_max, 512)
    dvdz = _cosmo("dvdz", grid)
    cdf = np.cumsum(dvdz)
    cdf = (cdf - cdf[0]) / (cdf[-1] - cdf[0])
    return np.interp(rng.uniform(0, 1, n), cdf, grid)


def _schechter_log_mass(rng: np.random.Generator, n: int, lo: float, hi: float,
                        alpha: float = -1.35, log_mstar: float = 10.85) -> np.ndarray:
    grid = np.linspace(lo, hi, 1024)
    x = 10.0 ** (grid - log_mstar)
    pdf = x ** (alpha + 1) * np.exp(-x)
    cdf = np.cumsum(pdf)
    cdf = (cdf - cdf[0]) / (cdf[-1] - cdf[0])
    return np.interp(rng.uniform(0, 1, n), cdf, grid)


def _speagle_log_sfr(log_mass: np.ndarray, z: np.ndarray) -> np.ndarray:
    t = _cosmo("age", z)  # Gyr
    return (0.84 - 0.026 * t) * log_mass - (6.51 - 0.11 * t)


def _sersic_b(n: np.ndarray) -> np.ndarray:
    from scipy.special import gammaincinv

    return gammaincinv(2.0 * n, 0.5)


def composite_half_light_radius(bt: np.ndarray, n_bulge: np.ndarray, re_bulge: np.ndarray,
                                re_disk: np.ndarray) -> np.ndarray:
    """Half-light radius of bulge (Sersic n) + exponential disk, solved by bisection (same units as inputs)."""
    from scipy.special import gammainc

    b_b, b_d = _sersic_b(n_bulge), _sersic_b(np.ones_like(n_bulge))

    def enclosed(r):
        fb = gammainc(2 * n_bulge, b_b * (r / re_bulge) ** (1.0 / n_bulge))
        fd = gammainc(2.0, b_d * (r / re_disk))
        return bt * fb + (1 - bt) * fd

    lo = np.zeros_like(re_disk)
    hi = 20.0 * np.maximum(re_bulge, re_disk)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        below = enclosed(mid) < 0.5
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _bodies(rng: np.random.Generator, n: int, z: np.ndarray, log_mass: np.ndarray) -> dict:
    """Draw body parameters (type, structure, SEDs) for given redshifts and masses."""
    # Quiescent fraction (cf. Muzzin et al. 2013): rising steeply above ~10^10.3 Msun, plus a floor.
    qfrac = 0.12 + 0.88 / (1.0 + np.exp(-(log_mass - (10.25 + 0.3 * z)) / 0.25))
    quiescent = rng.uniform(0, 1, n) < qfrac
    p_irr = np.clip(0.08 + 0.15 * z - 0.2 * (log_mass - 9.5), 0.03, 0.45)
    irregular = ~quiescent & (rng.uniform(0, 1, n) < p_irr)
    btype = np.where(quiescent, 0, np.where(irregular, 2, 1))

    # Structure. Bulge-to-total in rest-frame V light.
    bt = np.where(btype == 0, rng.uniform(0.65, 1.0, n),
                  np.where(btype == 1, np.clip(0.08 + 0.12 * (log_mass - 10.0) + rng.normal(0, 0.08, n), 0.0, 0.45), 0.0))
    n_bulge = np.where(btype == 0, rng.choice([3.5, 4.0, 4.5, 5.0], n), rng.choice([2.5, 3.0, 3.5, 4.0], n))
    # vdW14: early-type relation for quiescent bodies, late-type for the others.
    re_kpc = van_der_wel_radius_kpc(log_mass, z, btype == 0, rng)
    re_kpc = np.clip(re_kpc, 0.3, 25.0)
    kpc_per_arcsec = _cosmo("kpc_per_arcsec", z)
    re_arcsec = re_kpc / kpc_per_arcsec
    re_bulge = np.where(btype == 0, re_arcsec, re_arcsec * rng.uniform(0.15, 0.35, n))
    re_disk = np.where(btype == 0, re_arcsec * rng.uniform(1.3, 2.0, n), re_arcsec)
    cos_i = rng.uniform(0.0, 1.0, n)
    inclination = np.degrees(np.arccos(cos_i))
    bulge_q = np.where(btype == 0, rng.uniform(0.45, 1.0, n), rng.uniform(0.7, 1.0, n))
    h_over_r = rng.uniform(0.07, 0.14, n)
    pa = rng.uniform(0.0, 180.0, n)

    # Star formation and dust.
    t_disk = np.where(btype == 0, _E, np.where(
        btype == 2, _IM, np.where(log_mass > 10.2 + rng.normal(0, 0.3, n), _SBC, _SCD)))
    av_bulge = rng.uniform(0.0, 0.2, n)
    av_sf = np.clip(0.25 + 0.55 * (log_mass - 9.5) + rng.normal(0, 0.3, n), 0.0, 2.6)
    av_disk = np.where(btype == 0, av_bulge, np.where(btype == 2, 0.6 * av_sf, av_sf))
    log_sfr = np.where(btype == 0, log_mass - 12.0 + rng.normal(0, 0.4, n),
                       _speagle_log_sfr(log_mass, z) + rng.normal(0, 0.25, n))

    # Sub-structure: knots (clumps), spiral arms, irregular blobs.
    clumpy_boost = np.clip(0.6 + 0.5 * z, 0.6, 1.6)
    knot_frac = np.where(btype == 0, 0.0, np.where(
        btype == 2, rng.uniform(0.25, 0.5, n), rng.uniform(0.03, 0.12, n) * clumpy_boost))
    n_knots = np.where(btype == 0, 0, np.where(btype == 2, rng.integers(15, 60, n), rng.integers(15, 80, n)))
    has_arms = (btype == 1) & (rng.uniform(0, 1, n) < 0.65)
    arm_frac = np.where(has_arms, rng.uniform(0.25, 0.45, n), 0.0)
    n_arms = np.where(rng.uniform(0, 1, n) < 0.7, 2, rng.choice([3, 4], n))
    pitch = rng.uniform(10.0, 25.0, n)
    n_blobs = rng.integers(2, 5, n)

    return dict(
        body_type=btype, quiescent=quiescent, bulge_fraction=bt, sersic_n_bulge=n_bulge,
        re_arcsec=re_arcsec, re_bulge_arcsec=re_bulge, re_disk_arcsec=re_disk,
        inclination_deg=inclination, bulge_q=bulge_q, h_over_r=h_over_r, position_angle_deg=pa,
        template_disk=t_disk, av_bulge=av_bulge, av_disk=av_disk, av_knots=0.5 * av_disk,
        log_sfr=log_sfr, knot_fraction=knot_frac, n_knots=n_knots, has_arms=has_arms,
        arm_fraction=arm_frac, n_arms=n_arms, pitch_deg=pitch, n_blobs=n_blobs,
    )


def _photometry(b: dict, z: np.ndarray, log_mass: np.ndarray) -> dict:
    """Per-component observed fluxes (e-/s) and rest-frame absolute magnitudes of bodies."""
    grid = photometry_grid()
    n = len(z)
    bt, kf = b["bulge_fraction"], b["knot_fraction"]
    # V-light fractions of bulge, disk (smooth + arms + tail + blobs), knots.
    frac = np.stack([bt, (1 - bt) * (1 - kf), (1 - bt) * kf], axis=1)
    temps = np.stack([np.full(n, _E), b["template_disk"], np.full(n, _IM)], axis=1)
    avs = np.stack([b["av_bulge"], b["av_disk"], b["av_knots"]], axis=1)
    rest = {}
    for band in ("U", "B", "V", "J"):
        rest[band] = np.stack([grid.restframe(temps[:, c], band, avs[:, c]) for c in range(3)], axis=1)
    # Composite B - V colour (V-light weighted) -> M/L_V (Bell et al. 2003, Chabrier: -0.1 dex).
    with np.errstate(divide="ignore"):
        bv = -2.5 * np.log10(np.sum(frac * 10 ** (-0.4 * (rest["B"] - rest["V"])), axis=1))
    log_ml_v = -0.628 + 1.305 * bv - 0.1
    log_lv = log_mass - log_ml_v
    mv_total = _MV_SUN_AB - 2.5 * log_lv
    with np.errstate(divide="ignore"):
        mv_comp = mv_total[:, None] - 2.5 * np.log10(frac)  # inf where the fraction is 0
    abs_mag = {}
    for band in ("U", "V", "J"):
        lum = np.sum(10 ** (-0.4 * (mv_comp + rest[band] - rest["V"])), axis=1)
        abs_mag[band] = -2.5 * np.log10(lum)
    dm = _cosmo("distmod", z) - 2.5 * np.log10(1 + z)
    flux = np.zeros((n, 3, len(HST_BANDS)))
    for j, band in enumerate(HST_BANDS):
        for c in range(3):
            m = mv_comp[:, c] + dm + grid.observed(temps[:, c], band, z, avs[:, c]) - rest["V"][:, c]
            flux[:, c, j] = 10 ** (-0.4 * (m - ZERO_POINTS_AB[band]))
    return dict(flux=flux, abs_u=abs_mag["U"], abs_v=abs_mag["V"], abs_j=abs_mag["J"], b_minus_v=bv)


def sample_population(n: int, random_state: int, *, z_range: tuple[float, float] = (0.1, 2.0),
                      mag_limit: float = 25.0, merger_fraction: float = 0.06) -> dict:
    """Draw ``n`` galaxy sources (galaxies and close pairs) with all truth parameters.

    Parameters
    ----------
    n : int
        Number of catalogue sources (a merger / close pair counts once).
    random_state : int
        Seed; the same seed gives the same population.
    z_range : (float, float)
        Redshift range.
    mag_limit : float
        Faint limit of the total F160W magnitude (AB) of a source.
    merger_fraction : float
        Fraction of sources that are close pairs / mergers of two bodies.

    Returns
    -------
    dict
        ``"sources"``: dict of arrays of length ``n`` (catalogue quantities);
        ``"bodies"``: dict of arrays, one entry per body, with ``source``
        (index of its source), ``offset_arcsec`` (dx, dy from the source
        position) and per-component, per-band fluxes ``flux`` (n_bodies, 3, 3)
        in electrons/s ordered (bulge, disk, knots) x (F435W, F850LP, F160W).
    """
    rng = np.random.default_rng([random_state, 7])
    # Draw candidate primaries until enough pass the magnitude limit.
    kept: list[dict] = []
    n_kept = 0
    batch = max(4 * n, 2000)
    while n_kept < n:
        z = _volume_weighted_z(rng, batch, *z_range)
        log_mass = _schechter_log_mass(rng, batch, 8.3, 11.8)
        merger = rng.uniform(0, 1, batch) < merger_fraction
        body = _bodies(rng, batch, z, log_mass)
        phot = _photometry(body, z, log_mass)
        # Companions: mass ratio 1:1 -- 1:4, separation 0.35 -- 1.6 arcsec.
        log_mass2 = log_mass - rng.uniform(0.0, 0.6, batch)
        body2 = _bodies(rng, batch, z, log_mass2)
        phot2 = _photometry(body2, z, log_mass2)
        h1 = phot["flux"][:, :, 2].sum(axis=1)
        h2 = np.where(merger, phot2["flux"][:, :, 2].sum(axis=1), 0.0)
        hmag = ZERO_POINTS_AB["F160W"] - 2.5 * np.log10(h1 + h2)
        ok = (hmag < mag_limit) & (hmag > 16.0)
        kept.append(dict(z=z, log_mass=log_mass, log_mass2=log_mass2, merger=merger, body=body, phot=phot,
                         body2=body2, phot2=phot2, ok=ok))
        n_kept += int(ok.sum())

    def cat(get):
        return np.concatenate([get(k)[k["ok"]] for k in kept])[:n]

    z = cat(lambda k: k["z"])
    merger = cat(lambda k: k["merger"])
    b1 = {key: cat(lambda k, key=key: k["body"][key]) for key in kept[0]["body"]}
    p1 = {key: cat(lambda k, key=key: k["phot"][key]) for key in kept[0]["phot"]}
    b2 = {key: cat(lambda k, key=key: k["body2"][key]) for key in kept[0]["body2"]}
    p2 = {key: cat(lambda k, key=key: k["phot2"][key]) for key in kept[0]["phot2"]}
    lm1 = cat(lambda k: k["log_mass"])
    lm2 = cat(lambda k: k["log_mass2"])

    # Pair geometry (a second draw stream so primaries do not depend on it).
    sep = rng.uniform(0.35, 1.6, n)
    ang = rng.uniform(0, 2 * np.pi, n)
    tail = merger & (rng.uniform(0, 1, n) < 0.7)

    m = merger
    mass = 10**lm1 + np.where(m, 10**lm2, 0.0)
    sfr = 10 ** b1["log_sfr"] + np.where(m, 10 ** b2["log_sfr"], 0.0)

    def add_mags(a, b_):
        return np.where(m, -2.5 * np.log10(10 ** (-0.4 * a) + 10 ** (-0.4 * b_)), a)

    flux_total = p1["flux"].sum(axis=1) + np.where(m[:, None], p2["flux"].sum(axis=1), 0.0)  # (n, 3 bands)
    # Light-weighted (F160W) centre of a pair is the catalogue position; body offsets relative to it.
    w2 = np.where(m, p2["flux"][:, :, 2].sum(axis=1) / flux_total[:, 2], 0.0)
    dx, dy = sep * np.cos(ang), sep * np.sin(ang)
    off1 = np.stack([-w2 * dx, -w2 * dy], axis=1)
    off2 = np.stack([(1 - w2) * dx, (1 - w2) * dy], axis=1)

    cls = np.array(["elliptical", "spiral", "irregular"])[b1["body_type"]]
    cls = np.where((b1["body_type"] == 1) & (b1["inclination_deg"] > EDGE_ON_INCLINATION_DEG), "edge-on", cls)
    cls = np.where(m, "merger", cls)
    quiescent = b1["quiescent"] & (~m | b2["quiescent"])
    re_circ = composite_half_light_radius(
        b1["bulge_fraction"], b1["sersic_n_bulge"],
        b1["re_bulge_arcsec"] * np.sqrt(b1["bulge_q"]),
        b1["re_disk_arcsec"] * np.sqrt(np.maximum(np.cos(np.radians(b1["inclination_deg"])), b1["h_over_r"])),
    )
    sersic = np.where(b1["bulge_fraction"] >= 0.5, b1["sersic_n_bulge"], 1.0)
    sources = dict(
        z=z, mass=mass, sfr=sfr, truth_class=cls.astype("U10"),
        truth_activity=np.where(quiescent, "quiescent", "star-forming"),
        abs_u=add_mags(p1["abs_u"], p2["abs_u"]), abs_v=add_mags(p1["abs_v"], p2["abs_v"]),
        abs_j=add_mags(p1["abs_j"], p2["abs_j"]),
        flux=flux_total, bulge_fraction=b1["bulge_fraction"], half_light_radius_arcsec=re_circ,
        sersic_index=sersic, inclination_deg=b1["inclination_deg"], position_angle_deg=b1["position_angle_deg"],
        av_disk=b1["av_disk"], has_arms=b1["has_arms"], n_knots=b1["n_knots"], knot_fraction=b1["knot_fraction"],
        merger=m, tidal_tail=tail, pair_separation_arcsec=np.where(m, sep, 0.0),
    )
    # Bodies: primaries first (index = source), then companions.
    idx2 = np.flatnonzero(m)
    bodies = {key: np.concatenate([b1[key], b2[key][idx2]]) for key in b1}
    bodies["flux"] = np.concatenate([p1["flux"], p2["flux"][idx2]])
    bodies["source"] = np.concatenate([np.arange(n), idx2])
    bodies["offset_arcsec"] = np.concatenate([off1, off2[idx2]])
    bodies["tidal_tail"] = np.concatenate([tail, np.zeros(len(idx2), bool)])
    bodies["z"] = z[bodies["source"]]
    return dict(sources=sources, bodies=bodies)


def sample_stars(n: int, random_state: int, *, mag_range: tuple[float, float] = (17.0, 25.0)) -> dict:
    """Stars: F160W magnitudes with counts rising as 10^(0.2 m), blackbody colours (3200 -- 7500 K).

    Returns fluxes (n, 3) in electrons/s in band order F435W, F850LP, F160W.
    """
    from .seds import blackbody_magnitudes

    rng = np.random.default_rng([random_state, 11])
    lo, hi = mag_range
    u = rng.uniform(0, 1, n)
    k = 0.2 * np.log(10)
    hmag = np.log(np.exp(k * lo) + u * (np.exp(k * hi) - np.exp(k * lo))) / k
    temp = rng.uniform(3200.0, 7500.0, n)
    bands = tuple(HST_BANDS)
    mags = blackbody_magnitudes(temp, bands)
    mags = mags - mags[:, [2]] + hmag[:, None]
    flux = np.stack([10 ** (-0.4 * (mags[:, j] - ZERO_POINTS_AB[b])) for j, b in enumerate(bands)], axis=1)
    return dict(flux=flux, temperature_k=temp, hmag=hmag)
