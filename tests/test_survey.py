"""Cutouts from synthetic FITS mosaics with known sources (galearn.survey)."""

from __future__ import annotations

import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.modeling.models import Sersic2D
from astropy.table import MaskedColumn, Table
from astropy.wcs import WCS
from numpy.testing import assert_allclose
from scipy.special import erf

from galearn.config import CutoutConfig, IngestConfig
from galearn.errors import BadValueError, EmptySelectionError, MissingInputError
from galearn.store import Workspace, read_metrics
from galearn.survey.calibration import AB_NJY_ZEROPOINT
from galearn.survey import (
    cut_stamps,
    evaluate_selection,
    make_sample_from_images,
    make_sample_from_mosaics,
    open_mosaic,
    read_catalog,
    resolve_columns,
)

RA0, DEC0 = 53.12, -27.81
SIZE = 64
N1 = 360  # reference mosaic side (pixels, 0.06 arcsec)


# --------------------------------------------------------------------------- synthetic field


def tan_wcs(scale_arcsec: float, shape: tuple[int, int], rot_deg: float = 0.0,
            crpix_shift: tuple[float, float] = (0.0, 0.0)) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0, DEC0]
    w.wcs.crpix = [shape[1] / 2 + 0.5 + crpix_shift[0], shape[0] / 2 + 0.5 + crpix_shift[1]]
    s = scale_arcsec / 3600.0
    c, si = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    w.wcs.cd = np.array([[-s * c, s * si], [s * si, s * c]])
    return w


def njy_header(w: WCS) -> fits.Header:
    """WCS header of an image in nJy per pixel (calibrated by BUNIT)."""
    h = w.to_header()
    h["BUNIT"] = "nJy"
    return h


