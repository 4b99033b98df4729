"""The mock field laid out the way a deep-field release is distributed (``galearn simulate --layout release``).

The default mock writes one file per band with the weight inside and the
catalogue with galearn's column names. A release is different, and
:func:`write_release` rewrites a default mock field into that shape:

* every band in two or more **overlapping sections** (the ACS bands in 2 x 2
  sections like the GOODS v2.0 ``sect`` files, F160W in two halves), each on
  the same pixel grid (its WCS is the full mosaic's, shifted);
* the science image (``..._drz_img.fits`` / ``..._drz.fits``) and the weight map
  (``..._wht_img.fits`` / ``..._wht.fits``, inverse variance) as **separate files**;
* pixels in electrons/s with **HST calibration keywords** instead of galearn's
  ``PHOTZP``: ``PHOTFLAM`` + ``PHOTPLAM`` + ``PHOTZPT`` for the ACS bands,
  ``PHOTFNU`` (+ ``PHOTFLAM``/``PHOTPLAM``) for WFC3/IR F160W, with the values
  that give the mock's AB zero points;
* a **segmentation map** on the F160W grid (photutils ``detect_sources`` on the
  smoothed F160W image, 2.5 sigma, 10 pixels; detections holding several
  catalogue sources split between them by nearest position, detections without
  one within 15 pixels (0.9") of a catalogue position joined to it as fragments;
  a segment carries the catalogue ``ID`` of its source, other detections ``ID > max(ID)``);
* the **catalogue** as a FITS table with the CANDELS column names of a joined
  catalogue (``RA_1``/``DEC_1`` plus the second table's ``RA_2``/``DEC_2``).

File names follow the public releases: ``h_sb_sect11_v2.0_drz_img.fits`` (GOODS
ACS v2.0: ``b`` = F435W, ``z`` = F850LP), ``hlsp_candels_hst_wfc3_gs-tot-sect1_f160w_v1.0_drz.fits``,
``goodss_candels.fits``, ``goodss_candels_segmap.fits``. Pixel values are the
default mock's, so cutting the release files gives the default mock's stamps.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from ..config import SimulateConfig

__all__ = ["write_release", "simulate_release", "release_names", "PIVOT_ANGSTROM", "make_segmap"]

#: Pivot wavelengths (Angstrom) written as PHOTPLAM (HST instrument handbooks, rounded).
PIVOT_ANGSTROM = {"F435W": 4329.9, "F850LP": 9033.2, "F160W": 15369.2}
_C_ANGSTROM_PER_S = 2.99792458e18
_GOODS_LETTER = {"F435W": "b", "F850LP": "z"}
_BANDS = ("F435W", "F850LP", "F160W")


def release_names(band: str, section: str, kind: str) -> str:
    """File name of a band's section: ``kind`` is ``drz`` (science) or ``wht`` (weight)."""
    if band in _GOODS_LETTER:
        return f"h_s{_GOODS_LETTER[band]}_sect{section}_v2.0_{kind}_img.fits"
    return f"hlsp_candels_hst_wfc3_gs-tot-sect{section}_{band.lower()}_v1.0_{kind}.fits"


def _sections(shape: tuple[int, int], nx: int, ny: int, overlap: int) -> list[tuple[str, slice, slice]]:
    """``(name, y slice, x slice)`` of an ny x nx grid of sections overlapping by ``overlap`` pixels."""
    H, W = shape
    out = []
    xe = np.linspace(0, W, nx + 1).round().astype(int)
    ye = np.linspace(0, H, ny + 1).round().astype(int)
    h = overlap // 2
    for j in range(ny):
        for i in range(nx):
            xs = slice(max(0, xe[i] - h), min(W, xe[i + 1] + h))
            ys = slice(max(0, ye[j] - h), min(H, ye[j + 1] + h))
            name = f"{j + 1}{i + 1}" if nx > 1 and ny > 1 else str(i + j + 1)
            out.append((name, ys, xs))
    return out


def _calibration_cards(band: str, zp_ab: float) -> dict:
    """HST-style keywords giving AB zero point ``zp_ab`` for 1 electron/s."""
    fnu_jy = 3631.0 * 10 ** (-0.4 * zp_ab)  # Jy per electron/s
    plam = PIVOT_ANGSTROM[band]
    flam = fnu_jy * 1e-23 * _C_ANGSTROM_PER_S / plam**2  # erg/s/cm2/A per electron/s
    cards = {"PHOTFLAM": (flam, "inverse sensitivity, ergs/cm2/A/e-"),
             "PHOTPLAM": (plam, "Pivot wavelength (Angstroms)"),
             "PHOTZPT": (-21.1, "ST magnitude zero point")}
    if band == "F160W":
        cards = {"PHOTFNU": (fnu_jy, "inverse sensitivity, Jy*sec/electron"), **cards}
    return cards


