"""Spectral energy distributions, HST bandpasses and AB photometry of the mock field.

Everything physical about colours lives here:

* the Coleman, Wu & Weedman (1980) templates E, Sbc, Scd and Im, extended by
  Bolzonella et al. (2000), as shipped with GalSim (``galsim.meta_data.share_dir``);
* the HST ACS/WFC F435W, F850LP and WFC3/IR F160W total-throughput curves, also
  shipped with GalSim;
* the Bessell U, B, V and 2MASS J curves shipped with ``speclite``, for
  rest-frame colours;
* the Calzetti et al. (2000) attenuation curve (R_V = 4.05) for dust;
* a blackbody for stars.

Magnitudes are AB for a photon-counting detector,

    m = -2.5 log10( int f_nu(lambda) T(lambda) dlambda/lambda / int 3631 Jy T(lambda) dlambda/lambda ),

computed on the bandpass's own wavelength sampling. Because the mock draws
thousands of galaxies, the magnitudes of each template are tabulated once on a
grid of redshift and attenuation A_V (:class:`PhotometryGrid`) and interpolated
bilinearly; :func:`template_magnitude` computes a single value exactly, and the
tests check the two against each other and against GalSim's own
``SED.calculateMagnitude``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

__all__ = [
    "TEMPLATES",
    "TEMPLATE_NAMES",
    "HST_BANDS",
    "REST_BANDS",
    "calzetti_k",
    "load_template",
    "load_hst_bandpass",
    "load_rest_filter",
    "template_magnitude",
    "blackbody_magnitudes",
    "PhotometryGrid",
    "photometry_grid",
]

#: Template name -> file under ``galsim.meta_data.share_dir/SEDs`` (wavelength in Angstrom, f_lambda).
TEMPLATES = {
    "E": "CWW_E_ext.sed",
    "Sbc": "CWW_Sbc_ext.sed",
    "Scd": "CWW_Scd_ext.sed",
    "Im": "CWW_Im_ext.sed",
}
TEMPLATE_NAMES = tuple(TEMPLATES)

#: Observed HST band -> file under ``share_dir/bandpasses`` (wavelength in nm, total throughput).
HST_BANDS = {
    "F435W": "ACS_wfc_F435W.dat",
    "F850LP": "ACS_wfc_F850LP.dat",
    "F160W": "WFC3_ir_F160W.dat",
}

#: Rest-frame band -> speclite filter name.
REST_BANDS = {"U": "bessell-U", "B": "bessell-B", "V": "bessell-V", "J": "twomass-J"}

_C_NM_PER_S = 2.99792458e17  # speed of light in nm/s


def _share_dir() -> str:
    import galsim

    return galsim.meta_data.share_dir


@functools.lru_cache(maxsize=None)
def load_template(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A CWW template as (rest wavelength in nm, f_lambda in arbitrary units)."""
    path = os.path.join(_share_dir(), "SEDs", TEMPLATES[name])
    data = np.loadtxt(path)
    return data[:, 0] / 10.0, data[:, 1]


@functools.lru_cache(maxsize=None)
def load_hst_bandpass(band: str) -> tuple[np.ndarray, np.ndarray]:
    """An HST total-throughput curve as (wavelength in nm, throughput), trimmed to where it is non-zero."""
    path = os.path.join(_share_dir(), "bandpasses", HST_BANDS[band])
    data = np.loadtxt(path)
    wave, thr = data[:, 0], np.clip(data[:, 1], 0.0, None)
    nz = np.flatnonzero(thr > 0)
    lo, hi = max(nz[0] - 1, 0), min(nz[-1] + 2, len(wave))
    return wave[lo:hi], thr[lo:hi]


@functools.lru_cache(maxsize=None)
def load_rest_filter(band: str) -> tuple[np.ndarray, np.ndarray]:
    """A speclite rest-frame filter (U, B, V, J) as (wavelength in nm, response)."""
    import speclite.filters

    filt = speclite.filters.load_filter(REST_BANDS[band])
    return np.asarray(filt.wavelength, dtype="f8") / 10.0, np.asarray(filt.response, dtype="f8")