def _gauss_1d(edges_lo: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    z = lambda v: erf((v - centre) / (np.sqrt(2) * sigma))  # noqa: E731
    return 0.5 * (z(edges_lo + 1.0) - z(edges_lo))


def render(shape, w: WCS, sources: list[dict], psf_sigma_arcsec: float = 0.09) -> tuple[np.ndarray, list[float]]:
    """Image with the sources drawn at their RA/Dec; returns (image, injected flux per source)."""
    img = np.zeros(shape, dtype="f8")
    scale = float(np.sqrt(abs(np.linalg.det(w.pixel_scale_matrix)))) * 3600.0
    fluxes = []
    for src in sources:
        x, y = w.all_world2pix(src["ra"], src["dec"], 0)
        x, y = float(x), float(y)
        half = 40
        xa, ya = int(np.floor(x)) - half, int(np.floor(y)) - half
        xs = np.arange(xa, xa + 2 * half)
        ys = np.arange(ya, ya + 2 * half)
        if src["kind"] == "point":
            sig = psf_sigma_arcsec / scale
            stamp = np.outer(_gauss_1d(ys - 0.5, y, sig), _gauss_1d(xs - 0.5, x, sig))
        else:  # Sersic, 5x5 sub-pixel sampling
            sub = 5
            off = (np.arange(sub) + 0.5) / sub - 0.5
            gx = (xs[:, None] + off[None, :]).ravel()
            gy = (ys[:, None] + off[None, :]).ravel()
            model = Sersic2D(amplitude=1.0, r_eff=src["r_eff_arcsec"] / scale, n=src["n"], x_0=x, y_0=y,
                             ellip=0.3, theta=0.5)
            fine = model(gx[None, :], gy[:, None])
            stamp = fine.reshape(len(ys), sub, len(xs), sub).mean(axis=(1, 3))
            stamp /= stamp.sum()
        stamp *= src["flux"]
        ok_y = (ys >= 0) & (ys < shape[0])
        ok_x = (xs >= 0) & (xs < shape[1])
        img[np.ix_(ys[ok_y], xs[ok_x])] += stamp[np.ix_(ok_y, ok_x)]
        fluxes.append(float(stamp.sum()))
    return img, fluxes


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> dict:
    """Two bands: F435W (0.06", 360 px) and F160W (0.12", rotated 30 deg, offset): sources + defects."""
    d = tmp_path_factory.mktemp("field")
    shape1 = (N1, N1)
    w1 = tan_wcs(0.06, shape1)
    shape2 = (200, 200)
    w2 = tan_wcs(0.12, shape2, rot_deg=30.0, crpix_shift=(3.3, -2.7))
    rng = np.random.default_rng(1)

    def radec(x, y):
        ra, dec = w1.all_pix2world(x, y, 0)
        return float(ra), float(dec)

    # Sources well inside, at sub-pixel positions, >= 90 px apart.
    spots = [(80.3, 82.7, "point", 0, 0), (180.6, 80.2, "sersic", 0.24, 1.0), (280.45, 85.55, "point", 0, 0),
             (82.8, 185.4, "sersic", 0.18, 1.5), (181.2, 183.9, "sersic", 0.3, 0.8)]
    sources = []
    for x, y, kind, re, n in spots:
        ra, dec = radec(x, y)
        sources.append({"ra": ra, "dec": dec, "kind": kind, "r_eff_arcsec": re, "n": n, "flux": 100.0,
                        "x": x, "y": y})
    img1, flux1 = render(shape1, w1, sources)
    img2, flux2 = render(shape2, w2, sources)
    noise = 1e-3
    img1 += rng.normal(0, noise, shape1)
    img2 += rng.normal(0, noise, shape2)
    # Defects: a NaN patch in F435W, a zero-weight (no coverage) patch in F160W.
    img1[255:272, 250:310] = np.nan  # below (280, 280): 25 % of its stamp, not the centre
    x2, y2 = w2.all_world2pix(*radec(180.0, 290.0), 0)
    img2[int(y2) - 12 : int(y2) + 12, int(x2) - 12 : int(x2) + 12] = 0.0
    p1, p2 = d / "f435w.fits", d / "f160w.fits"
    h1 = w1.to_header()
    h1["BUNIT"] = "electrons/s"
    h1["PHOTZP"] = AB_NJY_ZEROPOINT  # 1 electron/s = 1 nJy: calibrated stamps keep the injected values
    fits.PrimaryHDU(img1.astype("f4"), header=h1).writeto(p1)
    fits.PrimaryHDU(img2.astype("f4"), header=njy_header(w2)).writeto(p2)

    rows = []
    for i, s in enumerate(sources):
        rows.append({"ID": i + 1, "ra": s["ra"], "dec": s["dec"], "z": 0.5, "expected": "kept"})
    extra = [
        ((280.0, 280.0), "too many bad pixels (F435W)"),
        ((180.0, 290.0), "band missing: F160W"),
        ((20.0, 180.0), "stamp partly off mosaic (F435W)"),
        ((-30.0, 180.0), "centre off mosaic"),
        ((100.0, 280.0), "cut: z < 1"),
    ]
    for j, ((x, y), why) in enumerate(extra):
        ra, dec = radec(x, y)
        rows.append({"ID": 100 + j, "ra": ra, "dec": dec, "z": 2.0 if why.startswith("cut") else 0.5,
                     "expected": why})
    rows.append({"ID": 200, "ra": np.nan, "dec": DEC0, "z": 0.5, "expected": "non-finite ra/dec"})
    cat = Table(rows=[[r[k] for k in ("ID", "ra", "dec", "z", "expected")] for r in rows],
                names=("ID", "RA_1", "DEC_1", "zbest", "expected"))
    cat["RA_1"].unit = u.deg
    cat["DEC_1"].unit = u.deg
    cat["Hmag"] = MaskedColumn(np.linspace(20, 24, len(cat)), unit=u.mag, mask=[False] * (len(cat) - 1) + [True])
    cat.meta["SURVEY"] = "synthetic GOODS-S"
    cat.meta["comments"] = ["made in test_survey.py"]
    cat_path = d / "cat.fits"
    cat.write(cat_path)
    return {"dir": d, "w1": w1, "w2": w2, "p1": p1, "p2": p2, "cat": cat, "cat_path": cat_path,
            "sources": sources, "flux1": flux1, "flux2": flux2, "noise": noise}


def _centroid(img: np.ndarray, cx: float, cy: float, r: float = 6.0) -> tuple[float, float]:
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    m = (np.hypot(xx - cx, yy - cy) <= r)
    w = np.clip(img, 0, None) * m
    return float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())


