"""Flux calibration of survey mosaics: every band to nJy per pixel.

Releases store pixels in different units: HST drizzled mosaics in
electrons/s with the instrument's calibration keywords, some releases in
nJy or MJy/sr. :func:`resolve_calibration` finds the factor that turns one
mosaic's pixel values into **nJy per pixel** (an AB magnitude of 31.4),
from, in this order:

1. an explicit AB zero point (``--zeropoint BAND=ZP``: the AB magnitude of
   one pixel unit);
2. ``BUNIT`` naming a flux density (``nJy``, ``uJy``, ``Jy``, ...) per pixel, or
   a surface brightness (``MJy/sr``, ...) times the pixel solid angle;
3. ``PHOTFNU`` (Jy per electron/s, WFC3/IR);
4. ``PHOTFLAM`` (erg/s/cm2/A per electron/s) + ``PHOTPLAM`` (pivot wavelength, A):
   ``f_nu = PHOTFLAM * PHOTPLAM^2 / c``;
5. an AB zero-point keyword: ``ZP``, ``ZEROPNT``, ``MAGZERO``, ``MAGZPT``, ``PHOTZP``
   (or ``PHOTZPT`` when it is a plausible AB zero point, > 0, rather than the
   ST-magnitude constant -21.1 that goes with ``PHOTFLAM``).

Keywords are looked up in the image HDU's header, then in the primary header
(drizzlepac writes them there). A mosaic in electrons or counts (``BUNIT``
without ``/s``) calibrated by a per-second keyword is divided by ``EXPTIME``.
A band where nothing is found is refused (:class:`~galearn.errors.BadValueError`
naming the band, the keywords and the option).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Calibration", "resolve_calibration", "CALIBRATION_KEYWORDS", "AB_NJY_ZEROPOINT",
           "njy_factor_from_zeropoint"]

#: AB magnitude of 1 nJy.
AB_NJY_ZEROPOINT = 2.5 * math.log10(3631e9)  # 31.3999...
_C_ANGSTROM_PER_S = 2.99792458e18
_ZP_KEYS = ("ZP", "ZEROPNT", "MAGZERO", "MAGZPT", "PHOTZP")
#: Every keyword looked for, in order of use.
CALIBRATION_KEYWORDS = ("BUNIT", "PHOTFNU", "PHOTFLAM+PHOTPLAM", *_ZP_KEYS, "PHOTZPT")
_COUNT_UNITS = ("ELECTRON", "COUNT", "CTS", "DN", "ADU", "E-")


@dataclass(frozen=True)
class Calibration:
    """Multiply a mosaic's pixel values by ``factor`` to get nJy per pixel.

    ``source`` names what gave it (``--zeropoint``, ``BUNIT``, ``PHOTFNU``, ...),
    ``zeropoint_ab`` is the equivalent AB magnitude of one pixel unit,
    ``unit`` the mosaic's own ``BUNIT``.
    """

    factor: float
    source: str
    zeropoint_ab: float
    unit: str = ""
    note: str = ""

    def to_dict(self) -> dict:
        return {"factor_to_njy": self.factor, "source": self.source, "zeropoint_ab": self.zeropoint_ab,
                "unit": self.unit, "note": self.note}


def njy_factor_from_zeropoint(zp_ab: float) -> float:
    """nJy of one pixel unit whose AB magnitude is ``zp_ab``."""
    return 10.0 ** (-0.4 * (float(zp_ab) - AB_NJY_ZEROPOINT))


def _zp_of(factor: float) -> float:
    return AB_NJY_ZEROPOINT - 2.5 * math.log10(factor)


def _get(headers, key):
    for h in headers:
        if h is not None and key in h and h[key] not in (None, ""):
            return h[key]
    return None


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _bunit_factor(bunit: str, pixel_area_sr: float) -> tuple[float, str] | None:
    """nJy per pixel of one BUNIT unit, when BUNIT is a flux density or a surface brightness."""
    import astropy.units as u

    text = bunit.strip()
    if not text:
        return None
    for fmt in ("fits", "generic"):
        try:
            unit = u.Unit(text, format=fmt, parse_strict="raise")
            break
        except (ValueError, TypeError):
            unit = None
    if unit is None:
        return None
    try:
        return float((1 * unit).to_value(u.nJy)), "flux density per pixel"
    except u.UnitConversionError:
        pass
    try:
        per_sr = float((1 * unit).to_value(u.nJy / u.sr))
        return per_sr * pixel_area_sr, "surface brightness x pixel solid angle"
    except u.UnitConversionError:
        return None


def resolve_calibration(headers, band: str, *, pixel_area_arcsec2: float, zeropoint: float | None = None,
                        where: str = "") -> Calibration:
    """The factor from one mosaic's pixel values to nJy per pixel.

    Parameters
    ----------
    headers : list of astropy.io.fits.Header
        The image HDU's header first, then the primary header (None entries skipped).
    band : str
    pixel_area_arcsec2 : float
        Pixel solid angle (arcsec^2), for surface-brightness units.
    zeropoint : float, optional
        AB magnitude of one pixel unit (``--zeropoint``); overrides the header.
    where : str
        File name for the message.

    Raises
    ------
    galearn.errors.BadValueError
        No calibration found (names the band, the keywords and ``--zeropoint``).
    """
    from ..errors import BadValueError

    headers = [h for h in headers if h is not None]
    bunit = str(_get(headers, "BUNIT") or "").strip()
    if zeropoint is not None:
        zp = _number(zeropoint)
        if zp is None:
            raise BadValueError(f"--zeropoint {band}={zeropoint!r}: not a number (AB magnitude of one pixel unit)")
        return Calibration(njy_factor_from_zeropoint(zp), "--zeropoint", zp, bunit)
    pixel_area_sr = pixel_area_arcsec2 / (180 / math.pi * 3600) ** 2
    got = _bunit_factor(bunit, pixel_area_sr)
    if got is not None and got[0] > 0:
        return Calibration(got[0], "BUNIT", _zp_of(got[0]), bunit, got[1])
    per_second = "/S" in bunit.upper().replace(" ", "") or "PER SEC" in bunit.upper()
    counts = any(k in bunit.upper() for k in _COUNT_UNITS) and not per_second
    exptime = _number(_get(headers, "EXPTIME")) if counts else None
    if counts and not (exptime and exptime > 0):
        counts = False  # no exposure time: assume the keyword's per-second convention
    scale = 1.0 / exptime if counts else 1.0
    note = f"BUNIT {bunit!r} divided by EXPTIME {exptime}" if counts else ""

    def done(factor: float, source: str) -> Calibration:
        factor *= scale
        return Calibration(factor, source, _zp_of(factor), bunit, note)

    fnu = _number(_get(headers, "PHOTFNU"))
    if fnu is not None and fnu > 0:
        return done(fnu * 1e9, "PHOTFNU")
    flam, plam = _number(_get(headers, "PHOTFLAM")), _number(_get(headers, "PHOTPLAM"))
    if flam is not None and plam is not None and flam > 0 and plam > 0:
        fnu_cgs = flam * plam**2 / _C_ANGSTROM_PER_S  # erg/s/cm2/Hz per unit
        return done(fnu_cgs / 1e-32, "PHOTFLAM+PHOTPLAM")
    for key in _ZP_KEYS:
        zp = _number(_get(headers, key))
        if zp is not None and zp > 0:
            return done(njy_factor_from_zeropoint(zp), key)
    zpt = _number(_get(headers, "PHOTZPT"))
    if zpt is not None and zpt > 0:
        return done(njy_factor_from_zeropoint(zpt), "PHOTZPT")
    raise BadValueError(
        f"band {band}: no flux calibration in {where or 'the header'} (looked for "
        f"{', '.join(CALIBRATION_KEYWORDS)}); give the AB zero point with --zeropoint {band}=ZP_AB")