def calzetti_k(wave_nm: np.ndarray) -> np.ndarray:
    """Calzetti et al. (2000) attenuation curve k(lambda) (R_V = 4.05), A_lambda = A_V k / R_V.

    Valid 120 nm -- 2.2 micron; extended linearly below 120 nm and clipped at 0 above.
    """
    lam = np.asarray(wave_nm, dtype="f8") / 1000.0  # micron
    rv = 4.05

    def blue(x):
        return 2.659 * (-2.156 + 1.509 / x - 0.198 / x**2 + 0.011 / x**3) + rv

    def red(x):
        return 2.659 * (-1.857 + 1.040 / x) + rv

    k = np.where(lam < 0.63, blue(np.maximum(lam, 0.12)), red(lam))
    slope = (blue(0.12) - blue(0.125)) / 0.005
    k = np.where(lam < 0.12, blue(0.12) + slope * (0.12 - lam), k)
    return np.clip(k, 0.0, None)


def _fnu_rest(name: str, rest_wave_nm: np.ndarray, av: float = 0.0) -> np.ndarray:
    """f_nu (arbitrary units) of template ``name`` at rest wavelengths (nm), attenuated by A_V (mag)."""
    wave, flam = load_template(name)
    f = np.interp(rest_wave_nm, wave, flam, left=0.0, right=0.0) * rest_wave_nm**2
    if av:
        f = f * 10.0 ** (-0.4 * av * calzetti_k(rest_wave_nm) / 4.05)
    return f