# --------------------------------------------------------------------------- cut_stamps


@pytest.fixture(scope="module")
def cut(field):
    return cut_stamps(field["cat_path"], {"F435W": field["p1"], "F160W": field["p2"]}, size=SIZE,
                      select="zbest < 1", batch_size=3)


def test_kept_plus_rejected_is_input(field, cut):
    cat = field["cat"]
    assert len(cut.catalog) + len(cut.rejected) == len(cat)
    assert sorted(list(cut.catalog["galearn_row"]) + list(cut.rejected["row"])) == list(range(len(cat)))
    assert cut.stamps.shape == (len(cut.catalog), 2, SIZE, SIZE)
    assert cut.stamps.dtype == np.float32


def test_rejection_reasons(field, cut):
    cat = field["cat"]
    kept_ids = set(cut.catalog["ID"])
    assert kept_ids == {r["ID"] for r in cat if r["expected"] == "kept"}
    got = {int(r["row"]): str(r["reason"]) for r in cut.rejected}
    for i, r in enumerate(cat):
        if r["expected"] != "kept":
            exp = "cut: zbest < 1" if r["expected"].startswith("cut") else r["expected"]
            assert got[i] == exp, (r["ID"], got[i])
    assert set(cut.rejected["id"]) == {str(r["ID"]) for r in cat if r["expected"] != "kept"}


def test_stamps_centred_within_half_pixel(field, cut):
    c = SIZE // 2
    for k, row in enumerate(cut.catalog):
        src = field["sources"][int(row["ID"]) - 1]
        # position of the catalogue coordinate in the stamp
        assert abs(row["galearn_x"] - c) <= 0.5 and abs(row["galearn_y"] - c) <= 0.5
        assert_allclose([row["galearn_x"], row["galearn_y"]], [src["x"] % 1 + c - round(src["x"] % 1),
                                                                src["y"] % 1 + c - round(src["y"] % 1)], atol=1e-6)
        for b in range(2):  # both the sliced and the resampled band
            cx, cy = _centroid(cut.stamps[k, b], row["galearn_x"], row["galearn_y"])
            assert abs(cx - c) <= 0.5 and abs(cy - c) <= 0.5, (row["ID"], b, cx, cy)
            assert abs(cx - row["galearn_x"]) < 0.1 and abs(cy - row["galearn_y"]) < 0.1


def test_flux_conserved_in_both_bands(field, cut):
    for k, row in enumerate(cut.catalog):
        i = int(row["ID"]) - 1
        f1 = cut.stamps[k, 0].sum()
        f2 = cut.stamps[k, 1].sum()
        assert_allclose(f1, field["flux1"][i], rtol=0.01)
        assert_allclose(f2, field["flux2"][i], rtol=0.01)


def test_grid_detection_and_provenance(cut):
    grids = {g["band"]: g["grid"] for g in cut.info["grids"]}
    assert grids == {"F435W": "reference", "F160W": "resampled"}
    assert "reproject_adaptive" in cut.info["resample"] and "conserve_flux=True" in cut.info["resample"]
    assert_allclose(cut.info["pixel_scale_arcsec"], 0.06, rtol=1e-6)
    assert cut.info["units"]["F435W"] == "electrons/s"


def test_exact_resampling_also_conserves_flux(field):
    sub = field["cat"][:2]
    res = cut_stamps(sub, {"F435W": field["p1"], "F160W": field["p2"]}, size=SIZE, resample="exact")
    assert "reproject_exact" in res.info["resample"]
    for k, row in enumerate(res.catalog):
        assert_allclose(res.stamps[k, 1].sum(), field["flux2"][int(row["ID"]) - 1], rtol=0.01)


