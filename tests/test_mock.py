"""Tests of the mock HST GOODS-S field (galearn.mock)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

galsim = pytest.importorskip("galsim")
pytest.importorskip("speclite")

from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

from galearn.config import SimulateConfig  # noqa: E402
from galearn.errors import BadValueError  # noqa: E402
from galearn.survey.uvj import QUIESCENT, STAR_FORMING, uvj_class  # noqa: E402
from galearn.mock import simulate_field  # noqa: E402
from galearn.mock.field import BANDS, build_truth  # noqa: E402
from galearn.mock.populations import ZERO_POINTS_AB, sample_population  # noqa: E402
from galearn.mock.seds import HST_BANDS, photometry_grid, template_magnitude  # noqa: E402

SMALL = SimulateConfig(n_galaxies=60, n_stars=4, random_state=3, density_per_arcmin2=20.0, noise=False, n_jobs=1)


@pytest.fixture(scope="module")
def clean_field(tmp_path_factory):
    out = tmp_path_factory.mktemp("mock_clean")
    paths = simulate_field(out, SMALL, progress=False)
    return paths


def _catalog(paths):
    return Table.read(paths["catalog"], character_as_bytes=False)


def _isolated_bright(cat, *, hmag_max=23.5, min_sep_arcsec=5.0, margin_pix=60, weight=None):
    """Indices of bright galaxies (not pairs) with no other source within ``min_sep_arcsec``,
    whose surroundings (``margin_pix``) lie inside the footprint (weight > 0) of a band."""
    x, y = np.asarray(cat["X_IMAGE"]), np.asarray(cat["Y_IMAGE"])
    d = np.hypot(x[:, None] - x[None], y[:, None] - y[None]) * 0.06
    np.fill_diagonal(d, np.inf)
    ok = (
        (np.asarray(cat["Hmag"]) < hmag_max)
        & np.isin(cat["truth_class"], ["elliptical", "spiral", "edge-on", "irregular"])
        & (d.min(axis=1) > min_sep_arcsec)
        & (np.asarray(cat["half_light_radius_arcsec"]) < 0.6)
    )
    if "truth_rare" in cat.colnames:  # lens arcs, rings, stars and artefacts add light on purpose
        ok &= np.asarray(cat["truth_rare"]).astype(str) == "none"
    if weight is not None:
        shape = weight.shape
        ok &= (x > margin_pix + 1) & (y > margin_pix + 1) & (x < shape[1] - margin_pix - 1) & (y < shape[0] - margin_pix - 1)
        for i in np.flatnonzero(ok):
            ix, iy = int(round(x[i])) - 1, int(round(y[i])) - 1
            ok[i] = np.all(weight[iy - margin_pix:iy + margin_pix + 1, ix - margin_pix:ix + margin_pix + 1] > 0)
    return np.flatnonzero(ok)


def test_files_wcs_and_headers(clean_field):
    assert set(clean_field) == {"F435W", "F850LP", "F160W", "catalog"}
    fwhm = {}
    for band in BANDS:
        with fits.open(clean_field[band]) as hdul:
            hdr = hdul[0].header
            wcs = WCS(hdr)
            assert wcs.has_celestial and wcs.wcs.ctype[0] == "RA---TAN" and wcs.wcs.ctype[1] == "DEC--TAN"
            scale = np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600
            assert scale == pytest.approx(0.06, rel=1e-6)
            ra, dec = wcs.all_pix2world(hdr["NAXIS1"] / 2, hdr["NAXIS2"] / 2, 1)
            assert abs(ra - 53.12) < 0.01 and abs(dec + 27.81) < 0.01
            assert hdr["BUNIT"] == "ELECTRONS/S"
            assert hdr["PHOTZP"] == ZERO_POINTS_AB[band]
            assert hdr["SEED"] == SMALL.random_state
            fwhm[band] = hdr["PSF_FWHM"]
            sci, wht = hdul[0].data, hdul["WHT"].data
            outside = wht == 0
            assert 0.05 < outside.mean() < 0.7  # an irregular footprint, not the whole square
            assert np.all(sci[outside] == 0)
    assert 0.07 < fwhm["F435W"] < 0.12 and 0.08 < fwhm["F850LP"] < 0.13
    assert fwhm["F160W"] > 1.4 * fwhm["F850LP"]


def test_catalog_columns_and_truth(clean_field):
    cat = _catalog(clean_field)
    for col in ["ID", "RA_1", "DEC_1", "zbest", "CLASS_STAR", "Hmag", "ISOAREA_IMAGE_F160W", "M_neb_med_lin",
                "SFR_13a_tau", "restUXbessel", "restVbessel", "restJpalomar", "truth_class", "truth_morph",
                "bulge_fraction", "half_light_radius_arcsec", "sersic_index"]:
        assert col in cat.colnames, col
    assert len(cat) == SMALL.n_galaxies + SMALL.n_stars
    assert str(cat["RA_1"].unit) == "deg" and str(cat["M_neb_med_lin"].unit) == "solMass"
    stars = cat["truth_class"] == "star"
    assert stars.sum() == SMALL.n_stars
    assert np.all(cat["CLASS_STAR"][stars] > 0.9) and np.all(cat["CLASS_STAR"][~stars] < 0.1)
    gal = cat[~stars]
    assert np.all((gal["zbest"] >= 0.1) & (gal["zbest"] <= 2.0))
    assert np.all(gal["Hmag"] < SMALL.mag_limit)
    assert np.mean(gal["ISOAREA_IMAGE_F160W"] > 0) > 0.9  # a few faint, extended galaxies fall below the isophote
    assert set(gal["truth_morph"]) <= {"early-type", "disk", ""}
    assert np.all((gal["truth_morph"] == "early-type") == (gal["truth_class"] == "elliptical"))
    # Hmag is the F160W truth magnitude, and the catalogue records the seed.
    np.testing.assert_allclose(cat["Hmag"], cat["mag_F160W"])
    assert cat.meta["SEED"] == SMALL.random_state


def test_positions_land_on_sources(clean_field):
    cat = _catalog(clean_field)
    img = fits.getdata(clean_field["F160W"])
    idx = _isolated_bright(cat, weight=fits.getdata(clean_field["F160W"], "WHT"), margin_pix=42)
    assert len(idx) >= 5
    r = 40
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    for i in idx:
        x, y = float(cat["X_IMAGE"][i]), float(cat["Y_IMAGE"][i])
        ix, iy = int(round(x)) - 1, int(round(y)) - 1
        cut = np.clip(img[iy - r:iy + r + 1, ix - r:ix + r + 1].astype("f8"), 0, None)
        cx = ix + 1 + (cut * xx).sum() / cut.sum()
        cy = iy + 1 + (cut * yy).sum() / cut.sum()
        assert np.hypot(cx - x, cy - y) < 0.5, (i, cx - x, cy - y)
    # The WCS maps the catalogue RA/Dec onto the same pixels.
    wcs = WCS(fits.getheader(clean_field["F160W"]))
    px, py = wcs.all_world2pix(cat["RA_1"], cat["DEC_1"], 1)
    np.testing.assert_allclose(px, cat["X_IMAGE"], atol=1e-3)
    np.testing.assert_allclose(py, cat["Y_IMAGE"], atol=1e-3)


def test_aperture_flux_matches_catalog_magnitude(clean_field):
    cat = _catalog(clean_field)
    r = 50  # 3 arcsec
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = np.hypot(xx, yy) <= r
    for band in BANDS:
        img = fits.getdata(clean_field[band])
        idx = _isolated_bright(cat, weight=fits.getdata(clean_field[band], "WHT"), margin_pix=r + 2)
        assert len(idx) >= 5
        for i in idx:
            ix, iy = int(round(float(cat["X_IMAGE"][i]))) - 1, int(round(float(cat["Y_IMAGE"][i]))) - 1
            flux = img[iy - r:iy + r + 1, ix - r:ix + r + 1][disk].sum()
            mag = ZERO_POINTS_AB[band] - 2.5 * np.log10(flux)
            assert abs(mag - float(cat[f"mag_{band}"][i])) < 0.05, (band, i, mag, float(cat[f"mag_{band}"][i]))


def test_uvj_truth_agreement_population():
    # Catalogue generation alone (no rendering), many galaxies.
    pop = sample_population(3000, random_state=1)["sources"]
    cls = uvj_class(pop["abs_u"], pop["abs_v"], pop["abs_j"], pop["z"])
    q = pop["truth_activity"] == "quiescent"
    assert q.sum() > 100 and (~q).sum() > 1000
    assert np.mean(cls[q] == QUIESCENT) >= 0.9
    assert np.mean(cls[~q] == STAR_FORMING) >= 0.9
    # Star-forming galaxies span a range of dust: some are dusty-red (U-V > 1.5).
    uv = pop["abs_u"] - pop["abs_v"]
    assert np.mean(uv[~q] > 1.5) > 0.03


def test_population_classes_and_sizes():
    pop = sample_population(2000, random_state=2)["sources"]
    classes, counts = np.unique(pop["truth_class"], return_counts=True)
    frac = dict(zip(classes, counts / counts.sum()))
    for c in ("elliptical", "spiral", "edge-on", "irregular", "merger"):
        assert frac.get(c, 0) > 0.03, (c, frac)
    # Early types are more compact than disks at fixed mass (van der Wel et al. 2014).
    early = pop["truth_class"] == "elliptical"
    disk = pop["truth_class"] == "spiral"
    m = np.log10(pop["mass"])
    sel = (m > 10.0) & (m < 10.8)
    assert np.median(pop["half_light_radius_arcsec"][early & sel]) < np.median(pop["half_light_radius_arcsec"][disk & sel])
    # Quiescent galaxies have low specific SFR.
    ssfr = np.log10(pop["sfr"] / pop["mass"])
    q = pop["truth_activity"] == "quiescent"
    assert np.median(ssfr[q]) < -11 < -10 < np.median(ssfr[~q])


def test_size_mass_relation_follows_van_der_wel_and_flattens_for_low_mass_early_types():
    from galearn.mock.populations import van_der_wel_radius_kpc

    # Table 1 of van der Wel et al. (2014) at its redshift bins, M = 5e10 Msun.
    np.testing.assert_allclose(van_der_wel_radius_kpc(np.log10(5e10), 0.25, True), 10**0.60)
    np.testing.assert_allclose(van_der_wel_radius_kpc(np.log10(5e10), 0.75, False), 10**0.78)
    # Below 2e10 Msun early types follow a flat relation, continuous at the pivot:
    # a 1e9 Msun elliptical at z = 0.5 is ~1 kpc, resolved by HST, not ~0.2 kpc.
    lm = np.log10(2e10)
    np.testing.assert_allclose(van_der_wel_radius_kpc(lm - 1e-9, 0.5, True),
                               van_der_wel_radius_kpc(lm + 1e-9, 0.5, True), rtol=1e-6)
    r9 = van_der_wel_radius_kpc(9.0, 0.5, True)
    assert 0.7 < r9 < 1.5
    assert r9 < van_der_wel_radius_kpc(9.0, 0.5, False)


def test_photometry_grid_matches_galsim():
    grid = photometry_grid()
    share = galsim.meta_data.share_dir
    sed = galsim.SED(f"{share}/SEDs/CWW_Sbc_ext.sed", "Angstrom", "flambda").atRedshift(1.23)
    mags = {}
    for band, fname in HST_BANDS.items():
        bp = galsim.Bandpass(f"{share}/bandpasses/{fname}", "nm").withZeropoint("AB")
        mags[band] = sed.calculateMagnitude(bp)
    ours = {b: float(grid.observed(np.array([1]), b, np.array([1.23]), np.array([0.0]))[0]) for b in HST_BANDS}
    # Colours agree with GalSim's own integration (the zero points differ by a constant).
    assert ours["F435W"] - ours["F160W"] == pytest.approx(mags["F435W"] - mags["F160W"], abs=0.01)
    assert ours["F850LP"] - ours["F160W"] == pytest.approx(mags["F850LP"] - mags["F160W"], abs=0.01)
    exact = template_magnitude("Sbc", "F160W", 1.23, 0.7)
    approx = float(grid.observed(np.array([1]), "F160W", np.array([1.23]), np.array([0.7]))[0])
    assert exact == pytest.approx(approx, abs=0.01)


def test_restframe_colours_match_speclite():
    import speclite.filters
    from astropy import units as u

    from galearn.mock.seds import load_template

    wave_nm, flam = load_template("E")
    filters = speclite.filters.load_filters("bessell-U", "bessell-V", "twomass-J")
    spec = flam * u.erg / (u.s * u.cm**2 * u.Angstrom)
    ab = filters.get_ab_magnitudes(spec, wave_nm * 10 * u.Angstrom)
    ours = {b: template_magnitude("E", b) for b in "UVJ"}
    assert ours["U"] - ours["V"] == pytest.approx(ab["bessell-U"][0] - ab["bessell-V"][0], abs=0.02)
    assert ours["V"] - ours["J"] == pytest.approx(ab["bessell-V"][0] - ab["twomass-J"][0], abs=0.02)


def test_same_seed_same_files_and_workers_do_not_matter(tmp_path):
    cfg = SimulateConfig(n_galaxies=50, n_stars=2, random_state=11, n_jobs=1, field_size_pix=640)
    a = simulate_field(tmp_path / "a", cfg, progress=False)
    b = simulate_field(tmp_path / "b", cfg, progress=False)
    for key in a:
        assert a[key].read_bytes() == b[key].read_bytes(), key
    c = simulate_field(tmp_path / "c", dataclasses.replace(cfg, n_jobs=2), progress=False)
    for band in BANDS:
        np.testing.assert_array_equal(fits.getdata(a[band]), fits.getdata(c[band]))
    # Another seed, another field.
    other = build_truth(dataclasses.replace(cfg, random_state=12))["catalog"]
    assert not np.allclose(other["Hmag"], Table.read(a["catalog"])["Hmag"])
    # With noise on, the sky noise matches the header's SKYSIG where one tile covers the sky.
    from astropy.stats import mad_std

    with fits.open(a["F435W"]) as hdul:
        wht = hdul["WHT"].data
        one_tile = wht == wht[wht > 0].min()
        assert mad_std(hdul[0].data[one_tile]) == pytest.approx(hdul[0].header["SKYSIG"], rel=0.1)


@pytest.mark.parametrize("field,value", [("n_galaxies", 0), ("n_galaxies", 20001), ("mag_limit", 40.0),
                                         ("density_per_arcmin2", 0.0)])
def test_bad_config_raises(tmp_path, field, value):
    with pytest.raises(BadValueError, match=field.replace("_", "[-_.]?") if field != "n_galaxies" else "n-galaxies"):
        build_truth(dataclasses.replace(SMALL, **{field: value}))


def test_cli_simulate_with_preview(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from galearn.cli import main

    out = tmp_path / "field"
    rc = main(["simulate", "--out", str(out), "--n-galaxies", "50", "--seed", "5", "--preview", "simulate.n_jobs=1",
               "simulate.field_size_pix=640"])
    assert rc == 0, capsys.readouterr()
    for name in ("F435W.fits", "F850LP.fits", "F160W.fits", "catalog.fits", "preview_rgb.png", "preview_stamps.png"):
        assert (out / name).stat().st_size > 0, name
    capsys.readouterr()
    assert main(["simulate", "--out", str(out), "--n-galaxies", "0"]) == 2
    err = capsys.readouterr().err
    assert "n-galaxies" in err and len(err.strip().splitlines()) == 1
