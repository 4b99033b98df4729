"""Label-free aperture colours + concentration appended to the clustering features (galearn.features.aperture)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from conftest import make_stamp_workspace, write_feature_files

from galearn.config import ClassifyConfig
from galearn.errors import BadValueError
from galearn.features.aperture import aperture_fluxes, aperture_weights, colour_block, sample_colour_block
from galearn.store import open_sample, read_metrics, read_table, update_manifest

BANDS = ["F435W", "F850LP", "F160W"]


def _gauss_stamps(n, sigma, fluxes, size=32, noise=0.0, seed=0):
    """``n`` centred circular Gaussians of width ``sigma`` (pixels) with total flux ``fluxes[b]`` per band."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    sig = np.broadcast_to(np.asarray(sigma, dtype="f8"), (n,))[:, None, None, None]
    profile = np.exp(-(yy ** 2 + xx ** 2)[None, None] / (2 * sig ** 2)) / (2 * np.pi * sig ** 2)
    stamps = np.asarray(fluxes, dtype="f8").reshape(-1, len(BANDS), 1, 1) * profile
    return stamps + np.random.default_rng(seed).normal(0, noise, stamps.shape) if noise else stamps


def test_aperture_weights_area_and_fluxes():
    for r in (2.0, 3.0, 6.0, 12.0):
        assert aperture_weights(64, 64, r).sum() == pytest.approx(np.pi * r * r, rel=0.01)
    assert aperture_weights(8, 8, 100.0).sum() == pytest.approx(64.0)  # the whole stamp
    flat = np.ones((2, 3, 16, 16))
    F = aperture_fluxes(flat, [3.0, 5.0])
    assert F.shape == (2, 3, 2)
    np.testing.assert_allclose(F[..., 0], aperture_weights(16, 16, 3.0).sum())
    with pytest.raises(BadValueError):
        aperture_weights(8, 8, 0.0)


def test_colour_block_measures_the_colour_and_concentration():
    # the same galaxy, 10x brighter in F160W than F435W: colours are -2.5 log10 of the band ratios
    fluxes = np.array([[100.0, 300.0, 1000.0]] * 2)
    compact = _gauss_stamps(2, [1.5, 4.0], fluxes)
    values, names = colour_block(compact, BANDS, noise_sigma=np.full(3, 1e-6))
    assert names == ["colour_F435W-F850LP", "colour_F850LP-F160W", "concentration_F160W"]
    np.testing.assert_allclose(values[:, 0], -2.5 * np.log10(100 / 300), atol=1e-9)
    np.testing.assert_allclose(values[:, 1], -2.5 * np.log10(300 / 1000), atol=1e-9)
    assert values[0, 2] > values[1, 2]  # the compact galaxy is the more concentrated
    # band order follows the wavelength, not the order given
    rev, rnames = colour_block(compact[:, ::-1], BANDS[::-1], noise_sigma=np.full(3, 1e-6))
    assert rnames == names
    np.testing.assert_allclose(rev, values)
    # empty / negative apertures are floored at 1 sigma: finite and bounded
    empty, _ = colour_block(np.zeros((3, 3, 32, 32)) - 1.0, BANDS, noise_sigma=np.ones(3))
    assert np.isfinite(empty).all() and np.allclose(empty[:, :2], 0.0)
    with pytest.raises(BadValueError):
        colour_block(np.zeros((2, 2, 8, 8)), BANDS)