def test_same_grid_band_is_sliced_exactly(field, tmp_path):
    # A second band on the same grid but shifted by an integer number of pixels.
    with fits.open(field["p1"]) as hdul:
        data, hdr = hdul[0].data, hdul[0].header
    w = WCS(hdr)
    pad = np.full((N1 + 10, N1 + 7), 1.0, dtype="f4")
    pad[10:, 7:] = data * 2
    w2 = w.deepcopy()
    w2.wcs.crpix = w.wcs.crpix + [7, 10]
    p = tmp_path / "shifted.fits"
    fits.PrimaryHDU(pad, header=njy_header(w2)).writeto(p)
    res = cut_stamps(field["cat"][:5], {"F435W": field["p1"], "F850LP": p}, size=SIZE)
    assert res.info["grids"][1] == {"band": "F850LP", "grid": "same", "offset": [7, 10]}
    assert_allclose(res.stamps[:, 1], 2 * res.stamps[:, 0], rtol=1e-6)


def test_catalogue_columns_units_meta_preserved(field, cut):
    cat = field["cat"]
    kept = cut.catalog
    for name in cat.colnames:
        assert name in kept.colnames
        assert kept[name].unit == cat[name].unit
    assert kept.meta["SURVEY"] == "synthetic GOODS-S"
    rows = np.asarray(kept["galearn_row"])
    assert_allclose(np.asarray(kept["zbest"]), np.asarray(cat["zbest"])[rows])


def test_in_memory_arrays_and_quantities(field):
    with fits.open(field["p1"]) as hdul:
        data = hdul[0].data.copy()
    res = cut_stamps(field["cat"][:3], {"F435W": (data, field["w1"])}, size=32,
                     zeropoints={"F435W": AB_NJY_ZEROPOINT})
    assert res.stamps.shape == (3, 1, 32, 32)


def test_integer_mosaic_with_bscale(field, tmp_path):
    w = field["w1"]
    raw = np.arange(N1 * N1, dtype=np.int16).reshape(N1, N1) % 1000 + 1
    hdu = fits.PrimaryHDU(raw, header=w.to_header())
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 10.0
    p = tmp_path / "int.fits"
    hdu.writeto(p)
    # astropy would apply the header scaling on write; write the raw bytes ourselves.
    with fits.open(p, mode="update", do_not_scale_image_data=True) as hdul:
        hdul[0].data[...] = raw
        hdul[0].header["BSCALE"] = 0.5
        hdul[0].header["BZERO"] = 10.0
    m = open_mosaic(p, "F435W")
    assert m.memmapped
    got = m.gather(np.array([5]), np.array([7]), 4)[0]
    m.close()
    assert_allclose(got, raw[5:9, 7:11] * 0.5 + 10.0)


def test_gzip_mosaic_falls_back_to_sections(field, tmp_path):
    with fits.open(field["p1"]) as hdul:
        p = tmp_path / "f435w.fits.gz"
        hdul.writeto(p)
    a = cut_stamps(field["cat"][:2], {"F435W": p}, size=SIZE)
    b = cut_stamps(field["cat"][:2], {"F435W": field["p1"]}, size=SIZE)
    assert_allclose(a.stamps, b.stamps)


def test_central_brightest_check(field, tmp_path):
    # A bright star 20 px from a faint galaxy: rejected only when the check is on.
    w = field["w1"]
    ra, dec = w.all_pix2world([150.0, 170.0], [150.0, 150.0], 0)
    srcs = [{"ra": ra[0], "dec": dec[0], "kind": "point", "flux": 5.0},
            {"ra": ra[1], "dec": dec[1], "kind": "point", "flux": 500.0}]
    img, _ = render((N1, N1), w, srcs)
    img += np.random.default_rng(0).normal(0, 1e-3, img.shape)
    p = tmp_path / "pair.fits"
    fits.PrimaryHDU(img.astype("f4"), header=njy_header(w)).writeto(p)
    cat = Table({"RA_1": ra, "DEC_1": dec, "ID": [1, 2]})
    off = cut_stamps(cat, {"F435W": p}, size=SIZE)
    on = cut_stamps(cat, {"F435W": p}, size=SIZE, require_central_brightest=True)
    assert len(off.catalog) == 2
    assert list(on.catalog["ID"]) == [2]
    assert list(on.rejected["reason"]) == ["central source not the brightest"]