def _band_average(fnu: np.ndarray, wave_nm: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Photon-weighted mean f_nu through a band (last axis = wavelength)."""
    w = thr / wave_nm
    return np.trapezoid(fnu * w, wave_nm, axis=-1) / np.trapezoid(w, wave_nm)


def _curve(band: str) -> tuple[np.ndarray, np.ndarray]:
    return load_hst_bandpass(band) if band in HST_BANDS else load_rest_filter(band)


def template_magnitude(name: str, band: str, z: float = 0.0, av: float = 0.0) -> float:
    """Magnitude (AB, arbitrary zero point common to all bands) of a template seen through a band.

    Parameters
    ----------
    name : str
        Template: ``E``, ``Sbc``, ``Scd`` or ``Im``.
    band : str
        ``F435W``, ``F850LP``, ``F160W`` (observed frame, redshift ``z``) or
        ``U``, ``B``, ``V``, ``J`` (rest frame: use ``z=0``).
    z : float
        Redshift. The observed f_nu at wavelength lambda is proportional to the
        rest-frame f_nu at lambda / (1 + z); the (1 + z) and distance factors
        are applied by the caller.
    av : float
        Calzetti attenuation A_V (mag), applied in the rest frame.

    Returns
    -------
    float
        ``-2.5 log10(<f_nu>)`` in the template's arbitrary units; differences
        between bands are colours (AB).
    """
    wave, thr = _curve(band)
    fnu = _fnu_rest(name, wave / (1.0 + z), av)
    return float(-2.5 * np.log10(_band_average(fnu, wave, thr)))


def blackbody_magnitudes(temperature_k: np.ndarray, bands: tuple[str, ...]) -> np.ndarray:
    """Magnitudes (AB, arbitrary common zero point) of blackbodies through bands, shape (N, len(bands))."""
    t = np.asarray(temperature_k, dtype="f8")[:, None]
    out = []
    h_over_k = 1.4387769e7  # h c / k_B in nm K
    for band in bands:
        wave, thr = _curve(band)
        # B_nu ~ nu^3 / (exp(h nu / k T) - 1) ~ lambda^-3 / (exp(hc / lambda k T) - 1)
        fnu = wave**-3.0 / np.expm1(h_over_k / (wave * t))
        out.append(-2.5 * np.log10(_band_average(fnu * 1e27, wave, thr)))
    return np.stack(out, axis=1)


@dataclass(frozen=True)
class PhotometryGrid:
    """Tabulated template magnitudes on a (redshift, A_V) grid for fast vectorised look-up.

    ``obs[t, b, iz, ia]`` is :func:`template_magnitude` of template ``t`` through
    observed band ``b`` at ``z[iz]``, ``av[ia]``; ``rest[t, r, ia]`` the same
    for the rest-frame bands at z = 0.
    """

    z: np.ndarray
    av: np.ndarray
    obs_bands: tuple[str, ...]
    rest_bands: tuple[str, ...]
    obs: np.ndarray
    rest: np.ndarray

    def _weights(self, grid: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.clip(np.asarray(x, dtype="f8"), grid[0], grid[-1])
        i = np.clip(np.searchsorted(grid, x, side="right") - 1, 0, len(grid) - 2)
        return i, (x - grid[i]) / (grid[i + 1] - grid[i])

    def observed(self, template: np.ndarray, band: str, z: np.ndarray, av: np.ndarray) -> np.ndarray:
        """Observed-band template magnitudes for arrays of template index, redshift, A_V."""
        b = self.obs_bands.index(band)
        t = np.asarray(template, dtype=int)
        iz, fz = self._weights(self.z, z)
        ia, fa = self._weights(self.av, av)
        g = self.obs[:, b]
        return ((1 - fz) * (1 - fa) * g[t, iz, ia] + fz * (1 - fa) * g[t, iz + 1, ia]
                + (1 - fz) * fa * g[t, iz, ia + 1] + fz * fa * g[t, iz + 1, ia + 1])

    def restframe(self, template: np.ndarray, band: str, av: np.ndarray) -> np.ndarray:
        """Rest-frame template magnitudes (U, B, V, J) for arrays of template index and A_V."""
        r = self.rest_bands.index(band)
        t = np.asarray(template, dtype=int)
        ia, fa = self._weights(self.av, av)
        g = self.rest[:, r]
        return (1 - fa) * g[t, ia] + fa * g[t, ia + 1]


@functools.lru_cache(maxsize=2)
def photometry_grid(z_max: float = 2.6, dz: float = 0.01, av_max: float = 3.0, dav: float = 0.1) -> PhotometryGrid:
    """Build (once per process) the :class:`PhotometryGrid` of all templates and bands."""
    zs = np.arange(0.0, z_max + dz / 2, dz)
    avs = np.arange(0.0, av_max + dav / 2, dav)
    obs_bands = tuple(HST_BANDS)
    rest_bands = tuple(REST_BANDS)
    obs = np.empty((len(TEMPLATE_NAMES), len(obs_bands), len(zs), len(avs)))
    rest = np.empty((len(TEMPLATE_NAMES), len(rest_bands), len(avs)))
    for t, name in enumerate(TEMPLATE_NAMES):
        for b, band in enumerate(obs_bands):
            wave, thr = load_hst_bandpass(band)
            rw = wave[None, :] / (1.0 + zs[:, None])  # (nz, nw) rest wavelengths
            base = _fnu_rest(name, rw)  # (nz, nw)
            lnq = (-0.4 * np.log(10.0) / 4.05) * calzetti_k(rw)  # (nz, nw)
            w = thr / wave
            norm = np.trapezoid(w, wave)
            for ia, av in enumerate(avs):
                mean = np.trapezoid(base * np.exp(av * lnq) * w, wave, axis=-1) / norm  # (nz,)
                obs[t, b, :, ia] = -2.5 * np.log10(np.maximum(mean, 1e-300))
        for r, band in enumerate(rest_bands):
            wave, thr = load_rest_filter(band)
            base = _fnu_rest(name, wave)
            att = 10.0 ** (-0.4 * avs[:, None] * calzetti_k(wave)[None] / 4.05)
            rest[t, r] = -2.5 * np.log10(_band_average(base[None] * att, wave, thr))
    return PhotometryGrid(zs, avs, obs_bands, rest_bands, obs, rest)