def make_segmap(sci: np.ndarray, weight: np.ndarray, x: np.ndarray, y: np.ndarray, ids: np.ndarray, *,
                nsigma: float = 2.5, npixels: int = 10, fwhm_pix: float = 3.0,
                fragment_radius_pix: float = 15.0) -> np.ndarray:
    """Segmentation map (int32, 0 = sky) of ``sci`` labelled with catalogue ``ids``.

    Detection: the image smoothed by a Gaussian of ``fwhm_pix``, above ``nsigma``
    times the smoothed sky sigma (from the inverse-variance ``weight``), at least
    ``npixels`` connected pixels (:func:`photutils.segmentation.detect_sources`).
    A detection holding one catalogue source (0-based pixel position ``x``, ``y``)
    gets its ID; one holding several is split between them by nearest position;
    one holding none is a fragment of the nearest source (a clump, a tail, a
    pair's companion) when its centroid lies within ``fragment_radius_pix`` of
    a catalogue position and gets that ID, otherwise ``max(ids) + its label``.
    """
    from photutils.segmentation import detect_sources
    from scipy.ndimage import gaussian_filter
    from scipy.spatial import cKDTree

    s = fwhm_pix / (2 * math.sqrt(2 * math.log(2)))
    smooth = gaussian_filter(np.nan_to_num(sci).astype("f4"), s)
    with np.errstate(divide="ignore"):
        sigma = np.where(weight > 0, 1.0 / np.sqrt(np.maximum(weight, 1e-30)), np.inf).astype("f4")
    threshold = nsigma * sigma / (2 * math.sqrt(math.pi) * s)  # white noise smoothed by the Gaussian
    seg = detect_sources(smooth, threshold, npixels)  # positional: npixels / n_pixels across versions
    labels = np.zeros(sci.shape, dtype=np.int32) if seg is None else seg.data.astype(np.int32)
    H, W = labels.shape
    ix = np.clip(np.round(x).astype(int), 0, W - 1)
    iy = np.clip(np.round(y).astype(int), 0, H - 1)
    src_label = labels[iy, ix]
    ids = np.asarray(ids, dtype=np.int64)
    offset = int(ids.max()) if len(ids) else 0
    lut = np.arange(labels.max() + 1, dtype=np.int64) + offset  # unmatched detections
    lut[0] = 0
    counts = np.bincount(src_label[src_label > 0], minlength=len(lut))
    single = np.flatnonzero(src_label > 0)
    single = single[counts[src_label[single]] == 1]
    lut[src_label[single]] = ids[single]
    orphan = np.flatnonzero((counts == 0) & (np.arange(len(lut)) > 0))
    if len(orphan) and len(ids):  # fragments: centroid near a catalogue position
        from scipy.ndimage import center_of_mass

        cy, cx = np.asarray(center_of_mass(np.ones(labels.shape, "u1"), labels, orphan)).reshape(-1, 2).T
        dist, nearest = cKDTree(np.c_[x, y]).query(np.c_[cx, cy])
        near = dist <= fragment_radius_pix
        lut[orphan[near]] = ids[nearest[near]]
    out = lut[labels]
    for lab in np.flatnonzero(counts > 1):  # split shared detections by nearest catalogue position
        members = np.flatnonzero(src_label == lab)
        py, px = np.nonzero(labels == lab)
        _, nearest = cKDTree(np.c_[x[members], y[members]]).query(np.c_[px, py])
        out[py, px] = ids[members[nearest]]
    return out.astype(np.int32)


def write_release(src_dir: str | Path, out_dir: str | Path, *, overlap: int = 48) -> dict[str, list[Path]]:
    """Rewrite a default mock field (``F435W.fits`` ... ``catalog.fits`` in ``src_dir``) in release layout.

    Parameters
    ----------
    src_dir : path-like
        Output folder of :func:`galearn.mock.simulate_field`.
    out_dir : path-like
        Folder for the release files (may be ``src_dir``).
    overlap : int
        Pixels shared by neighbouring sections (default 48: smaller than a
        64-pixel stamp, so stamps on a section boundary are assembled from two files).

    Returns
    -------
    dict
        ``band -> [science section paths]``, ``band + "_wht" -> [weight paths]``,
        ``catalog``, ``segmap`` (one-element lists).
    """
    import warnings

    from astropy.io import fits
    from astropy.io.fits.verify import VerifyWarning
    from astropy.table import Table
    from astropy.wcs import WCS

    from ..store import atomic_path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)  # the mock's HIERARCH cards
        return _write_release(Path(src_dir), Path(out_dir), overlap, fits, Table, WCS, atomic_path)