# --------------------------------------------------------------------------- sample files


def test_make_sample_from_mosaics_streams_to_store(field, tmp_path):
    ws = Workspace(tmp_path / "ws")
    cfg = CutoutConfig(stamp_size=SIZE, select="zbest < 1", batch_size=2)
    s = make_sample_from_mosaics(field["cat_path"], {"F435W": field["p1"], "F160W": field["p2"]}, ws, cfg)
    cat = field["cat"]
    assert s.n == 5 and s.n + len(s.rejected) == len(cat)
    assert s.bands == ["F435W", "F160W"] and s.stamp_size == SIZE and s.kind == "survey"
    assert_allclose(s.pixel_scale_arcsec, 0.06, rtol=1e-6)
    # Catalogue rows: all columns, units, meta; masked value survives the round trip.
    for name in cat.colnames:
        assert s.catalog[name].unit == cat[name].unit
    assert s.catalog.meta["SURVEY"] == "synthetic GOODS-S"
    # Reading back in batches gives the same stamps as reading everything.
    full = s.read("physical")
    parts = [b for _, b in s.iter_batches(2, which="physical")]
    assert_allclose(np.concatenate(parts), full)
    stretched = s.read("stretched")
    assert stretched.min() >= 0 and stretched.max() <= 1
    # Stretch: asinh with the mosaic noise (known: 1e-3 in F435W) stored in the file.
    assert s.stretch["method"] == "asinh"
    assert_allclose(s.stretch["noise_sigma"][0], field["noise"], rtol=0.1)
    assert_allclose(s.stretch["softening"][0], 2 * s.stretch["noise_sigma"][0])
    # Provenance.
    names = {i["name"]: i for i in s.inputs}
    assert set(names) == {"cat.fits", "f435w.fits", "f160w.fits"}
    assert all(len(i["sha256"]) == 64 for i in s.inputs)
    assert s.columns["ra"] == "RA_1" and s.columns["id"] == "ID"
    assert "reproject_adaptive" in s.extra["resample"]
    m = read_metrics(ws.metrics)["sample"]
    assert m["n_images"] == 5 and m["n_rejected"] == len(cat) - 5
    assert m["bands"] == ["F435W", "F160W"] and m["stamp_size"] == SIZE
    assert m["rejection_reasons"]["non-finite ra/dec"] == 1
    assert sum(m["rejection_reasons"].values()) == m["n_rejected"]


def test_minmax_stretch_option_and_seed(field, tmp_path):
    imgs = {"F435W": field["p1"]}
    a = make_sample_from_mosaics(field["cat_path"], imgs, Workspace(tmp_path / "a"), CutoutConfig(random_state=3))
    b = make_sample_from_mosaics(field["cat_path"], imgs, Workspace(tmp_path / "b"), CutoutConfig(random_state=3))
    assert a.stretch == b.stretch and a.checksum == b.checksum
    c = make_sample_from_mosaics(field["cat_path"], imgs, Workspace(tmp_path / "c"),
                                 CutoutConfig(stretch="minmax-asinh"))
    st = c.read("stretched")
    assert c.stretch["method"] == "minmax-asinh"
    assert_allclose(st.max(axis=(2, 3)), 1.0, atol=1e-6)
    assert_allclose(st.min(axis=(2, 3)), 0.0, atol=1e-6)


def test_empty_selection_raises(field, tmp_path):
    with pytest.raises(EmptySelectionError, match="zbest > 10"):
        make_sample_from_mosaics(field["cat_path"], {"F435W": field["p1"]}, Workspace(tmp_path),
                                 CutoutConfig(select="zbest > 10"))
    assert not (tmp_path / "sample.h5").exists()


