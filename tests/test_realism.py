"""Realism metrics: real-vs-real sits at the baseline, visibly different sets sit far from it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from astropy.table import Table

from galearn.config import GanConfig, RunConfig
from galearn.errors import BadValueError
from galearn.morphology import measure_morphology, morphology_wasserstein
from galearn.evaluate.realism import frechet_distance, kernel_distance, memorised_fraction, precision_recall
from galearn.store import open_sample, read_metrics, read_table, write_sample
from galearn.imaging import AsinhStretch

from test_gan import BANDS, make_workspace, synthetic_galaxies


def pooled_features(stretched: np.ndarray) -> np.ndarray:
    """A cheap feature map: 4x4 average pooling per band, plus per-band totals."""
    x = np.asarray(stretched, dtype="f8")
    n, c, h, w = x.shape
    pooled = x.reshape(n, c, 4, h // 4, 4, w // 4).mean(axis=(3, 5)).reshape(n, -1)
    return np.concatenate([pooled, x.mean(axis=(2, 3))], axis=1)


def shuffle_pixels(stamps: np.ndarray, seed: int) -> np.ndarray:
    """Same pixel values per stamp and band, randomly permuted positions."""
    rng = np.random.default_rng(seed)
    n, c, h, w = stamps.shape
    flat = stamps.reshape(n, c, h * w).copy()
    perm = np.argsort(rng.random((n, 1, h * w)), axis=-1)
    return np.take_along_axis(flat, np.broadcast_to(perm, flat.shape), axis=-1).reshape(stamps.shape)


def test_metric_functions_on_gaussians():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    far = rng.normal(size=(400, 8)) * 2 + 1.5
    assert frechet_distance(a, b) < 0.5 < 10 < frechet_distance(a, far)
    # FID of N(0, I) against N(mu, I) is |mu|^2.
    assert frechet_distance(a, b + 2.0) == pytest.approx(32.0, rel=0.1)
    kid_same, _ = kernel_distance(a, b, n_subsets=20, subset_size=200, random_state=1)
    kid_far, _ = kernel_distance(a, far, n_subsets=20, subset_size=200, random_state=1)
    assert abs(kid_same) < 0.05 < kid_far
    assert kernel_distance(a, far, n_subsets=5, random_state=3) == kernel_distance(a, far, n_subsets=5, random_state=3)
    p, r = precision_recall(a, b)
    assert p > 0.8 and r > 0.8
    # A collapsed generator: precise but no recall.
    p, r = precision_recall(a, np.repeat(a[:1], 50, axis=0) + rng.normal(0, 0.01, (50, 8)))
    assert p == 1.0 and r < 0.1
    frac, _ = memorised_fraction(b[:200], a, b[200:])
    assert frac < 0.05
    frac, _ = memorised_fraction(a[:100] + 1e-6, a, b)
    assert frac == 1.0
    from galearn.evaluate.realism import nearest_training_distances  # searched once, given to both tests

    nearest = nearest_training_distances(b[:200], a, b[200:])
    assert memorised_fraction(b[:200], a, b[200:], nearest=nearest) == memorised_fraction(b[:200], a, b[200:])
    with pytest.raises(BadValueError, match="2-D"):
        frechet_distance(a[0], b)


def test_morphology_measures_and_separates_classes():
    phys, labels = synthetic_galaxies(12, 5, 32)
    table = measure_morphology(phys, BANDS, progress=False)
    assert table["ok"].mean() > 0.8
    assert {"gini", "m20", "concentration", "asymmetry", "half_light_radius", "ellipticity",
            "colour_F435W-F850LP", "colour_F850LP-F160W"} <= set(table.colnames)
    disk = labels == "disk"
    r50 = np.asarray(table["half_light_radius"])
    ell = np.asarray(table["ellipticity"])
    col = np.asarray(table["colour_F850LP-F160W"])
    assert np.nanmedian(r50[disk]) > np.nanmedian(r50[~disk])
    assert np.nanmedian(ell[disk]) > np.nanmedian(ell[~disk])
    assert np.nanmedian(col[disk]) < np.nanmedian(col[~disk])  # spheroids are redder
    same, _ = morphology_wasserstein(table, table)
    assert same == 0.0
    shuffled = measure_morphology(shuffle_pixels(phys, 1), BANDS, noise_sigma=table.meta["noise_sigma"], progress=False)
    far, per = morphology_wasserstein(table, shuffled)
    assert shuffled["ok"].mean() < 0.5
    assert np.isnan(far)  # no central galaxy to measure
    assert per["colour_F435W-F850LP"] < 0.5  # shuffling keeps each pixel's colour


def _evaluation_workspace(tmp_path, make_library, n: int = 240):
    """A sample of ``n`` synthetic galaxies with its split, and ``make_library(sample) -> (stretched, labels)``."""
    from galearn.gan.data import condition_labels, load_or_make_split

    ws = make_workspace(tmp_path, n=n, seed=11)
    sample = open_sample(ws.sample)
    cond, labels = condition_labels(sample, "truth_class")
    load_or_make_split(ws, sample, cond, labels, heldout_fraction=0.3, random_state=0)
    library_stretched, library_labels = make_library(sample)
    stretch = AsinhStretch.from_dict(sample.stretch)
    m = len(library_stretched)
    cat = Table({"id": [f"gan-{i + 1:06d}" for i in range(m)], "synthetic": np.ones(m, bool),
                 "truth_class": library_labels, "checkpoint_step": np.full(m, 7)})
    write_sample(ws.library, library_stretched, cat, physical=stretch.inverse(library_stretched), bands=BANDS,
                 kind="library", stretch=sample.stretch, columns={"id": "id"})
    return ws


def _run(ws, n_morph=10):
    from galearn.gan import run_evaluate

    cfg = dataclasses.replace(RunConfig(), gan=GanConfig(eval_morphology_n=n_morph, condition="truth_class"))
    return run_evaluate(ws, cfg, feature_fn=pooled_features, progress=False)


def _fresh_real(shuffle: bool):
    def make(sample):
        # New galaxies from the same distribution as the sample (never trained on).
        phys, labels = synthetic_galaxies(200, 99, 32)
        stretched = AsinhStretch.from_dict(sample.stretch).forward(phys)
        return (shuffle_pixels(stretched, 3) if shuffle else stretched), labels
    return make


def test_evaluate_real_against_real_sits_at_the_baseline_and_shuffled_far_from_it(tmp_path):
    ws = _evaluation_workspace(tmp_path / "real", _fresh_real(False))
    m = _run(ws, n_morph=8)
    assert m["fid"] < 2.0 * m["fid_real_baseline"]
    assert m["precision"] > m["precision_real_baseline"] - 0.15 and m["recall"] > m["recall_real_baseline"] - 0.15
    assert m["precision"] > 0.6 and m["recall"] > 0.6
    assert m["memorised_fraction"] < 0.1
    assert m["morphology_wasserstein"] < 2.5 * m["morphology_wasserstein_real_baseline"] + 0.1
    assert m["steps"] == 7 and m["condition"] == "truth_class"
    td = m["typical_distance"]  # fresh galaxies lie as near the real manifold as held-out real ones
    assert 0.85 < td["ratio"] < 1.15 and td["generated_median_std"] > 0, td  # measured 1.01
    assert set(m["per_class"]) == {"disk", "spheroid"}
    orient = m["orientation"]["sets"]  # fresh galaxies at uniform angles: isotropic like the real ones, no "lean" said
    assert set(orient) == {"real_heldout", "real_train", "generated"} and orient["generated"]["n"] > 10
    assert orient["generated"]["rayleigh_p"] > 1e-3 and "lean one way" not in m["verdict"]
    sky = m["sky"]  # the same sky in both: each set's per-stamp level and sigma agree
    assert sky["bands"] == list(BANDS) and sky["generated"]["n"] > 10
    for key in ("level", "sigma"):
        np.testing.assert_allclose(np.asarray(sky["generated"][key])[:, 1], np.asarray(sky["real_heldout"][key])[:, 1],
                                   rtol=0.25, atol=0.05 * np.asarray(sky["real_heldout"]["sigma"])[:, 1].max())
    bal = m["balancing"]
    assert 0 <= bal["balanced_accuracy_real_only"] <= 1 and 0 <= bal["balanced_accuracy_with_gan"] <= 1
    assert bal["n_train_minority_real"] < bal["n_train_majority"]
    stored = read_metrics(ws.metrics)["gan"]
    assert stored["fid"] == m["fid"] and "gini" in stored["morphology_stats"]
    table = read_table(ws.gan / "morphology.ecsv")
    assert set(table["set"]) == {"real_heldout", "real_train", "generated"}

    # Shuffled-pixel "generated" stamps: same pixel values, no galaxies (the morphology
    # of shuffled stamps is tested in test_morphology_measures_and_separates_classes).
    s = _run(_evaluation_workspace(tmp_path / "shuffled", _fresh_real(True)), n_morph=0)
    assert s["fid"] > 5 * s["fid_real_baseline"]
    assert s["kid"] > 5 * max(s["kid_real_baseline"], 1e-3)
    assert s["precision"] < 0.2 and s["recall"] < 0.2
    assert s["typical_distance"]["ratio"] > 5, s["typical_distance"]  # measured 12.7
    assert "morphology_wasserstein" not in s


def test_typical_distance_whitens_by_the_training_covariance():
    from galearn.gan.evaluate import typical_distance

    rng = np.random.default_rng(0)
    mix = rng.normal(size=(6, 6))
    train, held = rng.normal(size=(2000, 6)) @ mix, rng.normal(size=(300, 6)) @ mix
    same = typical_distance([rng.normal(size=(300, 6)) @ mix for _ in range(4)], held, train)
    assert abs(same["ratio"] - 1) < 0.1 and same["generated_median_std"] > 0
    assert abs(same["heldout_median"] - np.sqrt(6 - 2 / 3)) < 0.25  # the chi distribution's median, 6 dof
    twice = typical_distance([2 * rng.normal(size=(300, 6)) @ mix], held, train)
    assert abs(twice["ratio"] - 2) < 0.2 and twice["generated_median_std"] == 0.0
    # one step along the direction the real stamps hold tightest weighs more than a step along the widest
    w, v = np.linalg.eigh(np.cov(train, rowvar=False))
    step = 3 * np.sqrt(w[0])  # three standard deviations along the tightest direction
    tight = typical_distance([held + step * v[:, 0]], held, train)
    wide = typical_distance([held + step * v[:, -1]], held, train)
    assert tight["ratio"] > 1.4 and wide["ratio"] < 1.05
    with pytest.raises(ValueError, match="cannot fix a covariance"):
        typical_distance([held], held, train[:6])


def test_evaluate_with_fewer_training_stamps_than_numbers_leaves_the_typical_distance_out(tmp_path):
    m = _run(_evaluation_workspace(tmp_path, _fresh_real(False), n=80), n_morph=0)  # 56 training stamps, 67 numbers
    assert "typical_distance" not in m and m["fid"] > 0 and "typical stamp" not in m["verdict"]


def test_copied_training_stamps_count_as_memorised(tmp_path):
    from galearn.gan.data import read_split

    def copies(sample):
        train = read_split(ws_holder[0])["train"][:150]
        return sample.read("stretched", train), np.asarray(sample.catalog["truth_class"])[train]

    ws_holder = [make_workspace(tmp_path / "copy", n=240, seed=11)]
    from galearn.gan.data import condition_labels, load_or_make_split

    sample = open_sample(ws_holder[0].sample)
    cond, labels = condition_labels(sample, "truth_class")
    load_or_make_split(ws_holder[0], sample, cond, labels, heldout_fraction=0.3, random_state=0)
    ws = _evaluation_workspace(tmp_path / "copy", copies)
    m = _run(ws, n_morph=0)
    assert m["memorised_fraction"] > 0.9
    assert m["memorised_fraction_pixels"] > 0.9 and m["memorised_pixels_train_n"] == len(read_split(ws)["train"])
    assert "% nearer in pixels" in m["verdict"] and "memorising" in m["verdict"].split(";")[0]
    assert m["data_copying"]["ct"] < -3 and "C_T" in m["verdict"] and "(copies" in m["verdict"]


def test_memorised_fraction_reads_one_percent_for_new_real_galaxies_and_all_copies():
    from galearn.evaluate.realism import (NearestTraining, memorised_fraction, memorised_fraction_from,
                                          nearest_distances, nearest_training_distances)

    rng = np.random.default_rng(11)

    def draw(n: int) -> np.ndarray:  # two populations of unequal spread in 8 numbers
        return np.where(rng.random(n)[:, None] < 0.6, 0.4, 1.5) * rng.normal(size=(n, 8))

    fractions = []
    for _ in range(60):  # a generator of new real galaxies: about 1 % on average (numpy's linear percentile of
        train, held, new = draw(480), draw(120), draw(600)  # the 120 held-out rows alone read ~1.7 %)
        fractions.append(memorised_fraction(new, train, held)[0])
    assert 0.007 < np.mean(fractions) < 0.014
    copies = train[:50] + 1e-6
    assert memorised_fraction(copies, train, held)[0] == 1.0
    # the threshold: the Weibull 1st percentile of the held-out rows' and the training rows' leave-one-out distances
    train = np.concatenate([train, train[:1]])  # a duplicate row: its own leave-one-out distance is 0
    got = nearest_training_distances(new, train, held)
    assert isinstance(got, NearestTraining) and len(got.train) == len(train) and got.train[0] == got.train[-1] == 0.0
    np.testing.assert_allclose(got.train[1:-1], nearest_distances(train[1:-1], train, exclude_self=True))
    fraction, threshold = memorised_fraction(new, train, held, nearest=got)
    assert (fraction, threshold) == memorised_fraction_from(got)  # the same from distances already searched
    assert threshold == np.percentile(np.concatenate([got.heldout, got.train]), 1, method="weibull")
    assert fraction == np.mean(got.generated < threshold)
    few = nearest_training_distances(new, train, held, train_rows=100, random_state=3)  # a survey: a seeded draw
    assert len(few.train) == 100 and np.all(np.diff(few.train_index) > 0)
    np.testing.assert_array_equal(few.train_index, nearest_training_distances(new, train, held, train_rows=100,
                                                                              random_state=3).train_index)
    np.testing.assert_allclose(few.train, got.train[few.train_index])


def test_data_copying_test_finds_copies_and_passes_fresh_draws():
    from galearn.evaluate.realism import data_copying_statistic, nearest_training_distances

    rng = np.random.default_rng(7)

    def draw(n: int) -> np.ndarray:  # half a dense core, half a broad halo, in 5 numbers
        return np.where(rng.random(n)[:, None] < 0.5, 0.3, 2.0) * rng.normal(size=(n, 5))

    train, held = draw(400), draw(100)
    copies = train[rng.choice(400, 300)] + 0.01 * rng.normal(size=(300, 5))
    got = data_copying_statistic(copies, train, held, random_state=1)
    assert got["ct"] < -5 and got["n_cells"] == 5 and got["cells_used"] >= 3  # 100 held-out rows: 5 cells
    assert sum(got["cell_heldout_share"]) == pytest.approx(1.0)
    new = draw(300)
    fresh = data_copying_statistic(new, train, held, random_state=1)
    assert abs(fresh["ct"]) < 2 and fresh["cells_used"] >= 3
    assert fresh == data_copying_statistic(new, train, held, random_state=1)  # seeded cells
    assert fresh == data_copying_statistic(new, train, held, random_state=1,
                                           nearest=nearest_training_distances(new, train, held))
    few = data_copying_statistic(draw(10), train, held, random_state=1)  # too few generated rows for any cell
    assert few["cells_used"] == 0 and np.isnan(few["ct"]) and few["cell_z"] == [None] * 5
    half = data_copying_statistic(copies, train, held, n_cells=2, fit_max=200, random_state=1)
    assert half["n_cells"] == 2 and half["ct"] < -3


def test_pixel_copy_check_finds_turned_copies_and_not_fresh_galaxies():
    from galearn.evaluate.realism import memorised_fraction_pixels, pixel_nearest_distances

    rng = np.random.default_rng(3)
    train = rng.random((50, 3, 16, 16)).astype("f4")
    heldout = rng.random((40, 3, 16, 16)).astype("f4")
    turned = np.rot90(train[:10], 1, axes=(2, 3))[..., ::-1]  # a copy, turned 90 degrees and mirrored
    d = pixel_nearest_distances(turned, [train[:7], train[7:30], train[30:]])  # streamed in uneven chunks
    np.testing.assert_allclose(d, 0.0, atol=1e-3)
    np.testing.assert_allclose(pixel_nearest_distances(heldout, [train]), pixel_nearest_distances(heldout, [train[:25], train[25:]]),
                               rtol=1e-6)
    assert pixel_nearest_distances(heldout, [train]).min() > 0.3  # independent noise stamps: RMS ~0.41
    fresh = rng.random((40, 3, 16, 16)).astype("f4")
    frac, threshold = memorised_fraction_pixels(fresh, heldout, [train])
    assert frac <= 0.1 and threshold > 0.3
    frac, _ = memorised_fraction_pixels(np.concatenate([turned, fresh[:10]]), heldout, [train])
    assert frac == pytest.approx(0.5, abs=0.06)
    with pytest.raises(Exception, match="empty"):
        pixel_nearest_distances(fresh, [])
    # leave-one-out: a training stamp compared with the others finds itself in none of its 8 turns, in any chunk
    positions = np.array([0, 6, 7, 29, 30, 49])
    loo = pixel_nearest_distances(train[positions], [train[:7], train[7:30], train[30:]], exclude=positions)
    assert loo.min() > 0.3  # not 0: itself is left out
    others = np.array([pixel_nearest_distances(train[p:p + 1], [np.delete(train, p, axis=0)])[0] for p in positions])
    np.testing.assert_allclose(loo, others, rtol=1e-5)
    assert pixel_nearest_distances(train[positions], [train], exclude=np.full(6, -1)).max() < 1e-3  # -1: none
    # ... and its distances join the held-out ones in the threshold
    with_loo, threshold_loo = memorised_fraction_pixels(fresh, heldout[:5], [train], train_left_out=(train, np.arange(50)))
    only_heldout = np.percentile(pixel_nearest_distances(heldout[:5], [train]), 1, method="weibull")
    assert threshold_loo != pytest.approx(only_heldout) and threshold_loo == pytest.approx(np.percentile(
        np.concatenate([pixel_nearest_distances(heldout[:5], [train]),
                        pixel_nearest_distances(train, [train], exclude=np.arange(50))]), 1, method="weibull"))


def test_frechet_low_rank_path_equals_the_covariance_path():
    """N < D takes the exact low-rank formula; it must equal the full covariance computation."""
    from galearn.evaluate import realism

    rng = np.random.default_rng(5)
    a = rng.normal(size=(40, 120)) @ rng.normal(size=(120, 120)) * 0.1
    b = rng.normal(size=(55, 120)) * 0.5 + 0.2
    mu = ((a.mean(0) - b.mean(0)) ** 2).sum()
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s = realism._sqrt_psd(ca)
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(s @ cb @ s), 0, None)).sum()
    full = mu + np.trace(ca) + np.trace(cb) - 2 * tr
    assert frechet_distance(a, b) == pytest.approx(full, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_kid_spread_is_not_zero_for_small_sets():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(120, 16)), rng.normal(size=(150, 16)) + 0.3
    mean, std = kernel_distance(a, b, n_subsets=30, random_state=0)
    assert mean > 0 and std > 0


def test_kid_from_whole_kernels_equals_kid_per_subset(monkeypatch):
    import galearn.evaluate.realism as realism

    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(90, 40)), rng.normal(size=(70, 40)) + 0.2
    whole = kernel_distance(a, b, n_subsets=20, random_state=3)
    monkeypatch.setattr(realism, "_KID_WHOLE_KERNEL_MAX", 10)  # sets larger than this: kernels per subset
    np.testing.assert_allclose(whole, kernel_distance(a, b, n_subsets=20, random_state=3), rtol=1e-9)


@pytest.mark.parametrize("kind", ["images", "mock"])
def test_ingested_images_are_measured_above_their_sky_pedestal(tmp_path, kind):
    """Display images (kind "images") sit on a sky pedestal: the evaluation subtracts each stamp's border median.

    Without it statmorph flags every stamp "not background-subtracted" (the
    real-image morphology figures of rounds 1-10 rested on 1-3 measured real
    stamps); the "mock" arm keeps the stored values and shows the failure.
    """
    from galearn.gan.data import condition_labels, load_or_make_split

    from conftest import make_stamp_workspace

    pedestal = 0.25  # >> the 0.02 pixel noise of synthetic_galaxies
    physical, labels = synthetic_galaxies(240, 11, 32)
    physical = physical + pedestal
    stretch = AsinhStretch.fit(physical)
    ws = make_stamp_workspace(tmp_path / "ws", stamps=stretch.forward(physical), bands=BANDS,
                              columns={"truth_class": labels}, physical=physical, stretch=stretch.to_dict(), kind=kind)
    sample = open_sample(ws.sample)
    cond, lab = condition_labels(sample, "truth_class")
    load_or_make_split(ws, sample, cond, lab, heldout_fraction=0.3, random_state=0)
    lib_phys, lib_labels = synthetic_galaxies(200, 99, 32)
    lib_phys = lib_phys + pedestal
    cat = Table({"id": [f"gan-{i + 1:06d}" for i in range(len(lib_phys))], "synthetic": np.ones(len(lib_phys), bool),
                 "truth_class": lib_labels, "checkpoint_step": np.full(len(lib_phys), 7)})
    write_sample(ws.library, stretch.forward(lib_phys), cat, physical=lib_phys, bands=BANDS, kind="library",
                 stretch=sample.stretch, columns={"id": "id"})
    m = _run(ws, n_morph=12)
    failed = m["morphology_failed_fraction"]
    if kind == "images":
        assert m["physical_background"].startswith("border median subtracted")
        assert max(failed.values()) <= 0.2
        assert m["morphology_wasserstein"] < 2.5 * m["morphology_wasserstein_real_baseline"] + 0.1
    else:
        assert m["physical_background"] == "as stored"
        assert min(failed.values()) >= 0.8


def test_realism_is_also_measured_without_the_statistics_gs_loss_matched(tmp_path):
    """A run trained with power-spectrum / pixel-value targets (gan/config.json) gets ``realism_untargeted``."""
    from galearn.morphometry import morphometry_groups, morphometry_names

    ws = _evaluation_workspace(tmp_path, _fresh_real(False))
    m = _run(ws, n_morph=0)
    assert "realism_untargeted" not in m and "without the statistics" not in m["verdict"]
    ws.gan_config.write_text(json.dumps({"config": {"discriminator": "projected", "d_backbone": "efficientnet-lite0",
                                                     "g_power_match": 0.0, "g_stamp_power_match": 5.0,
                                                     "g_pixel_match": 10.0}}))
    m = _run(ws, n_morph=0)
    u = m["realism_untargeted"]
    names = morphometry_names(len(BANDS), BANDS)
    groups = morphometry_groups(names)
    assert u["groups_left_out"] == ["power spectrum", "pixel percentiles"]
    assert u["dim"] == len(names) - int((groups["power spectrum"] | groups["pixel percentiles"]).sum()) == len(names) - 3 * (8 + 3)
    # Fresh real galaxies. In these 34 numbers of 120 stamps the ratio is noisy: one draw read 1.2-3.2x, the mean
    # of the 10 draws 2.05x (the full space: 1.23x); shuffled pixels read > 5x.
    assert u["fid"] < 3.0 * u["fid_real_baseline"] and u["precision"] > 0.6 and u["recall"] > 0.6
    assert u["fid"] != m["fid"] and "without the statistics G's loss matched (power spectrum, pixel percentiles)" in m["verdict"]
    assert read_metrics(ws.metrics)["gan"]["realism_untargeted"]["dim"] == u["dim"]


def test_realism_numbers_are_means_over_draws_of_the_baseline_and_generated_sets(tmp_path):
    from galearn.gan import run_evaluate
    from galearn.gan.evaluate import mean_over_draws

    rows = [{"n": 5, "fid": 2.0, "fid_real_baseline": 1.0, "precision": 0.5},
            {"n": 5, "fid": 6.0, "fid_real_baseline": 2.0, "precision": 0.7}]
    m = mean_over_draws(rows)
    assert (m["n"], m["draws"], m["fid"], m["fid_real_baseline"], m["precision"]) == (5, 2, 4.0, 1.5, pytest.approx(0.6))
    assert (m["fid_std"], m["fid_real_baseline_std"]) == (2.0, 0.5)
    np.testing.assert_allclose(m["fid_ratio_draws"], [2.05, 2.5, 2.95])

    ws = _evaluation_workspace(tmp_path, _fresh_real(False))
    out = {}
    for draws in (1, 5):
        cfg = dataclasses.replace(RunConfig(), gan=GanConfig(eval_morphology_n=0, condition="truth_class",
                                                             realism_draws=draws))
        out[draws] = run_evaluate(ws, cfg, feature_fn=pooled_features, progress=False)
    one, five = out[1], out[5]
    assert (one["draws"], five["draws"], one["fid_std"]) == (1, 5, 0.0)
    assert five["fid_std"] > 0 and five["fid_real_baseline_std"] > 0 and five["fid"] != one["fid"]
    lo, mid, hi = five["fid_ratio_draws"]
    assert lo < mid < hi and lo <= five["fid"] / five["fid_real_baseline"] <= hi
    assert five["per_class"]["disk"]["draws"] == 5
    # The first draw is the one-draw evaluation's: every set besides the realism numbers is unchanged ...
    assert five["n_eval"] == one["n_eval"] and five["sky"] == one["sky"]
    # ... but copies are counted among the generated stamps of every draw: more stamps, finer steps.
    assert one["memorised_n"] == one["n_eval"] < five["memorised_n"] <= 5 * one["n_eval"]
    # ... and so are the orientations: every draw's generated stamps (the elongated ones), the real sets unchanged.
    gen1, gen5 = one["orientation"]["sets"]["generated"], five["orientation"]["sets"]["generated"]
    assert gen1["n"] < gen5["n"] and five["orientation"]["sets"]["real_heldout"] == one["orientation"]["sets"]["real_heldout"]
    for m in (one, five):
        for key in ("memorised_fraction", "memorised_fraction_pixels"):
            count = m[key] * m["memorised_n"]
            assert abs(count - round(count)) < 1e-9
    from galearn.report.html import gan_realism_caption

    assert f"mean of 5 draws (one draw's ratio {lo:.1f}-{hi:.1f}x)" in gan_realism_caption(five)
    assert "draws" not in gan_realism_caption(one)
    td = five["typical_distance"]
    assert f"typical stamp {td['ratio']:.1f}x as far from the real ones" in gan_realism_caption(five)
