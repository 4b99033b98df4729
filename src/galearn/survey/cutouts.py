"""Postage stamps from survey mosaics, through each mosaic's WCS.

Geometry (axis order ``(x, y)`` for positions, ``(ny, nx)`` for shapes)
-----------------------------------------------------------------------
Pixel coordinates are 0-based with pixel centres at integers (numpy / astropy
``origin=0``). A catalogue position ``(x, y)`` in the FIRST band's mosaic is
cut at the integer pixel grid, like :class:`astropy.nddata.Cutout2D`:

    x0 = floor(x + 0.5) - size // 2        (same for y)

so the stamp is ``mosaic[y0:y0+size, x0:x0+size]`` and the galaxy lies in
stamp pixel ``(size // 2, size // 2)`` -- pixel (32, 32) of a 64-pixel stamp --
within half a pixel of that pixel's centre: ``size//2 - 0.5 <= x - x0 <
size//2 + 0.5``. No sub-pixel shift is applied (an interpolating shift would
smooth the noise and break flux conservation); the exact position of the
catalogue coordinate in the stamp is kept in the output catalogue columns
``galearn_x`` / ``galearn_y``.

Other bands
-----------
A band whose pixel grid is the first band's grid up to an integer offset
(checked by mapping points across the whole mosaic through both WCSs) is cut
by direct slicing. Any other band is resampled onto the first band's stamp
grid with :func:`reproject.reproject_adaptive` (``conserve_flux=True``, the
default) or :func:`reproject.reproject_exact` times the pixel-area ratio, so
the flux summed over a stamp is conserved. The method is recorded in the
provenance (``extra["resample"]``).

Streaming
---------
Mosaics are memory-mapped (the FITS data block is mapped with :mod:`mmap`;
astropy reads the header and gives the data offset), never read whole. The
pixel positions of all rows are computed at once (``all_world2pix``), rows are
processed in order of mosaic row ``y`` in batches, each batch of same-grid
stamps is gathered with one vectorised ``numpy.take`` per band, and after each
batch the mapped pages are released (``madvise(MADV_DONTNEED)``), so the
resident memory stays at a few batches whatever the mosaic size. Integer
images with ``BSCALE`` / ``BZERO`` / ``BLANK`` are scaled per stamp (astropy's
own scaling would load the whole array). Gzip-compressed or tile-compressed
files cannot be mapped; they are read stamp by stamp through ``hdu.section``.

Quality checks (reasons in the ``rejected`` table)
-------------------------------------------------
``non-finite ra/dec``; ``cut: <expression>``; ``centre off mosaic`` (first
band); ``band missing: B (off its mosaic)``; ``stamp partly off mosaic (B)``;
``band missing: B`` (every pixel, or the central 3x3 pixels, bad);
``too many bad pixels (B)`` (more than ``max_bad_fraction`` bad pixels);
``central source not the brightest`` (optional). A pixel is *bad* when it is
NaN, exactly 0 (drizzled mosaics write 0 where there is no data), or has
weight <= 0 in the band's weight map (an image extension named WHT, WEIGHT,
IVM, ... of the same shape, a ``--weight`` / ``--rms`` file, or a ``_wht`` /
``_rms`` companion found by name: :mod:`galearn.survey.inputs`). Bad pixels of a
kept stamp are set to 0.

Releases
--------
A band may be several files (sections / tiles): each is placed on the stamp
grid (the first band's first file) like a band; a row is cut from the file
holding its whole stamp, or assembled from the files that cover it together
(rows grouped by file). Pixel values are calibrated to nJy per pixel from each
file's header or ``--zeropoint`` (:mod:`galearn.survey.calibration`). With a
segmentation map, the pixels of other sources in a kept stamp are replaced by
seeded sky noise (:meth:`_Cutter.mask_neighbours`).
"""

from __future__ import annotations

import mmap
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_area, proj_plane_pixel_scales

from .. import __version__
from ..config import CutoutConfig
from ..errors import BadValueError, EmptySelectionError, MissingInputError
from ..compute import current_session, file_key, map_partitions, setting, worker_cached
from ..store import (SampleWriter, Workspace, check_shard, empty_rejected, file_sha256, open_sample, read_shard,
                     remove_stale_shards, shard_path, update_metrics, write_shard, write_sharded_sample, record_compute)
from .catalog import column_values, evaluate_selection, read_catalog, resolve_columns
from ..imaging import AsinhStretch, band_wavelength_nm, minmax_asinh, robust_noise

__all__ = [
    "Mosaic",
    "open_mosaic",
    "CutoutResult",
    "cut_stamps",
    "make_sample_from_mosaics",
    "open_band_files",
    "describe_inputs",
    "HASH_LIMIT_BYTES",
]

#: Inputs larger than this are identified by size + modification time, not SHA-256.
HASH_LIMIT_BYTES = 2 * 1024**3

_BITPIX = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
_RESAMPLE = ("adaptive", "exact")
_SMALL_WEIGHT_BYTES = 256 * 1024**2  # compressed weight maps up to this size are decompressed whole
_RELEASE_EVERY = 32  # boxes gathered between releases of mapped pages
#: Image extensions read as the weight (inverse variance) map of the science image in the same file.
_WEIGHT_NAMES = ("WHT", "WEIGHT", "WEIGHTS", "IVM", "WHT_MAP", "INVVAR")


# --------------------------------------------------------------------------- mosaics