def test_no_celestial_wcs_names_file(tmp_path):
    p = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.ones((10, 10), dtype="f4")).writeto(p)
    with pytest.raises(BadValueError, match="plain.fits.*celestial"):
        open_mosaic(p, "F435W")
    with pytest.raises(MissingInputError, match="nothere.fits"):
        open_mosaic(tmp_path / "nothere.fits", "F435W")


# --------------------------------------------------------------------------- catalogue + selection


def test_catalogue_formats_round_trip(field, tmp_path):
    cat = field["cat"]
    for suffix in ("ecsv", "csv", "parquet", "fits"):
        p = tmp_path / f"c.{suffix}"
        t = cat.copy()
        t["Hmag"] = t["Hmag"].filled(np.nan) if suffix in ("csv", "parquet") else t["Hmag"]
        t.write(p)
        back = read_catalog(p)
        assert back.colnames == cat.colnames
        assert_allclose(np.asarray(back["RA_1"], dtype=float), np.asarray(cat["RA_1"]), equal_nan=True)


def test_resolve_columns_preset_and_overrides(field):
    cat = field["cat"]
    cols = resolve_columns(cat, "candels")
    assert cols == {"id": "ID", "ra": "RA_1", "dec": "DEC_1", "z": "zbest", "mag": "Hmag"}
    assert resolve_columns(cat, "galearn-mock") == cols
    assert resolve_columns(cat, "candels", {"z": "Hmag"})["z"] == "Hmag"
    with pytest.raises(BadValueError, match="'zphot'"):
        resolve_columns(cat, "candels", {"z": "zphot"})
    with pytest.raises(BadValueError, match="'RA_1'.*--column ra=NAME"):
        resolve_columns(Table({"ra": [1.0], "DEC_1": [2.0]}), "candels")
    with pytest.raises(BadValueError, match="unknown column role 'colour'"):
        resolve_columns(cat, "candels", {"colour": "zbest"})
    with pytest.raises(BadValueError, match="unknown column preset"):
        resolve_columns(cat, "sdss")


def test_selection_is_safe_and_correct():
    t = Table({"z": [0.5, 1.5, np.nan, 0.2], "m": MaskedColumn([20.0, 24.0, 22.0, 26.0], mask=[0, 0, 0, 1]),
               "kind": ["a", "b", "a", "a"]})
    assert evaluate_selection(t, "z > 0.1 and z < 1").tolist() == [True, False, False, True]
    assert evaluate_selection(t, "0.1 < z < 1 and not m > 21").tolist() == [True, False, False, False]
    assert evaluate_selection(t, "(z < 1) | (m >= 24)").tolist() == [True, True, False, True]
    assert evaluate_selection(t, "z < 1 or m > 25").tolist() == [True, False, False, True]  # Kleene: True or unknown
    assert evaluate_selection(t, "kind == 'a' and abs(z - 0.5) < 0.01").tolist() == [True, False, False, False]
    assert evaluate_selection(t, "log10(m) > 1.35").tolist() == [False, True, False, False]
    assert evaluate_selection(t, None).all() and evaluate_selection(t, " ").all()
    for bad, msg in [("__import__('os').system('true')", "not allowed"), ("z.real > 0", "not allowed"),
                     ("zz > 1", "unknown column 'zz'"), ("z >", "not a valid expression"),
                     ("(lambda: 1)()", "not allowed"), ("z in [1]", "not allowed"), ("z[0] > 1", "not allowed")]:
        with pytest.raises(BadValueError, match=msg):
            evaluate_selection(t, bad)


# --------------------------------------------------------------------------- image folders