def _write_release(src_dir: Path, out_dir: Path, overlap: int, fits, Table, WCS, atomic_path) -> dict:
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, list[Path]] = {}
    cat = Table.read(src_dir / "catalog.fits", character_as_bytes=False)
    for band in _BANDS:
        with fits.open(src_dir / f"{band}.fits") as hdul:
            sci = np.asarray(hdul[0].data, dtype="f4")
            hdr = hdul[0].header.copy()
            wht = np.asarray(hdul["WHT"].data, dtype="f4")
        zp = float(hdr["PHOTZP"])
        wcs = WCS(hdr).celestial
        base = fits.Header()
        for key in ("TELESCOP", "INSTRUME", "FILTER", "EXPTIME", "PSF_FWHM", "SEED", "GALEARN"):
            if key in hdr:
                base[key] = (hdr[key], hdr.comments[key])
        base["BUNIT"] = ("ELECTRONS/S", "brightness units")
        for k, v in _calibration_cards(band, zp).items():
            base[k] = v
        base["COMMENT"] = "galearn mock field, release layout (galearn simulate --layout release)"
        if band == "F160W":
            if "segmap" not in paths:
                x, y = wcs.all_world2pix(np.asarray(cat["RA_1"]), np.asarray(cat["DEC_1"]), 0)
                seg = make_segmap(sci, wht, x, y, np.asarray(cat["ID"]))
                shdr = wcs.to_header()
                shdr["COMMENT"] = ("segmentation map: photutils detect_sources on the smoothed F160W image "
                                   "(2.5 sigma, 10 px); value = catalogue ID")
                p = out_dir / "goodss_candels_segmap.fits"
                with atomic_path(p, suffix=".fits") as tmp:
                    fits.PrimaryHDU(seg, header=shdr).writeto(tmp, overwrite=True)
                paths["segmap"] = [p]
            layout = _sections(sci.shape, 1, 2, overlap)  # two halves (top / bottom)
        else:
            layout = _sections(sci.shape, 2, 2, overlap)  # GOODS-like 2 x 2 sections
        for name, ys, xs in layout:
            sub_wcs = wcs.slice((ys, xs))
            h = base.copy()
            h.update(sub_wcs.to_header())
            h["SECTION"] = (name, "section of the mock mosaic")
            h["SECTX0"] = (xs.start, "x offset in the full mosaic (0-based pixels)")
            h["SECTY0"] = (ys.start, "y offset in the full mosaic (0-based pixels)")
            for kind, data in (("drz", sci[ys, xs]), ("wht", wht[ys, xs])):
                hh = h.copy()
                if kind == "wht":
                    for k in ("PHOTFNU", "PHOTFLAM", "PHOTPLAM", "PHOTZPT"):
                        hh.remove(k, ignore_missing=True)
                    hh["BUNIT"] = ("(ELECTRONS/S)**-2", "inverse variance")
                p = out_dir / release_names(band, name, kind)
                with atomic_path(p, suffix=".fits") as tmp:
                    fits.PrimaryHDU(np.ascontiguousarray(data), header=hh).writeto(tmp, overwrite=True)
                paths.setdefault(band if kind == "drz" else f"{band}_wht", []).append(p)
        del sci, wht
    # A joined catalogue (e.g. photometry x redshifts/masses): RA_1/DEC_1 and the second table's RA_2/DEC_2.
    rel = cat.copy(copy_data=True)
    rel["RA_2"] = rel["RA_1"]
    rel["DEC_2"] = rel["DEC_1"]
    names = rel.colnames
    order = names[: names.index("DEC_1") + 1] + ["RA_2", "DEC_2"] + [n for n in names[names.index("DEC_1") + 1:]
                                                                    if n not in ("RA_2", "DEC_2")]
    rel = rel[order]
    rel.meta["COMMENT"] = list(rel.meta.get("COMMENT", [])) + [
        "release layout: RA_1/DEC_1 from the photometric table, RA_2/DEC_2 from the joined table"]
    p = out_dir / "goodss_candels.fits"
    with atomic_path(p, suffix=".fits") as tmp:
        fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(rel)]).writeto(tmp, overwrite=True)
    paths["catalog"] = [p]
    manifest = {k: [q.name for q in v] for k, v in paths.items()}
    (out_dir / "release_files.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return paths


def simulate_release(out_dir: str | Path, cfg: SimulateConfig, *, progress: bool | None = None,
                     overlap: int = 48) -> dict[str, list[Path]]:
    """Simulate the mock field (:func:`galearn.mock.simulate_field`) and write it in release layout."""
    from .field import simulate_field

    out_dir = Path(out_dir)
    tmp = out_dir / ".default-layout"
    if tmp.exists():
        shutil.rmtree(tmp)
    simulate_field(tmp, cfg, progress=progress)
    try:
        return write_release(tmp, out_dir, overlap=overlap)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