@dataclass
class Mosaic:
    """One band's image: WCS plus lazy, memory-mapped pixel access.

    Use :func:`open_mosaic`; call :meth:`close` (or use as a context manager).

    Attributes
    ----------
    band : str
    path : Path or None
        None for in-memory arrays.
    wcs : astropy.wcs.WCS
        Celestial WCS of the image.
    shape : tuple
        ``(ny, nx)`` pixels.
    unit : str
        ``BUNIT`` of the header ('' when absent).
    """

    band: str
    path: Path | None
    wcs: WCS
    shape: tuple[int, int]
    unit: str = ""
    hdu_index: int = 0
    _data: np.ndarray | None = field(default=None, repr=False)  # raw (unscaled) 2-D array
    _section: Any = field(default=None, repr=False)  # fallback: astropy section (scaled)
    _mm: mmap.mmap | None = field(default=None, repr=False)
    _fh: Any = field(default=None, repr=False)
    _hdul: Any = field(default=None, repr=False)
    bscale: float = 1.0
    bzero: float = 0.0
    blank: int | None = None
    weight: "Mosaic | None" = field(default=None, repr=False)  # weight / RMS map, same grid
    weight_kind: str | None = None  # "weight" (inverse variance) or "rms"
    weight_from: str | None = None  # "extension", "--weight", "--rms" or "companion"
    weight_path: Path | None = None
    factor: float = 1.0  # pixel value x factor = nJy per pixel (1 when not calibrated)
    calibration: Any = None  # galearn.survey.calibration.Calibration, or None (mosaic units)
    header: Any = field(default=None, repr=False)  # image HDU header
    primary_header: Any = field(default=None, repr=False)  # primary header when the image is an extension
    _offset: int = 0  # byte offset of the data block in the file
    _shared_mm: mmap.mmap | None = field(default=None, repr=False)  # the science mosaic's mapping (weight maps)

    def __enter__(self) -> "Mosaic":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def memmapped(self) -> bool:
        return self._mm is not None

    @property
    def pixel_scales_arcsec(self) -> np.ndarray:
        """Pixel side along x and y (arcsec), from the WCS."""
        return proj_plane_pixel_scales(self.wcs) * 3600.0

    @property
    def pixel_area_arcsec2(self) -> float:
        return float(proj_plane_pixel_area(self.wcs) * 3600.0**2)

    def _scale(self, raw: np.ndarray) -> np.ndarray:
        out = raw.astype("f4")
        if self.blank is not None and raw.dtype.kind in "iu":
            out[raw == self.blank] = np.nan
        if self.bscale != 1.0 or self.bzero != 0.0:
            out = out * np.float32(self.bscale) + np.float32(self.bzero)
        return out

    def gather(self, y0: np.ndarray, x0: np.ndarray, ny: int, nx: int | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
        """Boxes ``mosaic[y0:y0+ny, x0:x0+nx]`` for arrays of corners -> float32 ``(n, ny, nx)``.

        Pixels outside the mosaic are NaN. One loop over boxes (a slice copy
        each: faster than one fancy-indexing gather, measured), reading only
        the mapped pages that the boxes cover. ``out`` may be a float32 view
        to fill in place.
        """
        nx = ny if nx is None else nx
        y0 = np.asarray(y0, dtype=np.int64)
        x0 = np.asarray(x0, dtype=np.int64)
        n = len(y0)
        H, W = self.shape
        if out is None:
            out = np.empty((n, ny, nx), dtype="f4")
        if n == 0:
            return out
        inside = (y0 >= 0) & (x0 >= 0) & (y0 + ny <= H) & (x0 + nx <= W)
        src = self._data if self._data is not None else self._section
        scaled = self._data is not None and (self.bscale != 1.0 or self.bzero != 0.0 or self.blank is not None)
        raw = np.empty((n, ny, nx), dtype=self._data.dtype) if scaled else out
        if not inside.all():
            raw[~inside] = 0 if scaled else np.nan
        ylist = y0.tolist()
        for i, (ya, xa, ok) in enumerate(zip(ylist, x0.tolist(), inside.tolist())):
            if (self._mm is not None or self._shared_mm is not None) and i and i % _RELEASE_EVERY == 0:
                # Scattered boxes: each row read maps ~64 KB (kernel fault-around); drop them as we go.
                self.release(min(ylist[i - _RELEASE_EVERY : i]), max(ylist[i - _RELEASE_EVERY : i]) + ny)
            if ok:
                raw[i] = src[ya : ya + ny, xa : xa + nx]
            else:
                yb, xb = max(ya, 0), max(xa, 0)
                ye, xe = min(ya + ny, H), min(xa + nx, W)
                if yb < ye and xb < xe:
                    raw[i, yb - ya : ye - ya, xb - xa : xe - xa] = src[yb:ye, xb:xe]
        if scaled:
            out[...] = self._scale(raw)
            if not inside.all():
                yy = y0[:, None] + np.arange(ny)[None, :]
                xx = x0[:, None] + np.arange(nx)[None, :]
                off = ~(((yy >= 0) & (yy < H))[:, :, None] & ((xx >= 0) & (xx < W))[:, None, :])
                out[off] = np.nan
        return out

    def release(self, y_lo: int | None = None, y_hi: int | None = None) -> None:
        """Drop mapped pages (of mosaic rows ``y_lo:y_hi``, default all) from this process's
        resident memory; they stay in the OS page cache, so reading them again is cheap."""
        mm = self._mm if self._mm is not None else self._shared_mm
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start, length = 0, len(mm)
        if y_lo is not None:
            H, W = self.shape
            row = W * self._data.dtype.itemsize
            a = self._offset + max(int(y_lo), 0) * row
            b = self._offset + min(int(y_hi), H) * row
            start = (a // mmap.PAGESIZE) * mmap.PAGESIZE
            length = max(0, min(b, len(mm)) - start)
        try:
            mm.madvise(mmap.MADV_DONTNEED, start, length)
        except (OSError, ValueError):  # pragma: no cover - platform dependent
            pass
        if self.weight is not None and y_lo is not None:
            self.weight.release(y_lo, y_hi)

    def noise_sigma(self, random_state: int | np.random.Generator | None = 0, *,
                    n_segments: int = 400, segment: int = 256) -> float:
        """Robust per-pixel noise sigma (mosaic units) from random row segments.

        ``n_segments`` segments of ``segment`` pixels at seeded random places
        (a random pixel subsample that touches few pages of the file); NaN and
        zero (no-coverage) pixels are ignored, sources are clipped at 5 sigma
        before the median absolute deviation (:func:`robust_noise`).
        """
        rng = np.random.default_rng(random_state)
        H, W = self.shape
        seg = min(segment, W)
        values = np.zeros(0, dtype="f4")
        for _ in range(4):  # sparse coverage: try again with more segments
            ys = rng.integers(0, H, n_segments)
            xs = rng.integers(0, W - seg + 1, n_segments)
            values = np.concatenate([values, self.gather(ys, xs, 1, seg).ravel()])
            good = np.isfinite(values) & (values != 0)
            if good.sum() >= 20000:
                break
        self.release()
        return robust_noise(values)

    def close(self) -> None:
        if self.weight is not None:
            self.weight.close()
            self.weight = None
        self._shared_mm = None
        self._data = None
        self._section = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # pragma: no cover - a view is still alive; the GC closes it
                pass
            self._mm = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._hdul is not None:
            self._hdul.close()
            self._hdul = None


def _celestial_wcs(header: fits.Header, where: str) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            w = WCS(header)
        except Exception as exc:  # astropy raises several types for broken headers
            raise BadValueError(f"{where}: cannot read its WCS ({type(exc).__name__}: {exc})") from exc
    if not w.has_celestial:
        raise BadValueError(
            f"{where}: no celestial WCS in the header (need CTYPE1/CTYPE2 such as RA---TAN/DEC--TAN, "
            "CRVAL, CRPIX and CD or CDELT)"
        )
    w = w.celestial
    if w.naxis != 2:  # pragma: no cover - has_celestial implies 2 axes
        raise BadValueError(f"{where}: celestial WCS has {w.naxis} axes")
    return w


def open_mosaic(source: Any, band: str) -> Mosaic:
    """Open one band's image for stamp cutting.

    Parameters
    ----------
    source : path-like, ``(array, WCS or Header)`` or ``ImageHDU``
        A FITS file (the first HDU with a 2-D image is used), or in-memory
        data with its WCS.
    band : str
        Band name, e.g. ``F160W``.

    Raises
    ------
    MissingInputError
        The file does not exist.
    BadValueError
        Not a FITS image, or no celestial WCS (the message names the file).
    """
    if isinstance(source, tuple) and len(source) == 2:
        data, w = source
        data = np.asarray(data)
        if data.ndim != 2:
            raise BadValueError(f"band {band}: image must be 2-D (ny, nx), got shape {data.shape}")
        header = w if isinstance(w, fits.Header) else None
        w = _celestial_wcs(w, f"band {band}") if isinstance(w, fits.Header) else w
        if not getattr(w, "has_celestial", False):
            raise BadValueError(f"band {band}: the WCS given has no celestial axes")
        return Mosaic(band=band, path=None, wcs=w.celestial, shape=data.shape, _data=data,
                      header=header.copy() if header is not None else None,
                      unit=str(header.get("BUNIT", "")).strip() if header is not None else "")
    if isinstance(source, (fits.PrimaryHDU, fits.ImageHDU)):
        return open_mosaic((source.data, source.header), band)
    path = Path(source)
    if not path.exists():
        raise MissingInputError(f"mosaic for band {band}: {path} does not exist")
    if path.is_dir():
        raise BadValueError(f"mosaic for band {band}: {path} is a folder, not a FITS file")
    try:
        hdul = fits.open(path, memmap=True, do_not_scale_image_data=True, lazy_load_hdus=True)
        index, hdu = None, None
        for i, h in enumerate(hdul):
            if h.is_image and h.header.get("NAXIS", 0) == 2 and h.header.get("NAXIS1", 0) > 0:
                index, hdu = i, h
                break
    except Exception as exc:
        raise BadValueError(f"mosaic for band {band}: {path} is not a readable FITS file ({exc})") from exc
    if hdu is None:
        hdul.close()
        raise BadValueError(f"mosaic for band {band}: {path} has no 2-D image HDU")
    header = hdu.header
    where = f"mosaic {path} (band {band}, HDU {index})"
    try:
        w = _celestial_wcs(header, where)
    except BadValueError:
        hdul.close()
        raise
    shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    m = Mosaic(band=band, path=path, wcs=w, shape=shape, unit=str(header.get("BUNIT", "")).strip(),
               hdu_index=index, header=header.copy(),
               primary_header=hdul[0].header.copy() if index else None)
    weight_index = None
    for i, h in enumerate(hdul):
        if (i != index and h.is_image and h.name.upper() in _WEIGHT_NAMES
                and (h.header.get("NAXIS2"), h.header.get("NAXIS1")) == shape):
            weight_index = i
            break
    compressed_file = path.name.lower().endswith((".gz", ".bz2", ".zip"))
    targets = [m]
    indices = [index] + ([weight_index] if weight_index is not None else [])
    if weight_index is not None:
        m.weight = Mosaic(band=f"{band} weight", path=path, wcs=w, shape=shape, hdu_index=weight_index)
        m.weight_kind, m.weight_from, m.weight_path = "weight", "extension", path
        targets.append(m.weight)

    def mappable(h) -> bool:
        return (not compressed_file and not isinstance(h, fits.CompImageHDU)
                and isinstance(h, (fits.PrimaryHDU, fits.ImageHDU)) and h.header.get("BITPIX") in _BITPIX)

    maps = [mappable(hdul[i]) for i in indices]
    if any(maps):
        fh = open(path, "rb")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        m._mm, m._fh = mm, fh  # the science mosaic owns the mapping; a weight map shares it
        for target, i, ok in zip(targets, indices, maps):
            if not ok:
                continue
            hh = hdul[i].header
            target.bscale = float(hh.get("BSCALE", 1.0))
            target.bzero = float(hh.get("BZERO", 0.0))
            target.blank = int(hh["BLANK"]) if "BLANK" in hh and hh["BITPIX"] > 0 else None
            offset = int(hdul[i].fileinfo()["datLoc"])
            dtype = np.dtype(_BITPIX[hh["BITPIX"]])
            if offset + dtype.itemsize * shape[0] * shape[1] > len(mm):
                hdul.close()
                m.close()
                raise BadValueError(f"{where}: file is truncated (data block ends beyond the file)")
            target._data = np.ndarray(shape=shape, dtype=dtype, buffer=mm, offset=offset)
            target._offset = offset
            if target is not m:
                target._shared_mm = mm
    hdul.close()
    if not all(maps):
        # Compressed data cannot be mapped: read through astropy (which applies the scaling itself);
        # a compressed weight map small enough is decompressed once, a science mosaic box by box.
        plain = fits.open(path, memmap=False)
        m._hdul = plain
        for target, i, ok in zip(targets, indices, maps):
            if ok:
                continue
            if target is not m and shape[0] * shape[1] * 4 <= _SMALL_WEIGHT_BYTES:
                target._data = np.asarray(plain[i].data, dtype="f4")
            else:
                target._section = plain[i].section
    return m


def _same_grid(ref: Mosaic, other: Mosaic) -> tuple[int, int] | None:
    """Integer pixel offset ``(dx, dy)`` from ``ref``'s grid to ``other``'s, or None if the grids differ."""
    H, W = ref.shape
    gx, gy = np.meshgrid(np.linspace(0, W - 1, 5), np.linspace(0, H - 1, 5))
    ra, dec = ref.wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    ox, oy = other.wcs.all_world2pix(ra, dec, 0, quiet=True)
    dx, dy = ox - gx.ravel(), oy - gy.ravel()
    if not (np.all(np.isfinite(dx)) and np.all(np.isfinite(dy))):
        return None
    rx, ry = np.round(dx[0]), np.round(dy[0])
    if np.max(np.abs(dx - rx)) < 1e-3 and np.max(np.abs(dy - ry)) < 1e-3:
        return int(rx), int(ry)
    return None


def _shifted_wcs(w: WCS, x0: int, y0: int) -> WCS:
    """WCS of the sub-image whose pixel (0, 0) is ``(x0, y0)`` of ``w`` (handles SIP)."""
    return w.slice((slice(int(y0), None), slice(int(x0), None)))


# --------------------------------------------------------------------------- the cutter


class CutoutResult(NamedTuple):
    """In-memory result of :func:`cut_stamps`.

    stamps : float32 ``(N, C, H, W)`` in the mosaics' own units (bad pixels set to 0).
    catalog : kept catalogue rows (all original columns, units, meta) in stamp order,
        plus ``galearn_row``, ``galearn_x``, ``galearn_y``.
    rejected : ``row``, ``id``, ``reason`` for every other input row.
    info : provenance (bands, pixel scale, resampling, grids, units).
    """

    stamps: np.ndarray
    catalog: Table
    rejected: Table
    info: dict


class _Cutter:
    """Geometry of every row (vectorised) and batched cutting in mosaic-row order.

    ``bands`` is one list of section mosaics per band. The stamp grid is the
    first section of the first band (its WCS, extended beyond its edges). For
    each band a row is cut from its *home* section: the first section that
    holds the whole stamp, else the one holding its centre; a stamp that no
    single section holds but the band's sections cover together is assembled
    (home first, then the other sections fill the pixels it lacks).
    """

    def __init__(self, catalog: Table, bands: list[list[Mosaic]], columns: dict, *, size: int,
                 select: str | None, max_bad_fraction: float, require_central_brightest: bool,
                 resample: str, segmap: Mosaic | None = None, random_state: int = 0) -> None:
        if not isinstance(size, (int, np.integer)) or size < 4:
            raise BadValueError(f"stamp size must be an integer >= 4 pixels, got {size!r}")
        if not 0 <= max_bad_fraction <= 1:
            raise BadValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        if resample not in _RESAMPLE:
            raise BadValueError(f"resample must be one of {_RESAMPLE}, got {resample!r}")
        bands = [b if isinstance(b, (list, tuple)) else [b] for b in bands]
        self.catalog = catalog
        self.sections = bands
        self.mosaics = [secs[0] for secs in bands]  # one per band: names, pixel scales
        self.columns = columns
        self.size = int(size)
        self.max_bad_fraction = float(max_bad_fraction)
        self.require_central_brightest = require_central_brightest
        self.resample = resample
        self.segmap = segmap
        self.random_state = random_state
        n = len(catalog)
        self.n = n
        self.reason = np.full(n, "", dtype=object)
        self.masked_fraction = np.zeros(n, dtype="f4")
        ra = column_values(catalog, columns["ra"])
        dec = column_values(catalog, columns["dec"])
        self.ra, self.dec = self._degrees(ra, "ra"), self._degrees(dec, "dec")
        finite = np.isfinite(self.ra) & np.isfinite(self.dec) & (np.abs(self.dec) <= 90)
        self.reason[~finite] = "non-finite ra/dec"
        if select:
            passed = evaluate_selection(catalog, select)
            self.reason[(self.reason == "") & ~passed] = f"cut: {select}"
        self.n_selected = int(np.sum(self.reason == ""))
        S = self.size
        ref = bands[0][0]
        x = np.full(n, np.nan)
        y = np.full(n, np.nan)
        ok = self.reason == ""
        if ok.any():
            x[ok], y[ok] = ref.wcs.all_world2pix(self.ra[ok], self.dec[ok], 0, quiet=True)
        self.x, self.y = x, y
        with np.errstate(invalid="ignore"):
            ix = np.floor(x + 0.5)
            iy = np.floor(y + 0.5)
        ix = np.where(np.isfinite(ix), ix, -10**9).astype(np.int64)
        iy = np.where(np.isfinite(iy), iy, -10**9).astype(np.int64)
        self.x0, self.y0 = ix - S // 2, iy - S // 2
        nb = len(bands)
        self.home = np.full((nb, n), -1, dtype=np.int64)
        self.assembled = np.zeros((nb, n), dtype=bool)
        self.grids: list[dict] = []
        self.offsets: list[list[tuple[int, int] | None]] = []
        for b, secs in enumerate(bands):
            band = secs[0].band
            todo = self.reason == ""
            on_any = np.zeros(n, dtype=bool)
            touch = np.zeros((len(secs), n), dtype=bool)
            offs: list[tuple[int, int] | None] = []
            sec_info = []
            for s, m in enumerate(secs):
                off = (0, 0) if (b == 0 and s == 0) else _same_grid(ref, m)
                offs.append(off)
                Hb, Wb = m.shape
                on = np.zeros(n, dtype=bool)
                full = np.zeros(n, dtype=bool)
                if off is not None:
                    cx, cy = ix + off[0], iy + off[1]
                    on = (cx >= 0) & (cx < Wb) & (cy >= 0) & (cy < Hb)
                    bx0, by0 = self.x0 + off[0], self.y0 + off[1]
                    full = (bx0 >= 0) & (by0 >= 0) & (bx0 + S <= Wb) & (by0 + S <= Hb)
                    touch[s] = (bx0 < Wb) & (by0 < Hb) & (bx0 + S > 0) & (by0 + S > 0)
                    sec_info.append({"file": _name(m), "grid": "reference" if b == s == 0 else "same",
                                     "offset": list(off)})
                else:
                    sec_info.append({"file": _name(m), "grid": "resampled", "method": self._method_name()})
                    if todo.any():
                        bx, by = m.wcs.all_world2pix(self.ra[todo], self.dec[todo], 0, quiet=True)
                        with np.errstate(invalid="ignore"):
                            on[todo] = (np.floor(bx + 0.5) >= 0) & (np.floor(bx + 0.5) < Wb) & \
                                (np.floor(by + 0.5) >= 0) & (np.floor(by + 0.5) < Hb)
                        box = self._footprint(m, np.flatnonzero(todo), margin=0)
                        full[todo] = (box[0] >= 0) & (box[1] >= 0) & (box[2] <= Wb) & (box[3] <= Hb)
                        touch[s, todo] = (box[0] < Wb) & (box[1] < Hb) & (box[2] > 0) & (box[3] > 0)
                on &= todo
                first_full = (self.home[b] < 0) & full & todo
                self.home[b, first_full] = s
                on_any |= on
            self.offsets.append(offs)
            self.grids.append({"band": band, "grid": sec_info[0]["grid"], **{k: v for k, v in sec_info[0].items()
                                                                           if k in ("offset", "method")}}
                              if len(secs) == 1 else {"band": band, "grid": "sections", "sections": sec_info})
            missing = "centre off mosaic" if b == 0 else f"band missing: {band} (off its mosaic)"
            self.reason[todo & ~on_any] = missing
            # No single section holds the stamp: assemble it from the sections that cover it together.
            partial = np.flatnonzero((self.reason == "") & (self.home[b] < 0))
            if len(partial):
                if len(secs) > 1:
                    covered, centre_sec = self._union_covers(b, partial)
                    self.home[b, partial] = centre_sec
                    self.assembled[b, partial[covered]] = True
                    bad = partial[~covered]
                else:
                    bad = partial
                self.reason[bad] = f"stamp partly off mosaic ({band})"
        self.candidates = np.flatnonzero(self.reason == "")
        # Process in mosaic-row order: neighbouring stamps share pages of the file.
        order = np.lexsort((self.x0[self.candidates], self.y0[self.candidates]))
        self.candidates = self.candidates[order]
        self.segmap_offset = _same_grid(ref, segmap) if segmap is not None else None

    def _stamp_world(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RA, Dec (deg) of every stamp pixel centre of ``rows``: arrays ``(n, S, S)``."""
        S = self.size
        yy, xx = np.mgrid[0:S, 0:S]
        px = (self.x0[rows][:, None, None] + xx[None]).ravel()
        py = (self.y0[rows][:, None, None] + yy[None]).ravel()
        ra, dec = self.mosaics[0].wcs.all_pix2world(px, py, 0)
        return ra.reshape(len(rows), S, S), dec.reshape(len(rows), S, S)

    def _union_covers(self, b: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For stamps no single section of band ``b`` holds: (every pixel centre on some section,
        index of the section holding the catalogue position)."""
        secs = self.sections[b]
        ra, dec = self._stamp_world(rows)
        S = self.size
        cov = np.zeros(ra.shape, dtype=bool)
        centre = np.full(len(rows), -1, dtype=np.int64)
        for s, m in enumerate(secs):
            Hb, Wb = m.shape
            bx, by = m.wcs.all_world2pix(ra.ravel(), dec.ravel(), 0, quiet=True)
            with np.errstate(invalid="ignore"):
                ibx, iby = np.floor(bx + 0.5), np.floor(by + 0.5)
                inside = ((ibx >= 0) & (ibx < Wb) & (iby >= 0) & (iby < Hb)).reshape(ra.shape)
            cov |= inside
            hit = (centre < 0) & inside[:, S // 2, S // 2]
            centre[hit] = s
        return cov.all(axis=(1, 2)) & (centre >= 0), np.maximum(centre, 0)

    # Sent to Dask workers (galearn.compute): the open mosaics and the catalogue stay behind; a worker
    # reopens the files once (worker_cached) from the arguments the driver opened them with.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if "_reopen" not in state:
            raise BadValueError("this cutter was made from in-memory images and cannot be sent to workers")
        for key in ("catalog", "sections", "mosaics", "segmap"):
            state[key] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        args = state["_reopen"]
        key = ("cutter-inputs", repr(args)) + tuple(file_key(p) for ps in args["images"].values() for p in ps)

        def build():
            sections = _open_all(args["images"], args["weights"], args["rms"], zeropoints=args["zeropoints"],
                                 calibrate=args["calibrate"])
            return sections, _open_segmap(args["segmap"])

        sections, seg = worker_cached(key, build)
        self.sections, self.mosaics, self.segmap = sections, [secs[0] for secs in sections], seg

    def _degrees(self, values: np.ndarray, role: str) -> np.ndarray:
        """Column values in degrees (columns with an angle unit are converted; bare numbers are degrees)."""
        import astropy.units as u

        unit = getattr(self.catalog[self.columns[role]], "unit", None)
        values = np.asarray(values, dtype="f8")
        if unit is None or unit == u.dimensionless_unscaled:
            return values
        try:
            return (values * u.Unit(unit)).to_value(u.deg)
        except (u.UnitConversionError, ValueError, TypeError) as exc:
            raise BadValueError(
                f"column {self.columns[role]!r} ({role}) has unit {unit}, not an angle") from exc

    def _method_name(self) -> str:
        if self.resample == "adaptive":
            return "reproject.reproject_adaptive(conserve_flux=True, kernel='gaussian', boundary_mode='strict')"
        return "reproject.reproject_exact * pixel-area ratio"

    def _footprint(self, m: Mosaic, rows: np.ndarray, margin: int) -> tuple[np.ndarray, ...]:
        """Bounding box ``(x_min, y_min, x_max, y_max)`` (exclusive max) in ``m``'s pixels of each stamp."""
        S = self.size
        ref = self.mosaics[0]
        cx = np.array([-0.5, S - 0.5, -0.5, S - 0.5])
        cy = np.array([-0.5, -0.5, S - 0.5, S - 0.5])
        px = (self.x0[rows][:, None] + cx[None, :]).ravel()
        py = (self.y0[rows][:, None] + cy[None, :]).ravel()
        ra, dec = ref.wcs.all_pix2world(px, py, 0)
        bx, by = m.wcs.all_world2pix(ra, dec, 0, quiet=True)
        bx, by = bx.reshape(-1, 4), by.reshape(-1, 4)
        # Positions that do not project (NaN) get an empty box far outside every mosaic.
        lo_x = np.nan_to_num(np.floor(bx.min(axis=1) + 0.5), nan=-1e12)
        lo_y = np.nan_to_num(np.floor(by.min(axis=1) + 0.5), nan=-1e12)
        hi_x = np.nan_to_num(np.floor(bx.max(axis=1) + 0.5), nan=-1e12)
        hi_y = np.nan_to_num(np.floor(by.max(axis=1) + 0.5), nan=-1e12)
        xmin = lo_x.astype(np.int64) - margin
        ymin = lo_y.astype(np.int64) - margin
        xmax = hi_x.astype(np.int64) + 1 + margin
        ymax = hi_y.astype(np.int64) + 1 + margin
        return xmin, ymin, xmax, ymax

    def _read_section(self, b: int, s: int, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Calibrated stamps of ``rows`` from section ``s`` of band ``b`` (NaN where it has no data)."""
        S = self.size
        m, off = self.sections[b][s], self.offsets[b][s]
        if off is not None:
            ys, xs = self.y0[rows] + off[1], self.x0[rows] + off[0]
            out = m.gather(ys, xs, S, out=out)
            if m.weight is not None:  # zero weight (or a non-positive RMS) = no data
                wt = m.weight.gather(ys, xs, S)
                out[~(wt > 0)] = np.nan
        else:
            res = self._resample(m, rows)
            if out is None:
                out = res
            else:
                out[...] = res
        if m.factor != 1.0:
            out *= np.float32(m.factor)
        return out

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Physical stamps ``(n, C, S, S)`` of ``rows`` (NaN outside data), in the first band's grid.

        Grouped by file: one gather per (band, section) for the rows it is home to,
        then one per other section for the assembled stamps.
        """
        S = self.size
        out = np.empty((len(rows), len(self.sections), S, S), dtype="f4")
        for b, secs in enumerate(self.sections):
            dest = out[:, b]
            home = self.home[b, rows]
            for s in range(len(secs)):
                sel = np.flatnonzero(home == s)
                if len(sel) == len(rows):
                    self._read_section(b, s, rows, out=dest)
                elif len(sel):
                    dest[sel] = self._read_section(b, s, rows[sel])
            if len(secs) > 1:
                part = np.flatnonzero(self.assembled[b, rows])
                for s in range(len(secs)):
                    sub = part[home[part] != s]
                    if len(sub) == 0:
                        continue
                    piece = self._read_section(b, s, rows[sub])
                    cur = dest[sub]
                    fill = ~(np.isfinite(cur) & (cur != 0)) & np.isfinite(piece) & (piece != 0)
                    cur[fill] = piece[fill]
                    dest[sub] = cur
            for m in secs:
                m.release()
        return out

    def _resample(self, m: Mosaic, rows: np.ndarray) -> np.ndarray:
        from reproject import reproject_adaptive, reproject_exact

        S = self.size
        ref = self.mosaics[0]
        Hb, Wb = m.shape
        xmin, ymin, xmax, ymax = self._footprint(m, rows, margin=4)
        xmin, ymin = np.maximum(xmin, 0), np.maximum(ymin, 0)
        xmax, ymax = np.minimum(xmax, Wb), np.minimum(ymax, Hb)
        area_ratio = ref.pixel_area_arcsec2 / m.pixel_area_arcsec2
        out = np.full((len(rows), S, S), np.nan, dtype="f4")
        for i, r in enumerate(rows):  # one loop over galaxies for this band
            if i and i % _RELEASE_EVERY == 0:
                m.release(int(ymin[i - _RELEASE_EVERY : i].min()), int(ymax[i - _RELEASE_EVERY : i].max()))
            if xmax[i] <= xmin[i] or ymax[i] <= ymin[i]:
                continue  # the stamp does not touch this file
            box = (ymin[i : i + 1], xmin[i : i + 1], int(ymax[i] - ymin[i]), int(xmax[i] - xmin[i]))
            data = m.gather(*box)[0]
            if m.weight is not None:
                data[~(m.weight.gather(*box)[0] > 0)] = np.nan
            w_in = _shifted_wcs(m.wcs, xmin[i], ymin[i])
            w_out = _shifted_wcs(ref.wcs, self.x0[r], self.y0[r])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                if self.resample == "adaptive":
                    res = reproject_adaptive((data, w_in), w_out, shape_out=(S, S), conserve_flux=True,
                                             kernel="gaussian", boundary_mode="strict", return_footprint=False,
                                             roundtrip_coords=False)  # TAN<->TAN is invertible; 1.4x faster
                else:
                    res = reproject_exact((data, w_in), w_out, shape_out=(S, S), return_footprint=False)
                    res = res * area_ratio
            out[i] = res
        return out

    def check(self, stamps: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        """Reasons (object array, '' = kept) for a batch of physical stamps; sets bad pixels to 0."""
        S = self.size
        n = len(stamps)
        reasons = np.full(n, "", dtype=object)
        bad = ~np.isfinite(stamps) | (stamps == 0)
        frac = bad.mean(axis=(2, 3))  # (n, C)
        c = S // 2
        centre_bad = bad[:, :, c - 1 : c + 2, c - 1 : c + 2].all(axis=(2, 3))
        for b in range(stamps.shape[1] - 1, -1, -1):  # the first band's reason wins
            band = self.mosaics[b].band
            reasons[frac[:, b] > self.max_bad_fraction] = f"too many bad pixels ({band})"
        for b in range(stamps.shape[1] - 1, -1, -1):
            band = self.mosaics[b].band
            reasons[(frac[:, b] >= 1) | centre_bad[:, b]] = f"band missing: {band}"
        stamps[bad] = 0.0
        if self.require_central_brightest:
            reasons[(reasons == "") & ~_central_is_brightest(stamps, noise)] = "central source not the brightest"
        return reasons

    def segments(self, rows: np.ndarray) -> np.ndarray:
        """Segmentation-map stamps ``(n, S, S)`` (int64, 0 = sky / off the map) on the stamp grid:
        sliced when the map is on the first band's grid, nearest segmentation pixel otherwise."""
        S = self.size
        seg = self.segmap
        H, W = seg.shape
        if self.segmap_offset is not None:
            off = self.segmap_offset
            vals = seg.gather(self.y0[rows] + off[1], self.x0[rows] + off[0], S)
        else:
            ra, dec = self._stamp_world(rows)
            sx, sy = seg.wcs.all_world2pix(ra.ravel(), dec.ravel(), 0, quiet=True)
            with np.errstate(invalid="ignore"):
                fx, fy = np.floor(sx + 0.5).reshape(ra.shape), np.floor(sy + 0.5).reshape(ra.shape)
            ok = np.isfinite(fx) & np.isfinite(fy)
            fx, fy = np.where(ok, fx, 0).astype(np.int64), np.where(ok, fy, 0).astype(np.int64)
            bx0, by0 = fx.min(axis=(1, 2)), fy.min(axis=(1, 2))
            side = int(max((fx.max(axis=(1, 2)) - bx0).max(), (fy.max(axis=(1, 2)) - by0).max())) + 1
            boxes = seg.gather(by0, bx0, side)  # one box per stamp (NaN off the map), then nearest pixels
            vals = boxes[np.arange(len(rows))[:, None, None], fy - by0[:, None, None], fx - bx0[:, None, None]]
            vals[~ok] = 0
        seg.release()
        return np.where(np.isfinite(vals), vals, 0).astype(np.int64)

    def mask_neighbours(self, stamps: np.ndarray, rows: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Replace other sources' segmentation pixels by seeded sky noise, in place.

        The central source is every segment present in the central 3x3 pixels
        (the catalogue position's pixel and its neighbours); every other
        non-zero segment is a neighbour. Neighbour pixels of band ``b`` become
        draws of ``N(0, noise[b])`` (the band's measured pixel noise, nJy), from a
        generator seeded with ``(random_state, first row of the batch)``.
        Returns the fraction of stamp pixels replaced, per stamp.
        """
        S = self.size
        seg = self.segments(rows)
        c = S // 2
        own = seg[:, c - 1 : c + 2, c - 1 : c + 2].reshape(len(rows), 9)
        mask = (seg != 0) & ~(seg[:, :, :, None] == own[:, None, None, :]).any(axis=-1)
        n_masked = int(mask.sum())
        if n_masked:
            rng = np.random.default_rng([int(self.random_state), 7, int(rows[0]) if len(rows) else 0])
            draws = rng.standard_normal((stamps.shape[1], n_masked)).astype("f4")
            for b in range(stamps.shape[1]):
                stamps[:, b][mask] = draws[b] * np.float32(noise[b])
        frac = mask.mean(axis=(1, 2)).astype("f4")
        self.masked_fraction[rows] = frac
        return frac


def _central_is_brightest(stamps: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
    """True where the brightest smoothed peak of the stamp lies near its centre.

    Detection image: sum over bands of stamp / noise (3x3 box smoothed). The
    peak within ``max(2, size/16)`` pixels of the centre must be at least the
    maximum outside that radius.
    """
    from scipy.ndimage import uniform_filter

    n, C, S, _ = stamps.shape
    scale = np.ones(C) if noise is None else np.where(np.asarray(noise) > 0, noise, 1.0)
    det = (stamps / scale[None, :, None, None]).sum(axis=1)
    det = uniform_filter(det, size=(1, 3, 3), mode="nearest")
    yy, xx = np.mgrid[0:S, 0:S]
    r = np.hypot(xx - S // 2, yy - S // 2)
    radius = max(2.0, S / 16)
    inner = r <= radius
    return det[:, inner].max(axis=1) >= det[:, ~inner].max(axis=1)


# --------------------------------------------------------------------------- helpers


def _check_bands(images: dict) -> list[str]:
    if not isinstance(images, dict) or not images:
        raise BadValueError("no mosaics given: pass one --image BAND=PATH per band")
    bands = [str(b) for b in images]
    for band in bands:
        try:
            band_wavelength_nm(band)
        except BadValueError as exc:
            raise BadValueError(f"--image {band}=...: {exc}") from exc
    return bands


def _ids(catalog: Table, columns: dict, rows: np.ndarray) -> np.ndarray:
    col = columns.get("id")
    if col is None:
        return np.array([str(r) for r in rows], dtype=str)
    values = catalog[col]
    return np.array([str(values[r]) for r in rows], dtype=str) if len(rows) else np.zeros(0, dtype=str)


def _rejected_table(catalog: Table, columns: dict, reason: np.ndarray) -> Table:
    rows = np.flatnonzero(reason != "")
    if len(rows) == 0:
        return empty_rejected()
    return Table({"row": rows.astype(np.int64), "id": _ids(catalog, columns, rows),
                  "reason": np.array([str(r) for r in reason[rows]], dtype=str)})


def _kept_table(catalog: Table, rows: np.ndarray, cutter: _Cutter) -> Table:
    kept = catalog[rows]
    S = cutter.size
    kept["galearn_row"] = rows.astype(np.int64)
    kept["galearn_x"] = cutter.x[rows] - cutter.x0[rows]
    kept["galearn_y"] = cutter.y[rows] - cutter.y0[rows]
    kept["galearn_x"].description = f"x of the catalogue position in the stamp (pixels, 0-based; centre pixel {S // 2})"
    kept["galearn_y"].description = f"y of the catalogue position in the stamp (pixels, 0-based; centre pixel {S // 2})"
    kept["galearn_row"].description = "row of the input catalogue"
    for b, secs in enumerate(cutter.sections):
        if len(secs) > 1:
            col = f"galearn_file_{secs[0].band}"
            names = np.array([_name(m) for m in secs])
            kept[col] = names[cutter.home[b, rows]]
            kept[f"galearn_assembled_{secs[0].band}"] = cutter.assembled[b, rows]
            kept[col].description = f"{secs[0].band} file holding the stamp (its centre when assembled)"
            kept[f"galearn_assembled_{secs[0].band}"].description = \
                f"{secs[0].band} stamp assembled from two or more files"
    if cutter.segmap is not None:
        kept["galearn_masked_fraction"] = cutter.masked_fraction[rows]
        kept["galearn_masked_fraction"].description = \
            "fraction of stamp pixels of other sources (segmentation map) replaced by sky noise"
    return kept


def _name(m: Mosaic) -> str:
    return m.path.name if m.path is not None else f"{m.band} (in memory)"


def open_band_files(files: dict, *, zeropoints: dict | None = None, calibrate: bool = True) -> list[list[Mosaic]]:
    """Open every band's sections with their weight maps and calibration.

    Parameters
    ----------
    files : dict
        ``band -> list of SectionFiles`` (:func:`galearn.survey.inputs.resolve_band_files`).
    zeropoints : dict, optional
        ``band -> AB zero point`` of one pixel unit, overriding the headers.
    calibrate : bool
        Convert to nJy per pixel (default); False keeps every band in its own units.

    Raises
    ------
    BadValueError
        A weight map whose shape differs from its image, or (``calibrate``) a
        band without calibration.
    """
    zeropoints = dict(zeropoints or {})
    for band in zeropoints:
        if band not in files:
            raise BadValueError(f"--zeropoint {band}=...: no --image for band {band}")
    opened: list[Mosaic] = []
    bands: list[list[Mosaic]] = []
    try:
        for band, secs in files.items():
            group = []
            for f in secs:
                m = open_mosaic(f.science, str(band))
                opened.append(m)
                group.append(m)
                if f.weight is not None and not (m.weight is not None and f.weight_from == "companion"):
                    _attach_weight(m, f.weight, f.weight_kind, f.weight_from)
                if calibrate:
                    m.calibration = _calibration_of(m, zeropoints.get(band))
                    m.factor = float(m.calibration.factor)
            bands.append(group)
    except Exception:
        for m in opened:
            m.close()
        raise
    return bands


def _attach_weight(m: Mosaic, path: Path, kind: str, source: str) -> None:
    """Use the image in ``path`` as ``m``'s weight (inverse variance) or RMS map."""
    w = open_mosaic(path, f"{m.band} {kind}")
    if w.weight is not None:  # its own extension search is irrelevant here
        w.weight.close()
        w.weight = None
    if w.shape != m.shape:
        w.close()
        raise BadValueError(f"{source} {m.band}={path}: shape {w.shape[1]}x{w.shape[0]} differs from "
                            f"{_name(m)} ({m.shape[1]}x{m.shape[0]}); a weight map must be on its image's grid")
    if m.weight is not None:
        m.weight.close()
    m.weight, m.weight_kind, m.weight_from, m.weight_path = w, kind, source, Path(path)


def _calibration_of(m: Mosaic, zeropoint) -> Any:
    from .calibration import resolve_calibration

    if m.header is None and zeropoint is None:
        raise BadValueError(f"band {m.band}: an in-memory image has no header to calibrate from; "
                            f"give the AB zero point with --zeropoint {m.band}=ZP_AB (zeropoints=...)")
    return resolve_calibration([m.header, m.primary_header], m.band, pixel_area_arcsec2=m.pixel_area_arcsec2,
                               zeropoint=zeropoint, where=str(m.path) if m.path else "")


def _open_all(images: dict, weights: dict | None = None, rms: dict | None = None, *,
              zeropoints: dict | None = None, calibrate: bool = True) -> list[list[Mosaic]]:
    from .inputs import resolve_band_files

    return open_band_files(resolve_band_files(images, weights, rms), zeropoints=zeropoints, calibrate=calibrate)


def _close_all(bands: list[list[Mosaic]]) -> None:
    for secs in bands:
        for m in secs:
            m.close()


def _info(cutter: _Cutter) -> dict:
    mosaics = cutter.mosaics
    scales = mosaics[0].pixel_scales_arcsec
    calibrated = all(m.calibration is not None for secs in cutter.sections for m in secs)
    return {
        "bands": [m.band for m in mosaics],
        "pixel_scale_arcsec": float(np.sqrt(scales[0] * scales[1])),
        "pixel_scales_xy_arcsec": [float(s) for s in scales],
        "stamp_size": cutter.size,
        "centring": f"catalogue position in stamp pixel ({cutter.size // 2}, {cutter.size // 2}) "
                    "(0-based, within 0.5 pixel; integer-pixel cut, no sub-pixel shift)",
        "grids": cutter.grids,
        "resample": cutter._method_name() if any(
            g["grid"] == "resampled" or any(s["grid"] == "resampled" for s in g.get("sections", []))
            for g in cutter.grids) else "none",
        "files": {secs[0].band: [_name(m) for m in secs] for secs in cutter.sections},
        "units": {m.band: m.unit for m in mosaics},
        "physical_unit": "nJy per pixel" if calibrated else "each mosaic's own unit (not calibrated)",
        "calibration": {secs[0].band: [dict(m.calibration.to_dict(), file=_name(m)) if m.calibration is not None
                                       else None for m in secs] for secs in cutter.sections},
        "memmap": {m.band: m.memmapped for m in mosaics},
        "bad_pixels": "NaN, exactly 0, or weight <= 0 (RMS <= 0) in the weight / RMS map; set to 0 in kept stamps",
        "weight_maps": {secs[0].band: [_weight_record(m) for m in secs] for secs in cutter.sections},
        "segmap": None if cutter.segmap is None else {
            "file": _name(cutter.segmap), "grid": "same" if cutter.segmap_offset is not None else "nearest pixel",
            "fill": "N(0, band pixel noise) draws, seeded (random_state, first row of the batch)",
            "central_source": "segments in the central 3x3 pixels"},
    }


def _weight_record(m: Mosaic) -> dict | None:
    if m.weight is None:
        return None
    where = f"{m.weight_path.name}[{m.weight.hdu_index}]" if m.weight_path is not None else "?"
    return {"file": _name(m), "weight": where, "kind": m.weight_kind, "from": m.weight_from}


def describe_inputs(info: dict) -> list[str]:
    """One line per band: its files, the weight maps used (and how they were found) and the calibration."""
    lines = []
    for band in info["bands"]:
        files = info["files"][band]
        groups: dict[tuple, list[str]] = {}
        for w in info["weight_maps"][band]:
            key = ("none", "") if w is None else (w["kind"], w["from"])
            groups.setdefault(key, []).append("" if w is None else w["weight"])
        weight = "; ".join("no weight map" if kind == "none" else f"{kind} map ({how}): {', '.join(names)}"
                           for (kind, how), names in groups.items())
        cals = []
        for c in info["calibration"][band]:
            text = "not calibrated (mosaic units)" if c is None else (
                f"x{c['factor_to_njy']:.5g} -> nJy/pixel (AB zero point {c['zeropoint_ab']:.3f} "
                f"from {c['source']})")
            if text not in cals:
                cals.append(text)
        lines.append(f"{band}: {len(files)} file{'s' if len(files) > 1 else ''} ({', '.join(files)}); "
                     f"{weight}; {' / '.join(cals)}")
    return lines


def _batches(idx: np.ndarray, batch_size: int):
    for start in range(0, len(idx), batch_size):
        yield idx[start : start + batch_size]


def _progress(total: int, progress: bool | None, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=None if progress is None else not progress, desc=desc, unit="stamp")


# --------------------------------------------------------------------------- public API


def cut_stamps(
    catalog: Table | str | os.PathLike,
    images: dict[str, Any],
    *,
    size: int = 64,
    preset: str | None = None,
    columns: dict | None = None,
    select: str | None = None,
    max_bad_fraction: float = 0.05,
    require_central_brightest: bool = False,
    resample: str = "adaptive",
    batch_size: int = 1024,
    progress: bool | None = False,
    weights: dict | None = None,
    rms: dict | None = None,
    zeropoints: dict | None = None,
    calibrate: bool = True,
    segmap: Any = None,
    random_state: int = 0,
) -> CutoutResult:
    """Cut multi-band stamps around catalogue positions, in memory.

    Parameters
    ----------
    catalog : Table or path-like
        Catalogue with RA/Dec in degrees (columns named by ``preset`` /
        ``columns``).
    images : dict
        ``band -> mosaic`` in band order; a mosaic is a FITS path, a glob or a
        list of paths (sections / tiles of one band), an ``(array, WCS)`` pair
        or an image HDU. The first band sets the stamp grid.
    size : int
        Stamp side in pixels of the first band (default 64).
    preset, columns : str, dict
        Column roles (see :func:`galearn.survey.resolve_columns`).
    select : str, optional
        Selection expression over columns (see :func:`evaluate_selection`).
    max_bad_fraction : float
        Largest fraction of NaN / zero pixels allowed per band.
    require_central_brightest : bool
        Reject stamps whose brightest source is not the central one.
    resample : {"adaptive", "exact"}
        Flux-conserving method for bands on another pixel grid.
    batch_size : int
        Stamps cut per batch.
    progress : bool or None
        tqdm progress bar (None: only on a terminal).
    weights, rms : dict, optional
        ``band -> path`` (or list, one per section) of inverse-variance / RMS
        maps; without them ``_wht`` / ``_rms`` companions are found by name.
    zeropoints : dict, optional
        ``band -> AB magnitude of one pixel unit``, overriding the headers.
    calibrate : bool
        Stamps in nJy per pixel (default, from the headers or ``zeropoints``;
        a band without calibration is refused); False keeps the mosaics' units.
    segmap : path-like, optional
        Segmentation map: other sources' pixels are replaced by seeded sky noise.
    random_state : int
        Seed of the noise measurement and the neighbour-mask noise.

    Returns
    -------
    CutoutResult
        ``(stamps (N, C, H, W) float32 physical, kept catalogue, rejected, info)``.
        Stamps are in order of the first mosaic's row ``y`` (then ``x``); the
        input row of each stamp is ``catalog["galearn_row"]``.

    Raises
    ------
    MissingInputError, BadValueError
        Missing files, no celestial WCS, missing columns, bad expression, no calibration.
    """
    source = str(catalog) if not isinstance(catalog, Table) else "catalogue"
    table = catalog if isinstance(catalog, Table) else read_catalog(catalog)
    bands = _check_bands(images)
    cols = resolve_columns(table, preset, columns, source=source)
    sections = _open_all(images, weights, rms, zeropoints=zeropoints, calibrate=calibrate)
    seg = _open_segmap(segmap)
    try:
        cutter = _Cutter(table, sections, cols, size=size, select=select, max_bad_fraction=max_bad_fraction,
                         require_central_brightest=require_central_brightest, resample=resample, segmap=seg,
                         random_state=random_state)
        need_noise = require_central_brightest or seg is not None
        noise = _band_noise(cutter, random_state) if need_noise else None
        chunks, kept_rows = [], []
        bar = _progress(len(cutter.candidates), progress, "cutouts")
        for rows in _batches(cutter.candidates, batch_size):
            stamps = cutter.read(rows)
            reasons = cutter.check(stamps, noise)
            good = reasons == ""
            cutter.reason[rows] = reasons
            if seg is not None and good.any():
                kept = stamps[good]
                cutter.mask_neighbours(kept, rows[good], noise)
                chunks.append(kept)
            else:
                chunks.append(stamps[good])
            kept_rows.append(rows[good])
            bar.update(len(rows))
        bar.close()
        info = _info(cutter)
    finally:
        _close_all(sections)
        if seg is not None:
            seg.close()
    S = cutter.size
    stamps = np.concatenate(chunks) if chunks else np.zeros((0, len(bands), S, S), dtype="f4")
    rows = np.concatenate(kept_rows) if kept_rows else np.zeros(0, dtype=np.int64)
    return CutoutResult(stamps, _kept_table(table, rows, cutter), _rejected_table(table, cols, cutter.reason), info)


def _open_segmap(segmap: Any) -> Mosaic | None:
    if segmap is None or segmap == "":
        return None
    m = open_mosaic(segmap, "segmap")
    if m.weight is not None:
        m.weight.close()
        m.weight = None
    return m


def _band_noise(cutter: _Cutter, random_state: Any) -> np.ndarray:
    """Per-band pixel noise sigma (physical units) on the stamp grid: measured on each band's first
    file, times its calibration factor and (resampled bands) the pixel-area ratio."""
    ref = cutter.mosaics[0]
    rng = np.random.default_rng(random_state) if not isinstance(random_state, np.random.Generator) else random_state
    return np.array([m.noise_sigma(rng) * m.factor * ref.pixel_area_arcsec2 / m.pixel_area_arcsec2
                     for m in cutter.mosaics])


def _input_record(path: Path, role: str) -> dict:
    st = path.stat()
    rec = {"role": role, "path": str(path), "name": path.name, "size_bytes": st.st_size}
    if st.st_size < HASH_LIMIT_BYTES:
        rec["sha256"] = file_sha256(path)
    else:
        rec["sha256"] = None
        rec["mtime"] = st.st_mtime
        rec["note"] = f"not hashed: larger than {HASH_LIMIT_BYTES / 1024**3:.0f} GiB (identified by size + mtime)"
    return rec


def _fit_stretch(cutter: _Cutter, cfg: CutoutConfig) -> tuple[Any, dict]:
    """Asinh stretch: noise from the mosaics, bright level from a seeded subsample of stamps."""
    rng = np.random.default_rng(cfg.random_state)
    mosaics = cutter.mosaics
    # A resampled band carries flux per first-band pixel: scale by the pixel-area ratio.
    noise = _band_noise(cutter, rng)
    ratio = np.array([mosaics[0].pixel_area_arcsec2 / m.pixel_area_arcsec2 for m in mosaics])
    cand = cutter.candidates
    pick = np.sort(rng.choice(len(cand), size=min(len(cand), 1000), replace=False)) if len(cand) else cand
    rows = cand[pick]
    maximum = np.full(len(mosaics), np.nan)
    ref = mosaics[0]
    for b, secs in enumerate(cutter.sections):
        if len(rows) == 0:
            break
        home = cutter.home[b, rows]
        values = []
        for s, m in enumerate(secs):
            sub = rows[home == s]
            if len(sub) == 0:
                continue
            off = cutter.offsets[b][s]
            if off is not None:
                px = m.gather(cutter.y0[sub] + off[1], cutter.x0[sub] + off[0], cutter.size)
            else:  # native pixels of the same sky area (cheap; no resampling for the fit)
                side = max(4, int(np.ceil(cutter.size * ref.pixel_scales_arcsec.mean()
                                          / m.pixel_scales_arcsec.mean())))
                bx, by = m.wcs.all_world2pix(cutter.ra[sub], cutter.dec[sub], 0, quiet=True)
                px = m.gather(np.floor(by + 0.5).astype(np.int64) - side // 2,
                              np.floor(bx + 0.5).astype(np.int64) - side // 2, side) * ratio[b]
            m.release()
            values.append((px * np.float32(m.factor)).ravel())
        px = np.concatenate(values)
        good = px[np.isfinite(px) & (px != 0)]
        if good.size:
            maximum[b] = np.percentile(good, cfg.max_percentile)
    bad = ~np.isfinite(noise) | (noise <= 0)
    for b in np.flatnonzero(bad):  # noise-free images: a small fraction of the bright level
        noise[b] = 1e-3 * maximum[b] if np.isfinite(maximum[b]) and maximum[b] > 0 else 1.0
    maximum = np.where(np.isfinite(maximum), maximum, 10 * cfg.softening_sigmas * noise)
    stretch = AsinhStretch(softening=cfg.softening_sigmas * noise, maximum=maximum)
    params = stretch.to_dict()
    params.update({
        "noise_sigma": noise.tolist(),
        "noise_from": "mosaic (first file of each band): clipped MAD of a seeded random subsample of pixels "
                      "(row segments), times the calibration factor; resampled bands scaled by the pixel-area ratio",
        "softening_sigmas": cfg.softening_sigmas,
        "max_percentile": cfg.max_percentile,
        "maximum_from": f"{cfg.max_percentile} percentile of {len(rows)} random stamps",
        "random_state": cfg.random_state,
        "formula": "clip(asinh(x / softening) / asinh(maximum / softening), 0, 1) per band",
    })
    return stretch, params


def make_sample_from_mosaics(
    catalog_path: str | os.PathLike,
    images: dict[str, Any],
    workspace: Workspace,
    cfg: CutoutConfig,
    *,
    progress: bool | None = None,
    report: Any = None,
):
    """Cut stamps from the mosaics of every band and stream them into ``WS/sample.h5``.

    Parameters
    ----------
    catalog_path : path-like
        Catalogue (FITS, ECSV, CSV, Parquet) with RA/Dec in degrees.
    images : dict
        ``band -> FITS path, glob or list of paths`` (sections / tiles) in band
        order (first band = stamp grid).
    workspace : Workspace
    cfg : CutoutConfig
        Stamp size (pixels), column preset/overrides, selection, checks, stretch,
        weight / RMS maps, zero points, calibration, segmentation map.
    progress : bool or None
        tqdm progress bar (None: only on a terminal).
    report : callable, optional
        Called with one line per band (files, weight maps, calibration) before cutting.

    Returns
    -------
    galearn.store.Sample
        The written sample. Also merges ``sample`` into ``WS/report/metrics.json``.

    Raises
    ------
    MissingInputError
        Catalogue or mosaic missing.
    BadValueError
        No celestial WCS, missing columns, unknown band, bad selection, a band without calibration.
    EmptySelectionError
        No row passed the selection, or no stamp passed the checks.
    """
    t_start = time.perf_counter()
    if cfg.stretch not in ("asinh", "minmax-asinh"):
        raise BadValueError(f"unknown stretch {cfg.stretch!r} (--stretch); choose asinh or minmax-asinh")
    bands = _check_bands(images)
    catalog_path = Path(catalog_path)
    table = read_catalog(catalog_path)
    cols = resolve_columns(table, cfg.preset, cfg.columns, source=f"catalogue {catalog_path}")
    sections = _open_all({b: images[b] for b in bands}, cfg.weights, cfg.rms, zeropoints=cfg.zeropoints,
                         calibrate=cfg.calibrate)
    timing: dict[str, float] = {}
    seg = None
    try:
        seg = _open_segmap(cfg.segmap)
        cutter = _Cutter(table, sections, cols, size=cfg.stamp_size, select=cfg.select,
                         max_bad_fraction=cfg.max_bad_fraction,
                         require_central_brightest=cfg.require_central_brightest, resample=cfg.resample,
                         segmap=seg, random_state=cfg.random_state)
        info = _info(cutter)
        if report is not None:
            for line in describe_inputs(info):
                report(line)
        if cutter.n_selected == 0:
            what = f"selection {cfg.select!r}" if cfg.select else "the catalogue's finite RA/Dec"
            raise EmptySelectionError(f"{catalog_path}: {what} kept 0 of {len(table)} rows")
        if len(cutter.candidates) == 0:
            raise EmptySelectionError(f"{catalog_path}: no row falls on the mosaics ({_reason_counts(cutter.reason)})")
        t0 = time.perf_counter()
        if cfg.stretch == "asinh":
            stretch, stretch_params = _fit_stretch(cutter, cfg)
            noise = np.asarray(stretch_params["noise_sigma"])
        else:
            stretch, stretch_params = None, {"method": "minmax-asinh",
                                             "formula": "asinh(x) scaled to [0, 1] per stamp and band"}
            noise = _band_noise(cutter, cfg.random_state) \
                if (cfg.require_central_brightest or seg is not None) else None
        timing["stretch_fit_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cutter._reopen = {"images": {b: [str(p) for p in (images[b] if isinstance(images[b], (list, tuple))
                                                          else [images[b]])] for b in bands},
                          "weights": cfg.weights, "rms": cfg.rms, "zeropoints": cfg.zeropoints,
                          "calibrate": cfg.calibrate, "segmap": cfg.segmap}
        job = {"stretch": stretch, "noise": None if noise is None else np.asarray(noise, dtype="f8"),
               "batch_size": int(cfg.batch_size)}
        job_fp = _job_fingerprint(cfg, stretch_params, noise, sections, seg)
        tile = int(setting("cutout_tile_pix", 4096))
        parts = tile_partitions(cutter.x0[cutter.candidates], cutter.y0[cutter.candidates], cutter.candidates,
                                tile_pix=tile, max_rows=int(setting("cutout_partition", 2048)))
        shards, counts, checksums, kept_rows, partitions = _run_cutout_partitions(
            workspace.sample, cutter, parts, job, job_fp)
        timing["cut_s"] = time.perf_counter() - t0
        n_written = int(sum(counts))
        if n_written == 0:
            raise EmptySelectionError(
                f"{catalog_path}: no stamp passed the quality checks ({_reason_counts(cutter.reason)})")
        rows = np.concatenate(kept_rows) if kept_rows else np.zeros(0, dtype=np.int64)
        t0 = time.perf_counter()
        inputs = [_input_record(catalog_path, "catalog")]
        for secs in sections:
            for m in secs:
                if m.path is not None:
                    inputs.append(dict(_input_record(m.path, "image"), band=m.band))
                if m.weight_path is not None and m.weight_path != m.path:
                    inputs.append(dict(_input_record(m.weight_path, m.weight_kind or "weight"), band=m.band))
        if seg is not None and seg.path is not None:
            inputs.append(_input_record(seg.path, "segmap"))
        timing["hash_s"] = time.perf_counter() - t0
        rejected = _rejected_table(table, cols, cutter.reason)
        roles_from = (f"preset {cfg.preset}" if cfg.preset not in (None, "", "auto")
                      else "detected from common column names")
        extra = dict(info, selection=cfg.select, preset=cfg.preset or "auto",
                     column_roles={"from": roles_from, "overrides": dict(cfg.columns or {}), "roles": cols},
                     max_bad_fraction=cfg.max_bad_fraction,
                     require_central_brightest=cfg.require_central_brightest,
                     reason_counts=_reason_counts(cutter.reason), n_input=len(table),
                     galearn_version=__version__,
                     order=f"stamps grouped by sky tile ({tile} x {tile} first-band pixels, tiles in row-major "
                           "order), then sorted by the first mosaic's row y, then x; input row in galearn_row",
                     timing=timing, compute=partitions)
        if seg is not None:
            mf = cutter.masked_fraction[rows]
            extra["segmap"] = dict(info["segmap"], mean_masked_fraction=float(mf.mean()),
                                   n_stamps_masked=int((mf > 0).sum()))
        write_sharded_sample(workspace.sample, shards, counts, checksums, _kept_table(table, rows, cutter),
                             bands=bands, stamp_size=cutter.size, kind="survey",
                             pixel_scale_arcsec=info["pixel_scale_arcsec"], rejected=rejected,
                             stretch=stretch_params, columns=cols, inputs=inputs, extra=extra)
        remove_stale_shards(workspace.sample, shards)
        record_compute(workspace, {"cutouts": partitions})
    finally:
        _close_all(sections)
        if seg is not None:
            seg.close()
    timing["total_s"] = time.perf_counter() - t_start
    sample = open_sample(workspace.sample)
    update_metrics(workspace.metrics, {"sample": {
        "n_images": sample.n, "n_rejected": len(rejected), "bands": bands, "stamp_size": cutter.size,
        "n_input": len(table), "rejection_reasons": _reason_counts(cutter.reason), "kind": "survey",
        "pixel_scale_arcsec": info["pixel_scale_arcsec"], "stretch": stretch_params["method"],
        "physical_unit": info["physical_unit"],
    }}, replace=("sample",))
    return sample


# --------------------------------------------------------------------------- partitions (galearn.compute)


def tile_partitions(x0: np.ndarray, y0: np.ndarray, rows: np.ndarray, *, tile_pix: int = 4096,
                    max_rows: int = 2048) -> list[np.ndarray]:
    """Group catalogue ``rows`` (stamp corners ``x0``, ``y0`` in first-band pixels) by sky tile.

    Tiles are ``tile_pix`` x ``tile_pix`` squares of the first mosaic, taken in
    row-major order; within a tile rows are sorted by ``y0`` then ``x0`` (so a
    task reads one region of the memory-mapped mosaics, front to back). A tile
    with more than ``max_rows`` rows is split into consecutive runs. The result
    depends only on the positions, never on the scheduler.
    """
    if tile_pix < 1 or max_rows < 1:
        raise BadValueError(f"cutout_tile_pix and cutout_partition must be >= 1, got {tile_pix}, {max_rows}")
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return []
    tx, ty = np.floor_divide(x0, tile_pix), np.floor_divide(y0, tile_pix)
    order = np.lexsort((x0, y0, tx, ty))
    rows, tx, ty = rows[order], tx[order], ty[order]
    edges = np.flatnonzero((np.diff(tx) != 0) | (np.diff(ty) != 0)) + 1
    parts = []
    for chunk in np.split(rows, edges):
        parts.extend(chunk[s : s + max_rows] for s in range(0, len(chunk), max_rows))
    return parts


def _job_fingerprint(cfg, stretch_params: dict, noise, sections, seg) -> str:
    import dataclasses
    import hashlib
    import json

    desc = {"cfg": dataclasses.asdict(cfg), "stretch": stretch_params,
            "noise": None if noise is None else [float(v) for v in np.asarray(noise)],
            "files": [[m.band, list(file_key(m.path)), list(file_key(m.weight_path))] for secs in sections
                      for m in secs],
            "segmap": None if seg is None else list(file_key(seg.path))}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()


def _cutout_task(part: dict, *, cutter: _Cutter, job: dict) -> dict:
    """One cutout partition (runs on a worker): cut, check, mask and stretch its rows; write one shard.

    Returns the partition's per-row reasons ('' = kept), the masked fraction of
    its kept stamps, and the shard's size and checksum.
    """
    t0 = time.perf_counter()
    rows = np.asarray(part["rows"], dtype=np.int64)
    S, C = cutter.size, len(cutter.mosaics)
    reasons = np.full(len(rows), "", dtype=object)
    phys_out, str_out = [], []
    stretch, noise = job["stretch"], job["noise"]
    for start in range(0, len(rows), job["batch_size"]):
        r = rows[start : start + job["batch_size"]]
        stamps = cutter.read(r)
        why = cutter.check(stamps, noise)
        reasons[start : start + len(r)] = why
        good = why == ""
        phys = stamps[good]
        if len(phys):
            if cutter.segmap is not None:
                cutter.mask_neighbours(phys, r[good], noise)
            phys_out.append(phys)
            str_out.append(stretch.forward(phys) if stretch is not None else minmax_asinh(phys))
    empty = np.zeros((0, C, S, S), dtype="f4")
    physical = np.concatenate(phys_out).astype("f4", copy=False) if phys_out else empty
    stretched = np.concatenate(str_out).astype("f4", copy=False) if str_out else empty
    reason_arr = np.array([str(v) for v in reasons], dtype="U")
    kept = rows[reason_arr == ""]
    masked = np.asarray(cutter.masked_fraction[kept], dtype="f4")
    checksum = write_shard(part["shard"], {"physical": physical, "stretched": stretched, "rows": rows,
                                           "reason": reason_arr, "masked_fraction": masked},
                           n_rows=len(physical), fingerprint=part["fingerprint"],
                           attrs={"n_input_rows": len(rows)})
    return {"reasons": reason_arr, "masked_fraction": masked, "n": len(physical), "checksum": checksum,
            "seconds": time.perf_counter() - t0, "pid": os.getpid()}


def _partition_fingerprint(job_fp: str, rows: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(job_fp.encode() + np.ascontiguousarray(rows, dtype="<i8").tobytes()).hexdigest()


def _run_cutout_partitions(sample_path: Path, cutter: _Cutter, parts: list[np.ndarray], job: dict, job_fp: str):
    """Cut every partition not already complete (checked shards are reused); collect reasons and shards."""
    todo, results, skipped = [], {}, 0
    for i, rows in enumerate(parts):
        fp = _partition_fingerprint(job_fp, rows)
        shard = shard_path(sample_path, i)
        ok = check_shard(shard, fp)
        if ok is not None:
            results[i] = {"reasons": read_shard(shard, "reason").astype(str), "n": ok["n_rows"],
                          "masked_fraction": read_shard(shard, "masked_fraction"), "checksum": ok["checksum"]}
            skipped += 1
            continue
        todo.append({"index": i, "rows": rows, "shard": str(shard), "fingerprint": fp})

    def failed(k: int, exc: BaseException) -> dict:
        # bad data in this partition: its rows stay in the catalogue's rejected table, with the reason
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        return {"reasons": np.full(len(todo[k]["rows"]), f"partition {todo[k]['index']} failed: {msg}"),
                "n": 0, "checksum": None}

    for k, res in map_partitions(_cutout_task, todo, desc="cutouts", stage="cutouts",
                                 n_items=sum(len(t["rows"]) for t in todo), shared={"cutter": cutter, "job": job},
                                 on_error=failed):
        results[todo[k]["index"]] = res
    shards, counts, checksums, kept = [], [], [], []
    n_failed = 0
    for i, rows in enumerate(parts):
        res = results[i]
        reasons = np.asarray(res["reasons"], dtype=object)
        cutter.reason[rows] = reasons
        if res["checksum"] is None:
            n_failed += 1
            continue
        good = rows[reasons == ""]
        cutter.masked_fraction[good] = res["masked_fraction"]
        shards.append(shard_path(sample_path, i))
        counts.append(int(res["n"]))
        checksums.append(res["checksum"])
        kept.append(good)
    session = current_session()
    info = dict(session.stages.get("cutouts", {}), n_partitions=len(parts), n_partitions_run=len(todo),
                n_partitions_skipped=skipped, n_partitions_failed=n_failed,
                partition_rows_max=int(max((len(p) for p in parts), default=0)))
    info.setdefault("scheduler", session.spec.describe())
    return shards, counts, checksums, kept, info


def _reason_counts(reason: np.ndarray) -> dict[str, int]:
    return dict(sorted(Counter(str(r) for r in reason if r != "").items()))