def _write_images(folder: Path, n: int, size: int = 100) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        r2 = (xx - size / 2 + 0.5) ** 2 + (yy - size / 2 + 0.5) ** 2
        blob = 255 * np.exp(-r2 / (2 * (5 + i) ** 2))
        rgb = np.stack([blob, 0.5 * blob, 0.25 * blob], axis=-1).astype(np.uint8)
        stem = f"{1000 + i:06d}"
        Image.fromarray(rgb).save(folder / (stem + (".png" if i % 2 else ".jpg")))
        ids.append(stem)
    return ids


def test_make_sample_from_images(tmp_path):
    folder = tmp_path / "imgs"
    stems = _write_images(folder, 6)
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    labels = tmp_path / "labels.csv"
    # ids as numbers (no leading zeros), one label without file, one file (000105) without label
    lines = ["id,morph"] + [f"{int(s)},{'spiral' if k % 2 else 'elliptical'}" for k, s in enumerate(stems[:5])]
    lines += ["999,spiral", "broken,spiral"]
    labels.write_text("\n".join(lines) + "\n")
    ws = Workspace(tmp_path / "ws")
    with pytest.warns(UserWarning) as rec:
        s = make_sample_from_images(folder, labels, ws, IngestConfig(stamp_size=32, crop_fraction=0.5))
    msgs = " ".join(str(r.message) for r in rec)
    assert "no row" in msgs and "no image" in msgs and "unreadable" in msgs
    assert s.n == 5 and s.bands == ["R", "G", "B"] and s.stamp_size == 32 and s.kind == "images"
    reasons = dict(zip(s.rejected["id"], s.rejected["reason"]))
    assert reasons["999"] == "no image file"
    assert reasons["001005"].startswith("no label row")
    assert reasons["broken"].startswith("unreadable image: broken.png")
    assert len(s.rejected) + s.n == 7 + 1  # label rows + the file without a label
    phys, st = s.read("physical"), s.read("stretched")
    assert_allclose(phys, st)
    assert phys.shape == (5, 3, 32, 32) and 0 <= phys.min() and phys.max() <= 1
    # centred blob, R > G > B as drawn
    assert np.unravel_index(phys[0, 0].argmax(), (32, 32)) in {(15, 15), (15, 16), (16, 15), (16, 16)}
    assert phys[:, 0].sum() > phys[:, 1].sum() > phys[:, 2].sum()
    assert list(s.catalog["morph"]) == ["elliptical", "spiral", "elliptical", "spiral", "elliptical"]
    m = read_metrics(ws.metrics)["sample"]
    assert m["n_images"] == 5 and m["n_unlabelled_files"] == 1 and m["n_missing_files"] == 1
    assert m["n_unreadable"] == 1 and m["bands"] == ["R", "G", "B"]


