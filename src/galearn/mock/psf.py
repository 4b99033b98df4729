"""Fixed per-band point-spread functions of HST ACS/WFC and WFC3/IR (GalSim).

Each PSF is the diffraction pattern of HST's 2.4 m aperture with its 33 %
central obscuration (``galsim.Airy`` at the band's pivot wavelength), convolved
with the native detector pixel (ACS/WFC 0.05", WFC3/IR 0.128") and a small
Gaussian for pointing jitter and drizzling. Drawn on the 0.06" mosaic grid
(which adds the output pixel) the FWHM is ~0.10" in F435W, ~0.11" in F850LP
and ~0.17" in F160W, close to the CANDELS GOODS-S values. The PSF does not
vary with wavelength inside a band or with position (a wavelength-dependent
PSF costs seconds per galaxy, see DESIGN.md).
"""

from __future__ import annotations

import functools

__all__ = ["PSF_SPEC", "band_psf", "psf_fwhm_arcsec"]

#: band -> (pivot wavelength nm, native pixel arcsec, jitter sigma arcsec)
PSF_SPEC = {
    "F435W": (432.0, 0.05, 0.02),
    "F850LP": (903.0, 0.05, 0.02),
    "F160W": (1537.0, 0.128, 0.02),
}


@functools.lru_cache(maxsize=None)
def band_psf(band: str):
    """The GalSim PSF (a ``GSObject``, arcsec units) of a band."""
    import galsim

    lam, pix, jitter = PSF_SPEC[band]
    return galsim.Convolve(
        galsim.Airy(lam=lam, diam=2.4, obscuration=0.33, scale_unit=galsim.arcsec),
        galsim.Box(pix, pix),
        galsim.Gaussian(sigma=jitter),
    )


@functools.lru_cache(maxsize=None)
def psf_fwhm_arcsec(band: str, pixel_scale: float = 0.06) -> float:
    """FWHM (arcsec) of the PSF as drawn on the mosaic grid (including the output pixel)."""
    img = band_psf(band).drawImage(nx=63, ny=63, scale=pixel_scale)
    return float(img.calculateFWHM())