def test_sample_colour_block_label_free_deterministic_batched(tmp_path):
    rng = np.random.default_rng(3)
    n = 40
    phys = _gauss_stamps(n, rng.uniform(1.0, 4.0, n), rng.uniform(50, 500, (n, 3)), noise=0.5, seed=1).astype("f4")
    stretched = np.clip(phys / phys.max(), 0, 1)
    blocks = []
    for i, truth in enumerate((np.repeat(["a", "b"], n // 2), np.tile(["x", "y"], n // 2))):  # labels differ
        ws = make_stamp_workspace(tmp_path / f"ws{i}", stamps=stretched, physical=phys, bands=BANDS,
                                  columns={"truth_class": truth})
        sample = open_sample(ws.sample)
        values, names = sample_colour_block(sample)
        again, _ = sample_colour_block(sample, batch=7)  # batches do not change anything
        np.testing.assert_array_equal(values, again)
        assert values.shape == (n, 3) and len(names) == 3 and np.isfinite(values).all()
        blocks.append(values)
    np.testing.assert_array_equal(blocks[0], blocks[1])  # the labels play no part
    images = make_stamp_workspace(tmp_path / "img", stamps=stretched, physical=stretched, bands=["R", "G", "B"],
                                  kind="images")
    assert sample_colour_block(open_sample(images.sample)) is None  # display images have no colours
    assert sample_colour_block(open_sample(make_stamp_workspace(tmp_path / "nophys", stamps=stretched).sample)) \
        is None


def _two_population_workspace(root, n=200, n_small=24, seed=0, kind="mock"):
    """CNN features that hold nothing (noise); the stamps' colours alone mark a small red, compact population."""
    rng = np.random.default_rng(seed)
    red = np.zeros(n, dtype=bool)
    red[rng.choice(n, n_small, replace=False)] = True
    fluxes = np.where(red[:, None], [[20.0, 150.0, 600.0]], [[300.0, 250.0, 220.0]]) * rng.uniform(0.7, 1.3, (n, 1))
    phys = _gauss_stamps(n, np.where(red, 1.3, 3.0) * rng.uniform(0.9, 1.1, n), fluxes, noise=0.05,
                         seed=seed).astype("f4")
    columns = {"truth_morph": np.where(red, "early-type", "disk")}
    bands = BANDS if kind == "mock" else ["R", "G", "B"]
    ws = make_stamp_workspace(root, stamps=np.clip(phys / phys.max(), 0, 1), physical=phys, bands=bands,
                              columns=columns, kind=kind)
    X = rng.normal(size=(n, 24))
    write_feature_files(ws, open_sample(ws.sample), ("efficientnet-lite0",), X, rng)
    update_manifest(ws, {"features": {"backbone": "efficientnet-lite0"}})
    return ws


def test_classify_appends_the_colours_and_finds_the_small_red_population(tmp_path):
    from galearn.evaluate import run_classify

    cfg = dict(compare=("truth_morph",), cluster_space="pca", stability_resamples=2)
    ws = _two_population_workspace(tmp_path / "ws")
    run_classify(ws, ClassifyConfig(**cfg))
    clusters = read_metrics(ws.metrics)["clusters"]
    rec = clusters["colours"]
    assert rec["fused"] and rec["setting"] == "auto" and rec["weight"] == 0.2 and rec["repeats"] >= 1
    assert rec["columns"] == ["colour_F435W-F850LP", "colour_F850LP-F160W", "concentration_F160W"]
    with_colours = clusters["agreement"]["truth_morph"]["cluster_majority_balanced_accuracy"]
    assert with_colours > 0.9 and clusters["n_clusters"] <= 10
    assert clusters["clusterer"] == "spectral"  # --clusterer auto with the colours fused (docs/maps.md, round 4)
    table = read_table(ws.classes)
    assert "aperture_colour_F435W-F850LP" in table.colnames and len(table) == 200

    run_classify(ws, ClassifyConfig(colours="off", **cfg))
    clusters = read_metrics(ws.metrics)["clusters"]
    assert clusters["colours"] == {"setting": "off", "fused": False, "reason": "classify.colours = off"}
    assert clusters["clusterer"] == "kmeans"  # auto without the colours
    assert clusters["agreement"]["truth_morph"]["cluster_majority_balanced_accuracy"] < 0.75  # features alone: noise
    assert "aperture_colour_F435W-F850LP" not in read_table(ws.classes).colnames

    images = _two_population_workspace(tmp_path / "img", kind="images")
    run_classify(images, ClassifyConfig(**cfg))
    rec = read_metrics(images.metrics)["clusters"]["colours"]
    assert not rec["fused"] and "display images" in rec["reason"]
    with pytest.raises(BadValueError, match="display images"):
        run_classify(images, ClassifyConfig(colours="on", **cfg))
