"""Survey releases as distributed: sections, separate weight / RMS maps, calibration, segmentation maps.

Synthetic mosaics with known sources (fast), plus the release-shaped mock and the
README's "Your own data" commands run as written (tests/test_release.py::test_readme_*).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from numpy.testing import assert_allclose

from galearn.cli import main
from galearn.errors import BadValueError
from galearn.survey import cut_stamps
from galearn.survey.calibration import AB_NJY_ZEROPOINT, njy_factor_from_zeropoint, resolve_calibration
from galearn.survey.inputs import companion_weight, resolve_band_files

RA0, DEC0 = 53.12, -27.81
S = 32
ROOT = Path(__file__).resolve().parents[1]


def tan_wcs(shape: tuple[int, int], scale_arcsec: float = 0.06) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0, DEC0]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    w.wcs.cd = np.diag([-scale_arcsec, scale_arcsec]) / 3600.0
    return w


def gaussians(shape, xy, fluxes, sigma=2.0) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    img = np.zeros(shape)
    for (x, y), f in zip(xy, fluxes):
        img += f * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    return img


@pytest.fixture(scope="module")
def sky(tmp_path_factory):
    """A 160 x 240 nJy image with sources at x = 40, 120 (on the future section boundary), 200."""
    d = tmp_path_factory.mktemp("release_sky")
    shape = (160, 240)
    w = tan_wcs(shape)
    xy = [(40.3, 80.2), (120.4, 79.6), (200.1, 80.5)]
    img = gaussians(shape, xy, [500.0, 800.0, 300.0]) + np.random.default_rng(0).normal(0, 0.05, shape)
    img = img.astype("f4")
    ra, dec = w.all_pix2world([p[0] for p in xy], [p[1] for p in xy], 0)
    cat = Table({"ID": [1, 2, 3], "RA_1": ra, "DEC_1": dec})
    cat_path = d / "cat.fits"
    cat.write(cat_path)
    full = d / "full.fits"
    fits.PrimaryHDU(img, header=_header(w, BUNIT="nJy")).writeto(full)
    return {"dir": d, "w": w, "img": img, "shape": shape, "cat": cat, "cat_path": cat_path, "full": full, "xy": xy}


def _header(w: WCS, **cards) -> fits.Header:
    h = w.to_header()
    for k, v in cards.items():
        h[k] = v
    return h


def write_sections(sky, x_cuts: list[tuple[int, int]], stem: str, **cards) -> list[Path]:
    """Sections ``img[:, a:b]`` of the sky image, each with its shifted WCS."""
    out = []
    for k, (a, b) in enumerate(x_cuts):
        w = sky["w"].slice((slice(None), slice(a, b)))
        p = sky["dir"] / f"{stem}_sect{k + 1}_drz.fits"
        fits.PrimaryHDU(np.ascontiguousarray(sky["img"][:, a:b]), header=_header(w, BUNIT="nJy", **cards)).writeto(
            p, overwrite=True)
        out.append(p)
    return out


# --------------------------------------------------------------------------- sections


def test_stamp_across_a_section_boundary_is_assembled(sky):
    # Two sections overlapping by 20 px (< the 32 px stamp): source 2 at x = 120 lies in neither whole.
    secs = write_sections(sky, [(0, 130), (110, 240)], "two")
    whole = cut_stamps(sky["cat_path"], {"F160W": sky["full"]}, size=S)
    parts = cut_stamps(sky["cat_path"], {"F160W": secs}, size=S)
    assert len(parts.catalog) == 3 and len(parts.rejected) == 0
    a = np.argsort(whole.catalog["ID"])
    b = np.argsort(parts.catalog["ID"])
    assert_allclose(parts.stamps[b], whole.stamps[a], rtol=0, atol=0)
    cat = parts.catalog[b]
    assert list(cat["galearn_assembled_F160W"]) == [False, True, False]
    assert list(cat["galearn_file_F160W"]) == ["two_sect1_drz.fits", "two_sect1_drz.fits", "two_sect2_drz.fits"]
    assert parts.info["files"]["F160W"] == ["two_sect1_drz.fits", "two_sect2_drz.fits"]
    assert [s["offset"] for s in parts.info["grids"][0]["sections"]] == [[0, 0], [-110, 0]]
    # A glob in the path gives the same files (sorted).
    globbed = cut_stamps(sky["cat_path"], {"F160W": str(sky["dir"] / "two_sect*_drz.fits")}, size=S)
    assert_allclose(np.sort(globbed.stamps.ravel()), np.sort(parts.stamps.ravel()))


def test_stamp_over_a_gap_between_sections_is_rejected(sky):
    secs = write_sections(sky, [(0, 112), (117, 240)], "gap")  # 5 px gap inside the stamp of x = 120
    res = cut_stamps(sky["cat_path"], {"F160W": secs}, size=S)
    assert dict(zip(res.rejected["id"], res.rejected["reason"])) == {"2": "stamp partly off mosaic (F160W)"}
    assert len(res.catalog) == 2


# --------------------------------------------------------------------------- weight / RMS maps


def test_separate_weight_map_zeroes_a_region(sky, tmp_path):
    wht = np.ones(sky["shape"], dtype="f4")
    x, y = sky["xy"][0]
    wht[:, : int(x) - 2] = 0.0  # no data left of source 1: 14 of its 32 stamp columns
    wpath = tmp_path / "weight.fits"
    fits.PrimaryHDU(wht, header=sky["w"].to_header()).writeto(wpath)
    res = cut_stamps(sky["cat_path"], {"F160W": sky["full"]}, size=S, weights={"F160W": wpath})
    assert dict(zip(res.rejected["id"], res.rejected["reason"])) == {"1": "too many bad pixels (F160W)"}
    assert res.info["weight_maps"]["F160W"][0] == {"file": "full.fits", "weight": "weight.fits[0]",
                                                   "kind": "weight", "from": "--weight"}
    ok = cut_stamps(sky["cat_path"], {"F160W": sky["full"]}, size=S, weights={"F160W": wpath}, max_bad_fraction=0.5)
    k = list(ok.catalog["ID"]).index(1)
    x0 = int(np.floor(x + 0.5)) - S // 2
    n_bad = int(x) - 2 - x0
    assert np.all(ok.stamps[k, 0, :, :n_bad] == 0) and np.all(ok.stamps[k, 0, :, n_bad:] != 0)
    # The same region as an RMS map (0 = no data) does the same.
    rms = np.where(wht > 0, 0.05, 0.0).astype("f4")
    rpath = tmp_path / "rms.fits"
    fits.PrimaryHDU(rms, header=sky["w"].to_header()).writeto(rpath)
    via_rms = cut_stamps(sky["cat_path"], {"F160W": sky["full"]}, size=S, rms={"F160W": rpath}, max_bad_fraction=0.5)
    assert_allclose(via_rms.stamps, ok.stamps)
    assert via_rms.info["weight_maps"]["F160W"][0]["kind"] == "rms"


def test_weight_map_of_another_shape_is_refused(sky, tmp_path):
    p = tmp_path / "small_wht.fits"
    fits.PrimaryHDU(np.ones((10, 10), "f4"), header=tan_wcs((10, 10)).to_header()).writeto(p)
    with pytest.raises(BadValueError, match="must be on its image's grid"):
        cut_stamps(sky["cat_path"], {"F160W": sky["full"]}, size=S, weights={"F160W": p})


def test_companion_weight_file_found_by_name(sky, tmp_path, capsys):
    sci = tmp_path / "hlsp_x_f160w_v1.0_drz.fits"
    shutil.copy(sky["full"], sci)
    wht = np.ones(sky["shape"], dtype="f4")
    wht[:, 180:] = 0  # source 3 (x = 200) has no weight
    fits.PrimaryHDU(wht, header=sky["w"].to_header()).writeto(tmp_path / "hlsp_x_f160w_v1.0_wht.fits")
    assert companion_weight(sci) == (tmp_path / "hlsp_x_f160w_v1.0_wht.fits", "weight")
    # GOODS v2.0 names (drz_img -> wht_img) and _sci -> _rms
    (tmp_path / "h_sb_sect23_v2.0_drz_img.fits").touch()
    (tmp_path / "h_sb_sect23_v2.0_wht_img.fits").touch()
    assert companion_weight(tmp_path / "h_sb_sect23_v2.0_drz_img.fits")[0].name == "h_sb_sect23_v2.0_wht_img.fits"
    (tmp_path / "field_f444w_sci.fits").touch()
    (tmp_path / "field_f444w_rms.fits").touch()
    assert companion_weight(tmp_path / "field_f444w_sci.fits") == (tmp_path / "field_f444w_rms.fits", "rms")
    assert companion_weight(sky["full"]) is None
    files = resolve_band_files({"F160W": sci})
    assert files["F160W"][0].weight_from == "companion"
    ws = tmp_path / "ws"
    code = main(["cutouts", "--catalog", str(sky["cat_path"]), "--image", f"F160W={sci}", "--size", str(S),
                 "--workspace", str(ws)])
    out = capsys.readouterr().out
    assert code == 0
    assert "weight map (companion): hlsp_x_f160w_v1.0_wht.fits[0]" in out
    assert "2 stamps, 1 rejected" in out


# --------------------------------------------------------------------------- calibration


def test_resolve_calibration_keywords():
    area = 0.06**2
    zp = 25.946
    f = njy_factor_from_zeropoint(zp)
    assert_allclose(njy_factor_from_zeropoint(AB_NJY_ZEROPOINT), 1.0)
    c = resolve_calibration([fits.Header({"BUNIT": "ELECTRONS/S", "PHOTZP": zp})], "F160W", pixel_area_arcsec2=area)
    assert c.source == "PHOTZP"
    assert_allclose(c.factor, f)
    # PHOTFLAM + PHOTPLAM with the same AB zero point (ZP = -2.5 log10(PHOTFLAM PLAM^2 / c) - 48.6)
    plam = 15369.2
    flam = 3631e-23 * 10 ** (-0.4 * zp) * 2.99792458e18 / plam**2
    c = resolve_calibration([fits.Header({"PHOTFLAM": flam, "PHOTPLAM": plam, "PHOTZPT": -21.1})], "F160W",
                            pixel_area_arcsec2=area)
    assert c.source == "PHOTFLAM+PHOTPLAM"
    assert_allclose(c.factor, f, rtol=1e-9)
    assert_allclose(c.zeropoint_ab, zp, atol=1e-9)
    # PHOTFNU in the primary header, image in an extension
    c = resolve_calibration([fits.Header({"BUNIT": "ELECTRONS/S"}), fits.Header({"PHOTFNU": 3631 * 10 ** (-0.4 * zp)})],
                            "F160W", pixel_area_arcsec2=area)
    assert c.source == "PHOTFNU"
    assert_allclose(c.factor, f, rtol=1e-9)
    # Physical units: uJy per pixel and MJy/sr (times the pixel solid angle)
    assert_allclose(resolve_calibration([fits.Header({"BUNIT": "uJy"})], "F160W", pixel_area_arcsec2=area).factor, 1e3)
    sr = area / (180 / math.pi * 3600) ** 2
    c = resolve_calibration([fits.Header({"BUNIT": "MJy/sr"})], "F444W", pixel_area_arcsec2=area)
    assert c.source == "BUNIT"
    assert_allclose(c.factor, 1e15 * sr)
    # Electrons (not per second) with a per-second keyword: divided by EXPTIME
    c = resolve_calibration([fits.Header({"BUNIT": "ELECTRONS", "EXPTIME": 1000.0, "MAGZERO": zp})], "F160W",
                            pixel_area_arcsec2=area)
    assert_allclose(c.factor, f / 1000.0)
    # --zeropoint wins over the header
    c = resolve_calibration([fits.Header({"PHOTZP": 20.0})], "F160W", pixel_area_arcsec2=area, zeropoint=zp)
    assert c.source == "--zeropoint"
    assert_allclose(c.factor, f)


def test_two_zero_points_give_the_physical_colour_of_a_calibrated_pair(sky, tmp_path):
    # Source fluxes in nJy; band A stored in electrons/s with ZP 25.0, band B with ZP 26.5 (PHOTFLAM style).
    njy = sky["img"].astype("f8")
    zp_a, zp_b = 25.0, 26.5
    plam = 8000.0
    flam_b = 3631e-23 * 10 ** (-0.4 * zp_b) * 2.99792458e18 / plam**2
    pa, pb = tmp_path / "a.fits", tmp_path / "b.fits"
    fits.PrimaryHDU((njy / njy_factor_from_zeropoint(zp_a)).astype("f4"),
                    header=_header(sky["w"], BUNIT="ELECTRONS/S", ZP=zp_a)).writeto(pa)
    fits.PrimaryHDU((1.7 * njy / njy_factor_from_zeropoint(zp_b)).astype("f4"),
                    header=_header(sky["w"], BUNIT="ELECTRONS/S", PHOTFLAM=flam_b, PHOTPLAM=plam)).writeto(pb)
    # The same sky, already calibrated (nJy), B 1.7x brighter: colour -2.5 log10(1.7).
    ca, cb = tmp_path / "ca.fits", tmp_path / "cb.fits"
    fits.PrimaryHDU(njy.astype("f4"), header=_header(sky["w"], BUNIT="nJy")).writeto(ca)
    fits.PrimaryHDU((1.7 * njy).astype("f4"), header=_header(sky["w"], BUNIT="nJy")).writeto(cb)
    raw = cut_stamps(sky["cat_path"], {"F606W": pa, "F814W": pb}, size=S)
    ref = cut_stamps(sky["cat_path"], {"F606W": ca, "F814W": cb}, size=S)

    def colour(res):
        flux = res.stamps.sum(axis=(2, 3))
        return -2.5 * np.log10(flux[:, 1] / flux[:, 0])

    assert_allclose(colour(raw), colour(ref), atol=1e-5)
    assert_allclose(colour(ref), -2.5 * np.log10(1.7), atol=1e-5)
    assert_allclose(raw.stamps, ref.stamps, rtol=1e-5, atol=1e-4)
    # Uncalibrated, the colour is off by the zero-point difference.
    off = cut_stamps(sky["cat_path"], {"F606W": pa, "F814W": pb}, size=S, calibrate=False)
    assert_allclose(colour(off) - colour(ref), zp_a - zp_b, atol=1e-4)
    cal = raw.info["calibration"]
    assert cal["F606W"][0]["source"] == "ZP" and cal["F814W"][0]["source"] == "PHOTFLAM+PHOTPLAM"
    assert raw.info["physical_unit"] == "nJy per pixel"


def test_band_without_calibration_is_refused(sky, tmp_path, capsys):
    p = tmp_path / "nocal_drz.fits"
    fits.PrimaryHDU(sky["img"], header=_header(sky["w"], BUNIT="ELECTRONS/S")).writeto(p)
    ws = tmp_path / "ws"
    args = ["cutouts", "--catalog", str(sky["cat_path"]), "--image", f"F160W={sky['full']}",
            "--image", f"F125W={p}", "--size", str(S), "--workspace", str(ws)]
    code = main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in ("band F125W", "nocal_drz.fits", "PHOTFLAM+PHOTPLAM", "MAGZERO", "BUNIT", "--zeropoint F125W=ZP_AB"):
        assert needle in lines[0], (needle, lines[0])
    code = main(args + ["--zeropoint", "F125W=26.23"])
    out = capsys.readouterr().out
    assert code == 0 and "from --zeropoint" in out


# --------------------------------------------------------------------------- segmentation map


def test_segmap_replaces_exactly_the_neighbour_pixels(sky, tmp_path):
    # Segments: 1 around source 1, 7 a neighbour 9 px to its right (inside its stamp), 2 around source 2.
    seg = np.zeros(sky["shape"], dtype=np.int32)
    x1, y1 = (int(round(v)) for v in sky["xy"][0])
    seg[y1 - 4 : y1 + 5, x1 - 4 : x1 + 5] = 1
    seg[y1 - 3 : y1 + 3, x1 + 7 : x1 + 12] = 7
    x2, y2 = (int(round(v)) for v in sky["xy"][1])
    seg[y2 - 4 : y2 + 5, x2 - 4 : x2 + 5] = 2
    sp = tmp_path / "seg.fits"
    fits.PrimaryHDU(seg, header=sky["w"].to_header()).writeto(sp)
    plain = cut_stamps(sky["cat_path"], {"F160W": sky["full"]}, size=S)
    masked = cut_stamps(sky["cat_path"], {"F160W": sky["full"]}, size=S, segmap=sp, random_state=3)
    again = cut_stamps(sky["cat_path"], {"F160W": sky["full"]}, size=S, segmap=sp, random_state=3)
    assert_allclose(masked.stamps, again.stamps)  # seeded
    k = list(masked.catalog["ID"]).index(1)
    x0 = int(np.floor(sky["xy"][0][0] + 0.5)) - S // 2
    y0 = int(np.floor(sky["xy"][0][1] + 0.5)) - S // 2
    stamp_seg = seg[y0 : y0 + S, x0 : x0 + S]
    neighbour = stamp_seg == 7
    changed = masked.stamps[k, 0] != plain.stamps[k, 0]
    assert neighbour.sum() == 30 and np.array_equal(changed, neighbour)
    assert_allclose(float(masked.catalog["galearn_masked_fraction"][k]), 30 / S**2, rtol=1e-6)
    # The replaced pixels are sky-like: mean ~ 0, spread ~ the 0.05 nJy noise (30 draws).
    vals = masked.stamps[k, 0][neighbour]
    assert abs(vals.mean()) < 0.05 and 0.02 < vals.std() < 0.1
    # Source 2's stamp holds no other segment: untouched.
    k2 = list(masked.catalog["ID"]).index(2)
    assert_allclose(masked.stamps[k2], plain.stamps[k2])
    assert masked.info["segmap"]["file"] == "seg.fits"


# --------------------------------------------------------------------------- release-shaped mock + README


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    pytest.importorskip("galsim")
    pytest.importorskip("photutils")
    from galearn.config import SimulateConfig
    from galearn.mock import simulate_field
    from galearn.mock.release import write_release

    d = tmp_path_factory.mktemp("mock_release")
    cfg = SimulateConfig(n_galaxies=120, n_stars=3, random_state=2, density_per_arcmin2=220.0, n_jobs=1)
    default = simulate_field(d / "default", cfg, progress=False)
    files = write_release(d / "default", d / "release", overlap=16)  # many stamps on boundaries
    return {"dir": d, "default": default, "release": d / "release", "files": files}


def test_release_mock_layout(release):
    files = release["files"]
    assert len(files["F435W"]) == 4 and len(files["F850LP"]) == 4 and len(files["F160W"]) == 2
    for band in ("F435W", "F850LP", "F160W"):
        for sci, wht in zip(files[band], files[f"{band}_wht"]):
            assert companion_weight(sci) == (wht, "weight")
            h = fits.getheader(sci)
            assert h["BUNIT"] == "ELECTRONS/S" and "PHOTZP" not in h and "MAGZERO" not in h
            assert ("PHOTFNU" in h) == (band == "F160W") and "PHOTFLAM" in h and "PHOTPLAM" in h
    cat = Table.read(files["catalog"][0])
    for col in ("ID", "RA_1", "DEC_1", "RA_2", "DEC_2", "zbest", "CLASS_STAR", "Hmag", "restUXbessel"):
        assert col in cat.colnames
    seg = fits.getdata(files["segmap"][0])
    full = fits.getdata(release["default"]["F160W"])
    assert seg.shape == full.shape and seg.dtype.kind == "i"
    # Bright catalogue galaxies carry their own ID at their position.
    w = WCS(fits.getheader(files["segmap"][0]))
    bright = np.flatnonzero(np.asarray(cat["Hmag"]) < 23)
    x, y = w.all_world2pix(np.asarray(cat["RA_1"])[bright], np.asarray(cat["DEC_1"])[bright], 0)
    own = seg[np.round(y).astype(int), np.round(x).astype(int)]
    assert np.mean(own == np.asarray(cat["ID"])[bright]) > 0.9


def test_release_stamps_equal_default_mock_stamps(release):
    d = release["default"]
    a = cut_stamps(d["catalog"], {b: d[b] for b in ("F435W", "F850LP", "F160W")})
    r = release["files"]
    b = cut_stamps(r["catalog"][0], {band: r[band] for band in ("F435W", "F850LP", "F160W")})
    assert list(a.rejected["reason"]) == list(b.rejected["reason"][np.argsort(b.rejected["row"])])
    ia, ib = np.argsort(a.catalog["galearn_row"]), np.argsort(b.catalog["galearn_row"])
    assert np.array_equal(np.asarray(a.catalog["galearn_row"])[ia], np.asarray(b.catalog["galearn_row"])[ib])
    # Default mock: PHOTZP; release: PHOTFLAM/PHOTPLAM and PHOTFNU -- the same nJy to 1e-6.
    assert_allclose(b.stamps[ib], a.stamps[ia], rtol=1e-5, atol=1e-6 * np.abs(a.stamps).max())
    assert sum(int(np.sum(b.catalog[c])) for c in b.catalog.colnames if c.startswith("galearn_assembled")) >= 1


def _readme_block() -> list[str]:
    """The commands of the README's "Your own data" bash block (continuation lines joined)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Your own data"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_readme_your_own_data_commands_run_as_written(release, tmp_path):
    """The README's commands, copied as a user would, in a folder holding the release-shaped mock."""
    pytest.importorskip("torch")
    pytest.importorskip("openTSNE")
    pytest.importorskip("matplotlib")
    work = tmp_path / "download"
    shutil.copytree(release["release"], work)
    commands = _readme_block()
    assert commands and commands[0].startswith("galearn cutouts")
    # Every file the commands name exists in the mock release (globs expanded as galearn does).
    cut = shlex.split(commands[0])
    for opt, val in zip(cut, cut[1:]):
        if opt in ("--catalog", "--image", "--segmap"):
            pattern = val.split("=", 1)[-1]
            assert list(work.glob(pattern)), (opt, val)
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    for cmd in commands:
        res = subprocess.run(["bash", "-e", "-c", cmd], cwd=work, env=env, capture_output=True, text=True,
                             timeout=900)
        assert res.returncode == 0, f"{cmd}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    assert (work / "ws" / "report" / "index.html").exists()
    from galearn.store import open_sample, read_metrics

    s = open_sample(work / "ws" / "sample.h5")
    assert s.extra["physical_unit"] == "nJy per pixel"
    assert {c["source"] for cals in s.extra["calibration"].values() for c in cals} == {"PHOTFNU", "PHOTFLAM+PHOTPLAM"}
    assert all(w["from"] == "companion" for ws_ in s.extra["weight_maps"].values() for w in ws_)
    assert "agreement" in read_metrics(work / "ws" / "report" / "metrics.json")


def test_run_config_images_sections_and_companions(sky, tmp_path):
    """`[images]` in the run configuration: globs / lists per band; the pipeline's inputs list every file."""
    from galearn.config import CutoutConfig, load_config
    from galearn.survey.inputs import input_files

    secs = write_sections(sky, [(0, 130), (110, 240)], "cfg")
    for p in secs:
        shutil.copy(p, p.with_name(p.name.replace("_drz", "_wht")))
    toml = tmp_path / "run.toml"
    toml.write_text(f'catalog = "{sky["cat_path"]}"\n[images]\nF160W = "{sky["dir"] / "cfg_sect*_drz.fits"}"\n'
                    f'F435W = ["{secs[0]}", "{secs[1]}"]\n[cutouts]\nsegmap = "{sky["full"]}"\n')
    cfg = load_config(toml)
    files = input_files(cfg.images, cfg.cutouts)
    names = sorted(p.name for p in files)
    assert names.count("cfg_sect1_drz.fits") == 2 and names.count("cfg_sect1_wht.fits") == 2
    assert "full.fits" in names and len(files) == 9
    with pytest.raises(Exception, match="no file matches"):
        input_files({"F160W": str(tmp_path / "nothing*_drz.fits")}, CutoutConfig())