def test_images_none_readable(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"junk")
    labels = tmp_path / "labels.csv"
    labels.write_text("id,morph\na,spiral\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BadValueError, match="could be read.*a.png"):
            make_sample_from_images(folder, labels, Workspace(tmp_path / "ws"), IngestConfig())


GZ = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "galaxy-zoo-dev"


@pytest.mark.realdata
@pytest.mark.skipif(not (GZ / "labels.csv").exists(), reason="galaxy-zoo-dev not available")
def test_galaxy_zoo_dev_subset(tmp_path):
    import shutil

    folder = tmp_path / "imgs"
    folder.mkdir()
    labels = Table.read(GZ / "labels.csv", format="ascii.csv")[:20]
    for i in labels["id"]:
        shutil.copy(GZ / "images" / f"{i}.jpeg", folder)
    labels.write(tmp_path / "labels.csv")
    s = make_sample_from_images(folder, tmp_path / "labels.csv", Workspace(tmp_path / "ws"), IngestConfig())
    assert s.n == 20 and len(s.rejected) == 0
    st = s.read()
    # The galaxy is central: the centre quarter is brighter than the border.
    centre = st[:, :, 24:40, 24:40].mean()
    border = np.concatenate([st[:, :, :8].ravel(), st[:, :, -8:].ravel()]).mean()
    assert centre > 2 * border


def test_weight_map_extension_marks_bad_pixels(field, tmp_path):
    # Same science image plus a WHT extension that is 0 over the left third of the first source's stamp.
    with fits.open(field["p1"]) as hdul:
        data, hdr = hdul[0].data, hdul[0].header
    wht = np.ones_like(data)
    src = field["sources"][0]
    x, y = int(round(src["x"])), int(round(src["y"]))
    wht[y - 32 : y + 32, x - 32 : x - 12] = 0.0
    p = tmp_path / "with_wht.fits"
    fits.HDUList([fits.PrimaryHDU(data, header=hdr), fits.ImageHDU(wht, header=hdr, name="WHT")]).writeto(p)
    res = cut_stamps(field["cat"][:2], {"F435W": p}, size=SIZE)
    assert res.info["weight_maps"]["F435W"] == [
        {"file": "with_wht.fits", "weight": "with_wht.fits[1]", "kind": "weight", "from": "extension"}]
    assert list(res.rejected["reason"]) == ["too many bad pixels (F435W)"]
    ok = cut_stamps(field["cat"][:2], {"F435W": p}, size=SIZE, max_bad_fraction=0.5)
    assert len(ok.catalog) == 2
    k = list(ok.catalog["ID"]).index(1)
    assert np.all(ok.stamps[k, 0, :, :20] == 0)  # bad pixels set to 0


def test_compressed_weight_map_next_to_mapped_science(field, tmp_path):
    # The mock field's layout: float32 science in the primary HDU, tile-compressed WHT extension.
    with fits.open(field["p1"]) as hdul:
        data, hdr = hdul[0].data, hdul[0].header
    wht = np.ones_like(data)
    wht[:, :100] = 0.0  # no coverage left of x = 100
    p = tmp_path / "comp_wht.fits"
    fits.HDUList([fits.PrimaryHDU(data, header=hdr), fits.CompImageHDU(wht, header=hdr, name="WHT")]).writeto(p)
    m = open_mosaic(p, "F435W")
    assert m.memmapped and m.weight is not None
    m.close()
    res = cut_stamps(field["cat"][:5], {"F435W": p}, size=SIZE)
    reasons = dict(zip(res.rejected["id"], res.rejected["reason"]))
    # sources 1 and 4 sit at x ~ 81-83: their stamps (x 49..113) are mostly without weight
    assert reasons == {"1": "band missing: F435W", "4": "band missing: F435W"}


@pytest.mark.slow
def test_streaming_keeps_resident_memory_below_the_mosaic(tmp_path):
    """A 6000^2 float32 mosaic (144 MB) and 3000 scattered rows: the cut adds far less than the mosaic."""
    import json
    import subprocess
    import sys

    n = 6000
    w = tan_wcs(0.06, (n, n))
    hdr = fits.Header({"SIMPLE": True, "BITPIX": -32, "NAXIS": 2, "NAXIS1": n, "NAXIS2": n})
    hdr.update(njy_header(w))
    p = tmp_path / "big.fits"
    shdu = fits.StreamingHDU(p, hdr)
    rng = np.random.default_rng(0)
    for _ in range(0, n, 1000):
        shdu.write(rng.normal(0, 1, (1000, n)).astype(">f4"))
    shdu.close()
    ra, dec = w.all_pix2world(rng.uniform(40, n - 40, 3000), rng.uniform(40, n - 40, 3000), 0)
    Table({"RA_1": ra, "DEC_1": dec}).write(tmp_path / "cat.fits")
    code = f"""
import json, resource
from galearn.config import CutoutConfig
from galearn.store import Workspace
from galearn.survey import make_sample_from_mosaics
import reproject, h5py  # imports before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
s = make_sample_from_mosaics({str(tmp_path / 'cat.fits')!r}, {{"F435W": {str(p)!r}}}, Workspace({str(tmp_path / 'ws')!r}),
                             CutoutConfig(batch_size=256), progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"n": s.n, "base": base, "peak": peak}}))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["n"] == 3000
    assert res["peak"] - res["base"] < 80, res  # the mosaic is 144 MB; stamps of one batch are 4 MB
