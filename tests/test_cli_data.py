"""`galearn cutouts` / `galearn ingest-images` through galearn.cli.main: success and bad input (exit 2)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from galearn.cli import main
from galearn.store import open_sample, read_metrics


def _wcs(n: int) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [53.12, -27.81]
    w.wcs.crpix = [n / 2 + 0.5, n / 2 + 0.5]
    w.wcs.cd = np.diag([-0.06, 0.06]) / 3600.0
    return w


@pytest.fixture
def data(tmp_path):
    n = 200
    w = _wcs(n)
    rng = np.random.default_rng(0)
    img = rng.normal(0, 0.01, (n, n)).astype("f4")
    yy, xx = np.mgrid[0:n, 0:n]
    px = np.array([60.0, 140.0, 60.0, 140.0, 5.0])
    py = np.array([60.0, 60.0, 140.0, 140.0, 100.0])
    for x, y in zip(px[:4], py[:4]):
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0).astype("f4")
    paths = {}
    hdr = w.to_header()
    hdr["BUNIT"] = "nJy"
    for band in ("F435W", "F160W"):
        p = tmp_path / f"{band}.fits"
        fits.PrimaryHDU(img, header=hdr).writeto(p)
        paths[band] = p
    ra, dec = w.all_pix2world(px, py, 0)
    cat = Table({"ID": np.arange(1, 6), "RA_1": ra, "DEC_1": dec, "zbest": [0.5, 0.7, 1.5, 0.2, 0.3]})
    cat.write(tmp_path / "cat.ecsv")
    nowcs = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(img).writeto(nowcs)
    return {"dir": tmp_path, "cat": tmp_path / "cat.ecsv", "nowcs": nowcs, **paths}


def _run(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _images(d) -> list[str]:
    return ["--image", f"F435W={d['F435W']}", "--image", f"F160W={d['F160W']}"]


def test_cutouts_ok(data, capsys):
    ws = data["dir"] / "ws"
    code, out, err = _run(["cutouts", "--catalog", data["cat"], *_images(data), "--workspace", ws,
                           "--select", "zbest < 1", "--size", 48], capsys)
    assert code == 0, err
    assert "3 stamps, 2 rejected" in out
    s = open_sample(ws / "sample.h5")
    assert s.stamp_size == 48 and s.bands == ["F435W", "F160W"]
    assert sorted(s.rejected["reason"]) == ["cut: zbest < 1", "stamp partly off mosaic (F435W)"]
    assert read_metrics(ws / "report" / "metrics.json")["sample"]["n_images"] == 3


def test_cutouts_column_override_and_config_override(data, capsys):
    t = Table.read(data["cat"])
    t.rename_column("zbest", "zphot")
    t.write(data["dir"] / "cat2.ecsv")
    ws = data["dir"] / "ws2"
    code, out, err = _run(["cutouts", "--catalog", data["dir"] / "cat2.ecsv", *_images(data), "--workspace", ws,
                           "--column", "z=zphot", "cutouts.max_bad_fraction=0.5"], capsys)
    assert code == 0, err
    s = open_sample(ws / "sample.h5")
    assert s.columns["z"] == "zphot" and s.extra["max_bad_fraction"] == 0.5
    code, out, err = _run(["cutouts", "--catalog", data["cat"], *_images(data), "--workspace", ws,
                           "--max-bad-fraction", "0.2", "--central-brightest", "--resample", "exact"], capsys)
    assert code == 0, err
    s = open_sample(ws / "sample.h5")
    assert s.extra["max_bad_fraction"] == 0.2 and s.extra["require_central_brightest"] is True
    code, _, err = _run(["cutouts", "--catalog", data["cat"], *_images(data), "--workspace", ws,
                         "--column", "zbest"], capsys)
    assert code == 2 and "--column" in err and "ROLE=COLUMN" in err


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_missing_catalogue(data, capsys):
    code, _, err = _run(["cutouts", "--catalog", data["dir"] / "nope.fits", *_images(data),
                         "--workspace", data["dir"] / "ws"], capsys)
    _one_line_error(code, err, "nope.fits", "does not exist")


def test_missing_mosaic(data, capsys):
    code, _, err = _run(["cutouts", "--catalog", data["cat"], "--image", f"F435W={data['dir'] / 'gone.fits'}",
                         "--workspace", data["dir"] / "ws"], capsys)
    _one_line_error(code, err, "gone.fits", "F435W")


def test_fits_without_celestial_wcs(data, capsys):
    code, _, err = _run(["cutouts", "--catalog", data["cat"], "--image", f"F435W={data['nowcs']}",
                         "--workspace", data["dir"] / "ws"], capsys)
    _one_line_error(code, err, "nowcs.fits", "celestial WCS")


def test_catalogue_without_mapped_columns(data, capsys):
    Table({"ID": [1], "ra": [53.1], "dec": [-27.8]}).write(data["dir"] / "odd.csv")
    code, _, err = _run(["cutouts", "--catalog", data["dir"] / "odd.csv", *_images(data), "--preset", "candels",
                         "--workspace", data["dir"] / "ws"], capsys)
    _one_line_error(code, err, "odd.csv", "'RA_1'", "--column ra=NAME")
    Table({"name": ["a"], "lon": [53.1], "lat": [-27.8]}).write(data["dir"] / "odder.csv")
    code, _, err = _run(["cutouts", "--catalog", data["dir"] / "odder.csv", *_images(data),
                         "--workspace", data["dir"] / "ws"], capsys)
    _one_line_error(code, err, "odder.csv", "role 'ra'", "raj2000", "--column ra=NAME")
    code, _, err = _run(["cutouts", "--catalog", data["cat"], *_images(data), "--column", "z=zspec",
                         "--workspace", data["dir"] / "ws"], capsys)
    _one_line_error(code, err, "'zspec'")


def test_unknown_band_and_bad_image_option(data, capsys):
    code, _, err = _run(["cutouts", "--catalog", data["cat"], "--image", f"FOO={data['F435W']}",
                         "--workspace", data["dir"] / "ws"], capsys)
    _one_line_error(code, err, "FOO", "unknown band")
    code, _, err = _run(["cutouts", "--catalog", data["cat"], "--image", str(data["F435W"]),
                         "--workspace", data["dir"] / "ws"], capsys)
    assert code == 2 and "--image" in err and "BAND=PATH" in err


def test_empty_selection(data, capsys):
    code, _, err = _run(["cutouts", "--catalog", data["cat"], *_images(data), "--workspace", data["dir"] / "ws",
                         "--select", "zbest > 5"], capsys)
    _one_line_error(code, err, "zbest > 5", "kept 0 of 5 rows")
    assert not (data["dir"] / "ws" / "sample.h5").exists()


def test_bad_selection_expression(data, capsys):
    code, _, err = _run(["cutouts", "--catalog", data["cat"], *_images(data), "--workspace", data["dir"] / "ws",
                         "--select", "open('x').read()"], capsys)
    _one_line_error(code, err, "not allowed")


def _png(path, value=128):
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), value, dtype=np.uint8)).save(path)


def test_ingest_images_ok_and_reports_unmatched(tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    for stem in ("a1", "a2", "a3"):
        _png(d / f"{stem}.png")
    (tmp_path / "labels.csv").write_text("id,morph\na1,spiral\na2,elliptical\nzz,spiral\n")
    with pytest.warns(UserWarning):
        code, out, err = _run(["ingest-images", "--images", d, "--labels", tmp_path / "labels.csv",
                               "--workspace", tmp_path / "ws", "--size", 16], capsys)
    assert code == 0, err
    assert "2 stamps, 2 rejected" in out
    s = open_sample(tmp_path / "ws" / "sample.h5")
    assert s.bands == ["R", "G", "B"] and s.stamp_size == 16
    assert sorted(s.rejected["id"]) == ["a3", "zz"]


def test_ingest_unreadable_image(tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a1.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "labels.csv").write_text("id,morph\na1,spiral\n")
    code, _, err = _run(["ingest-images", "--images", d, "--labels", tmp_path / "labels.csv",
                         "--workspace", tmp_path / "ws"], capsys)
    _one_line_error(code, err, "a1.jpg", "could be read")
    assert not (tmp_path / "ws" / "sample.h5").exists()


def test_ingest_missing_inputs(tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    _png(d / "a1.png")
    code, _, err = _run(["ingest-images", "--images", tmp_path / "none", "--labels", tmp_path / "l.csv",
                         "--workspace", tmp_path / "ws"], capsys)
    _one_line_error(code, err, "none", "--images")
    code, _, err = _run(["ingest-images", "--images", d, "--labels", tmp_path / "l.csv",
                         "--workspace", tmp_path / "ws"], capsys)
    _one_line_error(code, err, "l.csv", "does not exist")
    (tmp_path / "l.csv").write_text("name,morph\na1,spiral\n")
    code, _, err = _run(["ingest-images", "--images", d, "--labels", tmp_path / "l.csv",
                         "--workspace", tmp_path / "ws"], capsys)
    _one_line_error(code, err, "l.csv", "'id'", "--id-column")
    code, _, err = _run(["ingest-images", "--images", d, "--labels", tmp_path / "l.csv", "--id-column", "name",
                         "--workspace", tmp_path / "ws"], capsys)
    assert code == 0, err
